/* Element-wise activations in real_t precision, NaN-propagating (IEEE). The
 * piecewise ones are vectorised loops of selects (SIMD_LOOP): as branches
 * their random signs cost a misprediction every other value (ReLU on 3.5 M
 * floats: 18 ms a thread, 0.4 ms as selects). */
void CONCAT(activation_apply_, SUFFIX)(int act, real_t* v, int64_t n) {
  const real_t zero = 0, one = 1, half = (real_t)0.5;
  switch (act) {
  case ACT_RELU:
    SIMD_LOOP
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] < zero ? zero : v[i];
    break;
  case ACT_SIGMOID:
    for (int64_t i = 0; i < n; ++i) v[i] = one / (one + EXP(-v[i]));
    break;
  case ACT_TANH:
    for (int64_t i = 0; i < n; ++i) v[i] = TANH(v[i]);
    break;
  case ACT_ELU:
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] > zero ? v[i] : EXPM1(v[i]);
    break;
  case ACT_SELU: {
    const real_t alpha = (real_t)1.6732632423543772, scale = (real_t)1.0507009873554805;
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] > zero ? scale * v[i] : scale * alpha * EXPM1(v[i]);
    break;
  }
  case ACT_SOFTPLUS:
    for (int64_t i = 0; i < n; ++i) v[i] = CONCAT(softplus_, SUFFIX)(v[i]);
    break;
  case ACT_SOFTSIGN:
    SIMD_LOOP
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] / (one + FABS(v[i]));
    break;
  case ACT_SWISH:
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] / (one + EXP(-v[i]));
    break;
  case ACT_GELU: {
    const real_t inv_sqrt2 = (real_t)0.70710678118654752440;
    for (int64_t i = 0; i < n; ++i) v[i] = half * v[i] * (one + ERF(v[i] * inv_sqrt2));
    break;
  }
  case ACT_EXPONENTIAL:
    for (int64_t i = 0; i < n; ++i) v[i] = EXP(v[i]);
    break;
  case ACT_HARD_SIGMOID:
    SIMD_LOOP
    for (int64_t i = 0; i < n; ++i) {
      real_t h = (real_t)0.2 * v[i] + half;
      v[i] = h < zero ? zero : (h > one ? one : h);
    }
    break;
  case ACT_RELU6:
    SIMD_LOOP
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] < zero ? zero : (v[i] > (real_t)6 ? (real_t)6 : v[i]);
    break;
  case ACT_LEAKY_RELU:
    SIMD_LOOP
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] < zero ? (real_t)0.2 * v[i] : v[i];
    break;
  case ACT_MISH:
    for (int64_t i = 0; i < n; ++i) v[i] = v[i] * TANH(CONCAT(softplus_, SUFFIX)(v[i]));
    break;
  default: /* linear; softmax is applied by the driver along its axis */
    break;
  }
}

/* Softmax over n values spaced stride apart: exp(v - max) / sum (none when
 * n is 0: an empty last axis). */
void CONCAT(softmax_, SUFFIX)(real_t* v, int64_t n, int64_t stride) {
  if (n <= 0) return;
  real_t m = v[0], sum = 0;
  for (int64_t i = 1; i < n; ++i) m = v[i * stride] > m ? v[i * stride] : m;
  for (int64_t i = 0; i < n; ++i) {
    v[i * stride] = EXP(v[i * stride] - m);
    sum += v[i * stride];
  }
  for (int64_t i = 0; i < n; ++i) v[i * stride] /= sum;
}

/* The activation of a block of outputs in a driver's scratch, filter f of
 * voxel i at v[i * vs + f * fs] for n voxels and F filters, laid out either
 * voxel by voxel (fs 1, vs >= F) or filter by filter (vs 1): softmax over each
 * voxel's filters when softmax_here (under channels_first Keras's softmax
 * runs along W instead, on the R output), else the named activation. */
void CONCAT(activation_block_, SUFFIX)(int act, int softmax_here, real_t* v, int64_t n,
                                       int64_t F, int64_t vs, int64_t fs) {
  if (act == ACT_SOFTMAX) {
    for (int64_t i = 0; softmax_here && i < n; ++i) CONCAT(softmax_, SUFFIX)(v + i * vs, F, fs);
  } else if (act != ACT_LINEAR && vs == 1) {
    for (int64_t f = 0; f < F; ++f) CONCAT(activation_apply_, SUFFIX)(act, v + f * fs, n);
  } else if (act != ACT_LINEAR && vs == F) {
    CONCAT(activation_apply_, SUFFIX)(act, v, n * F);
  } else if (act != ACT_LINEAR) { /* voxels further apart than their filters */
    for (int64_t i = 0; i < n; ++i) CONCAT(activation_apply_, SUFFIX)(act, v + i * vs, F);
  }
}
