# The kernel tiers this CPU can run, lowest first (conv3d_cpu() forces each).
available_tiers <- function() {
  best <- conv3d_cpu()$best
  c("generic", "avx2", "avx512")[seq_len(match(best, c("generic", "avx2", "avx512")))]
}

# On every tier: compute() (with 2 threads) equals `expected`, and with 1
# thread gives bit-identical results. The caller restores the tier and threads.
expect_every_tier <- function(compute, expected, tolerance, info) {
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    conv3d_threads(2)
    got <- compute()
    expect_equal(got, expected, tolerance = tolerance, info = paste(tier, info))
    conv3d_threads(1)
    expect_identical(compute(), got, info = paste(tier, info, "1 thread"))
  }
}

# Restores the kernel tier and the default thread count when the calling test
# ends.
local_tier_and_threads <- function(env = parent.frame()) {
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old), envir = env)
  withr::defer(conv3d_threads(0), envir = env)
}

# Keeps planar layers on the direct planar tiles (no Winograd rows) until
# the calling test ends, so that their tests cover those tiles whatever the
# layer's taps.
local_planar_direct <- function(env = parent.frame()) {
  old <- conv3d:::planar_winograd_rows(0)
  withr::defer(conv3d:::planar_winograd_rows(old), envir = env)
}

# A channels_last layer of `filters` filters of `kernel_size` (unit strides)
# on random data of `dims` (x, then the kernel, then the bias drawn from the
# RNG), whose output is at least min_bytes of doubles: on every tier, for each
# dtype named in `tolerance`, it takes `path`, writes its output with
# streaming stores and equals the reference by taps.
expect_streamed_layer <- function(dims, kernel_size, filters, padding, path, tolerance,
                                  min_bytes) {
  x <- array(rnorm(prod(dims)), dims)
  ksize <- rep_len(kernel_size, 3)
  kernel <- array(rnorm(prod(ksize) * dims[5] * filters), c(ksize, dims[5], filters))
  bias <- rnorm(filters)
  ref <- reference_conv3d_by_taps(x, kernel, bias, padding)
  expect_gte(length(ref) * 8, min_bytes)
  for (dtype in names(tolerance)) {
    layer <- layer_conv_3d(filters = filters, kernel_size = kernel_size, padding = padding,
      dtype = dtype, weights = list(kernel, bias))
    expect_every_tier(function() {
      y <- layer(x)
      expect_identical(conv3d:::last_forward_path(), path)
      expect_true(conv3d:::last_forward_streamed())
      y
    }, ref, tolerance = tolerance[[dtype]],
    info = paste(path, paste(dims, collapse = "x"), dtype))
  }
}

# The layer of case$args (padding "valid" unless given) on random data of
# case$dims, channels_last: on every tier, for both dtypes, it takes `path`,
# writes its output from the tiles' registers exactly when case$direct says,
# with streaming stores when case$streamed does (the output then at least
# 4 MB), and equals the reference.
expect_direct_layer <- function(case, path) {
  d <- random_layer_case(case)
  if (isTRUE(case$streamed)) expect_gte(length(d$ref) * 8, 4 * 2^20)
  for (dtype in c("float64", "float32")) {
    layer <- do.call(layer_conv_3d, c(case$args, list(dtype = dtype, weights = d$weights)))
    expect_every_tier(function() {
      y <- layer(d$x)
      expect_identical(conv3d:::last_forward_path(), path)
      expect_identical(conv3d:::last_forward_direct(), case$direct)
      expect_identical(conv3d:::last_forward_streamed(), isTRUE(case$streamed))
      y
    }, d$ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4,
    info = paste(path, dtype, paste(case$dims, collapse = "x")))
  }
}

# A layer case (dims of the input in channels_last order, args of
# layer_conv_3d()) on random data: its kernel, bias (none when use_bias is
# FALSE) and input x (channels moved second for channels_first) drawn from
# the RNG in that order, the weights list, and the reference output.
random_layer_case <- function(case) {
  a <- case$args
  groups <- if (is.null(a$groups)) 1 else a$groups
  ks <- rep_len(a$kernel_size, 3)
  kernel <- array(rnorm(prod(ks) * case$dims[5] / groups * a$filters),
    c(ks, case$dims[5] / groups, a$filters))
  bias <- if (isFALSE(a$use_bias)) NULL else rnorm(a$filters)
  x <- array(rnorm(prod(case$dims)), case$dims)
  format <- if (is.null(a$data_format)) "channels_last" else a$data_format
  if (format == "channels_first") x <- aperm(x, c(1, 5, 2, 3, 4))
  ref <- reference_conv3d(x, kernel, bias, if (is.null(a$strides)) 1 else a$strides,
    if (is.null(a$padding)) "valid" else a$padding,
    if (is.null(a$dilation_rate)) 1 else a$dilation_rate, groups, format,
    activation = a$activation)
  list(x = x, weights = if (is.null(bias)) list(kernel) else list(kernel, bias), ref = ref)
}

# On every tier, in both dtypes, the layer of `args` with d's weights
# (random_layer_case) takes `path` and gives d's reference.
expect_layer_on_path <- function(d, args, path, info) {
  for (dtype in c("float64", "float32")) {
    layer <- do.call(layer_conv_3d, c(args, list(dtype = dtype, weights = d$weights)))
    expect_every_tier(function() {
      y <- layer(d$x)
      expect_identical(conv3d:::last_forward_path(), path)
      y
    }, d$ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4,
    info = paste(path, dtype, info))
  }
}
