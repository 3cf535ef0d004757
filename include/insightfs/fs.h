/* fs - the mounted filesystem: libfuse low-level adapter over ns, cache and api.
 *
 * fs_run mounts, serves until unmounted or signalled, unmounts and returns the exit
 * status. Everything FUSE-specific lives behind this header.
 */
#ifndef INSIGHTFS_FS_H
#define INSIGHTFS_FS_H

#include <stdint.h>
#include <sys/types.h>

#include "insightfs/cfg.h"

struct fs_opts {
    const char *mountpoint; /* absolute */
    const char *fsname;     /* the mount's source as /proc/mounts shows it */
    int foreground;         /* -f (also -d) */
    int debug;              /* -d: libfuse debug output, log level debug */
    int single_thread;      /* -s */
    int allow_other;
    int auto_unmount;
    int set_uid, set_gid; /* -o uid=N, gid=N given */
    uid_t uid;
    gid_t gid;
    int64_t test_offset_ms; /* INSIGHTFS_TEST_CLOCK_OFFSET_MS */
    int test_stuck_notify;  /* INSIGHTFS_TEST_STUCK_NOTIFY: run teardown's abort path */
};

/* Mount cfg at o->mountpoint and serve. Takes ownership of cfg. env (borrowed, must live
 * until return) supplies credentials for SIGHUP reloads. Returns the process exit status:
 * 0 after an unmount or SIGINT/SIGTERM, 1 when mounting failed (a message was printed). */
int fs_run(struct cfg *cfg, const struct cfg_env *env, const struct fs_opts *o);

/* libfuse's package version, e.g. "3.14.0". */
const char *fs_libfuse_version(void);

#endif
