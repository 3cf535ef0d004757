/* api - the three Cloud Insight calls of SPEC section 1, composed of sign and http.
 *
 * A struct api is one client: an HTTP client and the settings of one configuration
 * generation. Its account state - the applied gateway clock offset and its generation,
 * the retry budget, the circuit breaker and the counters of api_get_stats - describes
 * the endpoint and access key, not the file: a client built for a reloaded configuration
 * with the same endpoint and access key shares it with the client it inherits from
 * (SPEC 7, SIGHUP reload). Every call is thread-safe. Each logical call has a deadline
 * D on CLOCK_MONOTONIC (http_mono_ms), fixed by the caller when the call was first
 * asked for; it retries, backs off and signs every try afresh as SPEC section 6 says,
 * obeys the circuit breaker, and logs one warn line per failed logical call (SPEC 8),
 * none for a call the open breaker ended. It never logs a secret or a signature.
 */
#ifndef INSIGHTFS_API_H
#define INSIGHTFS_API_H

#include <stddef.h>
#include <stdint.h>

#include "insightfs/cfg.h"
#include "insightfs/http.h"
#include "insightfs/vpath.h"

struct api;

/* Why the last try of a call ended as it did (for --check-config and tests). */
enum api_outcome {
    API_OK = 0,
    API_HTTP,        /* an HTTP answer that is an error: see status, error_code */
    API_TLS,         /* TLS verification failed */
    API_UNREACHABLE, /* DNS failure, refused, reset before the status line */
    API_TIMEOUT,     /* no status line before the try's deadline */
    API_BAD_BODY,    /* cut off, stalled, too large, not a valid PNG / JSON */
};

struct api_result {
    enum api_outcome outcome;
    long status;         /* HTTP status of the last try, 0 when none */
    char error_code[32]; /* the gateway's errorCode, "" when none */
    char message[256];   /* the gateway's message or curl's error text, "" when none */
    int tries;           /* tries made */
    int skew_known;      /* 1 once any answer carried a Date header */
    int64_t skew_ms;     /* gateway clock - local clock at the last answer with a Date */
    int fast_fail;       /* 1: the open circuit breaker ended the call - it was refused
                            without a request, or a retry it was about to make or was
                            waiting for was cancelled - and the call returns the errno
                            that opened the breaker (refused: tries 0, status 0, outcome
                            that of the try that opened it). Not a failure of the name:
                            the caller must not remember it (SPEC 6), and no warn line
                            was logged for it. 0 otherwise. */
};

struct api_image {
    unsigned char *data;  /* malloc'd, owned by the caller after success (free()) */
    size_t len;           /* bytes reserved through the http_mem stay reserved: exactly
                             len (the caller accounts for them from then on) */
    int64_t signed_at_ms; /* signing time ("now") of the try that fetched it */
};

struct api_item {
    char *id;   /* an integer id comes as its decimal string */
    char *name; /* the API's name, or a copy of the id when missing or null (not sanitized) */
};

struct api_stats {
    uint64_t requests; /* every HTTP try of every call */
    uint64_t failures; /* tries without a valid answer */
    uint64_t retries;  /* tries after the first */
    uint64_t in_flight;
    uint64_t bytes;      /* body bytes received */
    uint64_t down;       /* 1 while the circuit breaker is open, else 0 */
    uint64_t down_total; /* times the circuit breaker opened */
};

/* A pacer every try asks before it is sent (the shared cache's fleet rate limit, SPEC
 * 13), handed in as a value: book_turn(arg, D, &wait_ns) books this try's slot and
 * returns 0 with *wait_ns, how long from now the try must wait (0: go now; also when
 * the pacer cannot decide, e.g. Redis is down), or -ETIMEDOUT when the slot would come
 * after D (no slot is taken, no try is made). It never sleeps: the api waits itself, so
 * that an opening circuit breaker ends the wait at once (SPEC 6). Must be thread-safe. */
struct api_pacer {
    int (*book_turn)(void *arg, int64_t deadline_mono_ms, int64_t *wait_ns);
    void *arg;
};

/* Build a client for cfg (copies what it needs; cfg may be freed afterwards).
 * test_offset_ms is INSIGHTFS_TEST_CLOCK_OFFSET_MS (0 normally), added to "now".
 * inherit: NULL, or a live client (typically the one of the configuration being
 * replaced by a reload). When it talks to the same endpoint with the same access key
 * (exact strings), the new client shares its account state - clock offset and
 * generation, retry budget, circuit breaker, the counters of api_get_stats - by
 * reference, so either may be freed first; otherwise, and when inherit is NULL, the
 * state starts fresh. The new client always has its own HTTP client and settings.
 * Returns the client, or NULL and *err (malloc'd message; err may be NULL).
 * Thread-safe, also while calls run on inherit. */
struct api *api_new(const struct cfg *cfg, int64_t test_offset_ms, struct api *inherit, char **err)
    __attribute__((warn_unused_result));
void api_free(struct api *api); /* NULL-safe; no call may be running on this client */

/* Make every later try of this client wait on pacer first (copied; pacer->arg must
 * outlive the client). Call before any call runs on the client: not thread-safe. */
void api_set_pacer(struct api *api, const struct api_pacer *pacer);

/* 1 when the len bytes at p are a valid PNG by SPEC 6's rules (signature; chunks inside
 * the bytes; IHDR first; IEND last, empty, ending exactly at the end), else 0. Pure,
 * thread-safe. */
int api_png_valid(const unsigned char *p, size_t len);

/* The deadline D of a logical call that starts at start_mono_ms (http_mono_ms clock):
 * start_mono_ms + timeout_ms * (retries + 1) of this client's settings. Thread-safe. */
int64_t api_deadline_ms(struct api *api, int64_t start_mono_ms);

/* GetDashboardWidgetImage. deadline_mono_ms is the call's D on the http_mono_ms clock,
 * fixed when the fetch was first asked for (time spent queued counts), or 0 for
 * api_deadline_ms(api, now). mem accounts for the body as it grows, or NULL. Returns 0
 * and *out, or a negative errno of SPEC 6's table (with result->fast_fail set when the
 * open breaker ended the call). result may be NULL. Thread-safe. */
int api_fetch_image(struct api *api, const char *dash_id, const char *widget_id, int64_t start_ms,
                    int64_t end_ms, enum vpath_res res, int64_t deadline_mono_ms,
                    const struct http_mem *mem, struct api_image *out, struct api_result *result)
    __attribute__((warn_unused_result));

/* GetDashboardList / GetDashboardWidgetList, with a deadline as api_fetch_image's.
 * Returns 0 and *items (free with api_items_free) and *n, or a negative errno (and
 * result->fast_fail as above). result may be NULL. Thread-safe. */
int api_list_dashboards(struct api *api, int64_t deadline_mono_ms, struct api_item **items,
                        size_t *n, struct api_result *result) __attribute__((warn_unused_result));
int api_list_widgets(struct api *api, const char *dash_id, int64_t deadline_mono_ms,
                     struct api_item **items, size_t *n, struct api_result *result)
    __attribute__((warn_unused_result));
void api_items_free(struct api_item *items, size_t n);

/* 1 while the circuit breaker of this client's account is open (upstream down), else 0:
 * a call now would fail at once, unless it is the probe. One atomic load, lock-free:
 * cheap enough for readahead to ask before every fetch. Thread-safe. */
int api_is_down(struct api *api);

/* The request target of GetDashboardWidgetImage exactly as sent and signed (SPEC 1).
 * Returns a malloc'd string or NULL. */
char *api_image_target(const char *dash_id, const char *widget_id, int64_t start_ms, int64_t end_ms,
                       enum vpath_res res);

/* "now" in Unix ms: realtime + test offset + the applied gateway offset. Thread-safe. */
int64_t api_now_ms(struct api *api);

/* A counter that changes whenever the gateway offset applied to api_now_ms changes
 * (SPEC 6: a change of offset forgets remembered EACCES errors). Starts at 0.
 * Thread-safe. */
uint64_t api_clock_generation(struct api *api);

/* The account's counters (shared with inheriting clients) and this client's in_flight.
 * Thread-safe, lock-free. */
void api_get_stats(struct api *api, struct api_stats *out);

/* The errno name of a negative errno ("EIO", "ETIMEDOUT", ...), for log lines. */
const char *api_errno_name(int neg_errno);

#endif
