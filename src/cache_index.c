/* cache_index - the cache's bookkeeping structures: the key hash and chained table and
 * the LRU list of entries (cache_int.h). Every
 * function here runs with the cache lock held and never blocks, allocates only to grow
 * the table, and knows nothing of fetching: the rules are in cache.c. Every entry is in
 * the table and on the LRU list together.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache_int.h"

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull; /* FNV-1a */
    }
    return h;
}

uint64_t cache_key_hash(const struct cache_key *k)
{
    uint64_t h = 14695981039346656037ull;
    int res = (int)k->res;
    h = hash_bytes(h, k->dash_id, strlen(k->dash_id) + 1);
    h = hash_bytes(h, k->widget_id, strlen(k->widget_id) + 1);
    h = hash_bytes(h, &k->start_ms, sizeof k->start_ms);
    h = hash_bytes(h, &k->end_ms, sizeof k->end_ms);
    return hash_bytes(h, &res, sizeof res);
}

static int key_equal(const struct cache_key *a, const struct cache_key *b)
{
    return a->start_ms == b->start_ms && a->end_ms == b->end_ms && a->res == b->res &&
           strcmp(a->dash_id, b->dash_id) == 0 && strcmp(a->widget_id, b->widget_id) == 0;
}

/* Copy key's strings into names (sized by key_names_len) and point out at them. */
void cache_key_copy(struct cache_key *out, char *names, const struct cache_key *key)
{
    size_t d = strlen(key->dash_id) + 1;
    memcpy(names, key->dash_id, d);
    memcpy(names + d, key->widget_id, strlen(key->widget_id) + 1);
    *out = *key;
    out->dash_id = names;
    out->widget_id = names + d;
}

size_t cache_key_names_len(const struct cache_key *key)
{
    return strlen(key->dash_id) + strlen(key->widget_id) + 2;
}

/* --- the LRU list (lock held) ---------------------------------------------------- */

static void lru_unlink(struct cache *c, struct cache_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_push(struct cache *c, struct cache_entry *e)
{
    e->lru_prev = c->lru_tail;
    e->lru_next = NULL;
    if (c->lru_tail)
        c->lru_tail->lru_next = e;
    else
        c->lru_head = e;
    c->lru_tail = e;
}

void cache_lru_touch(struct cache *c, struct cache_entry *e)
{
    if (c->lru_tail != e) {
        lru_unlink(c, e);
        lru_push(c, e);
    }
}

/* --- entries and the table (lock held) ---------------------------------------------- */

struct cache_entry *cache_table_find(struct cache *c, const struct cache_key *key, uint64_t hash)
{
    for (struct cache_entry *e = c->tab[hash % c->nbuckets]; e; e = e->next)
        if (e->hash == hash && key_equal(&e->key, key))
            return e;
    return NULL;
}

/* Double the buckets when the load passes 1; on ENOMEM keep the longer chains. */
static void table_grow(struct cache *c)
{
    size_t n = c->nbuckets * 2;
    struct cache_entry **tab = calloc(n, sizeof *tab);
    if (!tab)
        return;
    for (size_t i = 0; i < c->nbuckets; i++) {
        struct cache_entry *e = c->tab[i];
        while (e) {
            struct cache_entry *next = e->next;
            e->next = tab[e->hash % n];
            tab[e->hash % n] = e;
            e = next;
        }
    }
    free(c->tab);
    c->tab = tab;
    c->nbuckets = n;
}

void cache_table_insert(struct cache *c, struct cache_entry *e)
{
    if (c->nkeys >= c->nbuckets)
        table_grow(c);
    e->next = c->tab[e->hash % c->nbuckets];
    c->tab[e->hash % c->nbuckets] = e;
    c->nkeys++;
    lru_push(c, e);
}

void cache_table_remove(struct cache *c, struct cache_entry *e)
{
    struct cache_entry **pp = &c->tab[e->hash % c->nbuckets];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    c->nkeys--;
    lru_unlink(c, e);
    slab_free(e);
}
