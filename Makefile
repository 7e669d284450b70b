# The developer commands. `make demo` and `make test` work on a fresh machine:
# they install what is missing (CRAN packages from the configured repository,
# pandoc from Debian for the vignette), then install conv3d.
R ?= R
RSCRIPT ?= Rscript
TEST_THREADS ?= 2

.PHONY: deps install test demo docs check bench

deps:
	$(RSCRIPT) tools/install-deps.R
	@command -v pandoc >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pandoc >/dev/null; \
	  else echo "pandoc not found: install it to build the vignette"; fi; }

install: deps
	$(R) CMD INSTALL --no-multiarch .

test: install
	NOT_CRAN=true OMP_THREAD_LIMIT=$(TEST_THREADS) $(RSCRIPT) tools/run-tests.R

demo: install
	$(RSCRIPT) -e 'demo("feature-maps", package = "conv3d", ask = FALSE, echo = FALSE)'

docs:
	$(RSCRIPT) -e 'if (!requireNamespace("roxygen2", quietly = TRUE)) install.packages("roxygen2"); roxygen2::roxygenise()'

check: deps
	$(R) CMD build .
	_R_CHECK_CRAN_INCOMING_REMOTE_=false $(R) CMD check --as-cran --no-manual conv3d_*.tar.gz
