# Optimizers with Keras's update rules (tf.keras 2.11+), applied by fit() after
# each batch. State (momentum, moments) lives in the compiled model, one entry
# per weight.

new_optimizer <- function(name, config) {
  structure(list(name = name, config = config), class = "conv3d_optimizer")
}

#' Optimizers
#'
#' For [compile()]. The update rules are Keras's: with gradient `g`,
#' * SGD: `v <- momentum * v - lr * g`, then `w <- w + v`, or with Nesterov
#'   momentum `w <- w + momentum * v - lr * g` (plain `w <- w - lr * g` without
#'   momentum);
#' * Adam: `m <- m + (g - m) * (1 - beta_1)`, `v <- v + (g^2 - v) * (1 - beta_2)`,
#'   `w <- w - lr * sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)`
#'   (with `amsgrad`, the running maximum of `v`);
#' * RMSprop: `s <- rho * s + (1 - rho) * g^2` (centered: minus the square of the
#'   running mean of `g`), step `lr * g / sqrt(s + epsilon)`, with momentum
#'   accumulated as `m <- momentum * m + step`.
#'
#' Optimizers may also be given to [compile()] by name: `"sgd"`, `"adam"`,
#' `"rmsprop"`.
#'
#' @param learning_rate The step size.
#' @param momentum Momentum factor in `[0, 1)`.
#' @param nesterov Use Nesterov momentum.
#' @param beta_1,beta_2 Exponential decay rates of Adam's moments.
#' @param epsilon Small constant for numerical stability.
#' @param amsgrad Use the AMSGrad variant of Adam.
#' @param rho Discount factor of RMSprop's moving average.
#' @param centered Normalise by the estimated variance of the gradient.
#' @return An optimizer object.
#' @name optimizers
#' @examples
#' optimizer_adam(learning_rate = 0.01)
NULL

#' @rdname optimizers
#' @export
optimizer_sgd <- function(learning_rate = 0.01, momentum = 0, nesterov = FALSE) {
  new_optimizer("sgd", list(
    learning_rate = check_number(learning_rate, "learning_rate", lower = 0),
    momentum = check_number(momentum, "momentum", lower = 0, upper = 1),
    nesterov = check_flag(nesterov, "nesterov")))
}

#' @rdname optimizers
#' @export
optimizer_adam <- function(learning_rate = 0.001, beta_1 = 0.9, beta_2 = 0.999, epsilon = 1e-07,
                           amsgrad = FALSE) {
  new_optimizer("adam", list(
    learning_rate = check_number(learning_rate, "learning_rate", lower = 0),
    beta_1 = check_number(beta_1, "beta_1", lower = 0, upper = 1),
    beta_2 = check_number(beta_2, "beta_2", lower = 0, upper = 1),
    epsilon = check_number(epsilon, "epsilon", lower = 0),
    amsgrad = check_flag(amsgrad, "amsgrad")))
}

#' @rdname optimizers
#' @export
optimizer_rmsprop <- function(learning_rate = 0.001, rho = 0.9, momentum = 0, epsilon = 1e-07,
                              centered = FALSE) {
  new_optimizer("rmsprop", list(
    learning_rate = check_number(learning_rate, "learning_rate", lower = 0),
    rho = check_number(rho, "rho", lower = 0, upper = 1),
    momentum = check_number(momentum, "momentum", lower = 0, upper = 1),
    epsilon = check_number(epsilon, "epsilon", lower = 0),
    centered = check_flag(centered, "centered")))
}

#' @export
print.conv3d_optimizer <- function(x, ...) {
  cfg <- x$config
  cat(sprintf("<optimizer %s> %s\n", x$name, paste(names(cfg), vapply(cfg, format, ""),
    sep = " = ", collapse = ", ")))
  invisible(x)
}

normalize_optimizer <- function(optimizer) {
  if (inherits(optimizer, "conv3d_optimizer")) return(optimizer)
  if (is.character(optimizer) && length(optimizer) == 1L) {
    maker <- list(sgd = optimizer_sgd, adam = optimizer_adam, rmsprop = optimizer_rmsprop)[[
      tolower(optimizer)]]
    if (!is.null(maker)) return(maker())
  }
  conv3d_abort(sprintf(
    "`optimizer` must be \"sgd\", \"adam\", \"rmsprop\" or an optimizer_*() object, not %s.",
    format_value(optimizer)))
}

# One update of weight w with gradient g; state is this weight's slots (NULL at
# first). Returns list(w, state).
optimizer_step <- function(optimizer, w, g, state) {
  cfg <- optimizer$config
  lr <- cfg$learning_rate
  zero <- w * 0
  switch(optimizer$name,
    sgd = {
      if (cfg$momentum == 0) return(list(w = w - lr * g, state = state))
      v <- cfg$momentum * (state$v %||% zero) - lr * g
      w <- if (cfg$nesterov) w + cfg$momentum * v - lr * g else w + v
      list(w = w, state = list(v = v))
    },
    adam = {
      t <- (state$t %||% 0) + 1
      m <- state$m %||% zero
      v <- state$v %||% zero
      m <- m + (g - m) * (1 - cfg$beta_1)
      v <- v + (g * g - v) * (1 - cfg$beta_2)
      vhat <- if (cfg$amsgrad) pmax(state$vhat %||% zero, v) else v
      step <- lr * sqrt(1 - cfg$beta_2^t) / (1 - cfg$beta_1^t)
      w <- w - step * m / (sqrt(vhat) + cfg$epsilon)
      list(w = w, state = list(t = t, m = m, v = v, vhat = if (cfg$amsgrad) vhat))
    },
    rmsprop = {
      s <- cfg$rho * (state$s %||% zero) + (1 - cfg$rho) * g * g
      denom <- s
      mg <- NULL
      if (cfg$centered) {
        mg <- cfg$rho * (state$mg %||% zero) + (1 - cfg$rho) * g
        denom <- s - mg * mg
      }
      step <- lr * g / sqrt(denom + cfg$epsilon)
      if (cfg$momentum > 0) {
        mom <- cfg$momentum * (state$mom %||% zero) + step
        list(w = w - mom, state = list(s = s, mg = mg, mom = mom))
      } else {
        list(w = w - step, state = list(s = s, mg = mg))
      }
    }
  )
}
