# Zero-padding and cropping of the three spatial axes: a U-Net built from
# 'valid' convolutions crops its skip connections (or pads its decoder) so
# that the joined volumes agree.

# The `padding`/`cropping` argument as a 3 x 2 matrix (rows: depth, height,
# width; columns: before, after): one whole number for all, three (one per
# axis, both sides), or a list of three pairs, as Keras takes it.
normalize_pairs <- function(x, arg) {
  ok_counts <- function(v) is.numeric(v) && all(is.finite(v)) && all(v >= 0) && all(v == round(v)) &&
    all(v <= .Machine$integer.max)
  pairs <- if (is.list(x) && length(x) == 3L && all(lengths(x) %in% 1:2) &&
    all(vapply(x, ok_counts, TRUE))) {
    do.call(rbind, lapply(x, function(v) rep_len(as.numeric(v), 2L))) # Keras: a number, both sides
  } else if (is.matrix(x) && identical(dim(x), c(3L, 2L)) && ok_counts(x)) {
    x # as get_config() reports it
  } else if (!is.list(x) && ok_counts(x) && length(x) %in% c(1L, 3L)) {
    matrix(rep_len(as.numeric(x), 3L), 3L, 2L)
  }
  if (is.null(pairs)) {
    conv3d_abort(sprintf(
      "`%s` must be one non-negative whole number, three, or a list of three pairs (before, after), not %s.",
      arg, format_value(x)))
  }
  dimnames(pairs) <- NULL
  storage.mode(pairs) <- "integer"
  pairs
}

padding_layer <- function(object, class_name, arg, pairs, data_format, methods, input_shape,
                          batch_input_shape, batch_size, dtype, name, trainable, weights) {
  config <- list(pairs, normalize_data_format(data_format))
  names(config) <- c(arg, "data_format")
  made <- make_layer(object, class_name, config, methods, arg, input_shape, batch_input_shape,
    batch_size, dtype, name, trainable, weights)
  compose_layer(made$layer, made$object, arg)
}

#' Zero-padding layer for 3-D inputs
#'
#' Keras's `layer_zero_padding_3d()`: adds rows of zeros before and after the
#' volume along depth, height and width.
#'
#' @inheritParams layer-common
#' @param padding One whole number (every side), three (depth, height, width,
#'   both sides), or a list of three entries, each a pair `c(before, after)`
#'   or one number for both (a 3 x 2 matrix, as `get_config()` reports it,
#'   too).
#' @param data_format `"channels_last"` or `"channels_first"`; `NULL` takes
#'   [image_data_format()].
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family padding layers
#' @export
#' @examples
#' x <- array(1, c(1, 2, 2, 2, 1))
#' dim(layer_zero_padding_3d(x, padding = list(c(1, 0), c(0, 2), c(1, 1))))
layer_zero_padding_3d <- function(object, padding = c(1L, 1L, 1L), data_format = NULL,
                                  input_shape = NULL, batch_input_shape = NULL, batch_size = NULL,
                                  dtype = NULL, name = NULL, trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  padding_layer(object, "ZeroPadding3D", "padding", normalize_pairs(padding, "padding"),
    data_format, zero_padding_methods, input_shape, batch_input_shape, batch_size, dtype, name,
    trainable, weights)
}

zero_padding_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) {
    check_volume_shape(self, input_shape)
    axes <- spatial_axes(self$config$data_format)
    out <- input_shape[axes] + rowSums(self$config$padding)
    if (any(out > .Machine$integer.max, na.rm = TRUE)) {
      conv3d_abort(sprintf("`padding` of layer \"%s\" makes the volume longer than %d voxels along an axis.",
        self$name, .Machine$integer.max), class = "conv3d_error_shape")
    }
    input_shape[axes] <- out
    input_shape
  },
  call = function(self, x) {
    check_rank(x, 5, sprintf("layer \"%s\"", self$name))
    self$output_shape(self, dim(x)) # rank 5 exactly
    d <- dim(x)
    axes <- spatial_axes(self$config$data_format)
    out <- array(0, self$output_shape(self, d))
    index <- lapply(d, seq_len)
    for (i in 1:3) index[[axes[i]]] <- self$config$padding[i, 1] + seq_len(d[axes[i]])
    out <- do.call(`[<-`, c(list(out), index, list(value = round_to_dtype(x, self$dtype))))
    out
  },
  backward = function(self, x, dy, input) {
    d <- dim(x)
    axes <- spatial_axes(self$config$data_format)
    index <- lapply(d, seq_len)
    for (i in 1:3) index[[axes[i]]] <- self$config$padding[i, 1] + seq_len(d[axes[i]])
    list(input = do.call(`[`, c(list(dy), index, list(drop = FALSE))), weights = list())
  }
))

#' Cropping layer for 3-D inputs
#'
#' Keras's `layer_cropping_3d()`: removes voxels before and after the volume
#' along depth, height and width (a U-Net of 'valid' convolutions crops its
#' skip connections to the decoder's size).
#'
#' @inheritParams layer_zero_padding_3d
#' @param cropping As `padding` of [layer_zero_padding_3d()]: one whole
#'   number, three, or a list of three pairs `c(before, after)` (or numbers).
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family padding layers
#' @export
#' @examples
#' x <- array(1:64, c(1, 4, 4, 4, 1))
#' dim(layer_cropping_3d(x, cropping = list(c(1, 1), c(0, 1), c(2, 0))))
layer_cropping_3d <- function(object, cropping = list(c(1L, 1L), c(1L, 1L), c(1L, 1L)),
                              data_format = NULL, input_shape = NULL, batch_input_shape = NULL,
                              batch_size = NULL, dtype = NULL, name = NULL, trainable = NULL,
                              weights = NULL) {
  object <- if (missing(object)) NULL else object
  padding_layer(object, "Cropping3D", "cropping", normalize_pairs(cropping, "cropping"),
    data_format, cropping_methods, input_shape, batch_input_shape, batch_size, dtype, name,
    trainable, weights)
}

# The voxels a cropping layer keeps along each spatial axis of an input of dim d.
cropped_index <- function(self, d) {
  axes <- spatial_axes(self$config$data_format)
  index <- lapply(d, seq_len)
  for (i in 1:3) {
    crop <- self$config$cropping[i, ]
    index[[axes[i]]] <- seq_len(d[axes[i]] - sum(crop)) + crop[1]
  }
  index
}

cropping_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) {
    check_volume_shape(self, input_shape)
    axes <- spatial_axes(self$config$data_format)
    out <- input_shape[axes] - rowSums(self$config$cropping)
    if (any(out < 1, na.rm = TRUE)) { # as Keras 3 refuses (Keras 2 made an empty axis)
      conv3d_abort(sprintf("`cropping` of layer \"%s\" must leave at least one voxel along each axis of its input %s.",
        self$name, format_shape_tuple(input_shape)), class = "conv3d_error_shape")
    }
    input_shape[axes] <- out
    input_shape
  },
  call = function(self, x) {
    check_rank(x, 5, sprintf("layer \"%s\"", self$name))
    self$output_shape(self, dim(x)) # rank 5 exactly
    round_to_dtype(do.call(`[`, c(list(x), cropped_index(self, dim(x)), list(drop = FALSE))),
      self$dtype)
  },
  backward = function(self, x, dy, input) {
    dx <- array(0, dim(x))
    dx <- do.call(`[<-`, c(list(dx), cropped_index(self, dim(x)), list(value = as.numeric(dy))))
    list(input = dx, weights = list())
  }
))
