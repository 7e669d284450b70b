# The activation layers with settings and PReLU: values from Keras's
# documented examples and formulas, TensorFlow's slopes at the kinks,
# gradients against finite differences, PReLU's weight in training, errors.

values_of <- function(layer, v) as.vector(layer(array(v, c(1, length(v)))))

test_that("ReLU, LeakyReLU, ELU and ThresholdedReLU give Keras's values", {
  v <- c(-3, -1, 0, 2)
  # the examples of Keras's ReLU and LeakyReLU documentation
  expect_identical(values_of(layer_activation_relu(), v), c(0, 0, 0, 2))
  expect_identical(values_of(layer_activation_relu(max_value = 1), v), c(0, 0, 0, 1))
  expect_identical(values_of(layer_activation_relu(negative_slope = 1), v), v)
  expect_identical(values_of(layer_activation_relu(threshold = 1.5), c(-3, -1, 1, 2)),
    c(0, 0, 0, 2))
  expect_equal(values_of(layer_activation_leaky_relu(dtype = "float64"), v), c(-0.9, -0.3, 0, 2))
  expect_equal(values_of(layer_activation_leaky_relu(alpha = 0.1, dtype = "float64"), v),
    c(-0.3, -0.1, 0, 2))
  # ReLU with all three: max_value where x >= it, slope * (x - threshold) below
  w <- c(-2, 0.25, 0.5, 1, 5.5, 6, 9)
  expect_equal(values_of(layer_activation_relu(max_value = 6, negative_slope = 0.1,
    threshold = 0.5, dtype = "float64"), w), c(-0.25, -0.025, 0, 1, 5.5, 6, 6))
  expect_equal(values_of(layer_activation_elu(alpha = 0.5, dtype = "float64"), v),
    c(0.5 * expm1(-3), 0.5 * expm1(-1), 0, 2))
  expect_identical(values_of(layer_activation_thresholded_relu(), c(-1, 0.5, 1, 2)), c(0, 0, 0, 2))
  expect_identical(values_of(layer_activation_thresholded_relu(theta = 0), c(-1, 0, 3)), c(0, 0, 3))
  selu <- values_of(layer_activation_selu(dtype = "float64"), v)
  expect_equal(selu, 1.0507009873554805 * c(1.6732632423543772 * expm1(c(-3, -1)), 0, 2))
  # float32 layers give float32 values
  y <- values_of(layer_activation_elu(alpha = 0.3), c(-0.7, 0.1))
  expect_identical(y, conv3d:::round_to_dtype(y, "float32"))
})

test_that("float32 layers compare and multiply in float32, as TensorFlow does", {
  # 0.1 as a float32 setting equals 0.1 as a float32 input
  expect_identical(values_of(layer_activation_thresholded_relu(theta = 0.1), c(0.1, 0.2)),
    c(0, as.vector(conv3d:::round_to_dtype(0.2, "float32"))))
  expect_identical(values_of(layer_activation_relu(threshold = 0.1), 0.1), 0)
  slope <- function(layer, v) {
    as.vector(conv3d:::layer_backward(layer, array(v, c(1, 1)), array(1, c(1, 1)))$input)
  }
  expect_identical(slope(layer_activation_relu(max_value = 0.1), 0.1), 1)
  expect_identical(slope(layer_activation_relu(threshold = 0.1, negative_slope = 0.5), 0.1), 0)
  # alpha * x with alpha rounded to float32, then the product rounded
  f32 <- function(v) as.vector(conv3d:::round_to_dtype(v, "float32"))
  x <- f32(c(-1.7, -0.33, -123.456))
  expect_identical(values_of(layer_activation_leaky_relu(), x), f32(f32(0.3) * x))
  # TensorFlow's elu: exp(x) - 1 in float32, 0 for a tiny x
  expect_identical(values_of(layer_activation_elu(), c(-1e-8, -0.5)), c(0, f32(f32(exp(-0.5)) - 1)))
})

test_that("softmax runs over the axes given as Keras counts them", {
  set.seed(3101)
  x <- array(rnorm(2 * 3 * 4 * 2 * 5), c(2, 3, 4, 2, 5))
  y <- layer_activation_softmax(x, dtype = "float64")
  expect_equal(y, reference_activation(x, "softmax"), tolerance = 1e-14)
  # axis 1 (0 is the batch): R's second axis
  y1 <- layer_activation_softmax(x, axis = 1, dtype = "float64")
  expect_equal(y1, aperm(reference_activation(aperm(x, c(1, 3, 4, 5, 2)), "softmax"),
    c(1, 5, 2, 3, 4)), tolerance = 1e-14)
  expect_equal(layer_activation_softmax(x, axis = -4, dtype = "float64"), y1)
  # several axes: one distribution over all of them
  y23 <- layer_activation_softmax(x, axis = c(2, 3), dtype = "float64")
  expect_equal(apply(y23, c(1, 2, 5), sum), array(1, c(2, 3, 5)), tolerance = 1e-14)
  e <- exp(x[1, 2, , , 3])
  expect_equal(y23[1, 2, , , 3], e / sum(e), tolerance = 1e-14)
  expect_error(layer_activation_softmax(x, axis = 5), "`axis` 5 .* distinct axes of inputs of rank 5",
    class = "conv3d_error_shape")
  expect_error(layer_activation_softmax(x, axis = c(-1, 4)),
    "`axis` c\\(-1, 4\\) .* distinct axes of inputs of rank 5", class = "conv3d_error_shape")
})

test_that("slopes at the kinks are TensorFlow's", {
  slope_at <- function(layer, v) {
    x <- array(v, c(1, length(v)))
    as.vector(conv3d:::layer_backward(layer, x, array(1, dim(x)))$input)
  }
  f64 <- "float64"
  expect_identical(slope_at(layer_activation_relu(dtype = f64), c(-1, 0, 1)), c(0, 0, 1))
  # leaky (no limit, no threshold): tf.nn.leaky_relu, alpha at 0
  expect_identical(slope_at(layer_activation_relu(negative_slope = 0.5, dtype = f64),
    c(-1, 0, 1)), c(0.5, 0.5, 1))
  expect_identical(slope_at(layer_activation_leaky_relu(dtype = f64), c(-1, 0, 1)), c(0.3, 0.3, 1))
  # a limit of 6: tf.nn.relu6, 0 at 6; another limit: clip_by_value, 1 at it
  expect_identical(slope_at(layer_activation_relu(max_value = 6, dtype = f64), c(5, 6, 7)),
    c(1, 0, 0))
  expect_identical(slope_at(layer_activation_relu(max_value = 5, dtype = f64), c(4, 5, 6)),
    c(1, 1, 0))
  # a threshold: 0 at it, the slope below
  expect_identical(slope_at(layer_activation_relu(threshold = 1, negative_slope = 0.2,
    dtype = f64), c(0, 1, 2)), c(0.2, 0, 1))
  expect_identical(slope_at(layer_activation_thresholded_relu(dtype = f64), c(0.5, 1, 2)),
    c(0, 0, 1))
  expect_equal(slope_at(layer_activation_elu(alpha = 2, dtype = f64), c(-1, 0, 1)),
    c(2 * exp(-1), 2, 1))
})

test_that("gradients match finite differences", {
  set.seed(3102)
  # away from the kinks, where finite differences hold
  x <- array(sample(c(-1, 1), 2 * 3 * 2 * 2 * 3, TRUE) * runif(2 * 3 * 2 * 2 * 3, 0.2, 2),
    c(2, 3, 2, 2, 3))
  f64 <- "float64"
  for (layer in list(
    layer_activation_relu(max_value = 1.5, negative_slope = 0.1, threshold = 0.1, dtype = f64),
    layer_activation_leaky_relu(alpha = 0.2, dtype = f64),
    layer_activation_elu(alpha = 0.7, dtype = f64),
    layer_activation_thresholded_relu(theta = 0.1, dtype = f64),
    layer_activation_softmax(dtype = f64),
    layer_activation_softmax(axis = c(1, 3), dtype = f64),
    layer_activation_parametric_relu(alpha_initializer = initializer_random_uniform(0, 1),
      shared_axes = c(1, 3), dtype = f64))) {
    expect_input_gradients(layer, list(x), merge = FALSE)
  }
})

test_that("PReLU's alpha has Keras's shape and gradient", {
  set.seed(3103)
  x <- array(rnorm(2 * 3 * 4 * 2 * 5), c(2, 3, 4, 2, 5))
  layer <- layer_activation_parametric_relu(alpha_initializer = initializer_random_uniform(0, 1),
    shared_axes = c(1, 2, 3), dtype = "float64")
  y <- layer(x)
  alpha <- get_weights(layer)[[1]]
  expect_identical(dim(alpha), c(1L, 1L, 1L, 5L))
  for (c in 1:5) {
    expect_equal(y[, , , , c], pmax(x[, , , , c], 0) + alpha[c] * pmin(x[, , , , c], 0))
  }
  # unshared: one alpha per input element (the batch aside)
  full <- layer_activation_parametric_relu()
  full(array(0, c(1, 3, 4, 2, 5)))
  expect_identical(dim(get_weights(full)[[1]]), c(3L, 4L, 2L, 5L))
  expect_identical(dim(layer_activation_parametric_relu(layer_input(c(3, 4, 2, 5)))),
    c(NA, 3L, 4L, 2L, 5L))
  # the weight's gradient: dy * min(x, 0) summed over the batch and shared axes
  dy <- array(rnorm(length(y)), dim(y))
  g <- conv3d:::layer_backward(layer, x, dy)$weights[[1]]
  loss <- function(a) {
    set_weights(layer, list(a))
    sum(dy * layer(x))
  }
  eps <- 1e-6
  for (c in 1:5) {
    up <- alpha
    down <- alpha
    up[c] <- up[c] + eps
    down[c] <- down[c] - eps
    expect_equal(g[c], (loss(up) - loss(down)) / (2 * eps), tolerance = 1e-7)
  }
})

test_that("PReLU trains with its regularizer and constraint", {
  # alpha starts at -0.5: the nonneg constraint clips it after each update
  train <- function(constraint) {
    set.seed(3104)
    input <- layer_input(c(4, 4, 4, 1), dtype = "float64")
    conv <- layer_conv_3d(input, 3, 3, padding = "same", dtype = "float64")
    act <- layer_activation_parametric_relu(conv, alpha_initializer = initializer_constant(-0.5),
      alpha_regularizer = regularizer_l2(0.1), alpha_constraint = constraint,
      shared_axes = c(1, 2, 3), dtype = "float64", name = "prelu")
    model <- keras_model(input, layer_conv_3d(act, 1, 1, dtype = "float64"))
    layer <- get_layer(model, "prelu")
    expect_equal(layer$losses[[1]], 0.1 * 3 * 0.25)
    x <- array(rnorm(4 * 64), c(4, 4, 4, 4, 1))
    y <- array(-abs(rnorm(4 * 64)), c(4, 4, 4, 4, 1))
    compile(model, optimizer_sgd(0.1), "mse")
    fit(model, x, y, epochs = 3, batch_size = 4, verbose = 0)
    list(alpha = as.vector(get_weights(layer)[[1]]), config = layer$get_config())
  }
  free <- train(NULL)
  clipped <- train(constraint_nonneg())
  expect_true(any(free$alpha < 0))
  expect_true(all(clipped$alpha >= 0))
  expect_false(isTRUE(all.equal(free$alpha, rep(-0.5, 3))))
  expect_identical(clipped$config$shared_axes, 1:3)
  expect_true(all(c("alpha_initializer", "alpha_regularizer", "alpha_constraint") %in%
    names(clipped$config)))
})

test_that("they compose, carry Keras's names and refuse bad settings by name", {
  model <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
    layer_conv_3d(2, 1) |>
    layer_activation_leaky_relu() |>
    layer_activation_parametric_relu(shared_axes = c(1, 2, 3))
  expect_identical(dim(predict(model, array(1, c(3, 2, 2, 2, 1)))), c(3L, 2L, 2L, 2L, 2L))
  expect_match(layer_activation_relu()$name, "^re_lu(_[0-9]+)?$")
  expect_match(layer_activation_leaky_relu()$name, "^leaky_re_lu(_[0-9]+)?$")
  expect_match(layer_activation_parametric_relu()$name, "^p_re_lu(_[0-9]+)?$")
  expect_match(layer_activation_thresholded_relu()$name, "^thresholded_re_lu(_[0-9]+)?$")
  expect_match(layer_activation_elu()$name, "^elu(_[0-9]+)?$")
  expect_match(layer_activation_softmax()$name, "^softmax(_[0-9]+)?$")
  expect_null(layer_activation_relu()$get_config()$max_value)
  expect_true("max_value" %in% names(layer_activation_relu()$get_config()))

  expect_error(layer_activation_relu(max_value = -1), "`max_value` must be one finite number >= 0, not -1")
  expect_error(layer_activation_relu(negative_slope = -0.1), "`negative_slope` must be")
  expect_error(layer_activation_relu(threshold = NA), "`threshold` must be")
  expect_error(layer_activation_leaky_relu(alpha = "a"), "`alpha` must be")
  expect_error(layer_activation_elu(alpha = Inf), "`alpha` must be one finite number, not Inf")
  expect_error(layer_activation_softmax(axis = 1e10), "`axis` must be one or more distinct whole")
  expect_error(layer_activation_parametric_relu(shared_axes = 1e10), "`shared_axes` must be")
  expect_error(layer_activation_thresholded_relu(theta = -1), "`theta` must be")
  expect_error(layer_activation_softmax(axis = 1.5), "`axis` must be one or more distinct whole numbers, not 1.5")
  expect_error(layer_activation_softmax(axis = c(1, 1)), "`axis` must be")
  expect_error(layer_activation_parametric_relu(shared_axes = 0), "`shared_axes` must be NULL or whole numbers >= 1")
  expect_error(layer_activation_parametric_relu(layer_input(c(2, 2)), shared_axes = 3),
    "`shared_axes` 3 .* outside inputs of rank 3", class = "conv3d_error_shape")
  expect_error(layer_activation_parametric_relu(layer_input(c(NA, 2, 2, 2, 1))),
    "needs known lengths on the axes it does not share", class = "conv3d_error_shape")
  layer <- layer_activation_parametric_relu(shared_axes = 1:3)
  layer(array(0, c(1, 2, 2, 2, 3)))
  expect_error(layer(array(0, c(1, 2, 2, 2, 4))), "built for an alpha of dim c\\(1, 1, 1, 3\\)",
    class = "conv3d_error_shape")
  expect_error(set_weights(layer, list(array(0, c(1, 1, 1, 4)))),
    "alpha weight must be an array of dim c\\(1, 1, 1, 3\\)", class = "conv3d_error_weights")
  expect_error(layer_activation_elu(array("a", c(1, 2))), "must be numeric",
    class = "conv3d_error_shape")
  expect_error(conv3d:::layer_backward(layer_activation_elu(), array(0, c(1, 2)), array(0, c(1, 3))),
    "output dim c\\(1, 2\\)", class = "conv3d_error_shape")
})
