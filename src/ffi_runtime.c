/* R entry points for initializers, threads and the kernel tier. */
#include "ffi.h"
#include "conv3d.h"
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
  SEXP out = PROTECT(Rf_allocVector(REALSXP, (R_xlen_t)n));
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
  SEXP out = PROTECT(Rf_duplicate(x));
  double* p = REAL(out);
  for (R_xlen_t i = 0; i < XLENGTH(out); ++i) p[i] = (double)(float)p[i];
  UNPROTECT(1);
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
