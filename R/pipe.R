#' Pipe operator
#'
#' Re-exported from magrittr, as the keras package does, so that
#' `model %>% layer_conv_3d(8, 3)` reads as in Keras examples. The native pipe
#' `|>` works too.
#'
#' @name %>%
#' @rdname pipe
#' @keywords internal
#' @importFrom magrittr %>%
#' @usage lhs \%>\% rhs
#' @param lhs A value or the magrittr placeholder.
#' @param rhs A function call using the magrittr semantics.
#' @return The result of calling `rhs(lhs)`.
#' @examples
#' model <- keras_model_sequential()
#' model %>% layer_conv_3d(2, 3)
#' length(model$layers)
#' @export
NULL
