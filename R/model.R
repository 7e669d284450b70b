# What both kinds of model share: the callable object, predict(), summary(),
# printing, layer access.

new_model_self <- function(kind, name) {
  self <- new.env(parent = emptyenv())
  self$kind <- kind
  self$name <- name
  self$layers <- list()
  self$input_shape <- NULL
  self
}

model_callable <- function(self) {
  model <- function(object, ...) {
    if (inherits(object, "conv3d_tensor") || is.list(object) && length(object) &&
        all(vapply(object, inherits, TRUE, "conv3d_tensor"))) {
      return(model_apply_symbolic(self, object))
    }
    if (inherits(object, "conv3d_model_sequential")) return(sequential_add_model(object, self))
    outputs <- model_forward(self, as_input_list(self, object, "object"))
    if (self$kind == "functional" && !self$single_output) outputs else outputs[[1]]
  }
  class(model) <- c(paste0("conv3d_model_", self$kind), "conv3d_model", "function")
  model
}

model_self <- function(model) environment(model)$self
model_layers <- function(model) model_self(model)$layers

# Concrete forward pass; `inputs` is a list of arrays, one per model input
# (as_input_list() has checked and ordered them).
model_forward <- function(self, inputs) {
  if (self$kind == "functional") return(functional_forward(self, inputs))
  x <- inputs[[1]]
  if (is.null(self$input_shape) && is.array(x) && length(self$layers)) {
    shape <- c(NA, dim(x)[-1])
    sequential_output_shape(self$layers, shape)
    self$input_shape <- shape
  }
  for (layer in self$layers) x <- layer_apply_array(layer, x)
  list(x)
}

# A model added to a sequential one, as R keras's `sequential |> model()`:
# its layers are added in order (shared with it, so both train them), which
# computes what Keras's nested model does; for a model that is a chain.
sequential_add_model <- function(sequential, self) {
  if (!model_is_chain(self)) {
    conv3d_abort(sprintf(
      "Model \"%s\" is not a chain of layers (several inputs, outputs or branches), so it cannot be added to a sequential model; call it on a tensor in a functional model instead.",
      self$name))
  }
  for (layer in self$layers) {
    if (layer_self(layer)$class_name != "InputLayer") sequential_add(sequential, layer)
  }
  invisible(sequential)
}

# `tensor`: one tensor, or a list of them, one per model input (matched by
# name when named, as arrays are), each checked against the input it stands
# for (unknown lengths match any).
model_apply_symbolic <- function(self, tensor) {
  tensors <- if (inherits(tensor, "conv3d_tensor")) list(tensor) else tensor
  if (self$kind == "sequential") {
    if (length(tensors) != 1L) {
      conv3d_abort(sprintf("Model \"%s\" has 1 input, not a list of %d tensors.", self$name,
        length(tensors)), class = "conv3d_error_shape")
    }
    tensor <- tensors[[1]]
    for (layer in self$layers) tensor <- layer_apply_symbolic(layer, tensor)
    return(tensor)
  }
  tensors <- as_input_list(self, tensors, "object")
  for (i in seq_along(tensors)) {
    want <- tensor_shape(self$inputs[[i]])
    got <- tensor_shape(tensors[[i]])
    if (length(got) != length(want) || !all(is.na(got) | is.na(want) | got == want)) {
      conv3d_abort(sprintf("Input %d of model \"%s\" (\"%s\") has shape %s; it cannot take a tensor of shape %s.",
        i, self$name, layer_self(self$inputs[[i]]$layer)$name, format_shape_tuple(want),
        format_shape_tuple(got)), class = "conv3d_error_shape")
    }
  }
  mapped <- list()
  for (i in seq_along(self$inputs)) mapped[[as.character(self$inputs[[i]]$id)]] <- tensors[[i]]
  for (t in self$nodes) {
    key <- as.character(t$id)
    if (is.null(mapped[[key]])) {
      mapped[[key]] <- layer_apply_symbolic(t$layer, node_input(t, mapped))
    }
  }
  outputs <- lapply(self$outputs, function(t) mapped[[as.character(t$id)]])
  if (self$single_output) outputs[[1]] else outputs
}

check_model <- function(object) {
  if (!inherits(object, "conv3d_model")) {
    conv3d_abort(sprintf("`object` must be a model, not %s.", format_value(object)))
  }
}

# A whole number of at least `lower` (batch sizes, epochs), as a double: no
# upper bound, a batch larger than the data takes all of it.
check_count <- function(x, arg, lower = 1) {
  ok <- is.numeric(x) && length(x) == 1L && is.finite(x) && x >= lower &&
    x == round(x)
  if (!ok) {
    conv3d_abort(sprintf("`%s` must be a %s whole number, not %s.", arg,
      if (lower >= 1) "positive" else "non-negative", format_value(x)))
  }
  as.numeric(x)
}

# Rows `idx` of the first axis of an array of any rank.
slice_batch <- function(x, idx) {
  if (is.null(dim(x))) return(x)
  if (is.null(dimnames(x)) && typeof(x) %in% c("double", "integer", "logical")) {
    return(.Call(ffi_take_rows, x, as.integer(idx))) # one pass, where `[` took five times longer
  }
  do.call(`[`, c(list(x, idx), rep(list(TRUE), length(dim(x)) - 1L), list(drop = FALSE)))
}

# Binds arrays along their first axis.
bind_batches <- function(parts) {
  if (length(parts) == 1L) return(parts[[1]])
  d <- dim(parts[[1]])
  sizes <- vapply(parts, function(p) dim(p)[1], 0)
  out <- array(0, c(sum(sizes), d[-1]))
  start <- 0
  for (i in seq_along(parts)) {
    idx <- start + seq_len(sizes[[i]])
    out <- do.call(`[<-`, c(list(out, idx), rep(list(TRUE), length(d) - 1L), list(value = parts[[i]])))
    start <- start + sizes[[i]]
  }
  out
}

#' Predict with a model
#'
#' Runs the model on an R array in batches of `batch_size` samples and returns
#' the output array (a list of arrays for a model with several outputs).
#'
#' @param object A model from [keras_model_sequential()] or [keras_model()].
#' @param x An R array (batch first), or a list of arrays for a model with
#'   several inputs (matched to the input layers by name when named).
#' @param batch_size Number of samples per batch.
#' @param verbose 0 silent (the default), 1 or 2 a progress bar over the
#'   batches, `"auto"` 1 in an interactive session (R keras's argument).
#' @param ... Nothing: any other argument is an error.
#' @return An R array, or a list of arrays.
#' @export
#' @examples
#' model <- keras_model_sequential() |> layer_conv_3d(2, 3, padding = "same")
#' y <- predict(model, array(rnorm(3 * 6^3), c(3, 6, 6, 6, 1)), batch_size = 2)
#' dim(y)
predict.conv3d_model <- function(object, x, batch_size = 32, verbose = 0, ...) {
  reject_dots(list(...), "predict")
  self <- model_self(object)
  batch_size <- check_count(batch_size, "batch_size")
  verbose <- check_verbose(verbose)
  inputs <- as_input_list(self, x)
  n <- samples_of(inputs)
  starts <- seq(1L, n, by = batch_size)
  progress <- if (verbose > 0) utils::txtProgressBar(min = 0, max = length(starts), style = 3)
  parts <- lapply(seq_along(starts), function(b) {
    idx <- starts[b]:min(n, starts[b] + batch_size - 1L)
    out <- model_forward(self, if (length(starts) == 1L) inputs else lapply(inputs, slice_batch, idx))
    if (!is.null(progress)) utils::setTxtProgressBar(progress, b)
    out
  })
  if (!is.null(progress)) close(progress)
  outputs <- if (length(parts) == 1L) parts[[1]] else
    lapply(seq_along(parts[[1]]), function(k) bind_batches(lapply(parts, `[[`, k)))
  if (self$kind == "functional" && !self$single_output) outputs else outputs[[1]]
}

#' @export
`$.conv3d_model` <- function(x, name) {
  self <- model_self(x)
  switch(name,
    layers = self$layers,
    name = self$name,
    weights = get_weights(x),
    trainable = self$trainable %||% TRUE,
    trainable_weights = , non_trainable_weights = { # every layer's, in layer order
      want <- name == "trainable_weights"
      weights <- lapply(self$layers, function(l) {
        lself <- layer_self(l)
        trains <- weights_train(lself, layer_trains(self, lself))
        unname(lself$weights[trains == want])
      })
      unlist(weights, recursive = FALSE) %||% list()
    },
    losses = unlist(lapply(self$layers, function(l) layer_losses(layer_self(l))), recursive = FALSE) %||% list(),
    count_params = function() sum(vapply(self$layers, function(l) layer_count_params(layer_self(l)), 0)),
    get_weights = function() get_weights(x),
    set_weights = function(weights) set_weights(x, weights),
    get_layer = function(name = NULL, index = NULL) get_layer(x, name, index),
    summary = function() summary(x),
    built = !is.null(model_shapes(self)),
    input_shape = self$input_shape,
    output_shape = {
      shapes <- model_shapes(self)
      if (is.null(shapes)) NULL else shapes[[length(shapes)]]
    },
    inputs = self$inputs,
    outputs = if (isTRUE(self$single_output)) self$outputs[[1]] else self$outputs,
    NULL
  )
}

#' @export
`[[.conv3d_model` <- function(x, i, ...) `$.conv3d_model`(x, i)

# Whether training updates a layer of the model: the layer trainable, and the
# model not frozen as a whole (Keras: a model whose trainable is FALSE has no
# trainable weights, layers added later included).
layer_trains <- function(self, lself) lself$trainable && !isFALSE(self$trainable)

# `model$trainable <- FALSE` freezes every layer of the model (TRUE unfreezes
# them all), as in Keras.
#' @export
`$<-.conv3d_model` <- function(x, name, value) {
  self <- model_self(x)
  if (!identical(name, "trainable")) {
    conv3d_abort(sprintf("Only `trainable` can be assigned on a model, not `%s`.", name))
  }
  value <- check_flag(value, "trainable")
  self$trainable <- value
  for (layer in self$layers) {
    lself <- layer_self(layer) # an environment: set in place
    lself$trainable <- value
  }
  x
}

#' Get a layer of a model
#'
#' @param object A model.
#' @param name The layer name.
#' @param index The layer position, 1-based; negative values count from the
#'   end (`-1` is the last layer), as in the R keras package. Give `name` or
#'   `index`, not both.
#' @return The layer.
#' @export
#' @examples
#' model <- keras_model_sequential() |> layer_conv_3d(2, 3, name = "first")
#' get_layer(model, "first")
#' get_layer(model, index = 1)
get_layer <- function(object, name = NULL, index = NULL) {
  check_model(object)
  layers <- model_layers(object)
  if (!is.null(name) && !is.null(index)) {
    conv3d_abort("Give `name` or `index`, not both.")
  }
  if (!is.null(name)) {
    if (!is.character(name) || length(name) != 1L || is.na(name)) {
      conv3d_abort(sprintf("`name` must be one layer name, not %s.", format_value(name)))
    }
    names <- vapply(layers, function(l) layer_self(l)$name, "")
    hit <- which(names == name)
    if (!length(hit)) {
      conv3d_abort(sprintf("No layer named %s in model \"%s\"; its layers are %s.", format_value(name),
        model_self(object)$name, if (length(names)) paste0("\"", names, "\"", collapse = ", ") else "none"))
    }
    return(layers[[hit[[1]]]])
  }
  if (!is.null(index)) {
    n <- length(layers)
    ok <- is.numeric(index) && length(index) == 1L && !is.na(index) && index == round(index) &&
      index != 0 && abs(index) <= n
    if (!ok) {
      conv3d_abort(sprintf("`index` must be a whole number from 1 to %d (or -1 to -%d from the end), not %s.",
        n, n, format_value(index)))
    }
    return(layers[[if (index > 0) index else n + 1 + index]])
  }
  conv3d_abort("Give `name` or `index`.")
}
