/* Kernel gradient as a GEMM over output positions: for each group,
 * dW[k, f] = sum over positions p of x_patch[p, k] * dz[p, f], with k the patch
 * row (a, b, e, c) in R's kernel order. Positions are taken in chunks: a chunk's
 * dz is transposed once to [p][f] (the tier's GEMM panel), and each task (a
 * block of gemm_nr patch rows) gathers its rows of the chunk's patches and runs
 * the GEMM block over every block of filters, adding the chunk's sums into its
 * own rows of a double accumulator. Chunks are summed in order and every dW
 * element has one writer, so results do not depend on the thread count; dW
 * ends in the layer's precision. Interrupts are checked between chunks. Included by conv_backward.c once per
 * real_t. */
void CONCAT(conv3d_kernel_grad_gemm_, SUFFIX)(const struct conv_spec* s, const double* x,
                                             const double* dz, double* dw, real_t* scratch,
                                             double* acc, int nthreads,
                                             interrupt_fn check_interrupt) {
  const struct kernel_table* kt = cpu_kernels();
  const CONCAT(conv_gemm_fn_, SUFFIX) block = kt->CONCAT(gemm_, SUFFIX);
  const int64_t VB = 2 * conv_lanes(s);
  const int64_t NR = kt->gemm_nr;
  int64_t xs[5], ys[5];
  conv_r_strides(s, 0, xs);
  conv_r_strides(s, 1, ys);
  const int64_t N = s->batch, DO = s->out[0], HO = s->out[1], WO = s->out[2];
  const int64_t P = N * DO * HO * WO, G = s->groups, CG = s->channels / G, FG = s->filters / G;
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2], taps = KD * KH * KW;
  const int64_t K = taps * CG, FGP = (FG + VB - 1) / VB * VB, kblocks = (K + NR - 1) / NR;
  /* positions come in runs of N * DO sharing (oh, ow); chunks are whole runs */
  const int64_t run = N * DO, chunk = conv_grad_chunk(s);
  /* channels_last: position p of dz (of a filter) at offset p */
  const int linear = ys[1] == N && ys[2] == N * DO && ys[3] == N * DO * HO;
  real_t* dzt = scratch;                                   /* chunk x FGP */
  real_t* per_thread = scratch + chunk * FGP;              /* xpack + tile per thread */
  const int64_t thread_len = chunk * NR + NR * VB;
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t i = 0; i < K * FGP; ++i) acc[i] = 0;
    for (int64_t p0 = 0; p0 < P; p0 += chunk) {
      const int64_t m = P - p0 < chunk ? P - p0 : chunk;
      /* dz of the chunk as [p][f], zero past the group's filters */
      if (linear) { /* each filter's positions are one run of R memory: the tier's transposer */
        #pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t b = 0; b < m; b += GRAD_TRANSPOSE_RUN) {
          const int64_t len = m - b < GRAD_TRANSPOSE_RUN ? m - b : GRAD_TRANSPOSE_RUN;
          real_t* dst = dzt + b * FGP;
          CONCAT(load_columns_, SUFFIX)(dz + g * FG * ys[4] + p0 + b, ys[4], NULL, len, FG, dst, FGP, 0);
          for (int64_t i = 0; i < len; ++i)
            for (int64_t f = FG; f < FGP; ++f) dst[i * FGP + f] = 0;
        }
      } else {
        #pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t pi = 0; pi < m; ++pi) {
          const int64_t p = p0 + pi, n = p % N, od = (p / N) % DO, oh = (p / (N * DO)) % HO,
                        ow = p / (N * DO * HO);
          const double* src = dz + n + od * ys[1] + oh * ys[2] + ow * ys[3] + g * FG * ys[4];
          real_t* dst = dzt + pi * FGP;
          for (int64_t f = 0; f < FG; ++f) dst[f] = (real_t)src[f * ys[4]];
          for (int64_t f = FG; f < FGP; ++f) dst[f] = 0;
        }
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
          block(m, dzt + f0, FGP, xpack, NULL, tile, VB, NULL, NULL);
          for (int64_t j = 0; j < NR && kb * NR + j < K; ++j)
            for (int64_t i = 0; i < VB; ++i) acc[(kb * NR + j) * FGP + f0 + i] += tile[j * VB + i];
        }
      }
      if (check_interrupt != NULL) check_interrupt();
    }
    for (int64_t k = 0; k < K; ++k)
      for (int64_t f = 0; f < FG; ++f) dw[k + K * (g * FG + f)] = (double)(real_t)acc[k * FGP + f];
  }
}

/* Kernel gradient for groups of whole blocks of grad_nr channels, with the
 * input read in place: xp is the layer's padded input in the kernel spec's
 * layout (pack_input_*), so the patch rows of grad_nr consecutive channels at
 * one tap are consecutive elements at every position. Positions go in chunks
 * of whole rows (conv_grad_rows_per_chunk): a chunk's dz is transposed once to
 * dzt[position][group][filter] (zero past each group's filters); then every
 * task (group, channel block, block of conv_grad_filter_block filters) runs
 * the chunk's positions in sub-blocks of about GRAD_CHUNK, tap by tap, through
 * a register tile into its own double accumulator (local: per thread, taps x
 * grad_nr x filter block, then room for the runs below: conv_grad_local), and
 * adds that into its own elements of dw once per chunk, each (channel,
 * filter) as one run along the taps (with one chunk and all taps, each
 * filter's grad_nr channels as one run, streamed when dw is large). When
 * those tasks are too few to keep every thread busy, the taps are split among
 * more tasks.
 * Sums run in a fixed order (chunks, sub-blocks, positions), so results do not
 * depend on the thread count; dw ends in the layer's precision. At each tap a
 * block sees only the rows and positions whose input is not padding (the rest
 * add zeros). tap[t]: R's index of kernel-spec tap t. xrow holds, for each
 * row of a chunk, its input offset, then (rpc further on) its first input row
 * along the first axis and (2 rpc on) along the second, all relative to the
 * real input. Interrupts are checked between chunks. */
void CONCAT(conv3d_kernel_grad_direct_, SUFFIX)(const struct conv_spec* s,
                                               const struct conv_spec* ks, const real_t* xp,
                                               const double* dz, const int64_t* tap, double* dw,
                                               real_t* dzt, int64_t* xrow, double* local,
                                               int nthreads, interrupt_fn check_interrupt) {
  const struct kernel_table* kt = cpu_kernels();
  const int64_t NR = kt->grad_nr, VB = conv_grad_filter_block(s);
  const int64_t lanes = conv_lanes(s);
  const CONCAT(conv_grad_fn_, SUFFIX) block =
      VB == lanes ? kt->CONCAT(grad1_, SUFFIX) : kt->CONCAT(grad_, SUFFIX);
  struct conv_geometry g;
  conv_geometry_init(ks, &g);
  const int64_t G = s->groups, CG = s->channels / G, FG = s->filters / G;
  const int64_t FGP = (FG + VB - 1) / VB * VB, LD = G * FGP;
  const int64_t O0 = ks->out[0], O1 = ks->out[1], O2 = ks->out[2];
  const int64_t rows_total = s->batch * O0 * O1, rpc = conv_grad_rows_per_chunk(s, ks);
  const int64_t sub = GRAD_CHUNK / O2 > 1 ? GRAD_CHUNK / O2 : 1; /* rows per sub-block */
  const int64_t taps = g.kd * g.kh * g.kw, lo2 = ks->pad_lo[2], in2 = ks->in[2];
  int64_t* first0 = xrow + rpc; /* see above */
  int64_t* first1 = xrow + 2 * rpc;
  int64_t st[5];
  conv_r_strides(s, 1, st);
  const int64_t s0 = st[1 + ks->axes[0]], s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]];
  const int64_t sf = st[4];
  const int64_t cblocks = CG / NR, fblocks = FGP / VB, blocks = G * cblocks * fblocks;
  const int stream = conv_stream_doubles((double)taps * (double)s->channels * (double)FG);
  /* parts of the taps per block: enough tasks for every thread. Fixed by the
   * layer, not the thread count, so the sums do not depend on it either way */
  int64_t parts = (4 + blocks - 1) / blocks;
  if (parts > taps) parts = taps;
  const int64_t tasks = blocks * parts, part_len = (taps + parts - 1) / parts;
  for (int64_t r0 = 0; r0 < rows_total; r0 += rpc) {
    const int64_t nrows = rows_total - r0 < rpc ? rows_total - r0 : rpc;
    const int first = r0 == 0, last = r0 + rpc >= rows_total;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t ri = 0; ri < nrows; ++ri) {
      const int64_t q = r0 + ri, o1 = q % O1, o0 = (q / O1) % O0, n = q / (O1 * O0);
      xrow[ri] = ((n * g.pd + o0 * g.sd) * g.ph + o1 * g.sh) * g.pw * g.c;
      first0[ri] = o0 * g.sd - g.lo0;
      first1[ri] = o1 * g.sh - g.lo1;
      const double* src = dz + n + o0 * s0 + o1 * s1;
      real_t* dst = dzt + ri * O2 * LD;
      for (int64_t grp = 0; grp < G; ++grp) {
        real_t* d = dst + grp * FGP;
        const double* sg = src + grp * FG * sf;
        if (s2 == 1) { /* each filter's row is a run of R memory: the tier's transposer */
          CONCAT(load_columns_, SUFFIX)(sg, sf, NULL, O2, FG, d, LD, 0);
        } else {
          for (int64_t f = 0; f < FG; ++f)
            for (int64_t o2 = 0; o2 < O2; ++o2) d[o2 * LD + f] = (real_t)sg[f * sf + o2 * s2];
        }
        for (int64_t o2 = 0; o2 < O2; ++o2)
          for (int64_t f = FG; f < FGP; ++f) d[o2 * LD + f] = 0;
      }
    }
    #pragma omp parallel num_threads(nthreads)
    {
      #pragma omp for schedule(dynamic, 1) nowait
      for (int64_t task = 0; task < tasks; ++task) {
        const int64_t blk = task / parts, t0 = task % parts * part_len;
        const int64_t t1 = t0 + part_len < taps ? t0 + part_len : taps;
        const int64_t fb = blk % fblocks, cb = blk / fblocks % cblocks, grp = blk / (fblocks * cblocks);
        const int64_t nf = FG - fb * VB < VB ? FG - fb * VB : VB;
        double* acc = local + (int64_t)omp_get_thread_num() * conv_grad_local(taps, NR, VB); /* [t][j][i] */
        for (int64_t i = t0 * NR * VB; i < t1 * NR * VB; ++i) acc[i] = 0;
        for (int64_t b0 = 0; b0 < nrows; b0 += sub) {
          const int64_t nb = nrows - b0 < sub ? nrows - b0 : sub;
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t a = t / (g.kh * g.kw), b = (t / g.kw) % g.kh, e = t % g.kw;
            const real_t* xk = xp + ((a * g.dd * g.ph + b * g.dh) * g.pw + e * g.dw) * g.c +
                               grp * CG + cb * NR;
            int64_t q0 = 0, q1 = O2, nr = 0; /* real input at this tap */
            while (q0 < q1 && q0 * g.sw + e * g.dw < lo2) ++q0;
            while (q1 > q0 && (q1 - 1) * g.sw + e * g.dw - lo2 >= in2) --q1;
            int64_t xr[GRAD_CHUNK], dr[GRAD_CHUNK]; /* nb <= sub <= GRAD_CHUNK */
            for (int64_t ri = 0; ri < nb && q1 > q0; ++ri) {
              const int64_t i0 = first0[b0 + ri] + a * g.dd, i1 = first1[b0 + ri] + b * g.dh;
              if (i0 < 0 || i0 >= g.in0 || i1 < 0 || i1 >= g.in1) continue;
              xr[nr] = xrow[b0 + ri] + q0 * g.sw * g.c;
              dr[nr] = ((b0 + ri) * O2 + q0) * LD;
              ++nr;
            }
            if (nr == 0) continue;
            block(nr, q1 - q0, xk, xr, g.sw * g.c, dzt + grp * FGP + fb * VB, dr, LD,
                  acc + t * NR * VB);
          }
        }
        /* into dw: filter by filter, its NR channels' runs along the taps,
         * which follow each other in R */
        if (first && last && t0 == 0 && t1 == taps) {
          /* the task's whole gradient at once (one chunk, all taps): each
           * filter's NR channels are one run of R memory, [channel][R's tap].
           * The tier transposes acc into those runs, in the layer's precision
           * (col: the accumulator behind each element of a run), and each is
           * stored whole, past the caches when dw is large. Element by element,
           * this took as long as the products (c3d_conv5a). */
          const int64_t len = NR * taps;
          int64_t* col = (int64_t*)(acc + taps * NR * VB);
          real_t* runs = (real_t*)(col + len);
          for (int64_t j = 0; j < NR; ++j)
            for (int64_t t = 0; t < taps; ++t) col[j * taps + tap[t]] = t * NR + j;
          CONCAT(load_columns_, SUFFIX)(acc, VB, col, nf, len, runs, len, 0);
          for (int64_t i = 0; i < nf; ++i)
            CONCAT(store_run_, SUFFIX)(stream, runs + i * len,
                                       dw + taps * (cb * NR + CG * (grp * FG + fb * VB + i)), len);
          continue;
        }
        for (int64_t i = 0; i < nf; ++i)
          for (int64_t j = 0; j < NR; ++j) {
            double* dk = dw + taps * (cb * NR + j + CG * (grp * FG + fb * VB + i));
            for (int64_t t = t0; t < t1; ++t) {
              double v = acc[(t * NR + j) * VB + i];
              if (!first) v += dk[tap[t]];
              /* in the layer's precision: a float32 layer's gradient holds float values */
              dk[tap[t]] = last ? (double)(real_t)v : v;
            }
          }
      }
      if (stream) kt->stream_fence();
    }
    if (!last && check_interrupt != NULL) check_interrupt();
  }
}

#include "patch_rows_template.h"

/* Gradients of a layer whose patches do not overlap (conv_geometry.patch:
 * channels_last, one group, no padding or dilation, kernel <= stride): the
 * kernel gradient dw and the input gradient dx, either NULL when not wanted,
 * in one pass over the output positions, so that the products of each hide
 * the other's memory traffic (the kernel gradient waits on reading x, the
 * input gradient on writing dx). dz is in the layer's type and R's order
 * (conv3d_stage_output_grad_f32 for float32, the R array for float64).
 *
 * Kernel gradient: dW[k, f] = sum over positions p of Xpatch[p, k] * dz[p, f].
 * Tasks are (dot_nk patch rows x dot_nv vectors of filters); each thread owns
 * a fixed range of them (conv_patch_grad_part). Per block, the block's rows
 * of dz are transposed into rows of filters, one per position, and each task
 * sums the block's products in registers, vectors along the filters, then
 * adds them into its own doubles in vacc (Kp x Fp). A task sees the blocks
 * in order, of a size that does not depend on the thread count: neither do
 * the sums.
 *
 * Input gradient: every input voxel under patch row k of position p receives
 * sum_f dz[p, f] * W[k, f], and no other gradient (inputs under no patch
 * must be zeroed by the caller): the product of dz with the transposed
 * kernel wpt (packed as the patch GEMM packs a layer with F channels and K
 * filters), each thread a fixed range of its blocks of gemm_nr patch rows.
 * Each block is staged for the block's positions, then written: when the
 * depth taps fill dx's runs without gaps (kernel = stride along depth), each
 * group of depth taps as one run, the taps interleaved (streamed past the
 * caches when dx is large); otherwise each row as strided runs, or scattered.
 *
 * Each thread walks all positions in blocks of MB (conv_patch_backward_panel)
 * with no barrier between them: it loads the block's rows of dz and the
 * patch rows of x (gathered like the forward patch GEMM's) that its tasks
 * need into its own panel, while its dot and GEMM blocks prefetch the runs
 * of x and dz that the next block reads, so that reading overlaps the
 * products. panels holds nthreads panels of conv_patch_backward_panel(). */
void CONCAT(conv3d_patch_backward_, SUFFIX)(const struct conv_spec* s, const int64_t* koff,
                                           const double* x, const real_t* dz, const real_t* wpt,
                                           double* dw, double* dx, real_t* panels, double* vacc,
                                           int nthreads, interrupt_fn check_interrupt) {
  const struct kernel_table* kt = cpu_kernels();
  const CONCAT(conv_dot_fn_, SUFFIX) dot = kt->CONCAT(dot_, SUFFIX);
  const CONCAT(conv_gemm_fn_, SUFFIX) gemm = kt->CONCAT(gemm_, SUFFIX);
  const int64_t L = conv_lanes(s), VB = 2 * L;
  const int64_t NK = kt->dot_nk, NF = kt->dot_nv * L, NR = kt->gemm_nr;
  const int64_t P = s->batch * s->out[0] * s->out[1] * s->out[2], F = s->filters;
  const int64_t K = s->kernel[0] * s->kernel[1] * s->kernel[2] * s->channels;
  int64_t ktiles, ftiles;
  conv_patch_grad_tiles(s, &ktiles, &ftiles);
  const int64_t Kp = ktiles * NK, Fp = ftiles * NF, tasks = dw ? ktiles * ftiles : 0;
  const int64_t kblocks = dx ? (K + NR - 1) / NR : 0;
  int64_t MB;
  const int64_t per_thread = conv_patch_backward_panel(s, nthreads, dw != NULL, dx != NULL, &MB);
  const int64_t blocks = (P + MB - 1) / MB;
  const int pointwise = conv_patch_pointwise(s);
  int64_t step;
  const int64_t run = conv_patch_runs(s, &step); /* runs of x and dx, step apart */
  const int stream = dx && conv_patch_dx_stream(s);
  /* runs of dx that the kernel's depth taps fill without gaps (kernel =
   * stride along depth, 1x1x1 included), each tap group in one block of rows */
  const int64_t KD = s->kernel[0];
  const int contiguous = run > 0 && step == KD && NR % KD == 0;
  /* whole sub-blocks of positions go from the GEMM blocks' registers into
   * dx: a 1x1x1 layer's rows, or the depth taps of kernel = stride = 2
   * woven; the rest through the stage */
  const int writes = dx ? conv_patch_dx_writes(s, dx) : 0;
  const int direct = writes == PATCH_DX_ROWS, weave = writes == PATCH_DX_WOVEN;
  /* about 1 GFLOP between interrupt checks */
  const double block_flops = 2.0 * (double)MB * ((double)tasks * (double)(NK * NF) +
                                                 (double)kblocks * (double)NR * (double)F);
  int64_t every = (int64_t)(1e9 / (block_flops + 1));
  if (every < 1) every = 1;
  if (dw) {
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t i = 0; i < Kp * Fp; ++i) vacc[i] = 0;
  }
  for (int64_t start = 0; start < blocks; start += every) {
    const int64_t end = start + every < blocks ? start + every : blocks;
    #pragma omp parallel num_threads(nthreads)
    {
      /* one part per thread; a smaller team than asked for takes several */
      for (int t = omp_get_thread_num(); t < nthreads; t += omp_get_num_threads()) {
        int64_t part[4] = {0, 0, 0, 0}, base[DOT_PANEL], next[DOT_PANEL];
        if (dw) conv_patch_grad_part(tasks, ftiles, t, nthreads, part);
        const int64_t k0 = part[0] * NK, nk = (part[1] - part[0]) * NK;
        const int64_t kx = k0 + nk < K ? k0 + nk : K, ntasks = part[3] - part[2];
        const int64_t kb0 = kblocks * t / nthreads, kb1 = kblocks * (t + 1) / nthreads;
        if (ntasks == 0 && kb1 == kb0) continue;
        /* the panel: patch rows [row][position], dz's rows [filter][position]
         * (dx) and transposed [position][filter] (dw), the GEMM's stage
         * [row of the block][position] (dx) */
        real_t* xa = panels + (int64_t)omp_get_thread_num() * per_thread;
        real_t* za = xa + nk * MB;
        real_t* zt = za + (dx ? F * MB : 0);
        real_t* stage = zt + (dw ? MB * Fp : 0);
        if (dw) memset(zt, 0, sizeof(real_t) * (size_t)(MB * Fp)); /* filters past F stay 0 */
        const void* pf_runs[PATCH_GRAD_PREFETCH_RUNS];
        int own = 1; /* whether this block's rows must prefetch themselves */
        for (int64_t b = start; b < end; ++b) {
          const int64_t p0 = b * MB, m = P - p0 < MB ? P - p0 : MB;
          if (!pointwise || dx) conv_patch_bases(s, p0, m, base);
          for (int64_t r = 0; r < nk; ++r) {
            if (k0 + r < K) {
              CONCAT(patch_row_, SUFFIX)(x, koff, pointwise ? NULL : base, run, step, p0, m, MB,
                                         k0 + r, K, own, xa + r * MB);
            } else {
              memset(xa + r * MB, 0, sizeof(real_t) * (size_t)MB); /* padding rows */
            }
          }
          for (int64_t f = 0; dx && f < F; ++f) {
            memcpy(za + f * MB, dz + p0 + P * f, sizeof(real_t) * (size_t)m);
            for (int64_t i = m; i < MB; ++i) za[f * MB + i] = 0;
          }
          if (dw) kt->CONCAT(transpose_, SUFFIX)(dz + p0, P, F, m, zt, Fp, 0);
          /* the next block's runs of x and dz, prefetched by the dot and GEMM
           * blocks while they multiply (the runs of dz cut to as many lines
           * as those of x) */
          struct gemm_prefetch pf = {pf_runs, 0, 0};
          own = 1;
          if (b + 1 < end) {
            const int64_t q0 = p0 + MB, qm = P - q0 < MB ? P - q0 : MB;
            pf.lines = conv_patch_prefetch_lines(run, step, qm);
            if (pf.lines > 0 && nk > 0) {
              if (!pointwise) conv_patch_bases(s, q0, qm, next);
              const int64_t n_starts =
                  conv_patch_run_starts(pointwise ? NULL : next, run, q0, qm, next);
              pf.n = conv_patch_prefetch_runs(x, koff, next, n_starts, k0, kx, pf_runs,
                                              PATCH_GRAD_PREFETCH_RUNS);
            }
            /* elements of dz that the lines surely cover */
            const int64_t piece = (pf.lines - 1) * (64 / (int64_t)sizeof(real_t));
            for (int64_t f = 0; pf.lines > 1 && f < F; ++f)
              for (int64_t i = 0; i < qm && pf.n < PATCH_GRAD_PREFETCH_RUNS; i += piece)
                pf_runs[pf.n++] = dz + q0 + P * f + i;
            own = pf.lines == 0 || pf.n == PATCH_GRAD_PREFETCH_RUNS;
          }
          /* the runs shared among the blocks in proportion to their products */
          const int64_t subs = (m + VB - 1) / VB, calls = (kb1 - kb0) * subs;
          const double dot_work = (double)ntasks * (double)(NK * NF * m);
          const double gemm_work = (double)(kb1 - kb0) * (double)(NR * F * m);
          const int64_t n_dot = (int64_t)((double)pf.n * dot_work / (dot_work + gemm_work));
          /* filter tile major, so that the tile's columns of the transposed
           * dz stay in L1 across the patch-row tiles (the order of the tasks
           * changes no sum) */
          int64_t done = 0; /* dot blocks called */
          for (int64_t ft = 0; ft < ftiles; ++ft)
            for (int64_t kt0 = part[0]; kt0 < part[1]; ++kt0) {
              const int64_t task = kt0 * ftiles + ft;
              if (task < part[2] || task >= part[3]) continue;
              const struct gemm_prefetch share =
                  gemm_prefetch_share(pf_runs, n_dot, pf.lines, done++, ntasks);
              dot(m, xa + (kt0 * NK - k0) * MB, MB, zt + ft * NF, Fp, vacc + task * NK * NF,
                  &share);
            }
          for (int64_t kb = kb0; kb < kb1; ++kb) {
            const int64_t nr = K - kb * NR < NR ? K - kb * NR : NR;
            for (int64_t sb = 0; sb < subs; ++sb) {
              const struct gemm_prefetch share = gemm_prefetch_share(
                  pf_runs + n_dot, pf.n - n_dot, pf.lines, (kb - kb0) * subs + sb, calls);
              if (direct && (sb + 1) * VB <= m) { /* a whole sub-block: into dx itself */
                struct direct_out dr = {{dx + koff[kb * NR] + p0 + sb * VB, NULL, NULL}, P, nr, 0,
                                        stream, NULL};
                gemm(F, za + sb * VB, MB, wpt + kb * F * NR, NULL, NULL, 0, &share, &dr);
              } else if (weave && (sb + 1) * VB <= m) { /* woven into dx itself */
                double* pairs[GEMM_PAIRS_MAX];
                for (int64_t i = 0; 2 * i < nr; ++i)
                  pairs[i] = dx + koff[kb * NR + 2 * i] + base[sb * VB];
                struct direct_out dr = {{NULL, NULL, NULL}, 0, nr, 0, stream, pairs};
                gemm(F, za + sb * VB, MB, wpt + kb * F * NR, NULL, NULL, 0, &share, &dr);
              } else {
                gemm(F, za + sb * VB, MB, wpt + kb * F * NR, NULL, stage + sb * VB, MB, &share,
                     NULL);
              }
            }
            if (direct) { /* the positions past the whole sub-blocks, from the stage */
              const int64_t done = m / VB * VB;
              for (int64_t j = 0; j < nr && done < m; ++j)
                CONCAT(store_run_, SUFFIX)(stream, stage + j * MB + done,
                                           dx + koff[kb * NR + j] + p0 + done, m - done);
              continue;
            }
            if (!contiguous) { /* each row on its own: strided runs, or scattered */
              for (int64_t j = 0; j < nr; ++j) {
                double* o = dx + koff[kb * NR + j];
                const real_t* sj = stage + j * MB;
                if (run == 0) {
                  for (int64_t i = 0; i < m; ++i) o[base[i]] = (double)sj[i];
                  continue;
                }
                for (int64_t i = 0; i < m;) {
                  const int64_t len = conv_run_left(run, p0 + i, m - i);
                  CONCAT(store_strided_, SUFFIX)(sj + i, o + base[i], len, step);
                  i += len;
                }
              }
              continue;
            }
            /* rows j0 .. j0 + KD - 1 are the taps a = 0 .. KD - 1 along depth
             * of one (b, e, c): their runs interleave into one run of dx */
            for (int64_t j0 = 0; j0 < nr; j0 += KD) {
              double* o = dx + koff[kb * NR + j0];
              for (int64_t i = weave ? m / VB * VB : 0; i < m;) { /* past the woven ones */
                const int64_t len = conv_run_left(run, p0 + i, m - i);
                CONCAT(weave_run_, SUFFIX)(stream, stage + j0 * MB + i, MB, KD, len, o + base[i]);
                i += len;
              }
            }
          }
        }
      }
      if (stream && contiguous) kt->stream_fence();
    }
    if (end < blocks && check_interrupt != NULL) check_interrupt();
  }
  if (!dw) return;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t kt0 = task / ftiles, ft = task % ftiles;
    for (int64_t j = 0; j < NK; ++j)
      for (int64_t i = 0; i < NF; ++i) {
        const int64_t k = kt0 * NK + j, f = ft * NF + i;
        if (k >= K || f >= F) continue;
        const double v = vacc[task * NK * NF + j * NF + i];
        dw[k + K * f] = (double)(real_t)v; /* in the layer's type */
      }
  }
}

/* Kernel gradient of a depthwise layer (one channel and one filter per
 * group): dW[t, c] = sum over positions p of x[p under tap t, c] * dz[p, c],
 * with vectors across the channels. xp is the layer's padded input and dzp
 * the output gradient, both in the kernel spec's channels-last layout
 * (pack_input_*, dzp unpadded), each with a vector of slack at the end (the
 * last channel vector may run past C). Tasks are (channel vector, group of
 * dwg_nt taps); their rows of positions go in sub-blocks of about GRAD_CHUNK
 * positions summed in the layer's type, then added into the task's doubles;
 * chunks of about DWG_CHUNK_MACS multiply-adds between interrupt checks (each
 * adds into dw in order). xrow holds one
 * offset per row of the layer, local nthreads x dwg_nt x lanes doubles. */
void CONCAT(conv3d_depthwise_kernel_grad_, SUFFIX)(const struct conv_spec* s,
                                                  const struct conv_spec* ks, const real_t* xp,
                                                  const real_t* dzp, const int64_t* tap,
                                                  double* dw, int64_t* xrow, double* local,
                                                  int nthreads, interrupt_fn check_interrupt) {
  const struct kernel_table* kt = cpu_kernels();
  const CONCAT(conv_dwgrad_fn_, SUFFIX) block = kt->CONCAT(dwgrad_, SUFFIX);
  const int64_t NT = kt->dwg_nt, L = conv_lanes(s);
  struct conv_geometry g;
  conv_geometry_init(ks, &g);
  const int64_t C = s->channels, taps = g.kd * g.kh * g.kw;
  const int64_t O0 = ks->out[0], O1 = ks->out[1], O2 = ks->out[2];
  const int64_t rows_total = s->batch * O0 * O1;
  const int64_t sub = GRAD_CHUNK / O2 > 1 ? GRAD_CHUNK / O2 : 1; /* rows per sub-block */
  int64_t rpc = (int64_t)(DWG_CHUNK_MACS / ((double)O2 * (double)taps * (double)C + 1));
  rpc = rpc < sub ? sub : (rpc + sub - 1) / sub * sub;
  const int64_t cblocks = (C + L - 1) / L, tgroups = (taps + NT - 1) / NT;
  const int64_t tasks = cblocks * tgroups;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t q = 0; q < rows_total; ++q) {
    const int64_t o1 = q % O1, o0 = (q / O1) % O0, n = q / (O1 * O0);
    xrow[q] = ((n * g.pd + o0 * g.sd) * g.ph + o1 * g.sh) * g.pw * C;
  }
  for (int64_t r0 = 0; r0 < rows_total; r0 += rpc) {
    const int64_t nrows = rows_total - r0 < rpc ? rows_total - r0 : rpc;
    const int first = r0 == 0, last = r0 + rpc >= rows_total;
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t cb = task % cblocks, t0 = task / cblocks * NT;
      const int64_t nt = taps - t0 < NT ? taps - t0 : NT;
      int64_t off[16]; /* dwg_nt <= 16; taps past the last repeat it */
      for (int64_t j = 0; j < NT; ++j) {
        const int64_t t = t0 + (j < nt ? j : nt - 1);
        const int64_t a = t / (g.kh * g.kw), b = (t / g.kw) % g.kh, e = t % g.kw;
        off[j] = ((a * g.dd * g.ph + b * g.dh) * g.pw + e * g.dw) * C + cb * L;
      }
      double* acc = local + (int64_t)omp_get_thread_num() * NT * L; /* [t][lane] */
      for (int64_t i = 0; i < NT * L; ++i) acc[i] = 0;
      for (int64_t b0 = r0; b0 < r0 + nrows; b0 += sub) {
        const int64_t nb = r0 + nrows - b0 < sub ? r0 + nrows - b0 : sub;
        real_t tile[16 * 16]; /* dwg_nt (<= 16) x lanes (<= 16) */
        block(nb, O2, xp, xrow + b0, g.sw * C, off, dzp + b0 * O2 * C + cb * L, O2 * C, C, tile);
        for (int64_t i = 0; i < NT * L; ++i) acc[i] += tile[i];
      }
      for (int64_t j = 0; j < nt; ++j)
        for (int64_t l = 0; l < L && cb * L + l < C; ++l) {
          double* d = dw + tap[t0 + j] + taps * (cb * L + l);
          const double v = acc[j * L + l] + (first ? 0 : *d);
          /* in the layer's precision: a float32 layer's gradient holds float values */
          *d = last ? (double)(real_t)v : v;
        }
    }
    if (!last && check_interrupt != NULL) check_interrupt();
  }
}
