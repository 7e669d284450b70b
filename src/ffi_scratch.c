/* Scratch memory and interrupt checks of the entry points that run the
 * kernels: malloc'd blocks owned by external pointers, so an error or an
 * interrupt's longjmp leaks nothing. */
#include "ffi.h"
#ifdef __linux__
#include <sys/mman.h>
#endif
#include <stdlib.h>

/* Called on the main thread between chunks, when no thread runs: the longjmp of an
 * interrupt is safe because all scratch memory here is owned by external
 * pointers (alloc_elems). */
void check_user_interrupt(void) { R_CheckUserInterrupt(); }

/* Large fresh arrays are written once, by several threads: on Linux, ask for
 * transparent huge pages so that writing them costs few page faults. */
void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = (uintptr_t)2 << 20;
  if (bytes < 2 * huge) return;
  uintptr_t start = ((uintptr_t)p + huge - 1) & ~(huge - 1);
  uintptr_t end = ((uintptr_t)p + bytes) & ~(huge - 1);
  if (end > start) madvise((void*)start, end - start, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

/* Scratch memory of one call: malloc'd (not R_alloc'd, which R frees
 * only at a later garbage collection), so the next call gets the same, already
 * mapped memory back from malloc instead of fresh pages to fault in and zero.
 * Each block is owned by an external pointer whose finalizer frees it, so an
 * error or an interrupt's longjmp leaks nothing; a normal return frees it at
 * once (scratch_release). */
static void scratch_finalize(SEXP ptr) {
  free(R_ExternalPtrAddr(ptr));
  R_ClearExternalPtr(ptr);
}

void* alloc_elems(struct call_scratch* cs, int64_t n, size_t size) {
  int64_t bytes;
  if (cs->n >= 8 || !size_mul(n > 0 ? n : 1, (int64_t)size, &bytes) ||
      (uint64_t)bytes > (uint64_t)SIZE_MAX) {
    Rf_error("internal error in ffi_scratch.c: scratch allocation");
  }
  SEXP ptr = PROTECT(R_MakeExternalPtr(NULL, R_NilValue, R_NilValue));
  cs->ptr[cs->n++] = ptr; /* stays protected until scratch_release */
  R_RegisterCFinalizerEx(ptr, scratch_finalize, TRUE);
  void* p = malloc((size_t)bytes);
  if (p == NULL) Rf_error("cannot allocate %.0f bytes of scratch memory", (double)bytes);
  R_SetExternalPtrAddr(ptr, p);
  return p;
}

/* Frees the call's scratch now and unprotects it (the protections taken by
 * alloc_elems, which are the most recent ones of the caller). */
void scratch_release(struct call_scratch* cs) {
  for (int i = 0; i < cs->n; ++i) scratch_finalize(cs->ptr[i]);
  UNPROTECT(cs->n);
  cs->n = 0;
}
