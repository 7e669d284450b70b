/* R array <-> internal layout conversions, one instance per element type. */
#include <string.h>
#include "conv3d.h"
#include "omp_shim.h"

void conv_kernel_taps(const struct conv_spec* s, const struct conv_geometry* g, int64_t* tap) {
  const int64_t KD = s->kernel[0], KH = s->kernel[1];
  const int64_t rmul[3] = {1, KD, KD * KH}; /* R's multiplier of the layer's axes d, h, w */
  const int64_t m0 = rmul[g->axes[0]], m1 = rmul[g->axes[1]], m2 = rmul[g->axes[2]];
  for (int64_t t = 0; t < g->kd * g->kh * g->kw; ++t)
    tap[t] = (t / (g->kh * g->kw)) * m0 + ((t / g->kw) % g->kh) * m1 + (t % g->kw) * m2;
}

void weight_source_layer(const struct conv_spec* s, const struct conv_geometry* g,
                         const double* w, int64_t* tap, struct weight_source* src) {
  const int64_t taps = s->kernel[0] * s->kernel[1] * s->kernel[2];
  conv_kernel_taps(s, g, tap);
  src->w = w;
  src->tap = tap;
  src->cs = taps;
  src->fs = taps * (s->channels / s->groups);
  src->gs = src->fs * (s->filters / s->groups);
  src->run = taps;
}

/* channels pack_plane_planar_* reads side by side */
#define PLANAR_PACK_STREAMS 8

#define TEMPLATE "layout_template.h"
#include "both_types.h"
