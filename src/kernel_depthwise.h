/* One output plane of the planar depthwise path (conv_dw_geometry): the rows
 * along R's depth axis as vectors, DW_ROWS rows at a time (then half as
 * many, then one: independent sums hide the multiply-add latency), each
 * summed from the bias over the taps in R's kernel order (depth fastest),
 * the same order for every voxel. x is the channel's padded slab at the
 * plane's first input plane ([plane][row][g->p0]); w the channel's taps.
 * Rows go to y compact (g->out[0] apart): the last vector of a row spills
 * into the next row's first voxels, so each row's vectors are stored last to
 * first and the next row's first vector, stored after, overwrites the spill;
 * the plane's last row spills into the lanes after it. Included by
 * kernel_template.h; needs VEC, VECU and LANES. */

#define DW_ROWS 8
#define DW_PLANE_ROWS(NAME, NR)                                                              \
  static void NAME(const struct conv_dw_geometry* g, const real_t* x, const real_t* w,       \
                   real_t bias, int64_t r0, real_t* y) {                                     \
    const int64_t K0 = g->kernel[0], K1 = g->kernel[1], K2 = g->kernel[2];                   \
    const int64_t row = g->p0, plane = g->p0 * g->p1, step = g->s1 * row;                    \
    for (int64_t v = g->nv - 1; v >= 0; --v) {                                               \
      VEC acc[NR];                                                                           \
      _Pragma("GCC unroll 8") for (int i = 0; i < NR; ++i) acc[i] = bias + (VEC){0};         \
      const real_t* xv = x + r0 * step + v * LANES;                                          \
      for (int64_t a2 = 0; a2 < K2; ++a2)                                                    \
        for (int64_t a1 = 0; a1 < K1; ++a1) {                                                \
          const real_t* xr = xv + a2 * g->dilation[2] * plane + a1 * g->dilation[1] * row;   \
          const real_t* wr = w + K0 * (a1 + K1 * a2);                                        \
          for (int64_t a0 = 0; a0 < K0; ++a0) {                                              \
            const real_t wt = wr[a0];                                                        \
            const real_t* xa = xr + a0 * g->dilation[0];                                     \
            _Pragma("GCC unroll 8") for (int i = 0; i < NR; ++i)                             \
              acc[i] += wt * *(const VECU*)(xa + i * step);                                  \
          }                                                                                  \
        }                                                                                    \
      _Pragma("GCC unroll 8") for (int i = 0; i < NR; ++i)                                   \
        *(VECU*)(y + (r0 + i) * g->out[0] + v * LANES) = acc[i];                             \
    }                                                                                        \
  }
DW_PLANE_ROWS(CONCAT(dw_rows_wide_, SUFFIX), DW_ROWS)
DW_PLANE_ROWS(CONCAT(dw_rows_half_, SUFFIX), DW_ROWS / 2)
DW_PLANE_ROWS(CONCAT(dw_rows_one_, SUFFIX), 1)
#undef DW_PLANE_ROWS

#ifdef DW_SHIFT_f32
/* DW_ROWS rows of a layer whose kernel is 3 x 3 undilated along depth and
 * height, of unit stride along height, on a tier that shifts vectors by lanes
 * (CONCAT(DW_SHIFT_, SUFFIX)): each input row's vector and the next are
 * loaded once, the depth taps' vectors are shifts of the pair, and each feeds
 * the (up to) three output rows it reaches: 2 loads and 2 shifts per 9
 * multiply-adds, where unaligned loads would split cache lines. The sums run
 * in the same order as dw_rows_*. */
static void CONCAT(dw_rows_k3_, SUFFIX)(const struct conv_dw_geometry* g, const real_t* x,
                                       const real_t* w, real_t bias, int64_t r0, real_t* y) {
  const int64_t row = g->p0, plane = g->p0 * g->p1;
  for (int64_t v = g->nv - 1; v >= 0; --v) {
    VEC acc[DW_ROWS];
    _Pragma("GCC unroll 8") for (int i = 0; i < DW_ROWS; ++i) acc[i] = bias + (VEC){0};
    for (int64_t a2 = 0; a2 < g->kernel[2]; ++a2) {
      const real_t* xa = x + a2 * g->dilation[2] * plane + r0 * row + v * LANES;
      const real_t* wa = w + 9 * a2; /* taps (a0, a1) at a0 + 3 * a1 */
      _Pragma("GCC unroll 10") for (int j = 0; j < DW_ROWS + 2; ++j) {
        const VEC lo = *(const VECU*)(xa + j * row), hi = *(const VECU*)(xa + j * row + LANES);
        const VEC s1 = CONCAT(DW_SHIFT_, SUFFIX)(lo, hi, 1);
        const VEC s2 = CONCAT(DW_SHIFT_, SUFFIX)(lo, hi, 2);
        /* output row i = j - a1 */
        _Pragma("GCC unroll 3") for (int a1 = 0; a1 < 3; ++a1) {
          const int i = j - a1;
          if (i < 0 || i >= DW_ROWS) continue;
          acc[i] += wa[3 * a1] * lo;
          acc[i] += wa[3 * a1 + 1] * s1;
          acc[i] += wa[3 * a1 + 2] * s2;
        }
      }
    }
    _Pragma("GCC unroll 8") for (int i = 0; i < DW_ROWS; ++i)
      *(VECU*)(y + (r0 + i) * g->out[0] + v * LANES) = acc[i];
  }
}
#endif

static void CONCAT(dw_plane_, SUFFIX)(const struct conv_dw_geometry* g, const real_t* x,
                                      const real_t* w, real_t bias, real_t* y) {
  int64_t r = 0;
#ifdef DW_SHIFT_f32
  if (g->kernel[0] == 3 && g->dilation[0] == 1 && g->kernel[1] == 3 && g->dilation[1] == 1 &&
      g->s1 == 1) {
    for (; r + DW_ROWS <= g->out[1]; r += DW_ROWS) CONCAT(dw_rows_k3_, SUFFIX)(g, x, w, bias, r, y);
  }
#endif
  for (; r + DW_ROWS <= g->out[1]; r += DW_ROWS) CONCAT(dw_rows_wide_, SUFFIX)(g, x, w, bias, r, y);
  if (r + DW_ROWS / 2 <= g->out[1]) {
    CONCAT(dw_rows_half_, SUFFIX)(g, x, w, bias, r, y);
    r += DW_ROWS / 2;
  }
  for (; r < g->out[1]; ++r) CONCAT(dw_rows_one_, SUFFIX)(g, x, w, bias, r, y);
}
#undef DW_ROWS

/* Plane q of a slab: its rows' R doubles (in1 rows of in0 doubles, each
 * double `step` apart: the samples interleave; in NULL: the plane is
 * padding) into rows of g->p0 elements, each with lo0 zeros before and zeros
 * after, and zero rows where row r - lo1 is not in [0, in1). */
typedef double CONCAT(dw_dvec_, SUFFIX) __attribute__((vector_size(LANES * sizeof(double)),
                                                       aligned(sizeof(double))));
static void CONCAT(dw_fill_plane_, SUFFIX)(const struct conv_dw_geometry* g, const double* in,
                                           int64_t step, int64_t in0, int64_t in1, int64_t lo0,
                                           int64_t lo1, real_t* out) {
  const int64_t P0 = g->p0, zeros = (P0 + LANES - 1) / LANES;
  for (int64_t r = 0; r < g->p1; ++r) {
    real_t* o = out + r * P0;
    /* the whole row zeroed (a vector past its end: the slab's slack), then
     * the row's input written over it */
    for (int64_t v = 0; v < zeros; ++v) *(VECU*)(o + v * LANES) = (VEC){0};
    const int64_t i1 = r - lo1;
    if (in == NULL || i1 < 0 || i1 >= in1) continue;
    const double* src = in + i1 * in0 * step;
    real_t* dst = o + lo0;
    int64_t i = 0;
    if (step == 1) {
      for (; i + LANES <= in0; i += LANES)
        *(VECU*)(dst + i) = __builtin_convertvector(*(const CONCAT(dw_dvec_, SUFFIX)*)(src + i), VEC);
    }
    for (; i < in0; ++i) dst[i] = (real_t)src[i * step];
  }
}

/* One output plane's share of a channel's kernel gradient: for each tap t,
 * the products of x at the tap's offset off[t] and dz over the plane's rows
 * and vectors, summed per lane and added to acc[t * LANES + lane] in double
 * (the caller sums the lanes). x is the channel's padded slab at the plane's
 * first input plane (as for dw_plane); dz the plane's output gradient, rows
 * of g->nv vectors, zero past g->out[0]. Taps go DW_GRAD_TAPS at a time (the
 * last block's spare sums read tap 0 and are dropped); each sum runs in the
 * same order whatever the thread. */
#define DW_GRAD_TAPS 9
static void CONCAT(dw_grad_plane_, SUFFIX)(const struct conv_dw_geometry* g, const real_t* x,
                                           const real_t* dz, const int64_t* off, int64_t taps,
                                           double* acc) {
  const int64_t row = g->s1 * g->p0, nv = g->nv, vectors = g->out[1] * nv;
  for (int64_t t0 = 0; t0 < taps; t0 += DW_GRAD_TAPS) {
    int64_t o[DW_GRAD_TAPS];
    _Pragma("GCC unroll 9") for (int t = 0; t < DW_GRAD_TAPS; ++t)
      o[t] = t0 + t < taps ? off[t0 + t] : off[0];
    VEC a[DW_GRAD_TAPS];
    _Pragma("GCC unroll 9") for (int t = 0; t < DW_GRAD_TAPS; ++t) a[t] = (VEC){0};
    /* vector i: row r, vector v of the row */
    const real_t* xr = x;
    for (int64_t i = 0, v = 0; i < vectors; ++i) {
      const VEC d = *(const VECU*)(dz + i * LANES);
      _Pragma("GCC unroll 9") for (int t = 0; t < DW_GRAD_TAPS; ++t)
        a[t] += *(const VECU*)(xr + v * LANES + o[t]) * d;
      if (++v == nv) {
        v = 0;
        xr += row;
      }
    }
    for (int t = 0; t < DW_GRAD_TAPS && t0 + t < taps; ++t)
      *(CONCAT(dw_dvec_, SUFFIX)*)(acc + (t0 + t) * LANES) +=
          __builtin_convertvector(a[t], CONCAT(dw_dvec_, SUFFIX));
  }
}
#undef DW_GRAD_TAPS
