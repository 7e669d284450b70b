# The four values of `object`: missing/NULL, a sequential model, a tensor, an array.

test_that("missing or NULL object gives a callable layer", {
  layer <- layer_conv_3d(filters = 3, kernel_size = 2)
  expect_s3_class(layer, "conv3d_layer")
  expect_true(is.function(layer))
  expect_false(layer$built)
  expect_s3_class(layer_conv_3d(NULL, 3, 2), "conv3d_layer")
  x <- array(rnorm(2 * 4 * 5 * 6 * 2), c(2, 4, 5, 6, 2))
  y <- layer(x)
  expect_equal(dim(y), c(2, 3, 4, 5, 3))
  expect_true(layer$built)
  expect_equal(layer$count_params(), 2 * 2 * 2 * 2 * 3 + 3)
})

test_that("a sequential model gets the layer in place and is returned invisibly", {
  model <- keras_model_sequential()
  expect_invisible(layer_conv_3d(model, 4, 3))
  model |> layer_conv_3d(2, 1)
  expect_length(model$layers, 2)
  out <- withVisible(model |> layer_conv_3d(1, 1))
  expect_false(out$visible)
  expect_identical(out$value, model)
  expect_length(model$layers, 3)
})

test_that("a symbolic tensor gives the symbolic output with its inferred shape", {
  input <- layer_input(shape = c(9, 10, 11, 2))
  out <- layer_conv_3d(input, 5, c(3, 2, 1), strides = c(2, 3, 1), padding = "same")
  expect_s3_class(out, "conv3d_tensor")
  expect_equal(out$shape, list(NULL, 5L, 4L, 11L, 5L))
  expect_equal(dim(out), c(NA, 5L, 4L, 11L, 5L))
  unknown <- layer_input(shape = c(NA, 8, NA, 3)) |> layer_conv_3d(2, 3)
  expect_equal(dim(unknown), c(NA, NA, 6L, NA, 2L))
  cf <- layer_input(shape = c(2, 9, 10, 11)) |>
    layer_conv_3d(4, 3, data_format = "channels_first")
  expect_equal(dim(cf), c(NA, 4L, 7L, 8L, 9L))
})

test_that("an R array gives the computed R array", {
  x <- array(1, c(1, 3, 3, 3, 1))
  y <- layer_conv_3d(x, 1, 3, weights = list(array(0.5, c(3, 3, 3, 1, 1)), 2))
  expect_equal(c(y), 0.5 * 27 + 2)
  expect_equal(dim(y), c(1, 1, 1, 1, 1))
})

test_that("float32 results are rounded to float32, float64 are not", {
  x <- array(1 / 3, c(1, 1, 1, 1, 1))
  w <- list(array(1, c(1, 1, 1, 1, 1)), 0)
  y32 <- layer_conv_3d(x, 1, 1, weights = w, dtype = "float32")
  y64 <- layer_conv_3d(x, 1, 1, weights = w, dtype = "float64")
  expect_identical(c(y64), 1 / 3)
  expect_false(identical(c(y32), 1 / 3))
  expect_equal(c(y32), 1 / 3, tolerance = 1e-7)
  # 1/3 in float32 is 11184811 / 2^25
  expect_identical(c(y32), 11184811 / 2^25)
  # an R function activation's result too: float32(float32(1/3) / 3) is
  # 14913081 / 2^27
  third <- function(z) z / 3
  f32 <- layer_conv_3d(x, 1, 1, weights = w, activation = third)
  expect_identical(c(f32), 14913081 / 2^27)
  f64 <- layer_conv_3d(x, 1, 1, weights = w, dtype = "float64", activation = third)
  expect_identical(c(f64), 1 / 9)
  expect_identical(c(layer_activation(x, activation = third)), 14913081 / 2^27)
})

test_that("integer arrays are accepted", {
  x <- array(1:8, c(1, 2, 2, 2, 1))
  y <- layer_conv_3d(x, 1, 2, weights = list(array(1, c(2, 2, 2, 1, 1)), 0), dtype = "float64")
  expect_equal(c(y), 36)
})

test_that("object is evaluated first so automatic names follow model order", {
  clear_session()
  model <- keras_model_sequential() |>
    layer_conv_3d(2, 1) |>
    layer_conv_3d(2, 1) |>
    layer_conv_3d(2, 1)
  names <- vapply(model$layers, function(l) l$name, "")
  expect_equal(names, c("conv3d", "conv3d_1", "conv3d_2"))
  clear_session()
  expect_equal(layer_conv_3d(filters = 1, kernel_size = 1)$name, "conv3d")
  expect_equal(keras_model_sequential()$name, "sequential")
  expect_equal(keras_model_sequential()$name, "sequential_1")
  input <- layer_input(shape = c(4, 4, 4, 1))
  expect_equal(input$layer$name, "input_1")
})

test_that("names must be unique within a model", {
  model <- keras_model_sequential(name = "stack") |> layer_conv_3d(2, 1, name = "a")
  expect_snapshot(error = TRUE, model |> layer_conv_3d(2, 1, name = "a"))
  expect_length(model$layers, 1)
  # a functional model's layers too (one layer called twice is one layer)
  input <- layer_input(shape = c(6, 6, 6, 1))
  output <- input |> layer_conv_3d(2, 3, name = "a") |> layer_conv_3d(2, 1, name = "a")
  expect_snapshot(error = TRUE, keras_model(input, output))
  shared <- layer_conv_3d(filters = 1, kernel_size = 1, name = "twice")
  model <- keras_model(input, input |> shared() |> shared())
  expect_length(model$layers, 2)
})

test_that("get_config() gives each setting once", {
  configs <- list(
    layer_conv_3d(filters = 4, kernel_size = 3, name = "c", dtype = "float64")$get_config(),
    layer_dense(units = 2, dtype = "float32")$get_config(),
    layer_max_pooling_3d(pool_size = 2, dtype = "float64")$get_config()
  )
  for (cfg in configs) expect_identical(anyDuplicated(names(cfg)), 0L, info = cfg$name)
  expect_identical(vapply(configs, `[[`, "", "dtype"), c("float64", "float32", "float64"))
  expect_identical(configs[[1]][c("name", "filters", "kernel_size")],
    list(name = "c", filters = 4L, kernel_size = c(3L, 3L, 3L)))
  # Keras's config also holds the activation and the weights' options, and a
  # pooling's strides default to its pool size
  l2 <- regularizer_l2(0.1)
  dense <- layer_dense(units = 5, activation = "relu", kernel_regularizer = l2)$get_config()
  expect_identical(dense$activation, "relu")
  expect_identical(dense$kernel_regularizer, l2)
  expect_s3_class(dense$kernel_initializer, "conv3d_initializer")
  expect_true("bias_constraint" %in% names(dense))
  expect_identical(configs[[3]]$strides, c(2L, 2L, 2L))
  twice <- function(v) v * 2
  expect_identical(layer_activation(activation = twice)$get_config()$activation, twice)
})

test_that("other objects are refused with their class", {
  expect_snapshot(error = TRUE, {
    layer_conv_3d("x", 2, 1)
    layer_conv_3d(data.frame(a = 1), 2, 1)
    layer_conv_3d(filters = 2, kernel_size = 1)()
  })
})

test_that("the magrittr pipe adds layers in place", {
  model <- keras_model_sequential()
  model %>% layer_conv_3d(4, 3) %>% layer_conv_3d(2, 1)
  expect_length(model$layers, 2)
})
