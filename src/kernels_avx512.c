/* Micro-kernels compiled for AVX-512 (F, VL, BW, DQ) through a target attribute, so the
 * package builds without -march flags; cpu.c only selects them on a CPU that has
 * the instructions. Elsewhere (another compiler or architecture) the table falls
 * back to the generic kernels. */
#include <stdint.h>
#include <string.h>
#include "conv3d.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#define CONV3D_HAVE_ISA 1
#elif defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#define CONV3D_HAVE_ISA 1
#endif

#ifdef CONV3D_HAVE_ISA
/* vector register width in bytes, and the widest register tile along W */
#define VEC_BYTES 64
#define WT_MAX 12
#define WT_HALF 6 /* WT_MAX / 2: reduction tiles of 2 and 4 filters */
#define GEMM_NR 8 /* filters of the GEMM block: 16 accumulators, and no padding for filter counts that are multiples of 8 */
#define GRAD_NR 8 /* channels per kernel-gradient block */
#define DOT_NK 8 /* patch rows x vectors of filters per kernel-gradient dot block */
#define DOT_NV 2
#define PLANAR_FB 8 /* filters x vectors of the widest planar tile */
#define PLANAR_NJ 3
#define DWG_NT 8 /* taps per depthwise kernel-gradient block */

#include <immintrin.h>
/* a vector of lanes k.. of the pair (lo, hi): one valign (kernel_depthwise.h,
 * which tests DW_SHIFT_f32 for both types: a tier defines the two together) */
#define DW_SHIFT_f32(lo, hi, k)                                                    \
  ((vec_f32)_mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512((__m512)(hi)), \
                                                    _mm512_castps_si512((__m512)(lo)), (k))))
#define DW_SHIFT_f64(lo, hi, k)                                                    \
  ((vec_f64)_mm512_castsi512_pd(_mm512_alignr_epi64(_mm512_castpd_si512((__m512d)(hi)), \
                                                    _mm512_castpd_si512((__m512d)(lo)), (k))))
#define STREAM_PD(p, v) _mm512_stream_pd((p), (__m512d)(v))
#define STREAM_FENCE() _mm_sfence()
#define FLOAT_HALVES_TO_DOUBLES(v, lo, hi)                                                  \
  do {                                                                                      \
    const __m512 v_ = (__m512)(v);                                                          \
    (lo) = (conv_vd_one)_mm512_cvtps_pd(_mm512_castps512_ps256(v_));                        \
    (hi) = (conv_vd_one)_mm512_cvtps_pd(                                                    \
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v_), 1)));                 \
  } while (0)
#include "kernel_convert.h"
#include "kernel_pool.h"

/* Transposes the 8 x 8 floats of each 256-bit half of r[0..7] (row k of a
 * half becomes column k): unpacks and shuffles within 128-bit lanes, then one
 * two-source permute per row pairs the lanes up. */
static inline void transpose_halves_8x8(__m512 r[8]) {
  __m512 t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int h = 0; h < 8; h += 4) {
    u[h] = _mm512_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[h + 1] = _mm512_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[h + 2] = _mm512_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[h + 3] = _mm512_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int k = 0; k < 4; ++k) {
    r[k] = _mm512_permutex2var_ps(u[k], lo, u[k + 4]);
    r[k + 4] = _mm512_permutex2var_ps(u[k], hi, u[k + 4]);
  }
}

/* Columns a power of two apart share one set of the L1 cache, so the vector
 * converter below never keeps 16 columns open at once: each column's run of
 * up to RUN voxels is read on its own into a staging block in L1, and the
 * 16 x 8 transposes work on that block. */
#define RUN 64

/* columns_to_rows_generic_f32 in blocks of 16 channels x 8 voxels: channel j
 * and j + 8 share a register, so one transpose of the halves leaves each
 * voxel's 16 channels in one register. */
static void columns_to_rows_f32(const double* in, int64_t ldc, const int64_t* src, int64_t m,
                                int64_t n, float* out, int64_t ldr, int stream) {
  float stage[16 * RUN] __attribute__((aligned(64)));
  /* streamed rows must be aligned vectors: every row is when out and ldr are */
  stream = stream && ((uintptr_t)out % 64) == 0 && ldr % 16 == 0;
  int64_t c0 = 0;
  for (; c0 + 16 <= n; c0 += 16) {
    for (int64_t i0 = 0; i0 < m; i0 += RUN) {
      const int64_t mm = m - i0 < RUN ? m - i0 : RUN;
      for (int j = 0; j < 16; ++j)
        doubles_to_floats(in + (src ? src[c0 + j] : c0 + j) * ldc + i0, stage + j * RUN, mm);
      int64_t i = 0;
      for (; i + 8 <= mm; i += 8) {
        __m512 r[8];
        for (int k = 0; k < 8; ++k) {
          r[k] = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_load_ps(stage + k * RUN + i)),
                                    _mm256_load_ps(stage + (k + 8) * RUN + i), 1);
        }
        transpose_halves_8x8(r);
        if (stream) {
          for (int k = 0; k < 8; ++k) _mm512_stream_ps(out + (i0 + i + k) * ldr + c0, r[k]);
        } else {
          for (int k = 0; k < 8; ++k) _mm512_storeu_ps(out + (i0 + i + k) * ldr + c0, r[k]);
        }
      }
      for (; i < mm; ++i)
        for (int j = 0; j < 16; ++j) out[(i0 + i) * ldr + c0 + j] = stage[j * RUN + i];
    }
  }
  if (c0 < n) { /* the last channels; src holds absolute channel numbers */
    if (src) columns_to_rows_generic_f32(in, ldc, src + c0, m, n - c0, out + c0, ldr, 0);
    else columns_to_rows_generic_f32(in + c0 * ldc, ldc, NULL, m, n - c0, out + c0, ldr, 0);
  }
}

#undef RUN

/* rows_to_columns_generic_f32 in blocks of 16 channels: runs of up to 64
 * voxels are transposed 8 at a time into an L1 stage of 16 columns (one
 * transpose of the halves leaves channel j's 8 voxels in the low half of
 * register j and channel j + 8's in its high half), and each column then goes
 * out as one run, so a column's lines are written one after another. */
static void rows_to_columns_f32(const float* in, int64_t ldr, int64_t m, int64_t n, double* out,
                                int64_t ldc, int stream) {
  float stage[16 * 64] __attribute__((aligned(64)));
  int64_t c0 = 0;
  for (; c0 + 16 <= n; c0 += 16)
    for (int64_t i0 = 0; i0 < m; i0 += 64) {
      const int64_t len = m - i0 < 64 ? m - i0 : 64;
      int64_t i = 0;
      for (; i + 8 <= len; i += 8) {
        __m512 r[8];
        for (int k = 0; k < 8; ++k) r[k] = _mm512_loadu_ps(in + (i0 + i + k) * ldr + c0);
        transpose_halves_8x8(r);
        for (int k = 0; k < 8; ++k) {
          _mm256_store_ps(stage + k * 64 + i, _mm512_castps512_ps256(r[k]));
          _mm256_store_ps(stage + (k + 8) * 64 + i, _mm512_extractf32x8_ps(r[k], 1));
        }
      }
      for (; i < len; ++i)
        for (int j = 0; j < 16; ++j) stage[j * 64 + i] = in[(i0 + i) * ldr + c0 + j];
      for (int j = 0; j < 16; ++j) {
        if (stream) floats_to_doubles_stream(stage + j * 64, out + (c0 + j) * ldc + i0, len);
        else floats_to_doubles(stage + j * 64, out + (c0 + j) * ldc + i0, len);
      }
    }
  if (c0 < n) rows_to_columns_generic_f32(in + c0, ldr, m, n - c0, out + c0 * ldc, ldc, stream);
}

/* The 16 x 16 floats at in (rows ldi apart) transposed into out (rows ldo
 * apart): transpose_halves_8x8 on rows 0-7 and on rows 8-15 leaves, in
 * r[k] and r[k + 8], column k of each half in their low 256 bits and column
 * k + 8 in their high ones, which one lane shuffle each joins; stream:
 * stores past the caches (out and ldo keep every row aligned). */
static inline void transpose_16x16(const float* in, int64_t ldi, float* out, int64_t ldo,
                                   int stream) {
  __m512 r[16];
  for (int k = 0; k < 16; ++k) r[k] = _mm512_loadu_ps(in + k * ldi);
  transpose_halves_8x8(r);
  transpose_halves_8x8(r + 8);
  for (int k = 0; k < 8; ++k) {
    const __m512 lo = _mm512_shuffle_f32x4(r[k], r[k + 8], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 hi = _mm512_shuffle_f32x4(r[k], r[k + 8], _MM_SHUFFLE(3, 2, 3, 2));
    if (stream) {
      _mm512_stream_ps(out + k * ldo, lo);
      _mm512_stream_ps(out + (k + 8) * ldo, hi);
    } else {
      _mm512_storeu_ps(out + k * ldo, lo);
      _mm512_storeu_ps(out + (k + 8) * ldo, hi);
    }
  }
}

/* out[j * ldo + i] = in[i * ldi + j] for an 8 x 8 block of doubles: pairs
 * of rows unpacked, then 128-bit lanes gathered twice (shuffle_f64x2); stream:
 * stores past the caches (out and ldo keep every row aligned). */
static inline void transpose_8x8_f64(const double* in, int64_t ldi, double* out, int64_t ldo,
                                     int stream) {
  __m512d t[8], u[4], v[4], col[8];
  for (int k = 0; k < 8; k += 2) {
    const __m512d a = _mm512_loadu_pd(in + k * ldi), b = _mm512_loadu_pd(in + (k + 1) * ldi);
    t[k] = _mm512_unpacklo_pd(a, b);     /* columns 0, 2, 4, 6 of rows k, k + 1 */
    t[k + 1] = _mm512_unpackhi_pd(a, b); /* columns 1, 3, 5, 7 */
  }
  for (int odd = 0; odd < 2; ++odd) {
    /* rows 0-3 (u) and 4-7 (v) of columns odd + {0, 4} and odd + {2, 6} */
    u[2 * odd] = _mm512_shuffle_f64x2(t[odd], t[2 + odd], _MM_SHUFFLE(2, 0, 2, 0));
    u[2 * odd + 1] = _mm512_shuffle_f64x2(t[odd], t[2 + odd], _MM_SHUFFLE(3, 1, 3, 1));
    v[2 * odd] = _mm512_shuffle_f64x2(t[4 + odd], t[6 + odd], _MM_SHUFFLE(2, 0, 2, 0));
    v[2 * odd + 1] = _mm512_shuffle_f64x2(t[4 + odd], t[6 + odd], _MM_SHUFFLE(3, 1, 3, 1));
  }
  for (int odd = 0; odd < 2; ++odd)
    for (int h = 0; h < 2; ++h) { /* columns odd + 2h and odd + 2h + 4 */
      col[odd + 2 * h] = _mm512_shuffle_f64x2(u[2 * odd + h], v[2 * odd + h], _MM_SHUFFLE(2, 0, 2, 0));
      col[odd + 2 * h + 4] =
          _mm512_shuffle_f64x2(u[2 * odd + h], v[2 * odd + h], _MM_SHUFFLE(3, 1, 3, 1));
    }
  for (int j = 0; j < 8; ++j) {
    if (stream) {
      _mm512_stream_pd(out + j * ldo, col[j]);
    } else {
      _mm512_storeu_pd(out + j * ldo, col[j]);
    }
  }
}

/* Whether T x T tiles written to out (rows ldo apart; `rows` of them along
 * each output row) can all be streamed: every row of every tile is an
 * aligned vector. */
static inline int tiles_stream(const void* out, int64_t ldo, int64_t rows, int64_t t) {
  return ((uintptr_t)out % 64) == 0 && ldo % t == 0 && rows % t == 0;
}

/* transpose_generic_* by T x T tiles (TILE), the rows and columns past the
 * last whole tiles by the generic version; streamed only when tiles_stream */
#define TRANSPOSE_BY_TILES(real_t, SUFFIX, T, TILE)                                               \
  static void CONCAT(transpose_tiles_, SUFFIX)(const real_t* in, int64_t ldi, int64_t rows,      \
                                               int64_t cols, real_t* out, int64_t ldo,            \
                                               int stream) {                                      \
    const int64_t rt = rows / (T) * (T), ct = cols / (T) * (T);                                   \
    stream = stream && tiles_stream(out, ldo, rows, (T));                                         \
    for (int64_t i = 0; i < rt; i += (T))                                                         \
      for (int64_t j = 0; j < ct; j += (T))                                                       \
        TILE(in + i * ldi + j, ldi, out + j * ldo + i, ldo, stream);                              \
    if (rt < rows)                                                                                \
      CONCAT(transpose_generic_, SUFFIX)(in + rt * ldi, ldi, rows - rt, ct, out + rt, ldo, 0);    \
    if (ct < cols)                                                                                \
      CONCAT(transpose_generic_, SUFFIX)(in + ct, ldi, rows, cols - ct, out + ct * ldo, ldo, 0);  \
  }
TRANSPOSE_BY_TILES(float, f32, 16, transpose_16x16)
TRANSPOSE_BY_TILES(double, f64, 8, transpose_8x8_f64)
#undef TRANSPOSE_BY_TILES

/* rows_to_columns_generic_f64 by 8 x 8 tiles (1.1 -> 0.3 ns a value for
 * mednet_stem's spans), when the tiles can stream what is asked to be
 * streamed (whole aligned runs); else the generic version, which streams
 * each run from its first whole line */
static void rows_to_columns_f64(const double* in, int64_t ldr, int64_t m, int64_t n,
                                double* out, int64_t ldc, int stream) {
  if (stream && !tiles_stream(out, ldc, m, 8)) {
    rows_to_columns_generic_f64(in, ldr, m, n, out, ldc, stream);
    return;
  }
  transpose_tiles_f64(in, ldr, m, n, out, ldc, stream);
}

/* transpose_tiles_f32; and two rows into one run (ldo 2: weave_run_* of the
 * depth taps of 2x2x2 kernels of stride 2) 16 columns at a time by two
 * permutes, the last few by the generic version */
static void transpose_f32(const float* in, int64_t ldi, int64_t rows, int64_t cols, float* out,
                          int64_t ldo, int stream) {
  if (rows != 2 || ldo != 2) {
    transpose_tiles_f32(in, ldi, rows, cols, out, ldo, stream);
    return;
  }
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                       15, 31);
  int64_t q = 0;
  for (; q + 16 <= cols; q += 16) {
    const __m512 a = _mm512_loadu_ps(in + q), b = _mm512_loadu_ps(in + ldi + q);
    _mm512_storeu_ps(out + 2 * q, _mm512_permutex2var_ps(a, lo, b));
    _mm512_storeu_ps(out + 2 * q + 16, _mm512_permutex2var_ps(a, hi, b));
  }
  if (q < cols) transpose_generic_f32(in + q, ldi, 2, cols - q, out + 2 * q, 2, 0);
}

/* strided_to_floats_generic: even doubles of two vectors by one permute for
 * step 2 (2x2x2 kernels of stride 2), gathers for larger steps; the last few
 * gathered go to the generic version. */
static void strided_to_floats(const double* in, int64_t step, float* out, int64_t n) {
  int64_t i = 0;
  if (step == 2) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    /* two vectors read in[2i .. 2i + 15]; the run ends at in[2n - 2] */
    for (; i + 9 <= n; i += 8) {
      const __m512d v = _mm512_permutex2var_pd(_mm512_loadu_pd(in + 2 * i), even,
                                               _mm512_loadu_pd(in + 2 * i + 8));
      _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(v));
    }
    if (i < n) { /* the last 1-8: masked loads stop at in[2n - 2] */
      const int64_t left = 2 * (n - i) - 1; /* doubles to read, 1-15 */
      const __mmask8 lo = (__mmask8)((1u << (left < 8 ? left : 8)) - 1);
      const __mmask8 hi = (__mmask8)((1u << (left > 8 ? left - 8 : 0)) - 1);
      const __m512d v = _mm512_permutex2var_pd(_mm512_maskz_loadu_pd(lo, in + 2 * i), even,
                                               _mm512_maskz_loadu_pd(hi, in + 2 * i + 8));
      _mm256_mask_storeu_ps(out + i, (__mmask8)((1u << (n - i)) - 1), _mm512_cvtpd_ps(v));
      return;
    }
  } else if (step < ((int64_t)1 << 27)) { /* 7 * step fits the 32-bit indices */
    const __m256i idx =
        _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)step));
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(out + i, _mm512_cvtpd_ps(_mm512_i32gather_pd(idx, in + i * step, 8)));
    }
  }
  if (i < n) strided_to_floats_generic(in + i * step, step, out + i, n - i);
}

#define TEMPLATE "kernel_template.h"
#include "both_types.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

const struct kernel_table kernels_avx512 = {
    16, 8, WT_MAX, GEMM_NR, GRAD_NR, DOT_NK, DOT_NV, DWG_NT, PLANAR_FB, PLANAR_NJ,
    conv_span_f32, conv_span_f64, planar_tile_f32, planar_tile_f64,
    planar_bundles_f32, planar_bundles_f64, planar_combine_f32, planar_combine_f64,
    dw_plane_f32, dw_plane_f64, dw_fill_plane_f32, dw_fill_plane_f64,
    dw_grad_plane_f32, dw_grad_plane_f64, gemm_block_f32, gemm_block_f64,
    grad_block_f32, grad_block_f64, grad_block1_f32, grad_block1_f64,
    dot_block_f32, dot_block_f64, dwgrad_block_f32, dwgrad_block_f64,
    wino_in_f32, wino_in_f64, wino_gemm_f32, wino_gemm_f64, wino_out_f32, wino_out_f64,
    doubles_to_floats, floats_to_doubles, columns_to_rows_f32, columns_to_rows_generic_f64,
    rows_to_columns_f32, rows_to_columns_f64,
    strided_to_floats, strided_to_doubles, floats_to_doubles_stream, doubles_stream,
    stream_fence, transpose_f32, transpose_tiles_f64, pool_rows_vec};
#else
const struct kernel_table kernels_avx512 = {0};
#endif
