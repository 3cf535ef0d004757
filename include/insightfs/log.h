/* log - leveled log lines to stderr or syslog; never given a secret.
 *
 * Foreground: "insightfs: LEVEL: MESSAGE\n" on stderr. Background: syslog with
 * ident "insightfs", LOG_PID, facility LOG_DAEMON. The level filter is the one
 * piece of process-wide state (like syslog itself); it is an atomic and may be
 * changed at any time from any thread. All functions are thread-safe.
 */
#ifndef INSIGHTFS_LOG_H
#define INSIGHTFS_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* Send lines to syslog (to_syslog != 0) or stderr (default), filtered at level. */
void log_init(int to_syslog, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* Name <-> level: "error", "warn", "info", "debug". log_level_parse returns 0 or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out) __attribute__((warn_unused_result));
const char *log_level_name(enum log_level level);

/* One line (a trailing newline in fmt is not needed). Lines above the level are dropped. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap);

#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* Escape up to max bytes of buf for a log line: printable ASCII as is (except '"' and
 * '\\'), everything else as \xNN. Returns a malloc'd string (caller frees) or NULL. */
char *log_escape(const void *buf, size_t len, size_t max);

#endif
