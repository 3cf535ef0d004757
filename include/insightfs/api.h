/* api - the three Cloud Insight calls of SPEC section 1, composed of sign and http.
 *
 * One struct api per process (per configuration generation). It owns the retry budget,
 * the gateway clock offset, the upstream counters and the HTTP client. Every call is
 * thread-safe. Each logical call has a deadline D = start + timeout_ms * (retries + 1);
 * it retries, backs off and signs every try afresh as SPEC section 6 says, and logs one
 * warn line per failed logical call (SPEC 8). It never logs a secret or a signature.
 */
#ifndef INSIGHTFS_API_H
#define INSIGHTFS_API_H

#include <stddef.h>
#include <stdint.h>

#include "insightfs/cfg.h"
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
};

/* Memory accounting for a body as it grows (the cache's byte bound). reserve returns 0
 * or a negative errno (the fetch then fails with EIO); release gives bytes back. May be
 * NULL (no accounting). */
struct api_mem {
    int (*reserve)(void *arg, size_t bytes);
    void (*release)(void *arg, size_t bytes);
    void *arg;
};

struct api_image {
    unsigned char *data;  /* malloc'd, owned by the caller after success (free()) */
    size_t len;           /* bytes reserved through api_mem stay reserved: exactly len
                             (the caller accounts for them from then on) */
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
    uint64_t bytes; /* body bytes received */
};

/* Build a client for cfg (copies what it needs; cfg may be freed afterwards).
 * test_offset_ms is INSIGHTFS_TEST_CLOCK_OFFSET_MS (0 normally), added to "now".
 * Returns the client, or NULL and *err (malloc'd message). Thread-safe use afterwards. */
struct api *api_new(const struct cfg *cfg, int64_t test_offset_ms, char **err);
void api_free(struct api *api); /* NULL-safe; no call may be running */

/* GetDashboardWidgetImage. Returns 0 and *out, or a negative errno of SPEC 6's table.
 * result may be NULL. */
int api_fetch_image(struct api *api, const char *dash_id, const char *widget_id, int64_t start_ms,
                    int64_t end_ms, enum vpath_res res, const struct api_mem *mem,
                    struct api_image *out, struct api_result *result)
    __attribute__((warn_unused_result));

/* GetDashboardList / GetDashboardWidgetList. Returns 0 and *items (free with
 * api_items_free) and *n, or a negative errno. result may be NULL. */
int api_list_dashboards(struct api *api, struct api_item **items, size_t *n,
                        struct api_result *result) __attribute__((warn_unused_result));
int api_list_widgets(struct api *api, const char *dash_id, struct api_item **items, size_t *n,
                     struct api_result *result) __attribute__((warn_unused_result));
void api_items_free(struct api_item *items, size_t n);

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

void api_get_stats(struct api *api, struct api_stats *out);

/* The errno name of a negative errno ("EIO", "ETIMEDOUT", ...), for log lines. */
const char *api_errno_name(int neg_errno);

#endif
