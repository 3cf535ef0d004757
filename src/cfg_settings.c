/* cfg_settings - the settings of SPEC section 3: their defaults, the tables the loader
 * walks, and each setting's check.
 *
 * One table per group names every setting with the type it must have and either the
 * inclusive range and the struct cfg member it fills, or a take_* function that checks
 * the value and takes it. The walk follows the file's order and stops at the first
 * unknown name, wrong type or bad value. What can only be decided once the whole file is
 * read is remembered in the loader and settled by cfg_settings_finish: the ranges that
 * depend on another setting, and which credential wins (cfg_file.c).
 *
 * Two defaults follow other settings so that changing one never makes an untouched
 * default invalid: an unset connect_timeout_ms is min(5000, timeout_ms), an unset
 * max_image_bytes is min(16 MiB, max_bytes).
 *
 * The values of api.access_key and api.secret_key are never echoed in a message.
 * No state of its own: everything lives in the struct cfg_loader passed in.
 */
#include "insightfs/cfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>

#include "cfg_int.h"

#define MIB (INT64_C(1) << 20)
#define TIB (INT64_C(1) << 40)

/* ---- defaults ---- */

static const char *const default_presets[] = {"last-1h", "last-6h", "last-24h",
                                              "last-7d", "today",   "yesterday"};

int cfg_settings_init(struct cfg *cfg)
{
    cfg->endpoint = strdup("https://cw.apigw.ntruss.com");
    cfg->timezone = strdup("UTC");
    cfg->timeout_ms = 15000;
    cfg->connect_timeout_ms = 5000;
    cfg->retries = 2;
    cfg->max_connections = 8;
    cfg->max_requests_per_second = 0;
    cfg->max_pending = 4096;
    cfg->max_image_bytes = 16 * MIB;
    cfg->resolution = VPATH_RES_AUTO;
    cfg->max_bytes = 256 * MIB;
    cfg->live_ttl_s = 60;
    cfg->settle_s = 300;
    cfg->error_ttl_s = 10;
    cfg->stale_if_error_s = 3600;
    cfg->readahead = true;
    cfg->align_s = 60;
    cfg->history_days = 30;
    cfg->discover = false;
    cfg->discover_ttl_s = 300;
    cfg->pages = false;
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

/* ---- the settings ---- */

struct field {
    const char *name;
    enum cfg_kind kind;
    size_t off;     /* CFG_K_INT: int, CFG_K_INT64: int64_t, CFG_K_BOOL: bool in struct cfg */
    int64_t lo, hi; /* inclusive range of CFG_K_INT and CFG_K_INT64 */
    /* CFG_K_STRING, CFG_K_LIST, and numbers checked after the walk: takes the setting. */
    int (*take)(struct cfg_loader *ld, const config_setting_t *s);
    const struct field *sub; /* CFG_K_GROUP */
    const char *want;        /* the type a message asks for */
};

static int take_endpoint(struct cfg_loader *ld, const config_setting_t *s);
static int take_access_key(struct cfg_loader *ld, const config_setting_t *s);
static int take_secret(struct cfg_loader *ld, const config_setting_t *s);
static int take_secret_file(struct cfg_loader *ld, const config_setting_t *s);
static int take_later(struct cfg_loader *ld, const config_setting_t *s);
static int take_ca_file(struct cfg_loader *ld, const config_setting_t *s);
static int take_resolution(struct cfg_loader *ld, const config_setting_t *s);
static int take_domain_code(struct cfg_loader *ld, const config_setting_t *s);
static int take_timezone(struct cfg_loader *ld, const config_setting_t *s);
static int take_presets(struct cfg_loader *ld, const config_setting_t *s);
static int take_log_level(struct cfg_loader *ld, const config_setting_t *s);

#define OFF(m) offsetof(struct cfg, m)
#define STR(n, fn)                                                                                 \
    {                                                                                              \
        n, CFG_K_STRING, 0, 0, 0, fn, NULL, "a string"                                             \
    }
#define INT(n, m, lo, hi)                                                                          \
    {                                                                                              \
        n, CFG_K_INT, OFF(m), lo, hi, NULL, NULL, "an integer"                                     \
    }

static const struct field api_fields[] = {
    STR("endpoint", take_endpoint),
    STR("access_key", take_access_key),
    STR("secret_key", take_secret),
    STR("secret_key_file", take_secret_file),
    INT("timeout_ms", timeout_ms, 100, 600000),
    {"connect_timeout_ms", CFG_K_INT, 0, 0, 0, take_later, NULL, "an integer"},
    INT("retries", retries, 0, 10),
    INT("max_connections", max_connections, 1, 256),
    INT("max_requests_per_second", max_requests_per_second, 0, 10000),
    {"max_image_bytes", CFG_K_INT64, 0, 0, 0, take_later, NULL, "an integer"},
    STR("ca_file", take_ca_file),
    STR("resolution", take_resolution),
    INT("max_pending", max_pending, 16, 1000000),
    STR("domain_code", take_domain_code),
    {NULL},
};

static const struct field cache_fields[] = {
    {"max_bytes", CFG_K_INT64, OFF(max_bytes), MIB, TIB, NULL, NULL, "an integer"},
    INT("live_ttl_s", live_ttl_s, 0, 86400),
    INT("settle_s", settle_s, 0, 604800),
    INT("error_ttl_s", error_ttl_s, 0, 3600),
    INT("stale_if_error_s", stale_if_error_s, 0, 604800),
    {"readahead", CFG_K_BOOL, OFF(readahead), 0, 0, NULL, NULL, "true or false"},
    {NULL},
};

static const struct field time_fields[] = {
    INT("align_s", align_s, 1, 86400),
    STR("timezone", take_timezone),
    {NULL},
};

static const struct field top_fields[] = {
    {"api", CFG_K_GROUP, 0, 0, 0, NULL, api_fields, "a group"},
    {"cache", CFG_K_GROUP, 0, 0, 0, NULL, cache_fields, "a group"},
    {"time", CFG_K_GROUP, 0, 0, 0, NULL, time_fields, "a group"},
    {"presets", CFG_K_LIST, 0, 0, 0, take_presets, NULL, "an array of strings"},
    INT("history_days", history_days, 1, 3660),
    {"dashboards", CFG_K_LIST, 0, 0, 0, cfg_take_dashboards, NULL, "a list of groups"},
    {"discover", CFG_K_BOOL, OFF(discover), 0, 0, NULL, NULL, "true or false"},
    INT("discover_ttl_s", discover_ttl_s, 10, 86400),
    {"pages", CFG_K_BOOL, OFF(pages), 0, 0, NULL, NULL, "true or false"},
    STR("log_level", take_log_level),
    {"shared", CFG_K_GROUP, 0, 0, 0, cfg_take_shared, NULL, "a group"},
    {NULL},
};

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

/* Integers: int or int64 alike (range-checked); lists: a list, or an array ([] is empty). */
int cfg_check_type(struct cfg_loader *ld, const config_setting_t *s, enum cfg_kind kind,
                   const char *want)
{
    int t = config_setting_type(s);
    bool ok;

    switch (kind) {
    case CFG_K_GROUP:
        ok = t == CONFIG_TYPE_GROUP;
        break;
    case CFG_K_INT:
    case CFG_K_INT64:
        ok = t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64;
        break;
    case CFG_K_BOOL:
        ok = t == CONFIG_TYPE_BOOL;
        break;
    case CFG_K_STRING:
        ok = t == CONFIG_TYPE_STRING;
        break;
    default:
        ok = t == CONFIG_TYPE_LIST || t == CONFIG_TYPE_ARRAY;
        break;
    }
    if (ok)
        return 0;
    return cfg_fail_at(ld, -EINVAL, s, "must be %s, not %s", want, type_name(t));
}

static int check_range(struct cfg_loader *ld, const config_setting_t *s, int64_t lo, int64_t hi,
                       const char *why)
{
    long long v = config_setting_get_int64(s);

    if (v >= lo && v <= hi)
        return 0;
    return cfg_fail_at(ld, -EINVAL, s, "%lld is out of range (%lld-%lld%s)", v, (long long)lo,
                       (long long)hi, why);
}

static int walk_group(struct cfg_loader *ld, const config_setting_t *grp,
                      const struct field *fields)
{
    int n = config_setting_length(grp);

    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const struct field *f = fields;
        int rc;

        while (f->name && strcmp(f->name, config_setting_name(s)) != 0)
            f++;
        if (!f->name)
            return cfg_fail_at(ld, -EINVAL, s, "unknown setting");
        rc = cfg_check_type(ld, s, f->kind, f->want);
        if (rc)
            return rc;
        if (f->kind == CFG_K_GROUP && !f->take)
            rc = walk_group(ld, s, f->sub);
        else if (f->take)
            rc = f->take(ld, s);
        else if (f->kind == CFG_K_BOOL)
            *(bool *)((char *)ld->cfg + f->off) = config_setting_get_bool(s) != 0;
        else if ((rc = check_range(ld, s, f->lo, f->hi, "")) == 0) {
            if (f->kind == CFG_K_INT)
                *(int *)((char *)ld->cfg + f->off) = (int)config_setting_get_int64(s);
            else
                *(int64_t *)((char *)ld->cfg + f->off) = config_setting_get_int64(s);
        }
        if (rc)
            return rc;
    }
    return 0;
}

int cfg_settings_walk(struct cfg_loader *ld)
{
    return walk_group(ld, config_root_setting(&ld->lc), top_fields);
}

/* ---- strings ---- */

bool cfg_has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return true;
    return false;
}

static int replace(struct cfg_loader *ld, char **slot, const char *value)
{
    char *copy = strdup(value);

    if (!copy)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    free(*slot);
    *slot = copy;
    return 0;
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
static int take_endpoint(struct cfg_loader *ld, const config_setting_t *s)
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
        return cfg_fail_value(ld, s, v,
                              "must start with https:// (http:// only for loopback hosts)");
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
        return cfg_fail_value(ld, s, v, "has no valid host (scheme://host[:port])");
    p = host + host_len;
    if (*p == ':' && p < v + len) {
        size_t digits = strspn(p + 1, "0123456789");
        long port = digits > 0 && digits <= 5 ? strtol(p + 1, NULL, 10) : 0;

        if (port < 1 || port > 65535 || p + 1 + digits != v + len)
            return cfg_fail_value(ld, s, v, "has a bad port (1-65535)");
        p += 1 + digits;
    }
    if (p != v + len)
        return cfg_fail_value(ld, s, v,
                              *p == '/' ? "has a path (scheme://host[:port] only)"
                                        : "is not scheme://host[:port]");
    if (http && !is_loopback(host, host_len))
        return cfg_fail_at(ld, -EINVAL, s, "https is required (http:// only for loopback hosts)");
    copy = strndup(v, len);
    if (!copy)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    rc = replace(ld, &ld->cfg->endpoint, copy);
    free(copy);
    return rc;
}

/* The access key is never echoed: it only says what is wrong. */
static int take_access_key(struct cfg_loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (!*v)
        return cfg_fail_at(ld, -EINVAL, s, "is empty");
    if (cfg_has_control(v))
        return cfg_fail_at(ld, -EINVAL, s, "contains a control character");
    ld->access = s;
    return 0;
}

/* Remembered: which secret wins is decided once the whole file is read. */
static int take_secret(struct cfg_loader *ld, const config_setting_t *s)
{
    ld->secret = s;
    return 0;
}

static int take_secret_file(struct cfg_loader *ld, const config_setting_t *s)
{
    if (!*config_setting_get_string(s))
        return cfg_fail_at(ld, -EINVAL, s, "is empty");
    ld->secret_file = s;
    return 0;
}

/* Numbers whose range depends on a setting that may come later in the file. */
static int take_later(struct cfg_loader *ld, const config_setting_t *s)
{
    if (strcmp(config_setting_name(s), "connect_timeout_ms") == 0)
        ld->connect = s;
    else
        ld->max_image = s;
    return 0;
}

static int take_ca_file(struct cfg_loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);
    char *path;
    struct stat st;
    int fd, rc = 0;

    if (!*v)
        return cfg_fail_at(ld, -EINVAL, s, "is empty");
    path = cfg_resolve(ld, v);
    if (!path)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rc = cfg_fail(ld, -errno, 0, "api.ca_file", "%s: %s", path, cfg_errstr(errno));
        goto out;
    }
    if (fstat(fd, &st) != 0)
        rc = cfg_fail(ld, -errno, 0, "api.ca_file", "%s: %s", path, cfg_errstr(errno));
    else if (!S_ISREG(st.st_mode))
        rc = cfg_fail(ld, -EINVAL, 0, "api.ca_file", "%s is not a regular file", path);
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

static int take_resolution(struct cfg_loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (strcmp(v, "AUTO") == 0)
        ld->cfg->resolution = VPATH_RES_AUTO;
    else if (strcmp(v, "HIGH") == 0)
        ld->cfg->resolution = VPATH_RES_HIGH;
    else
        return cfg_fail_value(ld, s, v, "is not AUTO or HIGH");
    return 0;
}

/* The gateway's domain codes, exactly as the guide spells them. */
static int take_domain_code(struct cfg_loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (strcmp(v, "PUB") != 0 && strcmp(v, "GOV") != 0 && strcmp(v, "FIN") != 0)
        return cfg_fail_value(ld, s, v, "is not PUB, GOV or FIN");
    return replace(ld, &ld->cfg->domain_code, v);
}

static int take_timezone(struct cfg_loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (!vpath_tz_valid(v))
        return cfg_fail_value(ld, s, v,
                              "is not a time zone tzdata knows (\"local\", \"UTC\" or a name "
                              "such as \"Asia/Seoul\")");
    return replace(ld, &ld->cfg->timezone, v);
}

static int take_log_level(struct cfg_loader *ld, const config_setting_t *s)
{
    const char *v = config_setting_get_string(s);

    if (log_level_parse(v, &ld->cfg->log_level) != 0)
        return cfg_fail_value(ld, s, v, "is not a log level (error, warn, info or debug)");
    return 0;
}

static int take_presets(struct cfg_loader *ld, const config_setting_t *s)
{
    struct cfg *cfg = ld->cfg;
    int n = config_setting_length(s);

    ld->presets_set = true;
    cfg->presets = calloc(n > 0 ? (size_t)n : 1, sizeof(*cfg->presets));
    if (!cfg->presets)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
        const char *v;
        int rc = cfg_check_type(ld, e, CFG_K_STRING, "a string");

        if (rc)
            return rc;
        v = config_setting_get_string(e);
        if (!vpath_is_relative(v))
            return cfg_fail_value(ld, e, v,
                                  "is not a relative name (last-N followed by m, h, d or w; "
                                  "today; yesterday)");
        for (size_t j = 0; j < cfg->n_presets; j++) {
            if (strcmp(cfg->presets[j], v) == 0) {
                char *what = NULL;

                if (asprintf(&what, "is already presets.[%zu]", j) < 0)
                    return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
                rc = cfg_fail_value(ld, e, v, what);
                free(what);
                return rc;
            }
        }
        cfg->presets[cfg->n_presets] = strdup(v);
        if (!cfg->presets[cfg->n_presets])
            return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
        cfg->n_presets++;
    }
    return 0;
}

/* ---- after the walk ---- */

/* Everything that needs the whole file but the credentials (cfg_file.c). */
int cfg_settings_finish(struct cfg_loader *ld)
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
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    if (ld->mode == CFG_MODE_MOUNT && !ld->dashboards_set && !cfg->discover)
        return cfg_fail(ld, -EINVAL, 0, "dashboards",
                        "missing (list dashboards, or set discover = true)");
    return cfg_dashboards_finish(ld);
}
