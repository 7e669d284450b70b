# Compare layer_conv_3d() on concrete arrays with reference outputs computed by
# PyTorch (torch.nn.functional.conv3d in float64, Keras semantics: 'same' padding
# with the odd extra at the end, grouped/depthwise convs, activations after bias).
#
# The fixtures in tests/testthat/fixtures/torch-conv3d.R are GENERATED. To
# regenerate them, run from the package root:
#
#   /usr/bin/python3 data-raw/make_torch_fixtures.py
#
# (needs PyTorch and numpy; the script is deterministic and re-checks every
# case against an independent naive loop before writing.)

torch_cases <- function() {
  path <- test_path("fixtures", "torch-conv3d.R")
  source(path, local = new.env())$value
}

run_case <- function(case, dtype) {
  weights <- if (isTRUE(case$args$use_bias)) {
    list(case$kernel, case$bias)
  } else {
    list(case$kernel)
  }
  do.call(
    layer_conv_3d,
    c(list(case$x), case$args, list(dtype = dtype, weights = weights))
  )
}

# Round a double vector to the nearest float32 value (keeps attributes).
as_float32 <- function(x) {
  x[] <- readBin(writeBin(as.double(x), raw(), size = 4L), "double",
                 n = length(x), size = 4L)
  x
}

test_that("torch fixtures are well formed", {
  cases <- torch_cases()
  expect_gte(length(cases), 20L)
  for (case in cases) {
    expect_named(case, c("name", "args", "x", "kernel", "bias", "y"))
    expect_true("activation" %in% names(case$args), info = case$name)
    expect_length(dim(case$x), 5L)
    expect_length(dim(case$kernel), 5L)
    expect_length(dim(case$y), 5L)
  }
})

test_that("layer_conv_3d matches torch references in float64", {
  for (case in torch_cases()) {
    y <- run_case(case, "float64")
    expect_equal(y, case$y, tolerance = 1e-10, info = case$name)
  }
})

test_that("layer_conv_3d matches torch references in float32", {
  for (case in torch_cases()) {
    y <- run_case(case, "float32")
    expect_equal(y, case$y, tolerance = 1e-4, info = case$name)
    # SPEC: with dtype float32 the result values are rounded to float32.
    expect_identical(y, as_float32(y), info = case$name)
  }
})
