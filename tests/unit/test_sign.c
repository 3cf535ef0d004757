/* Unit tests for sign: known answers computed with the openssl command-line tool
 * (an implementation independent of this code path), plus argument checks.
 * Each expected value carries the exact shell command that produced it. */
#include "insightfs/sign.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void expect_sig(const char *secret, const char *target, const char *ts, const char *ak,
                       const char *want)
{
    char sig[SIGN_V2_LEN + 1];
    assert_int_equal(sign_v2(secret, "GET", target, ts, ak, sig), 0);
    assert_int_equal(strlen(sig), SIGN_V2_LEN);
    assert_string_equal(sig, want);
}

/* The known answers: each command stays on one line so it can be pasted into a shell. */
/* clang-format off */

/* A realistic image request. */
static void test_image_target(void **state)
{
    (void)state;
    /* printf '%s\n%s\n%s' 'GET /cw_fea/real/cw/api/chart/dashboard/df_457958429047263232/widgets/cpu_avg__1234?startTime=1733097600000&endTime=1733148000000&widgetResolutionMode=AUTO' '1733148000123' 'ncp_iam_BPAMKR1234567890' | openssl dgst -sha256 -hmac 'Sup3rS3cretKeyForTests0123456789abcdEFGH' -binary | base64 */
    expect_sig("Sup3rS3cretKeyForTests0123456789abcdEFGH",
               "/cw_fea/real/cw/api/chart/dashboard/df_457958429047263232/widgets/cpu_avg__1234"
               "?startTime=1733097600000&endTime=1733148000000&widgetResolutionMode=AUTO",
               "1733148000123", "ncp_iam_BPAMKR1234567890",
               "VMaFUMwYxEPMSIxUFIytDHGpXv6Rx0bCX78miyyFj80=");
}

/* The shortest target, a one-byte key, timestamp "0". */
static void test_minimal_target(void **state)
{
    (void)state;
    /* printf '%s\n%s\n%s' 'GET /' '0' 'AK' | openssl dgst -sha256 -hmac 'k' -binary | base64 */
    expect_sig("k", "/", "0", "AK", "CXS24MMEGqafXK8x7VU9lf6dXOaahx5NQQTvd7FcpE0=");
}

/* A long target: a 1000-byte dashboard id. */
static void test_long_target(void **state)
{
    (void)state;
    const char *pre = "/cw_fea/real/cw/api/chart/dashboard/";
    size_t n = strlen(pre) + 1000 + strlen("/widgets") + 1;
    char *target = malloc(n);
    assert_non_null(target);
    strcpy(target, pre);
    memset(target + strlen(pre), 'x', 1000);
    strcpy(target + strlen(pre) + 1000, "/widgets");
    /* printf '%s\n%s\n%s' "GET /cw_fea/real/cw/api/chart/dashboard/$(head -c 1000 /dev/zero | tr '\0' x)/widgets" '1700000000000' 'ACCESSKEY' | openssl dgst -sha256 -hmac 'secret' -binary | base64 */
    expect_sig("secret", target, "1700000000000", "ACCESSKEY",
               "+1SxvPM/hEjZuAF//iNedmvzd1+v1Vj2pYlLv3EnKaE=");
    free(target);
}

/* A non-ASCII (UTF-8) secret: its bytes are the key. */
static void test_non_ascii_secret(void **state)
{
    (void)state;
    /* printf '%s\n%s\n%s' 'GET /cw_fea/real/cw/api/chart/dashboard' '1700000000000' 'ACCESSKEY' | openssl dgst -sha256 -hmac 'sécret-비밀키' -binary | base64
     * (the key bytes: 73 c3 a9 63 72 65 74 2d eb b9 84 eb b0 80 ed 82 a4) */
    expect_sig("s\xc3\xa9" "cret-\xeb\xb9\x84\xeb\xb0\x80\xed\x82\xa4",
               "/cw_fea/real/cw/api/chart/dashboard", "1700000000000", "ACCESSKEY",
               "giJy8wSCLu9O1m9DWq+tS+DOyThmtTuJE0vcFmQbDxY=");
}

/* A percent-encoded target is signed as is, never decoded. */
static void test_escaped_target(void **state)
{
    (void)state;
    /* printf '%s\n%s\n%s' 'GET /cw_fea/real/cw/api/chart/dashboard/a%2Fb%20c/widgets/w%25x~y?startTime=1&endTime=2&widgetResolutionMode=HIGH' '1700000000000' 'ACCESSKEY' | openssl dgst -sha256 -hmac 'secret' -binary | base64 */
    expect_sig("secret",
               "/cw_fea/real/cw/api/chart/dashboard/a%2Fb%20c/widgets/w%25x~y"
               "?startTime=1&endTime=2&widgetResolutionMode=HIGH",
               "1700000000000", "ACCESSKEY", "nywvCfFplTRvUHeKalUbfrRv/vZi5VPvfVYIxxSlpHQ=");
}

/* The known answer published in a public NCP client's test suite (SPEC 1): another
 * implementation's expectation, reproduced here with the openssl tool. */
static void test_public_client_vector(void **state)
{
    (void)state;
    /* printf 'GET /vserver/v2/getServerInstanceList?responseFormatType=json\n1234567890123\nTestAccessKey' | openssl dgst -sha256 -hmac TestSecretKey -binary | base64 */
    expect_sig("TestSecretKey", "/vserver/v2/getServerInstanceList?responseFormatType=json",
               "1234567890123", "TestAccessKey", "FPsYYX8fuMAgi+cue3eACOW0dNtIwu1LYWfg/megA2M=");
}

/* clang-format on */

/* Every part is in the message: changing any one changes the signature. */
static void test_every_part_matters(void **state)
{
    (void)state;
    char base[SIGN_V2_LEN + 1], other[SIGN_V2_LEN + 1];
    assert_int_equal(sign_v2("secret", "GET", "/a", "1", "AK", base), 0);
    assert_int_equal(sign_v2("secreT", "GET", "/a", "1", "AK", other), 0);
    assert_string_not_equal(base, other);
    assert_int_equal(sign_v2("secret", "PUT", "/a", "1", "AK", other), 0);
    assert_string_not_equal(base, other);
    assert_int_equal(sign_v2("secret", "GET", "/b", "1", "AK", other), 0);
    assert_string_not_equal(base, other);
    assert_int_equal(sign_v2("secret", "GET", "/a", "2", "AK", other), 0);
    assert_string_not_equal(base, other);
    assert_int_equal(sign_v2("secret", "GET", "/a", "1", "AL", other), 0);
    assert_string_not_equal(base, other);
    /* Deterministic. */
    assert_int_equal(sign_v2("secret", "GET", "/a", "1", "AK", other), 0);
    assert_string_equal(base, other);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    char sig[SIGN_V2_LEN + 1] = "junk";
    assert_int_equal(sign_v2(NULL, "GET", "/", "0", "AK", sig), -EINVAL);
    assert_string_equal(sig, "");
    assert_int_equal(sign_v2("", "GET", "/", "0", "AK", sig), -EINVAL);
    assert_int_equal(sign_v2("k", NULL, "/", "0", "AK", sig), -EINVAL);
    assert_int_equal(sign_v2("k", "GET", NULL, "0", "AK", sig), -EINVAL);
    assert_int_equal(sign_v2("k", "GET", "/", NULL, "AK", sig), -EINVAL);
    assert_int_equal(sign_v2("k", "GET", "/", "0", NULL, sig), -EINVAL);
    assert_int_equal(sign_v2("k", "GET", "/", "0", "AK", NULL), -EINVAL);
}

static void test_secret_copy(void **state)
{
    (void)state;
    char *s = sign_secret_dup("s3cret");
    assert_string_equal(s, "s3cret");
    sign_secret_free(s);
    sign_secret_free(NULL);
    assert_null(sign_secret_dup(NULL));
}

static void test_openssl_version(void **state)
{
    (void)state;
    assert_non_null(strstr(sign_openssl_version(), "OpenSSL"));
}

/* A key signs any number of messages, from several threads at once, each exactly as
 * sign_v2 with the secret does (the image vector above): signing never changes the key. */
#define KEY_THREADS 4
#define KEY_ROUNDS 200
static const char *const key_secret = "Sup3rS3cretKeyForTests0123456789abcdEFGH";
static const char *const key_target =
    "/cw_fea/real/cw/api/chart/dashboard/df_457958429047263232/widgets/cpu_avg__1234"
    "?startTime=1733097600000&endTime=1733148000000&widgetResolutionMode=AUTO";
static const char *const key_want = "VMaFUMwYxEPMSIxUFIytDHGpXv6Rx0bCX78miyyFj80=";

static void *key_signer(void *arg)
{
    const struct sign_key *k = arg;
    char sig[SIGN_V2_LEN + 1], other[SIGN_V2_LEN + 1];
    for (int i = 0; i < KEY_ROUNDS; i++) {
        if (sign_v2_key(k, "GET", "/other", "1", "AK", other) != 0)
            return (void *)"other failed";
        if (sign_v2_key(k, "GET", key_target, "1733148000123", "ncp_iam_BPAMKR1234567890", sig) !=
            0)
            return (void *)"sign failed";
        if (strcmp(sig, key_want) != 0)
            return (void *)"wrong signature";
    }
    return NULL;
}

static void test_key_reuse(void **state)
{
    (void)state;
    int err = 1;
    struct sign_key *k = sign_key_new(key_secret, &err);
    assert_non_null(k);
    assert_int_equal(err, 0);
    char a[SIGN_V2_LEN + 1], b[SIGN_V2_LEN + 1];
    assert_int_equal(sign_v2_key(k, "GET", "/a", "1", "AK", a), 0);
    assert_int_equal(sign_v2("secret0", "GET", "/a", "1", "AK", b), 0);
    assert_string_not_equal(a, b); /* another secret, another signature */
    assert_int_equal(sign_v2(key_secret, "GET", "/a", "1", "AK", b), 0);
    assert_string_equal(a, b);
    pthread_t t[KEY_THREADS];
    for (int i = 0; i < KEY_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, key_signer, k), 0);
    for (int i = 0; i < KEY_THREADS; i++) {
        void *why = NULL;
        assert_int_equal(pthread_join(t[i], &why), 0);
        assert_null(why);
    }
    sign_key_free(k);
    sign_key_free(NULL);
    err = 0;
    assert_null(sign_key_new("", &err));
    assert_int_equal(err, -EINVAL);
    assert_null(sign_key_new(NULL, &err));
    assert_int_equal(err, -EINVAL);
    char sig[SIGN_V2_LEN + 1] = "x";
    assert_int_equal(sign_v2_key(NULL, "GET", "/", "0", "AK", sig), -EINVAL);
    assert_string_equal(sig, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_target),       cmocka_unit_test(test_minimal_target),
        cmocka_unit_test(test_long_target),        cmocka_unit_test(test_non_ascii_secret),
        cmocka_unit_test(test_escaped_target),     cmocka_unit_test(test_public_client_vector),
        cmocka_unit_test(test_every_part_matters), cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_secret_copy),        cmocka_unit_test(test_openssl_version),
        cmocka_unit_test(test_key_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
