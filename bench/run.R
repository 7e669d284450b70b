# The conv3d forward benchmark (shapes, method and targets: the project's benchmark
# specification; usage:
# bench/README.md). Run from the package root with the package installed:
#   Rscript bench/run.R [--dtype float32|float64] [--threads N] [--shapes a,b]
#                       [--no-anchor] [--tier generic|avx2|avx512] [--csv path]
#                       [--runs 7] [--warmup 2] [--budget 20] [--rounds 3] [--verify]
#                       [--python /usr/bin/python3] [--anchor-no-gc]

usage <- function() {
  cat(
    "Usage: Rscript bench/run.R [options]\n",
    "  --dtype float32|float64   precision (default float32)\n",
    "  --threads N               threads for conv3d and torch (default 2)\n",
    "  --shapes a,b,...          shape names from bench/shapes.csv (default all)\n",
    "  --no-anchor               skip the PyTorch anchor\n",
    "  --tier generic|avx2|avx512  force a kernel tier (default: the best)\n",
    "  --csv PATH                also write the table as CSV\n",
    "  --runs N, --warmup N      timed runs / warm-up calls (default 7 / 2)\n",
    "  --budget SEC              per shape and library: fewer runs (>= 3) when\n",
    "                            --runs calls would take longer (default 20)\n",
    "  --rounds N                repeat all timings (conv3d, then the anchor) N times\n",
    "                            and keep each side's fastest (default 3)\n",
    "  --verify                  compare outputs with torch on reduced sizes, then stop\n",
    "  --python PATH             the anchor's Python (default /usr/bin/python3)\n",
    "  --anchor-no-gc            time the anchor's calls back to back, without the\n",
    "                            gc.collect() that matches conv3d's gc() before each call\n",
    sep = ""
  )
}

parse_args <- function(args) {
  opt <- list(dtype = "float32", threads = 2L, shapes = NULL, anchor = TRUE, tier = NULL,
              csv = NULL, runs = 7L, warmup = 2L, budget = 20, rounds = 3L, verify = FALSE,
              python = "/usr/bin/python3", anchor_gc = TRUE)
  i <- 1L
  value <- function() {
    if (i + 1L > length(args)) stop("option ", args[i], " needs a value", call. = FALSE)
    args[i + 1L]
  }
  while (i <= length(args)) {
    a <- args[i]
    if (grepl("^--[a-z-]+=", a)) { # --opt=value form
      args <- append(args, sub("^[^=]*=", "", a), i)
      a <- args[i] <- sub("=.*$", "", a)
    }
    switch(a,
      "--dtype" = { opt$dtype <- value(); i <- i + 1L },
      "--threads" = { opt$threads <- as.integer(value()); i <- i + 1L },
      "--shapes" = { opt$shapes <- strsplit(value(), ",", fixed = TRUE)[[1]]; i <- i + 1L },
      "--no-anchor" = { opt$anchor <- FALSE },
      "--tier" = { opt$tier <- value(); i <- i + 1L },
      "--csv" = { opt$csv <- value(); i <- i + 1L },
      "--runs" = { opt$runs <- as.integer(value()); i <- i + 1L },
      "--warmup" = { opt$warmup <- as.integer(value()); i <- i + 1L },
      "--budget" = { opt$budget <- as.numeric(value()); i <- i + 1L },
      "--rounds" = { opt$rounds <- as.integer(value()); i <- i + 1L },
      "--verify" = { opt$verify <- TRUE },
      "--python" = { opt$python <- value(); i <- i + 1L },
      "--anchor-no-gc" = { opt$anchor_gc <- FALSE },
      "--help" = , "-h" = { usage(); quit(status = 0) },
      { usage(); stop("unknown option ", a, call. = FALSE) }
    )
    i <- i + 1L
  }
  if (!opt$dtype %in% c("float32", "float64")) stop("--dtype must be float32 or float64", call. = FALSE)
  if (is.na(opt$threads) || opt$threads < 1L) stop("--threads must be a positive integer", call. = FALSE)
  if (is.na(opt$rounds) || opt$rounds < 1L) stop("--rounds must be a positive integer", call. = FALSE)
  if (!is.null(opt$tier) && !opt$tier %in% c("generic", "avx2", "avx512")) {
    stop("--tier must be generic, avx2 or avx512", call. = FALSE)
  }
  if (is.na(opt$runs) || opt$runs < 1L) stop("--runs must be >= 1", call. = FALSE)
  if (is.na(opt$warmup) || opt$warmup < 0L) stop("--warmup must be >= 0", call. = FALSE)
  opt
}

# The directory of this script (bench/), whatever the working directory.
bench_dir <- function() {
  f <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
  if (length(f) == 1L && nzchar(f)) dirname(normalizePath(f)) else normalizePath("bench")
}

source(file.path(bench_dir(), "common.R")) # now(), minor_faults()

fmt <- function(x, digits = 2, fmt_char = "f") {
  ifelse(is.na(x), "NA", formatC(x, digits = digits, format = fmt_char, big.mark = ""))
}

# Prints a data frame of strings as an aligned table (first column left-aligned).
print_table <- function(tab) {
  cols <- names(tab)
  w <- vapply(seq_along(cols), function(j) max(nchar(c(cols[j], tab[[j]]))), 1L)
  pad <- function(s, j) formatC(s, width = if (j == 1L) -w[j] else w[j])
  line <- function(v) paste(vapply(seq_along(v), function(j) pad(v[j], j), ""), collapse = "  ")
  cat(line(cols), "\n", sep = "")
  cat(strrep("-", sum(w) + 2L * (length(w) - 1L)), "\n", sep = "")
  for (r in seq_len(nrow(tab))) cat(line(unlist(tab[r, ], use.names = FALSE)), "\n", sep = "")
}

out_len <- function(n, k, s, d, padding) {
  k_eff <- (k - 1L) * d + 1L
  if (padding == "same") ceiling(n / s) else floor((n - k_eff) / s) + 1
}

# Random input (double R array, values from rnorm), kernel scaled by 1/sqrt(fan_in), bias.
make_data <- function(r, seed = 1L) {
  set.seed(seed)
  cg <- r$cin %/% r$groups
  fan_in <- cg * r$kd * r$kh * r$kw
  list(
    x = array(rnorm(r$N * r$D * r$H * r$W * r$cin), c(r$N, r$D, r$H, r$W, r$cin)),
    kernel = array(rnorm(r$kd * r$kh * r$kw * cg * r$cout) / sqrt(fan_in),
                   c(r$kd, r$kh, r$kw, cg, r$cout)),
    bias = rnorm(r$cout)
  )
}

make_layer <- function(r, dat, dtype) {
  conv3d::layer_conv_3d(
    filters = r$cout, kernel_size = c(r$kd, r$kh, r$kw), strides = r$stride,
    padding = r$padding, data_format = "channels_last", dilation_rate = r$dilation,
    groups = r$groups, dtype = dtype, weights = list(dat$kernel, dat$bias)
  )
}

# Min of `runs` calls of layer(x) after `warmup` calls (the first builds the layer);
# fewer runs (at least 3) when they would exceed `budget` seconds. gc() runs before
# every call, outside the timed region, so that one call's garbage is not collected
# inside the next. The kernel phase is the minimum over the timed runs; pack/unpack
# are those of the fastest run (NA when the package does not time them separately,
# e.g. when the conversion to the R array is fused into the kernel).
time_layer <- function(layer, x, warmup, runs, budget) {
  t_call <- NA_real_
  for (i in seq_len(warmup)) {
    invisible(gc())
    t0 <- now(); y <- layer(x); t_call <- now() - t0
    rm(y)
    if (t_call * runs > budget) break
  }
  n <- runs
  if (!is.na(t_call) && t_call * runs > budget) n <- max(3L, min(runs, floor(budget / t_call)))
  best <- Inf; kern <- Inf; phases <- c(pack = NA, kernel = NA, unpack = NA); odim <- NULL
  faults <- NA
  for (i in seq_len(n)) {
    invisible(gc())
    f0 <- minor_faults()
    t0 <- now(); y <- layer(x); t <- now() - t0
    f1 <- minor_faults()
    ph <- conv3d:::last_forward_timing()
    ph <- ph[c("pack", "kernel", "unpack")] # a phase the package no longer times -> NA
    names(ph) <- c("pack", "kernel", "unpack")
    if (t < best) { best <- t; phases <- ph; faults <- f1 - f0 }
    kern <- min(kern, ph[["kernel"]])
    odim <- dim(y)
    rm(y)
  }
  list(ms = best * 1e3, kernel_ms = kern * 1e3, pack_ms = phases[["pack"]] * 1e3,
       unpack_ms = phases[["unpack"]] * 1e3, runs = n, out_dim = odim, faults = faults)
}

# Copy bandwidth of R, bytes moved = read + write, over 256 MB of doubles. "fresh":
# y <- x + 0, a new result vector each time (page faults of first touch included,
# as for any R array a function returns); "in place": the same arithmetic on a
# temporary that R reuses (x + 0 + 0 + ...: every "+ 0" after the first overwrites
# its argument), i.e. the DRAM streaming rate.
copy_bandwidth <- function(reps = 5L, chain = 8L) {
  n <- 2^25
  x <- numeric(n) + 1
  expr1 <- quote(x + 0)
  exprk <- expr1
  for (i in seq_len(chain)) exprk <- call("+", exprk, 0)
  t1 <- Inf; tk <- Inf
  for (i in seq_len(reps)) {
    t0 <- now(); y <- eval(expr1); t1 <- min(t1, now() - t0); rm(y)
    t0 <- now(); y <- eval(exprk); tk <- min(tk, now() - t0); rm(y)
  }
  invisible(gc())
  c(fresh = 16 * n / t1 / 1e9, inplace = if (tk > t1) chain * 16 * n / (tk - t1) / 1e9 else NA)
}

# Share of all CPUs busy (any process) over `secs` seconds, from /proc/stat: the
# benchmark itself is idle meanwhile, so this is other load competing for cores.
cpu_busy <- function(secs = 1) {
  read <- function() {
    v <- tryCatch(as.numeric(strsplit(readLines("/proc/stat", n = 1L), "\\s+")[[1]][-1]),
                  error = function(e) NULL)
    if (length(v) < 5L) return(NULL)
    c(idle = sum(v[4:5]), total = sum(v))
  }
  a <- read(); Sys.sleep(secs); b <- read()
  if (is.null(a) || is.null(b) || b[["total"]] <= a[["total"]]) return(NA_real_)
  100 * (1 - (b[["idle"]] - a[["idle"]]) / (b[["total"]] - a[["total"]]))
}

python_has_torch <- function(python) {
  file.exists(python) &&
    identical(suppressWarnings(system2(python, c("-c", shQuote("import torch")),
                                       stdout = FALSE, stderr = FALSE)), 0L)
}

run_anchor <- function(opt, shapes_file, names, threads) {
  err <- tempfile()
  out <- suppressWarnings(system2(opt$python, c(
    shQuote(file.path(bench_dir(), "anchor.py")), "--shapes", shQuote(shapes_file),
    "--dtype", opt$dtype, "--threads", threads, "--only", paste(names, collapse = ","),
    "--runs", opt$runs, "--warmup", opt$warmup, "--budget", opt$budget,
    if (!opt$anchor_gc) "--no-gc"
  ), stdout = TRUE, stderr = err))
  msg <- readLines(err, warn = FALSE)
  if (length(msg)) cat(paste0("  anchor: ", msg), sep = "\n")
  status <- attr(out, "status")
  if (!is.null(status) && status != 0L || length(out) < 2L) {
    cat("  anchor.py failed (status ", if (is.null(status)) 0 else status, "): anchor columns NA\n", sep = "")
    return(NULL)
  }
  utils::read.csv(text = out, na.strings = "NA", stringsAsFactors = FALSE)
}

# Compares conv3d's output with both torch paths on reduced sizes: N = 1, D, H, W cut
# to at most 8, 9, 10 (distinct, so a swapped axis shows), channels kept; mednet_stem
# then has asymmetric 'same' pads on D and W (the F.pad path).
verify <- function(opt, shapes, threads) {
  dir <- tempfile("conv3d-verify-")
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE), add = TRUE)
  small <- shapes
  small$D <- pmin(small$D, 8L); small$H <- pmin(small$H, 9L); small$W <- pmin(small$W, 10L)
  small$N <- 1L
  utils::write.csv(small, file.path(dir, "shapes.csv"), row.names = FALSE, quote = FALSE)
  ours <- list()
  for (i in seq_len(nrow(small))) {
    r <- as.list(small[i, ])
    dat <- make_data(r, seed = 100L + i)
    writeBin(as.double(dat$x), file.path(dir, paste0(r$name, "_x.bin")), endian = "little")
    writeBin(as.double(dat$kernel), file.path(dir, paste0(r$name, "_k.bin")), endian = "little")
    writeBin(as.double(dat$bias), file.path(dir, paste0(r$name, "_b.bin")), endian = "little")
    ours[[r$name]] <- make_layer(r, dat, opt$dtype)(dat$x)
  }
  out <- suppressWarnings(system2(opt$python, c(
    shQuote(file.path(bench_dir(), "anchor.py")), "--verify", shQuote(dir),
    "--dtype", opt$dtype, "--threads", threads
  ), stdout = TRUE, stderr = ""))
  tol <- if (opt$dtype == "float32") 1e-5 else 1e-12
  read_out <- function(name, path) {
    f <- file.path(dir, paste0(name, "_", path, ".bin"))
    if (!file.exists(f)) return(NULL)
    y <- ours[[name]]
    v <- readBin(f, "double", n = length(y), endian = "little")
    if (length(v) != length(y)) return(NA)
    max(abs(v - as.vector(y))) / max(abs(y))
  }
  rows <- lapply(small$name, function(nm) {
    e <- c(torch = read_out(nm, "torch") %||% NA, mkldnn = read_out(nm, "mkldnn") %||% NA)
    ok <- all(is.na(e) | e <= tol) && any(!is.na(e))
    data.frame(shape = nm, dims = paste(dim(ours[[nm]]), collapse = "x"),
               torch_relerr = fmt(e[["torch"]], 1, "e"), mkldnn_relerr = fmt(e[["mkldnn"]], 1, "e"),
               result = if (ok) "ok" else "MISMATCH")
  })
  cat(sprintf("Verification against torch (%s, reduced sizes, error = max|diff| / max|y|, tolerance %g):\n",
              opt$dtype, tol))
  tab <- do.call(rbind, rows)
  print_table(tab)
  invisible(all(tab$result == "ok"))
}

# One round of conv3d timings over the shapes: a data frame, one row per shape
# (%peak and the anchor columns are filled in by main()).
time_shapes <- function(opt, shapes, esz, bw) {
  res <- vector("list", nrow(shapes))
  for (i in seq_len(nrow(shapes))) {
    r <- as.list(shapes[i, ])
    dat <- make_data(r)
    layer <- make_layer(r, dat, opt$dtype)
    tm <- time_layer(layer, dat$x, opt$warmup, opt$runs, opt$budget)
    cg <- r$cin %/% r$groups
    od <- tm$out_dim
    flop <- 2 * od[1] * od[2] * od[3] * od[4] * r$cout * cg * r$kd * r$kh * r$kw
    n_in <- length(dat$x); n_out <- prod(od)
    bytes <- (n_in + n_out) * (esz + 8)
    res[[i]] <- data.frame(
      shape = r$name, gflop = flop / 1e9, runs = tm$runs, ms = tm$ms,
      gflops = flop / 1e9 / (tm$ms / 1e3), pct_peak = NA_real_,
      kernel_ms = tm$kernel_ms, e2e_kernel = tm$ms / tm$kernel_ms,
      pack_ms = tm$pack_ms, unpack_ms = tm$unpack_ms, faults = tm$faults,
      mbytes = bytes / 1e6, traffic_ms = bytes / (bw[["inplace"]] * 1e9) * 1e3,
      traffic_fresh_ms = bytes / (bw[["fresh"]] * 1e9) * 1e3,
      torch_ms = NA_real_, mkldnn_ms = NA_real_, anchor_ms = NA_real_, anchor_path = NA_character_,
      anchor_faults = NA_real_, ratio = NA_real_, torch_runs = NA_real_, mkldnn_runs = NA_real_,
      stringsAsFactors = FALSE
    )
    message(sprintf("  %-14s %9.2f ms  %7.1f GFLOP/s", r$name, tm$ms, res[[i]]$gflops))
    rm(dat, layer)
    invisible(gc())
  }
  do.call(rbind, res)
}

# The anchor's rounds combined: per shape, each path's fastest call (its runs
# and faults from that round).
best_anchor <- function(anchors) {
  a <- anchors[[1]]
  for (b in anchors[-1]) {
    m <- match(a$name, b$name)
    for (path in c("torch", "mkldnn")) {
      ms <- paste0(path, "_ms")
      if (!ms %in% names(a)) next
      better <- !is.na(b[[ms]][m]) & (is.na(a[[ms]]) | b[[ms]][m] < a[[ms]])
      for (col in intersect(paste0(path, c("_ms", "_runs", "_faults")), names(a)))
        a[[col]][better] <- b[[col]][m][better]
    }
  }
  a
}

`%||%` <- function(a, b) if (is.null(a)) b else a

main <- function() {
  opt <- parse_args(commandArgs(trailingOnly = TRUE))
  suppressPackageStartupMessages(library(conv3d))
  shapes_file <- file.path(bench_dir(), "shapes.csv")
  shapes <- utils::read.csv(shapes_file, stringsAsFactors = FALSE, strip.white = TRUE)
  shapes$padding <- tolower(shapes$padding)
  if (!is.null(opt$shapes)) {
    bad <- setdiff(opt$shapes, shapes$name)
    if (length(bad)) stop("unknown shape(s): ", paste(bad, collapse = ", "), call. = FALSE)
    shapes <- shapes[match(opt$shapes, shapes$name), ]
  }

  if (!is.null(opt$tier)) conv3d_cpu(opt$tier)
  conv3d_threads(opt$threads)
  threads <- conv3d_threads()
  if (threads != opt$threads) {
    cat(sprintf("note: %d threads requested, %d in force (OMP_THREAD_LIMIT / OMP_NUM_THREADS cap)\n",
                opt$threads, threads))
  }
  cpu <- conv3d_cpu()
  has_torch <- opt$anchor && python_has_torch(opt$python)

  if (opt$verify) {
    if (!python_has_torch(opt$python)) stop("--verify needs torch in ", opt$python, call. = FALSE)
    ok <- verify(opt, shapes, threads)
    quit(status = if (ok) 0 else 1)
  }

  model <- grep("^model name", readLines("/proc/cpuinfo", warn = FALSE), value = TRUE)
  model <- if (length(model)) sub("^model name\\s*:\\s*", "", model[1]) else "unknown"
  busy0 <- cpu_busy()
  cat(sprintf("conv3d %s forward benchmark, %s, %d thread%s, %s\n",
              utils::packageVersion("conv3d"), opt$dtype, threads, if (threads == 1) "" else "s",
              format(Sys.time(), "%Y-%m-%d %H:%M:%S")))
  cat(sprintf("CPU: %s (%d cores online); kernel tier: %s (best: %s)\n",
              model, parallel::detectCores(), cpu$kernel, cpu$best))
  # the FMA peak for 1 and 2 threads, and for the threads used (best of 3 each)
  peak_of <- function(t) max(vapply(1:3, function(i) conv3d:::peak_gflops(t, opt$dtype), 0))
  measure_peaks <- function() {
    p <- c(peak_of(1L), peak_of(2L))
    c(p, if (threads <= 2L) p[threads] else peak_of(threads))
  }
  peaks <- measure_peaks()
  peak <- peaks[3]
  cat(sprintf("Measured %s FMA peak: %.1f GFLOP/s (1 thread), %.1f GFLOP/s (2 threads)%s\n",
              opt$dtype, peaks[1], peaks[2],
              if (threads > 2L) sprintf(", %.1f GFLOP/s (%d threads)", peak, threads) else ""))
  cat(sprintf("Each timed call follows a garbage collection, outside the timed region: gc() for conv3d%s\n",
              if (!opt$anchor) "" else if (opt$anchor_gc) ", gc.collect() for the anchor"
              else ", none for the anchor (--anchor-no-gc: its calls back to back)"))
  bw <- copy_bandwidth()
  cat(sprintf(paste0("R copy bandwidth (256 MB, read + write): %.1f GB/s in place (x + 0 + 0 ...: the DRAM rate, ",
                     "used for traffic_ms);\n  %.1f GB/s into a fresh vector (y <- x + 0: first-touch page faults ",
                     "included)\n"), bw[["inplace"]], bw[["fresh"]]))
  cat(sprintf("Anchor: %s\n", if (!opt$anchor) "off (--no-anchor)" else if (has_torch)
    paste("PyTorch via", opt$python, "(run after conv3d's timings)") else
    paste("unavailable (", opt$python, " cannot import torch)", sep = "")))
  cat(sprintf("Timing: min of %d runs after %d warm-ups (fewer when %d runs exceed %g s)%s\n",
              opt$runs, opt$warmup, opt$runs, opt$budget,
              if (opt$rounds > 1L) sprintf(", best of %d rounds (conv3d, then the anchor, in each)", opt$rounds) else ""))
  cat(sprintf("Other load before the run: %s of the CPUs busy%s\n\n", paste0(fmt(busy0, 0), "%"),
              if (!is.na(busy0) && busy0 > 10) "  -- WARNING: the machine is busy, times will be off" else ""))

  esz <- if (opt$dtype == "float32") 4 else 8
  t_ours <- 0
  t_anchor <- if (has_torch) 0 else NA
  ours <- anchors <- list()
  for (round in seq_len(opt$rounds)) {
    if (opt$rounds > 1L) message(sprintf("round %d of %d", round, opt$rounds))
    t0 <- now()
    ours[[round]] <- time_shapes(opt, shapes, esz, bw)
    t_ours <- t_ours + now() - t0
    if (has_torch) {
      t0 <- now()
      anchors[[round]] <- run_anchor(opt, shapes_file, shapes$name, threads)
      t_anchor <- t_anchor + now() - t0
    }
  }
  # per shape, the conv3d round with the fastest call, and the anchor's fastest
  # call of each path over the rounds
  res <- do.call(rbind, lapply(seq_len(nrow(shapes)), function(i) {
    rows <- do.call(rbind, lapply(ours, function(r) r[i, ]))
    rows[which.min(rows$ms), ]
  }))
  if (opt$rounds > 1L) res$rounds <- opt$rounds

  # the peak again after the shapes: on a shared machine the other core can be
  # taken for a moment, and a low peak would inflate every %peak
  after <- measure_peaks()
  cat(sprintf("FMA peak measured again after the shapes: %.1f / %.1f GFLOP/s (1 / 2 threads); %%peak uses the larger\n",
              after[1], after[2]))
  peak <- max(peak, after[3])
  res$pct_peak <- 100 * res$gflops / peak

  anchors <- Filter(Negate(is.null), anchors)
  if (length(anchors)) {
    a <- best_anchor(anchors)
    m <- match(res$shape, a$name)
    res$torch_ms <- as.numeric(a$torch_ms[m])
    res$mkldnn_ms <- as.numeric(a$mkldnn_ms[m])
    if ("torch_runs" %in% names(a)) res$torch_runs <- as.numeric(a$torch_runs[m])
    if ("mkldnn_runs" %in% names(a)) res$mkldnn_runs <- as.numeric(a$mkldnn_runs[m])
    both <- cbind(res$torch_ms, res$mkldnn_ms)
    res$anchor_ms <- suppressWarnings(apply(both, 1, function(v) if (all(is.na(v))) NA else min(v, na.rm = TRUE)))
    res$anchor_path <- ifelse(is.na(res$anchor_ms), NA,
                              ifelse(!is.na(res$mkldnn_ms) & res$mkldnn_ms == res$anchor_ms, "onednn", "torch"))
    if (all(c("torch_faults", "mkldnn_faults") %in% names(a))) {
      res$anchor_faults <- ifelse(res$anchor_path %in% "onednn",
                                  as.numeric(a$mkldnn_faults[m]), as.numeric(a$torch_faults[m]))
    }
    res$ratio <- res$anchor_ms / res$ms
  }

  tab <- data.frame(
    shape = res$shape, GFLOP = fmt(res$gflop, 3), ms = fmt(res$ms, 2),
    "GFLOP/s" = fmt(res$gflops, 1), "%peak" = fmt(res$pct_peak, 1),
    kernel_ms = fmt(res$kernel_ms, 2), "e2e/kern" = fmt(res$e2e_kernel, 2),
    torch_ms = fmt(res$torch_ms, 2), onednn_ms = fmt(res$mkldnn_ms, 2),
    anchor_ms = fmt(res$anchor_ms, 2), "anchor/ours" = fmt(res$ratio, 2),
    faults = fmt(res$faults, 0), anchor_faults = fmt(res$anchor_faults, 0),
    check.names = FALSE, stringsAsFactors = FALSE
  )
  if (any(res$runs != opt$runs)) tab$runs <- as.character(res$runs)
  if (any(c(res$torch_runs, res$mkldnn_runs) != opt$runs, na.rm = TRUE)) {
    tab$anchor_runs <- paste0(fmt(res$torch_runs, 0), "/", fmt(res$mkldnn_runs, 0))
  }
  print_table(tab)
  ok <- !is.na(res$ratio)
  if (any(ok)) {
    gm <- exp(mean(log(res$ratio[ok])))
    cat(sprintf("\nGeometric mean of anchor_ms / ms over %d shape%s: %.2f  (> 1: conv3d faster)\n",
                sum(ok), if (sum(ok) == 1) "" else "s", gm))
    slower <- res$shape[ok & res$ratio < 1]
    if (length(slower)) cat("Slower than the anchor:", paste(slower, collapse = ", "), "\n")
  } else {
    cat("\nNo anchor ratios (anchor off or unavailable).\n")
  }

  mem <- res[res$shape %in% c("unet_stem", "x3d_depthwise"), ]
  if (nrow(mem)) {
    cat(sprintf(paste0("\nMemory-bound shapes: minimum traffic MB = input and output once in %s plus the R double ",
                       "input and output once;\ntraffic_ms at the in-place copy rate (%.1f GB/s), ",
                       "traffic_fresh_ms at the fresh-vector rate (%.1f GB/s):\n"),
                opt$dtype, bw[["inplace"]], bw[["fresh"]]))
    print_table(data.frame(
      shape = mem$shape, MB = fmt(mem$mbytes, 1), ms = fmt(mem$ms, 2),
      traffic_ms = fmt(mem$traffic_ms, 2), "ms/traffic" = fmt(mem$ms / mem$traffic_ms, 2),
      traffic_fresh_ms = fmt(mem$traffic_fresh_ms, 2),
      pack_ms = fmt(mem$pack_ms, 2), kernel_ms = fmt(mem$kernel_ms, 2), unpack_ms = fmt(mem$unpack_ms, 2),
      faults = fmt(mem$faults, 0), check.names = FALSE, stringsAsFactors = FALSE
    ))
  }
  busy1 <- cpu_busy()
  cat(sprintf("\nWall time: conv3d %.0f s, anchor %s; other load after the run: %s%% of the CPUs busy%s\n",
              t_ours, if (is.na(t_anchor)) "-" else sprintf("%.0f s", t_anchor), fmt(busy1, 0),
              if (!is.na(busy1) && busy1 > 10) "  -- WARNING: the machine is busy" else ""))

  if (!is.null(opt$csv)) {
    out <- cbind(res, dtype = opt$dtype, threads = threads, tier = cpu$kernel,
                 peak_gflops = peak, bw_fresh_gbs = bw[["fresh"]], bw_inplace_gbs = bw[["inplace"]])
    utils::write.csv(out, opt$csv, row.names = FALSE)
    cat("CSV written to", opt$csv, "\n")
  }
  invisible(res)
}

main()
