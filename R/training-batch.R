# Keras's single-batch functions for custom training loops, and R keras's
# freeze_weights() / unfreeze_weights().

#' Train, test or predict on one batch
#'
#' Keras's `train_on_batch()`, `test_on_batch()` and `predict_on_batch()`:
#' `train_on_batch()` runs one gradient update of a compiled model on all the
#' samples given (dropout active, as in [fit()]); `test_on_batch()` scores
#' them without updating (as [evaluate()]); `predict_on_batch()` returns the
#' model's outputs for them in one pass.
#'
#' @param object A model ([compile()]d for `train_on_batch()` and
#'   `test_on_batch()`).
#' @param x,y Inputs and targets, as for [fit()].
#' @param class_weight,sample_weight As for [fit()].
#' @return `train_on_batch()` and `test_on_batch()`: a named numeric vector,
#'   the loss (with the layers' penalties) and the metrics, as [evaluate()]
#'   reports them (`train_on_batch()`'s are those of the forward pass before
#'   the update, as in Keras; R keras returns the same values unnamed, a
#'   number or a list). `predict_on_batch()`: as [predict()].
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
#'   layer_flatten(dtype = "float64") |>
#'   layer_dense(1, dtype = "float64")
#' compile(model, optimizer_sgd(0.1), "mse")
#' x <- array(rnorm(4 * 8), c(4, 2, 2, 2, 1))
#' y <- rnorm(4)
#' for (step in 1:3) print(train_on_batch(model, x, y))
#' test_on_batch(model, x, y)
#' predict_on_batch(model, x)
train_on_batch <- function(object, x, y, class_weight = NULL, sample_weight = NULL) {
  if (missing(y)) conv3d_abort("`y` is missing: give the targets.")
  self <- compiled_self(object)
  data <- training_data(self, x, y, sample_weight)
  weights <- with_class_weight(data$weights, class_weight, data$targets, data$n)
  batch_values(train_batch(self, model_plan(self), data$inputs, data$targets, weights))
}

#' @rdname train_on_batch
#' @export
test_on_batch <- function(object, x, y, sample_weight = NULL) {
  if (missing(y)) conv3d_abort("`y` is missing: give the targets.")
  self <- compiled_self(object)
  data <- training_data(self, x, y, sample_weight)
  batch_values(eval_batch(self, model_plan(self), data$inputs, data$targets, data$weights))
}

#' @rdname train_on_batch
#' @export
predict_on_batch <- function(object, x) {
  check_model(object)
  n <- samples_of(as_input_list(model_self(object), x))
  stats::predict(object, x, batch_size = n, verbose = 0)
}

compiled_self <- function(object) {
  check_model(object)
  self <- model_self(object)
  check_compiled(self)
  self
}

# A batch's logs as evaluate() reports them.
batch_values <- function(logs) vapply(logs, function(v) as.numeric(v), 0)

#' Freeze and unfreeze the weights of a model's layers
#'
#' R keras's `freeze_weights()` and `unfreeze_weights()`: freeze (unfreeze)
#' the layers chosen by `from`/`to` (a range, both ends included) or by
#' `which`, and, as in R keras, unfreeze (freeze) all the others; with none
#' of them, the whole model (as `model$trainable <- FALSE` / `TRUE`). A
#' frozen layer keeps its weights in [fit()] and [train_on_batch()]; the
#' change applies to the next training call.
#'
#' @param object A model.
#' @param from,to The first and last layer of the range: a layer, a layer
#'   name or a 1-based index in `object$layers` (`NULL`: the first / last
#'   layer).
#' @param which Instead of a range: layers, layer names, indices, a logical
#'   vector over `object$layers`, or a function of a layer returning `TRUE`
#'   for those to choose.
#' @return `object`, invisibly (modified in place).
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(4, 4, 4, 1)) |>
#'   layer_conv_3d(2, 3, name = "features") |>
#'   layer_flatten() |>
#'   layer_dense(1, name = "head")
#' freeze_weights(model, to = "features")
#' vapply(model$layers, function(l) l$trainable, TRUE)
#' unfreeze_weights(model)
freeze_weights <- function(object, from = NULL, to = NULL, which = NULL) {
  set_trainable(object, FALSE, from, to, which)
}

#' @rdname freeze_weights
#' @export
unfreeze_weights <- function(object, from = NULL, to = NULL, which = NULL) {
  set_trainable(object, TRUE, from, to, which)
}

set_trainable <- function(object, value, from, to, which) {
  check_model(object)
  if (!is.null(which) && !(is.null(from) && is.null(to))) {
    conv3d_abort("Give `which` or `from`/`to`, not both.")
  }
  if (is.null(from) && is.null(to) && is.null(which)) {
    object$trainable <- value
    return(invisible(object))
  }
  layers <- model_layers(object)
  names <- vapply(layers, function(l) layer_self(l)$name, "")
  position <- function(ref, arg) { # a layer, a name or a 1-based index, as get_layer() takes them
    if (inherits(ref, "conv3d_layer")) ref <- layer_self(ref)$name
    layer <- if (is.character(ref)) get_layer(object, name = ref) else
      tryCatch(get_layer(object, index = ref), conv3d_error = function(e) {
        conv3d_abort(sprintf("`%s` must be a layer name or an index from 1 to %d, not %s.", arg,
          length(layers), format_value(ref)))
      })
    which(vapply(layers, identical, TRUE, layer))[1]
  }
  if (is.function(which) && !inherits(which, c("conv3d_layer", "conv3d_model"))) { # a predicate
    which <- vapply(layers, function(l) isTRUE(which(l)), TRUE)
  }
  if (inherits(which, "conv3d_layer")) which <- list(which)
  chosen <- if (!is.null(which)) {
    if (is.logical(which)) {
      if (length(which) != length(layers) || anyNA(which)) {
        conv3d_abort(sprintf("A logical `which` must have one value per layer (%d), not %s.",
          length(layers), format_value(which)))
      }
      base::which(which)
    } else if (is.character(which) || is.numeric(which) ||
               (is.list(which) && all(vapply(which, inherits, TRUE, "conv3d_layer")))) {
      vapply(as.list(which), position, 1L, arg = "which")
    } else {
      conv3d_abort(sprintf(
        "`which` must be layers, layer names, indices, a logical vector or a function of a layer, not %s.",
        format_value(which)))
    }
  } else {
    first <- if (is.null(from)) 1L else position(from, "from")
    last <- if (is.null(to)) length(layers) else position(to, "to")
    if (first > last) {
      conv3d_abort(sprintf("`from` (layer %d, \"%s\") comes after `to` (layer %d, \"%s\").", first,
        names[first], last, names[last]))
    }
    first:last
  }
  # as in R keras, a global operation: the chosen layers get `value`, the
  # others the opposite, and the model itself is trainable
  object$trainable <- TRUE
  for (i in seq_along(layers)) {
    lself <- layer_self(layers[[i]])
    lself$trainable <- if (i %in% chosen) value else !value
  }
  invisible(object)
}
