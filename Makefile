# The developer commands. `make demo` and `make test` work on a fresh machine:
# they install what is missing (CRAN packages from the configured repository,
# pandoc and qpdf from Debian for the vignette and the check), then install conv3d.
R ?= R
RSCRIPT ?= Rscript
TEST_THREADS ?= 2

.PHONY: deps install test demo docs check bench

deps:
	$(RSCRIPT) tools/install-deps.R
	@missing=""; \
	command -v pandoc >/dev/null 2>&1 || missing="$$missing pandoc"; \
	command -v qpdf >/dev/null 2>&1 || missing="$$missing qpdf"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing from Debian:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "Not found:$$missing (pandoc builds the vignette, qpdf is used by R CMD check)"; fi; \
	fi

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

# forward-pass benchmark against PyTorch (bench/README.md); BENCH_ARGS e.g.
# "--dtype float64" or "--no-anchor"
bench: install
	@/usr/bin/python3 -c "import torch" 2>/dev/null || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch >/dev/null; \
	  fi; }
	$(RSCRIPT) bench/run.R $(BENCH_ARGS)
