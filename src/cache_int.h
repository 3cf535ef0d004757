/* cache internals shared by cache.c, cache_index.c and tests/unit/test_cache.c; not part
 * of the contract. The invariants and the locking are in cache.c's opening comment.
 */
#ifndef INSIGHTFS_CACHE_INT_H
#define INSIGHTFS_CACHE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "insightfs/cache.h"

/* Bytes one remembered failure counts in the byte bound (SPEC 7). */
#define CACHE_ERROR_BYTES 256u

/* Test hook: called with the cache lock held just before a thread in cache_resolve starts
 * waiting for another thread's fetch of v; waiters is how many threads now wait for v.
 * The hook must not call back into the cache. Pass NULL to remove it. Thread-safe. */
typedef void (*cache_wait_hook_fn)(void *arg, const struct cache_version *v, unsigned waiters);
void cache_set_wait_hook(struct cache *c, cache_wait_hook_fn hook, void *arg);

/* Pinned byte counter shared by the cache and the blobs it pinned. */
struct cache_pin {
    atomic_long refs;
    atomic_uint_least64_t bytes;
};

struct cache_blob {
    atomic_long refs; /* versions using this buffer */
    unsigned char *data;
    size_t len;
    unsigned in_cache;     /* protected by cache->lock: in-cache versions using it */
    struct cache_pin *pin; /* set under cache->lock when pinned; read by the last unref */
};

struct cache_entry;

struct cache_version {
    atomic_long refs;
    uint64_t id;
    struct cache_key key; /* strings point into names[] */
    int state;            /* enum cache_state; __atomic release store / acquire load */
    /* Written once before state becomes READY, then immutable. */
    struct cache_blob *blob;
    int64_t fetched_at;
    int final;
    pthread_cond_t done; /* broadcast when a fetch of this version ends */
    /* protected by cache->lock */
    int fetching;
    uint64_t fetch_gen;
    unsigned waiters;
    int err;           /* the remembered failure's errno (positive) */
    int has_fail;      /* a failure is remembered (see remembered()) */
    int64_t failed_at; /* Unix ms, injected clock */
    struct cache_entry *entry;
    struct cache_version *lru_prev, *lru_next;
    int in_lru;
    struct cache_version *fail_prev, *fail_next;
    int in_fail;
    struct cache_version *drop_next;
    int drop_notify;
    char names[];
};

struct cache_entry {
    struct cache_entry *next; /* hash chain */
    uint64_t hash;
    struct cache_key key; /* strings point into names[] */
    struct cache_version *cur;
    struct cache_version *prev;
    char names[];
};

/* Versions that left the cache under the lock; released (and reported) after it. */
struct cache_drops {
    struct cache_version *head;
};

struct cache {
    pthread_mutex_t lock;
    pthread_condattr_t condattr; /* CLOCK_MONOTONIC, for every version's cond */
    int64_t (*now_ms)(void *arg);
    void *clock_arg;
    cache_evict_fn on_evict;
    void *evict_arg;
    struct cache_pin *pin;
    /* protected by lock */
    struct cache_params params;
    struct cache_entry **tab;
    size_t nbuckets, nkeys;
    struct cache_version *lru_head, *lru_tail; /* head: least recently used */
    struct cache_version *fail_head, *fail_tail;
    uint64_t ready_bytes, reserved, nfail, nready;
    uint64_t next_id, hits, misses, evictions;
    cache_wait_hook_fn wait_hook;
    void *wait_hook_arg;
};

/* ---- cache_index.c: keys, the table and the two lists; all "lock held" ---- */

/* FNV-1a over every field of the key. */
uint64_t cache_key_hash(const struct cache_key *k);
/* Bytes cache_key_copy needs for the key's two strings. */
size_t cache_key_names_len(const struct cache_key *key);
/* Copy key into out, its strings into names (cache_key_names_len bytes). */
void cache_key_copy(struct cache_key *out, char *names, const struct cache_key *key);

/* The entry of key (hash = cache_key_hash(key)), or NULL. */
struct cache_entry *cache_table_find(struct cache *c, const struct cache_key *key, uint64_t hash);
/* Add e (not in the table); the buckets double past a load of 1 (kept on ENOMEM). */
void cache_table_insert(struct cache *c, struct cache_entry *e);
/* Unlink e from the table and free it (its versions are the caller's business). */
void cache_table_remove(struct cache *c, struct cache_entry *e);

/* The LRU list of ready in-cache versions (head: least recently used); nready counts it. */
void cache_lru_push(struct cache *c, struct cache_version *v);
void cache_lru_unlink(struct cache *c, struct cache_version *v);
void cache_lru_touch(struct cache *c, struct cache_version *v); /* to the tail, if listed */

/* Remembered failures. record: v failed with err (positive) at now; counted in the byte
 * bound (failure list, in failure order) while v is in the cache. forget: no longer
 * remembered. remembered: within error_ttl_s of the failure. sweep: forget every expired
 * one. unlink: off the list, still remembered (v leaves the cache). */
void cache_fail_record(struct cache *c, struct cache_version *v, int err, int64_t now);
void cache_fail_forget(struct cache *c, struct cache_version *v);
int cache_remembered(const struct cache *c, const struct cache_version *v, int64_t now);
void cache_fail_sweep(struct cache *c, int64_t now);
void cache_fail_unlink(struct cache *c, struct cache_version *v);

#endif
