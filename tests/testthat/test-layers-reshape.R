# layer_reshape() and layer_permute(): values in Keras's row-major order
# against an explicit per-sample reference, shapes, backward passes against
# finite differences, errors.

test_that("reshape keeps each sample's values in row-major order", {
  x <- array(seq_len(2 * 2 * 3 * 4), c(2, 2, 3, 4))
  y <- layer_reshape(x, c(4, -1), dtype = "float64")
  expect_identical(dim(y), c(2L, 4L, 6L))
  for (n in 1:2) {
    # row-major: the last axis fastest, as numpy's reshape
    values <- as.vector(aperm(x[n, , , ], 3:1))
    expect_identical(as.vector(aperm(y[n, , ], 2:1)), values)
  }
  # flatten reads the same order
  expect_identical(layer_flatten(y), layer_flatten(x))
  expect_identical(dim(layer_reshape(layer_input(c(NA, 4, 4, 3)), c(-1, 3))), c(NA, NA, 3L))
  expect_identical(dim(layer_reshape(layer_input(c(2, 4, 4, 3)), c(-1, 3))), c(NA, 32L, 3L))
  expect_identical(dim(layer_reshape(x, 24)), c(2L, 24L))
})

test_that("permute reorders the sample axes", {
  set.seed(81)
  x <- array(rnorm(2 * 2 * 3 * 4 * 5), c(2, 2, 3, 4, 5))
  y <- layer_permute(x, c(4, 1, 2, 3), dtype = "float64")
  expect_identical(dim(y), c(2L, 5L, 2L, 3L, 4L))
  expect_identical(y[2, 5, 1, 3, 4], x[2, 1, 3, 4, 5])
  expect_identical(dim(layer_permute(layer_input(c(NA, 3, 4, 5)), c(3, 2, 4, 1))),
    c(NA, 4L, 3L, 5L, NA))
})

test_that("their backward passes match finite differences", {
  set.seed(82)
  x <- array(rnorm(2 * 2 * 3 * 2 * 2), c(2, 2, 3, 2, 2))
  expect_input_gradients(layer_reshape(target_shape = c(3, -1, 2), dtype = "float64"), list(x),
    merge = FALSE)
  expect_input_gradients(layer_permute(dims = c(2, 4, 3, 1), dtype = "float64"), list(x),
    merge = FALSE)
})

test_that("a per-voxel softmax head trains through reshape", {
  set.seed(83)
  input <- layer_input(c(4, 4, 4, 1), dtype = "float64")
  scores <- layer_conv_3d(input, 2, 3, padding = "same", dtype = "float64")
  output <- layer_activation(layer_reshape(scores, c(-1, 2), dtype = "float64"), "softmax",
    dtype = "float64")
  model <- keras_model(input, output)
  x <- array(rnorm(4 * 64), c(4, 4, 4, 4, 1))
  # the voxel order of the reshape: row-major over (d, h, w)
  y <- t(apply(x[, , , , 1], 1, function(v) as.integer(aperm(v, 3:1) > 0)))
  compile(model, optimizer_adam(0.05), "sparse_categorical_crossentropy", metrics = "accuracy")
  history <- fit(model, x, y, epochs = 30, batch_size = 4, verbose = 0)
  expect_gt(tail(history$metrics$accuracy, 1), 0.95)
})

test_that("bad arguments and shapes are refused by name", {
  expect_error(layer_reshape(target_shape = c(-1, -1)), "`target_shape` must be positive whole numbers with at most one -1")
  expect_error(layer_reshape(target_shape = c(0, 2)), "`target_shape` must be")
  expect_error(layer_reshape(target_shape = "a"), "`target_shape` must be")
  expect_error(layer_reshape(), "`target_shape` is missing")
  expect_error(layer_reshape(array(0, c(1, 2, 3)), c(4, 2)), "cannot reshape samples of shape \\(2, 3\\) \\(6 values\\) to c\\(4, 2\\)",
    class = "conv3d_error_shape")
  expect_error(layer_reshape(array(0, c(1, 2, 3)), c(-1, 4)), "cannot reshape", class = "conv3d_error_shape")
  expect_error(layer_permute(dims = c(1, 3)), "`dims` must be a permutation of 1:k")
  expect_error(layer_permute(dims = c(1, 1)), "`dims` must be a permutation")
  expect_error(layer_permute(array(0, c(1, 2, 3)), c(3, 1, 2)), "must order the 2 axes after the samples'",
    class = "conv3d_error_shape")
  expect_match(layer_reshape(target_shape = 2)$name, "^reshape(_[0-9]+)?$")
  expect_match(layer_permute(dims = 1)$name, "^permute(_[0-9]+)?$")
})
