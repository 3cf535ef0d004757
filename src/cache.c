/* cache - bounded in-memory image versions: LRU + TTL, refcounted, single flight.
 *
 * Structure. A chained hash table (grown by doubling) maps a key to an entry. An entry
 * holds the key's *current* version (pending, ready or failed) and, while a refresh of a
 * stale live version is pending or failed, the *previous* ready version, kept so it can be
 * served stale (SPEC 6). A version's bytes live in a refcounted blob so that a version
 * served stale shares its predecessor's buffer without a copy.
 *
 * Invariants (all under the cache lock):
 *  - e->cur is never NULL; e->prev is NULL or READY, and is non-NULL only while e->cur is
 *    PENDING or FAILED. So at most one ready version per key is in the cache, and
 *    stats.entries (ready versions held) is also the number of keys with bytes.
 *  - The cache holds one reference on every version it points at (cur, prev).
 *  - The LRU list holds exactly the ready versions in the cache; a blob's bytes are in
 *    ready_bytes while at least one version in the cache uses it (counted once).
 *  - The failure list holds the in-cache versions whose failure is remembered (a FAILED
 *    current version, or a READY version being served stale after a failed refresh), in
 *    the order they failed; each counts CACHE_ERROR_BYTES.
 *  - ready_bytes + reserved + failures * CACHE_ERROR_BYTES <= max_bytes, except while
 *    bodies reserved before a cache_set_params that shrank max_bytes are in flight.
 *
 * Locking. One mutex guards the table, entries, LRU, failure list, counters and the
 * mutable fields of versions. It is never held while a fetcher runs, while on_evict runs,
 * while reading the injected clock or while logging. A version's state is also written
 * with release and read with acquire semantics, so accessors need no lock: data, len,
 * fetched_at and final are written once, before the version becomes READY.
 *
 * Single flight. cache_resolve on a version nobody is fetching marks it fetching, drops
 * the lock and runs the fetcher in the calling thread. Others resolving the same version
 * wait on its condition variable (CLOCK_MONOTONIC, with their own deadline). The fetcher
 * bumps the version's fetch generation when done, so every waiter returns that fetch's
 * result (same bytes or same errno) even if error_ttl_s is 0. The condition variable
 * lives in the version, not the entry, so a version that left the cache (cache_clear)
 * can still be resolved; it then stays outside the cache, its bytes counted as pinned.
 *
 * Eviction under live references. Leaving the cache (evicted for max_bytes, replaced by
 * a newer ready version, dropped, cleared) only drops the cache's reference. If a blob
 * leaves the cache while some version using it is still referenced, its length moves
 * from ready_bytes to the pinned counter, which the blob decrements when it is finally
 * freed. That counter is a small refcounted object of its own, because references (and
 * so pinned blobs) may outlive the cache. on_evict runs after the lock is released, for
 * each version that left the cache while referenced elsewhere.
 */
#include "insightfs/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache_int.h"
#include "insightfs/log.h"

#define CACHE_MIN_BUCKETS 64u

/* --- small helpers ------------------------------------------------------------------ */

static int state_load(const struct cache_version *v)
{
    return __atomic_load_n(&v->state, __ATOMIC_ACQUIRE);
}

static void state_store(struct cache_version *v, int st)
{
    __atomic_store_n(&v->state, st, __ATOMIC_RELEASE);
}

static int stale_errno(int err)
{
    return err == EAGAIN || err == ETIMEDOUT || err == EIO;
}

static int drop_errno(int err)
{
    return err == EACCES || err == ENOENT || err == EINVAL;
}

/* --- pinned counter and blobs ------------------------------------------------------- */

static void pin_unref(struct cache_pin *pin)
{
    if (atomic_fetch_sub_explicit(&pin->refs, 1, memory_order_acq_rel) == 1)
        free(pin);
}

static void blob_unref(struct cache_blob *b)
{
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (b->pin) {
        atomic_fetch_sub(&b->pin->bytes, b->len);
        pin_unref(b->pin);
    }
    free(b->data);
    free(b);
}

/* Lock held. b's bytes now live outside the bound until its last unref. */
static void blob_pin(struct cache *c, struct cache_blob *b)
{
    atomic_fetch_add(&c->pin->refs, 1);
    b->pin = c->pin;
    atomic_fetch_add(&c->pin->bytes, b->len);
}

static void blob_enter(struct cache *c, struct cache_blob *b)
{
    if (b->in_cache++ == 0)
        c->ready_bytes += b->len;
}

/* Lock held; v is the version leaving the cache, still holding the cache's reference. */
static void blob_leave(struct cache *c, struct cache_blob *b, struct cache_version *v)
{
    if (--b->in_cache > 0)
        return;
    c->ready_bytes -= b->len;
    /* Only the cache holds v and only v holds b: nobody can take a new reference, so the
     * buffer is about to be freed and never becomes pinned. */
    if (atomic_load(&v->refs) == 1 && atomic_load(&b->refs) == 1)
        return;
    blob_pin(c, b);
}

/* --- versions ----------------------------------------------------------------------- */

static void version_free(struct cache_version *v)
{
    blob_unref(v->blob);
    pthread_cond_destroy(&v->done);
    free(v);
}

void cache_version_ref(struct cache_version *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void cache_version_unref(struct cache_version *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        version_free(v);
}

/* Lock held. A new PENDING version of key with one reference (the caller's). */
static struct cache_version *version_new(struct cache *c, const struct cache_key *key)
{
    struct cache_version *v = calloc(1, sizeof *v + cache_key_names_len(key));
    if (!v)
        return NULL;
    if (pthread_cond_init(&v->done, &c->condattr) != 0) {
        free(v);
        return NULL;
    }
    atomic_init(&v->refs, 1);
    cache_key_copy(&v->key, v->names, key);
    v->id = c->next_id++;
    v->state = CACHE_PENDING;
    return v;
}

uint64_t cache_version_id(const struct cache_version *v)
{
    return v->id;
}

enum cache_state cache_version_state(struct cache_version *v)
{
    return (enum cache_state)state_load(v);
}

const struct cache_key *cache_version_key(const struct cache_version *v)
{
    return &v->key;
}

const unsigned char *cache_version_data(const struct cache_version *v, size_t *len)
{
    if (state_load(v) != CACHE_READY) {
        *len = 0;
        return NULL;
    }
    *len = v->blob->len;
    return v->blob->data;
}

int64_t cache_version_fetched_at(const struct cache_version *v)
{
    return state_load(v) == CACHE_READY ? v->fetched_at : 0;
}

int cache_version_final(const struct cache_version *v)
{
    return state_load(v) == CACHE_READY ? v->final : 0;
}

/* v leaves the cache: out of the LRU, the byte count and the failure list; the cache's
 * reference moves to drops, to be released (and reported) once the lock is dropped. The
 * caller clears the entry's pointer to v. */
static void version_leave(struct cache *c, struct cache_version *v, struct cache_drops *drops)
{
    if (v->in_lru)
        cache_lru_unlink(c, v);
    if (v->in_fail)
        cache_fail_unlink(c, v);
    if (state_load(v) == CACHE_READY)
        blob_leave(c, v->blob, v);
    v->entry = NULL;
    v->drop_notify = atomic_load(&v->refs) > 1;
    v->drop_next = drops->head;
    drops->head = v;
}

/* Remove a ready version from the cache, and its entry if nothing is left in it. */
static void evict_version(struct cache *c, struct cache_version *v, struct cache_drops *drops)
{
    struct cache_entry *e = v->entry;
    if (e->prev == v) {
        e->prev = NULL;
        version_leave(c, v, drops);
        return;
    }
    /* v is e->cur, so e->prev is NULL (invariant): the entry goes with it. */
    e->cur = NULL;
    version_leave(c, v, drops);
    cache_table_remove(c, e);
}

static uint64_t bytes_used(const struct cache *c)
{
    return c->ready_bytes + c->reserved + c->nfail * CACHE_ERROR_BYTES;
}

static uint64_t max_bytes(const struct cache *c)
{
    return c->params.max_bytes > 0 ? (uint64_t)c->params.max_bytes : 0;
}

/* Make room for extra more bytes: least recently used ready versions first, then the
 * oldest remembered failures. Returns 0, or -ENOMEM (evicting nothing) when the
 * reservations alone leave no room. */
static int make_room(struct cache *c, uint64_t extra, struct cache_drops *drops)
{
    uint64_t max = max_bytes(c);
    if (extra > max || c->reserved > max - extra)
        return -ENOMEM;
    while (bytes_used(c) + extra > max) {
        if (c->lru_head) {
            evict_version(c, c->lru_head, drops);
            c->evictions++;
        } else {
            cache_fail_forget(c, c->fail_head); /* non-NULL: see the test above */
        }
    }
    return 0;
}

/* After the lock is released: report versions that left the cache while referenced
 * elsewhere, then drop the cache's references. */
static void drops_release(struct cache *c, struct cache_drops *drops, int notify)
{
    struct cache_version *v = drops->head;
    drops->head = NULL;
    while (v) {
        struct cache_version *next = v->drop_next;
        if (notify && v->drop_notify && c->on_evict)
            c->on_evict(c->evict_arg, v);
        cache_version_unref(v);
        v = next;
    }
}

/* Lock held: every key leaves the cache. */
static void drop_all(struct cache *c, struct cache_drops *drops)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct cache_entry *e = c->tab[i];
        while (e) {
            struct cache_entry *next = e->next;
            if (e->prev)
                version_leave(c, e->prev, drops);
            version_leave(c, e->cur, drops);
            free(e);
            e = next;
        }
        c->tab[i] = NULL;
    }
    c->nkeys = 0;
}

/* --- lifecycle ---------------------------------------------------------------------- */

struct cache *cache_new(const struct cache_params *p, int64_t (*now_ms)(void *arg), void *clock_arg,
                        cache_evict_fn on_evict, void *evict_arg)
{
    struct cache *c = calloc(1, sizeof *c);
    if (!c)
        goto err;
    c->tab = calloc(CACHE_MIN_BUCKETS, sizeof *c->tab);
    c->pin = calloc(1, sizeof *c->pin);
    if (!c->tab || !c->pin)
        goto err_free;
    atomic_init(&c->pin->refs, 1);
    atomic_init(&c->pin->bytes, 0);
    if (pthread_condattr_init(&c->condattr) != 0)
        goto err_free;
    if (pthread_condattr_setclock(&c->condattr, CLOCK_MONOTONIC) != 0)
        goto err_attr;
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        goto err_attr;
    c->nbuckets = CACHE_MIN_BUCKETS;
    c->params = *p;
    c->now_ms = now_ms;
    c->clock_arg = clock_arg;
    c->on_evict = on_evict;
    c->evict_arg = evict_arg;
    c->next_id = 1;
    return c;

err_attr:
    pthread_condattr_destroy(&c->condattr);
err_free:
    free(c->pin);
    free(c->tab);
    free(c);
err:
    errno = ENOMEM;
    return NULL;
}

/* No other call on c may be running or start. on_evict is not called: the owner is going
 * away. Pinned blobs keep the pinned counter alive until their last unref. */
void cache_free(struct cache *c)
{
    struct cache_drops drops = {NULL};
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    drop_all(c, &drops);
    pthread_mutex_unlock(&c->lock);
    drops_release(c, &drops, 0);
    pthread_mutex_destroy(&c->lock);
    pthread_condattr_destroy(&c->condattr);
    pin_unref(c->pin);
    free(c->tab);
    free(c);
}

void cache_set_params(struct cache *c, const struct cache_params *p)
{
    struct cache_drops drops = {NULL};
    pthread_mutex_lock(&c->lock);
    c->params = *p;
    /* -ENOMEM only while in-flight reservations exceed the new bound: each is checked
     * again when its version becomes ready. */
    (void)make_room(c, 0, &drops);
    pthread_mutex_unlock(&c->lock);
    drops_release(c, &drops, 1);
}

/* Counters (hits, misses, evictions) and reservations of bodies in flight survive. A
 * version being fetched completes outside the cache (its bytes pinned). */
void cache_clear(struct cache *c)
{
    struct cache_drops drops = {NULL};
    pthread_mutex_lock(&c->lock);
    drop_all(c, &drops);
    pthread_mutex_unlock(&c->lock);
    drops_release(c, &drops, 1);
}

void cache_forget_errors(struct cache *c, int err)
{
    pthread_mutex_lock(&c->lock);
    struct cache_version *v = c->fail_head;
    while (v) {
        struct cache_version *next = v->fail_next;
        if (v->err == err)
            cache_fail_forget(c, v);
        v = next;
    }
    pthread_mutex_unlock(&c->lock);
}

void cache_set_wait_hook(struct cache *c, cache_wait_hook_fn hook, void *arg)
{
    pthread_mutex_lock(&c->lock);
    c->wait_hook = hook;
    c->wait_hook_arg = arg;
    pthread_mutex_unlock(&c->lock);
}

/* --- lookups ------------------------------------------------------------------------ */

static int fresh(const struct cache *c, const struct cache_version *v, int64_t now)
{
    return v->final || now < v->fetched_at + (int64_t)c->params.live_ttl_s * 1000;
}

/* A ready live version may still stand in for a failed refresh. */
static int stale_window_open(const struct cache *c, const struct cache_version *v, int64_t now)
{
    int64_t window = ((int64_t)c->params.live_ttl_s + c->params.stale_if_error_s) * 1000;
    return now < v->fetched_at + window;
}

/* Lock held. The new entry for key with a pending version, or NULL (ENOMEM). */
static struct cache_entry *entry_new(struct cache *c, const struct cache_key *key, uint64_t hash)
{
    struct cache_entry *e = calloc(1, sizeof *e + cache_key_names_len(key));
    if (!e)
        return NULL;
    e->cur = version_new(c, key);
    if (!e->cur) {
        free(e);
        return NULL;
    }
    e->cur->entry = e;
    e->hash = hash;
    cache_key_copy(&e->key, e->names, key);
    cache_table_insert(c, e);
    return e;
}

struct cache_version *cache_get(struct cache *c, const struct cache_key *key, int *hit)
{
    struct cache_drops drops = {NULL};
    struct cache_version *v = NULL;
    int is_hit = 0;
    int64_t now = c->now_ms(c->clock_arg);
    uint64_t hash = cache_key_hash(key);

    pthread_mutex_lock(&c->lock);
    cache_fail_sweep(c, now);
    struct cache_entry *e = cache_table_find(c, key, hash);
    if (!e) {
        e = entry_new(c, key, hash);
        if (!e)
            goto out;
    }
    v = e->cur;
    if (state_load(v) == CACHE_READY) {
        /* A ready version with a remembered failure is one served stale (only those
         * carry a failure), so its failure was EAGAIN, ETIMEDOUT or EIO. */
        if (fresh(c, v, now) || (cache_remembered(c, v, now) && stale_window_open(c, v, now))) {
            is_hit = 1;
            cache_lru_touch(c, v);
        } else {
            struct cache_version *nv = version_new(c, key);
            if (!nv) {
                v = NULL;
                goto out;
            }
            nv->entry = e;
            e->cur = nv;
            if (stale_window_open(c, v, now)) {
                /* Kept, with its bytes and LRU place, for a refresh that fails. */
                cache_fail_forget(c, v);
                e->prev = v;
            } else {
                version_leave(c, v, &drops);
            }
            v = nv;
        }
    }
    cache_version_ref(v);
    if (is_hit)
        c->hits++;
    else
        c->misses++;
out:
    pthread_mutex_unlock(&c->lock);
    drops_release(c, &drops, 1);
    if (hit)
        *hit = is_hit;
    if (!v)
        errno = ENOMEM;
    return v;
}

/* --- fetch completion (lock held) --------------------------------------------------- */

static void finish_ready(struct cache *c, struct cache_version *v, struct cache_blob *b,
                         int64_t signed_at, struct cache_drops *drops)
{
    struct cache_entry *e = v->entry;
    /* The fetcher's reservation of len bytes becomes the version's bytes. */
    c->reserved -= b->len < c->reserved ? b->len : c->reserved;
    v->blob = b;
    v->fetched_at = signed_at;
    v->final = v->key.end_ms < signed_at - (int64_t)c->params.settle_s * 1000;
    cache_fail_forget(c, v);
    state_store(v, CACHE_READY);
    if (!e) {
        blob_pin(c, b); /* left the cache while being fetched (cache_clear) */
        return;
    }
    blob_enter(c, b);
    cache_lru_push(c, v);
    if (e->prev) {
        version_leave(c, e->prev, drops);
        e->prev = NULL;
    }
}

/* The fetch failed with err (positive). Returns 0 when v is served stale instead. */
static int finish_failed(struct cache *c, struct cache_version *v, int err, int64_t now,
                         struct cache_drops *drops)
{
    struct cache_entry *e = v->entry;
    struct cache_version *prev = e ? e->prev : NULL;

    if (prev && stale_errno(err) && stale_window_open(c, prev, now)) {
        atomic_fetch_add(&prev->blob->refs, 1);
        v->blob = prev->blob;
        v->fetched_at = prev->fetched_at;
        v->final = prev->final;
        cache_fail_record(c, v, err, now);
        state_store(v, CACHE_READY);
        blob_enter(c, v->blob); /* before prev leaves: the shared bytes stay counted */
        cache_lru_push(c, v);
        e->prev = NULL;
        version_leave(c, prev, drops);
        return 0;
    }
    cache_fail_record(c, v, err, now);
    state_store(v, CACHE_FAILED);
    if (prev && (drop_errno(err) || !stale_window_open(c, prev, now))) {
        e->prev = NULL;
        version_leave(c, prev, drops);
    }
    return -err;
}

static void deadline_ts(int64_t deadline_mono_ms, struct timespec *ts)
{
    if (deadline_mono_ms < 0)
        deadline_mono_ms = 0;
    ts->tv_sec = (time_t)(deadline_mono_ms / 1000);
    ts->tv_nsec = (long)(deadline_mono_ms % 1000) * 1000000;
}

static void log_stale(const struct cache_version *v, int err, int64_t now)
{
    log_warn("serving %s/%s %lld-%lld stale (fetched %lld ms ago): refresh failed: %s",
             v->key.dash_id, v->key.widget_id, (long long)v->key.start_ms, (long long)v->key.end_ms,
             (long long)(now - v->fetched_at), strerrorname_np(err) ? strerrorname_np(err) : "?");
}

int cache_resolve(struct cache *c, struct cache_version *v, const struct cache_fetcher *f,
                  int64_t deadline_mono_ms)
{
    struct cache_drops drops = {NULL};
    struct cache_blob *b = NULL;
    unsigned char *data = NULL;
    size_t len = 0;
    int64_t signed_at = 0, now = c->now_ms(c->clock_arg);
    int rc, timed_out = 0, stale_err = 0;
    struct timespec ts;

    deadline_ts(deadline_mono_ms, &ts);
    pthread_mutex_lock(&c->lock);
    uint64_t gen = v->fetch_gen;
    for (;;) {
        int st = state_load(v);
        if (st == CACHE_READY) {
            cache_lru_touch(c, v);
            rc = 0;
            goto out_unlock;
        }
        if (v->fetch_gen != gen) {
            /* The fetch we waited for failed: its errno, remembered or not. */
            rc = -v->err;
            goto out_unlock;
        }
        if (!v->fetching)
            break;
        if (timed_out) {
            rc = -ETIMEDOUT;
            goto out_unlock;
        }
        v->waiters++;
        if (c->wait_hook)
            c->wait_hook(c->wait_hook_arg, v, v->waiters);
        if (pthread_cond_timedwait(&v->done, &c->lock, &ts) == ETIMEDOUT)
            timed_out = 1; /* look once more: it may have ended meanwhile */
        v->waiters--;
    }
    /* Not ready and nobody fetching (no fetch ended since we came: now is current). */
    if (state_load(v) == CACHE_FAILED && cache_remembered(c, v, now)) {
        rc = -v->err;
        goto out_unlock;
    }
    if (!f || !f->fetch) {
        rc = -EINVAL;
        goto out_unlock;
    }
    v->fetching = 1;
    pthread_mutex_unlock(&c->lock);

    b = calloc(1, sizeof *b);
    if (!b)
        rc = -ENOMEM;
    else
        rc = f->fetch(f->arg, c, &v->key, &data, &len, &signed_at);
    if (rc > 0)
        rc = -EIO; /* a fetcher breaking the 0 / negative errno convention */
    now = c->now_ms(c->clock_arg);

    pthread_mutex_lock(&c->lock);
    if (rc == 0) {
        atomic_init(&b->refs, 1);
        b->data = data;
        b->len = len;
        finish_ready(c, v, b, signed_at, &drops);
        b = NULL;
    } else {
        int err = -rc;
        rc = finish_failed(c, v, err, now, &drops);
        if (rc == 0)
            stale_err = err;
    }
    v->fetching = 0;
    v->fetch_gen++;
    pthread_cond_broadcast(&v->done);
    /* Room for a new failure record, or a max_bytes that shrank during the fetch. */
    (void)make_room(c, 0, &drops);
out_unlock:
    pthread_mutex_unlock(&c->lock);
    drops_release(c, &drops, 1);
    free(b);
    if (stale_err)
        log_stale(v, stale_err, now);
    return rc;
}

/* --- reservations and stats --------------------------------------------------------- */

int cache_reserve(struct cache *c, size_t bytes)
{
    struct cache_drops drops = {NULL};
    int64_t now = c->now_ms(c->clock_arg);

    pthread_mutex_lock(&c->lock);
    cache_fail_sweep(c, now);
    int rc = make_room(c, bytes, &drops);
    if (rc == 0)
        c->reserved += bytes;
    pthread_mutex_unlock(&c->lock);
    drops_release(c, &drops, 1);
    return rc;
}

void cache_release(struct cache *c, size_t bytes)
{
    pthread_mutex_lock(&c->lock);
    c->reserved -= bytes < c->reserved ? bytes : c->reserved;
    pthread_mutex_unlock(&c->lock);
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
    int64_t now = c->now_ms(c->clock_arg);

    pthread_mutex_lock(&c->lock);
    cache_fail_sweep(c, now);
    out->entries = c->nready;
    out->bytes = bytes_used(c);
    out->pinned_bytes = atomic_load(&c->pin->bytes);
    out->max_bytes = max_bytes(c);
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    pthread_mutex_unlock(&c->lock);
}
