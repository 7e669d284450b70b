/* Conversions between R arrays (column-major doubles) and the internal layouts,
 * fused with the double <-> real_t conversion. Included by layout.c once per real_t. */

/* R array (either data format) -> xp[n][p0][p1][p2][c] over the kernel spec's
 * axes (conv_kernel_spec: rows along depth when they can be), zero padding
 * included; src, when given, is the channel packed at each place (paired
 * groups, conv_pair_perm). */
void CONCAT(pack_input_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ks,
                                 const int64_t* src, const double* x, real_t* xp,
                                 int nthreads) {
  const int64_t N = s->batch, C = s->channels;
  const int64_t L0 = ks->in[0], L1 = ks->in[1], L2 = ks->in[2];
  const int64_t P0 = L0 + ks->pad_lo[0] + ks->pad_hi[0];
  const int64_t P1 = L1 + ks->pad_lo[1] + ks->pad_hi[1];
  const int64_t P2 = L2 + ks->pad_lo[2] + ks->pad_hi[2];
  const int64_t lo0 = ks->pad_lo[0], lo1 = ks->pad_lo[1], lo2 = ks->pad_lo[2];
  const int64_t row = P2 * C;
  int64_t st[5];
  conv_r_strides(s, 0, st);
  const int64_t s0 = st[1 + ks->axes[0]], s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]];
  const int64_t sc = st[4];
  /* Jobs are blocks of PACK_LINES lines (p0, p1), every sample of each, with
   * the axis of the smaller R stride varying fastest, so that for one channel
   * a block reads one contiguous stretch of R memory. The transposition to
   * channels-fastest goes PACK_CHANNELS channels (a cache line of output) at a
   * time, so the block's output stays in L1 while it is filled. */
  enum { PACK_LINES = 16, PACK_CHANNELS = 16, PACK_PREFETCH_LINES = 2 };
  const int p0_fastest = s0 < s1;
  const int64_t lines = P0 * P1, blocks = (lines + PACK_LINES - 1) / PACK_LINES;
  const int64_t on = P0 * P1 * row; /* next sample in xp */
  /* a large copy goes past the caches where the tier can (load_columns_*
   * with stream set; each thread then fences): the kernels read it later,
   * and writing it through the caches read every line in first (unet_l2:
   * pack 0.91-0.93 -> 0.76-0.80 ms) */
  const int stream = conv_stream_bytes((double)N * (double)on * (double)sizeof(real_t));
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(static) nowait
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t first = blk * PACK_LINES;
      const int64_t last = first + PACK_LINES < lines ? first + PACK_LINES : lines;
      int64_t in_off[PACK_LINES], out_off[PACK_LINES];
      int nin = 0;
      for (int64_t jj = first; jj < last; ++jj) { /* zero the padding, note the data lines */
        const int64_t j = p0_fastest ? (jj % P0) * P1 + jj / P0 : jj;
        const int64_t i0 = j / P1 - lo0, i1 = j % P1 - lo1;
        const int inside = i0 >= 0 && i0 < L0 && i1 >= 0 && i1 < L1;
        for (int64_t n = 0; n < N; ++n) {
          real_t* out = xp + n * on + j * row;
          if (!inside) {
            memset(out, 0, sizeof(real_t) * (size_t)row);
          } else {
            memset(out, 0, sizeof(real_t) * (size_t)(lo2 * C));
            memset(out + (lo2 + L2) * C, 0, sizeof(real_t) * (size_t)(ks->pad_hi[2] * C));
          }
        }
        if (inside) {
          in_off[nin] = i0 * s0 + i1 * s1;
          out_off[nin] = j * row + lo2 * C;
          ++nin;
        }
      }
      for (int64_t c0 = 0; c0 < C; c0 += PACK_CHANNELS) {
        const int64_t c1 = c0 + PACK_CHANNELS < C ? c0 + PACK_CHANNELS : C;
        if (N == 1 && s2 == 1) { /* each line of a channel is a run of R memory */
          for (int k = 0; k < nin; ++k) {
            /* the runs two lines on (into the next channels at the end) are
             * fetched while this line converts: short runs from many channels
             * at once do not train the hardware prefetchers */
            int64_t pk = k + PACK_PREFETCH_LINES, pc = c0;
            if (pk >= nin) {
              pk -= nin;
              pc += PACK_CHANNELS;
            }
            if (pk < nin) {
              for (int64_t c = pc; c < pc + PACK_CHANNELS && c < C; ++c)
                for (int64_t i = 0; i < L2; i += 8)
                  __builtin_prefetch(x + in_off[pk] + (src ? src[c] : c) * sc + i);
            }
            const double* in = src ? x + in_off[k] : x + in_off[k] + c0 * sc;
            CONCAT(load_columns_, SUFFIX)(in, sc, src ? src + c0 : NULL, L2, c1 - c0,
                                          xp + out_off[k] + c0, C, stream);
          }
          continue;
        }
        for (int k = 0; k < nin; ++k)
          for (int64_t i = 0; i < L2; ++i)
            for (int64_t n = 0; n < N; ++n) {
              real_t* o = xp + out_off[k] + n * on + i * C;
              const double* in = x + in_off[k] + n + i * s2;
              if (src == NULL) {
                for (int64_t c = c0; c < c1; ++c) o[c] = (real_t)in[c * sc];
              } else {
                for (int64_t c = c0; c < c1; ++c) o[c] = (real_t)in[src[c] * sc];
              }
            }
      }
    }
    if (stream) cpu_kernels()->stream_fence(); /* before the barrier: others read it */
  }
}

/* Plane p0 (padded coordinates) of sample n of the R array -> out[p1][c][p2]
 * over the kernel spec's axes, zero padding included: each channel's rows
 * stay planar, as the planar tiles read them (conv_geometry.planar). Every
 * row is one run of R memory, converted as a run (strided unless one sample,
 * channels_last). A channel's rows, axis 1 being the smaller R stride
 * (conv_planar_spec), are one stretch of R memory; PLANAR_PACK_STREAMS
 * channels are read side by side, row by row: more lines in flight than one
 * stretch at a time, which the hardware prefetcher restarts at every page,
 * and each row of out written in order (grouped8: 5.8 -> 5.0 ms). A
 * stride S > 1 along the rows packs each row as S phases (every S-th padded
 * position from r on), as conv_geometry_planar lays them out. */
void CONCAT(pack_plane_planar_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ks,
                                        const double* x, int64_t n, int64_t p0, real_t* out) {
  const int64_t C = s->channels, L1 = ks->in[1], L2 = ks->in[2], S = ks->strides[2];
  const int64_t P1 = L1 + ks->pad_lo[1] + ks->pad_hi[1];
  /* a row of stride S > 1: S phases of Q (conv_geometry_planar) */
  const int64_t Q = (L2 + ks->pad_lo[2] + ks->pad_hi[2] + S - 1) / S, P2 = S * Q;
  const int64_t lo1 = ks->pad_lo[1], lo2 = ks->pad_lo[2];
  const int64_t row = C * P2, i0 = p0 - ks->pad_lo[0];
  if (i0 < 0 || i0 >= ks->in[0]) {
    memset(out, 0, sizeof(real_t) * (size_t)(P1 * row));
    return;
  }
  int64_t st[5];
  conv_r_strides(s, 0, st);
  const int64_t s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]], sc = st[4];
  const double* xp = x + n + i0 * st[1 + ks->axes[0]];
  for (int64_t cb = 0; cb < C; cb += PLANAR_PACK_STREAMS)
    for (int64_t p1 = 0; p1 < P1; ++p1)
      for (int64_t c = cb; c < cb + PLANAR_PACK_STREAMS && c < C; ++c) {
        real_t* o = out + p1 * row + c * P2;
        const int64_t i1 = p1 - lo1;
        if (i1 < 0 || i1 >= L1) {
          memset(o, 0, sizeof(real_t) * (size_t)P2);
          continue;
        }
        const double* xr = xp + i1 * s1 + c * sc;
        /* phase r holds padded positions q * S + r: the inputs among them
         * are those from q0 (the first at or past lo2) up to the row's end
         * (S = 1: one phase, the padded row itself) */
        for (int64_t r = 0; r < S; ++r) {
          real_t* ph = o + r * Q;
          const int64_t q0 = lo2 > r ? (lo2 - r + S - 1) / S : 0;
          const int64_t q1 = lo2 + L2 > r ? (lo2 + L2 - 1 - r) / S + 1 : 0;
          const int64_t nq = q1 > q0 ? q1 - q0 : 0;
          memset(ph, 0, sizeof(real_t) * (size_t)(nq > 0 ? q0 : Q));
          if (nq == 0) continue;
          CONCAT(load_strided_, SUFFIX)(xr + (q0 * S + r - lo2) * s2, S * s2, ph + q0, nq);
          memset(ph + q0 + nq, 0, sizeof(real_t) * (size_t)(Q - q0 - nq));
        }
      }
}

/* Kernel weights (read through src) -> wp[g][block][kd][kh][kw][c][fb] with zero
 * columns past each group's filters, so a block's weights stream contiguously;
 * depthwise layers get wp[kd][kh][kw][c] instead (vectorised over channels),
 * layers with few filters wp[g][filter][kd][kh][kw][c] (reduction tiles), and
 * the patch GEMM [filter block][k][gemm_nr] with k in R's (a, b, e, c) order,
 * and the Winograd path and the planar path's Winograd rows their transformed
 * kernels (winograd_pack_weights_*, planar_winograd_pack_weights_*).
 * Taps are in the kernel spec's order t = (k0 * K1 + k1) * K2 + k2. */
void CONCAT(pack_weights_, SUFFIX)(const struct conv_spec* s, const struct conv_geometry* geo,
                                   const struct weight_source* src, real_t* wp, int nthreads) {
  const int64_t G = s->groups, CG = s->channels / G, FG = s->filters / G;
  const int64_t taps = s->kernel[0] * s->kernel[1] * s->kernel[2], FB = geo->fb;
  const double* w = src->w;
  const int64_t cs = src->cs, fs = src->fs, gs = src->gs;
  const int64_t* tap = src->tap;
  if (geo->winograd) {
    CONCAT(winograd_pack_weights_, SUFFIX)(s, geo, src, wp, nthreads);
    return;
  }
  if (geo->planar && geo->planar_points > 0) {
    CONCAT(planar_winograd_pack_weights_, SUFFIX)(s, geo, src, wp, nthreads);
    return;
  }
  if (geo->patch) { /* one group; k = tR + taps * c with tR R's own tap index */
    const int64_t NR = geo->gemm_nr, K = taps * s->channels, F = s->filters;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t fb = 0; fb < (F + NR - 1) / NR; ++fb)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < NR; ++j) {
          const int64_t f = fb * NR + j;
          wp[(fb * K + k) * NR + j] = f < F ? (real_t)w[k % taps + cs * (k / taps) + fs * f] : (real_t)0;
        }
    return;
  }
  if (geo->depthwise) { /* one channel and one filter per group */
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t c = 0; c < s->channels; ++c) wp[t * s->channels + c] = (real_t)w[tap[t] + gs * c];
    return;
  }
  if (geo->reduce) { /* [g][filter (fb, zero past fg)][tap][c] */
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t gj = 0; gj < G * FB; ++gj) {
      const int64_t g = gj / FB, j = gj % FB;
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < CG; ++c) {
          wp[(gj * taps + t) * CG + c] =
              j < FG ? (real_t)w[tap[t] + cs * c + fs * j + gs * g] : (real_t)0;
        }
    }
    return;
  }
  if (geo->nv == 3) { /* two groups per block, lane j = filter j / 2 of group j % 2 */
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t gt = 0; gt < G / 2 * taps; ++gt) {
      const int64_t gb = gt / taps, t = gt % taps;
      for (int64_t c = 0; c < CG; ++c) {
        real_t* o = wp + ((gb * taps + t) * CG + c) * FB;
        for (int64_t j = 0; j < FB; ++j)
          o[j] = (real_t)w[tap[t] + cs * c + fs * (j / 2) + gs * (gb * 2 + j % 2)];
      }
    }
    return;
  }
  /* [g][block][tap][c][fb]. When every tap of R's kernel is packed, each
   * (channel, block) pair's weights are runs of src->run taps, one per filter:
   * the tier transposes them (load_columns_*) into a [tap][filter] stage, a
   * chunk of STAGE_TAPS taps at a time, whose rows are then copied in the
   * spec's tap order. Reading R's kernel in runs, and writing a large packed
   * copy past the caches (no reads of the lines it overwrites), is what a
   * kernel repacked on every call needs: the input gradient's of c3d_conv5a
   * (56 MB) went from 4.7 to 2.3 ms. */
  enum { STAGE_TAPS = 64, STAGE_FB = 32 };
  if (taps == src->run && FB <= STAGE_FB) {
    const int64_t nblocks = geo->fg_pad / FB;
    /* streamed only in whole cache lines: a row of FB is one or more */
    const int stream = conv_stream_bytes((double)G * nblocks * taps * CG * FB * sizeof(real_t)) &&
                       FB * sizeof(real_t) % 64 == 0;
    /* consecutive items read neighbouring runs: blocks of filters fastest when
     * a filter's runs are the closer ones (the input gradient's source) */
    const int blocks_fastest = fs < cs;
    #pragma omp parallel num_threads(nthreads)
    {
      #pragma omp for schedule(static) nowait
      for (int64_t gbc = 0; gbc < G * nblocks * CG; ++gbc) {
        const int64_t g = gbc / (nblocks * CG), i = gbc % (nblocks * CG);
        const int64_t blk = blocks_fastest ? i % nblocks : i / CG;
        const int64_t c = blocks_fastest ? i / nblocks : i % CG;
        const int64_t gb = g * nblocks + blk;
        const int64_t nf = FG - blk * FB < FB ? FG - blk * FB : FB;
        const double* in = w + cs * c + fs * blk * FB + gs * g;
        real_t stage[STAGE_TAPS * STAGE_FB];
        for (int64_t r = 0; r < STAGE_TAPS; ++r) /* the block's zero columns past FG */
          for (int64_t j = nf; j < FB; ++j) stage[r * FB + j] = (real_t)0;
        for (int64_t t0 = 0; t0 < taps; t0 += STAGE_TAPS) {
          const int64_t nt = taps - t0 < STAGE_TAPS ? taps - t0 : STAGE_TAPS;
          CONCAT(load_columns_, SUFFIX)(in + t0, fs, NULL, nt, nf, stage, FB, 0);
          for (int64_t t = 0; t < taps; ++t)
            if (tap[t] >= t0 && tap[t] < t0 + nt)
              CONCAT(copy_run_, SUFFIX)(stream, stage + (tap[t] - t0) * FB,
                                        wp + ((gb * taps + t) * CG + c) * FB, FB);
        }
      }
      if (stream) copy_runs_fence();
    }
    return;
  }
  /* Otherwise (a strided layer's input-gradient phases, which pack some of
   * the taps each: staging all of them for every phase was 5-10 % slower,
   * 256 -> 256 channels, 3x3x3, stride 2, backward 4.4-4.6 against 3.9-4.2
   * ms) by blocks of PACK_CHANNELS channels: a block's (channel, filter)
   * pairs, each a run of R's kernel holding its taps, stay in cache while
   * every tap's rows are written (a pass per tap over the whole kernel read a
   * large one, c3d_conv5a's 56 MB, 27 times) */
  enum { PACK_CHANNELS = 16 };
  const int64_t nblocks = geo->fg_pad / FB, ncb = (CG + PACK_CHANNELS - 1) / PACK_CHANNELS;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t gbc = 0; gbc < G * nblocks * ncb; ++gbc) {
    const int64_t gb = gbc / ncb, g = gb / nblocks, blk = gb % nblocks;
    const int64_t c0 = gbc % ncb * PACK_CHANNELS;
    const int64_t c1 = c0 + PACK_CHANNELS < CG ? c0 + PACK_CHANNELS : CG;
    for (int64_t t = 0; t < taps; ++t)
      for (int64_t c = c0; c < c1; ++c) {
        real_t* o = wp + ((gb * taps + t) * CG + c) * FB;
        for (int64_t j = 0; j < FB; ++j) {
          const int64_t f = blk * FB + j;
          o[j] = f < FG ? (real_t)w[tap[t] + cs * c + fs * f + gs * g] : (real_t)0;
        }
      }
  }
}

/* The weights of a layer's single-phase input gradient (spec: F channels, C
 * filters, the kernel flipped and transposed), as pack_weights_* packs them
 * for the general kernels, from the layer's forward weights as packed for the
 * general kernels (fw: [block][tap][channel][FB], one group). At each tap
 * both hold FB x FB blocks of (channel, filter), so each block is transposed
 * whole by the tier; C and F are multiples of FB. ptap[tf]: the gradient's
 * tap for the forward's tap tf. Items go in fw's order, so the float copy,
 * half the bytes of R's kernel, is read front to back; a copy of 4 MB or more
 * is written past the caches. */
void CONCAT(pack_weights_transposed_, SUFFIX)(int64_t taps, int64_t C, int64_t F, int64_t FB,
                                             const real_t* fw, const int64_t* ptap, real_t* wp,
                                             int nthreads) {
  const struct kernel_table* kt = cpu_kernels();
  const int stream = conv_stream_bytes((double)taps * (double)C * (double)F * sizeof(real_t));
  #pragma omp parallel num_threads(nthreads)
  {
    #pragma omp for schedule(static) nowait
    for (int64_t ft = 0; ft < F / FB * taps; ++ft) {
      const int64_t fblk = ft / taps, tf = ft % taps;
      for (int64_t b = 0; b < C / FB; ++b)
        kt->CONCAT(transpose_, SUFFIX)(fw + ((fblk * taps + tf) * C + b * FB) * FB, FB, FB, FB,
                                      wp + ((b * taps + ptap[tf]) * F + fblk * FB) * FB, FB,
                                      stream);
    }
    if (stream) kt->stream_fence();
  }
}
