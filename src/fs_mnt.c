/* fs_mnt - our mount in the system's mount table, and ending it when teardown is stuck.
 *
 * Which mount is ours: the mount point's real path, taken before mounting (after, a
 * stat would wait on us), and the FUSE connection's number, the mount's device read
 * from /proc/self/mountinfo right after mounting while the mount on top at that path is
 * surely ours. Reading mountinfo touches no file of any mount, so nothing here can wait
 * on FUSE. Everything done later by path first checks that the mount on top there is
 * still ours as far as that number tells: another mount (FUSE or not) may have been
 * stacked on the same path since.
 *
 * Why abort: at teardown a notify of the invalidation thread can wait for a LOOKUP the
 * ended session loop will never read (fs_inval.c); only aborting the connection ends it.
 * The abort writes "1" to fusectl's /sys/fs/fuse/connections/<N>/abort, which belongs to
 * the user who mounted, so a user's daemon (mounted through fusermount3) can do it too;
 * it goes by number, so no other mount is hit. Without fusectl or the number: umount2
 * with MNT_FORCE, root only (the kernel aborts before it finds the mount busy, so EBUSY
 * still means aborted).
 *
 * After an abort libfuse's unmount does nothing (the session fd polls POLLERR), which
 * would leave a dead mount behind ("Transport endpoint is not connected"), so
 * fs_mnt_detach detaches it as libfuse does otherwise: umount2 with MNT_DETACH as root,
 * else fusermount3 -u -z with an empty environment.
 *
 * Locking: none; used by the main thread only (mount and teardown).
 */
#include "fs_int.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "insightfs/log.h"

void fs_mnt_locate(struct fs_mnt *m, const char *mountpoint)
{
    m->real = realpath(mountpoint, NULL);
    m->real_errno = m->real ? 0 : errno;
    m->known = 0;
}

void fs_mnt_identify(struct fs_mnt *m, const char *mountpoint)
{
    int rc = m->real ? fs_mnt_conn_at(m->real, &m->conn) : -m->real_errno;
    m->known = rc == 0;
    if (!m->known)
        log_warn("%s: cannot tell this mount's FUSE connection (%s: %s): a teardown stuck on "
                 "it could be aborted by root only",
                 mountpoint, m->real ? "/proc/self/mountinfo" : "realpath", strerror(-rc));
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

int fs_mnt_conn_of(const char *mountinfo, const char *mountpoint, unsigned long *conn)
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

int fs_mnt_conn_at(const char *real, unsigned long *conn)
{
    int rc;
    char *text = read_mountinfo(&rc);
    if (!text)
        return rc;
    rc = fs_mnt_conn_of(text, real, conn);
    free(text);
    return rc;
}

/* Whether the mount on top at m->real is still ours (m->known): 0 yes, -ENOENT no
 * (another mount was stacked there, or ours is gone), another negative errno when
 * mountinfo cannot be read. */
static int top_is_ours(const struct fs_mnt *m)
{
    unsigned long top;
    int rc = fs_mnt_conn_at(m->real, &top);
    return rc == 0 && top != m->conn ? -ENOENT : rc;
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

enum fs_abort fs_mnt_abort(const struct fs_mnt *m)
{
    int rc = -ENOENT;
    if (m->known && (rc = abort_by_fusectl(m->conn)) == 0)
        return FS_ABORTED;
    if (!m->real) {
        log_error("cannot abort the FUSE connection (its mount point's path is unknown): "
                  "waiting for the kernel");
        return FS_NOT_ABORTED;
    }
    if (m->known && top_is_ours(m) != 0) {
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

void fs_mnt_detach(const struct fs_mnt *m)
{
    if (!m->real) {
        log_error("cannot unmount the aborted mount: its mount point's path is unknown");
        return;
    }
    /* An unknown number (mountinfo unreadable at mount time): the path alone decides. */
    int rc = m->known ? top_is_ours(m) : 0;
    if (rc == -ENOENT) {
        log_error("the aborted mount at %s is not the mount on top there any more: left as "
                  "it is",
                  m->real);
        return;
    }
    if (rc != 0) {
        log_error("cannot unmount the aborted mount at %s (/proc/self/mountinfo: %s)", m->real,
                  strerror(-rc));
        return;
    }
    if (geteuid() == 0) {
        if (umount2(m->real, MNT_DETACH) != 0)
            log_error("cannot unmount %s: %s", m->real, strerror(errno));
        return;
    }
    char *argv[] = {"fusermount3", "-u", "-q", "-z", "--", m->real, NULL};
    char *envp[] = {NULL};
    pid_t pid;
    rc = posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, envp);
    int st = 0;
    if (rc == 0) {
        pid_t r;
        while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
            ; /* libfuse's signal handlers are still installed */
        if (r < 0)
            rc = errno;
    }
    if (rc != 0)
        log_error("cannot unmount %s: fusermount3: %s", m->real, strerror(rc));
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        log_error("cannot unmount %s: fusermount3 failed", m->real);
}

void fs_mnt_release(struct fs_mnt *m)
{
    free(m->real);
    m->real = NULL;
    m->known = 0;
}
