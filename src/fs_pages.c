/* fs_pages - the pages of pages = true (SPEC 5): an index.html in /, in every dashboard
 * and in every widget directory, made of the files around it.
 *
 * Design. A page is plain HTML built from three things handed in: the tree (as it is:
 * never refreshed or waited for here), the configuration (presets, history_days,
 * align_s, settle_s) and the wall clock (which day is today, which graphs are live). No
 * I/O, no lock, no clock read, so the same inputs give the same bytes and tests/unit can
 * check them; fs.c turns the result into a snapshot inode at LOOKUP, like the files of
 * /.insightfs, with the exact size and entry and attribute timeouts of 0.
 *
 *   /index.html         links every dashboard, NAME/index.html;
 *   DASH/index.html     each widget's first preset (days/<today>.png without presets) as
 *                       an eagerly loaded 800x600 <img>, linked to WIDGET/index.html;
 *   WIDGET/index.html   every preset, then days/ newest first, as a gallery whose images
 *                       load lazily (a history of 3660 days must not fetch 3660 graphs).
 *
 * Every link is relative, so a copy of the tree (cp -r, rsync) works over file:// and
 * under any web server. Names are untrusted (discovery gives whatever the API says):
 * in text and attributes they are HTML-escaped (& < > " '), and in URLs every byte
 * outside A-Z a-z 0-9 - . _ ~ is percent-encoded (http_escape). There is no script at
 * all; a page showing a graph that is still changing, or whose name moves with the
 * clock, reloads itself every align_s seconds with <meta http-equiv="refresh">.
 *
 * Thread-safe: only the caller's borrowed, immutable inputs are read.
 */
#include "fs_int.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "insightfs/http.h"
#include "insightfs/vpath.h"

#define PAGE_W 800
#define PAGE_H 600

static const char page_css[] =
    "body{font-family:sans-serif;margin:1em 2em;background:#f6f7f9;color:#222}"
    "a{color:#1a56a8}nav{margin-bottom:.5em}h2{margin-top:1.5em}"
    "ul.dashboards li{margin:.3em 0;font-size:120%}"
    ".tiles,.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));"
    "gap:1em}"
    "figure{margin:0}"
    "figure img{display:block;width:100%;height:auto;box-sizing:border-box;"
    "border:1px solid #ccd;background:#fff}"
    "figcaption{font-size:90%;margin-top:.2em}";

/* s in HTML text or a quoted attribute value. */
static void put_html(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&#39;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

/* s as one percent-encoded URL path segment (its output needs no HTML escaping). */
static int put_url(FILE *f, const char *s)
{
    char *e = http_escape(s, strlen(s));
    if (!e)
        return -ENOMEM;
    fputs(e, f);
    free(e);
    return 0;
}

static void put_head(FILE *f, const char *title, const char *title2, int refresh_s)
{
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n", f);
    if (refresh_s > 0)
        fprintf(f, "<meta http-equiv=\"refresh\" content=\"%d\">\n", refresh_s);
    fputs("<meta name=\"generator\" content=\"insightfs\">\n<title>", f);
    put_html(f, title);
    if (title2) {
        fputs(" / ", f);
        put_html(f, title2);
    }
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n", page_css);
}

/* 1 when the graph called name (in a widget directory, or days/ when day is set) is
 * live at now: its range still changes, or the name moves with the clock. */
static bool graph_live(const struct cfg *cfg, const char *name, bool day,
                       const struct vpath_clock *clk)
{
    struct vpath_image img;
    int rc = day ? vpath_parse_day(name, cfg->resolution, clk, &img)
                 : vpath_parse_image(name, cfg->resolution, clk, &img);
    if (rc != 0)
        return false;
    return img.relative || !vpath_is_final(img.end_ms, clk->now_ms, cfg->settle_s);
}

/* One figure: the image src (already a URL), linked to href (a URL, NULL: the image
 * itself), captioned with the HTML-escaped caption and the plain-ASCII label. */
static void put_figure(FILE *f, const char *href, const char *src, const char *alt,
                       const char *caption, const char *label, bool lazy)
{
    fprintf(f, "<figure><a href=\"%s\"><img src=\"%s\" width=\"%d\" height=\"%d\"%s alt=\"",
            href ? href : src, src, PAGE_W, PAGE_H, lazy ? " loading=\"lazy\"" : "");
    put_html(f, alt);
    fputs("\"></a><figcaption>", f);
    if (caption) {
        fprintf(f, "<a href=\"%s\">", href ? href : src);
        put_html(f, caption);
        fputs("</a> ", f);
    }
    put_html(f, label);
    fputs("</figcaption></figure>\n", f);
}

/* A URL made of a percent-encoded name between prefix and suffix; malloc'd or NULL. */
static char *url_of(const char *prefix, const char *name, const char *suffix)
{
    char *e = http_escape(name, strlen(name)), *out = NULL;
    if (e && asprintf(&out, "%s%s%s", prefix, e, suffix) < 0)
        out = NULL;
    free(e);
    return out;
}

static int page_root(FILE *f, const struct ns_tree *t)
{
    put_head(f, "insightfs", NULL, 0);
    fputs("<h1>Dashboards</h1>\n<ul class=\"dashboards\">\n", f);
    for (size_t i = 0; i < t->n_dashboards; i++) {
        const struct ns_dashboard *d = &t->dashboards[i];
        fputs("<li><a href=\"", f);
        if (put_url(f, d->name) != 0)
            return -ENOMEM;
        fputs("/index.html\">", f);
        put_html(f, d->name);
        fprintf(f, "</a> (%zu widget%s)</li>\n", d->n_widgets, d->n_widgets == 1 ? "" : "s");
    }
    fputs("</ul>\n", f);
    if (t->n_dashboards == 0)
        fputs("<p>No dashboards.</p>\n", f);
    return 0;
}

static int page_dashboard(FILE *f, const struct ns_dashboard *d, const struct cfg *cfg,
                          const struct vpath_clock *clk)
{
    /* The graph each widget shows: its first preset, else today's day. */
    char day[VPATH_DAY_LEN], rel[VPATH_DAY_LEN + 10];
    const char *graph;
    bool is_day = cfg->n_presets == 0;
    if (!is_day) {
        graph = cfg->presets[0];
    } else {
        if (vpath_day_name(clk, 0, day) != 0)
            return -ERANGE;
        snprintf(rel, sizeof(rel), "days/%s", day);
        graph = rel;
    }
    char *png = NULL;
    if (asprintf(&png, "%s.png", is_day ? day : graph) < 0)
        return -ENOMEM;
    bool live = d->n_widgets > 0 && graph_live(cfg, png, is_day, clk);
    free(png);

    put_head(f, d->name, NULL, live ? cfg->align_s : 0);
    fputs("<nav><a href=\"../index.html\">Dashboards</a></nav>\n<h1>", f);
    put_html(f, d->name);
    fputs("</h1>\n<div class=\"tiles\">\n", f);
    for (size_t i = 0; i < d->n_widgets; i++) {
        const struct ns_widget *w = &d->widgets[i];
        char *suffix = NULL, *src = NULL, *href = url_of("", w->name, "/index.html");
        if (asprintf(&suffix, "/%s.png", graph) < 0)
            suffix = NULL;
        if (suffix)
            src = url_of("", w->name, suffix);
        free(suffix);
        if (!href || !src) {
            free(href);
            free(src);
            return -ENOMEM;
        }
        put_figure(f, href, src, w->name, w->name, graph, false);
        free(href);
        free(src);
    }
    fputs("</div>\n", f);
    if (d->n_widgets == 0)
        fputs("<p>No widgets.</p>\n", f);
    return 0;
}

static int page_widget(FILE *f, const struct ns_dashboard *d, const struct ns_widget *w,
                       const struct cfg *cfg, const struct vpath_clock *clk)
{
    /* days/ always holds today, so a widget's page is always live. */
    put_head(f, d->name, w->name, cfg->align_s);
    fputs("<nav><a href=\"../../index.html\">Dashboards</a> / <a href=\"../index.html\">", f);
    put_html(f, d->name);
    fputs("</a></nav>\n<h1>", f);
    put_html(f, w->name);
    fputs("</h1>\n", f);
    if (cfg->n_presets > 0)
        fputs("<h2>Presets</h2>\n<div class=\"gallery\">\n", f);
    for (size_t i = 0; i < cfg->n_presets; i++) {
        char *src = url_of("", cfg->presets[i], ".png");
        if (!src)
            return -ENOMEM;
        put_figure(f, NULL, src, cfg->presets[i], NULL, cfg->presets[i], true);
        free(src);
    }
    if (cfg->n_presets > 0)
        fputs("</div>\n", f);
    fputs("<h2>Days</h2>\n<div class=\"gallery\">\n", f);
    for (int i = 0; i < cfg->history_days; i++) {
        char day[VPATH_DAY_LEN], src[VPATH_DAY_LEN + 10];
        int rc = vpath_day_name(clk, i, day);
        if (rc == -ENOENT)
            continue; /* a date the time zone skipped, as in the listing */
        if (rc != 0)
            break; /* before 1970 */
        snprintf(src, sizeof(src), "days/%s.png", day);
        put_figure(f, NULL, src, day, NULL, day, true);
    }
    fputs("</div>\n", f);
    return 0;
}

int fs_page_build(const struct ns_tree *t, const struct cfg *cfg, enum fs_kind kind,
                  const char *dash_id, const char *widget_id, int64_t now_ms, char **out,
                  size_t *len)
{
    const struct ns_dashboard *d = NULL;
    const struct ns_widget *w = NULL;
    struct vpath_clock clk = {now_ms, cfg->align_s};
    char *buf = NULL;
    size_t size = 0;
    int rc = 0;

    *out = NULL;
    *len = 0;
    if (kind == FK_DASH || kind == FK_WIDGET) {
        d = ns_dashboard_by_id(t, dash_id);
        if (!d)
            return -ENOENT;
    }
    if (kind == FK_WIDGET) {
        w = ns_widget_by_id(d, widget_id);
        if (!w)
            return -ENOENT;
    } else if (kind != FK_ROOT && kind != FK_DASH) {
        return -ENOENT;
    }
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return -ENOMEM;
    if (kind == FK_ROOT)
        rc = page_root(f, t);
    else if (kind == FK_DASH)
        rc = page_dashboard(f, d, cfg, &clk);
    else
        rc = page_widget(f, d, w, cfg, &clk);
    fputs("</body>\n</html>\n", f);
    if (ferror(f) && rc == 0)
        rc = -ENOMEM;
    if (fclose(f) != 0 && rc == 0)
        rc = -ENOMEM;
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = size;
    return 0;
}
