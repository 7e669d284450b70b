# Compare layer_conv_3d() against the naive loop reference in
# helper-reference.R on many random small configurations.

all_activations <- c("linear", "relu", "sigmoid", "tanh", "softmax", "elu",
                     "selu", "softplus", "softsign", "swish", "silu", "gelu",
                     "exponential", "hard_sigmoid", "relu6", "leaky_relu",
                     "mish")

# Draw one random configuration.  Every argument can be fixed by the caller.
random_config <- function(dtype,
                          data_format = sample(c("channels_last", "channels_first"), 1),
                          groups = sample(c(1L, 1L, 2L, 3L), 1),
                          activation = sample(c(list(NULL), as.list(all_activations)), 1)[[1]],
                          use_bias = sample(c(TRUE, FALSE), 1),
                          cpg_choices = 1:3, fpg_choices = 1:3,
                          max_size = c(7L, 7L, 7L), N_choices = 1:2) {
  G <- as.integer(groups)
  C <- G * sample(cpg_choices, 1)          # input channels per group
  filters <- G * sample(fpg_choices, 1)    # filters per group
  k <- sample(1:3, 3, replace = TRUE)
  if (runif(1) < 0.3) k <- rep(k[1], 3)                 # some cubic kernels
  if (runif(1) < 0.3) {
    # dilation (Keras forbids it together with strides > 1)
    dilation <- sample(1:2, 3, replace = TRUE)
    strides <- c(1L, 1L, 1L)
  } else {
    dilation <- c(1L, 1L, 1L)
    strides <- sample(1:3, 3, replace = TRUE)
  }
  k_eff <- (k - 1L) * dilation + 1L
  padding <- sample(c("valid", "same", "Same", "VALID", "Valid", "SAME"), 1)
  lo <- if (tolower(padding) == "valid") k_eff else c(1L, 1L, 1L)
  hi <- pmax(max_size, lo)
  size <- vapply(1:3, function(a) lo[a] + sample.int(hi[a] + 1L - lo[a], 1) - 1L,
                 numeric(1))
  N <- sample(N_choices, 1)
  # pass 1-value integer arguments sometimes, and integers vs doubles
  shorten <- function(v) if (length(unique(v)) == 1L && runif(1) < 0.5) v[1] else v
  list(N = N, size = size, C = C, filters = filters,
       kernel_size = shorten(k), strides = shorten(strides),
       dilation_rate = shorten(dilation), padding = padding, groups = G,
       data_format = data_format, activation = activation,
       use_bias = use_bias, dtype = dtype)
}

config_string <- function(cfg) {
  fmt <- function(v) {
    if (is.null(v)) return("NULL")
    if (is.function(v)) return(paste(deparse(v), collapse = " "))
    paste(v, collapse = ",")
  }
  sprintf(paste0("N=%d size=(%s) C=%d filters=%d kernel_size=(%s) strides=(%s) ",
                 "dilation=(%s) padding=%s groups=%d data_format=%s ",
                 "activation=%s use_bias=%s dtype=%s"),
          cfg$N, fmt(cfg$size), cfg$C, cfg$filters, fmt(cfg$kernel_size),
          fmt(cfg$strides), fmt(cfg$dilation_rate), cfg$padding, cfg$groups,
          cfg$data_format, fmt(cfg$activation), cfg$use_bias, cfg$dtype)
}

# Draw data for a configuration, run the package and the reference, compare.
check_config <- function(cfg) {
  k <- rep_len(cfg$kernel_size, 3)
  xdim <- if (cfg$data_format == "channels_last") {
    c(cfg$N, cfg$size, cfg$C)
  } else {
    c(cfg$N, cfg$C, cfg$size)
  }
  x <- array(rnorm(prod(xdim)), xdim)
  cpg <- cfg$C / cfg$groups
  # modest scale keeps outputs O(1) so float32 comparisons are well conditioned
  kernel <- array(rnorm(prod(k) * cpg * cfg$filters, sd = 1 / sqrt(prod(k) * cpg)),
                  c(k, cpg, cfg$filters))
  bias <- if (cfg$use_bias) rnorm(cfg$filters, sd = 0.5) else NULL

  actual <- layer_conv_3d(
    x, filters = cfg$filters, kernel_size = cfg$kernel_size,
    strides = cfg$strides, padding = cfg$padding,
    data_format = cfg$data_format, dilation_rate = cfg$dilation_rate,
    groups = cfg$groups, activation = cfg$activation,
    use_bias = cfg$use_bias, dtype = cfg$dtype,
    weights = if (cfg$use_bias) list(kernel, bias) else list(kernel)
  )
  expected <- reference_conv3d(
    x, kernel, bias, strides = cfg$strides, padding = cfg$padding,
    dilation_rate = cfg$dilation_rate, groups = cfg$groups,
    data_format = cfg$data_format, activation = cfg$activation
  )
  tol <- if (cfg$dtype == "float64") 1e-10 else 1e-4
  info <- config_string(cfg)
  if (!is.null(cfg$tier)) info <- paste0(info, " kernel_tier=", cfg$tier)
  expect_true(is.array(actual) && is.double(actual), info = info)
  expect_equal(dim(actual), dim(expected), info = info)
  expect_equal(as.vector(actual), as.vector(expected), tolerance = tol, info = info)
  invisible(NULL)
}

# ---------------------------------------------------------------------------
# The reference itself, on hand-computed cases

test_that("reference: ones input with ones kernel (valid and same)", {
  x <- array(1, c(1, 3, 3, 3, 1))
  k <- array(1, c(3, 3, 3, 1, 1))
  y <- reference_conv3d(x, k)
  expect_equal(dim(y), c(1, 1, 1, 1, 1))
  expect_equal(y[1, 1, 1, 1, 1], 27)

  y <- reference_conv3d(x, k, padding = "SAME")
  expect_equal(dim(y), c(1, 3, 3, 3, 1))
  expect_equal(y[1, 1, 1, 1, 1], 8)      # corner: 2 * 2 * 2 taps
  expect_equal(y[1, 2, 1, 1, 1], 12)     # edge
  expect_equal(y[1, 2, 2, 1, 1], 18)     # face
  expect_equal(y[1, 2, 2, 2, 1], 27)     # centre
  expect_equal(y[1, 3, 3, 3, 1], 8)

  # bias and channels_first give the same numbers
  y <- reference_conv3d(aperm(x, c(1, 5, 2, 3, 4)), k, bias = 0.5,
                        padding = "same", data_format = "channels_first")
  expect_equal(dim(y), c(1, 1, 3, 3, 3))
  expect_equal(y[1, 1, 1, 1, 1], 8.5)
  expect_equal(y[1, 1, 2, 2, 2], 27.5)
})

test_that("reference: cross-correlation, stride, dilation, asymmetric same padding", {
  # effectively 1-D along W: x = 1..5, kernel (1, 10, 100) (no flip)
  x <- array(1:5, c(1, 1, 1, 5, 1))
  k <- array(c(1, 10, 100), c(1, 1, 3, 1, 1))
  expect_equal(as.vector(reference_conv3d(x, k)), c(321, 432, 543))
  expect_equal(as.vector(reference_conv3d(x, k, strides = c(1, 1, 2))), c(321, 543))
  expect_equal(as.vector(reference_conv3d(x, k, dilation_rate = c(1, 1, 2))), 531)
  # same, stride 1: P = 2 -> one zero each side
  expect_equal(as.vector(reference_conv3d(x, k, padding = "same")),
               c(210, 321, 432, 543, 54))
  # even kernel: x = 1..4, kernel (1, 10), P = 1 -> the zero goes at the END
  x4 <- array(1:4, c(1, 1, 1, 4, 1))
  k2 <- array(c(1, 10), c(1, 1, 2, 1, 1))
  expect_equal(as.vector(reference_conv3d(x4, k2, padding = "same")),
               c(21, 32, 43, 4))
  # same with stride 2 on n = 5, k = 3: out = 3, P = (3-1)*2 + 3 - 5 = 2
  expect_equal(as.vector(reference_conv3d(x, k, strides = c(1, 1, 2), padding = "same")),
               c(210, 432, 54))
  # same with stride 2 on n = 6, k = 3: out = 3, P = 1 -> before 0, after 1
  x6 <- array(1:6, c(1, 1, 1, 6, 1))
  expect_equal(as.vector(reference_conv3d(x6, k, strides = c(1, 1, 2), padding = "same")),
               c(321, 543, 65))
  # the D axis works the same way as W
  xd <- array(1:5, c(1, 5, 1, 1, 1))
  kd <- array(c(1, 10, 100), c(3, 1, 1, 1, 1))
  expect_equal(as.vector(reference_conv3d(xd, kd, padding = "same")),
               c(210, 321, 432, 543, 54))
})

test_that("reference: groups and channels", {
  # 1x1x1 kernel, 4 input channels, 2 groups, 4 filters
  x <- array(c(1, 2, 3, 4), c(1, 1, 1, 1, 4))
  k <- array(0, c(1, 1, 1, 2, 4))
  k[1, 1, 1, , 1] <- c(1, 10)     # group 0 reads channels 1, 2
  k[1, 1, 1, , 2] <- c(100, 0)
  k[1, 1, 1, , 3] <- c(1, 10)     # group 1 reads channels 3, 4
  k[1, 1, 1, , 4] <- c(0, 1000)
  y <- reference_conv3d(x, k, bias = c(0, 0, 0, 0.5), groups = 2)
  expect_equal(as.vector(y), c(21, 100, 43, 4000.5))
  # ungrouped: filter sums over all channels
  k1 <- array(c(1, 10, 100, 1000), c(1, 1, 1, 4, 1))
  expect_equal(as.vector(reference_conv3d(x, k1)), 4321)
})

test_that("reference: activations", {
  v <- array(c(-2, -0.5, 0, 0.5, 2, 7), c(1, 1, 1, 2, 3))
  expect_equal(reference_activation(v, NULL), v)
  expect_equal(reference_activation(v, "linear"), v)
  expect_equal(as.vector(reference_activation(v, "relu")), c(0, 0, 0, 0.5, 2, 7))
  expect_equal(as.vector(reference_activation(v, "relu6")), c(0, 0, 0, 0.5, 2, 6))
  expect_equal(as.vector(reference_activation(v, "leaky_relu")),
               c(-0.4, -0.1, 0, 0.5, 2, 7))
  expect_equal(as.vector(reference_activation(v, "hard_sigmoid")),
               c(0.1, 0.4, 0.5, 0.6, 0.9, 1))
  expect_equal(as.vector(reference_activation(v, "sigmoid")), plogis(as.vector(v)))
  expect_equal(as.vector(reference_activation(v, "elu")),
               c(exp(-2) - 1, exp(-0.5) - 1, 0, 0.5, 2, 7))
  expect_equal(reference_activation(array(1, 1), "selu")[1], 1.0507009873554805)
  expect_equal(reference_activation(array(-1, 1), "selu")[1],
               1.0507009873554805 * 1.6732632423543772 * (exp(-1) - 1))
  expect_equal(reference_activation(array(1, 1), "softplus")[1], log(1 + exp(1)))
  expect_equal(reference_activation(array(100, 1), "softplus")[1], 100)
  expect_equal(reference_activation(array(3, 1), "softsign")[1], 0.75)
  expect_equal(reference_activation(array(1, 1), "swish")[1], 1 / (1 + exp(-1)))
  expect_equal(reference_activation(v, "silu"), reference_activation(v, "swish"))
  expect_equal(reference_activation(array(1, 1), "gelu")[1], 0.8413447460685429)
  expect_equal(reference_activation(array(-1, 1), "gelu")[1], -0.15865525393145707)
  expect_equal(reference_activation(array(1, 1), "mish")[1], 0.8650983882673103)
  expect_equal(as.vector(reference_activation(v, "exponential")), exp(as.vector(v)))
  expect_equal(as.vector(reference_activation(v, "tanh")), tanh(as.vector(v)))
  # softmax over the LAST axis: dim (1,1,1,2,3) -> 2 vectors of length 3
  s <- reference_activation(v, "softmax")
  expect_equal(dim(s), dim(v))
  e1 <- exp(c(-2, 0, 2)); e2 <- exp(c(-0.5, 0.5, 7))
  expect_equal(as.vector(s[1, 1, 1, 1, ]), e1 / sum(e1))
  expect_equal(as.vector(s[1, 1, 1, 2, ]), e2 / sum(e2))
  expect_equal(reference_activation(v, function(z) z^2), v^2)
})

# ---------------------------------------------------------------------------
# Package versus reference

test_that("float64, channels_last, random configs match the reference", {
  set.seed(1001)
  for (i in 1:60) check_config(random_config("float64", data_format = "channels_last"))
})

test_that("float64, channels_first, random configs match the reference", {
  set.seed(1002)
  for (i in 1:60) check_config(random_config("float64", data_format = "channels_first"))
})

test_that("float32, both data formats, random configs match the reference", {
  set.seed(1003)
  for (i in 1:60) check_config(random_config("float32"))
})

test_that("grouped convolutions (groups 2 and 3) match the reference", {
  set.seed(1004)
  for (i in 1:30) {
    check_config(random_config(sample(c("float64", "float32"), 1),
                               groups = sample(2:3, 1)))
  }
})

test_that("every activation by name matches the reference, both dtypes and formats", {
  set.seed(1005)
  for (act in all_activations) {
    for (dtype in c("float64", "float32")) {
      for (df in c("channels_last", "channels_first")) {
        check_config(random_config(dtype, data_format = df, activation = act))
      }
    }
  }
})

test_that("medium configs (several filter blocks and W tiles) match the reference", {
  # more filters per group than one SIMD block and longer W rows than one tile
  set.seed(1009)
  for (i in 1:24) {
    cfg <- random_config(sample(c("float64", "float32"), 1),
                         groups = sample(c(1L, 1L, 2L, 3L), 1),
                         cpg_choices = 1:6,
                         fpg_choices = c(1, 7, 8, 9, 15, 16, 17, 31, 33),
                         max_size = c(4L, 4L, 21L), N_choices = 1L)
    check_config(cfg)
  }
})

test_that("every available micro-kernel tier matches the reference", {
  skip_if_not(exists("conv3d_cpu"), "conv3d_cpu() not available")
  tiers <- c("generic", "avx2", "avx512")
  best <- conv3d_cpu()$best
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  for (tier in tiers[seq_len(match(best, tiers))]) {
    conv3d_cpu(tier)
    expect_equal(conv3d_cpu()$kernel, tier)
    set.seed(1010)   # same configs for every tier
    for (i in 1:12) {
      cfg <- random_config(sample(c("float64", "float32"), 1),
                           cpg_choices = 1:5,
                           fpg_choices = c(1, 3, 9, 16, 17),
                           max_size = c(4L, 4L, 18L), N_choices = 1:2)
      cfg$tier <- tier
      check_config(cfg)
    }
  }
})

test_that("activation = NULL and use_bias = FALSE match the reference", {
  set.seed(1006)
  for (i in 1:10) {
    check_config(random_config(sample(c("float64", "float32"), 1),
                               activation = NULL, use_bias = FALSE))
  }
})

test_that("an R function activation works", {
  set.seed(1007)
  sq <- function(x) x^2
  for (i in 1:6) {
    check_config(random_config(sample(c("float64", "float32"), 1), activation = sq))
  }
  # and directly: the function sees the whole output array
  x <- array(rnorm(1 * 4 * 4 * 4 * 2), c(1, 4, 4, 4, 2))
  k <- array(rnorm(2 * 2 * 2 * 2 * 3, sd = 0.3), c(2, 2, 2, 2, 3))
  b <- rnorm(3)
  y <- layer_conv_3d(x, filters = 3, kernel_size = 2, activation = function(x) x^2,
                     dtype = "float64", weights = list(k, b))
  expect_equal(y, reference_conv3d(x, k, b, activation = function(x) x^2),
               tolerance = 1e-10)
  y_lin <- layer_conv_3d(x, filters = 3, kernel_size = 2, dtype = "float64",
                         weights = list(k, b))
  expect_equal(y, y_lin^2, tolerance = 1e-12)
})

test_that("odd 'same' padding puts the extra zero at the end (package)", {
  # stride 2 on n = 6 with k = 3: P = 1 -> before 0, after 1; asymmetric
  # kernel sizes per axis
  x <- array(as.double(seq_len(6 * 6 * 5)), c(1, 6, 6, 5, 1))
  k <- array(rnorm(3 * 2 * 3), c(3, 2, 3, 1, 1))
  for (p in c("same", "SAME", "Same")) {
    y <- layer_conv_3d(x, filters = 1, kernel_size = c(3, 2, 3), strides = 2,
                       padding = p, use_bias = FALSE, dtype = "float64",
                       weights = list(k))
    expect_equal(y, reference_conv3d(x, k, strides = 2, padding = "same"),
                 tolerance = 1e-10, info = p)
  }
})

# ---------------------------------------------------------------------------
# Thread count does not change results

test_that("results are bit-identical with 1 and 2 threads", {
  old <- conv3d_threads(1)
  withr::defer(conv3d_threads(old))
  set.seed(1008)
  x <- array(rnorm(2 * 9 * 10 * 11 * 6), c(2, 9, 10, 11, 6))
  cases <- list(
    list(kernel_size = c(3, 3, 3), groups = 1, strides = 1, dilation_rate = 1, padding = "same"),
    list(kernel_size = c(2, 3, 1), groups = 2, strides = c(2, 1, 3), dilation_rate = 1, padding = "valid"),
    list(kernel_size = c(3, 2, 3), groups = 1, strides = 1, dilation_rate = c(2, 1, 2), padding = "same")
  )
  for (cs in cases) {
    k <- cs$kernel_size
    kernel <- array(rnorm(prod(k) * (6 / cs$groups) * 8, sd = 0.2),
                    c(k, 6 / cs$groups, 8))
    bias <- rnorm(8)
    for (dtype in c("float32", "float64")) {
      run <- function(df) {
        xx <- if (df == "channels_first") aperm(x, c(1, 5, 2, 3, 4)) else x
        layer_conv_3d(xx, filters = 8, kernel_size = k, strides = cs$strides,
                      padding = cs$padding, data_format = df,
                      dilation_rate = cs$dilation_rate, groups = cs$groups,
                      activation = "relu", dtype = dtype,
                      weights = list(kernel, bias))
      }
      for (df in c("channels_last", "channels_first")) {
        info <- paste(dtype, df, cs$padding, "groups", cs$groups)
        conv3d_threads(1)
        y1 <- run(df)
        conv3d_threads(2)
        y2 <- run(df)
        expect_identical(y1, y2, info = info)
      }
    }
  }
  # conv3d_threads returns the previous value (2 may be capped on small machines)
  conv3d_threads(1)
  expect_equal(conv3d_threads(2), 1)
  now <- conv3d_threads()
  expect_true(now %in% c(1, 2))
  expect_equal(conv3d_threads(1), now)
  expect_equal(conv3d_threads(), 1)
})
