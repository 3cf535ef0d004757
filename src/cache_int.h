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
#include "insightfs/flight.h"
#include "insightfs/slab.h"

/* Heap overhead of one allocation, added to each record's counted size. */
#define CACHE_MALLOC_OVERHEAD 16u

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
    /* Written before state becomes READY, then immutable. */
    struct cache_blob *blob;
    int64_t fetched_at;   /* wall ms of the signing */
    int64_t fetched_mono; /* CLOCK_MONOTONIC ms when it became ready */
    int final;
    /* protected by cache->lock */
    struct flight flight;
    struct cache_entry *entry;       /* NULL once out of the cache */
    struct cache_version *drop_next; /* on the dropped list */
    char names[];
};

struct cache_entry {
    struct cache_entry *next; /* hash chain */
    uint64_t hash;
    struct cache_key key; /* strings point into names[] */
    struct cache_version *cur;
    struct cache_version *prev;
    struct cache_entry *lru_prev, *lru_next; /* every entry is on the LRU list */
    int64_t used_mono;                       /* last looked up */
    size_t cost;                             /* counted in meta_bytes */
    char names[];
};

struct cache {
    pthread_mutex_t lock;
    struct cache_pin *pin;
    struct slab_pool *pool; /* entries and versions (slab.h): freed heap goes back */
    /* protected by lock */
    struct cache_params params;
    struct cache_entry **tab;
    size_t nbuckets, nkeys;
    struct cache_entry *lru_head, *lru_tail; /* head: least recently used */
    uint64_t ready_bytes, reserved, meta_bytes, charged, nready;
    uint64_t next_id, hits, misses, evictions;
    struct cache_version *dropped; /* left the cache while referenced: cache_take_dropped */
};

/* ---- cache_index.c: keys, the table and the LRU list; all "lock held" ---- */

/* FNV-1a over every field of the key. */
uint64_t cache_key_hash(const struct cache_key *k);
/* Bytes cache_key_copy needs for the key's two strings. */
size_t cache_key_names_len(const struct cache_key *key);
/* Copy key into out, its strings into names (cache_key_names_len bytes). */
void cache_key_copy(struct cache_key *out, char *names, const struct cache_key *key);

/* The entry of key (hash = cache_key_hash(key)), or NULL. */
struct cache_entry *cache_table_find(struct cache *c, const struct cache_key *key, uint64_t hash);
/* Add e (not in the table) and put it at the LRU's tail; the buckets double past a load
 * of 1 (kept on ENOMEM). */
void cache_table_insert(struct cache *c, struct cache_entry *e);
/* Unlink e from the table and the LRU and free it (its versions are the caller's). */
void cache_table_remove(struct cache *c, struct cache_entry *e);
/* e was looked up: to the LRU's tail. */
void cache_lru_touch(struct cache *c, struct cache_entry *e);

#endif
