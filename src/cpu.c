/* cpu - one CPU for a lightly loaded daemon (the contract is in cpu.h).
 *
 * Why: measured with `make bench`'s row 7e (512 cold fetches by 8 readers, latency
 * 20 ms, 2 vCPUs): 370-470 us of the daemon's CPU per fetch with its threads free to
 * run anywhere, 250-300 us with all of them on one CPU, for the same wall time. Pinning
 * only the fetch threads, or only libfuse's workers, or the two groups on different
 * CPUs, gained little: the cost is in the hand-offs between the daemon's own threads.
 * A daemon that needs more than a CPU for its work must not be held to one, hence the
 * spreading above CPU_SHARE_SPREAD_PERMILLE, with hysteresis so that a load near the line does
 * not flip the mask every second.
 *
 * Mechanism: a thread inherits its creator's mask, so pinning every thread once (at
 * start: main alone, plus a sanitizer's own thread) covers the threads created later:
 * libfuse's workers, fetch threads, libcurl's resolver threads. A change walks
 * /proc/self/task and sets each thread; a thread created during the walk by a thread
 * not yet set inherits the old mask, so the tick after a change walks once more.
 *
 * The mask to spread over is the caller's at cpu_share_new, read again from the ticking
 * thread before each pin (while spread it holds that mask, or what an administrator set
 * since with taskset). A thread that ended during a walk needs no mask; any other
 * refusal (a cpuset without the CPU, seccomp, a /proc of another PID namespace) makes
 * the share idle for good: the threads are spread as far as the system lets them, and
 * cpu_share_tick says so once, for the log. While pinned, each tick checks that the
 * ticking thread still has one CPU, and pins again if someone reset the masks.
 *
 * Locking: none; one owner (cpu.h).
 */
#include "insightfs/cpu.h"

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct cpu_share {
    cpu_set_t wide; /* the mask to spread over */
    int pinned;     /* the threads are on one CPU */
    int calm;       /* ticks in a row under CPU_SHARE_PIN_PERMILLE while spread */
    int walk_again; /* a walk was made since the last tick */
    int measuring;  /* last_ms and last_cpu_ns hold the last tick's */
    int64_t last_ms, last_cpu_ns;
};

int cpu_share_decide(int pinned, int64_t busy_permille, int *calm)
{
    if (pinned) {
        *calm = 0;
        return busy_permille > CPU_SHARE_SPREAD_PERMILLE ? 0 : 1;
    }
    *calm = busy_permille < CPU_SHARE_PIN_PERMILLE ? *calm + 1 : 0;
    if (*calm < CPU_SHARE_CALM_TICKS)
        return 0;
    *calm = 0;
    return 1;
}

/* Set mask on every thread of the process. Returns 0, or the first negative errno of a
 * thread that exists (ESRCH: it ended during the walk, which is no failure); -ESRCH when
 * the walk did not see the caller (a /proc of another PID namespace names other tasks). */
static int set_all(const cpu_set_t *mask)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return -errno;
    int rc = 0, me = 0;
    pid_t self = gettid();
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long tid = strtol(de->d_name, &end, 10);
        if (de->d_name[0] == '.' || *end != '\0' || tid <= 0)
            continue;
        me |= tid == (long)self;
        if (sched_setaffinity((pid_t)tid, sizeof(*mask), mask) != 0 && errno != ESRCH && rc == 0)
            rc = -errno;
    }
    closedir(d);
    return rc ? rc : me ? 0 : -ESRCH;
}

/* Every thread to the CPU the caller runs on (one of c->wide). Returns 0 or a negative
 * errno. */
static int pin(struct cpu_share *c)
{
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &c->wide))
        return -EINVAL;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    return set_all(&one);
}

/* The system refused a mask: give up for good, spread (as far as it lets us). Returns
 * rc. */
static int go_idle(struct cpu_share *c, int rc)
{
    (void)set_all(&c->wide);
    CPU_ZERO(&c->wide);
    c->pinned = 0;
    return rc;
}

struct cpu_share *cpu_share_new(void)
{
    struct cpu_share *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (sched_getaffinity(0, sizeof(c->wide), &c->wide) != 0 || CPU_COUNT(&c->wide) < 2)
        return c; /* idle: one CPU already, or a mask this module cannot hold */
    if (pin(c) != 0) {
        (void)go_idle(c, 0);
        return c;
    }
    c->pinned = 1;
    c->walk_again = 1;
    return c;
}

int cpu_share_tick(struct cpu_share *c, int64_t now_ms, int64_t cpu_ns)
{
    if (!c || CPU_COUNT(&c->wide) < 2)
        return 0;
    int64_t wall = now_ms - c->last_ms, used = cpu_ns - c->last_cpu_ns;
    int measured = c->measuring && wall > 0 && cpu_ns >= 0;
    if (cpu_ns >= 0 && (!c->measuring || wall > 0)) {
        c->measuring = 1;
        c->last_ms = now_ms;
        c->last_cpu_ns = cpu_ns;
    }
    int rc = 0;
    if (c->pinned) {
        /* Walk again after a change (threads made during the walk), and pin again when
         * someone else reset the masks (a cpuset update, taskset -a). */
        cpu_set_t mine;
        if (sched_getaffinity(0, sizeof(mine), &mine) != 0 || CPU_COUNT(&mine) != 1)
            rc = pin(c);
        else if (c->walk_again)
            rc = set_all(&mine);
    } else if (c->walk_again) {
        rc = set_all(&c->wide);
    }
    c->walk_again = 0;
    if (rc != 0)
        return go_idle(c, rc);
    if (!measured)
        return 0;
    int64_t busy = used / 1000 / wall; /* ns per ms of wall: per mille of one CPU */
    int next = cpu_share_decide(c->pinned, busy, &c->calm);
    if (next == c->pinned)
        return 0;
    if (next) {
        cpu_set_t now;
        if (sched_getaffinity(0, sizeof(now), &now) == 0 && CPU_COUNT(&now) >= 2)
            c->wide = now; /* an administrator's taskset since is the mask to keep */
        rc = pin(c);
    } else {
        rc = set_all(&c->wide);
    }
    if (rc != 0)
        return go_idle(c, rc);
    c->pinned = next;
    c->walk_again = 1;
    return 0;
}

int64_t cpu_used_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int cpu_share_cpus(const struct cpu_share *c)
{
    if (!c || CPU_COUNT(&c->wide) < 2)
        return 0;
    return c->pinned ? 1 : CPU_COUNT(&c->wide);
}

void cpu_share_free(struct cpu_share *c)
{
    if (!c)
        return;
    if (c->pinned)
        (void)set_all(&c->wide);
    free(c);
}
