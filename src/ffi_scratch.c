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
#include <R_ext/Rallocators.h>

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
 * convolution (about 5-15 us per page in a VM). 256 MB: the float64
 * gradients of a 512-channel 3x3x3 layer hold its kernel packed and
 * transposed, 56 MB each, besides other layers' blocks. Only the main thread (R's)
 * allocates and gives back. Large results are kept the same way, in a pool of
 * their own (alloc_result). */
#define POOL_SLOTS 32 /* a training step's results come in a few sizes each */
#ifdef __SANITIZE_ADDRESS__
#define SCRATCH_KEEP_BYTES ((size_t)0) /* AddressSanitizer sees every block's own bounds */
#define RESULT_KEEP_BYTES ((size_t)0)
#else
#define SCRATCH_KEEP_BYTES ((size_t)256 << 20)
#define RESULT_KEEP_BYTES ((size_t)256 << 20)
#endif
#define SCRATCH_HEADER 64 /* the block's size and malloc's pointer (block_new); 64-byte alignment kept */

/* Blocks kept for reuse, at most `limit` bytes in all. */
struct block_pool {
  void* kept[POOL_SLOTS];
  size_t bytes, limit;
};
static struct block_pool scratch_pool = {{0}, 0, SCRATCH_KEEP_BYTES};
static struct block_pool result_pool = {{0}, 0, RESULT_KEEP_BYTES};

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

static size_t block_size(void* block) { return *(size_t*)block; }

/* A block of `total` bytes (header included) at a 64-byte boundary, so its
 * usable bytes after the header are too: streamed stores need whole aligned
 * vectors (load_columns_f32 with stream set). malloc's own pointer is kept in
 * the header, after the size, for block_free (aligned_alloc is missing on
 * some platforms R builds on). NULL when malloc fails or the size
 * overflows. */
static char* block_new(size_t total) {
  if (total > SIZE_MAX - 63) return NULL;
  char* raw = malloc(total + 63);
  if (raw == NULL) return NULL;
  char* block = (char*)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
  *(size_t*)block = total;
  memcpy(block + sizeof(size_t), &raw, sizeof raw);
  return block;
}

static void block_free(void* block) {
  if (block == NULL) return;
  char* raw;
  memcpy(&raw, (char*)block + sizeof(size_t), sizeof raw);
  free(raw);
}

/* The slot of the smallest kept block with `bytes` to `most` usable bytes
 * after its header, or -1. */
static int kept_slot(const struct block_pool* pool, size_t bytes, size_t most) {
  if (bytes > SIZE_MAX - SCRATCH_HEADER) return -1;
  const size_t total = bytes + SCRATCH_HEADER;
  most = most > SIZE_MAX - SCRATCH_HEADER ? SIZE_MAX : most + SCRATCH_HEADER;
  int best = -1;
  for (int i = 0; i < POOL_SLOTS; ++i) {
    void* b = pool->kept[i];
    if (b && block_size(b) >= total && block_size(b) <= most &&
        (best < 0 || block_size(b) < block_size(pool->kept[best]))) {
      best = i;
    }
  }
  return best;
}

/* The kept block in `slot`, taken out of the pool. */
static void* take_kept(struct block_pool* pool, int slot) {
  void* block = pool->kept[slot];
  pool->kept[slot] = NULL;
  pool->bytes -= block_size(block);
  return block;
}

/* Keeps a block for later calls, freeing the smallest kept ones to make room;
 * a block larger than the whole allowance is freed. */
static void give_back(struct block_pool* pool, void* block) {
  const size_t bytes = block_size(block);
  if (bytes > pool->limit) {
    block_free(block);
    return;
  }
  for (;;) {
    int free_slot = -1, smallest = -1;
    for (int i = 0; i < POOL_SLOTS; ++i) {
      if (!pool->kept[i]) {
        free_slot = i;
      } else if (smallest < 0 || block_size(pool->kept[i]) < block_size(pool->kept[smallest])) {
        smallest = i;
      }
    }
    if (free_slot >= 0 && pool->bytes + bytes <= pool->limit) {
      pool->kept[free_slot] = block;
      pool->bytes += bytes;
      return;
    }
    pool->bytes -= block_size(pool->kept[smallest]);
    block_free(pool->kept[smallest]);
    pool->kept[smallest] = NULL;
  }
}

/* A block of `bytes` usable bytes after its header: a kept one of up to `most`
 * usable bytes, else a fresh one (NULL when malloc fails or the size
 * overflows). */
static char* pool_block(struct block_pool* pool, size_t bytes, size_t most) {
  if (bytes > SIZE_MAX - SCRATCH_HEADER) return NULL;
  const int slot = kept_slot(pool, bytes, most);
  if (slot >= 0) return take_kept(pool, slot);
  const size_t total = bytes + SCRATCH_HEADER;
  char* block = block_new(total);
  if (block != NULL) advise_huge_pages(block, total); /* before its first touch */
  return block;
}

static void pool_forget(struct block_pool* pool) {
  for (int i = 0; i < POOL_SLOTS; ++i) {
    block_free(pool->kept[i]);
    pool->kept[i] = NULL;
  }
  pool->bytes = 0;
}

/* Frees every kept block (clear_session(), unloading the namespace). */
void scratch_forget(void) {
  pool_forget(&scratch_pool);
  pool_forget(&result_pool);
}

/* Results of RESULT_POOL_BYTES and more come from R's allocator hooks
 * (allocVector3): R gives a vector's memory back when it collects the
 * vector, and a later result reuses it. glibc's malloc maps large blocks
 * afresh and gives freed heap memory back to the system: fresh pages, which
 * the kernel must fault in and zero before a routine writes them (on the
 * project's VM: unet_stem's 67 MB output, 5-7 ms of zeroing; a fit() step
 * on 48^3 volumes, whose outputs and gradients are 3.5-28 MB, found 50 MB
 * of fresh pages and spent half its time on them). PyTorch's caching
 * allocator avoids that too. A kept block serves a vector of at least half
 * its size.
 *
 * R does not count such vectors towards its next garbage collection: a
 * loop whose own R code allocates little would let them pile up uncollected
 * while each result took fresh memory. So when a result finds no kept block
 * to reuse and RESULT_GC_BYTES of them have been handed out since, R first
 * collects its youngest garbage, as it would before an allocation of its
 * own that found its heap full; and at most RESULT_LIVE_BYTES of them may
 * be uncollected at a time, beyond which results are plain R vectors again,
 * whose size R counts. Results still referenced at a collection move to
 * R's older generations, which its light collections leave to its rarer
 * fuller ones; a caller usually still holds its previous result, so a
 * collection before every result would age every one of them, and the pool
 * would not see them again for long: hence one per RESULT_GC_BYTES (16 MB
 * results, a collection before each: live results grew by 16 MB a call).
 * Measured on the project's VM (an epoch of fit() on 48^3 volumes; 200 calls
 * of x3d_depthwise): with results of 32 MB and more pooled, 2.2-2.9 s and
 * 2.7 ms a call; with 1 MB and more, 1.2-1.4 s and 1.9 ms; with the
 * collections too, 1.0-1.1 s and 1.7-2.2 ms. Fresh blocks are advised to
 * huge pages before their first touch: a fresh 16 MB block, 50 -> 36 ms of
 * page faults there. */
#define RESULT_POOL_BYTES ((size_t)1 << 20)
#define RESULT_LIVE_BYTES ((size_t)256 << 20)
#define RESULT_GC_BYTES ((size_t)64 << 20)
#define RESULT_ALIGN 64 /* the vector's data starts a cache line */
static size_t result_live; /* bytes handed out and not yet collected */
static size_t result_since_gc; /* bytes handed out since the last collection asked for */
/* from the address result_mem_alloc returns to the vector's data (R's
 * header), learned from the last result: only the alignment depends on it */
static size_t result_data_offset;
static char* result_last;
/* Bytes R asks result_mem_alloc for beyond a vector's data (its header and
 * its copy of the allocator: 80 in R 4.2), learned from the last result. */
static size_t result_request_extra = 80;
static size_t result_last_request;

/* The usable bytes of a result block for R's request of `request` bytes (0
 * when too large): room to align the data; a kept block of up to twice that
 * serves it. */
static size_t result_usable(size_t request) {
  return request > SIZE_MAX / 2 - RESULT_ALIGN ? 0 : request + RESULT_ALIGN;
}

static void* result_mem_alloc(R_allocator_t* allocator, size_t bytes) {
  (void)allocator;
  result_last_request = bytes;
  const size_t usable = result_usable(bytes);
  if (usable == 0) return NULL;
  char* block = pool_block(&result_pool, usable, 2 * usable);
  if (block == NULL) return NULL;
  char* p = block + SCRATCH_HEADER;
  p += (RESULT_ALIGN - ((uintptr_t)p + result_data_offset) % RESULT_ALIGN) % RESULT_ALIGN;
  memcpy(p - sizeof block, &block, sizeof block); /* p is at least a header past block */
  result_live += block_size(block);
  result_last = p;
  return p;
}

static void result_mem_free(R_allocator_t* allocator, void* p) {
  (void)allocator;
  char* block;
  memcpy(&block, (char*)p - sizeof block, sizeof block);
  result_live -= block_size(block);
  give_back(&result_pool, block);
}

/* Tests: bytes of pooled results not yet collected, bytes kept for reuse, and
 * the most that may be kept. */
SEXP ffi_result_memory(void) {
  SEXP out = PROTECT(Rf_allocVector(REALSXP, 3));
  REAL(out)[0] = (double)result_live;
  REAL(out)[1] = (double)result_pool.bytes;
  REAL(out)[2] = (double)result_pool.limit;
  UNPROTECT(1);
  return out;
}

/* Whether a kept block would serve a result of `bytes` of data
 * (result_mem_alloc's choice for R's request). */
static int result_kept_fits(size_t bytes) {
  const size_t usable = result_usable(bytes + result_request_extra);
  return usable != 0 && kept_slot(&result_pool, usable, 2 * usable) >= 0;
}

/* R's light collection, gc(full = FALSE): the youngest generation, and the
 * older ones only as often as R's own collections take them. C code has no
 * entry to it; R_gc() collects every generation (25 ms and more a time on
 * the project's VM, against about 0.5 ms). */
static void collect_young_garbage(void) {
  /* ScalarLogical(FALSE) is R's shared constant: nothing to protect */
  const SEXP no = Rf_ScalarLogical(FALSE);
  SEXP call = PROTECT(Rf_lang4(Rf_install("gc"), no, no, no)); /* verbose, reset, full */
  Rf_eval(call, R_BaseEnv);
  UNPROTECT(1);
}

/* A training step's start (train_batch()): the previous step's outputs and
 * gradients are garbage now, and young unless a collection inside that step
 * aged them; a light collection gives them back for this step's results,
 * so the step finds kept blocks instead of collecting in its middle, while
 * its own forward outputs are live. Nothing when no pooled result is out. */
SEXP ffi_collect_results(void) {
  if (result_live >= RESULT_POOL_BYTES) {
    collect_young_garbage();
    result_since_gc = 0;
  }
  return R_NilValue;
}

/* A fresh R double vector of n elements for a result the C routines fill:
 * under the tests' poison also all-ones bytes (NaN), so an element a routine
 * fails to write shows, instead of keeping what the memory held (often an
 * earlier call's equal result, or, from the pool, an earlier result). */
SEXP alloc_result(R_xlen_t n) {
  SEXP out;
  const size_t bytes = (size_t)n * sizeof(double); /* n: a length R could allocate */
  if (bytes >= RESULT_POOL_BYTES && result_since_gc >= RESULT_GC_BYTES &&
      !result_kept_fits(bytes)) {
    collect_young_garbage();
    result_since_gc = 0;
  }
  if (bytes >= RESULT_POOL_BYTES) result_since_gc += bytes;
  if (bytes >= RESULT_POOL_BYTES && result_live < RESULT_LIVE_BYTES &&
      bytes <= RESULT_LIVE_BYTES - result_live) {
    R_allocator_t allocator = {result_mem_alloc, result_mem_free, NULL, NULL};
    out = Rf_allocVector3(REALSXP, n, &allocator);
    result_data_offset = (size_t)((char*)REAL(out) - result_last);
    result_request_extra = result_last_request - bytes;
  } else {
    out = Rf_allocVector(REALSXP, n);
  }
  if (poison && n > 0) memset(REAL(out), 0xff, sizeof(double) * (size_t)n);
  return out;
}

static void scratch_finalize(SEXP ptr) {
  char* p = R_ExternalPtrAddr(ptr);
  if (p) give_back(&scratch_pool, p - SCRATCH_HEADER);
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
  char* block = pool_block(&scratch_pool, (size_t)bytes, SIZE_MAX);
  if (block == NULL) Rf_error("cannot allocate %.0f bytes of scratch memory", (double)bytes);
  if (poison) memset(block + SCRATCH_HEADER, 0xff, (size_t)bytes);
  R_SetExternalPtrAddr(ptr, block + SCRATCH_HEADER);
  return block + SCRATCH_HEADER;
}

void* alloc_per_thread(struct call_scratch* cs, int64_t n, int threads, size_t size) {
  int64_t total;
  if (!size_mul(n, threads, &total)) {
    Rf_error("cannot allocate %d blocks of %.0f elements of scratch memory", threads, (double)n);
  }
  return alloc_elems(cs, total, size);
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
