# The layer object. A layer is a closure, so `layer(x)` works as in Keras; its
# state lives in a mutable environment `self` (reference semantics: a layer added
# to a model and changed later is changed in the model too).
#
# A layer type supplies, in `self`:
#   build(self, input_shape)         create weights for a batch-first input shape
#   output_shape(self, input_shape)  shape inference (NA = unknown)
#   call(self, x)                    forward pass on an R array
#   weight_names                     names of its weights, in get_weights() order

new_layer <- function(class_name, name, config, methods, trainable = NULL, dtype = NULL,
                      batch_input_shape = NULL, weights = NULL) {
  self <- new.env(parent = emptyenv())
  self$class_name <- class_name
  self$name <- check_name(name, layer_base_name(class_name))
  self$config <- config
  self$trainable <- check_flag(trainable %||% TRUE, "trainable")
  self$dtype <- dtype
  self$batch_input_shape <- batch_input_shape
  self$built <- FALSE
  self$built_channels <- NULL
  self$weights <- list()
  self$pending_weights <- weights
  self$activity_penalty <- NULL
  # weights packed by C for the kernels (ffi_conv3d_forward), dropped whenever
  # the weights change
  self$weight_cache <- new.env(parent = emptyenv())
  for (method in names(methods)) assign(method, methods[[method]], envir = self)
  layer_callable(self)
}

layer_callable <- function(self) {
  layer <- function(object, ...) {
    if (missing(object)) {
      conv3d_abort("A layer is called on a tensor from layer_input() or an R array; `object` is missing.")
    }
    compose_layer(layer, object)
  }
  class(layer) <- c(paste0("conv3d_layer_", tolower(self$class_name)), "conv3d_layer", "function")
  layer
}

layer_self <- function(layer) environment(layer)$self

# The activation, initializer, regularizer and constraint arguments shared by the
# layers with a kernel and a bias, normalised onto the layer.
set_weight_options <- function(self, activation, kernel_initializer, bias_initializer,
                               kernel_regularizer, bias_regularizer, activity_regularizer,
                               kernel_constraint, bias_constraint) {
  self$activation <- normalize_activation(activation)
  self$kernel_initializer <- normalize_initializer(kernel_initializer, "kernel_initializer")
  self$bias_initializer <- normalize_initializer(bias_initializer, "bias_initializer")
  self$kernel_regularizer <- normalize_regularizer(kernel_regularizer, "kernel_regularizer")
  self$bias_regularizer <- normalize_regularizer(bias_regularizer, "bias_regularizer")
  self$activity_regularizer <- normalize_regularizer(activity_regularizer, "activity_regularizer")
  self$kernel_constraint <- normalize_constraint(kernel_constraint, "kernel_constraint")
  self$bias_constraint <- normalize_constraint(bias_constraint, "bias_constraint")
  invisible(self)
}

check_flag <- function(x, arg) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) {
    conv3d_abort(sprintf("`%s` must be TRUE or FALSE, not %s.", arg, format_value(x)))
  }
  x
}

check_name <- function(name, base) {
  if (is.null(name)) return(next_name(base))
  if (!is.character(name) || length(name) != 1L || is.na(name) || !nzchar(name)) {
    conv3d_abort(sprintf("`name` must be NULL or a non-empty string, not %s.", format_value(name)))
  }
  name
}

# Keras's automatic names: snake_case of the class, then _1, _2, ... per session.
layer_base_name <- function(class_name) {
  name <- gsub("(.)([A-Z][a-z]+)", "\\1_\\2", class_name)
  tolower(gsub("([a-z])([A-Z])", "\\1_\\2", name))
}

name_counters <- new.env(parent = emptyenv())

reset_name_counters <- function() {
  rm(list = ls(name_counters, all.names = TRUE), envir = name_counters)
}

next_name <- function(base, zero_based = TRUE) {
  n <- name_counters[[base]] %||% 0L
  assign(base, n + 1L, envir = name_counters)
  if (zero_based) {
    if (n == 0L) base else paste0(base, "_", n)
  } else {
    paste0(base, "_", n + 1L)
  }
}

#' Reset the naming state
#'
#' Resets the counters behind automatic layer and model names (`conv3d`,
#' `conv3d_1`, ..., `sequential`, `input_1`, ...), as Keras's `clear_session()`
#' does, and frees the memory the C routines keep for later calls, kept
#' because fresh memory costs page faults: scratch (at most 256 MB: padded
#' copies of inputs and other working arrays) and the memory of large results
#' (1 MB and more) that R has collected (at most 256 MB). Existing layers,
#' models and arrays are unchanged.
#'
#' @return `NULL`, invisibly.
#' @export
#' @examples
#' layer_conv_3d(filters = 2, kernel_size = 3)$name
#' clear_session()
#' layer_conv_3d(filters = 2, kernel_size = 3)$name
clear_session <- function() {
  reset_name_counters()
  .Call(ffi_release_memory)
  invisible(NULL)
}

# object: what layer_conv_3d() or layer(x) received -> a layer, a model, a tensor
# or an array, as Keras composes.
compose_layer <- function(layer, object, first_arg = "filters") {
  if (is.null(object)) return(layer)
  if (inherits(object, "conv3d_model_sequential")) {
    sequential_add(object, layer)
    return(invisible(object))
  }
  if (inherits(object, "conv3d_tensor")) return(layer_apply_symbolic(layer, object))
  merge <- isTRUE(layer_self(layer)$merge)
  listed <- is.list(object) && !is.data.frame(object) && length(object)
  tensors <- listed && all(vapply(object, inherits, TRUE, "conv3d_tensor"))
  if (listed && merge) { # a merge layer's inputs
    if (tensors) return(layer_apply_symbolic(layer, unname(object)))
    return(layer_apply_array(layer, unname(object)))
  }
  if (tensors) {
    conv3d_abort(sprintf("Layer \"%s\" takes one input, not a list of %d tensors.",
      layer_self(layer)$name, length(object)), class = "conv3d_error_shape")
  }
  if (merge) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) must be called on a list of tensors or arrays, not %s.",
      layer_self(layer)$name, layer_self(layer)$class_name,
      if (inherits(object, "conv3d_tensor")) "one tensor" else format_value(object)),
      class = "conv3d_error_shape")
  }
  if (is.array(object) || is.numeric(object) && length(object) > 1L) {
    return(layer_apply_array(layer, object))
  }
  if (is.numeric(object)) {
    conv3d_abort(sprintf(
      "`object` is the number %s; did you mean `%s = %s`?",
      format_value(object), first_arg, format_value(object)
    ))
  }
  conv3d_abort(sprintf(
    "`object` must be NULL, a sequential model, a tensor from layer_input() or an R array, not an object of class %s.",
    paste(class(object), collapse = "/")
  ))
}

# Builds the layer for a batch-first input shape if it is not built yet.
layer_ensure_built <- function(self, input_shape) {
  if (!self$built) {
    self$build(self, input_shape)
    self$built <- TRUE
    if (!is.null(self$pending_weights)) {
      weights <- self$pending_weights
      self$pending_weights <- NULL
      layer_set_weights(self, weights)
    }
  }
  invisible(self)
}

layer_output_shape <- function(layer, input_shape) {
  self <- layer_self(layer)
  layer_ensure_built(self, input_shape)
  self$output_shape(self, input_shape)
}

layer_apply_array <- function(layer, x) self_apply_array(layer_self(layer), x)

# The same on the layer's own state (its methods hold that, not the layer).
self_apply_array <- function(self, x) {
  if (is.array(x)) layer_ensure_built(self, dim(x))
  y <- self$call(self, x)
  if (!is.null(self$activity_regularizer)) {
    self$activity_penalty <- self$activity_regularizer(y) / max(dim(y)[1], 1)
  }
  y
}

layer_set_weights <- function(self, weights) {
  if (!self$built) {
    conv3d_abort(sprintf(
      "Layer \"%s\" is not built yet: call it on an input (or add it to a model with an input shape) before setting its weights.",
      self$name
    ), class = "conv3d_error_weights")
  }
  self$check_weights(self, weights)
  self$weights <- stats::setNames(lapply(weights, function(w) self$store_weight(self, w)),
    self$weight_names)
  self$weight_cache <- new.env(parent = emptyenv())
  invisible(self)
}

# Which of a layer's weights training updates (in get_weights() order): all
# of a trainable layer's but its fixed ones (batch normalization's moving
# statistics, which training sets instead), none of a frozen layer's.
weights_train <- function(self, trains = self$trainable) {
  trains & !names(self$weights) %in% self$fixed_weights
}

layer_count_params <- function(self) {
  sum(vapply(self$weights, length, numeric(1)))
}

# The penalties of the current weights and of the last output, as a list of numbers.
layer_losses <- function(self) {
  out <- layer_weight_penalties(self)
  if (!is.null(self$activity_penalty)) out[[length(out) + 1L]] <- self$activity_penalty
  out
}

# The penalties of the layer's regularized weights (once per layer, however
# often a model calls it).
layer_weight_penalties <- function(self) {
  out <- list()
  for (w in names(self$weights)) {
    reg <- self[[paste0(w, "_regularizer")]]
    if (!is.null(reg)) out[[length(out) + 1L]] <- reg(self$weights[[w]])
  }
  out
}

#' @export
`$.conv3d_layer` <- function(x, name) {
  self <- layer_self(x)
  switch(name,
    weights = unname(self$weights),
    trainable_weights = unname(self$weights[weights_train(self)]),
    non_trainable_weights = unname(self$weights[!weights_train(self)]),
    losses = layer_losses(self),
    count_params = function() layer_count_params(self),
    get_config = function() {
      config <- self$config
      config$dtype <- NULL # the layer's own, once
      # the activation (its name, or the R function) and the weights' options
      if (is.list(self$activation)) {
        config$activation <- self$activation$fn %||% self$activation$name
      }
      options <- c("kernel_initializer", "bias_initializer", "kernel_regularizer",
        "bias_regularizer", "activity_regularizer", "kernel_constraint", "bias_constraint",
        "beta_initializer", "gamma_initializer", "moving_mean_initializer",
        "moving_variance_initializer", "beta_regularizer", "gamma_regularizer",
        "beta_constraint", "gamma_constraint", "alpha_initializer", "alpha_regularizer",
        "alpha_constraint")
      for (o in intersect(options, ls(self))) config[o] <- list(self[[o]])
      c(list(name = self$name, trainable = self$trainable, dtype = self$dtype), config)
    },
    get_weights = function() get_weights(x),
    set_weights = function(weights) set_weights(x, weights),
    input_shape = self$batch_input_shape,
    if (exists(name, envir = self, inherits = FALSE)) get(name, envir = self) else self$config[[name]]
  )
}

#' @export
`[[.conv3d_layer` <- function(x, i, ...) `$.conv3d_layer`(x, i)

#' @export
`$<-.conv3d_layer` <- function(x, name, value) {
  self <- layer_self(x)
  if (!identical(name, "trainable")) {
    conv3d_abort(sprintf("Only `trainable` can be assigned on a layer, not `%s`.", name))
  }
  self$trainable <- check_flag(value, "trainable")
  x
}

#' @export
print.conv3d_layer <- function(x, ...) {
  self <- layer_self(x)
  cat(sprintf("<%s layer \"%s\">%s\n", self$class_name, self$name,
    if (self$built) sprintf(" %d params", as.integer(layer_count_params(self))) else " (not built)"))
  invisible(x)
}

#' Get and set the weights of a layer or model
#'
#' `get_weights()` returns the weights as a list of R arrays: for
#' [layer_conv_3d()] the kernel `(kd, kh, kw, C/groups, filters)` then the bias
#' `(filters)` when `use_bias = TRUE`; for a model, every layer's weights in
#' layer order. `set_weights()` replaces them, checking count and shapes
#' against the built layer. A float32 layer stores weights rounded to float32.
#'
#' @param object A layer or a model.
#' @param weights A list of arrays, as returned by `get_weights()`.
#' @return `get_weights()`: a list of arrays. `set_weights()`: `object`, invisibly.
#' @export
#' @examples
#' layer <- layer_conv_3d(filters = 2, kernel_size = 3)
#' y <- layer(array(rnorm(5^3), c(1, 5, 5, 5, 1)))
#' w <- get_weights(layer)
#' str(w)
#' w[[1]][] <- 0
#' set_weights(layer, w)
#' all(layer(array(1, c(1, 3, 3, 3, 1))) == get_weights(layer)[[2]])
get_weights <- function(object) {
  if (inherits(object, "conv3d_layer")) return(unname(layer_self(object)$weights))
  if (inherits(object, "conv3d_model")) {
    return(unlist(lapply(model_layers(object), get_weights), recursive = FALSE) %||% list())
  }
  conv3d_abort(sprintf("`object` must be a layer or a model, not %s.", format_value(object)))
}

#' @rdname get_weights
#' @export
set_weights <- function(object, weights) {
  if (!is.list(weights)) {
    conv3d_abort(sprintf("`weights` must be a list of arrays, not %s.", format_value(weights)),
      class = "conv3d_error_weights")
  }
  if (inherits(object, "conv3d_layer")) {
    layer_set_weights(layer_self(object), weights)
    return(invisible(object))
  }
  if (inherits(object, "conv3d_model")) {
    layers <- model_layers(object)
    counts <- vapply(layers, function(l) length(layer_self(l)$weights), integer(1))
    if (sum(counts) != length(weights)) {
      conv3d_abort(sprintf(
        "`weights` must be a list of %d arrays for this model, not a list of length %d.",
        sum(counts), length(weights)
      ), class = "conv3d_error_weights")
    }
    start <- 0L
    for (i in seq_along(layers)) {
      if (counts[[i]] > 0L) {
        layer_set_weights(layer_self(layers[[i]]), weights[start + seq_len(counts[[i]])])
      }
      start <- start + counts[[i]]
    }
    return(invisible(object))
  }
  conv3d_abort(sprintf("`object` must be a layer or a model, not %s.", format_value(object)))
}
