/* Winograd F(2x2x2, 3x3x3): 3x3x3 convolutions of unit stride (and larger
 * odd kernels, as sums of 3x3x3 ones: conv_winograd_subkernels) computed per
 * 2x2x2 tile of outputs from the tile's 4x4x4 inputs (with dilation d, a
 * tile's outputs and inputs are d apart: each phase of the outputs along an
 * axis is a convolution of unit dilation on its own lattice). The
 * transforms turn each tile into 64 independent products over the channels, a
 * GEMM per transform point, with 64 multiplications per 8 outputs where the
 * direct convolution does 27 per output: 3.4 times fewer (5x5x5 as 8
 * sub-kernels: 1.95 times fewer). The transforms only
 * add, subtract and halve, so results differ from the direct sums' in
 * rounding only (in float32 they were closer to float64 than the direct
 * sums, on a 128-channel layer). Pure C; the micro-kernels come from the
 * table cpu.c selects. */
#include <string.h>
#include "conv3d.h"
#include "omp_shim.h"

/* Layers the Winograd path takes: one group, odd kernels of 3 to
 * WINO_MAX_KERNEL taps (sums of 3x3x3 ones: conv_winograd_subkernels), unit
 * strides, any dilation for 3x3x3 (conv_winograd_tiles) and none for larger
 * kernels, whole vectors of at least WINO_MIN_CHANNELS channels and at least
 * as many filters, outputs of at least 2 along every axis, and transformed
 * weights (64 x sub-kernels x channels x filters) of at most
 * WINO_MAX_WEIGHT_BYTES: the products reread them for every register tile
 * of tiles, and beyond that they stream from memory (c3d_conv5a's 512 x 512
 * would take 64 MB); and at most WINO_MAX_SCRATCH_BYTES of scratch per
 * thread (wide volumes with large kernels keep many tile transforms). */
int conv_winograd_eligible(const struct conv_spec* s, const struct conv_geometry* g) {
  if (s->groups != 1 || s->channels % g->lanes != 0 || s->channels < WINO_MIN_CHANNELS ||
      s->filters < WINO_MIN_CHANNELS)
    return 0;
  const int large = s->kernel[0] > 3 || s->kernel[1] > 3 || s->kernel[2] > 3;
  for (int i = 0; i < 3; ++i) {
    if (s->kernel[i] < 3 || s->kernel[i] > WINO_MAX_KERNEL || s->kernel[i] % 2 == 0 ||
        s->strides[i] != 1 || s->out[i] < 2)
      return 0;
    /* sub-kernels read further tiles of the same phase (conv_winograd_first) */
    if (large && s->dilation[i] != 1) return 0;
  }
  const double bytes = 64.0 *
                       (double)conv_winograd_subkernels(s->kernel[0], s->kernel[1], s->kernel[2]) *
                       (double)s->channels * (double)conv_winograd_fpad(g) *
                       (double)conv_real_size(s);
  return bytes <= WINO_MAX_WEIGHT_BYTES &&
         (double)conv_winograd_scratch(s, g) * (double)conv_real_size(s) <= WINO_MAX_SCRATCH_BYTES;
}

/* Tiles of one phase (o = phase + d * q, o < O) along an axis: its outputs in
 * pairs (q = 2t, 2t + 1). */
static int64_t phase_tiles(int64_t O, int64_t d, int64_t phase) {
  return ((O - phase + d - 1) / d + 1) / 2;
}

/* Tiles along one axis of O outputs with dilation d: each phase's
 * (phase_tiles), phase after phase. */
static int64_t conv_winograd_tiles(int64_t O, int64_t d) {
  int64_t n = 0;
  for (int64_t phase = 0; phase < d && phase < O; ++phase) n += phase_tiles(O, d, phase);
  return n;
}

/* The first output of tile `tile` along such an axis; its other output is d
 * further (when below O), and its inputs in the padded copy are 0, d, 2d
 * and 3d further. With d = 1, tiles past the last are the further tiles of
 * larger kernels' sub-kernels (conv_winograd_subkernels). */
static int64_t conv_winograd_first(int64_t tile, int64_t O, int64_t d) {
  if (d == 1) return 2 * tile;
  int64_t phase = 0;
  for (; phase < d - 1; ++phase) {
    const int64_t n = phase_tiles(O, d, phase);
    if (tile < n) break;
    tile -= n;
  }
  return phase + 2 * d * tile;
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
      /* the last sub-kernel's tile is K - 3 taps further */
      const int64_t end =
          phase + 2 * d * (phase_tiles(O, d, phase) - 1) + (ws->kernel[i] - 3) * d + 3 * d;
      last = end > last ? end : last;
    }
    if (last >= P) ws->pad_hi[i] += last - P + 1;
  }
}

/* Rows of tiles (along axis 1, whole rows along axis 2) per work item: the
 * fewest that hold two register tiles (wt_max tiles each), or more when the
 * item's last register tile then has fewer empty places, up to four
 * register tiles. */
static int64_t conv_winograd_rows(const struct conv_spec* ws) {
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

/* The Winograd driver's items and each thread's scratch for ws
 * (conv3d_winograd_*): planes of tiles per item (3x3x3: one; larger kernels:
 * WINO_RING_PLANES times the planes of tile transforms a plane's
 * sub-kernels read beyond its own, so that those transforms serve the next
 * planes' tiles too, while items stay small enough for prompt interrupt
 * checks) and the transforms an item keeps: a ring of (K0 - 1) / 2 planes of
 * its rows and columns of tiles, widened by the sub-kernels' reach, and one
 * zero tile. */
struct winograd_layout {
  int64_t rows, planes;        /* rows and planes of tiles per item */
  int64_t n[3];                /* sub-kernels along each axis */
  int64_t halo_rows, halo_cols, halo_tiles;
};

static void conv_winograd_layout(const struct conv_spec* ws, struct winograd_layout* l) {
  l->rows = conv_winograd_rows(ws);
  for (int i = 0; i < 3; ++i) l->n[i] = conv_winograd_axis_subkernels(ws->kernel[i]);
  const int64_t T0 = conv_winograd_tiles(ws->out[0], ws->dilation[0]);
  const int large = l->n[0] * l->n[1] * l->n[2] > 1;
  l->planes = large ? WINO_RING_PLANES * (l->n[0] > 1 ? l->n[0] - 1 : 1) : 1;
  if (l->planes > T0) l->planes = T0;
  l->halo_rows = l->rows + l->n[1] - 1;
  l->halo_cols = conv_winograd_tiles(ws->out[2], ws->dilation[2]) + l->n[2] - 1;
  l->halo_tiles = l->n[0] * l->halo_rows * l->halo_cols + 1;
}

/* Elements of one thread's scratch: the item's tile transforms
 * (conv_winograd_layout), the products of a register tile of tiles, and two
 * planes of output rows (each row long enough for the second outputs of its
 * last tiles); or, if longer, a line along the layer's W axis for the
 * channels_first softmax (conv_softmax_last_axis_*), which reuses it. */
int64_t conv_winograd_scratch(const struct conv_spec* ws, const struct conv_geometry* g) {
  const size_t elt = conv_real_size(ws);
  const int64_t WT = cpu_kernels()->wt_max, fpad = conv_winograd_fpad(g);
  struct winograd_layout l;
  conv_winograd_layout(ws, &l);
  const int64_t n = l.halo_tiles * conv_winograd_tile_stride(ws->channels, elt) +
                    WT * conv_winograd_tile_stride(fpad, elt) +
                    2 * (2 * l.rows) * conv_winograd_row_length(ws) * fpad;
  int64_t w_line = 0;
  for (int i = 0; i < 3; ++i)
    if (ws->axes[i] == 2) w_line = ws->out[i];
  return n > w_line ? n : w_line;
}

#define TEMPLATE "conv_winograd_template.h"
#include "both_types.h"
