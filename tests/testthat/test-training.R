# compile(), fit(), evaluate(): optimizer rules against hand-computed steps,
# losses against direct formulas and finite differences, and small end-to-end
# fits.

test_that("optimizer steps follow Keras's update rules", {
  w <- c(1, -2)
  g <- c(0.5, 0.25)
  step <- function(opt, n) {
    state <- NULL
    ws <- w
    for (i in seq_len(n)) {
      s <- conv3d:::optimizer_step(opt, ws, g, state)
      ws <- s$w
      state <- s$state
    }
    ws
  }
  expect_equal(step(optimizer_sgd(0.1), 2), w - 2 * 0.1 * g)
  # momentum 0.9: v1 = -lr g, w1 = w + v1; v2 = 0.9 v1 - lr g, w2 = w1 + v2
  v1 <- -0.1 * g
  v2 <- 0.9 * v1 - 0.1 * g
  expect_equal(step(optimizer_sgd(0.1, momentum = 0.9), 2), w + v1 + v2)
  expect_equal(step(optimizer_sgd(0.1, momentum = 0.9, nesterov = TRUE), 2),
    w + (0.9 * v1 - 0.1 * g) + (0.9 * v2 - 0.1 * g))
  # Adam, two steps
  lr <- 0.01
  m <- 0; v <- 0; ws <- w
  for (t in 1:2) {
    m <- m + (g - m) * 0.1
    v <- v + (g^2 - v) * 0.001
    ws <- ws - lr * sqrt(1 - 0.999^t) / (1 - 0.9^t) * m / (sqrt(v) + 1e-7)
  }
  expect_equal(step(optimizer_adam(lr), 2), ws)
  # RMSprop, plain, centered and with momentum
  s1 <- 0.1 * g^2
  expect_equal(step(optimizer_rmsprop(0.01), 1), w - 0.01 * g / sqrt(s1 + 1e-7))
  mg <- 0.1 * g
  expect_equal(step(optimizer_rmsprop(0.01, centered = TRUE), 1),
    w - 0.01 * g / sqrt(s1 - mg^2 + 1e-7))
  inc1 <- 0.01 * g / sqrt(s1 + 1e-7)
  s2 <- 0.9 * s1 + 0.1 * g^2
  inc2 <- 0.01 * g / sqrt(s2 + 1e-7)
  expect_equal(step(optimizer_rmsprop(0.01, momentum = 0.5), 2), w - inc1 - (0.5 * inc1 + inc2))
  expect_snapshot(error = TRUE, {
    optimizer_sgd(-1)
    optimizer_adam(beta_1 = 1)
    compile(keras_model_sequential(), optimizer = "adagrad", loss = "mse")
  })
})

test_that("losses match their formulas and their gradients finite differences", {
  fixture <- class_probabilities(51)
  p <- fixture$p
  y <- fixture$y
  labels <- fixture$labels
  value <- function(loss, target, pred) conv3d:::loss_value(loss, target, pred)$value
  expect_equal(value("mse", y, p), mean((p - y)^2))
  expect_equal(value("mae", y, p), mean(abs(p - y)))
  expect_equal(value("categorical_crossentropy", y, p), mean(-rowSums(y * log(p))))
  expect_equal(value("sparse_categorical_crossentropy", labels, p), mean(-rowSums(y * log(p))))
  b <- matrix(runif(6, 0.1, 0.9), 6, 1)
  yb <- matrix(c(0, 1, 1, 0, 1, 0), 6, 1)
  expect_equal(value("binary_crossentropy", yb, b), -mean(yb * log(b) + (1 - yb) * log(1 - b)))
  eps <- 1e-6
  for (loss in c("mse", "mae", "categorical_crossentropy", "sparse_categorical_crossentropy")) {
    target <- if (loss == "sparse_categorical_crossentropy") labels else y
    grad <- conv3d:::loss_value(loss, target, p)$grad
    for (i in seq_along(p)) {
      pp <- p
      pm <- p
      pp[i] <- pp[i] + eps
      pm[i] <- pm[i] - eps
      expect_equal(grad[i], (value(loss, target, pp) - value(loss, target, pm)) / (2 * eps),
        tolerance = 1e-5, info = paste(loss, i))
    }
  }
  grad <- conv3d:::loss_value("binary_crossentropy", yb, b)$grad
  for (i in seq_along(b)) {
    bp <- b
    bm <- b
    bp[i] <- bp[i] + eps
    bm[i] <- bm[i] - eps
    expect_equal(grad[i], (value("binary_crossentropy", yb, bp) -
      value("binary_crossentropy", yb, bm)) / (2 * eps), tolerance = 1e-5)
  }
})

toy_data <- function(n) {
  x <- array(rnorm(n * 4^3), c(n, 4, 4, 4, 1))
  list(x = x, y = as.numeric(apply(x, 1, mean) > 0))
}

toy_model <- function(dropout = 0.1) {
  keras_model_sequential(input_shape = c(4, 4, 4, 1)) |>
    layer_conv_3d(4, 3, activation = "relu", dtype = "float64") |>
    layer_flatten(dtype = "float64") |>
    layer_dropout(dropout, dtype = "float64") |>
    layer_dense(1, activation = "sigmoid", dtype = "float64")
}

test_that("a small fit learns, reproducibly, with validation, callbacks and history", {
  set.seed(52)
  data <- toy_data(240)
  model <- toy_model()
  compile(model, optimizer = optimizer_adam(0.02), loss = "binary_crossentropy",
    metrics = "accuracy")
  seen <- integer()
  history <- fit(model, data$x, data$y, epochs = 12, batch_size = 20, verbose = 0,
    validation_split = 0.25, callbacks = list(function(epoch, logs) seen <<- c(seen, epoch)))
  expect_equal(seen, 1:12)
  expect_named(history$metrics, c("loss", "accuracy", "val_loss", "val_accuracy"))
  expect_gt(history$metrics$accuracy[12], 0.9)
  expect_lt(history$metrics$loss[12], history$metrics$loss[1])
  df <- as.data.frame(history)
  expect_equal(nrow(df), 48)
  expect_setequal(levels(df$data), c("training", "validation"))
  scores <- evaluate(model, data$x, data$y)
  expect_named(scores, c("loss", "accuracy"))
  expect_gt(scores[["accuracy"]], 0.85)
  pdf(NULL)
  expect_invisible(plot(history))
  dev.off()
  # the same seed gives the same fit
  run <- function() {
    set.seed(7)
    m <- toy_model()
    compile(m, optimizer = "sgd", loss = "mse", metrics = "mae")
    h <- fit(m, data$x, data$y, epochs = 2, batch_size = 32, verbose = 0)
    list(h$metrics, get_weights(m))
  }
  expect_identical(run(), run())
})

test_that("a seeded dropout layer draws its masks from its own stream", {
  # the masks follow the layer's seed, not R's: two fits with other global
  # seeds train alike, another layer seed differently, and R's stream is
  # left where it was
  run <- function(global, seed) {
    set.seed(100)
    m <- keras_model_sequential(input_shape = 6) |>
      layer_dropout(rate = 0.5, seed = seed) |>
      layer_dense(1, kernel_initializer = "ones", use_bias = FALSE, dtype = "float64")
    compile(m, optimizer_sgd(1), "mse")
    set.seed(global)
    fit(m, matrix(1, 4, 6), matrix(0, 4, 1), epochs = 2, batch_size = 2, shuffle = FALSE,
      verbose = 0)
    list(weights = c(get_weights(m)[[1]]), next_draw = runif(1))
  }
  a <- run(1, 11)
  b <- run(2, 11)
  expect_identical(a$weights, b$weights)
  expect_false(identical(a$weights, run(1, 12)$weights))
  set.seed(1)
  expect_identical(a$next_draw, runif(1)) # no global draws were taken
})

test_that("trainable, constraints, regularizers and validation_data are honoured", {
  set.seed(53)
  data <- toy_data(60)
  model <- keras_model_sequential(input_shape = c(4, 4, 4, 1)) |>
    layer_conv_3d(2, 3, dtype = "float64", trainable = FALSE) |>
    layer_flatten(dtype = "float64") |>
    layer_dense(1, dtype = "float64", kernel_constraint = constraint_nonneg(),
      kernel_regularizer = regularizer_l2(0.5))
  frozen <- get_weights(model$layers[[1]])
  compile(model, "sgd", "mse")
  h <- fit(model, data$x, data$y, epochs = 2, verbose = 0,
    validation_data = list(data$x[1:10, , , , , drop = FALSE], data$y[1:10]))
  expect_identical(get_weights(model$layers[[1]]), frozen)
  expect_true(all(get_weights(model$layers[[3]])[[1]] >= 0))
  expect_named(h$metrics, c("loss", "val_loss"))
  dense_w <- get_weights(model$layers[[3]])[[1]]
  data_loss <- mean((predict(model, data$x) - data$y)^2)
  expect_equal(evaluate(model, data$x, data$y)[["loss"]], data_loss + 0.5 * sum(dense_w^2))
})

test_that("functional models fit; sparse and categorical losses train", {
  set.seed(54)
  data <- toy_data(120)
  input <- layer_input(shape = c(4, 4, 4, 1), dtype = "float64")
  output <- input |>
    layer_global_average_pooling_3d(dtype = "float64") |>
    layer_dense(2, activation = "softmax", dtype = "float64")
  model <- keras_model(input, output)
  compile(model, optimizer_rmsprop(0.05), "sparse_categorical_crossentropy", "accuracy")
  h <- fit(model, data$x, data$y, epochs = 8, batch_size = 16, verbose = 0)
  expect_gt(h$metrics$accuracy[8], 0.9)
  compile(model, optimizer_sgd(0.5, momentum = 0.5), "categorical_crossentropy", "accuracy")
  h2 <- fit(model, data$x, cbind(1 - data$y, data$y), epochs = 3, verbose = 0)
  expect_gt(h2$metrics$accuracy[3], 0.9)
})

test_that("training errors are worded", {
  model <- keras_model_sequential(input_shape = c(2, 2, 2, 1), name = "plain") |>
    layer_flatten() |>
    layer_dense(1)
  x <- array(1, c(3, 2, 2, 2, 1))
  expect_snapshot(error = TRUE, {
    fit(model, x, 1:3)
    compile(model, "sgd", "hinge")
    compile(model, "sgd", "mse", metrics = "auc")
  })
  compile(model, "sgd", "sparse_categorical_crossentropy")
  expect_snapshot(error = TRUE, {
    fit(model, x, c(0, 1, 5), verbose = 0, shuffle = FALSE)
    fit(model, x, c(0, 0, 0), verbose = 3)
    fit(model, x, c(0, 0, 0), validation_split = 0.9, verbose = 0)
    # Keras arguments conv3d does not implement, and misspellings, are refused
    fit(model, x, c(0, 0, 0), validation_spilt = 0.5, steps_per_epoch = 2, verbose = 0)
    compile(model, "sgd", "mse", run_eagerly = TRUE)
    evaluate(model, x, c(0, 0, 0), steps = 1)
    evaluate(model, x, c(0, 0, 0), verbose = "yes")
    predict(model, x, steps = 1)
  })
})

test_that("targets must be numeric with one per sample, as Keras refuses ambiguous cardinality", {
  model <- keras_model_sequential(input_shape = c(2, 2, 2, 1), name = "count") |>
    layer_flatten() |>
    layer_dense(1)
  compile(model, "sgd", "mse")
  before <- get_weights(model)
  x <- array(rnorm(80), c(10, 2, 2, 2, 1))
  y <- rnorm(10)
  expect_snapshot(error = TRUE, {
    fit(model, x, y[1:8], verbose = 0)
    fit(model, x, c(y, 5, 5), verbose = 0)
    fit(model, x, matrix(y[1:8], 8, 1), verbose = 0)
    fit(model, x, rep("a", 10), verbose = 0)
    fit(model, x, factor(rep(1, 10)), verbose = 0)
    fit(model, x, y, verbose = 0, validation_data = list(x[1:3, , , , , drop = FALSE], y[1:2]))
    evaluate(model, x, y[1:5])
    # the output's shape, before any batch trains
    fit(model, x, matrix(1:30, 10, 3), verbose = 0)
    fit(model, x, y, verbose = 0, validation_data = list(x, cbind(y, y)))
  })
  expect_error(fit(model, x, y[1:8], verbose = 0), class = "conv3d_error_shape")
  expect_error(fit(model, x, cbind(y, y), verbose = 0), class = "conv3d_error_shape")
  expect_identical(get_weights(model), before) # nothing trained on the mismatch
  sparse <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
    layer_flatten() |>
    layer_dense(3, activation = "softmax")
  compile(sparse, "sgd", "sparse_categorical_crossentropy")
  expect_snapshot(error = TRUE, fit(sparse, x, cbind(y, y), verbose = 0))
  # several inputs must agree too
  a <- layer_input(shape = c(2, 2, 2, 1))
  b <- layer_input(shape = c(2, 2, 2, 1))
  two <- keras_model(list(a, b), layer_dense(layer_flatten(a), 1))
  compile(two, "sgd", "mse")
  expect_error(fit(two, list(x, x[1:9, , , , , drop = FALSE]), y, verbose = 0),
    "as many samples each, not 10, 9", class = "conv3d_error_shape")
})

test_that("epochs = 0 trains nothing; batches larger than the data take all of it", {
  set.seed(57)
  data <- toy_data(12)
  model <- toy_model()
  compile(model, optimizer_sgd(0.1), "binary_crossentropy", "accuracy")
  before <- get_weights(model)
  expect_invisible(h <- fit(model, data$x, data$y, epochs = 0, verbose = 0)) # as in Keras
  expect_identical(get_weights(model), before)
  expect_identical(h$metrics, list())
  expect_identical(nrow(as.data.frame(h)), 0L)
  expect_output(print(h), "No epochs trained")
  # one batch of everything, however large the batch size (past R's integers)
  set.seed(1) # the same dropout masks
  whole <- fit(model, data$x, data$y, epochs = 1, batch_size = 12, shuffle = FALSE, verbose = 0)
  set_weights(model, before)
  set.seed(1)
  huge <- fit(model, data$x, data$y, epochs = 1, batch_size = 1e10, shuffle = FALSE, verbose = 0)
  expect_identical(huge$metrics, whole$metrics)
  expect_identical(evaluate(model, data$x, data$y, batch_size = 3e9),
    evaluate(model, data$x, data$y, batch_size = 12))
  expect_identical(predict(model, data$x, batch_size = 1e10), predict(model, data$x))
  expect_snapshot(error = TRUE, {
    fit(model, data$x, data$y, epochs = -1, verbose = 0)
    fit(model, data$x, data$y, epochs = 1.5, verbose = 0)
    fit(model, data$x, data$y, batch_size = 0, verbose = 0)
    predict(model, data$x, batch_size = NA)
    fit(model, data$x[0, , , , , drop = FALSE], data$y[0], verbose = 0)
  })
})

test_that("several outputs report each one's loss and metrics under its name", {
  set.seed(58)
  x <- matrix(rnorm(30), 10, 3)
  input <- layer_input(shape = 3, dtype = "float64")
  a <- input |> layer_dense(1, activation = "sigmoid", dtype = "float64", name = "a")
  b <- input |> layer_dense(1, activation = "sigmoid", dtype = "float64", name = "b")
  model <- keras_model(input, list(a, b))
  compile(model, "sgd", "binary_crossentropy", metrics = c("accuracy", "mae"))
  ya <- rbinom(10, 1, 0.5)
  yb <- rbinom(10, 1, 0.5)
  p <- predict(model, x)
  bce <- function(y, q) -mean(y * log(q) + (1 - y) * log(1 - q))
  scores <- evaluate(model, x, list(ya, yb))
  expect_named(scores, c("loss", "a_loss", "b_loss", "a_accuracy", "a_mae", "b_accuracy",
    "b_mae"))
  expect_equal(scores[["a_loss"]], bce(ya, p[[1]]), tolerance = 1e-12)
  expect_equal(scores[["b_loss"]], bce(yb, p[[2]]), tolerance = 1e-12)
  expect_equal(scores[["loss"]], scores[["a_loss"]] + scores[["b_loss"]])
  expect_identical(scores[["a_accuracy"]], mean((p[[1]] > 0.5) == ya))
  expect_identical(scores[["b_accuracy"]], mean((p[[2]] > 0.5) == yb))
  expect_equal(scores[["b_mae"]], mean(abs(p[[2]] - yb)), tolerance = 1e-12)
  # one output: the metrics under the names asked for, each once
  single <- keras_model(input, a)
  compile(single, "sgd", "binary_crossentropy", metrics = c("acc", "accuracy", "acc", "mae"))
  s <- evaluate(single, x, ya)
  expect_named(s, c("loss", "acc", "accuracy", "mae"))
  expect_identical(s[["acc"]], mean((p[[1]] > 0.5) == ya))
  expect_identical(s[["accuracy"]], s[["acc"]])
})

test_that("\"accuracy\" is chosen from the shapes, as TF 2 Keras chooses it", {
  set.seed(59)
  p <- matrix(runif(12), 4, 3)
  onehot <- diag(3)[c(1, 3, 2, 3), ]
  multi <- matrix(c(1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 0), 4, 3)
  labels <- c(0, 2, 1, 2)
  acc <- function(y, pred) conv3d:::metric_value("accuracy", y, pred, "mean_squared_error")
  # several units: one label per row is sparse, a full array categorical
  expect_identical(acc(labels, p), mean(max.col(p, "first") - 1 == labels))
  expect_identical(acc(onehot, p), mean(max.col(p, "first") == max.col(onehot, "first")))
  # also for multi-label targets (binary_crossentropy): Keras takes categorical accuracy
  expect_identical(acc(multi, p), mean(max.col(p, "first") == max.col(multi, "first")))
  # one unit: binary accuracy at 0.5, whatever the loss
  q <- matrix(c(0.2, 0.7, 0.6, 0.4), 4, 1)
  expect_identical(acc(c(0, 1, 0, 0), q), 0.75)
  model <- keras_model_sequential(input_shape = 1) |>
    layer_dense(1, dtype = "float64", weights = list(matrix(1), 0))
  compile(model, "sgd", "mse", metrics = "accuracy")
  expect_identical(evaluate(model, matrix(c(0.2, 0.7, 0.6, 0.4)), c(0, 1, 0, 0))[["accuracy"]], 0.75)
})

test_that("cross-entropies of sigmoid and softmax outputs are computed from the logits, as in Keras", {
  # a confidently wrong prediction: clipped probabilities would cap the loss
  # at -log(1e-7) = 16.1 and give a zero gradient, so the weights would never
  # move; Keras's loss from the logits is softplus(20) and its gradient
  # sigmoid(20) x 20 on the kernel
  model <- keras_model_sequential(input_shape = 1) |>
    layer_dense(1, activation = "sigmoid", dtype = "float64", weights = list(matrix(1), 0))
  compile(model, optimizer_sgd(0.1), "binary_crossentropy")
  x <- matrix(20, 1, 1)
  expect_equal(evaluate(model, x, 0)[["loss"]], log1p(exp(20)), tolerance = 1e-12)
  fit(model, x, 0, verbose = 0)
  expect_equal(get_weights(model)[[1]][1], 1 - 0.1 * 20 * plogis(20), tolerance = 1e-12)
  expect_equal(get_weights(model)[[2]], -0.1 * plogis(20), tolerance = 1e-12)
  # softmax with sparse labels: z = (10, -10), label 1
  soft <- keras_model_sequential(input_shape = 1) |>
    layer_dense(2, activation = "softmax", dtype = "float64", weights = list(matrix(c(10, -10), 1), c(0, 0)))
  compile(soft, optimizer_sgd(1), "sparse_categorical_crossentropy")
  one <- matrix(1, 1, 1)
  lse <- 10 + log1p(exp(-20))
  expect_equal(evaluate(soft, one, 1)[["loss"]], lse + 10, tolerance = 1e-12)
  fit(soft, one, 1, verbose = 0)
  p <- exp(c(10, -10) - lse)
  expect_equal(c(get_weights(soft)[[1]]), c(10, -10) - (p - c(0, 1)), tolerance = 1e-12)
  # the same through a separate activation layer, with one-hot labels
  split <- keras_model_sequential(input_shape = 1) |>
    layer_dense(2, dtype = "float64", weights = list(matrix(c(10, -10), 1), c(0, 0))) |>
    layer_activation("softmax", dtype = "float64")
  compile(split, optimizer_sgd(1), "categorical_crossentropy")
  expect_equal(evaluate(split, one, matrix(c(0, 1), 1))[["loss"]], lse + 10, tolerance = 1e-12)
  # Keras scores a softmax output with binary_crossentropy from its logits too,
  # with the sigmoid's formula: softplus(-1) for z = (1, -1), y = (1, 0)
  mixed <- keras_model_sequential(input_shape = 1) |>
    layer_dense(2, activation = "softmax", dtype = "float64", weights = list(matrix(c(1, -1), 1), c(0, 0)))
  compile(mixed, optimizer_sgd(1), "binary_crossentropy")
  expect_equal(evaluate(mixed, one, matrix(c(1, 0), 1))[["loss"]], log1p(exp(-1)), tolerance = 1e-12)
  # an output listed twice: each listing's loss from the logits, gradients added
  input <- layer_input(shape = 1, dtype = "float64")
  twice_out <- layer_dense(input, 2, activation = "softmax", dtype = "float64",
    weights = list(matrix(c(10, -10), 1), c(0, 0)))
  twice <- keras_model(input, list(twice_out, twice_out))
  compile(twice, optimizer_sgd(1), "sparse_categorical_crossentropy")
  expect_equal(evaluate(twice, one, list(1, 1))[["loss"]], 2 * (lse + 10), tolerance = 1e-12)
  fit(twice, one, list(1, 1), verbose = 0)
  expect_equal(c(get_weights(twice)[[1]]), c(10, -10) - 2 * (p - c(0, 1)), tolerance = 1e-12)
  # an activity penalty on the output: the loss still from the logits, the
  # penalty's gradient (on the probabilities) through the sigmoid's derivative
  penalized <- keras_model_sequential(input_shape = 1) |>
    layer_dense(1, activation = "sigmoid", dtype = "float64", weights = list(matrix(1), 0),
      activity_regularizer = regularizer_l1(0.5))
  compile(penalized, optimizer_sgd(0.1), "binary_crossentropy")
  expect_equal(evaluate(penalized, x, 0)[["loss"]], log1p(exp(20)) + 0.5 * plogis(20),
    tolerance = 1e-12)
  fit(penalized, one, 0, verbose = 0)
  q <- plogis(1)
  dz <- q + 0.5 * q * (1 - q) # d/dz of softplus(z) - 0 z + 0.5 sigmoid(z), at z = 1
  expect_equal(c(get_weights(penalized)[[1]], get_weights(penalized)[[2]]), c(1, 0) - 0.1 * dz,
    tolerance = 1e-12)
  # an output another layer reads too, and scored by another loss as well:
  # its cross-entropy is still the logits' (Keras keeps them on the tensor)
  a <- layer_dense(input, 1, activation = "sigmoid", dtype = "float64", name = "a",
    weights = list(matrix(1), 0))
  b <- layer_dense(a, 1, dtype = "float64", name = "b", weights = list(matrix(1), 0))
  both <- keras_model(input, list(a, b, a))
  compile(both, optimizer_sgd(0.1), list("binary_crossentropy", "mse", "mse"))
  scores <- evaluate(both, x, list(0, 0, 0))
  expect_equal(scores[["a_loss"]], log1p(exp(20)), tolerance = 1e-12)
  expect_equal(scores[["a_1_loss"]], plogis(20)^2, tolerance = 1e-12)
  # one step: d/dz of softplus(z) + 2 sigmoid(z)^2 (the two mse terms), at z = x = 1
  fit(both, one, list(0, 0, 0), verbose = 0)
  dz <- q + 2 * 2 * q * q * (1 - q)
  expect_equal(c(get_weights(get_layer(both, "a"))[[1]]), 1 - 0.1 * dz, tolerance = 1e-12)
})

test_that("a fully convolutional model validates on volumes of another size", {
  set.seed(61)
  input <- layer_input(shape = c(NA, NA, NA, 1), dtype = "float64")
  output <- input |>
    layer_conv_3d(2, 3, padding = "same", activation = "relu", dtype = "float64") |>
    layer_conv_3d(1, 1, activation = "sigmoid", dtype = "float64")
  model <- keras_model(input, output)
  compile(model, "adam", "binary_crossentropy")
  x <- array(rnorm(3 * 6^3), c(3, 6, 6, 6, 1))
  xv <- array(rnorm(2 * 8^3), c(2, 8, 8, 8, 1))
  h <- fit(model, x, (x > 0) + 0, validation_data = list(xv, (xv > 0) + 0), verbose = 0)
  expect_equal(h$metrics$val_loss, evaluate(model, xv, (xv > 0) + 0)[["loss"]])
})

test_that("a layer that replaces one of the same name gets fresh optimizer slots", {
  set.seed(60)
  x <- matrix(rnorm(30), 10, 3)
  model <- keras_model_sequential(input_shape = 3) |>
    layer_dense(4, name = "h", dtype = "float64") |>
    layer_dense(3, name = "out", dtype = "float64")
  compile(model, "adam", "mse")
  fit(model, x, matrix(0, 10, 3), verbose = 0)
  pop_layer(model)
  model |> layer_dense(2, name = "out", dtype = "float64") # other shape: no stale moments
  expect_no_error(fit(model, x, matrix(0, 10, 2), verbose = 0))
  # same shape: its first step equals a freshly compiled model's first step
  pop_layer(model)
  model |> layer_dense(2, name = "out", dtype = "float64")
  start <- get_weights(model)
  set.seed(1)
  fit(model, x, matrix(1, 10, 2), batch_size = 10, verbose = 0)
  carried <- get_weights(model)
  set_weights(model, start)
  compile(model, "adam", "mse")
  set.seed(1)
  fit(model, x, matrix(1, 10, 2), batch_size = 10, verbose = 0)
  expect_identical(get_weights(model)[3:4], carried[3:4])
})

test_that("an output listed twice trains on both of its losses", {
  set.seed(59)
  x <- matrix(rnorm(12), 4, 3)
  ya <- rnorm(4)
  yb <- rnorm(4)
  input <- layer_input(shape = 3, dtype = "float64")
  out <- input |> layer_dense(1, dtype = "float64", name = "o",
    weights = list(matrix(c(0.1, -0.2, 0.3), 3, 1), 0.5))
  model <- keras_model(input, list(out, out))
  compile(model, optimizer_sgd(learning_rate = 1), "mse")
  expect_named(evaluate(model, x, list(ya, yb)), c("loss", "o_loss", "o_1_loss"))
  loss <- function(b) {
    p <- x %*% c(0.1, -0.2, 0.3) + b
    mean((p - ya)^2) + mean((p - yb)^2)
  }
  fit(model, x, list(ya, yb), batch_size = 4, shuffle = FALSE, verbose = 0)
  h <- 1e-6
  expect_equal(0.5 - get_weights(model)[[2]], (loss(0.5 + h) - loss(0.5 - h)) / (2 * h),
    tolerance = 1e-7)
})

test_that("a layer called twice in a model trains on the sum of both calls' gradients", {
  # y = l(l(x)) with one 1x1x1 filter: w * (w * x + b) + b. One SGD step of
  # rate 1 on the whole batch moves each weight by its gradient, which must
  # equal the loss's central difference (the second call's gradient alone is
  # about half of it). The weight penalty counts once, the activity penalty
  # once per call.
  set.seed(56)
  x <- array(rnorm(32), c(4, 2, 2, 2, 1))
  y <- array(rnorm(32), c(4, 2, 2, 2, 1))
  make <- function(w, b) {
    l <- layer_conv_3d(filters = 1, kernel_size = 1, dtype = "float64",
      kernel_regularizer = regularizer_l2(0.1), activity_regularizer = regularizer_l1(0.01),
      weights = list(array(w, c(1, 1, 1, 1, 1)), b))
    input <- layer_input(shape = c(2, 2, 2, 1), dtype = "float64")
    model <- keras_model(input, input |> l() |> l())
    compile(model, optimizer_sgd(learning_rate = 1), "mse")
    model
  }
  loss <- function(w, b) {
    z <- w * x + b
    out <- w * z + b
    mean((out - y)^2) + 0.1 * w^2 + 0.01 * (sum(abs(z)) + sum(abs(out))) / 4
  }
  model <- make(0.7, 0.2)
  expect_equal(evaluate(model, x, y)[["loss"]], loss(0.7, 0.2), tolerance = 1e-12)
  fit(model, x, y, batch_size = 4, epochs = 1, shuffle = FALSE, verbose = 0)
  w <- get_weights(model)
  h <- 1e-6
  expect_equal(0.7 - w[[1]][1], (loss(0.7 + h, 0.2) - loss(0.7 - h, 0.2)) / (2 * h),
    tolerance = 1e-6)
  expect_equal(0.2 - w[[2]][1], (loss(0.7, 0.2 + h) - loss(0.7, 0.2 - h)) / (2 * h),
    tolerance = 1e-6)
})

test_that("validation runs the inference pass (no dropout), like evaluate()", {
  set.seed(55)
  data <- toy_data(40)
  model <- toy_model(dropout = 0.8)
  compile(model, "sgd", "binary_crossentropy", "accuracy")
  h <- fit(model, data$x, data$y, epochs = 1, batch_size = 40, verbose = 0, shuffle = FALSE,
    validation_data = list(data$x, data$y))
  scores <- evaluate(model, data$x, data$y, batch_size = 40)
  expect_equal(h$metrics$val_loss, scores[["loss"]])
  expect_equal(h$metrics$val_accuracy, scores[["accuracy"]])
})

test_that("validation_freq validates after the chosen epochs; validation_batch_size batches it", {
  set.seed(62)
  x <- array(rnorm(20 * 8), c(20, 2, 2, 2, 1))
  y <- rnorm(20)
  run <- function(...) {
    set.seed(63)
    model <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
      layer_flatten(dtype = "float64") |>
      layer_dense(1, dtype = "float64")
    compile(model, optimizer_sgd(0.05), "mse")
    fit(model, x, y, epochs = 5, batch_size = 4, validation_split = 0.25, verbose = 0, ...)
  }
  every <- run()
  second <- run(validation_freq = 2)
  expect_identical(second$metrics$loss, every$metrics$loss) # training unchanged
  expect_identical(second$metrics$val_loss, every$metrics$val_loss[c(2, 4)])
  df <- as.data.frame(second)
  expect_equal(df$epoch[df$data == "validation"], c(2, 4))
  listed <- run(validation_freq = c(1, 5))
  expect_identical(listed$metrics$val_loss, every$metrics$val_loss[c(1, 5)])
  expect_identical(run(validation_freq = list(3))$metrics$val_loss, every$metrics$val_loss[3])
  # the batch size of validation does not change its (sample-weighted) mean
  expect_equal(run(validation_batch_size = 1)$metrics$val_loss, every$metrics$val_loss,
    tolerance = 1e-12)
  expect_snapshot(error = TRUE, {
    run(validation_freq = 0)
    run(validation_freq = "epoch")
    run(validation_batch_size = 0)
  })
})
