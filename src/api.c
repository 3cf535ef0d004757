/* api - the three Cloud Insight calls of SPEC section 1, built of sign and http.
 *
 * A logical call runs tries until one succeeds or one is final:
 *   - D = start + timeout_ms * (retries + 1) (CLOCK_MONOTONIC) bounds everything: slot
 *     and rate waits inside http, transfers, and the backoff sleeps here. A wait that
 *     would end after D is not started: the call fails at once with the last errno.
 *   - Each try is signed afresh: timestamp = api_now_ms, signature over
 *     "GET <target>\n<timestamp>\n<access key>" where <target> is the exact string sent
 *     (api_image_target or a list path). The same string appears in the log lines.
 *   - After try n fails retryably (http's verdict; 429 with gateway errorCode 400, quota
 *     exceeded, is final), try n+1 waits max(Retry-After, uniform(0, min(5 s,
 *     250 ms * 2^(n-1)))) and needs a token of the retry budget (one bucket per struct
 *     api: at most 10 tokens, starting full, +0.1 per first try, -1 per retry).
 *   - A 200 must also pass its body check (a valid PNG, or a well-formed JSON list;
 *     api_body.c): if not, EIO, final, logged with the first 64 bytes.
 *   - Clock skew: every answer's Date header measures gateway - local. An offset over
 *     60 s (and at most 24 h) is applied to api_now_ms; within 60 s the local clock is
 *     used; over 24 h it is logged and ignored. A 401 whose Date is more than 5 minutes
 *     from the try's timestamp is retried once, at once and without budget, when the
 *     corrected clock is within 5 minutes of the gateway: this extra try is outside
 *     `retries` (a wrong clock is ours to fix, not the server's fault).
 *   - One warn line per failed logical call (SPEC 8), one debug line per failed try.
 *     Logged: the target, status, gateway errorCode and message (escaped), curl's text,
 *     the errno name. Never the secret, the signature or the access key.
 *
 * Locking: api.mu protects the retry budget and the skew bookkeeping; it is held only
 * for arithmetic (no I/O, no logging, no calls into other modules). The applied offset,
 * its generation and the counters are atomics, so api_now_ms and api_get_stats take no
 * lock. Everything else in struct api is immutable after api_new.
 */
#include "insightfs/api.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "api_int.h"
#include "insightfs/http.h"
#include "insightfs/log.h"
#include "insightfs/sign.h"

#ifndef INSIGHTFS_VERSION
#error "INSIGHTFS_VERSION must be defined (the Makefile does)"
#endif

#define PATH_DASHBOARDS "/cw_fea/real/cw/api/chart/dashboard"
#define SKEW_APPLY_MS 60000                 /* apply offsets beyond this */
#define SKEW_IGNORE_MS (24LL * 3600 * 1000) /* ignore offsets beyond this */
#define SKEW_REJECT_MS 300000               /* the gateway's own limit */
#define SKEW_JITTER_MS 1000                 /* Date has whole seconds */
#define BODY_EXCERPT 64

struct api {
    struct http_client *http;
    char *access_key;
    char *secret; /* sign_secret_free wipes it */
    int timeout_ms, connect_timeout_ms, retries;
    size_t max_image_bytes;
    int64_t test_offset_ms;

    atomic_int_fast64_t offset_ms; /* the applied gateway offset */
    atomic_uint_fast64_t clock_gen;

    pthread_mutex_t mu;
    struct api_budget budget; /* protected by mu */
    bool skew_known;          /* protected by mu */
    int64_t skew_ms;          /* protected by mu: gateway - local at the last Date */
    bool skew_logged;         /* protected by mu */
    int64_t skew_logged_ms;   /* protected by mu: the offset last logged */

    atomic_uint_fast64_t requests, failures, retries_done, bytes;
};

/* ---- backoff and retry budget (api_int.h) ---- */

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

/* ---- clocks, randomness ---- */

static int64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    /* From now in nanoseconds: a start truncated to whole ms would end up to 1 ms early,
     * and a Retry-After of 1 s must mean at least 1 s (T4). */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* 64 random bits for jitter: getrandom, or (should it fail) a xorshift of the clock
 * and a stack address. Thread-safe: no shared state. */
static uint64_t rand64(void)
{
    uint64_t x;
    if (getrandom(&x, sizeof(x), GRND_NONBLOCK) == (ssize_t)sizeof(x))
        return x;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)&ts;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

int64_t api_now_ms(struct api *api)
{
    return realtime_ms() + api->test_offset_ms + (int64_t)atomic_load(&api->offset_ms);
}

uint64_t api_clock_generation(struct api *api)
{
    return (uint64_t)atomic_load(&api->clock_gen);
}

static int64_t abs64(int64_t v)
{
    return v < 0 ? -v : v;
}

/* Learn the gateway's clock from an answer's Date header (see the top comment). */
static void note_date(struct api *api, const struct http_response *r)
{
    if (!r->has_date)
        return;
    int64_t local = (r->date_local_ms > 0 ? r->date_local_ms : realtime_ms()) + api->test_offset_ms;
    /* Date has whole seconds: the gateway's clock was somewhere in [Date, Date + 1 s), so
     * its middle is the unbiased estimate (Date alone reads 0.5 s behind on average). */
    int64_t off = r->date_ms + SKEW_JITTER_MS / 2 - local;
    enum { SAY_NOTHING, SAY_APPLIED, SAY_LOCAL, SAY_IGNORED } say = SAY_NOTHING;

    pthread_mutex_lock(&api->mu);
    api->skew_known = true;
    api->skew_ms = off;
    int64_t applied = (int64_t)atomic_load(&api->offset_ms), next = applied;
    if (abs64(off) > SKEW_IGNORE_MS)
        next = applied;
    else if (abs64(off) > SKEW_APPLY_MS)
        next = abs64(off - applied) > SKEW_JITTER_MS ? off : applied;
    else
        next = 0;
    int64_t shown = abs64(off) > SKEW_IGNORE_MS ? off : next;
    if (!api->skew_logged ? (shown != 0) : abs64(shown - api->skew_logged_ms) > SKEW_APPLY_MS) {
        say = abs64(off) > SKEW_IGNORE_MS ? SAY_IGNORED : next != 0 ? SAY_APPLIED : SAY_LOCAL;
        api->skew_logged = true;
        api->skew_logged_ms = shown;
    }
    if (next != applied) {
        atomic_store(&api->offset_ms, next);
        atomic_fetch_add(&api->clock_gen, 1);
    }
    pthread_mutex_unlock(&api->mu);

    int64_t s = (abs64(off) + 500) / 1000;
    const char *dir = off > 0 ? "behind" : "ahead of";
    if (say == SAY_APPLIED)
        log_warn("local clock is %" PRId64 " s %s the gateway (Date header): using the "
                 "gateway's time",
                 s, dir);
    else if (say == SAY_IGNORED)
        log_warn("local clock is %" PRId64 " s %s the gateway (Date header): over 24 h, "
                 "ignored",
                 s, dir);
    else if (say == SAY_LOCAL)
        log_warn("local clock agrees with the gateway again (%" PRId64 " s): using it", s);
}

/* ---- api_new / api_free ---- */

struct api *api_new(const struct cfg *cfg, int64_t test_offset_ms, char **err)
{
    struct api *api = NULL;
    char *cerr = NULL;
    const char *why = NULL;
    if (err)
        *err = NULL;
    if (!cfg)
        why = "no configuration";
    else if (!cfg->endpoint || !*cfg->endpoint)
        why = "api.endpoint: not set";
    else if (!cfg->access_key || !*cfg->access_key)
        why = "api.access_key: not set";
    else if (!cfg->secret_key || !*cfg->secret_key)
        why = "api.secret_key: not set";
    else if (cfg->timeout_ms < 1 || cfg->connect_timeout_ms < 1 || cfg->retries < 0 ||
             cfg->max_image_bytes < 1)
        why = "api: timeouts, retries or max_image_bytes out of range";
    if (why)
        goto fail;

    api = calloc(1, sizeof(*api));
    if (!api) {
        why = "out of memory";
        goto fail;
    }
    struct http_client_opts o = {
        .endpoint = cfg->endpoint,
        .ca_file = cfg->ca_file,
        .user_agent = "insightfs/" INSIGHTFS_VERSION,
        .max_connections = cfg->max_connections,
        .max_requests_per_second = cfg->max_requests_per_second,
    };
    if (http_client_new(&o, &api->http, &cerr) < 0)
        goto fail;
    api->access_key = strdup(cfg->access_key);
    api->secret = sign_secret_dup(cfg->secret_key);
    if (!api->access_key || !api->secret || pthread_mutex_init(&api->mu, NULL) != 0) {
        why = "out of memory";
        goto fail;
    }
    api->timeout_ms = cfg->timeout_ms;
    api->connect_timeout_ms = cfg->connect_timeout_ms;
    api->retries = cfg->retries;
    api->max_image_bytes =
        (uint64_t)cfg->max_image_bytes > SIZE_MAX ? SIZE_MAX : (size_t)cfg->max_image_bytes;
    api->test_offset_ms = test_offset_ms;
    api_budget_init(&api->budget);
    return api;

fail:
    if (err)
        *err = cerr ? cerr : strdup(why ? why : "out of memory");
    else
        free(cerr);
    if (api) {
        http_client_free(api->http);
        free(api->access_key);
        sign_secret_free(api->secret);
        free(api);
    }
    return NULL;
}

void api_free(struct api *api)
{
    if (!api)
        return;
    http_client_free(api->http);
    free(api->access_key);
    sign_secret_free(api->secret);
    pthread_mutex_destroy(&api->mu);
    free(api);
}

void api_get_stats(struct api *api, struct api_stats *out)
{
    out->requests = atomic_load(&api->requests);
    out->failures = atomic_load(&api->failures);
    out->retries = atomic_load(&api->retries_done);
    out->in_flight = http_client_in_flight(api->http);
    out->bytes = atomic_load(&api->bytes);
}

const char *api_errno_name(int neg_errno)
{
    int e = neg_errno < 0 ? -neg_errno : neg_errno;
    switch (e) {
    case 0:
        return "OK";
    case EIO:
        return "EIO";
    case ETIMEDOUT:
        return "ETIMEDOUT";
    case EAGAIN:
        return "EAGAIN";
    case EACCES:
        return "EACCES";
    case ENOENT:
        return "ENOENT";
    case EINVAL:
        return "EINVAL";
    case ENOMEM:
        return "ENOMEM";
    default: {
        const char *n = strerrorname_np(e);
        return n ? n : "EUNKNOWN";
    }
    }
}

/* ---- targets ---- */

/* An id that can be a path segment: non-empty, and not "." or ".." (which stay as they
 * are when escaped, and which a server may resolve as directory steps). */
static bool id_ok(const char *id)
{
    return id && *id && strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}

char *api_image_target(const char *dash_id, const char *widget_id, int64_t start_ms, int64_t end_ms,
                       enum vpath_res res)
{
    char *d = NULL, *w = NULL, *out = NULL;
    if (!id_ok(dash_id) || !id_ok(widget_id) || (res != VPATH_RES_AUTO && res != VPATH_RES_HIGH))
        return NULL;
    d = http_escape(dash_id, strlen(dash_id));
    w = http_escape(widget_id, strlen(widget_id));
    if (d && w &&
        asprintf(&out,
                 PATH_DASHBOARDS "/%s/widgets/%s?startTime=%" PRId64 "&endTime=%" PRId64
                                 "&widgetResolutionMode=%s",
                 d, w, start_ms, end_ms, res == VPATH_RES_HIGH ? "HIGH" : "AUTO") < 0)
        out = NULL;
    free(d);
    free(w);
    return out;
}

static char *widgets_target(const char *dash_id)
{
    char *d = NULL, *out = NULL;
    if (!id_ok(dash_id))
        return NULL;
    d = http_escape(dash_id, strlen(dash_id));
    if (d && asprintf(&out, PATH_DASHBOARDS "/%s/widgets", d) < 0)
        out = NULL;
    free(d);
    return out;
}

/* ---- one logical call ---- */

enum body_kind { BODY_PNG, BODY_LIST };

struct call {
    const char *target;
    enum body_kind kind;
    const char *id_key; /* BODY_LIST */
    size_t max_body;
    const struct http_mem *mem; /* BODY_PNG */
    /* out */
    struct http_response resp; /* the last try's; on success the body is here */
    struct api_item *items;    /* BODY_LIST on success */
    size_t n_items;
    int64_t signed_at_ms;
    struct api_result res;
};

static enum api_outcome outcome_of(enum http_kind k)
{
    switch (k) {
    case HTTP_KIND_OK:
        return API_OK;
    case HTTP_KIND_STATUS:
        return API_HTTP;
    case HTTP_KIND_TLS:
        return API_TLS;
    case HTTP_KIND_TIMEOUT:
        return API_TIMEOUT;
    case HTTP_KIND_BAD_BODY:
        return API_BAD_BODY;
    case HTTP_KIND_UNREACHABLE:
    case HTTP_KIND_LOCAL:
        break;
    }
    return API_UNREACHABLE;
}

/* Check a 200's body. Returns 0, -EIO (rejected) or -ENOMEM; with -EIO, *cut tells a PNG
 * cut in its chunks (a truncated transfer that reached us as a complete 200, typically
 * without Content-Length) from a foreign body. */
static int accept_body(struct call *c, bool *cut)
{
    const struct http_response *r = &c->resp;
    *cut = false;
    if (c->kind == BODY_PNG) {
        enum api_png png = api_png_check(r->body, r->len, r->content_length);
        *cut = png == API_PNG_TRUNCATED;
        return png == API_PNG_VALID ? 0 : -EIO;
    }
    return api_parse_items(r->body, r->len, c->id_key, &c->items, &c->n_items);
}

/* One try: sign, send, judge. Returns the try's verdict (err 0 on success). */
static struct http_verdict one_try(struct api *api, struct call *c, int64_t deadline,
                                   int64_t *ts_out, bool *rejected)
{
    struct http_verdict v = {.err = -ENOMEM, .retryable = false, .kind = HTTP_KIND_LOCAL};
    char ts[24], sig[SIGN_V2_LEN + 1];
    char *h_ts = NULL, *h_key = NULL, *h_sig = NULL;
    int64_t now = api_now_ms(api);
    *ts_out = now;
    *rejected = false;
    c->res.error_code[0] = c->res.message[0] = '\0';
    c->res.status = 0;
    snprintf(ts, sizeof(ts), "%" PRId64, now);
    int rc = sign_v2(api->secret, "GET", c->target, ts, api->access_key, sig);
    if (rc < 0) {
        v.err = rc;
        snprintf(c->res.message, sizeof(c->res.message), "cannot sign the request");
        goto out;
    }
    if (asprintf(&h_ts, "x-ncp-apigw-timestamp: %s", ts) < 0 ||
        asprintf(&h_key, "x-ncp-iam-access-key: %s", api->access_key) < 0 ||
        asprintf(&h_sig, "x-ncp-apigw-signature-v2: %s", sig) < 0) {
        snprintf(c->res.message, sizeof(c->res.message), "out of memory");
        goto out;
    }
    const char *hdrs[] = {h_ts, h_key, h_sig, "Accept: */*", "Expect:", NULL};
    struct http_request req = {
        .target = c->target,
        .headers = hdrs,
        .deadline_ms = deadline,
        .timeout_ms = api->timeout_ms,
        .connect_timeout_ms = api->connect_timeout_ms,
        .max_body = c->max_body,
        .mem = c->mem,
    };
    rc = http_get(api->http, &req, &c->resp);
    v = c->resp.verdict; /* v.err == rc; retryable and kind come with it */
    c->res.status = c->resp.status;
    if (c->resp.sent) {
        atomic_fetch_add(&api->requests, 1);
        atomic_fetch_add(&api->bytes, c->resp.received);
    }
    note_date(api, &c->resp);

    if (v.err == 0) {
        bool cut;
        rc = accept_body(c, &cut);
        if (rc < 0 && cut) {
            /* Judged as http judges a 200 cut short of its Content-Length (SPEC 6:
             * EIO, retried; a truncation for the circuit breaker), flag included. */
            c->resp.flags |= HTTP_F_TRUNCATED;
            http_classify(0 /* CURLE_OK */, 200, c->resp.flags, &v);
            c->resp.verdict = v;
            snprintf(c->res.message, sizeof(c->res.message), "PNG cut off");
        } else if (rc < 0) {
            v = (struct http_verdict){.err = rc,
                                      .retryable = false,
                                      .kind = rc == -EIO ? HTTP_KIND_BAD_BODY : HTTP_KIND_LOCAL};
            *rejected = rc == -EIO;
            snprintf(c->res.message, sizeof(c->res.message), "%s",
                     rc == -ENOMEM         ? "out of memory"
                     : c->kind == BODY_PNG ? "not a valid PNG"
                                           : "not a JSON list");
        }
    } else if (c->resp.status != 0) {
        api_gateway_error(c->resp.body, c->resp.len, c->res.error_code, sizeof(c->res.error_code),
                          c->res.message, sizeof(c->res.message));
        if (c->resp.status == 429 && strcmp(c->res.error_code, "400") == 0)
            v.retryable = false; /* quota exceeded: waiting will not help */
    }
    if (v.err != 0 && !c->res.message[0])
        snprintf(c->res.message, sizeof(c->res.message), "%s", c->resp.error);
out:
    free(h_ts);
    free(h_key);
    free(h_sig);
    if (v.err != 0 && c->resp.sent)
        atomic_fetch_add(&api->failures, 1);
    c->res.outcome = v.err == 0 ? API_OK : outcome_of(v.kind);
    return v;
}

/* " errorCode=..." and the message, escaped for a log line. */
static void log_try(enum log_level lvl, const struct call *c, const char *what, int err,
                    bool rejected)
{
    char status[16] = "-";
    if (c->res.status)
        snprintf(status, sizeof(status), "%ld", c->res.status);
    char *code = log_escape(c->res.error_code, strlen(c->res.error_code), 32);
    char *msg = log_escape(c->res.message, strlen(c->res.message), sizeof(c->res.message));
    char *body = rejected ? log_escape(c->resp.body, c->resp.len, BODY_EXCERPT) : NULL;
    log_msg(lvl, "upstream: GET %s: HTTP %s errorCode=%s \"%s\" %s: %s%s%s%s", c->target, status,
            code && code[0] ? code : "-", msg ? msg : "", what, api_errno_name(err),
            body ? " body=\"" : "", body ? body : "", body ? "\"" : "");
    free(code);
    free(msg);
    free(body);
}

static int call_run(struct api *api, struct call *c)
{
    int64_t start = http_mono_ms();
    int64_t deadline = start + (int64_t)api->timeout_ms * (api->retries + 1);
    int retries_used = 0, tries = 0;
    bool skew_retried = false, rejected = false;
    struct http_verdict v;

    pthread_mutex_lock(&api->mu);
    api_budget_first_try(&api->budget);
    pthread_mutex_unlock(&api->mu);

    for (;;) {
        int64_t ts;
        http_response_cleanup(&c->resp, c->mem);
        memset(&c->resp, 0, sizeof(c->resp)); /* nothing of the last try leaks into this */
        v = one_try(api, c, deadline, &ts, &rejected);
        if (++tries > 1 && c->resp.sent)
            atomic_fetch_add(&api->retries_done, 1);
        c->signed_at_ms = ts;
        if (v.err == 0)
            break;

        /* A 401 caused by our clock: once, at once, with the corrected clock. */
        if (c->resp.status == 401 && !skew_retried && c->resp.has_date &&
            abs64(c->resp.date_ms - ts) > SKEW_REJECT_MS &&
            abs64(c->resp.date_ms - api_now_ms(api)) < SKEW_REJECT_MS - SKEW_APPLY_MS &&
            http_mono_ms() < deadline) {
            skew_retried = true;
            log_try(LOG_LVL_DEBUG, c, "(clock skew: retrying with the gateway's time)", v.err,
                    false);
            continue;
        }
        if (!v.retryable || retries_used >= api->retries)
            break;
        int64_t wait = api_backoff_ms(retries_used + 1, rand64());
        if (c->resp.retry_after_ms > wait)
            wait = c->resp.retry_after_ms;
        if (http_mono_ms() + wait >= deadline)
            break; /* the next try could not start before D */
        pthread_mutex_lock(&api->mu);
        bool token = api_budget_take_retry(&api->budget);
        pthread_mutex_unlock(&api->mu);
        if (!token) {
            log_try(LOG_LVL_DEBUG, c, "(retry budget empty)", v.err, false);
            break;
        }
        char what[64];
        snprintf(what, sizeof(what), "(try %d, retrying in %" PRId64 " ms)", tries, wait);
        log_try(LOG_LVL_DEBUG, c, what, v.err, false);
        retries_used++;
        sleep_ms(wait);
    }

    c->res.tries = tries;
    pthread_mutex_lock(&api->mu);
    c->res.skew_known = api->skew_known;
    c->res.skew_ms = api->skew_ms;
    pthread_mutex_unlock(&api->mu);
    if (v.err != 0) {
        char what[32];
        snprintf(what, sizeof(what), "after %d tries", tries);
        log_try(LOG_LVL_WARN, c, what, v.err, rejected);
        http_response_cleanup(&c->resp, c->mem);
    }
    return v.err;
}

static void give_result(const struct call *c, struct api_result *result)
{
    if (result)
        *result = c->res;
}

int api_fetch_image(struct api *api, const char *dash_id, const char *widget_id, int64_t start_ms,
                    int64_t end_ms, enum vpath_res res, const struct api_mem *mem,
                    struct api_image *out, struct api_result *result)
{
    struct http_mem hmem = {0};
    struct call c = {.kind = BODY_PNG, .max_body = api->max_image_bytes};
    memset(out, 0, sizeof(*out));
    if (mem) {
        hmem = (struct http_mem){mem->reserve, mem->release, mem->arg};
        c.mem = &hmem;
    }
    if (!id_ok(dash_id) || !id_ok(widget_id) || (res != VPATH_RES_AUTO && res != VPATH_RES_HIGH)) {
        c.res.outcome = API_HTTP; /* as the gateway's 400 would be */
        snprintf(c.res.message, sizeof(c.res.message), "bad id or resolution");
        give_result(&c, result);
        return -EINVAL;
    }
    char *target = api_image_target(dash_id, widget_id, start_ms, end_ms, res);
    if (!target) {
        c.res.outcome = API_UNREACHABLE;
        snprintf(c.res.message, sizeof(c.res.message), "out of memory");
        give_result(&c, result);
        return -ENOMEM;
    }
    c.target = target;
    int rc = call_run(api, &c);
    if (rc == 0) {
        out->data = c.resp.body; /* its reservation passes to the caller */
        out->len = c.resp.len;
        out->signed_at_ms = c.signed_at_ms;
        c.resp.body = NULL;
        c.resp.len = 0;
    }
    give_result(&c, result);
    free(target);
    return rc;
}

static int list_call(struct api *api, char *target, const char *id_key, struct api_item **items,
                     size_t *n, struct api_result *result)
{
    struct call c = {
        .target = target, .kind = BODY_LIST, .id_key = id_key, .max_body = API_JSON_MAX};
    *items = NULL;
    *n = 0;
    int rc = call_run(api, &c);
    if (rc == 0) {
        *items = c.items;
        *n = c.n_items;
        http_response_cleanup(&c.resp, NULL);
    }
    give_result(&c, result);
    return rc;
}

int api_list_dashboards(struct api *api, struct api_item **items, size_t *n,
                        struct api_result *result)
{
    char target[] = PATH_DASHBOARDS;
    return list_call(api, target, "id", items, n, result);
}

int api_list_widgets(struct api *api, const char *dash_id, struct api_item **items, size_t *n,
                     struct api_result *result)
{
    char *target = widgets_target(dash_id);
    if (!target) {
        *items = NULL;
        *n = 0;
        if (result) {
            memset(result, 0, sizeof(*result));
            result->outcome = API_UNREACHABLE;
        }
        return id_ok(dash_id) ? -ENOMEM : -EINVAL;
    }
    int rc = list_call(api, target, "widgetId", items, n, result);
    free(target);
    return rc;
}
