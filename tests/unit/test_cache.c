/* test_cache - the contract of include/insightfs/cache.h.
 *
 * The test is the cache's caller: it holds the clocks (a struct cache_clock it moves by
 * hand, mono and wall separately when a test needs it) and plays the ticket holder,
 * reserving a body through cache_reserve as the real fetcher does, filling it with one
 * byte and handing it to cache_complete. Every key's records count in the bound: a key's
 * cost is measured once per widget-name length with a scratch cache, so byte totals are
 * exact sums of bodies, key costs, reservations and charges.
 * Threads are real where concurrency is the point; every wait has a deadline (scaled by
 * INSIGHTFS_TEST_TIME_FACTOR); cmocka assertions run in the main thread only.
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

#define M0 1000000LL       /* the injected CLOCK_MONOTONIC start, ms */
#define T0 1700000000000LL /* the injected wall clock start, Unix ms */
#define SEC 1000LL
#define LIVE_TTL 60
#define SETTLE 60
#define ERROR_TTL 10
#define STALE 120
#define WAIT_MS 10000 /* how long a thread waits for another before failing */

/* --- helpers ------------------------------------------------------------------------ */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline(void)
{
    const char *f = getenv("INSIGHTFS_TEST_TIME_FACTOR");
    long n = f ? strtol(f, NULL, 10) : 1;
    int64_t ms = mono_ms() + WAIT_MS * (n >= 1 && n <= 1000 ? n : 1);
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

static struct cache_params params(int64_t max_bytes)
{
    struct cache_params p = {max_bytes, LIVE_TTL, SETTLE, ERROR_TTL, STALE};
    return p;
}

/* One test's world: the cache, the clocks, and how many fetches the test made. */
struct world {
    struct cache *c;
    struct cache_clock now;
    int fetches;
};

static struct world *world_new_p(const struct cache_params *p)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->now.mono = M0;
    w->now.wall = T0;
    w->c = cache_new(p);
    assert_non_null(w->c);
    return w;
}

static struct world *world_new(int64_t max_bytes)
{
    struct cache_params p = params(max_bytes);
    return world_new_p(&p);
}

/* Both clocks move on together. */
static void adv(struct world *w, int64_t ms)
{
    w->now.mono += ms;
    w->now.wall += ms;
}

/* To ms after the start, on both clocks. */
static void at(struct world *w, int64_t ms)
{
    w->now.mono = M0 + ms;
    w->now.wall = T0 + ms;
}

static struct cache_version *take_all_dropped(struct world *w, uint64_t *ids, int max, int *n);

static void world_free(struct world *w)
{
    int n;
    take_all_dropped(w, NULL, 0, &n);
    cache_free(w->c);
    free(w);
}

/* A key of the "dash" dashboard, an hour up to end_ms. */
static struct cache_key key_of(const char *widget, int64_t end_ms)
{
    struct cache_key k = {"dash", widget, end_ms - 3600 * SEC, end_ms, VPATH_RES_AUTO};
    return k;
}

static struct cache_version *get(struct world *w, const char *widget, int64_t end_ms, int *hit)
{
    struct cache_key k = key_of(widget, end_ms);
    struct cache_version *v = cache_get(w->c, &k, &w->now, hit, NULL);
    assert_non_null(v);
    return v;
}

/* The ticket holder's end of a fetch of v: rc 0 reserves len bytes, fills them with fill
 * and hands them over, signed at signed_at; else the errno. Returns *result; *waiters
 * gets what cache_complete returned. */
static int complete_at(struct world *w, struct cache_version *v, int rc, size_t len,
                       unsigned char fill, int64_t signed_at, int remember,
                       struct flight_waiter **waiters)
{
    unsigned char *data = NULL;
    if (rc == 0) {
        assert_int_equal(cache_reserve(w->c, len), 0);
        data = malloc(len ? len : 1);
        assert_non_null(data);
        memset(data, fill, len);
    }
    int result = 1;
    w->fetches++;
    *waiters =
        cache_complete(w->c, v, rc, data, rc == 0 ? len : 0, signed_at, &w->now, remember, &result);
    return result;
}

/* Fetch v, which must hand out the ticket, with nobody waiting. Returns *result. */
static int fetch(struct world *w, struct cache_version *v, int rc, size_t len, unsigned char fill)
{
    int err = 0;
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH);
    struct flight_waiter *ws;
    int result = complete_at(w, v, rc, len, fill, w->now.wall, 1, &ws);
    assert_null(ws);
    return result;
}

/* Look the key up and make its bytes available as a reader does: 0 when ready (fetched
 * now with rc, len and fill if needed), or the negative errno. */
static int fetch_key(struct world *w, const char *widget, int64_t end_ms, int rc, size_t len,
                     unsigned char fill)
{
    int hit, err = 0, result = 1;
    struct cache_version *v = get(w, widget, end_ms, &hit);
    switch (cache_need(w->c, v, &w->now, NULL, &err)) {
    case CACHE_HAVE:
        result = 0;
        break;
    case CACHE_REMEMBERED:
        result = -err;
        break;
    case CACHE_FETCH: {
        struct flight_waiter *ws;
        result = complete_at(w, v, rc, len, fill, w->now.wall, 1, &ws);
        assert_null(ws);
        break;
    }
    default:
        fail_msg("a fetch is running");
    }
    cache_version_unref(v);
    return result;
}

/* 1 when a lookup of the key is a hit (counts one, like any lookup). */
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

/* What the cache counts for one key named by widget (under "dash"), measured alone. */
static uint64_t key_cost(const char *widget)
{
    struct cache_params p = params(1 << 30);
    struct cache *c = cache_new(&p);
    assert_non_null(c);
    struct cache_clock now = {M0, T0};
    struct cache_key k = key_of(widget, T0);
    struct cache_version *v = cache_get(c, &k, &now, NULL, NULL);
    assert_non_null(v);
    struct cache_stats s;
    cache_get_stats(c, &s);
    cache_version_unref(v);
    cache_free(c);
    assert_true(s.bytes > 0);
    return s.bytes;
}

/* Take the dropped list: the ids (up to max) into ids, the count into *n; every version
 * is released. Returns NULL (for chaining nothing). */
static struct cache_version *take_all_dropped(struct world *w, uint64_t *ids, int max, int *n)
{
    struct cache_version *v = cache_take_dropped(w->c);
    *n = 0;
    while (v) {
        struct cache_version *next = cache_dropped_next(v);
        if (*n < max)
            ids[*n] = cache_version_id(v);
        (*n)++;
        cache_version_unref(v);
        v = next;
    }
    return NULL;
}

static int has_id(const uint64_t *ids, int n, uint64_t id)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return 1;
    return 0;
}

/* The waiters list as a count, checking each is one of want (n of them) and none twice. */
static int count_waiters(struct flight_waiter *list, struct flight_waiter **want, int n)
{
    int seen[64] = {0}, count = 0;
    for (struct flight_waiter *x = list; x; x = x->next) {
        int i = 0;
        while (i < n && want[i] != x)
            i++;
        if (i == n)
            fail_msg("a waiter that never joined came back");
        if (seen[i]++)
            fail_msg("waiter %d came back twice", i);
        count++;
    }
    return count;
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

/* --- lookups, versions, tickets ----------------------------------------------------- */

static void test_hit_miss_and_ready_bytes(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    uint64_t k = key_cost("wA");
    char widget[8] = "wA";
    int hit = -1, err = 0;

    struct cache_version *v = get(w, widget, T0, &hit);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_id(v), 1);
    assert_int_equal(cache_version_state(v), CACHE_PENDING);
    size_t len = 7;
    assert_null(cache_version_data(v, &len));
    assert_int_equal(len, 0);
    assert_int_equal(cache_version_fetched_at(v), 0);
    assert_int_equal(cache_version_final(v), 0);
    /* The key is copied: the caller's buffer may change. */
    widget[1] = 'Z';
    assert_string_equal(cache_version_key(v)->widget_id, "wA");
    assert_string_equal(cache_version_key(v)->dash_id, "dash");
    assert_int_equal(cache_version_key(v)->end_ms, T0);
    assert_int_equal(cache_version_key(v)->start_ms, T0 - 3600 * SEC);
    widget[1] = 'A';

    struct cache_version *v2 = get(w, widget, T0, &hit);
    assert_int_equal(hit, 0);
    assert_ptr_equal(v2, v); /* the pending version, not a second one */
    cache_version_unref(v2);

    struct cache_stats s = stats(w);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.keys, 1);
    assert_int_equal(s.bytes, k); /* a pending key counts its records */

    assert_int_equal(fetch(w, v, 0, 100, 'A'), 0);
    assert_int_equal(cache_version_state(v), CACHE_READY);
    check_bytes(v, 100, 'A');
    assert_int_equal(cache_version_fetched_at(v), T0);
    assert_int_equal(cache_version_final(v), 0);
    assert_int_equal(cache_version_id(v), 1);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_HAVE);

    v2 = get(w, widget, T0, &hit);
    assert_int_equal(hit, 1);
    assert_ptr_equal(v2, v);
    assert_int_equal(cache_need(w->c, v2, &w->now, NULL, &err), CACHE_HAVE);
    cache_version_unref(v2);

    s = stats(w);
    assert_int_equal(s.hits, 1);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.keys, 1);
    assert_int_equal(s.bytes, 100 + k);
    assert_int_equal(s.pinned_bytes, 0);
    assert_int_equal(s.max_bytes, 10000);
    assert_int_equal(s.evictions, 0);

    /* Another resolution or dashboard is another key. */
    struct cache_key key = key_of("wA", T0);
    key.res = VPATH_RES_HIGH;
    v2 = cache_get(w->c, &key, &w->now, &hit, NULL);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_id(v2), 2);
    cache_version_unref(v2);
    key = key_of("wA", T0);
    key.dash_id = "other";
    v2 = cache_get(w->c, &key, &w->now, &hit, NULL);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_id(v2), 3);
    cache_version_unref(v2);
    assert_int_equal(stats(w).keys, 3);

    cache_version_unref(v);
    int n;
    take_all_dropped(w, NULL, 0, &n);
    assert_int_equal(n, 0);
    world_free(w);
}

/* cache_need: the ticket once, WAIT while it is out, HAVE when ready, REMEMBERED with
 * the errno while a failure is remembered (the waiter is then not linked). */
static void test_need_states(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    int hit, err = 0;
    struct flight_waiter a, b, c;
    struct flight_waiter *want[] = {&a, &b};

    struct cache_version *v = get(w, "w", T0, &hit);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_WAIT);
    assert_int_equal(cache_need(w->c, v, &w->now, &a, &err), CACHE_WAIT);
    assert_int_equal(cache_need(w->c, v, &w->now, &b, &err), CACHE_WAIT);
    assert_int_equal(cache_version_state(v), CACHE_PENDING);
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, v, -EIO, 0, 0, w->now.wall, 1, &ws), -EIO);
    assert_int_equal(count_waiters(ws, want, 2), 2);
    assert_int_equal(cache_version_state(v), CACHE_FAILED);
    size_t len = 1;
    assert_null(cache_version_data(v, &len));
    assert_int_equal(len, 0);

    err = 0;
    assert_int_equal(cache_need(w->c, v, &w->now, &c, &err), CACHE_REMEMBERED);
    assert_int_equal(err, EIO);
    /* c was not linked: the next fetch returns only its own waiters. */
    at(w, ERROR_TTL * SEC);
    assert_int_equal(cache_need(w->c, v, &w->now, &a, &err), CACHE_FETCH);
    struct flight_waiter *want_a[] = {&a};
    assert_int_equal(complete_at(w, v, 0, 10, 'x', w->now.wall, 1, &ws), 0);
    assert_int_equal(count_waiters(ws, want_a, 1), 1);
    assert_int_equal(cache_need(w->c, v, &w->now, &c, &err), CACHE_HAVE);
    check_bytes(v, 10, 'x');
    cache_version_unref(v);
    world_free(w);
}

/* Finality is decided at completion from the signing time (vpath_is_final: final iff
 * end < signed_at - settle_s); a final version is never fetched again while cached, a
 * live one is fresh for live_ttl_s on the monotonic clock, not one ms more. */
static void test_final_vs_live(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t end;       /* the key's end, relative to T0 */
        int64_t signed_at; /* relative to T0 */
        int final;
    } rows[] = {
        {"settled 1 ms ago", -SETTLE * SEC - 1, 0, 1},
        {"settles now", -SETTLE * SEC, 0, 0},
        {"ends now", 0, 0, 0},
        {"future", 3600 * SEC, 0, 0},
        /* The signing time decides, not the wall clock passed in. */
        {"signed a day later", 0, 24 * 3600 * SEC, 1},
        {"signed earlier than wall", -SETTLE * SEC - 1, -1, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct world *w = world_new(10000);
        int hit;
        struct cache_version *v = get(w, "w", T0 + rows[i].end, &hit);
        assert_int_equal(cache_need(w->c, v, &w->now, NULL, &hit), CACHE_FETCH);
        struct flight_waiter *ws;
        assert_int_equal(complete_at(w, v, 0, 10, 'f', T0 + rows[i].signed_at, 1, &ws), 0);
        if (cache_version_final(v) != rows[i].final)
            fail_msg("%s: final %d", rows[i].name, cache_version_final(v));
        assert_int_equal(cache_version_fetched_at(v), T0 + rows[i].signed_at);

        if (rows[i].final) {
            /* Never stale: a month later (both clocks) still the same version. */
            at(w, 30 * 24 * 3600 * SEC);
            struct cache_version *v2 = get(w, "w", T0 + rows[i].end, &hit);
            assert_int_equal(hit, 1);
            assert_ptr_equal(v2, v);
            cache_version_unref(v2);
        } else {
            at(w, LIVE_TTL * SEC - 1);
            assert_int_equal(probe(w, "w", T0 + rows[i].end), 1);
            at(w, LIVE_TTL * SEC);
            struct cache_version *v2 = get(w, "w", T0 + rows[i].end, &hit);
            assert_int_equal(hit, 0);
            assert_true(cache_version_id(v2) > cache_version_id(v));
            assert_int_equal(cache_version_state(v2), CACHE_PENDING);
            /* Decided again at each fetch: signed a day later, the range has settled. */
            at(w, 24 * 3600 * SEC);
            assert_int_equal(fetch(w, v2, 0, 10, 'g'), 0);
            assert_int_equal(cache_version_final(v2), 1);
            cache_version_unref(v2);
        }
        cache_version_unref(v);
        world_free(w);
    }
}

/* A stale live version makes way for a new pending version; the old one stays counted
 * (kept for stale-if-error) until the refresh is ready, then leaves: referenced, it goes
 * to the dropped list and its bytes are pinned. */
static void test_live_expiry_makes_new_version(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    uint64_t k = key_cost("w");
    int hit;

    struct cache_version *v1 = get(w, "w", T0, &hit);
    assert_int_equal(fetch(w, v1, 0, 100, 'a'), 0);

    at(w, LIVE_TTL * SEC);
    struct cache_version *v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_true(cache_version_id(v2) > cache_version_id(v1));
    assert_int_equal(cache_version_state(v2), CACHE_PENDING);
    check_bytes(v1, 100, 'a');
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, 100 + k);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.keys, 1);

    /* Pending: every lookup gets the same new version. */
    struct cache_version *again = get(w, "w", T0, &hit);
    assert_ptr_equal(again, v2);
    cache_version_unref(again);

    assert_int_equal(fetch(w, v2, 0, 150, 'b'), 0);
    check_bytes(v2, 150, 'b');
    assert_int_equal(cache_version_fetched_at(v2), T0 + LIVE_TTL * SEC);
    check_bytes(v1, 100, 'a');
    assert_int_equal(cache_version_fetched_at(v1), T0);

    s = stats(w);
    assert_int_equal(s.bytes, 150 + k);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.pinned_bytes, 100);
    assert_int_equal(s.evictions, 0); /* replaced, not evicted for max_bytes */
    uint64_t ids[4];
    int n;
    take_all_dropped(w, ids, 4, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], cache_version_id(v1));
    assert_int_equal(stats(w).pinned_bytes, 100); /* still held by the test */
    cache_version_unref(v1);
    assert_int_equal(stats(w).pinned_bytes, 0);

    struct cache_version *v3 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 1);
    assert_ptr_equal(v3, v2);
    cache_version_unref(v3);
    cache_version_unref(v2);

    /* Unreferenced, a replaced version is simply freed: nothing dropped. */
    at(w, 2 * LIVE_TTL * SEC);
    assert_int_equal(fetch_key(w, "w", T0, 0, 100, 'c'), 0);
    take_all_dropped(w, ids, 4, &n);
    assert_int_equal(n, 0);
    assert_int_equal(stats(w).pinned_bytes, 0);
    world_free(w);
}

/* --- the byte bound ----------------------------------------------------------------- */

static void test_lru_eviction_order(void **state)
{
    (void)state;
    uint64_t k = key_cost("A");
    struct world *w = world_new(3 * (100 + (int64_t)k));

    assert_int_equal(fetch_key(w, "A", T0, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(fetch_key(w, "C", T0, 0, 100, 'C'), 0);
    assert_int_equal(stats(w).bytes, 3 * (100 + k));
    /* Use A: least recently used is now B, then C, then A. */
    assert_int_equal(probe(w, "A", T0), 1);

    assert_int_equal(fetch_key(w, "D", T0, 0, 100, 'D'), 0);
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 3 * (100 + k));
    assert_int_equal(s.entries, 3);
    assert_int_equal(s.keys, 3);
    /* Order now C, A, D; probing in that order keeps it. */
    assert_int_equal(probe(w, "C", T0), 1);
    assert_int_equal(probe(w, "A", T0), 1);
    assert_int_equal(probe(w, "D", T0), 1);

    /* B was the one evicted: fetching it again evicts C. */
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(w->fetches, 5);
    s = stats(w);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.bytes, 3 * (100 + k));
    assert_int_equal(probe(w, "A", T0), 1);
    assert_int_equal(probe(w, "D", T0), 1);
    assert_int_equal(probe(w, "B", T0), 1);
    /* Nobody held the evicted versions: nothing dropped, nothing pinned. */
    int n;
    take_all_dropped(w, NULL, 0, &n);
    assert_int_equal(n, 0);
    assert_int_equal(stats(w).pinned_bytes, 0);
    assert_int_equal(probe(w, "C", T0), 0); /* gone: a new pending key (evicts A) */
    assert_int_equal(probe(w, "D", T0), 1);
    assert_int_equal(probe(w, "B", T0), 1);
    assert_int_equal(probe(w, "A", T0), 0);
    world_free(w);
}

/* A version evicted while referenced stays readable, its bytes pinned (outside the
 * bound), and comes out of cache_take_dropped once; pending ones too (no bytes). */
static void test_evict_while_referenced(void **state)
{
    (void)state;
    uint64_t k = key_cost("A");
    struct world *w = world_new(2 * (100 + (int64_t)k));
    int hit, n;
    uint64_t ids[8];

    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(fetch(w, a, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);

    assert_int_equal(fetch_key(w, "C", T0, 0, 100, 'C'), 0); /* evicts A, still held */
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 2 * (100 + k));
    assert_int_equal(s.pinned_bytes, 100);
    assert_int_equal(s.entries, 2);
    check_bytes(a, 100, 'A');
    assert_int_equal(cache_version_state(a), CACHE_READY);
    take_all_dropped(w, ids, 8, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], cache_version_id(a));
    take_all_dropped(w, ids, 8, &n); /* handed out once */
    assert_int_equal(n, 0);
    assert_int_equal(stats(w).pinned_bytes, 100);
    cache_version_unref(a);
    assert_int_equal(stats(w).pinned_bytes, 0);

    /* A held pending version evicted: dropped too, nothing pinned. */
    struct cache_version *p = get(w, "P", T0, &hit); /* evicts B: C, P */
    /* D's key evicts C; its body of 300 (more than 200 bytes of room left) evicts P. */
    assert_int_equal(fetch_key(w, "D", T0, 0, 300, 'D'), 0);
    take_all_dropped(w, ids, 8, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], cache_version_id(p));
    assert_int_equal(cache_version_state(p), CACHE_PENDING);
    assert_int_equal(stats(w).pinned_bytes, 0);
    assert_int_equal(stats(w).keys, 1);
    /* The evicted version is out of the cache: its key gets a new version. */
    struct cache_version *p2 = get(w, "P", T0, &hit);
    assert_int_not_equal(cache_version_id(p2), cache_version_id(p));
    /* And it can still be fetched, outside the cache: pinned, not counted. */
    uint64_t before = stats(w).bytes;
    assert_int_equal(fetch(w, p, 0, 50, 'p'), 0);
    check_bytes(p, 50, 'p');
    assert_int_equal(stats(w).bytes, before);
    assert_int_equal(stats(w).pinned_bytes, 50);
    cache_version_unref(p);
    assert_int_equal(stats(w).pinned_bytes, 0);
    cache_version_unref(p2);
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
    world_free(w);

    /* A reservation evicts keys to make room, least recently used first, only as many
     * as needed; and a reservation counts when keys are added. */
    uint64_t k = key_cost("A");
    int64_t max = 1000 + 2 * (int64_t)k;
    w = world_new(max);
    assert_int_equal(fetch_key(w, "A", T0, 0, 400, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 400, 'B'), 0);
    assert_int_equal(cache_reserve(w->c, 300), 0);
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 700 + k);
    assert_int_equal(probe(w, "B", T0), 1);
    /* Nothing is evicted for a reservation that cannot fit anyway. */
    assert_int_equal(cache_reserve(w->c, (size_t)(max - 300 + 1)), -ENOMEM);
    assert_int_equal(stats(w).evictions, 1);
    assert_int_equal(stats(w).bytes, 700 + k);
    /* With the reservation outstanding, a body of 400 more evicts B. */
    assert_int_equal(fetch_key(w, "C", T0, 0, 400, 'C'), 0);
    s = stats(w);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.bytes, 300 + 400 + k);
    assert_true(s.bytes <= (uint64_t)max);
    cache_release(w->c, 300);
    assert_int_equal(stats(w).bytes, 400 + k);
    world_free(w);
}

/* cache_charge counts the caller's records in the bound and evicts least recently used
 * keys for them; cache_uncharge gives the room back. */
static void test_charge(void **state)
{
    (void)state;
    uint64_t k = key_cost("A");
    struct world *w = world_new(3 * (100 + (int64_t)k));
    assert_int_equal(fetch_key(w, "A", T0, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(fetch_key(w, "C", T0, 0, 100, 'C'), 0);
    assert_int_equal(probe(w, "A", T0), 1); /* LRU: B, C, A */

    cache_charge(w->c, 50);
    struct cache_stats s = stats(w);
    assert_int_equal(s.keys, 2);
    assert_int_equal(s.evictions, 1);
    assert_int_equal(s.bytes, 2 * (100 + k) + 50);
    assert_int_equal(probe(w, "C", T0), 1);
    assert_int_equal(probe(w, "A", T0), 1); /* LRU: C, A */

    cache_charge(w->c, 100 + k); /* exactly one more key's room: C goes */
    s = stats(w);
    assert_int_equal(s.keys, 1);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.bytes, 2 * (100 + k) + 50);
    assert_int_equal(probe(w, "A", T0), 1);

    cache_uncharge(w->c, 100 + k + 50);
    assert_int_equal(stats(w).bytes, 100 + k);
    cache_uncharge(w->c, 1000); /* more than charged: clamped */
    assert_int_equal(stats(w).bytes, 100 + k);
    world_free(w);
}

/* When the caller's records (or bodies in flight) alone exceed max_bytes, the bound
 * cannot be met: every key not being fetched must go, and new keys must not pile up.
 * cache_charge, cache_get of new keys and cache_set_params all take their records
 * anyway, so they must evict what they can rather than nothing. */
static void test_bound_exceeded_evicts_all_idle(void **state)
{
    (void)state;
    enum { NEW_KEYS = 100 };
    uint64_t k = key_cost("A");
    int64_t max = 4 * (100 + (int64_t)k);
    char name[16];

    /* cache_charge beyond the bound. */
    struct world *w = world_new(max);
    assert_int_equal(fetch_key(w, "A", T0, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    cache_charge(w->c, (size_t)max + 1);
    struct cache_stats s = stats(w);
    if (s.keys != 0) {
        world_free(w); /* the failure below leaks nothing */
        fail_msg("charge beyond max_bytes: %llu idle keys kept, %llu bytes > %lld",
                 (unsigned long long)s.keys, (unsigned long long)s.bytes, (long long)max);
    }
    assert_int_equal(s.entries, 0);
    /* New keys: each evicts the one before. */
    for (int i = 0; i < NEW_KEYS; i++) {
        snprintf(name, sizeof name, "%c", 'a' + i % 26);
        struct cache_key key = key_of(name, T0 + i);
        struct cache_version *v = cache_get(w->c, &key, &w->now, NULL, NULL);
        assert_non_null(v);
        cache_version_unref(v);
        s = stats(w);
        if (s.keys > 1) {
            world_free(w);
            fail_msg("over the bound, %llu idle keys piled up", (unsigned long long)s.keys);
        }
    }
    cache_uncharge(w->c, (size_t)max + 1);
    assert_int_equal(stats(w).bytes, k);
    world_free(w);

    /* A smaller max_bytes while a reservation exceeds it. */
    w = world_new(max);
    assert_int_equal(fetch_key(w, "A", T0, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(cache_reserve(w->c, 200), 0);
    struct cache_params p = params(150);
    cache_set_params(w->c, &p);
    s = stats(w);
    if (s.keys != 0) {
        world_free(w);
        fail_msg("max_bytes 150 under a reservation of 200: %llu idle keys kept",
                 (unsigned long long)s.keys);
    }
    assert_int_equal(s.bytes, 200);
    assert_int_equal(s.evictions, 2);
    cache_release(w->c, 200);
    world_free(w);
}

/* 300,000 distinct keys through cache_get with max_bytes 1 MiB: the bound holds, the key
 * count stays within max_bytes / (a key's cost), and that cost covers at least the
 * records a pending key really allocates. Then cache_sweep drops them once idle. */
static void test_many_keys_bounded(void **state)
{
    (void)state;
    enum { N = 300000 };
    const int64_t max = 1 << 20;
    struct world *w = world_new(max);
    char name[32];
    snprintf(name, sizeof name, "w%07d", 0);
    uint64_t k = key_cost(name);
    struct cache_key probe_key = key_of(name, T0);
    uint64_t real = sizeof(struct cache_entry) + sizeof(struct cache_version) +
                    2 * cache_key_names_len(&probe_key);
    assert_true(k >= real);
    uint64_t bound = (uint64_t)max / k;
    int hit;

    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "w%07d", i);
        struct cache_key key = key_of(name, T0);
        struct cache_version *v = cache_get(w->c, &key, &w->now, &hit, NULL);
        assert_non_null(v);
        if (hit != 0 || cache_version_id(v) != (uint64_t)i + 1)
            fail_msg("key %d: hit %d id %llu", i, hit, (unsigned long long)cache_version_id(v));
        cache_version_unref(v);
        if (i % 1000 == 999) {
            struct cache_stats s = stats(w);
            if (s.bytes > (uint64_t)max || s.keys > bound)
                fail_msg("after %d keys: %llu bytes, %llu keys (bound %llu)", i + 1,
                         (unsigned long long)s.bytes, (unsigned long long)s.keys,
                         (unsigned long long)bound);
        }
    }
    struct cache_stats s = stats(w);
    assert_true(s.bytes <= (uint64_t)max);
    assert_true(s.keys <= bound);
    assert_true(s.keys >= bound - 1); /* and the room is used */
    assert_int_equal(s.bytes, s.keys * k);
    assert_int_equal(s.misses, N);
    assert_int_equal(s.evictions, 0); /* no key had bytes */
    /* The most recent keys are the ones kept. */
    snprintf(name, sizeof name, "w%07d", N - 1);
    struct cache_key last = key_of(name, T0);
    struct cache_version *v = cache_get(w->c, &last, &w->now, &hit, NULL);
    assert_int_equal(cache_version_id(v), N);
    cache_version_unref(v);

    /* Idle pending keys go after CACHE_IDLE_MS, not one ms before. */
    cache_sweep(w->c, w->now.mono + CACHE_IDLE_MS - 1);
    assert_int_equal(stats(w).keys, s.keys);
    cache_sweep(w->c, w->now.mono + CACHE_IDLE_MS);
    s = stats(w);
    assert_int_equal(s.keys, 0);
    assert_int_equal(s.bytes, 0);
    world_free(w);
}

/* cache_sweep drops pending and failed keys idle for CACHE_IDLE_MS; it keeps ready keys,
 * keys being fetched, remembered failures and keys looked up since. */
static void test_sweep(void **state)
{
    (void)state;
    struct cache_params p = params(1 << 20);
    p.error_ttl_s = 30; /* longer than the idle limit */
    struct world *w = world_new_p(&p);
    int hit, n;
    uint64_t ids[8];

    struct cache_version *held = get(w, "held", T0, &hit); /* pending, referenced */
    assert_int_equal(probe(w, "pend", T0), 0);             /* pending */
    assert_int_equal(fetch_key(w, "ready", T0, 0, 10, 'r'), 0);
    assert_int_equal(fetch_key(w, "fail", T0, -EIO, 0, 0), -EIO); /* remembered 30 s */
    struct cache_version *fast = get(w, "fast", T0, &hit);
    assert_int_equal(cache_need(w->c, fast, &w->now, NULL, &n), CACHE_FETCH);
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, fast, -EIO, 0, 0, w->now.wall, 0, &ws), -EIO); /* not */
    cache_version_unref(fast);
    struct cache_version *busy = get(w, "busy", T0, &hit);
    assert_int_equal(cache_need(w->c, busy, &w->now, NULL, &n), CACHE_FETCH);
    adv(w, 5 * SEC);
    assert_int_equal(probe(w, "recent", T0), 0);
    assert_int_equal(stats(w).keys, 7);

    cache_sweep(w->c, w->now.mono + CACHE_IDLE_MS - 5 * SEC); /* = first lookups + idle */
    struct cache_stats s = stats(w);
    assert_int_equal(s.keys, 4); /* ready, fail, busy, recent */
    take_all_dropped(w, ids, 8, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], cache_version_id(held));
    cache_version_unref(held);
    assert_int_equal(probe(w, "ready", T0), 1);

    /* Once the failure is forgotten, it goes too; "recent" is idle by now. */
    at(w, 30 * SEC);
    cache_sweep(w->c, w->now.mono);
    s = stats(w);
    assert_int_equal(s.keys, 2); /* ready and busy */
    struct flight_waiter *none;
    assert_int_equal(complete_at(w, busy, 0, 10, 'b', w->now.wall, 1, &none), 0);
    assert_null(none);
    cache_version_unref(busy);
    /* Ready keys are never swept. */
    cache_sweep(w->c, w->now.mono + 3600 * SEC);
    assert_int_equal(stats(w).keys, 2);
    world_free(w);
}

/* --- failures ----------------------------------------------------------------------- */

static void test_remembered_error(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    uint64_t k = key_cost("w");
    int hit, err = 0;

    struct cache_version *v = get(w, "w", T0, &hit);
    uint64_t id = cache_version_id(v);
    assert_int_equal(fetch(w, v, -ENOENT, 0, 0), -ENOENT);
    assert_int_equal(cache_version_state(v), CACHE_FAILED);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_REMEMBERED);
    assert_int_equal(err, ENOENT);
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, k);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.keys, 1);

    /* Lookups get the failed version (a miss) and the errno without a fetch, for
     * error_ttl_s on the monotonic clock. */
    at(w, ERROR_TTL * SEC - 1);
    struct cache_version *v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_ptr_equal(v2, v);
    err = 0;
    assert_int_equal(cache_need(w->c, v2, &w->now, NULL, &err), CACHE_REMEMBERED);
    assert_int_equal(err, ENOENT);
    cache_version_unref(v2);

    /* Then fetched again in place: the same version. */
    at(w, ERROR_TTL * SEC);
    v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_ptr_equal(v2, v);
    cache_version_unref(v2);
    assert_int_equal(fetch(w, v, -EIO, 0, 0), -EIO); /* no previous version: the errno */

    at(w, 2 * ERROR_TTL * SEC);
    assert_int_equal(fetch(w, v, 0, 100, 'x'), 0);
    assert_int_equal(w->fetches, 3);
    assert_int_equal(cache_version_id(v), id);
    assert_int_equal(cache_version_state(v), CACHE_READY);
    check_bytes(v, 100, 'x');
    s = stats(w);
    assert_int_equal(s.bytes, 100 + k);
    assert_int_equal(s.entries, 1);
    assert_int_equal(probe(w, "w", T0), 1);
    cache_version_unref(v);
    world_free(w);
}

/* remember = 0 (the circuit breaker's fast-fail): the waiters get the errno, nothing is
 * remembered, the next asker fetches at once. */
static void test_fast_fail_not_remembered(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    int hit, err;
    struct flight_waiter a;
    struct flight_waiter *want[] = {&a};
    struct cache_version *v = get(w, "w", T0, &hit);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH);
    assert_int_equal(cache_need(w->c, v, &w->now, &a, &err), CACHE_WAIT);
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, v, -EIO, 0, 0, w->now.wall, 0, &ws), -EIO);
    assert_int_equal(count_waiters(ws, want, 1), 1);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH);
    assert_int_equal(complete_at(w, v, -EAGAIN, 0, 0, w->now.wall, 0, &ws), -EAGAIN);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH);
    assert_int_equal(complete_at(w, v, 0, 5, 'z', w->now.wall, 0, &ws), 0);
    check_bytes(v, 5, 'z');
    cache_version_unref(v);
    world_free(w);
}

/* v1 ready at 0 ('a' x 100), then a refresh pending at refresh_at; returns it. */
static struct cache_version *stale_setup(struct world *w, int64_t refresh_at,
                                         struct cache_version **v1)
{
    int hit;
    *v1 = get(w, "w", T0, &hit);
    assert_int_equal(fetch(w, *v1, 0, 100, 'a'), 0);
    at(w, refresh_at);
    struct cache_version *v2 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_int_equal(cache_version_state(v2), CACHE_PENDING);
    return v2;
}

/* A refresh failing with EAGAIN, ETIMEDOUT or EIO inside the stale window serves the
 * previous bytes (one warn line), to its waiters and, while the failure is remembered,
 * to lookups (hits); the window does not stretch. */
static void test_stale_if_error(void **state)
{
    (void)state;
    static const int errs[] = {EAGAIN, ETIMEDOUT, EIO};
    uint64_t k = key_cost("w");
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        struct world *w = world_new(10000);
        struct cache_version *v1;
        int hit, err, n;
        uint64_t ids[4];
        int64_t t1 = (LIVE_TTL + 1) * SEC;
        struct cache_version *v2 = stale_setup(w, t1, &v1);

        struct flight_waiter a;
        struct flight_waiter *want[] = {&a};
        assert_int_equal(cache_need(w->c, v2, &w->now, &a, &err), CACHE_FETCH);
        struct capture cap;
        capture_begin(&cap);
        struct flight_waiter *ws;
        int rc = complete_at(w, v2, -errs[i], 0, 0, w->now.wall, 1, &ws);
        char *log = capture_end(&cap);
        assert_int_equal(rc, 0);
        assert_int_equal(count_waiters(ws, want, 1), 1);
        assert_int_equal(count_lines(log, "insightfs: warn: "), 1);
        assert_non_null(strstr(log, "stale"));
        free(log);

        assert_int_equal(cache_version_state(v2), CACHE_READY);
        check_bytes(v2, 100, 'a');
        size_t l1, l2;
        assert_ptr_equal(cache_version_data(v2, &l2), cache_version_data(v1, &l1));
        assert_int_equal(cache_version_fetched_at(v2), T0);
        assert_int_equal(cache_version_final(v2), 0);
        /* One shared buffer, counted once, not pinned. */
        struct cache_stats s = stats(w);
        assert_int_equal(s.bytes, 100 + k);
        assert_int_equal(s.entries, 1);
        assert_int_equal(s.pinned_bytes, 0);
        take_all_dropped(w, ids, 4, &n);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], cache_version_id(v1));
        cache_version_unref(v1);
        assert_int_equal(stats(w).pinned_bytes, 0);

        /* While the failure is remembered, lookups hit the stale version. */
        at(w, t1 + ERROR_TTL * SEC - 1);
        struct cache_version *v = get(w, "w", T0, &hit);
        assert_int_equal(hit, 1);
        assert_ptr_equal(v, v2);
        assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_HAVE);
        cache_version_unref(v);
        assert_int_equal(w->fetches, 2);

        /* Then a new refresh; failing again inside the window serves stale again. */
        int64_t t2 = t1 + ERROR_TTL * SEC;
        at(w, t2);
        struct cache_version *v3 = get(w, "w", T0, &hit);
        assert_int_equal(hit, 0);
        assert_true(cache_version_id(v3) > cache_version_id(v2));
        capture_begin(&cap);
        rc = fetch(w, v3, -errs[i], 0, 0);
        log = capture_end(&cap);
        assert_int_equal(rc, 0);
        assert_int_equal(count_lines(log, "insightfs: warn: "), 1);
        free(log);
        check_bytes(v3, 100, 'a');
        assert_int_equal(cache_version_fetched_at(v3), T0);
        assert_int_equal(stats(w).bytes, 100 + k);
        cache_version_unref(v2);

        /* A remembered failure does not stretch the window: past it, a new version, and
         * the old bytes leave the cache (v3 still readable: pinned, dropped). */
        int64_t window_end = (LIVE_TTL + STALE) * SEC;
        at(w, window_end);
        struct cache_version *v4 = get(w, "w", T0, &hit);
        assert_int_equal(hit, 0);
        s = stats(w);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.bytes, k);
        assert_int_equal(s.pinned_bytes, 100);
        take_all_dropped(w, ids, 4, &n);
        assert_int_equal(n, 2); /* v2 (replaced by v3) and v3 */
        assert_true(has_id(ids, n, cache_version_id(v3)));
        assert_int_equal(fetch(w, v4, -errs[i], 0, 0), -errs[i]);
        assert_int_equal(cache_version_state(v4), CACHE_FAILED);
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
    uint64_t k = key_cost("w");
    struct cache_version *v1;
    int64_t window_end = (LIVE_TTL + STALE) * SEC;
    struct cache_version *v2 = stale_setup(w, window_end - 1, &v1);
    cache_version_unref(v1);
    assert_int_equal(stats(w).bytes, 100 + k); /* kept while the window is open */

    at(w, window_end);
    int err;
    assert_int_equal(cache_need(w->c, v2, &w->now, NULL, &err), CACHE_FETCH);
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, v2, -ETIMEDOUT, 0, 0, w->now.wall, 1, &ws), -ETIMEDOUT);
    assert_int_equal(cache_version_state(v2), CACHE_FAILED);
    struct cache_stats s = stats(w);
    assert_int_equal(s.bytes, k);
    assert_int_equal(s.entries, 0);
    cache_version_unref(v2);
    world_free(w);
}

/* A refresh that fails 5 s before the stale window ends is served stale, and its EIO is
 * remembered for error_ttl_s (10 s), past the window's end: a lookup 1 s after the
 * window gets a new version that still carries the failure (no new fetch) until it ends. */
static void test_failure_outlives_stale_window(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    struct cache_version *v1;
    int hit, err = 0;
    int64_t window_end = (LIVE_TTL + STALE) * SEC;
    struct cache_version *v2 = stale_setup(w, window_end - 5 * SEC, &v1);
    assert_int_equal(fetch(w, v2, -EIO, 0, 0), 0); /* served stale */
    assert_int_equal(cache_version_state(v2), CACHE_READY);

    at(w, window_end + 1 * SEC);
    struct cache_version *v3 = get(w, "w", T0, &hit);
    assert_int_equal(hit, 0);
    assert_true(v3 != v2);
    assert_int_equal(cache_need(w->c, v3, &w->now, NULL, &err), CACHE_REMEMBERED);
    assert_int_equal(err, EIO);
    assert_int_equal(w->fetches, 2);

    at(w, window_end - 5 * SEC + ERROR_TTL * SEC); /* the failure's own end */
    err = 0;
    assert_int_equal(cache_need(w->c, v3, &w->now, NULL, &err), CACHE_FETCH);
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, v3, 0, 100, 'b', w->now.wall, 1, &ws), 0);
    check_bytes(v3, 100, 'b');
    cache_version_unref(v3);
    cache_version_unref(v2);
    cache_version_unref(v1);
    world_free(w);
}

/* EACCES, ENOENT, EINVAL: the previous version is dropped, not served. */
static void test_refresh_denied_drops_previous(void **state)
{
    (void)state;
    static const int errs[] = {EACCES, ENOENT, EINVAL};
    uint64_t k = key_cost("w");
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        struct world *w = world_new(10000);
        struct cache_version *v1;
        int hit, n;
        uint64_t ids[4];
        int64_t t1 = (LIVE_TTL + 1) * SEC;
        struct cache_version *v2 = stale_setup(w, t1, &v1);

        assert_int_equal(fetch(w, v2, -errs[i], 0, 0), -errs[i]);
        assert_int_equal(cache_version_state(v2), CACHE_FAILED);
        struct cache_stats s = stats(w);
        assert_int_equal(s.bytes, k);
        assert_int_equal(s.entries, 0);
        assert_int_equal(s.pinned_bytes, 100); /* v1, held by the test */
        take_all_dropped(w, ids, 4, &n);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], cache_version_id(v1));
        check_bytes(v1, 100, 'a');
        cache_version_unref(v1);
        assert_int_equal(stats(w).pinned_bytes, 0);

        struct cache_version *v = get(w, "w", T0, &hit);
        assert_int_equal(hit, 0);
        assert_ptr_equal(v, v2);
        cache_version_unref(v);

        /* With the old version gone, a later EIO is an error, not stale bytes. */
        at(w, t1 + ERROR_TTL * SEC);
        assert_int_equal(fetch(w, v2, -EIO, 0, 0), -EIO);
        cache_version_unref(v2);
        world_free(w);
    }
}

static void test_forget_errors(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    assert_int_equal(fetch_key(w, "A", T0, -EACCES, 0, 0), -EACCES);
    assert_int_equal(fetch_key(w, "N", T0, -ENOENT, 0, 0), -ENOENT);
    assert_int_equal(fetch_key(w, "A", T0, 0, 0, 0), -EACCES); /* remembered */
    assert_int_equal(w->fetches, 2);

    cache_forget_errors(w->c, EACCES);
    assert_int_equal(fetch_key(w, "N", T0, 0, 100, 'n'), -ENOENT); /* still remembered */
    assert_int_equal(w->fetches, 2);
    assert_int_equal(fetch_key(w, "A", T0, 0, 100, 'a'), 0); /* fetched again */
    assert_int_equal(w->fetches, 3);
    world_free(w);
}

/* --- clocks and valid_ms ------------------------------------------------------------ */

/* A jump of the gateway wall clock (+-600 s, mono unchanged) moves neither the end of a
 * remembered failure nor a live version's freshness: both follow mono. */
static void test_wall_jump(void **state)
{
    (void)state;
    static const int64_t jumps[] = {600 * SEC, -600 * SEC};
    int64_t end = T0 + 3600 * SEC; /* live whatever the jump */
    for (size_t i = 0; i < sizeof jumps / sizeof jumps[0]; i++) {
        struct world *w = world_new(10000);
        int err;
        assert_int_equal(fetch_key(w, "L", end, 0, 10, 'l'), 0);
        assert_int_equal(fetch_key(w, "E", end, -EIO, 0, 0), -EIO);
        w->now.wall += jumps[i];

        w->now.mono = M0 + ERROR_TTL * SEC - 1;
        assert_int_equal(fetch_key(w, "E", end, 0, 10, 'e'), -EIO); /* still remembered */
        assert_int_equal(probe(w, "L", end), 1);
        w->now.mono = M0 + ERROR_TTL * SEC;
        assert_int_equal(fetch_key(w, "E", end, 0, 10, 'e'), 0); /* expired */

        w->now.mono = M0 + LIVE_TTL * SEC - 1;
        assert_int_equal(probe(w, "L", end), 1);
        int hit;
        struct cache_version *v = get(w, "L", end, &hit);
        assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_HAVE);
        cache_version_unref(v);
        w->now.mono = M0 + LIVE_TTL * SEC;
        assert_int_equal(probe(w, "L", end), 0);
        assert_int_equal(w->fetches, 3);
        world_free(w);
    }
}

/* valid_ms: a hit is valid until it stops being fresh (INT64_MAX when final) or, served
 * stale, until the failure or the window ends; a miss is live_ttl_s for a range live if
 * fetched now, else INT64_MAX. */
static void test_valid_ms(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t end;    /* key's end, relative to T0 */
        int fetched;    /* ready before the lookup */
        int64_t ask_at; /* ms after the fetch at 0 */
        int hit;
        int64_t valid;
    } rows[] = {
        {"miss, live range", 0, 0, 0, 0, LIVE_TTL * SEC},
        {"miss, future range", 3600 * SEC, 0, 0, 0, LIVE_TTL * SEC},
        {"miss, settles now", -SETTLE * SEC, 0, 0, 0, LIVE_TTL * SEC},
        {"miss, final range", -SETTLE * SEC - 1, 0, 0, 0, INT64_MAX},
        {"hit live, at once", 0, 1, 0, 1, LIVE_TTL * SEC},
        {"hit live, 1.5 s on", 0, 1, 1500, 1, LIVE_TTL * SEC - 1500},
        {"hit live, last ms", 0, 1, LIVE_TTL * SEC - 1, 1, 1},
        {"stale live: a miss", 0, 1, LIVE_TTL * SEC, 0, LIVE_TTL * SEC},
        {"stale, range now final: a miss", -SETTLE * SEC + 1, 1, LIVE_TTL * SEC, 0, INT64_MAX},
        {"hit final", -SETTLE * SEC - 1, 1, 1000, 1, INT64_MAX},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        struct world *w = world_new(10000);
        if (rows[i].fetched)
            assert_int_equal(fetch_key(w, "v", T0 + rows[i].end, 0, 10, 'v'), 0);
        at(w, rows[i].ask_at);
        struct cache_key key = key_of("v", T0 + rows[i].end);
        int hit = -1;
        int64_t valid = -1;
        struct cache_version *v = cache_get(w->c, &key, &w->now, &hit, &valid);
        assert_non_null(v);
        if (hit != rows[i].hit || valid != rows[i].valid)
            fail_msg("%s: hit %d valid %lld, want %d %lld", rows[i].name, hit, (long long)valid,
                     rows[i].hit, (long long)rows[i].valid);
        cache_version_unref(v);
        /* valid_ms may be NULL. */
        v = cache_get(w->c, &key, &w->now, NULL, NULL);
        assert_non_null(v);
        cache_version_unref(v);
        world_free(w);
    }

    /* Served stale: until the remembered failure ends, or the window if sooner. */
    static const struct {
        const char *name;
        int64_t refresh_at;
        int64_t valid;
    } stale[] = {
        {"failure ends first", (LIVE_TTL + 1) * SEC, ERROR_TTL * SEC},
        {"window ends first", (LIVE_TTL + STALE - 3) * SEC, 3 * SEC},
    };
    for (size_t i = 0; i < sizeof stale / sizeof stale[0]; i++) {
        struct world *w = world_new(10000);
        struct cache_version *v1;
        struct cache_version *v2 = stale_setup(w, stale[i].refresh_at, &v1);
        struct capture cap;
        capture_begin(&cap);
        int rc = fetch(w, v2, -ETIMEDOUT, 0, 0);
        free(capture_end(&cap));
        assert_int_equal(rc, 0);
        struct cache_key key = key_of("w", T0);
        int hit = -1;
        int64_t valid = -1;
        adv(w, 1);
        struct cache_version *v = cache_get(w->c, &key, &w->now, &hit, &valid);
        if (hit != 1 || v != v2 || valid != stale[i].valid - 1)
            fail_msg("%s: hit %d valid %lld", stale[i].name, hit, (long long)valid);
        cache_version_unref(v);
        cache_version_unref(v1);
        cache_version_unref(v2);
        world_free(w);
    }
}

/* cache_get_ahead: the version a fetch would fill (a new reference), NULL for a fresh
 * key; counts nothing and does not mark the key used. */
static void test_get_ahead(void **state)
{
    (void)state;
    uint64_t k = key_cost("A");
    struct world *w = world_new(3 * (100 + (int64_t)k));
    int err;

    struct cache_key a = key_of("A", T0);
    struct cache_version *v = cache_get_ahead(w->c, &a, &w->now);
    assert_non_null(v);
    assert_int_equal(cache_version_state(v), CACHE_PENDING);
    struct cache_version *v2 = cache_get_ahead(w->c, &a, &w->now);
    assert_ptr_equal(v2, v);
    cache_version_unref(v2);
    struct cache_stats s = stats(w);
    assert_int_equal(s.hits, 0);
    assert_int_equal(s.misses, 0);
    assert_int_equal(s.keys, 1);
    /* Readahead starts the fetch without waiting. */
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH);
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, v, 0, 100, 'A', w->now.wall, 1, &ws), 0);
    assert_null(ws);
    cache_version_unref(v);
    assert_null(cache_get_ahead(w->c, &a, &w->now)); /* fresh */
    assert_int_equal(stats(w).hits, 0);
    assert_int_equal(stats(w).misses, 0);

    /* Not marked used: A, then B and C looked up; A fetched ahead, yet first to go. */
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(fetch_key(w, "C", T0, 0, 100, 'C'), 0);
    assert_null(cache_get_ahead(w->c, &a, &w->now));
    assert_int_equal(fetch_key(w, "D", T0, 0, 100, 'D'), 0);
    assert_int_equal(probe(w, "B", T0), 1);
    assert_int_equal(probe(w, "A", T0), 0); /* A was evicted (this probe evicts C) */

    /* A stale live key: the new pending version, the old one kept meanwhile. */
    at(w, LIVE_TTL * SEC);
    struct cache_key b = key_of("B", T0);
    v = cache_get_ahead(w->c, &b, &w->now);
    assert_non_null(v);
    assert_int_equal(cache_version_state(v), CACHE_PENDING);
    assert_int_equal(stats(w).entries, 2); /* B's old bytes and D's */
    cache_version_unref(v);

    /* A remembered failure: the failed version (a fetch would fill it later). */
    assert_int_equal(fetch_key(w, "F", T0 + 1, -EIO, 0, 0), -EIO);
    struct cache_key f = key_of("F", T0 + 1);
    v = cache_get_ahead(w->c, &f, &w->now);
    assert_non_null(v);
    assert_int_equal(cache_version_state(v), CACHE_FAILED);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_REMEMBERED);
    cache_version_unref(v);
    world_free(w);
}

/* --- params, clear, free ------------------------------------------------------------ */

static void test_set_params(void **state)
{
    (void)state;
    uint64_t k = key_cost("A");
    struct world *w = world_new(10000);
    assert_int_equal(fetch_key(w, "A", T0, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(fetch_key(w, "C", T0, 0, 100, 'C'), 0);
    struct cache_params p = params(150 + (int64_t)k);
    p.live_ttl_s = 1000;
    cache_set_params(w->c, &p);
    struct cache_stats s = stats(w);
    assert_int_equal(s.evictions, 2);
    assert_int_equal(s.bytes, 100 + k);
    assert_int_equal(s.max_bytes, 150 + k);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.keys, 1);
    /* The new live TTL applies from the next lookup. */
    at(w, 500 * SEC);
    assert_int_equal(probe(w, "C", T0), 1);
    assert_int_equal(probe(w, "A", T0), 0);
    world_free(w);
}

/* cache_clear with a fetch in flight: every key goes (counters and reservations stay);
 * the fetch still completes, outside the cache: its waiters get the result, its bytes
 * are pinned, and the key's next lookup is a new version. */
static void test_clear_with_fetch_in_flight(void **state)
{
    (void)state;
    struct world *w = world_new(10000);
    int hit, err, n;
    uint64_t ids[8];

    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(fetch(w, a, 0, 100, 'A'), 0);
    assert_int_equal(fetch_key(w, "B", T0, 0, 100, 'B'), 0);
    assert_int_equal(probe(w, "B", T0), 1);
    struct cache_version *c = get(w, "C", T0, &hit);
    struct flight_waiter w1, w2;
    struct flight_waiter *want[] = {&w1, &w2};
    assert_int_equal(cache_need(w->c, c, &w->now, &w1, &err), CACHE_FETCH);
    assert_int_equal(cache_need(w->c, c, &w->now, &w2, &err), CACHE_WAIT);
    assert_int_equal(cache_reserve(w->c, 100), 0); /* the body being received */

    cache_clear(w->c);
    struct cache_stats s = stats(w);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.keys, 0);
    assert_int_equal(s.bytes, 100);        /* the reservation */
    assert_int_equal(s.pinned_bytes, 100); /* a, held */
    assert_int_equal(s.hits, 1);           /* counters survive */
    take_all_dropped(w, ids, 8, &n);
    assert_int_equal(n, 2);
    assert_true(has_id(ids, n, cache_version_id(a)));
    assert_true(has_id(ids, n, cache_version_id(c)));
    check_bytes(a, 100, 'A');
    assert_int_equal(probe(w, "B", T0), 0);

    /* The fetch completes outside the cache (its reservation taken over). */
    unsigned char *data = malloc(100);
    assert_non_null(data);
    memset(data, 'C', 100);
    int result = 1;
    struct flight_waiter *ws =
        cache_complete(w->c, c, 0, data, 100, w->now.wall, &w->now, 1, &result);
    assert_int_equal(result, 0);
    assert_int_equal(count_waiters(ws, want, 2), 2);
    check_bytes(c, 100, 'C');
    s = stats(w);
    assert_int_equal(s.pinned_bytes, 200);
    assert_int_equal(s.bytes, key_cost("B")); /* only B's new pending key */
    struct cache_version *c2 = get(w, "C", T0, &hit);
    assert_int_equal(hit, 0);
    assert_true(cache_version_id(c2) > cache_version_id(c));
    cache_version_unref(c2);
    cache_version_unref(a);
    cache_version_unref(c);
    assert_int_equal(stats(w).pinned_bytes, 0);
    world_free(w);
}

/* cache_free with versions still referenced: they live on, readable; versions on the
 * dropped list not taken are released (ASan / valgrind check the leak). */
static void test_free_with_live_references(void **state)
{
    (void)state;
    uint64_t k = key_cost("A");
    struct world *w = world_new(100 + (int64_t)k);
    int hit;
    struct cache_version *a = get(w, "A", T0, &hit);
    assert_int_equal(fetch(w, a, 0, 100, 'A'), 0);
    struct cache_version *p = get(w, "P", T0, &hit); /* evicts A: dropped, not taken */
    assert_int_equal(stats(w).pinned_bytes, 100);
    assert_int_equal(fetch_key(w, "Q", T0, 0, 10, 'q'), 0); /* evicts P: dropped too */
    cache_free(w->c);
    w->c = NULL;
    check_bytes(a, 100, 'A');
    assert_int_equal(cache_version_state(p), CACHE_PENDING);
    cache_version_unref(a);
    cache_version_unref(p);
    cache_version_unref(NULL);
    cache_free(NULL);
    free(w);
}

/* --- threads ------------------------------------------------------------------------ */

#define NTHREADS 16

struct lab {
    pthread_mutex_t m;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast on every change */
    int go, asked, timed_out;
};

/* A waiter with its answer; first in whatever waits, so the waiter is the record. */
struct slot {
    struct flight_waiter w;
    int answered, result; /* protected by lab->m */
};

struct asker {
    struct slot slot; /* first */
    struct lab *lab;
    struct world *world;
    const char *widget;
    int rc; /* the fetch's rc if this asker gets the ticket */
    enum cache_need need;
    int n_returned; /* protected by lab->m */
    const unsigned char *data;
    size_t len;
    pthread_t t;
};

static void lab_init(struct lab *lab)
{
    memset(lab, 0, sizeof *lab);
    pthread_mutex_init(&lab->m, NULL);
    cond_init_mono(&lab->cv);
}

static void lab_cleanup(struct lab *lab)
{
    pthread_cond_destroy(&lab->cv);
    pthread_mutex_destroy(&lab->m);
}

/* lab->m held: wait for *v >= want, with the deadline; a timeout is recorded. */
static void lab_wait(struct lab *lab, const int *v, int want)
{
    struct timespec until = deadline();
    while (*v < want)
        if (pthread_cond_timedwait(&lab->cv, &lab->m, &until) != 0) {
            lab->timed_out = 1;
            return;
        }
}

/* lab->m held: answer every waiter of list with result. Returns how many. */
static int answer(struct lab *lab, struct flight_waiter *list, int result)
{
    int n = 0;
    while (list) {
        struct flight_waiter *next = list->next;
        struct slot *x = (struct slot *)list;
        x->answered++;
        x->result = result;
        n++;
        list = next;
    }
    pthread_cond_broadcast(&lab->cv);
    return n;
}

static void *asker_main(void *arg)
{
    struct asker *a = arg;
    struct lab *lab = a->lab;
    struct cache *c = a->world->c;
    struct cache_clock now = a->world->now;
    pthread_mutex_lock(&lab->m);
    lab_wait(lab, &lab->go, 1);
    pthread_mutex_unlock(&lab->m);

    struct cache_key key = key_of(a->widget, T0);
    int hit, err = 0;
    struct cache_version *v = cache_get(c, &key, &now, &hit, NULL);
    a->need = cache_need(c, v, &now, &a->slot.w, &err);
    pthread_mutex_lock(&lab->m);
    lab->asked++;
    pthread_cond_broadcast(&lab->cv);
    if (a->need == CACHE_FETCH) {
        /* Fetch once every asker has asked. */
        lab_wait(lab, &lab->asked, NTHREADS);
        pthread_mutex_unlock(&lab->m);
        unsigned char *data = NULL;
        size_t len = 0;
        if (a->rc == 0 && cache_reserve(c, 4096) == 0) {
            data = malloc(4096);
            memset(data, 'S', 4096);
            len = 4096;
        }
        int result = 1;
        struct flight_waiter *ws = cache_complete(c, v, data ? 0 : (a->rc ? a->rc : -EIO), data,
                                                  len, now.wall, &now, 1, &result);
        pthread_mutex_lock(&lab->m);
        a->n_returned = answer(lab, ws, result);
    } else if (a->need == CACHE_WAIT) {
        lab_wait(lab, &a->slot.answered, 1);
    }
    pthread_mutex_unlock(&lab->m);
    a->data = cache_version_data(v, &a->len);
    cache_version_unref(v);
    return NULL;
}

/* NTHREADS askers of one key, each with a waiter: exactly one CACHE_FETCH, the rest
 * CACHE_WAIT, and cache_complete hands back exactly those NTHREADS waiters (the ticket
 * holder's too), all with the one result. */
static void run_askers(struct world *w, const char *widget, int rc, int want)
{
    struct lab lab;
    struct asker a[NTHREADS];
    lab_init(&lab);
    memset(a, 0, sizeof a);
    for (int i = 0; i < NTHREADS; i++) {
        a[i].lab = &lab;
        a[i].world = w;
        a[i].widget = widget;
        a[i].rc = rc;
        assert_int_equal(pthread_create(&a[i].t, NULL, asker_main, &a[i]), 0);
    }
    pthread_mutex_lock(&lab.m);
    lab.go = 1;
    pthread_cond_broadcast(&lab.cv);
    pthread_mutex_unlock(&lab.m);
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_join(a[i].t, NULL), 0);
    assert_int_equal(lab.timed_out, 0);
    int fetch_n = 0, wait_n = 0, returned = 0;
    for (int i = 0; i < NTHREADS; i++) {
        fetch_n += a[i].need == CACHE_FETCH;
        wait_n += a[i].need == CACHE_WAIT;
        returned += a[i].n_returned;
        assert_int_equal(a[i].slot.answered, 1);
        assert_int_equal(a[i].slot.result, want);
        assert_ptr_equal(a[i].data, a[0].data);
        assert_int_equal(a[i].len, want == 0 ? 4096 : 0);
    }
    assert_int_equal(fetch_n, 1);
    assert_int_equal(wait_n, NTHREADS - 1);
    assert_int_equal(returned, NTHREADS);
    lab_cleanup(&lab);
}

static void test_single_flight(void **state)
{
    (void)state;
    struct cache_params p = params(1 << 20);
    p.error_ttl_s = 0; /* nothing remembered: the waiters still share the one result */
    struct world *w = world_new_p(&p);
    int hit, err;

    run_askers(w, "ok", 0, 0);
    struct cache_version *v = get(w, "ok", T0, &hit);
    assert_int_equal(hit, 1);
    check_bytes(v, 4096, 'S');
    cache_version_unref(v);

    run_askers(w, "bad", -EIO, -EIO);
    v = get(w, "bad", T0, &hit);
    assert_int_equal(cache_version_state(v), CACHE_FAILED);
    assert_int_equal(cache_need(w->c, v, &w->now, NULL, &err), CACHE_FETCH); /* not kept */
    struct flight_waiter *ws;
    assert_int_equal(complete_at(w, v, -EIO, 0, 0, w->now.wall, 1, &ws), -EIO);
    cache_version_unref(v);
    world_free(w);
}

/* Many threads, few keys, a small bound, a moving clock, failing fetches, readahead,
 * sweeps and charges: answers stay consistent (each key's bytes are its own), every
 * waiter is answered, and the bound holds. For TSan. */
struct stress {
    struct world *w;
    struct lab *lab;
    _Atomic int64_t *mono;
    int id;
    int bad;
    int resolved;
};

static void *stress_main(void *arg)
{
    struct stress *s = arg;
    struct cache *c = s->w->c;
    struct lab *lab = s->lab;
    static const char *const widgets[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    unsigned seed = (unsigned)s->id * 7919u + 1;
    struct slot me;
    for (int i = 0; i < 2000 && !s->bad; i++) {
        const char *wid = widgets[rand_r(&seed) % 8];
        struct cache_key key = key_of(wid, T0);
        struct cache_clock now = {atomic_load(s->mono), T0};
        int hit, err = 0, result = 0;
        int ahead = rand_r(&seed) % 8 == 0;
        struct cache_version *v =
            ahead ? cache_get_ahead(c, &key, &now) : cache_get(c, &key, &now, &hit, NULL);
        if (!v) {
            if (!ahead)
                s->bad = 1;
            continue;
        }
        pthread_mutex_lock(&lab->m);
        me.answered = 0;
        pthread_mutex_unlock(&lab->m);
        switch (cache_need(c, v, &now, ahead ? NULL : &me.w, &err)) {
        case CACHE_HAVE:
            break;
        case CACHE_REMEMBERED:
            result = -err;
            break;
        case CACHE_FETCH: {
            int rc = rand_r(&seed) % 3 == 0 ? -EIO : 0;
            unsigned char *data = NULL;
            if (rc == 0 && cache_reserve(c, 100) != 0)
                rc = -EIO; /* as the real fetcher: no room, EIO */
            if (rc == 0) {
                data = malloc(100);
                memset(data, wid[0], 100);
            }
            struct flight_waiter *ws =
                cache_complete(c, v, rc, data, rc ? 0 : 100, T0, &now, rand_r(&seed) % 2, &result);
            pthread_mutex_lock(&lab->m);
            answer(lab, ws, result);
            if (!ahead)
                result = me.result;
            pthread_mutex_unlock(&lab->m);
            break;
        }
        case CACHE_WAIT:
            if (!ahead) {
                pthread_mutex_lock(&lab->m);
                lab_wait(lab, &me.answered, 1);
                result = me.result;
                pthread_mutex_unlock(&lab->m);
            }
            break;
        }
        if (!ahead && result == 0) {
            size_t len;
            const unsigned char *d = cache_version_data(v, &len);
            if (!d || len != 100 || d[0] != (unsigned char)wid[0] || d[99] != (unsigned char)wid[0])
                s->bad = 1;
            s->resolved++;
        } else if (!ahead && result != -EIO) {
            s->bad = 1;
        }
        cache_version_unref(v);
        switch (rand_r(&seed) % 32) {
        case 0:
            atomic_fetch_add(s->mono, 7 * SEC);
            break;
        case 1: {
            struct cache_version *d = cache_take_dropped(c);
            while (d) {
                struct cache_version *next = cache_dropped_next(d);
                cache_version_unref(d);
                d = next;
            }
            break;
        }
        case 2:
            cache_sweep(c, atomic_load(s->mono));
            break;
        case 3:
            cache_charge(c, 50);
            cache_uncharge(c, 50);
            break;
        }
    }
    return NULL;
}

static void test_concurrent_stress(void **state)
{
    (void)state;
    enum { NT = 8 };
    uint64_t k = key_cost("a");
    struct world *w = world_new(4 * (100 + (int64_t)k));
    struct lab lab;
    lab_init(&lab);
    _Atomic int64_t mono = M0;
    struct stress s[NT];
    pthread_t th[NT];

    /* Stale answers log a warn line each: expected here. (Not captured: a sanitizer's
     * report must reach stderr.) */
    log_set_level(LOG_LVL_ERROR);
    for (int i = 0; i < NT; i++) {
        s[i] = (struct stress){w, &lab, &mono, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, stress_main, &s[i]), 0);
    }
    for (int i = 0; i < NT; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    log_set_level(LOG_LVL_WARN);
    for (int i = 0; i < NT; i++) {
        assert_int_equal(s[i].bad, 0);
        assert_true(s[i].resolved > 0);
    }
    assert_int_equal(lab.timed_out, 0);
    struct cache_stats st = stats(w);
    assert_true(st.bytes <= st.max_bytes);
    assert_true(st.evictions > 0);
    int n;
    take_all_dropped(w, NULL, 0, &n);
    assert_int_equal(stats(w).pinned_bytes, 0);
    cache_clear(w->c);
    take_all_dropped(w, NULL, 0, &n);
    st = stats(w);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.pinned_bytes, 0);
    lab_cleanup(&lab);
    world_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_and_ready_bytes),
        cmocka_unit_test(test_need_states),
        cmocka_unit_test(test_final_vs_live),
        cmocka_unit_test(test_live_expiry_makes_new_version),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_evict_while_referenced),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_charge),
        cmocka_unit_test(test_bound_exceeded_evicts_all_idle),
        cmocka_unit_test(test_many_keys_bounded),
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_remembered_error),
        cmocka_unit_test(test_fast_fail_not_remembered),
        cmocka_unit_test(test_stale_if_error),
        cmocka_unit_test(test_stale_window_checked_at_failure),
        cmocka_unit_test(test_failure_outlives_stale_window),
        cmocka_unit_test(test_refresh_denied_drops_previous),
        cmocka_unit_test(test_forget_errors),
        cmocka_unit_test(test_wall_jump),
        cmocka_unit_test(test_valid_ms),
        cmocka_unit_test(test_get_ahead),
        cmocka_unit_test(test_set_params),
        cmocka_unit_test(test_clear_with_fetch_in_flight),
        cmocka_unit_test(test_free_with_live_references),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_concurrent_stress),
    };
    log_init(0, LOG_LVL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
