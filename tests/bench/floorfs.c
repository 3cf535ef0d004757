/* floorfs - the physical floor of a warm read through FUSE, for make bench (SPEC 11,
 * "the next bar", warm read).
 *
 *   floorfs MOUNTPOINT PNGFILE
 *
 * A minimal filesystem on the libfuse 3 low-level API, mounted read-only with
 * default_permissions, whose tree has the depth of insightfs's: /web/cpu/f0 .. f49,
 * each file holding the bytes of PNGFILE (read once at start, kept in memory). It
 * answers OPEN and FLUSH with ENOSYS and gives every entry and attribute a timeout of a
 * day, so once a file has been read the kernel serves open, read and close alone (it
 * opens with FOPEN_KEEP_CACHE and fh 0 and sends no RELEASE): the fastest a FUSE
 * filesystem can be at that depth, which insightfs's warm read is compared with.
 *
 * Invariants: inode numbers are fixed (1 root, 2 web, 3 cpu, 4 + N for fN); nothing
 * changes after start, so there is no locking, and the single-threaded session loop
 * is enough. Runs in the foreground until unmounted or signalled; exit 0 then, 1 on a
 * failure to start, 2 on bad usage.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FLOOR_FILES 50
#define FLOOR_INO_ROOT 1
#define FLOOR_INO_WEB 2
#define FLOOR_INO_CPU 3
#define FLOOR_INO_FILE0 4
#define FLOOR_TIMEOUT_S 86400.0
#define FLOOR_MAX_BYTES (16 << 20)

struct floor {
    unsigned char *bytes; /* the PNG every file holds; immutable after start */
    size_t len;
    uid_t uid;
    gid_t gid;
};

/* The attributes of inode ino into st; 0, or -ENOENT for an unknown inode. */
static int floor_stat(const struct floor *fl, fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_uid = fl->uid;
    st->st_gid = fl->gid;
    st->st_blksize = 4096;
    if (ino == FLOOR_INO_ROOT || ino == FLOOR_INO_WEB) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 3;
    } else if (ino == FLOOR_INO_CPU) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else if (ino >= FLOOR_INO_FILE0 && ino < FLOOR_INO_FILE0 + FLOOR_FILES) {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = (off_t)fl->len;
        st->st_blocks = (blkcnt_t)((fl->len + 511) / 512);
    } else {
        return -ENOENT;
    }
    return 0;
}

/* The inode of name in parent; 0 when there is none. */
static fuse_ino_t floor_child(fuse_ino_t parent, const char *name)
{
    if (parent == FLOOR_INO_ROOT && strcmp(name, "web") == 0)
        return FLOOR_INO_WEB;
    if (parent == FLOOR_INO_WEB && strcmp(name, "cpu") == 0)
        return FLOOR_INO_CPU;
    if (parent != FLOOR_INO_CPU || name[0] != 'f' || name[1] < '0' || name[1] > '9')
        return 0;
    char *end;
    long n = strtol(name + 1, &end, 10);
    if (*end != '\0' || n >= FLOOR_FILES || (name[1] == '0' && name[2] != '\0'))
        return 0;
    return (fuse_ino_t)(FLOOR_INO_FILE0 + n);
}

static void floor_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    const struct floor *fl = fuse_req_userdata(req);
    struct fuse_entry_param e;
    memset(&e, 0, sizeof(e));
    e.ino = floor_child(parent, name);
    if (e.ino == 0 || floor_stat(fl, e.ino, &e.attr) < 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    e.attr_timeout = FLOOR_TIMEOUT_S;
    e.entry_timeout = FLOOR_TIMEOUT_S;
    fuse_reply_entry(req, &e);
}

static void floor_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    const struct floor *fl = fuse_req_userdata(req);
    struct stat st;
    (void)fi;
    if (floor_stat(fl, ino, &st) < 0) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    fuse_reply_attr(req, &st, FLOOR_TIMEOUT_S);
}

/* ENOSYS on purpose: the kernel then remembers that this filesystem has no OPEN (and
 * no FLUSH) and serves every later open and close without asking. */
static void floor_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, ENOSYS);
}

static void floor_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, ENOSYS);
}

static void floor_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    const struct floor *fl = fuse_req_userdata(req);
    (void)fi;
    if (ino < FLOOR_INO_FILE0 || ino >= FLOOR_INO_FILE0 + FLOOR_FILES) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if (off < 0 || (size_t)off >= fl->len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = fl->len - (size_t)off;
    fuse_reply_buf(req, (const char *)fl->bytes + off, n < size ? n : size);
}

/* Add one entry to buf (of size cap, used bytes *used) if it fits and lies at or after
 * off; its position is idx + 1 (the next entry's offset). */
static void floor_dirent(fuse_req_t req, char *buf, size_t cap, size_t *used, off_t off, off_t idx,
                         const char *name, fuse_ino_t ino, mode_t mode)
{
    if (idx < off)
        return;
    struct stat st;
    memset(&st, 0, sizeof(st));
    st.st_ino = ino;
    st.st_mode = mode;
    size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
    if (*used + need > cap)
        return;
    fuse_add_direntry(req, buf + *used, cap - *used, name, &st, idx + 1);
    *used += need;
}

static void floor_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    (void)fi;
    if (ino != FLOOR_INO_ROOT && ino != FLOOR_INO_WEB && ino != FLOOR_INO_CPU) {
        fuse_reply_err(req, ENOTDIR);
        return;
    }
    char *buf = malloc(size);
    if (buf == NULL) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    floor_dirent(req, buf, size, &used, off, 0, ".", ino, S_IFDIR);
    floor_dirent(req, buf, size, &used, off, 1, "..", ino, S_IFDIR);
    if (ino == FLOOR_INO_ROOT) {
        floor_dirent(req, buf, size, &used, off, 2, "web", FLOOR_INO_WEB, S_IFDIR);
    } else if (ino == FLOOR_INO_WEB) {
        floor_dirent(req, buf, size, &used, off, 2, "cpu", FLOOR_INO_CPU, S_IFDIR);
    } else {
        for (int i = 0; i < FLOOR_FILES; i++) {
            char name[16];
            snprintf(name, sizeof(name), "f%d", i);
            floor_dirent(req, buf, size, &used, off, 2 + i, name, (fuse_ino_t)(FLOOR_INO_FILE0 + i),
                         S_IFREG);
        }
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static const struct fuse_lowlevel_ops floor_ops = {
    .lookup = floor_lookup,
    .getattr = floor_getattr,
    .open = floor_open,
    .flush = floor_flush,
    .read = floor_read,
    .readdir = floor_readdir,
};

/* Read path whole into fl (at most FLOOR_MAX_BYTES); 0 or a negative errno. */
static int floor_load(struct floor *fl, const char *path)
{
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    fl->bytes = malloc(FLOOR_MAX_BYTES);
    if (fl->bytes == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    fl->len = 0;
    for (;;) {
        ssize_t n = read(fd, fl->bytes + fl->len, FLOOR_MAX_BYTES - fl->len);
        if (n < 0) {
            rc = -errno;
            goto out;
        }
        if (n == 0)
            break;
        fl->len += (size_t)n;
        if (fl->len == FLOOR_MAX_BYTES) {
            rc = -EFBIG;
            goto out;
        }
    }
out:
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: floorfs MOUNTPOINT PNGFILE\n");
        return 2;
    }
    int status = 1;
    struct floor fl = {.uid = geteuid(), .gid = getegid()};
    struct fuse_session *se = NULL;
    char *fargv[] = {argv[0], "-o", "ro,default_permissions,fsname=floorfs,subtype=floorfs", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
    int rc = floor_load(&fl, argv[2]);
    if (rc < 0) {
        fprintf(stderr, "floorfs: %s: %s\n", argv[2], strerror(-rc));
        goto out;
    }
    se = fuse_session_new(&args, &floor_ops, sizeof(floor_ops), &fl);
    if (se == NULL)
        goto out;
    if (fuse_set_signal_handlers(se) != 0)
        goto out_session;
    if (fuse_session_mount(se, argv[1]) != 0)
        goto out_signals;
    fuse_session_loop(se);
    status = 0;
    fuse_session_unmount(se);
out_signals:
    fuse_remove_signal_handlers(se);
out_session:
    fuse_session_destroy(se);
out:
    fuse_opt_free_args(&args);
    free(fl.bytes);
    return status;
}
