/* fs_mount - the mount: build the root context, mount, serve, tear down. The request
 * handlers are in fs.c and fs_dir.c, kept requests and fetches in fs_wait.c, the inode
 * table in fs_ino.c, configuration generations and reload in fs_gen.c, the invalidation
 * thread in fs_inval.c, which mount is ours and ending it when stuck in fs_mnt.c (their
 * design notes are there).
 *
 * Threads (SPEC 12.4): main runs libfuse's session loop with libfuse's default workers
 * (at most 10); no worker ever waits for the network, so that is enough whatever the
 * load. The engine's fetch threads (max_connections) and timer, the invalidation thread
 * and the reload thread start in .init, after daemonizing; each blocks every signal.
 *
 * Teardown order (SPEC 12.4): libfuse 3.14 closes the session fd in
 * fuse_session_unmount and calls .destroy later still. So after the session loop
 * returns: answer every kept request and stop the fetch threads and the timer
 * (fs_wait_stop), stop the reload thread, let the invalidation thread finish its queue
 * and stop it, and only then unmount.
 */
#define FUSE_USE_VERSION 312

#include "insightfs/fs.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <malloc.h>
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
#include "insightfs/cpu.h"
#include "insightfs/engine.h"
#include "insightfs/log.h"

#define INVAL_STUCK_MS 1000 /* a notify this long after teardown answered everything is stuck */

/* ---- background threads --------------------------------------------------------- */

void fs_threads_start(struct fs *fs)
{
    if (fs_reload_start(fs) != 0)
        log_error("cannot start the reload thread: SIGHUP will be ignored");
    char probe[PATH_MAX + 64];
    if (fs->opts.test_stuck_notify)
        snprintf(probe, sizeof(probe), "%s/.insightfs-stuck-probe-%ld", fs->opts.mountpoint,
                 (long)getpid());
    if (fs_inval_start(fs->inval, fs->se, fs->opts.test_stuck_notify ? probe : NULL) != 0)
        log_error("cannot start the invalidation thread: evicted graphs stay pinned");
    if (engine_start(fs->engine) != 0)
        log_error("cannot start every fetch thread: fetches may wait longer");
    fs_wait_start(fs);
    struct fs_gen *g = fs_gen_get(fs);
    if (g->shared && shared_start(g->shared) != 0)
        log_error("cannot start the shared cache's thread: leases will not be renewed");
    fs_gen_unref(g);
}

enum fs_abort fs_inval_end(struct fs_inval *q, const struct fs_mnt *m, int stuck_ms)
{
    if (fs_inval_join(q, stuck_ms) == 0)
        return FS_NOT_ABORTED;
    log_warn("a notification waits for a request nobody will answer: aborting the FUSE "
             "connection");
    enum fs_abort aborted = fs_mnt_abort(m);
    fs_inval_join(q, -1); /* not aborted: waits for the kernel, as logged */
    return aborted;
}

/* After the session loop: every kept request answered, every thread of ours joined.
 * Returns whether the connection had to be aborted (fs_inval_end). */
static enum fs_abort fs_threads_stop(struct fs *fs)
{
    fs_inval_close(fs->inval); /* first: no new notify once nobody reads /dev/fuse */
    fs_wait_stop(fs);          /* kept LOOKUPs answered: a notify behind one goes on */
    fs_reload_stop(fs);
    fs_drain_dropped(fs);
    return fs_inval_end(fs->inval, &fs->mnt, INVAL_STUCK_MS);
}

/* ---- lifecycle ------------------------------------------------------------------ */

void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    fs_dir_free_all(fs); /* handles whose RELEASEDIR never came (fs_int.h) */
    pthread_mutex_destroy(&fs->dirs_lock);
    fs_ra_free(fs->ra);
    fs_mnt_release(&fs->mnt);
    cpu_share_free(fs->cpu);
    fs_inval_free(fs->inval);
    fs_ino_free(fs->ino); /* drops the inodes' version references before the cache goes */
    engine_free(fs->engine);
    cache_free(fs->cache);
    fs_state_cleanup(&fs->st);
    free(fs);
}

struct fs *fs_new(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    if (!fs) {
        cfg_free(cfg);
        return NULL;
    }
    pthread_mutex_init(&fs->dirs_lock, NULL);
    fs->env = env;
    fs->opts = *o;
    fs->uid = o->set_uid ? o->uid : geteuid();
    fs->gid = o->set_gid ? o->gid : getegid();
    clock_gettime(CLOCK_REALTIME, &fs->ready_at);
    clock_gettime(CLOCK_MONOTONIC, &fs->ready_mono);
    struct cache_params cp = {cfg->max_bytes, cfg->live_ttl_s, cfg->settle_s, cfg->error_ttl_s,
                              cfg->stale_if_error_s};
    int threads = cfg->max_connections;
    if (fs_state_init(&fs->st, cfg, o->test_offset_ms) != 0) {
        fs_free(fs);
        return NULL;
    }
    fs->cache = cache_new(&cp);
    fs->ino = fs->cache ? fs_ino_new(fs->cache) : NULL; /* with the fixed inodes */
    fs->engine = engine_new(threads);
    fs->inval = fs->ino ? fs_inval_new(fs->ino) : NULL;
    fs->ra = fs_ra_new();
    if (!fs->cache || !fs->ino || !fs->engine || !fs->inval || !fs->ra) {
        fprintf(stderr, "insightfs: out of memory\n");
        fs_free(fs);
        return NULL;
    }
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
    enum fs_abort aborted = FS_NOT_ABORTED;
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
    fs_reload_install_handler(fs);
    if (fuse_set_signal_handlers(fs->se) != 0)
        goto out_session;
    fs_mnt_locate(&fs->mnt, o->mountpoint);
    if (fuse_session_mount(fs->se, o->mountpoint) != 0) {
        fprintf(stderr, "insightfs: %s: cannot mount (see the lines above)\n", o->mountpoint);
        goto out_signals;
    }
    fs_mnt_identify(&fs->mnt, o->mountpoint);
    if (fs_io_install(fs) != 0) {
        fprintf(stderr, "insightfs: cannot set up the FUSE device's I/O\n");
        goto out_unmount;
    }
    if (fuse_daemonize(o->foreground) != 0)
        goto out_unmount;
    if (!o->foreground)
        log_init(1, log_get_level());
    /* Before the loop starts libfuse's workers and .init the other threads: every thread
     * inherits main's mask (cpu.h). */
    fs->cpu = cpu_share_new();
    int rc;
    if (o->single_thread) {
        rc = fuse_session_loop(fs->se);
    } else {
        lc = fuse_loop_cfg_create();
        if (!lc)
            goto out_unmount;
        fuse_loop_cfg_set_clone_fd(lc, 0);
        rc = fuse_session_loop_mt(fs->se, lc); /* libfuse's default workers: at most 10 */
    }
    /* A loop ended by SIGINT/SIGTERM reports the signal as an error: that is a clean stop.
     * libfuse 3.14 returns the signal's number (positive; real errors are negative) and
     * resets the session before returning, so fuse_session_exited() is false by then. */
    status = (rc == 0 || rc == SIGINT || rc == SIGTERM || fuse_session_exited(fs->se)) ? 0 : 1;
    if (status != 0)
        log_error("the FUSE session ended with an error: %s", strerror(rc < 0 ? -rc : rc));
    aborted = fs_threads_stop(fs); /* before the unmount closes the session fd (SPEC 12.4) */
out_unmount:
    fuse_session_unmount(fs->se);
    if (aborted == FS_ABORTED)
        fs_mnt_detach(&fs->mnt);
out_signals:
    fuse_remove_signal_handlers(fs->se);
    fs_reload_remove_handler();
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
