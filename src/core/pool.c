/* A pool of helper threads over the chunks of a task (pool.h).
 *
 * A call publishes its task (nch chunks) and bumps a generation counter. Participant t (0: the
 * caller, 1 + i: helper i) owns the chunks c ≡ t (mod participants) and claims them in order from
 * its own atomic counter; when they are gone it claims what is left of the others', so a helper
 * that is not scheduled in time (a busy machine) costs nothing: the caller runs its chunks too.
 * Owning the same chunks from call to call keeps what a chunk made in the cache of the core that
 * made it for the next call on the same chunk (the MLP's reverse pass after its forward pass: a
 * d = 64 training step 3-5% faster than one shared counter). Idle helpers spin on the generation
 * for a while (a CNF evaluates its field thousands of times per second, and a futex wake-up costs
 * as much as a small chunk), then sleep on a condition variable. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "pool.h"

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#else
#define CPU_RELAX() ((void)0)
#endif
enum { SPIN_LIMIT = 20000 };

typedef struct helper {
    cnf_pool *p;
    pthread_t th;
} helper;

struct cnf_pool {
    size_t n_help;
    helper help[CNF_POOL_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;
    atomic_int sleepers, quit;
    /* Claims, one counter per participant: generation in the high 32 bits, the participant's
     * next chunk (k: chunk t + k·participants) in the low 32; a claim succeeds only for the
     * current generation, so a late helper cannot take a chunk of a finished task. */
    _Atomic uint64_t next[CNF_POOL_MAX_THREADS];
    atomic_size_t done;
    /* The current task, written before `next` is published and read after it is acquired. */
    void (*fn)(void *arg, size_t chunk, size_t thread);
    void *arg;
    atomic_size_t nch;
};

/* The next chunk of participant q's share in generation g, if one is left. */
static int pool_claim(cnf_pool *p, unsigned g, size_t q, size_t *chunk)
{
    const size_t parts = p->n_help + 1;
    uint64_t v = atomic_load(&p->next[q]);
    for (;;) {
        const size_t c = q + (size_t)(v & 0xffffffffu) * parts;
        if ((unsigned)(v >> 32) != g || c >= atomic_load(&p->nch))
            return 0;
        if (atomic_compare_exchange_weak(&p->next[q], &v, v + 1)) {
            *chunk = c;
            return 1;
        }
    }
}

/* Run chunks of generation g until none is left, participant `thread`'s own first. */
static void pool_work(cnf_pool *p, unsigned g, size_t thread)
{
    const size_t parts = p->n_help + 1;
    for (size_t i = 0; i < parts; i++) {
        size_t c;
        while (pool_claim(p, g, (thread + i) % parts, &c)) {
            p->fn(p->arg, c, thread);
            atomic_fetch_add(&p->done, 1);
        }
    }
}

static void *helper_main(void *v)
{
    helper *h = v;
    cnf_pool *p = h->p;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load(&p->gen);
        for (int spin = 0; g == seen && !atomic_load(&p->quit) && spin < SPIN_LIMIT; spin++) {
            CPU_RELAX();
            g = atomic_load(&p->gen);
        }
        if (g == seen && !atomic_load(&p->quit)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit))
            return NULL;
        seen = g;
        pool_work(p, g, (size_t)(h - p->help) + 1);
    }
}

void cnf_pool_free(cnf_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->n_help; i++)
        pthread_join(p->help[i].th, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

cnf_pool *cnf_pool_create(size_t n_help)
{
    if (n_help >= CNF_POOL_MAX_THREADS) /* the claim counters are per participant */
        return NULL;
    cnf_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->quit, 0);
    for (size_t q = 0; q < CNF_POOL_MAX_THREADS; q++)
        atomic_init(&p->next[q], 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->nch, 0);
    for (size_t i = 0; i < n_help; i++) {
        p->help[i].p = p;
        if (pthread_create(&p->help[i].th, NULL, helper_main, &p->help[i])) {
            cnf_pool_free(p);
            return NULL;
        }
        p->n_help = i + 1;
    }
    return p;
}

void cnf_pool_run(cnf_pool *p, void (*fn)(void *, size_t, size_t), void *arg, size_t nch)
{
    if (!p) {
        for (size_t c = 0; c < nch; c++)
            fn(arg, c, 0);
        return;
    }
    unsigned g = atomic_load(&p->gen) + 1;
    const size_t parts = p->n_help + 1;
    /* First close the previous generation: a helper still finishing its last chunk may be about
     * to claim with an old value of a counter; these stores make that claim fail before fn, arg
     * and nch change under it. */
    for (size_t q = 0; q < parts; q++)
        atomic_store(&p->next[q], ((uint64_t)g << 32) | 0xffffffffu);
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->nch, nch);
    atomic_store(&p->done, 0);
    for (size_t q = 0; q < parts; q++)
        atomic_store(&p->next[q], (uint64_t)g << 32); /* publishes the task to claimers */
    atomic_store(&p->gen, g);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pool_work(p, g, 0);
    /* Chunks still running were claimed by helpers that are running them. */
    for (int spin = 0; atomic_load(&p->done) < nch; spin++) {
        if (spin < SPIN_LIMIT)
            CPU_RELAX();
        else
            sched_yield();
    }
}

