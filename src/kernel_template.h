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

typedef void (*CONCAT(tile_fn_, SUFFIX))(const struct conv_geometry*, const real_t*,
                                         const real_t*, const real_t*, real_t*, int64_t);

#define NV 1
#include "kernel_tiles.h"
#undef NV
#define NV 2
#include "kernel_tiles.h"
#undef NV

/* Tile widths available, largest first; the row is covered greedily. */
static const int CONCAT(tile_widths_, SUFFIX)[] = {WT_MAX, 8, 4, 2, 1};

static CONCAT(tile_fn_, SUFFIX) CONCAT(tile_for_, SUFFIX)(int nv, int nt) {
  switch (nt) {
  case WT_MAX: return nv == 1 ? TILE_NAME(SUFFIX, 1, WT_MAX) : TILE_NAME(SUFFIX, 2, WT_MAX);
#if WT_MAX > 8
  case 8: return nv == 1 ? TILE_NAME(SUFFIX, 1, 8) : TILE_NAME(SUFFIX, 2, 8);
#endif
#if WT_MAX > 4
  case 4: return nv == 1 ? TILE_NAME(SUFFIX, 1, 4) : TILE_NAME(SUFFIX, 2, 4);
#endif
  case 2: return nv == 1 ? TILE_NAME(SUFFIX, 1, 2) : TILE_NAME(SUFFIX, 2, 2);
  default: return nv == 1 ? TILE_NAME(SUFFIX, 1, 1) : TILE_NAME(SUFFIX, 2, 1);
  }
}

/* Depthwise (one input and one output channel per group): vectors run across
 * channels, DW_TILE voxels share each weight load. */
#define DW_TILE 4
static void CONCAT(depthwise_row_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                           const real_t* w, const real_t* bias, real_t* y) {
  const int64_t C = g->c, xs = g->sw * C;
  for (int64_t ow = 0; ow < g->wo; ow += DW_TILE) {
    const int nt = g->wo - ow < DW_TILE ? (int)(g->wo - ow) : DW_TILE;
    const real_t* xo = x + ow * xs;
    real_t* yo = y + ow * C;
    int64_t c = 0;
    for (; c + LANES <= C; c += LANES) {
      VEC acc[DW_TILE] = {{0}};
      for (int64_t a = 0; a < g->kd; ++a)
        for (int64_t b = 0; b < g->kh; ++b)
          for (int64_t e = 0; e < g->kw; ++e) {
            const real_t* xt = xo + ((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C + c;
            const VEC wv = *(const VECU*)(w + ((a * g->kh + b) * g->kw + e) * C + c);
            if (nt == DW_TILE) {
              _Pragma("GCC unroll 4") for (int t = 0; t < DW_TILE; ++t)
                acc[t] += *(const VECU*)(xt + t * xs) * wv;
            } else {
              for (int t = 0; t < nt; ++t) acc[t] += *(const VECU*)(xt + t * xs) * wv;
            }
          }
      for (int t = 0; t < nt; ++t) {
        VEC out = acc[t];
        if (bias) out += *(const VECU*)(bias + c);
        *(VECU*)(yo + t * C + c) = out;
      }
    }
    for (; c < C; ++c) /* channels past the last full vector */
      for (int t = 0; t < nt; ++t) {
        real_t acc = 0;
        for (int64_t a = 0; a < g->kd; ++a)
          for (int64_t b = 0; b < g->kh; ++b)
            for (int64_t e = 0; e < g->kw; ++e)
              acc += xo[t * xs + ((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C + c] *
                     w[((a * g->kh + b) * g->kw + e) * C + c];
        yo[t * C + c] = acc + (bias ? bias[c] : (real_t)0);
      }
  }
}

/* x: padded input at (n, od*sd, oh*sh, 0, 0); y: the output row y[ow][f]. */
static void CONCAT(conv_row_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                      const real_t* wp, const real_t* bias, real_t* y) {
  if (g->depthwise) {
    CONCAT(depthwise_row_, SUFFIX)(g, x, wp, bias, y);
    return;
  }
  const int64_t taps = g->kd * g->kh * g->kw, nblocks = g->fg_pad / g->fb;
  for (int64_t grp = 0; grp < g->groups; ++grp) {
    const real_t* xg = x + grp * g->cg;
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const real_t* wb = wp + (grp * nblocks + blk) * taps * g->cg * g->fb;
      const int64_t f0 = grp * g->fg + blk * g->fb;
      const int64_t nf = g->fg - blk * g->fb < g->fb ? g->fg - blk * g->fb : g->fb;
      int64_t ow = 0;
      while (ow < g->wo) {
        int k = 0;
        while (CONCAT(tile_widths_, SUFFIX)[k] > g->wo - ow) ++k;
        const int nt = CONCAT(tile_widths_, SUFFIX)[k];
        CONCAT(tile_for_, SUFFIX)(g->nv, nt)(g, xg + ow * g->sw * g->c, wb,
                                             bias ? bias + f0 : NULL, y + ow * g->f + f0, nf);
        ow += nt;
      }
    }
  }
}

#undef LANES
#undef VEC
#undef VECU
#undef TILE_NAME
#undef DW_TILE
