/* fs_gen - the state that configuration and discovery decide: configuration
 * generations, the dashboard/widget tree, and SIGHUP reload (SPEC 7, 12.5).
 *
 * Generations: a generation (cfg + API client + shared cache level) is swapped whole on
 * SIGHUP; requests hold
 * a reference to the generation they started with. A client is shared by generations
 * whose api settings are the same; a new client for the same account (endpoint and
 * access key) inherits the old one's account state (clock offset, retry budget, circuit
 * breaker, counters: api_new), so only another account starts afresh. The shared cache
 * level (SPEC 13) goes with the client (its fleet pacer is handed to the client as a
 * value), so a reload that changes the shared group builds both anew.
 *
 * The tree (configured + discovered entries) is rebuilt from the current cfg and the
 * discovered lists whenever either changes. Rebuilds are serialized by st.rebuild and
 * read the current generation inside it, so the last rebuild to finish always reflects
 * the last configuration swapped in (a rebuild racing a reload cannot install the old
 * configuration's tree after the reload's).
 *
 * Reload is all or nothing and runs in its own thread: the SIGHUP handler only writes a
 * byte to a pipe (libconfig is not async-signal-safe), and it is installed before
 * libfuse's handlers, which replace only default ones and would make SIGHUP exit. The
 * thread reads every byte queued before it acts, so a burst of SIGHUPs makes one reload
 * (two when more come during it); fs_reload_stop sets a flag before its wake-up byte and
 * the thread checks it after each drain, so stopping never depends on room in the pipe.
 *
 * Another account drops the cache and the discovered lists; discover = false drops the
 * lists (and the tree never shows a list while it is off). Names in / and in dashboard
 * directories that no longer lead where they did are queued to the invalidation thread.
 *
 * Final frees: the last reference to a generation may be dropped by a libfuse worker
 * (a LOOKUP that began before the reload), and freeing a client can wait for the network
 * (shared_free joins a keeper that may be mid-probe with Redis down). While the reload
 * thread runs, fs_gen_unref hands the generation to it (st.dead, a wake-up byte) and it
 * frees it; before it starts and after it stops, the last reference frees in place.
 *
 * Locking: st.lock guards the generation and tree pointers (held for pointer work only);
 * st.rebuild is held across one build and swap (ns_build is pure and quick);
 * st.dead_lock guards the generations handed to the reload thread (list work only). None
 * is held across network I/O.
 */
#include "fs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/disc.h"
#include "insightfs/engine.h"
#include "insightfs/log.h"
#include "insightfs/ns.h"

/* The API client, shared by generations whose api and shared settings are the same,
 * and the shared cache level whose fleet pacer it uses (SPEC 13). */
struct fs_api {
    atomic_int refs;
    struct api *api;
    struct shared *shared; /* NULL without a shared group */
};

static void fs_api_free(struct fs_api *fa)
{
    api_free(fa->api); /* first: its pacer points into fa->shared */
    shared_free(fa->shared);
    free(fa);
}

/* ---- generations ---------------------------------------------------------------- */

static void gen_free(struct fs_gen *g)
{
    if (g->fa && atomic_fetch_sub(&g->fa->refs, 1) == 1)
        fs_api_free(g->fa);
    cfg_free(g->cfg);
    free(g);
}

/* Wake the reload thread with byte c ('h': reload). The write end is non-blocking: a
 * full pipe means a wake-up is already pending, and the thread drains it all. */
static void reload_wake(struct fs_state *st, char c)
{
    if (write(st->hup_pipe[1], &c, 1) < 0) {
        /* pipe full: the reload thread has bytes to read, so it wakes anyway */
    }
}

/* Free the generations handed to the reload thread. */
static void gen_reap(struct fs_state *st)
{
    pthread_mutex_lock(&st->dead_lock);
    struct fs_gen *g = st->dead;
    st->dead = NULL;
    pthread_mutex_unlock(&st->dead_lock);
    while (g) {
        struct fs_gen *next = g->next_dead;
        gen_free(g);
        g = next;
    }
}

void fs_gen_unref(struct fs_gen *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    struct fs_state *st = g->st;
    pthread_mutex_lock(&st->dead_lock);
    int handed = st->reaper;
    if (handed) {
        g->next_dead = st->dead;
        st->dead = g;
    }
    pthread_mutex_unlock(&st->dead_lock);
    if (handed)
        reload_wake(st, 'w');
    else
        gen_free(g); /* no reload thread (set-up, teardown, tests): this is no worker */
}

struct fs_gen *fs_gen_get(struct fs *fs)
{
    pthread_mutex_lock(&fs->st.lock);
    struct fs_gen *g = fs->st.gen;
    atomic_fetch_add(&g->refs, 1);
    pthread_mutex_unlock(&fs->st.lock);
    return g;
}

/* Takes ownership of cfg on success and failure. reuse: share this client (its api
 * settings equal cfg's); else a new client, inheriting inherit's account state when it
 * is the same account (may be NULL). */
static struct fs_gen *gen_new(struct fs_state *st, struct cfg *cfg, struct fs_api *reuse,
                              struct api *inherit, int64_t test_offset, char **err)
{
    struct fs_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        cfg_free(cfg);
        return NULL;
    }
    atomic_init(&g->refs, 1);
    g->cfg = cfg;
    g->st = st;
    if (reuse) {
        atomic_fetch_add(&reuse->refs, 1);
        g->fa = reuse;
    } else if ((g->fa = calloc(1, sizeof(*g->fa))) != NULL) {
        atomic_init(&g->fa->refs, 1);
        g->fa->api = api_new(cfg, test_offset, inherit, err);
        if (g->fa->api && cfg->shared.redis) {
            g->fa->shared = shared_new(cfg, err);
            if (g->fa->shared) {
                struct api_pacer p = shared_pacer(g->fa->shared);
                api_set_pacer(g->fa->api, &p);
            }
        }
        if (!g->fa->api || (cfg->shared.redis && !g->fa->shared)) {
            fs_api_free(g->fa);
            g->fa = NULL;
        }
    }
    if (!g->fa) {
        fs_gen_unref(g);
        return NULL;
    }
    g->api = g->fa->api;
    g->shared = g->fa->shared;
    return g;
}

static int same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* 1 when a and b configure the shared cache level identically (none, or the same). */
static int same_shared(const struct cfg *a, const struct cfg *b)
{
    const struct cfg_shared *x = &a->shared, *y = &b->shared;
    return same_str(x->redis, y->redis) && same_str(x->password, y->password) &&
           x->timeout_ms == y->timeout_ms && x->final_ttl_s == y->final_ttl_s &&
           x->fleet_requests_per_second == y->fleet_requests_per_second;
}

/* 1 when a and b configure the API client (and its shared level) identically. */
static int same_client(const struct cfg *a, const struct cfg *b)
{
    return same_str(a->endpoint, b->endpoint) && same_str(a->access_key, b->access_key) &&
           same_str(a->secret_key, b->secret_key) && same_str(a->ca_file, b->ca_file) &&
           same_str(a->domain_code, b->domain_code) && a->timeout_ms == b->timeout_ms &&
           a->connect_timeout_ms == b->connect_timeout_ms && a->retries == b->retries &&
           a->max_connections == b->max_connections &&
           a->max_requests_per_second == b->max_requests_per_second &&
           a->max_image_bytes == b->max_image_bytes && same_shared(a, b);
}

struct cache_clock fs_clock(struct fs *fs)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    struct fs_gen *g = fs_gen_get(fs);
    struct cache_clock now = {(int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, api_now_ms(g->api)};
    fs_gen_unref(g);
    return now;
}

/* ---- the tree ------------------------------------------------------------------- */

void fs_tree_rebuild(struct fs *fs)
{
    pthread_mutex_lock(&fs->st.rebuild);
    struct fs_gen *g = fs_gen_get(fs);
    uint64_t built = 0;
    struct ns_tree *t = disc_build_tree(fs->st.disc, g->cfg, &built);
    fs_gen_unref(g);
    if (t) {
        pthread_mutex_lock(&fs->st.lock);
        struct ns_tree *old = fs->st.tree;
        fs->st.tree = t;
        fs->st.tree_generation = built;
        pthread_mutex_unlock(&fs->st.lock);
        ns_unref(old);
    } /* else out of memory: keep the old tree */
    pthread_mutex_unlock(&fs->st.rebuild);
}

struct ns_tree *fs_tree_get(struct fs *fs)
{
    pthread_mutex_lock(&fs->st.lock);
    uint64_t have = fs->st.tree_generation;
    pthread_mutex_unlock(&fs->st.lock);
    /* Whoever stored a list, this caller must see it. */
    if (disc_generation(fs->st.disc) != have)
        fs_tree_rebuild(fs);
    pthread_mutex_lock(&fs->st.lock);
    struct ns_tree *t = fs->st.tree;
    ns_ref(t);
    pthread_mutex_unlock(&fs->st.lock);
    return t;
}

/* ---- reload (SIGHUP) ------------------------------------------------------------ */

/* Queue parent/name for invalidation unless it still leads to the same id. */
static void inval_if_moved(struct fs *fs, uint64_t parent, const char *name, const char *old_id,
                           const char *new_id)
{
    if (new_id && strcmp(old_id, new_id) == 0)
        return;
    fs_inval_name(fs->inval, parent, name);
}

/* After a reload, have the kernel forget the names in / and in dashboard directories
 * that no longer lead where they did: removed or renamed dashboards and widgets, by name
 * and by id (SPEC 7). */
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
        const struct ns_dashboard *same = ns_dashboard_by_id(now, d->id);
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

static struct cache_params cache_params_of(const struct cfg *c)
{
    struct cache_params p = {c->max_bytes, c->live_ttl_s, c->settle_s, c->error_ttl_s,
                             c->stale_if_error_s};
    return p;
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
    int same_account = strcmp(cfg->endpoint, old->cfg->endpoint) == 0 &&
                       strcmp(cfg->access_key, old->cfg->access_key) == 0;
    struct fs_api *reuse = same_client(cfg, old->cfg) ? old->fa : NULL;
    if (strcmp(cfg->timezone, old->cfg->timezone) != 0)
        log_warn("time.timezone changed: a restart is needed for it to apply");
    struct fs_gen *g = gen_new(&fs->st, cfg, reuse, old->api, fs->opts.test_offset_ms, &err);
    if (!g) {
        log_error("reload failed, keeping the old configuration: %s", err ? err : "out of memory");
        free(err);
        fs_gen_unref(old);
        return;
    }
    struct cache_params cp = cache_params_of(g->cfg);
    /* The tree of the old configuration, taken with the swap: from here on any rebuild
     * (a LOOKUP's fs_tree_get, a discovery refresh) installs the new one, and comparing
     * that with itself would invalidate nothing. */
    pthread_mutex_lock(&fs->st.lock);
    struct fs_gen *prev = fs->st.gen;
    fs->st.gen = g;
    struct ns_tree *old_tree = fs->st.tree;
    ns_ref(old_tree);
    pthread_mutex_unlock(&fs->st.lock);
    if (!same_account) {
        /* Another account: nothing it cached or listed may show through. */
        cache_clear(fs->cache);
        disc_forget(fs->st.disc);
    } else if (!g->cfg->discover) {
        /* Discovery off: what it listed is neither shown (disc_build_tree) nor kept, so
         * turning it on again later asks the API afresh. */
        disc_forget(fs->st.disc);
    }
    cache_set_params(fs->cache, &cp);
    engine_set_threads(fs->engine, g->cfg->max_connections);
    fs_drain_dropped(fs);
    log_set_level(fs->opts.debug ? LOG_LVL_DEBUG : g->cfg->log_level);
    fs_tree_rebuild(fs);
    struct ns_tree *new_tree = fs_tree_get(fs);
    inval_moved_names(fs, old_tree, new_tree);
    ns_unref(new_tree);
    ns_unref(old_tree);
    if (g->shared && shared_start(g->shared) != 0)
        log_error("cannot start the shared cache's thread: leases will not be renewed");
    log_info("configuration reloaded from %s", g->cfg->path);
    fs_gen_unref(prev);
    fs_gen_unref(old);
}

/* The reload thread: one reload per wake-up however many SIGHUPs came (every byte
 * queued is read first), and the generations handed to it freed. */
static void *reload_main(void *arg)
{
    struct fs *fs = arg;
    struct fs_state *st = &fs->st;
    for (;;) {
        struct pollfd p = {st->hup_pipe[0], POLLIN, 0};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            break;
        int hup = 0;
        char buf[256];
        ssize_t r;
        while ((r = read(st->hup_pipe[0], buf, sizeof(buf))) > 0)
            hup |= memchr(buf, 'h', (size_t)r) != NULL;
        if (r == 0)
            break;
        gen_reap(st);
        /* Checked after the drain: fs_reload_stop sets it before it writes, and when its
         * write finds the pipe full, the bytes read here came after it was set. */
        if (atomic_load(&st->reload_stop))
            break;
        if (hup) {
            fs_reload(fs);
            gen_reap(st);
        }
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
        /* pipe full: a wake-up is already queued, and it reloads */
    }
    errno = saved;
}

void fs_reload_install_handler(struct fs *fs)
{
    hup_fd = fs->st.hup_pipe[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sighup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    (void)sigaction(SIGHUP, &sa, NULL);
}

void fs_reload_remove_handler(void)
{
    hup_fd = -1;
    signal(SIGHUP, SIG_IGN);
}

int fs_reload_start(struct fs *fs)
{
    sigset_t all, old;
    sigfillset(&all);
    atomic_store(&fs->st.reload_stop, 0);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&fs->st.reload_thread, NULL, reload_main, fs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    fs->st.reload_started = rc == 0;
    if (rc == 0) {
        pthread_mutex_lock(&fs->st.dead_lock);
        fs->st.reaper = 1;
        pthread_mutex_unlock(&fs->st.dead_lock);
    }
    return -rc;
}

/* Always joins: the flag is set before the wake-up, and a wake-up that finds the pipe
 * full is not needed (see reload_main), so the thread never outlives fs. */
void fs_reload_stop(struct fs *fs)
{
    if (!fs->st.reload_started)
        return;
    atomic_store(&fs->st.reload_stop, 1);
    reload_wake(&fs->st, 'q');
    pthread_join(fs->st.reload_thread, NULL);
    fs->st.reload_started = 0;
    pthread_mutex_lock(&fs->st.dead_lock);
    fs->st.reaper = 0; /* from now on the last reference frees in place */
    pthread_mutex_unlock(&fs->st.dead_lock);
    gen_reap(&fs->st);
}

/* ---- set-up --------------------------------------------------------------------- */

int fs_state_init(struct fs_state *st, struct cfg *cfg, int64_t test_offset_ms)
{
    char *err = NULL;
    pthread_mutex_init(&st->lock, NULL);
    pthread_mutex_init(&st->rebuild, NULL);
    pthread_mutex_init(&st->dead_lock, NULL);
    st->hup_pipe[0] = st->hup_pipe[1] = -1;
    st->disc = disc_new();
    st->gen = gen_new(st, cfg, NULL, NULL, test_offset_ms, &err);
    st->tree = st->gen ? ns_build(st->gen->cfg, NULL) : NULL;
    if (!st->disc || !st->gen || !st->tree) {
        fprintf(stderr, "insightfs: %s\n", err ? err : "out of memory");
        free(err);
        return -1;
    }
    if (pipe2(st->hup_pipe, O_CLOEXEC) != 0) {
        fprintf(stderr, "insightfs: cannot set up: %s\n", strerror(errno));
        return -1;
    }
    fcntl(st->hup_pipe[0], F_SETFL, O_NONBLOCK); /* the reload thread drains it */
    fcntl(st->hup_pipe[1], F_SETFL, O_NONBLOCK);
    return 0;
}

void fs_state_cleanup(struct fs_state *st)
{
    ns_unref(st->tree);
    fs_gen_unref(st->gen);
    gen_reap(st); /* none when the reload thread was stopped (or never started) */
    disc_free(st->disc);
    if (st->hup_pipe[0] >= 0)
        close(st->hup_pipe[0]);
    if (st->hup_pipe[1] >= 0)
        close(st->hup_pipe[1]);
    pthread_mutex_destroy(&st->dead_lock);
    pthread_mutex_destroy(&st->rebuild);
    pthread_mutex_destroy(&st->lock);
}
