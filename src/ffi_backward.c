/* R entry point of the gradients: validate like the forward pass, recompute the
 * pre-activation output, then run conv_backward.c. */
#include <string.h>
#include "ffi.h"
#include "conv3d.h"
#include "validate.h"

/* dx through the forward kernels: the output gradient, zero-dilated by the
 * strides and padded so every input position sees all its taps, convolved with
 * the kernel flipped in space and transposed within each group. Scratch is
 * R_alloc'd (freed when the .Call returns, also on an error). */
static void input_grad_forward(const struct conv_spec* s, const double* dz, const double* w,
                               double* dx, int threads) {
  struct conv_spec t = *s;
  t.channels = s->filters;
  t.filters = s->channels;
  t.use_bias = 0;
  t.same = 0;
  int strided = 0;
  for (int i = 0; i < 3; ++i) {
    const int64_t reach = (s->kernel[i] - 1) * s->dilation[i];
    t.in[i] = (s->out[i] - 1) * s->strides[i] + 1;
    t.strides[i] = 1;
    t.pad_lo[i] = reach - s->pad_lo[i];
    t.pad_hi[i] = s->in[i] - t.in[i] + s->pad_lo[i];
    t.out[i] = s->in[i];
    strided |= s->strides[i] > 1;
  }
  const int64_t N = s->batch, F = s->filters, C = s->channels, G = s->groups;
  const int64_t CG = C / G, FG = F / G;
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2];
  /* the output gradient as t's input, zeros between strided positions */
  const double* src = dz;
  if (strided) {
    const int64_t n_dil = N * F * t.in[0] * t.in[1] * t.in[2];
    double* dil = (double*)R_alloc((size_t)n_dil, sizeof(double));
    memset(dil, 0, sizeof(double) * (size_t)n_dil);
    int64_t ys[5], ts[5];
    conv_r_strides(s, 1, ys);
    conv_r_strides(&t, 0, ts);
    for (int64_t f = 0; f < F; ++f)
      for (int64_t ow = 0; ow < s->out[2]; ++ow)
        for (int64_t oh = 0; oh < s->out[1]; ++oh)
          for (int64_t od = 0; od < s->out[0]; ++od)
            for (int64_t n = 0; n < N; ++n) {
              dil[n + od * s->strides[0] * ts[1] + oh * s->strides[1] * ts[2] +
                  ow * s->strides[2] * ts[3] + f * ts[4]] =
                  dz[n + od * ys[1] + oh * ys[2] + ow * ys[3] + f * ys[4]];
            }
    src = dil;
  }
  /* the kernel flipped in space, (kd, kh, kw, FG, C) */
  double* wt = (double*)R_alloc((size_t)(KD * KH * KW * FG * C), sizeof(double));
  for (int64_t co = 0; co < C; ++co) {
    const int64_t g = co / CG, c = co % CG;
    for (int64_t k = 0; k < FG; ++k)
      for (int64_t e = 0; e < KW; ++e)
        for (int64_t b = 0; b < KH; ++b)
          for (int64_t a = 0; a < KD; ++a) {
            wt[a + KD * (b + KH * (e + KW * (k + FG * co)))] =
                w[(KD - 1 - a) + KD * ((KH - 1 - b) + KH * ((KW - 1 - e) + KW * (c + CG * (g * FG + k))))];
          }
  }
  struct conv_spec ks;
  conv_kernel_spec(&t, &ks);
  struct conv_geometry geo;
  conv_geometry_init(&ks, &geo);
  geo.patch = 0; /* the general kernels, whose packing the driver expects */
  const int64_t n_w = conv_packed_weight_length(&geo);
  const size_t elt = t.dtype == DTYPE_FLOAT32 ? sizeof(float) : sizeof(double);
  void* wp = R_alloc((size_t)(n_w > 0 ? n_w : 1), (int)elt);
  if (t.dtype == DTYPE_FLOAT32) {
    pack_weights_f32(&t, &geo, wt, wp);
  } else {
    pack_weights_f64(&t, &geo, wt, wp);
  }
  conv_forward_general(&t, &ks, &geo, src, wp, NULL, ACT_LINEAR, dx, threads);
}

/* Returns list(input, kernel, bias, dz): dz is the gradient with respect to the
 * pre-activation output; input and kernel are computed here by direct loops only
 * when asked (R/gradients.R runs the layouts the forward kernels can serve
 * through them instead). */
SEXP ffi_conv3d_gradients(SEXP cfg, SEXP x, SEXP weights, SEXP activation, SEXP built_channels,
                          SEXP cache, SEXP dy, SEXP need_input, SEXP need_kernel) {
  int n_prot = 0;
  const int act = Rf_asInteger(activation);
  SEXP z, zdim;
  if (act != ACT_LINEAR) {
    /* the forward pass validates x, the spec and the weights, and gives z */
    z = PROTECT(ffi_conv3d_forward(cfg, x, weights, Rf_ScalarInteger(ACT_LINEAR),
                                   built_channels, cache));
    ++n_prot;
    zdim = Rf_getAttrib(z, R_DimSymbol);
  } else {
    /* linear: dz is dy, no forward pass needed; validate as the forward would */
    SEXP xshape = PROTECT(input_shape_of(x));
    ++n_prot;
    SEXP spec = PROTECT(ffi_conv3d_spec(cfg, xshape, built_channels));
    ++n_prot;
    ffi_conv3d_check_weights(cfg, xshape, weights);
    SEXP oshape = VECTOR_ELT(spec, 0);
    zdim = PROTECT(Rf_allocVector(INTSXP, 5));
    ++n_prot;
    for (int i = 0; i < 5; ++i) INTEGER(zdim)[i] = (int)REAL(oshape)[i];
    z = R_NilValue;
  }
  check_gradient_shape(dy, zdim);
  if (TYPEOF(dy) != REALSXP) {
    dy = PROTECT(Rf_coerceVector(dy, REALSXP));
    ++n_prot;
  }
  if (TYPEOF(x) != REALSXP) {
    x = PROTECT(Rf_coerceVector(x, REALSXP));
    ++n_prot;
  }
  SEXP shape = PROTECT(Rf_coerceVector(Rf_getAttrib(x, R_DimSymbol), REALSXP));
  ++n_prot;
  struct conv_spec s;
  struct validation v;
  conv_validate(cfg, shape, built_channels, &s, &v); /* already checked by the forward pass */
  SEXP kernel = VECTOR_ELT(weights, 0);
  if (TYPEOF(kernel) != REALSXP) {
    kernel = PROTECT(Rf_coerceVector(kernel, REALSXP));
    ++n_prot;
  }
  int threads = conv3d_thread_count();

  const R_xlen_t n_out = XLENGTH(dy);
  SEXP dz = PROTECT(Rf_allocVector(REALSXP, n_out));
  ++n_prot;
  const int64_t last = INTEGER(zdim)[4];
  if (act == ACT_LINEAR) {
    memcpy(REAL(dz), REAL(dy), sizeof(double) * (size_t)n_out);
  } else {
    conv_activation_backward(act, REAL(z), REAL(dy), REAL(dz), n_out, last,
                             n_out / (last > 0 ? last : 1), threads);
  }

  const char* names[] = {"input", "kernel", "bias", "dz", ""};
  SEXP out = PROTECT(Rf_mkNamed(VECSXP, names));
  ++n_prot;
  Rf_setAttrib(dz, R_DimSymbol, zdim);
  SET_VECTOR_ELT(out, 3, dz);
  double* dw = NULL;
  if (Rf_asLogical(need_kernel) == TRUE) {
    SEXP k = PROTECT(Rf_allocVector(REALSXP, XLENGTH(kernel)));
    Rf_setAttrib(k, R_DimSymbol, Rf_getAttrib(kernel, R_DimSymbol));
    SET_VECTOR_ELT(out, 1, k);
    UNPROTECT(1);
    dw = REAL(k);
  }
  double* db = NULL;
  if (s.use_bias) {
    SEXP b = Rf_allocVector(REALSXP, (R_xlen_t)s.filters);
    SET_VECTOR_ELT(out, 2, b);
    db = REAL(b);
  }
  if (n_out > 0) {
    /* groups with few filters (depthwise) waste most of a GEMM tile: direct loops */
    const int gemm = s.filters / s.groups >= 8;
    conv3d_kernel_grad(&s, REAL(x), REAL(dz), gemm ? NULL : dw, db, threads);
    if (dw && gemm) {
      int64_t n_scratch, n_acc;
      conv_kernel_grad_sizes(&s, threads, &n_scratch, &n_acc);
      double* acc = (double*)R_alloc((size_t)n_acc, sizeof(double));
      if (s.dtype == DTYPE_FLOAT32) {
        float* scratch = (float*)R_alloc((size_t)n_scratch, sizeof(float));
        conv3d_kernel_grad_gemm_f32(&s, REAL(x), REAL(dz), dw, scratch, acc, threads);
      } else {
        double* scratch = (double*)R_alloc((size_t)n_scratch, sizeof(double));
        conv3d_kernel_grad_gemm_f64(&s, REAL(x), REAL(dz), dw, scratch, acc, threads);
      }
    }
  } else {
    if (dw) memset(dw, 0, sizeof(double) * (size_t)XLENGTH(kernel));
    if (db) memset(db, 0, sizeof(double) * (size_t)s.filters);
  }
  if (Rf_asLogical(need_input) == TRUE) {
    SEXP dx = PROTECT(Rf_allocVector(REALSXP, XLENGTH(x)));
    Rf_setAttrib(dx, R_DimSymbol, Rf_getAttrib(x, R_DimSymbol));
    SET_VECTOR_ELT(out, 0, dx);
    UNPROTECT(1);
    if (n_out > 0) {
      input_grad_forward(&s, REAL(dz), REAL(kernel), REAL(dx), threads);
    } else {
      memset(REAL(dx), 0, sizeof(double) * (size_t)XLENGTH(dx));
    }
  }
  if (s.dtype == DTYPE_FLOAT32) { /* a float32 layer reports float32 values */
    for (int i = 0; i < 4; ++i) {
      SEXP el = VECTOR_ELT(out, i);
      if (Rf_isNull(el)) continue;
      double* p = REAL(el);
      for (R_xlen_t k = 0; k < XLENGTH(el); ++k) p[k] = (double)(float)p[k];
    }
  }
  UNPROTECT(n_prot);
  return out;
}
