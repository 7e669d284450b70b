/* m voxels of a row, [voxel][filter] ldy apart, into the R array at o (voxels
 * s2 apart, filters sf apart), the inner loop along the smaller stride; with
 * voxels next to each other, each filter's run transposed by the tier and
 * streamed past the caches when stream is set (s2 is then 1). */
void CONCAT(conv_write_row_, SUFFIX)(const real_t* yq, int64_t ldy, int64_t m, int64_t F,
                                     double* o, int64_t s2, int64_t sf, int stream) {
  if (sf < s2) {
    for (int64_t i = 0; i < m; ++i)
      for (int64_t f = 0; f < F; ++f) o[i * s2 + f * sf] = (double)yq[i * ldy + f];
  } else if (s2 == 1) {
    cpu_kernels()->CONCAT(rows_to_columns_, SUFFIX)(yq, ldy, m, F, o, sf, stream);
  } else {
    for (int64_t f = 0; f < F; ++f)
      for (int64_t i = 0; i < m; ++i) o[i * s2 + f * sf] = (double)yq[i * ldy + f];
  }
}

/* The forward driver for one element type. Work items are spans of output
 * voxels of a plane (a row along the kernel spec's last axis, or several short
 * rows), split across threads in chunks; a span is computed into the thread's
 * scratch (bias included), activated while in cache, and written straight into
 * the R output array in the layer's data format (or along out_strides, given
 * as (n, d, h, w, filter) strides), past the caches when large
 * (conv_rows_stream). geo is the geometry of ks, possibly with
 * wider padded extents (pd, ph, pw) than ks's own when xp is a window of a
 * larger padded array. Between chunks the main thread lets R check for a user
 * interrupt. */
void CONCAT(conv3d_forward_, SUFFIX)(const struct conv_spec* s, const struct conv_spec* ks,
                                     const struct conv_geometry* geo, const real_t* xp,
                                     const real_t* wp, const real_t* bias, int activation,
                                     double* out, const int64_t* out_strides, real_t* scratch,
                                     int nthreads, interrupt_fn check_interrupt) {
  const struct conv_geometry g = *geo;
  const CONCAT(conv_span_fn_, SUFFIX) span = cpu_kernels()->CONCAT(span_, SUFFIX);
  const int64_t N = s->batch, F = s->filters;
  const int64_t O0 = ks->out[0], O1 = ks->out[1], O2 = ks->out[2];
  const int64_t plane = O1 * O2, span_len = conv_span_length(ks);
  const int64_t spans = (plane + span_len - 1) / span_len;
  const int64_t items = N * O0 * spans, scratch_row = conv_scratch_row(s, ks);
  int64_t st[5];
  if (out_strides) {
    memcpy(st, out_strides, sizeof st);
  } else {
    conv_r_strides(s, 1, st);
  }
  const int64_t s0 = st[1 + ks->axes[0]], s1 = st[1 + ks->axes[1]], s2 = st[1 + ks->axes[2]];
  const int64_t sf = st[4];
  const int channels_last = s->layout == LAYOUT_CHANNELS_LAST, i0_fastest = s0 < s1;
  const int64_t chunk = conv_chunk_items(s, span_len, 4 * (int64_t)nthreads);
  const int stream = conv_rows_stream((double)N * O0 * plane * F, s2);

  for (int64_t start = 0; start < items; start += chunk) {
    const int64_t end = start + chunk < items ? start + chunk : items;
    /* dynamic: a thread the OS preempts (a busy machine) does not hold up the
     * chunk; each item is still computed whole by one thread, so results do
     * not depend on the split */
    #pragma omp parallel num_threads(nthreads)
    {
      #pragma omp for schedule(dynamic, 1) nowait
      for (int64_t item = start; item < end; ++item) {
        /* the axis of the smaller R stride (i0, or the plane's spans) varies
         * fastest, so consecutive items write nearby memory */
        const int64_t i0 = i0_fastest ? item % O0 : (item / spans) % O0;
        const int64_t sp = i0_fastest ? (item / O0) % spans : item % spans;
        const int64_t n = item / (O0 * spans);
        const int64_t p0 = sp * span_len, p1 = p0 + span_len < plane ? p0 + span_len : plane;
        const real_t* x = xp + (n * g.pd + i0 * g.sd) * g.ph * g.pw * g.c;
        real_t* yr = scratch + (int64_t)omp_get_thread_num() * scratch_row;
        span(&g, x, i0, O2, p0, p1, wp, bias, yr);
        CONCAT(activation_block_, SUFFIX)(activation, channels_last, yr, p1 - p0, F, F, 1);
        /* write into the R array row piece by row piece */
        for (int64_t q = p0; q < p1;) {
          const int64_t i1 = q / O2, q1 = (i1 + 1) * O2 < p1 ? (i1 + 1) * O2 : p1;
          CONCAT(conv_write_row_, SUFFIX)(yr + (q - p0) * F, F, q1 - q, F,
                                          out + n + i0 * s0 + i1 * s1 + (q % O2) * s2, s2, sf,
                                          stream);
          q = q1;
        }
      }
      if (stream) cpu_kernels()->stream_fence();
    }
    if (end < items && check_interrupt != NULL) check_interrupt();
  }

  if (activation == ACT_SOFTMAX && !channels_last) {
    CONCAT(conv_softmax_last_axis_, SUFFIX)(s, out, scratch, scratch_row, nthreads);
  }
}

void CONCAT(conv_softmax_last_axis_, SUFFIX)(const struct conv_spec* s, double* out,
                                             real_t* scratch, int64_t scratch_row,
                                             int nthreads) {
  /* Keras takes the last axis even under channels_first: W, stride N*F*DO*HO */
  const int64_t WO = s->out[2], lines = s->batch * s->filters * s->out[0] * s->out[1];
  const int64_t stride = lines;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t l = 0; l < lines; ++l) {
    real_t* v = scratch + (int64_t)omp_get_thread_num() * scratch_row;
    for (int64_t w = 0; w < WO; ++w) v[w] = (real_t)out[l + w * stride];
    CONCAT(softmax_, SUFFIX)(v, WO, 1);
    for (int64_t w = 0; w < WO; ++w) out[l + w * stride] = (double)v[w];
  }
}

#include "patch_rows_template.h"

/* Convolutions whose patches do not overlap (channels_last, one group, no
 * padding or dilation, kernel <= stride; 1x1x1 included) on the R arrays
 * directly: the output is the (positions x F) product of the (positions x
 * taps*C) patch matrix and the kernel, both column-major like R. Each thread
 * takes a run of blocks of MB output positions. A block's patches are gathered
 * into a panel (the layer's type) and multiplied by every block of filters;
 * the outputs are activated and written back in runs (streamed past the
 * caches when the output is large: conv_stream_output). Reading the R array
 * runs at memory speed, the products at the FMA units' speed: so the next
 * block's panel is filled a few rows after each GEMM block, from memory that
 * the GEMM blocks prefetched PATCH_PREFETCH_CALLS calls earlier, and the two
 * overlap. No padded copy of the input is made. bias (or NULL) holds whole
 * blocks of gemm_nr filters, zero past F (the packed weights' bias): the rows
 * of res past F are computed but never written out. */
void CONCAT(conv3d_patch_gemm_, SUFFIX)(const struct conv_spec* s, const struct conv_geometry* g,
                                        const int64_t* koff, const double* x, const real_t* wp,
                                        const real_t* bias, int activation, double* out,
                                        real_t* scratch, int nthreads,
                                        interrupt_fn check_interrupt) {
  const CONCAT(conv_gemm_fn_, SUFFIX) block = cpu_kernels()->CONCAT(gemm_, SUFFIX);
  const int64_t P = s->batch * s->out[0] * s->out[1] * s->out[2], F = s->filters;
  const int64_t K = s->kernel[0] * s->kernel[1] * s->kernel[2] * s->channels;
  const int pointwise = conv_patch_pointwise(s), stream = conv_stream_output(s);
  int64_t step;
  const int64_t run = conv_patch_runs(s, &step);
  /* a panel holds MB positions: several micro-kernel blocks of VB, so runs of
   * R memory are read MB at a time */
  const int64_t VB = 2 * (int64_t)g->lanes, MB = conv_patch_block(g->lanes);
  const int64_t NR = g->gemm_nr, fblocks = (F + NR - 1) / NR;
  const int64_t blocks = (P + MB - 1) / MB, per_thread = conv_patch_scratch(s, g);
  const int64_t chunk = conv_patch_chunk(MB, K, F, nthreads);
  /* whole sub-blocks of positions go from the GEMM blocks' registers into
   * the R output (runs of each filter); the rest through res */
  const int direct = conv_patch_direct(s, g, activation, out);
#define BLOCK_LEN(b) (P - (b) * MB < MB ? P - (b) * MB : MB)
  for (int64_t start = 0; start < blocks; start += chunk) {
    const int64_t end = start + chunk < blocks ? start + chunk : blocks;
    #pragma omp parallel num_threads(nthreads)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t b0 = start + (end - start) * t / nt, b1 = start + (end - start) * (t + 1) / nt;
      real_t* panels[2] = {scratch + t * per_thread, scratch + t * per_thread + K * MB};
      real_t* res = panels[1] + K * MB; /* [filter][MB] */
      /* first input voxel of each patch of the block being filled (unused
       * for single-voxel patches), and where the runs of the block being
       * prefetched start */
      int64_t fill_base[64 * GEMM_SUBBLOCKS], pf_starts[64 * GEMM_SUBBLOCKS];
      int64_t pf_block = -1, pf_n = 0, pf_lines = 0;
      const void* pf_runs[PATCH_PREFETCH_RUNS];
      const int listed = conv_patch_prefetch_lines(run, step, MB) > 0;
      struct gemm_prefetch pf = {pf_runs, 0, 0};
      if (b0 < b1) {
        if (!pointwise) conv_patch_bases(s, b0 * MB, BLOCK_LEN(b0), fill_base);
        for (int64_t k = 0; k < K; ++k)
          CONCAT(patch_row_, SUFFIX)(x, koff, pointwise ? NULL : fill_base, run, step, b0 * MB,
                                     BLOCK_LEN(b0), MB, k, K, 1, panels[0] + k * MB);
      }
      for (int64_t b = b0; b < b1; ++b) {
        const real_t* panel = panels[(b - b0) & 1];
        real_t* next = panels[(b - b0 + 1) & 1];
        const int64_t p0 = b * MB, m = BLOCK_LEN(b), sbs = (m + VB - 1) / VB;
        const int64_t calls = sbs * fblocks;
        if (b + 1 < b1 && !pointwise) conv_patch_bases(s, (b + 1) * MB, BLOCK_LEN(b + 1), fill_base);
        int64_t call = 0, filled = 0;
        for (int64_t sb = 0; sb < sbs; ++sb)
          for (int64_t fb = 0; fb < fblocks; ++fb, ++call) {
            /* the rows filled PATCH_PREFETCH_CALLS calls from now, of this
             * thread's next block or the one after */
            int64_t pc = call + PATCH_PREFETCH_CALLS, pb = b + 1;
            if (pc >= calls) pc -= calls, ++pb;
            pf.n = 0;
            if (pb < b1 && listed) {
              if (pb != pf_block) { /* its runs start at the same offsets in every row */
                /* the bases, then the run starts in place (the j-th run
                 * starts at a position j or later) */
                if (!pointwise) conv_patch_bases(s, pb * MB, BLOCK_LEN(pb), pf_starts);
                pf_n = conv_patch_run_starts(pointwise ? NULL : pf_starts, run, pb * MB,
                                             BLOCK_LEN(pb), pf_starts);
                pf_lines = conv_patch_prefetch_lines(run, step, BLOCK_LEN(pb));
                pf_block = pb;
              }
              pf.n = conv_patch_prefetch_runs(x, koff, pf_starts, pf_n, K * pc / calls,
                                              K * (pc + 1) / calls, pf_runs, PATCH_PREFETCH_RUNS);
              pf.lines = pf_lines;
            }
            if (direct && (sb + 1) * VB <= m) {
              struct direct_out dr = {{out + p0 + sb * VB + P * fb * NR, NULL, NULL}, P,
                                      F - fb * NR < NR ? F - fb * NR : NR,
                                      activation == ACT_RELU, stream, NULL};
              block(K, panel + sb * VB, MB, wp + fb * K * NR, bias ? bias + fb * NR : NULL, NULL,
                    0, &pf, &dr);
            } else {
              block(K, panel + sb * VB, MB, wp + fb * K * NR, bias ? bias + fb * NR : NULL,
                    res + fb * NR * MB + sb * VB, MB, &pf, NULL);
            }
            if (b + 1 < b1) { /* the next block's share of rows for this call */
              const int64_t upto = K * (call + 1) / calls;
              for (; filled < upto; ++filled)
                CONCAT(patch_row_, SUFFIX)(x, koff, pointwise ? NULL : fill_base, run, step,
                                           (b + 1) * MB, BLOCK_LEN(b + 1), MB, filled, K,
                                           !listed, next + filled * MB);
            }
          }
        const int64_t done = direct ? m / VB * VB : 0; /* positions written directly */
        if (done < m) {
          CONCAT(activation_block_, SUFFIX)(activation, 1, res + done, m - done, F, 1, MB);
          for (int64_t f = 0; f < F; ++f)
            CONCAT(store_run_, SUFFIX)(stream, res + f * MB + done, out + p0 + done + P * f,
                                       m - done);
        }
      }
      if (stream) cpu_kernels()->stream_fence();
    }
    if (end < blocks && check_interrupt != NULL) check_interrupt();
  }
#undef BLOCK_LEN
}
