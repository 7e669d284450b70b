/* Instantiates kernel_tile.h for every tile width of the tier (WT_MAX, 8, 4, 2, 1). */
#define NT WT_MAX
#include "kernel_tile.h"
#undef NT
#if WT_MAX > 8
#define NT 8
#include "kernel_tile.h"
#undef NT
#endif
#if WT_MAX > 4
#define NT 4
#include "kernel_tile.h"
#undef NT
#endif
#define NT 2
#include "kernel_tile.h"
#undef NT
#define NT 1
#include "kernel_tile.h"
#undef NT
