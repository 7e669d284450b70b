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
