# Keras's Reshape and Permute layers: rearrange each sample's values without
# changing them (a segmentation head reshapes (d, h, w, classes) to
# (voxels, classes); a channels_first port permutes axes).

#' Reshape or permute each sample
#'
#' `layer_reshape()` gives each sample the shape `target_shape`, its values
#' taken in Keras's (row-major) order: the last axis varies fastest, as
#' [layer_flatten()] reads them. One entry of `target_shape` may be `-1`, the
#' length that makes the sizes agree. `layer_permute()` reorders the axes
#' after the samples' axis: `dims` lists them, counted from 1, in their new
#' order (`c(4, 1, 2, 3)` moves a volume's channels first). Both are Keras's,
#' as R keras passes their arguments, and compose like [layer_conv_3d()].
#'
#' @inheritParams layer-common
#' @param target_shape The new shape of each sample (without the samples'
#'   axis): positive whole numbers, at most one `-1`.
#' @param dims A permutation of `1:k`, `k` the rank of a sample.
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family core layers
#' @export
#' @examples
#' # a segmentation head: one row of class scores per voxel
#' scores <- array(runif(2 * 4 * 4 * 4 * 3), c(2, 4, 4, 4, 3))
#' dim(layer_reshape(scores, c(-1, 3))) # 2 64 3
#' dim(layer_permute(scores, c(4, 1, 2, 3))) # 2 3 4 4 4
layer_reshape <- function(object, target_shape, input_shape = NULL, batch_input_shape = NULL,
                          batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                          weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (missing(target_shape)) conv3d_abort("`target_shape` is missing: give each sample's new shape.")
  ok <- is.numeric(target_shape) && length(target_shape) >= 1L &&
    all(is.finite(target_shape) & target_shape == round(target_shape) &
      (target_shape >= 1 | target_shape == -1)) && sum(target_shape == -1) <= 1L &&
    all(target_shape <= .Machine$integer.max)
  if (!ok) {
    conv3d_abort(sprintf(
      "`target_shape` must be positive whole numbers with at most one -1, not %s.",
      format_value(target_shape)))
  }
  made <- make_layer(object, "Reshape", list(target_shape = as.integer(target_shape)),
    reshape_methods, "target_shape", input_shape, batch_input_shape, batch_size, dtype, name,
    trainable, weights)
  compose_layer(made$layer, made$object, "target_shape")
}

# A sample's new shape for an input shape (batch first; NA unknown): the
# -1 resolved when the other lengths are known.
reshape_target <- function(self, input_shape) {
  target <- as.numeric(self$config$target_shape)
  size <- prod(input_shape[-1])
  free <- target == -1
  fixed <- prod(target[!free])
  if (!is.na(size) && (if (any(free)) size %% fixed != 0 else size != fixed)) {
    conv3d_abort(sprintf(
      "Layer \"%s\" cannot reshape samples of shape %s (%s values) to %s.",
      self$name, format_shape_tuple(input_shape[-1]), format(size),
      format_shape(self$config$target_shape)), class = "conv3d_error_shape")
  }
  if (any(free)) target[free] <- size / fixed # NA when a length is unknown
  target
}

reshape_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) c(input_shape[1], reshape_target(self, input_shape)),
  call = function(self, x) {
    check_rank(x, 2, sprintf("layer \"%s\"", self$name))
    to <- c(dim(x)[1], reshape_target(self, dim(x)))
    round_to_dtype(row_major_reshape(x, to), self$dtype)
  },
  backward = function(self, x, dy, input) {
    dy <- output_gradient(self, dy, c(dim(x)[1], reshape_target(self, dim(x))))
    list(input = row_major_reshape(dy, dim(x)), weights = list())
  }
))

#' @rdname layer_reshape
#' @export
layer_permute <- function(object, dims, input_shape = NULL, batch_input_shape = NULL,
                          batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                          weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (missing(dims)) conv3d_abort("`dims` is missing: give the new order of the sample axes.")
  if (!is.numeric(dims) || !length(dims) || any(!is.finite(dims)) ||
      !identical(sort(as.numeric(dims)), as.numeric(seq_along(dims)))) {
    conv3d_abort(sprintf("`dims` must be a permutation of 1:k (the axes after the samples'), not %s.",
      format_value(dims)))
  }
  made <- make_layer(object, "Permute", list(dims = as.integer(dims)), permute_methods, "dims",
    input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
  compose_layer(made$layer, made$object, "dims")
}

# The R permutation of a whole input (batch first) for a layer's `dims`.
permute_order <- function(self, rank) {
  dims <- self$config$dims
  if (length(dims) != rank - 1L) {
    conv3d_abort(sprintf("`dims` %s of layer \"%s\" must order the %d axes after the samples' of its input.",
      format_value(dims), self$name, rank - 1L), class = "conv3d_error_shape")
  }
  c(1L, dims + 1L)
}

permute_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) input_shape[permute_order(self, length(input_shape))],
  call = function(self, x) {
    check_rank(x, 2, sprintf("layer \"%s\"", self$name))
    round_to_dtype(aperm(x, permute_order(self, length(dim(x)))), self$dtype)
  },
  backward = function(self, x, dy, input) {
    perm <- permute_order(self, length(dim(x)))
    dy <- output_gradient(self, dy, dim(x)[perm])
    list(input = aperm(dy, order(perm)), weights = list())
  }
))
