# Installs the CRAN packages conv3d's tests, vignette and demo need, if missing.
needed <- c("magrittr", "testthat", "withr", "knitr", "rmarkdown")
missing <- needed[!vapply(needed, requireNamespace, logical(1), quietly = TRUE)]
if (length(missing)) {
  if (identical(unname(getOption("repos")["CRAN"]), "@CRAN@")) {
    utils::chooseCRANmirror(graphics = FALSE, ind = 1)
  }
  message("Installing: ", paste(missing, collapse = ", "))
  install.packages(missing, Ncpus = 2L)
}
still <- needed[!vapply(needed, requireNamespace, logical(1), quietly = TRUE)]
if (length(still)) stop("could not install: ", paste(still, collapse = ", "))
