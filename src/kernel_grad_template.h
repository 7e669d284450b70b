/* Kernel gradient as a GEMM over output positions: for each group,
 * dW[k, f] = sum over positions p of x_patch[p, k] * dz[p, f], with k the patch
 * row (a, b, e, c) in R's kernel order. Positions are taken in chunks: a chunk's
 * dz is transposed once to [p][f] (the tier's GEMM panel), and each task (a
 * block of wt_max patch rows) gathers its rows of the chunk's patches and runs
 * the GEMM block over every block of filters, adding the chunk's sums into its
 * own rows of a double accumulator. Chunks are summed in order and every dW
 * element has one writer, so results do not depend on the thread count.
 * Included by conv_backward.c once per real_t. */
void CONCAT(conv3d_kernel_grad_gemm_, SUFFIX)(const struct conv_spec* s, const double* x,
                                             const double* dz, double* dw, real_t* scratch,
                                             double* acc, int nthreads) {
  const struct kernel_table* kt = cpu_kernels();
  const CONCAT(conv_gemm_fn_, SUFFIX) block = kt->CONCAT(gemm_, SUFFIX);
  const int64_t VB = 2 * (int64_t)(s->dtype == DTYPE_FLOAT32 ? kt->lanes_f32 : kt->lanes_f64);
  const int64_t NR = kt->wt_max;
  int64_t xs[5], ys[5];
  conv_r_strides(s, 0, xs);
  conv_r_strides(s, 1, ys);
  const int64_t N = s->batch, DO = s->out[0], HO = s->out[1], WO = s->out[2];
  const int64_t P = N * DO * HO * WO, G = s->groups, CG = s->channels / G, FG = s->filters / G;
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2], taps = KD * KH * KW;
  const int64_t K = taps * CG, FGP = (FG + VB - 1) / VB * VB, kblocks = (K + NR - 1) / NR;
  /* positions come in runs of N * DO sharing (oh, ow); chunks are whole runs */
  const int64_t run = N * DO, chunk = conv_grad_chunk(s);
  real_t* dzt = scratch;                                   /* chunk x FGP */
  real_t* per_thread = scratch + chunk * FGP;              /* xpack + tile per thread */
  const int64_t thread_len = chunk * NR + NR * VB;
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t i = 0; i < K * FGP; ++i) acc[i] = 0;
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
      const int64_t m = P - p0 < chunk ? P - p0 : chunk;
      /* dz of the chunk as [p][f], zero past the group's filters */
      #pragma omp parallel for num_threads(nthreads) schedule(static)
      for (int64_t pi = 0; pi < m; ++pi) {
        const int64_t p = p0 + pi, n = p % N, od = (p / N) % DO, oh = (p / (N * DO)) % HO,
                      ow = p / (N * DO * HO);
        const double* src = dz + n + od * ys[1] + oh * ys[2] + ow * ys[3] + g * FG * ys[4];
        real_t* dst = dzt + pi * FGP;
        for (int64_t f = 0; f < FG; ++f) dst[f] = (real_t)src[f * ys[4]];
        for (int64_t f = FG; f < FGP; ++f) dst[f] = 0;
      }
      #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
      for (int64_t kb = 0; kb < kblocks; ++kb) {
        real_t* xpack = per_thread + (int64_t)omp_get_thread_num() * thread_len;
        real_t* tile = xpack + chunk * NR;
        /* gather the block's patch rows for the chunk's positions (0 in padding);
         * the chunk is whole runs of N * DO positions sharing (oh, ow), along
         * which the input index moves by a fixed stride */
        for (int64_t j = 0; j < NR; ++j) {
          const int64_t k = kb * NR + j;
          if (k >= K) {
            for (int64_t pi = 0; pi < m; ++pi) xpack[pi * NR + j] = 0;
            continue;
          }
          const int64_t da = (k % KD) * s->dilation[0] - s->pad_lo[0];
          const int64_t db = ((k / KD) % KH) * s->dilation[1] - s->pad_lo[1];
          const int64_t de = ((k / (KD * KH)) % KW) * s->dilation[2] - s->pad_lo[2];
          const double* xk = x + (g * CG + k / taps) * xs[4];
          for (int64_t r0 = 0; r0 < m; r0 += run) {
            const int64_t q = (p0 + r0) / run, oh = q % HO, ow = q / HO;
            const int64_t ih = oh * s->strides[1] + db, iw = ow * s->strides[2] + de;
            real_t* dst = xpack + r0 * NR + j;
            if (ih < 0 || ih >= s->in[1] || iw < 0 || iw >= s->in[2]) {
              for (int64_t i = 0; i < run; ++i) dst[i * NR] = 0;
              continue;
            }
            const double* xr = xk + ih * xs[2] + iw * xs[3];
            for (int64_t od = 0; od < DO; ++od) {
              const int64_t id = od * s->strides[0] + da;
              real_t* d = dst + od * N * NR;
              if (id < 0 || id >= s->in[0]) {
                for (int64_t n = 0; n < N; ++n) d[n * NR] = 0;
              } else {
                const double* xv = xr + id * xs[1];
                for (int64_t n = 0; n < N; ++n) d[n * NR] = (real_t)xv[n];
              }
            }
          }
        }
        for (int64_t f0 = 0; f0 < FGP; f0 += VB) {
          block(m, dzt + f0, FGP, xpack, tile);
          for (int64_t j = 0; j < NR && kb * NR + j < K; ++j)
            for (int64_t i = 0; i < VB; ++i) acc[(kb * NR + j) * FGP + f0 + i] += tile[j * VB + i];
        }
      }
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t f = 0; f < FG; ++f) dw[k + K * (g * FG + f)] = acc[k * FGP + f];
  }
}
