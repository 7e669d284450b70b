/* R entry points of the convolution: unpack SEXPs, validate, convert, run the
 * driver, convert back. The only convolution code that touches the R API. All
 * scratch memory is owned by external pointers (alloc_elems), so an error or
 * an interrupt leaks nothing. */
#include "validate.h"
#include "ffi.h"
#include "omp_shim.h"
#include <time.h>
#include <string.h>

static const char* const problem_names[PROBLEM_COUNT] = {
  "none", "not_numeric", "scalar_int", "tuple", "padding", "data_format", "dtype", "flag",
  "strides_dilation", "filters_groups", "input_rank", "input_dim", "channels_unknown",
  "channels_groups", "channels_built", "output_empty", "size_overflow", "weight_shape",
  "weight_count", "input_not_numeric", "kernel_overflow", "weights_overflow",
  "window_overflow", "output_padding", "transpose_length",
  "transpose_overflow"};

/* Hands a problem to R/errors.R, which words it and signals a classed condition. */
void conv3d_signal(const char* problem, const char* arg, SEXP value, int detail, SEXP expected) {
  PROTECT(value);
  PROTECT(expected);
  SEXP ns = PROTECT(R_FindNamespace(Rf_mkString("conv3d")));
  /* each argument protected while the next one is allocated */
  SEXP problem_str = PROTECT(Rf_mkString(problem)), arg_str = PROTECT(Rf_mkString(arg));
  SEXP detail_int = PROTECT(Rf_ScalarInteger(detail));
  SEXP call = PROTECT(Rf_lang6(Rf_install("signal_problem"), problem_str, arg_str, value,
                               detail_int, expected));
  Rf_eval(call, ns);
  UNPROTECT(7);
  Rf_error("internal error in ffi_conv.c: signal_problem() returned");
}

void conv3d_signal_validation(const struct validation* v) {
  conv3d_signal(problem_names[v->problem], v->arg, v->value, v->axis, v->expected);
}

static struct conv_spec validated_spec(SEXP cfg, SEXP input_shape, SEXP built_channels) {
  struct conv_spec spec;
  struct validation v;
  conv_validate(cfg, input_shape, built_channels, &spec, &v);
  if (v.problem != PROBLEM_NONE) conv3d_signal_validation(&v);
  return spec;
}

static void kernel_dims(const struct conv_spec* s, int64_t dims[5]) {
  dims[0] = s->kernel[0]; dims[1] = s->kernel[1]; dims[2] = s->kernel[2];
  dims[3] = s->channels / s->groups; dims[4] = s->filters;
}

static SEXP as_double_array(SEXP x, int* n_prot) {
  if (TYPEOF(x) == REALSXP) return x;
  SEXP out = PROTECT(Rf_coerceVector(x, REALSXP));
  ++*n_prot;
  return out;
}

/* A layer's spec as R sees it; built: whether its input shape is known;
 * out_dims: its output dims; bias_len: its bias's length (0: none);
 * channels: its input channels. */
static SEXP spec_list(const struct conv_spec* s, int built, const int64_t out_dims[5],
                      int64_t bias_len, int64_t channels) {
  const char* names[] = {"output_shape", "kernel_shape", "bias_shape", "channels",
                         "pad_before", "pad_after", "n_params", ""};
  SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
  int64_t dims[5];
  SET_VECTOR_ELT(out, 0, built ? int64_vector(out_dims, 5) : R_NilValue);
  kernel_dims(s, dims);
  SET_VECTOR_ELT(out, 1, built ? int64_vector(dims, 5) : R_NilValue);
  SET_VECTOR_ELT(out, 2, bias_len > 0 ? int64_vector(&bias_len, 1) : R_NilValue);
  SET_VECTOR_ELT(out, 3, built ? Rf_ScalarReal((double)channels) : R_NilValue);
  SET_VECTOR_ELT(out, 4, int64_vector(s->pad_lo, 3));
  SET_VECTOR_ELT(out, 5, int64_vector(s->pad_hi, 3));
  SET_VECTOR_ELT(out, 6, built ? Rf_ScalarReal((double)s->n_params) : R_NilValue);
  UNPROTECT(1);
  return out;
}

SEXP ffi_conv3d_spec(SEXP cfg, SEXP input_shape, SEXP built_channels) {
  struct conv_spec s = validated_spec(cfg, input_shape, built_channels);
  int64_t dims[5];
  output_dims(&s, dims);
  return spec_list(&s, s.channels >= 0, dims, s.use_bias ? s.filters : 0, s.channels);
}

/* weights: list(kernel) or list(kernel, bias) of these dims (bias_len 0: no
 * bias). */
static void check_weight_list(const int64_t kernel[5], int64_t bias_len, SEXP weights) {
  struct validation v = {PROBLEM_NONE, NULL, R_NilValue, -1, R_NilValue};
  const int count = 1 + (bias_len > 0);
  if (TYPEOF(weights) != VECSXP || XLENGTH(weights) != count) {
    conv3d_signal(problem_names[PROBLEM_WEIGHT_COUNT], "weights", weights, count, R_NilValue);
  }
  conv_check_weight(VECTOR_ELT(weights, 0), "kernel", kernel, 5, &v);
  if (bias_len > 0) conv_check_weight(VECTOR_ELT(weights, 1), "bias", &bias_len, 1, &v);
  if (v.problem != PROBLEM_NONE) conv3d_signal_validation(&v);
}

/* weights checked against a built spec. */
static void check_weights(const struct conv_spec* s, SEXP weights) {
  int64_t dims[5];
  kernel_dims(s, dims);
  check_weight_list(dims, s->use_bias ? s->filters : 0, weights);
}

SEXP ffi_conv3d_check_weights(SEXP cfg, SEXP input_shape, SEXP weights) {
  struct conv_spec s = validated_spec(cfg, input_shape, R_NilValue);
  check_weights(&s, weights);
  return R_NilValue;
}

/* A transposed layer (layer_conv_3d_transpose()): the convolution it is the
 * adjoint of (conv_transpose_validate), *use_bias its own. */
static struct conv_spec validated_transpose_spec(SEXP cfg, SEXP input_shape,
                                                 SEXP built_channels, int* use_bias) {
  struct conv_spec spec;
  struct validation v;
  conv_transpose_validate(cfg, input_shape, built_channels, &spec, use_bias, &v);
  if (v.problem != PROBLEM_NONE) conv3d_signal_validation(&v);
  return spec;
}

/* The transposed layer's output dims: its convolution's input dims. */
static void transposed_output_dims(const struct conv_spec* s, int64_t dims[5]) {
  dims[0] = s->batch;
  const int first = s->layout == LAYOUT_CHANNELS_LAST ? 1 : 2;
  dims[s->layout == LAYOUT_CHANNELS_LAST ? 4 : 1] = s->channels;
  for (int i = 0; i < 3; ++i) dims[first + i] = s->in[i];
}

/* The transposed layer's kernel (its convolution's) and bias (its output
 * channels, the convolution's input channels). */
static void check_transpose_weights(const struct conv_spec* s, int use_bias, SEXP weights) {
  int64_t dims[5];
  kernel_dims(s, dims);
  check_weight_list(dims, use_bias ? s->channels : 0, weights);
}

SEXP ffi_conv3d_transpose_spec(SEXP cfg, SEXP input_shape, SEXP built_channels) {
  int use_bias;
  struct conv_spec s = validated_transpose_spec(cfg, input_shape, built_channels, &use_bias);
  const int built = s.channels >= 0; /* unbuilt: s holds the arguments as given */
  int64_t dims[5];
  transposed_output_dims(&s, dims);
  return spec_list(&s, built, dims, use_bias ? (built ? s.channels : s.filters) : 0, s.filters);
}

SEXP ffi_conv3d_transpose_check_weights(SEXP cfg, SEXP input_shape, SEXP weights) {
  int use_bias;
  struct conv_spec s = validated_transpose_spec(cfg, input_shape, R_NilValue, &use_bias);
  check_transpose_weights(&s, use_bias, weights);
  return R_NilValue;
}

/* bias added along the channel axis of an array of the convolution's input
 * dims, in the layer's precision. */
static void add_channel_bias(const struct conv_spec* s, double* out, const double* bias,
                             int threads) {
  const int64_t C = s->channels, N = s->batch, V = s->in[0] * s->in[1] * s->in[2];
  const int f32 = s->dtype == DTYPE_FLOAT32, last = s->layout == LAYOUT_CHANNELS_LAST;
  /* channels_last: a run of N x V per channel; channels_first: N per (c, v) */
  const int64_t run = last ? N * V : N, runs = C * (last ? 1 : V);
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < runs; ++r) {
    const double b = bias[r % C];
    double* o = out + r * run;
    if (f32) {
      for (int64_t i = 0; i < run; ++i) o[i] = (double)((float)o[i] + (float)b);
    } else {
      for (int64_t i = 0; i < run; ++i) o[i] += b;
    }
  }
}

/* The transposed convolution of x: the input gradient of its convolution
 * with x as the output gradient (conv_input_gradient), plus the bias. */
SEXP ffi_conv3d_transpose(SEXP cfg, SEXP x, SEXP weights, SEXP built_channels, SEXP cache) {
  int n_prot = 0, use_bias;
  SEXP shape = PROTECT(input_shape_of(x));
  ++n_prot;
  const struct conv_spec s = validated_transpose_spec(cfg, shape, built_channels, &use_bias);
  check_transpose_weights(&s, use_bias, weights);
  x = as_double_array(x, &n_prot);
  SEXP kernel = as_double_array(VECTOR_ELT(weights, 0), &n_prot);
  SEXP bias = use_bias ? as_double_array(VECTOR_ELT(weights, 1), &n_prot) : R_NilValue;
  int64_t dims[5];
  transposed_output_dims(&s, dims);
  SEXP out = PROTECT(alloc_array(dims));
  ++n_prot;
  const int threads = conv3d_thread_count();
  if (XLENGTH(out) > 0) { /* no samples: nothing to compute */
    advise_huge_pages(REAL(out), sizeof(double) * (size_t)XLENGTH(out));
    struct conv_spec fs; /* the kernels' view of the layer */
    conv_fold_batch(&s, &fs);
    conv_input_gradient(&fs, REAL(x), REAL(kernel), cache, REAL(out), threads);
    if (use_bias) add_channel_bias(&s, REAL(out), REAL(bias), threads);
  }
  UNPROTECT(n_prot);
  return out;
}

/* Seconds spent in the phases of the last forward call: packing the input and
 * weights, and the kernels with their fused epilogue (bias, activation, writing
 * the R array), for the benchmark's end-to-end vs kernel-alone comparison. */
static double last_timing[2];
/* and the path it took, whether it wrote its output past the caches and
 * whether from the tiles' registers (tests check that their shapes reach
 * each path) */
static const char* last_path = "none";
static int last_streamed = 0, last_direct = 0;

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

SEXP ffi_last_path(void) { return Rf_mkString(last_path); }
SEXP ffi_last_streamed(void) { return Rf_ScalarLogical(last_streamed); }
SEXP ffi_last_direct(void) { return Rf_ScalarLogical(last_direct); }
SEXP ffi_planar_allow(SEXP allow) {
  return Rf_ScalarLogical(conv_planar_allow(Rf_asLogical(allow) == TRUE));
}
SEXP ffi_planar_winograd_rows(SEXP max_rows) {
  return Rf_ScalarInteger(conv_planar_winograd_rows(Rf_asInteger(max_rows)));
}

SEXP ffi_last_timing(void) {
  SEXP out = PROTECT(Rf_allocVector(REALSXP, 2));
  for (int i = 0; i < 2; ++i) REAL(out)[i] = last_timing[i];
  UNPROTECT(1);
  return out;
}

/* Packed weights cached on the layer (an environment holding `packed`), reused
 * while the layer's weights, the kernel tier and the geometry stay the same. The
 * key records everything the packing depends on. */
struct packed_key {
  int dtype, lanes, nv, depthwise, reduce, patch, planar, winograd, axes[3];
  int64_t planar_m, planar_points, kernel[3], cg, fg, groups, fb, n_weights;
  const void* table;
};
struct packed_weights {
  struct packed_key key;
  void* weights; /* n_weights elements of the layer's type */
  void* bias;    /* filters elements (patch layers: whole GEMM blocks of them,
                    zero past the filters), or NULL */
  int finite;    /* every weight of R's kernel finite (checked for the
                    Winograd transforms only: direct_sums_only) */
};

/* Whether every one of the n values at v is finite. */
static int all_finite(const double* v, R_xlen_t n) {
  for (R_xlen_t i = 0; i < n; ++i)
    if (!R_FINITE(v[i])) return 0;
  return 1;
}

static void packed_finalize(SEXP ptr) {
  struct packed_weights* p = R_ExternalPtrAddr(ptr);
  if (p == NULL) return;
  free(p->weights);
  free(p->bias);
  free(p);
  R_ClearExternalPtr(ptr);
}

static struct packed_key packed_key_for(const struct conv_spec* s, const struct conv_geometry* g) {
  struct packed_key k;
  memset(&k, 0, sizeof k);
  k.dtype = s->dtype;
  k.lanes = g->lanes;
  k.nv = g->nv;
  k.depthwise = g->depthwise;
  k.reduce = g->reduce;
  for (int i = 0; i < 3; ++i) {
    k.axes[i] = g->axes[i];
    k.kernel[i] = s->kernel[i];
  }
  k.cg = g->cg;
  k.fg = g->fg;
  k.groups = g->groups;
  k.fb = g->fb;
  k.n_weights = conv_packed_weight_length(g);
  k.patch = g->patch;
  k.planar = g->planar;
  k.planar_m = g->planar_m;
  k.planar_points = g->planar_points;
  k.winograd = g->winograd;
  k.table = cpu_kernels();
  return k;
}

/* The packed weights the cache (an environment) holds for key, or NULL. */
static struct packed_weights* cached_for(SEXP cache, const struct packed_key* key) {
  SEXP ptr = Rf_findVarInFrame(cache, Rf_install("packed"));
  if (TYPEOF(ptr) != EXTPTRSXP) return NULL;
  struct packed_weights* cached = R_ExternalPtrAddr(ptr);
  return cached != NULL && memcmp(&cached->key, key, sizeof *key) == 0 ? cached : NULL;
}

/* The packed weights for this call: from the cache when its key matches, else
 * packed now (and cached when there is a cache). */
static const struct packed_weights* packed_for(SEXP cache, const struct conv_spec* s,
                                               const struct conv_geometry* g, SEXP kernel,
                                               SEXP bias) {
  const struct packed_key key = packed_key_for(s, g);
  if (TYPEOF(cache) != ENVSXP) Rf_error("internal error in ffi_conv.c: the weight cache is not an environment");
  const struct packed_weights* cached = cached_for(cache, &key);
  if (cached != NULL) return cached;
  size_t elt = conv_real_size(s);
  struct packed_weights* p = calloc(1, sizeof *p);
  if (p == NULL) Rf_error("cannot allocate the packed weights");
  SEXP ptr = PROTECT(R_MakeExternalPtr(p, R_NilValue, R_NilValue));
  R_RegisterCFinalizerEx(ptr, packed_finalize, TRUE); /* frees p on any later error */
  p->key = key;
  p->weights = malloc((size_t)(key.n_weights > 0 ? key.n_weights : 1) * elt);
  /* the patch GEMM adds the bias of whole blocks of filters */
  const int64_t n_bias = g->patch ? conv_patch_fpad(g) : s->filters;
  p->bias = s->use_bias ? calloc((size_t)n_bias, elt) : NULL;
  if (p->weights == NULL || (s->use_bias && p->bias == NULL)) {
    Rf_error("cannot allocate %.0f bytes for the packed weights", (double)key.n_weights * elt);
  }
  p->finite = !(g->winograd || g->planar_points > 0) ||
              all_finite(REAL(kernel), XLENGTH(kernel));
  struct weight_source src;
  int64_t* tap = (int64_t*)R_alloc((size_t)(s->kernel[0] * s->kernel[1] * s->kernel[2]), sizeof(int64_t));
  weight_source_layer(s, g, REAL(kernel), tap, &src);
  const int threads = conv3d_thread_count();
  if (s->dtype == DTYPE_FLOAT32) {
    pack_weights_f32(s, g, &src, p->weights, threads);
    for (int64_t f = 0; s->use_bias && f < s->filters; ++f) ((float*)p->bias)[f] = (float)REAL(bias)[f];
  } else {
    pack_weights_f64(s, g, &src, p->weights, threads);
    if (s->use_bias) memcpy(p->bias, REAL(bias), (size_t)s->filters * sizeof(double));
  }
  Rf_defineVar(Rf_install("packed"), ptr, cache); /* the cache keeps it alive; the old one is collected */
  UNPROTECT(1);
  return p;
}

const void* cached_packed_weights(SEXP cache, const struct conv_spec* s,
                                  const struct conv_geometry* g) {
  if (TYPEOF(cache) != ENVSXP) return NULL;
  const struct packed_key key = packed_key_for(s, g);
  const struct packed_weights* p = cached_for(cache, &key);
  return p != NULL ? p->weights : NULL;
}

void* packed_input(struct call_scratch* cs, const struct conv_spec* s,
                   const struct conv_spec* ks, const struct conv_geometry* geo,
                   const double* x, int64_t slack, int threads) {
  int64_t* src = NULL;
  if (geo != NULL && geo->nv == 3) { /* paired groups read interleaved channels */
    src = alloc_elems(cs, geo->c, sizeof(int64_t));
    conv_pair_perm(geo, src);
  }
  int64_t n = s->batch * s->channels;
  for (int i = 0; i < 3; ++i) n *= ks->in[i] + ks->pad_lo[i] + ks->pad_hi[i];
  const size_t elt = conv_real_size(s);
  char* xp = alloc_elems(cs, n + slack, elt);
  advise_huge_pages(xp, (size_t)n * elt);
  memset(xp + (size_t)n * elt, 0, (size_t)slack * elt);
  if (s->dtype == DTYPE_FLOAT32) {
    pack_input_f32(s, ks, src, x, (float*)xp, threads);
  } else {
    pack_input_f64(s, ks, src, x, (double*)xp, threads);
  }
  return xp;
}

/* *nonfinite (when not NULL) |= any of the threads' flags. */
static void report_nonfinite(const int* flags, int threads, int* nonfinite) {
  for (int i = 0; nonfinite != NULL && i < threads; ++i) *nonfinite |= flags[i];
}

/* The general forward path on packed weights: pads and packs the R input x
 * (channels interleaved for paired groups), runs the kernels and writes the R
 * output; the planar path's threads pack the planes they read themselves.
 * Interruptible; scratch is freed on every path. Returns the seconds spent
 * packing the input before the kernels (0 for the planar path). The
 * Winograd path and the planar path's Winograd rows set *nonfinite (when not
 * NULL) when they met a value that is not finite, and the output is then to
 * be recomputed without them. */
double conv_forward_general(const struct conv_spec* s, const struct conv_spec* ks,
                            const struct conv_geometry* geo, const double* x, const void* wp,
                            const void* bias, int act, double* out, int threads,
                            int* nonfinite) {
  struct call_scratch cs = {{0}, 0};
  const double t0 = seconds_now();
  const size_t elt = conv_real_size(s);
  /* per thread: whether the Winograd transforms met a value that is not finite */
  int* flags = alloc_elems(&cs, threads, sizeof(int));
  memset(flags, 0, sizeof(int) * (size_t)threads);
  if (geo->planar) { /* the threads pack the input planes they read: no packing phase */
    int64_t n_index;
    const int64_t ring_len = conv_planar_ring(ks, geo, &n_index);
    void* scratch = alloc_per_thread(&cs, conv_planar_scratch(s, ks, geo), threads, elt);
    void* ring = alloc_per_thread(&cs, ring_len, threads, elt);
    int64_t* index = alloc_per_thread(&cs, n_index, threads, sizeof(int64_t));
    if (s->dtype == DTYPE_FLOAT32) {
      conv3d_forward_planar_f32(s, ks, geo, x, wp, bias, act, out, ring, index, scratch, flags,
                                threads, check_user_interrupt);
    } else {
      conv3d_forward_planar_f64(s, ks, geo, x, wp, bias, act, out, ring, index, scratch, flags,
                                threads, check_user_interrupt);
    }
    report_nonfinite(flags, threads, nonfinite);
    scratch_release(&cs);
    return 0.0;
  }
  if (geo->winograd) { /* on a padded copy that holds whole tiles */
    struct conv_spec ws;
    conv_winograd_spec(ks, &ws);
    void* scratch = alloc_per_thread(&cs, conv_winograd_scratch(&ws, geo), threads, elt);
    void* xp = packed_input(&cs, s, &ws, geo, x, 0, threads);
    const double packing = seconds_now() - t0;
    if (s->dtype == DTYPE_FLOAT32) {
      conv3d_winograd_f32(s, &ws, geo, xp, wp, bias, act, out, scratch, flags, threads,
                          check_user_interrupt);
    } else {
      conv3d_winograd_f64(s, &ws, geo, xp, wp, bias, act, out, scratch, flags, threads,
                          check_user_interrupt);
    }
    report_nonfinite(flags, threads, nonfinite);
    scratch_release(&cs);
    return packing;
  }
  void* scratch = alloc_per_thread(&cs, conv_scratch_row(s, ks), threads, elt);
  void* xp = packed_input(&cs, s, ks, geo, x, 0, threads);
  const double packing = seconds_now() - t0;
  if (s->dtype == DTYPE_FLOAT32) {
    conv3d_forward_f32(s, ks, geo, xp, wp, bias, act, out, NULL, scratch, threads,
                       check_user_interrupt);
  } else {
    conv3d_forward_f64(s, ks, geo, xp, wp, bias, act, out, NULL, scratch, threads,
                       check_user_interrupt);
  }
  scratch_release(&cs);
  return packing;
}

/* The planar depthwise path (conv_dw_eligible) on R's arrays: x, R's kernel
 * (each channel's taps in R's order) and bias (or NULL). Interruptible;
 * scratch is freed on every path. */
void conv_forward_depthwise(const struct conv_spec* s, const double* x, const double* kernel,
                            const double* bias, int act, double* out, int threads) {
  struct call_scratch cs = {{0}, 0};
  struct conv_dw_geometry g;
  conv_dw_geometry_init(s, &g);
  /* conv_dw_eligible bounds a thread's scratch: no overflow */
  const int64_t per_thread = conv_dw_scratch(s, &g, conv_dw_slab_planes(s, &g, threads));
  void* scratch = alloc_per_thread(&cs, per_thread, threads, conv_real_size(s));
  if (s->dtype == DTYPE_FLOAT32) {
    conv3d_depthwise_planes_f32(s, x, kernel, bias, act, out, scratch, threads,
                                check_user_interrupt);
  } else {
    conv3d_depthwise_planes_f64(s, x, kernel, bias, act, out, scratch, threads,
                                check_user_interrupt);
  }
  scratch_release(&cs);
}

void conv_call_prepare(SEXP cfg, SEXP x, SEXP weights, SEXP built_channels,
                       struct conv_call* call, int* n_prot) {
  SEXP shape = PROTECT(input_shape_of(x));
  ++*n_prot;
  call->s = validated_spec(cfg, shape, built_channels);
  check_weights(&call->s, weights);
  call->x = as_double_array(x, n_prot);
  call->kernel = as_double_array(VECTOR_ELT(weights, 0), n_prot);
  call->bias = call->s.use_bias ? as_double_array(VECTOR_ELT(weights, 1), n_prot) : R_NilValue;
}

/* Keeps a layer off the Winograd transforms (the Winograd path's layers go
 * to the rows path, the planar path's to its direct tiles): they would carry
 * a NaN or an infinite value (a weight: packed_weights.finite; or an input:
 * conv_forward_general's nonfinite) into the outputs of a whole tile or
 * bundle of rows, and make an infinite sum NaN (Inf - Inf), where the direct
 * sums give what IEEE arithmetic gives. */
static void direct_sums_only(struct conv_geometry* geo) {
  geo->winograd = 0;
  geo->planar_m = 0;
  geo->planar_points = 0;
}

SEXP conv_call_forward(const struct conv_call* call, int act, SEXP cache) {
  struct conv_spec s; /* the kernels' view of the layer; the output has its own shape */
  conv_fold_batch(&call->s, &s);
  const SEXP x = call->x;
  int64_t odims[5], n_out = 1;
  output_dims(&call->s, odims);
  for (int i = 0; i < 5; ++i) n_out *= odims[i];
  struct conv_spec ks;
  conv_kernel_spec(&s, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  geo.winograd = conv_winograd_eligible(&ks, &geo);
  if (!geo.winograd) conv_geometry_planar(&ks, &geo);
  if (geo.planar) { /* which runs on its own axis order */
    struct conv_spec planar_ks;
    conv_planar_spec(&s, &ks, &planar_ks);
    ks = planar_ks;
    conv_geometry_init(&ks, &geo);
    conv_geometry_planar(&ks, &geo);
  }

  SEXP out = PROTECT(alloc_array(odims));
  if (n_out == 0) {
    UNPROTECT(1);
    return out;
  }

  advise_huge_pages(REAL(out), (size_t)n_out * sizeof(double));
  int threads = conv3d_thread_count();
  double t0 = seconds_now(), t1;
  if (conv_dw_eligible(&s, &geo, act)) { /* R's kernel and channel volumes in place */
    last_path = "depthwise";
    last_direct = 0;
    last_streamed = conv_stream_output(&s);
    conv_forward_depthwise(&s, REAL(x), REAL(call->kernel),
                           s.use_bias ? REAL(call->bias) : NULL, act, REAL(out), threads);
    last_timing[0] = 0; /* no packing phase: the threads read their slabs */
    last_timing[1] = seconds_now() - t0;
    UNPROTECT(1);
    return out;
  }
  const struct packed_weights* packed = packed_for(cache, &s, &geo, call->kernel, call->bias);
  if (!packed->finite) { /* a weight that is not finite: without the transforms */
    direct_sums_only(&geo);
    packed = packed_for(cache, &s, &geo, call->kernel, call->bias);
  }
  last_path = geo.patch                  ? "patch"
              : geo.planar_points > 0    ? "planar-winograd"
              : geo.planar               ? "planar"
              : geo.winograd             ? "winograd"
                                         : "rows";
  last_direct = geo.patch    ? conv_patch_direct(&s, &geo, act, REAL(out))
                : geo.planar ? conv_planar_direct(&s, &ks, &geo, act)
                             : 0;
  if (geo.patch || geo.planar) {
    last_streamed = conv_stream_output(&s);
  } else {
    int64_t st[5];
    conv_r_strides(&s, 1, st);
    last_streamed = conv_rows_stream((double)n_out, st[1 + ks.axes[2]]);
  }
  if (geo.patch) { /* a GEMM over patches straight on the R arrays: no input copy */
    struct call_scratch cs = {{0}, 0};
    int64_t* koff = alloc_elems(&cs, s.kernel[0] * s.kernel[1] * s.kernel[2] * s.channels,
                                sizeof(int64_t));
    conv_patch_offsets(&s, koff);
    void* scratch = alloc_per_thread(&cs, conv_patch_scratch(&s, &geo), threads,
                                     conv_real_size(&s));
    t1 = seconds_now();
    if (s.dtype == DTYPE_FLOAT32) {
      conv3d_patch_gemm_f32(&s, &geo, koff, REAL(x), packed->weights, packed->bias, act,
                            REAL(out), scratch, threads, check_user_interrupt);
    } else {
      conv3d_patch_gemm_f64(&s, &geo, koff, REAL(x), packed->weights, packed->bias, act,
                            REAL(out), scratch, threads, check_user_interrupt);
    }
    last_timing[0] = t1 - t0;
    last_timing[1] = seconds_now() - t1;
    scratch_release(&cs);
    UNPROTECT(1);
    return out;
  }
  int nonfinite = 0;
  t1 = t0 + conv_forward_general(&s, &ks, &geo, REAL(x), packed->weights, packed->bias, act,
                                 REAL(out), threads, &nonfinite);
  if (nonfinite) { /* an input that is not finite: again with the direct sums */
    last_path = geo.planar ? "planar" : "rows";
    direct_sums_only(&geo);
    packed = packed_for(cache, &s, &geo, call->kernel, call->bias);
    conv_forward_general(&s, &ks, &geo, REAL(x), packed->weights, packed->bias, act, REAL(out),
                         threads, NULL);
  }
  last_timing[0] = t1 - t0;
  last_timing[1] = seconds_now() - t1;
  UNPROTECT(1);
  return out;
}

SEXP ffi_conv3d_forward(SEXP cfg, SEXP x, SEXP weights, SEXP activation, SEXP built_channels,
                        SEXP cache) {
  int n_prot = 0;
  struct conv_call call;
  conv_call_prepare(cfg, x, weights, built_channels, &call, &n_prot);
  int act = Rf_asInteger(activation);
  if (act < 0 || act >= ACT_COUNT) Rf_error("internal error in ffi_conv.c: activation code %d", act);
  SEXP out = conv_call_forward(&call, act, cache);
  UNPROTECT(n_prot);
  return out;
}
