/* fs internals shared by the files of the fs module; not part of any contract.
 *
 *   fs.c        the FUSE request handlers (the adapter proper) and the ops table
 *   fs_dir.c    directory listings (OPENDIR, READDIR, RELEASEDIR)
 *   fs_ino.c    the inode table
 *   fs_meta.c   the files of /.insightfs
 *   fs_wait.c   kept requests, the fetch jobs that answer them, housekeeping
 *   fs_ra.c     readahead of listings
 *   fs_gen.c    configuration generations, the tree, SIGHUP reload
 *   fs_inval.c  the invalidation thread
 *   fs_mnt.c    which mount is ours; aborting and detaching it when teardown is stuck
 *   fs_mount.c  the mount: build the root context, mount, serve, tear down
 *   fs_pages.c  the pages of pages = true (index.html)
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
#include "insightfs/engine.h"
#include "insightfs/fs.h"
#include "insightfs/ns.h"
#include "insightfs/shared.h"

#define FS_INO_ROOT 1
#define FS_INO_META 2
#define FS_INO_FIRST_DYNAMIC 16
#define FS_IMAGE_BASE (UINT64_C(1) << 40) /* + the cache's version id */

enum fs_kind { FK_ROOT, FK_META_DIR, FK_DASH, FK_WIDGET, FK_DAYS, FK_META_FILE, FK_IMAGE };

/* A name the kernel got an image inode under: parent directory inode and entry name. */
struct fs_name {
    uint64_t parent;
    const char *name;
};

struct fs_ino_name; /* fs_ino.c: one remembered name */

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
    int pinned;            /* protected by the table's lock: its version left the cache, so
                              its records count in pinned bytes, not in max_bytes */
    size_t pinned_cost;    /* protected by the table's lock: what it adds to pinned bytes */
    struct fs_inode *next; /* hash chain, protected by the table's lock */
    /* FK_DASH, FK_WIDGET, FK_DAYS: chain of the index by ids (protected by the table's
     * lock). */
    struct fs_inode *dir_next;
    /* FK_IMAGE: every name the kernel got this inode under, newest first, so an
     * eviction can invalidate them all (protected by the table's lock). */
    struct fs_ino_name *names;
};

/* ---- fs_ino.c: the inode table -------------------------------------------------- */

/* Every inode the kernel may name, by number. Thread-safe (one mutex, held only for
 * table work: never across a call into another module). An inode pointer stays valid
 * until FORGET brings its lookup count to 0 (directory inodes: until fs_ino_free), and
 * the kernel sends no request for an inode after that. */
struct fs_ino;

/* A table holding the root (FS_INO_ROOT) and /.insightfs (FS_INO_META) directories,
 * each with lookup count 1. Returns it, or NULL (out of memory). */
struct fs_ino *fs_ino_new(struct cache *cache) __attribute__((warn_unused_result));

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

/* Remember that the kernel knows image n as parent/name: every distinct (parent, name)
 * is kept until n is freed, each charged at its size like the inode (SPEC 7), so that an
 * eviction can invalidate every entry that points at n (SPEC 12.2). Out of memory loses
 * only a later invalidation. name is copied. */
void fs_ino_remember_name(struct fs_ino *t, struct fs_inode *n, uint64_t parent, const char *name);

/* The names remembered for inode ino, newest first, at most max of them (SIZE_MAX: all).
 * Returns how many, with *out one malloc'd block (the array, then the strings its
 * entries point into) that the caller frees with free(). Returns 0 with *out NULL when
 * ino is unknown or has no name, or out of memory (only an invalidation is lost). */
size_t fs_ino_names(struct fs_ino *t, uint64_t ino, size_t max, struct fs_name **out)
    __attribute__((warn_unused_result));

/* Image inodes the kernel holds now. */
size_t fs_ino_images(struct fs_ino *t);

/* The version of image inode ino left the cache (fs_drain_dropped): from now on its
 * records count as pinned, outside max_bytes, until FORGET frees them (SPEC 7). An
 * unknown ino is ignored. */
void fs_ino_unbind(struct fs_ino *t, uint64_t ino);

/* Bytes of the records of image inodes whose version left the cache. */
uint64_t fs_ino_pinned_bytes(struct fs_ino *t);

/* Bytes the table's pool of churning records (image and snapshot inodes, names) has
 * mapped now: for tests. Thread-safe. */
size_t fs_ino_pool_mapped(struct fs_ino *t);

/* ---- fs_inval.c: the invalidation thread ---------------------------------------- */

/* The only thread that calls fuse_lowlevel_notify_inval_entry (SPEC 12.2, 12.4): the
 * kernel holds a directory's lock during a LOOKUP in it and the notify takes that lock,
 * so a thread that must also answer kept LOOKUPs could stall. Eviction, the idle sweep
 * and reload queue their invalidations here. Thread-safe. */
struct fs_inval;
struct fuse_session;

struct fs_inval *fs_inval_new(struct fs_ino *ino) __attribute__((warn_unused_result));
/* Start the thread (.init); 0 or a negative errno (then nothing is invalidated). probe
 * (tests only, else NULL): a path inside the mount that the thread stats as it stops, to
 * wait on the mount as a stuck notify would. */
int fs_inval_start(struct fs_inval *q, struct fuse_session *se, const char *probe)
    __attribute__((warn_unused_result));
/* Queue the names the kernel got image inode ino under. */
void fs_inval_image(struct fs_inval *q, uint64_t ino);
/* Queue parent/name (copied; out of memory loses this invalidation only). */
void fs_inval_name(struct fs_inval *q, uint64_t parent, const char *name);
/* As soon as the session loop has returned: drop what is queued and what is queued
 * from now on (nobody answers LOOKUPs any more). */
void fs_inval_close(struct fs_inval *q);
/* Once every kept request is answered: close (if not yet), then join the thread. 0 when it
 * ended (or never started); -ETIMEDOUT when it is still in a notify within_ms later,
 * which then waits for a LOOKUP nobody will read (the caller aborts the connection and
 * calls again). within_ms < 0: wait for good. */
int fs_inval_join(struct fs_inval *q, int within_ms);
void fs_inval_free(struct fs_inval *q); /* NULL-safe; stopped or never started */

/* ---- fs_mnt.c: which mount is ours, and ending it when teardown is stuck ---------- */

struct fs_mnt {
    char *real;         /* the mount point's real path, or NULL */
    int real_errno;     /* why real is NULL */
    unsigned long conn; /* fusectl's number of our connection, valid when known */
    int known;
};
enum fs_abort { FS_NOT_ABORTED, FS_ABORTED, FS_ABORTED_UNMOUNTED };
/* Before mounting: the mount point's real path (a stat after would wait on us). */
void fs_mnt_locate(struct fs_mnt *m, const char *mountpoint);
/* Right after mounting: our connection's number, from the mount on top at m->real; a
 * warn line when it cannot be told. */
void fs_mnt_identify(struct fs_mnt *m, const char *mountpoint);
/* The fusectl connection number of the FUSE mount at mountpoint in mountinfo (the text
 * of /proc/self/mountinfo): 0 and *conn, or -ENOENT (*conn untouched). The last matching
 * line (the mount on top) decides: a later non-FUSE mount there hides ours. */
int fs_mnt_conn_of(const char *mountinfo, const char *mountpoint, unsigned long *conn);
/* The same, from this process's /proc/self/mountinfo for the real path real: 0 or a
 * negative errno. Touches no file of any mount. */
int fs_mnt_conn_at(const char *real, unsigned long *conn);
/* Abort our connection: fusectl's abort file by number when known, else umount2 of
 * m->real with MNT_FORCE, and then only if the mount on top there is ours as far as the
 * number tells. FS_ABORTED: libfuse will leave the mount in place (fs_mnt_detach);
 * FS_ABORTED_UNMOUNTED: umount2 also unmounted it. Logs why when it cannot. */
enum fs_abort fs_mnt_abort(const struct fs_mnt *m);
/* After FS_ABORTED and libfuse's (no-op) unmount: detach the dead mount when the mount on
 * top at m->real is still ours (umount2 MNT_DETACH as root, else fusermount3 -u -q -z
 * with an empty environment). Nothing here can wait on FUSE any more. */
void fs_mnt_detach(const struct fs_mnt *m);
void fs_mnt_release(struct fs_mnt *m); /* frees real */

/* ---- fs_gen.c: configuration generations, the tree, SIGHUP reload --------------- */

struct fs;
struct fs_state;
struct fs_api; /* an API client shared by generations (fs_gen.c) */

/* What one configuration made: swapped whole on reload; refcounted, so a request keeps
 * the generation it started with. cfg and api are immutable / thread-safe. */
struct fs_gen {
    atomic_int refs;
    struct cfg *cfg;
    struct fs_api *fa;
    struct api *api;          /* fa->api */
    struct shared *shared;    /* fa->shared: the fleet's cache level, NULL without a shared group */
    struct fs_state *st;      /* whose reload thread frees it (fs_gen_unref) */
    struct fs_gen *next_dead; /* in st->dead, protected by st->dead_lock */
};

/* The state that configuration and discovery decide: the current generation and the
 * tree built from it and the discovered lists. */
struct fs_state {
    pthread_mutex_t lock;
    struct fs_gen *gen;       /* protected by lock */
    struct ns_tree *tree;     /* protected by lock: configured + discovered */
    uint64_t tree_generation; /* protected by lock: the disc_generation tree reflects */
    pthread_mutex_t rebuild;  /* serializes tree rebuilds (build + swap) */
    struct disc *disc;        /* discovered lists; their own lock */
    int hup_pipe[2];          /* SIGHUP ('h') and wake-ups of the reload thread */
    pthread_t reload_thread;
    int reload_started;
    atomic_int reload_stop;    /* set by fs_reload_stop: the reload thread ends */
    pthread_mutex_t dead_lock; /* guards dead and reaper */
    struct fs_gen *dead;       /* protected by dead_lock: generations for the reload thread
                                  to free (their last reference is gone) */
    int reaper;                /* protected by dead_lock: the reload thread frees them */
};

/* Set up st for cfg (taken over in every case): the first generation and its tree.
 * Returns 0, or -1 with a message printed. */
int fs_state_init(struct fs_state *st, struct cfg *cfg, int64_t test_offset_ms);
void fs_state_cleanup(struct fs_state *st);

/* The current generation with one more reference (release with fs_gen_unref). */
struct fs_gen *fs_gen_get(struct fs *fs);
/* Drop a reference; NULL-safe. The last one frees the generation, which may wait for the
 * network (a shared cache's keeper thread is joined): while the reload thread runs, the
 * generation is handed to it instead, so a libfuse worker never waits (SPEC 12.4). */
void fs_gen_unref(struct fs_gen *g);

/* The current tree with one more reference (release with ns_unref); rebuilt first when
 * the discovered lists changed since it was built. Thread-safe. */
struct ns_tree *fs_tree_get(struct fs *fs);

/* Rebuild the tree from the current cfg and the discovered lists and make it current;
 * out of memory keeps the old tree. Rebuilds are serialized, so a rebuild racing a reload
 * never installs the old configuration's tree last. Thread-safe. */
void fs_tree_rebuild(struct fs *fs);

/* The clocks of "now": CLOCK_MONOTONIC ms and the gateway-corrected wall ms. */
struct cache_clock fs_clock(struct fs *fs);

/* The SIGHUP handler's pipe and the reload thread (SPEC 7, 12.5). */
int fs_reload_start(struct fs *fs) __attribute__((warn_unused_result));
void fs_reload_stop(struct fs *fs);
void fs_reload_install_handler(struct fs *fs);
void fs_reload_remove_handler(void);

/* ---- fs_wait.c: kept requests and the fetches they wait for --------------------- */

struct fuse_req; /* fuse_req_t is a struct fuse_req * */
struct fuse_file_info;

enum fs_wait_op { FW_GETATTR, FW_READ, FW_LOOKUP, FW_OPENDIR };

/* Keep req (GETATTR, or READ of size bytes at off) of image inode n until n's version has
 * bytes: answered by the thread that completes the fetch (starting it if nobody has),
 * by its deadline (ETIMEDOUT), or EINTR when interrupted; EAGAIN at once past
 * api.max_pending. Never waits. */
void fs_wait_image(struct fs *fs, struct fuse_req *req, enum fs_wait_op op, struct fs_inode *n,
                   size_t size, off_t off);

/* Keep req (FW_LOOKUP of name in parent, or FW_OPENDIR of directory parent with fi) until
 * the refresh of dash_id's discovered list (NULL: the dashboards) ends, then answer it
 * with fs_lookup_after_disc / fs_dir_open_after_disc. Never waits. */
void fs_wait_disc(struct fs *fs, struct fuse_req *req, enum fs_wait_op op, uint64_t parent,
                  const char *name, struct fuse_file_info *fi, const char *dash_id);

/* What a discovery refresh of dash_id's list means for a request now: 0 (use the tree),
 * 1 (a refresh is needed: keep the request with fs_wait_disc), or a negative errno (a
 * remembered failure and no list). Never waits. */
int fs_disc_check(struct fs *fs, const char *dash_id);

/* Start fetching v (a new reference is taken) ahead of need, if nobody does and no
 * failure is remembered: readahead. Returns 1 when a fetch was started. */
int fs_fetch_ahead(struct fs *fs, struct cache_version *v);

/* Queue the kernel invalidations of the versions the cache dropped. */
void fs_drain_dropped(struct fs *fs);

/* fs_mount.c: start the engine, invalidation and reload threads and the housekeeping
 * (the session's .init, after daemonizing). */
void fs_threads_start(struct fs *fs);

/* fs_mount.c, at teardown, once every kept request is answered: join the invalidation
 * thread; if it is still in a notify stuck_ms later (behind a LOOKUP nobody will read),
 * log a warn line, abort m's connection (fs_mnt_abort), which ends the notify, and join
 * for good. Returns what the abort did (FS_NOT_ABORTED when none was needed). */
enum fs_abort fs_inval_end(struct fs_inval *q, const struct fs_mnt *m, int stuck_ms);

/* fs_mount.c. The filesystem's state for cfg (taken, on failure too), with no mount and
 * no thread started: fs_run's first step, and what tests/unit/test_fs.c drives its
 * request handlers with. NULL when out of memory (a message was printed). */
struct fs *fs_new(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o);
/* Free what fs_new made (threads stopped, or never started). NULL-safe. */
void fs_free(struct fs *fs);

/* Start and stop the housekeeping timer (idle sweep, heap trimming, the CPU share) and
 * answer every kept request at teardown. */
void fs_wait_start(struct fs *fs);
void fs_wait_stop(struct fs *fs);

/* ---- fs_ra.c: readahead of listings (SPEC 5) ----------------------------------- */

struct fs_ra *fs_ra_new(void) __attribute__((warn_unused_result));
void fs_ra_free(struct fs_ra *ra); /* NULL-safe */
/* OPENDIR of widget or days/ directory dir listed the file names names[0..n) in order:
 * the newest listing of dir. Takes ownership of names and each string. */
void fs_ra_listing(struct fs *fs, const struct fs_inode *dir, char **names, size_t n);
/* RELEASEDIR of dir: its listing is kept 10 s after the last one. */
void fs_ra_release(struct fs *fs, uint64_t dir);
/* Drop listings kept past their time. */
void fs_ra_sweep(struct fs *fs, int64_t now_mono);
/* A LOOKUP of dir/name, a GETATTR of image inode n: maybe fetch ahead. Never waits. */
void fs_ra_lookup(struct fs *fs, uint64_t dir, const char *name);
void fs_ra_getattr(struct fs *fs, const struct fs_inode *n);

/* ---- fs_io.c: the daemon's reads and writes of /dev/fuse ------------------------ */

/* Its state in struct fs: the INIT request's unique, and whether to send
 * FUSE_PARALLEL_DIROPS in its reply. */
enum fs_io_phase { FS_IO_BEFORE_INIT, FS_IO_INIT_READ, FS_IO_PASS };
struct fs_io_state {
    atomic_int state;     /* enum fs_io_phase */
    uint64_t init_unique; /* written before state becomes "INIT read" */
    int want_parallel;    /* set by .init, before INIT's reply is written */
};
/* After fuse_session_mount: route the session's reads and writes through fs_io. */
int fs_io_install(struct fs *fs) __attribute__((warn_unused_result));
/* The hooks fs_io_install installs (their userdata is the struct fs): for tests. */
struct fuse_custom_io;
const struct fuse_custom_io *fs_io_ops(void);
/* .init: whether conn->want holds FUSE_CAP_PARALLEL_DIROPS (libfuse 3.14 drops it). */
void fs_io_want_parallel(struct fs *fs, int on);

/* ---- the root context ----------------------------------------------------------- */

struct fs_ra; /* readahead state (fs_ra.c) */

struct fs {
    struct fs_state st;
    struct fs_ino *ino; /* inode table; its own lock */
    struct cache *cache;
    struct engine *engine; /* fetch threads and the timer */
    struct fs_inval *inval;
    struct fs_ra *ra;
    const struct cfg_env *env;
    struct fs_opts opts;
    struct fs_mnt mnt; /* our mount (fs_mnt.c) */
    uid_t uid;
    gid_t gid;
    struct timespec ready_at; /* the mount became ready (CLOCK_REALTIME) */
    struct timespec ready_mono;
    struct fuse_session *se;
    struct fs_io_state io; /* fs_io.c */

    atomic_uint_fast64_t waiting;   /* kept requests now */
    atomic_uint_fast64_t shed;      /* answered EAGAIN for max_pending */
    atomic_uint_fast64_t readahead; /* fetches started ahead of a listing */
    atomic_int_fast64_t shed_logged_mono;
    atomic_int stopping;
    struct engine_timer housekeeping;
    uint64_t trim_mark;    /* the housekeeping timer's: bytes held at its last tick */
    size_t trim_inodes;    /* the housekeeping timer's: image inodes at its last tick */
    struct cpu_share *cpu; /* the housekeeping timer's (set by fs_run before any thread) */

    /* Open directory handles (fs_dir.c), so that fs_free frees those whose RELEASEDIR
     * never came: the kernel sends RELEASEDIR in the background and drops what is still
     * queued when the connection goes away at unmount (valgrind: a definite leak). */
    pthread_mutex_t dirs_lock;
    struct dirbuf *dirs; /* protected by dirs_lock: a doubly linked list */
};

/* ---- fs.c: the request handlers ------------------------------------------------- */

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

/* Answers of kept requests (fs_wait.c calls them when the wait ends with rc). */
void fs_answer_image(struct fs *fs, struct fuse_req *req, enum fs_wait_op op, struct fs_inode *n,
                     size_t size, off_t off, int rc);
void fs_lookup_after_disc(struct fs *fs, struct fuse_req *req, uint64_t parent, const char *name,
                          int rc);

/* ---- fs_dir.c: directory listings ----------------------------------------------- */

/* OPENDIR, READDIR, RELEASEDIR of the ops table (SPEC 4: a snapshot taken at OPENDIR). */
void fs_dir_open(struct fuse_req *req, uint64_t ino, struct fuse_file_info *fi);
void fs_dir_read(struct fuse_req *req, uint64_t ino, size_t size, off_t off,
                 struct fuse_file_info *fi);
void fs_dir_release(struct fuse_req *req, uint64_t ino, struct fuse_file_info *fi);
/* OPENDIR of ino answered after a discovery refresh (its failure is ignored: the last
 * good or configured entries are listed). */
void fs_dir_open_after_disc(struct fs *fs, struct fuse_req *req, uint64_t ino,
                            struct fuse_file_info *fi);
/* Free the handles still open (no RELEASEDIR came); after the session is destroyed. */
void fs_dir_free_all(struct fs *fs);

/* ---- fs_pages.c: the pages (SPEC 5, pages = true) ------------------------------- */

/* The index.html of a directory: kind FK_ROOT (dash_id, widget_id unused), FK_DASH
 * (dash_id) or FK_WIDGET (dash_id, widget_id), its ids found in t by id only. Built from
 * t and cfg (both borrowed) at now_ms (Unix ms of "now": today's date, which graphs are
 * live). Returns 0 with *out (malloc'd, the caller's; NUL-terminated) and *len (its
 * length); -ENOENT when t has no such dashboard or widget, or kind has no page; -ERANGE
 * when no date can be named at now_ms; -ENOMEM. On failure *out is NULL. Pure: no I/O,
 * no lock, no clock read; thread-safe. */
int fs_page_build(const struct ns_tree *t, const struct cfg *cfg, enum fs_kind kind,
                  const char *dash_id, const char *widget_id, int64_t now_ms, char **out,
                  size_t *len) __attribute__((warn_unused_result));

#endif
