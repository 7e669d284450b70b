library(testthat)
library(conv3d)

test_check("conv3d")
