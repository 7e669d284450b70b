# Unloading the namespace keeps the DLL mapped: layers' weight caches and
# scratch have finalizers there that R may still run.

test_that("unloading the package while its layers live does not crash R", {
  skip_if_not(.Platform$OS.type == "unix")
  skip_on_cran()
  script <- tempfile(fileext = ".R")
  writeLines(c(
    "library(conv3d)",
    "lib <- dirname(find.package('conv3d'))",
    "x <- array(rnorm(32^3), c(1, 32, 32, 32, 1))",
    "layer <- layer_conv_3d(filters = 4, kernel_size = 3, padding = 'same')",
    "y <- layer(x)",
    "unloadNamespace('conv3d')",
    "library.dynam.unload('conv3d', file.path(lib, 'conv3d'))",
    "rm(y); invisible(gc())",
    "library(conv3d)",
    "z <- layer_conv_3d(x, filters = 2, kernel_size = 3)",
    "rm(layer, z); invisible(gc())",
    "cat('survived', dim(x)[2], '\\n')"
  ), script)
  out <- suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE,
    stderr = TRUE, env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":"))))
  expect_null(attr(out, "status"))
  expect_true("survived 32 " %in% out)
})
