test_that("image_data_format(): option, then keras.json, then channels_last", {
  home <- withr::local_tempdir()
  withr::local_envvar(KERAS_HOME = home, HOME = home)
  withr::local_options(conv3d.image_data_format = NULL, conv3d.floatx = NULL)
  expect_equal(image_data_format(), "channels_last")
  expect_equal(floatx(), "float32")
  writeLines('{"floatx": "float64", "epsilon": 1e-07, "backend": "tensorflow",
    "image_data_format": "channels_first"}', file.path(home, "keras.json"))
  expect_equal(image_data_format(), "channels_first")
  expect_equal(floatx(), "float64")
  layer <- layer_conv_3d(filters = 2, kernel_size = 1)
  expect_equal(layer$data_format, "channels_first")
  expect_equal(layer$dtype, "float64")
  withr::local_options(conv3d.image_data_format = "channels_last")
  expect_equal(image_data_format(), "channels_last")
  # the file is only read
  expect_equal(length(list.files(home)), 1)
})

test_that("threads: getter, setter returning the old value, environment cap", {
  old <- conv3d_threads(1)
  withr::defer(conv3d_threads(0))
  expect_equal(conv3d_threads(), 1)
  expect_equal(conv3d_threads(2), 1)
  withr::local_envvar(OMP_THREAD_LIMIT = "1")
  expect_equal(conv3d_threads(), 1)
  expect_snapshot(error = TRUE, {
    conv3d_threads(-1)
    conv3d_threads("two")
  })
})

test_that("conv3d_cpu() reports and lowers the kernel tier", {
  info <- conv3d_cpu()
  expect_true(info$kernel %in% c("generic", "avx2", "avx512"))
  old <- info$kernel
  withr::defer(conv3d_cpu(old))
  conv3d_cpu("generic")
  expect_equal(conv3d_cpu()$kernel, "generic")
  expect_snapshot(error = TRUE, conv3d_cpu("sse9"))
})

test_that("forked children run convolutions without hanging", {
  skip_on_os("windows")
  x <- array(rnorm(2 * 6^3 * 4), c(2, 6, 6, 6, 4))
  layer <- layer_conv_3d(filters = 8, kernel_size = 3, dtype = "float64")
  parent <- layer(x) # the parent has used its thread pool
  children <- parallel::mclapply(1:2, function(i) layer(x), mc.cores = 2)
  expect_identical(children[[1]], parent)
  expect_identical(children[[2]], parent)
})

test_that("long convolutions stop when R asks them to (time limit, like Ctrl-C)", {
  # ~33 GFLOP in float64 on the generic kernels: seconds of work
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  conv3d_cpu("generic")
  x <- array(rnorm(40^3 * 32), c(1, 40, 40, 40, 32))
  layer <- layer_conv_3d(filters = 64, kernel_size = 5, padding = "same", dtype = "float64")
  started <- Sys.time()
  setTimeLimit(elapsed = 0.2, transient = TRUE)
  withr::defer(setTimeLimit(elapsed = Inf))
  # the check between chunks delivers R's own condition (here the time limit's error)
  expect_error(layer(x), "elapsed time limit")
  setTimeLimit(elapsed = Inf)
  expect_lt(as.numeric(difftime(Sys.time(), started, units = "secs")), 5)
})

test_that("long poolings and their gradients stop when R asks them to", {
  # The gradient: 48^3 windows (about 41^3 inside the volume) over 64^3 x 4
  # voxels, a minute or more. The forward reduces windows along rows, so the
  # same layer takes a third of a second, and could end before the limit's
  # first check; 80^3 windows over 96^3 x 4 voxels take seconds.
  x <- array(rnorm(64^3 * 4), c(1, 64, 64, 64, 4))
  pool <- layer_max_pooling_3d(pool_size = 48, strides = 1, padding = "same")
  dy <- array(1, dim(x))
  x_long <- array(rnorm(96^3 * 4), c(1, 96, 96, 96, 4))
  pool_long <- layer_max_pooling_3d(pool_size = 80, strides = 1, padding = "same")
  for (run in list(forward = function() pool_long(x_long),
                   backward = function() .Call(conv3d:::ffi_pool3d_backward, pool$config, x, dy,
                                               FALSE, NULL))) {
    started <- Sys.time()
    setTimeLimit(elapsed = 0.2, transient = TRUE)
    expect_error(run(), "elapsed time limit")
    setTimeLimit(elapsed = Inf)
    expect_lt(as.numeric(difftime(Sys.time(), started, units = "secs")), 5)
  }
})
