/* test_flight - the contract of include/insightfs/flight.h, exactly.
 *
 * flight reads no clock and takes no lock, so every case is a plain sequence of calls
 * with "now" chosen by the test. Waiter lists are checked as sets (the order is not part
 * of the contract) and for exact membership: every joined waiter once, nothing else.
 */
#include "insightfs/flight.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define NOW 1000000LL /* an arbitrary CLOCK_MONOTONIC ms */

/* The list returned by flight_end holds exactly the n waiters of want (any order), each
 * once, and is NULL-terminated. */
static void check_list(struct flight_waiter *list, struct flight_waiter **want, size_t n)
{
    int seen[64] = {0};
    size_t count = 0;
    assert_true(n <= 64);
    for (struct flight_waiter *w = list; w; w = w->next) {
        size_t i = 0;
        while (i < n && want[i] != w)
            i++;
        if (i == n)
            fail_msg("waiter %p was never joined", (void *)w);
        if (seen[i]++)
            fail_msg("waiter %zu returned twice", i);
        if (++count > n)
            fail_msg("the list is longer than %zu", n);
    }
    assert_int_equal(count, n);
}

static void test_fetch_then_wait(void **state)
{
    (void)state;
    struct flight f;
    memset(&f, 0, sizeof f);
    struct flight_waiter w[5];
    struct flight_waiter *want[5];
    int err = -1;

    assert_int_equal(flight_idle(&f), 1);
    /* The first asker gets the ticket; without a waiter nothing is linked. */
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
    assert_int_equal(err, -1); /* untouched */
    assert_int_equal(f.running, 1);
    assert_int_equal(flight_idle(&f), 0);
    /* Later askers wait; with a NULL waiter they only learn it runs. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(flight_begin(&f, NOW + i, &w[i], &err), FLIGHT_WAIT);
        want[i] = &w[i];
        assert_int_equal(f.n_waiters, (unsigned)i + 1);
    }
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_WAIT);
    assert_int_equal(f.n_waiters, 5);
    assert_int_equal(err, -1);

    struct flight_waiter *list = flight_end(&f, 0, NOW + 10, 5000);
    check_list(list, want, 5);
    assert_int_equal(flight_idle(&f), 1);
    assert_null(f.waiters);
    assert_int_equal(f.n_waiters, 0);
    assert_int_equal(f.running, 0);
    /* Success remembers nothing: the next asker fetches again. */
    assert_int_equal(flight_failed(&f, NOW + 10, &err), 0);
    assert_int_equal(flight_begin(&f, NOW + 10, NULL, &err), FLIGHT_FETCH);
    assert_null(flight_end(&f, 0, NOW + 10, 5000));
}

/* With FLIGHT_FETCH a non-NULL waiter joins too and is handed back with the rest. */
static void test_ticket_holder_joins(void **state)
{
    (void)state;
    struct flight f;
    memset(&f, 0, sizeof f);
    struct flight_waiter a, b;
    struct flight_waiter *want[] = {&a, &b};
    int err = 0;

    assert_int_equal(flight_begin(&f, NOW, &a, &err), FLIGHT_FETCH);
    assert_int_equal(f.n_waiters, 1);
    assert_int_equal(flight_idle(&f), 0);
    assert_int_equal(flight_begin(&f, NOW, &b, &err), FLIGHT_WAIT);
    check_list(flight_end(&f, -EIO, NOW, 0), want, 2);

    /* Alone, it comes back alone. */
    assert_int_equal(flight_begin(&f, NOW, &a, &err), FLIGHT_FETCH);
    check_list(flight_end(&f, 0, NOW, 0), want, 1);
}

/* A failure is remembered from the end of the fetch for remember_ms: asked at
 * now < failed_until it is FLIGHT_FAILED, at now >= failed_until it is forgotten. */
static void test_failure_expiry(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int64_t remember_ms, at; /* at: ms after the end of the fetch */
        int failed;
    } rows[] = {
        {"at the end", 5000, 0, 1},           {"1 ms before expiry", 5000, 4999, 1},
        {"exactly at expiry", 5000, 5000, 0}, {"after expiry", 5000, 5001, 0},
        {"1 ms window, at once", 1, 0, 1},    {"1 ms window, expired", 1, 1, 0},
        {"not remembered (0)", 0, 0, 0},      {"negative remember_ms", -5, 0, 0},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const char *row = rows[i].name;
        struct flight f;
        memset(&f, 0, sizeof f);
        struct flight_waiter w;
        int err = 0;
        assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
        assert_null(flight_end(&f, -ETIMEDOUT, NOW, rows[i].remember_ms));
        assert_int_equal(flight_idle(&f), 1); /* a remembered failure is not activity */

        int64_t at = NOW + rows[i].at;
        err = 0;
        if (flight_failed(&f, at, &err) != rows[i].failed ||
            err != (rows[i].failed ? ETIMEDOUT : 0))
            fail_msg("%s: flight_failed gave err %d", row, err);
        if (flight_failed(&f, at, NULL) != rows[i].failed) /* err may be NULL */
            fail_msg("%s: flight_failed with err NULL", row);
        err = 0;
        if (rows[i].failed) {
            /* No ticket, and the waiter is not linked. */
            assert_int_equal(flight_begin(&f, at, &w, &err), FLIGHT_FAILED);
            assert_int_equal(err, ETIMEDOUT);
            assert_null(f.waiters);
            assert_int_equal(f.n_waiters, 0);
            assert_int_equal(f.running, 0);
        } else {
            assert_int_equal(flight_begin(&f, at, &w, &err), FLIGHT_FETCH);
            struct flight_waiter *want[] = {&w};
            check_list(flight_end(&f, 0, at, rows[i].remember_ms), want, 1);
        }
    }
}

/* An expired failure is forgotten when seen: asking again earlier finds nothing. */
static void test_expired_is_forgotten(void **state)
{
    (void)state;
    struct flight f;
    memset(&f, 0, sizeof f);
    int err = 0;
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
    assert_null(flight_end(&f, -EIO, NOW, 100));
    assert_int_equal(flight_failed(&f, NOW + 100, &err), 0);
    assert_int_equal(flight_failed(&f, NOW + 50, &err), 0);
    assert_int_equal(f.err, 0);
}

/* Each failure is remembered with its own errno and its own window. */
static void test_errno_and_window_per_failure(void **state)
{
    (void)state;
    static const int errs[] = {EIO, EACCES, ENOENT, EAGAIN, ETIMEDOUT, EFBIG};
    struct flight f;
    memset(&f, 0, sizeof f);
    int64_t now = NOW;
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        int err = 0;
        assert_int_equal(flight_begin(&f, now, NULL, &err), FLIGHT_FETCH);
        assert_null(flight_end(&f, -errs[i], now, 1000 + (int64_t)i));
        assert_int_equal(flight_begin(&f, now + 999 + (int64_t)i, NULL, &err), FLIGHT_FAILED);
        assert_int_equal(err, errs[i]);
        now += 1000 + (int64_t)i;
    }
}

/* A new ticket clears the old failure, so its waiters never see it; success after a
 * failure forgets it. */
static void test_success_forgets(void **state)
{
    (void)state;
    struct flight f;
    memset(&f, 0, sizeof f);
    int err = 0;
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
    assert_null(flight_end(&f, -EIO, NOW, 100));
    assert_int_equal(flight_begin(&f, NOW + 100, NULL, &err), FLIGHT_FETCH);
    assert_int_equal(flight_failed(&f, NOW + 100, &err), 0); /* cleared by the ticket */
    assert_null(flight_end(&f, 0, NOW + 200, 100000));
    assert_int_equal(flight_failed(&f, NOW + 200, &err), 0);
    assert_int_equal(flight_begin(&f, NOW + 200, NULL, &err), FLIGHT_FETCH);
    assert_null(flight_end(&f, 0, NOW + 200, 0));
}

static void test_forget(void **state)
{
    (void)state;
    struct flight f;
    memset(&f, 0, sizeof f);
    int err = 0;
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
    assert_null(flight_end(&f, -EACCES, NOW, 60000));
    assert_int_equal(flight_failed(&f, NOW + 1, &err), 1);
    flight_forget(&f);
    assert_int_equal(flight_failed(&f, NOW + 1, &err), 0);
    assert_int_equal(flight_begin(&f, NOW + 1, NULL, &err), FLIGHT_FETCH);
    /* Forgetting while a fetch runs leaves the flight and its waiters alone. */
    struct flight_waiter w;
    assert_int_equal(flight_begin(&f, NOW + 1, &w, &err), FLIGHT_WAIT);
    flight_forget(&f);
    assert_int_equal(f.running, 1);
    assert_int_equal(flight_idle(&f), 0);
    struct flight_waiter *want[] = {&w};
    check_list(flight_end(&f, 0, NOW + 2, 0), want, 1);
    /* With nothing remembered, forget is harmless. */
    flight_forget(&f);
    assert_int_equal(flight_idle(&f), 1);
}

/* A waiter that joined one fetch is not handed back by the next. */
static void test_waiters_detached(void **state)
{
    (void)state;
    struct flight f;
    memset(&f, 0, sizeof f);
    struct flight_waiter a, b;
    int err = 0;
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
    assert_int_equal(flight_begin(&f, NOW, &a, &err), FLIGHT_WAIT);
    struct flight_waiter *want_a[] = {&a};
    check_list(flight_end(&f, -EIO, NOW, 0), want_a, 1);
    assert_int_equal(flight_begin(&f, NOW, NULL, &err), FLIGHT_FETCH);
    assert_int_equal(flight_begin(&f, NOW, &b, &err), FLIGHT_WAIT);
    struct flight_waiter *want_b[] = {&b};
    check_list(flight_end(&f, 0, NOW, 0), want_b, 1);
    assert_int_equal(flight_idle(&f), 1);
}

/* Many waiters: every one exactly once. */
static void test_many_waiters(void **state)
{
    (void)state;
    enum { N = 64 };
    struct flight f;
    memset(&f, 0, sizeof f);
    struct flight_waiter w[N];
    struct flight_waiter *want[N];
    int err = 0;
    assert_int_equal(flight_begin(&f, NOW, &w[0], &err), FLIGHT_FETCH);
    want[0] = &w[0];
    for (int i = 1; i < N; i++) {
        assert_int_equal(flight_begin(&f, NOW, &w[i], &err), FLIGHT_WAIT);
        want[i] = &w[i];
    }
    assert_int_equal(f.n_waiters, N);
    check_list(flight_end(&f, -EIO, NOW, 10), want, N);
    assert_int_equal(flight_begin(&f, NOW + 9, &w[0], &err), FLIGHT_FAILED);
    assert_int_equal(err, EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fetch_then_wait),
        cmocka_unit_test(test_ticket_holder_joins),
        cmocka_unit_test(test_failure_expiry),
        cmocka_unit_test(test_expired_is_forgotten),
        cmocka_unit_test(test_errno_and_window_per_failure),
        cmocka_unit_test(test_success_forgets),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_waiters_detached),
        cmocka_unit_test(test_many_waiters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
