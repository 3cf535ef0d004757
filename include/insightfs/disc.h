/* disc - the discovered lists of SPEC 4 (discover = true): GetDashboardList and, per
 * dashboard, GetDashboardWidgetList, with their refresh policy.
 *
 * A struct disc holds the last good answer of each list asked for: the dashboards, and
 * the widgets of each dashboard id. disc_need says whether a list must be refreshed and
 * hands out the ticket (single flight, failure memory: the flight primitive, as images
 * use it); the holder asks the API and calls disc_complete. disc_build_tree merges what
 * it holds with the configured entries into an ns_tree. It never calls the API and knows
 * nothing of FUSE or inodes. Every function is thread-safe (one mutex, never held
 * across I/O).
 */
#ifndef INSIGHTFS_DISC_H
#define INSIGHTFS_DISC_H

#include "insightfs/api.h"
#include "insightfs/cfg.h"
#include "insightfs/flight.h"
#include "insightfs/ns.h"

struct disc;

/* A new struct disc holding no list. Returns it, or NULL (out of memory). The caller
 * owns it and frees it with disc_free. */
struct disc *disc_new(void) __attribute__((warn_unused_result));

/* Free d and every list it holds. NULL-safe. No other call on d may be running. */
void disc_free(struct disc *d);

enum disc_need {
    DISC_OK,     /* use what is held: discover is off, the list is fresh, or a refresh
                    failed recently and the last good list stands in */
    DISC_FETCH,  /* the caller holds the ticket: ask the API, then disc_complete */
    DISC_WAIT,   /* a refresh is running: w (if any) joined it (disc_complete returns it) */
    DISC_FAILED, /* a refresh failed recently and there is no good list: *err (positive) */
};

/* What a caller that needs the list of dash_id's widgets (dash_id NULL: the dashboards)
 * up to date does (SPEC 4): see enum disc_need. A list younger than cfg->discover_ttl_s
 * is fresh; a failed refresh is remembered for cfg->error_ttl_s (single flight and
 * failure memory: flight.h). now: CLOCK_MONOTONIC ms. With DISC_FETCH, *epoch gets the
 * value to hand to disc_complete, and a non-NULL w joins too. cfg is borrowed; dash_id
 * is copied when kept. -ENOMEM comes back as DISC_FAILED. Thread-safe. */
enum disc_need disc_need(struct disc *d, const struct cfg *cfg, const char *dash_id, int64_t now,
                         struct flight_waiter *w, uint64_t *epoch, int *err)
    __attribute__((warn_unused_result));

/* The ticket holder's refresh of dash_id's list ended: rc 0 with items (taken over in
 * every case) and n, or a negative errno. A refresh that began before a disc_forget
 * (epoch) stores nothing. A failure is remembered for remember_ms. *result: 0 when a good
 * list is now held (the new one, or the last good one after a failure), else the
 * refresh's errno (-EAGAIN for one overtaken by disc_forget). *changed: 1 when a new list
 * was stored (rebuild the tree). Returns the waiters to answer (flight.h). Thread-safe. */
struct flight_waiter *disc_complete(struct disc *d, const char *dash_id, uint64_t epoch, int rc,
                                    struct api_item *items, size_t n, int64_t now,
                                    int64_t remember_ms, int *result, int *changed);

/* The tree of cfg's configured entries merged with every list d holds (ns_build); with
 * cfg->discover false, the configured entries alone, whatever d holds.
 * Returns a new tree with one reference (the caller owns it: ns_unref), or NULL (out of
 * memory); *generation (may be NULL) gets the disc_generation the tree reflects.
 * cfg is borrowed. Thread-safe. */
struct ns_tree *disc_build_tree(struct disc *d, const struct cfg *cfg, uint64_t *generation)
    __attribute__((warn_unused_result));

/* A number that grows whenever what d holds changes (a list stored, or forgotten), so a
 * caller can tell whether its tree is current. Thread-safe. */
uint64_t disc_generation(struct disc *d);

/* Drop every list d holds, with its failure memory (a reload that changed endpoint or
 * access key: nothing of the old account may show through; one that turned discovery
 * off: nothing discovered is kept). A refresh in flight then
 * stores nothing when it ends. Thread-safe. */
void disc_forget(struct disc *d);

#endif
