# Weight constraints: functions of a weight array returning the constrained array.
# Stored on the layer and applied after each optimizer update, never at init.

constraint_epsilon <- 1e-7

new_constraint <- function(name, fn, config = list()) {
  structure(fn, class = c("conv3d_constraint", "function"), config = c(list(name = name), config))
}

check_axis <- function(axis) {
  if (!is.numeric(axis) || !length(axis) || anyNA(axis) || any(axis != round(axis))) {
    conv3d_abort(sprintf("`axis` must be whole numbers (0-based axes), not %s.", format_value(axis)))
  }
  as.integer(axis)
}

# sqrt(sum(w^2)) over the 0-based `axis`, broadcast back to dim(w) (keepdims).
constraint_norms <- function(w, axis) {
  d <- dim(w) %||% length(w)
  rank <- length(d)
  if (any(axis < -rank | axis >= rank)) {
    conv3d_abort(sprintf("`axis` %s is out of range for a weight of rank %d.",
      format_value(axis), rank))
  }
  reduce <- sort(unique(axis %% rank)) + 1L
  keep <- setdiff(seq_len(rank), reduce)
  w2 <- array(w * w, d)
  if (!length(keep)) return(array(sqrt(sum(w2)), d))
  sums <- apply(w2, keep, sum)
  norms <- array(sqrt(sums), c(d[keep], d[reduce]))
  array(aperm(norms, order(c(keep, reduce))), d)
}

reshape_like <- function(value, w) {
  if (is.null(dim(w))) as.vector(value) else array(value, dim(w))
}

#' Weight constraints
#'
#' Projections applied to a weight after each optimizer update (never at
#' initialisation), as in Keras. With `norms = sqrt(sum(w^2))` taken over `axis`
#' and `eps = 1e-7`: `constraint_maxnorm()` rescales to
#' `w * clip(norms, 0, max_value) / (eps + norms)`, `constraint_minmaxnorm()` to
#' `w * (rate * clip(norms, min_value, max_value) + (1 - rate) * norms) / (eps + norms)`,
#' `constraint_unitnorm()` to `w / (eps + norms)`, and `constraint_nonneg()`
#' sets negative weights to zero.
#'
#' `axis` is **0-based**, as in Keras 2: for a Conv3D kernel of shape
#' `(kd, kh, kw, C/groups, filters)`, `axis = c(0, 1, 2, 3)` constrains the norm of
#' each filter. Negative values count from the end.
#'
#' A constraint is a function: call it on an array to apply it.
#'
#' @param max_value,min_value Bounds of the norm.
#' @param rate Interpolation between the clipped and the current norm.
#' @param axis Axes (0-based) along which norms are computed.
#' @return A constraint: a function of one array returning an array of the same shape.
#' @name constraints
#' @examples
#' w <- array(c(3, 4, 0, 1), c(2, 2))
#' constraint_maxnorm(2, axis = 0)(w)
#' constraint_nonneg()(c(-1, 2))
#' layer <- layer_conv_3d(filters = 2, kernel_size = 3,
#'   kernel_constraint = constraint_unitnorm(axis = c(0, 1, 2, 3)))
#' layer$kernel_constraint
NULL

#' @rdname constraints
#' @export
constraint_maxnorm <- function(max_value = 2, axis = 0) {
  max_value <- check_number(max_value, "max_value", lower = 0)
  axis <- check_axis(axis)
  new_constraint("maxnorm", function(w) {
    norms <- constraint_norms(w, axis)
    reshape_like(w * pmin(pmax(norms, 0), max_value) / (constraint_epsilon + norms), w)
  }, list(max_value = max_value, axis = axis))
}

#' @rdname constraints
#' @export
constraint_minmaxnorm <- function(min_value = 0, max_value = 1, rate = 1, axis = 0) {
  min_value <- check_number(min_value, "min_value", lower = 0)
  max_value <- check_number(max_value, "max_value", lower = 0)
  rate <- check_number(rate, "rate", lower = 0)
  axis <- check_axis(axis)
  new_constraint("minmaxnorm", function(w) {
    norms <- constraint_norms(w, axis)
    desired <- rate * pmin(pmax(norms, min_value), max_value) + (1 - rate) * norms
    reshape_like(w * desired / (constraint_epsilon + norms), w)
  }, list(min_value = min_value, max_value = max_value, rate = rate, axis = axis))
}

#' @rdname constraints
#' @export
constraint_unitnorm <- function(axis = 0) {
  axis <- check_axis(axis)
  new_constraint("unitnorm", function(w) {
    reshape_like(w / (constraint_epsilon + constraint_norms(w, axis)), w)
  }, list(axis = axis))
}

#' @rdname constraints
#' @export
constraint_nonneg <- function() {
  new_constraint("nonneg", function(w) reshape_like(pmax(w, 0), w))
}

normalize_constraint <- function(con, arg) {
  if (is.null(con) || is.function(con)) return(con)
  if (is.character(con) && length(con) == 1L) {
    maker <- list(max_norm = constraint_maxnorm, maxnorm = constraint_maxnorm,
      min_max_norm = constraint_minmaxnorm, minmaxnorm = constraint_minmaxnorm,
      unit_norm = constraint_unitnorm, unitnorm = constraint_unitnorm,
      non_neg = constraint_nonneg, nonneg = constraint_nonneg)[[tolower(con)]]
    if (!is.null(maker)) return(maker())
  }
  conv3d_abort(sprintf(
    "`%s` must be NULL, a constraint_*() object or a function, not %s.", arg, format_value(con)
  ))
}

#' @export
print.conv3d_constraint <- function(x, ...) {
  cfg <- attr(x, "config")
  rest <- cfg[-1]
  cat(sprintf("<constraint %s>%s\n", cfg$name, if (length(rest)) paste0(" ", paste(names(rest),
    vapply(rest, function(v) paste(v, collapse = ", "), ""), sep = " = ", collapse = "; ")) else ""))
  invisible(x)
}
