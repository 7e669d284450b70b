/* Entry points registered in init.c. */
#ifndef CONV3D_FFI_H
#define CONV3D_FFI_H
#define R_NO_REMAP
#include <R.h>
#include <Rinternals.h>
#include "conv3d.h"

void conv3d_signal(const char* problem, const char* arg, SEXP value, int detail, SEXP expected);

/* ffi_arrays.c. Results are unprotected. */
/* The dims of x as doubles; signals unless x is a numeric array of rank 5. */
SEXP input_shape_of(SEXP x);
/* Output shape in the spec's data format, batch first; negative where unknown. */
void output_dims(const struct conv_spec* s, int64_t dims[5]);
/* A double vector of x, NA for the negative (unknown) entries. */
SEXP int64_vector(const int64_t* x, int n);
/* An uninitialised double array with these dims. */
SEXP alloc_array(const int64_t dims[5]);
/* dy as a double array; signals unless it is a numeric array of the output
 * dims of s. A converted copy is protected and counted into *n_prot. */
SEXP checked_gradient(SEXP dy, const struct conv_spec* s, int* n_prot);

/* ffi_scratch.c: per-call scratch owned by external pointers (at most 8 blocks
 * per call_scratch); scratch_release frees them and drops their protections,
 * which must be the caller's most recent ones. */
struct call_scratch {
  SEXP ptr[8];
  int n;
};
void* alloc_elems(struct call_scratch* cs, int64_t n, size_t size);
/* alloc_elems of `threads` blocks of n elements each, their count checked */
void* alloc_per_thread(struct call_scratch* cs, int64_t n, int threads, size_t size);
void scratch_release(struct call_scratch* cs);
/* frees the scratch blocks kept for later calls */
void scratch_forget(void);
void advise_huge_pages(void* p, size_t bytes);
void check_user_interrupt(void);

/* ffi_conv.c: the R array x described by s, padded and packed by pack_input_*
 * (channels last, ks's axis order) into scratch of cs, in the layer's type,
 * followed by `slack` zeroed elements. geo, the geometry the packed input is
 * for (or NULL), may ask for channels interleaved (paired groups:
 * conv_pair_perm). */
void* packed_input(struct call_scratch* cs, const struct conv_spec* s,
                   const struct conv_spec* ks, const struct conv_geometry* geo,
                   const double* x, int64_t slack, int threads);

/* ffi_conv.c: the layer's weights as its cache holds them packed for
 * geometry g (the general kernels' layout when g is as conv_geometry_init
 * makes it), or NULL when it holds none for g: not packed yet (the cache is
 * emptied whenever the weights change), or packed for another path or tier. */
const void* cached_packed_weights(SEXP cache, const struct conv_spec* s,
                                  const struct conv_geometry* g);

/* One call of a layer, validated once: its spec, and x, kernel and bias (or
 * R_NilValue) as double arrays. conv_call_prepare signals any problem; it
 * protects what it makes, counting into *n_prot. conv_call_forward gives the
 * output array (pre-activation with ACT_LINEAR), packing weights through the
 * layer's cache. */
struct conv_call {
  struct conv_spec s;
  SEXP x, kernel, bias;
};
void conv_call_prepare(SEXP cfg, SEXP x, SEXP weights, SEXP built_channels,
                       struct conv_call* call, int* n_prot);
SEXP conv_call_forward(const struct conv_call* call, int act, SEXP cache);

/* ffi_backward.c: dx alone, the adjoint of the convolution s applied to dz
 * (a transposed convolution's forward pass). */
void conv_input_gradient(const struct conv_spec* s, const double* dz, const double* w, SEXP cache,
                         double* dx, int threads);

SEXP ffi_conv3d_spec(SEXP cfg, SEXP input_shape, SEXP built_channels);
SEXP ffi_conv3d_transpose_spec(SEXP cfg, SEXP input_shape, SEXP built_channels);
SEXP ffi_conv3d_transpose_check_weights(SEXP cfg, SEXP input_shape, SEXP weights);
SEXP ffi_conv3d_transpose(SEXP cfg, SEXP x, SEXP weights, SEXP built_channels, SEXP cache);
SEXP ffi_conv3d_check_weights(SEXP cfg, SEXP input_shape, SEXP weights);
SEXP ffi_conv3d_forward(SEXP cfg, SEXP x, SEXP weights, SEXP activation, SEXP built_channels,
                        SEXP cache);
SEXP ffi_init_weights(SEXP kind, SEXP params, SEXP shape, SEXP arg);
SEXP ffi_threads(SEXP n);
SEXP ffi_cpu(SEXP tier);
SEXP ffi_round_f32(SEXP x);
SEXP ffi_peak_gflops(SEXP n, SEXP f64);
SEXP ffi_last_timing(void);
SEXP ffi_last_path(void);
SEXP ffi_last_input_grad_path(void);
SEXP ffi_last_streamed(void);
SEXP ffi_last_direct(void);
SEXP ffi_planar_allow(SEXP allow);
SEXP ffi_planar_winograd_rows(SEXP max_rows);
SEXP ffi_scratch_poison(SEXP on);
SEXP alloc_result(R_xlen_t n);
SEXP ffi_result_memory(void);
SEXP ffi_collect_results(void);
SEXP ffi_release_memory(void);
SEXP ffi_unload(void);
SEXP ffi_activation(SEXP x, SEXP code, SEXP f32);
SEXP ffi_pool3d(SEXP cfg, SEXP x, SEXP average, SEXP keep_argmax);
SEXP ffi_pool3d_shape(SEXP cfg, SEXP input_shape);
SEXP ffi_pool3d_backward(SEXP cfg, SEXP x, SEXP dy, SEXP average, SEXP argmax);
SEXP ffi_global_pool3d(SEXP x, SEXP channels_last, SEXP average);
SEXP ffi_concatenate(SEXP xs, SEXP outer_count, SEXP dims);
SEXP ffi_split_rows(SEXP dy, SEXP outer_count, SEXP dims);
SEXP ffi_take_rows(SEXP x, SEXP idx);
SEXP ffi_global_pool3d_backward(SEXP x, SEXP g, SEXP channels_last, SEXP average);
SEXP ffi_activation_backward(SEXP z, SEXP dy, SEXP code);
SEXP ffi_conv3d_gradients(SEXP cfg, SEXP x, SEXP weights, SEXP activation, SEXP built_channels,
                          SEXP cache, SEXP dy, SEXP need_input, SEXP need_kernel, SEXP output);
#endif
