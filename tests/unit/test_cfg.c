/* test_cfg - the configuration file of SPEC section 3, good and bad.
 *
 * Every file is written at test time into a mkdtemp folder with an exact mode (git keeps
 * no modes); tests/unit/cfg/ holds the longer fixtures, copied the same way. Error cases
 * assert the exact message: "@F" in an expected message stands for the temp folder's
 * t.conf, "@D" for the temp folder (realpath'd, as cfg_load reports absolute paths).
 * Every error message is also checked not to contain a secret or an access key.
 * Run from the repository root (as make does): fixtures are found next to this file.
 */
#include "insightfs/cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

static char *tmp;    /* the temp folder, realpath'd */
static char *srcdir; /* the folder of this file */

static char env_ak[] = "AKENVACCESS0000ABCD";
static char env_sk[] = "ENV-SECRET-must-never-show";
static const struct cfg_env ENV = {env_ak, env_sk};

#define FILE_SECRET "FILE-SECRET-must-never-show"
#define FILE_AK "AKFILEACCESS00WXYZ"

/* ---- helpers ---- */

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;

    va_start(ap, fmt);
    assert_true(vasprintf(&s, fmt, ap) >= 0);
    va_end(ap);
    return s;
}

/* fmt with @D -> the temp folder, @F -> the temp folder's t.conf. */
static char *expand(const char *fmt)
{
    size_t cap = strlen(fmt) * 2 + strlen(tmp) * 8 + 64, o = 0;
    char *out = malloc(cap);

    assert_non_null(out);
    for (const char *p = fmt; *p; p++) {
        const char *add = NULL;

        if (p[0] == '@' && p[1] == 'D')
            add = "";
        else if (p[0] == '@' && p[1] == 'F')
            add = "/t.conf";
        if (add) {
            size_t need = strlen(tmp) + strlen(add);

            if (o + need + 1 >= cap) {
                cap = (o + need + 1) * 2;
                out = realloc(out, cap);
                assert_non_null(out);
            }
            o += (size_t)sprintf(out + o, "%s%s", tmp, add);
            p++;
            continue;
        }
        if (o + 2 >= cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        out[o++] = *p;
    }
    out[o] = '\0';
    return out;
}

/* Write len bytes to tmp/name with exactly mode; returns the absolute path. */
static char *write_bytes(const char *name, mode_t mode, const char *text, size_t len)
{
    char *path = xasprintf("%s/%s", tmp, name);
    int fd;

    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    assert_int_equal(close(fd), 0);
    return path;
}

static char *write_file(const char *name, mode_t mode, const char *text)
{
    return write_bytes(name, mode, text, strlen(text));
}

static char *read_fixture(const char *rel)
{
    char *path = xasprintf("%s/%s", srcdir, rel), *buf;
    FILE *f = fopen(path, "r");
    long n;

    if (!f)
        fail_msg("fixture %s: %s (run from the repository root)", path, strerror(errno));
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    rewind(f);
    buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    free(path);
    return buf;
}

static void no_secret_in(const char *err)
{
    if (!err)
        return;
    if (strstr(err, env_sk) || strstr(err, FILE_SECRET) || strstr(err, "sk-good") ||
        strstr(err, env_ak) || strstr(err, FILE_AK))
        fail_msg("a credential in a message: %s", err);
}

/* Write text to t.conf (mode), load it; checks the error/out contract. */
static int load_as(const char *text, mode_t mode, enum cfg_mode m, const struct cfg_env *env,
                   struct cfg **cfg, char **err)
{
    char *path = write_file("t.conf", mode, text);
    int rc = cfg_load(path, m, env, cfg, err);

    free(path);
    if (rc == 0) {
        assert_non_null(*cfg);
        assert_null(*err);
    } else {
        assert_null(*cfg);
        assert_non_null(*err);
        assert_null(strchr(*err, '\n'));
        no_secret_in(*err);
    }
    return rc;
}

static struct cfg *load_ok(const char *text, enum cfg_mode m, const struct cfg_env *env)
{
    struct cfg *cfg = NULL;
    char *err = NULL;

    if (load_as(text, 0600, m, env, &cfg, &err) != 0)
        fail_msg("load failed: %s\n--- text:\n%s", err, text);
    return cfg;
}

static void expect_err(const char *text, mode_t mode, enum cfg_mode m, const struct cfg_env *env,
                       int want_rc, const char *want_fmt)
{
    struct cfg *cfg = NULL;
    char *err = NULL, *want = expand(want_fmt);
    int rc = load_as(text, mode, m, env, &cfg, &err);

    if (rc != want_rc || !err || strcmp(err, want) != 0)
        fail_msg("text:\n%s\n--- rc %d, want %d\n--- got:  %s\n--- want: %s", text, rc, want_rc,
                 err ? err : "(none)", want);
    free(err);
    free(want);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state)
{
    char tpl[] = "/tmp/test_cfg.XXXXXX";
    char *file = strdup(__FILE__), *slash;

    (void)state;
    if (!mkdtemp(tpl))
        return -1;
    tmp = realpath(tpl, NULL);
    slash = strrchr(file, '/');
    if (slash)
        *slash = '\0';
    else
        strcpy(file, ".");
    srcdir = file;
    unsetenv("NCLOUD_ACCESS_KEY");
    unsetenv("NCLOUD_SECRET_KEY");
    return tmp ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    nftw(tmp, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(tmp);
    free(srcdir);
    return 0;
}

/* ---- good files ---- */

static void test_good_fixture(void **state)
{
    char *text = read_fixture("cfg/good.conf"), *conf = write_file("good.conf", 0644, text);
    char *sec = write_file("secret.txt", 0600, "sk-good\r\nsecond line\n");
    char *ca = write_file("ca.pem", 0644, "not checked here\n");
    struct cfg *cfg = NULL;
    char *err = NULL;

    (void)state;
    /* A file without secret_key may be 0644: the secret is in secret.txt. */
    if (cfg_load(conf, CFG_MODE_MOUNT, NULL, &cfg, &err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->path, conf);
    assert_string_equal(cfg->endpoint, "http://127.0.0.1:8080");
    assert_string_equal(cfg->access_key, "AKGOODFIXTURE1234");
    assert_string_equal(cfg->secret_key, "sk-good");
    assert_string_equal(cfg->ca_file, ca);
    assert_int_equal(cfg->timeout_ms, 20000);
    assert_int_equal(cfg->connect_timeout_ms, 3000);
    assert_int_equal(cfg->retries, 5);
    assert_int_equal(cfg->max_connections, 16);
    assert_int_equal(cfg->max_requests_per_second, 20);
    assert_int_equal(cfg->max_image_bytes, 2097152);
    assert_int_equal(cfg->resolution, VPATH_RES_HIGH);
    assert_string_equal(cfg->domain_code, "GOV");
    assert_int_equal(cfg->max_bytes, INT64_C(2147483648));
    assert_int_equal(cfg->live_ttl_s, 30);
    assert_int_equal(cfg->settle_s, 600);
    assert_int_equal(cfg->error_ttl_s, 5);
    assert_int_equal(cfg->stale_if_error_s, 7200);
    assert_int_equal(cfg->align_s, 300);
    assert_string_equal(cfg->timezone, "Asia/Seoul");
    assert_int_equal(cfg->n_presets, 3);
    assert_string_equal(cfg->presets[0], "last-15m");
    assert_string_equal(cfg->presets[1], "last-2d");
    assert_string_equal(cfg->presets[2], "today");
    assert_int_equal(cfg->history_days, 7);
    assert_int_equal(cfg->n_dashboards, 3);
    assert_string_equal(cfg->dashboards[0].name, "web");
    assert_string_equal(cfg->dashboards[0].id, "df_457958429047263232");
    assert_int_equal(cfg->dashboards[0].n_widgets, 2);
    assert_string_equal(cfg->dashboards[0].widgets[0].name, "cpu");
    assert_string_equal(cfg->dashboards[0].widgets[0].id, "cpu_avg__1234");
    assert_string_equal(cfg->dashboards[0].widgets[1].name, "mem_used__5678");
    assert_string_equal(cfg->dashboards[0].widgets[1].id, "mem_used__5678");
    assert_string_equal(cfg->dashboards[1].name, "db-1");
    assert_string_equal(cfg->dashboards[1].id, "db-1");
    assert_int_equal(cfg->dashboards[1].n_widgets, 0);
    assert_string_equal(cfg->dashboards[2].name, "caf\xc3\xa9 \"q\"");
    assert_int_equal(cfg->dashboards[2].n_widgets, 0);
    assert_true(cfg->discover);
    assert_int_equal(cfg->discover_ttl_s, 600);
    assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
    cfg_free(cfg);
    free(text);
    free(conf);
    free(sec);
    free(ca);
}

static void test_defaults(void **state)
{
    char *text = read_fixture("cfg/minimal.conf");
    struct cfg *cfg = load_ok(text, CFG_MODE_MOUNT, &ENV);

    (void)state;
    assert_string_equal(cfg->endpoint, "https://cw.apigw.ntruss.com");
    assert_string_equal(cfg->access_key, env_ak);
    assert_string_equal(cfg->secret_key, env_sk);
    assert_null(cfg->ca_file);
    assert_int_equal(cfg->timeout_ms, 15000);
    assert_int_equal(cfg->connect_timeout_ms, 5000);
    assert_int_equal(cfg->retries, 2);
    assert_int_equal(cfg->max_connections, 8);
    assert_int_equal(cfg->max_requests_per_second, 0);
    assert_int_equal(cfg->max_image_bytes, 16777216);
    assert_int_equal(cfg->resolution, VPATH_RES_AUTO);
    assert_null(cfg->domain_code); /* unset: the header follows the endpoint (SPEC 1) */
    assert_int_equal(cfg->max_bytes, 268435456);
    assert_int_equal(cfg->live_ttl_s, 60);
    assert_int_equal(cfg->settle_s, 300);
    assert_int_equal(cfg->error_ttl_s, 10);
    assert_int_equal(cfg->stale_if_error_s, 3600);
    assert_int_equal(cfg->align_s, 60);
    assert_string_equal(cfg->timezone, "UTC");
    assert_int_equal(cfg->n_presets, 6);
    assert_string_equal(cfg->presets[0], "last-1h");
    assert_string_equal(cfg->presets[1], "last-6h");
    assert_string_equal(cfg->presets[2], "last-24h");
    assert_string_equal(cfg->presets[3], "last-7d");
    assert_string_equal(cfg->presets[4], "today");
    assert_string_equal(cfg->presets[5], "yesterday");
    assert_int_equal(cfg->history_days, 30);
    assert_int_equal(cfg->n_dashboards, 1);
    assert_string_equal(cfg->dashboards[0].name, "d1");
    assert_int_equal(cfg->dashboards[0].n_widgets, 0);
    assert_false(cfg->discover);
    assert_int_equal(cfg->discover_ttl_s, 300);
    assert_false(cfg->pages);
    assert_int_equal(cfg->log_level, LOG_LVL_INFO);
    cfg_free(cfg);
    free(text);
}

/* The shipped example loads (with its secret file next to it). */
static void test_example(void **state)
{
    char *text = read_fixture("../../conf/insightfs.conf.example");
    char *sec = write_file("secret", 0600, "example-secret\n");
    struct cfg *cfg = load_ok(text, CFG_MODE_MOUNT, NULL);

    (void)state;
    assert_string_equal(cfg->secret_key, "example-secret");
    assert_int_equal(cfg->n_dashboards, 1);
    cfg_free(cfg);
    free(text);
    free(sec);
}

/* Values that load, one setting each: every boundary just inside. */
struct ok_case {
    const char *text;
    size_t off;
    int is64;
    int64_t want;
};

#define O(m) offsetof(struct cfg, m)

static const struct ok_case ok_cases[] = {
    {"api = { timeout_ms = 100; connect_timeout_ms = 100; };", O(timeout_ms), 0, 100},
    {"api = { timeout_ms = 600000; };", O(timeout_ms), 0, 600000},
    {"api = { timeout_ms = 20000L; };", O(timeout_ms), 0, 20000}, /* int64 for an int */
    {"api = { timeout_ms = 0x3e8; };", O(timeout_ms), 0, 1000},
    {"api = { timeout_ms = 1000; connect_timeout_ms = 1000; };", O(connect_timeout_ms), 0, 1000},
    /* an unset connect_timeout_ms follows a small timeout_ms */
    {"api = { timeout_ms = 1000; };", O(connect_timeout_ms), 0, 1000},
    {"api = { retries = 0; };", O(retries), 0, 0},
    {"api = { retries = 10; };", O(retries), 0, 10},
    {"api = { max_connections = 1; };", O(max_connections), 0, 1},
    {"api = { max_connections = 256; };", O(max_connections), 0, 256},
    {"api = { max_requests_per_second = 10000; };", O(max_requests_per_second), 0, 10000},
    {"api = { max_image_bytes = 1024; };", O(max_image_bytes), 1, 1024},
    {"api = { max_image_bytes = 2097152; }; cache = { max_bytes = 2097152; };", O(max_image_bytes),
     1, 2097152},
    /* an unset max_image_bytes follows a small max_bytes */
    {"cache = { max_bytes = 1048576; };", O(max_image_bytes), 1, 1048576},
    {"cache = { max_bytes = 1048576; };", O(max_bytes), 1, 1048576},
    {"cache = { max_bytes = 1099511627776L; };", O(max_bytes), 1, INT64_C(1099511627776)},
    {"cache = { max_bytes = 2147483647; };", O(max_bytes), 1, 2147483647},
    {"cache = { max_bytes = 2147483648L; };", O(max_bytes), 1, INT64_C(2147483648)},
    {"cache = { max_bytes = 0x80000000L; };", O(max_bytes), 1, INT64_C(2147483648)},
    {"cache = { live_ttl_s = 0; };", O(live_ttl_s), 0, 0},
    {"cache = { live_ttl_s = 86400; };", O(live_ttl_s), 0, 86400},
    {"cache = { settle_s = 604800; };", O(settle_s), 0, 604800},
    {"cache = { error_ttl_s = 3600; };", O(error_ttl_s), 0, 3600},
    {"cache = { stale_if_error_s = 604800; };", O(stale_if_error_s), 0, 604800},
    {"time = { align_s = 1; };", O(align_s), 0, 1},
    {"time = { align_s = 86400; };", O(align_s), 0, 86400},
    {"history_days = 1;", O(history_days), 0, 1},
    {"history_days = 3660;", O(history_days), 0, 3660},
    {"discover_ttl_s = 10;", O(discover_ttl_s), 0, 10},
    {"discover_ttl_s = 86400;", O(discover_ttl_s), 0, 86400},
    {"discover = TRUE;", O(discover), 2, 1},
    {"pages = true;", O(pages), 2, 1},
    {"pages = false;", O(pages), 2, 0},
    /* index.html is an ordinary name while pages = false, wherever `pages` comes */
    {"pages = false;\ndashboards = ( { name = \"index.html\"; id = \"x\"; } );", O(pages), 2, 0},
    {"dashboards = ( { id = \"d\"; widgets = ( { id = \"index.html\"; } ); } );", O(pages), 2, 0},
    /* and with pages, a name that only contains it is fine too */
    {"pages = true;\ndashboards = ( { name = \"index.html (x)\"; id = \"x\"; } );", O(pages), 2, 1},
    /* @include is inert in comments and strings */
    {"# @include \"x\"\n/*\n x @include \"y\"\n*/ history_days = 2;", O(history_days), 0, 2},
    {"dashboards = ( { name = \"@include\"; id = \"x\"; } );\nhistory_days = 3;", O(history_days),
     0, 3},
    /* numbers in comments and strings are not integers */
    {"# 5000000000\nlog_level = \"debug\"; // 99999999999999999999\nhistory_days = 4;",
     O(history_days), 0, 4},
    /* digits inside a string are not an integer */
    {"dashboards = ( { name = \"5000000000\"; id = \"x\"; } );\nhistory_days = 5;", O(history_days),
     0, 5},
    /* CRLF line ends */
    {"api = {\r\n  retries = 3;\r\n};\r\n", O(retries), 0, 3},
};

static void test_ok_values(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(ok_cases) / sizeof(ok_cases[0]); i++) {
        const struct ok_case *c = &ok_cases[i];
        struct cfg *cfg = NULL;
        char *err = NULL;
        int64_t got;

        if (load_as(c->text, 0600, CFG_MODE_API, &ENV, &cfg, &err) != 0)
            fail_msg("ok case %zu: %s\n--- text: %s", i, err, c->text);
        if (c->is64 == 2)
            got = *(bool *)((char *)cfg + c->off);
        else if (c->is64)
            got = *(int64_t *)((char *)cfg + c->off);
        else
            got = *(int *)((char *)cfg + c->off);
        if (got != c->want)
            fail_msg("ok case %zu: %lld, want %lld\n--- text: %s", i, (long long)got,
                     (long long)c->want, c->text);
        cfg_free(cfg);
    }
}

/* api.domain_code: each of the gateway's three codes loads as written (SPEC 3). */
static void test_domain_code(void **state)
{
    static const char *const codes[] = {"PUB", "GOV", "FIN"};

    (void)state;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        char *text = xasprintf("api = { domain_code = \"%s\"; };", codes[i]);
        struct cfg *cfg = load_ok(text, CFG_MODE_API, &ENV);

        assert_string_equal(cfg->domain_code, codes[i]);
        cfg_free(cfg);
        free(text);
    }
}

/* ---- bad files: exact messages ---- */

struct bad_case {
    const char *text;
    int rc;
    const char *want;
};

static const struct bad_case bad_cases[] = {
    /* unknown settings, nested too */
    {"api = { timeut_ms = 100; };", -EINVAL, "@F:1: api.timeut_ms: unknown setting"},
    {"\ncache = {\n  max_byte = 1;\n};", -EINVAL, "@F:3: cache.max_byte: unknown setting"},
    {"foo = 1;", -EINVAL, "@F:1: foo: unknown setting"},
    {"time = { zone = \"UTC\"; };", -EINVAL, "@F:1: time.zone: unknown setting"},
    {"dashboards = (\n  { id = \"a\";\n    widgets = ( { id = \"w\";\n      title = \"x\"; } ); "
     "}\n);",
     -EINVAL, "@F:4: dashboards.[0].widgets.[0].title: unknown setting"},
    {"dashboards = ( { id = \"a\"; title = \"x\"; } );", -EINVAL,
     "@F:1: dashboards.[0].title: unknown setting"},
    /* a widget has no widgets */
    {"dashboards = ( { id = \"a\"; widgets = ( { id = \"w\"; widgets = (); } ); } );", -EINVAL,
     "@F:1: dashboards.[0].widgets.[0].widgets: unknown setting"},

    /* wrong types */
    {"api = { endpoint = 5; };", -EINVAL, "@F:1: api.endpoint: must be a string, not an integer"},
    {"api = { timeout_ms = \"100\"; };", -EINVAL,
     "@F:1: api.timeout_ms: must be an integer, not a string"},
    {"api = { timeout_ms = 100.0; };", -EINVAL,
     "@F:1: api.timeout_ms: must be an integer, not a float"},
    {"api = { secret_key = 12345; };", -EINVAL,
     "@F:1: api.secret_key: must be a string, not an integer"},
    {"discover = 1;", -EINVAL, "@F:1: discover: must be true or false, not an integer"},
    {"discover = \"true\";", -EINVAL, "@F:1: discover: must be true or false, not a string"},
    {"api = 1;", -EINVAL, "@F:1: api: must be a group, not an integer"},
    {"cache = ( );", -EINVAL, "@F:1: cache: must be a group, not a list"},
    {"presets = \"today\";", -EINVAL, "@F:1: presets: must be an array of strings, not a string"},
    {"presets = [ 1, 2 ];", -EINVAL, "@F:1: presets.[0]: must be a string, not an integer"},
    {"dashboards = { id = \"x\"; };", -EINVAL,
     "@F:1: dashboards: must be a list of groups, not a group"},
    {"dashboards = ( \"x\" );", -EINVAL, "@F:1: dashboards.[0]: must be a group, not a string"},
    {"dashboards = ( { id = 5; } );", -EINVAL,
     "@F:1: dashboards.[0].id: must be a string, not an integer"},
    {"dashboards = ( { id = \"d\"; widgets = ( { id = \"w\"; name = true; } ); } );", -EINVAL,
     "@F:1: dashboards.[0].widgets.[0].name: must be a string, not a boolean"},
    {"dashboards = ( { id = \"d\"; widgets = 3; } );", -EINVAL,
     "@F:1: dashboards.[0].widgets: must be a list of groups, not an integer"},
    {"history_days = 5000000000L;", -EINVAL,
     "@F:1: history_days: 5000000000 is out of range (1-3660)"},

    /* ranges: just outside each boundary */
    {"api = { timeout_ms = 99; };", -EINVAL,
     "@F:1: api.timeout_ms: 99 is out of range (100-600000)"},
    {"api = { timeout_ms = 600001; };", -EINVAL,
     "@F:1: api.timeout_ms: 600001 is out of range (100-600000)"},
    {"api = { retries = -1; };", -EINVAL, "@F:1: api.retries: -1 is out of range (0-10)"},
    {"api = { retries = 11; };", -EINVAL, "@F:1: api.retries: 11 is out of range (0-10)"},
    {"api = { max_connections = 0; };", -EINVAL,
     "@F:1: api.max_connections: 0 is out of range (1-256)"},
    {"api = { max_connections = 257; };", -EINVAL,
     "@F:1: api.max_connections: 257 is out of range (1-256)"},
    {"api = { max_requests_per_second = 10001; };", -EINVAL,
     "@F:1: api.max_requests_per_second: 10001 is out of range (0-10000)"},
    {"cache = { max_bytes = 1048575; };", -EINVAL,
     "@F:1: cache.max_bytes: 1048575 is out of range (1048576-1099511627776)"},
    {"cache = { max_bytes = 1099511627777L; };", -EINVAL,
     "@F:1: cache.max_bytes: 1099511627777 is out of range (1048576-1099511627776)"},
    {"cache = { live_ttl_s = 86401; };", -EINVAL,
     "@F:1: cache.live_ttl_s: 86401 is out of range (0-86400)"},
    {"cache = { settle_s = 604801; };", -EINVAL,
     "@F:1: cache.settle_s: 604801 is out of range (0-604800)"},
    {"cache = { error_ttl_s = 3601; };", -EINVAL,
     "@F:1: cache.error_ttl_s: 3601 is out of range (0-3600)"},
    {"cache = { stale_if_error_s = -1; };", -EINVAL,
     "@F:1: cache.stale_if_error_s: -1 is out of range (0-604800)"},
    {"time = { align_s = 0; };", -EINVAL, "@F:1: time.align_s: 0 is out of range (1-86400)"},
    {"time = { align_s = 86401; };", -EINVAL,
     "@F:1: time.align_s: 86401 is out of range (1-86400)"},
    {"history_days = 0;", -EINVAL, "@F:1: history_days: 0 is out of range (1-3660)"},
    {"history_days = 3661;", -EINVAL, "@F:1: history_days: 3661 is out of range (1-3660)"},
    {"discover_ttl_s = 9;", -EINVAL, "@F:1: discover_ttl_s: 9 is out of range (10-86400)"},
    {"discover_ttl_s = 86401;", -EINVAL, "@F:1: discover_ttl_s: 86401 is out of range (10-86400)"},
    /* ranges that depend on another setting, wherever it is in the file */
    {"api = {\n  connect_timeout_ms = 1001;\n  timeout_ms = 1000;\n};", -EINVAL,
     "@F:2: api.connect_timeout_ms: 1001 is out of range (100-1000; at most api.timeout_ms)"},
    {"api = { connect_timeout_ms = 99; };", -EINVAL,
     "@F:1: api.connect_timeout_ms: 99 is out of range (100-15000; at most api.timeout_ms)"},
    {"api = { max_image_bytes = 2097153; };\ncache = { max_bytes = 2097152; };", -EINVAL,
     "@F:1: api.max_image_bytes: 2097153 is out of range (1024-2097152; at most "
     "cache.max_bytes)"},
    {"api = { max_image_bytes = 1023; };", -EINVAL,
     "@F:1: api.max_image_bytes: 1023 is out of range (1024-268435456; at most cache.max_bytes)"},
    /* integers libconfig 1.5 would truncate silently: our scan, not libconfig's parser,
     * reports them, so SPEC 2 wants the setting named */
    {"cache = {\n  max_bytes = 5000000000;\n};", -EINVAL,
     "@F:2: cache.max_bytes: 5000000000 does not fit in a 32-bit integer: write 5000000000L"},
    {"api = { timeout_ms = 4294967396; };", -EINVAL,
     "@F:1: api.timeout_ms: 4294967396 does not fit in a 32-bit integer: write 4294967396L"},
    {"history_days = 4294967396;", -EINVAL,
     "@F:1: history_days: 4294967396 does not fit in a 32-bit integer: write 4294967396L"},
    {"api = { retries = -2147483649; };", -EINVAL,
     "@F:1: api.retries: -2147483649 does not fit in a 32-bit integer: write -2147483649L"},
    {"api = { timeout_ms = 0x80000000; };", -EINVAL,
     "@F:1: api.timeout_ms: 0x80000000 does not fit in a 32-bit integer: write 0x80000000L"},
    {"cache = { max_bytes = 99999999999999999999L; };", -EINVAL,
     "@F:1: cache.max_bytes: 99999999999999999999L does not fit in a 64-bit integer"},
    {"cache = { max_bytes = 9223372036854775808L; };", -EINVAL,
     "@F:1: cache.max_bytes: 9223372036854775808L does not fit in a 64-bit integer"},
    /* the setting is the one holding the literal, among others on the line and before */
    {"x = 1.5e3; y = ( .5, 7 );\napi = { retries = 1; timeout_ms = 0x10; max_pending = "
     "2147483648; };",
     -EINVAL,
     "@F:2: api.max_pending: 2147483648 does not fit in a 32-bit integer: write 2147483648L"},
    {"presets = [ 1, 2,\n  4294967396 ];", -EINVAL,
     "@F:2: presets.[2]: 4294967396 does not fit in a 32-bit integer: write 4294967396L"},
    {"dashboards = ( { id = \"5\"; widgets = ( 1, { n = ( 2L, 3.0 ); m = -4294967396; } ); } );",
     -EINVAL,
     "@F:1: dashboards.[0].widgets.[1].m: -4294967396 does not fit in a 32-bit integer: write "
     "-4294967396L"},
    {"api = { timeut_ms = 4294967396; };", -EINVAL,
     "@F:1: api.timeut_ms: 4294967396 does not fit in a 32-bit integer: write 4294967396L"},

    /* enumerations */
    {"api = { resolution = \"auto\"; };", -EINVAL,
     "@F:1: api.resolution: \"auto\" is not AUTO or HIGH"},
    {"api = { domain_code = \"fin\"; };", -EINVAL,
     "@F:1: api.domain_code: \"fin\" is not PUB, GOV or FIN"},
    {"api = {\n  domain_code = \"\";\n};", -EINVAL,
     "@F:2: api.domain_code: \"\" is not PUB, GOV or FIN"},
    {"api = { domain_code = 1; };", -EINVAL,
     "@F:1: api.domain_code: must be a string, not an integer"},
    {"time = { timezone = \"Mars/Olympus_Mons\"; };", -EINVAL,
     "@F:1: time.timezone: \"Mars/Olympus_Mons\" is not a time zone tzdata knows (\"local\", "
     "\"UTC\" or a name such as \"Asia/Seoul\")"},
    {"time = { timezone = \"../../etc/passwd\"; };", -EINVAL,
     "@F:1: time.timezone: \"../../etc/passwd\" is not a time zone tzdata knows (\"local\", "
     "\"UTC\" or a name such as \"Asia/Seoul\")"},
    {"time = { timezone = \"\"; };", -EINVAL,
     "@F:1: time.timezone: \"\" is not a time zone tzdata knows (\"local\", \"UTC\" or a name "
     "such as \"Asia/Seoul\")"},
    {"log_level = \"verbose\";", -EINVAL,
     "@F:1: log_level: \"verbose\" is not a log level (error, warn, info or debug)"},
    {"log_level = \"INFO\";", -EINVAL,
     "@F:1: log_level: \"INFO\" is not a log level (error, warn, info or debug)"},

    /* presets */
    {"presets = [ \"last-1h\", \"last-0h\" ];", -EINVAL,
     "@F:1: presets.[1]: \"last-0h\" is not a relative name (last-N followed by m, h, d or w; "
     "today; yesterday)"},
    {"presets = [ \"last-1h.png\" ];", -EINVAL,
     "@F:1: presets.[0]: \"last-1h.png\" is not a relative name (last-N followed by m, h, d or "
     "w; today; yesterday)"},
    {"presets = [ \"today\", \"last-1h\", \"today\" ];", -EINVAL,
     "@F:1: presets.[2]: \"today\" is already presets.[0]"},

    /* names and ids */
    {"dashboards = (\n  { name = \"a\"; id = \"1\"; },\n  { name = \"a\"; id = \"2\"; }\n);",
     -EINVAL, "@F:3: dashboards.[1].name: \"a\" is already the name of dashboards.[0]"},
    {"dashboards = ( { name = \"a\"; id = \"1\"; }, { name = \"b\"; id = \"1\"; } );", -EINVAL,
     "@F:1: dashboards.[1].id: \"1\" is already the id of dashboards.[0]"},
    {"dashboards = ( { name = \"a\"; id = \"1\"; }, { name = \"1\"; id = \"2\"; } );", -EINVAL,
     "@F:1: dashboards.[1].name: \"1\" is already the id of dashboards.[0]"},
    {"dashboards = ( { name = \"x\"; id = \"1\"; }, { name = \"y\"; id = \"x\"; } );", -EINVAL,
     "@F:1: dashboards.[1].id: \"x\" is already the name of dashboards.[0]"},
    {"dashboards = ( { name = \"x\"; id = \"1\"; }, { id = \"x\"; } );", -EINVAL,
     "@F:1: dashboards.[1].id: \"x\" is already the name of dashboards.[0]"},
    {"dashboards = ( { id = \"d\"; widgets = (\n  { name = \"cpu\"; id = \"w1\"; },\n"
     "  { name = \"cpu\"; id = \"w2\"; } ); } );",
     -EINVAL,
     "@F:3: dashboards.[0].widgets.[1].name: \"cpu\" is already the name of "
     "dashboards.[0].widgets.[0]"},
    {"dashboards = ( { id = \"d\"; widgets = ( { id = \"w\"; }, { id = \"w\"; } ); } );", -EINVAL,
     "@F:1: dashboards.[0].widgets.[1].id: \"w\" is already the id of dashboards.[0].widgets.[0]"},
    {"dashboards = ( { id = \"d\"; widgets = ( { name = \"a\"; id = \"w\"; },"
     " { name = \"w\"; id = \"v\"; } ); } );",
     -EINVAL,
     "@F:1: dashboards.[0].widgets.[1].name: \"w\" is already the id of "
     "dashboards.[0].widgets.[0]"},
    {"dashboards = ( { name = \"a/b\"; id = \"1\"; } );", -EINVAL,
     "@F:1: dashboards.[0].name: \"a/b\" contains '/', which a name may not"},
    {"dashboards = ( { name = \".hidden\"; id = \"1\"; } );", -EINVAL,
     "@F:1: dashboards.[0].name: \".hidden\" starts with '.', which a name may not"},
    {"dashboards = ( { name = \"..\"; id = \"1\"; } );", -EINVAL,
     "@F:1: dashboards.[0].name: \"..\" starts with '.', which a name may not"},
    {"dashboards = ( { name = \"a\\tb\"; id = \"1\"; } );", -EINVAL,
     "@F:1: dashboards.[0].name: \"a\\x09b\" contains a control character, which a name may "
     "not"},
    {"dashboards = ( { name = \"a\\x7f\"; id = \"1\"; } );", -EINVAL,
     "@F:1: dashboards.[0].name: \"a\\x7f\" contains a control character, which a name may not"},
    {"dashboards = ( { id = \"d\"; widgets = ( { name = \"\"; id = \"w\"; } ); } );", -EINVAL,
     "@F:1: dashboards.[0].widgets.[0].name: is empty (names are 1-255 bytes)"},
    {"dashboards = ( { id = \"a/b\"; } );", -EINVAL,
     "@F:1: dashboards.[0].id: \"a/b\" contains '/', which a name may not (set name: without "
     "one the id is used)"},
    {"dashboards = ( { id = \".x\"; } );", -EINVAL,
     "@F:1: dashboards.[0].id: \".x\" starts with '.', which a name may not (set name: without "
     "one the id is used)"},
    {"dashboards = ( { name = \"up\"; id = \"..\"; } );", -EINVAL,
     "@F:1: dashboards.[0].id: \"..\" is not allowed as an id"},
    {"dashboards = ( { id = \"d\"; widgets = ( { name = \"here\"; id = \".\"; } ); } );", -EINVAL,
     "@F:1: dashboards.[0].widgets.[0].id: \".\" is not allowed as an id"},
    {"dashboards = ( { name = \"a\"; id = \"\"; } );", -EINVAL,
     "@F:1: dashboards.[0].id: is empty"},
    {"dashboards = ( { name = \"a\"; id = \"x\\ny\"; } );", -EINVAL,
     "@F:1: dashboards.[0].id: \"x\\x0ay\" contains a control character"},
    /* a missing setting has no line (SPEC 2) */
    {"dashboards = (\n  { name = \"a\"; }\n);", -EINVAL, "@F: dashboards.[0].id: missing"},
    {"dashboards = (\n  { id = \"d\";\n    widgets = ( { id = \"w\"; }, { name = \"v\"; } ); }\n);",
     -EINVAL, "@F: dashboards.[0].widgets.[1].id: missing"},
    {"shared = {\n  timeout_ms = 100;\n};", -EINVAL,
     "@F: shared.redis: missing (redis://HOST[:PORT][/DB] or unix:/PATH[?db=N])"},
    /* with pages = true, index.html is the pages' name (SPEC 4), wherever `pages` comes;
     * dashboards are blamed before widgets, as for every other name rule */
    {"pages = true;\ndashboards = (\n  { name = \"index.html\"; id = \"x\"; }\n);", -EINVAL,
     "@F:3: dashboards.[0].name: \"index.html\" is the name of the pages while pages = true "
     "(rename it, or set pages = false)"},
    {"dashboards = (\n  { id = \"d\";\n    widgets = ( { id = \"w\"; },\n      { name = "
     "\"index.html\"; id = \"v\"; } ); },\n  { name = \"index.html\"; id = \"x\"; }\n);\n"
     "pages = true;",
     -EINVAL,
     "@F:5: dashboards.[1].name: \"index.html\" is the name of the pages while pages = true "
     "(rename it, or set pages = false)"},
    {"dashboards = (\n  { id = \"d\";\n    widgets = ( { id = \"w\"; },\n      { name = "
     "\"index.html\"; id = \"v\"; } ); }\n);\npages = true;",
     -EINVAL,
     "@F:4: dashboards.[0].widgets.[1].name: \"index.html\" is the name of the pages while "
     "pages = true (rename it, or set pages = false)"},
    {"dashboards = (\n  { id = \"d\"; widgets = ( { id = \"index.html\"; } ); }\n);\n"
     "pages = true;",
     -EINVAL,
     "@F:2: dashboards.[0].widgets.[0].id: \"index.html\" is the name of the pages while pages = "
     "true (set name: without one the id is used)"},
    {"pages = 1;", -EINVAL, "@F:1: pages: must be true or false, not an integer"},

    /* the file itself */
    {"api = {};\n@include \"other.conf\"\n", -EINVAL,
     "@F:2: @include is not allowed: put every setting in this file"},
    {"api = {};\n\n \t@include \"/etc/passwd\"\n", -EINVAL,
     "@F:3: @include is not allowed: put every setting in this file"},
    {"api = {\n  timeout_ms = ;\n};", -EINVAL, "@F:2: syntax error"},
    {"api = {\n  timeout_ms = 100;\n  timeout_ms = 200;\n};", -EINVAL,
     "@F:3: duplicate setting name"},
    {"log_level = \"info\";\nlog_level = \"debug\";\n", -EINVAL, "@F:2: duplicate setting name"},
    {"api = { secret_key = \"" FILE_SECRET "\"; timeout_ms = };", -EINVAL, "@F:1: syntax error"},
    {"presets = [ \"today\", 1 ];", -EINVAL, "@F:1: mismatched element type in array"},

    /* endpoint */
    {"api = { endpoint = \"http://example.com\"; };", -EINVAL,
     "@F:1: api.endpoint: https is required (http:// only for loopback hosts)"},
    {"api = { endpoint = \"http://10.0.0.1:8080\"; };", -EINVAL,
     "@F:1: api.endpoint: https is required (http:// only for loopback hosts)"},
    {"api = { endpoint = \"http://127.0.0.1.example.com\"; };", -EINVAL,
     "@F:1: api.endpoint: https is required (http:// only for loopback hosts)"},
    {"api = { endpoint = \"http://[::2]\"; };", -EINVAL,
     "@F:1: api.endpoint: https is required (http:// only for loopback hosts)"},
    {"api = { endpoint = \"https://cw.apigw.ntruss.com/cw_fea\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://cw.apigw.ntruss.com/cw_fea\" has a path (scheme://host[:port] "
     "only)"},
    {"api = { endpoint = \"https://h//\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://h//\" has a path (scheme://host[:port] only)"},
    {"api = { endpoint = \"ftp://h\"; };", -EINVAL,
     "@F:1: api.endpoint: \"ftp://h\" must start with https:// (http:// only for loopback hosts)"},
    {"api = { endpoint = \"cw.apigw.ntruss.com\"; };", -EINVAL,
     "@F:1: api.endpoint: \"cw.apigw.ntruss.com\" must start with https:// (http:// only for "
     "loopback hosts)"},
    {"api = { endpoint = \"https://\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://\" has no valid host (scheme://host[:port])"},
    {"api = { endpoint = \"https://[::1\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://[::1\" has no valid host (scheme://host[:port])"},
    {"api = { endpoint = \"https://[nope]\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://[nope]\" has no valid host (scheme://host[:port])"},
    {"api = { endpoint = \"https://h:0\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://h:0\" has a bad port (1-65535)"},
    {"api = { endpoint = \"https://h:65536\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://h:65536\" has a bad port (1-65535)"},
    {"api = { endpoint = \"https://h:\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://h:\" has a bad port (1-65535)"},
    {"api = { endpoint = \"https://h:80x\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://h:80x\" has a bad port (1-65535)"},
    {"api = { endpoint = \"https://user@h\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://user@h\" is not scheme://host[:port]"},
    {"api = { endpoint = \"https://h?x=1\"; };", -EINVAL,
     "@F:1: api.endpoint: \"https://h?x=1\" is not scheme://host[:port]"},

    /* credentials in the file */
    {"api = { access_key = \"\"; };", -EINVAL, "@F:1: api.access_key: is empty"},
    {"api = { access_key = \"" FILE_AK "\\n\"; };", -EINVAL,
     "@F:1: api.access_key: contains a control character"},
    {"api = {\n  secret_key = \"" FILE_SECRET "\";\n  secret_key_file = \"s\";\n};", -EINVAL,
     "@F:3: api.secret_key_file: set either api.secret_key or api.secret_key_file, not both"},
    {"api = { secret_key = \"\"; };", -EINVAL, "@F:1: api.secret_key: is empty"},
    {"api = { secret_key_file = \"\"; };", -EINVAL, "@F:1: api.secret_key_file: is empty"},
    {"api = { secret_key_file = \"no-such-file\"; };", -ENOENT,
     "@F: api.secret_key_file: @D/no-such-file: No such file or directory"},
    {"api = { ca_file = \"no-such.pem\"; };", -ENOENT,
     "@F: api.ca_file: @D/no-such.pem: No such file or directory"},
    {"api = { ca_file = \"\"; };", -EINVAL, "@F:1: api.ca_file: is empty"},
    {"api = { ca_file = \"/\"; };", -EINVAL, "@F: api.ca_file: / is not a regular file"},
    /* A path is echoed as given, but a message stays one line: control characters
     * become \xNN (found by tests/fuzz/fuzz_cfg). */
    {"api = { ca_file = \"no\\nsuch\\x7f.pem\"; };", -ENOENT,
     "@F: api.ca_file: @D/no\\x0asuch\\x7f.pem: No such file or directory"},
    {"api = { secret_key_file = \"a\\tb\"; };", -ENOENT,
     "@F: api.secret_key_file: @D/a\\x09b: No such file or directory"},
};

static void test_bad_files(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
        expect_err(bad_cases[i].text, 0600, CFG_MODE_API, &ENV, bad_cases[i].rc, bad_cases[i].want);
}

static void test_name_length(void **state)
{
    char name[257];
    char *text;
    struct cfg *cfg;

    (void)state;
    memset(name, 'n', 255);
    name[255] = '\0';
    text = xasprintf("dashboards = ( { name = \"%s\"; id = \"1\"; } );", name);
    cfg = load_ok(text, CFG_MODE_MOUNT, &ENV);
    assert_int_equal(strlen(cfg->dashboards[0].name), 255);
    cfg_free(cfg);
    free(text);

    memset(name, 'n', 256);
    name[256] = '\0';
    text = xasprintf(
        "dashboards = ( { id = \"d\"; widgets = ( { name = \"%s\"; id = \"1\"; } ); } );", name);
    expect_err(text, 0600, CFG_MODE_MOUNT, &ENV, -EINVAL,
               "@F:1: dashboards.[0].widgets.[0].name: is 256 bytes long (names are 1-255 bytes)");
    free(text);
    text = xasprintf("dashboards = ( { id = \"%s\"; } );", name);
    expect_err(text, 0600, CFG_MODE_MOUNT, &ENV, -EINVAL,
               "@F:1: dashboards.[0].id: is 256 bytes long (names are 1-255 bytes) (set name: "
               "without one the id is used)");
    free(text);
}

static void test_nul_byte(void **state)
{
    static const char text[] = "history_days = 3;\nlog_level = \"de\0bug\";\n";
    char *path = write_bytes("t.conf", 0600, text, sizeof(text) - 1);
    char *want = expand("@F:2: NUL byte (the file must be text)");
    struct cfg *cfg = NULL;
    char *err = NULL;

    (void)state;
    assert_int_equal(cfg_load(path, CFG_MODE_API, &ENV, &cfg, &err), -EINVAL);
    assert_null(cfg);
    assert_string_equal(err, want);
    free(err);
    free(want);
    free(path);
}

static void test_missing_file(void **state)
{
    struct cfg *cfg = NULL;
    char *err = NULL, *path = xasprintf("%s/none.conf", tmp), *want;

    (void)state;
    assert_int_equal(cfg_load(path, CFG_MODE_MOUNT, &ENV, &cfg, &err), -ENOENT);
    want = expand("@D/none.conf: No such file or directory");
    assert_string_equal(err, want);
    free(err);
    free(want);
    free(path);

    path = xasprintf("%s/no-dir/x.conf", tmp);
    assert_int_equal(cfg_load(path, CFG_MODE_MOUNT, &ENV, &cfg, &err), -ENOENT);
    want = expand("@D/no-dir/x.conf: No such file or directory");
    assert_string_equal(err, want);
    free(err);
    free(want);
    free(path);

    assert_int_equal(cfg_load(tmp, CFG_MODE_MOUNT, &ENV, &cfg, &err), -EISDIR);
    want = expand("@D: Is a directory");
    assert_string_equal(err, want);
    free(err);
    free(want);
}

/* ---- modes ---- */

static void test_mount_needs_dashboards(void **state)
{
    struct cfg *cfg;

    (void)state;
    expect_err("history_days = 3;", 0600, CFG_MODE_MOUNT, &ENV, -EINVAL,
               "@F: dashboards: missing (list dashboards, or set discover = true)");
    cfg = load_ok("discover = true;", CFG_MODE_MOUNT, &ENV);
    assert_int_equal(cfg->n_dashboards, 0);
    cfg_free(cfg);
    cfg = load_ok("history_days = 3;", CFG_MODE_API, &ENV);
    assert_int_equal(cfg->n_dashboards, 0);
    cfg_free(cfg);
    cfg = load_ok("dashboards = ();", CFG_MODE_MOUNT, &ENV);
    assert_int_equal(cfg->n_dashboards, 0);
    cfg_free(cfg);
}

static void test_no_file(void **state)
{
    struct cfg_env ak_only = {env_ak, NULL}, sk_only = {NULL, env_sk};
    struct cfg *cfg = NULL;
    char *err = NULL;

    (void)state;
    assert_int_equal(cfg_load(NULL, CFG_MODE_API, &ENV, &cfg, &err), 0);
    assert_null(cfg->path);
    assert_string_equal(cfg->access_key, env_ak);
    assert_string_equal(cfg->secret_key, env_sk);
    assert_string_equal(cfg->endpoint, "https://cw.apigw.ntruss.com");
    assert_int_equal(cfg->n_presets, 6);
    cfg_free(cfg);

    assert_int_equal(cfg_load(NULL, CFG_MODE_API, NULL, &cfg, &err), -EINVAL);
    assert_string_equal(err, "environment: NCLOUD_ACCESS_KEY: not set, and no configuration file");
    free(err);
    assert_int_equal(cfg_load(NULL, CFG_MODE_API, &sk_only, &cfg, &err), -EINVAL);
    assert_string_equal(err, "environment: NCLOUD_ACCESS_KEY: not set, and no configuration file");
    free(err);
    assert_int_equal(cfg_load(NULL, CFG_MODE_API, &ak_only, &cfg, &err), -EINVAL);
    assert_string_equal(err, "environment: NCLOUD_SECRET_KEY: not set, and no configuration file");
    no_secret_in(err);
    free(err);
    assert_int_equal(cfg_load(NULL, CFG_MODE_MOUNT, &ENV, &cfg, &err), -EINVAL);
    assert_null(cfg);
    assert_non_null(err);
    free(err);
}

/* ---- credentials ---- */

static void test_credentials_order(void **state)
{
    struct cfg_env ak_only = {env_ak, NULL}, empty = {(char *)"", (char *)""};
    char *sec = write_file("sk", 0600, "from-file\n");
    struct cfg *cfg;

    (void)state;
    /* the file wins over the environment, for each of the two */
    cfg = load_ok("api = { access_key = \"" FILE_AK "\"; secret_key = \"" FILE_SECRET "\"; };",
                  CFG_MODE_API, &ENV);
    assert_string_equal(cfg->access_key, FILE_AK);
    assert_string_equal(cfg->secret_key, FILE_SECRET);
    cfg_free(cfg);
    cfg = load_ok("api = { secret_key_file = \"sk\"; };", CFG_MODE_API, &ENV);
    assert_string_equal(cfg->access_key, env_ak);
    assert_string_equal(cfg->secret_key, "from-file");
    cfg_free(cfg);

    expect_err("history_days = 3;", 0600, CFG_MODE_API, &ak_only, -EINVAL,
               "@F: api.secret_key: missing (set api.secret_key, api.secret_key_file or "
               "NCLOUD_SECRET_KEY)");
    expect_err("api = { secret_key = \"" FILE_SECRET "\"; };", 0600, CFG_MODE_API, NULL, -EINVAL,
               "@F: api.access_key: missing (set it here or in NCLOUD_ACCESS_KEY)");
    /* an empty variable counts as unset */
    expect_err("history_days = 3;", 0600, CFG_MODE_API, &empty, -EINVAL,
               "@F: api.access_key: missing (set it here or in NCLOUD_ACCESS_KEY)");
    free(sec);
}

/* NCLOUD_ACCESS_KEY follows api.access_key's rule: the key goes into a request header,
 * so a CR or LF (an env file with CRLF endings) would inject one. */
static void test_env_access_key_control(void **state)
{
    static char ak_cr[] = "AKENVACCESS0000ABCD\r", ak_lf[] = "AKENVACCESS0000ABCD\nX-Evil: 1";
    static char ak_del[] = "AKENVACCESS0000ABCD\x7f";
    char *bad[] = {ak_cr, ak_lf, ak_del};
    struct cfg *cfg = NULL;
    char *err = NULL;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cfg_env env = {bad[i], env_sk};

        expect_err("history_days = 3;", 0600, CFG_MODE_API, &env, -EINVAL,
                   "@F: NCLOUD_ACCESS_KEY: contains a control character");
        assert_int_equal(cfg_load(NULL, CFG_MODE_API, &env, &cfg, &err), -EINVAL);
        assert_null(cfg);
        assert_string_equal(err, "environment: NCLOUD_ACCESS_KEY: contains a control character");
        no_secret_in(err);
        free(err);
        err = NULL;
        /* the file's access key wins: the variable is then not used */
        cfg = load_ok("api = { access_key = \"" FILE_AK "\"; };", CFG_MODE_API, &env);
        assert_string_equal(cfg->access_key, FILE_AK);
        cfg_free(cfg);
        cfg = NULL;
    }
}

static void test_secret_file(void **state)
{
    static const struct {
        const char *content;
        const char *want;
    } lines[] =
        {
            {"abc\r\n", "abc"},       {"abc\n", "abc"},   {"abc", "abc"},
            {"abc\r\nmore\n", "abc"}, {"abc\n\n", "abc"}, {"a b\tc\n", "a b\tc"},
            {"abc\r", "abc\r"}, /* only "\n" or "\r\n" is dropped */
        };
    struct cfg *cfg;
    char *p;

    (void)state;
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
        p = write_file("key", 0600, lines[i].content);
        cfg = load_ok("api = { secret_key_file = \"key\"; };", CFG_MODE_API, &ENV);
        assert_string_equal(cfg->secret_key, lines[i].want);
        cfg_free(cfg);
        free(p);
    }
    p = write_file("key", 0400, "ro\n");
    cfg = load_ok("api = { secret_key_file = \"key\"; };", CFG_MODE_API, &ENV);
    assert_string_equal(cfg->secret_key, "ro");
    cfg_free(cfg);
    free(p);

    p = write_file("key", 0600, "\nsecond\n");
    expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EINVAL,
               "@F: api.secret_key_file: the first line of @D/key is empty");
    free(p);
    p = write_file("key", 0600, "\r\n");
    expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EINVAL,
               "@F: api.secret_key_file: the first line of @D/key is empty");
    free(p);
    p = write_file("key", 0600, "");
    expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EINVAL,
               "@F: api.secret_key_file: the first line of @D/key is empty");
    free(p);
    p = write_bytes("key", 0600, "ab\0c\n", 5);
    expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EINVAL,
               "@F: api.secret_key_file: the first line of @D/key contains a NUL byte");
    free(p);
}

/* The limits are sizes a file may have: exactly 64 KiB (a secret file) or 16 MiB (the
 * configuration) is read, one byte more is "larger than". */
static void test_file_size_limits(void **state)
{
    const size_t key_max = 64u << 10, conf_max = 16u << 20;
    char *text = malloc(conf_max + 1), *p, *want, *err = NULL;
    struct cfg *cfg = NULL;
    size_t n;

    (void)state;
    assert_non_null(text);
    /* a secret file: the key on its first line, then filler lines */
    memset(text, 'x', key_max + 1);
    memcpy(text, "the-key\n", 8);
    for (size_t i = 80; i < key_max + 1; i += 80)
        text[i] = '\n';
    p = write_bytes("key", 0600, text, key_max);
    cfg = load_ok("api = { secret_key_file = \"key\"; };", CFG_MODE_API, &ENV);
    assert_string_equal(cfg->secret_key, "the-key");
    cfg_free(cfg);
    free(p);
    p = write_bytes("key", 0600, text, key_max + 1);
    expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EFBIG,
               "@F: api.secret_key_file: @D/key is larger than 64 KiB");
    free(p);

    /* the configuration: a setting, then comment lines of 64 bytes up to the size */
    n = (size_t)sprintf(text, "history_days = 7;\n");
    for (size_t i = n; i < conf_max + 1; i++)
        text[i] = (i - n) % 64 == 0 ? '#' : (i - n) % 64 == 63 ? '\n' : ' ';
    text[conf_max - 1] = '\n'; /* libconfig 1.5 wants a comment to end in one */
    p = write_bytes("t.conf", 0600, text, conf_max);
    if (cfg_load(p, CFG_MODE_API, &ENV, &cfg, &err) != 0)
        fail_msg("a configuration of exactly 16 MiB: %s", err);
    assert_int_equal(cfg->history_days, 7);
    cfg_free(cfg);
    free(p);
    p = write_bytes("t.conf", 0600, text, conf_max + 1);
    want = expand("@F: larger than 16 MiB");
    assert_int_equal(cfg_load(p, CFG_MODE_API, &ENV, &cfg, &err), -EFBIG);
    assert_null(cfg);
    assert_string_equal(err, want);
    free(err);
    free(want);
    free(p);
    free(text);
}

static void test_secret_modes(void **state)
{
    static const mode_t bad[] = {0644, 0640, 0604, 0610, 0601, 0660};
    char *p, *want, *link, *dir;
    struct cfg *cfg;

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = write_file("key", bad[i], FILE_SECRET "\n");
        want = xasprintf("@F: api.secret_key_file: @D/key is accessible by group or others "
                         "(mode %04o): run chmod 600 @D/key",
                         (unsigned)bad[i]);
        expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EACCES,
                   want);
        free(want);
        free(p);
    }
    p = write_file("key", 0600, FILE_SECRET "\n");
    cfg = load_ok("api = { secret_key_file = \"key\"; };", CFG_MODE_API, &ENV);
    assert_string_equal(cfg->secret_key, FILE_SECRET);
    cfg_free(cfg);

    /* a symbolic link to a good file is refused (O_NOFOLLOW) */
    link = xasprintf("%s/link", tmp);
    unlink(link);
    assert_int_equal(symlink(p, link), 0);
    expect_err("api = { secret_key_file = \"link\"; };", 0600, CFG_MODE_API, &ENV, -ELOOP,
               "@F: api.secret_key_file: @D/link is a symbolic link (name the file itself)");
    free(link);
    free(p);

    /* owned by someone else (only root can make such a file here) */
    if (geteuid() == 0) {
        p = write_file("key", 0600, FILE_SECRET "\n");
        assert_int_equal(chown(p, 12345, 12345), 0);
        expect_err("api = { secret_key_file = \"key\"; };", 0600, CFG_MODE_API, &ENV, -EACCES,
                   "@F: api.secret_key_file: @D/key is owned by uid 12345, not by uid 0 or root");
        free(p);
    }

    dir = xasprintf("%s/keydir", tmp);
    assert_int_equal(mkdir(dir, 0700), 0);
    expect_err("api = { secret_key_file = \"keydir\"; };", 0600, CFG_MODE_API, &ENV, -EINVAL,
               "@F: api.secret_key_file: @D/keydir is not a regular file");
    free(dir);

    /* the configuration file itself, when it holds secret_key */
    expect_err("api = { secret_key = \"" FILE_SECRET "\"; };", 0644, CFG_MODE_API, &ENV, -EACCES,
               "@F: api.secret_key: @F is accessible by group or others (mode 0644): run chmod "
               "600 @F");
    expect_err("api = { secret_key = \"" FILE_SECRET "\"; };", 0640, CFG_MODE_API, &ENV, -EACCES,
               "@F: api.secret_key: @F is accessible by group or others (mode 0640): run chmod "
               "600 @F");
    cfg = load_ok("api = { secret_key = \"" FILE_SECRET "\"; };", CFG_MODE_API, &ENV);
    cfg_free(cfg);
    /* without a secret, 0644 is fine */
    {
        char *err = NULL;

        cfg = NULL;
        assert_int_equal(load_as("api = { retries = 1; };", 0644, CFG_MODE_API, &ENV, &cfg, &err),
                         0);
        cfg_free(cfg);
    }
}

static void test_config_symlink(void **state)
{
    char *real = write_file("real.conf", 0600, "api = { secret_key = \"" FILE_SECRET "\"; };\n");
    char *plain = write_file("plain.conf", 0600, "history_days = 9;\n");
    char *l1 = xasprintf("%s/l1.conf", tmp), *l2 = xasprintf("%s/l2.conf", tmp), *want;
    struct cfg *cfg = NULL;
    char *err = NULL;

    (void)state;
    unlink(l1);
    unlink(l2);
    assert_int_equal(symlink("real.conf", l1), 0);
    assert_int_equal(symlink("plain.conf", l2), 0);
    assert_int_equal(cfg_load(l1, CFG_MODE_API, &ENV, &cfg, &err), -ELOOP);
    want = expand("@D/l1.conf: api.secret_key: @D/l1.conf is a symbolic link (a file holding a "
                  "secret must be named itself)");
    assert_string_equal(err, want);
    no_secret_in(err);
    free(err);
    free(want);
    /* a link to a file without a secret is fine, and keeps its own name */
    assert_int_equal(cfg_load(l2, CFG_MODE_API, &ENV, &cfg, &err), 0);
    assert_string_equal(cfg->path, l2);
    assert_int_equal(cfg->history_days, 9);
    cfg_free(cfg);
    free(real);
    free(plain);
    free(l1);
    free(l2);
}

/* Relative paths: the configuration's from the cwd, the rest from the file's folder. */
static void test_relative_paths(void **state)
{
    char *cwd = getcwd(NULL, 0), *sub = xasprintf("%s/sub", tmp), *want_path, *want_ca;
    char *p1, *p2, *p3;
    struct cfg *cfg = NULL;
    char *err = NULL;

    (void)state;
    assert_non_null(cwd);
    mkdir(sub, 0700);
    p1 = write_file("sub/c.conf", 0600,
                    "api = { secret_key_file = \"key\"; ca_file = \"../ca.pem\"; };\n");
    p2 = write_file("sub/key", 0600, "sub-secret\n");
    p3 = write_file("ca.pem", 0644, "x\n");
    want_path = xasprintf("%s/sub/c.conf", tmp);
    want_ca = xasprintf("%s/sub/../ca.pem", tmp);

    assert_int_equal(chdir("/"), 0);
    if (cfg_load(p1, CFG_MODE_API, &ENV, &cfg, &err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->secret_key, "sub-secret");
    assert_string_equal(cfg->ca_file, want_ca);
    cfg_free(cfg);

    assert_int_equal(chdir(tmp), 0);
    if (cfg_load("sub/c.conf", CFG_MODE_API, &ENV, &cfg, &err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->path, want_path);
    assert_string_equal(cfg->secret_key, "sub-secret");
    cfg_free(cfg);

    assert_int_equal(chdir(sub), 0);
    if (cfg_load("c.conf", CFG_MODE_API, &ENV, &cfg, &err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg->path, want_path);
    assert_string_equal(cfg->ca_file, want_ca);
    cfg_free(cfg);

    assert_int_equal(chdir(cwd), 0);
    free(cwd);
    free(sub);
    free(want_path);
    free(want_ca);
    free(p1);
    free(p2);
    free(p3);
}

static void test_env_take(void **state)
{
    static const char ak[] = "AKFROMTHEENVIRON0042";
    static const char sk[] = "environ-secret-value";
    struct cfg_env env;
    char *pa, *ps;
    struct cfg *cfg;

    (void)state;
    assert_int_equal(setenv("NCLOUD_ACCESS_KEY", ak, 1), 0);
    assert_int_equal(setenv("NCLOUD_SECRET_KEY", sk, 1), 0);
    pa = getenv("NCLOUD_ACCESS_KEY");
    ps = getenv("NCLOUD_SECRET_KEY");
    assert_int_equal(cfg_env_take(&env), 0);
    assert_string_equal(env.access_key, ak);
    assert_string_equal(env.secret_key, sk);
    assert_null(getenv("NCLOUD_ACCESS_KEY"));
    assert_null(getenv("NCLOUD_SECRET_KEY"));
    /* glibc keeps setenv's strings alive: the old bytes are readable, and must be zeros */
    for (size_t i = 0; i < sizeof(ak) - 1; i++)
        assert_int_equal(pa[i], 0);
    for (size_t i = 0; i < sizeof(sk) - 1; i++)
        assert_int_equal(ps[i], 0);

    cfg = load_ok("history_days = 3;", CFG_MODE_API, &env);
    assert_string_equal(cfg->access_key, ak);
    assert_string_equal(cfg->secret_key, sk);
    cfg_free(cfg);
    cfg_env_cleanup(&env);
    assert_null(env.access_key);
    assert_null(env.secret_key);
    cfg_env_cleanup(&env);
    cfg_env_cleanup(NULL);

    /* nothing set: both NULL */
    assert_int_equal(cfg_env_take(&env), 0);
    assert_null(env.access_key);
    assert_null(env.secret_key);
}

/* A block may hold a name twice (execve takes any list): getenv sees only the first
 * entry and unsetenv drops both from environ, so each value must be zeroed by hand. */
static void test_env_take_repeated(void **state)
{
    char e_sk1[] = "NCLOUD_SECRET_KEY=first-secret", e_path[] = "PATH=/bin";
    char e_ak1[] = "NCLOUD_ACCESS_KEY=AKFIRST", e_sk2[] = "NCLOUD_SECRET_KEY=second-secret";
    char e_ak2[] = "NCLOUD_ACCESS_KEY=AKSECOND", e_near[] = "NCLOUD_SECRET_KEYX=kept";
    char *block[] = {e_sk1, e_path, e_ak1, e_sk2, e_near, e_ak2, NULL};
    const struct {
        char *entry;
        size_t size;
    } taken[] = {{e_sk1, sizeof(e_sk1)},
                 {e_ak1, sizeof(e_ak1)},
                 {e_sk2, sizeof(e_sk2)},
                 {e_ak2, sizeof(e_ak2)}};
    char **saved = environ;
    const char *ak, *sk, *near;
    struct cfg_env env;
    int rc;

    (void)state;
    /* no assertion while environ is the local block: a failure would leave it there */
    environ = block;
    rc = cfg_env_take(&env);
    ak = getenv("NCLOUD_ACCESS_KEY");
    sk = getenv("NCLOUD_SECRET_KEY");
    near = getenv("NCLOUD_SECRET_KEYX");
    environ = saved;
    assert_int_equal(rc, 0);
    assert_null(ak);
    assert_null(sk);
    assert_string_equal(near, "kept");
    assert_string_equal(env.access_key, "AKFIRST");
    assert_string_equal(env.secret_key, "first-secret");
    /* the block's bytes, as /proc/PID/environ shows them: zeros after each "NAME=" */
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
        const char *value = strchr(taken[i].entry, '=') + 1;

        for (const char *p = value; p < taken[i].entry + taken[i].size; p++)
            if (*p)
                fail_msg("%.*s: a byte of the value is left", (int)(value - taken[i].entry),
                         taken[i].entry);
    }
    assert_string_equal(e_path, "PATH=/bin");
    assert_string_equal(e_near, "NCLOUD_SECRET_KEYX=kept");
    cfg_env_cleanup(&env);
}

static void test_endpoint_ok(void **state)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"https://cw.apigw.gov-ntruss.com/", "https://cw.apigw.gov-ntruss.com"},
        {"https://cw.apigw.fin-ntruss.com", "https://cw.apigw.fin-ntruss.com"},
        {"https://h:65535", "https://h:65535"},
        {"https://h:1/", "https://h:1"},
        {"https://10.1.2.3:8443", "https://10.1.2.3:8443"},
        {"http://localhost:8080/", "http://localhost:8080"},
        {"http://LOCALHOST", "http://LOCALHOST"},
        {"http://127.0.0.1", "http://127.0.0.1"},
        {"http://127.255.3.4:9", "http://127.255.3.4:9"},
        {"http://[::1]:18080", "http://[::1]:18080"},
        {"https://[2001:db8::1]:443", "https://[2001:db8::1]:443"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text = xasprintf("api = { endpoint = \"%s\"; };", cases[i].in);
        struct cfg *cfg = load_ok(text, CFG_MODE_API, &ENV);

        assert_string_equal(cfg->endpoint, cases[i].out);
        cfg_free(cfg);
        free(text);
    }
}

/* ---- cfg_find ---- */

static void restore_env(const char *name, char *saved)
{
    if (saved) {
        setenv(name, saved, 1);
        free(saved);
    } else {
        unsetenv(name);
    }
}

static char *dup_env(const char *name)
{
    const char *v = getenv(name);

    return v ? strdup(v) : NULL;
}

static void test_find(void **state)
{
    char *s_ic = dup_env("INSIGHTFS_CONFIG"), *s_xdg = dup_env("XDG_CONFIG_HOME");
    char *s_home = dup_env("HOME"), *out = NULL, *tried = NULL, *want;
    bool etc = access("/etc/insightfs/insightfs.conf", F_OK) == 0;
    char *xdg = xasprintf("%s/xdg", tmp), *home = xasprintf("%s/home", tmp), *p;

    (void)state;
    /* INSIGHTFS_CONFIG wins even when the file is missing */
    setenv("INSIGHTFS_CONFIG", "relative/missing.conf", 1);
    assert_int_equal(cfg_find(&out, &tried), 0);
    assert_string_equal(out, "relative/missing.conf");
    assert_null(tried);
    free(out);

    /* empty INSIGHTFS_CONFIG: as if unset. XDG_CONFIG_HOME without the file. */
    setenv("INSIGHTFS_CONFIG", "", 1);
    setenv("XDG_CONFIG_HOME", xdg, 1);
    setenv("HOME", home, 1);
    assert_int_equal(mkdir(home, 0700), 0);
    assert_int_equal(mkdir(xdg, 0700), 0);
    assert_int_equal(mkdir(p = xasprintf("%s/home/.config", tmp), 0700), 0);
    free(p);
    assert_int_equal(mkdir(p = xasprintf("%s/home/.config/insightfs", tmp), 0700), 0);
    free(p);
    p = write_file("home/.config/insightfs/insightfs.conf", 0600, "\n");
    free(p);
    if (!etc) {
        /* XDG_CONFIG_HOME set: $HOME/.config is not consulted */
        assert_int_equal(cfg_find(&out, &tried), -ENOENT);
        assert_null(out);
        want = xasprintf("%s/insightfs/insightfs.conf, /etc/insightfs/insightfs.conf", xdg);
        assert_string_equal(tried, want);
        free(want);
        free(tried);
    }

    /* the XDG file exists */
    assert_int_equal(mkdir(p = xasprintf("%s/insightfs", xdg), 0700), 0);
    free(p);
    p = write_file("xdg/insightfs/insightfs.conf", 0600, "\n");
    assert_int_equal(cfg_find(&out, &tried), 0);
    assert_string_equal(out, p);
    assert_null(tried);
    free(out);
    free(p);

    /* unset or relative XDG_CONFIG_HOME: $HOME/.config */
    want = xasprintf("%s/.config/insightfs/insightfs.conf", home);
    unsetenv("XDG_CONFIG_HOME");
    assert_int_equal(cfg_find(&out, &tried), 0);
    assert_string_equal(out, want);
    free(out);
    setenv("XDG_CONFIG_HOME", "relative/xdg", 1);
    assert_int_equal(cfg_find(&out, &tried), 0);
    assert_string_equal(out, want);
    free(out);
    /* no file anywhere */
    unlink(want);
    if (!etc) {
        char *w2 = xasprintf("%s, /etc/insightfs/insightfs.conf", want);

        assert_int_equal(cfg_find(&out, &tried), -ENOENT);
        assert_string_equal(tried, w2);
        free(tried);
        free(w2);
        unsetenv("HOME");
        unsetenv("XDG_CONFIG_HOME");
        assert_int_equal(cfg_find(&out, &tried), -ENOENT);
        assert_string_equal(tried, "/etc/insightfs/insightfs.conf");
        free(tried);
    }
    free(want);
    restore_env("INSIGHTFS_CONFIG", s_ic);
    restore_env("XDG_CONFIG_HOME", s_xdg);
    restore_env("HOME", s_home);
    free(xdg);
    free(home);
}

/* ---- cfg_dump ---- */

static void assert_same_cfg(const struct cfg *a, const struct cfg *b)
{
    assert_string_equal(a->endpoint, b->endpoint);
    assert_string_equal(a->ca_file ? a->ca_file : "-", b->ca_file ? b->ca_file : "-");
    assert_int_equal(a->timeout_ms, b->timeout_ms);
    assert_int_equal(a->connect_timeout_ms, b->connect_timeout_ms);
    assert_int_equal(a->retries, b->retries);
    assert_int_equal(a->max_connections, b->max_connections);
    assert_int_equal(a->max_requests_per_second, b->max_requests_per_second);
    assert_int_equal(a->max_image_bytes, b->max_image_bytes);
    assert_int_equal(a->resolution, b->resolution);
    assert_string_equal(a->domain_code ? a->domain_code : "-",
                        b->domain_code ? b->domain_code : "-");
    assert_int_equal(a->max_bytes, b->max_bytes);
    assert_int_equal(a->live_ttl_s, b->live_ttl_s);
    assert_int_equal(a->settle_s, b->settle_s);
    assert_int_equal(a->error_ttl_s, b->error_ttl_s);
    assert_int_equal(a->stale_if_error_s, b->stale_if_error_s);
    assert_int_equal(a->align_s, b->align_s);
    assert_string_equal(a->timezone, b->timezone);
    assert_int_equal(a->n_presets, b->n_presets);
    for (size_t i = 0; i < a->n_presets; i++)
        assert_string_equal(a->presets[i], b->presets[i]);
    assert_int_equal(a->history_days, b->history_days);
    assert_int_equal(a->n_dashboards, b->n_dashboards);
    for (size_t i = 0; i < a->n_dashboards; i++) {
        const struct cfg_dashboard *x = &a->dashboards[i], *y = &b->dashboards[i];

        assert_string_equal(x->name, y->name);
        assert_string_equal(x->id, y->id);
        assert_int_equal(x->n_widgets, y->n_widgets);
        for (size_t j = 0; j < x->n_widgets; j++) {
            assert_string_equal(x->widgets[j].name, y->widgets[j].name);
            assert_string_equal(x->widgets[j].id, y->widgets[j].id);
        }
    }
    assert_int_equal(a->discover, b->discover);
    assert_int_equal(a->discover_ttl_s, b->discover_ttl_s);
    assert_int_equal(a->pages, b->pages);
    assert_int_equal(a->log_level, b->log_level);
}

static void round_trip(struct cfg *a)
{
    char *d1 = cfg_dump(a), *d2, *p;
    struct cfg *b = NULL;
    char *err = NULL;

    assert_non_null(d1);
    assert_null(strstr(d1, a->secret_key));
    assert_null(strstr(d1, "secret_key"));
    assert_null(strstr(d1, a->access_key));
    p = write_file("dump.conf", 0600, d1);
    if (cfg_load(p, CFG_MODE_MOUNT, &ENV, &b, &err) != 0)
        fail_msg("%s\n--- dump:\n%s", err, d1);
    assert_same_cfg(a, b);
    assert_string_equal(b->secret_key, env_sk);
    d2 = cfg_dump(b);
    assert_string_equal(d1, d2); /* a fixed point */
    cfg_free(b);
    free(d1);
    free(d2);
    free(p);
}

static void test_dump(void **state)
{
    char *text = read_fixture("cfg/good.conf"), *conf = write_file("good.conf", 0600, text);
    char *sec = write_file("secret.txt", 0600, "sk-good\n");
    char *ca = write_file("ca.pem", 0644, "x\n");
    struct cfg *cfg = NULL;
    char *err = NULL, *d;

    (void)state;
    if (cfg_load(conf, CFG_MODE_MOUNT, NULL, &cfg, &err) != 0)
        fail_msg("%s", err);
    d = cfg_dump(cfg);
    assert_non_null(strstr(d, "  access_key = \"...1234\";\n"));
    assert_non_null(strstr(d, "  max_bytes = 2147483648L;\n"));
    assert_non_null(strstr(d, "  max_image_bytes = 2097152;\n"));
    assert_non_null(strstr(d, "  max_pending = 4096;\n  domain_code = \"GOV\";\n};\n"));
    assert_non_null(
        strstr(d, "{ name = \"caf\xc3\xa9 \\\"q\\\"\"; id = \"db-2\"; widgets = ( ); }"));
    assert_null(strstr(d, "sk-good"));
    assert_null(strstr(d, "secret_key"));
    free(d);
    round_trip(cfg);
    cfg_free(cfg);

    /* the defaults, loaded without a file */
    assert_int_equal(cfg_load(NULL, CFG_MODE_API, &ENV, &cfg, &err), 0);
    d = cfg_dump(cfg);
    assert_non_null(strstr(d, "  access_key = \"...ABCD\";\n"));
    assert_non_null(strstr(d, "presets = [ \"last-1h\", \"last-6h\", \"last-24h\", \"last-7d\", "
                              "\"today\", \"yesterday\" ];\n"));
    assert_non_null(strstr(d, "dashboards = (\n);\n"));
    assert_null(strstr(d, "domain_code")); /* unset stays unset */
    free(d);
    round_trip(cfg);
    cfg_free(cfg);

    /* empty presets, a short access key, pages on */
    cfg = load_ok("api = { access_key = \"AB\\\"C\"; };\npresets = [];\npages = true;\n",
                  CFG_MODE_API, &ENV);
    d = cfg_dump(cfg);
    assert_non_null(strstr(d, "  access_key = \"...\";\n"));
    assert_non_null(strstr(d, "presets = [ ];\n"));
    assert_non_null(strstr(d, "\npages = true;\n"));
    free(d);
    round_trip(cfg);
    cfg_free(cfg);

    free(text);
    free(conf);
    free(sec);
    free(ca);
}

/* ---- cfg_sanitize_name ---- */

static void check_sanitized(const char *in, const char *want)
{
    char *got = cfg_sanitize_name(in);

    if (!want) {
        if (got)
            fail_msg("\"%s\" -> \"%s\", want NULL", in, got);
        return;
    }
    if (!got || strcmp(got, want) != 0)
        fail_msg("sanitize \"%s\": got \"%s\", want \"%s\"", in, got ? got : "(NULL)", want);
    free(got);
}

/* n copies of c, then tail. */
static char *rep(int c, size_t n, const char *tail)
{
    char *s = malloc(n + strlen(tail) + 1);

    assert_non_null(s);
    memset(s, c, n);
    strcpy(s + n, tail);
    return s;
}

static void test_sanitize(void **state)
{
    char *in, *want;

    (void)state;
    check_sanitized("web", "web");
    check_sanitized("a/b/c", "a_b_c");
    check_sanitized(".hidden", "_hidden");
    check_sanitized("..", "_.");
    check_sanitized(".", "_");
    check_sanitized("/", "_");
    check_sanitized("a\x01\x1f\x7f"
                    "b",
                    "a___b");
    check_sanitized("tab\there", "tab_here");
    check_sanitized("caf\xc3\xa9 \xed\x95\x9c", "caf\xc3\xa9 \xed\x95\x9c");
    check_sanitized("", NULL);

    in = rep('x', 300, "");
    want = rep('x', 200, "");
    check_sanitized(in, want);
    free(in);
    free(want);
    in = rep('x', 200, "");
    check_sanitized(in, in);
    free(in);
    /* a 2-byte character across byte 200 is dropped whole */
    in = rep('a', 199, "\xc3\xa9z");
    want = rep('a', 199, "");
    check_sanitized(in, want);
    free(in);
    free(want);
    /* one that ends exactly at 200 stays */
    in = rep('a', 198, "\xc3\xa9z");
    want = rep('a', 198, "\xc3\xa9");
    check_sanitized(in, want);
    free(in);
    free(want);
    /* 3 and 4 bytes */
    in = rep('a', 198, "\xe2\x82\xac");
    want = rep('a', 198, "");
    check_sanitized(in, want);
    free(in);
    free(want);
    in = rep('a', 197, "\xf0\x9f\x98\x80tail");
    want = rep('a', 197, "");
    check_sanitized(in, want);
    free(in);
    free(want);
    in = rep('a', 196, "\xf0\x9f\x98\x80tail");
    want = rep('a', 196, "\xf0\x9f\x98\x80");
    check_sanitized(in, want);
    free(in);
    free(want);
    /* invalid UTF-8 (continuation bytes only) is cut at 200 */
    in = rep(0x80, 300, "");
    want = rep(0x80, 200, "");
    check_sanitized(in, want);
    free(in);
    free(want);
    /* sanitized before the cut: '/' at 150 and a leading '.' */
    in = rep('b', 250, "");
    in[0] = '.';
    in[150] = '/';
    want = rep('b', 200, "");
    want[0] = '_';
    want[150] = '_';
    check_sanitized(in, want);
    free(in);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_fixture),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_ok_values),
        cmocka_unit_test(test_domain_code),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_name_length),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_mount_needs_dashboards),
        cmocka_unit_test(test_no_file),
        cmocka_unit_test(test_credentials_order),
        cmocka_unit_test(test_secret_file),
        cmocka_unit_test(test_file_size_limits),
        cmocka_unit_test(test_secret_modes),
        cmocka_unit_test(test_config_symlink),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_env_take),
        cmocka_unit_test(test_env_take_repeated),
        cmocka_unit_test(test_endpoint_ok),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_env_access_key_control),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
