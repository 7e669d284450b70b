/* Conversions between R arrays (column-major doubles) and the internal layouts,
 * fused with the double <-> real_t conversion. Included by layout.c once per real_t. */

/* R array (either data format) -> xp[n][pd][ph][pw][c], zero padding included.
 * R's fastest axes are n then d (channels_last) or n then c (channels_first);
 * channels_last is copied in blocks of LAYOUT_DBLOCK depths so that reads from R
 * run along d instead of jumping a whole volume per channel. */
void CONCAT(pack_input_, SUFFIX)(const struct conv_spec* s, const double* x, real_t* xp,
                                 int nthreads) {
  const int64_t N = s->batch, C = s->channels, D = s->in[0], H = s->in[1], W = s->in[2];
  const int64_t pd = D + s->pad_lo[0] + s->pad_hi[0];
  const int64_t ph = H + s->pad_lo[1] + s->pad_hi[1];
  const int64_t pw = W + s->pad_lo[2] + s->pad_hi[2];
  const int64_t lo_d = s->pad_lo[0], lo_h = s->pad_lo[1], lo_w = s->pad_lo[2];
  const int64_t row = pw * C;
  /* zero rows wholly in the padding, and the W padding of data rows */
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t r = 0; r < N * pd * ph; ++r) {
    int64_t dp = (r / ph) % pd, hp = r % ph;
    real_t* out = xp + r * row;
    if (dp < lo_d || dp >= lo_d + D || hp < lo_h || hp >= lo_h + H) {
      memset(out, 0, sizeof(real_t) * (size_t)row);
    } else {
      memset(out, 0, sizeof(real_t) * (size_t)(lo_w * C));
      memset(out + (lo_w + W) * C, 0, sizeof(real_t) * (size_t)(s->pad_hi[2] * C));
    }
  }
  if (s->layout == LAYOUT_CHANNELS_LAST) {
    const int64_t sd = N, sh = N * D, sw = N * D * H, sc = N * D * H * W;
    const int64_t nblocks = (D + LAYOUT_DBLOCK - 1) / LAYOUT_DBLOCK;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t job = 0; job < N * H * nblocks; ++job) {
      int64_t n = job / (H * nblocks), h = (job / nblocks) % H, d0 = (job % nblocks) * LAYOUT_DBLOCK;
      int64_t d1 = d0 + LAYOUT_DBLOCK < D ? d0 + LAYOUT_DBLOCK : D;
      for (int64_t c = 0; c < C; ++c)
        for (int64_t w = 0; w < W; ++w) {
          const double* in = x + n + h * sh + w * sw + c * sc;
          real_t* out = xp + (((n * pd + lo_d) * ph + lo_h + h) * pw + lo_w + w) * C + c;
          for (int64_t d = d0; d < d1; ++d) out[d * ph * row] = (real_t)in[d * sd];
        }
    }
  } else {
    const int64_t sc = N, sd = N * C, sh = N * C * D, sw = N * C * D * H;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < N * D * H; ++r) {
      int64_t n = r / (D * H), d = (r / H) % D, h = r % H;
      real_t* out = xp + (((n * pd + lo_d + d) * ph + lo_h + h) * pw + lo_w) * C;
      const double* in = x + n + d * sd + h * sh;
      for (int64_t w = 0; w < W; ++w)
        for (int64_t c = 0; c < C; ++c) out[w * C + c] = (real_t)in[w * sw + c * sc];
    }
  }
}

/* R kernel (kd, kh, kw, C/G, F) -> wp[g][block][kd][kh][kw][c][fb] with zero columns
 * past each group's filters, so a block's weights stream contiguously; depthwise
 * layers get wp[kd][kh][kw][c] instead (vectorised over channels). */
void CONCAT(pack_weights_, SUFFIX)(const struct conv_spec* s, const struct conv_geometry* geo,
                                   const double* w, real_t* wp) {
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2];
  const int64_t G = s->groups, CG = s->channels / G, FG = s->filters / G;
  const int64_t taps = KD * KH * KW, FB = geo->fb;
  /* kernels walk taps as t = (a * KH + b) * KW + e; R stores a + KD * (b + KH * e) */
  #define R_TAP(t) ((t) / (KH * KW) + KD * (((t) / KW) % KH + KH * ((t) % KW)))
  if (geo->depthwise) {
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t c = 0; c < s->channels; ++c) wp[t * s->channels + c] = (real_t)w[R_TAP(t) + taps * c];
    return;
  }
  const int64_t nblocks = geo->fg_pad / FB;
  for (int64_t g = 0; g < G; ++g)
    for (int64_t blk = 0; blk < nblocks; ++blk)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < CG; ++c) {
          real_t* o = wp + (((g * nblocks + blk) * taps + t) * CG + c) * FB;
          for (int64_t j = 0; j < FB; ++j) {
            int64_t f = blk * FB + j;
            o[j] = f < FG ? (real_t)w[R_TAP(t) + taps * (c + CG * (g * FG + f))] : (real_t)0;
          }
        }
  #undef R_TAP
}

/* y[n][od][oh][ow][f] -> R array in the layer's data format; channels_last in
 * blocks of depths so that writes to R run along d (see pack_input). */
void CONCAT(unpack_output_, SUFFIX)(const struct conv_spec* s, const real_t* y, double* out,
                                    int nthreads) {
  const int64_t N = s->batch, F = s->filters;
  const int64_t D = s->out[0], H = s->out[1], W = s->out[2];
  if (s->layout == LAYOUT_CHANNELS_LAST) {
    const int64_t sd = N, sh = N * D, sw = N * D * H, sf = N * D * H * W;
    const int64_t nblocks = (D + LAYOUT_DBLOCK - 1) / LAYOUT_DBLOCK;
    const int64_t dstride = H * W * F;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t job = 0; job < N * H * nblocks; ++job) {
      int64_t n = job / (H * nblocks), h = (job / nblocks) % H, d0 = (job % nblocks) * LAYOUT_DBLOCK;
      int64_t d1 = d0 + LAYOUT_DBLOCK < D ? d0 + LAYOUT_DBLOCK : D;
      for (int64_t f = 0; f < F; ++f)
        for (int64_t w = 0; w < W; ++w) {
          const real_t* in = y + ((n * D * H + h) * W + w) * F + f;
          double* o = out + n + h * sh + w * sw + f * sf;
          for (int64_t d = d0; d < d1; ++d) o[d * sd] = (double)in[d * dstride];
        }
    }
  } else {
    const int64_t sf = N, sd = N * F, sh = N * F * D, sw = N * F * D * H;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < N * D * H; ++r) {
      int64_t n = r / (D * H), d = (r / H) % D, h = r % H;
      const real_t* in = y + r * W * F;
      double* base = out + n + d * sd + h * sh;
      for (int64_t w = 0; w < W; ++w)
        for (int64_t f = 0; f < F; ++f) base[w * sw + f * sf] = (double)in[w * F + f];
    }
  }
}
