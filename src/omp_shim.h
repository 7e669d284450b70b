/* Lets the package compile where OpenMP is missing (e.g. Apple clang): the
 * pragmas are ignored and these stand-ins report a single thread. */
#ifndef CONV3D_OMP_SHIM_H
#define CONV3D_OMP_SHIM_H
/* Before a loop of independent iterations the compiler should vectorise
 * (OpenMP's simd; R's default -O2 leaves loops with selects scalar). */
#ifdef _OPENMP
#define SIMD_LOOP _Pragma("omp simd")
#else
#define SIMD_LOOP
#endif
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_num_procs(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif
#endif
