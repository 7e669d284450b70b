/* Conversions between R arrays (column-major doubles) and the internal layouts,
 * fused with the double <-> real_t conversion. Included by layout.c once per real_t. */

/* R array (either data format) -> xp[n][pd][ph][pw][c], zero padding included. */
void CONCAT(pack_input_, SUFFIX)(const struct conv_spec* s, const double* x, real_t* xp,
                                 int nthreads) {
  const int64_t N = s->batch, C = s->channels, D = s->in[0], H = s->in[1], W = s->in[2];
  const int64_t pd = D + s->pad_lo[0] + s->pad_hi[0];
  const int64_t ph = H + s->pad_lo[1] + s->pad_hi[1];
  const int64_t pw = W + s->pad_lo[2] + s->pad_hi[2];
  const int64_t rows = N * pd * ph;
  /* strides of the R array along n, d, h, w, c */
  int64_t sn = 1, sd, sh, sw, sc;
  if (s->layout == LAYOUT_CHANNELS_LAST) {
    sd = N; sh = N * D; sw = N * D * H; sc = N * D * H * W;
  } else {
    sc = N; sd = N * C; sh = N * C * D; sw = N * C * D * H;
  }
  (void)nthreads;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t n = r / (pd * ph), dp = (r / ph) % pd, hp = r % ph;
    real_t* out = xp + r * pw * C;
    int64_t d = dp - s->pad_lo[0], h = hp - s->pad_lo[1];
    if (d < 0 || d >= D || h < 0 || h >= H) {
      memset(out, 0, sizeof(real_t) * (size_t)(pw * C));
      continue;
    }
    int64_t lo = s->pad_lo[2];
    memset(out, 0, sizeof(real_t) * (size_t)(lo * C));
    memset(out + (lo + W) * C, 0, sizeof(real_t) * (size_t)(s->pad_hi[2] * C));
    const double* base = x + n * sn + d * sd + h * sh;
    for (int64_t w = 0; w < W; ++w) {
      real_t* o = out + (lo + w) * C;
      const double* b = base + w * sw;
      for (int64_t c = 0; c < C; ++c) o[c] = (real_t)b[c * sc];
    }
  }
}

/* R kernel (kd, kh, kw, C/G, F) -> wp[g][kd][kh][kw][c][fg_pad], zero-padded columns. */
void CONCAT(pack_weights_, SUFFIX)(const struct conv_spec* s, const double* w, real_t* wp) {
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2];
  const int64_t G = s->groups, CG = s->channels / G, FG = s->filters / G;
  const int64_t FP = conv_fg_padded(s);
  for (int64_t g = 0; g < G; ++g)
    for (int64_t a = 0; a < KD; ++a)
      for (int64_t b = 0; b < KH; ++b)
        for (int64_t e = 0; e < KW; ++e)
          for (int64_t c = 0; c < CG; ++c) {
            real_t* o = wp + ((((g * KD + a) * KH + b) * KW + e) * CG + c) * FP;
            for (int64_t f = 0; f < FP; ++f) {
              int64_t ff = g * FG + f;
              o[f] = f < FG ? (real_t)w[a + KD * (b + KH * (e + KW * (c + CG * ff)))] : (real_t)0;
            }
          }
}

/* y[n][od][oh][ow][f] -> R array in the layer's data format. */
void CONCAT(unpack_output_, SUFFIX)(const struct conv_spec* s, const real_t* y, double* out,
                                    int nthreads) {
  const int64_t N = s->batch, F = s->filters;
  const int64_t D = s->out[0], H = s->out[1], W = s->out[2];
  const int64_t rows = N * D * H;
  int64_t sn = 1, sd, sh, sw, sf;
  if (s->layout == LAYOUT_CHANNELS_LAST) {
    sd = N; sh = N * D; sw = N * D * H; sf = N * D * H * W;
  } else {
    sf = N; sd = N * F; sh = N * F * D; sw = N * F * D * H;
  }
  (void)nthreads;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t n = r / (D * H), d = (r / H) % D, h = r % H;
    const real_t* in = y + r * W * F;
    double* base = out + n * sn + d * sd + h * sh;
    for (int64_t w = 0; w < W; ++w)
      for (int64_t f = 0; f < F; ++f) base[w * sw + f * sf] = (double)in[w * F + f];
  }
}
