/* cache - bounded in-memory image versions: LRU + TTL, refcounted, single flight.
 *
 * A key (dashboard id, widget id, start, end, resolution) names one image. Each fetch
 * of a key makes a new *version*: an immutable object with its own id (the filesystem
 * uses it as the inode number, never reused), whose bytes never change once ready.
 * A version is PENDING (no bytes yet; fetched by cache_resolve in single flight),
 * READY, or FAILED (its errno remembered for error_ttl_s, then fetched again in place).
 *
 * Bytes: the sum of ready versions held by the cache, bodies being received (reserved
 * through cache_reserve) and remembered errors (256 bytes each) stays <= max_bytes; the
 * least recently used ready versions are evicted to make room. An evicted version lives
 * on while references remain (the kernel's inode); those bytes are "pinned".
 * All functions are thread-safe. No cache lock is held while a fetcher runs.
 */
#ifndef INSIGHTFS_CACHE_H
#define INSIGHTFS_CACHE_H

#include <stddef.h>
#include <stdint.h>

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

/* entries: ready versions held by the cache (at most one per key, so also the keys with
 * cached bytes); bytes: ready versions' bytes (a buffer shared by two versions counted
 * once) + reservations + 256 per remembered failure; pinned_bytes: bytes of versions out
 * of the cache but still referenced; hits, misses: counted by cache_get; evictions:
 * versions removed to stay within max_bytes (not those replaced, dropped or cleared). */
struct cache_stats {
    uint64_t entries, bytes, pinned_bytes, max_bytes, hits, misses, evictions;
};

enum cache_state { CACHE_PENDING, CACHE_READY, CACHE_FAILED };

/* Fetches one key's bytes, outside every cache lock, in the thread that called
 * cache_resolve. Reserves memory for the body through cache_reserve(c, ...) as it grows
 * and on success leaves exactly *len bytes reserved (the version takes them over); on
 * failure it has released everything. Returns 0 with *data (malloc'd, the cache takes
 * ownership), *len and *signed_at_ms, or a negative errno. */
struct cache_fetcher {
    int (*fetch)(void *arg, struct cache *c, const struct cache_key *key, unsigned char **data,
                 size_t *len, int64_t *signed_at_ms);
    void *arg;
};

/* Called (outside cache locks) when the cache drops a version that is still referenced,
 * so its owner can ask the kernel to forget it. May be NULL. "Drops" is any way out of the
 * cache: evicted for max_bytes, replaced by the key's newer ready version, dropped after
 * a denied refresh, or cache_clear / cache_set_params (not cache_free). It runs in the
 * thread whose cache call dropped the version, which may be a fetcher inside
 * cache_reserve: it must not block on FUSE (queue the invalidation instead). The version
 * is valid for the call; take a reference to keep it. */
typedef void (*cache_evict_fn)(void *arg, struct cache_version *v);

/* now_ms: the clock TTLs and finality use (Unix ms: realtime + gateway offset).
 * Returns a cache or NULL (ENOMEM). */
struct cache *cache_new(const struct cache_params *p, int64_t (*now_ms)(void *arg), void *clock_arg,
                        cache_evict_fn on_evict, void *evict_arg);
/* Free the cache and its own references; versions still referenced elsewhere live on
 * until their last cache_version_unref (their bytes stay readable). NULL-safe. No other
 * call on c may be running or start (in particular no fetch); on_evict is not called. */
void cache_free(struct cache *c);

/* New limits and TTLs (SIGHUP). A smaller max_bytes evicts at once. */
void cache_set_params(struct cache *c, const struct cache_params *p);

/* Forget every key (endpoint or access key changed). Referenced versions live on. Counters
 * and the reservations of bodies in flight stay. A version being fetched meanwhile still
 * completes (its waiters get its result) but outside the cache, its bytes pinned. */
void cache_clear(struct cache *c);

/* Forget the remembered failures with errno err (positive), e.g. EACCES when the clock
 * offset changes (SPEC 6): the next cache_resolve of those versions fetches again. */
void cache_forget_errors(struct cache *c, int err);

/* What a lookup of a name resolving to key should answer; never waits.
 * Returns a new reference (release with cache_version_unref) to:
 *  - the key's ready version when it is fresh (final, or live and fetched less than
 *    live_ttl_s ago): *hit = 1;
 *  - a ready version being served stale: the key's last refresh failed with EAGAIN,
 *    ETIMEDOUT or EIO, that failure is still remembered, and now < fetched_at +
 *    live_ttl_s + stale_if_error_s: *hit = 1;
 *  - else the key's current pending or failed version, created PENDING if there is none
 *    (the older ready version is kept for stale-if-error): *hit = 0.
 * Counts one hit or miss. Returns NULL only on ENOMEM. */
struct cache_version *cache_get(struct cache *c, const struct cache_key *key, int *hit);

/* Make v ready. Ready: 0 at once. Being fetched by another thread: wait for it (until
 * deadline_mono_ms, CLOCK_MONOTONIC ms; then -ETIMEDOUT). Failed with the error still
 * remembered: that errno at once. Otherwise fetch it now in this thread with f.
 * When the fetch fails with EAGAIN, ETIMEDOUT or EIO and the key's previous ready version
 * may be served stale (see cache_get), v becomes ready with that version's bytes and
 * fetched_at, and 0 is returned (a warn line is logged). After EACCES, ENOENT or EINVAL
 * the previous version is dropped. Every thread that waited for one fetch gets that fetch's
 * result. A version that left the cache (cache_clear) can still be resolved: it is fetched
 * as above but stays out of the cache. A ready version resolved counts as used (LRU).
 * Returns 0 or a negative errno (-EINVAL if a fetch is needed and f is NULL). */
int cache_resolve(struct cache *c, struct cache_version *v, const struct cache_fetcher *f,
                  int64_t deadline_mono_ms) __attribute__((warn_unused_result));

/* Reserve bytes for a body being received, evicting LRU versions (then, if that is not
 * enough, the oldest remembered failures) to make room. Returns 0, or -ENOMEM, evicting
 * nothing, when even an empty cache could not hold them next to the other reservations.
 * cache_release gives back bytes reserved and not taken over by a version. */
int cache_reserve(struct cache *c, size_t bytes) __attribute__((warn_unused_result));
void cache_release(struct cache *c, size_t bytes);

void cache_get_stats(struct cache *c, struct cache_stats *out);

/* Version accessors: thread-safe; bytes, len, fetched_at and final never change once
 * ready. */
void cache_version_ref(struct cache_version *v);
void cache_version_unref(struct cache_version *v);        /* NULL-safe */
uint64_t cache_version_id(const struct cache_version *v); /* unique, from 1 up, never reused */
enum cache_state cache_version_state(struct cache_version *v);
const struct cache_key *cache_version_key(const struct cache_version *v);
/* Ready versions only: the bytes and their length. */
const unsigned char *cache_version_data(const struct cache_version *v, size_t *len);
int64_t cache_version_fetched_at(const struct cache_version *v); /* signing time, Unix ms */
int cache_version_final(const struct cache_version *v);          /* 1 final, 0 live */

#endif
