/* engine - the daemon's own threads for work that waits: a pool of fetch threads that
 * run queued jobs (at most max_connections at once, SPEC 12.4), and one timer thread
 * that fires deadlines. It knows nothing of FUSE, the cache or the API: a job and a
 * timer are structs embedded in their owner, with the function that runs them.
 *
 * Jobs run in submission order. A job's run function is called exactly once: by a fetch
 * thread (cancelled = 0), or by engine_stop for a job still queued (cancelled = 1). A
 * timer's fire function is called at most once, by the timer thread, at or after its
 * time, unless engine_timer_cancel removed it first; engine_stop fires every timer still
 * set (at once, in the caller's thread). Every thread blocks all signals.
 * Every function is thread-safe.
 */
#ifndef INSIGHTFS_ENGINE_H
#define INSIGHTFS_ENGINE_H

#include <stddef.h>
#include <stdint.h>

struct engine;

struct engine_job {
    void (*run)(struct engine_job *j, int cancelled);
    struct engine_job *next; /* the engine's while queued */
};

struct engine_timer {
    void (*fire)(struct engine_timer *t);
    int64_t when; /* CLOCK_MONOTONIC ms */
    size_t slot;  /* the engine's: index in its heap + 1, 0 when not set */
};

/* A new engine of threads fetch threads (>= 1), not started. Returns it, or NULL. */
struct engine *engine_new(int threads) __attribute__((warn_unused_result));

/* Start the fetch threads and the timer thread (after daemonizing). Returns 0, or a
 * negative errno when no thread could start (threads started are kept). */
int engine_start(struct engine *e) __attribute__((warn_unused_result));

/* Change the number of fetch threads (a reload of max_connections): more start at once,
 * fewer end after their current job. */
void engine_set_threads(struct engine *e, int threads);

/* Queue j (not queued elsewhere). Never fails; after engine_stop, j runs cancelled at once
 * in the caller's thread. */
void engine_submit(struct engine *e, struct engine_job *j);

/* Set t to fire at t->when (t not set). After engine_stop, fires at once. */
void engine_timer_set(struct engine *e, struct engine_timer *t);

/* Remove t if it is set: returns 1 (it will not fire), or 0 (it fired, is firing, or
 * was never set). */
int engine_timer_cancel(struct engine *e, struct engine_timer *t);

/* Jobs waiting for a fetch thread, and fetch threads running. */
size_t engine_queued(struct engine *e);
int engine_threads(struct engine *e);

/* Fire every timer still set, run every queued job cancelled, then join every thread
 * (a running job finishes first). Later submissions and timers run at once. */
void engine_stop(struct engine *e);

/* Free a stopped (or never started) engine. NULL-safe. */
void engine_free(struct engine *e);

#endif
