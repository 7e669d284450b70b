/* Reading the patch rows of a patch layer (conv_geometry.patch) from the R
 * array. Included by the templates that need it, once per (real_t, SUFFIX). */

/* Panel row k (a tap and channel, R's kernel order) of the output positions
 * p0 .. p0 + m - 1, in the layer's type: x[koff[k] + base[i]] for the patches'
 * first voxels base[i] (base NULL: single-voxel patches, base[i] = p0 + i).
 * When run is not 0, the bases of each run of that many positions (from
 * position 0) are step apart (conv_patch_runs) and are read as strided runs;
 * else they are gathered. Positions m .. mb - 1 are zeroed. The source of row
 * k + PATCH_PREFETCH_ROWS is prefetched, a cache line at a time: many short
 * or strided runs at a time defeat the hardware prefetchers, and the reads
 * then wait on memory; unless prefetch is 0 (the caller prefetched). */
static void CONCAT(patch_row_, SUFFIX)(const double* x, const int64_t* koff,
                                       const int64_t* base, int64_t run, int64_t step,
                                       int64_t p0, int64_t m, int64_t mb, int64_t k,
                                       int64_t K, int prefetch, real_t* row) {
#define PATCH_BASE(i) (base ? base[i] : p0 + (i))
  if (prefetch && k + PATCH_PREFETCH_ROWS < K) {
    const double* ahead = x + koff[k + PATCH_PREFETCH_ROWS];
    const int64_t every = run > 0 && step < 8 ? 8 / step : 1;
    for (int64_t i = 0; i < m; i += every) __builtin_prefetch(ahead + PATCH_BASE(i));
  }
  const double* xk = x + koff[k];
  if (run > 0) {
    for (int64_t i = 0; i < m;) {
      const int64_t len = conv_run_left(run, p0 + i, m - i);
      CONCAT(load_strided_, SUFFIX)(xk + PATCH_BASE(i), step, row + i, len);
      i += len;
    }
  } else {
    for (int64_t i = 0; i < m; ++i) row[i] = (real_t)xk[PATCH_BASE(i)];
  }
#undef PATCH_BASE
  for (int64_t i = m; i < mb; ++i) row[i] = 0;
}
