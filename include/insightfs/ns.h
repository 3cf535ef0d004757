/* ns - the tree of dashboards and widgets: the configured ones, then discovered ones.
 *
 * An ns_tree is an immutable, refcounted snapshot built from a struct cfg and, when
 * discover = true, the lists the API gave (SPEC 4, Discovery): API names sanitized,
 * configured entries keep their names and win by id, a discovered name that equals a
 * name or id already taken among its siblings (or equal to CFG_PAGE_NAME while
 * cfg->pages) gets " (<id>)" appended (its name cut at a UTF-8 boundary so the whole is
 * at most 255 bytes; an id over 251 bytes is shown as "#" and a 64-bit hash; '/' and
 * control bytes of the id as '_'; still unique among siblings, see src/ns.c), and the
 * widgets of configured dashboards are discovered too. Every name of a built tree obeys
 * SPEC 3's rules for names.
 *
 * Two ways in, never mixed: a name a user typed matches names first, then ids
 * (ns_find_*, ns_resolve); an id the program stored (an inode's dashboard or widget id)
 * matches ids only (ns_*_by_id), because a name may equal another entry's id.
 * Pure: no I/O. A tree may be read from many threads at once.
 */
#ifndef INSIGHTFS_NS_H
#define INSIGHTFS_NS_H

#include <stdatomic.h>
#include <stddef.h>

#include "insightfs/api.h"
#include "insightfs/cfg.h"
#include "insightfs/vpath.h"

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

/* For names users type: by name first, then by id; NULL when neither matches. The
 * result points into the tree (valid while the caller holds a reference). */
const struct ns_dashboard *ns_find_dashboard(const struct ns_tree *t, const char *name);
const struct ns_widget *ns_find_widget(const struct ns_dashboard *d, const char *name);

/* For ids the program stored: the dashboard of t (the widget of d) whose id is id, never
 * matching names; NULL when there is none, or when t (d) or id is NULL. Ids are unique
 * among siblings in a built tree. The result points into the tree. Thread-safe. */
const struct ns_dashboard *ns_dashboard_by_id(const struct ns_tree *t, const char *id);
const struct ns_widget *ns_widget_by_id(const struct ns_dashboard *d, const char *id);

/* What a path names: the tree's four kinds of directory, or an image file. */
enum ns_kind {
    NS_ROOT = 0,  /* "/" */
    NS_DASHBOARD, /* a dashboard directory */
    NS_WIDGET,    /* a widget directory */
    NS_DAYS,      /* a widget's days/ */
    NS_IMAGE,     /* an image name in a widget directory or in days/ */
};

/* A place in the tree, by ids. A zeroed node is the root. */
struct ns_node {
    enum ns_kind kind;
    const char *dash_id;    /* every kind but NS_ROOT; NULL there */
    const char *widget_id;  /* NS_WIDGET, NS_DAYS, NS_IMAGE; NULL otherwise */
    struct vpath_image img; /* NS_IMAGE: the range, resolution and changes_at_ms; zero
                               otherwise. (dash_id, widget_id, start_ms, end_ms, res) is
                               the image's identity (SPEC 4: equal keys, one image) */
};

/* Resolve one path component, name, under parent: the one name resolver of the mount's
 * LOOKUP and of --fetch (SPEC 4).
 *  - under NS_ROOT: a dashboard, its name first, then its id;
 *  - under NS_DASHBOARD: a widget of that dashboard, its name first, then its id;
 *  - under NS_WIDGET: "days" (NS_DAYS), else an image name (vpath_parse_image);
 *  - under NS_DAYS: a day's image name (vpath_parse_day);
 *  - under NS_IMAGE: nothing (-ENOTDIR).
 * The parent is found in t by its ids only (ns_dashboard_by_id, ns_widget_by_id): a parent
 * whose ids t no longer holds has no children (-ENOENT). Image names are resolved against
 * clk with def_res when the name has no @high/@auto.
 * Returns 0 and fills *out: its ids point into t (borrowed: valid while the caller holds
 * t), img is set for NS_IMAGE only. *out is written only on success.
 * -ENOENT: no such child, also for a NULL or empty name, "." and "..", a name outside the
 * grammar and a future day; -ENOTDIR: the parent is an image; -EINVAL: t, parent, clk or
 * out is NULL, parent->kind is not an ns_kind, or clk->align_s < 1 (caller bugs).
 * Not answered here, by design: "/.insightfs" and "index.html" (pages = true), which the
 * filesystem answers before calling this (--fetch serves neither), and discovery: an
 * unknown dashboard or widget is -ENOENT, and refreshing the lists and resolving again
 * is the caller's decision.
 * Pure: no I/O, no lock, no clock read. Thread-safe. */
int ns_resolve(const struct ns_tree *t, const struct ns_node *parent, const char *name,
               const struct vpath_clock *clk, enum vpath_res def_res, struct ns_node *out)
    __attribute__((warn_unused_result));

/* Escape s for a libconfig string literal ("..." without the quotes): '"' and '\\'
 * escaped, control bytes as \xNN (libconfig reads \x escapes). Returns malloc'd or NULL. */
char *ns_config_escape(const char *s);

#endif
