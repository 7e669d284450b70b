# Dense, flatten, dropout and activation layers against direct computations.

test_that("dense computes activation(x W + b) over the last axis", {
  set.seed(31)
  x <- array(rnorm(3 * 4 * 5), c(3, 4, 5))
  w <- matrix(rnorm(5 * 2), 5, 2)
  b <- c(0.5, -1)
  y <- layer_dense(x, 2, activation = "tanh", dtype = "float64", weights = list(w, b))
  ref <- array(0, c(3, 4, 2))
  for (i in 1:3) for (j in 1:4) for (u in 1:2) ref[i, j, u] <- tanh(sum(x[i, j, ] * w[, u]) + b[u])
  expect_equal(y, ref, tolerance = 1e-12)
  dense <- layer_dense(units = 3, use_bias = FALSE, name = "head")
  expect_equal(dim(dense(matrix(1, 2, 7))), c(2, 3))
  expect_length(get_weights(dense), 1)
  expect_equal(dense$count_params(), 21)
  expect_snapshot(error = TRUE, {
    layer_dense(units = 0)
    layer_dense(3)
    dense(matrix(1, 2, 6))
    layer_dense(matrix(1, 2, 2), 2, weights = list(matrix(0, 3, 2), 0))
  })
})

test_that("flatten uses Keras's row-major order, channels_last first", {
  x <- array(seq_len(2 * 2 * 3 * 4 * 5), c(2, 2, 3, 4, 5))
  y <- layer_flatten(x)
  expect_equal(dim(y), c(2, 120))
  # element [n, d, h, w, c] lands at column ((d * 3 + h) * 4 + w) * 5 + c (0-based)
  expect_equal(y[2, ((1 * 3 + 2) * 4 + 3) * 5 + 4 + 1], x[2, 2, 3, 4, 5])
  expect_equal(y[1, 2], x[1, 1, 1, 1, 2])
  xf <- aperm(x, c(1, 5, 2, 3, 4))
  expect_equal(layer_flatten(xf, data_format = "channels_first"), y)
})

test_that("dropout passes through at inference; activation applies by name or function", {
  x <- array(rnorm(24), c(2, 3, 4))
  expect_identical(layer_dropout(x, rate = 0.3, dtype = "float64"), x)
  # a float32 layer gives float32 values, as every float32 layer (and Keras's cast) does
  f32 <- function(v) array(readBin(writeBin(c(v), raw(), size = 4), "double", size = 4, n = length(v)),
    dim(v))
  expect_identical(layer_dropout(x, rate = 0.3), f32(x))
  expect_identical(layer_flatten(x), f32(matrix(aperm(x, c(1, 3, 2)), 2)))
  expect_snapshot(error = TRUE, {
    layer_dropout(rate = 1)
    layer_dropout(0.5) # the rate given as `object`: the usual hint
    layer_dropout()
  })
  expect_equal(layer_activation(x, "relu", dtype = "float64"), pmax(x, 0) + 0 * x)
  sm <- layer_activation(x, "softmax", dtype = "float64")
  expect_equal(apply(sm, c(1, 2), sum), matrix(1, 2, 3))
  expect_equal(layer_activation(x, function(v) v * 2, dtype = "float64"), x * 2)
})

test_that("a small 3-D classifier composes, infers shapes and summarises", {
  clear_session()
  model <- keras_model_sequential(input_shape = c(12, 12, 12, 1), name = "classifier") |>
    layer_conv_3d(4, 3, activation = "relu") |>
    layer_max_pooling_3d(2) |>
    layer_conv_3d(8, 3, padding = "same", activation = "relu") |>
    layer_global_average_pooling_3d() |>
    layer_dropout(0.2) |>
    layer_dense(3, activation = "softmax")
  expect_snapshot(summary(model))
  x <- array(rnorm(5 * 12^3), c(5, 12, 12, 12, 1))
  p <- predict(model, x, batch_size = 2)
  expect_equal(dim(p), c(5, 3))
  expect_equal(rowSums(p), rep(1, 5), tolerance = 1e-6)
  input <- layer_input(shape = c(8, 8, 8, 2))
  out <- input |> layer_conv_3d(4, 3) |> layer_flatten() |> layer_dense(2)
  expect_equal(dim(out), c(NA, 2L))
  expect_equal(dim(predict(keras_model(input, out), array(1, c(3, 8, 8, 8, 2)))), c(3, 2))
})
