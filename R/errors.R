# One message style and condition classes for every error the package raises.
# C detects problems (src/validate.c) and calls signal_problem(); R words them.

conv3d_abort <- function(message, class = "conv3d_error_argument", ...) {
  cnd <- structure(
    class = c(class, "conv3d_error", "error", "condition"),
    list(message = message, call = NULL, ...)
  )
  stop(cnd)
}

# A value as the user would type it, shortened for messages: c(0, 1, 1), "same".
format_value <- function(x) {
  if (is.null(x)) return("NULL")
  if (is.function(x)) return("a function")
  if (is.environment(x) || is.list(x) && !is.null(class(x)) && !identical(class(x), "list")) {
    return(paste0("an object of class ", paste(class(x), collapse = "/")))
  }
  if (is.list(x)) { # a list of data would print in full
    return(if (length(x)) paste0("a list of length ", length(x)) else "list()")
  }
  if (is.factor(x)) {
    return(if (length(x) > 6) paste0("a factor of length ", length(x)) else
      paste0("factor(", paste(deparse(as.character(x), width.cutoff = 200L), collapse = " "), ")"))
  }
  article <- function(type) if (type == "integer") "an " else "a "
  if (is.atomic(x) && length(dim(x)) > 1L) {
    return(paste0(article(typeof(x)), typeof(x), " array of dim ", format_shape(dim(x))))
  }
  if (is.atomic(x) && length(x) > 6) {
    return(paste0(article(typeof(x)), typeof(x), " vector of length ", length(x)))
  }
  if (is.integer(x)) x <- as.double(x)
  paste(deparse(unclass(x), width.cutoff = 200L), collapse = " ")
}

format_shape <- function(x) {
  x <- as.numeric(x)
  paste0("c(", paste(ifelse(is.na(x), "NA", format(x, scientific = FALSE, trim = TRUE)),
    collapse = ", "), ")")
}

# What each numeric argument must be, for the message.
arg_requirement <- function(arg) {
  switch(arg,
    kernel_size = , strides = , dilation_rate = , pool_size = "1 or 3 positive whole numbers",
    "a positive whole number"
  )
}

# Called from C with a problem code (see problem_names in src/ffi_conv.c), the
# argument concerned, the offending value, an integer detail and the expected value.
signal_problem <- function(problem, arg, value, detail = -1L, expected = NULL) {
  shape_class <- "conv3d_error_shape"
  switch(problem,
    not_numeric = , scalar_int = , tuple = conv3d_abort(sprintf(
      "`%s` must be %s, not %s.", arg, arg_requirement(arg), format_value(value)
    )),
    padding = conv3d_abort(sprintf(
      "`padding` must be \"valid\" or \"same\", not %s.", format_value(value)
    )),
    data_format = conv3d_abort(sprintf(
      "`data_format` must be \"channels_last\" or \"channels_first\", not %s.",
      format_value(value)
    )),
    dtype = conv3d_abort(sprintf(
      "`dtype` must be \"float32\" or \"float64\", not %s.", format_value(value)
    )),
    flag = conv3d_abort(sprintf("`%s` must be TRUE or FALSE, not %s.", arg, format_value(value))),
    strides_dilation = conv3d_abort(sprintf(
      "`strides` must be 1 when `dilation_rate` is larger than 1 (Keras allows one or the other), not %s.",
      format_value(value)
    )),
    filters_groups = conv3d_abort(sprintf(
      "`filters` must be divisible by `groups` (%d), not %s.", detail, format_value(value)
    )),
    threads = conv3d_abort(sprintf(
      "`n` must be a whole number of threads (0 for the default), not %s.", format_value(value)
    )),
    input_rank = conv3d_abort(sprintf(
      "The input must be a rank-5 array (batch, 3 spatial axes and channels), not %s.",
      if (is.null(value)) {
        sprintf("a vector without dim of length %d", detail)
      } else if (arg == "input") {
        sprintf("an array with dim %s", format_shape(value))
      } else {
        sprintf("a shape of rank %d: %s", length(value), format_shape(value))
      }
    ), class = shape_class),
    input_dim = conv3d_abort(sprintf(
      "The input shape must have positive whole lengths (NA for unknown), not %s.",
      format_shape(value)
    ), class = shape_class),
    input_not_numeric = conv3d_abort(sprintf(
      "The input must be a numeric array, not %s.",
      if (is.atomic(value)) paste("a", typeof(value), "array") else format_value(value)
    ), class = shape_class),
    channels_unknown = conv3d_abort(sprintf(
      "The channel axis of the input must have a known length, not NA: input shape %s.",
      format_shape(value)
    ), class = shape_class),
    channels_groups = conv3d_abort(sprintf(
      "`groups` must divide the number of input channels (%d), not %s.", detail,
      format_value(value)
    ), class = shape_class),
    channels_built = conv3d_abort(sprintf(
      "The input has a channel count different from the layer's: the layer was built for %d input channel%s, the input shape is %s.",
      detail, if (detail == 1L) "" else "s", format_shape(value)
    ), class = shape_class),
    output_empty = conv3d_abort(sprintf(
      "`%s` %s is larger than the input along spatial axis %d: with padding = \"valid\" the output would be empty (use padding = \"same\" or a smaller window).",
      arg, format_value(value), detail + 1L
    ), class = shape_class),
    size_overflow = conv3d_abort(sprintf(
      "The sizes are too large: the element count of shape %s overflows.", format_shape(value)
    ), class = shape_class),
    kernel_overflow = conv3d_abort(sprintf(
      "`%s` %s is too large: its window's tap count overflows.", arg, format_value(value)
    ), class = shape_class),
    weights_overflow = conv3d_abort(sprintf(
      "`%s` %s makes too many weights for the input's channels: kernel taps x input channels per group x filters overflows.",
      arg, format_value(value)
    ), class = shape_class),
    window_overflow = conv3d_abort(sprintf(
      "`%s` %s makes the padded input too large to allocate (padding = \"same\" pads spatial axis %d by its window's span less 1): use a smaller window or padding = \"valid\".",
      arg, format_value(value), detail + 1L
    ), class = shape_class),
    output_padding = conv3d_abort(sprintf(
      "`output_padding` must be NULL or 1 or 3 whole numbers, each at least 0 and smaller than its stride (`strides` %s), not %s.",
      format_value(expected), format_value(value)
    )),
    transpose_length = conv3d_abort(sprintf(
      "`output_padding` %s gives an output whose convolution does not have the input's length along spatial axis %d: with padding = \"same\" and an even kernel size, Keras's length (n - 1) * strides + kernel_size - 2 * (kernel_size %%/%% 2) + output_padding needs an output_padding of at least 1 there (so strides of 2 or more), or use output_padding = NULL or an odd kernel size.",
      format_value(value), detail + 1L
    ), class = shape_class),
    transpose_overflow = conv3d_abort(if (detail >= 0L) {
      sprintf("`%s` %s makes the output longer than an R array's axis can be (2147483647) along spatial axis %d.",
        arg, format_value(value), detail + 1L)
    } else {
      sprintf("`%s` %s makes the output too large for input shape %s: its element count overflows (`kernel_size` and `filters` add to it).",
        arg, format_value(value), format_shape(expected))
    }, class = shape_class),
    weight_shape = conv3d_abort(sprintf(
      "The %s weight must be an array of dim %s, not %s.", arg, format_shape(expected),
      if (is.null(dim(value)) && is.numeric(value)) {
        sprintf("a vector of length %d", length(value))
      } else if (is.numeric(value)) {
        sprintf("an array of dim %s", format_shape(dim(value)))
      } else {
        format_value(value)
      }
    ), class = "conv3d_error_weights"),
    weight_count = conv3d_abort(sprintf(
      "`weights` must be a list of %d arrays (%s), not %s.", detail,
      if (detail == 2L) "kernel, bias" else "kernel",
      if (is.list(value)) sprintf("a list of length %d", length(value)) else format_value(value)
    ), class = "conv3d_error_weights"),
    gradient_shape = conv3d_abort(sprintf(
      "`dy` must be a numeric array of the layer's output dim %s, not %s.", format_shape(expected),
      if (detail == 1L) sprintf("an array of dim %s", format_shape(value)) else format_value(value)
    ), class = shape_class),
    orthogonal_rank = conv3d_abort(sprintf(
      "`%s` \"orthogonal\" needs a weight of rank 2 or more, not shape %s.", arg, format_shape(value)
    )),
    tier_unsupported = conv3d_abort(sprintf(
      "`kernel` %s is not supported by this CPU (the best it runs is \"%s\").",
      format_value(value), expected
    )),
    stop(sprintf("internal error in errors.R: unknown problem %s", problem))
  )
}
