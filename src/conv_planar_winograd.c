/* Winograd along axis 1 of the planar path (conv_geometry.planar_points):
 * output rows in bundles of m (4, or 2), each stride phase q of the taps
 * along axis 1 (taps q, q + S, ..., r of them, S the stride) a correlation
 * of unit stride over that phase's input rows, computed as F(m, r) from
 * m + r - 1 transformed rows. A bundle then costs kh + S (m - 1) row
 * products per tap of the other axes where the direct tiles do m kh:
 * mednet_stem's 7 taps of stride 2, 13 instead of 28 for 4 rows. The
 * products are the planar tiles' own (kernel_planar.h), one pass per
 * transform point over transformed input planes with the taps along axis 1
 * gone; the driver (conv_planar_template.h) transforms each plane it packs,
 * and sums the points' products into the bundle's rows
 * (planar_bundles_*). Pure C. */
#include <math.h>
#include "conv3d.h"
#include "omp_shim.h"

/* The finite points of F(m, r), the first m + r - 2 of them (then
 * infinity): small integers and a half, so that the transforms' factors
 * stay moderate (G's are their powers, at most 2^5 for F(2, 6)) and float32
 * results within the tests' bounds. */
static const double finite_points[PLANAR_WINO_MAX_ROWS - 1] = {0, 1, -1, 2, -2, 0.5};
/* Multiply-adds per output (taps x channels per group) below which a layer
 * is bound by memory, not by its products: the transforms and the products'
 * round trip through scratch then cost more than they save. unet_stem's 27:
 * 2.9 -> 4.3 ms with them; c3d_conv1a's 81: 11.2 -> 9.8 ms (through
 * scratch; 8.5 since the rows are stored from the registers). */
#define PLANAR_WINO_MIN_PRODUCTS 64
/* Bytes of a thread's ring of transformed planes above which a layer keeps
 * the direct tiles: each point's pass re-reads the planes, which should come
 * from the core's own caches (mednet_stem's: 242 KB, its packed plane
 * included), and the transforms
 * hold up to 3.5 times the rows of the planes they come from. */
#define PLANAR_WINO_MAX_RING_BYTES (4 << 20)

/* Tests only (conv_planar_winograd_rows): the most output rows per bundle
 * (4; 2; 0: the direct tiles), so that every variant stays covered on the
 * same shapes. */
static int planar_winograd_max_m = PLANAR_WINO_MAX_M;

int conv_planar_winograd_rows(int max_m) {
  const int was = planar_winograd_max_m;
  planar_winograd_max_m = max_m;
  return was;
}

/* Sets g->planar_m, the output rows per bundle, and g->planar_points, the
 * transform points per bundle (every phase has a tap: S phases of m + r - 1
 * points, kh + S (m - 1) in all), or leaves both 0 for the direct tiles:
 * taps along axis 1 undilated and more than the stride, enough products per
 * output, m + r - 1 at most PLANAR_WINO_MAX_ROWS for the phases' most taps
 * r, and a ring of at most PLANAR_WINO_MAX_RING_BYTES. Bundles of 4 rows
 * when the layer has as many and the points fit PLANAR_WINO_MAX_POINTS,
 * else of 2. */
void conv_planar_winograd_geometry(const struct conv_spec* ks, struct conv_geometry* g) {
  g->planar_m = 0;
  g->planar_points = 0;
  if (g->dh != 1 || g->sh >= g->kh || ks->out[1] < 2 ||
      g->kd * g->kh * g->kw * g->cg < PLANAR_WINO_MIN_PRODUCTS)
    return;
  const int64_t r = (g->kh + g->sh - 1) / g->sh;
  for (int64_t m = PLANAR_WINO_MAX_M; m >= 2; m /= 2) {
    const int64_t points = g->kh + g->sh * (m - 1);
    if (m > planar_winograd_max_m || m > ks->out[1] || m + r - 1 > PLANAR_WINO_MAX_ROWS ||
        points > PLANAR_WINO_MAX_POINTS)
      continue;
    g->planar_m = m;
    g->planar_points = points;
    int64_t n_index;
    if ((double)conv_planar_ring(ks, g, &n_index) * (double)conv_real_size(ks) <=
        PLANAR_WINO_MAX_RING_BYTES)
      return;
    g->planar_m = 0;
    g->planar_points = 0;
  }
}

/* Inverse of the n x n matrix v (n <= PLANAR_WINO_MAX_ROWS, invertible: a
 * Vandermonde matrix of distinct points), by Gauss-Jordan elimination with
 * partial pivoting. */
static void invert(int64_t n, double v[PLANAR_WINO_MAX_ROWS][PLANAR_WINO_MAX_ROWS],
                   double inv[PLANAR_WINO_MAX_ROWS][PLANAR_WINO_MAX_ROWS]) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) inv[i][j] = i == j;
  for (int64_t col = 0; col < n; ++col) {
    int64_t pivot = col;
    for (int64_t i = col + 1; i < n; ++i)
      if (fabs(v[i][col]) > fabs(v[pivot][col])) pivot = i;
    for (int64_t j = 0; j < n; ++j) {
      double t = v[col][j];
      v[col][j] = v[pivot][j], v[pivot][j] = t;
      t = inv[col][j];
      inv[col][j] = inv[pivot][j], inv[pivot][j] = t;
    }
    const double d = v[col][col];
    for (int64_t j = 0; j < n; ++j) v[col][j] /= d, inv[col][j] /= d;
    for (int64_t i = 0; i < n; ++i) {
      if (i == col || v[i][col] == 0) continue;
      const double f = v[i][col];
      for (int64_t j = 0; j < n; ++j) v[i][j] -= f * v[col][j], inv[i][j] -= f * inv[col][j];
    }
  }
}

/* The n = m + r - 1 points of F(m, r), a correlation y_i = sum_k g_k
 * d_(i + k) (i < m) as the transpose of Toom-Cook's linear convolution: with
 * Va, Vg and V the evaluations of polynomials of m, r and n coefficients at
 * the points (n - 1 finite ones, then infinity: the leading coefficient),
 * y = Va' ((Vg g) * (inverse(V)' d)). Point t gets row t of inverse(V)'
 * (bt), of Vg (gt) and of Va (at). */
static void toom_cook(int64_t m, int64_t r, int64_t phase, struct planar_point* pt) {
  const int64_t n = m + r - 1;
  double v[PLANAR_WINO_MAX_ROWS][PLANAR_WINO_MAX_ROWS];
  double inv[PLANAR_WINO_MAX_ROWS][PLANAR_WINO_MAX_ROWS];
  for (int64_t i = 0; i < n; ++i) {
    double power = 1;
    for (int64_t j = 0; j < n; ++j) {
      v[i][j] = i < n - 1 ? power : j == n - 1;
      power *= i < n - 1 ? finite_points[i] : 0;
    }
  }
  invert(n, v, inv);
  for (int64_t t = 0; t < n; ++t) {
    const int infinity = t == n - 1;
    pt[t].phase = phase;
    pt[t].r = r;
    double power = 1;
    for (int64_t k = 0; k < r; ++k) {
      pt[t].gt[k] = infinity ? k == r - 1 : power;
      power *= infinity ? 0 : finite_points[t];
    }
    /* the elimination leaves some zeros as rounding dust (-2.8e-17) */
    for (int64_t j = 0; j < n; ++j) pt[t].bt[j] = fabs(inv[j][t]) < 1e-12 ? 0 : inv[j][t];
    power = 1;
    for (int64_t i = 0; i < m; ++i) {
      pt[t].at[i] = infinity ? i == m - 1 : power;
      power *= infinity ? 0 : finite_points[t];
    }
  }
}

/* The geometry's g->planar_points points, phase after phase. */
void conv_planar_winograd_transforms(const struct conv_geometry* g, struct planar_point* pt) {
  int64_t t = 0;
  for (int64_t q = 0; q < g->sh; ++q) {
    const int64_t r = (g->kh - q + g->sh - 1) / g->sh;
    toom_cook(g->planar_m, r, q, pt + t);
    t += g->planar_m + r - 1;
  }
}

#define TEMPLATE "conv_planar_winograd_template.h"
#include "both_types.h"
