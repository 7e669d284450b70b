/* R array helpers shared by the entry points: the checked shape of an input, the
 * output shape of a spec, an R array of given dims, and the check that a
 * gradient has its output's shape (returned as doubles). */
#include <limits.h>
#include "ffi.h"
#include "validate.h"

SEXP input_shape_of(SEXP x) {
  if (TYPEOF(x) != REALSXP && TYPEOF(x) != INTSXP) {
    conv3d_signal("input_not_numeric", "input", x, -1, R_NilValue);
  }
  SEXP dim = Rf_getAttrib(x, R_DimSymbol);
  if (Rf_isNull(dim) || XLENGTH(dim) != 5) {
    conv3d_signal("input_rank", "input", dim, XLENGTH(x) > INT_MAX ? -1 : (int)XLENGTH(x),
                  R_NilValue);
  }
  return Rf_coerceVector(dim, REALSXP);
}

void output_dims(const struct conv_spec* s, int64_t dims[5]) {
  dims[0] = s->batch;
  const int first = s->layout == LAYOUT_CHANNELS_LAST ? 1 : 2;
  dims[s->layout == LAYOUT_CHANNELS_LAST ? 4 : 1] = s->filters;
  for (int i = 0; i < 3; ++i) dims[first + i] = s->out[i];
}

SEXP int64_vector(const int64_t* x, int n) {
  SEXP out = PROTECT(Rf_allocVector(REALSXP, n));
  for (int i = 0; i < n; ++i) REAL(out)[i] = x[i] < 0 ? NA_REAL : (double)x[i];
  UNPROTECT(1);
  return out;
}

SEXP alloc_array(const int64_t dims[5]) {
  int64_t n = 1;
  for (int i = 0; i < 5; ++i) n *= dims[i];
  SEXP out = PROTECT(alloc_result((R_xlen_t)n));
  SEXP dim = PROTECT(Rf_allocVector(INTSXP, 5));
  for (int i = 0; i < 5; ++i) INTEGER(dim)[i] = (int)dims[i];
  Rf_setAttrib(out, R_DimSymbol, dim);
  UNPROTECT(2);
  return out;
}

SEXP checked_gradient(SEXP dy, const struct conv_spec* s, int* n_prot) {
  int64_t odims[5];
  output_dims(s, odims);
  SEXP dim = Rf_getAttrib(dy, R_DimSymbol);
  const int numeric = is_number_vector(dy);
  int same = numeric && !Rf_isNull(dim) && XLENGTH(dim) == 5;
  for (int i = 0; same && i < 5; ++i) same = INTEGER(dim)[i] == odims[i];
  if (!same) {
    SEXP expected = PROTECT(Rf_allocVector(INTSXP, 5));
    for (int i = 0; i < 5; ++i) INTEGER(expected)[i] = (int)odims[i];
    /* a numeric array of other dims is described by its dims, anything else by itself */
    const int by_dim = numeric && !Rf_isNull(dim);
    conv3d_signal("gradient_shape", "dy", by_dim ? dim : dy, by_dim, expected);
  }
  if (TYPEOF(dy) == REALSXP) return dy;
  ++*n_prot;
  return PROTECT(Rf_coerceVector(dy, REALSXP));
}

/* Concatenation along an axis, in R's column-major order: input j is an
 * inner_j x outer matrix (inner_j: the product of its lengths up to the
 * axis, outer: of those after it) and the result binds them by rows, into
 * memory of the result pool. The R side checked the shapes and gives the
 * result's dims. */
SEXP ffi_concatenate(SEXP xs, SEXP outer_count, SEXP dims) {
  const R_xlen_t n = XLENGTH(xs);
  const R_xlen_t outer = (R_xlen_t)Rf_asReal(outer_count);
  R_xlen_t total = 0;
  for (R_xlen_t j = 0; j < n; ++j) {
    SEXP x = VECTOR_ELT(xs, j);
    if (TYPEOF(x) != REALSXP || (outer > 0 && XLENGTH(x) % outer != 0)) {
      Rf_error("internal error in ffi_arrays.c: concatenation inputs");
    }
    total += XLENGTH(x);
  }
  SEXP out = PROTECT(alloc_result(total));
  double* o = REAL(out);
  for (R_xlen_t col = 0; col < outer; ++col) {
    for (R_xlen_t j = 0; j < n; ++j) {
      SEXP x = VECTOR_ELT(xs, j);
      const R_xlen_t inner = XLENGTH(x) / outer;
      memcpy(o, REAL(x) + col * inner, sizeof(double) * (size_t)inner);
      o += inner;
    }
  }
  Rf_setAttrib(out, R_DimSymbol, dims);
  UNPROTECT(1);
  return out;
}

/* The concatenation's gradient: dy's rows (as above) split among the
 * inputs, part j of dims[[j]]. */
SEXP ffi_split_rows(SEXP dy, SEXP outer_count, SEXP dims) {
  const R_xlen_t n = XLENGTH(dims);
  const R_xlen_t outer = (R_xlen_t)Rf_asReal(outer_count);
  SEXP g = PROTECT(Rf_coerceVector(dy, REALSXP));
  SEXP parts = PROTECT(Rf_allocVector(VECSXP, n));
  R_xlen_t* inner = (R_xlen_t*)R_alloc((size_t)(n > 0 ? n : 1), sizeof(R_xlen_t));
  R_xlen_t rows = 0;
  for (R_xlen_t j = 0; j < n; ++j) {
    SEXP d = VECTOR_ELT(dims, j);
    double len = 1;
    for (R_xlen_t i = 0; i < XLENGTH(d); ++i) len *= INTEGER(d)[i];
    inner[j] = outer > 0 ? (R_xlen_t)len / outer : 0;
    rows += inner[j];
    SET_VECTOR_ELT(parts, j, alloc_result((R_xlen_t)len));
    Rf_setAttrib(VECTOR_ELT(parts, j), R_DimSymbol, d);
  }
  if (rows * outer != XLENGTH(g)) Rf_error("internal error in ffi_arrays.c: split lengths");
  const double* src = REAL(g);
  for (R_xlen_t col = 0; col < outer; ++col) {
    for (R_xlen_t j = 0; j < n; ++j) {
      memcpy(REAL(VECTOR_ELT(parts, j)) + col * inner[j], src, sizeof(double) * (size_t)inner[j]);
      src += inner[j];
    }
  }
  UNPROTECT(2);
  return parts;
}

/* Rows idx (1-based, each in 1 .. N) of an array whose first axis has N
 * rows (a batch's samples): x[idx, , ..., drop = FALSE] for double, integer
 * and logical arrays without dimnames (the R side sends the others to `[`).
 * R interleaves the samples (the first axis is the fastest), so this is one
 * pass over x, where R's generic subsetting took five times as long. */
SEXP ffi_take_rows(SEXP x, SEXP idx) {
  SEXP dim = Rf_getAttrib(x, R_DimSymbol);
  const int type = TYPEOF(x);
  if ((type != REALSXP && type != INTSXP && type != LGLSXP) || TYPEOF(idx) != INTSXP ||
      Rf_isNull(dim) || XLENGTH(dim) < 1) {
    Rf_error("internal error in ffi_arrays.c: rows of an array");
  }
  const R_xlen_t N = INTEGER(dim)[0], k = XLENGTH(idx);
  const R_xlen_t inner = N > 0 ? XLENGTH(x) / N : 0;
  const int* rows = INTEGER(idx);
  for (R_xlen_t j = 0; j < k; ++j) {
    if (rows[j] == NA_INTEGER || rows[j] < 1 || rows[j] > N) {
      Rf_error("internal error in ffi_arrays.c: row %d of %.0f", rows[j], (double)N);
    }
  }
  double total = (double)k * (double)inner;
  if (total > (double)R_XLEN_T_MAX) Rf_error("cannot allocate %.0f elements for a batch", total);
  /* a plain R vector: from the result pool, the batches' sizes took slots
   * that a step's layer outputs reuse (the segmenter's epochs: 0.28 -> 0.31 s) */
  SEXP out = PROTECT(Rf_allocVector(type, (R_xlen_t)total));
#define TAKE_ROWS(T, src, dst)                                                    \
  for (R_xlen_t v = 0; v < inner; ++v)                                            \
    for (R_xlen_t j = 0; j < k; ++j) (dst)[j + k * v] = (src)[rows[j] - 1 + N * v]
  if (type == REALSXP) {
    TAKE_ROWS(double, REAL(x), REAL(out));
  } else { /* integers and logicals are both int */
    const int* src = type == INTSXP ? INTEGER(x) : LOGICAL(x);
    int* dst = type == INTSXP ? INTEGER(out) : LOGICAL(out);
    TAKE_ROWS(int, src, dst);
  }
#undef TAKE_ROWS
  SEXP out_dim = PROTECT(Rf_duplicate(dim));
  INTEGER(out_dim)[0] = (int)k;
  Rf_setAttrib(out, R_DimSymbol, out_dim);
  UNPROTECT(2);
  return out;
}
