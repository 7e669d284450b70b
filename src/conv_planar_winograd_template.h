/* The Winograd rows of the planar path (conv_planar_winograd.c) for one
 * element type: the transformed kernel and a transformed input plane (the
 * bundles' rows are summed from the products by the tier's planar_bundles_*). */

/* Kernel weights (read through src) -> wp[g][block][point][a][e][c][fb]: each
 * point's weights, G's row over its phase's taps along axis 1, as the
 * planar tiles read a kernel of one tap along axis 1; zero past each
 * group's filters. Sums in double. */
void CONCAT(planar_winograd_pack_weights_, SUFFIX)(const struct conv_spec* s,
                                                   const struct conv_geometry* geo,
                                                   const struct weight_source* src, real_t* wp,
                                                   int nthreads) {
  struct planar_point pts[PLANAR_WINO_MAX_POINTS];
  conv_planar_winograd_transforms(geo, pts);
  const int64_t T = geo->planar_points, FB = geo->fb, nblocks = geo->fg_pad / FB;
  const int64_t KD = geo->kd, KH = geo->kh, KW = geo->kw, CG = geo->cg, FG = geo->fg;
  const int64_t per_point = KD * KW * CG * FB;
  (void)s;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t gb = 0; gb < geo->groups * nblocks; ++gb) {
    const int64_t grp = gb / nblocks, blk = gb % nblocks;
    real_t* o = wp + gb * T * per_point;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t a = 0; a < KD; ++a)
        for (int64_t e = 0; e < KW; ++e)
          for (int64_t c = 0; c < CG; ++c)
            for (int64_t j = 0; j < FB; ++j) {
              const int64_t f = blk * FB + j;
              double u = 0;
              for (int64_t k = 0; f < FG && k < pts[t].r; ++k) {
                const int64_t b = pts[t].phase + geo->sh * k;
                u += pts[t].gt[k] *
                     src->w[src->tap[(a * KH + b) * KW + e] + src->cs * c + src->fs * f +
                            src->gs * grp];
              }
              o[(((t * KD + a) * KW + e) * CG + c) * FB + j] = (real_t)u;
            }
  }
}

/* A packed input plane raw[p1][c][p2] (ph rows) -> out[bundle][point][c][p2]:
 * point t of bundle P, B's row over its phase's input rows m P S + q + S j,
 * the rows from rows_read on (which no output reads: a last bundle's rows
 * past the layer's would) being zero, and left out, as are zero
 * coefficients. Returns whether any transformed value is not finite. */
int CONCAT(planar_winograd_plane_, SUFFIX)(const struct conv_geometry* g,
                                           const struct planar_point* pts, int64_t bundles,
                                           int64_t rows_read, const real_t* raw, real_t* out) {
  const CONCAT(conv_planar_combine_fn_, SUFFIX) combine =
      cpu_kernels()->CONCAT(planar_combine_, SUFFIX);
  const int64_t row = g->c * g->pw;
  int nonfinite = 0;
  for (int64_t t = 0; t < g->planar_points; ++t)
    for (int64_t P = 0; P < bundles; ++P) {
      real_t b[PLANAR_WINO_MAX_ROWS];
      const real_t* rows[PLANAR_WINO_MAX_ROWS];
      int64_t k = 0;
      for (int64_t j = 0; j < g->planar_m + pts[t].r - 1; ++j) {
        const int64_t r = g->planar_m * P * g->sh + pts[t].phase + g->sh * j;
        if (r >= rows_read || pts[t].bt[j] == 0) continue;
        b[k] = (real_t)pts[t].bt[j];
        rows[k++] = raw + r * row;
      }
      nonfinite |= combine(k, b, rows, row, out + (P * g->planar_points + t) * row);
    }
  return nonfinite;
}
