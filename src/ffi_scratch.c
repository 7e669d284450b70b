/* Scratch memory and interrupt checks of the entry points that run the
 * kernels: malloc'd blocks owned by external pointers, so an error or an
 * interrupt's longjmp leaks nothing. */
#define _GNU_SOURCE /* dladdr */
#include "ffi.h"
#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#endif
#include <stdlib.h>
#include <string.h>

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

/* Scratch memory of one call: malloc'd (not R_alloc'd, which R frees only at
 * a later garbage collection), each block owned by an external pointer whose
 * finalizer gives it back, so an error or an interrupt's longjmp leaks
 * nothing; a normal return gives it back at once (scratch_release).
 *
 * Blocks given back are kept for the next calls, up to SCRATCH_KEEP_BYTES in
 * all: a fresh block from malloc is often fresh pages (large blocks are mapped
 * and unmapped), and faulting those in and zeroing them can cost more than the
 * convolution (about 5-15 us per page in a VM). Only the main thread (R's)
 * allocates and gives back. */
#define SCRATCH_KEEP 8
#ifdef __SANITIZE_ADDRESS__
#define SCRATCH_KEEP_BYTES ((size_t)0) /* AddressSanitizer sees every block's own bounds */
#else
#define SCRATCH_KEEP_BYTES ((size_t)64 << 20)
#endif
#define SCRATCH_HEADER 64 /* the block's size, and 64-byte alignment kept */
static void* kept[SCRATCH_KEEP];
static size_t kept_bytes;
/* tests: fill every block handed out, and every result array
 * (alloc_result), with all-ones bytes (NaN as floats and doubles), so a
 * kernel that reads scratch it did not write, or leaves a result element
 * unwritten, shows */
static int poison;

SEXP ffi_scratch_poison(SEXP on) {
  const int was = poison;
  poison = Rf_asLogical(on) == TRUE;
  return Rf_ScalarLogical(was);
}

/* A fresh R double vector of n elements for a result the C routines fill:
 * under the tests' poison also all-ones bytes (NaN), so an element a routine
 * fails to write shows, instead of keeping what the memory held (often an
 * earlier call's equal result). */
SEXP alloc_result(R_xlen_t n) {
  SEXP out = Rf_allocVector(REALSXP, n);
  if (poison && n > 0) memset(REAL(out), 0xff, sizeof(double) * (size_t)n);
  return out;
}

static size_t block_size(void* block) { return *(size_t*)block; }

/* A kept block of at least `bytes` (the smallest such), or NULL. */
static void* take_kept(size_t bytes) {
  int best = -1;
  for (int i = 0; i < SCRATCH_KEEP; ++i) {
    if (kept[i] && block_size(kept[i]) >= bytes &&
        (best < 0 || block_size(kept[i]) < block_size(kept[best]))) {
      best = i;
    }
  }
  if (best < 0) return NULL;
  void* block = kept[best];
  kept[best] = NULL;
  kept_bytes -= block_size(block);
  return block;
}

/* Keeps a block for later calls, freeing the smallest kept ones to make room;
 * a block larger than the whole allowance is freed. */
static void give_back(void* block) {
  const size_t bytes = block_size(block);
  if (bytes > SCRATCH_KEEP_BYTES) {
    free(block);
    return;
  }
  for (;;) {
    int free_slot = -1, smallest = -1;
    for (int i = 0; i < SCRATCH_KEEP; ++i) {
      if (!kept[i]) {
        free_slot = i;
      } else if (smallest < 0 || block_size(kept[i]) < block_size(kept[smallest])) {
        smallest = i;
      }
    }
    if (free_slot >= 0 && kept_bytes + bytes <= SCRATCH_KEEP_BYTES) {
      kept[free_slot] = block;
      kept_bytes += bytes;
      return;
    }
    kept_bytes -= block_size(kept[smallest]);
    free(kept[smallest]);
    kept[smallest] = NULL;
  }
}

/* Frees every kept block (clear_session(), unloading the namespace). */
void scratch_forget(void) {
  for (int i = 0; i < SCRATCH_KEEP; ++i) {
    free(kept[i]);
    kept[i] = NULL;
  }
  kept_bytes = 0;
}

static void scratch_finalize(SEXP ptr) {
  char* p = R_ExternalPtrAddr(ptr);
  if (p) give_back(p - SCRATCH_HEADER);
  R_ClearExternalPtr(ptr);
}

void* alloc_elems(struct call_scratch* cs, int64_t n, size_t size) {
  int64_t bytes;
  if (cs->n >= 8 || !size_mul(n > 0 ? n : 1, (int64_t)size, &bytes) ||
      (uint64_t)bytes > (uint64_t)SIZE_MAX - SCRATCH_HEADER) {
    Rf_error("internal error in ffi_scratch.c: scratch allocation");
  }
  SEXP ptr = PROTECT(R_MakeExternalPtr(NULL, R_NilValue, R_NilValue));
  cs->ptr[cs->n++] = ptr; /* stays protected until scratch_release */
  R_RegisterCFinalizerEx(ptr, scratch_finalize, TRUE);
  const size_t total = (size_t)bytes + SCRATCH_HEADER;
  char* block = take_kept(total);
  if (block == NULL) {
    block = malloc(total);
    if (block == NULL) Rf_error("cannot allocate %.0f bytes of scratch memory", (double)bytes);
    *(size_t*)block = total;
  }
  if (poison) memset(block + SCRATCH_HEADER, 0xff, (size_t)bytes);
  R_SetExternalPtrAddr(ptr, block + SCRATCH_HEADER);
  return block + SCRATCH_HEADER;
}

/* Frees the call's scratch now and unprotects it (the protections taken by
 * alloc_elems, which are the most recent ones of the caller). */
void scratch_release(struct call_scratch* cs) {
  for (int i = 0; i < cs->n; ++i) scratch_finalize(cs->ptr[i]);
  UNPROTECT(cs->n);
  cs->n = 0;
}

/* clear_session(): frees the kept scratch blocks. */
SEXP ffi_release_memory(void) {
  scratch_forget();
  return R_NilValue;
}

/* .onUnload: frees the kept scratch and keeps the DLL mapped for the rest of
 * the session. Layers' weight caches and scratch external pointers have
 * finalizers here that R may still run (at a later garbage collection, or at
 * exit): unmapping the DLL would crash R then. Loading the package again
 * reuses the mapped DLL. */
SEXP ffi_unload(void) {
  scratch_forget();
#ifdef RTLD_NODELETE
  Dl_info self;
  if (dladdr((void*)&scratch_finalize, &self) && self.dli_fname != NULL) {
    dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
  }
#endif
  return R_NilValue;
}
