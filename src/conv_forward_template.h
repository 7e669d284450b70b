/* The forward driver for one element type. Output rows (n, oh, ow), each running
 * along depth, are split across threads in chunks; a row is computed into the
 * thread's scratch (bias included), activated while in cache, and written
 * straight into the R output array in the layer's data format. Between chunks
 * the main thread lets R check for a user interrupt. */
void CONCAT(conv3d_forward_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ks,
                                     const real_t* xp, const real_t* wp, const real_t* bias,
                                     int activation, double* out, real_t* scratch, int nthreads,
                                     interrupt_fn check_interrupt) {
  struct conv_geometry g;
  conv_geometry_init(ks, &g);
  const CONCAT(conv_row_fn_, SUFFIX) row = cpu_kernels()->CONCAT(row_, SUFFIX);
  const int64_t N = s->batch, F = s->filters;
  const int64_t O0 = ks->out[0], O1 = ks->out[1], O2 = ks->out[2];
  const int64_t rows = N * O0 * O1;
  const int64_t row_len = O2 * F, scratch_row = conv_scratch_row(s);
  int64_t st[5];
  conv_r_strides(s, 1, st);
  const int64_t s0 = st[1 + ks->axes[0]], s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]];
  const int64_t sf = st[4];
  const int channels_last = s->layout == LAYOUT_CHANNELS_LAST;
  const int64_t chunk = conv_chunk_rows(s, nthreads);

  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t end = start + chunk < rows ? start + chunk : rows;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = start; r < end; ++r) {
      /* i0 varies fastest: its R stride is the smaller, so consecutive rows write
       * consecutive memory */
      const int64_t n = r / (O0 * O1), i0 = r % O0, i1 = (r / O0) % O1;
      const real_t* x = xp + ((n * g.pd + i0 * g.sd) * g.ph + i1 * g.sh) * g.pw * g.c;
      real_t* yr = scratch + (int64_t)omp_get_thread_num() * scratch_row;
      row(&g, x, wp, bias, yr);
      if (activation == ACT_SOFTMAX) {
        /* channels_last: over each voxel's filters; channels_first: over W, later */
        if (channels_last) {
          for (int64_t i = 0; i < O2; ++i) CONCAT(softmax_, SUFFIX)(yr + i * F, F, 1);
        }
      } else {
        CONCAT(activation_apply_, SUFFIX)(activation, yr, row_len);
      }
      /* write the row into the R array, the inner loop along the smaller stride */
      double* o = out + n + i0 * s0 + i1 * s1;
      if (sf < s2) {
        for (int64_t i = 0; i < O2; ++i)
          for (int64_t f = 0; f < F; ++f) o[i * s2 + f * sf] = (double)yr[i * F + f];
      } else {
        for (int64_t f = 0; f < F; ++f)
          for (int64_t i = 0; i < O2; ++i) o[i * s2 + f * sf] = (double)yr[i * F + f];
      }
    }
    if (end < rows && check_interrupt != NULL) check_interrupt();
  }

  if (activation == ACT_SOFTMAX && !channels_last) {
    /* Keras takes the last axis even under channels_first: W, stride N*F*DO*HO */
    const int64_t WO = s->out[2], lines = N * F * s->out[0] * s->out[1], stride = lines;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t l = 0; l < lines; ++l) {
      real_t* v = scratch + (int64_t)omp_get_thread_num() * scratch_row;
      for (int64_t w = 0; w < WO; ++w) v[w] = (real_t)out[l + w * stride];
      CONCAT(softmax_, SUFFIX)(v, WO, 1);
      for (int64_t w = 0; w < WO; ++w) out[l + w * stride] = (double)v[w];
    }
  }
}
