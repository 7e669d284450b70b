# Runs the testthat suite against the installed package and ends with one line:
# "testthat: N passed, N failed" (", N skipped" when some are skipped).
# Exits non-zero when anything failed.
library(testthat)
results <- as.data.frame(testthat::test_dir(
  "tests/testthat", package = "conv3d", load_package = "installed",
  reporter = testthat::ProgressReporter$new(show_praise = FALSE),
  stop_on_failure = FALSE
))
passed <- sum(results$passed)
failed <- sum(results$failed) + sum(results$error)
skipped <- sum(results$skipped)
cat(sprintf("testthat: %d passed, %d failed%s\n", passed, failed,
  if (skipped > 0) sprintf(", %d skipped", skipped) else ""))
quit(status = if (failed > 0) 1L else 0L)
