/* ns - the tree of dashboards and widgets: the configured ones, then discovered ones.
 *
 * An ns_tree is an immutable, refcounted snapshot built from a struct cfg and, when
 * discover = true, the lists the API gave (SPEC 4, Discovery): API names sanitized,
 * configured entries keep their names and win by id, a discovered name that equals a
 * name or id already taken among its siblings gets " (<id>)" appended, and the widgets
 * of configured dashboards are discovered too. Lookups match names first, then ids.
 * Pure: no I/O. A tree may be read from many threads at once.
 */
#ifndef INSIGHTFS_NS_H
#define INSIGHTFS_NS_H

#include <stdatomic.h>
#include <stddef.h>

#include "insightfs/api.h"
#include "insightfs/cfg.h"

struct ns_widget {
    char *name;
    char *id;
};

struct ns_dashboard {
    char *name;
    char *id;
    struct ns_widget *widgets;
    size_t n_widgets;
};

struct ns_tree {
    struct ns_dashboard *dashboards; /* configured first in config order, then discovered */
    size_t n_dashboards;
    atomic_int refs;
};

/* Discovered lists: the API's dashboards, and for each dashboard id the widgets the API
 * listed. Any part may be missing (NULL / 0). */
struct ns_discovered {
    const struct api_item *dashboards;
    size_t n_dashboards;
    /* widget lists, matched to dashboards by id */
    const char *const *widget_dash_ids;
    const struct api_item *const *widgets;
    const size_t *n_widgets;
    size_t n_widget_lists;
};

/* Build a tree from cfg (borrowed) and disc (borrowed; NULL for configured only).
 * Returns a tree with one reference, or NULL (ENOMEM). */
struct ns_tree *ns_build(const struct cfg *cfg, const struct ns_discovered *disc);
void ns_ref(struct ns_tree *t);
void ns_unref(struct ns_tree *t); /* NULL-safe */

/* By name first, then by id; NULL when neither matches. */
const struct ns_dashboard *ns_find_dashboard(const struct ns_tree *t, const char *name);
const struct ns_widget *ns_find_widget(const struct ns_dashboard *d, const char *name);

/* Escape s for a libconfig string literal ("..." without the quotes): '"' and '\\'
 * escaped, control bytes as \xNN (libconfig reads \x escapes). Returns malloc'd or NULL. */
char *ns_config_escape(const char *s);

#endif
