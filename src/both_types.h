/* Includes the header TEMPLATE (a name the includer defines, then this
 * header undefines) once per element type: real_t float with SUFFIX f32 and
 * REAL_IS_FLOAT defined (for what only float32 has: kernel_template.h's
 * paired groups), then real_t double with SUFFIX f64. activations.c, whose
 * template needs its math functions named per type, spells it out. */
#define real_t float
#define SUFFIX f32
#define REAL_IS_FLOAT 1
#include TEMPLATE
#undef REAL_IS_FLOAT
#undef real_t
#undef SUFFIX

#define real_t double
#define SUFFIX f64
#include TEMPLATE
#undef real_t
#undef SUFFIX
#undef TEMPLATE
