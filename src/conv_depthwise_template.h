/* The planar depthwise driver for one element type (conv_depthwise.c). Work
 * items are slabs of a channel's output planes along W, split across threads
 * in chunks. For each sample, a thread reads the slab's input planes into its
 * buffer with the zero padding around them (the tier's dw_fill) and computes
 * each output plane (the tier's dw_plane); then it applies the activation
 * while the slab's outputs are in cache and writes them, the samples woven
 * together, as one run of the R output (streamed past the caches when the
 * output is large: conv_stream_output). Every output is summed in the same
 * order whatever the split, so results are bit-identical across thread
 * counts. Between chunks the main thread lets R check for a user interrupt. */
void CONCAT(conv3d_depthwise_planes_, SUFFIX)(const struct conv_spec* s, const double* x,
                                               const double* kernel, const double* bias,
                                               int activation, double* out, real_t* scratch,
                                               int nthreads, interrupt_fn check_interrupt) {
  struct conv_dw_geometry g;
  conv_dw_geometry_init(s, &g);
  const CONCAT(conv_dw_plane_fn_, SUFFIX) plane_fn = cpu_kernels()->CONCAT(dw_plane_, SUFFIX);
  const CONCAT(conv_dw_fill_fn_, SUFFIX) fill = cpu_kernels()->CONCAT(dw_fill_, SUFFIX);
  const int64_t N = s->batch, I0 = s->in[0], I1 = s->in[1], I2 = s->in[2];
  const int64_t O0 = g.out[0], O1 = g.out[1], O2 = g.out[2], P0 = g.p0, P1 = g.p1;
  const int64_t lo0 = s->pad_lo[0], lo1 = s->pad_lo[1], lo2 = s->pad_lo[2], s2 = s->strides[2];
  const int64_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
  const int64_t planes = conv_dw_slab_planes(s, &g, nthreads), slabs = (O2 + planes - 1) / planes;
  const int64_t per_thread = conv_dw_scratch(s, &g, planes), items = s->channels * slabs;
  const int64_t in_len = dw_input_len(s, &g, planes);
  const int stream = conv_stream_output(s);
  /* about 1 GFLOP between interrupt checks, at least a few items per thread */
  int64_t chunk = (int64_t)(1e9 / (2.0 * (double)taps * (double)(N * O0 * O1 * planes) + 1));
  if (chunk < 4 * (int64_t)nthreads) chunk = 4 * (int64_t)nthreads;

  for (int64_t start = 0; start < items; start += chunk) {
    const int64_t end = start + chunk < items ? start + chunk : items;
    #pragma omp parallel num_threads(nthreads)
    {
      real_t* xs = scratch + (int64_t)omp_get_thread_num() * per_thread;
      real_t* y = xs + in_len;
      real_t* w = y + N * planes * O0 * O1 + conv_lanes(s);
      #pragma omp for schedule(dynamic, 1) nowait
      for (int64_t item = start; item < end; ++item) {
        const int64_t c = item / slabs, o2 = (item % slabs) * planes;
        const int64_t np = O2 - o2 < planes ? O2 - o2 : planes, q_end = dw_input_planes(s, np);
        for (int64_t t = 0; t < taps; ++t) w[t] = (real_t)kernel[c * taps + t];
        const real_t b = bias ? (real_t)bias[c] : (real_t)0;
        /* the input of this thread's likely next item (the one nthreads on,
         * as the threads take turns), prefetched a share per output plane */
        const int64_t next = item + nthreads;
        const double* xn = x;
        int64_t next_len = 0;
        if (next < end) {
          const int64_t n2 = (next % slabs) * planes;
          int64_t i0, i1;
          dw_real_planes(s, n2, O2 - n2 < planes ? O2 - n2 : planes, &i0, &i1);
          xn = x + ((next / slabs) * I2 + i0) * I1 * I0 * N;
          next_len = (i1 - i0) * I1 * I0 * N;
        }
        const int64_t share = (next_len + N * np - 1) / (N * np), len = np * O0 * O1;
        for (int64_t n = 0; n < N; ++n) {
          const double* xc = x + n + c * I2 * I1 * I0 * N;
          for (int64_t q = 0; q < q_end; ++q) {
            const int64_t i2 = o2 * s2 + q - lo2;
            fill(&g, i2 < 0 || i2 >= I2 ? NULL : xc + i2 * I1 * I0 * N, N, I0, I1, lo0, lo1,
                 xs + q * P1 * P0);
          }
          for (int64_t k = 0; k < np; ++k) {
            /* a cache line (8 doubles) at a time, into L2 */
            const int64_t p0 = (n * np + k) * share;
            for (int64_t i = p0; i < p0 + share && i < next_len; i += 8) prefetch_to_l2(xn + i);
            plane_fn(&g, xs + k * s2 * P1 * P0, w, b, y + n * len + k * O0 * O1);
          }
        }
        CONCAT(activation_block_, SUFFIX)(activation, 0, y, N * len, 1, 1, 1);
        /* sample n of output q goes to o[q * N + n] */
        CONCAT(weave_run_, SUFFIX)(stream, y, len, N, len, out + (c * O2 + o2) * O0 * O1 * N);
      }
      if (stream) cpu_kernels()->stream_fence();
    }
    if (end < items && check_interrupt != NULL) check_interrupt();
  }
}

/* The kernel gradient on the planar depthwise path, for any layer with one
 * input channel per group (conv_dw_grad_eligible): work items are filters
 * (each filter's sums stay with one thread, in one order; filter c reads its
 * group's channel), in chunks. For
 * each sample and slab, a thread reads the slab's padded input and output
 * gradient (the tier's dw_fill) and adds each output plane's share of every
 * tap (the tier's dw_grad) into its double sums, one per lane; their sum ends
 * in the layer's precision. Between chunks the main thread lets R check for a user
 * interrupt. */
void CONCAT(conv3d_depthwise_kernel_grad_planes_, SUFFIX)(const struct conv_spec* s,
                                                       const double* x, const double* dz,
                                                       double* dw, int64_t* off,
                                                       real_t* scratch, double* local,
                                                       int nthreads,
                                                       interrupt_fn check_interrupt) {
  struct conv_dw_geometry g;
  conv_dw_geometry_init(s, &g);
  /* the output gradient's slab: rows of whole vectors, no padding */
  struct conv_dw_geometry gz = g;
  gz.p0 = g.nv * conv_lanes(s);
  gz.p1 = g.out[1];
  const CONCAT(conv_dw_fill_fn_, SUFFIX) fill = cpu_kernels()->CONCAT(dw_fill_, SUFFIX);
  const CONCAT(conv_dw_grad_fn_, SUFFIX) grad = cpu_kernels()->CONCAT(dw_grad_, SUFFIX);
  const int64_t N = s->batch, I0 = s->in[0], I1 = s->in[1], I2 = s->in[2];
  const int64_t O0 = g.out[0], O1 = g.out[1], O2 = g.out[2], P0 = g.p0, P1 = g.p1;
  const int64_t lo0 = s->pad_lo[0], lo1 = s->pad_lo[1], lo2 = s->pad_lo[2], s2 = s->strides[2];
  const int64_t K0 = g.kernel[0], K1 = g.kernel[1], taps = K0 * K1 * g.kernel[2];
  const int64_t L = conv_lanes(s);
  for (int64_t t = 0; t < taps; ++t) { /* tap t = a0 + K0 * (a1 + K1 * a2), R's order */
    const int64_t a0 = t % K0, a1 = t / K0 % K1, a2 = t / (K0 * K1);
    off[t] = a0 * g.dilation[0] + (a1 * g.dilation[1] + a2 * g.dilation[2] * P1) * P0;
  }
  const int64_t planes = conv_dw_slab_planes(s, &g, nthreads), slabs = (O2 + planes - 1) / planes;
  const int64_t per_thread = conv_dw_grad_scratch(s, &g, planes);
  const int64_t in_len = dw_input_len(s, &g, planes);
  /* about 1 GFLOP between interrupt checks, at least a few filters per thread */
  int64_t chunk = (int64_t)(1e9 / (2.0 * (double)taps * (double)(N * O0 * O1 * O2) + 1));
  if (chunk < 4 * (int64_t)nthreads) chunk = 4 * (int64_t)nthreads;

  const int64_t F = s->filters, FG = F / s->groups; /* filter c reads channel c / FG */
  for (int64_t start = 0; start < F; start += chunk) {
    const int64_t end = start + chunk < F ? start + chunk : F;
    #pragma omp parallel num_threads(nthreads)
    {
      real_t* xs = scratch + (int64_t)omp_get_thread_num() * per_thread;
      real_t* zs = xs + in_len;
      double* acc = local + (int64_t)omp_get_thread_num() * conv_dw_grad_local(s);
      #pragma omp for schedule(dynamic, 1) nowait
      for (int64_t c = start; c < end; ++c) {
        for (int64_t t = 0; t < taps * L; ++t) acc[t] = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double* xc = x + n + c / FG * I2 * I1 * I0 * N;
          const double* zc = dz + n + c * O2 * O1 * O0 * N;
          for (int64_t o2 = 0; o2 < O2; o2 += planes) {
            const int64_t np = O2 - o2 < planes ? O2 - o2 : planes, q_end = dw_input_planes(s, np);
            for (int64_t q = 0; q < q_end; ++q) {
              const int64_t i2 = o2 * s2 + q - lo2;
              fill(&g, i2 < 0 || i2 >= I2 ? NULL : xc + i2 * I1 * I0 * N, N, I0, I1, lo0, lo1,
                   xs + q * P1 * P0);
            }
            for (int64_t k = 0; k < np; ++k) {
              fill(&gz, zc + (o2 + k) * O1 * O0 * N, N, O0, O1, 0, 0, zs);
              grad(&g, xs + k * s2 * P1 * P0, zs, off, taps, acc);
            }
          }
        }
        for (int64_t t = 0; t < taps; ++t) {
          double sum = 0;
          for (int64_t l = 0; l < L; ++l) sum += acc[t * L + l];
          dw[c * taps + t] = (double)(real_t)sum;
        }
      }
    }
    if (end < F && check_interrupt != NULL) check_interrupt();
  }
}
