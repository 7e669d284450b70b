/* Planar register tiles (conv_geometry.planar, conv_planar_fn): NJ vectors of
 * output voxels along rows of planar padded input planes [p1][c][p2] x
 * PLANAR_FB filters of one block, from the bias and then over the taps and
 * the group's channels, in the same order for every voxel. Tap (a, b, e)
 * and channel c of vector j reads x + plane[a] + b * dh * row + offs[j] +
 * eoff[e * cg + c]. The input
 * is read as whole vectors and each weight is broadcast, so layers with few
 * channels per group, whose channels-last tiles would reduce over short runs,
 * still do one load per PLANAR_FB multiply-adds. Included by
 * kernel_template.h; needs VEC, VECU, LANES, PLANAR_FB and PLANAR_NJ (at
 * most 3). */

#define PLANAR_NAME(s, nj) CONCAT(CONCAT(planar_, s), CONCAT(_, nj))
#define PLANAR_TILE(NJ)                                                                        \
  static void PLANAR_NAME(SUFFIX, NJ)(const struct conv_geometry* g, const real_t* x,         \
                                      const int64_t* plane, const int64_t* offs,               \
                                      const int64_t* eoff, const int64_t* taps,                \
                                      const real_t* w,                                         \
                                      const real_t* bias, int64_t nf, real_t* const* ys,       \
                                      int64_t ldy, const struct direct_out* direct) {          \
    VEC acc[PLANAR_FB][NJ];                                                                    \
    _Pragma("GCC unroll 8") for (int f = 0; f < PLANAR_FB; ++f) {                              \
      const real_t b0 = bias && f < nf ? bias[f] : (real_t)0;                                  \
      _Pragma("GCC unroll 3") for (int j = 0; j < NJ; ++j) acc[f][j] = b0 + (VEC){0};          \
    }                                                                                          \
    const int64_t steps = g->kw * g->cg, row = g->c * g->pw, tap_w = steps * PLANAR_FB;        \
    for (int64_t a = taps[0]; a < taps[1]; ++a)                                                \
      for (int64_t b = taps[2]; b < taps[3]; ++b) {                                            \
        const real_t* xb[NJ];                                                                  \
        _Pragma("GCC unroll 3") for (int j = 0; j < NJ; ++j)                                   \
          xb[j] = x + plane[a] + b * g->dh * row + offs[j];                                    \
        const real_t* wab = w + (a * g->kh + b) * tap_w;                                       \
        /* the (e, c) steps as one loop: one channel (mednet_stem) leaves no           \
         * loop of one step to close */                                                \
        for (int64_t r = 0; r < steps; ++r) {                                                  \
          const int64_t xc = eoff[r];                                                          \
          const real_t* wc = wab + r * PLANAR_FB;                                              \
          VEC xv[NJ];                                                                          \
          _Pragma("GCC unroll 3") for (int j = 0; j < NJ; ++j) xv[j] = *(const VECU*)(xb[j] + xc); \
          _Pragma("GCC unroll 8") for (int f = 0; f < PLANAR_FB; ++f) {                        \
            const real_t wf = wc[f];                                                           \
            _Pragma("GCC unroll 3") for (int j = 0; j < NJ; ++j) acc[f][j] += wf * xv[j];      \
          }                                                                                    \
        }                                                                                      \
      }                                                                                        \
    if (direct) {                                                                              \
      _Pragma("GCC unroll 8") for (int f = 0; f < PLANAR_FB; ++f) {                            \
        if (f >= nf) break;                                                                    \
        _Pragma("GCC unroll 3") for (int j = 0; j < NJ; ++j)                                   \
          CONCAT(direct_put_, SUFFIX)(direct->yd[j] + f * direct->ldd, acc[f][j], direct->relu,  \
                                      direct->stream);                                         \
      }                                                                                        \
      return;                                                                                  \
    }                                                                                          \
    _Pragma("GCC unroll 8") for (int f = 0; f < PLANAR_FB; ++f)                                \
      _Pragma("GCC unroll 3") for (int j = 0; j < NJ; ++j) *(VECU*)(ys[j] + f * ldy) = acc[f][j]; \
  }
PLANAR_TILE(1)
PLANAR_TILE(2)
#if PLANAR_NJ > 2
PLANAR_TILE(3)
#endif
#undef PLANAR_TILE

static void CONCAT(planar_tile_, SUFFIX)(const struct conv_geometry* g, int nj, const real_t* x,
                                         const int64_t* plane, const int64_t* offs,
                                         const int64_t* eoff, const int64_t* taps, const real_t* w,
                                         const real_t* bias, int64_t nf, real_t* const* ys,
                                         int64_t ldy, const struct direct_out* direct) {
#define PLANAR_CALL(nj) \
  PLANAR_NAME(SUFFIX, nj)(g, x, plane, offs, eoff, taps, w, bias, nf, ys, ldy, direct)
  switch (nj) {
#if PLANAR_NJ > 2
  case 3: PLANAR_CALL(3); return;
#endif
  case 2: PLANAR_CALL(2); return;
  default: PLANAR_CALL(1); return;
  }
#undef PLANAR_CALL
}
#undef PLANAR_NAME

/* The output rows of the Winograd rows (conv_planar_bundles_fn_*): each
 * vector of a bundle's rows summed in registers over the points, in their
 * order, each product vector read once for all the rows. */
static void CONCAT(planar_bundles_, SUFFIX)(int64_t M, int64_t T, const real_t* at,
                                            const real_t* m, int64_t per_point, int64_t ldm,
                                            int64_t nf, const real_t* bias, int64_t nb,
                                            int64_t nrows, int64_t sl, real_t* y, int64_t ldy,
                                            const struct bundle_out* r) {
  for (int64_t f = 0; f < nf; ++f) {
    const real_t b0 = bias ? bias[f] : (real_t)0;
    for (int64_t b = 0; b < nb; ++b) {
      real_t* yb = y + f * ldy + M * b * sl;
      const real_t* mb = m + f * ldm + b * sl;
      const int64_t rows = nrows - M * b < M ? nrows - M * b : M;
      for (int64_t l = 0; l < sl; l += LANES) {
        VEC acc[PLANAR_WINO_MAX_M];
        for (int i = 0; i < PLANAR_WINO_MAX_M; ++i) acc[i] = b0 + (VEC){0};
        /* M 2 or 4, each with a loop the compiler keeps in registers */
#define BUNDLE_SUM(MM)                                                   \
  for (int64_t t = 0; t < T; ++t) {                                      \
    const VEC v = *(const VECU*)(mb + t * per_point + l);                \
    _Pragma("GCC unroll 4") for (int i = 0; i < MM; ++i) acc[i] += at[i * T + t] * v; \
  }
        if (M == 4) {
          BUNDLE_SUM(4)
        } else {
          BUNDLE_SUM(2)
        }
#undef BUNDLE_SUM
        if (r) {
          double* o = r->o + f * r->ld_f + M * b * r->ld_row + l;
          for (int64_t i = 0; i < rows; ++i)
            CONCAT(direct_put_, SUFFIX)(o + i * r->ld_row, acc[i], r->relu, r->stream);
        } else {
          for (int64_t i = 0; i < rows; ++i) *(VECU*)(yb + i * sl + l) = acc[i];
        }
      }
    }
  }
}

/* A row of a transformed input plane (conv_planar_combine_fn_*): whole
 * vectors, then the rest lane by lane, all of it summed for
 * sum_not_finite_*. */
static int CONCAT(planar_combine_, SUFFIX)(int64_t k, const real_t* b, const real_t* const* rows,
                                           int64_t len, real_t* out) {
  VEC sum = (VEC){0};
  int64_t l = 0;
  for (; l + LANES <= len; l += LANES) {
    VEC acc = (VEC){0};
    for (int64_t i = 0; i < k; ++i) acc += b[i] * *(const VECU*)(rows[i] + l);
    *(VECU*)(out + l) = acc;
    sum += acc;
  }
  for (; l < len; ++l) {
    real_t acc = 0;
    for (int64_t i = 0; i < k; ++i) acc += b[i] * rows[i][l];
    out[l] = acc;
    sum[0] += acc;
  }
  return CONCAT(sum_not_finite_, SUFFIX)(sum);
}
