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
