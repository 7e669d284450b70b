/* Micro-kernels compiled for AVX2 + FMA through a target attribute, so the
 * package builds without -march flags; cpu.c only selects them on a CPU that has
 * the instructions. Elsewhere (another compiler or architecture) the table falls
 * back to the generic kernels. */
#include <string.h>
#include "conv3d.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define CONV3D_HAVE_ISA 1
#elif defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define CONV3D_HAVE_ISA 1
#endif

#ifdef CONV3D_HAVE_ISA
/* vector register width in bytes, and the widest register tile along W */
#define VEC_BYTES 32
#define WT_MAX 6
#define WT_HALF 3 /* WT_MAX / 2: reduction tiles of 2 and 4 filters */
#define GEMM_NR WT_MAX /* filters of the GEMM block */
#define GRAD_NR 4 /* channels per kernel-gradient block */
#define DOT_NK 4 /* patch rows x vectors of filters per kernel-gradient dot block */
#define DOT_NV 2
#define PLANAR_FB 4 /* filters x vectors of the widest planar tile */
#define PLANAR_NJ 2
#define DWG_NT 8 /* taps per depthwise kernel-gradient block */

#include <immintrin.h>
#define STREAM_PD(p, v) _mm256_stream_pd((p), (__m256d)(v))
#define STREAM_FENCE() _mm_sfence()
#define FLOAT_HALVES_TO_DOUBLES(v, lo, hi)                                 \
  do {                                                                     \
    const __m256 v_ = (__m256)(v);                                         \
    (lo) = (conv_vd_one)_mm256_cvtps_pd(_mm256_castps256_ps128(v_));       \
    (hi) = (conv_vd_one)_mm256_cvtps_pd(_mm256_extractf128_ps(v_, 1));     \
  } while (0)
#include "kernel_convert.h"
#include "kernel_pool.h"

#define TEMPLATE "kernel_template.h"
#include "both_types.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

const struct kernel_table kernels_avx2 = {
    8, 4, WT_MAX, GEMM_NR, GRAD_NR, DOT_NK, DOT_NV, DWG_NT, PLANAR_FB, PLANAR_NJ,
    conv_span_f32, conv_span_f64, planar_tile_f32, planar_tile_f64,
    planar_bundles_f32, planar_bundles_f64, planar_combine_f32, planar_combine_f64,
    dw_plane_f32, dw_plane_f64, dw_fill_plane_f32, dw_fill_plane_f64,
    dw_grad_plane_f32, dw_grad_plane_f64, gemm_block_f32, gemm_block_f64,
    grad_block_f32, grad_block_f64, grad_block1_f32, grad_block1_f64,
    dot_block_f32, dot_block_f64, dwgrad_block_f32, dwgrad_block_f64,
    wino_in_f32, wino_in_f64, wino_gemm_f32, wino_gemm_f64, wino_out_f32, wino_out_f64,
    doubles_to_floats, floats_to_doubles, columns_to_rows_generic_f32,
    columns_to_rows_generic_f64, rows_to_columns_generic_f32, rows_to_columns_generic_f64,
    strided_to_floats_generic, strided_to_doubles,
    floats_to_doubles_stream, doubles_stream, stream_fence,
    transpose_generic_f32, transpose_generic_f64, pool_rows_vec};
#else
const struct kernel_table kernels_avx2 = {0};
#endif
