/* fs_ino - the inode table of the fs module: every inode the kernel may name.
 *
 * Numbers (SPEC 12.2): the root (1) and /.insightfs (2) are fixed; dashboard, widget and
 * days/ directories get a stable number per (kind, dashboard id, widget id) for the life
 * of the daemon, from FS_INO_FIRST_DYNAMIC up; /.insightfs files are snapshots taken at
 * lookup, one number per lookup from the same counter; an image version's inode is
 * FS_IMAGE_BASE + the cache's version id, never reused while the daemon runs.
 *
 * Lifetime: each inode counts the lookups the kernel holds. Image and snapshot inodes
 * are freed when FORGET brings that count to 0; each image inode holds one reference to
 * its version, so eviction never frees bytes the kernel can still reach. Directory
 * inodes live until the table is freed (they are few).
 *
 * Image inodes also remember every (parent, name) the kernel got them under (an image
 * has many spellings: day name, @auto, epoch, ISO...), so that when the cache evicts
 * their version the fs can invalidate every entry that points at it (SPEC 12.2): a name
 * left out would keep the inode, and its version's bytes, until the kernel's entry
 * timeout. Each name is charged at its size, so max_bytes bounds them (SPEC 7).
 *
 * Storage: a hash of chains by number (struct chains: grown 4x when it holds more than
 * 2 inodes per bucket; a failed growth keeps the longer chains, lookups stay correct).
 * Image and snapshot inodes and remembered names churn, so they come from an
 * age-ordered slab pool (slab.h); directory inodes and their ids live as long as the
 * table, so they come from malloc: in the pool each would pin a 64 KiB block of records
 * the kernel has forgotten. Directory inodes are also indexed by (kind, dashboard id,
 * widget id) in a second hash of chains, so finding one (every directory LOOKUP, every
 * child listed by OPENDIR of / or a dashboard) never walks the image inodes under the
 * lock.
 *
 * Memory (SPEC 7): image inodes and the names they remember are charged to the cache's
 * byte bound (cache_charge) while they live, so the number of names the kernel holds is
 * bounded by max_bytes like everything else. /.insightfs snapshots are not: charging
 * them would change the very counters they show, and they are few and small.
 *
 * Locking: lock guards the buckets, the counts, next_ino, and every inode's nlookup, next
 * and names. It is held only for table work, never across a call into another module.
 */
#include "fs_int.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "insightfs/slab.h"

/* A hash of chains of inodes, linked through the inode member at link_off; an inode's
 * bucket is key(n) masked to the number of buckets (a power of 2). Grown 4x when it holds
 * more than 2 inodes per bucket; a failed growth keeps the longer chains, and lookups
 * stay correct. Used twice: every inode by number, directory inodes by their ids. */
struct chains {
    struct fs_inode **b;
    size_t n_b;
    size_t count;
    size_t link_off;
    uint64_t (*key)(const struct fs_inode *n);
};

static struct fs_inode **link_of(const struct chains *c, struct fs_inode *n)
{
    return (struct fs_inode **)((char *)n + c->link_off);
}

/* 0, or -ENOMEM. */
static int chains_init(struct chains *c, size_t n_b, size_t link_off,
                       uint64_t (*key)(const struct fs_inode *n))
{
    c->b = calloc(n_b, sizeof(*c->b));
    c->n_b = n_b;
    c->count = 0;
    c->link_off = link_off;
    c->key = key;
    return c->b ? 0 : -ENOMEM;
}

static struct fs_inode *chains_first(const struct chains *c, uint64_t key)
{
    return c->b[key & (c->n_b - 1)];
}

static void chains_insert(struct chains *c, struct fs_inode *n)
{
    struct fs_inode **b;
    if (c->count + 1 > c->n_b * 2 && (b = calloc(c->n_b * 4, sizeof(*b))) != NULL) {
        size_t nb = c->n_b * 4;
        for (size_t i = 0; i < c->n_b; i++) {
            for (struct fs_inode *p = c->b[i], *next; p; p = next) {
                next = *link_of(c, p);
                size_t k = c->key(p) & (nb - 1);
                *link_of(c, p) = b[k];
                b[k] = p;
            }
        }
        free(c->b);
        c->b = b;
        c->n_b = nb;
    }
    size_t k = c->key(n) & (c->n_b - 1);
    *link_of(c, n) = c->b[k];
    c->b[k] = n;
    c->count++;
}

static void chains_remove(struct chains *c, struct fs_inode *n)
{
    for (struct fs_inode **pp = &c->b[c->key(n) & (c->n_b - 1)]; *pp; pp = link_of(c, *pp)) {
        if (*pp == n) {
            *pp = *link_of(c, n);
            c->count--;
            return;
        }
    }
}

static uint64_t ino_key(uint64_t ino)
{
    return (ino * UINT64_C(0x9E3779B97F4A7C15)) >> 17;
}

static uint64_t ino_key_of(const struct fs_inode *n)
{
    return ino_key(n->ino);
}

static uint64_t dir_key(enum fs_kind kind, const char *dash_id, const char *widget_id)
{
    /* FNV-1a over the kind, then each id with its NUL, so ("a", "bc") != ("ab", "c"). */
    uint64_t h = (UINT64_C(14695981039346656037) ^ (uint64_t)kind) * UINT64_C(1099511628211);
    for (const char *s = dash_id;; s++) {
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
        if (!*s)
            break;
    }
    for (const char *s = widget_id; s; s++) {
        h = (h ^ (unsigned char)*s) * UINT64_C(1099511628211);
        if (!*s)
            break;
    }
    return h;
}

static uint64_t dir_key_of(const struct fs_inode *n)
{
    return dir_key(n->kind, n->dash_id, n->widget_id);
}

struct fs_ino {
    struct cache *cache;    /* charged for image inodes and their names */
    struct slab_pool *pool; /* image and snapshot inodes, names (slab.h): freed heap goes
                               back; never a directory inode, which would pin its block */
    pthread_mutex_t lock;
    struct chains by_ino;       /* protected by lock: every inode, by number */
    struct chains dirs;         /* protected by lock: directory inodes, by their ids */
    uint64_t next_ino;          /* protected by lock */
    size_t n_images;            /* protected by lock: image inodes */
    uint64_t pinned;            /* protected by lock: bytes of pinned inodes' records */
    atomic_uint_fast64_t freed; /* records freed since the heap was last trimmed */
};

/* Give freed heap back to the system once this much was freed by FORGETs (SPEC 7): the
 * kernel forgets invalidated names in bursts, and a burst must not stay in the arenas
 * until the next housekeeping tick. */
#define TRIM_AFTER_BYTES (2u << 20)

/* A remembered name of an image inode, in the pool; a list, newest first. */
struct fs_ino_name {
    struct fs_ino_name *next;
    uint64_t parent;
    char name[];
};

/* What an inode and a remembered name count in the cache's bound (SPEC 7): their records
 * as the pool lays them out (16-byte units). */
#define INODE_COST (sizeof(struct fs_inode) + 16)
#define NAME_COST(len) ((sizeof(struct fs_ino_name) + (len) + 1 + 15) / 16 * 16)

/* lock held. */
static struct fs_inode *find_locked(struct fs_ino *t, uint64_t ino)
{
    for (struct fs_inode *n = chains_first(&t->by_ino, ino_key(ino)); n; n = n->next)
        if (n->ino == ino)
            return n;
    return NULL;
}

/* lock held; the directory inode for (kind, dash_id, widget_id), or NULL. */
static struct fs_inode *find_dir_locked(struct fs_ino *t, enum fs_kind kind, const char *dash_id,
                                        const char *widget_id)
{
    for (struct fs_inode *n = chains_first(&t->dirs, dir_key(kind, dash_id, widget_id)); n;
         n = n->dir_next) {
        if (n->kind == kind && strcmp(n->dash_id, dash_id) == 0 &&
            (widget_id ? n->widget_id && strcmp(n->widget_id, widget_id) == 0 : !n->widget_id))
            return n;
    }
    return NULL;
}

/* What image inode n's records count (the inode and its remembered names). */
static size_t records_cost(const struct fs_inode *n)
{
    if (n->kind != FK_IMAGE)
        return 0;
    size_t cost = INODE_COST;
    for (const struct fs_ino_name *m = n->names; m; m = m->next)
        cost += NAME_COST(strlen(m->name));
    return cost;
}

/* Inodes that live until the table is freed: from malloc, not from the pool. */
static int permanent(enum fs_kind kind)
{
    return kind != FK_IMAGE && kind != FK_META_FILE;
}

/* Free n, taking back what it was charged (t may be NULL: nothing was). */
static void inode_free(struct fs_ino *t, struct fs_inode *n)
{
    if (!n)
        return;
    size_t cost = records_cost(n);
    for (struct fs_ino_name *m = n->names, *next; m; m = next) {
        next = m->next;
        slab_free(m);
    }
    size_t freed = n->pinned ? n->pinned_cost : cost;
    if (t && n->pinned) {
        pthread_mutex_lock(&t->lock);
        t->pinned -= n->pinned_cost;
        pthread_mutex_unlock(&t->lock);
    } else if (t && cost) {
        cache_uncharge(t->cache, cost);
    }
    cache_version_unref(n->v);
    free(n->data);
    if (permanent(n->kind)) {
        free(n->dash_id);
        free(n->widget_id);
        free(n);
    } else {
        slab_free(n);
    }
    if (t && freed && atomic_fetch_add(&t->freed, freed) + freed >= TRIM_AFTER_BYTES) {
        atomic_store(&t->freed, 0);
        malloc_trim(0);
    }
}

struct fs_ino *fs_ino_new(struct cache *cache)
{
    struct fs_ino *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->cache = cache;
    t->pool = slab_pool_new();
    if (!t->pool || pthread_mutex_init(&t->lock, NULL) != 0) {
        slab_pool_release(t->pool);
        free(t);
        return NULL;
    }
    t->next_ino = FS_INO_FIRST_DYNAMIC;
    if (chains_init(&t->by_ino, 256, offsetof(struct fs_inode, next), ino_key_of) != 0 ||
        chains_init(&t->dirs, 64, offsetof(struct fs_inode, dir_next), dir_key_of) != 0)
        goto err;
    static const struct {
        uint64_t ino;
        enum fs_kind kind;
    } fixed[] = {{FS_INO_ROOT, FK_ROOT}, {FS_INO_META, FK_META_DIR}};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        struct fs_inode *n = calloc(1, sizeof(*n));
        if (!n)
            goto err;
        n->ino = fixed[i].ino;
        n->kind = fixed[i].kind;
        n->nlookup = 1;
        chains_insert(&t->by_ino, n); /* not shared yet */
    }
    return t;
err:
    fs_ino_free(t);
    return NULL;
}

void fs_ino_free(struct fs_ino *t)
{
    if (!t)
        return;
    for (size_t i = 0; t->by_ino.b && i < t->by_ino.n_b; i++) {
        for (struct fs_inode *n = t->by_ino.b[i], *next; n; n = next) {
            next = n->next;
            inode_free(NULL, n);
        }
    }
    free(t->by_ino.b);
    free(t->dirs.b);
    pthread_mutex_destroy(&t->lock);
    slab_pool_release(t->pool);
    free(t);
}

struct fs_inode *fs_ino_get(struct fs_ino *t, uint64_t ino)
{
    pthread_mutex_lock(&t->lock);
    struct fs_inode *n = find_locked(t, ino);
    pthread_mutex_unlock(&t->lock);
    return n;
}

struct fs_inode *fs_ino_dir(struct fs_ino *t, enum fs_kind kind, const char *dash_id,
                            const char *widget_id)
{
    pthread_mutex_lock(&t->lock);
    struct fs_inode *found = find_dir_locked(t, kind, dash_id, widget_id);
    if (!found) {
        struct fs_inode *n = calloc(1, sizeof(*n));
        if (n) {
            n->kind = kind;
            n->dash_id = strdup(dash_id);
            n->widget_id = widget_id ? strdup(widget_id) : NULL;
            if (!n->dash_id || (widget_id && !n->widget_id)) {
                inode_free(NULL, n);
            } else {
                n->ino = t->next_ino++;
                chains_insert(&t->by_ino, n);
                chains_insert(&t->dirs, n);
                found = n;
            }
        }
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

struct fs_inode *fs_ino_image(struct fs_ino *t, struct cache_version *v)
{
    uint64_t ino = FS_IMAGE_BASE + cache_version_id(v);
    struct cache_version *extra = NULL;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *n = find_locked(t, ino);
    if (n) {
        extra = v; /* the inode already holds one */
        n->nlookup++;
    } else {
        n = slab_alloc(t->pool, sizeof(*n));
        if (n) {
            n->ino = ino;
            n->kind = FK_IMAGE;
            n->v = v;
            n->nlookup = 1;
            chains_insert(&t->by_ino, n);
            t->n_images++;
        } else {
            extra = v;
        }
    }
    pthread_mutex_unlock(&t->lock);
    if (n && !extra)
        cache_charge(t->cache, INODE_COST);
    cache_version_unref(extra);
    return n;
}

struct fs_inode *fs_ino_snapshot(struct fs_ino *t, char *data, size_t len)
{
    struct fs_inode *n = slab_alloc(t->pool, sizeof(*n));
    if (!n) {
        free(data);
        return NULL;
    }
    n->kind = FK_META_FILE;
    n->data = data;
    n->len = len;
    n->nlookup = 1;
    pthread_mutex_lock(&t->lock);
    n->ino = t->next_ino++;
    chains_insert(&t->by_ino, n);
    pthread_mutex_unlock(&t->lock);
    return n;
}

void fs_ino_forget(struct fs_ino *t, uint64_t ino, uint64_t nlookup)
{
    struct fs_inode *dead = NULL;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *n = find_locked(t, ino);
    if (n) {
        n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
        if (n->nlookup == 0 && (n->kind == FK_IMAGE || n->kind == FK_META_FILE)) {
            chains_remove(&t->by_ino, n);
            if (n->kind == FK_IMAGE)
                t->n_images--;
            dead = n;
        }
    }
    pthread_mutex_unlock(&t->lock);
    inode_free(t, dead); /* drops the version reference outside the lock */
}

void fs_ino_remember_name(struct fs_ino *t, struct fs_inode *n, uint64_t parent, const char *name)
{
    size_t charge = 0, len = strlen(name);
    pthread_mutex_lock(&t->lock);
    for (const struct fs_ino_name *m = n->names; m; m = m->next) {
        if (m->parent == parent && strcmp(m->name, name) == 0)
            goto out;
    }
    struct fs_ino_name *m = slab_alloc(t->pool, sizeof(*m) + len + 1);
    if (!m)
        goto out; /* only an invalidation is lost: the version stays pinned a little longer */
    m->parent = parent;
    memcpy(m->name, name, len + 1);
    m->next = n->names;
    n->names = m;
    charge = NAME_COST(len);
    if (n->pinned) {
        /* Out of the bound already: the record counts as pinned. */
        t->pinned += charge;
        n->pinned_cost += charge;
        charge = 0;
    }
out:
    pthread_mutex_unlock(&t->lock);
    if (charge)
        cache_charge(t->cache, charge);
}

void fs_ino_unbind(struct fs_ino *t, uint64_t ino)
{
    size_t cost = 0;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *n = find_locked(t, ino);
    if (n && n->kind == FK_IMAGE && !n->pinned) {
        n->pinned = 1;
        cost = records_cost(n);
        /* The version record too: the cache no longer counts it. */
        n->pinned_cost = cost + cache_version_bytes(n->v);
        t->pinned += n->pinned_cost;
    }
    pthread_mutex_unlock(&t->lock);
    if (cost)
        cache_uncharge(t->cache, cost);
}

uint64_t fs_ino_pinned_bytes(struct fs_ino *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t b = t->pinned;
    pthread_mutex_unlock(&t->lock);
    return b;
}

size_t fs_ino_images(struct fs_ino *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->n_images;
    pthread_mutex_unlock(&t->lock);
    return n;
}

size_t fs_ino_names(struct fs_ino *t, uint64_t ino, size_t max, struct fs_name **out)
{
    size_t count = 0, bytes = 0;
    pthread_mutex_lock(&t->lock);
    struct fs_inode *n = find_locked(t, ino);
    for (const struct fs_ino_name *m = n ? n->names : NULL; m && count < max; m = m->next) {
        count++;
        bytes += strlen(m->name) + 1;
    }
    /* One block, so the caller frees the whole answer at once. */
    struct fs_name *a = count ? malloc(count * sizeof(*a) + bytes) : NULL;
    if (a) {
        char *p = (char *)(a + count);
        const struct fs_ino_name *m = n->names;
        for (size_t i = 0; i < count; i++, m = m->next) {
            size_t l = strlen(m->name) + 1;
            memcpy(p, m->name, l);
            a[i].parent = m->parent;
            a[i].name = p;
            p += l;
        }
    }
    pthread_mutex_unlock(&t->lock);
    *out = a;
    return a ? count : 0;
}

size_t fs_ino_pool_mapped(struct fs_ino *t)
{
    return slab_pool_mapped(t->pool);
}
