/* api_breaker - the circuit breaker of SPEC 6, as pure rules on CLOCK_MONOTONIC ms
 * (api_int.h). Times come in as arguments, so tests drive it without a clock; api.c keeps
 * one struct api_breaker per account under acct.mu, and does the logging, the `down`
 * flag and the wake-up of sleeping retries on the transitions reported here. Beside it,
 * the two other pure rules on whether a try may go out: the retry budget (at most 10
 * tokens, starting full, +0.1 per first try, -1 per retry) and the backoff draw.
 *
 * Design note:
 *   - What counts (api_try_class): only tries that were sent. A timeout or stall,
 *     refused or reset, DNS, TLS, a cut-off or truncated body (a PNG whose last chunk
 *     runs past the body's end included), 5xx and 429 are failed tries. Any other HTTP
 *     answer - 200 (even a body that is not a PNG or too large), 1xx, 3xx, other 4xx -
 *     is an answer. Our own failures (nothing sent, out of memory) do not count.
 *   - Opening: when the last API_BREAKER_FAILS (3) tries failed and no answer came for
 *     at least timeout_ms, counted from the last answer (or the client's start), exactly
 *     as SPEC 6 says. So a hung API opens it at its third failed try (each lasts
 *     timeout_ms), a refusing one at its third try once timeout_ms has passed since the
 *     last answer - not after a storm of instant failures - while failures amid answers
 *     never do. After a long idle time three failed tries in a row open it; the probe
 *     one second later closes it again if the API answers. The errno of the try that
 *     opened it is kept (b->err).
 *   - Fast-fail: while open, api_breaker_admit refuses every call (API_ADMIT_REFUSE:
 *     fail at once with b->err, no request), except the probe.
 *   - Probe: the first call after the probe interval, counted from the last failed try,
 *     is one try with no retry; only one is out at a time. A probe that could not be
 *     sent (api_breaker_probe_unsent) frees the place for the next call: the breaker
 *     must not wait for an answer to a request that never went out. The interval starts at 1 s
 *     and doubles, up to 30 s, each time a probe fails.
 *   - Closing: any answer, from the probe or from a try that was already out when it
 *     opened, closes it and resets the count.
 *   - Transitions are returned (API_BREAKER_OPENED / _CLOSED), not logged here: the
 *     caller logs "upstream down: <ERRNO>" at warn on opening and "upstream up after
 *     N s" at info on closing, once each, outside its lock.
 *
 * No state of its own, no locks: the caller serializes access to a struct api_breaker
 * or api_budget (api.c: acct.mu).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "api_int.h"

/* ---- backoff and retry budget ---- */

int64_t api_backoff_ms(int retry, uint64_t rnd)
{
    int64_t cap = 5000;
    if (retry < 1)
        retry = 1;
    if (retry <= 5) /* 250 * 2^5 = 8000 is already over the cap */
        cap = 250LL << (retry - 1) < 5000 ? 250LL << (retry - 1) : 5000;
    return (int64_t)(rnd % (uint64_t)(cap + 1));
}

void api_budget_init(struct api_budget *b)
{
    b->milli = API_BUDGET_MAX;
}

void api_budget_first_try(struct api_budget *b)
{
    b->milli += API_BUDGET_FIRST_TRY;
    if (b->milli > API_BUDGET_MAX)
        b->milli = API_BUDGET_MAX;
}

bool api_budget_take_retry(struct api_budget *b)
{
    if (b->milli < API_BUDGET_RETRY)
        return false;
    b->milli -= API_BUDGET_RETRY;
    return true;
}

/* ---- the circuit breaker ---- */

enum api_try_class api_try_class(bool sent, long status, enum http_kind kind, bool retryable)
{
    if (!sent || kind == HTTP_KIND_LOCAL)
        return API_TRY_NONE;
    if (status == 0) /* timeout, unreachable, TLS: no answer at all */
        return API_TRY_FAILED;
    if (status == 429 || status >= 500)
        return API_TRY_FAILED;
    /* A 200 whose body was cut off, stalled or is a truncated PNG is retryable: the
     * server did not finish answering. Not a PNG, too large: an answer. */
    if (kind == HTTP_KIND_BAD_BODY && retryable)
        return API_TRY_FAILED;
    return API_TRY_ANSWER;
}

void api_breaker_init(struct api_breaker *b, int64_t now)
{
    memset(b, 0, sizeof(*b));
    b->last_answer = now; /* "no answer has come" counts from the client's start */
    b->probe_ms = API_PROBE_FIRST_MS;
}

enum api_admit api_breaker_admit(struct api_breaker *b, int64_t now)
{
    if (!b->open)
        return API_ADMIT_GO;
    if (b->probing || now - b->last_fail < b->probe_ms)
        return API_ADMIT_REFUSE;
    b->probing = true;
    return API_ADMIT_PROBE;
}

void api_breaker_probe_unsent(struct api_breaker *b)
{
    b->probing = false;
}

enum api_transition api_breaker_note(struct api_breaker *b, enum api_try_class cls, bool probe,
                                     int err, int64_t try_start, int64_t now, int timeout_ms)
{
    if (probe)
        b->probing = false;
    if (cls == API_TRY_ANSWER) {
        b->fails = 0;
        b->last_answer = now;
        if (!b->open)
            return API_BREAKER_SAME;
        b->open = false;
        return API_BREAKER_CLOSED;
    }
    if (cls != API_TRY_FAILED)
        return API_BREAKER_SAME;
    (void)try_start;
    if (b->fails < API_BREAKER_FAILS)
        b->fails++;
    b->last_fail = now;
    if (b->open) {
        if (probe)
            b->probe_ms = b->probe_ms * 2 < API_PROBE_MAX_MS ? b->probe_ms * 2 : API_PROBE_MAX_MS;
        return API_BREAKER_SAME;
    }
    if (b->fails < API_BREAKER_FAILS || now - b->last_answer < timeout_ms)
        return API_BREAKER_SAME;
    b->open = true;
    b->probing = false;
    b->err = err < 0 ? err : -EIO;
    b->opened_at = now;
    b->probe_ms = API_PROBE_FIRST_MS;
    return API_BREAKER_OPENED;
}
