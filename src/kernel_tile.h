/* One register tile: NT output voxels along W x NV vectors of output channels,
 * reduced over the taps and input channels of a group. Included by
 * kernel_template.h once per (real_t, NV, NT); needs VEC, VECU and LANES. The
 * accumulators live in registers: the loops over t and v are fully unrolled.
 * The voxels are given by pointers, so a tile can span rows (short rows). */

#if NV == 3 /* two groups interleaved: lanes alternate between them */
#define TILE_STEP_AT(xa, xp, wp)                               \
  do {                                                         \
    const VEC w0 = *(const VECU*)(wp);                         \
    _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t) {    \
      acc[0][t] += pair_broadcast(xa[t] + (xp)) * w0;          \
    }                                                          \
  } while (0)
#define X_STEP 2
#define N_ACC 1
#elif NV == 2
#define TILE_STEP_AT(xa, xp, wp)                               \
  do {                                                         \
    const VEC w0 = *(const VECU*)(wp);                         \
    const VEC w1 = *(const VECU*)((wp) + LANES);               \
    _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t) {    \
      const real_t xv = xa[t][(xp)];                           \
      acc[0][t] += xv * w0;                                    \
      acc[1][t] += xv * w1;                                    \
    }                                                          \
  } while (0)
#define X_STEP 1
#define N_ACC 2
#else
#define TILE_STEP_AT(xa, xp, wp)                               \
  do {                                                         \
    const VEC w0 = *(const VECU*)(wp);                         \
    _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t) {    \
      acc[0][t] += xa[t][(xp)] * w0;                           \
    }                                                          \
  } while (0)
#define X_STEP 1
#define N_ACC 1
#endif

#define TILE_STEP(xp, wp) TILE_STEP_AT(xt, xp, wp)

/* xt[t]: the input of output voxel t at tap (0, 0, 0); yt[t]: its outputs.
 * taps: the [a0, a1) x [b0, b1) x [e0, e1) taps along the three axes that
 * reach real input for some voxel of the tile; the others read only zero
 * padding. */
static void TILE_NAME(SUFFIX, NV, NT)(const struct conv_geometry* g, const real_t* const* xt,
                                      const int64_t* taps, const real_t* w,
                                      const real_t* bias, real_t* const* yt, int64_t nf) {
  /* the block's filters (conv_geometry_init's fb for tiles of NV 1, 2 and 3):
   * a constant stride frees a register */
  const int64_t C = g->c, CG = g->cg, FB = (NV == 2 ? 2 : 1) * LANES;
  VEC acc[N_ACC][NT];
  _Pragma("GCC unroll 2") for (int v = 0; v < N_ACC; ++v)
    _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t) acc[v][t] = (VEC){0};
  for (int64_t a = taps[0]; a < taps[1]; ++a)
    for (int64_t b = taps[2]; b < taps[3]; ++b) {
      const int64_t xab = (a * g->dd * g->ph + b * g->dh) * g->pw * C; /* offset of tap row */
      const real_t* wab = w + (a * g->kh + b) * g->kw * CG * FB;
      if (g->fold) { /* (e, c) is one contiguous run of kw * C inputs */
        /* pointers to the run's ends, indexed from minus its length up to 0:
         * fewer values live in the loop, so fewer of the voxels' pointers
         * leave the registers (c3d_conv5a 7 %, mednet_stem 1-2 % faster) */
        const int64_t r1 = taps[5] * C;
        const real_t* xe[NT];
        _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t) xe[t] = xt[t] + xab + r1;
        const real_t* we = wab + r1 * FB;
        const int64_t r0 = taps[4] * C - r1;
        if (r0 >= -8) {
          /* a short run (few channels): straight-line steps entered at its
           * first, no loop to close (mednet_stem's runs of 7: 4-5 % faster;
           * unrolling the loop for long runs slowed c3d_conv5a) */
          switch (r0) {
          case -8: TILE_STEP_AT(xe, -8, we - 8 * FB); /* fall through */
          case -7: TILE_STEP_AT(xe, -7, we - 7 * FB); /* fall through */
          case -6: TILE_STEP_AT(xe, -6, we - 6 * FB); /* fall through */
          case -5: TILE_STEP_AT(xe, -5, we - 5 * FB); /* fall through */
          case -4: TILE_STEP_AT(xe, -4, we - 4 * FB); /* fall through */
          case -3: TILE_STEP_AT(xe, -3, we - 3 * FB); /* fall through */
          case -2: TILE_STEP_AT(xe, -2, we - 2 * FB); /* fall through */
          case -1: TILE_STEP_AT(xe, -1, we - FB); /* fall through */
          default: break;
          }
        } else {
          for (int64_t r = r0; r < 0; ++r) TILE_STEP_AT(xe, r, we + r * FB);
        }
      } else {
        for (int64_t e = taps[4]; e < taps[5]; ++e) {
          const int64_t xe = xab + e * g->dw * C;
          const real_t* we = wab + e * CG * FB;
          for (int64_t c = 0; c < CG; ++c) TILE_STEP(xe + X_STEP * c, we + c * FB);
        }
      }
    }
#if NV == 3
  /* lane j holds filter j / 2 of the block's group j % 2; the two groups'
   * filters (LANES / 2 each) are consecutive in y and bias */
  (void)nf;
  _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t) {
    VEC out = PAIR_UNZIP(acc[0][t]);
    if (bias) out += *(const VECU*)bias;
    *(VECU*)yt[t] = out;
  }
#else
  if (nf == FB) {
    _Pragma("GCC unroll 32") for (int t = 0; t < NT; ++t)
      _Pragma("GCC unroll 2") for (int v = 0; v < NV; ++v) {
        VEC out = acc[v][t];
        if (bias) out += *(const VECU*)(bias + v * LANES);
        *(VECU*)(yt[t] + v * LANES) = out;
      }
  } else { /* the last block of a group: only nf channels are real */
    real_t tmp[NV * LANES];
    for (int t = 0; t < NT; ++t) {
      for (int v = 0; v < NV; ++v) *(VECU*)(tmp + v * LANES) = acc[v][t];
      for (int64_t j = 0; j < nf; ++j) yt[t][j] = tmp[j] + (bias ? bias[j] : (real_t)0);
    }
  }
#endif
}

#undef TILE_STEP_AT
#undef TILE_STEP
#undef X_STEP
#undef N_ACC
