#' Create a sequential model
#'
#' A linear stack of layers. Layers are added in place by piping the model into
#' a layer function (`model |> layer_conv_3d(...)`), as in Keras. The model is
#' built (its weights created) as soon as the input shape is known: from
#' `input_shape` here, from the first layer's `input_shape` /
#' `batch_input_shape`, or from the first array it predicts on.
#'
#' @param layers `NULL` or a list of layers to add.
#' @param name The model name; `NULL` gives `sequential`, `sequential_1`, ...
#' @param ... `input_shape` (without the batch axis) or `batch_input_shape`.
#' @return A sequential model. Models are callable: `model(x)` predicts.
#' @seealso [keras_model()], [predict.conv3d_model()], [summary.conv3d_model()].
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(12, 12, 12, 1))
#' model |>
#'   layer_conv_3d(4, 3, activation = "relu") |>
#'   layer_conv_3d(2, 3)
#' summary(model)
#' length(model$layers)
keras_model_sequential <- function(layers = NULL, name = NULL, ...) {
  dots <- list(...)
  given <- names(dots) %||% rep("", length(dots))
  reject_dots(dots[!given %in% c("input_shape", "batch_input_shape")], "keras_model_sequential")
  self <- new_model_self("sequential", check_name(name, "sequential"))
  self$input_shape <- normalize_batch_input_shape(dots$input_shape, dots$batch_input_shape, NULL)
  model <- model_callable(self)
  if (!is.null(layers)) {
    if (inherits(layers, "conv3d_layer")) layers <- list(layers)
    for (layer in layers) sequential_add(model, layer)
  }
  model
}

sequential_add <- function(model, layer) {
  self <- model_self(model)
  if (!inherits(layer, "conv3d_layer")) {
    conv3d_abort(sprintf("Only layers can be added to a sequential model, not %s.", format_value(layer)))
  }
  lself <- layer_self(layer)
  if (isTRUE(lself$merge)) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) merges several inputs: use it in a functional model (keras_model()), not a sequential one.",
      lself$name, lself$class_name))
  }
  names_in_use <- vapply(self$layers, function(l) layer_self(l)$name, "")
  if (lself$name %in% names_in_use) {
    conv3d_abort(sprintf(
      "`name` must be unique within a model: \"%s\" is already the name of a layer of model \"%s\".",
      lself$name, self$name
    ))
  }
  input_shape <- self$input_shape
  if (!length(self$layers) && is.null(input_shape)) input_shape <- lself$batch_input_shape
  layers <- c(self$layers, list(layer))
  # build (and so check) the whole stack before changing the model
  if (!is.null(input_shape)) sequential_output_shape(layers, input_shape)
  self$input_shape <- input_shape
  self$layers <- layers
  invisible(model)
}

sequential_output_shape <- function(layers, input_shape) {
  shape <- input_shape
  for (layer in layers) shape <- layer_output_shape(layer, shape)
  shape
}

#' Remove the last layer of a sequential model
#'
#' @param object A sequential model.
#' @return The model, modified in place, invisibly.
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(8, 8, 8, 1)) |>
#'   layer_conv_3d(2, 3) |>
#'   layer_conv_3d(2, 3)
#' pop_layer(model)
#' length(model$layers)
pop_layer <- function(object) {
  if (!inherits(object, "conv3d_model_sequential")) {
    conv3d_abort(sprintf("`object` must be a sequential model, not %s.", format_value(object)))
  }
  self <- model_self(object)
  if (!length(self$layers)) {
    conv3d_abort(sprintf("There are no layers to remove from model \"%s\".", self$name))
  }
  self$layers <- self$layers[-length(self$layers)]
  invisible(object)
}
