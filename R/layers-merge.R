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
      self$name, self$class_name, if (is.list(shapes) && length(shapes) != 1L) {
        sprintf("a list of %d", length(shapes))
      } else "one input"), class = "conv3d_error_shape")
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
    mixed <- is.list(xs) && any(vapply(xs, inherits, TRUE, "conv3d_tensor"))
    conv3d_abort(sprintf("Layer \"%s\" (%s) must be called on a list of numeric arrays (or one of tensors), not %s.",
      self$name, self$class_name, if (mixed) "a mix of tensors and other values" else format_value(xs)),
      class = "conv3d_error_shape")
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
#' @param batch_size Taken for R keras's signature; as in Keras it only sets a
#'   batch size together with an input shape, which a merge layer takes from
#'   its inputs, so it changes nothing here.
#' @param axis The axis to join along, as R keras (2.x) passes it to Keras:
#'   negative counts from the last axis (`-1`, the channels of a
#'   channels_last volume), non-negative counts from 0, the samples' axis
#'   (so `1` is the depth of a channels_last volume).
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
      abs(axis) > 1e6) {
    conv3d_abort(sprintf("`axis` must be a whole number (0 the samples' axis, negative from the last), not %s.",
      format_value(axis)))
  }
  make_merge_layer(inputs, "Concatenate", list(axis = as.integer(axis)), concatenate_methods,
    batch_size, dtype, name, trainable, weights)
}

# The R (1-based) axes of a rank-r input that Keras's `axis` values name
# (counted from 0, the samples' axis, or from the end), as R keras 2 passes
# them.
keras_axes <- function(axis, r) ifelse(axis < 0, r + 1L + axis, axis + 1L)

# The R axis of a rank-r input that a concatenation's `axis` names, or an error.
concatenate_axis <- function(self, r) {
  axis <- self$config$axis
  k <- keras_axes(axis, r)
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
    out <- shapes[[1]] # Keras takes the other lengths from the first input
    for (s in shapes[-1]) {
      if (!all(lengths_agree(out[-k], s[-k]))) {
        conv3d_abort(sprintf(
          "The inputs of layer \"%s\" must have the same shape except along axis %d, not %s.",
          self$name, self$config$axis, paste(vapply(shapes, format_shape_tuple, ""), collapse = ", ")),
          class = "conv3d_error_shape")
      }
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
#' Keras's `layer_add()`: the element-wise sum of inputs of one shape, lengths
#' of 1 broadcast as in Keras (a residual connection).
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
  # Keras's element-wise shape rule: equal lengths, or 1 against any (broadcast);
  # an unknown length gives an unknown one; the samples must agree
  output_shape = function(self, input_shape) {
    shapes <- merge_input_shapes(self, input_shape)
    refuse <- function() {
      conv3d_abort(sprintf("The inputs of layer \"%s\" must have one shape (or lengths of 1 to broadcast), not %s.",
        self$name, paste(vapply(shapes, format_shape_tuple, ""), collapse = ", ")),
        class = "conv3d_error_shape")
    }
    batch <- unique(stats::na.omit(vapply(shapes, function(s) s[1], 0)))
    if (length(batch) > 1L) refuse()
    out <- shapes[[1]][-1]
    for (s in shapes[-1]) {
      s <- s[-1]
      out <- vapply(seq_along(out), function(i) {
        a <- out[i]
        b <- s[i]
        if (is.na(a) || is.na(b)) NA_real_ else if (a == 1) b else if (b == 1 || a == b) a else refuse()
      }, 0)
    }
    c(if (length(batch)) batch else NA, out)
  },
  call = function(self, xs) {
    xs <- merge_arrays(self, xs)
    d <- self$output_shape(self, lapply(xs, dim))
    round_to_dtype(Reduce(`+`, lapply(xs, broadcast_to, d)), self$dtype)
  },
  backward = function(self, xs, dy, input) {
    # a broadcast input's gradient: dy summed over the axes it was repeated along
    list(input = lapply(xs, function(x) unbroadcast(array(as.numeric(dy), dim(dy)), dim(x))),
      weights = list())
  }
))

# `x` repeated along its axes of length 1 to dim `d`.
broadcast_to <- function(x, d) {
  if (identical(as.numeric(dim(x)), as.numeric(d))) return(x)
  index <- lapply(seq_along(d), function(i) if (dim(x)[i] == 1L) rep(1L, d[i]) else seq_len(d[i]))
  do.call(`[`, c(list(x), index, list(drop = FALSE)))
}

# The sums of `g` over the axes where `d` has length 1 and `g` does not.
unbroadcast <- function(g, d) {
  for (i in which(d == 1 & dim(g) != 1)) {
    dg <- dim(g)
    others <- setdiff(seq_along(dg), i)
    sums <- colSums(matrix(aperm(g, c(i, others)), nrow = dg[i]))
    g <- aperm(array(sums, c(1L, dg[others])), order(c(i, others)))
  }
  g
}
