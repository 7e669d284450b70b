/* R entry points for initializers, threads and the kernel tier. */
#include "ffi.h"
#include "conv3d.h"
#include "validate.h"
#include <Rmath.h>
#include <string.h>

static double rng_uniform(void) { return unif_rand(); }
static double rng_normal(void) { return norm_rand(); }

static double param(SEXP params, const char* name, double fallback) {
  SEXP names = Rf_getAttrib(params, R_NamesSymbol);
  for (R_xlen_t i = 0; i < XLENGTH(params); ++i) {
    if (strcmp(CHAR(STRING_ELT(names, i)), name) == 0) return Rf_asReal(VECTOR_ELT(params, i));
  }
  return fallback;
}

/* shape: whole numbers (already validated by the layer); arg names the argument
 * (kernel_initializer / bias_initializer) for messages. */
SEXP ffi_init_weights(SEXP kind, SEXP params, SEXP shape, SEXP arg) {
  int rank = Rf_length(shape);
  if (rank > 8) Rf_error("internal error in ffi_runtime.c: rank %d", rank);
  int64_t dims[8], n = 1;
  for (int i = 0; i < rank; ++i) {
    dims[i] = (int64_t)REAL(shape)[i];
    if (!size_mul(n, dims[i], &n) || n > (int64_t)R_XLEN_T_MAX) {
      conv3d_signal("size_overflow", CHAR(STRING_ELT(arg, 0)), shape, -1, R_NilValue);
    }
  }
  struct init_params p = {
    param(params, "value", 0), param(params, "mean", 0), param(params, "stddev", 0.05),
    param(params, "minval", -0.05), param(params, "maxval", 0.05), param(params, "scale", 1),
    param(params, "gain", 1), (int)param(params, "mode", 0), (int)param(params, "distribution", 0)};
  SEXP out = PROTECT(alloc_result((R_xlen_t)n));
  double* scratch = (double*)R_alloc((size_t)(n > 0 ? n : 1), sizeof(double));
  struct rng rng = {rng_uniform, rng_normal};
  GetRNGstate();
  int ok = init_fill((enum init_kind)Rf_asInteger(kind), &p, dims, rank, REAL(out), n, scratch, &rng);
  PutRNGstate();
  if (!ok) conv3d_signal("orthogonal_rank", CHAR(STRING_ELT(arg, 0)), shape, -1, R_NilValue);
  if (rank > 1) {
    SEXP dim = PROTECT(Rf_allocVector(INTSXP, rank));
    for (int i = 0; i < rank; ++i) INTEGER(dim)[i] = (int)dims[i];
    Rf_setAttrib(out, R_DimSymbol, dim);
    UNPROTECT(1);
  }
  UNPROTECT(1);
  return out;
}

/* n: NULL to read, or a count (0 = default) to set; returns the count in force before. */
SEXP ffi_threads(SEXP n) {
  if (Rf_isNull(n)) return Rf_ScalarInteger(conv3d_thread_count());
  double v = (TYPEOF(n) == INTSXP || TYPEOF(n) == REALSXP) && XLENGTH(n) == 1 ? Rf_asReal(n) : -1;
  if (!R_FINITE(v) || v < 0 || v > 1 << 20 || v != (double)(int)v) {
    conv3d_signal("threads", "n", n, -1, R_NilValue);
  }
  return Rf_ScalarInteger(conv3d_set_thread_count((int)v));
}

/* Rounds doubles to the nearest float32: weights of a float32 layer hold what the
 * kernels will compute with. */
SEXP ffi_round_f32(SEXP x) {
  if (TYPEOF(x) != REALSXP) x = Rf_coerceVector(x, REALSXP);
  PROTECT(x);
  const double* p = REAL(x);
  const R_xlen_t n = XLENGTH(x);
  /* x itself when rounding changes no bit (a float32 layer's output, say):
   * a copy of a large array costs fresh memory */
  R_xlen_t first = 0;
  for (; first < n; ++first) {
    const double r = (double)(float)p[first];
    if (memcmp(&r, p + first, sizeof r) != 0) break;
  }
  if (first == n) {
    UNPROTECT(1);
    return x;
  }
  SEXP out = PROTECT(alloc_result(n));
  DUPLICATE_ATTRIB(out, x);
  double* q = REAL(out);
  for (R_xlen_t i = 0; i < n; ++i) q[i] = (double)(float)p[i];
  UNPROTECT(2);
  return out;
}

/* tier: NULL to read, or "generic"/"avx2"/"avx512" to set (refused above the CPU's best). */
SEXP ffi_cpu(SEXP tier) {
  if (!Rf_isNull(tier)) {
    const char* want = CHAR(STRING_ELT(tier, 0));
    enum cpu_tier t = strcmp(want, "avx512") == 0 ? TIER_AVX512
                      : strcmp(want, "avx2") == 0 ? TIER_AVX2 : TIER_GENERIC;
    if (!cpu_set_tier(t)) {
      conv3d_signal("tier_unsupported", "kernel", tier, -1, Rf_mkString(cpu_tier_name(cpu_best_tier())));
    }
  }
  const char* names[] = {"kernel", "best", ""};
  SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
  SET_VECTOR_ELT(out, 0, Rf_mkString(cpu_tier_name(cpu_active_tier())));
  SET_VECTOR_ELT(out, 1, Rf_mkString(cpu_tier_name(cpu_best_tier())));
  UNPROTECT(1);
  return out;
}

/* Measured FMA peak (GFLOP/s) of n threads on the active kernel tier. */
SEXP ffi_peak_gflops(SEXP n, SEXP f64) {
  return Rf_ScalarReal(peak_gflops(Rf_asInteger(n), Rf_asLogical(f64)));
}

/* Named activation applied to a copy of x in the layer's precision; softmax runs
 * along the array's last axis (R's slowest). */
SEXP ffi_activation(SEXP x, SEXP code, SEXP f32) {
  SEXP out = PROTECT(Rf_coerceVector(x, REALSXP));
  if (out == x) out = Rf_duplicate(x);
  UNPROTECT(1);
  PROTECT(out);
  const int act = Rf_asInteger(code), single = Rf_asLogical(f32) == TRUE;
  if (act < 0 || act >= ACT_COUNT) Rf_error("internal error in ffi_runtime.c: activation %d", act);
  const R_xlen_t n = XLENGTH(out);
  SEXP dim = Rf_getAttrib(out, R_DimSymbol);
  const int64_t last = Rf_isNull(dim) ? n : INTEGER(dim)[XLENGTH(dim) - 1];
  const int64_t stride = last > 0 ? n / last : 1;
  double* p = REAL(out);
  if (act == ACT_SOFTMAX) {
    float* v = single ? (float*)R_alloc((size_t)(last > 0 ? last : 1), sizeof(float)) : NULL;
    for (int64_t l = 0; l < stride; ++l) {
      if (single) {
        for (int64_t k = 0; k < last; ++k) v[k] = (float)p[l + k * stride];
        softmax_f32(v, last, 1);
        for (int64_t k = 0; k < last; ++k) p[l + k * stride] = v[k];
      } else {
        softmax_f64(p + l, last, stride);
      }
    }
  } else if (single) {
    for (R_xlen_t i = 0; i < n; ++i) {
      float v = (float)p[i];
      activation_apply_f32(act, &v, 1);
      p[i] = v;
    }
  } else {
    activation_apply_f64(act, p, n);
  }
  UNPROTECT(1);
  return out;
}

static struct conv_spec validated_pool_spec(SEXP cfg, SEXP input_shape) {
  struct conv_spec s;
  struct validation v;
  pool_validate(cfg, input_shape, &s, &v);
  if (v.problem != PROBLEM_NONE) conv3d_signal_validation(&v);
  return s;
}

/* Max or average pooling: cfg as made by R/layers-pooling.R. With
 * keep_argmax (max pooling in a training step), list(y, argmax): each
 * output's pick for the backward pass (pool3d_forward). */
SEXP ffi_pool3d(SEXP cfg, SEXP x, SEXP average, SEXP keep_argmax) {
  int n_prot = 0;
  SEXP shape = PROTECT(input_shape_of(x));
  ++n_prot;
  struct conv_spec s = validated_pool_spec(cfg, shape);
  if (TYPEOF(x) != REALSXP) {
    x = PROTECT(Rf_coerceVector(x, REALSXP));
    ++n_prot;
  }
  const int avg = Rf_asLogical(average) == TRUE, keep = !avg && Rf_asLogical(keep_argmax) == TRUE;
  int64_t odims[5];
  output_dims(&s, odims);
  SEXP out = PROTECT(alloc_array(odims));
  ++n_prot;
  SEXP argmax = R_NilValue;
  if (keep) {
    argmax = PROTECT(alloc_result(XLENGTH(out)));
    ++n_prot;
  }
  if (XLENGTH(out) > 0) {
    struct call_scratch cs = {{0}, 0};
    const int threads = conv3d_thread_count();
    void* scratch = alloc_per_thread(&cs, pool_forward_scratch(&s), threads, 1);
    pool3d_forward(&s, avg, REAL(x), REAL(out), keep ? REAL(argmax) : NULL, scratch, threads,
                   check_user_interrupt);
    scratch_release(&cs);
  }
  if (keep) {
    const char* names[] = {"y", "argmax", ""};
    SEXP both = PROTECT(Rf_mkNamed(VECSXP, names));
    ++n_prot;
    SET_VECTOR_ELT(both, 0, out);
    SET_VECTOR_ELT(both, 1, argmax);
    out = both;
  }
  UNPROTECT(n_prot);
  return out;
}

/* Output shape of a pooling layer for a batch-first input shape (NA unknown). */
SEXP ffi_pool3d_shape(SEXP cfg, SEXP input_shape) {
  struct conv_spec s = validated_pool_spec(cfg, input_shape);
  int64_t dims[5];
  output_dims(&s, dims);
  return int64_vector(dims, 5);
}

/* Gradient of a pooling layer with respect to its input, for dy of the output's
 * shape; argmax: NULL, or the picks ffi_pool3d kept for this x. */
SEXP ffi_pool3d_backward(SEXP cfg, SEXP x, SEXP dy, SEXP average, SEXP argmax) {
  int n_prot = 0;
  SEXP shape = PROTECT(input_shape_of(x));
  ++n_prot;
  struct conv_spec s = validated_pool_spec(cfg, shape);
  dy = checked_gradient(dy, &s, &n_prot);
  if (!Rf_isNull(argmax) && (TYPEOF(argmax) != REALSXP || XLENGTH(argmax) != XLENGTH(dy))) {
    Rf_error("internal error in ffi_runtime.c: argmax of another output");
  }
  x = PROTECT(Rf_coerceVector(x, REALSXP));
  ++n_prot;
  SEXP dx = PROTECT(alloc_result(XLENGTH(x)));
  ++n_prot;
  Rf_setAttrib(dx, R_DimSymbol, Rf_getAttrib(x, R_DimSymbol));
  if (XLENGTH(x) > 0) {
    pool3d_backward(&s, Rf_asLogical(average) == TRUE, REAL(x), REAL(dy),
                    Rf_isNull(argmax) ? NULL : REAL(argmax), REAL(dx), conv3d_thread_count(),
                    check_user_interrupt);
  }
  UNPROTECT(n_prot);
  return dx;
}

/* N, C and the voxels S of a rank-5 R array for global pooling (its R
 * wrapper checked the rank). */
static void global_pool_dims(SEXP x, int channels_last, int64_t* N, int64_t* C, int64_t* S) {
  SEXP dim = Rf_getAttrib(x, R_DimSymbol);
  if (!Rf_isNumeric(x) || Rf_length(dim) != 5) {
    Rf_error("internal error in ffi_runtime.c: global pooling wants a numeric array of rank 5");
  }
  const int* d = INTEGER(dim);
  *N = d[0];
  *C = channels_last ? d[4] : d[1];
  *S = channels_last ? (int64_t)d[1] * d[2] * d[3] : (int64_t)d[2] * d[3] * d[4];
}

/* Global average or max pooling: a (samples, channels) matrix. */
SEXP ffi_global_pool3d(SEXP x, SEXP channels_last, SEXP average) {
  const int last = Rf_asLogical(channels_last) == TRUE;
  int64_t N, C, S;
  global_pool_dims(x, last, &N, &C, &S);
  SEXP xd = PROTECT(Rf_coerceVector(x, REALSXP));
  SEXP y = PROTECT(Rf_allocMatrix(REALSXP, (int)N, (int)C));
  global_pool3d_forward(N, C, S, last, Rf_asLogical(average) == TRUE, REAL(xd), REAL(y),
                        conv3d_thread_count());
  UNPROTECT(2);
  return y;
}

/* Gradient of global pooling with respect to its input, for g of N x C values. */
SEXP ffi_global_pool3d_backward(SEXP x, SEXP g, SEXP channels_last, SEXP average) {
  const int last = Rf_asLogical(channels_last) == TRUE;
  int64_t N, C, S;
  global_pool_dims(x, last, &N, &C, &S);
  SEXP xd = PROTECT(Rf_coerceVector(x, REALSXP));
  SEXP gd = PROTECT(Rf_coerceVector(g, REALSXP));
  if (XLENGTH(gd) != N * C) Rf_error("internal error in ffi_runtime.c: g length");
  SEXP dx = PROTECT(alloc_result(XLENGTH(xd)));
  Rf_setAttrib(dx, R_DimSymbol, Rf_getAttrib(x, R_DimSymbol));
  global_pool3d_backward(N, C, S, last, Rf_asLogical(average) == TRUE, REAL(xd), REAL(gd),
                         REAL(dx), conv3d_thread_count());
  UNPROTECT(3);
  return dx;
}

/* dz = dy * act'(z) for a named activation (softmax along the last axis). */
SEXP ffi_activation_backward(SEXP z, SEXP dy, SEXP code) {
  SEXP zz = PROTECT(Rf_coerceVector(z, REALSXP));
  SEXP dd = PROTECT(Rf_coerceVector(dy, REALSXP));
  if (XLENGTH(zz) != XLENGTH(dd)) Rf_error("internal error in ffi_runtime.c: dy length");
  SEXP out = PROTECT(alloc_result(XLENGTH(zz)));
  Rf_setAttrib(out, R_DimSymbol, Rf_getAttrib(z, R_DimSymbol));
  SEXP dim = Rf_getAttrib(z, R_DimSymbol);
  const int64_t n = XLENGTH(zz);
  const int64_t last = Rf_isNull(dim) ? n : INTEGER(dim)[XLENGTH(dim) - 1];
  conv_activation_backward(Rf_asInteger(code), REAL(zz), REAL(dd), REAL(out), n, last,
                           last > 0 ? n / last : 1, conv3d_thread_count());
  UNPROTECT(3);
  return out;
}
