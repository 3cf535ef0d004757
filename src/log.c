/* log - leveled log lines to stderr or syslog.
 *
 * One line per call, written with a single write(2) on stderr so lines from many
 * threads never interleave. The level filter is an atomic int: the only mutable
 * process-wide state, as syslog's own is. Callers never pass secrets here (SPEC 8).
 */
#include "insightfs/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static atomic_int log_level_now = LOG_LVL_INFO;
static atomic_int log_to_syslog = 0;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int level_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

void log_init(int to_syslog, enum log_level level)
{
    if (to_syslog)
        openlog("insightfs", LOG_PID, LOG_DAEMON);
    atomic_store(&log_to_syslog, to_syslog ? 1 : 0);
    atomic_store(&log_level_now, (int)level);
}

void log_set_level(enum log_level level)
{
    atomic_store(&log_level_now, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level_now);
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *log_level_name(enum log_level level)
{
    if ((int)level < 0 || (int)level > LOG_LVL_DEBUG)
        return "?";
    return level_names[level];
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
    if ((int)level > atomic_load(&log_level_now))
        return;
    char *msg = NULL;
    if (vasprintf(&msg, fmt, ap) < 0)
        return;
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    if (atomic_load(&log_to_syslog)) {
        syslog(level_prio[level], "%s", msg);
    } else {
        char *line = NULL;
        int len = asprintf(&line, "insightfs: %s: %s\n", level_names[level], msg);
        if (len > 0) {
            ssize_t w = write(STDERR_FILENO, line, (size_t)len);
            (void)w; /* nowhere left to report a failed log write */
        }
        free(line);
    }
    free(msg);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

char *log_escape(const void *buf, size_t len, size_t max)
{
    const unsigned char *p = buf;
    if (len > max)
        len = max;
    char *out = malloc(len * 4 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            *o++ = (char)c;
        else
            o += sprintf(o, "\\x%02x", c);
    }
    *o = '\0';
    return out;
}
