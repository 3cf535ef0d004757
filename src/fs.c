/* fs - the mounted filesystem: a thin libfuse low-level adapter over ns, cache and api.
 * This file answers the FUSE requests (LOOKUP, FORGET, GETATTR, READ, OPEN, FLUSH,
 * STATFS, xattrs, EROFS for every mutation) and holds the ops table. Around it (joined by
 * src/fs_int.h):
 *   fs_wait.c   kept requests and the fetch jobs that answer them (the request engine)
 *   fs_ra.c     readahead of listings
 *   fs_dir.c    directory listings
 *   fs_ino.c    the inode table
 *   fs_meta.c   the files of /.insightfs
 *   fs_gen.c    configuration generations, the tree, SIGHUP reload
 *   fs_inval.c  the invalidation thread (the only caller of notify_inval_entry)
 *   fs_io.c     the /dev/fuse reads and writes: sends FUSE_PARALLEL_DIROPS
 *   fs_mnt.c    which mount is ours; aborting and detaching it when teardown is stuck
 *   fs_mount.c  the mount: build, serve, tear down
 *   fs_pages.c  the pages (pages = true): index.html, built at LOOKUP as a snapshot
 * Below it: cache (versions, tickets, the byte bound), flight (single flight and failure
 * memory, for images and discovery alike), disc (discovered lists), engine (fetch
 * threads and the timer), cpu (one CPU for a lightly loaded daemon), api (signed calls, retries,
 * circuit breaker), ns (the tree and the one pure name resolver, also used by --fetch). Data flows
 * down: lower modules get `now` (both clocks) and a byte budget handed in and return what the
 * caller must act on (a ticket, the waiters of a completed fetch, versions to invalidate); none
 * calls up.
 *
 * Why the low-level API (SPEC 12). libfuse 3.14's high-level API has one inode per
 * path, so a refreshed live image would reuse an inode whose size and pages the kernel
 * has cached. Here every fetched image version is its own inode (ino = FS_IMAGE_BASE +
 * the cache's version id, never reused while the daemon runs) whose size, mtime and
 * bytes never change. A name's entry points at its current version, with an entry
 * timeout no longer than the time until that name would resolve to another version.
 *
 * Warm reads at tmpfs speed: OPEN and FLUSH are answered ENOSYS on purpose, so the
 * kernel opens every later file itself with FOPEN_KEEP_CACHE and sends no RELEASE;
 * image attributes are valid for a day (they can never change). The kernel then serves
 * cached pages without asking the daemon at all.
 *
 * No request waits in a worker (SPEC 12.4). LOOKUP answers from the name alone: the
 * cached version when it is fresh, else the key's pending version with attribute timeout
 * 0 (the kernel merges concurrent lookups of one name, and without PARALLEL_DIROPS -
 * which libfuse 3.14 never sends, so fs_io.c does - serializes those of a directory).
 * GETATTR or READ of a pending version, and LOOKUP or OPENDIR of / or a
 * dashboard while its discovered list is refreshed (SPEC 4), are kept (fs_wait.c):
 * answered by the fetch thread that completes the fetch, by their deadline, or EINTR.
 * So libfuse's default workers (at most 10) always read the next request at once, and a
 * cached file reads at once while any number of fetches hang. While the daemon's load
 * is light all its threads share one CPU (cpu.h: the hand-offs of a fetch between
 * threads then cost no wake-up across CPUs); busy, they spread (the housekeeping tick).
 *
 * Memory (SPEC 7): every key, pending version, remembered failure, inode, remembered
 * name, listing snapshot and kept request counts in cache.max_bytes; the least recently
 * used keys go first, and the kernel is told to forget their entries.
 *
 * Inodes (fs_ino.c): the root and /.insightfs are fixed; directories get a stable number
 * per (kind, dashboard id, widget id); /.insightfs files and the pages are snapshots taken
 * at lookup, each its own inode with entry and attribute timeouts 0.
 * Every entry replied counts one lookup, undone when the reply fails; FORGET frees image
 * and snapshot inodes at 0, and each image inode holds one reference to its version, so
 * eviction never frees bytes the kernel can still reach. Image entries remember their
 * names so an eviction can invalidate them. Stored ids are resolved by id only.
 *
 * Every request holds a reference to the configuration generation (and tree) it started
 * with. Errors: helpers return 0 or a negative errno, replied as fuse_reply_err(-rc).
 *
 * Locking: this file takes no lock of its own; the inode table, the generation pointer,
 * the discovered lists and the cache each lock inside their calls, and none is held
 * across network I/O or a reply.
 */
#define FUSE_USE_VERSION 312

#include "fs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/ns.h"
#include "insightfs/vpath.h"

#define FS_DAY_S 86400.0
#define FS_DIR_ENTRY_S 60.0
#define FS_DIR_ATTR_S 1.0
#define FS_META_NAME ".insightfs"
#define FS_SNAPSHOT_INO_BASE (UINT64_C(1) << 62) /* st_ino of snapshots: see snapshot_st_ino */

/* ---- attributes ----------------------------------------------------------------- */

static void ts_from_ms(struct timespec *ts, int64_t ms)
{
    ts->tv_sec = ms / 1000;
    ts->tv_nsec = (long)(ms % 1000) * 1000000;
}

static void attr_common(struct fs *fs, struct stat *st, fuse_ino_t ino)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_blksize = 4096;
    st->st_atim = st->st_mtim = st->st_ctim = fs->ready_at;
}

static void attr_dir(struct fs *fs, struct stat *st, fuse_ino_t ino, nlink_t subdirs)
{
    attr_common(fs, st, ino);
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2 + subdirs;
}

static void attr_file(struct fs *fs, struct stat *st, fuse_ino_t ino, size_t size, int64_t t_ms)
{
    attr_common(fs, st, ino);
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    ts_from_ms(&st->st_mtim, t_ms);
    st->st_atim = st->st_ctim = st->st_mtim;
}

/* Image n's attributes as of state (read once by the caller): a ready version's mtime
 * is END when final, else the signing time; a version without bytes has size 0. */
static void attr_image(struct fs *fs, struct stat *st, struct fs_inode *n, enum cache_state state)
{
    if (state != CACHE_READY) {
        attr_file(fs, st, n->ino, 0, cache_version_key(n->v)->end_ms);
        return;
    }
    size_t len = 0;
    cache_version_data(n->v, &len);
    int64_t t = cache_version_final(n->v) ? cache_version_key(n->v)->end_ms
                                          : cache_version_fetched_at(n->v);
    attr_file(fs, st, n->ino, len, t);
}

/* Directory attributes for any directory inode; 0 or -ENOENT. */
static int attr_of_dir(struct fs *fs, struct fs_inode *n, struct stat *st)
{
    struct ns_tree *t = fs_tree_get(fs);
    int rc = 0;
    switch (n->kind) {
    case FK_ROOT:
        attr_dir(fs, st, n->ino, t->n_dashboards + 1);
        break;
    case FK_META_DIR:
        attr_dir(fs, st, n->ino, 0);
        break;
    case FK_DASH: {
        const struct ns_dashboard *d = ns_dashboard_by_id(t, n->dash_id);
        attr_dir(fs, st, n->ino, d ? d->n_widgets : 0);
        break;
    }
    case FK_WIDGET:
        attr_dir(fs, st, n->ino, 1);
        break;
    case FK_DAYS: {
        attr_dir(fs, st, n->ino, 0);
        int64_t today = vpath_day_start_ms(fs_clock(fs).wall);
        ts_from_ms(&st->st_mtim, today);
        st->st_atim = st->st_ctim = st->st_mtim;
        break;
    }
    default:
        rc = -ENOENT;
    }
    ns_unref(t);
    return rc;
}

/* ---- replies -------------------------------------------------------------------- */

/* Reply an entry. Image and snapshot inodes come with their lookup counted (under the
 * table's lock, when they are handed out); directories are never freed, so they need no
 * count. The count is undone if the kernel never got the reply. n is not touched after
 * the reply: the kernel may FORGET it at once. */
static void reply_entry(struct fs *fs, fuse_req_t req, struct fs_inode *n, const struct stat *st,
                        double entry_s, double attr_s)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = n->ino;
    e.attr = *st;
    e.entry_timeout = entry_s;
    e.attr_timeout = attr_s;
    if (fuse_reply_entry(req, &e) != 0)
        fs_ino_forget(fs->ino, e.ino, 1);
}

static void reply_dir_entry(struct fs *fs, fuse_req_t req, struct fs_inode *n)
{
    struct stat st;
    if (!n) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    if (attr_of_dir(fs, n, &st) != 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    reply_entry(fs, req, n, &st, FS_DIR_ENTRY_S, FS_DIR_ATTR_S);
}

/* ---- LOOKUP --------------------------------------------------------------------- */

static double seconds_until(int64_t when_ms, int64_t now_ms, double cap_s)
{
    if (when_ms == INT64_MAX)
        return cap_s;
    double s = (double)(when_ms - now_ms) / 1000.0;
    if (s < 0)
        return 0;
    return s < cap_s ? s : cap_s;
}

/* LOOKUP of image name in directory parent, resolved (ns_resolve) to key and img. */
static void lookup_image(struct fs *fs, fuse_req_t req, struct fs_inode *parent, const char *name,
                         const struct cache_key *k, const struct vpath_image *img,
                         struct cache_clock now)
{
    struct cache_key key = *k;
    int hit = 0;
    int64_t valid_ms = 0;
    struct cache_version *v = cache_get(fs->cache, &key, &now, &hit, &valid_ms);
    fs_drain_dropped(fs);
    if (!v) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct fs_inode *n = fs_ino_image(fs->ino, v);
    if (!n) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* The state is read once: attributes and timeouts must agree (a version becoming
     * ready between two reads would reply size 0 with a day-long attribute timeout). */
    enum cache_state state = cache_version_state(n->v);
    struct stat st;
    attr_image(fs, &st, n, state);
    /* The entry lives until the name resolves to another range or version: the next
     * change of the name's window, or the end of the version's freshness (for a pending
     * one, the freshness a fetch now would give it). A pending entry is kept, not just
     * looked up again: an entry timeout of 0 made every access look the name up again
     * while the fetch ran, and the kernel, applying such a reply's size 0 after the
     * fetching GETATTR was sent, dropped that GETATTR's true attributes as older
     * (attr_version): a read could return an empty file (found by tests/soak). */
    double entry_s = seconds_until(img->changes_at_ms, now.wall, FS_DAY_S);
    double valid_s = valid_ms == INT64_MAX ? FS_DAY_S : (double)valid_ms / 1000.0;
    if (valid_s < entry_s)
        entry_s = valid_s;
    /* Pending or failed: GETATTR will fetch or report, so the size 0 must not stay. */
    fs_ino_remember_name(fs->ino, n, parent->ino, name);
    fs_ra_lookup(fs, parent->ino, name);
    reply_entry(fs, req, n, &st, entry_s, state == CACHE_READY ? FS_DAY_S : 0);
}

/* The st_ino a snapshot shows: made from its bytes (FNV-1a, in a range no other inode
 * uses), so two lookups that took the same bytes show the same number. Each lookup gets
 * its own inode, but programs compare st_ino: GNU cp stats a file, opens it and skips it
 * "as it was replaced while being copied" when the numbers differ. Equal bytes are the
 * same file; different bytes really were replaced. */
static uint64_t snapshot_st_ino(const char *data, size_t len)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)data[i];
        h *= UINT64_C(0x100000001b3);
    }
    return FS_SNAPSHOT_INO_BASE | (h & (FS_SNAPSHOT_INO_BASE - 1));
}

static void attr_snapshot(struct fs *fs, struct stat *st, const struct fs_inode *n)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    attr_file(fs, st, n->ino, n->len, 0);
    st->st_ino = snapshot_st_ino(n->data, n->len);
    st->st_atim = st->st_mtim = st->st_ctim = now;
}

/* Reply a snapshot file (rc 0: data, len bytes, taken over in every case; else rc): a
 * new inode each lookup, the exact size, entry and attribute timeouts 0, so the next
 * lookup of the name takes a new snapshot and no reader mixes two. */
static void reply_snapshot(struct fs *fs, fuse_req_t req, int rc, char *data, size_t len)
{
    struct fs_inode *n = rc == 0 ? fs_ino_snapshot(fs->ino, data, len) : NULL;
    if (!n) {
        if (rc != 0)
            free(data);
        fuse_reply_err(req, rc ? -rc : ENOMEM);
        return;
    }
    struct stat st;
    attr_snapshot(fs, &st, n);
    reply_entry(fs, req, n, &st, 0, 0);
}

static void lookup_meta_file(struct fs *fs, fuse_req_t req, const char *name)
{
    size_t len = 0;
    char *data = NULL;
    int rc = fs_meta_snapshot(fs, name, &data, &len);
    reply_snapshot(fs, req, rc, data, len);
}

/* With pages = true, index.html in /, a dashboard or a widget directory p is its page
 * (SPEC 5): built from the tree as it is, never fetching and never waiting for
 * discovery. Returns 1 when replied, 0 when name is no page (nothing replied). */
static int lookup_page(struct fs *fs, fuse_req_t req, struct fs_inode *p, const char *name)
{
    if (strcmp(name, CFG_PAGE_NAME) != 0)
        return 0;
    struct fs_gen *g = fs_gen_get(fs);
    if (!g->cfg->pages) {
        fs_gen_unref(g);
        return 0;
    }
    struct ns_tree *t = fs_tree_get(fs);
    char *data = NULL;
    size_t len = 0;
    int rc =
        fs_page_build(t, g->cfg, p->kind, p->dash_id, p->widget_id, fs_clock(fs).wall, &data, &len);
    ns_unref(t);
    fs_gen_unref(g);
    reply_snapshot(fs, req, rc, data, len);
    return 1;
}

/* The resolver's node for directory inode p. */
static struct ns_node node_of(const struct fs_inode *p)
{
    struct ns_node n = {NS_ROOT, p->dash_id, p->widget_id, {0}};
    n.kind = p->kind == FK_DASH     ? NS_DASHBOARD
             : p->kind == FK_WIDGET ? NS_WIDGET
             : p->kind == FK_DAYS   ? NS_DAYS
                                    : NS_ROOT;
    return n;
}

/* LOOKUP of name in directory p (/, a dashboard, a widget or days/), resolved from the
 * name and the tree alone by the one resolver --fetch uses too (ns_resolve). Returns
 * 1 when replied, 0 when the name is unknown in the tree (nothing replied). */
static int lookup_resolved(struct fs *fs, fuse_req_t req, struct fs_inode *p, const char *name)
{
    struct ns_tree *t = fs_tree_get(fs);
    struct fs_gen *g = fs_gen_get(fs);
    struct cache_clock now = fs_clock(fs);
    struct vpath_clock clk = {now.wall, g->cfg->align_s};
    struct ns_node parent = node_of(p), out;
    int rc = ns_resolve(t, &parent, name, &clk, g->cfg->resolution, &out);
    fs_gen_unref(g);
    struct fs_inode *n = NULL;
    if (rc == 0 && out.kind == NS_IMAGE) {
        struct cache_key key = {out.dash_id, out.widget_id, out.img.start_ms, out.img.end_ms,
                                out.img.res};
        lookup_image(fs, req, p, name, &key, &out.img, now); /* key copied by the cache */
    } else if (rc == 0) {
        enum fs_kind kind = out.kind == NS_DASHBOARD ? FK_DASH
                            : out.kind == NS_WIDGET  ? FK_WIDGET
                                                     : FK_DAYS;
        n = fs_ino_dir(fs->ino, kind, out.dash_id, out.kind == NS_DASHBOARD ? NULL : out.widget_id);
    }
    ns_unref(t);
    if (rc == 0 && out.kind != NS_IMAGE)
        reply_dir_entry(fs, req, n);
    if (rc == 0)
        return 1;
    if (rc == -ENOENT && (p->kind == FK_ROOT || p->kind == FK_DASH))
        return 0; /* a discovery refresh may know it */
    fuse_reply_err(req, -rc);
    return 1;
}

void fs_lookup_after_disc(struct fs *fs, fuse_req_t req, uint64_t parent, const char *name, int rc)
{
    struct fs_inode *p = fs_ino_get(fs->ino, parent);
    if (!p) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (!lookup_resolved(fs, req, p, name))
        fuse_reply_err(req, rc ? -rc : ENOENT);
}

/* An unknown name in / or a dashboard directory: a discovery refresh may know it
 * (SPEC 4); the request is kept while it runs, never waiting here. */
static void lookup_unknown(struct fs *fs, fuse_req_t req, struct fs_inode *p, const char *name)
{
    const char *dash_id = p->kind == FK_ROOT ? NULL : p->dash_id;
    int rc = fs_disc_check(fs, dash_id);
    if (rc == 1)
        fs_wait_disc(fs, req, FW_LOOKUP, p->ino, name, NULL, dash_id);
    else if (rc < 0 || !lookup_resolved(fs, req, p, name))
        fuse_reply_err(req, rc < 0 ? -rc : ENOENT);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *p = fs_ino_get(fs->ino, parent);
    if (!p) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if ((p->kind == FK_ROOT || p->kind == FK_DASH || p->kind == FK_WIDGET) &&
        lookup_page(fs, req, p, name))
        return;
    switch (p->kind) {
    case FK_ROOT:
        if (strcmp(name, FS_META_NAME) == 0) {
            reply_dir_entry(fs, req, fs_ino_get(fs->ino, FS_INO_META));
            return;
        }
        /* fall through */
    case FK_DASH:
    case FK_WIDGET:
    case FK_DAYS:
        if (!lookup_resolved(fs, req, p, name))
            lookup_unknown(fs, req, p, name);
        return;
    case FK_META_DIR:
        lookup_meta_file(fs, req, name);
        return;
    default:
        fuse_reply_err(req, ENOTDIR);
    }
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct fs *fs = fuse_req_userdata(req);
    fs_ino_forget(fs->ino, ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = fuse_req_userdata(req);
    for (size_t i = 0; i < count; i++)
        fs_ino_forget(fs->ino, forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

/* ---- GETATTR, READ -------------------------------------------------------------- */

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = fs_ino_get(fs->ino, ino);
    struct stat st;
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind == FK_IMAGE) {
        fs_ra_getattr(fs, n);
        if (cache_version_state(n->v) != CACHE_READY)
            fs_wait_image(fs, req, FW_GETATTR, n, 0, 0);
        else
            fs_answer_image(fs, req, FW_GETATTR, n, 0, 0, 0);
        return;
    }
    if (n->kind == FK_META_FILE) { /* a snapshot: /.insightfs or a page */
        attr_snapshot(fs, &st, n);
        fuse_reply_attr(req, &st, 0);
        return;
    }
    int rc = attr_of_dir(fs, n, &st);
    if (rc != 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, FS_DIR_ATTR_S);
}

/* The slice is replied from a private copy: as soon as the kernel has the answer, a
 * RELEASEDIR or FORGET on another worker may free the source, while ASan's writev
 * interceptor still reads the iovec after the call returns (a use-after-free report
 * that stops the daemon under sanitizers). Snapshot files and readdir come here; image
 * READs hold a version reference instead (reply_version). */
void fs_reply_slice(fuse_req_t req, const void *data, size_t len, size_t size, off_t off)
{
    if (off < 0 || (size_t)off >= len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = len - (size_t)off < size ? len - (size_t)off : size;
    char *copy = malloc(n);
    if (!copy) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(copy, (const char *)data + off, n);
    fuse_reply_buf(req, copy, n);
    free(copy);
}

/* A READ of an image answered straight from the version's bytes, which never change:
 * the reference held across the reply keeps them alive even if a FORGET on another
 * worker drops the inode as soon as the kernel has the answer (ASan's writev
 * interceptor reads the iovec after the call returns). No copy: every cold read of an
 * image comes here (make bench row 7e). */
static void reply_version(fuse_req_t req, struct cache_version *v, size_t size, off_t off)
{
    cache_version_ref(v);
    size_t len = 0;
    const unsigned char *data = cache_version_data(v, &len);
    if (off < 0 || (size_t)off >= len)
        fuse_reply_buf(req, NULL, 0);
    else
        fuse_reply_buf(req, (const char *)data + off,
                       len - (size_t)off < size ? len - (size_t)off : size);
    cache_version_unref(v);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)fi;
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = fs_ino_get(fs->ino, ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind == FK_META_FILE) {
        fs_reply_slice(req, n->data, n->len, size, off);
        return;
    }
    if (n->kind != FK_IMAGE) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (cache_version_state(n->v) != CACHE_READY)
        fs_wait_image(fs, req, FW_READ, n, size, off);
    else
        fs_answer_image(fs, req, FW_READ, n, size, off, 0);
}

void fs_answer_image(struct fs *fs, fuse_req_t req, enum fs_wait_op op, struct fs_inode *n,
                     size_t size, off_t off, int rc)
{
    if (rc != 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    if (op == FW_READ) {
        reply_version(req, n->v, size, off);
        return;
    }
    struct stat st;
    attr_image(fs, &st, n, cache_version_state(n->v));
    fuse_reply_attr(req, &st, FS_DAY_S);
}

/* OPEN and FLUSH answered ENOSYS on purpose: from then on the kernel opens files itself,
 * keeps their pages and never asks us again (SPEC 12.1). */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        fuse_reply_err(req, EROFS);
    else
        fuse_reply_err(req, ENOSYS);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, ENOSYS);
}

/* ---- statfs, xattrs ------------------------------------------------------------- */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    (void)ino;
    struct fs *fs = fuse_req_userdata(req);
    struct cache_stats cs;
    cache_get_stats(fs->cache, &cs);
    struct statvfs sv;
    memset(&sv, 0, sizeof(sv));
    sv.f_bsize = sv.f_frsize = 4096;
    sv.f_blocks = cs.max_bytes / 4096;
    sv.f_bfree = sv.f_bavail = cs.bytes < cs.max_bytes ? (cs.max_bytes - cs.bytes) / 4096 : 0;
    sv.f_files = cs.entries;
    sv.f_namemax = 255;
    fuse_reply_statfs(req, &sv);
}

static const char *const xattr_names[] = {
    "user.insightfs.start_ms", "user.insightfs.end_ms",     "user.insightfs.resolution",
    "user.insightfs.api_path", "user.insightfs.fetched_at",
};
#define N_XATTRS (sizeof(xattr_names) / sizeof(xattr_names[0]))

/* The value of xattr i of image n, malloc'd; -ENODATA before the first fetch. */
static int xattr_value(struct fs_inode *n, size_t i, char **out)
{
    const struct cache_key *k = cache_version_key(n->v);
    int r = -1;
    switch (i) {
    case 0:
        r = asprintf(out, "%" PRId64, k->start_ms);
        break;
    case 1:
        r = asprintf(out, "%" PRId64, k->end_ms);
        break;
    case 2:
        r = asprintf(out, "%s", k->res == VPATH_RES_HIGH ? "HIGH" : "AUTO");
        break;
    case 3:
        *out = api_image_target(k->dash_id, k->widget_id, k->start_ms, k->end_ms, k->res);
        return *out ? 0 : -ENOMEM;
    case 4:
        if (cache_version_state(n->v) != CACHE_READY)
            return -ENODATA;
        r = asprintf(out, "%" PRId64, cache_version_fetched_at(n->v));
        break;
    }
    return r < 0 ? -ENOMEM : 0;
}

static void reply_xattr_bytes(fuse_req_t req, const char *buf, size_t len, size_t size)
{
    if (size == 0)
        fuse_reply_xattr(req, len);
    else if (size < len)
        fuse_reply_err(req, ERANGE);
    else
        fuse_reply_buf(req, buf, len);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = fs_ino_get(fs->ino, ino);
    if (!n || n->kind != FK_IMAGE) {
        fuse_reply_err(req, n ? ENODATA : ENOENT);
        return;
    }
    for (size_t i = 0; i < N_XATTRS; i++) {
        if (strcmp(name, xattr_names[i]) != 0)
            continue;
        char *val = NULL;
        int rc = xattr_value(n, i, &val);
        if (rc != 0)
            fuse_reply_err(req, -rc);
        else
            reply_xattr_bytes(req, val, strlen(val), size);
        free(val);
        return;
    }
    fuse_reply_err(req, ENODATA);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    struct fs *fs = fuse_req_userdata(req);
    struct fs_inode *n = fs_ino_get(fs->ino, ino);
    if (!n) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (n->kind != FK_IMAGE) {
        reply_xattr_bytes(req, "", 0, size);
        return;
    }
    char buf[256];
    size_t len = 0;
    for (size_t i = 0; i < N_XATTRS; i++) {
        size_t l = strlen(xattr_names[i]) + 1;
        memcpy(buf + len, xattr_names[i], l);
        len += l;
    }
    reply_xattr_bytes(req, buf, len, size);
}

/* ---- every mutation: EROFS ------------------------------------------------------ */

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)ino, (void)attr, (void)to_set, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_mknod(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode, dev_t rdev)
{
    (void)p, (void)name, (void)mode, (void)rdev;
    fuse_reply_err(req, EROFS);
}
static void op_mkdir(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode)
{
    (void)p, (void)name, (void)mode;
    fuse_reply_err(req, EROFS);
}
static void op_unlink(fuse_req_t req, fuse_ino_t p, const char *name)
{
    (void)p, (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t p, const char *name)
{
    (void)link, (void)p, (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_rename(fuse_req_t req, fuse_ino_t p, const char *name, fuse_ino_t np,
                      const char *nname, unsigned int flags)
{
    (void)p, (void)name, (void)np, (void)nname, (void)flags;
    fuse_reply_err(req, EROFS);
}
static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t np, const char *nname)
{
    (void)ino, (void)np, (void)nname;
    fuse_reply_err(req, EROFS);
}
static void op_create(fuse_req_t req, fuse_ino_t p, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    (void)p, (void)name, (void)mode, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino, (void)buf, (void)size, (void)off, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    (void)ino, (void)name, (void)value, (void)size, (void)flags;
    fuse_reply_err(req, EROFS);
}
static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    (void)ino, (void)name;
    fuse_reply_err(req, EROFS);
}
static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         struct fuse_file_info *fi)
{
    (void)ino, (void)mode, (void)off, (void)len, (void)fi;
    fuse_reply_err(req, EROFS);
}
static void op_copy_file_range(fuse_req_t req, fuse_ino_t in, off_t off_in,
                               struct fuse_file_info *fi_in, fuse_ino_t out, off_t off_out,
                               struct fuse_file_info *fi_out, size_t len, int flags)
{
    (void)in, (void)off_in, (void)fi_in, (void)out, (void)off_out, (void)fi_out, (void)len,
        (void)flags;
    fuse_reply_err(req, EROFS);
}
/* ---- session ------------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    /* readdir must never look names up (that would make pending versions). */
    conn->want &= ~FUSE_CAP_READDIRPLUS;
    conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
    /* The kernel asks GETATTR before reading a file whose attributes expired. */
    if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA)
        conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
    /* libfuse 3.14 wants parallel LOOKUPs in one directory but forgets to say so (fs_io.c). */
    fs_io_want_parallel(fs, (conn->want & FUSE_CAP_PARALLEL_DIROPS) != 0);
    clock_gettime(CLOCK_REALTIME, &fs->ready_at);
    clock_gettime(CLOCK_MONOTONIC, &fs->ready_mono);
    fs_threads_start(fs);
}

static const struct fuse_lowlevel_ops fs_ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .opendir = fs_dir_open,
    .readdir = fs_dir_read,
    .releasedir = fs_dir_release,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
    .fallocate = op_fallocate,
    .copy_file_range = op_copy_file_range,
};

const struct fuse_lowlevel_ops *fs_lowlevel_ops(void)
{
    return &fs_ops;
}
