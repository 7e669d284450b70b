/* Micro-kernels in portable C: the tier every CPU can run. */
#include <string.h>
#include "conv3d.h"


/* vector register width in bytes, and the widest register tile along W */
#define VEC_BYTES 16
#define WT_MAX 4
#define WT_HALF 2 /* WT_MAX / 2: reduction tiles of 2 and 4 filters */
#define GEMM_NR WT_MAX /* filters of the GEMM block */
#define GRAD_NR 4 /* channels per kernel-gradient block */
#define DOT_NK 4 /* patch rows x vectors of filters per kernel-gradient dot block */
#define DOT_NV 2
#define PLANAR_FB 4 /* filters x vectors of the widest planar tile */
#define PLANAR_NJ 2
#define DWG_NT 4 /* taps per depthwise kernel-gradient block */

#include "kernel_convert.h"
#include "kernel_pool.h"

#define TEMPLATE "kernel_template.h"
#include "both_types.h"

const struct kernel_table kernels_generic = {
    4, 2, WT_MAX, GEMM_NR, GRAD_NR, DOT_NK, DOT_NV, DWG_NT, PLANAR_FB, PLANAR_NJ,
    conv_span_f32, conv_span_f64, planar_tile_f32, planar_tile_f64,
    planar_bundles_f32, planar_bundles_f64, planar_combine_f32, planar_combine_f64,
    dw_plane_f32, dw_plane_f64, dw_fill_plane_f32, dw_fill_plane_f64,
    dw_grad_plane_f32, dw_grad_plane_f64, gemm_block_f32, gemm_block_f64,
    grad_block_f32, grad_block_f64, grad_block1_f32, grad_block1_f64,
    dot_block_f32, dot_block_f64, dwgrad_block_f32, dwgrad_block_f64,
    wino_in_f32, wino_in_f64, wino_gemm_f32, wino_gemm_f64, wino_out_f32, wino_out_f64,
    doubles_to_floats, floats_to_doubles, columns_to_rows_generic_f32,
    columns_to_rows_generic_f64, rows_to_columns_generic_f32, rows_to_columns_generic_f64,
    strided_to_floats_generic, strided_to_doubles,
    floats_to_doubles_stream, doubles_stream, stream_fence,
    transpose_generic_f32, transpose_generic_f64, pool_rows_vec};
