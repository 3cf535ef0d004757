/* http - bounded GETs to one endpoint over libcurl (the errno table is http_errno.c, the
 * shared certificate store http_tls.c).
 *
 * Design
 *  - Slots. A client allows max_connections transfers at once. A request takes a slot
 *    (waiting on a condition variable on CLOCK_MONOTONIC until its deadline) and with it
 *    a connection from the pool (struct conn: an easy handle and a multi handle of its
 *    own, which holds the live connection), used by that one thread until it is put
 *    back; so no handle is ever in two threads. Connections go back to a LIFO stack: a
 *    sequence of requests reuses one keep-alive connection, and at most max_connections
 *    connections exist.
 *  - A pooled easy handle is configured once (conn_new): every request sets only what
 *    changes (URL, headers, timeouts, where the body goes), and putting it back clears
 *    the pointers into the request's memory. The transfer is driven here, perform first
 *    and then wait, instead of by curl_easy_perform, whose loop waits first: one poll
 *    less per request, and no curl_easy_reset and 27 options per request (make bench
 *    row 7e counts the daemon's CPU per fetch).
 *  - Connections are NOT put in the share handle. curl documents that sharing the
 *    connection cache (CURL_LOCK_DATA_CONNECT) between concurrent threads is unsupported
 *    (KNOWN_BUGS "A shared connection cache is not thread-safe", curl issues #4915 and
 *    #9404, still open for 7.88). Each pooled handle's own cache gives the same reuse
 *    with one connection per slot. The share handle holds the DNS cache, with one mutex
 *    per curl_lock_data. TLS sessions are not shared: under ThreadSanitizer, four
 *    connections' first handshakes at once showed one thread copying a session's
 *    OpenSSL stack outside the share lock while another freed it under it (libcurl
 *    7.88 with OpenSSL 3); each pooled connection is long-lived, so resuming sessions
 *    across connections saved little.
 *  - Rate limit. max_requests_per_second spaces request starts 1/N s apart: a request
 *    books the next free turn under the client mutex and waits for it on turn_wake; a
 *    turn after the deadline is not booked and the request fails ETIMEDOUT. The slot is
 *    taken first, so the spacing holds on the wire.
 *  - Calling off (SPEC 6: an opening circuit breaker fails every try not yet sent, at
 *    once): a request carries its caller's cancel counter; the waits for a slot and for
 *    a turn end when it moves (http_client_wake broadcasts both conditions), and the
 *    counter is read once more after them, so nothing is sent after it moved. A turn
 *    booked by a request called off stays used: the spacing only errs on the safe side.
 *  - Timeouts. Each try: total min(timeout_ms, left), connect min(connect_timeout_ms,
 *    left), where left is what remains of the deadline after the waits; and a low-speed
 *    abort below 1 byte/s over min(5000, timeout_ms) ms. Until the answer's first byte
 *    that is libcurl's LOW_SPEED limit, which it takes in whole seconds (rounded up, at
 *    least 1 s: the total timeout bounds shorter tries anyway). From the first byte on,
 *    transfer() checks it itself from the chunks' arrival times (pace_limit): libcurl
 *    judges a moving average over about 6 s, so a body that stops after a burst would
 *    be given some 11 s, and the try's whole timeout_ms when that is shorter.
 *  - Bodies grow in one malloc'd buffer: sized to Content-Length when one came (and is
 *    within the cap), else doubling from 16 KiB, never beyond max_body. Each growth step
 *    is reserved through http_mem first; over the cap, a refused reservation or a failed
 *    realloc makes the write callback return short, which aborts the transfer. At the
 *    end the buffer is cut to its length, so exactly len bytes stay reserved.
 *  - TLS is always verified (peer and host). All TLS connections of a client verify
 *    against ONE certificate store, built once in http_client_new by http_tls.c (the
 *    system bundle and CA directory this libcurl would use, plus api.ca_file): curl is
 *    told to load no CA itself (CURLOPT_CAINFO and CURLOPT_CAPATH NULL) and its
 *    CURLOPT_SSL_CTX_FUNCTION installs the shared store in each new connection's SSL_CTX
 *    before the handshake. Left to itself, curl parses the bundle again for every
 *    connection (~1.35 MiB each); why CURLOPT_CA_CACHE_TIMEOUT cannot share it, and why
 *    that file alone includes OpenSSL, is in http_tls.c's opening comment.
 *  - Proxies: curl's environment handling (http_proxy, https_proxy, no_proxy, ...) is
 *    left alone, except that a loopback endpoint gets CURLOPT_NOPROXY "*": never
 *    through a proxy.
 *  - Errors: http_classify (http_errno.c) is the single translation of CURLcode and
 *    HTTP status into errno and retryability.
 *
 * Locking: client.mu protects the slot count, the idle handle stack and the rate turn;
 * it is never held across a transfer (the waits for a slot or a turn release it). share_locks[i]
 * serialize curl's use of shared data i. in_flight is an atomic. The certificate store is read-only
 * once built (http_tls.c says why concurrent handshakes may share it).
 */
#include "insightfs/http.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "http_int.h"

_Static_assert(sizeof(((struct http_response *)0)->error) >= CURL_ERROR_SIZE,
               "error must hold CURL_ERROR_SIZE bytes");

#define BODY_FIRST_CAP (16u * 1024u)

struct http_client {
    char *endpoint; /* no trailing '/' */
    char *user_agent;
    bool loopback;
    struct http_tls *tls; /* https: the one certificate store; http: NULL */
    CURLSH *share;
    pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
    int share_locks_ready;
    int max_connections;
    int64_t spacing_ns; /* 0: no rate limit */

    pthread_mutex_t mu;
    pthread_cond_t slot_free;
    pthread_cond_t turn_wake; /* broadcast by http_client_wake: rate waits look again */
    int in_use;               /* protected by mu */
    struct conn **idle;       /* protected by mu: max_connections entries */
    int n_idle;               /* protected by mu */
    int64_t next_turn_ns;     /* protected by mu: earliest start of the next request */

    atomic_uint_fast64_t in_flight;
};

/* A pooled connection: an easy handle configured once, and the multi handle that drives
 * it and keeps its live connection between requests. */
struct conn {
    CURL *easy;
    CURLM *multi;
};

/* The low-speed window holds at most 5 s, so 5 bytes are the most it ever asks for: the
 * arrival times of the last 5 chunks tell when the last k <= 5 bytes came. */
#define PACE_CHUNKS 5

/* One transfer's receiving state (write and header callbacks). */
struct sink {
    CURL *h;
    const struct http_mem *mem;
    size_t max;
    unsigned char *buf;
    size_t len, cap;
    uint64_t received;
    unsigned flags;
    int64_t headers_end_ms;
    /* The last chunks of the answer (headers and body), newest at pace_head - 1:
     * CLOCK_MONOTONIC ms and bytes; pace_count of them are set. */
    int64_t pace_ms[PACE_CHUNKS];
    size_t pace_bytes[PACE_CHUNKS];
    unsigned pace_head, pace_count;
};

static void conn_free(struct conn *h);

/* ---- clocks ---- */

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t http_mono_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

static struct timespec mono_ts(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    return ts;
}

/* ---- global ---- */

int http_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -EIO;
}

void http_global_cleanup(void)
{
    curl_global_cleanup();
}

const char *http_curl_version(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v && v->version ? v->version : "?";
}

/* ---- escaping ---- */

char *http_escape(const char *s, size_t len)
{
    if (!s || len > INT_MAX)
        return NULL;
    if (len == 0) /* curl would take 0 as "use strlen" */
        return strdup("");
    char *esc = curl_easy_escape(NULL, s, (int)len);
    if (!esc)
        return NULL;
    char *out = strdup(esc);
    curl_free(esc);
    return out;
}

/* ---- client ---- */

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
    (void)h;
    (void)access;
    struct http_client *c = arg;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_lock(&c->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
    (void)h;
    struct http_client *c = arg;
    if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
        pthread_mutex_unlock(&c->share_locks[data]);
}

int http_set_err(char **err, int rc, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(err, fmt, ap) < 0)
            *err = NULL;
        va_end(ap);
    }
    return rc;
}

/* The store every TLS connection of c verifies against (http_tls.c): the system bundle
 * and CA directory this libcurl would load by default, plus ca_file. For an http://
 * endpoint nothing is kept (no TLS: loopback never goes through a proxy), but ca_file is
 * still checked, so a broken one is an error whatever the scheme. */
static int tls_setup(struct http_client *c, bool https, const char *ca_file, char **err)
{
    if (!https) {
        struct http_tls *t = NULL;
        int rc = ca_file ? http_tls_new(NULL, NULL, ca_file, &t, err) : 0;
        http_tls_free(t);
        return rc;
    }
    CURL *h = curl_easy_init();
    if (!h)
        return http_set_err(err, -ENOMEM, "out of memory");
    char *sys_file = NULL, *sys_dir = NULL; /* owned by h */
    if (curl_easy_getinfo(h, CURLINFO_CAINFO, &sys_file) != CURLE_OK)
        sys_file = NULL;
    if (curl_easy_getinfo(h, CURLINFO_CAPATH, &sys_dir) != CURLE_OK)
        sys_dir = NULL;
    int rc = http_tls_new(sys_file, sys_dir, ca_file, &c->tls, err);
    curl_easy_cleanup(h);
    return rc;
}

/* curl's CURLOPT_SSL_CTX_FUNCTION: a new TLS connection, before its handshake. */
static CURLcode on_ssl_ctx(CURL *h, void *ssl_ctx, void *arg)
{
    (void)h;
    http_tls_install(arg, ssl_ctx);
    return CURLE_OK;
}

static bool host_is_loopback(const char *host)
{
    char buf[64];
    size_t n = strlen(host);
    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, "localhost.") == 0)
        return true;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, host + 1, n - 2);
        buf[n - 2] = '\0';
        host = buf;
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

/* Check the endpoint's form and find out whether its host is loopback. */
static int parse_endpoint(const char *endpoint, bool *loopback, bool *https, char **err)
{
    int rc = -EINVAL;
    char *scheme = NULL, *host = NULL, *path = NULL, *query = NULL, *user = NULL;
    CURLU *u = curl_url();
    if (!u)
        return http_set_err(err, -ENOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        rc = http_set_err(err, -EINVAL, "api.endpoint: not a URL: %s", endpoint);
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        rc = http_set_err(err, -EINVAL, "api.endpoint: scheme must be https or http: %s", endpoint);
        goto out;
    }
    if ((curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && strcmp(path, "/") != 0) ||
        curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        rc = http_set_err(err, -EINVAL, "api.endpoint: must be scheme://host[:port]: %s", endpoint);
        goto out;
    }
    *loopback = host_is_loopback(host);
    *https = strcmp(scheme, "https") == 0;
    rc = 0;
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(path);
    curl_free(query);
    curl_free(user);
    curl_url_cleanup(u);
    return rc;
}

int http_client_new(const struct http_client_opts *opts, struct http_client **out, char **err)
{
    int rc;
    if (err)
        *err = NULL;
    *out = NULL;
    if (!opts || !opts->endpoint || opts->max_connections < 1 || opts->max_requests_per_second < 0)
        return http_set_err(err, -EINVAL, "http: bad client options");

    struct http_client *c = calloc(1, sizeof(*c));
    if (!c)
        return http_set_err(err, -ENOMEM, "out of memory");
    c->max_connections = opts->max_connections;
    if (opts->max_requests_per_second > 0)
        c->spacing_ns = 1000000000 / opts->max_requests_per_second;
    atomic_init(&c->in_flight, 0);

    bool https = false;
    rc = parse_endpoint(opts->endpoint, &c->loopback, &https, err);
    if (rc < 0)
        goto fail_free;
    c->endpoint = strdup(opts->endpoint);
    c->user_agent = opts->user_agent ? strdup(opts->user_agent) : NULL;
    c->idle = calloc((size_t)c->max_connections, sizeof(*c->idle));
    if (!c->endpoint || (opts->user_agent && !c->user_agent) || !c->idle) {
        rc = http_set_err(err, -ENOMEM, "out of memory");
        goto fail_free;
    }
    size_t n = strlen(c->endpoint);
    if (n > 0 && c->endpoint[n - 1] == '/')
        c->endpoint[n - 1] = '\0';
    rc = tls_setup(c, https, opts->ca_file, err);
    if (rc < 0)
        goto fail_free;

    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        rc = http_set_err(err, -ENOMEM, "out of memory");
        goto fail_free;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int crc = pthread_cond_init(&c->slot_free, &ca);
    if (crc == 0 && (crc = pthread_cond_init(&c->turn_wake, &ca)) != 0)
        pthread_cond_destroy(&c->slot_free);
    pthread_condattr_destroy(&ca);
    if (crc != 0) {
        rc = http_set_err(err, -ENOMEM, "out of memory");
        goto fail_free;
    }
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        pthread_cond_destroy(&c->slot_free);
        pthread_cond_destroy(&c->turn_wake);
        rc = http_set_err(err, -ENOMEM, "out of memory");
        goto fail_free;
    }
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&c->share_locks[i], NULL);
    c->share_locks_ready = 1;

    c->share = curl_share_init();
    if (!c->share || curl_share_setopt(c->share, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
        curl_share_setopt(c->share, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
        curl_share_setopt(c->share, CURLSHOPT_USERDATA, c) != CURLSHE_OK ||
        curl_share_setopt(c->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
        rc = http_set_err(err, -EIO, "http: cannot set up a libcurl share handle");
        goto fail_client;
    }
    *out = c;
    return 0;

fail_client:
    http_client_free(c);
    return rc;
fail_free:
    http_tls_free(c->tls);
    free(c->idle);
    free(c->user_agent);
    free(c->endpoint);
    free(c);
    return rc;
}

void http_client_free(struct http_client *c)
{
    if (!c)
        return;
    /* Handles first: they hold the share. */
    for (int i = 0; i < c->n_idle; i++)
        conn_free(c->idle[i]);
    if (c->share)
        curl_share_cleanup(c->share);
    if (c->share_locks_ready) {
        for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
            pthread_mutex_destroy(&c->share_locks[i]);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->slot_free);
        pthread_cond_destroy(&c->turn_wake);
    }
    http_tls_free(c->tls); /* connections closed above held their own references */
    free(c->idle);
    free(c->user_agent);
    free(c->endpoint);
    free(c);
}

struct http_tls *http_client_tls(const struct http_client *c)
{
    return c ? c->tls : NULL;
}

uint64_t http_client_in_flight(struct http_client *c)
{
    return c ? (uint64_t)atomic_load(&c->in_flight) : 0;
}

static bool called_off(const struct http_request *req)
{
    return req->cancel && atomic_load(req->cancel) != req->cancel_at;
}

/* Take a slot and a connection by the deadline. Returns 0 and *h (NULL: make one),
 * -ETIMEDOUT, or -ECANCELED when req was called off while it waited. */
static int slot_take(struct http_client *c, const struct http_request *req, struct conn **h)
{
    struct timespec until = mono_ts(req->deadline_ms);
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    while (c->in_use >= c->max_connections) {
        if (called_off(req)) {
            rc = -ECANCELED;
            goto out;
        }
        int w = pthread_cond_timedwait(&c->slot_free, &c->mu, &until);
        if (w == ETIMEDOUT && c->in_use >= c->max_connections) {
            rc = -ETIMEDOUT;
            goto out;
        }
    }
    c->in_use++;
    *h = c->n_idle > 0 ? c->idle[--c->n_idle] : NULL;
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Give the slot back, with its connection (NULL when it could not be made). */
static void slot_give(struct http_client *c, struct conn *h)
{
    if (h) {
        /* Nothing may point into the finished request's memory (the handle keeps the
         * rest of its settings, and its multi the live connection). */
        curl_easy_setopt(h->easy, CURLOPT_ERRORBUFFER, (char *)NULL);
        curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, (void *)NULL);
        curl_easy_setopt(h->easy, CURLOPT_HEADERDATA, (void *)NULL);
        curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    }
    pthread_mutex_lock(&c->mu);
    if (h)
        c->idle[c->n_idle++] = h; /* n_idle + in_use <= max_connections */
    c->in_use--;
    pthread_cond_signal(&c->slot_free);
    pthread_mutex_unlock(&c->mu);
}

/* Book the next request start under the rate limit. Returns 0 once the turn has come,
 * -ETIMEDOUT (nothing booked) when it would come after the deadline, or -ECANCELED when
 * req was called off while it waited. */
static int rate_wait(struct http_client *c, const struct http_request *req)
{
    if (c->spacing_ns == 0)
        return 0;
    int64_t now = clock_ns(CLOCK_MONOTONIC);
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    int64_t turn = c->next_turn_ns > now ? c->next_turn_ns : now;
    if (turn > req->deadline_ms * 1000000) {
        rc = -ETIMEDOUT;
        goto out;
    }
    c->next_turn_ns = turn + c->spacing_ns;
    struct timespec until = {.tv_sec = (time_t)(turn / 1000000000),
                             .tv_nsec = (long)(turn % 1000000000)};
    while (clock_ns(CLOCK_MONOTONIC) < turn) {
        if (called_off(req)) {
            rc = -ECANCELED;
            goto out;
        }
        pthread_cond_timedwait(&c->turn_wake, &c->mu, &until);
    }
out:
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void http_client_wake(struct http_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->slot_free);
    pthread_cond_broadcast(&c->turn_wake);
    pthread_mutex_unlock(&c->mu);
}

/* ---- one transfer ---- */

static void pace_note(struct sink *s, size_t n)
{
    if (n == 0)
        return;
    s->pace_ms[s->pace_head] = clock_ms(CLOCK_MONOTONIC);
    s->pace_bytes[s->pace_head] = n;
    s->pace_head = (s->pace_head + 1) % PACE_CHUNKS;
    if (s->pace_count < PACE_CHUNKS)
        s->pace_count++;
}

/* When the answer falls under 1 byte/s over window_ms: once some bytes came, the time by
 * which the next ones must come (the window counted from when the last k = window_ms /
 * 1000 bytes, rounded up, had come, or from the first byte when fewer came); INT64_MAX
 * before any byte, where libcurl's own low-speed limit applies (it averages over about
 * 6 s, so after a burst it would notice a stall only some 11 s later). */
static int64_t pace_limit(const struct sink *s, int window_ms)
{
    if (s->pace_count == 0)
        return INT64_MAX;
    size_t k = (size_t)(window_ms + 999) / 1000, got = 0;
    unsigned i = 0, at = s->pace_head;
    int64_t since = 0;
    while (i < s->pace_count && got < k) {
        at = (at + PACE_CHUNKS - 1) % PACE_CHUNKS;
        got += s->pace_bytes[at];
        since = s->pace_ms[at];
        i++;
    }
    return since + window_ms;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    pace_note(s, n);
    s->received += n;
    if (n > s->max - s->len) {
        s->flags |= HTTP_F_OVERSIZE;
        return 0;
    }
    if (n > s->cap - s->len) {
        size_t want = s->cap ? s->cap * 2 : BODY_FIRST_CAP;
        if (s->cap == 0) {
            curl_off_t cl = -1;
            if (curl_easy_getinfo(s->h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
                cl > 0 && (uint64_t)cl <= s->max)
                want = (size_t)cl;
        }
        if (want < s->len + n)
            want = s->len + n;
        if (want > s->max)
            want = s->max;
        size_t grow = want - s->cap;
        if (s->mem && s->mem->reserve && s->mem->reserve(s->mem->arg, grow) < 0) {
            s->flags |= HTTP_F_NOROOM;
            return 0;
        }
        unsigned char *nb = realloc(s->buf, want);
        if (!nb) {
            if (s->mem && s->mem->release)
                s->mem->release(s->mem->arg, grow);
            s->flags |= HTTP_F_NOMEM;
            return 0;
        }
        s->buf = nb;
        s->cap = want;
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    return n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    pace_note(s, n);
    /* The blank line that ends a header block: the answer's time, for the Date skew. */
    if ((n == 2 && ptr[0] == '\r' && ptr[1] == '\n') || (n == 1 && ptr[0] == '\n'))
        s->headers_end_ms = clock_ms(CLOCK_REALTIME);
    return n;
}

static void release_bytes(const struct http_mem *mem, size_t n)
{
    if (mem && mem->release && n > 0)
        mem->release(mem->arg, n);
}

/* Keep exactly len bytes of the body (and of its reservation), or none of them. */
static void sink_finish(struct sink *s, struct http_response *resp, bool keep)
{
    if (!keep || s->len == 0) {
        free(s->buf);
        release_bytes(s->mem, s->cap);
        s->buf = NULL;
        s->len = s->cap = 0;
    } else if (s->cap > s->len) {
        unsigned char *nb = realloc(s->buf, s->len);
        if (nb)
            s->buf = nb;
        /* Reservation follows the length even if the shrink failed: the slack is tiny
         * relative to the cap and freed with the body. */
        release_bytes(s->mem, s->cap - s->len);
        s->cap = s->len;
    }
    resp->body = s->buf;
    resp->len = s->len;
    s->buf = NULL;
}

static void read_headers(CURL *h, struct http_response *resp)
{
    struct curl_header *hd = NULL;
    if (curl_easy_header(h, "Date", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK && hd->value) {
        time_t t = curl_getdate(hd->value, NULL);
        if (t > 0 && (int64_t)t < INT64_MAX / 1000 / 2) {
            resp->has_date = true;
            resp->date_ms = (int64_t)t * 1000;
        }
    }
    hd = NULL;
    if (curl_easy_header(h, "Retry-After", 0, CURLH_HEADER, -1, &hd) == CURLHE_OK && hd->value) {
        int64_t ref = resp->has_date ? resp->date_ms : clock_ms(CLOCK_REALTIME);
        int64_t d;
        if (http_parse_retry_after(hd->value, ref, &d) == 0)
            resp->retry_after_ms = d;
    }
}

/* Our words for failures curl would describe poorly (or not at all). */
static void describe(struct http_response *resp, const struct http_request *req)
{
    unsigned f = resp->flags;
    char *e = resp->error;
    size_t n = sizeof(resp->error);
    if (f & HTTP_F_OVERSIZE || resp->curl_code == CURLE_FILESIZE_EXCEEDED)
        snprintf(e, n, "body over the limit of %zu bytes", req->max_body);
    else if (f & HTTP_F_NOROOM)
        snprintf(e, n, "no memory left in the cache for the body");
    else if (f & HTTP_F_NOMEM)
        snprintf(e, n, "out of memory");
    else if (f & HTTP_F_TRUNCATED && !e[0])
        snprintf(e, n, "body cut off: %" PRIu64 " of %" PRId64 " bytes", resp->received,
                 resp->content_length);
    else if (!e[0] && resp->curl_code != CURLE_OK)
        snprintf(e, n, "%s", curl_easy_strerror((CURLcode)resp->curl_code));
}

#define SETOPT(h, opt, val)                                                                        \
    do {                                                                                           \
        if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK) {                                     \
            failed_opt = #opt;                                                                     \
            goto setup_failed;                                                                     \
        }                                                                                          \
    } while (0)

static void conn_free(struct conn *h)
{
    if (!h)
        return;
    curl_multi_cleanup(h->multi); /* closes the live connection (the easy is not in it) */
    curl_easy_cleanup(h->easy);
    free(h);
}

/* A new connection with the settings every request of c shares, or NULL with
 * *failed naming the option libcurl refused (NULL: out of memory). */
static struct conn *conn_new(struct http_client *c, const char **failed)
{
    const char *failed_opt = NULL; /* set by SETOPT */
    struct conn *h = calloc(1, sizeof(*h));
    if (!h || !(h->easy = curl_easy_init()) || !(h->multi = curl_multi_init()))
        goto fail;
    CURL *e = h->easy;
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_HTTPGET, 1L);
    SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(e, CURLOPT_MAXREDIRS, 0L);
    SETOPT(e, CURLOPT_PATH_AS_IS, 1L);
    SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (c->tls) {
        /* curl loads no CA itself; each new connection gets the client's one store. */
        SETOPT(e, CURLOPT_CAINFO, (char *)NULL);
        SETOPT(e, CURLOPT_CAPATH, (char *)NULL);
        SETOPT(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        SETOPT(e, CURLOPT_SSL_CTX_DATA, c->tls);
    }
    if (c->loopback)
        SETOPT(e, CURLOPT_NOPROXY, "*");
    SETOPT(e, CURLOPT_SHARE, c->share);
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SETOPT(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_body);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
    if (c->user_agent)
        SETOPT(e, CURLOPT_USERAGENT, c->user_agent);
    *failed = NULL;
    return h;
setup_failed:
fail:
    *failed = failed_opt;
    conn_free(h);
    return NULL;
}

/* Run one transfer on h to its end: perform, then wait for its sockets (curl_multi_wait
 * shortens the wait to curl's own timers, so its timeouts hold), until it is done or the
 * answer falls under 1 byte/s over window_ms (pace_limit; the transfer is then stopped,
 * which closes its connection, and reported as libcurl reports its own low-speed abort,
 * CURLE_OPERATION_TIMEDOUT, with *too_slow set). Returns the transfer's CURLcode, or -1
 * when the multi interface itself failed. */
static int transfer(struct conn *h, const struct sink *s, int window_ms, bool *too_slow)
{
    *too_slow = false;
    if (curl_multi_add_handle(h->multi, h->easy) != CURLM_OK)
        return -1;
    int running = 1, code = -1;
    for (;;) {
        if (curl_multi_perform(h->multi, &running) != CURLM_OK)
            break;
        if (!running) {
            int left = 0;
            CURLMsg *m;
            while ((m = curl_multi_info_read(h->multi, &left)) != NULL)
                if (m->msg == CURLMSG_DONE && m->easy_handle == h->easy)
                    code = (int)m->data.result;
            break;
        }
        int64_t wait = 1000, until = pace_limit(s, window_ms);
        if (until != INT64_MAX) {
            int64_t left = until - clock_ms(CLOCK_MONOTONIC);
            if (left <= 0) {
                *too_slow = true;
                code = (int)CURLE_OPERATION_TIMEDOUT;
                break;
            }
            if (left < wait)
                wait = left;
        }
        if (curl_multi_wait(h->multi, NULL, 0, (int)wait, NULL) != CURLM_OK)
            break;
    }
    curl_multi_remove_handle(h->multi, h->easy);
    return code;
}

int http_get(struct http_client *c, const struct http_request *req, struct http_response *resp)
{
    struct conn *h = NULL;
    struct curl_slist *hdrs = NULL;
    char *url = NULL;
    const char *failed_opt = NULL;
    struct sink s = {.mem = req->mem, .max = req->max_body};

    memset(resp, 0, sizeof(*resp));
    resp->content_length = -1;
    resp->retry_after_ms = -1;

    int wrc = slot_take(c, req, &h);
    if (wrc < 0) {
        resp->flags |= HTTP_F_NOT_SENT;
        snprintf(resp->error, sizeof(resp->error), "%s",
                 wrc == -ECANCELED
                     ? "called off before sending"
                     : "no free connection slot (api.max_connections) before the deadline");
        goto classify;
    }
    if (!h && !(h = conn_new(c, &failed_opt))) {
        slot_give(c, NULL);
        if (failed_opt) {
            resp->flags |= HTTP_F_SETUP;
            snprintf(resp->error, sizeof(resp->error), "libcurl refused %s", failed_opt);
        } else {
            resp->flags |= HTTP_F_NOMEM;
            snprintf(resp->error, sizeof(resp->error), "out of memory");
        }
        goto classify;
    }
    wrc = rate_wait(c, req);
    if (wrc < 0 || called_off(req)) {
        resp->flags |= HTTP_F_NOT_SENT;
        snprintf(resp->error, sizeof(resp->error), "%s",
                 wrc == -ETIMEDOUT ? "no turn under api.max_requests_per_second before the deadline"
                                   : "called off before sending");
        goto release;
    }
    int64_t left = req->deadline_ms - http_mono_ms();
    if (left <= 0) {
        resp->flags |= HTTP_F_NOT_SENT;
        snprintf(resp->error, sizeof(resp->error), "deadline reached before sending");
        goto release;
    }
    long total = req->timeout_ms < left ? req->timeout_ms : (long)left;
    long conn = req->connect_timeout_ms < left ? req->connect_timeout_ms : (long)left;
    if (total < 1)
        total = 1; /* 0 would mean "no timeout" */
    if (conn < 1)
        conn = 1;
    int low_window_ms = req->timeout_ms < 5000 ? req->timeout_ms : 5000;
    long low_speed_s = (low_window_ms + 999) / 1000;
    if (low_speed_s < 1)
        low_speed_s = 1;

    if (asprintf(&url, "%s%s", c->endpoint, req->target) < 0) {
        url = NULL;
        resp->flags |= HTTP_F_NOMEM;
        goto release;
    }
    for (const char *const *p = req->headers; p && *p; p++) {
        struct curl_slist *n = curl_slist_append(hdrs, *p);
        if (!n) {
            resp->flags |= HTTP_F_NOMEM;
            goto release;
        }
        hdrs = n;
    }
    s.h = h->easy;

    CURL *e = h->easy;
    SETOPT(e, CURLOPT_URL, url);
    SETOPT(e, CURLOPT_HTTPHEADER, hdrs);
    SETOPT(e, CURLOPT_ERRORBUFFER, resp->error);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, conn);
    SETOPT(e, CURLOPT_TIMEOUT_MS, total);
    SETOPT(e, CURLOPT_LOW_SPEED_TIME, low_speed_s);
    SETOPT(e, CURLOPT_MAXFILESIZE_LARGE,
           (curl_off_t)(req->max_body > INT64_MAX ? INT64_MAX : req->max_body));
    SETOPT(e, CURLOPT_WRITEDATA, &s);
    SETOPT(e, CURLOPT_HEADERDATA, &s);

    resp->error[0] = '\0';
    resp->sent = true;
    atomic_fetch_add(&c->in_flight, 1);
    bool too_slow;
    int code = transfer(h, &s, low_window_ms, &too_slow);
    atomic_fetch_sub(&c->in_flight, 1);
    if (too_slow)
        snprintf(resp->error, sizeof(resp->error),
                 "Operation too slow. Less than 1 bytes/sec transferred the last %d ms",
                 low_window_ms);
    if (code < 0) {
        /* The multi interface failed (out of memory): say so as curl would. */
        code = (int)CURLE_OUT_OF_MEMORY;
        if (!resp->error[0])
            snprintf(resp->error, sizeof(resp->error), "libcurl could not run the transfer");
    }
    resp->curl_code = code;

    /* Always read the status: CURLE_OK with a 500 is a failure. */
    if (curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &resp->status) != CURLE_OK)
        resp->status = 0;
    curl_off_t cl = -1;
    if (curl_easy_getinfo(e, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK && cl >= 0)
        resp->content_length = (int64_t)cl;
    read_headers(e, resp);
    resp->date_local_ms = s.headers_end_ms;
    if (resp->content_length >= 0 && s.received < (uint64_t)resp->content_length)
        s.flags |= HTTP_F_TRUNCATED;
    resp->flags |= s.flags;
    goto release;

setup_failed:
    resp->flags |= HTTP_F_SETUP;
    snprintf(resp->error, sizeof(resp->error), "libcurl refused %s", failed_opt);
release:
    slot_give(c, h);
classify:
    resp->received = s.received;
    sink_finish(&s, resp, !(resp->flags & (HTTP_F_OVERSIZE | HTTP_F_NOROOM | HTTP_F_NOMEM)));
    if (resp->flags & HTTP_F_NOMEM && !resp->error[0])
        snprintf(resp->error, sizeof(resp->error), "out of memory");
    describe(resp, req);
    http_classify(resp->curl_code, resp->status, resp->flags, &resp->verdict);
    curl_slist_free_all(hdrs);
    free(url);
    return resp->verdict.err;
}

void http_response_cleanup(struct http_response *resp, const struct http_mem *mem)
{
    if (!resp)
        return;
    free(resp->body);
    release_bytes(mem, resp->len);
    resp->body = NULL;
    resp->len = 0;
}
