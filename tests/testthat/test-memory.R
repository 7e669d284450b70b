# Results of 1 MB and more come from a pool that reuses the memory of results
# R has collected. A 1x1x1 convolution keeps the references cheap: its output
# is one matrix product (reference_conv3d_by_taps, one tap), and so is its
# input gradient.

# cin -> cout channels on a 16 x 64 x 64 volume: 64 channels are 32 MB
pointwise_case <- function(seed, cin = 8, cout = 64) {
  set.seed(seed)
  x <- array(rnorm(16 * 64 * 64 * cin), c(1, 16, 64, 64, cin))
  kernel <- array(rnorm(cin * cout) / 4, c(1, 1, 1, cin, cout))
  bias <- rnorm(cout)
  list(x = x, kernel = kernel, bias = bias, y = reference_conv3d_by_taps(x, kernel, bias))
}

pointwise_layer <- function(case, dtype = "float64") {
  layer_conv_3d(filters = dim(case$kernel)[5], kernel_size = 1,
                input_shape = dim(case$x)[-1], dtype = dtype,
                weights = list(case$kernel, case$bias))
}

test_that("pooled results are exact and collected ones are reused", {
  clear_session()
  invisible(gc())
  before <- conv3d:::result_memory()
  a <- pointwise_case(1)
  b <- pointwise_case(2)
  layer_a <- pointwise_layer(a)
  layer_b <- pointwise_layer(b)
  ya <- layer_a(a$x) # 32 MB: from the pool
  expect_gte(conv3d:::result_memory()[["live"]], before[["live"]] + 8 * length(ya))
  expect_equal(ya, a$y, tolerance = 1e-12)
  rm(ya)
  invisible(gc())
  after <- conv3d:::result_memory()
  expect_equal(after[["live"]], before[["live"]])
  if (after[["limit"]] > 0) expect_gte(after[["kept"]], 8 * length(a$y))

  # a result still referenced keeps its memory: the next one gets other memory
  yb <- layer_b(b$x)
  ya <- layer_a(a$x)
  invisible(gc())
  yb2 <- layer_b(b$x)
  expect_equal(yb, b$y, tolerance = 1e-12)
  expect_equal(ya, a$y, tolerance = 1e-12)
  expect_equal(yb2, b$y, tolerance = 1e-12)
  expect_gte(conv3d:::result_memory()[["live"]], before[["live"]] + 3 * 8 * length(ya))

  for (dtype in c("float32", "float64")) {
    y <- pointwise_layer(a, dtype)(a$x)
    expect_equal(y, a$y, tolerance = if (dtype == "float32") 1e-5 else 1e-12, info = dtype)
  }
  rm(ya, yb, yb2, y)
  invisible(gc())
  expect_equal(conv3d:::result_memory()[["live"]], before[["live"]])
  clear_session() # frees the kept memory
  expect_equal(conv3d:::result_memory()[["kept"]], 0)
})

test_that("results of a few MB are pooled too, and reused once collected", {
  clear_session()
  invisible(gc())
  before <- conv3d:::result_memory()
  a <- pointwise_case(4, cout = 4) # 2 MB: a training step's outputs are this size
  layer <- pointwise_layer(a)
  y <- layer(a$x)
  expect_equal(y, a$y, tolerance = 1e-12)
  expect_gte(conv3d:::result_memory()[["live"]], before[["live"]] + 8 * length(y))
  rm(y)
  invisible(gc())
  kept <- conv3d:::result_memory()[["kept"]]
  if (conv3d:::result_memory()[["limit"]] > 0) {
    expect_gte(kept, 8 * length(a$y))
    y <- layer(a$x) # the kept block again: nothing more kept
    expect_lt(conv3d:::result_memory()[["kept"]], kept)
    expect_equal(y, a$y, tolerance = 1e-12)
  }
  clear_session()
})

test_that("a loop that never lets R collect still reuses pooled memory", {
  # R does not count pooled results towards its collections; conv3d asks for
  # a light one once 64 MB of them were handed out and none is kept to reuse.
  # Without that, 12 results of 16 MB in a loop would all stay uncollected.
  clear_session()
  invisible(gc())
  a <- pointwise_case(5, cout = 32) # 16 MB
  layer <- pointwise_layer(a)
  size <- 8 * length(a$y)
  before <- conv3d:::result_memory()[["live"]]
  for (i in 1:12) y <- layer(a$x)
  expect_lt(conv3d:::result_memory()[["live"]] - before, 10 * size)
  expect_equal(y, a$y, tolerance = 1e-12)
  rm(y)
  clear_session()
})

test_that("a pooled input gradient is exact after reusing memory", {
  a <- pointwise_case(3, cin = 64, cout = 8) # the input gradient is 32 MB
  layer <- pointwise_layer(a)
  dy <- array(rnorm(length(a$y)), dim(a$y))
  dx_ref <- array(matrix(dy, ncol = 8) %*% t(matrix(a$kernel, 64, 8)), dim(a$x))
  for (i in 1:2) {
    g <- conv3d_gradients(layer, a$x, dy)
    expect_equal(g$input, dx_ref, tolerance = 1e-12, info = i)
    rm(g)
    invisible(gc())
  }
})

test_that("a training step's outputs and gradients are collected when the next step starts", {
  # each step's pooled results (outputs and gradients of 1 MB and more) are
  # garbage once it ends; the next step asks R for a light collection first,
  # so they do not pile up from step to step
  clear_session()
  invisible(gc())
  set.seed(6)
  x <- array(runif(2 * 16 * 32 * 32), c(2, 16, 32, 32, 1))
  y <- c(0, 1)
  model <- keras_model_sequential(input_shape = c(16, 32, 32, 1)) |>
    layer_conv_3d(filters = 4, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_conv_3d(filters = 4, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_global_average_pooling_3d() |>
    layer_dense(units = 1, activation = "sigmoid")
  compile(model, optimizer = "sgd", loss = "binary_crossentropy")
  before <- conv3d:::result_memory()[["live"]]
  train_on_batch(model, x, y)
  one_step <- conv3d:::result_memory()[["live"]] - before
  expect_gt(one_step, 3 * 2^20) # outputs and gradients of 1 MB each
  for (i in 1:3) train_on_batch(model, x, y)
  expect_lt(conv3d:::result_memory()[["live"]] - before, 2 * one_step)
  clear_session()
})
