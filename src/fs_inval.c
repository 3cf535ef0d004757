/* fs_inval - the invalidation thread: the one thread that tells the kernel to forget
 * entries (fuse_lowlevel_notify_inval_entry), and does nothing else (SPEC 12.2, 12.4).
 *
 * Why a thread of its own: the notify must not come from a thread serving a FUSE request,
 * and the kernel holds a directory's lock while a LOOKUP in it is outstanding, which the
 * notify also takes; a thread that must answer kept LOOKUPs (a fetch thread) could stall
 * behind it. So eviction (an image version the cache dropped while the kernel holds its
 * inode), the idle sweep and a reload (names that moved) queue work here.
 *
 * Queue: a FIFO of items, each an image inode (its remembered names are looked up when
 * the item is served, so a name remembered meanwhile is included) or a (parent, name).
 * Items are small and each stands for a record the cache already dropped, so the queue
 * is bounded by what the cache could hold.
 *
 * Stop: once the session loop has ended nobody reads /dev/fuse, and a LOOKUP the kernel
 * sends then is never answered while it holds its directory's lock, which a notify needs:
 * a notify then could wait forever, and with it teardown (even SIGKILL cannot end a
 * thread waiting there). So fs_inval_close, called as soon as the loop returns, drops
 * what is queued and what comes after; the unmount makes the kernel forget every entry.
 * A notify already under way may wait for a LOOKUP kept by fs_wait (answered when
 * teardown answers every kept request) or, in a window of microseconds, for one the loop
 * never read. fs_inval_join waits for the thread with a deadline and says when it is
 * stuck; ending that wait (aborting the connection) is the mount's business (fs_mnt.c).
 *
 * Test hook (fs_inval_start's probe): when the thread stops, it stats a name inside the
 * mount that nobody looked up, which sends a LOOKUP that the ended loop never reads -
 * exactly the stuck notify's situation, so the abort path runs against a real kernel.
 *
 * Locking: lock guards the queue and the stop flag; it is never held across a notify.
 */
#define FUSE_USE_VERSION 312

#include "fs_int.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "insightfs/log.h"
#include "insightfs/slab.h"

struct inval_item {
    struct inval_item *next;
    uint64_t ino;    /* an image inode, or 0 */
    uint64_t parent; /* with name */
    char name[];
};

struct fs_inval {
    struct fs_ino *ino;
    struct slab_pool *pool; /* items (slab.h): a burst of evictions goes back at once */
    struct fuse_session *se;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct inval_item *head, *tail; /* protected by lock */
    int stop;                       /* protected by lock */
    pthread_t thread;
    int started;
    char *probe; /* test hook: a path inside the mount to stat when stopping, or NULL */
};

struct fs_inval *fs_inval_new(struct fs_ino *ino)
{
    struct fs_inval *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->ino = ino;
    q->pool = slab_pool_new();
    if (!q->pool) {
        free(q);
        return NULL;
    }
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->cond, NULL);
    return q;
}

static void push(struct fs_inval *q, struct inval_item *it)
{
    pthread_mutex_lock(&q->lock);
    if (q->stop) { /* the session loop has ended: see "Stop" above */
        pthread_mutex_unlock(&q->lock);
        slab_free(it);
        return;
    }
    it->next = NULL;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

void fs_inval_image(struct fs_inval *q, uint64_t ino)
{
    struct inval_item *it = slab_alloc(q->pool, sizeof(*it));
    if (!it)
        return; /* the version stays pinned until the kernel forgets it by itself */
    it->ino = ino;
    push(q, it);
}

void fs_inval_name(struct fs_inval *q, uint64_t parent, const char *name)
{
    size_t n = strlen(name);
    struct inval_item *it = slab_alloc(q->pool, sizeof(*it) + n + 1);
    if (!it)
        return;
    it->parent = parent;
    memcpy(it->name, name, n + 1);
    push(q, it);
}

static void notify(struct fs_inval *q, uint64_t parent, const char *name)
{
    /* -ENOENT: the kernel did not know (or had already forgotten) the name. */
    (void)fuse_lowlevel_notify_inval_entry(q->se, parent, name, strlen(name));
}

static void serve(struct fs_inval *q, struct inval_item *it)
{
    if (!it->ino) {
        notify(q, it->parent, it->name);
        return;
    }
    struct fs_name *names;
    size_t n = fs_ino_names(q->ino, it->ino, SIZE_MAX, &names);
    for (size_t i = 0; i < n; i++)
        notify(q, names[i].parent, names[i].name);
    free(names);
}

static void *inval_main(void *arg)
{
    struct fs_inval *q = arg;
    pthread_mutex_lock(&q->lock);
    for (;;) {
        if (q->stop)
            break;
        struct inval_item *it = q->head;
        if (!it) {
            pthread_cond_wait(&q->cond, &q->lock);
            continue;
        }
        q->head = it->next;
        if (!q->head)
            q->tail = NULL;
        pthread_mutex_unlock(&q->lock);
        serve(q, it);
        slab_free(it);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    if (q->probe) { /* test hook: wait on the mount as a stuck notify would */
        struct stat st;
        int rc = stat(q->probe, &st);
        log_debug("stuck-notify probe ended: %s", rc == 0 ? "found" : strerror(errno));
    }
    return NULL;
}

int fs_inval_start(struct fs_inval *q, struct fuse_session *se, const char *probe)
{
    sigset_t all, old;
    q->se = se;
    if (probe && !(q->probe = strdup(probe)))
        return -ENOMEM;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&q->thread, NULL, inval_main, q);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    q->started = rc == 0;
    return -rc;
}

void fs_inval_close(struct fs_inval *q)
{
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    struct inval_item *dropped = q->head;
    q->head = q->tail = NULL;
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
    while (dropped) {
        struct inval_item *it = dropped;
        dropped = it->next;
        slab_free(it);
    }
}

int fs_inval_join(struct fs_inval *q, int within_ms)
{
    fs_inval_close(q);
    if (!q->started)
        return 0;
    if (within_ms >= 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until); /* pthread_timedjoin_np's clock */
        until.tv_sec += within_ms / 1000;
        until.tv_nsec += (long)(within_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        if (pthread_timedjoin_np(q->thread, NULL, &until) != 0)
            return -ETIMEDOUT;
    } else {
        pthread_join(q->thread, NULL);
    }
    q->started = 0;
    return 0;
}

void fs_inval_free(struct fs_inval *q)
{
    if (!q)
        return;
    while (q->head) {
        struct inval_item *it = q->head;
        q->head = it->next;
        slab_free(it);
    }
    slab_pool_release(q->pool);
    free(q->probe);
    pthread_cond_destroy(&q->cond);
    pthread_mutex_destroy(&q->lock);
    free(q);
}
