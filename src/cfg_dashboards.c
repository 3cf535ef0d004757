/* cfg_dashboards - the dashboards list, each dashboard's widgets list, and the rules of
 * names and ids (SPEC 3 and 4).
 *
 * An entry is a group { name; id; } (a dashboard also has widgets). Ids: non-empty, no
 * control characters, not "." or "..". Names, the id when none is given: 1-255 bytes, no
 * '/', no leading '.', no control characters. Among siblings ids are unique, and names
 * are unique and different from every sibling's id, so no folder ever lists one name
 * twice; of two clashing entries the later is blamed. Every dashboard is checked before
 * any widgets list, so errors come in the order of the listing. With pages = true the
 * name "index.html" belongs to the pages (SPEC 4): as `pages` may come anywhere in the
 * file, the first entry with that name is remembered during the walk and refused by
 * cfg_dashboards_finish.
 *
 * cfg_sanitize_name makes a name the API supplied (discovery) obey the same rules instead
 * of refusing it. No state; thread-safe.
 */
#include "insightfs/cfg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>

#include "cfg_int.h"

#define CFG_NAME_MAX 255
#define CFG_SANITIZED_MAX 200

/* ---- configured dashboards and widgets ---- */

/* One group of a dashboards or widgets list, as found in the file. */
struct entry {
    const config_setting_t *grp, *name_s, *id_s, *widgets_s;
    const char *name, *id; /* name is id when name_s is NULL */
};

/* A name, given (s is its setting) or implied by the id (s is the id's setting). */
static int check_name(struct cfg_loader *ld, const struct entry *e)
{
    const config_setting_t *s = e->name_s ? e->name_s : e->id_s;
    const char *why = NULL, *implied = e->name_s ? "" : " (set name: without one the id is used)";
    size_t len = strlen(e->name);
    char *what = NULL;
    int rc;

    if (len == 0)
        return cfg_fail_at(ld, -EINVAL, s, "is empty (names are 1-255 bytes)");
    if (len > CFG_NAME_MAX)
        return cfg_fail_at(ld, -EINVAL, s, "is %zu bytes long (names are 1-255 bytes)%s", len,
                           implied);
    if (!ld->page_name && strcmp(e->name, CFG_PAGE_NAME) == 0)
        ld->page_name = s;
    if (strchr(e->name, '/'))
        why = "contains '/'";
    else if (e->name[0] == '.')
        why = "starts with '.'";
    else if (cfg_has_control(e->name))
        why = "contains a control character";
    if (!why)
        return 0;
    if (asprintf(&what, "%s, which a name may not%s", why, implied) < 0)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    rc = cfg_fail_value(ld, s, e->name, what);
    free(what);
    return rc;
}

static int check_id(struct cfg_loader *ld, const struct entry *e)
{
    if (!*e->id)
        return cfg_fail_at(ld, -EINVAL, e->id_s, "is empty");
    if (cfg_has_control(e->id))
        return cfg_fail_value(ld, e->id_s, e->id, "contains a control character");
    if (strcmp(e->id, ".") == 0 || strcmp(e->id, "..") == 0)
        return cfg_fail_value(ld, e->id_s, e->id, "is not allowed as an id");
    return 0;
}

/* SPEC 2 gives a missing setting the form without a line: "FILE: SETTING: MESSAGE",
 * SETTING the id's own path (dashboards.[0].id). */
static int fail_missing_id(struct cfg_loader *ld, const config_setting_t *g)
{
    char *grp = cfg_setting_path(g), *id = NULL;
    int rc;

    if (!grp || asprintf(&id, "%s.id", grp) < 0) {
        free(grp);
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    }
    rc = cfg_fail(ld, -EINVAL, 0, id, "missing");
    free(id);
    free(grp);
    return rc;
}

static int take_entry(struct cfg_loader *ld, const config_setting_t *g, bool dashboard,
                      struct entry *e)
{
    int rc = cfg_check_type(ld, g, CFG_K_GROUP, "a group");
    int n = config_setting_length(g);

    if (rc)
        return rc;
    e->grp = g;
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);

        if (strcmp(name, "name") == 0 || strcmp(name, "id") == 0) {
            rc = cfg_check_type(ld, m, CFG_K_STRING, "a string");
            *(name[0] == 'n' ? &e->name_s : &e->id_s) = m;
        } else if (dashboard && strcmp(name, "widgets") == 0) {
            rc = cfg_check_type(ld, m, CFG_K_LIST, "a list of groups");
            e->widgets_s = m;
        } else
            rc = cfg_fail_at(ld, -EINVAL, m, "unknown setting");
        if (rc)
            return rc;
    }
    if (!e->id_s)
        return fail_missing_id(ld, g);
    e->id = config_setting_get_string(e->id_s);
    e->name = e->name_s ? config_setting_get_string(e->name_s) : e->id;
    rc = check_id(ld, e);
    return rc ? rc : check_name(ld, e);
}

static int clash(struct cfg_loader *ld, const config_setting_t *s, const char *value,
                 const char *role, const config_setting_t *other)
{
    char *path = cfg_setting_path(other), *what = NULL;
    int rc;

    if (!path || asprintf(&what, "is already the %s of %s", role, path) < 0) {
        free(path);
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    }
    rc = cfg_fail_value(ld, s, value, what);
    free(what);
    free(path);
    return rc;
}

/* Ids unique among siblings; names unique and different from every sibling's id. The
 * later of two clashing entries is blamed, at the setting that clashes. */
static int check_siblings(struct cfg_loader *ld, const struct entry *e, size_t n)
{
    for (size_t j = 1; j < n; j++) {
        const config_setting_t *name_s = e[j].name_s ? e[j].name_s : e[j].id_s;

        for (size_t i = 0; i < j; i++) {
            if (strcmp(e[j].id, e[i].id) == 0)
                return clash(ld, e[j].id_s, e[j].id, "id", e[i].grp);
            if (strcmp(e[j].name, e[i].name) == 0)
                return clash(ld, name_s, e[j].name, "name", e[i].grp);
            if (strcmp(e[j].name, e[i].id) == 0)
                return clash(ld, name_s, e[j].name, "id", e[i].grp);
            if (strcmp(e[j].id, e[i].name) == 0)
                return clash(ld, e[j].id_s, e[j].id, "name", e[i].grp);
        }
    }
    return 0;
}

/* Check every group of list (and their siblings); *out gets n entries (caller frees). */
static int take_entries(struct cfg_loader *ld, const config_setting_t *list, bool dashboards,
                        struct entry **out, size_t *n_out)
{
    int n = config_setting_length(list), rc = 0;
    struct entry *e = calloc(n > 0 ? (size_t)n : 1, sizeof(*e));

    *out = e;
    *n_out = 0;
    if (!e)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    for (int i = 0; i < n && rc == 0; i++)
        rc = take_entry(ld, config_setting_get_elem(list, (unsigned)i), dashboards, &e[i]);
    if (rc == 0)
        rc = check_siblings(ld, e, (size_t)n);
    if (rc == 0)
        *n_out = (size_t)n;
    return rc;
}

/* Copy e's name and id into *name and *id (the caller frees both, on failure too). */
static int copy_entry(struct cfg_loader *ld, const struct entry *e, char **name, char **id)
{
    *name = strdup(e->name);
    *id = strdup(e->id);
    if (!*name || !*id)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    return 0;
}

static int take_widgets(struct cfg_loader *ld, const config_setting_t *list,
                        struct cfg_dashboard *d)
{
    struct entry *e = NULL;
    size_t n;
    int rc = take_entries(ld, list, false, &e, &n);

    if (rc)
        goto out;
    d->widgets = calloc(n > 0 ? n : 1, sizeof(*d->widgets));
    if (!d->widgets) {
        rc = cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct cfg_widget *w = &d->widgets[d->n_widgets++];

        rc = copy_entry(ld, &e[i], &w->name, &w->id);
        if (rc)
            goto out;
    }
out:
    free(e);
    return rc;
}

int cfg_take_dashboards(struct cfg_loader *ld, const config_setting_t *s)
{
    struct cfg *cfg = ld->cfg;
    struct entry *e = NULL;
    size_t n;
    int rc;

    ld->dashboards_set = true;
    rc = take_entries(ld, s, true, &e, &n);
    if (rc)
        goto out;
    cfg->dashboards = calloc(n > 0 ? n : 1, sizeof(*cfg->dashboards));
    if (!cfg->dashboards) {
        rc = cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    /* Widgets are checked in a second pass: dashboards order first, like the listing. */
    for (size_t i = 0; i < n; i++) {
        struct cfg_dashboard *d = &cfg->dashboards[cfg->n_dashboards++];

        rc = copy_entry(ld, &e[i], &d->name, &d->id);
        if (rc)
            goto out;
        if (e[i].widgets_s && (rc = take_widgets(ld, e[i].widgets_s, d)) != 0)
            goto out;
    }
out:
    free(e);
    return rc;
}

int cfg_dashboards_finish(struct cfg_loader *ld)
{
    const config_setting_t *s = ld->page_name;
    bool implied;

    if (!ld->cfg->pages || !s)
        return 0;
    implied = strcmp(config_setting_name(s), "id") == 0;
    return cfg_fail_value(ld, s, CFG_PAGE_NAME,
                          implied ? "is the name of the pages while pages = true (set name: "
                                    "without one the id is used)"
                                  : "is the name of the pages while pages = true (rename it, "
                                    "or set pages = false)");
}

/* ---- discovered names ---- */

char *cfg_sanitize_name(const char *name)
{
    size_t len = strlen(name);
    char *out;

    if (len > CFG_SANITIZED_MAX) {
        size_t cut = CFG_SANITIZED_MAX;

        /* Back off over continuation bytes (at most 3: the longest UTF-8 sequence is 4)
         * so no character is split; invalid UTF-8 is cut where it is. */
        while (cut > CFG_SANITIZED_MAX - 3 && ((unsigned char)name[cut] & 0xc0) == 0x80)
            cut--;
        if (((unsigned char)name[cut] & 0xc0) == 0x80)
            cut = CFG_SANITIZED_MAX;
        len = cut;
    }
    if (len == 0)
        return NULL;
    out = strndup(name, len);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];

        if (c == '/' || c < 0x20 || c == 0x7f)
            out[i] = '_';
    }
    if (out[0] == '.')
        out[0] = '_';
    return out;
}
