/* R array <-> internal layout conversions, one instance per element type. */
#include <string.h>
#include "conv3d.h"
#include "omp_shim.h"

#define real_t float
#define SUFFIX f32
#include "layout_template.h"
#undef real_t
#undef SUFFIX

#define real_t double
#define SUFFIX f64
#include "layout_template.h"
#undef real_t
#undef SUFFIX
