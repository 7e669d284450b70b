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

# Keras's reduction of a loss: the per-row values (rows: samples x positions,
# each already averaged over the last axis) times their sample weights,
# summed and divided by the number of rows (not by the weights' sum), with
# the gradient scaled alike. `weights` NULL (all 1) or one per row or per
# sample (recycled along the positions, samples being R's first axis);
# `grad` is the gradient of each row's value.
weighted_loss <- function(rows, grad, weights, dims) {
  if (is.null(weights)) return(list(value = mean(rows), grad = array(grad / length(rows), dims)))
  w <- rep_len(as.numeric(weights), length(rows))
  list(value = sum(w * rows) / length(rows), grad = array(grad * w / length(rows), dims))
}

# list(value, grad): value the mean loss (weighted by `weights`, see
# weighted_loss()), grad d value / d y_pred.
loss_value <- function(loss, y_true, y_pred, weights = NULL) {
  loss <- normalize_loss(loss)
  dp <- dim(y_pred) %||% length(y_pred)
  k <- dp[length(dp)]
  y <- loss_targets(loss, y_true, y_pred)
  p <- y_pred
  per_row <- function(e) rowMeans(matrix(e, ncol = k))
  switch(loss,
    mean_squared_error = weighted_loss(per_row((p - y)^2), 2 * (p - y) / k, weights, dp),
    mean_absolute_error = weighted_loss(per_row(abs(p - y)), sign(p - y) / k, weights, dp),
    binary_crossentropy = {
      pc <- pmin(pmax(p, loss_epsilon), 1 - loss_epsilon)
      inside <- p > loss_epsilon & p < 1 - loss_epsilon
      weighted_loss(per_row(-(y * log(pc) + (1 - y) * log(1 - pc))),
        inside * (pc - y) / (pc * (1 - pc)) / k, weights, dp)
    },
    categorical_crossentropy = , sparse_categorical_crossentropy = {
      m <- matrix(p, ncol = k)       # rows: samples x positions
      ym <- matrix(y, ncol = k)
      s <- rowSums(m)
      q <- m / s                     # Keras normalises the prediction first
      qc <- pmin(pmax(q, loss_epsilon), 1 - loss_epsilon)
      inside <- q > loss_epsilon & q < 1 - loss_epsilon
      # d/dm of -sum_j y_j log(m_j / s), where unclipped
      dq <- -ym / qc * inside
      weighted_loss(-rowSums(ym * log(qc)), (dq - rowSums(dq * q)) / s, weights, dp)
    }
  )
}

# list(value, grad) of a cross-entropy from the logits z of its sigmoid
# (binary) or softmax over the last axis (categorical), as Keras computes it
# for outputs of those activations: value the mean loss (weighted as
# loss_value()), grad d value / d z.
loss_value_logits <- function(loss, y_true, z, weights = NULL) {
  loss <- normalize_loss(loss)
  dz <- dim(z) %||% length(z)
  k <- dz[length(dz)]
  y <- loss_targets(loss, y_true, z)
  if (loss == "binary_crossentropy") { # log(1 + exp(z)) - y z, without overflow
    rows <- rowMeans(matrix(pmax(z, 0) - z * y + log1p(exp(-abs(z))), ncol = k))
    return(weighted_loss(rows, (stats::plogis(z) - y) / k, weights, dz))
  }
  m <- matrix(z, ncol = k)
  ym <- matrix(y, ncol = k)
  top <- apply(m, 1, max)
  e <- exp(m - top)
  lse <- top + log(rowSums(e)) # -sum y log softmax(z) = sum(y) lse - sum(y z)
  weighted_loss(rowSums(ym) * lse - rowSums(ym * m), e / rowSums(e) * rowSums(ym) - ym,
    weights, dz)
}

# Metrics of compile(), named as given (the history's keys, as in Keras: "acc"
# and "accuracy" are both reported if both are asked for), each once. `arg`:
# "metrics" or "weighted_metrics".
normalize_metrics <- function(metrics, arg = "metrics") {
  if (is.null(metrics)) return(character())
  if (!is.character(metrics) || anyNA(metrics)) {
    conv3d_abort(sprintf("`%s` must be NULL or a character vector, not %s.", arg,
      format_value(metrics)))
  }
  out <- character()
  for (m in unique(tolower(metrics))) {
    if (m %in% c("accuracy", "acc")) {
      out[[m]] <- "accuracy"
    } else if (m %in% c("mae", "mean_absolute_error")) {
      out[[m]] <- "mae"
    } else {
      conv3d_abort(sprintf("`%s` must be among \"accuracy\" and \"mae\", not %s.", arg,
        format_value(m)))
    }
  }
  out
}

# Which accuracy "accuracy" is, from the shapes as TF 2 Keras decides it
# (whatever the loss): binary for an output of one unit, sparse when the
# targets hold one label per row (samples x positions), else categorical.
accuracy_kind <- function(y_true, y_pred) {
  dp <- dim(y_pred) %||% length(y_pred)
  k <- dp[length(dp)]
  if (k == 1) return("binary_accuracy")
  if (length(y_true) * k == length(y_pred)) "sparse_categorical_accuracy" else "categorical_accuracy"
}

# The metric's value of each row (samples x positions, averaged over the
# last axis as Keras's metric functions do).
metric_rows <- function(metric, y_true, y_pred, loss) {
  dp <- dim(y_pred) %||% length(y_pred)
  k <- dp[length(dp)]
  pm <- matrix(y_pred, ncol = k)
  if (metric == "accuracy") metric <- accuracy_kind(y_true, y_pred)
  switch(metric,
    binary_accuracy = rowMeans((pm > 0.5) == (matrix(as.numeric(y_true), ncol = k) > 0.5)),
    categorical_accuracy = {
      y <- matrix(as.numeric(y_true), ncol = k)
      as.numeric(max.col(pm, "first") == max.col(y, "first"))
    },
    sparse_categorical_accuracy = {
      as.numeric(max.col(pm, "first") - 1L == as.integer(round(as.numeric(y_true))))
    },
    mae = rowMeans(abs(pm - matrix(loss_targets(loss, y_true, y_pred), ncol = k)))
  )
}

# A metric's mean over the rows; with `weights` (as in weighted_loss()) the
# weighted mean (0 when the weights sum to 0), carrying the sums of w * value
# and of w (attributes "weighted_sum", "weight") so that batches combine as
# Keras's weighted metrics do: sum of w * value over the epoch / sum of w.
metric_value <- function(metric, y_true, y_pred, loss, weights = NULL) {
  v <- metric_rows(metric, y_true, y_pred, loss)
  if (is.null(weights)) return(mean(v))
  w <- rep_len(as.numeric(weights), length(v))
  total <- sum(w)
  weighted_sum <- sum(w * v)
  structure(if (total == 0) 0 else weighted_sum / total, weight = total,
    weighted_sum = weighted_sum)
}
