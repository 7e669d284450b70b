/* The planar depthwise path: a depthwise layer (one channel per group, one
 * filter each) under channels_last keeps each channel's volume as one run of
 * R memory, its samples interleaved. Slabs of a channel's planes along W are
 * read sample by sample into a padded buffer, convolved with vectors along
 * R's depth axis (kernel_depthwise.h) and written back, the samples woven
 * together again, as one run of the R output: the input and output are each
 * read or written once, in order, with no padded copy of the whole input and
 * no transposition between channels and voxels. Pure C. */
#include "conv3d.h"
#include "omp_shim.h"

/* bytes of one thread's slab buffers (input and outputs), which should stay
 * in its L2, and the most a slab of one output plane may take */
#define DW_SLAB_BYTES (256 * 1024)
#define DW_SLAB_MAX_BYTES (8 * 1024 * 1024)

void conv_dw_geometry_init(const struct conv_spec* s, struct conv_dw_geometry* g) {
  const int64_t L = conv_lanes(s);
  for (int i = 0; i < 3; ++i) {
    g->out[i] = s->out[i];
    g->kernel[i] = s->kernel[i];
    g->dilation[i] = s->dilation[i];
  }
  g->s1 = s->strides[1];
  g->nv = (g->out[0] + L - 1) / L;
  g->p0 = g->nv * L + (g->kernel[0] - 1) * g->dilation[0];
  g->p1 = (g->out[1] - 1) * g->s1 + (g->kernel[1] - 1) * g->dilation[1] + 1;
}

/* Input planes a slab of `planes` output planes reads. */
static int64_t dw_input_planes(const struct conv_spec* s, int64_t planes) {
  return (planes - 1) * s->strides[2] + (s->kernel[2] - 1) * s->dilation[2] + 1;
}
/* The input planes [*i0, *i1) along W of the slab of output planes
 * [o2, o2 + planes): those of its input planes that are not padding. */
static void dw_real_planes(const struct conv_spec* s, int64_t o2, int64_t planes, int64_t* i0,
                           int64_t* i1) {
  const int64_t first = o2 * s->strides[2] - s->pad_lo[2];
  const int64_t last = first + dw_input_planes(s, planes);
  *i0 = first > 0 ? first : 0;
  *i1 = last < s->in[2] ? last : s->in[2];
}
/* Elements of one sample's padded input for slabs of `planes` output planes,
 * and the lanes its last row, zeroed a vector at a time, reaches past it: the
 * start of each thread's scratch in both drivers. */
static int64_t dw_input_len(const struct conv_spec* s, const struct conv_dw_geometry* g,
                            int64_t planes) {
  return dw_input_planes(s, planes) * g->p1 * g->p0 + conv_lanes(s);
}
/* Elements of one thread's scratch for slabs of `planes` output planes: one
 * sample's padded input (dw_input_len), every sample's outputs (and the lanes
 * the last row's last vector spills into), and the channel's taps. */
int64_t conv_dw_scratch(const struct conv_spec* s, const struct conv_dw_geometry* g,
                        int64_t planes) {
  return dw_input_len(s, g, planes) + s->batch * planes * g->out[0] * g->out[1] +
         conv_lanes(s) + g->kernel[0] * g->kernel[1] * g->kernel[2];
}

/* Elements of one thread's scratch for the kernel gradient over slabs of
 * `planes` output planes: one sample's padded input (dw_input_len) and one
 * plane of its output gradient (rows of whole vectors, and the lanes its fill
 * reaches past them). */
int64_t conv_dw_grad_scratch(const struct conv_spec* s, const struct conv_dw_geometry* g,
                             int64_t planes) {
  return dw_input_len(s, g, planes) + g->out[1] * g->nv * conv_lanes(s) + conv_lanes(s);
}
/* Doubles of one thread's kernel-gradient sums: a vector's lanes for each of
 * a channel's taps. */
int64_t conv_dw_grad_local(const struct conv_spec* s) {
  return s->kernel[0] * s->kernel[1] * s->kernel[2] * conv_lanes(s);
}

/* Output planes per slab: as many as DW_SLAB_BYTES holds, fewer when the
 * layer has too few channels for every thread to get a few slabs. */
int64_t conv_dw_slab_planes(const struct conv_spec* s, const struct conv_dw_geometry* g,
                            int nthreads) {
  const int64_t O2 = g->out[2], elt = (int64_t)conv_real_size(s);
  int64_t planes = 1;
  while (planes < O2 && conv_dw_scratch(s, g, planes + 1) * elt <= DW_SLAB_BYTES) ++planes;
  const int64_t want = 4 * (int64_t)nthreads;
  /* tasks are filters (a depthwise layer's are its channels) */
  if (s->filters * ((O2 + planes - 1) / planes) < want) {
    const int64_t slabs = (want + s->filters - 1) / s->filters;
    const int64_t fewer = (O2 + slabs - 1) / slabs;
    if (fewer < planes) planes = fewer;
  }
  return planes;
}

/* The layout the planar depthwise path runs on: channels_last (each
 * channel's volume is then one run of R memory, depth fastest after the
 * sample), unit stride along depth, rows at least a vector long, and one
 * plane's slab within DW_SLAB_MAX_BYTES. */
static int dw_planes_fit(const struct conv_spec* s) {
  if (s->layout != LAYOUT_CHANNELS_LAST || s->strides[0] != 1 || s->out[0] < conv_lanes(s)) {
    return 0;
  }
  struct conv_dw_geometry dg;
  conv_dw_geometry_init(s, &dg);
  return conv_dw_scratch(s, &dg, 1) * (int64_t)conv_real_size(s) <= DW_SLAB_MAX_BYTES;
}

/* Depthwise layers in that layout; not softmax, which runs over each
 * voxel's channels while this path holds one channel at a time. */
int conv_dw_eligible(const struct conv_spec* s, const struct conv_geometry* g, int activation) {
  return g->depthwise && activation != ACT_SOFTMAX && dw_planes_fit(s);
}

/* The kernel gradient of a layer with one input channel per group (a
 * depthwise one, a stem on one channel, a channel multiplier): each filter's
 * taps are then dot products of its own output gradient with its group's one
 * channel, as a depthwise layer's are, so its planar kernel gradient takes
 * them, in the same layout. */
int conv_dw_grad_eligible(const struct conv_spec* s) {
  return s->channels == s->groups && dw_planes_fit(s);
}

#define TEMPLATE "conv_depthwise_template.h"
#include "both_types.h"
