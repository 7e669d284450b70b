# Predicted class probabilities of 4 samples over 3 classes (rows summing to
# 1) with their one-hot targets and the same targets as 0-based labels: the
# inputs of the loss tests.
class_probabilities <- function(seed) {
  set.seed(seed)
  p <- matrix(runif(12, 0.05, 0.95), 4, 3)
  list(p = p / rowSums(p), y = diag(3)[c(1, 3, 2, 3), ], labels = c(0, 2, 1, 2))
}
