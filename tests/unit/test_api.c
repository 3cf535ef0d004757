/* Unit tests for api: request targets, the PNG check, the gateway's JSON error body,
 * list parsing, backoff and retry-budget arithmetic (pure, through api_int.h), and whole
 * logical calls against the scripted loopback server of testsrv.h: signature headers
 * recomputed with sign, retries and their counts, deadlines, clock skew, the warn line,
 * memory accounting and secret hygiene in the logs. */
#include "insightfs/api.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>

#include "../../src/api_int.h"
#include "insightfs/http.h"
#include "insightfs/log.h"
#include "insightfs/sign.h"
#include "testsrv.h"

#define ACCESS_KEY "AKIDEXAMPLEKEY0WXYZ"
#define SECRET "test-secret-do-not-log-9f8e7d"
#define IMG_TARGET                                                                                 \
    "/cw_fea/real/cw/api/chart/dashboard/dash1/widgets/w1?startTime=1733097600000"                 \
    "&endTime=1733148000000&widgetResolutionMode=AUTO"

/* ---- targets ---- */

static void expect_target(const char *d, const char *w, int64_t s, int64_t e, enum vpath_res r,
                          const char *want)
{
    char *t = api_image_target(d, w, s, e, r);
    if (!want) {
        assert_null(t);
        return;
    }
    assert_non_null(t);
    assert_string_equal(t, want);
    free(t);
}

static void test_image_target(void **state)
{
    (void)state;
    expect_target("df_457958429047263232", "cpu_avg__1234", 1733097600000, 1733148000000,
                  VPATH_RES_AUTO,
                  "/cw_fea/real/cw/api/chart/dashboard/df_457958429047263232/widgets/"
                  "cpu_avg__1234?startTime=1733097600000&endTime=1733148000000"
                  "&widgetResolutionMode=AUTO");
    expect_target("a/b", "c d%e~f", 0, 1, VPATH_RES_HIGH,
                  "/cw_fea/real/cw/api/chart/dashboard/a%2Fb/widgets/c%20d%25e~f"
                  "?startTime=0&endTime=1&widgetResolutionMode=HIGH");
    /* Non-ASCII (UTF-8 for 대시), reserved characters, bytes outside ASCII and the space,
     * unreserved kept. */
    expect_target("\xeb\x8c\x80\xec\x8b\x9c", "+&=?#", 5, 10, VPATH_RES_AUTO,
                  "/cw_fea/real/cw/api/chart/dashboard/%EB%8C%80%EC%8B%9C/widgets/"
                  "%2B%26%3D%3F%23?startTime=5&endTime=10&widgetResolutionMode=AUTO");
    expect_target("\x80 \xff", "AZaz09-._~", 1, INT64_MAX, VPATH_RES_AUTO,
                  "/cw_fea/real/cw/api/chart/dashboard/%80%20%FF/widgets/AZaz09-._~"
                  "?startTime=1&endTime=9223372036854775807&widgetResolutionMode=AUTO");
    expect_target("x.y", "..z", 1, 2, VPATH_RES_AUTO,
                  "/cw_fea/real/cw/api/chart/dashboard/x.y/widgets/..z"
                  "?startTime=1&endTime=2&widgetResolutionMode=AUTO");
    expect_target(NULL, "w", 1, 2, VPATH_RES_AUTO, NULL);
    expect_target("d", "", 1, 2, VPATH_RES_AUTO, NULL);
    expect_target("d", "w", 1, 2, (enum vpath_res)7, NULL);
    /* "." and ".." would be path segments the gateway may resolve, and no configuration
     * may name an id with a control character: refused (api_id_addressable). */
    expect_target("..", "w", 1, 2, VPATH_RES_AUTO, NULL);
    expect_target("d", ".", 1, 2, VPATH_RES_AUTO, NULL);
    expect_target("a\x01", "w", 1, 2, VPATH_RES_AUTO, NULL);
    expect_target("d", "\x7f", 1, 2, VPATH_RES_AUTO, NULL);
}

/* ---- PNG ---- */

/* sig + IHDR(13) + [IDAT(n)] + IEND, CRCs zero. Returns the length. */
static size_t build_png(unsigned char *buf, size_t idat)
{
    size_t pos = 0;
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    pos = 8;
    const struct {
        const char *type;
        size_t len;
    } chunks[] = {{"IHDR", 13}, {"IDAT", idat}, {"IEND", 0}};
    for (size_t i = 0; i < 3; i++) {
        if (i == 1 && idat == 0)
            continue;
        size_t n = chunks[i].len;
        buf[pos] = (unsigned char)(n >> 24);
        buf[pos + 1] = (unsigned char)(n >> 16);
        buf[pos + 2] = (unsigned char)(n >> 8);
        buf[pos + 3] = (unsigned char)n;
        memcpy(buf + pos + 4, chunks[i].type, 4);
        memset(buf + pos + 8, 0xab, n + 4);
        pos += 12 + n;
    }
    return pos;
}

static void test_png_check(void **state)
{
    (void)state;
    unsigned char b[256], t[256];
    size_t n = build_png(b, 0);
    assert_int_equal(n, SRV_PNG_LEN);
    assert_int_equal(api_png_check(b, n, -1), API_PNG_VALID);
    assert_int_equal(api_png_check(b, n, (int64_t)n), API_PNG_VALID);
    size_t m = build_png(b, 100);
    assert_int_equal(api_png_check(b, m, -1), API_PNG_VALID);
    unsigned char srvpng[SRV_PNG_LEN];
    srv_png(srvpng);
    assert_int_equal(api_png_check(srvpng, SRV_PNG_LEN, SRV_PNG_LEN), API_PNG_VALID);

    n = build_png(b, 10);
    /* Content-Length: more than arrived is a cut; fewer is not this PNG's length. */
    assert_int_equal(api_png_check(b, n, (int64_t)n + 1), API_PNG_TRUNCATED);
    assert_int_equal(api_png_check(b, n, (int64_t)n - 1), API_PNG_FOREIGN);
    /* Every cut after the signature, with or without a Content-Length that matches it,
     * inside a chunk's header, data or CRC: truncated. A cut between chunks leaves a PNG
     * without IEND, which is no PNG (SPEC 6, RELIABILITY T9: not retried). */
    const size_t ends[] = {8, 8 + 25, 8 + 25 + 22};
    for (size_t k = 8; k < n; k++) {
        bool boundary = k == ends[0] || k == ends[1] || k == ends[2];
        enum api_png want = boundary ? API_PNG_FOREIGN : API_PNG_TRUNCATED;
        if (api_png_check(b, k, -1) != want || api_png_check(b, k, (int64_t)k) != want)
            fail_msg("cut at %zu of %zu: not %s", k, n, boundary ? "foreign" : "truncated");
    }
    assert_int_equal(n - 12, ends[2]);
    /* Cut inside the signature: not a PNG (SPEC: it must start with the signature). */
    assert_int_equal(api_png_check(b, 7, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(b, 1, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(NULL, 0, -1), API_PNG_FOREIGN);
    /* IEND followed by anything. */
    memcpy(t, b, n);
    t[n] = 0;
    assert_int_equal(api_png_check(t, n + 1, -1), API_PNG_FOREIGN);
    /* IEND with data (length 4), whole or cut. */
    memcpy(t, b, n - 12);
    memcpy(t + n - 12, "\0\0\0\4IEND\1\2\3\4\0\0\0\0", 16);
    assert_int_equal(api_png_check(t, n + 4, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(t, n - 2, -1), API_PNG_FOREIGN);
    /* A chunk length past the end: the chunk is cut. */
    memcpy(t, b, n);
    t[8 + 12 + 13 + 3] = 200; /* IDAT's length: 10 -> 200 */
    assert_int_equal(api_png_check(t, n, -1), API_PNG_TRUNCATED);
    assert_int_equal(api_png_check(t, n, (int64_t)n), API_PNG_TRUNCATED);
    /* A length over 2^31-1 is no PNG, even where the body ends. */
    memcpy(t, b, n);
    t[8 + 12 + 13] = 0x80;
    assert_int_equal(api_png_check(t, n, -1), API_PNG_FOREIGN);
    t[8 + 12 + 13] = 0xff;
    assert_int_equal(api_png_check(t, n, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(t, 8 + 12 + 13 + 8, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(t, 8 + 12 + 13 + 4, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(t, 8 + 12 + 13 + 3, -1), API_PNG_TRUNCATED);
    /* Bad signature. */
    memcpy(t, b, n);
    t[1] = 'p';
    assert_int_equal(api_png_check(t, n, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(t, n - 5, -1), API_PNG_FOREIGN);
    /* IHDR not first: IDAT first, whole or cut. */
    memcpy(t, b, n);
    memcpy(t + 12, "IDAT", 4);
    assert_int_equal(api_png_check(t, n, -1), API_PNG_FOREIGN);
    assert_int_equal(api_png_check(t, 16, -1), API_PNG_FOREIGN);
    /* IEND first. */
    memcpy(t, b, 8);
    memcpy(t + 8, "\0\0\0\0IEND\0\0\0\0", 12);
    assert_int_equal(api_png_check(t, 20, -1), API_PNG_FOREIGN);
    /* Not a PNG at all. */
    const char *html = "<html><body>Service Unavailable</body></html>";
    assert_int_equal(api_png_check((const unsigned char *)html, strlen(html), -1), API_PNG_FOREIGN);
}

/* ---- the gateway's error body ---- */

static void expect_gw(const char *body, const char *code, const char *msg)
{
    char c[32], m[256];
    api_gateway_error((const unsigned char *)body, body ? strlen(body) : 0, c, sizeof(c), m,
                      sizeof(m));
    assert_string_equal(c, code);
    assert_string_equal(m, msg);
}

static void test_gateway_error(void **state)
{
    (void)state;
    expect_gw("{\"error\":{\"errorCode\":\"200\",\"message\":\"Authentication Failed\","
              "\"details\":\"Invalid authentication information.\"}}",
              "200", "Authentication Failed");
    expect_gw("{\"error\":{\"errorCode\":400,\"message\":\"Quota Exceeded\"}}", "400",
              "Quota Exceeded");
    expect_gw(" {\"error\":{\"errorCode\":\"300\"}}\r\n", "300", "");
    expect_gw("{\"errorCode\":\"410\",\"message\":\"Throttle Limited\"}", "410",
              "Throttle Limited");
    /* Wrong types, junk, nothing. */
    expect_gw("{\"error\":{\"errorCode\":4.5,\"message\":7}}", "", "");
    expect_gw("{\"error\":{\"errorCode\":null,\"message\":[\"x\"]}}", "", "");
    expect_gw("{\"error\":\"boom\"}", "", "");
    expect_gw("[1,2,3]", "", "");
    expect_gw("<html>502 Bad Gateway</html>", "", "");
    expect_gw("{\"error\":{\"errorCode\":\"200\"", "", "");
    expect_gw("{\"error\":{\"errorCode\":\"200\"}} trailing", "", "");
    expect_gw("", "", "");
    expect_gw(NULL, "", "");
    /* Long values are cut to the buffers, the message at a UTF-8 boundary. */
    char body[1200];
    char longcode[100];
    memset(longcode, '7', 99);
    longcode[99] = '\0';
    char longmsg[601] = "";
    for (int i = 0; i < 200; i++)
        strcat(longmsg, "\xed\x95\x9c"); /* 한, 3 bytes */
    snprintf(body, sizeof(body), "{\"error\":{\"errorCode\":\"%s\",\"message\":\"%s\"}}", longcode,
             longmsg);
    char c[32], m[256];
    api_gateway_error((const unsigned char *)body, strlen(body), c, sizeof(c), m, sizeof(m));
    assert_int_equal(strlen(c), 31);
    assert_int_equal(strlen(m), 255); /* 85 whole characters */
    assert_memory_equal(m, longmsg, 255);
    /* Deep nesting is refused by the parser, not a crash. */
    char deep[4096];
    memset(deep, '[', 3000);
    deep[3000] = '\0';
    expect_gw(deep, "", "");
}

/* ---- lists ---- */

static void test_parse_items(void **state)
{
    (void)state;
    struct api_item *it = NULL;
    size_t n = 99;
    const char *ok = "[{\"id\":\"d1\",\"name\":\"web\"},{\"id\":42,\"name\":null},"
                     "{\"id\":\"d3\",\"extra\":{\"x\":[1,2]},\"dashboardId\":\"zz\"},"
                     "{\"id\":18446744073709551615,\"name\":\"big\"},{\"id\":-5,\"name\":7}]";
    assert_int_equal(api_parse_items((const unsigned char *)ok, strlen(ok), "id", &it, &n, NULL),
                     0);
    assert_int_equal(n, 5);
    assert_string_equal(it[0].id, "d1");
    assert_string_equal(it[0].name, "web");
    assert_string_equal(it[1].id, "42");
    assert_string_equal(it[1].name, "42");
    assert_string_equal(it[2].id, "d3");
    assert_string_equal(it[2].name, "d3");
    assert_string_equal(it[3].id, "18446744073709551615");
    assert_string_equal(it[4].id, "-5");
    assert_string_equal(it[4].name, "-5");
    api_items_free(it, n);

    const char *widgets = "[{\"dashboardId\":\"d1\",\"name\":\"cpu\",\"widgetId\":\"w/1\"}]";
    assert_int_equal(
        api_parse_items((const unsigned char *)widgets, strlen(widgets), "widgetId", &it, &n, NULL),
        0);
    assert_int_equal(n, 1);
    assert_string_equal(it[0].id, "w/1");
    assert_string_equal(it[0].name, "cpu");
    api_items_free(it, n);

    /* Ids that cannot be asked for (nor configured) are left out and counted: ".", "..",
     * control characters, empty, a NUL inside. A missing id or one of another type fails
     * the whole list (below). */
    const char *odd = "[{\"id\":\".\"},{\"id\":\"ok\",\"name\":\".\"},{\"id\":\"..\"},"
                      "{\"id\":\"c\\u0001\"},{\"id\":\"d\\u007f\"},{\"id\":\"...\"},"
                      "{\"id\":\"a\\u00e9\"},{\"id\":\"\"},{\"id\":\"a\\u0000b\"}]";
    size_t left = 99;
    assert_int_equal(api_parse_items((const unsigned char *)odd, strlen(odd), "id", &it, &n, &left),
                     0);
    assert_int_equal(n, 3);
    assert_int_equal(left, 6);
    assert_string_equal(it[0].id, "ok");
    assert_string_equal(it[0].name, ".");
    assert_string_equal(it[1].id, "...");
    assert_string_equal(it[2].id, "a\xc3\xa9");
    api_items_free(it, n);
    assert_true(api_id_addressable("x") && api_id_addressable("...") && api_id_addressable(".a"));
    assert_false(api_id_addressable(NULL) || api_id_addressable("") || api_id_addressable(".") ||
                 api_id_addressable("..") || api_id_addressable("a\tb") ||
                 api_id_addressable("\x7f") || api_id_addressable("\x1f"));

    const char *empty = " [ ] \n";
    assert_int_equal(
        api_parse_items((const unsigned char *)empty, strlen(empty), "id", &it, &n, NULL), 0);
    assert_int_equal(n, 0);
    api_items_free(it, n);

    const char *bad[] = {
        "{\"id\":\"d1\"}",        /* not an array */
        "\"text\"",               /* not an array */
        "[{\"id\":\"d1\"}",       /* cut off */
        "[{\"id\":\"d1\"}] x",    /* trailing junk */
        "[{\"name\":\"no id\"}]", /* no id */
        "[{\"id\":null}]",        /* null id */
        "[{\"id\":1.5}]",         /* not an integer */
        "[{\"id\":true}]",        /* wrong type */
        "[\"d1\"]",               /* element not an object */
        "[{\"widgetId\":\"w\"}]", /* the other key */
        "<html></html>",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        it = (struct api_item *)1;
        n = 7;
        int rc =
            api_parse_items((const unsigned char *)bad[i], strlen(bad[i]), "id", &it, &n, NULL);
        if (rc != -EIO)
            fail_msg("\"%s\": rc %d", bad[i], rc);
        assert_null(it);
        assert_int_equal(n, 0);
    }
    /* A body with a NUL byte, and one over 4 MiB. */
    const unsigned char nul[] = "[{\"id\":\"d\"}]\0";
    assert_int_equal(api_parse_items(nul, sizeof(nul), "id", &it, &n, NULL), -EIO);
    size_t big = API_JSON_MAX + 1;
    unsigned char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '[';
    huge[big - 1] = ']';
    assert_int_equal(api_parse_items(huge, big, "id", &it, &n, NULL), -EIO);
    free(huge);
    api_items_free(NULL, 0);
}

/* Strict JSON (RFC 8259 as json-c's strict mode reads it): no comments, nothing but
 * blanks after the value, no NUL. The first two bodies come from the input with which
 * fuzz_api_json found a comment accepted before an empty list
 * (tests/fuzz/corpus/api_json/list-comment-regress). */
static void test_json_strict(void **state)
{
    (void)state;
    struct api_item *it = NULL;
    size_t n = 0;
    const char *bad[] = {
        "000//x\n[]",             /* the fuzzer's input, taken whole as a body */
        "//x\n[]",                /* its body (after the 3 option bytes) */
        "/* c */[]",              /* a block comment before */
        "[]// c",                 /* and after */
        "[] /* c */",             /* after blanks */
        "[{\"id\":\"d1\"}//x\n]", /* inside */
        "[{\"id\":\"d1\"},]",     /* a trailing comma */
        "[{\"id\":\"d1\"}]\f",    /* a form feed is no JSON blank */
        "[{\"id\":\"d1\"}] ]",    /* trailing garbage */
        "[{\"id\":\"d1\"}][]",    /* a second value */
        "[{'id':'d1'}]",          /* single quotes */
        "[{id:\"d1\"}]",          /* a bare key */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        it = (struct api_item *)1;
        n = 7;
        int rc =
            api_parse_items((const unsigned char *)bad[i], strlen(bad[i]), "id", &it, &n, NULL);
        if (rc != -EIO)
            fail_msg("\"%s\": rc %d", bad[i], rc);
        assert_null(it);
        assert_int_equal(n, 0);
    }
    /* A NUL after the value is not a blank. */
    const unsigned char nul[] = "[] \0 ";
    assert_int_equal(api_parse_items(nul, sizeof(nul) - 1, "id", &it, &n, NULL), -EIO);
    /* Blanks around the value are fine. */
    const char *ok = "\r\n\t [{\"id\":\"d1\",\"name\":\"web\"}] \t\r\n";
    assert_int_equal(api_parse_items((const unsigned char *)ok, strlen(ok), "id", &it, &n, NULL),
                     0);
    assert_int_equal(n, 1);
    assert_string_equal(it[0].id, "d1");
    assert_string_equal(it[0].name, "web");
    api_items_free(it, n);

    /* An error body is read by the same rules: anything else gives no errorCode. */
    expect_gw("\n{\"error\":{\"errorCode\":\"410\",\"message\":\"Throttle Limited\"}}\r\n", "410",
              "Throttle Limited");
    expect_gw("{\"error\":{\"errorCode\":\"410\",\"message\":\"x\"}}\n<html>", "", "");
    expect_gw("{\"error\":{\"errorCode\":\"410\",\"message\":\"x\"}}//c", "", "");
    expect_gw("/*c*/{\"error\":{\"errorCode\":\"410\",\"message\":\"x\"}}", "", "");
    expect_gw("{\"error\":{\"errorCode\":\"410\",/*c*/\"message\":\"x\"}}", "", "");
    expect_gw("{\"errorCode\":\"410\",}", "", "");
}

/* ---- backoff, budget, names ---- */

static void test_backoff(void **state)
{
    (void)state;
    /* Caps: 250, 500, 1000, 2000, 4000, then 5000 for every later retry. */
    const int64_t caps[] = {250, 500, 1000, 2000, 4000, 5000, 5000, 5000, 5000, 5000};
    for (int r = 1; r <= 10; r++) {
        int64_t cap = caps[r - 1];
        assert_int_equal(api_backoff_ms(r, 0), 0);
        assert_int_equal(api_backoff_ms(r, (uint64_t)cap), cap);
        assert_int_equal(api_backoff_ms(r, (uint64_t)cap + 1), 0);
        int64_t max = 0;
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (int i = 0; i < 20000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            int64_t d = api_backoff_ms(r, x);
            assert_true(d >= 0 && d <= cap);
            if (d > max)
                max = d;
        }
        assert_true(max > cap * 9 / 10); /* the whole range is used */
    }
    assert_int_equal(api_backoff_ms(64, UINT64_MAX), (int64_t)(UINT64_MAX % 5001));
    assert_true(api_backoff_ms(1000000, UINT64_MAX) <= 5000);
    assert_true(api_backoff_ms(0, UINT64_MAX) <= 250);
}

static void test_budget(void **state)
{
    (void)state;
    struct api_budget b;
    api_budget_init(&b);
    assert_int_equal(b.milli, 10000);
    api_budget_first_try(&b); /* capped at 10 tokens */
    assert_int_equal(b.milli, 10000);
    for (int i = 0; i < 10; i++)
        assert_true(api_budget_take_retry(&b));
    assert_false(api_budget_take_retry(&b)); /* empty: final at once */
    assert_int_equal(b.milli, 0);
    for (int i = 0; i < 9; i++)
        api_budget_first_try(&b);
    assert_int_equal(b.milli, 900);
    assert_false(api_budget_take_retry(&b)); /* 0.9 tokens is no token */
    api_budget_first_try(&b);
    assert_true(api_budget_take_retry(&b)); /* 10 first tries earn one retry */
    assert_int_equal(b.milli, 0);
    for (int i = 0; i < 500; i++)
        api_budget_first_try(&b);
    assert_int_equal(b.milli, 10000);
}

static void test_errno_names(void **state)
{
    (void)state;
    assert_string_equal(api_errno_name(-EIO), "EIO");
    assert_string_equal(api_errno_name(-ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(api_errno_name(-EAGAIN), "EAGAIN");
    assert_string_equal(api_errno_name(-EACCES), "EACCES");
    assert_string_equal(api_errno_name(-ENOENT), "ENOENT");
    assert_string_equal(api_errno_name(-EINVAL), "EINVAL");
    assert_string_equal(api_errno_name(-ENOMEM), "ENOMEM");
    assert_string_equal(api_errno_name(-EISDIR), "EISDIR");
    assert_string_equal(api_errno_name(EIO), "EIO");
    assert_string_equal(api_errno_name(-99999), "EUNKNOWN");
}

/* ---- x-ncp-dmn_cd ---- */

/* Which domain code a client sends (SPEC 1): the configured one, else FIN for exactly
 * the financial gateway's host, else none. */
static void test_domain_code_rule(void **state)
{
    (void)state;
    static const struct {
        const char *endpoint, *configured, *want;
    } cases[] = {
        {"https://cw.apigw.ntruss.com", NULL, NULL},
        {"https://cw.apigw.gov-ntruss.com", NULL, NULL},
        {"https://cw.apigw.fin-ntruss.com", NULL, "FIN"},
        {"https://cw.apigw.fin-ntruss.com:443", NULL, "FIN"},
        {"https://cw.apigw.fin-ntruss.com/", NULL, "FIN"},
        {"https://CW.ApiGw.FIN-ntruss.com", NULL, "FIN"}, /* host names ignore case */
        {"https://x.cw.apigw.fin-ntruss.com", NULL, NULL},
        {"https://cw.apigw.fin-ntruss.com.example", NULL, NULL},
        {"https://cw.apigw.fin-ntruss.co", NULL, NULL},
        {"https://apigw.fin-ntruss.com", NULL, NULL},
        {"http://127.0.0.1:8080", NULL, NULL},
        {"cw.apigw.fin-ntruss.com", NULL, NULL}, /* not scheme://host */
        {NULL, NULL, NULL},
        /* A configured code always wins, on any endpoint. */
        {"https://cw.apigw.fin-ntruss.com", "PUB", "PUB"},
        {"https://cw.apigw.ntruss.com", "GOV", "GOV"},
        {"https://cw.apigw.gov-ntruss.com", "FIN", "FIN"},
        {"http://127.0.0.1:8080", "GOV", "GOV"},
        {NULL, "PUB", "PUB"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = api_domain_code(cases[i].endpoint, cases[i].configured);
        if (!cases[i].want ? got != NULL : !got || strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu (%s, %s): got %s, want %s", i,
                     cases[i].endpoint ? cases[i].endpoint : "NULL",
                     cases[i].configured ? cases[i].configured : "NULL", got ? got : "NULL",
                     cases[i].want ? cases[i].want : "NULL");
        if (cases[i].configured)
            assert_ptr_equal(got, cases[i].configured);
    }
}

/* How many "x-ncp-dmn_cd:" lines request i carries, and the value of the first
 * (malloc'd) or NULL. */
static int domain_headers(struct srv *s, int i, char **value)
{
    char *head = srv_request(s, i);
    assert_non_null(head);
    int n = 0;
    for (const char *p = head; (p = strcasestr(p, "\r\nx-ncp-dmn_cd:")) != NULL; p += 2)
        n++;
    *value = srv_header(head, "x-ncp-dmn_cd");
    free(head);
    return n;
}

/* ---- loopback calls ---- */

struct fx {
    struct srv *s;
    struct api *api;
    struct cfg cfg;
    char endpoint[64];
};

/* A client of a new loopback server, with max_connections and max_requests_per_second
 * as given (fx_new: 4 and no rate limit). */
static struct fx *fx_new_limits(int timeout_ms, int retries, int max_connections, int per_second)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->s = srv_start(NULL);
    snprintf(f->endpoint, sizeof(f->endpoint), "http://127.0.0.1:%d", f->s->port);
    f->cfg.endpoint = f->endpoint;
    f->cfg.access_key = ACCESS_KEY;
    f->cfg.secret_key = SECRET;
    f->cfg.timeout_ms = timeout_ms;
    f->cfg.connect_timeout_ms = timeout_ms < 1000 ? timeout_ms : 1000;
    f->cfg.retries = retries;
    f->cfg.max_connections = max_connections;
    f->cfg.max_requests_per_second = per_second;
    f->cfg.max_image_bytes = 1 << 20;
    char *err = NULL;
    f->api = api_new(&f->cfg, 0, NULL, &err);
    if (!f->api)
        fail_msg("api_new: %s", err);
    return f;
}

static struct fx *fx_new(int timeout_ms, int retries)
{
    return fx_new_limits(timeout_ms, retries, 4, 0);
}

static void fx_free(struct fx *f)
{
    api_free(f->api);
    srv_stop(f->s);
    free(f);
}

static struct srv_reply png_reply(const char *extra_headers)
{
    unsigned char png[SRV_PNG_LEN];
    srv_png(png);
    return srv_http("200 OK", extra_headers, png, sizeof(png), true);
}

static struct srv_reply json_reply(const char *status, const char *headers, const char *json)
{
    char h[512];
    snprintf(h, sizeof(h), "Content-Type: application/json\r\n%s", headers);
    return srv_http(status, h, json, strlen(json), true);
}

static char *http_date(int64_t unix_ms)
{
    time_t t = (time_t)(unix_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[64], *out = NULL;
    strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (asprintf(&out, "Date: %s\r\n", buf) < 0)
        abort();
    return out;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Request i carries a valid v2 signature for its own target and timestamp. Returns the
 * timestamp. */
static int64_t check_signed(struct srv *s, int i, const char *want_target)
{
    char *head = srv_request(s, i);
    assert_non_null(head);
    char *target = srv_target(head);
    char *ts = srv_header(head, "x-ncp-apigw-timestamp");
    char *ak = srv_header(head, "x-ncp-iam-access-key");
    char *sig = srv_header(head, "x-ncp-apigw-signature-v2");
    char *ua = srv_header(head, "User-Agent");
    assert_non_null(target);
    assert_non_null(ts);
    assert_non_null(ak);
    assert_non_null(sig);
    if (want_target)
        assert_string_equal(target, want_target);
    assert_string_equal(ak, ACCESS_KEY);
    assert_string_equal(ua, "insightfs/" INSIGHTFS_VERSION);
    assert_non_null(strstr(head, " HTTP/1.1\r\n"));
    assert_null(srv_header(head, "Expect"));
    for (const char *p = ts; *p; p++)
        assert_true(*p >= '0' && *p <= '9');
    char want[SIGN_V2_LEN + 1];
    assert_int_equal(sign_v2(SECRET, "GET", target, ts, ACCESS_KEY, want), 0);
    assert_string_equal(sig, want);
    int64_t t = strtoll(ts, NULL, 10);
    free(head);
    free(target);
    free(ts);
    free(ak);
    free(sig);
    free(ua);
    return t;
}

/* stderr capture for the log lines. */
struct cap {
    int saved;
    char path[64];
};

static void cap_start(struct cap *c)
{
    strcpy(c->path, "/tmp/insightfs-test-api-log-XXXXXX");
    int fd = mkstemp(c->path);
    assert_true(fd >= 0);
    c->saved = dup(2);
    dup2(fd, 2);
    close(fd);
}

static char *cap_stop(struct cap *c)
{
    dup2(c->saved, 2);
    close(c->saved);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = fopen(c->path, "r");
    assert_non_null(f);
    if (getdelim(&buf, &len, '\0', f) < 0) { /* nothing logged: buf is not a string */
        assert_true(feof(f));
        free(buf);
        buf = NULL;
    }
    fclose(f);
    unlink(c->path);
    return buf ? buf : strdup("");
}

struct acct {
    atomic_long reserved;
};

static int acct_reserve(void *arg, size_t n)
{
    atomic_fetch_add(&((struct acct *)arg)->reserved, (long)n);
    return 0;
}

static void acct_release(void *arg, size_t n)
{
    atomic_fetch_sub(&((struct acct *)arg)->reserved, (long)n);
}

static int fetch(struct fx *f, struct api_image *img, struct api_result *r,
                 const struct http_mem *mem)
{
    return api_fetch_image(f->api, "dash1", "w1", 1733097600000, 1733148000000, VPATH_RES_AUTO, 0,
                           mem, img, r);
}

/* A good fetch: headers signed correctly, the body and its accounting handed over. */
static void test_fetch_ok_signed(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    srv_push(f->s, png_reply(""));
    struct acct a = {0};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct api_image img;
    struct api_result r;
    int64_t before = wall_ms();
    assert_int_equal(fetch(f, &img, &r, &mem), 0);
    int64_t after = wall_ms();
    unsigned char png[SRV_PNG_LEN];
    srv_png(png);
    assert_int_equal(img.len, SRV_PNG_LEN);
    assert_memory_equal(img.data, png, SRV_PNG_LEN);
    assert_int_equal(atomic_load(&a.reserved), SRV_PNG_LEN);
    assert_int_equal(r.outcome, API_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.tries, 1);
    assert_string_equal(r.error_code, "");

    assert_int_equal(srv_requests(f->s), 1);
    int64_t ts = check_signed(f->s, 0, IMG_TARGET);
    assert_true(ts >= before && ts <= after);
    assert_int_equal(img.signed_at_ms, ts);

    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.failures, 0);
    assert_int_equal(st.retries, 0);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.bytes, SRV_PNG_LEN);
    free(img.data);
    fx_free(f);

    /* The test clock offset moves the signed timestamp. */
    f = fx_new(2000, 0);
    api_free(f->api);
    f->api = api_new(&f->cfg, 3600000, NULL, NULL);
    srv_push(f->s, png_reply(""));
    before = wall_ms();
    assert_int_equal(fetch(f, &img, NULL, NULL), 0);
    ts = check_signed(f->s, 0, IMG_TARGET);
    assert_true(ts >= before + 3600000 && ts <= wall_ms() + 3600000);
    free(img.data);
    fx_free(f);
}

/* 503 then 200: exactly two requests, each signed afresh; stats count the retry. */
static void test_retry_503_then_200(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    srv_push(f->s,
             json_reply("503 Service Unavailable", "",
                        "{\"error\":{\"errorCode\":\"500\",\"message\":\"Endpoint Error\"}}"));
    srv_push(f->s, png_reply(""));
    struct acct a = {0};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct api_image img;
    struct api_result r;
    assert_int_equal(fetch(f, &img, &r, &mem), 0);
    assert_int_equal(r.tries, 2);
    assert_int_equal(srv_requests(f->s), 2);
    check_signed(f->s, 0, IMG_TARGET);
    check_signed(f->s, 1, IMG_TARGET);
    assert_true(srv_request_time(f->s, 1) - srv_request_time(f->s, 0) <= srv_tf(250 + 100));
    assert_int_equal(atomic_load(&a.reserved), SRV_PNG_LEN); /* the 503 body was released */
    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.retries, 1);
    free(img.data);
    fx_free(f);
}

/* 404: final at once; the exact warn line. */
static void test_404_not_retried(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    srv_push(f->s, json_reply("404 Not Found", "",
                              "{\"error\":{\"errorCode\":\"300\",\"message\":\"Not Found\"}}"));
    struct acct a = {0};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, &mem);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -ENOENT);
    assert_null(img.data);
    assert_int_equal(atomic_load(&a.reserved), 0);
    assert_int_equal(srv_requests(f->s), 1);
    assert_int_equal(r.outcome, API_HTTP);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.error_code, "300");
    assert_string_equal(r.message, "Not Found");
    assert_int_equal(r.tries, 1);
    assert_string_equal(log, "insightfs: warn: upstream: GET " IMG_TARGET
                             ": HTTP 404 errorCode=300 \"Not Found\" after 1 tries: ENOENT\n");
    free(log);
    fx_free(f);
}

/* 413 with the gateway's errorCode 430 (request entity too large, SPEC 1): EIO at once,
 * never retried (SPEC 6: other 4xx), with the exact warn line. */
static void test_413_not_retried(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    srv_push(
        f->s,
        json_reply("413 Request Entity Too Large", "Retry-After: 0\r\n",
                   "{\"error\":{\"errorCode\":\"430\",\"message\":\"Request Entity Too Large\"}}"));
    srv_push(f->s, png_reply("")); /* a retry would get this */
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, NULL);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_null(img.data);
    assert_int_equal(srv_requests(f->s), 1);
    assert_int_equal(r.outcome, API_HTTP);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.error_code, "430");
    assert_string_equal(r.message, "Request Entity Too Large");
    assert_int_equal(r.tries, 1);
    assert_string_equal(log, "insightfs: warn: upstream: GET " IMG_TARGET
                             ": HTTP 413 errorCode=430 \"Request Entity Too Large\" after 1 tries: "
                             "EIO\n");
    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.requests, 1);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.retries, 0);
    free(log);
    fx_free(f);
}

/* 429 with errorCode 400 (quota exceeded) is final; 429/420 (rate limited) is retried. */
static void test_429(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    srv_push(f->s, json_reply("429 Too Many Requests", "Retry-After: 0\r\n",
                              "{\"error\":{\"errorCode\":400,\"message\":\"Quota Exceeded\"}}"));
    srv_push(f->s, json_reply("429 Too Many Requests", "Retry-After: 0\r\n",
                              "{\"error\":{\"errorCode\":\"420\",\"message\":\"Rate Limited\"}}"));
    srv_push(f->s, png_reply(""));
    struct api_image img;
    struct api_result r;
    assert_int_equal(fetch(f, &img, &r, NULL), -EAGAIN);
    assert_string_equal(r.error_code, "400");
    assert_int_equal(r.tries, 1);
    assert_int_equal(srv_requests(f->s), 1);

    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    assert_int_equal(r.tries, 2);
    assert_int_equal(srv_requests(f->s), 3);
    free(img.data);
    fx_free(f);
}

/* D = 3 x 500 ms. A Retry-After of 30 s cannot be waited for: fail now, 1 request. */
static void test_retry_after_past_deadline(void **state)
{
    (void)state;
    struct fx *f = fx_new(500, 2);
    srv_push(f->s, json_reply("503 Service Unavailable", "Retry-After: 30\r\n", "{}"));
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int64_t t0 = http_mono_ms();
    int rc = fetch(f, &img, &r, NULL);
    int64_t took = http_mono_ms() - t0;
    char *log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_true(took < srv_tf(400));
    assert_int_equal(srv_requests(f->s), 1);
    assert_int_equal(r.tries, 1);
    assert_non_null(strstr(log, ": HTTP 503 errorCode=- \"\" after 1 tries: EIO\n"));
    free(log);
    fx_free(f);
}

/* A server that never answers: ETIMEDOUT by D (2 x 300 ms), two tries. */
static void test_hung_server_deadline(void **state)
{
    (void)state;
    struct fx *f = fx_new(300, 1);
    struct srv_reply hang = srv_http("200 OK", "", "", 0, true);
    hang.split = 0;
    hang.hang = true;
    srv_set_default(f->s, hang);
    struct api_image img;
    struct api_result r;
    int64_t t0 = http_mono_ms();
    assert_int_equal(fetch(f, &img, &r, NULL), -ETIMEDOUT);
    int64_t took = http_mono_ms() - t0;
    assert_true(took >= 550 && took <= srv_tf(900));
    assert_int_equal(r.outcome, API_TIMEOUT);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.tries, 2);
    assert_int_equal(srv_requests(f->s), 2);
    fx_free(f);
}

/* 401 whose Date shows our timestamp 10 minutes off: retried once with the gateway's
 * time, which then stays applied; a plain 401 is not retried. */
static void test_401_skew(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 0); /* no retries: the skew retry needs none */
    int64_t skew = 600000;
    char *date = http_date(wall_ms() + skew);
    srv_push(f->s, json_reply("401 Unauthorized", date,
                              "{\"error\":{\"errorCode\":\"200\",\"message\":"
                              "\"Authentication Failed\"}}"));
    srv_push(f->s, png_reply(date));
    free(date);
    uint64_t gen0 = api_clock_generation(f->api);
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, NULL);
    char *log = cap_stop(&c);
    assert_int_equal(rc, 0);
    assert_int_equal(r.tries, 2);
    assert_int_equal(srv_requests(f->s), 2);
    int64_t ts0 = check_signed(f->s, 0, IMG_TARGET);
    int64_t ts1 = check_signed(f->s, 1, IMG_TARGET);
    assert_true(ts1 - ts0 > skew - 5000 && ts1 - ts0 < skew + 5000);
    assert_int_equal(img.signed_at_ms, ts1);
    assert_true(r.skew_known);
    assert_true(r.skew_ms > skew - 5000 && r.skew_ms < skew + 5000);
    assert_true(api_now_ms(f->api) - wall_ms() > skew - 5000);
    assert_true(api_clock_generation(f->api) != gen0);
    /* The Date header has whole seconds: 599 or 600 s. */
    assert_true(strstr(log, "warn: local clock is 599 s behind the gateway (Date header)") ||
                strstr(log, "warn: local clock is 600 s behind the gateway (Date header)"));
    free(img.data);
    free(log);

    /* The offset stays applied: the next call signs with the gateway's time at once. */
    date = http_date(wall_ms() + skew);
    srv_push(f->s, png_reply(date));
    free(date);
    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    assert_int_equal(r.tries, 1);
    int64_t ts2 = check_signed(f->s, 2, IMG_TARGET);
    assert_true(ts2 - wall_ms() > skew - 5000);
    free(img.data);
    fx_free(f);

    /* A 401 with the gateway's clock in step: EACCES, one request. */
    f = fx_new(2000, 2);
    date = http_date(wall_ms());
    srv_push(f->s, json_reply("401 Unauthorized", date,
                              "{\"error\":{\"errorCode\":\"200\",\"message\":"
                              "\"Authentication Failed\"}}"));
    free(date);
    assert_int_equal(fetch(f, &img, &r, NULL), -EACCES);
    assert_int_equal(r.tries, 1);
    assert_int_equal(srv_requests(f->s), 1);
    assert_true(r.skew_known);
    assert_true(r.skew_ms > -5000 && r.skew_ms < 5000);
    fx_free(f);

    /* A Date over 24 h off is ignored: no retry, "now" untouched. */
    f = fx_new(2000, 2);
    date = http_date(wall_ms() + 3LL * 86400 * 1000);
    srv_push(f->s, json_reply("401 Unauthorized", date, "{}"));
    free(date);
    cap_start(&c);
    rc = fetch(f, &img, &r, NULL);
    log = cap_stop(&c);
    assert_int_equal(rc, -EACCES);
    assert_int_equal(srv_requests(f->s), 1);
    assert_true(abs((int)(api_now_ms(f->api) - wall_ms())) < 5000);
    assert_non_null(strstr(log, "over 24 h, ignored"));
    free(log);
    fx_free(f);
}

/* A 200 that is not a PNG: EIO, not retried, logged with its first bytes escaped. */
static void test_not_png(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    const char *html = "<html>\"oops\"\n</html>";
    srv_push(f->s, srv_http("200 OK", "", html, strlen(html), true));
    struct acct a = {0};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, &mem);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_int_equal(r.outcome, API_BAD_BODY);
    assert_int_equal(srv_requests(f->s), 1);
    assert_int_equal(atomic_load(&a.reserved), 0);
    assert_string_equal(log, "insightfs: warn: upstream: GET " IMG_TARGET
                             ": HTTP 200 errorCode=- \"not a valid PNG\" after 1 tries: EIO"
                             " body=\"<html>\\x22oops\\x22\\x0a</html>\"\n");
    free(log);
    fx_free(f);
}

/* A 200 without Content-Length whose connection closes inside the PNG's last chunk is
 * a cut transfer (SPEC 6): retried, and the full PNG that follows is the answer. */
static void test_png_cut_retried(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    unsigned char png[256];
    size_t n = build_png(png, 100);
    struct srv_reply cut = srv_http("200 OK", "Connection: close\r\n", png, n - 60, false);
    cut.close_after = true;
    struct srv_reply full = srv_http("200 OK", "Connection: close\r\n", png, n, false);
    full.close_after = true;
    srv_push(f->s, cut);
    srv_push(f->s, full);
    struct acct a = {0};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct api_image img;
    struct api_result r;
    assert_int_equal(fetch(f, &img, &r, &mem), 0);
    assert_int_equal(r.tries, 2);
    assert_int_equal(srv_requests(f->s), 2);
    assert_int_equal(img.len, n);
    assert_memory_equal(img.data, png, n);
    assert_int_equal(atomic_load(&a.reserved), (long)n); /* the cut body was released */
    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.retries, 1);
    free(img.data);
    fx_free(f);

    /* Cut inside IEND, even with a Content-Length that matches the cut body: retried
     * until the retries are spent, then EIO without the body in the warn line. */
    f = fx_new(2000, 1);
    srv_set_default(f->s, srv_http("200 OK", "", png, n - 5, true));
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, NULL);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_null(img.data);
    assert_int_equal(r.outcome, API_BAD_BODY);
    assert_int_equal(r.tries, 2);
    assert_int_equal(srv_requests(f->s), 2);
    assert_string_equal(log, "insightfs: warn: upstream: GET " IMG_TARGET
                             ": HTTP 200 errorCode=- \"PNG cut off\" after 2 tries: EIO\n");
    free(log);
    fx_free(f);
}

/* A foreign 200 without Content-Length is final at once, like one with it: no signature,
 * or chunks that are complete but wrong (data after IEND, no IEND at all). */
static void test_png_foreign_final(void **state)
{
    (void)state;
    unsigned char png[256];
    size_t n = build_png(png, 10);
    png[n++] = 0; /* a byte after IEND */
    const char *html = "<html>oops</html>";
    const struct {
        const void *body;
        size_t len;
    } bodies[] = {{html, strlen(html)}, {png, n}, {png, n - 13}};
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct fx *f = fx_new(2000, 2);
        struct srv_reply rep =
            srv_http("200 OK", "Connection: close\r\n", bodies[i].body, bodies[i].len, false);
        rep.close_after = true;
        srv_set_default(f->s, rep);
        struct api_image img;
        struct api_result r;
        struct cap c;
        cap_start(&c);
        int rc = fetch(f, &img, &r, NULL);
        char *log = cap_stop(&c);
        assert_int_equal(rc, -EIO);
        assert_int_equal(r.outcome, API_BAD_BODY);
        assert_int_equal(r.tries, 1);
        assert_int_equal(srv_requests(f->s), 1);
        assert_non_null(strstr(log, "\"not a valid PNG\" after 1 tries: EIO body=\""));
        free(log);
        fx_free(f);
    }
}

/* Every failure draws on the budget: with retries = 2, five calls spend 10 tokens
 * (first tries earn back 0.4), so the sixth failed call gets no retry. timeout_ms is
 * long enough that the 16 failures, all within a few seconds, do not open the breaker. */
static void test_budget_empties(void **state)
{
    (void)state;
    struct fx *f = fx_new(10000, 2);
    struct srv_reply fail = json_reply("503 Service Unavailable", "Retry-After: 0\r\n", "{}");
    srv_set_default(f->s, fail);
    struct api_image img;
    struct api_result r;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fetch(f, &img, &r, NULL), -EIO);
        assert_int_equal(r.tries, 3);
    }
    assert_int_equal(srv_requests(f->s), 15);
    int64_t t0 = http_mono_ms();
    assert_int_equal(fetch(f, &img, &r, NULL), -EIO);
    assert_int_equal(r.tries, 1);
    assert_true(http_mono_ms() - t0 < srv_tf(200));
    assert_int_equal(srv_requests(f->s), 16);
    fx_free(f);
}

/* The list calls: targets, parsing, a malformed answer. */
static void test_lists(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    srv_push(f->s, json_reply("200 OK", "",
                              "[{\"id\":\"d1\",\"name\":\"web\"},{\"id\":7,\"name\":null}]"));
    srv_push(f->s, json_reply("200 OK", "",
                              "[{\"dashboardId\":\"a/b\",\"name\":\"cpu\",\"widgetId\":11}]"));
    srv_push(f->s, json_reply("200 OK", "", "{\"not\":\"a list\"}"));
    struct api_item *it = NULL;
    size_t n = 0;
    struct api_result r;
    assert_int_equal(api_list_dashboards(f->api, 0, &it, &n, &r), 0);
    assert_int_equal(n, 2);
    assert_string_equal(it[1].id, "7");
    assert_string_equal(it[1].name, "7");
    api_items_free(it, n);
    check_signed(f->s, 0, "/cw_fea/real/cw/api/chart/dashboard");

    assert_int_equal(api_list_widgets(f->api, "a/b", 0, &it, &n, &r), 0);
    assert_int_equal(n, 1);
    assert_string_equal(it[0].id, "11");
    assert_string_equal(it[0].name, "cpu");
    api_items_free(it, n);
    check_signed(f->s, 1, "/cw_fea/real/cw/api/chart/dashboard/a%2Fb/widgets");

    struct cap c;
    cap_start(&c);
    int rc = api_list_dashboards(f->api, 0, &it, &n, &r);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_null(it);
    assert_int_equal(n, 0);
    assert_int_equal(r.outcome, API_BAD_BODY);
    assert_int_equal(srv_requests(f->s), 3);
    assert_string_equal(log, "insightfs: warn: upstream: GET /cw_fea/real/cw/api/chart/dashboard"
                             ": HTTP 200 errorCode=- \"not a JSON list\" after 1 tries: EIO"
                             " body=\"{\\x22not\\x22:\\x22a list\\x22}\"\n");
    free(log);
    assert_int_equal(api_list_widgets(f->api, "", 0, &it, &n, &r), -EINVAL);
    assert_int_equal(api_list_widgets(f->api, "..", 0, &it, &n, &r), -EINVAL);
    fx_free(f);
}

/* x-ncp-dmn_cd on the wire: absent by default (a loopback endpoint is not the financial
 * gateway); with api.domain_code, exactly once on every try and every call, outside the
 * signed string (check_signed recomputes the signature without it). */
static void test_domain_code_header(void **state)
{
    (void)state;
    char *v = NULL;
    struct api_image img;
    struct api_result r;
    struct fx *f = fx_new(2000, 2);
    srv_push(f->s, png_reply(""));
    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    free(img.data);
    check_signed(f->s, 0, IMG_TARGET);
    assert_int_equal(domain_headers(f->s, 0, &v), 0);
    assert_null(v);

    api_free(f->api);
    f->cfg.domain_code = "GOV";
    f->api = api_new(&f->cfg, 0, NULL, NULL);
    assert_non_null(f->api);
    srv_push(f->s,
             json_reply("503 Service Unavailable", "Retry-After: 0\r\n",
                        "{\"error\":{\"errorCode\":\"500\",\"message\":\"Endpoint Error\"}}"));
    srv_push(f->s, png_reply(""));
    srv_push(f->s, json_reply("200 OK", "", "[{\"id\":\"d1\",\"name\":\"web\"}]"));
    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    free(img.data);
    assert_int_equal(r.tries, 2);
    struct api_item *it = NULL;
    size_t n = 0;
    assert_int_equal(api_list_dashboards(f->api, 0, &it, &n, &r), 0);
    api_items_free(it, n);
    assert_int_equal(srv_requests(f->s), 4);
    for (int i = 1; i < 4; i++) {
        check_signed(f->s, i, i < 3 ? IMG_TARGET : "/cw_fea/real/cw/api/chart/dashboard");
        assert_int_equal(domain_headers(f->s, i, &v), 1);
        assert_string_equal(v, "GOV");
        free(v);
    }
    fx_free(f);
}

/* Debug logging of a failing call shows neither the secret, the signature nor the
 * access key; a refused port reads as unreachable. */
static void test_no_secrets_in_logs(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 1);
    srv_push(f->s, json_reply("500 Internal Server Error", "Retry-After: 0\r\n",
                              "{\"error\":{\"errorCode\":\"900\",\"message\":\"Unexpected\"}}"));
    srv_push(f->s, json_reply("401 Unauthorized", "",
                              "{\"error\":{\"errorCode\":\"210\",\"message\":"
                              "\"Permission Denied\"}}"));
    log_set_level(LOG_LVL_DEBUG);
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, NULL);
    char *log = cap_stop(&c);
    log_set_level(LOG_LVL_INFO);
    assert_int_equal(rc, -EACCES);
    assert_string_equal(r.error_code, "210");
    assert_non_null(strstr(log, "debug: upstream: GET "));
    assert_non_null(strstr(log, "errorCode=900 \"Unexpected\" (try 1, retrying in"));
    assert_non_null(strstr(log, "warn: upstream: GET "));
    assert_non_null(strstr(log, "errorCode=210 \"Permission Denied\" after 2 tries: EACCES"));
    assert_null(strstr(log, SECRET));
    assert_null(strstr(log, ACCESS_KEY));
    for (int i = 0; i < 2; i++) {
        char *head = srv_request(f->s, i);
        char *sig = srv_header(head, "x-ncp-apigw-signature-v2");
        assert_null(strstr(log, sig));
        free(sig);
        free(head);
    }
    free(log);
    fx_free(f);

    /* Unreachable: the curl error becomes the message. */
    struct cfg cfg = {0};
    char ep[64];
    snprintf(ep, sizeof(ep), "http://127.0.0.1:%d", srv_dead_port());
    cfg.endpoint = ep;
    cfg.access_key = ACCESS_KEY;
    cfg.secret_key = SECRET;
    cfg.timeout_ms = 1000;
    cfg.connect_timeout_ms = 1000;
    cfg.retries = 0;
    cfg.max_connections = 1;
    cfg.max_image_bytes = 1024;
    struct api *api = api_new(&cfg, 0, NULL, NULL);
    assert_non_null(api);
    struct api_item *it;
    size_t n;
    cap_start(&c);
    rc = api_list_dashboards(api, 0, &it, &n, &r);
    log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_int_equal(r.outcome, API_UNREACHABLE);
    assert_true(r.message[0] != '\0');
    assert_non_null(strstr(log, ": HTTP - errorCode=- \""));
    assert_non_null(strstr(log, "after 1 tries: EIO"));
    free(log);
    api_free(api);
}

static void test_api_new_errors(void **state)
{
    (void)state;
    struct cfg cfg = {0};
    char *err = NULL;
    assert_null(api_new(NULL, 0, NULL, &err));
    assert_non_null(err);
    free(err);
    cfg.endpoint = "https://cw.apigw.ntruss.com";
    cfg.access_key = ACCESS_KEY;
    cfg.timeout_ms = cfg.connect_timeout_ms = 1000;
    cfg.max_connections = 1;
    cfg.max_image_bytes = 1024;
    assert_null(api_new(&cfg, 0, NULL, &err));
    assert_string_equal(err, "api.secret_key: not set");
    free(err);
    cfg.secret_key = SECRET;
    cfg.endpoint = "ftp://x";
    assert_null(api_new(&cfg, 0, NULL, &err));
    assert_non_null(strstr(err, "api.endpoint"));
    free(err);
    cfg.endpoint = "https://cw.apigw.ntruss.com";
    struct api *api = api_new(&cfg, 0, NULL, &err);
    assert_non_null(api);
    api_free(api);
    api_free(NULL);
}

/* ---- circuit breaker ---- */

/* The rules, with times injected: which tries count, when it opens, the probe's
 * interval, what closes it. */
static void test_breaker_rules(void **state)
{
    (void)state;
    assert_int_equal(api_try_class(false, 0, HTTP_KIND_TIMEOUT, true), API_TRY_NONE);
    assert_int_equal(api_try_class(true, 0, HTTP_KIND_LOCAL, false), API_TRY_NONE);
    assert_int_equal(api_try_class(true, 0, HTTP_KIND_TIMEOUT, true), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 0, HTTP_KIND_UNREACHABLE, true), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 0, HTTP_KIND_TLS, false), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 503, HTTP_KIND_STATUS, true), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 500, HTTP_KIND_STATUS, true), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 429, HTTP_KIND_STATUS, false), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 200, HTTP_KIND_BAD_BODY, true), API_TRY_FAILED);
    assert_int_equal(api_try_class(true, 200, HTTP_KIND_BAD_BODY, false), API_TRY_ANSWER);
    assert_int_equal(api_try_class(true, 200, HTTP_KIND_OK, false), API_TRY_ANSWER);
    assert_int_equal(api_try_class(true, 404, HTTP_KIND_STATUS, false), API_TRY_ANSWER);
    assert_int_equal(api_try_class(true, 302, HTTP_KIND_STATUS, false), API_TRY_ANSWER);
    assert_int_equal(api_try_class(true, 401, HTTP_KIND_STATUS, false), API_TRY_ANSWER);

    struct api_breaker b;
    api_breaker_init(&b, 10000);
    const int to = 200;
    /* Three failures within timeout_ms: not yet; a fourth once the quiet time is reached. */
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, 10000, 10010, to),
                     API_BREAKER_SAME);
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, 10020, 10030, to),
                     API_BREAKER_SAME);
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, 10040, 10050, to),
                     API_BREAKER_SAME);
    assert_int_equal(api_breaker_admit(&b, 10060), API_ADMIT_GO);
    assert_int_equal(api_breaker_note(&b, API_TRY_NONE, false, -ETIMEDOUT, 10060, 10300, to),
                     API_BREAKER_SAME);
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -ETIMEDOUT, 10100, 10200, to),
                     API_BREAKER_OPENED);
    assert_true(b.open);
    assert_int_equal(b.err, -ETIMEDOUT);
    /* The probe: 1 s after the last failed try, one at a time; the interval doubles
     * to 30 s while probes fail, and a failed try of a straggler moves its start. */
    assert_int_equal(api_breaker_admit(&b, 11199), API_ADMIT_REFUSE);
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, 10150, 10250, to),
                     API_BREAKER_SAME);
    assert_int_equal(api_breaker_admit(&b, 11249), API_ADMIT_REFUSE);
    assert_int_equal(api_breaker_admit(&b, 11250), API_ADMIT_PROBE);
    assert_int_equal(api_breaker_admit(&b, 20000), API_ADMIT_REFUSE); /* one out already */
    int64_t t = 11450;
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, true, -EIO, 11250, t, to),
                     API_BREAKER_SAME);
    const int64_t want[] = {2000, 4000, 8000, 16000, 30000, 30000};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(b.probe_ms, want[i]);
        assert_int_equal(api_breaker_admit(&b, t + want[i] - 1), API_ADMIT_REFUSE);
        assert_int_equal(api_breaker_admit(&b, t + want[i]), API_ADMIT_PROBE);
        t += want[i] + 200;
        assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, true, -EIO, t - 200, t, to),
                         API_BREAKER_SAME);
    }
    /* A probe that sent nothing frees the turn without doubling. */
    assert_int_equal(api_breaker_admit(&b, t + 30000), API_ADMIT_PROBE);
    assert_int_equal(api_breaker_note(&b, API_TRY_NONE, true, -ETIMEDOUT, t, t + 30000, to),
                     API_BREAKER_SAME);
    assert_int_equal(b.probe_ms, 30000);
    /* Any answer closes it, even a 404 to the probe. */
    assert_int_equal(api_breaker_admit(&b, t + 30001), API_ADMIT_PROBE);
    assert_int_equal(api_breaker_note(&b, API_TRY_ANSWER, true, -ENOENT, t, t + 30010, to),
                     API_BREAKER_CLOSED);
    assert_int_equal(api_breaker_admit(&b, t + 30011), API_ADMIT_GO);

    /* Failures amid answers never open it, however long it runs. */
    api_breaker_init(&b, 50000);
    t = 50000;
    for (int i = 0; i < 100; i++, t += 1000) {
        enum api_try_class cls = i % 3 == 2 ? API_TRY_ANSWER : API_TRY_FAILED;
        assert_int_equal(api_breaker_note(&b, cls, false, -EIO, t, t + 500, to), API_BREAKER_SAME);
    }
    /* After a long idle time, three failed tries in a row open it at once: no answer has
     * come for timeout_ms (SPEC 6 counts from the last answer). */
    t = 1000000;
    assert_int_equal(api_breaker_note(&b, API_TRY_ANSWER, false, 0, 0, 1000, to), API_BREAKER_SAME);
    for (int i = 0; i < 2; i++)
        assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, t + i, t + i + 10, to),
                         API_BREAKER_SAME);
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, t + 2, t + 12, to),
                     API_BREAKER_OPENED);
    /* An answer from a try still out closes an open breaker too. */
    assert_int_equal(api_breaker_note(&b, API_TRY_FAILED, false, -EIO, t + 5, t + 300, to),
                     API_BREAKER_SAME);
    assert_int_equal(api_breaker_note(&b, API_TRY_ANSWER, false, 0, t, t + 301, to),
                     API_BREAKER_CLOSED);
}

static struct srv_reply hang_reply(void)
{
    struct srv_reply r = srv_http("200 OK", "", "", 0, true);
    r.split = 0;
    r.hang = true;
    return r;
}

/* Fetch until the breaker opens (at most 3 calls): the 3rd failed try opens it. Returns
 * the start time of the last call. */
static int64_t open_breaker(struct fx *f)
{
    struct api_image img;
    struct api_result r;
    int64_t last = 0;
    for (int i = 0; i < 3 && !api_is_down(f->api); i++) {
        last = http_mono_ms();
        assert_int_equal(fetch(f, &img, &r, NULL), -ETIMEDOUT);
    }
    assert_true(api_is_down(f->api));
    assert_int_equal(srv_requests(f->s), 3);
    return last;
}

/* Fetch every 10 ms until a call is not refused by the open breaker, within limit_ms.
 * Returns the call's errno; *start its start time. */
static int until_probe(struct fx *f, int64_t limit_ms, struct api_result *r, int64_t *start)
{
    int64_t until = http_mono_ms() + limit_ms;
    struct api_image img;
    do {
        *start = http_mono_ms();
        int rc = fetch(f, &img, r, NULL);
        if (rc == 0)
            free(img.data);
        if (!r->fast_fail)
            return rc;
        assert_int_equal(r->tries, 0);
        nanosleep(&(struct timespec){0, 10 * 1000000}, NULL);
    } while (http_mono_ms() < until);
    fail_msg("no probe within %lld ms", (long long)limit_ms);
    return 0;
}

static int count_str(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* A hung API: 3 failed tries and a timeout_ms without answers open the breaker; calls
 * then fail at once without a request and without a log line; a probe goes out 1 s
 * after the last failed try as one try with no retry; the next after 2 s; a 404 to it
 * closes the breaker and calls go through again. */
static void test_breaker_hung_api(void **state)
{
    (void)state;
    struct fx *f = fx_new(200, 2);
    srv_set_default(f->s, hang_reply());
    struct cap c;
    cap_start(&c);
    int64_t t0 = http_mono_ms();
    int64_t last = open_breaker(f);
    int64_t opened = http_mono_ms();
    char *log = cap_stop(&c);
    assert_true(opened - t0 >= 400 && opened - t0 <= srv_tf(1500));
    assert_int_equal(count_str(log, "insightfs: warn: upstream down: ETIMEDOUT\n"), 1);
    free(log);
    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.down, 1);
    assert_int_equal(st.down_total, 1);
    assert_int_equal(st.requests, 3);

    /* Fast-fails: no request, no line, the errno that opened it. */
    struct api_image img;
    struct api_result r;
    struct api_item *it;
    size_t n;
    cap_start(&c);
    int64_t t1 = http_mono_ms();
    int rc = fetch(f, &img, &r, NULL);
    int rc2 = api_list_dashboards(f->api, 0, &it, &n, NULL);
    int64_t took = http_mono_ms() - t1;
    log = cap_stop(&c);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(rc2, -ETIMEDOUT);
    assert_null(img.data);
    assert_int_equal(r.fast_fail, 1);
    assert_int_equal(r.tries, 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.outcome, API_TIMEOUT);
    assert_true(took < srv_tf(100));
    assert_string_equal(log, "");
    free(log);
    assert_int_equal(srv_requests(f->s), 3);

    /* The probe: about 1 s after the last failed try; one try although retries = 2. */
    int64_t p1;
    rc = until_probe(f, srv_tf(2000), &r, &p1);
    int64_t p1_end = http_mono_ms();
    assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(r.fast_fail, 0);
    assert_int_equal(r.tries, 1);
    assert_int_equal(srv_requests(f->s), 4);
    assert_true(p1_end >= last + 1000);
    assert_true(p1 <= opened + srv_tf(1100));
    assert_true(api_is_down(f->api));

    /* The API answers again (404): the next probe, 2 s after the failed one, closes it. */
    srv_set_default(f->s, json_reply("404 Not Found", "",
                                     "{\"error\":{\"errorCode\":\"300\",\"message\":\"x\"}}"));
    int64_t p2;
    cap_start(&c);
    rc = until_probe(f, srv_tf(3000), &r, &p2);
    log = cap_stop(&c);
    assert_int_equal(rc, -ENOENT);
    assert_int_equal(r.fast_fail, 0);
    assert_int_equal(r.tries, 1);
    assert_true(http_mono_ms() >= p1 + 2000);
    assert_true(p2 <= p1_end + srv_tf(2100));
    assert_int_equal(srv_requests(f->s), 5);
    assert_false(api_is_down(f->api));
    assert_non_null(strstr(log, "insightfs: info: upstream up after "));
    free(log);
    api_get_stats(f->api, &st);
    assert_int_equal(st.down, 0);
    assert_int_equal(st.down_total, 1);

    srv_push(f->s, png_reply(""));
    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    assert_int_equal(r.tries, 1);
    assert_int_equal(srv_requests(f->s), 6);
    free(img.data);
    fx_free(f);
}

/* 503, 503, 200, ... where each 503 takes 160 ms to come, so two of them already span
 * timeout_ms (300 ms) without an answer: the count never reaches 3, it never opens. And
 * three 503s in a row within timeout_ms of the first do not open it either. */
static void test_breaker_failures_amid_answers(void **state)
{
    (void)state;
    struct fx *f = fx_new(300, 0);
    for (int i = 0; i < 5; i++) {
        for (int k = 0; k < 2; k++) {
            struct srv_reply slow = json_reply("503 Service Unavailable", "", "{}");
            slow.split = 0;
            slow.delay_ms = 160;
            srv_push(f->s, slow);
        }
        srv_push(f->s, png_reply(""));
    }
    struct api_image img;
    struct api_result r;
    for (int i = 0; i < 15; i++) {
        int rc = fetch(f, &img, &r, NULL);
        assert_int_equal(rc, i % 3 == 2 ? 0 : -EIO);
        assert_int_equal(r.fast_fail, 0);
        assert_int_equal(r.tries, 1);
        assert_false(api_is_down(f->api));
        if (rc == 0)
            free(img.data);
    }
    assert_int_equal(srv_requests(f->s), 15);
    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.down_total, 0);
    assert_int_equal(st.failures, 10);
    fx_free(f);

    f = fx_new(2000, 2);
    for (int i = 0; i < 3; i++)
        srv_push(f->s, json_reply("503 Service Unavailable", "Retry-After: 0\r\n", "{}"));
    srv_push(f->s, png_reply(""));
    assert_int_equal(fetch(f, &img, &r, NULL), -EIO);
    assert_int_equal(r.tries, 3);
    assert_false(api_is_down(f->api));
    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    assert_int_equal(srv_requests(f->s), 4);
    free(img.data);
    fx_free(f);
}

struct bg_fetch {
    struct fx *f;
    int rc;
    struct api_result r;
    int64_t start, end;
};

static void *bg_fetch_main(void *arg)
{
    struct bg_fetch *b = arg;
    struct api_image img;
    b->start = http_mono_ms();
    b->rc = fetch(b->f, &img, &b->r, NULL);
    b->end = http_mono_ms();
    if (b->rc == 0)
        free(img.data);
    return NULL;
}

/* Start b's fetch in the background, capturing the log from now on. */
static void bg_start(struct bg_fetch *b, pthread_t *th, struct cap *c)
{
    cap_start(c);
    assert_int_equal(pthread_create(th, NULL, bg_fetch_main, b), 0);
}

/* This thread's fetch, whose tries open the breaker behind the background one (th):
 * its errno in *rc and result in *r, when it ended in *opened. Joins th and returns the
 * log captured since bg_start. */
static char *fetch_opening(struct fx *f, pthread_t th, struct cap *c, int *rc, struct api_result *r,
                           int64_t *opened)
{
    struct api_image img;
    *rc = fetch(f, &img, r, NULL);
    *opened = http_mono_ms();
    pthread_join(th, NULL);
    return cap_stop(c);
}

/* A retry sleeping in a 2 s backoff (503 with Retry-After: 2) fails at once when
 * another thread's try opens the breaker. */
static void test_breaker_cancels_backoff(void **state)
{
    (void)state;
    struct fx *f = fx_new(300, 7);
    srv_push(f->s, json_reply("503 Service Unavailable", "Retry-After: 2\r\n", "{}"));
    srv_set_default(f->s, hang_reply());
    struct bg_fetch b = {.f = f};
    pthread_t th;
    struct cap c;
    bg_start(&b, &th, &c);
    assert_int_equal(srv_wait_requests(f->s, 1, (int)srv_tf(2000)), 1);
    /* This call's two hung tries are the 2nd and 3rd failures: the second opens it. */
    struct api_result r;
    int rc;
    int64_t opened;
    char *log = fetch_opening(f, th, &c, &rc, &r, &opened);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(r.tries, 2);
    assert_int_equal(r.fast_fail, 1);
    assert_int_equal(b.rc, -ETIMEDOUT);
    assert_int_equal(b.r.tries, 1);
    assert_int_equal(b.r.status, 503);
    assert_int_equal(b.r.fast_fail, 1);
    assert_true(b.end - b.start < 1900);
    assert_true(b.end <= opened + srv_tf(100));
    assert_int_equal(srv_requests(f->s), 3);
    assert_string_equal(log, "insightfs: warn: upstream down: ETIMEDOUT\n");
    free(log);
    fx_free(f);
}

/* A 200 whose Date says the gateway is ahead by ahead_ms; the fetch succeeds. */
static void fetch_with_date(struct fx *f, int64_t ahead_ms)
{
    char *date = http_date(wall_ms() + ahead_ms);
    srv_push(f->s, png_reply(date));
    free(date);
    struct api_image img;
    struct api_result r;
    assert_int_equal(fetch(f, &img, &r, NULL), 0);
    assert_int_equal(r.tries, 1);
    free(img.data);
}

/* SPEC 6's clock skew from plain 200 answers: 30 s is measured but not applied; 120 s is
 * applied and logged; 150 s is applied without a second line; 240 s (120 s from the
 * logged value) is logged again. A 401 whose Date is 2 minutes off the request is a real
 * 401: EACCES, not retried. */
static void test_skew_from_answers(void **state)
{
    (void)state;
    struct fx *f = fx_new(2000, 2);
    struct cap c;
    cap_start(&c);
    fetch_with_date(f, 30000);
    int64_t d = api_now_ms(f->api) - wall_ms();
    assert_true(d > -2000 && d < 2000);
    fetch_with_date(f, 120000);
    d = api_now_ms(f->api) - wall_ms();
    assert_true(d > 115000 && d < 125000);
    fetch_with_date(f, 150000);
    d = api_now_ms(f->api) - wall_ms();
    assert_true(d > 145000 && d < 155000);
    fetch_with_date(f, 240000);
    d = api_now_ms(f->api) - wall_ms();
    assert_true(d > 235000 && d < 245000);
    char *date = http_date(api_now_ms(f->api) + 120000);
    srv_push(f->s, json_reply("401 Unauthorized", date,
                              "{\"error\":{\"errorCode\":\"200\",\"message\":"
                              "\"Authentication Failed\"}}"));
    free(date);
    struct api_image img;
    struct api_result r;
    assert_int_equal(fetch(f, &img, &r, NULL), -EACCES);
    assert_int_equal(r.tries, 1);
    assert_int_equal(srv_requests(f->s), 5);
    char *log = cap_stop(&c);
    assert_int_equal(count_str(log, "warn: local clock is "), 3);
    assert_true(strstr(log, "local clock is 119 s behind") ||
                strstr(log, "local clock is 120 s behind") ||
                strstr(log, "local clock is 121 s behind"));
    assert_true(strstr(log, "local clock is 239 s behind") ||
                strstr(log, "local clock is 240 s behind") ||
                strstr(log, "local clock is 241 s behind"));
    free(log);
    fx_free(f);
}

/* A fleet pacer that refuses its first turn and grants every later one. */
struct pacer_once {
    atomic_int calls;
};

static int pacer_refuse_first(void *arg, int64_t deadline_ms, int64_t *wait_ns)
{
    (void)deadline_ms;
    struct pacer_once *p = arg;
    *wait_ns = 0;
    return atomic_fetch_add(&p->calls, 1) == 0 ? -ETIMEDOUT : 0;
}

/* A fleet pacer whose first turn is wait_ns away and every later one is now. */
struct pacer_late {
    atomic_int calls;
    int64_t first_wait_ns;
};

static int pacer_first_late(void *arg, int64_t deadline_ms, int64_t *wait_ns)
{
    (void)deadline_ms;
    struct pacer_late *p = arg;
    *wait_ns = atomic_fetch_add(&p->calls, 1) == 0 ? p->first_wait_ns : 0;
    return 0;
}

/* The probe gets no turn from the fleet's pacer: it was never sent, so the next call
 * probes (and closes the breaker when the API answers). Before, the breaker waited
 * for that probe's answer forever and refused every call until a restart. */
static void test_breaker_probe_without_turn(void **state)
{
    (void)state;
    struct fx *f = fx_new(200, 0);
    srv_set_default(f->s, hang_reply());
    struct pacer_once once = {0};
    api_set_pacer(f->api, &(struct api_pacer){pacer_refuse_first, &once});
    atomic_store(&once.calls, 1); /* open_breaker's three calls get their turns */
    (void)open_breaker(f);
    atomic_store(&once.calls, 0); /* the next turn asked for is refused: the probe's */
    struct api_result r;
    int64_t start;
    struct cap c;
    cap_start(&c);
    assert_int_equal(until_probe(f, srv_tf(3000), &r, &start), -ETIMEDOUT);
    char *log = cap_stop(&c);
    assert_int_equal(r.tries, 0);
    assert_int_equal(srv_requests(f->s), 3);
    assert_int_equal(atomic_load(&once.calls), 1);
    assert_non_null(strstr(log, "no slot of the fleet rate limit before the deadline"));
    free(log);
    srv_set_default(f->s, png_reply(""));
    assert_int_equal(until_probe(f, srv_tf(3000), &r, &start), 0);
    assert_int_equal(r.tries, 1);
    assert_int_equal(api_is_down(f->api), 0);
    assert_int_equal(srv_requests(f->s), 4);
    fx_free(f);
}

/* A try waiting 10 s for its fleet pacer turn fails at once, unsent, when another
 * thread's tries open the breaker (SPEC 6: an opening fails every unsent try at once).
 * Before, the pacer slept through the opening and the try failed at its turn. */
static void test_breaker_cancels_pacer_wait(void **state)
{
    (void)state;
    struct fx *f = fx_new(300, 40); /* D = 12.3 s: the 10 s turn is within it */
    srv_set_default(f->s, hang_reply());
    struct pacer_late late = {.first_wait_ns = 10000000000};
    api_set_pacer(f->api, &(struct api_pacer){pacer_first_late, &late});
    struct bg_fetch b = {.f = f};
    pthread_t th;
    struct cap c;
    bg_start(&b, &th, &c);
    int64_t until = http_mono_ms() + srv_tf(2000);
    while (atomic_load(&late.calls) == 0 && http_mono_ms() < until)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    assert_int_equal(atomic_load(&late.calls), 1); /* the background call waits its turn */
    /* This call's three hung tries open the breaker (its turns are now). */
    struct api_result r;
    int rc;
    int64_t opened;
    char *log = fetch_opening(f, th, &c, &rc, &r, &opened);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(r.tries, 3);
    assert_true(api_is_down(f->api));
    assert_int_equal(b.rc, -ETIMEDOUT);
    assert_int_equal(b.r.tries, 0);
    assert_int_equal(b.r.fast_fail, 1);
    assert_string_equal(b.r.message, "upstream down (circuit breaker open)");
    assert_true(b.end - b.start < 9000);
    assert_true(b.end <= opened + srv_tf(100));
    assert_int_equal(srv_requests(f->s), 3);
    assert_int_equal(atomic_load(&late.calls), 4); /* called off: no second turn asked */
    assert_string_equal(log, "insightfs: warn: upstream down: ETIMEDOUT\n");
    free(log);
    fx_free(f);
}

/* The probe, admitted while the breaker is open, waits for its fleet pacer turn like any
 * try: the open breaker does not end that wait, and the probe is sent at its turn (and
 * closes the breaker when the API answers). */
static void test_probe_waits_for_its_pacer_turn(void **state)
{
    (void)state;
    struct fx *f = fx_new(200, 0);
    srv_set_default(f->s, hang_reply());
    struct pacer_late late = {.first_wait_ns = 100000000}; /* within D = 200 ms */
    api_set_pacer(f->api, &(struct api_pacer){pacer_first_late, &late});
    atomic_store(&late.calls, 1); /* open_breaker's three calls get their turns at once */
    (void)open_breaker(f);
    atomic_store(&late.calls, 0); /* the next turn asked for, the probe's, is 100 ms away */
    srv_set_default(f->s, png_reply(""));
    struct api_result r;
    int64_t start;
    assert_int_equal(until_probe(f, srv_tf(3000), &r, &start), 0);
    int64_t took = http_mono_ms() - start;
    assert_int_equal(r.tries, 1);
    assert_int_equal(r.fast_fail, 0);
    assert_true(took >= 100);
    assert_int_equal(atomic_load(&late.calls), 1);
    assert_int_equal(api_is_down(f->api), 0);
    assert_int_equal(srv_requests(f->s), 4);
    fx_free(f);
}

/* A retry whose max_requests_per_second turn comes after D is not a try: the call ends
 * with the 503 it got (EIO, one try, one request), not ETIMEDOUT for a try never sent. */
static void test_unsent_retry_keeps_last_errno(void **state)
{
    (void)state;
    /* D = 400 ms x 2; the retry's turn is 1 s after the first request. */
    struct fx *f = fx_new_limits(400, 1, 4, 1);
    srv_push(f->s, json_reply("503 Service Unavailable", "", "{}"));
    struct api_image img;
    struct api_result r;
    struct cap c;
    cap_start(&c);
    int rc = fetch(f, &img, &r, NULL);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -EIO);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.tries, 1);
    assert_int_equal(r.fast_fail, 0);
    assert_int_equal(r.outcome, API_HTTP);
    assert_int_equal(srv_requests(f->s), 1);
    assert_non_null(strstr(log, "HTTP 503 errorCode=- \"\" after 1 tries: EIO\n"));
    free(log);
    fx_free(f);
}

/* One request per second, four calls at once, a hung API (timeout 300 ms): the tries at
 * 0, 1 and 2 s fail and the third opens the breaker at about 2.3 s; the fourth call,
 * waiting for its turn at 3 s, is called off then (SPEC 6: opening fails every try not
 * yet sent, at once) - no fourth request, and it ends as a refused call. */
static void test_breaker_calls_off_rate_waits(void **state)
{
    (void)state;
    struct fx *f = fx_new_limits(300, 10, 4, 1);
    srv_set_default(f->s, hang_reply());
    struct bg_fetch b[4];
    pthread_t th[4];
    struct cap c;
    cap_start(&c);
    for (int i = 0; i < 4; i++) {
        b[i] = (struct bg_fetch){.f = f};
        assert_int_equal(pthread_create(&th[i], NULL, bg_fetch_main, &b[i]), 0);
    }
    int64_t until = http_mono_ms() + srv_tf(5000), opened = 0;
    while (!opened && http_mono_ms() < until) {
        if (api_is_down(f->api))
            opened = http_mono_ms();
        else
            nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *log = cap_stop(&c);
    assert_true(opened > 0);
    assert_int_equal(srv_requests(f->s), 3);
    int waiting = -1;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(b[i].rc, -ETIMEDOUT);
        if (b[i].r.tries == 0)
            waiting = i;
        else
            assert_int_equal(b[i].r.tries, 1);
    }
    assert_true(waiting >= 0);
    assert_int_equal(b[waiting].r.fast_fail, 1);
    assert_int_equal(b[waiting].r.status, 0);
    assert_true(b[waiting].end <= opened + srv_tf(100));
    assert_non_null(strstr(log, "insightfs: warn: upstream down: ETIMEDOUT\n"));
    free(log);
    fx_free(f);
}

/* Two clients of one account, as after a reload that made a new client while the old
 * one still works: A (timeout 3 s, one connection) has a try out and a second call
 * waiting for its connection; B's hung tries (timeout 300 ms) open the breaker. A's
 * waiting call is called off at once (no try, fast-fail), not when A's connection frees
 * up; A's try that was out ends at its own timeout. */
static void test_opening_calls_off_every_client(void **state)
{
    (void)state;
    struct fx *a = fx_new_limits(3000, 2, 1, 0);
    srv_set_default(a->s, hang_reply());
    struct cfg bcfg = a->cfg;
    bcfg.timeout_ms = 300;
    bcfg.connect_timeout_ms = 300;
    bcfg.retries = 5; /* room for three tries within its deadline */
    bcfg.max_connections = 4;
    char *err = NULL;
    struct fx b = {.s = a->s, .cfg = bcfg};
    b.api = api_new(&b.cfg, 0, a->api, &err);
    assert_non_null(b.api);
    struct bg_fetch out = {.f = a}, waiting = {.f = a};
    pthread_t t_out, t_wait;
    struct cap c;
    cap_start(&c);
    assert_int_equal(pthread_create(&t_out, NULL, bg_fetch_main, &out), 0);
    assert_int_equal(srv_wait_requests(a->s, 1, (int)srv_tf(2000)), 1);
    /* Waits for A's one connection from now on (B's tries below take 900 ms or more
     * before the breaker opens). */
    assert_int_equal(pthread_create(&t_wait, NULL, bg_fetch_main, &waiting), 0);
    struct api_image img;
    struct api_result r;
    int rc = fetch(&b, &img, &r, NULL);
    int64_t opened = http_mono_ms();
    pthread_join(t_wait, NULL);
    pthread_join(t_out, NULL);
    char *log = cap_stop(&c);
    assert_int_equal(rc, -ETIMEDOUT);
    assert_int_equal(r.tries, 3); /* the third failure opened it: no fourth */
    assert_int_equal(waiting.rc, -ETIMEDOUT);
    assert_int_equal(waiting.r.tries, 0);
    assert_int_equal(waiting.r.fast_fail, 1);
    assert_true(waiting.end <= opened + srv_tf(100));
    assert_int_equal(out.rc, -ETIMEDOUT);
    assert_int_equal(out.r.tries, 1);
    assert_int_equal(srv_requests(a->s), 4);
    assert_int_equal(count_str(log, "insightfs: warn: upstream down: ETIMEDOUT\n"), 1);
    free(log);
    api_free(b.api);
    fx_free(a);
}

/* A call whose try was out while the breaker opened and closed again (a straggling
 * answer) retries normally: the retry is decided after the close, so that opening does
 * not call it off. Timeline (timeout 1.5 s, no answer since the start): A's try is
 * answered 503 after 1.3 s; E's 404 after 0.4 s; meanwhile B (503, 503) and C (503) are
 * the three failures that open the breaker; E's 404 closes it; A's retry is sent and
 * gets the image. */
static void test_retry_after_open_and_close(void **state)
{
    (void)state;
    struct fx *f = fx_new(1500, 1);
    struct srv_reply slow503 = json_reply("503 Service Unavailable", "", "{}");
    slow503.split = 0;
    slow503.delay_ms = 1300;
    srv_push(f->s, slow503);
    struct srv_reply slow404 = json_reply("404 Not Found", "", "{}");
    slow404.split = 0;
    slow404.delay_ms = 400;
    srv_push(f->s, slow404);
    for (int i = 0; i < 3; i++)
        srv_push(f->s, json_reply("503 Service Unavailable", "Retry-After: 0\r\n", "{}"));
    srv_set_default(f->s, png_reply(""));
    nanosleep(&(struct timespec){1, 600 * 1000000}, NULL); /* no answer for timeout_ms */
    struct bg_fetch a = {.f = f}, e = {.f = f};
    pthread_t ta, te;
    assert_int_equal(pthread_create(&ta, NULL, bg_fetch_main, &a), 0);
    assert_int_equal(srv_wait_requests(f->s, 1, (int)srv_tf(2000)), 1);
    assert_int_equal(pthread_create(&te, NULL, bg_fetch_main, &e), 0);
    assert_int_equal(srv_wait_requests(f->s, 2, (int)srv_tf(2000)), 2);
    struct api_image img;
    struct api_result r;
    assert_int_equal(fetch(f, &img, &r, NULL), -EIO); /* B: 503, 503 */
    assert_int_equal(r.tries, 2);
    assert_int_equal(fetch(f, &img, &r, NULL), -EIO); /* C: 503 opens it; no retry */
    assert_int_equal(r.tries, 1);
    assert_true(api_is_down(f->api));
    pthread_join(te, NULL);
    assert_int_equal(e.rc, -ENOENT); /* E's answer closed it */
    pthread_join(ta, NULL);
    assert_int_equal(api_is_down(f->api), 0);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.r.tries, 2);
    assert_int_equal(a.r.fast_fail, 0);
    assert_int_equal(srv_requests(f->s), 6);
    fx_free(f);
}

/* A client built with inherit (a reload that changed timeout_ms and max_connections)
 * keeps the counters, the retry budget and the breaker, even after the old client is
 * freed; another access key starts fresh. */
static void test_inherit_account_state(void **state)
{
    (void)state;
    struct fx *f = fx_new(10000, 2);
    srv_set_default(f->s, json_reply("503 Service Unavailable", "Retry-After: 0\r\n", "{}"));
    struct api_image img;
    struct api_result r;
    /* Three failed calls spend 6 of the 10 tokens (see test_budget_empties). */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fetch(f, &img, &r, NULL), -EIO);
        assert_int_equal(r.tries, 3);
    }
    struct cfg cfg2 = f->cfg;
    cfg2.timeout_ms = 9000;
    cfg2.max_connections = 2;
    struct api *old = f->api;
    f->api = api_new(&cfg2, 0, old, NULL);
    assert_non_null(f->api);
    api_free(old);
    struct api_stats st;
    api_get_stats(f->api, &st);
    assert_int_equal(st.requests, 9);
    assert_int_equal(st.failures, 9);
    assert_int_equal(st.retries, 6);
    /* A fresh budget would allow retries to the 3rd call here. */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fetch(f, &img, &r, NULL), -EIO);
        assert_int_equal(r.tries, 3);
    }
    assert_int_equal(fetch(f, &img, &r, NULL), -EIO);
    assert_int_equal(r.tries, 1);
    api_get_stats(f->api, &st);
    assert_int_equal(st.requests, 16);
    assert_int_equal(st.retries, 10);
    fx_free(f);

    /* The breaker: open on one client, open on its heir; not on another key's. */
    f = fx_new(200, 0);
    srv_set_default(f->s, hang_reply());
    open_breaker(f);
    cfg2 = f->cfg;
    cfg2.timeout_ms = 300;
    struct api *heir = api_new(&cfg2, 0, f->api, NULL);
    assert_non_null(heir);
    assert_true(api_is_down(heir));
    api_get_stats(heir, &st);
    assert_int_equal(st.down, 1);
    assert_int_equal(st.down_total, 1);
    assert_int_equal(st.requests, 3);
    assert_int_equal(api_fetch_image(heir, "dash1", "w1", 1733097600000, 1733148000000,
                                     VPATH_RES_AUTO, 0, NULL, &img, &r),
                     -ETIMEDOUT);
    assert_int_equal(r.fast_fail, 1);
    assert_int_equal(srv_requests(f->s), 3);
    api_free(heir);

    cfg2.access_key = "AKIDOTHERKEY00000000";
    struct api *other = api_new(&cfg2, 0, f->api, NULL);
    assert_non_null(other);
    assert_false(api_is_down(other));
    api_get_stats(other, &st);
    assert_int_equal(st.requests, 0);
    assert_int_equal(st.down_total, 0);
    assert_int_equal(api_fetch_image(other, "dash1", "w1", 1733097600000, 1733148000000,
                                     VPATH_RES_AUTO, 0, NULL, &img, &r),
                     -ETIMEDOUT);
    assert_int_equal(r.fast_fail, 0);
    assert_int_equal(r.tries, 1);
    assert_int_equal(srv_requests(f->s), 4);
    api_free(other);
    fx_free(f);
}

static int group_setup(void **state)
{
    (void)state;
    log_init(0, LOG_LVL_INFO);
    return http_global_init();
}

static int group_teardown(void **state)
{
    (void)state;
    http_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_target),
        cmocka_unit_test(test_png_check),
        cmocka_unit_test(test_gateway_error),
        cmocka_unit_test(test_parse_items),
        cmocka_unit_test(test_json_strict),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_errno_names),
        cmocka_unit_test(test_domain_code_rule),
        cmocka_unit_test(test_api_new_errors),
        cmocka_unit_test(test_fetch_ok_signed),
        cmocka_unit_test(test_retry_503_then_200),
        cmocka_unit_test(test_404_not_retried),
        cmocka_unit_test(test_429),
        cmocka_unit_test(test_413_not_retried),
        cmocka_unit_test(test_retry_after_past_deadline),
        cmocka_unit_test(test_hung_server_deadline),
        cmocka_unit_test(test_401_skew),
        cmocka_unit_test(test_not_png),
        cmocka_unit_test(test_png_cut_retried),
        cmocka_unit_test(test_png_foreign_final),
        cmocka_unit_test(test_budget_empties),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_domain_code_header),
        cmocka_unit_test(test_no_secrets_in_logs),
        cmocka_unit_test(test_breaker_rules),
        cmocka_unit_test(test_breaker_hung_api),
        cmocka_unit_test(test_breaker_failures_amid_answers),
        cmocka_unit_test(test_breaker_cancels_backoff),
        cmocka_unit_test(test_breaker_cancels_pacer_wait),
        cmocka_unit_test(test_probe_waits_for_its_pacer_turn),
        cmocka_unit_test(test_skew_from_answers),
        cmocka_unit_test(test_breaker_probe_without_turn),
        cmocka_unit_test(test_unsent_retry_keeps_last_errno),
        cmocka_unit_test(test_breaker_calls_off_rate_waits),
        cmocka_unit_test(test_retry_after_open_and_close),
        cmocka_unit_test(test_opening_calls_off_every_client),
        cmocka_unit_test(test_inherit_account_state),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
