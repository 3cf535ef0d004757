/* fs - the mounted filesystem: a thin libfuse low-level adapter over ns, cache and api.
 *
 * Why the low-level API (SPEC 12). libfuse 3.14's high-level API has one inode per
 * path, so a refreshed live image would reuse an inode whose size and pages the kernel
 * has cached. Here every fetched image version is its own inode (ino = FS_IMAGE_BASE +
 * the cache's version id, never reused while the daemon runs) whose size, mtime and
 * bytes never change. A name's entry points at its current version, with an entry
 * timeout no longer than the time until that name would resolve to another version.
 *
 * Warm reads at tmpfs speed: OPEN and FLUSH are answered ENOSYS on purpose, so the
 * kernel opens every later file itself with FOPEN_KEEP_CACHE and sends no RELEASE;
 * image attributes are valid for a day (they can never change). The kernel then serves
 * cached pages without asking the daemon at all.
 *
 * LOOKUP never waits for the network (libfuse 3.14 never negotiates PARALLEL_DIROPS,
 * so the kernel serializes LOOKUPs per directory). It answers from the name alone: the
 * cached version when it is fresh, else the key's pending version with entry and
 * attribute timeouts 0. GETATTR (or the first READ) of a pending version fetches it in
 * single flight (cache_resolve). Those calls block a worker thread, so the session runs
 * with max_threads = max_connections + FS_SPARE_THREADS: a cached file still reads at
 * once while max_connections fetches hang and more wait for a slot (SPEC 12.4).
 *
 * Inodes: the root (1) and /.insightfs (2) are fixed; dashboard, widget and days/
 * directories get a stable number per (kind, dashboard id, widget id) for the life of the
 * daemon; /.insightfs files are snapshots taken at lookup, one inode per lookup. Image
 * and snapshot inodes are freed when FORGET brings their lookup count to 0; each image
 * inode holds one reference to its version, so eviction never frees bytes the kernel can
 * still reach.
 *
 * Configuration: a generation (cfg + api + ns tree) is swapped whole on SIGHUP; requests
 * hold a reference to the generation they started with.
 *
 * Locking: ino_lock guards the inode table and lookup counts; gen_lock guards the
 * current generation pointer; disc_lock guards discovery state. None is held across
 * network I/O or a call into another module, and no two are held at once.
 */
#define FUSE_USE_VERSION 312

#include "insightfs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/log.h"
#include "insightfs/ns.h"
#include "insightfs/vpath.h"

#define FS_INO_ROOT 1
#define FS_INO_META 2
#define FS_INO_FIRST_DYNAMIC 16
#define FS_IMAGE_BASE (UINT64_C(1) << 40)
#define FS_SPARE_THREADS 64
#define FS_DAY_S 86400.0
#define FS_DIR_ENTRY_S 60.0
#define FS_DIR_ATTR_S 1.0
#define FS_META_NAME ".insightfs"
#define FS_NAMES_MAX 4
#define FS_UNKNOWN_INO 0xffffffffu /* d_ino of files not looked up yet (as libfuse uses) */

enum fs_kind { FK_ROOT, FK_META_DIR, FK_DASH, FK_WIDGET, FK_DAYS, FK_META_FILE, FK_IMAGE };

struct fs_inode {
    uint64_t ino;
    enum fs_kind kind;
    uint64_t nlookup;           /* protected by fs.ino_lock */
    char *dash_id, *widget_id;  /* FK_DASH, FK_WIDGET, FK_DAYS; immutable */
    struct cache_version *v;    /* FK_IMAGE: one reference, immutable */
    char *data;                 /* FK_META_FILE snapshot, immutable */
    size_t len;
    struct fs_inode *next;      /* hash chain, protected by fs.ino_lock */
    /* FK_IMAGE: the last names the kernel got this inode under, so an eviction can
     * invalidate them (protected by fs.ino_lock). */
    struct fs_name {
        fuse_ino_t parent;
        char *name;
    } names[FS_NAMES_MAX];
};

/* The API client, shared by generations whose api settings are the same, so a reload
 * that changes only other settings keeps its connections, retry budget, clock offset
 * and counters. */
struct fs_api {
    atomic_int refs;
    struct api *api;
};

/* What one configuration made: swapped whole on reload. */
struct fs_gen {
    atomic_int refs;
    struct cfg *cfg;
    struct fs_api *fa;
    struct api *api; /* fa->api */
};

/* One discovered list: the dashboards (dash_id NULL) or one dashboard's widgets. */
struct fs_disc_list {
    char *dash_id;
    struct api_item *items; /* last good answer, or NULL */
    size_t n;
    int have;               /* a good answer was ever stored */
    int64_t fetched_mono;   /* when it was stored */
    int refreshing;         /* a refresh is in flight (single flight) */
    int64_t failed_mono;    /* when the last refresh failed (0: it did not) */
    int last_rc;            /* the last refresh's result */
};

struct fs {
    pthread_mutex_t gen_lock;
    struct fs_gen *gen;    /* protected by gen_lock */
    struct ns_tree *tree;  /* protected by gen_lock: configured + discovered */

    pthread_mutex_t disc_lock;
    pthread_cond_t disc_cond;      /* a refresh finished */
    struct fs_disc_list *disc;     /* protected by disc_lock; [0] is the dashboards */
    size_t n_disc;                 /* protected by disc_lock */

    struct cache *cache;
    const struct cfg_env *env;
    struct fs_opts opts;
    uid_t uid;
    gid_t gid;
    struct timespec ready_at;  /* the mount became ready (CLOCK_REALTIME) */
    struct timespec ready_mono;

    pthread_mutex_t ino_lock;
    struct fs_inode **buckets; /* protected by ino_lock */
    size_t n_buckets;          /* protected by ino_lock */
    size_t n_inodes;           /* protected by ino_lock */
    uint64_t next_ino;         /* protected by ino_lock */

    struct fuse_session *se;

    /* Evicted versions whose kernel entries must be invalidated, by a thread that is
     * not serving a FUSE request (SPEC 12.2). */
    pthread_mutex_t inval_lock;
    pthread_cond_t inval_cond;
    uint64_t *inval_q;        /* protected by inval_lock: inode numbers */
    size_t inval_n, inval_cap; /* protected by inval_lock */
    int inval_stop;           /* protected by inval_lock */
    pthread_t inval_thread;
    int inval_started;

    int hup_pipe[2];
    pthread_t reload_thread;
    int reload_started;
};

/* ---- generations ---------------------------------------------------------------- */

static void gen_unref(struct fs_gen *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    if (g->fa && atomic_fetch_sub(&g->fa->refs, 1) == 1) {
        api_free(g->fa->api);
        free(g->fa);
    }
    cfg_free(g->cfg);
    free(g);
}

static struct fs_gen *gen_get(struct fs *fs)
{
    pthread_mutex_lock(&fs->gen_lock);
    struct fs_gen *g = fs->gen;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&fs->gen_lock);
    return g;
}

/* Takes ownership of cfg on success and failure. */
/* Takes ownership of cfg on success and failure. reuse: share this client (its api
 * settings equal cfg's), or NULL to make a new one. */
static struct fs_gen *gen_new(struct cfg *cfg, struct fs_api *reuse, int64_t test_offset,
                              char **err)
{
    struct fs_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        cfg_free(cfg);
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->cfg = cfg;
    if (reuse) {
        atomic_fetch_add(&reuse->refs, 1);
        g->fa = reuse;
    } else if ((g->fa = calloc(1, sizeof(*g->fa))) != NULL) {
        atomic_init(&g->fa->refs, 1);
        g->fa->api = api_new(cfg, test_offset, err);
        if (!g->fa->api) {
            free(g->fa);
            g->fa = NULL;
        }
    }
    if (!g->fa) {
        gen_unref(g);
        return NULL;
    }
    g->api = g->fa->api;
    return g;
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* 1 when a and b configure the API client identically. */
static int same_client(const struct cfg *a, const struct cfg *b)
{
    return same_str(a->endpoint, b->endpoint) && same_str(a->access_key, b->access_key) &&
           same_str(a->secret_key, b->secret_key) && same_str(a->ca_file, b->ca_file) &&
           a->timeout_ms == b->timeout_ms && a->connect_timeout_ms == b->connect_timeout_ms &&
           a->retries == b->retries && a->max_connections == b->max_connections &&
           a->max_requests_per_second == b->max_requests_per_second &&
           a->max_image_bytes == b->max_image_bytes;
}

static struct ns_tree *tree_get(struct fs *fs)
{
    pthread_mutex_lock(&fs->gen_lock);
    struct ns_tree *t = fs->tree;
    ns_ref(t);
    pthread_mutex_unlock(&fs->gen_lock);
    return t;
}

static int64_t fs_now_ms(void *arg)
{
    struct fs *fs = arg;
    struct fs_gen *g = gen_get(fs);
    int64_t now = api_now_ms(g->api);
    gen_unref(g);
    return now;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the inode table ------------------------------------------------------------ */

static size_t ino_bucket(const struct fs *fs, uint64_t ino)
{
    uint64_t h = ino * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 17) & (fs->n_buckets - 1);
}

/* Called with ino_lock held. */
static struct fs_inode *ino_find_locked(struct fs *fs, uint64_t ino)
{
    for (struct fs_inode *n = fs->buckets[ino_bucket(fs, ino)]; n; n = n->next)
        if (n->ino == ino)
            return n;
    return NULL;
}

/* Called with ino_lock held; grows the table when it gets crowded. */
static void ino_insert_locked(struct fs *fs, struct fs_inode *n)
{
    if (fs->n_inodes + 1 > fs->n_buckets * 2) {
        size_t nb = fs->n_buckets * 4;
        struct fs_inode **b = calloc(nb, sizeof(*b));
        if (b) {
            struct fs_inode **old = fs->buckets;
            size_t old_n = fs->n_buckets;
            fs->buckets = b;
            fs->n_buckets = nb;
            for (size_t i = 0; i < old_n; i++) {
                for (struct fs_inode *p = old[i], *next; p; p = next) {
                    next = p->next;
                    size_t k = ino_bucket(fs, p->ino);
                    p->next = b[k];
                    b[k] = p;
                }
            }
            free(old);
        } /* else: keep the longer chains; lookups stay correct */
    }
    size_t k = ino_bucket(fs, n->ino);
    n->next = fs->buckets[k];
    fs->buckets[k] = n;
    fs->n_inodes++;
}

static void ino_remove_locked(struct fs *fs, struct fs_inode *n)
{
    for (struct fs_inode **pp = &fs->buckets[ino_bucket(fs, n->ino)]; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            fs->n_inodes--;
            return;
        }
    }
}

static void inode_free(struct fs_inode *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < FS_NAMES_MAX; i++)
        free(n->names[i].name);
    cache_version_unref(n->v);
    free(n->dash_id);
    free(n->widget_id);
    free(n->data);
    free(n);
}

/* Find an inode by number; the kernel never sends a request for an inode after its
 * FORGET, so the pointer stays valid for the request. */
static struct fs_inode *ino_get(struct fs *fs, fuse_ino_t ino)
{
    pthread_mutex_lock(&fs->ino_lock);
    struct fs_inode *n = ino_find_locked(fs, ino);
    pthread_mutex_unlock(&fs->ino_lock);
    return n;
}

/* The stable directory inode for (kind, dash_id, widget_id), made on first use.
 * Directory inodes live until the daemon stops. */
static struct fs_inode *dir_inode(struct fs *fs, enum fs_kind kind, const char *dash_id,
                                  const char *widget_id)
{
    struct fs_inode *found = NULL;
    pthread_mutex_lock(&fs->ino_lock);
    /* Directories are few (dashboards + 2 x widgets): a scan keeps this simple. */
    for (size_t i = 0; i < fs->n_buckets && !found; i++) {
        for (struct fs_inode *n = fs->buckets[i]; n; n = n->next) {
            if (n->kind == kind && strcmp(n->dash_id, dash_id) == 0 &&
                (!widget_id || strcmp(n->widget_id, widget_id) == 0)) {
                found = n;
                break;
            }
        }
    }
    if (!found) {
        struct fs_inode *n = calloc(1, sizeof(*n));
        if (n) {
            n->kind = kind;
            n->dash_id = strdup(dash_id);
            n->widget_id = widget_id ? strdup(widget_id) : NULL;
            if (!n->dash_id || (widget_id && !n->widget_id)) {
                inode_free(n);
            } else {
                n->ino = fs->next_ino++;
                ino_insert_locked(fs, n);
                found = n;
            }
        }
    }
    pthread_mutex_unlock(&fs->ino_lock);
    return found;
}

/* The inode of version v, made on first use; takes over the caller's reference to v. */
static struct fs_inode *image_inode(struct fs *fs, struct cache_version *v)
{
    uint64_t ino = FS_IMAGE_BASE + cache_version_id(v);
    pthread_mutex_lock(&fs->ino_lock);
    struct fs_inode *n = ino_find_locked(fs, ino);
    if (n) {
        cache_version_unref(v); /* the inode already holds one */
    } else {
        n = calloc(1, sizeof(*n));
        if (n) {
            n->ino = ino;
            n->kind = FK_IMAGE;
            n->v = v;
            ino_insert_locked(fs, n);
        } else {
            cache_version_unref(v);
        }
    }
    pthread_mutex_unlock(&fs->ino_lock);
    return n;
}

static void ino_forget(struct fs *fs, fuse_ino_t ino, uint64_t nlookup)
{
    struct fs_inode *dead = NULL;
    pthread_mutex_lock(&fs->ino_lock);
    struct fs_inode *n = ino_find_locked(fs, ino);
    if (n) {
        n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
        if (n->nlookup == 0 && (n->kind == FK_IMAGE || n->kind == FK_META_FILE)) {
            ino_remove_locked(fs, n);
            dead = n;
        }
    }
    pthread_mutex_unlock(&fs->ino_lock);
    inode_free(dead); /* drops the version reference outside the lock */
}

/* ---- attributes ----------------------------------------------------------------- */

static void ts_from_ms(struct timespec *ts, int64_t ms)
{
    ts->tv_sec = ms / 1000;
    ts->tv_nsec = (long)(ms % 1000) * 1000000;
}

static void attr_common(struct fs *fs, struct stat *st, fuse_ino_t ino)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_blksize = 4096;
    st->st_atim = st->st_mtim = st->st_ctim = fs->ready_at;
}

static void attr_dir(struct fs *fs, struct stat *st, fuse_ino_t ino, nlink_t subdirs)
{
    attr_common(fs, st, ino);
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2 + subdirs;
}

static void attr_file(struct fs *fs, struct stat *st, fuse_ino_t ino, size_t size, int64_t t_ms)
{
    attr_common(fs, st, ino);
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    ts_from_ms(&st->st_mtim, t_ms);
    st->st_atim = st->st_ctim = st->st_mtim;
}

/* A ready version's attributes: mtime END when final, else the signing time. */
static void attr_image(struct fs *fs, struct stat *st, struct fs_inode *n)
{
    if (cache_version_state(n->v) != CACHE_READY) {
        attr_file(fs, st, n->ino, 0, cache_version_key(n->v)->end_ms);
        return;
    }
    size_t len = 0;
    cache_version_data(n->v, &len);
    int64_t t = cache_version_final(n->v) ? cache_version_key(n->v)->end_ms
                                           : cache_version_fetched_at(n->v);
    attr_file(fs, st, n->ino, len, t);
}

/* Directory attributes for any directory inode; 0 or -ENOENT. */
static int attr_of_dir(struct fs *fs, struct fs_inode *n, struct stat *st)
{
    struct ns_tree *t = tree_get(fs);
    int rc = 0;
    switch (n->kind) {
    case FK_ROOT:
        attr_dir(fs, st, n->ino, t->n_dashboards + 1);
        break;
    case FK_META_DIR:
        attr_dir(fs, st, n->ino, 0);
        break;
    case FK_DASH: {
        const struct ns_dashboard *d = ns_find_dashboard(t, n->dash_id);
        attr_dir(fs, st, n->ino, d ? d->n_widgets : 0);
        break;
    }
    case FK_WIDGET:
        attr_dir(fs, st, n->ino, 1);
        break;
    case FK_DAYS: {
        attr_dir(fs, st, n->ino, 0);
        int64_t today = vpath_day_start_ms(fs_now_ms(fs));
        ts_from_ms(&st->st_mtim, today);
        st->st_atim = st->st_ctim = st->st_mtim;
        break;
    }
    default:
        rc = -ENOENT;
    }
    ns_unref(t);
    return rc;
}

/* ---- discovery (discover = true) ------------------------------------------------ */

/* Rebuild the tree from the current cfg and the discovered lists. */
static void tree_rebuild(struct fs *fs)
{
    struct fs_gen *g = gen_get(fs);
    pthread_mutex_lock(&fs->disc_lock);
    size_t nl = fs->n_disc;
    const char **ids = calloc(nl ? nl : 1, sizeof(*ids));
    const struct api_item **items = calloc(nl ? nl : 1, sizeof(*items));
    size_t *ns = calloc(nl ? nl : 1, sizeof(*ns));
    struct ns_tree *t = NULL;
    if (ids && items && ns) {
        struct ns_discovered d = {0};
        size_t k = 0;
        for (size_t i = 0; i < nl; i++) {
            struct fs_disc_list *l = &fs->disc[i];
            if (!l->dash_id) {
                d.dashboards = l->items;
                d.n_dashboards = l->n;
            } else {
                ids[k] = l->dash_id;
                items[k] = l->items;
                ns[k] = l->n;
                k++;
            }
        }
        d.widget_dash_ids = ids;
        d.widgets = items;
        d.n_widgets = ns;
        d.n_widget_lists = k;
        /* ns_build is pure and quick; holding disc_lock keeps the lists alive. */
        t = ns_build(g->cfg, &d);
    }
    pthread_mutex_unlock(&fs->disc_lock);
    free(ids);
    free(items);
    free(ns);
    gen_unref(g);
    if (!t)
        return; /* out of memory: keep the old tree */
    pthread_mutex_lock(&fs->gen_lock);
    struct ns_tree *old = fs->tree;
    fs->tree = t;
    pthread_mutex_unlock(&fs->gen_lock);
    ns_unref(old);
}

/* The list for dash_id (NULL: the dashboards), made on first use. disc_lock held. */
static struct fs_disc_list *disc_list_locked(struct fs *fs, const char *dash_id)
{
    for (size_t i = 0; i < fs->n_disc; i++) {
        const char *id = fs->disc[i].dash_id;
        if ((!id && !dash_id) || (id && dash_id && strcmp(id, dash_id) == 0))
            return &fs->disc[i];
    }
    struct fs_disc_list *a = realloc(fs->disc, (fs->n_disc + 1) * sizeof(*a));
    if (!a)
        return NULL;
    fs->disc = a;
    struct fs_disc_list *l = &a[fs->n_disc];
    memset(l, 0, sizeof(*l));
    if (dash_id && !(l->dash_id = strdup(dash_id)))
        return NULL;
    fs->n_disc++;
    return l;
}

/* Refresh one discovered list when it is older than discover_ttl_s, in single flight.
 * Returns 0 when a good list is there (fresh, or the last good one after a failed
 * refresh), else the refresh's negative errno. */
static int disc_refresh(struct fs *fs, const char *dash_id)
{
    struct fs_gen *g = gen_get(fs);
    if (!g->cfg->discover) {
        gen_unref(g);
        return 0;
    }
    int64_t ttl_ms = (int64_t)g->cfg->discover_ttl_s * 1000;
    int64_t deadline = mono_ms() + (int64_t)g->cfg->timeout_ms * (g->cfg->retries + 1) + 500;
    int rc;
    pthread_mutex_lock(&fs->disc_lock);
    struct fs_disc_list *l = disc_list_locked(fs, dash_id);
    if (!l) {
        rc = -ENOMEM;
        goto out_locked;
    }
    while (l->refreshing) {
        struct timespec ts = {deadline / 1000, (long)(deadline % 1000) * 1000000};
        if (pthread_cond_timedwait(&fs->disc_cond, &fs->disc_lock, &ts) == ETIMEDOUT) {
            rc = l->have ? 0 : -ETIMEDOUT;
            goto out_locked;
        }
        l = disc_list_locked(fs, dash_id); /* the array may have moved */
    }
    if (l->have && mono_ms() - l->fetched_mono < ttl_ms) {
        rc = 0;
        goto out_locked;
    }
    /* A failed refresh is remembered for error_ttl_s, like a failed image (SPEC 6). */
    if (l->failed_mono && mono_ms() - l->failed_mono < (int64_t)g->cfg->error_ttl_s * 1000) {
        rc = l->have ? 0 : l->last_rc;
        goto out_locked;
    }
    l->refreshing = 1;
    pthread_mutex_unlock(&fs->disc_lock);

    struct api_item *items = NULL;
    size_t n = 0;
    rc = dash_id ? api_list_widgets(g->api, dash_id, &items, &n, NULL)
                 : api_list_dashboards(g->api, &items, &n, NULL);

    pthread_mutex_lock(&fs->disc_lock);
    l = disc_list_locked(fs, dash_id);
    l->refreshing = 0;
    l->last_rc = rc;
    if (rc == 0) {
        api_items_free(l->items, l->n);
        l->items = items;
        l->n = n;
        l->have = 1;
        l->fetched_mono = mono_ms();
        l->failed_mono = 0;
    } else {
        l->failed_mono = mono_ms();
        if (l->have)
            rc = 0; /* the last good list stays in use */
    }
    pthread_cond_broadcast(&fs->disc_cond);
    pthread_mutex_unlock(&fs->disc_lock);
    gen_unref(g);
    if (items)
        tree_rebuild(fs);
    return rc;
out_locked:
    pthread_mutex_unlock(&fs->disc_lock);
    gen_unref(g);
    return rc;
}

/* ---- fetching ------------------------------------------------------------------- */

static int mem_reserve(void *arg, size_t bytes)
{
    return cache_reserve(arg, bytes);
}

static void mem_release(void *arg, size_t bytes)
{
    cache_release(arg, bytes);
}

/* The cache's fetcher: one logical GetDashboardWidgetImage, outside every lock. */
static int fs_fetch(void *arg, struct cache *c, const struct cache_key *key, unsigned char **data,
                    size_t *len, int64_t *signed_at_ms)
{
    struct fs *fs = arg;
    struct fs_gen *g = gen_get(fs);
    struct api_mem mem = {mem_reserve, mem_release, c};
    struct api_image img = {0};
    uint64_t clock_gen = api_clock_generation(g->api);
    int rc = api_fetch_image(g->api, key->dash_id, key->widget_id, key->start_ms, key->end_ms,
                             key->res, &mem, &img, NULL);
    /* SPEC 6: a change of the gateway offset forgets remembered EACCES errors (the wrong
     * clock may have caused them). This fetch's own result is recorded after this. */
    if (api_clock_generation(g->api) != clock_gen)
        cache_forget_errors(c, EACCES);
    gen_unref(g);
    if (rc == 0) {
        *data = img.data;
        *len = img.len;
        *signed_at_ms = img.signed_at_ms;
    }
    return rc;
}

/* The deadline a filesystem call waits for a fetch: D (SPEC 6) plus a little, so a
 * joined fetch that started earlier always finishes first. */
static int64_t fetch_deadline(struct fs *fs)
{
    struct fs_gen *g = gen_get(fs);
    int64_t d = mono_ms() + (int64_t)g->cfg->timeout_ms * (g->cfg->retries + 1) + 500;
    gen_unref(g);
    return d;
}

static int image_resolve(struct fs *fs, struct fs_inode *n)
{
    if (cache_version_state(n->v) == CACHE_READY)
        return 0;
    struct cache_fetcher f = {fs_fetch, fs};
    return cache_resolve(fs->cache, n->v, &f, fetch_deadline(fs));
}

/* ---- /.insightfs ---------------------------------------------------------------- */

static char *meta_stats(struct fs *fs, size_t *len)
{
    struct cache_stats cs;
    struct api_stats as;
    cache_get_stats(fs->cache, &cs);
    struct fs_gen *g = gen_get(fs);
    api_get_stats(g->api, &as);
    gen_unref(g);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long up = (long long)(now.tv_sec - fs->ready_mono.tv_sec);
    char *s = NULL;
    int n = asprintf(&s,
                     "{\"cache\":{\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64
                     ",\"pinned_bytes\":%" PRIu64 ",\"max_bytes\":%" PRIu64 ",\"hits\":%" PRIu64
                     ",\"misses\":%" PRIu64 ",\"evictions\":%" PRIu64
                     "},\"upstream\":{\"requests\":%" PRIu64 ",\"failures\":%" PRIu64
                     ",\"retries\":%" PRIu64 ",\"in_flight\":%" PRIu64 ",\"bytes\":%" PRIu64
                     "},\"uptime_s\":%lld}\n",
                     cs.entries, cs.bytes, cs.pinned_bytes, cs.max_bytes, cs.hits, cs.misses,
                     cs.evictions, as.requests, as.failures, as.retries, as.in_flight, as.bytes,
                     up < 0 ? 0 : up);
    if (n < 0)
        return NULL;
    *len = (size_t)n;
    return s;
}

/* ---- replies -------------------------------------------------------------------- */

static void reply_entry(struct fs *fs, fuse_req_t req, struct fs_inode *n, const struct stat *st,
                        double entry_s, double attr_s);

/* Remember that the kernel knows image n as parent/name (ino_lock held). */
static void remember_name_locked(struct fs_inode *n, fuse_ino_t parent, const char *name)
{
    for (size_t i = 0; i < FS_NAMES_MAX; i++)
        if (n->names[i].name && n->names[i].parent == parent && strcmp(n->names[i].name, name) == 0)
            return;
    char *copy = strdup(name);
    if (!copy)
        return; /* only an invalidation is lost: the version stays pinned a little longer */
    free(n->names[FS_NAMES_MAX - 1].name);
    memmove(&n->names[1], &n->names[0], (FS_NAMES_MAX - 1) * sizeof(n->names[0]));
    n->names[0].parent = parent;
    n->names[0].name = copy;
}

/* Reply an entry and count the lookup; the count is undone if the kernel never got it. */
static void reply_image_entry(struct fs *fs, fuse_req_t req, struct fs_inode *n,
                              const struct stat *st, double entry_s, double attr_s,
                              fuse_ino_t parent, const char *name)
{
    pthread_mutex_lock(&fs->ino_lock);
    remember_name_locked(n, parent, name);
    pthread_mutex_unlock(&fs->ino_lock);
    reply_entry(fs, req, n, st, entry_s, attr_s);
}

/* Reply an entry and count the lookup; the count is undone if the kernel never got it. */
static void reply_entry(struct fs *fs, fuse_req_t req, struct fs_inode *n, const struct stat *st,
                        double entry_s, double attr_s)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = n->ino;
    e.attr = *st;
    e.entry_timeout = entry_s;
    e.attr_timeout = attr_s;
    pthread_mutex_lock(&fs->ino_lock);
    n->nlookup++;
    pthread_mutex_unlock(&fs->ino_lock);
    if (fuse_reply_entry(req, &e) != 0)
        ino_forget(fs, n->ino, 1);
}

static void reply_dir_entry(struct fs *fs, fuse_req_t req, struct fs_inode *n)
{
    struct stat st;
    if (!n) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (attr_of_dir(fs, n, &st) != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    reply_entry(fs, req, n, &st, FS_DIR_ENTRY_S, FS_DIR_ATTR_S);
}

/* ---- LOOKUP --------------------------------------------------------------------- */

static double seconds_until(int64_t when_ms, int64_t now_ms, double cap_s)
{
    if (when_ms == INT64_MAX)
        return cap_s;
    double s = (double)(when_ms - now_ms) / 1000.0;
    if (s < 0)
        return 0;
    return s < cap_s ? s : cap_s;
}

static void lookup_image(struct fs *fs, fuse_req_t req, struct fs_inode *parent, const char *name)
{
    struct fs_gen *g = gen_get(fs);
    int64_t now = api_now_ms(g->api);
    struct vpath_clock clk = {now, g->cfg->align_s};
    struct vpath_image img;
    int rc = parent->kind == FK_DAYS
                 ? vpath_parse_day(name, g->cfg->resolution, &clk, &img)
                 : vpath_parse_image(name, g->cfg->resolution, &clk, &img);
    int live_ttl = g->cfg->live_ttl_s;
    gen_unref(g);
    if (rc != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct cache_key key = {parent->dash_id, parent->widget_id, img.start_ms, img.end_ms, img.res};
    int hit = 0;
    struct cache_version *v = cache_get(fs->cache, &key, &hit);
    if (!v) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct fs_inode *n = image_inode(fs, v);
    if (!n) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct stat st;
    attr_image(fs, &st, n);
    if (cache_version_state(n->v) != CACHE_READY) {
        /* Pending or failed: GETATTR will fetch or report; nothing may be cached. */
        reply_image_entry(fs, req, n, &st, 0, 0, parent->ino, name);
        return;
    }
    double entry_s = seconds_until(img.changes_at_ms, now, FS_DAY_S);
    if (!cache_version_final(n->v)) {
        int64_t fresh_until = cache_version_fetched_at(n->v) + (int64_t)live_ttl * 1000;
        entry_s = seconds_until(fresh_until, now, entry_s);
    }
    reply_image_entry(fs, req, n, &st, entry_s, FS_DAY_S, parent->ino, name);
}

static void lookup_meta_file(struct fs *fs, fuse_req_t req, const char *name)
{
    if (strcmp(name, "stats") != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct fs_inode *n = calloc(1, sizeof(*n));
    if (!n || !(n->data = meta_stats(fs, &n->len))) {
        free(n);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    n->kind = FK_META_FILE;
    pthread_mutex_lock(&fs->ino_lock);
    n->ino = fs->next_ino++;
    ino_insert_locked(fs, n);
    pthread_mutex_unlock(&fs->ino_lock);
    struct stat st;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    attr_file(fs, &st, n->ino, n->len, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    /* A snapshot: the next lookup of the name takes a new one. */
    reply_entry(fs, req, n, &st, 0, FS_DAY_S);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *p = ino_get(fs, parent);
    if (!p) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    switch (p->kind) {
    case FK_ROOT: {
        if (strcmp(name, FS_META_NAME) == 0) {
            reply_dir_entry(fs, req, ino_get(fs, FS_INO_META));
            return;
        }
        int rc = 0;
        for (int pass = 0; pass < 2; pass++) {
            struct ns_tree *t = tree_get(fs);
            const struct ns_dashboard *d = ns_find_dashboard(t, name);
            struct fs_inode *n = d ? dir_inode(fs, FK_DASH, d->id, NULL) : NULL;
            ns_unref(t);
            if (d) {
                reply_dir_entry(fs, req, n);
                return;
            }
            /* Unknown: a discovery refresh may know it (SPEC 4). */
            if (pass == 0 && (rc = disc_refresh(fs, NULL)) != 0)
                break;
        }
        fuse_reply_err(req, rc ? -rc : ENOENT);
        return;
    }
    case FK_DASH: {
        int rc = 0;
        for (int pass = 0; pass < 2; pass++) {
            struct ns_tree *t = tree_get(fs);
            const struct ns_dashboard *d = ns_find_dashboard(t, p->dash_id);
            const struct ns_widget *w = d ? ns_find_widget(d, name) : NULL;
            struct fs_inode *n = w ? dir_inode(fs, FK_WIDGET, p->dash_id, w->id) : NULL;
            ns_unref(t);
            if (w) {
                reply_dir_entry(fs, req, n);
                return;
            }
            if (pass == 0 && (rc = disc_refresh(fs, p->dash_id)) != 0)
                break;
        }
        fuse_reply_err(req, rc ? -rc : ENOENT);
        return;
    }
    case FK_WIDGET:
        if (strcmp(name, "days") == 0) {
            reply_dir_entry(fs, req, dir_inode(fs, FK_DAYS, p->dash_id, p->widget_id));
            return;
        }
        lookup_image(fs, req, p, name);
        return;
    case FK_DAYS:
        lookup_image(fs, req, p, name);
        return;
    case FK_META_DIR:
        lookup_meta_file(fs, req, name);
        return;
    default:
        fuse_reply_err(req, ENOTDIR);
    }
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    ino_forget(fuse_req_userdata(req), ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = fuse_req_userdata(req);
    for (size_t i = 0; i < count; i++)
        ino_forget(fs, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* ---- GETATTR, READ -------------------------------------------------------------- */

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = ino_get(fs, ino);
    struct stat st;
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind == FK_IMAGE) {
        int rc = image_resolve(fs, n);
        if (rc != 0) {
            fuse_reply_err(req, -rc);
            return;
        }
        attr_image(fs, &st, n);
        fuse_reply_attr(req, &st, FS_DAY_S);
        return;
    }
    if (n->kind == FK_META_FILE) {
        attr_file(fs, &st, n->ino, n->len, 0);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        st.st_atim = st.st_mtim = st.st_ctim = now;
        fuse_reply_attr(req, &st, FS_DAY_S);
        return;
    }
    int rc = attr_of_dir(fs, n, &st);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, FS_DIR_ATTR_S);
}

/* The slice is replied from a private copy: as soon as the kernel has the answer, a
 * RELEASEDIR or FORGET on another worker may free the source, while ASan's writev
 * interceptor still reads the iovec after the call returns (a use-after-free report
 * that stops the daemon under sanitizers). Only uncached reads and readdir get here. */
static void reply_slice(fuse_req_t req, const void *data, size_t len, size_t size, off_t off)
{
    if (off < 0 || (size_t)off >= len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = len - (size_t)off < size ? len - (size_t)off : size;
    char *copy = malloc(n);
    if (!copy) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(copy, (const char *)data + off, n);
    fuse_reply_buf(req, copy, n);
    free(copy);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = ino_get(fs, ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind == FK_META_FILE) {
        reply_slice(req, n->data, n->len, size, off);
        return;
    }
    if (n->kind != FK_IMAGE) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    int rc = image_resolve(fs, n);
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    size_t len = 0;
    const unsigned char *data = cache_version_data(n->v, &len);
    reply_slice(req, data, len, size, off);
}

/* OPEN and FLUSH answered ENOSYS on purpose: from then on the kernel opens files itself,
 * keeps their pages and never asks us again (SPEC 12.1). */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        fuse_reply_err(req, EROFS);
    else
        fuse_reply_err(req, ENOSYS);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, ENOSYS);
}

/* ---- directories ---------------------------------------------------------------- */

struct dirbuf {
    char *p;
    size_t size;
};

static int dirbuf_add(fuse_req_t req, struct dirbuf *b, const char *name, fuse_ino_t ino,
                      mode_t type)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = type;
    size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
    char *p = realloc(b->p, b->size + need);
    if (!p)
        return -ENOMEM;
    b->p = p;
    fuse_add_direntry(req, b->p + b->size, need, name, &st, (off_t)(b->size + need));
    b->size += need;
    return 0;
}

/* The listing of directory n, as a snapshot taken now (SPEC 4). */
static int dir_list(struct fs *fs, fuse_req_t req, struct fs_inode *n, fuse_ino_t parent,
                    struct dirbuf *b)
{
    int rc = 0;
    /* Discovery failures leave the last good (or configured) entries listed. */
    if (n->kind == FK_ROOT)
        (void)disc_refresh(fs, NULL);
    else if (n->kind == FK_DASH)
        (void)disc_refresh(fs, n->dash_id);
    struct fs_gen *g = gen_get(fs);
    struct ns_tree *t = tree_get(fs);
    rc = dirbuf_add(req, b, ".", n->ino, S_IFDIR);
    if (!rc)
        rc = dirbuf_add(req, b, "..", parent, S_IFDIR);
    switch (n->kind) {
    case FK_ROOT:
        for (size_t i = 0; !rc && i < t->n_dashboards; i++) {
            const struct ns_dashboard *d = &t->dashboards[i];
            struct fs_inode *c = dir_inode(fs, FK_DASH, d->id, NULL);
            rc = c ? dirbuf_add(req, b, d->name, c->ino, S_IFDIR) : -ENOMEM;
        }
        break;
    case FK_META_DIR:
        if (!rc)
            rc = dirbuf_add(req, b, "stats", 0, S_IFREG);
        break;
    case FK_DASH: {
        const struct ns_dashboard *d = ns_find_dashboard(t, n->dash_id);
        for (size_t i = 0; !rc && d && i < d->n_widgets; i++) {
            struct fs_inode *c = dir_inode(fs, FK_WIDGET, d->id, d->widgets[i].id);
            rc = c ? dirbuf_add(req, b, d->widgets[i].name, c->ino, S_IFDIR) : -ENOMEM;
        }
        break;
    }
    case FK_WIDGET:
        for (size_t i = 0; !rc && i < g->cfg->n_presets; i++) {
            char *name = NULL;
            if (asprintf(&name, "%s.png", g->cfg->presets[i]) < 0) {
                rc = -ENOMEM;
                break;
            }
            rc = dirbuf_add(req, b, name, FS_UNKNOWN_INO, S_IFREG);
            free(name);
        }
        if (!rc) {
            struct fs_inode *c = dir_inode(fs, FK_DAYS, n->dash_id, n->widget_id);
            rc = c ? dirbuf_add(req, b, "days", c->ino, S_IFDIR) : -ENOMEM;
        }
        break;
    case FK_DAYS: {
        struct vpath_clock clk = {api_now_ms(g->api), g->cfg->align_s};
        for (int i = 0; !rc && i < g->cfg->history_days; i++) {
            char day[VPATH_DAY_LEN], name[VPATH_DAY_LEN + 4];
            if (vpath_day_name(&clk, i, day) != 0)
                break; /* before 1970 */
            snprintf(name, sizeof(name), "%s.png", day);
            rc = dirbuf_add(req, b, name, FS_UNKNOWN_INO, S_IFREG);
        }
        break;
    }
    default:
        rc = -ENOTDIR;
    }
    ns_unref(t);
    gen_unref(g);
    return rc;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = ino_get(fs, ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind == FK_IMAGE || n->kind == FK_META_FILE) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    struct dirbuf *b = calloc(1, sizeof(*b));
    if (!b) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* ".." of a dashboard is the root; the kernel ignores d_ino of ".." anyway. */
    int rc = dir_list(fs, req, n, FS_INO_ROOT, b);
    if (rc != 0) {
        free(b->p);
        free(b);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)b;
    if (fuse_reply_open(req, fi) != 0) {
        free(b->p);
        free(b);
    }
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)ino;
    struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
    reply_slice(req, b->p, b->size, size, off);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
    if (b) {
        free(b->p);
        free(b);
    }
    fuse_reply_err(req, 0);
}

/* ---- statfs, xattrs ------------------------------------------------------------- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fs *fs = fuse_req_userdata(req);
    struct cache_stats cs;
    cache_get_stats(fs->cache, &cs);
    struct statvfs sv;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = sv.f_frsize = 4096;
    sv.f_blocks = cs.max_bytes / 4096;
    sv.f_bfree = sv.f_bavail = cs.bytes < cs.max_bytes ? (cs.max_bytes - cs.bytes) / 4096 : 0;
    sv.f_files = cs.entries;
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
}

static const char *const xattr_names[] = {
    "user.insightfs.start_ms", "user.insightfs.end_ms", "user.insightfs.resolution",
    "user.insightfs.api_path", "user.insightfs.fetched_at",
};
#define N_XATTRS (sizeof(xattr_names) / sizeof(xattr_names[0]))

/* The value of xattr i of image n, malloc'd; -ENODATA before the first fetch. */
static int xattr_value(struct fs_inode *n, size_t i, char **out)
{
    const struct cache_key *k = cache_version_key(n->v);
    int r = -1;
    switch (i) {
    case 0:
        r = asprintf(out, "%" PRId64, k->start_ms);
        break;
    case 1:
        r = asprintf(out, "%" PRId64, k->end_ms);
        break;
    case 2:
        r = asprintf(out, "%s", k->res == VPATH_RES_HIGH ? "HIGH" : "AUTO");
        break;
    case 3:
        *out = api_image_target(k->dash_id, k->widget_id, k->start_ms, k->end_ms, k->res);
        return *out ? 0 : -ENOMEM;
    case 4:
        if (cache_version_state(n->v) != CACHE_READY)
            return -ENODATA;
        r = asprintf(out, "%" PRId64, cache_version_fetched_at(n->v));
        break;
    }
    return r < 0 ? -ENOMEM : 0;
}

static void reply_xattr_bytes(fuse_req_t req, const char *buf, size_t len, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, buf, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = ino_get(fs, ino);
    if (!n || n->kind != FK_IMAGE) {
        fuse_reply_err(req, n ? ENODATA : ENOENT);
        return;
    }
    for (size_t i = 0; i < N_XATTRS; i++) {
        if (strcmp(name, xattr_names[i]) != 0)
            continue;
        char *val = NULL;
        int rc = xattr_value(n, i, &val);
        if (rc != 0)
            fuse_reply_err(req, -rc);
        else
            reply_xattr_bytes(req, val, strlen(val), size);
        free(val);
        return;
    }
    fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = ino_get(fs, ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind != FK_IMAGE) {
        reply_xattr_bytes(req, "", 0, size);
        return;
    }
    char buf[256];
    size_t len = 0;
    for (size_t i = 0; i < N_XATTRS; i++) {
        size_t l = strlen(xattr_names[i]) + 1;
        memcpy(buf + len, xattr_names[i], l);
        len += l;
    }
    reply_xattr_bytes(req, buf, len, size);
}

/* ---- every mutation: EROFS ------------------------------------------------------ */

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)ino, (void)attr, (void)to_set, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
    (void)p, (void)name, (void)mode, (void)rdev;
    fuse_reply_err(req, EROFS);
}
static void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode)
{
    (void)p, (void)name, (void)mode;
    fuse_reply_err(req, EROFS);
}
static void op_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
    (void)p, (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
    (void)link, (void)p, (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np,
                      const char *nname, unsigned int flags)
{
    (void)p, (void)name, (void)np, (void)nname, (void)flags;
    fuse_reply_err(req, EROFS);
}
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nname)
{
    (void)ino, (void)np, (void)nname;
    fuse_reply_err(req, EROFS);
}
static void op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    (void)p, (void)name, (void)mode, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino, (void)buf, (void)size, (void)off, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    (void)ino, (void)name, (void)value, (void)size, (void)flags;
    fuse_reply_err(req, EROFS);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)ino, (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
    (void)ino, (void)mode, (void)off, (void)len, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_copy_file_range(fuse_req_t req, fuse_ino_t in, off_t off_in,
                               struct fuse_file_info *fi_in, fuse_ino_t out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len, int flags)
{
    (void)in, (void)off_in, (void)fi_in, (void)out, (void)off_out, (void)fi_out, (void)len,
        (void)flags;
    fuse_reply_err(req, EROFS);
}

/* ---- invalidation of evicted versions ------------------------------------------- */

/* The cache dropped v while it is still referenced (by our inode): queue its entries
 * for invalidation. Runs in whatever thread evicted, maybe a FUSE worker. */
static void on_evict(void *arg, struct cache_version *v)
{
    struct fs *fs = arg;
    uint64_t ino = FS_IMAGE_BASE + cache_version_id(v);
    pthread_mutex_lock(&fs->inval_lock);
    if (fs->inval_n == fs->inval_cap) {
        size_t cap = fs->inval_cap ? fs->inval_cap * 2 : 64;
        uint64_t *q = realloc(fs->inval_q, cap * sizeof(*q));
        if (q) {
            fs->inval_q = q;
            fs->inval_cap = cap;
        }
    }
    if (fs->inval_n < fs->inval_cap) {
        fs->inval_q[fs->inval_n++] = ino;
        pthread_cond_signal(&fs->inval_cond);
    }
    pthread_mutex_unlock(&fs->inval_lock);
}

static void *inval_main(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->inval_lock);
    while (!fs->inval_stop) {
        if (fs->inval_n == 0) {
            pthread_cond_wait(&fs->inval_cond, &fs->inval_lock);
            continue;
        }
        uint64_t ino = fs->inval_q[--fs->inval_n];
        pthread_mutex_unlock(&fs->inval_lock);
        struct fs_name names[FS_NAMES_MAX];
        memset(names, 0, sizeof(names));
        pthread_mutex_lock(&fs->ino_lock);
        struct fs_inode *n = ino_find_locked(fs, ino);
        for (size_t i = 0; n && i < FS_NAMES_MAX; i++) {
            if (n->names[i].name) {
                names[i].parent = n->names[i].parent;
                names[i].name = strdup(n->names[i].name);
            }
        }
        pthread_mutex_unlock(&fs->ino_lock);
        for (size_t i = 0; i < FS_NAMES_MAX; i++) {
            if (names[i].name) {
                /* ENOENT: the kernel had already forgotten it. Nothing else to do. */
                (void)fuse_lowlevel_notify_inval_entry(fs->se, names[i].parent, names[i].name,
                                                       strlen(names[i].name));
                free(names[i].name);
            }
        }
        pthread_mutex_lock(&fs->inval_lock);
    }
    pthread_mutex_unlock(&fs->inval_lock);
    return NULL;
}

/* ---- reload (SIGHUP) ------------------------------------------------------------ */

/* Invalidate parent/name in the kernel unless it still leads to the same id. */
static void inval_if_moved(struct fs *fs, fuse_ino_t parent, const char *name,
                           const char *old_id, const char *new_id)
{
    if (new_id && strcmp(old_id, new_id) == 0)
        return;
    /* -ENOENT: the kernel did not know the name; nothing to do either way. */
    (void)fuse_lowlevel_notify_inval_entry(fs->se, parent, name, strlen(name));
}

/* After a reload, make the kernel forget the names in / and in dashboard directories that
 * no longer lead where they did: removed or renamed dashboards and widgets, by name and
 * by id (SPEC 7). Runs in the reload thread, which serves no FUSE request (SPEC 12.2). */
static void inval_moved_names(struct fs *fs, const struct ns_tree *old, const struct ns_tree *now)
{
    for (size_t i = 0; i < old->n_dashboards; i++) {
        const struct ns_dashboard *d = &old->dashboards[i];
        const char *keys[2] = {d->name, d->id};
        for (size_t k = 0; k < 2; k++) {
            const struct ns_dashboard *nd = ns_find_dashboard(now, keys[k]);
            inval_if_moved(fs, FS_INO_ROOT, keys[k], ns_find_dashboard(old, keys[k])->id,
                           nd ? nd->id : NULL);
        }
        const struct ns_dashboard *same = NULL;
        for (size_t j = 0; j < now->n_dashboards && !same; j++)
            if (strcmp(now->dashboards[j].id, d->id) == 0)
                same = &now->dashboards[j];
        struct fs_inode *dn = same ? dir_inode(fs, FK_DASH, d->id, NULL) : NULL;
        for (size_t w = 0; dn && w < d->n_widgets; w++) {
            const char *wkeys[2] = {d->widgets[w].name, d->widgets[w].id};
            for (size_t k = 0; k < 2; k++) {
                const struct ns_widget *nw = ns_find_widget(same, wkeys[k]);
                inval_if_moved(fs, dn->ino, wkeys[k], ns_find_widget(d, wkeys[k])->id,
                               nw ? nw->id : NULL);
            }
        }
    }
}

/* Build a new generation from the file; all or nothing (SPEC 7). */
static void fs_reload(struct fs *fs)
{
    struct fs_gen *old = gen_get(fs);
    struct cfg *cfg = NULL;
    char *err = NULL;
    int rc = cfg_load(old->cfg->path, CFG_MODE_MOUNT, fs->env, &cfg, &err);
    if (rc != 0) {
        log_error("reload failed, keeping the old configuration: %s", err ? err : "out of memory");
        free(err);
        gen_unref(old);
        return;
    }
    int same_api = strcmp(cfg->endpoint, old->cfg->endpoint) == 0 &&
                   strcmp(cfg->access_key, old->cfg->access_key) == 0;
    struct fs_api *reuse = same_client(cfg, old->cfg) ? old->fa : NULL;
    if (strcmp(cfg->timezone, old->cfg->timezone) != 0)
        log_warn("time.timezone changed: a restart is needed for it to apply");
    struct fs_gen *g = gen_new(cfg, reuse, fs->opts.test_offset_ms, &err);
    if (!g) {
        log_error("reload failed, keeping the old configuration: %s", err ? err : "out of memory");
        free(err);
        gen_unref(old);
        return;
    }
    struct cache_params cp = {g->cfg->max_bytes, g->cfg->live_ttl_s, g->cfg->settle_s,
                              g->cfg->error_ttl_s, g->cfg->stale_if_error_s};
    pthread_mutex_lock(&fs->gen_lock);
    struct fs_gen *prev = fs->gen;
    fs->gen = g;
    pthread_mutex_unlock(&fs->gen_lock);
    if (!same_api) {
        /* Another account: nothing it cached or listed may show through. */
        cache_clear(fs->cache);
        pthread_mutex_lock(&fs->disc_lock);
        for (size_t i = 0; i < fs->n_disc; i++) {
            if (fs->disc[i].refreshing)
                continue; /* its result will be stale but is replaced on the next refresh */
            api_items_free(fs->disc[i].items, fs->disc[i].n);
            fs->disc[i].items = NULL;
            fs->disc[i].n = 0;
            fs->disc[i].have = 0;
            fs->disc[i].failed_mono = 0;
        }
        pthread_mutex_unlock(&fs->disc_lock);
    }
    cache_set_params(fs->cache, &cp);
    log_set_level(fs->opts.debug ? LOG_LVL_DEBUG : g->cfg->log_level);
    struct ns_tree *old_tree = tree_get(fs);
    tree_rebuild(fs);
    struct ns_tree *new_tree = tree_get(fs);
    inval_moved_names(fs, old_tree, new_tree);
    ns_unref(new_tree);
    ns_unref(old_tree);
    log_info("configuration reloaded from %s", g->cfg->path);
    gen_unref(prev);
    gen_unref(old);
}

static void *reload_main(void *arg)
{
    struct fs *fs = arg;
    for (;;) {
        char c;
        ssize_t r = read(fs->hup_pipe[0], &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || c == 'q')
            break;
        fs_reload(fs);
    }
    return NULL;
}

/* The write end of the SIGHUP pipe; the handler may only touch this. */
static int hup_fd = -1;

static void on_sighup(int sig)
{
    (void)sig;
    int saved = errno;
    char c = 'h';
    if (hup_fd >= 0 && write(hup_fd, &c, 1) < 0) {
        /* pipe full: a reload is already queued */
    }
    errno = saved;
}

static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    /* readdir must never look names up (that would make pending versions). */
    conn->want &= ~FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    /* The kernel asks GETATTR before reading a file whose attributes expired. */
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
        conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    clock_gettime(CLOCK_REALTIME, &fs->ready_at);
    clock_gettime(CLOCK_MONOTONIC, &fs->ready_mono);
    if (start_thread(&fs->reload_thread, reload_main, fs) == 0)
        fs->reload_started = 1;
    else
        log_error("cannot start the reload thread: SIGHUP will be ignored");
    if (start_thread(&fs->inval_thread, inval_main, fs) == 0)
        fs->inval_started = 1;
    else
        log_error("cannot start the invalidation thread: evicted graphs stay pinned");
}

static void op_destroy(void *userdata)
{
    struct fs *fs = userdata;
    if (fs->reload_started) {
        char c = 'q';
        if (write(fs->hup_pipe[1], &c, 1) == 1)
            pthread_join(fs->reload_thread, NULL);
        else
            pthread_detach(fs->reload_thread);
        fs->reload_started = 0;
    }
    if (fs->inval_started) {
        pthread_mutex_lock(&fs->inval_lock);
        fs->inval_stop = 1;
        pthread_cond_signal(&fs->inval_cond);
        pthread_mutex_unlock(&fs->inval_lock);
        pthread_join(fs->inval_thread, NULL);
        fs->inval_started = 0;
    }
}

static const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .destroy = op_destroy,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .fallocate = op_fallocate,
    .copy_file_range = op_copy_file_range,
};

/* ---- lifecycle ------------------------------------------------------------------ */

static void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    for (size_t i = 0; fs->buckets && i < fs->n_buckets; i++) {
        for (struct fs_inode *n = fs->buckets[i], *next; n; n = next) {
            next = n->next;
            inode_free(n);
        }
    }
    free(fs->buckets);
    cache_free(fs->cache);
    ns_unref(fs->tree);
    gen_unref(fs->gen);
    for (size_t i = 0; i < fs->n_disc; i++) {
        free(fs->disc[i].dash_id);
        api_items_free(fs->disc[i].items, fs->disc[i].n);
    }
    free(fs->disc);
    pthread_cond_destroy(&fs->disc_cond);
    free(fs->inval_q);
    pthread_cond_destroy(&fs->inval_cond);
    pthread_mutex_destroy(&fs->inval_lock);
    pthread_mutex_destroy(&fs->disc_lock);
    if (fs->hup_pipe[0] >= 0)
        close(fs->hup_pipe[0]);
    if (fs->hup_pipe[1] >= 0)
        close(fs->hup_pipe[1]);
    pthread_mutex_destroy(&fs->ino_lock);
    pthread_mutex_destroy(&fs->gen_lock);
    free(fs);
}

static struct fs *fs_new(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    if (!fs) {
        cfg_free(cfg);
        return NULL;
    }
    pthread_mutex_init(&fs->gen_lock, NULL);
    pthread_mutex_init(&fs->ino_lock, NULL);
    pthread_mutex_init(&fs->disc_lock, NULL);
    pthread_mutex_init(&fs->inval_lock, NULL);
    pthread_cond_init(&fs->inval_cond, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&fs->disc_cond, &ca);
    pthread_condattr_destroy(&ca);
    fs->hup_pipe[0] = fs->hup_pipe[1] = -1;
    fs->env = env;
    fs->opts = *o;
    fs->uid = o->set_uid ? o->uid : geteuid();
    fs->gid = o->set_gid ? o->gid : getegid();
    clock_gettime(CLOCK_REALTIME, &fs->ready_at);
    clock_gettime(CLOCK_MONOTONIC, &fs->ready_mono);
    fs->next_ino = FS_INO_FIRST_DYNAMIC;
    fs->n_buckets = 256;
    fs->buckets = calloc(fs->n_buckets, sizeof(*fs->buckets));
    char *err = NULL;
    fs->gen = gen_new(cfg, NULL, o->test_offset_ms, &err);
    fs->tree = fs->gen ? ns_build(fs->gen->cfg, NULL) : NULL;
    if (!fs->buckets || !fs->gen || !fs->tree) {
        fprintf(stderr, "insightfs: %s\n", err ? err : "out of memory");
        free(err);
        fs_free(fs);
        return NULL;
    }
    const struct cfg *c = fs->gen->cfg;
    struct cache_params cp = {c->max_bytes, c->live_ttl_s, c->settle_s, c->error_ttl_s,
                              c->stale_if_error_s};
    fs->cache = cache_new(&cp, fs_now_ms, fs, on_evict, fs);
    if (pipe2(fs->hup_pipe, O_CLOEXEC) != 0 || !fs->cache) {
        fprintf(stderr, "insightfs: cannot set up: %s\n", strerror(errno));
        fs_free(fs);
        return NULL;
    }
    fcntl(fs->hup_pipe[1], F_SETFL, O_NONBLOCK);
    /* The fixed inodes. */
    static const struct {
        uint64_t ino;
        enum fs_kind kind;
    } fixed[] = {{FS_INO_ROOT, FK_ROOT}, {FS_INO_META, FK_META_DIR}};
    for (size_t i = 0; i < 2; i++) {
        struct fs_inode *n = calloc(1, sizeof(*n));
        if (!n) {
            fs_free(fs);
            return NULL;
        }
        n->ino = fixed[i].ino;
        n->kind = fixed[i].kind;
        n->nlookup = 1;
        ino_insert_locked(fs, n);
    }
    return fs;
}

/* Build the libfuse argument vector: the options insightfs always mounts with. */
static int build_args(const struct fs_opts *o, struct fuse_args *args)
{
    char *opts = NULL;
    char *fsname = NULL;
    int rc = -ENOMEM;
    /* fsname: commas and backslashes must be escaped for libfuse's option parser. */
    size_t n = strlen(o->fsname);
    fsname = malloc(n * 2 + 1);
    if (!fsname)
        goto out;
    char *q = fsname;
    for (const char *p = o->fsname; *p; p++) {
        if (*p == ',' || *p == '\\')
            *q++ = '\\';
        *q++ = *p;
    }
    *q = '\0';
    if (asprintf(&opts, "ro,nosuid,nodev,default_permissions,subtype=insightfs,fsname=%s%s%s",
                 fsname, o->allow_other ? ",allow_other" : "",
                 o->auto_unmount ? ",auto_unmount" : "") < 0) {
        opts = NULL;
        goto out;
    }
    if (fuse_opt_add_arg(args, "insightfs") || fuse_opt_add_arg(args, "-o") ||
        fuse_opt_add_arg(args, opts))
        goto out;
    if (o->debug && fuse_opt_add_arg(args, "-d"))
        goto out;
    rc = 0;
out:
    free(opts);
    free(fsname);
    return rc;
}

static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt, va_list ap)
{
    enum log_level l = level <= FUSE_LOG_ERR       ? LOG_LVL_ERROR
                       : level <= FUSE_LOG_WARNING ? LOG_LVL_WARN
                       : level <= FUSE_LOG_INFO    ? LOG_LVL_INFO
                                                   : LOG_LVL_DEBUG;
    log_vmsg(l, fmt, ap);
}

int fs_run(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o)
{
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_loop_config *lc = NULL;
    int status = 1;
    int max_conn = cfg->max_connections;
    struct fs *fs = fs_new(cfg, env, o);
    if (!fs)
        return 1;
    if (build_args(o, &args) != 0) {
        fprintf(stderr, "insightfs: out of memory\n");
        goto out;
    }
    fuse_set_log_func(fuse_log_to_ours);
    fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
    if (!fs->se)
        goto out;
    /* SIGHUP first: libfuse only replaces default handlers, and its own would exit. */
    hup_fd = fs->hup_pipe[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGHUP, &sa, NULL) != 0 || fuse_set_signal_handlers(fs->se) != 0)
        goto out_session;
    if (fuse_session_mount(fs->se, o->mountpoint) != 0) {
        fprintf(stderr, "insightfs: %s: cannot mount (see the lines above)\n", o->mountpoint);
        goto out_signals;
    }
    if (fuse_daemonize(o->foreground) != 0)
        goto out_unmount;
    if (!o->foreground)
        log_init(1, log_get_level());
    int rc;
    if (o->single_thread) {
        rc = fuse_session_loop(fs->se);
    } else {
        lc = fuse_loop_cfg_create();
        if (!lc)
            goto out_unmount;
        fuse_loop_cfg_set_clone_fd(lc, 0);
        fuse_loop_cfg_set_max_threads(lc, (unsigned)max_conn + FS_SPARE_THREADS);
        fuse_loop_cfg_set_idle_threads(lc, 10);
        rc = fuse_session_loop_mt(fs->se, lc);
    }
    /* A loop ended by SIGINT/SIGTERM reports the signal as an error: that is a clean stop.
     * libfuse 3.14 returns the signal's number (positive; real errors are negative) and
     * resets the session before returning, so fuse_session_exited() is false by then. */
    status = (rc == 0 || rc == SIGINT || rc == SIGTERM || fuse_session_exited(fs->se)) ? 0 : 1;
    if (status != 0)
        log_error("the FUSE session ended with an error: %s", strerror(rc < 0 ? -rc : rc));
out_unmount:
    fuse_session_unmount(fs->se);
out_signals:
    fuse_remove_signal_handlers(fs->se);
    hup_fd = -1;
    signal(SIGHUP, SIG_IGN);
out_session:
    fuse_session_destroy(fs->se);
out:
    if (lc)
        fuse_loop_cfg_destroy(lc);
    fuse_opt_free_args(&args);
    fs_free(fs);
    return status;
}

const char *fs_libfuse_version(void)
{
    return fuse_pkgversion();
}
