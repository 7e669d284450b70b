# Initializers: bounds, moments on large kernels, reproducibility.
# Kernel (kd, kh, kw, C/groups, filters) = (3, 3, 3, 16, 32): fan_in 432, fan_out 864.

draw_kernel <- function(init, dims = c(12, 12, 12, 16), filters = 32, groups = 1, kernel = 3,
                        dtype = "float64") {
  layer <- layer_conv_3d(filters = filters, kernel_size = kernel, groups = groups,
    kernel_initializer = init, dtype = dtype)
  layer(array(0, c(1, dims)))
  get_weights(layer)[[1]]
}

fan_in <- 3^3 * 16
fan_out <- 3^3 * 32

test_that("uniform initializers respect their bounds and variance", {
  set.seed(1)
  cases <- list(
    glorot_uniform = sqrt(6 / (fan_in + fan_out)),
    he_uniform = sqrt(6 / fan_in),
    lecun_uniform = sqrt(3 / fan_in)
  )
  for (name in names(cases)) {
    w <- draw_kernel(name)
    limit <- cases[[name]]
    expect_lte(max(abs(w)), limit)
    expect_gt(max(abs(w)), 0.99 * limit)
    # variance of U(-a, a) is a^2 / 3; 13824 draws: relative sd of the estimate ~1.1 %
    expect_equal(var(c(w)), limit^2 / 3, tolerance = 0.05, info = name)
    expect_equal(mean(w), 0, tolerance = 5 * limit / sqrt(3 * length(w)), info = name)
  }
  w <- draw_kernel(initializer_random_uniform(-0.2, 0.6))
  expect_gte(min(w), -0.2)
  expect_lte(max(w), 0.6)
  expect_equal(mean(w), 0.2, tolerance = 0.02)
})

test_that("truncated normal initializers have Keras's variance and cut at 2 sd", {
  set.seed(2)
  cases <- list(
    glorot_normal = 2 / (fan_in + fan_out),
    he_normal = 2 / fan_in,
    lecun_normal = 1 / fan_in
  )
  for (name in names(cases)) {
    w <- draw_kernel(name)
    # the rescaling by 0.8796 makes the variance of the truncated draw scale / fan
    expect_equal(var(c(w)), cases[[name]], tolerance = 0.05, info = name)
    sd_untruncated <- sqrt(cases[[name]]) / 0.87962566103423978
    expect_lte(max(abs(w)), 2 * sd_untruncated)
    expect_gt(max(abs(w)), 1.9 * sd_untruncated)
  }
  w <- draw_kernel(initializer_truncated_normal(mean = 1, stddev = 0.1))
  expect_lte(max(abs(w - 1)), 0.2)
  # variance of a unit normal truncated at +-2 is 0.7737
  expect_equal(var(c(w)), 0.01 * 0.77374, tolerance = 0.05)
  w <- draw_kernel(initializer_random_normal(mean = -1, stddev = 0.3))
  expect_equal(mean(w), -1, tolerance = 0.01)
  expect_equal(sd(w), 0.3, tolerance = 0.05)
  expect_gt(max(abs(w + 1)), 0.9) # untruncated: 3-sd draws occur among 13824
})

test_that("variance_scaling follows mode and distribution, groups shrink fan_in", {
  set.seed(3)
  w <- draw_kernel(initializer_variance_scaling(3, "fan_out", "untruncated_normal"))
  expect_equal(var(c(w)), 3 / fan_out, tolerance = 0.05)
  w <- draw_kernel(initializer_variance_scaling(1, "fan_avg", "uniform"))
  expect_lte(max(abs(w)), sqrt(3 / ((fan_in + fan_out) / 2)))
  grouped <- draw_kernel("he_uniform", groups = 4)
  expect_equal(dim(grouped), c(3, 3, 3, 4, 32))
  expect_lte(max(abs(grouped)), sqrt(6 / (3^3 * 4)))
  expect_gt(max(abs(grouped)), 0.99 * sqrt(6 / (3^3 * 4)))
})

test_that("constant initializers and bias initializers", {
  w <- draw_kernel("ones", kernel = 1)
  expect_true(all(w == 1))
  expect_true(all(draw_kernel("zeros", kernel = 1) == 0))
  expect_true(all(draw_kernel(initializer_constant(0.25), kernel = 1) == 0.25))
  layer <- layer_conv_3d(filters = 3, kernel_size = 1, bias_initializer = initializer_constant(2))
  layer(array(0, c(1, 2, 2, 2, 1)))
  expect_identical(get_weights(layer)[[2]], c(2, 2, 2))
})

test_that("orthogonal kernels are orthogonal in both orientations", {
  set.seed(4)
  w <- draw_kernel(initializer_orthogonal(gain = 2), dims = c(4, 4, 4, 2), filters = 5, kernel = 2)
  m <- matrix(w, ncol = 5) # 16 rows x 5 columns
  expect_equal(crossprod(m), diag(4, 5), tolerance = 1e-10)
  wide <- draw_kernel("orthogonal", dims = c(4, 4, 4, 1), filters = 20, kernel = c(1, 2, 2))
  m <- matrix(wide, ncol = 20) # 4 rows x 20 columns: rows orthonormal
  expect_equal(tcrossprod(m), diag(1, 4), tolerance = 1e-10)
  expect_snapshot(error = TRUE, layer_conv_3d(array(0, c(1, 2, 2, 2, 1)), 2, 1,
    bias_initializer = "orthogonal"))
})

test_that("set.seed() and seed = reproduce weights", {
  set.seed(10)
  a <- draw_kernel("glorot_uniform", kernel = 1)
  set.seed(10)
  b <- draw_kernel("glorot_uniform", kernel = 1)
  expect_identical(a, b)
  c1 <- draw_kernel(initializer_he_normal(seed = 7), kernel = 1)
  set.seed(99)
  before <- runif(1)
  set.seed(99)
  c2 <- draw_kernel(initializer_he_normal(seed = 7), kernel = 1)
  expect_identical(c1, c2)
  expect_identical(runif(1), before) # the seeded draw left the global stream alone
  expect_false(identical(a, c1))
  # seeds are whole numbers set.seed() takes, refused when the initializer is made
  expect_identical(draw_kernel(initializer_he_normal(seed = -2147483647), kernel = 1),
    draw_kernel(initializer_he_normal(seed = -2147483647), kernel = 1))
  expect_snapshot(error = TRUE, {
    initializer_glorot_uniform(seed = 1e20)
    initializer_he_normal(seed = 2.5)
    layer_dropout(rate = 0.5, seed = 2^31)
  })
})

test_that("an R function initializer gets the shape and dtype", {
  seen <- NULL
  init <- function(shape, dtype) {
    seen <<- list(shape = shape, dtype = dtype)
    array(seq_len(prod(shape)) / 100, shape)
  }
  w <- draw_kernel(init, dims = c(3, 3, 3, 2), filters = 4, kernel = 2, dtype = "float64")
  expect_equal(seen$shape, c(2, 2, 2, 2, 4))
  expect_equal(seen$dtype, "float64")
  expect_equal(c(w), seq_len(64) / 100)
  expect_snapshot(error = TRUE, draw_kernel(function(shape, dtype) 1, kernel = 1))
  # and as the bias initializer, with the bias's one-axis shape
  layer <- layer_conv_3d(filters = 3, kernel_size = 1, dtype = "float64",
    bias_initializer = function(shape, dtype) {
      seen <<- list(shape = shape, dtype = dtype)
      c(0.5, -1, 2)
    })
  y <- layer(array(0, c(1, 2, 2, 2, 1)))
  expect_equal(seen$shape, 3)
  expect_identical(get_weights(layer)[[2]], c(0.5, -1, 2))
  expect_equal(y[1, 2, 2, 2, ], c(0.5, -1, 2))
})

test_that("float32 layers store float32-rounded weights", {
  set.seed(5)
  w <- draw_kernel("glorot_uniform", kernel = 1, dtype = "float32")
  rounded <- unlist(lapply(c(w), function(v) readBin(writeBin(v, raw(), size = 4), "double", size = 4)))
  expect_identical(c(w), rounded)
})

test_that("initializers print their Keras arguments", {
  expect_snapshot({
    initializer_he_normal()
    initializer_variance_scaling(2, "fan_out", "uniform", seed = 3)
    initializer_random_uniform()
  })
})
