/* R entry point of the gradients: validate and convert the call once
 * (conv_call_prepare), recompute the pre-activation output when the activation
 * needs it, then run conv_backward.c and the kernels. */
#include <string.h>
#include "ffi.h"
#include "conv3d.h"

/* Tests only: the way the last input gradient was computed, "patch" (one
 * GEMM, written through its stage), "patch rows" or "patch woven" (the same,
 * its blocks writing dx from their registers: conv_patch_dx_writes),
 * "winograd" (the forward Winograd path), "depthwise" (the forward planar
 * depthwise path), "phases" (the forward kernels, once per phase of the
 * strides) or "transposed" (the forward kernels, one phase, on the
 * forward's packed weights transposed). */
static const char* last_input_path = "none";
SEXP ffi_last_input_grad_path(void) { return Rf_mkString(last_input_path); }

/* Whether the layer's patches do not overlap (conv_geometry.patch), so its
 * gradients are plain GEMMs on the R arrays. */
static int is_patch_layer(const struct conv_spec* s) {
  struct conv_spec ks;
  conv_kernel_spec(s, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  return geo.patch;
}

/* Phase q of the split, from the live phases of each axis (axis 0's varying
 * fastest): its axis phases p and the specs of its correlation (ks in the axis
 * order of wks). */
static void phase_specs(const struct conv_spec* s, struct grad_phase* const ph[3],
                        const int64_t live[3], int64_t q, const struct conv_spec* wks,
                        const struct grad_phase* p[3], struct conv_spec* t,
                        struct conv_spec* ks) {
  p[0] = &ph[0][q % live[0]];
  p[1] = &ph[1][q / live[0] % live[1]];
  p[2] = &ph[2][q / (live[0] * live[1])];
  conv_grad_phase_spec(s, p, t);
  conv_kernel_spec_like(t, wks, ks);
}

/* dx of a layer whose input gradient is one phase (unit strides), when that
 * correlation takes the Winograd path (conv_winograd_eligible): the forward
 * path with the phase's flipped and transposed kernel. Returns 0, having
 * done nothing, when it does not. */
static int input_grad_winograd(const struct conv_spec* s, const struct grad_phase* const p[3],
                               const double* dz, const double* w, double* dx, int threads) {
  struct conv_spec t, ks;
  conv_grad_phase_spec(s, p, &t);
  conv_kernel_spec(&t, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  if (!conv_winograd_eligible(&ks, &geo)) return 0;
  geo.winograd = 1;
  struct call_scratch cs = {{0}, 0};
  int64_t* tap = alloc_elems(&cs, t.kernel[0] * t.kernel[1] * t.kernel[2], sizeof(int64_t));
  struct weight_source src;
  conv_grad_phase_source(s, p, &geo, w, tap, &src);
  void* u = alloc_elems(&cs, conv_packed_weight_length(&geo), conv_real_size(s));
  if (s->dtype == DTYPE_FLOAT32) {
    pack_weights_f32(&t, &geo, &src, u, threads);
  } else {
    pack_weights_f64(&t, &geo, &src, u, threads);
  }
  conv_forward_general(&t, &ks, &geo, dz, u, NULL, ACT_LINEAR, dx, threads, NULL);
  scratch_release(&cs);
  last_input_path = "winograd";
  return 1;
}

/* dx of a depthwise layer of unit strides whose correlation (one phase) takes
 * the planar depthwise path (conv_dw_eligible): that path on the output
 * gradient with each channel's taps reversed, which is the phase's kernel.
 * Returns 0, having done nothing, when it does not. */
static int input_grad_depthwise(const struct conv_spec* s, const struct grad_phase* const p[3],
                                const double* dz, const double* w, double* dx, int threads) {
  for (int i = 0; i < 3; ++i)
    if (s->strides[i] != 1) return 0;
  struct conv_spec t, ks;
  conv_grad_phase_spec(s, p, &t);
  conv_kernel_spec(&t, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  if (!conv_dw_eligible(&t, &geo, ACT_LINEAR)) return 0;
  struct call_scratch cs = {{0}, 0};
  /* reversing every axis of a channel's taps reverses their R order */
  const int64_t taps = t.kernel[0] * t.kernel[1] * t.kernel[2], C = t.channels;
  double* flipped = alloc_elems(&cs, taps * C, sizeof(double));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < taps; ++r) flipped[c * taps + r] = w[c * taps + taps - 1 - r];
  conv_forward_depthwise(&t, dz, flipped, NULL, ACT_LINEAR, dx, threads);
  scratch_release(&cs);
  last_input_path = "depthwise";
  return 1;
}

/* For an input gradient of one phase t holding every tap (unit strides, or
 * strides whose other phases hold no inputs), on the general kernels with
 * geometry geo, the phase's taps tap (R's index of each): the layer's forward
 * weights, when its cache holds them packed for the general kernels in
 * blocks of the same size, with C and F whole blocks and one group (so
 * neither side is depthwise or paired); their blocks are then transposed
 * into the gradient's weights (pack_weights_transposed_*), ptap (R_alloc'd)
 * set to the gradient's tap of each forward tap. NULL otherwise. */
static const void* forward_weights_for_phase(const struct conv_spec* s, SEXP cache,
                                             const struct conv_spec* t,
                                             const struct conv_geometry* geo,
                                             const int64_t* tap, int64_t** ptap) {
  const int64_t taps = s->kernel[0] * s->kernel[1] * s->kernel[2];
  if (t->kernel[0] * t->kernel[1] * t->kernel[2] != taps) return NULL;
  struct conv_spec fks;
  conv_kernel_spec(s, &fks);
  struct conv_geometry fgeo;
  conv_geometry_init(&fks, &fgeo);
  if (s->groups != 1 || geo->reduce || fgeo.reduce || fgeo.patch || geo->fb != fgeo.fb ||
      s->channels % fgeo.fb != 0 || s->filters % fgeo.fb != 0) {
    return NULL;
  }
  const void* fw = cached_packed_weights(cache, s, &fgeo);
  if (fw == NULL) return NULL;
  int64_t* ftap = (int64_t*)R_alloc((size_t)taps, sizeof(int64_t));
  int64_t* phase_of = (int64_t*)R_alloc((size_t)taps, sizeof(int64_t));
  *ptap = (int64_t*)R_alloc((size_t)taps, sizeof(int64_t));
  conv_kernel_taps(s, &fgeo, ftap);
  for (int64_t t = 0; t < taps; ++t) phase_of[tap[t]] = t;
  for (int64_t t = 0; t < taps; ++t) (*ptap)[t] = phase_of[ftap[t]];
  return fw;
}

/* dx through the forward kernels, split by the strides (conv_grad_phase): each
 * phase of input positions is a stride-1 correlation of the output gradient
 * with some of the kernel's taps, flipped and transposed within each group.
 * The output gradient is padded and packed once, wide enough for every phase;
 * each phase runs on a window of it and writes its positions of dx in place. */
static void input_grad_forward(const struct conv_spec* s, const double* dz, const double* w,
                               SEXP cache, double* dx, int threads) {
  last_input_path = "phases";
  struct call_scratch cs = {{0}, 0};
  /* per axis, the phases that have inputs (at most the axis length, however
   * large the stride) and taps; the padding every phase fits in; and whether
   * some inputs get no gradient at all */
  struct grad_phase* ph[3];
  int64_t live[3] = {0, 0, 0}, lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
  int untouched = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t n = s->in[i] < s->strides[i] ? s->in[i] : s->strides[i];
    ph[i] = alloc_elems(&cs, n, sizeof(struct grad_phase));
    for (int64_t j = 0; j < n; ++j) { /* the phase whose first input is j */
      struct grad_phase* p = &ph[i][live[i]];
      conv_grad_phase(s, i, (j + s->pad_lo[i]) % s->strides[i], p);
      if (p->taps == 0) {
        untouched = 1;
        continue;
      }
      /* a negative padding (a phase whose first or last outputs fall in the
       * layer's padding) only moves its window inward */
      lo[i] = p->pad_lo > lo[i] ? p->pad_lo : lo[i];
      hi[i] = p->pad_hi > hi[i] ? p->pad_hi : hi[i];
      ++live[i];
    }
  }
  if (untouched) memset(dx, 0, sizeof(double) * (size_t)(s->batch * s->channels * s->in[0] * s->in[1] * s->in[2]));
  if (live[0] * live[1] * live[2] == 0) { /* no input gets any gradient */
    scratch_release(&cs);
    return;
  }
  const struct grad_phase* first[3] = {&ph[0][0], &ph[1][0], &ph[2][0]};
  if (!untouched && live[0] * live[1] * live[2] == 1 &&
      (input_grad_winograd(s, first, dz, w, dx, threads) ||
       input_grad_depthwise(s, first, dz, w, dx, threads))) {
    scratch_release(&cs);
    return;
  }
  /* the packed output gradient: the spec of a correlation over all of it */
  struct conv_spec wide, wks;
  conv_grad_phase_spec(s, first, &wide);
  for (int i = 0; i < 3; ++i) {
    wide.pad_lo[i] = lo[i];
    wide.pad_hi[i] = hi[i];
    wide.out[i] = (s->in[i] + s->strides[i] - 1) / s->strides[i]; /* the largest phase */
  }
  conv_kernel_spec(&wide, &wks);
  struct conv_geometry wgeo;
  conv_geometry_init(&wks, &wgeo);
  const int64_t F = s->filters, C = s->channels;
  /* scratch rows: the most any phase needs */
  const int64_t phases = live[0] * live[1] * live[2];
  int64_t n_scratch = 0;
  for (int64_t q = 0; q < phases; ++q) {
    const struct grad_phase* p[3];
    struct conv_spec t, ks;
    phase_specs(s, ph, live, q, &wks, p, &t, &ks);
    const int64_t row = conv_scratch_row(&t, &ks);
    n_scratch = row > n_scratch ? row : n_scratch;
  }
  const size_t elt = conv_real_size(s);
  void* scratch = alloc_per_thread(&cs, n_scratch, threads, elt);
  const int64_t taps = s->kernel[0] * s->kernel[1] * s->kernel[2];
  int64_t* tap = alloc_elems(&cs, taps, sizeof(int64_t));
  /* the packed weights of any phase fit in those of all the taps */
  const int64_t n_w = taps * F * (C / s->groups + 2 * wgeo.lanes);
  void* wp = alloc_elems(&cs, n_w, elt);
  void* xp = packed_input(&cs, &wide, &wks, &wgeo, dz, 0, threads);
  int64_t xst[5];
  conv_r_strides(s, 0, xst);
  for (int64_t q = 0; q < phases; ++q) {
    const struct grad_phase* p[3];
    struct conv_spec t, ks;
    phase_specs(s, ph, live, q, &wks, p, &t, &ks);
    struct conv_geometry geo;
    conv_geometry_init(&ks, &geo);
    geo.patch = 0; /* the general kernels, whose packing the driver expects */
    if (conv_packed_weight_length(&geo) > n_w) Rf_error("internal error in ffi_backward.c: phase weights");
    /* the phase's window of the wide padded array: its strides are the wide ones */
    geo.pd = wgeo.pd;
    geo.ph = wgeo.ph;
    geo.pw = wgeo.pw;
    const int64_t off = (((wks.pad_lo[0] - ks.pad_lo[0]) * wgeo.ph + wks.pad_lo[1] - ks.pad_lo[1]) *
                             wgeo.pw + wks.pad_lo[2] - ks.pad_lo[2]) * F;
    /* its positions of dx: first + stride * j along each axis */
    int64_t ost[5];
    double* out = dx;
    for (int i = 0; i < 5; ++i) ost[i] = xst[i];
    for (int i = 0; i < 3; ++i) {
      out += p[i]->first * xst[1 + i];
      ost[1 + i] = xst[1 + i] * s->strides[i];
    }
    struct weight_source src;
    conv_grad_phase_source(s, p, &geo, w, tap, &src);
    int64_t* ptap = NULL;
    const void* fw = phases == 1 ? forward_weights_for_phase(s, cache, &t, &geo, tap, &ptap) : NULL;
    if (fw != NULL) last_input_path = "transposed";
    if (s->dtype == DTYPE_FLOAT32) {
      if (fw != NULL) {
        pack_weights_transposed_f32(taps, C, F, geo.fb, fw, ptap, wp, threads);
      } else {
        pack_weights_f32(&t, &geo, &src, wp, threads);
      }
      conv3d_forward_f32(&t, &ks, &geo, (const float*)xp + off, wp, NULL, ACT_LINEAR, out,
                         ost, scratch, threads, check_user_interrupt);
    } else {
      if (fw != NULL) {
        pack_weights_transposed_f64(taps, C, F, geo.fb, fw, ptap, wp, threads);
      } else {
        pack_weights_f64(&t, &geo, &src, wp, threads);
      }
      conv3d_forward_f64(&t, &ks, &geo, (const double*)xp + off, wp, NULL, ACT_LINEAR, out,
                         ost, scratch, threads, check_user_interrupt);
    }
  }
  scratch_release(&cs);
}

/* The kernel gradient on the in-place path (conv_kernel_grad_direct): the
 * input padded and packed once, then conv3d_kernel_grad_direct_*. */
static void kernel_grad_in_place(const struct conv_spec* s, const double* x, const double* dz,
                                 double* dw, int threads) {
  struct call_scratch cs = {{0}, 0};
  struct conv_spec ks;
  conv_kernel_spec(s, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  int64_t n_dzt, n_rows, n_local;
  conv_kernel_grad_direct_sizes(s, &ks, threads, &n_dzt, &n_rows, &n_local);
  const size_t elt = conv_real_size(s);
  void* dzt = alloc_elems(&cs, n_dzt, elt);
  int64_t* xrow = alloc_elems(&cs, n_rows, sizeof(int64_t));
  double* local = alloc_elems(&cs, n_local, sizeof(double));
  int64_t* tap = alloc_elems(&cs, s->kernel[0] * s->kernel[1] * s->kernel[2], sizeof(int64_t));
  conv_kernel_taps(s, &geo, tap);
  void* xp = packed_input(&cs, s, &ks, NULL, x, 0, threads);
  if (s->dtype == DTYPE_FLOAT32) {
    conv3d_kernel_grad_direct_f32(s, &ks, xp, dz, tap, dw, dzt, xrow, local, threads,
                                  check_user_interrupt);
  } else {
    conv3d_kernel_grad_direct_f64(s, &ks, xp, dz, tap, dw, dzt, xrow, local, threads,
                                  check_user_interrupt);
  }
  scratch_release(&cs);
}

/* The kernel gradient of a depthwise layer (conv3d_depthwise_kernel_grad_*):
 * the input padded and the output gradient packed, channels last. */
static void depthwise_kernel_grad(const struct conv_spec* s, const double* x, const double* dz,
                                  double* dw, int threads) {
  struct call_scratch cs = {{0}, 0};
  struct conv_spec ks, zs = *s, zks;
  conv_kernel_spec(s, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  for (int i = 0; i < 3; ++i) { /* dz as an unpadded input, in the same order */
    zs.in[i] = s->out[i];
    zs.pad_lo[i] = zs.pad_hi[i] = 0;
  }
  conv_kernel_spec_like(&zs, &ks, &zks);
  const struct kernel_table* kt = cpu_kernels();
  const int64_t lanes = conv_lanes(s);
  int64_t* xrow = alloc_elems(&cs, s->batch * ks.out[0] * ks.out[1], sizeof(int64_t));
  double* local = alloc_per_thread(&cs, kt->dwg_nt * lanes, threads, sizeof(double));
  int64_t* tap = alloc_elems(&cs, s->kernel[0] * s->kernel[1] * s->kernel[2], sizeof(int64_t));
  conv_kernel_taps(s, &geo, tap);
  /* a vector of slack each: the last channel vector may run past C */
  void* xp = packed_input(&cs, s, &ks, NULL, x, lanes, threads);
  void* dzp = packed_input(&cs, &zs, &zks, NULL, dz, lanes, threads);
  if (s->dtype == DTYPE_FLOAT32) {
    conv3d_depthwise_kernel_grad_f32(s, &ks, xp, dzp, tap, dw, xrow, local, threads,
                                     check_user_interrupt);
  } else {
    conv3d_depthwise_kernel_grad_f64(s, &ks, xp, dzp, tap, dw, xrow, local, threads,
                                     check_user_interrupt);
  }
  scratch_release(&cs);
}

/* The kernel gradient of a depthwise layer on the planar depthwise path
 * (conv3d_depthwise_kernel_grad_planes_*): each channel's volume in place. */
static void depthwise_planes_kernel_grad(const struct conv_spec* s, const double* x,
                                         const double* dz, double* dw, int threads) {
  struct call_scratch cs = {{0}, 0};
  struct conv_dw_geometry dg;
  conv_dw_geometry_init(s, &dg);
  const int64_t planes = conv_dw_slab_planes(s, &dg, threads);
  void* scratch = alloc_per_thread(&cs, conv_dw_grad_scratch(s, &dg, planes), threads,
                                   conv_real_size(s));
  double* local = alloc_per_thread(&cs, conv_dw_grad_local(s), threads, sizeof(double));
  int64_t* off = alloc_elems(&cs, s->kernel[0] * s->kernel[1] * s->kernel[2], sizeof(int64_t));
  if (s->dtype == DTYPE_FLOAT32) {
    conv3d_depthwise_kernel_grad_planes_f32(s, x, dz, dw, off, scratch, local, threads,
                                            check_user_interrupt);
  } else {
    conv3d_depthwise_kernel_grad_planes_f64(s, x, dz, dw, off, scratch, local, threads,
                                            check_user_interrupt);
  }
  scratch_release(&cs);
}

/* The kernel gradient of any other layer with at least 8 filters per group:
 * a GEMM on gathered patch rows (conv3d_kernel_grad_gemm_*). */
static void gathered_kernel_grad(const struct conv_spec* s, const double* x, const double* dz,
                                 double* dw, int threads) {
  struct call_scratch cs = {{0}, 0};
  int64_t n_scratch, n_acc;
  conv_kernel_grad_sizes(s, threads, &n_scratch, &n_acc);
  double* acc = alloc_elems(&cs, n_acc, sizeof(double));
  void* scratch = alloc_elems(&cs, n_scratch, conv_real_size(s));
  if (s->dtype == DTYPE_FLOAT32) {
    conv3d_kernel_grad_gemm_f32(s, x, dz, dw, scratch, acc, threads, check_user_interrupt);
  } else {
    conv3d_kernel_grad_gemm_f64(s, x, dz, dw, scratch, acc, threads, check_user_interrupt);
  }
  scratch_release(&cs);
}

/* The gradients of a patch layer (conv_geometry.patch; dw, db, dx: each NULL
 * when not wanted): both GEMMs in one pass over the output positions
 * (conv3d_patch_backward_*), on the R arrays, with the transposed kernel for
 * dx; inputs under no patch get 0. A float32 layer's dz is staged once as
 * floats, its bias gradient summed on the way, and the GEMMs read those
 * instead of R's doubles. */
static void patch_gradients(const struct conv_spec* s, const double* x, const double* dz,
                            const double* w, double* dw, double* db, double* dx, int threads) {
  struct call_scratch cs = {{0}, 0};
  const int64_t K = s->kernel[0] * s->kernel[1] * s->kernel[2] * s->channels, F = s->filters;
  const size_t elt = conv_real_size(s);
  const int f32 = s->dtype == DTYPE_FLOAT32;
  const void* dz_real = dz; /* dz in the layer's type */
  if (f32) {
    float* staged = alloc_elems(&cs, s->batch * s->out[0] * s->out[1] * s->out[2] * F,
                                sizeof(float));
    conv3d_stage_output_grad_f32(s, dz, staged, db, threads);
    dz_real = staged;
  } else if (db) {
    conv3d_kernel_grad(s, x, dz, NULL, db, threads, check_user_interrupt);
  }
  if (!dw && !dx) {
    scratch_release(&cs);
    return;
  }
  int64_t* koff = alloc_elems(&cs, K, sizeof(int64_t));
  conv_patch_offsets(s, koff);
  void* wpt = NULL;
  if (dx) {
    int covered = 1;
    for (int i = 0; i < 3; ++i)
      covered &= s->kernel[i] == s->strides[i] && s->out[i] * s->strides[i] == s->in[i];
    if (!covered) {
      memset(dx, 0, sizeof(double) * (size_t)(s->batch * s->in[0] * s->in[1] * s->in[2] *
                                              s->channels));
    }
    /* the transposed kernel, packed as the patch GEMM's weights of a 1x1x1
     * layer with F channels and K filters: W[k, f] sits at w[k + K * f] */
    struct conv_spec t = *s, tks;
    t.channels = F;
    t.filters = K;
    for (int i = 0; i < 3; ++i) t.kernel[i] = 1;
    conv_kernel_spec(&t, &tks);
    struct conv_geometry geo;
    conv_geometry_init(&tks, &geo);
    if (!geo.patch) Rf_error("internal error in ffi_backward.c: transposed patch layer");
    const struct weight_source src = {w, NULL, K, 1, 0, 1};
    wpt = alloc_elems(&cs, conv_packed_weight_length(&geo), elt);
    if (f32) {
      pack_weights_f32(&t, &geo, &src, wpt, threads);
    } else {
      pack_weights_f64(&t, &geo, &src, wpt, threads);
    }
    const int writes = conv_patch_dx_writes(s, dx);
    last_input_path = writes == PATCH_DX_ROWS ? "patch rows" : writes == PATCH_DX_WOVEN ? "patch woven"
                                                                                         : "patch";
  }
  int64_t mb;
  const int64_t per_thread = conv_patch_backward_panel(s, threads, dw != NULL, dx != NULL, &mb);
  void* panels = alloc_per_thread(&cs, per_thread, threads, elt);
  double* vacc = dw ? alloc_elems(&cs, conv_patch_kernel_grad_vacc(s), sizeof(double)) : NULL;
  if (f32) {
    conv3d_patch_backward_f32(s, koff, x, dz_real, wpt, dw, dx, panels, vacc, threads,
                              check_user_interrupt);
  } else {
    conv3d_patch_backward_f64(s, koff, x, dz_real, wpt, dw, dx, panels, vacc, threads,
                              check_user_interrupt);
  }
  scratch_release(&cs);
}

void conv_input_gradient(const struct conv_spec* s, const double* dz, const double* w, SEXP cache,
                         double* dx, int threads) {
  if (is_patch_layer(s)) {
    patch_gradients(s, NULL, dz, w, NULL, NULL, dx, threads); /* x is read for dw only */
  } else {
    input_grad_forward(s, dz, w, cache, dx, threads);
  }
}

/* The kernel gradient (dw, or NULL: not wanted) of any layer but a patch
 * layer (patch_gradients) by the path that serves the layer best, and the
 * bias gradient (db, or NULL) by direct loops: depthwise layers run each
 * channel's volume in place (the planar depthwise path's layers) or vectors
 * across the channels; groups of whole channel blocks the in-place GEMM,
 * whatever their filters; other groups of at least 8 filters the gathered
 * GEMM; the rest direct loops (their few filters would waste the GEMM
 * tiles). */
static void kernel_and_bias_grad(const struct conv_spec* s, const double* x, const double* dz,
                                 double* dw, double* db, int threads) {
  struct conv_spec ks;
  conv_kernel_spec(s, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  void (*gemm)(const struct conv_spec*, const double*, const double*, double*, int) = NULL;
  if (conv_dw_grad_eligible(s)) { /* one input channel per group */
    gemm = depthwise_planes_kernel_grad;
  } else if (geo.depthwise) {
    gemm = depthwise_kernel_grad;
  } else if (conv_kernel_grad_direct(s)) {
    gemm = kernel_grad_in_place;
  } else if (s->filters / s->groups >= 8) {
    gemm = gathered_kernel_grad;
  }
  conv3d_kernel_grad(s, x, dz, gemm ? NULL : dw, db, threads, check_user_interrupt);
  if (dw && gemm) gemm(s, x, dz, dw, threads);
}

/* Returns list(input, kernel, bias); input is computed only when need_input
 * and kernel only when need_kernel (NULL otherwise). `output`: NULL, or the
 * layer's output for x (a training step's), from which the ReLU family's
 * slopes follow without a second forward convolution. */
SEXP ffi_conv3d_gradients(SEXP cfg, SEXP x, SEXP weights, SEXP activation, SEXP built_channels,
                          SEXP cache, SEXP dy, SEXP need_input, SEXP need_kernel, SEXP output) {
  int n_prot = 0;
  const int act = Rf_asInteger(activation);
  struct conv_call call;
  conv_call_prepare(cfg, x, weights, built_channels, &call, &n_prot);
  const struct conv_spec s = call.s;
  x = call.x;
  SEXP kernel = call.kernel;
  dy = checked_gradient(dy, &s, &n_prot);
  int threads = conv3d_thread_count();
  const R_xlen_t n_out = XLENGTH(dy);
  const int from_output = act != ACT_LINEAR && relu_family_activation(act) &&
                          TYPEOF(output) == REALSXP && XLENGTH(output) == n_out;
  /* z: the pre-activation output, needed only for the activation's derivative */
  SEXP z = R_NilValue;
  if (act != ACT_LINEAR && !from_output) {
    z = PROTECT(conv_call_forward(&call, ACT_LINEAR, cache));
    ++n_prot;
  }

  /* dz: the gradient with respect to the pre-activation output (dy itself when
   * the activation is linear; it is only read) */
  const double* dz = REAL(dy);
  if (act != ACT_LINEAR && !from_output) {
    int64_t odims[5];
    output_dims(&s, odims);
    const int64_t last = odims[4]; /* softmax runs along the output's last axis */
    conv_activation_backward(act, REAL(z), REAL(dy), REAL(z), n_out, last,
                             n_out / (last > 0 ? last : 1), threads);
    dz = REAL(z); /* z is this call's own array: overwritten in place */
  }

  const char* names[] = {"input", "kernel", "bias", ""};
  SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
  ++n_prot;
  double* dw = NULL;
  if (Rf_asLogical(need_kernel) == TRUE) {
    SEXP k = PROTECT(alloc_result(XLENGTH(kernel)));
    Rf_setAttrib(k, R_DimSymbol, Rf_getAttrib(kernel, R_DimSymbol));
    SET_VECTOR_ELT(out, 1, k);
    UNPROTECT(1);
    dw = REAL(k);
    advise_huge_pages(dw, sizeof(double) * (size_t)XLENGTH(k));
  }
  double* db = NULL;
  if (s.use_bias) {
    SEXP b = alloc_result((R_xlen_t)s.filters);
    SET_VECTOR_ELT(out, 2, b);
    db = REAL(b);
  }
  double* dx = NULL;
  if (Rf_asLogical(need_input) == TRUE) {
    SEXP d = PROTECT(alloc_result(XLENGTH(x)));
    Rf_setAttrib(d, R_DimSymbol, Rf_getAttrib(x, R_DimSymbol));
    SET_VECTOR_ELT(out, 0, d);
    UNPROTECT(1);
    dx = REAL(d);
    advise_huge_pages(dx, sizeof(double) * (size_t)XLENGTH(d));
  }
  /* from the output, dz goes to scratch, given back at once for the next call
   * (allocated last: scratch_release unprotects the latest protections) */
  struct call_scratch cs = {{0}, 0};
  if (from_output) {
    double* buf = alloc_elems(&cs, n_out, sizeof(double));
    relu_family_backward(act, REAL(output), REAL(dy), buf, n_out, threads);
    dz = buf;
  }
  if (n_out == 0) {
    if (dw) memset(dw, 0, sizeof(double) * (size_t)XLENGTH(kernel));
    if (db) memset(db, 0, sizeof(double) * (size_t)s.filters);
    if (dx) memset(dx, 0, sizeof(double) * (size_t)XLENGTH(x));
  } else {
    struct conv_spec fs; /* the kernels' view of the layer (conv_fold_batch) */
    conv_fold_batch(&s, &fs);
    if (is_patch_layer(&fs)) {
      patch_gradients(&fs, REAL(x), dz, REAL(kernel), dw, db, dx, threads);
    } else {
      kernel_and_bias_grad(&fs, REAL(x), dz, dw, db, threads);
      if (dx) input_grad_forward(&fs, dz, REAL(kernel), cache, dx, threads);
    }
  }
  scratch_release(&cs);
  UNPROTECT(n_prot);
  return out;
}
