/* One reduction tile: NT output voxels x FR filters for layers with few
 * filters per group and many channels, vectorised across the input channels
 * (the register tiles of kernel_tile.h would fill only FR of their lanes).
 * Each accumulator vector holds lane-wise partial sums of one (voxel, filter),
 * added up in a fixed lane order at the end, so results stay bit-identical
 * for any thread count. Included by kernel_template.h once per (real_t, FR,
 * NT); needs VEC, VECU and LANES. */

/* xt[t]: the input of voxel t at tap (0, 0, 0) in its group; w: the group's
 * weights [filter][tap][channel]; out[t * FR + j]: the sums. */
static void REDUCE_NAME(SUFFIX, FR, NT)(const struct conv_geometry* g, const real_t* const* xt,
                                       const int64_t* taps, const real_t* w, real_t* out) {
  const int64_t C = g->c, CG = g->cg, ntaps = g->kd * g->kh * g->kw;
  /* a run of channels read together: kw * C when (e, c) is contiguous */
  const int64_t run = g->fold ? g->kw * CG : CG, runs = g->fold ? 1 : g->kw;
  VEC acc[FR][NT];
  _Pragma("GCC unroll 4") for (int j = 0; j < FR; ++j)
    _Pragma("GCC unroll 16") for (int t = 0; t < NT; ++t) acc[j][t] = (VEC){0};
  for (int64_t a = taps[0]; a < taps[1]; ++a)
    for (int64_t b = taps[2]; b < taps[3]; ++b)
      for (int64_t e = 0; e < runs; ++e) {
        const int64_t xo = ((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C;
        const real_t* wr = w + ((a * g->kh + b) * g->kw + e) * CG;
        for (int64_t r = 0; r < run; r += LANES) {
          VEC wv[FR];
          _Pragma("GCC unroll 4") for (int j = 0; j < FR; ++j)
            wv[j] = *(const VECU*)(wr + j * ntaps * CG + r);
          _Pragma("GCC unroll 16") for (int t = 0; t < NT; ++t) {
            const VEC xv = *(const VECU*)(xt[t] + xo + r);
            _Pragma("GCC unroll 4") for (int j = 0; j < FR; ++j) acc[j][t] += xv * wv[j];
          }
        }
      }
  for (int t = 0; t < NT; ++t)
    for (int j = 0; j < FR; ++j) {
      real_t lanes[LANES], sum = 0;
      *(VECU*)lanes = acc[j][t];
      for (int l = 0; l < LANES; ++l) sum += lanes[l];
      out[t * FR + j] = sum;
    }
}
