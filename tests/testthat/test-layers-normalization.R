# layer_batch_normalization() against a per-feature reference written with
# plain loops over the features (Keras 2's formulas), its gradients against
# finite differences, and its place in training.

# The per-feature reference: x a 5-D channels_last array, stats over every
# voxel of every sample of each ghost batch (ghost j: samples j, j + J, ...).
bn_reference <- function(x, gamma, beta, eps, ghosts = 1, a = 1, b = 0, r = 1, d = 0) {
  features <- dim(x)[5]
  a <- rep_len(a, features)
  b <- rep_len(b, features)
  r <- rep_len(r, features)
  d <- rep_len(d, features)
  y <- x
  n <- dim(x)[1]
  stats <- list(mean = numeric(), var = numeric())
  for (ch in seq_len(features)) {
    means <- vars <- numeric()
    for (j in seq_len(ghosts)) {
      samples <- seq(j, n, by = ghosts)
      v <- x[samples, , , , ch]
      mu <- mean(v)
      s2 <- mean((v - mu)^2)
      xhat <- (v - mu) / sqrt(s2 + eps)
      y[samples, , , , ch] <- xhat * r[ch] * a[ch] * gamma[ch] + (d[ch] * a[ch] + b[ch]) * gamma[ch] +
        beta[ch]
      means <- c(means, mu)
      vars <- c(vars, s2)
    }
    stats$mean[ch] <- mean(means)
    stats$var[ch] <- mean(vars)
  }
  list(y = y, mean = stats$mean, var = stats$var)
}

# A built layer's training call with its weights restored first (the call
# moves the moving averages).
train_call <- function(layer, x, weights) {
  set_weights(layer, weights)
  self <- conv3d:::layer_self(layer)
  self$train_call(self, x)
}

test_that("inference uses the moving averages; training the batch's moments and moves them", {
  set.seed(111)
  x <- array(rnorm(4 * 3 * 2 * 2 * 3, 2, 3), c(4, 3, 2, 2, 3))
  layer <- layer_batch_normalization(momentum = 0.8, epsilon = 0.01, dtype = "float64")
  layer(x) # builds
  w <- list(c(1.5, 0.5, 2), c(0.1, -0.2, 0.3), c(1, 2, 3), c(4, 0.5, 2))
  set_weights(layer, w)
  y <- layer(x)
  for (ch in 1:3) {
    expect_equal(y[, , , , ch], (x[, , , , ch] - w[[3]][ch]) / sqrt(w[[4]][ch] + 0.01) * w[[1]][ch] +
      w[[2]][ch])
  }
  out <- train_call(layer, x, w)
  ref <- bn_reference(x, w[[1]], w[[2]], 0.01)
  expect_equal(out$y, ref$y, tolerance = 1e-12)
  after <- get_weights(layer)
  expect_equal(after[[3]], 0.8 * w[[3]] + 0.2 * ref$mean, tolerance = 1e-12)
  expect_equal(after[[4]], 0.8 * w[[4]] + 0.2 * ref$var, tolerance = 1e-12) # biased, non-fused
  # channels_first: axis 1, the same numbers
  first <- layer_batch_normalization(axis = 1, momentum = 0.8, epsilon = 0.01, dtype = "float64")
  xf <- aperm(x, c(1, 5, 2, 3, 4))
  first(xf)
  expect_equal(train_call(first, xf, w)$y, aperm(ref$y, c(1, 5, 2, 3, 4)), tolerance = 1e-12)
})

test_that("a float32 layer follows Keras's fused kernel: epsilon floor, unbiased moving variance", {
  set.seed(112)
  x <- array(rnorm(2 * 2 * 2 * 2 * 2), c(2, 2, 2, 2, 2))
  layer <- layer_batch_normalization(epsilon = 1e-7)
  layer(x)
  w <- get_weights(layer)
  out <- train_call(layer, x, w)
  ref <- bn_reference(x, c(1, 1), c(0, 0), 1.001e-5)
  expect_equal(out$y, conv3d:::round_to_dtype(ref$y, "float32"), tolerance = 1e-6)
  m <- 16
  expect_equal(get_weights(layer)[[4]], 0.99 + 0.01 * ref$var * m / (m - 1), tolerance = 1e-6)
  # fused = FALSE: the non-fused path (biased variance, epsilon as given)
  plain <- layer_batch_normalization(epsilon = 1e-7, fused = FALSE)
  plain(x)
  train_call(plain, x, w)
  expect_equal(get_weights(plain)[[4]], 0.99 + 0.01 * ref$var, tolerance = 1e-6)
})

test_that("virtual batches, renormalization and adjustment follow Keras's formulas", {
  set.seed(113)
  x <- array(rnorm(6 * 2 * 2 * 1 * 2, 1, 2), c(6, 2, 2, 1, 2))
  ghost <- layer_batch_normalization(virtual_batch_size = 2, momentum = 0.5, dtype = "float64")
  ghost(x)
  w <- get_weights(ghost)
  expect_identical(dim(w[[1]]), c(1L, 1L, 1L, 1L, 1L, 2L)) # Keras's full-rank shape
  ref <- bn_reference(x, c(1, 1), c(0, 0), 0.001, ghosts = 3)
  expect_equal(train_call(ghost, x, w)$y, ref$y, tolerance = 1e-12)
  expect_equal(c(get_weights(ghost)[[3]]), 0.5 * ref$mean, tolerance = 1e-12)
  # renorm: r and d from the renorm averages before the update, clipped
  renorm <- layer_batch_normalization(renorm = TRUE, renorm_clipping = list(rmax = 1.5, dmax = 0.2),
    renorm_momentum = 0.9, momentum = 0.7, dtype = "float64")
  renorm(x)
  w <- get_weights(renorm)
  expect_length(w, 7)
  w[[6]] <- c(0.5, -0.5) # renorm_mean
  w[[7]] <- c(0.8, 3)    # renorm_stddev
  plain <- bn_reference(x, c(1, 1), c(0, 0), 0.001)
  stddev <- sqrt(plain$var + 0.001)
  r <- pmin(stddev / w[[7]], 1.5)
  d <- pmin(pmax((plain$mean - w[[6]]) / w[[7]], -0.2), 0.2)
  ref <- bn_reference(x, c(1, 1), c(0, 0), 0.001, r = r, d = d)
  expect_equal(train_call(renorm, x, w)$y, ref$y, tolerance = 1e-12)
  after <- get_weights(renorm)
  expect_equal(after[[5]], 0.7 * w[[5]] + 0.3 * stddev, tolerance = 1e-12)    # moving_stddev
  expect_equal(after[[4]], after[[5]]^2 - 0.001, tolerance = 1e-12)            # moving_variance
  expect_equal(after[[6]], 0.9 * w[[6]] + 0.1 * plain$mean, tolerance = 1e-12) # renorm_mean
  expect_equal(after[[7]], 0.9 * w[[7]] + 0.1 * stddev, tolerance = 1e-12)     # renorm_stddev
  # adjustment: scale and bias before gamma and beta, in training only
  adjusted <- layer_batch_normalization(adjustment = function(shape) list(c(2, 0.5), 0.3),
    dtype = "float64")
  adjusted(x)
  w <- get_weights(adjusted)
  w[[1]] <- c(1.5, -1)
  w[[2]] <- c(0.2, 0.4)
  ref <- bn_reference(x, w[[1]], w[[2]], 0.001, a = c(2, 0.5), b = 0.3)
  expect_equal(train_call(adjusted, x, w)$y, ref$y, tolerance = 1e-12)
})

test_that("training gradients match finite differences, with every variant", {
  set.seed(114)
  x <- array(rnorm(4 * 2 * 1 * 2 * 2, 1, 2), c(4, 2, 1, 2, 2))
  variants <- list(
    list(dtype = "float64"),
    list(dtype = "float64", center = FALSE),
    list(dtype = "float64", virtual_batch_size = 2),
    # renorm's r and d are constants for the gradient (Keras stops them):
    # clipped to constants here (the renorm mean far off), so that finite
    # differences see the same function
    list(dtype = "float64", renorm = TRUE, renorm_clipping = list(rmin = 1.3, rmax = 1.3, dmax = 0.2)),
    list(dtype = "float64", adjustment = function(shape) list(c(1.5, 0.5), c(0.1, -0.1))),
    list(dtype = "float64", axis = c(2, 4)))
  for (v in variants) {
    layer <- do.call(layer_batch_normalization, v)
    layer(x)
    w <- get_weights(layer)
    w[[1]] <- w[[1]] + seq_along(w[[1]]) / 10 # gamma not all 1
    if (isTRUE(v$renorm)) w[[6]] <- w[[6]] + 100 # renorm_mean: d clipped to -dmax
    dy <- array(rnorm(length(x)), dim(x))
    self <- conv3d:::layer_self(layer)
    out <- train_call(layer, x, w)
    g <- self$train_backward(self, x, dy, out$cache, TRUE)
    loss_x <- function(xx) sum(dy * train_call(layer, xx, w)$y)
    eps <- 1e-6
    for (i in c(1, 7, 20, 32)) {
      up <- x
      down <- x
      up[i] <- up[i] + eps
      down[i] <- down[i] - eps
      expect_equal(g$input[i], (loss_x(up) - loss_x(down)) / (2 * eps), tolerance = 1e-6,
        info = paste(names(v), collapse = ","))
    }
    loss_gamma <- function(gam) sum(dy * train_call(layer, x, replace(w, 1, list(gam)))$y)
    for (i in seq_along(w[[1]])) {
      up <- w[[1]]
      down <- w[[1]]
      up[i] <- up[i] + eps
      down[i] <- down[i] - eps
      expect_equal(g$weights[[1]][i], (loss_gamma(up) - loss_gamma(down)) / (2 * eps),
        tolerance = 1e-6, info = paste(names(v), collapse = ","))
    }
    expect_null(g$weights[[length(g$weights)]]) # a moving statistic: no gradient
  }
})

test_that("batch normalization trains in a model; frozen, it runs in inference mode", {
  set.seed(115)
  x <- array(rnorm(16 * 4^3), c(16, 4, 4, 4, 1))
  y <- as.numeric(apply(x, 1, mean) > 0)
  model <- keras_model_sequential(input_shape = c(4, 4, 4, 1)) |>
    layer_conv_3d(4, 3, use_bias = FALSE, dtype = "float64") |>
    layer_batch_normalization(dtype = "float64", name = "bn") |>
    layer_activation("relu", dtype = "float64") |>
    layer_global_average_pooling_3d(dtype = "float64") |>
    layer_dense(1, activation = "sigmoid", dtype = "float64")
  expect_length(model$trainable_weights, 1 + 2 + 2)
  expect_length(model$non_trainable_weights, 2)
  expect_true(any(grepl("Non-trainable params: 8 ", capture.output(summary(model)))))
  compile(model, optimizer_adam(0.05), "binary_crossentropy", metrics = "accuracy")
  before <- get_weights(get_layer(model, "bn"))
  h <- fit(model, x, y, epochs = 15, batch_size = 8, verbose = 0)
  expect_gt(h$metrics$accuracy[15], 0.8)
  moved <- get_weights(get_layer(model, "bn"))
  expect_false(identical(moved[[3]], before[[3]])) # moving mean followed the batches
  # frozen: gamma, beta and the moving statistics stay, the layer normalises
  # with the moving averages (inference mode), as in TF 2 Keras
  bn <- get_layer(model, "bn")
  bn$trainable <- FALSE
  compile(model, optimizer_sgd(0.1), "binary_crossentropy")
  fit(model, x, y, epochs = 1, batch_size = 8, verbose = 0)
  expect_identical(get_weights(bn), moved)
})

test_that("batch normalization errors are worded", {
  x <- array(0, c(3, 2, 2, 2, 2))
  expect_snapshot(error = TRUE, {
    layer_batch_normalization(fused = TRUE, renorm = TRUE)
    layer_batch_normalization(virtual_batch_size = 2, adjustment = function(s) list(1, 0))
    layer_batch_normalization(renorm_clipping = list(rmax = 2, max = 3))
    layer_batch_normalization(axis = 1.5)
    layer_batch_normalization(x, axis = 6, name = "bn")
    layer_batch_normalization(fused = TRUE, axis = 2)
  })
  layer <- layer_batch_normalization(virtual_batch_size = 2, name = "ghost")
  layer(x[1:2, , , , , drop = FALSE])
  self <- conv3d:::layer_self(layer)
  expect_snapshot(error = TRUE, {
    self$train_call(self, x)
    set_weights(layer, list(1, 2))
  })
})

test_that("Keras's details: relu'd renorm variance, fallback from fused, config keys", {
  set.seed(116)
  x <- array(rnorm(4 * 3 * 2 * 2 * 3), c(4, 3, 2, 2, 3))
  # renorm keeps moving_variance = relu(moving_stddev^2 - epsilon)
  zero <- layer_batch_normalization(renorm = TRUE, moving_variance_initializer = "zeros",
    dtype = "float64")
  zero(x)
  train_call(zero, x, get_weights(zero))
  expect_true(all(get_weights(zero)[[4]] >= 0))
  # fused = TRUE with axis 3 on a rank-5 input: Keras falls back to the plain
  # path (biased moving variance)
  side <- layer_batch_normalization(axis = 3, fused = TRUE, momentum = 0)
  side(x)
  train_call(side, x, get_weights(side))
  xs <- aperm(x, c(1, 2, 3, 5, 4)) # axis 3 (0-based) last
  expect_equal(get_weights(side)[[4]], bn_reference(xs, c(1, 1), c(0, 0), 0.001)$var,
    tolerance = 1e-6)
  # the config has the TensorFlow-only keys only when set, as Keras's
  expect_false(any(c("renorm", "fused", "virtual_batch_size") %in%
    names(layer_batch_normalization()$get_config())))
  cfg <- layer_batch_normalization(renorm = TRUE, virtual_batch_size = 2)$get_config()
  expect_true(all(c("renorm", "renorm_clipping", "renorm_momentum", "virtual_batch_size") %in% names(cfg)))
  cfg$name <- NULL
  expect_identical(do.call(layer_batch_normalization, cfg)$get_config()[-1],
    layer_batch_normalization(renorm = TRUE, virtual_batch_size = 2)$get_config()[-1])
  expect_snapshot(error = TRUE, {
    layer_batch_normalization(x, axis = c(-1, 4), name = "twice")
    layer_batch_normalization(array(0, c(2, 3, 3, 2)), axis = -4, name = "flat")
    layer_batch_normalization(fused = TRUE, dtype = "float64")
  })
})
