# Sample weights, class weights, loss weights, weighted metrics and
# initial_epoch, against Keras's definitions written out in plain R: a loss is
# sum(weight * per-row loss) / rows, a weighted metric sum(weight * value) /
# sum(weight) over the epoch.

test_that("weighted losses follow Keras's reduction, with finite-difference gradients", {
  fixture <- class_probabilities(61)
  p <- fixture$p
  y <- fixture$y
  labels <- fixture$labels
  w <- c(0.5, 2, 0, 1.5)
  value <- function(loss, target, pred, w) conv3d:::loss_value(loss, target, pred, w)$value
  expect_equal(value("mse", y, p, w), sum(w * rowMeans((p - y)^2)) / 4)
  expect_equal(value("mae", y, p, w), sum(w * rowMeans(abs(p - y))) / 4)
  expect_equal(value("categorical_crossentropy", y, p, w), sum(w * -rowSums(y * log(p))) / 4)
  expect_equal(value("sparse_categorical_crossentropy", labels, p, w),
    sum(w * -rowSums(y * log(p))) / 4)
  b <- matrix(runif(4, 0.1, 0.9), 4, 1)
  yb <- matrix(c(0, 1, 1, 0), 4, 1)
  expect_equal(value("binary_crossentropy", yb, b, w),
    -sum(w * (yb * log(b) + (1 - yb) * log(1 - b))) / 4)
  # per sample and position: a (2 samples, 3 positions, 2 channels) output
  q <- array(runif(12), c(2, 3, 2))
  t <- array(runif(12), c(2, 3, 2))
  wp <- matrix(c(1, 2, 3, 4, 5, 6), 2, 3)
  per_row <- (q[, , 1] - t[, , 1])^2 / 2 + (q[, , 2] - t[, , 2])^2 / 2
  expect_equal(value("mse", t, q, wp), sum(wp * per_row) / 6)
  expect_equal(value("mse", t, q, c(1, 3)), sum(c(1, 3) * per_row) / 6) # per sample, recycled
  eps <- 1e-6
  for (loss in c("mse", "mae", "categorical_crossentropy", "binary_crossentropy")) {
    target <- if (loss == "binary_crossentropy") yb else y
    pred <- if (loss == "binary_crossentropy") b else p
    grad <- conv3d:::loss_value(loss, target, pred, w)$grad
    for (i in seq_along(pred)) {
      up <- pred
      down <- pred
      up[i] <- up[i] + eps
      down[i] <- down[i] - eps
      expect_equal(grad[i], (value(loss, target, up, w) - value(loss, target, down, w)) / (2 * eps),
        tolerance = 1e-5, info = paste(loss, i))
    }
  }
  # from the logits: the same weighted value as from the probabilities
  z <- matrix(rnorm(12), 4, 3)
  soft <- exp(z) / rowSums(exp(z))
  expect_equal(conv3d:::loss_value_logits("categorical_crossentropy", y, z, w)$value,
    sum(w * -rowSums(y * log(soft))) / 4, tolerance = 1e-12)
  zb <- matrix(rnorm(4), 4, 1)
  expect_equal(conv3d:::loss_value_logits("binary_crossentropy", yb, zb, w)$value,
    value("binary_crossentropy", yb, plogis(zb), w), tolerance = 1e-12)
  expect_equal(conv3d:::loss_value_logits("binary_crossentropy", yb, zb, w)$grad,
    w * (plogis(zb) - yb) / 4, tolerance = 1e-12)
})

weights_model <- function(units = 1, activation = "sigmoid", seed = 62) {
  set.seed(seed)
  keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
    layer_flatten(dtype = "float64") |>
    layer_dense(units, activation = activation, dtype = "float64")
}

test_that("evaluate() weights the loss and the weighted metrics, over uneven batches", {
  set.seed(63)
  x <- array(rnorm(20 * 8), c(20, 2, 2, 2, 1))
  y <- rbinom(20, 1, 0.5)
  w <- runif(20)
  model <- weights_model()
  compile(model, "sgd", "binary_crossentropy", metrics = "accuracy",
    weighted_metrics = c("accuracy", "mae"))
  p <- c(predict(model, x))
  hit <- as.numeric((p > 0.5) == y)
  scores <- evaluate(model, x, y, sample_weight = w, batch_size = 7)
  expect_named(scores, c("loss", "accuracy", "weighted_accuracy", "mae"))
  expect_equal(scores[["loss"]], -sum(w * (y * log(p) + (1 - y) * log(1 - p))) / 20,
    tolerance = 1e-12)
  expect_equal(scores[["accuracy"]], mean(hit)) # plain metrics ignore the weights
  expect_equal(scores[["weighted_accuracy"]], sum(w * hit) / sum(w), tolerance = 1e-12)
  expect_equal(scores[["mae"]], sum(w * abs(p - y)) / sum(w), tolerance = 1e-12)
  # without weights, the weighted metrics are the plain ones
  plain <- evaluate(model, x, y, batch_size = 7)
  expect_equal(plain[["weighted_accuracy"]], plain[["accuracy"]])
  # zero weights: a weighted metric of no weight is 0, as Keras divides no NaN
  zero <- evaluate(model, x, y, sample_weight = rep(0, 20), batch_size = 7)
  expect_identical(zero[["weighted_accuracy"]], 0)
  expect_identical(zero[["loss"]], 0)
  # a batch whose weights sum to 0 still adds its weighted values: the
  # epoch's value does not depend on the batch size
  signed <- c(1, -1, rep(1, 18))
  expected <- sum(signed * abs(p - y)) / sum(signed)
  for (size in c(2, 7, 20)) {
    expect_equal(evaluate(model, x, y, sample_weight = signed, batch_size = size)[["mae"]],
      expected, tolerance = 1e-12, info = size)
  }
})

test_that("per-position sample weights weight a segmentation-like output", {
  set.seed(64)
  input <- layer_input(shape = c(3, 3, 3, 2), dtype = "float64")
  output <- layer_conv_3d(input, 2, 1, activation = "softmax", dtype = "float64")
  model <- keras_model(input, output)
  compile(model, "sgd", "sparse_categorical_crossentropy", weighted_metrics = "accuracy")
  x <- array(rnorm(4 * 27 * 2), c(4, 3, 3, 3, 2))
  y <- array(sample(0:1, 4 * 27, TRUE), c(4, 3, 3, 3))
  w <- array(runif(4 * 27), c(4, 3, 3, 3))
  p <- predict(model, x)
  p_true <- ifelse(y == 1, p[, , , , 2], p[, , , , 1])
  scores <- evaluate(model, x, y, sample_weight = w, batch_size = 3)
  expect_equal(scores[["loss"]], sum(w * -log(p_true)) / (4 * 27), tolerance = 1e-12)
  hit <- (p[, , , , 2] > p[, , , , 1]) == (y == 1)
  expect_equal(scores[["accuracy"]], sum(w * hit) / sum(w), tolerance = 1e-12)
  # with a trailing axis of 1 too; one weight per sample covers its positions
  expect_identical(evaluate(model, x, y, sample_weight = array(w, c(4, 3, 3, 3, 1)),
    batch_size = 3), scores)
  expect_equal(evaluate(model, x, y, sample_weight = 1:4)[["loss"]],
    sum(array(1:4, c(4, 3, 3, 3)) * -log(p_true)) / (4 * 27), tolerance = 1e-12)
  # weights of other shapes are refused, not read in another order
  expect_snapshot(error = TRUE, {
    evaluate(model, x, y, sample_weight = c(w))
    evaluate(model, x, y, sample_weight = array(w, c(4, 9, 3)))
    evaluate(model, x, y, sample_weight = matrix(1:4, 1, 4))
  })
})

test_that("fit() with sample weights takes the weighted gradient step", {
  set.seed(65)
  x <- array(rnorm(6 * 8), c(6, 2, 2, 2, 1))
  y <- rnorm(6)
  w <- c(1, 0, 2, 0.5, 3, 0)
  model <- weights_model(activation = NULL)
  compile(model, optimizer_sgd(0.1), "mse")
  before <- get_weights(model)
  # loss = sum(w (X k + b - y)^2) / 6, X the samples flattened in Keras's
  # (row-major) order
  X <- t(apply(x, 1, function(s) as.vector(aperm(array(s, c(2, 2, 2)), 3:1))))
  r <- c(X %*% before[[1]] + before[[2]]) - y
  expect_equal(r, c(predict(model, x)) - y, tolerance = 1e-12)
  fit(model, x, y, batch_size = 6, epochs = 1, shuffle = FALSE, verbose = 0, sample_weight = w)
  after <- get_weights(model)
  expect_equal(c(after[[1]]), c(before[[1]]) - 0.1 * c(2 * t(X) %*% (w * r) / 6), tolerance = 1e-12)
  expect_equal(after[[2]], before[[2]] - 0.1 * 2 * sum(w * r) / 6, tolerance = 1e-12)
})

test_that("class_weight is the sample weight of each sample's class, and multiplies sample_weight", {
  set.seed(66)
  x <- array(rnorm(30 * 8), c(30, 2, 2, 2, 1))
  y <- sample(0:2, 30, TRUE)
  w <- runif(30)
  cw <- c(0.5, 2, 4)
  run <- function(...) {
    model <- weights_model(units = 3, activation = "softmax")
    compile(model, optimizer_adam(0.05), "sparse_categorical_crossentropy",
      weighted_metrics = "accuracy")
    h <- fit(model, x, y, batch_size = 8, epochs = 3, verbose = 0, ...)
    list(h$metrics, get_weights(model))
  }
  by_sample <- run(sample_weight = cw[y + 1])
  expect_identical(run(class_weight = cw), by_sample)
  expect_identical(run(class_weight = list("2" = 4, "0" = 0.5, "1" = 2)), by_sample)
  expect_identical(run(class_weight = cw, sample_weight = w), run(sample_weight = w * cw[y + 1]))
  # one-hot targets: the class is the first largest entry
  onehot <- diag(3)[y + 1, ]
  run_onehot <- function(...) {
    model <- weights_model(units = 3, activation = "softmax")
    compile(model, optimizer_sgd(0.2), "categorical_crossentropy")
    fit(model, x, onehot, batch_size = 10, epochs = 2, verbose = 0, ...)
    get_weights(model)
  }
  expect_identical(run_onehot(class_weight = cw), run_onehot(sample_weight = cw[y + 1]))
  # not applied to the validation data, which keeps its own sample weights
  model <- weights_model(units = 3, activation = "softmax")
  compile(model, optimizer_sgd(0.1), "sparse_categorical_crossentropy")
  h <- fit(model, x, y, batch_size = 8, epochs = 1, verbose = 0, class_weight = cw,
    sample_weight = w, validation_split = 0.2)
  held <- 25:30
  expect_equal(h$metrics$val_loss, evaluate(model, x[held, , , , , drop = FALSE], y[held],
    sample_weight = w[held])[["loss"]], tolerance = 1e-12)
  h <- fit(model, x, y, batch_size = 8, epochs = 1, verbose = 0,
    validation_data = list(x[1:5, , , , , drop = FALSE], y[1:5], w[1:5]))
  expect_equal(h$metrics$val_loss, evaluate(model, x[1:5, , , , , drop = FALSE], y[1:5],
    sample_weight = w[1:5])[["loss"]], tolerance = 1e-12)
})

test_that("loss_weights weight each output's loss in the total and its gradient", {
  set.seed(67)
  x <- matrix(rnorm(30), 10, 3)
  ya <- rbinom(10, 1, 0.5)
  yb <- rnorm(10)
  build <- function() {
    set.seed(68)
    input <- layer_input(shape = 3, dtype = "float64")
    a <- input |> layer_dense(1, activation = "sigmoid", dtype = "float64", name = "a")
    b <- input |> layer_dense(1, dtype = "float64", name = "b")
    keras_model(input, list(a, b))
  }
  model <- build()
  compile(model, optimizer_sgd(0.2), "mse", loss_weights = c(b = 0, a = 0.5))
  plain <- build()
  compile(plain, optimizer_sgd(0.1), "mse")
  scores <- evaluate(model, x, list(ya, yb))
  expect_equal(scores[["loss"]], 0.5 * scores[["a_loss"]]) # each output's loss unweighted
  expect_equal(scores[["a_loss"]], evaluate(plain, x, list(ya, yb))[["a_loss"]])
  # an output left out of a named list, or NULL, weighs 1 (Keras's None)
  compile(plain, optimizer_sgd(0.1), "mse", loss_weights = list(a = 1, b = NULL))
  expect_equal(evaluate(plain, x, list(ya, yb))[["loss"]], sum(scores[c("a_loss", "b_loss")]))
  compile(plain, optimizer_sgd(0.1), "mse", loss_weights = c(b = 3))
  expect_equal(evaluate(plain, x, list(ya, yb))[["loss"]], scores[["a_loss"]] + 3 * scores[["b_loss"]])
  # a NULL sample weight leaves its output unweighted
  w <- runif(10)
  sw <- evaluate(plain, x, list(ya, yb), sample_weight = list(b = w, a = NULL))
  expect_equal(sw[["a_loss"]], scores[["a_loss"]])
  expect_equal(sw[["b_loss"]], sum(w * (c(predict(plain, x)[[2]]) - yb)^2) / 10, tolerance = 1e-12)
  compile(plain, optimizer_sgd(0.1), "mse")
  before_b <- get_weights(get_layer(model, "b"))
  fit(model, x, list(ya, yb), batch_size = 10, epochs = 1, shuffle = FALSE, verbose = 0)
  fit(plain, x, list(ya, yb), batch_size = 10, epochs = 1, shuffle = FALSE, verbose = 0)
  expect_identical(get_weights(get_layer(model, "b")), before_b) # weight 0: no gradient
  # weight 0.5 at rate 0.2 is the step of weight 1 at rate 0.1
  expect_equal(get_weights(get_layer(model, "a")), get_weights(get_layer(plain, "a")),
    tolerance = 1e-14)
})

test_that("each output may have its own loss and metrics, by position or by name", {
  set.seed(70)
  x <- matrix(rnorm(30), 10, 3)
  ya <- rbinom(10, 1, 0.5)
  yb <- rnorm(10)
  input <- layer_input(shape = 3, dtype = "float64")
  a <- input |> layer_dense(1, activation = "sigmoid", dtype = "float64", name = "a")
  b <- input |> layer_dense(1, activation = "sigmoid", dtype = "float64", name = "b")
  model <- keras_model(input, list(a, b))
  compile(model, "sgd", loss = list(b = "mse", a = "binary_crossentropy"),
    metrics = list(a = "accuracy", b = c("mae", "accuracy")))
  p <- predict(model, x)
  scores <- evaluate(model, x, list(ya, yb))
  expect_named(scores, c("loss", "a_loss", "b_loss", "a_accuracy", "b_mae", "b_accuracy"))
  bce <- -mean(ya * log(p[[1]]) + (1 - ya) * log(1 - p[[1]]))
  expect_equal(scores[["a_loss"]], bce, tolerance = 1e-12)
  # b is a sigmoid output scored by mse: from its probabilities, not its logits
  expect_equal(scores[["b_loss"]], mean((p[[2]] - yb)^2), tolerance = 1e-12)
  expect_equal(scores[["loss"]], bce + mean((p[[2]] - yb)^2), tolerance = 1e-12)
  expect_identical(scores[["a_accuracy"]], mean((p[[1]] > 0.5) == ya))
  expect_equal(scores[["b_mae"]], mean(abs(p[[2]] - yb)), tolerance = 1e-12)
  # "accuracy" of a one-unit output is binary accuracy, whatever the loss (as in TF 2 Keras)
  expect_identical(scores[["b_accuracy"]], mean((p[[2]] > 0.5) == (yb > 0.5)))
  # in the outputs' order; a flat list of names is for every output, as in Keras
  compile(model, "sgd", loss = c("binary_crossentropy", "mse"), metrics = list("mae"))
  expect_equal(evaluate(model, x, list(ya, yb)),
    scores[c("loss", "a_loss", "b_loss")] |> c(a_mae = mean(abs(p[[1]] - ya)),
      b_mae = scores[["b_mae"]]), tolerance = 1e-12)
  # a named vector or nested lists give each output its own
  compile(model, "sgd", loss = c("binary_crossentropy", "mse"), metrics = c(b = "mae"))
  expect_named(evaluate(model, x, list(ya, yb)), c("loss", "a_loss", "b_loss", "b_mae"))
  compile(model, "sgd", loss = c("binary_crossentropy", "mse"),
    metrics = list(list("mae", "accuracy"), list()))
  expect_named(evaluate(model, x, list(ya, yb)),
    c("loss", "a_loss", "b_loss", "a_mae", "a_accuracy"))
  expect_snapshot(error = TRUE, {
    compile(model, "sgd", loss = list(a = "mse"))
    compile(model, "sgd", loss = c("mse", "mse", "mse"))
    compile(model, "sgd", loss = list(a = "mse", c = "mse"))
    compile(model, "sgd", loss = list("mse", "hinge"))
    compile(model, "sgd", "mse", metrics = list("mae", c("mae", "accuracy"), "mae"))
  })
})

test_that("initial_epoch resumes the numbering and trains the remaining epochs", {
  set.seed(69)
  x <- array(rnorm(12 * 8), c(12, 2, 2, 2, 1))
  y <- rbinom(12, 1, 0.5)
  model <- weights_model()
  compile(model, "sgd", "binary_crossentropy", metrics = "accuracy")
  seen <- integer()
  h <- fit(model, x, y, epochs = 5, initial_epoch = 2, verbose = 0,
    callbacks = list(function(epoch, logs) seen <<- c(seen, epoch)))
  expect_equal(seen, 3:5)
  expect_equal(h$epoch, 3:5)
  expect_length(h$metrics$loss, 3)
  expect_equal(unique(as.data.frame(h)$epoch), 3:5)
  before <- get_weights(model)
  none <- fit(model, x, y, epochs = 2, initial_epoch = 2, verbose = 0)
  expect_identical(get_weights(model), before)
  expect_length(none$metrics, 0)
  last <- fit(model, x, y, epochs = 1e10, initial_epoch = 1e10 - 1, verbose = 0)
  expect_equal(last$epoch, 1e10)
})

test_that("a sequential model's output is named by its last layer, as in Keras", {
  model <- keras_model_sequential(input_shape = 2) |>
    layer_dense(1, dtype = "float64", name = "score", weights = list(matrix(c(1, 1)), 0))
  compile(model, "sgd", "mse", loss_weights = c(score = 2))
  x <- matrix(c(1, 2, 3, 4), 2)
  expect_equal(evaluate(model, x, list(score = c(0, 0)))[["loss"]], 2 * mean(c(4, 6)^2))
})

test_that("weight arguments are checked with worded errors", {
  model <- keras_model_sequential(input_shape = c(2, 2, 2, 1), name = "weighted") |>
    layer_flatten() |>
    layer_dense(2, activation = "softmax", name = "probs")
  x <- array(1, c(3, 2, 2, 2, 1))
  y <- c(0, 1, 1)
  expect_snapshot(error = TRUE, {
    compile(model, "sgd", "sparse_categorical_crossentropy", loss_weights = c(1, 2))
    compile(model, "sgd", "sparse_categorical_crossentropy", loss_weights = c(out = 1))
    compile(model, "sgd", "sparse_categorical_crossentropy", weighted_metrics = "auc")
  })
  compile(model, "sgd", "sparse_categorical_crossentropy")
  expect_snapshot(error = TRUE, {
    fit(model, x, y, verbose = 0, sample_weight = c(1, 2))
    fit(model, x, y, verbose = 0, sample_weight = c(1, NA, 2))
    evaluate(model, x, y, sample_weight = "1")
    fit(model, x, y, verbose = 0, class_weight = c("0" = 1, "2" = 2))
    fit(model, x, y, verbose = 0, class_weight = list(1, "a"))
    fit(model, x, y, verbose = 0, class_weight = list())
    fit(model, x, y, verbose = 0, class_weight = c(`0` = 1, `1` = 2, `1` = 3))
    fit(model, x, c(0, 1, 2), verbose = 0, class_weight = c(1, 2))
    fit(model, x, y, verbose = 0, initial_epoch = -1)
    fit(model, x, y, verbose = 0, validation_data = list(x, y, 1, 2))
  })
  input <- layer_input(shape = c(2, 2, 2, 1))
  seg <- keras_model(input, layer_conv_3d(input, 2, 1, activation = "softmax"))
  compile(seg, "sgd", "sparse_categorical_crossentropy")
  labels <- array(0, c(3, 2, 2, 2))
  expect_snapshot(error = TRUE, {
    fit(seg, x, labels, verbose = 0, sample_weight = array(1, c(3, 2, 2)))
    fit(seg, x, labels, verbose = 0, class_weight = c(1, 1))
  })
  two <- keras_model(input, list(layer_dense(layer_flatten(input), 1),
    layer_dense(layer_flatten(input), 1)))
  compile(two, "sgd", "mse")
  expect_snapshot(error = TRUE, {
    fit(two, x, list(y, y), verbose = 0, class_weight = c(1, 1))
    fit(two, x, list(y, y), verbose = 0, sample_weight = list(c(1, 1, 1)))
  })
})
