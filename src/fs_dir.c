/* fs_dir - directory listings of the mounted filesystem: OPENDIR, READDIR, RELEASEDIR.
 *
 * A listing is a snapshot taken at OPENDIR (SPEC 4): the whole directory is rendered
 * into a buffer (fuse_add_direntry records; "." and ".." first) that READDIR serves by
 * offset and RELEASEDIR frees; fi->fh points at it. OPENDIR is answered without
 * FOPEN_CACHE_DIR, so days/ does not freeze across midnight (SPEC 12.1).
 *
 * What is listed: / the dashboards of the current tree (not /.insightfs); a dashboard
 * its widgets; a widget its presets in config order, then days/; days/ today and the
 * history_days-1 days before, newest first; /.insightfs its files. With pages = true,
 * /, a dashboard and a widget also list index.html, last (SPEC 5). Listing / or a
 * dashboard first refreshes its discovered list, keeping the OPENDIR meanwhile
 * (fs_wait_disc: no worker waits); a failed refresh leaves the last good or configured
 * entries listed. Directories carry their stable inode
 * numbers; files not looked up yet carry FS_UNKNOWN_INO (readdir never looks names up,
 * that would make pending versions).
 *
 * Every buffer is also on fs->dirs, so that those whose RELEASEDIR never comes (the
 * kernel drops queued ones at unmount) are freed at exit by fs_dir_free_all.
 *
 * Locking: a buffer belongs to one open directory handle; fs->dirs_lock guards only
 * the list links.
 */
#define FUSE_USE_VERSION 312

#include "fs_int.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "insightfs/api.h"
#include "insightfs/ns.h"
#include "insightfs/vpath.h"

#define FS_UNKNOWN_INO 0xffffffffu /* d_ino of files not looked up yet (as libfuse uses) */

struct dirbuf {
    char *p;
    size_t size;
    struct dirbuf *prev, *next; /* in fs->dirs, under fs->dirs_lock (see fs_int.h) */
};

static void dirs_link(struct fs *fs, struct dirbuf *b)
{
    pthread_mutex_lock(&fs->dirs_lock);
    b->prev = NULL;
    b->next = fs->dirs;
    if (fs->dirs)
        fs->dirs->prev = b;
    fs->dirs = b;
    pthread_mutex_unlock(&fs->dirs_lock);
}

static void dirs_unlink_free(struct fs *fs, struct dirbuf *b)
{
    pthread_mutex_lock(&fs->dirs_lock);
    if (b->prev)
        b->prev->next = b->next;
    else
        fs->dirs = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&fs->dirs_lock);
    free(b->p);
    free(b);
}

void fs_dir_free_all(struct fs *fs)
{
    while (fs->dirs)
        dirs_unlink_free(fs, fs->dirs);
}

static int dirbuf_add(fuse_req_t req, struct dirbuf *b, const char *name, fuse_ino_t ino,
                      mode_t type)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = type;
    size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
    char *p = realloc(b->p, b->size + need);
    if (!p)
        return -ENOMEM;
    b->p = p;
    fuse_add_direntry(req, b->p + b->size, need, name, &st, (off_t)(b->size + need));
    b->size += need;
    return 0;
}

/* The file names of a listing, in order (for readahead). */
struct names {
    char **names;
    size_t n, cap;
};

/* Append name (taken over in every case). */
static int names_add(struct names *l, char *name)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **a = realloc(l->names, cap * sizeof(*a));
        if (!a) {
            free(name);
            return -ENOMEM;
        }
        l->names = a;
        l->cap = cap;
    }
    l->names[l->n++] = name;
    return 0;
}

static void names_free(struct names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
}

/* The listing of directory n, as a snapshot taken now (SPEC 4). */
static int dir_list(struct fs *fs, fuse_req_t req, struct fs_inode *n, fuse_ino_t parent,
                    struct dirbuf *b)
{
    int rc = 0;
    struct names ra = {0};
    struct fs_gen *g = fs_gen_get(fs);
    struct ns_tree *t = fs_tree_get(fs);
    rc = dirbuf_add(req, b, ".", n->ino, S_IFDIR);
    if (!rc)
        rc = dirbuf_add(req, b, "..", parent, S_IFDIR);
    switch (n->kind) {
    case FK_ROOT:
        for (size_t i = 0; !rc && i < t->n_dashboards; i++) {
            const struct ns_dashboard *d = &t->dashboards[i];
            struct fs_inode *c = fs_ino_dir(fs->ino, FK_DASH, d->id, NULL);
            rc = c ? dirbuf_add(req, b, d->name, c->ino, S_IFDIR) : -ENOMEM;
        }
        break;
    case FK_META_DIR:
        for (size_t i = 0; !rc && fs_meta_name(i); i++)
            rc = dirbuf_add(req, b, fs_meta_name(i), FS_UNKNOWN_INO, S_IFREG);
        break;
    case FK_DASH: {
        const struct ns_dashboard *d = ns_dashboard_by_id(t, n->dash_id);
        for (size_t i = 0; !rc && d && i < d->n_widgets; i++) {
            struct fs_inode *c = fs_ino_dir(fs->ino, FK_WIDGET, d->id, d->widgets[i].id);
            rc = c ? dirbuf_add(req, b, d->widgets[i].name, c->ino, S_IFDIR) : -ENOMEM;
        }
        break;
    }
    case FK_WIDGET:
        for (size_t i = 0; !rc && i < g->cfg->n_presets; i++) {
            char *name = NULL;
            if (asprintf(&name, "%s.png", g->cfg->presets[i]) < 0) {
                rc = -ENOMEM;
                break;
            }
            rc = dirbuf_add(req, b, name, FS_UNKNOWN_INO, S_IFREG);
            if (!rc)
                rc = names_add(&ra, name);
            else
                free(name);
        }
        if (!rc) {
            struct fs_inode *c = fs_ino_dir(fs->ino, FK_DAYS, n->dash_id, n->widget_id);
            rc = c ? dirbuf_add(req, b, "days", c->ino, S_IFDIR) : -ENOMEM;
        }
        break;
    case FK_DAYS: {
        struct vpath_clock clk = {fs_clock(fs).wall, g->cfg->align_s};
        for (int i = 0; !rc && i < g->cfg->history_days; i++) {
            char day[VPATH_DAY_LEN], name[VPATH_DAY_LEN + 4];
            int drc = vpath_day_name(&clk, i, day);
            if (drc == -ENOENT)
                continue; /* a date the time zone skipped */
            if (drc != 0)
                break; /* before 1970 */
            snprintf(name, sizeof(name), "%s.png", day);
            rc = dirbuf_add(req, b, name, FS_UNKNOWN_INO, S_IFREG);
            if (!rc) {
                char *copy = strdup(name);
                rc = copy ? names_add(&ra, copy) : -ENOMEM;
            }
        }
        break;
    }
    default:
        rc = -ENOTDIR;
    }
    /* The page comes last; it is no image, so readahead never sees it. */
    if (!rc && g->cfg->pages && (n->kind == FK_ROOT || n->kind == FK_DASH || n->kind == FK_WIDGET))
        rc = dirbuf_add(req, b, CFG_PAGE_NAME, FS_UNKNOWN_INO, S_IFREG);
    ns_unref(t);
    fs_gen_unref(g);
    if (!rc && (n->kind == FK_WIDGET || n->kind == FK_DAYS)) {
        fs_ra_listing(fs, n, ra.names, ra.n); /* the newest listing, for readahead */
        ra.names = NULL;
        ra.n = 0;
    }
    names_free(&ra);
    return rc;
}

/* List directory n now and answer the OPENDIR. */
static void dir_open_now(struct fs *fs, fuse_req_t req, struct fs_inode *n,
                         struct fuse_file_info *fi)
{
    struct dirbuf *b = calloc(1, sizeof(*b));
    if (!b) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* ".." of a dashboard is the root; the kernel ignores d_ino of ".." anyway. */
    int rc = dir_list(fs, req, n, FS_INO_ROOT, b);
    if (rc != 0) {
        free(b->p);
        free(b);
        fuse_reply_err(req, -rc);
        return;
    }
    fi->fh = (uint64_t)(uintptr_t)b;
    dirs_link(fs, b);
    if (fuse_reply_open(req, fi) != 0)
        dirs_unlink_free(fs, b);
}

void fs_dir_open_after_disc(struct fs *fs, fuse_req_t req, uint64_t ino, struct fuse_file_info *fi)
{
    struct fs_inode *n = fs_ino_get(fs->ino, ino);
    if (!n)
        fuse_reply_err(req, ENOENT);
    else
        dir_open_now(fs, req, n, fi);
}

void fs_dir_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = fs_ino_get(fs->ino, ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind == FK_IMAGE || n->kind == FK_META_FILE) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    /* Listing / or a dashboard first brings its discovered list up to date (SPEC 4); the
     * request is kept meanwhile. A failed refresh leaves the last good (or configured)
     * entries listed. */
    if (n->kind == FK_ROOT || n->kind == FK_DASH) {
        const char *dash_id = n->kind == FK_ROOT ? NULL : n->dash_id;
        if (fs_disc_check(fs, dash_id) == 1) {
            fs_wait_disc(fs, req, FW_OPENDIR, ino, NULL, fi, dash_id);
            return;
        }
    }
    dir_open_now(fs, req, n, fi);
}

void fs_dir_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)ino;
    struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
    fs_reply_slice(req, b->p, b->size, size, off);
}

void fs_dir_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fuse_req_userdata(req);
    struct dirbuf *b = (struct dirbuf *)(uintptr_t)fi->fh;
    if (b)
        dirs_unlink_free(fs, b);
    fs_ra_release(fs, ino);
    fuse_reply_err(req, 0);
}
