# Batch normalization, with Keras 2's (tf.keras) semantics: batch moments in
# training (virtual batches, batch renormalization and an adjustment
# included), moving averages at inference, and the fused kernel's
# differences (a floor on epsilon, the moving variance updated with Bessel's
# correction). Computed in double precision, rounded to a float32 layer's
# type, as the other R-side layers.

#' Batch normalization layer
#'
#' Keras's `layer_batch_normalization()`: normalises its input over every axis
#' but `axis`, `gamma * (x - mean) / sqrt(variance + epsilon) + beta`. In
#' training ([fit()], [train_on_batch()]) the mean and variance are the
#' batch's (biased), and the moving averages `moving_mean`, `moving_variance`
#' follow them, `moving = momentum * moving + (1 - momentum) * batch`; at
#' inference ([predict()], [evaluate()], calling the layer) the moving
#' averages are used. A layer with `trainable = FALSE` runs in inference mode
#' in training too, as in TF 2 Keras. The weights, in [get_weights()] order:
#' `gamma` (if `scale`), `beta` (if `center`), `moving_mean`,
#' `moving_variance`, and with `renorm` `moving_stddev`, `renorm_mean`,
#' `renorm_stddev`; only `gamma` and `beta` are trainable.
#'
#' Keras runs a "fused" kernel when it can (`fused = NULL`: a rank-4 or 5
#' input normalised over its channels, axis 1 or the last, float32, without
#' `renorm`, `virtual_batch_size` or `adjustment`); conv3d follows its
#' results: `epsilon` is at least 1.001e-5 and the moving variance is updated
#' with the unbiased batch variance (the non-fused path uses the biased one).
#'
#' @inheritParams layer-common
#' @param axis The axis (or axes) of the features, as R keras 2 passes it to
#'   Keras: counted from 0 (the samples' axis) or from the end (`-1`, the
#'   channels of a channels_last volume; `1` for channels_first).
#' @param momentum Momentum of the moving averages.
#' @param epsilon Added to the variance before its square root.
#' @param center,scale Whether to learn `beta` (an offset) and `gamma` (a
#'   factor).
#' @param beta_initializer,gamma_initializer,moving_mean_initializer,moving_variance_initializer
#'   Initializers of the weights, as for [layer_conv_3d()].
#' @param beta_regularizer,gamma_regularizer,beta_constraint,gamma_constraint
#'   Regularizers and constraints of `beta` and `gamma`.
#' @param renorm Batch renormalization: in training the normalised value is
#'   multiplied by the ratio of the batch's standard deviation to
#'   `renorm_stddev` and shifted by `(mean - renorm_mean) / renorm_stddev`
#'   (both constants for the gradient), from averages kept with
#'   `renorm_momentum`.
#' @param renorm_clipping `NULL` or a named list with any of `rmax`, `rmin`
#'   and `dmax`: the bounds of that ratio (`[rmin, rmax]`) and shift
#'   (`[-dmax, dmax]`).
#' @param renorm_momentum Momentum of the renormalization averages.
#' @param fused `NULL` (when Keras can), `TRUE` (an error where Keras cannot)
#'   or `FALSE`: which of Keras's two computations to follow (see Details).
#' @param virtual_batch_size `NULL` or a whole number dividing the batch size:
#'   in training the batch is split into "ghost" batches of this many
#'   samples, each normalised by its own moments (Keras's reshape to
#'   `(virtual_batch_size, -1, ...)`: ghost batch `j` holds samples `j`,
#'   `j + n / virtual_batch_size`, ...); the moving averages follow their mean.
#'   The weights then have Keras's full-rank shapes with an extra axis.
#' @param adjustment `NULL` or a function of the input's dim returning
#'   `list(scale, bias)` (one value per feature, or one for all): in training
#'   the normalised values are multiplied by `scale` and shifted by `bias`
#'   before `gamma` and `beta` (constants for the gradient).
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family normalization layers
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(8, 8, 8, 1)) |>
#'   layer_conv_3d(4, 3, use_bias = FALSE) |>
#'   layer_batch_normalization() |>
#'   layer_activation("relu")
#' summary(model)
layer_batch_normalization <- function(object, axis = -1L, momentum = 0.99, epsilon = 0.001,
                                      center = TRUE, scale = TRUE, beta_initializer = "zeros",
                                      gamma_initializer = "ones",
                                      moving_mean_initializer = "zeros",
                                      moving_variance_initializer = "ones",
                                      beta_regularizer = NULL, gamma_regularizer = NULL,
                                      beta_constraint = NULL, gamma_constraint = NULL,
                                      renorm = FALSE, renorm_clipping = NULL,
                                      renorm_momentum = 0.99, fused = NULL,
                                      virtual_batch_size = NULL, adjustment = NULL,
                                      input_shape = NULL, batch_input_shape = NULL,
                                      batch_size = NULL, dtype = NULL, name = NULL,
                                      trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  ok_axis <- is.numeric(axis) && length(axis) >= 1L && all(is.finite(axis)) &&
    all(axis == round(axis)) && all(abs(axis) <= 1e6) && !anyDuplicated(axis)
  if (!ok_axis) {
    conv3d_abort(sprintf("`axis` must be whole numbers (0 the samples' axis, negative from the last), each once, not %s.",
      format_value(axis)))
  }
  renorm <- check_flag(renorm, "renorm")
  renorm_clipping <- normalize_renorm_clipping(renorm_clipping)
  renorm_momentum <- check_number(renorm_momentum, "renorm_momentum")
  if (!is.null(fused)) fused <- check_flag(fused, "fused")
  if (!is.null(virtual_batch_size)) {
    virtual_batch_size <- check_count(virtual_batch_size, "virtual_batch_size")
  }
  if (!is.null(adjustment) && !is.function(adjustment)) {
    conv3d_abort(sprintf("`adjustment` must be NULL or a function of the input's dim, not %s.",
      format_value(adjustment)))
  }
  if (!is.null(virtual_batch_size) && !is.null(adjustment)) {
    conv3d_abort("`adjustment` cannot be used with `virtual_batch_size`, as in Keras.")
  }
  # Keras's config: the TensorFlow-only settings only when set
  config <- list(axis = as.integer(axis), momentum = check_number(momentum, "momentum"),
    epsilon = check_number(epsilon, "epsilon", lower = 0, open = TRUE),
    center = check_flag(center, "center"), scale = check_flag(scale, "scale"))
  if (renorm) {
    config <- c(config, list(renorm = TRUE, renorm_clipping = renorm_clipping,
      renorm_momentum = renorm_momentum))
  }
  if (!is.null(virtual_batch_size)) config$virtual_batch_size <- virtual_batch_size
  made <- make_layer(object, "BatchNormalization", config, batch_norm_methods, "axis", input_shape,
    batch_input_shape, batch_size, dtype, name, trainable, weights)
  self <- layer_self(made$layer)
  self$renorm <- renorm
  self$renorm_clipping <- renorm_clipping
  self$renorm_momentum <- renorm_momentum
  self$virtual_batch_size <- virtual_batch_size
  self$adjustment <- adjustment
  # Keras's fused kernel: wanted when possible (NULL) or asked for (TRUE,
  # refused where Keras refuses it at construction)
  why <- c(if (renorm) "`renorm`", if (!is.null(virtual_batch_size)) "`virtual_batch_size`",
    if (!is.null(adjustment)) "`adjustment`",
    if (length(axis) > 1L || !axis %in% c(-4L, -3L, -1L, 1L, 3L, 4L)) sprintf("`axis` %s", format_value(axis)),
    if (self$dtype != "float32") sprintf("`dtype` \"%s\"", self$dtype))
  if (isTRUE(fused) && length(why)) {
    conv3d_abort(sprintf("`fused = TRUE` is not possible with %s, as in Keras: use `fused = NULL`.",
      paste(why, collapse = ", ")))
  }
  self$fused <- !isFALSE(fused) && !length(why)
  self$fused_asked <- isTRUE(fused)
  self$gamma_initializer <- normalize_initializer(gamma_initializer, "gamma_initializer")
  self$beta_initializer <- normalize_initializer(beta_initializer, "beta_initializer")
  self$moving_mean_initializer <- normalize_initializer(moving_mean_initializer,
    "moving_mean_initializer")
  self$moving_variance_initializer <- normalize_initializer(moving_variance_initializer,
    "moving_variance_initializer")
  self$gamma_regularizer <- normalize_regularizer(gamma_regularizer, "gamma_regularizer")
  self$beta_regularizer <- normalize_regularizer(beta_regularizer, "beta_regularizer")
  self$gamma_constraint <- normalize_constraint(gamma_constraint, "gamma_constraint")
  self$beta_constraint <- normalize_constraint(beta_constraint, "beta_constraint")
  compose_layer(made$layer, made$object, "axis")
}

normalize_renorm_clipping <- function(clipping) {
  if (is.null(clipping)) return(list())
  ok <- is.list(clipping) || is.numeric(clipping)
  keys <- names(clipping)
  if (!ok || (length(clipping) && (is.null(keys) || !all(keys %in% c("rmax", "rmin", "dmax")) ||
      anyDuplicated(keys))) ||
      !all(vapply(as.list(clipping), function(v) is.numeric(v) && length(v) == 1L && !is.na(v), TRUE))) {
    conv3d_abort(sprintf("`renorm_clipping` must be NULL or a named list of `rmax`, `rmin` and `dmax` numbers, not %s.",
      format_value(clipping)))
  }
  lapply(as.list(clipping), as.numeric)
}

# What a built batch normalization layer needs about an input of dim d: the
# feature axes (R's, sorted), the weights' dim, whether the fused kernel's
# results apply, and the epsilon used.
batch_norm_plan <- function(self, d) {
  r <- length(d)
  axes <- sort(keras_axes(self$config$axis, r))
  if (any(axes < 1L | axes > r)) {
    conv3d_abort(sprintf("`axis` %s of layer \"%s\" is outside inputs of rank %d.",
      format_value(self$config$axis), self$name, r), class = "conv3d_error_shape")
  }
  if (anyDuplicated(axes)) {
    conv3d_abort(sprintf("`axis` %s of layer \"%s\" names an axis twice for inputs of rank %d.",
      format_value(self$config$axis), self$name, r), class = "conv3d_error_shape")
  }
  virtual <- self$virtual_batch_size
  if (!is.null(virtual) && 1L %in% axes) {
    conv3d_abort(sprintf("`axis` of layer \"%s\" includes the samples' axis, which `virtual_batch_size` splits.",
      self$name), class = "conv3d_error_shape")
  }
  # Keras's build: the fused kernel takes rank 4 or 5 with the features on
  # axis 1 or the last; another axis falls back to the plain path for rank
  # 5, and is an error for rank 4 (as in Keras, also when fused is NULL)
  fused <- FALSE
  if (self$fused) {
    if (!r %in% c(4L, 5L)) {
      if (self$fused_asked) {
        conv3d_abort(sprintf("`fused = TRUE` of layer \"%s\" needs a rank-4 or 5 input, not shape %s.",
          self$name, format_shape_tuple(d)), class = "conv3d_error_shape")
      }
    } else if (axes %in% c(2L, r)) {
      fused <- TRUE
    } else if (r == 4L) {
      conv3d_abort(sprintf("`axis` %s of layer \"%s\" is not supported for rank-4 inputs by Keras's fused kernel (axis 1 or 3 only); give `fused = FALSE`.",
        format_value(self$config$axis), self$name), class = "conv3d_error_shape")
    }
  }
  weight_dim <- if (length(axes) == 1L && is.null(virtual)) d[axes] else {
    full <- ifelse(seq_len(r) %in% axes, d, 1)
    if (is.null(virtual)) full else append(full, 1, after = 1L)
  }
  list(axes = axes, weight_dim = weight_dim, fused = fused,
    epsilon = if (fused) max(self$config$epsilon, 1.001e-5) else self$config$epsilon)
}

batch_norm_weight_names <- function(self) {
  c(if (self$config$scale) "gamma", if (self$config$center) "beta", "moving_mean",
    "moving_variance", if (self$renorm) c("moving_stddev", "renorm_mean", "renorm_stddev"))
}

# x as a matrix: rows the positions (samples fastest), columns the features.
as_feature_matrix <- function(x, axes) {
  d <- dim(x)
  others <- setdiff(seq_along(d), axes)
  matrix(aperm(x, c(others, axes)), ncol = prod(d[axes]))
}

from_feature_matrix <- function(m, d, axes) {
  others <- setdiff(seq_along(d), axes)
  aperm(array(m, d[c(others, axes)]), order(c(others, axes)))
}

# The layer's weight named `w` as one value per feature (1 or 0 when absent).
feature_weight <- function(self, w, default) {
  v <- self$weights[[w]]
  if (is.null(v)) default else as.numeric(v)
}

batch_norm_methods <- list(
  weight_names = character(),
  fixed_weights = c("moving_mean", "moving_variance", "moving_stddev", "renorm_mean",
    "renorm_stddev"),
  build = function(self, input_shape) {
    plan <- batch_norm_plan(self, input_shape)
    wd <- plan$weight_dim
    if (anyNA(wd)) {
      conv3d_abort(sprintf("The feature axes of the input of layer \"%s\" must have known lengths, not shape %s.",
        self$name, format_shape_tuple(input_shape)), class = "conv3d_error_shape")
    }
    self$built_dim <- wd
    self$weight_names <- batch_norm_weight_names(self)
    init <- function(i, arg) initialize_weight(i, wd, self$dtype, arg)
    weights <- list()
    if (self$config$scale) weights$gamma <- init(self$gamma_initializer, "gamma_initializer")
    if (self$config$center) weights$beta <- init(self$beta_initializer, "beta_initializer")
    weights$moving_mean <- init(self$moving_mean_initializer, "moving_mean_initializer")
    weights$moving_variance <- init(self$moving_variance_initializer, "moving_variance_initializer")
    if (self$renorm) {
      weights$moving_stddev <- sqrt(weights$moving_variance) # Keras's initial stddev
      weights$renorm_mean <- weights$moving_mean
      weights$renorm_stddev <- weights$moving_stddev
    }
    self$weights <- lapply(weights, function(w) round_to_dtype(array(w, wd), self$dtype))
    if (length(wd) == 1L) self$weights <- lapply(self$weights, as.vector)
  },
  output_shape = function(self, input_shape) {
    check_built_dim(self, batch_norm_plan(self, input_shape)$weight_dim, input_shape, "features")
    input_shape
  },
  check_weights = function(self, weights) {
    check_built_dim_weights(self, weights, batch_norm_weight_names(self))
  },
  store_weight = function(self, w) store_weight_in_dtype(self, w),
  # inference: the moving averages
  call = function(self, x) {
    check_rank(x, 2, sprintf("layer \"%s\"", self$name))
    self$output_shape(self, dim(x))
    plan <- batch_norm_plan(self, dim(x))
    m <- as_feature_matrix(x, plan$axes)
    inv <- 1 / sqrt(feature_weight(self, "moving_variance") + plan$epsilon)
    s <- feature_weight(self, "gamma", 1) * inv
    o <- feature_weight(self, "beta", 0) - feature_weight(self, "moving_mean") * s
    y <- sweep(sweep(m, 2, s, `*`), 2, o, `+`)
    round_to_dtype(from_feature_matrix(y, dim(x), plan$axes), self$dtype)
  },
  backward = function(self, x, dy, input) { # inference mode (a frozen layer)
    plan <- batch_norm_plan(self, dim(x))
    m <- as_feature_matrix(x, plan$axes)
    g <- as_feature_matrix(array(as.numeric(dy), dim(x)), plan$axes)
    inv <- 1 / sqrt(feature_weight(self, "moving_variance") + plan$epsilon)
    xhat <- sweep(sweep(m, 2, feature_weight(self, "moving_mean"), `-`), 2, inv, `*`)
    dx <- if (input) from_feature_matrix(sweep(g, 2, feature_weight(self, "gamma", 1) * inv, `*`),
      dim(x), plan$axes)
    list(input = dx, weights = batch_norm_weight_grads(self, colSums(g * xhat), colSums(g)))
  },
  # training: the batch's moments; returns list(y, cache) and updates the
  # moving averages, as Keras does in its training call; a layer training
  # does not update (`trains` FALSE) runs in inference mode, as in TF 2
  train_call = function(self, x, trains = TRUE) {
    if (!trains) return(list(y = self$call(self, x), cache = NULL))
    check_rank(x, 2, sprintf("layer \"%s\"", self$name))
    self$output_shape(self, dim(x))
    d <- dim(x)
    plan <- batch_norm_plan(self, d)
    m <- as_feature_matrix(x, plan$axes)
    n <- d[1]
    virtual <- self$virtual_batch_size %||% n
    if (n %% virtual != 0) {
      conv3d_abort(sprintf("`virtual_batch_size` %d of layer \"%s\" must divide the batch size, not %d.",
        virtual, self$name, n), class = "conv3d_error_shape")
    }
    ghosts <- n / virtual # ghost batch j: samples j, j + ghosts, ... (Keras's reshape)
    group <- ((seq_len(nrow(m)) - 1L) %% n) %% ghosts + 1L
    count <- tabulate(group, ghosts)
    mean_g <- rowsum(m, group) / count
    centered <- m - mean_g[group, , drop = FALSE]
    var_g <- rowsum(centered^2, group) / count
    eps <- plan$epsilon
    inv_g <- 1 / sqrt(var_g + eps)
    xhat <- centered * inv_g[group, , drop = FALSE]
    new_mean <- colMeans(mean_g)
    new_var <- colMeans(var_g)
    # Keras's composition: the adjustment (a, b) first, then renorm's (r, d):
    # y = xhat * r a gamma + (d a + b) gamma + beta
    a <- 1
    b <- 0
    if (!is.null(self$adjustment)) {
      adj <- self$adjustment(d)
      if (!is.list(adj) || length(adj) != 2L || !all(vapply(adj, is.numeric, TRUE)) ||
          !all(lengths(adj) %in% c(1L, ncol(m)))) {
        conv3d_abort(sprintf("The `adjustment` of layer \"%s\" must return list(scale, bias), each one number or one per feature (%d), not %s.",
          self$name, ncol(m), format_value(adj)))
      }
      a <- as.numeric(adj[[1]])
      b <- as.numeric(adj[[2]])
    }
    r <- 1
    dd <- 0
    if (self$renorm) {
      stddev <- sqrt(new_var + eps)
      renorm_stddev <- pmax(feature_weight(self, "renorm_stddev"), sqrt(eps))
      r <- stddev / renorm_stddev
      dd <- (new_mean - feature_weight(self, "renorm_mean")) / renorm_stddev
      clip <- self$renorm_clipping
      if (!is.null(clip$rmin)) r <- pmax(r, clip$rmin)
      if (!is.null(clip$rmax)) r <- pmin(r, clip$rmax)
      if (!is.null(clip$dmax)) dd <- pmin(pmax(dd, -clip$dmax), clip$dmax)
    }
    gamma <- feature_weight(self, "gamma", 1)
    scale_per_gamma <- rep_len(r * a, ncol(m))
    offset_per_gamma <- rep_len(dd * a + b, ncol(m))
    s <- scale_per_gamma * gamma
    o <- offset_per_gamma * gamma + feature_weight(self, "beta", 0)
    y <- sweep(sweep(xhat, 2, s, `*`), 2, o, `+`)
    if (n > 0) batch_norm_update(self, plan, new_mean, new_var, nrow(m))
    list(y = round_to_dtype(from_feature_matrix(y, d, plan$axes), self$dtype),
      cache = list(plan = plan, group = group, count = count, xhat = xhat, inv_g = inv_g,
        s = s, scale_per_gamma = scale_per_gamma, offset_per_gamma = offset_per_gamma))
  },
  # the gradients of a training call, from its cache: r, d and the
  # adjustment are constants, as Keras stops their gradients
  train_backward = function(self, x, dy, cache, input) {
    g <- as_feature_matrix(array(as.numeric(dy), dim(x)), cache$plan$axes)
    group <- cache$group
    dxhat <- sweep(g, 2, cache$s, `*`)
    dx <- NULL
    if (input) {
      sum_d <- rowsum(dxhat, group)[group, , drop = FALSE]
      sum_dx <- rowsum(dxhat * cache$xhat, group)[group, , drop = FALSE]
      m_g <- cache$count[group]
      dxm <- (dxhat - sum_d / m_g - cache$xhat * sum_dx / m_g) * cache$inv_g[group, , drop = FALSE]
      dx <- from_feature_matrix(dxm, dim(x), cache$plan$axes)
    }
    dbeta <- colSums(g)
    dgamma <- colSums(g * cache$xhat) * cache$scale_per_gamma + dbeta * cache$offset_per_gamma
    list(input = dx, weights = batch_norm_weight_grads(self, dgamma, dbeta))
  }
)

# Gradients in get_weights() order (NULL for the moving statistics), shaped
# as the weights.
batch_norm_weight_grads <- function(self, dgamma, dbeta) {
  shape <- function(v) if (length(self$built_dim) == 1L) v else array(v, self$built_dim)
  lapply(self$weight_names, function(w) switch(w,
    gamma = shape(round_to_dtype(dgamma, self$dtype)),
    beta = shape(round_to_dtype(dbeta, self$dtype)), NULL))
}

# Keras's moving-average updates of a training call (momentum; the renorm
# averages with renorm_momentum, the moving stddev alongside the variance).
batch_norm_update <- function(self, plan, mean, variance, rows) {
  move <- function(w, value, momentum) {
    old <- feature_weight(self, w)
    old - (old - value) * (1 - momentum)
  }
  momentum <- self$config$momentum
  # the fused kernel hands Keras the unbiased variance
  if (plan$fused && rows > 1) variance <- variance * rows / (rows - 1)
  w <- self$weights
  shape <- function(v) round_to_dtype(if (length(self$built_dim) == 1L) v else array(v, self$built_dim),
    self$dtype)
  w$moving_mean <- shape(move("moving_mean", mean, momentum))
  if (self$renorm) {
    stddev <- sqrt(variance + plan$epsilon)
    w$moving_stddev <- shape(move("moving_stddev", stddev, momentum))
    # Keras: relu(moving_stddev^2 - epsilon)
    w$moving_variance <- shape(pmax(as.numeric(w$moving_stddev)^2 - plan$epsilon, 0))
    w$renorm_mean <- shape(move("renorm_mean", mean, self$renorm_momentum))
    w$renorm_stddev <- shape(move("renorm_stddev", stddev, self$renorm_momentum))
  } else {
    w$moving_variance <- shape(move("moving_variance", variance, momentum))
  }
  self$weights <- w
  self$weight_cache <- new.env(parent = emptyenv())
}
