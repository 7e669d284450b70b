#' Gradients of a convolution layer
#'
#' For custom training loops and gradient checks: given an input `x` and the
#' gradient `dy` of a loss with respect to the layer's output
#' `y = activation(conv(x, kernel) + bias)`, returns the gradients of that loss
#' with respect to the input, the kernel and the bias. The activation's
#' derivative is applied in C (softmax along the output's last axis, as in the
#' forward pass); an activation given as an R function cannot be differentiated
#' here. The work is done in C, threaded, and is bit-identical for any thread
#' count, in the layer's precision: the kernel gradient is a GEMM over output
#' positions on the tuned micro-kernels, reading blocks of channels in place
#' from a padded copy of the input (depthwise layers: each channel's volume in
#' place under channels_last with unit stride along depth, otherwise vectors
#' across the channels; direct loops for other groups of few filters and few
#' channels);
#' the input gradient runs the forward kernels once per phase of the
#' strides, each phase of input positions being a stride-1 correlation of the
#' output gradient with its own taps of the flipped kernel (no zero-dilated
#' copy, no wasted work). A float32 layer's gradients are float32 values.
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
  input <- check_flag(input, "input")
  if (is.array(x)) layer_ensure_built(self, dim(x))
  conv3d_layer_gradients(self, x, dy, input)
}

# output: NULL, or the layer's output for x (a training step's), from which C
# takes the ReLU family's slopes instead of convolving x again.
conv3d_layer_gradients <- function(self, x, dy, input, output = NULL) {
  if (!is.null(self$activation$fn)) {
    conv3d_abort(sprintf(
      "Layer \"%s\" has an R function as activation, which conv3d_gradients() cannot differentiate; use a named activation.",
      self$name))
  }
  g <- .Call(ffi_conv3d_gradients, self$config, x, unname(self$weights),
    self$activation$code, self$built_channels, self$weight_cache, dy, input, TRUE, output)
  g[c("input", "kernel", "bias")]
}
