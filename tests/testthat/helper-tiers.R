# The kernel tiers this CPU can run, lowest first (conv3d_cpu() forces each).
available_tiers <- function() {
  best <- conv3d_cpu()$best
  c("generic", "avx2", "avx512")[seq_len(match(best, c("generic", "avx2", "avx512")))]
}
