/* Run-time choice of the micro-kernel tier: the best the CPU supports, chosen once
 * by CPUID, lowered on request (CONV3D_KERNEL / options(conv3d.kernel)) so tests
 * can exercise every tier on one machine. */
#include "conv3d.h"

static int active = -1;

enum cpu_tier cpu_best_tier(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  if (kernels_avx512.span_f32 && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq")) {
    return TIER_AVX512;
  }
  if (kernels_avx2.span_f32 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return TIER_AVX2;
  }
#endif
  return TIER_GENERIC;
}

enum cpu_tier cpu_active_tier(void) {
  if (active < 0) active = cpu_best_tier();
  return (enum cpu_tier)active;
}

int cpu_set_tier(enum cpu_tier tier) {
  enum cpu_tier best = cpu_best_tier();
  if (tier > best) return 0;
  active = tier;
  return 1;
}

const char* cpu_tier_name(enum cpu_tier tier) {
  switch (tier) {
  case TIER_AVX512: return "avx512";
  case TIER_AVX2: return "avx2";
  default: return "generic";
  }
}

const struct kernel_table* cpu_kernels(void) {
  switch (cpu_active_tier()) {
  case TIER_AVX512: return &kernels_avx512;
  case TIER_AVX2: return &kernels_avx2;
  default: return &kernels_generic;
  }
}
