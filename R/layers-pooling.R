# 3-D pooling layers: windowed max/average in C (src/pooling.c) and global
# pooling over the spatial axes; and upsampling, their inverse in a U-Net.

pooling_layer <- function(object, class_name, average, pool_size, strides, padding, data_format,
                          input_shape, batch_input_shape, batch_size, dtype, name, trainable,
                          weights) {
  dtype <- dtype %||% floatx()
  # C (pool_validate) checks every setting
  config <- list(pool_size = as_number(pool_size), strides = as_number(strides),
    padding = as_lower_string(padding),
    data_format = as_lower_string(data_format %||% image_data_format()), dtype = dtype)
  .Call(ffi_pool3d_shape, config, NULL) # validates the arguments now
  for (arg in c("pool_size", "strides")) {
    if (!is.null(config[[arg]])) config[[arg]] <- as.integer(rep_len(config[[arg]], 3L))
  }
  config$strides <- config$strides %||% config$pool_size # Keras's default, as its config shows
  methods <- c(no_weight_methods, list(
    average = average,
    output_shape = function(self, input_shape) .Call(ffi_pool3d_shape, self$config, as.numeric(input_shape)),
    call = function(self, x) .Call(ffi_pool3d, self$config, x, self$average, FALSE),
    backward = pool_backward,
    # in a training step, max pooling keeps each output's window position
    # for its backward pass instead of scanning the windows again (the same
    # picks: among the inputs in the layer's precision, to which the C code
    # rounds them as pool_backward does)
    train_call = function(self, x, trains = TRUE) {
      if (self$average) return(list(y = self$call(self, x), cache = NULL))
      kept <- .Call(ffi_pool3d, self$config, x, FALSE, TRUE)
      list(y = kept$y, cache = kept$argmax)
    },
    train_backward = function(self, x, dy, cache, input) {
      list(input = .Call(ffi_pool3d_backward, self$config, x, dy, FALSE, cache), weights = list())
    }
  ))
  made <- make_layer(object, class_name, config, methods, "pool_size", input_shape,
    batch_input_shape, batch_size, dtype, name, trainable, weights, dtype_checked = TRUE)
  compose_layer(made$layer, made$object, "pool_size")
}

#' 3-D max and average pooling
#'
#' Keras's `layer_max_pooling_3d()` and `layer_average_pooling_3d()`: the maximum
#' or the mean over windows of `pool_size` moved by `strides`. Output lengths
#' follow the convolution's ('valid': `floor((n - pool) / stride) + 1`, 'same':
#' `ceil(n / stride)` with the odd extra padding at the end); padded positions
#' take no part in the max or in the average's count.
#'
#' @inheritParams layer-common
#' @param pool_size 1 or 3 positive integers: the window.
#' @param strides `NULL` (the pool size) or 1 or 3 positive integers.
#' @param padding `"valid"` or `"same"` (case-insensitive).
#' @param data_format `"channels_last"` or `"channels_first"`; `NULL` takes
#'   [image_data_format()].
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family pooling layers
#' @export
#' @examples
#' x <- array(1:64, c(1, 4, 4, 4, 1))
#' dim(layer_max_pooling_3d(x))
#' layer_average_pooling_3d(x, pool_size = 4)[1, 1, 1, 1, 1]
layer_max_pooling_3d <- function(object, pool_size = c(2L, 2L, 2L), strides = NULL,
                                 padding = "valid", data_format = NULL, input_shape = NULL,
                                 batch_input_shape = NULL, batch_size = NULL, dtype = NULL,
                                 name = NULL, trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  pooling_layer(object, "MaxPooling3D", FALSE, pool_size, strides, padding, data_format,
    input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
}

#' @rdname layer_max_pooling_3d
#' @export
layer_average_pooling_3d <- function(object, pool_size = c(2L, 2L, 2L), strides = NULL,
                                     padding = "valid", data_format = NULL, input_shape = NULL,
                                     batch_input_shape = NULL, batch_size = NULL, dtype = NULL,
                                     name = NULL, trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  pooling_layer(object, "AveragePooling3D", TRUE, pool_size, strides, padding, data_format,
    input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
}

global_pooling_layer <- function(object, class_name, average, data_format, keepdims, input_shape,
                                 batch_input_shape, batch_size, dtype, name, trainable, weights) {
  config <- list(data_format = normalize_data_format(data_format),
    keepdims = check_flag(keepdims, "keepdims"))
  methods <- c(no_weight_methods, list(
    average = average,
    backward = global_pool_backward,
    output_shape = function(self, input_shape) {
      if (length(input_shape) != 5L) {
        conv3d_abort(sprintf("The input of layer \"%s\" must have rank 5, not shape %s.",
          self$name, format_shape(input_shape)), class = "conv3d_error_shape")
      }
      c_axis <- if (self$config$data_format == "channels_last") 5L else 2L
      if (!self$config$keepdims) return(input_shape[c(1L, c_axis)])
      out <- input_shape
      out[setdiff(2:5, c_axis)] <- 1
      out
    },
    call = function(self, x) {
      if (!is.numeric(x) || length(dim(x)) != 5L) {
        conv3d_abort(sprintf("The input of layer \"%s\" must be a numeric array of rank 5, not %s.",
          self$name, format_value(x)), class = "conv3d_error_shape")
      }
      d <- dim(x)
      last <- self$config$data_format == "channels_last"
      # (samples, channels), in C
      v <- round_to_dtype(.Call(ffi_global_pool3d, x, last, self$average), self$dtype)
      if (!self$config$keepdims) return(v)
      out_d <- d
      out_d[if (last) 2:4 else 3:5] <- 1L
      array(v, out_d) # (n, c) in the order of both layouts with the spatial axes of length 1
    }
  ))
  made <- make_layer(object, class_name, config, methods, "data_format", input_shape,
    batch_input_shape, batch_size, dtype, name, trainable, weights)
  compose_layer(made$layer, made$object, "data_format")
}

#' Global 3-D pooling
#'
#' Keras's `layer_global_average_pooling_3d()` and
#' `layer_global_max_pooling_3d()`: the mean or the maximum over the three
#' spatial axes, giving `(batch, channels)` (or, with `keepdims = TRUE`, the
#' spatial axes kept with length 1).
#'
#' @inheritParams layer_max_pooling_3d
#' @param keepdims Keep the spatial axes, with length 1.
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family pooling layers
#' @export
#' @examples
#' x <- array(1:16, c(2, 2, 2, 2, 1))
#' layer_global_average_pooling_3d(x)
#' layer_global_max_pooling_3d(x)
layer_global_average_pooling_3d <- function(object, data_format = NULL, keepdims = FALSE,
                                            input_shape = NULL, batch_input_shape = NULL,
                                            batch_size = NULL, dtype = NULL, name = NULL,
                                            trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  global_pooling_layer(object, "GlobalAveragePooling3D", TRUE, data_format, keepdims,
    input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
}

#' @rdname layer_global_average_pooling_3d
#' @export
layer_global_max_pooling_3d <- function(object, data_format = NULL, keepdims = FALSE,
                                        input_shape = NULL, batch_input_shape = NULL,
                                        batch_size = NULL, dtype = NULL, name = NULL,
                                        trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  global_pooling_layer(object, "GlobalMaxPooling3D", FALSE, data_format,
    keepdims, input_shape, batch_input_shape, batch_size, dtype, name, trainable, weights)
}

#' Upsampling layer for 3-D inputs
#'
#' Keras's `layer_upsampling_3d()`: repeats each voxel `size[1]`, `size[2]`
#' and `size[3]` times along the three spatial axes (nearest-neighbour
#' upsampling), as a U-Net's decoder does.
#'
#' @inheritParams layer-common
#' @param size One whole number or three: the upsampling factors along depth,
#'   height and width.
#' @param data_format `"channels_last"` or `"channels_first"`; `NULL` takes
#'   [image_data_format()].
#' @return Depends on `object`, as for [layer_conv_3d()].
#' @family pooling layers
#' @export
#' @examples
#' x <- array(1:8, c(1, 2, 2, 2, 1))
#' dim(layer_upsampling_3d(x, size = 2))
layer_upsampling_3d <- function(object, size = c(2L, 2L, 2L), data_format = NULL,
                                input_shape = NULL, batch_input_shape = NULL, batch_size = NULL,
                                dtype = NULL, name = NULL, trainable = NULL, weights = NULL) {
  object <- if (missing(object)) NULL else object
  if (!is.numeric(size) || !length(size) %in% c(1L, 3L) || !all(is.finite(size)) ||
      any(size < 1) || any(size != round(size)) || any(size > .Machine$integer.max)) {
    conv3d_abort(sprintf("`size` must be one or three positive whole numbers, not %s.",
      format_value(size)))
  }
  made <- make_layer(object, "UpSampling3D", list(size = as.integer(rep_len(size, 3L)),
    data_format = normalize_data_format(data_format)), upsampling_methods, "size", input_shape,
    batch_input_shape, batch_size, dtype, name, trainable, weights)
  compose_layer(made$layer, made$object, "size")
}

# The rank-5 check of a volume layer's input shape (upsampling, padding,
# cropping, spatial dropout).
check_volume_shape <- function(self, input_shape) {
  if (length(input_shape) != 5L) {
    conv3d_abort(sprintf("The input of layer \"%s\" must have rank 5, not shape %s.", self$name,
      format_shape_tuple(input_shape)), class = "conv3d_error_shape")
  }
}

# The spatial axes (1-based, samples first) of a 5-D input.
spatial_axes <- function(data_format) if (data_format == "channels_last") 2:4 else 3:5

upsampling_methods <- c(no_weight_methods, list(
  output_shape = function(self, input_shape) {
    check_volume_shape(self, input_shape)
    axes <- spatial_axes(self$config$data_format)
    input_shape[axes] <- input_shape[axes] * self$config$size
    input_shape
  },
  call = function(self, x) {
    check_rank(x, 5, sprintf("layer \"%s\"", self$name))
    self$output_shape(self, dim(x)) # rank 5 exactly
    axes <- spatial_axes(self$config$data_format)
    index <- lapply(dim(x), seq_len) # (not TRUE: an empty axis must stay empty)
    for (i in 1:3) index[[axes[i]]] <- rep(seq_len(dim(x)[axes[i]]), each = self$config$size[i])
    round_to_dtype(do.call(`[`, c(list(x), index, list(drop = FALSE))), self$dtype)
  },
  backward = function(self, x, dy, input) {
    # each input voxel's gradient: the sum over the block it was copied to
    axes <- spatial_axes(self$config$data_format)
    g <- array(as.numeric(dy), dim(dy))
    for (i in 1:3) {
      s <- self$config$size[i]
      if (s == 1L) next
      a <- axes[i]
      d <- dim(g)
      # split axis a into (copy, voxel) and sum the copies
      before <- prod(d[seq_len(a - 1L)])
      after <- prod(d[-seq_len(a)])
      g <- array(g, c(before, s, d[a] / s, after))
      g <- array(colSums(aperm(g, c(2, 1, 3, 4))), c(d[seq_len(a - 1L)], d[a] / s, d[-seq_len(a)]))
    }
    list(input = g, weights = list())
  }
))
