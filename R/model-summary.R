# summary() and print() of models, in the format of Keras 2.15's print_summary().

# Output shape of every layer (batch-first, NA unknown), or NULL when not built.
model_shapes <- function(self) {
  if (self$kind == "functional") {
    return(lapply(self$layers, function(layer) layer_node_shapes(self, layer)[[1]]))
  }
  if (is.null(self$input_shape)) return(NULL)
  shape <- self$input_shape
  lapply(self$layers, function(layer) shape <<- layer_output_shape(layer, shape))
}

# The output shapes of a functional model's layer, one per call (an input
# layer's: its input's).
layer_node_shapes <- function(self, layer) {
  shapes <- list()
  for (t in c(self$inputs, self$nodes)) {
    if (identical(t$layer, layer)) shapes[[length(shapes) + 1L]] <- tensor_shape(t)
  }
  shapes
}

# Whether a layer of a functional model is called more than once with outputs
# of different shapes (Keras prints "multiple" for it).
layer_shapes_differ <- function(self, layer) {
  self$kind == "functional" && length(unique(layer_node_shapes(self, layer))) > 1L
}

# A functional model prints like a sequential one when it is a plain chain.
model_is_chain <- function(self) {
  if (self$kind == "sequential") return(TRUE)
  if (length(self$inputs) != 1L || length(self$outputs) != 1L) return(FALSE)
  consumers <- table(unlist(lapply(self$nodes, function(t) {
    vapply(t$inbound, function(u) as.character(u$id), "")
  })))
  layer_uses <- table(vapply(self$nodes, function(t) layer_self(t$layer)$name, ""))
  all(consumers <= 1) && all(layer_uses <= 1)
}

readable_memory_size <- function(bytes) {
  units <- c("Byte", "KB", "MB", "GB", "TB", "PB")
  for (unit in units) {
    if (bytes / 1024 < 1) return(sprintf("%.2f %s", bytes, unit))
    bytes <- bytes / 1024
  }
  sprintf("%.2f %s", bytes, units[[length(units)]])
}

# One table row, wrapped over several lines when a field is too long.
summary_row <- function(fields, positions) {
  left <- as.character(fields)
  lines <- character()
  while (any(nzchar(left))) {
    line <- ""
    for (col in seq_along(left)) {
      start <- if (col > 1L) positions[[col - 1L]] else 0L
      last <- col == length(positions)
      space <- if (last) 0L else 2L
      cutoff <- positions[[col]] - start - space - if (last) 0L else 1L
      fit <- substr(left[[col]], 1L, cutoff)
      breaks <- vapply(c("),", "},", "],", "',"), function(b) {
        at <- regexpr(b, fit, fixed = TRUE)
        if (at > 0) at + 1L else NA_integer_
      }, 0L)
      if (any(!is.na(breaks))) {
        cutoff <- min(breaks, na.rm = TRUE)
        fit <- substr(fit, 1L, cutoff)
      }
      if (col == 1L) line <- paste0(line, " ")
      line <- paste0(line, fit, strrep(" ", space))
      left[[col]] <- substr(left[[col]], cutoff + 1L, nchar(left[[col]]))
      line <- paste0(line, strrep(" ", max(0L, positions[[col]] - nchar(line))))
    }
    lines <- c(lines, line)
  }
  lines
}

model_summary_lines <- function(self) {
  shapes <- model_shapes(self)
  if (is.null(shapes)) return("Model: <no summary available, model was not built>")
  chain <- model_is_chain(self)
  width <- if (chain) 65L else 98L
  positions <- as.integer(width * if (chain) c(0.45, 0.85, 1) else c(0.33, 0.55, 0.67, 1))
  header <- c("Layer (type)", "Output Shape", "Param #", if (!chain) "Connected to")
  lines <- c(sprintf("Model: \"%s\"", self$name), strrep("_", width),
    summary_row(header, positions), strrep("=", width))
  trainable <- 0
  frozen <- 0
  trainable_bytes <- 0
  frozen_bytes <- 0
  for (i in seq_along(self$layers)) {
    lself <- layer_self(self$layers[[i]])
    params <- layer_count_params(lself)
    value_bytes <- if (identical(lself$dtype, "float64")) 8 else 4
    counts <- vapply(lself$weights, length, 0)
    trains <- weights_train(lself, layer_trains(self, lself))
    trainable <- trainable + sum(counts[trains])
    trainable_bytes <- trainable_bytes + sum(counts[trains]) * value_bytes
    frozen <- frozen + sum(counts[!trains])
    frozen_bytes <- frozen_bytes + sum(counts[!trains]) * value_bytes
    shape <- if (layer_shapes_differ(self, self$layers[[i]])) "multiple" else
      format_shape_tuple(shapes[[i]])
    if (lself$class_name == "InputLayer") shape <- paste0("[", shape, "]")
    fields <- c(sprintf("%s (%s)", lself$name, lself$class_name), shape, format(params, scientific = FALSE))
    if (!chain) fields <- c(fields, layer_connections(self, self$layers[[i]]))
    lines <- c(lines, summary_row(fields, positions), strrep(" ", width))
  }
  c(lines, strrep("=", width),
    sprintf("Total params: %s (%s)", format(trainable + frozen, scientific = FALSE),
      readable_memory_size(trainable_bytes + frozen_bytes)),
    sprintf("Trainable params: %s (%s)", format(trainable, scientific = FALSE),
      readable_memory_size(trainable_bytes)),
    sprintf("Non-trainable params: %s (%s)", format(frozen, scientific = FALSE),
      readable_memory_size(frozen_bytes)),
    strrep("_", width))
}

# Keras's "Connected to" column: ['conv3d[0][0]', ...] for every call of the layer.
layer_connections <- function(self, layer) {
  calls <- Filter(function(t) identical(t$layer, layer) && length(t$inbound), self$nodes)
  names <- unlist(lapply(calls, function(t) vapply(t$inbound, function(u) {
    producer <- u$layer
    produced <- Filter(function(v) identical(v$layer, producer), c(self$inputs, self$nodes))
    node <- which(vapply(produced, function(v) as.character(v$id), "") == as.character(u$id))[1] - 1L
    sprintf("%s[%d][0]", layer_self(producer)$name, node)
  }, "")))
  if (!length(names)) return("[]")
  paste0("[", paste0("'", names, "'", collapse = ", "), "]")
}

#' Summarise or print a model
#'
#' Prints the model as Keras 2.15 does: one row per layer with its name, type,
#' output shape and parameter count, then the totals with their memory size.
#' A model whose input shape is not known yet prints
#' `Model: <no summary available, model was not built>`.
#'
#' @param object,x A model.
#' @param ... Unused.
#' @return The model, invisibly.
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(16, 16, 16, 1)) |>
#'   layer_conv_3d(8, 3, padding = "same")
#' summary(model)
summary.conv3d_model <- function(object, ...) {
  cat(model_summary_lines(model_self(object)), sep = "\n")
  invisible(object)
}

#' @rdname summary.conv3d_model
#' @export
print.conv3d_model <- function(x, ...) {
  summary.conv3d_model(x)
}
