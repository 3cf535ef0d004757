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
 * never read: fs_inval_stop joins after the kept requests are answered, and if the thread
 * is still in its notify INVAL_STUCK_MS later, aborts the connection, which ends the
 * LOOKUPs that hold the lock: "1" written to the connection's `abort` file in fusectl,
 * which belongs to the user who mounted. The connection's number is the mount's device,
 * read from /proc/self/mountinfo right after mounting (fs_inval_conn_at; a stat of the
 * mount could wait on FUSE), so no other mount stacked on the same path is hit. Without
 * fusectl or the number: umount2 with MNT_FORCE, as root (the kernel aborts before it
 * finds the mount busy, so EBUSY still means aborted).
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
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "insightfs/log.h"
#include "insightfs/slab.h"

#define INVAL_STUCK_MS 1000 /* a notify this long after teardown answered everything is stuck */

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

/* One mount point field of mountinfo (octal escapes: \040 space, \011 tab, \012
 * newline, \134 backslash) compared with path. */
static int field_is(const char *f, size_t n, const char *path)
{
    size_t i = 0;
    while (i < n) {
        int c = (unsigned char)f[i];
        if (c == '\\' && i + 3 < n && f[i + 1] >= '0' && f[i + 1] <= '3' && f[i + 2] >= '0' &&
            f[i + 2] <= '7' && f[i + 3] >= '0' && f[i + 3] <= '7') {
            c = (f[i + 1] - '0') * 64 + (f[i + 2] - '0') * 8 + (f[i + 3] - '0');
            i += 4;
        } else {
            i++;
        }
        if (*path == '\0' || *path++ != (char)c) /* a \\000 escape must not match the end */
            return 0;
    }
    return *path == '\0';
}

int fs_inval_conn_of(const char *mountinfo, const char *mountpoint, unsigned long *conn)
{
    int found = 0;
    unsigned long c = 0;
    for (const char *line = mountinfo; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        /* ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE ... */
        const char *f[5];
        size_t fl[5];
        const char *p = line, *stop = line + len;
        int k = 0;
        while (k < 5 && p < stop) {
            const char *sp = memchr(p, ' ', (size_t)(stop - p));
            f[k] = p;
            fl[k] = sp ? (size_t)(sp - p) : (size_t)(stop - p);
            k++;
            p = sp ? sp + 1 : stop;
        }
        const char *sep = NULL;
        for (const char *s = p; k == 5 && s + 2 < stop; s++)
            if (s[0] == '-' && s[1] == ' ' && s[-1] == ' ') {
                sep = s + 2;
                break;
            }
        unsigned major, minor;
        char tail;
        if (k == 5 && field_is(f[4], fl[4], mountpoint)) {
            /* A later line for the point is a mount on top of the earlier ones: ours only
             * if it is a FUSE mount whose device reads right. */
            found = 0;
            char dev[32];
            if (sep && (size_t)(stop - sep) >= 5 && memcmp(sep, "fuse", 4) == 0 &&
                (sep[4] == ' ' || sep[4] == '.') && fl[2] < sizeof(dev)) {
                memcpy(dev, f[2], fl[2]);
                dev[fl[2]] = '\0';
                if (sscanf(dev, "%u:%u%c", &major, &minor, &tail) == 2) {
                    /* fusectl names a connection by the kernel's dev_t of its mount */
                    c = ((unsigned long)major << 20) | minor;
                    found = 1;
                }
            }
        }
        line = end ? end + 1 : NULL;
    }
    if (!found)
        return -ENOENT;
    *conn = c;
    return 0;
}

/* The text of /proc/self/mountinfo (NUL-terminated, malloc'd) or NULL with *rc set. */
static char *read_mountinfo(int *rc)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) {
        *rc = -errno;
        return NULL;
    }
    size_t cap = 0, len = 0, n;
    char *text = NULL, buf[4096];
    *rc = 0;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (len + n + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 16384;
            while (ncap < len + n + 1)
                ncap *= 2;
            char *t = realloc(text, ncap);
            if (!t) {
                *rc = -ENOMEM;
                break;
            }
            text = t;
            cap = ncap;
        }
        memcpy(text + len, buf, n);
        len += n;
    }
    if (*rc == 0 && ferror(f))
        *rc = -EIO;
    fclose(f);
    if (*rc == 0 && !text)
        *rc = -ENOENT;
    if (*rc != 0) {
        free(text);
        return NULL;
    }
    text[len] = '\0';
    return text;
}

int fs_inval_conn_at(const char *real, unsigned long *conn)
{
    int rc;
    char *text = read_mountinfo(&rc);
    if (!text)
        return rc;
    rc = fs_inval_conn_of(text, real, conn);
    free(text);
    return rc;
}

/* Write "1" to fusectl's abort file of connection conn. 0 or a negative errno. */
static int abort_by_fusectl(unsigned long conn)
{
    char path[64];
    snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%lu/abort", conn);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = write(fd, "1", 1) == 1 ? 0 : -errno;
    close(fd);
    return rc;
}

/* Abort our connection: through fusectl by its number when known (no path involved, so
 * no other mount can be hit), else umount2 of the path with MNT_FORCE (root only), and
 * then only if the mount on top there is ours as far as the number tells. */
static enum fs_abort abort_conn(const struct fs_mnt *m)
{
    int rc = -ENOENT;
    if (m->known && (rc = abort_by_fusectl(m->conn)) == 0)
        return FS_ABORTED;
    if (!m->real) {
        log_error("cannot abort the FUSE connection (its mount point's path is unknown): "
                  "waiting for the kernel");
        return FS_NOT_ABORTED;
    }
    unsigned long top;
    if (m->known && (fs_inval_conn_at(m->real, &top) != 0 || top != m->conn)) {
        log_error("cannot abort the FUSE connection (/sys/fs/fuse/connections/%lu/abort: %s; "
                  "is fusectl mounted there?), and %s has another mount on top: waiting for "
                  "the kernel",
                  m->conn, strerror(-rc), m->real);
        return FS_NOT_ABORTED;
    }
    if (umount2(m->real, MNT_FORCE) == 0)
        return FS_ABORTED_UNMOUNTED;
    int e = errno;
    if (e == EBUSY)
        return FS_ABORTED; /* the kernel aborts before it finds the mount busy */
    if (m->known)
        log_error("cannot abort the FUSE connection of %s (/sys/fs/fuse/connections/%lu/abort: "
                  "%s; is fusectl mounted there? umount2: %s): waiting for the kernel",
                  m->real, m->conn, strerror(-rc), strerror(e));
    else
        log_error("cannot abort the FUSE connection of %s (its number is unknown; umount2: "
                  "%s): waiting for the kernel",
                  m->real, strerror(e));
    return FS_NOT_ABORTED;
}

enum fs_abort fs_inval_stop(struct fs_inval *q, const struct fs_mnt *m)
{
    enum fs_abort aborted = FS_NOT_ABORTED;
    fs_inval_close(q);
    if (!q->started)
        return aborted;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until); /* pthread_timedjoin_np's clock */
    until.tv_sec += INVAL_STUCK_MS / 1000;
    if (pthread_timedjoin_np(q->thread, NULL, &until) != 0) {
        log_warn("a notification waits for a request nobody will answer: aborting the FUSE "
                 "connection");
        aborted = abort_conn(m);
        pthread_join(q->thread, NULL);
    }
    q->started = 0;
    return aborted;
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
