# train_on_batch(), test_on_batch(), predict_on_batch() against fit(),
# evaluate() and predict() on one batch; freeze_weights() / unfreeze_weights().

batch_model <- function(seed = 81) {
  set.seed(seed)
  keras_model_sequential(input_shape = c(3, 3, 3, 1), name = "batched") |>
    layer_conv_3d(2, 2, activation = "relu", dtype = "float64", name = "conv") |>
    layer_flatten(dtype = "float64", name = "flat") |>
    layer_dense(3, activation = "softmax", dtype = "float64", name = "head")
}

test_that("the batch functions match fit(), evaluate() and predict() on one batch", {
  set.seed(82)
  x <- array(rnorm(6 * 27), c(6, 3, 3, 3, 1))
  y <- c(0, 1, 2, 2, 1, 0)
  w <- runif(6)
  a <- batch_model()
  b <- batch_model()
  for (m in list(a, b)) {
    compile(m, optimizer_adam(0.05), "sparse_categorical_crossentropy", metrics = "accuracy",
      weighted_metrics = "accuracy")
  }
  before <- test_on_batch(a, x, y, sample_weight = w)
  expect_equal(before, evaluate(a, x, y, sample_weight = w, batch_size = 6))
  for (step in 1:3) {
    logs <- train_on_batch(a, x, y, class_weight = c(1, 2, 0.5), sample_weight = w)
    h <- fit(b, x, y, batch_size = 6, epochs = 1, shuffle = FALSE, verbose = 0,
      class_weight = c(1, 2, 0.5), sample_weight = w)
    expect_equal(logs, unlist(h$metrics))
  }
  expect_identical(get_weights(a), get_weights(b))
  expect_named(logs, c("loss", "accuracy", "weighted_accuracy"))
  expect_identical(predict_on_batch(a, x), predict(a, x))
})

test_that("freeze_weights() and unfreeze_weights() follow R keras, and training obeys them", {
  model <- batch_model()
  trainable <- function() vapply(model$layers, function(l) l$trainable, TRUE)
  freeze_weights(model, to = "flat")
  expect_identical(trainable(), c(FALSE, FALSE, TRUE))
  freeze_weights(model, from = 3)
  expect_identical(trainable(), c(TRUE, TRUE, FALSE)) # the others unfrozen, as in R keras
  unfreeze_weights(model, which = "conv")
  expect_identical(trainable(), c(TRUE, FALSE, FALSE))
  freeze_weights(model, which = c(FALSE, TRUE, TRUE))
  expect_identical(trainable(), c(TRUE, FALSE, FALSE))
  freeze_weights(model)
  expect_false(model$trainable)
  unfreeze_weights(model)
  expect_identical(trainable(), c(TRUE, TRUE, TRUE))
  expect_true(model$trainable)
  # a frozen layer keeps its weights through training
  compile(model, optimizer_sgd(0.5), "sparse_categorical_crossentropy")
  freeze_weights(model, to = "conv")
  conv <- get_weights(get_layer(model, "conv"))
  head <- get_weights(get_layer(model, "head"))
  x <- array(rnorm(4 * 27), c(4, 3, 3, 3, 1))
  train_on_batch(model, x, c(0, 1, 2, 0))
  expect_identical(get_weights(get_layer(model, "conv")), conv)
  expect_false(identical(get_weights(get_layer(model, "head")), head))
  # layers, and a function of a layer, choose too (as in R keras)
  freeze_weights(model, from = get_layer(model, "flat"))
  expect_identical(trainable(), c(TRUE, FALSE, FALSE))
  freeze_weights(model, which = function(layer) layer$name == "conv")
  expect_identical(trainable(), c(FALSE, TRUE, TRUE))
  unfreeze_weights(model, which = list(get_layer(model, "head")))
  expect_identical(trainable(), c(FALSE, FALSE, TRUE))
  unfreeze_weights(model)
  expect_snapshot(error = TRUE, {
    train_on_batch(model, x)
    get_layer(model, c("conv", "head"))
    freeze_weights(model, from = "nope")
    freeze_weights(model, from = 9)
    freeze_weights(model, from = "head", to = "conv")
    freeze_weights(model, which = c(TRUE, FALSE))
    freeze_weights(model, from = 1, which = 2)
    freeze_weights(layer_dense(units = 1))
    train_on_batch(batch_model(), x, c(0, 1, 2, 0))
  })
})
