/* The thread-count setting behind conv3d_threads(). Default: all cores, capped by
 * OMP_THREAD_LIMIT and OMP_NUM_THREADS, re-read from the environment on every call
 * so a limit set after loading still applies. Never calls omp_set_num_threads():
 * every parallel region passes num_threads() itself. */
#include <stdlib.h>
#ifndef _WIN32
#include <pthread.h>
#endif
#include "conv3d.h"
#include "omp_shim.h"

static int requested = 0; /* 0: the default */
static int forked_child = 0;

/* A child made by fork() (parallel::mclapply) must not use the parent's OpenMP
 * thread pool, which does not exist there: it runs single-threaded. */
static void mark_forked_child(void) { forked_child = 1; }

void conv3d_threads_init(void) {
#ifndef _WIN32
  pthread_atfork(NULL, NULL, mark_forked_child);
#endif
}

static int env_limit(const char* name) {
  const char* v = getenv(name);
  if (v == NULL || *v == '\0') return 0;
  char* end;
  long n = strtol(v, &end, 10);
  return (n > 0 && n < 1 << 20) ? (int)n : 0;
}

int conv3d_thread_limit(void) {
  int n = omp_get_num_procs();
  int limit = env_limit("OMP_THREAD_LIMIT");
  if (limit > 0 && limit < n) n = limit;
  limit = env_limit("OMP_NUM_THREADS");
  if (limit > 0 && limit < n) n = limit;
  return n < 1 ? 1 : n;
}

int conv3d_thread_count(void) {
  if (forked_child) return 1;
  int limit = conv3d_thread_limit();
  if (requested > 0 && requested < limit) return requested;
  return limit;
}

int conv3d_set_thread_count(int n) {
  int old = conv3d_thread_count();
  requested = n < 0 ? 0 : n;
  return old;
}
