/* cfg - the configuration file (libconfig syntax) -> an immutable, validated struct cfg.
 *
 * Every setting of SPEC section 3, with its default and range. Errors come back as one
 * line in the forms of SPEC section 2, without the "insightfs: " prefix:
 *   "FILE:LINE: SETTING: MESSAGE"  (a setting with a line)
 *   "FILE: SETTING: MESSAGE"       (no line: missing setting, unreadable file, bad mode)
 *   "FILE:LINE: MESSAGE"           (libconfig's parser: syntax errors; also @include
 *                                   and a NUL byte, which belong to no setting)
 *   "FILE: MESSAGE"                (the configuration file itself cannot be opened/read)
 * FILE is the absolute path of the configuration file; with no file (CFG_MODE_API, path
 * NULL) it is the word "environment" and SETTING the variable, e.g.
 * "environment: NCLOUD_ACCESS_KEY: not set, and no configuration file".
 * No message ever holds the secret or the access key.
 * A loaded struct cfg is never modified; SIGHUP builds a new one. Secrets live only here
 * and are wiped with OPENSSL_cleanse by cfg_free.
 */
#ifndef INSIGHTFS_CFG_H
#define INSIGHTFS_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "insightfs/log.h"
#include "insightfs/vpath.h"

struct cfg_widget {
    char *name; /* the configured name, or the id when none was given */
    char *id;
};

struct cfg_dashboard {
    char *name;
    char *id;
    struct cfg_widget *widgets;
    size_t n_widgets;
};

/* The shared group (SPEC 13): a fleet's second cache level in Redis. */
struct cfg_shared {
    char *redis;         /* the URL as configured; NULL: no shared group (the rest is unset) */
    char *host;          /* redis://: the host (IPv6 without brackets); NULL for a unix socket */
    int port;            /* redis://: 1-65535, default 6379 */
    char *socket;        /* unix:: the socket's path; NULL for redis:// */
    int db;              /* the database index, 0-2147483647, default 0 */
    char *password;      /* the first line of password_file (AUTH), wiped on free; NULL: none */
    char *password_file; /* absolute, or NULL */
    int timeout_ms;      /* each Redis command, 10-10000 (default 100) */
    int final_ttl_s;     /* 60-31536000 (default 2592000) */
    int fleet_requests_per_second; /* 0: no fleet cap */
};

/* What a Redis URL (SPEC 13) names. */
struct cfg_redis_url {
    char *host; /* malloc'd, or NULL for unix: */
    int port;
    char *socket; /* malloc'd, or NULL for redis:// */
    int db;
};

struct cfg {
    char *path; /* absolute path of the file, or NULL when loaded without one */

    /* api */
    char *endpoint;   /* "scheme://host[:port]", trailing '/' dropped */
    char *access_key; /* never logged but its last 4 characters */
    char *secret_key; /* never logged, wiped on free */
    char *ca_file;    /* absolute, or NULL */
    int timeout_ms, connect_timeout_ms, retries, max_connections, max_requests_per_second;
    int max_pending; /* filesystem requests waiting for fetches (SPEC 6) */
    int64_t max_image_bytes;
    enum vpath_res resolution;
    char *domain_code; /* "PUB", "GOV" or "FIN": x-ncp-dmn_cd (SPEC 1), or NULL when unset */

    /* cache */
    int64_t max_bytes;
    int live_ttl_s, settle_s, error_ttl_s, stale_if_error_s;
    bool readahead; /* fetch ahead while a listing is being stat'ed (SPEC 5) */

    /* time */
    int align_s;
    char *timezone; /* "local", "UTC" or an IANA name */

    char **presets; /* relative names without ".png", in config order */
    size_t n_presets;
    int history_days;

    struct cfg_dashboard *dashboards;
    size_t n_dashboards;
    bool discover;
    int discover_ttl_s;
    bool pages; /* an index.html in /, every dashboard and widget directory (SPEC 5) */
    enum log_level log_level;
    struct cfg_shared shared;
};

/* The name of the pages (SPEC 4, 5): with pages = true no configured dashboard or widget
 * may have it, and a discovered one gets " (<id>)" appended. */
#define CFG_PAGE_NAME "index.html"

/* Credentials taken from the environment once at start (see cfg_env_take). */
struct cfg_env {
    char *access_key; /* NCLOUD_ACCESS_KEY or NULL */
    char *secret_key; /* NCLOUD_SECRET_KEY or NULL */
};

/* Copy NCLOUD_ACCESS_KEY and NCLOUD_SECRET_KEY into env, overwrite their bytes in the
 * environment block with zeros and unset them. Call before any thread or child starts.
 * Returns 0 or -ENOMEM. Not thread-safe. */
int cfg_env_take(struct cfg_env *env) __attribute__((warn_unused_result));
/* Wipe and free what cfg_env_take copied. NULL-safe. */
void cfg_env_cleanup(struct cfg_env *env);

enum cfg_mode {
    CFG_MODE_MOUNT, /* dashboards required unless discover = true */
    CFG_MODE_API,   /* --discover, --check-config: only the api group matters */
};

/* Load and validate path (absolute or relative to the cwd; NULL only in CFG_MODE_API:
 * defaults plus the environment credentials). env may be NULL; an empty variable in it
 * counts as unset. An unset connect_timeout_ms is min(5000, timeout_ms) and an unset
 * max_image_bytes min(16 MiB, max_bytes), so no untouched default is ever out of range.
 * Returns 0 and *out (caller frees with cfg_free), or a negative errno and *err, a
 * malloc'd one-line message in the forms above (caller frees; NULL only with -ENOMEM):
 * -EINVAL bad content, -EACCES a secret file with a bad mode or owner, -ELOOP a secret
 * file named through a symbolic link, or open/read's errno for the file (-ENOENT, ...).
 * Thread-safe. */
int cfg_load(const char *path, enum cfg_mode mode, const struct cfg_env *env, struct cfg **out,
             char **err) __attribute__((warn_unused_result));

/* Free a cfg, wiping the secret. NULL-safe. */
void cfg_free(struct cfg *cfg);

/* The configuration file to use when none was named on the command line: $INSIGHTFS_CONFIG
 * if set and non-empty (even when missing), else the first that exists of
 * ${XDG_CONFIG_HOME:-$HOME/.config}/insightfs/insightfs.conf (a relative XDG_CONFIG_HOME
 * is ignored, as the XDG spec says) and /etc/insightfs/insightfs.conf. Returns 0 and
 * *out (malloc'd, as found: not made absolute) with *tried NULL, or -ENOENT and *tried,
 * a malloc'd ", "-separated list of the paths tried, with *out NULL (or -ENOMEM). */
int cfg_find(char **out, char **tried) __attribute__((warn_unused_result));

/* The configuration in force as libconfig text, defaults filled in, without secret_key
 * or secret_key_file, the access key shown as "..." plus its last 4 characters.
 * Returns a malloc'd string or NULL. */
char *cfg_dump(const struct cfg *cfg);

/* Parse a Redis URL: redis://HOST[:PORT][/DB] (HOST a name, an IPv4 address or
 * [IPv6]; PORT 1-65535, default 6379; DB 0-2147483647, default 0; no user or password,
 * no query) or unix:/PATH[?db=N] (an absolute path). Decimal numbers without sign or
 * leading zeros. Returns 0 and *out (free its strings with cfg_redis_url_cleanup), or
 * -EINVAL with *why (static text saying what is wrong), or -ENOMEM. Thread-safe. */
int cfg_redis_url_parse(const char *url, struct cfg_redis_url *out, const char **why)
    __attribute__((warn_unused_result));
void cfg_redis_url_cleanup(struct cfg_redis_url *u);

/* 1 when host (a name or an address, IPv6 without brackets) is loopback: localhost,
 * 127.0.0.0/8 or ::1. */
int cfg_host_is_loopback(const char *host);

/* Sanitize an API-supplied name (SPEC 4, discovery): '/', NUL, 0x01-0x1f, 0x7f -> '_',
 * a leading '.' -> '_', cut to 200 bytes at a UTF-8 boundary; empty -> NULL.
 * Returns a malloc'd string, or NULL when the result would be empty (use the id). */
char *cfg_sanitize_name(const char *name);

#endif
