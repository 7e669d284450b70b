# Helpers of both benchmark scripts (run.R: forward, backward.R: gradients).

now <- function() as.numeric(Sys.time())

# Minor page faults of this process so far (all threads), from /proc/self/stat:
# each is a page of fresh memory mapped on first touch (costly in a VM).
minor_faults <- function() {
  s <- tryCatch(readLines("/proc/self/stat", warn = FALSE), error = function(e) "")
  f <- strsplit(sub("^.*\\) ", "", s), " ", fixed = TRUE)[[1]]
  if (length(f) >= 8L) as.numeric(f[8]) else NA_real_ # field 10 of proc(5)
}
