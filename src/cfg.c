/* cfg - the configuration file (libconfig syntax) -> an immutable, validated struct cfg.
 *
 * This file is the loader: cfg_load's pipeline, the one-line messages every step fails
 * with, and cfg_free. Loading is one pass over a private copy of the file:
 *   1. open it once (O_NOFOLLOW first), fstat that descriptor and read the text from it, so
 *      the file whose owner and mode are checked is the file that is parsed;
 *   2. scan the raw text before libconfig sees it: `@include` is refused (a secret could
 *      hide in a file nobody checked, and libconfig would open it during the parse), so is
 *      a NUL byte (libconfig would silently stop there), and so is an integer literal
 *      that libconfig 1.5 would silently truncate (5000000000 without L);
 *   3. parse with config_read_string (line numbers are those of the file);
 *   4. walk every setting in file order against the tables of settings: unknown names,
 *      wrong types and out-of-range values fail at the first offender;
 *   5. checks that need the whole file: ranges that depend on another setting,
 *      `dashboards` required, then the credentials (config, secret_key_file, environment).
 *
 * The files of the module, in that order:
 *   cfg_file.c        steps 1-3 and the credentials of step 5: files opened safely, the
 *                     raw-text scan, secrets, the environment; also cfg_find;
 *   cfg_settings.c    steps 4-5: defaults, the tables of settings, each setting's check;
 *   cfg_shared.c      the shared group (SPEC 13): Redis URLs, the password file;
 *   cfg_dashboards.c  the dashboards and widgets lists and the rules of names and ids
 *                     (also cfg_sanitize_name, those rules applied to discovered names);
 *   cfg_dump.c        a struct cfg written back as libconfig text;
 *   cfg_int.h         struct cfg_loader, the state of one load, and what the files share.
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
 * No global state; cfg_load is thread-safe (libconfig 1.5's parser is reentrant).
 */
#include "insightfs/cfg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>
#include <openssl/crypto.h>

#include "cfg_int.h"

#define CFG_ECHO_MAX 80 /* bytes of a value quoted in a message */

/* ---- messages ---- */

const char *cfg_errstr(int e)
{
    const char *s = strerrordesc_np(e);
    return s ? s : "unknown error";
}

/* s with its control characters (below 0x20, and 0x7f) as \xNN, so that a message stays
 * one printable line: a path named in the file may hold a newline. Returns s itself when
 * it has none, else a new string, freeing s; NULL (s freed) when out of memory. */
static char *one_line(char *s)
{
    size_t n = 0;
    char *out, *o;

    if (!cfg_has_control(s))
        return s;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        n += *p < 0x20 || *p == 0x7f ? 4 : 1;
    out = malloc(n + 1);
    if (out) {
        o = out;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
            if (*p < 0x20 || *p == 0x7f)
                o += sprintf(o, "\\x%02x", *p);
            else
                *o++ = (char)*p;
        }
        *o = '\0';
    }
    free(s);
    return out;
}

/* Build *err as "FILE[:LINE]: [SETTING: ]MESSAGE" and return rc. */
int cfg_fail(struct cfg_loader *ld, int rc, int line, const char *setting, const char *fmt, ...)
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
    if (n < 0) {
        *ld->err = NULL; /* undefined after a failed asprintf: nomem must not free it */
        goto nomem;
    }
    *ld->err = one_line(*ld->err);
    if (!*ld->err)
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
char *cfg_setting_path(const config_setting_t *s)
{
    const config_setting_t *parent = config_setting_parent(s);
    char *up = NULL, *out = NULL;
    int n;

    if (parent && !config_setting_is_root(parent)) {
        up = cfg_setting_path(parent);
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
int cfg_fail_at(struct cfg_loader *ld, int rc, const config_setting_t *s, const char *fmt, ...)
{
    char *path = cfg_setting_path(s), *msg = NULL;
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
    rc = cfg_fail(ld, rc, config_setting_source_line(s), path, "%s", msg);
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
int cfg_fail_value(struct cfg_loader *ld, const config_setting_t *s, const char *value,
                   const char *what)
{
    char *q = quote(value);
    int rc;

    if (!q)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    rc = cfg_fail_at(ld, -EINVAL, s, "%s %s", q, what);
    free(q);
    return rc;
}

/* ---- loading ---- */

/* Make path absolute (realpath of its folder, then its own name, so a symbolic link stays
 * the name SIGHUP re-reads) into cfg->path and ld->dir. */
static int locate(struct cfg_loader *ld, const char *path)
{
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    char *dir = NULL;
    int rc = 0;

    if (!*base)
        return cfg_fail(ld, -EISDIR, 0, NULL, "%s", cfg_errstr(EISDIR));
    if (slash == path)
        dir = strdup("/");
    else if (slash)
        dir = strndup(path, (size_t)(slash - path));
    else
        dir = strdup(".");
    if (!dir)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    ld->dir = realpath(dir, NULL);
    if (!ld->dir) {
        rc = cfg_fail(ld, -errno, 0, NULL, "%s", cfg_errstr(errno));
        goto out;
    }
    if (asprintf(&ld->cfg->path, "%s/%s", strcmp(ld->dir, "/") == 0 ? "" : ld->dir, base) < 0) {
        ld->cfg->path = NULL;
        rc = cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    ld->file = ld->cfg->path;
out:
    free(dir);
    return rc;
}

int cfg_load(const char *path, enum cfg_mode mode, const struct cfg_env *env, struct cfg **out,
             char **err)
{
    struct cfg_loader ld = {
        .file = path ? path : "environment", .mode = mode, .env = env, .err = err};
    int rc;

    *out = NULL;
    *err = NULL;
    config_init(&ld.lc);
    ld.cfg = calloc(1, sizeof(*ld.cfg));
    if (!ld.cfg || cfg_settings_init(ld.cfg) != 0) {
        rc = cfg_fail(&ld, -ENOMEM, 0, NULL, "out of memory");
        goto out;
    }
    if (!path) {
        rc = mode == CFG_MODE_API ? 0 : cfg_fail(&ld, -EINVAL, 0, NULL, "no configuration file");
    } else {
        rc = locate(&ld, path);
        if (rc == 0)
            rc = cfg_file_parse(&ld);
        if (rc == 0)
            rc = cfg_settings_walk(&ld);
    }
    if (rc == 0)
        rc = cfg_settings_finish(&ld);
    if (rc == 0)
        rc = cfg_credentials_take(&ld);
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

/* Wipe and free *s, then set it NULL. */
void cfg_secret_free(char **s)
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
    cfg_secret_free(&cfg->secret_key);
    cfg_secret_free(&cfg->access_key);
    free(cfg->path);
    free(cfg->endpoint);
    free(cfg->ca_file);
    free(cfg->domain_code);
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
    cfg_secret_free(&cfg->shared.password);
    free(cfg->shared.password_file);
    free(cfg->shared.redis);
    free(cfg->shared.host);
    free(cfg->shared.socket);
    free(cfg);
}
