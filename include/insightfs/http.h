/* http - bounded HTTP/1.1 GETs to one endpoint with libcurl, and the one place where
 * curl's and HTTP's errors become errno (SPEC section 6).
 *
 * A struct http_client talks to one endpoint ("scheme://host[:port]"). It owns a pool of
 * at most max_connections easy handles (each keeps its own keep-alive connection), a
 * share handle for DNS and TLS sessions, an optional request-rate limiter and, for an
 * https endpoint, one certificate store (the system CAs plus api.ca_file) built once and
 * shared by all its TLS connections. http_get is thread-safe: a request first waits for a free slot
 * (max_connections in flight at once), then for its turn under max_requests_per_second;
 * both waits count against the request's deadline. TLS is always verified, redirects are
 * never followed, proxies from the environment are honoured except for loopback
 * endpoints, and bodies are capped while they arrive.
 *
 * Callers: http_global_init once at start (before any thread), http_global_cleanup at
 * the very end. All times here are CLOCK_MONOTONIC milliseconds (http_mono_ms) except
 * the Date header values, which are Unix ms.
 */
#ifndef INSIGHTFS_HTTP_H
#define INSIGHTFS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

struct http_client;

/* curl_global_init / curl_global_cleanup. Not thread-safe: call from main before any
 * thread starts and after every thread has stopped. http_global_init returns 0 or -EIO. */
int http_global_init(void) __attribute__((warn_unused_result));
void http_global_cleanup(void);

/* libcurl's version ("7.88.1"), for --version. Static storage. */
const char *http_curl_version(void);

/* CLOCK_MONOTONIC now in ms: the clock of every deadline here. */
int64_t http_mono_ms(void);

struct http_client_opts {
    const char *endpoint;        /* "http[s]://host[:port]" with no path; borrowed */
    const char *ca_file;         /* NULL, or a PEM file of CAs trusted in addition to the
                                    system ones (read once, here; checked even for an
                                    http endpoint); borrowed */
    const char *user_agent;      /* User-Agent header value, or NULL for none; borrowed */
    int max_connections;         /* >= 1: requests in flight at once */
    int max_requests_per_second; /* 0: no limit; else requests start >= 1/N s apart */
};

/* Build a client. Returns 0 and *out, or a negative errno and *err (a malloc'd one-line
 * message, caller frees): -EINVAL (bad endpoint or limits, ca_file without a PEM
 * certificate or with one that does not parse), -ENOENT/-EACCES (ca_file unreadable),
 * -ENOMEM, -EIO (libcurl). For https it reads the system CA bundle once (~1.35 MiB kept
 * for the client's life, instead of that much per connection).
 * Thread-safe. */
int http_client_new(const struct http_client_opts *opts, struct http_client **out, char **err)
    __attribute__((warn_unused_result));
/* NULL-safe. No http_get may be running. */
void http_client_free(struct http_client *c);

/* Wake every request of c waiting for a slot or a rate turn, so that one whose cancel
 * counter moved stops waiting now. Thread-safe. */
void http_client_wake(struct http_client *c);

/* Requests being transferred now (slot held), for the in_flight gauge. Thread-safe. */
uint64_t http_client_in_flight(struct http_client *c);

/* Memory accounting for a body as it grows (the cache's byte bound). reserve returns 0 or
 * a negative errno (the transfer is then aborted: EIO); release gives bytes back. NULL
 * members or a NULL struct: no accounting. Called from the thread running http_get. */
struct http_mem {
    int (*reserve)(void *arg, size_t bytes);
    void (*release)(void *arg, size_t bytes);
    void *arg;
};

struct http_request {
    const char *target;         /* the request target ("/path?query"), sent exactly as
                                   given after the endpoint (CURLOPT_PATH_AS_IS) */
    const char *const *headers; /* NULL-terminated "Name: value" lines, or NULL */
    int64_t deadline_ms;        /* absolute, http_mono_ms clock: no wait or transfer
                                   goes past it */
    int timeout_ms;             /* one try in total: min(timeout_ms, time left) */
    int connect_timeout_ms;     /* connect + TLS: min(connect_timeout_ms, time left) */
    size_t max_body;            /* hard cap on body bytes (over it: aborted, EIO) */
    const struct http_mem *mem; /* body accounting, or NULL */
    /* NULL, or a counter the caller bumps to call off requests not yet sent: once
     * *cancel differs from cancel_at, the request is not sent, and a wait for a slot or
     * a rate turn ends at the next http_client_wake (HTTP_F_NOT_SENT, error "called
     * off"). */
    const atomic_uint_fast64_t *cancel;
    uint64_t cancel_at;
};

/* What a try's outcome means (SPEC 6). */
enum http_kind {
    HTTP_KIND_OK = 0,      /* 200 with its whole body */
    HTTP_KIND_STATUS,      /* an HTTP answer other than 200 */
    HTTP_KIND_TLS,         /* TLS handshake or certificate verification failed */
    HTTP_KIND_UNREACHABLE, /* DNS, refused, reset or closed before the status line */
    HTTP_KIND_TIMEOUT,     /* no status line before the try's time ran out */
    HTTP_KIND_BAD_BODY,    /* a 200 whose body stalled, was cut off, short or too large */
    HTTP_KIND_LOCAL,       /* out of memory or a libcurl setup error on our side */
};

struct http_verdict {
    int err;        /* 0 or a negative errno */
    bool retryable; /* SPEC 6's "retried" list (429's errorCode is api's business) */
    enum http_kind kind;
};

/* Flags of a try (http_response.flags), inputs of http_classify. */
#define HTTP_F_TRUNCATED 0x01u /* fewer body bytes than Content-Length */
#define HTTP_F_OVERSIZE 0x02u  /* body (or its Content-Length) over max_body */
#define HTTP_F_NOROOM 0x04u    /* http_mem.reserve refused a growth step */
#define HTTP_F_NOMEM 0x08u     /* malloc failed */
#define HTTP_F_NOT_SENT 0x10u  /* no slot or rate turn before the deadline: nothing sent */
#define HTTP_F_SETUP 0x20u     /* a curl_easy_setopt failed: nothing sent */

struct http_response {
    long status;            /* HTTP status of the answer, 0 when no status line came */
    unsigned char *body;    /* malloc'd, exactly len bytes (NULL when len is 0); the
                               caller owns it: http_response_cleanup, or take it */
    size_t len;             /* body bytes kept; with a mem, exactly len stay reserved */
    uint64_t received;      /* body bytes that arrived (including any beyond the cap) */
    int64_t content_length; /* Content-Length, -1 when none was sent */
    bool has_date;
    int64_t date_ms;        /* Date header (Unix ms, whole seconds) when has_date */
    int64_t date_local_ms;  /* CLOCK_REALTIME Unix ms when the headers ended */
    int64_t retry_after_ms; /* Retry-After as a delay (>= 0), -1 when absent or junk */
    int curl_code;          /* CURLcode of the transfer (0 when nothing was sent) */
    unsigned flags;         /* HTTP_F_* */
    bool sent;              /* a request went out (curl_easy_perform ran) */
    char error[256];        /* curl's error text (or ours), "" when none */
    struct http_verdict verdict;
};

/* One GET of endpoint + req->target. Waits for a slot and a rate turn (both bounded by
 * req->deadline_ms), then transfers with the timeouts of SPEC 6: connect min(connect,
 * left), total min(timeout, left), and aborts when fewer than 1 byte/s arrive over
 * ceil(min(5000, timeout_ms) / 1000) s (curl counts that window in whole seconds).
 * Always fills *resp (also on failure: status, headers, curl error, and the body of a
 * non-200 answer for the caller to read) and returns resp->verdict.err: 0 for a 200 with
 * its complete body, else the negative errno of http_classify. Call
 * http_response_cleanup(resp, req->mem) afterwards unless the body was taken.
 * Thread-safe; never holds a lock across the transfer. */
int http_get(struct http_client *c, const struct http_request *req, struct http_response *resp)
    __attribute__((warn_unused_result));

/* Free resp->body and release its reservation through mem (may be NULL). Idempotent. */
void http_response_cleanup(struct http_response *resp, const struct http_mem *mem);

/* The one table of SPEC 6: a try's CURLcode (as int), HTTP status (0: none) and HTTP_F_*
 * flags -> errno, retryability and kind. Rules, first match wins:
 *   NOT_SENT -> ETIMEDOUT (retryable); SETUP -> EIO; NOMEM -> ENOMEM;
 *   status 200: complete -> 0; OVERSIZE or NOROOM -> EIO; cut off, stalled, short -> EIO
 *     (retryable);
 *   other statuses (whatever curl said after the status line): 400 EINVAL, 401/403
 *     EACCES, 404 ENOENT, 429 EAGAIN (retryable), 5xx EIO (retryable), everything else
 *     (1xx, other 2xx, 3xx, other 4xx, out of range) EIO;
 *   no status line: by CURLcode (timeouts ETIMEDOUT; DNS, refused, reset, nothing
 *     received EIO retryable; TLS EIO, the handshake error 35 retryable, certificate and
 *     local TLS errors not; out of memory ENOMEM; the rest EIO, not retryable).
 * Pure, thread-safe. */
void http_classify(int curl_code, long status, unsigned flags, struct http_verdict *out);

/* Parse a Retry-After value: delta-seconds 0-86400 (digits only, surrounding blanks
 * allowed) or an HTTP-date (IMF-fixdate, RFC 850 or asctime form, at most 64 bytes), the
 * latter taken relative to now_ms (Unix ms; a past date means 0). Anything else - signs,
 * overflow, larger values, a date more than 86400 s ahead, junk - is ignored.
 * Returns 0 and *delay_ms, or -EINVAL. Pure, thread-safe. */
int http_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms)
    __attribute__((warn_unused_result));

/* Percent-encode every byte outside A-Z a-z 0-9 - . _ ~ as %XX (uppercase hex), with
 * libcurl's curl_easy_escape. Returns a malloc'd string (free()) or NULL (ENOMEM, or
 * input over INT_MAX bytes). Thread-safe. */
char *http_escape(const char *s, size_t len);

#endif
