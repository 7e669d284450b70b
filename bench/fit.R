# Training benchmark: epochs of fit() on two small volumetric models from R,
# against the same models trained by PyTorch (bench/anchor_fit.py: autograd,
# Adam, the same batch size) in the same invocation. Each side's time per
# epoch is the fastest of epochs 2..N (the first builds and warms up).
#   Rscript bench/fit.R [--threads N] [--epochs 6] [--models classifier,segmenter]
#                       [--no-anchor]
# classifier: 16 volumes of 48^3, batches of 2, conv 16 - conv 16 - max pool -
#   conv 32 - global average - dense 1 (sigmoid), binary cross-entropy.
# segmenter: 8 volumes of 32^3, batches of 2, a one-level U-Net (conv 16 x 2,
#   max pool, conv 32, transposed conv 16 (2, stride 2), concatenation with
#   the skip, conv 16, 1x1x1 conv to a sigmoid map), voxel-wise binary
#   cross-entropy.
suppressPackageStartupMessages(library(conv3d))
args <- commandArgs(TRUE)
opt <- function(name, default) {
  i <- match(name, args)
  if (is.na(i)) default else args[i + 1L]
}
threads <- as.integer(opt("--threads", "2"))
epochs <- as.integer(opt("--epochs", "6"))
if (is.na(epochs) || epochs < 2L) stop("--epochs must be 2 or more", call. = FALSE)
models <- strsplit(opt("--models", "classifier,segmenter"), ",")[[1]]
anchor <- !"--no-anchor" %in% args
here <- if (file.exists("bench/fit.R")) "bench" else "."
source(file.path(here, "common.R")) # now(), minor_faults()
conv3d_threads(threads)
has_torch <- anchor && system2("/usr/bin/python3", c("-c", shQuote("import torch")),
  stdout = FALSE, stderr = FALSE) == 0

classifier <- function() {
  keras_model_sequential(input_shape = c(48, 48, 48, 1)) |>
    layer_conv_3d(filters = 16, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_conv_3d(filters = 16, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_max_pooling_3d(pool_size = 2) |>
    layer_conv_3d(filters = 32, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_global_average_pooling_3d() |>
    layer_dense(units = 1, activation = "sigmoid")
}

segmenter <- function() {
  input <- layer_input(shape = c(32, 32, 32, 1))
  skip <- input |>
    layer_conv_3d(filters = 16, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_conv_3d(filters = 16, kernel_size = 3, padding = "same", activation = "relu")
  up <- skip |>
    layer_max_pooling_3d(pool_size = 2) |>
    layer_conv_3d(filters = 32, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_conv_3d_transpose(filters = 16, kernel_size = 2, strides = 2)
  output <- layer_concatenate(list(up, skip)) |>
    layer_conv_3d(filters = 16, kernel_size = 3, padding = "same", activation = "relu") |>
    layer_conv_3d(filters = 1, kernel_size = 1, activation = "sigmoid")
  keras_model(input, output)
}

# Seconds of each epoch of fit(), and the page faults of all of them.
time_fit <- function(name) {
  set.seed(1)
  n <- if (name == "classifier") 16L else 8L
  side <- if (name == "classifier") 48L else 32L
  x <- array(runif(n * side^3), c(n, side, side, side, 1))
  y <- if (name == "classifier") sample(0:1, n, TRUE) else
    array(as.numeric(runif(length(x)) < 0.3), dim(x))
  model <- if (name == "classifier") classifier() else segmenter()
  compile(model, optimizer = "adam", loss = "binary_crossentropy")
  seconds <- numeric(epochs)
  f0 <- minor_faults()
  for (e in seq_len(epochs)) {
    t0 <- now()
    fit(model, x, y, batch_size = 2, epochs = 1, verbose = 0)
    seconds[e] <- now() - t0
  }
  list(seconds = seconds, faults = (minor_faults() - f0) / epochs)
}

cat(sprintf("conv3d %s, %s tier, %d threads, %d epochs (the fastest of 2..%d kept)\n",
  utils::packageVersion("conv3d"), conv3d_cpu()$kernel, threads, epochs, epochs))
ours <- lapply(stats::setNames(models, models), time_fit)
theirs <- NULL
if (has_torch) {
  out <- system2("/usr/bin/python3", c(file.path(here, "anchor_fit.py"), "--threads", threads,
    "--epochs", epochs, "--models", paste(models, collapse = ",")), stdout = TRUE)
  theirs <- utils::read.csv(text = out)
}
rows <- lapply(models, function(m) {
  s <- ours[[m]]$seconds
  t <- if (!is.null(theirs)) theirs$seconds[theirs$model == m] else NA_real_
  data.frame(model = m, conv3d_s = min(s[-1]), conv3d_epochs = paste(sprintf("%.2f", s), collapse = " "),
    faults_per_epoch = round(ours[[m]]$faults), torch_s = if (has_torch) min(t[-1]) else NA,
    torch_epochs = if (has_torch) paste(sprintf("%.2f", t), collapse = " ") else "",
    torch_over_conv3d = if (has_torch) min(t[-1]) / min(s[-1]) else NA)
})
tab <- do.call(rbind, rows)
tab$conv3d_s <- sprintf("%.3f", tab$conv3d_s)
tab$torch_s <- sprintf("%.3f", tab$torch_s)
tab$torch_over_conv3d <- sprintf("%.2f", tab$torch_over_conv3d)
print(tab, row.names = FALSE)
