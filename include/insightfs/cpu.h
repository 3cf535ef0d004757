/* cpu - the daemon's threads share one CPU while its load is light, and spread over
 * every CPU they may use when it is not.
 *
 * A cold fetch passes from thread to thread: a libfuse worker keeps the GETATTR, a fetch
 * thread runs the request and answers it, other workers answer the LOOKUP and the READ.
 * On different CPUs every hand-off is a wake-up across CPUs (an inter-processor
 * interrupt, an idle CPU leaving its halt), which costs more than the work handed over;
 * on one CPU the waker just yields to the wakee. The policy: threads start on one CPU;
 * a tick that finds the daemon used more than CPU_SHARE_SPREAD_PERMILLE of a CPU since the last
 * one lets them use every CPU of the mask they started with; CPU_SHARE_CALM_TICKS ticks in a
 * row under CPU_SHARE_PIN_PERMILLE bring them back to one (the CPU the ticking thread is on).
 *
 * Not thread-safe: one owner calls cpu_share_tick (the housekeeping timer); new and free
 * are called before any other thread starts and after every one has stopped.
 */
#ifndef INSIGHTFS_CPU_H
#define INSIGHTFS_CPU_H

#include <stdint.h>

#define CPU_SHARE_SPREAD_PERMILLE 400 /* above: spread */
#define CPU_SHARE_PIN_PERMILLE 200 /* below, CPU_SHARE_CALM_TICKS ticks in a row: back to one CPU  \
                                    */
#define CPU_SHARE_CALM_TICKS 5

struct cpu_share;

/* Pin every thread of the process to the CPU the caller runs on, and remember the mask
 * the caller had as the one to spread over. Returns the share; NULL when out of memory.
 * When the caller may use one CPU only, or the system refuses, the share stays idle:
 * nothing is pinned and ticks do nothing. */
struct cpu_share *cpu_share_new(void) __attribute__((warn_unused_result));

/* now_ms: CLOCK_MONOTONIC; cpu_ns: the process's CPU time (cpu_used_ns; negative:
 * unknown, no measure). The CPU used since the last tick decides (cpu_share_decide; the
 * first tick only starts the measure); a change sets every thread of the process. The
 * tick after a change (or after cpu_share_new) sets them again, for threads created
 * while a walk ran; while pinned, a tick that finds the caller's mask reset by someone
 * else pins again. Returns 0, or a negative errno when the system refused a mask at this
 * tick: the share is then idle for good (threads spread as far as allowed) and later
 * ticks return 0. NULL-safe. */
int cpu_share_tick(struct cpu_share *c, int64_t now_ms, int64_t cpu_ns);

/* How many CPUs the threads may use now: 1 when shared, the mask's count when spread,
 * 0 when the share is idle (or c is NULL). */
int cpu_share_cpus(const struct cpu_share *c);

/* Pure: the next state (1 on one CPU, 0 spread) after a tick that measured busy (per
 * mille of one CPU) in state pinned; *calm counts the ticks in a row under
 * CPU_SHARE_PIN_PERMILLE while spread (updated). */
int cpu_share_decide(int pinned, int64_t busy_permille, int *calm);

/* The process's CPU time so far (user + system, all threads), in ns; -1 if unknown. */
int64_t cpu_used_ns(void);

/* Spread every thread again (when c was not idle) and free c. NULL-safe. */
void cpu_share_free(struct cpu_share *c);

#endif
