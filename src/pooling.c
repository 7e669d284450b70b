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

/* A pooling task's rows (pool3d_forward): for each (n, d) of the input, the
 * reduction over the window's (h, w) taps (offsets off[0..taps-1], in
 * row-major order) of x[o(e) + off[t]], e = n + N * d, o(e) = n + d * xs1.
 * Max: rv[e] is the largest value that is a number, from -inf up (so -inf
 * when none is larger), row_nan[e] is set when one is NaN, and ri[e] (when
 * not NULL) is the offset of the first tap holding rv[e] (off[0] for -inf).
 * Average: rv[e] is the sum in tap order. Values are rounded to float32
 * first when round32 is set (a float32 layer's picks are among float32
 * values). The tier's vectors take the whole vectors of a contiguous run
 * (channels_last: o(e) = e), this loop the rest. */
static void pool_rows(const double* x, int64_t N, int64_t D, int64_t xs1, const int64_t* off,
                      int64_t taps, int round32, int average, double* rv, char* row_nan,
                      int64_t* ri) {
  const int64_t E = N * D;
  int64_t e = xs1 == N ? cpu_kernels()->pool_rows(x, off, taps, E, round32, average, rv,
                                                  row_nan, ri)
                       : 0;
  for (; e < E; ++e) {
    const double* xe = x + e % N + e / N * xs1;
    double acc = average ? 0 : -INFINITY;
    int nan = 0;
    int64_t arg = off[0];
    for (int64_t t = 0; t < taps; ++t) {
      const double v = round32 ? (double)(float)xe[off[t]] : xe[off[t]];
      if (average) {
        acc += v;
        continue;
      }
      const int larger = v > acc; /* never for NaN */
      nan |= v != v;
      acc = larger ? v : acc;
      arg = larger ? off[t] : arg;
    }
    rv[e] = acc;
    if (average) continue;
    row_nan[e] = (char)nan;
    if (ri != NULL) ri[e] = arg;
  }
}

/* The most (h, w) taps a window has: those in the input, at most its
 * extent on each axis (a pool may be far larger than the input). */
static int64_t pool_hw_taps(const struct conv_spec* s) {
  const int64_t kh = s->kernel[1] < s->in[1] ? s->kernel[1] : s->in[1];
  const int64_t kw = s->kernel[2] < s->in[2] ? s->kernel[2] : s->in[2];
  return kh * kw;
}

/* Bytes of one thread's scratch for pool3d_forward: a task's rows (value,
 * NaN flag and pick of each (n, d)) and its window's (h, w) tap offsets. */
int64_t pool_forward_scratch(const struct conv_spec* s) {
  const int64_t bytes = s->batch * s->in[0] * (int64_t)(2 * sizeof(double) + 1) +
                        pool_hw_taps(s) * (int64_t)sizeof(int64_t);
  return (bytes + 63) / 64 * 64; /* each thread's block stays aligned */
}

/* argmax: NULL, or (max pooling) each output's window position that
 * pool3d_backward would pick (the first maximum in row-major order, as it
 * finds it), as an offset into x, or -1 for a window wholly in the padding:
 * a training step keeps them for its backward pass.
 *
 * One task per output (h, w) column of a channel, for every sample and depth
 * at once: the window's (h, w) taps are reduced first, along whole runs of
 * (n, d) (pool_rows: R memory in order, a vector of the tier at a time),
 * then each output's depth taps. The max and its pick come out the same as
 * walking each window in row-major order: the first maximum among the
 * numbers (the first position when the window's first value is NaN or none
 * is larger than -inf). scratch: pool_forward_scratch() bytes per thread. */
void pool3d_forward(const struct conv_spec* s, int average, const double* x, double* y,
                    double* argmax, void* scratch, int nthreads, interrupt_fn check_interrupt) {
  int64_t xs[5], ys[5];
  conv_r_strides(s, 0, xs);
  conv_r_strides(s, 1, ys);
  const int64_t N = s->batch, C = s->channels, D = s->in[0];
  const int64_t DO = s->out[0], HO = s->out[1], WO = s->out[2], tasks = C * WO * HO;
  const int64_t per_thread = pool_forward_scratch(s);
  /* a float32 max compares float32 values (its picks are among them); the
   * average sums the doubles and rounds its result, as before */
  const int round32 = !average && s->dtype == DTYPE_FLOAT32;
  /* a task reads at most its rows' (h, w) windows */
  const int64_t chunk = pool_chunk((double)N * (double)D * (double)pool_hw_taps(s));
  for (int64_t start = 0; start < tasks; start += chunk) {
    const int64_t end = tasks - start < chunk ? tasks : start + chunk;
    #pragma omp parallel num_threads(nthreads)
    {
      char* mine = (char*)scratch + omp_get_thread_num() * per_thread;
      double* rv = (double*)mine;
      int64_t* ri = (int64_t*)(rv + N * D);
      int64_t* off = ri + N * D;
      char* row_nan = (char*)(off + pool_hw_taps(s));
      #pragma omp for schedule(static)
      for (int64_t task = start; task < end; ++task) {
        /* consecutive tasks read neighbouring rows along height */
        const int64_t oh = task % HO, ow = (task / HO) % WO, c = task / (HO * WO);
        int64_t h_lo, h_hi, w_lo, w_hi, taps = 0;
        window_range(s, 1, oh, &h_lo, &h_hi);
        window_range(s, 2, ow, &w_lo, &w_hi);
        for (int64_t h = h_lo; h < h_hi; ++h) /* row-major: w fastest */
          for (int64_t w = w_lo; w < w_hi; ++w) off[taps++] = h * xs[2] + w * xs[3] + c * xs[4];
        if (taps > 0)
          pool_rows(x, N, D, xs[1], off, taps, round32, average, rv, row_nan, argmax ? ri : NULL);
        double* yt = y + oh * ys[2] + ow * ys[3] + c * ys[4];
        for (int64_t od = 0; od < DO; ++od) {
          int64_t d_lo, d_hi;
          window_range(s, 0, od, &d_lo, &d_hi);
          if (taps == 0) d_hi = d_lo; /* the window is wholly in the padding */
          for (int64_t n = 0; n < N; ++n) {
            double acc = average ? 0 : -INFINITY;
            int nan = 0;
            int64_t best = d_lo; /* the first row holding the max */
            for (int64_t d = d_lo; d < d_hi; ++d) {
              const double v = rv[n + N * d];
              if (average) {
                acc += v;
                continue;
              }
              nan |= row_nan[n + N * d];
              const int larger = v > acc;
              best = larger ? d : best;
              acc = larger ? v : acc;
            }
            const int64_t count = (d_hi - d_lo) * taps;
            double out = average ? acc / (double)count : (nan ? NAN : acc);
            if (s->dtype == DTYPE_FLOAT32) out = (double)(float)out;
            yt[n + od * ys[1]] = out;
            if (argmax != NULL) {
              int64_t arg = -1;
              if (count > 0) {
                const int64_t first = n + d_lo * xs[1] + off[0];
                arg = isnan(x[first]) ? first : n + best * xs[1] + ri[n + N * best];
              }
              argmax[n + od * ys[1] + oh * ys[2] + ow * ys[3] + c * ys[4]] = (double)arg;
            }
          }
        }
      }
    }
    if (end < tasks && check_interrupt != NULL) check_interrupt();
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
