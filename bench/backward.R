# Backward-pass benchmark: conv3d_gradients() (input, kernel and bias gradients)
# on the benchmark shapes (shapes.csv) from R, against PyTorch's convolution backward run in the
# same invocation. GFLOP/s counts twice the forward's nominal work.
#   Rscript bench/backward.R [--dtype float32|float64] [--threads N] [--shapes a,b]
#                            [--no-anchor] [--rounds 3] [--anchor-no-gc]
suppressPackageStartupMessages(library(conv3d))
args <- commandArgs(TRUE)
opt <- function(name, default) {
  i <- match(name, args)
  if (is.na(i)) default else args[i + 1L]
}
dtype <- opt("--dtype", "float32")
threads <- as.integer(opt("--threads", "2"))
only <- opt("--shapes", "")
anchor <- !"--no-anchor" %in% args
here <- if (file.exists("bench/shapes.csv")) "bench" else "."
shapes <- utils::read.csv(file.path(here, "shapes.csv"), stringsAsFactors = FALSE)
if (nzchar(only)) shapes <- shapes[shapes$name %in% strsplit(only, ",")[[1]], ]
source(file.path(here, "common.R")) # now(), minor_faults()
conv3d_threads(threads)
# best of 3 before the shapes and 3 after (a shared machine can take the other
# core for a moment, and a low peak would inflate every pct_peak)
peak_now <- function() max(vapply(1:3, function(i) conv3d:::peak_gflops(threads, dtype), 0))
peak <- peak_now()
rounds <- as.integer(opt("--rounds", "3"))
if (is.na(rounds) || rounds < 1L) stop("--rounds must be a positive integer", call. = FALSE)
has_torch <- anchor && system2("/usr/bin/python3", c("-c", shQuote("import torch")),
  stdout = FALSE, stderr = FALSE) == 0

# One round over the shapes: the min of 7 calls after 2 warm-ups, timed to the
# microsecond, per shape, and the page faults of the fastest call. gc() runs
# before every call, outside the timed region, as in run.R: it collects the
# previous call's gradients, whose memory the next call then reuses. Without
# it, the results of earlier calls pile up until a collection inside some
# later call, and every call writes freshly mapped pages (on the AMD machine
# of 2026-12-05: dilated2 26 ms with 1500-1800 faults a call when it ran
# after mednet_stem, 15 ms when it ran after unet_deep). PyTorch's calls follow
# a gc.collect() each in the same way (--anchor-no-gc: back to back).
time_round <- function() {
  set.seed(1)
  rows <- list()
  for (i in seq_len(nrow(shapes))) {
    r <- shapes[i, ]
    x <- array(rnorm(r$N * r$D * r$H * r$W * r$cin), c(r$N, r$D, r$H, r$W, r$cin))
    cg <- r$cin / r$groups
    kernel <- array(rnorm(r$kd * r$kh * r$kw * cg * r$cout) / sqrt(cg), c(r$kd, r$kh, r$kw, cg, r$cout))
    layer <- layer_conv_3d(filters = r$cout, kernel_size = c(r$kd, r$kh, r$kw), strides = r$stride,
      dilation_rate = r$dilation, groups = r$groups, padding = r$padding, dtype = dtype,
      weights = list(kernel, rnorm(r$cout)))
    y <- layer(x)
    dy <- array(rnorm(length(y)), dim(y))
    for (w in 1:2) {
      invisible(gc())
      g <- conv3d_gradients(layer, x, dy)
      rm(g)
    }
    times <- faults <- numeric(7)
    for (k in 1:7) {
      invisible(gc())
      f0 <- minor_faults()
      t0 <- now()
      g <- conv3d_gradients(layer, x, dy)
      times[k] <- now() - t0
      faults[k] <- minor_faults() - f0
      rm(g)
    }
    gflop <- 2 * 2 * prod(dim(y)[1:4]) * r$cout * cg * r$kd * r$kh * r$kw / 1e9
    rows[[i]] <- data.frame(shape = r$name, GFLOP = round(gflop, 3), ms = min(times) * 1000,
                            faults = faults[which.min(times)])
  }
  do.call(rbind, rows)
}

# Rounds of all conv3d timings, then all PyTorch timings; each side keeps its
# fastest per shape (a shared machine can take a core for seconds).
table <- NULL
torch_ms <- NULL
for (round in seq_len(rounds)) {
  t <- time_round()
  if (is.null(table)) {
    table <- t
  } else { # each shape's faults from its fastest round
    faster <- t$ms < table$ms
    table$faults[faster] <- t$faults[faster]
    table$ms <- pmin(table$ms, t$ms)
  }
  if (has_torch) {
    out <- system2("/usr/bin/python3", c(file.path(here, "anchor_backward.py"), "--dtype", dtype,
      "--threads", threads, if (nzchar(only)) c("--only", only),
      if ("--anchor-no-gc" %in% args) "--no-gc"), stdout = TRUE)
    a <- utils::read.csv(text = out, stringsAsFactors = FALSE)
    ms <- a$torch_ms[match(table$shape, a$name)]
    torch_ms <- if (is.null(torch_ms)) ms else pmin(torch_ms, ms)
  }
}
peak <- max(peak, peak_now())
table$GFLOPs <- round(table$GFLOP / table$ms * 1000, 1)
table$pct_peak <- round(100 * table$GFLOPs / peak, 1)
if (!is.null(torch_ms)) {
  table$torch_ms <- round(torch_ms, 2)
  table$torch_over_ours <- round(torch_ms / table$ms, 2)
}
table$ms <- round(table$ms, 1)
cat(sprintf("conv3d backward benchmark, %s, %d threads, tier %s, peak %.0f GFLOP/s, best of %d round%s\n",
  dtype, threads, conv3d_cpu()$kernel, peak, rounds, if (rounds == 1) "" else "s"))
print(table, row.names = FALSE)
if (!is.null(table$torch_over_ours)) {
  cat(sprintf("Geometric mean of torch_ms / ms: %.2f\n", exp(mean(log(table$torch_over_ours)))))
}
