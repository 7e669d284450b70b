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

void conv_geometry_planar(const struct conv_spec* ks, struct conv_geometry* g) {
  const struct kernel_table* k = cpu_kernels();
  /* rows of unit stride, at least one vector long; at least half of a tile's
   * filters real */
  g->planar = !g->patch && !g->depthwise && ks->strides[2] == 1 && g->cg <= PLANAR_MAX_CG &&
              2 * g->fg >= k->planar_fb && ks->out[2] >= g->lanes;
  if (!g->planar) return;
  g->reduce = 0;
  g->nv = 1;
  g->fold = 0;
  g->fb = k->planar_fb;
  g->fg_pad = (g->fg + g->fb - 1) / g->fb * g->fb;
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

/* Vectors of lanes voxels per output row (the last one partial), and the
 * input planes one output plane reads (the ring's slots). */
static int64_t planar_slots(const struct conv_spec* ks, const struct conv_geometry* g) {
  return (ks->out[2] + g->lanes - 1) / g->lanes;
}
static int64_t planar_span(const struct conv_geometry* g) { return (g->kd - 1) * g->dd + 1; }

/* Elements of one thread's ring of input planes: the span of planes one
 * output plane reads (conv3d_forward_planar_*), and the lanes - 1 elements
 * the last row's last vector reads past its end; *n_index: int64 entries per
 * thread for which plane each ring slot holds and the slots of the taps. */
int64_t conv_planar_ring(const struct conv_geometry* g, int64_t* n_index) {
  *n_index = planar_span(g) + g->kd;
  return planar_span(g) * g->ph * g->c * g->pw + g->lanes;
}

/* Whether the planar tiles write the R output straight from their registers
 * (struct planar_direct): rows of whole vectors that lie one after another in
 * R (one sample, or samples folded into depth), and no activation or one the
 * tiles apply themselves. */
int conv_planar_direct(const struct conv_spec* s, const struct conv_spec* ks,
                       const struct conv_geometry* g, int activation) {
  int64_t st[5];
  conv_r_strides(s, 1, st);
  return st[1 + ks->axes[2]] == 1 && planar_slots(ks, g) * g->lanes == ks->out[2] &&
         (activation == ACT_LINEAR || activation == ACT_RELU);
}

/* Rows per work item: enough that the row vectors (slots) fill whole tiles of
 * planar_nj vectors. */
int64_t conv_planar_rows(const struct conv_spec* ks, const struct conv_geometry* g) {
  const int64_t nj = cpu_kernels()->planar_nj;
  const int64_t rows = planar_slots(ks, g) % nj == 0 ? 1 : nj;
  return rows < ks->out[1] ? rows : ks->out[1];
}

/* Elements of one thread's scratch: the item's outputs [filter][row vector]
 * (planar_fb filter rows past the last, which the last block may fill), or a
 * W line for the channels_first softmax. */
int64_t conv_planar_scratch(const struct conv_spec* s, const struct conv_spec* ks,
                            const struct conv_geometry* g) {
  const int64_t n = (s->filters + g->fb) * conv_planar_rows(ks, g) * planar_slots(ks, g) * g->lanes;
  return n > s->out[2] ? n : s->out[2];
}

#define real_t float
#define SUFFIX f32
#include "conv_planar_template.h"
#undef real_t
#undef SUFFIX

#define real_t double
#define SUFFIX f64
#include "conv_planar_template.h"
#undef real_t
#undef SUFFIX
