# The Winograd path (F(2x2x2, 3x3x3)): layers of unit stride with odd kernels
# of 3 to 7 taps (larger ones as sums of 3x3x3 sub-kernels), one group, at
# least 16 channels and filters; 3x3x3 ones with any dilation. Compared with the
# naive references on every tier, 1 and 2 threads bit-identical.

test_that("the Winograd path matches the reference", {
  set.seed(41)
  local_tier_and_threads()
  # odd output extents (the last tiles half outside), several samples, filters
  # not a multiple of two vectors, both formats and padding modes, activations
  # applied on rows whose filters are padded
  cases <- list(
    list(dims = c(2, 5, 6, 7, 32), filters = 33, padding = "same", activation = "relu"),
    list(dims = c(1, 8, 8, 8, 64), filters = 40, padding = "valid", activation = NULL),
    list(dims = c(1, 7, 4, 9, 48), filters = 32, padding = "same", activation = "softmax",
      format = "channels_first"),
    list(dims = c(3, 4, 5, 4, 32), filters = 35, padding = "valid", activation = "tanh",
      bias = FALSE),
    list(dims = c(1, 3, 9, 5, 32), filters = 48, padding = "same", activation = "softmax"),
    list(dims = c(2, 6, 3, 5, 32), filters = 32, padding = "same", activation = "elu",
      format = "channels_first"),
    # the fewest channels and filters it takes
    list(dims = c(1, 6, 7, 5, 16), filters = 16, padding = "same", activation = "relu"),
    # dilated: each phase of the outputs (o = phase + d q) in tiles of its own,
    # phases with odd numbers of outputs, dilations that differ by axis
    list(dims = c(1, 9, 8, 7, 32), filters = 33, padding = "same", activation = "relu",
      dilation = 2),
    list(dims = c(2, 7, 9, 11, 32), filters = 32, padding = "same", activation = NULL,
      dilation = c(1, 2, 3), format = "channels_first"),
    list(dims = c(1, 10, 11, 9, 32), filters = 40, padding = "valid", activation = "softmax",
      dilation = c(2, 3, 2)),
    # larger kernels: sub-kernels reading tiles past the item's rows, columns
    # and planes
    list(dims = c(1, 9, 8, 7, 32), filters = 33, padding = "same", activation = NULL,
      kernel = 5),
    list(dims = c(2, 9, 10, 11, 32), filters = 32, padding = "same", activation = "relu",
      kernel = c(3, 5, 7), format = "channels_first"),
    list(dims = c(1, 12, 11, 13, 32), filters = 40, padding = "valid", activation = NULL,
      kernel = c(7, 5, 5))
  )
  for (case in cases) {
    format <- if (is.null(case$format)) "channels_last" else case$format
    x <- array(rnorm(prod(case$dims)), case$dims)
    if (format == "channels_first") x <- aperm(x, c(1, 5, 2, 3, 4))
    cin <- case$dims[5]
    ksize <- rep_len(if (is.null(case$kernel)) 3 else case$kernel, 3)
    kernel <- array(rnorm(prod(ksize) * cin * case$filters), c(ksize, cin, case$filters))
    use_bias <- !isFALSE(case$bias)
    bias <- if (use_bias) rnorm(case$filters)
    dilation <- if (is.null(case$dilation)) 1 else case$dilation
    ref <- reference_conv3d(x, kernel, bias, padding = case$padding, data_format = format,
      dilation_rate = rep_len(dilation, 3), activation = case$activation)
    for (dtype in c("float32", "float64")) {
      layer <- layer_conv_3d(filters = case$filters, kernel_size = ksize, padding = case$padding,
        dilation_rate = dilation, data_format = format, activation = case$activation,
        use_bias = use_bias,
        dtype = dtype, weights = if (use_bias) list(kernel, bias) else list(kernel))
      expect_every_tier(function() {
        y <- layer(x)
        expect_identical(conv3d:::last_forward_path(), "winograd")
        y
      }, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
      info = paste(paste(case$dims, collapse = "x"), case$filters, format,
        paste(dilation, collapse = ","), paste(ksize, collapse = ","), dtype))
    }
  }
})

test_that("a Winograd output of 4 MB and more is streamed and matches the reference", {
  set.seed(42)
  local_tier_and_threads()
  expect_streamed_layer(c(1, 32, 32, 16, 32), 3, 32, "same", "winograd",
    c(float32 = 1e-5, float64 = 1e-12), min_bytes = 4 * 2^20)
})

test_that("a channels_first softmax over a W longer than the Winograd scratch matches R's", {
  # Keras's softmax takes the last axis (W) even under channels_first: each
  # thread gathers a W line into its scratch, which on the Winograd path must
  # hold W = 12000 values although its tiles need about 10000 (16 channels and
  # filters, short depth rows; the generic tier's vectors are the shortest).
  # Before, two threads wrote their lines over each other and past the end.
  set.seed(44)
  local_tier_and_threads()
  conv3d_cpu("generic")
  conv3d_threads(2)
  x <- array(rnorm(16 * 8 * 2 * 12000), c(1, 16, 8, 2, 12000))
  kernel <- array(rnorm(27 * 16 * 16) / 12, c(3, 3, 3, 16, 16))
  bias <- rnorm(16)
  for (dtype in c("float64", "float32")) {
    args <- list(filters = 16, kernel_size = 3, padding = "same", data_format = "channels_first",
      dtype = dtype, weights = list(kernel, bias))
    z <- do.call(layer_conv_3d, c(list(x), args))
    y <- do.call(layer_conv_3d, c(list(x), args, activation = "softmax"))
    expect_identical(conv3d:::last_forward_path(), "winograd")
    e <- exp(z - as.vector(apply(z, 1:4, max)))
    expect_equal(y, e / as.vector(apply(e, 1:4, sum)),
      tolerance = if (dtype == "float32") 1e-5 else 1e-12, info = dtype)
  }
})

test_that("layers outside the Winograd path's conditions take the direct paths", {
  set.seed(43)
  x <- array(rnorm(1 * 6 * 6 * 6 * 32), c(1, 6, 6, 6, 32))
  not_winograd <- list(
    partial_vector = list(x = x[, , , , 1:31, drop = FALSE], filters = 32, kernel_size = 3),
    few_channels = list(x = x[, , , , 1:8, drop = FALSE], filters = 32, kernel_size = 3),
    few_filters = list(x = x, filters = 15, kernel_size = 3),
    strided = list(x = x, filters = 32, kernel_size = 3, strides = 2),
    grouped = list(x = x, filters = 32, kernel_size = 3, groups = 2),
    even = list(x = x, filters = 32, kernel_size = c(3, 3, 2)),
    large_dilated = list(x = x, filters = 32, kernel_size = 5, dilation_rate = c(1, 1, 2)),
    too_large = list(x = x, filters = 32, kernel_size = c(3, 9, 3)),
    one_output = list(x = x[, 1:3, , , , drop = FALSE], filters = 32, kernel_size = 3,
      padding = "valid")
  )
  for (name in names(not_winograd)) {
    case <- not_winograd[[name]]
    args <- case[setdiff(names(case), "x")]
    if (is.null(args$padding)) args$padding <- "same"
    y <- do.call(layer_conv_3d, c(list(case$x), args))
    expect_false(identical(conv3d:::last_forward_path(), "winograd"), info = name)
  }
  # transformed weights over 16 MB (64 x 256 x 192 doubles) stay direct
  big <- layer_conv_3d(filters = 192, kernel_size = 3, padding = "same", dtype = "float64")
  big(array(rnorm(2 * 2 * 2 * 256), c(1, 2, 2, 2, 256)))
  expect_identical(conv3d:::last_forward_path(), "rows")
  # and the same layer in float32 (8 MB) takes it
  small <- layer_conv_3d(filters = 192, kernel_size = 3, padding = "same")
  small(array(rnorm(2 * 2 * 2 * 256), c(1, 2, 2, 2, 256)))
  expect_identical(conv3d:::last_forward_path(), "winograd")
  # a 7x7x7 layer keeps 3 planes of tile transforms 2 tiles wider than its
  # rows: 259 columns (38 MB per thread) stay direct, 19 take it
  large <- layer_conv_3d(filters = 32, kernel_size = 7)
  large(array(rnorm(8 * 8 * 520 * 64), c(1, 8, 8, 520, 64)))
  expect_identical(conv3d:::last_forward_path(), "rows")
  large(array(rnorm(8 * 8 * 40 * 64), c(1, 8, 8, 40, 64)))
  expect_identical(conv3d:::last_forward_path(), "winograd")
})

test_that("input gradients of unit-stride layers on the Winograd path match the reference", {
  # the input gradient of a unit-stride layer is a correlation of dy with the
  # flipped, transposed kernel (of the same size): the forward Winograd path
  # when that correlation qualifies (16 or more filters, whole vectors of them)
  set.seed(44)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(2, 5, 6, 7, 33), filters = 32, padding = "same", format = "channels_last"),
    list(dims = c(1, 6, 4, 5, 40), filters = 48, padding = "valid", format = "channels_first"),
    list(dims = c(1, 4, 7, 6, 32), filters = 64, padding = "same", format = "channels_first"),
    list(dims = c(1, 7, 9, 8, 32), filters = 32, padding = "same", format = "channels_last",
      dilation = c(2, 1, 3)),
    list(dims = c(1, 8, 9, 7, 32), filters = 32, padding = "same", format = "channels_first",
      kernel = c(5, 3, 7))
  )
  for (case in cases) {
    x <- array(rnorm(prod(case$dims)), case$dims)
    if (case$format == "channels_first") x <- aperm(x, c(1, 5, 2, 3, 4))
    cin <- case$dims[5]
    ksize <- rep_len(if (is.null(case$kernel)) 3 else case$kernel, 3)
    kernel <- array(rnorm(prod(ksize) * cin * case$filters), c(ksize, cin, case$filters))
    dilation <- if (is.null(case$dilation)) 1 else case$dilation
    for (dtype in c("float32", "float64")) {
      layer <- layer_conv_3d(filters = case$filters, kernel_size = ksize, padding = case$padding,
        dilation_rate = dilation, data_format = case$format, dtype = dtype,
        weights = list(kernel, rnorm(case$filters)))
      dy <- array(rnorm(length(layer(x))), dim(layer(x)))
      ref <- reference_conv3d_gradients(x, kernel, dy, 1, case$padding, rep_len(dilation, 3), 1,
        case$format)
      expect_every_tier(function() {
        g <- conv3d_gradients(layer, x, dy)
        expect_identical(conv3d:::last_input_gradient_path(), "winograd")
        g
      }, ref, tolerance = if (dtype == "float32") 1e-4 else 1e-10,
      info = paste(paste(case$dims, collapse = "x"), case$filters, case$format, dtype))
    }
  }
  # 31 filters: the correlation has 31 channels, so the phases' kernels run
  layer <- layer_conv_3d(filters = 31, kernel_size = 3, padding = "same")
  x <- array(rnorm(4 * 4 * 4 * 32), c(1, 4, 4, 4, 32))
  g <- conv3d_gradients(layer, x, array(1, dim(layer(x))))
  expect_identical(conv3d:::last_input_gradient_path(), "phases")
})
