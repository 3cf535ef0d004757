/* disc - the discovered lists of SPEC 4: GetDashboardList and GetDashboardWidgetList.
 *
 * One record per list: the dashboards (dash_id NULL) and one per dashboard id whose
 * widgets were asked for, made on first use and kept for the life of the struct disc.
 * Each keeps its last good answer (the API's items as given: ns sanitizes the names),
 * when it was stored (CLOCK_MONOTONIC ms, passed in), and its refresh's flight.
 *
 * Refresh policy, per list (disc_need, disc_complete):
 *  - fresh: a good answer younger than discover_ttl_s is used as is;
 *  - single flight: the first caller to find the list stale gets the ticket and asks the
 *    API with no lock held; later callers join the flight and are handed back by
 *    disc_complete, all with that one refresh's result (also at error_ttl_s = 0);
 *  - failure memory: a failed refresh is remembered for error_ttl_s, like a failed image
 *    (SPEC 6): no new request until then (the caller passes remember_ms 0 for a circuit
 *    breaker's fast-fail, which is not a remembered failure);
 *  - last good: after a failed refresh the last good answer stays in use; with none the
 *    caller gets the refresh's errno (the filesystem answers it, never ENOENT).
 * disc_forget drops every list; a refresh already in flight when it is called stores
 * nothing (epoch tells). With discover = false no list is asked for and none held is
 * merged into a tree (disc_build_tree), whatever is still stored. generation grows with every
 * change, so the filesystem can tell whether its tree reflects the latest lists.
 *
 * Locking: lock guards the array and every field of every list. It is never held across
 * an API call (none is made here); the only calls made under it are api_items_free and,
 * in disc_build_tree, ns_build (pure and quick), so the lists stay alive without a copy.
 */
#include "insightfs/disc.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One discovered list: the dashboards (dash_id NULL) or one dashboard's widgets.
 * Every field is protected by disc.lock. */
struct disc_list {
    char *dash_id;
    struct api_item *items; /* last good answer, or NULL */
    size_t n;
    int have;             /* a good answer is stored */
    int64_t fetched_mono; /* when it was stored */
    struct flight flight; /* the refresh: single flight and failure memory */
};

struct disc {
    pthread_mutex_t lock;
    struct disc_list *lists; /* protected by lock; may move when a list is added */
    size_t n_lists;          /* protected by lock */
    uint64_t epoch;          /* protected by lock: grows with every disc_forget */
    uint64_t generation;     /* protected by lock: grows with every change of lists */
};

struct disc *disc_new(void)
{
    struct disc *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    if (pthread_mutex_init(&d->lock, NULL) != 0) {
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
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* The list for dash_id (NULL: the dashboards), made on first use when make is set; NULL
 * when out of memory or not found. lock held. Valid until lock is released. */
static struct disc_list *list_locked(struct disc *d, const char *dash_id, int make)
{
    for (size_t i = 0; i < d->n_lists; i++) {
        const char *id = d->lists[i].dash_id;
        if ((!id && !dash_id) || (id && dash_id && strcmp(id, dash_id) == 0))
            return &d->lists[i];
    }
    if (!make)
        return NULL;
    char *copy = NULL;
    if (dash_id && !(copy = strdup(dash_id)))
        return NULL;
    struct disc_list *a = realloc(d->lists, (d->n_lists + 1) * sizeof(*a));
    if (!a) {
        free(copy);
        return NULL;
    }
    d->lists = a;
    struct disc_list *l = &a[d->n_lists];
    memset(l, 0, sizeof(*l));
    l->dash_id = copy;
    d->n_lists++;
    return l;
}

enum disc_need disc_need(struct disc *d, const struct cfg *cfg, const char *dash_id, int64_t now,
                         struct flight_waiter *w, uint64_t *epoch, int *err)
{
    if (!cfg->discover)
        return DISC_OK;
    enum disc_need need = DISC_OK;
    pthread_mutex_lock(&d->lock);
    struct disc_list *l = list_locked(d, dash_id, 1);
    if (!l) {
        *err = ENOMEM;
        need = DISC_FAILED;
    } else if (l->have && now - l->fetched_mono < (int64_t)cfg->discover_ttl_s * 1000 &&
               !l->flight.running) {
        need = DISC_OK;
    } else {
        switch (flight_begin(&l->flight, now, w, err)) {
        case FLIGHT_FETCH:
            need = DISC_FETCH;
            *epoch = d->epoch;
            break;
        case FLIGHT_WAIT:
            need = DISC_WAIT;
            break;
        case FLIGHT_FAILED:
            need = l->have ? DISC_OK : DISC_FAILED;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return need;
}

struct flight_waiter *disc_complete(struct disc *d, const char *dash_id, uint64_t epoch, int rc,
                                    struct api_item *items, size_t n, int64_t now,
                                    int64_t remember_ms, int *result, int *changed)
{
    struct api_item *old = NULL;
    size_t old_n = 0;
    *changed = 0;
    pthread_mutex_lock(&d->lock);
    /* Found, not made: it exists (disc_need made it), and lists are never removed. */
    struct disc_list *l = list_locked(d, dash_id, 0);
    if (epoch != d->epoch) {
        /* Asked of the account before a disc_forget: its answer must not show. */
        old = items, old_n = n;
        if (rc == 0)
            rc = -EAGAIN;
        remember_ms = 0; /* nor its failure: disc_forget dropped the memory */
    } else if (rc == 0) {
        d->generation++;
        old = l->items, old_n = l->n;
        l->items = items;
        l->n = n;
        l->have = 1;
        l->fetched_mono = now;
        *changed = 1;
    }
    struct flight_waiter *w = flight_end(&l->flight, rc, now, remember_ms);
    *result = (rc == 0 || l->have) ? 0 : rc;
    pthread_mutex_unlock(&d->lock);
    api_items_free(old, old_n);
    return w;
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
    if (!cfg->discover) {
        /* Lists stored while discovery was on (or by a request that began before a
         * reload turned it off) never show: SPEC 3, discover = false lists nothing. */
        pthread_mutex_unlock(&d->lock);
        return ns_build(cfg, NULL);
    }
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
        flight_forget(&l->flight);
    }
    pthread_mutex_unlock(&d->lock);
}
