/* Unit tests for http: the errno table of SPEC 6 row by row (no network), the
 * Retry-After parser against hostile input, escaping, client options, and real
 * transfers against the scripted loopback server of testsrv.h (plain HTTP and TLS with
 * a certificate made at test time by the openssl tool), and the shared certificate
 * store of http_tls.c (through http_int.h). Time-dependent tests wait on conditions
 * with deadlines; no test sleeps blindly. */
#include "insightfs/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "../../src/http_int.h"
#include "testsrv.h"

#define T_RETRY true
#define T_FINAL false

/* ---- the table ---- */

struct want {
    int err; /* positive errno, 0 for success */
    bool retryable;
    enum http_kind kind;
};

static void expect_verdict(int cc, long status, unsigned flags, struct want w)
{
    struct http_verdict v;
    memset(&v, 0x5a, sizeof(v));
    http_classify(cc, status, flags, &v);
    if (v.err != -w.err || v.retryable != w.retryable || v.kind != w.kind)
        fail_msg("curl %d status %ld flags %#x: got err %d retry %d kind %d, want %d %d %d", cc,
                 status, flags, v.err, v.retryable, v.kind, -w.err, w.retryable, w.kind);
}

/* No status line: every CURLcode of libcurl 7.88, written out independently of http.c. */
static void test_table_curl_codes(void **state)
{
    (void)state;
    const struct want gone = {EIO, T_RETRY, HTTP_KIND_UNREACHABLE};
    const struct want proto = {EIO, T_FINAL, HTTP_KIND_UNREACHABLE};
    const struct want local = {EIO, T_FINAL, HTTP_KIND_LOCAL};
    const struct want tls = {EIO, T_FINAL, HTTP_KIND_TLS};
    struct want rows[CURL_LAST];
    for (int i = 0; i < CURL_LAST; i++)
        rows[i] = proto;
    int locals[] = {
        CURLE_UNSUPPORTED_PROTOCOL, CURLE_FAILED_INIT,         CURLE_URL_MALFORMAT,
        CURLE_NOT_BUILT_IN,         CURLE_WRITE_ERROR,         CURLE_UPLOAD_FAILED,
        CURLE_READ_ERROR,           CURLE_HTTP_POST_ERROR,     CURLE_FILE_COULDNT_READ_FILE,
        CURLE_FUNCTION_NOT_FOUND,   CURLE_ABORTED_BY_CALLBACK, CURLE_BAD_FUNCTION_ARGUMENT,
        CURLE_INTERFACE_FAILED,     CURLE_UNKNOWN_OPTION,      CURLE_SETOPT_OPTION_SYNTAX,
        CURLE_SEND_FAIL_REWIND,     CURLE_RECURSIVE_API_CALL,  CURLE_UNRECOVERABLE_POLL};
    int gones[] = {CURLE_COULDNT_RESOLVE_PROXY,
                   CURLE_COULDNT_RESOLVE_HOST,
                   CURLE_COULDNT_CONNECT,
                   CURLE_PARTIAL_FILE,
                   CURLE_GOT_NOTHING,
                   CURLE_SEND_ERROR,
                   CURLE_RECV_ERROR,
                   CURLE_NO_CONNECTION_AVAILABLE,
                   CURLE_QUIC_CONNECT_ERROR,
                   CURLE_PROXY};
    int tlss[] = {CURLE_SSL_ENGINE_NOTFOUND,      CURLE_SSL_ENGINE_SETFAILED,
                  CURLE_SSL_CERTPROBLEM,          CURLE_SSL_CIPHER,
                  CURLE_PEER_FAILED_VERIFICATION, CURLE_USE_SSL_FAILED,
                  CURLE_SSL_ENGINE_INITFAILED,    CURLE_SSL_CACERT_BADFILE,
                  CURLE_SSL_SHUTDOWN_FAILED,      CURLE_SSL_CRL_BADFILE,
                  CURLE_SSL_ISSUER_ERROR,         CURLE_SSL_PINNEDPUBKEYNOTMATCH,
                  CURLE_SSL_INVALIDCERTSTATUS,    CURLE_SSL_CLIENTCERT};
    for (size_t i = 0; i < sizeof(locals) / sizeof(locals[0]); i++)
        rows[locals[i]] = local;
    for (size_t i = 0; i < sizeof(gones) / sizeof(gones[0]); i++)
        rows[gones[i]] = gone;
    for (size_t i = 0; i < sizeof(tlss) / sizeof(tlss[0]); i++)
        rows[tlss[i]] = tls;
    rows[CURLE_OUT_OF_MEMORY] = (struct want){ENOMEM, T_FINAL, HTTP_KIND_LOCAL};
    rows[CURLE_OPERATION_TIMEDOUT] = (struct want){ETIMEDOUT, T_RETRY, HTTP_KIND_TIMEOUT};
    rows[CURLE_SSL_CONNECT_ERROR] = (struct want){EIO, T_RETRY, HTTP_KIND_TLS};
    rows[CURLE_FILESIZE_EXCEEDED] = (struct want){EIO, T_FINAL, HTTP_KIND_BAD_BODY};

    for (int cc = 0; cc < CURL_LAST; cc++)
        expect_verdict(cc, 0, 0, rows[cc]);
    /* Codes this libcurl does not know. */
    expect_verdict(CURL_LAST, 0, 0, local);
    expect_verdict(1000, 0, 0, local);
    expect_verdict(-1, 0, 0, local);
}

/* Every status class with CURLE_OK. */
static void test_table_statuses(void **state)
{
    (void)state;
    const struct want ok = {0, T_FINAL, HTTP_KIND_OK};
    const struct want eio = {EIO, T_FINAL, HTTP_KIND_STATUS};
    const struct want eio_retry = {EIO, T_RETRY, HTTP_KIND_STATUS};
    expect_verdict(CURLE_OK, 200, 0, ok);
    expect_verdict(CURLE_OK, 400, 0, (struct want){EINVAL, T_FINAL, HTTP_KIND_STATUS});
    expect_verdict(CURLE_OK, 401, 0, (struct want){EACCES, T_FINAL, HTTP_KIND_STATUS});
    expect_verdict(CURLE_OK, 403, 0, (struct want){EACCES, T_FINAL, HTTP_KIND_STATUS});
    expect_verdict(CURLE_OK, 404, 0, (struct want){ENOENT, T_FINAL, HTTP_KIND_STATUS});
    expect_verdict(CURLE_OK, 429, 0, (struct want){EAGAIN, T_RETRY, HTTP_KIND_STATUS});
    long fives[] = {500, 501, 502, 503, 504, 505, 599};
    for (size_t i = 0; i < sizeof(fives) / sizeof(fives[0]); i++)
        expect_verdict(CURLE_OK, fives[i], 0, eio_retry);
    long others[] = {100, 101, 102, 199, 201, 202, 204, 206, 299, 300, 301, 302, 303,
                     304, 307, 308, 399, 402, 405, 406, 408, 409, 410, 413, 414, 418,
                     421, 422, 428, 431, 451, 499, 600, 999, 1,   99,  -1};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        expect_verdict(CURLE_OK, others[i], 0, eio);
}

/* A 200 whose body went wrong, statuses with a failed body, and the local flags. */
static void test_table_bodies_and_flags(void **state)
{
    (void)state;
    const struct want cut = {EIO, T_RETRY, HTTP_KIND_BAD_BODY};
    const struct want big = {EIO, T_FINAL, HTTP_KIND_BAD_BODY};
    expect_verdict(CURLE_OK, 200, HTTP_F_TRUNCATED, cut);
    expect_verdict(CURLE_PARTIAL_FILE, 200, HTTP_F_TRUNCATED, cut);
    expect_verdict(CURLE_PARTIAL_FILE, 200, 0, cut);
    expect_verdict(CURLE_OPERATION_TIMEDOUT, 200, 0, cut); /* stalled body */
    expect_verdict(CURLE_RECV_ERROR, 200, 0, cut);         /* reset mid-body */
    expect_verdict(CURLE_WRITE_ERROR, 200, HTTP_F_OVERSIZE, big);
    expect_verdict(CURLE_FILESIZE_EXCEEDED, 200, 0, big);
    expect_verdict(CURLE_WRITE_ERROR, 200, HTTP_F_NOROOM, big);
    expect_verdict(CURLE_WRITE_ERROR, 200, HTTP_F_NOMEM,
                   (struct want){ENOMEM, T_FINAL, HTTP_KIND_LOCAL});
    /* After a status line the status decides, whatever happened to the body. */
    expect_verdict(CURLE_OPERATION_TIMEDOUT, 503, 0, (struct want){EIO, T_RETRY, HTTP_KIND_STATUS});
    expect_verdict(CURLE_PARTIAL_FILE, 404, HTTP_F_TRUNCATED,
                   (struct want){ENOENT, T_FINAL, HTTP_KIND_STATUS});
    expect_verdict(CURLE_FILESIZE_EXCEEDED, 429, HTTP_F_OVERSIZE,
                   (struct want){EAGAIN, T_RETRY, HTTP_KIND_STATUS});
    expect_verdict(CURLE_RECV_ERROR, 302, 0, (struct want){EIO, T_FINAL, HTTP_KIND_STATUS});
    /* Nothing sent: no slot or turn before the deadline; setup errors. */
    expect_verdict(CURLE_OK, 0, HTTP_F_NOT_SENT,
                   (struct want){ETIMEDOUT, T_RETRY, HTTP_KIND_TIMEOUT});
    expect_verdict(CURLE_OK, 0, HTTP_F_SETUP, (struct want){EIO, T_FINAL, HTTP_KIND_LOCAL});
    expect_verdict(CURLE_OK, 0, HTTP_F_NOMEM, (struct want){ENOMEM, T_FINAL, HTTP_KIND_LOCAL});
}

/* ---- Retry-After ---- */

static void expect_ra(const char *v, int64_t now_ms, int rc, int64_t delay)
{
    int64_t d = -12345;
    int got = http_parse_retry_after(v, now_ms, &d);
    if (got != rc || (rc == 0 && d != delay))
        fail_msg("Retry-After \"%.40s\": rc %d delay %lld, want %d %lld", v, got, (long long)d, rc,
                 (long long)delay);
}

static void test_retry_after(void **state)
{
    (void)state;
    const int64_t now = 1733148000000; /* 2024-12-02T14:00:00Z */
    expect_ra("0", now, 0, 0);
    expect_ra("1", now, 0, 1000);
    expect_ra(" 7\t", now, 0, 7000);
    expect_ra("000120", now, 0, 120000);
    expect_ra("86400", now, 0, 86400000);
    expect_ra("86401", now, -EINVAL, 0);
    expect_ra("999999999", now, -EINVAL, 0);
    expect_ra("99999999999999999999999999999999", now, -EINVAL, 0);
    expect_ra("18446744073709551617", now, -EINVAL, 0);
    expect_ra("-5", now, -EINVAL, 0);
    expect_ra("+5", now, -EINVAL, 0);
    expect_ra("5s", now, -EINVAL, 0);
    expect_ra("1.5", now, -EINVAL, 0);
    expect_ra("0x10", now, -EINVAL, 0);
    expect_ra("1 2", now, -EINVAL, 0);
    expect_ra("abc", now, -EINVAL, 0);
    expect_ra("", now, -EINVAL, 0);
    expect_ra("   ", now, -EINVAL, 0);
    expect_ra("Mon", now, -EINVAL, 0);
    expect_ra("Sun, 99 Foo 1994 99:99:99 GMT", now, -EINVAL, 0);
    expect_ra("Sunday", now, -EINVAL, 0);
    expect_ra("Mon, 02 Dec 2024 14:00:\x01"
              "5 GMT",
              now, -EINVAL, 0);
    /* The three HTTP-date forms, 30 s ahead of now. */
    expect_ra("Mon, 02 Dec 2024 14:00:30 GMT", now, 0, 30000);
    expect_ra("Monday, 02-Dec-24 14:00:30 GMT", now, 0, 30000);
    expect_ra("Mon Dec  2 14:00:30 2024", now, 0, 30000);
    /* Past: no wait. Over a day ahead: ignored. */
    expect_ra("Sun, 06 Nov 1994 08:49:37 GMT", now, 0, 0);
    expect_ra("Tue, 03 Dec 2024 14:00:00 GMT", now, 0, 86400000);
    expect_ra("Tue, 03 Dec 2024 14:00:01 GMT", now, -EINVAL, 0);
    expect_ra("Fri, 31 Dec 9999 23:59:59 GMT", now, -EINVAL, 0);

    /* 10 kB of digits, of letters, and a long date-looking string. */
    char *big = malloc(10241);
    assert_non_null(big);
    memset(big, '9', 10240);
    big[10240] = '\0';
    expect_ra(big, now, -EINVAL, 0);
    memset(big, 'a', 10240);
    expect_ra(big, now, -EINVAL, 0);
    memcpy(big, "Mon, 02 Dec 2024 14:00:30 GMT", 29);
    memset(big + 29, ' ', 10240 - 30);
    big[10239] = 'x';
    expect_ra(big, now, -EINVAL, 0);
    free(big);
    int64_t d;
    assert_int_equal(http_parse_retry_after(NULL, now, &d), -EINVAL);
}

static void test_escape(void **state)
{
    (void)state;
    char *e = http_escape("a/b c%~\xc3\xa9-._ZZ09?&=+", strlen("a/b c%~\xc3\xa9-._ZZ09?&=+"));
    assert_string_equal(e, "a%2Fb%20c%25~%C3%A9-._ZZ09%3F%26%3D%2B");
    free(e);
    e = http_escape("", 0);
    assert_string_equal(e, "");
    free(e);
    e = http_escape("a\0b", 3); /* length, not NUL, ends the input */
    assert_string_equal(e, "a%00b");
    free(e);
}

/* ---- clients ---- */

static struct http_client *client_for(int port, const char *scheme, const char *ca, int max_conn,
                                      int rps)
{
    char ep[64];
    snprintf(ep, sizeof(ep), "%s://127.0.0.1:%d", scheme, port);
    struct http_client_opts o = {.endpoint = ep,
                                 .ca_file = ca,
                                 .user_agent = "insightfs/test",
                                 .max_connections = max_conn,
                                 .max_requests_per_second = rps};
    struct http_client *c = NULL;
    char *err = NULL;
    int rc = http_client_new(&o, &c, &err);
    if (rc != 0)
        fail_msg("http_client_new: %d %s", rc, err ? err : "");
    return c;
}

static void expect_client_error(const char *endpoint, const char *ca, int max_conn, int rc,
                                const char *msg_part)
{
    struct http_client_opts o = {.endpoint = endpoint, .ca_file = ca, .max_connections = max_conn};
    struct http_client *c = (struct http_client *)1;
    char *err = NULL;
    assert_int_equal(http_client_new(&o, &c, &err), rc);
    assert_null(c);
    assert_non_null(err);
    if (!strstr(err, msg_part))
        fail_msg("error \"%s\" lacks \"%s\"", err, msg_part);
    free(err);
}

static void test_client_options(void **state)
{
    (void)state;
    expect_client_error("ftp://127.0.0.1", NULL, 1, -EINVAL, "scheme");
    expect_client_error("https://example.com/path", NULL, 1, -EINVAL, "scheme://host[:port]");
    expect_client_error("https://example.com?q=1", NULL, 1, -EINVAL, "scheme://host[:port]");
    expect_client_error("https://user@example.com", NULL, 1, -EINVAL, "scheme://host[:port]");
    expect_client_error("not a url", NULL, 1, -EINVAL, "api.endpoint");
    expect_client_error("https://example.com", NULL, 0, -EINVAL, "options");
    expect_client_error("https://example.com", "/nonexistent/ca.pem", 1, -ENOENT, "api.ca_file");
    expect_client_error("https://example.com", "/tmp", 1, -EINVAL, "api.ca_file");
    char junk[] = "/tmp/insightfs-test-junk-XXXXXX";
    int fd = mkstemp(junk);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "hello\n", 6), 6);
    close(fd);
    expect_client_error("https://example.com", junk, 1, -EINVAL, "no PEM certificate");
    unlink(junk);

    /* A trailing '/' is accepted (and dropped). */
    struct http_client_opts o = {.endpoint = "https://example.com/", .max_connections = 2};
    struct http_client *c = NULL;
    assert_int_equal(http_client_new(&o, &c, NULL), 0);
    assert_int_equal(http_client_in_flight(c), 0);
    http_client_free(c);
    http_client_free(NULL);
}

/* ---- loopback transfers ---- */

struct acct {
    atomic_long reserved;
    long limit; /* refuse growth beyond this */
    atomic_int calls;
};

static int acct_reserve(void *arg, size_t n)
{
    struct acct *a = arg;
    atomic_fetch_add(&a->calls, 1);
    if (atomic_load(&a->reserved) + (long)n > a->limit)
        return -ENOMEM;
    atomic_fetch_add(&a->reserved, (long)n);
    return 0;
}

static void acct_release(void *arg, size_t n)
{
    struct acct *a = arg;
    atomic_fetch_sub(&a->reserved, (long)n);
}

static struct http_request req_for(const char *target, int timeout_ms, size_t max_body)
{
    struct http_request r = {.target = target,
                             .deadline_ms = http_mono_ms() + timeout_ms,
                             .timeout_ms = timeout_ms,
                             .connect_timeout_ms = timeout_ms,
                             .max_body = max_body};
    return r;
}

static void test_get_200(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    unsigned char png[SRV_PNG_LEN];
    srv_png(png);
    srv_push(s,
             srv_http("200 OK", "Date: Mon, 02 Dec 2024 14:00:00 GMT\r\n", png, sizeof(png), true));
    struct http_client *c = client_for(s->port, "http", NULL, 4, 0);
    struct acct a = {.limit = 1 << 20};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    const char *hdrs[] = {"x-test-one: 1", "X-Test-Two: two words", NULL};
    struct http_request r = req_for("/a%2Fb/c?x=1&y=%7E", 5000, 1000);
    r.headers = hdrs;
    r.mem = &mem;
    struct http_response resp;

    assert_int_equal(http_get(c, &r, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_true(resp.sent);
    assert_int_equal(resp.len, sizeof(png));
    assert_memory_equal(resp.body, png, sizeof(png));
    assert_int_equal(resp.received, sizeof(png));
    assert_int_equal(resp.content_length, sizeof(png));
    assert_true(resp.has_date);
    assert_int_equal(resp.date_ms, 1733148000000);
    assert_true(resp.date_local_ms > 1700000000000);
    assert_int_equal(resp.retry_after_ms, -1);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_OK);
    /* Exactly len bytes stay reserved; cleanup gives them back. */
    assert_int_equal(atomic_load(&a.reserved), (long)sizeof(png));
    http_response_cleanup(&resp, &mem);
    assert_int_equal(atomic_load(&a.reserved), 0);
    http_response_cleanup(&resp, &mem); /* idempotent */
    assert_int_equal(atomic_load(&a.reserved), 0);

    /* What went on the wire. */
    char *head = srv_request(s, 0);
    assert_non_null(head);
    assert_true(strncmp(head, "GET /a%2Fb/c?x=1&y=%7E HTTP/1.1\r\n",
                        strlen("GET /a%2Fb/c?x=1&y=%7E HTTP/1.1\r\n")) == 0);
    char *v = srv_header(head, "x-test-one");
    assert_string_equal(v, "1");
    free(v);
    v = srv_header(head, "x-test-two");
    assert_string_equal(v, "two words");
    free(v);
    v = srv_header(head, "User-Agent");
    assert_string_equal(v, "insightfs/test");
    free(v);
    assert_null(srv_header(head, "Expect"));
    assert_null(srv_header(head, "Accept-Encoding"));
    free(head);
    http_client_free(c);
    srv_stop(s);
}

/* A non-200 answer keeps its body (the gateway's JSON) and its Retry-After. */
static void test_error_answer(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    const char *json = "{\"error\":{\"errorCode\":\"500\",\"message\":\"endpoint error\"}}";
    srv_push(s, srv_http("503 Service Unavailable",
                         "Retry-After: 7\r\nDate: Mon, 02 Dec 2024 14:00:00 GMT\r\n", json,
                         strlen(json), true));
    srv_push(s, srv_http("404 Not Found", "", "nope", 4, true));
    srv_push(s, srv_http("429 Too Many Requests",
                         "Retry-After: Mon, 02 Dec 2024 14:00:03 GMT\r\n"
                         "Date: Mon, 02 Dec 2024 14:00:00 GMT\r\n",
                         "", 0, true));
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct http_request r = req_for("/x", 5000, 1000);
    struct http_response resp;

    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.status, 503);
    assert_true(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_STATUS);
    assert_int_equal(resp.retry_after_ms, 7000);
    assert_int_equal(resp.len, strlen(json));
    assert_memory_equal(resp.body, json, strlen(json));
    http_response_cleanup(&resp, NULL);

    assert_int_equal(http_get(c, &r, &resp), -ENOENT);
    assert_int_equal(resp.status, 404);
    assert_false(resp.verdict.retryable);
    assert_int_equal(resp.len, 4);
    http_response_cleanup(&resp, NULL);

    /* An HTTP-date Retry-After counts from the answer's own Date. */
    assert_int_equal(http_get(c, &r, &resp), -EAGAIN);
    assert_int_equal(resp.retry_after_ms, 3000);
    assert_true(resp.verdict.retryable);
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    srv_stop(s);
}

/* Over the cap: by Content-Length (curl refuses early) and without one (the write
 * callback returns short). Nothing stays reserved, nothing is kept. */
static void test_body_cap(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    size_t big = 64 * 1024;
    unsigned char *body = malloc(big);
    memset(body, 'z', big);
    srv_push(s, srv_http("200 OK", "", body, big, true));
    struct srv_reply nolen = srv_http("200 OK", "Connection: close\r\n", body, big, false);
    nolen.close_after = true;
    srv_push(s, nolen);
    free(body);
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct acct a = {.limit = 1 << 20};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct http_request r = req_for("/big", 5000, 1000);
    r.mem = &mem;
    struct http_response resp;

    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.status, 200);
    assert_false(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_BAD_BODY);
    assert_null(resp.body);
    assert_int_equal(resp.len, 0);
    assert_non_null(strstr(resp.error, "over the limit of 1000 bytes"));
    assert_int_equal(atomic_load(&a.reserved), 0);
    http_response_cleanup(&resp, &mem);

    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.status, 200);
    assert_true(resp.flags & HTTP_F_OVERSIZE);
    assert_false(resp.verdict.retryable);
    assert_null(resp.body);
    assert_true(resp.received > 1000);
    assert_int_equal(atomic_load(&a.reserved), 0);
    http_response_cleanup(&resp, &mem);
    http_client_free(c);
    srv_stop(s);
}

/* A refused reservation aborts the transfer: EIO, not retried, nothing reserved. */
static void test_reserve_refused(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    size_t n = 40000;
    unsigned char *body = calloc(1, n);
    srv_push(s, srv_http("200 OK", "", body, n, false)); /* no length: grows stepwise */
    s->queue[0].close_after = true;
    free(body);
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct acct a = {.limit = 20000};
    struct http_mem mem = {acct_reserve, acct_release, &a};
    struct http_request r = req_for("/room", 5000, 1 << 20);
    r.mem = &mem;
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_true(resp.flags & HTTP_F_NOROOM);
    assert_false(resp.verdict.retryable);
    assert_null(resp.body);
    assert_int_equal(atomic_load(&a.reserved), 0);
    http_response_cleanup(&resp, &mem);
    http_client_free(c);
    srv_stop(s);
}

/* Content-Length 100, 50 bytes, then the connection closes: truncated, retryable. */
static void test_short_body(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    const char *raw = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
                      "01234567890123456789012345678901234567890123456789";
    struct srv_reply rep = srv_raw(raw, strlen(raw));
    rep.close_after = true;
    srv_push(s, rep);
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct http_request r = req_for("/short", 5000, 1000);
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.content_length, 100);
    assert_int_equal(resp.received, 50);
    assert_true(resp.flags & HTTP_F_TRUNCATED);
    assert_true(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_BAD_BODY);
    assert_int_equal(resp.curl_code, CURLE_PARTIAL_FILE);
    assert_true(resp.error[0] != '\0');
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    srv_stop(s);
}

static void test_refused(void **state)
{
    (void)state;
    struct http_client *c = client_for(srv_dead_port(), "http", NULL, 1, 0);
    struct http_request r = req_for("/", 5000, 1000);
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.status, 0);
    assert_int_equal(resp.curl_code, CURLE_COULDNT_CONNECT);
    assert_true(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_UNREACHABLE);
    assert_true(resp.error[0] != '\0');
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
}

/* Two requests in a row ride one keep-alive connection. */
static void test_connection_reuse(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    srv_push(s, srv_http("200 OK", "", "one", 3, true));
    srv_push(s, srv_http("200 OK", "", "two", 3, true));
    struct http_client *c = client_for(s->port, "http", NULL, 4, 0);
    struct http_request r = req_for("/1", 5000, 1000);
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), 0);
    http_response_cleanup(&resp, NULL);
    r = req_for("/2", 5000, 1000);
    assert_int_equal(http_get(c, &r, &resp), 0);
    assert_memory_equal(resp.body, "two", 3);
    http_response_cleanup(&resp, NULL);
    assert_int_equal(srv_requests(s), 2);
    assert_int_equal(srv_accepts(s), 1);
    http_client_free(c);
    srv_stop(s);
}

/* A 302 to another server is not followed. */
static void test_no_redirect(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL), *other = srv_start(NULL);
    char loc[96];
    snprintf(loc, sizeof(loc), "Location: http://127.0.0.1:%d/stolen\r\n", other->port);
    srv_push(s, srv_http("302 Found", loc, "", 0, true));
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct http_request r = req_for("/r", 5000, 1000);
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.status, 302);
    assert_false(resp.verdict.retryable);
    http_response_cleanup(&resp, NULL);
    assert_int_equal(srv_requests(s), 1);
    assert_int_equal(srv_accepts(other), 0);
    http_client_free(c);
    srv_stop(s);
    srv_stop(other);
}

/* No status line before the deadline: ETIMEDOUT by the deadline. */
static void test_timeout_no_answer(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    struct srv_reply hang = srv_http("200 OK", "", "late", 4, true);
    hang.split = 0;
    hang.hang = true;
    srv_push(s, hang);
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct http_request r = req_for("/hang", 10000, 1000);
    int64_t t0 = http_mono_ms();
    r.deadline_ms = t0 + 300;
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), -ETIMEDOUT);
    int64_t took = http_mono_ms() - t0;
    assert_true(took >= 250 && took < srv_tf(1500));
    assert_int_equal(resp.status, 0);
    assert_true(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_TIMEOUT);
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    srv_stop(s);
}

/* A status line, then the body stalls: EIO (a bad body), retryable, within the try. */
static void test_stalled_body(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    const char *raw = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789";
    struct srv_reply rep = srv_raw(raw, strlen(raw));
    rep.hang = true;
    srv_push(s, rep);
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct http_request r = req_for("/stall", 400, 1000);
    int64_t t0 = http_mono_ms();
    struct http_response resp;
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_true(http_mono_ms() - t0 < srv_tf(1500));
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.curl_code, CURLE_OPERATION_TIMEDOUT);
    assert_true(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_BAD_BODY);
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    srv_stop(s);
}

struct bg_get {
    struct http_client *c;
    struct http_request r;
    struct http_response resp;
    int rc;
    int64_t done_ms;
};

static void *bg_get_main(void *arg)
{
    struct bg_get *g = arg;
    g->rc = http_get(g->c, &g->r, &g->resp);
    g->done_ms = http_mono_ms();
    return NULL;
}

/* max_connections = 1: a second request waits for the slot (then reuses the
 * connection); a third whose deadline comes first fails ETIMEDOUT unsent. */
static void test_slot_limit(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    struct srv_reply slow = srv_http("200 OK", "", "slow", 4, true);
    slow.delay_ms = 400;
    slow.split = 0;
    srv_push(s, slow);
    srv_push(s, srv_http("200 OK", "", "next", 4, true));
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);

    struct bg_get a = {.c = c, .r = req_for("/a", 5000, 1000)};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, bg_get_main, &a), 0);
    assert_int_equal(srv_wait_requests(s, 1, 5000), 1);
    assert_int_equal(http_client_in_flight(c), 1);

    /* The third: its deadline ends while /a holds the only slot. */
    struct http_request r3 = req_for("/c", 100, 1000);
    struct http_response resp;
    int64_t t0 = http_mono_ms();
    assert_int_equal(http_get(c, &r3, &resp), -ETIMEDOUT);
    assert_true(http_mono_ms() - t0 >= 90);
    assert_true(resp.flags & HTTP_F_NOT_SENT);
    assert_false(resp.sent);
    assert_non_null(strstr(resp.error, "max_connections"));
    http_response_cleanup(&resp, NULL);

    /* The second waits for the slot. */
    struct http_request r2 = req_for("/b", 5000, 1000);
    assert_int_equal(http_get(c, &r2, &resp), 0);
    assert_memory_equal(resp.body, "next", 4);
    http_response_cleanup(&resp, NULL);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    assert_memory_equal(a.resp.body, "slow", 4);
    http_response_cleanup(&a.resp, NULL);

    assert_int_equal(srv_requests(s), 2);
    /* /b went out after /a's answer. (Not "b_done >= a.done_ms": /a's thread stamps its
     * time after giving the slot back, and /b may finish first; valgrind shows it.) */
    assert_true(srv_request_time(s, 1) >= srv_request_time(s, 0) + 390);
    assert_int_equal(srv_accepts(s), 1);
    assert_int_equal(http_client_in_flight(c), 0);
    http_client_free(c);
    srv_stop(s);
}

/* max_requests_per_second = 5: starts 200 ms apart; a turn past the deadline is refused. */
static void test_rate_limit(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    struct srv_reply ok = srv_http("200 OK", "", "k", 1, true);
    srv_set_default(s, ok);
    struct http_client *c = client_for(s->port, "http", NULL, 4, 5);
    struct http_response resp;
    int64_t t0 = http_mono_ms();
    for (int i = 0; i < 3; i++) {
        struct http_request r = req_for("/rl", 5000, 1000);
        assert_int_equal(http_get(c, &r, &resp), 0);
        http_response_cleanup(&resp, NULL);
    }
    /* Starts are spaced on the client; arrivals at the server jitter under load. */
    assert_true(http_mono_ms() - t0 >= 390);
    assert_true(srv_request_time(s, 2) - srv_request_time(s, 0) >= 200); /* 1st: + connect */
    struct http_request r = req_for("/rl", 50, 1000); /* next turn is ~200 ms away */
    assert_int_equal(http_get(c, &r, &resp), -ETIMEDOUT);
    assert_true(resp.flags & HTTP_F_NOT_SENT);
    assert_non_null(strstr(resp.error, "max_requests_per_second"));
    http_response_cleanup(&resp, NULL);
    assert_int_equal(srv_requests(s), 3);
    http_client_free(c);
    srv_stop(s);
}

/* A proxy in the environment is never used for a loopback endpoint. */
static void test_no_proxy_for_loopback(void **state)
{
    (void)state;
    struct srv *s = srv_start(NULL);
    srv_push(s, srv_http("200 OK", "", "direct", 6, true));
    char proxy[64];
    snprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", srv_dead_port());
    setenv("http_proxy", proxy, 1);
    setenv("HTTPS_PROXY", proxy, 1);
    setenv("ALL_PROXY", proxy, 1);
    struct http_client *c = client_for(s->port, "http", NULL, 1, 0);
    struct http_request r = req_for("/p", 5000, 1000);
    struct http_response resp;
    int rc = http_get(c, &r, &resp);
    unsetenv("http_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    assert_int_equal(rc, 0);
    assert_memory_equal(resp.body, "direct", 6);
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    srv_stop(s);
}

/* ---- TLS ---- */

static char tls_dir[] = "/tmp/insightfs-http-tls-XXXXXX";

static void make_cert(const char *name, const char *san)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s/%s.key -out %s/%s.pem -days 2 -subj /CN=insightfs-test "
             "-addext subjectAltName=%s >/dev/null 2>&1",
             tls_dir, name, tls_dir, name, san);
    if (system(cmd) != 0)
        fail_msg("openssl req failed: %s", cmd);
}

static SSL_CTX *server_ctx(const char *name)
{
    char cert[256], key[256];
    snprintf(cert, sizeof(cert), "%s/%s.pem", tls_dir, name);
    snprintf(key, sizeof(key), "%s/%s.key", tls_dir, name);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM), 1);
    return ctx;
}

static int tls_setup(void **state)
{
    (void)state;
    strcpy(tls_dir, "/tmp/insightfs-http-tls-XXXXXX"); /* each setup makes a new one */
    if (!mkdtemp(tls_dir))
        return -1;
    make_cert("good", "IP:127.0.0.1");
    make_cert("wrong", "DNS:wrong.example");
    return 0;
}

static int tls_teardown(void **state)
{
    (void)state;
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tls_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ca_file adds a CA: trusted with it, refused without it (no request reaches the
 * server), refused for a certificate of another host even when its CA is added. */
static void test_tls(void **state)
{
    (void)state;
    char good[256], wrong[256];
    snprintf(good, sizeof(good), "%s/good.pem", tls_dir);
    snprintf(wrong, sizeof(wrong), "%s/wrong.pem", tls_dir);
    SSL_CTX *ctx = server_ctx("good");
    struct srv *s = srv_start(ctx);
    SSL_CTX_free(ctx);
    srv_push(s, srv_http("200 OK", "", "secure", 6, true));
    struct http_response resp;

    struct http_client *c = client_for(s->port, "https", NULL, 1, 0);
    struct http_request r = req_for("/t", 5000, 1000);
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.curl_code, CURLE_PEER_FAILED_VERIFICATION);
    assert_false(resp.verdict.retryable);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_TLS);
    assert_true(resp.error[0] != '\0');
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    assert_int_equal(srv_requests(s), 0);

    c = client_for(s->port, "https", good, 1, 0);
    r = req_for("/t", 5000, 1000);
    assert_int_equal(http_get(c, &r, &resp), 0);
    assert_memory_equal(resp.body, "secure", 6);
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    assert_int_equal(srv_requests(s), 1);
    srv_stop(s);

    ctx = server_ctx("wrong");
    s = srv_start(ctx);
    SSL_CTX_free(ctx);
    c = client_for(s->port, "https", wrong, 1, 0);
    r = req_for("/t", 5000, 1000);
    assert_int_equal(http_get(c, &r, &resp), -EIO);
    assert_int_equal(resp.curl_code, CURLE_PEER_FAILED_VERIFICATION);
    assert_int_equal(resp.verdict.kind, HTTP_KIND_TLS);
    http_response_cleanup(&resp, NULL);
    http_client_free(c);
    assert_int_equal(srv_requests(s), 0);
    srv_stop(s);
}

static char *tls_path(const char *name)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", tls_dir, name) < 0)
        fail_msg("out of memory");
    return p;
}

/* Whether store trusts the certificate in PEM file cert_file. */
static bool store_trusts(X509_STORE *store, const char *cert_file)
{
    FILE *f = fopen(cert_file, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    assert_non_null(vc);
    assert_int_equal(X509_STORE_CTX_init(vc, store, x, NULL), 1);
    bool ok = X509_verify_cert(vc) == 1;
    X509_STORE_CTX_free(vc);
    X509_free(x);
    return ok;
}

/* Install t's store in a fresh SSL_CTX; returns the context (caller frees). */
static SSL_CTX *ctx_with(struct http_tls *t)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    X509_STORE *own = SSL_CTX_get_cert_store(ctx);
    http_tls_install(t, ctx);
    assert_ptr_not_equal(SSL_CTX_get_cert_store(ctx), own);
    return ctx;
}

static void expect_tls_new(const char *sys_file, const char *ca_file, int rc, const char *msg_part)
{
    struct http_tls *t = (struct http_tls *)1;
    char *err = NULL;
    assert_int_equal(http_tls_new(sys_file, NULL, ca_file, &t, &err), rc);
    assert_null(t);
    assert_non_null(err);
    if (!strstr(err, msg_part))
        fail_msg("error \"%s\" lacks \"%s\"", err, msg_part);
    free(err);
}

/* The store: the system bundle (here a stand-in file) and ca_file both count; one store
 * is shared by reference between SSL_CTXs and outlives the client's own reference; a
 * ca_file that only partly parses is refused. */
static void test_tls_store(void **state)
{
    (void)state;
    char *good = tls_path("good.pem"), *wrong = tls_path("wrong.pem");
    struct http_tls *t = NULL;
    char *err = NULL;

    /* Bundle only: its certificate is trusted, another is not. */
    assert_int_equal(http_tls_new(good, NULL, NULL, &t, &err), 0);
    assert_null(err);
    SSL_CTX *a = ctx_with(t), *b = ctx_with(t);
    X509_STORE *shared = SSL_CTX_get_cert_store(a);
    assert_ptr_equal(SSL_CTX_get_cert_store(b), shared);
    assert_int_equal(http_tls_installs(t), 2);
    assert_true(X509_VERIFY_PARAM_get_flags(X509_STORE_get0_param(shared)) &
                X509_V_FLAG_PARTIAL_CHAIN);
    http_tls_free(t); /* the connections keep the store alive */
    assert_true(store_trusts(SSL_CTX_get_cert_store(a), good));
    assert_false(store_trusts(SSL_CTX_get_cert_store(b), wrong));
    SSL_CTX_free(a);
    SSL_CTX_free(b);

    /* An unreadable bundle is left out; ca_file alone still counts. */
    assert_int_equal(http_tls_new("/nonexistent/bundle.pem", "/nonexistent/dir", wrong, &t, &err),
                     0);
    a = ctx_with(t);
    assert_true(store_trusts(SSL_CTX_get_cert_store(a), wrong));
    assert_false(store_trusts(SSL_CTX_get_cert_store(a), good));
    SSL_CTX_free(a);
    http_tls_free(t);

    /* Both: ca_file adds to the bundle. */
    assert_int_equal(http_tls_new(good, NULL, wrong, &t, &err), 0);
    a = ctx_with(t);
    assert_true(store_trusts(SSL_CTX_get_cert_store(a), good));
    assert_true(store_trusts(SSL_CTX_get_cert_store(a), wrong));
    SSL_CTX_free(a);
    http_tls_free(t);
    http_tls_free(NULL);
    assert_int_equal(http_tls_installs(NULL), 0);

    /* A good certificate followed by a damaged one: refused, not trusted in part. */
    char *bad = tls_path("bad.pem");
    FILE *in = fopen(good, "r"), *out = fopen(bad, "w");
    assert_non_null(in);
    assert_non_null(out);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fputs("-----BEGIN CERTIFICATE-----\nMIIB!!!!\n-----END CERTIFICATE-----\n", out);
    fclose(in);
    assert_int_equal(fclose(out), 0);
    expect_tls_new(NULL, bad, -EINVAL, "does not parse");
    expect_tls_new(good, "/nonexistent/ca.pem", -ENOENT, "api.ca_file");
    expect_tls_new(good, tls_dir, -EINVAL, "not a regular file");
    char *key = tls_path("good.key");
    expect_tls_new(good, key, -EINVAL, "no PEM certificate");
    free(key);
    free(bad);
    free(good);
    free(wrong);
}

/* A client gets one store for all its connections: 4 requests at once open 4 TLS
 * connections, each installed with the store (and verified against it); a later request
 * reuses a connection and installs nothing. An http:// client has no store. */
static void test_tls_shared_by_connections(void **state)
{
    (void)state;
    char *good = tls_path("good.pem");
    SSL_CTX *sctx = server_ctx("good");
    struct srv *s = srv_start(sctx);
    SSL_CTX_free(sctx);
    struct srv_reply slow = srv_http("200 OK", "", "held", 4, true);
    slow.split = 0;
    /* Every answer waits 2 s, so all 4 threads hold their slots (and so 4 different
     * handles) at once. Not scaled: a silent answer of 5 s is aborted (low-speed). */
    slow.delay_ms = 2000;
    srv_set_default(s, slow);
    struct http_client *c = client_for(s->port, "https", good, 4, 0);
    assert_non_null(http_client_tls(c));
    assert_int_equal(http_tls_installs(http_client_tls(c)), 0);

    struct bg_get g[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        g[i] = (struct bg_get){.c = c, .r = req_for("/held", (int)srv_tf(10000), 100)};
        assert_int_equal(pthread_create(&t[i], NULL, bg_get_main, &g[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(g[i].rc, 0);
        assert_memory_equal(g[i].resp.body, "held", 4);
        http_response_cleanup(&g[i].resp, NULL);
    }
    assert_int_equal(srv_accepts(s), 4);
    assert_int_equal(http_tls_installs(http_client_tls(c)), 4);

    struct http_response resp;
    struct http_request r = req_for("/again", (int)srv_tf(10000), 100);
    assert_int_equal(http_get(c, &r, &resp), 0);
    http_response_cleanup(&resp, NULL);
    assert_int_equal(srv_accepts(s), 4);
    assert_int_equal(http_tls_installs(http_client_tls(c)), 4);
    int port = s->port;
    http_client_free(c);
    srv_stop(s);

    c = client_for(port, "http", good, 1, 0); /* ca_file checked, no store kept */
    assert_null(http_client_tls(c));
    http_client_free(c);
    free(good);
}

static int group_setup(void **state)
{
    (void)state;
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
        cmocka_unit_test(test_table_curl_codes),
        cmocka_unit_test(test_table_statuses),
        cmocka_unit_test(test_table_bodies_and_flags),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_escape),
        cmocka_unit_test(test_client_options),
        cmocka_unit_test(test_get_200),
        cmocka_unit_test(test_error_answer),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_reserve_refused),
        cmocka_unit_test(test_short_body),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_connection_reuse),
        cmocka_unit_test(test_no_redirect),
        cmocka_unit_test(test_timeout_no_answer),
        cmocka_unit_test(test_stalled_body),
        cmocka_unit_test(test_slot_limit),
        cmocka_unit_test(test_rate_limit),
        cmocka_unit_test(test_no_proxy_for_loopback),
        cmocka_unit_test_setup_teardown(test_tls, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_store, tls_setup, tls_teardown),
        cmocka_unit_test_setup_teardown(test_tls_shared_by_connections, tls_setup, tls_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
