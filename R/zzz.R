#' @useDynLib conv3d, .registration = TRUE
NULL

.onLoad <- function(libname, pkgname) {
  tier <- getOption("conv3d.kernel") %||% Sys.getenv("CONV3D_KERNEL", unset = "")
  if (nzchar(tier)) try(conv3d_cpu(tier), silent = TRUE)
  reset_name_counters()
}
