# A naive reference implementation of Keras' Conv3D forward pass, written in
# plain R loops.  It is deliberately independent of the package code (it calls
# no conv3d function) so that tests can compare the package against it.
#
# Semantics (see SPEC.md):
# * x is channels_last (N, D, H, W, C) or channels_first (N, C, D, H, W);
#   kernel is (kd, kh, kw, C/groups, filters) for both formats; bias has length
#   filters (or is NULL).
# * cross-correlation (no kernel flip):
#     y[n, o, f] = b[f] + sum_t sum_{c < C/G} xpad[n, o*s + t*d, g*C/G + c] * W[t, c, f]
#   with g = floor(f / (filters/G)) (0-based).
# * output length with k_eff = (k - 1)*d + 1: valid floor((n - k_eff)/s) + 1,
#   same ceil(n/s); 'same' pads P = max(0, (out - 1)*s + k_eff - n) zeros,
#   floor(P/2) before and the rest after.
# * the output has the data format of the input; the activation is applied
#   last (softmax over the last axis of the output array).

reference_activation <- function(y, name) {
  if (is.null(name)) return(y)
  if (is.function(name)) return(name(y))
  stopifnot(is.character(name), length(name) == 1L)
  softplus <- function(v) pmax(v, 0) + log1p(exp(-abs(v)))  # stable log(1 + e^v)
  sigmoid <- function(v) 1 / (1 + exp(-v))
  if (name == "softmax") {
    d <- dim(y)
    if (is.null(d)) d <- length(y)
    last <- d[length(d)]
    # column-major storage: the last index varies slowest, so each row of
    # this matrix holds one vector along the last axis
    m <- matrix(as.vector(y), ncol = last)
    out <- m
    for (i in seq_len(nrow(m))) {
      e <- exp(m[i, ] - max(m[i, ]))
      out[i, ] <- e / sum(e)
    }
    res <- y
    res[] <- as.vector(out)
    return(res)
  }
  f <- switch(name,
    linear       = function(v) v,
    relu         = function(v) pmax(v, 0),
    sigmoid      = sigmoid,
    tanh         = function(v) tanh(v),
    elu          = function(v) ifelse(v > 0, v, expm1(v)),
    selu         = function(v) {
      alpha <- 1.6732632423543772
      scale <- 1.0507009873554805
      scale * ifelse(v > 0, v, alpha * expm1(v))
    },
    softplus     = softplus,
    softsign     = function(v) v / (1 + abs(v)),
    swish        = ,
    silu         = function(v) v * sigmoid(v),
    # exact gelu: 0.5 * v * (1 + erf(v / sqrt(2))), erf(z) = 2 * pnorm(z * sqrt(2)) - 1
    gelu         = function(v) {
      erf <- function(z) 2 * stats::pnorm(z * sqrt(2)) - 1
      0.5 * v * (1 + erf(v / sqrt(2)))
    },
    exponential  = function(v) exp(v),
    hard_sigmoid = function(v) pmin(pmax(0.2 * v + 0.5, 0), 1),
    relu6        = function(v) pmin(pmax(v, 0), 6),
    leaky_relu   = function(v) ifelse(v >= 0, v, 0.2 * v),
    mish         = function(v) v * tanh(softplus(v)),
    stop("reference_activation: unknown activation '", name, "'")
  )
  res <- y
  res[] <- f(as.vector(y))
  res
}

reference_conv3d <- function(x, kernel, bias = NULL, strides = c(1, 1, 1),
                             padding = "valid", dilation_rate = c(1, 1, 1),
                             groups = 1, data_format = "channels_last",
                             activation = NULL) {
  strides <- rep_len(as.integer(strides), 3L)
  dilation <- rep_len(as.integer(dilation_rate), 3L)
  padding <- tolower(padding)
  stopifnot(padding %in% c("valid", "same"))
  data_format <- match.arg(data_format, c("channels_last", "channels_first"))
  stopifnot(length(dim(x)) == 5L, length(dim(kernel)) == 5L)

  # work in channels_last internally
  if (data_format == "channels_first") x <- aperm(x, c(1L, 3L, 4L, 5L, 2L))

  N <- dim(x)[1]
  in_size <- dim(x)[2:4]
  C <- dim(x)[5]
  k <- dim(kernel)[1:3]
  cpg <- dim(kernel)[4]          # input channels per group
  filters <- dim(kernel)[5]
  G <- as.integer(groups)
  stopifnot(C %% G == 0L, cpg == C / G, filters %% G == 0L)
  fpg <- filters / G             # filters per group
  if (!is.null(bias)) stopifnot(length(bias) == filters)

  k_eff <- (k - 1L) * dilation + 1L
  if (padding == "valid") {
    out_size <- (in_size - k_eff) %/% strides + 1L
    before <- c(0L, 0L, 0L)
    after <- c(0L, 0L, 0L)
  } else {
    out_size <- (in_size + strides - 1L) %/% strides     # ceil(n / s)
    P <- pmax(0L, (out_size - 1L) * strides + k_eff - in_size)
    before <- P %/% 2L
    after <- P - before
  }
  stopifnot(all(out_size >= 1L))

  # explicit zero padding
  pad_size <- in_size + before + after
  xpad <- array(0, c(N, pad_size, C))
  xpad[, before[1] + seq_len(in_size[1]), before[2] + seq_len(in_size[2]),
       before[3] + seq_len(in_size[3]), ] <- x

  y <- array(0, c(N, out_size, filters))
  for (n in seq_len(N)) {
    for (od in seq_len(out_size[1])) {
      # 1-based indices into xpad of the taps for this output position
      id <- (od - 1L) * strides[1] + (seq_len(k[1]) - 1L) * dilation[1] + 1L
      for (oh in seq_len(out_size[2])) {
        ih <- (oh - 1L) * strides[2] + (seq_len(k[2]) - 1L) * dilation[2] + 1L
        for (ow in seq_len(out_size[3])) {
          iw <- (ow - 1L) * strides[3] + (seq_len(k[3]) - 1L) * dilation[3] + 1L
          patch <- xpad[n, id, ih, iw, , drop = FALSE]
          dim(patch) <- c(k, C)
          for (f in seq_len(filters)) {
            g <- (f - 1L) %/% fpg                 # 0-based group of filter f
            chans <- g * cpg + seq_len(cpg)       # its input channels (1-based)
            # both operands in column-major (kd, kh, kw, c) order
            acc <- sum(as.vector(patch[, , , chans, drop = FALSE]) *
                         as.vector(kernel[, , , , f, drop = FALSE]))
            if (!is.null(bias)) acc <- acc + bias[f]
            y[n, od, oh, ow, f] <- acc
          }
        }
      }
    }
  }

  if (data_format == "channels_first") y <- aperm(y, c(1L, 5L, 2L, 3L, 4L))
  reference_activation(y, activation)
}

# reference_conv3d for unit strides and dilation, one group and channels_last,
# by taps instead of output positions: each tap adds its window of the padded
# input times its weights at every position at once, so that outputs of
# millions of elements take seconds, not hours.
reference_conv3d_by_taps <- function(x, kernel, bias = NULL, padding = "valid") {
  N <- dim(x)[1]
  in_size <- dim(x)[2:4]
  C <- dim(x)[5]
  k <- dim(kernel)[1:3]
  filters <- dim(kernel)[5]
  stopifnot(dim(kernel)[4] == C)
  pad <- if (padding == "same") k - 1L else c(0L, 0L, 0L)
  before <- pad %/% 2L
  out_size <- in_size + pad - k + 1L
  xpad <- array(0, c(N, in_size + pad, C))
  xpad[, before[1] + seq_len(in_size[1]), before[2] + seq_len(in_size[2]),
       before[3] + seq_len(in_size[3]), ] <- x
  positions <- N * prod(out_size)
  y <- matrix(if (is.null(bias)) 0 else rep(bias, each = positions), positions, filters)
  for (a in seq_len(k[1])) for (b in seq_len(k[2])) for (e in seq_len(k[3])) {
    window <- xpad[, a - 1L + seq_len(out_size[1]), b - 1L + seq_len(out_size[2]),
                   e - 1L + seq_len(out_size[3]), , drop = FALSE]
    y <- y + matrix(window, positions, C) %*% matrix(kernel[a, b, e, , ], C, filters)
  }
  array(y, c(N, out_size, filters))
}

# Gradients of the linear (pre-activation) convolution, by the same naive loops:
# given dy with the output's shape, list(input = dx, kernel = dW, bias = db) of
# the loss sum(y * dy). Each output position adds its dy times the kernel into
# the padded input gradient and its patch times dy into the kernel gradient.
reference_conv3d_gradients <- function(x, kernel, dy, strides = c(1, 1, 1),
                                       padding = "valid", dilation_rate = c(1, 1, 1),
                                       groups = 1, data_format = "channels_last") {
  strides <- rep_len(as.integer(strides), 3L)
  dilation <- rep_len(as.integer(dilation_rate), 3L)
  if (data_format == "channels_first") {
    x <- aperm(x, c(1L, 3L, 4L, 5L, 2L))
    dy <- aperm(dy, c(1L, 3L, 4L, 5L, 2L))
  }
  N <- dim(x)[1]
  in_size <- dim(x)[2:4]
  C <- dim(x)[5]
  k <- dim(kernel)[1:3]
  cpg <- dim(kernel)[4]
  filters <- dim(kernel)[5]
  fpg <- filters / groups
  k_eff <- (k - 1L) * dilation + 1L
  out_size <- dim(dy)[2:4]
  if (padding == "valid") {
    before <- c(0L, 0L, 0L)
  } else {
    before <- pmax(0L, (out_size - 1L) * strides + k_eff - in_size) %/% 2L
  }
  pad_size <- pmax(in_size + before, (out_size - 1L) * strides + k_eff) + 1L
  xpad <- array(0, c(N, pad_size, C))
  xpad[, before[1] + seq_len(in_size[1]), before[2] + seq_len(in_size[2]),
       before[3] + seq_len(in_size[3]), ] <- x
  dxpad <- array(0, dim(xpad))
  dw <- array(0, dim(kernel))
  for (n in seq_len(N)) for (od in seq_len(out_size[1])) for (oh in seq_len(out_size[2]))
    for (ow in seq_len(out_size[3])) {
      id <- (od - 1L) * strides[1] + (seq_len(k[1]) - 1L) * dilation[1] + 1L
      ih <- (oh - 1L) * strides[2] + (seq_len(k[2]) - 1L) * dilation[2] + 1L
      iw <- (ow - 1L) * strides[3] + (seq_len(k[3]) - 1L) * dilation[3] + 1L
      for (g in seq_len(groups) - 1L) {
        chans <- g * cpg + seq_len(cpg)
        fs <- g * fpg + seq_len(fpg)
        d <- dy[n, od, oh, ow, fs]
        w <- matrix(kernel[, , , , fs, drop = FALSE], ncol = fpg)
        patch <- as.vector(xpad[n, id, ih, iw, chans, drop = FALSE])
        dxpad[n, id, ih, iw, chans] <- dxpad[n, id, ih, iw, chans] + as.vector(w %*% d)
        dw[, , , , fs] <- dw[, , , , fs] + as.vector(outer(patch, d))
      }
    }
  dx <- dxpad[, before[1] + seq_len(in_size[1]), before[2] + seq_len(in_size[2]),
              before[3] + seq_len(in_size[3]), , drop = FALSE]
  db <- apply(dy, 5, sum)
  if (data_format == "channels_first") dx <- aperm(dx, c(1L, 5L, 2L, 3L, 4L))
  list(input = dx, kernel = dw, bias = db)
}

# The kernel gradient alone, vectorised for large layers: for each tap, the
# input positions that tap reads (a strided slice of the padded input) as a
# (positions x channels) matrix, times dy as a (positions x filters) matrix.
reference_kernel_gradient <- function(x, kernel_dim, dy, strides = c(1, 1, 1),
                                      padding = "valid", dilation_rate = c(1, 1, 1),
                                      groups = 1) {
  strides <- rep_len(as.integer(strides), 3L)
  dilation <- rep_len(as.integer(dilation_rate), 3L)
  in_size <- dim(x)[2:4]
  C <- dim(x)[5]
  k <- kernel_dim[1:3]
  cpg <- kernel_dim[4]
  filters <- kernel_dim[5]
  fpg <- filters / groups
  out_size <- dim(dy)[2:4]
  k_eff <- (k - 1L) * dilation + 1L
  before <- if (padding == "valid") c(0L, 0L, 0L) else
    pmax(0L, (out_size - 1L) * strides + k_eff - in_size) %/% 2L
  pad_size <- pmax(in_size + before, (out_size - 1L) * strides + k_eff)
  xpad <- array(0, c(dim(x)[1], pad_size, C))
  xpad[, before[1] + seq_len(in_size[1]), before[2] + seq_len(in_size[2]),
       before[3] + seq_len(in_size[3]), ] <- x
  dym <- matrix(dy, ncol = filters)
  dw <- array(0, kernel_dim)
  for (a in seq_len(k[1])) for (b in seq_len(k[2])) for (e in seq_len(k[3])) {
    idx <- lapply(1:3, function(i) (seq_len(out_size[i]) - 1L) * strides[i] +
      (c(a, b, e)[i] - 1L) * dilation[i] + 1L)
    xm <- matrix(xpad[, idx[[1]], idx[[2]], idx[[3]], , drop = FALSE], ncol = C)
    for (g in seq_len(groups) - 1L) {
      dw[a, b, e, , g * fpg + seq_len(fpg)] <- crossprod(xm[, g * cpg + seq_len(cpg), drop = FALSE],
        dym[, g * fpg + seq_len(fpg), drop = FALSE])
    }
  }
  dw
}

# Keras's Conv3DTranspose, from its definition: each input voxel i scatters
# x[n, i, c] * kernel[t, f, c] to output voxel i * strides + t * dilation -
# pad_before, where the output lengths are Keras's deconv_output_length() and
# pad_before is the front padding of the 'same' (or 'valid') convolution of
# that output with the same window and strides (TensorFlow's conv3d_transpose
# is that convolution's gradient). kernel is (kd, kh, kw, filters, C).
reference_conv3d_transpose <- function(x, kernel, bias = NULL, strides = c(1, 1, 1),
                                       padding = "valid", output_padding = NULL,
                                       dilation_rate = c(1, 1, 1),
                                       data_format = "channels_last", activation = NULL) {
  if (data_format == "channels_first") x <- aperm(x, c(1L, 3L, 4L, 5L, 2L))
  s <- rep_len(strides, 3)
  dil <- rep_len(dilation_rate, 3)
  n <- dim(x)[2:4]
  k <- dim(kernel)[1:3]
  filters <- dim(kernel)[4]
  k_eff <- (k - 1) * dil + 1
  out <- if (is.null(output_padding)) {
    if (padding == "same") n * s else n * s + pmax(k_eff - s, 0)
  } else {
    (n - 1) * s + k_eff - 2 * (if (padding == "same") k_eff %/% 2 else 0) +
      rep_len(output_padding, 3)
  }
  before <- if (padding == "same") pmax((n - 1) * s + k_eff - out, 0) %/% 2 else c(0, 0, 0)
  y <- array(0, c(dim(x)[1], out, filters))
  for (i1 in seq_len(n[1])) for (i2 in seq_len(n[2])) for (i3 in seq_len(n[3])) {
    v <- matrix(x[, i1, i2, i3, ], nrow = dim(x)[1])
    for (a in seq_len(k[1])) for (b in seq_len(k[2])) for (e in seq_len(k[3])) {
      o <- (c(i1, i2, i3) - 1) * s + (c(a, b, e) - 1) * dil - before + 1
      if (any(o < 1 | o > out)) next
      w <- matrix(kernel[a, b, e, , ], nrow = filters) # filters x C
      y[, o[1], o[2], o[3], ] <- y[, o[1], o[2], o[3], ] + v %*% t(w)
    }
  }
  if (!is.null(bias)) for (f in seq_len(filters)) y[, , , , f] <- y[, , , , f] + bias[f]
  # the activation on the output array (softmax along its last axis)
  if (data_format == "channels_first") y <- aperm(y, c(1L, 5L, 2L, 3L, 4L))
  reference_activation(y, activation)
}
