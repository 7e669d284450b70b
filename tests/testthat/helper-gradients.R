# Finite-difference check of a layer's input gradients for L = sum(dy * layer(x)).
expect_input_gradients <- function(layer, xs, merge = TRUE) {
  set.seed(73)
  y <- conv3d:::layer_apply_array(layer, if (merge) xs else xs[[1]])
  dy <- array(rnorm(length(y)), dim(y))
  g <- conv3d:::layer_backward(layer, if (merge) xs else xs[[1]], dy)$input
  if (!merge) g <- list(g)
  loss <- function(xs) sum(dy * conv3d:::layer_apply_array(layer, if (merge) xs else xs[[1]]))
  eps <- 1e-6
  for (j in seq_along(xs)) for (i in seq_along(xs[[j]])) {
    up <- xs
    down <- xs
    up[[j]][i] <- up[[j]][i] + eps
    down[[j]][i] <- down[[j]][i] - eps
    numeric <- (loss(up) - loss(down)) / (2 * eps)
    # relative to the gradient, or absolute when it is small (rounding of the
    # loss sums is about 1e-9 here)
    expect_lt(abs(g[[j]][i] - numeric), 1e-7 * max(1, abs(numeric)), label = paste(j, i))
  }
}
