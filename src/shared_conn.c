/* shared_conn - the shared cache's connections to Redis, its up/down state, the Lua
 * scripts, and its keeper thread (lease renewal and reconnection).
 *
 * Connections: a hiredis context is not thread-safe, so each is used by one thread at a
 * time: taken from a small pool (or opened: redisConnectWithTimeout, then
 * redisSetTimeout(timeout_ms), AUTH, SELECT, SCRIPT LOAD of every script) and given back
 * after use. One whose command failed or timed out is discarded, never reused.
 *
 * Up and down: any failure (a connection refused, a command past timeout_ms, an error
 * reply) marks the instance down: one warn line `shared cache unavailable: REASON`, the
 * pool is emptied, and callers go on alone at once (shared_conn_take gives NULL without
 * touching the network). The keeper tries Redis again (connect, AUTH, PING) after 1 s,
 * doubling to 30 s while it fails; success logs `shared cache back` at info. The
 * instance starts presumed up, so the first reads of a new mount ask Redis.
 *
 * Scripts (Lua, run atomically by Redis; the keys are hashed names, no secrets):
 *  GET     KEYS img, err, lease; ARGV lease value, lease ms. The value with its PTTL
 *          ({1, value, pttl}), else the failure ({2, errno name, pttl}), else takes the
 *          lease with SET NX PX ({3}), else {4, the lease's pttl}. One round trip, so no
 *          mount can take the lease just after another stored the value.
 *  FINISH  KEYS img, err, lease; ARGV mode (v value, e failure, n none), payload, ms,
 *          lease value, channel. Stores the value (and drops a stale failure) or the
 *          failure with PX ms when ms > 0, deletes the lease only if it is still ours
 *          (compare-and-DEL), publishes the mode on the done channel.
 *  RENEW   KEYS lease; ARGV lease value, ms: compare-and-PEXPIRE.
 *  RATE    KEYS rate; ARGV spacing us, longest wait us. GCRA on Redis TIME with burst 1:
 *          the theoretical arrival time (TAT) lives in the rate key; a try may go at
 *          max(TAT, now) and moves TAT one spacing on. Returns the wait in us, or -1 (no
 *          slot taken) when it would exceed the longest wait.
 *
 * Locking: mu guards the pool, the down state, the lease list and the keeper's flags;
 * it is never held across a Redis command or a log line. `up` and the counters are
 * atomics.
 */
#include "shared_int.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "insightfs/log.h"

static const char *const scripts[SHARED_NS] = {
    /* SHARED_S_GET */
    "local v = redis.call('GET', KEYS[1])\n"
    "if v then return {1, v, redis.call('PTTL', KEYS[1])} end\n"
    "local e = redis.call('GET', KEYS[2])\n"
    "if e then return {2, e, redis.call('PTTL', KEYS[2])} end\n"
    "if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {3} end\n"
    "return {4, redis.call('PTTL', KEYS[3])}\n",
    /* SHARED_S_FINISH */
    "local ms = tonumber(ARGV[3])\n"
    "if ARGV[1] == 'v' and ms > 0 then\n"
    "  redis.call('SET', KEYS[1], ARGV[2], 'PX', ms)\n"
    "  redis.call('DEL', KEYS[2])\n"
    "elseif ARGV[1] == 'e' and ms > 0 then\n"
    "  redis.call('SET', KEYS[2], ARGV[2], 'PX', ms)\n"
    "end\n"
    "if redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end\n"
    "redis.call('PUBLISH', ARGV[5], ARGV[1])\n"
    "return 1\n",
    /* SHARED_S_RENEW */
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n",
    /* SHARED_S_RATE */
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
    "if tat < now then tat = now end\n"
    "local wait = tat - now\n"
    "if wait > tonumber(ARGV[2]) then return -1 end\n"
    "local nxt = tat + tonumber(ARGV[1])\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX',\n"
    "           math.floor((nxt - now) / 1000) + 1000)\n"
    "return wait\n",
};

int64_t shared_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- opening ---- */

/* A reply that is an error, or none: its text (static or in c / r) for a log line. */
static const char *reply_error(redisContext *c, redisReply *r)
{
    if (!r && c->err == REDIS_ERR_IO && strstr(c->errstr, "temporarily unavailable"))
        return "timed out (shared.timeout_ms)"; /* SO_RCVTIMEO / SO_SNDTIMEO ran out */
    if (!r)
        return c->errstr[0] ? c->errstr : "no reply";
    if (r->type == REDIS_REPLY_ERROR)
        return r->str ? r->str : "error reply";
    return NULL;
}

/* Connect, set the command timeout, AUTH, SELECT and PING. Returns the context, or NULL
 * with why (a message without the password) written into why[len]. */
static redisContext *open_ctx(const char *host, int port, const char *socket, int db,
                              const char *password, int timeout_ms, char *why, size_t len)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    redisContext *c =
        socket ? redisConnectUnixWithTimeout(socket, tv) : redisConnectWithTimeout(host, port, tv);
    redisReply *r = NULL;
    const char *e;

    if (!c) {
        snprintf(why, len, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(why, len, "cannot connect: %s", c->errstr);
        goto fail;
    }
    if (redisSetTimeout(c, tv) != REDIS_OK) {
        snprintf(why, len, "cannot set the timeout: %s", c->errstr);
        goto fail;
    }
    if (password) {
        const char *argv[] = {"AUTH", password};
        size_t lens[] = {4, strlen(password)};
        r = redisCommandArgv(c, 2, argv, lens);
        if ((e = reply_error(c, r)) != NULL) {
            snprintf(why, len, "AUTH failed: %s", e);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    if (db != 0) {
        r = redisCommand(c, "SELECT %d", db);
        if ((e = reply_error(c, r)) != NULL) {
            snprintf(why, len, "SELECT %d failed: %s", db, e);
            goto fail;
        }
        freeReplyObject(r);
        r = NULL;
    }
    r = redisCommand(c, "PING");
    if ((e = reply_error(c, r)) != NULL) {
        snprintf(why, len, "PING failed: %s", e);
        goto fail;
    }
    freeReplyObject(r);
    return c;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return NULL;
}

int shared_check(const struct cfg *cfg, char **why)
{
    const struct cfg_shared *sh = &cfg->shared;
    char buf[256];
    redisContext *c;

    *why = NULL;
    c = open_ctx(sh->host, sh->port, sh->socket, sh->db, sh->password, sh->timeout_ms, buf,
                 sizeof(buf));
    if (c) {
        redisFree(c);
        return 0;
    }
    *why = strdup(buf);
    return strstr(buf, "AUTH") ? -EACCES : -EIO;
}

/* Load the scripts into c (a new connection). Returns 0, or -EIO with why. */
static int load_scripts(struct shared *s, redisContext *c, char *why, size_t len)
{
    for (int i = 0; i < SHARED_NS; i++) {
        redisReply *r = redisCommand(c, "SCRIPT LOAD %s", scripts[i]);
        const char *e = reply_error(c, r);
        if (!e && (r->type != REDIS_REPLY_STRING || r->len != 40))
            e = "unexpected answer";
        if (e) {
            snprintf(why, len, "SCRIPT LOAD failed: %s", e);
            if (r)
                freeReplyObject(r);
            return -EIO;
        }
        pthread_mutex_lock(&s->mu);
        memcpy(s->sha[i], r->str, 40);
        s->sha[i][40] = '\0';
        pthread_mutex_unlock(&s->mu);
        freeReplyObject(r);
    }
    return 0;
}

/* A new connection with the scripts loaded, or NULL with why. */
static struct shared_conn *conn_open(struct shared *s, uint64_t epoch, char *why, size_t len)
{
    redisContext *c =
        open_ctx(s->host, s->port, s->socket, s->db, s->password, s->timeout_ms, why, len);
    struct shared_conn *sc;

    if (!c)
        return NULL;
    if (load_scripts(s, c, why, len) != 0) {
        redisFree(c);
        return NULL;
    }
    sc = calloc(1, sizeof(*sc));
    if (!sc) {
        snprintf(why, len, "out of memory");
        redisFree(c);
        return NULL;
    }
    sc->rc = c;
    sc->epoch = epoch;
    return sc;
}

static void conn_free(struct shared_conn *c)
{
    if (c) {
        redisFree(c->rc);
        free(c);
    }
}

/* ---- up and down ---- */

void shared_mark_down(struct shared *s, const char *why)
{
    struct shared_conn *pool = NULL;
    int log = 0;

    atomic_fetch_add(&s->errors, 1);
    pthread_mutex_lock(&s->mu);
    if (atomic_load(&s->up)) {
        atomic_store(&s->up, 0);
        s->epoch++;
        s->backoff_ms = SHARED_BACKOFF_MIN_MS;
        s->retry_at = shared_mono_ms() + s->backoff_ms;
        pool = s->pool;
        s->pool = NULL;
        s->pool_n = 0;
        log = !s->announced;
        s->announced = 1;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    while (pool) {
        struct shared_conn *next = pool->next;
        conn_free(pool);
        pool = next;
    }
    if (log)
        log_warn("shared cache unavailable: %s", why);
}

struct shared_conn *shared_conn_take(struct shared *s)
{
    struct shared_conn *c = NULL;
    uint64_t epoch;
    char why[256];

    if (!atomic_load(&s->up))
        return NULL;
    pthread_mutex_lock(&s->mu);
    if (s->pool) {
        c = s->pool;
        s->pool = c->next;
        s->pool_n--;
    }
    epoch = s->epoch;
    pthread_mutex_unlock(&s->mu);
    if (c)
        return c;
    c = conn_open(s, epoch, why, sizeof(why));
    if (!c)
        shared_mark_down(s, why);
    return c;
}

void shared_conn_put(struct shared *s, struct shared_conn *c, int ok)
{
    if (!c)
        return;
    pthread_mutex_lock(&s->mu);
    if (ok && c->epoch == s->epoch && atomic_load(&s->up) && s->pool_n < SHARED_POOL_MAX &&
        !s->stop) {
        c->next = s->pool;
        s->pool = c;
        s->pool_n++;
        c = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    conn_free(c);
}

redisReply *shared_cmd(struct shared *s, struct shared_conn *c, int argc, const char **argv,
                       const size_t *lens)
{
    redisReply *r = redisCommandArgv(c->rc, argc, argv, lens);
    const char *e = reply_error(c->rc, r);
    char why[256];

    if (!e)
        return r;
    snprintf(why, sizeof(why), "%s: %s", argv[0], e);
    if (r)
        freeReplyObject(r);
    shared_mark_down(s, why);
    return NULL;
}

redisReply *shared_eval(struct shared *s, struct shared_conn *c, enum shared_script sc, int nkeys,
                        int argc, const char **argv, const size_t *lens)
{
    const char *av[12];
    size_t lv[12];
    char nk[16], sha[41];

    if (argc + 3 > 12)
        return NULL;
    pthread_mutex_lock(&s->mu);
    memcpy(sha, s->sha[sc], sizeof(sha));
    pthread_mutex_unlock(&s->mu);
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    lv[0] = 7;
    av[1] = sha;
    lv[1] = strlen(sha);
    av[2] = nk;
    lv[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        lv[3 + i] = lens[i];
    }
    return shared_cmd(s, c, argc + 3, av, lv);
}

/* ---- leases ---- */

void shared_lease_hold(struct shared *s, struct shared_lease *l)
{
    pthread_mutex_lock(&s->mu);
    l->prev = NULL;
    l->next = s->leases;
    if (s->leases)
        s->leases->prev = l;
    s->leases = l;
    pthread_mutex_unlock(&s->mu);
}

void shared_lease_drop(struct shared *s, struct shared_lease *l)
{
    pthread_mutex_lock(&s->mu);
    if (l->prev)
        l->prev->next = l->next;
    else if (s->leases == l)
        s->leases = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
    pthread_mutex_unlock(&s->mu);
}

/* Renew every lease held: copies of their names and values are taken under the lock,
 * the commands run outside it. */
static void renew_all(struct shared *s)
{
    struct shared_lease *copy = NULL;
    size_t n = 0, i = 0;

    pthread_mutex_lock(&s->mu);
    for (struct shared_lease *l = s->leases; l; l = l->next)
        n++;
    if (n)
        copy = calloc(n, sizeof(*copy));
    for (struct shared_lease *l = s->leases; copy && l; l = l->next, i++) {
        memcpy(copy[i].key, l->key, sizeof(l->key));
        memcpy(copy[i].value, l->value, sizeof(l->value));
    }
    pthread_mutex_unlock(&s->mu);
    if (!copy)
        return;
    struct shared_conn *c = shared_conn_take(s);
    char ms[16];
    snprintf(ms, sizeof(ms), "%d", SHARED_LEASE_MS);
    for (i = 0; c && i < n; i++) {
        const char *argv[] = {copy[i].key, copy[i].value, ms};
        size_t lens[] = {strlen(copy[i].key), strlen(copy[i].value), strlen(ms)};
        redisReply *r = shared_eval(s, c, SHARED_S_RENEW, 1, 3, argv, lens);
        if (!r) {
            shared_conn_put(s, c, 0);
            c = NULL;
            break;
        }
        freeReplyObject(r);
    }
    shared_conn_put(s, c, 1);
    free(copy);
}

/* ---- the keeper ---- */

/* Down: try Redis again. */
static void probe(struct shared *s)
{
    char why[256];
    struct shared_conn *c;
    uint64_t epoch;
    int back = 0;

    pthread_mutex_lock(&s->mu);
    epoch = s->epoch;
    pthread_mutex_unlock(&s->mu);
    c = conn_open(s, epoch, why, sizeof(why));
    pthread_mutex_lock(&s->mu);
    if (c) {
        atomic_store(&s->up, 1);
        back = s->announced;
        s->announced = 0;
        s->backoff_ms = SHARED_BACKOFF_MIN_MS;
        c->epoch = s->epoch;
    } else {
        s->backoff_ms *= 2;
        if (s->backoff_ms > SHARED_BACKOFF_MAX_MS)
            s->backoff_ms = SHARED_BACKOFF_MAX_MS;
        s->retry_at = shared_mono_ms() + s->backoff_ms;
    }
    pthread_mutex_unlock(&s->mu);
    if (c) {
        shared_conn_put(s, c, 1);
        if (back)
            log_info("shared cache back");
    } else {
        atomic_fetch_add(&s->errors, 1);
        log_debug("shared cache still unavailable: %s", why);
    }
}

static void *keeper_main(void *arg)
{
    struct shared *s = arg;
    int64_t next_renew = shared_mono_ms() + SHARED_RENEW_MS;

    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        int64_t now = shared_mono_ms();
        if (!atomic_load(&s->up) && now >= s->retry_at) {
            pthread_mutex_unlock(&s->mu);
            probe(s);
            pthread_mutex_lock(&s->mu);
            continue;
        }
        if (now >= next_renew) {
            next_renew = now + SHARED_RENEW_MS;
            if (s->leases && atomic_load(&s->up)) {
                pthread_mutex_unlock(&s->mu);
                renew_all(s);
                pthread_mutex_lock(&s->mu);
                continue;
            }
        }
        int64_t until = next_renew;
        if (!atomic_load(&s->up) && s->retry_at < until)
            until = s->retry_at;
        struct timespec ts = {until / 1000, (long)(until % 1000) * 1000000};
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int shared_start(struct shared *s)
{
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    if (!s->started && !s->stop) {
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        rc = -pthread_create(&s->keeper, NULL, keeper_main, s);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        s->started = rc == 0;
        if (rc)
            s->stop = 1; /* do not try again on every fetch */
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int shared_conn_init(struct shared *s)
{
    pthread_condattr_t ca;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&s->up, 1); /* presumed up: a new mount's first reads ask Redis */
    s->backoff_ms = SHARED_BACKOFF_MIN_MS;
    return -rc;
}

void shared_conn_cleanup(struct shared *s)
{
    pthread_mutex_lock(&s->mu);
    int started = s->started;
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (started)
        pthread_join(s->keeper, NULL);
    while (s->pool) {
        struct shared_conn *next = s->pool->next;
        conn_free(s->pool);
        s->pool = next;
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}
