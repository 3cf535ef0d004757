/* cfg - the configuration file (libconfig syntax) -> an immutable, validated struct cfg.
 *
 * Loading is one pass over a private copy of the file:
 *   1. open it once (O_NOFOLLOW first), fstat that descriptor and read the text from it, so
 *      the file whose owner and mode are checked is the file that is parsed;
 *   2. scan the raw text before libconfig sees it: `@include` is refused (a secret could
 *      hide in a file nobody checked, and libconfig would open it during the parse), so is
 *      a NUL byte (libconfig would silently stop there), and so is an integer literal
 *      that libconfig 1.5 would silently truncate (5000000000 without L);
 *   3. parse with config_read_string (line numbers are those of the file);
 *   4. walk every setting in file order against the tables below: unknown names, wrong
 *      types and out-of-range values fail at the first offender;
 *   5. checks that need the whole file: ranges that depend on another setting,
 *      `dashboards` required, credentials (config, secret_key_file, environment).
 *
 * Invariants: a struct cfg handed out is fully valid and never modified; every error is
 * one line in a form of cfg.h and never contains the secret or the access key (values of
 * those two settings are never echoed; other echoed strings go through log_escape);
 * every buffer that may have held the secret (file text, secret file, libconfig's copy
 * of api.secret_key, struct cfg, struct cfg_env) is wiped with OPENSSL_cleanse before it
 * is freed.
 *
 * Message FILE: the absolute path of the configuration file (the path as given when its
 * folder cannot be resolved). Without a file (CFG_MODE_API, path NULL) the only possible
 * errors are missing credentials, reported as "environment: NCLOUD_ACCESS_KEY: ..." (FILE
 * is the word "environment", SETTING the variable). Errors about the file itself
 * (cannot open or read) are "FILE: MESSAGE", as there is no setting to name.
 *
 * Two defaults follow other settings so that changing one never makes an untouched
 * default invalid: an unset connect_timeout_ms is min(5000, timeout_ms), an unset
 * max_image_bytes is min(16 MiB, max_bytes).
 *
 * No global state; cfg_load is thread-safe (libconfig 1.5's parser is reentrant).
 */
#include "insightfs/cfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>
#include <openssl/crypto.h>

#define CFG_FILE_MAX (16u << 20)        /* larger than any sane configuration */
#define CFG_SECRET_FILE_MAX (64u << 10) /* a key file is one short line */
#define CFG_ECHO_MAX 80                 /* bytes of a value quoted in a message */
#define CFG_NAME_MAX 255
#define CFG_SANITIZED_MAX 200

#define MIB (INT64_C(1) << 20)
#define TIB (INT64_C(1) << 40)

static const char *const default_presets[] = {"last-1h", "last-6h", "last-24h",
                                              "last-7d", "today",   "yesterday"};

/* One load in progress. The config_setting_t pointers live until config_destroy. */
struct loader {
    const char *file; /* FILE in messages */
    char *dir;        /* absolute folder of the file; NULL without a file */
    enum cfg_mode mode;
    const struct cfg_env *env;
    struct cfg *cfg;
    char **err;
    config_t lc;
    struct stat st; /* the configuration file, by fstat on the descriptor read */
    bool via_link;  /* the configuration file's name is a symbolic link */
    const config_setting_t *access, *secret, *secret_file, *connect, *max_image;
    bool presets_set, dashboards_set;
};

/* ---- messages ---- */

static const char *errstr(int e)
{
    const char *s = strerrordesc_np(e);
    return s ? s : "unknown error";
}

/* Build *err as "FILE[:LINE]: [SETTING: ]MESSAGE" and return rc. */
__attribute__((format(printf, 5, 6))) static int fail(struct loader *ld, int rc, int line,
                                                      const char *setting, const char *fmt, ...)
{
    char *msg = NULL, *pos = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        msg = NULL;
        goto nomem;
    }
    if (line > 0)
        n = asprintf(&pos, "%s:%d", ld->file, line);
    else
        n = asprintf(&pos, "%s", ld->file);
    if (n < 0) {
        pos = NULL;
        goto nomem;
    }
    free(*ld->err);
    if (setting)
        n = asprintf(ld->err, "%s: %s: %s", pos, setting, msg);
    else
        n = asprintf(ld->err, "%s: %s", pos, msg);
    if (n < 0)
        goto nomem;
    free(pos);
    free(msg);
    return rc;
nomem:
    free(*ld->err);
    *ld->err = NULL;
    free(pos);
    free(msg);
    return -ENOMEM;
}

/* The libconfig path of s: "api.timeout_ms", "dashboards.[0].widgets.[1].name". */
static char *setting_path(const config_setting_t *s)
{
    const config_setting_t *parent = config_setting_parent(s);
    char *up = NULL, *out = NULL;
    int n;

    if (parent && !config_setting_is_root(parent)) {
        up = setting_path(parent);
        if (!up)
            return NULL;
    }
    if (config_setting_name(s))
        n = asprintf(&out, "%s%s%s", up ? up : "", up ? "." : "", config_setting_name(s));
    else
        n = asprintf(&out, "%s%s[%d]", up ? up : "", up ? "." : "", config_setting_index(s));
    free(up);
    return n < 0 ? NULL : out;
}

/* "FILE:LINE: SETTING: MESSAGE" for setting s. */
__attribute__((format(printf, 4, 5))) static int
fail_at(struct loader *ld, int rc, const config_setting_t *s, const char *fmt, ...)
{
    char *path = setting_path(s), *msg = NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (!path || n < 0) {
        free(path);
        free(n < 0 ? NULL : msg);
        free(*ld->err);
        *ld->err = NULL;
        return -ENOMEM;
    }
    rc = fail(ld, rc, config_setting_source_line(s), path, "%s", msg);
    free(path);
    free(msg);
    return rc;
}

/* s quoted for a message: escaped (one line, printable) and cut at CFG_ECHO_MAX bytes. */
static char *quote(const char *s)
{
    size_t len = strlen(s);
    char *esc = log_escape(s, len, CFG_ECHO_MAX), *out = NULL;

    if (!esc)
        return NULL;
    if (asprintf(&out, "\"%s%s\"", esc, len > CFG_ECHO_MAX ? "..." : "") < 0)
        out = NULL;
    free(esc);
    return out;
}

/* "FILE:LINE: SETTING: "VALUE" MESSAGE", the value quoted. Never for secrets. */
static int fail_value(struct loader *ld, const config_setting_t *s, const char *value,
                      const char *what)
{
    char *q = quote(value);
    int rc;

    if (!q)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    rc = fail_at(ld, -EINVAL, s, "%s %s", q, what);
    free(q);
    return rc;
}

static const char *type_name(int type)
{
    switch (type) {
    case CONFIG_TYPE_INT:
    case CONFIG_TYPE_INT64:
        return "an integer";
    case CONFIG_TYPE_FLOAT:
        return "a float";
    case CONFIG_TYPE_STRING:
        return "a string";
    case CONFIG_TYPE_BOOL:
        return "a boolean";
    case CONFIG_TYPE_ARRAY:
        return "an array";
    case CONFIG_TYPE_LIST:
        return "a list";
    case CONFIG_TYPE_GROUP:
        return "a group";
    default:
        return "nothing";
    }
}

/* ---- the settings ---- */

enum kind { K_GROUP, K_INT, K_INT64, K_BOOL, K_STRING, K_LIST };

struct field {
    const char *name;
    enum kind kind;
    size_t off;     /* K_INT: int, K_INT64: int64_t, K_BOOL: bool in struct cfg */
    int64_t lo, hi; /* inclusive range of K_INT and K_INT64 */
    /* K_STRING, K_LIST, and numbers checked after the walk: takes the setting. */
    int (*take)(struct loader *ld, const config_setting_t *s);
    const struct field *sub; /* K_GROUP */
    const char *want;        /* the type a message asks for */
};

static int take_endpoint(struct loader *ld, const config_setting_t *s);
static int take_access_key(struct loader *ld, const config_setting_t *s);
static int take_secret(struct loader *ld, const config_setting_t *s);
static int take_secret_file(struct loader *ld, const config_setting_t *s);
static int take_later(struct loader *ld, const config_setting_t *s);
static int take_ca_file(struct loader *ld, const config_setting_t *s);
static int take_resolution(struct loader *ld, const config_setting_t *s);
static int take_timezone(struct loader *ld, const config_setting_t *s);
static int take_presets(struct loader *ld, const config_setting_t *s);
static int take_dashboards(struct loader *ld, const config_setting_t *s);
static int take_log_level(struct loader *ld, const config_setting_t *s);

#define OFF(m) offsetof(struct cfg, m)
#define STR(n, fn)                                                                                 \
    {                                                                                              \
        n, K_STRING, 0, 0, 0, fn, NULL, "a string"                                                 \
    }
#define INT(n, m, lo, hi)                                                                          \
    {                                                                                              \
        n, K_INT, OFF(m), lo, hi, NULL, NULL, "an integer"                                         \
    }

static const struct field api_fields[] = {
    STR("endpoint", take_endpoint),
    STR("access_key", take_access_key),
    STR("secret_key", take_secret),
    STR("secret_key_file", take_secret_file),
    INT("timeout_ms", timeout_ms, 100, 600000),
    {"connect_timeout_ms", K_INT, 0, 0, 0, take_later, NULL, "an integer"},
    INT("retries", retries, 0, 10),
    INT("max_connections", max_connections, 1, 256),
    INT("max_requests_per_second", max_requests_per_second, 0, 10000),
    {"max_image_bytes", K_INT64, 0, 0, 0, take_later, NULL, "an integer"},
    STR("ca_file", take_ca_file),
    STR("resolution", take_resolution),
    {NULL},
};

static const struct field cache_fields[] = {
    {"max_bytes", K_INT64, OFF(max_bytes), MIB, TIB, NULL, NULL, "an integer"},
    INT("live_ttl_s", live_ttl_s, 0, 86400),
    INT("settle_s", settle_s, 0, 604800),
    INT("error_ttl_s", error_ttl_s, 0, 3600),
    INT("stale_if_error_s", stale_if_error_s, 0, 604800),
    {NULL},
};

static const struct field time_fields[] = {
    INT("align_s", align_s, 1, 86400),
    STR("timezone", take_timezone),
    {NULL},
};

static const struct field top_fields[] = {
    {"api", K_GROUP, 0, 0, 0, NULL, api_fields, "a group"},
    {"cache", K_GROUP, 0, 0, 0, NULL, cache_fields, "a group"},
    {"time", K_GROUP, 0, 0, 0, NULL, time_fields, "a group"},
    {"presets", K_LIST, 0, 0, 0, take_presets, NULL, "an array of strings"},
    INT("history_days", history_days, 1, 3660),
    {"dashboards", K_LIST, 0, 0, 0, take_dashboards, NULL, "a list of groups"},
    {"discover", K_BOOL, OFF(discover), 0, 0, NULL, NULL, "true or false"},
    INT("discover_ttl_s", discover_ttl_s, 10, 86400),
    STR("log_level", take_log_level),
    {NULL},
};

/* Integers: int or int64 alike (range-checked); lists: a list, or an array ([] is empty). */
static int check_type(struct loader *ld, const config_setting_t *s, enum kind kind,
                      const char *want)
{
    int t = config_setting_type(s);
    bool ok;

    switch (kind) {
    case K_GROUP:
        ok = t == CONFIG_TYPE_GROUP;
        break;
    case K_INT:
    case K_INT64:
        ok = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
        break;
    case K_BOOL:
        ok = t == CONFIG_TYPE_BOOL;
        break;
    case K_STRING:
        ok = t == CONFIG_TYPE_STRING;
        break;
    default:
        ok = t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY;
        break;
    }
    if (ok)
        return 0;
    return fail_at(ld, -EINVAL, s, "must be %s, not %s", want, type_name(t));
}

static int check_range(struct loader *ld, const config_setting_t *s, int64_t lo, int64_t hi,
                       const char *why)
{
    long long v = config_setting_get_int64(s);

    if (v >= lo && v <= hi)
        return 0;
    return fail_at(ld, -EINVAL, s, "%lld is out of range (%lld-%lld%s)", v, (long long)lo,
                   (long long)hi, why);
}

static int walk_group(struct loader *ld, const config_setting_t *grp, const struct field *fields)
{
    int n = config_setting_length(grp);

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const struct field *f = fields;
        int rc;

        while (f->name && strcmp(f->name, config_setting_name(s)) != 0)
            f++;
        if (!f->name)
            return fail_at(ld, -EINVAL, s, "unknown setting");
        rc = check_type(ld, s, f->kind, f->want);
        if (rc)
            return rc;
        if (f->kind == K_GROUP)
            rc = walk_group(ld, s, f->sub);
        else if (f->take)
            rc = f->take(ld, s);
        else if (f->kind == K_BOOL)
            *(bool *)((char *)ld->cfg + f->off) = config_setting_get_bool(s) != 0;
        else if ((rc = check_range(ld, s, f->lo, f->hi, "")) == 0) {
            if (f->kind == K_INT)
                *(int *)((char *)ld->cfg + f->off) = (int)config_setting_get_int64(s);
            else
                *(int64_t *)((char *)ld->cfg + f->off) = config_setting_get_int64(s);
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- strings ---- */

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

static int replace(struct loader *ld, char **slot, const char *value)
{
    char *copy = strdup(value);

    if (!copy)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    free(*slot);
    *slot = copy;
    return 0;
}

/* A path named in the file: absolute as is, else relative to the file's folder. */
static char *resolve(const struct loader *ld, const char *p)
{
    char *out = NULL;

    if (p[0] == '/')
        return strdup(p);
    if (asprintf(&out, "%s/%s", strcmp(ld->dir, "/") == 0 ? "" : ld->dir, p) < 0)
        return NULL;
    return out;
}

static bool is_loopback(const char *host, size_t len)
{
    char *h = strndup(host, len);
    unsigned char addr[sizeof(struct in6_addr)];
    bool yes = false;

    if (!h)
        return false;
    if (strcasecmp(h, "localhost") == 0)
        yes = true;
    else if (inet_pton(AF_INET, h, addr) == 1)
        yes = addr[0] == 127;
    else if (len > 2 && h[0] == '[' && h[len - 1] == ']') {
        h[len - 1] = '\0';
        yes =
            inet_pton(AF_INET6, h + 1, addr) == 1 && IN6_IS_ADDR_LOOPBACK((struct in6_addr *)addr);
    }
    free(h);
    return yes;
}

/* scheme://host[:port] with an optional trailing '/'; https unless the host is loopback. */
static int take_endpoint(struct loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s), *host, *p;
    bool http = false;
    size_t host_len, len = strlen(v);
    char *copy;
    int rc;

    if (strncmp(v, "https://", 8) == 0)
        host = v + 8;
    else if (strncmp(v, "http://", 7) == 0) {
        host = v + 7;
        http = true;
    } else
        return fail_value(ld, s, v, "must start with https:// (http:// only for loopback hosts)");
    if (len > 0 && v[len - 1] == '/')
        len--;
    if (host[0] == '[') {
        /* An IPv6 literal: whatever inet_pton accepts between the brackets. */
        unsigned char addr[sizeof(struct in6_addr)];
        char *inner;

        p = memchr(host, ']', (size_t)(v + len - host));
        inner = p ? strndup(host + 1, (size_t)(p - host - 1)) : NULL;
        host_len = inner && inet_pton(AF_INET6, inner, addr) == 1 ? (size_t)(p + 1 - host) : 0;
        free(inner);
    } else {
        host_len = strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                "0123456789-._");
    }
    if (host_len == 0)
        return fail_value(ld, s, v, "has no valid host (scheme://host[:port])");
    p = host + host_len;
    if (*p == ':' && p < v + len) {
        size_t digits = strspn(p + 1, "0123456789");
        long port = digits > 0 && digits <= 5 ? strtol(p + 1, NULL, 10) : 0;

        if (port < 1 || port > 65535 || p + 1 + digits != v + len)
            return fail_value(ld, s, v, "has a bad port (1-65535)");
        p += 1 + digits;
    }
    if (p != v + len)
        return fail_value(ld, s, v,
                          *p == '/' ? "has a path (scheme://host[:port] only)"
                                    : "is not scheme://host[:port]");
    if (http && !is_loopback(host, host_len))
        return fail_at(ld, -EINVAL, s, "https is required (http:// only for loopback hosts)");
    copy = strndup(v, len);
    if (!copy)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    rc = replace(ld, &ld->cfg->endpoint, copy);
    free(copy);
    return rc;
}

/* The access key is never echoed: it only says what is wrong. */
static int take_access_key(struct loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (!*v)
        return fail_at(ld, -EINVAL, s, "is empty");
    if (has_control(v))
        return fail_at(ld, -EINVAL, s, "contains a control character");
    ld->access = s;
    return 0;
}

/* Remembered: which secret wins is decided once the whole file is read. */
static int take_secret(struct loader *ld, const config_setting_t *s)
{
    ld->secret = s;
    return 0;
}

static int take_secret_file(struct loader *ld, const config_setting_t *s)
{
    if (!*config_setting_get_string(s))
        return fail_at(ld, -EINVAL, s, "is empty");
    ld->secret_file = s;
    return 0;
}

/* Numbers whose range depends on a setting that may come later in the file. */
static int take_later(struct loader *ld, const config_setting_t *s)
{
    if (strcmp(config_setting_name(s), "connect_timeout_ms") == 0)
        ld->connect = s;
    else
        ld->max_image = s;
    return 0;
}

static int take_ca_file(struct loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);
    char *path;
    struct stat st;
    int fd, rc = 0;

    if (!*v)
        return fail_at(ld, -EINVAL, s, "is empty");
    path = resolve(ld, v);
    if (!path)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = fail(ld, -errno, 0, "api.ca_file", "%s: %s", path, errstr(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0)
        rc = fail(ld, -errno, 0, "api.ca_file", "%s: %s", path, errstr(errno));
    else if (!S_ISREG(st.st_mode))
        rc = fail(ld, -EINVAL, 0, "api.ca_file", "%s is not a regular file", path);
    close(fd);
    if (rc == 0) {
        free(ld->cfg->ca_file);
        ld->cfg->ca_file = path;
        path = NULL;
    }
out:
    free(path);
    return rc;
}

static int take_resolution(struct loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (strcmp(v, "AUTO") == 0)
        ld->cfg->resolution = VPATH_RES_AUTO;
    else if (strcmp(v, "HIGH") == 0)
        ld->cfg->resolution = VPATH_RES_HIGH;
    else
        return fail_value(ld, s, v, "is not AUTO or HIGH");
    return 0;
}

static int take_timezone(struct loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (!vpath_tz_valid(v))
        return fail_value(ld, s, v,
                          "is not a time zone tzdata knows (\"local\", \"UTC\" or a name "
                          "such as \"Asia/Seoul\")");
    return replace(ld, &ld->cfg->timezone, v);
}

static int take_log_level(struct loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (log_level_parse(v, &ld->cfg->log_level) != 0)
        return fail_value(ld, s, v, "is not a log level (error, warn, info or debug)");
    return 0;
}

static int take_presets(struct loader *ld, const config_setting_t *s)
{
    struct cfg *cfg = ld->cfg;
    int n = config_setting_length(s);

    ld->presets_set = true;
    cfg->presets = calloc(n > 0 ? (size_t)n : 1, sizeof(*cfg->presets));
    if (!cfg->presets)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v;
        int rc = check_type(ld, e, K_STRING, "a string");

        if (rc)
            return rc;
        v = config_setting_get_string(e);
        if (!vpath_is_relative(v))
            return fail_value(ld, e, v,
                              "is not a relative name (last-N followed by m, h, d or w; "
                              "today; yesterday)");
        for (size_t j = 0; j < cfg->n_presets; j++) {
            if (strcmp(cfg->presets[j], v) == 0) {
                char *what = NULL;

                if (asprintf(&what, "is already presets.[%zu]", j) < 0)
                    return fail(ld, -ENOMEM, 0, NULL, "out of memory");
                rc = fail_value(ld, e, v, what);
                free(what);
                return rc;
            }
        }
        cfg->presets[cfg->n_presets] = strdup(v);
        if (!cfg->presets[cfg->n_presets])
            return fail(ld, -ENOMEM, 0, NULL, "out of memory");
        cfg->n_presets++;
    }
    return 0;
}

/* ---- dashboards and widgets ---- */

/* One group of a dashboards or widgets list, as found in the file. */
struct entry {
    const config_setting_t *grp, *name_s, *id_s, *widgets_s;
    const char *name, *id; /* name is id when name_s is NULL */
};

/* A name, given (s is its setting) or implied by the id (s is the id's setting). */
static int check_name(struct loader *ld, const struct entry *e)
{
    const config_setting_t *s = e->name_s ? e->name_s : e->id_s;
    const char *why = NULL, *implied = e->name_s ? "" : " (set name: without one the id is used)";
    size_t len = strlen(e->name);
    char *what = NULL;
    int rc;

    if (len == 0)
        return fail_at(ld, -EINVAL, s, "is empty (names are 1-255 bytes)");
    if (len > CFG_NAME_MAX)
        return fail_at(ld, -EINVAL, s, "is %zu bytes long (names are 1-255 bytes)%s", len, implied);
    if (strchr(e->name, '/'))
        why = "contains '/'";
    else if (e->name[0] == '.')
        why = "starts with '.'";
    else if (has_control(e->name))
        why = "contains a control character";
    if (!why)
        return 0;
    if (asprintf(&what, "%s, which a name may not%s", why, implied) < 0)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    rc = fail_value(ld, s, e->name, what);
    free(what);
    return rc;
}

static int check_id(struct loader *ld, const struct entry *e)
{
    if (!*e->id)
        return fail_at(ld, -EINVAL, e->id_s, "is empty");
    if (has_control(e->id))
        return fail_value(ld, e->id_s, e->id, "contains a control character");
    if (strcmp(e->id, ".") == 0 || strcmp(e->id, "..") == 0)
        return fail_value(ld, e->id_s, e->id, "is not allowed as an id");
    return 0;
}

static int take_entry(struct loader *ld, const config_setting_t *g, bool dashboard, struct entry *e)
{
    int rc = check_type(ld, g, K_GROUP, "a group");
    int n = config_setting_length(g);

    if (rc)
        return rc;
    e->grp = g;
    for (int i = 0; i < n; i++) {
        const config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(m);

        if (strcmp(name, "name") == 0 || strcmp(name, "id") == 0) {
            rc = check_type(ld, m, K_STRING, "a string");
            *(name[0] == 'n' ? &e->name_s : &e->id_s) = m;
        } else if (dashboard && strcmp(name, "widgets") == 0) {
            rc = check_type(ld, m, K_LIST, "a list of groups");
            e->widgets_s = m;
        } else
            rc = fail_at(ld, -EINVAL, m, "unknown setting");
        if (rc)
            return rc;
    }
    if (!e->id_s)
        return fail_at(ld, -EINVAL, g, "id is missing");
    e->id = config_setting_get_string(e->id_s);
    e->name = e->name_s ? config_setting_get_string(e->name_s) : e->id;
    rc = check_id(ld, e);
    return rc ? rc : check_name(ld, e);
}

static int clash(struct loader *ld, const config_setting_t *s, const char *value, const char *role,
                 const config_setting_t *other)
{
    char *path = setting_path(other), *what = NULL;
    int rc;

    if (!path || asprintf(&what, "is already the %s of %s", role, path) < 0) {
        free(path);
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    }
    rc = fail_value(ld, s, value, what);
    free(what);
    free(path);
    return rc;
}

/* Ids unique among siblings; names unique and different from every sibling's id. The
 * later of two clashing entries is blamed, at the setting that clashes. */
static int check_siblings(struct loader *ld, const struct entry *e, size_t n)
{
    for (size_t j = 1; j < n; j++) {
        const config_setting_t *name_s = e[j].name_s ? e[j].name_s : e[j].id_s;

        for (size_t i = 0; i < j; i++) {
            if (strcmp(e[j].id, e[i].id) == 0)
                return clash(ld, e[j].id_s, e[j].id, "id", e[i].grp);
            if (strcmp(e[j].name, e[i].name) == 0)
                return clash(ld, name_s, e[j].name, "name", e[i].grp);
            if (strcmp(e[j].name, e[i].id) == 0)
                return clash(ld, name_s, e[j].name, "id", e[i].grp);
            if (strcmp(e[j].id, e[i].name) == 0)
                return clash(ld, e[j].id_s, e[j].id, "name", e[i].grp);
        }
    }
    return 0;
}

/* Check every group of list (and their siblings); *out gets n entries (caller frees). */
static int take_entries(struct loader *ld, const config_setting_t *list, bool dashboards,
                        struct entry **out, size_t *n_out)
{
    int n = config_setting_length(list), rc = 0;
    struct entry *e = calloc(n > 0 ? (size_t)n : 1, sizeof(*e));

    *out = e;
    *n_out = 0;
    if (!e)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    for (int i = 0; i < n && rc == 0; i++)
        rc = take_entry(ld, config_setting_get_elem(list, (unsigned)i), dashboards, &e[i]);
    if (rc == 0)
        rc = check_siblings(ld, e, (size_t)n);
    if (rc == 0)
        *n_out = (size_t)n;
    return rc;
}

static int take_widgets(struct loader *ld, const config_setting_t *list, struct cfg_dashboard *d)
{
    struct entry *e = NULL;
    size_t n;
    int rc = take_entries(ld, list, false, &e, &n);

    if (rc)
        goto out;
    d->widgets = calloc(n > 0 ? n : 1, sizeof(*d->widgets));
    if (!d->widgets) {
        rc = fail(ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        struct cfg_widget *w = &d->widgets[d->n_widgets++];

        w->name = strdup(e[i].name);
        w->id = strdup(e[i].id);
        if (!w->name || !w->id) {
            rc = fail(ld, -ENOMEM, 0, NULL, "out of memory");
            goto out;
        }
    }
out:
    free(e);
    return rc;
}

static int take_dashboards(struct loader *ld, const config_setting_t *s)
{
    struct cfg *cfg = ld->cfg;
    struct entry *e = NULL;
    size_t n;
    int rc;

    ld->dashboards_set = true;
    rc = take_entries(ld, s, true, &e, &n);
    if (rc)
        goto out;
    cfg->dashboards = calloc(n > 0 ? n : 1, sizeof(*cfg->dashboards));
    if (!cfg->dashboards) {
        rc = fail(ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    /* Widgets are checked in a second pass: dashboards order first, like the listing. */
    for (size_t i = 0; i < n; i++) {
        struct cfg_dashboard *d = &cfg->dashboards[cfg->n_dashboards++];

        d->name = strdup(e[i].name);
        d->id = strdup(e[i].id);
        if (!d->name || !d->id) {
            rc = fail(ld, -ENOMEM, 0, NULL, "out of memory");
            goto out;
        }
        if (e[i].widgets_s && (rc = take_widgets(ld, e[i].widgets_s, d)) != 0)
            goto out;
    }
out:
    free(e);
    return rc;
}

/* ---- files ---- */

/* Read all of fd (at most max bytes) into a NUL-terminated buffer. Growth copies and
 * wipes by hand (no realloc) because the text may hold a secret. */
static int read_all(int fd, size_t max, char **out, size_t *len_out)
{
    struct stat st;
    size_t cap = 4096, len = 0;
    char *buf;

    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0 && (uint64_t)st.st_size < max)
        cap = (size_t)st.st_size + 1;
    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t r;

        if (len + 1 == cap) {
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nbuf;

            if (len >= max) {
                OPENSSL_cleanse(buf, len);
                free(buf);
                return -EFBIG;
            }
            nbuf = malloc(ncap);
            if (!nbuf) {
                OPENSSL_cleanse(buf, len);
                free(buf);
                return -ENOMEM;
            }
            memcpy(nbuf, buf, len);
            OPENSSL_cleanse(buf, len);
            free(buf);
            buf = nbuf;
            cap = ncap;
        }
        r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;

            OPENSSL_cleanse(buf, len);
            free(buf);
            return -e;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    buf[len] = '\0';
    *out = buf;
    *len_out = len;
    return 0;
}

/* A file that holds a secret: a regular file owned by us or root, no group/other bits. */
static int check_secret_mode(struct loader *ld, const char *setting, const char *path,
                             const struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return fail(ld, -EINVAL, 0, setting, "%s is not a regular file", path);
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return fail(ld, -EACCES, 0, setting, "%s is owned by uid %u, not by uid %u or root", path,
                    (unsigned)st->st_uid, (unsigned)geteuid());
    if (st->st_mode & 077)
        return fail(ld, -EACCES, 0, setting,
                    "%s is accessible by group or others (mode %04o): run chmod 600 %s", path,
                    (unsigned)(st->st_mode & 07777), path);
    return 0;
}

/* The first line of api.secret_key_file, one trailing "\n" or "\r\n" dropped. */
static int read_secret_file(struct loader *ld, char **secret)
{
    const char *setting = "api.secret_key_file";
    char *path = resolve(ld, config_setting_get_string(ld->secret_file)), *buf = NULL;
    size_t len = 0, line;
    struct stat st;
    int fd = -1, rc;

    if (!path)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ELOOP) {
        rc = fail(ld, -ELOOP, 0, setting, "%s is a symbolic link (name the file itself)", path);
        goto out;
    }
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = fail(ld, -errno, 0, setting, "%s: %s", path, errstr(errno));
        goto out;
    }
    rc = check_secret_mode(ld, setting, path, &st);
    if (rc)
        goto out;
    rc = read_all(fd, CFG_SECRET_FILE_MAX, &buf, &len);
    if (rc == -EFBIG) {
        rc = fail(ld, rc, 0, setting, "%s is larger than %u KiB", path, CFG_SECRET_FILE_MAX >> 10);
        goto out;
    }
    if (rc) {
        rc = fail(ld, rc, 0, setting, "%s: %s", path, errstr(-rc));
        goto out;
    }
    line = strcspn(buf, "\n");
    if (line < len && buf[line] == '\0') {
        rc = fail(ld, -EINVAL, 0, setting, "the first line of %s contains a NUL byte", path);
        goto out;
    }
    if (line > 0 && line < len && buf[line - 1] == '\r')
        line--;
    if (line == 0) {
        rc = fail(ld, -EINVAL, 0, setting, "the first line of %s is empty", path);
        goto out;
    }
    *secret = strndup(buf, line);
    if (!*secret)
        rc = fail(ld, -ENOMEM, 0, NULL, "out of memory");
out:
    if (buf) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* Access key from the file, else the environment; secret from api.secret_key,
 * api.secret_key_file or the environment, in that order. An empty environment variable
 * counts as unset. */
static int take_credentials(struct loader *ld)
{
    const struct cfg_env *env = ld->env;
    struct cfg *cfg = ld->cfg;
    bool no_file = ld->dir == NULL;
    int rc;

    if (ld->access)
        cfg->access_key = strdup(config_setting_get_string(ld->access));
    else if (env && env->access_key && *env->access_key)
        cfg->access_key = strdup(env->access_key);
    else if (no_file)
        return fail(ld, -EINVAL, 0, "NCLOUD_ACCESS_KEY", "not set, and no configuration file");
    else
        return fail(ld, -EINVAL, 0, "api.access_key",
                    "missing (set it here or in NCLOUD_ACCESS_KEY)");
    if (!cfg->access_key)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");

    if (ld->secret && ld->secret_file)
        return fail_at(ld, -EINVAL, ld->secret_file,
                       "set either api.secret_key or api.secret_key_file, not both");
    if (ld->secret) {
        const char *v = config_setting_get_string(ld->secret);

        if (!*v)
            return fail_at(ld, -EINVAL, ld->secret, "is empty");
        if (ld->via_link)
            return fail(ld, -ELOOP, 0, "api.secret_key",
                        "%s is a symbolic link (a file holding a secret must be named itself)",
                        ld->file);
        rc = check_secret_mode(ld, "api.secret_key", ld->file, &ld->st);
        if (rc)
            return rc;
        cfg->secret_key = strdup(v);
    } else if (ld->secret_file) {
        return read_secret_file(ld, &cfg->secret_key);
    } else if (env && env->secret_key && *env->secret_key) {
        cfg->secret_key = strdup(env->secret_key);
    } else if (no_file) {
        return fail(ld, -EINVAL, 0, "NCLOUD_SECRET_KEY", "not set, and no configuration file");
    } else {
        return fail(ld, -EINVAL, 0, "api.secret_key",
                    "missing (set api.secret_key, api.secret_key_file or NCLOUD_SECRET_KEY)");
    }
    if (!cfg->secret_key)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    return 0;
}

/* ---- the raw text, before libconfig ---- */

/* The first of each problem libconfig would not report (or would act on), by line. */
struct scan {
    int include_line, nul_line, int_line;
    const char *int_tok; /* the integer literal at int_line */
    size_t int_len;
    bool int_64; /* it had an L suffix: it overflows 64 bits */
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' ||
           c == '_' || c == '*';
}

/* A number at t[i] (a digit, '.', or a sign before one), lexed as libconfig's scanner does:
 * an integer without L must fit in int32 (libconfig 1.5 truncates it silently), one with
 * L in int64. Returns the index after it. */
static size_t scan_number(const char *t, size_t n, size_t i, int line, struct scan *sc)
{
    size_t start = i;
    uint64_t v = 0, limit;
    bool over = false, neg = false, l64 = false;

    if (t[i] == '-' || t[i] == '+')
        neg = t[i++] == '-';
    if (!neg && t[i] == '0' && i + 2 < n && (t[i + 1] == 'x' || t[i + 1] == 'X') &&
        hex_value(t[i + 2]) >= 0) {
        for (i += 2; i < n && hex_value(t[i]) >= 0; i++) {
            over |= v > (UINT64_MAX >> 4);
            v = v << 4 | (uint64_t)hex_value(t[i]);
        }
    } else {
        for (; i < n && is_digit(t[i]); i++) {
            over |= v > (UINT64_MAX - 9) / 10;
            v = v * 10 + (uint64_t)(t[i] - '0');
        }
        if (i < n &&
            (t[i] == '.' || ((t[i] == 'e' || t[i] == 'E') && i + 1 < n &&
                             (is_digit(t[i + 1]) || t[i + 1] == '-' || t[i + 1] == '+')))) {
            /* A float: nothing to check. */
            while (i < n && (is_digit(t[i]) || t[i] == '.'))
                i++;
            if (i < n && (t[i] == 'e' || t[i] == 'E')) {
                i++;
                if (i < n && (t[i] == '-' || t[i] == '+'))
                    i++;
                while (i < n && is_digit(t[i]))
                    i++;
            }
            return i;
        }
    }
    if (i < n && t[i] == 'L') {
        l64 = true;
        i += i + 1 < n && t[i + 1] == 'L' ? 2 : 1;
    }
    limit = l64 ? (uint64_t)INT64_MAX : (uint64_t)INT32_MAX;
    if ((over || v > limit + (neg ? 1 : 0)) && !sc->int_line) {
        sc->int_line = line;
        sc->int_tok = t + start;
        sc->int_len = i - start;
        sc->int_64 = l64;
    }
    return i;
}

/* Walk the text as libconfig's scanner does (strings, comments, names, numbers).
 * @include is libconfig's directive only at the start of a line, outside strings and
 * comments; a line inside a block comment that starts with it is refused too (harmless). */
static void scan_text(const char *t, size_t n, struct scan *sc)
{
    size_t i = 0;
    int line = 1;
    bool bol = true; /* only blanks since the line began */

    while (i < n) {
        char c = t[i];
        bool at_bol = bol;

        if (c == '\0' && !sc->nul_line)
            sc->nul_line = line;
        if (c == '\n') {
            line++;
            bol = true;
            i++;
            continue;
        }
        if (c == ' ' || c == '\t') {
            i++;
            continue;
        }
        bol = false;
        if (c == '@' && n - i >= 8 && memcmp(t + i, "@include", 8) == 0) {
            if (at_bol && !sc->include_line)
                sc->include_line = line;
            i += 8;
        } else if (c == '"' || (c == '/' && i + 1 < n && t[i + 1] == '*')) {
            bool str = c == '"';

            for (i += str ? 1 : 2; i < n; i++) {
                if (str && t[i] == '"')
                    break;
                if (!str && t[i] == '*' && i + 1 < n && t[i + 1] == '/') {
                    i++;
                    break;
                }
                if (str && t[i] == '\\' && i + 1 < n)
                    i++;
                if (t[i] == '\n')
                    line++;
                if (t[i] == '\0' && !sc->nul_line)
                    sc->nul_line = line;
            }
            i++;
        } else if (c == '#' || (c == '/' && i + 1 < n && t[i + 1] == '/')) {
            for (; i < n && t[i] != '\n'; i++)
                if (t[i] == '\0' && !sc->nul_line)
                    sc->nul_line = line;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '*') {
            while (i < n && is_name_char(t[i]))
                i++;
        } else if (is_digit(c) || c == '.' ||
                   ((c == '-' || c == '+') && i + 1 < n &&
                    (is_digit(t[i + 1]) || t[i + 1] == '.'))) {
            i = scan_number(t, n, i, line, sc);
        } else {
            i++;
        }
    }
}

/* ---- loading ---- */

static int init_defaults(struct cfg *cfg)
{
    cfg->endpoint = strdup("https://cw.apigw.ntruss.com");
    cfg->timezone = strdup("UTC");
    cfg->timeout_ms = 15000;
    cfg->connect_timeout_ms = 5000;
    cfg->retries = 2;
    cfg->max_connections = 8;
    cfg->max_requests_per_second = 0;
    cfg->max_image_bytes = 16 * MIB;
    cfg->resolution = VPATH_RES_AUTO;
    cfg->max_bytes = 256 * MIB;
    cfg->live_ttl_s = 60;
    cfg->settle_s = 300;
    cfg->error_ttl_s = 10;
    cfg->stale_if_error_s = 3600;
    cfg->align_s = 60;
    cfg->history_days = 30;
    cfg->discover = false;
    cfg->discover_ttl_s = 300;
    cfg->log_level = LOG_LVL_INFO;
    return cfg->endpoint && cfg->timezone ? 0 : -ENOMEM;
}

static int default_presets_fill(struct cfg *cfg)
{
    size_t n = sizeof(default_presets) / sizeof(default_presets[0]);

    cfg->presets = calloc(n, sizeof(*cfg->presets));
    if (!cfg->presets)
        return -ENOMEM;
    for (; cfg->n_presets < n; cfg->n_presets++) {
        cfg->presets[cfg->n_presets] = strdup(default_presets[cfg->n_presets]);
        if (!cfg->presets[cfg->n_presets])
            return -ENOMEM;
    }
    return 0;
}

/* Make path absolute (realpath of its folder, then its own name, so a symbolic link stays
 * the name SIGHUP re-reads) into cfg->path and ld->dir. */
static int locate(struct loader *ld, const char *path)
{
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *dir = NULL;
    int rc = 0;

    if (!*base)
        return fail(ld, -EISDIR, 0, NULL, "%s", errstr(EISDIR));
    if (slash == path)
        dir = strdup("/");
    else if (slash)
        dir = strndup(path, (size_t)(slash - path));
    else
        dir = strdup(".");
    if (!dir)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    ld->dir = realpath(dir, NULL);
    if (!ld->dir) {
        rc = fail(ld, -errno, 0, NULL, "%s", errstr(errno));
        goto out;
    }
    if (asprintf(&ld->cfg->path, "%s/%s", strcmp(ld->dir, "/") == 0 ? "" : ld->dir, base) < 0) {
        ld->cfg->path = NULL;
        rc = fail(ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    ld->file = ld->cfg->path;
out:
    free(dir);
    return rc;
}

/* Open, check, scan and parse the file into ld->lc. */
static int parse_file(struct loader *ld)
{
    struct scan sc = {0};
    char *text = NULL;
    size_t len = 0;
    int fd, rc;

    fd = open(ld->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ELOOP) {
        /* Fine for a file without a secret; take_credentials refuses it otherwise. */
        ld->via_link = true;
        fd = open(ld->file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    }
    if (fd < 0 || fstat(fd, &ld->st) != 0) {
        rc = fail(ld, -errno, 0, NULL, "%s", errstr(errno));
        goto out;
    }
    if (S_ISDIR(ld->st.st_mode)) {
        rc = fail(ld, -EISDIR, 0, NULL, "%s", errstr(EISDIR));
        goto out;
    }
    rc = read_all(fd, CFG_FILE_MAX, &text, &len);
    if (rc) {
        rc = rc == -EFBIG ? fail(ld, rc, 0, NULL, "larger than %u MiB", CFG_FILE_MAX >> 20)
                          : fail(ld, rc, 0, NULL, "%s", errstr(-rc));
        goto out;
    }
    scan_text(text, len, &sc);
    if (sc.include_line) {
        rc = fail(ld, -EINVAL, sc.include_line, NULL,
                  "@include is not allowed: put every setting in this file");
        goto out;
    }
    if (sc.nul_line) {
        rc = fail(ld, -EINVAL, sc.nul_line, NULL, "NUL byte (the file must be text)");
        goto out;
    }
    if (!config_read_string(&ld->lc, text)) {
        rc = fail(ld, -EINVAL, config_error_line(&ld->lc), NULL, "%s", config_error_text(&ld->lc));
        goto out;
    }
    if (sc.int_line) {
        int shown = sc.int_len > 40 ? 40 : (int)sc.int_len;
        const char *more = sc.int_len > 40 ? "..." : "";

        if (sc.int_64)
            rc = fail(ld, -EINVAL, sc.int_line, NULL, "%.*s%s does not fit in a 64-bit integer",
                      shown, sc.int_tok, more);
        else
            rc = fail(ld, -EINVAL, sc.int_line, NULL,
                      "%.*s%s does not fit in a 32-bit integer: write %.*s%sL", shown, sc.int_tok,
                      more, shown, sc.int_tok, more);
        goto out;
    }
out:
    if (text) {
        OPENSSL_cleanse(text, len);
        free(text);
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Everything that needs the whole file. */
static int finish(struct loader *ld)
{
    struct cfg *cfg = ld->cfg;
    int rc;

    if (ld->connect) {
        rc = check_range(ld, ld->connect, 100, cfg->timeout_ms, "; at most api.timeout_ms");
        if (rc)
            return rc;
        cfg->connect_timeout_ms = (int)config_setting_get_int64(ld->connect);
    } else if (cfg->connect_timeout_ms > cfg->timeout_ms) {
        cfg->connect_timeout_ms = cfg->timeout_ms;
    }
    if (ld->max_image) {
        rc = check_range(ld, ld->max_image, 1024, cfg->max_bytes, "; at most cache.max_bytes");
        if (rc)
            return rc;
        cfg->max_image_bytes = config_setting_get_int64(ld->max_image);
    } else if (cfg->max_image_bytes > cfg->max_bytes) {
        cfg->max_image_bytes = cfg->max_bytes;
    }
    if (!ld->presets_set && default_presets_fill(cfg) != 0)
        return fail(ld, -ENOMEM, 0, NULL, "out of memory");
    if (ld->mode == CFG_MODE_MOUNT && !ld->dashboards_set && !cfg->discover)
        return fail(ld, -EINVAL, 0, "dashboards",
                    "missing (list dashboards, or set discover = true)");
    return take_credentials(ld);
}

int cfg_load(const char *path, enum cfg_mode mode, const struct cfg_env *env, struct cfg **out,
             char **err)
{
    struct loader ld = {.file = path ? path : "environment", .mode = mode, .env = env, .err = err};
    int rc;

    *out = NULL;
    *err = NULL;
    config_init(&ld.lc);
    ld.cfg = calloc(1, sizeof(*ld.cfg));
    if (!ld.cfg || init_defaults(ld.cfg) != 0) {
        rc = fail(&ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    if (!path) {
        rc = mode == CFG_MODE_API ? 0 : fail(&ld, -EINVAL, 0, NULL, "no configuration file");
    } else {
        rc = locate(&ld, path);
        if (rc == 0)
            rc = parse_file(&ld);
        if (rc == 0)
            rc = walk_group(&ld, config_root_setting(&ld.lc), top_fields);
    }
    if (rc == 0)
        rc = finish(&ld);
out:
    if (ld.secret) {
        /* libconfig does not wipe what it frees: wipe its copy of the secret here. */
        char *v = (char *)config_setting_get_string(ld.secret);

        OPENSSL_cleanse(v, strlen(v));
    }
    config_destroy(&ld.lc);
    free(ld.dir);
    if (rc == 0) {
        *out = ld.cfg;
    } else {
        cfg_free(ld.cfg);
        if (!*err)
            rc = -ENOMEM;
    }
    return rc;
}

static void free_secret(char **s)
{
    if (*s) {
        OPENSSL_cleanse(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

void cfg_free(struct cfg *cfg)
{
    if (!cfg)
        return;
    free_secret(&cfg->secret_key);
    free_secret(&cfg->access_key);
    free(cfg->path);
    free(cfg->endpoint);
    free(cfg->ca_file);
    free(cfg->timezone);
    for (size_t i = 0; i < cfg->n_presets; i++)
        free(cfg->presets[i]);
    free(cfg->presets);
    for (size_t i = 0; i < cfg->n_dashboards; i++) {
        struct cfg_dashboard *d = &cfg->dashboards[i];

        for (size_t j = 0; j < d->n_widgets; j++) {
            free(d->widgets[j].name);
            free(d->widgets[j].id);
        }
        free(d->widgets);
        free(d->name);
        free(d->id);
    }
    free(cfg->dashboards);
    free(cfg);
}

/* ---- environment ---- */

/* Copy name's value, then zero its bytes in the environment block and unset it. */
static int env_take_one(const char *name, char **out)
{
    char *v = getenv(name);

    *out = NULL;
    if (!v)
        return 0;
    *out = strdup(v);
    if (!*out)
        return -ENOMEM;
    /* The block is what /proc/PID/environ shows; unsetenv alone leaves the bytes there. */
    memset(v, 0, strlen(v));
    unsetenv(name);
    return 0;
}

int cfg_env_take(struct cfg_env *env)
{
    env->access_key = NULL;
    env->secret_key = NULL;
    if (env_take_one("NCLOUD_ACCESS_KEY", &env->access_key) != 0 ||
        env_take_one("NCLOUD_SECRET_KEY", &env->secret_key) != 0) {
        cfg_env_cleanup(env);
        return -ENOMEM;
    }
    return 0;
}

void cfg_env_cleanup(struct cfg_env *env)
{
    if (!env)
        return;
    free_secret(&env->access_key);
    free_secret(&env->secret_key);
}

/* ---- finding the file ---- */

static int add_tried(char **tried, const char *path)
{
    char *more = NULL;

    if (asprintf(&more, "%s%s%s", *tried ? *tried : "", *tried ? ", " : "", path) < 0)
        return -ENOMEM;
    free(*tried);
    *tried = more;
    return 0;
}

int cfg_find(char **out, char **tried)
{
    const char *v = getenv("INSIGHTFS_CONFIG"), *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    char *user = NULL;
    int rc = -ENOENT, n;
    struct stat st;

    *out = NULL;
    *tried = NULL;
    if (v && *v) {
        *out = strdup(v);
        return *out ? 0 : -ENOMEM;
    }
    /* XDG: a relative XDG_CONFIG_HOME is invalid and ignored. */
    if (xdg && xdg[0] == '/')
        n = asprintf(&user, "%s/insightfs/insightfs.conf", xdg);
    else if (home && *home)
        n = asprintf(&user, "%s/.config/insightfs/insightfs.conf", home);
    else
        n = 0;
    if (n < 0) {
        user = NULL;
        rc = -ENOMEM;
        goto out;
    }
    if (user) {
        if (stat(user, &st) == 0) {
            *out = user;
            user = NULL;
            rc = 0;
            goto out;
        }
        if (add_tried(tried, user) != 0) {
            rc = -ENOMEM;
            goto out;
        }
    }
    if (stat("/etc/insightfs/insightfs.conf", &st) == 0) {
        *out = strdup("/etc/insightfs/insightfs.conf");
        rc = *out ? 0 : -ENOMEM;
        goto out;
    }
    if (add_tried(tried, "/etc/insightfs/insightfs.conf") != 0)
        rc = -ENOMEM;
out:
    free(user);
    if (rc != -ENOENT) {
        free(*tried);
        *tried = NULL;
    }
    return rc;
}

/* ---- dump ---- */

/* s as a libconfig string literal. */
static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* A number an int or int64 setting reads back: L only where int32 is too small. */
static void put_int64(FILE *f, const char *name, int64_t v)
{
    fprintf(f, "  %s = %lld%s;\n", name, (long long)v, v > INT32_MAX ? "L" : "");
}

static void put_entry(FILE *f, const char *name, const char *id)
{
    fputs("{ name = ", f);
    put_string(f, name);
    fputs("; id = ", f);
    put_string(f, id);
    fputs(";", f);
}

char *cfg_dump(const struct cfg *cfg)
{
    char *buf = NULL;
    size_t size = 0;
    size_t ak = cfg->access_key ? strlen(cfg->access_key) : 0;
    char *shown = NULL;
    FILE *f;
    int bad;

    /* Only the last 4 characters; a key that short shows none. */
    if (asprintf(&shown, "...%s", ak > 4 ? cfg->access_key + ak - 4 : "") < 0)
        return NULL;
    f = open_memstream(&buf, &size);
    if (!f) {
        free(shown);
        return NULL;
    }
    fprintf(f, "# the configuration in force, defaults filled in; the secret is not shown\n");
    fprintf(f, "api = {\n  endpoint = ");
    put_string(f, cfg->endpoint);
    fputs(";\n  access_key = ", f);
    put_string(f, shown);
    fprintf(f,
            ";\n  timeout_ms = %d;\n  connect_timeout_ms = %d;\n  retries = %d;\n"
            "  max_connections = %d;\n  max_requests_per_second = %d;\n",
            cfg->timeout_ms, cfg->connect_timeout_ms, cfg->retries, cfg->max_connections,
            cfg->max_requests_per_second);
    put_int64(f, "max_image_bytes", cfg->max_image_bytes);
    if (cfg->ca_file) {
        fputs("  ca_file = ", f);
        put_string(f, cfg->ca_file);
        fputs(";\n", f);
    }
    fprintf(f, "  resolution = \"%s\";\n};\n", cfg->resolution == VPATH_RES_HIGH ? "HIGH" : "AUTO");
    fputs("cache = {\n", f);
    put_int64(f, "max_bytes", cfg->max_bytes);
    fprintf(f,
            "  live_ttl_s = %d;\n  settle_s = %d;\n  error_ttl_s = %d;\n"
            "  stale_if_error_s = %d;\n};\n",
            cfg->live_ttl_s, cfg->settle_s, cfg->error_ttl_s, cfg->stale_if_error_s);
    fprintf(f, "time = {\n  align_s = %d;\n  timezone = ", cfg->align_s);
    put_string(f, cfg->timezone);
    fputs(";\n};\npresets = [", f);
    for (size_t i = 0; i < cfg->n_presets; i++) {
        fputs(i ? ", " : " ", f);
        put_string(f, cfg->presets[i]);
    }
    fprintf(f, " ];\nhistory_days = %d;\ndashboards = (", cfg->history_days);
    for (size_t i = 0; i < cfg->n_dashboards; i++) {
        const struct cfg_dashboard *d = &cfg->dashboards[i];

        fputs(i ? ",\n  " : "\n  ", f);
        put_entry(f, d->name, d->id);
        fputs(" widgets = (", f);
        for (size_t j = 0; j < d->n_widgets; j++) {
            fputs(j ? ",\n      " : "\n      ", f);
            put_entry(f, d->widgets[j].name, d->widgets[j].id);
            fputs(" }", f);
        }
        fputs(" ); }", f);
    }
    fprintf(f, "\n);\ndiscover = %s;\ndiscover_ttl_s = %d;\nlog_level = \"%s\";\n",
            cfg->discover ? "true" : "false", cfg->discover_ttl_s, log_level_name(cfg->log_level));
    free(shown);
    bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- discovered names ---- */

char *cfg_sanitize_name(const char *name)
{
    size_t len = strlen(name);
    char *out;

    if (len > CFG_SANITIZED_MAX) {
        size_t cut = CFG_SANITIZED_MAX;

        /* Back off over continuation bytes (at most 3: the longest UTF-8 sequence is 4)
         * so no character is split; invalid UTF-8 is cut where it is. */
        while (cut > CFG_SANITIZED_MAX - 3 && ((unsigned char)name[cut] & 0xc0) == 0x80)
            cut--;
        if (((unsigned char)name[cut] & 0xc0) == 0x80)
            cut = CFG_SANITIZED_MAX;
        len = cut;
    }
    if (len == 0)
        return NULL;
    out = strndup(name, len);
    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)out[i];

        if (c == '/' || c < 0x20 || c == 0x7f)
            out[i] = '_';
    }
    if (out[0] == '.')
        out[0] = '_';
    return out;
}
