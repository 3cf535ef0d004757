/* api internals shared by api.c, api_body.c (body checks, JSON parsing), api_breaker.c
 * (backoff, retry budget, the circuit breaker's rules) and tests/unit/test_api.c: the
 * pure pieces. Not part of any contract.
 */
#ifndef INSIGHTFS_API_INT_H
#define INSIGHTFS_API_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "insightfs/api.h"
#include "insightfs/http.h"

/* The financial cloud's gateway host: requests to it carry x-ncp-dmn_cd: FIN (SPEC 1). */
#define API_FIN_HOST "cw.apigw.fin-ntruss.com"

/* The value of the x-ncp-dmn_cd header (SPEC 1) for a client of endpoint
 * ("scheme://host[:port]", as cfg keeps it): configured (api.domain_code) when not NULL;
 * else "FIN" when the endpoint's host is API_FIN_HOST (compared without regard to case,
 * as DNS does; any port; a longer host such as "x.cw.apigw.fin-ntruss.com" is no match);
 * else NULL: the header is not sent. Returns configured itself, a static string or NULL.
 * endpoint may be NULL. Pure, thread-safe. */
const char *api_domain_code(const char *endpoint, const char *configured);

/* A list answer over this is EIO (SPEC 1). */
#define API_JSON_MAX ((size_t)4 * 1024 * 1024)
/* Retry budget, in thousandths of a token. */
#define API_BUDGET_MAX 10000
#define API_BUDGET_FIRST_TRY 100
#define API_BUDGET_RETRY 1000

/* SPEC 6's PNG check, three ways:
 *   API_PNG_VALID: the 8-byte signature; chunks (4-byte big-endian length <= 2^31-1,
 *     type, data, CRC) all inside the body; IHDR first; IEND last, of length 0, ending
 *     exactly at the body's end; len == content_length when content_length >= 0.
 *   API_PNG_TRUNCATED: the signature, then chunks of which the last runs past the end
 *     of the body (its header, data or CRC cut), or a valid PNG shorter than
 *     content_length: a cut transfer, worth a retry.
 *   API_PNG_FOREIGN: anything else (no signature, a body under 8 bytes, a length over
 *     2^31-1, IHDR not first, IEND with data or not last, no IEND after complete chunks,
 *     longer than content_length): not worth a retry.
 * CRCs and dimensions are not checked. p may be NULL when len is 0. Pure, thread-safe. */
enum api_png {
    API_PNG_VALID = 0,
    API_PNG_TRUNCATED,
    API_PNG_FOREIGN,
};
enum api_png api_png_check(const unsigned char *p, size_t len, int64_t content_length);

/* The gateway's error body {"error": {"errorCode": S|N, "message": S, ...}} (also the
 * same two members at top level), the whole body one strict JSON text with only blanks
 * after it (as api_parse_items). Anything else leaves code/msg "". Output is cut to
 * the buffers (msg at a UTF-8 boundary). Never fails. */
void api_gateway_error(const unsigned char *body, size_t len, char *code, size_t code_size,
                       char *msg, size_t msg_size);

/* An id insightfs can address and a configuration can name: non-empty, no control
 * character (0x01-0x1f, 0x7f), and not "." or ".." (which stay as they are when escaped,
 * and which a server may resolve as directory steps). cfg_dashboards.c refuses the same
 * ids in a configuration. Pure. */
bool api_id_addressable(const char *id);

/* A list answer: a JSON array of objects, each with id_key a string or an integer (kept
 * as its decimal text), "name" a string or else the id; other members ignored. The body
 * must be one strict JSON text (json-c's strict mode: no comments, single quotes or
 * trailing commas), followed by nothing but blanks (space, tab, CR, LF), with no NUL
 * byte. An element whose string id is empty, holds a NUL byte or is not
 * api_id_addressable is left out (nothing could be asked about it, and no configuration
 * could name it) and counted in *left_out (may be NULL). Returns 0 with *items, *n (free
 * with api_items_free), -EIO for anything else (not strict JSON, trailing junk, not an
 * array, an element that is not an object or whose id is missing or of another type,
 * over API_JSON_MAX), or -ENOMEM. */
int api_parse_items(const unsigned char *body, size_t len, const char *id_key,
                    struct api_item **items, size_t *n, size_t *left_out);

/* The random part of the wait before retry number `retry` (1 for the second try):
 * uniform over [0, min(5000, 250 * 2^(retry-1))] ms, drawn from rnd. */
int64_t api_backoff_ms(int retry, uint64_t rnd);

/* The retry budget: at most API_BUDGET_MAX, starting full; a first try adds
 * API_BUDGET_FIRST_TRY (capped); a retry needs and spends API_BUDGET_RETRY.
 * Not locked: the caller serializes. */
struct api_budget {
    int milli;
};
void api_budget_init(struct api_budget *b);
void api_budget_first_try(struct api_budget *b);
bool api_budget_take_retry(struct api_budget *b); /* false: no token, the try is final */

/* The circuit breaker of SPEC 6 as a pure state machine on CLOCK_MONOTONIC ms (times are
 * arguments, so tests can drive it). Not locked: the caller serializes. */
#define API_BREAKER_FAILS 3     /* consecutive failed tries before it may open */
#define API_PROBE_FIRST_MS 1000 /* first probe interval after opening */
#define API_PROBE_MAX_MS 30000  /* the interval doubles up to this while probes fail */

/* How a try counts for the breaker. */
enum api_try_class {
    API_TRY_NONE,   /* nothing was sent, or our own failure (memory): not counted */
    API_TRY_FAILED, /* timeout or stall, refused/reset, DNS, TLS, truncation, 5xx, 429 */
    API_TRY_ANSWER, /* any other HTTP answer: 200 (even not a PNG), 1xx, 3xx, other 4xx */
};

/* The class of a try from what it got: sent (a request went out), the status (0: no
 * status line), and the final verdict's kind and retryability (after the body check: a
 * retryable bad 200 body is a cut-off, stalled or truncated one). Pure. */
enum api_try_class api_try_class(bool sent, long status, enum http_kind kind, bool retryable);

struct api_breaker {
    bool open;
    bool probing;        /* open, and the probe's try is out */
    int fails;           /* failed tries since the last answer */
    int err;             /* the negative errno that opened it (valid while open) */
    int64_t last_answer; /* when the last answer came (at first: the client's start) */
    int64_t last_fail;   /* when the last failed try ended */
    int64_t opened_at;
    int64_t probe_ms; /* the probe interval, counted from last_fail */
};

enum api_admit {
    API_ADMIT_GO,     /* closed: a normal call */
    API_ADMIT_PROBE,  /* open, and this call is the probe: one try, no retry */
    API_ADMIT_REFUSE, /* open: fail at once with b->err, no request */
};

enum api_transition { API_BREAKER_SAME, API_BREAKER_OPENED, API_BREAKER_CLOSED };

void api_breaker_init(struct api_breaker *b, int64_t now);
/* A new logical call at now: may it send? Marks the probe as out when it is one. */
enum api_admit api_breaker_admit(struct api_breaker *b, int64_t now);
/* The admitted probe was never sent (no turn of the fleet's pacer before its deadline):
 * the next call after the interval may probe. */
void api_breaker_probe_unsent(struct api_breaker *b);
/* A try of class cls, started at try_start, ended at now with errno err (negative),
 * probe when it was the probe's. The breaker opens when the last API_BREAKER_FAILS
 * tries failed and no answer came for at least timeout_ms; any answer closes it. */
enum api_transition api_breaker_note(struct api_breaker *b, enum api_try_class cls, bool probe,
                                     int err, int64_t try_start, int64_t now, int timeout_ms);

#endif
