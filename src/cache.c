/* cache - bounded in-memory image versions: LRU, TTLs, refcounted bytes, single flight
 * and failure memory by key (the contract is in cache.h).
 *
 * Structure. A chained hash table (grown by doubling) maps a key to an entry; every
 * entry is also on one LRU list, in order of the daemon's last lookup. An entry holds the
 * key's *current* version (pending, ready or failed) and, while a refresh of a stale live
 * version is pending or failed, the *previous* ready version, kept so it can be served
 * stale (SPEC 6). A version's bytes live in a refcounted blob, so a version served stale
 * shares its predecessor's buffer without a copy.
 *
 * Invariants (all under the cache lock):
 *  - e->cur is never NULL; e->prev is NULL or READY, and non-NULL only while e->cur is
 *    PENDING or FAILED. So at most one ready version per key is in the cache.
 *  - The cache holds one reference on every version it points at (cur, prev).
 *  - A blob's bytes are in ready_bytes while at least one version in the cache uses it.
 *  - Every entry counts its records (entry, two versions, key strings) in meta_bytes.
 *  - ready_bytes + reserved + meta_bytes + charged <= max_bytes, except while nothing is
 *    left to evict (all being fetched) or a smaller max_bytes waits for bodies in flight.
 *
 * Single flight and failure memory are the flight primitive (flight.h), one per version:
 * cache_need hands out the ticket, cache_complete ends it and returns its waiters. So
 * every waiter of one fetch gets that fetch's result, even with error_ttl_s = 0.
 *
 * Eviction. make_room drops least recently looked-up entries, skipping those being
 * fetched. Leaving the cache only drops the cache's reference; a version still
 * referenced elsewhere goes on the dropped list (its owner has the kernel forget it),
 * and if its blob is still referenced the blob's length moves from ready_bytes to the
 * pinned counter, which the blob decrements when finally freed. That counter is a small
 * refcounted object of its own, because pinned blobs may outlive the cache.
 *
 * Memory. Entries and versions come from a slab pool (slab.h): keys are born and
 * evicted roughly in LRU order, so the blocks of evicted keys empty out and go back to
 * the system instead of fragmenting the heap (SPEC 7).
 *
 * Locking. One mutex guards everything above and the mutable fields of versions. It is
 * never held while logging or freeing a version's bytes. A version's state is written
 * with release and read with acquire semantics, so accessors need no lock.
 */
#include "insightfs/cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"
#include "insightfs/log.h"
#include "insightfs/vpath.h"

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
    /* Only the cache holds v and only v holds b: the buffer is about to be freed. */
    if (atomic_load(&v->refs) == 1 && atomic_load(&b->refs) == 1)
        return;
    blob_pin(c, b);
}

/* --- versions ----------------------------------------------------------------------- */

void cache_version_ref(struct cache_version *v)
{
    atomic_fetch_add_explicit(&v->refs, 1, memory_order_relaxed);
}

void cache_version_unref(struct cache_version *v)
{
    if (v && atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1) {
        blob_unref(v->blob);
        slab_free(v);
    }
}

/* Lock held. A new PENDING version of key with one reference (the caller's). */
static struct cache_version *version_new(struct cache *c, const struct cache_key *key)
{
    struct cache_version *v = slab_alloc(c->pool, sizeof *v + cache_key_names_len(key));
    if (!v)
        return NULL;
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

enum cache_state cache_version_state(const struct cache_version *v)
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

size_t cache_version_bytes(const struct cache_version *v)
{
    return sizeof(*v) + cache_key_names_len(&v->key) + CACHE_MALLOC_OVERHEAD;
}

struct cache_version *cache_dropped_next(const struct cache_version *v)
{
    return v->drop_next;
}

/* Lock held. v leaves the cache: out of the byte count; the cache's reference goes to the
 * dropped list when someone else still holds v, else to *free_list (released after the
 * lock). The caller clears the entry's pointer to v. */
static void version_leave(struct cache *c, struct cache_version *v,
                          struct cache_version **free_list)
{
    if (state_load(v) == CACHE_READY) {
        blob_leave(c, v->blob, v);
        c->nready--;
    }
    v->entry = NULL;
    if (atomic_load(&v->refs) > 1) {
        v->drop_next = c->dropped;
        c->dropped = v;
    } else {
        v->drop_next = *free_list;
        *free_list = v;
    }
}

static void free_list_release(struct cache_version *v)
{
    while (v) {
        struct cache_version *next = v->drop_next;
        cache_version_unref(v);
        v = next;
    }
}

/* --- entries and the bound (lock held) ---------------------------------------------- */

static size_t entry_cost(const struct cache_key *key)
{
    /* The entry and up to two versions, each with a copy of the key's strings. */
    return sizeof(struct cache_entry) + 2 * sizeof(struct cache_version) +
           3 * (cache_key_names_len(key) + CACHE_MALLOC_OVERHEAD);
}

static uint64_t bytes_used(const struct cache *c)
{
    return c->ready_bytes + c->reserved + c->meta_bytes + c->charged;
}

static uint64_t max_bytes(const struct cache *c)
{
    return c->params.max_bytes > 0 ? (uint64_t)c->params.max_bytes : 0;
}

static int entry_busy(const struct cache_entry *e)
{
    return e->cur->flight.running;
}

/* Remove e and its versions from the cache. */
static void entry_drop(struct cache *c, struct cache_entry *e, struct cache_version **free_list)
{
    if (e->prev)
        version_leave(c, e->prev, free_list);
    version_leave(c, e->cur, free_list);
    c->meta_bytes -= e->cost;
    cache_table_remove(c, e);
}

/* Make room for extra more bytes, least recently used entries first, skipping those being
 * fetched. all_or_nothing (a reservation): when even dropping every idle entry would not
 * be enough, drop nothing. Returns 0, or -ENOMEM when the bound is not met. */
static int make_room(struct cache *c, uint64_t extra, int all_or_nothing,
                     struct cache_version **free_list)
{
    uint64_t max = max_bytes(c);
    if (bytes_used(c) + extra <= max)
        return 0;
    uint64_t freeable = 0;
    for (struct cache_entry *e = c->lru_head; all_or_nothing && e; e = e->lru_next) {
        if (entry_busy(e))
            continue;
        freeable += e->cost;
        if (state_load(e->cur) == CACHE_READY && e->cur->blob->in_cache == 1)
            freeable += e->cur->blob->len;
        if (e->prev && e->prev->blob->in_cache == 1)
            freeable += e->prev->blob->len;
        if (bytes_used(c) + extra <= max + freeable)
            break;
    }
    if (all_or_nothing && bytes_used(c) + extra > max + freeable)
        return -ENOMEM;
    struct cache_entry *e = c->lru_head;
    while (e && bytes_used(c) + extra > max) {
        struct cache_entry *next = e->lru_next;
        if (!entry_busy(e)) {
            if (state_load(e->cur) == CACHE_READY || e->prev)
                c->evictions++;
            entry_drop(c, e, free_list);
        }
        e = next;
    }
    return bytes_used(c) + extra <= max ? 0 : -ENOMEM;
}

/* Lock held. The new entry for key with a pending version, or NULL (ENOMEM). */
static struct cache_entry *entry_new(struct cache *c, const struct cache_key *key, uint64_t hash,
                                     int64_t now, struct cache_version **free_list)
{
    size_t cost = entry_cost(key);
    (void)make_room(c, cost, 0, free_list); /* a key is always taken: lookups cannot fail */
    struct cache_entry *e = slab_alloc(c->pool, sizeof *e + cache_key_names_len(key));
    if (!e)
        return NULL;
    e->cur = version_new(c, key);
    if (!e->cur) {
        slab_free(e);
        return NULL;
    }
    e->cur->entry = e;
    e->hash = hash;
    e->cost = cost;
    e->used_mono = now;
    cache_key_copy(&e->key, e->names, key);
    c->meta_bytes += cost;
    cache_table_insert(c, e);
    return e;
}

/* --- lifecycle ---------------------------------------------------------------------- */

struct cache *cache_new(const struct cache_params *p)
{
    struct cache *c = calloc(1, sizeof *c);
    if (!c)
        goto err;
    c->tab = calloc(CACHE_MIN_BUCKETS, sizeof *c->tab);
    c->pin = calloc(1, sizeof *c->pin);
    c->pool = slab_pool_new();
    if (!c->tab || !c->pin || !c->pool)
        goto err_free;
    atomic_init(&c->pin->refs, 1);
    atomic_init(&c->pin->bytes, 0);
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        goto err_free;
    c->nbuckets = CACHE_MIN_BUCKETS;
    c->params = *p;
    c->next_id = 1;
    return c;

err_free:
    slab_pool_release(c->pool);
    free(c->pin);
    free(c->tab);
    free(c);
err:
    errno = ENOMEM;
    return NULL;
}

/* Lock held: every key leaves the cache. */
static void drop_all(struct cache *c, struct cache_version **free_list)
{
    while (c->lru_head)
        entry_drop(c, c->lru_head, free_list);
}

void cache_free(struct cache *c)
{
    struct cache_version *free_list = NULL;
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    drop_all(c, &free_list);
    struct cache_version *dropped = c->dropped;
    c->dropped = NULL;
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
    free_list_release(dropped);
    pthread_mutex_destroy(&c->lock);
    pin_unref(c->pin);
    slab_pool_release(c->pool); /* versions still referenced keep it until they go */
    free(c->tab);
    free(c);
}

void cache_set_params(struct cache *c, const struct cache_params *p)
{
    struct cache_version *free_list = NULL;
    pthread_mutex_lock(&c->lock);
    c->params = *p;
    /* -ENOMEM only while in-flight reservations exceed the new bound. */
    (void)make_room(c, 0, 0, &free_list);
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
}

void cache_clear(struct cache *c)
{
    struct cache_version *free_list = NULL;
    pthread_mutex_lock(&c->lock);
    drop_all(c, &free_list);
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
}

void cache_forget_errors(struct cache *c, int err)
{
    pthread_mutex_lock(&c->lock);
    for (struct cache_entry *e = c->lru_head; e; e = e->lru_next)
        if (e->cur->flight.err == err)
            flight_forget(&e->cur->flight);
    pthread_mutex_unlock(&c->lock);
}

void cache_sweep(struct cache *c, int64_t now_mono)
{
    struct cache_version *free_list = NULL;
    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = c->lru_head;
    while (e && now_mono - e->used_mono >= CACHE_IDLE_MS) {
        struct cache_entry *next = e->lru_next;
        struct cache_version *v = e->cur;
        if (state_load(v) != CACHE_READY && !v->flight.running &&
            !flight_failed(&v->flight, now_mono, NULL))
            entry_drop(c, e, &free_list);
        e = next;
    }
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
}

struct cache_version *cache_take_dropped(struct cache *c)
{
    pthread_mutex_lock(&c->lock);
    struct cache_version *v = c->dropped;
    c->dropped = NULL;
    pthread_mutex_unlock(&c->lock);
    return v;
}

/* --- lookups ------------------------------------------------------------------------ */

static int64_t live_ms(const struct cache *c)
{
    return (int64_t)c->params.live_ttl_s * 1000;
}

static int64_t fresh_until(const struct cache *c, const struct cache_version *v)
{
    return v->final ? INT64_MAX : v->fetched_mono + live_ms(c);
}

/* The end of the window in which a ready live version may stand in for a failed refresh. */
static int64_t stale_until(const struct cache *c, const struct cache_version *v)
{
    return v->fetched_mono + live_ms(c) + (int64_t)c->params.stale_if_error_s * 1000;
}

/* cache_get and cache_get_ahead. ahead: do not count, do not mark used, and return NULL
 * (no reference) for a fresh hit. */
static struct cache_version *get(struct cache *c, const struct cache_key *key,
                                 const struct cache_clock *now, int ahead, int *hit,
                                 int64_t *valid_ms)
{
    struct cache_version *free_list = NULL;
    struct cache_version *v = NULL;
    int is_hit = 0;
    int64_t valid = INT64_MAX;
    uint64_t hash = cache_key_hash(key);

    pthread_mutex_lock(&c->lock);
    struct cache_entry *e = cache_table_find(c, key, hash);
    if (!e) {
        e = entry_new(c, key, hash, now->mono, &free_list);
        if (!e)
            goto out;
    }
    if (!ahead) {
        e->used_mono = now->mono;
        cache_lru_touch(c, e);
    }
    v = e->cur;
    if (state_load(v) == CACHE_READY) {
        /* A ready version with a remembered failure is one served stale (only those
         * carry a failure), so its failure was EAGAIN, ETIMEDOUT or EIO. */
        int64_t until = fresh_until(c, v);
        if (now->mono >= until && flight_failed(&v->flight, now->mono, NULL) &&
            now->mono < stale_until(c, v))
            until = v->flight.failed_until < stale_until(c, v) ? v->flight.failed_until
                                                               : stale_until(c, v);
        if (now->mono < until) {
            is_hit = 1;
            valid = until == INT64_MAX ? INT64_MAX : until - now->mono;
        } else {
            struct cache_version *nv = version_new(c, key);
            if (!nv) {
                v = NULL;
                goto out;
            }
            nv->entry = e;
            e->cur = nv;
            if (now->mono < stale_until(c, v)) {
                /* Kept, with its bytes, for a refresh that fails. */
                flight_forget(&v->flight);
                e->prev = v;
            } else {
                /* The stale window closed; a failure remembered beyond it still holds
                 * for the key (SPEC 6: error_ttl_s), so the new version carries it. */
                flight_carry(&nv->flight, &v->flight, now->mono);
                version_leave(c, v, &free_list);
            }
            v = nv;
        }
    }
    if (!is_hit)
        valid = vpath_is_final(key->end_ms, now->wall, c->params.settle_s) ? INT64_MAX : live_ms(c);
    if (ahead && is_hit) {
        v = NULL;
        goto out;
    }
    cache_version_ref(v);
    if (ahead)
        goto out;
    if (is_hit)
        c->hits++;
    else
        c->misses++;
out:
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
    if (hit)
        *hit = is_hit;
    if (valid_ms)
        *valid_ms = valid;
    return v;
}

struct cache_version *cache_get(struct cache *c, const struct cache_key *key,
                                const struct cache_clock *now, int *hit, int64_t *valid_ms)
{
    struct cache_version *v = get(c, key, now, 0, hit, valid_ms);
    if (!v)
        errno = ENOMEM;
    return v;
}

struct cache_version *cache_get_ahead(struct cache *c, const struct cache_key *key,
                                      const struct cache_clock *now)
{
    return get(c, key, now, 1, NULL, NULL);
}

enum cache_need cache_need(struct cache *c, struct cache_version *v, const struct cache_clock *now,
                           struct flight_waiter *w, int *err)
{
    enum cache_need need = CACHE_HAVE;
    pthread_mutex_lock(&c->lock);
    if (state_load(v) != CACHE_READY) {
        switch (flight_begin(&v->flight, now->mono, w, err)) {
        case FLIGHT_FETCH:
            need = CACHE_FETCH;
            break;
        case FLIGHT_WAIT:
            need = CACHE_WAIT;
            break;
        case FLIGHT_FAILED:
            need = CACHE_REMEMBERED;
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return need;
}

/* --- fetch completion (lock held) --------------------------------------------------- */

/* Where ready bytes came from: a fetch (final < 0: decided here from signed_at) or the
 * fleet's shared cache (its final flag, and a live version's time left). */
struct origin {
    int final;            /* -1: decide; else 0 or 1 */
    int64_t fresh_for_ms; /* -1: live_ttl_s; else at most that */
};

static void finish_ready(struct cache *c, struct cache_version *v, struct cache_blob *b,
                         int64_t signed_at, int64_t now, const struct origin *o,
                         struct cache_version **free_list)
{
    struct cache_entry *e = v->entry;
    /* The fetcher's reservation of len bytes becomes the version's bytes. */
    c->reserved -= b->len < c->reserved ? b->len : c->reserved;
    v->blob = b;
    v->fetched_at = signed_at;
    v->fetched_mono = now;
    v->final =
        o->final >= 0 ? o->final : vpath_is_final(v->key.end_ms, signed_at, c->params.settle_s);
    /* A live version from the shared cache has only the fleet's time left: it counts as
     * fetched that much earlier, so every freshness rule below stays the one of live_ms. */
    if (!v->final && o->fresh_for_ms >= 0 && o->fresh_for_ms < live_ms(c))
        v->fetched_mono = now - (live_ms(c) - o->fresh_for_ms);
    state_store(v, CACHE_READY);
    if (!e) {
        blob_pin(c, b); /* left the cache while being fetched */
        return;
    }
    blob_enter(c, b);
    c->nready++;
    if (e->prev) {
        version_leave(c, e->prev, free_list);
        e->prev = NULL;
    }
}

/* The fetch failed with err (positive). Returns 1 when v is served stale instead. */
static int finish_failed(struct cache *c, struct cache_version *v, int err, int64_t now,
                         struct cache_version **free_list)
{
    struct cache_entry *e = v->entry;
    struct cache_version *prev = e ? e->prev : NULL;

    if (prev && stale_errno(err) && now < stale_until(c, prev)) {
        atomic_fetch_add(&prev->blob->refs, 1);
        v->blob = prev->blob;
        v->fetched_at = prev->fetched_at;
        v->fetched_mono = prev->fetched_mono;
        v->final = prev->final;
        state_store(v, CACHE_READY);
        blob_enter(c, v->blob); /* before prev leaves: the shared bytes stay counted */
        c->nready++;
        e->prev = NULL;
        version_leave(c, prev, free_list);
        return 1;
    }
    state_store(v, CACHE_FAILED);
    if (prev && (drop_errno(err) || now >= stale_until(c, prev))) {
        e->prev = NULL;
        version_leave(c, prev, free_list);
    }
    return 0;
}

static void log_stale(const struct cache_version *v, int err, int64_t age_ms)
{
    log_warn("serving %s/%s %lld-%lld stale (fetched %lld ms ago): refresh failed: %s",
             v->key.dash_id, v->key.widget_id, (long long)v->key.start_ms, (long long)v->key.end_ms,
             (long long)age_ms, strerrorname_np(err) ? strerrorname_np(err) : "?");
}

static struct flight_waiter *complete(struct cache *c, struct cache_version *v, int rc,
                                      unsigned char *data, size_t len, int64_t signed_at,
                                      const struct origin *o, const struct cache_clock *now,
                                      int remember, int *result)
{
    struct cache_version *free_list = NULL;
    struct cache_blob *b = NULL;
    int stale_err = 0;
    int64_t age = 0;

    if (rc == 0 && !(b = calloc(1, sizeof *b))) {
        cache_release(c, len);
        free(data);
        rc = -ENOMEM;
    }
    if (rc > 0)
        rc = -EIO; /* a fetcher breaking the 0 / negative errno convention */

    pthread_mutex_lock(&c->lock);
    int64_t remember_ms = remember ? (int64_t)c->params.error_ttl_s * 1000 : 0;
    if (rc == 0) {
        atomic_init(&b->refs, 1);
        b->data = data;
        b->len = len;
        finish_ready(c, v, b, signed_at, now->mono, o, &free_list);
    } else if (finish_failed(c, v, -rc, now->mono, &free_list)) {
        stale_err = -rc;
        age = now->mono - v->fetched_mono;
    }
    /* A stale stand-in remembers the failure too: lookups keep getting it meanwhile. */
    struct flight_waiter *w = flight_end(&v->flight, rc, now->mono, remember_ms);
    *result = stale_err ? 0 : rc;
    /* Room for a max_bytes that shrank during the fetch. */
    (void)make_room(c, 0, 0, &free_list);
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
    if (stale_err && remember) /* a fast-fail: served silently (SPEC 6) */
        log_stale(v, stale_err, age);
    return w;
}

struct flight_waiter *cache_complete(struct cache *c, struct cache_version *v, int rc,
                                     unsigned char *data, size_t len, int64_t signed_at,
                                     const struct cache_clock *now, int remember, int *result)
{
    struct origin o = {-1, -1};
    return complete(c, v, rc, data, len, signed_at, &o, now, remember, result);
}

struct flight_waiter *cache_complete_shared(struct cache *c, struct cache_version *v,
                                            unsigned char *data, size_t len, int64_t fetched_at,
                                            int final, int64_t fresh_for_ms,
                                            const struct cache_clock *now, int *result)
{
    struct origin o = {final ? 1 : 0, fresh_for_ms < 0 ? -1 : fresh_for_ms}; /* -1: no expiry */
    return complete(c, v, 0, data, len, fetched_at, &o, now, 1, result);
}

/* --- reservations, charges and stats ------------------------------------------------ */

int cache_reserve(struct cache *c, size_t bytes)
{
    struct cache_version *free_list = NULL;
    pthread_mutex_lock(&c->lock);
    int rc = make_room(c, bytes, 1, &free_list);
    if (rc == 0)
        c->reserved += bytes;
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
    return rc;
}

void cache_release(struct cache *c, size_t bytes)
{
    pthread_mutex_lock(&c->lock);
    c->reserved -= bytes < c->reserved ? bytes : c->reserved;
    pthread_mutex_unlock(&c->lock);
}

void cache_charge(struct cache *c, size_t bytes)
{
    struct cache_version *free_list = NULL;
    pthread_mutex_lock(&c->lock);
    (void)make_room(c, bytes, 0, &free_list);
    c->charged += bytes;
    pthread_mutex_unlock(&c->lock);
    free_list_release(free_list);
}

void cache_uncharge(struct cache *c, size_t bytes)
{
    pthread_mutex_lock(&c->lock);
    c->charged -= bytes < c->charged ? bytes : c->charged;
    pthread_mutex_unlock(&c->lock);
}

void cache_get_stats(struct cache *c, struct cache_stats *out)
{
    pthread_mutex_lock(&c->lock);
    out->entries = c->nready;
    out->keys = c->nkeys;
    out->bytes = bytes_used(c);
    out->pinned_bytes = atomic_load(&c->pin->bytes);
    out->max_bytes = max_bytes(c);
    out->hits = c->hits;
    out->misses = c->misses;
    out->evictions = c->evictions;
    pthread_mutex_unlock(&c->lock);
}
