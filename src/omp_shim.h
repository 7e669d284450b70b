/* Lets the package compile where OpenMP is missing (e.g. Apple clang): the
 * pragmas are ignored and these stand-ins report a single thread. */
#ifndef CONV3D_OMP_SHIM_H
#define CONV3D_OMP_SHIM_H
#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_num_procs(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
#endif
#endif
