# Sequential and functional models: building, predict(), weights, layers.

test_that("the first layer's input_shape builds a sequential model at once", {
  model <- keras_model_sequential()
  model |> layer_conv_3d(4, 3, input_shape = c(8, 8, 8, 2))
  expect_true(model$built)
  expect_equal(model$output_shape, c(NA, 6, 6, 6, 4))
  expect_true(model$layers[[1]]$built)
  batch <- keras_model_sequential() |>
    layer_conv_3d(4, 3, input_shape = c(8, 8, 8, 2), batch_size = 5)
  expect_equal(batch$input_shape, c(5, 8, 8, 8, 2))
  bis <- keras_model_sequential() |>
    layer_conv_3d(4, 3, input_shape = c(8, 8, 8, 2), batch_input_shape = c(3, 9, 9, 9, 1))
  expect_equal(bis$input_shape, c(3, 9, 9, 9, 1))
  expect_equal(keras_model_sequential(input_shape = c(5, 5, 5, 1))$input_shape, c(NA, 5, 5, 5, 1))
})

test_that("an unbuilt model builds on its first predict", {
  model <- keras_model_sequential() |> layer_conv_3d(2, 3) |> layer_conv_3d(1, 1)
  expect_false(model$built)
  x <- array(rnorm(3 * 5^3), c(3, 5, 5, 5, 1))
  y <- predict(model, x)
  expect_equal(dim(y), c(3, 3, 3, 3, 1))
  expect_true(model$built)
})

test_that("predict batches give the same result as one call", {
  set.seed(3)
  model <- keras_model_sequential(input_shape = c(5, 6, 7, 2)) |>
    layer_conv_3d(3, 2, activation = "tanh", dtype = "float64") |>
    layer_conv_3d(2, 1, dtype = "float64")
  x <- array(rnorm(7 * 5 * 6 * 7 * 2), c(7, 5, 6, 7, 2))
  whole <- model(x)
  expect_equal(predict(model, x, batch_size = 3), whole)
  expect_equal(predict(model, x, batch_size = 1), whole)
  expect_equal(predict(model, x), whole)
  # R keras's verbose: a progress bar over the batches, nothing else changed
  expect_output(shown <- predict(model, x, batch_size = 3, verbose = 1), "100%")
  expect_identical(shown, predict(model, x, batch_size = 3))
  expect_silent(predict(model, x, verbose = "auto")) # not interactive: silent
  l1 <- model$layers[[1]]
  expect_equal(whole, model$layers[[2]](l1(x)))
  expect_snapshot(error = TRUE, predict(model, x, batch_size = 0))
})

test_that("functional models compute like their layers", {
  set.seed(4)
  input <- layer_input(shape = c(6, 6, 6, 1), dtype = "float64", name = "main")
  a <- layer_conv_3d(filters = 2, kernel_size = 3, padding = "same", dtype = "float64")
  b <- layer_conv_3d(filters = 1, kernel_size = 3, dtype = "float64")
  output <- input |> a() |> b()
  model <- keras_model(input, output)
  x <- array(rnorm(2 * 6^3), c(2, 6, 6, 6, 1))
  expect_equal(predict(model, x), b(a(x)))
  expect_length(model$layers, 3)
  expect_equal(model$layers[[1]]$class_name, "InputLayer")
  two <- keras_model(input, list(a(input), output))
  res <- predict(two, x)
  expect_length(res, 2)
  expect_equal(res[[1]], a(x))
  nested <- keras_model_sequential() |> layer_conv_3d(1, 1, dtype = "float64")
  expect_equal(dim(nested(output)), c(NA, 4L, 4L, 4L, 1L))
  expect_snapshot(error = TRUE, keras_model(layer_input(shape = c(2, 2, 2, 1), name = "other"), output))
})

test_that("named lists of inputs and targets follow the layers' names, as in R keras", {
  set.seed(5)
  in_a <- layer_input(shape = 3, dtype = "float64", name = "in_a")
  in_b <- layer_input(shape = 3, dtype = "float64", name = "in_b")
  out_a <- layer_dense(in_a, 1, dtype = "float64", name = "out_a")
  out_b <- layer_dense(in_b, 1, dtype = "float64", name = "out_b")
  model <- keras_model(list(in_a, in_b), list(out_a, out_b))
  x1 <- matrix(rnorm(21), 7, 3)
  x2 <- matrix(rnorm(21), 7, 3)
  by_position <- predict(model, list(x1, x2))
  expect_identical(predict(model, list(in_b = x2, in_a = x1)), by_position)
  expect_identical(model(list(in_b = x2, in_a = x1)), by_position)
  compile(model, "sgd", "mse")
  ya <- rnorm(7)
  yb <- rnorm(7)
  expect_identical(evaluate(model, list(x1, x2), list(out_b = yb, out_a = ya)),
    evaluate(model, list(x1, x2), list(ya, yb)))
  # a single-input model takes its array alone or in a list of one
  single <- keras_model(in_a, out_a)
  expect_identical(predict(single, list(x1)), predict(single, x1))
  expect_snapshot(error = TRUE, {
    predict(model, list(in_a = x1, other = x2))
    predict(model, list(x1, x2[1:5, ]))
    predict(model, list(x1))
    predict(single, list(x1, x2))
    keras_model(list(in_a, in_a), out_a)
  })
})

test_that("get_weights / set_weights round-trip for layers and models", {
  model <- keras_model_sequential(input_shape = c(4, 4, 4, 2)) |>
    layer_conv_3d(3, 2, dtype = "float64") |>
    layer_conv_3d(1, 1, use_bias = FALSE, dtype = "float64")
  w <- get_weights(model)
  expect_length(w, 3)
  expect_equal(dim(w[[1]]), c(2, 2, 2, 2, 3))
  expect_equal(length(w[[2]]), 3)
  expect_equal(dim(w[[3]]), c(1, 1, 1, 3, 1))
  new <- lapply(w, function(a) a + 1)
  set_weights(model, new)
  expect_equal(get_weights(model), new)
  expect_equal(get_weights(model$layers[[2]]), new[3])
  expect_snapshot(error = TRUE, set_weights(model, new[1:2]))
  f32 <- layer_conv_3d(filters = 1, kernel_size = 1)
  f32(array(0, c(1, 1, 1, 1, 1)))
  set_weights(f32, list(array(0.1, c(1, 1, 1, 1, 1)), 0.1))
  expect_identical(get_weights(f32)[[2]], 0.100000001490116119384765625)
})

test_that("get_layer, pop_layer and trainable", {
  model <- keras_model_sequential(name = "stack") |>
    layer_conv_3d(2, 1, name = "first") |>
    layer_conv_3d(2, 1, name = "second")
  expect_identical(get_layer(model, "second"), model$layers[[2]])
  expect_identical(get_layer(model, index = 1), model$layers[[1]])
  expect_identical(get_layer(model, index = -1), model$layers[[2]]) # from the end
  expect_identical(get_layer(model, index = -2), model$layers[[1]])
  expect_snapshot(error = TRUE, {
    get_layer(model, "third")
    get_layer(model, index = 3)
    get_layer(model, index = 0)
    get_layer(model, "first", 2)
  })
  pop_layer(model)
  expect_length(model$layers, 1)
  pop_layer(model)
  expect_snapshot(error = TRUE, pop_layer(model))
  layer <- layer_conv_3d(filters = 1, kernel_size = 1, trainable = FALSE)
  expect_false(layer$trainable)
  layer$trainable <- TRUE
  expect_true(layer$trainable)
  # a model's trainable freezes or unfreezes all its layers, as in Keras
  model <- keras_model_sequential(input_shape = c(2, 2, 2, 1)) |>
    layer_conv_3d(2, 1, name = "c") |>
    layer_flatten() |>
    layer_dense(1, name = "d")
  expect_true(model$trainable)
  expect_length(model$trainable_weights, 4)
  expect_identical(model$trainable_weights, get_weights(model))
  model$trainable <- FALSE
  expect_false(model$trainable)
  expect_false(get_layer(model, "d")$trainable)
  expect_length(model$trainable_weights, 0)
  expect_identical(model$non_trainable_weights, get_weights(model))
  compile(model, optimizer_sgd(0.5), "mse")
  before <- get_weights(model)
  fit(model, array(1, c(4, 2, 2, 2, 1)), rep(3, 4), verbose = 0)
  expect_identical(get_weights(model), before)
  # a frozen model trains no layer, one added later included
  model |> layer_dense(1, name = "late")
  expect_length(model$trainable_weights, 0)
  expect_length(model$non_trainable_weights, 6)
  expect_output(summary(model), "Trainable params: 0 ")
  before <- get_weights(model)
  fit(model, array(1, c(4, 2, 2, 2, 1)), rep(3, 4), verbose = 0)
  expect_identical(get_weights(model), before)
  model$trainable <- TRUE
  expect_true(get_layer(model, "c")$trainable)
  expect_length(model$trainable_weights, 6)
  expect_snapshot(error = TRUE, model$name <- "other")
})

test_that("the packed-weight cache follows set_weights(), the tier and the input shape", {
  set.seed(8)
  layer <- layer_conv_3d(filters = 3, kernel_size = 2, padding = "same", dtype = "float64")
  x <- array(rnorm(2 * 4 * 5 * 6 * 2), c(2, 4, 5, 6, 2))
  layer(x)
  w <- get_weights(layer)
  w[[1]] <- w[[1]] * 2
  w[[2]] <- w[[2]] + 1
  set_weights(layer, w)
  expect_equal(layer(x), reference_conv3d(x, w[[1]], w[[2]], padding = "same"), tolerance = 1e-12)
  old <- conv3d_cpu()$kernel
  withr::defer(conv3d_cpu(old))
  conv3d_cpu("generic")
  expect_equal(layer(x), reference_conv3d(x, w[[1]], w[[2]], padding = "same"), tolerance = 1e-12)
  conv3d_cpu(old)
  # a depth of 9 makes the kernels run rows along depth instead of width
  deep <- array(rnorm(9 * 3 * 3 * 2), c(1, 9, 3, 3, 2))
  expect_equal(layer(deep), reference_conv3d(deep, w[[1]], w[[2]], padding = "same"),
    tolerance = 1e-12)
  expect_equal(layer(x), reference_conv3d(x, w[[1]], w[[2]], padding = "same"), tolerance = 1e-12)
})

test_that("a model read back in another session builds new graphs without mixing tensors up", {
  skip_on_cran()
  saved <- tempfile(fileext = ".rds")
  run <- function(lines) {
    script <- tempfile(fileext = ".R")
    writeLines(c("library(conv3d)", lines), script)
    suppressWarnings(system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE,
      stderr = TRUE, env = paste0("R_LIBS=", paste(.libPaths(), collapse = ":"))))
  }
  run(c("set.seed(1)",
    "input <- layer_input(c(2, 2, 2, 1), name = 'in')",
    "a <- layer_conv_3d(input, 2, 1, name = 'a')",
    "b <- layer_conv_3d(a, 2, 1, name = 'b')",
    "out <- layer_flatten(layer_concatenate(list(a, b)))",
    sprintf("saveRDS(keras_model(input, out), '%s')", saved)))
  # a fresh session's first tensors once took the ids of the loaded model's
  out <- run(c(sprintf("m <- readRDS('%s')", saved),
    "head <- layer_dense(m$outputs, 3, name = 'head')",
    "m2 <- keras_model(m$inputs, layer_dense(head, 1, name = 'head2'))",
    "x <- array(1, c(2, 2, 2, 2, 1))",
    "cat('dim', dim(predict(m2, x)), '\\n')",
    "cat('same', isTRUE(all.equal(predict(m, x), layer_flatten(layer_concatenate(list(get_layer(m, 'a')(x), get_layer(m, 'b')(get_layer(m, 'a')(x))))))), '\\n')"))
  expect_true("dim 2 1 " %in% out, info = paste(out, collapse = "\n"))
  expect_true("same TRUE " %in% out, info = paste(out, collapse = "\n"))
})

test_that("a chain model added to a sequential one adds its layers, as R keras nests it", {
  set.seed(91)
  inner <- keras_model_sequential(name = "inner") |>
    layer_dense(3, activation = "relu", name = "d1") |>
    layer_dense(2, name = "d2")
  outer <- keras_model_sequential(input_shape = 4) |> inner() |> layer_dense(1, name = "d3")
  expect_identical(vapply(outer$layers, function(l) l$name, ""), c("d1", "d2", "d3"))
  x <- matrix(rnorm(8), 2, 4)
  expect_equal(predict(outer, x), get_layer(outer, "d3")(predict(inner, x)))
  input <- layer_input(4)
  branched <- keras_model(input, list(layer_dense(input, 1), layer_dense(input, 1)), name = "fork")
  expect_snapshot(error = TRUE, keras_model_sequential(input_shape = 4) |> branched())
})

test_that("a batch's samples are taken as R's `[` takes them, for every array type", {
  # slice_batch() gathers the samples of double, integer and logical arrays
  # in C; arrays with dimnames (and other types) go through `[`
  set.seed(31)
  take <- function(x, idx) {
    do.call(`[`, c(list(x, idx), rep(list(TRUE), length(dim(x)) - 1L), list(drop = FALSE)))
  }
  arrays <- list(
    double = array(rnorm(7 * 3 * 4 * 2 * 5), c(7, 3, 4, 2, 5)),
    integer = array(sample(-50:50, 7 * 6, TRUE), c(7, 6)),
    logical = array(c(TRUE, FALSE, NA)[sample(3, 7 * 2 * 3, TRUE)], c(7, 2, 3)),
    vector_like = array(rnorm(7), 7),
    named = array(1:14, c(7, 2), dimnames = list(letters[1:7], c("u", "v"))),
    text = array(letters[1:14], c(7, 2)))
  arrays$double[c(2, 9)] <- c(NA, NaN)
  for (name in names(arrays)) {
    x <- arrays[[name]]
    for (idx in list(c(3L, 1L), 7:1, c(2L, 2L, 5L), 4L, integer(0), c(6, 2))) {
      got <- conv3d:::slice_batch(x, idx)
      expect_identical(got, take(x, idx), info = paste(name, paste(idx, collapse = " ")))
    }
  }
})
