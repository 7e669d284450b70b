/* The planar forward driver for one element type. Work items are up to
 * conv_planar_rows rows (n, i0, rows r0 ..) of the kernel spec's output, split
 * across threads in chunks. An item runs every filter block of every group
 * over the item's row vectors, bias included, into the thread's scratch
 * y[f][vector, lane]; the activation is applied there, and each row of each
 * filter is stored as one run of the R array. Every output is summed in the same order
 * whatever the split, so results are bit-identical across thread counts.
 * Between chunks the main thread lets R check for a user interrupt. */
void CONCAT(conv3d_forward_planar_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ks,
                                            const struct conv_geometry* g, const real_t* xq,
                                            const real_t* wp, const real_t* bias, int activation,
                                            double* out, real_t* scratch, int nthreads,
                                            interrupt_fn check_interrupt) {
  const CONCAT(conv_planar_fn_, SUFFIX) tile = cpu_kernels()->CONCAT(planar_, SUFFIX);
  const int nj_max = cpu_kernels()->planar_nj;
  const int64_t N = s->batch, F = s->filters, L = g->lanes, FB = g->fb;
  const int64_t O0 = ks->out[0], O1 = ks->out[1], O2 = ks->out[2];
  const int64_t slots = (O2 + L - 1) / L, rows = conv_planar_rows(ks, g);
  const int64_t row_blocks = (O1 + rows - 1) / rows, items = N * O0 * row_blocks;
  const int64_t ldy = rows * slots * L, per_thread = conv_planar_scratch(s, ks, g);
  const int64_t block_w = g->kd * g->kh * g->kw * g->cg * FB, nblocks = g->fg_pad / FB;
  const int64_t xrow = g->c * g->pw, xplane = g->ph * xrow, xsample = g->pd * xplane;
  int64_t st[5];
  conv_r_strides(s, 1, st);
  const int64_t s0 = st[1 + ks->axes[0]], s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]];
  const int64_t sf = st[4];
  const int channels_last = s->layout == LAYOUT_CHANNELS_LAST;
  const int64_t chunk = conv_chunk_items(s, ldy, nthreads);

  for (int64_t start = 0; start < items; start += chunk) {
    const int64_t end = start + chunk < items ? start + chunk : items;
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t item = start; item < end; ++item) {
      /* i0 varies fastest: its R stride is the smaller */
      const int64_t i0 = item % O0, rb = (item / O0) % row_blocks, n = item / (O0 * row_blocks);
      const int64_t r0 = rb * rows, nr = O1 - r0 < rows ? O1 - r0 : rows, nvec = nr * slots;
      const real_t* x = xq + n * xsample + i0 * g->sd * xplane;
      real_t* y = scratch + (int64_t)omp_get_thread_num() * per_thread;
      int64_t taps[4];
      tap_range(g->kd, g->dd, i0 * g->sd - g->lo0, g->in0, i0 * g->sd - g->lo0, taps);
      tap_range(g->kh, g->dh, r0 * g->sh - g->lo1, g->in1, (r0 + nr - 1) * g->sh - g->lo1,
                taps + 2);
      for (int64_t grp = 0; grp < g->groups; ++grp)
        for (int64_t blk = 0; blk < nblocks; ++blk) {
          const real_t* wb = wp + (grp * nblocks + blk) * block_w;
          const int64_t f0 = grp * g->fg + blk * FB;
          const int64_t nf = g->fg - blk * FB < FB ? g->fg - blk * FB : FB;
          real_t* yb = y + f0 * ldy;
          const real_t* xg = x + grp * g->cg * g->pw;
          for (int64_t v = 0; v < nvec; v += nj_max) {
            const int nj = nvec - v < nj_max ? (int)(nvec - v) : nj_max;
            const real_t* xs[3];
            real_t* ys[3];
            for (int j = 0; j < nj; ++j) { /* vector v + j: row (v + j) / slots, slot % slots */
              const int64_t r = (v + j) / slots, k = (v + j) % slots;
              xs[j] = xg + (r0 + r) * g->sh * xrow + k * L;
              ys[j] = yb + (v + j) * L;
            }
            tile(g, nj, xs, taps, wb, bias ? bias + f0 : NULL, nf, ys, ldy);
          }
        }
      if (activation == ACT_SOFTMAX) {
        /* channels_last: over each voxel's filters; channels_first: over W, later */
        if (channels_last) {
          for (int64_t i = 0; i < nvec * L; ++i) CONCAT(softmax_, SUFFIX)(y + i, F, ldy);
        }
      } else if (activation != ACT_LINEAR) {
        for (int64_t f = 0; f < F; ++f)
          CONCAT(activation_apply_, SUFFIX)(activation, y + f * ldy, nvec * L);
      }
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t f = 0; f < F; ++f) {
          const real_t* yr = y + f * ldy + r * slots * L;
          double* o = out + n + i0 * s0 + (r0 + r) * s1 + f * sf;
          if (s2 == 1) {
            CONCAT(store_doubles_, SUFFIX)(yr, o, O2);
          } else {
            for (int64_t i = 0; i < O2; ++i) o[i * s2] = (double)yr[i];
          }
        }
    }
    if (end < items && check_interrupt != NULL) check_interrupt();
  }

  if (activation == ACT_SOFTMAX && !channels_last) {
    CONCAT(conv_softmax_last_axis_, SUFFIX)(s, out, scratch, per_thread, nthreads);
  }
}
