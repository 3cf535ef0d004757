/* cfg_shared - the `shared` group of SPEC 13 (a fleet's cache level in Redis): its
 * settings, the Redis URL grammar and the password file.
 *
 * URLs are parsed strictly, whole: redis://HOST[:PORT][/DB] or unix:/PATH[?db=N].
 * Numbers are decimal without sign or leading zeros (a port of "06379" or a db of "+1"
 * is refused), a user or password in the URL is refused (the password belongs in
 * password_file, which the secret-file rules protect), and so is anything after the
 * last part. password_file is read with cfg_secret_file_read (O_NOFOLLOW, fstat, owner,
 * mode & 077 == 0, ": run chmod 600 FILE"); the password lives in struct cfg only and is
 * wiped by cfg_free. No message echoes the password.
 * No state of its own: everything lives in the struct cfg_loader passed in.
 */
#include "insightfs/cfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libconfig.h>

#include "cfg_int.h"

#define REDIS_DEFAULT_PORT 6379

/* ---- URLs ---- */

/* A decimal number of [s, s+n) without sign or leading zero, at most max. */
static int parse_dec(const char *s, size_t n, long long max, long long *out)
{
    long long v = 0;

    if (n == 0 || n > 10 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

int cfg_host_is_loopback(const char *host)
{
    unsigned char addr[sizeof(struct in6_addr)];

    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, addr) == 1)
        return addr[0] == 127;
    if (inet_pton(AF_INET6, host, addr) == 1)
        return IN6_IS_ADDR_LOOPBACK((struct in6_addr *)addr);
    return 0;
}

void cfg_redis_url_cleanup(struct cfg_redis_url *u)
{
    free(u->host);
    free(u->socket);
    u->host = u->socket = NULL;
}

static int parse_unix(const char *v, struct cfg_redis_url *out, const char **why)
{
    const char *path = v + 5, *q = strchr(path, '?');
    size_t plen = q ? (size_t)(q - path) : strlen(path);
    long long db = 0;

    if (plen < 2 || path[0] != '/') {
        *why = "needs an absolute socket path (unix:/PATH[?db=N])";
        return -EINVAL;
    }
    if (q) {
        if (strncmp(q, "?db=", 4) != 0 || parse_dec(q + 4, strlen(q + 4), INT_MAX, &db) != 0) {
            *why = "has a bad query (only ?db=N, N 0-2147483647)";
            return -EINVAL;
        }
    }
    out->socket = strndup(path, plen);
    if (!out->socket)
        return -ENOMEM;
    out->db = (int)db;
    return 0;
}

static int parse_tcp(const char *v, struct cfg_redis_url *out, const char **why)
{
    const char *host = v + 8, *p;
    size_t hlen;
    long long port = REDIS_DEFAULT_PORT, db = 0;

    if (host[0] == '[') {
        unsigned char addr[sizeof(struct in6_addr)];
        char *inner;

        p = strchr(host, ']');
        inner = p ? strndup(host + 1, (size_t)(p - host - 1)) : NULL;
        if (p && !inner)
            return -ENOMEM;
        if (!inner || inet_pton(AF_INET6, inner, addr) != 1) {
            free(inner);
            *why = "has no valid host (redis://HOST[:PORT][/DB])";
            return -EINVAL;
        }
        out->host = inner;
        p++;
    } else {
        hlen = strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._");
        if (host[hlen] == '@' || memchr(host, '@', strlen(host))) {
            *why = "must not hold a user or password (use shared.password_file)";
            return -EINVAL;
        }
        if (hlen == 0 || host[0] == '.' || host[0] == '-') {
            *why = "has no valid host (redis://HOST[:PORT][/DB])";
            return -EINVAL;
        }
        out->host = strndup(host, hlen);
        if (!out->host)
            return -ENOMEM;
        p = host + hlen;
    }
    if (*p == ':') {
        size_t n = strcspn(p + 1, "/");

        if (parse_dec(p + 1, n, 65535, &port) != 0 || port < 1) {
            *why = "has a bad port (1-65535)";
            goto bad;
        }
        p += 1 + n;
    }
    if (*p == '/' && p[1] != '\0') {
        size_t n = strlen(p + 1);

        if (parse_dec(p + 1, n, INT_MAX, &db) != 0) {
            *why = "has a bad database index (/DB, 0-2147483647)";
            goto bad;
        }
        p += 1 + n;
    } else if (*p == '/') {
        p++; /* one trailing '/' */
    }
    if (*p != '\0') {
        *why = strchr(p, '@') ? "must not hold a user or password (use shared.password_file)"
                              : "is not redis://HOST[:PORT][/DB]";
        goto bad;
    }
    out->port = (int)port;
    out->db = (int)db;
    return 0;
bad:
    cfg_redis_url_cleanup(out);
    return -EINVAL;
}

int cfg_redis_url_parse(const char *url, struct cfg_redis_url *out, const char **why)
{
    int rc;

    memset(out, 0, sizeof(*out));
    *why = NULL;
    if (cfg_has_control(url)) {
        *why = "contains a control character";
        return -EINVAL;
    }
    if (strncmp(url, "redis://", 8) == 0)
        rc = parse_tcp(url, out, why);
    else if (strncmp(url, "unix:", 5) == 0)
        rc = parse_unix(url, out, why);
    else if (strncmp(url, "rediss://", 9) == 0) {
        *why = "TLS (rediss://) is not supported: use a unix socket or a private network";
        rc = -EINVAL;
    } else {
        *why = "must be redis://HOST[:PORT][/DB] or unix:/PATH[?db=N]";
        rc = -EINVAL;
    }
    if (rc == 0 && out->socket == NULL)
        out->port = out->port ? out->port : REDIS_DEFAULT_PORT;
    if (rc != 0)
        cfg_redis_url_cleanup(out);
    if (rc == -ENOMEM)
        *why = "out of memory";
    return rc;
}

/* ---- the group ---- */

static int check_int(struct cfg_loader *ld, const config_setting_t *s, long long lo, long long hi,
                     int *out)
{
    int rc = cfg_check_type(ld, s, CFG_K_INT, "an integer");
    long long v;

    if (rc)
        return rc;
    v = config_setting_get_int64(s);
    if (v < lo || v > hi)
        return cfg_fail_at(ld, -EINVAL, s, "%lld is out of range (%lld-%lld)", v, lo, hi);
    *out = (int)v;
    return 0;
}

static int take_redis(struct cfg_loader *ld, const config_setting_t *s)
{
    struct cfg_shared *sh = &ld->cfg->shared;
    const char *v, *why = NULL;
    struct cfg_redis_url u;
    int rc = cfg_check_type(ld, s, CFG_K_STRING, "a string");

    if (rc)
        return rc;
    v = config_setting_get_string(s);
    rc = cfg_redis_url_parse(v, &u, &why);
    if (rc == -ENOMEM)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    if (rc && strchr(v, '@'))
        return cfg_fail_at(ld, rc, s, "%s", why); /* the value may hold a password */
    if (rc)
        return cfg_fail_value(ld, s, v, why);
    sh->redis = strdup(v);
    if (!sh->redis) {
        cfg_redis_url_cleanup(&u);
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    }
    sh->host = u.host;
    sh->socket = u.socket;
    sh->port = u.port;
    sh->db = u.db;
    return 0;
}

static int take_password_file(struct cfg_loader *ld, const config_setting_t *s)
{
    int rc = cfg_check_type(ld, s, CFG_K_STRING, "a string");

    if (rc)
        return rc;
    if (!*config_setting_get_string(s))
        return cfg_fail_at(ld, -EINVAL, s, "is empty");
    return cfg_secret_file_read(ld, "shared.password_file", s, &ld->cfg->shared.password,
                                &ld->cfg->shared.password_file);
}

int cfg_take_shared(struct cfg_loader *ld, const config_setting_t *grp)
{
    struct cfg_shared *sh = &ld->cfg->shared;
    const config_setting_t *redis = NULL;
    int n = config_setting_length(grp), rc = 0;

    sh->timeout_ms = 100;
    sh->final_ttl_s = 2592000;
    sh->fleet_requests_per_second = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
        const char *name = config_setting_name(s);

        if (strcmp(name, "redis") == 0) {
            redis = s;
            rc = take_redis(ld, s);
        } else if (strcmp(name, "password_file") == 0)
            rc = take_password_file(ld, s);
        else if (strcmp(name, "timeout_ms") == 0)
            rc = check_int(ld, s, 10, 10000, &sh->timeout_ms);
        else if (strcmp(name, "final_ttl_s") == 0)
            rc = check_int(ld, s, 60, 31536000, &sh->final_ttl_s);
        else if (strcmp(name, "fleet_requests_per_second") == 0)
            rc = check_int(ld, s, 0, 10000, &sh->fleet_requests_per_second);
        else
            rc = cfg_fail_at(ld, -EINVAL, s, "unknown setting");
    }
    if (rc == 0 && !redis)
        rc = cfg_fail(ld, -EINVAL, 0, "shared.redis",
                      "missing (redis://HOST[:PORT][/DB] or unix:/PATH[?db=N])");
    return rc;
}
