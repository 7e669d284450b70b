# Backward passes of the layers: the gradients of a loss with respect to a
# layer's input and weights, given the gradient dy with respect to its output.
# The training loop (R/training.R) is built on these; conv3d_gradients() is the
# public form for convolutions.

# list(input = dx or NULL, weights = gradients in get_weights() order)
layer_backward <- function(layer, x, dy, input = TRUE) {
  self <- layer_self(layer)
  if (is.null(self$backward)) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) has no backward pass.", self$name, self$class_name))
  }
  if (is.array(x)) layer_ensure_built(self, dim(x))
  self$backward(self, x, dy, input)
}

# output: NULL, or the layer's output for x (its training call's cache)
conv3d_backward <- function(self, x, dy, input, output = NULL) {
  g <- conv3d_layer_gradients(self, x, dy, check_flag(input, "input"), output)
  list(input = g$input, weights = if (self$config$use_bias) list(g$kernel, g$bias) else list(g$kernel))
}

dense_backward <- function(self, x, dy, input) {
  d <- dim(x)
  k <- length(d)
  X <- matrix(as.numeric(x), ncol = d[k])
  Z <- X %*% self$weights$kernel
  if (self$config$use_bias) Z <- Z + rep(self$weights$bias, each = nrow(Z))
  dZ <- matrix(activation_backward(array(Z, c(d[-k], self$config$units)), dy, self$activation,
    self$name), ncol = self$config$units)
  grads <- list(crossprod(X, dZ))
  if (self$config$use_bias) grads[[2]] <- colSums(dZ)
  dx <- if (input) array(dZ %*% t(self$weights$kernel), d)
  list(input = dx, weights = lapply(grads, round_to_dtype, self$dtype))
}

# dims: the output's (z may be NULL for a linear activation, which needs only them).
activation_backward <- function(z, dy, activation, layer_name, dims = dim(z)) {
  if (!is.null(activation$fn)) {
    conv3d_abort(sprintf(
      "Layer \"%s\" has an R function as activation, which cannot be differentiated; use a named activation.",
      layer_name))
  }
  if (!is.numeric(dy) || !identical(as.numeric(dim(dy)), as.numeric(dims))) {
    conv3d_abort(sprintf("`dy` must be a numeric array of the layer's output dim %s, not %s.",
      format_shape(dims),
      if (is.numeric(dy) && !is.null(dim(dy))) sprintf("an array of dim %s", format_shape(dim(dy)))
      else format_value(dy)), class = "conv3d_error_shape")
  }
  if (activation$code == 0L) {
    # dy itself when it is already that array: a copy of a large one costs
    # fresh pages (400 ms for 67 MB on this project's VM)
    if (is.double(dy) && identical(dim(dy), as.integer(dims))) return(dy)
    return(array(as.numeric(dy), dims))
  }
  .Call(ffi_activation_backward, z, dy, activation$code)
}

activation_layer_backward <- function(self, x, dy, input) {
  list(input = activation_backward(layer_input_array(self, x), dy, self$activation, self$name),
    weights = list())
}

dropout_backward <- function(self, x, dy, input) {
  list(input = dy, weights = list()) # the identity at inference
}

flatten_backward <- function(self, x, dy, input) {
  d <- dim(x)
  r <- length(d)
  first <- self$config$data_format == "channels_first" && r > 2L
  dl <- if (first) d[c(1, 3:r, 2)] else d   # dims after the move to channels_last
  a <- row_major_reshape(array(as.numeric(dy), c(d[1], prod(d[-1]))), dl)
  list(input = if (first) aperm(a, c(1, r, 2:(r - 1))) else a, weights = list())
}

# The maxima are found among the inputs in the layer's precision, as
# TensorFlow finds them among float32 values.
pool_backward <- function(self, x, dy, input) {
  x <- layer_input_array(self, x)
  list(input = .Call(ffi_pool3d_backward, self$config, x, dy, self$average, NULL),
    weights = list())
}

# The max's gradient is split evenly over the voxels equal to the maximum
# (among the inputs in the layer's precision), as TensorFlow's reduce_max
# gradient does.
global_pool_backward <- function(self, x, dy, input) {
  x <- layer_input_array(self, x)
  d <- dim(x)
  last <- self$config$data_format == "channels_last"
  g <- as.numeric(dy) # (n, c) in column order for both layouts, kept axes or not
  n_values <- d[1] * d[if (last) 5L else 2L]
  if (length(g) != n_values) {
    conv3d_abort(sprintf("`dy` must hold %d values (samples x channels), not %d.",
      n_values, length(g)), class = "conv3d_error_shape")
  }
  list(input = .Call(ffi_global_pool3d_backward, x, g, last, self$average), weights = list())
}
