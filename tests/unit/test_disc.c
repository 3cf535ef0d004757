/* test_disc - the contract of include/insightfs/disc.h: disc_need hands out the ticket,
 * the test plays the ticket holder (it "asks the API" by handing in api_item arrays it
 * built with malloc/strdup, which disc_complete takes over) and the clock (CLOCK_MONOTONIC
 * ms chosen by the test). Covered: discover = false (nothing asked, nothing held merged),
 * freshness within discover_ttl_s, a stale list refreshed and merged into the tree,
 * failure memory for error_ttl_s, the
 * last good list after a failure, DISC_FAILED without one, per-dashboard widget lists,
 * disc_forget (also with a refresh in flight), the generation, and single flight with
 * real threads: 8 callers, one fetch, every waiter handed back with the one result, also
 * at error_ttl_s = 0. The cfg is built by hand (only the fields disc and ns read).
 */
#include "insightfs/disc.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "insightfs/log.h"

#define NOW 5000000LL /* CLOCK_MONOTONIC ms where each test starts */
#define TTL_S 300
#define ERR_S 60
#define WAIT_MS 10000 /* how long a thread waits for another before failing */

struct fx {
    struct disc *d;
    struct cfg cfg;
    struct cfg_dashboard dash;
    struct cfg_widget widget;
};

/* A configured dashboard "web" (d1) with widget "cpu" (w1); discover on, ttl 300 s,
 * failures remembered 60 s. */
static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->cfg.error_ttl_s = ERR_S;
    f->cfg.discover = true;
    f->cfg.discover_ttl_s = TTL_S;
    f->widget = (struct cfg_widget){"cpu", "w1"};
    f->dash = (struct cfg_dashboard){"web", "d1", &f->widget, 1};
    f->cfg.dashboards = &f->dash;
    f->cfg.n_dashboards = 1;
    f->d = disc_new();
    assert_non_null(f->d);
    return f;
}

static void fx_free(struct fx *f)
{
    disc_free(f->d);
    free(f);
}

static int64_t remember_ms(const struct fx *f)
{
    return (int64_t)f->cfg.error_ttl_s * 1000;
}

/* An api_item array from id, name pairs ending with NULL, allocated as api.c does. */
static struct api_item *items_of(size_t *n, ...)
{
    va_list ap;
    size_t count = 0;
    va_start(ap, n);
    while (va_arg(ap, const char *))
        count++;
    va_end(ap);
    assert_int_equal(count % 2, 0);
    *n = count / 2;
    struct api_item *it = calloc(*n ? *n : 1, sizeof(*it));
    assert_non_null(it);
    va_start(ap, n);
    for (size_t i = 0; i < *n; i++) {
        it[i].id = strdup(va_arg(ap, const char *));
        it[i].name = strdup(va_arg(ap, const char *));
        assert_true(it[i].id && it[i].name);
    }
    va_end(ap);
    return it;
}

/* What disc_need says for dash_id at now (no waiter); *err gets the errno. */
static enum disc_need need(struct fx *f, const char *dash_id, int64_t now, int *err)
{
    uint64_t epoch = 0;
    *err = 0;
    enum disc_need r = disc_need(f->d, &f->cfg, dash_id, now, NULL, &epoch, err);
    if (r == DISC_FETCH) {
        /* Not expected by the caller: give the ticket back so the flight stays sane. */
        int result, changed;
        assert_null(disc_complete(f->d, dash_id, epoch, -EIO, NULL, 0, now, 0, &result, &changed));
    }
    return r;
}

/* One refresh as the ticket holder does it: disc_need must hand out the ticket; then
 * disc_complete with rc and items. Returns *result; *changed as disc_complete says. */
static int refresh(struct fx *f, const char *dash_id, int64_t now, int rc, struct api_item *items,
                   size_t n, int *changed)
{
    uint64_t epoch = 0;
    int err = 0, result = 1;
    assert_int_equal(disc_need(f->d, &f->cfg, dash_id, now, NULL, &epoch, &err), DISC_FETCH);
    *changed = -1;
    assert_null(
        disc_complete(f->d, dash_id, epoch, rc, items, n, now, remember_ms(f), &result, changed));
    return result;
}

/* The tree's dashboard names joined by ',' (static buffer). */
static const char *dash_names(struct fx *f)
{
    static char buf[256];
    struct ns_tree *t = disc_build_tree(f->d, &f->cfg, NULL);
    assert_non_null(t);
    buf[0] = '\0';
    for (size_t i = 0; i < t->n_dashboards; i++) {
        if (i)
            strcat(buf, ",");
        strcat(buf, t->dashboards[i].name);
    }
    ns_unref(t);
    return buf;
}

static struct api_item *dashes(size_t *n)
{
    return items_of(n, "d1", "ignored", "d2", "db", NULL);
}

static void test_discover_off(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    f->cfg.discover = false;
    uint64_t epoch = 77;
    int err = 77;
    struct flight_waiter w;
    assert_int_equal(disc_need(f->d, &f->cfg, NULL, NOW, &w, &epoch, &err), DISC_OK);
    assert_int_equal(disc_need(f->d, &f->cfg, "d1", NOW, &w, &epoch, &err), DISC_OK);
    assert_int_equal(epoch, 77);
    assert_int_equal(err, 77);
    assert_string_equal(dash_names(f), "web");
    assert_int_equal(disc_generation(f->d), 0);
    fx_free(f);
}

/* Lists stored while discovery was on never show in a tree built with it off (a reload
 * to discover = false, or a refresh that began before it and ended after). */
static void test_discover_off_merges_nothing_held(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int changed;
    size_t n;
    struct api_item *it = dashes(&n);
    assert_int_equal(refresh(f, NULL, NOW, 0, it, n, &changed), 0);
    it = items_of(&n, "w9", "disk", NULL);
    assert_int_equal(refresh(f, "d1", NOW, 0, it, n, &changed), 0);
    assert_string_equal(dash_names(f), "web,db");
    f->cfg.discover = false;
    assert_string_equal(dash_names(f), "web");
    uint64_t g = 0;
    struct ns_tree *t = disc_build_tree(f->d, &f->cfg, &g);
    assert_non_null(t);
    assert_int_equal(g, disc_generation(f->d));
    assert_int_equal(t->dashboards[0].n_widgets, 1); /* cpu only, not the discovered disk */
    ns_unref(t);
    f->cfg.discover = true; /* what is held is still there: disc_forget drops it */
    assert_string_equal(dash_names(f), "web,db");
    fx_free(f);
}

static void test_fresh_then_stale(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int changed, err;
    size_t n;
    uint64_t g0 = disc_generation(f->d), g;

    struct api_item *it = dashes(&n);
    assert_int_equal(refresh(f, NULL, NOW, 0, it, n, &changed), 0);
    assert_int_equal(changed, 1);
    assert_true(disc_generation(f->d) > g0);
    /* Configured first and winning by id, then the discovered ones in API order. */
    assert_string_equal(dash_names(f), "web,db");
    struct ns_tree *t = disc_build_tree(f->d, &f->cfg, &g);
    assert_non_null(t);
    assert_int_equal(g, disc_generation(f->d));
    ns_unref(t);

    /* Fresh until discover_ttl_s has passed on the monotonic clock, not one ms more. */
    g = disc_generation(f->d);
    assert_int_equal(need(f, NULL, NOW + TTL_S * 1000 - 1, &err), DISC_OK);
    assert_int_equal(disc_generation(f->d), g);
    it = items_of(&n, "d3", "net", NULL);
    assert_int_equal(refresh(f, NULL, NOW + TTL_S * 1000, 0, it, n, &changed), 0);
    assert_int_equal(changed, 1);
    assert_true(disc_generation(f->d) > g);
    assert_string_equal(dash_names(f), "web,net");
    /* Freshness counts from the new store. */
    assert_int_equal(need(f, NULL, NOW + 2 * TTL_S * 1000 - 1, &err), DISC_OK);

    /* An empty answer is a good answer too. */
    it = items_of(&n, NULL);
    assert_int_equal(refresh(f, NULL, NOW + 2 * TTL_S * 1000, 0, it, n, &changed), 0);
    assert_int_equal(changed, 1);
    assert_string_equal(dash_names(f), "web");
    fx_free(f);
}

/* No list: the refresh's errno, remembered for error_ttl_s (DISC_FAILED, no ticket),
 * then asked again; remember_ms 0 remembers nothing. */
static void test_failure_memory(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int changed, err;
    uint64_t g = disc_generation(f->d);

    assert_int_equal(refresh(f, NULL, NOW, -EIO, NULL, 0, &changed), -EIO);
    assert_int_equal(changed, 0);
    assert_int_equal(disc_generation(f->d), g); /* nothing stored */
    struct flight_waiter w;
    uint64_t epoch = 0;
    err = 0;
    assert_int_equal(disc_need(f->d, &f->cfg, NULL, NOW + ERR_S * 1000 - 1, &w, &epoch, &err),
                     DISC_FAILED);
    assert_int_equal(err, EIO);
    assert_string_equal(dash_names(f), "web");
    /* Other lists are not affected. */
    assert_int_equal(refresh(f, "d1", NOW, -EACCES, NULL, 0, &changed), -EACCES);
    assert_int_equal(need(f, "d1", NOW + 1, &err), DISC_FAILED);
    assert_int_equal(err, EACCES);

    /* Expired exactly at error_ttl_s: the ticket again. */
    f->cfg.error_ttl_s = 0;
    assert_int_equal(refresh(f, NULL, NOW + ERR_S * 1000, -ETIMEDOUT, NULL, 0, &changed),
                     -ETIMEDOUT);
    /* Not remembered (remember_ms 0): asked again at once. */
    assert_int_equal(refresh(f, NULL, NOW + ERR_S * 1000, -EIO, NULL, 0, &changed), -EIO);
    fx_free(f);
}

/* A failed refresh keeps the last good list in use (result 0, DISC_OK meanwhile). */
static void test_last_good(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int changed, err;
    size_t n;
    struct api_item *it = dashes(&n);
    assert_int_equal(refresh(f, NULL, NOW, 0, it, n, &changed), 0);
    uint64_t g = disc_generation(f->d);

    int64_t t1 = NOW + TTL_S * 1000;
    assert_int_equal(refresh(f, NULL, t1, -EIO, NULL, 0, &changed), 0);
    assert_int_equal(changed, 0);
    assert_int_equal(disc_generation(f->d), g);
    assert_string_equal(dash_names(f), "web,db");
    /* Remembered: no ticket within error_ttl_s, the last good list stands in. */
    assert_int_equal(need(f, NULL, t1 + ERR_S * 1000 - 1, &err), DISC_OK);
    /* Then asked again; a success replaces it. */
    it = items_of(&n, "d4", "other", NULL);
    assert_int_equal(refresh(f, NULL, t1 + ERR_S * 1000, 0, it, n, &changed), 0);
    assert_int_equal(changed, 1);
    assert_string_equal(dash_names(f), "web,other");
    fx_free(f);
}

/* Each dashboard's widget list is its own list, with its own freshness and flight. */
static void test_widget_lists(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int changed, err;
    size_t n;

    /* Two tickets at once: one per list. */
    uint64_t e1 = 0, e2 = 0;
    assert_int_equal(disc_need(f->d, &f->cfg, "d1", NOW, NULL, &e1, &err), DISC_FETCH);
    assert_int_equal(disc_need(f->d, &f->cfg, NULL, NOW, NULL, &e2, &err), DISC_FETCH);
    assert_int_equal(disc_need(f->d, &f->cfg, "d1", NOW, NULL, &e1, &err), DISC_WAIT);
    int result = 1;
    struct api_item *it = items_of(&n, "w1", "x", "9", "cpu", NULL);
    assert_null(disc_complete(f->d, "d1", e1, 0, it, n, NOW, 60000, &result, &changed));
    assert_int_equal(result, 0);
    assert_int_equal(changed, 1);
    assert_int_equal(need(f, "d1", NOW + 1, &err), DISC_OK);
    assert_int_equal(disc_need(f->d, &f->cfg, NULL, NOW, NULL, &e2, &err), DISC_WAIT);
    it = dashes(&n);
    assert_null(disc_complete(f->d, NULL, e2, 0, it, n, NOW, 60000, &result, &changed));
    assert_int_equal(result, 0);

    struct ns_tree *t = disc_build_tree(f->d, &f->cfg, NULL);
    assert_non_null(t);
    const struct ns_dashboard *web = ns_find_dashboard(t, "web");
    assert_non_null(web);
    /* Configured "cpu" (w1) wins by id; the discovered "cpu" (9) gets its id appended. */
    assert_int_equal(web->n_widgets, 2);
    assert_string_equal(web->widgets[0].name, "cpu");
    assert_string_equal(web->widgets[1].name, "cpu (9)");
    assert_string_equal(web->widgets[1].id, "9");
    ns_unref(t);

    /* A second dashboard's list does not disturb the first. */
    it = items_of(&n, "w7", "mem", NULL);
    assert_int_equal(refresh(f, "d2", NOW + 2, 0, it, n, &changed), 0);
    t = disc_build_tree(f->d, &f->cfg, NULL);
    assert_non_null(t);
    const struct ns_dashboard *db = ns_find_dashboard(t, "db");
    assert_non_null(db);
    assert_int_equal(db->n_widgets, 1);
    assert_string_equal(db->widgets[0].name, "mem");
    assert_int_equal(ns_find_dashboard(t, "web")->n_widgets, 2);
    ns_unref(t);
    fx_free(f);
}

static void test_forget(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int changed;
    size_t n;
    struct api_item *it = dashes(&n);
    assert_int_equal(refresh(f, NULL, NOW, 0, it, n, &changed), 0);
    uint64_t g = disc_generation(f->d);
    disc_forget(f->d);
    assert_true(disc_generation(f->d) > g);
    assert_string_equal(dash_names(f), "web");
    /* Forgotten, though within discover_ttl_s: the ticket again. */
    assert_int_equal(refresh(f, NULL, NOW + 1, -EIO, NULL, 0, &changed), -EIO);
    /* The failure memory goes too. */
    disc_forget(f->d);
    it = items_of(&n, "d4", "other", NULL);
    assert_int_equal(refresh(f, NULL, NOW + 2, 0, it, n, &changed), 0);
    assert_string_equal(dash_names(f), "web,other");
    fx_free(f);
}

/* A refresh in flight across disc_forget stores nothing, whatever it returns: its
 * waiters (also one that joined after the forget) get -EAGAIN (or its errno), the tree
 * stays empty of it, and nothing of it is remembered: the next caller gets the ticket. */
static void test_forget_with_refresh_in_flight(void **state)
{
    (void)state;
    static const int rcs[] = {0, -EIO, -EACCES};
    for (size_t i = 0; i < sizeof rcs / sizeof rcs[0]; i++) {
        struct fx *f = fx_new();
        int changed, err, result = 1;
        size_t n;
        struct api_item *it = dashes(&n);
        assert_int_equal(refresh(f, NULL, NOW, 0, it, n, &changed), 0);

        int64_t t1 = NOW + TTL_S * 1000;
        uint64_t epoch = 0;
        struct flight_waiter before, after;
        assert_int_equal(disc_need(f->d, &f->cfg, NULL, t1, NULL, &epoch, &err), DISC_FETCH);
        assert_int_equal(disc_need(f->d, &f->cfg, NULL, t1, &before, &epoch, &err), DISC_WAIT);
        disc_forget(f->d);
        uint64_t g = disc_generation(f->d);
        assert_int_equal(disc_need(f->d, &f->cfg, NULL, t1, &after, &epoch, &err), DISC_WAIT);

        it = rcs[i] == 0 ? items_of(&n, "d9", "old account", NULL) : NULL;
        struct flight_waiter *ws = disc_complete(f->d, NULL, epoch, rcs[i], it, rcs[i] == 0 ? n : 0,
                                                 t1, 60000, &result, &changed);
        int count = 0, saw_before = 0, saw_after = 0;
        for (struct flight_waiter *w = ws; w; w = w->next) {
            count++;
            saw_before += w == &before;
            saw_after += w == &after;
        }
        assert_int_equal(count, 2);
        assert_int_equal(saw_before, 1);
        assert_int_equal(saw_after, 1);
        assert_int_equal(result, rcs[i] == 0 ? -EAGAIN : rcs[i]);
        assert_int_equal(changed, 0);
        assert_int_equal(disc_generation(f->d), g);
        assert_string_equal(dash_names(f), "web");

        /* Nothing of the old account is remembered: the next caller fetches. */
        enum disc_need r = need(f, NULL, t1, &err);
        fx_free(f); /* before a failure: it leaks nothing */
        if (r != DISC_FETCH)
            fail_msg("rc %d: after the overtaken refresh disc_need gave %d (err %d), not "
                     "DISC_FETCH",
                     rcs[i], (int)r, err);
    }
}

/* --- single flight with real threads ------------------------------------------------ */

#define N_CALLERS 8

struct lab {
    pthread_mutex_t m;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast on every change */
    int go, asked;
    int n_returned, changed; /* by the ticket holder */
    int timed_out;
};

struct caller {
    struct flight_waiter w; /* first: the waiter is the caller */
    struct lab *lab;
    struct fx *f;
    int rc;               /* what the API "returns" if this caller holds the ticket */
    enum disc_need need;  /* what disc_need said */
    int answered, result; /* protected by lab->m */
    pthread_t t;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec deadline(void)
{
    const char *tfs = getenv("INSIGHTFS_TEST_TIME_FACTOR");
    long tf = tfs ? strtol(tfs, NULL, 10) : 1;
    int64_t ms = mono_ms() + WAIT_MS * (tf >= 1 && tf <= 1000 ? tf : 1);
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    return ts;
}

/* lab->m held: wait for *flag >= want until the deadline; a timeout is recorded. */
static void lab_wait(struct lab *lab, const int *flag, int want)
{
    struct timespec until = deadline();
    while (*flag < want)
        if (pthread_cond_timedwait(&lab->cv, &lab->m, &until) != 0) {
            lab->timed_out = 1;
            return;
        }
}

static void *caller_main(void *arg)
{
    struct caller *c = arg;
    struct lab *lab = c->lab;
    pthread_mutex_lock(&lab->m);
    lab_wait(lab, &lab->go, 1);
    pthread_mutex_unlock(&lab->m);

    uint64_t epoch = 0;
    int err = 0;
    c->need = disc_need(c->f->d, &c->f->cfg, NULL, NOW, &c->w, &epoch, &err);
    pthread_mutex_lock(&lab->m);
    lab->asked++;
    pthread_cond_broadcast(&lab->cv);
    if (c->need == DISC_FETCH) {
        /* The ticket holder "asks the API" once every caller has asked. */
        lab_wait(lab, &lab->asked, N_CALLERS);
        pthread_mutex_unlock(&lab->m);
        size_t n = 0;
        struct api_item *it = c->rc == 0 ? dashes(&n) : NULL;
        int result = 1, changed = 0;
        struct flight_waiter *ws =
            disc_complete(c->f->d, NULL, epoch, c->rc, it, n, NOW,
                          (int64_t)c->f->cfg.error_ttl_s * 1000, &result, &changed);
        pthread_mutex_lock(&lab->m);
        lab->changed = changed;
        while (ws) {
            struct flight_waiter *next = ws->next;
            struct caller *x = (struct caller *)ws;
            x->answered++;
            x->result = result;
            lab->n_returned++;
            ws = next;
        }
        pthread_cond_broadcast(&lab->cv);
    } else if (c->need == DISC_WAIT) {
        lab_wait(lab, &c->answered, 1);
    }
    pthread_mutex_unlock(&lab->m);
    return NULL;
}

/* 8 callers with waiters, error_ttl_s = 0: one DISC_FETCH, 7 DISC_WAIT, and the one
 * disc_complete hands back all 8 waiters (the holder's too) with the one result. The old
 * disc made 5 serial requests here (no memory at error_ttl_s 0 meant no sharing). */
static void run_callers(struct fx *f, int rc, int want_result)
{
    struct lab lab;
    struct caller c[N_CALLERS];
    memset(&lab, 0, sizeof lab);
    pthread_mutex_init(&lab.m, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&lab.cv, &a);
    pthread_condattr_destroy(&a);
    memset(c, 0, sizeof c);
    for (int i = 0; i < N_CALLERS; i++) {
        c[i].lab = &lab;
        c[i].f = f;
        c[i].rc = rc;
        assert_int_equal(pthread_create(&c[i].t, NULL, caller_main, &c[i]), 0);
    }
    pthread_mutex_lock(&lab.m);
    lab.go = 1;
    pthread_cond_broadcast(&lab.cv);
    pthread_mutex_unlock(&lab.m);
    for (int i = 0; i < N_CALLERS; i++)
        assert_int_equal(pthread_join(c[i].t, NULL), 0);

    assert_int_equal(lab.timed_out, 0);
    int fetch = 0, wait = 0;
    for (int i = 0; i < N_CALLERS; i++) {
        fetch += c[i].need == DISC_FETCH;
        wait += c[i].need == DISC_WAIT;
        assert_int_equal(c[i].answered, 1);
        assert_int_equal(c[i].result, want_result);
    }
    assert_int_equal(fetch, 1);
    assert_int_equal(wait, N_CALLERS - 1);
    assert_int_equal(lab.n_returned, N_CALLERS);
    assert_int_equal(lab.changed, rc == 0);
    pthread_cond_destroy(&lab.cv);
    pthread_mutex_destroy(&lab.m);
}

static void test_single_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int err;
    f->cfg.error_ttl_s = 0;
    /* A failure shared by all 8, and (error_ttl_s 0) not remembered afterwards. */
    run_callers(f, -EIO, -EIO);
    assert_string_equal(dash_names(f), "web");
    assert_int_equal(need(f, NULL, NOW, &err), DISC_FETCH);
    /* A success shared by all 8, stored once. */
    run_callers(f, 0, 0);
    assert_string_equal(dash_names(f), "web,db");
    assert_int_equal(need(f, NULL, NOW, &err), DISC_OK);
    fx_free(f);
}

static void test_free_null(void **state)
{
    (void)state;
    disc_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_discover_off),
        cmocka_unit_test(test_discover_off_merges_nothing_held),
        cmocka_unit_test(test_fresh_then_stale),
        cmocka_unit_test(test_failure_memory),
        cmocka_unit_test(test_last_good),
        cmocka_unit_test(test_widget_lists),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_forget_with_refresh_in_flight),
        cmocka_unit_test(test_single_flight),
        cmocka_unit_test(test_free_null),
    };
    log_init(0, LOG_LVL_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
