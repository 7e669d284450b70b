/* Registration only. */
#include <R_ext/Rdynload.h>
#include "ffi.h"
#include "conv3d.h"

static const R_CallMethodDef call_methods[] = {
  {"ffi_conv3d_spec", (DL_FUNC)&ffi_conv3d_spec, 3},
  {"ffi_conv3d_check_weights", (DL_FUNC)&ffi_conv3d_check_weights, 3},
  {"ffi_conv3d_forward", (DL_FUNC)&ffi_conv3d_forward, 6},
  {"ffi_conv3d_transpose_spec", (DL_FUNC)&ffi_conv3d_transpose_spec, 3},
  {"ffi_conv3d_transpose_check_weights", (DL_FUNC)&ffi_conv3d_transpose_check_weights, 3},
  {"ffi_conv3d_transpose", (DL_FUNC)&ffi_conv3d_transpose, 5},
  {"ffi_init_weights", (DL_FUNC)&ffi_init_weights, 4},
  {"ffi_threads", (DL_FUNC)&ffi_threads, 1},
  {"ffi_cpu", (DL_FUNC)&ffi_cpu, 1},
  {"ffi_round_f32", (DL_FUNC)&ffi_round_f32, 1},
  {"ffi_peak_gflops", (DL_FUNC)&ffi_peak_gflops, 2},
  {"ffi_last_timing", (DL_FUNC)&ffi_last_timing, 0},
  {"ffi_last_path", (DL_FUNC)&ffi_last_path, 0},
  {"ffi_last_input_grad_path", (DL_FUNC)&ffi_last_input_grad_path, 0},
  {"ffi_last_streamed", (DL_FUNC)&ffi_last_streamed, 0},
  {"ffi_last_direct", (DL_FUNC)&ffi_last_direct, 0},
  {"ffi_planar_allow", (DL_FUNC)&ffi_planar_allow, 1},
  {"ffi_planar_winograd_rows", (DL_FUNC)&ffi_planar_winograd_rows, 1},
  {"ffi_scratch_poison", (DL_FUNC)&ffi_scratch_poison, 1},
  {"ffi_release_memory", (DL_FUNC)&ffi_release_memory, 0},
  {"ffi_result_memory", (DL_FUNC)&ffi_result_memory, 0},
  {"ffi_collect_results", (DL_FUNC)&ffi_collect_results, 0},
  {"ffi_unload", (DL_FUNC)&ffi_unload, 0},
  {"ffi_activation", (DL_FUNC)&ffi_activation, 3},
  {"ffi_pool3d", (DL_FUNC)&ffi_pool3d, 4},
  {"ffi_pool3d_shape", (DL_FUNC)&ffi_pool3d_shape, 2},
  {"ffi_pool3d_backward", (DL_FUNC)&ffi_pool3d_backward, 5},
  {"ffi_global_pool3d", (DL_FUNC)&ffi_global_pool3d, 3},
  {"ffi_concatenate", (DL_FUNC)&ffi_concatenate, 3},
  {"ffi_split_rows", (DL_FUNC)&ffi_split_rows, 3},
  {"ffi_take_rows", (DL_FUNC)&ffi_take_rows, 2},
  {"ffi_global_pool3d_backward", (DL_FUNC)&ffi_global_pool3d_backward, 4},
  {"ffi_activation_backward", (DL_FUNC)&ffi_activation_backward, 3},
  {"ffi_conv3d_gradients", (DL_FUNC)&ffi_conv3d_gradients, 10},
  {NULL, NULL, 0}};

void R_init_conv3d(DllInfo* dll) {
  R_registerRoutines(dll, NULL, call_methods, NULL, NULL);
  R_useDynamicSymbols(dll, FALSE);
  R_forceSymbols(dll, TRUE);
  conv3d_threads_init();
}
