/* fs_mount - the life of the mounted filesystem: build the root context, mount, serve,
 * reload on SIGHUP, invalidate evicted entries, unmount and tear down. The request
 * handlers are in fs.c and fs_dir.c, the inode table in fs_ino.c (their design notes
 * are there).
 *
 * Configuration: a generation (cfg + API client) is swapped whole on SIGHUP; requests
 * hold a reference to the generation they started with. The API client is shared by
 * generations whose api settings are the same, so a reload that changes only other
 * settings keeps its connections, retry budget, clock offset and counters. The tree
 * (configured + discovered entries) is rebuilt from the current cfg and the discovered
 * lists whenever either changes, and swapped the same way.
 *
 * Reload (SPEC 7) is all or nothing and runs in its own thread: the SIGHUP handler only
 * writes a byte to a pipe (libconfig is not async-signal-safe), and it is installed
 * before libfuse's handlers, which replace only default ones and would make SIGHUP exit
 * (SPEC 12.5). Another account (endpoint or access key) drops the cache and the
 * discovered lists. Names in / and in dashboard directories that no longer lead where
 * they did are then invalidated in the kernel.
 *
 * Eviction under live references: when the cache drops a version the kernel still holds,
 * on_evict queues its inode; the invalidation thread (not serving a FUSE request, as
 * fuse_lowlevel_notify_inval_entry requires: SPEC 12.2) invalidates the names the kernel
 * got it under, so the kernel forgets the inode and its bytes can be freed.
 *
 * Threads: the session runs with max_threads = max_connections + FS_SPARE_THREADS, so a
 * cached file still reads at once while max_connections fetches hang and more wait for a
 * slot (SPEC 12.4). The reload and invalidation threads start in .init (after
 * daemonizing) and are joined in .destroy; every thread started here blocks all signals.
 *
 * Locking: gen_lock guards the current generation and tree pointers; inval_lock the
 * invalidation queue. Neither is held across network I/O or a call into another module
 * (ns_ref, a refcount, excepted), and they are never held together.
 */
#define FUSE_USE_VERSION 312

#include "insightfs/fs.h"

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs_int.h"
#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/disc.h"
#include "insightfs/log.h"
#include "insightfs/ns.h"

#define FS_SPARE_THREADS 64

/* The API client, shared by generations whose api settings are the same. */
struct fs_api {
    atomic_int refs;
    struct api *api;
};

/* ---- generations and the tree --------------------------------------------------- */

void fs_gen_unref(struct fs_gen *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    if (g->fa && atomic_fetch_sub(&g->fa->refs, 1) == 1) {
        api_free(g->fa->api);
        free(g->fa);
    }
    cfg_free(g->cfg);
    free(g);
}

struct fs_gen *fs_gen_get(struct fs *fs)
{
    pthread_mutex_lock(&fs->gen_lock);
    struct fs_gen *g = fs->gen;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&fs->gen_lock);
    return g;
}

/* Takes ownership of cfg on success and failure. reuse: share this client (its api
 * settings equal cfg's), or NULL to make a new one. */
static struct fs_gen *gen_new(struct cfg *cfg, struct fs_api *reuse, int64_t test_offset,
                              char **err)
{
    struct fs_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        cfg_free(cfg);
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->cfg = cfg;
    if (reuse) {
        atomic_fetch_add(&reuse->refs, 1);
        g->fa = reuse;
    } else if ((g->fa = calloc(1, sizeof(*g->fa))) != NULL) {
        atomic_init(&g->fa->refs, 1);
        g->fa->api = api_new(cfg, test_offset, err);
        if (!g->fa->api) {
            free(g->fa);
            g->fa = NULL;
        }
    }
    if (!g->fa) {
        fs_gen_unref(g);
        return NULL;
    }
    g->api = g->fa->api;
    return g;
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* 1 when a and b configure the API client identically. */
static int same_client(const struct cfg *a, const struct cfg *b)
{
    return same_str(a->endpoint, b->endpoint) && same_str(a->access_key, b->access_key) &&
           same_str(a->secret_key, b->secret_key) && same_str(a->ca_file, b->ca_file) &&
           a->timeout_ms == b->timeout_ms && a->connect_timeout_ms == b->connect_timeout_ms &&
           a->retries == b->retries && a->max_connections == b->max_connections &&
           a->max_requests_per_second == b->max_requests_per_second &&
           a->max_image_bytes == b->max_image_bytes;
}

struct ns_tree *fs_tree_get(struct fs *fs)
{
    pthread_mutex_lock(&fs->gen_lock);
    struct ns_tree *t = fs->tree;
    ns_ref(t);
    pthread_mutex_unlock(&fs->gen_lock);
    return t;
}

int64_t fs_now_ms(void *arg)
{
    struct fs *fs = arg;
    struct fs_gen *g = fs_gen_get(fs);
    int64_t now = api_now_ms(g->api);
    fs_gen_unref(g);
    return now;
}

void fs_tree_rebuild(struct fs *fs)
{
    struct fs_gen *g = fs_gen_get(fs);
    uint64_t built = 0;
    struct ns_tree *t = disc_build_tree(fs->disc, g->cfg, &built);
    fs_gen_unref(g);
    if (!t)
        return; /* out of memory: keep the old tree */
    pthread_mutex_lock(&fs->gen_lock);
    struct ns_tree *old = fs->tree;
    fs->tree = t;
    fs->tree_generation = built;
    pthread_mutex_unlock(&fs->gen_lock);
    ns_unref(old);
}

int fs_disc_refresh(struct fs *fs, const char *dash_id)
{
    struct fs_gen *g = fs_gen_get(fs);
    int rc = disc_refresh(fs->disc, g->api, g->cfg, dash_id, NULL);
    fs_gen_unref(g);
    /* Whoever stored the lists, this caller must see them: a waiter can wake before the
     * refreshing thread has rebuilt the tree. */
    pthread_mutex_lock(&fs->gen_lock);
    uint64_t have = fs->tree_generation;
    pthread_mutex_unlock(&fs->gen_lock);
    if (disc_generation(fs->disc) != have)
        fs_tree_rebuild(fs);
    return rc;
}

/* ---- invalidation of evicted versions ------------------------------------------- */

/* The cache dropped v while it is still referenced (by our inode): queue its entries
 * for invalidation. Runs in whatever thread evicted, maybe a FUSE worker. */
static void on_evict(void *arg, struct cache_version *v)
{
    struct fs *fs = arg;
    uint64_t ino = FS_IMAGE_BASE + cache_version_id(v);
    pthread_mutex_lock(&fs->inval_lock);
    if (fs->inval_n == fs->inval_cap) {
        size_t cap = fs->inval_cap ? fs->inval_cap * 2 : 64;
        uint64_t *q = realloc(fs->inval_q, cap * sizeof(*q));
        if (q) {
            fs->inval_q = q;
            fs->inval_cap = cap;
        }
    }
    if (fs->inval_n < fs->inval_cap) {
        fs->inval_q[fs->inval_n++] = ino;
        pthread_cond_signal(&fs->inval_cond);
    }
    pthread_mutex_unlock(&fs->inval_lock);
}

static void *inval_main(void *arg)
{
    struct fs *fs = arg;
    pthread_mutex_lock(&fs->inval_lock);
    while (!fs->inval_stop) {
        if (fs->inval_n == 0) {
            pthread_cond_wait(&fs->inval_cond, &fs->inval_lock);
            continue;
        }
        uint64_t ino = fs->inval_q[--fs->inval_n];
        pthread_mutex_unlock(&fs->inval_lock);
        struct fs_name names[FS_NAMES_MAX];
        fs_ino_names(fs->ino, ino, names);
        for (size_t i = 0; i < FS_NAMES_MAX; i++) {
            if (names[i].name) {
                /* ENOENT: the kernel had already forgotten it. Nothing else to do. */
                (void)fuse_lowlevel_notify_inval_entry(fs->se, names[i].parent, names[i].name,
                                                       strlen(names[i].name));
                free(names[i].name);
            }
        }
        pthread_mutex_lock(&fs->inval_lock);
    }
    pthread_mutex_unlock(&fs->inval_lock);
    return NULL;
}

/* ---- reload (SIGHUP) ------------------------------------------------------------ */

/* Invalidate parent/name in the kernel unless it still leads to the same id. */
static void inval_if_moved(struct fs *fs, fuse_ino_t parent, const char *name, const char *old_id,
                           const char *new_id)
{
    if (new_id && strcmp(old_id, new_id) == 0)
        return;
    /* -ENOENT: the kernel did not know the name; nothing to do either way. */
    (void)fuse_lowlevel_notify_inval_entry(fs->se, parent, name, strlen(name));
}

/* After a reload, make the kernel forget the names in / and in dashboard directories that
 * no longer lead where they did: removed or renamed dashboards and widgets, by name and
 * by id (SPEC 7). Runs in the reload thread, which serves no FUSE request (SPEC 12.2). */
static void inval_moved_names(struct fs *fs, const struct ns_tree *old, const struct ns_tree *now)
{
    for (size_t i = 0; i < old->n_dashboards; i++) {
        const struct ns_dashboard *d = &old->dashboards[i];
        const char *keys[2] = {d->name, d->id};
        for (size_t k = 0; k < 2; k++) {
            const struct ns_dashboard *nd = ns_find_dashboard(now, keys[k]);
            inval_if_moved(fs, FS_INO_ROOT, keys[k], ns_find_dashboard(old, keys[k])->id,
                           nd ? nd->id : NULL);
        }
        const struct ns_dashboard *same = NULL;
        for (size_t j = 0; j < now->n_dashboards && !same; j++)
            if (strcmp(now->dashboards[j].id, d->id) == 0)
                same = &now->dashboards[j];
        struct fs_inode *dn = same ? fs_ino_dir(fs->ino, FK_DASH, d->id, NULL) : NULL;
        for (size_t w = 0; dn && w < d->n_widgets; w++) {
            const char *wkeys[2] = {d->widgets[w].name, d->widgets[w].id};
            for (size_t k = 0; k < 2; k++) {
                const struct ns_widget *nw = ns_find_widget(same, wkeys[k]);
                inval_if_moved(fs, dn->ino, wkeys[k], ns_find_widget(d, wkeys[k])->id,
                               nw ? nw->id : NULL);
            }
        }
    }
}

/* Build a new generation from the file; all or nothing (SPEC 7). */
static void fs_reload(struct fs *fs)
{
    struct fs_gen *old = fs_gen_get(fs);
    struct cfg *cfg = NULL;
    char *err = NULL;
    int rc = cfg_load(old->cfg->path, CFG_MODE_MOUNT, fs->env, &cfg, &err);
    if (rc != 0) {
        log_error("reload failed, keeping the old configuration: %s", err ? err : "out of memory");
        free(err);
        fs_gen_unref(old);
        return;
    }
    int same_api = strcmp(cfg->endpoint, old->cfg->endpoint) == 0 &&
                   strcmp(cfg->access_key, old->cfg->access_key) == 0;
    struct fs_api *reuse = same_client(cfg, old->cfg) ? old->fa : NULL;
    if (strcmp(cfg->timezone, old->cfg->timezone) != 0)
        log_warn("time.timezone changed: a restart is needed for it to apply");
    struct fs_gen *g = gen_new(cfg, reuse, fs->opts.test_offset_ms, &err);
    if (!g) {
        log_error("reload failed, keeping the old configuration: %s", err ? err : "out of memory");
        free(err);
        fs_gen_unref(old);
        return;
    }
    struct cache_params cp = {g->cfg->max_bytes, g->cfg->live_ttl_s, g->cfg->settle_s,
                              g->cfg->error_ttl_s, g->cfg->stale_if_error_s};
    pthread_mutex_lock(&fs->gen_lock);
    struct fs_gen *prev = fs->gen;
    fs->gen = g;
    pthread_mutex_unlock(&fs->gen_lock);
    if (!same_api) {
        /* Another account: nothing it cached or listed may show through. */
        cache_clear(fs->cache);
        disc_forget(fs->disc);
    }
    cache_set_params(fs->cache, &cp);
    log_set_level(fs->opts.debug ? LOG_LVL_DEBUG : g->cfg->log_level);
    struct ns_tree *old_tree = fs_tree_get(fs);
    fs_tree_rebuild(fs);
    struct ns_tree *new_tree = fs_tree_get(fs);
    inval_moved_names(fs, old_tree, new_tree);
    ns_unref(new_tree);
    ns_unref(old_tree);
    log_info("configuration reloaded from %s", g->cfg->path);
    fs_gen_unref(prev);
    fs_gen_unref(old);
}

static void *reload_main(void *arg)
{
    struct fs *fs = arg;
    for (;;) {
        char c;
        ssize_t r = read(fs->hup_pipe[0], &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || c == 'q')
            break;
        fs_reload(fs);
    }
    return NULL;
}

/* The write end of the SIGHUP pipe; the handler may only touch this. */
static int hup_fd = -1;

static void on_sighup(int sig)
{
    (void)sig;
    int saved = errno;
    char c = 'h';
    if (hup_fd >= 0 && write(hup_fd, &c, 1) < 0) {
        /* pipe full: a reload is already queued */
    }
    errno = saved;
}

/* ---- background threads --------------------------------------------------------- */

/* Start fn(arg) with every signal blocked: only the main thread takes signals. */
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -rc;
}

void fs_threads_start(struct fs *fs)
{
    if (start_thread(&fs->reload_thread, reload_main, fs) == 0)
        fs->reload_started = 1;
    else
        log_error("cannot start the reload thread: SIGHUP will be ignored");
    if (start_thread(&fs->inval_thread, inval_main, fs) == 0)
        fs->inval_started = 1;
    else
        log_error("cannot start the invalidation thread: evicted graphs stay pinned");
}

void fs_threads_stop(struct fs *fs)
{
    if (fs->reload_started) {
        char c = 'q';
        if (write(fs->hup_pipe[1], &c, 1) == 1)
            pthread_join(fs->reload_thread, NULL);
        else
            pthread_detach(fs->reload_thread);
        fs->reload_started = 0;
    }
    if (fs->inval_started) {
        pthread_mutex_lock(&fs->inval_lock);
        fs->inval_stop = 1;
        pthread_cond_signal(&fs->inval_cond);
        pthread_mutex_unlock(&fs->inval_lock);
        pthread_join(fs->inval_thread, NULL);
        fs->inval_started = 0;
    }
}

/* ---- lifecycle ------------------------------------------------------------------ */

static void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    fs_dir_free_all(fs); /* handles whose RELEASEDIR never came (fs_int.h) */
    pthread_mutex_destroy(&fs->dirs_lock);
    fs_ino_free(fs->ino); /* drops the inodes' version references before the cache goes */
    cache_free(fs->cache);
    ns_unref(fs->tree);
    fs_gen_unref(fs->gen);
    disc_free(fs->disc);
    free(fs->inval_q);
    pthread_cond_destroy(&fs->inval_cond);
    pthread_mutex_destroy(&fs->inval_lock);
    if (fs->hup_pipe[0] >= 0)
        close(fs->hup_pipe[0]);
    if (fs->hup_pipe[1] >= 0)
        close(fs->hup_pipe[1]);
    pthread_mutex_destroy(&fs->gen_lock);
    free(fs);
}

static struct fs *fs_new(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    if (!fs) {
        cfg_free(cfg);
        return NULL;
    }
    pthread_mutex_init(&fs->gen_lock, NULL);
    pthread_mutex_init(&fs->inval_lock, NULL);
    pthread_cond_init(&fs->inval_cond, NULL);
    pthread_mutex_init(&fs->dirs_lock, NULL);
    fs->hup_pipe[0] = fs->hup_pipe[1] = -1;
    fs->env = env;
    fs->opts = *o;
    fs->uid = o->set_uid ? o->uid : geteuid();
    fs->gid = o->set_gid ? o->gid : getegid();
    clock_gettime(CLOCK_REALTIME, &fs->ready_at);
    clock_gettime(CLOCK_MONOTONIC, &fs->ready_mono);
    fs->ino = fs_ino_new(); /* with the fixed inodes */
    fs->disc = disc_new();
    char *err = NULL;
    fs->gen = gen_new(cfg, NULL, o->test_offset_ms, &err);
    fs->tree = fs->gen ? ns_build(fs->gen->cfg, NULL) : NULL;
    if (!fs->ino || !fs->disc || !fs->gen || !fs->tree) {
        fprintf(stderr, "insightfs: %s\n", err ? err : "out of memory");
        free(err);
        fs_free(fs);
        return NULL;
    }
    const struct cfg *c = fs->gen->cfg;
    struct cache_params cp = {c->max_bytes, c->live_ttl_s, c->settle_s, c->error_ttl_s,
                              c->stale_if_error_s};
    fs->cache = cache_new(&cp, fs_now_ms, fs, on_evict, fs);
    if (pipe2(fs->hup_pipe, O_CLOEXEC) != 0 || !fs->cache) {
        fprintf(stderr, "insightfs: cannot set up: %s\n", strerror(errno));
        fs_free(fs);
        return NULL;
    }
    fcntl(fs->hup_pipe[1], F_SETFL, O_NONBLOCK);
    return fs;
}

/* Build the libfuse argument vector: the options insightfs always mounts with. */
static int build_args(const struct fs_opts *o, struct fuse_args *args)
{
    char *opts = NULL;
    char *fsname = NULL;
    int rc = -ENOMEM;
    /* fsname: commas and backslashes must be escaped for libfuse's option parser. */
    size_t n = strlen(o->fsname);
    fsname = malloc(n * 2 + 1);
    if (!fsname)
        goto out;
    char *q = fsname;
    for (const char *p = o->fsname; *p; p++) {
        if (*p == ',' || *p == '\\')
            *q++ = '\\';
        *q++ = *p;
    }
    *q = '\0';
    if (asprintf(&opts, "ro,nosuid,nodev,default_permissions,subtype=insightfs,fsname=%s%s%s",
                 fsname, o->allow_other ? ",allow_other" : "",
                 o->auto_unmount ? ",auto_unmount" : "") < 0) {
        opts = NULL;
        goto out;
    }
    if (fuse_opt_add_arg(args, "insightfs") || fuse_opt_add_arg(args, "-o") ||
        fuse_opt_add_arg(args, opts))
        goto out;
    if (o->debug && fuse_opt_add_arg(args, "-d"))
        goto out;
    rc = 0;
out:
    free(opts);
    free(fsname);
    return rc;
}

static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt, va_list ap)
{
    enum log_level l = level <= FUSE_LOG_ERR       ? LOG_LVL_ERROR
                       : level <= FUSE_LOG_WARNING ? LOG_LVL_WARN
                       : level <= FUSE_LOG_INFO    ? LOG_LVL_INFO
                                                   : LOG_LVL_DEBUG;
    log_vmsg(l, fmt, ap);
}

int fs_run(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o)
{
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fuse_loop_config *lc = NULL;
    int status = 1;
    int max_conn = cfg->max_connections;
    struct fs *fs = fs_new(cfg, env, o);
    if (!fs)
        return 1;
    if (build_args(o, &args) != 0) {
        fprintf(stderr, "insightfs: out of memory\n");
        goto out;
    }
    fuse_set_log_func(fuse_log_to_ours);
    fs->se = fuse_session_new(&args, fs_lowlevel_ops(), sizeof(struct fuse_lowlevel_ops), fs);
    if (!fs->se)
        goto out;
    /* SIGHUP first: libfuse only replaces default handlers, and its own would exit. */
    hup_fd = fs->hup_pipe[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGHUP, &sa, NULL) != 0 || fuse_set_signal_handlers(fs->se) != 0)
        goto out_session;
    if (fuse_session_mount(fs->se, o->mountpoint) != 0) {
        fprintf(stderr, "insightfs: %s: cannot mount (see the lines above)\n", o->mountpoint);
        goto out_signals;
    }
    if (fuse_daemonize(o->foreground) != 0)
        goto out_unmount;
    if (!o->foreground)
        log_init(1, log_get_level());
    int rc;
    if (o->single_thread) {
        rc = fuse_session_loop(fs->se);
    } else {
        lc = fuse_loop_cfg_create();
        if (!lc)
            goto out_unmount;
        fuse_loop_cfg_set_clone_fd(lc, 0);
        fuse_loop_cfg_set_max_threads(lc, (unsigned)max_conn + FS_SPARE_THREADS);
        fuse_loop_cfg_set_idle_threads(lc, 10);
        rc = fuse_session_loop_mt(fs->se, lc);
    }
    /* A loop ended by SIGINT/SIGTERM reports the signal as an error: that is a clean stop.
     * libfuse 3.14 returns the signal's number (positive; real errors are negative) and
     * resets the session before returning, so fuse_session_exited() is false by then. */
    status = (rc == 0 || rc == SIGINT || rc == SIGTERM || fuse_session_exited(fs->se)) ? 0 : 1;
    if (status != 0)
        log_error("the FUSE session ended with an error: %s", strerror(rc < 0 ? -rc : rc));
out_unmount:
    fuse_session_unmount(fs->se);
out_signals:
    fuse_remove_signal_handlers(fs->se);
    hup_fd = -1;
    signal(SIGHUP, SIG_IGN);
out_session:
    fuse_session_destroy(fs->se);
out:
    if (lc)
        fuse_loop_cfg_destroy(lc);
    fuse_opt_free_args(&args);
    fs_free(fs);
    return status;
}

const char *fs_libfuse_version(void)
{
    return fuse_pkgversion();
}
