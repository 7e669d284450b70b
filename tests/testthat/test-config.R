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
