# Losses and metrics of compile()/fit(), with Keras's definitions: each is
# averaged over the last axis (the per-sample, per-position value), then over
# everything else. Each loss returns its value and its gradient with respect to
# the prediction.

loss_names <- c(mean_squared_error = "mean_squared_error", mse = "mean_squared_error",
  mean_absolute_error = "mean_absolute_error", mae = "mean_absolute_error",
  binary_crossentropy = "binary_crossentropy",
  categorical_crossentropy = "categorical_crossentropy",
  sparse_categorical_crossentropy = "sparse_categorical_crossentropy")

# Keras's epsilon for clipping probabilities.
loss_epsilon <- 1e-7

normalize_loss <- function(loss) {
  if (is.character(loss) && length(loss) == 1L && tolower(loss) %in% names(loss_names)) {
    return(loss_names[[tolower(loss)]])
  }
  conv3d_abort(sprintf("`loss` must be one of %s, not %s.",
    paste0("\"", unique(loss_names), "\"", collapse = ", "), format_value(loss)))
}

# y_true as the prediction's shape: sparse labels (0-based class indices, one per
# sample and position) become one-hot.
loss_targets <- function(loss, y_true, y_pred) {
  loss <- normalize_loss(loss)
  dp <- dim(y_pred) %||% length(y_pred)
  if (loss == "sparse_categorical_crossentropy") {
    k <- dp[length(dp)]
    labels <- as.integer(round(as.numeric(y_true)))
    if (length(labels) != prod(dp) / k || anyNA(labels) || any(labels < 0 | labels >= k)) {
      conv3d_abort(sprintf(
        "`y` for sparse_categorical_crossentropy must hold %d class indices in 0..%d, not %s.",
        prod(dp) / k, k - 1L, format_value(y_true)), class = "conv3d_error_shape")
    }
    onehot <- matrix(0, length(labels), k)
    onehot[cbind(seq_along(labels), labels + 1L)] <- 1
    return(array(onehot, dp))
  }
  if (length(y_true) != prod(dp)) {
    conv3d_abort(sprintf("`y` must have the shape of the model's output %s, not %s.",
      format_shape(c(NA, dp[-1])), format_value(y_true)), class = "conv3d_error_shape")
  }
  array(as.numeric(y_true), dp)
}

# list(value, grad): value the mean loss, grad d value / d y_pred.
loss_value <- function(loss, y_true, y_pred) {
  loss <- normalize_loss(loss)
  dp <- dim(y_pred) %||% length(y_pred)
  k <- dp[length(dp)]
  rows <- length(y_pred) / k # samples x positions
  y <- loss_targets(loss, y_true, y_pred)
  p <- y_pred
  switch(loss,
    mean_squared_error = list(value = mean((p - y)^2), grad = 2 * (p - y) / (rows * k)),
    mean_absolute_error = list(value = mean(abs(p - y)), grad = sign(p - y) / (rows * k)),
    binary_crossentropy = {
      pc <- pmin(pmax(p, loss_epsilon), 1 - loss_epsilon)
      inside <- p > loss_epsilon & p < 1 - loss_epsilon
      value <- -mean(y * log(pc) + (1 - y) * log(1 - pc))
      list(value = value, grad = array(inside * (pc - y) / (pc * (1 - pc)) / (rows * k), dp))
    },
    categorical_crossentropy = , sparse_categorical_crossentropy = {
      m <- matrix(p, ncol = k)       # rows: samples x positions
      ym <- matrix(y, ncol = k)
      s <- rowSums(m)
      q <- m / s                     # Keras normalises the prediction first
      qc <- pmin(pmax(q, loss_epsilon), 1 - loss_epsilon)
      inside <- q > loss_epsilon & q < 1 - loss_epsilon
      value <- mean(-rowSums(ym * log(qc)))
      # d/dm of -sum_j y_j log(m_j / s), where unclipped
      dq <- -ym / qc * inside
      dm <- (dq - rowSums(dq * q)) / s
      list(value = value, grad = array(dm / rows, dp))
    }
  )
}

# list(value, grad) of a cross-entropy from the logits z of its sigmoid
# (binary) or softmax over the last axis (categorical), as Keras computes it
# for outputs of those activations: value the mean loss, grad d value / d z.
loss_value_logits <- function(loss, y_true, z) {
  loss <- normalize_loss(loss)
  dz <- dim(z) %||% length(z)
  k <- dz[length(dz)]
  rows <- length(z) / k
  y <- loss_targets(loss, y_true, z)
  if (loss == "binary_crossentropy") { # log(1 + exp(z)) - y z, without overflow
    value <- mean(pmax(z, 0) - z * y + log1p(exp(-abs(z))))
    return(list(value = value, grad = array((stats::plogis(z) - y) / (rows * k), dz)))
  }
  m <- matrix(z, ncol = k)
  ym <- matrix(y, ncol = k)
  top <- apply(m, 1, max)
  e <- exp(m - top)
  lse <- top + log(rowSums(e)) # -sum y log softmax(z) = sum(y) lse - sum(y z)
  value <- mean(rowSums(ym) * lse - rowSums(ym * m))
  grad <- (e / rowSums(e) * rowSums(ym) - ym) / rows
  list(value = value, grad = array(grad, dz))
}

# Metrics of compile(), named as given (the history's keys, as in Keras: "acc"
# and "accuracy" are both reported if both are asked for), each once;
# "accuracy" follows the loss, as in Keras.
normalize_metrics <- function(metrics, loss) {
  if (is.null(metrics)) return(character())
  if (!is.character(metrics)) {
    conv3d_abort(sprintf("`metrics` must be NULL or a character vector, not %s.",
      format_value(metrics)))
  }
  out <- character()
  for (m in unique(tolower(metrics))) {
    if (m %in% c("accuracy", "acc")) {
      out[[m]] <- switch(loss,
        binary_crossentropy = "binary_accuracy",
        sparse_categorical_crossentropy = "sparse_categorical_accuracy",
        "categorical_accuracy")
    } else if (m %in% c("mae", "mean_absolute_error")) {
      out[[m]] <- "mae"
    } else {
      conv3d_abort(sprintf("`metrics` must be among \"accuracy\" and \"mae\", not %s.",
        format_value(m)))
    }
  }
  out
}

metric_value <- function(metric, y_true, y_pred, loss) {
  dp <- dim(y_pred) %||% length(y_pred)
  k <- dp[length(dp)]
  switch(metric,
    binary_accuracy = mean((y_pred > 0.5) == (as.numeric(y_true) > 0.5)),
    categorical_accuracy = {
      y <- matrix(loss_targets(loss, y_true, y_pred), ncol = k)
      mean(max.col(matrix(y_pred, ncol = k), "first") == max.col(y, "first"))
    },
    sparse_categorical_accuracy = {
      mean(max.col(matrix(y_pred, ncol = k), "first") - 1L == as.integer(round(as.numeric(y_true))))
    },
    mae = mean(abs(as.numeric(y_pred) - as.numeric(loss_targets(loss, y_true, y_pred))))
  )
}
