/* The direct channels-last convolution of one output row (fixed n, od, oh), all
 * output widths and channels. Register tile: CONV_WTILE output voxels along W x
 * CONV_FBLOCK output channels, reduced over taps x input channels of the group,
 * reading the padded input in place. Every output element is summed in the same
 * order (taps, then channels) whatever the tiling or thread split, so results are
 * bit-identical across thread counts. Included once per element type by each
 * instruction-set file, which sets the target before including it. */

/* CONV_FBLOCK output channels as one vector: GCC/clang vector extensions, which
 * each instruction-set file compiles to its own registers (1-2 zmm, 2-4 ymm, ...). */
typedef real_t CONCAT(vec_, SUFFIX) __attribute__((vector_size(CONV_FBLOCK * sizeof(real_t))));
typedef real_t CONCAT(vecu_, SUFFIX)
    __attribute__((vector_size(CONV_FBLOCK * sizeof(real_t)), aligned(sizeof(real_t))));

static void CONCAT(row_tile_full_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                           const real_t* w, real_t out[CONV_WTILE][CONV_FBLOCK]) {
  typedef CONCAT(vec_, SUFFIX) vec;
  typedef CONCAT(vecu_, SUFFIX) vecu;
  const int64_t C = g->c, CG = g->cg, FP = g->fg_pad, xs = g->sw * C;
  vec acc[CONV_WTILE];
  for (int t = 0; t < CONV_WTILE; ++t) acc[t] = (vec){0};
  for (int64_t a = 0; a < g->kd; ++a)
    for (int64_t b = 0; b < g->kh; ++b)
      for (int64_t e = 0; e < g->kw; ++e) {
        const real_t* xt = x + ((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C;
        const real_t* wt = w + ((a * g->kh + b) * g->kw + e) * CG * FP;
        for (int64_t c = 0; c < CG; ++c) {
          const vec wv = *(const vecu*)(wt + c * FP);
          for (int t = 0; t < CONV_WTILE; ++t) acc[t] += xt[t * xs + c] * wv;
        }
      }
  for (int t = 0; t < CONV_WTILE; ++t) *(vecu*)out[t] = acc[t];
}

static void CONCAT(row_tile_part_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                           const real_t* w, int nt,
                                           real_t acc[CONV_WTILE][CONV_FBLOCK]) {
  const int64_t C = g->c, CG = g->cg, FP = g->fg_pad, xs = g->sw * C;
  for (int t = 0; t < CONV_WTILE; ++t)
    for (int j = 0; j < CONV_FBLOCK; ++j) acc[t][j] = 0;
  for (int64_t a = 0; a < g->kd; ++a)
    for (int64_t b = 0; b < g->kh; ++b)
      for (int64_t e = 0; e < g->kw; ++e) {
        const real_t* xt = x + ((a * g->dd * g->ph + b * g->dh) * g->pw + e * g->dw) * C;
        const real_t* wt = w + ((a * g->kh + b) * g->kw + e) * CG * FP;
        for (int64_t c = 0; c < CG; ++c) {
          const real_t* wc = wt + c * FP;
          for (int t = 0; t < nt; ++t) {
            const real_t xv = xt[t * xs + c];
            for (int j = 0; j < CONV_FBLOCK; ++j) acc[t][j] += xv * wc[j];
          }
        }
      }
}

/* x: padded input at (n, od*sd, oh*sh, 0, 0); y: the output row y[ow][f]. */
static void CONCAT(conv_row_, SUFFIX)(const struct conv_geometry* g, const real_t* x,
                                      const real_t* wp, const real_t* bias, real_t* y) {
  real_t acc[CONV_WTILE][CONV_FBLOCK];
  const int64_t taps = g->kd * g->kh * g->kw;
  for (int64_t grp = 0; grp < g->groups; ++grp) {
    const real_t* xg = x + grp * g->cg;
    const real_t* wg = wp + grp * taps * g->cg * g->fg_pad;
    for (int64_t fb = 0; fb < g->fg; fb += CONV_FBLOCK) {
      const int64_t nf = g->fg - fb < CONV_FBLOCK ? g->fg - fb : CONV_FBLOCK;
      for (int64_t ow = 0; ow < g->wo; ow += CONV_WTILE) {
        const int nt = g->wo - ow < CONV_WTILE ? (int)(g->wo - ow) : CONV_WTILE;
        const real_t* xt = xg + ow * g->sw * g->c;
        if (nt == CONV_WTILE) {
          CONCAT(row_tile_full_, SUFFIX)(g, xt, wg + fb, acc);
        } else {
          CONCAT(row_tile_part_, SUFFIX)(g, xt, wg + fb, nt, acc);
        }
        const int64_t f0 = grp * g->fg + fb;
        for (int t = 0; t < nt; ++t) {
          real_t* yo = y + (ow + t) * g->f + f0;
          for (int64_t j = 0; j < nf; ++j) yo[j] = acc[t][j] + (bias ? bias[f0 + j] : (real_t)0);
        }
      }
    }
  }
}
