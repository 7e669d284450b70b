# Keras's activation layers with settings (ReLU, LeakyReLU, ELU,
# ThresholdedReLU, Softmax along chosen axes) and with weights (PReLU): element
# by element in R, in the layer's precision, each with its backward pass.

#' Activation layers with settings
#'
#' Keras's activation layers, applied element by element (softmax along
#' `axis`), composing like [layer_conv_3d()]:
#' * `layer_activation_relu()`: `max_value` where `x >= max_value`, `x` where
#'   `threshold < x < max_value`, `negative_slope * (x - threshold)` otherwise
#'   (Keras's `ReLU`);
#' * `layer_activation_leaky_relu()`: `x` for `x > 0`, `alpha * x` otherwise
#'   (`LeakyReLU`; its `alpha` defaults to 0.3, where the `"leaky_relu"`
#'   activation uses 0.2);
#' * `layer_activation_elu()`: `x` for `x > 0`, `alpha * (exp(x) - 1)`
#'   otherwise (`ELU`);
#' * `layer_activation_thresholded_relu()`: `x` for `x > theta`, 0 otherwise
#'   (`ThresholdedReLU`);
#' * `layer_activation_softmax()`: `exp(x) / sum(exp(x))` over `axis` (`Softmax`);
#' * `layer_activation_selu()`: `layer_activation(object, "selu")`, as in R keras.
#'
#' A float32 layer computes as TensorFlow does in float32: its settings are
#' float32 numbers, and each step's result is rounded to float32 (softmax: its
#' result). Gradients are TensorFlow's, at the kinks too: a ReLU's slope is 0
#' at its threshold and 1 at `max_value` (0 at 6 for the ReLU6 that
#' `max_value = 6` selects), a leaky ReLU's (or a ReLU's with only a
#' `negative_slope`) is `alpha` at 0, an ELU's `alpha` at 0.
#'
#' @inheritParams layer-common
#' @param max_value `NULL` (no limit) or a number >= 0: the largest output.
#' @param negative_slope A number >= 0: the slope below the threshold.
#' @param threshold A number >= 0: where the unit turns on.
#' @param alpha The slope of the negative part (leaky ReLU: a number >= 0),
#'   or its scale (ELU: a number).
#' @param theta A number >= 0: the threshold of the thresholded ReLU.
#' @param axis The axis, or axes, the softmax normalises over, as R keras
#'   passes them to Keras: counted from 0 (the batch axis) or, when negative,
#'   from the end (-1, the default: the last axis).
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family activation layers
#' @export
#' @examples
#' x <- array(c(-3, -1, 0, 1, 2, 7), c(1, 6))
#' layer_activation_relu(x, max_value = 6, negative_slope = 0.1, threshold = 0.5)
#' layer_activation_leaky_relu(x)
#' layer_activation_elu(x, alpha = 0.5)
#' layer_activation_thresholded_relu(x)
#' rowSums(layer_activation_softmax(x))
layer_activation_relu <- function(object, max_value = NULL, negative_slope = 0, threshold = 0,
                                  input_shape = NULL, batch_input_shape = NULL,
                                  batch_size = NULL, dtype = NULL, name = NULL,
                                  trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  config <- list(
    max_value = if (!is.null(max_value)) check_number(max_value, "max_value", lower = 0),
    negative_slope = check_number(negative_slope, "negative_slope", lower = 0),
    threshold = check_number(threshold, "threshold", lower = 0))
  config["max_value"] <- list(config$max_value) # NULL reported too, as Keras does
  elementwise_layer(object, "ReLU", config, relu_forward, relu_slope, layer_common_args())
}

# Keras's backend.relu(): max(x, 0) (x where above a threshold), clipped to
# max_value, less negative_slope * relu(threshold - x); r rounds each step to
# the layer's precision.
relu_forward <- function(cfg, x, r) {
  y <- ifelse(x > cfg$threshold, x, 0)
  if (!is.null(cfg$max_value)) y <- pmin(y, cfg$max_value)
  if (cfg$negative_slope != 0) {
    y <- r(y - r(cfg$negative_slope * pmax(r(cfg$threshold - x), 0)))
  }
  y
}
# Its slope as TensorFlow differentiates the ops backend.relu() picks:
# tf.nn.leaky_relu (alpha at 0) without a limit or threshold, tf.nn.relu6 (0
# at 6) for a limit of 6, else relu and clip_by_value (1 at the limit).
relu_slope <- function(cfg, x, r) {
  t <- cfg$threshold
  a <- cfg$negative_slope
  m <- cfg$max_value
  leaky <- a != 0 && is.null(m) && t == 0
  below_max <- if (is.null(m)) TRUE else if (m == 6 && t == 0 && !leaky) x < m else x <= m
  ifelse(x > t & below_max, 1, 0) + ifelse(x < t | (leaky & x == t), a, 0)
}

#' @rdname layer_activation_relu
#' @export
layer_activation_leaky_relu <- function(object, alpha = 0.3, input_shape = NULL,
                                        batch_input_shape = NULL, batch_size = NULL,
                                        dtype = NULL, name = NULL, trainable = NULL,
                                        weights = NULL) {
  elementwise_layer(if (missing(object)) NULL else object, "LeakyReLU",
    list(alpha = check_number(alpha, "alpha", lower = 0)),
    function(cfg, x, r) ifelse(x > 0, x, r(cfg$alpha * x)),
    function(cfg, x, r) ifelse(x > 0, 1, cfg$alpha), layer_common_args())
}

#' @rdname layer_activation_relu
#' @export
layer_activation_elu <- function(object, alpha = 1.0, input_shape = NULL,
                                 batch_input_shape = NULL, batch_size = NULL, dtype = NULL,
                                 name = NULL, trainable = NULL, weights = NULL) {
  elementwise_layer(if (missing(object)) NULL else object, "ELU",
    list(alpha = check_number(alpha, "alpha")),
    function(cfg, x, r) ifelse(x > 0, x, r(cfg$alpha * elu_negative(x, r))),
    # TensorFlow's EluGrad: its output plus 1 where that is below 0, else 1
    function(cfg, x, r) {
      e <- elu_negative(x, r)
      ifelse(x > 0, 1, cfg$alpha * ifelse(e < 0, e + 1, 1))
    }, layer_common_args())
}

# TensorFlow's elu below 0: exp(x) - 1, each step in the layer's precision
# (not expm1: a float32 x within 6e-8 of 0 gives 0).
elu_negative <- function(x, r) r(r(exp(pmin(x, 0))) - 1)


#' @rdname layer_activation_relu
#' @export
layer_activation_thresholded_relu <- function(object, theta = 1.0, input_shape = NULL,
                                              batch_input_shape = NULL, batch_size = NULL,
                                              dtype = NULL, name = NULL, trainable = NULL,
                                              weights = NULL) {
  elementwise_layer(if (missing(object)) NULL else object, "ThresholdedReLU",
    list(theta = check_number(theta, "theta", lower = 0)),
    function(cfg, x, r) ifelse(x > cfg$theta, x, 0),
    function(cfg, x, r) ifelse(x > cfg$theta, 1, 0), layer_common_args())
}

#' @rdname layer_activation_relu
#' @export
layer_activation_softmax <- function(object, axis = -1, input_shape = NULL,
                                     batch_input_shape = NULL, batch_size = NULL, dtype = NULL,
                                     name = NULL, trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (!is.numeric(axis) || !length(axis) || any(!is.finite(axis) | axis != round(axis)) ||
      any(abs(axis) > .Machine$integer.max) || anyDuplicated(axis)) {
    conv3d_abort(sprintf("`axis` must be one or more distinct whole numbers, not %s.",
      format_value(axis)))
  }
  made <- make_layer(object, "Softmax", list(axis = as.integer(axis)), softmax_methods, "axis",
    input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
  compose_layer(made$layer, made$object, "axis")
}

#' @rdname layer_activation_relu
#' @export
layer_activation_selu <- function(object, input_shape = NULL, batch_input_shape = NULL,
                                  batch_size = NULL, dtype = NULL, name = NULL,
                                  trainable = NULL, weights = NULL) {
  layer_activation(if (missing(object)) NULL else object, "selu", input_shape = input_shape,
    batch_input_shape = batch_input_shape, batch_size = batch_size, dtype = dtype, name = name,
    trainable = trainable, weights = weights)
}

# The arguments every layer takes (make_layer()'s), from the calling
# constructor's frame.
layer_common_args <- function(env = parent.frame()) {
  mget(c("input_shape", "batch_input_shape", "batch_size", "dtype", "name", "trainable",
    "weights"), envir = env)
}

# A layer of `config` applying forward(config, x) element by element, whose
# derivative is slope(config, x), composed with `object`; `common`: the
# arguments every layer takes (make_layer()'s). Its first setting is what a
# number given as `object` was meant for.
elementwise_layer <- function(object, class_name, config, forward, slope, common) {
  made <- do.call(make_layer, c(list(object, class_name, config,
    elementwise_methods(forward, slope), names(config)[1]), common))
  compose_layer(made$layer, made$object, names(config)[1])
}

elementwise_methods <- function(forward, slope) {
  c(no_weight_methods, list(
    output_shape = function(self, input_shape) input_shape,
    call = function(self, x) {
      x <- layer_input_array(self, x)
      r <- function(v) round_to_dtype(v, self$dtype)
      r(array(forward(layer_settings(self, r), x, r), dim(x)))
    },
    backward = function(self, x, dy, input) {
      x <- layer_input_array(self, x)
      dy <- output_gradient(self, dy, dim(x))
      r <- function(v) round_to_dtype(v, self$dtype)
      list(input = r(dy * slope(layer_settings(self, r), x, r)), weights = list())
    }
  ))
}

# The layer's numeric settings in its precision (Keras casts them to floatx).
layer_settings <- function(self, r) {
  lapply(self$config, function(v) if (is.double(v)) r(v) else v)
}

# dy checked against the layer's output dims.
output_gradient <- function(self, dy, dims) {
  activation_backward(NULL, dy, normalize_activation(NULL), self$name, dims)
}

# The R axes of a softmax's Keras axes, for an input of rank r.
softmax_axes <- function(self, r) {
  k <- keras_axes(self$config$axis, r)
  if (any(k < 1L | k > r) || anyDuplicated(k)) {
    conv3d_abort(sprintf("`axis` %s of layer \"%s\" must name distinct axes of inputs of rank %d.",
      format_value(self$config$axis), self$name, r), class = "conv3d_error_shape")
  }
  k
}

# x as a matrix with one row per softmax (the axes `k` last), and the way back.
softmax_rows <- function(x, k) {
  d <- dim(x)
  perm <- c(setdiff(seq_along(d), k), k)
  list(m = matrix(aperm(x, perm), ncol = prod(d[k])),
    back = function(m) aperm(array(m, d[perm]), order(perm)))
}

# The named softmax's forward and backward passes (C, along the last axis),
# on a matrix with one row per distribution.
softmax_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) {
    softmax_axes(self, length(input_shape))
    input_shape
  },
  call = function(self, x) {
    x <- layer_input_array(self, x)
    rows <- softmax_rows(x, softmax_axes(self, length(dim(x))))
    rows$back(apply_activation(rows$m, normalize_activation("softmax"), self$dtype))
  },
  backward = function(self, x, dy, input) {
    x <- layer_input_array(self, x)
    dy <- output_gradient(self, dy, dim(x))
    k <- softmax_axes(self, length(dim(x)))
    z <- softmax_rows(x, k)
    g <- activation_backward(z$m, softmax_rows(dy, k)$m, normalize_activation("softmax"),
      self$name)
    list(input = round_to_dtype(z$back(g), self$dtype), weights = list())
  }
))

#' Parametric ReLU layer
#'
#' `f(x) = x` for `x >= 0` and `alpha * x` below, where `alpha` is a weight
#' with the input's shape (without the batch axis) that training learns, shared
#' along `shared_axes`; Keras's `PReLU`, as R keras's
#' `layer_activation_parametric_relu()`.
#'
#' @inheritParams layer-common
#' @param alpha_initializer,alpha_regularizer,alpha_constraint The weight's
#'   initializer, regularizer and constraint, as for [layer_conv_3d()]'s.
#' @param shared_axes `NULL` or the axes along which `alpha` is shared (length
#'   1), counted as Keras does, from 0 for the batch axis: a channels_last
#'   volume `(batch, d, h, w, channels)` with `shared_axes = c(1, 2, 3)` has
#'   one `alpha` per channel. The other axes of the input must have known
#'   lengths.
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family activation layers
#' @export
#' @examples
#' layer <- layer_activation_parametric_relu(alpha_initializer = initializer_constant(0.25),
#'   shared_axes = c(1, 2, 3))
#' y <- layer(array(c(-4, 4), c(2, 1, 1, 1, 1)))
#' y[, 1, 1, 1, 1] # -1 4
#' dim(get_weights(layer)[[1]]) # 1 1 1 1
layer_activation_parametric_relu <- function(object, alpha_initializer = "zeros",
                                             alpha_regularizer = NULL, alpha_constraint = NULL,
                                             shared_axes = NULL, input_shape = NULL,
                                             batch_input_shape = NULL, batch_size = NULL,
                                             dtype = NULL, name = NULL, trainable = NULL,
                                             weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (!is.null(shared_axes) && (!is.numeric(shared_axes) || !length(shared_axes) ||
      any(!is.finite(shared_axes) | shared_axes < 1 | shared_axes != round(shared_axes) |
        shared_axes > .Machine$integer.max))) {
    conv3d_abort(sprintf(
      "`shared_axes` must be NULL or whole numbers >= 1 (axes counted from 0, the batch axis), not %s.",
      format_value(shared_axes)))
  }
  config <- list(shared_axes = if (!is.null(shared_axes)) as.integer(shared_axes))
  config["shared_axes"] <- list(config$shared_axes)
  made <- make_layer(object, "PReLU", config, prelu_methods, "alpha_initializer", input_shape,
    batch_input_shape, batch_size, dtype, name, trainable, weights)
  self <- layer_self(made$layer)
  self$alpha_initializer <- normalize_initializer(alpha_initializer, "alpha_initializer")
  self$alpha_regularizer <- normalize_regularizer(alpha_regularizer, "alpha_regularizer")
  self$alpha_constraint <- normalize_constraint(alpha_constraint, "alpha_constraint")
  compose_layer(made$layer, made$object, "alpha_initializer")
}

# alpha's dim for an input shape (batch first): the input's without the batch
# axis, 1 along the shared axes.
prelu_alpha_dim <- function(self, input_shape) {
  r <- length(input_shape)
  shared <- self$config$shared_axes
  if (length(shared) && any(shared > r - 1L)) {
    conv3d_abort(sprintf("`shared_axes` %s of layer \"%s\" is outside inputs of rank %d.",
      format_value(shared), self$name, r), class = "conv3d_error_shape")
  }
  d <- input_shape[-1]
  d[shared] <- 1
  if (anyNA(d)) {
    conv3d_abort(sprintf(
      "Layer \"%s\" needs known lengths on the axes it does not share `alpha` along, not input shape %s: add them to `shared_axes` or give the lengths.",
      self$name, format_shape_tuple(input_shape)), class = "conv3d_error_shape")
  }
  d
}

# alpha broadcast to the input's dims (x's, batch first).
prelu_alpha <- function(self, dims) {
  broadcast_to(array(self$weights$alpha, c(1, self$built_dim)), dims)
}

prelu_methods <- list(
  weight_names = "alpha",
  build = function(self, input_shape) {
    self$built_dim <- prelu_alpha_dim(self, input_shape)
    alpha <- initialize_weight(self$alpha_initializer, self$built_dim, self$dtype,
      "alpha_initializer")
    self$weights <- list(alpha = self$store_weight(self, array(alpha, self$built_dim)))
  },
  output_shape = function(self, input_shape) {
    check_built_dim(self, prelu_alpha_dim(self, input_shape), input_shape, "an alpha")
    input_shape
  },
  check_weights = function(self, weights) check_built_dim_weights(self, weights, "alpha"),
  store_weight = function(self, w) store_weight_in_dtype(self, w),
  call = function(self, x) {
    x <- layer_input_array(self, x)
    self$output_shape(self, c(NA, dim(x)[-1]))
    round_to_dtype(array(pmax(x, 0) + prelu_alpha(self, dim(x)) * pmin(x, 0), dim(x)),
      self$dtype)
  },
  backward = function(self, x, dy, input) {
    x <- layer_input_array(self, x)
    dy <- output_gradient(self, dy, dim(x))
    alpha <- prelu_alpha(self, dim(x))
    # alpha's gradient: dy * min(x, 0), summed over the batch and shared axes
    ga <- unbroadcast(array(dy * pmin(x, 0), dim(x)), c(1, self$built_dim))
    dx <- if (input) round_to_dtype(dy * ifelse(x > 0, 1, ifelse(x < 0, alpha, 0)), self$dtype)
    list(input = dx, weights = list(round_to_dtype(array(ga, self$built_dim), self$dtype)))
  }
)
