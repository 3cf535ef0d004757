/* cfg_file - where the configuration's text and credentials come from: files opened
 * safely, the raw text scanned before libconfig parses it, secrets, the environment, and
 * the search for the configuration file (cfg_find).
 *
 * The configuration file is opened once (O_NOFOLLOW first; through a symbolic link only
 * after noting that it is one), checked by fstat on that descriptor and read from it, so
 * the file whose owner and mode are checked is the file that is parsed. The raw text is
 * walked as libconfig's scanner walks it, and refused on `@include` (a secret could hide
 * in a file nobody checked, and libconfig would open it during the parse), on a NUL byte
 * (libconfig would silently stop there), and on an integer literal that libconfig 1.5
 * would silently truncate (5000000000 without L).
 *
 * A file that holds a secret (the configuration when it sets api.secret_key, and
 * api.secret_key_file) must be named itself, not through a symbolic link, and be a
 * regular file owned by the effective uid or root with no group or other bits. Buffers
 * that held file text are wiped before they are freed (and grown by copying, never
 * realloc). A credential taken from the environment is copied, its bytes in the
 * environment block are zeroed and the variable is unset.
 *
 * No global state. cfg_env_take changes the environment: call it before any thread
 * starts. The rest is thread-safe.
 */
#include "insightfs/cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libconfig.h>
#include <openssl/crypto.h>

#include "cfg_int.h"

#define CFG_FILE_MAX (16u << 20)        /* larger than any sane configuration */
#define CFG_SECRET_FILE_MAX (64u << 10) /* a key file is one short line */

/* ---- reading ---- */

/* Wipe the len bytes of text read into buf (they may hold a secret) and free it.
 * NULL-safe. */
static void text_free(char *buf, size_t len)
{
    if (buf) {
        OPENSSL_cleanse(buf, len);
        free(buf);
    }
}

/* Read all of fd (at most max bytes; exactly max is fine) into a NUL-terminated buffer.
 * The buffer holds one byte more than the text, so the read that finds the end needs
 * no growth (and, at max, tells a file of max bytes from a larger one). Growth copies
 * and wipes by hand (no realloc) because the text may hold a secret. */
static int read_all(int fd, size_t max, char **out, size_t *len_out)
{
    struct stat st;
    size_t cap = max + 2 < 4096 ? max + 2 : 4096, len = 0; /* never above max + 2 */
    char *buf;

    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= 0 &&
        (uint64_t)st.st_size <= max)
        cap = (size_t)st.st_size + 2;
    buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t r;

        if (len + 1 == cap) {
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *nbuf;

            if (len > max) {
                text_free(buf, len);
                return -EFBIG;
            }
            nbuf = malloc(ncap);
            if (!nbuf) {
                text_free(buf, len);
                return -ENOMEM;
            }
            memcpy(nbuf, buf, len);
            text_free(buf, len);
            buf = nbuf;
            cap = ncap;
        }
        r = read(fd, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;

            text_free(buf, len);
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

/* ---- the raw text, before libconfig ---- */

/* The first of each problem libconfig would not report (or would act on), by line. */
struct scan {
    int include_line, nul_line, int_line;
    const char *int_tok; /* the integer literal at int_line */
    size_t int_len;
    bool int_64;        /* it had an L suffix: it overflows 64 bits */
    unsigned numbers;   /* number literals seen so far */
    unsigned int_index; /* which of them (from 0) the one at int_line is */
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
    unsigned index = sc->numbers++;

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
        sc->int_index = index;
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

/* ---- the configuration file ---- */

/* The number setting (int, int64 or float; a scalar or an element) that is the *n-th
 * (from 0) number literal of the file under s, or NULL. The parser appends the members of
 * groups, lists and arrays in file order, and in a file it parsed each number literal the
 * scan counted is one such setting. Counts *n down. */
static const config_setting_t *nth_number(const config_setting_t *s, unsigned *n)
{
    int type = config_setting_type(s);

    if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64 || type == CONFIG_TYPE_FLOAT)
        return (*n)-- == 0 ? s : NULL;
    if (config_setting_is_aggregate(s)) {
        for (int i = 0; i < config_setting_length(s); i++) {
            const config_setting_t *hit = nth_number(config_setting_get_elem(s, (unsigned)i), n);

            if (hit)
                return hit;
        }
    }
    return NULL;
}

/* The integer literal libconfig would truncate: "FILE:LINE: SETTING: MESSAGE" (SPEC 2
 * leaves SETTING out only for errors libconfig's own parser reports, and it reports
 * none here). */
static int fail_int(struct cfg_loader *ld, const struct scan *sc)
{
    int shown = sc->int_len > 40 ? 40 : (int)sc->int_len;
    const char *more = sc->int_len > 40 ? "..." : "";
    unsigned n = sc->int_index;
    const config_setting_t *s = nth_number(config_root_setting(&ld->lc), &n);
    char *path = s ? cfg_setting_path(s) : NULL;
    int rc;

    if (s && !path)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    if (sc->int_64)
        rc = cfg_fail(ld, -EINVAL, sc->int_line, path, "%.*s%s does not fit in a 64-bit integer",
                      shown, sc->int_tok, more);
    else
        rc = cfg_fail(ld, -EINVAL, sc->int_line, path,
                      "%.*s%s does not fit in a 32-bit integer: write %.*s%sL", shown, sc->int_tok,
                      more, shown, sc->int_tok, more);
    free(path);
    return rc;
}

/* Open, check, scan and parse the file into ld->lc. */
int cfg_file_parse(struct cfg_loader *ld)
{
    struct scan sc = {0};
    char *text = NULL;
    size_t len = 0;
    int fd, rc;

    fd = open(ld->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ELOOP) {
        /* Fine for a file without a secret; cfg_credentials_take refuses it otherwise. */
        ld->via_link = true;
        fd = open(ld->file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    }
    if (fd < 0 || fstat(fd, &ld->st) != 0) {
        rc = cfg_fail(ld, -errno, 0, NULL, "%s", cfg_errstr(errno));
        goto out;
    }
    if (S_ISDIR(ld->st.st_mode)) {
        rc = cfg_fail(ld, -EISDIR, 0, NULL, "%s", cfg_errstr(EISDIR));
        goto out;
    }
    rc = read_all(fd, CFG_FILE_MAX, &text, &len);
    if (rc) {
        rc = rc == -EFBIG ? cfg_fail(ld, rc, 0, NULL, "larger than %u MiB", CFG_FILE_MAX >> 20)
                          : cfg_fail(ld, rc, 0, NULL, "%s", cfg_errstr(-rc));
        goto out;
    }
    scan_text(text, len, &sc);
    if (sc.include_line) {
        rc = cfg_fail(ld, -EINVAL, sc.include_line, NULL,
                      "@include is not allowed: put every setting in this file");
        goto out;
    }
    if (sc.nul_line) {
        rc = cfg_fail(ld, -EINVAL, sc.nul_line, NULL, "NUL byte (the file must be text)");
        goto out;
    }
    if (!config_read_string(&ld->lc, text)) {
        rc = cfg_fail(ld, -EINVAL, config_error_line(&ld->lc), NULL, "%s",
                      config_error_text(&ld->lc));
        goto out;
    }
    if (sc.int_line) {
        rc = fail_int(ld, &sc);
        goto out;
    }
out:
    text_free(text, len);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* A path named in the file: absolute as is, else relative to the file's folder. */
char *cfg_resolve(const struct cfg_loader *ld, const char *p)
{
    char *out = NULL;

    if (p[0] == '/')
        return strdup(p);
    if (asprintf(&out, "%s/%s", strcmp(ld->dir, "/") == 0 ? "" : ld->dir, p) < 0)
        return NULL;
    return out;
}

/* ---- secrets and credentials ---- */

/* A file that holds a secret: a regular file owned by us or root, no group/other bits. */
static int check_secret_mode(struct cfg_loader *ld, const char *setting, const char *path,
                             const struct stat *st)
{
    if (!S_ISREG(st->st_mode))
        return cfg_fail(ld, -EINVAL, 0, setting, "%s is not a regular file", path);
    if (st->st_uid != geteuid() && st->st_uid != 0)
        return cfg_fail(ld, -EACCES, 0, setting, "%s is owned by uid %u, not by uid %u or root",
                        path, (unsigned)st->st_uid, (unsigned)geteuid());
    if (st->st_mode & 077)
        return cfg_fail(ld, -EACCES, 0, setting,
                        "%s is accessible by group or others (mode %04o): run chmod 600 %s", path,
                        (unsigned)(st->st_mode & 07777), path);
    return 0;
}

/* The first line of a secret file (api.secret_key_file, shared.password_file), one
 * trailing "\n" or "\r\n" dropped. */
int cfg_secret_file_read(struct cfg_loader *ld, const char *setting, const config_setting_t *s,
                         char **secret, char **path_out)
{
    char *path = cfg_resolve(ld, config_setting_get_string(s)), *buf = NULL;
    size_t len = 0, line;
    struct stat st;
    int fd = -1, rc;

    if (!path)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0 && errno == ELOOP) {
        rc = cfg_fail(ld, -ELOOP, 0, setting, "%s is a symbolic link (name the file itself)", path);
        goto out;
    }
    if (fd < 0 || fstat(fd, &st) != 0) {
        rc = cfg_fail(ld, -errno, 0, setting, "%s: %s", path, cfg_errstr(errno));
        goto out;
    }
    rc = check_secret_mode(ld, setting, path, &st);
    if (rc)
        goto out;
    rc = read_all(fd, CFG_SECRET_FILE_MAX, &buf, &len);
    if (rc == -EFBIG) {
        rc = cfg_fail(ld, rc, 0, setting, "%s is larger than %u KiB", path,
                      CFG_SECRET_FILE_MAX >> 10);
        goto out;
    }
    if (rc) {
        rc = cfg_fail(ld, rc, 0, setting, "%s: %s", path, cfg_errstr(-rc));
        goto out;
    }
    line = strcspn(buf, "\n");
    if (line < len && buf[line] == '\0') {
        rc = cfg_fail(ld, -EINVAL, 0, setting, "the first line of %s contains a NUL byte", path);
        goto out;
    }
    if (line > 0 && line < len && buf[line - 1] == '\r')
        line--;
    if (line == 0) {
        rc = cfg_fail(ld, -EINVAL, 0, setting, "the first line of %s is empty", path);
        goto out;
    }
    *secret = strndup(buf, line);
    if (!*secret)
        rc = cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    else if (path_out) {
        *path_out = path;
        path = NULL;
    }
out:
    text_free(buf, len);
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

/* Access key from the file, else the environment; secret from api.secret_key,
 * api.secret_key_file or the environment, in that order. An empty environment variable
 * counts as unset. */
int cfg_credentials_take(struct cfg_loader *ld)
{
    const struct cfg_env *env = ld->env;
    struct cfg *cfg = ld->cfg;
    bool no_file = ld->dir == NULL;
    int rc;

    if (ld->access) {
        cfg->access_key = strdup(config_setting_get_string(ld->access));
    } else if (env && env->access_key && *env->access_key) {
        /* The rule of api.access_key: the key goes into a request header, where a CR or
         * LF would inject a header (an env file with CRLF endings gives "AK\r"). */
        if (cfg_has_control(env->access_key))
            return cfg_fail(ld, -EINVAL, 0, "NCLOUD_ACCESS_KEY", "contains a control character");
        cfg->access_key = strdup(env->access_key);
    } else if (no_file) {
        return cfg_fail(ld, -EINVAL, 0, "NCLOUD_ACCESS_KEY", "not set, and no configuration file");
    } else {
        return cfg_fail(ld, -EINVAL, 0, "api.access_key",
                        "missing (set it here or in NCLOUD_ACCESS_KEY)");
    }
    if (!cfg->access_key)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");

    if (ld->secret && ld->secret_file)
        return cfg_fail_at(ld, -EINVAL, ld->secret_file,
                           "set either api.secret_key or api.secret_key_file, not both");
    if (ld->secret) {
        const char *v = config_setting_get_string(ld->secret);

        if (!*v)
            return cfg_fail_at(ld, -EINVAL, ld->secret, "is empty");
        if (ld->via_link)
            return cfg_fail(ld, -ELOOP, 0, "api.secret_key",
                            "%s is a symbolic link (a file holding a secret must be named itself)",
                            ld->file);
        rc = check_secret_mode(ld, "api.secret_key", ld->file, &ld->st);
        if (rc)
            return rc;
        cfg->secret_key = strdup(v);
    } else if (ld->secret_file) {
        return cfg_secret_file_read(ld, "api.secret_key_file", ld->secret_file, &cfg->secret_key,
                                    NULL);
    } else if (env && env->secret_key && *env->secret_key) {
        cfg->secret_key = strdup(env->secret_key);
    } else if (no_file) {
        return cfg_fail(ld, -EINVAL, 0, "NCLOUD_SECRET_KEY", "not set, and no configuration file");
    } else {
        return cfg_fail(ld, -EINVAL, 0, "api.secret_key",
                        "missing (set api.secret_key, api.secret_key_file or NCLOUD_SECRET_KEY)");
    }
    if (!cfg->secret_key)
        return cfg_fail(ld, -ENOMEM, 0, NULL, "out of memory");
    return 0;
}

/* ---- environment ---- */

/* Copy name's value, then zero the value of every NAME= entry of the environment block
 * and unset it. The block is what /proc/PID/environ shows and it may hold the name more
 * than once (execve takes any list): getenv returns only the first entry, and unsetenv
 * drops them all from environ but leaves their bytes in place. */
static int env_take_one(const char *name, char **out)
{
    size_t n = strlen(name);
    char *v = getenv(name);

    *out = NULL;
    if (!v)
        return 0;
    *out = strdup(v);
    if (!*out)
        return -ENOMEM;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            memset(*e + n + 1, 0, strlen(*e + n + 1));
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
    cfg_secret_free(&env->access_key);
    cfg_secret_free(&env->secret_key);
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
