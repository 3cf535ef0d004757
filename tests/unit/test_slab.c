/* test_slab - the contract of include/insightfs/slab.h: zeroed, aligned records; blocks
 * unmapped as soon as their last record goes; big records; a released pool living on
 * until its last record; many threads at once (run under TSan in CI). */
#include "insightfs/slab.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define BLOCK (64 * 1024)

static void test_zeroed_aligned(void **state)
{
    (void)state;
    struct slab_pool *p = slab_pool_new();
    assert_non_null(p);
    assert_null(slab_alloc(p, 0));
    for (size_t n = 1; n < 300; n++) {
        unsigned char *r = slab_alloc(p, n);
        assert_non_null(r);
        assert_int_equal((uintptr_t)r % 16, 0);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(r[i], 0);
        memset(r, 0xab, n); /* the next record must not see these */
        slab_free(r);
    }
    char *s = slab_strdup(p, "df_457958429047263232");
    assert_string_equal(s, "df_457958429047263232");
    slab_free(s);
    slab_free(NULL);
    slab_pool_release(p);
}

/* Records freed in the order they were made give their blocks back: only the current
 * block stays mapped. */
static void test_blocks_go_back(void **state)
{
    (void)state;
    struct slab_pool *p = slab_pool_new();
    enum { N = 20000 };
    void **r = calloc(N, sizeof(*r));
    assert_non_null(r);
    for (int i = 0; i < N; i++)
        assert_non_null(r[i] = slab_alloc(p, 200));
    /* 20000 x 208 bytes need at least 64 blocks. */
    assert_true(slab_pool_mapped(p) >= (size_t)N * 208 / BLOCK * BLOCK);
    size_t peak = slab_pool_mapped(p);
    for (int i = 0; i < N - 10; i++)
        slab_free(r[i]);
    /* The survivors are the newest: they sit in the last one or two blocks. */
    assert_true(slab_pool_mapped(p) <= 2 * BLOCK);
    assert_true(slab_pool_mapped(p) < peak);
    for (int i = N - 10; i < N; i++)
        slab_free(r[i]);
    assert_int_equal(slab_pool_mapped(p), BLOCK); /* the current block */
    slab_pool_release(p);
    free(r);
}

static void test_big_records(void **state)
{
    (void)state;
    struct slab_pool *p = slab_pool_new();
    unsigned char *big = slab_alloc(p, 100000);
    assert_non_null(big);
    assert_int_equal(big[99999], 0);
    memset(big, 1, 100000);
    assert_true(slab_pool_mapped(p) >= 2 * BLOCK);
    slab_free(big);
    assert_int_equal(slab_pool_mapped(p), 0);
    slab_pool_release(p);
}

/* A released pool lives until its last record goes (a version outliving its cache). */
static void test_release_then_free(void **state)
{
    (void)state;
    struct slab_pool *p = slab_pool_new();
    char *a = slab_strdup(p, "kept by the kernel");
    char *b = slab_alloc(p, 40000);
    slab_pool_release(p);
    assert_string_equal(a, "kept by the kernel");
    b[39999] = 1;
    slab_free(b);
    slab_free(a); /* frees the pool: ASan/valgrind see no leak, no use after free */
}

struct worker {
    struct slab_pool *p;
    int bad;
};

static void *churn(void *arg)
{
    struct worker *w = arg;
    void *keep[64] = {0};
    for (int i = 0; i < 20000; i++) {
        int k = i % 64;
        slab_free(keep[k]);
        unsigned char *r = slab_alloc(w->p, (size_t)(16 + i % 200));
        if (!r || r[0] != 0)
            w->bad++;
        if (r)
            r[0] = 1;
        keep[k] = r;
    }
    for (int k = 0; k < 64; k++)
        slab_free(keep[k]);
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    struct slab_pool *p = slab_pool_new();
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){p, 0};
        assert_int_equal(pthread_create(&t[i], NULL, churn, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].bad, 0);
    }
    assert_int_equal(slab_pool_mapped(p), BLOCK);
    slab_pool_release(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zeroed_aligned), cmocka_unit_test(test_blocks_go_back),
        cmocka_unit_test(test_big_records),    cmocka_unit_test(test_release_then_free),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
