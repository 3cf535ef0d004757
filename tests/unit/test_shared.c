/* Unit tests for shared (SPEC 13) without a Redis server: key names against known
 * answers computed by an independent tool (sha256sum; each command is in a comment),
 * the value header both ways and every rejection, and the Redis URL grammar of the
 * shared group (cfg_redis_url_parse) as a table. */
#include "insightfs/shared.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "insightfs/cfg.h"
#include "insightfs/sign.h"

/* ---- names ---- */

/* clang-format off */
static void test_sha256_hex(void **state)
{
    char out[SIGN_SHA256_HEX_LEN + 1];
    (void)state;
    /* printf '' | sha256sum */
    assert_int_equal(sign_sha256_hex("", 0, out), 0);
    assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* printf 'abc' | sha256sum */
    assert_int_equal(sign_sha256_hex("abc", 3, out), 0);
    assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_key_hash(void **state)
{
    char out[SHARED_HASH_LEN + 1];
    struct cache_key k = {"df_457958429047263232", "cpu_avg__1234", 1733011200000, 1733097600000,
                          VPATH_RES_AUTO};
    (void)state;
    /* printf '%s\0%s\0%s\0%s\0%s\0%s\0%s' http://127.0.0.1:8080 LOCALTESTACCESSKEY0001 df_457958429047263232 cpu_avg__1234 1733011200000 1733097600000 AUTO | sha256sum */
    assert_int_equal(shared_key_hash("http://127.0.0.1:8080", "LOCALTESTACCESSKEY0001", &k, out), 0);
    assert_string_equal(out, "5fd8250cbe981302900935d0b794ad72827056d8ffbe72e5beec14782f42762a");

    struct cache_key k2 = {"1000123", "555", 1733097600000, 1733148000000, VPATH_RES_HIGH};
    /* printf '%s\0%s\0%s\0%s\0%s\0%s\0%s' https://cw.apigw.ntruss.com ncp_iam_BPAMKR1234567890 1000123 555 1733097600000 1733148000000 HIGH | sha256sum */
    assert_int_equal(shared_key_hash("https://cw.apigw.ntruss.com", "ncp_iam_BPAMKR1234567890", &k2, out), 0);
    assert_string_equal(out, "263ed08df662357905b05bc2d7587089ccdc47816d530a7b220ad0f12ae7b5eb");

    /* Every part counts: another resolution, another key. */
    k2.res = VPATH_RES_AUTO;
    assert_int_equal(shared_key_hash("https://cw.apigw.ntruss.com", "ncp_iam_BPAMKR1234567890", &k2, out), 0);
    assert_string_not_equal(out, "263ed08df662357905b05bc2d7587089ccdc47816d530a7b220ad0f12ae7b5eb");
}

static void test_account_hash(void **state)
{
    char out[SHARED_HASH_LEN + 1];
    (void)state;
    /* printf '%s\0%s' http://127.0.0.1:8080 LOCALTESTACCESSKEY0001 | sha256sum */
    assert_int_equal(shared_account_hash("http://127.0.0.1:8080", "LOCALTESTACCESSKEY0001", out), 0);
    assert_string_equal(out, "860a9f717ae6d5f1179bf4fc1f390df43deca1b23c7fad56e2958f8e22e8d70f");
}
/* clang-format on */

/* ---- values ---- */

/* A minimal valid PNG: the signature, an IHDR of 13 bytes and an empty IEND (CRCs are
 * not checked). */
static size_t make_png(unsigned char *p)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(p, sig, 8);
    n = 8;
    memcpy(p + n, "\0\0\0\x0dIHDR", 8);
    n += 8;
    memset(p + n, 1, 13);
    n += 13;
    memset(p + n, 0, 4); /* CRC */
    n += 4;
    memcpy(p + n, "\0\0\0\0IEND", 8);
    n += 8;
    memcpy(p + n, "\xae\x42\x60\x82", 4);
    n += 4;
    return n;
}

static size_t make_value(unsigned char *v, int64_t fetched_at, int final)
{
    size_t n = make_png(v + SHARED_HDR_LEN);
    shared_header_encode(v, fetched_at, final, n);
    return SHARED_HDR_LEN + n;
}

static void test_header_encode(void **state)
{
    unsigned char h[SHARED_HDR_LEN];
    static const unsigned char want[SHARED_HDR_LEN] = {
        'I',  'F',  'S',  '1',  0x00, 0x00, 0x01, 0x93, 0x7f, 0x84, 0x58, 0x00, /* fetched_at */
        0x01, 0x00, 0x00, 0x00,                                                 /* final */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x19, 0x64,                         /* 6500 */
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    };
    (void)state;
    /* 1733011200000 = 0x0000_0193_7F84_5800 (printf '%016x\n' 1733011200000) */
    shared_header_encode(h, 1733011200000, 1, 6500);
    assert_memory_equal(h, want, SHARED_HDR_LEN);
}

static void test_value_roundtrip(void **state)
{
    unsigned char v[256];
    int64_t at = 0;
    int final = -1;
    size_t png = 0;
    const char *why = "x";
    (void)state;
    size_t n = make_value(v, 1733011200123, 1);
    assert_int_equal(shared_value_check(v, n, 1024, &at, &final, &png, &why), 0);
    assert_null(why);
    assert_int_equal(at, 1733011200123);
    assert_int_equal(final, 1);
    assert_int_equal(png, n - SHARED_HDR_LEN);
    n = make_value(v, 42, 0);
    assert_int_equal(shared_value_check(v, n, 1024, &at, &final, &png, &why), 0);
    assert_int_equal(final, 0);
    assert_int_equal(at, 42);
}

/* Corrupt a valid value with f, expect a rejection naming why. */
static void expect_reject(void (*f)(unsigned char *v, size_t *n), size_t max_png, const char *want)
{
    unsigned char v[256];
    int64_t at = 0;
    int final = 0;
    size_t png = 0;
    const char *why = NULL;
    size_t n = make_value(v, 1733011200000, 0);
    if (f)
        f(v, &n);
    assert_int_equal(shared_value_check(v, n, max_png, &at, &final, &png, &why), -EINVAL);
    assert_non_null(why);
    assert_string_equal(why, want);
}

static void cut_header(unsigned char *v, size_t *n)
{
    (void)v;
    *n = 31;
}
static void bad_magic(unsigned char *v, size_t *n)
{
    (void)n;
    v[3] = '2';
}
static void bad_final(unsigned char *v, size_t *n)
{
    (void)n;
    v[12] = 2;
}
static void dirty_13(unsigned char *v, size_t *n)
{
    (void)n;
    v[14] = 1;
}
static void dirty_24(unsigned char *v, size_t *n)
{
    (void)n;
    v[31] = 1;
}
static void longer(unsigned char *v, size_t *n)
{
    v[*n] = 0;
    (*n)++;
}
static void shorter(unsigned char *v, size_t *n)
{
    (void)v;
    (*n)--;
}
static void not_png(unsigned char *v, size_t *n)
{
    (void)n;
    memcpy(v + SHARED_HDR_LEN, "<html>!!", 8);
}
static void no_iend(unsigned char *v, size_t *n)
{
    /* Drop the IEND chunk and say so in the length: a PNG without its end. */
    *n -= 12;
    shared_header_encode(v, 1733011200000, 0, *n - SHARED_HDR_LEN);
}
static void huge_length(unsigned char *v, size_t *n)
{
    (void)n;
    v[16] = 0xff; /* a length near 2^64: never an allocation */
}

static void test_value_rejections(void **state)
{
    (void)state;
    expect_reject(cut_header, 1024, "shorter than its header");
    expect_reject(bad_magic, 1024, "wrong magic");
    expect_reject(bad_final, 1024, "bad final flag");
    expect_reject(dirty_13, 1024, "reserved header bytes not zero");
    expect_reject(dirty_24, 1024, "reserved header bytes not zero");
    expect_reject(longer, 1024, "wrong length");
    expect_reject(shorter, 1024, "wrong length");
    expect_reject(huge_length, 1024, "wrong length");
    expect_reject(NULL, 16, "larger than api.max_image_bytes");
    expect_reject(not_png, 1024, "not a valid PNG");
    expect_reject(no_iend, 1024, "not a valid PNG");
}

/* ---- URLs ---- */

struct url_case {
    const char *url;
    int rc;
    const char *host, *socket;
    int port, db;
};

static const struct url_case url_cases[] = {
    {"redis://127.0.0.1:6379/0", 0, "127.0.0.1", NULL, 6379, 0},
    {"redis://127.0.0.1", 0, "127.0.0.1", NULL, 6379, 0},
    {"redis://127.0.0.1/", 0, "127.0.0.1", NULL, 6379, 0},
    {"redis://cache.internal:7000/15", 0, "cache.internal", NULL, 7000, 15},
    {"redis://localhost/3", 0, "localhost", NULL, 6379, 3},
    {"redis://[::1]:6380/2", 0, "::1", NULL, 6380, 2},
    {"redis://[::1]", 0, "::1", NULL, 6379, 0},
    {"redis://h:1/2147483647", 0, "h", NULL, 1, 2147483647},
    {"unix:/run/redis/redis.sock", 0, NULL, "/run/redis/redis.sock", 0, 0},
    {"unix:/run/redis.sock?db=4", 0, NULL, "/run/redis.sock", 0, 4},
    {"redis://h:65535", 0, "h", NULL, 65535, 0},
    /* refused */
    {"", -EINVAL, NULL, NULL, 0, 0},
    {"http://127.0.0.1:6379", -EINVAL, NULL, NULL, 0, 0},
    {"rediss://127.0.0.1:6379", -EINVAL, NULL, NULL, 0, 0},
    {"redis://", -EINVAL, NULL, NULL, 0, 0},
    {"redis://:6379", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h:0", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h:65536", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h:06379", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h:", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h:+1", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h/-1", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h/01", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h/2147483648", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h/99999999999", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h/1/2", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h/x", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h?db=1", -EINVAL, NULL, NULL, 0, 0},
    {"redis://user:pw@h:6379", -EINVAL, NULL, NULL, 0, 0},
    {"redis://:pw@h", -EINVAL, NULL, NULL, 0, 0},
    {"redis://[::1", -EINVAL, NULL, NULL, 0, 0},
    {"redis://[zz]:1", -EINVAL, NULL, NULL, 0, 0},
    {"redis://h\n", -EINVAL, NULL, NULL, 0, 0},
    {"redis://.h", -EINVAL, NULL, NULL, 0, 0},
    {"unix:", -EINVAL, NULL, NULL, 0, 0},
    {"unix:/", -EINVAL, NULL, NULL, 0, 0},
    {"unix:relative.sock", -EINVAL, NULL, NULL, 0, 0},
    {"unix:/s.sock?db=", -EINVAL, NULL, NULL, 0, 0},
    {"unix:/s.sock?db=x", -EINVAL, NULL, NULL, 0, 0},
    {"unix:/s.sock?foo=1", -EINVAL, NULL, NULL, 0, 0},
    {"unix:/s.sock?db=1&x", -EINVAL, NULL, NULL, 0, 0},
};

static void test_url_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(url_cases) / sizeof(url_cases[0]); i++) {
        const struct url_case *c = &url_cases[i];
        struct cfg_redis_url u;
        const char *why = NULL;
        int rc = cfg_redis_url_parse(c->url, &u, &why);
        if (rc != c->rc)
            fail_msg("%s: rc %d, want %d (%s)", c->url, rc, c->rc, why ? why : "");
        if (rc != 0) {
            assert_non_null(why);
            assert_null(u.host);
            assert_null(u.socket);
            continue;
        }
        if (c->host)
            assert_string_equal(u.host, c->host);
        else
            assert_null(u.host);
        if (c->socket)
            assert_string_equal(u.socket, c->socket);
        else
            assert_null(u.socket);
        if (c->host)
            assert_int_equal(u.port, c->port);
        assert_int_equal(u.db, c->db);
        cfg_redis_url_cleanup(&u);
    }
}

static void test_url_messages(void **state)
{
    struct cfg_redis_url u;
    const char *why = NULL;
    (void)state;
    assert_int_equal(cfg_redis_url_parse("redis://u:secretpw@h", &u, &why), -EINVAL);
    assert_non_null(strstr(why, "password_file"));
    assert_null(strstr(why, "secretpw"));
    assert_int_equal(cfg_redis_url_parse("rediss://h", &u, &why), -EINVAL);
    assert_non_null(strstr(why, "TLS"));
}

static void test_loopback(void **state)
{
    (void)state;
    assert_true(cfg_host_is_loopback("127.0.0.1"));
    assert_true(cfg_host_is_loopback("127.1.2.3"));
    assert_true(cfg_host_is_loopback("localhost"));
    assert_true(cfg_host_is_loopback("::1"));
    assert_false(cfg_host_is_loopback("10.0.0.1"));
    assert_false(cfg_host_is_loopback("cache.internal"));
    assert_false(cfg_host_is_loopback("::2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_hex),      cmocka_unit_test(test_key_hash),
        cmocka_unit_test(test_account_hash),    cmocka_unit_test(test_header_encode),
        cmocka_unit_test(test_value_roundtrip), cmocka_unit_test(test_value_rejections),
        cmocka_unit_test(test_url_table),       cmocka_unit_test(test_url_messages),
        cmocka_unit_test(test_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
