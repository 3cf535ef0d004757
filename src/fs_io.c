/* fs_io - the daemon's reads and writes of /dev/fuse, installed with
 * fuse_session_custom_io, for one purpose: to send FUSE_PARALLEL_DIROPS in the INIT reply.
 *
 * libfuse 3.14's do_init records the kernel's offer of FUSE_PARALLEL_DIROPS and turns it
 * on in conn->want by default, but never copies it into the flags of its reply (SPEC
 * 12.3). The kernel then serializes every LOOKUP within a directory behind one mutex:
 * 32 readers opening 32 names of one widget wait for each other's LOOKUP round trips
 * (~0.2 ms each here), a kept LOOKUP of / (waiting for the dashboards' discovery, up to
 * its deadline) holds up `cat /.insightfs/stats`, and every name looked up behind it.
 * With the flag, the kernel takes the directory's lock shared and sends LOOKUPs of
 * different names at once (it still merges lookups of one name). Every handler already
 * serves LOOKUPs of different directories at once; nothing here assumed one directory's
 * were serial.
 *
 * How: .init (fs.c) records whether conn->want still holds FUSE_CAP_PARALLEL_DIROPS
 * (fs_io_want_parallel). The read hook notes the INIT request's unique; the writev hook
 * sends that request's reply with FUSE_PARALLEL_DIROPS added to its flags, from a copy
 * (libfuse's buffer is left alone). It is told by its unique, not by its order: .init
 * starts our threads before libfuse writes the reply, so a notify (unique 0) may come
 * first. Everything else passes through unchanged: read(2) and writev(2) with the errno
 * libfuse expects. Once the reply is out, each hook costs one atomic load. (A second
 * INIT, which libfuse would await after answering a kernel with a newer major version,
 * is not watched for: Linux sends one. libfuse sends the flag itself from 3.17.1 on;
 * adding it again is harmless.)
 *
 * What it does not remove: fuse_lowlevel_notify_inval_entry takes the directory's lock
 * exclusively, so while the invalidation thread waits behind a kept LOOKUP of / or a
 * dashboard (a reload's invalidations), new LOOKUPs there queue behind it as before.
 */
#define FUSE_USE_VERSION 312

#include "fs_int.h"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
    struct fs *fs = userdata;
    ssize_t n = read(fd, buf, len);
    if (n >= (ssize_t)sizeof(struct fuse_in_header) &&
        atomic_load_explicit(&fs->io.state, memory_order_relaxed) == FS_IO_BEFORE_INIT) {
        struct fuse_in_header h;
        memcpy(&h, buf, sizeof(h));
        if (h.opcode == FUSE_INIT) {
            fs->io.init_unique = h.unique;
            atomic_store(&fs->io.state, FS_IO_INIT_READ);
        }
    }
    return n;
}

/* INIT's reply (out: header, init: libfuse's fuse_init_out of init_len bytes) with
 * FUSE_PARALLEL_DIROPS added to its flags. */
static ssize_t write_init_reply(int fd, struct iovec *iov, int count)
{
    unsigned char init[256];
    size_t flags_at = offsetof(struct fuse_init_out, flags);
    if (count != 2)
        return writev(fd, iov, count);
    size_t init_len = iov[1].iov_len;
    if (init_len < flags_at + sizeof(uint32_t) || init_len > sizeof(init))
        return writev(fd, iov, count);
    memcpy(init, iov[1].iov_base, init_len);
    uint32_t flags;
    memcpy(&flags, init + flags_at, sizeof(flags));
    flags |= FUSE_PARALLEL_DIROPS;
    memcpy(init + flags_at, &flags, sizeof(flags));
    struct iovec v[2] = {iov[0], {init, init_len}};
    return writev(fd, v, 2);
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    struct fs *fs = userdata;
    if (atomic_load_explicit(&fs->io.state, memory_order_acquire) != FS_IO_INIT_READ || count < 1 ||
        iov[0].iov_len != sizeof(struct fuse_out_header))
        return writev(fd, iov, count);
    struct fuse_out_header out;
    memcpy(&out, iov[0].iov_base, sizeof(out));
    if (out.unique != fs->io.init_unique)
        return writev(fd, iov, count);
    atomic_store(&fs->io.state, FS_IO_PASS);
    if (out.error != 0 || !fs->io.want_parallel)
        return writev(fd, iov, count);
    return write_init_reply(fd, iov, count);
}

static const struct fuse_custom_io fs_io_hooks = {.read = io_read, .writev = io_writev};

const struct fuse_custom_io *fs_io_ops(void)
{
    return &fs_io_hooks;
}

int fs_io_install(struct fs *fs)
{
    atomic_store(&fs->io.state, FS_IO_BEFORE_INIT);
    return fuse_session_custom_io(fs->se, &fs_io_hooks, fuse_session_fd(fs->se));
}

void fs_io_want_parallel(struct fs *fs, int on)
{
    fs->io.want_parallel = on;
}
