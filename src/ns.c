/* ns - the tree of dashboards and widgets, configured then discovered.
 *
 * A tree is built once and never changed, so readers need no lock: they hold a
 * reference. Discovery merging (SPEC 4) happens here and nowhere else:
 *  - configured entries come first, in config order, with their configured names;
 *  - a discovered entry whose id is configured is dropped (configured wins by id);
 *  - a discovered name is sanitized (cfg_sanitize_name; empty means the id) and, when it
 *    equals a name or id already taken among its siblings, or is "index.html" while
 *    pages = true (the name of the pages), gets " (<id>)" appended, the name cut at a
 *    UTF-8 boundary so the whole stays within 255 bytes (unique_name has the details).
 * The same rules merge discovered widgets into configured and discovered dashboards.
 *
 * Resolution keeps names and ids apart: a typed name is tried as a name, then as an id
 * (ns_find_*); a stored id is only ever an id (ns_*_by_id). Mixing them is a real bug,
 * not a nicety: a configured dashboard may be named like a discovered one's id.
 * ns_resolve is the single place where a path component becomes a node: the mount's
 * LOOKUP and --fetch both walk paths with it, so the two cannot disagree.
 */
#include "insightfs/ns.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A growing list of (name, id) pairs under construction: dashboards or widgets. */
struct ns_list {
    char **names;
    char **ids;
    size_t n, cap;
};

static void list_cleanup(struct ns_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->names[i]);
        free(l->ids[i]);
    }
    free(l->names);
    free(l->ids);
    memset(l, 0, sizeof(*l));
}

static int list_taken(const struct ns_list *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->names[i], s) == 0 || strcmp(l->ids[i], s) == 0)
            return 1;
    return 0;
}

static int list_has_id(const struct ns_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->ids[i], id) == 0)
            return 1;
    return 0;
}

/* Append (name, id), taking ownership of both on success and on failure. */
static int list_push(struct ns_list *l, char *name, char *id)
{
    if (!name || !id)
        goto err;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        char **names = realloc(l->names, cap * sizeof(*names));
        if (!names)
            goto err;
        l->names = names;
        char **ids = realloc(l->ids, cap * sizeof(*ids));
        if (!ids)
            goto err;
        l->ids = ids;
        l->cap = cap;
    }
    l->names[l->n] = name;
    l->ids[l->n] = id;
    l->n++;
    return 0;
err:
    free(name);
    free(id);
    return -1;
}

/* 1 when s is the id of one of the discovered siblings other than self. */
static int sibling_id(const struct api_item *sib, size_t n, const struct api_item *self,
                      const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (&sib[i] != self && strcmp(sib[i].id, s) == 0)
            return 1;
    return 0;
}

/* SPEC 3: a name is 1-255 bytes (also the kernel's NAME_MAX). */
#define NS_NAME_MAX 255

/* The length of the longest prefix of s of at most max bytes that does not split a
 * UTF-8 character: back off over continuation bytes (at most 3, the longest sequence is
 * 4); invalid UTF-8 is cut where it is (as cfg_sanitize_name does). */
static size_t utf8_prefix(const char *s, size_t max)
{
    size_t len = strlen(s), cut = max;
    if (len <= max)
        return len;
    const unsigned char *u = (const unsigned char *)s;
    while (cut > 0 && cut + 3 > max && (u[cut] & 0xc0) == 0x80)
        cut--;
    if ((u[cut] & 0xc0) == 0x80)
        cut = max;
    return cut;
}

/* FNV-1a, 64 bits: a stable short stand-in for an id too long to show whole. */
static uint64_t id_hash(const char *id)
{
    uint64_t h = UINT64_C(14695981039346656037);
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return h;
}

/* 1 when name may not be used for it: taken among its siblings so far (a name or an id),
 * the id of another discovered sibling, or the pages' name. */
static int name_clashes(const struct ns_list *l, const struct api_item *it,
                        const struct api_item *sib, size_t n_sib, bool pages, const char *name)
{
    return list_taken(l, name) || sibling_id(sib, n_sib, it, name) ||
           (pages && strcmp(name, CFG_PAGE_NAME) == 0);
}

/* base + " (" + tag + ")", base cut at a UTF-8 boundary so the whole is at most
 * NS_NAME_MAX bytes (tag is at most NS_NAME_MAX - 3 bytes), with the tag's '/' and
 * control bytes made '_' as in a sanitized name. Returns malloc'd or NULL (ENOMEM). */
static char *suffixed(const char *base, const char *tag)
{
    size_t tl = strlen(tag), bl = utf8_prefix(base, NS_NAME_MAX - 3 - tl);
    char *out = malloc(bl + tl + 4);
    if (!out)
        return NULL;
    memcpy(out, base, bl);
    memcpy(out + bl, " (", 2);
    for (size_t i = 0; i < tl; i++) {
        unsigned char c = (unsigned char)tag[i];
        out[bl + 2 + i] = c == '/' || c < 0x20 || c == 0x7f ? '_' : (char)c;
    }
    memcpy(out + bl + 2 + tl, ")", 2);
    return out;
}

/* The name of a discovered item whose sanitized name, base, clashes (SPEC 4: " (<id>)"
 * appended). The result must itself obey SPEC 3's rules for names, or a --discover dump
 * would not load and the mount would list a name over NAME_MAX:
 *  - it is at most 255 bytes: base is shortened at a UTF-8 boundary to make room;
 *  - an id longer than 251 bytes (" (" + id + ")" would leave no byte of base) is shown
 *    as "#" and its FNV-1a-64 hash in 16 hex digits, " (#0123456789abcdef)": stable
 *    across refreshes, and the entry stays reachable by its whole id;
 *  - '/' and control bytes of the id become '_' in the name (not in the id);
 *  - it is unique: when even the suffixed name is taken (a sanitized id, a hash clash or
 *    an API name that looks suffixed), "#<hash>" and then "#<hash>-2", "#<hash>-3", ...
 *    are tried. Those last names differ from each other (the digits after the last '-'
 *    are k), so one of the first (taken strings + 1) is free and the loop ends.
 * Returns malloc'd or NULL (ENOMEM). */
static char *unique_name(const struct ns_list *l, const struct api_item *it,
                         const struct api_item *sib, size_t n_sib, bool pages, const char *base)
{
    char *name = NULL, tag[40];
    uint64_t h = id_hash(it->id);
    if (strlen(it->id) <= NS_NAME_MAX - 4) {
        name = suffixed(base, it->id);
        if (!name || !name_clashes(l, it, sib, n_sib, pages, name))
            return name;
        free(name);
    }
    for (unsigned long k = 1;; k++) {
        if (k == 1)
            snprintf(tag, sizeof(tag), "#%016" PRIx64, h);
        else
            snprintf(tag, sizeof(tag), "#%016" PRIx64 "-%lu", h, k);
        name = suffixed(base, tag);
        if (!name || !name_clashes(l, it, sib, n_sib, pages, name))
            return name;
        free(name);
    }
}

/* Merge one discovered item into l: skipped when its id is already there. Its name is
 * suffixed when it equals a name or id taken before it, or the id of any discovered
 * sibling (sib, n), so a --discover dump always loads as a configuration; and, with
 * pages, when it is the pages' name (the page answers that name first). */
static int list_discover(struct ns_list *l, const struct api_item *it, const struct api_item *sib,
                         size_t n_sib, bool pages)
{
    if (list_has_id(l, it->id))
        return 0;
    /* An empty API name means the id, sanitized like any name (an id may hold '/'). */
    const char *api_name = it->name && *it->name ? it->name : it->id;
    char *name = cfg_sanitize_name(api_name);
    if (!name)
        return -1;
    if (name_clashes(l, it, sib, n_sib, pages, name)) {
        char *longer = unique_name(l, it, sib, n_sib, pages, name);
        free(name);
        name = longer;
    }
    return list_push(l, name, strdup(it->id));
}

static const struct api_item *disc_widgets(const struct ns_discovered *disc, const char *dash_id,
                                           size_t *n)
{
    *n = 0;
    if (!disc)
        return NULL;
    for (size_t i = 0; i < disc->n_widget_lists; i++) {
        if (strcmp(disc->widget_dash_ids[i], dash_id) == 0) {
            *n = disc->n_widgets[i];
            return disc->widgets[i];
        }
    }
    return NULL;
}

static int fill_dashboard(struct ns_dashboard *d, const struct cfg_dashboard *cd,
                          const struct ns_discovered *disc, bool pages)
{
    struct ns_list w = {0};
    int rc = -1;
    for (size_t i = 0; cd && i < cd->n_widgets; i++)
        if (list_push(&w, strdup(cd->widgets[i].name), strdup(cd->widgets[i].id)) < 0)
            goto out;
    size_t n = 0;
    const struct api_item *items = disc_widgets(disc, d->id, &n);
    for (size_t i = 0; i < n; i++)
        if (list_discover(&w, &items[i], items, n, pages) < 0)
            goto out;
    d->widgets = calloc(w.n ? w.n : 1, sizeof(*d->widgets));
    if (!d->widgets)
        goto out;
    for (size_t i = 0; i < w.n; i++) {
        d->widgets[i].name = w.names[i];
        d->widgets[i].id = w.ids[i];
    }
    d->n_widgets = w.n;
    free(w.names);
    free(w.ids);
    return 0;
out:
    list_cleanup(&w);
    return rc;
}

static void tree_free(struct ns_tree *t)
{
    for (size_t i = 0; i < t->n_dashboards; i++) {
        struct ns_dashboard *d = &t->dashboards[i];
        for (size_t j = 0; j < d->n_widgets; j++) {
            free(d->widgets[j].name);
            free(d->widgets[j].id);
        }
        free(d->widgets);
        free(d->name);
        free(d->id);
    }
    free(t->dashboards);
    free(t);
}

struct ns_tree *ns_build(const struct cfg *cfg, const struct ns_discovered *disc)
{
    struct ns_list dl = {0};
    struct ns_tree *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    for (size_t i = 0; i < cfg->n_dashboards; i++)
        if (list_push(&dl, strdup(cfg->dashboards[i].name), strdup(cfg->dashboards[i].id)) < 0)
            goto err;
    for (size_t i = 0; disc && i < disc->n_dashboards; i++)
        if (list_discover(&dl, &disc->dashboards[i], disc->dashboards, disc->n_dashboards,
                          cfg->pages) < 0)
            goto err;
    t->dashboards = calloc(dl.n ? dl.n : 1, sizeof(*t->dashboards));
    if (!t->dashboards)
        goto err;
    /* Names and ids move into the tree one by one so cleanup frees each exactly once. */
    for (size_t i = 0; i < dl.n; i++) {
        struct ns_dashboard *d = &t->dashboards[i];
        d->name = dl.names[i];
        d->id = dl.ids[i];
        dl.names[i] = dl.ids[i] = NULL;
        t->n_dashboards = i + 1;
        const struct cfg_dashboard *cd = i < cfg->n_dashboards ? &cfg->dashboards[i] : NULL;
        if (fill_dashboard(d, cd, disc, cfg->pages) < 0)
            goto err;
    }
    free(dl.names);
    free(dl.ids);
    return t;
err:
    list_cleanup(&dl);
    tree_free(t);
    return NULL;
}

void ns_ref(struct ns_tree *t)
{
    atomic_fetch_add(&t->refs, 1);
}

void ns_unref(struct ns_tree *t)
{
    if (t && atomic_fetch_sub(&t->refs, 1) == 1)
        tree_free(t);
}

const struct ns_dashboard *ns_dashboard_by_id(const struct ns_tree *t, const char *id)
{
    for (size_t i = 0; t && id && i < t->n_dashboards; i++)
        if (strcmp(t->dashboards[i].id, id) == 0)
            return &t->dashboards[i];
    return NULL;
}

const struct ns_widget *ns_widget_by_id(const struct ns_dashboard *d, const char *id)
{
    for (size_t i = 0; d && id && i < d->n_widgets; i++)
        if (strcmp(d->widgets[i].id, id) == 0)
            return &d->widgets[i];
    return NULL;
}

const struct ns_dashboard *ns_find_dashboard(const struct ns_tree *t, const char *name)
{
    for (size_t i = 0; i < t->n_dashboards; i++)
        if (strcmp(t->dashboards[i].name, name) == 0)
            return &t->dashboards[i];
    return ns_dashboard_by_id(t, name);
}

const struct ns_widget *ns_find_widget(const struct ns_dashboard *d, const char *name)
{
    for (size_t i = 0; i < d->n_widgets; i++)
        if (strcmp(d->widgets[i].name, name) == 0)
            return &d->widgets[i];
    return ns_widget_by_id(d, name);
}

int ns_resolve(const struct ns_tree *t, const struct ns_node *parent, const char *name,
               const struct vpath_clock *clk, enum vpath_res def_res, struct ns_node *out)
{
    if (!t || !parent || !clk || !out || clk->align_s < 1)
        return -EINVAL;
    if (parent->kind == NS_IMAGE)
        return -ENOTDIR;
    if (parent->kind != NS_ROOT && parent->kind != NS_DASHBOARD && parent->kind != NS_WIDGET &&
        parent->kind != NS_DAYS)
        return -EINVAL;
    if (!name || !*name || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return -ENOENT;
    struct ns_node n = {0};
    if (parent->kind == NS_ROOT) {
        const struct ns_dashboard *d = ns_find_dashboard(t, name);
        if (!d)
            return -ENOENT;
        n.kind = NS_DASHBOARD;
        n.dash_id = d->id;
        *out = n;
        return 0;
    }
    /* The parent's ids are references the caller stored: by id, never by name. */
    const struct ns_dashboard *d = ns_dashboard_by_id(t, parent->dash_id);
    if (!d)
        return -ENOENT;
    n.dash_id = d->id;
    if (parent->kind == NS_DASHBOARD) {
        const struct ns_widget *w = ns_find_widget(d, name);
        if (!w)
            return -ENOENT;
        n.kind = NS_WIDGET;
        n.widget_id = w->id;
        *out = n;
        return 0;
    }
    const struct ns_widget *w = ns_widget_by_id(d, parent->widget_id);
    if (!w)
        return -ENOENT;
    n.widget_id = w->id;
    int rc;
    if (parent->kind == NS_WIDGET && strcmp(name, "days") == 0) {
        n.kind = NS_DAYS;
        rc = 0;
    } else {
        n.kind = NS_IMAGE;
        rc = parent->kind == NS_DAYS ? vpath_parse_day(name, def_res, clk, &n.img)
                                     : vpath_parse_image(name, def_res, clk, &n.img);
    }
    if (rc == 0)
        *out = n;
    return rc;
}

char *ns_config_escape(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 4 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += sprintf(o, "\\x%02X", *p);
        } else {
            *o++ = (char)*p;
        }
    }
    *o = '\0';
    return out;
}
