# Initializer objects. The draws happen in C (src/initializers.c) from R's RNG, so
# set.seed() reproduces weights; a `seed` draws from that seed without disturbing
# the global stream.

init_kinds <- c(
  zeros = 0L, ones = 1L, constant = 2L, random_normal = 3L, random_uniform = 4L,
  truncated_normal = 5L, variance_scaling = 6L, orthogonal = 7L
)
init_modes <- c(fan_in = 0L, fan_out = 1L, fan_avg = 2L)
init_distributions <- c(truncated_normal = 0L, normal = 0L, untruncated_normal = 1L, uniform = 2L)

new_initializer <- function(name, kind, params = list(), seed = NULL, shown = params) {
  structure(
    list(name = name, kind = init_kinds[[kind]], params = params, seed = check_seed(seed),
      shown = shown),
    class = "conv3d_initializer"
  )
}

variance_scaling <- function(name, scale, mode, distribution, seed) {
  new_initializer(name, "variance_scaling", list(
    scale = scale, mode = init_modes[[mode]],
    distribution = init_distributions[[distribution]]
  ), seed, shown = list(scale = scale, mode = mode, distribution = distribution))
}

#' Weight initializers
#'
#' Objects for the `kernel_initializer` and `bias_initializer` arguments of
#' [layer_conv_3d()], with Keras's names, arguments and distributions. Fans of a
#' 5-D kernel `(kd, kh, kw, C/groups, filters)` are `fan_in = kd*kh*kw*C/groups`
#' and `fan_out = kd*kh*kw*filters`. Truncated normals redraw values beyond two
#' standard deviations; the `*_normal` variance-scaling initializers divide their
#' standard deviation by 0.8796..., the standard deviation of a unit normal
#' truncated to (-2, 2), as Keras does. Draws use R's random number generator,
#' so [set.seed()] makes initialisation reproducible; a `seed` makes one
#' initializer deterministic without touching the global stream. An initializer
#' can also be given by name (`"he_normal"`) or as an R `function(shape, dtype)`
#' returning an array of that shape.
#'
#' @param seed `NULL` or a number.
#' @param scale,mode,distribution Variance scaling: the variance is
#'   `scale / fan` with `fan` chosen by `mode` (`"fan_in"`, `"fan_out"`,
#'   `"fan_avg"`); `distribution` is `"truncated_normal"` (alias `"normal"`),
#'   `"untruncated_normal"` or `"uniform"`.
#' @param mean,stddev Mean and standard deviation of a normal.
#' @param minval,maxval Bounds of a uniform.
#' @param value The constant.
#' @param gain Multiplier of the orthogonal matrix.
#' @return An initializer object.
#' @name initializers
#' @family initializers
#' @examples
#' layer <- layer_conv_3d(filters = 4, kernel_size = 3,
#'   kernel_initializer = initializer_he_normal(seed = 1))
#' x <- array(rnorm(2 * 5^3), c(2, 5, 5, 5, 1))
#' y <- layer(x)
#' range(get_weights(layer)[[1]])
NULL

#' @rdname initializers
#' @export
initializer_glorot_uniform <- function(seed = NULL) {
  variance_scaling("glorot_uniform", 1, "fan_avg", "uniform", seed)
}
#' @rdname initializers
#' @export
initializer_glorot_normal <- function(seed = NULL) {
  variance_scaling("glorot_normal", 1, "fan_avg", "truncated_normal", seed)
}
#' @rdname initializers
#' @export
initializer_he_uniform <- function(seed = NULL) {
  variance_scaling("he_uniform", 2, "fan_in", "uniform", seed)
}
#' @rdname initializers
#' @export
initializer_he_normal <- function(seed = NULL) {
  variance_scaling("he_normal", 2, "fan_in", "truncated_normal", seed)
}
#' @rdname initializers
#' @export
initializer_lecun_uniform <- function(seed = NULL) {
  variance_scaling("lecun_uniform", 1, "fan_in", "uniform", seed)
}
#' @rdname initializers
#' @export
initializer_lecun_normal <- function(seed = NULL) {
  variance_scaling("lecun_normal", 1, "fan_in", "truncated_normal", seed)
}
#' @rdname initializers
#' @export
initializer_variance_scaling <- function(scale = 1, mode = "fan_in",
                                         distribution = "truncated_normal", seed = NULL) {
  scale <- check_number(scale, "scale", lower = 0, open = TRUE)
  if (!is.character(mode) || length(mode) != 1L || !mode %in% names(init_modes)) {
    conv3d_abort(sprintf("`mode` must be \"fan_in\", \"fan_out\" or \"fan_avg\", not %s.",
      format_value(mode)))
  }
  if (!is.character(distribution) || length(distribution) != 1L ||
      !distribution %in% names(init_distributions)) {
    conv3d_abort(sprintf(
      "`distribution` must be \"truncated_normal\", \"untruncated_normal\" or \"uniform\", not %s.",
      format_value(distribution)))
  }
  variance_scaling("variance_scaling", scale, mode, distribution, seed)
}
#' @rdname initializers
#' @export
initializer_random_normal <- function(mean = 0, stddev = 0.05, seed = NULL) {
  new_initializer("random_normal", "random_normal", list(
    mean = check_number(mean, "mean"), stddev = check_number(stddev, "stddev")
  ), seed)
}
#' @rdname initializers
#' @export
initializer_random_uniform <- function(minval = -0.05, maxval = 0.05, seed = NULL) {
  new_initializer("random_uniform", "random_uniform", list(
    minval = check_number(minval, "minval"), maxval = check_number(maxval, "maxval")
  ), seed)
}
#' @rdname initializers
#' @export
initializer_truncated_normal <- function(mean = 0, stddev = 0.05, seed = NULL) {
  new_initializer("truncated_normal", "truncated_normal", list(
    mean = check_number(mean, "mean"), stddev = check_number(stddev, "stddev")
  ), seed)
}
#' @rdname initializers
#' @export
initializer_zeros <- function() new_initializer("zeros", "zeros")
#' @rdname initializers
#' @export
initializer_ones <- function() new_initializer("ones", "ones")
#' @rdname initializers
#' @export
initializer_constant <- function(value = 0) {
  new_initializer("constant", "constant", list(value = check_number(value, "value")))
}
#' @rdname initializers
#' @export
initializer_orthogonal <- function(gain = 1, seed = NULL) {
  new_initializer("orthogonal", "orthogonal", list(gain = check_number(gain, "gain")), seed)
}

initializer_by_name <- list(
  glorot_uniform = initializer_glorot_uniform, glorot_normal = initializer_glorot_normal,
  he_uniform = initializer_he_uniform, he_normal = initializer_he_normal,
  lecun_uniform = initializer_lecun_uniform, lecun_normal = initializer_lecun_normal,
  random_normal = initializer_random_normal, random_uniform = initializer_random_uniform,
  truncated_normal = initializer_truncated_normal, zeros = initializer_zeros,
  ones = initializer_ones, constant = initializer_constant,
  orthogonal = initializer_orthogonal, variance_scaling = initializer_variance_scaling
)

# A name, an initializer object or a function(shape, dtype) -> one of the latter two.
normalize_initializer <- function(init, arg) {
  if (inherits(init, "conv3d_initializer") || is.function(init)) return(init)
  if (is.character(init) && length(init) == 1L && !is.na(init)) {
    maker <- initializer_by_name[[tolower(init)]]
    if (!is.null(maker)) return(maker())
  }
  conv3d_abort(sprintf(
    "`%s` must be an initializer name (%s), an initializer_*() object or a function(shape, dtype), not %s.",
    arg, paste0("\"", names(initializer_by_name), "\"", collapse = ", "), format_value(init)
  ))
}

# Draws a weight of `shape`; arg names the argument for messages.
initialize_weight <- function(init, shape, dtype, arg) {
  shape <- as.numeric(shape)
  if (is.function(init)) {
    value <- init(shape, dtype)
    if (!is.numeric(value) || length(value) != prod(shape)) {
      conv3d_abort(sprintf(
        "`%s` returned %s, not %d numbers for shape %s.", arg,
        format_value(value), prod(shape), format_shape(shape)
      ))
    }
    value <- as.numeric(value)
    return(if (length(shape) > 1L) array(value, shape) else value) # a bias is a vector
  }
  draw <- function() .Call(ffi_init_weights, init$kind, init$params, shape, arg)
  if (is.null(init$seed)) return(draw())
  with_seed(init$seed, draw())
}

# Evaluates `code` with set.seed(seed) and restores the global RNG stream after.
# With `stream` (an environment), the draws continue that stream instead:
# seeded on its first use, its state kept in stream$rng_state for the next
# (a seeded dropout layer's masks).
with_seed <- function(seed, code, stream = NULL) {
  env <- globalenv()
  had <- exists(".Random.seed", envir = env, inherits = FALSE)
  if (had) old <- get(".Random.seed", envir = env, inherits = FALSE)
  on.exit(if (had) assign(".Random.seed", old, envir = env) else rm(".Random.seed", envir = env))
  if (is.null(stream$rng_state)) {
    set.seed(seed)
  } else {
    assign(".Random.seed", stream$rng_state, envir = env)
  }
  out <- code
  if (!is.null(stream)) stream$rng_state <- get(".Random.seed", envir = env)
  out
}

#' @export
print.conv3d_initializer <- function(x, ...) {
  # the arguments as the user gave them (params holds the codes C reads)
  args <- c(x$shown, if (!is.null(x$seed)) list(seed = x$seed))
  cat(sprintf("<initializer %s>%s\n", x$name,
    if (length(args)) paste0(" ", paste(names(args), unlist(args), sep = " = ", collapse = ", ")) else ""))
  invisible(x)
}
