#' @useDynLib conv3d, .registration = TRUE
NULL

.onLoad <- function(libname, pkgname) {
  tier <- getOption("conv3d.kernel") %||% Sys.getenv("CONV3D_KERNEL", unset = "")
  if (nzchar(tier)) {
    tryCatch(conv3d_cpu(tier), error = function(e) {
      warning(sprintf("conv3d: ignoring the kernel tier \"%s\" (option conv3d.kernel or CONV3D_KERNEL): %s",
        tier, conditionMessage(e)), call. = FALSE)
    })
  }
  reset_name_counters()
}

# Layers' weight caches are freed by finalizers in the DLL, which R may run
# after the namespace is gone: the C side frees its kept scratch and keeps the
# DLL mapped for the session (ffi_unload in src/ffi_scratch.c).
.onUnload <- function(libpath) {
  try(.Call(ffi_unload), silent = TRUE)
}
