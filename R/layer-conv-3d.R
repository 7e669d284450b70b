#' 3D convolution layer (e.g. spatial convolution over volumes)
#'
#' Creates a convolution kernel that is convolved with the layer input to
#' produce a tensor of outputs, with the arguments, defaults and semantics of
#' Keras's `layer_conv_3d()`. If `use_bias` is `TRUE` a bias vector is added;
#' if `activation` is not `NULL` it is applied to the outputs. The work is done
#' by a multi-threaded C core (see [conv3d_threads()]).
#'
#' @section Composition:
#' `object` decides what is returned, as in Keras:
#' * missing or `NULL`: the layer. A layer is callable: `layer(x)`.
#' * a sequential model ([keras_model_sequential()]): the layer is added to the
#'   model in place and the model is returned invisibly, so
#'   `model |> layer_conv_3d(8, 3)` needs no reassignment.
#' * a symbolic tensor from [layer_input()]: the symbolic output, its shape
#'   inferred (`out$shape`), for [keras_model()].
#' * an R array: the layer is built from the array's shape and applied; the
#'   result is an R array (double; values rounded to float32 when `dtype` is
#'   `"float32"`).
#'
#' @section Shapes and arithmetic:
#' Input `(batch, d, h, w, channels)` for `"channels_last"` or
#' `(batch, channels, d, h, w)` for `"channels_first"`, with R's indexing
#' (`x[n, d, h, w, c]`). The kernel is `(kd, kh, kw, channels / groups, filters)`
#' for both formats. Output lengths, with `k_eff = (k - 1) * dilation + 1`:
#' `"valid"` gives `floor((n - k_eff) / stride) + 1`, `"same"` gives
#' `ceil(n / stride)` with total zero padding
#' `max(0, (out - 1) * stride + k_eff - n)`, of which `floor(P / 2)` goes before
#' and the rest (the odd extra) after, as in Keras.
#'
#' Layers with unit strides, one group, at least 16 channels (whole vectors of
#' the kernel tier) and 16 filters, a 3x3x3 kernel (any dilation) or an odd
#' one of up to 7 taps per axis (no dilation), at least 2 outputs along every
#' axis, and transformed weights and per-thread scratch of at most 16 MB each
#' (a 512 x 512 float64 layer stays direct) are computed with
#' Winograd's F(2x2x2, 3x3x3) algorithm, larger kernels as sums of 3x3x3
#' ones: 3.4 times fewer multiplications for 3x3x3, 1.95 for 5x5x5. Its
#' results differ from the direct sums only in rounding: in float32, on a
#' 128-channel layer, its root-mean-square difference from a float64 result
#' was 4.4e-7 against the direct sums' 9.5e-7.
#'
#' Layers of up to 8 channels per group (not depthwise, and with at least
#' half a register tile of filters per group) whose outputs along depth fill
#' at least one vector of the kernel tier, with at least 64 multiply-adds per
#' output (taps times channels per group), more undilated taps along height
#' than their stride there and at most 4 MB of transformed input per thread,
#' are computed with one-dimensional Winograd transforms along height:
#' F(4, r) (or F(2, r)) for each stride phase of those taps, so that a
#' 7 x 7 x 7 kernel of stride 2 does 13 multiplications per 4 outputs along
#' height where the direct sums do 28. These results too differ from the
#' direct sums only in rounding: in float32 their largest difference from a
#' float64 reference, relative to its largest output, was 0.5-1.2e-6 on
#' four layers, the direct sums' 0.5-0.7e-6.
#'
#' On either Winograd path, an input or kernel holding NaN or an infinite
#' value is computed with the direct sums instead (the transforms would mix
#' it into every output of a tile, and make an infinite sum NaN), so that
#' such values reach exactly the outputs IEEE arithmetic gives them to.
#'
#' @param object What to compose the layer with: missing/`NULL`, a sequential
#'   model, a tensor from [layer_input()] or an R array (see Composition).
#' @param filters Integer, the dimensionality of the output space (the number of
#'   output filters in the convolution).
#' @param kernel_size An integer or vector of 3 integers: depth, height and width
#'   of the 3D convolution window. A single integer is used for all three axes.
#' @param strides An integer or vector of 3 integers: the strides of the
#'   convolution along each spatial axis. Strides > 1 cannot be combined with
#'   `dilation_rate` > 1.
#' @param padding One of `"valid"` or `"same"` (case-insensitive). `"valid"`
#'   means no padding; `"same"` pads with zeros so that the output has
#'   `ceil(n / stride)` elements per axis.
#' @param data_format `"channels_last"` or `"channels_first"`; `NULL` takes
#'   [image_data_format()].
#' @param dilation_rate An integer or vector of 3 integers: the dilation rate of
#'   the convolution.
#' @param groups A positive integer: the number of groups the input channels are
#'   split into. Each group is convolved with its own `filters / groups` filters
#'   and the outputs are concatenated along the channel axis. Both `filters` and
#'   the input channel count must be divisible by `groups`.
#' @param activation Activation function: `NULL` or `"linear"` (identity), a name
#'   (`"relu"`, `"sigmoid"`, `"tanh"`, `"softmax"` (over the last axis of the
#'   output, as Keras does, also under channels_first), `"elu"`, `"selu"`,
#'   `"softplus"`, `"softsign"`, `"swish"`/`"silu"`, `"gelu"`, `"exponential"`,
#'   `"hard_sigmoid"`, `"relu6"`, `"leaky_relu"`, `"mish"`), or an R function of
#'   one array. Named activations run in C right after the bias.
#' @param use_bias Logical, whether the layer uses a bias vector.
#' @param kernel_initializer,bias_initializer Initializers for the kernel and the
#'   bias: a name, an [initializers] object or an R `function(shape, dtype)`.
#' @param kernel_regularizer,bias_regularizer,activity_regularizer
#'   [regularizers] for the kernel, the bias and the output, or `NULL`. Their
#'   current penalties are listed by `layer$losses`.
#' @param kernel_constraint,bias_constraint [constraints] applied to the weights
#'   after each optimizer update, or `NULL`. Stored on the layer
#'   (`layer$kernel_constraint`).
#' @param input_shape Shape of the input without the batch axis, e.g.
#'   `c(32, 32, 32, 1)`; `NA` means any length. For the first layer of a
#'   sequential model this builds the model at once.
#' @param batch_input_shape Shape including the batch axis; wins over
#'   `input_shape`.
#' @param batch_size Fixed batch size used with `input_shape`.
#' @param dtype `"float32"` (single precision arithmetic) or `"float64"`;
#'   `NULL` takes [floatx()].
#' @param name A unique name for the layer; `NULL` gives `conv3d`, `conv3d_1`, ...
#' @param trainable Whether the weights are updated by training; `NULL` is `TRUE`.
#' @param weights Initial weights: `list(kernel, bias)` (or `list(kernel)` when
#'   `use_bias = FALSE`), checked against the layer's shapes when it is built.
#'
#' @return Depends on `object`, see Composition.
#' @family convolutional layers
#' @export
#' @examples
#' # a layer, then applied to an R array
#' layer <- layer_conv_3d(filters = 4, kernel_size = 3, activation = "relu")
#' x <- array(rnorm(2 * 8 * 8 * 8 * 1), dim = c(2, 8, 8, 8, 1))
#' dim(layer(x))
#'
#' # added to a sequential model
#' model <- keras_model_sequential(name = "volumes")
#' model |>
#'   layer_conv_3d(8, 3, padding = "same", input_shape = c(16, 16, 16, 1)) |>
#'   layer_conv_3d(4, c(1, 3, 3), strides = 2)
#' model
#'
#' # functional
#' input <- layer_input(shape = c(NA, NA, NA, 3))
#' output <- input |> layer_conv_3d(6, 3, groups = 3, dilation_rate = 2)
#' output$shape
layer_conv_3d <- function(object, filters, kernel_size, strides = c(1L, 1L, 1L),
                          padding = "valid", data_format = NULL,
                          dilation_rate = c(1L, 1L, 1L), groups = 1L, activation = NULL,
                          use_bias = TRUE, kernel_initializer = "glorot_uniform",
                          bias_initializer = "zeros", kernel_regularizer = NULL,
                          bias_regularizer = NULL, activity_regularizer = NULL,
                          kernel_constraint = NULL, bias_constraint = NULL,
                          input_shape = NULL, batch_input_shape = NULL, batch_size = NULL,
                          dtype = NULL, name = NULL, trainable = NULL, weights = NULL) {
  # `object` first, so automatic names follow model order in a pipe
  object <- if (missing(object)) NULL else object
  check_conv_required(object, missing(filters), missing(kernel_size))
  config <- conv3d_config(
    filters = filters, kernel_size = kernel_size, strides = strides, padding = padding,
    data_format = data_format %||% image_data_format(), dilation_rate = dilation_rate,
    groups = groups, use_bias = use_bias, dtype = dtype %||% floatx()
  )
  made <- make_layer(object, "Conv3D", config, conv3d_methods, "filters", input_shape,
    batch_input_shape, batch_size, config$dtype, name, trainable, weights, dtype_checked = TRUE)
  set_weight_options(layer_self(made$layer), activation, kernel_initializer, bias_initializer,
    kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint)
  compose_layer(made$layer, made$object)
}

# What both convolution layers check first: a number as `object` is a
# misplaced `filters`; `filters` and `kernel_size` have no defaults.
check_conv_required <- function(object, filters_missing, kernel_size_missing) {
  if (is.numeric(object) && length(object) == 1L && is.null(dim(object))) {
    compose_layer(NULL, object) # errors, suggesting `filters =`
  }
  if (filters_missing) conv3d_abort("`filters` is missing: give the number of output filters.")
  if (kernel_size_missing) {
    conv3d_abort("`kernel_size` is missing: give 1 or 3 window lengths.")
  }
}

# The one normalising helper of both convolution layers: coerces types, then
# C validates everything (src/validate.c) so a bad layer fails at creation, as
# in Keras. A transposed layer (`transpose`) has one group and an
# output_padding (NULL: Keras infers the lengths).
conv3d_config <- function(filters, kernel_size, strides, padding, data_format,
                          dilation_rate, groups = 1L, use_bias, dtype, transpose = FALSE,
                          output_padding = NULL) {
  config <- list(
    filters = as_number(filters), kernel_size = as_number(kernel_size),
    strides = as_number(strides), padding = as_lower_string(padding),
    data_format = as_lower_string(data_format), dilation_rate = as_number(dilation_rate),
    groups = as_number(groups), use_bias = use_bias, dtype = as_lower_string(dtype)
  )
  if (transpose) { # one group, not an argument; an output_padding (NULL reported too)
    config$groups <- NULL
    config["output_padding"] <- list(if (!is.null(output_padding)) as_number(output_padding))
    .Call(ffi_conv3d_transpose_spec, config, NULL, NULL)
  } else {
    .Call(ffi_conv3d_spec, config, NULL, NULL)
    config$groups <- as.integer(config$groups)
  }
  # store the triples Keras reports in get_config()
  for (arg in c("kernel_size", "strides", "dilation_rate", "output_padding")) {
    if (!is.null(config[[arg]])) config[[arg]] <- as.integer(rep_len(config[[arg]], 3L))
  }
  config$filters <- as.integer(config$filters)
  config
}

# input_shape / batch_input_shape / batch_size -> one batch-first shape (NA
# unknown); `args`: what the caller calls the first two (layer_input():
# shape and batch_shape).
normalize_batch_input_shape <- function(input_shape, batch_input_shape, batch_size,
                                        args = c("input_shape", "batch_input_shape")) {
  to_shape <- function(x, arg) {
    if (is.list(x)) x <- vapply(x, function(v) if (is.null(v)) NA_real_ else as.numeric(v)[1], 0)
    numbers <- is.numeric(x) || is.logical(x) && all(is.na(x))
    # lengths are positive whole numbers, as Keras's dimensions are
    if (!numbers || any(!is.na(x) & (!is.finite(x) | x < 1 | x != round(x)))) {
      conv3d_abort(sprintf("`%s` must hold positive whole numbers (NA for any length), not %s.",
        arg, format_value(x)))
    }
    as.numeric(x)
  }
  if (!is.null(batch_input_shape)) return(to_shape(batch_input_shape, args[2]))
  if (is.null(input_shape)) return(NULL)
  if (!is.null(batch_size)) batch_size <- check_count(batch_size, "batch_size")
  c(batch_size %||% NA_real_, to_shape(input_shape, args[1]))
}

# A built convolution layer's input shape as far as its weights depend on it:
# the channels, the other lengths unknown.
built_input_shape <- function(self) {
  shape <- rep(NA_real_, 5)
  shape[if (self$config$data_format == "channels_last") 5L else 2L] <- self$built_channels
  shape
}

conv3d_methods <- list(
  weight_names = c("kernel", "bias"),
  backward = function(self, x, dy, input) conv3d_backward(self, x, dy, input),
  # in a training step a named activation's output is kept: the backward pass
  # takes the ReLU family's slopes from it (in C) instead of convolving x
  # again; the call is the plain one, activity penalty included
  train_call = function(self, x, trains = TRUE) {
    y <- self_apply_array(self, x)
    named <- self$activation$code != 0L && is.null(self$activation$fn)
    list(y = y, cache = if (named) y)
  },
  train_backward = function(self, x, dy, cache, input) conv3d_backward(self, x, dy, input, cache),
  spec = function(self, input_shape) {
    .Call(ffi_conv3d_spec, self$config, as.numeric(input_shape), self$built_channels)
  },
  build = function(self, input_shape) {
    spec <- self$spec(self, input_shape)
    self$built_channels <- spec$channels
    self$weight_names <- if (self$config$use_bias) c("kernel", "bias") else "kernel"
    kernel <- initialize_weight(self$kernel_initializer, spec$kernel_shape, self$dtype,
      "kernel_initializer")
    weights <- list(kernel = kernel)
    if (self$config$use_bias) {
      weights$bias <- as.vector(initialize_weight(self$bias_initializer, spec$bias_shape,
        self$dtype, "bias_initializer"))
    }
    self$weights <- lapply(weights, function(w) self$store_weight(self, w))
    self$weight_cache <- new.env(parent = emptyenv())
  },
  output_shape = function(self, input_shape) self$spec(self, input_shape)$output_shape,
  check_weights = function(self, weights) {
    .Call(ffi_conv3d_check_weights, self$config, built_input_shape(self), weights)
  },
  store_weight = function(self, w) store_weight_in_dtype(self, w),
  call = function(self, x) {
    y <- .Call(ffi_conv3d_forward, self$config, x, unname(self$weights), self$activation$code,
      self$built_channels, self$weight_cache)
    # a named activation ran in C; an R function runs here
    if (is.null(self$activation$fn)) y else apply_activation(y, self$activation, self$dtype)
  }
)
