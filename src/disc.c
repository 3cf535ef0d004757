/* disc - the discovered lists of SPEC 4: GetDashboardList and GetDashboardWidgetList.
 *
 * One entry per list: the dashboards (dash_id NULL) and one per dashboard id whose
 * widgets were asked for, made on first use and kept for the life of the struct disc.
 * Each keeps its last good answer (the API's items as given: ns sanitizes the names),
 * when it was stored, whether a refresh is in flight, and when and how the last refresh
 * failed. Times are CLOCK_MONOTONIC milliseconds.
 *
 * Refresh policy, per list (disc_refresh):
 *  - fresh: a good answer younger than discover_ttl_s is used as is;
 *  - single flight: the first caller to find the list stale marks it refreshing and asks
 *    the API with the lock released; later callers wait on cond (deadline: the logical
 *    call's D + 500 ms, so the refresh they joined ends first), then decide again with
 *    what it stored;
 *  - failure memory: a failed refresh is remembered for error_ttl_s, like a failed image
 *    (SPEC 6): no new request until then;
 *  - last good: after a failed refresh the last good answer stays in use; with none the
 *    caller gets the refresh's errno (the filesystem answers it, never ENOENT).
 * disc_forget drops every list; a refresh already in flight when it is called stores
 * nothing (epoch tells). generation grows with every change, so the filesystem can
 * tell whether its tree reflects the latest lists.
 *
 * Locking: lock guards the array and every field of every list; cond (CLOCK_MONOTONIC)
 * is broadcast when a refresh ends. lock is never held across the API call; the only
 * calls made under it are api_items_free and, in disc_build_tree, ns_build (pure and
 * quick), so the lists stay alive without a copy.
 */
#include "insightfs/disc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One discovered list: the dashboards (dash_id NULL) or one dashboard's widgets.
 * Every field is protected by disc.lock. */
struct disc_list {
    char *dash_id;
    struct api_item *items; /* last good answer, or NULL */
    size_t n;
    int have;             /* a good answer is stored */
    int64_t fetched_mono; /* when it was stored */
    int refreshing;       /* a refresh is in flight (single flight) */
    int64_t failed_mono;  /* when the last refresh failed (0: it did not) */
    int last_rc;          /* the last refresh's result */
};

struct disc {
    pthread_mutex_t lock;
    pthread_cond_t cond;     /* a refresh ended */
    struct disc_list *lists; /* protected by lock; may move when a list is added */
    size_t n_lists;          /* protected by lock */
    uint64_t epoch;          /* protected by lock: grows with every disc_forget */
    uint64_t generation;     /* protected by lock: grows with every change of lists */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct disc *disc_new(void)
{
    struct disc *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        free(d);
        return NULL;
    }
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&d->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        free(d);
        return NULL;
    }
    if (pthread_mutex_init(&d->lock, NULL) != 0) {
        pthread_cond_destroy(&d->cond);
        free(d);
        return NULL;
    }
    return d;
}

void disc_free(struct disc *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_lists; i++) {
        free(d->lists[i].dash_id);
        api_items_free(d->lists[i].items, d->lists[i].n);
    }
    free(d->lists);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* The list for dash_id (NULL: the dashboards), made on first use; NULL when out of
 * memory. lock held. The pointer is valid until lock is released. */
static struct disc_list *list_locked(struct disc *d, const char *dash_id)
{
    for (size_t i = 0; i < d->n_lists; i++) {
        const char *id = d->lists[i].dash_id;
        if ((!id && !dash_id) || (id && dash_id && strcmp(id, dash_id) == 0))
            return &d->lists[i];
    }
    struct disc_list *a = realloc(d->lists, (d->n_lists + 1) * sizeof(*a));
    if (!a)
        return NULL;
    d->lists = a;
    struct disc_list *l = &a[d->n_lists];
    memset(l, 0, sizeof(*l));
    if (dash_id && !(l->dash_id = strdup(dash_id)))
        return NULL;
    d->n_lists++;
    return l;
}

int disc_refresh(struct disc *d, struct api *api, const struct cfg *cfg, const char *dash_id,
                 int *changed)
{
    if (changed)
        *changed = 0;
    if (!cfg->discover)
        return 0;
    int64_t ttl_ms = (int64_t)cfg->discover_ttl_s * 1000;
    int64_t deadline = mono_ms() + (int64_t)cfg->timeout_ms * (cfg->retries + 1) + 500;
    int rc;
    pthread_mutex_lock(&d->lock);
    struct disc_list *l = list_locked(d, dash_id);
    if (!l) {
        rc = -ENOMEM;
        goto out_locked;
    }
    while (l->refreshing) {
        struct timespec ts = {deadline / 1000, (long)(deadline % 1000) * 1000000};
        if (pthread_cond_timedwait(&d->cond, &d->lock, &ts) == ETIMEDOUT) {
            rc = l->have ? 0 : -ETIMEDOUT;
            goto out_locked;
        }
        l = list_locked(d, dash_id); /* the array may have moved */
    }
    if (l->have && mono_ms() - l->fetched_mono < ttl_ms) {
        rc = 0;
        goto out_locked;
    }
    if (l->failed_mono && mono_ms() - l->failed_mono < (int64_t)cfg->error_ttl_s * 1000) {
        rc = l->have ? 0 : l->last_rc;
        goto out_locked;
    }
    l->refreshing = 1;
    uint64_t epoch = d->epoch;
    pthread_mutex_unlock(&d->lock);

    struct api_item *items = NULL;
    size_t n = 0;
    rc = dash_id ? api_list_widgets(api, dash_id, &items, &n, NULL)
                 : api_list_dashboards(api, &items, &n, NULL);

    pthread_mutex_lock(&d->lock);
    /* Found, not made: it exists, and lists are never removed. */
    l = list_locked(d, dash_id);
    l->refreshing = 0;
    l->last_rc = rc;
    if (epoch != d->epoch) {
        /* Asked of the account before a disc_forget: its answer must not show. */
        api_items_free(items, n);
        items = NULL;
        if (rc == 0)
            rc = -EAGAIN;
    } else if (rc == 0) {
        d->generation++;
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
    pthread_cond_broadcast(&d->cond);
    if (changed && items)
        *changed = 1;
out_locked:
    pthread_mutex_unlock(&d->lock);
    return rc;
}

uint64_t disc_generation(struct disc *d)
{
    pthread_mutex_lock(&d->lock);
    uint64_t g = d->generation;
    pthread_mutex_unlock(&d->lock);
    return g;
}

struct ns_tree *disc_build_tree(struct disc *d, const struct cfg *cfg, uint64_t *generation)
{
    pthread_mutex_lock(&d->lock);
    if (generation)
        *generation = d->generation;
    size_t nl = d->n_lists;
    const char **ids = calloc(nl ? nl : 1, sizeof(*ids));
    const struct api_item **items = calloc(nl ? nl : 1, sizeof(*items));
    size_t *ns = calloc(nl ? nl : 1, sizeof(*ns));
    struct ns_tree *t = NULL;
    if (ids && items && ns) {
        struct ns_discovered disc = {0};
        size_t k = 0;
        for (size_t i = 0; i < nl; i++) {
            const struct disc_list *l = &d->lists[i];
            if (!l->dash_id) {
                disc.dashboards = l->items;
                disc.n_dashboards = l->n;
            } else {
                ids[k] = l->dash_id;
                items[k] = l->items;
                ns[k] = l->n;
                k++;
            }
        }
        disc.widget_dash_ids = ids;
        disc.widgets = items;
        disc.n_widgets = ns;
        disc.n_widget_lists = k;
        t = ns_build(cfg, &disc);
    }
    pthread_mutex_unlock(&d->lock);
    free(ids);
    free(items);
    free(ns);
    return t;
}

void disc_forget(struct disc *d)
{
    pthread_mutex_lock(&d->lock);
    d->epoch++;
    d->generation++;
    for (size_t i = 0; i < d->n_lists; i++) {
        struct disc_list *l = &d->lists[i];
        api_items_free(l->items, l->n);
        l->items = NULL;
        l->n = 0;
        l->have = 0;
        l->failed_mono = 0;
    }
    pthread_mutex_unlock(&d->lock);
}
