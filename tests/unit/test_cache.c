/* test_cache - the contract of include/insightfs/cache.h, with an injected clock.
 *
 * The clock is a test-controlled Unix ms value; the fake fetcher signs with it, reserves
 * its body through cache_reserve as the real one does, fills the body with one byte (the
 * key's widget id's last character unless a test picks another) and counts its calls.
 * Threads are real; every wait is on a condition variable with a deadline, never a sleep.
 * cmocka assertions run in the main thread only: worker threads record, main checks.
 */
#include "insightfs/cache.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../src/cache_int.h"
#include "insightfs/log.h"

#define T0 1700000000000LL /* the injected clock's start, Unix ms */
#define SEC 1000LL
#define LIVE_TTL 60
#define SETTLE 60
#define ERROR_TTL 10
#define STALE 120
#define WAIT_MS 10000 /* how long a test waits for another thread before failing */

/* --- helpers ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec mono_ts(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    return ts;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

struct clk {
    _Atomic int64_t now;
};

static int64_t clk_now(void *arg)
{
    return atomic_load(&((struct clk *)arg)->now);
}

static void clk_set(struct clk *k, int64_t t)
{
    atomic_store(&k->now, t);
}

/* on_evict: the ids reported, in order. */
struct evicted {
    pthread_mutex_t m;
    int n;
    uint64_t ids[64];
};

static void record_evict(void *arg, struct cache_version *v)
{
    struct evicted *ev = arg;
    pthread_mutex_lock(&ev->m);
    if (ev->n < 64)
        ev->ids[ev->n] = cache_version_id(v);
    ev->n++;
    pthread_mutex_unlock(&ev->m);
}

static int evicted_has(struct evicted *ev, uint64_t id)
{
    int found = 0;
    pthread_mutex_lock(&ev->m);
    for (int i = 0; i < ev->n && i < 64; i++)
        found |= ev->ids[i] == id;
    pthread_mutex_unlock(&ev->m);
    return found;
}

static int evicted_count(struct evicted *ev)
{
    pthread_mutex_lock(&ev->m);
    int n = ev->n;
    pthread_mutex_unlock(&ev->m);
    return n;
}

/* The fake fetcher. Everything below m is protected by m. */
struct fake {
    pthread_mutex_t m;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    struct clk *clk;
    int calls;
    int rc;             /* what the next fetch returns: 0 or -errno */
    int fail_every;     /* > 0: every fail_every-th call returns -EIO (stress) */
    size_t len;         /* body length */
    unsigned char fill; /* 0: the widget id's last character */
    int started;        /* a fetch is running */
    int block;          /* fetches wait for released */
    int released;
    unsigned want_waiters; /* fetches wait until the wait hook saw this many waiters */
    unsigned waiters;
    int wait_timed_out; /* a blocked fetch gave up: the test fails */
};

static void fake_init(struct fake *fk, struct clk *k)
{
    memset(fk, 0, sizeof *fk);
    pthread_mutex_init(&fk->m, NULL);
    cond_init_mono(&fk->cv);
    fk->clk = k;
    fk->len = 100;
}

static void fake_cleanup(struct fake *fk)
{
    pthread_cond_destroy(&fk->cv);
    pthread_mutex_destroy(&fk->m);
}

static int fake_calls(struct fake *fk)
{
    pthread_mutex_lock(&fk->m);
    int n = fk->calls;
    pthread_mutex_unlock(&fk->m);
    return n;
}

static void fake_set(struct fake *fk, int rc, size_t len, unsigned char fill)
{
    pthread_mutex_lock(&fk->m);
    fk->rc = rc;
    fk->len = len;
    fk->fill = fill;
    pthread_mutex_unlock(&fk->m);
}

static void fake_wait_hook(void *arg, const struct cache_version *v, unsigned waiters)
{
    struct fake *fk = arg;
    (void)v;
    pthread_mutex_lock(&fk->m);
    if (waiters > fk->waiters)
        fk->waiters = waiters;
    pthread_cond_broadcast(&fk->cv);
    pthread_mutex_unlock(&fk->m);
}

static int fake_fetch(void *arg, struct cache *c, const struct cache_key *key, unsigned char **data,
                      size_t *len, int64_t *signed_at_ms)
{
    struct fake *fk = arg;
    struct timespec until = mono_ts(mono_ms() + WAIT_MS);

    pthread_mutex_lock(&fk->m);
    fk->calls++;
    fk->started = 1;
    pthread_cond_broadcast(&fk->cv);
    while ((fk->block && !fk->released) || fk->waiters < fk->want_waiters) {
        if (pthread_cond_timedwait(&fk->cv, &fk->m, &until) != 0) {
            fk->wait_timed_out = 1;
            break;
        }
    }
    int rc = fk->rc;
    if (fk->fail_every > 0 && fk->calls % fk->fail_every == 0)
        rc = -EIO;
    size_t n = fk->len;
    unsigned char fill =
        fk->fill ? fk->fill : (unsigned char)key->widget_id[strlen(key->widget_id) - 1];
    fk->started = 0;
    pthread_mutex_unlock(&fk->m);

    if (rc != 0)
        return rc;
    /* As the real fetcher: a body that cannot get room fails with EIO (SPEC 7). */
    if (cache_reserve(c, n) != 0)
        return -EIO;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        cache_release(c, n);
        return -ENOMEM;
    }
    memset(buf, fill, n);
    *data = buf;
    *len = n;
    *signed_at_ms = clk_now(fk->clk);
    return 0;
}

static void wait_started(struct fake *fk)
{
    struct timespec until = mono_ts(mono_ms() + WAIT_MS);
    pthread_mutex_lock(&fk->m);
    int rc = 0;
    while (!fk->started && rc == 0)
        rc = pthread_cond_timedwait(&fk->cv, &fk->m, &until);
    pthread_mutex_unlock(&fk->m);
    assert_int_equal(rc, 0);
}

static void release_fetch(struct fake *fk)
{
    pthread_mutex_lock(&fk->m);
    fk->released = 1;
    pthread_cond_broadcast(&fk->cv);
    pthread_mutex_unlock(&fk->m);
}

/* One test's world. */
struct world {
    struct clk clk;
    struct fake fk;
    struct evicted ev;
    struct cache_fetcher f;
    struct cache *c;
};

static struct cache_params params(int64_t max_bytes)
{
    struct cache_params p = {max_bytes, LIVE_TTL, SETTLE, ERROR_TTL, STALE};
    return p;
}

static struct world *world_new(int64_t max_bytes)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    clk_set(&w->clk, T0);
    fake_init(&w->fk, &w->clk);
    pthread_mutex_init(&w->ev.m, NULL);
    w->f.fetch = fake_fetch;
    w->f.arg = &w->fk;
    struct cache_params p = params(max_bytes);
    w->c = cache_new(&p, clk_now, &w->clk, record_evict, &w->ev);
    assert_non_null(w->c);
    return w;
}

static void world_free(struct world *w)
{
    cache_free(w->c);
    pthread_mutex_destroy(&w->ev.m);
    fake_cleanup(&w->fk);
    free(w);
}

/* A key of the "dash" dashboard; live unless end is far enough in the past. */
static struct cache_key key_of(const char *widget, int64_t end_ms)
{
    struct cache_key k = {"dash", widget, end_ms - 3600 * SEC, end_ms, VPATH_RES_AUTO};
    return k;
}

static struct cache_version *get(struct world *w, const char *widget, int64_t end_ms, int *hit)
{
    struct cache_key k = key_of(widget, end_ms);
    struct cache_version *v = cache_get(w->c, &k, hit);
    assert_non_null(v);
    return v;
}

static int resolve(struct world *w, struct cache_version *v)
{
    return cache_resolve(w->c, v, &w->f, mono_ms() + WAIT_MS);
}

/* get + resolve + unref: the key's version is ready (or failed) in the cache. */
static int fetch_key(struct world *w, const char *widget, int64_t end_ms)
{
    int hit;
    struct cache_version *v = get(w, widget, end_ms, &hit);
    int rc = resolve(w, v);
    cache_version_unref(v);
    return rc;
}

/* 1 when a lookup of the key would be a hit (counts one, like any lookup). */
static int probe(struct world *w, const char *widget, int64_t end_ms)
{
    int hit;
    struct cache_version *v = get(w, widget, end_ms, &hit);
    cache_version_unref(v);
    return hit;
}

static void check_bytes(const struct cache_version *v, size_t want_len, unsigned char fill)
{
    size_t len = 0;
    const unsigned char *d = cache_version_data(v, &len);
    assert_non_null(d);
    assert_int_equal(len, want_len);
    for (size_t i = 0; i < len; i++)
        if (d[i] != fill)
            fail_msg("byte %zu is 0x%02x, want 0x%02x", i, d[i], fill);
}

static struct cache_stats stats(struct world *w)
{
    struct cache_stats s;
    cache_get_stats(w->c, &s);
    return s;
}

/* --- capture of log lines (stderr) ------------------------------------------------- */

struct capture {
    int saved;
    FILE *f;
};

static void capture_begin(struct capture *cap)
{
    fflush(stderr);
    cap->f = tmpfile();
    assert_non_null(cap->f);
    cap->saved = dup(STDERR_FILENO);
    assert_true(cap->saved >= 0);
    assert_true(dup2(fileno(cap->f), STDERR_FILENO) >= 0);
}

/* The captured text (malloc'd). */
static char *capture_end(struct capture *cap)
{
    fflush(stderr);
    assert_true(dup2(cap->saved, STDERR_FILENO) >= 0);
    close(cap->saved);
    long n = ftell(cap->f);
    assert_true(n >= 0);
    char *s = calloc(1, (size_t)n + 1);
    assert_non_null(s);
    rewind(cap->f);
    assert_int_equal(fread(s, 1, (size_t)n, cap->f), (size_t)n);
    fclose(cap->f);
    return s;
}

static int count_lines(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(s, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* --- tests -------------------------------------------------------------------------- */

static void test_hit_miss_and_ready_bytes(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    char widget[8] = "wA";
    int hit = -1;

    struct cache_version *v = get(w, widget, T0, &hit);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_id(v), 1);
    assert_int_equal(cache_version_state(v), CACHE_PENDING);
    size_t len = 7;
    assert_null(cache_version_data(v, &len));
    assert_int_equal(len, 0);
    assert_int_equal(cache_version_fetched_at(v), 0);
    /* The key is copied: the caller's buffer may change. */
    widget[1] = 'Z';
    assert_string_equal(cache_version_key(v)->widget_id, "wA");
    assert_string_equal(cache_version_key(v)->dash_id, "dash");
    assert_int_equal(cache_version_key(v)->end_ms, T0);
    widget[1] = 'A';

    struct cache_version *v2 = get(w, widget, T0, &hit);
    assert_int_equal(hit, 0);
    assert_ptr_equal(v2, v); /* the pending version, not a second one */
    cache_version_unref(v2);

    struct cache_stats s = stats(w);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);

    assert_int_equal(resolve(w, v), 0);
    assert_int_equal(fake_calls(&w->fk), 1);
    assert_int_equal(cache_version_state(v), CACHE_READY);
    check_bytes(v, 100, 'A');
    assert_int_equal(cache_version_fetched_at(v), T0);
    assert_int_equal(cache_version_final(v), 0);
    assert_int_equal(cache_version_id(v), 1);

    v2 = get(w, widget, T0, &hit);
    assert_int_equal(hit, 1);
    assert_ptr_equal(v2, v);
    assert_int_equal(resolve(w, v2), 0);
    assert_int_equal(fake_calls(&w->fk), 1);
    cache_version_unref(v2);

    s = stats(w);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, 100);
    assert_int_equal(s.pinned_bytes, 0);
    assert_int_equal(s.max_bytes, 10000);
    assert_int_equal(s.evictions, 0);

    /* Another resolution or dashboard is another key. */
    struct cache_key k = key_of("wA", T0);
    k.res = VPATH_RES_HIGH;
    v2 = cache_get(w->c, &k, &hit);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_id(v2), 2);
    cache_version_unref(v2);
    k = key_of("wA", T0);
    k.dash_id = "other";
    v2 = cache_get(w->c, &k, &hit);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_id(v2), 3);
    cache_version_unref(v2);

    cache_version_unref(v);
    assert_int_equal(evicted_count(&w->ev), 0);
    world_free(w);
}

static void test_final_vs_live(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    int hit;
    /* final iff end < signed_at - settle_s * 1000 */
    int64_t end_final = T0 - SETTLE * SEC - 1, end_live = T0 - SETTLE * SEC;

    struct cache_version *f = get(w, "wF", end_final, &hit);
    struct cache_version *l = get(w, "wL", end_live, &hit);
    assert_int_equal(resolve(w, f), 0);
    assert_int_equal(resolve(w, l), 0);
    assert_int_equal(cache_version_final(f), 1);
    assert_int_equal(cache_version_final(l), 0);
    uint64_t fid = cache_version_id(f), lid = cache_version_id(l);
    cache_version_unref(f);
    cache_version_unref(l);

    /* A live version is fresh for live_ttl_s, not one ms more. */
    clk_set(&w->clk, T0 + LIVE_TTL * SEC - 1);
    assert_int_equal(probe(w, "wL", end_live), 1);
    clk_set(&w->clk, T0 + 30 * 24 * 3600 * SEC);

    /* A final version is never fetched again while cached. */
    f = get(w, "wF", end_final, &hit);
    assert_int_equal(hit, 1);
    assert_int_equal(cache_version_id(f), fid);
    assert_int_equal(resolve(w, f), 0);
    assert_int_equal(fake_calls(&w->fk), 2);
    assert_int_equal(cache_version_fetched_at(f), T0);
    cache_version_unref(f);

    l = get(w, "wL", end_live, &hit);
    assert_int_equal(hit, 0);
    assert_true(cache_version_id(l) > lid);
    assert_int_equal(cache_version_state(l), CACHE_PENDING);
    assert_int_equal(resolve(w, l), 0);
    assert_int_equal(fake_calls(&w->fk), 3);
    /* Decided at each fetch: now the same range is long settled. */
    assert_int_equal(cache_version_final(l), 1);
    cache_version_unref(l);
    world_free(w);
}

static void test_live_expiry_makes_new_version(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    int hit;

    fake_set(&w->fk, 0, 100, 'a');
    struct cache_version *v1 = get(w, "w", T0, &hit);
    assert_int_equal(resolve(w, v1), 0);

    clk_set(&w->clk, T0 + LIVE_TTL * SEC);
    struct cache_version *v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_int_not_equal(cache_version_id(v2), cache_version_id(v1));
    assert_true(cache_version_id(v2) > cache_version_id(v1));
    assert_int_equal(cache_version_state(v2), CACHE_PENDING);
    /* The old version is unchanged and still counted (kept for stale-if-error). */
    check_bytes(v1, 100, 'a');
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, 100);
    assert_int_equal(s.entries, 1);

    /* Pending: every lookup gets the same new version. */
    struct cache_version *again = get(w, "w", T0, &hit);
    assert_ptr_equal(again, v2);
    cache_version_unref(again);

    fake_set(&w->fk, 0, 150, 'b');
    assert_int_equal(resolve(w, v2), 0);
    check_bytes(v2, 150, 'b');
    assert_int_equal(cache_version_fetched_at(v2), T0 + LIVE_TTL * SEC);
    check_bytes(v1, 100, 'a');
    assert_int_equal(cache_version_fetched_at(v1), T0);

    /* v1 left the cache while referenced: reported, its bytes pinned. */
    s = stats(w);
    assert_int_equal(s.bytes, 150);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.pinned_bytes, 100);
    assert_int_equal(s.evictions, 0); /* replaced, not evicted for max_bytes */
    assert_int_equal(evicted_count(&w->ev), 1);
    assert_true(evicted_has(&w->ev, cache_version_id(v1)));
    cache_version_unref(v1);
    assert_int_equal(stats(w).pinned_bytes, 0);

    struct cache_version *v3 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 1);
    assert_ptr_equal(v3, v2);
    cache_version_unref(v3);
    cache_version_unref(v2);
    world_free(w);
}

static void test_lru_eviction_order(void **state)
{
    (void)state;
    struct world *w = world_new(300);

    assert_int_equal(fetch_key(w, "A", T0), 0);
    assert_int_equal(fetch_key(w, "B", T0), 0);
    assert_int_equal(fetch_key(w, "C", T0), 0);
    assert_int_equal(stats(w).bytes, 300);
    /* Use A: least recently used is now B, then C, then A. */
    assert_int_equal(probe(w, "A", T0), 1);

    assert_int_equal(fetch_key(w, "D", T0), 0);
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 300);
    assert_int_equal(s.entries, 3);
    /* Order now C, A, D; probing in that order keeps it. */
    assert_int_equal(probe(w, "C", T0), 1);
    assert_int_equal(probe(w, "A", T0), 1);
    assert_int_equal(probe(w, "D", T0), 1);

    /* B was the one evicted: fetching it again evicts C. */
    assert_int_equal(fetch_key(w, "B", T0), 0);
    assert_int_equal(fake_calls(&w->fk), 5);
    s = stats(w);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.bytes, 300);
    assert_int_equal(probe(w, "A", T0), 1);
    assert_int_equal(probe(w, "D", T0), 1);
    assert_int_equal(probe(w, "B", T0), 1);
    assert_int_equal(probe(w, "C", T0), 0);
    /* Nobody held the evicted versions: nothing to report, nothing pinned. */
    assert_int_equal(evicted_count(&w->ev), 0);
    assert_int_equal(stats(w).pinned_bytes, 0);

    /* cache_resolve also counts as use: resolving A's version makes D the oldest. */
    int hit;
    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(hit, 1);
    assert_int_equal(probe(w, "D", T0), 1);
    assert_int_equal(probe(w, "B", T0), 1);
    assert_int_equal(resolve(w, a), 0); /* order: D, B, A */
    cache_version_unref(a);
    assert_int_equal(fetch_key(w, "C", T0), 0); /* C was pending (the probe made it) */
    assert_int_equal(probe(w, "A", T0), 1);
    assert_int_equal(probe(w, "B", T0), 1);
    assert_int_equal(probe(w, "D", T0), 0);
    world_free(w);
}

static void test_evict_while_referenced(void **state)
{
    (void)state;
    struct world *w = world_new(200);
    int hit;

    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(resolve(w, a), 0);
    assert_int_equal(fetch_key(w, "B", T0), 0);

    assert_int_equal(fetch_key(w, "C", T0), 0); /* evicts A, still held */
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 200);
    assert_int_equal(s.pinned_bytes, 100);
    assert_int_equal(s.entries, 2);
    assert_int_equal(evicted_count(&w->ev), 1);
    assert_true(evicted_has(&w->ev, cache_version_id(a)));
    check_bytes(a, 100, 'A');
    assert_int_equal(cache_version_state(a), CACHE_READY);

    /* The evicted version is out of the cache: its key gets a new version. */
    struct cache_version *a2 = get(w, "A", T0, &hit);
    assert_int_equal(hit, 0);
    assert_int_not_equal(cache_version_id(a2), cache_version_id(a));
    cache_version_unref(a2);

    cache_version_unref(a);
    assert_int_equal(stats(w).pinned_bytes, 0);

    /* Evicting an unreferenced version reports nothing. */
    assert_int_equal(fetch_key(w, "D", T0), 0); /* evicts B */
    assert_int_equal(evicted_count(&w->ev), 1);
    assert_int_equal(stats(w).evictions, 2);
    assert_int_equal(stats(w).pinned_bytes, 0);
    world_free(w);
}

static void test_reserve(void **state)
{
    (void)state;
    struct world *w = world_new(1000);

    assert_int_equal(cache_reserve(w->c, 1001), -ENOMEM);
    assert_int_equal(stats(w).bytes, 0);
    assert_int_equal(cache_reserve(w->c, 1000), 0);
    assert_int_equal(stats(w).bytes, 1000);
    /* Reservations are not evictable. */
    assert_int_equal(cache_reserve(w->c, 1), -ENOMEM);
    cache_release(w->c, 1000);
    assert_int_equal(stats(w).bytes, 0);
    assert_int_equal(cache_reserve(w->c, 0), 0);

    /* A reservation evicts ready versions to make room, and only as many as needed. */
    fake_set(&w->fk, 0, 400, 0);
    assert_int_equal(fetch_key(w, "A", T0), 0);
    assert_int_equal(fetch_key(w, "B", T0), 0);
    assert_int_equal(cache_reserve(w->c, 300), 0);
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 700);
    assert_int_equal(probe(w, "B", T0), 1);
    /* Nothing is evicted for a reservation that cannot fit anyway. */
    assert_int_equal(cache_reserve(w->c, 701), -ENOMEM);
    assert_int_equal(stats(w).evictions, 1);
    assert_int_equal(stats(w).bytes, 700);
    cache_release(w->c, 300);

    /* A body larger than the cache: the fetcher's reservation fails, EIO. */
    fake_set(&w->fk, 0, 1001, 0);
    int hit;
    struct cache_version *v = get(w, "big", T0, &hit);
    assert_int_equal(resolve(w, v), -EIO);
    assert_int_equal(cache_version_state(v), CACHE_FAILED);
    s = stats(w);
    assert_int_equal(s.bytes, 400 + 256); /* B and the remembered failure */
    cache_version_unref(v);
    world_free(w);
}

static void test_remembered_error(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    int hit;

    fake_set(&w->fk, -ENOENT, 100, 0);
    struct cache_version *v = get(w, "w", T0, &hit);
    uint64_t id = cache_version_id(v);
    assert_int_equal(resolve(w, v), -ENOENT);
    assert_int_equal(cache_version_state(v), CACHE_FAILED);
    assert_int_equal(resolve(w, v), -ENOENT);
    assert_int_equal(fake_calls(&w->fk), 1);
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, 256);
    assert_int_equal(s.entries, 0);

    /* Lookups get the failed version (a miss) and the errno without a fetch. */
    clk_set(&w->clk, T0 + ERROR_TTL * SEC - 1);
    struct cache_version *v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_ptr_equal(v2, v);
    assert_int_equal(resolve(w, v2), -ENOENT);
    cache_version_unref(v2);
    assert_int_equal(fake_calls(&w->fk), 1);
    assert_int_equal(stats(w).bytes, 256);

    /* Forgotten after error_ttl_s: no longer counted, fetched again in place. */
    clk_set(&w->clk, T0 + ERROR_TTL * SEC);
    assert_int_equal(stats(w).bytes, 0);
    v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_ptr_equal(v2, v);
    cache_version_unref(v2);
    fake_set(&w->fk, -EIO, 100, 0);
    assert_int_equal(resolve(w, v), -EIO); /* no previous version: the errno */
    assert_int_equal(fake_calls(&w->fk), 2);
    assert_int_equal(stats(w).bytes, 256);

    clk_set(&w->clk, T0 + 2 * ERROR_TTL * SEC);
    fake_set(&w->fk, 0, 100, 'x');
    assert_int_equal(resolve(w, v), 0);
    assert_int_equal(fake_calls(&w->fk), 3);
    assert_int_equal(cache_version_id(v), id);
    assert_int_equal(cache_version_state(v), CACHE_READY);
    check_bytes(v, 100, 'x');
    s = stats(w);
    assert_int_equal(s.bytes, 100);
    assert_int_equal(s.entries, 1);
    assert_int_equal(probe(w, "w", T0), 1);
    cache_version_unref(v);
    world_free(w);
}

/* v1 ready at T0 ('a' x 100), then a refresh pending at the given time; returns it. */
static struct cache_version *stale_setup(struct world *w, int64_t refresh_at,
                                         struct cache_version **v1)
{
    int hit;
    fake_set(&w->fk, 0, 100, 'a');
    *v1 = get(w, "w", T0, &hit);
    assert_int_equal(resolve(w, *v1), 0);
    clk_set(&w->clk, refresh_at);
    struct cache_version *v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_state(v2), CACHE_PENDING);
    return v2;
}

static void test_stale_if_error(void **state)
{
    (void)state;
    static const int errs[] = {EAGAIN, ETIMEDOUT, EIO};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        struct world *w = world_new(10000);
        struct cache_version *v1;
        int hit;
        int64_t t1 = T0 + (LIVE_TTL + 1) * SEC;
        struct cache_version *v2 = stale_setup(w, t1, &v1);

        fake_set(&w->fk, -errs[i], 100, 'b');
        struct capture cap;
        capture_begin(&cap);
        int rc = resolve(w, v2);
        char *log = capture_end(&cap);
        assert_int_equal(rc, 0);
        assert_int_equal(count_lines(log, "insightfs: warn: "), 1);
        assert_non_null(strstr(log, "stale"));
        free(log);

        assert_int_equal(cache_version_state(v2), CACHE_READY);
        check_bytes(v2, 100, 'a');
        size_t l1, l2;
        assert_ptr_equal(cache_version_data(v2, &l2), cache_version_data(v1, &l1));
        assert_int_equal(cache_version_fetched_at(v2), T0);
        assert_int_equal(cache_version_final(v2), 0);
        /* One shared buffer, counted once, not pinned; plus the remembered failure. */
        struct cache_stats s = stats(w);
        assert_int_equal(s.bytes, 100 + 256);
        assert_int_equal(s.entries, 1);
        assert_int_equal(s.pinned_bytes, 0);
        assert_true(evicted_has(&w->ev, cache_version_id(v1)));
        cache_version_unref(v1);
        assert_int_equal(stats(w).pinned_bytes, 0);

        /* While the failure is remembered, lookups hit the stale version. */
        clk_set(&w->clk, t1 + ERROR_TTL * SEC - 1);
        struct cache_version *v = get(w, "w", T0, &hit);
        assert_int_equal(hit, 1);
        assert_ptr_equal(v, v2);
        cache_version_unref(v);
        assert_int_equal(fake_calls(&w->fk), 2);

        /* Then a new refresh; failing again inside the window serves stale again. */
        int64_t t2 = t1 + ERROR_TTL * SEC;
        clk_set(&w->clk, t2);
        struct cache_version *v3 = get(w, "w", T0, &hit);
        assert_int_equal(hit, 0);
        assert_true(cache_version_id(v3) > cache_version_id(v2));
        capture_begin(&cap);
        rc = resolve(w, v3);
        log = capture_end(&cap);
        assert_int_equal(rc, 0);
        assert_int_equal(count_lines(log, "insightfs: warn: "), 1);
        free(log);
        check_bytes(v3, 100, 'a');
        assert_int_equal(cache_version_fetched_at(v3), T0);
        assert_int_equal(fake_calls(&w->fk), 3);
        assert_int_equal(stats(w).bytes, 100 + 256);
        cache_version_unref(v2);

        /* A remembered failure does not stretch the window: past it, a new version... */
        int64_t window_end = T0 + (LIVE_TTL + STALE) * SEC;
        clk_set(&w->clk, window_end);
        struct cache_version *v4 = get(w, "w", T0, &hit);
        assert_int_equal(hit, 0);
        /* ...and the old bytes are gone from the cache (v3 still readable, pinned). */
        struct cache_stats s4 = stats(w);
        assert_int_equal(s4.entries, 0);
        assert_int_equal(s4.bytes, 0);
        assert_int_equal(s4.pinned_bytes, 100);
        assert_int_equal(resolve(w, v4), -errs[i]);
        assert_int_equal(stats(w).bytes, 256);
        check_bytes(v3, 100, 'a');
        cache_version_unref(v3);
        cache_version_unref(v4);
        assert_int_equal(stats(w).pinned_bytes, 0);
        world_free(w);
    }
}

/* The window is checked again when the refresh fails. */
static void test_stale_window_checked_at_failure(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    struct cache_version *v1;
    int64_t window_end = T0 + (LIVE_TTL + STALE) * SEC;
    struct cache_version *v2 = stale_setup(w, window_end - 1, &v1);
    cache_version_unref(v1);
    assert_int_equal(stats(w).bytes, 100); /* kept while the window is open */

    clk_set(&w->clk, window_end);
    fake_set(&w->fk, -ETIMEDOUT, 100, 'b');
    assert_int_equal(resolve(w, v2), -ETIMEDOUT);
    assert_int_equal(cache_version_state(v2), CACHE_FAILED);
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, 256);
    assert_int_equal(s.entries, 0);
    cache_version_unref(v2);
    world_free(w);
}

static void test_refresh_denied_drops_previous(void **state)
{
    (void)state;
    static const int errs[] = {EACCES, ENOENT, EINVAL};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        struct world *w = world_new(10000);
        struct cache_version *v1;
        int hit;
        int64_t t1 = T0 + (LIVE_TTL + 1) * SEC;
        struct cache_version *v2 = stale_setup(w, t1, &v1);

        fake_set(&w->fk, -errs[i], 100, 'b');
        assert_int_equal(resolve(w, v2), -errs[i]);
        assert_int_equal(cache_version_state(v2), CACHE_FAILED);
        struct cache_stats s = stats(w);
        assert_int_equal(s.bytes, 256);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.pinned_bytes, 100); /* v1, held by the test */
        assert_true(evicted_has(&w->ev, cache_version_id(v1)));
        check_bytes(v1, 100, 'a');
        cache_version_unref(v1);
        assert_int_equal(stats(w).pinned_bytes, 0);

        struct cache_version *v = get(w, "w", T0, &hit);
        assert_int_equal(hit, 0);
        assert_ptr_equal(v, v2);
        cache_version_unref(v);

        /* With the old version gone, a later EIO is an error, not stale bytes. */
        clk_set(&w->clk, t1 + ERROR_TTL * SEC);
        fake_set(&w->fk, -EIO, 100, 'b');
        assert_int_equal(resolve(w, v2), -EIO);
        assert_int_equal(fake_calls(&w->fk), 3);
        cache_version_unref(v2);
        world_free(w);
    }
}

/* Single flight with 16 threads. */
#define NTHREADS 16

struct resolver {
    struct world *w;
    struct cache_version *v;
    int64_t deadline;
    int rc;
    const unsigned char *data;
    size_t len;
};

static void *resolver_main(void *arg)
{
    struct resolver *r = arg;
    r->rc = cache_resolve(r->w->c, r->v, &r->w->f, r->deadline);
    r->data = cache_version_data(r->v, &r->len);
    return NULL;
}

static void run_resolvers(struct world *w, struct cache_version *v, struct resolver *r, int n)
{
    pthread_t th[NTHREADS];
    for (int i = 0; i < n; i++) {
        r[i] = (struct resolver){w, v, mono_ms() + WAIT_MS, 1, NULL, 0};
        assert_int_equal(pthread_create(&th[i], NULL, resolver_main, &r[i]), 0);
    }
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
}

static void test_single_flight(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    struct resolver r[NTHREADS];
    int hit;

    cache_set_wait_hook(w->c, fake_wait_hook, &w->fk);
    /* The one fetch returns only once the 15 others are all waiting for it. */
    w->fk.want_waiters = NTHREADS - 1;
    fake_set(&w->fk, 0, 4096, 'S');
    struct cache_version *v = get(w, "w", T0, &hit);
    run_resolvers(w, v, r, NTHREADS);
    assert_int_equal(w->fk.wait_timed_out, 0);
    assert_int_equal(fake_calls(&w->fk), 1);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(r[i].rc, 0);
        assert_ptr_equal(r[i].data, r[0].data);
        assert_int_equal(r[i].len, 4096);
    }
    check_bytes(v, 4096, 'S');
    cache_version_unref(v);

    /* A failure is shared the same way, even with error_ttl_s 0 (nothing remembered). */
    struct cache_params p = params(10000);
    p.error_ttl_s = 0;
    cache_set_params(w->c, &p);
    pthread_mutex_lock(&w->fk.m);
    w->fk.waiters = 0;
    pthread_mutex_unlock(&w->fk.m);
    fake_set(&w->fk, -EIO, 100, 0);
    v = get(w, "other", T0, &hit);
    run_resolvers(w, v, r, NTHREADS);
    assert_int_equal(w->fk.wait_timed_out, 0);
    assert_int_equal(fake_calls(&w->fk), 2);
    for (int i = 0; i < NTHREADS; i++) {
        assert_int_equal(r[i].rc, -EIO);
        assert_null(r[i].data);
    }
    cache_set_wait_hook(w->c, NULL, NULL);
    cache_version_unref(v);
    world_free(w);
}

static void test_waiter_deadline(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    struct resolver r;
    pthread_t th;
    int hit;

    w->fk.block = 1;
    fake_set(&w->fk, 0, 100, 'D');
    struct cache_version *v = get(w, "w", T0, &hit);
    r = (struct resolver){w, v, mono_ms() + WAIT_MS, 1, NULL, 0};
    assert_int_equal(pthread_create(&th, NULL, resolver_main, &r), 0);
    wait_started(&w->fk);

    /* The fetch is in flight: a short deadline expires, one already past at once. */
    int64_t t = mono_ms();
    assert_int_equal(cache_resolve(w->c, v, &w->f, t + 50), -ETIMEDOUT);
    assert_true(mono_ms() >= t + 50);
    assert_int_equal(cache_resolve(w->c, v, &w->f, t - 1000), -ETIMEDOUT);
    assert_int_equal(cache_version_state(v), CACHE_PENDING);

    release_fetch(&w->fk);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(r.rc, 0);
    assert_int_equal(resolve(w, v), 0);
    check_bytes(v, 100, 'D');
    assert_int_equal(fake_calls(&w->fk), 1);
    /* A ready version resolves even with a deadline in the past. */
    assert_int_equal(cache_resolve(w->c, v, &w->f, 0), 0);
    cache_version_unref(v);
    world_free(w);
}

static void test_set_params(void **state)
{
    (void)state;
    struct world *w = world_new(1000);

    assert_int_equal(fetch_key(w, "A", T0), 0);
    assert_int_equal(fetch_key(w, "B", T0), 0);
    assert_int_equal(fetch_key(w, "C", T0), 0);
    struct cache_params p = params(150);
    p.live_ttl_s = 1000;
    cache_set_params(w->c, &p);
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.bytes, 100);
    assert_int_equal(s.max_bytes, 150);
    assert_int_equal(s.entries, 1);
    /* The new live TTL applies from the next lookup. */
    clk_set(&w->clk, T0 + 500 * SEC);
    assert_int_equal(probe(w, "C", T0), 1);
    assert_int_equal(probe(w, "A", T0), 0);
    assert_int_equal(probe(w, "B", T0), 0);
    world_free(w);
}

static void test_clear(void **state)
{
    (void)state;
    struct world *w = world_new(1000);
    int hit;

    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(resolve(w, a), 0);
    assert_int_equal(fetch_key(w, "B", T0), 0);
    struct cache_version *c = get(w, "C", T0, &hit); /* pending, held */
    assert_int_equal(probe(w, "B", T0), 1);

    cache_clear(w->c);
    struct cache_stats s = stats(w);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.pinned_bytes, 100);
    assert_int_equal(s.hits, 1); /* counters survive */
    assert_int_equal(evicted_count(&w->ev), 2);
    assert_true(evicted_has(&w->ev, cache_version_id(a)));
    assert_true(evicted_has(&w->ev, cache_version_id(c)));
    check_bytes(a, 100, 'A');

    struct cache_version *a2 = get(w, "A", T0, &hit);
    assert_int_equal(hit, 0);
    assert_true(cache_version_id(a2) > cache_version_id(c));
    cache_version_unref(a2);
    assert_int_equal(probe(w, "B", T0), 0);

    /* A version that left the cache still resolves, outside it: pinned, not counted. */
    assert_int_equal(resolve(w, c), 0);
    check_bytes(c, 100, 'C');
    s = stats(w);
    assert_int_equal(s.bytes, 0);
    assert_int_equal(s.pinned_bytes, 200);
    assert_int_equal(probe(w, "C", T0), 0); /* the key's new version is another one */
    cache_version_unref(a);
    cache_version_unref(c);
    assert_int_equal(stats(w).pinned_bytes, 0);
    world_free(w);
}

/* Remembered failures count 256 bytes and give way under pressure, after ready versions. */
static void test_failures_in_byte_bound(void **state)
{
    (void)state;
    struct world *w = world_new(1000);

    fake_set(&w->fk, 0, 700, 0);
    assert_int_equal(fetch_key(w, "A", T0), 0);
    fake_set(&w->fk, -EIO, 100, 0);
    assert_int_equal(fetch_key(w, "X", T0), -EIO);
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, 956);
    assert_int_equal(s.evictions, 0);
    assert_int_equal(fetch_key(w, "Y", T0), -EIO); /* 1212 > 1000: A goes */
    s = stats(w);
    assert_int_equal(s.bytes, 512);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.entries, 0);

    /* Only failures left: the oldest are forgotten to make room. */
    assert_int_equal(cache_reserve(w->c, 600), 0);
    assert_int_equal(stats(w).bytes, 856);
    cache_release(w->c, 600);
    assert_int_equal(fake_calls(&w->fk), 3);
    assert_int_equal(fetch_key(w, "Y", T0), -EIO); /* still remembered */
    assert_int_equal(fake_calls(&w->fk), 3);
    assert_int_equal(fetch_key(w, "X", T0), -EIO); /* forgotten: fetched again */
    assert_int_equal(fake_calls(&w->fk), 4);
    world_free(w);
}

static void test_forget_errors(void **state)
{
    (void)state;
    struct world *w = world_new(10000);

    fake_set(&w->fk, -EACCES, 100, 0);
    assert_int_equal(fetch_key(w, "A", T0), -EACCES);
    fake_set(&w->fk, -ENOENT, 100, 0);
    assert_int_equal(fetch_key(w, "N", T0), -ENOENT);
    assert_int_equal(stats(w).bytes, 512);

    cache_forget_errors(w->c, EACCES);
    assert_int_equal(stats(w).bytes, 256);
    fake_set(&w->fk, 0, 100, 0);
    assert_int_equal(fetch_key(w, "N", T0), -ENOENT); /* still remembered */
    assert_int_equal(fake_calls(&w->fk), 2);
    assert_int_equal(fetch_key(w, "A", T0), 0); /* fetched again */
    assert_int_equal(fake_calls(&w->fk), 3);
    assert_int_equal(stats(w).bytes, 356);
    world_free(w);
}

static void test_many_keys(void **state)
{
    (void)state;
    struct world *w = world_new(1 << 20);
    enum { N = 2000 };
    char name[32];
    int hit;

    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "w%d", i);
        struct cache_version *v = get(w, name, T0 + i, &hit);
        assert_int_equal(hit, 0);
        assert_int_equal(cache_version_id(v), (uint64_t)i + 1);
        cache_version_unref(v);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "w%d", i);
        struct cache_version *v = get(w, name, T0 + i, &hit);
        assert_int_equal(cache_version_id(v), (uint64_t)i + 1);
        assert_string_equal(cache_version_key(v)->widget_id, name);
        cache_version_unref(v);
    }
    assert_int_equal(stats(w).misses, 2 * N);
    world_free(w);
}

static void test_free_with_live_references(void **state)
{
    (void)state;
    struct world *w = world_new(1000);
    int hit;
    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(resolve(w, a), 0);
    struct cache_version *p = get(w, "P", T0, &hit);
    cache_free(w->c);
    w->c = NULL;
    check_bytes(a, 100, 'A');
    assert_int_equal(cache_version_state(p), CACHE_PENDING);
    assert_int_equal(evicted_count(&w->ev), 0); /* not called while freeing */
    cache_version_unref(a);
    cache_version_unref(p);
    cache_version_unref(NULL);
    cache_free(NULL);
    world_free(w);
}

/* Many threads, few keys, a small bound, a moving clock and failing refreshes: answers
 * stay consistent (each key's bytes are its own), and the bound holds. For TSan. */
struct stress {
    struct world *w;
    int id;
    int bad; /* a wrong answer seen */
    int resolved;
};

static void *stress_main(void *arg)
{
    struct stress *s = arg;
    static const char *const widgets[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    unsigned seed = (unsigned)s->id * 7919u + 1;
    for (int i = 0; i < 3000; i++) {
        const char *wid = widgets[rand_r(&seed) % 8];
        struct cache_key k = key_of(wid, T0);
        int hit;
        struct cache_version *v = cache_get(s->w->c, &k, &hit);
        if (!v) {
            s->bad = 1;
            break;
        }
        int rc = cache_resolve(s->w->c, v, &s->w->f, mono_ms() + WAIT_MS);
        if (rc == 0) {
            size_t len;
            const unsigned char *d = cache_version_data(v, &len);
            if (!d || len != 100 || d[0] != (unsigned char)wid[0] || d[99] != (unsigned char)wid[0])
                s->bad = 1;
            s->resolved++;
        } else if (rc != -EIO) {
            s->bad = 1;
        }
        if (hit && cache_version_state(v) != CACHE_READY)
            s->bad = 1;
        if (rand_r(&seed) % 16 == 0)
            atomic_fetch_add(&s->w->clk.now, 7 * SEC);
        cache_version_unref(v);
    }
    return NULL;
}

static void test_concurrent_stress(void **state)
{
    (void)state;
    enum { NT = 8 };
    struct world *w = world_new(500);
    struct stress s[NT];
    pthread_t th[NT];

    w->fk.fail_every = 3;
    for (int i = 0; i < NT; i++) {
        s[i] = (struct stress){w, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, stress_main, &s[i]), 0);
    }
    for (int i = 0; i < NT; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(s[i].bad, 0);
        assert_true(s[i].resolved > 0);
    }
    struct cache_stats st = stats(w);
    assert_true(st.bytes <= 500);
    assert_int_equal(st.pinned_bytes, 0);
    assert_int_equal(st.hits + st.misses, NT * 3000);
    assert_true(st.evictions > 0);
    cache_clear(w->c);
    st = stats(w);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.pinned_bytes, 0);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_and_ready_bytes),
        cmocka_unit_test(test_final_vs_live),
        cmocka_unit_test(test_live_expiry_makes_new_version),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_evict_while_referenced),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_remembered_error),
        cmocka_unit_test(test_stale_if_error),
        cmocka_unit_test(test_stale_window_checked_at_failure),
        cmocka_unit_test(test_refresh_denied_drops_previous),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_waiter_deadline),
        cmocka_unit_test(test_set_params),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_failures_in_byte_bound),
        cmocka_unit_test(test_forget_errors),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_free_with_live_references),
        cmocka_unit_test(test_concurrent_stress),
    };
    log_init(0, LOG_LVL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
