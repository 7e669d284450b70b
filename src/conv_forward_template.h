/* The forward driver for one element type: splits output rows (n, od, oh) across
 * threads in chunks, runs the row micro-kernel, then bias is already in and the
 * activation is applied to the row while it is in cache. Between chunks the main
 * thread lets R check for a user interrupt. */
void CONCAT(conv3d_forward_, SUFFIX)(const struct conv_spec* s, const real_t* xp,
                                    const real_t* wp, const real_t* bias, int activation,
                                    real_t* y, int nthreads, interrupt_fn check_interrupt) {
  struct conv_geometry g;
  conv_geometry_init(s, &g);
  const CONCAT(conv_row_fn_, SUFFIX) row = cpu_kernels()->CONCAT(row_, SUFFIX);
  const int64_t DO = s->out[0], HO = s->out[1];
  const int64_t rows = s->batch * DO * HO;
  const int64_t row_len = g.wo * g.f;
  const int softmax_last = activation == ACT_SOFTMAX;
  const int channels_last = s->layout == LAYOUT_CHANNELS_LAST;
  const int64_t chunk = conv_chunk_rows(s, nthreads);

  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t end = start + chunk < rows ? start + chunk : rows;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = start; r < end; ++r) {
      const int64_t n = r / (DO * HO), od = (r / HO) % DO, oh = r % HO;
      const real_t* x = xp + ((n * g.pd + od * g.sd) * g.ph + oh * g.sh) * g.pw * g.c;
      real_t* yr = y + r * row_len;
      row(&g, x, wp, bias, yr);
      if (!softmax_last) {
        CONCAT(activation_apply_, SUFFIX)(activation, yr, row_len);
      } else if (channels_last) {
        for (int64_t w = 0; w < g.wo; ++w) CONCAT(softmax_, SUFFIX)(yr + w * g.f, g.f, 1);
      } else { /* Keras takes the last axis even under channels_first: W */
        for (int64_t f = 0; f < g.f; ++f) CONCAT(softmax_, SUFFIX)(yr + f, g.wo, g.f);
      }
    }
    if (end < rows && check_interrupt != NULL) check_interrupt();
  }
}
