# layer_concatenate(), the element-wise merges (add, subtract, multiply, average,
# maximum, minimum) and layer_upsampling_3d(): forward passes against
# element-by-element references, backward passes against finite
# differences, and training through a small U-Net whose gradient is checked
# against the loss's finite differences.

test_that("concatenate joins along the named axis, as R keras counts axes", {
  set.seed(71)
  a <- array(rnorm(2 * 3 * 2 * 2 * 4), c(2, 3, 2, 2, 4))
  b <- array(rnorm(2 * 3 * 2 * 2 * 1), c(2, 3, 2, 2, 1))
  y <- layer_concatenate(list(a, b), dtype = "float64")
  expect_identical(dim(y), c(2L, 3L, 2L, 2L, 5L))
  for (i in 1:2) for (j in 1:3) for (k in 1:2) for (l in 1:2) {
    expect_identical(y[i, j, k, l, ], c(a[i, j, k, l, ], b[i, j, k, l, ]))
  }
  # axis 1 (Keras's count from 0, the samples' axis, as R keras 2 passes it)
  # and its negative twin -4
  c2 <- array(rnorm(2 * 1 * 2 * 2 * 4), c(2, 1, 2, 2, 4))
  y2 <- layer_concatenate(list(a, c2, a), axis = 1, dtype = "float64")
  expect_identical(dim(y2), c(2L, 7L, 2L, 2L, 4L))
  expect_identical(y2[, 4, , , , drop = FALSE], c2)
  expect_identical(y2[, 5:7, , , , drop = FALSE], a)
  expect_identical(layer_concatenate(list(a, c2, a), axis = -4, dtype = "float64"), y2)
  # float32 layers round
  expect_identical(layer_concatenate(list(a, b)), conv3d:::round_to_dtype(y, "float32"))
  # symbolic: unknown along the axis if any is; elsewhere the first input's, as Keras
  i1 <- layer_input(c(NA, 4, 4, 2))
  i2 <- layer_input(c(3, 4, 4, 5))
  expect_identical(dim(layer_concatenate(list(i1, i2))), c(NA, NA, 4L, 4L, 7L))
  expect_identical(dim(layer_concatenate(list(i2, i1))), c(NA, 3L, 4L, 4L, 7L))
  expect_identical(dim(layer_concatenate(list(i1, i1), axis = 1)), c(NA, NA, 4L, 4L, 2L))
  expect_identical(dim(layer_concatenate(list(a, a), axis = 0)), c(4L, 3L, 2L, 2L, 4L))
})

test_that("add sums its inputs; upsampling repeats each voxel", {
  set.seed(72)
  a <- array(rnorm(24), c(1, 2, 3, 4, 1))
  b <- array(rnorm(24), c(1, 2, 3, 4, 1))
  expect_identical(layer_add(list(a, b, a), dtype = "float64"), a + b + a)
  # lengths of 1 broadcast, as Keras's element-wise merges do
  one <- array(rnorm(4), c(1, 1, 1, 4, 1))
  expect_identical(layer_add(list(a, one), dtype = "float64"),
    a + array(rep(one, each = 6), c(1, 2, 3, 4, 1)))
  expect_identical(dim(layer_add(list(layer_input(c(NA, 3, 1, 2)), layer_input(c(4, 1, 5, 2))))),
    c(NA, NA, 3L, 5L, 2L))
  expect_identical(dim(layer_upsampling_3d(array(1, c(0, 2, 2, 2, 1)))), c(0L, 4L, 4L, 4L, 1L))
  x <- array(rnorm(2 * 2 * 3 * 1 * 2), c(2, 2, 3, 1, 2))
  for (format in c("channels_last", "channels_first")) {
    y <- layer_upsampling_3d(x, size = c(3, 1, 2), data_format = format, dtype = "float64")
    expect_identical(dim(y), if (format == "channels_last") c(2L, 6L, 3L, 2L, 2L) else
      c(2L, 2L, 9L, 1L, 4L))
    for (i in seq_len(dim(y)[1])) for (j in seq_len(dim(y)[2])) for (k in seq_len(dim(y)[3]))
      for (l in seq_len(dim(y)[4])) for (m in seq_len(dim(y)[5])) {
        src <- if (format == "channels_last") {
          c(i, ceiling(j / 3), k, ceiling(l / 2), m)
        } else {
          c(i, j, ceiling(k / 3), l, ceiling(m / 2))
        }
        expect_identical(y[i, j, k, l, m], x[matrix(src, 1)])
      }
  }
  expect_identical(dim(layer_upsampling_3d(layer_input(c(NA, 4, 4, 1)))), c(NA, NA, 8L, 8L, 1L))
})

test_that("the backward passes match finite differences", {
  set.seed(74)
  a <- array(rnorm(2 * 2 * 2 * 2 * 3), c(2, 2, 2, 2, 3))
  b <- array(rnorm(2 * 2 * 2 * 2 * 2), c(2, 2, 2, 2, 2))
  expect_input_gradients(layer_concatenate(dtype = "float64"), list(a, b))
  expect_input_gradients(layer_concatenate(axis = 2, dtype = "float64"), list(a, a[, , 1, , , drop = FALSE] + 0))
  expect_input_gradients(layer_concatenate(axis = 0, dtype = "float64"), list(a, a[1, , , , , drop = FALSE] + 0))
  expect_error(conv3d:::layer_backward(layer_concatenate(dtype = "float64"), list(a, b), 1:3),
    "`dy` must hold 80 values", class = "conv3d_error_shape")
  expect_input_gradients(layer_add(dtype = "float64"), list(a, a * 2, a + 1))
  expect_input_gradients(layer_add(dtype = "float64"), list(a, a[, 1, , 2, , drop = FALSE] + 0))
  x <- array(rnorm(2 * 2 * 3 * 2 * 2), c(2, 2, 3, 2, 2))
  expect_input_gradients(layer_upsampling_3d(size = c(2, 3, 1), dtype = "float64"), list(x), merge = FALSE)
  expect_input_gradients(layer_upsampling_3d(size = 2, data_format = "channels_first",
    dtype = "float64"), list(x), merge = FALSE)
})

tiny_unet <- function() {
  input <- layer_input(c(4, 4, 4, 1), dtype = "float64")
  c1 <- layer_conv_3d(input, 3, 3, padding = "same", activation = "tanh", dtype = "float64", name = "c1")
  down <- layer_average_pooling_3d(c1, 2, dtype = "float64")
  c2 <- layer_conv_3d(down, 2, 3, padding = "same", activation = "tanh", dtype = "float64")
  up <- layer_upsampling_3d(c2, 2, dtype = "float64")
  joined <- layer_concatenate(list(c1, up, input), dtype = "float64") # a model input joined too
  mixed <- layer_add(list(layer_conv_3d(joined, 3, 1, dtype = "float64"), c1), dtype = "float64")
  keras_model(input, layer_conv_3d(mixed, 2, 1, activation = "softmax", dtype = "float64"))
}

test_that("fit() takes the loss's gradient through merges and upsampling", {
  set.seed(75)
  model <- tiny_unet()
  x <- array(rnorm(3 * 64), c(3, 4, 4, 4, 1))
  y <- array(sample(0:1, 3 * 64, TRUE), c(3, 4, 4, 4))
  compile(model, optimizer_sgd(1), "sparse_categorical_crossentropy")
  c1 <- get_layer(model, "c1")
  before <- get_weights(c1)
  loss_at <- function(w) {
    set_weights(c1, list(w, before[[2]]))
    evaluate(model, x, y, batch_size = 3)[["loss"]]
  }
  eps <- 1e-6
  numeric <- vapply(c(1, 17, 40, 81), function(i) {
    up <- before[[1]]
    down <- before[[1]]
    up[i] <- up[i] + eps
    down[i] <- down[i] - eps
    (loss_at(up) - loss_at(down)) / (2 * eps)
  }, 0)
  set_weights(c1, before)
  fit(model, x, y, batch_size = 3, epochs = 1, shuffle = FALSE, verbose = 0)
  step <- before[[1]] - get_weights(c1)[[1]] # SGD at rate 1: the gradient
  expect_equal(step[c(1, 17, 40, 81)], numeric, tolerance = 1e-6)
})

test_that("a model with several inputs is called on a list of tensors", {
  i1 <- layer_input(c(2, 2, 2, 1), name = "left")
  i2 <- layer_input(c(2, 2, 2, 3), name = "right")
  model <- keras_model(list(i1, i2), layer_concatenate(list(i1, i2)), name = "pair")
  out <- model(list(right = layer_input(c(2, 2, 2, 3)), left = layer_input(c(2, 2, 2, 1))))
  expect_identical(dim(out), c(NA, 2L, 2L, 2L, 4L))
  expect_snapshot(error = TRUE, model(list(layer_input(c(2, 2, 2, 2)), layer_input(c(2, 2, 2, 3)))))
  outer <- keras_model(list(i1, i2), model(list(i1, i2)))
  x <- list(array(1, c(1, 2, 2, 2, 1)), array(2, c(1, 2, 2, 2, 3)))
  expect_identical(predict(outer, x), predict(model, x))
})

test_that("a branched model lists its layers in Keras's order, by depth", {
  input <- layer_input(c(4, 4, 4, 1), name = "in")
  short <- layer_conv_3d(input, 2, 1, name = "short")
  deep <- input |> layer_conv_3d(2, 1, name = "b1") |> layer_conv_3d(2, 1, name = "b2") |>
    layer_conv_3d(2, 1, name = "b3")
  model <- keras_model(input, layer_concatenate(list(short, deep), name = "cat"))
  # depths from the output: cat 0, short and b3 1, b2 2, b1 3, in 4; ties as met
  # from the output (short before b3)
  expect_identical(vapply(model$layers, function(l) l$name, ""),
    c("in", "b1", "b2", "short", "b3", "cat"))
  expect_identical(get_weights(model)[[5]], get_weights(get_layer(model, "short"))[[1]]) # after b1, b2
  # an input the outputs do not read comes first among depth 0
  unused <- layer_input(c(1), name = "unused")
  two <- keras_model(list(input, unused), short)
  expect_identical(vapply(two$layers, function(l) l$name, ""), c("in", "unused", "short"))
})

test_that("a small U-Net learns a voxel-wise segmentation", {
  set.seed(76)
  input <- layer_input(c(8, 8, 8, 1), dtype = "float64")
  c1 <- layer_conv_3d(input, 4, 3, padding = "same", activation = "relu", dtype = "float64")
  c2 <- layer_max_pooling_3d(c1, 2, dtype = "float64") |>
    layer_conv_3d(8, 3, padding = "same", activation = "relu", dtype = "float64")
  joined <- layer_concatenate(list(c1, layer_upsampling_3d(c2, 2, dtype = "float64")),
    dtype = "float64")
  model <- keras_model(input, layer_conv_3d(joined, 2, 1, activation = "softmax", dtype = "float64"))
  x <- array(rnorm(20 * 512), c(20, 8, 8, 8, 1))
  y <- array(as.integer(x[, , , , 1] > 0.3), c(20, 8, 8, 8))
  compile(model, optimizer_adam(0.02), "sparse_categorical_crossentropy", metrics = "accuracy")
  h <- fit(model, x, y, epochs = 12, batch_size = 5, verbose = 0)
  expect_gt(h$metrics$accuracy[12], 0.95)
})

test_that("merge and upsampling errors are worded", {
  a <- array(0, c(1, 2, 2, 2, 1))
  input <- layer_input(c(2, 2, 2, 1))
  expect_snapshot(error = TRUE, {
    layer_concatenate(list(a), name = "cat")
    layer_concatenate(list(a, array(0, c(1, 3, 2, 2, 1))), name = "cat")
    layer_concatenate(list(a, a), axis = 1.5)
    layer_concatenate(list(a, a), axis = 6, name = "cat")
    layer_add(input, name = "sum")
    layer_add(list(input, a), name = "sum")
    layer_add(list(a, array(0, c(1, 2, 2, 2, 2))), name = "sum")
    layer_add(a, name = "sum")
    layer_add(list(a, "b"), name = "sum")
    layer_dense(list(input, input), 2, name = "dense")
    keras_model_sequential(input_shape = c(2, 2, 2, 1)) |> layer_add(name = "sum")
    layer_upsampling_3d(a, size = c(2, 0, 2))
    layer_upsampling_3d(array(0, c(2, 2)), name = "up")
  })
})

test_that("subtract, multiply, average, maximum and minimum combine as Keras's merges", {
  set.seed(76)
  a <- array(rnorm(24), c(1, 2, 3, 4, 1))
  b <- array(rnorm(24), c(1, 2, 3, 4, 1))
  one <- array(rnorm(4), c(1, 1, 1, 4, 1))
  wide <- array(rep(one, each = 6), c(1, 2, 3, 4, 1))
  f64 <- "float64"
  expect_identical(layer_subtract(list(a, b), dtype = f64), a - b)
  expect_identical(layer_multiply(list(a, b, one), dtype = f64), a * b * wide)
  expect_identical(layer_average(list(a, b, one), dtype = f64), (a + b + wide) / 3)
  expect_identical(layer_maximum(list(a, b, one), dtype = f64), pmax(a, b, wide))
  expect_identical(layer_minimum(list(a, one), dtype = f64), pmin(a, wide))
  # float32: each step of the fold rounded, as Keras multiplies in float32
  f32 <- function(v) conv3d:::round_to_dtype(v, "float32")
  x <- lapply(list(a, b, a * 3), f32)
  expect_identical(layer_multiply(x), f32(f32(x[[1]] * x[[2]]) * x[[3]]))
  expect_identical(layer_average(x), f32(f32(f32(x[[1]] + x[[2]]) + x[[3]]) / 3))
  expect_identical(dim(layer_multiply(list(layer_input(c(NA, 3, 1, 2)), layer_input(c(4, 1, 5, 1))))),
    c(NA, NA, 3L, 5L, 2L))
  expect_error(layer_subtract(list(a, b, a)), "must be called on exactly 2 inputs, not 3",
    class = "conv3d_error_shape")
  expect_error(layer_multiply(list(a, array(0, c(1, 2, 3, 3, 1)))), "must have one shape",
    class = "conv3d_error_shape")
  expect_match(layer_multiply()$name, "^multiply(_[0-9]+)?$")
})

test_that("their backward passes match finite differences; ties go to the first input", {
  set.seed(77)
  a <- array(rnorm(2 * 2 * 2 * 2 * 3), c(2, 2, 2, 2, 3))
  b <- a + sample(c(-1, 1), length(a), TRUE) * runif(length(a), 0.1, 1) # no ties with a
  small <- array(rnorm(6), c(2, 1, 1, 1, 3)) * 5 # broadcast along the volume
  f64 <- "float64"
  expect_input_gradients(layer_subtract(dtype = f64), list(a, b))
  expect_input_gradients(layer_multiply(dtype = f64), list(a, b, a + 1))
  expect_input_gradients(layer_multiply(dtype = f64), list(a, small))
  expect_input_gradients(layer_average(dtype = f64), list(a, b, small))
  expect_input_gradients(layer_maximum(dtype = f64), list(a, b))
  expect_input_gradients(layer_minimum(dtype = f64), list(a, b, b + 0.5))
  # tf.maximum's gradient goes to its first argument on ties
  tie <- array(c(1, 2, 3, 4), c(1, 1, 1, 1, 4))
  other <- array(c(1, 5, 3, 0), c(1, 1, 1, 1, 4))
  dy <- array(10, dim(tie))
  g <- conv3d:::layer_backward(layer_maximum(dtype = f64), list(tie, other, tie), dy)$input
  expect_identical(lapply(g, as.vector), list(c(10, 0, 10, 10), c(0, 10, 0, 0), c(0, 0, 0, 0)))
  g <- conv3d:::layer_backward(layer_minimum(dtype = f64), list(tie, other), dy)$input
  expect_identical(lapply(g, as.vector), list(c(10, 10, 10, 0), c(0, 0, 0, 10)))
})

test_that("an attention gate trains through layer_multiply()", {
  set.seed(78)
  input <- layer_input(c(4, 4, 4, 2), dtype = "float64")
  features <- layer_conv_3d(input, 3, 3, padding = "same", dtype = "float64")
  gate <- layer_conv_3d(input, 1, 1, activation = "sigmoid", dtype = "float64")
  gated <- layer_multiply(list(features, gate), dtype = "float64")
  model <- keras_model(input, layer_conv_3d(gated, 1, 1, dtype = "float64"))
  x <- array(rnorm(6 * 128), c(6, 4, 4, 4, 2))
  y <- array(x[, , , , 1] * (x[, , , , 2] > 0), c(6, 4, 4, 4, 1))
  compile(model, optimizer_adam(0.02), "mse")
  history <- fit(model, x, y, epochs = 40, batch_size = 6, verbose = 0)
  expect_lt(tail(history$metrics$loss, 1), history$metrics$loss[1] / 2)
})

test_that("element-wise merges raise a lower rank as Keras, and check weights and batch_size", {
  set.seed(79)
  v <- array(rnorm(2 * 2 * 2 * 2 * 3), c(2, 2, 2, 2, 3))
  s <- array(rnorm(6), c(2, 3)) # (batch, channels): one number per sample and channel
  scaled <- layer_multiply(list(v, s), dtype = "float64")
  expect_identical(scaled, v * array(rep(s, each = 1), c(2, 1, 1, 1, 3))[, rep(1, 2), rep(1, 2), rep(1, 2), , drop = FALSE])
  expect_identical(dim(layer_add(list(layer_input(c(4, 4, 4, 3)), layer_input(3)))),
    c(NA, 4L, 4L, 4L, 3L))
  expect_input_gradients(layer_multiply(dtype = "float64"), list(v, s))
  expect_error(layer_concatenate(list(v, s)), "must have one rank", class = "conv3d_error_shape")
  expect_error(layer_add(list(v, v), weights = list(array(1, 3))), "has no weights",
    class = "conv3d_error_weights")
  expect_error(layer_add(list(v, v), batch_size = "x"), "`batch_size` must be a positive whole number")
})

test_that("maximum's gradient passes NaN comparisons on; multiply's rounds each step", {
  nan <- list(array(c(NaN, 1, 3), c(3, 1)), array(c(1, NaN, 2), c(3, 1)))
  g <- conv3d:::layer_backward(layer_maximum(dtype = "float64"), nan, array(1, c(3, 1)))$input
  # tf.maximum(x, y): x's where x >= y, else y's (a NaN comparison is false)
  expect_identical(lapply(g, as.vector), list(c(0, 0, 1), c(1, 1, 0)))
  f32 <- function(v) conv3d:::round_to_dtype(v, "float32")
  set.seed(80)
  x <- lapply(1:3, function(i) f32(array(rnorm(50), c(50, 1))))
  dy <- f32(array(rnorm(50), c(50, 1)))
  g <- conv3d:::layer_backward(layer_multiply(), x, dy)$input
  # TensorFlow's chain (a * b) * c, differentiated op by op in float32
  expect_identical(g[[3]], f32(dy * f32(x[[1]] * x[[2]])))
  expect_identical(g[[1]], f32(f32(dy * x[[3]]) * x[[2]]))
})
