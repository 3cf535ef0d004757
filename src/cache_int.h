/* cache internals shared with tests/unit/test_cache.c only; not part of the contract. */
#ifndef INSIGHTFS_CACHE_INT_H
#define INSIGHTFS_CACHE_INT_H

#include "insightfs/cache.h"

/* Bytes one remembered failure counts in the byte bound (SPEC 7). */
#define CACHE_ERROR_BYTES 256u

/* Test hook: called with the cache lock held just before a thread in cache_resolve starts
 * waiting for another thread's fetch of v; waiters is how many threads now wait for v.
 * The hook must not call back into the cache. Pass NULL to remove it. Thread-safe. */
typedef void (*cache_wait_hook_fn)(void *arg, const struct cache_version *v, unsigned waiters);
void cache_set_wait_hook(struct cache *c, cache_wait_hook_fn hook, void *arg);

#endif
