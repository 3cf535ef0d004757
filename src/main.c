/* main - pick the configuration and run one mode of the command line.
 *
 * main_opts.c parses argv (libfuse's fuse_opt_parse) into a struct main_opts; this file
 * picks the configuration file by SPEC 2's order and runs the mode: mount (fs_run),
 * --fetch PATH, --discover, --check-config, --help or --version. Every message here is
 * one line in a form of SPEC section 2. Credentials in the environment are taken
 * (copied, zeroed, unset) before anything else can start a thread or a child. Exit
 * statuses: 0 success, 1 any failure.
 */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "insightfs/api.h"
#include "insightfs/cfg.h"
#include "insightfs/fs.h"
#include "insightfs/log.h"
#include "insightfs/ns.h"
#include "insightfs/shared.h"
#include "insightfs/vpath.h"
#include "main_int.h"

/* An absolute version of path (the file need not exist). Returns malloc'd, or NULL with
 * errno set: ENOMEM, or getcwd's (ENOENT when the current directory was removed). */
static char *absolute(const char *path)
{
    if (path[0] == '/')
        return strdup(path);
    char *cwd = getcwd(NULL, 0);
    char *out = NULL;
    if (!cwd)
        return NULL;
    if (asprintf(&out, "%s/%s", cwd, path) < 0) {
        out = NULL;
        errno = ENOMEM;
    }
    free(cwd);
    return out;
}

/* What to put before strerror(e) when absolute() failed with e: one line saying why a
 * relative path cannot be used, or nothing (out of memory). */
static const char *absolute_why(int e)
{
    return e == ENOMEM ? "" : "relative to a current directory that cannot be read: ";
}

/* The configuration file named, made absolute: 0, or -1 after SPEC 2's "FILE: MESSAGE". */
static int config_absolute(const char *named, char **path)
{
    *path = absolute(named);
    if (!*path) {
        int e = errno;
        fprintf(stderr, "insightfs: %s: %s%s\n", named, absolute_why(e), strerror(e));
        return -1;
    }
    return 0;
}

/* Which configuration file: SPEC 2. *path is malloc'd and absolute, or NULL when none
 * was found and none is needed (API modes). Returns 0 or -1 after a message. */
static int pick_config(const struct main_opts *o, const char *positional, int required, char **path)
{
    *path = NULL;
    const char *named = o->config ? o->config : positional;
    if (named)
        return config_absolute(named, path);
    char *found = NULL, *tried = NULL;
    if (cfg_find(&found, &tried) == 0) {
        int rc = config_absolute(found, path);
        free(found);
        return rc;
    }
    if (!required) {
        free(tried);
        return 0;
    }
    fprintf(stderr, "insightfs: no configuration file (tried: %s)\n", tried ? tried : "");
    free(tried);
    return -1;
}

static int load_config(const char *path, enum cfg_mode mode, const struct cfg_env *env,
                       struct cfg **cfg)
{
    char *err = NULL;
    int rc = cfg_load(path, mode, env, cfg, &err);
    if (rc != 0) {
        fprintf(stderr, "insightfs: %s\n", err ? err : strerror(-rc));
        free(err);
        return -1;
    }
    return 0;
}

/* INSIGHTFS_TEST_STUCK_NOTIFY=1: at teardown the invalidation thread waits on the mount
 * as a stuck notify would, so that tests reach the connection abort (fs_mnt.c). */
static int test_stuck_notify(void)
{
    const char *s = getenv("INSIGHTFS_TEST_STUCK_NOTIFY");
    if (!s || strcmp(s, "1") != 0)
        return 0;
    log_warn("INSIGHTFS_TEST_STUCK_NOTIFY: teardown will wait on the mount (tests only)");
    return 1;
}

static int64_t test_clock_offset(void)
{
    const char *s = getenv("INSIGHTFS_TEST_CLOCK_OFFSET_MS");
    if (!s || !*s)
        return 0;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) {
        log_warn("INSIGHTFS_TEST_CLOCK_OFFSET_MS=%s is not a number: ignored", s);
        return 0;
    }
    log_warn("INSIGHTFS_TEST_CLOCK_OFFSET_MS: the clock is shifted by %lld ms (tests only)", v);
    return (int64_t)v;
}

static struct api *make_api(const struct cfg *cfg)
{
    char *err = NULL;
    struct api *api = api_new(cfg, test_clock_offset(), NULL, &err);
    if (!api) {
        fprintf(stderr, "insightfs: %s\n", err ? err : "out of memory");
        free(err);
    }
    return api;
}

/* ---- --discover ----------------------------------------------------------------- */

/* The API's dashboards and widgets, merged by ns's rules into a tree (no configured
 * entries). Returns 0 or a negative errno. */
static int discover_tree(struct api *api, const struct cfg *cfg, struct ns_tree **out)
{
    struct api_item *dash = NULL;
    size_t n_dash = 0;
    int rc = api_list_dashboards(api, 0, &dash, &n_dash, NULL);
    if (rc != 0)
        return rc;
    struct api_item **w = calloc(n_dash ? n_dash : 1, sizeof(*w));
    size_t *nw = calloc(n_dash ? n_dash : 1, sizeof(*nw));
    const char **ids = calloc(n_dash ? n_dash : 1, sizeof(*ids));
    if (!w || !nw || !ids) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n_dash; i++) {
        ids[i] = dash[i].id;
        rc = api_list_widgets(api, dash[i].id, 0, &w[i], &nw[i], NULL);
        if (rc != 0)
            goto out;
    }
    struct cfg bare = *cfg;
    bare.n_dashboards = 0;
    struct ns_discovered disc = {dash, n_dash, ids, (const struct api_item *const *)w, nw, n_dash};
    *out = ns_build(&bare, &disc);
    rc = *out ? 0 : -ENOMEM;
out:
    for (size_t i = 0; w && i < n_dash; i++)
        api_items_free(w[i], nw[i]);
    free(w);
    free(nw);
    free(ids);
    api_items_free(dash, n_dash);
    return rc;
}

static int print_quoted(const char *s)
{
    char *e = ns_config_escape(s);
    if (!e)
        return -1;
    printf("\"%s\"", e);
    free(e);
    return 0;
}

static int run_discover(const struct cfg *cfg)
{
    struct api *api = make_api(cfg);
    if (!api)
        return 1;
    struct ns_tree *t = NULL;
    int rc = discover_tree(api, cfg, &t);
    api_free(api);
    if (rc != 0) {
        fprintf(stderr, "insightfs: discover: %s\n", strerror(-rc));
        return 1;
    }
    printf("dashboards = (");
    for (size_t i = 0; i < t->n_dashboards; i++) {
        const struct ns_dashboard *d = &t->dashboards[i];
        printf("%s\n  { name = ", i ? "," : "");
        print_quoted(d->name);
        printf("; id = ");
        print_quoted(d->id);
        printf(";\n    widgets = (");
        for (size_t j = 0; j < d->n_widgets; j++) {
            printf("%s\n      { name = ", j ? "," : "");
            print_quoted(d->widgets[j].name);
            printf("; id = ");
            print_quoted(d->widgets[j].id);
            printf("; }");
        }
        printf(d->n_widgets ? "\n    ); }" : "); }");
    }
    printf("%s);\n", t->n_dashboards ? "\n" : "");
    ns_unref(t);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "insightfs: stdout: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* ---- --check-config ------------------------------------------------------------- */

static int run_check(const struct cfg *cfg, const char *path)
{
    const char *file = path ? path : "(environment)";
    /* The verdict is the one line below; the client's own warn lines would repeat it. */
    if (log_get_level() < LOG_LVL_DEBUG)
        log_set_level(LOG_LVL_ERROR);
    if (cfg->shared.redis) {
        /* SPEC 13: connect, AUTH and PING; the reason never holds the password. */
        char *why = NULL;
        if (shared_check(cfg, &why) != 0) {
            fprintf(stderr, "insightfs: %s: shared.redis: %s\n", file, why ? why : "out of memory");
            free(why);
            return 1;
        }
    }
    struct api *api = make_api(cfg);
    if (!api)
        return 1;
    struct api_item *dash = NULL;
    size_t n = 0;
    struct api_result r;
    memset(&r, 0, sizeof(r));
    int rc = api_list_dashboards(api, 0, &dash, &n, &r);
    api_free(api);
    api_items_free(dash, n);
    int64_t skew_s = (r.skew_ms >= 0 ? r.skew_ms + 500 : r.skew_ms - 500) / 1000;
    if (r.skew_known && (skew_s > 300 || skew_s < -300)) {
        /* skew = gateway - local: positive means the local clock is behind. */
        fprintf(stderr,
                "insightfs: %s: local clock is %" PRId64
                " s %s the gateway (limit 300 s): fix NTP\n",
                file, skew_s > 0 ? skew_s : -skew_s, skew_s > 0 ? "behind" : "ahead of");
        return 1;
    }
    if (rc == 0) {
        printf("insightfs: %s: OK (%zu dashboards visible)\n", file, n);
        return 0;
    }
    switch (r.outcome) {
    case API_TLS:
        fprintf(stderr, "insightfs: %s: TLS verification failed: %s (api.ca_file adds a CA)\n",
                file, r.message);
        break;
    case API_UNREACHABLE:
    case API_TIMEOUT:
        fprintf(stderr, "insightfs: %s: endpoint unreachable: %s\n", file,
                r.message[0] ? r.message : strerror(-rc));
        break;
    default:
        /* The gateway's permission denied is 401/210; some answer it as 403/210. */
        if ((r.status == 401 || r.status == 403) && strcmp(r.error_code, "210") == 0)
            fprintf(stderr, "insightfs: %s: permission denied for this key (errorCode 210)\n",
                    file);
        else if (r.status == 401)
            fprintf(stderr,
                    "insightfs: %s: authentication failed: wrong access_key or secret_key "
                    "(errorCode %s)\n",
                    file, r.error_code[0] ? r.error_code : "200");
        else
            fprintf(stderr, "insightfs: %s: unexpected answer: HTTP %ld\n", file, r.status);
    }
    return 1;
}

/* ---- --fetch -------------------------------------------------------------------- */

/* Split path at '/' in place, skipping empty components: *parts (malloc'd) gets *n
 * pointers into path. Returns 0 or -ENOMEM. */
static int split_path(char *path, char ***parts, int *n)
{
    *n = 0;
    /* A component and its '/' take two bytes, so this many always suffice. */
    *parts = calloc(strlen(path) / 2 + 1, sizeof(**parts));
    if (!*parts)
        return -ENOMEM;
    for (char *save = NULL, *p = strtok_r(path, "/", &save); p; p = strtok_r(NULL, "/", &save))
        (*parts)[(*n)++] = p;
    return 0;
}

/* Walk parts from / with ns_resolve, one component at a time, as the mount's LOOKUP
 * does. Returns 0 with *out the node reached, or ns_resolve's errno with *out the
 * directory where the walk stopped (ids borrowed from t either way). */
static int walk_path(const struct ns_tree *t, char *const *parts, int n,
                     const struct vpath_clock *clk, enum vpath_res res, struct ns_node *out)
{
    struct ns_node at = {0}; /* the root */
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct ns_node next;
        rc = ns_resolve(t, &at, parts[i], clk, res, &next);
        if (rc == 0)
            at = next;
    }
    *out = at;
    return rc;
}

/* What --fetch has listed so far, as the mount's discovery would have: the dashboards,
 * and the widgets of one dashboard. */
struct fetch_lists {
    struct api_item *dash;
    size_t n_dash;
    bool have_dash;
    char *widgets_of; /* the dashboard id whose widgets were listed, or NULL */
    struct api_item *widgets;
    size_t n_widgets;
};

static struct ns_tree *fetch_tree(const struct cfg *cfg, const struct fetch_lists *l)
{
    const char *ids[1] = {l->widgets_of};
    const struct api_item *wl[1] = {l->widgets};
    size_t nw[1] = {l->n_widgets};
    struct ns_discovered disc = {l->dash, l->n_dash, ids, wl, nw, l->widgets_of ? 1 : 0};
    return ns_build(cfg, l->have_dash || l->widgets_of ? &disc : NULL);
}

static int write_all(const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDOUT_FILENO, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -errno;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

static int fetch_path(const struct cfg *cfg, struct api *api, const char *path)
{
    char *copy = strdup(path);
    char **parts = NULL;
    int n = 0;
    struct ns_tree *tree = NULL;
    struct ns_node node;
    struct api_image img = {0};
    struct fetch_lists lists = {0};
    int rc = copy ? split_path(copy, &parts, &n) : -ENOMEM;
    if (rc != 0)
        goto out;
    /* --fetch has no current directory: "." and ".." name nothing, and are refused
     * before a discovery call could be made for them. */
    for (int i = 0; i < n; i++) {
        if (strcmp(parts[i], ".") == 0 || strcmp(parts[i], "..") == 0) {
            rc = -ENOENT;
            goto out;
        }
    }
    /* As the mount's LOOKUPs: configured names need no list call; with discover = true an
     * unknown dashboard lists the dashboards, an unknown widget lists the widgets of its
     * own dashboard only, and the walk starts again (so a failing list of another
     * dashboard cannot fail this path). */
    for (;;) {
        ns_unref(tree);
        tree = fetch_tree(cfg, &lists);
        if (!tree) {
            rc = -ENOMEM;
            goto out;
        }
        struct vpath_clock clk = {api_now_ms(api), cfg->align_s};
        rc = walk_path(tree, parts, n, &clk, cfg->resolution, &node);
        if (rc != -ENOENT || !cfg->discover)
            break;
        if (node.kind == NS_ROOT && !lists.have_dash) {
            rc = api_list_dashboards(api, 0, &lists.dash, &lists.n_dash, NULL);
            lists.have_dash = true;
        } else if (node.kind == NS_DASHBOARD && !lists.widgets_of) {
            lists.widgets_of = strdup(node.dash_id);
            rc = lists.widgets_of ? api_list_widgets(api, lists.widgets_of, 0, &lists.widgets,
                                                     &lists.n_widgets, NULL)
                                  : -ENOMEM;
        } else {
            break;
        }
        if (rc != 0)
            goto out;
    }
    /* A name under an image has always been ENOENT for --fetch (the mount says ENOTDIR). */
    if (rc == -ENOTDIR)
        rc = -ENOENT;
    if (rc != 0)
        goto out;
    if (node.kind != NS_IMAGE) {
        rc = -EISDIR;
        goto out;
    }
    /* "x.png/" names a directory that a file cannot be, as under the mount. */
    if (path[strlen(path) - 1] == '/') {
        rc = -ENOTDIR;
        goto out;
    }
    rc = api_fetch_image(api, node.dash_id, node.widget_id, node.img.start_ms, node.img.end_ms,
                         node.img.res, 0, NULL, &img, NULL);
    if (rc == 0)
        rc = write_all(img.data, img.len);
out:
    free(img.data);
    ns_unref(tree);
    api_items_free(lists.dash, lists.n_dash);
    api_items_free(lists.widgets, lists.n_widgets);
    free(lists.widgets_of);
    free(parts);
    free(copy);
    return rc;
}

static int run_fetch(const struct cfg *cfg, const char *path)
{
    struct api *api = make_api(cfg);
    if (!api)
        return 1;
    int rc = fetch_path(cfg, api, path);
    api_free(api);
    if (rc != 0) {
        fprintf(stderr, "insightfs: %s: %s\n", path, strerror(-rc));
        return 1;
    }
    return 0;
}

/* ---- mount ---------------------------------------------------------------------- */

static int check_mountpoint(const char *mp)
{
    struct stat st;
    if (stat(mp, &st) != 0) {
        if (errno == ENOTCONN)
            main_usage_error("%s: a dead FUSE mount is there: run fusermount3 -u %s", mp, mp);
        else
            main_usage_error("%s: mount point: %s", mp, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        main_usage_error("%s: mount point is not a directory", mp);
        return -1;
    }
    return 0;
}

static int user_allow_other(void)
{
    FILE *f = fopen("/etc/fuse.conf", "r");
    if (!f)
        return 0;
    char line[256];
    int ok = 0;
    while (fgets(line, sizeof(line), f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, "user_allow_other", 16) == 0 &&
            (p[16] == '\n' || p[16] == '\0' || p[16] == ' ' || p[16] == '\t'))
            ok = 1;
    }
    fclose(f);
    return ok;
}

static int run_mount(struct main_opts *o, struct cfg_env *env)
{
    const char *positional_config = o->n_positional == 2 ? o->positional[0] : NULL;
    const char *mp = o->positional[o->n_positional - 1];
    char *path = NULL, *mount_abs = NULL;
    struct cfg *cfg = NULL;
    int status = 1;
    /* A usage error first: it needs no file. */
    if (o->fs.allow_other && geteuid() != 0 && !user_allow_other()) {
        main_usage_error("-o allow_other needs user_allow_other in /etc/fuse.conf");
        goto out;
    }
    if (pick_config(o, positional_config, 1, &path) != 0)
        goto out;
    if (load_config(path, CFG_MODE_MOUNT, env, &cfg) != 0)
        goto out;
    mount_abs = absolute(mp);
    if (!mount_abs) {
        int e = errno;
        main_usage_error("%s: mount point: %s%s", mp, absolute_why(e), strerror(e));
        goto out;
    }
    if (check_mountpoint(mount_abs) != 0)
        goto out;
    if (vpath_tz_set(cfg->timezone) != 0) {
        fprintf(stderr, "insightfs: %s: time.timezone: unknown time zone '%s'\n", path,
                cfg->timezone);
        goto out;
    }
    log_set_level(o->fs.debug ? LOG_LVL_DEBUG : cfg->log_level);
    o->fs.mountpoint = mount_abs;
    o->fs.fsname = positional_config ? positional_config : path;
    o->fs.test_offset_ms = test_clock_offset();
    o->fs.test_stuck_notify = test_stuck_notify();
    /* A daemon that runs for months (SPEC 7): a fixed mmap threshold, so glibc does not
     * raise it after freeing a large body and then keep later bodies in the arenas; few
     * arenas, so freed heap is not spread over one per thread (fs_wait.c trims it).
     * The heap grows 1 MiB at a time: by default every new body moved the arena's end
     * (brk or mprotect, about one call per two cold fetches); the pad is address space,
     * not memory, until used. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_ARENA_MAX, 2);
    mallopt(M_TOP_PAD, 1024 * 1024);
    status = fs_run(cfg, env, &o->fs);
    cfg = NULL; /* fs_run took it */
out:
    cfg_free(cfg);
    free(path);
    free(mount_abs);
    return status;
}

int main(int argc, char **argv)
{
    struct cfg_env env = {0};
    struct main_opts o;
    memset(&o, 0, sizeof(o));
    int status = 1;

    /* A closed stdout (--fetch | head) is an error to report, not a signal to die of. */
    signal(SIGPIPE, SIG_IGN);
    /* Before any thread or child: credentials leave the environment. */
    if (cfg_env_take(&env) != 0) {
        fputs("insightfs: out of memory\n", stderr);
        return 1;
    }
    log_init(0, LOG_LVL_INFO);
    if (main_opts_parse(argc, argv, &o) != 0)
        goto out;
    if (o.mode == MAIN_MODE_HELP) {
        main_print_help();
        status = 0;
        goto out;
    }
    if (o.mode == MAIN_MODE_VERSION) {
        printf("insightfs %s\nlibfuse %s\nlibcurl %s\n%s\n", INSIGHTFS_VERSION,
               fs_libfuse_version(), curl_version_info(CURLVERSION_NOW)->version,
               OpenSSL_version(OPENSSL_VERSION));
        status = 0;
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_ALL) != 0) {
        fputs("insightfs: cannot initialise libcurl\n", stderr);
        goto out;
    }
    if (o.mode == MAIN_MODE_MOUNT) {
        if (o.n_positional == 0) {
            main_usage_error("no mount point given");
            goto out_curl;
        }
        status = run_mount(&o, &env);
        goto out_curl;
    }
    if (o.n_positional > 0) {
        main_usage_error("unexpected argument '%s'", o.positional[0]);
        goto out_curl;
    }
    char *path = NULL;
    struct cfg *cfg = NULL;
    int api_mode = o.mode != MAIN_MODE_FETCH;
    if (pick_config(&o, NULL, !api_mode, &path) != 0)
        goto out_curl;
    if (load_config(path, api_mode ? CFG_MODE_API : CFG_MODE_MOUNT, &env, &cfg) == 0) {
        log_set_level(cfg->log_level);
        if (vpath_tz_set(cfg->timezone) != 0)
            fprintf(stderr, "insightfs: %s: time.timezone: unknown time zone '%s'\n",
                    path ? path : "(environment)", cfg->timezone);
        else if (o.mode == MAIN_MODE_FETCH)
            status = run_fetch(cfg, o.fetch_path);
        else if (o.mode == MAIN_MODE_DISCOVER)
            status = run_discover(cfg);
        else
            status = run_check(cfg, path);
    }
    cfg_free(cfg);
    free(path);
out_curl:
    curl_global_cleanup();
out:
    main_opts_cleanup(&o);
    cfg_env_cleanup(&env);
    return status;
}
