/* fs internals shared by the files of the fs module; not part of any contract.
 *
 *   fs.c        the FUSE request handlers (the adapter proper) and the ops table
 *   fs_dir.c    directory listings (OPENDIR, READDIR, RELEASEDIR)
 *   fs_ino.c    the inode table
 *   fs_meta.c   the files of /.insightfs
 *   fs_mount.c  the root context's life: build, mount, serve, SIGHUP reload, the
 *               invalidation thread, tear down
 *
 * Inode numbers are plain uint64_t here (fuse_ino_t is one), so this header needs no
 * libfuse header and fs_ino.c includes none.
 */
#ifndef INSIGHTFS_FS_INT_H
#define INSIGHTFS_FS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/cfg.h"
#include "insightfs/disc.h"
#include "insightfs/fs.h"
#include "insightfs/ns.h"

#define FS_INO_ROOT 1
#define FS_INO_META 2
#define FS_INO_FIRST_DYNAMIC 16
#define FS_IMAGE_BASE (UINT64_C(1) << 40) /* + the cache's version id */
#define FS_NAMES_MAX 4

enum fs_kind { FK_ROOT, FK_META_DIR, FK_DASH, FK_WIDGET, FK_DAYS, FK_META_FILE, FK_IMAGE };

/* A name the kernel got an image inode under: parent directory inode and entry name. */
struct fs_name {
    uint64_t parent;
    char *name;
};

/* One inode. The public fields are immutable once the table returns the inode; the
 * others belong to fs_ino.c. */
struct fs_inode {
    uint64_t ino;
    enum fs_kind kind;
    char *dash_id, *widget_id; /* FK_DASH, FK_WIDGET, FK_DAYS */
    struct cache_version *v;   /* FK_IMAGE: one reference */
    char *data;                /* FK_META_FILE snapshot */
    size_t len;

    uint64_t nlookup;      /* protected by the table's lock; kept for images, snapshots */
    struct fs_inode *next; /* hash chain, protected by the table's lock */
    /* FK_IMAGE: the last names the kernel got this inode under, newest first, so an
     * eviction can invalidate them (protected by the table's lock). */
    struct fs_name names[FS_NAMES_MAX];
};

/* ---- fs_ino.c: the inode table -------------------------------------------------- */

/* Every inode the kernel may name, by number. Thread-safe (one mutex, held only for
 * table work: never across a call into another module). An inode pointer stays valid
 * until FORGET brings its lookup count to 0 (directory inodes: until fs_ino_free), and
 * the kernel sends no request for an inode after that. */
struct fs_ino;

/* A table holding the root (FS_INO_ROOT) and /.insightfs (FS_INO_META) directories,
 * each with lookup count 1. Returns it, or NULL (out of memory). */
struct fs_ino *fs_ino_new(void) __attribute__((warn_unused_result));

/* Free the table and every inode in it (dropping their version references). NULL-safe.
 * No other call on t may be running. */
void fs_ino_free(struct fs_ino *t);

/* The inode numbered ino, or NULL. Thread-safe. */
struct fs_inode *fs_ino_get(struct fs_ino *t, uint64_t ino);

/* The stable directory inode for (kind: FK_DASH, FK_WIDGET or FK_DAYS, dash_id,
 * widget_id: NULL for FK_DASH), made on first use with the next dynamic number and kept
 * until fs_ino_free. Returns it, or NULL (out of memory). Strings are copied. */
struct fs_inode *fs_ino_dir(struct fs_ino *t, enum fs_kind kind, const char *dash_id,
                            const char *widget_id) __attribute__((warn_unused_result));

/* The inode of version v (FS_IMAGE_BASE + its id), made on first use, with one lookup
 * counted under the table's lock (so a concurrent FORGET cannot free it before the
 * caller replies; the caller replies the entry, or undoes the count with fs_ino_forget).
 * Takes over the caller's reference to v in every case (dropped when the inode already
 * holds one, or on failure). Returns the inode, or NULL (out of memory). */
struct fs_inode *fs_ino_image(struct fs_ino *t, struct cache_version *v)
    __attribute__((warn_unused_result));

/* A new /.insightfs snapshot inode holding data (len bytes), with one lookup counted
 * (as fs_ino_image). Takes ownership of data in every case. Returns the inode, or NULL
 * (out of memory). */
struct fs_inode *fs_ino_snapshot(struct fs_ino *t, char *data, size_t len)
    __attribute__((warn_unused_result));

/* FORGET: take nlookup from ino's lookup count. At 0 an image or snapshot inode is
 * removed and freed (its version reference dropped outside the lock); directory inodes
 * stay. An unknown ino is ignored. */
void fs_ino_forget(struct fs_ino *t, uint64_t ino, uint64_t nlookup);

/* Remember that the kernel knows image n as parent/name (the FS_NAMES_MAX newest are
 * kept). Out of memory loses only a later invalidation. name is copied. */
void fs_ino_remember_name(struct fs_ino *t, struct fs_inode *n, uint64_t parent, const char *name);

/* Copy the names remembered for inode ino into out (unused slots: name NULL; each name
 * malloc'd, the caller frees it). An unknown ino gives none. */
void fs_ino_names(struct fs_ino *t, uint64_t ino, struct fs_name out[FS_NAMES_MAX]);

/* ---- fs_mount.c: the root context, generations, background threads -------------- */

struct fs_api; /* an API client shared by generations (fs_mount.c) */
struct fuse_session;
struct fuse_lowlevel_ops;

/* What one configuration made: swapped whole on reload; refcounted, so a request keeps
 * the generation it started with. cfg and api are immutable / thread-safe. */
struct fs_gen {
    atomic_int refs;
    struct cfg *cfg;
    struct fs_api *fa;
    struct api *api; /* fa->api */
};

/* The root context, built by fs_run and reached as the session's userdata. */
struct fs {
    pthread_mutex_t gen_lock;
    struct fs_gen *gen;       /* protected by gen_lock */
    struct ns_tree *tree;     /* protected by gen_lock: configured + discovered */
    uint64_t tree_generation; /* protected by gen_lock: the disc_generation tree reflects */

    struct disc *disc;  /* discovered lists; its own lock */
    struct fs_ino *ino; /* inode table; its own lock */
    struct cache *cache;
    const struct cfg_env *env;
    struct fs_opts opts;
    uid_t uid;
    gid_t gid;
    struct timespec ready_at; /* the mount became ready (CLOCK_REALTIME) */
    struct timespec ready_mono;

    struct fuse_session *se;

    /* Evicted versions whose kernel entries must be invalidated, by a thread that is
     * not serving a FUSE request (SPEC 12.2). */
    pthread_mutex_t inval_lock;
    pthread_cond_t inval_cond;
    uint64_t *inval_q;         /* protected by inval_lock: inode numbers */
    size_t inval_n, inval_cap; /* protected by inval_lock */
    int inval_stop;            /* protected by inval_lock */
    pthread_t inval_thread;
    int inval_started;

    int hup_pipe[2];
    pthread_t reload_thread;
    int reload_started;

    /* Open directory handles (fs_dir.c), so that fs_free frees those whose RELEASEDIR
     * never came: the kernel sends RELEASEDIR in the background and drops what is still
     * queued when the connection goes away at unmount (valgrind: a definite leak). */
    pthread_mutex_t dirs_lock;
    struct dirbuf *dirs; /* protected by dirs_lock: a doubly linked list */
};

/* The current generation with one more reference (release with fs_gen_unref).
 * Thread-safe. */
struct fs_gen *fs_gen_get(struct fs *fs);
void fs_gen_unref(struct fs_gen *g); /* NULL-safe; frees the last reference */

/* The current tree with one more reference (release with ns_unref). Thread-safe. */
struct ns_tree *fs_tree_get(struct fs *fs);

/* Rebuild the tree from the current cfg and the discovered lists and make it current;
 * out of memory keeps the old tree. Thread-safe. */
void fs_tree_rebuild(struct fs *fs);

/* Refresh one discovered list (dash_id NULL: the dashboards) with the current
 * generation (disc_refresh), and rebuild the tree when the list changed. Returns 0 or
 * disc_refresh's negative errno: a lookup answers it, a listing ignores it (the last
 * good or configured entries stay listed). May wait for the network. Thread-safe. */
int fs_disc_refresh(struct fs *fs, const char *dash_id);

/* "now" in Unix ms (the current generation's api_now_ms); the cache's clock. arg is the
 * struct fs. Thread-safe. */
int64_t fs_now_ms(void *arg);

/* Start the reload and invalidation threads (the session's .init, after daemonizing);
 * a thread that cannot start is logged and its job skipped. fs_threads_stop joins them
 * (.destroy). Called once each, from libfuse. */
void fs_threads_start(struct fs *fs);
void fs_threads_stop(struct fs *fs);

/* ---- fs.c: the request handlers ------------------------------------------------- */

struct fuse_req; /* fuse_req_t is a struct fuse_req * */
struct fuse_file_info;

/* The low-level operations table (static storage) for fuse_session_new; its userdata
 * must be the struct fs. */
const struct fuse_lowlevel_ops *fs_lowlevel_ops(void);

/* fs_meta.c. The i-th name of /.insightfs in listing order, NULL past the last. */
const char *fs_meta_name(size_t i);
/* A snapshot of /.insightfs/<name>: 0 with *data (malloc'd, the caller's) and *len;
 * -ENOENT for another name; -ENOMEM. Thread-safe. */
int fs_meta_snapshot(struct fs *fs, const char *name, char **data, size_t *len)
    __attribute__((warn_unused_result));

/* Reply bytes [off, off + size) of data (len bytes), cut at len, from a private copy:
 * the source may be freed by another worker as soon as the kernel has the answer. */
void fs_reply_slice(struct fuse_req *req, const void *data, size_t len, size_t size, off_t off);

/* ---- fs_dir.c: directory listings ----------------------------------------------- */

/* OPENDIR, READDIR, RELEASEDIR of the ops table (SPEC 4: a snapshot taken at OPENDIR). */
void fs_dir_open(struct fuse_req *req, uint64_t ino, struct fuse_file_info *fi);
void fs_dir_read(struct fuse_req *req, uint64_t ino, size_t size, off_t off,
                 struct fuse_file_info *fi);
void fs_dir_release(struct fuse_req *req, uint64_t ino, struct fuse_file_info *fi);
/* Free the handles still open (no RELEASEDIR came); after the session is destroyed. */
void fs_dir_free_all(struct fs *fs);

#endif
