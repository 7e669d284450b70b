#' Transposed 3D convolution layer (sometimes called deconvolution)
#'
#' The transformation opposite to a convolution: from something shaped like
#' the output of some convolution to something shaped like its input, with a
#' connectivity pattern compatible with that convolution. It upsamples a
#' volume by its `strides` (the decoder half of a U-Net or V-Net). The
#' arguments, defaults and semantics are those of Keras's
#' `layer_conv_3d_transpose()` (`dilation_rate` as documented there, which
#' Keras 2 does not apply: see below); layers compose as [layer_conv_3d()]
#' does (see its Composition section).
#'
#' @section Shapes and arithmetic:
#' Input `(batch, d, h, w, channels)` (`"channels_last"`) or
#' `(batch, channels, d, h, w)` (`"channels_first"`). The kernel is
#' `(kd, kh, kw, filters, channels)`: Keras's order, output channels before
#' input channels. Each output length, with `k_eff = (k - 1) * dilation + 1`
#' (Keras's `deconv_output_length()`): without `output_padding`, `n * stride`
#' for `"same"` and `n * stride + max(k_eff - stride, 0)` for `"valid"`; with
#' it, `(n - 1) * stride + k_eff - 2 * pad + output_padding`, where `pad` is
#' `k_eff %/% 2` for `"same"` and 0 for `"valid"`.
#'
#' The output is the transpose of a convolution (the gradient of
#' [layer_conv_3d()] with the same kernel, strides, dilation and padding,
#' whose input has the output's shape) applied to the input, then the bias and
#' the activation: as TensorFlow's `conv3d_transpose`, 'same' padding splits
#' that convolution's padding with the odd extra at the end. An
#' `output_padding` of 0 with `"same"` padding and an even kernel size gives
#' an output that convolution cannot map back to the input (TensorFlow
#' rejects it when the layer is called); here it is an error when the layer is
#' built. The work runs in the C core's input-gradient kernels.
#'
#' `dilation_rate` dilates the kernel as in [layer_conv_3d()], in the output
#' lengths too (as in Keras 3 and PyTorch; Keras 2 accepts it but computes
#' without dilation); strides > 1 cannot be combined with it. `get_config()`
#' reports it, and no `groups` (not an argument here).
#'
#' @inheritParams layer_conv_3d
#' @param filters Integer, the dimensionality of the output space (the number of
#'   output channels).
#' @param kernel_size An integer or vector of 3 integers: depth, height and width
#'   of the window. A single integer is used for all three axes.
#' @param strides An integer or vector of 3 integers: the upsampling factor along
#'   each spatial axis (the strides of the convolution this layer transposes).
#' @param padding One of `"valid"` or `"same"` (case-insensitive); see Shapes
#'   and arithmetic.
#' @param output_padding `NULL` (the lengths above), or an integer or vector of
#'   3 integers, each at least 0 and smaller than its stride: the extra length
#'   along each axis.
#' @param weights Initial weights: `list(kernel, bias)` (or `list(kernel)` when
#'   `use_bias = FALSE`), the kernel of dim `(kd, kh, kw, filters, channels)`.
#' @param name A unique name for the layer; `NULL` gives `conv3d_transpose`,
#'   `conv3d_transpose_1`, ...
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family convolutional layers
#' @export
#' @examples
#' layer <- layer_conv_3d_transpose(filters = 2, kernel_size = 2, strides = 2)
#' x <- array(rnorm(4 * 4 * 4 * 3), c(1, 4, 4, 4, 3))
#' dim(layer(x)) # 1 8 8 8 2
#' dim(get_weights(layer)[[1]]) # 2 2 2 2 3
#'
#' # the decoder step of a U-Net
#' input <- layer_input(shape = c(8, 8, 8, 16))
#' output <- input |>
#'   layer_conv_3d_transpose(8, 3, strides = 2, padding = "same", activation = "relu")
#' output$shape
layer_conv_3d_transpose <- function(object, filters, kernel_size, strides = c(1L, 1L, 1L),
                                    padding = "valid", output_padding = NULL,
                                    data_format = NULL, dilation_rate = c(1L, 1L, 1L),
                                    activation = NULL, use_bias = TRUE,
                                    kernel_initializer = "glorot_uniform",
                                    bias_initializer = "zeros", kernel_regularizer = NULL,
                                    bias_regularizer = NULL, activity_regularizer = NULL,
                                    kernel_constraint = NULL, bias_constraint = NULL,
                                    input_shape = NULL, batch_input_shape = NULL,
                                    batch_size = NULL, dtype = NULL, name = NULL,
                                    trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  check_conv_required(object, missing(filters), missing(kernel_size))
  config <- conv3d_config(
    filters = filters, kernel_size = kernel_size, strides = strides, padding = padding,
    data_format = data_format %||% image_data_format(), dilation_rate = dilation_rate,
    use_bias = use_bias, dtype = dtype %||% floatx(), transpose = TRUE,
    output_padding = output_padding
  )
  made <- make_layer(object, "Conv3DTranspose", config, conv3d_transpose_methods, "filters",
    input_shape, batch_input_shape, batch_size, config$dtype, name, trainable, weights,
    dtype_checked = TRUE)
  set_weight_options(layer_self(made$layer), activation, kernel_initializer, bias_initializer,
    kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint)
  compose_layer(made$layer, made$object)
}

# The convolution the layer transposes, as a layer_conv_3d() config: from the
# layer's output (`filters` channels) to its input (`built_channels`
# filters), without bias.
adjoint_config <- function(self) {
  cfg <- self$config
  cfg$output_padding <- NULL
  cfg$filters <- as.integer(self$built_channels)
  cfg$use_bias <- FALSE
  cfg
}

conv3d_transpose_methods <- c(
  conv3d_methods[c("build", "output_shape", "store_weight")],
  list(
    weight_names = c("kernel", "bias"),
    spec = function(self, input_shape) {
      .Call(ffi_conv3d_transpose_spec, self$config, as.numeric(input_shape),
        self$built_channels)
    },
    check_weights = function(self, weights) {
      .Call(ffi_conv3d_transpose_check_weights, self$config, built_input_shape(self), weights)
    },
    call = function(self, x) {
      y <- .Call(ffi_conv3d_transpose, self$config, x, unname(self$weights),
        self$built_channels, self$weight_cache)
      apply_activation(y, self$activation, self$dtype)
    },
    backward = function(self, x, dy, input) conv3d_transpose_backward(self, x, dy, input)
  )
)

# The layer is y = act(t(A) x + b) for the convolution A (adjoint_config()):
# with dz the gradient at the pre-activation, the input's gradient is A dz (a
# forward convolution), the kernel's is that of A with input dz and output
# gradient x, the bias's dz summed over all but the channel axis.
conv3d_transpose_backward <- function(self, x, dy, input) {
  linear <- self$activation$code == 0L && is.null(self$activation$fn)
  z <- if (!linear) {
    .Call(ffi_conv3d_transpose, self$config, x, unname(self$weights),
      self$built_channels, self$weight_cache)
  }
  dims <- self$spec(self, dim(x))$output_shape
  dz <- activation_backward(z, dy, self$activation, self$name, dims)
  cfg <- adjoint_config(self)
  kernel <- list(self$weights$kernel)
  filters <- self$config$filters
  g <- .Call(ffi_conv3d_gradients, cfg, dz, kernel, 0L, filters, NULL, x, FALSE, TRUE, NULL)
  grads <- list(g$kernel)
  if (self$config$use_bias) {
    # sums over all but the channel axis, on dz in place (no copy)
    per_channel <- if (self$config$data_format == "channels_last") {
      colSums(dz, dims = 4L)
    } else { # (batch, filters, d, h, w)
      colSums(rowSums(dz, dims = 2L))
    }
    grads[[2]] <- round_to_dtype(per_channel, self$dtype)
  }
  dx <- if (input) .Call(ffi_conv3d_forward, cfg, dz, kernel, 0L, filters, self$weight_cache)
  list(input = dx, weights = grads)
}
