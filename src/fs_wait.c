/* fs_wait - kept requests and the fetches they wait for (SPEC 12.4: no libfuse worker
 * ever waits for the network).
 *
 * A request that needs a fetch (GETATTR or READ of a pending image version, a LOOKUP or
 * OPENDIR that waits for a discovery refresh) is not answered by its worker. It is kept:
 * a struct fs_wait holds its fuse_req_t and copies of its arguments, joins the flight it
 * waits for (cache_need / disc_need, flight.h) and gets a deadline timer. If nobody was
 * fetching, the worker also queues a fetch job on the engine's fetch threads, at most
 * max_connections of them. The worker then returns to libfuse at once, so the daemon
 * reads requests as fast as they come, whatever is in flight.
 *
 * A kept request is answered exactly once, by whichever comes first:
 *  - the fetch thread that completes the flight (cache_complete / disc_complete hand
 *    back the waiters) - with the bytes, the list, or the fetch's errno;
 *  - its deadline timer (the call's D + 500 ms: the fetch's own ETIMEDOUT at D normally
 *    comes first) - ETIMEDOUT;
 *  - an INTERRUPT from the kernel (fuse_req_interrupt_func) - EINTR at once; the fetch
 *    goes on for the others. One that came before the request was kept is reported by
 *    libfuse from inside the registration, where a reply would free the request under
 *    libfuse's feet: wait_new answers it after registering (on_interrupt says why);
 *  - teardown (fs_wait_stop, before unmount) - EIO.
 * The atomic `answered` flag decides who; the winner first unregisters the interrupt
 * callback (which takes the request's lock, so a callback already running has finished),
 * then replies. References: the creator, the interrupt registration (dropped by the
 * winner), the flight link (dropped by the completion) and the timer (dropped by the
 * fire, or by whoever cancels it); the last one frees. Each kept request and its copies
 * are charged to the cache's byte bound; at most api.max_pending are kept, one more is
 * answered EAGAIN at once (one warn line per 10 s with the count).
 *
 * With a shared cache level (SPEC 13) an image fetch asks Redis first, in the fetch
 * thread (fetch_image): a shared lookup is one more thing a kept request waits for,
 * never a libfuse worker.
 *
 * A fetch job holds a reference to what it fetches and the logical fetch's deadline D,
 * fixed when it was queued, so time spent queued counts (SPEC 6). A job whose D has
 * passed before a thread takes it fails ETIMEDOUT without a request.
 *
 * Housekeeping: a timer every second sweeps idle pending keys out of the cache (SPEC 7),
 * queues the invalidations of what the cache dropped, and returns freed heap to the
 * system when keys went away.
 *
 * Locking: no lock of its own; counters are atomics. The cache's and disc's locks are
 * taken inside their calls, never across an answer.
 */
#define FUSE_USE_VERSION 312

#include "fs_int.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/cpu.h"
#include "insightfs/disc.h"
#include "insightfs/engine.h"
#include "insightfs/http.h"
#include "insightfs/log.h"
#include "insightfs/shared.h"

#define WAIT_MARGIN_MS 500 /* a kept request's deadline: its D + this */
#define SHED_LOG_MS 10000
#define HOUSEKEEPING_MS 1000

struct fs_wait {
    struct flight_waiter link; /* on the flight it waits for */
    struct engine_timer timer;
    struct fs *fs;
    fuse_req_t req;
    enum fs_wait_op op;
    struct fs_inode *n; /* FW_GETATTR, FW_READ: valid while unanswered (the kernel holds it) */
    size_t size;        /* FW_READ */
    off_t off;
    uint64_t parent;          /* FW_LOOKUP: the directory; FW_OPENDIR: the directory opened */
    struct fuse_file_info fi; /* FW_OPENDIR */
    size_t charge;
    atomic_int answered;
    atomic_int registering; /* REG_*: an interrupt libfuse reports while registering */
    atomic_int refs;
    char name[]; /* FW_LOOKUP */
};

/* What a kept request is told while wait_new registers it for interrupts. */
enum { REG_DONE, REG_BUSY, REG_INTERRUPTED };

/* What a kept request needs to be answered later: copies of the operation's arguments. */
struct wait_args {
    enum fs_wait_op op;
    struct fs_inode *n; /* FW_GETATTR, FW_READ */
    size_t size;        /* FW_READ */
    off_t off;
    uint64_t parent;                 /* FW_LOOKUP, FW_OPENDIR */
    const struct fuse_file_info *fi; /* FW_OPENDIR, or NULL */
    const char *name;                /* FW_LOOKUP, or NULL */
};

struct fetch_job {
    struct engine_job job;
    struct fs *fs;
    int64_t deadline;        /* D, CLOCK_MONOTONIC ms */
    struct cache_version *v; /* an image fetch: one reference */
    int disc;                /* a discovery refresh of dash_id's list */
    uint64_t epoch;
    char dash_id[]; /* "" with disc: the dashboards */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* D for a logical fetch asked for now (SPEC 6). */
static int64_t deadline_from(struct fs *fs, int64_t now)
{
    struct fs_gen *g = fs_gen_get(fs);
    int64_t d = now + (int64_t)g->cfg->timeout_ms * (g->cfg->retries + 1);
    fs_gen_unref(g);
    return d;
}

/* ---- kept requests -------------------------------------------------------------- */

static void wait_put(struct fs_wait *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    cache_uncharge(w->fs->cache, w->charge);
    free(w);
}

static void reply(struct fs_wait *w, int rc)
{
    struct fs *fs = w->fs;
    if (rc == -EINTR) { /* interrupted: EINTR whatever the operation would do with rc */
        fuse_reply_err(w->req, EINTR);
        return;
    }
    switch (w->op) {
    case FW_GETATTR:
    case FW_READ:
        fs_answer_image(fs, w->req, w->op, w->n, w->size, w->off, rc);
        break;
    case FW_LOOKUP:
        fs_lookup_after_disc(fs, w->req, w->parent, w->name, rc);
        break;
    case FW_OPENDIR:
        fs_dir_open_after_disc(fs, w->req, w->parent, &w->fi);
        break;
    }
}

/* Answer w with rc unless someone already did. Returns 1 when this call answered. */
static int wait_answer(struct fs_wait *w, int rc)
{
    int expected = 0;
    if (!atomic_compare_exchange_strong(&w->answered, &expected, 1))
        return 0;
    /* Takes the request's lock: an interrupt callback already running has finished, and
     * none runs later. */
    fuse_req_interrupt_func(w->req, NULL, NULL);
    reply(w, rc);
    atomic_fetch_sub(&w->fs->waiting, 1);
    wait_put(w); /* the interrupt registration's reference */
    return 1;
}

/* libfuse calls this with the request's lock held: from the thread that read the
 * INTERRUPT, which holds a reference of its own on the request, so replying here is
 * safe; or from fuse_req_interrupt_func in wait_new when the INTERRUPT came first,
 * where it is not - libfuse unlocks the request after we return, and our reply would
 * have freed it. So while wait_new registers, an interrupt is only noted; wait_new
 * answers it once libfuse has let go of the request. */
static void on_interrupt(fuse_req_t req, void *data)
{
    struct fs_wait *w = data;
    int busy = REG_BUSY;
    if (atomic_compare_exchange_strong(&w->registering, &busy, REG_INTERRUPTED))
        return;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&w->answered, &expected, 1))
        return; /* being answered: that thread waits for our return to unregister */
    fuse_reply_err(req, EINTR);
    atomic_fetch_sub(&w->fs->waiting, 1);
    wait_put(w);
}

static void on_deadline(struct engine_timer *t)
{
    struct fs_wait *w = (struct fs_wait *)((char *)t - offsetof(struct fs_wait, timer));
    wait_answer(w, atomic_load(&w->fs->stopping) ? -EIO : -ETIMEDOUT);
    wait_put(w);
}

/* Answer every waiter of a completed flight with rc. */
static void answer_all(struct fs *fs, struct flight_waiter *list, int rc)
{
    while (list) {
        struct fs_wait *w = (struct fs_wait *)list;
        list = list->next;
        if (engine_timer_cancel(fs->engine, &w->timer))
            wait_put(w);
        wait_answer(w, rc);
        wait_put(w); /* the flight link's reference */
    }
}

/* A new kept request for req with a's arguments, registered for interrupts, then its
 * deadline timer set (last: a timer that fires at once finds everything in place);
 * NULL when it was shed (EAGAIN), interrupted already (EINTR) or out of memory (ENOMEM):
 * req is then answered. */
static struct fs_wait *wait_new(struct fs *fs, fuse_req_t req, const struct wait_args *a)
{
    const char *name = a->name;
    struct fs_gen *g = fs_gen_get(fs);
    uint64_t max_pending = (uint64_t)g->cfg->max_pending;
    fs_gen_unref(g);
    if (atomic_fetch_add(&fs->waiting, 1) >= max_pending) {
        atomic_fetch_sub(&fs->waiting, 1);
        uint64_t shed = atomic_fetch_add(&fs->shed, 1) + 1;
        int64_t now = mono_ms(), last = atomic_load(&fs->shed_logged_mono);
        if ((last == 0 || now - last >= SHED_LOG_MS) &&
            atomic_compare_exchange_strong(&fs->shed_logged_mono, &last, now))
            log_warn("overloaded: %llu filesystem requests waiting for fetches (api.max_pending), "
                     "answering EAGAIN (%llu so far)",
                     (unsigned long long)max_pending, (unsigned long long)shed);
        fuse_reply_err(req, EAGAIN);
        return NULL;
    }
    size_t nlen = name ? strlen(name) + 1 : 0;
    struct fs_wait *w = calloc(1, sizeof(*w) + nlen);
    if (!w) {
        atomic_fetch_sub(&fs->waiting, 1);
        fuse_reply_err(req, ENOMEM);
        return NULL;
    }
    w->fs = fs;
    w->req = req;
    w->op = a->op;
    w->n = a->n;
    w->size = a->size;
    w->off = a->off;
    w->parent = a->parent;
    if (a->fi)
        w->fi = *a->fi;
    if (name)
        memcpy(w->name, name, nlen);
    w->charge = sizeof(*w) + nlen;
    cache_charge(fs->cache, w->charge);
    atomic_init(&w->answered, 0);
    atomic_init(&w->registering, REG_BUSY);
    atomic_init(&w->refs, 3); /* creator, interrupt registration, timer */
    w->timer.fire = on_deadline;
    w->timer.when = deadline_from(fs, mono_ms()) + WAIT_MARGIN_MS;
    fuse_req_interrupt_func(req, on_interrupt, w);
    int busy = REG_BUSY;
    if (!atomic_compare_exchange_strong(&w->registering, &busy, REG_DONE)) {
        /* Interrupted before it was kept (on_interrupt only noted it): EINTR now. */
        wait_answer(w, -EINTR);
        wait_put(w); /* the timer's: never set */
        wait_put(w); /* the creator's */
        return NULL;
    }
    engine_timer_set(fs->engine, &w->timer);
    return w;
}

/* The creator is done with w: not linked to a flight (need says it is answerable now, or
 * it was answered meanwhile), answer it with rc if nobody did. */
static void wait_finish_now(struct fs *fs, struct fs_wait *w, int rc)
{
    if (engine_timer_cancel(fs->engine, &w->timer))
        wait_put(w);
    wait_answer(w, rc);
    wait_put(w);
}

/* ---- fetch jobs ----------------------------------------------------------------- */

static int mem_reserve(void *arg, size_t bytes)
{
    return cache_reserve(arg, bytes);
}

static void mem_release(void *arg, size_t bytes)
{
    cache_release(arg, bytes);
}

/* Complete v from a shared cache answer (a value or a remembered failure) and answer
 * its waiters. */
static void complete_from_shared(struct fs *fs, struct fetch_job *j, enum shared_answer ans,
                                 struct shared_found *f)
{
    struct cache_clock now = fs_clock(fs);
    int result = 0;
    struct flight_waiter *list;
    if (ans == SHARED_VALUE)
        list = cache_complete_shared(fs->cache, j->v, f->png, f->png_len, f->fetched_at, f->final,
                                     f->fresh_for_ms, &now, &result);
    else
        list = cache_complete(fs->cache, j->v, -f->err, NULL, 0, 0, &now, 1, &result);
    fs_drain_dropped(fs);
    answer_all(fs, list, result);
    if (result < 0) /* as in fetch_image: the kernel keeps nothing of a failed version */
        fs_inval_image(fs->inval, FS_IMAGE_BASE + cache_version_id(j->v));
}

/* The failures a lease holder shares with the fleet: answers of the API about the name
 * (never the breaker's fast-fails, never a local cause such as a fetch queued past D or
 * out of memory). */
static int shareable_failure(int rc, const struct api_result *res)
{
    if (res->fast_fail || res->tries == 0)
        return 0;
    switch (-rc) {
    case ENOENT:
    case EACCES:
    case EINVAL:
    case EAGAIN:
    case ETIMEDOUT:
    case EIO:
        return 1;
    }
    return 0;
}

/* The lease holder's fetch of v ended (v completed): store what the fleet may reuse,
 * release the lease, publish. */
static void finish_shared(struct fetch_job *j, struct fs_gen *g, const char *hash,
                          struct shared_lease *lease, int rc, int result,
                          const struct api_result *res)
{
    struct cache_version *v = j->v;
    const struct cfg *cfg = g->cfg;
    if (rc == 0 && result == 0 && cache_version_state(v) == CACHE_READY) {
        size_t len = 0;
        const unsigned char *png = cache_version_data(v, &len);
        int final = cache_version_final(v);
        int64_t ttl =
            final ? (int64_t)cfg->shared.final_ttl_s * 1000 : (int64_t)cfg->live_ttl_s * 1000;
        shared_finish(g->shared, hash, lease, png, len, cache_version_fetched_at(v), final, 0, ttl);
    } else if (rc < 0 && shareable_failure(rc, res)) {
        shared_finish(g->shared, hash, lease, NULL, 0, 0, 0, -rc, (int64_t)cfg->error_ttl_s * 1000);
    } else {
        shared_finish(g->shared, hash, lease, NULL, 0, 0, 0, 0, 0); /* release only */
    }
}

/* Runs in a fetch thread holding v's ticket. With a shared cache level (SPEC 13) it is
 * asked first - before the circuit breaker, while local single flight stays in front, so
 * one mount asks Redis once per image whatever its readers: a value or a remembered
 * failure completes v at once; the lease makes this mount the fleet's fetcher, which
 * then stores what it got, releases the lease and publishes; Redis trouble means going
 * on alone. */
static void fetch_image(struct fetch_job *j, int cancelled)
{
    struct fs *fs = j->fs;
    struct fs_gen *g = fs_gen_get(fs);
    struct http_mem mem = {mem_reserve, mem_release, fs->cache};
    struct api_image img = {0};
    struct api_result res = {0};
    const struct cache_key *k = cache_version_key(j->v);
    struct shared_lease *lease = NULL;
    char hash[SHARED_HASH_LEN + 1] = "";
    int rc;
    if (!cancelled && g->shared && mono_ms() < j->deadline &&
        shared_key_hash(g->cfg->endpoint, g->cfg->access_key, k, hash) == 0) {
        struct shared_found f;
        enum shared_answer ans =
            shared_get(g->shared, hash, j->deadline, (size_t)g->cfg->max_image_bytes, &mem, &f);
        if (ans == SHARED_VALUE || ans == SHARED_FAILED) {
            fs_gen_unref(g);
            complete_from_shared(fs, j, ans, &f);
            return;
        }
        lease = f.lease; /* SHARED_LEASE; NULL with SHARED_OFF: go on alone */
    }
    if (cancelled) {
        rc = -EIO;
        res.fast_fail = 1; /* nothing was asked: nothing to remember */
    } else if (mono_ms() >= j->deadline) {
        rc = -ETIMEDOUT; /* queued (or waited for the fleet) past D: no request */
    } else {
        uint64_t clock_gen = api_clock_generation(g->api);
        rc = api_fetch_image(g->api, k->dash_id, k->widget_id, k->start_ms, k->end_ms, k->res,
                             j->deadline, &mem, &img, &res);
        /* SPEC 6: a change of the gateway offset forgets remembered EACCES errors (the
         * wrong clock may have caused them). This fetch's own result is recorded after. */
        if (api_clock_generation(g->api) != clock_gen)
            cache_forget_errors(fs->cache, EACCES);
    }
    struct cache_clock now = fs_clock(fs);
    int result = 0;
    struct flight_waiter *list = cache_complete(fs->cache, j->v, rc, img.data, img.len,
                                                img.signed_at_ms, &now, !res.fast_fail, &result);
    fs_drain_dropped(fs);
    answer_all(fs, list, result);
    /* A failed version has nothing the kernel should keep: have it forget the names at
     * once, so a storm of failing names does not pile up inodes until eviction (the
     * failure stays remembered here; the next lookup finds it). */
    if (result < 0)
        fs_inval_image(fs->inval, FS_IMAGE_BASE + cache_version_id(j->v));
    if (lease)
        finish_shared(j, g, hash, lease, rc, result, &res);
    fs_gen_unref(g);
}

static void fetch_disc(struct fetch_job *j, int cancelled)
{
    struct fs *fs = j->fs;
    const char *dash_id = j->dash_id[0] ? j->dash_id : NULL;
    struct fs_gen *g = fs_gen_get(fs);
    struct api_item *items = NULL;
    struct api_result res = {0};
    size_t n = 0;
    int rc;
    if (cancelled) {
        rc = -EIO;
        res.fast_fail = 1; /* nothing was asked: nothing to remember */
    } else if (mono_ms() >= j->deadline) {
        rc = -ETIMEDOUT;
    } else if (dash_id) {
        rc = api_list_widgets(g->api, dash_id, j->deadline, &items, &n, &res);
    } else {
        rc = api_list_dashboards(g->api, j->deadline, &items, &n, &res);
    }
    /* As for images: breaker failures are not remembered failures (SPEC 6), so the list
     * is asked again as soon as the breaker closes. */
    int64_t remember = res.fast_fail ? 0 : (int64_t)g->cfg->error_ttl_s * 1000;
    fs_gen_unref(g);
    int result = 0, changed = 0;
    struct flight_waiter *list = disc_complete(fs->st.disc, dash_id, j->epoch, rc, items, n,
                                               mono_ms(), remember, &result, &changed);
    if (changed)
        fs_tree_rebuild(fs);
    answer_all(fs, list, result);
}

static void job_run(struct engine_job *job, int cancelled)
{
    struct fetch_job *j = (struct fetch_job *)job;
    if (j->v) {
        fetch_image(j, cancelled);
        cache_version_unref(j->v);
    } else {
        fetch_disc(j, cancelled);
    }
    free(j);
}

/* Queue a fetch of v (a new reference is taken) or of dash_id's list (disc). The caller
 * holds the ticket; a job that cannot be made completes the flight with ENOMEM. */
static void submit(struct fs *fs, struct cache_version *v, int disc, const char *dash_id,
                   uint64_t epoch)
{
    size_t idlen = dash_id ? strlen(dash_id) + 1 : 1;
    struct fetch_job *j = calloc(1, sizeof(*j) + idlen);
    if (!j) {
        int result = 0, changed = 0;
        struct flight_waiter *list;
        if (v) {
            struct cache_clock now = fs_clock(fs);
            list = cache_complete(fs->cache, v, -ENOMEM, NULL, 0, 0, &now, 0, &result);
        } else {
            list = disc_complete(fs->st.disc, dash_id, epoch, -ENOMEM, NULL, 0, mono_ms(), 0,
                                 &result, &changed);
        }
        answer_all(fs, list, result);
        return;
    }
    j->job.run = job_run;
    j->fs = fs;
    j->deadline = deadline_from(fs, mono_ms());
    if (v) {
        cache_version_ref(v);
        j->v = v;
    }
    j->disc = disc;
    j->epoch = epoch;
    if (dash_id)
        memcpy(j->dash_id, dash_id, idlen);
    engine_submit(fs->engine, &j->job);
}

/* ---- the contract --------------------------------------------------------------- */

void fs_wait_image(struct fs *fs, fuse_req_t req, enum fs_wait_op op, struct fs_inode *n,
                   size_t size, off_t off)
{
    struct fs_wait *w =
        wait_new(fs, req, &(struct wait_args){.op = op, .n = n, .size = size, .off = off});
    if (!w)
        return;
    if (atomic_load(&w->answered)) { /* interrupted (or timed out) before it was kept */
        wait_finish_now(fs, w, -EINTR);
        return;
    }
    struct cache_clock now = fs_clock(fs);
    int err = 0;
    atomic_fetch_add(&w->refs, 1); /* the flight link's, if it joins */
    switch (cache_need(fs->cache, n->v, &now, &w->link, &err)) {
    case CACHE_HAVE:
        wait_put(w);
        wait_finish_now(fs, w, 0);
        return;
    case CACHE_REMEMBERED:
        wait_put(w);
        wait_finish_now(fs, w, -err);
        return;
    case CACHE_FETCH:
        submit(fs, n->v, 0, NULL, 0);
        break;
    case CACHE_WAIT:
        break;
    }
    wait_put(w); /* the creator's; the flight and the timer hold it now */
}

int fs_disc_check(struct fs *fs, const char *dash_id)
{
    struct fs_gen *g = fs_gen_get(fs);
    int err = 0;
    uint64_t epoch = 0;
    enum disc_need need = disc_need(fs->st.disc, g->cfg, dash_id, mono_ms(), NULL, &epoch, &err);
    fs_gen_unref(g);
    switch (need) {
    case DISC_OK:
        return 0;
    case DISC_FAILED:
        return -err;
    case DISC_FETCH:
        /* This call took the ticket without a waiter: start the refresh, and the caller
         * keeps its request with fs_wait_disc, which joins it. */
        submit(fs, NULL, 1, dash_id, epoch);
        return 1;
    case DISC_WAIT:
        break;
    }
    return 1;
}

void fs_wait_disc(struct fs *fs, fuse_req_t req, enum fs_wait_op op, uint64_t parent,
                  const char *name, struct fuse_file_info *fi, const char *dash_id)
{
    struct fs_wait *w =
        wait_new(fs, req, &(struct wait_args){.op = op, .parent = parent, .fi = fi, .name = name});
    if (!w)
        return;
    if (atomic_load(&w->answered)) { /* interrupted (or timed out) before it was kept */
        wait_finish_now(fs, w, -EINTR);
        return;
    }
    struct fs_gen *g = fs_gen_get(fs);
    int err = 0;
    uint64_t epoch = 0;
    atomic_fetch_add(&w->refs, 1);
    enum disc_need need =
        disc_need(fs->st.disc, g->cfg, dash_id, mono_ms(), &w->link, &epoch, &err);
    fs_gen_unref(g);
    switch (need) {
    case DISC_OK:
        wait_put(w);
        wait_finish_now(fs, w, 0);
        return;
    case DISC_FAILED:
        wait_put(w);
        wait_finish_now(fs, w, -err);
        return;
    case DISC_FETCH:
        submit(fs, NULL, 1, dash_id, epoch);
        break;
    case DISC_WAIT:
        break;
    }
    wait_put(w);
}

int fs_fetch_ahead(struct fs *fs, struct cache_version *v)
{
    struct cache_clock now = fs_clock(fs);
    int err = 0;
    if (cache_need(fs->cache, v, &now, NULL, &err) != CACHE_FETCH)
        return 0;
    atomic_fetch_add(&fs->readahead, 1);
    submit(fs, v, 0, NULL, 0);
    return 1;
}

void fs_drain_dropped(struct fs *fs)
{
    struct cache_version *v = cache_take_dropped(fs->cache);
    while (v) {
        struct cache_version *next = cache_dropped_next(v);
        uint64_t ino = FS_IMAGE_BASE + cache_version_id(v);
        fs_ino_unbind(fs->ino, ino);
        fs_inval_image(fs->inval, ino);
        cache_version_unref(v);
        v = next;
    }
}

/* ---- housekeeping --------------------------------------------------------------- */

static void housekeeping(struct engine_timer *t)
{
    struct fs *fs = (struct fs *)((char *)t - offsetof(struct fs, housekeeping));
    if (atomic_load(&fs->stopping))
        return;
    cache_sweep(fs->cache, mono_ms());
    fs_ra_sweep(fs, mono_ms());
    fs_drain_dropped(fs);
    /* Records went away since the last tick (keys swept or evicted, inodes forgotten by
     * the kernel): give their heap back to the system (SPEC 7). */
    struct cache_stats cs;
    cache_get_stats(fs->cache, &cs);
    uint64_t held = cs.bytes + cs.pinned_bytes + fs_ino_pinned_bytes(fs->ino);
    if (held < fs->trim_mark || fs_ino_images(fs->ino) < fs->trim_inodes)
        malloc_trim(0);
    fs->trim_mark = held;
    fs->trim_inodes = fs_ino_images(fs->ino);
    int cpus = cpu_share_cpus(fs->cpu);
    int rc = cpu_share_tick(fs->cpu, mono_ms(), cpu_used_ns());
    if (rc != 0)
        log_warn("threads spread over every CPU for good: the system refused a CPU mask (%s)",
                 strerror(-rc));
    else if (cpu_share_cpus(fs->cpu) != cpus)
        log_debug("threads now share %d CPU(s)", cpu_share_cpus(fs->cpu));
    t->when = mono_ms() + HOUSEKEEPING_MS;
    engine_timer_set(fs->engine, t);
}

void fs_wait_start(struct fs *fs)
{
    fs->housekeeping.fire = housekeeping;
    fs->housekeeping.when = mono_ms() + HOUSEKEEPING_MS;
    engine_timer_set(fs->engine, &fs->housekeeping);
}

void fs_wait_stop(struct fs *fs)
{
    atomic_store(&fs->stopping, 1);
    /* Fires every deadline timer now (EIO), runs queued jobs cancelled, and waits for
     * the running fetches. */
    engine_stop(fs->engine);
}
