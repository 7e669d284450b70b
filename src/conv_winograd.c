/* Winograd F(2x2x2, 3x3x3): 3x3x3 convolutions of unit stride computed per
 * 2x2x2 tile of outputs from the tile's 4x4x4 inputs (with dilation d, a
 * tile's outputs and inputs are d apart: each phase of the outputs along an
 * axis is a convolution of unit dilation on its own lattice). The
 * transforms turn each tile into 64 independent products over the channels, a
 * GEMM per transform point, with 64 multiplications per 8 outputs where the
 * direct convolution does 27 per output: 3.4 times fewer. The transforms only
 * add, subtract and halve, so results differ from the direct sums' in
 * rounding only (in float32 they were closer to float64 than the direct
 * sums, on a 128-channel layer). Pure C; the micro-kernels come from the
 * table cpu.c selects. */
#include <string.h>
#include "conv3d.h"
#include "omp_shim.h"

/* Layers the Winograd path takes: one group, 3x3x3, unit strides (any
 * dilation: conv_winograd_tiles), whole vectors of at least WINO_MIN_CHANNELS channels and at least
 * as many filters, outputs of at least 2 along every axis, and transformed
 * weights (64 x channels x filters) of at most WINO_MAX_WEIGHT_BYTES: the
 * products reread them for every register tile of tiles, and beyond that
 * they stream from memory (c3d_conv5a's 512 x 512 would take 64 MB). */
int conv_winograd_eligible(const struct conv_spec* s, const struct conv_geometry* g) {
  if (s->groups != 1 || s->channels % g->lanes != 0 || s->channels < WINO_MIN_CHANNELS ||
      s->filters < WINO_MIN_CHANNELS)
    return 0;
  for (int i = 0; i < 3; ++i)
    if (s->kernel[i] != 3 || s->strides[i] != 1 || s->out[i] < 2) return 0;
  const double bytes = 64.0 * (double)s->channels * (double)conv_winograd_fpad(g) *
                       (double)conv_real_size(s);
  return bytes <= WINO_MAX_WEIGHT_BYTES;
}

/* Tiles along one axis of O outputs with dilation d: the outputs of each
 * phase (o = phase + d * q) in pairs (q = 2t, 2t + 1), phase after phase. */
int64_t conv_winograd_tiles(int64_t O, int64_t d) {
  int64_t n = 0;
  for (int64_t phase = 0; phase < d && phase < O; ++phase) n += ((O - phase + d - 1) / d + 1) / 2;
  return n;
}

/* The first output of tile `tile` along such an axis; its other output is d
 * further (when below O), and its inputs in the padded copy are 0, d, 2d
 * and 3d further. */
int64_t conv_winograd_first(int64_t tile, int64_t O, int64_t d) {
  for (int64_t phase = 0;; ++phase) {
    const int64_t n = ((O - phase + d - 1) / d + 1) / 2;
    if (tile < n) return phase + 2 * d * tile;
    tile -= n;
  }
}

/* The kernel spec with zero padding added after each axis's end, so that
 * the 4 x 4 x 4 inputs of every tile (the last of a phase with an odd
 * number of outputs reads d beyond the layer's) lie inside the padded
 * copy. */
void conv_winograd_spec(const struct conv_spec* ks, struct conv_spec* ws) {
  *ws = *ks;
  for (int i = 0; i < 3; ++i) {
    const int64_t O = ws->out[i], d = ws->dilation[i];
    const int64_t P = ws->in[i] + ws->pad_lo[i] + ws->pad_hi[i];
    int64_t last = 0; /* the furthest input any tile reads */
    for (int64_t phase = 0; phase < d && phase < O; ++phase) {
      const int64_t n = ((O - phase + d - 1) / d + 1) / 2;
      const int64_t end = phase + 2 * d * (n - 1) + 3 * d;
      last = end > last ? end : last;
    }
    if (last >= P) ws->pad_hi[i] += last - P + 1;
  }
}

/* Rows of tiles (along axis 1, whole rows along axis 2) per work item: the
 * fewest that hold two register tiles (wt_max tiles each), or more when the
 * item's last register tile then has fewer empty places, up to four
 * register tiles. */
int64_t conv_winograd_rows(const struct conv_spec* ws) {
  const int64_t WT = cpu_kernels()->wt_max;
  const int64_t T1 = conv_winograd_tiles(ws->out[1], ws->dilation[1]);
  const int64_t T2 = conv_winograd_tiles(ws->out[2], ws->dilation[2]);
  int64_t best = 0;
  double best_waste = 2;
  for (int64_t r = 1; r <= T1; ++r) {
    const int64_t nt = r * T2, t = (nt + WT - 1) / WT * WT;
    if (best > 0 && t > 4 * WT) break;
    if (nt < 2 * WT && r < T1) continue;
    const double waste = (double)(t - nt) / (double)t;
    if (waste < best_waste) {
      best = r;
      best_waste = waste;
    }
  }
  return best;
}

/* Elements of one thread's scratch: the transformed inputs and products of a
 * register tile of tiles, and the item's two planes of output rows (each
 * row long enough for the second outputs of its last tiles). */
int64_t conv_winograd_scratch(const struct conv_spec* ws, const struct conv_geometry* g) {
  const size_t elt = conv_real_size(ws);
  const int64_t WT = cpu_kernels()->wt_max, fpad = conv_winograd_fpad(g);
  const int64_t rows = conv_winograd_rows(ws);
  return WT * (conv_winograd_tile_stride(ws->channels, elt) + conv_winograd_tile_stride(fpad, elt)) +
         2 * (2 * rows) * conv_winograd_row_length(ws) * fpad;
}

#define real_t float
#define SUFFIX f32
#include "conv_winograd_template.h"
#undef real_t
#undef SUFFIX

#define real_t double
#define SUFFIX f64
#include "conv_winograd_template.h"
#undef real_t
#undef SUFFIX
