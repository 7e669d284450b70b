#' Number of threads used by the convolution
#'
#' The C core splits each convolution over this many OpenMP threads. The default
#' is all cores, capped by the environment variables `OMP_THREAD_LIMIT` and
#' `OMP_NUM_THREADS` (read again at every call). Results are bit-identical for
#' any thread count.
#'
#' @param n `NULL` to read the setting, or the number of threads to use (`0`
#'   restores the default). Values above the cap are capped.
#' @return With `n = NULL`, the thread count in force. Otherwise the count in
#'   force before the change, invisibly, so it can be restored.
#' @export
#' @examples
#' conv3d_threads()
#' old <- conv3d_threads(1)
#' conv3d_threads()
#' conv3d_threads(old)
conv3d_threads <- function(n = NULL) {
  if (is.null(n)) return(.Call(ffi_threads, NULL))
  invisible(.Call(ffi_threads, n))
}

#' Which micro-kernel the convolution runs
#'
#' The convolution kernels are compiled for several instruction sets and the best
#' one this CPU supports is chosen when the package loads. A lower tier can be
#' forced, for testing, with this function, the option `conv3d.kernel` or the
#' environment variable `CONV3D_KERNEL` (read at load).
#'
#' @param kernel `NULL` to read, or one of `"generic"`, `"avx2"`, `"avx512"`.
#' @return A list with `kernel` (the tier in use) and `best` (the best this CPU
#'   runs); invisibly when setting.
#' @export
#' @examples
#' conv3d_cpu()
conv3d_cpu <- function(kernel = NULL) {
  if (is.null(kernel)) return(.Call(ffi_cpu, NULL))
  if (!is.character(kernel) || length(kernel) != 1L || !kernel %in% c("generic", "avx2", "avx512")) {
    conv3d_abort(sprintf(
      "`kernel` must be \"generic\", \"avx2\" or \"avx512\", not %s.", format_value(kernel)
    ))
  }
  invisible(.Call(ffi_cpu, kernel))
}

# The measured FMA peak in GFLOP/s for `threads` threads on the active kernel
# tier, which bench/run.R divides by. Internal: timing is not part of the API.
peak_gflops <- function(threads = conv3d_threads(), dtype = "float32") {
  .Call(ffi_peak_gflops, as.integer(threads), identical(dtype, "float64"))
}

# Seconds of the last forward pass spent packing the input and weights, and in
# the kernels with their fused epilogue (bias, activation, writing the R array),
# for bench/run.R's end-to-end check. The planar path's threads pack input
# planes as they go: its packing counts as kernel time.
last_forward_timing <- function() {
  stats::setNames(.Call(ffi_last_timing), c("pack", "kernel"))
}

# Tests only: the path the last forward pass took, "patch" (a GEMM over
# patches), "planar" (vectors along rows of a planar input copy),
# "planar-winograd" (the same over transformed planes: bundles of output
# rows from Winograd transforms across the rows), "winograd" (F(2x2x2,
# 3x3x3) tiles), "depthwise" (each channel's volume on its own,
# vectors along depth) or "rows" (channels-last register tiles), so tests can
# check their shapes reach it.
last_forward_path <- function() .Call(ffi_last_path)

# Tests only: how the last input gradient was computed, "patch" (one GEMM,
# written through its stage), "patch rows" or "patch woven" (the same GEMM
# writing dx from its registers: a 1x1x1 layer's rows, or the two depth taps
# of kernel = stride = 2 woven into each run), "winograd" (the forward
# Winograd path), "depthwise" (the forward planar depthwise path, each
# channel's taps reversed), "phases" (the forward kernels once per phase of
# the strides) or "transposed" (the forward kernels, one phase, on the
# forward's packed weights transposed).
last_input_gradient_path <- function() .Call(ffi_last_input_grad_path)

# Tests only: whether the last forward pass wrote its output with streaming
# (non-temporal) stores, as the patch, planar and depthwise paths do for
# outputs of 4 MB and more.
last_forward_streamed <- function() .Call(ffi_last_streamed)

# Tests only: whether the last forward pass's planar tiles (rows of whole
# vectors, one after another in R) or patch GEMM blocks (their whole blocks
# of positions) wrote the output straight into the R array from their
# registers (no activation, or ReLU).
last_forward_direct <- function() .Call(ffi_last_direct)

# Tests only: whether layers of few channels per group may take the planar
# path (TRUE, the default); FALSE sends them to the channels-last register
# tiles, whose short runs of taps the tests cover too. Returns the previous
# setting.
planar_allow <- function(allow) .Call(ffi_planar_allow, allow)

# Tests only: the most output rows per bundle of the planar path's Winograd
# rows ("planar-winograd"): 4 (the default), 2, or 0, which keeps planar
# layers on the direct planar tiles. Returns the previous setting.
planar_winograd_rows <- function(rows) .Call(ffi_planar_winograd_rows, rows)

# Tests only: fill the C routines' scratch memory with NaN bytes whenever it is
# handed out (blocks are kept between calls), and every result array they
# fill, so a kernel that reads scratch it did not write, or leaves a result
# element unwritten, gives wrong results. Returns the previous setting.
scratch_poison <- function(on) .Call(ffi_scratch_poison, on)

# Tests only: bytes of large results handed out from the result pool and not
# yet collected by R, bytes of collected ones kept for reuse, and the most
# that may be kept (0 under AddressSanitizer).
result_memory <- function() {
  stats::setNames(.Call(ffi_result_memory), c("live", "kept", "limit"))
}
