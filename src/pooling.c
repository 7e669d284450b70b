/* 3-D max and average pooling on R arrays (either data format), threaded over
 * output rows. Padded positions ('same') are left out of the max and of the
 * average's count, as in Keras. Pure C. */
#include <math.h>
#include "conv3d.h"
#include "omp_shim.h"

/* The input range [lo, hi) that output position o's window covers on one axis,
 * clipped to the input: padded positions are skipped, not counted. */
static void window_range(const struct conv_spec* s, int axis, int64_t o, int64_t* lo,
                         int64_t* hi) {
  const int64_t start = o * s->strides[axis] - s->pad_lo[axis];
  const int64_t end = start + s->kernel[axis];
  *lo = start < 0 ? 0 : start;
  *hi = end > s->in[axis] ? s->in[axis] : end;
  if (*hi < *lo) *hi = *lo; /* a window wholly in the padding is empty */
}

/* Input reads (window positions) between interrupt checks: well under a
 * second on any tier, with the check itself cheap beside them. */
#define POOL_CHUNK_READS 2.5e8
/* (sample, channel) tasks of a backward pass (task = n + N * c) that one
 * thread takes together: R's arrays interleave a batch's samples, and
 * channels_first ones its channels too, so consecutive tasks write doubles
 * next to each other, and two threads writing one cache line take it from
 * each other on every write. A channels_last channel's samples go together
 * (8 of them fill a line); channels_first tasks go by 8. No more than that:
 * smaller tasks balance the threads better. */
static int64_t pool_task_block(int64_t N, int channels_last) {
  return channels_last && N < 8 ? N : 8;
}

/* Items per chunk when each reads at most `reads` window positions. */
static int64_t pool_chunk(double reads) {
  const double n = POOL_CHUNK_READS / (reads > 1 ? reads : 1);
  return n < 1 ? 1 : (int64_t)n;
}

/* argmax: NULL, or (max pooling) each output's window position that
 * pool3d_backward would pick (the first maximum in row-major order, found
 * as it finds it), as an offset into x, or -1 for a window wholly in the
 * padding: a training step keeps them for its backward pass. */
void pool3d_forward(const struct conv_spec* s, int average, const double* x, double* y,
                    double* argmax, int nthreads, interrupt_fn check_interrupt) {
  int64_t xs[5], ys[5];
  conv_r_strides(s, 0, xs);
  conv_r_strides(s, 1, ys);
  const int64_t N = s->batch, C = s->channels;
  const int64_t DO = s->out[0], HO = s->out[1], WO = s->out[2], rows = N * C * WO * HO;
  /* a row's DO windows read at most DO x the window's volume */
  const int64_t chunk = pool_chunk((double)DO * (double)s->kernel[0] * (double)s->kernel[1] *
                                   (double)s->kernel[2]);
  for (int64_t start = 0; start < rows; start += chunk) {
    const int64_t end = rows - start < chunk ? rows : start + chunk;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = start; r < end; ++r) {
      /* rows in the input's order: the samples of a row, then along height,
       * whose consecutive rows read consecutive lines of R memory */
      const int64_t n = r % N, oh = (r / N) % HO, ow = (r / (N * HO)) % WO, c = r / (N * HO * WO);
      int64_t h_lo, h_hi, w_lo, w_hi;
      window_range(s, 1, oh, &h_lo, &h_hi);
      window_range(s, 2, ow, &w_lo, &w_hi);
      for (int64_t od = 0; od < DO; ++od) {
        int64_t d_lo, d_hi;
        window_range(s, 0, od, &d_lo, &d_hi);
        double acc = average ? 0 : -INFINITY;
        int64_t count = 0;
        int nan = 0;
        /* the pick starts at the window's first position (none for a window
         * wholly in the padding) and moves to any strictly larger value */
        const int empty = d_lo == d_hi || h_lo == h_hi || w_lo == w_hi;
        int64_t arg = empty ? -1 : n + d_lo * xs[1] + h_lo * xs[2] + w_lo * xs[3] + c * xs[4];
        double arg_v = empty ? 0 : x[arg];
        /* row-major window order (d slowest), as Keras walks it */
        for (int64_t d = d_lo; d < d_hi; ++d) {
          for (int64_t h = h_lo; h < h_hi; ++h) {
            for (int64_t w = w_lo; w < w_hi; ++w) {
              const int64_t off = n + d * xs[1] + h * xs[2] + w * xs[3] + c * xs[4];
              const double v = x[off];
              if (average) {
                acc += v;
              } else { /* selects: a branch on v > acc mispredicts on random data */
                nan |= v != v; /* NaN propagates, as in IEEE arithmetic */
                acc = v > acc ? v : acc;
              }
              if (argmax != NULL) { /* selects: branches mispredict on random data */
                const int larger = v > arg_v;
                arg = larger ? off : arg;
                arg_v = larger ? v : arg_v;
              }
              ++count;
            }
          }
        }
        double out = average ? acc / (double)count : (nan ? NAN : acc);
        if (s->dtype == DTYPE_FLOAT32) out = (double)(float)out;
        const int64_t o = n + od * ys[1] + oh * ys[2] + ow * ys[3] + c * ys[4];
        y[o] = out;
        if (argmax != NULL) argmax[o] = (double)arg;
      }
    }
    if (end < rows && check_interrupt != NULL) check_interrupt();
  }
}

/* Gradient of the pooling: the average's dy spread evenly over its window's real
 * positions; the max's dy to the window's first maximal input (row-major order),
 * or to the position argmax gives (pool3d_forward's) when it is not NULL.
 * One (sample, channel) plane per task, a block of them per thread at a time
 * (pool_task_block): windows overlap, so each plane's sums stay with one
 * thread, in a fixed order. The output columns (ow, oh) go in
 * chunks (every task's columns [q0, q1), then the next), with an interrupt
 * check between them; a plane's sums keep their order. Each column runs
 * along depth, the axis next to the samples' in R's arrays, so consecutive
 * windows read and write memory already in cache. */
void pool3d_backward(const struct conv_spec* s, int average, const double* x, const double* dy,
                     const double* argmax, double* dx, int nthreads,
                     interrupt_fn check_interrupt) {
  int64_t xs[5], ys[5];
  conv_r_strides(s, 0, xs);
  conv_r_strides(s, 1, ys);
  const int64_t N = s->batch, C = s->channels, HO = s->out[1], cols = s->out[2] * HO;
  const int64_t tb = pool_task_block(N, s->layout == LAYOUT_CHANNELS_LAST);
  /* an output column of every task reads at most its windows' volume each */
  const int64_t chunk = pool_chunk((double)N * (double)C * (double)s->out[0] *
                                   (double)s->kernel[0] * (double)s->kernel[1] *
                                   (double)s->kernel[2]);
  for (int64_t q0 = 0; q0 == 0 || q0 < cols; q0 += chunk) {
    const int64_t q1 = cols - q0 < chunk ? cols : q0 + chunk;
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t block = 0; block < (N * C + tb - 1) / tb; ++block)
    for (int64_t task = block * tb; task < N * C && task < (block + 1) * tb; ++task) {
      const int64_t n = task % N, c = task / N;
      double* xp = dx + n + c * xs[4];
      const double* xin = x + n + c * xs[4];
      if (q0 == 0) {
        for (int64_t w = 0; w < s->in[2]; ++w)
          for (int64_t h = 0; h < s->in[1]; ++h)
            for (int64_t d = 0; d < s->in[0]; ++d) xp[d * xs[1] + h * xs[2] + w * xs[3]] = 0;
      }
      for (int64_t q = q0; q < q1; ++q) {
        const int64_t ow = q / HO, oh = q % HO;
        int64_t w_lo, w_hi, h_lo, h_hi;
        window_range(s, 2, ow, &w_lo, &w_hi);
        window_range(s, 1, oh, &h_lo, &h_hi);
        for (int64_t od = 0; od < s->out[0]; ++od) {
          const double g = dy[n + od * ys[1] + oh * ys[2] + ow * ys[3] + c * ys[4]];
          int64_t d_lo, d_hi;
          window_range(s, 0, od, &d_lo, &d_hi);
          const int64_t count = (d_hi - d_lo) * (h_hi - h_lo) * (w_hi - w_lo);
          if (count == 0) continue;
          if (argmax != NULL) { /* the forward's pick: the same sums, in the same order */
            const double pick = argmax[n + od * ys[1] + oh * ys[2] + ow * ys[3] + c * ys[4]];
            dx[(int64_t)pick] += g;
            continue;
          }
          if (average) {
            for (int64_t d = d_lo; d < d_hi; ++d)
              for (int64_t h = h_lo; h < h_hi; ++h)
                for (int64_t w = w_lo; w < w_hi; ++w)
                  xp[d * xs[1] + h * xs[2] + w * xs[3]] += g / (double)count;
            continue;
          }
          /* the first window position, then any strictly larger: selects, not
           * branches, which mispredict on data of random order */
          int64_t best = d_lo * xs[1] + h_lo * xs[2] + w_lo * xs[3];
          double best_v = xin[best];
          for (int64_t d = d_lo; d < d_hi; ++d)
            for (int64_t h = h_lo; h < h_hi; ++h)
              for (int64_t w = w_lo; w < w_hi; ++w) {
                const int64_t off = d * xs[1] + h * xs[2] + w * xs[3];
                const double v = xin[off];
                const int larger = v > best_v;
                best = larger ? off : best;
                best_v = larger ? v : best_v;
              }
          xp[best] += g;
        }
      }
    }
    if (q1 < cols && check_interrupt != NULL) check_interrupt();
  }
}

/* Global pooling over the spatial axes. Sample n's channel c holds S voxels at
 * x[base + v * step]: channels_last R arrays (n, d, h, w, c) keep them N
 * apart, channels_first ones (n, c, d, h, w) N * C apart; y and g are
 * (n, c). One (n, c) per task. */
static void global_slab(int64_t N, int64_t C, int64_t S, int channels_last, int64_t task,
                        int64_t* base, int64_t* step) {
  const int64_t n = task % N, c = task / N;
  *base = channels_last ? n + N * S * c : n + N * c;
  *step = channels_last ? N : N * C;
}

/* R's NA: a NaN whose low word is 1954 (R_IsNA, without calling R). */
static int is_r_na(double e) {
  uint64_t bits;
  memcpy(&bits, &e, sizeof bits);
  return isnan(e) && (uint32_t)bits == 1954;
}

/* The mean, summed in long double in memory order (as R's colMeans), or the
 * maximum: a voxel's NA if one is NA, else its NaN if one is NaN (as R's
 * max). */
void global_pool3d_forward(int64_t N, int64_t C, int64_t S, int channels_last, int average,
                           const double* x, double* y, int nthreads) {
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t task = 0; task < N * C; ++task) {
    int64_t base, step;
    global_slab(N, C, S, channels_last, task, &base, &step);
    const double* xs = x + base;
    if (average) {
      long double sum = 0;
      for (int64_t v = 0; v < S; ++v) sum += xs[v * step];
      y[task] = (double)(sum / (long double)S);
      continue;
    }
    double best = -INFINITY, na = 0, nan = 0;
    int seen_na = 0, seen_nan = 0;
    for (int64_t v = 0; v < S; ++v) {
      const double e = xs[v * step];
      if (is_r_na(e)) {
        na = e;
        seen_na = 1;
      } else if (isnan(e)) {
        nan = e;
        seen_nan = 1;
      } else if (e > best) {
        best = e;
      }
    }
    y[task] = seen_na ? na : seen_nan ? nan : best;
  }
}

/* Gradient of global pooling: the average's g / S to every voxel; the max's g
 * split evenly over the voxels equal to the maximum, as TensorFlow's
 * reduce_max gradient does (indicators / their count), so NaN everywhere when
 * the maximum is NaN (no voxel equals it: 0 / 0). */
void global_pool3d_backward(int64_t N, int64_t C, int64_t S, int channels_last, int average,
                            const double* x, const double* g, double* dx, int nthreads) {
  const int64_t tb = pool_task_block(N, channels_last);
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t block = 0; block < (N * C + tb - 1) / tb; ++block)
  for (int64_t task = block * tb; task < N * C && task < (block + 1) * tb; ++task) {
    int64_t base, step;
    global_slab(N, C, S, channels_last, task, &base, &step);
    const double* xs = x + base;
    double* ds = dx + base;
    if (average) {
      const double share = g[task] / (double)S;
      for (int64_t v = 0; v < S; ++v) ds[v * step] = share;
      continue;
    }
    double best = -INFINITY;
    int nan = 0;
    for (int64_t v = 0; v < S; ++v) {
      const double e = xs[v * step];
      if (isnan(e)) nan = 1; else if (e > best) best = e;
    }
    int64_t ties = 0;
    if (!nan)
      for (int64_t v = 0; v < S; ++v) ties += xs[v * step] == best;
    const double share = nan ? NAN : g[task] / (double)ties;
    for (int64_t v = 0; v < S; ++v) ds[v * step] = nan || xs[v * step] == best ? share : 0;
  }
}
