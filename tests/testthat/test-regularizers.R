test_that("regularizers compute Keras's penalties", {
  w <- c(-1, 2, -3)
  expect_equal(regularizer_l1()(w), 0.01 * 6)
  expect_equal(regularizer_l2(0.5)(w), 0.5 * 14)
  expect_equal(regularizer_l1_l2(0.1, 0.2)(w), 0.1 * 6 + 0.2 * 14)
  expect_snapshot(error = TRUE, regularizer_l2(-1))
})

test_that("layer$losses reports kernel, bias and activity penalties", {
  x <- array(1, c(2, 3, 3, 3, 1))
  kernel <- array(0.5, c(3, 3, 3, 1, 2))
  layer <- layer_conv_3d(filters = 2, kernel_size = 3, dtype = "float64",
    kernel_regularizer = "l2", bias_regularizer = regularizer_l1(0.5),
    activity_regularizer = regularizer_l1(0.1), weights = list(kernel, c(1, -2)))
  expect_length(layer$losses, 0)
  y <- layer(x)
  losses <- layer$losses
  expect_length(losses, 3)
  expect_equal(losses[[1]], 0.01 * sum(kernel^2))
  expect_equal(losses[[2]], 0.5 * 3)
  # outputs: 13.5 + 1 and 13.5 - 2 for each of the 2 samples; / batch size 2
  expect_equal(losses[[3]], 0.1 * (2 * 14.5 + 2 * 11.5) / 2)
  model <- keras_model_sequential() |> layer_conv_3d(1, 1, kernel_regularizer = "l1")
  model(x)
  expect_length(model$losses, 1)
})
