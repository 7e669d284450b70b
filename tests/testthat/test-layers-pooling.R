# Pooling layers against naive loops written here (Keras semantics: padded
# positions take no part in the max or the average's count).

reference_pool <- function(x, pool, strides, padding, average) {
  d <- dim(x)
  out_len <- function(n, k, s) if (padding == "valid") (n - k) %/% s + 1 else ceiling(n / s)
  o <- mapply(out_len, d[2:4], pool, strides)
  pad <- pmax(0, (o - 1) * strides + pool - d[2:4]) %/% 2
  y <- array(0, c(d[1], o, d[5]))
  for (n in seq_len(d[1])) for (c in seq_len(d[5]))
    for (i in seq_len(o[1])) for (j in seq_len(o[2])) for (k in seq_len(o[3])) {
      rng <- function(idx, axis) {
        start <- (idx - 1) * strides[axis] - pad[axis] + 1
        r <- start:(start + pool[axis] - 1)
        r[r >= 1 & r <= d[axis + 1]]
      }
      v <- x[n, rng(i, 1), rng(j, 2), rng(k, 3), c]
      y[n, i, j, k, c] <- if (average) mean(v) else max(v)
    }
  y
}

test_that("max and average pooling match the naive loops", {
  set.seed(21)
  cases <- list(
    list(pool = c(2, 2, 2), strides = c(2, 2, 2), padding = "valid", dims = c(2, 5, 6, 7, 3)),
    list(pool = c(3, 2, 1), strides = c(1, 2, 1), padding = "same", dims = c(1, 5, 5, 4, 2)),
    list(pool = c(2, 3, 3), strides = c(3, 2, 2), padding = "same", dims = c(2, 7, 6, 5, 1))
  )
  for (case in cases) {
    x <- array(rnorm(prod(case$dims)), case$dims)
    for (average in c(FALSE, TRUE)) {
      f <- if (average) layer_average_pooling_3d else layer_max_pooling_3d
      ref <- reference_pool(x, case$pool, case$strides, case$padding, average)
      y <- f(x, pool_size = case$pool, strides = case$strides, padding = toupper(case$padding),
        dtype = "float64")
      expect_equal(y, ref, tolerance = 1e-12)
      yf <- f(aperm(x, c(1, 5, 2, 3, 4)), pool_size = case$pool, strides = case$strides,
        padding = case$padding, data_format = "channels_first", dtype = "float64")
      expect_equal(yf, aperm(ref, c(1, 5, 2, 3, 4)), tolerance = 1e-12)
    }
  }
  # strides default to the pool size; NaN propagates through the max
  x <- array(1:64, c(1, 4, 4, 4, 1))
  expect_equal(dim(layer_max_pooling_3d(x)), c(1, 2, 2, 2, 1))
  x[1, 1, 1, 1, 1] <- NaN
  expect_true(is.nan(layer_max_pooling_3d(x, dtype = "float64")[1, 1, 1, 1, 1]))
})

test_that("windowed pooling and its picks are the same on every tier, along long runs", {
  # 3 samples x 7 depths: each (h, w) tap's run along (n, d) holds whole
  # vectors of every tier and a tail; the windows hold NaN, -Inf, ties and
  # signed zeros. channels_first runs are strided: the scalar loop on each tier.
  local_tier_and_threads()
  set.seed(23)
  x <- array(round(rnorm(3 * 7 * 5 * 6 * 2), 1), c(3, 7, 5, 6, 2))
  x[sample(length(x), 12)] <- -Inf
  x[sample(length(x), 3)] <- NaN
  x[sample(length(x), 20)] <- c(0, -0)
  cases <- list(
    list(pool = c(2, 2, 2), strides = c(2, 2, 2), padding = "valid"),
    list(pool = c(3, 2, 3), strides = c(1, 2, 2), padding = "same"),
    list(pool = c(1, 3, 2), strides = c(2, 1, 3), padding = "same"))
  for (case in cases) for (format in c("channels_last", "channels_first")) {
    first <- format == "channels_first"
    xf <- if (first) aperm(x, c(1, 5, 2, 3, 4)) else x
    for (average in c(FALSE, TRUE)) {
      f <- if (average) layer_average_pooling_3d else layer_max_pooling_3d
      layer <- f(pool_size = case$pool, strides = case$strides, padding = case$padding,
        data_format = format, dtype = "float64")
      ref <- reference_pool(x, case$pool, case$strides, case$padding, average)
      if (first) ref <- aperm(ref, c(1, 5, 2, 3, 4))
      info <- paste(paste(case$pool, collapse = ""), case$padding, format, average)
      expect_every_tier(function() layer(xf), ref, tolerance = 1e-12, info = info)
      if (average) next
      # the training call's picks send dy where the scanning backward pass does
      self <- conv3d:::layer_self(layer)
      dy <- array(rnorm(length(ref)), dim(ref))
      expect_every_tier(function() {
        kept <- self$train_call(self, xf)
        self$train_backward(self, xf, dy, kept$cache, TRUE)$input
      }, conv3d:::layer_backward(layer, xf, dy)$input, tolerance = 0, info = info)
    }
  }
})

test_that("pools far larger than the input need no more memory than the input's windows", {
  x <- array(c(1, 5, 3, 2, 8, 4, 6, 7), c(1, 2, 2, 2, 1))
  y <- layer_max_pooling_3d(x, pool_size = c(1, 40000, 40000), padding = "same",
    dtype = "float64")
  expect_equal(as.vector(y), c(8, 7))
  y <- layer_average_pooling_3d(x, pool_size = c(1, 40000, 40000), padding = "same",
    dtype = "float64")
  expect_equal(as.vector(y), c(mean(x[1, 1, , , 1]), mean(x[1, 2, , , 1])))
})

test_that("a float32 average sums the input's doubles and rounds the mean", {
  # the max compares float32 values (its picks are among them); the average
  # rounds only its result: 1e39 and -1e39 average to 0, not to Inf - Inf
  avg <- function(v) layer_average_pooling_3d(array(v, c(1, length(v), 1, 1, 1)),
    pool_size = c(length(v), 1, 1), dtype = "float32")[1]
  expect_identical(avg(c(1e39, -1e39)), 0)
  v <- c(1 + 2^-24 + 2^-40, 1 + 2^-24 + 2^-40, 1)
  expect_identical(avg(v), conv3d:::round_to_dtype(mean(v), "float32"))
})

test_that("global pooling reduces the spatial axes", {
  set.seed(22)
  x <- array(rnorm(2 * 3 * 4 * 5 * 6), c(2, 3, 4, 5, 6))
  expect_equal(layer_global_average_pooling_3d(x, dtype = "float64"), apply(x, c(1, 5), mean))
  expect_equal(layer_global_max_pooling_3d(x, dtype = "float64"), apply(x, c(1, 5), max))
  xf <- aperm(x, c(1, 5, 2, 3, 4))
  expect_equal(layer_global_average_pooling_3d(xf, data_format = "channels_first",
    dtype = "float64"), apply(x, c(1, 5), mean))
  # integer input, float32 layer (the default)
  ints <- array(1:16, c(2, 2, 2, 2, 1))
  expect_equal(layer_global_max_pooling_3d(ints), matrix(c(15, 16), 2, 1))
  expect_equal(layer_global_average_pooling_3d(ints), matrix(c(8, 9), 2, 1))
  kept <- layer_global_max_pooling_3d(x, keepdims = TRUE, dtype = "float64")
  expect_equal(dim(kept), c(2, 1, 1, 1, 6))
  expect_equal(kept[, 1, 1, 1, ], apply(x, c(1, 5), max))
})

# reduce_max's gradient, independently: dy over the voxels equal to the
# maximum, split evenly; NaN everywhere when the maximum is NaN
reference_global_max_grad <- function(x, dy) {
  ref <- array(0, dim(x))
  for (n in seq_len(dim(x)[1])) {
    for (ch in seq_len(dim(x)[5])) {
      v <- x[n, , , , ch]
      s <- array(NaN, dim(v))
      if (!anyNA(v)) {
        hit <- v == max(v)
        s[] <- ifelse(hit, dy[n, ch] / sum(hit), 0)
      }
      ref[n, , , , ch] <- s
    }
  }
  ref
}

test_that("global max pooling splits its gradient over tied maxima, as reduce_max", {
  set.seed(23)
  x <- array(rnorm(2 * 3 * 2 * 4 * 3), c(2, 3, 2, 4, 3))
  x[1, , , , 1] <- 0                      # 24 tied maxima
  x[2, 1, 2, 3, 2] <- x[2, 3, 1, 1, 2] <- 9 # two
  x[1, 2, 2, 2, 3] <- NaN                 # NaN: NaN for the whole channel
  dy <- matrix(rnorm(6), 2, 3)
  ref <- reference_global_max_grad(x, dy)
  expect_equal(sum(ref[1, , , , 1]), dy[1, 1]) # the tie gets the gradient once
  layer <- layer_global_max_pooling_3d(dtype = "float64")
  expect_equal(conv3d:::layer_backward(layer, x, dy)$input, ref, tolerance = 1e-15)
  first <- layer_global_max_pooling_3d(dtype = "float64", data_format = "channels_first",
    keepdims = TRUE)
  g <- conv3d:::layer_backward(first, aperm(x, c(1, 5, 2, 3, 4)), array(dy, c(2, 3, 1, 1, 1)))
  expect_equal(g$input, aperm(ref, c(1, 5, 2, 3, 4)), tolerance = 1e-15)
  # forward: NaN and NA as R's max gives them
  expect_true(is.nan(layer(x)[1, 3]))
  x[2, 1, 1, 1, 3] <- NA
  expect_true(is.na(layer(x)[2, 3]) && !is.nan(layer(x)[2, 3]))
  expect_equal(layer(x)[, 1:2], apply(x[, , , , 1:2], c(1, 5), max))
})

test_that("float32 pooling gradients find the maxima among float32 values", {
  # 1 and 1 + 1e-9 are one float32: tied, as TensorFlow sees them
  x <- array(1, c(1, 2, 1, 1, 1))
  x[1, 2, 1, 1, 1] <- 1 + 1e-9
  g <- conv3d:::layer_backward(layer_global_max_pooling_3d(), x, matrix(1, 1, 1))$input
  expect_equal(as.vector(g), c(0.5, 0.5))
  # a window's first maximum in row-major order: the first of the tie
  g <- conv3d:::layer_backward(layer_max_pooling_3d(pool_size = c(2, 1, 1)), x,
    array(1, c(1, 1, 1, 1, 1)))$input
  expect_equal(as.vector(g), c(1, 0))
  g64 <- conv3d:::layer_backward(layer_max_pooling_3d(pool_size = c(2, 1, 1), dtype = "float64"),
    x, array(1, c(1, 1, 1, 1, 1)))$input
  expect_equal(as.vector(g64), c(0, 1))
})

test_that("pooling errors are worded and shapes infer", {
  expect_snapshot(error = TRUE, {
    layer_max_pooling_3d(pool_size = 0)
    layer_max_pooling_3d(pool_size = 2, strides = c(1, 2))
    layer_average_pooling_3d(padding = "full")
    layer_max_pooling_3d(array(1, c(1, 1, 4, 4, 1)))
  })
  input <- layer_input(shape = c(9, 8, 7, 3))
  expect_equal(dim(layer_max_pooling_3d(input, 2, padding = "same")), c(NA, 5L, 4L, 4L, 3L))
  expect_equal(dim(layer_global_average_pooling_3d(input)), c(NA, 3L))
})
