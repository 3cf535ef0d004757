/* shared - a fleet's second cache level in Redis (SPEC 13): key names, values, the read
 * path (value, failure or lease in one script; polling while another mount holds the
 * lease), the holder's store-release-publish, and the fleet pacer. Connections, the
 * up/down state, the scripts' text and the keeper thread are shared_conn.c's.
 *
 * Key names hash the cache key (SPEC 7) with SHA-256 (sign_sha256_hex), so no name holds
 * an access key, an id or a range. Values are checked on the way back in as an API body
 * is (header, exact length, valid PNG); an invalid one is deleted, logged (one warn line
 * per value), counted, and asked for anew. A value's expiry is its PX, set by the mount
 * that stored it; a hit's freshness is its PTTL, so no wall clock decides expiry.
 *
 * The read path never fails a reader: any Redis trouble answers SHARED_OFF and the
 * caller fetches alone. Waiting for another mount's lease polls every 15 ms and never
 * goes past the caller's deadline D.
 *
 * Failures are stored as their errno name ("ENOENT"); only the names below are read
 * back, anything else is an invalid value.
 *
 * Locking: none here beyond shared_conn.c's (counters are atomics); a connection is used
 * by the one thread that took it.
 */
#include "shared_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "insightfs/log.h"
#include "insightfs/sign.h"

#define KEY_PREFIX "insightfs:1:"
#define POLL_MS 15

/* ---- names ---- */

int shared_key_hash(const char *endpoint, const char *access_key, const struct cache_key *k,
                    char out[SHARED_HASH_LEN + 1])
{
    char *buf = NULL;
    int n = asprintf(&buf, "%s%c%s%c%s%c%s%c%" PRId64 "%c%" PRId64 "%c%s", endpoint, 0, access_key,
                     0, k->dash_id, 0, k->widget_id, 0, k->start_ms, 0, k->end_ms, 0,
                     k->res == VPATH_RES_HIGH ? "HIGH" : "AUTO");
    int rc;

    out[0] = '\0';
    if (n < 0)
        return -ENOMEM;
    rc = sign_sha256_hex(buf, (size_t)n, out);
    OPENSSL_cleanse(buf, (size_t)n); /* it held the access key */
    free(buf);
    return rc;
}

int shared_account_hash(const char *endpoint, const char *access_key, char out[SHARED_HASH_LEN + 1])
{
    char *buf = NULL;
    int n = asprintf(&buf, "%s%c%s", endpoint, 0, access_key);
    int rc;

    out[0] = '\0';
    if (n < 0)
        return -ENOMEM;
    rc = sign_sha256_hex(buf, (size_t)n, out);
    OPENSSL_cleanse(buf, (size_t)n);
    free(buf);
    return rc;
}

/* ---- values ---- */

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)(v & 0xff);
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

void shared_header_encode(unsigned char out[SHARED_HDR_LEN], int64_t fetched_at, int final,
                          uint64_t png_len)
{
    memset(out, 0, SHARED_HDR_LEN);
    memcpy(out, "IFS1", 4);
    put_be64(out + 4, (uint64_t)fetched_at);
    out[12] = final ? 1 : 0;
    put_be64(out + 16, png_len);
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int shared_value_check(const unsigned char *value, size_t len, size_t max_png, int64_t *fetched_at,
                       int *final, size_t *png_len, const char **why)
{
    uint64_t n = 0;

    *why = NULL;
    if (len < SHARED_HDR_LEN)
        *why = "shorter than its header";
    else if (memcmp(value, "IFS1", 4) != 0)
        *why = "wrong magic";
    else if (value[12] > 1)
        *why = "bad final flag";
    else if (!all_zero(value + 13, 3) || !all_zero(value + 24, 8))
        *why = "reserved header bytes not zero";
    else if ((n = get_be64(value + 16)) != len - SHARED_HDR_LEN)
        *why = "wrong length";
    else if (n > max_png)
        *why = "larger than api.max_image_bytes";
    else if (!api_png_valid(value + SHARED_HDR_LEN, (size_t)n))
        *why = "not a valid PNG";
    if (*why)
        return -EINVAL;
    *fetched_at = (int64_t)get_be64(value + 4);
    *final = value[12];
    *png_len = (size_t)n;
    return 0;
}

/* The failures a mount stores and reads back. */
static const struct {
    const char *name;
    int err;
} err_names[] = {
    {"ENOENT", ENOENT}, {"EACCES", EACCES},       {"EINVAL", EINVAL},
    {"EAGAIN", EAGAIN}, {"ETIMEDOUT", ETIMEDOUT}, {"EIO", EIO},
};

static const char *err_name(int err)
{
    for (size_t i = 0; i < sizeof(err_names) / sizeof(err_names[0]); i++)
        if (err_names[i].err == err)
            return err_names[i].name;
    return NULL;
}

static int err_parse(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof(err_names) / sizeof(err_names[0]); i++)
        if (strlen(err_names[i].name) == len && memcmp(err_names[i].name, s, len) == 0)
            return err_names[i].err;
    return 0;
}

/* ---- the instance ---- */

struct shared *shared_new(const struct cfg *cfg, char **err)
{
    const struct cfg_shared *sh = &cfg->shared;
    struct shared *s = calloc(1, sizeof(*s));
    char a[SHARED_HASH_LEN + 1], host[48] = "";

    if (err)
        *err = NULL;
    if (!s)
        goto nomem;
    if (shared_conn_init(s) != 0) {
        free(s);
        s = NULL;
        goto nomem;
    }
    s->redis = strdup(sh->redis);
    s->host = sh->host ? strdup(sh->host) : NULL;
    s->socket = sh->socket ? strdup(sh->socket) : NULL;
    s->password = sh->password ? sign_secret_dup(sh->password) : NULL;
    if (!s->redis || (sh->host && !s->host) || (sh->socket && !s->socket) ||
        (sh->password && !s->password))
        goto nomem;
    s->port = sh->port;
    s->db = sh->db;
    s->timeout_ms = sh->timeout_ms;
    s->final_ttl_s = sh->final_ttl_s;
    s->fleet_rps = sh->fleet_requests_per_second;
    if (shared_account_hash(cfg->endpoint, cfg->access_key, a) != 0)
        goto nomem;
    snprintf(s->rate_key, sizeof(s->rate_key), KEY_PREFIX "rate:%s", a);
    if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == ' ')
            *p = '_';
    snprintf(s->holder, sizeof(s->holder), "%s %ld", host, (long)getpid());
    if (s->host && !cfg_host_is_loopback(s->host))
        log_warn("shared.redis is not encrypted: use a unix socket or a private network");
    return s;
nomem:
    shared_free(s);
    if (err)
        *err = strdup("shared: out of memory");
    return NULL;
}

void shared_free(struct shared *s)
{
    if (!s)
        return;
    shared_conn_cleanup(s);
    free(s->redis);
    free(s->host);
    free(s->socket);
    sign_secret_free(s->password);
    free(s);
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int shared_same(const struct shared *s, const struct cfg *cfg)
{
    const struct cfg_shared *sh = &cfg->shared;
    char a[SHARED_HASH_LEN + 1], key[96];
    if (!sh->redis || shared_account_hash(cfg->endpoint, cfg->access_key, a) != 0)
        return 0;
    snprintf(key, sizeof(key), KEY_PREFIX "rate:%s", a);
    return same_str(s->redis, sh->redis) && same_str(s->password, sh->password) &&
           s->timeout_ms == sh->timeout_ms && s->final_ttl_s == sh->final_ttl_s &&
           s->fleet_rps == sh->fleet_requests_per_second && strcmp(key, s->rate_key) == 0;
}

void shared_get_stats(struct shared *s, struct shared_stats *out)
{
    out->up = (uint64_t)atomic_load(&s->up);
    out->hits = atomic_load(&s->hits);
    out->misses = atomic_load(&s->misses);
    out->errors = atomic_load(&s->errors);
    out->leases_won = atomic_load(&s->leases_won);
    out->leases_waited = atomic_load(&s->leases_waited);
    out->invalid = atomic_load(&s->invalid);
}

/* ---- the read path ---- */

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static struct shared_lease *lease_new(struct shared *s, const char *hash)
{
    struct shared_lease *l = calloc(1, sizeof(*l));
    unsigned char rnd[16];
    char tok[33];

    if (!l)
        return NULL;
    if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)(uintptr_t)l;
        memcpy(rnd, &x, 8);
        memcpy(rnd + 8, &x, 8);
    }
    for (int i = 0; i < 16; i++)
        snprintf(tok + 2 * i, 3, "%02x", rnd[i]);
    snprintf(l->key, sizeof(l->key), KEY_PREFIX "lease:%s", hash);
    snprintf(l->value, sizeof(l->value), "%s %s", s->holder, tok);
    return l;
}

/* Delete an invalid value (or failure) at key; 0, or -EIO when Redis failed. */
static int delete_key(struct shared *s, struct shared_conn *c, const char *key)
{
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, strlen(key)};
    redisReply *r = shared_cmd(s, c, 2, argv, lens);
    if (!r)
        return -EIO;
    freeReplyObject(r);
    return 0;
}

/* A value found: check it, copy the PNG out (reserved through mem). Returns 1 (found
 * filled), 0 (invalid: deleted, ask again), or -1 (give up: SHARED_OFF; *conn_ok says
 * whether the connection is still good). */
static int take_value(struct shared *s, struct shared_conn *c, const char *key, const redisReply *v,
                      long long pttl, size_t max_png, const struct http_mem *mem,
                      struct shared_found *found, int *conn_ok)
{
    const char *why = NULL;
    int64_t fetched_at = 0;
    int final = 0;
    size_t n = 0;

    *conn_ok = 1;
    if (v->type != REDIS_REPLY_STRING ||
        shared_value_check((const unsigned char *)v->str, v->len, max_png, &fetched_at, &final, &n,
                           &why) != 0) {
        atomic_fetch_add(&s->invalid, 1);
        log_warn("shared cache: invalid value %s deleted: %s", key, why ? why : "not a string");
        if (delete_key(s, c, key) != 0) {
            *conn_ok = 0;
            return -1;
        }
        return 0;
    }
    if (mem && mem->reserve(mem->arg, n) != 0)
        return -1; /* no room: go on as if the level were not there */
    found->png = malloc(n ? n : 1);
    if (!found->png) {
        if (mem)
            mem->release(mem->arg, n);
        return -1;
    }
    memcpy(found->png, v->str + SHARED_HDR_LEN, n);
    found->png_len = n;
    found->fetched_at = fetched_at;
    found->final = final;
    found->fresh_for_ms = pttl;
    return 1;
}

enum shared_answer shared_get(struct shared *s, const char *hash, int64_t deadline_mono,
                              size_t max_png, const struct http_mem *mem,
                              struct shared_found *found)
{
    char img[96], err[96], ms[16];
    struct shared_lease *l;
    struct shared_conn *c;
    enum shared_answer ans = SHARED_OFF;
    int first = 1, ok = 1;

    memset(found, 0, sizeof(*found));
    if (shared_start(s) != 0) {
        /* No keeper: leases would not be renewed; still usable (they expire). */
    }
    if (!atomic_load(&s->up))
        return SHARED_OFF;
    l = lease_new(s, hash);
    if (!l)
        return SHARED_OFF;
    c = shared_conn_take(s);
    snprintf(img, sizeof(img), KEY_PREFIX "img:%s", hash);
    snprintf(err, sizeof(err), KEY_PREFIX "err:%s", hash);
    snprintf(ms, sizeof(ms), "%d", SHARED_LEASE_MS);
    while (c && shared_mono_ms() < deadline_mono) {
        const char *argv[] = {img, err, l->key, l->value, ms};
        size_t lens[] = {strlen(img), strlen(err), strlen(l->key), strlen(l->value), strlen(ms)};
        redisReply *r = shared_eval(s, c, SHARED_S_GET, 3, 5, argv, lens);
        long long kind = 0;
        int got = -1;

        if (!r) {
            ok = 0;
            break;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
            r->element[0]->type == REDIS_REPLY_INTEGER)
            kind = r->element[0]->integer;
        if (kind == 1 && r->elements == 3 && r->element[2]->type == REDIS_REPLY_INTEGER) {
            got = take_value(s, c, img, r->element[1], r->element[2]->integer, max_png, mem, found,
                             &ok);
            if (got == 1) {
                ans = SHARED_VALUE;
                if (first)
                    atomic_fetch_add(&s->hits, 1);
            }
        } else if (kind == 2 && r->elements == 3 && r->element[1]->type == REDIS_REPLY_STRING) {
            int e = err_parse(r->element[1]->str, r->element[1]->len);
            if (e) {
                found->err = e;
                ans = SHARED_FAILED;
                got = 1;
                if (first)
                    atomic_fetch_add(&s->hits, 1);
            } else {
                atomic_fetch_add(&s->invalid, 1);
                log_warn("shared cache: invalid failure %s deleted", err);
                got = delete_key(s, c, err) == 0 ? 0 : -1;
                ok = got == 0;
            }
        } else if (kind == 3) {
            if (first)
                atomic_fetch_add(&s->misses, 1);
            atomic_fetch_add(&s->leases_won, 1);
            shared_lease_hold(s, l);
            found->lease = l;
            l = NULL;
            ans = SHARED_LEASE;
            got = 1;
        } else if (kind == 4) {
            if (first) {
                atomic_fetch_add(&s->misses, 1);
                atomic_fetch_add(&s->leases_waited, 1);
            }
            first = 0;
            freeReplyObject(r);
            int64_t left = deadline_mono - shared_mono_ms();
            sleep_ms(left < POLL_MS ? left : POLL_MS);
            continue;
        } else {
            shared_mark_down(s, "unexpected answer to the lookup script");
            ok = 0;
        }
        freeReplyObject(r);
        if (got != 0)
            break;
        /* An invalid value was deleted: ask again at once (not a second miss). */
    }
    shared_conn_put(s, c, ok);
    free(l);
    return ans;
}

void shared_finish(struct shared *s, const char *hash, struct shared_lease *lease,
                   const unsigned char *png, size_t len, int64_t fetched_at, int final, int err,
                   int64_t ttl_ms)
{
    char img[96], errk[96], done[96], ms[24];
    unsigned char *value = NULL;
    const char *mode = "n", *payload = "";
    size_t plen = 0;

    if (!lease)
        return;
    shared_lease_drop(s, lease);
    if (png && ttl_ms > 0) {
        value = malloc(SHARED_HDR_LEN + len);
        if (value) {
            shared_header_encode(value, fetched_at, final, len);
            memcpy(value + SHARED_HDR_LEN, png, len);
            mode = "v";
            payload = (const char *)value;
            plen = SHARED_HDR_LEN + len;
        }
    } else if (!png && err && ttl_ms > 0 && err_name(err)) {
        mode = "e";
        payload = err_name(err);
        plen = strlen(payload);
    }
    if (mode[0] == 'n')
        ttl_ms = 0;
    snprintf(img, sizeof(img), KEY_PREFIX "img:%s", hash);
    snprintf(errk, sizeof(errk), KEY_PREFIX "err:%s", hash);
    snprintf(done, sizeof(done), KEY_PREFIX "done:%s", hash);
    snprintf(ms, sizeof(ms), "%" PRId64, ttl_ms);
    struct shared_conn *c = shared_conn_take(s);
    if (c) {
        const char *argv[] = {img, errk, lease->key, mode, payload, ms, lease->value, done};
        size_t lens[] = {strlen(img), strlen(errk), strlen(lease->key),   1,
                         plen,        strlen(ms),   strlen(lease->value), strlen(done)};
        redisReply *r = shared_eval(s, c, SHARED_S_FINISH, 3, 8, argv, lens);
        if (r)
            freeReplyObject(r);
        shared_conn_put(s, c, r != NULL);
    }
    /* Down: the lease ends by itself within SHARED_LEASE_MS; the others then fetch. */
    free(value);
    free(lease);
}

/* ---- the fleet pacer ---- */

static int book_turn(void *arg, int64_t deadline_mono_ms, int64_t *wait_ns)
{
    struct shared *s = arg;
    int64_t now = shared_mono_ms();
    char spacing[24], maxw[24];
    int rc = 0;

    *wait_ns = 0;
    if (now >= deadline_mono_ms)
        return -ETIMEDOUT;
    if (!atomic_load(&s->up))
        return 0; /* Redis down: local limits only */
    struct shared_conn *c = shared_conn_take(s);
    if (!c)
        return 0;
    snprintf(spacing, sizeof(spacing), "%lld", (long long)(1000000 / s->fleet_rps));
    snprintf(maxw, sizeof(maxw), "%" PRId64, (deadline_mono_ms - now) * 1000);
    const char *argv[] = {s->rate_key, spacing, maxw};
    size_t lens[] = {strlen(s->rate_key), strlen(spacing), strlen(maxw)};
    redisReply *r = shared_eval(s, c, SHARED_S_RATE, 1, 3, argv, lens);
    shared_conn_put(s, c, r != NULL);
    if (!r)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER && r->integer < 0)
        rc = -ETIMEDOUT;
    else if (r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        *wait_ns = (int64_t)r->integer * 1000; /* whole microseconds: never early */
    freeReplyObject(r);
    return rc;
}

struct api_pacer shared_pacer(struct shared *s)
{
    struct api_pacer p = {NULL, NULL};
    if (s->fleet_rps > 0) {
        p.book_turn = book_turn;
        p.arg = s;
    }
    return p;
}
