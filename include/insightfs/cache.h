/* cache - bounded in-memory image versions: LRU, TTLs, refcounted bytes, single flight
 * and failure memory by key, all on clocks handed in.
 *
 * A key (dashboard id, widget id, start, end, resolution) names one image. Each fetch of
 * a key makes a new *version*: an immutable object with its own id (the filesystem uses
 * it as the inode number, never reused), whose bytes never change once ready. A version
 * is PENDING (no bytes yet), READY, or FAILED (its errno remembered for error_ttl_s, then
 * fetched again in place).
 *
 * The cache never fetches and never calls its caller. cache_need hands out a ticket
 * ("you fetch this"); the holder fetches outside the cache and calls cache_complete,
 * which returns the waiters that joined meanwhile for the caller to answer. Versions
 * that leave the cache while still referenced elsewhere (the kernel's inode) are queued
 * and handed out by cache_take_dropped, so the caller can have the kernel forget them.
 *
 * Bytes: ready versions' bytes, bodies being received (cache_reserve), every key's
 * records at their size, and what the caller charges for its own per-name records
 * (cache_charge) stay <= max_bytes; the least recently looked up keys go first.
 * Versions out of the cache but still referenced are "pinned", outside the bound.
 *
 * Clocks: every duration (live_ttl_s, error_ttl_s, stale_if_error_s, the 10 s idle
 * limit) runs on the CLOCK_MONOTONIC ms the caller passes in (mono); finality is decided
 * on the gateway-corrected wall clock (wall, Unix ms), at fetch (SPEC 7).
 * All functions are thread-safe.
 */
#ifndef INSIGHTFS_CACHE_H
#define INSIGHTFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "insightfs/flight.h"
#include "insightfs/vpath.h"

struct cache;
struct cache_version;

struct cache_key {
    const char *dash_id; /* borrowed by calls; versions keep their own copy */
    const char *widget_id;
    int64_t start_ms, end_ms;
    enum vpath_res res;
};

struct cache_params {
    int64_t max_bytes;
    int live_ttl_s, settle_s, error_ttl_s, stale_if_error_s;
};

struct cache_clock {
    int64_t mono; /* CLOCK_MONOTONIC ms */
    int64_t wall; /* Unix ms, gateway-corrected */
};

/* A pending or failed key nobody looked up for this long is dropped (SPEC 7). */
#define CACHE_IDLE_MS 10000

/* entries: ready versions held (at most one per key); keys: keys of every kind held
 * (with bytes, pending, failed); bytes: everything counted against max_bytes;
 * pinned_bytes: bytes of versions out of the cache but still referenced; hits, misses:
 * counted by cache_get; evictions: keys with bytes removed to stay within max_bytes. */
struct cache_stats {
    uint64_t entries, keys, bytes, pinned_bytes, max_bytes, hits, misses, evictions;
};

enum cache_state { CACHE_PENDING, CACHE_READY, CACHE_FAILED };

/* Returns a new cache, or NULL (ENOMEM). */
struct cache *cache_new(const struct cache_params *p) __attribute__((warn_unused_result));

/* Free the cache and its own references; versions still referenced elsewhere live on
 * until their last cache_version_unref (their bytes stay readable). Dropped versions not
 * taken are released. NULL-safe. No other call on c may be running. */
void cache_free(struct cache *c);

/* New limits and TTLs (SIGHUP). A smaller max_bytes evicts at once. */
void cache_set_params(struct cache *c, const struct cache_params *p);

/* Forget every key (endpoint or access key changed). Counters and reservations stay. A
 * version being fetched still completes (its waiters get its result), outside the cache. */
void cache_clear(struct cache *c);

/* Forget the remembered failures with errno err (positive), e.g. EACCES when the clock
 * offset changes (SPEC 6). */
void cache_forget_errors(struct cache *c, int err);

/* What a lookup of a name resolving to key should answer; never waits. Marks the key
 * used (LRU). Returns a new reference (release with cache_version_unref) to:
 *  - the key's ready version when it is fresh (final, or live and fetched less than
 *    live_ttl_s ago) or may be served stale (its refresh failed with EAGAIN, ETIMEDOUT or
 *    EIO, that failure is remembered, and the stale window is open): *hit = 1;
 *  - else the key's current pending or failed version, made PENDING if there is none (an
 *    older ready version is kept for stale-if-error): *hit = 0.
 * *valid_ms (may be NULL): how long this answer stays what the key resolves to: for a
 * hit, until it stops being fresh (or servable stale), INT64_MAX for a final version;
 * for a miss, live_ttl_s for a range that would be live if fetched now, else INT64_MAX.
 * Counts one hit or miss. Returns NULL only on ENOMEM. */
struct cache_version *cache_get(struct cache *c, const struct cache_key *key,
                                const struct cache_clock *now, int *hit, int64_t *valid_ms);

/* For readahead: the version of key that a fetch would fill, made PENDING if needed (a
 * new reference), or NULL when the key's version is fresh (or ENOMEM). Counts nothing
 * and does not mark the key used. */
struct cache_version *cache_get_ahead(struct cache *c, const struct cache_key *key,
                                      const struct cache_clock *now);

enum cache_need {
    CACHE_HAVE,       /* ready: its bytes may be read now */
    CACHE_FETCH,      /* the caller holds the ticket: fetch, then cache_complete */
    CACHE_WAIT,       /* being fetched: w (if any) joined, and is returned by cache_complete */
    CACHE_REMEMBERED, /* a failure is remembered: *err (positive errno) */
};

/* Make v's bytes available: see enum cache_need. w (may be NULL) joins the fetch with
 * CACHE_FETCH and CACHE_WAIT. A version that left the cache can still be fetched; it then
 * stays outside, its bytes pinned. */
enum cache_need cache_need(struct cache *c, struct cache_version *v, const struct cache_clock *now,
                           struct flight_waiter *w, int *err);

/* The ticket holder's fetch of v ended: rc 0 with data (malloc'd, taken over; exactly len
 * bytes reserved through cache_reserve, which the version takes over), len and
 * signed_at (the wall time the fetching try was signed), or a negative errno (data NULL).
 * remember: 0 for a failure that must not be remembered (the circuit breaker's
 * fast-fail). On EAGAIN, ETIMEDOUT or EIO a previous ready version still inside its
 * stale window is served instead (v becomes ready with its bytes; a warn line is
 * logged, except for a failure not remembered: the breaker's own `upstream down` line
 * speaks for those, and SPEC 6 serves stale silently while it is open). Stores *result: 0 (v is ready) or the negative errno the waiters get. Returns
 * the waiters (flight.h), detached, for the caller to answer with *result. */
struct flight_waiter *cache_complete(struct cache *c, struct cache_version *v, int rc,
                                     unsigned char *data, size_t len, int64_t signed_at,
                                     const struct cache_clock *now, int remember, int *result);

/* cache_complete (rc 0) for bytes the fleet's shared cache gave (SPEC 13): they become a
 * version like fetched ones, but with the fetched_at (Unix ms) and final flag the fleet
 * recorded, and a live version stays fresh for fresh_for_ms from now (the value's time
 * left in Redis; at most live_ttl_s; negative: a key without expiry, live_ttl_s), so no
 * wall clock decides expiry. data, len and the reservation as cache_complete's.
 * Returns the waiters, *result as cache_complete. */
struct flight_waiter *cache_complete_shared(struct cache *c, struct cache_version *v,
                                            unsigned char *data, size_t len, int64_t fetched_at,
                                            int final, int64_t fresh_for_ms,
                                            const struct cache_clock *now, int *result);

/* Reserve bytes for a body being received, evicting the least recently used keys to
 * make room. Returns 0, or -ENOMEM, evicting nothing, when no room can be made.
 * cache_release gives back bytes reserved and not taken over by a version. */
int cache_reserve(struct cache *c, size_t bytes) __attribute__((warn_unused_result));
void cache_release(struct cache *c, size_t bytes);

/* Count the caller's own per-name records (inodes, names, kept requests, listings) in
 * the bound, evicting least recently used keys to make room; never fails (records the
 * kernel holds cannot be refused). cache_uncharge takes them back. */
void cache_charge(struct cache *c, size_t bytes);
void cache_uncharge(struct cache *c, size_t bytes);

/* Drop pending and failed keys idle for CACHE_IDLE_MS (not being fetched, no failure
 * still remembered). Call about once a second. */
void cache_sweep(struct cache *c, int64_t now_mono);

/* The versions that left the cache while referenced elsewhere, since the last call: a
 * list through cache_dropped_next, each holding one reference the caller now owns. */
struct cache_version *cache_take_dropped(struct cache *c);
struct cache_version *cache_dropped_next(const struct cache_version *v);

void cache_get_stats(struct cache *c, struct cache_stats *out);

/* Version accessors: thread-safe; bytes, len, fetched_at and final never change once
 * ready. */
void cache_version_ref(struct cache_version *v);
void cache_version_unref(struct cache_version *v);        /* NULL-safe */
uint64_t cache_version_id(const struct cache_version *v); /* unique, from 1 up, never reused */
enum cache_state cache_version_state(const struct cache_version *v);
const struct cache_key *cache_version_key(const struct cache_version *v);
/* Ready versions only: the bytes and their length (NULL and 0 otherwise). */
const unsigned char *cache_version_data(const struct cache_version *v, size_t *len);
int64_t cache_version_fetched_at(const struct cache_version *v); /* signing time, Unix ms */
int cache_version_final(const struct cache_version *v);          /* 1 final, 0 live */
/* The version record's own heap size (not its image bytes), for the caller's accounting
 * of versions it keeps after they left the cache. */
size_t cache_version_bytes(const struct cache_version *v);

#endif
