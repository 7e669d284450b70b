/* The direct channels-last convolution of one output row (fixed n, od, oh): all
 * output widths and channels, as register tiles (kernel_tile.h) of up to WT_MAX
 * voxels along W x one block of output channels. The input is read in place from
 * the padded copy and the weights stream contiguously per block. Every output
 * element is summed in the same order (taps, then channels) whatever the tile
 * size or thread split, so results are bit-identical across thread counts.
 * Included once per real_t by each instruction-set file, which defines VEC_BYTES
 * and WT_MAX and sets the compilation target. */

#define LANES ((int)(VEC_BYTES / sizeof(real_t)))
#define VEC CONCAT(vec_, SUFFIX)
#define VECU CONCAT(vecu_, SUFFIX)
typedef real_t VEC __attribute__((vector_size(VEC_BYTES)));
typedef real_t VECU __attribute__((vector_size(VEC_BYTES), aligned(sizeof(real_t))));
#define TILE_NAME(s, nv, nt) CONCAT(CONCAT(CONCAT(tile_, s), CONCAT(_, nv)), CONCAT(_, nt))

/* v < 0 ? 0 : v per lane, as activation_block's ReLU does: NaN and -0 kept */
static inline VEC CONCAT(relu_vec_, SUFFIX)(VEC v) {
  const __typeof__(v < v) negative = v < (VEC){0};
  return (VEC)((__typeof__(negative))v & ~negative);
}
/* Whether v's lanes add up to a value that is not finite: a NaN or an
 * infinity among them makes it so (Inf - Inf is NaN), as can finite values
 * too large to add up. The Winograd transforms sum what they produce
 * (wino_in_*, planar_combine_*) and test once: a layer whose input is not
 * finite is then computed without them. */
static inline int CONCAT(sum_not_finite_, SUFFIX)(VEC v) {
  real_t all = 0;
  for (int i = 0; i < LANES; ++i) all += v[i];
  return !(all - all == 0);
}
/* One vector of outputs into an R array (struct direct_out): as doubles
 * (put_vec_*), ReLU'd first when relu is set, streamed when stream is set. */
static inline void CONCAT(direct_put_, SUFFIX)(double* o, VEC v, int relu, int stream) {
  if (relu) v = CONCAT(relu_vec_, SUFFIX)(v);
  CONCAT(put_vec_, SUFFIX)(o, v, stream);
}
/* The pair u, v woven into doubles at o (struct direct_out's pairs). */
static inline void CONCAT(direct_pair_, SUFFIX)(double* o, VEC u, VEC v, int relu, int stream) {
  if (relu) u = CONCAT(relu_vec_, SUFFIX)(u), v = CONCAT(relu_vec_, SUFFIX)(v);
  CONCAT(put_pair_, SUFFIX)(o, u, v, stream);
}

typedef void (*CONCAT(tile_fn_, SUFFIX))(const struct conv_geometry*, const real_t* const*,
                                         const int64_t*, const real_t*, const real_t*,
                                         real_t* const*, int64_t);

#define NV 1
#include "kernel_tiles.h"
#undef NV
#define NV 2
#include "kernel_tiles.h"
#undef NV
#ifdef REAL_IS_FLOAT /* paired groups: float32 only (conv_geometry_init) */
/* the pair (x[c] of group 2k, x[c] of group 2k + 1) repeated across the vector */
typedef double CONCAT(pairvec_, SUFFIX) __attribute__((vector_size(VEC_BYTES)));
static inline VEC pair_broadcast(const real_t* p) {
  double pair; /* the two floats' bits; never computed with, only copied */
  memcpy(&pair, p, sizeof pair);
#if VEC_BYTES == 64
  return (VEC)((CONCAT(pairvec_, SUFFIX)){pair, pair, pair, pair, pair, pair, pair, pair});
#elif VEC_BYTES == 32
  return (VEC)((CONCAT(pairvec_, SUFFIX)){pair, pair, pair, pair});
#else
  return (VEC)((CONCAT(pairvec_, SUFFIX)){pair, pair});
#endif
}
/* Lanes (group 2k filter 0, group 2k + 1 filter 0, group 2k filter 1, ...)
 * reordered to the filters' own order: the even lanes, then the odd ones. */
#if VEC_BYTES == 64
#define PAIR_UNZIP_LANES 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15
#elif VEC_BYTES == 32
#define PAIR_UNZIP_LANES 0, 2, 4, 6, 1, 3, 5, 7
#else
#define PAIR_UNZIP_LANES 0, 2, 1, 3
#endif
#ifdef __clang__
#define PAIR_UNZIP(v) __builtin_shufflevector((v), (v), PAIR_UNZIP_LANES)
#else
typedef int32_t CONCAT(pairidx_, SUFFIX) __attribute__((vector_size(VEC_BYTES)));
#define PAIR_UNZIP(v) __builtin_shuffle((v), (CONCAT(pairidx_, SUFFIX)){PAIR_UNZIP_LANES})
#endif
#define NV 3
#include "kernel_tiles.h"
#undef NV
#undef PAIR_UNZIP
#undef PAIR_UNZIP_LANES
#define TILE_PAIR(nt) TILE_NAME(SUFFIX, 3, nt)
#else
#define TILE_PAIR(nt) TILE_NAME(SUFFIX, 1, nt) /* never asked for: no pairs here */
#endif
/* Reduction tiles (kernel_reduce.h): 1 filter x WT_MAX voxels, 2 or 4 filters x
 * WT_HALF voxels, and single voxels for the ends of spans. */
#define REDUCE_NAME(s, fr, nt) CONCAT(CONCAT(CONCAT(reduce_, s), CONCAT(_, fr)), CONCAT(_, nt))
typedef void (*CONCAT(reduce_fn_, SUFFIX))(const struct conv_geometry*, const real_t* const*,
                                           const int64_t*, const real_t*, real_t*);
#define FR 1
#define NT WT_MAX
#include "kernel_reduce.h"
#undef NT
#define NT 1
#include "kernel_reduce.h"
#undef NT
#undef FR
#define FR 2
#define NT WT_HALF
#include "kernel_reduce.h"
#undef NT
#define NT 1
#include "kernel_reduce.h"
#undef NT
#undef FR
#define FR 4
#define NT WT_HALF
#include "kernel_reduce.h"
#undef NT
#define NT 1
#include "kernel_reduce.h"
#undef NT
#undef FR

#include "kernel_planar.h"

#define TILE_PICK(nv, nt) \
  ((nv) == 1 ? TILE_NAME(SUFFIX, 1, nt) : (nv) == 2 ? TILE_NAME(SUFFIX, 2, nt) : TILE_PAIR(nt))

/* Tile widths available, largest first; the row is covered greedily. */
static const int CONCAT(tile_widths_, SUFFIX)[] = {WT_MAX, 8, 4, 2, 1};

static CONCAT(tile_fn_, SUFFIX) CONCAT(tile_for_, SUFFIX)(int nv, int nt) {
  switch (nt) {
  case WT_MAX: return TILE_PICK(nv, WT_MAX);
#if WT_MAX > 8
  case 8: return TILE_PICK(nv, 8);
#endif
#if WT_MAX > 4
  case 4: return TILE_PICK(nv, 4);
#endif
  case 2: return TILE_PICK(nv, 2);
  default: return TILE_PICK(nv, 1);
  }
}

/* Output voxel p of a span: (i1, i2) = (p / o2, p % o2) of the plane at x. */
#define SPAN_X(x, g, o2, p) \
  ((x) + (((p) / (o2)) * (g)->sh * (g)->pw + ((p) % (o2)) * (g)->sw) * (g)->c)

/* Depthwise (one input and one output channel per group): vectors run across
 * channels, DW_TILE voxels share each weight load. */
#define DW_TILE 8
static void CONCAT(depthwise_span_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                            int64_t o2, int64_t p0, int64_t p1, const real_t* w,
                                            const real_t* bias, real_t* y) {
  const int64_t C = g->c;
  for (int64_t p = p0; p < p1; p += DW_TILE) {
    const int nt = p1 - p < DW_TILE ? (int)(p1 - p) : DW_TILE;
    /* a short tile (the end of a span) repeats its last voxel and stores
     * only its own outputs */
    const real_t* xo[DW_TILE];
    for (int t = 0; t < DW_TILE; ++t) xo[t] = SPAN_X(x, g, o2, p + (t < nt ? t : nt - 1));
    real_t* yo = y + (p - p0) * C;
    int64_t c = 0;
    for (; c + LANES <= C; c += LANES) {
      /* DW_TILE (8) named accumulators: GCC keeps an array of them in memory,
       * and every FMA then waits on a store and a reload; eight chains also
       * hide the FMA latency */
      VEC a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
      for (int64_t a = 0; a < g->kd; ++a)
        for (int64_t b = 0; b < g->kh; ++b)
          for (int64_t e = 0; e < g->kw; ++e) {
            const int64_t off = ((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C + c;
            const VEC wv = *(const VECU*)(w + ((a * g->kh + b) * g->kw + e) * C + c);
            a0 += *(const VECU*)(xo[0] + off) * wv;
            a1 += *(const VECU*)(xo[1] + off) * wv;
            a2 += *(const VECU*)(xo[2] + off) * wv;
            a3 += *(const VECU*)(xo[3] + off) * wv;
            a4 += *(const VECU*)(xo[4] + off) * wv;
            a5 += *(const VECU*)(xo[5] + off) * wv;
            a6 += *(const VECU*)(xo[6] + off) * wv;
            a7 += *(const VECU*)(xo[7] + off) * wv;
          }
      const VEC bv = bias ? *(const VECU*)(bias + c) : (VEC){0};
#define DW_STORE(t, acc) \
  if ((t) < nt) *(VECU*)(yo + (t) * C + c) = bias ? (acc) + bv : (acc)
      DW_STORE(0, a0);
      DW_STORE(1, a1);
      DW_STORE(2, a2);
      DW_STORE(3, a3);
      DW_STORE(4, a4);
      DW_STORE(5, a5);
      DW_STORE(6, a6);
      DW_STORE(7, a7);
#undef DW_STORE
    }
    for (; c < C; ++c) /* channels past the last full vector */
      for (int t = 0; t < nt; ++t) {
        real_t acc = 0;
        for (int64_t a = 0; a < g->kd; ++a)
          for (int64_t b = 0; b < g->kh; ++b)
            for (int64_t e = 0; e < g->kw; ++e)
              acc += xo[t][((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C + c] *
                     w[((a * g->kh + b) * g->kw + e) * C + c];
        yo[t * C + c] = acc + (bias ? bias[c] : (real_t)0);
      }
  }
}

/* Layers with 1, 2 or 4 (padded) filters per group and whole vectors of
 * channels: reduction tiles across the channels, as many voxels at a time as
 * the tile holds, then single voxels. */
static void CONCAT(reduce_span_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                         int64_t i0, int64_t o2, int64_t p0, int64_t p1,
                                         const real_t* wp, const real_t* bias, real_t* y) {
  const int64_t FR = g->fb, ntaps = g->kd * g->kh * g->kw;
  const int wide = FR == 1 ? WT_MAX : WT_HALF;
  CONCAT(reduce_fn_, SUFFIX) tile_wide, tile_one;
  if (FR == 1) {
    tile_wide = REDUCE_NAME(SUFFIX, 1, WT_MAX);
    tile_one = REDUCE_NAME(SUFFIX, 1, 1);
  } else if (FR == 2) {
    tile_wide = REDUCE_NAME(SUFFIX, 2, WT_HALF);
    tile_one = REDUCE_NAME(SUFFIX, 2, 1);
  } else {
    tile_wide = REDUCE_NAME(SUFFIX, 4, WT_HALF);
    tile_one = REDUCE_NAME(SUFFIX, 4, 1);
  }
  for (int64_t grp = 0; grp < g->groups; ++grp) {
    const real_t* xg = x + grp * g->cg;
    const real_t* wg = wp + grp * FR * ntaps * g->cg;
    for (int64_t p = p0; p < p1;) {
      const int nt = p1 - p >= wide ? wide : 1;
      const real_t* xt[WT_MAX];
      real_t sums[WT_MAX * 4];
      for (int t = 0; t < nt; ++t) xt[t] = SPAN_X(xg, g, o2, p + t);
      int64_t taps[4];
      tap_range(g->kd, g->dd, i0 * g->sd - g->lo0, g->in0, i0 * g->sd - g->lo0, taps);
      tap_range(g->kh, g->dh, (p / o2) * g->sh - g->lo1, g->in1,
                ((p + nt - 1) / o2) * g->sh - g->lo1, taps + 2);
      (nt == 1 ? tile_one : tile_wide)(g, xt, taps, wg, sums);
      for (int t = 0; t < nt; ++t)
        for (int64_t j = 0; j < g->fg; ++j) {
          const int64_t f = grp * g->fg + j;
          y[(p + t - p0) * g->f + f] = sums[t * FR + j] + (bias ? bias[f] : (real_t)0);
        }
      p += nt;
    }
  }
}

/* Voxels gathered for register tiles of one filter block: up to WT_MAX of
 * them, run as tiles of the widest widths that fit (tile_widths) when full or
 * when batch_run_* is called. Each tile runs only the taps, along all three
 * axes, that reach real input for one of its voxels. */
struct CONCAT(tile_batch_, SUFFIX) {
  const struct conv_geometry* g;
  const real_t* x; /* the padded input plane of the span, at the group */
  int64_t i0, o2, p0;
  const real_t* w;
  const real_t* bias;
  real_t* y; /* output of voxel p0, at the block's first filter */
  int64_t nf;
  int64_t p[WT_MAX]; /* voxels of the plane, in increasing order */
  int n;
};

static void CONCAT(batch_run_, SUFFIX)(struct CONCAT(tile_batch_, SUFFIX)* b) {
  const struct conv_geometry* g = b->g;
  const int64_t o2 = b->o2;
  int k = 0;
  for (int s = 0; s < b->n;) {
    while (CONCAT(tile_widths_, SUFFIX)[k] > b->n - s) ++k;
    const int nt = CONCAT(tile_widths_, SUFFIX)[k];
    const real_t* xt[WT_MAX];
    real_t* yt[WT_MAX];
    int64_t cmin = o2, cmax = -1;
    for (int t = 0; t < nt; ++t) {
      const int64_t p = b->p[s + t], c = p % o2;
      xt[t] = SPAN_X(b->x, g, o2, p);
      yt[t] = b->y + (p - b->p0) * g->f;
      if (c < cmin) cmin = c;
      if (c > cmax) cmax = c;
    }
    int64_t taps[6];
    tap_range(g->kd, g->dd, b->i0 * g->sd - g->lo0, g->in0, b->i0 * g->sd - g->lo0, taps);
    tap_range(g->kh, g->dh, (b->p[s] / o2) * g->sh - g->lo1, g->in1,
              (b->p[s + nt - 1] / o2) * g->sh - g->lo1, taps + 2);
    tap_range(g->kw, g->dw, cmin * g->sw - g->lo2, g->in2, cmax * g->sw - g->lo2, taps + 4);
    CONCAT(tile_for_, SUFFIX)(g->nv, nt)(g, xt, taps, b->w, b->bias, yt, b->nf);
    s += nt;
  }
  b->n = 0;
}

static inline void CONCAT(batch_add_, SUFFIX)(struct CONCAT(tile_batch_, SUFFIX)* b, int64_t p) {
  b->p[b->n++] = p;
  if (b->n == WT_MAX) CONCAT(batch_run_, SUFFIX)(b);
}

/* Output voxels [p0, p1) of the plane at x (padded input at (n, i0 * s0, 0, 0, 0)),
 * all channels, into y[p - p0][f]. A span is a row, or several short rows. */
static void CONCAT(conv_span_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                       int64_t i0, int64_t o2, int64_t p0, int64_t p1,
                                       const real_t* wp, const real_t* bias, real_t* y) {
  if (g->depthwise) {
    CONCAT(depthwise_span_, SUFFIX)(g, x, o2, p0, p1, wp, bias, y);
    return;
  }
  if (g->reduce) {
    CONCAT(reduce_span_, SUFFIX)(g, x, i0, o2, p0, p1, wp, bias, y);
    return;
  }
  /* paired groups (nv 3) run as one: their channels and filters interleaved */
  const int64_t gp = g->nv == 3 ? 2 : 1;
  const int64_t taps = g->kd * g->kh * g->kw, nblocks = gp == 2 ? 1 : g->fg_pad / g->fb;
  /* The end columns of the rows whose row taps reach padding: the first lc
   * and the last rc. When the layer's spans take them apart
   * (conv_rows_apart), a span of whole rows, at least half as many as the
   * widest tile has voxels, runs each end column's voxels as tiles of their
   * own, which skip those taps. Else voxels go in span order. */
  const int64_t lc = g->row_ends[0], rc = g->row_ends[1], rows = (p1 - p0) / o2;
  const int apart = g->rows_apart && p0 % o2 == 0 && rows * o2 == p1 - p0 && 2 * rows >= WT_MAX;
  for (int64_t grp = 0; grp < g->groups; grp += gp) {
    const real_t* xg = x + grp * g->cg;
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const real_t* wb = wp + (grp / gp * nblocks + blk) * taps * g->cg * g->fb;
      const int64_t f0 = grp * g->fg + blk * g->fb;
      const int64_t nf = g->fg - blk * g->fb < g->fb ? g->fg - blk * g->fb : g->fb;
      struct CONCAT(tile_batch_, SUFFIX) b = {g, xg, i0, o2, p0, wb, bias ? bias + f0 : NULL,
                                              y + f0, nf, {0}, 0};
      if (!apart) {
        for (int64_t p = p0; p < p1; ++p) CONCAT(batch_add_, SUFFIX)(&b, p);
      } else { /* the inner columns, then each end column on its own */
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = lc; c < o2 - rc; ++c) CONCAT(batch_add_, SUFFIX)(&b, p0 + r * o2 + c);
        CONCAT(batch_run_, SUFFIX)(&b);
        for (int64_t e = 0; e < lc + rc; ++e) {
          const int64_t c = e < lc ? e : o2 - rc + (e - lc);
          for (int64_t r = 0; r < rows; ++r) CONCAT(batch_add_, SUFFIX)(&b, p0 + r * o2 + c);
          CONCAT(batch_run_, SUFFIX)(&b);
        }
      }
      CONCAT(batch_run_, SUFFIX)(&b);
    }
  }
}

/* Pointwise GEMM block: 2 vectors of positions x GEMM_NR filters, reduced over
 * the c input channels; panel rows are ld apart, w is [c][GEMM_NR]; filter j's
 * 2 * LANES sums, plus bias[j] when bias is not NULL, go to out + j * ldo, or
 * into an R array as direct says. */
static void CONCAT(gemm_block_, SUFFIX)(int64_t c, const real_t* panel, int64_t ld,
                                        const real_t* w, const real_t* bias, real_t* out,
                                        int64_t ldo, const struct gemm_prefetch* pf,
                                        const struct direct_out* direct) {
  VEC acc0[GEMM_NR], acc1[GEMM_NR];
  _Pragma("GCC unroll 32") for (int j = 0; j < GEMM_NR; ++j) acc0[j] = acc1[j] = (VEC){0};
  int64_t run = 0, line = 0;
  const int64_t per = gemm_prefetch_per(pf, c);
  for (int64_t k = 0; k < c; ++k) {
    if (per) gemm_prefetch_step(pf, per, &run, &line);
    const VEC x0 = *(const VECU*)(panel + k * ld);
    const VEC x1 = *(const VECU*)(panel + k * ld + LANES);
    const real_t* wk = w + k * GEMM_NR;
    _Pragma("GCC unroll 32") for (int j = 0; j < GEMM_NR; ++j) {
      acc0[j] += x0 * wk[j];
      acc1[j] += x1 * wk[j];
    }
  }
  if (bias) {
    _Pragma("GCC unroll 32") for (int j = 0; j < GEMM_NR; ++j) {
      acc0[j] += bias[j];
      acc1[j] += bias[j];
    }
  }
  if (direct && direct->pairs) {
    _Pragma("GCC unroll 16") for (int i = 0; i < GEMM_NR / 2; ++i) {
      if (2 * i >= direct->nf) break;
      double* o = direct->pairs[i];
      CONCAT(direct_pair_, SUFFIX)(o, acc0[2 * i], acc0[2 * i + 1], direct->relu, direct->stream);
      CONCAT(direct_pair_, SUFFIX)(o + 2 * LANES, acc1[2 * i], acc1[2 * i + 1], direct->relu,
                                   direct->stream);
    }
    return;
  }
  if (direct) {
    _Pragma("GCC unroll 32") for (int j = 0; j < GEMM_NR; ++j) {
      if (j >= direct->nf) break;
      double* o = direct->yd[0] + j * direct->ldd;
      CONCAT(direct_put_, SUFFIX)(o, acc0[j], direct->relu, direct->stream);
      CONCAT(direct_put_, SUFFIX)(o + LANES, acc1[j], direct->relu, direct->stream);
    }
    return;
  }
  _Pragma("GCC unroll 32") for (int j = 0; j < GEMM_NR; ++j) {
    *(VECU*)(out + j * ldo) = acc0[j];
    *(VECU*)(out + j * ldo + LANES) = acc1[j];
  }
}

/* Kernel-gradient blocks (conv_grad_fn): GRAD_NR channels x NVG vectors of
 * filters (2, or 1 for groups with few filters), reduced over the positions of
 * `rows` rows in the layer's type, then added into the double sums `out`;
 * every sum runs in the same order (rows, then positions) whatever the thread
 * split. */
#define GRAD_BLOCK(NAME, NVG)                                                              \
  static void NAME(int64_t rows, int64_t m, const real_t* x, const int64_t* xrow,        \
                   int64_t xs, const real_t* dz, const int64_t* dzrow, int64_t ldz,      \
                   double* out) {                                                         \
    VEC acc[NVG][GRAD_NR];                                                                \
    _Pragma("GCC unroll 2") for (int v = 0; v < NVG; ++v)                                 \
      _Pragma("GCC unroll 16") for (int j = 0; j < GRAD_NR; ++j) acc[v][j] = (VEC){0};    \
    for (int64_t r = 0; r < rows; ++r) {                                                  \
      const real_t* xr = x + xrow[r];                                                     \
      const real_t* dr = dz + dzrow[r];                                                   \
      for (int64_t q = 0; q < m; ++q) {                                                   \
        VEC d[NVG];                                                                       \
        _Pragma("GCC unroll 2") for (int v = 0; v < NVG; ++v)                             \
          d[v] = *(const VECU*)(dr + q * ldz + v * LANES);                                \
        const real_t* xq = xr + q * xs;                                                   \
        _Pragma("GCC unroll 16") for (int j = 0; j < GRAD_NR; ++j)                        \
          _Pragma("GCC unroll 2") for (int v = 0; v < NVG; ++v) acc[v][j] += xq[j] * d[v]; \
      }                                                                                   \
    }                                                                                     \
    real_t tile[GRAD_NR * NVG * LANES]; /* a fixed length: the adds below vectorise */  \
    _Pragma("GCC unroll 16") for (int j = 0; j < GRAD_NR; ++j)                            \
      _Pragma("GCC unroll 2") for (int v = 0; v < NVG; ++v)                               \
        *(VECU*)(tile + (j * NVG + v) * LANES) = acc[v][j];                               \
    for (int i = 0; i < GRAD_NR * NVG * LANES; ++i) out[i] += tile[i];                    \
  }
GRAD_BLOCK(CONCAT(grad_block_, SUFFIX), 2)
GRAD_BLOCK(CONCAT(grad_block1_, SUFFIX), 1)
#undef GRAD_BLOCK

/* Depthwise kernel-gradient block (conv_dwgrad_fn): DWG_NT taps x one vector
 * of channels; position q of row r reads x + xrow[r] + q * xs + off[t] and
 * dz + r * dz_row + q * ldz; out[t][lane]. */
static void CONCAT(dwgrad_block_, SUFFIX)(int64_t rows, int64_t m, const real_t* x,
                                         const int64_t* xrow, int64_t xs, const int64_t* off,
                                         const real_t* dz, int64_t dz_row, int64_t ldz,
                                         real_t* out) {
  VEC acc[DWG_NT];
  _Pragma("GCC unroll 8") for (int t = 0; t < DWG_NT; ++t) acc[t] = (VEC){0};
  for (int64_t r = 0; r < rows; ++r) {
    const real_t* xr = x + xrow[r];
    const real_t* dr = dz + r * dz_row;
    for (int64_t q = 0; q < m; ++q) {
      const VEC d = *(const VECU*)(dr + q * ldz);
      const real_t* xq = xr + q * xs;
      _Pragma("GCC unroll 8") for (int t = 0; t < DWG_NT; ++t) acc[t] += *(const VECU*)(xq + off[t]) * d;
    }
  }
  _Pragma("GCC unroll 8") for (int t = 0; t < DWG_NT; ++t) *(VECU*)(out + t * LANES) = acc[t];
}

/* Kernel-gradient dot block (conv_dot_fn): DOT_NK rows x DOT_NV vectors of
 * filters, one broadcast row value times a vector of bt's row per position,
 * summed over the m positions in registers, then added into the doubles. */
static void CONCAT(dot_block_, SUFFIX)(int64_t m, const real_t* a, int64_t lda, const real_t* bt,
                                      int64_t ldb, double* out, const struct gemm_prefetch* pf) {
  VEC acc[DOT_NK][DOT_NV];
  _Pragma("GCC unroll 16") for (int j = 0; j < DOT_NK; ++j)
    _Pragma("GCC unroll 4") for (int v = 0; v < DOT_NV; ++v) acc[j][v] = (VEC){0};
  int64_t run = 0, line = 0;
  const int64_t per = gemm_prefetch_per(pf, m);
  for (int64_t q = 0; q < m; ++q) {
    if (per) gemm_prefetch_step(pf, per, &run, &line);
    VEC b[DOT_NV];
    _Pragma("GCC unroll 4") for (int v = 0; v < DOT_NV; ++v)
      b[v] = *(const VECU*)(bt + q * ldb + v * LANES);
    _Pragma("GCC unroll 16") for (int j = 0; j < DOT_NK; ++j) {
      const real_t aj = a[j * lda + q];
      _Pragma("GCC unroll 4") for (int v = 0; v < DOT_NV; ++v) acc[j][v] += aj * b[v];
    }
  }
  real_t tile[DOT_NK * DOT_NV * LANES]; /* a fixed length: the adds below vectorise */
  _Pragma("GCC unroll 16") for (int j = 0; j < DOT_NK; ++j)
    _Pragma("GCC unroll 4") for (int v = 0; v < DOT_NV; ++v)
      *(VECU*)(tile + (j * DOT_NV + v) * LANES) = acc[j][v];
  for (int i = 0; i < DOT_NK * DOT_NV * LANES; ++i) out[i] += tile[i];
}

#include "kernel_winograd.h"
#include "kernel_depthwise.h"

#undef SPAN_X
#undef TILE_PAIR
#undef TILE_PICK
#undef LANES
#undef VEC
#undef VECU
#undef TILE_NAME
#undef REDUCE_NAME
#undef DW_TILE
