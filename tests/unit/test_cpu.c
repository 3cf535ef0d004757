/* test_cpu - the contract of include/insightfs/cpu.h: the policy as a table, and the
 * masks it sets on real threads of this process (skipped where the process may use one
 * CPU only). The CPU time and the clock are handed in, so no test waits for load.
 */
#include "insightfs/cpu.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MS 1000000LL /* ns of CPU per ms */

/* ---- the policy ------------------------------------------------------------------- */

static void test_decide(void **state)
{
    (void)state;
    int calm = 3;
    /* On one CPU: stays below or at the line, spreads above it; calm is not counted. */
    assert_int_equal(cpu_share_decide(1, 0, &calm), 1);
    assert_int_equal(calm, 0);
    assert_int_equal(cpu_share_decide(1, CPU_SHARE_SPREAD_PERMILLE, &calm), 1);
    assert_int_equal(cpu_share_decide(1, CPU_SHARE_SPREAD_PERMILLE + 1, &calm), 0);
    assert_int_equal(cpu_share_decide(1, 1000, &calm), 0);
    /* Spread: CPU_SHARE_CALM_TICKS ticks in a row under CPU_SHARE_PIN_PERMILLE bring it back. */
    calm = 0;
    for (int i = 1; i < CPU_SHARE_CALM_TICKS; i++) {
        assert_int_equal(cpu_share_decide(0, CPU_SHARE_PIN_PERMILLE - 1, &calm), 0);
        assert_int_equal(calm, i);
    }
    assert_int_equal(cpu_share_decide(0, CPU_SHARE_PIN_PERMILLE - 1, &calm), 1);
    assert_int_equal(calm, 0);
    /* One tick at the line breaks the run. */
    calm = 0;
    for (int i = 1; i < CPU_SHARE_CALM_TICKS; i++)
        assert_int_equal(cpu_share_decide(0, 0, &calm), 0);
    assert_int_equal(cpu_share_decide(0, CPU_SHARE_PIN_PERMILLE, &calm), 0);
    assert_int_equal(calm, 0);
    for (int i = 1; i < CPU_SHARE_CALM_TICKS; i++)
        assert_int_equal(cpu_share_decide(0, 0, &calm), 0);
    assert_int_equal(cpu_share_decide(0, 0, &calm), 1);
    /* Busy while spread: stays spread. */
    calm = 2;
    assert_int_equal(cpu_share_decide(0, 900, &calm), 0);
    assert_int_equal(calm, 0);
}

/* ---- masks on real threads -------------------------------------------------------- */

/* A thread that waits until released: its mask is read and set from outside. */
struct sleeper {
    pthread_t t;
    pthread_mutex_t m;
    pthread_cond_t cv;
    int go; /* protected by m */
};

static void *sleeper_main(void *arg)
{
    struct sleeper *s = arg;
    pthread_mutex_lock(&s->m);
    while (!s->go)
        pthread_cond_wait(&s->cv, &s->m);
    pthread_mutex_unlock(&s->m);
    return NULL;
}

static void sleeper_start(struct sleeper *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->m, NULL);
    pthread_cond_init(&s->cv, NULL);
    assert_int_equal(pthread_create(&s->t, NULL, sleeper_main, s), 0);
}

static void sleeper_stop(struct sleeper *s)
{
    pthread_mutex_lock(&s->m);
    s->go = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->m);
    assert_int_equal(pthread_join(s->t, NULL), 0);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->m);
}

static cpu_set_t mask_of(pthread_t t)
{
    cpu_set_t m;
    CPU_ZERO(&m);
    assert_int_equal(pthread_getaffinity_np(t, sizeof(m), &m), 0);
    return m;
}

/* This thread, a and b all have mask want. */
static void assert_masks(const cpu_set_t *want, pthread_t a, pthread_t b)
{
    pthread_t ts[] = {pthread_self(), a, b};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        cpu_set_t m = mask_of(ts[i]);
        assert_true(CPU_EQUAL(&m, want));
    }
}

/* The process's mask at the start of each test, restored at its end. */
static cpu_set_t start_mask;

static int setup(void **state)
{
    (void)state;
    return sched_getaffinity(0, sizeof(start_mask), &start_mask);
}

static int teardown(void **state)
{
    (void)state;
    return sched_setaffinity(0, sizeof(start_mask), &start_mask);
}

static void test_pin_spread_pin(void **state)
{
    (void)state;
    if (CPU_COUNT(&start_mask) < 2)
        skip(); /* the process may use one CPU: nothing to share or spread */
    struct sleeper before, after;
    sleeper_start(&before); /* made before the share: the walk sets it */
    struct cpu_share *c = cpu_share_new();
    assert_non_null(c);
    assert_int_equal(cpu_share_cpus(c), 1);
    cpu_set_t one = mask_of(pthread_self());
    assert_int_equal(CPU_COUNT(&one), 1);
    cpu_set_t both;
    CPU_AND(&both, &one, &start_mask);
    assert_int_equal(CPU_COUNT(&both), 1); /* one of the CPUs the process had */
    cpu_set_t m = mask_of(before.t);
    assert_true(CPU_EQUAL(&m, &one));
    sleeper_start(&after); /* inherits */
    m = mask_of(after.t);
    assert_true(CPU_EQUAL(&m, &one));

    /* The first tick starts the measure only: 5 s of CPU in the 5 s before it are not
     * counted. */
    int64_t now = 5000, cpu = 5000 * MS;
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    assert_int_equal(cpu_share_cpus(c), 1);
    assert_int_equal(cpu_share_tick(c, now + 500, -1), 0); /* CPU time unknown: no measure */
    assert_int_equal(cpu_share_cpus(c), 1);
    now += 1000, cpu += CPU_SHARE_SPREAD_PERMILLE * MS; /* exactly at the line */
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    assert_int_equal(cpu_share_cpus(c), 1);
    /* No time passed: no measure, and the next one still runs from the last tick. */
    assert_int_equal(cpu_share_tick(c, now, cpu + 300 * MS), 0);
    assert_int_equal(cpu_share_cpus(c), 1);
    now += 1000, cpu += (CPU_SHARE_SPREAD_PERMILLE + 1) * MS; /* above: spread */
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    assert_int_equal(cpu_share_cpus(c), CPU_COUNT(&start_mask));
    assert_masks(&start_mask, before.t, after.t);
    /* A thread the walk missed (made during it by a thread not yet set) is set by the
     * walk of the next tick. */
    assert_int_equal(pthread_setaffinity_np(before.t, sizeof(one), &one), 0);
    now += 1000;
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    m = mask_of(before.t);
    assert_true(CPU_EQUAL(&m, &start_mask));

    /* Calm ticks of 2 s each (per mille over the whole interval), one short (the tick
     * above was the first calm one). */
    for (int i = 2; i < CPU_SHARE_CALM_TICKS; i++) {
        now += 2000, cpu += 2 * (CPU_SHARE_PIN_PERMILLE - 1) * MS;
        assert_int_equal(cpu_share_tick(c, now, cpu), 0);
        assert_int_equal(cpu_share_cpus(c), CPU_COUNT(&start_mask));
    }
    now += 2000, cpu += 2 * (CPU_SHARE_PIN_PERMILLE - 1) * MS;
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    assert_int_equal(cpu_share_cpus(c), 1);
    one = mask_of(pthread_self());
    assert_int_equal(CPU_COUNT(&one), 1);
    assert_masks(&one, before.t, after.t);
    /* The walk after the change again sets a thread it missed. */
    assert_int_equal(pthread_setaffinity_np(after.t, sizeof(start_mask), &start_mask), 0);
    now += 1000;
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    m = mask_of(after.t);
    assert_true(CPU_EQUAL(&m, &one));
    /* Masks reset from outside (taskset -a, a cpuset update) are pinned again. */
    assert_int_equal(sched_setaffinity(0, sizeof(start_mask), &start_mask), 0);
    assert_int_equal(pthread_setaffinity_np(after.t, sizeof(start_mask), &start_mask), 0);
    now += 1000;
    assert_int_equal(cpu_share_tick(c, now, cpu), 0);
    assert_int_equal(cpu_share_cpus(c), 1);
    one = mask_of(pthread_self());
    assert_int_equal(CPU_COUNT(&one), 1);
    m = mask_of(after.t);
    assert_true(CPU_EQUAL(&m, &one));

    sleeper_stop(&before);
    cpu_share_free(c); /* spreads again */
    m = mask_of(pthread_self());
    assert_true(CPU_EQUAL(&m, &start_mask));
    m = mask_of(after.t);
    assert_true(CPU_EQUAL(&m, &start_mask));
    sleeper_stop(&after);
}

static void test_one_cpu_is_idle(void **state)
{
    (void)state;
    int first = -1;
    for (int i = 0; i < CPU_SETSIZE && first < 0; i++)
        if (CPU_ISSET(i, &start_mask))
            first = i;
    assert_true(first >= 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    struct cpu_share *c = cpu_share_new();
    assert_non_null(c);
    assert_int_equal(cpu_share_cpus(c), 0);
    assert_int_equal(cpu_share_tick(c, 1000, 0), 0);
    assert_int_equal(cpu_share_tick(c, 2000, 1000 * MS), 0); /* a whole CPU: nowhere to go */
    assert_int_equal(cpu_share_cpus(c), 0);
    cpu_set_t m = mask_of(pthread_self());
    assert_true(CPU_EQUAL(&m, &one));
    cpu_share_free(c);
    m = mask_of(pthread_self());
    assert_true(CPU_EQUAL(&m, &one)); /* an idle share leaves the mask alone */
}

static void test_null_and_clock(void **state)
{
    (void)state;
    assert_int_equal(cpu_share_tick(NULL, 1, 1), 0);
    assert_int_equal(cpu_share_cpus(NULL), 0);
    cpu_share_free(NULL);
    int64_t a = cpu_used_ns(), b = a;
    for (int i = 0; i < 20000000 && b == a; i++) /* the calls themselves use CPU */
        b = cpu_used_ns();
    assert_true(a > 0);
    assert_true(b > a); /* this thread's work shows in the process's CPU time */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide),
        cmocka_unit_test_setup_teardown(test_pin_spread_pin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_cpu_is_idle, setup, teardown),
        cmocka_unit_test(test_null_and_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
