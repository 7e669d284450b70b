# Activation lookup. Named activations are fused into the C kernel epilogue; the
# codes follow enum conv_activation in src/conv3d.h. An R function is applied to
# the output array afterwards.
activation_names <- c(
  "linear", "relu", "sigmoid", "tanh", "softmax", "elu", "selu", "softplus",
  "softsign", "swish", "gelu", "exponential", "hard_sigmoid", "relu6",
  "leaky_relu", "mish"
)
activation_aliases <- c(silu = "swish")

# Returns list(name, code, fn): code is the C epilogue, fn an R function or NULL.
normalize_activation <- function(activation) {
  if (is.null(activation)) return(list(name = "linear", code = 0L, fn = NULL))
  if (is.function(activation)) return(list(name = "function", code = 0L, fn = activation))
  if (is.character(activation) && length(activation) == 1L && !is.na(activation)) {
    name <- tolower(activation)
    if (name %in% names(activation_aliases)) name <- activation_aliases[[name]]
    code <- match(name, activation_names)
    if (!is.na(code)) return(list(name = name, code = code - 1L, fn = NULL))
  }
  conv3d_abort(sprintf(
    "`activation` must be NULL, a function or one of %s, not %s.",
    paste0("\"", c(activation_names, names(activation_aliases)), "\"", collapse = ", "),
    format_value(activation)
  ))
}
