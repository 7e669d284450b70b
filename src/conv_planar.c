/* The planar forward path: layers with few channels per group run on padded
 * input planes [p1][c][p2] that keep each channel's rows planar, with vectors
 * of output voxels along the rows (p2) and each weight broadcast
 * (kernel_planar.h). Each thread packs the planes its outputs read into a
 * ring of its own, and writes whole rows of every filter, which are runs of
 * the R output: no padded copy of the whole input, and no transposition
 * between the tiles and R's arrays. Pure C. */
#include "conv3d.h"
#include "omp_shim.h"

/* input channels per group up to which the planar tiles beat the
 * channels-last ones, whose reduction runs over taps x channels per tap */
#define PLANAR_MAX_CG 8

/* Tests only (conv_planar_allow): whether layers may take the planar path,
 * so that layers of few channels can reach the channels-last tiles. */
static int planar_allowed = 1;

int conv_planar_allow(int allow) {
  const int was = planar_allowed;
  planar_allowed = allow;
  return was;
}

void conv_geometry_planar(const struct conv_spec* ks, struct conv_geometry* g) {
  const struct kernel_table* k = cpu_kernels();
  /* rows at least one vector long; at least half of a tile's filters real */
  g->planar = planar_allowed && !g->patch && !g->depthwise && g->cg <= PLANAR_MAX_CG &&
              2 * g->fg >= k->planar_fb && ks->out[2] >= g->lanes;
  if (!g->planar) return;
  g->reduce = 0;
  g->nv = 1;
  g->fold = 0;
  g->fb = k->planar_fb;
  g->fg_pad = (g->fg + g->fb - 1) / g->fb * g->fb;
  /* a padded row of a stride sw > 1 is packed as sw phases (every sw-th
   * input from phase r on), each pw / sw long, so that the inputs of
   * consecutive outputs, sw apart, are next to each other in a phase
   * (pack_plane_planar_*) */
  g->pw = (g->pw + g->sw - 1) / g->sw * g->sw;
  conv_planar_winograd_geometry(ks, g);
}

/* Where the input of tap e along the rows and channel c of a group starts
 * in a packed row (conv_geometry_planar), for output 0: eoff[e * cg + c],
 * input e * dw in phase (e * dw) % sw at (e * dw) / sw of channel c. */
void conv_planar_tap_offsets(const struct conv_geometry* g, int64_t* eoff) {
  const int64_t phase = g->pw / g->sw;
  for (int64_t e = 0; e < g->kw; ++e)
    for (int64_t c = 0; c < g->cg; ++c)
      eoff[e * g->cg + c] = (e * g->dw) % g->sw * phase + e * g->dw / g->sw + c * g->pw;
}

/* The axis order of the planar path: the kernel spec's, with axes 0 and 1
 * ordered so that axis 0, along which each thread keeps its ring of input
 * planes, has the larger R stride (R's strides grow from depth to width in
 * both data formats); a plane's rows along axis 1 are then packed from
 * nearby R memory. */
void conv_planar_spec(const struct conv_spec* s, const struct conv_spec* ks,
                      struct conv_spec* planar) {
  struct conv_spec like = *ks;
  const int swap = ks->axes[0] < ks->axes[1];
  like.axes[0] = swap ? ks->axes[1] : ks->axes[0];
  like.axes[1] = swap ? ks->axes[0] : ks->axes[1];
  conv_kernel_spec_like(s, &like, planar);
}

/* Vectors of lanes voxels per output row (the last one partial), the input
 * planes one output plane reads (the ring's slots), and the bundles of
 * output rows along axis 1 (the Winograd rows': conv_planar_winograd.c). */
static int64_t planar_slots(const struct conv_spec* ks, const struct conv_geometry* g) {
  return (ks->out[2] + g->lanes - 1) / g->lanes;
}
static int64_t planar_span(const struct conv_geometry* g) { return (g->kd - 1) * g->dd + 1; }
static int64_t planar_bundles(const struct conv_spec* ks, const struct conv_geometry* g) {
  return (ks->out[1] + g->planar_m - 1) / g->planar_m;
}

/* Elements of one ring slot: a packed input plane [p1][c][p2], or for the
 * Winograd rows its transform [bundle][point][c][p2]. */
static int64_t planar_slot(const struct conv_spec* ks, const struct conv_geometry* g) {
  const int64_t rows = g->planar_points > 0 ? g->planar_points * planar_bundles(ks, g) : g->ph;
  return rows * g->c * g->pw;
}

/* Elements of one thread's ring of input planes: the span of planes one
 * output plane reads (conv3d_forward_planar_*), for the Winograd rows one
 * packed plane more, which is transformed into its slot, and the lanes - 1
 * elements the last row's last vector reads past its end; *n_index: int64
 * entries per thread for which plane each ring slot holds, the slots of the
 * taps along axis 0 and the offsets of the taps along the rows. */
int64_t conv_planar_ring(const struct conv_spec* ks, const struct conv_geometry* g,
                         int64_t* n_index) {
  *n_index = planar_span(g) + g->kd + g->kw * g->cg;
  const int64_t raw = g->planar_points > 0 ? g->ph * g->c * g->pw : 0;
  return planar_span(g) * planar_slot(ks, g) + raw + g->lanes;
}

/* Whether the planar tiles write the R output straight from their registers
 * (struct direct_out; the Winograd rows' planar_bundles_*: struct
 * bundle_out): rows of whole vectors that lie one after another in R (one
 * sample, or samples folded into depth), and no activation or one the
 * tiles apply themselves. */
int conv_planar_direct(const struct conv_spec* s, const struct conv_spec* ks,
                       const struct conv_geometry* g, int activation) {
  int64_t st[5];
  conv_r_strides(s, 1, st);
  return st[1 + ks->axes[2]] == 1 && planar_slots(ks, g) * g->lanes == ks->out[2] &&
         (activation == ACT_LINEAR || activation == ACT_RELU);
}

/* Rows the tiles take per work item: enough that the row vectors (slots)
 * fill whole tiles of planar_nj vectors; for the Winograd rows, bundles of
 * output rows. */
static int64_t planar_tile_rows(const struct conv_spec* ks, const struct conv_geometry* g) {
  const int64_t nj = cpu_kernels()->planar_nj;
  const int64_t rows = planar_slots(ks, g) % nj == 0 ? 1 : nj;
  const int64_t all = g->planar_points > 0 ? planar_bundles(ks, g) : ks->out[1];
  return rows < all ? rows : all;
}

/* Output rows per work item (for the Winograd rows, the last item's last
 * bundle may have fewer). */
int64_t conv_planar_rows(const struct conv_spec* ks, const struct conv_geometry* g) {
  return (g->planar_points > 0 ? g->planar_m : 1) * planar_tile_rows(ks, g);
}

/* Elements of one thread's scratch: the item's outputs [filter][row vector]
 * (planar_fb filter rows past the last, which the last block may fill), for
 * the Winograd rows then a block's products [point][filter][bundle vector],
 * or a W line for the channels_first softmax. */
int64_t conv_planar_scratch(const struct conv_spec* s, const struct conv_spec* ks,
                            const struct conv_geometry* g) {
  const int64_t row = planar_slots(ks, g) * g->lanes;
  const int64_t n = (s->filters + g->fb) * conv_planar_rows(ks, g) * row +
                    g->planar_points * g->fb * planar_tile_rows(ks, g) * row;
  return n > s->out[2] ? n : s->out[2];
}

#define TEMPLATE "conv_planar_template.h"
#include "both_types.h"
