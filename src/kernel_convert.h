/* Contiguous double <-> float conversion in the tier's vector width, for the
 * paths that read or write R arrays in runs (the patch GEMM). Included once
 * by each instruction-set file after VEC_BYTES is set. */
typedef double conv_vd __attribute__((vector_size(2 * VEC_BYTES)));
typedef float conv_vf __attribute__((vector_size(VEC_BYTES)));
typedef double conv_vdu __attribute__((vector_size(2 * VEC_BYTES), aligned(8)));
typedef float conv_vfu __attribute__((vector_size(VEC_BYTES), aligned(4)));
#define CONV_VLEN ((int64_t)(VEC_BYTES / sizeof(float)))

static void doubles_to_floats(const double* in, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + CONV_VLEN <= n; i += CONV_VLEN) {
    *(conv_vfu*)(out + i) = __builtin_convertvector(*(const conv_vdu*)(in + i), conv_vf);
  }
  for (; i < n; ++i) out[i] = (float)in[i];
}

static void floats_to_doubles(const float* in, double* out, int64_t n) {
  int64_t i = 0;
  for (; i + CONV_VLEN <= n; i += CONV_VLEN) {
    *(conv_vdu*)(out + i) = __builtin_convertvector(*(const conv_vfu*)(in + i), conv_vd);
  }
  for (; i < n; ++i) out[i] = (double)in[i];
}
#undef CONV_VLEN

/* The same runs into outputs too large to stay in cache (conv_stream_output):
 * with the tier's non-temporal stores (STREAM_PD, where it has them), which
 * write whole lines to memory without first reading them in. Doubles before
 * the first vector-aligned one, and the tail, take plain stores. A thread
 * ends its streamed runs with stream_fence() before others read them. */
#ifdef STREAM_PD
typedef double conv_vd1 __attribute__((vector_size(VEC_BYTES)));
typedef double conv_vd1u __attribute__((vector_size(VEC_BYTES), aligned(8)));
typedef float conv_vfh __attribute__((vector_size(VEC_BYTES / 2), aligned(4)));
#define CONV_DLEN ((int64_t)(VEC_BYTES / sizeof(double)))
/* doubles before the first one aligned to a vector, at most n */
static int64_t stream_head(const double* out, int64_t n) {
  const int64_t head = (int64_t)((0 - (uintptr_t)out) % VEC_BYTES / sizeof(double));
  return head < n ? head : n;
}
static void floats_to_doubles_stream(const float* in, double* out, int64_t n) {
  int64_t i = stream_head(out, n);
  for (int64_t j = 0; j < i; ++j) out[j] = (double)in[j];
  for (; i + CONV_DLEN <= n; i += CONV_DLEN)
    STREAM_PD(out + i, __builtin_convertvector(*(const conv_vfh*)(in + i), conv_vd1));
  for (; i < n; ++i) out[i] = (double)in[i];
}
static void doubles_stream(const double* in, double* out, int64_t n) {
  int64_t i = stream_head(out, n);
  for (int64_t j = 0; j < i; ++j) out[j] = in[j];
  for (; i + CONV_DLEN <= n; i += CONV_DLEN) STREAM_PD(out + i, *(const conv_vd1u*)(in + i));
  for (; i < n; ++i) out[i] = in[i];
}
static void stream_fence(void) { STREAM_FENCE(); }
#undef CONV_DLEN
#else
#define floats_to_doubles_stream floats_to_doubles
static void doubles_stream(const double* in, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i];
}
static void stream_fence(void) {}
#endif

/* One vector of a layer's type (VEC_BYTES) into doubles at o, streamed past
 * the caches when stream is set and the tier can (o then aligned to
 * VEC_BYTES), for tiles that write R arrays from their registers. Floats go
 * as two halves, each converted into one vector of doubles. */
typedef double conv_vd_one __attribute__((vector_size(VEC_BYTES)));
typedef double conv_vd_oneu __attribute__((vector_size(VEC_BYTES), aligned(8)));
static inline void put_doubles_vec(double* o, conv_vd_one v, int stream) {
#ifdef STREAM_PD
  if (stream) {
    STREAM_PD(o, v);
    return;
  }
#else
  (void)stream;
#endif
  *(conv_vd_oneu*)o = v;
}
/* A vector of floats as two vectors of doubles, its lower and upper half. */
static inline void float_halves(conv_vf v, conv_vd_one* lo, conv_vd_one* hi) {
#ifdef FLOAT_HALVES_TO_DOUBLES /* the tier's converts of each half */
  FLOAT_HALVES_TO_DOUBLES(v, *lo, *hi);
#else
  /* halves of the converted vector: no address of v is taken, which once
   * inlined into a tile would keep its accumulators in memory */
  const conv_vd d = __builtin_convertvector(v, conv_vd);
  memcpy(lo, &d, sizeof *lo);
  memcpy(hi, (const char*)&d + sizeof *lo, sizeof *hi);
#endif
}
static inline void put_vec_f32(double* o, conv_vf v, int stream) {
  conv_vd_one lo, hi;
  float_halves(v, &lo, &hi);
  put_doubles_vec(o, lo, stream);
  put_doubles_vec(o + VEC_BYTES / sizeof(double), hi, stream);
}
static inline void put_vec_f64(double* o, conv_vd_one v, int stream) {
  put_doubles_vec(o, v, stream);
}

/* Two vectors of doubles woven into one run at o: o[2q] = u[q], o[2q + 1] =
 * v[q] (written as two vectors; the element picks compile to permutes). */
static inline void put_doubles_pair(double* o, conv_vd_one u, conv_vd_one v, int stream) {
#if VEC_BYTES == 64
  const conv_vd_one lo = {u[0], v[0], u[1], v[1], u[2], v[2], u[3], v[3]};
  const conv_vd_one hi = {u[4], v[4], u[5], v[5], u[6], v[6], u[7], v[7]};
#elif VEC_BYTES == 32
  const conv_vd_one lo = {u[0], v[0], u[1], v[1]}, hi = {u[2], v[2], u[3], v[3]};
#else
  const conv_vd_one lo = {u[0], v[0]}, hi = {u[1], v[1]};
#endif
  put_doubles_vec(o, lo, stream);
  put_doubles_vec(o + VEC_BYTES / sizeof(double), hi, stream);
}
/* Two vectors of a layer's type woven into doubles at o: o[2q] = u[q], o[2q
 * + 1] = v[q] for every lane q (the two depth taps of a patch input
 * gradient, struct direct_out's pairs). */
static inline void put_pair_f32(double* o, conv_vf u, conv_vf v, int stream) {
  conv_vd_one ulo, uhi, vlo, vhi;
  float_halves(u, &ulo, &uhi);
  float_halves(v, &vlo, &vhi);
  put_doubles_pair(o, ulo, vlo, stream);
  put_doubles_pair(o + 2 * (VEC_BYTES / sizeof(double)), uhi, vhi, stream);
}
static inline void put_pair_f64(double* o, conv_vd_one u, conv_vd_one v, int stream) {
  put_doubles_pair(o, u, v, stream);
}

/* Every step-th double of a run into a layer's type: out[i] = in[i * step]
 * for i < n (strided patch rows and planar input rows; load_strided_* sends
 * step 1 to the run converters instead). A tier may list its own vector float
 * version in its table. */
static void strided_to_floats_generic(const double* in, int64_t step, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = (float)in[i * step];
}
static void strided_to_doubles(const double* in, int64_t step, double* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = in[i * step];
}

/* R columns (one run of voxels per channel, ldc apart) into channel-fastest
 * rows (ldr apart): out[i * ldr + c] = in[src[c] * ldc + i] (src NULL: c
 * itself) for i < m voxels, c < n channels. This scalar version goes 16
 * channels at a time so the rows being filled stay in L1, and stores through
 * the caches whatever `stream` asks; a tier may list its own vector version
 * in its table instead. */
#define CONV3D_COLUMNS_TO_ROWS(real_t, SUFFIX)                                              \
  static void CONCAT(columns_to_rows_generic_, SUFFIX)(const double* in, int64_t ldc,       \
                                                       const int64_t* src, int64_t m,       \
                                                       int64_t n, real_t* out, int64_t ldr, \
                                                       int stream) {                        \
    (void)stream;                                                                           \
    for (int64_t c0 = 0; c0 < n; c0 += 16) {                                                \
      const int64_t c1 = c0 + 16 < n ? c0 + 16 : n;                                         \
      for (int64_t i = 0; i < m; ++i)                                                       \
        for (int64_t c = c0; c < c1; ++c)                                                   \
          out[i * ldr + c] = (real_t)in[(src ? src[c] : c) * ldc + i];                      \
    }                                                                                       \
  }
CONV3D_COLUMNS_TO_ROWS(float, f32)
CONV3D_COLUMNS_TO_ROWS(double, f64)
#undef CONV3D_COLUMNS_TO_ROWS

/* Channel-fastest rows (ldr apart) in a layer's type into R columns (ldc
 * apart), the mirror of columns_to_rows_*: out[c * ldc + i] = in[i * ldr + c]
 * for i < m voxels, c < n channels (a forward tile into the R output). Each
 * column's run of up to 64 voxels is gathered into L1, then written as one
 * run, past the caches when stream is set (a large output); a tier may list
 * its own vector version. */
#define CONV3D_ROWS_TO_COLUMNS(real_t, SUFFIX, RUN, STREAM_RUN)                                 \
  static void CONCAT(rows_to_columns_generic_, SUFFIX)(const real_t* in, int64_t ldr,         \
                                                       int64_t m, int64_t n, double* out,     \
                                                       int64_t ldc, int stream) {             \
    real_t run[64];                                                                           \
    for (int64_t c = 0; c < n; ++c)                                                           \
      for (int64_t i0 = 0; i0 < m; i0 += 64) {                                                \
        const int64_t len = m - i0 < 64 ? m - i0 : 64;                                        \
        for (int64_t i = 0; i < len; ++i) run[i] = in[(i0 + i) * ldr + c];                    \
        if (stream) STREAM_RUN(run, out + c * ldc + i0, len);                                 \
        else RUN(run, out + c * ldc + i0, len);                                               \
      }                                                                                       \
  }
static void copy_doubles(const double* in, double* out, int64_t n) {
  memcpy(out, in, sizeof(double) * (size_t)n);
}
CONV3D_ROWS_TO_COLUMNS(float, f32, floats_to_doubles, floats_to_doubles_stream)
CONV3D_ROWS_TO_COLUMNS(double, f64, copy_doubles, doubles_stream)
#undef CONV3D_ROWS_TO_COLUMNS

/* rows x cols elements of a layer's type (ldi apart), transposed: out[j *
 * ldo + i] = in[i * ldi + j] (the forward's packed weights turned into the
 * input gradient's, pack_weights_transposed_*; a block of output gradient
 * rows turned into the patch kernel gradient's rows of positions; rows woven
 * into one run with ldo = rows, weave_run_*). This
 * scalar version ignores `stream`; a tier may list its own vector version,
 * which then writes out past the caches. */
#define CONV3D_TRANSPOSE(real_t, SUFFIX)                                                          \
  static void CONCAT(transpose_generic_, SUFFIX)(const real_t* in, int64_t ldi, int64_t rows,    \
                                                 int64_t cols, real_t* out, int64_t ldo,          \
                                                 int stream) {                                    \
    (void)stream;                                                                                 \
    for (int64_t j = 0; j < cols; ++j)                                                            \
      for (int64_t i = 0; i < rows; ++i) out[j * ldo + i] = in[i * ldi + j];                      \
  }
CONV3D_TRANSPOSE(float, f32)
CONV3D_TRANSPOSE(double, f64)
#undef CONV3D_TRANSPOSE
