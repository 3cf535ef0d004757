/* api - the three Cloud Insight calls of SPEC section 1, built of sign and http.
 *
 * A logical call runs tries until one succeeds or one is final:
 *   - D (CLOCK_MONOTONIC, fixed by the caller when the call was first asked for, or
 *     now + timeout_ms * (retries + 1)) bounds everything: slot and rate waits inside
 *     http, transfers, and the backoff sleeps and fleet pacer waits here. A wait that
 *     would end after D is not started: the call fails at once with the last errno.
 *   - Each try is signed afresh: timestamp = api_now_ms, signature over
 *     "GET <target>\n<timestamp>\n<access key>" where <target> is the exact string sent
 *     (api_image_target or a list path). The same string appears in the log lines.
 *     Every try also carries x-ncp-dmn_cd when api_domain_code gives a value (decided
 *     once, in api_new): a plain header, not part of the signed string.
 *   - After try n fails retryably (http's verdict; 429 with gateway errorCode 400, quota
 *     exceeded, is final), try n+1 waits max(Retry-After, uniform(0, min(5 s,
 *     250 ms * 2^(n-1)))) and needs a token of the retry budget (at most 10 tokens,
 *     starting full, +0.1 per first try, -1 per retry; the draw and the budget are in
 *     api_breaker.c).
 *   - A 200 must also pass its body check (api_body.c). A PNG whose last chunk runs
 *     past the body's end is a truncated transfer: EIO, retried, as http's cut 200.
 *     Any other invalid PNG, or a malformed JSON list: EIO, final, logged with the
 *     first 64 bytes.
 *   - Clock skew: every answer's Date header measures gateway - local. An offset over
 *     60 s (and at most 24 h) is applied to api_now_ms; within 60 s the local clock is
 *     used; over 24 h it is logged and ignored. A 401 whose Date is more than 5 minutes
 *     from the try's timestamp is retried once, at once and without budget, when the
 *     corrected clock is within 5 minutes of the gateway: this extra try is outside
 *     `retries` (a wrong clock is ours to fix, not the server's fault).
 *   - A pacer handed in (api_set_pacer: the shared cache's fleet rate limit) is asked
 *     before every try; its wait counts against D and ends when the breaker opens.
 *   - One warn line per failed logical call (SPEC 8), one debug line per failed try.
 *     Logged: the target, status, gateway errorCode and message (escaped), curl's text,
 *     the errno name. Never the secret, the signature or the access key.
 *
 * Two clocks: every duration here (D, backoff, the breaker's quiet time and probe
 * interval) is on CLOCK_MONOTONIC (http_mono_ms). The realtime clock, corrected by the
 * gateway's offset (api_now_ms), only names time: the signed timestamp, signed_at_ms,
 * and the skew measured against the Date header.
 *
 * Account state: the applied offset, the retry budget, the breaker and the counters
 * live in a refcounted struct acct that describes the endpoint and access key. api_new
 * with an inherit of the same endpoint and key takes a reference to inherit's, so a
 * SIGHUP that changes timeout_ms or max_connections keeps them; a client's http client
 * and settings are its own.
 *
 * Circuit breaker (SPEC 6): its rules - what counts as a failed try, when it opens,
 * the probe, closing - are api_breaker.c's. Here: every try is noted (breaker_note) and
 * a transition logged once. Opening bumps down_total, sets the atomic `down`
 * (api_is_down), broadcasts acct.cv and wakes the http client's waits, so every retry
 * sleeping in its backoff, and every try waiting for a connection slot or a rate turn
 * (http_request.cancel), fails at once with the errno that opened it, as does a call
 * about to retry; tries already sent run to their end. Those calls, and the calls refused while
 * open, end with result.fast_fail = 1, the outcome of the opening try, and no warn line.
 *
 * Locking: acct.mu protects the retry budget, the skew bookkeeping and the breaker; it
 * is held only for arithmetic and for the backoff and fleet pacer waits on acct.cv (no
 * I/O, no logging, no calls into other modules). The applied offset, its generation,
 * `down` and the counters are atomics, so api_now_ms, api_is_down and api_get_stats take
 * no lock.
 * Everything else in struct api and struct acct is immutable after api_new.
 */
#include "insightfs/api.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* The account state: what describes the endpoint and access key, shared (refcounted)
 * by the clients of successive configuration generations. */
struct acct {
    atomic_int refs;
    char *endpoint, *access_key; /* the identity: immutable */

    atomic_int_fast64_t offset_ms; /* the applied gateway offset */
    atomic_uint_fast64_t clock_gen;
    atomic_uint_fast64_t requests, failures, retries_done, bytes, down_total;
    atomic_int down; /* 1 while the breaker is open */

    pthread_mutex_t mu;
    pthread_cond_t cv;             /* CLOCK_MONOTONIC; broadcast when the breaker opens */
    struct api_budget budget;      /* protected by mu */
    struct api_breaker br;         /* protected by mu */
    atomic_uint_fast64_t opened;   /* bumped under mu: times opened (calls off backoff
                                      sleeps and tries waiting for a slot or a turn) */
    enum api_outcome down_outcome; /* protected by mu: the outcome of the try that opened it */
    bool skew_known;               /* protected by mu */
    int64_t skew_ms;               /* protected by mu: gateway - local at the last Date */
    bool skew_logged;              /* protected by mu */
    int64_t skew_logged_ms;        /* protected by mu: the offset last logged */

    pthread_mutex_t clients_mu; /* never held with mu; taken before an http client's lock */
    struct api *clients;        /* protected by clients_mu: every client of this account (a
                                   reload's new one and the old one still finishing): an
                                   opening calls off the waiting tries of each */
};

struct api {
    struct http_client *http;
    struct acct *acct;
    struct sign_key *key; /* the secret, keyed once; sign_key_free cleanses it */
    char *h_domain;       /* "x-ncp-dmn_cd: <code>", or NULL when the header is not sent */
    int timeout_ms, connect_timeout_ms, retries;
    size_t max_image_bytes;
    int64_t test_offset_ms;
    struct api_pacer pacer;                /* book_turn NULL: none */
    struct api *next_client, *prev_client; /* in acct->clients, protected by clients_mu */
    bool listed;                           /* in acct->clients */
};

/* ---- clocks, randomness ---- */

static int64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait ns from now on CLOCK_MONOTONIC unless the breaker opens: opened is the opening
 * count when the try was admitted (or its retry decided), and an opening since then,
 * even one already closed again, ends the wait. with_open: an open breaker ends it too
 * (a retry's backoff; a probe, admitted while open, waits for its pacer turn without
 * it). Returns 0 when the wait ran out, or the negative errno that opened the breaker
 * (the try must not be sent). */
static int sleep_unless_opened(struct acct *a, int64_t ns, uint64_t opened, bool with_open)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec += (long)(ns % 1000000000);
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&a->mu);
    /* Openings are counted, so one that a straggling answer closed again before this
     * thread got the lock back still ends the wait. */
    while (!(with_open && a->br.open) && a->opened == opened)
        if (pthread_cond_timedwait(&a->cv, &a->mu, &ts) == ETIMEDOUT)
            break;
    int rc = (with_open && a->br.open) || a->opened != opened ? a->br.err : 0;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* The backoff sleep of a retry: ms from now (counted from now in nanoseconds: a start
 * truncated to whole ms would end up to 1 ms early, and a Retry-After of 1 s must mean
 * at least 1 s, T4), cut short when the breaker opens. */
static int backoff_sleep(struct acct *a, int64_t ms, uint64_t opened)
{
    return sleep_unless_opened(a, ms * 1000000, opened, true);
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
    return realtime_ms() + api->test_offset_ms + (int64_t)atomic_load(&api->acct->offset_ms);
}

uint64_t api_clock_generation(struct api *api)
{
    return (uint64_t)atomic_load(&api->acct->clock_gen);
}

int64_t api_deadline_ms(struct api *api, int64_t start_mono_ms)
{
    return start_mono_ms + (int64_t)api->timeout_ms * (api->retries + 1);
}

int api_is_down(struct api *api)
{
    return atomic_load(&api->acct->down);
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
    struct acct *a = api->acct;

    pthread_mutex_lock(&a->mu);
    a->skew_known = true;
    a->skew_ms = off;
    int64_t applied = (int64_t)atomic_load(&a->offset_ms), next = applied;
    if (abs64(off) > SKEW_IGNORE_MS)
        next = applied;
    else if (abs64(off) > SKEW_APPLY_MS)
        next = abs64(off - applied) > SKEW_JITTER_MS ? off : applied;
    else
        next = 0;
    int64_t shown = abs64(off) > SKEW_IGNORE_MS ? off : next;
    if (!a->skew_logged ? (shown != 0) : abs64(shown - a->skew_logged_ms) > SKEW_APPLY_MS) {
        say = abs64(off) > SKEW_IGNORE_MS ? SAY_IGNORED : next != 0 ? SAY_APPLIED : SAY_LOCAL;
        a->skew_logged = true;
        a->skew_logged_ms = shown;
    }
    if (next != applied) {
        atomic_store(&a->offset_ms, next);
        atomic_fetch_add(&a->clock_gen, 1);
    }
    pthread_mutex_unlock(&a->mu);

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

/* ---- account state ---- */

static void acct_unref(struct acct *a)
{
    if (!a || atomic_fetch_sub(&a->refs, 1) != 1)
        return;
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->clients_mu);
    free(a->endpoint);
    free(a->access_key);
    free(a);
}

static void acct_add_client(struct acct *a, struct api *api)
{
    pthread_mutex_lock(&a->clients_mu);
    api->prev_client = NULL;
    api->next_client = a->clients;
    if (a->clients)
        a->clients->prev_client = api;
    a->clients = api;
    api->listed = true;
    pthread_mutex_unlock(&a->clients_mu);
}

static void acct_remove_client(struct acct *a, struct api *api)
{
    pthread_mutex_lock(&a->clients_mu);
    if (api->prev_client)
        api->prev_client->next_client = api->next_client;
    else
        a->clients = api->next_client;
    if (api->next_client)
        api->next_client->prev_client = api->prev_client;
    api->listed = false;
    pthread_mutex_unlock(&a->clients_mu);
}

/* The breaker opened: tries waiting for a slot or a rate turn in any client of the
 * account are called off (each looks at acct.opened when woken). */
static void acct_wake_clients(struct acct *a)
{
    pthread_mutex_lock(&a->clients_mu);
    for (struct api *c = a->clients; c; c = c->next_client)
        http_client_wake(c->http);
    pthread_mutex_unlock(&a->clients_mu);
}

/* Fresh state for cfg's endpoint and access key, or NULL (out of memory). */
static struct acct *acct_new(const struct cfg *cfg)
{
    struct acct *a = calloc(1, sizeof(*a));
    pthread_condattr_t ca;
    bool mu = false, cv = false;
    if (!a)
        return NULL;
    atomic_init(&a->refs, 1);
    a->endpoint = strdup(cfg->endpoint);
    a->access_key = strdup(cfg->access_key);
    if (!a->endpoint || !a->access_key)
        goto fail;
    mu = pthread_mutex_init(&a->mu, NULL) == 0;
    if (mu && pthread_mutex_init(&a->clients_mu, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        mu = false;
        goto fail;
    }
    if (mu && pthread_condattr_init(&ca) == 0) {
        cv = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&a->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!cv)
        goto fail;
    api_budget_init(&a->budget);
    api_breaker_init(&a->br, http_mono_ms());
    return a;

fail:
    if (mu) {
        pthread_mutex_destroy(&a->mu);
        pthread_mutex_destroy(&a->clients_mu);
    }
    free(a->endpoint);
    free(a->access_key);
    free(a);
    return NULL;
}

/* ---- the domain code ---- */

const char *api_domain_code(const char *endpoint, const char *configured)
{
    if (configured)
        return configured;
    const char *host = endpoint ? strstr(endpoint, "://") : NULL;
    if (!host)
        return NULL;
    host += 3;
    size_t len = strcspn(host, ":/");
    if (len == strlen(API_FIN_HOST) && strncasecmp(host, API_FIN_HOST, len) == 0)
        return "FIN";
    return NULL;
}

/* ---- api_new / api_free ---- */

struct api *api_new(const struct cfg *cfg, int64_t test_offset_ms, struct api *inherit, char **err)
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
    if (inherit && strcmp(inherit->acct->endpoint, cfg->endpoint) == 0 &&
        strcmp(inherit->acct->access_key, cfg->access_key) == 0) {
        api->acct = inherit->acct;
        atomic_fetch_add(&api->acct->refs, 1);
    } else {
        api->acct = acct_new(cfg);
    }
    int kerr = 0;
    api->key = sign_key_new(cfg->secret_key, &kerr);
    const char *domain = api_domain_code(cfg->endpoint, cfg->domain_code);
    if (domain && asprintf(&api->h_domain, "x-ncp-dmn_cd: %s", domain) < 0)
        api->h_domain = NULL; /* undefined after a failed asprintf */
    if (!api->acct || !api->key || (domain && !api->h_domain)) {
        why =
            !api->key && kerr == -EIO ? "OpenSSL cannot make an HMAC-SHA256 key" : "out of memory";
        goto fail;
    }
    api->timeout_ms = cfg->timeout_ms;
    api->connect_timeout_ms = cfg->connect_timeout_ms;
    api->retries = cfg->retries;
    api->max_image_bytes =
        (uint64_t)cfg->max_image_bytes > SIZE_MAX ? SIZE_MAX : (size_t)cfg->max_image_bytes;
    api->test_offset_ms = test_offset_ms;
    acct_add_client(api->acct, api);
    return api;

fail:
    if (err)
        *err = cerr ? cerr : strdup(why ? why : "out of memory");
    else
        free(cerr);
    api_free(api);
    return NULL;
}

void api_free(struct api *api)
{
    if (!api)
        return;
    if (api->listed)
        acct_remove_client(api->acct, api); /* before its http client goes */
    http_client_free(api->http);
    acct_unref(api->acct);
    sign_key_free(api->key);
    free(api->h_domain);
    free(api);
}

void api_set_pacer(struct api *api, const struct api_pacer *pacer)
{
    api->pacer = *pacer;
}

void api_get_stats(struct api *api, struct api_stats *out)
{
    struct acct *a = api->acct;
    out->requests = atomic_load(&a->requests);
    out->failures = atomic_load(&a->failures);
    out->retries = atomic_load(&a->retries_done);
    out->in_flight = http_client_in_flight(api->http);
    out->bytes = atomic_load(&a->bytes);
    out->down = (uint64_t)atomic_load(&a->down);
    out->down_total = atomic_load(&a->down_total);
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

char *api_image_target(const char *dash_id, const char *widget_id, int64_t start_ms, int64_t end_ms,
                       enum vpath_res res)
{
    char *d = NULL, *w = NULL, *out = NULL;
    if (!api_id_addressable(dash_id) || !api_id_addressable(widget_id) ||
        (res != VPATH_RES_AUTO && res != VPATH_RES_HIGH))
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
    if (!api_id_addressable(dash_id))
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
    size_t left_out; /* BODY_LIST: elements whose id cannot be addressed */
    int64_t signed_at_ms;
    struct api_result res;
    uint64_t opened_at; /* acct.opened when the call was admitted, or its retry decided */
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
    return api_parse_items(r->body, r->len, c->id_key, &c->items, &c->n_items, &c->left_out);
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
    int rc = sign_v2_key(api->key, "GET", c->target, ts, api->acct->access_key, sig);
    if (rc < 0) {
        v.err = rc;
        snprintf(c->res.message, sizeof(c->res.message), "cannot sign the request");
        goto out;
    }
    if (asprintf(&h_ts, "x-ncp-apigw-timestamp: %s", ts) < 0 ||
        asprintf(&h_key, "x-ncp-iam-access-key: %s", api->acct->access_key) < 0 ||
        asprintf(&h_sig, "x-ncp-apigw-signature-v2: %s", sig) < 0) {
        snprintf(c->res.message, sizeof(c->res.message), "out of memory");
        goto out;
    }
    /* h_domain last: when it is NULL it ends the list, and no x-ncp-dmn_cd is sent. */
    const char *hdrs[] = {h_ts, h_key, h_sig, "Accept: */*", "Expect:", api->h_domain, NULL};
    struct http_request req = {
        .target = c->target,
        .headers = hdrs,
        .deadline_ms = deadline,
        .timeout_ms = api->timeout_ms,
        .connect_timeout_ms = api->connect_timeout_ms,
        .max_body = c->max_body,
        .mem = c->mem,
        .cancel = &api->acct->opened, /* an opening breaker calls off unsent tries */
        .cancel_at = c->opened_at,
    };
    rc = http_get(api->http, &req, &c->resp);
    v = c->resp.verdict; /* v.err == rc; retryable and kind come with it */
    c->res.status = c->resp.status;
    if (c->resp.sent) {
        atomic_fetch_add(&api->acct->requests, 1);
        atomic_fetch_add(&api->acct->bytes, c->resp.received);
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
        atomic_fetch_add(&api->acct->failures, 1);
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

/* Tell the breaker how a try went; log a transition (outside the lock). */
static void breaker_note(struct api *api, const struct call *c, struct http_verdict v, bool probe,
                         int64_t try_start)
{
    struct acct *a = api->acct;
    enum api_try_class cls = api_try_class(c->resp.sent, c->resp.status, v.kind, v.retryable);
    int64_t now = http_mono_ms();
    pthread_mutex_lock(&a->mu);
    enum api_transition t =
        api_breaker_note(&a->br, cls, probe, v.err, try_start, now, api->timeout_ms);
    int64_t down_ms = now - a->br.opened_at;
    if (t == API_BREAKER_OPENED) {
        a->opened++;
        a->down_outcome = c->res.outcome;
        atomic_store(&a->down, 1);
        atomic_fetch_add(&a->down_total, 1);
        pthread_cond_broadcast(&a->cv); /* end every backoff and fleet pacer wait */
    } else if (t == API_BREAKER_CLOSED) {
        atomic_store(&a->down, 0);
    }
    pthread_mutex_unlock(&a->mu);
    if (t == API_BREAKER_OPENED) {
        acct_wake_clients(a); /* tries waiting for a slot or a turn: called off */
        log_warn("upstream down: %s", api_errno_name(v.err));
    } else if (t == API_BREAKER_CLOSED)
        log_info("upstream up after %" PRId64 " s", (down_ms + 500) / 1000);
}

/* A try called off unsent because the breaker opened (while it waited for its fleet
 * turn, a slot or a rate turn): a first try ends as a refused call would (the opening's
 * outcome); a retry's caller keeps the last try's description, as one cancelled in its
 * backoff does. Returns the errno that opened the breaker. */
static int called_off(struct acct *a, struct call *c, bool first_try)
{
    pthread_mutex_lock(&a->mu);
    int err = a->br.err;
    enum api_outcome outcome = a->down_outcome;
    pthread_mutex_unlock(&a->mu);
    if (first_try) {
        c->res.outcome = outcome;
        c->res.status = 0;
        c->res.error_code[0] = '\0';
        snprintf(c->res.message, sizeof(c->res.message), "upstream down (circuit breaker open)");
    }
    return err;
}

/* The probe was never sent (no fleet turn, or called off): free its place. */
static void probe_unsent(struct acct *a)
{
    pthread_mutex_lock(&a->mu);
    api_breaker_probe_unsent(&a->br);
    pthread_mutex_unlock(&a->mu);
}

static int call_run(struct api *api, struct call *c, int64_t deadline)
{
    struct acct *a = api->acct;
    int64_t start = http_mono_ms();
    int retries_used = 0, tries = 0, down_err = 0;
    bool skew_retried = false, rejected = false;
    struct http_verdict v = {.err = 0};
    if (deadline == 0)
        deadline = api_deadline_ms(api, start);

    pthread_mutex_lock(&a->mu);
    enum api_admit admit = api_breaker_admit(&a->br, start);
    c->opened_at = a->opened;
    if (admit == API_ADMIT_REFUSE) {
        down_err = a->br.err;
        c->res.outcome = a->down_outcome;
    } else {
        api_budget_first_try(&a->budget);
    }
    pthread_mutex_unlock(&a->mu);
    if (down_err)
        snprintf(c->res.message, sizeof(c->res.message), "upstream down (circuit breaker open)");

    while (!down_err) {
        if (tries > 0) {
            /* A retry: c->opened_at was sampled when it was decided (with its budget
             * token, or with the clock-skew decision), so an opening from then on calls
             * it off - even one an answer has closed again - but not one before. */
            pthread_mutex_lock(&a->mu);
            if (a->br.open || a->opened != c->opened_at)
                down_err = a->br.err;
            pthread_mutex_unlock(&a->mu);
            if (down_err)
                break;
        }
        /* The fleet's pacer first (SPEC 13): its wait counts against D; no slot before D
         * means no try, and the call ends with the last try's errno (ETIMEDOUT if none).
         * An opening breaker ends the wait at once (SPEC 6): the try is called off. A
         * probe (admitted while open) waits for its turn whatever the breaker says. */
        int64_t pace_ns = 0;
        if (api->pacer.book_turn && api->pacer.book_turn(api->pacer.arg, deadline, &pace_ns) < 0) {
            if (admit == API_ADMIT_PROBE)
                probe_unsent(a);
            if (tries == 0) {
                v = (struct http_verdict){
                    .err = -ETIMEDOUT, .retryable = false, .kind = HTTP_KIND_TIMEOUT};
                c->res.outcome = API_TIMEOUT;
                snprintf(c->res.message, sizeof(c->res.message),
                         "no slot of the fleet rate limit before the deadline");
            }
            break;
        }
        if (pace_ns > 0 && sleep_unless_opened(a, pace_ns, c->opened_at, false) != 0) {
            if (admit == API_ADMIT_PROBE)
                probe_unsent(a);
            down_err = called_off(a, c, tries == 0);
            break;
        }
        int64_t ts, try_start = http_mono_ms();
        struct http_verdict v_last = v;
        struct api_result res_last = c->res;
        http_response_cleanup(&c->resp, c->mem);
        memset(&c->resp, 0, sizeof(c->resp)); /* nothing of the last try leaks into this */
        v = one_try(api, c, deadline, &ts, &rejected);
        breaker_note(api, c, v, admit == API_ADMIT_PROBE, try_start);
        if (!c->resp.sent && atomic_load(&a->opened) != c->opened_at) {
            /* Called off while it waited for a slot or a turn in http. */
            if (tries > 0) {
                v = v_last;
                c->res = res_last;
            }
            down_err = called_off(a, c, tries == 0);
            break;
        }
        if (tries > 0 && !c->resp.sent) {
            /* A retry that found no slot or rate turn before D was not a try: the call
             * ends with the last try's errno and description (SPEC 6), as when the
             * fleet's pacer has no turn for it. */
            v = v_last;
            c->res = res_last;
            break;
        }
        if (++tries > 1)
            atomic_fetch_add(&a->retries_done, 1);
        c->signed_at_ms = ts;
        if (v.err == 0 || admit == API_ADMIT_PROBE)
            break; /* the probe is one try, with no retry */

        /* A 401 caused by our clock: once, at once, with the corrected clock. */
        if (c->resp.status == 401 && !skew_retried && c->resp.has_date &&
            abs64(c->resp.date_ms - ts) > SKEW_REJECT_MS &&
            abs64(c->resp.date_ms - api_now_ms(api)) < SKEW_REJECT_MS - SKEW_APPLY_MS &&
            http_mono_ms() < deadline) {
            skew_retried = true;
            pthread_mutex_lock(&a->mu);
            c->opened_at = a->opened; /* decided now: only a later opening calls it off */
            pthread_mutex_unlock(&a->mu);
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
        pthread_mutex_lock(&a->mu);
        bool token = false;
        if (a->br.open) {
            down_err = a->br.err; /* opened by this try or another: no retry now */
        } else {
            token = api_budget_take_retry(&a->budget);
            c->opened_at = a->opened; /* the retry is decided: later openings call it off */
        }
        pthread_mutex_unlock(&a->mu);
        if (down_err)
            break;
        if (!token) {
            log_try(LOG_LVL_DEBUG, c, "(retry budget empty)", v.err, false);
            break;
        }
        char what[64];
        snprintf(what, sizeof(what), "(try %d, retrying in %" PRId64 " ms)", tries, wait);
        log_try(LOG_LVL_DEBUG, c, what, v.err, false);
        retries_used++;
        down_err = backoff_sleep(a, wait, c->opened_at);
    }

    c->res.tries = tries;
    c->res.fast_fail = down_err != 0;
    pthread_mutex_lock(&a->mu);
    c->res.skew_known = a->skew_known;
    c->res.skew_ms = a->skew_ms;
    pthread_mutex_unlock(&a->mu);
    if (down_err) {
        /* Ended by the breaker: its one "upstream down" line speaks for every such call. */
        if (tries)
            log_try(LOG_LVL_DEBUG, c, "(upstream down: not retried)", v.err, false);
        v.err = down_err;
    } else if (v.err != 0) {
        char what[32];
        snprintf(what, sizeof(what), "after %d tries", tries);
        log_try(LOG_LVL_WARN, c, what, v.err, rejected);
    }
    if (v.err != 0)
        http_response_cleanup(&c->resp, c->mem);
    return v.err;
}

static void give_result(const struct call *c, struct api_result *result)
{
    if (result)
        *result = c->res;
}

int api_fetch_image(struct api *api, const char *dash_id, const char *widget_id, int64_t start_ms,
                    int64_t end_ms, enum vpath_res res, int64_t deadline_mono_ms,
                    const struct http_mem *mem, struct api_image *out, struct api_result *result)
{
    struct call c = {.kind = BODY_PNG, .max_body = api->max_image_bytes, .mem = mem};
    memset(out, 0, sizeof(*out));
    if (!api_id_addressable(dash_id) || !api_id_addressable(widget_id) ||
        (res != VPATH_RES_AUTO && res != VPATH_RES_HIGH)) {
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
    int rc = call_run(api, &c, deadline_mono_ms);
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

static int list_call(struct api *api, char *target, const char *id_key, int64_t deadline,
                     struct api_item **items, size_t *n, struct api_result *result)
{
    struct call c = {
        .target = target, .kind = BODY_LIST, .id_key = id_key, .max_body = API_JSON_MAX};
    *items = NULL;
    *n = 0;
    int rc = call_run(api, &c, deadline);
    if (rc == 0) {
        *items = c.items;
        *n = c.n_items;
        http_response_cleanup(&c.resp, NULL);
        if (c.left_out > 0)
            log_warn("upstream: GET %s: %zu entr%s left out (an id that is empty, \".\" or \"..\", "
                     "or has a control character, can be neither asked for nor configured)",
                     target, c.left_out, c.left_out == 1 ? "y" : "ies");
    }
    give_result(&c, result);
    return rc;
}

int api_list_dashboards(struct api *api, int64_t deadline_mono_ms, struct api_item **items,
                        size_t *n, struct api_result *result)
{
    char target[] = PATH_DASHBOARDS;
    return list_call(api, target, "id", deadline_mono_ms, items, n, result);
}

int api_list_widgets(struct api *api, const char *dash_id, int64_t deadline_mono_ms,
                     struct api_item **items, size_t *n, struct api_result *result)
{
    char *target = widgets_target(dash_id);
    if (!target) {
        *items = NULL;
        *n = 0;
        if (result) {
            memset(result, 0, sizeof(*result));
            result->outcome = API_UNREACHABLE;
        }
        return api_id_addressable(dash_id) ? -ENOMEM : -EINVAL;
    }
    int rc = list_call(api, target, "widgetId", deadline_mono_ms, items, n, result);
    free(target);
    return rc;
}
