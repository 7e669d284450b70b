# conv3d_gradients() against central finite differences of the forward pass
# (float64), on random configurations: loss = sum(y * r), so dy = r.

random_config <- function() {
  groups <- sample(c(1, 1, 2, 3), 1)
  cin <- groups * sample(1:3, 1)
  filters <- groups * sample(1:3, 1)
  dilated <- runif(1) < 0.3
  strides <- if (dilated) 1 else sample(1:2, 3, replace = TRUE)
  dilation <- if (dilated) sample(1:2, 3, replace = TRUE) else 1
  kernel <- sample(1:3, 3, replace = TRUE)
  padding <- sample(c("valid", "same"), 1)
  k_eff <- (kernel - 1) * dilation + 1
  dims <- pmax(k_eff, sample(2:5, 3, replace = TRUE))
  list(
    n = sample(1:2, 1), dims = dims, cin = cin,
    args = list(filters = filters, kernel_size = kernel, strides = strides,
      dilation_rate = dilation, groups = groups, padding = padding,
      data_format = sample(c("channels_last", "channels_first"), 1),
      use_bias = runif(1) < 0.7,
      activation = sample(list(NULL, "relu", "sigmoid", "tanh", "softmax", "elu", "selu",
        "softplus", "softsign", "swish", "gelu", "exponential", "leaky_relu", "mish"), 1)[[1]])
  )
}

test_that("gradients match finite differences on 60 random configurations", {
  set.seed(2024)
  for (case in seq_len(60)) {
    cfg <- random_config()
    a <- cfg$args
    xdims <- if (a$data_format == "channels_last") c(cfg$n, cfg$dims, cfg$cin) else
      c(cfg$n, cfg$cin, cfg$dims)
    x <- array(rnorm(prod(xdims)), xdims)
    kernel <- array(rnorm(prod(a$kernel_size) * cfg$cin / a$groups * a$filters) * 0.5,
      c(a$kernel_size, cfg$cin / a$groups, a$filters))
    bias <- rnorm(a$filters) * 0.1
    weights <- if (a$use_bias) list(kernel, bias) else list(kernel)
    layer <- do.call(layer_conv_3d, c(a, list(dtype = "float64", weights = weights)))
    y <- layer(x)
    r <- array(rnorm(length(y)), dim(y))
    g <- conv3d_gradients(layer, x, r)
    loss <- function(x, w) {
      set_weights(layer, w)
      sum(layer(x) * r)
    }
    eps <- 1e-5
    info <- paste0("case ", case, ": ", paste(names(a), vapply(a, function(v) paste(format(v), collapse = ","), ""), sep = "=",
      collapse = " "))
    for (i in sample(length(x), min(4, length(x)))) {
      xp <- x
      xm <- x
      xp[i] <- xp[i] + eps
      xm[i] <- xm[i] - eps
      fd <- (loss(xp, weights) - loss(xm, weights)) / (2 * eps)
      # absolute error against the gradient's scale: finite differences of tiny
      # entries carry truncation error of the same order as the entry
      expect_lt(abs(g$input[i] - fd), 1e-6 * max(1, abs(g$input)), label = paste(info, "input", i))
    }
    for (i in sample(length(kernel), min(4, length(kernel)))) {
      wp <- weights
      wm <- weights
      wp[[1]][i] <- wp[[1]][i] + eps
      wm[[1]][i] <- wm[[1]][i] - eps
      fd <- (loss(x, wp) - loss(x, wm)) / (2 * eps)
      expect_lt(abs(g$kernel[i] - fd), 1e-6 * max(1, abs(g$kernel)), label = paste(info, "kernel", i))
    }
    if (a$use_bias) {
      i <- sample(length(bias), 1)
      wp <- weights
      wm <- weights
      wp[[2]][i] <- wp[[2]][i] + eps
      wm[[2]][i] <- wm[[2]][i] - eps
      fd <- (loss(x, wp) - loss(x, wm)) / (2 * eps)
      expect_lt(abs(g$bias[i] - fd), 1e-6 * max(1, abs(g$bias)), label = paste(info, "bias", i))
    } else {
      expect_null(g$bias)
    }
    set_weights(layer, weights)
  }
})

test_that("gradients have the right shapes, skip the input on request, and are deterministic", {
  set.seed(5)
  layer <- layer_conv_3d(filters = 6, kernel_size = c(2, 3, 1), groups = 2, dtype = "float32")
  x <- array(rnorm(2 * 5 * 6 * 7 * 4), c(2, 5, 6, 7, 4))
  y <- layer(x)
  dy <- array(rnorm(length(y)), dim(y))
  old <- conv3d_threads(1)
  withr::defer(conv3d_threads(0))
  one <- conv3d_gradients(layer, x, dy)
  conv3d_threads(2)
  two <- conv3d_gradients(layer, x, dy)
  expect_identical(one, two)
  expect_equal(dim(one$input), dim(x))
  expect_equal(dim(one$kernel), c(2, 3, 1, 2, 6))
  expect_length(one$bias, 6)
  expect_null(conv3d_gradients(layer, x, dy, input = FALSE)$input)
  # float32 layers report float32 values
  expect_identical(one$kernel, array(
    readBin(writeBin(c(one$kernel), raw(), size = 4), "double", size = 4, n = length(one$kernel)),
    dim(one$kernel)))
  # the bias gradient is the sum of dy over everything but the filter axis
  expect_equal(one$bias, apply(dy, 5, sum), tolerance = 1e-5)
})

test_that("gradient errors are worded", {
  layer <- layer_conv_3d(filters = 2, kernel_size = 1)
  x <- array(1, c(1, 2, 2, 2, 1))
  expect_snapshot(error = TRUE, {
    conv3d_gradients(layer, x, array(1, c(1, 2, 2, 2, 3)))
    conv3d_gradients(layer, x, 1:3)
    conv3d_gradients(layer, x, array("1", c(1, 2, 2, 2, 2)))
    conv3d_gradients("layer", x, 1)
    conv3d_gradients(layer_conv_3d(filters = 1, kernel_size = 1, name = "custom",
      activation = function(x) x), x, array(1, c(1, 2, 2, 2, 1)))
  })
})

test_that("whole gradients match the naive reference on every tier, strided phases included", {
  # linear layers, so dz is dy: every element of dx and dW is checked, on
  # configurations where the strides split the input gradient into phases with
  # different taps, some with none (stride > kernel) and some whose windows
  # start or end in the 'same' padding
  set.seed(77)
  local_tier_and_threads()
  # a few layers whose input gradient has few filters and many channels (the
  # reduction tiles): one input channel, 16 or 32 filters
  wide <- lapply(1:4, function(i) list(n = 1, dims = sample(5:9, 3, replace = TRUE), cin = i %% 2 + 1,
    args = list(filters = 16 * (1 + i %% 2), kernel_size = sample(2:4, 3, replace = TRUE),
      strides = sample(1:2, 3, replace = TRUE), dilation_rate = 1, groups = 1,
      padding = sample(c("valid", "same"), 1), data_format = "channels_last")))
  # layers whose patches do not overlap (channels_last, one group, valid,
  # kernel <= stride): the input gradient is one GEMM scattered along the
  # patches; some inputs lie under no patch. With one sample, the patches of a
  # depth row are read and written as strided runs (19 and 17 of them: whole
  # vectors and a tail)
  patches <- lapply(list(list(k = 1, s = 1, d = c(4, 5, 6)), list(k = 2, s = 2, d = c(6, 4, 8)),
    list(k = c(2, 1, 3), s = c(2, 2, 3), d = c(7, 5, 7)), list(k = 1, s = 2, d = c(5, 4, 3)),
    list(k = c(1, 2, 2), s = 3, d = c(7, 8, 6)), list(k = 2, s = 2, d = c(38, 3, 4), n = 1),
    list(k = c(3, 1, 2), s = c(3, 2, 2), d = c(52, 3, 4), n = 1),
    # unit depth stride, one sample: runs of 19 contiguous inputs, several
    # per block of positions
    list(k = c(1, 2, 2), s = c(1, 2, 2), d = c(19, 4, 6), n = 1)),
    function(p) list(n = if (is.null(p$n)) 2 else p$n, dims = p$d, cin = 5,
    args = list(filters = 7, kernel_size = rep_len(p$k, 3), strides = p$s, dilation_rate = 1, groups = 1,
      padding = "valid", data_format = "channels_last")))
  # strides far beyond the input: only the phases that hold inputs are visited
  far <- list(list(n = 1, dims = c(4, 5, 6), cin = 2, args = list(filters = 3,
    kernel_size = c(2, 3, 2), strides = c(9, 1, 40), dilation_rate = 1, groups = 1,
    padding = "same", data_format = "channels_last")))
  cases <- lapply(seq_len(40), function(i) {
    groups <- sample(c(1, 1, 2), 1)
    dilated <- i %% 4 == 0
    kernel <- sample(1:4, 3, replace = TRUE)
    dilation <- if (dilated) sample(1:3, 3, replace = TRUE) else 1
    strides <- if (dilated) 1 else sample(1:3, 3, replace = TRUE)
    padding <- sample(c("valid", "same"), 1)
    dims <- pmax((kernel - 1) * dilation + 1, sample(1:7, 3, replace = TRUE))
    list(n = sample(1:2, 1), dims = dims, cin = groups * sample(1:3, 1),
      args = list(filters = groups * sample(c(1, 2, 5), 1), kernel_size = kernel,
        strides = strides, dilation_rate = dilation, groups = groups, padding = padding,
        data_format = sample(c("channels_last", "channels_first"), 1)))
  })
  for (case in c(cases, wide, patches, far)) {
    a <- case$args
    xdims <- if (a$data_format == "channels_last") c(case$n, case$dims, case$cin) else
      c(case$n, case$cin, case$dims)
    x <- array(rnorm(prod(xdims)), xdims)
    kernel <- array(rnorm(prod(a$kernel_size) * case$cin / a$groups * a$filters),
      c(a$kernel_size, case$cin / a$groups, a$filters))
    info <- paste(names(a), vapply(a, function(v) paste(v, collapse = ","), ""), sep = "=",
      collapse = " ")
    for (dtype in c("float64", "float32")) {
      layer <- do.call(layer_conv_3d, c(a, list(dtype = dtype, weights = list(kernel, rnorm(a$filters)))))
      dy <- array(rnorm(length(layer(x))), dim(layer(x)))
      ref <- reference_conv3d_gradients(x, kernel, dy, a$strides, a$padding, a$dilation_rate,
        a$groups, a$data_format)
      tol <- if (dtype == "float64") 1e-10 else 1e-4
      for (tier in available_tiers()) {
        conv3d_cpu(tier)
        conv3d_threads(2)
        g <- conv3d_gradients(layer, x, dy)
        expect_equal(g$input, ref$input, tolerance = tol, info = paste(tier, dtype, info))
        expect_equal(g$kernel, ref$kernel, tolerance = tol, info = paste(tier, dtype, info))
        expect_equal(g$bias, ref$bias, tolerance = tol, info = paste(tier, dtype, info))
        conv3d_threads(1)
        expect_identical(conv3d_gradients(layer, x, dy), g, info = paste(tier, dtype, info, "1 thread"))
      }
    }
  }
})

# A layer of `args` (layer_conv_3d()'s, as a list) with `kernel` and a random
# bias, a random output gradient for it on x, and the naive reference
# gradients.
layer_case_gradients <- function(args, x, kernel, dtype) {
  arg <- function(name, default) if (is.null(args[[name]])) default else args[[name]]
  layer <- do.call(layer_conv_3d, c(args, list(dtype = dtype,
    weights = list(kernel, rnorm(args$filters)))))
  y <- layer(x)
  dy <- array(rnorm(length(y)), dim(y))
  ref <- reference_conv3d_gradients(x, kernel, dy, arg("strides", 1), arg("padding", "valid"),
    arg("dilation_rate", 1), arg("groups", 1), arg("data_format", "channels_last"))
  list(layer = layer, dy = dy, ref = ref)
}

test_that("kernel gradients on the in-place and patch paths match the reference", {
  # 8 or 16 channels per group: whole channel blocks on every tier; over 1024
  # output positions, so the positions go in several chunks, and a small layer
  # that fits one chunk; then two patch layers (1x1x1, and kernel = stride)
  # with several panels of positions
  set.seed(78)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  cases <- list(
    list(dims = c(1, 12, 11, 10, 16), args = list(filters = 20, kernel_size = 3, padding = "same")),
    list(dims = c(2, 9, 10, 13, 16), args = list(filters = 12, kernel_size = c(2, 3, 1),
      strides = c(2, 1, 2), groups = 2)),
    list(dims = c(1, 16, 9, 11, 8), args = list(filters = 40, kernel_size = 3, dilation_rate = 2,
      padding = "same", data_format = "channels_first")),
    list(dims = c(1, 3, 4, 5, 32), args = list(filters = 33, kernel_size = 3, padding = "same")),
    list(dims = c(2, 10, 12, 14, 6), args = list(filters = 9, kernel_size = 1)),
    list(dims = c(1, 17, 18, 20, 3), args = list(filters = 5, kernel_size = 2, strides = 2))
  )
  for (case in cases) {
    a <- case$args
    fmt <- if (is.null(a$data_format)) "channels_last" else a$data_format
    g <- if (is.null(a$groups)) 1 else a$groups
    cin <- if (fmt == "channels_first") case$dims[2] else case$dims[5]
    x <- array(rnorm(prod(case$dims)), case$dims)
    kernel <- array(rnorm(prod(rep_len(a$kernel_size, 3)) * cin / g * a$filters),
      c(rep_len(a$kernel_size, 3), cin / g, a$filters))
    for (dtype in c("float64", "float32")) {
      cg <- layer_case_gradients(a, x, kernel, dtype)
      for (tier in available_tiers()) {
        conv3d_cpu(tier)
        got <- conv3d_gradients(cg$layer, x, cg$dy, input = FALSE)
        expect_equal(got$kernel, cg$ref$kernel, tolerance = if (dtype == "float64") 1e-10 else 1e-4,
          info = paste(tier, dtype, paste(case$dims, collapse = "x")))
      }
    }
  }
})

test_that("kernel gradients of layers with one input channel per group match the reference", {
  # the planar path of depthwise layers takes them (each filter reads its
  # group's channel): a stem on one channel, a channel multiplier, a
  # depthwise layer; depths of at least a vector on every tier (16 floats),
  # strides and dilation across the rows, 'same' and 'valid'
  set.seed(79)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  withr::defer(conv3d_threads(0))
  cases <- list(
    list(dims = c(2, 18, 7, 6, 1), args = list(filters = 16, kernel_size = 3, padding = "same")),
    list(dims = c(1, 20, 9, 8, 1), args = list(filters = 5, kernel_size = c(3, 2, 3),
      strides = c(1, 2, 2))),
    list(dims = c(1, 21, 5, 6, 1), args = list(filters = 3, kernel_size = 3,
      dilation_rate = c(2, 1, 2), padding = "same")),
    list(dims = c(1, 17, 6, 7, 3), args = list(filters = 6, kernel_size = 3, groups = 3,
      padding = "same")),
    list(dims = c(2, 16, 5, 5, 4), args = list(filters = 4, kernel_size = c(5, 3, 1), groups = 4,
      padding = "same"))
  )
  for (case in cases) {
    a <- case$args
    x <- array(rnorm(prod(case$dims)), case$dims)
    kernel <- array(rnorm(prod(rep_len(a$kernel_size, 3)) * a$filters),
      c(rep_len(a$kernel_size, 3), 1, a$filters))
    for (dtype in c("float64", "float32")) {
      cg <- layer_case_gradients(a, x, kernel, dtype)
      tol <- if (dtype == "float64") 1e-10 else 1e-4
      for (tier in available_tiers()) {
        conv3d_cpu(tier)
        got <- conv3d_gradients(cg$layer, x, cg$dy)
        info <- paste(tier, dtype, paste(case$dims, collapse = "x"))
        expect_equal(got[c("kernel", "input")], cg$ref[c("kernel", "input")], tolerance = tol,
          info = info)
      }
      conv3d_threads(1)
      one <- conv3d_gradients(cg$layer, x, cg$dy)$kernel
      conv3d_threads(2)
      expect_identical(conv3d_gradients(cg$layer, x, cg$dy)$kernel, one, info = dtype)
    }
  }
})

# One gradient (`part`, "input" or "kernel") of a layer with this kernel and
# the layer arguments in `...`, in both dtypes on every tier, against `ref`.
expect_gradient_on_every_tier <- function(part, x, kernel, dy, ref, ...) {
  for (dtype in c("float64", "float32")) {
    layer <- layer_conv_3d(filters = dim(kernel)[5], kernel_size = dim(kernel)[1:3], ...,
      dtype = dtype, weights = list(kernel, rnorm(dim(kernel)[5])))
    expect_every_tier(function() conv3d_gradients(layer, x, dy, input = part == "input")[[part]],
      ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4, info = paste(part, dtype))
  }
}

test_that("in-place kernel gradients over several chunks, or streamed, match the reference", {
  # about 70000 output positions: more than one chunk of the transposed dz in
  # both dtypes, so chunks add into dW in order. Then one chunk, all taps per
  # task: each filter's channels are assembled as one run of dW, stored past
  # the caches from 4 MB (here 4.4 MB); 150 filters leave a partial block.
  # A 9x9x9 kernel makes those runs 729 taps x the channel block long (the
  # tier transposes them from the task's accumulator). The vectorised
  # reference first agrees with the loop one on a small strided, dilated,
  # grouped layer.
  set.seed(79)
  xs <- array(rnorm(2 * 7 * 6 * 8 * 4), c(2, 7, 6, 8, 4))
  ks <- c(2, 3, 2, 2, 6)
  for (cfg in list(list(s = c(2, 1, 3), d = 1, p = "same"), list(s = 1, d = c(1, 2, 2), p = "valid"))) {
    ys <- reference_conv3d(xs, array(1, ks), strides = cfg$s, dilation_rate = cfg$d,
      padding = cfg$p, groups = 2)
    dys <- array(rnorm(length(ys)), dim(ys))
    expect_equal(reference_kernel_gradient(xs, ks, dys, cfg$s, cfg$p, cfg$d, 2),
      reference_conv3d_gradients(xs, array(1, ks), dys, cfg$s, cfg$p, cfg$d, 2)$kernel,
      tolerance = 1e-12)
  }
  local_tier_and_threads()
  cases <- list(list(dims = c(1, 66, 33, 32), cin = 8, filters = 20, k = 3, dw_bytes = 0),
    list(dims = c(1, 6, 5, 7), cin = 136, filters = 150, k = 3, dw_bytes = 4 * 2^20),
    list(dims = c(1, 9, 10, 9), cin = 16, filters = 40, k = 9, dw_bytes = 0))
  for (case in cases) {
    x <- array(rnorm(prod(case$dims) * case$cin), c(case$dims, case$cin))
    kernel <- array(rnorm(case$k^3 * case$cin * case$filters) / 10,
      c(rep(case$k, 3), case$cin, case$filters))
    expect_gte(length(kernel) * 8, case$dw_bytes)
    dy <- array(rnorm(prod(case$dims) * case$filters), c(case$dims, case$filters))
    expect_gradient_on_every_tier("kernel", x, kernel, dy,
      reference_kernel_gradient(x, dim(kernel), dy, padding = "same"), padding = "same")
  }
})

test_that("patch input gradients of 4 MB and more (streamed) match the reference", {
  # a 1x1x1 layer's dx is dy times the transposed kernel; 4.5 MB of it is
  # written in runs of whole blocks of positions past the caches, and 17
  # channels leave a partial block of patch rows. Then a 2x2x2 kernel of
  # stride 2 on one sample: both depth taps interleave into runs of dx.
  set.seed(83)
  local_tier_and_threads()
  x2 <- array(rnorm(64 * 32 * 32 * 8), c(1, 64, 32, 32, 8))
  kernel2 <- array(rnorm(64 * 6), c(2, 2, 2, 8, 6))
  dy2 <- array(rnorm(32 * 16 * 16 * 6), c(1, 32, 16, 16, 6))
  ref2 <- reference_conv3d_gradients(x2, kernel2, dy2, 2)$input
  expect_gte(length(ref2) * 8, 4 * 2^20)
  expect_gradient_on_every_tier("input", x2, kernel2, dy2, ref2, strides = 2)
  dims <- c(2, 33, 16, 31)
  x <- array(rnorm(prod(dims) * 17), c(dims, 17))
  kernel <- array(rnorm(17 * 12), c(1, 1, 1, 17, 12))
  dy <- array(rnorm(prod(dims) * 12), c(dims, 12))
  ref <- array(matrix(dy, ncol = 12) %*% t(matrix(kernel, 17, 12)), dim(x))
  expect_gte(length(ref) * 8, 4 * 2^20)
  expect_gradient_on_every_tier("input", x, kernel, dy, ref)
})

test_that("woven patch input gradients (kernel = stride = 2 along depth) match the reference", {
  # one sample, 2x2x2 kernels of stride 2: each depth run of dx takes both
  # depth taps of 32 or 16 output positions; where runs hold whole
  # sub-blocks of the tier's GEMM blocks (2 vectors), the blocks weave the
  # two taps into dx from their registers. 5 channels leave partial blocks of
  # patch rows (40 rows: 8, 6 or 4 per block), an odd depth (65) unaligned
  # rows, H and W of 7 inputs under no patch; 16 outputs along depth are
  # whole sub-blocks on some tiers and dtypes only (the others stage them).
  # Then 4.3 MB of dx with an odd depth: streamed stores would be unaligned,
  # so the stage writes it.
  set.seed(85)
  local_tier_and_threads()
  cases <- list(list(d = c(64, 6, 5), woven = TRUE), list(d = c(65, 7, 4), woven = TRUE),
    list(d = c(32, 4, 7), woven = NA), list(d = c(65, 32, 32), woven = FALSE, cin = 8))
  # 16 outputs along depth hold whole sub-blocks (2 vectors of the layer's
  # type) on every tier but AVX-512 in float32
  whole_16 <- function(dtype) {
    lanes <- c(generic = 4, avx2 = 8, avx512 = 16)[[conv3d_cpu()$kernel]]
    16 %% (2 * if (dtype == "float32") lanes else lanes / 2) == 0
  }
  for (case in cases) {
    cin <- if (is.null(case$cin)) 5 else case$cin
    x <- array(rnorm(prod(case$d) * cin), c(1, case$d, cin))
    kernel <- array(rnorm(8 * cin * 6), c(2, 2, 2, cin, 6))
    dy <- array(rnorm(prod(case$d %/% 2) * 6), c(1, case$d %/% 2, 6))
    ref <- reference_conv3d_gradients(x, kernel, dy, 2)$input
    info <- paste(case$d, collapse = "x")
    for (dtype in c("float64", "float32")) {
      layer <- layer_conv_3d(filters = 6, kernel_size = 2, strides = 2, dtype = dtype,
        weights = list(kernel, rnorm(6)))
      expect_every_tier(function() {
        g <- conv3d_gradients(layer, x, dy, input = TRUE)$input
        path <- conv3d:::last_input_gradient_path()
        woven <- if (is.na(case$woven)) whole_16(dtype) else case$woven
        expect_identical(path, if (woven) "patch woven" else "patch", info = paste(dtype, info))
        g
      }, ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4, info = paste(dtype, info))
    }
  }
  expect_gte(prod(cases[[4]]$d) * 8 * 8, 4 * 2^20)
})

test_that("input gradients from weights packed in chunks of taps, or streamed, match the reference", {
  # the input gradient repacks the kernel, flipped and transposed, on every
  # call: each (filter, block of channels) pair's runs of taps are transposed
  # in chunks of 64 taps (a 5x5x3 kernel: two chunks; 35 channels leave a
  # partial block), and a packed copy of 4 MB or more (208 x 208 x 27) goes
  # past the caches. Both stay off the Winograd path (9 channels; one output
  # along depth).
  set.seed(84)
  local_tier_and_threads()
  x <- array(rnorm(2 * 4 * 5 * 6 * 35), c(2, 4, 5, 6, 35))
  kernel <- array(rnorm(75 * 35 * 9), c(5, 5, 3, 35, 9))
  dy <- array(rnorm(2 * 4 * 5 * 6 * 9), c(2, 4, 5, 6, 9))
  ref <- reference_conv3d_gradients(x, kernel, dy, padding = "same")$input
  expect_gradient_on_every_tier("input", x, kernel, dy, ref, padding = "same")
  expect_identical(conv3d:::last_input_gradient_path(), "phases")
  x <- array(rnorm(4 * 3 * 208), c(1, 1, 4, 3, 208))
  kernel <- array(rnorm(27 * 208 * 208) / 30, c(3, 3, 3, 208, 208))
  dy <- array(rnorm(4 * 3 * 208), c(1, 1, 4, 3, 208))
  ref <- reference_conv3d_gradients(x, kernel, dy, padding = "same")$input
  expect_gte(27 * 208 * 208 * 4, 4 * 2^20)
  expect_gradient_on_every_tier("input", x, kernel, dy, ref, padding = "same")
  expect_identical(conv3d:::last_input_gradient_path(), "phases")
})

test_that("input gradients from the forward's packed weights, transposed, match the reference", {
  # once a forward pass has packed a layer's weights for the general kernels,
  # a single-phase input gradient (unit strides) transposes their blocks
  # instead of repacking R's kernel: asymmetric and dilated kernels (the taps
  # mapped between the two kernel specs), channels_first, and 224 x 224
  # channels, whose 5.4 MB copy is written past the caches. The result equals
  # the one from R's kernel (before any forward pass). Channels that are not
  # whole blocks, groups, and a single phase without every tap (stride 2 over
  # one depth) repack R's kernel.
  set.seed(85)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(2, 3, 4, 5), cin = 64, filters = 32, k = c(2, 3, 3), d = 1, fmt = "channels_last"),
    list(dims = c(1, 6, 3, 4), cin = 32, filters = 64, k = c(3, 1, 2), d = 1, fmt = "channels_first"),
    list(dims = c(2, 5, 6, 3), cin = 32, filters = 32, k = c(2, 2, 3), d = c(2, 1, 1),
      fmt = "channels_last"),
    list(dims = c(1, 1, 4, 3), cin = 224, filters = 224, k = 3, d = 1, fmt = "channels_last"))
  for (case in cases) {
    xdims <- if (case$fmt == "channels_last") c(case$dims, case$cin) else
      c(case$dims[1], case$cin, case$dims[-1])
    x <- array(rnorm(prod(xdims)), xdims)
    k <- rep_len(case$k, 3)
    kernel <- array(rnorm(prod(k) * case$cin * case$filters) / 10, c(k, case$cin, case$filters))
    info <- paste(case$cin, case$filters, paste(k, collapse = "x"), case$fmt)
    for (dtype in c("float64", "float32")) {
      layer <- layer_conv_3d(filters = case$filters, kernel_size = k, padding = "same",
        dilation_rate = case$d, data_format = case$fmt, dtype = dtype,
        weights = list(kernel, rnorm(case$filters)))
      dy <- array(rnorm(length(layer(x))), dim(layer(x)))
      ref <- reference_conv3d_gradients(x, kernel, dy, padding = "same",
        dilation_rate = case$d, data_format = case$fmt)$input
      for (tier in available_tiers()) {
        conv3d_cpu(tier)
        conv3d_threads(2)
        set_weights(layer, list(kernel, rnorm(case$filters)))
        from_r <- conv3d_gradients(layer, x, dy)$input
        expect_identical(conv3d:::last_input_gradient_path(), "phases", info = info)
        invisible(layer(x))
        got <- conv3d_gradients(layer, x, dy)$input
        expect_identical(conv3d:::last_input_gradient_path(), "transposed", info = info)
        expect_equal(got, ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4,
          info = paste(tier, dtype, info))
        expect_identical(got, from_r, info = paste(tier, dtype, info))
        conv3d_threads(1)
        expect_identical(conv3d_gradients(layer, x, dy)$input, got,
          info = paste(tier, dtype, info, "1 thread"))
      }
    }
  }
  for (cfg in list(list(cin = 36, groups = 1, s = 1, d = 3), list(cin = 64, groups = 2, s = 1, d = 3),
                   list(cin = 64, groups = 1, s = c(2, 1, 1), d = 1))) {
    x <- array(rnorm(2 * cfg$d * 4 * 5 * cfg$cin), c(2, cfg$d, 4, 5, cfg$cin))
    kernel <- array(rnorm(18 * cfg$cin / cfg$groups * 64), c(2, 3, 3, cfg$cin / cfg$groups, 64))
    layer <- layer_conv_3d(filters = 64, kernel_size = c(2, 3, 3), padding = "same",
      strides = cfg$s, groups = cfg$groups, weights = list(kernel, rnorm(64)))
    y <- layer(x)
    dy <- array(rnorm(length(y)), dim(y))
    ref <- reference_conv3d_gradients(x, kernel, dy, cfg$s, "same", groups = cfg$groups)$input
    expect_equal(conv3d_gradients(layer, x, dy)$input, ref, tolerance = 1e-4, info = cfg$cin)
    expect_identical(conv3d:::last_input_gradient_path(), "phases", info = cfg$cin)
  }
})

test_that("patch layer gradients split among threads match the reference", {
  # both gradients come from one pass, each thread owning a range of (patch
  # rows x filters) kernel-gradient tasks and one of input-gradient blocks of
  # patch rows: one task and one block for two threads (a thread without
  # work), 1120 patch rows, whose panels hold fewer positions per block than
  # usual, over several blocks, and 70 filters, whose tasks go by groups of
  # filter tiles (their rows of dz fill L1), each thread's range ending
  # inside a group. The pass also runs either gradient
  # alone: the kernel gradient when R asks for no input gradient, the input
  # gradient when the C entry is asked for no kernel gradient (R always asks
  # for it), each bit-identical to its value from the pass with both.
  set.seed(81)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(2, 6, 5, 8, 1), args = list(filters = 3, kernel_size = c(1, 1, 2), strides = 2)),
    list(dims = c(2, 16, 12, 10, 140), args = list(filters = 5, kernel_size = 2, strides = 2)),
    list(dims = c(1, 6, 8, 10, 3), args = list(filters = 70, kernel_size = 1, strides = 1))
  )
  for (case in cases) {
    a <- case$args
    x <- array(rnorm(prod(case$dims)), case$dims)
    kdim <- c(rep_len(a$kernel_size, 3), case$dims[5], a$filters)
    kernel <- array(rnorm(prod(kdim)) / 10, kdim)
    for (dtype in c("float64", "float32")) {
      layer <- do.call(layer_conv_3d, c(a, list(dtype = dtype, weights = list(kernel, rnorm(a$filters)))))
      y <- layer(x)
      dy <- array(rnorm(length(y)), dim(y))
      ref <- reference_conv3d_gradients(x, kernel, dy, a$strides)
      tolerance <- if (dtype == "float64") 1e-10 else 1e-4
      info <- paste(dtype, kdim[4])
      expect_every_tier(function() conv3d_gradients(layer, x, dy)[c("input", "kernel")],
        ref[c("input", "kernel")], tolerance = tolerance, info = info)
      self <- conv3d:::layer_self(layer)
      input_alone <- function() .Call(conv3d:::ffi_conv3d_gradients, self$config, x,
        unname(self$weights), self$activation$code, self$built_channels, self$weight_cache,
        dy, TRUE, FALSE, NULL)
      for (tier in available_tiers()) {
        conv3d_cpu(tier)
        both <- conv3d_gradients(layer, x, dy)
        expect_identical(conv3d_gradients(layer, x, dy, input = FALSE)$kernel, both$kernel,
          info = paste(tier, info))
        alone <- input_alone()
        expect_null(alone$kernel)
        expect_identical(alone$input, both$input, info = paste(tier, info))
      }
    }
  }
})

# A depthwise layer of `args` (its kernel and bias random) on random inputs
# of `dims` with `channels` channels, its output gradient, and the path its
# forward pass took.
depthwise_gradient_case <- function(dims, args, channels, dtype) {
  x <- array(rnorm(prod(dims)), dims)
  k <- rep_len(args$kernel_size, 3)
  kernel <- array(rnorm(prod(k) * channels), c(k, 1, channels))
  layer <- do.call(layer_conv_3d, c(list(filters = channels, groups = channels, dtype = dtype,
    weights = list(kernel, rnorm(channels))), args))
  y <- layer(x)
  list(layer = layer, x = x, kernel = kernel, dy = array(rnorm(length(y)), dim(y)),
    path = conv3d:::last_forward_path())
}
or_default <- function(value, default) if (is.null(value)) default else value

# The reference kernel gradient of a depthwise_gradient_case(), channels last.
depthwise_reference_kernel_gradient <- function(g, args) {
  first <- identical(args$data_format, "channels_first")
  xl <- if (first) aperm(g$x, c(1, 3, 4, 5, 2)) else g$x
  dyl <- if (first) aperm(g$dy, c(1, 3, 4, 5, 2)) else g$dy
  reference_kernel_gradient(xl, dim(g$kernel), dyl, or_default(args$strides, 1),
    or_default(args$padding, "valid"), or_default(args$dilation_rate, 1),
    groups = dim(g$kernel)[5])
}

test_that("depthwise kernel gradients match the reference on both paths", {
  # Vectors across the channels: 37 channels (a partial vector on every tier),
  # 27 taps (a partial group of taps), a stride along depth, channels_first,
  # and a layer large enough for two chunks of positions. The planar
  # depthwise path (the layers whose forward pass takes it, checked) sums
  # each channel's taps from its volume in place: a partial last vector
  # along depth, 24 taps (a partial block of 9), strides along height and
  # width, dilation, and three samples.
  set.seed(80)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(2, 7, 6, 9, 37), args = list(kernel_size = 3, padding = "same")),
    list(dims = c(1, 9, 8, 7, 37), args = list(kernel_size = c(2, 3, 1), strides = c(2, 1, 3))),
    list(dims = c(1, 37, 9, 8, 7), args = list(kernel_size = 3, dilation_rate = c(2, 1, 1),
      padding = "same", data_format = "channels_first")),
    list(dims = c(1, 48, 44, 40, 37), args = list(kernel_size = 3, padding = "same"),
      planar = TRUE),
    list(dims = c(1, 19, 9, 8, 5), args = list(kernel_size = 3, padding = "same"), planar = TRUE),
    list(dims = c(3, 21, 9, 7, 2), args = list(kernel_size = c(2, 3, 4), padding = "same"),
      planar = TRUE),
    list(dims = c(1, 21, 7, 8, 3), args = list(kernel_size = c(5, 3, 3), strides = c(1, 2, 3)),
      planar = TRUE),
    list(dims = c(2, 20, 6, 9, 2), args = list(kernel_size = 3, dilation_rate = c(2, 1, 2)),
      planar = TRUE)
  )
  for (case in cases) {
    channels <- if (identical(case$args$data_format, "channels_first")) case$dims[2] else case$dims[5]
    for (dtype in c("float64", "float32")) {
      g <- depthwise_gradient_case(case$dims, case$args, channels, dtype)
      if (isTRUE(case$planar)) expect_identical(g$path, "depthwise")
      expect_every_tier(function() conv3d_gradients(g$layer, g$x, g$dy, input = FALSE)$kernel,
        depthwise_reference_kernel_gradient(g, case$args),
        tolerance = if (dtype == "float64") 1e-10 else 1e-4,
        info = paste(dtype, paste(case$dims, collapse = "x")))
      db <- apply(g$dy, if (identical(case$args$data_format, "channels_first")) 2 else 5, sum)
      expect_equal(conv3d_gradients(g$layer, g$x, g$dy, input = FALSE)$bias, db,
        tolerance = if (dtype == "float64") 1e-12 else 1e-5)
    }
  }
})

test_that("depthwise input gradients on the planar depthwise path match the reference", {
  # unit strides, channels_last: the output gradient convolved with each
  # channel's taps reversed, on the forward's planar depthwise path (3 x 3 x 3
  # takes the shifted-vector blocks on AVX-512); two samples, valid padding
  # and dilation; a stride keeps the phases
  set.seed(81)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(1, 18, 11, 5, 3), args = list(kernel_size = 3, padding = "same")),
    list(dims = c(2, 20, 5, 6, 2), args = list(kernel_size = c(3, 2, 2), dilation_rate = c(2, 1, 1))),
    list(dims = c(1, 17, 7, 4, 3), args = list(kernel_size = c(5, 3, 3), padding = "same")),
    list(dims = c(1, 18, 6, 5, 2), args = list(kernel_size = 3, strides = c(1, 2, 1),
      padding = "same"), path = "phases")
  )
  for (case in cases) {
    a <- case$args
    for (dtype in c("float64", "float32")) {
      g <- depthwise_gradient_case(case$dims, a, case$dims[5], dtype)
      ref <- reference_conv3d_gradients(g$x, g$kernel, g$dy, strides = or_default(a$strides, 1),
        padding = or_default(a$padding, "valid"), dilation_rate = or_default(a$dilation_rate, 1),
        groups = case$dims[5])
      expect_every_tier(function() conv3d_gradients(g$layer, g$x, g$dy)$input, ref$input,
        tolerance = if (dtype == "float64") 1e-12 else 1e-5,
        info = paste(dtype, paste(case$dims, collapse = "x")))
      expect_identical(conv3d:::last_input_gradient_path(), or_default(case$path, "depthwise"))
    }
  }
})

test_that("float32 layers report float32 gradients on every kernel-gradient path", {
  set.seed(81)
  as_f32 <- function(a) {
    r <- readBin(writeBin(c(a), raw(), size = 4), "double", size = 4, n = length(a))
    if (is.null(dim(a))) r else array(r, dim(a))
  }
  paths <- list(
    depthwise = list(cin = 6, args = list(filters = 6, kernel_size = 3, groups = 6)),
    patch = list(cin = 5, args = list(filters = 9, kernel_size = 2, strides = 2)),
    in_place = list(cin = 16, args = list(filters = 12, kernel_size = 3, padding = "same")),
    gathered = list(cin = 3, args = list(filters = 10, kernel_size = 3)),
    direct = list(cin = 6, args = list(filters = 6, kernel_size = 3, groups = 3))
  )
  for (name in names(paths)) {
    p <- paths[[name]]
    x <- array(rnorm(2 * 6^3 * p$cin), c(2, 6, 6, 6, p$cin))
    layer <- do.call(layer_conv_3d, c(p$args, list(dtype = "float32", activation = "tanh")))
    y <- layer(x)
    g <- conv3d_gradients(layer, x, array(rnorm(length(y)), dim(y)))
    for (part in c("input", "kernel", "bias")) {
      expect_identical(g[[part]], as_f32(g[[part]]), info = paste(name, part))
    }
  }
})

test_that("a training step's output gives the ReLU family's slopes, as recomputing them does", {
  set.seed(91)
  for (act in c("relu", "relu6", "leaky_relu", "sigmoid")) {
    for (dtype in c("float32", "float64")) {
      x <- array(rnorm(2 * 5 * 6 * 4 * 3) * 4, c(2, 5, 6, 4, 3))
      layer <- layer_conv_3d(filters = 4, kernel_size = 3, padding = "same", activation = act,
        dtype = dtype)
      y <- layer(x)
      dy <- array(rnorm(length(y)), dim(y))
      plain <- conv3d:::layer_backward(layer, x, dy)
      self <- conv3d:::layer_self(layer)
      kept <- self$train_call(self, x)
      expect_identical(kept$y, y)
      given <- self$train_backward(self, x, dy, kept$cache, TRUE)
      expect_identical(given, plain, info = paste(act, dtype))
      if (act == "relu6") expect_true(any(y == 6) && any(y == 0), info = dtype) # both kinks met
    }
  }
})

test_that("the ReLU family's slopes are TensorFlow's at the kinks and on special values", {
  # a 1x1x1 layer of weight 1 and bias 0: its input gradient is dy times the
  # activation's slope at x, from x (recomputed) and from the output (a
  # training step's); values at the kinks (0, 6), signed zeros, tiny and
  # infinite values, NaN; an odd count leaves a last element after the
  # pairs the slopes are taken in
  v <- c(-1, 0, -0, 1e-310, -1e-310, 3, 6, 6 - 1e-12, 6 + 1e-12, 7, Inf, -Inf, NaN, 0.5, -2)
  x <- array(rep(v, 3)[1:43], c(1, 43, 1, 1, 1))
  dy <- array(c(rnorm(39), Inf, -Inf, NaN, 2), dim(x))
  slope <- list(
    relu = as.numeric(!is.na(x) & x > 0),
    relu6 = as.numeric(!is.na(x) & x > 0 & x < 6),
    leaky_relu = ifelse(!is.na(x) & x > 0, 1, 0.2))
  for (act in names(slope)) {
    layer <- layer_conv_3d(filters = 1, kernel_size = 1, activation = act, dtype = "float64",
      weights = list(array(1, c(1, 1, 1, 1, 1)), 0))
    expected <- dy * slope[[act]]
    self <- conv3d:::layer_self(layer)
    expect_equal(conv3d_gradients(layer, x, dy)$input, expected, info = act)
    given <- conv3d:::conv3d_layer_gradients(self, x, dy, TRUE, output = layer(x))
    expect_equal(given$input, expected, info = paste(act, "from the output"))
  }
})
