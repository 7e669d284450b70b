test_that("summary() prints like keras 2.15", {
  clear_session()
  model <- keras_model_sequential(input_shape = c(32, 32, 32, 1))
  model |>
    layer_conv_3d(8, 3, activation = "relu") |>
    layer_conv_3d(16, 3, strides = 2, padding = "same") |>
    layer_conv_3d(4, 1, use_bias = FALSE, dtype = "float64", trainable = FALSE)
  expect_snapshot(summary(model))
  expect_snapshot(print(keras_model_sequential()))
  input <- layer_input(shape = c(NA, NA, NA, 3))
  output <- input |> layer_conv_3d(6, 3, groups = 3, dilation_rate = 2)
  expect_snapshot(keras_model(input, output))
  branch <- layer_conv_3d(filters = 2, kernel_size = 1, name = "branch")
  trunk <- input |> layer_conv_3d(3, 1, name = "trunk")
  expect_snapshot(keras_model(input, list(branch(input), branch(trunk))))
  # a layer called on tensors of different shapes has "multiple" outputs
  cube <- layer_input(shape = c(8, 8, 8, 1), name = "cube")
  pool <- layer_max_pooling_3d(name = "pool")
  expect_snapshot(keras_model(cube, list(pool(cube), pool(pool(cube)))))
})

test_that("parameter counts and byte sizes follow the formula", {
  model <- keras_model_sequential(input_shape = c(8, 8, 8, 6)) |>
    layer_conv_3d(9, c(3, 2, 1), groups = 3)
  expect_equal(model$count_params(), 3 * 2 * 1 * (6 / 3) * 9 + 9)
  lines <- capture.output(summary(model))
  expect_true(any(grepl("Total params: 117 (468.00 Byte)", lines, fixed = TRUE)))
})
