# CRAN allows two threads; the package re-reads the limit at every call.
Sys.setenv(OMP_THREAD_LIMIT = "2")
