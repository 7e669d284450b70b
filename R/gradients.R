#' Gradients of a convolution layer
#'
#' For custom training loops and gradient checks: given an input `x` and the
#' gradient `dy` of a loss with respect to the layer's output
#' `y = activation(conv(x, kernel) + bias)`, returns the gradients of that loss
#' with respect to the input, the kernel and the bias. The activation's
#' derivative is applied in C (softmax along the output's last axis, as in the
#' forward pass); an activation given as an R function cannot be differentiated
#' here. The work is done in C, threaded, and is bit-identical for any thread
#' count: the kernel gradient is a GEMM over output positions on the tuned
#' micro-kernels (direct loops for groups of fewer than 8 filters), and the input
#' gradient of a stride-1 layer a forward convolution of the output gradient with
#' the flipped kernel, both in the layer's precision; strided input gradients run
#' direct loops in double precision. A float32 layer's gradients are float32
#' values.
#'
#' @param layer A layer made by [layer_conv_3d()]; built from `x` if needed.
#' @param x The input array, in the layer's data format.
#' @param dy The gradient with respect to the layer's output: an array of the
#'   output's dim.
#' @param input Whether to compute the input gradient (not needed for a first
#'   layer).
#' @return A list with `input` (an array like `x`, or `NULL`), `kernel` (like the
#'   kernel, `(kd, kh, kw, C/groups, filters)`) and `bias` (length `filters`, or
#'   `NULL` without bias).
#' @export
#' @examples
#' layer <- layer_conv_3d(filters = 2, kernel_size = 3, activation = "tanh",
#'   dtype = "float64")
#' x <- array(rnorm(5^3), c(1, 5, 5, 5, 1))
#' y <- layer(x)
#' # the gradient of sum(y^2) / 2
#' g <- conv3d_gradients(layer, x, dy = y)
#' str(g)
conv3d_gradients <- function(layer, x, dy, input = TRUE) {
  if (!inherits(layer, "conv3d_layer_conv3d")) {
    conv3d_abort(sprintf("`layer` must be a layer made by layer_conv_3d(), not %s.",
      format_value(layer)))
  }
  self <- layer_self(layer)
  if (!is.null(self$activation$fn)) {
    conv3d_abort(sprintf(
      "Layer \"%s\" has an R function as activation, which conv3d_gradients() cannot differentiate; use a named activation.",
      self$name))
  }
  input <- check_flag(input, "input")
  if (is.array(x)) layer_ensure_built(self, dim(x))
  cfg <- self$config
  # the kernel gradient runs in C (a GEMM over output positions, or direct loops
  # for groups of few filters); the input gradient of stride-1 layers is a
  # forward convolution
  fast_input <- input && all(cfg$strides == 1L)
  g <- .Call(ffi_conv3d_gradients, cfg, x, unname(self$weights), self$activation$code,
    self$built_channels, self$weight_cache, dy, input && !fast_input, TRUE)
  if (fast_input) {
    spec <- .Call(ffi_conv3d_spec, cfg, as.numeric(dim(x)), self$built_channels)
    to_last <- function(a) if (cfg$data_format == "channels_last") a else aperm(a, c(1, 3, 4, 5, 2))
    dx <- input_gradient(cfg, to_last(g$dz), self$weights[[1]], spec$pad_before,
      spec$pad_after)
    g$input <- if (cfg$data_format == "channels_last") dx else aperm(dx, c(1, 5, 2, 3, 4))
  }
  g[c("input", "kernel", "bias")]
}

# Zero-pads the spatial axes (2 to 4) of a channels_last array.
pad_spatial <- function(a, before, after) {
  if (all(before == 0) && all(after == 0)) return(a)
  d <- dim(a)
  out <- array(0, c(d[1], d[2:4] + before + after, d[5]))
  out[, before[1] + seq_len(d[2]), before[2] + seq_len(d[3]), before[3] + seq_len(d[4]), ] <- a
  out
}

# A convolution run by the forward kernels for a gradient: a named layer, so
# the automatic layer names are not consumed.
gradient_conv <- function(x, cfg, filters, kernel, strides, dilation, groups = 1L) {
  layer <- layer_conv_3d(filters = filters, kernel_size = dim(kernel)[1:3], strides = strides,
    dilation_rate = dilation, groups = groups, padding = "valid", use_bias = FALSE,
    data_format = "channels_last", dtype = cfg$dtype, name = "conv3d_gradient",
    weights = list(kernel))
  layer(x)
}

# Stride 1: dx is the output gradient, padded so every input position sees all
# its taps, convolved with the kernel flipped in space and transposed within
# each group ((kd, kh, kw, filters per group, channels)).
input_gradient <- function(cfg, dz, kernel, pad_before, pad_after) {
  k <- cfg$kernel_size
  d <- cfg$dilation_rate
  reach <- (k - 1) * d
  dz_pad <- pad_spatial(dz, reach - pad_before, reach - pad_after)
  kd <- dim(kernel)
  groups <- cfg$groups
  flipped <- kernel[rev(seq_len(k[1])), rev(seq_len(k[2])), rev(seq_len(k[3])), , , drop = FALSE]
  fg <- kd[5] / groups
  w <- array(flipped, c(kd[1:4], fg, groups))        # [.., c, k, g]
  w <- aperm(w, c(1, 2, 3, 5, 4, 6))                 # [.., k, c, g]
  w <- array(w, c(kd[1:3], fg, kd[4] * groups))      # [.., k, g * CG + c]
  gradient_conv(dz_pad, cfg, kd[4] * groups, w, strides = 1L, dilation = d, groups = groups)
}
