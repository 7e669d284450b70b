# Core layers a 3-D classifier needs after its convolutions: dense, flatten,
# dropout and activation. They compose like layer_conv_3d().

# The arguments every layer takes, as in Keras.
#' @keywords internal
#' @name layer-common
#' @param object What to compose the layer with: missing/`NULL` (the layer), a
#'   sequential model, a tensor from [layer_input()] or an R array, as for
#'   [layer_conv_3d()].
#' @param input_shape,batch_input_shape,batch_size Input shape for the first
#'   layer of a sequential model, as for [layer_conv_3d()].
#' @param dtype `"float32"` or `"float64"`; `NULL` takes [floatx()].
#' @param name A unique name; `NULL` gives an automatic one.
#' @param trainable Whether training updates the weights; `NULL` is `TRUE`.
#' @param weights Initial weights, checked when the layer is built.
NULL

# Builds a layer of `class_name` and composes it with `object` (evaluated by the
# caller first, so automatic names follow model order). `dtype` is checked here
# unless a C validator already did (`dtype_checked`).
make_layer <- function(object, class_name, config, methods, first_arg, input_shape = NULL,
                       batch_input_shape = NULL, batch_size = NULL, dtype = NULL, name = NULL,
                       trainable = NULL, weights = NULL, dtype_checked = FALSE) {
  if (is.numeric(object) && length(object) == 1L && is.null(dim(object))) {
    compose_layer(NULL, object, first_arg)
  }
  if (!dtype_checked) dtype <- check_dtype(dtype)
  if (!is.null(weights) && !is.list(weights)) {
    conv3d_abort(sprintf("`weights` must be NULL or a list of arrays, not %s.", format_value(weights)),
      class = "conv3d_error_weights")
  }
  layer <- new_layer(class_name, name, config, methods, trainable = trainable, dtype = dtype,
    batch_input_shape = normalize_batch_input_shape(input_shape, batch_input_shape, batch_size),
    weights = weights)
  list(layer = layer, object = object)
}

round_to_dtype <- function(x, dtype) if (dtype == "float32") .Call(ffi_round_f32, x) else x

# A layer's input as an array (a vector: of rank 1) in the layer's precision.
# A double array with no other attributes is taken as it is: a copy of a
# large one costs fresh pages.
layer_input_array <- function(self, x) {
  if (!is.numeric(x)) {
    conv3d_abort(sprintf("The input of layer \"%s\" must be numeric, not %s.", self$name,
      format_value(x)), class = "conv3d_error_shape")
  }
  if (!is.double(x) || !identical(names(attributes(x)), "dim")) {
    x <- array(as.numeric(x), dim(x) %||% length(x))
  }
  round_to_dtype(x, self$dtype)
}

# A weight as the layer stores it: doubles (with its dim), rounded to float32
# for a float32 layer.
store_weight_in_dtype <- function(self, w) {
  round_to_dtype(if (is.null(dim(w))) as.numeric(w) else array(as.numeric(w), dim(w)), self$dtype)
}

apply_activation <- function(y, activation, dtype) {
  if (!is.null(activation$fn)) { # a float32 layer gives float32 values, from R functions too
    out <- activation$fn(y)
    return(if (is.numeric(out)) round_to_dtype(out, dtype) else out)
  }
  if (activation$code == 0L) return(y)
  .Call(ffi_activation, y, activation$code, dtype == "float32")
}

# weights: a list of arrays named `names` (in order), each of the layer's
# built_dim (batch normalization's per-feature weights, PReLU's alpha).
check_built_dim_weights <- function(self, weights, names) {
  if (!is.list(weights) || length(weights) != length(names)) {
    conv3d_abort(sprintf("`weights` must be a list of %d array%s (%s), not %s.", length(names),
      if (length(names) == 1L) "" else "s", paste(names, collapse = ", "), format_value(weights)),
      class = "conv3d_error_weights")
  }
  for (i in seq_along(names)) {
    got <- weights[[i]]
    d <- dim(got) %||% length(got)
    if (!is.numeric(got) || !identical(as.numeric(d), as.numeric(self$built_dim))) {
      conv3d_abort(sprintf("The %s weight must be an array of dim %s, not %s.", names[i],
        format_shape(self$built_dim), format_value(got)), class = "conv3d_error_weights")
    }
  }
}

# The weights' dim an input shape asks for (`d`) must be the one the layer
# was built with; `what` names them in the message.
check_built_dim <- function(self, d, input_shape, what) {
  if (!is.null(self$built_dim) && !identical(as.numeric(d), as.numeric(self$built_dim))) {
    conv3d_abort(sprintf("The input of layer \"%s\" has shape %s, but the layer was built for %s of dim %s.",
      self$name, format_shape_tuple(input_shape), what, format_shape(self$built_dim)),
      class = "conv3d_error_shape")
  }
}

no_weights <- function(self, weights) {
  if (length(weights)) {
    conv3d_abort(sprintf("Layer \"%s\" has no weights, not a list of length %d.", self$name,
      length(weights)), class = "conv3d_error_weights")
  }
}

check_rank <- function(x, rank, what) {
  if (!is.numeric(x) || length(dim(x)) < rank) {
    conv3d_abort(sprintf("The input of %s must be a numeric array of rank %s, not %s.", what,
      if (rank == 2) "2 or more" else rank,
      if (is.numeric(x)) sprintf("an array with dim %s", format_shape(dim(x) %||% length(x)))
      else format_value(x)), class = "conv3d_error_shape")
  }
}

#' Densely-connected layer
#'
#' `output = activation(dot(input, kernel) + bias)` over the last axis of the
#' input, as Keras's `layer_dense()`. Computed in double precision with R's
#' matrix product, rounded to float32 for a float32 layer.
#'
#' @inheritParams layer-common
#' @param units Positive integer, the dimensionality of the output space.
#' @param activation,use_bias,kernel_initializer,bias_initializer As for
#'   [layer_conv_3d()].
#' @param kernel_regularizer,bias_regularizer,activity_regularizer,kernel_constraint,bias_constraint
#'   As for [layer_conv_3d()].
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family core layers
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(8, 8, 8, 1)) |>
#'   layer_conv_3d(4, 3, activation = "relu") |>
#'   layer_flatten() |>
#'   layer_dense(3, activation = "softmax")
#' model
#' rowSums(predict(model, array(rnorm(2 * 512), c(2, 8, 8, 8, 1))))
layer_dense <- function(object, units, activation = NULL, use_bias = TRUE,
                        kernel_initializer = "glorot_uniform", bias_initializer = "zeros",
                        kernel_regularizer = NULL, bias_regularizer = NULL,
                        activity_regularizer = NULL, kernel_constraint = NULL,
                        bias_constraint = NULL, input_shape = NULL, batch_input_shape = NULL,
                        batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                        weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (is.numeric(object) && length(object) == 1L && is.null(dim(object))) {
    compose_layer(NULL, object, "units")
  }
  if (missing(units)) conv3d_abort("`units` is missing: give the number of output units.")
  if (!is.numeric(units) || length(units) != 1L || !is.finite(units) || units < 1 ||
      units != round(units)) {
    conv3d_abort(sprintf("`units` must be a positive whole number, not %s.", format_value(units)))
  }
  made <- make_layer(object, "Dense", list(units = as.integer(units), use_bias = check_flag(use_bias,
    "use_bias")), dense_methods, "units", input_shape, batch_input_shape, batch_size, dtype, name,
    trainable, weights)
  self <- layer_self(made$layer)
  set_weight_options(self, activation, kernel_initializer, bias_initializer, kernel_regularizer,
    bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint)
  compose_layer(made$layer, made$object, "units")
}

dense_methods <- list(
  weight_names = c("kernel", "bias"),
  backward = function(self, x, dy, input) dense_backward(self, x, dy, input),
  input_units = function(self, input_shape) {
    last <- input_shape[length(input_shape)]
    if (length(input_shape) < 2L || is.na(last)) {
      conv3d_abort(sprintf(
        "The last axis of the input of layer \"%s\" must have a known length, not shape %s.",
        self$name, format_shape(input_shape)), class = "conv3d_error_shape")
    }
    last
  },
  build = function(self, input_shape) {
    n_in <- self$input_units(self, input_shape)
    self$built_channels <- n_in
    self$weight_names <- if (self$config$use_bias) c("kernel", "bias") else "kernel"
    weights <- list(kernel = initialize_weight(self$kernel_initializer,
      c(n_in, self$config$units), self$dtype, "kernel_initializer"))
    if (self$config$use_bias) {
      weights$bias <- as.vector(initialize_weight(self$bias_initializer, self$config$units,
        self$dtype, "bias_initializer"))
    }
    self$weights <- lapply(weights, round_to_dtype, self$dtype)
  },
  output_shape = function(self, input_shape) {
    n_in <- self$input_units(self, input_shape)
    if (!is.null(self$built_channels) && n_in != self$built_channels) {
      conv3d_abort(sprintf(
        "The input of layer \"%s\" has %s units on its last axis, but the layer was built for %s.",
        self$name, format(n_in), format(self$built_channels)), class = "conv3d_error_shape")
    }
    c(input_shape[-length(input_shape)], self$config$units)
  },
  check_weights = function(self, weights) {
    expected <- list(c(self$built_channels, self$config$units), self$config$units)
    n <- if (self$config$use_bias) 2L else 1L
    if (length(weights) != n) {
      conv3d_abort(sprintf("`weights` must be a list of %d arrays (%s), not a list of length %d.",
        n, if (n == 2L) "kernel, bias" else "kernel", length(weights)), class = "conv3d_error_weights")
    }
    for (i in seq_len(n)) {
      d <- dim(weights[[i]]) %||% length(weights[[i]])
      if (!is.numeric(weights[[i]]) || !identical(as.numeric(d), as.numeric(expected[[i]]))) {
        got <- weights[[i]]
        conv3d_abort(sprintf("The %s weight must be an array of dim %s, not %s.",
          c("kernel", "bias")[i], format_shape(expected[[i]]),
          if (!is.numeric(got)) format_value(got)
          else if (is.null(dim(got))) sprintf("a vector of length %d", length(got))
          else sprintf("an array of dim %s", format_shape(dim(got)))),
          class = "conv3d_error_weights")
      }
    }
  },
  store_weight = function(self, w) store_weight_in_dtype(self, w),
  call = function(self, x) {
    check_rank(x, 2, sprintf("layer \"%s\"", self$name))
    d <- dim(x)
    self$output_shape(self, c(NA, d[-1]))
    y <- matrix(as.numeric(x), ncol = d[length(d)]) %*% self$weights$kernel
    if (self$config$use_bias) y <- y + rep(self$weights$bias, each = nrow(y))
    y <- round_to_dtype(array(y, c(d[-length(d)], self$config$units)), self$dtype)
    apply_activation(y, self$activation, self$dtype)
  }
)

#' Flatten the input
#'
#' Flattens every axis but the batch one, in Keras's (row-major) order: for a
#' channels_last volume `(n, d, h, w, c)` the channel varies fastest. With
#' `data_format = "channels_first"` the input is first moved to channels_last,
#' as Keras does.
#'
#' @inheritParams layer-common
#' @param data_format `"channels_last"` or `"channels_first"`; `NULL` takes
#'   [image_data_format()].
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family core layers
#' @export
#' @examples
#' x <- array(1:24, c(1, 2, 3, 4, 1))
#' layer_flatten(x)[1, 1:6]
layer_flatten <- function(object, data_format = NULL, input_shape = NULL,
                          batch_input_shape = NULL, batch_size = NULL, dtype = NULL, name = NULL,
                          trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  made <- make_layer(object, "Flatten", list(data_format = normalize_data_format(data_format)),
    flatten_methods, "data_format", input_shape, batch_input_shape, batch_size, dtype, name,
    trainable, weights)
  compose_layer(made$layer, made$object, "data_format")
}

normalize_data_format <- function(data_format) {
  data_format <- data_format %||% image_data_format()
  if (!is.character(data_format) || length(data_format) != 1L ||
      !tolower(data_format) %in% c("channels_last", "channels_first")) {
    conv3d_abort(sprintf("`data_format` must be \"channels_last\" or \"channels_first\", not %s.",
      format_value(data_format)))
  }
  tolower(data_format)
}

no_weight_methods <- list(
  weight_names = character(),
  build = function(self, input_shape) NULL,
  check_weights = no_weights,
  store_weight = function(self, w) w
)

# x's samples (x: batch first) with their values in row-major order, given
# dims `to` (batch first) in row-major order: reverse the sample axes, refill
# in R's order, reverse back.
row_major_reshape <- function(x, to) {
  r <- length(dim(x))
  k <- length(to)
  flat <- if (r > 1L) aperm(x, c(1L, r:2L)) else x
  out <- array(flat, c(to[1], rev(to[-1])))
  if (k > 1L) aperm(out, c(1L, k:2L)) else out
}

flatten_methods <- c(no_weight_methods, list(
  backward = function(self, x, dy, input) flatten_backward(self, x, dy, input),
  output_shape = function(self, input_shape) c(input_shape[1], prod(input_shape[-1])),
  call = function(self, x) {
    check_rank(x, 2, sprintf("layer \"%s\"", self$name))
    r <- length(dim(x))
    if (self$config$data_format == "channels_first" && r > 2L) x <- aperm(x, c(1, 3:r, 2))
    # Keras's row-major order, in its dtype, as Keras casts
    round_to_dtype(row_major_reshape(x, c(dim(x)[1], prod(dim(x)[-1]))), self$dtype)
  }
))

#' Dropout
#'
#' Keras's `layer_dropout()`: during training it sets a fraction `rate` of the
#' inputs to zero and scales the rest by `1 / (1 - rate)` (in [fit()], with R's
#' random numbers); at inference ([predict()], [evaluate()], calling the layer
#' or model) it passes its input through unchanged.
#'
#' @inheritParams layer-common
#' @param rate Fraction of the inputs to drop, in `[0, 1)`.
#' @param noise_shape `NULL` or the shape of the binary dropout mask.
#' @param seed `NULL` (the masks come from R's random numbers, which
#'   `set.seed()` fixes) or a whole number: the layer then draws its masks
#'   from a stream of its own seeded with it, leaving R's random numbers
#'   untouched.
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family core layers
#' @export
#' @examples
#' x <- array(1:8, c(1, 2, 2, 2, 1))
#' identical(layer_dropout(x, rate = 0.5), x + 0) # the identity (as doubles)
layer_dropout <- function(object, rate, noise_shape = NULL, seed = NULL, input_shape = NULL,
                          batch_input_shape = NULL, batch_size = NULL, dtype = NULL, name = NULL,
                          trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (missing(rate)) {
    if (is.numeric(object) && length(object) == 1L && !is.array(object)) { # layer_dropout(0.5)
      conv3d_abort(sprintf("`object` is the number %s; did you mean `rate = %s`?",
        format_value(object), format_value(object)))
    }
    conv3d_abort("`rate` is missing: give the fraction of inputs to drop.")
  }
  rate <- check_number(rate, "rate", lower = 0, upper = 1)
  if (!is.null(noise_shape) && !is.numeric(noise_shape)) {
    conv3d_abort(sprintf("`noise_shape` must be NULL or a numeric vector, not %s.",
      format_value(noise_shape)))
  }
  seed <- check_seed(seed)
  made <- make_layer(object, "Dropout", list(rate = as.numeric(rate), noise_shape = noise_shape,
    seed = seed), dropout_methods, "rate", input_shape, batch_input_shape, batch_size, dtype,
    name, trainable, weights)
  compose_layer(made$layer, made$object, "rate")
}

#' Spatial 3-D dropout
#'
#' Keras's `layer_spatial_dropout_3d()`: during training it drops whole
#' channels (feature maps) of each sample, each with probability `rate`, and
#' scales the others by `1 / (1 - rate)` (in [fit()] and [train_on_batch()];
#' from R's random numbers, or from the layer's own stream when `seed` is
#' given); at inference it passes its input through unchanged. Neighbouring
#' voxels of a feature map are strongly correlated, so dropping single voxels
#' ([layer_dropout()]) regularises them little.
#'
#' @inheritParams layer_dropout
#' @param data_format `"channels_last"` or `"channels_first"`; `NULL` takes
#'   [image_data_format()].
#' @param seed As for [layer_dropout()].
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family core layers
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(8, 8, 8, 1)) |>
#'   layer_conv_3d(4, 3, activation = "relu") |>
#'   layer_spatial_dropout_3d(0.2)
layer_spatial_dropout_3d <- function(object, rate, data_format = NULL, seed = NULL,
                                     input_shape = NULL, batch_input_shape = NULL,
                                     batch_size = NULL, dtype = NULL, name = NULL,
                                     trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (missing(rate)) {
    if (is.numeric(object) && length(object) == 1L && !is.array(object)) {
      conv3d_abort(sprintf("`object` is the number %s; did you mean `rate = %s`?",
        format_value(object), format_value(object)))
    }
    conv3d_abort("`rate` is missing: give the fraction of channels to drop.")
  }
  rate <- check_number(rate, "rate", lower = 0, upper = 1)
  made <- make_layer(object, "SpatialDropout3D", list(rate = as.numeric(rate),
    data_format = normalize_data_format(data_format), seed = check_seed(seed)),
    spatial_dropout_methods, "rate", input_shape, batch_input_shape, batch_size, dtype, name,
    trainable, weights)
  compose_layer(made$layer, made$object, "rate")
}

# The training calls of the dropout layers (train_forward()): the input
# times a mask of their mask_shape(), which the gradient multiplies by too;
# a rate of 0 draws nothing.
dropout_training <- list(
  train_call = function(self, x, trains = TRUE) {
    if (self$config$rate == 0) return(list(y = self$call(self, x), cache = NULL))
    mask <- dropout_mask(self, x)
    list(y = round_to_dtype(x * mask, self$dtype), cache = mask)
  },
  train_backward = function(self, x, dy, cache, input) list(input = dy * cache, weights = list())
)

spatial_dropout_methods <- c(no_weight_methods, dropout_training, list(
  backward = function(self, x, dy, input) dropout_backward(self, x, dy, input),
  output_shape = function(self, input_shape) {
    check_volume_shape(self, input_shape)
    input_shape
  },
  mask_shape = function(self, d) { # one value per sample and channel
    self$output_shape(self, d)
    if (self$config$data_format == "channels_last") c(d[1], 1, 1, 1, d[5]) else c(d[1], d[2], 1, 1, 1)
  },
  call = function(self, x) {
    check_rank(x, 5, sprintf("layer \"%s\"", self$name))
    self$output_shape(self, dim(x)) # rank 5 exactly
    round_to_dtype(x, self$dtype) # the identity, in its dtype
  }
))

dropout_methods <- c(no_weight_methods, dropout_training, list(
  backward = function(self, x, dy, input) dropout_backward(self, x, dy, input),
  mask_shape = function(self, d) self$config$noise_shape, # NULL or NA: the input's length
  output_shape = function(self, input_shape) input_shape,
  call = function(self, x) round_to_dtype(x, self$dtype) # the identity, in its dtype
))

#' Apply an activation function
#'
#' @inheritParams layer-common
#' @param activation A name, as for [layer_conv_3d()] (softmax over the last
#'   axis), or an R function of one array.
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family core layers
#' @export
#' @examples
#' layer_activation(array(c(-1, 0, 2), c(1, 3)), "relu")
layer_activation <- function(object, activation, input_shape = NULL, batch_input_shape = NULL,
                             batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                             weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (missing(activation)) conv3d_abort("`activation` is missing: give a name or a function.")
  act <- normalize_activation(activation)
  made <- make_layer(object, "Activation", list(activation = act$name), activation_methods,
    "activation", input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
  self <- layer_self(made$layer)
  self$activation <- act
  compose_layer(made$layer, made$object, "activation")
}

activation_methods <- c(no_weight_methods, list(
  backward = function(self, x, dy, input) activation_layer_backward(self, x, dy, input),
  output_shape = function(self, input_shape) input_shape,
  call = function(self, x) apply_activation(layer_input_array(self, x), self$activation, self$dtype)
))
