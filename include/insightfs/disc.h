/* disc - the discovered lists of SPEC 4 (discover = true): GetDashboardList and, per
 * dashboard, GetDashboardWidgetList, with their refresh policy.
 *
 * A struct disc holds the last good answer of each list asked for: the dashboards, and
 * the widgets of each dashboard id. disc_refresh brings one list up to date in single
 * flight when it is older than discover_ttl_s, remembers a failure for error_ttl_s and
 * falls back on the last good list; disc_build_tree merges what it holds with the
 * configured entries into an ns_tree. It knows nothing of FUSE or inodes.
 * Every function is thread-safe (one mutex per struct disc, never held across I/O).
 */
#ifndef INSIGHTFS_DISC_H
#define INSIGHTFS_DISC_H

#include "insightfs/api.h"
#include "insightfs/cfg.h"
#include "insightfs/ns.h"

struct disc;

/* A new struct disc holding no list. Returns it, or NULL (out of memory). The caller
 * owns it and frees it with disc_free. */
struct disc *disc_new(void) __attribute__((warn_unused_result));

/* Free d and every list it holds. NULL-safe. No other call on d may be running. */
void disc_free(struct disc *d);

/* Bring the list of dash_id's widgets (dash_id NULL: the list of dashboards) up to date.
 * Does nothing and returns 0 when cfg->discover is false. Otherwise:
 *  - a good list younger than cfg->discover_ttl_s is used as is (no request);
 *  - while another thread refreshes the same list, waits for it (single flight) at most
 *    timeout_ms * (retries + 1) + 500 ms, then uses what it stored; a wait that times
 *    out returns 0 with a last good list, else -ETIMEDOUT;
 *  - a refresh that failed less than cfg->error_ttl_s ago is not retried: returns 0 with
 *    a last good list, else that refresh's negative errno;
 *  - otherwise asks the API (api_list_dashboards / api_list_widgets) with no lock held.
 * Returns 0 when a good list is there (fresh, or the last good one after a failed
 * refresh), else a negative errno: the refresh's (any of api.h's list calls), -ETIMEDOUT
 * (see above) or -ENOMEM. Sets *changed (may be NULL) to 1 when this call stored a new
 * list - the caller should then rebuild its tree with disc_build_tree - else to 0.
 * api and cfg are borrowed for the call; dash_id is copied when kept. Thread-safe. */
int disc_refresh(struct disc *d, struct api *api, const struct cfg *cfg, const char *dash_id,
                 int *changed) __attribute__((warn_unused_result));

/* The tree of cfg's configured entries merged with every list d holds (ns_build).
 * Returns a new tree with one reference (the caller owns it: ns_unref), or NULL (out of
 * memory); *generation (may be NULL) gets the disc_generation the tree reflects.
 * cfg is borrowed. Thread-safe. */
struct ns_tree *disc_build_tree(struct disc *d, const struct cfg *cfg, uint64_t *generation)
    __attribute__((warn_unused_result));

/* A number that grows whenever what d holds changes (a list stored, or forgotten), so a
 * caller can tell whether its tree is current. Thread-safe. */
uint64_t disc_generation(struct disc *d);

/* Drop every list d holds, with its failure memory (a reload that changed endpoint or
 * access key: nothing of the old account may show through). A refresh in flight then
 * stores nothing when it ends. Thread-safe. */
void disc_forget(struct disc *d);

#endif
