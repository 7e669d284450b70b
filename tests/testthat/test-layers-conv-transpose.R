# layer_conv_3d_transpose(): outputs against the naive scatter reference
# (helper-reference.R), Keras's output shapes and weight layout, gradients
# against finite differences, training, and its errors.

random_transpose_config <- function() {
  dilated <- runif(1) < 0.25
  strides <- if (dilated) 1 else sample(1:3, 3, replace = TRUE)
  kernel <- sample(1:4, 3, replace = TRUE)
  padding <- sample(c("valid", "same"), 1)
  output_padding <- if (runif(1) < 0.4) {
    op <- vapply(strides, function(s) sample(0:(s - 1), 1), 1)
    # 'same' with an even kernel needs an output padding of at least 1
    if (padding == "same") op <- ifelse(kernel %% 2 == 0 & op == 0, 1, op)
    if (all(op < strides)) op
  }
  list(
    n = sample(1:2, 1), dims = sample(1:4, 3, replace = TRUE), cin = sample(1:4, 1),
    args = list(filters = sample(1:4, 1), kernel_size = kernel, strides = strides,
      padding = padding, output_padding = output_padding,
      dilation_rate = if (dilated) sample(1:2, 3, replace = TRUE) else 1,
      data_format = sample(c("channels_last", "channels_first"), 1),
      use_bias = runif(1) < 0.7,
      activation = sample(list(NULL, "relu", "sigmoid", "tanh", "softmax", "elu", "gelu"), 1)[[1]])
  )
}

# x, kernel and bias for a configuration, and its layer
transpose_case <- function(cfg, dtype = "float64") {
  a <- cfg$args
  xdims <- if (a$data_format == "channels_last") c(cfg$n, cfg$dims, cfg$cin) else
    c(cfg$n, cfg$cin, cfg$dims)
  x <- array(rnorm(prod(xdims)), xdims)
  kernel <- array(rnorm(prod(a$kernel_size) * a$filters * cfg$cin) * 0.5,
    c(a$kernel_size, a$filters, cfg$cin))
  bias <- if (a$use_bias) rnorm(a$filters) * 0.1
  weights <- if (a$use_bias) list(kernel, bias) else list(kernel)
  layer <- do.call(layer_conv_3d_transpose, c(a, list(dtype = dtype, weights = weights)))
  list(x = x, kernel = kernel, bias = bias, weights = weights, layer = layer)
}

describe_config <- function(a) {
  paste(names(a), vapply(a, function(v) paste(format(v), collapse = ","), ""), sep = "=",
    collapse = " ")
}

test_that("outputs match the naive reference on 40 random configurations, both dtypes", {
  set.seed(2101)
  for (case in seq_len(40)) {
    cfg <- random_transpose_config()
    a <- cfg$args
    for (dtype in c("float64", "float32")) {
      made <- transpose_case(cfg, dtype)
      expected <- reference_conv3d_transpose(made$x, made$kernel, made$bias, a$strides,
        a$padding, a$output_padding, a$dilation_rate, a$data_format, a$activation)
      got <- made$layer(made$x)
      info <- paste("case", case, dtype, describe_config(a))
      expect_identical(dim(got), dim(expected), info = info)
      expect_equal(got, expected, tolerance = if (dtype == "float64") 1e-12 else 1e-5, info = info)
      if (dtype == "float32") expect_identical(got, conv3d:::round_to_dtype(got, "float32"), info = info)
    }
  }
})

test_that("larger layers match the reference on every tier with 1 and 2 threads", {
  local_tier_and_threads()
  set.seed(2102)
  cases <- list(
    list(filters = 16, kernel_size = 2, strides = 2, padding = "valid"), # non-overlapping: one GEMM
    list(filters = 20, kernel_size = 3, strides = 2, padding = "same", output_padding = 1),
    list(filters = 17, kernel_size = c(3, 2, 3), strides = c(1, 2, 2), padding = "same",
      data_format = "channels_first"),
    list(filters = 16, kernel_size = 3, padding = "same", dilation_rate = 2)
  )
  for (a in cases) {
    cin <- 18
    first <- identical(a$data_format, "channels_first")
    xdims <- if (first) c(2, cin, 5, 6, 4) else c(2, 5, 6, 4, cin)
    x <- array(rnorm(prod(xdims)), xdims)
    kernel <- array(rnorm(prod(rep_len(a$kernel_size, 3)) * a$filters * cin) * 0.2,
      c(rep_len(a$kernel_size, 3), a$filters, cin))
    bias <- rnorm(a$filters)
    expected <- reference_conv3d_transpose(x, kernel, bias, a$strides %||% 1, a$padding,
      a$output_padding, a$dilation_rate %||% 1, a$data_format %||% "channels_last")
    for (dtype in c("float64", "float32")) {
      layer <- do.call(layer_conv_3d_transpose, c(a, list(weights = list(kernel, bias),
        dtype = dtype)))
      expect_every_tier(function() layer(x), expected,
        tolerance = if (dtype == "float64") 1e-12 else 1e-5,
        info = paste(dtype, describe_config(a)))
    }
  }
})

test_that("output shapes follow Keras's deconv_output_length, unknown lengths included", {
  shape_of <- function(...) dim(layer_conv_3d_transpose(layer_input(c(10, 8, 12, 128)), ...))
  # the example of Keras's documentation
  expect_identical(shape_of(32, 2, 2, activation = "relu"), c(NA, 20L, 16L, 24L, 32L))
  expect_identical(shape_of(4, 3), c(NA, 12L, 10L, 14L, 4L))
  expect_identical(shape_of(4, 3, strides = 2, padding = "same"), c(NA, 20L, 16L, 24L, 4L))
  expect_identical(shape_of(4, 5, strides = 2), c(NA, 23L, 19L, 27L, 4L))
  expect_identical(shape_of(4, 1, strides = 3), c(NA, 30L, 24L, 36L, 4L))
  expect_identical(shape_of(4, 3, strides = 2, padding = "same", output_padding = c(0, 1, 1)),
    c(NA, 19L, 16L, 24L, 4L))
  expect_identical(shape_of(4, 3, strides = 2, output_padding = 1), c(NA, 22L, 18L, 26L, 4L))
  expect_identical(shape_of(4, 3, dilation_rate = c(1, 2, 3)), c(NA, 12L, 12L, 18L, 4L))
  expect_identical(dim(layer_conv_3d_transpose(layer_input(c(NA, 4, NA, 2)), 3, 2, strides = 2)),
    c(NA, NA, 8L, NA, 3L))
  first <- layer_conv_3d_transpose(layer_input(c(2, 5, 6, 7)), 3, 2, strides = c(1, 2, 3),
    data_format = "channels_first")
  expect_identical(dim(first), c(NA, 3L, 6L, 12L, 21L))
})

test_that("the kernel is (k, filters, channels), initialised with Keras's fans", {
  set.seed(2103)
  layer <- layer_conv_3d_transpose(filters = 2, kernel_size = 3, kernel_initializer = "he_uniform")
  y <- layer(array(0, c(1, 2, 2, 2, 50)))
  w <- get_weights(layer)
  expect_identical(dim(w[[1]]), c(3L, 3L, 3L, 2L, 50L))
  expect_length(w[[2]], 2)
  expect_identical(layer$count_params(), 3 * 3 * 3 * 2 * 50 + 2)
  # fan_in is the kernel's second-last length times the window: 2 x 27
  limit <- sqrt(6 / (2 * 27))
  expect_lte(max(abs(w[[1]])), limit)
  expect_gt(max(abs(w[[1]])), 0.95 * limit)
  expect_identical(dim(y), c(1L, 4L, 4L, 4L, 2L))
  expect_true(all(y == 0)) # zeros in, the zero bias out
})

test_that("gradients match finite differences on 30 random configurations", {
  set.seed(2104)
  for (case in seq_len(30)) {
    cfg <- random_transpose_config()
    made <- transpose_case(cfg)
    layer <- made$layer
    x <- made$x
    y <- layer(x)
    r <- array(rnorm(length(y)), dim(y))
    g <- conv3d:::layer_backward(layer, x, r)
    loss <- function(x, w) {
      set_weights(layer, w)
      sum(layer(x) * r)
    }
    eps <- 1e-5
    info <- paste("case", case, describe_config(cfg$args))
    check <- function(value, numeric, what) {
      expect_lt(abs(value - numeric), 1e-6 * max(1, abs(numeric)), label = paste(info, what))
    }
    for (i in sample(length(x), min(4, length(x)))) {
      xp <- x
      xm <- x
      xp[i] <- xp[i] + eps
      xm[i] <- xm[i] - eps
      check(g$input[i], (loss(xp, made$weights) - loss(xm, made$weights)) / (2 * eps),
        paste("input", i))
    }
    for (j in seq_along(made$weights)) {
      for (i in sample(length(made$weights[[j]]), min(4, length(made$weights[[j]])))) {
        wp <- made$weights
        wm <- made$weights
        wp[[j]][i] <- wp[[j]][i] + eps
        wm[[j]][i] <- wm[[j]][i] - eps
        check(g$weights[[j]][i], (loss(x, wp) - loss(x, wm)) / (2 * eps),
          paste("weight", j, i))
      }
    }
    set_weights(layer, made$weights)
  }
})

test_that("float32 gradients are float32 values; the input's is skipped on request", {
  set.seed(2105)
  layer <- layer_conv_3d_transpose(filters = 3, kernel_size = 2, strides = 2,
    activation = "tanh")
  x <- array(rnorm(2 * 3 * 3 * 3 * 4), c(2, 3, 3, 3, 4))
  dy <- array(rnorm(2 * 6 * 6 * 6 * 3), c(2, 6, 6, 6, 3))
  g <- conv3d:::layer_backward(layer, x, dy)
  for (v in c(list(g$input), g$weights)) expect_identical(v, conv3d:::round_to_dtype(v, "float32"))
  expect_null(conv3d:::layer_backward(layer, x, dy, input = FALSE)$input)
  # no samples: zero gradients, one per filter in both formats
  for (format in c("channels_last", "channels_first")) {
    empty <- layer_conv_3d_transpose(filters = 2, kernel_size = 2, strides = 2,
      data_format = format, dtype = "float64")
    x0 <- array(0, c(0, 3, 2, 2, 2))
    g0 <- conv3d:::layer_backward(empty, x0, array(0, dim(empty(x0))))
    expect_identical(g0$weights[[2]], c(0, 0), info = format)
    expect_identical(dim(g0$input), dim(x0), info = format)
  }
  expect_error(conv3d:::layer_backward(layer, x, dy[, -1, , , ]), "output dim c\\(2, 6, 6, 6, 3\\)",
    class = "conv3d_error_shape")
})

test_that("an encoder-decoder trains through the transposed layer", {
  set.seed(2106)
  input <- layer_input(c(4, 4, 4, 1), dtype = "float64")
  down <- layer_conv_3d(input, 8, 2, strides = 2, activation = "tanh", dtype = "float64")
  up <- layer_conv_3d_transpose(down, 2, 2, strides = 2, activation = "softmax",
    dtype = "float64", name = "up")
  model <- keras_model(input, up)
  x <- array(rnorm(3 * 64), c(3, 4, 4, 4, 1))
  y <- array(as.integer(x[, , , , 1] > 0), c(3, 4, 4, 4))
  compile(model, optimizer_sgd(0.5), "sparse_categorical_crossentropy")
  layer <- get_layer(model, "up")
  before <- get_weights(layer)
  loss_at <- function(w) {
    set_weights(layer, w)
    evaluate(model, x, y, batch_size = 3)[["loss"]]
  }
  probe <- function(w) unique(pmin(c(1, 5, length(w)), length(w)))
  eps <- 1e-6
  numeric <- lapply(seq_along(before), function(j) {
    vapply(probe(before[[j]]), function(i) {
      up <- before
      down <- before
      up[[j]][i] <- up[[j]][i] + eps
      down[[j]][i] <- down[[j]][i] - eps
      (loss_at(up) - loss_at(down)) / (2 * eps)
    }, 0)
  })
  set_weights(layer, before)
  fit(model, x, y, batch_size = 3, epochs = 1, shuffle = FALSE, verbose = 0)
  after <- get_weights(layer)
  for (j in seq_along(before)) {
    idx <- probe(before[[j]])
    expect_equal((before[[j]][idx] - after[[j]][idx]) / 0.5, numeric[[j]], tolerance = 1e-6)
  }
  # each voxel's sign, through 8 channels per 2 x 2 x 2 block: learnable
  compile(model, optimizer_adam(0.05), "sparse_categorical_crossentropy", metrics = "accuracy")
  history <- fit(model, x, y, batch_size = 3, epochs = 30, verbose = 0)
  expect_lt(tail(history$metrics$loss, 1), history$metrics$loss[1] / 4)
  expect_gt(tail(history$metrics$accuracy, 1), 0.95)
})

test_that("it composes like layer_conv_3d() and shows in summaries", {
  model <- keras_model_sequential(input_shape = c(3, 3, 3, 2), name = "decoder")
  model |> layer_conv_3d_transpose(4, 2, strides = 2, name = "up")
  expect_identical(dim(predict(model, array(1, c(2, 3, 3, 3, 2)))), c(2L, 6L, 6L, 6L, 4L))
  expect_output(print(model), "up \\(Conv3DTranspose\\) +\\(None, 6, 6, 6, 4\\) +68")
  layer <- layer_conv_3d_transpose(filters = 1, kernel_size = 1)
  expect_match(layer$name, "^conv3d_transpose(_[0-9]+)?$")
  config <- layer$get_config()
  expect_true("output_padding" %in% names(config))
  expect_null(config$output_padding)
  expect_false("groups" %in% names(config))
  expect_identical(layer_conv_3d_transpose(filters = 1, kernel_size = 3, strides = 2,
    output_padding = 1)$get_config()$output_padding, c(1L, 1L, 1L))
})

test_that("bad arguments get errors that name them", {
  expect_error(layer_conv_3d_transpose(filters = 2, kernel_size = 3, strides = 2,
    output_padding = 2), "`output_padding` must be .* smaller than its stride \\(`strides` 2\\), not 2")
  expect_error(layer_conv_3d_transpose(filters = 2, kernel_size = 3, output_padding = -1),
    "`output_padding` must be .*, not -1")
  expect_error(layer_conv_3d_transpose(filters = 2, kernel_size = 3, strides = 2,
    output_padding = c(1, 1)), "`output_padding` must be .*, not c\\(1, 1\\)")
  expect_error(layer_conv_3d_transpose(filters = 2, kernel_size = 3, strides = 2,
    output_padding = "1"), "`output_padding` must be")
  expect_error(layer_conv_3d_transpose(filters = 2, kernel_size = 3, strides = 2,
    dilation_rate = 2), "`strides` must be 1 when `dilation_rate`")
  expect_error(layer_conv_3d_transpose(filters = 0, kernel_size = 3), "`filters` must be")
  expect_error(layer_conv_3d_transpose(filters = 2, kernel_size = c(3, 3)), "`kernel_size` must be")
  expect_error(layer_conv_3d_transpose(filters = 2), "`kernel_size` is missing")
  # 'same' with an even window and no output padding along an axis cannot map back
  expect_error(layer_conv_3d_transpose(layer_input(c(4, 4, 4, 1)), 2, 2, strides = 2,
    padding = "same", output_padding = c(1, 0, 1)),
    "`output_padding` c\\(1, 0, 1\\) .* spatial axis 2", class = "conv3d_error_shape")
  expect_error(layer_conv_3d_transpose(array(1, c(1, 3, 3, 3, 1)), 1, 2, padding = "same",
    output_padding = 0), "or use output_padding = NULL or an odd kernel size",
    class = "conv3d_error_shape")
  expect_error(layer_conv_3d_transpose(layer_input(c(3, 3, 3, 1)), 2, 3, strides = 1e9),
    "`strides` c\\(1e\\+09, 1e\\+09, 1e\\+09\\) makes the output longer than an R array's axis .* axis 1",
    class = "conv3d_error_shape")
  expect_error(layer_conv_3d_transpose(layer_input(c(3, 3, 3, 1)), 2, c(1, 1, 2147483647)),
    "`kernel_size` .* makes the output longer than an R array's axis .* axis 3",
    class = "conv3d_error_shape")
  expect_error(layer_conv_3d_transpose(layer_input(c(3, 3, 3, 1)), 2, 3, strides = 1e6),
    "`strides` c\\(1e\\+06, 1e\\+06, 1e\\+06\\) makes the output too large for input shape c\\(NA, 3, 3, 3, 1\\)",
    class = "conv3d_error_shape")
  layer <- layer_conv_3d_transpose(filters = 2, kernel_size = 2)
  layer(array(0, c(1, 2, 2, 2, 3)))
  expect_error(layer(array(0, c(1, 2, 2, 2, 4))), "built for 3 input channels",
    class = "conv3d_error_shape")
  expect_error(set_weights(layer, list(array(0, c(2, 2, 2, 3, 2)), c(0, 0))),
    "kernel weight must be an array of dim c\\(2, 2, 2, 2, 3\\)", class = "conv3d_error_weights")
  expect_error(set_weights(layer, list(array(0, c(2, 2, 2, 2, 3)))), "list of 2 arrays",
    class = "conv3d_error_weights")
  expect_error(layer_conv_3d_transpose(array(0, c(1, 2, 2, 2, 1)), 1, 2,
    weights = list(array(0, c(2, 2, 2, 1, 1)), 1:3)), "bias weight must be an array of dim c\\(1\\)")
})
