/* The windowed pooling's row reduction (pool3d_forward) in the tier's vector
 * width: for elements e of a run that is contiguous in R memory, the max or
 * the sum over a window's (h, w) taps of x[off[t] + e], a vector of elements
 * at a time with the taps in row-major order. Comparisons give whole-lane
 * masks and every select is a bitwise pick, so random data costs no
 * mispredicted branches. Included once by each instruction-set file after
 * VEC_BYTES is set. */
typedef double pool_vd __attribute__((vector_size(VEC_BYTES)));
typedef double pool_vdu __attribute__((vector_size(VEC_BYTES), aligned(8)));
typedef long long pool_vl __attribute__((vector_size(VEC_BYTES)));
typedef long long pool_vlu __attribute__((vector_size(VEC_BYTES), aligned(8)));
typedef float pool_vf __attribute__((vector_size(VEC_BYTES / 2)));
#define POOL_VLEN ((int64_t)(VEC_BYTES / sizeof(double)))

/* Elements 0 .. returned - 1 (whole vectors of the E): as pool_rows in
 * pooling.c, which does the rest. Each value is first rounded to float32
 * when round32 is set. Max: rv[e] the largest number from -inf up, row_nan[e]
 * set when a value is NaN, ri[e] (unless NULL) the offset of the first tap
 * holding rv[e] (off[0] when none is above -inf). Average: rv[e] the sum in
 * tap order. */
static int64_t pool_rows_vec(const double* x, const int64_t* off, int64_t taps, int64_t E,
                             int round32, int average, double* rv, char* row_nan,
                             int64_t* ri) {
  int64_t e = 0;
  for (; e + POOL_VLEN <= E; e += POOL_VLEN) {
    pool_vd acc = {0};
    pool_vl nan = {0}, arg = {0};
    if (!average) {
      acc -= (pool_vd){0} + __builtin_inf();
      arg += off[0];
    }
    for (int64_t t = 0; t < taps; ++t) {
      pool_vd v = *(const pool_vdu*)(x + off[t] + e);
      if (round32) v = __builtin_convertvector(__builtin_convertvector(v, pool_vf), pool_vd);
      if (average) {
        acc += v;
        continue;
      }
      const pool_vl larger = v > acc; /* never for NaN */
      nan |= v != v;
      acc = (pool_vd)((larger & (pool_vl)v) | (~larger & (pool_vl)acc));
      arg = (larger & ((pool_vl){0} + off[t])) | (~larger & arg);
    }
    *(pool_vdu*)(rv + e) = acc;
    if (average) continue;
    for (int64_t l = 0; l < POOL_VLEN; ++l) row_nan[e + l] = nan[l] != 0;
    if (ri != NULL) *(pool_vlu*)(ri + e) = arg;
  }
  return e;
}
#undef POOL_VLEN
