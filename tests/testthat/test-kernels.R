# Every micro-kernel tier this CPU runs gives the PyTorch results, and the tiers
# agree; tile edges (widths not a multiple of the register tile, filters not a
# multiple of the channel block, odd groups) are covered by the fixtures and by
# the shapes below.

run_case <- function(case, dtype) {
  weights <- if (isTRUE(case$args$use_bias)) list(case$kernel, case$bias) else list(case$kernel)
  do.call(layer_conv_3d, c(list(case$x), case$args, list(dtype = dtype, weights = weights)))
}

test_that("each kernel tier matches the PyTorch fixtures", {
  cases <- source(test_path("fixtures", "torch-conv3d.R"))$value
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    for (case in cases) {
      expect_equal(run_case(case, "float64"), case$y, tolerance = 1e-10,
        info = paste(tier, case$name))
      expect_equal(run_case(case, "float32"), case$y, tolerance = 1e-4,
        info = paste(tier, case$name))
    }
  }
})

test_that("tiers agree on shapes that stress tile edges", {
  set.seed(11)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  shapes <- list(
    list(dims = c(2, 3, 5, 19, 6), filters = 21, k = c(2, 3, 3), groups = 3, pad = "same"),
    list(dims = c(1, 4, 4, 9, 5), filters = 17, k = 3, groups = 1, pad = "valid"),
    list(dims = c(1, 5, 6, 7, 15), filters = 5, k = c(3, 1, 2), groups = 5, pad = "same"),
    list(dims = c(1, 3, 3, 33, 2), filters = 40, k = 1, groups = 2, pad = "valid")
  )
  for (s in shapes) {
    x <- array(rnorm(prod(s$dims)), s$dims)
    cin <- s$dims[5]
    kernel <- array(rnorm(prod(rep_len(s$k, 3)) * cin / s$groups * s$filters),
      c(rep_len(s$k, 3), cin / s$groups, s$filters))
    bias <- rnorm(s$filters)
    results <- lapply(available_tiers(), function(tier) {
      conv3d_cpu(tier)
      layer_conv_3d(x, s$filters, s$k, padding = s$pad, groups = s$groups, dtype = "float64",
        weights = list(kernel, bias))
    })
    for (r in results[-1]) expect_equal(r, results[[1]], tolerance = 1e-12)
  }
})

test_that("paired groups (half a vector of filters per group) match the reference", {
  # float32 groups whose filters fill half a vector run two at a time with their
  # channels interleaved: 8 filters per group on AVX-512, 4 on AVX2, 2 generic
  set.seed(12)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    for (fg in c(2, 4, 8)) {
      for (groups in c(2, 3, 6)) {
        cg <- 9 # more channels per group than the planar path takes
        x <- array(rnorm(2 * 4 * 5 * 7 * groups * cg), c(2, 4, 5, 7, groups * cg))
        kernel <- array(rnorm(3 * 2 * 3 * cg * groups * fg), c(3, 2, 3, cg, groups * fg))
        bias <- rnorm(groups * fg)
        for (format in c("channels_last", "channels_first")) {
          xin <- if (format == "channels_last") x else aperm(x, c(1, 5, 2, 3, 4))
          y <- layer_conv_3d(xin, groups * fg, c(3, 2, 3), padding = "same", groups = groups,
            data_format = format, dtype = "float32", weights = list(kernel, bias))
          expect_identical(conv3d:::last_forward_path(), "rows")
          ref <- reference_conv3d(xin, kernel, bias, padding = "same", groups = groups,
            data_format = format)
          expect_equal(y, ref, tolerance = 1e-5, info = paste(tier, fg, groups, format))
        }
      }
    }
  }
})

test_that("one-sample layers pack whole blocks of channels and voxels exactly", {
  # one sample, channels_last: the input is packed by transposing blocks of 16
  # channels x 8 voxels, with channels (37, paired groups of 10) and depths
  # (19, 17) that leave partial blocks
  set.seed(16)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(1, 19, 5, 3, 37), filters = 35, groups = 1),
    list(dims = c(1, 17, 4, 3, 40), filters = 32, groups = 4),
    list(dims = c(1, 17, 4, 3, 40), filters = 16, groups = 4)
  )
  for (s in cases) {
    cin <- s$dims[5]
    x <- array(rnorm(prod(s$dims)), s$dims)
    kernel <- array(rnorm(27 * cin / s$groups * s$filters), c(3, 3, 3, cin / s$groups, s$filters))
    bias <- rnorm(s$filters)
    ref <- reference_conv3d(x, kernel, bias, padding = "same", groups = s$groups)
    for (dtype in c("float32", "float64")) {
      expect_every_tier(function() {
        layer_conv_3d(x, s$filters, 3, padding = "same", groups = s$groups, dtype = dtype,
          weights = list(kernel, bias))
      }, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
      info = paste(dtype, s$filters, s$groups))
    }
  }
})

test_that("kernels of more than 64 taps pack their weights in chunks of taps exactly", {
  # each (channel, block of filters) pair's runs of taps are transposed 64
  # taps at a time: 75 and 147 taps take two and three chunks, in the kernel
  # spec's order of the axes; 21 filters leave a partial block
  set.seed(17)
  local_tier_and_threads()
  for (k in list(c(5, 5, 3), c(3, 7, 7))) {
    x <- array(rnorm(2 * 5 * 8 * 7 * 9), c(2, 5, 8, 7, 9))
    kernel <- array(rnorm(prod(k) * 9 * 21), c(k, 9, 21))
    bias <- rnorm(21)
    ref <- reference_conv3d(x, kernel, bias, padding = "same")
    for (dtype in c("float32", "float64")) {
      expect_every_tier(function() {
        layer_conv_3d(x, 21, k, padding = "same", dtype = dtype, weights = list(kernel, bias))
      }, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
      info = paste(dtype, paste(k, collapse = "x")))
      expect_identical(conv3d:::last_forward_path(), "rows")
    }
  }
})

test_that("the patch GEMM path (1x1x1, channels_last) matches the reference", {
  set.seed(13)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    # 3 * 5 * 7 * 11 = 1155 positions: not a multiple of any panel, several
    # panels per thread; 29 filters: not a multiple of any register tile
    x <- array(rnorm(3 * 5 * 7 * 11 * 37), c(3, 5, 7, 11, 37))
    kernel <- array(rnorm(37 * 29), c(1, 1, 1, 37, 29))
    bias <- rnorm(29)
    for (activation in list(NULL, "relu", "softmax")) {
      ref <- reference_conv3d(x, kernel, bias, activation = activation)
      for (dtype in c("float32", "float64")) {
        y <- layer_conv_3d(x, 29, 1, activation = activation, dtype = dtype,
          weights = list(kernel, bias))
        expect_equal(y, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
          info = paste(tier, dtype, format(activation)))
      }
    }
  }
})

test_that("the patch GEMM path for non-overlapping strided kernels matches the reference", {
  set.seed(14)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  cases <- list(
    list(k = 2, s = 2, pad = "valid", dims = c(2, 9, 8, 7, 5)),
    list(k = c(1, 2, 3), s = c(2, 2, 3), pad = "valid", dims = c(1, 7, 6, 10, 3)),
    list(k = 2, s = 2, pad = "same", dims = c(2, 6, 8, 4, 4)),
    list(k = c(1, 1, 1), s = c(2, 1, 3), pad = "valid", dims = c(3, 5, 4, 7, 6)),
    # one sample: depth rows of 19 and 20 patches read as strided runs; rows
    # of 16, 17 and 21 end in 8, 1 and 5 patches after the whole vectors
    list(k = 2, s = 2, pad = "valid", dims = c(1, 38, 3, 4, 5)),
    list(k = 2, s = 2, pad = "valid", dims = c(1, 32, 2, 2, 3)),
    list(k = 2, s = 2, pad = "valid", dims = c(1, 34, 2, 3, 2)),
    list(k = 2, s = 2, pad = "valid", dims = c(1, 42, 3, 2, 2)),
    list(k = c(3, 1, 2), s = c(3, 2, 2), pad = "valid", dims = c(1, 60, 4, 3, 2)),
    # 1600 and 1920 patches: several panels per thread, each filled while the
    # one before is multiplied, from strided runs (one sample) or gathered
    list(k = 2, s = 2, pad = "valid", dims = c(1, 40, 20, 16, 3)),
    list(k = 2, s = 2, pad = "valid", dims = c(2, 24, 20, 16, 3)),
    # a run of whole vectors that ends at the end of the input (a read past it
    # shows under AddressSanitizer: the vector is large enough to be malloc'd)
    list(k = c(2, 1, 1), s = 2, pad = "valid", dims = c(1, 4096, 1, 1, 1))
  )
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    for (case in cases) {
      x <- array(rnorm(prod(case$dims)), case$dims)
      kdims <- rep_len(case$k, 3)
      kernel <- array(rnorm(prod(kdims) * case$dims[5] * 19), c(kdims, case$dims[5], 19))
      bias <- rnorm(19)
      ref <- reference_conv3d(x, kernel, bias, strides = rep_len(case$s, 3), padding = case$pad,
        activation = "tanh")
      for (dtype in c("float32", "float64")) {
        y <- layer_conv_3d(x, 19, case$k, strides = case$s, padding = case$pad,
          activation = "tanh", dtype = dtype, weights = list(kernel, bias))
        expect_equal(y, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
          info = paste(tier, dtype, paste(case$k, collapse = "x")))
      }
    }
  }
})

test_that("the depthwise path (vectors across channels) matches the reference", {
  set.seed(15)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  # 40 channels: full vectors plus a remainder on every tier; W of 7 and 13
  # covers partial voxel tiles
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    for (w in c(7, 13)) {
      x <- array(rnorm(2 * 5 * 4 * w * 40), c(2, 5, 4, w, 40))
      kernel <- array(rnorm(3 * 3 * 3 * 40), c(3, 3, 3, 1, 40))
      bias <- rnorm(40)
      for (dtype in c("float32", "float64")) {
        y <- layer_conv_3d(x, 40, 3, padding = "same", groups = 40, dtype = dtype,
          activation = "relu", weights = list(kernel, bias))
        ref <- reference_conv3d(x, kernel, bias, padding = "same", groups = 40,
          activation = "relu")
        expect_equal(y, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
          info = paste(tier, dtype, w))
      }
    }
  }
})

test_that("the planar depthwise path (vectors along depth) matches the reference", {
  # channels_last: each channel's volume is convolved on its own, sample by
  # sample, with vectors along depth. Output depths of 21 and 17 leave a
  # partial last vector (whose store spills into the next row) on every tier;
  # 11 and 12 output rows take the 8-, 4- and 1-row blocks (and, 3 x 3 along
  # depth and height, the shifted-vector blocks where the tier has them: 11
  # and 10 rows, dilated along width); dilation, strides along height and
  # width, and no bias; 2 channels of 18 output planes split
  # into slabs with halos; 2, 3 and 30 samples woven back together (the last
  # in several pieces), and 1100 (more than the weave buffer holds for one
  # voxel: each voxel's samples in two pieces); and 8 channels of 42 planes in
  # slabs of a few planes, streamed past the caches
  set.seed(18)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(1, 21, 11, 9, 5), k = 3, args = list(padding = "same", activation = "relu")),
    list(dims = c(1, 21, 13, 8, 3), k = c(3, 2, 4),
      args = list(dilation_rate = c(2, 1, 2), activation = "tanh")),
    list(dims = c(1, 35, 7, 11, 4), k = c(5, 3, 3),
      args = list(padding = "same", strides = c(1, 2, 3), activation = "sigmoid")),
    list(dims = c(1, 16, 9, 7, 3), k = c(1, 3, 2), bias = FALSE, args = list(padding = "same")),
    list(dims = c(1, 18, 10, 9, 3), k = c(3, 3, 2),
      args = list(padding = "same", dilation_rate = c(1, 1, 2))),
    list(dims = c(1, 20, 16, 18, 2), k = 3, args = list(padding = "same")),
    list(dims = c(2, 17, 6, 5, 4), k = 3, args = list(padding = "same")),
    list(dims = c(3, 19, 5, 7, 3), k = c(3, 2, 3), args = list(strides = c(1, 2, 1))),
    list(dims = c(30, 16, 4, 5, 2), k = 3, args = list(padding = "same", activation = "relu")),
    list(dims = c(1100, 16, 1, 1, 2), k = 3, args = list(padding = "same")),
    list(dims = c(1, 40, 40, 42, 8), k = 3, args = list(padding = "same"), streamed = TRUE)
  )
  for (case in cases) {
    cin <- case$dims[5]
    k <- rep_len(case$k, 3)
    x <- array(rnorm(prod(case$dims)), case$dims)
    kernel <- array(rnorm(prod(k) * cin), c(k, 1, cin))
    bias <- if (isFALSE(case$bias)) NULL else rnorm(cin)
    ref <- do.call(reference_conv3d, c(list(x, kernel, bias, groups = cin), case$args))
    for (dtype in c("float32", "float64")) {
      expect_every_tier(function() {
        do.call(layer_conv_3d, c(list(x, cin, case$k, groups = cin, dtype = dtype,
          use_bias = !is.null(bias), weights = c(list(kernel), if (!is.null(bias)) list(bias))),
          case$args))
      }, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
      info = paste(dtype, paste(case$dims, collapse = "x")))
      expect_identical(conv3d:::last_forward_path(), "depthwise")
      expect_identical(conv3d:::last_forward_streamed(), isTRUE(case$streamed))
    }
  }
})

test_that("depthwise layers the planar depthwise path does not take still match", {
  # softmax runs over each voxel's channels; channels_first interleaves the
  # channels; a stride along depth leaves no unit-stride rows; depth rows of
  # 3 would fill a fraction of a vector (every tier's float32 vectors are
  # longer)
  set.seed(19)
  local_tier_and_threads()
  x <- array(rnorm(17 * 6 * 5 * 4), c(1, 17, 6, 5, 4))
  kernel <- array(rnorm(27 * 4), c(3, 3, 3, 1, 4))
  bias <- rnorm(4)
  cases <- list(
    list(x = x, args = list(activation = "softmax")),
    list(x = aperm(x, c(1, 5, 2, 3, 4)), args = list(data_format = "channels_first")),
    list(x = x, args = list(strides = c(2, 1, 1))),
    list(x = x[, 1:3, , , , drop = FALSE], args = list())
  )
  for (case in cases) {
    ref <- do.call(reference_conv3d, c(list(case$x, kernel, bias, groups = 4,
      padding = "same"), case$args))
    y <- do.call(layer_conv_3d, c(list(case$x, 4, 3, groups = 4, padding = "same",
      weights = list(kernel, bias)), case$args))
    expect_equal(y, ref, tolerance = 1e-5, info = paste(names(case$args), collapse = " "))
    expect_identical(conv3d:::last_forward_path(), "rows")
  }
})

test_that("the few-filters path (reduction across channels) matches the reference", {
  set.seed(17)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  # 1 to 4 filters per group over 16 to 64 channels (whole vectors on every
  # tier), rows longer and shorter than a tile, dilation along rows (no folding
  # of (kw, c)), two groups, and channels_first
  cases <- list(
    list(dims = c(2, 13, 5, 4, 32), f = 1, k = 3, args = list(padding = "same")),
    list(dims = c(1, 7, 6, 5, 16), f = 2, k = c(2, 3, 3), args = list()),
    list(dims = c(1, 9, 5, 6, 64), f = 3, k = 3, args = list(padding = "same", strides = 2)),
    list(dims = c(1, 6, 7, 8, 32), f = 4, k = 3, args = list(dilation_rate = c(1, 1, 2))),
    list(dims = c(1, 5, 6, 9, 64), f = 4, k = 3, g = 2, args = list(padding = "same")),
    list(dims = c(2, 32, 5, 6, 7), f = 1, k = 3, cf = TRUE, args = list(padding = "same"))
  )
  for (tier in available_tiers()) {
    conv3d_cpu(tier)
    for (case in cases) {
      g <- if (is.null(case$g)) 1 else case$g
      fmt <- if (isTRUE(case$cf)) "channels_first" else "channels_last"
      x <- array(rnorm(prod(case$dims)), case$dims)
      cin <- if (isTRUE(case$cf)) case$dims[2] else case$dims[5]
      kernel <- array(rnorm(prod(rep_len(case$k, 3)) * cin / g * case$f),
        c(rep_len(case$k, 3), cin / g, case$f))
      bias <- rnorm(case$f)
      ref <- do.call(reference_conv3d, c(list(x, kernel, bias, groups = g, data_format = fmt,
        activation = "sigmoid"), case$args))
      for (dtype in c("float32", "float64")) {
        y <- do.call(layer_conv_3d, c(list(x, case$f, case$k, groups = g, data_format = fmt,
          activation = "sigmoid", dtype = dtype, weights = list(kernel, bias)), case$args))
        expect_equal(y, ref, tolerance = if (dtype == "float32") 1e-5 else 1e-12,
          info = paste(tier, dtype, case$f, paste(case$dims, collapse = "x")))
      }
    }
  }
})

test_that("rows that leave a short tile run in spans of several rows", {
  # output rows (along depth here) of 16, 14 and 20 voxels are grouped so the
  # widest tiles cover them (e.g. 3 rows of 16 = 4 tiles of 12); 5 or 7 rows
  # per plane leave a shorter last span; strided and dilated tap windows. The
  # channel counts keep the layers off the planar path, which is switched off
  # for the two-channel layer.
  set.seed(17)
  local_tier_and_threads()
  allowed <- conv3d:::planar_allow(FALSE)
  withr::defer(conv3d:::planar_allow(allowed))
  cases <- list(
    list(dims = c(1, 16, 4, 5, 9), args = list(filters = 20, kernel_size = 3, padding = "same")),
    list(dims = c(2, 30, 5, 7, 2), args = list(filters = 7, kernel_size = c(3, 2, 3), strides = c(2, 1, 1),
      padding = "same")),
    list(dims = c(1, 24, 6, 7, 10), args = list(filters = 33, kernel_size = c(5, 3, 1),
      dilation_rate = c(1, 2, 1), padding = "valid"))
  )
  for (case in cases) {
    d <- random_layer_case(case)
    expect_layer_on_path(d, case$args, "rows", dim(d$ref)[2])
  }
})

test_that("short tap runs of one or a few channels (1 to 10 inputs) match the reference", {
  # Layers of one to three channels on the rows path (the planar path,
  # which takes them where its tiles fit, switched off: the rows path has
  # them when the rows are shorter than a vector or the filters few); the
  # folded (kernel width x channels) run of each tap row is then 1 to 10
  # inputs long, shorter at the padded ends: the register tiles step through
  # runs of up to 8 in straight-line code and loop over longer ones.
  set.seed(29)
  local_tier_and_threads()
  allowed <- conv3d:::planar_allow(FALSE)
  withr::defer(conv3d:::planar_allow(allowed))
  cases <- list(
    list(cin = 1, kd = c(1, 2, 3, 4, 5, 6, 7, 8, 9), filters = 5),
    list(cin = 2, kd = c(2, 4, 5), filters = 33),
    list(cin = 3, kd = 3, filters = 16)
  )
  for (case in cases) for (kd in case$kd) {
    x <- array(rnorm(1 * 22 * 3 * 4 * case$cin), c(1, 22, 3, 4, case$cin))
    kernel <- array(rnorm(kd * 2 * 2 * case$cin * case$filters), c(kd, 2, 2, case$cin, case$filters))
    bias <- rnorm(case$filters)
    ref <- reference_conv3d(x, kernel, bias, c(2, 1, 1), "same")
    for (dtype in c("float64", "float32")) {
      layer <- layer_conv_3d(filters = case$filters, kernel_size = c(kd, 2, 2), strides = c(2, 1, 1),
        padding = "same", dtype = dtype, weights = list(kernel, bias))
      expect_every_tier(function() {
        y <- layer(x)
        expect_identical(conv3d:::last_forward_path(), "rows")
        y
      }, ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4,
      info = paste(dtype, "cin", case$cin, "kd", kd))
    }
  }
})

test_that("the planar path (few channels per group) matches the reference", {
  # up to 8 channels per group and rows (depth here) of at least one vector:
  # vectors of voxels along rows of input planes each thread packs into its
  # ring. Rows of 19, 20 and 33 end in a partial vector; 5 and 12 filters per
  # group leave a partial block of filters; 3 rows per work item leave a
  # shorter last item; dilation along the rows, strides across them, two and
  # three samples, both data formats, activations applied in the scratch
  # (softmax over the filters, or over W under channels_first), no bias.
  # Then strides along the rows, which pack each input row as stride phases
  # (every stride-th padded input) so that a vector of outputs reads one run
  # of a phase: one channel and a 7x7x7 kernel of stride 2 (mednet_stem's
  # kind, a 'same' split that pads one phase more than the other); strides of
  # 3 and 2 with valid padding; rows of 19 with ReLU; groups; two samples,
  # which do not fold (depth stride 2); channels_first. The direct tiles:
  # the Winograd rows would take several of these layers.
  set.seed(18)
  local_tier_and_threads()
  local_planar_direct()
  cases <- list(
    list(dims = c(1, 19, 6, 5, 1), args = list(filters = 8, kernel_size = 3, padding = "same")),
    list(dims = c(1, 20, 5, 4, 16), args = list(filters = 24, kernel_size = 3, groups = 2,
      dilation_rate = c(2, 1, 3), padding = "same", activation = "relu")),
    list(dims = c(2, 33, 4, 3, 3), args = list(filters = 12, kernel_size = c(3, 2, 1),
      strides = c(1, 1, 2), padding = "valid", activation = "softmax")),
    list(dims = c(1, 33, 5, 4, 12), args = list(filters = 20, kernel_size = 3, groups = 4,
      strides = c(1, 2, 2), padding = "same", use_bias = FALSE)),
    list(dims = c(1, 24, 5, 4, 6), args = list(filters = 12, kernel_size = 3, groups = 2,
      padding = "same", activation = "softmax", data_format = "channels_first")),
    # three samples of 5 planes each along W (the planes' axis): runs of 4
    # planes cross samples; dilation 2 along W: a ring of 5 planes for 3 taps
    list(dims = c(3, 20, 6, 5, 2), args = list(filters = 8, kernel_size = 3,
      dilation_rate = c(1, 1, 2), padding = "same")),
    list(dims = c(1, 32, 6, 7, 1), args = list(filters = 12, kernel_size = 7, strides = 2,
      padding = "same")),
    list(dims = c(1, 50, 5, 6, 2), args = list(filters = 9, kernel_size = c(4, 3, 2),
      strides = c(3, 1, 2), padding = "valid")),
    list(dims = c(1, 37, 6, 5, 3), args = list(filters = 16, kernel_size = 3, strides = 2,
      padding = "same", activation = "relu")),
    list(dims = c(1, 33, 4, 5, 4), args = list(filters = 10, kernel_size = c(5, 2, 3),
      strides = c(2, 1, 1), groups = 2, padding = "same", use_bias = FALSE)),
    list(dims = c(2, 34, 4, 5, 2), args = list(filters = 8, kernel_size = c(2, 3, 3),
      strides = c(2, 1, 2), padding = "same", activation = "tanh")),
    list(dims = c(1, 40, 4, 5, 3), args = list(filters = 8, kernel_size = c(6, 3, 3),
      strides = c(2, 2, 1), padding = "same", data_format = "channels_first"))
  )
  for (case in cases) {
    expect_layer_on_path(random_layer_case(case), case$args, "planar",
      paste(case$dims, collapse = "x"))
  }
})

test_that("the planar path's Winograd rows match the reference", {
  # Planar layers of at least 64 taps x channels per group, undilated along
  # H (the planes' rows' cross axis here) with more taps along it than the
  # stride, compute bundles of 4 output rows (or 2) from each stride phase's
  # transformed input rows. Bundles of 4, then at most 2, on every tier:
  # mednet_stem's kind (7x7x7, stride 2, one channel) with a last bundle of
  # one row; 3x3x3 over 3 channels with ReLU (F(4, 3), 11 rows); two groups
  # of 8 channels with dilation along the rows and W; two unfolded samples,
  # 5 taps of stride 2 along H and strides along the rows; channels_first
  # with a softmax, 4 taps (F(4, 4): 7 points); 6 taps, which take bundles of
  # 2 only (F(2, 6)); stride 3 (three phases, 16 points); three samples
  # folded into depth, no bias; 3 output rows, bundles of 2 only.
  set.seed(52)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(1, 32, 9, 7, 1), args = list(filters = 12, kernel_size = 7, strides = 2,
      padding = "same")),
    list(dims = c(1, 20, 11, 6, 3), args = list(filters = 10, kernel_size = 3,
      padding = "same", activation = "relu")),
    list(dims = c(1, 19, 10, 5, 16), args = list(filters = 24, kernel_size = 3, groups = 2,
      dilation_rate = c(2, 1, 3), padding = "same")),
    list(dims = c(2, 33, 13, 5, 2), args = list(filters = 8, kernel_size = c(3, 5, 3),
      strides = c(2, 2, 1), padding = "same", activation = "tanh")),
    list(dims = c(1, 24, 8, 5, 6), args = list(filters = 12, kernel_size = 4, groups = 2,
      padding = "valid", activation = "softmax", data_format = "channels_first")),
    list(dims = c(1, 17, 9, 4, 2), args = list(filters = 9, kernel_size = c(2, 6, 3),
      padding = "valid")),
    list(dims = c(1, 48, 20, 5, 1), args = list(filters = 16, kernel_size = 7, strides = 3,
      padding = "same")),
    list(dims = c(3, 16, 9, 5, 3), args = list(filters = 8, kernel_size = 3, padding = "same",
      use_bias = FALSE)),
    list(dims = c(1, 18, 3, 4, 4), args = list(filters = 8, kernel_size = 3, padding = "same"))
  )
  rows <- conv3d:::planar_winograd_rows(4)
  withr::defer(conv3d:::planar_winograd_rows(rows))
  for (case in cases) {
    d <- random_layer_case(case)
    for (most in c(4, 2)) {
      conv3d:::planar_winograd_rows(most)
      expect_layer_on_path(d, case$args, "planar-winograd",
        paste(most, paste(case$dims, collapse = "x")))
    }
  }
})

test_that("planar tiles writing the R output from their registers match the reference", {
  # Rows of whole vectors on every tier (16 and 32 voxels along depth: 4, 8
  # and 16 lanes), one after another in R, and no activation or ReLU: the
  # tiles convert and store their sums themselves. 12 and 10 filters leave a
  # partial block of filters (8 a block on AVX-512); groups, dilation along
  # the rows, strides across them, valid padding, no bias; two samples folded
  # into one depth of 32; an output of 4 MB and more, streamed. A sigmoid, and
  # rows of 19, keep the scratch and its separate store.
  set.seed(41)
  local_tier_and_threads()
  local_planar_direct()
  cases <- list(
    list(dims = c(1, 32, 5, 4, 1), direct = TRUE, args = list(filters = 12, kernel_size = 3,
      padding = "same")),
    list(dims = c(1, 16, 6, 5, 4), direct = TRUE, args = list(filters = 10, kernel_size = 3,
      groups = 2, dilation_rate = c(2, 1, 1), padding = "same", activation = "relu")),
    list(dims = c(1, 18, 7, 6, 3), direct = TRUE, args = list(filters = 8, kernel_size = 3,
      strides = c(1, 2, 2), padding = "valid", activation = "relu", use_bias = FALSE)),
    list(dims = c(2, 16, 5, 4, 2), direct = TRUE, args = list(filters = 9, kernel_size = 3,
      padding = "same", activation = "relu")),
    list(dims = c(1, 32, 32, 40, 1), direct = TRUE, streamed = TRUE,
      args = list(filters = 17, kernel_size = 3, padding = "same", activation = "relu")),
    list(dims = c(1, 16, 5, 4, 1), direct = FALSE, args = list(filters = 8, kernel_size = 3,
      padding = "same", activation = "sigmoid")),
    list(dims = c(1, 19, 5, 4, 1), direct = FALSE, args = list(filters = 8, kernel_size = 3,
      padding = "same", activation = "relu"))
  )
  for (case in cases) expect_direct_layer(case, "planar")
})

test_that("Winograd rows writing the R output from their registers match the reference", {
  # The planar path's Winograd rows sum each bundle's rows in registers and,
  # when the rows are whole vectors one after another in R and the
  # activation is none or ReLU, convert and store them into the R array
  # there: mednet_stem's kind; ReLU over two groups of 4 channels; two
  # samples folded into a depth of 32; an output of 4 MB and more, streamed.
  # A sigmoid keeps the scratch and its separate store.
  set.seed(43)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(1, 32, 9, 7, 1), direct = TRUE, args = list(filters = 12, kernel_size = 7,
      strides = 2, padding = "same")),
    list(dims = c(1, 16, 10, 5, 8), direct = TRUE, args = list(filters = 10, kernel_size = 3,
      groups = 2, padding = "same", activation = "relu")),
    list(dims = c(2, 16, 9, 4, 3), direct = TRUE, args = list(filters = 9, kernel_size = 3,
      padding = "same")),
    list(dims = c(1, 32, 32, 40, 3), direct = TRUE, streamed = TRUE,
      args = list(filters = 17, kernel_size = 3, padding = "same", activation = "relu")),
    list(dims = c(1, 16, 9, 5, 3), direct = FALSE, args = list(filters = 8, kernel_size = 3,
      padding = "same", activation = "sigmoid"))
  )
  for (case in cases) expect_direct_layer(case, "planar-winograd")
})

test_that("patch GEMM blocks writing the R output from their registers match the reference", {
  # Whole sub-blocks of positions (2 vectors) go from the registers into each
  # filter's run of the R output when there is no activation or a ReLU; the
  # positions after the last whole one, and other activations, go through
  # the block's scratch. 1260 and 120 positions leave a tail; 20 and 17
  # filters a partial block of filters; a strided 2x2x2 patch layer; an
  # output of 4 MB and more, streamed, and one whose positions (31713) would
  # leave its vectors unaligned, which keeps the scratch.
  set.seed(44)
  local_tier_and_threads()
  cases <- list(
    list(dims = c(2, 7, 9, 10, 24), direct = TRUE, args = list(filters = 20, kernel_size = 1)),
    list(dims = c(1, 8, 10, 12, 6), direct = TRUE, args = list(filters = 17, kernel_size = 2,
      strides = 2, activation = "relu")),
    list(dims = c(2, 7, 9, 10, 5), direct = FALSE, args = list(filters = 12, kernel_size = 1,
      activation = "softmax")),
    list(dims = c(1, 40, 32, 32, 8), direct = TRUE, streamed = TRUE,
      args = list(filters = 17, kernel_size = 1, activation = "relu")),
    list(dims = c(1, 33, 31, 31, 4), direct = FALSE, streamed = TRUE,
      args = list(filters = 17, kernel_size = 1))
  )
  for (case in cases) expect_direct_layer(case, "patch")
})

test_that("outputs and padded input copies of 4 MB and more, written past the caches, match the reference", {
  # The patch, planar and (one sample, channels_last) rows paths write such
  # outputs with streaming stores, in whole vectors from the first
  # vector-aligned double of each run: runs of 3 x 33 and 33 doubles start
  # anywhere and end in a partial vector, and 17 filters leave a partial
  # block. The rows cases' padded input copies (4.9 and 6.1 MB) are streamed
  # too, where whole aligned vectors of 16 channels are written (AVX-512):
  # 32 channels are two such vectors per voxel, 40 leave 8 channels to plain
  # stores, and the odd extents leave partial vectors of voxels. (Their
  # 3x3x2 kernels keep them off the Winograd path, which takes 3x3x3.)
  set.seed(19)
  local_tier_and_threads()
  small <- array(rnorm(2 * 5 * 4 * 6 * 2), c(2, 5, 4, 6, 2))
  small_kernel <- array(rnorm(3 * 2 * 3 * 2 * 3), c(3, 2, 3, 2, 3))
  for (padding in c("same", "valid")) { # the reference by taps against the loops
    expect_equal(reference_conv3d_by_taps(small, small_kernel, 1:3, padding),
      reference_conv3d(small, small_kernel, 1:3, padding = padding), tolerance = 1e-12)
  }
  cases <- list(
    list(path = "planar", dims = c(1, 33, 32, 31, 1), kernel_size = 3, padding = "same"),
    list(path = "patch", dims = c(2, 33, 16, 31, 8), kernel_size = 1, padding = "valid"),
    list(path = "rows", dims = c(1, 33, 32, 31, 32), kernel_size = c(3, 3, 2), padding = "same"),
    list(path = "rows", dims = c(1, 33, 32, 31, 40), kernel_size = c(3, 3, 2), padding = "same")
  )
  for (case in cases) {
    if (case$path == "rows") { # the padded input copy is 4 MB or more too
      expect_gte(prod(case$dims[2:4] + rep_len(case$kernel_size, 3) - 1) * case$dims[5] * 4,
        4 * 2^20)
    }
    expect_streamed_layer(case$dims, case$kernel_size, 17, case$padding, case$path,
      c(float32 = 1e-4, float64 = 1e-10), min_bytes = 4 * 2^20)
  }
  # and below 4 MB, plain stores
  layer <- layer_conv_3d(filters = 17, kernel_size = 3, padding = "same")
  layer(array(rnorm(33 * 8 * 8), c(1, 33, 8, 8, 1)))
  expect_identical(conv3d:::last_forward_path(), "planar")
  expect_false(conv3d:::last_forward_streamed())
})

test_that("results of 32 MB and more leave the rows path as whole aligned lines", {
  # Results this large are 64-byte aligned R vectors (the result pool), so
  # rows of 32 voxels along depth start on a cache line: each filter's run
  # leaves the tier's transposer in whole lines, streamed (AVX-512: 8 x 8
  # tiles of doubles for float64). 9 channels keep the layer off the planar
  # path, the 1x1x2 kernel off the patch and Winograd paths.
  set.seed(23)
  local_tier_and_threads()
  expect_streamed_layer(c(1, 32, 32, 32, 9), c(1, 1, 2), 128, "same", "rows",
    c(float64 = 1e-10, float32 = 1e-4), min_bytes = 32 * 2^20)
})

test_that("every path gives bit-identical results for 1 and 2 threads", {
  set.seed(16)
  old <- conv3d_threads()
  withr::defer(conv3d_threads(0))
  layers <- list(
    patch = list(dims = c(2, 8, 9, 10, 24), args = list(filters = 20, kernel_size = 1)),
    strided_patch = list(dims = c(1, 8, 10, 12, 6),
      args = list(filters = 12, kernel_size = 2, strides = 2)),
    depthwise = list(dims = c(2, 6, 7, 9, 40), args = list(filters = 40, kernel_size = 3,
      groups = 40, padding = "same")),
    paired_groups = list(dims = c(1, 9, 8, 7, 16), args = list(filters = 32, kernel_size = 3,
      groups = 4, padding = "same")),
    short_rows = list(dims = c(1, 2, 5, 5, 20), args = list(filters = 40, kernel_size = 3,
      padding = "same")),
    few_filters = list(dims = c(1, 13, 6, 7, 64), args = list(filters = 3, kernel_size = 3,
      padding = "same")),
    planar = list(dims = c(1, 37, 9, 8, 8), args = list(filters = 24, kernel_size = 3,
      groups = 2, padding = "same"))
  )
  for (name in names(layers)) {
    case <- layers[[name]]
    x <- array(rnorm(prod(case$dims)), case$dims)
    for (dtype in c("float32", "float64")) {
      layer <- do.call(layer_conv_3d, c(case$args, list(dtype = dtype)))
      conv3d_threads(1)
      one <- layer(x)
      conv3d_threads(2)
      two <- layer(x)
      expect_identical(one, two, info = paste(name, dtype))
    }
  }
})

test_that("batches of several samples, folded into depth, match the reference on every path", {
  # channels_last layers of unit depth stride see N samples as one sample N
  # times as deep (conv_fold_batch): taps N apart, N times the padding. Each
  # path, with odd 'same' splits, dilation and valid padding along depth, for
  # the forward pass and all three gradients; the transposed layer's forward
  # pass too; a depth stride of 2 (not folded) alongside
  set.seed(31)
  local_tier_and_threads()
  cases <- list(
    list(path = "planar", dims = c(3, 9, 6, 7, 1), args = list(filters = 16, kernel_size = 3,
      padding = "same")),
    list(path = "planar", dims = c(4, 7, 5, 17, 2), args = list(filters = 8,
      kernel_size = c(2, 3, 2), dilation_rate = c(2, 1, 1), padding = "same")),
    list(path = "winograd", dims = c(3, 6, 5, 7, 16), args = list(filters = 16,
      kernel_size = 3, padding = "same")),
    list(path = "rows", dims = c(2, 6, 7, 5, 16), args = list(filters = 20, kernel_size = 3,
      strides = c(1, 2, 2), padding = "same")),
    list(path = "rows", dims = c(3, 8, 6, 6, 16), args = list(filters = 16,
      kernel_size = c(3, 2, 2), dilation_rate = c(2, 1, 1), padding = "valid")),
    list(path = "depthwise", dims = c(3, 12, 6, 5, 8), args = list(filters = 8,
      kernel_size = 3, groups = 8, padding = "same")),
    list(path = "patch", dims = c(3, 5, 4, 6, 12), args = list(filters = 10, kernel_size = 1)),
    list(path = "rows", dims = c(3, 7, 6, 5, 16), args = list(filters = 16, kernel_size = 3,
      strides = c(2, 1, 1), padding = "same"))
  )
  for (case in cases) {
    a <- case$args
    cin <- case$dims[5]
    groups <- if (is.null(a$groups)) 1 else a$groups
    ks <- rep_len(a$kernel_size, 3)
    kernel <- array(rnorm(prod(ks) * cin / groups * a$filters), c(ks, cin / groups, a$filters))
    bias <- rnorm(a$filters)
    x <- array(rnorm(prod(case$dims)), case$dims)
    strides <- if (is.null(a$strides)) 1 else a$strides
    dilation <- if (is.null(a$dilation_rate)) 1 else a$dilation_rate
    padding <- if (is.null(a$padding)) "valid" else a$padding
    ref <- reference_conv3d(x, kernel, bias, strides, padding, dilation, groups)
    dy <- array(rnorm(length(ref)), dim(ref))
    ref_grads <- reference_conv3d_gradients(x, kernel, dy, strides, padding, dilation, groups)
    info <- paste(case$path, paste(case$dims, collapse = "x"))
    for (dtype in c("float64", "float32")) {
      tol <- if (dtype == "float64") 1e-10 else 1e-4
      layer <- do.call(layer_conv_3d, c(a, list(dtype = dtype, weights = list(kernel, bias))))
      expect_every_tier(function() {
        y <- layer(x)
        expect_identical(conv3d:::last_forward_path(), case$path, info = info)
        y
      }, ref, tolerance = tol, info = paste(dtype, info))
      expect_every_tier(function() conv3d_gradients(layer, x, dy), ref_grads, tolerance = tol,
        info = paste(dtype, info, "gradients"))
    }
  }
  # a transposed layer of unit depth stride (its forward pass is an input
  # gradient) on three samples
  x <- array(rnorm(3 * 5 * 4 * 6 * 4), c(3, 5, 4, 6, 4))
  kernel <- array(rnorm(3 * 3 * 3 * 6 * 4), c(3, 3, 3, 6, 4))
  ref <- reference_conv3d_transpose(x, kernel, strides = c(1, 2, 1), padding = "same")
  for (dtype in c("float64", "float32")) {
    layer <- layer_conv_3d_transpose(filters = 6, kernel_size = 3, strides = c(1, 2, 1),
      padding = "same", use_bias = FALSE, dtype = dtype, weights = list(kernel))
    expect_every_tier(function() layer(x), ref, tolerance = if (dtype == "float64") 1e-10 else 1e-4,
      info = paste(dtype, "transposed"))
  }
})

test_that("a batch whose folded depth would leave the Winograd path keeps it, unfolded", {
  # 16 samples of 64 x 2 x 2 voxels and 128 channels: rows of 1024 folded
  # voxels would pass the Winograd scratch bound, so the layer runs
  # unfolded; each sample's result is its own (one sample: nothing to fold)
  set.seed(32)
  x <- array(rnorm(16 * 64 * 2 * 2 * 128), c(16, 64, 2, 2, 128))
  layer <- layer_conv_3d(filters = 128, kernel_size = 3, padding = "same", dtype = "float32")
  y <- layer(x)
  expect_identical(conv3d:::last_forward_path(), "winograd")
  for (n in c(1, 9, 16)) {
    expect_equal(y[n, , , , , drop = FALSE], layer(x[n, , , , , drop = FALSE]), tolerance = 1e-5,
      info = n)
  }
})
