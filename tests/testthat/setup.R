# CRAN allows two threads; the package re-reads the limit at every call.
Sys.setenv(OMP_THREAD_LIMIT = "2")
# Scratch memory is handed out full of NaN bytes, so every test also checks
# that no kernel reads scratch it did not write.
conv3d:::scratch_poison(TRUE)
withr::defer(conv3d:::scratch_poison(FALSE), teardown_env())
