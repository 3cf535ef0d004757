/* fs_ra - readahead of listings (SPEC 5, cache.readahead).
 *
 * GNU `ls -l`, file managers and thumbnailers stat a listing one entry at a time, in
 * readdir order; each stat of a pending image is one fetch, so 30 days at 20 ms take
 * 600 ms while max_connections sit idle. When the daemon sees LOOKUPs or GETATTRs of two
 * entries in a row of a listing, in its order, it fetches the entries that follow:
 * a window of 2 that doubles up to max_connections, the next window starting when the
 * stats reach the middle of the current one, as the kernel's file readahead does. A stat
 * out of order stops it; a forward skip within what was fetched ahead (entries the
 * kernel answered itself, or already fresh) does not. Never past the listing's end,
 * never for entries cached or remembered as failed (cache_get_ahead, cache_need), never
 * while the circuit breaker is open (api_is_down). So `ls` alone fetches nothing, a lone
 * stat fetches its own file, and `ls -l` of N entries makes exactly N requests.
 *
 * "The listing" is the newest snapshot of a widget or days/ directory, taken at its
 * OPENDIR (fs_dir.c), kept while it is open and for 10 s after its last RELEASEDIR,
 * charged to the cache's byte bound. Snapshots are few (one per directory being listed).
 *
 * Locking: lock guards the snapshot list and every snapshot's state. Fetches are started
 * after it is released (the names are copied out).
 */
#include "fs_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/vpath.h"

#define RA_KEEP_MS 10000 /* a listing is kept this long after its last RELEASEDIR */
#define RA_FIRST_WINDOW 2

struct ra_listing {
    struct ra_listing *next;
    uint64_t dir;
    enum fs_kind kind; /* FK_WIDGET or FK_DAYS */
    char *dash_id, *widget_id;
    char **names;
    size_t n;
    size_t charge;
    int opens;        /* open handles; at 0 the listing expires at expires */
    int64_t expires;  /* CLOCK_MONOTONIC ms */
    size_t last;      /* position of the last stat, SIZE_MAX: none */
    int streak;       /* stats in a row in listing order */
    size_t ahead_end; /* entries before this were fetched ahead (or stat'ed) */
    size_t window;    /* size of the current window, 0: none */
    size_t mark;      /* when the stats reach this position, the next window starts */
};

struct fs_ra {
    pthread_mutex_t lock;
    struct ra_listing *head; /* protected by lock */
    atomic_size_t n;         /* listings held (read without the lock as a hint) */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct fs_ra *fs_ra_new(void)
{
    struct fs_ra *ra = calloc(1, sizeof(*ra));
    if (ra)
        pthread_mutex_init(&ra->lock, NULL);
    return ra;
}

static void listing_free(struct ra_listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    free(l->dash_id);
    free(l->widget_id);
    free(l);
}

void fs_ra_free(struct fs_ra *ra)
{
    if (!ra)
        return;
    while (ra->head) {
        struct ra_listing *l = ra->head;
        ra->head = l->next;
        listing_free(l);
    }
    pthread_mutex_destroy(&ra->lock);
    free(ra);
}

/* lock held. The listing of dir, or NULL; unlinked when unlink is set, else moved to
 * the front: the stats of one directory come together, so after its first one the
 * listing is found at once however many directories were listed. */
static struct ra_listing *find(struct fs_ra *ra, uint64_t dir, int unlink)
{
    for (struct ra_listing **pp = &ra->head; *pp; pp = &(*pp)->next) {
        if ((*pp)->dir == dir) {
            struct ra_listing *l = *pp;
            *pp = l->next;
            if (!unlink) {
                l->next = ra->head;
                ra->head = l;
            }
            return l;
        }
    }
    return NULL;
}

void fs_ra_listing(struct fs *fs, const struct fs_inode *dir, char **names, size_t n)
{
    struct ra_listing *l = calloc(1, sizeof(*l));
    size_t charge = sizeof(*l) + n * sizeof(char *);
    for (size_t i = 0; i < n; i++)
        charge += strlen(names[i]) + 1 + 16;
    if (!l || !(l->dash_id = strdup(dir->dash_id)) || !(l->widget_id = strdup(dir->widget_id))) {
        if (l) {
            l->names = names;
            l->n = n;
            listing_free(l);
        } else {
            for (size_t i = 0; i < n; i++)
                free(names[i]);
            free(names);
        }
        return; /* out of memory: no readahead for this listing */
    }
    l->dir = dir->ino;
    l->kind = dir->kind;
    l->names = names;
    l->n = n;
    l->charge = charge;
    l->last = SIZE_MAX;
    cache_charge(fs->cache, charge);
    pthread_mutex_lock(&fs->ra->lock);
    struct ra_listing *old = find(fs->ra, dir->ino, 1);
    l->opens = 1 + (old ? old->opens : 0);
    l->next = fs->ra->head;
    fs->ra->head = l;
    if (!old)
        atomic_fetch_add(&fs->ra->n, 1);
    pthread_mutex_unlock(&fs->ra->lock);
    if (old) {
        cache_uncharge(fs->cache, old->charge);
        listing_free(old);
    }
}

void fs_ra_release(struct fs *fs, uint64_t dir)
{
    pthread_mutex_lock(&fs->ra->lock);
    struct ra_listing *l = find(fs->ra, dir, 0);
    if (l && l->opens > 0 && --l->opens == 0)
        l->expires = mono_ms() + RA_KEEP_MS;
    pthread_mutex_unlock(&fs->ra->lock);
}

void fs_ra_sweep(struct fs *fs, int64_t now)
{
    struct ra_listing *dead = NULL;
    pthread_mutex_lock(&fs->ra->lock);
    for (struct ra_listing **pp = &fs->ra->head; *pp;) {
        struct ra_listing *l = *pp;
        if (l->opens == 0 && now >= l->expires) {
            *pp = l->next;
            l->next = dead;
            dead = l;
            atomic_fetch_sub(&fs->ra->n, 1);
        } else {
            pp = &l->next;
        }
    }
    pthread_mutex_unlock(&fs->ra->lock);
    while (dead) {
        struct ra_listing *l = dead;
        dead = l->next;
        cache_uncharge(fs->cache, l->charge);
        listing_free(l);
    }
}

/* lock held. The position of name in l, looking after the last stat first. */
static size_t position(const struct ra_listing *l, const char *name)
{
    size_t start = l->last == SIZE_MAX ? 0 : l->last;
    for (size_t k = 0; k < l->n; k++) {
        size_t i = (start + k) % l->n;
        if (strcmp(l->names[i], name) == 0)
            return i;
    }
    return SIZE_MAX;
}

/* lock held. A stat at position p: update the sequence and say which entries to fetch
 * ahead ([*from, *to)). */
static void advance(struct ra_listing *l, size_t p, size_t max_window, size_t *from, size_t *to)
{
    *from = *to = 0;
    if (p == l->last)
        return; /* LOOKUP then GETATTR of one entry */
    size_t reach =
        l->last == SIZE_MAX ? 0 : (l->ahead_end > l->last + 1 ? l->ahead_end : l->last + 1);
    int in_order = l->last != SIZE_MAX && p > l->last && p <= reach;
    l->last = p;
    if (!in_order) {
        l->streak = 1;
        l->window = 0;
        l->ahead_end = p + 1;
        return;
    }
    l->streak++;
    if (l->ahead_end < p + 1)
        l->ahead_end = p + 1;
    if (l->streak < 2 || (l->window && p < l->mark))
        return;
    size_t w = l->window ? l->window * 2 : RA_FIRST_WINDOW;
    if (w > max_window)
        w = max_window;
    if (w < 1)
        w = 1;
    size_t start = l->ahead_end;
    size_t end = start + w < l->n ? start + w : l->n;
    if (start >= end)
        return;
    l->window = w;
    l->ahead_end = end;
    l->mark = start + (end - start) / 2;
    *from = start;
    *to = end;
}

/* A stat of dir/name: maybe fetch ahead. */
static void note(struct fs *fs, uint64_t dir, const char *name)
{
    if (atomic_load(&fs->ra->n) == 0)
        return;
    struct fs_gen *g = fs_gen_get(fs);
    int on = g->cfg->readahead && !api_is_down(g->api);
    size_t max_window = (size_t)g->cfg->max_connections;
    enum vpath_res def_res = g->cfg->resolution;
    int align_s = g->cfg->align_s;
    fs_gen_unref(g);
    if (!on)
        return;
    size_t from = 0, to = 0;
    char **names = NULL;
    char *dash_id = NULL, *widget_id = NULL;
    enum fs_kind kind = FK_WIDGET;
    pthread_mutex_lock(&fs->ra->lock);
    struct ra_listing *l = find(fs->ra, dir, 0);
    size_t p = l ? position(l, name) : SIZE_MAX;
    if (p != SIZE_MAX)
        advance(l, p, max_window, &from, &to);
    if (to > from && (names = calloc(to - from, sizeof(*names))) != NULL) {
        for (size_t i = from; i < to; i++)
            names[i - from] = strdup(l->names[i]);
        dash_id = strdup(l->dash_id);
        widget_id = strdup(l->widget_id);
        kind = l->kind;
    }
    pthread_mutex_unlock(&fs->ra->lock);
    if (!names)
        return;
    struct cache_clock now = fs_clock(fs);
    struct vpath_clock clk = {now.wall, align_s};
    for (size_t i = 0; dash_id && widget_id && i < to - from; i++) {
        struct vpath_image img;
        if (names[i] && (kind == FK_DAYS ? vpath_parse_day(names[i], def_res, &clk, &img)
                                         : vpath_parse_image(names[i], def_res, &clk, &img)) == 0) {
            struct cache_key key = {dash_id, widget_id, img.start_ms, img.end_ms, img.res};
            struct cache_version *v = cache_get_ahead(fs->cache, &key, &now);
            if (v) {
                (void)fs_fetch_ahead(fs, v);
                cache_version_unref(v);
            }
        }
        free(names[i]);
    }
    free(names);
    free(dash_id);
    free(widget_id);
    fs_drain_dropped(fs);
}

void fs_ra_lookup(struct fs *fs, uint64_t dir, const char *name)
{
    note(fs, dir, name);
}

void fs_ra_getattr(struct fs *fs, const struct fs_inode *n)
{
    if (atomic_load(&fs->ra->n) == 0)
        return; /* no listing to follow: the common cold read costs nothing here */
    struct fs_name *names;
    if (fs_ino_names(fs->ino, n->ino, 1, &names) == 1)
        note(fs, names[0].parent, names[0].name); /* the newest */
    free(names);
}
