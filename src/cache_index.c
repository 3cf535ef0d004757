/* cache_index - the cache's bookkeeping structures: the key hash and chained table, the
 * LRU list of ready versions and the list of remembered failures (cache_int.h). Every
 * function here runs with the cache lock held and never blocks, allocates only to grow
 * the table, and knows nothing of fetching: the rules are in cache.c.
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

/* --- LRU and failure lists (lock held) ---------------------------------------------- */

void cache_lru_unlink(struct cache *c, struct cache_version *v)
{
    if (v->lru_prev)
        v->lru_prev->lru_next = v->lru_next;
    else
        c->lru_head = v->lru_next;
    if (v->lru_next)
        v->lru_next->lru_prev = v->lru_prev;
    else
        c->lru_tail = v->lru_prev;
    v->lru_prev = v->lru_next = NULL;
    v->in_lru = 0;
    c->nready--;
}

void cache_lru_push(struct cache *c, struct cache_version *v)
{
    v->lru_prev = c->lru_tail;
    v->lru_next = NULL;
    if (c->lru_tail)
        c->lru_tail->lru_next = v;
    else
        c->lru_head = v;
    c->lru_tail = v;
    v->in_lru = 1;
    c->nready++;
}

void cache_lru_touch(struct cache *c, struct cache_version *v)
{
    if (v->in_lru && c->lru_tail != v) {
        cache_lru_unlink(c, v);
        cache_lru_push(c, v);
    }
}

void cache_fail_unlink(struct cache *c, struct cache_version *v)
{
    if (v->fail_prev)
        v->fail_prev->fail_next = v->fail_next;
    else
        c->fail_head = v->fail_next;
    if (v->fail_next)
        v->fail_next->fail_prev = v->fail_prev;
    else
        c->fail_tail = v->fail_prev;
    v->fail_prev = v->fail_next = NULL;
    v->in_fail = 0;
    c->nfail--;
}

/* Remember err for v from now on; counted in the bound while v is in the cache. */
void cache_fail_record(struct cache *c, struct cache_version *v, int err, int64_t now)
{
    v->err = err;
    v->failed_at = now;
    v->has_fail = 1;
    if (v->in_fail)
        cache_fail_unlink(c, v);
    if (!v->entry)
        return;
    v->fail_prev = c->fail_tail;
    v->fail_next = NULL;
    if (c->fail_tail)
        c->fail_tail->fail_next = v;
    else
        c->fail_head = v;
    c->fail_tail = v;
    v->in_fail = 1;
    c->nfail++;
}

void cache_fail_forget(struct cache *c, struct cache_version *v)
{
    if (v->in_fail)
        cache_fail_unlink(c, v);
    v->has_fail = 0;
}

int cache_remembered(const struct cache *c, const struct cache_version *v, int64_t now)
{
    return v->has_fail && now < v->failed_at + (int64_t)c->params.error_ttl_s * 1000;
}

/* Forget expired failures. The list is in failure order, so stop at the first one still
 * remembered (a clock stepping back only delays the accounting, never the answers). */
void cache_fail_sweep(struct cache *c, int64_t now)
{
    while (c->fail_head && !cache_remembered(c, c->fail_head, now))
        cache_fail_forget(c, c->fail_head);
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
}

void cache_table_remove(struct cache *c, struct cache_entry *e)
{
    struct cache_entry **pp = &c->tab[e->hash % c->nbuckets];
    while (*pp != e)
        pp = &(*pp)->next;
    *pp = e->next;
    c->nkeys--;
    free(e);
}
