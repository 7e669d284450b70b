/* The forward-convolution driver: geometry, work split and the fused epilogue.
 * Pure C; the kernels it calls come from the table cpu.c selects. */
#include <stdlib.h>
#include <string.h>
#include "conv3d.h"
#include "omp_shim.h"

/* Along the rows (the kernel spec's last axis): the end columns whose taps
 * reach padding, the first ends[0] and the last ends[1] of a row, and the
 * share of the row's taps that read padding. */
static double row_padding(const struct conv_spec* ks, int64_t ends[2]) {
  const int64_t o2 = ks->out[2], kw = ks->kernel[2];
  int64_t padded = 0;
  ends[0] = ends[1] = 0;
  for (int64_t c = 0; c < o2; ++c) {
    int64_t r[2];
    const int64_t first = c * ks->strides[2] - ks->pad_lo[2];
    tap_range(kw, ks->dilation[2], first, ks->in[2], first, r);
    padded += kw - (r[1] - r[0]);
    ends[0] += r[0] > 0;
    ends[1] += r[1] < kw;
  }
  return o2 > 0 ? (double)padded / (double)(o2 * kw) : 0;
}

int conv_rows_apart(const struct conv_spec* ks, int64_t ends[2]) {
  const int64_t wt = cpu_kernels()->wt_max;
  const double share = row_padding(ks, ends);
  return ks->out[2] >= wt && ks->out[1] >= wt && ends[0] + ends[1] < ks->out[2] &&
         share >= SPAN_EDGE_SAVING;
}

void conv_geometry_init(const struct conv_spec* s, struct conv_geometry* g) {
  const struct kernel_table* k = cpu_kernels();
  g->pd = s->in[0] + s->pad_lo[0] + s->pad_hi[0];
  g->ph = s->in[1] + s->pad_lo[1] + s->pad_hi[1];
  g->pw = s->in[2] + s->pad_lo[2] + s->pad_hi[2];
  g->c = s->channels;
  g->groups = s->groups;
  g->cg = s->channels / s->groups;
  g->fg = s->filters / s->groups;
  g->f = s->filters;
  g->kd = s->kernel[0]; g->kh = s->kernel[1]; g->kw = s->kernel[2];
  g->sd = s->strides[0]; g->sh = s->strides[1]; g->sw = s->strides[2];
  g->dd = s->dilation[0]; g->dh = s->dilation[1]; g->dw = s->dilation[2];
  g->lanes = (int)conv_lanes(s);
  g->depthwise = g->cg == 1 && g->fg == 1;
  /* few filters and whole vectors of channels: reduction tiles across the
   * channels, blocks of 1, 2 or 4 (padded) filters; the register tiles would
   * fill only fg of their lanes */
  g->reduce = !g->depthwise && g->cg >= g->lanes && g->cg % g->lanes == 0 &&
              (g->fg <= 2 || (g->fg <= 4 && g->lanes >= 16));
  /* float32 groups of half a vector of filters run in pairs, interleaved */
  const int pairs = s->dtype == DTYPE_FLOAT32 && !g->depthwise && !g->reduce &&
                    g->groups % 2 == 0 && 2 * g->fg == g->lanes;
  /* else one vector per block when a group has few output channels, or two */
  g->nv = pairs ? 3 : g->reduce || g->fg <= g->lanes ? 1 : 2;
  /* (the register tiles take the second as a constant: kernel_tile.h) */
  g->fb = g->reduce ? (g->fg <= 2 ? g->fg : 4) : (int64_t)(g->nv == 2 ? 2 : 1) * g->lanes;
  g->fg_pad = pairs ? g->fg : (g->fg + g->fb - 1) / g->fb * g->fb;
  g->fold = g->groups == 1 && g->dw == 1;
  g->gemm_nr = k->gemm_nr;
  g->planar = 0; /* the forward entry decides: conv_geometry_planar */
  g->planar_m = 0;
  g->planar_points = 0;
  g->winograd = 0; /* and conv_winograd_eligible */
  g->in0 = s->in[0];
  g->in1 = s->in[1];
  g->in2 = s->in[2];
  g->lo0 = s->pad_lo[0];
  g->lo1 = s->pad_lo[1];
  g->lo2 = s->pad_lo[2];
  g->rows_apart = conv_rows_apart(s, g->row_ends);
  g->patch = s->layout == LAYOUT_CHANNELS_LAST && g->groups == 1;
  for (int i = 0; i < 3; ++i) {
    g->patch &= s->pad_lo[i] == 0 && s->pad_hi[i] == 0 && s->dilation[i] == 1 &&
                s->kernel[i] <= s->strides[i];
  }
  for (int i = 0; i < 3; ++i) g->axes[i] = s->axes[i];
}

/* Whether a layer takes the Winograd path: as it is (adjoint 0), or as its
 * input gradient's correlation, filters to channels (adjoint 1). */
static int winograd_layer(const struct conv_spec* s, int adjoint) {
  struct conv_spec t = *s, ks;
  if (adjoint) {
    t.channels = s->filters;
    t.filters = s->channels;
  }
  conv_kernel_spec(&t, &ks);
  struct conv_geometry g;
  conv_geometry_init(&ks, &g);
  return conv_winograd_eligible(&ks, &g);
}

/* The batch folded into depth: R keeps a batch's samples interleaved along
 * its fastest axis (x[n, d, h, w, c] at n + N * d + ...), so a channels_last
 * layer of unit depth stride on N samples is, element for element, the same
 * layer on one sample N times as deep: input and output position n + N * d
 * of the folded depth, taps N times as far apart, N times the padding (its
 * zeros are exactly the taps that leave a sample). The kernels then read
 * whole runs of R memory along depth, where every sample's run was strided
 * (two 32^3 volumes: 16 -> 16 channels 5.1 -> 3.8 ms, a 1-channel stem 1.0
 * -> 0.3 ms). A path's per-thread scratch (the planar path's ring of input
 * planes, the Winograd and rows paths' rows of tiles and spans) holds
 * planes of rows along depth, N times longer folded, so the folded plane
 * (depth x height x the wider of channels and filters) stays within
 * BATCH_FOLD_MAX_PLANE_BYTES. Other layers, and those whose longer rows
 * would pass the Winograd path's scratch bound either way, are copied as
 * they are. */
void conv_fold_batch(const struct conv_spec* s, struct conv_spec* f) {
  *f = *s;
  const int64_t N = s->batch;
  const double wide = (double)(s->channels > s->filters ? s->channels : s->filters);
  const double plane = (double)N * (double)s->in[0] * (double)s->in[1] * wide *
                       (double)conv_real_size(s);
  if (N <= 1 || s->layout != LAYOUT_CHANNELS_LAST || s->strides[0] != 1 ||
      plane > BATCH_FOLD_MAX_PLANE_BYTES)
    return;
  f->batch = 1;
  f->in[0] = N * s->in[0];
  f->out[0] = N * s->out[0];
  f->pad_lo[0] = N * s->pad_lo[0];
  f->pad_hi[0] = N * s->pad_hi[0];
  /* one tap along depth reads no neighbour: its dilation stays (1x1x1
   * layers keep the patch path) */
  if (s->kernel[0] > 1) f->dilation[0] = N * s->dilation[0];
  for (int adjoint = 0; adjoint < 2; ++adjoint) {
    if (winograd_layer(s, adjoint) && !winograd_layer(f, adjoint)) {
      *f = *s;
      return;
    }
  }
}

/* The spec the kernels run on: the spatial axes reordered so that kernel rows
 * (the last axis) run along depth, R's fastest spatial axis, whenever the output
 * has depth to fill the register tiles; else along width as laid out. Depth
 * rows take the order (w, h, d): a plane's rows then lie next to each other in
 * R, so a span of several rows writes each filter's outputs as one run, not
 * as row pieces a plane apart (the memory takes the pieces about 1.5 times
 * slower; mednet_stem 9.6 -> 9.0 ms). */
static void kernel_spec_in_order(const struct conv_spec* s, const int* order,
                                 struct conv_spec* ks) {
  *ks = *s;
  for (int i = 0; i < 3; ++i) {
    ks->axes[i] = order[i];
    ks->in[i] = s->in[order[i]];
    ks->out[i] = s->out[order[i]];
    ks->kernel[i] = s->kernel[order[i]];
    ks->strides[i] = s->strides[order[i]];
    ks->dilation[i] = s->dilation[order[i]];
    ks->pad_lo[i] = s->pad_lo[order[i]];
    ks->pad_hi[i] = s->pad_hi[order[i]];
  }
}

void conv_kernel_spec(const struct conv_spec* s, struct conv_spec* ks) {
  static const int depth_rows[3] = {2, 1, 0}, width_rows[3] = {0, 1, 2};
  kernel_spec_in_order(s, s->out[0] >= 8 || s->out[0] >= s->out[2] ? depth_rows : width_rows, ks);
}

/* The kernel spec of s with the axis order of another kernel spec (convolutions
 * sharing one packed input). */
void conv_kernel_spec_like(const struct conv_spec* s, const struct conv_spec* like,
                           struct conv_spec* ks) {
  kernel_spec_in_order(s, like->axes, ks);
}

/* Strides of the R array (input, or output when `output`) along n, d, h, w and
 * channels, for the layer's data format. */
void conv_r_strides(const struct conv_spec* s, int output, int64_t st[5]) {
  const int64_t* len = output ? s->out : s->in;
  const int64_t N = s->batch, C = output ? s->filters : s->channels;
  st[0] = 1;
  if (s->layout == LAYOUT_CHANNELS_LAST) { /* (n, d, h, w, c) */
    st[1] = N; st[2] = N * len[0]; st[3] = N * len[0] * len[1]; st[4] = N * len[0] * len[1] * len[2];
  } else { /* (n, c, d, h, w) */
    st[4] = N; st[1] = N * C; st[2] = N * C * len[0]; st[3] = N * C * len[0] * len[1];
  }
}

/* Output voxels per work item of a plane: one row of the kernel spec, or, when
 * rows are shorter than the widest register tile, several rows together so the
 * tiles stay full (or, when their end columns read padding, as many rows as
 * the widest tile has voxels). */
int64_t conv_span_length(const struct conv_spec* ks) {
  const int64_t row = ks->out[2], plane = ks->out[1] * ks->out[2];
  const int64_t wt = cpu_kernels()->wt_max;
  if (row >= wt) {
    /* rows whose end columns read padding along the rows: as many rows as
     * the widest tile has voxels, so that the span can run each end column's
     * voxels as one tile of their own, which skips those taps (conv_span_*).
     * The larger span leaves L1, so only when that skips at least
     * SPAN_EDGE_SAVING of the taps (measured: dilated2 8 %, 7 % faster;
     * unet_deep 4 % and vnet_k5 4 %, 1-2 %; unet_l2 2 %, 4 % slower). */
    int64_t ends[2];
    if (conv_rows_apart(ks, ends)) return wt * row;
    /* a row that leaves a short tail tile: a few rows together that the widest
     * tiles cover exactly (16 = 12 + 4 -> 48 = 4 x 12), else with a tile of 8 */
    for (int want = 0; want <= 8; want += 8)
      for (int64_t r = 1; r <= 4; ++r)
        if ((r * row) % wt == want && r <= ks->out[1]) return r * row;
    return row;
  }
  /* equal spans of at most 8 tiles: every span streams all the weights once */
  const int64_t spans = (plane + 8 * wt - 1) / (8 * wt);
  return (plane + spans - 1) / spans;
}

/* Elements of one thread's scratch: a span of outputs, or a W line for the
 * channels_first softmax. */
int64_t conv_scratch_row(const struct conv_spec* s, const struct conv_spec* ks) {
  int64_t span = conv_span_length(ks) * s->filters;
  return span > s->out[2] ? span : s->out[2];
}

/* Elements of the packed weights: [g][block][tap][c][fb], or [tap][c] depthwise. */
int64_t conv_packed_weight_length(const struct conv_geometry* g) {
  int64_t taps = g->kd * g->kh * g->kw;
  if (g->patch) return conv_patch_fpad(g) * taps * g->c;
  if (g->winograd) {
    return 64 * conv_winograd_subkernels(g->kd, g->kh, g->kw) * g->c * conv_winograd_fpad(g);
  }
  if (g->depthwise) return taps * g->c;
  if (g->planar && g->planar_points > 0) { /* [g][block][point][a][e][c][fb] */
    return g->planar_points * g->kd * g->kw * g->cg * g->groups * g->fg_pad;
  }
  return taps * g->cg * g->groups * g->fg_pad;
}

/* Elements of one thread's patch-GEMM scratch: two panels of patches (taps x
 * channels rows: the one multiplied and the next, being filled) and the
 * block's outputs, conv_patch_block() positions each. */
int64_t conv_patch_scratch(const struct conv_spec* s, const struct conv_geometry* g) {
  int64_t k = s->kernel[0] * s->kernel[1] * s->kernel[2] * s->channels;
  return (2 * k + conv_patch_fpad(g)) * conv_patch_block(g->lanes);
}

/* R-array offset of patch row k = (a, b, e, c), in R's kernel order
 * a + KD * (b + KH * (e + KW * c)), from the patch's first input voxel. */
void conv_patch_offsets(const struct conv_spec* s, int64_t* koff) {
  const int64_t N = s->batch, D = s->in[0], H = s->in[1], W = s->in[2];
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2];
  for (int64_t c = 0; c < s->channels; ++c)
    for (int64_t e = 0; e < KW; ++e)
      for (int64_t b = 0; b < KH; ++b)
        for (int64_t a = 0; a < KD; ++a) {
          koff[a + KD * (b + KH * (e + KW * c))] = N * (a + D * (b + H * (e + W * c)));
        }
}

/* Paired groups (nv 3) read their channels interleaved: channel c of group g
 * sits beside the same channel of group g ^ 1; src[q] is the channel packed
 * at place q. */
void conv_pair_perm(const struct conv_geometry* g, int64_t* src) {
  const int64_t pair = 2 * g->cg;
  for (int64_t q = 0; q < g->c; ++q) src[q] = q / pair * pair + (q % 2) * g->cg + (q % pair) / 2;
}

/* Patch-GEMM blocks of mb positions (k patch rows, f filters) per chunk between
 * interrupt checks: about 1 GFLOP, at least a few per thread. */
int64_t conv_patch_chunk(int64_t mb, int64_t k, int64_t f, int nthreads) {
  int64_t chunk = (int64_t)(1e9 / (2.0 * (double)mb * (double)k * (double)f + 1));
  return chunk < 4 * (int64_t)nthreads ? 4 * (int64_t)nthreads : chunk;
}

/* Whether the patch GEMM blocks write whole sub-blocks of positions from
 * their registers into the R output at out: no activation or ReLU, and every
 * vector aligned when the output is streamed (conv3d_patch_gemm_*). */
int conv_patch_direct(const struct conv_spec* s, const struct conv_geometry* g, int activation,
                      const double* out) {
  const int64_t P = s->batch * s->out[0] * s->out[1] * s->out[2];
  return (activation == ACT_LINEAR || activation == ACT_RELU) &&
         (!conv_stream_output(s) || conv_direct_aligned(out, g->lanes, P, 0, 0));
}

/* Whether a patch layer's patches are single voxels in R's order (1x1x1,
 * stride 1): its patch rows are runs of the R array (patch_row_* without
 * bases). */
int conv_patch_pointwise(const struct conv_spec* s) {
  return s->kernel[0] * s->kernel[1] * s->kernel[2] == 1 && s->strides[0] == 1 &&
         s->strides[1] == 1 && s->strides[2] == 1;
}

/* R-array offset of the first input voxel of each output position p0 + i,
 * i < m, of a patch layer (output positions in R's order). Only p0 is
 * divided into its coordinates; the rest step from it like an odometer. */
void conv_patch_bases(const struct conv_spec* s, int64_t p0, int64_t m, int64_t* base) {
  const int64_t N = s->batch, D = s->in[0], H = s->in[1];
  const int64_t DO = s->out[0], HO = s->out[1];
  /* input offsets of one step along each output axis */
  const int64_t sd = N * s->strides[0], sh = N * D * s->strides[1], sw = N * D * H * s->strides[2];
  int64_t n = p0 % N, od = (p0 / N) % DO, oh = (p0 / (N * DO)) % HO;
  const int64_t ow = p0 / (N * DO * HO);
  int64_t b = n + od * sd + oh * sh + ow * sw;
  for (int64_t i = 0; i < m; ++i) {
    base[i] = b;
    if (++n < N) {
      ++b;
      continue;
    }
    n = 0;
    b += sd - (N - 1);
    if (++od < DO) continue;
    od = 0;
    b += sh - DO * sd;
    if (++oh < HO) continue;
    oh = 0;
    b += sw - HO * sh;
  }
}

/* Runs of output positions (R's order, from position 0) whose patches are
 * evenly spaced along the input: returns the run length and sets *step to
 * their spacing, or returns 0 (patch rows gather). Single-voxel patches are
 * one run of step 1; with one sample, each depth row (out[0] positions) is a
 * run of the depth stride. */
int64_t conv_patch_runs(const struct conv_spec* s, int64_t* step) {
  if (conv_patch_pointwise(s)) {
    *step = 1;
    return s->batch * s->out[0] * s->out[1] * s->out[2];
  }
  *step = s->strides[0];
  return s->batch == 1 ? s->out[0] : 0;
}

/* Cache lines from the start of each run of a patch row for blocks of m
 * positions, or 0 when its runs are too short to prefetch run by run
 * (gathered patches, or runs within a cache line: patch_row_* prefetches
 * those itself). */
int64_t conv_patch_prefetch_lines(int64_t run, int64_t step, int64_t m) {
  const int64_t per_line = 64 / (int64_t)sizeof(double), longest = run < m ? run : m;
  return run * step < per_line ? 0 : (longest * step + per_line - 1) / per_line + 1;
}

/* Where the runs that a patch row reads for positions p0 .. p0 + m - 1 start,
 * from the row's own offset: base[i] (p0 + i for single-voxel patches) at
 * each run's first position i; returns how many (at most m). For layers
 * whose patch rows are runs (run > 0: conv_patch_prefetch_lines is not 0). */
int64_t conv_patch_run_starts(const int64_t* base, int64_t run, int64_t p0, int64_t m,
                              int64_t* starts) {
  int64_t n = 0;
  for (int64_t i = 0; i < m; i += conv_run_left(run, p0 + i, m - i))
    starts[n++] = base ? base[i] : p0 + i;
  return n;
}

/* The runs of R memory that patch rows k0 .. k1 - 1 read, from the n run
 * starts of their positions (conv_patch_run_starts), to be prefetched before
 * they are filled: into `runs`, at most cap; returns how many. A row that
 * starts within a cache line of the one before adds nothing: it reads the
 * same lines (the depth taps of a strided layer). */
int64_t conv_patch_prefetch_runs(const double* x, const int64_t* koff, const int64_t* starts,
                                 int64_t n, int64_t k0, int64_t k1, const void** runs,
                                 int64_t cap) {
  const int64_t per_line = 64 / (int64_t)sizeof(double);
  int64_t count = 0;
  for (int64_t k = k0; k < k1; ++k) {
    if (k > 0 && llabs(koff[k] - koff[k - 1]) < per_line) continue;
    for (int64_t j = 0; j < n && count < cap; ++j) runs[count++] = x + koff[k] + starts[j];
  }
  return count;
}

/* Work items per chunk: about 1 GFLOP (a few ms on the vector tiers, well under
 * a second on the generic one), so an interrupt is seen quickly while the
 * fork/join of a parallel region stays rare; at least min_items. */
int64_t conv_chunk_items(const struct conv_spec* s, int64_t voxels_per_item, int64_t min_items) {
  double flops = 2.0 * (double)voxels_per_item * (double)s->filters *
                 (double)(s->channels / s->groups) *
                 (double)(s->kernel[0] * s->kernel[1] * s->kernel[2]);
  double items = 1e9 / (flops > 1 ? flops : 1);
  return items < (double)min_items ? min_items : (int64_t)items;
}

int conv_stream_bytes(double bytes) { return bytes >= (double)CONV3D_STREAM_BYTES; }

int conv_stream_output(const struct conv_spec* s) {
  double n = (double)s->batch * (double)s->filters;
  for (int i = 0; i < 3; ++i) n *= (double)s->out[i];
  return conv_stream_doubles(n);
}

int conv_rows_stream(double n_out, int64_t row_stride) {
  return row_stride == 1 && conv_stream_doubles(n_out);
}

#define TEMPLATE "conv_forward_template.h"
#include "both_types.h"
