/* test_engine - the contract of include/insightfs/engine.h with real threads.
 *
 * Jobs and timers are embedded in test records that note, under one lab mutex, when,
 * where and how they ran; a job may block until the test releases it, which is how a
 * test holds the fetch threads busy and measures how many run at once. Every wait is on
 * the lab's condition variable (CLOCK_MONOTONIC) with a deadline scaled by
 * INSIGHTFS_TEST_TIME_FACTOR, or, for engine_threads, a poll with a deadline. cmocka
 * assertions run in the main thread only; other threads record and signal.
 */
#include "insightfs/engine.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define WAIT_MS 10000 /* how long the test waits for another thread before failing */
#define MAXJ 64

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

/* Upper time bounds are multiplied by INSIGHTFS_TEST_TIME_FACTOR (1 when unset). */
static int64_t tf(int64_t ms)
{
    const char *f = getenv("INSIGHTFS_TEST_TIME_FACTOR");
    long n = f ? strtol(f, NULL, 10) : 1;
    return ms * (n >= 1 && n <= 1000 ? n : 1);
}

static void nap_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000};
    nanosleep(&ts, NULL);
}

/* Everything below m is protected by m; cv is broadcast on every change. */
struct lab {
    pthread_mutex_t m;
    pthread_cond_t cv;
    int order[MAXJ]; /* job ids in the order they started */
    int n_started, n_done;
    int active, max_active;
    int timed_out; /* a blocked job or timer gave up waiting: the test fails */
    int fire_order[MAXJ];
    int n_fired;
};

struct tjob {
    struct engine_job job;
    struct lab *lab;
    int id;
    int block, released; /* released: protected by lab->m */
    int runs, cancelled;
    pthread_t thread;
};

struct ttimer {
    struct engine_timer t;
    struct lab *lab;
    int id;
    int block, released, firing;
    int fired; /* times fired */
    int64_t fired_at;
    pthread_t thread;
};

static void lab_init(struct lab *lab)
{
    memset(lab, 0, sizeof *lab);
    pthread_mutex_init(&lab->m, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&lab->cv, &a);
    pthread_condattr_destroy(&a);
}

static void lab_cleanup(struct lab *lab)
{
    assert_int_equal(lab->timed_out, 0);
    pthread_cond_destroy(&lab->cv);
    pthread_mutex_destroy(&lab->m);
}

/* Block (lab->m held) until *flag, with the deadline; a timeout is recorded. */
static void hold_until(struct lab *lab, const int *flag)
{
    struct timespec until = ts_of(mono_ms() + tf(WAIT_MS));
    while (!*flag) {
        if (pthread_cond_timedwait(&lab->cv, &lab->m, &until) != 0) {
            lab->timed_out = 1;
            break;
        }
    }
}

/* Wait (in the main thread) until expr, evaluated with lab->m held, or fail. */
#define WAIT_FOR(lab, expr)                                                                        \
    do {                                                                                           \
        struct timespec until_ = ts_of(mono_ms() + tf(WAIT_MS));                                   \
        int rc_ = 0;                                                                               \
        pthread_mutex_lock(&(lab)->m);                                                             \
        while (!(expr) && rc_ == 0)                                                                \
            rc_ = pthread_cond_timedwait(&(lab)->cv, &(lab)->m, &until_);                          \
        int ok_ = (expr);                                                                          \
        pthread_mutex_unlock(&(lab)->m);                                                           \
        if (!ok_)                                                                                  \
            fail_msg("timed out waiting for %s", #expr);                                           \
    } while (0)

/* Poll engine_threads until it is want, or fail. */
static void wait_threads(struct engine *e, int want)
{
    int64_t until = mono_ms() + tf(WAIT_MS);
    int n;
    while ((n = engine_threads(e)) != want && mono_ms() < until)
        nap_ms(1);
    if (n != want)
        fail_msg("engine_threads is %d, want %d", n, want);
}

static void job_run(struct engine_job *j, int cancelled)
{
    struct tjob *t = (struct tjob *)j;
    struct lab *lab = t->lab;
    pthread_mutex_lock(&lab->m);
    t->runs++;
    t->cancelled = cancelled;
    t->thread = pthread_self();
    if (lab->n_started < MAXJ)
        lab->order[lab->n_started] = t->id;
    lab->n_started++;
    if (++lab->active > lab->max_active)
        lab->max_active = lab->active;
    pthread_cond_broadcast(&lab->cv);
    if (t->block && !cancelled)
        hold_until(lab, &t->released);
    lab->active--;
    lab->n_done++;
    pthread_cond_broadcast(&lab->cv);
    pthread_mutex_unlock(&lab->m);
}

static void timer_fire(struct engine_timer *et)
{
    struct ttimer *t = (struct ttimer *)et;
    struct lab *lab = t->lab;
    int64_t now = mono_ms();
    pthread_mutex_lock(&lab->m);
    t->fired++;
    t->fired_at = now;
    t->thread = pthread_self();
    if (lab->n_fired < MAXJ)
        lab->fire_order[lab->n_fired] = t->id;
    lab->n_fired++;
    t->firing = 1;
    pthread_cond_broadcast(&lab->cv);
    if (t->block)
        hold_until(lab, &t->released);
    t->firing = 0;
    pthread_cond_broadcast(&lab->cv);
    pthread_mutex_unlock(&lab->m);
}

static void jobs_init(struct tjob *jobs, int n, struct lab *lab, int block)
{
    for (int i = 0; i < n; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].job.run = job_run;
        jobs[i].lab = lab;
        jobs[i].id = i;
        jobs[i].block = block;
    }
}

static void timer_init(struct ttimer *t, struct lab *lab, int id, int64_t when)
{
    memset(t, 0, sizeof *t);
    t->t.fire = timer_fire;
    t->t.when = when;
    t->lab = lab;
    t->id = id;
}

static void release(struct lab *lab, int *flag)
{
    pthread_mutex_lock(&lab->m);
    *flag = 1;
    pthread_cond_broadcast(&lab->cv);
    pthread_mutex_unlock(&lab->m);
}

static struct engine *started_engine(int threads)
{
    struct engine *e = engine_new(threads);
    assert_non_null(e);
    assert_int_equal(engine_start(e), 0);
    return e;
}

/* --- jobs --------------------------------------------------------------------------- */

/* Jobs queued before the start run, once each, uncancelled, in submission order. */
static void test_fifo_one_thread(void **state)
{
    (void)state;
    enum { N = 20 };
    struct lab lab;
    struct tjob jobs[N];
    lab_init(&lab);
    jobs_init(jobs, N, &lab, 0);
    struct engine *e = engine_new(1);
    assert_non_null(e);
    for (int i = 0; i < N; i++)
        engine_submit(e, &jobs[i].job);
    assert_int_equal(engine_queued(e), N);
    assert_int_equal(engine_threads(e), 0); /* not started: nothing runs */
    assert_int_equal(lab.n_started, 0);

    assert_int_equal(engine_start(e), 0);
    WAIT_FOR(&lab, lab.n_done == N);
    assert_int_equal(engine_queued(e), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(lab.order[i], i);
        assert_int_equal(jobs[i].runs, 1);
        assert_int_equal(jobs[i].cancelled, 0);
        assert_false(pthread_equal(jobs[i].thread, pthread_self()));
    }
    assert_int_equal(lab.max_active, 1);
    engine_stop(e);
    engine_free(e);
    for (int i = 0; i < N; i++)
        assert_int_equal(jobs[i].runs, 1);
    lab_cleanup(&lab);
}

/* Three fetch threads, 20 jobs that block until released: three run at once, never more;
 * releasing one job lets exactly the next queued one start (FIFO). */
static void test_fifo_at_most_n(void **state)
{
    (void)state;
    enum { N = 20, THREADS = 3 };
    struct lab lab;
    struct tjob jobs[N];
    lab_init(&lab);
    jobs_init(jobs, N, &lab, 1);
    struct engine *e = started_engine(THREADS);
    assert_int_equal(engine_threads(e), THREADS);
    for (int i = 0; i < N; i++)
        engine_submit(e, &jobs[i].job);

    WAIT_FOR(&lab, lab.n_started == THREADS);
    assert_int_equal(engine_queued(e), N - THREADS);
    pthread_mutex_lock(&lab.m);
    int first = 0;
    for (int i = 0; i < THREADS; i++)
        first |= 1 << lab.order[i];
    pthread_mutex_unlock(&lab.m);
    assert_int_equal(first, (1 << THREADS) - 1); /* jobs 0, 1, 2 */

    for (int k = 0; k + THREADS < N; k++) {
        release(&lab, &jobs[k].released);
        WAIT_FOR(&lab, lab.n_started == k + THREADS + 1);
        pthread_mutex_lock(&lab.m);
        int next = lab.order[k + THREADS], active = lab.active;
        pthread_mutex_unlock(&lab.m);
        assert_int_equal(next, k + THREADS);
        assert_int_equal(active, THREADS);
        assert_int_equal(engine_queued(e), (size_t)(N - THREADS - k - 1));
    }
    for (int k = N - THREADS; k < N; k++)
        release(&lab, &jobs[k].released);
    WAIT_FOR(&lab, lab.n_done == N);
    assert_int_equal(lab.max_active, THREADS);
    /* At most THREADS distinct threads ran them, none of them the caller. */
    pthread_t seen[N];
    int n_seen = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].runs, 1);
        assert_int_equal(jobs[i].cancelled, 0);
        assert_false(pthread_equal(jobs[i].thread, pthread_self()));
        int j = 0;
        while (j < n_seen && !pthread_equal(seen[j], jobs[i].thread))
            j++;
        if (j == n_seen)
            seen[n_seen++] = jobs[i].thread;
    }
    assert_true(n_seen <= THREADS);
    engine_stop(e);
    engine_free(e);
    lab_cleanup(&lab);
}

/* More threads start at once; fewer end after their current job. */
static void test_set_threads(void **state)
{
    (void)state;
    enum { N = 5 };
    struct lab lab;
    struct tjob jobs[N], more[4];
    lab_init(&lab);
    jobs_init(jobs, N, &lab, 1);
    jobs_init(more, 4, &lab, 1);
    for (int i = 0; i < 4; i++)
        more[i].id = N + i;
    struct engine *e = started_engine(2);
    wait_threads(e, 2);

    engine_set_threads(e, N);
    wait_threads(e, N);
    for (int i = 0; i < N; i++)
        engine_submit(e, &jobs[i].job);
    WAIT_FOR(&lab, lab.active == N); /* five really run at once */

    /* Shrink while all are busy: each ends after its job, not before. */
    engine_set_threads(e, 1);
    assert_int_equal(engine_threads(e), N);
    for (int i = 0; i < 4; i++)
        engine_submit(e, &more[i].job);
    for (int i = 0; i < N; i++)
        release(&lab, &jobs[i].released);
    WAIT_FOR(&lab, lab.n_done == N && lab.n_started == N + 1);
    wait_threads(e, 1);
    /* One thread left: one of the new jobs runs, the other three wait. */
    pthread_mutex_lock(&lab.m);
    lab.max_active = lab.active;
    int first = lab.order[N];
    pthread_mutex_unlock(&lab.m);
    assert_int_equal(first, N);
    assert_int_equal(engine_queued(e), 3);
    for (int i = 0; i < 4; i++) {
        release(&lab, &more[i].released);
        WAIT_FOR(&lab, lab.n_done == N + i + 1);
    }
    assert_int_equal(lab.max_active, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(lab.order[N + i], N + i);

    /* And growing again works after a shrink. */
    engine_set_threads(e, 3);
    wait_threads(e, 3);
    engine_stop(e);
    assert_int_equal(engine_threads(e), 0);
    engine_free(e);
    lab_cleanup(&lab);
}

/* --- timers ------------------------------------------------------------------------- */

/* Timers fire once each, in time order, never before their time, on the timer thread;
 * a timer set earlier than the one being waited for wakes the timer thread. */
static void test_timers_in_order(void **state)
{
    (void)state;
    static const int64_t offs[] = {400, 300, 350, 100, 250, -50, 150, 0, 200, 50};
    enum { N = sizeof offs / sizeof offs[0] };
    struct lab lab;
    struct ttimer t[N], later;
    lab_init(&lab);
    struct engine *e = started_engine(1);
    int64_t base = mono_ms();

    /* The timer thread first waits for an hour away; every other timer is earlier. */
    timer_init(&later, &lab, 99, base + 3600 * 1000);
    engine_timer_set(e, &later.t);
    for (int i = 0; i < N; i++) {
        timer_init(&t[i], &lab, i, base + offs[i]);
        engine_timer_set(e, &t[i].t);
    }
    WAIT_FOR(&lab, lab.n_fired == N);
    int64_t prev = INT64_MIN;
    for (int k = 0; k < N; k++) {
        struct ttimer *x = &t[lab.fire_order[k]];
        assert_true(x->t.when >= prev); /* time order */
        prev = x->t.when;
        assert_true(x->fired_at >= x->t.when); /* not before its time */
        assert_int_equal(x->fired, 1);
        assert_int_equal(x->t.slot, 0);
        assert_false(pthread_equal(x->thread, pthread_self()));
    }
    assert_int_equal(later.fired, 0);
    assert_int_equal(engine_timer_cancel(e, &later.t), 1);
    engine_stop(e);
    assert_int_equal(later.fired, 0); /* cancelled: not fired by the stop either */
    engine_free(e);
    lab_cleanup(&lab);
}

/* cancel returns 1 only for a set timer; a cancelled timer never fires; a cancelled
 * timer can be set again. Many timers, every third cancelled, so removals hit the
 * middle of the heap. */
static void test_timer_cancel(void **state)
{
    (void)state;
    enum { N = 45 };
    struct lab lab;
    struct ttimer t[N], never, sentinel, now_t;
    lab_init(&lab);
    struct engine *e = started_engine(1);

    timer_init(&never, &lab, 100, 0);
    assert_int_equal(engine_timer_cancel(e, &never.t), 0); /* never set */

    int64_t base = mono_ms();
    unsigned seed = 12345;
    for (int i = 0; i < N; i++) {
        timer_init(&t[i], &lab, i, base + 20 + (int64_t)(rand_r(&seed) % 200));
        engine_timer_set(e, &t[i].t);
    }
    int n_cancelled = 0;
    for (int i = 0; i < N; i += 3) {
        assert_int_equal(engine_timer_cancel(e, &t[i].t), 1);
        assert_int_equal(engine_timer_cancel(e, &t[i].t), 0); /* no longer set */
        n_cancelled++;
    }
    timer_init(&sentinel, &lab, 101, base + 400);
    engine_timer_set(e, &sentinel.t);
    WAIT_FOR(&lab, sentinel.fired == 1);
    assert_int_equal(lab.n_fired, N - n_cancelled + 1);
    int64_t prev = INT64_MIN;
    for (int k = 0; k < lab.n_fired; k++) {
        int id = lab.fire_order[k];
        struct ttimer *x = id == 101 ? &sentinel : &t[id];
        assert_true(id == 101 || id % 3 != 0);
        assert_true(x->t.when >= prev);
        prev = x->t.when;
        assert_int_equal(x->fired, 1);
    }
    for (int i = 0; i < N; i += 3)
        assert_int_equal(t[i].fired, 0);

    /* A fired timer is not set: cancel says 0. */
    timer_init(&now_t, &lab, 102, mono_ms());
    engine_timer_set(e, &now_t.t);
    WAIT_FOR(&lab, now_t.fired == 1);
    assert_int_equal(engine_timer_cancel(e, &now_t.t), 0);

    /* A cancelled timer set again fires. */
    t[0].t.when = mono_ms() + 10;
    engine_timer_set(e, &t[0].t);
    WAIT_FOR(&lab, t[0].fired == 1);
    assert_true(t[0].fired_at >= t[0].t.when);

    engine_stop(e);
    for (int i = 3; i < N; i += 3)
        assert_int_equal(t[i].fired, 0); /* still never */
    engine_free(e);
    lab_cleanup(&lab);
}

/* --- stop --------------------------------------------------------------------------- */

struct stopper {
    struct engine *e;
    struct lab *lab;
    int returned; /* protected by lab->m */
    pthread_t th;
};

static void *stopper_main(void *arg)
{
    struct stopper *s = arg;
    engine_stop(s->e);
    pthread_mutex_lock(&s->lab->m);
    s->returned = 1;
    pthread_cond_broadcast(&s->lab->cv);
    pthread_mutex_unlock(&s->lab->m);
    return NULL;
}

/* engine_stop fires pending timers at once, runs queued jobs cancelled in its thread,
 * waits for the running job, and afterwards submissions and timers run at once in the
 * caller's thread. */
static void test_stop(void **state)
{
    (void)state;
    struct lab lab;
    struct tjob jobs[4], late;
    struct ttimer t1, t2, after;
    lab_init(&lab);
    jobs_init(jobs, 4, &lab, 0);
    jobs[0].block = 1;
    jobs_init(&late, 1, &lab, 0);
    late.id = 9;
    struct engine *e = started_engine(1);

    engine_submit(e, &jobs[0].job);
    WAIT_FOR(&lab, lab.n_started == 1);
    for (int i = 1; i < 4; i++)
        engine_submit(e, &jobs[i].job);
    int64_t hour = mono_ms() + 3600 * 1000;
    timer_init(&t1, &lab, 1, hour);
    timer_init(&t2, &lab, 2, hour + 1);
    engine_timer_set(e, &t2.t);
    engine_timer_set(e, &t1.t);

    struct stopper s = {e, &lab, 0, 0};
    assert_int_equal(pthread_create(&s.th, NULL, stopper_main, &s), 0);
    /* While job 0 still runs: both timers fired, the queued jobs ran cancelled, by the
     * stopping thread, in order; the stop waits for job 0. */
    WAIT_FOR(&lab, lab.n_fired == 2 && lab.n_started == 4);
    assert_int_equal(t1.fired, 1);
    assert_int_equal(t2.fired, 1);
    assert_true(pthread_equal(t1.thread, s.th));
    assert_true(t1.fired_at < hour);
    for (int i = 1; i < 4; i++) {
        assert_int_equal(jobs[i].runs, 1);
        assert_int_equal(jobs[i].cancelled, 1);
        assert_true(pthread_equal(jobs[i].thread, s.th));
        assert_int_equal(lab.order[i], i);
    }
    assert_int_equal(engine_queued(e), 0);
    pthread_mutex_lock(&lab.m);
    int returned = s.returned;
    pthread_mutex_unlock(&lab.m);
    assert_int_equal(returned, 0);
    assert_int_equal(jobs[0].runs, 1);

    release(&lab, &jobs[0].released);
    WAIT_FOR(&lab, s.returned == 1);
    assert_int_equal(pthread_join(s.th, NULL), 0);
    assert_int_equal(jobs[0].cancelled, 0);
    assert_int_equal(engine_threads(e), 0);

    /* After the stop: at once, in this thread, before the call returns. */
    engine_submit(e, &late.job);
    assert_int_equal(late.runs, 1);
    assert_int_equal(late.cancelled, 1);
    assert_true(pthread_equal(late.thread, pthread_self()));
    timer_init(&after, &lab, 3, mono_ms() + 3600 * 1000);
    engine_timer_set(e, &after.t);
    assert_int_equal(after.fired, 1);
    assert_true(pthread_equal(after.thread, pthread_self()));
    assert_int_equal(engine_timer_cancel(e, &after.t), 0);
    engine_free(e);
    lab_cleanup(&lab);
}

/* A job still queued when engine_stop is called runs cancelled, even when a fetch thread
 * becomes free during the stop. The stop is held inside (the timer thread it joins is
 * busy firing a timer that blocks) while the only fetch thread finishes its job: that
 * thread must end, not run the queued jobs uncancelled. */
static void test_stop_cancels_queued(void **state)
{
    (void)state;
    struct lab lab;
    struct tjob jobs[3];
    struct ttimer hold, probe;
    lab_init(&lab);
    jobs_init(jobs, 3, &lab, 0);
    jobs[0].block = 1;
    struct engine *e = started_engine(1);

    engine_submit(e, &jobs[0].job);
    WAIT_FOR(&lab, lab.n_started == 1);
    engine_submit(e, &jobs[1].job);
    engine_submit(e, &jobs[2].job);
    timer_init(&hold, &lab, 1, mono_ms());
    hold.block = 1;
    engine_timer_set(e, &hold.t);
    WAIT_FOR(&lab, hold.firing == 1);

    struct stopper s = {e, &lab, 0, 0};
    assert_int_equal(pthread_create(&s.th, NULL, stopper_main, &s), 0);
    /* The stop has begun once a timer set now fires at once (the timer thread is busy,
     * so nothing else fires it); until then take the probe back and ask again. */
    int64_t until = mono_ms() + tf(WAIT_MS);
    for (;;) {
        timer_init(&probe, &lab, 2, mono_ms() + 3600 * 1000);
        engine_timer_set(e, &probe.t);
        if (probe.fired)
            break;
        assert_int_equal(engine_timer_cancel(e, &probe.t), 1);
        if (mono_ms() > until)
            fail_msg("engine_stop did not begin");
        nap_ms(1);
    }

    /* Job 0 ends; the fetch thread ends too (the queued jobs are the stop's). */
    release(&lab, &jobs[0].released);
    wait_threads(e, 0);
    release(&lab, &hold.released);
    WAIT_FOR(&lab, s.returned == 1);
    assert_int_equal(pthread_join(s.th, NULL), 0);
    engine_free(e);
    assert_int_equal(jobs[0].cancelled, 0);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(jobs[i].runs, 1);
        if (jobs[i].cancelled != 1)
            fail_msg("job %d, queued before engine_stop, ran uncancelled", i);
    }
    lab_cleanup(&lab);
}

/* A never started engine: stop runs its queue cancelled and fires its timers; free. */
static void test_never_started(void **state)
{
    (void)state;
    struct lab lab;
    struct tjob jobs[2];
    struct ttimer t;
    lab_init(&lab);
    jobs_init(jobs, 2, &lab, 0);
    struct engine *e = engine_new(4);
    assert_non_null(e);
    engine_free(e);
    engine_free(NULL);

    e = engine_new(2);
    assert_non_null(e);
    engine_submit(e, &jobs[0].job);
    engine_submit(e, &jobs[1].job);
    timer_init(&t, &lab, 0, mono_ms() + 3600 * 1000);
    engine_timer_set(e, &t.t);
    engine_stop(e);
    assert_int_equal(t.fired, 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(jobs[i].runs, 1);
        assert_int_equal(jobs[i].cancelled, 1);
        assert_int_equal(lab.order[i], i);
    }
    assert_int_equal(engine_queued(e), 0);
    assert_int_equal(engine_threads(e), 0);
    engine_free(e);
    lab_cleanup(&lab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_one_thread),     cmocka_unit_test(test_fifo_at_most_n),
        cmocka_unit_test(test_set_threads),         cmocka_unit_test(test_timers_in_order),
        cmocka_unit_test(test_timer_cancel),        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_stop_cancels_queued), cmocka_unit_test(test_never_started),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
