/* Winograd F(2x2x2, 3x3x3) micro-kernels (conv_winograd.c drives them): the
 * input transform of one tile, the products of a transform point's tiles with
 * its transformed kernel, and the output transform of one tile. Transforms run
 * across vectors of channels or filters, one axis at a time; the 4 x 4 x 4
 * points of a tile are indexed (z * 4 + y) * 4 + x. Included by
 * kernel_template.h once per real_t, after LANES, VEC and VECU. */

/* B^T of F(2, 3) along one axis, in place on points p[0], p[st], p[2st], p[3st] */
static inline void CONCAT(wino_bt_, SUFFIX)(VEC* p, int st) {
  const VEC d0 = p[0], d1 = p[st], d2 = p[2 * st], d3 = p[3 * st];
  p[0] = d0 - d2;
  p[st] = d1 + d2;
  p[2 * st] = d2 - d1;
  p[3 * st] = d1 - d3;
}

/* Input transform of one tile: the 4 x 4 x 4 voxels from x (axis strides s0,
 * s1 and s2, channels contiguous) into v[point * ldp + channel], c channels, a
 * multiple of LANES. Each row of 4 voxels is transformed as it is read; then
 * each of the 4 columns of 16 (z, y) values is transformed along y and z in
 * registers and stored. Returns whether the sum of the 8 corner points
 * (0 or 3 along each axis) is not finite (sum_not_finite_*). Along an axis,
 * point 0 is d0 - d2 and point 3 is d1 - d3, so every input reaches a
 * corner point. Summing all 64 points cost unet_l2 2-3 %. */
static int CONCAT(wino_in_, SUFFIX)(const real_t* x, int64_t s0, int64_t s1, int64_t s2,
                                    int64_t c, real_t* v, int64_t ldp) {
  VEC sum = (VEC){0};
  for (int64_t ch = 0; ch < c; ch += LANES) {
    VEC t[64];
    _Pragma("GCC unroll 16") for (int z = 0; z < 4; ++z)
      _Pragma("GCC unroll 16") for (int y = 0; y < 4; ++y) {
        const real_t* xr = x + z * s0 + y * s1 + ch;
        VEC* r = t + (z * 4 + y) * 4;
        _Pragma("GCC unroll 16") for (int w = 0; w < 4; ++w) r[w] = *(const VECU*)(xr + w * s2);
        CONCAT(wino_bt_, SUFFIX)(r, 1);
      }
    _Pragma("GCC unroll 16") for (int w = 0; w < 4; ++w) {
      VEC q[16];
      _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) q[l] = t[l * 4 + w];
      _Pragma("GCC unroll 16") for (int z = 0; z < 4; ++z) CONCAT(wino_bt_, SUFFIX)(q + 4 * z, 1);
      _Pragma("GCC unroll 16") for (int y = 0; y < 4; ++y) CONCAT(wino_bt_, SUFFIX)(q + y, 4);
      _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) *(VECU*)(v + (l * 4 + w) * ldp + ch) = q[l];
      if (w == 0 || w == 3) sum += (q[0] + q[3]) + (q[12] + q[15]);
    }
  }
  return CONCAT(sum_not_finite_, SUFFIX)(sum);
}

/* One transform point's products: WT_MAX tiles x two vectors of filters,
 * summed over nseg segments (sub-kernels) of c channels in order. Tile j's
 * values of segment g start at rows[g * WT_MAX + j] + off; u holds
 * [segment][channel][2 * LANES]; the sums go to rows of m, ldm apart. */
static void CONCAT(wino_gemm_, SUFFIX)(int64_t nseg, int64_t c, const real_t* const* rows,
                                       int64_t off, const real_t* u, real_t* m, int64_t ldm) {
  VEC acc0[WT_MAX], acc1[WT_MAX];
  _Pragma("GCC unroll 32") for (int j = 0; j < WT_MAX; ++j) acc0[j] = acc1[j] = (VEC){0};
  for (int64_t g = 0; g < nseg; ++g) {
    const real_t* v[WT_MAX];
    _Pragma("GCC unroll 32") for (int j = 0; j < WT_MAX; ++j) v[j] = rows[g * WT_MAX + j] + off;
    for (int64_t k = 0; k < c; ++k) {
      const VEC u0 = *(const VECU*)(u + k * 2 * LANES);
      const VEC u1 = *(const VECU*)(u + k * 2 * LANES + LANES);
      _Pragma("GCC unroll 32") for (int j = 0; j < WT_MAX; ++j) {
        const real_t vj = v[j][k];
        acc0[j] += vj * u0;
        acc1[j] += vj * u1;
      }
    }
    u += c * 2 * LANES;
  }
  _Pragma("GCC unroll 32") for (int j = 0; j < WT_MAX; ++j) {
    *(VECU*)(m + j * ldm) = acc0[j];
    *(VECU*)(m + j * ldm + LANES) = acc1[j];
  }
}

/* A^T of F(2, 3) along one axis: points p[0], p[st], p[2st], p[3st] to two */
static inline void CONCAT(wino_at_, SUFFIX)(const VEC* p, int st, VEC* q, int qst) {
  q[0] = p[0] + p[st] + p[2 * st];
  q[qst] = p[st] - p[2 * st] - p[3 * st];
}

/* The output transform of one vector of filters: d[64] to out[8], indexed
 * (z * 2 + y) * 2 + x; each row of 4 along x first, then each of the 2
 * columns of 16 (z, y) values along y and z in registers. */
static inline void CONCAT(wino_out_vec_, SUFFIX)(const VEC* d, VEC* out) {
  VEC a[32];
  _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) CONCAT(wino_at_, SUFFIX)(d + 4 * l, 1, a + 2 * l, 1);
  _Pragma("GCC unroll 16") for (int w = 0; w < 2; ++w) {
    VEC q[16], b[8];
    _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) q[l] = a[l * 2 + w];
    _Pragma("GCC unroll 16") for (int z = 0; z < 4; ++z) CONCAT(wino_at_, SUFFIX)(q + 4 * z, 1, b + 2 * z, 1);
    _Pragma("GCC unroll 16") for (int y = 0; y < 2; ++y) CONCAT(wino_at_, SUFFIX)(b + y, 2, out + y * 2 + w, 4);
  }
}

/* Output transform of one tile: m[point * ldp + filter] for f filters, plus
 * bias (NULL: none), into y + z * sz + y * sy + x * sx (filters contiguous). */
static void CONCAT(wino_out_, SUFFIX)(const real_t* m, int64_t ldp, int64_t f,
                                      const real_t* bias, real_t* y, int64_t sz, int64_t sy,
                                      int64_t sx) {
  for (int64_t j = 0; j < f; j += LANES) {
    const int64_t n = f - j < LANES ? f - j : LANES;
    VEC d[64], out[8], b = (VEC){0};
    if (n == LANES) {
      _Pragma("GCC unroll 64") for (int p = 0; p < 64; ++p) d[p] = *(const VECU*)(m + p * ldp + j);
      if (bias) b = *(const VECU*)(bias + j);
    } else { /* the last filters, through a full vector */
      for (int p = 0; p < 64; ++p) {
        d[p] = (VEC){0};
        memcpy(&d[p], m + p * ldp + j, sizeof(real_t) * (size_t)n);
      }
      if (bias) memcpy(&b, bias + j, sizeof(real_t) * (size_t)n);
    }
    CONCAT(wino_out_vec_, SUFFIX)(d, out);
    _Pragma("GCC unroll 64") for (int z = 0; z < 2; ++z)
      _Pragma("GCC unroll 64") for (int w = 0; w < 2; ++w)
        _Pragma("GCC unroll 64") for (int x = 0; x < 2; ++x) {
          const VEC o = out[(z * 2 + w) * 2 + x] + b;
          real_t* dst = y + z * sz + w * sy + x * sx + j;
          if (n == LANES) *(VECU*)dst = o;
          else memcpy(dst, &o, sizeof(real_t) * (size_t)n);
        }
  }
}
