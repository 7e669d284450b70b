/* Activations applied by the driver right after bias, in the layer's precision. */
#include <math.h>
#include "conv3d.h"
#include "omp_shim.h"

/* log(1 + exp(x)) without overflow for large x */
static float softplus_f32(float x) { return (x > 0 ? x : 0) + log1pf(expf(-fabsf(x))); }
static double softplus_f64(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }

#define real_t float
#define SUFFIX f32
#define EXP expf
#define EXPM1 expm1f
#define TANH tanhf
#define ERF erff
#define FABS fabsf
#include "activations_template.h"
#undef real_t
#undef SUFFIX
#undef EXP
#undef EXPM1
#undef TANH
#undef ERF
#undef FABS

#define real_t double
#define SUFFIX f64
#define EXP exp
#define EXPM1 expm1
#define TANH tanh
#define ERF erf
#define FABS fabs
#include "activations_template.h"
