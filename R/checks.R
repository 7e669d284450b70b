# Checkers and coercions for arguments validated on the R side (the ones that
# never reach C: optimizer, regularizer, constraint, initializer and layer
# settings). Each names the argument and the value it got.

# One finite number within optional bounds; `open` makes the lower bound strict,
# `upper_open` the upper one.
check_number <- function(x, arg, lower = -Inf, upper = Inf, open = FALSE, upper_open = TRUE) {
  ok <- is.numeric(x) && length(x) == 1L && is.finite(x) &&
    (if (open) x > lower else x >= lower) && (if (upper_open) x < upper else x <= upper)
  if (!ok) {
    want <- if (is.finite(upper)) {
      sprintf("one number in %s%s, %s%s", if (open) "(" else "[", format(lower), format(upper),
        if (upper_open) ")" else "]")
    } else if (is.finite(lower)) {
      sprintf("one finite number %s %s", if (open) ">" else ">=", format(lower))
    } else {
      "one finite number"
    }
    conv3d_abort(sprintf("`%s` must be %s, not %s.", arg, want, format_value(x)))
  }
  as.numeric(x)
}

# A layer's dtype, NULL meaning floatx(); for the layers whose settings no C
# validator sees (the convolution and pooling check theirs in C).
check_dtype <- function(dtype) {
  dtype <- dtype %||% floatx()
  if (!is.character(dtype) || length(dtype) != 1L || !dtype %in% c("float32", "float64")) {
    conv3d_abort(sprintf("`dtype` must be \"float32\" or \"float64\", not %s.", format_value(dtype)))
  }
  dtype
}

# NULL or one whole number that set.seed() takes (an R integer, as Keras's
# seeds are integers).
check_seed <- function(seed) {
  ok <- is.null(seed) || is.numeric(seed) && length(seed) == 1L &&
    is.finite(seed) && seed == round(seed) && abs(seed) <= .Machine$integer.max
  if (!ok) {
    conv3d_abort(sprintf("`seed` must be NULL or one whole number in [-%d, %d], not %s.",
      .Machine$integer.max, .Machine$integer.max, format_value(seed)))
  }
  seed
}

# Numbers to doubles and one string to lower case for the C validators, which
# then check and word everything else.
as_number <- function(x) if (is.numeric(x) && !is.object(x)) as.numeric(x) else x
as_lower_string <- function(x) if (is.character(x) && length(x) == 1L && !is.na(x)) tolower(x) else x

# Arguments that reached a method's `...` (a misspelling, or a Keras argument
# conv3d does not implement): refused rather than silently ignored.
reject_dots <- function(dots, fn) {
  if (length(dots)) {
    given <- names(dots) %||% rep("", length(dots))
    given[!nzchar(given)] <- "(unnamed)"
    conv3d_abort(sprintf("Unknown argument%s to %s(): %s.", if (length(given) > 1L) "s" else "",
      fn, paste0("`", given, "`", collapse = ", ")))
  }
}
