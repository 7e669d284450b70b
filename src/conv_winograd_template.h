/* The Winograd driver and kernel transform for one element type. Included by
 * conv_winograd.c once per (real_t, SUFFIX). */

/* U = G g G^T along each axis for every (sub-kernel, channel, filter), into
 * u[point][filter block][sub-kernel][channel][2 * lanes] (filters past F
 * zero); computed in double from the layer's kernel, taps in the kernel
 * spec's order, for one channel and NF (32) filters at a time, the
 * filters innermost. */
void CONCAT(winograd_pack_weights_, SUFFIX)(const struct conv_spec* s,
                                            const struct conv_geometry* g,
                                            const struct weight_source* src, real_t* u,
                                            int nthreads) {
  static const double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  enum { NF = 32 };
  const int64_t C = s->channels, F = s->filters, FB = 2 * (int64_t)g->lanes;
  const int64_t fpad = conv_winograd_fpad(g), nfb = fpad / FB;
  const int64_t K[3] = {g->kd, g->kh, g->kw};
  const int64_t n1 = conv_winograd_axis_subkernels(K[1]), n2 = conv_winograd_axis_subkernels(K[2]);
  const int64_t S = conv_winograd_subkernels(K[0], K[1], K[2]);
  #pragma omp parallel for num_threads(nthreads) schedule(static) collapse(3)
  for (int64_t sk = 0; sk < S; ++sk)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t f0 = 0; f0 < fpad; f0 += NF) {
        /* the sub-kernel [tap][filter], then after one, two and three axes */
        double k[27][NF], a[4][9][NF], b[4][4][3][NF], r[64][NF];
        const int64_t nf = fpad - f0 < NF ? fpad - f0 : NF;
        const int64_t sub[3] = {sk / (n1 * n2), (sk / n2) % n1, sk % n2};
        for (int t = 0; t < 27; ++t) {
          /* local tap i of sub-kernel a along an axis: the layer's tap 2a + i,
           * unless sub-kernel a - 1 took it (i == 0) or it is past the kernel */
          const int64_t i[3] = {t / 9, (t / 3) % 3, t % 3};
          int64_t tap = 0, inside = 1;
          for (int ax = 0; ax < 3; ++ax) {
            const int64_t T = 2 * sub[ax] + i[ax];
            inside &= T < K[ax] && !(i[ax] == 0 && sub[ax] > 0);
            tap = tap * K[ax] + T;
          }
          for (int64_t j = 0; j < nf; ++j)
            k[t][j] = inside && f0 + j < F ? src->w[src->tap[tap] + src->cs * c + src->fs * (f0 + j)]
                                           : 0;
        }
        for (int i = 0; i < 4; ++i) /* along the first axis */
          for (int eh = 0; eh < 9; ++eh)
            _Pragma("omp simd") for (int64_t j = 0; j < nf; ++j)
              a[i][eh][j] = G[i][0] * k[eh][j] + G[i][1] * k[9 + eh][j] + G[i][2] * k[18 + eh][j];
        for (int i = 0; i < 4; ++i) /* the second */
          for (int l = 0; l < 4; ++l)
            for (int h = 0; h < 3; ++h)
              _Pragma("omp simd") for (int64_t j = 0; j < nf; ++j)
                b[i][l][h][j] = G[l][0] * a[i][h][j] + G[l][1] * a[i][3 + h][j] + G[l][2] * a[i][6 + h][j];
        for (int il = 0; il < 16; ++il) /* the third */
          for (int m = 0; m < 4; ++m)
            _Pragma("omp simd") for (int64_t j = 0; j < nf; ++j)
              r[il * 4 + m][j] = G[m][0] * b[il / 4][il % 4][0][j] + G[m][1] * b[il / 4][il % 4][1][j] +
                                 G[m][2] * b[il / 4][il % 4][2][j];
        /* f0 and nf are whole blocks of FB filters (FB divides NF) */
        for (int64_t p = 0; p < 64; ++p)
          for (int64_t j0 = 0; j0 < nf; j0 += FB) {
            real_t* dst = u + (((p * nfb + (f0 + j0) / FB) * S + sk) * C + c) * FB;
            for (int64_t j = 0; j < FB; ++j) dst[j] = (real_t)r[p][j0 + j];
          }
      }
}

/* Work items are (sample, planes of tiles along axis 0, `rows` rows of tiles
 * along axis 1; conv_winograd_layout), split across threads in chunks. For
 * each plane an item transforms the inputs of the tiles its products read
 * from the padded copy xp (ws's padded extents): its own, and for larger
 * kernels the tiles up to (K - 3) / 2 further along each axis, kept in a ring
 * of planes for the next planes' sub-kernels. It then goes through its tiles
 * a register tile (wt_max tiles) at a time: multiplies each transform point's
 * tiles (of every sub-kernel) by that point's transformed kernel into m, and
 * transforms them back with the bias into two planes of output rows, which
 * are activated and written into the R output as the rows driver writes its
 * spans. Every output is computed the same way whatever the split, so
 * results do not depend on the thread count. Between chunks the main thread
 * lets R check for an interrupt. */
void CONCAT(conv3d_winograd_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ws,
                                      const struct conv_geometry* g, const real_t* xp,
                                      const real_t* u, const real_t* bias, int activation,
                                      double* out, real_t* scratch, int* nonfinite,
                                      int nthreads, interrupt_fn check_interrupt) {
  const struct kernel_table* kt = cpu_kernels();
  const CONCAT(conv_wino_in_fn_, SUFFIX) wino_in = kt->CONCAT(wino_in_, SUFFIX);
  const CONCAT(conv_wino_gemm_fn_, SUFFIX) wino_gemm = kt->CONCAT(wino_gemm_, SUFFIX);
  const CONCAT(conv_wino_out_fn_, SUFFIX) wino_out = kt->CONCAT(wino_out_, SUFFIX);
  const int64_t N = s->batch, C = s->channels, F = s->filters, WT = kt->wt_max;
  const int64_t FB = 2 * (int64_t)g->lanes, fpad = conv_winograd_fpad(g), nfb = fpad / FB;
  const int64_t O0 = ws->out[0], O1 = ws->out[1], O2 = ws->out[2];
  const int64_t d0 = ws->dilation[0], d1 = ws->dilation[1], d2 = ws->dilation[2];
  const int64_t T0 = conv_winograd_tiles(O0, d0), T1 = conv_winograd_tiles(O1, d1);
  const int64_t T2 = conv_winograd_tiles(O2, d2);
  struct winograd_layout L;
  conv_winograd_layout(ws, &L);
  const int64_t rows = L.rows, groups = (T1 + rows - 1) / rows;
  const int64_t pgroups = (T0 + L.planes - 1) / L.planes;
  const int64_t n0 = L.n[0], n1 = L.n[1], n2 = L.n[2], S = n0 * n1 * n2, ceff = S * C;
  /* the padded copy's strides */
  const int64_t P0 = ws->in[0] + ws->pad_lo[0] + ws->pad_hi[0];
  const int64_t P1 = ws->in[1] + ws->pad_lo[1] + ws->pad_hi[1];
  const int64_t P2 = ws->in[2] + ws->pad_lo[2] + ws->pad_hi[2];
  const int64_t x1 = P2 * C, x0 = P1 * x1, xn = P0 * x0;
  /* the thread's scratch: tile transforms [ring plane][row][column], each
   * [point][channel] (conv_winograd_tile_stride apart), and a zero tile; m
   * [tile][point][filter] for a register tile of tiles; y
   * [plane][row][column][filter] */
  const int64_t ldv = conv_winograd_tile_stride(C, sizeof(real_t));
  const int64_t ldm = conv_winograd_tile_stride(fpad, sizeof(real_t));
  const int64_t yrow = conv_winograd_row_length(ws) * fpad, yplane = 2 * rows * yrow;
  const int64_t per_thread = conv_winograd_scratch(ws, g);
  const int64_t items = N * pgroups * groups;
  int64_t st[5];
  conv_r_strides(s, 1, st);
  const int64_t s0 = st[1 + ws->axes[0]], s1 = st[1 + ws->axes[1]], s2 = st[1 + ws->axes[2]];
  const int64_t sf = st[4];
  const int channels_last = s->layout == LAYOUT_CHANNELS_LAST;
  const int stream = conv_rows_stream((double)N * O0 * O1 * O2 * F, s2);
  /* about 1 GFLOP of products per chunk, at least a few items per thread */
  const double item_flops =
      2.0 * 64 * (double)(L.planes * rows * T2) * (double)ceff * (double)fpad;
  int64_t chunk = (int64_t)(1e9 / item_flops);
  if (chunk < 4 * (int64_t)nthreads) chunk = 4 * (int64_t)nthreads;

  for (int64_t start = 0; start < items; start += chunk) {
    const int64_t end = start + chunk < items ? start + chunk : items;
    #pragma omp parallel num_threads(nthreads)
    {
      #pragma omp for schedule(dynamic, 1) nowait
      for (int64_t item = start; item < end; ++item) {
        /* the plane group varies fastest, though (w, h, d) depth rows give
         * the planes the larger R stride: the row groups first (the smaller
         * stride, as the rows driver and the input packing take it) was
         * 1-4 % slower on unet_l2, unet_deep, vnet_k5 and dilated2 */
        const int64_t pg = item % pgroups, grp = (item / pgroups) % groups;
        const int64_t n = item / (pgroups * groups);
        const int64_t r0 = grp * rows, nr = T1 - r0 < rows ? T1 - r0 : rows, nt = nr * T2;
        const int64_t hrows = nr + n1 - 1, hcols = T2 + n2 - 1;
        real_t* halo = scratch + (int64_t)omp_get_thread_num() * per_thread;
        real_t* zero = halo + (L.halo_tiles - 1) * ldv;
        real_t* m = halo + L.halo_tiles * ldv;
        real_t* y = m + WT * ldm;
        memset(zero, 0, sizeof(real_t) * (size_t)ldv);
        const real_t* xn_ = xp + n * xn;
        /* the transforms of plane z's tiles, row r and column c of the item's */
  #define HALO(z, r, c) (halo + ((((z) % n0) * L.halo_rows + (r)) * L.halo_cols + (c)) * ldv)
        const int64_t p0 = pg * L.planes, p1 = p0 + L.planes < T0 ? p0 + L.planes : T0;
        for (int64_t z = p0; z < p1 + n0 - 1; ++z) {
          /* each tile's first output along each axis (conv_winograd_first): its
           * outputs are there and d further, its inputs 0, d, 2d and 3d further */
          const real_t* xz = xn_ + conv_winograd_first(z, O0, d0) * x0;
          for (int64_t r = 0; r < hrows; ++r) {
            const real_t* xr = xz + conv_winograd_first(r0 + r, O1, d1) * x1;
            for (int64_t c = 0; c < hcols; ++c)
              if (wino_in(xr + conv_winograd_first(c, O2, d2) * C, d0 * x0, d1 * x1, d2 * C, C,
                          HALO(z, r, c), C))
                nonfinite[omp_get_thread_num()] = 1;
          }
          const int64_t t0 = z - (n0 - 1); /* the plane whose sub-kernels all have transforms */
          if (t0 < p0) continue;
          for (int64_t q0 = 0; q0 < nt; q0 += WT) {
            const int64_t q1 = q0 + WT < nt ? q0 + WT : nt;
            /* tile j's transforms per sub-kernel (a, b, e): (a, b, e) tiles further */
            const real_t* vrows[WINO_MAX_SUBKERNELS * 64]; /* wt_max <= 64 */
            for (int64_t sk = 0; sk < S; ++sk) {
              const int64_t a = sk / (n1 * n2), b = (sk / n2) % n1, e = sk % n2;
              for (int64_t j = 0; j < WT; ++j) {
                const int64_t t = q0 + j;
                vrows[sk * WT + j] = t < q1 ? HALO(t0 + a, t / T2 + b, t % T2 + e) : zero;
              }
            }
            for (int64_t p = 0; p < 64; ++p)
              for (int64_t fb = 0; fb < nfb; ++fb)
                wino_gemm(S, C, vrows, p * C, u + (p * nfb + fb) * ceff * FB,
                          m + p * fpad + fb * FB, ldm);
            for (int64_t t = q0; t < q1; ++t)
              wino_out(m + (t - q0) * ldm, fpad, F, bias,
                       y + 2 * (t / T2) * yrow + conv_winograd_first(t % T2, O2, d2) * fpad, yplane,
                       yrow, d2 * fpad);
          }
          /* staged row 2r + j of a plane: output row (first of row tile r) + j d1 */
          const int64_t o0 = conv_winograd_first(t0, O0, d0);
          for (int64_t jz = 0; jz < 2 && o0 + jz * d0 < O0; ++jz)
            for (int64_t r = 0; r < 2 * nr; ++r) {
              const int64_t o1 = conv_winograd_first(r0 + r / 2, O1, d1) + (r % 2) * d1;
              if (o1 >= O1) continue;
              real_t* yr = y + jz * yplane + r * yrow;
              CONCAT(activation_block_, SUFFIX)(activation, channels_last, yr, O2, F, fpad, 1);
              CONCAT(conv_write_row_, SUFFIX)(yr, fpad, O2, F,
                                              out + n + (o0 + jz * d0) * s0 + o1 * s1, s2, sf,
                                              stream);
            }
        }
  #undef HALO
      }
      if (stream) kt->stream_fence();
    }
    if (end < items && check_interrupt != NULL) check_interrupt();
  }

  if (activation == ACT_SOFTMAX && !channels_last) {
    CONCAT(conv_softmax_last_axis_, SUFFIX)(s, out, scratch, per_thread, nthreads);
  }
}
