/* engine - fetch threads and the timer thread (the contract is in engine.h).
 *
 * Why: no libfuse worker may wait for the network (SPEC 12.4). A request that needs a
 * fetch is kept (fs_wait.c) and its fetch queued here; the fetch threads, at most
 * max_connections, run the fetches; whoever completes a fetch answers its kept
 * requests, and the timer thread answers those whose deadline comes first. So the
 * daemon's threads are main, libfuse's workers (at most 10), these fetch threads and a
 * fixed few, whatever the load.
 *
 * Hand-off. An idle fetch thread waits on a semaphore of its own, on a stack of idle
 * threads. engine_submit gives a job straight to the top idle thread and posts its
 * semaphore after unlocking, so a hand-off costs one wake-up and the woken thread does
 * not contend for the lock its waker still holds (a shared condition variable signalled
 * under the lock cost a futex wait and two wakes more per fetch, measured under
 * `make bench`'s row 7e). Only when no thread is idle does a job wait in the FIFO
 * queue, and a thread goes idle only when the queue is empty, so jobs still start in
 * submission order. A fetch thread exits when there are more threads than wanted
 * (engine_set_threads), after its job.
 *
 * Timers: a binary min-heap by time (slot = index + 1, so cancel is O(log n)), under a
 * lock of its own, so setting a deadline never waits behind the job queue.
 *
 * Locking: mu guards the queue, the idle stack, a fetcher's job while it is on the
 * stack, the thread counts and stopping; tmu guards the heap, sleep_until and
 * timers_stopping. Neither is held while a job runs or a timer fires, and they are
 * never held together. tick (with tmu) is signalled when the earliest timer changes,
 * gone (with mu) when a fetch thread ends. All waits are on CLOCK_MONOTONIC.
 */
#include "insightfs/engine.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A fetch thread's own record. Owned by the engine: freed by engine_free, and reused by
 * a later thread once its thread has ended (dead), never freed by its thread, so a post
 * that races the thread's end never touches freed memory. */
struct fetcher {
    sem_t wake;
    struct engine_job *job; /* protected by mu while on the idle stack; NULL: look again */
    struct fetcher *next;   /* protected by mu: the idle stack */
    struct fetcher *all;    /* protected by mu: every record of the engine */
    int dead;               /* protected by mu: its thread has ended */
    struct engine *e;
};

struct engine {
    pthread_mutex_t mu;
    pthread_cond_t gone;
    struct engine_job *head, *tail; /* protected by mu */
    size_t queued;                  /* protected by mu */
    struct fetcher *idle;           /* protected by mu: threads waiting for a job */
    struct fetcher *fetchers;       /* protected by mu: every record made (via ->all) */
    int want, running;              /* protected by mu: fetch threads wanted, alive */
    int stopping;                   /* protected by mu */
    int started;                    /* protected by mu */

    pthread_mutex_t tmu;
    pthread_cond_t tick;
    struct engine_timer **heap; /* protected by tmu */
    size_t n_heap, cap_heap;    /* protected by tmu */
    int64_t sleep_until;        /* protected by tmu: the timer thread's wake-up time */
    int timers_stopping;        /* protected by tmu */
    pthread_t timer;
    int timer_started;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec ts_of(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    return ts;
}

/* ---- the timer heap (tmu held) ---- */

static void heap_place(struct engine *e, size_t i, struct engine_timer *t)
{
    e->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(struct engine *e, size_t i)
{
    struct engine_timer *t = e->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p]->when <= t->when)
            break;
        heap_place(e, i, e->heap[p]);
        i = p;
    }
    heap_place(e, i, t);
}

static void heap_down(struct engine *e, size_t i)
{
    struct engine_timer *t = e->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = t->when;
        if (l < e->n_heap && e->heap[l]->when < best)
            m = l, best = e->heap[l]->when;
        if (l + 1 < e->n_heap && e->heap[l + 1]->when < best)
            m = l + 1;
        if (m == i)
            break;
        heap_place(e, i, e->heap[m]);
        i = m;
    }
    heap_place(e, i, t);
}

static void heap_remove(struct engine *e, struct engine_timer *t)
{
    size_t i = t->slot - 1;
    t->slot = 0;
    struct engine_timer *last = e->heap[--e->n_heap];
    if (i == e->n_heap)
        return;
    heap_place(e, i, last);
    heap_up(e, i);
    heap_down(e, last->slot - 1);
}

/* ---- threads ---- */

/* mu held, the queue not empty: take its first job. */
static struct engine_job *pop_job(struct engine *e)
{
    struct engine_job *j = e->head;
    e->head = j->next;
    if (!e->head)
        e->tail = NULL;
    e->queued--;
    return j;
}

/* mu held: post every idle thread with no job, so each looks at the engine again. */
static void wake_idle(struct engine *e)
{
    while (e->idle) {
        struct fetcher *f = e->idle;
        e->idle = f->next;
        f->job = NULL;
        sem_post(&f->wake);
    }
}

static void *fetch_main(void *arg)
{
    struct fetcher *me = arg;
    struct engine *e = me->e;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        /* Stopping: what is still queued is engine_stop's, to run cancelled. */
        if (e->stopping || e->running > e->want)
            break;
        if (e->head) {
            struct engine_job *j = pop_job(e);
            pthread_mutex_unlock(&e->mu);
            j->run(j, 0);
            pthread_mutex_lock(&e->mu);
            continue;
        }
        me->job = NULL;
        me->next = e->idle;
        e->idle = me;
        pthread_mutex_unlock(&e->mu);
        while (sem_wait(&me->wake) != 0)
            ; /* EINTR only: every signal is blocked here */
        /* Whoever posted took me off the stack and set job under mu; the semaphore
         * orders that before this read. A job handed over counts as started: it runs
         * even if engine_stop began meanwhile (engine_stop waits for it). */
        struct engine_job *j = me->job;
        if (j)
            j->run(j, 0);
        pthread_mutex_lock(&e->mu);
    }
    me->dead = 1;
    e->running--;
    pthread_cond_broadcast(&e->gone);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static void *timer_main(void *arg)
{
    struct engine *e = arg;
    pthread_mutex_lock(&e->tmu);
    while (!e->timers_stopping) {
        if (e->n_heap == 0) {
            e->sleep_until = INT64_MAX;
            pthread_cond_wait(&e->tick, &e->tmu);
            continue;
        }
        struct engine_timer *t = e->heap[0];
        if (t->when > mono_ms()) {
            struct timespec ts = ts_of(t->when);
            e->sleep_until = t->when;
            pthread_cond_timedwait(&e->tick, &e->tmu, &ts);
            continue;
        }
        heap_remove(e, t);
        pthread_mutex_unlock(&e->tmu);
        t->fire(t);
        pthread_mutex_lock(&e->tmu);
    }
    pthread_mutex_unlock(&e->tmu);
    return NULL;
}

/* Start fn with every signal blocked: only the main thread takes signals. */
static int spawn(pthread_t *t, void *(*fn)(void *), void *arg, int detach)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pthread_attr_t a;
    pthread_attr_init(&a);
    if (detach)
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(t, &a, fn, arg);
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

/* mu held: start fetch threads up to want. Fetch threads are detached; engine_stop waits
 * for running to reach 0 instead of joining them. */
static void grow(struct engine *e)
{
    while (e->started && !e->stopping && e->running < e->want) {
        struct fetcher *f = e->fetchers;
        while (f && !f->dead)
            f = f->all;
        if (!f) {
            if (!(f = calloc(1, sizeof(*f))))
                break;
            if (sem_init(&f->wake, 0, 0) != 0) {
                free(f);
                break;
            }
            f->e = e;
            f->dead = 1;
            f->all = e->fetchers;
            e->fetchers = f;
        }
        pthread_t t;
        if (spawn(&t, fetch_main, f, 1) != 0)
            break; /* f stays dead, for a later try */
        f->dead = 0;
        e->running++;
    }
}

/* ---- the contract ---- */

struct engine *engine_new(int threads)
{
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->tmu, NULL);
    pthread_cond_init(&e->tick, &ca);
    pthread_cond_init(&e->gone, &ca);
    pthread_condattr_destroy(&ca);
    e->want = threads > 0 ? threads : 1;
    e->sleep_until = INT64_MAX;
    return e;
}

int engine_start(struct engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->started = 1;
    grow(e);
    int fetchers = e->running;
    pthread_mutex_unlock(&e->mu);
    int rc = spawn(&e->timer, timer_main, e, 0);
    e->timer_started = rc == 0;
    return fetchers > 0 && rc == 0 ? 0 : -EAGAIN;
}

void engine_set_threads(struct engine *e, int threads)
{
    pthread_mutex_lock(&e->mu);
    e->want = threads > 0 ? threads : 1;
    grow(e);
    wake_idle(e); /* extra threads notice and end */
    pthread_mutex_unlock(&e->mu);
}

void engine_submit(struct engine *e, struct engine_job *j)
{
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        pthread_mutex_unlock(&e->mu);
        j->run(j, 1);
        return;
    }
    struct fetcher *f = e->idle; /* an idle thread: the queue is empty */
    if (f) {
        e->idle = f->next;
        f->job = j;
        pthread_mutex_unlock(&e->mu);
        sem_post(&f->wake);
        return;
    }
    j->next = NULL;
    if (e->tail)
        e->tail->next = j;
    else
        e->head = j;
    e->tail = j;
    e->queued++;
    pthread_mutex_unlock(&e->mu);
}

void engine_timer_set(struct engine *e, struct engine_timer *t)
{
    pthread_mutex_lock(&e->tmu);
    if (e->timers_stopping) {
        pthread_mutex_unlock(&e->tmu);
        t->fire(t);
        return;
    }
    if (e->n_heap == e->cap_heap) {
        size_t cap = e->cap_heap ? e->cap_heap * 2 : 256;
        struct engine_timer **h = realloc(e->heap, cap * sizeof(*h));
        if (!h) {
            /* Out of memory: fire at once rather than never. */
            pthread_mutex_unlock(&e->tmu);
            t->fire(t);
            return;
        }
        e->heap = h;
        e->cap_heap = cap;
    }
    heap_place(e, e->n_heap++, t);
    heap_up(e, t->slot - 1);
    /* Wake the timer thread only if it would sleep past this timer (a cancelled earlier
     * timer leaves it to wake, find nothing due and sleep again: cheaper than a wake-up
     * per kept request). */
    if (t->slot == 1 && t->when < e->sleep_until)
        pthread_cond_signal(&e->tick);
    pthread_mutex_unlock(&e->tmu);
}

int engine_timer_cancel(struct engine *e, struct engine_timer *t)
{
    pthread_mutex_lock(&e->tmu);
    int set = t->slot != 0;
    if (set)
        heap_remove(e, t);
    pthread_mutex_unlock(&e->tmu);
    return set;
}

size_t engine_queued(struct engine *e)
{
    pthread_mutex_lock(&e->mu);
    size_t n = e->queued;
    pthread_mutex_unlock(&e->mu);
    return n;
}

int engine_threads(struct engine *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->running;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void engine_stop(struct engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->stopping = 1;
    wake_idle(e);
    pthread_mutex_unlock(&e->mu);
    pthread_mutex_lock(&e->tmu);
    e->timers_stopping = 1;
    pthread_cond_broadcast(&e->tick);
    pthread_mutex_unlock(&e->tmu);
    if (e->timer_started) {
        pthread_join(e->timer, NULL);
        e->timer_started = 0;
    }
    /* Timers first: the requests they answer must not wait for the jobs below. */
    pthread_mutex_lock(&e->tmu);
    while (e->n_heap > 0) {
        struct engine_timer *t = e->heap[0];
        heap_remove(e, t);
        pthread_mutex_unlock(&e->tmu);
        t->fire(t);
        pthread_mutex_lock(&e->tmu);
    }
    pthread_mutex_unlock(&e->tmu);
    pthread_mutex_lock(&e->mu);
    while (e->head) {
        struct engine_job *j = pop_job(e);
        pthread_mutex_unlock(&e->mu);
        j->run(j, 1);
        pthread_mutex_lock(&e->mu);
    }
    while (e->running > 0)
        pthread_cond_wait(&e->gone, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

void engine_free(struct engine *e)
{
    if (!e)
        return;
    while (e->fetchers) {
        struct fetcher *f = e->fetchers;
        e->fetchers = f->all;
        sem_destroy(&f->wake);
        free(f);
    }
    free(e->heap);
    pthread_cond_destroy(&e->tick);
    pthread_cond_destroy(&e->gone);
    pthread_mutex_destroy(&e->tmu);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
