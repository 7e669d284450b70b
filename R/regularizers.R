# Regularizers: functions of a weight (or output) array returning the penalty.

new_regularizer <- function(name, l1, l2) {
  fn <- function(x) l1 * sum(abs(x)) + l2 * sum(x * x)
  structure(fn, class = c("conv3d_regularizer", "function"), config = list(name = name, l1 = l1, l2 = l2))
}

#' Weight and activity regularizers
#'
#' Penalties added to the training loss: `regularizer_l1(l)` is `l * sum(abs(w))`,
#' `regularizer_l2(l)` is `l * sum(w^2)`, `regularizer_l1_l2()` their sum. A
#' regularizer is a function: call it on an array to get its penalty. Given to
#' [layer_conv_3d()] (or by the names `"l1"`, `"l2"`, `"l1_l2"` with the default
#' factors), the current penalties are listed by `layer$losses`; the activity
#' penalty is that of the last output the layer computed, divided by its batch size.
#'
#' @param l,l1,l2 Non-negative factors.
#' @return A regularizer: a function of one array returning a number.
#' @name regularizers
#' @examples
#' reg <- regularizer_l2(0.01)
#' reg(c(1, 2, 3))
#' layer <- layer_conv_3d(filters = 2, kernel_size = 1, kernel_regularizer = "l1")
#' y <- layer(array(1, c(1, 2, 2, 2, 1)))
#' layer$losses
NULL

#' @rdname regularizers
#' @export
regularizer_l1 <- function(l = 0.01) new_regularizer("l1", check_number(l, "l", lower = 0), 0)

#' @rdname regularizers
#' @export
regularizer_l2 <- function(l = 0.01) new_regularizer("l2", 0, check_number(l, "l", lower = 0))

#' @rdname regularizers
#' @export
regularizer_l1_l2 <- function(l1 = 0.01, l2 = 0.01) {
  new_regularizer("l1_l2", check_number(l1, "l1", lower = 0), check_number(l2, "l2", lower = 0))
}

normalize_regularizer <- function(reg, arg) {
  if (is.null(reg) || is.function(reg)) return(reg)
  if (is.character(reg) && length(reg) == 1L) {
    maker <- list(l1 = regularizer_l1, l2 = regularizer_l2, l1_l2 = regularizer_l1_l2)[[tolower(reg)]]
    if (!is.null(maker)) return(maker())
  }
  conv3d_abort(sprintf(
    "`%s` must be NULL, \"l1\", \"l2\", \"l1_l2\", a regularizer_*() object or a function, not %s.",
    arg, format_value(reg)
  ))
}

#' @export
print.conv3d_regularizer <- function(x, ...) {
  cfg <- attr(x, "config")
  cat(sprintf("<regularizer %s> l1 = %g, l2 = %g\n", cfg$name, cfg$l1, cfg$l2))
  invisible(x)
}
