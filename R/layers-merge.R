# Merge layers (concatenate, and the element-wise add, subtract, multiply,
# average, maximum and minimum), which take several inputs: a U-Net's skip
# connections, a residual block's sum, an attention gate's product. They
# compose like the other layers, called on a list of tensors or arrays.

# Builds a merge layer and composes it with `inputs` (missing/NULL: the layer;
# a list of tensors: a tensor; a list of arrays: the computed array).
make_merge_layer <- function(inputs, class_name, config, methods, batch_size, dtype, name,
                             trainable, weights) {
  if (!is.null(batch_size)) check_count(batch_size, "batch_size")
  made <- make_layer(NULL, class_name, config, methods, "inputs", NULL, NULL, batch_size, dtype,
    name, trainable, weights)
  self <- layer_self(made$layer)
  no_weights(self, weights) # here: called on arrays, a merge layer is never built
  self$merge <- TRUE # called on a list of inputs
  compose_layer(made$layer, inputs, "inputs")
}

# The shapes of a merge layer's inputs, checked: at least two, of one rank
# (unless `any_rank`).
merge_input_shapes <- function(self, shapes, any_rank = FALSE) {
  if (!is.list(shapes) || length(shapes) < 2L) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) must be called on a list of at least 2 inputs, not %s.",
      self$name, self$class_name, if (is.list(shapes) && length(shapes) != 1L) {
        sprintf("a list of %d", length(shapes))
      } else "one input"), class = "conv3d_error_shape")
  }
  ranks <- lengths(shapes)
  if (!any_rank && any(ranks != ranks[1])) {
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
  xs <- lapply(xs, function(x) layer_input_array(self, x))
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
    k <- concatenate_axis(self, length(dim(xs[[1]])))
    out_d <- dim(xs[[1]])
    out_d[k] <- sum(vapply(xs, function(x) dim(x)[k], 0))
    # in C: in R's column-major order the joined array is the inputs bound
    # by rows, as matrices whose columns run over the axes after k
    .Call(ffi_concatenate, xs, prod(out_d[-seq_len(k)]), as.integer(out_d))
  },
  backward = function(self, xs, dy, input) {
    k <- concatenate_axis(self, length(dim(xs[[1]])))
    if (!is.numeric(dy) || length(dy) != sum(lengths(xs))) {
      conv3d_abort(sprintf("`dy` must hold %.0f values, as the output of layer \"%s\", not %s.",
        sum(lengths(xs)), self$name, format_value(dy)), class = "conv3d_error_shape")
    }
    list(input = .Call(ffi_split_rows, dy, prod(dim(xs[[1]])[-seq_len(k)]), lapply(xs, dim)),
      weights = list())
  }
))

#' Element-wise merges: add, subtract, multiply, average, maximum, minimum
#'
#' Keras's element-wise merge layers, for inputs of one shape (lengths of 1
#' broadcast as in Keras): `layer_add()` sums them (a residual connection),
#' `layer_subtract()` takes the first less the second (exactly 2 inputs),
#' `layer_multiply()` multiplies them (an attention gate), `layer_average()`
#' averages them, `layer_maximum()` and `layer_minimum()` take their
#' element-wise extremes. As in Keras, the inputs are combined from the first
#' to the last, each step in the layer's precision; a maximum's or minimum's
#' gradient goes to the first input holding it (TensorFlow's rule for ties).
#' An input of lower rank gets axes of length 1 after its samples' axis, as
#' Keras adds them, so a `(batch, channels)` input scales or shifts each
#' channel of a `(batch, d, h, w, channels)` volume. The inputs come as one
#' list (R keras 2's `inputs`), not as separate arguments.
#'
#' @inheritParams layer_concatenate
#' @return A tensor, an array, or the layer, following `inputs`.
#' @family merge layers
#' @export
#' @examples
#' a <- array(1:8, c(1, 2, 2, 2, 1))
#' b <- array(4, c(1, 2, 2, 2, 1))
#' layer_add(list(a, b))[1, , , , 1]
#' layer_subtract(list(a, b))[1, , , , 1]
#' layer_maximum(list(a, b, array(6, c(1, 1, 1, 1, 1))))[1, , , , 1] # broadcast
layer_add <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                      weights = NULL) {
  make_merge_layer(if (missing(inputs)) NULL else inputs, "Add", list(),
    elementwise_merge_methods(`+`, function(xs, dy, r) rep(list(dy), length(xs))), batch_size,
    dtype, name, trainable, weights)
}

#' @rdname layer_add
#' @export
layer_subtract <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL,
                           trainable = NULL, weights = NULL) {
  make_merge_layer(if (missing(inputs)) NULL else inputs, "Subtract", list(),
    elementwise_merge_methods(`-`, function(xs, dy, r) list(dy, -dy), n_inputs = 2L), batch_size,
    dtype, name, trainable, weights)
}

#' @rdname layer_add
#' @export
layer_multiply <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL,
                           trainable = NULL, weights = NULL) {
  make_merge_layer(if (missing(inputs)) NULL else inputs, "Multiply", list(),
    elementwise_merge_methods(`*`, multiply_grads), batch_size, dtype, name, trainable, weights)
}

#' @rdname layer_add
#' @export
layer_average <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL,
                          trainable = NULL, weights = NULL) {
  make_merge_layer(if (missing(inputs)) NULL else inputs, "Average", list(),
    elementwise_merge_methods(`+`, function(xs, dy, r) rep(list(r(dy / length(xs))), length(xs)),
      finish = function(sum, n) sum / n), batch_size, dtype, name, trainable, weights)
}

#' @rdname layer_add
#' @export
layer_maximum <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL,
                          trainable = NULL, weights = NULL) {
  make_merge_layer(if (missing(inputs)) NULL else inputs, "Maximum", list(),
    elementwise_merge_methods(pmax, extreme_grads(pmax, `>=`)), batch_size, dtype, name,
    trainable, weights)
}

#' @rdname layer_add
#' @export
layer_minimum <- function(inputs, batch_size = NULL, dtype = NULL, name = NULL,
                          trainable = NULL, weights = NULL) {
  make_merge_layer(if (missing(inputs)) NULL else inputs, "Minimum", list(),
    elementwise_merge_methods(pmin, extreme_grads(pmin, `<=`)), batch_size, dtype, name,
    trainable, weights)
}

# The gradients of the running product p_k = p_(k-1) * x_k, op by op in the
# layer's precision (r), as TensorFlow's chain of multiplications.
multiply_grads <- function(xs, dy, r) {
  n <- length(xs)
  running <- Reduce(function(a, b) r(a * b), xs, accumulate = TRUE)
  g <- vector("list", n)
  for (k in rev(seq_len(n))[-n]) {
    g[[k]] <- r(dy * running[[k - 1]])
    dy <- r(dy * xs[[k]])
  }
  g[[1]] <- dy
  g
}

# A maximum's or minimum's input gradients: the running extreme is op(best,
# x); as tf.maximum's gradient, it stays with the holder where
# keeps(best, x) (>= for a maximum: ties keep the first input) and passes to
# x elsewhere, NaN comparisons included.
extreme_grads <- function(op, keeps) {
  function(xs, dy, r) {
    best <- xs[[1]]
    holder <- array(1L, dim(dy))
    for (j in seq_along(xs)[-1]) {
      kept <- keeps(best, xs[[j]])
      holder[is.na(kept) | !kept] <- j
      best <- op(best, xs[[j]])
    }
    lapply(seq_along(xs), function(j) dy * (holder == j))
  }
}

# Keras's element-wise merges (its _Merge layers): the inputs, of the same
# rank once length-1 axes are added after the samples' axis (Keras's
# expand_dims(x, 1) for a lower rank), broadcast to one shape and folded by
# the binary `op` from the first to the last, each step in the layer's
# precision, then `finish`ed (the sum over n for an average); grads(inputs,
# dy, r) gives each broadcast input's gradient, r rounding to the layer's
# precision. n_inputs: the number of inputs the layer takes, or NULL for 2 or
# more.
elementwise_merge_methods <- function(op, grads, finish = NULL, n_inputs = NULL) {
  c(no_weight_methods, list(
    output_shape = function(self, input_shape) {
      shapes <- merge_input_shapes(self, input_shape, any_rank = TRUE)
      merge_shape(self, lapply(shapes, raise_rank, max(lengths(shapes))), n_inputs)
    },
    call = function(self, xs) {
      xs <- merge_arrays(self, xs)
      d <- self$output_shape(self, lapply(xs, dim))
      r <- function(v) round_to_dtype(v, self$dtype)
      out <- Reduce(function(a, b) r(array(op(a, b), d)), lapply(xs, broadcast_to, d))
      if (is.null(finish)) out else r(finish(out, length(xs)))
    },
    backward = function(self, xs, dy, input) {
      xs <- merge_arrays(self, xs)
      d <- dim(dy)
      r <- function(v) round_to_dtype(v, self$dtype)
      g <- grads(lapply(xs, broadcast_to, d), array(as.numeric(dy), d), r)
      # a broadcast input's gradient: summed over the axes it was repeated along
      list(input = lapply(seq_along(xs), function(j) {
        raised <- raise_rank(dim(xs[[j]]), length(d))
        r(array(unbroadcast(array(g[[j]], d), raised), dim(xs[[j]])))
      }), weights = list())
    }
  ))
}

# A shape (or dim) of lower rank with axes of length 1 added after the
# samples' axis, to rank r.
raise_rank <- function(shape, r) {
  if (length(shape) >= r) shape else c(shape[1], rep(1, r - length(shape)), shape[-1])
}

# Keras's element-wise shape rule: equal lengths, or 1 against any
# (broadcast); an unknown length gives an unknown one; the samples must agree.
merge_shape <- function(self, shapes, n_inputs = NULL) {
  if (!is.null(n_inputs) && length(shapes) != n_inputs) {
    conv3d_abort(sprintf("Layer \"%s\" (%s) must be called on exactly %d inputs, not %d.",
      self$name, self$class_name, n_inputs, length(shapes)), class = "conv3d_error_shape")
  }
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
}

# `x` repeated along its axes of length 1 to dim `d` (its rank raised first).
broadcast_to <- function(x, d) {
  if (identical(as.numeric(dim(x)), as.numeric(d))) return(x)
  x <- array(x, raise_rank(dim(x), length(d)))
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
