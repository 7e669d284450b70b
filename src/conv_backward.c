/* Gradients of a convolution layer with respect to its input, kernel and bias,
 * computed on R arrays (either data format) in double precision. Pure C; the
 * caller (ffi_backward.c) validates and converts. Each output element of a
 * gradient is owned by one thread and summed in a fixed order, so results are
 * bit-identical for any thread count. */
#include <math.h>
#include <string.h>
#include "conv3d.h"
#include "omp_shim.h"

/* The ReLU family: act'(z) only depends on which piece z falls in, and
 * y = act(z) shows that too (y > 0 exactly when z > 0; ReLU6's y < 6 exactly
 * when z < 6), so its slopes follow from either. A training step has y; the
 * backward pass then needs no second forward convolution for z. */
int relu_family_activation(int act) {
  return act == ACT_RELU || act == ACT_RELU6 || act == ACT_LEAKY_RELU;
}

/* The ReLU family's slope at v (z or y), TensorFlow's at the kinks: ReLU 0
 * at 0, ReLU6 0 at 0 and 6, leaky ReLU alpha (0.2) at 0. */
static inline double relu_family_slope(int act, double v) {
  return act == ACT_RELU    ? (v > 0 ? 1.0 : 0.0)
         : act == ACT_RELU6 ? (v > 0 && v < 6 ? 1.0 : 0.0)
                            : (v > 0 ? 1.0 : 0.2);
}

/* Two slopes at once, as relu_family_slope() gives them: a comparison of
 * vectors (GCC's vector extensions, SSE2's width, which every x86-64 CPU
 * has) sets whole lanes, so each slope is a bitwise pick of two constants.
 * The scalar slope, even under omp simd, compiled (GCC 12, R's -O2) to a
 * branch that mispredicted on every other value of random sign. */
typedef double relu_vd __attribute__((vector_size(16)));
typedef long long relu_vl __attribute__((vector_size(16)));
static inline relu_vd relu_family_slopes2(int act, relu_vd v) {
  const relu_vd zero = {0, 0}, one = {1, 1}, six = {6, 6}, alpha = {0.2, 0.2};
  relu_vl up = v > zero; /* NaN: not above, as in the scalar slope */
  if (act == ACT_RELU6) up &= v < six;
  const relu_vd low = act == ACT_LEAKY_RELU ? alpha : zero;
  return (relu_vd)((up & (relu_vl)one) | (~up & (relu_vl)low));
}

/* Elements of dz per task of relu_family_backward. */
#define RELU_BACKWARD_BLOCK 16384

/* dz = dy * act'(z) for relu_family_activation(act), from v = z or y: the
 * same products as one by one (dy times a slope of 1, 0 or alpha). */
void relu_family_backward(int act, const double* v, const double* dy, double* dz, int64_t n,
                          int nthreads) {
  const int64_t blocks = (n + RELU_BACKWARD_BLOCK - 1) / RELU_BACKWARD_BLOCK;
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    int64_t i = b * RELU_BACKWARD_BLOCK;
    const int64_t i1 = n - i < RELU_BACKWARD_BLOCK ? n : i + RELU_BACKWARD_BLOCK;
    for (; i + 2 <= i1; i += 2) {
      relu_vd vv, g;
      memcpy(&vv, v + i, sizeof vv); /* unaligned loads */
      memcpy(&g, dy + i, sizeof g);
      const relu_vd out = g * relu_family_slopes2(act, vv);
      memcpy(dz + i, &out, sizeof out);
    }
    for (; i < i1; ++i) dz[i] = dy[i] * relu_family_slope(act, v[i]);
  }
}

/* dz = dy * act'(z), from the pre-activation z; softmax runs along the last
 * axis of the output array (R's slowest), whose stride is `line_stride`. */
void conv_activation_backward(int act, const double* z, const double* dy, double* dz, int64_t n,
                              int64_t last_len, int64_t line_stride, int nthreads) {
  if (act == ACT_SOFTMAX) {
    const int64_t lines = line_stride;
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t l = 0; l < lines; ++l) {
      double m = z[l], sum = 0, dot = 0;
      for (int64_t k = 1; k < last_len; ++k) m = z[l + k * line_stride] > m ? z[l + k * line_stride] : m;
      for (int64_t k = 0; k < last_len; ++k) sum += exp(z[l + k * line_stride] - m);
      for (int64_t k = 0; k < last_len; ++k) {
        const int64_t i = l + k * line_stride;
        dot += dy[i] * exp(z[i] - m) / sum;
      }
      for (int64_t k = 0; k < last_len; ++k) {
        const int64_t i = l + k * line_stride;
        const double y = exp(z[i] - m) / sum;
        dz[i] = y * (dy[i] - dot);
      }
    }
    return;
  }
  if (relu_family_activation(act)) {
    relu_family_backward(act, z, dy, dz, n, nthreads);
    return;
  }
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t i = 0; i < n; ++i) dz[i] = dy[i] * activation_derivative(act, z[i]);
}

/* At a kink, the slope TensorFlow's gradient kernels give: the ReLU
 * family's as relu_family_slope(), SELU scale at 0 (each tests its input or
 * output against 0 with a strict '<' or '>' the other way round), hard
 * sigmoid 0.2 at both ends of its clip (clip_by_value's min/max gradients
 * are inclusive). */
double activation_derivative(int act, double z) {
  const double alpha = 1.6732632423543772, scale = 1.0507009873554805;
  double s, sp;
  switch (act) {
  case ACT_RELU:
  case ACT_RELU6:
  case ACT_LEAKY_RELU: return relu_family_slope(act, z);
  case ACT_SIGMOID: s = 1 / (1 + exp(-z)); return s * (1 - s);
  case ACT_TANH: s = tanh(z); return 1 - s * s;
  case ACT_ELU: return z > 0 ? 1 : exp(z);
  case ACT_SELU: return z >= 0 ? scale : scale * alpha * exp(z);
  case ACT_SOFTPLUS: return 1 / (1 + exp(-z));
  case ACT_SOFTSIGN: s = 1 + fabs(z); return 1 / (s * s);
  case ACT_SWISH: s = 1 / (1 + exp(-z)); return s + z * s * (1 - s);
  case ACT_GELU: return 0.5 * (1 + erf(z * 0.70710678118654752440)) +
                        z * exp(-0.5 * z * z) * 0.39894228040143267794;
  case ACT_EXPONENTIAL: return exp(z);
  case ACT_HARD_SIGMOID: s = 0.2 * z + 0.5; return s >= 0 && s <= 1 ? 0.2 : 0;
  case ACT_MISH:
    sp = (z > 0 ? z : 0) + log1p(exp(-fabs(z)));
    s = tanh(sp);
    return s + z * (1 - s * s) / (1 + exp(-z));
  default: return 1; /* linear */
  }
}

/* Strides of the layer's R arrays: input along (n, d, h, w, c), output along
 * (n, d, h, w, f). */
struct grad_layout {
  int64_t xs[5], ys[5];
};

static void grad_layout_init(const struct conv_spec* s, struct grad_layout* l) {
  conv_r_strides(s, 0, l->xs);
  conv_r_strides(s, 1, l->ys);
}

/* sum[k] += a[i * sa] * b[i * sb] over the i < n with i % 4 == k: four
 * running sums, so the adds need not wait on each other's latency; the
 * caller adds them pairwise at the end. */
static inline void add_products4(double sum[4], const double* a, int64_t sa, const double* b,
                                 int64_t sb, int64_t n) {
  double s0 = sum[0], s1 = sum[1], s2 = sum[2], s3 = sum[3];
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i * sa] * b[i * sb];
    s1 += a[(i + 1) * sa] * b[(i + 1) * sb];
    s2 += a[(i + 2) * sa] * b[(i + 2) * sb];
    s3 += a[(i + 3) * sa] * b[(i + 3) * sb];
  }
  for (; i < n; ++i) s0 += a[i * sa] * b[i * sb];
  sum[0] = s0;
  sum[1] = s1;
  sum[2] = s2;
  sum[3] = s3;
}

/* The outputs o < n_out whose input o * stride + off lies in [0, len): [*lo, *hi). */
static void outputs_inside(int64_t off, int64_t stride, int64_t len, int64_t n_out, int64_t* lo,
                           int64_t* hi) {
  *lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  *hi = len - 1 - off < 0 ? 0 : (len - 1 - off) / stride + 1;
  if (*hi > n_out) *hi = n_out;
  if (*lo > *hi) *lo = *hi;
}

/* The kernel and bias gradients of filter f (see conv3d_kernel_grad). The
 * layer's numbers are copied into locals, so the loops keep them in registers
 * (dw and db could otherwise alias them). */
static void filter_grads(const struct conv_spec* s, const struct grad_layout* lay,
                         const double* x, const double* dz, double* dw, double* db, int64_t f) {
  const struct grad_layout L = *lay;
  const int64_t N = s->batch, CG = s->channels / s->groups, g = f / (s->filters / s->groups);
  const int64_t KD = s->kernel[0], KH = s->kernel[1], KW = s->kernel[2];
  const int64_t DO = s->out[0], HO = s->out[1], WO = s->out[2];
  const int64_t D = s->in[0], H = s->in[1], W = s->in[2];
  const int64_t sd = s->strides[0], sh = s->strides[1], sw = s->strides[2];
  const int64_t dd = s->dilation[0], dh = s->dilation[1], dwl = s->dilation[2];
  const int64_t pd = s->pad_lo[0], ph = s->pad_lo[1], pw = s->pad_lo[2];
  const int f32 = s->dtype == DTYPE_FLOAT32; /* sums in double, reported in the layer's type */
  if (db) { /* the sum of dz: its products with 1, which are exact */
    static const double one = 1;
    double sum[4] = {0, 0, 0, 0};
    for (int64_t n = 0; n < N; ++n)
      for (int64_t ow = 0; ow < WO; ++ow)
        for (int64_t oh = 0; oh < HO; ++oh)
          add_products4(sum, &one, 0, dz + n + oh * L.ys[2] + ow * L.ys[3] + f * L.ys[4],
                        L.ys[1], DO);
    const double acc = (sum[0] + sum[1]) + (sum[2] + sum[3]);
    db[f] = f32 ? (double)(float)acc : acc;
  }
  for (int64_t c = 0; dw != NULL && c < CG; ++c)
    for (int64_t e = 0; e < KW; ++e)
      for (int64_t b = 0; b < KH; ++b)
        for (int64_t a = 0; a < KD; ++a) {
          int64_t od0, od1; /* the outputs whose input at this tap is not padding */
          outputs_inside(a * dd - pd, sd, D, DO, &od0, &od1);
          double sum[4] = {0, 0, 0, 0};
          for (int64_t n = 0; n < N && od1 > od0; ++n)
            for (int64_t ow = 0; ow < WO; ++ow) {
              const int64_t iw = ow * sw + e * dwl - pw;
              if (iw < 0 || iw >= W) continue;
              for (int64_t oh = 0; oh < HO; ++oh) {
                const int64_t ih = oh * sh + b * dh - ph;
                if (ih < 0 || ih >= H) continue;
                const double* xr = x + n + ih * L.xs[2] + iw * L.xs[3] + (g * CG + c) * L.xs[4];
                const double* zr = dz + n + oh * L.ys[2] + ow * L.ys[3] + f * L.ys[4];
                add_products4(sum, xr + (od0 * sd + a * dd - pd) * L.xs[1], sd * L.xs[1],
                              zr + od0 * L.ys[1], L.ys[1], od1 - od0);
              }
            }
          const double acc = (sum[0] + sum[1]) + (sum[2] + sum[3]);
          dw[a + KD * (b + KH * (e + KW * (c + CG * f)))] = f32 ? (double)(float)acc : acc;
        }
}

/* Kernel and bias gradients by direct loops: dw[tap, c, f] = sum over samples
 * and outputs of x[input under the tap] * dz[output, f]; db[f] = sum of
 * dz[., f]. One filter per task, filters in chunks of about 1e9 multiply-adds
 * with an interrupt check between. dw is laid out as the R kernel (kd, kh, kw,
 * C/G, F); either of dw and db may be NULL (not wanted). Both end in the
 * layer's precision (float32 values for float32). */
void conv3d_kernel_grad(const struct conv_spec* s, const double* x, const double* dz, double* dw,
                        double* db, int nthreads, interrupt_fn check_interrupt) {
  struct grad_layout L;
  grad_layout_init(s, &L);
  const int64_t F = s->filters, CG = s->channels / s->groups;
  const int64_t taps = s->kernel[0] * s->kernel[1] * s->kernel[2];
  const double per_filter = (double)s->batch * (double)(s->out[0] * s->out[1] * s->out[2]) *
                            (double)(dw ? taps * CG + 1 : 1);
  int64_t chunk = (int64_t)(1e9 / (per_filter + 1));
  if (chunk < 4 * (int64_t)nthreads) chunk = 4 * (int64_t)nthreads;
  for (int64_t f0 = 0; f0 < F; f0 += chunk) {
    const int64_t f1 = f0 + chunk < F ? f0 + chunk : F;
    #pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1)
    for (int64_t f = f0; f < f1; ++f) filter_grads(s, &L, x, dz, dw, db, f);
    if (f1 < F && check_interrupt != NULL) check_interrupt();
  }
}

/* A float32 layer's output gradient dz as floats in dzf, in R's order, for
 * the patch layers' two GEMMs, which then read half the bytes (from cache,
 * when they fit) instead of R's doubles each; and the bias gradient (db, or
 * NULL) of each filter summed by the direct loops while its doubles are in
 * cache. One filter's run at a time per thread; a single pass, short enough
 * to need no interrupt check. */
void conv3d_stage_output_grad_f32(const struct conv_spec* s, const double* dz, float* dzf,
                                  double* db, int nthreads) {
  struct grad_layout L;
  grad_layout_init(s, &L);
  const int64_t P = s->batch * s->out[0] * s->out[1] * s->out[2];
  #pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t f = 0; f < s->filters; ++f) {
    load_doubles_f32(dz + P * f, dzf + P * f, P);
    if (db) filter_grads(s, &L, NULL, dz, NULL, db, f);
  }
}

void conv_grad_phase(const struct conv_spec* s, int axis, int64_t phase, struct grad_phase* p) {
  const int64_t S = s->strides[axis], L = s->dilation[axis], K = s->kernel[axis];
  const int64_t pad = s->pad_lo[axis], n = s->in[axis];
  int64_t gcd = S, b = L;
  while (b != 0) {
    const int64_t r = gcd % b;
    gcd = b;
    b = r;
  }
  p->first = ((phase - pad) % S + S) % S;
  p->count = p->first < n ? (n - p->first + S - 1) / S : 0;
  p->step = S / gcd;
  p->dil = L / gcd;
  p->taps = 0;
  p->last = -1;
  for (int64_t t = 0; t < K; ++t) {
    if ((t % S) * (L % S) % S == phase) {
      p->last = t;
      ++p->taps;
    }
  }
  p->pad_lo = p->pad_hi = 0;
  if (p->taps == 0 || p->count == 0) return;
  /* output o feeds input o * S - pad + t * L: for the last tap, input first
   * (j = 0) is fed by output (first + pad - last * L) / S, an exact division */
  p->pad_lo = (p->last * L - p->first - pad) / S;
  p->pad_hi = p->count + p->dil * (p->taps - 1) - p->pad_lo - s->out[axis];
}

/* The correlation computing one phase's input gradient: the output gradient
 * (channels F) in, the input's channels out, with the phase's taps. */
void conv_grad_phase_spec(const struct conv_spec* s, const struct grad_phase* const p[3],
                          struct conv_spec* t) {
  *t = *s;
  t->channels = s->filters;
  t->filters = s->channels;
  t->use_bias = 0;
  t->same = 0;
  for (int i = 0; i < 3; ++i) {
    t->in[i] = s->out[i];
    t->out[i] = p[i]->count;
    t->kernel[i] = p[i]->taps;
    t->strides[i] = 1;
    t->dilation[i] = p[i]->dil;
    t->pad_lo[i] = p[i]->pad_lo;
    t->pad_hi[i] = p[i]->pad_hi;
  }
}

/* The phase's kernel: the layer's taps last - u * step, transposed within each
 * group (the phase's channels are the layer's filters and its filters the
 * layer's channels); g is the geometry of the phase's kernel spec. */
void conv_grad_phase_source(const struct conv_spec* s, const struct grad_phase* const p[3],
                            const struct conv_geometry* g, const double* w, int64_t* tap,
                            struct weight_source* src) {
  const int64_t KD = s->kernel[0], KH = s->kernel[1], taps = KD * KH * s->kernel[2];
  const int64_t rmul[3] = {1, KD, KD * KH};
  const int64_t K1 = g->kh, K2 = g->kw, n = g->kd * K1 * K2;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t k[3] = {t / (K1 * K2), (t / K2) % K1, t % K2};
    tap[t] = 0;
    for (int i = 0; i < 3; ++i) {
      const struct grad_phase* q = p[g->axes[i]];
      tap[t] += (q->last - k[i] * q->step) * rmul[g->axes[i]];
    }
  }
  const int64_t CG = s->channels / s->groups, FG = s->filters / s->groups;
  src->w = w;
  src->tap = tap;
  src->cs = taps * CG;      /* the phase's channel: the layer's filter in the group */
  src->fs = taps;           /* the phase's filter: the layer's channel in the group */
  src->gs = taps * CG * FG;
  src->run = taps;
}

/* Output positions per chunk of the kernel-gradient GEMM: whole runs of
 * N * DO positions (which share oh and ow), about GRAD_CHUNK in all. */
int64_t conv_grad_chunk(const struct conv_spec* s) {
  const int64_t run = s->batch * s->out[0];
  const int64_t runs = GRAD_CHUNK / run > 1 ? GRAD_CHUNK / run : 1;
  return run * runs;
}

/* Elements of scratch (in the layer's type) and of the double accumulator that
 * conv3d_kernel_grad_gemm_* needs for nthreads threads. */
void conv_kernel_grad_sizes(const struct conv_spec* s, int nthreads, int64_t* n_scratch,
                            int64_t* n_acc) {
  const struct kernel_table* kt = cpu_kernels();
  const int64_t VB = 2 * conv_lanes(s);
  const int64_t NR = kt->gemm_nr, FG = s->filters / s->groups, FGP = (FG + VB - 1) / VB * VB;
  const int64_t K = s->kernel[0] * s->kernel[1] * s->kernel[2] * (s->channels / s->groups);
  const int64_t chunk = conv_grad_chunk(s);
  *n_scratch = chunk * FGP + (int64_t)nthreads * (chunk * NR + NR * VB);
  *n_acc = K * FGP;
}

int conv_kernel_grad_direct(const struct conv_spec* s) {
  return (s->channels / s->groups) % cpu_kernels()->grad_nr == 0;
}

/* Filters per block of the in-place path: two vectors, or one when a group has
 * no more filters than that (the rest of a block would be padding). */
int64_t conv_grad_filter_block(const struct conv_spec* s) {
  const int64_t lanes = conv_lanes(s);
  return s->filters / s->groups <= lanes ? lanes : 2 * lanes;
}

/* Whole rows of the kernel spec per chunk of the in-place path: a chunk's
 * transposed dz takes about GRAD_CHUNK_BYTES, and at least one sub-block of
 * about GRAD_CHUNK positions. */
int64_t conv_grad_rows_per_chunk(const struct conv_spec* s, const struct conv_spec* ks) {
  const int64_t VB = conv_grad_filter_block(s);
  const int64_t FG = s->filters / s->groups, FGP = (FG + VB - 1) / VB * VB;
  const int64_t elt = s->dtype == DTYPE_FLOAT32 ? 4 : 8;
  const int64_t rows = s->batch * ks->out[0] * ks->out[1];
  int64_t positions = GRAD_CHUNK_BYTES / (elt * s->groups * FGP);
  if (positions < GRAD_CHUNK) positions = GRAD_CHUNK;
  const int64_t per = positions / ks->out[2];
  return per < 1 ? 1 : per > rows ? rows : per;
}

/* Scratch of the in-place path: dzt of one chunk (layer's type), three
 * entries per row of it (its input offset and its first input rows along the
 * first two axes), and the threads' local accumulators (doubles). */
void conv_kernel_grad_direct_sizes(const struct conv_spec* s, const struct conv_spec* ks,
                                   int nthreads, int64_t* n_dzt, int64_t* n_rows,
                                   int64_t* n_local) {
  const struct kernel_table* kt = cpu_kernels();
  const int64_t VB = conv_grad_filter_block(s);
  const int64_t FG = s->filters / s->groups, FGP = (FG + VB - 1) / VB * VB;
  const int64_t rpc = conv_grad_rows_per_chunk(s, ks);
  *n_rows = 3 * rpc;
  *n_dzt = rpc * ks->out[2] * s->groups * FGP;
  *n_local = (int64_t)nthreads * conv_grad_local(s->kernel[0] * s->kernel[1] * s->kernel[2],
                                                 kt->grad_nr, VB);
}

/* Thread t's share of the n threads of a patch layer's kernel gradient: the
 * tasks [part[2], part[3]) of `tasks` (patch-row tile major, ftiles filter
 * tiles per row tile), whose panels need row tiles [part[0], part[1]). */
void conv_patch_grad_part(int64_t tasks, int64_t ftiles, int t, int n, int64_t part[4]) {
  const int64_t t0 = tasks * t / n, t1 = tasks * (t + 1) / n;
  part[2] = t0;
  part[3] = t1;
  part[0] = t1 > t0 ? t0 / ftiles : 0;
  part[1] = t1 > t0 ? (t1 - 1) / ftiles + 1 : 0;
}

/* Tiles of a patch layer's kernel gradient: dot_nk patch rows (*ktiles) and
 * dot_nv vectors of filters (*ftiles), padding the last of each. */
void conv_patch_grad_tiles(const struct conv_spec* s, int64_t* ktiles, int64_t* ftiles) {
  const struct kernel_table* kt = cpu_kernels();
  const int64_t K = s->kernel[0] * s->kernel[1] * s->kernel[2] * s->channels;
  const int64_t nf = kt->dot_nv * conv_lanes(s);
  *ktiles = (K + kt->dot_nk - 1) / kt->dot_nk;
  *ftiles = (s->filters + nf - 1) / nf;
}

/* Elements of one thread's panel in conv3d_patch_backward_* (returned) and
 * the positions of a block (*mb): the patch rows of its kernel-gradient tasks
 * and the block's dz transposed, one row of whole filter tiles per position
 * (want_dw); the block's rows of dz and a stage of gemm_nr rows (want_dx).
 * DOT_PANEL positions, fewer when one thread's panel for both gradients
 * would pass PATCH_GRAD_PANEL_BYTES, and whole pairs of vectors (the GEMM
 * blocks'): the kernel gradient's sums run over blocks of that size, which
 * depends neither on the thread count nor on the gradients asked for. */
int64_t conv_patch_backward_panel(const struct conv_spec* s, int nthreads, int want_dw,
                                  int want_dx, int64_t* mb) {
  const struct kernel_table* kt = cpu_kernels();
  const int64_t pair = 2 * conv_lanes(s), elt = (int64_t)conv_real_size(s);
  int64_t ktiles, ftiles, rows = 0;
  conv_patch_grad_tiles(s, &ktiles, &ftiles);
  for (int t = 0; want_dw && t < nthreads; ++t) {
    int64_t part[4];
    conv_patch_grad_part(ktiles * ftiles, ftiles, t, nthreads, part);
    const int64_t r = (part[1] - part[0]) * kt->dot_nk;
    if (r > rows) rows = r;
  }
  const int64_t dw_rows = ftiles * kt->dot_nv * conv_lanes(s), dx_rows = s->filters + kt->gemm_nr;
  const int64_t other = (want_dw ? dw_rows : 0) + (want_dx ? dx_rows : 0);
  const int64_t one = ktiles * kt->dot_nk + dw_rows + dx_rows; /* one thread, both */
  int64_t m = PATCH_GRAD_PANEL_BYTES / (one * elt + 1) / pair * pair;
  if (m > DOT_PANEL) m = DOT_PANEL;
  if (m < pair) m = pair;
  *mb = m;
  return (rows + other) * m;
}

/* Whether dx, a patch layer's input gradient of length N x D x H x W x C
 * (conv3d_patch_backward_*), is streamed past the caches. */
int conv_patch_dx_stream(const struct conv_spec* s) {
  return conv_stream_doubles((double)s->batch * (double)s->in[0] * (double)s->in[1] *
                             (double)s->in[2] * (double)s->channels);
}

/* How the GEMM blocks of a patch input gradient write dx from their
 * registers (conv3d_patch_backward_*): PATCH_DX_ROWS for a 1x1x1 layer
 * (patch row k is channel k, and each block's positions are one run of it);
 * PATCH_DX_WOVEN for kernel = stride = 2 along depth on one sample, when
 * every sub-block's positions lie in one depth run of dx (runs of whole
 * sub-blocks: 2 x lanes positions) and the two depth taps weave into it; 0
 * when they go through the stage. Streamed stores need every vector aligned:
 * dx's offsets are sums of multiples of its strides. */
int conv_patch_dx_writes(const struct conv_spec* s, const double* dx) {
  const int64_t L = conv_lanes(s), NR = cpu_kernels()->gemm_nr;
  const int stream = conv_patch_dx_stream(s);
  if (conv_patch_pointwise(s)) {
    const int64_t P = s->batch * s->out[0] * s->out[1] * s->out[2];
    return !stream || conv_direct_aligned(dx, L, P, 0, 0) ? PATCH_DX_ROWS : 0;
  }
  int64_t step;
  const int64_t run = conv_patch_runs(s, &step), in01 = s->in[0] * s->in[1];
  const int woven = run > 0 && run % (2 * L) == 0 && s->kernel[0] == 2 && step == 2 &&
                    NR % 2 == 0 && NR / 2 <= GEMM_PAIRS_MAX &&
                    (!stream || conv_direct_aligned(dx, L, s->in[0], in01, in01 * s->in[2]));
  return woven ? PATCH_DX_WOVEN : 0;
}

/* Doubles of the kernel gradient's sums in conv3d_patch_backward_* (whole
 * tiles of patch rows and filters). */
int64_t conv_patch_kernel_grad_vacc(const struct conv_spec* s) {
  const struct kernel_table* kt = cpu_kernels();
  int64_t ktiles, ftiles;
  conv_patch_grad_tiles(s, &ktiles, &ftiles);
  return ktiles * kt->dot_nk * ftiles * kt->dot_nv * conv_lanes(s);
}

#define TEMPLATE "kernel_grad_template.h"
#include "both_types.h"
