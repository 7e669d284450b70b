# Training callbacks: Keras's rules traced by hand on scripted metric
# sequences (driving a callback's hooks directly), and their effect in fit().

# A compiled one-weight model y = w x (SGD, mse) and its trainer.
line_model <- function(w = 1, lr = 0.1) {
  model <- keras_model_sequential(input_shape = 1) |>
    layer_dense(1, use_bias = FALSE, dtype = "float64", weights = list(matrix(w)))
  compile(model, optimizer_sgd(lr), "mse")
  model
}

# Drives a callback over epochs 0, 1, ... with the given values of `metric`;
# `before_epoch(e)` runs before each epoch ends. Returns the epochs' logs and
# the epoch after which training stopped (NA if it did not).
drive <- function(cb, model, values, metric = "val_loss", before_epoch = NULL) {
  trainer <- conv3d:::new_trainer(model, conv3d:::model_self(model))
  cb$on_train_begin(trainer)
  logs <- list()
  for (e in seq_along(values) - 1L) {
    cb$on_epoch_begin(e, trainer)
    if (!is.null(before_epoch)) before_epoch(e)
    logs[[e + 1L]] <- cb$on_epoch_end(e, stats::setNames(list(values[e + 1L]), metric), trainer)
    if (trainer$stop_training) break
  }
  cb$on_train_end(trainer)
  list(logs = logs, stopped = if (trainer$stop_training) e else NA)
}

test_that("early stopping follows Keras's patience, min_delta, mode and baseline rules", {
  model <- line_model()
  # best 0.9 at epoch 1; epochs 2 and 3 do not improve: patience 2 ends at epoch 3
  expect_identical(drive(callback_early_stopping(patience = 2), model, c(1, 0.9, 0.95, 0.96, 0.5))$stopped, 3L)
  # patience 0 stops at the first epoch without improvement, never at epoch 0
  expect_identical(drive(callback_early_stopping(), model, c(1, 0.9, 0.9, 0.1))$stopped, 2L)
  expect_identical(drive(callback_early_stopping(), model, 1)$stopped, NA)
  # an improvement must exceed min_delta
  expect_identical(drive(callback_early_stopping(min_delta = 0.1, patience = 1), model,
    c(1, 0.95, 0.8))$stopped, 1L)
  # "auto" watches accuracies upwards; "max" any metric
  expect_identical(drive(callback_early_stopping("val_accuracy"), model, c(0.5, 0.6, 0.55),
    "val_accuracy")$stopped, 2L)
  expect_identical(drive(callback_early_stopping("val_loss", mode = "max"), model,
    c(0.5, 0.6, 0.55))$stopped, 2L)
  # baseline: improving epochs that do not beat it keep counting, and an epoch
  # that does not improve then stops
  expect_identical(drive(callback_early_stopping(patience = 2, baseline = 0.5), model,
    c(0.9, 0.8, 0.8, 0.8))$stopped, 2L)
  expect_identical(drive(callback_early_stopping(patience = 2, baseline = 0.85), model,
    c(0.9, 0.8, 0.8, 0.8))$stopped, 3L)
  # start_from_epoch: the first epochs are not watched
  expect_identical(drive(callback_early_stopping(start_from_epoch = 2), model,
    c(1, 2, 3, 2.5, 2.6))$stopped, 4L)
  # NaN never improves (numpy's comparisons): patience runs on
  expect_identical(drive(callback_early_stopping(patience = 1), model, c(1, NaN, 0.5))$stopped, 1L)
  expect_identical(drive(callback_early_stopping(patience = 1, restore_best_weights = TRUE), model,
    c(NaN, NaN))$stopped, 1L)
  # a metric that is not there: a warning, no stopping
  expect_warning(out <- drive(callback_early_stopping("val_auc"), model, c(1, 2, 3)),
    "`val_auc`, which is not available")
  expect_identical(out$stopped, NA)
})

test_that("early stopping restores the best epoch's weights", {
  model <- line_model()
  set_epoch_weight <- function(e) set_weights(model, list(matrix(10 + e)))
  out <- drive(callback_early_stopping(patience = 1, restore_best_weights = TRUE), model,
    c(3, 1, 2, 2.5), before_epoch = set_epoch_weight)
  expect_identical(out$stopped, 2L)
  expect_identical(get_weights(model)[[1]][1], 11) # epoch 1's
  # no improvement after the first epoch: its weights come back
  out <- drive(callback_early_stopping(restore_best_weights = TRUE), model, c(1, 2),
    before_epoch = set_epoch_weight)
  expect_identical(get_weights(model)[[1]][1], 10)
  # in fit(): a learning rate of 0 leaves the loss where it is, so training
  # stops after the second epoch and the history holds two
  model <- line_model(lr = 0)
  expect_output(h <- fit(model, matrix(1:4), c(2, 4, 6, 8), epochs = 10, verbose = 0,
    callbacks = list(callback_early_stopping("loss", verbose = 1))), "Epoch 2: early stopping")
  expect_equal(h$epoch, 1:2)
  expect_length(h$metrics$loss, 2)
})

test_that("reduce_lr_on_plateau lowers the rate after patience, with cooldown and min_lr", {
  model <- line_model(lr = 0.1)
  lr <- function(out) vapply(out$logs, function(l) l$lr, 0)
  # patience 1: epoch 1 does not improve -> 0.05 from epoch 2 on; cooldown 1
  # only zeroes the count at epoch 2, which then does not improve -> 0.025;
  # min_lr 0.03 caps it at 0.03, below which it stays
  cb <- callback_reduce_lr_on_plateau(factor = 0.5, patience = 1, cooldown = 1, min_lr = 0.03)
  out <- drive(cb, model, c(1, 1, 1, 1, 1))
  expect_equal(lr(out), c(0.1, 0.1, 0.05, 0.03, 0.03)) # each epoch's rate before its reduction
  expect_equal(conv3d:::model_self(model)$compiled$optimizer$config$learning_rate, 0.03)
  # at min_lr it stays, without announcing further reductions; NaN does not improve
  model <- line_model(lr = 0.1)
  expect_output(out <- drive(callback_reduce_lr_on_plateau(factor = 0.5, patience = 1,
    min_lr = 0.05, verbose = 1), model, c(1, NaN, 2, 3, 4)), "reducing learning rate to 0.05.")
  expect_equal(lr(out), c(0.1, 0.1, 0.05, 0.05, 0.05))
  expect_output(drive(callback_reduce_lr_on_plateau(patience = 1, min_lr = 0.05, verbose = 1),
    model, c(1, 2, 3)), NA)
  # improvements reset the count
  model <- line_model(lr = 0.1)
  out <- drive(callback_reduce_lr_on_plateau(factor = 0.1, patience = 2), model, c(5, 4, 4.5, 3, 3.5, 3.2))
  expect_equal(lr(out), rep(0.1, 6))
  expect_equal(conv3d:::model_self(model)$compiled$optimizer$config$learning_rate, 0.01)
  # the history records the rate
  model <- line_model(lr = 0)
  h <- fit(model, matrix(1:4), c(2, 4, 6, 8), epochs = 3, verbose = 0,
    callbacks = list(callback_reduce_lr_on_plateau("loss", patience = 0, factor = 0.5)))
  expect_named(h$metrics, c("loss", "lr"))
})

test_that("learning_rate_scheduler sets each epoch's rate, and SGD takes it", {
  model <- line_model(w = 1, lr = 1)
  x <- matrix(c(1, 2))
  y <- c(3, 6)
  h <- fit(model, x, y, epochs = 2, batch_size = 2, shuffle = FALSE, verbose = 0,
    callbacks = list(callback_learning_rate_scheduler(function(epoch, lr) 0.1 / (epoch + 1))))
  expect_equal(h$metrics$lr, c(0.1, 0.05))
  # w <- w - lr * d/dw mean((w x - y)^2) = w - lr * 2 mean(x (w x - y))
  w <- 1
  for (lr in c(0.1, 0.05)) w <- w - lr * 2 * mean(x * (w * x - y))
  expect_equal(get_weights(model)[[1]][1], w, tolerance = 1e-12)
  # a schedule of the epoch alone
  h <- fit(model, x, y, epochs = 1, verbose = 0,
    callbacks = list(callback_learning_rate_scheduler(function(epoch) 0.2)))
  expect_equal(h$metrics$lr, 0.2)
})

test_that("csv_logger writes Keras's epoch lines; terminate_on_naan stops at a bad batch", {
  model <- line_model()
  file <- tempfile(fileext = ".csv")
  x <- matrix(1:4)
  y <- c(2, 4, 6, 8)
  h <- fit(model, x, y, epochs = 3, verbose = 0, validation_split = 0.25,
    callbacks = list(callback_csv_logger(file)))
  logged <- utils::read.csv(file)
  expect_named(logged, c("epoch", "loss", "val_loss")) # sorted, as Keras
  expect_equal(logged$epoch, 0:2)
  expect_equal(logged$loss, h$metrics$loss, tolerance = 1e-12)
  expect_equal(logged$val_loss, h$metrics$val_loss, tolerance = 1e-12)
  fit(model, x, y, epochs = 2, verbose = 0, validation_split = 0.25,
    callbacks = list(callback_csv_logger(file, append = TRUE)))
  expect_equal(utils::read.csv(file)$epoch, c(0:2, 0:1)) # one header
  # without validation, Keras still writes val_ columns (NA); numbers read
  # back exactly
  h <- fit(model, x, y, epochs = 1, verbose = 0, callbacks = list(callback_csv_logger(file, ";")))
  expect_identical(readLines(file)[1], "epoch;loss;val_loss")
  logged <- utils::read.csv(file, sep = ";")
  expect_identical(logged$loss, h$metrics$loss)
  expect_true(is.na(logged$val_loss))
  # the columns stay those of the first epoch written when a later fit logs more
  logger <- callback_csv_logger(file)
  fit(model, x, y, epochs = 1, verbose = 0, callbacks = list(logger))
  fit(model, x, y, epochs = 1, verbose = 0, validation_split = 0.25, callbacks = list(logger))
  expect_named(utils::read.csv(file), c("epoch", "loss", "val_loss"))
  expect_error(fit(model, x, y, epochs = 1, verbose = 0,
    callbacks = list(callback_csv_logger(file.path(tempfile(), "no", "dir.csv")))),
    "cannot write to `filename`")
  # an infinite target makes the first batch's loss infinite
  batches <- integer()
  expect_output(h <- fit(line_model(), x, c(Inf, 1, 1, 1), epochs = 3, batch_size = 1,
    shuffle = FALSE, verbose = 0, callbacks = list(callback_terminate_on_naan(),
      callback_lambda(on_batch_end = function(batch, logs) batches <<- c(batches, batch)))),
    "Batch 0: Invalid loss, terminating training")
  expect_identical(batches, 0L)
  expect_equal(h$epoch, 1)
})

test_that("callback_lambda calls its hooks in Keras's order, with running batch logs", {
  calls <- character()
  batch_logs <- list()
  epoch_logs <- list()
  record <- function(what) function(i, logs) calls <<- c(calls, paste(what, i))
  cb <- callback_lambda(
    on_train_begin = function(logs) calls <<- c(calls, "train_begin"),
    on_epoch_begin = record("epoch_begin"),
    on_batch_begin = record("batch_begin"),
    on_batch_end = function(batch, logs) {
      calls <<- c(calls, paste("batch_end", batch))
      batch_logs[[length(batch_logs) + 1L]] <<- logs
    },
    on_epoch_end = function(epoch, logs) {
      calls <<- c(calls, paste("epoch_end", epoch))
      epoch_logs[[epoch + 1L]] <<- logs
    },
    on_train_end = function(logs) calls <<- c(calls, paste("train_end", logs$loss)))
  model <- line_model()
  h <- fit(model, matrix(1:3), c(1, 1, 1), epochs = 2, batch_size = 2, verbose = 0,
    callbacks = list(cb))
  expect_identical(calls, c("train_begin",
    "epoch_begin 0", "batch_begin 0", "batch_end 0", "batch_begin 1", "batch_end 1", "epoch_end 0",
    "epoch_begin 1", "batch_begin 0", "batch_end 0", "batch_begin 1", "batch_end 1", "epoch_end 1",
    paste("train_end", h$metrics$loss[2])))
  # the last batch's logs are the epoch's: running means over its batches
  expect_identical(batch_logs[[2]], epoch_logs[[1]])
  expect_identical(batch_logs[[4]]$loss, h$metrics$loss[2])
})

test_that("callback arguments are checked with worded errors", {
  expect_snapshot(error = TRUE, {
    callback_early_stopping(monitor = c("loss", "val_loss"))
    callback_early_stopping(mode = "lower")
    callback_early_stopping(patience = -1)
    callback_reduce_lr_on_plateau(factor = 1)
    callback_learning_rate_scheduler(0.1)
    callback_csv_logger(NA)
    callback_lambda(on_epoch_end = "print")
    fit(line_model(), matrix(1), 1, verbose = 0, callbacks = list(1))
    fit(line_model(), matrix(1), 1, verbose = 0,
      callbacks = list(callback_learning_rate_scheduler(function(epoch, lr) "fast")))
  })
})
