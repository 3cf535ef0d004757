/* Unit tests for disc: the discovered lists against the scripted loopback server of
 * testsrv.h (real api, http and sign underneath; no network beyond 127.0.0.1). Exact
 * upstream request counts for: discover = false, freshness within discover_ttl_s, a
 * stale list refreshed, failure memory for error_ttl_s, the last good list after a
 * failure, per-dashboard widget lists, disc_forget, and single flight with real threads.
 * The cfg is built by hand (only the fields disc, api and ns read). */
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

#include <cmocka.h>

#include "insightfs/http.h"
#include "insightfs/log.h"
#include "testsrv.h"

#define DASH_TARGET "/cw_fea/real/cw/api/chart/dashboard"
#define DASHES "[{\"id\":\"d1\",\"name\":\"ignored\"},{\"id\":\"d2\",\"name\":\"db\"}]"

struct fx {
    struct srv *s;
    struct api *api;
    struct disc *d;
    struct cfg cfg;
    struct cfg_dashboard dash;
    struct cfg_widget widget;
    char endpoint[64];
};

/* A configured dashboard "web" (d1) with widget "cpu" (w1); discover on, ttl 300 s,
 * failures remembered 60 s, no retries. */
static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->s = srv_start(NULL);
    snprintf(f->endpoint, sizeof(f->endpoint), "http://127.0.0.1:%d", f->s->port);
    f->cfg.endpoint = f->endpoint;
    f->cfg.access_key = "AKIDEXAMPLEKEY0WXYZ";
    f->cfg.secret_key = "test-secret";
    f->cfg.timeout_ms = 5000;
    f->cfg.connect_timeout_ms = 1000;
    f->cfg.retries = 0;
    f->cfg.max_connections = 16;
    f->cfg.max_image_bytes = 1 << 20;
    f->cfg.error_ttl_s = 60;
    f->cfg.discover = true;
    f->cfg.discover_ttl_s = 300;
    f->widget = (struct cfg_widget){"cpu", "w1"};
    f->dash = (struct cfg_dashboard){"web", "d1", &f->widget, 1};
    f->cfg.dashboards = &f->dash;
    f->cfg.n_dashboards = 1;
    char *err = NULL;
    f->api = api_new(&f->cfg, 0, &err);
    if (!f->api)
        fail_msg("api_new: %s", err);
    f->d = disc_new();
    assert_non_null(f->d);
    return f;
}

static void fx_free(struct fx *f)
{
    disc_free(f->d);
    api_free(f->api);
    srv_stop(f->s);
    free(f);
}

static struct srv_reply json(const char *body)
{
    return srv_http("200 OK", "Content-Type: application/json\r\n", body, strlen(body), true);
}

static struct srv_reply http_500(void)
{
    return srv_http("500 Internal Server Error", "", "", 0, true);
}

static int refresh(struct fx *f, const char *dash_id, int *changed)
{
    return disc_refresh(f->d, f->api, &f->cfg, dash_id, changed);
}

/* One refresh: its result, whether it stored a list, the server's request count after. */
static void expect(struct fx *f, const char *dash_id, int rc, int changed, int requests)
{
    int got = -1;
    assert_int_equal(refresh(f, dash_id, &got), rc);
    assert_int_equal(got, changed);
    assert_int_equal(srv_requests(f->s), requests);
}

/* The dashboard names of a tree built now, joined by ',' (static buffer). */
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

static void check_target(struct fx *f, int i, const char *want)
{
    char *head = srv_request(f->s, i);
    assert_non_null(head);
    char *target = srv_target(head);
    assert_string_equal(target, want);
    free(target);
    free(head);
}

static void test_discover_off(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    f->cfg.discover = false;
    expect(f, NULL, 0, 0, 0);
    expect(f, "d1", 0, 0, 0);
    assert_string_equal(dash_names(f), "web");
    fx_free(f);
}

static void test_fresh_then_stale(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    srv_push(f->s, json(DASHES));
    srv_push(f->s, json("[{\"id\":\"d3\",\"name\":\"net\"}]"));
    expect(f, NULL, 0, 1, 1);
    check_target(f, 0, DASH_TARGET);
    /* Configured first and winning by id, then the discovered ones in API order. */
    assert_string_equal(dash_names(f), "web,db");
    /* Fresh: no request, nothing changed. */
    expect(f, NULL, 0, 0, 1);
    /* Stale (ttl 0): asked again, replaced. */
    f->cfg.discover_ttl_s = 0;
    expect(f, NULL, 0, 1, 2);
    assert_string_equal(dash_names(f), "web,net");
    fx_free(f);
}

static void test_failure_memory(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    srv_push(f->s, http_500());
    srv_push(f->s, http_500());
    /* No list yet: the refresh's errno (SPEC 6: 5xx -> EIO), never ENOENT. */
    expect(f, NULL, -EIO, 0, 1);
    /* Remembered for error_ttl_s: the same errno, no request. */
    expect(f, NULL, -EIO, 0, 1);
    assert_string_equal(dash_names(f), "web");
    /* Not remembered (error_ttl_s 0): asked again. */
    f->cfg.error_ttl_s = 0;
    expect(f, NULL, -EIO, 0, 2);
    fx_free(f);
}

static void test_last_good(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    srv_push(f->s, json(DASHES));
    srv_push(f->s, http_500());
    expect(f, NULL, 0, 1, 1);
    f->cfg.discover_ttl_s = 0;
    /* The refresh fails: the last good list stays in use. */
    expect(f, NULL, 0, 0, 2);
    assert_string_equal(dash_names(f), "web,db");
    /* And the failure is remembered: no request within error_ttl_s. */
    expect(f, NULL, 0, 0, 2);
    fx_free(f);
}

static void test_widget_lists(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    srv_push(f->s,
             json("[{\"widgetId\":\"w1\",\"name\":\"x\"},{\"widgetId\":9,\"name\":\"cpu\"}]"));
    srv_push(f->s, json(DASHES));
    expect(f, "d1", 0, 1, 1);
    check_target(f, 0, DASH_TARGET "/d1/widgets");
    /* Another list: its own freshness, its own request. */
    expect(f, NULL, 0, 1, 2);
    expect(f, "d1", 0, 0, 2);
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
    fx_free(f);
}

static void test_forget(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    srv_push(f->s, json(DASHES));
    srv_push(f->s, http_500());
    srv_push(f->s, json("[{\"id\":\"d4\",\"name\":\"other\"}]"));
    expect(f, NULL, 0, 1, 1);
    disc_forget(f->d);
    assert_string_equal(dash_names(f), "web");
    /* Forgotten, though within discover_ttl_s: asked again. */
    expect(f, NULL, -EIO, 0, 2);
    /* The failure memory goes too. */
    disc_forget(f->d);
    assert_int_equal(refresh(f, NULL, NULL), 0); /* changed may be NULL */
    assert_int_equal(srv_requests(f->s), 3);
    assert_string_equal(dash_names(f), "web,other");
    fx_free(f);
}

#define N_THREADS 8

struct racer {
    struct fx *f;
    pthread_t t;
    int rc, changed;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    r->rc = refresh(r->f, NULL, &r->changed);
    return NULL;
}

/* While one refresh waits for a slow answer, the other callers wait for it instead of
 * asking again: one request, every caller gets the list, one of them stored it. */
static void test_single_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct srv_reply slow = json(DASHES);
    slow.split = 0;
    slow.delay_ms = 1000;
    srv_push(f->s, slow);
    struct racer r[N_THREADS];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < N_THREADS; i++) {
        r[i].f = f;
        assert_int_equal(pthread_create(&r[i].t, NULL, racer_main, &r[i]), 0);
        /* The first refresh is in flight before the others start. */
        if (i == 0)
            assert_int_equal(srv_wait_requests(f->s, 1, 5000), 1);
    }
    int stored = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(r[i].t, NULL);
        assert_int_equal(r[i].rc, 0);
        stored += r[i].changed;
    }
    assert_int_equal(stored, 1);
    assert_int_equal(r[0].changed, 1);
    assert_int_equal(srv_requests(f->s), 1);
    assert_string_equal(dash_names(f), "web,db");
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
        cmocka_unit_test(test_discover_off),   cmocka_unit_test(test_fresh_then_stale),
        cmocka_unit_test(test_failure_memory), cmocka_unit_test(test_last_good),
        cmocka_unit_test(test_widget_lists),   cmocka_unit_test(test_forget),
        cmocka_unit_test(test_single_flight),  cmocka_unit_test(test_free_null),
    };
    log_init(0, LOG_LVL_ERROR); /* failed calls log a warn line each: expected here */
    if (http_global_init() != 0)
        return 1;
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    http_global_cleanup();
    return rc;
}
