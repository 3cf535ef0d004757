/* test_fs - the request handlers of src/fs.c and the tree state of src/fs_gen.c, driven
 * without a mount: fs_new builds the filesystem's state from a real configuration file,
 * and the test calls the low-level operations table itself.
 *
 * Seams. The test is linked with GNU ld's --wrap (Makefile: UNIT_LDFLAGS_fs), so calls
 * that src/ makes across object files come here first:
 *  - fuse_req_userdata, fuse_reply_entry, fuse_reply_err, fuse_reply_open: a request is a pointer
 * the test made; its answer is recorded instead of written to /dev/fuse;
 *  - fuse_req_interrupt_func: does what libfuse 3.14's does for a request whose
 *    INTERRUPT came first - calls the callback at once, inside the registration, with
 *    the request's lock held - and records any answer given from there;
 *  - cache_version_state: may be scripted to answer PENDING once and READY from then
 *    on, which is what a fetch completing between two reads of the state looks like;
 *  - disc_build_tree: may hold a rebuild between building its tree and installing it,
 *    which is where a reload could overtake it;
 *  - engine_set_threads: may rebuild the tree from inside a reload, after the swap, as a
 *    LOOKUP or a discovery refresh racing the reload would;
 *  - fs_inval_name: the names a reload queues for invalidation are recorded;
 *  - cfg_load: the reloads (loads from another thread than main) are counted, and one
 *    may be held inside until released;
 *  - shared_free: the thread that frees a generation's client is recorded;
 *  - fuse_lowlevel_notify_inval_entry, umount2: a notify may be held until an umount2,
 *    which is recorded;
 *  - engine_submit: a fetch job may be held (never run until released), which is what a
 *    fetch overrunning its deadline looks like to the request waiting for it.
 * The races are one instruction wide in real time; the seams make them certain.
 *
 * Unlike the other unit tests it links every module but main: a request handler needs
 * the whole state (tree, cache, inodes, generations), and fs_new is how fs_run makes it.
 *
 * Covered: the two item-6 defects of the request engine issue that have no other test:
 *  - LOOKUP reads a version's state once (a version becoming ready between two reads
 *    gave size 0 with a day-long attribute timeout: an empty file for a day);
 *  - a tree rebuild racing a reload (SIGHUP) cannot leave the old configuration's tree.
 * A reload to discover = false drops the discovered entries from / (they stayed, frozen);
 * a reload that renames a dashboard invalidates the old name even when a rebuild ran
 * between its swap and its own rebuild (it compared the new tree with itself). A burst
 * of SIGHUPs makes one reload (it made one per byte), and stopping the reload thread
 * with the pipe full still joins it (it was detached, then fs was freed under it). The
 * last reference to a generation dropped by a worker hands its free to the reload thread
 * (the worker freed it, joining a shared cache keeper that may wait for Redis).
 * Each fails on the code before its fix. Every mutating operation answers EROFS itself.
 * A GETATTR interrupted before it was kept is
 * answered EINTR once, after the registration (replying inside it freed the request
 * that libfuse then unlocked). And src/fs_io.c's hooks on a pipe: INIT's reply
 * gains FUSE_PARALLEL_DIROPS (which libfuse 3.14 leaves out) only when .init wanted it,
 * and every other write passes byte for byte.
 *
 * The invalidation thread's teardown (src/fs_inval.c): closed, it notifies nothing more;
 * a notify stuck behind a LOOKUP nobody reads makes fs_inval_end abort the connection
 * (src/fs_mnt.c), which ends it (seams: fuse_lowlevel_notify_inval_entry and umount2);
 * the fusectl connection number of a mount is read from mountinfo's text. A kept request
 * whose fetch overruns is answered ETIMEDOUT by its deadline timer at D + 500 ms, once (seam:
 * engine_submit).
 *
 * The inode table (src/fs_ino.c), on a cache of its own: directory inodes, which live as
 * long as the table, pin none of the memory of the image records the kernel forgot, and
 * are found by their ids (an index, not a walk over every inode under the table's lock);
 * an image inode remembers every name the kernel got it under, for invalidation.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <sys/uio.h>

#include "../../src/fs_int.h"
#include "insightfs/cache.h"
#include "insightfs/cfg.h"
#include "insightfs/disc.h"
#include "insightfs/http.h"
#include "insightfs/ns.h"

#define WAIT_MS 10000 /* how long the test waits for another thread before failing */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t tf(int64_t ms)
{
    const char *f = getenv("INSIGHTFS_TEST_TIME_FACTOR");
    long n = f ? strtol(f, NULL, 10) : 1;
    return ms * (n >= 1 && n <= 1000 ? n : 1);
}

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* ---- the seams --------------------------------------------------------------------- */

static struct fs *the_fs;

struct answer {
    int kind; /* 0 none, 1 entry, 2 error */
    struct fuse_entry_param e;
    int err;
};

static struct answer last;

void *__wrap_fuse_req_userdata(fuse_req_t req)
{
    (void)req;
    return the_fs;
}

int __wrap_fuse_reply_entry(fuse_req_t req, const struct fuse_entry_param *e)
{
    (void)req;
    last.kind = 1;
    last.e = *e;
    return 0;
}

static int registering;         /* inside the fake fuse_req_interrupt_func's callback */
static int replies_registering; /* answers given from there */
static int replies;             /* answers of any kind (fuse_reply_err) */
static int interrupted_first;   /* the next registration finds the INTERRUPT already in */

/* Answers may come from the engine's threads (a deadline timer): recorded under a lock. */
static pthread_mutex_t reply_m = PTHREAD_MUTEX_INITIALIZER;

int __wrap_fuse_reply_err(fuse_req_t req, int err)
{
    (void)req;
    pthread_mutex_lock(&reply_m);
    last.kind = 2;
    last.err = err;
    replies++;
    replies_registering += registering;
    pthread_mutex_unlock(&reply_m);
    return 0;
}

/* The answers given so far, and the last one. */
static int replies_now(struct answer *a)
{
    pthread_mutex_lock(&reply_m);
    int n = replies;
    if (a)
        *a = last;
    pthread_mutex_unlock(&reply_m);
    return n;
}

static int opens; /* fuse_reply_open: directories opened */

int __wrap_fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi)
{
    (void)req, (void)fi;
    opens++;
    replies++;
    replies_registering += registering;
    return 0;
}

/* engine_submit: with hold_jobs set, the next fetch job is kept here instead of queued,
 * as a fetch that overruns its deadline would be, until release_job queues it. */
void __real_engine_submit(struct engine *e, struct engine_job *j);
static atomic_int hold_jobs;
static struct engine *held_engine;
static struct engine_job *held_job;

void __wrap_engine_submit(struct engine *e, struct engine_job *j)
{
    if (atomic_load(&hold_jobs) && !held_job) {
        held_engine = e;
        held_job = j;
        return;
    }
    __real_engine_submit(e, j);
}

static void release_job(void)
{
    atomic_store(&hold_jobs, 0);
    if (held_job)
        __real_engine_submit(held_engine, held_job);
    held_job = NULL;
}

void __wrap_fuse_req_interrupt_func(fuse_req_t req, fuse_interrupt_func_t func, void *data)
{
    if (interrupted_first && func) {
        registering = 1; /* libfuse holds req->lock here and unlocks it afterwards */
        func(req, data);
        registering = 0;
    }
}

/* cache_version_state: scripted = 1 makes the next read PENDING and every later one
 * READY (the fetch completed right after that first read). */
enum cache_state __real_cache_version_state(const struct cache_version *v);
static int scripted;
static int state_reads;

enum cache_state __wrap_cache_version_state(const struct cache_version *v)
{
    if (!scripted)
        return __real_cache_version_state(v);
    return state_reads++ == 0 ? CACHE_PENDING : CACHE_READY;
}

/* disc_build_tree: the thread named by holder stops after building, until released. */
struct ns_tree *__real_disc_build_tree(struct disc *d, const struct cfg *cfg, uint64_t *built);
static pthread_mutex_t hold_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv; /* CLOCK_MONOTONIC (main) */
static pthread_t holder;
static int holding, held, released; /* protected by hold_m */

struct ns_tree *__wrap_disc_build_tree(struct disc *d, const struct cfg *cfg, uint64_t *built)
{
    struct ns_tree *t = __real_disc_build_tree(d, cfg, built);
    pthread_mutex_lock(&hold_m);
    if (holding && pthread_equal(pthread_self(), holder)) {
        held = 1;
        pthread_cond_broadcast(&hold_cv);
        while (!released)
            pthread_cond_wait(&hold_cv, &hold_m);
    }
    pthread_mutex_unlock(&hold_m);
    return t;
}

/* engine_set_threads: a reload calls it after swapping the generation in; with
 * rebuild_in_reload set, the tree is rebuilt there first, as a LOOKUP or a discovery
 * refresh racing the reload would do. */
void __real_engine_set_threads(struct engine *e, int threads);
static atomic_int rebuild_in_reload;

void __wrap_engine_set_threads(struct engine *e, int threads)
{
    if (atomic_exchange(&rebuild_in_reload, 0))
        fs_tree_rebuild(the_fs);
    __real_engine_set_threads(e, threads);
}

/* fs_inval_name: the (parent, name) pairs queued for invalidation are recorded. */
void __real_fs_inval_name(struct fs_inval *q, uint64_t parent, const char *name);
static pthread_mutex_t inval_m = PTHREAD_MUTEX_INITIALIZER;
static char inval_names[64][64]; /* "parent/name", protected by inval_m */
static int n_inval;              /* protected by inval_m */

void __wrap_fs_inval_name(struct fs_inval *q, uint64_t parent, const char *name)
{
    pthread_mutex_lock(&inval_m);
    if (n_inval < 64)
        snprintf(inval_names[n_inval++], sizeof(inval_names[0]), "%llu/%s",
                 (unsigned long long)parent, name);
    pthread_mutex_unlock(&inval_m);
    __real_fs_inval_name(q, parent, name);
}

/* 1 when parent/name was queued for invalidation. */
static int invalidated(uint64_t parent, const char *name)
{
    char want[64];
    snprintf(want, sizeof(want), "%llu/%s", (unsigned long long)parent, name);
    int found = 0;
    pthread_mutex_lock(&inval_m);
    for (int i = 0; i < n_inval; i++)
        if (strcmp(inval_names[i], want) == 0)
            found = 1;
    pthread_mutex_unlock(&inval_m);
    return found;
}

/* cfg_load: counts the loads from another thread than main (a reload's), and while
 * hold_load is set keeps the reload inside it until released. */
int __real_cfg_load(const char *path, enum cfg_mode mode, const struct cfg_env *env,
                    struct cfg **out, char **err);
static pthread_t main_thread;
static pthread_mutex_t load_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t load_cv;   /* CLOCK_MONOTONIC (main) */
static int reloads;              /* protected by load_m */
static int hold_load, load_held; /* protected by load_m */

int __wrap_cfg_load(const char *path, enum cfg_mode mode, const struct cfg_env *env,
                    struct cfg **out, char **err)
{
    if (!pthread_equal(pthread_self(), main_thread)) {
        pthread_mutex_lock(&load_m);
        reloads++;
        load_held = hold_load;
        pthread_cond_broadcast(&load_cv);
        while (hold_load)
            pthread_cond_wait(&load_cv, &load_m);
        load_held = 0;
        pthread_mutex_unlock(&load_m);
    }
    return __real_cfg_load(path, mode, env, out, err);
}

static int reloads_seen(void)
{
    pthread_mutex_lock(&load_m);
    int n = reloads;
    pthread_mutex_unlock(&load_m);
    return n;
}

/* shared_free: the thread that frees a client's shared level (the final free of a
 * generation whose client goes) is recorded while frees_watched is set. */
void __real_shared_free(struct shared *s);
static pthread_mutex_t free_m = PTHREAD_MUTEX_INITIALIZER;
static int frees_watched, frees; /* protected by free_m */
static pthread_t freed_by;       /* protected by free_m */

void __wrap_shared_free(struct shared *s)
{
    pthread_mutex_lock(&free_m);
    if (frees_watched) {
        frees++;
        freed_by = pthread_self();
    }
    pthread_mutex_unlock(&free_m);
    __real_shared_free(s);
}

/* fuse_lowlevel_notify_inval_entry: counted; while notify_hold is set a notify waits
 * until umount2 is called, as one behind a LOOKUP that holds its directory's lock does
 * until the connection is aborted. umount2: recorded, and it ends a held notify. */
static pthread_mutex_t notify_m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t notify_cv;                         /* CLOCK_MONOTONIC (main) */
static int notify_hold, notifies, umounts, umount_flags; /* protected by notify_m */
static int umount_errno;     /* protected by notify_m: umount2 fails with it (after aborting) */
static char umount_path[64]; /* protected by notify_m */

int __wrap_fuse_lowlevel_notify_inval_entry(struct fuse_session *se, fuse_ino_t parent,
                                            const char *name, size_t namelen)
{
    (void)se, (void)parent, (void)name, (void)namelen;
    pthread_mutex_lock(&notify_m);
    notifies++;
    pthread_cond_broadcast(&notify_cv);
    int seen = umounts;
    while (notify_hold && umounts == seen)
        pthread_cond_wait(&notify_cv, &notify_m);
    pthread_mutex_unlock(&notify_m);
    return 0;
}

int __wrap_umount2(const char *target, int flags)
{
    pthread_mutex_lock(&notify_m);
    umounts++;
    umount_flags = flags;
    snprintf(umount_path, sizeof(umount_path), "%s", target);
    pthread_cond_broadcast(&notify_cv);
    int e = umount_errno;
    pthread_mutex_unlock(&notify_m);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

/* ---- fixture ------------------------------------------------------------------------ */

struct fx {
    char dir[64];
    char conf[128];
    struct fs *fs;
};

static int with_discover;          /* the next setup writes discover = true */
static const char *api_extra = ""; /* more settings of the api group */
static int max_connections = 2;    /* what write_conf writes: another value, another client */

static void write_conf(const char *path, const char *dash_name)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    char text[1024];
    int n =
        snprintf(text, sizeof(text),
                 "api = { endpoint = \"http://127.0.0.1:9\"; access_key = \"AK\";\n"
                 "        secret_key = \"SK\"; max_connections = %d; %s};\n"
                 "log_level = \"error\";\n%s"
                 "cache = { readahead = false; };\n"
                 "dashboards = ( { name = \"%s\"; id = \"dash1\";\n"
                 "                 widgets = ( { name = \"cpu\"; id = \"w1\"; } ); } );\n",
                 max_connections, api_extra, with_discover ? "discover = true;\n" : "", dash_name);
    assert_true(n > 0 && (size_t)n < sizeof(text));
    assert_int_equal(write(fd, text, (size_t)n), n);
    assert_int_equal(close(fd), 0);
}

static int setup(void **state)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_fs.XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->conf, sizeof(fx->conf), "%s/t.conf", fx->dir);
    write_conf(fx->conf, "web");
    struct cfg *cfg = NULL;
    char *err = NULL;
    assert_int_equal(http_global_init(), 0);
    if (cfg_load(fx->conf, CFG_MODE_MOUNT, NULL, &cfg, &err) != 0)
        fail_msg("cfg_load: %s", err ? err : "?");
    struct fs_opts o = {.mountpoint = "/nonexistent", .fsname = fx->conf};
    fx->fs = fs_new(cfg, NULL, &o);
    assert_non_null(fx->fs);
    the_fs = fx->fs;
    scripted = 0;
    state_reads = 0;
    registering = replies_registering = replies = interrupted_first = opens = 0;
    atomic_store(&rebuild_in_reload, 0);
    pthread_mutex_lock(&load_m);
    reloads = hold_load = load_held = 0;
    pthread_mutex_unlock(&load_m);
    pthread_mutex_lock(&free_m);
    frees_watched = frees = 0;
    pthread_mutex_unlock(&free_m);
    pthread_mutex_lock(&inval_m);
    n_inval = 0;
    pthread_mutex_unlock(&inval_m);
    memset(&last, 0, sizeof(last));
    *state = fx;
    return 0;
}

/* D = 200 ms: timeout_ms 200, no retry. */
static int setup_short_deadline(void **state)
{
    api_extra = "timeout_ms = 200; retries = 0; ";
    int rc = setup(state);
    api_extra = "";
    return rc;
}

static int setup_discover(void **state)
{
    with_discover = 1;
    int rc = setup(state);
    with_discover = 0;
    return rc;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    fs_free(fx->fs);
    the_fs = NULL;
    http_global_cleanup();
    unlink(fx->conf);
    rmdir(fx->dir);
    free(fx);
    return 0;
}

/* LOOKUP parent/name through the operations table; the entry's inode. */
static uint64_t lookup(uint64_t parent, const char *name)
{
    static char fake_req;
    memset(&last, 0, sizeof(last));
    fs_lowlevel_ops()->lookup((fuse_req_t)&fake_req, parent, name);
    if (last.kind != 1)
        fail_msg("LOOKUP %s: no entry (kind %d, errno %d)", name, last.kind, last.err);
    return last.e.ino;
}

/* LOOKUP parent/name through the operations table, which must fail; its errno. */
static int lookup_err(uint64_t parent, const char *name)
{
    static char fake_req;
    memset(&last, 0, sizeof(last));
    fs_lowlevel_ops()->lookup((fuse_req_t)&fake_req, parent, name);
    if (last.kind != 2)
        fail_msg("LOOKUP %s: answer kind %d, not an error", name, last.kind);
    return last.err;
}

/* SIGHUP as the handler sends it, to a reload thread started for it: returns once the
 * new configuration is swapped in and the reload has ended (fs_reload_stop joins). */
static void reload_now(struct fs *fs)
{
    assert_int_equal(fs_reload_start(fs), 0);
    struct fs_gen *old = fs_gen_get(fs);
    assert_int_equal(write(fs->st.hup_pipe[1], "h", 1), 1);
    int64_t until = mono_ms() + tf(WAIT_MS);
    for (;;) {
        struct fs_gen *g = fs_gen_get(fs);
        int swapped = g != old;
        fs_gen_unref(g);
        if (swapped)
            break;
        if (mono_ms() > until)
            fail_msg("the reload never swapped the configuration in");
        nap_ms(1);
    }
    fs_gen_unref(old);
    fs_reload_stop(fs);
}

/* ---- tests -------------------------------------------------------------------------- */

/* A version that becomes ready between two reads of its state: the LOOKUP's attributes
 * and attribute timeout come from one read, so a size 0 is never cached for a day. */
static void test_lookup_reads_state_once(void **state)
{
    (void)state;
    uint64_t dash = lookup(FUSE_ROOT_ID, "web");
    uint64_t widget = lookup(dash, "cpu");
    scripted = 1;
    lookup(widget, "1733097600000-1733184000000.png");
    scripted = 0;
    assert_int_equal(state_reads, 1);
    /* The one read said PENDING: size 0, and the kernel must ask again. */
    assert_int_equal(last.e.attr.st_size, 0);
    assert_true(last.e.attr_timeout == 0.0);
    assert_true(last.e.attr.st_mode == (S_IFREG | 0444));
}

/* A GETATTR of a pending image whose INTERRUPT came before it was kept: libfuse reports
 * it from inside the registration, holding the request's lock and no reference of its
 * own, so an answer there frees the request it is about to unlock. The answer, EINTR,
 * must come once, after the registration; nothing is fetched. */
static void test_interrupt_before_kept(void **state)
{
    (void)state;
    uint64_t dash = lookup(FUSE_ROOT_ID, "web");
    uint64_t widget = lookup(dash, "cpu");
    uint64_t ino = lookup(widget, "1733097600000-1733184000000.png");
    assert_true(last.e.attr_timeout == 0.0); /* pending: the GETATTR must wait */
    static char fake_req;
    memset(&last, 0, sizeof(last));
    interrupted_first = 1;
    fs_lowlevel_ops()->getattr((fuse_req_t)&fake_req, ino, NULL);
    interrupted_first = 0;
    assert_int_equal(replies_registering, 0);
    assert_int_equal(replies, 1);
    assert_int_equal(last.kind, 2);
    assert_int_equal(last.err, EINTR);
    assert_int_equal(atomic_load(&the_fs->waiting), 0);
}

/* SPEC 12.4: a kept request is answered by its deadline timer - ETIMEDOUT at its D plus
 * 500 ms - when the fetch it waits for overruns (here: its job is held, never run), and
 * only once: the fetch completing later answers nobody again. */
static void test_kept_request_answered_by_its_deadline(void **state)
{
    (void)state;
    assert_int_equal(engine_start(the_fs->engine), 0);
    uint64_t dash = lookup(FUSE_ROOT_ID, "web");
    uint64_t widget = lookup(dash, "cpu");
    uint64_t ino = lookup(widget, "1733097600000-1733184000000.png");
    assert_true(last.e.attr_timeout == 0.0); /* pending: the GETATTR must wait */
    static char fake_req;
    int before = replies_now(NULL);
    atomic_store(&hold_jobs, 1);
    int64_t t0 = mono_ms();
    fs_lowlevel_ops()->getattr((fuse_req_t)&fake_req, ino, NULL);
    assert_non_null(held_job);                   /* the fetch was submitted, and is held */
    assert_int_equal(replies_now(NULL), before); /* kept, not answered */
    assert_int_equal(atomic_load(&the_fs->waiting), 1);
    struct answer a;
    while (replies_now(&a) == before) {
        if (mono_ms() - t0 > tf(WAIT_MS))
            fail_msg("the kept GETATTR was never answered");
        nap_ms(5);
    }
    int64_t took = mono_ms() - t0;
    assert_int_equal(a.kind, 2);
    assert_int_equal(a.err, ETIMEDOUT);
    assert_true(took >= 200 + 500 - 5);  /* not before D + 500 ms */
    assert_true(took <= 200 + tf(1000)); /* P1: by D + 1 s */
    assert_int_equal(atomic_load(&the_fs->waiting), 0);
    /* The fetch runs after all (the API port refuses): nobody is answered twice. */
    release_job();
    fs_wait_stop(the_fs);
    assert_int_equal(replies_now(NULL), before + 1);
}

/* SPEC 4, "read-only, twice": besides the ro mount, which makes the kernel refuse them
 * first, every mutating operation is implemented and answers EROFS itself (a table entry
 * left NULL would have libfuse answer ENOSYS). And an OPEN for writing or truncating. */
static void test_every_mutation_is_erofs(void **state)
{
    (void)state;
    const struct fuse_lowlevel_ops *ops = fs_lowlevel_ops();
    static char fake_req;
    fuse_req_t r = (fuse_req_t)&fake_req;
    uint64_t dash = lookup(FUSE_ROOT_ID, "web");
    uint64_t widget = lookup(dash, "cpu");
    uint64_t img = lookup(widget, "1733097600000-1733184000000.png");
    struct stat st = {0};
    struct fuse_file_info fi = {0};
    int calls = 0;
#define EXPECT_EROFS(call)                                                                         \
    do {                                                                                           \
        memset(&last, 0, sizeof(last));                                                            \
        call;                                                                                      \
        calls++;                                                                                   \
        if (last.kind != 2 || last.err != EROFS)                                                   \
            fail_msg("%s: answer kind %d errno %d, not EROFS", #call, last.kind, last.err);        \
    } while (0)
    assert_non_null(ops->setattr);
    EXPECT_EROFS(ops->setattr(r, img, &st, FUSE_SET_ATTR_SIZE, NULL));
    assert_non_null(ops->mknod);
    EXPECT_EROFS(ops->mknod(r, widget, "n", S_IFREG | 0644, 0));
    assert_non_null(ops->mkdir);
    EXPECT_EROFS(ops->mkdir(r, widget, "d", 0755));
    assert_non_null(ops->unlink);
    EXPECT_EROFS(ops->unlink(r, widget, "1733097600000-1733184000000.png"));
    assert_non_null(ops->rmdir);
    EXPECT_EROFS(ops->rmdir(r, dash, "cpu"));
    assert_non_null(ops->symlink);
    EXPECT_EROFS(ops->symlink(r, "/etc/passwd", widget, "s"));
    assert_non_null(ops->rename);
    EXPECT_EROFS(ops->rename(r, dash, "cpu", dash, "cpu2", 0));
    assert_non_null(ops->link);
    EXPECT_EROFS(ops->link(r, img, widget, "l.png"));
    assert_non_null(ops->create);
    fi.flags = O_WRONLY | O_CREAT;
    EXPECT_EROFS(ops->create(r, widget, "c.png", 0644, &fi));
    assert_non_null(ops->write);
    EXPECT_EROFS(ops->write(r, img, "x", 1, 0, &fi));
    assert_non_null(ops->setxattr);
    EXPECT_EROFS(ops->setxattr(r, img, "user.x", "1", 1, 0));
    assert_non_null(ops->removexattr);
    EXPECT_EROFS(ops->removexattr(r, img, "user.x"));
    assert_non_null(ops->fallocate);
    EXPECT_EROFS(ops->fallocate(r, img, 0, 0, 4096, &fi));
    assert_non_null(ops->copy_file_range);
    EXPECT_EROFS(ops->copy_file_range(r, img, 0, &fi, img, 0, &fi, 1, 0));
    fi.flags = O_WRONLY;
    EXPECT_EROFS(ops->open(r, img, &fi));
    fi.flags = O_RDONLY | O_TRUNC;
    EXPECT_EROFS(ops->open(r, img, &fi));
#undef EXPECT_EROFS
    assert_int_equal(calls, 16);
    /* A read-only OPEN is the one the kernel must serve itself: ENOSYS on purpose. */
    memset(&last, 0, sizeof(last));
    fi.flags = O_RDONLY;
    ops->open(r, img, &fi);
    assert_int_equal(last.kind, 2);
    assert_int_equal(last.err, ENOSYS);
}

/* The same for an OPENDIR of / kept for discovery (discover = true, no list yet): EINTR,
 * not the directory opened with what is known (what a failed refresh gets). */
static void test_opendir_interrupt_before_kept(void **state)
{
    (void)state;
    static char fake_req;
    struct fuse_file_info fi = {0};
    memset(&last, 0, sizeof(last));
    interrupted_first = 1;
    fs_lowlevel_ops()->opendir((fuse_req_t)&fake_req, FUSE_ROOT_ID, &fi);
    interrupted_first = 0;
    assert_int_equal(replies_registering, 0);
    assert_int_equal(opens, 0);
    assert_int_equal(replies, 1);
    assert_int_equal(last.kind, 2);
    assert_int_equal(last.err, EINTR);
    assert_int_equal(atomic_load(&the_fs->waiting), 0);
    /* The discovery job it queued runs cancelled, as at teardown (no thread was started). */
    fs_wait_stop(the_fs);
}

struct rebuilder {
    struct fs *fs;
    pthread_t t;
};

static void *rebuild_main(void *arg)
{
    struct rebuilder *r = arg;
    fs_tree_rebuild(r->fs);
    return NULL;
}

/* The dashboard directory's name in the installed tree (no rebuild), or NULL. */
static int tree_has(struct fs *fs, const char *dash_name)
{
    pthread_mutex_lock(&fs->st.lock);
    struct ns_tree *t = fs->st.tree;
    ns_ref(t);
    pthread_mutex_unlock(&fs->st.lock);
    int found = 0;
    for (size_t i = 0; i < t->n_dashboards; i++)
        if (strcmp(t->dashboards[i].name, dash_name) == 0)
            found = 1;
    ns_unref(t);
    return found;
}

/* A rebuild holds the old configuration's tree while a reload swaps the new one in: the
 * reload's own rebuild must come after it, so the tree left installed is the new one.
 * (Before the fix the reload rebuilt and finished at once; the held rebuild then
 * installed the old tree over it, and / kept listing the old dashboards.) */
static void test_rebuild_racing_reload(void **state)
{
    struct fx *fx = *state;
    struct fs *fs = fx->fs;
    assert_true(tree_has(fs, "web"));
    assert_int_equal(fs_reload_start(fs), 0);

    struct rebuilder r = {fs, 0};
    pthread_mutex_lock(&hold_m);
    holding = 1;
    held = released = 0;
    assert_int_equal(pthread_create(&r.t, NULL, rebuild_main, &r), 0);
    holder = r.t;
    pthread_cond_broadcast(&hold_cv); /* holder is set: the wrapper may compare now */
    int64_t until = mono_ms() + tf(WAIT_MS);
    struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000};
    while (!held && pthread_cond_timedwait(&hold_cv, &hold_m, &ts) != ETIMEDOUT)
        ;
    int was_held = held;
    pthread_mutex_unlock(&hold_m);
    assert_true(was_held); /* the rebuild has the old configuration's tree in hand */

    /* SIGHUP with a renamed dashboard: the reload thread loads it and swaps it in. */
    write_conf(fx->conf, "web2");
    struct fs_gen *old = fs_gen_get(fs);
    assert_int_equal(write(fs->st.hup_pipe[1], "h", 1), 1);
    until = mono_ms() + tf(WAIT_MS);
    for (;;) {
        struct fs_gen *g = fs_gen_get(fs);
        int swapped = g != old;
        fs_gen_unref(g);
        if (swapped)
            break;
        if (mono_ms() > until)
            fail_msg("the reload never swapped the configuration in");
        nap_ms(1);
    }
    fs_gen_unref(old);
    /* Give the reload every chance to finish (it must not, while the rebuild is held):
     * the buggy code installed the new tree within microseconds here. */
    until = mono_ms() + tf(300);
    while (mono_ms() < until && !tree_has(fs, "web2"))
        nap_ms(1);
    int early = tree_has(fs, "web2");

    pthread_mutex_lock(&hold_m);
    released = 1;
    pthread_cond_broadcast(&hold_cv);
    pthread_mutex_unlock(&hold_m);
    assert_int_equal(pthread_join(r.t, NULL), 0);
    pthread_mutex_lock(&hold_m);
    holding = 0;
    pthread_mutex_unlock(&hold_m);

    /* The reload's rebuild runs after the held one and installs the new tree. */
    until = mono_ms() + tf(WAIT_MS);
    while (!tree_has(fs, "web2") && mono_ms() < until)
        nap_ms(1);
    fs_reload_stop(fs);
    assert_false(early); /* serialized: no tree of the new configuration while held */
    assert_true(tree_has(fs, "web2"));
    assert_false(tree_has(fs, "web"));
}

/* SPEC 3 and 7: a reload to discover = false lists and resolves the configured entries
 * only. (Before the fix the lists of the last refresh stayed merged into the tree for
 * good, never refreshed again, while /.insightfs/config said discover = false.) */
static void test_reload_to_discover_off_drops_discovered(void **state)
{
    struct fx *fx = *state;
    struct fs *fs = fx->fs;
    /* A refresh of the dashboards' list as a fetch thread completes it: one extra. */
    struct fs_gen *g = fs_gen_get(fs);
    uint64_t epoch = 0;
    int err = 0, result = 1, changed = 0;
    assert_int_equal(disc_need(fs->st.disc, g->cfg, NULL, mono_ms(), NULL, &epoch, &err),
                     DISC_FETCH);
    fs_gen_unref(g);
    struct api_item *items = calloc(1, sizeof(*items));
    assert_non_null(items);
    items[0].id = strdup("dash9");
    items[0].name = strdup("extra");
    assert_true(items[0].id && items[0].name);
    assert_null(
        disc_complete(fs->st.disc, NULL, epoch, 0, items, 1, mono_ms(), 0, &result, &changed));
    assert_int_equal(result, 0);
    assert_int_equal(changed, 1);
    fs_tree_rebuild(fs);
    assert_true(tree_has(fs, "extra"));
    assert_true(lookup(FUSE_ROOT_ID, "extra") > 0);

    write_conf(fx->conf, "web"); /* with_discover is 0: discover = false */
    reload_now(fs);
    g = fs_gen_get(fs);
    assert_false(g->cfg->discover);
    fs_gen_unref(g);
    assert_true(tree_has(fs, "web"));
    assert_false(tree_has(fs, "extra"));
    struct ns_tree *t = fs_tree_get(fs); /* a rebuild now changes nothing either */
    assert_int_equal(t->n_dashboards, 1);
    assert_string_equal(t->dashboards[0].name, "web");
    ns_unref(t);
    assert_int_equal(lookup_err(FUSE_ROOT_ID, "extra"), ENOENT);
    assert_int_equal(lookup_err(FUSE_ROOT_ID, "dash9"), ENOENT);
}

/* SPEC 7: a reload that renames a dashboard invalidates the old name in /, also when a
 * rebuild (a LOOKUP's fs_tree_get, a discovery refresh) installs the new tree between the
 * swap and the reload's own rebuild. (Before the fix the reload read the "old" tree after
 * that rebuild, compared the new tree with itself and invalidated nothing.) */
static void test_reload_invalidates_despite_a_racing_rebuild(void **state)
{
    struct fx *fx = *state;
    struct fs *fs = fx->fs;
    assert_true(tree_has(fs, "web"));
    write_conf(fx->conf, "web2");
    atomic_store(&rebuild_in_reload, 1);
    reload_now(fs);
    assert_int_equal(atomic_load(&rebuild_in_reload), 0); /* the racing rebuild ran */
    assert_true(tree_has(fs, "web2"));
    assert_true(invalidated(FS_INO_ROOT, "web"));
    assert_false(invalidated(FS_INO_ROOT, "dash1")); /* the id still leads to dash1 */
}

/* A timespec for pthread_cond_timedwait on CLOCK_MONOTONIC, WAIT_MS (scaled) from now. */
static struct timespec wait_deadline(int64_t ms)
{
    int64_t until = mono_ms() + tf(ms);
    struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000};
    return ts;
}

/* A burst of SIGHUPs queued before the reload thread reads any: exactly one reload.
 * (Before the fix: one full reload per byte, 64 here.) */
static void test_sighup_burst_makes_one_reload(void **state)
{
    struct fx *fx = *state;
    struct fs *fs = fx->fs;
    char burst[64];
    memset(burst, 'h', sizeof(burst));
    assert_int_equal(write(fs->st.hup_pipe[1], burst, sizeof(burst)), (ssize_t)sizeof(burst));
    assert_int_equal(fs_reload_start(fs), 0);
    pthread_mutex_lock(&load_m);
    struct timespec ts = wait_deadline(WAIT_MS);
    while (reloads == 0 && pthread_cond_timedwait(&load_cv, &load_m, &ts) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&load_m);
    fs_reload_stop(fs); /* joins: the reload under way ends first */
    assert_int_equal(reloads_seen(), 1);
}

struct stopper {
    struct fs *fs;
    pthread_t t;
    int returned; /* protected by load_m */
};

static void *stop_main(void *arg)
{
    struct stopper *s = arg;
    fs_reload_stop(s->fs);
    pthread_mutex_lock(&load_m);
    s->returned = 1;
    pthread_cond_broadcast(&load_cv);
    pthread_mutex_unlock(&load_m);
    return NULL;
}

/* fs_reload_stop with the pipe full (SIGHUPs piling up behind a slow reload) still
 * joins the thread, and the reload under way is the last. (Before the fix its wake-up
 * write failed, the thread was detached, and fs_free closed the pipe and freed fs under
 * it: stop returned while the reload was still running.) */
static void test_reload_stop_with_a_full_pipe(void **state)
{
    struct fx *fx = *state;
    struct fs *fs = fx->fs;
    pthread_mutex_lock(&load_m);
    hold_load = 1;
    pthread_mutex_unlock(&load_m);
    assert_int_equal(fs_reload_start(fs), 0);
    assert_int_equal(write(fs->st.hup_pipe[1], "h", 1), 1);
    pthread_mutex_lock(&load_m);
    struct timespec ts = wait_deadline(WAIT_MS);
    while (!load_held && pthread_cond_timedwait(&load_cv, &load_m, &ts) != ETIMEDOUT)
        ;
    int was_held = load_held;
    pthread_mutex_unlock(&load_m);
    assert_true(was_held);
    /* SIGHUPs until the pipe is full (its write end is non-blocking, as for the handler). */
    char burst[4096];
    memset(burst, 'h', sizeof(burst));
    size_t queued = 0;
    ssize_t w;
    while ((w = write(fs->st.hup_pipe[1], burst, sizeof(burst))) > 0)
        queued += (size_t)w;
    assert_int_equal(errno, EAGAIN);
    assert_true(queued > 0);

    struct stopper s = {fs, 0, 0};
    assert_int_equal(pthread_create(&s.t, NULL, stop_main, &s), 0);
    /* Stop cannot return while the reload is held: give it every chance to (the buggy
     * code returned within microseconds). */
    pthread_mutex_lock(&load_m);
    ts = wait_deadline(300);
    while (!s.returned && pthread_cond_timedwait(&load_cv, &load_m, &ts) != ETIMEDOUT)
        ;
    int early = s.returned;
    hold_load = 0;
    pthread_cond_broadcast(&load_cv);
    pthread_mutex_unlock(&load_m);
    assert_int_equal(pthread_join(s.t, NULL), 0);
    assert_false(early);
    assert_int_equal(reloads_seen(), 1); /* a stop drops the SIGHUPs still queued */
    assert_false(fs->st.reload_started);
}

/* SPEC 12.4: a libfuse worker holding the old generation (a LOOKUP that began before the
 * reload) drops its last reference after the reload: the generation's client is freed
 * by the reload thread, never by the worker (freeing a shared level joins its keeper,
 * which may be waiting for Redis). (Before the fix the worker freed it.) */
static void test_last_reference_freed_by_the_reload_thread(void **state)
{
    struct fx *fx = *state;
    struct fs *fs = fx->fs;
    assert_int_equal(fs_reload_start(fs), 0);
    struct fs_gen *kept = fs_gen_get(fs); /* the worker's */
    max_connections = 3;                  /* another client: the old one goes with kept */
    write_conf(fx->conf, "web");
    max_connections = 2;
    pthread_mutex_lock(&free_m);
    frees_watched = 1;
    pthread_mutex_unlock(&free_m);
    assert_int_equal(write(fs->st.hup_pipe[1], "h", 1), 1);
    /* The reload swapped and dropped its own references: the worker's is the last. */
    int64_t until = mono_ms() + tf(WAIT_MS);
    while (atomic_load(&kept->refs) != 1 && mono_ms() < until)
        nap_ms(1);
    assert_int_equal(atomic_load(&kept->refs), 1);
    fs_gen_unref(kept);
    until = mono_ms() + tf(WAIT_MS);
    for (;;) {
        pthread_mutex_lock(&free_m);
        int n = frees;
        pthread_t by = freed_by;
        pthread_mutex_unlock(&free_m);
        if (n > 0) {
            assert_int_equal(n, 1);
            assert_false(pthread_equal(by, pthread_self()));
            assert_true(pthread_equal(by, fs->st.reload_thread));
            break;
        }
        if (mono_ms() > until)
            fail_msg("the old generation was never freed");
        nap_ms(1);
    }
    pthread_mutex_lock(&free_m);
    frees_watched = 0;
    pthread_mutex_unlock(&free_m);
    fs_reload_stop(fs);
}

/* fs_io's hooks on a pipe: the INIT reply gains FUSE_PARALLEL_DIROPS (from a copy: the
 * caller's buffer is untouched) only when .init wanted it; every other write, and INIT's
 * reply when not wanted, passes byte for byte. */
static void write_frames(int fd, uint64_t unique, int32_t error, const void *body, size_t len)
{
    struct fuse_out_header out = {
        .len = (uint32_t)(sizeof(out) + len), .error = error, .unique = unique};
    struct iovec iov[2] = {{&out, sizeof(out)}, {(void *)body, len}};
    ssize_t n = fs_io_ops()->writev(fd, iov, len ? 2 : 1, the_fs);
    assert_int_equal(n, (ssize_t)(sizeof(out) + len));
}

static void read_back(int fd, struct fuse_out_header *out, void *body, size_t len)
{
    assert_int_equal(read(fd, out, sizeof(*out)), (ssize_t)sizeof(*out));
    if (len)
        assert_int_equal(read(fd, body, len), (ssize_t)len);
}

static void init_request(int fd[2], uint64_t unique)
{
    struct fuse_in_header in = {
        .len = sizeof(in) + sizeof(struct fuse_init_in), .opcode = FUSE_INIT, .unique = unique};
    struct fuse_init_in init = {.major = 7, .minor = 38, .flags = FUSE_PARALLEL_DIROPS};
    char buf[sizeof(in) + sizeof(init)];
    memcpy(buf, &in, sizeof(in));
    memcpy(buf + sizeof(in), &init, sizeof(init));
    assert_int_equal(write(fd[1], buf, sizeof(buf)), (ssize_t)sizeof(buf));
    char got[256];
    assert_int_equal(fs_io_ops()->read(fd[0], got, sizeof(got), the_fs), (ssize_t)sizeof(buf));
    assert_memory_equal(got, buf, sizeof(buf));
}

static void check_init_reply(int want, uint32_t expect_flags)
{
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    atomic_store(&the_fs->io.state, FS_IO_BEFORE_INIT); /* as fs_io_install leaves it */
    fs_io_want_parallel(the_fs, want);
    init_request(fd, 42);
    struct fuse_init_out init = {.major = 7,
                                 .minor = 38,
                                 .max_readahead = 131072,
                                 .flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES,
                                 .max_write = 4096};
    struct fuse_init_out before = init;
    /* Another unique (a notify has unique 0) is not INIT's reply: unchanged. */
    write_frames(fd[1], 0, 0, &init, sizeof(init));
    struct fuse_out_header out;
    struct fuse_init_out got;
    read_back(fd[0], &out, &got, sizeof(got));
    assert_int_equal(out.unique, 0);
    assert_memory_equal(&got, &init, sizeof(got));
    /* INIT's reply. */
    write_frames(fd[1], 42, 0, &init, sizeof(init));
    read_back(fd[0], &out, &got, sizeof(got));
    assert_int_equal(out.unique, 42);
    assert_int_equal(out.len, sizeof(out) + sizeof(got));
    assert_int_equal(got.flags, expect_flags);
    got.flags = init.flags;
    assert_memory_equal(&got, &init, sizeof(got));     /* nothing else changed */
    assert_memory_equal(&init, &before, sizeof(init)); /* the caller's buffer untouched */
    /* After it, everything passes as it is, even the same unique again. */
    write_frames(fd[1], 42, 0, &init, sizeof(init));
    read_back(fd[0], &out, &got, sizeof(got));
    assert_int_equal(got.flags, init.flags);
    write_frames(fd[1], 43, -ENOSYS, NULL, 0);
    read_back(fd[0], &out, NULL, 0);
    assert_int_equal(out.unique, 43);
    assert_int_equal(out.error, -ENOSYS);
    close(fd[0]);
    close(fd[1]);
}

static void test_io_init_reply_gains_parallel_dirops(void **state)
{
    (void)state;
    check_init_reply(1, FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_PARALLEL_DIROPS);
    check_init_reply(0, FUSE_ASYNC_READ | FUSE_BIG_WRITES);
}

/* ---- the inode table (src/fs_ino.c), on a cache of its own ------------------------- */

#define INO_VERSIONS 300

struct ino_fx {
    struct cache *cache;
    struct fs_ino *t;
    struct cache_version *v[INO_VERSIONS]; /* distinct versions: one reference each */
};

static void ino_fx_init(struct ino_fx *f)
{
    struct cache_params p = {64 << 20, 60, 300, 30, 600};
    f->cache = cache_new(&p);
    assert_non_null(f->cache);
    f->t = fs_ino_new(f->cache);
    assert_non_null(f->t);
    struct cache_clock now = {mono_ms(), INT64_C(1700000000000)};
    for (int i = 0; i < INO_VERSIONS; i++) {
        struct cache_key key = {"dash1", "w1", i * INT64_C(60000), (i + 1) * INT64_C(60000),
                                VPATH_RES_AUTO};
        f->v[i] = cache_get(f->cache, &key, &now, NULL, NULL);
        assert_non_null(f->v[i]);
    }
}

static void ino_fx_cleanup(struct ino_fx *f)
{
    fs_ino_free(f->t); /* drops the inodes' references before the cache goes */
    for (int i = 0; i < INO_VERSIONS; i++)
        cache_version_unref(f->v[i]);
    cache_free(f->cache);
}

/* The image inode of version i, with one lookup (the table takes a reference). */
static struct fs_inode *ino_image(struct ino_fx *f, int i)
{
    cache_version_ref(f->v[i]);
    struct fs_inode *n = fs_ino_image(f->t, f->v[i]);
    assert_non_null(n);
    assert_int_equal(n->kind, FK_IMAGE);
    return n;
}

/* Directory inodes live as long as the table, image inodes and their names churn: a
 * directory made between images must not keep their memory once the kernel forgets them.
 * Each days/ inode used to come from the pool of image records and pin a 64 KiB block
 * (about 62 MiB here, held for good, while images, cache bytes and pinned bytes all said
 * 0). The kernel forgets each batch before the next: the pool's layout is the same as
 * if it forgot them all at the end. */
static void test_dir_inodes_pin_no_image_memory(void **state)
{
    (void)state;
    struct ino_fx f;
    ino_fx_init(&f);
    for (int d = 0; d < 1000; d++) {
        char wid[32];
        snprintf(wid, sizeof(wid), "w%d", d);
        assert_non_null(fs_ino_dir(f.t, FK_DAYS, "dash1", wid));
        struct fs_inode *img[INO_VERSIONS];
        for (int i = 0; i < INO_VERSIONS; i++) {
            img[i] = ino_image(&f, i);
            fs_ino_remember_name(f.t, img[i], FS_INO_ROOT, "2024-01-01.png");
        }
        for (int i = 0; i < INO_VERSIONS; i++)
            fs_ino_forget(f.t, img[i]->ino, 1);
    }
    assert_int_equal(fs_ino_images(f.t), 0);
    size_t mapped = fs_ino_pool_mapped(f.t);
    if (mapped > (1u << 20))
        fail_msg("%zu bytes still mapped for forgotten images (1000 directories)", mapped);
    ino_fx_cleanup(&f);
}

/* fs_ino_dir finds a directory inode by (kind, dashboard id, widget id) among many
 * image inodes and many directories (past the index's growth): each is made once, with
 * the next dynamic number, and the same inode comes back for the same ids every time. */
static void test_dir_inodes_found_by_ids(void **state)
{
    (void)state;
    struct ino_fx f;
    ino_fx_init(&f);
    struct fs_inode *img[INO_VERSIONS];
    for (int i = 0; i < INO_VERSIONS; i++)
        img[i] = ino_image(&f, i);
    enum { DASHES = 300 };
    static const enum fs_kind kinds[] = {FK_DASH, FK_WIDGET, FK_DAYS};
    struct fs_inode *made[DASHES][3];
    uint64_t next = FS_INO_FIRST_DYNAMIC;
    for (int round = 0; round < 2; round++) {
        for (int d = 0; d < DASHES; d++) {
            char dash[32];
            snprintf(dash, sizeof(dash), "d%d", d);
            for (int k = 0; k < 3; k++) {
                const char *wid = kinds[k] == FK_DASH ? NULL : "w";
                struct fs_inode *n = fs_ino_dir(f.t, kinds[k], dash, wid);
                assert_non_null(n);
                if (round == 0) {
                    made[d][k] = n;
                    assert_int_equal(n->ino, next++); /* a new number for new ids */
                    assert_int_equal(n->kind, kinds[k]);
                    assert_string_equal(n->dash_id, dash);
                    if (wid)
                        assert_string_equal(n->widget_id, wid);
                    else
                        assert_null(n->widget_id);
                } else {
                    assert_ptr_equal(n, made[d][k]); /* the same inode again */
                }
                assert_ptr_equal(fs_ino_get(f.t, n->ino), n);
            }
        }
    }
    /* Ids that concatenate alike are different directories. */
    struct fs_inode *a = fs_ino_dir(f.t, FK_WIDGET, "a", "bc");
    struct fs_inode *b = fs_ino_dir(f.t, FK_WIDGET, "ab", "c");
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(fs_ino_dir(f.t, FK_WIDGET, "a", "bc"), a);
    assert_ptr_equal(fs_ino_dir(f.t, FK_WIDGET, "ab", "c"), b);
    /* The fixed directories and the images are untouched. */
    assert_int_equal(fs_ino_get(f.t, FS_INO_ROOT)->kind, FK_ROOT);
    assert_int_equal(fs_ino_get(f.t, FS_INO_META)->kind, FK_META_DIR);
    assert_int_equal(fs_ino_images(f.t), INO_VERSIONS);
    for (int i = 0; i < INO_VERSIONS; i++) {
        assert_ptr_equal(fs_ino_get(f.t, img[i]->ino), img[i]);
        fs_ino_forget(f.t, img[i]->ino, 1);
    }
    assert_int_equal(fs_ino_images(f.t), 0);
    assert_ptr_equal(fs_ino_dir(f.t, FK_DAYS, "d7", "w"), made[7][2]); /* directories stay */
    ino_fx_cleanup(&f);
}

/* An image is looked up under many spellings (day name, @auto, epoch, ISO...), in more
 * than one directory: every (parent, name) is remembered and handed out for invalidation
 * when its version is evicted (SPEC 12.2), newest first, each charged while the inode
 * lives (SPEC 7). Only the 4 newest used to be kept: an eviction left the older entries,
 * and the inode and its bytes with them, in the kernel for up to a day. */
static void test_every_name_is_remembered(void **state)
{
    (void)state;
    struct ino_fx f;
    ino_fx_init(&f);
    static const struct {
        uint64_t parent;
        const char *name;
    } seen[] = {
        {20, "2024-01-01.png"},
        {20, "2024-01-01@auto.png"},
        {20, "1704067200-1704153600.png"},
        {20, "2024-01-01T00:00:00Z--2024-01-02T00:00:00Z.png"},
        {21, "2024-01-01.png"}, /* the same name in days/ */
        {21, "2024-01-01@high.png"},
    };
    enum { SEEN = sizeof(seen) / sizeof(seen[0]) };
    struct cache_stats before, s;
    cache_get_stats(f.cache, &before);
    struct fs_inode *n = ino_image(&f, 0);
    size_t text = 0;
    for (size_t i = 0; i < SEEN; i++) {
        fs_ino_remember_name(f.t, n, seen[i].parent, seen[i].name);
        fs_ino_remember_name(f.t, n, seen[0].parent, seen[0].name); /* known: kept once */
        text += strlen(seen[i].name) + 1;
    }
    struct fs_name *names;
    size_t got = fs_ino_names(f.t, n->ino, SIZE_MAX, &names);
    assert_int_equal(got, SEEN);
    for (size_t i = 0; i < SEEN; i++) { /* newest first */
        assert_int_equal(names[i].parent, seen[SEEN - 1 - i].parent);
        assert_string_equal(names[i].name, seen[SEEN - 1 - i].name);
    }
    free(names);
    assert_int_equal(fs_ino_names(f.t, n->ino, 1, &names), 1); /* readahead's: the newest */
    assert_string_equal(names[0].name, seen[SEEN - 1].name);
    free(names);
    assert_int_equal(fs_ino_names(f.t, 999, SIZE_MAX, &names), 0);
    assert_null(names);
    /* Each name is charged at least its text, and given back when the inode goes. */
    cache_get_stats(f.cache, &s);
    assert_true(s.bytes >= before.bytes + text);
    uint64_t charged = s.bytes - before.bytes;
    /* Evicted: the records move to pinned bytes, every name still there to invalidate. */
    fs_ino_unbind(f.t, n->ino);
    cache_get_stats(f.cache, &s);
    assert_int_equal(s.bytes, before.bytes);
    assert_true(fs_ino_pinned_bytes(f.t) >= charged);
    assert_int_equal(fs_ino_names(f.t, n->ino, SIZE_MAX, &names), SEEN);
    free(names);
    fs_ino_forget(f.t, n->ino, 1);
    assert_int_equal(fs_ino_pinned_bytes(f.t), 0);
    assert_int_equal(fs_ino_names(f.t, n->ino, SIZE_MAX, &names), 0);
    ino_fx_cleanup(&f);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait (deadline 5 s) until notify_m's *counter reaches n. */
static void wait_notify_count(int *counter, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&notify_m);
    while (*counter < n)
        if (pthread_cond_timedwait(&notify_cv, &notify_m, &until) != 0)
            break;
    int got = *counter;
    pthread_mutex_unlock(&notify_m);
    assert_int_equal(got, n);
}

/* Teardown of the invalidation thread (fs_inval.c), as fs_mount.c's fs_inval_end runs it.
 * Closed, the thread notifies nothing more, of what was queued or what comes after, and
 * the end joins at once without touching the mount. A notify still waiting a second after
 * the end began (behind a LOOKUP nobody will read) makes it abort the connection
 * (fs_mnt.c: umount2 of the mount point with MNT_FORCE, the number being unknown), after
 * which the notify ends and the thread is joined. An EBUSY from umount2 still means
 * aborted. */
static void test_inval_teardown(void **state)
{
    (void)state;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&notify_cv, &ca);
    struct fuse_session *se = (struct fuse_session *)&ca; /* never dereferenced: wrapped */

    /* A quiet stop. */
    struct fs_inval *q = fs_inval_new(NULL);
    assert_non_null(q);
    assert_int_equal(fs_inval_start(q, se, NULL), 0);
    fs_inval_name(q, FS_INO_ROOT, "web");
    wait_notify_count(&notifies, 1);
    fs_inval_close(q);
    fs_inval_name(q, FS_INO_ROOT, "db"); /* after the close: dropped */
    int64_t t0 = now_ms();
    assert_int_equal(fs_inval_end(q, &(struct fs_mnt){.real = (char *)"/mnt/quiet"}, 1000),
                     FS_NOT_ABORTED);
    assert_true(now_ms() - t0 < 500);
    pthread_mutex_lock(&notify_m);
    assert_int_equal(notifies, 1);
    assert_int_equal(umounts, 0);
    pthread_mutex_unlock(&notify_m);
    fs_inval_free(q);

    /* A notify stuck behind a LOOKUP nobody reads. */
    q = fs_inval_new(NULL);
    assert_non_null(q);
    pthread_mutex_lock(&notify_m);
    notify_hold = 1;
    pthread_mutex_unlock(&notify_m);
    assert_int_equal(fs_inval_start(q, se, NULL), 0);
    fs_inval_name(q, FS_INO_ROOT, "web");
    wait_notify_count(&notifies, 2);
    t0 = now_ms();
    assert_int_equal(fs_inval_end(q, &(struct fs_mnt){.real = (char *)"/mnt/stuck"}, 1000),
                     FS_ABORTED_UNMOUNTED); /* returns: the abort ended the notify */
    int64_t took = now_ms() - t0;
    pthread_mutex_lock(&notify_m);
    assert_int_equal(umounts, 1);
    assert_int_equal(umount_flags, MNT_FORCE);
    assert_string_equal(umount_path, "/mnt/stuck");
    notify_hold = 0;
    pthread_mutex_unlock(&notify_m);
    assert_true(took >= 900 && took < 5000);
    fs_inval_free(q);

    /* umount2 with MNT_FORCE reports EBUSY after aborting (the stuck LOOKUP holds the
     * mount): aborted, and the mount is still there for the caller to detach. */
    q = fs_inval_new(NULL);
    assert_non_null(q);
    pthread_mutex_lock(&notify_m);
    notify_hold = 1;
    umount_errno = EBUSY;
    pthread_mutex_unlock(&notify_m);
    assert_int_equal(fs_inval_start(q, se, NULL), 0);
    fs_inval_name(q, FS_INO_ROOT, "web");
    wait_notify_count(&notifies, 3);
    assert_int_equal(fs_inval_end(q, &(struct fs_mnt){.real = (char *)"/mnt/busy"}, 1000),
                     FS_ABORTED);
    pthread_mutex_lock(&notify_m);
    assert_int_equal(umounts, 2);
    assert_string_equal(umount_path, "/mnt/busy");
    notify_hold = 0;
    umount_errno = 0;
    pthread_mutex_unlock(&notify_m);
    fs_inval_free(q);
    pthread_cond_destroy(&notify_cv);
    pthread_condattr_destroy(&ca);
}

/* fusectl's connection number of a FUSE mount, from /proc/self/mountinfo's text: the
 * mount point field unescaped and matched whole, only fuse and fuse.* types, the last
 * (top) mount of a point winning, and the kernel's dev_t of major:minor. */
static void test_mnt_conn_of_mountinfo(void **state)
{
    (void)state;
    const char *text =
        "22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw\n"
        "40 30 0:52 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:1 - fuse.insightfs "
        "insightfs rw,user_id=0,group_id=0\n"
        "41 30 0:53 / /tmp/a rw,relatime - tmpfs tmpfs rw\n"
        "42 30 8:1 / /tmp/blk rw,relatime - fuseblk /dev/sda1 rw\n"
        "43 30 0:60 / /tmp/two rw - fuse.insightfs x rw\n"
        "44 43 0:61 / /tmp/two rw shared:3 master:2 - fuse.insightfs y rw\n"
        "48 30 0:80 / /tmp/under rw - fuse.insightfs u rw\n"
        "49 48 0:81 / /tmp/under rw - tmpfs tmpfs rw\n"
        "45 30 1:2 / /tmp/plain rw - fuse z rw\n"
        "46 30 0:70 / /tmp/nul\\000 rw - fuse.insightfs v rw\n"
        "47 30 0:71 / /tmp/tab\\011and\\134slash rw - fuse.insightfs w rw";
    unsigned long conn = 0;
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/a b", &conn), 0);
    assert_int_equal(conn, 52);
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/two", &conn), 0);
    assert_int_equal(conn, 61); /* the mount on top */
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/plain", &conn), 0);
    assert_int_equal(conn, (1UL << 20) | 2);
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/tab\tand\\slash", &conn), 0);
    assert_int_equal(conn, 71); /* the last line has no newline */
    conn = 7;
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/a", &conn), -ENOENT);     /* tmpfs */
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/blk", &conn), -ENOENT);   /* fuseblk */
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/a b/c", &conn), -ENOENT); /* below */
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/a\\040b", &conn), -ENOENT);
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/tw", &conn), -ENOENT);
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/under", &conn), -ENOENT); /* tmpfs on top */
    assert_int_equal(fs_mnt_conn_of(text, "/tmp/nul", &conn), -ENOENT);   /* \000: no end */
    assert_int_equal(fs_mnt_conn_of("", "/tmp/two", &conn), -ENOENT);
    assert_int_equal(conn, 7); /* untouched when not found */
}

int main(void)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&hold_cv, &ca);
    pthread_cond_init(&load_cv, &ca);
    main_thread = pthread_self();
    pthread_condattr_destroy(&ca);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lookup_reads_state_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupt_before_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_opendir_interrupt_before_kept, setup_discover,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_kept_request_answered_by_its_deadline,
                                        setup_short_deadline, teardown),
        cmocka_unit_test_setup_teardown(test_every_mutation_is_erofs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rebuild_racing_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_to_discover_off_drops_discovered,
                                        setup_discover, teardown),
        cmocka_unit_test_setup_teardown(test_reload_invalidates_despite_a_racing_rebuild, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sighup_burst_makes_one_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_stop_with_a_full_pipe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_reference_freed_by_the_reload_thread, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_init_reply_gains_parallel_dirops, setup, teardown),
        cmocka_unit_test(test_dir_inodes_pin_no_image_memory),
        cmocka_unit_test(test_dir_inodes_found_by_ids),
        cmocka_unit_test(test_every_name_is_remembered),
        cmocka_unit_test(test_inval_teardown),
        cmocka_unit_test(test_mnt_conn_of_mountinfo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
