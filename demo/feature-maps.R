## Feature maps of a small 3-D convolutional model on a synthetic volume.
##
## Builds a noisy sphere in a 32^3 grid, runs a three-layer conv3d model
## (channels_last, "same" padding, ReLU, random untrained weights), prints the
## model, the output shape and per-channel statistics, and writes
## conv3d-demo.png to the current working directory: the input's middle slice
## beside feature maps of the first and of the last layer.

library(conv3d)
set.seed(42)

## One volume as a 5-D array (batch, depth, height, width, channels): a sphere
## of radius 10 (value 1, background 0) plus Gaussian noise.
n <- 32
grid <- seq_len(n) - (n + 1) / 2                 # voxel centres, -15.5 ... 15.5
radius <- sqrt(outer(outer(grid^2, grid^2, "+"), grid^2, "+"))
x <- array((radius <= 10) + rnorm(n^3, sd = 0.2), dim = c(1, n, n, n, 1))

## Three 3x3x3 convolutions; "same" padding keeps the 32^3 grid.
model <- keras_model_sequential(input_shape = c(n, n, n, 1), name = "feature_maps")
model |>
  layer_conv_3d(filters = 8, kernel_size = 3, padding = "same", activation = "relu",
                name = "conv_1") |>
  layer_conv_3d(filters = 8, kernel_size = 3, padding = "same", activation = "relu",
                name = "conv_2") |>
  layer_conv_3d(filters = 4, kernel_size = 3, padding = "same", activation = "relu",
                name = "conv_3")
summary(model)

y <- predict(model, x)
first <- get_layer(model, "conv_1")(x)           # the first layer's feature maps
cat(sprintf("\nInput shape:  (%s)\n", paste(dim(x), collapse = ", ")))
cat(sprintf("Output shape: (%s)\n\n", paste(dim(y), collapse = ", ")))

## Statistics of each output channel (feature map of the last layer).
channel_stats <- data.frame(
  channel = seq_len(dim(y)[5]),
  mean = apply(y, 5, mean),
  sd = apply(y, 5, stats::sd),
  min = apply(y, 5, min),
  max = apply(y, 5, max),
  zero = apply(y, 5, function(v) mean(v == 0))
)
cat("Output feature maps (zero: fraction of voxels the ReLU set to 0):\n")
print(format(channel_stats, digits = 3), row.names = FALSE)

## Middle slice (depth 16): the input beside four maps of conv_1 (top row)
## and the four output maps of conv_3 (bottom row).
file <- "conv3d-demo.png"
grDevices::png(file, width = 1500, height = 640, res = 110)
graphics::par(mfrow = c(2, 5), mar = c(0.5, 0.5, 2, 0.5))
show_slice <- function(z, main) {
  graphics::image(z, col = grDevices::hcl.colors(64, "viridis"), asp = 1, axes = FALSE,
                  main = main, useRaster = TRUE)
}
mid <- n / 2
show_slice(x[1, mid, , , 1], "input, depth 16")
for (k in 1:4) show_slice(first[1, mid, , , k], sprintf("conv_1, map %d", k))
show_slice(x[1, mid, , , 1], "input, depth 16")
for (k in 1:4) show_slice(y[1, mid, , , k], sprintf("conv_3 (output), map %d", k))
invisible(grDevices::dev.off())
cat(sprintf("\nWrote %s\n", normalizePath(file)))
