/* A pool of helper threads that runs the chunks of one task at a time (src/core/pool.c). */
#ifndef CNF_CORE_POOL_H
#define CNF_CORE_POOL_H

#include <stddef.h>

/* The most participants of a pool: the caller and up to CNF_POOL_MAX_THREADS − 1 helpers. */
enum { CNF_POOL_MAX_THREADS = 16 };

typedef struct cnf_pool cnf_pool;

/* A pool of n_help helper threads (1 ≤ n_help < CNF_POOL_MAX_THREADS), started here; NULL when
 * a thread or the memory cannot be had (the caller reports it). */
cnf_pool *cnf_pool_create(size_t n_help);

/* Stops and joins the helpers; NULL is a no-op. */
void cnf_pool_free(cnf_pool *p);

/* fn(arg, c, thread) for every chunk c = 0..nch−1, once each, over the caller (thread 0) and the
 * helpers (thread 1 + i); all on the caller when p is NULL. Returns when every chunk is done.
 * Which thread runs a chunk varies from call to call: results must not depend on it (a chunk
 * writes its own slots). Participant t owns the chunks c ≡ t (mod participants) and runs them
 * first, so the same chunks tend to stay on the same core from call to call. */
void cnf_pool_run(cnf_pool *p, void (*fn)(void *arg, size_t chunk, size_t thread), void *arg,
                  size_t nch);

#endif
