# layer_zero_padding_3d(), layer_cropping_3d() and layer_spatial_dropout_3d():
# forward passes against direct indexing, backward passes against finite
# differences, and spatial dropout's masks.

test_that("zero padding and cropping place and take the volume as Keras does", {
  set.seed(101)
  x <- array(rnorm(2 * 3 * 2 * 4 * 2), c(2, 3, 2, 4, 2))
  pads <- list(c(1, 0), c(0, 2), c(1, 1))
  y <- layer_zero_padding_3d(x, padding = pads, dtype = "float64")
  expect_identical(dim(y), c(2L, 4L, 4L, 6L, 2L))
  expect_identical(y[, 2:4, 1:2, 2:5, , drop = FALSE], x)
  expect_identical(sum(abs(y)), sum(abs(x))) # zeros elsewhere
  first <- layer_zero_padding_3d(aperm(x, c(1, 5, 2, 3, 4)), padding = pads,
    data_format = "channels_first", dtype = "float64")
  expect_identical(first, aperm(y, c(1, 5, 2, 3, 4)))
  expect_identical(dim(layer_zero_padding_3d(x, 2)), c(2L, 7L, 6L, 8L, 2L))
  crops <- list(c(1, 1), c(0, 1), c(2, 0))
  z <- layer_cropping_3d(y, cropping = crops, dtype = "float64")
  expect_identical(z, y[, 2:3, 1:3, 3:6, , drop = FALSE])
  expect_identical(layer_cropping_3d(y, cropping = list(c(1, 0), c(0, 2), c(1, 1)),
    dtype = "float64"), x) # cropping undoes the padding
  expect_identical(dim(layer_cropping_3d(layer_input(c(NA, 8, 8, 1)), c(1, 2, 3))),
    c(NA, NA, 4L, 2L, 1L))
  expect_identical(dim(layer_zero_padding_3d(layer_input(c(NA, 8, 8, 1)))), c(NA, NA, 10L, 10L, 1L))
})

test_that("padding and cropping gradients match finite differences", {
  set.seed(102)
  x <- array(rnorm(2 * 3 * 2 * 3 * 2), c(2, 3, 2, 3, 2))
  expect_input_gradients(layer_zero_padding_3d(padding = list(c(1, 0), c(0, 2), c(1, 1)),
    dtype = "float64"), list(x), merge = FALSE)
  expect_input_gradients(layer_cropping_3d(cropping = list(c(1, 0), c(0, 1), c(1, 0)),
    data_format = "channels_first", dtype = "float64"), list(x), merge = FALSE)
})

test_that("spatial dropout drops whole channels in training and nothing at inference", {
  set.seed(103)
  x <- array(rnorm(3 * 2 * 2 * 2 * 5), c(3, 2, 2, 2, 5))
  layer <- layer_spatial_dropout_3d(rate = 0.4, dtype = "float64")
  expect_identical(layer(x), x)
  self <- conv3d:::layer_self(layer)
  mask <- conv3d:::dropout_mask(self, x)
  expect_identical(dim(mask), dim(x))
  for (n in 1:3) for (c in 1:5) {
    expect_length(unique(c(mask[n, , , , c])), 1L) # one value per sample and channel
  }
  expect_true(all(mask %in% c(0, 1 / 0.6)))
  first <- layer_spatial_dropout_3d(rate = 0.4, data_format = "channels_first", dtype = "float64")
  m2 <- conv3d:::dropout_mask(conv3d:::layer_self(first), aperm(x, c(1, 5, 2, 3, 4)))
  for (n in 1:3) for (c in 1:5) expect_length(unique(c(m2[n, c, , , ])), 1L)
  # a fit with it is reproducible and trains
  run <- function() {
    set.seed(104)
    model <- keras_model_sequential(input_shape = c(2, 2, 2, 5)) |>
      layer_spatial_dropout_3d(0.3, dtype = "float64") |>
      layer_flatten(dtype = "float64") |>
      layer_dense(1, dtype = "float64")
    compile(model, optimizer_sgd(0.05), "mse")
    h <- fit(model, x, c(1, 2, 3), epochs = 3, verbose = 0)
    list(h$metrics$loss, get_weights(model))
  }
  expect_identical(run(), run())
})

test_that("padding, cropping and spatial dropout errors are worded", {
  x <- array(0, c(1, 2, 2, 2, 1))
  expect_snapshot(error = TRUE, {
    layer_zero_padding_3d(x, padding = -1)
    layer_zero_padding_3d(x, padding = list(c(1, 2, 3), 3, c(1, 1)))
    layer_cropping_3d(x, cropping = c(1, 1, 2), name = "crop")
    layer_cropping_3d(x, cropping = list(c(1, 1), 0, 0), name = "crop")
    layer_zero_padding_3d(layer_input(c(8, 8, 8, 1)), 2147483647, name = "pad")
    layer_spatial_dropout_3d(0.2)
    layer_cropping_3d(array(0, c(2, 2)), name = "crop")
    layer_spatial_dropout_3d(x, rate = 1)
    layer_spatial_dropout_3d(array(0, c(2, 3)), rate = 0.1, name = "drop")
  })
})

test_that("Keras's other argument forms and get_config() round trips are taken", {
  x <- array(1, c(1, 4, 4, 4, 1))
  expect_identical(dim(layer_zero_padding_3d(x, list(1, 2, c(0, 3)))), c(1L, 6L, 8L, 7L, 1L))
  expect_identical(dim(layer_cropping_3d(x, list(1, c(0, 2), 0))), c(1L, 2L, 2L, 4L, 1L))
  for (layer in list(layer_zero_padding_3d(padding = list(1, 2, c(0, 3))),
    layer_cropping_3d(cropping = 1), layer_spatial_dropout_3d(rate = 0.3, seed = 5))) {
    cfg <- layer$get_config()
    cfg$name <- NULL
    maker <- switch(conv3d:::layer_self(layer)$class_name, ZeroPadding3D = layer_zero_padding_3d,
      Cropping3D = layer_cropping_3d, SpatialDropout3D = layer_spatial_dropout_3d)
    expect_identical(do.call(maker, cfg)$get_config()[-1], layer$get_config()[-1])
  }
})

test_that("a dropout of rate 0 draws no random numbers", {
  x <- array(rnorm(4 * 8), c(4, 2, 2, 2, 1))
  for (dropout in list(function(m) layer_dropout(m, 0), function(m) layer_spatial_dropout_3d(m, 0))) {
    model <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |> dropout() |>
      layer_flatten() |> layer_dense(1)
    compile(model, "sgd", "mse")
    set.seed(1)
    fit(model, x, 1:4, epochs = 2, shuffle = FALSE, verbose = 0)
    after_fit <- runif(1)
    set.seed(1)
    expect_identical(after_fit, runif(1))
  }
})
