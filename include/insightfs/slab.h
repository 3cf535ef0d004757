/* slab - an allocator for small records that die roughly in the order they were born
 * (a cache's keys, the kernel's inodes, queued invalidations), so that memory freed by a
 * burst of names goes back to the system (SPEC 7: "allocation that does not fragment").
 *
 * Records are carved from 64 KiB blocks mapped from the system, always from the newest
 * block; a freed record only lowers its block's count, and a block whose count reaches
 * zero is unmapped at once. Holes are never reused, so long-lived survivors pin at most
 * the blocks they sit in, and records of one age share blocks. A record larger than a
 * quarter block gets a block of its own. Records are zeroed and 16-byte aligned.
 *
 * A pool is owned by one module and released with slab_pool_release; it lives on until
 * its last record is freed, so records may outlive their owner (a version the kernel
 * still holds). Every function is thread-safe.
 */
#ifndef INSIGHTFS_SLAB_H
#define INSIGHTFS_SLAB_H

#include <stddef.h>

struct slab_pool;

/* A new pool, or NULL (ENOMEM). */
struct slab_pool *slab_pool_new(void) __attribute__((warn_unused_result));

/* The owner is done with p (NULL-safe); its memory goes when its last record does. */
void slab_pool_release(struct slab_pool *p);

/* A zeroed record of n bytes (n > 0) from p, or NULL (ENOMEM). Free with slab_free. */
void *slab_alloc(struct slab_pool *p, size_t n) __attribute__((warn_unused_result, malloc));

/* A copy of s in p, or NULL (ENOMEM). Free with slab_free. */
char *slab_strdup(struct slab_pool *p, const char *s) __attribute__((warn_unused_result));

/* Free a record of any pool (NULL-safe). */
void slab_free(void *ptr);

/* Bytes mapped by p now (for tests and stats). */
size_t slab_pool_mapped(struct slab_pool *p);

#endif
