# Merge layers (concatenate, add), which take several inputs: a U-Net's skip
# connections, a residual block's sum. They compose like the other layers,
# called on a list of tensors or arrays.

# Builds a merge layer and composes it with `inputs` (missing/NULL: the layer;
# a list of tensors: a tensor; a list of arrays: the computed array).
make_merge_layer <- function(inputs, class_name, config, methods, batch_size, dtype, name,
                             trainable, weights) {
  made <- make_layer(NULL, class_name, config, methods, "inputs", NULL, NULL, batch_size, dtype,
    name, trainable, weights)
  self <- layer_self(made$layer)
  self$merge <- TRUE # called on a list of inputs
  compose_layer(made$layer, inputs, "inputs")
}

# The shapes of a merge layer's inputs, checked: at least two, of one rank.
merge_input_shapes <- function(self, shapes) {
  if (!is.list(shapes) || length(shapes) < 2L) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) must be called on a list of at least 2 inputs, not %s.",
      self$name, self$class_name, if (is.list(shapes)) sprintf("a list of %d", length(shapes))
      else "one input"), class = "conv3d_error_shape")
  }
  ranks <- lengths(shapes)
  if (any(ranks != ranks[1])) {
    conv3d_abort(sprintf("The inputs of layer \"%s\" must have one rank, not shapes %s.", self$name,
      paste(vapply(shapes, format_shape_tuple, ""), collapse = ", ")), class = "conv3d_error_shape")
  }
  shapes
}

# Whether two lengths agree where both are known.
lengths_agree <- function(a, b) is.na(a) | is.na(b) | a == b

# The inputs of a merge layer's call as arrays of its dtype.
merge_arrays <- function(self, xs) {
  if (!is.list(xs) || is.array(xs) || !all(vapply(xs, is.numeric, TRUE))) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) must be called on a list of numeric arrays, not %s.",
      self$name, self$class_name, format_value(xs)), class = "conv3d_error_shape")
  }
  xs <- lapply(xs, function(x) round_to_dtype(array(as.numeric(x), dim(x) %||% length(x)), self$dtype))
  self$output_shape(self, lapply(xs, dim))
  xs
}

#' Concatenate a list of inputs along one axis
#'
#' Keras's `layer_concatenate()`: the inputs must have the same shape except
#' along `axis` (a U-Net joins its skip connections this way, along the
#' channels).
#'
#' @inheritParams layer-common
#' @param inputs A list of at least 2 tensors (from [layer_input()] and
#'   layers) or R arrays; missing or `NULL` gives the layer, to call later on
#'   such a list.
#' @param axis The axis to join along, as in R keras: negative counts from the
#'   last axis (`-1`, the channels of a channels_last volume), positive is
#'   R's 1-based axis with the samples as axis 1.
#' @return A tensor, an array, or the layer, following `inputs`.
#' @family merge layers
#' @export
#' @examples
#' a <- array(1, c(2, 4, 4, 4, 3))
#' b <- array(2, c(2, 4, 4, 4, 5))
#' dim(layer_concatenate(list(a, b)))
#' input <- layer_input(c(8, 8, 8, 1))
#' skip <- layer_conv_3d(input, 4, 3, padding = "same")
#' down <- layer_max_pooling_3d(skip, 2)
#' up <- layer_upsampling_3d(layer_conv_3d(down, 4, 3, padding = "same"), 2)
#' dim(layer_concatenate(list(skip, up)))
layer_concatenate <- function(inputs, axis = -1, batch_size = NULL, dtype = NULL, name = NULL,
                              trainable = NULL, weights = NULL) {
  inputs <- if (missing(inputs)) NULL else inputs
  if (!is.numeric(axis) || length(axis) != 1L || !is.finite(axis) || axis != round(axis) ||
      axis == 0) {
    conv3d_abort(sprintf("`axis` must be a non-zero whole number (negative from the last axis), not %s.",
      format_value(axis)))
  }
  make_merge_layer(inputs, "Concatenate", list(axis = as.integer(axis)), concatenate_methods,
    batch_size, dtype, name, trainable, weights)
}

# The 1-based axis of a rank-r input that `axis` names, or an error.
concatenate_axis <- function(self, r) {
  axis <- self$config$axis
  k <- if (axis < 0) r + 1L + axis else axis
  if (k < 1L || k > r) {
    conv3d_abort(sprintf("`axis` %d of layer \"%s\" is outside inputs of rank %d.", axis, self$name, r),
      class = "conv3d_error_shape")
  }
  k
}

concatenate_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) {
    shapes <- merge_input_shapes(self, input_shape)
    k <- concatenate_axis(self, length(shapes[[1]]))
    out <- shapes[[1]]
    for (s in shapes[-1]) {
      if (!all(lengths_agree(out[-k], s[-k]))) {
        conv3d_abort(sprintf(
          "The inputs of layer \"%s\" must have the same shape except along axis %d, not %s.",
          self$name, k, paste(vapply(shapes, format_shape_tuple, ""), collapse = ", ")),
          class = "conv3d_error_shape")
      }
      out[-k] <- ifelse(is.na(out[-k]), s[-k], out[-k])
      out[k] <- out[k] + s[k] # NA when either is unknown
    }
    out
  },
  call = function(self, xs) {
    xs <- merge_arrays(self, xs)
    r <- length(dim(xs[[1]]))
    k <- concatenate_axis(self, r)
    # move the axis last, bind, move it back
    perm <- c(setdiff(seq_len(r), k), k)
    parts <- lapply(xs, function(x) aperm(x, perm))
    d <- dim(parts[[1]])
    joined <- array(unlist(parts, use.names = FALSE), c(d[-r], sum(vapply(parts, function(p) dim(p)[r], 0))))
    aperm(joined, order(perm))
  },
  backward = function(self, xs, dy, input) {
    r <- length(dim(xs[[1]]))
    k <- concatenate_axis(self, r)
    sizes <- vapply(xs, function(x) dim(x)[k], 0)
    ends <- cumsum(sizes)
    parts <- lapply(seq_along(xs), function(j) {
      index <- rep(list(TRUE), r)
      index[[k]] <- (ends[j] - sizes[j] + 1):ends[j]
      do.call(`[`, c(list(dy), index, list(drop = FALSE)))
    })
    list(input = parts, weights = list())
  }
))

#' Add a list of inputs
#'
#' Keras's `layer_add()`: the element-wise sum of inputs of one shape (a
#' residual connection).
#'
#' @inheritParams layer_concatenate
#' @return A tensor, an array, or the layer, following `inputs`.
#' @family merge layers
#' @export
#' @examples
#' layer_add(list(array(1:8, c(1, 2, 2, 2, 1)), array(1, c(1, 2, 2, 2, 1))))[1, , , , 1]
layer_add <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                      weights = NULL) {
  inputs <- if (missing(inputs)) NULL else inputs
  make_merge_layer(inputs, "Add", list(), add_methods, batch_size, dtype, name, trainable, weights)
}

add_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) {
    shapes <- merge_input_shapes(self, input_shape)
    out <- shapes[[1]]
    for (s in shapes[-1]) {
      if (!all(lengths_agree(out, s))) {
        conv3d_abort(sprintf("The inputs of layer \"%s\" must have one shape, not %s.", self$name,
          paste(vapply(shapes, format_shape_tuple, ""), collapse = ", ")), class = "conv3d_error_shape")
      }
      out <- ifelse(is.na(out), s, out)
    }
    out
  },
  call = function(self, xs) {
    xs <- merge_arrays(self, xs)
    round_to_dtype(Reduce(`+`, xs), self$dtype)
  },
  backward = function(self, xs, dy, input) {
    list(input = rep(list(array(as.numeric(dy), dim(dy))), length(xs)), weights = list())
  }
))
