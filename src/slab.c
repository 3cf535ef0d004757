/* slab - age-ordered blocks for small records (the contract and why are in slab.h).
 *
 * Layout: a block is SLAB_BLOCK bytes (or a multiple, for a big record) aligned to
 * SLAB_BLOCK, mapped with mmap; its header sits at its start, so the block of any record
 * is the record's address rounded down to SLAB_BLOCK. The pool allocates by bumping an
 * offset in its current block; when the record does not fit, a new block becomes
 * current (the old one is unmapped when its last record goes). A big record (over a
 * quarter block) gets a block of its own, whose header is at the start of its first
 * SLAB_BLOCK, where the record begins too.
 *
 * Locking: the pool's mutex guards its current block and every block's count; the pool
 * itself is counted (its owner + one per block), so the last slab_free of a released
 * pool frees it.
 */
#include "insightfs/slab.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define SLAB_BLOCK ((size_t)64 * 1024)
#define SLAB_ALIGN 16u

struct slab_block {
    struct slab_pool *pool;
    size_t size; /* bytes mapped */
    size_t used; /* bump offset (current block) */
    size_t live; /* records not freed; protected by pool->mu */
    int current; /* protected by pool->mu */
};

#define SLAB_HEADER (((sizeof(struct slab_block) + SLAB_ALIGN - 1) / SLAB_ALIGN) * SLAB_ALIGN)

struct slab_pool {
    pthread_mutex_t mu;
    struct slab_block *cur; /* protected by mu */
    size_t refs;            /* protected by mu: the owner + one per block */
    size_t mapped;          /* protected by mu */
};

struct slab_pool *slab_pool_new(void)
{
    struct slab_pool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->refs = 1;
    return p;
}

/* mu held; returns 1 when p must be freed (after unlocking). */
static int pool_unref_locked(struct slab_pool *p)
{
    return --p->refs == 0;
}

static void pool_destroy(struct slab_pool *p)
{
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* An aligned mapping of size bytes (a multiple of SLAB_BLOCK), or NULL. */
static void *map_aligned(size_t size)
{
    size_t span = size + SLAB_BLOCK;
    char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    uintptr_t start = ((uintptr_t)raw + SLAB_BLOCK - 1) & ~(uintptr_t)(SLAB_BLOCK - 1);
    size_t head = start - (uintptr_t)raw;
    if (head)
        munmap(raw, head);
    size_t tail = span - head - size;
    if (tail)
        munmap((char *)start + size, tail);
    return (void *)start;
}

/* mu held: a new block of size bytes for p, or NULL. */
static struct slab_block *block_new(struct slab_pool *p, size_t size)
{
    struct slab_block *b = map_aligned(size);
    if (!b)
        return NULL;
    b->pool = p;
    b->size = size;
    b->used = SLAB_HEADER;
    p->refs++;
    p->mapped += size;
    return b;
}

/* mu held: b has no record left and is not current: unmap it. Returns 1 when the pool
 * must be freed. */
static int block_drop(struct slab_pool *p, struct slab_block *b)
{
    p->mapped -= b->size;
    munmap(b, b->size);
    return pool_unref_locked(p);
}

void *slab_alloc(struct slab_pool *p, size_t n)
{
    size_t need = (n + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN;
    void *r = NULL;
    if (n == 0)
        return NULL;
    pthread_mutex_lock(&p->mu);
    if (need > SLAB_BLOCK / 4) {
        size_t size = (SLAB_HEADER + need + SLAB_BLOCK - 1) / SLAB_BLOCK * SLAB_BLOCK;
        struct slab_block *b = block_new(p, size);
        if (b) {
            b->live = 1;
            r = (char *)b + SLAB_HEADER;
        }
        goto out;
    }
    struct slab_block *b = p->cur;
    if (!b || b->used + need > b->size) {
        struct slab_block *nb = block_new(p, SLAB_BLOCK);
        if (!nb)
            goto out;
        if (b) {
            b->current = 0;
            if (b->live == 0)
                (void)block_drop(p, b); /* the owner's reference keeps the pool */
        }
        nb->current = 1;
        p->cur = b = nb;
    }
    r = (char *)b + b->used;
    b->used += need;
    b->live++;
out:
    pthread_mutex_unlock(&p->mu);
    return r; /* fresh mappings are zeroed, and bytes are never handed out twice */
}

char *slab_strdup(struct slab_pool *p, const char *s)
{
    size_t n = strlen(s) + 1;
    char *c = slab_alloc(p, n);
    if (c)
        memcpy(c, s, n);
    return c;
}

void slab_free(void *ptr)
{
    if (!ptr)
        return;
    struct slab_block *b = (struct slab_block *)((uintptr_t)ptr & ~(uintptr_t)(SLAB_BLOCK - 1));
    struct slab_pool *p = b->pool;
    int dead = 0;
    pthread_mutex_lock(&p->mu);
    if (--b->live == 0 && !b->current)
        dead = block_drop(p, b);
    pthread_mutex_unlock(&p->mu);
    if (dead)
        pool_destroy(p);
}

void slab_pool_release(struct slab_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    /* The current block stays current only while someone may allocate from it. */
    int dead = 0;
    struct slab_block *b = p->cur;
    p->cur = NULL;
    if (b) {
        b->current = 0;
        if (b->live == 0)
            dead = block_drop(p, b);
    }
    dead = pool_unref_locked(p) || dead;
    pthread_mutex_unlock(&p->mu);
    if (dead)
        pool_destroy(p);
}

size_t slab_pool_mapped(struct slab_pool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t m = p->mapped;
    pthread_mutex_unlock(&p->mu);
    return m;
}
