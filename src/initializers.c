/* Weight initialisation. Pure C: the random draws come through struct rng, which
 * the entry point wires to R's RNG (so set.seed() reproduces weights). */
#include <math.h>
#include <string.h>
#include "conv3d.h"

/* 1 / sd of a standard normal truncated to [-2, 2]: Keras's rescaling constant. */
#define TRUNCATED_SD_CORRECTION 0.87962566103423978

void fans_for_shape(const int64_t* shape, int rank, double* fan_in, double* fan_out) {
  if (rank < 1) { *fan_in = *fan_out = 1; return; }
  if (rank == 1) { *fan_in = *fan_out = (double)shape[0]; return; }
  if (rank == 2) { *fan_in = (double)shape[0]; *fan_out = (double)shape[1]; return; }
  double receptive = 1;
  for (int i = 0; i < rank - 2; ++i) receptive *= (double)shape[i];
  *fan_in = (double)shape[rank - 2] * receptive;
  *fan_out = (double)shape[rank - 1] * receptive;
}

/* A standard normal redrawn until it lies within two standard deviations. */
static double truncated_standard_normal(const struct rng* rng) {
  double z;
  do z = rng->normal(); while (fabs(z) > 2.0);
  return z;
}

static void fill_variance_scaling(const struct init_params* p, const int64_t* shape, int rank,
                                  double* out, int64_t n, const struct rng* rng) {
  double fan_in, fan_out;
  fans_for_shape(shape, rank, &fan_in, &fan_out);
  double fan = p->mode == 0 ? fan_in : p->mode == 1 ? fan_out : (fan_in + fan_out) / 2;
  double scale = p->scale / (fan > 1 ? fan : 1);
  if (p->distribution == 0) {
    double sd = sqrt(scale) / TRUNCATED_SD_CORRECTION;
    for (int64_t i = 0; i < n; ++i) out[i] = sd * truncated_standard_normal(rng);
  } else if (p->distribution == 1) {
    double sd = sqrt(scale);
    for (int64_t i = 0; i < n; ++i) out[i] = sd * rng->normal();
  } else {
    double limit = sqrt(3.0 * scale);
    for (int64_t i = 0; i < n; ++i) out[i] = limit * (2.0 * rng->uniform() - 1.0);
  }
}

/* Orthogonal: Q of the QR decomposition of a normal (max x min) matrix, signs fixed
 * so diag(R) > 0 (modified Gram-Schmidt gives exactly that Q), transposed when the
 * kernel has fewer rows than columns. Rows are the leading axes flattened.
 * scratch holds n doubles. */
static int fill_orthogonal(const struct init_params* p, const int64_t* shape, int rank,
                           double* out, int64_t n, double* scratch, const struct rng* rng) {
  if (rank < 2 || n == 0) return 0;
  int64_t cols = shape[rank - 1], rows = n / cols;
  int64_t big = rows > cols ? rows : cols, small = rows > cols ? cols : rows;
  double* q = scratch; /* big x small, column-major */
  for (int64_t i = 0; i < n; ++i) q[i] = rng->normal();
  for (int64_t j = 0; j < small; ++j) {
    double* qj = q + j * big;
    for (int64_t k = 0; k < j; ++k) {
      const double* qk = q + k * big;
      double dot = 0;
      for (int64_t i = 0; i < big; ++i) dot += qk[i] * qj[i];
      for (int64_t i = 0; i < big; ++i) qj[i] -= dot * qk[i];
    }
    double norm = 0;
    for (int64_t i = 0; i < big; ++i) norm += qj[i] * qj[i];
    norm = sqrt(norm);
    if (!(norm > 0)) return 0;
    for (int64_t i = 0; i < big; ++i) qj[i] /= norm;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[r + rows * c] = p->gain * (rows >= cols ? q[r + big * c] : q[c + big * r]);
  return 1;
}

int init_fill(enum init_kind kind, const struct init_params* p, const int64_t* shape, int rank,
              double* out, int64_t n, double* scratch, const struct rng* rng) {
  switch (kind) {
  case INIT_ZEROS: for (int64_t i = 0; i < n; ++i) out[i] = 0; return 1;
  case INIT_ONES: for (int64_t i = 0; i < n; ++i) out[i] = 1; return 1;
  case INIT_CONSTANT: for (int64_t i = 0; i < n; ++i) out[i] = p->value; return 1;
  case INIT_RANDOM_NORMAL:
    for (int64_t i = 0; i < n; ++i) out[i] = p->mean + p->stddev * rng->normal();
    return 1;
  case INIT_RANDOM_UNIFORM:
    for (int64_t i = 0; i < n; ++i) out[i] = p->minval + (p->maxval - p->minval) * rng->uniform();
    return 1;
  case INIT_TRUNCATED_NORMAL:
    for (int64_t i = 0; i < n; ++i) out[i] = p->mean + p->stddev * truncated_standard_normal(rng);
    return 1;
  case INIT_VARIANCE_SCALING: fill_variance_scaling(p, shape, rank, out, n, rng); return 1;
  case INIT_ORTHOGONAL: return fill_orthogonal(p, shape, rank, out, n, scratch, rng);
  default: return 0;
  }
}
