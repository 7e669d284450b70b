# Every error names the argument and the offending value, with a condition class.

test_that("argument errors are worded and classed", {
  expect_snapshot(error = TRUE, {
    layer_conv_3d(filters = 0, kernel_size = 3)
    layer_conv_3d(filters = 2.5, kernel_size = 3)
    layer_conv_3d(filters = "8", kernel_size = 3)
    layer_conv_3d(filters = factor(4), kernel_size = 3)
    layer_conv_3d(filters = 8, kernel_size = factor(c(3, 3, 3)))
    layer_conv_3d(filters = NA, kernel_size = 3)
    layer_conv_3d(filters = 8, kernel_size = c(3, 3))
    layer_conv_3d(filters = 8, kernel_size = c(3, NaN, 3))
    layer_conv_3d(filters = 8, kernel_size = Inf)
    layer_conv_3d(filters = 8, kernel_size = 3, strides = c(0, 1, 1))
    layer_conv_3d(filters = 8, kernel_size = 3, strides = -1)
    layer_conv_3d(filters = 8, kernel_size = 3, dilation_rate = 1.5)
    layer_conv_3d(filters = 8, kernel_size = 3, padding = "causal")
    layer_conv_3d(filters = 8, kernel_size = 3, padding = NA)
    layer_conv_3d(filters = 8, kernel_size = 3, data_format = "nhwc")
    layer_conv_3d(filters = 8, kernel_size = 3, strides = 2, dilation_rate = 2)
    layer_conv_3d(filters = 10, kernel_size = 3, groups = 3)
    layer_conv_3d(filters = 8, kernel_size = 3, groups = 0)
    layer_conv_3d(filters = 8, kernel_size = 3, use_bias = NA)
    layer_conv_3d(filters = 8, kernel_size = 3, dtype = "float16")
    layer_conv_3d(filters = 8, kernel_size = 3, activation = "swishy")
    layer_conv_3d(filters = 8, kernel_size = 3, kernel_initializer = "glorot")
    layer_conv_3d(filters = 8, kernel_size = 3, kernel_regularizer = "l3")
    layer_conv_3d(filters = 8, kernel_size = 3, kernel_constraint = 1)
    layer_conv_3d(filters = 8, kernel_size = 3, trainable = "yes")
    layer_conv_3d(filters = 8, kernel_size = 3, name = 1)
    layer_conv_3d(8, 3)
    layer_conv_3d(list(1), 8, 3)
    layer_conv_3d()
    layer_conv_3d(filters = 8)
  })
  expect_error(layer_conv_3d(filters = 0, kernel_size = 3), class = "conv3d_error_argument")
  expect_error(layer_conv_3d(filters = 8, kernel_size = 3, strides = 2, dilation_rate = 2),
    class = "conv3d_error")
})

test_that("the C validation names the argument even with a collection at every allocation", {
  # The condition's call to R is built from several fresh strings; each must
  # stay protected while the next one is allocated, or a collection can hand
  # its memory to another (the message then named `scalar_int`).
  cfg <- list(filters = 0, kernel_size = 3, strides = 1, padding = "valid",
    data_format = "channels_last", dilation_rate = 1, groups = 1, use_bias = TRUE,
    dtype = "float32")
  gctorture(TRUE)
  err <- tryCatch(.Call(conv3d:::ffi_conv3d_spec, cfg, NULL, NULL), error = identity)
  gctorture(FALSE)
  expect_s3_class(err, "conv3d_error_argument")
  expect_identical(conditionMessage(err), "`filters` must be a positive whole number, not 0.")
})

test_that("input errors are worded and classed", {
  layer <- layer_conv_3d(filters = 2, kernel_size = 3)
  expect_snapshot(error = TRUE, {
    layer(array(1, c(2, 4, 4)))
    layer(1:10)
    layer(array("a", c(1, 4, 4, 4, 1)))
    layer(array(TRUE, c(1, 4, 4, 4, 1)))
    layer(array(1, c(1, 2, 4, 4, 1)))
    layer_conv_3d(array(1, c(1, 4, 4, 4, 3)), filters = 4, kernel_size = 1, groups = 2)
  })
  expect_error(layer(array(1, c(1, 2, 4, 4, 1))), class = "conv3d_error_shape")
  y <- layer(array(1, c(1, 4, 4, 4, 1)))
  expect_snapshot(error = TRUE, layer(array(1, c(1, 4, 4, 4, 2))))
  expect_error(layer(array(1, c(1, 4, 4, 4, 2))), class = "conv3d_error_shape")
})

test_that("shape arguments reject NA, NaN and overflow", {
  expect_snapshot(error = TRUE, {
    layer_input(shape = c(4, 4, 4, 1)) |> layer_conv_3d(2, c(3, NA, 3))
    layer_input(shape = c(0, 4, 4, 1)) |> layer_conv_3d(2, 1)
    layer_input(shape = c(4, 4, 4)) |> layer_conv_3d(2, 1)
    layer_input(shape = c(2^30, 2^30, 2^30, 1)) |> layer_conv_3d(2, 1)
    layer_input(shape = c(4, 4, 4, NA)) |> layer_conv_3d(2, 1)
    # the window, not the small input, is what overflows
    layer_input(shape = c(2, 2, 2, 1)) |>
      layer_conv_3d(1, 3, dilation_rate = c(1, 1e9, 1e9), padding = "same")
    layer_input(shape = c(2, 2, 2, 1)) |> layer_conv_3d(1, c(3, 2^31 - 1, 2^31 - 1), padding = "same")
    layer_input(shape = c(2, 2, 2, 2^31 - 1)) |> layer_conv_3d(2^31 - 1, c(2^20, 2^20, 1), padding = "same")
    layer_input(shape = c(2, 2, 2, 1)) |>
      layer_max_pooling_3d(c(2^31 - 1, 2^31 - 1, 3), strides = 1, padding = "same")
  })
})

test_that("weights of the wrong shape or count are refused", {
  expect_snapshot(error = TRUE, {
    layer_conv_3d(array(1, c(1, 3, 3, 3, 1)), 2, 3, weights = list(array(0, c(3, 3, 3, 1, 2))))
    layer_conv_3d(array(1, c(1, 3, 3, 3, 1)), 2, 3, weights = list(array(0, c(3, 3, 3, 2, 2)), c(0, 0)))
    layer_conv_3d(array(1, c(1, 3, 3, 3, 1)), 2, 3, weights = list(array(0, c(3, 3, 3, 1, 2)), 1:3))
    layer_conv_3d(array(1, c(1, 3, 3, 3, 1)), 2, 3, weights = array(0, c(3, 3, 3, 1, 2)))
    set_weights(layer_conv_3d(filters = 2, kernel_size = 3, name = "lonely"), list())
  })
  expect_error(
    layer_conv_3d(array(1, c(1, 3, 3, 3, 1)), 2, 3, weights = list(array(0, c(3, 3, 3, 1, 2)))),
    class = "conv3d_error_weights"
  )
})

test_that("NaN and Inf in the data propagate as in IEEE arithmetic", {
  x <- array(1, c(1, 3, 3, 3, 1))
  x[1, 2, 2, 2, 1] <- NaN
  w <- list(array(1, c(1, 1, 1, 1, 1)), 0)
  y <- layer_conv_3d(x, 1, 1, weights = w, dtype = "float64", activation = "relu")
  expect_true(is.nan(y[1, 2, 2, 2, 1]))
  expect_equal(sum(is.nan(y)), 1)
  x[1, 2, 2, 2, 1] <- Inf
  y <- layer_conv_3d(x, 1, 3, weights = list(array(1, c(3, 3, 3, 1, 1)), 0), dtype = "float32")
  expect_identical(y[1, 1, 1, 1, 1], Inf)
})

test_that("NaN and Inf reach only the outputs that read them on the Winograd paths", {
  # The transforms would mix an input into every output of a tile (the
  # Winograd path: 2x2x2) or of a bundle of 4 rows (the planar path's
  # Winograd rows), and make an infinite sum NaN: a layer whose input or
  # kernel holds a value that is not finite runs on the direct sums instead
  # (the rows path, the direct planar tiles), the same outputs NaN and
  # infinite as the reference's; the next finite input runs the transforms
  # again. On the Winograd rows, a NaN in an input row that no output reads
  # (stride 2, valid) reaches no output.
  set.seed(8)
  cases <- list(
    list(dims = c(1, 32, 12, 6, 3), filters = 8, path = "planar-winograd", direct = "planar"),
    list(dims = c(1, 8, 8, 8, 16), filters = 16, path = "winograd", direct = "rows")
  )
  for (case in cases) {
    cin <- case$dims[5]
    f <- case$filters
    kernel <- array(rnorm(27 * cin * f) / 4, c(3, 3, 3, cin, f))
    bias <- rnorm(f)
    x <- array(rnorm(prod(case$dims)), case$dims)
    bad <- x
    bad[1, 6, 6, 3, 1] <- NaN
    bad[1, 3, 3, 2, 2] <- Inf
    ref <- reference_conv3d(bad, kernel, bias, 1, "same")
    expect_gt(sum(is.nan(ref)), 0)
    expect_gt(sum(abs(ref) == Inf, na.rm = TRUE), 0)
    nan_kernel <- kernel
    nan_kernel[2, 2, 2, 1, 1] <- NaN
    for (dtype in c("float64", "float32")) {
      info <- paste(case$path, dtype)
      layer <- layer_conv_3d(filters = f, kernel_size = 3, padding = "same", dtype = dtype,
        weights = list(kernel, bias))
      layer(x)
      expect_identical(conv3d:::last_forward_path(), case$path, info = info)
      y <- layer(bad)
      expect_identical(conv3d:::last_forward_path(), case$direct, info = info)
      expect_identical(is.nan(y), is.nan(ref), info = info)
      expect_identical(y == Inf, ref == Inf, info = info)
      expect_identical(y == -Inf, ref == -Inf, info = info)
      expect_equal(y[is.finite(ref)], ref[is.finite(ref)], tolerance = 1e-5, info = info)
      expect_equal(layer(x), reference_conv3d(x, kernel, bias, 1, "same"), tolerance = 1e-5,
        info = info)
      expect_identical(conv3d:::last_forward_path(), case$path, info = info)
      y <- layer_conv_3d(x, f, 3, padding = "same", dtype = dtype,
        weights = list(nan_kernel, bias))
      expect_identical(conv3d:::last_forward_path(), case$direct, info = info)
      expect_identical(is.nan(y), is.nan(reference_conv3d(x, nan_kernel, bias, 1, "same")),
        info = info)
    }
  }
  unread <- array(rnorm(32 * 12 * 6 * 3), c(1, 32, 12, 6, 3))
  unread[1, , 12, , ] <- NaN
  kernel <- array(rnorm(27 * 3 * 8), c(3, 3, 3, 3, 8))
  bias <- rnorm(8)
  for (dtype in c("float64", "float32")) {
    y <- layer_conv_3d(unread, 8, 3, strides = c(1, 2, 1), dtype = dtype,
      weights = list(kernel, bias))
    expect_identical(conv3d:::last_forward_path(), "planar-winograd")
    expect_equal(y, reference_conv3d(unread, kernel, bias, c(1, 2, 1), "valid"),
      tolerance = 1e-5)
  }
})
