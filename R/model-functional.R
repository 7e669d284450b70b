# Symbolic tensors and functional models. A tensor records its shape and the
# layer application that produced it; keras_model() walks those records back
# from the outputs to the inputs.

new_tensor <- function(shape, dtype, layer, inbound = NULL) {
  structure(
    list(shape = as.numeric(shape), dtype = dtype, layer = layer, inbound = inbound,
      id = next_tensor_id()),
    class = "conv3d_tensor"
  )
}

# A tensor's id, unique across R sessions: graphs are keyed by ids, and a
# model read back with readRDS() in another session carries its own (a
# counter alone restarts at 1 there, and new tensors would take the ids of
# the loaded ones). The session's token: its temporary directory's name
# (unique among live sessions) and process id; R's random numbers are not
# touched.
tensor_ids <- new.env(parent = emptyenv())
next_tensor_id <- function() {
  if (is.null(tensor_ids$token)) {
    tensor_ids$token <- paste0(basename(tempdir()), "-", Sys.getpid(), "-",
      format(as.numeric(Sys.time()), nsmall = 3))
  }
  tensor_ids$n <- (tensor_ids$n %||% 0) + 1
  paste0(tensor_ids$token, ":", tensor_ids$n)
}

#' Input to a functional model
#'
#' Creates a symbolic tensor: an input to compose layers on, and to give to
#' [keras_model()].
#'
#' @param shape Shape without the batch axis, e.g. `c(32, 32, 32, 1)`; `NA`
#'   (or `NULL` in a list) for a length that can vary.
#' @param batch_shape Shape including the batch axis; wins over `shape`.
#' @param name Name of the input layer; `NULL` gives `input_1`, `input_2`, ...
#' @param dtype `"float32"` or `"float64"`; `NULL` takes [floatx()].
#' @return A symbolic tensor. `x$shape` is its shape as a list (`NULL` where
#'   unknown); `dim(x)` gives it as integers with `NA`.
#' @export
#' @examples
#' input <- layer_input(shape = c(16, 16, 16, 2))
#' input$shape
#' output <- layer_conv_3d(input, filters = 4, kernel_size = 3, strides = 2)
#' dim(output)
layer_input <- function(shape = NULL, batch_shape = NULL, name = NULL, dtype = NULL) {
  if (is.null(shape) && is.null(batch_shape)) {
    conv3d_abort("`shape` or `batch_shape` must be given.")
  }
  batch_shape <- normalize_batch_input_shape(shape, batch_shape, NULL, c("shape", "batch_shape"))
  dtype <- check_dtype(dtype)
  if (is.null(name)) name <- next_name("input", zero_based = FALSE)
  layer <- new_layer("InputLayer", name, list(batch_input_shape = batch_shape), input_layer_methods,
    dtype = dtype, batch_input_shape = batch_shape)
  self <- layer_self(layer)
  self$built <- TRUE
  new_tensor(batch_shape, dtype, layer)
}

input_layer_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) self$batch_input_shape,
  call = function(self, x) x
))

# `tensor`: one tensor, or a merge layer's list of them.
layer_apply_symbolic <- function(layer, tensor) {
  tensors <- if (inherits(tensor, "conv3d_tensor")) list(tensor) else tensor
  shapes <- lapply(tensors, tensor_shape)
  shape <- layer_output_shape(layer, if (isTRUE(layer_self(layer)$merge)) shapes else shapes[[1]])
  new_tensor(shape, layer_self(layer)$dtype %||% tensors[[1]]$dtype, layer, tensors)
}

# The input a node's layer is called on from the values computed so far
# (keyed by tensor id): one value, or a merge layer's list.
node_input <- function(t, values) {
  inputs <- lapply(t$inbound, function(u) values[[as.character(u$id)]])
  if (isTRUE(layer_self(t$layer)$merge)) inputs else inputs[[1]]
}

#' @export
`$.conv3d_tensor` <- function(x, name) {
  if (identical(name, "shape")) {
    return(lapply(unclass(x)$shape, function(v) if (is.na(v)) NULL else as.integer(v)))
  }
  unclass(x)[[name]]
}

tensor_shape <- function(t) unclass(t)$shape

#' @export
dim.conv3d_tensor <- function(x) as.integer(unclass(x)$shape)

format_shape_tuple <- function(shape) {
  paste0("(", paste(ifelse(is.na(shape), "None", format(shape, scientific = FALSE, trim = TRUE)),
    collapse = ", "), ")")
}

#' @export
print.conv3d_tensor <- function(x, ...) {
  t <- unclass(x)
  cat(sprintf("<tensor shape=%s dtype=%s (from %s)>\n", format_shape_tuple(t$shape), t$dtype,
    layer_self(t$layer)$name))
  invisible(x)
}

#' Create a functional model
#'
#' A model defined by the graph of layer applications from `inputs` to
#' `outputs`, made with [layer_input()] and layers applied to tensors.
#'
#' @param inputs A tensor from [layer_input()], or a list of them.
#' @param outputs A tensor computed from the inputs, or a list of them.
#' @param name The model name; `NULL` gives `model`, `model_1`, ...
#' @return A functional model; callable (`model(x)` predicts).
#' @export
#' @examples
#' input <- layer_input(shape = c(10, 10, 10, 1))
#' output <- input |>
#'   layer_conv_3d(4, 3, activation = "relu") |>
#'   layer_conv_3d(1, 3, activation = "sigmoid")
#' model <- keras_model(input, output)
#' model
#' dim(predict(model, array(runif(2 * 1000), c(2, 10, 10, 10, 1))))
keras_model <- function(inputs, outputs, name = NULL) {
  single_output <- inherits(outputs, "conv3d_tensor")
  inputs <- as_tensor_list(inputs, "inputs")
  outputs <- as_tensor_list(outputs, "outputs")
  for (t in inputs) {
    if (!is.null(t$inbound)) conv3d_abort("`inputs` must be tensors from layer_input().")
  }
  input_ids <- vapply(inputs, function(t) as.character(t$id), "")
  if (anyDuplicated(input_ids)) {
    conv3d_abort(sprintf("`inputs` lists input \"%s\" twice: each input must come once.",
      layer_self(inputs[[anyDuplicated(input_ids)]]$layer)$name))
  }
  order <- list() # tensors, each after those it is computed from
  seen <- character()
  layers <- list() # in the order the walk from the outputs first meets them
  visit <- function(t) {
    if (t$id %in% seen) return()
    if (is.null(t$inbound) && !t$id %in% input_ids) {
      conv3d_abort(sprintf(
        "`outputs` depend on input \"%s\", which is not among `inputs`.", layer_self(t$layer)$name
      ))
    }
    if (!any(vapply(layers, identical, TRUE, t$layer))) layers[[length(layers) + 1L]] <<- t$layer
    for (u in t$inbound) visit(u)
    seen <<- c(seen, t$id)
    order[[length(order) + 1L]] <<- t
  }
  for (t in outputs) visit(t)
  layers <- layers_by_depth(order, layers, inputs)
  # names identify layers (get_layer(), weights, training state): unique, as
  # in Keras and in sequential models
  layer_names <- vapply(layers, function(l) layer_self(l)$name, "")
  repeated <- unique(layer_names[duplicated(layer_names)])
  if (length(repeated)) {
    conv3d_abort(sprintf(
      "The name \"%s\" is used %d times in the model: layer names must be unique.",
      repeated[1], sum(layer_names == repeated[1])))
  }
  self <- new_model_self("functional", check_name(name, "model"))
  self$inputs <- inputs
  self$outputs <- outputs
  self$single_output <- single_output
  self$nodes <- order
  self$layers <- layers
  self$input_shape <- tensor_shape(inputs[[1]])
  model_callable(self)
}

# A functional model's layers in Keras's order (_map_graph_network): by
# depth, the inputs' first (a tensor's depth: 0 for the outputs, else one
# more than the deepest tensor computed from it; a layer's: its deepest
# tensor's), ties in the order the walk from the outputs met them. `order`:
# the tensors, each after its inbound ones; `met`: the layers as met.
layers_by_depth <- function(order, met, inputs) {
  ids <- vapply(order, function(t) as.character(t$id), "")
  depth <- stats::setNames(numeric(length(order)), ids)
  layer_depth <- numeric(length(met))
  layer_of <- function(t) which(vapply(met, identical, TRUE, t$layer))[1]
  for (t in rev(order)) {
    j <- layer_of(t)
    d <- max(depth[[as.character(t$id)]], layer_depth[j])
    layer_depth[j] <- d
    depth[[as.character(t$id)]] <- d
    for (u in t$inbound) depth[[as.character(u$id)]] <- max(d + 1, depth[[as.character(u$id)]])
  }
  rank <- seq_along(met)
  # inputs the outputs do not depend on: depth 0, before the others met
  for (t in inputs) {
    if (!any(vapply(met, identical, TRUE, t$layer))) {
      met[[length(met) + 1L]] <- t$layer
      layer_depth <- c(layer_depth, 0)
      rank <- c(rank, 0)
    }
  }
  met[order(-layer_depth, rank)]
}

as_tensor_list <- function(x, arg) {
  if (inherits(x, "conv3d_tensor")) return(list(x))
  if (is.list(x) && length(x) && all(vapply(x, inherits, TRUE, "conv3d_tensor"))) return(unname(x))
  conv3d_abort(sprintf("`%s` must be a tensor or a list of tensors, not %s.", arg, format_value(x)))
}

# Runs the graph on concrete arrays: `inputs` is a list of arrays in input order.
functional_forward <- function(self, inputs) {
  values <- list()
  for (i in seq_along(self$inputs)) values[[as.character(self$inputs[[i]]$id)]] <- inputs[[i]]
  for (t in self$nodes) {
    key <- as.character(t$id)
    if (!is.null(values[[key]])) next
    values[[key]] <- layer_apply_array(t$layer, node_input(t, values))
  }
  lapply(self$outputs, function(t) values[[as.character(t$id)]])
}
