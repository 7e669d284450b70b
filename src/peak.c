/* The physical limit the benchmark divides by: independent FMAs kept in
 * registers, one stream per thread (BENCH.md). Uses the widest vectors the
 * active kernel tier uses, so the percentage compares like with like. */
#include "conv3d.h"
#include "omp_shim.h"
#include <time.h>

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define PEAK_CHAINS 12

/* 12 named accumulators (not an array, which GCC keeps in memory at -O2), each an
 * independent chain of FMAs: acc = acc * mul + add. Twelve hide the FMA latency
 * on two pipes and, with the two constants, fit the 16 registers of AVX2. */
#define PEAK_STEP(a) a = a * mul + add;
#define PEAK_ALL(M) M(a0) M(a1) M(a2) M(a3) M(a4) M(a5) M(a6) M(a7) \
  M(a8) M(a9) M(a10) M(a11)
#define PEAK_BODY(vec_t, lanes)                                                         \
  const vec_t mul = (vec_t){0} + (real_in)0.999999, add = (vec_t){0} + (real_in)1e-7; \
  vec_t a0 = mul, a1 = mul + 1, a2 = mul + 2, a3 = mul + 3, a4 = mul + 4, a5 = mul + 5, \
        a6 = mul + 6, a7 = mul + 7, a8 = mul + 8, a9 = mul + 9, a10 = mul + 10,        \
        a11 = mul + 11;                                                                 \
  for (int64_t it = 0; it < iters; ++it) { PEAK_ALL(PEAK_STEP) }                       \
  vec_t s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;                \
  real_in sum = 0;                                                                      \
  for (int j = 0; j < lanes; ++j) sum += s[j];                                          \
  return (double)sum;

#if defined(__x86_64__) && defined(__GNUC__)
#define real_in float
typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
__attribute__((target("avx512f,fma"))) static double fma_avx512_f32(int64_t iters) { PEAK_BODY(v16f, 16) }
__attribute__((target("avx2,fma"))) static double fma_avx2_f32(int64_t iters) { PEAK_BODY(v8f, 8) }
#undef real_in
#define real_in double
typedef double v8d __attribute__((vector_size(64)));
typedef double v4d __attribute__((vector_size(32)));
__attribute__((target("avx512f,fma"))) static double fma_avx512_f64(int64_t iters) { PEAK_BODY(v8d, 8) }
__attribute__((target("avx2,fma"))) static double fma_avx2_f64(int64_t iters) { PEAK_BODY(v4d, 4) }
#undef real_in
#endif
#define real_in float
typedef float v4f __attribute__((vector_size(16)));
static double fma_generic_f32(int64_t iters) { PEAK_BODY(v4f, 4) }
#undef real_in
#define real_in double
typedef double v2d __attribute__((vector_size(16)));
static double fma_generic_f64(int64_t iters) { PEAK_BODY(v2d, 2) }
#undef real_in

/* GFLOP/s of `nthreads` threads each running the FMA loop for ~0.2 s. */
double peak_gflops(int nthreads, int f64) {
  enum cpu_tier tier = cpu_active_tier();
  double (*run)(int64_t) = f64 ? fma_generic_f64 : fma_generic_f32;
  int lanes = f64 ? 2 : 4;
#if defined(__x86_64__) && defined(__GNUC__)
  if (tier == TIER_AVX512) { run = f64 ? fma_avx512_f64 : fma_avx512_f32; lanes = f64 ? 8 : 16; }
  if (tier == TIER_AVX2) { run = f64 ? fma_avx2_f64 : fma_avx2_f32; lanes = f64 ? 4 : 8; }
#endif
  const int64_t iters = 20000000;
  double sink = 0, start = now_seconds();
  #pragma omp parallel for num_threads(nthreads) reduction(+ : sink) schedule(static, 1)
  for (int t = 0; t < nthreads; ++t) sink += run(iters);
  double seconds = now_seconds() - start;
  (void)sink;
  return 2.0 * PEAK_CHAINS * lanes * (double)iters * nthreads / seconds / 1e9;
}
