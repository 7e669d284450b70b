# Keras configuration: image_data_format() and floatx, read from an R option, then
# keras.json ($KERAS_HOME or ~/.keras), then the Keras default. Never writes the file.

keras_json_value <- function(key) {
  home <- Sys.getenv("KERAS_HOME", unset = "")
  paths <- c(if (nzchar(home)) file.path(home, "keras.json"), file.path("~", ".keras", "keras.json"))
  for (path in paths) {
    if (!file.exists(path)) next
    text <- paste(readLines(path, warn = FALSE), collapse = " ")
    pattern <- sprintf("\"%s\"[[:space:]]*:[[:space:]]*\"([^\"]*)\"", key)
    hit <- regmatches(text, regexec(pattern, text))[[1]]
    if (length(hit) == 2L) return(hit[[2]])
  }
  NULL
}

#' The default data format and float type
#'
#' `image_data_format()` returns the data format layers use when their
#' `data_format` is `NULL`: the option `conv3d.image_data_format` if set, else
#' `image_data_format` in `keras.json` (in `$KERAS_HOME`, then `~/.keras`), else
#' `"channels_last"`. `floatx()` does the same for the default `dtype`
#' (option `conv3d.floatx`, then `floatx` in `keras.json`, else `"float32"`).
#' The file is only read, never written.
#'
#' @return A string.
#' @export
#' @examples
#' image_data_format()
#' old <- options(conv3d.image_data_format = "channels_first")
#' image_data_format()
#' options(old)
#' floatx()
image_data_format <- function() {
  getOption("conv3d.image_data_format") %||%
    keras_json_value("image_data_format") %||%
    "channels_last"
}

#' @rdname image_data_format
#' @export
floatx <- function() {
  getOption("conv3d.floatx") %||% keras_json_value("floatx") %||% "float32"
}

`%||%` <- function(x, y) if (is.null(x)) y else x
