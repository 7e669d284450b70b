# Compare conv3d_gradients() with reference gradients computed by PyTorch
# autograd (float64, Keras semantics: 'same' padding with the odd extra at the
# end, strides, dilation, grouped/depthwise convs, bias on/off, activations
# after the bias, softmax over the last axis of the Keras-layout output).
# Each case holds x, kernel, bias, a random dy (the gradient of the loss with
# respect to the layer output) and the gradients of that loss with respect to
# the input, kernel and bias (kernel layout (kd, kh, kw, C/groups, filters)).
#
# The fixtures in tests/testthat/fixtures/torch-conv3d-grads.R are GENERATED.
# To regenerate them, run from the package root:
#
#   /usr/bin/python3 data-raw/make_torch_grad_fixtures.py
#
# (needs PyTorch and numpy; the script is deterministic and, before writing,
# re-checks torch's gradients against hand-computed values, finite differences
# of an independent numpy forward pass, and torch.autograd.gradcheck.)

torch_grad_cases <- function() {
  path <- test_path("fixtures", "torch-conv3d-grads.R")
  source(path, local = new.env())$value
}

grad_case_layer <- function(case, dtype) {
  weights <- if (isTRUE(case$args$use_bias)) {
    list(case$kernel, case$bias)
  } else {
    list(case$kernel)
  }
  layer <- do.call(
    layer_conv_3d,
    c(case$args, list(dtype = dtype, weights = weights))
  )
  layer(case$x) # builds the layer
  layer
}

expect_grads_equal <- function(g, case, tolerance) {
  expect_named(g, c("input", "kernel", "bias"))
  expect_equal(g$input, case$grad_input, tolerance = tolerance,
               info = paste(case$name, "input"))
  expect_equal(g$kernel, case$grad_kernel, tolerance = tolerance,
               info = paste(case$name, "kernel"))
  if (is.null(case$grad_bias)) {
    expect_null(g$bias, info = paste(case$name, "bias"))
  } else {
    expect_equal(as.vector(g$bias), case$grad_bias, tolerance = tolerance,
                 info = paste(case$name, "bias"))
    expect_length(g$bias, length(case$grad_bias))
  }
}

# Round a double vector to the nearest float32 value (keeps attributes).
as_float32 <- function(x) {
  x[] <- readBin(writeBin(as.double(x), raw(), size = 4L), "double",
                 n = length(x), size = 4L)
  x
}

test_that("torch gradient fixtures are well formed", {
  cases <- torch_grad_cases()
  expect_gte(length(cases), 20L)
  for (case in cases) {
    expect_named(case, c("name", "args", "x", "kernel", "bias", "dy",
                         "grad_input", "grad_kernel", "grad_bias"))
    expect_true("activation" %in% names(case$args), info = case$name)
    expect_length(dim(case$x), 5L)
    expect_length(dim(case$kernel), 5L)
    expect_length(dim(case$dy), 5L)
    expect_identical(dim(case$grad_input), dim(case$x), info = case$name)
    expect_identical(dim(case$grad_kernel), dim(case$kernel), info = case$name)
    expect_identical(is.null(case$grad_bias), !isTRUE(case$args$use_bias),
                     info = case$name)
  }
})

test_that("conv3d_gradients matches torch autograd in float64", {
  for (case in torch_grad_cases()) {
    layer <- grad_case_layer(case, "float64")
    # the forward output has dy's shape
    expect_identical(dim(layer(case$x)), dim(case$dy), info = case$name)
    g <- conv3d_gradients(layer, case$x, case$dy)
    expect_grads_equal(g, case, tolerance = 1e-10)
  }
})

test_that("conv3d_gradients matches torch autograd in float32", {
  for (case in torch_grad_cases()) {
    layer <- grad_case_layer(case, "float32")
    g <- conv3d_gradients(layer, case$x, case$dy)
    expect_grads_equal(g, case, tolerance = 1e-4)
    # documented: a float32 layer's gradients are rounded to float32
    expect_identical(g$input, as_float32(g$input), info = case$name)
    expect_identical(g$kernel, as_float32(g$kernel), info = case$name)
    if (!is.null(g$bias)) {
      expect_identical(g$bias, as_float32(g$bias), info = case$name)
    }
  }
})

test_that("conv3d_gradients(input = FALSE) skips only the input gradient", {
  for (case in torch_grad_cases()[c(1L, 4L, 18L)]) {
    layer <- grad_case_layer(case, "float64")
    g <- conv3d_gradients(layer, case$x, case$dy, input = FALSE)
    expect_null(g$input, info = case$name)
    expect_equal(g$kernel, case$grad_kernel, tolerance = 1e-10, info = case$name)
    if (is.null(case$grad_bias)) {
      expect_null(g$bias, info = case$name)
    } else {
      expect_equal(as.vector(g$bias), case$grad_bias, tolerance = 1e-10,
                   info = case$name)
    }
  }
})
