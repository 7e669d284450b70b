naive_norms <- function(w, axis) {
  # norms over 0-based `axis`, broadcast back by explicit loops over the kept cells
  d <- dim(w)
  keep <- setdiff(seq_along(d), axis + 1)
  out <- array(0, d)
  idx <- as.matrix(expand.grid(lapply(d, seq_len)))
  for (r in seq_len(nrow(idx))) {
    same <- apply(idx[, keep, drop = FALSE], 1, function(v) all(v == idx[r, keep]))
    out[idx[r, , drop = FALSE]] <- sqrt(sum(w[idx[same, , drop = FALSE]]^2))
  }
  out
}

test_that("constraints follow Keras's formulas with 0-based axes", {
  set.seed(1)
  w <- array(rnorm(2 * 3 * 2 * 2 * 3), c(2, 3, 2, 2, 3))
  eps <- 1e-7
  for (axis in list(0, c(0, 1, 2, 3), 4, c(1, 3))) {
    n <- naive_norms(w, axis)
    expect_equal(constraint_maxnorm(1.5, axis = axis)(w), w * pmin(n, 1.5) / (eps + n),
      info = paste(axis, collapse = ","))
    expect_equal(constraint_unitnorm(axis = axis)(w), w / (eps + n))
    expect_equal(constraint_minmaxnorm(0.5, 1, rate = 0.7, axis = axis)(w),
      w * (0.7 * pmin(pmax(n, 0.5), 1) + 0.3 * n) / (eps + n))
  }
  expect_equal(constraint_nonneg()(w), array(pmax(w, 0), dim(w)))
  expect_equal(constraint_maxnorm(1, axis = -1)(w), constraint_maxnorm(1, axis = 4)(w))
  bias <- c(3, 4)
  expect_equal(constraint_unitnorm()(bias), bias / (eps + 5))
  expect_snapshot(error = TRUE, {
    constraint_maxnorm(axis = 0.5)
    constraint_maxnorm(axis = 5)(w)
    constraint_maxnorm(max_value = -1)
  })
})

test_that("constraints are stored on the layer, not applied at initialisation", {
  con <- constraint_maxnorm(0.001, axis = c(0, 1, 2, 3))
  layer <- layer_conv_3d(filters = 2, kernel_size = 3, kernel_constraint = con,
    bias_constraint = "non_neg", kernel_initializer = "ones")
  expect_identical(layer$kernel_constraint, con)
  expect_s3_class(layer$bias_constraint, "conv3d_constraint")
  layer(array(0, c(1, 3, 3, 3, 1)))
  expect_true(all(get_weights(layer)[[1]] == 1))
  constrained <- layer$kernel_constraint(get_weights(layer)[[1]])
  expect_equal(sqrt(sum(constrained[, , , , 1]^2)), 0.001, tolerance = 1e-6)
})
