/* Shared types and prototypes of the conv3d C core.
 * Only the ffi_* entry points (ffi_*.c, init.c) include R headers; everything
 * declared here is plain C so the kernels and the driver never touch the R API. */
#ifndef CONV3D_H
#define CONV3D_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Names the per-type instances of a template header: CONCAT(name_, SUFFIX). */
#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)

enum conv_layout { LAYOUT_CHANNELS_LAST = 0, LAYOUT_CHANNELS_FIRST = 1 };
enum conv_dtype { DTYPE_FLOAT32 = 0, DTYPE_FLOAT64 = 1 };

/* Activation codes; the order matches activation_names in R/activations.R. */
enum conv_activation {
  ACT_LINEAR = 0, ACT_RELU, ACT_SIGMOID, ACT_TANH, ACT_SOFTMAX, ACT_ELU, ACT_SELU,
  ACT_SOFTPLUS, ACT_SOFTSIGN, ACT_SWISH, ACT_GELU, ACT_EXPONENTIAL,
  ACT_HARD_SIGMOID, ACT_RELU6, ACT_LEAKY_RELU, ACT_MISH, ACT_COUNT
};

/* Everything the driver needs to know about one convolution. Sizes are int64_t;
 * -1 marks an axis whose length is not known yet (symbolic shapes). */
struct conv_spec {
  int64_t batch;        /* N */
  int64_t in[3];        /* D, H, W */
  int64_t channels;     /* C */
  int64_t filters;      /* F */
  int64_t groups;       /* G */
  int64_t kernel[3];
  int64_t strides[3];
  int64_t dilation[3];
  int64_t out[3];
  int64_t pad_lo[3];    /* 'same': floor(P / 2) */
  int64_t pad_hi[3];    /* 'same': the odd extra goes at the end */
  int same;
  int use_bias;
  enum conv_layout layout;
  enum conv_dtype dtype;
  int64_t n_params;
  int axes[3];          /* kernel spec only: spatial axis i is the layer's axes[i] */
};

/* Problems found by validation; R/errors.R words each one. Keep in sync with
 * problem_names in validate.c. */
enum conv_problem {
  PROBLEM_NONE = 0,
  PROBLEM_NOT_NUMERIC,        /* argument is not a number */
  PROBLEM_SCALAR_INT,         /* must be one positive whole number */
  PROBLEM_TUPLE,              /* must be 1 or 3 positive whole numbers */
  PROBLEM_PADDING,
  PROBLEM_DATA_FORMAT,
  PROBLEM_DTYPE,
  PROBLEM_FLAG,               /* must be TRUE or FALSE */
  PROBLEM_STRIDES_DILATION,
  PROBLEM_FILTERS_GROUPS,
  PROBLEM_INPUT_RANK,
  PROBLEM_INPUT_DIM,
  PROBLEM_CHANNELS_UNKNOWN,
  PROBLEM_CHANNELS_GROUPS,
  PROBLEM_CHANNELS_BUILT,
  PROBLEM_OUTPUT_EMPTY,
  PROBLEM_SIZE_OVERFLOW,
  PROBLEM_WEIGHT_SHAPE,
  PROBLEM_WEIGHT_COUNT,
  PROBLEM_INPUT_NOT_NUMERIC,
  PROBLEM_KERNEL_OVERFLOW,    /* the window's tap count overflows */
  PROBLEM_WEIGHTS_OVERFLOW,   /* taps x channels per group x filters overflows */
  PROBLEM_WINDOW_OVERFLOW,    /* the window's padding makes the padded input overflow */
  PROBLEM_OUTPUT_PADDING,     /* must be whole numbers >= 0, each below its stride */
  PROBLEM_TRANSPOSE_LENGTH,   /* a transposed output length no convolution maps back */
  PROBLEM_TRANSPOSE_OVERFLOW, /* a transposed output length beyond an R array's axis */
  PROBLEM_COUNT
};

/* Overflow-checked arithmetic on sizes: returns 0 on overflow. */
int size_mul(int64_t a, int64_t b, int64_t* out);

/* validate.c: the one place the layer arithmetic lives. */
void conv_output_length(int64_t n, int64_t k, int64_t s, int64_t d, int same,
                        int64_t* out, int64_t* pad_lo, int64_t* pad_hi);
enum conv_problem conv_spec_finish(struct conv_spec* spec, int* axis);

/* threads.c */
int conv3d_thread_count(void);
int conv3d_set_thread_count(int n);
int conv3d_thread_limit(void);
void conv3d_threads_init(void);

/* cpu.c: micro-kernel dispatch. */
enum cpu_tier { TIER_GENERIC = 0, TIER_AVX2 = 1, TIER_AVX512 = 2 };
enum cpu_tier cpu_best_tier(void);
enum cpu_tier cpu_active_tier(void);
int cpu_set_tier(enum cpu_tier tier);
const char* cpu_tier_name(enum cpu_tier tier);


/* Geometry shared by every row of one call, precomputed by the driver. */
struct conv_geometry {
  int64_t pd, ph, pw;          /* padded input extents */
  int64_t c, cg, fg;           /* channels, per-group in/out */
  int64_t f;                   /* total filters */
  int64_t kd, kh, kw, sd, sh, sw, dd, dh, dw;
  int64_t groups;
  /* how the kernel tier cuts the work (conv_geometry_init) */
  int lanes;                   /* elements per vector register of the tier */
  int nv;                      /* vectors per output-channel block: 1 or 2; 3: one
                                  vector holding two groups' filters interleaved */
  int64_t fb;                  /* output channels per block: lanes, or 2 * lanes (nv 2) */
  int64_t fg_pad;              /* fg rounded up to fb: packed weight columns */
  int depthwise;               /* cg == 1 && fg == 1: vectorised over channels */
  int reduce;                  /* few filters per group (fb = 1, 2 or 4 of them, padded),
                                  whole vectors of channels: reduction tiles across
                                  the channels (kernel_reduce.h) */
  int fold;                    /* groups == 1 && dw == 1: (kw, c) is one contiguous run */
  int axes[3];                 /* the layer's spatial axis behind each kernel axis */
  int patch;                   /* channels_last, one group, no padding or dilation and
                                  kernel <= stride on every axis (1x1x1 included): each
                                  input voxel feeds at most one output, so the layer is
                                  a GEMM over patches read straight from the R array
                                  (conv3d_patch_gemm_*) */
  int gemm_nr;                 /* filters of the tier's GEMM block */
  int winograd;                /* forward only: the Winograd path (conv_winograd_eligible) */
  int planar;                  /* forward only (conv_geometry_planar): few channels per
                                  group, rows of unit stride; vectors run along the
                                  rows of input planes each thread packs into its ring
                                  (conv3d_forward_planar_*) */
  int64_t planar_m, planar_points; /* planar path: output rows along axis 1 per
                                  Winograd bundle and transform points per bundle
                                  (conv_planar_winograd_geometry), or 0 for the
                                  direct tiles */
  int64_t in0, in1, in2, lo0, lo1, lo2; /* real input length and padding before, per axis */
  int64_t row_ends[2];         /* end columns of a row whose row taps reach padding:
                                  the first row_ends[0] and the last row_ends[1] */
  int rows_apart;              /* conv_rows_apart: spans run those columns apart */
};

/* Computes output voxels [p0, p1) of one plane (n, i0): voxel p is (p / o2, p % o2)
 * along the kernel spec's axes 1 and 2; x is the padded input at (n, i0 * s0). */
typedef void (*conv_span_fn_f32)(const struct conv_geometry* g, const float* x, int64_t i0,
                                 int64_t o2, int64_t p0, int64_t p1, const float* wp,
                                 const float* bias, float* y);
typedef void (*conv_span_fn_f64)(const struct conv_geometry* g, const double* x, int64_t i0,
                                 int64_t o2, int64_t p0, int64_t p1, const double* wp,
                                 const double* bias, double* y);

/* Memory that a GEMM block prefetches while it multiplies: n runs of `lines`
 * cache lines from runs[i] */
struct gemm_prefetch {
  const void* const* runs;
  int64_t n, lines;
};
/* A block's walk over pf: the lines per step for its `steps` steps, then per
 * step the next `per` lines from (*run, *line). The prefetches go evenly over
 * the products: a burst of them would wait for the core's few miss buffers
 * and stall the products. Addresses are formed as integers: a run's last
 * line may pass the end of its array. */
static inline int64_t gemm_prefetch_per(const struct gemm_prefetch* pf, int64_t steps) {
  return pf && pf->n > 0 ? (pf->n * pf->lines + steps - 1) / steps : 0;
}
/* Share i of `parts` of the n runs from runs: whole runs, as even as can be. */
static inline struct gemm_prefetch gemm_prefetch_share(const void* const* runs, int64_t n,
                                                       int64_t lines, int64_t i, int64_t parts) {
  const int64_t a = n * i / parts, b = n * (i + 1) / parts;
  const struct gemm_prefetch share = {runs + a, b - a, lines};
  return share;
}
/* A line of R memory wanted a while from now (the next GEMM block's rows,
 * the next slab of a depthwise channel), asked of L2 rather than L1
 * (locality 1, prefetcht2), presumably so that these many lines in flight
 * leave L1's few miss buffers to the loads around them. On a Zen 4 EPYC,
 * against the L1 hint: vnet_down forward 3.2-3.4 -> 2.3-2.4 ms,
 * x3d_depthwise 1.27-1.30 -> 0.99-1.08 ms, pointwise the same or better.
 * The prefetches a few rows ahead (patch_row_*, pack_input_*) showed no
 * difference and keep L1. */
static inline void prefetch_to_l2(const void* p) { __builtin_prefetch(p, 0, 1); }
static inline void gemm_prefetch_step(const struct gemm_prefetch* pf, int64_t per, int64_t* run,
                                      int64_t* line) {
  for (int64_t q = 0; q < per && *run < pf->n; ++q) {
    prefetch_to_l2((const void*)((uintptr_t)pf->runs[*run] + 64 * (uintptr_t)*line));
    if (++*line == pf->lines) *line = 0, ++*run;
  }
}
/* Whether the vectors a tile writes into an R array at base, at offsets that
 * are sums of multiples of s0, s1 and s2 and whole vectors (of `lanes`
 * elements) apart, all start aligned for streamed stores (struct
 * direct_out). */
static inline int conv_direct_aligned(const double* base, int64_t lanes, int64_t s0, int64_t s1,
                                      int64_t s2) {
  return (uintptr_t)base % 64 == 0 && s0 % lanes == 0 && s1 % lanes == 0 && s2 % lanes == 0;
}
/* A tile's outputs written straight into an R array from its registers: its
 * vector j of row f (a filter; f < nf) at yd[j] + f * ldd as doubles, the
 * ReLU applied first when relu is set, past the caches when stream is set
 * (every vector then aligned to the tier's stream width). The planar tiles
 * take nj vectors at yd[0 .. nj - 1]; the GEMM blocks two, at yd[0] and
 * yd[0] + lanes, or, when pairs is not NULL (the two depth taps of a patch
 * input gradient), rows 2i and 2i + 1 woven into one run from pairs[i]
 * (yd and ldd unused). */
struct direct_out {
  double* yd[3];
  int64_t ldd, nf;
  int relu, stream;
  double* const* pairs;
};
/* the most pairs of rows of a GEMM block (gemm_nr / 2 of every tier) */
#define GEMM_PAIRS_MAX 8
/* Pointwise GEMM block: out[j * ldo + i] = sum_c panel[c * ld + i] * w[c][j]
 * (+ bias[j] when bias is not NULL) for 2 * lanes positions i and gemm_nr
 * filters j, or into an R array as direct says (not NULL: out unused);
 * prefetches pf (or nothing when NULL) on the way. */
typedef void (*conv_gemm_fn_f32)(int64_t c, const float* panel, int64_t ld, const float* w,
                                 const float* bias, float* out, int64_t ldo,
                                 const struct gemm_prefetch* pf,
                                 const struct direct_out* direct);
typedef void (*conv_gemm_fn_f64)(int64_t c, const double* panel, int64_t ld, const double* w,
                                 const double* bias, double* out, int64_t ldo,
                                 const struct gemm_prefetch* pf,
                                 const struct direct_out* direct);
/* Winograd F(2x2x2, 3x3x3) micro-kernels (kernel_winograd.h): a tile's input
 * transform (returning whether the sum of its 8 corner points, which every
 * input reaches, is not finite: sum_not_finite_*), one transform point's
 * products for wt_max tiles x two vectors of filters, and a tile's output
 * transform. */
typedef int (*conv_wino_in_fn_f32)(const float* x, int64_t s0, int64_t s1, int64_t s2,
                                   int64_t c, float* v, int64_t ldp);
typedef int (*conv_wino_in_fn_f64)(const double* x, int64_t s0, int64_t s1, int64_t s2,
                                   int64_t c, double* v, int64_t ldp);
typedef void (*conv_wino_gemm_fn_f32)(int64_t nseg, int64_t c, const float* const* rows,
                                      int64_t off, const float* u, float* m, int64_t ldm);
typedef void (*conv_wino_gemm_fn_f64)(int64_t nseg, int64_t c, const double* const* rows,
                                      int64_t off, const double* u, double* m, int64_t ldm);
typedef void (*conv_wino_out_fn_f32)(const float* m, int64_t ldp, int64_t f, const float* bias,
                                     float* y, int64_t sz, int64_t sy, int64_t sx);
typedef void (*conv_wino_out_fn_f64)(const double* m, int64_t ldp, int64_t f,
                                     const double* bias, double* y, int64_t sz, int64_t sy,
                                     int64_t sx);
/* Kernel-gradient block: out[j][i] (grad_nr rows j, 2 * lanes or lanes filters i, double)
 * += the sum, in the layer's type, over rows r < rows and positions q < m of
 * x[xrow[r] + q * xs + j] * dz[dzrow[r] + q * ldz + i]: grad_nr consecutive
 * channels at one tap, read in place from the padded input, times the output
 * gradient of 2 vectors (or 1) of filters. */
typedef void (*conv_grad_fn_f32)(int64_t rows, int64_t m, const float* x, const int64_t* xrow,
                                 int64_t xs, const float* dz, const int64_t* dzrow, int64_t ldz,
                                 double* out);
typedef void (*conv_grad_fn_f64)(int64_t rows, int64_t m, const double* x, const int64_t* xrow,
                                 int64_t xs, const double* dz, const int64_t* dzrow, int64_t ldz,
                                 double* out);
/* Kernel-gradient dot block of patch layers: out[j * dot_nv * lanes + i]
 * (double; dot_nk rows j x dot_nv vectors of columns i) += the sum over
 * positions q < m of a[j * lda + q] * bt[q * ldb + i], summed in the layer's
 * type and vectors along i; prefetches pf (or nothing when NULL) on the way. */
typedef void (*conv_dot_fn_f32)(int64_t m, const float* a, int64_t lda, const float* bt,
                                int64_t ldb, double* out, const struct gemm_prefetch* pf);
typedef void (*conv_dot_fn_f64)(int64_t m, const double* a, int64_t lda, const double* bt,
                                int64_t ldb, double* out, const struct gemm_prefetch* pf);
/* Depthwise kernel-gradient block: out[t][l] = sum over rows r < rows and
 * positions q < m of x[xrow[r] + q * xs + off[t] + l] * dz[r * dz_row + q * ldz + l]
 * for dwg_nt taps t and one vector of channels l. */
typedef void (*conv_dwgrad_fn_f32)(int64_t rows, int64_t m, const float* x, const int64_t* xrow,
                                   int64_t xs, const int64_t* off, const float* dz,
                                   int64_t dz_row, int64_t ldz, float* out);
typedef void (*conv_dwgrad_fn_f64)(int64_t rows, int64_t m, const double* x, const int64_t* xrow,
                                   int64_t xs, const int64_t* off, const double* dz,
                                   int64_t dz_row, int64_t ldz, double* out);
/* Planar tile (conv_geometry.planar): ys[j][f * ldy + l] (or, direct not
 * NULL, the R array as struct direct_out says) = bias[f] (0 when
 * bias is NULL or f >= nf) + the sum over the taps (a, b) in [taps[0], taps[1])
 * x [taps[2], taps[3]), every e along the row and the cg channels c of a group
 * of x[plane[a] + b * dh * row + offs[j] + eoff[e * cg + c] + l] times the
 * weight of filter f: nj (1 .. planar_nj) vectors of voxels along rows of
 * planar padded input planes ([p1][c][p2], row = c * pw elements; p2 split
 * into the phases of the stride along the rows, conv_planar_tap_offsets) x
 * planar_fb filters, w [tap][c][planar_fb]. */
typedef void (*conv_planar_fn_f32)(const struct conv_geometry* g, int nj, const float* x,
                                   const int64_t* plane, const int64_t* offs,
                                   const int64_t* eoff, const int64_t* taps, const float* w,
                                   const float* bias, int64_t nf, float* const* ys, int64_t ldy,
                                   const struct direct_out* direct);
typedef void (*conv_planar_fn_f64)(const struct conv_geometry* g, int nj, const double* x,
                                   const int64_t* plane, const int64_t* offs,
                                   const int64_t* eoff, const int64_t* taps, const double* w,
                                   const double* bias, int64_t nf, double* const* ys, int64_t ldy,
                                   const struct direct_out* direct);
/* The planar path's Winograd rows (conv_planar_winograd.c): a block's
 * products m[point t][filter f][l] (per_point elements per point, ldm per
 * filter; l over nb bundles of sl elements) -> rows y[f * ldy + (M b + i) *
 * sl + l] = bias[f] (0 when NULL) + the sum over t of at[i * T + t] (row i
 * < M of bundle b; rows from nrows on not written) times the products, for
 * f < nf; sl a multiple of the tier's lanes. Or, when r is not NULL, the
 * rows straight into an R array (struct bundle_out). */
struct bundle_out {
  double* o;             /* row 0 of filter 0 */
  int64_t ld_row, ld_f;  /* R strides of a row and a filter */
  int relu, stream;      /* as struct direct_out's */
};
typedef void (*conv_planar_bundles_fn_f32)(int64_t M, int64_t T, const float* at, const float* m,
                                           int64_t per_point, int64_t ldm, int64_t nf,
                                           const float* bias, int64_t nb, int64_t nrows,
                                           int64_t sl, float* y, int64_t ldy,
                                           const struct bundle_out* r);
typedef void (*conv_planar_bundles_fn_f64)(int64_t M, int64_t T, const double* at,
                                           const double* m, int64_t per_point, int64_t ldm,
                                           int64_t nf, const double* bias, int64_t nb,
                                           int64_t nrows, int64_t sl, double* y, int64_t ldy,
                                           const struct bundle_out* r);
/* out[l] = the sum over i < k of b[i] * rows[i][l], l < len (k = 0: zeros):
 * a row of a transformed input plane of the Winograd rows. Returns whether
 * the out[l] do not add up to a finite sum (sum_not_finite_*). */
typedef int (*conv_planar_combine_fn_f32)(int64_t k, const float* b, const float* const* rows,
                                          int64_t len, float* out);
typedef int (*conv_planar_combine_fn_f64)(int64_t k, const double* b,
                                          const double* const* rows, int64_t len, double* out);
/* Geometry of the planar depthwise path (conv_depthwise.c): one channel's
 * output rows along R's depth axis (unit stride) as vectors; its input a
 * padded slab of planes along W, [plane][row][p0] in the layer's type. */
struct conv_dw_geometry {
  int64_t out[3];      /* output extents along depth, height, width */
  int64_t kernel[3], dilation[3];
  int64_t s1;          /* stride along height (depth's is 1; width's is the driver's) */
  int64_t nv;          /* vectors per output row */
  int64_t p0, p1;      /* slab row length (nv vectors and the depth taps' reach), rows */
};
typedef void (*conv_dw_plane_fn_f32)(const struct conv_dw_geometry* g, const float* x,
                                     const float* w, float bias, float* y);
typedef void (*conv_dw_plane_fn_f64)(const struct conv_dw_geometry* g, const double* x,
                                     const double* w, double bias, double* y);
typedef void (*conv_dw_fill_fn_f32)(const struct conv_dw_geometry* g, const double* in,
                                    int64_t step, int64_t in0, int64_t in1, int64_t lo0,
                                    int64_t lo1, float* out);
typedef void (*conv_dw_fill_fn_f64)(const struct conv_dw_geometry* g, const double* in,
                                    int64_t step, int64_t in0, int64_t in1, int64_t lo0,
                                    int64_t lo1, double* out);
typedef void (*conv_dw_grad_fn_f32)(const struct conv_dw_geometry* g, const float* x,
                                    const float* dz, const int64_t* off, int64_t taps,
                                    double* acc);
typedef void (*conv_dw_grad_fn_f64)(const struct conv_dw_geometry* g, const double* x,
                                    const double* dz, const int64_t* off, int64_t taps,
                                    double* acc);
/* output positions per patch-GEMM panel, in vector pairs of the tier: small
 * enough that the two panels of a forward thread (the one multiplied and the
 * next, being filled) stay in L2 with the rows prefetched for it */
#define GEMM_SUBBLOCKS 8
/* Output positions per block of the forward patch GEMM, for a tier of
 * `lanes` lanes: the driver and the size of its scratch both take it from
 * here. */
static inline int64_t conv_patch_block(int64_t lanes) { return 2 * lanes * GEMM_SUBBLOCKS; }
/* filters of a patch layer rounded up to whole GEMM blocks (gemm_nr) */
static inline int64_t conv_patch_fpad(const struct conv_geometry* g) {
  return (g->f + g->gemm_nr - 1) / g->gemm_nr * g->gemm_nr;
}
/* share of the taps along the rows that must read padding for a span of the
 * rows path to take the rows' end columns apart (conv_rows_apart) */
#define SPAN_EDGE_SAVING 0.03
/* patch rows read ahead of the one being read (patch_rows_template.h) */
#define PATCH_PREFETCH_ROWS 16
/* GEMM blocks by which the patch GEMM prefetches the rows it fills, and the
 * most runs of R memory one of them prefetches */
#define PATCH_PREFETCH_CALLS 4
#define PATCH_PREFETCH_RUNS 256
/* the most runs of R memory a thread of a patch kernel gradient lists for its
 * next block */
#define PATCH_GRAD_PREFETCH_RUNS 2048

/* One instruction-set tier: its vector widths, widest tile and kernels. */
struct kernel_table {
  int lanes_f32, lanes_f64, wt_max, gemm_nr, grad_nr, dot_nk, dot_nv, dwg_nt;
  int planar_fb, planar_nj; /* filters and vectors of the widest planar tile */
  conv_span_fn_f32 span_f32;
  conv_span_fn_f64 span_f64;
  conv_planar_fn_f32 planar_f32;
  conv_planar_fn_f64 planar_f64;
  conv_planar_bundles_fn_f32 planar_bundles_f32; /* the Winograd rows' output rows */
  conv_planar_bundles_fn_f64 planar_bundles_f64;
  conv_planar_combine_fn_f32 planar_combine_f32; /* and their transformed input rows */
  conv_planar_combine_fn_f64 planar_combine_f64;
  conv_dw_plane_fn_f32 dw_plane_f32; /* one output plane of the planar depthwise path */
  conv_dw_plane_fn_f64 dw_plane_f64;
  conv_dw_fill_fn_f32 dw_fill_f32; /* one padded input plane of its slab */
  conv_dw_fill_fn_f64 dw_fill_f64;
  conv_dw_grad_fn_f32 dw_grad_f32; /* one output plane's share of a kernel gradient */
  conv_dw_grad_fn_f64 dw_grad_f64;
  conv_gemm_fn_f32 gemm_f32;
  conv_gemm_fn_f64 gemm_f64;
  conv_grad_fn_f32 grad_f32;  /* 2 vectors of filters */
  conv_grad_fn_f64 grad_f64;
  conv_grad_fn_f32 grad1_f32; /* 1 vector of filters */
  conv_grad_fn_f64 grad1_f64;
  conv_dot_fn_f32 dot_f32;
  conv_dot_fn_f64 dot_f64;
  conv_dwgrad_fn_f32 dwgrad_f32;
  conv_dwgrad_fn_f64 dwgrad_f64;
  conv_wino_in_fn_f32 wino_in_f32;
  conv_wino_in_fn_f64 wino_in_f64;
  conv_wino_gemm_fn_f32 wino_gemm_f32;
  conv_wino_gemm_fn_f64 wino_gemm_f64;
  conv_wino_out_fn_f32 wino_out_f32;
  conv_wino_out_fn_f64 wino_out_f64;
  void (*doubles_to_floats)(const double* in, float* out, int64_t n);
  void (*floats_to_doubles)(const float* in, double* out, int64_t n);
  /* R columns -> channel-fastest rows (kernel_convert.h); stream: rows that
   * are whole aligned vectors go past the caches, where the tier can
   * (load_columns_*) */
  void (*columns_to_rows_f32)(const double* in, int64_t ldc, const int64_t* src, int64_t m,
                              int64_t n, float* out, int64_t ldr, int stream);
  void (*columns_to_rows_f64)(const double* in, int64_t ldc, const int64_t* src, int64_t m,
                              int64_t n, double* out, int64_t ldr, int stream);
  /* channel-fastest rows -> R columns (kernel_convert.h); stream: past the
   * caches (conv_write_row_*) */
  void (*rows_to_columns_f32)(const float* in, int64_t ldr, int64_t m, int64_t n, double* out,
                              int64_t ldc, int stream);
  void (*rows_to_columns_f64)(const double* in, int64_t ldr, int64_t m, int64_t n, double* out,
                              int64_t ldc, int stream);
  /* every step-th double of a run (kernel_convert.h) */
  void (*strided_to_floats)(const double* in, int64_t step, float* out, int64_t n);
  void (*strided_to_doubles)(const double* in, int64_t step, double* out, int64_t n);
  /* runs into outputs streamed past the caches, and the fence that ends a
   * thread's streamed runs (kernel_convert.h): once per thread, after its
   * last item of a parallel loop (before the barrier), not after each item,
   * which made it wait for its stores to drain before computing the next */
  void (*floats_to_doubles_stream)(const float* in, double* out, int64_t n);
  void (*doubles_stream)(const double* in, double* out, int64_t n);
  void (*stream_fence)(void);
  /* rows x cols (ldi apart) transposed: out[j * ldo + i] = in[i * ldi + j]
   * (with ldo = rows: the rows woven into one run); stream: past the caches,
   * where the tier can (kernel_convert.h) */
  void (*transpose_f32)(const float* in, int64_t ldi, int64_t rows, int64_t cols, float* out,
                        int64_t ldo, int stream);
  void (*transpose_f64)(const double* in, int64_t ldi, int64_t rows, int64_t cols, double* out,
                        int64_t ldo, int stream);
  /* the windowed pooling's row reduction over whole vectors of a contiguous
   * run (kernel_pool.h); returns the elements done */
  int64_t (*pool_rows)(const double* x, const int64_t* off, int64_t taps, int64_t E,
                       int round32, int average, double* rv, char* row_nan, int64_t* ri);
};
extern const struct kernel_table kernels_generic;
extern const struct kernel_table kernels_avx2;
extern const struct kernel_table kernels_avx512;
const struct kernel_table* cpu_kernels(void);
/* Bytes of one element of the layer's type, and the active tier's vector lanes
 * for it. */
static inline size_t conv_real_size(const struct conv_spec* s) {
  return s->dtype == DTYPE_FLOAT32 ? sizeof(float) : sizeof(double);
}
static inline int64_t conv_lanes(const struct conv_spec* s) {
  const struct kernel_table* k = cpu_kernels();
  return s->dtype == DTYPE_FLOAT32 ? k->lanes_f32 : k->lanes_f64;
}

/* Runs of R doubles into a layer's type and back, vectorised by the tier;
 * short runs convert inline, where the call through the tier's table would
 * cost more than the conversion. */
#define SHORT_RUN 16
static inline void load_doubles_f32(const double* in, float* out, int64_t n) {
  if (n <= SHORT_RUN) {
    for (int64_t i = 0; i < n; ++i) out[i] = (float)in[i];
    return;
  }
  cpu_kernels()->doubles_to_floats(in, out, n);
}
static inline void store_doubles_f32(const float* in, double* out, int64_t n) {
  if (n <= SHORT_RUN) {
    for (int64_t i = 0; i < n; ++i) out[i] = (double)in[i];
    return;
  }
  cpu_kernels()->floats_to_doubles(in, out, n);
}
static inline void load_doubles_f64(const double* in, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i];
}
static inline void store_doubles_f64(const double* in, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i];
}

/* in[i] into out[i * step] for i < n, as one run when step is 1. */
static inline void store_strided_f32(const float* in, double* out, int64_t n, int64_t step) {
  if (step == 1) {
    store_doubles_f32(in, out, n);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i * step] = (double)in[i];
}
static inline void store_strided_f64(const double* in, double* out, int64_t n, int64_t step) {
  for (int64_t i = 0; i < n; ++i) out[i * step] = in[i];
}

/* Runs of a result: as store_doubles_*, or past the caches when stream is
 * set (conv_stream_doubles); a thread that streamed runs calls
 * cpu_kernels()->stream_fence() before others read them. */
static inline void store_run_f32(int stream, const float* in, double* out, int64_t n) {
  if (stream && n > SHORT_RUN) {
    cpu_kernels()->floats_to_doubles_stream(in, out, n);
  } else {
    store_doubles_f32(in, out, n);
  }
}
static inline void store_run_f64(int stream, const double* in, double* out, int64_t n) {
  if (stream && n > SHORT_RUN) {
    cpu_kernels()->doubles_stream(in, out, n);
  } else {
    store_doubles_f64(in, out, n);
  }
}

/* k rows of n elements, ld apart, woven into one run of a result: out[q * k
 * + a] = in[a * ld + q] (the samples of a depthwise slab, the depth taps of a
 * patch input gradient): the tier's transposer weaves WEAVE_BUFFER elements
 * at a time (ldo = k), which store_run_* writes; a run of more than
 * WEAVE_BUFFER rows goes a position at a time, in pieces. */
#define WEAVE_BUFFER 1024
#define CONV3D_WEAVE_RUN(real_t, SUFFIX)                                                       \
  static inline void CONCAT(weave_run_, SUFFIX)(int stream, const real_t* in, int64_t ld,     \
                                                int64_t k, int64_t n, double* out) {          \
    if (k == 1) {                                                                             \
      CONCAT(store_run_, SUFFIX)(stream, in, out, n);                                         \
      return;                                                                                 \
    }                                                                                         \
    real_t buf[WEAVE_BUFFER];                                                                 \
    const struct kernel_table* kt = cpu_kernels();                                            \
    if (k > WEAVE_BUFFER) {                                                                   \
      for (int64_t q = 0; q < n; ++q)                                                         \
        for (int64_t a = 0; a < k; a += WEAVE_BUFFER) {                                       \
          const int64_t ka = k - a < WEAVE_BUFFER ? k - a : WEAVE_BUFFER;                     \
          kt->CONCAT(transpose_, SUFFIX)(in + a * ld + q, ld, ka, 1, buf, ka, 0);             \
          CONCAT(store_run_, SUFFIX)(stream, buf, out + q * k + a, ka);                       \
        }                                                                                     \
      return;                                                                                 \
    }                                                                                         \
    for (int64_t q = 0; q < n; q += WEAVE_BUFFER / k) {                                       \
      const int64_t nq = n - q < WEAVE_BUFFER / k ? n - q : WEAVE_BUFFER / k;                 \
      kt->CONCAT(transpose_, SUFFIX)(in + q, ld, k, nq, buf, k, 0);                           \
      CONCAT(store_run_, SUFFIX)(stream, buf, out + q * k, nq * k);                           \
    }                                                                                         \
  }
CONV3D_WEAVE_RUN(float, f32)
CONV3D_WEAVE_RUN(double, f64)
#undef CONV3D_WEAVE_RUN

/* A run copied in the layer's type, past the caches when stream is set (a
 * large packed copy read only later), then copy_runs_fence() before others
 * read it. Inline, in SSE2's 16-byte stores (every x86-64 CPU has them): the
 * runs are short, and a call through the tier's table for each cost the
 * weight packing a third of its time. */
static inline void copy_run_f32(int stream, const float* in, float* out, int64_t n) {
#ifdef __SSE2__
  if (stream && (uintptr_t)out % 16 == 0) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) _mm_stream_ps(out + i, _mm_loadu_ps(in + i));
    for (; i < n; ++i) out[i] = in[i];
    return;
  }
#endif
  (void)stream;
  memcpy(out, in, sizeof(float) * (size_t)n);
}
static inline void copy_run_f64(int stream, const double* in, double* out, int64_t n) {
#ifdef __SSE2__
  if (stream && (uintptr_t)out % 16 == 0) {
    int64_t i = 0;
    for (; i + 2 <= n; i += 2) _mm_stream_pd(out + i, _mm_loadu_pd(in + i));
    for (; i < n; ++i) out[i] = in[i];
    return;
  }
#endif
  (void)stream;
  memcpy(out, in, sizeof(double) * (size_t)n);
}
static inline void copy_runs_fence(void) {
#ifdef __SSE2__
  _mm_sfence();
#endif
}

/* R columns (ldc apart, runs of m voxels) into rows of channels (ldr apart),
 * vectorised by the tier; src as in columns_to_rows_*. stream: a copy the
 * kernels read only later (a large padded input), whose rows go past the
 * caches where the tier can; the thread then calls
 * cpu_kernels()->stream_fence() before others read them. */
static inline void load_columns_f32(const double* in, int64_t ldc, const int64_t* src, int64_t m,
                                    int64_t n, float* out, int64_t ldr, int stream) {
  if (n == 1 && ldr == 1) { /* one channel: a run into a run */
    load_doubles_f32(in + (src ? src[0] * ldc : 0), out, m);
    return;
  }
  cpu_kernels()->columns_to_rows_f32(in, ldc, src, m, n, out, ldr, stream);
}
static inline void load_columns_f64(const double* in, int64_t ldc, const int64_t* src, int64_t m,
                                    int64_t n, double* out, int64_t ldr, int stream) {
  if (n == 1 && ldr == 1) {
    load_doubles_f64(in + (src ? src[0] * ldc : 0), out, m);
    return;
  }
  cpu_kernels()->columns_to_rows_f64(in, ldc, src, m, n, out, ldr, stream);
}

/* in[0], in[step], ... (n of them) into a layer's type, vectorised by the
 * tier; as one run when step is 1 (the mirror of store_strided_*). */
static inline void load_strided_f32(const double* in, int64_t step, float* out, int64_t n) {
  if (step == 1) {
    load_doubles_f32(in, out, n);
    return;
  }
  cpu_kernels()->strided_to_floats(in, step, out, n);
}
static inline void load_strided_f64(const double* in, int64_t step, double* out, int64_t n) {
  if (step == 1) {
    load_doubles_f64(in, out, n);
    return;
  }
  cpu_kernels()->strided_to_doubles(in, step, out, n);
}

/* The taps [r[0], r[1]) of a kernel axis (k taps, dilation d) that reach real
 * input, [0, len), from some output whose first tap sits at start in
 * [first, last] (real-input coordinates); the rest read only zero padding, so
 * skipping them leaves every sum unchanged. */
static inline void tap_range(int64_t k, int64_t d, int64_t first, int64_t len, int64_t last,
                             int64_t* r) {
  int64_t lo = 0, hi = k;
  while (lo < k && last + lo * d < 0) ++lo;            /* before the data for every output */
  while (hi > lo && first + (hi - 1) * d >= len) --hi; /* after it for every output */
  r[0] = lo;
  r[1] = hi;
}

/* layout.c */
void pack_input_f32(const struct conv_spec* s, const struct conv_spec* ks, const int64_t* src,
                    const double* x, float* xp, int nthreads);
void pack_input_f64(const struct conv_spec* s, const struct conv_spec* ks, const int64_t* src,
                    const double* x, double* xp, int nthreads);
/* Plane p0 of sample n of the R array -> [p1][c][p2] of the kernel spec's axes,
 * zero padding included (conv_geometry.planar); main thread or worker. */
void pack_plane_planar_f32(const struct conv_spec* s, const struct conv_spec* ks,
                           const double* x, int64_t n, int64_t p0, float* out);
void pack_plane_planar_f64(const struct conv_spec* s, const struct conv_spec* ks,
                           const double* x, int64_t n, int64_t p0, double* out);
/* Where pack_weights_* reads the weight of tap t (in the kernel spec's order),
 * channel c and filter f of group g: w[tap[t] + c * cs + f * fs + g * gs];
 * each (channel, filter) pair's taps are one run of `run` doubles (tap[t] <
 * run). */
struct weight_source {
  const double* w;
  const int64_t* tap;
  int64_t cs, fs, gs, run;
};
/* R's index (d + KD * (h + KH * w)) of each tap in the kernel spec's order. */
void conv_kernel_taps(const struct conv_spec* s, const struct conv_geometry* g, int64_t* tap);
/* The layer's own kernel, R's (kd, kh, kw, C/G, F); tap holds taps elements. */
void weight_source_layer(const struct conv_spec* s, const struct conv_geometry* g,
                         const double* w, int64_t* tap, struct weight_source* src);
void pack_weights_f32(const struct conv_spec* s, const struct conv_geometry* g,
                      const struct weight_source* src, float* wp, int nthreads);
void pack_weights_f64(const struct conv_spec* s, const struct conv_geometry* g,
                      const struct weight_source* src, double* wp, int nthreads);
void pack_weights_transposed_f32(int64_t taps, int64_t C, int64_t F, int64_t FB, const float* fw,
                                 const int64_t* ptap, float* wp, int nthreads);
void pack_weights_transposed_f64(int64_t taps, int64_t C, int64_t F, int64_t FB, const double* fw,
                                 const int64_t* ptap, double* wp, int nthreads);

/* activations.c: pure C, applied in place. softmax_rows handles the last-axis softmax. */
void activation_apply_f32(int act, float* v, int64_t n);
void activation_apply_f64(int act, double* v, int64_t n);
void softmax_f32(float* v, int64_t n, int64_t stride);
void softmax_f64(double* v, int64_t n, int64_t stride);
void activation_block_f32(int act, int softmax_here, float* v, int64_t n, int64_t F,
                          int64_t vs, int64_t fs);
void activation_block_f64(int act, int softmax_here, double* v, int64_t n, int64_t F,
                          int64_t vs, int64_t fs);

/* conv_forward.c: the driver. It runs on the kernel spec ks: the layer's spec
 * with spatial axes reordered (w, h, d) so that rows run along depth.
 * check_interrupt() is called on the main thread between chunks, outside any
 * parallel region; it may longjmp (R's interrupt), so callers hold no memory that
 * would leak. scratch holds nthreads rows of out[2] * filters elements. */
typedef void (*interrupt_fn)(void);
/* the spec the kernels take for a layer spec: its batch folded into depth
 * when that reads R's arrays in longer runs (conv_forward.c), while a
 * folded plane of depth x height x channels (or filters) takes at most
 * BATCH_FOLD_MAX_PLANE_BYTES: the paths' per-thread scratch grows with it
 * (a batch of 2 volumes of 48^3 with 16 channels: 0.3 MB in float32) */
#define BATCH_FOLD_MAX_PLANE_BYTES ((double)(2 << 20))
void conv_fold_batch(const struct conv_spec* s, struct conv_spec* f);
void conv_kernel_spec(const struct conv_spec* s, struct conv_spec* ks);
void conv_kernel_spec_like(const struct conv_spec* s, const struct conv_spec* like,
                           struct conv_spec* ks);
void conv_r_strides(const struct conv_spec* s, int output, int64_t st[5]);
int64_t conv_span_length(const struct conv_spec* ks);
/* Whether the rows path's spans hold as many rows as the widest tile has
 * voxels and run the rows' end columns as tiles of their own, which skip the
 * row taps that read padding: rows and planes at least that long, and at
 * least SPAN_EDGE_SAVING of the row taps reading padding. ends: the end
 * columns whose row taps reach padding (conv_geometry.row_ends). */
int conv_rows_apart(const struct conv_spec* ks, int64_t ends[2]);
/* Work items of voxels_per_item output voxels per chunk between interrupt
 * checks: about 1 GFLOP, at least min_items. */
int64_t conv_chunk_items(const struct conv_spec* s, int64_t voxels_per_item, int64_t min_items);
/* Whether an array of `bytes` that is written once and read only later is
 * written past the caches: at least CONV3D_STREAM_BYTES, four times a core's
 * L2 on the project's machine. Such an array is not in cache, so plain
 * stores would first read each line in; measured, streaming was faster from
 * 4 MB up (pointwise, vnet_down) and no slower for a next layer reading the
 * output. conv_stream_doubles: a result of n R doubles (store_run_*);
 * conv_stream_output: the layer's output. */
#define CONV3D_STREAM_BYTES ((int64_t)4 << 20)
int conv_stream_bytes(double bytes);
static inline int conv_stream_doubles(double n) {
  return conv_stream_bytes((double)sizeof(double) * n);
}
int conv_stream_output(const struct conv_spec* s);
/* Whether the rows driver streams an output of n_out doubles: when its rows
 * are runs of the R array (row_stride 1: channels_last, one sample), each
 * filter's piece of a row is one run (mednet_stem forward 8.8-10.4 -> 8.2-9.4 ms). */
int conv_rows_stream(double n_out, int64_t row_stride);
int64_t conv_scratch_row(const struct conv_spec* s, const struct conv_spec* ks);
void conv3d_forward_f32(const struct conv_spec* s, const struct conv_spec* ks,
                        const struct conv_geometry* geo, const float* xp, const float* wp,
                        const float* bias, int activation, double* out,
                        const int64_t* out_strides, float* scratch, int nthreads,
                        interrupt_fn check_interrupt);
void conv3d_forward_f64(const struct conv_spec* s, const struct conv_spec* ks,
                        const struct conv_geometry* geo, const double* xp, const double* wp,
                        const double* bias, int activation, double* out,
                        const int64_t* out_strides, double* scratch, int nthreads,
                        interrupt_fn check_interrupt);
void conv3d_patch_gemm_f32(const struct conv_spec* s, const struct conv_geometry* g,
                           const int64_t* koff, const double* x, const float* wp,
                           const float* bias, int activation, double* out, float* scratch,
                           int nthreads, interrupt_fn check_interrupt);
void conv3d_patch_gemm_f64(const struct conv_spec* s, const struct conv_geometry* g,
                           const int64_t* koff, const double* x, const double* wp,
                           const double* bias, int activation, double* out, double* scratch,
                           int nthreads, interrupt_fn check_interrupt);
void conv_patch_offsets(const struct conv_spec* s, int64_t* koff);
void conv_patch_bases(const struct conv_spec* s, int64_t p0, int64_t m, int64_t* base);
int64_t conv_patch_runs(const struct conv_spec* s, int64_t* step);
int64_t conv_patch_prefetch_lines(int64_t run, int64_t step, int64_t m);
int64_t conv_patch_run_starts(const int64_t* base, int64_t run, int64_t p0, int64_t m,
                              int64_t* starts);
int64_t conv_patch_prefetch_runs(const double* x, const int64_t* koff, const int64_t* starts,
                                 int64_t n, int64_t k0, int64_t k1, const void** runs,
                                 int64_t cap);
/* Positions from p to the end of its run (run positions each, from position
 * 0: conv_patch_runs), at most left. */
static inline int64_t conv_run_left(int64_t run, int64_t p, int64_t left) {
  const int64_t n = run - p % run;
  return n < left ? n : left;
}
int conv_patch_direct(const struct conv_spec* s, const struct conv_geometry* g, int activation,
                      const double* out);
int conv_patch_pointwise(const struct conv_spec* s);
int64_t conv_patch_chunk(int64_t mb, int64_t k, int64_t f, int nthreads);
void conv_pair_perm(const struct conv_geometry* g, int64_t* src);
/* Keras's softmax along the last axis (W) of a channels_first output, in place
 * on the R array; scratch holds nthreads lines of scratch_row >= out[2]. */
void conv_softmax_last_axis_f32(const struct conv_spec* s, double* out, float* scratch,
                                int64_t scratch_row, int nthreads);
void conv_softmax_last_axis_f64(const struct conv_spec* s, double* out, double* scratch,
                                int64_t scratch_row, int nthreads);

/* A row of a forward output into the R array (conv_forward_template.h). */
void conv_write_row_f32(const float* yq, int64_t ldy, int64_t m, int64_t F, double* o, int64_t s2,
                        int64_t sf, int stream);
void conv_write_row_f64(const double* yq, int64_t ldy, int64_t m, int64_t F, double* o,
                        int64_t s2, int64_t sf, int stream);

/* conv_winograd.c: the Winograd F(2x2x2, 3x3x3) path of the forward pass (and
 * of unit-stride input gradients). A layer takes it when
 * conv_winograd_eligible; it runs on conv_winograd_spec of the kernel spec
 * (the padded copy widened so that every tile's inputs lie inside), with
 * weights packed by winograd_pack_weights_* (conv_winograd_fpad filters) and
 * conv_winograd_scratch elements of scratch per thread. */
#define WINO_MIN_CHANNELS 16
#define WINO_MAX_WEIGHT_BYTES ((double)(16 << 20))
#define WINO_MAX_SCRATCH_BYTES ((double)(16 << 20))
static inline int64_t conv_winograd_fpad(const struct conv_geometry* g) {
  const int64_t fb = 2 * (int64_t)g->lanes;
  return (g->f + fb - 1) / fb * fb;
}
/* Elements between the transforms of two tiles of n values per point: one
 * cache line more than the 64 points, so that the register tile's rows,
 * read together, do not all fall in one set of the L1 cache. */
static inline int64_t conv_winograd_tile_stride(int64_t n, size_t elt) {
  return 64 * n + (int64_t)(64 / elt);
}
/* A kernel of K taps along an axis (odd, 3 to WINO_MAX_KERNEL) is the sum of
 * (K - 1) / 2 kernels of 3 taps at offsets 0, 2, 4, ...: sub-kernel a takes
 * taps 2a .. 2a + 2 but the first, which sub-kernel a - 1 took (zero there).
 * Each is a 3x3x3 Winograd convolution on the tile a tiles further; their
 * products sum in the transform domain, one GEMM over (sub-kernel, channel). */
#define WINO_MAX_KERNEL 7
#define WINO_MAX_SUBKERNELS 27 /* ((WINO_MAX_KERNEL - 1) / 2)^3 */
#define WINO_RING_PLANES 4
static inline int64_t conv_winograd_axis_subkernels(int64_t taps) { return (taps - 1) / 2; }
static inline int64_t conv_winograd_subkernels(int64_t kd, int64_t kh, int64_t kw) {
  return conv_winograd_axis_subkernels(kd) * conv_winograd_axis_subkernels(kh) *
         conv_winograd_axis_subkernels(kw);
}
/* the outputs of a staged row of Winograd tiles: past the axis's end by up to
 * its dilation */
static inline int64_t conv_winograd_row_length(const struct conv_spec* ws) {
  return ws->out[2] + ws->dilation[2];
}
int conv_winograd_eligible(const struct conv_spec* s, const struct conv_geometry* g);
void conv_winograd_spec(const struct conv_spec* ks, struct conv_spec* ws);
int64_t conv_winograd_scratch(const struct conv_spec* ws, const struct conv_geometry* g);
void winograd_pack_weights_f32(const struct conv_spec* s, const struct conv_geometry* g,
                               const struct weight_source* src, float* u, int nthreads);
void winograd_pack_weights_f64(const struct conv_spec* s, const struct conv_geometry* g,
                               const struct weight_source* src, double* u, int nthreads);
/* nonfinite[thread] (nthreads flags, zero before) is set when an input
 * transform flags a value that is not finite (wino_in_*): the output is
 * then not IEEE arithmetic's, and conv_call_forward computes it on the rows
 * path. */
void conv3d_winograd_f32(const struct conv_spec* s, const struct conv_spec* ws,
                         const struct conv_geometry* g, const float* xp, const float* u,
                         const float* bias, int activation, double* out, float* scratch,
                         int* nonfinite, int nthreads, interrupt_fn check_interrupt);
void conv3d_winograd_f64(const struct conv_spec* s, const struct conv_spec* ws,
                         const struct conv_geometry* g, const double* xp, const double* u,
                         const double* bias, int activation, double* out, double* scratch,
                         int* nonfinite, int nthreads, interrupt_fn check_interrupt);

/* conv_planar.c: the planar forward path. conv_geometry_planar decides it
 * for a kernel spec's geometry and sets the filter blocks its tiles read;
 * conv_planar_spec gives the axis order it runs on. Each thread keeps the
 * input planes its outputs read in a ring (conv_planar_ring: elements, and
 * int64 bookkeeping, per thread) and its outputs in scratch
 * (conv_planar_scratch elements per thread). */
void conv_geometry_planar(const struct conv_spec* ks, struct conv_geometry* g);
int conv_planar_allow(int allow);
void conv_planar_spec(const struct conv_spec* s, const struct conv_spec* ks,
                      struct conv_spec* planar);
int64_t conv_planar_rows(const struct conv_spec* ks, const struct conv_geometry* g);
int conv_planar_direct(const struct conv_spec* s, const struct conv_spec* ks,
                       const struct conv_geometry* g, int activation);
void conv_planar_tap_offsets(const struct conv_geometry* g, int64_t* eoff);
int64_t conv_planar_scratch(const struct conv_spec* s, const struct conv_spec* ks,
                            const struct conv_geometry* g);
int64_t conv_planar_ring(const struct conv_spec* ks, const struct conv_geometry* g,
                         int64_t* n_index);
/* conv_planar_winograd.c: the planar path's Winograd rows. Each transform
 * point of a bundle of m output rows along axis 1 belongs to one stride
 * phase of the taps along that axis (r taps, m + r - 1 input rows) and has
 * B's row over those rows, G's over those taps and A's column into the
 * bundle's rows. */
#define PLANAR_WINO_MAX_M 4
#define PLANAR_WINO_MAX_ROWS 7
#define PLANAR_WINO_MAX_POINTS 24
struct planar_point {
  int64_t phase, r;
  double bt[PLANAR_WINO_MAX_ROWS], gt[PLANAR_WINO_MAX_ROWS - 1], at[PLANAR_WINO_MAX_M];
};
int conv_planar_winograd_rows(int max_m);
void conv_planar_winograd_geometry(const struct conv_spec* ks, struct conv_geometry* g);
void conv_planar_winograd_transforms(const struct conv_geometry* g, struct planar_point* pt);
void planar_winograd_pack_weights_f32(const struct conv_spec* s, const struct conv_geometry* geo,
                                      const struct weight_source* src, float* wp, int nthreads);
void planar_winograd_pack_weights_f64(const struct conv_spec* s, const struct conv_geometry* geo,
                                      const struct weight_source* src, double* wp, int nthreads);
int planar_winograd_plane_f32(const struct conv_geometry* g, const struct planar_point* pts,
                              int64_t bundles, int64_t rows_read, const float* raw, float* out);
int planar_winograd_plane_f64(const struct conv_geometry* g, const struct planar_point* pts,
                              int64_t bundles, int64_t rows_read, const double* raw,
                              double* out);
/* The Winograd rows (g->planar_points > 0) set nonfinite[thread] (nthreads
 * flags, zero before) when a transformed input value is not finite: the
 * output is then not IEEE arithmetic's (conv_call_forward recomputes it). */
void conv3d_forward_planar_f32(const struct conv_spec* s, const struct conv_spec* ks,
                               const struct conv_geometry* g, const double* x, const float* wp,
                               const float* bias, int activation, double* out, float* ring,
                               int64_t* index, float* scratch, int* nonfinite, int nthreads,
                               interrupt_fn check_interrupt);
void conv3d_forward_planar_f64(const struct conv_spec* s, const struct conv_spec* ks,
                               const struct conv_geometry* g, const double* x,
                               const double* wp, const double* bias, int activation,
                               double* out, double* ring, int64_t* index, double* scratch,
                               int* nonfinite, int nthreads, interrupt_fn check_interrupt);
/* conv_depthwise.c: the planar depthwise forward path. conv_dw_eligible
 * decides it for a layer (s in Keras's axis order) and its activation; each
 * thread holds slabs of conv_dw_slab_planes output planes in
 * conv_dw_scratch elements. */
int conv_dw_eligible(const struct conv_spec* s, const struct conv_geometry* g, int activation);
int conv_dw_grad_eligible(const struct conv_spec* s);
void conv_dw_geometry_init(const struct conv_spec* s, struct conv_dw_geometry* g);
int64_t conv_dw_slab_planes(const struct conv_spec* s, const struct conv_dw_geometry* g,
                            int nthreads);
int64_t conv_dw_scratch(const struct conv_spec* s, const struct conv_dw_geometry* g,
                        int64_t planes);
void conv3d_depthwise_planes_f32(const struct conv_spec* s, const double* x, const double* kernel,
                                 const double* bias, int activation, double* out, float* scratch,
                                 int nthreads, interrupt_fn check_interrupt);
void conv3d_depthwise_planes_f64(const struct conv_spec* s, const double* x, const double* kernel,
                                 const double* bias, int activation, double* out, double* scratch,
                                 int nthreads, interrupt_fn check_interrupt);
/* The kernel gradient of a layer conv_dw_eligible takes (whatever its
 * activation): conv_dw_grad_scratch elements of the layer's type and
 * conv_dw_grad_local doubles per thread, and off, one int64 per tap. */
int64_t conv_dw_grad_scratch(const struct conv_spec* s, const struct conv_dw_geometry* g,
                             int64_t planes);
int64_t conv_dw_grad_local(const struct conv_spec* s);
void conv3d_depthwise_kernel_grad_planes_f32(const struct conv_spec* s, const double* x,
                                             const double* dz, double* dw, int64_t* off,
                                             float* scratch, double* local, int nthreads,
                                             interrupt_fn check_interrupt);
void conv3d_depthwise_kernel_grad_planes_f64(const struct conv_spec* s, const double* x,
                                             const double* dz, double* dw, int64_t* off,
                                             double* scratch, double* local, int nthreads,
                                             interrupt_fn check_interrupt);
int64_t conv_patch_scratch(const struct conv_spec* s, const struct conv_geometry* g);
void conv_geometry_init(const struct conv_spec* s, struct conv_geometry* g);
int64_t conv_packed_weight_length(const struct conv_geometry* g);
/* ffi_conv.c: the planar depthwise forward path on R's kernel, and the general
 * forward path on packed weights (main thread only: they allocate through R
 * and check for interrupts). */
void conv_forward_depthwise(const struct conv_spec* s, const double* x, const double* kernel,
                            const double* bias, int act, double* out, int threads);
double conv_forward_general(const struct conv_spec* s, const struct conv_spec* ks,
                            const struct conv_geometry* geo, const double* x, const void* wp,
                            const void* bias, int act, double* out, int threads,
                            int* nonfinite);

/* pooling.c: max (average = 0) or average pooling on R arrays; between
 * chunks the main thread lets R check for a user interrupt. */
void pool3d_forward(const struct conv_spec* s, int average, const double* x, double* y,
                    double* argmax, void* scratch, int nthreads, interrupt_fn check_interrupt);
int64_t pool_forward_scratch(const struct conv_spec* s);
void pool3d_backward(const struct conv_spec* s, int average, const double* x, const double* dy,
                     const double* argmax, double* dx, int nthreads,
                     interrupt_fn check_interrupt);
/* Global pooling of an R array with N samples, C channels and S voxels each
 * (either data format) to y (n, c), and its gradient for g (n, c). */
void global_pool3d_forward(int64_t N, int64_t C, int64_t S, int channels_last, int average,
                           const double* x, double* y, int nthreads);
void global_pool3d_backward(int64_t N, int64_t C, int64_t S, int channels_last, int average,
                            const double* x, const double* g, double* dx, int nthreads);

/* conv_backward.c: gradients on R arrays, in double precision. */
int relu_family_activation(int act);
void relu_family_backward(int act, const double* v, const double* dy, double* dz, int64_t n,
                          int nthreads);
double activation_derivative(int act, double z);
void conv_activation_backward(int act, const double* z, const double* dy, double* dz, int64_t n,
                              int64_t last_len, int64_t line_stride, int nthreads);
void conv3d_kernel_grad(const struct conv_spec* s, const double* x, const double* dz, double* dw,
                        double* db, int nthreads, interrupt_fn check_interrupt);
void conv3d_stage_output_grad_f32(const struct conv_spec* s, const double* dz, float* dzf,
                                  double* db, int nthreads);
/* The input gradient split by the strides (polyphase): along one axis, the
 * input positions i with (i + pad_lo) % stride == phase receive the output
 * gradient only through the taps last, last - step, ...; so their gradient
 * is a stride-1 correlation of the zero-padded output gradient with those
 * taps, dilated by dil. */
struct grad_phase {
  int64_t first, count;    /* input positions first + stride * j, j < count */
  int64_t taps, last, step; /* its taps: last - u * step, u < taps (taps may be 0) */
  int64_t dil;             /* dilation of the correlation over the output gradient */
  int64_t pad_lo, pad_hi;  /* zero padding of the output gradient it needs; negative:
                              that many of its first (last) positions are not read */
};
void conv_grad_phase(const struct conv_spec* s, int axis, int64_t phase, struct grad_phase* p);
void conv_grad_phase_spec(const struct conv_spec* s, const struct grad_phase* const p[3],
                          struct conv_spec* t);
void conv_grad_phase_source(const struct conv_spec* s, const struct grad_phase* const p[3],
                            const struct conv_geometry* g, const double* w, int64_t* tap,
                            struct weight_source* src);
/* output positions per chunk of the kernel-gradient GEMM (per sub-block of
 * the in-place path, whose chunks hold about GRAD_CHUNK_BYTES of dz) */
#define GRAD_CHUNK 1024
/* positions per parallel transposition of a chunk's dz (gathered path) */
#define GRAD_TRANSPOSE_RUN 256
#define GRAD_CHUNK_BYTES ((int64_t)8 << 20)
int64_t conv_grad_chunk(const struct conv_spec* s);
void conv_kernel_grad_sizes(const struct conv_spec* s, int nthreads, int64_t* n_scratch,
                            int64_t* n_acc);
/* the in-place kernel-gradient path (whole blocks of grad_nr channels per group) */
int conv_kernel_grad_direct(const struct conv_spec* s);
int64_t conv_grad_filter_block(const struct conv_spec* s);
int64_t conv_grad_rows_per_chunk(const struct conv_spec* s, const struct conv_spec* ks);
/* Doubles of one thread's local area on the in-place path: its accumulator
 * (taps x nr channels x vb filters), then the element-to-accumulator map and
 * the runs of a whole task's gradient (vb runs of nr x taps) that dw gets. */
static inline int64_t conv_grad_local(int64_t taps, int64_t nr, int64_t vb) {
  return 2 * taps * nr * vb + taps * nr;
}
void conv_kernel_grad_direct_sizes(const struct conv_spec* s, const struct conv_spec* ks,
                                   int nthreads, int64_t* n_dzt, int64_t* n_rows,
                                   int64_t* n_local);
void conv3d_kernel_grad_direct_f32(const struct conv_spec* s, const struct conv_spec* ks,
                                   const float* xp, const double* dz, const int64_t* tap,
                                   double* dw, float* dzt, int64_t* xrow, double* local,
                                   int nthreads, interrupt_fn check_interrupt);
void conv3d_kernel_grad_direct_f64(const struct conv_spec* s, const struct conv_spec* ks,
                                   const double* xp, const double* dz, const int64_t* tap,
                                   double* dw, double* dzt, int64_t* xrow, double* local,
                                   int nthreads, interrupt_fn check_interrupt);
/* the kernel gradient of a depthwise layer: packed input and output gradient,
 * chunks of about DWG_CHUNK_MACS multiply-adds */
#define DWG_CHUNK_MACS 6.7e7
void conv3d_depthwise_kernel_grad_f32(const struct conv_spec* s, const struct conv_spec* ks,
                                      const float* xp, const float* dzp, const int64_t* tap,
                                      double* dw, int64_t* xrow, double* local, int nthreads,
                                      interrupt_fn check_interrupt);
void conv3d_depthwise_kernel_grad_f64(const struct conv_spec* s, const struct conv_spec* ks,
                                      const double* xp, const double* dzp, const int64_t* tap,
                                      double* dw, int64_t* xrow, double* local, int nthreads,
                                      interrupt_fn check_interrupt);
/* the kernel and input gradients of a patch layer (conv_geometry.patch) in
 * one pass, from per-thread panels of at most DOT_PANEL positions and about
 * PATCH_GRAD_PANEL_BYTES each (256 positions: the panels and the next
 * block's prefetched doubles stay in L2) */
#define DOT_PANEL 256
#define PATCH_GRAD_PANEL_BYTES (1 << 20)
void conv_patch_grad_tiles(const struct conv_spec* s, int64_t* ktiles, int64_t* ftiles);
void conv_patch_grad_part(int64_t tasks, int64_t ftiles, int t, int n, int64_t part[4]);
int64_t conv_patch_backward_panel(const struct conv_spec* s, int nthreads, int want_dw,
                                  int want_dx, int64_t* mb);
int64_t conv_patch_kernel_grad_vacc(const struct conv_spec* s);
int conv_patch_dx_stream(const struct conv_spec* s);
/* conv_patch_dx_writes: how a patch input gradient's GEMM blocks write dx */
enum { PATCH_DX_ROWS = 1, PATCH_DX_WOVEN = 2 };
int conv_patch_dx_writes(const struct conv_spec* s, const double* dx);
void conv3d_patch_backward_f32(const struct conv_spec* s, const int64_t* koff, const double* x,
                               const float* dz, const float* wpt, double* dw, double* dx,
                               float* panels, double* vacc, int nthreads,
                               interrupt_fn check_interrupt);
void conv3d_patch_backward_f64(const struct conv_spec* s, const int64_t* koff, const double* x,
                               const double* dz, const double* wpt, double* dw, double* dx,
                               double* panels, double* vacc, int nthreads,
                               interrupt_fn check_interrupt);
void conv3d_kernel_grad_gemm_f32(const struct conv_spec* s, const double* x, const double* dz,
                                 double* dw, float* scratch, double* acc, int nthreads,
                                 interrupt_fn check_interrupt);
void conv3d_kernel_grad_gemm_f64(const struct conv_spec* s, const double* x, const double* dz,
                                 double* dw, double* scratch, double* acc, int nthreads,
                                 interrupt_fn check_interrupt);

/* initializers.c (uses R's RNG through callbacks set by the entry point). */
struct rng {
  double (*uniform)(void);
  double (*normal)(void);
};
enum init_kind {
  INIT_ZEROS = 0, INIT_ONES, INIT_CONSTANT, INIT_RANDOM_NORMAL, INIT_RANDOM_UNIFORM,
  INIT_TRUNCATED_NORMAL, INIT_VARIANCE_SCALING, INIT_ORTHOGONAL, INIT_COUNT
};
struct init_params {
  double value, mean, stddev, minval, maxval, scale, gain;
  int mode;          /* 0 fan_in, 1 fan_out, 2 fan_avg */
  int distribution;  /* 0 truncated_normal, 1 untruncated_normal, 2 uniform */
};
void fans_for_shape(const int64_t* shape, int rank, double* fan_in, double* fan_out);
int init_fill(enum init_kind kind, const struct init_params* p, const int64_t* shape, int rank,
              double* out, int64_t n, double* scratch, const struct rng* rng);

/* peak.c: the FMA throughput the benchmark divides by. */
double peak_gflops(int nthreads, int f64);

#endif
