# Backward passes of the non-convolution layers against central finite
# differences of their forward passes (float64): loss = sum(y * r), so dy = r.

fd_check_layer <- function(layer, x, info, n_check = 3, eps = 1e-5) {
  y <- layer(x)
  r <- array(rnorm(length(y)), dim(y) %||% length(y))
  g <- conv3d:::layer_backward(layer, x, r)
  loss <- function(x) sum(layer(x) * r)
  for (i in sample(length(x), min(n_check, length(x)))) {
    xp <- x
    xm <- x
    xp[i] <- xp[i] + eps
    xm[i] <- xm[i] - eps
    expect_equal(g$input[i], (loss(xp) - loss(xm)) / (2 * eps), tolerance = 1e-6,
      info = paste(info, "input", i))
  }
  w <- get_weights(layer)
  expect_length(g$weights, length(w))
  for (j in seq_along(w)) {
    for (i in sample(length(w[[j]]), min(n_check, length(w[[j]])))) {
      wp <- w
      wm <- w
      wp[[j]][i] <- wp[[j]][i] + eps
      wm[[j]][i] <- wm[[j]][i] - eps
      set_weights(layer, wp)
      lp <- loss(x)
      set_weights(layer, wm)
      lm <- loss(x)
      set_weights(layer, w)
      expect_equal(g$weights[[j]][i], (lp - lm) / (2 * eps), tolerance = 1e-6,
        info = paste(info, "weight", j, i))
    }
  }
}

random_volume <- function(format, max_side = 5) {
  dims <- c(sample(1:2, 1), sample(2:max_side, 3, replace = TRUE), sample(1:3, 1))
  x <- array(rnorm(prod(dims)), dims)
  if (format == "channels_first") aperm(x, c(1, 5, 2, 3, 4)) else x
}

test_that("max and average pooling backward match finite differences (50 each)", {
  set.seed(41)
  for (average in c(FALSE, TRUE)) {
    f <- if (average) layer_average_pooling_3d else layer_max_pooling_3d
    for (case in seq_len(50)) {
      format <- sample(c("channels_last", "channels_first"), 1)
      pool <- sample(1:3, 3, replace = TRUE)
      strides <- sample(1:3, 3, replace = TRUE)
      padding <- sample(c("valid", "same"), 1)
      x <- random_volume(format, 6)
      spatial <- if (format == "channels_last") dim(x)[2:4] else dim(x)[3:5]
      if (padding == "valid" && any(pool > spatial)) padding <- "same"
      layer <- f(pool_size = pool, strides = strides, padding = padding, data_format = format,
        dtype = "float64")
      fd_check_layer(layer, x, paste(if (average) "avg" else "max", case,
        paste(pool, collapse = ""), paste(strides, collapse = ""), padding, format))
    }
  }
})

test_that("max pooling's training call keeps the picks its backward pass would scan for", {
  # train_call() keeps each output's window position; train_backward() then
  # gives exactly the scanning backward pass's gradient (overlapping windows,
  # 'same' padding, ties of float32-rounded values, NaN)
  set.seed(44)
  for (case in seq_len(30)) {
    format <- sample(c("channels_last", "channels_first"), 1)
    dtype <- sample(c("float32", "float64"), 1)
    pool <- sample(1:3, 3, replace = TRUE)
    strides <- sample(1:3, 3, replace = TRUE)
    padding <- sample(c("valid", "same"), 1)
    x <- random_volume(format, 6)
    x[sample(length(x), 3)] <- round(x[1], 2) # ties
    if (case %% 5 == 0) x[sample(length(x), 1)] <- NaN
    if (dtype == "float32") x[2] <- x[1] + 1e-12 # a tie only in float32
    spatial <- if (format == "channels_last") dim(x)[2:4] else dim(x)[3:5]
    if (padding == "valid" && any(pool > spatial)) padding <- "same"
    layer <- layer_max_pooling_3d(pool_size = pool, strides = strides, padding = padding,
      data_format = format, dtype = dtype)
    self <- conv3d:::layer_self(layer)
    kept <- self$train_call(self, x)
    expect_identical(kept$y, layer(x))
    dy <- array(rnorm(length(kept$y)), dim(kept$y))
    info <- paste(case, format, dtype, padding)
    expect_identical(self$train_backward(self, x, dy, kept$cache, TRUE)$input,
      conv3d:::layer_backward(layer, x, dy)$input, info = info)
  }
  avg <- layer_average_pooling_3d(pool_size = 2)
  self <- conv3d:::layer_self(avg)
  expect_null(self$train_call(self, array(1, c(1, 4, 4, 4, 1)))$cache) # the plain backward
})

test_that("pooling gradients of a batch are each sample's own, with any thread count", {
  # the backward passes take a channel's samples (channels_last) or 8
  # (sample, channel) tasks (channels_first) together: batches of 3 and 11
  # leave partial blocks; every sample's gradient must be the one it has
  # alone, bit for bit, with 1 and 2 threads
  set.seed(58)
  withr::defer(conv3d_threads(0))
  layers <- list(
    max = function(f) layer_max_pooling_3d(pool_size = c(2, 3, 2), strides = c(2, 1, 2),
      padding = "same", data_format = f),
    average = function(f) layer_average_pooling_3d(pool_size = 2, strides = 1, data_format = f),
    global_max = function(f) layer_global_max_pooling_3d(data_format = f),
    global_average = function(f) layer_global_average_pooling_3d(data_format = f))
  for (N in c(3, 11)) for (format in c("channels_last", "channels_first")) {
    dims <- if (format == "channels_last") c(N, 5, 4, 6, 3) else c(N, 3, 5, 4, 6)
    x <- array(round(rnorm(prod(dims)), 1), dims) # ties in the windows
    for (name in names(layers)) {
      layer <- layers[[name]](format)
      y <- conv3d:::layer_apply_array(layer, x)
      dy <- array(rnorm(length(y)), dim(y))
      conv3d_threads(2)
      two <- conv3d:::layer_backward(layer, x, dy)$input
      conv3d_threads(1)
      expect_identical(conv3d:::layer_backward(layer, x, dy)$input, two, info = paste(name, format, N))
      for (n in c(1, N)) {
        one <- conv3d:::layer_backward(layer, x[n, , , , , drop = FALSE],
          if (length(dim(dy)) == 2) dy[n, , drop = FALSE] else dy[n, , , , , drop = FALSE])$input
        expect_identical(two[n, , , , , drop = FALSE], one, info = paste(name, format, N, n))
      }
    }
  }
})

test_that("global pooling backward matches finite differences (50 each)", {
  set.seed(42)
  for (average in c(FALSE, TRUE)) {
    f <- if (average) layer_global_average_pooling_3d else layer_global_max_pooling_3d
    for (case in seq_len(50)) {
      format <- sample(c("channels_last", "channels_first"), 1)
      layer <- f(data_format = format, keepdims = runif(1) < 0.5, dtype = "float64")
      fd_check_layer(layer, random_volume(format), paste("global", average, case, format))
    }
  }
})

test_that("dense backward matches finite differences (50)", {
  set.seed(43)
  activations <- list(NULL, "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "softplus",
    "softsign", "swish", "gelu", "exponential", "leaky_relu", "mish")
  for (case in seq_len(50)) {
    dims <- c(sample(1:3, 1), if (runif(1) < 0.4) sample(1:3, 1), sample(1:5, 1))
    x <- array(rnorm(prod(dims)), dims)
    act <- sample(activations, 1)[[1]]
    layer <- layer_dense(units = sample(1:4, 1), activation = act, use_bias = runif(1) < 0.7,
      kernel_initializer = initializer_random_normal(stddev = 0.5), dtype = "float64")
    fd_check_layer(layer, x, paste("dense", case, format(act), paste(dims, collapse = "x")))
  }
})

test_that("activation, flatten and dropout backward match finite differences", {
  set.seed(44)
  activations <- c("linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "softplus",
    "softsign", "swish", "gelu", "exponential", "hard_sigmoid", "relu6", "leaky_relu", "mish")
  for (case in seq_len(50)) {
    act <- activations[(case - 1) %% length(activations) + 1]
    dims <- c(sample(1:2, 1), sample(2:4, sample(1:3, 1), replace = TRUE))
    x <- array(rnorm(prod(dims)), dims)
    fd_check_layer(layer_activation(activation = act, dtype = "float64"), x,
      paste("activation", act, case))
  }
  for (case in seq_len(50)) {
    format <- sample(c("channels_last", "channels_first"), 1)
    fd_check_layer(layer_flatten(data_format = format, dtype = "float64"), random_volume(format),
      paste("flatten", case, format))
  }
  for (case in seq_len(50)) {
    fd_check_layer(layer_dropout(rate = runif(1, 0, 0.9), dtype = "float64"),
      random_volume("channels_last"), paste("dropout", case))
  }
  expect_snapshot(error = TRUE, {
    conv3d:::layer_backward(layer_activation(activation = function(v) v, name = "custom"),
      array(1, c(1, 2)), array(1, c(1, 2)))
    conv3d:::layer_backward(layer_max_pooling_3d(name = "pool"), array(1, c(1, 2, 2, 2, 1)),
      array(1, c(1, 2, 2, 2, 1)))
    conv3d:::layer_backward(layer_activation(activation = "relu"), array(1, c(1, 2)),
      array("1", c(1, 2)))
  })
})

test_that("a whole model's gradient chains through every layer", {
  set.seed(45)
  model <- keras_model_sequential(input_shape = c(6, 6, 6, 2)) |>
    layer_conv_3d(3, 3, padding = "same", activation = "tanh", dtype = "float64") |>
    layer_average_pooling_3d(2, dtype = "float64") |>
    layer_flatten(dtype = "float64") |>
    layer_dense(2, activation = "softmax", dtype = "float64")
  x <- array(rnorm(2 * 6^3 * 2), c(2, 6, 6, 6, 2))
  r <- array(rnorm(4), c(2, 2))
  layers <- model$layers
  # forward keeping each layer's input, then backward in reverse order
  inputs <- list(x)
  for (l in layers) inputs[[length(inputs) + 1]] <- l(inputs[[length(inputs)]])
  dy <- r
  grads <- vector("list", length(layers))
  for (i in rev(seq_along(layers))) {
    g <- conv3d:::layer_backward(layers[[i]], inputs[[i]], dy)
    grads[[i]] <- g$weights
    dy <- g$input
  }
  loss <- function(x) sum(predict(model, x) * r)
  eps <- 1e-5
  for (i in sample(length(x), 5)) {
    xp <- x
    xm <- x
    xp[i] <- xp[i] + eps
    xm[i] <- xm[i] - eps
    expect_equal(dy[i], (loss(xp) - loss(xm)) / (2 * eps), tolerance = 1e-6)
  }
  w <- get_weights(model)
  kernel_grad <- grads[[1]][[1]]
  for (i in sample(length(w[[1]]), 5)) {
    wp <- w
    wm <- w
    wp[[1]][i] <- wp[[1]][i] + eps
    wm[[1]][i] <- wm[[1]][i] - eps
    set_weights(model, wp)
    lp <- loss(x)
    set_weights(model, wm)
    lm <- loss(x)
    set_weights(model, w)
    expect_equal(kernel_grad[i], (lp - lm) / (2 * eps), tolerance = 1e-6)
  }
})

test_that("dropout's training backward matches finite differences with its mask (50)", {
  set.seed(46)
  for (case in seq_len(50)) {
    x <- random_volume("channels_last")
    rate <- runif(1, 0.1, 0.8)
    layer <- layer_dropout(rate = rate, noise_shape = if (runif(1) < 0.3) c(NA, 1, 1, 1, NA))
    mask <- conv3d:::dropout_mask(conv3d:::layer_self(layer), x)
    expect_true(all(mask == 0 | abs(mask - 1 / (1 - rate)) < 1e-12))
    r <- array(rnorm(length(x)), dim(x))
    # the training forward is x * mask, so d sum(x * mask * r) / dx = mask * r
    eps <- 1e-6
    i <- sample(length(x), 1)
    xp <- x
    xp[i] <- xp[i] + eps
    expect_equal((sum(xp * mask * r) - sum(x * mask * r)) / eps, (mask * r)[i], tolerance = 1e-6)
  }
})

test_that("pooling backward checks the input and dy before any work", {
  layer <- layer_max_pooling_3d(pool_size = 2, dtype = "float64")
  x <- array(rnorm(2 * 4 * 4 * 4 * 3), c(2, 4, 4, 4, 3))
  expect_error(conv3d:::layer_backward(layer, x, array(0, c(2, 2, 2, 2, 2))),
    "`dy`.*c\\(2, 2, 2, 2, 3\\)", class = "conv3d_error")
  expect_error(conv3d:::layer_backward(layer, x[, , , , 1], array(0, c(2, 2, 2, 2, 3))),
    "input", class = "conv3d_error")
  g <- conv3d:::layer_backward(layer, x, array(1, c(2, 2, 2, 2, 3)))$input
  # each 2x2x2 window sends its one 1 to its maximum: one 1 per window
  expect_equal(sum(g), 2 * 2 * 2 * 2 * 3)
  expect_true(all(g == 0 | g == 1))
})

test_that("named activations take TensorFlow's slopes at their kinks", {
  slope_at <- function(name, v) {
    layer <- layer_activation(activation = name, dtype = "float64")
    x <- array(v, c(1, length(v)))
    as.vector(conv3d:::layer_backward(layer, x, array(1, dim(x)))$input)
  }
  scale <- 1.0507009873554805
  expect_identical(slope_at("relu", c(-1, 0, 1)), c(0, 0, 1))
  expect_identical(slope_at("relu6", c(0, 3, 6)), c(0, 1, 0))
  expect_identical(slope_at("leaky_relu", c(-1, 0, 1)), c(0.2, 0.2, 1)) # LeakyReluGrad: x > 0
  expect_equal(slope_at("selu", c(0, 1)), c(scale, scale)) # SeluGrad: output < 0
  expect_identical(slope_at("elu", 0), 1)
  expect_identical(slope_at("hard_sigmoid", c(-3, -2.5, 0, 2.5, 3)), c(0, 0.2, 0.2, 0.2, 0)) # clip ends included
  # the same derivative in a convolution's gradients: all pre-activations 0
  layer <- layer_conv_3d(filters = 1, kernel_size = 1, activation = "selu", dtype = "float64",
    weights = list(array(0, c(1, 1, 1, 1, 1)), 0))
  x <- array(1:8 / 8, c(1, 2, 2, 2, 1))
  dy <- array(8:1 / 8, c(1, 2, 2, 2, 1))
  g <- conv3d_gradients(layer, x, dy)
  expect_equal(g$bias, scale * sum(dy))
  expect_equal(as.vector(g$kernel), scale * sum(x * dy))
})
