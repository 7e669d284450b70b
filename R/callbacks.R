# Keras's training callbacks for fit(): each is a set of hooks the training
# loop calls (train begin/end, epoch begin/end, batch begin/end) with Keras's
# 0-based epoch and batch indices and a `trainer` environment holding the
# model, its learning rate and the stop flag.

new_callback <- function(name, on_train_begin = NULL, on_epoch_begin = NULL,
                         on_batch_begin = NULL, on_batch_end = NULL, on_epoch_end = NULL,
                         on_train_end = NULL) {
  nothing <- function(...) invisible(NULL)
  structure(list(name = name,
    on_train_begin = on_train_begin %||% nothing,
    on_epoch_begin = on_epoch_begin %||% nothing,
    on_batch_begin = on_batch_begin %||% nothing,
    on_batch_end = on_batch_end %||% nothing,
    # returns the epoch's logs, with what the callback adds to them
    on_epoch_end = on_epoch_end %||% function(epoch, logs, trainer) logs,
    on_train_end = on_train_end %||% nothing), class = "conv3d_callback")
}

#' @export
print.conv3d_callback <- function(x, ...) {
  cat(sprintf("<callback %s>\n", x$name))
  invisible(x)
}

# fit()'s callbacks as callback objects: callback_*() objects, or plain
# functions(epoch, logs) called after each epoch with the 1-based epoch.
normalize_callbacks <- function(callbacks) {
  if (inherits(callbacks, "conv3d_callback")) callbacks <- list(callbacks)
  ok <- is.null(callbacks) || is.list(callbacks) &&
    all(vapply(callbacks, function(cb) is.function(cb) || inherits(cb, "conv3d_callback"), TRUE))
  if (!ok) {
    conv3d_abort(sprintf(
      "`callbacks` must be NULL or a list of callback_*() objects and functions(epoch, logs), not %s.",
      format_value(callbacks)))
  }
  lapply(callbacks, function(cb) {
    if (inherits(cb, "conv3d_callback")) return(cb)
    new_callback("function", on_epoch_end = function(epoch, logs, trainer) {
      cb(epoch + 1, logs)
      logs
    })
  })
}

# The state fit() shares with its callbacks.
new_trainer <- function(model, self) {
  trainer <- new.env(parent = emptyenv())
  trainer$model <- model
  trainer$stop_training <- FALSE
  trainer$get_lr <- function() self$compiled$optimizer$config$learning_rate
  trainer$set_lr <- function(lr) self$compiled$optimizer$config$learning_rate <- lr
  trainer
}

# Keras's reading of mode "auto": larger is better for accuracies and AUCs.
monitor_larger_better <- function(mode, monitor) {
  switch(mode, min = FALSE, max = TRUE,
    auto = endsWith(monitor, "acc") || endsWith(monitor, "accuracy") || endsWith(monitor, "auc"))
}

check_mode <- function(mode) {
  if (!is.character(mode) || length(mode) != 1L || !mode %in% c("auto", "min", "max")) {
    conv3d_abort(sprintf("`mode` must be \"auto\", \"min\" or \"max\", not %s.", format_value(mode)))
  }
  mode
}

check_monitor <- function(monitor) {
  if (!is.character(monitor) || length(monitor) != 1L || is.na(monitor) || !nzchar(monitor)) {
    conv3d_abort(sprintf("`monitor` must be one metric name such as \"val_loss\", not %s.",
      format_value(monitor)))
  }
  monitor
}

# The monitored value of an epoch's logs, or NULL with a warning (once per
# fit) naming the metrics there are, as Keras warns and carries on.
monitor_value <- function(logs, monitor, state, who) {
  value <- logs[[monitor]]
  if (is.null(value) && !isTRUE(state$warned)) {
    state$warned <- TRUE
    warning(sprintf("%s is conditioned on metric `%s`, which is not available. Available metrics are: %s.",
      who, monitor, paste(names(logs), collapse = ", ")), call. = FALSE)
  }
  value
}

#' Stop training when a monitored metric has stopped improving
#'
#' Keras's `EarlyStopping`: after each epoch the monitored value is compared
#' with the best so far; training stops once it has not improved by more than
#' `min_delta` for `patience` epochs (never after the first epoch).
#'
#' @param monitor The metric of the epoch's logs to watch (`"val_loss"`,
#'   `"loss"`, `"val_accuracy"`, ...). A metric that is not there gives a
#'   warning and no stopping.
#' @param min_delta The smallest change (in absolute value) that counts as an
#'   improvement.
#' @param patience Epochs without improvement after which training stops.
#' @param verbose 0 silent, 1 prints a line when it stops (and restores).
#' @param mode `"min"` (lower is better), `"max"`, or `"auto"`: `"max"` for
#'   metrics whose name ends in `acc`, `accuracy` or `auc`, else `"min"`.
#' @param baseline `NULL` or a value the metric must beat: epochs that improve
#'   on the best so far without beating it still count towards `patience`.
#' @param restore_best_weights When stopping, set the model's weights back to
#'   those of the epoch with the best value (the first watched epoch's if none
#'   improved); a fit that runs all its epochs keeps the last weights, as in
#'   Keras.
#' @param start_from_epoch Epochs to wait before watching (warm-up).
#' @return A callback for [fit()]'s `callbacks`.
#' @family callbacks
#' @export
#' @examples
#' stop_early <- callback_early_stopping(monitor = "val_loss", patience = 3,
#'   restore_best_weights = TRUE)
callback_early_stopping <- function(monitor = "val_loss", min_delta = 0, patience = 0, verbose = 0,
                                    mode = c("auto", "min", "max"), baseline = NULL,
                                    restore_best_weights = FALSE, start_from_epoch = 0) {
  monitor <- check_monitor(monitor)
  min_delta <- abs(check_number(min_delta, "min_delta"))
  patience <- check_count(patience, "patience", lower = 0)
  verbose <- check_verbose(verbose)
  mode <- check_mode(if (missing(mode)) "auto" else mode)
  if (!is.null(baseline)) baseline <- check_number(baseline, "baseline")
  restore_best_weights <- check_flag(restore_best_weights, "restore_best_weights")
  start_from_epoch <- check_count(start_from_epoch, "start_from_epoch", lower = 0)
  larger <- monitor_larger_better(mode, monitor)
  improves <- function(value, reference) { # NaN never improves, as numpy's comparisons
    isTRUE(if (larger) value - min_delta > reference else value + min_delta < reference)
  }
  state <- new.env(parent = emptyenv())
  new_callback("early_stopping",
    on_train_begin = function(trainer) { # a callback may serve several fits
      state$wait <- 0
      state$stopped_epoch <- 0
      state$best <- if (larger) -Inf else Inf
      state$best_weights <- NULL
      state$best_epoch <- 0
      state$warned <- FALSE
    },
    on_epoch_end = function(epoch, logs, trainer) {
      current <- monitor_value(logs, monitor, state, "Early stopping")
      if (is.null(current) || epoch < start_from_epoch) return(logs)
      if (restore_best_weights && is.null(state$best_weights)) {
        state$best_weights <- get_weights(trainer$model)
        state$best_epoch <- epoch
      }
      state$wait <- state$wait + 1
      if (improves(current, state$best)) {
        state$best <- current
        state$best_epoch <- epoch
        if (restore_best_weights) state$best_weights <- get_weights(trainer$model)
        # the count restarts only on beating both the baseline and the best
        if (is.null(baseline) || improves(current, baseline)) state$wait <- 0
        return(logs)
      }
      if (state$wait >= patience && epoch > 0) {
        state$stopped_epoch <- epoch
        trainer$stop_training <- TRUE
        if (restore_best_weights && !is.null(state$best_weights)) {
          if (verbose > 0) {
            cat(sprintf("Restoring model weights from the end of the best epoch: %d.\n",
              state$best_epoch + 1))
          }
          set_weights(trainer$model, state$best_weights)
        }
      }
      logs
    },
    on_train_end = function(trainer) {
      if (state$stopped_epoch > 0 && verbose > 0) {
        cat(sprintf("Epoch %d: early stopping\n", state$stopped_epoch + 1))
      }
    })
}

#' Reduce the learning rate when a metric has stopped improving
#'
#' Keras's `ReduceLROnPlateau`: when the monitored value has not improved by
#' more than `min_delta` for `patience` epochs, the optimizer's learning rate
#' is multiplied by `factor` (not below `min_lr`), then `cooldown` epochs pass
#' before counting again. Each epoch's logs (and so the history) get the
#' learning rate of that epoch as `lr`.
#'
#' @inheritParams callback_early_stopping
#' @param min_delta The smallest change that counts as an improvement (not
#'   negative).
#' @param factor The factor in (0, 1) the learning rate is multiplied by.
#' @param verbose 0 silent, 1 prints a line at each reduction.
#' @param mode `"min"`, `"max"`, or `"auto"`: `"max"` when the metric's name
#'   contains `acc`, else `"min"` (Keras's rule for this callback).
#' @param cooldown Epochs after a reduction before the count restarts.
#' @param min_lr The lower bound of the learning rate.
#' @return A callback for [fit()]'s `callbacks`.
#' @family callbacks
#' @export
#' @examples
#' on_plateau <- callback_reduce_lr_on_plateau(monitor = "val_loss", factor = 0.5,
#'   patience = 2)
callback_reduce_lr_on_plateau <- function(monitor = "val_loss", factor = 0.1, patience = 10,
                                          verbose = 0, mode = c("auto", "min", "max"),
                                          min_delta = 1e-4, cooldown = 0, min_lr = 0) {
  monitor <- check_monitor(monitor)
  factor <- check_number(factor, "factor", lower = 0, upper = 1, open = TRUE)
  patience <- check_count(patience, "patience", lower = 0)
  verbose <- check_verbose(verbose)
  mode <- check_mode(if (missing(mode)) "auto" else mode)
  min_delta <- check_number(min_delta, "min_delta", lower = 0)
  cooldown <- check_count(cooldown, "cooldown", lower = 0)
  min_lr <- check_number(min_lr, "min_lr", lower = 0)
  larger <- mode == "max" || mode == "auto" && grepl("acc", monitor, fixed = TRUE)
  improves <- function(value, best) { # NaN never improves
    isTRUE(if (larger) value > best + min_delta else value < best - min_delta)
  }
  state <- new.env(parent = emptyenv())
  new_callback("reduce_lr_on_plateau",
    on_train_begin = function(trainer) {
      state$best <- if (larger) -Inf else Inf
      state$cooldown_counter <- 0
      state$wait <- 0
      state$warned <- FALSE
    },
    on_epoch_end = function(epoch, logs, trainer) {
      logs$lr <- trainer$get_lr()
      current <- monitor_value(logs, monitor, state, "Learning rate reduction")
      if (is.null(current)) return(logs)
      if (state$cooldown_counter > 0) {
        state$cooldown_counter <- state$cooldown_counter - 1
        state$wait <- 0
      }
      if (improves(current, state$best)) {
        state$best <- current
        state$wait <- 0
      } else if (state$cooldown_counter == 0) {
        state$wait <- state$wait + 1
        old <- trainer$get_lr()
        if (state$wait >= patience && old > min_lr) {
          new <- max(old * factor, min_lr)
          trainer$set_lr(new)
          if (verbose > 0) {
            cat(sprintf("Epoch %d: ReduceLROnPlateau reducing learning rate to %s.\n", epoch + 1,
              format(new)))
          }
          state$cooldown_counter <- cooldown
          state$wait <- 0
        }
      }
      logs
    })
}

#' Set the learning rate at the start of each epoch
#'
#' Keras's `LearningRateScheduler`: before each epoch the optimizer's learning
#' rate becomes `schedule(epoch, lr)`, with `epoch` counted from 0 as in Keras
#' and `lr` the current rate; each epoch's logs get it as `lr`.
#'
#' @param schedule A function `function(epoch, lr)` (or `function(epoch)`)
#'   returning the new learning rate, one non-negative number.
#' @param verbose 0 silent, 1 prints the rate set at each epoch.
#' @return A callback for [fit()]'s `callbacks`.
#' @family callbacks
#' @export
#' @examples
#' halve_every_10 <- callback_learning_rate_scheduler(function(epoch, lr) {
#'   if (epoch > 0 && epoch %% 10 == 0) lr / 2 else lr
#' })
callback_learning_rate_scheduler <- function(schedule, verbose = 0) {
  if (!is.function(schedule)) {
    conv3d_abort(sprintf("`schedule` must be a function(epoch, lr), not %s.", format_value(schedule)))
  }
  verbose <- check_verbose(verbose)
  takes_lr <- length(formals(schedule)) >= 2L || "..." %in% names(formals(schedule))
  new_callback("learning_rate_scheduler",
    on_epoch_begin = function(epoch, trainer) {
      lr <- if (takes_lr) schedule(epoch, trainer$get_lr()) else schedule(epoch)
      if (!is.numeric(lr) || length(lr) != 1L || !is.finite(lr) || lr < 0) {
        conv3d_abort(sprintf("`schedule` must return one finite learning rate >= 0, not %s.",
          format_value(lr)))
      }
      trainer$set_lr(lr)
      if (verbose > 0) {
        cat(sprintf("Epoch %d: LearningRateScheduler setting learning rate to %s.\n", epoch + 1,
          format(lr)))
      }
    },
    on_epoch_end = function(epoch, logs, trainer) {
      logs$lr <- trainer$get_lr()
      logs
    })
}

#' Stop training when a batch's loss is NaN or infinite
#'
#' Keras's `TerminateOnNaN`: training stops after the first batch whose loss
#' is not finite (that epoch's logs are still recorded).
#'
#' @return A callback for [fit()]'s `callbacks`.
#' @family callbacks
#' @export
#' @examples
#' callback_terminate_on_naan()
callback_terminate_on_naan <- function() {
  new_callback("terminate_on_naan",
    on_batch_end = function(batch, logs, trainer) {
      loss <- logs$loss
      if (!is.null(loss) && !is.finite(loss)) {
        cat(sprintf("Batch %d: Invalid loss, terminating training\n", batch))
        trainer$stop_training <- TRUE
      }
    })
}

#' Write each epoch's logs to a CSV file
#'
#' Keras's `CSVLogger`: a header line, then one line per epoch: the epoch
#' (counted from 0, as Keras writes it) and the logs' values, written as
#' each epoch ends. As in Keras, the columns are fixed at the first epoch
#' written (sorted by name, with `val_` twins added when there is no
#' validation) and a value missing from an epoch's logs is written `NA`.
#'
#' @param filename The file to write.
#' @param separator The field separator, one character.
#' @param append Append to an existing file (its header is not written again)
#'   instead of overwriting it.
#' @return A callback for [fit()]'s `callbacks`.
#' @family callbacks
#' @export
#' @examples
#' log_file <- tempfile(fileext = ".csv")
#' logger <- callback_csv_logger(log_file)
callback_csv_logger <- function(filename, separator = ",", append = FALSE) {
  if (!is.character(filename) || length(filename) != 1L || is.na(filename) || !nzchar(filename)) {
    conv3d_abort(sprintf("`filename` must be one file path, not %s.", format_value(filename)))
  }
  if (!is.character(separator) || length(separator) != 1L || is.na(separator) ||
      nchar(separator) != 1L) {
    conv3d_abort(sprintf("`separator` must be one character, not %s.", format_value(separator)))
  }
  append <- check_flag(append, "append")
  state <- new.env(parent = emptyenv())
  write_lines <- function(lines, mode) {
    con <- tryCatch(file(filename, mode), error = function(e) NULL, warning = function(w) NULL)
    if (is.null(con)) {
      conv3d_abort(sprintf("callback_csv_logger() cannot write to `filename` \"%s\".", filename))
    }
    on.exit(close(con))
    writeLines(lines, con)
  }
  # the shortest decimal form that reads back as the same double
  number <- function(v) {
    v <- as.numeric(v)
    short <- sprintf("%.15g", v)
    if (is.finite(v) && as.numeric(short) != v) sprintf("%.17g", v) else short
  }
  new_callback("csv_logger",
    on_train_begin = function(trainer) {
      state$header <- !(append && file.exists(filename) && isTRUE(file.size(filename) > 0))
      if (!append) write_lines(character(), "w") # a fresh file, as Keras opens it
    },
    on_epoch_end = function(epoch, logs, trainer) {
      if (is.null(state$keys)) { # fixed at the first epoch, kept across fits
        keys <- sort(names(logs))
        if (!any(startsWith(keys, "val_"))) keys <- c(keys, paste0("val_", keys))
        state$keys <- keys
      }
      values <- vapply(state$keys, function(k) if (is.null(logs[[k]])) "NA" else number(logs[[k]]), "")
      lines <- paste(c(epoch, values), collapse = separator)
      if (state$header) {
        lines <- c(paste(c("epoch", state$keys), collapse = separator), lines)
        state$header <- FALSE
      }
      write_lines(lines, "a")
      logs
    })
}

#' A callback made of R functions
#'
#' Keras's `LambdaCallback`: any of the hooks, each called with Keras's
#' arguments (epochs and batches counted from 0, as Keras counts them).
#'
#' @param on_epoch_begin `function(epoch, logs)`, before each epoch.
#' @param on_epoch_end `function(epoch, logs)`, after each epoch (`logs`: its
#'   loss and metrics, validation ones prefixed `val_`).
#' @param on_batch_begin `function(batch, logs)`, before each training batch.
#' @param on_batch_end `function(batch, logs)`, after each training batch
#'   (`logs`: the epoch's loss and metrics so far, as Keras's batch logs).
#' @param on_train_batch_begin,on_train_batch_end The same, under Keras's
#'   newer names (fit() has training batches only); both are called when
#'   both are given.
#' @param on_train_begin `function(logs)`, before training.
#' @param on_train_end `function(logs)`, after training (`logs`: the last
#'   epoch's).
#' @return A callback for [fit()]'s `callbacks`.
#' @family callbacks
#' @export
#' @examples
#' show_loss <- callback_lambda(on_epoch_end = function(epoch, logs) {
#'   cat("epoch", epoch, "loss", logs$loss, "\n")
#' })
callback_lambda <- function(on_epoch_begin = NULL, on_epoch_end = NULL, on_batch_begin = NULL,
                            on_batch_end = NULL, on_train_batch_begin = NULL,
                            on_train_batch_end = NULL, on_train_begin = NULL,
                            on_train_end = NULL) {
  hooks <- list(on_epoch_begin = on_epoch_begin, on_epoch_end = on_epoch_end,
    on_batch_begin = on_batch_begin, on_batch_end = on_batch_end,
    on_train_batch_begin = on_train_batch_begin, on_train_batch_end = on_train_batch_end,
    on_train_begin = on_train_begin, on_train_end = on_train_end)
  for (h in names(hooks)) {
    if (!is.null(hooks[[h]]) && !is.function(hooks[[h]])) {
      conv3d_abort(sprintf("`%s` must be NULL or a function, not %s.", h, format_value(hooks[[h]])))
    }
  }
  state <- new.env(parent = emptyenv())
  new_callback("lambda",
    on_train_begin = function(trainer) {
      state$last <- list()
      if (!is.null(on_train_begin)) on_train_begin(list())
    },
    on_epoch_begin = function(epoch, trainer) if (!is.null(on_epoch_begin)) on_epoch_begin(epoch, list()),
    on_batch_begin = function(batch, trainer) {
      if (!is.null(on_batch_begin)) on_batch_begin(batch, list())
      if (!is.null(on_train_batch_begin)) on_train_batch_begin(batch, list())
    },
    on_batch_end = function(batch, logs, trainer) {
      if (!is.null(on_batch_end)) on_batch_end(batch, logs)
      if (!is.null(on_train_batch_end)) on_train_batch_end(batch, logs)
    },
    on_epoch_end = function(epoch, logs, trainer) {
      state$last <- logs
      if (!is.null(on_epoch_end)) on_epoch_end(epoch, logs)
      logs
    },
    on_train_end = function(trainer) if (!is.null(on_train_end)) on_train_end(state$last))
}
