/* The planar forward driver for one element type. Output planes (n, i0) are
 * split across threads in runs of consecutive planes, in chunks. A thread
 * packs the input planes of its run into its ring (slot p0 % span: the span
 * of planes one output plane reads), each plane once while the run moves
 * along axis 0. Each output plane is computed in items of up to
 * conv_planar_rows rows: every filter block of every group over the item's
 * row vectors, bias included, into the thread's scratch y[f][vector, lane];
 * the activation is applied there, and each row of each filter is stored as
 * one run of the R array (streamed past the caches when the output is large:
 * conv_stream_output); or, when conv_planar_direct allows, the tiles write
 * the R array themselves (the Winograd rows: planar_bundles_*). Every
 * output is summed in the same order whatever the split, so results are
 * bit-identical across thread counts. Between
 * chunks the main thread lets R check for a user interrupt.
 * The Winograd rows (g->planar_points > 0, conv_planar_winograd.c) hold each
 * plane's transform in the ring instead, packed into the slot after the
 * ring first; an item is bundles of output rows, and each filter block runs
 * the tiles once per transform point, with one tap along axis 1, into the
 * products' scratch, which the bundles' rows are then summed from. */
void CONCAT(conv3d_forward_planar_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ks,
                                            const struct conv_geometry* g, const double* x,
                                            const real_t* wp, const real_t* bias, int activation,
                                            double* out, real_t* ring, int64_t* index,
                                            real_t* scratch, int* nonfinite, int nthreads,
                                            interrupt_fn check_interrupt) {
  const CONCAT(conv_planar_fn_, SUFFIX) tile = cpu_kernels()->CONCAT(planar_, SUFFIX);
  const int nj_max = cpu_kernels()->planar_nj;
  const int64_t N = s->batch, F = s->filters, L = g->lanes, FB = g->fb;
  const int64_t O0 = ks->out[0], O1 = ks->out[1], O2 = ks->out[2];
  const int64_t slots = planar_slots(ks, g), rows = conv_planar_rows(ks, g);
  const int64_t planes = N * O0;
  const int64_t ldy = rows * slots * L, per_thread = conv_planar_scratch(s, ks, g);
  /* the Winograd rows: T points, each a pass of the tiles over one tap along
   * axis 1 (gp) with its own weights (point_w) into the products m (ldm) */
  const int64_t T = g->planar_points, points = T > 0 ? T : 1, M = g->planar_m;
  const int64_t bundles = T > 0 ? planar_bundles(ks, g) : 0;
  /* padded rows any output reads: the transforms leave out those past them */
  const int64_t last_read = (O1 - 1) * g->sh + (g->kh - 1) * g->dh + 1;
  const int64_t rows_read = last_read < g->ph ? last_read : g->ph;
  /* items of whole rows (or bundles), as even as can be: rows of 16 in
   * tiles of 3 take 2 + 3 + 3 + 2 + 3 + 3, not five 3s and a 1, whose
   * tile does a third of the multiply-adds per load */
  const int64_t units = T > 0 ? bundles : O1, per_unit = T > 0 ? M : 1;
  const int64_t tile_rows = planar_tile_rows(ks, g);
  const int64_t row_blocks = (units + tile_rows - 1) / tile_rows;
  const CONCAT(conv_planar_bundles_fn_, SUFFIX) bundle_rows =
      cpu_kernels()->CONCAT(planar_bundles_, SUFFIX);
  struct planar_point pts[PLANAR_WINO_MAX_POINTS];
  real_t at[PLANAR_WINO_MAX_M * PLANAR_WINO_MAX_POINTS];
  if (T > 0) conv_planar_winograd_transforms(g, pts);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < M; ++i) at[i * T + t] = (real_t)pts[t].at[i];
  struct conv_geometry gp = *g;
  if (T > 0) gp.kh = 1;
  const int64_t ldm = tile_rows * slots * L, m_at = (F + FB) * ldy;
  const int64_t point_w = g->kd * gp.kh * g->kw * g->cg * FB, block_w = points * point_w;
  const int64_t nblocks = g->fg_pad / FB, span = planar_span(g);
  /* a ring slot's rows: a unit (output row, or bundle) further along axis
   * 1 is unit_x elements on */
  const int64_t xrow = g->c * g->pw, xplane = planar_slot(ks, g);
  const int64_t unit_x = (T > 0 ? points : g->sh) * xrow;
  int64_t n_index;
  const int64_t ring_len = conv_planar_ring(ks, g, &n_index);
  int64_t st[5];
  conv_r_strides(s, 1, st);
  const int64_t s0 = st[1 + ks->axes[0]], s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]];
  const int64_t sf = st[4];
  const int channels_last = s->layout == LAYOUT_CHANNELS_LAST, stream = conv_stream_output(s);
  /* rows of whole vectors, consecutive in R (one sample), and an activation
   * the tiles apply themselves: the tiles write the R array straight from
   * their registers, without the round trip through scratch and a separate
   * pass that converts and stores it (unet_stem: a third of its time) */
  const int direct = conv_planar_direct(s, ks, g, activation);
  const int direct_stream = stream && conv_direct_aligned(out, L, s0, s1, sf);
  /* whole planes: one per thread when a plane is a GFLOP or more, so that
   * Ctrl-C is still seen within about a second on the generic tier */
  const int64_t chunk = conv_chunk_items(s, O1 * O2, nthreads);

  for (int64_t start = 0; start < planes; start += chunk) {
    const int64_t end = start + chunk < planes ? start + chunk : planes;
    /* two runs per thread: a run packs span - 1 planes beyond its own, and a
     * thread the OS preempts (a busy machine) holds up at most one run */
    const int64_t run = (end - start + 2 * nthreads - 1) / (2 * nthreads);
    const int64_t runs = (end - start + run - 1) / run;
    #pragma omp parallel num_threads(nthreads)
    {
      #pragma omp for schedule(dynamic, 1) nowait
      for (int64_t r = 0; r < runs; ++r) {
        const int thread = omp_get_thread_num();
        real_t* xr = ring + thread * ring_len;
        int64_t* held = index + thread * n_index; /* (n, p0) in each slot, or -1 */
        int64_t* plane = held + span;             /* the slot of each tap a, as an offset */
        int64_t* eoff = plane + g->kd;            /* where each (e, c) starts in a row */
        conv_planar_tap_offsets(g, eoff);
        real_t* y = scratch + (int64_t)thread * per_thread;
        for (int64_t i = 0; i < span; ++i) held[i] = -1;
        const int64_t p_end = start + (r + 1) * run < end ? start + (r + 1) * run : end;
        for (int64_t p = start + r * run; p < p_end; ++p) {
          const int64_t n = p / O0, i0 = p % O0;
          int64_t taps[4];
          tap_range(g->kd, g->dd, i0 * g->sd - g->lo0, g->in0, i0 * g->sd - g->lo0, taps);
          for (int64_t a = taps[0]; a < taps[1]; ++a) {
            const int64_t p0 = i0 * g->sd + a * g->dd, slot = p0 % span;
            if (held[slot] != n * g->pd + p0) {
              if (T > 0) {
                real_t* raw = xr + span * xplane;
                CONCAT(pack_plane_planar_, SUFFIX)(s, ks, x, n, p0, raw);
                if (CONCAT(planar_winograd_plane_, SUFFIX)(g, pts, bundles, rows_read, raw,
                                                           xr + slot * xplane))
                  nonfinite[thread] = 1;
              } else {
                CONCAT(pack_plane_planar_, SUFFIX)(s, ks, x, n, p0, xr + slot * xplane);
              }
              held[slot] = n * g->pd + p0;
            }
            plane[a] = slot * xplane;
          }
          for (int64_t rb = 0; rb < row_blocks; ++rb) {
            /* units u0 .. u1 - 1 (the tiles' rows), output rows r0 .. r0 + nr - 1 */
            const int64_t u0 = units * rb / row_blocks, u1 = units * (rb + 1) / row_blocks;
            const int64_t r0 = u0 * per_unit, nr = (u1 * per_unit < O1 ? u1 * per_unit : O1) - r0;
            const int64_t nvec = (u1 - u0) * slots;
            if (T > 0) {
              taps[2] = 0, taps[3] = 1;
            } else {
              tap_range(g->kh, g->dh, r0 * g->sh - g->lo1, g->in1,
                        (r0 + nr - 1) * g->sh - g->lo1, taps + 2);
            }
            for (int64_t grp = 0; grp < g->groups; ++grp)
              for (int64_t blk = 0; blk < nblocks; ++blk) {
                const real_t* wb = wp + (grp * nblocks + blk) * block_w;
                const int64_t f0 = grp * g->fg + blk * FB;
                const int64_t nf = g->fg - blk * FB < FB ? g->fg - blk * FB : FB;
                struct direct_out dr = {{NULL, NULL, NULL}, sf, nf, activation == ACT_RELU,
                                        direct_stream, NULL};
                for (int64_t t = 0; t < points; ++t)
                  for (int64_t v = 0; v < nvec; v += nj_max) {
                    const int nj = nvec - v < nj_max ? (int)(nvec - v) : nj_max;
                    int64_t offs[3];
                    real_t* ys[3];
                    /* vector v + j: unit u0 + (v + j) / slots, slot (v + j) % slots */
                    for (int j = 0; j < nj; ++j) {
                      const int64_t unit = (v + j) / slots, k = (v + j) % slots;
                      offs[j] = (u0 + unit) * unit_x + grp * g->cg * g->pw + k * L;
                      ys[j] = (T > 0 ? y + m_at + t * FB * ldm : y + f0 * ldy) + (v + j) * L;
                      if (T == 0) dr.yd[j] = out + n + i0 * s0 + (r0 + unit) * s1 + f0 * sf + k * L;
                    }
                    if (T > 0) { /* point t's planes are xrow apart in each bundle */
                      tile(&gp, nj, xr + t * xrow, plane, offs, eoff, taps, wb + t * point_w, NULL,
                           nf, ys, ldm, NULL);
                    } else {
                      tile(g, nj, xr, plane, offs, eoff, taps, wb, bias ? bias + f0 : NULL, nf, ys,
                           ldy, direct ? &dr : NULL);
                    }
                  }
                if (T > 0) {
                  const struct bundle_out br = {out + n + i0 * s0 + r0 * s1 + f0 * sf, s1, sf,
                                                activation == ACT_RELU, direct_stream};
                  bundle_rows(M, T, at, y + m_at, FB * ldm, ldm, nf, bias ? bias + f0 : NULL,
                              u1 - u0, nr, slots * L, y + f0 * ldy, ldy, direct ? &br : NULL);
                }
              }
            if (direct) continue;
            CONCAT(activation_block_, SUFFIX)(activation, channels_last, y, nr * slots * L, F, 1,
                                              ldy);
            /* each filter's rows: one run when they follow each other in R and
             * in y */
            const int whole = s2 == 1 && s1 == O2 && slots * L == O2;
            for (int64_t f = 0; f < F; ++f) {
              const real_t* yf = y + f * ldy;
              double* of = out + n + i0 * s0 + r0 * s1 + f * sf;
              if (whole) {
                CONCAT(store_run_, SUFFIX)(stream, yf, of, nr * O2);
              } else {
                for (int64_t row = 0; row < nr; ++row) {
                  if (s2 == 1) {
                    CONCAT(store_run_, SUFFIX)(stream, yf + row * slots * L, of + row * s1, O2);
                  } else {
                    CONCAT(store_strided_, SUFFIX)(yf + row * slots * L, of + row * s1, O2, s2);
                  }
                }
              }
            }
          }
        }
      }
      if (stream) cpu_kernels()->stream_fence();
    }
    if (end < planes && check_interrupt != NULL) check_interrupt();
  }

  if (activation == ACT_SOFTMAX && !channels_last) {
    CONCAT(conv_softmax_last_axis_, SUFFIX)(s, out, scratch, per_thread, nthreads);
  }
}
