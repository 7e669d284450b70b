# compile(), fit() and evaluate(): mini-batch training on the layers' backward
# passes (layer_backward()), Keras-style.

#' Configure a model for training
#'
#' @param object A model from [keras_model_sequential()] or [keras_model()].
#' @param optimizer An [optimizers] object or `"sgd"`, `"adam"`, `"rmsprop"`.
#' @param loss `"mean_squared_error"` (`"mse"`), `"mean_absolute_error"`
#'   (`"mae"`), `"binary_crossentropy"`, `"categorical_crossentropy"` or
#'   `"sparse_categorical_crossentropy"` (labels are 0-based class indices), with
#'   Keras's definitions: an output that comes straight from a sigmoid or
#'   softmax activation is scored from its logits, as Keras does (with the
#'   loss's own formula: binary cross-entropy takes the sigmoid of the
#'   logits even of a softmax layer, as in Keras), so a confidently wrong
#'   prediction still has a gradient;
#'   other outputs as probabilities clipped to `[1e-7, 1 - 1e-7]` (the
#'   categorical losses normalise the prediction over the last axis first).
#'   One name for every output of the model, or one per output: a character
#'   vector or list in the outputs' order, or named by the outputs' names.
#' @param metrics `NULL` or among `"accuracy"` and `"mae"`: the plain mean over the samples
#'   (and positions), whatever sample weights [fit()] or [evaluate()] get, as
#'   in Keras. An unnamed character vector (or list of single names) is
#'   computed for every output; a list of character vectors (or of lists of
#'   names) gives each output its own, in order or named by the outputs'
#'   names, as is a named character vector (an output left out gets none).
#'   `"accuracy"` is chosen from the shapes as TF 2 Keras chooses it (not
#'   from the loss): binary accuracy (threshold 0.5) for an output of one
#'   unit, sparse categorical accuracy when the targets hold one class index
#'   per sample (and position), else categorical accuracy (also for
#'   `"binary_crossentropy"` on several units, where Keras's choice is
#'   categorical too).
#' @param loss_weights `NULL` (each 1) or one number per model output (a
#'   vector or list, in order or named by the outputs' names, an output left
#'   out weighing 1): the loss
#'   minimised and reported as `loss` is the weighted sum of the outputs'
#'   losses; each output's own `<name>_loss` is reported unweighted, as in
#'   Keras.
#' @param weighted_metrics Given like `metrics`, but weighted by the sample weights
#'   (`sample_weight` and `class_weight` of [fit()], `sample_weight` of
#'   [evaluate()]): the sum of weight times value over the epoch divided by the
#'   sum of the weights. A name also in `metrics` is reported as
#'   `weighted_<name>`.
#' @param ... Nothing: any other argument (such as Keras's `run_eagerly`,
#'   which has no meaning here) is an error.
#' @return The model, modified in place, invisibly.
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(4, 4, 4, 1)) |>
#'   layer_conv_3d(2, 3, activation = "relu") |>
#'   layer_flatten() |>
#'   layer_dense(1, activation = "sigmoid")
#' compile(model, optimizer = "adam", loss = "binary_crossentropy", metrics = "accuracy")
compile <- function(object, ...) UseMethod("compile")

#' @rdname compile
#' @export
compile.conv3d_model <- function(object, optimizer = "rmsprop", loss = NULL, metrics = NULL,
                                 loss_weights = NULL, weighted_metrics = NULL, ...) {
  reject_dots(list(...), "compile")
  self <- model_self(object)
  if (is.null(loss)) conv3d_abort("`loss` is missing: give a loss name.")
  outputs <- model_output_names(self)
  losses <- output_losses(loss, outputs)
  for (layer in self$layers) {
    lself <- layer_self(layer)
    for (reg in c("kernel_regularizer", "bias_regularizer", "activity_regularizer")) {
      r <- lself[[reg]]
      if (!is.null(r) && is.null(attr(r, "config"))) {
        conv3d_abort(sprintf(
          "Layer \"%s\" has an R function as `%s`, whose gradient training cannot take; use regularizer_l1(), regularizer_l2() or regularizer_l1_l2().",
          lself$name, reg))
      }
    }
  }
  metrics <- output_metrics(metrics, outputs)
  weighted <- output_metrics(weighted_metrics, outputs, "weighted_metrics")
  for (k in seq_along(outputs)) { # Keras's naming of a weighted twin
    clash <- names(weighted[[k]]) %in% names(metrics[[k]])
    names(weighted[[k]])[clash] <- paste0("weighted_", names(weighted[[k]])[clash])
  }
  self$compiled <- list(optimizer = normalize_optimizer(optimizer), losses = losses,
    metrics = metrics, weighted_metrics = weighted,
    loss_weights = output_loss_weights(loss_weights, outputs))
  self$optimizer_state <- new.env(parent = emptyenv())
  invisible(object)
}

# A compile() argument given per output, as an unnamed list in the outputs'
# order: a list (or vector) of one entry per output, or named by the
# outputs' names as Keras's dict (an output left out gets NULL).
by_output <- function(x, outputs, arg) {
  x <- as.list(x)
  keys <- names(x)
  if (!is.null(keys) && any(nzchar(keys))) {
    if (!all(keys %in% outputs) || anyDuplicated(keys)) {
      conv3d_abort(sprintf("The names of `%s` must be among the model's output names %s, not %s.",
        arg, paste0("\"", outputs, "\"", collapse = ", "),
        paste0("\"", keys, "\"", collapse = ", ")))
    }
    return(lapply(outputs, function(o) if (o %in% keys) x[[o]]))
  }
  if (length(x) != length(outputs)) {
    conv3d_abort(sprintf("`%s` must have one entry per model output (%d), not %d.", arg,
      length(outputs), length(x)))
  }
  x
}

# compile()'s loss as one loss name per output: one name for all, or one per
# output (a vector or list, or named by the outputs); every output needs one.
output_losses <- function(loss, outputs) {
  per <- if (is.character(loss) && length(loss) == 1L && is.null(names(loss))) {
    rep(list(loss), length(outputs))
  } else if (is.character(loss) || is.list(loss)) {
    by_output(loss, outputs, "loss")
  } else {
    list(loss) # refused by normalize_loss()
  }
  missing <- vapply(per, is.null, TRUE)
  if (any(missing)) {
    conv3d_abort(sprintf("`loss` has no loss for the model's output \"%s\": give every output one.",
      outputs[missing][1]))
  }
  vapply(per, normalize_loss, "")
}

# compile()'s metrics (or weighted_metrics) per output, each a named vector
# (reported name = metric, normalize_metrics()): a character
# vector, or an unnamed list of single names, is for every output, as Keras
# broadcasts a flat list; else a list per output or named by the outputs.
output_metrics <- function(metrics, outputs, arg = "metrics") {
  named <- !is.null(names(metrics)) && any(nzchar(names(metrics)))
  flat <- !named && (is.null(metrics) || is.character(metrics) || (is.list(metrics) &&
    all(vapply(metrics, function(m) is.character(m) && length(m) == 1L, TRUE))))
  per <- if (flat) rep(list(unlist(metrics)), length(outputs)) else by_output(metrics, outputs, arg)
  # an output's entry: a character vector or a list of names
  lapply(per, function(m) {
    if (is.list(m) && all(vapply(m, function(v) is.character(v) && length(v) == 1L, TRUE))) {
      m <- unlist(m)
    }
    normalize_metrics(m, arg)
  })
}

# compile()'s loss_weights as one number per model output (1 for an output
# left out of a named list, as in Keras).
output_loss_weights <- function(loss_weights, outputs) {
  if (is.null(loss_weights)) return(rep(1, length(outputs)))
  ok <- function(w) is.null(w) || is.numeric(w) && length(w) == 1L && is.finite(w)
  if (!(is.numeric(loss_weights) || is.list(loss_weights)) || !length(loss_weights) ||
      !all(vapply(as.list(loss_weights), ok, TRUE))) {
    conv3d_abort(sprintf("`loss_weights` must be NULL or finite numbers, one per output, not %s.",
      format_value(loss_weights)))
  }
  per <- by_output(loss_weights, outputs, "loss_weights") # NULL: weight 1, as in Keras
  vapply(per, function(w) if (is.null(w)) 1 else as.numeric(w), 0)
}

# The model as steps: layer, input key, output key; keys of the inputs/outputs.
model_plan <- function(self) {
  if (self$kind == "sequential") {
    steps <- lapply(seq_along(self$layers), function(i) {
      list(layer = self$layers[[i]], input = as.character(i - 1L), output = as.character(i))
    })
    return(with_logits(self, list(steps = steps, inputs = "0",
      outputs = as.character(length(self$layers)))))
  }
  steps <- list()
  for (t in self$nodes) {
    if (is.null(t$inbound)) next
    # a merge layer's step reads several keys
    steps[[length(steps) + 1L]] <- list(layer = t$layer,
      input = vapply(t$inbound, function(u) as.character(u$id), ""), output = as.character(t$id))
  }
  plan <- list(steps = steps, inputs = vapply(self$inputs, function(t) as.character(t$id), ""),
    outputs = vapply(self$outputs, function(t) as.character(t$id), ""))
  with_logits(self, plan)
}

# Keras computes a cross-entropy from the logits when a model output comes
# straight from a sigmoid or softmax activation (Keras keeps the logits on
# that tensor, and each cross-entropy uses them with its own formula:
# binary from sigmoid, categorical from softmax, whichever activation made
# them): the exact loss, whose gradient does not vanish when the prediction
# saturates, where clipped probabilities would cap the loss and zero the
# gradient. plan$logits: the steps whose layer ends in a named sigmoid or
# softmax and whose output is a model output scored so by at least one
# listing; plan$from_logits: for each listing of an output, whether its loss
# is. Other losses of that output, other layers reading it and its activity
# penalty still see the probabilities (their gradients go through the
# activation's derivative).
with_logits <- function(self, plan) {
  cross_entropy <- self$compiled$losses %in% c("binary_crossentropy", "categorical_crossentropy",
    "sparse_categorical_crossentropy")
  act_of <- function(st) {
    act <- layer_self(st$layer)$activation
    if (is.list(act) && is.null(act$fn) && act$name %in% c("sigmoid", "softmax")) act$name else ""
  }
  producer <- vapply(plan$outputs, function(key) {
    i <- which(vapply(plan$steps, function(st) st$output == key, TRUE))
    if (length(i)) i[1] else NA_integer_ # NA: an output that is a model input
  }, 1L, USE.NAMES = FALSE)
  plan$from_logits <- vapply(seq_along(plan$outputs), function(k) {
    !is.na(producer[k]) && cross_entropy[k] && nzchar(act_of(plan$steps[[producer[k]]]))
  }, TRUE)
  plan$logits <- unique(producer[plan$from_logits])
  plan
}

# The layer with its activation taken off: a shallow copy sharing the
# weights and their caches, whose call gives the logits and whose backward
# takes their gradient.
linear_layer <- function(layer) {
  lself <- layer_self(layer)
  twin <- list2env(as.list(lself, all.names = TRUE), parent = parent.env(lself))
  twin$activation <- normalize_activation(NULL)
  layer_callable(twin)
}

# Dropout during training: a mask drawn from R's RNG, or from the layer's own
# stream when it has a seed (noise_shape broadcast).
dropout_mask <- function(lself, x) {
  d <- dim(x) %||% length(x)
  shape <- lself$mask_shape(lself, d)
  shape <- if (is.null(shape)) d else ifelse(is.na(shape), d, shape)
  if (length(shape) != length(d) || any(shape != 1 & shape != d)) {
    conv3d_abort(sprintf("`noise_shape` %s of layer \"%s\" does not broadcast to the input dim %s.",
      format_shape(lself$config$noise_shape), lself$name, format_shape(d)),
      class = "conv3d_error_shape")
  }
  # a seeded layer draws from its own stream (R's global one untouched), as
  # Keras's seeded dropout does
  seed <- lself$config$seed
  u <- if (is.null(seed)) stats::runif(prod(shape)) else
    with_seed(seed, stats::runif(prod(shape)), stream = lself)
  mask <- array(u >= lself$config$rate, shape)
  index <- lapply(seq_along(d), function(i) if (shape[i] == 1) rep(1L, d[i]) else seq_len(d[i]))
  do.call(`[`, c(list(mask), index, list(drop = FALSE))) / (1 - lself$config$rate)
}

# What a step's layer is called on: the value of its input key, or a merge
# layer's list of values.
step_input <- function(st, values) {
  if (isTRUE(layer_self(st$layer)$merge)) unname(values[st$input]) else values[[st$input]]
}

# Forward pass keeping every step's output and what the backward pass needs.
# In training, a layer with a training call (dropout's masks, batch
# normalization's batch moments; `trains(lself)`: whether training updates
# it) runs that and keeps its cache for its train_backward(); otherwise, and
# at inference, every layer runs its call.
train_forward <- function(plan, inputs, training = TRUE, trains = function(lself) TRUE) {
  values <- stats::setNames(inputs, plan$inputs)
  caches <- vector("list", length(plan$steps))
  logits <- list()
  for (i in seq_along(plan$steps)) {
    st <- plan$steps[[i]]
    x <- step_input(st, values)
    lself <- layer_self(st$layer)
    if (training && is.function(lself$train_call)) {
      if (is.array(x)) layer_ensure_built(lself, dim(x))
      out <- lself$train_call(lself, x, trains(lself))
      caches[i] <- list(out$cache) # (NULL kept: no cache, the plain backward)
      values[[st$output]] <- out$y
    } else {
      values[[st$output]] <- layer_apply_array(st$layer, x)
    }
    if (i %in% plan$logits) logits[[st$output]] <- layer_apply_array(linear_layer(st$layer), x)
  }
  list(values = values, caches = caches, logits = logits)
}

penalty_grad <- function(reg, w) {
  cfg <- attr(reg, "config")
  cfg$l1 * sign(w) + 2 * cfg$l2 * w
}

# The loss of a forward pass's outputs (one per model output, weighted by
# compile()'s loss_weights; `weights`: NULL or each output's sample weights)
# with the penalties added: each layer's weight penalties once, and its
# activity penalty for each of its calls (a layer shared by several steps),
# as Keras counts them; its gradient per output and the metrics.
batch_logs <- function(self, plan, values, targets, logits = list(), weights = NULL) {
  cmp <- self$compiled
  outputs <- values[plan$outputs]
  total <- 0
  grads <- list()
  # several outputs: each one's loss and metrics too, prefixed with its name
  prefix <- if (length(outputs) > 1L) paste0(model_output_names(self), "_") else ""
  losses <- list()
  logs <- list()
  for (k in seq_along(outputs)) {
    z <- if (isTRUE(plan$from_logits[k])) logits[[plan$outputs[k]]] # then the loss and its gradient are the logits'
    w <- weights[[k]]
    loss <- cmp$losses[k]
    lv <- if (is.null(z)) loss_value(loss, targets[[k]], outputs[[k]], w) else
      loss_value_logits(loss, targets[[k]], z, w)
    total <- total + cmp$loss_weights[k] * lv$value
    grads[[k]] <- cmp$loss_weights[k] * lv$grad
    if (length(outputs) > 1L) losses[[paste0(prefix[k], "loss")]] <- lv$value
    for (m in names(cmp$metrics[[k]])) {
      logs[[paste0(prefix[k], m)]] <- metric_value(cmp$metrics[[k]][[m]], targets[[k]],
        outputs[[k]], loss)
    }
    for (m in names(cmp$weighted_metrics[[k]])) {
      logs[[paste0(prefix[k], m)]] <- metric_value(cmp$weighted_metrics[[k]][[m]], targets[[k]],
        outputs[[k]], loss, w)
    }
  }
  seen <- list()
  for (st in plan$steps) {
    lself <- layer_self(st$layer)
    if (!any(vapply(seen, identical, TRUE, lself))) {
      seen[[length(seen) + 1L]] <- lself
      total <- total + sum(unlist(layer_weight_penalties(lself)))
    }
    if (!is.null(lself$activity_regularizer)) {
      y <- values[[st$output]]
      total <- total + lself$activity_regularizer(y) / max(dim(y)[1], 1)
    }
  }
  list(logs = c(list(loss = total), losses, logs), grads = grads)
}

# The names of a model's outputs (their layers'), unique.
model_output_names <- function(self) {
  if (self$kind != "functional") { # Keras names a sequential model's output by its last layer
    n <- length(self$layers)
    return(if (n) layer_self(self$layers[[n]])$name else "output")
  }
  make.unique(vapply(self$outputs, function(t) layer_self(t$layer)$name, ""), sep = "_")
}

# Evaluation of one batch: the inference forward pass (no dropout).
eval_batch <- function(self, plan, inputs, targets, weights = NULL) {
  fw <- train_forward(plan, inputs, training = FALSE)
  batch_logs(self, plan, fw$values, targets, fw$logits, weights)$logs
}

# A value's gradient so far plus another part: the part itself when it is the
# first (0 + g would copy a large gradient into fresh memory).
add_gradient <- function(sum, g) if (is.null(sum)) g else sum + g

# One training step on a batch: forward (dropout active), loss, backward, and an
# optimizer update of every trainable layer. Returns the batch's logs.
train_batch <- function(self, plan, inputs, targets, weights = NULL) {
  .Call(ffi_collect_results) # the last step's outputs and gradients, for this step's
  cmp <- self$compiled
  fw <- train_forward(plan, inputs, trains = function(lself) layer_trains(self, lself))
  values <- fw$values
  bl <- batch_logs(self, plan, values, targets, fw$logits, weights)
  # gradients with respect to each value (an output listed twice gets both
  # losses'), and with respect to the logits of the outputs scored from them
  grads <- list()
  logit_grads <- list()
  for (k in seq_along(plan$outputs)) {
    key <- plan$outputs[k]
    if (isTRUE(plan$from_logits[k])) {
      logit_grads[[key]] <- add_gradient(logit_grads[[key]], bl$grads[[k]])
    } else {
      grads[[key]] <- add_gradient(grads[[key]], bl$grads[[k]])
    }
  }
  updates <- list()
  for (i in rev(seq_along(plan$steps))) {
    st <- plan$steps[[i]]
    lself <- layer_self(st$layer)
    dy <- grads[[st$output]]
    dz <- logit_grads[[st$output]]
    if (is.null(dy) && is.null(dz)) next
    y <- values[[st$output]]
    if (!is.null(lself$activity_regularizer)) {
      dy <- add_gradient(dy, penalty_grad(lself$activity_regularizer, y) / max(dim(y)[1], 1))
    }
    x <- step_input(st, values)
    need_input <- !all(st$input %in% plan$inputs)
    if (i %in% plan$logits) {
      # the logits' gradient: the loss's own, plus the rest through the activation
      if (!is.null(dy)) {
        dz <- add_gradient(dz, activation_backward(fw$logits[[st$output]], dy, lself$activation,
          lself$name))
      }
      g <- layer_backward(linear_layer(st$layer), x, dz, input = need_input)
    } else if (!is.null(fw$caches[[i]])) { # the gradient of a training call
      g <- lself$train_backward(lself, x, dy, fw$caches[[i]], need_input)
    } else {
      g <- layer_backward(st$layer, x, dy, input = need_input)
    }
    dx <- if (isTRUE(lself$merge)) g$input else list(g$input)
    for (j in seq_along(st$input)) { # a model input needs no gradient
      key <- st$input[j]
      if (!key %in% plan$inputs) grads[[key]] <- add_gradient(grads[[key]], dx[[j]])
    }
    if (length(g$weights) && layer_trains(self, lself)) {
      key <- lself$name # a layer called by several steps sums their gradients
      prior <- updates[[key]]$grads
      updates[[key]] <- list(layer = st$layer, grads = if (is.null(prior)) g$weights else
        Map(function(a, b) if (is.null(a)) b else a + b, prior, g$weights))
    }
  }
  for (key in names(updates)) {
    u <- updates[[key]]
    lself <- layer_self(u$layer)
    w <- unname(lself$weights)
    for (j in seq_along(w)) {
      g <- u$grads[[j]]
      if (is.null(g)) next # a statistic training sets, not a trained weight
      reg <- lself[[paste0(lself$weight_names[j], "_regularizer")]]
      if (!is.null(reg)) g <- g + penalty_grad(reg, w[[j]])
      # the slots of this very layer: one that replaced a layer of the same
      # name (pop_layer(), then a new one) starts afresh, as Keras's would
      state_key <- paste(key, j)
      slot <- self$optimizer_state[[state_key]]
      state <- if (!is.null(slot) && identical(slot$layer, lself)) slot$state
      step <- optimizer_step(cmp$optimizer, w[[j]], g, state)
      assign(state_key, list(layer = lself, state = step$state), envir = self$optimizer_state)
      con <- lself[[paste0(lself$weight_names[j], "_constraint")]]
      w[[j]] <- if (is.null(con)) step$w else con(step$w)
    }
    layer_set_weights(lself, w)
  }
  bl$logs
}

# The arrays of `x` (or `y`) as a list in the model's input (output) order:
# one array, or a list of them, matched by name to the input (output) layers
# when named, as R keras does.
as_array_list <- function(x, layer_names, arg, what) {
  if (!is.list(x) || is.array(x) || is.data.frame(x)) x <- list(x)
  if (length(x) != length(layer_names)) {
    conv3d_abort(sprintf("`%s` must be %s, not a list of %d.", arg,
      if (length(layer_names) == 1L) "an array" else
        sprintf("a list of %d arrays (one per %s)", length(layer_names), what),
      length(x)), class = "conv3d_error_shape")
  }
  if (!is.null(names(x)) && any(nzchar(names(x)))) {
    if (!setequal(names(x), layer_names) || anyDuplicated(names(x))) {
      conv3d_abort(sprintf("The names of `%s` must be the model's %s names %s, not %s.", arg, what,
        paste0("\"", layer_names, "\"", collapse = ", "),
        paste0("\"", names(x), "\"", collapse = ", ")), class = "conv3d_error_shape")
    }
    x <- x[layer_names]
  }
  unname(x)
}

model_input_names <- function(self) {
  if (self$kind != "functional") return("input")
  vapply(self$inputs, function(t) layer_self(t$layer)$name, "")
}

as_input_list <- function(self, x, arg = "x") as_array_list(x, model_input_names(self), arg, "input")

as_target_list <- function(self, y, arg = "y") {
  as_array_list(y, model_output_names(self), arg, "output")
}

slice_rows <- function(a, idx) if (is.null(dim(a))) a[idx] else slice_batch(a, idx)

# Runs `step(inputs, targets, weights)` on the batches of one pass (samples in
# `order`; `weights` NULL or each output's sample weights); returns its logs
# combined over the batches: each batch's value counts by its number of
# samples, or (metric_value()'s weighted metrics) their sums of weight times
# value over the sums of weights (0 for none), as Keras's metrics reduce.
# `hooks`: NULL or the training callbacks' list(begin = function(batch),
# end = function(batch, logs so far), stop = function() TRUE to end the pass
# early), batches counted from 0.
run_batches <- function(inputs, targets, weights, batch_size, order, step, progress = NULL,
                        hooks = NULL) {
  n <- length(order)
  sums <- list()
  totals <- list()
  so_far <- function() Map(function(s, t) if (t == 0) 0 else s / t, sums, totals)
  starts <- seq(1L, n, by = batch_size)
  for (b in seq_along(starts)) {
    idx <- order[starts[b]:min(n, starts[b] + batch_size - 1L)]
    if (!is.null(hooks)) hooks$begin(b - 1L)
    logs <- step(lapply(inputs, slice_rows, idx), lapply(targets, slice_rows, idx),
      if (!is.null(weights)) lapply(weights, slice_rows, idx))
    for (m in names(logs)) {
      v <- logs[[m]]
      count <- attr(v, "weight") %||% length(idx)
      sums[[m]] <- (sums[[m]] %||% 0) + (attr(v, "weighted_sum") %||% (as.numeric(v) * count))
      totals[[m]] <- (totals[[m]] %||% 0) + count
    }
    if (!is.null(progress)) utils::setTxtProgressBar(progress, b)
    if (!is.null(hooks)) {
      hooks$end(b - 1L, so_far()) # Keras's batch logs: the epoch's running values
      if (hooks$stop()) break
    }
  }
  so_far()
}

# 0, 1 or 2, or R keras's "auto": 1 in an interactive session, else 0.
check_verbose <- function(verbose) {
  if (identical(verbose, "auto")) return(if (interactive()) 1 else 0)
  if (!is.numeric(verbose) || length(verbose) != 1L || !verbose %in% 0:2) {
    conv3d_abort(sprintf("`verbose` must be 0, 1, 2 or \"auto\", not %s.", format_value(verbose)))
  }
  verbose
}

check_compiled <- function(self) {
  if (is.null(self$compiled)) {
    conv3d_abort(sprintf("Model \"%s\" is not compiled: call compile() first.", self$name))
  }
}

# The samples of the inputs (`arg`: what the caller calls them), the same
# along the first axis of every input.
samples_of <- function(inputs, arg = "x") {
  n <- vapply(inputs, function(a) if (length(dim(a))) dim(a)[1] else NA_integer_, 1L)
  if (anyNA(n)) {
    conv3d_abort(sprintf("`%s` must be an array with the samples along its first axis.", arg),
      class = "conv3d_error_shape")
  }
  if (any(n != n[1])) {
    conv3d_abort(sprintf("The arrays of `%s` must have as many samples each, not %s.", arg,
      paste(n, collapse = ", ")), class = "conv3d_error_shape")
  }
  if (n[1] < 1) {
    conv3d_abort(sprintf("`%s` must hold at least one sample.", arg), class = "conv3d_error_shape")
  }
  n[1]
}

# Targets numeric (or logical), each with n samples (its length, or its first
# axis), as Keras refuses data of ambiguous cardinality; with `outputs` (the
# model's outputs for one sample), each holding as many values per sample as
# its compiled loss (`losses`, one per output) needs, so a wrong shape is
# named before any training.
check_targets <- function(targets, n, arg = "y", x_arg = "x", outputs = NULL, losses = NULL) {
  for (k in seq_along(targets)) {
    y <- targets[[k]]
    what <- if (length(targets) > 1L) sprintf("%s[[%d]]", arg, k) else arg
    if (!(is.numeric(y) || is.logical(y))) { # (a factor is neither)
      conv3d_abort(sprintf("`%s` must be numeric, not %s.", what, format_value(y)))
    }
    m <- if (length(dim(y))) dim(y)[1] else length(y)
    if (m != n) {
      conv3d_abort(sprintf("`%s` has %d samples, but `%s` has %d: give one target per sample.",
        what, m, x_arg, n), class = "conv3d_error_shape")
    }
    if (is.null(outputs)) next
    loss <- losses[k]
    d <- dim(outputs[[k]]) %||% length(outputs[[k]])
    per_sample <- prod(d[-1])
    if (loss == "sparse_categorical_crossentropy") per_sample <- per_sample / d[length(d)]
    if (length(y) != n * per_sample) {
      conv3d_abort(sprintf("`%s` must hold %s per sample for the model's output %s (loss %s), not %s.",
        what, if (loss == "sparse_categorical_crossentropy") {
          sprintf("%g class ind%s", per_sample, if (per_sample == 1) "ex" else "ices")
        } else {
          sprintf("%g value%s", per_sample, if (per_sample == 1) "" else "s")
        }, format_shape(c(NA, d[-1])), loss, format_value(y)), class = "conv3d_error_shape")
    }
  }
  invisible(targets)
}

# fit()/evaluate()'s sample_weight as each output's weights, a matrix of n
# rows (samples; one column, or one per position of the output), or NULL:
# NULL; a vector of one weight per sample (or an n x 1 array), or an array of
# one weight per sample and position (dim: the output's without its last
# axis, samples first) for every output; or a list of those, one per output
# (matched to the outputs' names when named; NULL leaves an output
# unweighted), as Keras takes them.
as_sample_weights <- function(self, sample_weight, n, outputs, arg = "sample_weight") {
  if (is.null(sample_weight)) return(NULL)
  output_names <- model_output_names(self)
  several <- is.list(sample_weight) && !is.data.frame(sample_weight)
  weights <- if (several) {
    as_array_list(sample_weight, output_names, arg, "output")
  } else {
    rep(list(sample_weight), length(output_names))
  }
  for (k in seq_along(weights)) {
    w <- weights[[k]]
    if (is.null(w)) next
    what <- if (several && length(weights) > 1L) sprintf("%s[[%d]]", arg, k) else arg
    d <- dim(outputs[[k]]) %||% length(outputs[[k]])
    per_position <- c(n, d[-c(1L, length(d))]) # dim of one weight per sample and position
    dw <- dim(w) %||% length(w)
    fits <- identical(as.numeric(dw), as.numeric(n)) || identical(as.numeric(dw), c(n, 1)) ||
      (length(per_position) > 1L && (identical(as.numeric(dw), as.numeric(per_position)) ||
        identical(as.numeric(dw), c(per_position, 1))))
    if (!is.numeric(w) || !all(is.finite(w)) || !fits) {
      conv3d_abort(sprintf("`%s` must hold finite numbers, one per sample (%d)%s, not %s.", what, n,
        if (length(per_position) > 1L && prod(per_position) > n) {
          sprintf(" or an array of one per sample and position (dim %s)", format_shape(per_position))
        } else "", format_value(w)), class = "conv3d_error_shape")
    }
    weights[[k]] <- matrix(as.numeric(w), nrow = n)
  }
  if (all(vapply(weights, is.null, TRUE))) NULL else weights
}

# fit()'s class_weight as one weight per class 0, 1, ...: a numeric vector or
# list, in class order or named by the classes ("0", "1", ...) as Keras's dict.
normalize_class_weight <- function(class_weight) {
  if (is.list(class_weight) && length(class_weight) &&
      all(vapply(class_weight, function(v) is.numeric(v) && length(v) == 1L, TRUE))) {
    class_weight <- unlist(class_weight)
  }
  if (!is.numeric(class_weight) || !length(class_weight) || !all(is.finite(class_weight))) {
    conv3d_abort(sprintf(
      "`class_weight` must be finite numbers, one per class (named \"0\", \"1\", ... or in class order), not %s.",
      format_value(class_weight)))
  }
  keys <- names(class_weight)
  if (!is.null(keys)) {
    ids <- suppressWarnings(as.numeric(keys))
    if (anyNA(ids) || anyDuplicated(ids) || !setequal(ids, seq_along(class_weight) - 1)) {
      conv3d_abort(sprintf("The names of `class_weight` must be the classes 0, 1, ..., each once, not %s.",
        paste0("\"", keys, "\"", collapse = ", ")))
    }
    class_weight <- class_weight[order(ids)]
  }
  unname(as.numeric(class_weight))
}

# Each sample's weight from its class in the targets of a one-output model,
# as Keras reads it: the first largest entry of a one-hot row, else the
# label itself (truncated to a whole number).
class_sample_weights <- function(class_weight, targets) {
  if (length(targets) != 1L) {
    conv3d_abort(sprintf("`class_weight` is only supported for models with one output, not %d; use `sample_weight`.",
      length(targets)))
  }
  y <- targets[[1]]
  d <- dim(y)
  if (length(d) > 2L) {
    conv3d_abort(sprintf("`class_weight` is not supported for targets of more than 2 dimensions (`y` has dim %s); use `sample_weight`.",
      format_shape(d)), class = "conv3d_error_shape")
  }
  classes <- if (length(d) == 2L && d[2] > 1L) max.col(y, "first") - 1 else trunc(as.numeric(y))
  known <- classes %in% (seq_along(class_weight) - 1)
  if (!all(known)) {
    conv3d_abort(sprintf("`y` holds class %s, which `class_weight` (classes 0 to %d) does not weigh.",
      format(classes[!known][1]), length(class_weight) - 1L), class = "conv3d_error_shape")
  }
  class_weight[classes + 1]
}

# fit()'s validation_freq as a function of the (1-based) epoch: whether to
# validate after it. One number: every that many epochs; several (or a
# list): those epochs, as Keras reads an int or a collection.
validation_epochs <- function(freq) {
  listed <- is.list(freq) || (is.numeric(freq) && length(freq) > 1L)
  values <- unlist(freq)
  ok <- is.numeric(values) && length(values) >= 1L && all(is.finite(values)) &&
    all(values >= 1) && all(values == round(values))
  if (!ok) {
    conv3d_abort(sprintf("`validation_freq` must be one positive whole number or a list of epoch numbers, not %s.",
      format_value(freq)))
  }
  if (listed) function(epoch) epoch %in% values else function(epoch) epoch %% values == 0
}

# x, y and sample_weight of fit(), evaluate() and the *_on_batch() functions
# as lists in the model's input and output order, checked against each other
# and the model's outputs: list(inputs, targets, n, weights).
training_data <- function(self, x, y, sample_weight = NULL) {
  inputs <- as_input_list(self, x)
  targets <- as_target_list(self, y)
  n <- samples_of(inputs)
  outputs <- one_sample_outputs(self, inputs)
  check_targets(targets, n, outputs = outputs, losses = self$compiled$losses)
  list(inputs = inputs, targets = targets, n = n,
    weights = as_sample_weights(self, sample_weight, n, outputs))
}

# The sample weights with class_weight's (normalize_class_weight()) multiplied in.
with_class_weight <- function(weights, class_weight, targets, n) {
  if (is.null(class_weight)) return(weights)
  by_class <- class_sample_weights(normalize_class_weight(class_weight), targets)
  if (is.null(weights)) list(matrix(by_class, nrow = n)) else list(weights[[1]] * by_class)
}

# The model's outputs for the first sample of `inputs` (the shapes the targets
# must match); builds an unbuilt sequential model on the way.
one_sample_outputs <- function(self, inputs) {
  model_forward(self, lapply(inputs, slice_rows, 1L))
}

#' Train a model
#'
#' Mini-batch training with the compiled optimizer and loss: each batch runs the
#' forward pass (dropout active), the loss and the layers' penalties, the backward
#' pass of every layer (the first layer skips its input gradient), then the
#' optimizer updates every trainable layer's weights and applies its
#' constraints. `set.seed()` makes a whole fit reproducible (initialisation,
#' shuffling and dropout all draw from R's RNG).
#'
#' @param object A compiled model.
#' @param x Input array (samples first), or a list of arrays for several inputs
#'   (matched to the input layers by name when named).
#' @param y Targets: an array (samples first) of the output's shape, class
#'   indices for `"sparse_categorical_crossentropy"`, or a list for several
#'   outputs (matched by name when named; each output is scored by its own
#'   compiled loss, `loss` is their sum weighted by `loss_weights`, and each
#'   output's loss and metrics are reported under its layer's name).
#' @param batch_size Samples per gradient update.
#' @param epochs Passes over the training data.
#' @param verbose 0 silent, 1 a progress bar and a line per epoch, 2 a line per
#'   epoch; `"auto"` is 1 in an interactive session, else 0.
#' @param callbacks `NULL`, or a list of callbacks ([callback_early_stopping()],
#'   [callback_reduce_lr_on_plateau()], [callback_learning_rate_scheduler()],
#'   [callback_csv_logger()], [callback_terminate_on_naan()],
#'   [callback_lambda()]) and plain functions `function(epoch, logs)` called
#'   after every epoch (`epoch` counted from 1; `logs`: the epoch's named
#'   metrics). Callbacks run in the order given; a callback that stops
#'   training ends it after the current batch or epoch, and the history then
#'   holds the epochs trained.
#' @param validation_split Fraction of the samples, taken from the end before
#'   shuffling as Keras does, held out for validation.
#' @param validation_data `NULL`, `list(x_val, y_val)` or `list(x_val, y_val,
#'   val_sample_weight)`.
#' @param shuffle Shuffle the training samples before each epoch.
#' @param class_weight `NULL` or one weight per class (a vector or list in class
#'   order, or named by the classes `"0"`, `"1"`, ...): each training sample's
#'   loss is multiplied by the weight of its class, read from `y` as Keras
#'   does (the first largest entry of a one-hot row, else the label). Models
#'   with one output and targets of at most 2 dimensions; not applied to
#'   validation data.
#' @param sample_weight `NULL` or the training samples' weights: a vector of
#'   one per sample (for every position of a dense prediction), or an array
#'   of one per sample and position (dim: the output's without its last
#'   axis, as for segmentations; a trailing axis of 1 allowed); a list of
#'   those for several outputs (`NULL` leaves an output unweighted). Each loss becomes the sum of weight
#'   times loss over the samples (and positions) divided by their number, as
#'   in Keras (multiplied by `class_weight` when both are given), and
#'   `weighted_metrics` use the weights; `validation_split` holds out the
#'   matching weights for validation.
#' @param initial_epoch Epochs already trained: training runs epochs
#'   `initial_epoch + 1` to `epochs`, numbered so (to resume a fit).
#' @param validation_batch_size Samples per validation batch; `NULL` takes
#'   `batch_size`.
#' @param validation_freq Validate after every this many epochs (one whole
#'   number), or after the epochs listed (a vector of two or more epoch
#'   numbers, or a list, counted from 1), as Keras's; the history then has
#'   the validation values of those epochs only.
#' @param ... Nothing: any other argument (such as Keras's `steps_per_epoch`,
#'   which conv3d does not implement) is an error.
#' @return A history object, invisibly (as in Keras): `$metrics` (a list of
#'   per-epoch values, `val_` prefixed for validation), `$epoch` (the epochs'
#'   numbers), `$metric_epochs` (each metric's epochs) and `$params`; with
#'   `print()`, `plot()` and `as.data.frame()` methods.
#' @export
#' @examples
#' set.seed(1)
#' x <- array(rnorm(40 * 4^3), c(40, 4, 4, 4, 1))
#' y <- as.numeric(apply(x, 1, mean) > 0)
#' model <- keras_model_sequential(input_shape = c(4, 4, 4, 1)) |>
#'   layer_conv_3d(2, 3, activation = "relu", dtype = "float64") |>
#'   layer_flatten(dtype = "float64") |>
#'   layer_dense(1, activation = "sigmoid", dtype = "float64")
#' compile(model, optimizer = optimizer_adam(0.05), loss = "binary_crossentropy",
#'   metrics = "accuracy")
#' history <- fit(model, x, y, epochs = 3, batch_size = 10, verbose = 0)
#' as.data.frame(history)
fit <- function(object, ...) UseMethod("fit")

#' @rdname fit
#' @export
fit.conv3d_model <- function(object, x, y, batch_size = 32, epochs = 1, verbose = 1,
                             callbacks = NULL, validation_split = 0, validation_data = NULL,
                             shuffle = TRUE, class_weight = NULL, sample_weight = NULL,
                             initial_epoch = 0, validation_batch_size = NULL,
                             validation_freq = 1, ...) {
  reject_dots(list(...), "fit")
  if (missing(y)) conv3d_abort("`y` is missing: give the targets.")
  self <- model_self(object)
  check_compiled(self)
  batch_size <- check_count(batch_size, "batch_size")
  epochs <- check_count(epochs, "epochs", lower = 0) # 0: nothing trained, as in Keras
  initial_epoch <- check_count(initial_epoch, "initial_epoch", lower = 0)
  validation_batch_size <- if (is.null(validation_batch_size)) batch_size else
    check_count(validation_batch_size, "validation_batch_size")
  validates <- validation_epochs(validation_freq)
  validation_split <- check_number(validation_split, "validation_split", lower = 0, upper = 1)
  shuffle <- check_flag(shuffle, "shuffle")
  verbose <- check_verbose(verbose)
  callbacks <- normalize_callbacks(callbacks)
  data <- training_data(self, x, y, sample_weight)
  inputs <- data$inputs
  targets <- data$targets
  n <- data$n
  weights <- data$weights
  val <- NULL
  if (!is.null(validation_data)) {
    if (!is.list(validation_data) || !length(validation_data) %in% 2:3) {
      conv3d_abort(sprintf("`validation_data` must be list(x_val, y_val) or list(x_val, y_val, val_sample_weight), not %s.",
        format_value(validation_data)))
    }
    val <- list(inputs = as_input_list(self, validation_data[[1]], "validation_data[[1]]"),
      targets = as_target_list(self, validation_data[[2]], "validation_data[[2]]"))
    n_val <- samples_of(val$inputs, "validation_data[[1]]")
    val_outputs <- one_sample_outputs(self, val$inputs)
    check_targets(val$targets, n_val, "validation_data[[2]]", "validation_data[[1]]",
      val_outputs, self$compiled$losses) # (a fully convolutional model may validate on other sizes)
    if (length(validation_data) == 3L) {
      val$weights <- as_sample_weights(self, validation_data[[3]], n_val, val_outputs,
        "validation_data[[3]]")
    }
  } else if (validation_split > 0) {
    split_at <- floor(n * (1 - validation_split))
    if (split_at < 1 || split_at >= n) {
      conv3d_abort(sprintf("`validation_split` %s leaves no training or no validation samples of %d.",
        format(validation_split), n))
    }
    held <- (split_at + 1L):n
    val <- list(inputs = lapply(inputs, slice_rows, held), targets = lapply(targets, slice_rows, held),
      weights = if (!is.null(weights)) lapply(weights, slice_rows, held))
    inputs <- lapply(inputs, slice_rows, seq_len(split_at))
    targets <- lapply(targets, slice_rows, seq_len(split_at))
    if (!is.null(weights)) weights <- lapply(weights, slice_rows, seq_len(split_at))
    n <- split_at
  }
  weights <- with_class_weight(weights, class_weight, targets, n) # training samples only, as in Keras
  plan <- model_plan(self)
  history <- list()
  metric_epochs <- list()
  trained <- integer()
  trainer <- new_trainer(object, self)
  hooks <- list( # the callbacks' batch hooks, Keras's 0-based batch indices
    begin = function(b) for (cb in callbacks) cb$on_batch_begin(b, trainer),
    end = function(b, logs) for (cb in callbacks) cb$on_batch_end(b, logs, trainer),
    stop = function() trainer$stop_training)
  for (cb in callbacks) cb$on_train_begin(trainer)
  for (epoch in if (epochs > initial_epoch) seq(initial_epoch + 1, epochs)) {
    for (cb in callbacks) cb$on_epoch_begin(epoch - 1, trainer)
    order <- if (shuffle) sample.int(n) else seq_len(n)
    progress <- NULL
    if (verbose == 1) {
      cat(sprintf("Epoch %d/%d\n", epoch, epochs))
      progress <- utils::txtProgressBar(min = 0, max = ceiling(n / batch_size), style = 3)
    }
    logs <- run_batches(inputs, targets, weights, batch_size, order,
      function(x, y, w) train_batch(self, plan, x, y, w), progress, hooks)
    if (!is.null(progress)) close(progress)
    if (!is.null(val) && validates(epoch)) {
      vlogs <- run_batches(val$inputs, val$targets, val$weights, validation_batch_size,
        seq_len(samples_of(val$inputs, "validation_data[[1]]")),
        function(x, y, w) eval_batch(self, plan, x, y, w))
      names(vlogs) <- paste0("val_", names(vlogs))
      logs <- c(logs, vlogs)
    }
    # the callbacks first: their additions (a learning rate) are shown and
    # recorded, as Keras's progress bar and History come after them
    for (cb in callbacks) logs <- cb$on_epoch_end(epoch - 1, logs, trainer)
    if (verbose > 0) {
      cat(sprintf("Epoch %d/%d - %s\n", epoch, epochs,
        paste(names(logs), formatC(unlist(logs), digits = 4, format = "f"), sep = ": ",
          collapse = " - ")))
    }
    for (m in names(logs)) {
      history[[m]] <- c(history[[m]], logs[[m]])
      metric_epochs[[m]] <- c(metric_epochs[[m]], epoch) # (validation_freq: not every epoch)
    }
    trained <- c(trained, epoch)
    if (trainer$stop_training) break
  }
  for (cb in callbacks) cb$on_train_end(trainer)
  invisible(structure(list(params = list(epochs = epochs, samples = n, batch_size = batch_size,
    verbose = verbose), metrics = history, epoch = trained, metric_epochs = metric_epochs),
    class = "conv3d_history"))
}

#' Evaluate a model
#'
#' The compiled loss (with the layers' penalties) and metrics on `x`, `y`, in
#' batches, without dropout.
#'
#' @inheritParams fit.conv3d_model
#' @param batch_size Samples per batch.
#' @param verbose 0 silent, 1 or 2 prints the scores (`"auto"`: 1 in an
#'   interactive session).
#' @param sample_weight `NULL` or the samples' weights, as in [fit()]: they
#'   weight the loss and the `weighted_metrics`.
#' @param ... Nothing: any other argument (such as Keras's `steps`, which
#'   conv3d does not implement) is an error.
#' @return A named numeric vector: `loss` and the metrics.
#' @export
#' @examples
#' model <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
#'   layer_flatten() |>
#'   layer_dense(1)
#' compile(model, "sgd", "mse")
#' evaluate(model, array(1, c(3, 2, 2, 2, 1)), c(0, 1, 2))
evaluate <- function(object, ...) UseMethod("evaluate")

#' @rdname evaluate
#' @export
evaluate.conv3d_model <- function(object, x, y, batch_size = 32, verbose = 0, sample_weight = NULL,
                                  ...) {
  reject_dots(list(...), "evaluate")
  if (missing(y)) conv3d_abort("`y` is missing: give the targets.")
  self <- model_self(object)
  check_compiled(self)
  batch_size <- check_count(batch_size, "batch_size")
  verbose <- check_verbose(verbose)
  data <- training_data(self, x, y, sample_weight)
  plan <- model_plan(self)
  logs <- unlist(run_batches(data$inputs, data$targets, data$weights, batch_size, seq_len(data$n),
    function(x, y, w) eval_batch(self, plan, x, y, w)))
  if (verbose > 0) cat(paste(names(logs), formatC(logs, digits = 4, format = "f"), sep = ": ",
    collapse = " - "), "\n")
  logs
}

#' @export
print.conv3d_history <- function(x, ...) {
  if (!length(x$metrics)) {
    cat("No epochs trained.\n")
    return(invisible(x))
  }
  last <- vapply(x$metrics, function(v) v[length(v)], 0)
  cat(sprintf("Final epoch (plot to see history):\n%s\n", paste(sprintf("%10s: %.4g",
    names(last), last), collapse = "\n")))
  invisible(x)
}

#' @export
as.data.frame.conv3d_history <- function(x, ...) {
  if (!length(x$metrics)) { # epochs = 0
    return(data.frame(epoch = integer(), value = numeric(), metric = factor(),
      data = factor(levels = c("training", "validation"))))
  }
  rows <- lapply(names(x$metrics), function(m) {
    v <- x$metrics[[m]]
    validation <- startsWith(m, "val_")
    epochs <- x$metric_epochs[[m]] %||% x$epoch %||% seq_along(v)
    data.frame(epoch = epochs, value = v, metric = if (validation) substring(m, 5) else m,
      data = if (validation) "validation" else "training", stringsAsFactors = FALSE)
  })
  out <- do.call(rbind, rows)
  out$metric <- factor(out$metric, levels = unique(out$metric))
  out$data <- factor(out$data, levels = c("training", "validation"))
  out
}

#' Plot a training history
#'
#' One panel per metric, training and validation values per epoch (base graphics).
#'
#' @param x A history from [fit()].
#' @param y Unused.
#' @param ... Passed to [graphics::plot()].
#' @return `x`, invisibly.
#' @export
plot.conv3d_history <- function(x, y, ...) {
  df <- as.data.frame(x)
  metrics <- levels(df$metric)
  if (!length(metrics)) return(invisible(x)) # epochs = 0: nothing to draw
  old <- graphics::par(mfrow = c(length(metrics), 1), mar = c(4, 4, 1.5, 1))
  on.exit(graphics::par(old))
  for (m in metrics) {
    d <- df[df$metric == m, ]
    graphics::plot(d$epoch, d$value, type = "n", xlab = "epoch", ylab = m, main = m, ...)
    for (what in levels(droplevels(d$data))) {
      dd <- d[d$data == what, ]
      graphics::lines(dd$epoch, dd$value, type = "b", pch = 19,
        col = if (what == "training") "steelblue" else "darkorange")
    }
    rising <- d$value[length(d$value)] > d$value[1] # keep the legend off the curves
    graphics::legend(if (rising) "bottomright" else "topright", legend = levels(droplevels(d$data)),
      col = c("steelblue", "darkorange")[seq_along(levels(droplevels(d$data)))], lty = 1, bty = "n")
  }
  invisible(x)
}
