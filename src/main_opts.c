/* main_opts - the command line of SPEC 2, parsed by libfuse's fuse_opt_parse.
 *
 * One fuse_opt table holds every option, the command line's and -o's alike (libfuse's
 * own helper does the same: fuse_opt matches a template against both, and -o lists are
 * split at unescaped commas by fuse_opt, with \, and \NNN escapes). Plain flags and
 * modes are set through offset templates (-d, like -o debug, is two templates, debug
 * and foreground: fuse_opt applies every template that matches); options that need a
 * check or a message are FUSE_OPT_KEYs for opt_proc, which also takes the positional
 * arguments and every option no template matched. The generic mount(8) options are
 * discarded by the table itself: the mount is always ro,nosuid,nodev.
 *
 * fuse_opt matches a "--name VALUE" template by prefix, so "--configX" would be
 * --config X, and a value-taking option given last would get libfuse's message rather
 * than SPEC 2's. join_values therefore hands fuse_opt a copy of argv in which a
 * separate value is joined to its option as --config=VALUE or --fetch=VALUE, the only
 * forms the table knows; what it leaves bare is a last argument without its value.
 *
 * Messages and precedence are SPEC 2's: the first error in argument order is the one
 * reported; the last -c, --config or -o config= wins; --help and --version end the
 * parse. One consequence of the shared table: an -o item that starts with '-' is taken
 * as that command-line option. Nothing here is global; the table is const.
 */
#include "main_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fuse_opt.h>

void main_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("insightfs: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (see insightfs --help)\n", stderr);
    va_end(ap);
}

void main_print_help(void)
{
    fputs("usage: insightfs [OPTIONS] [CONFIG] MOUNTPOINT\n"
          "       insightfs --fetch PATH [--config FILE]\n"
          "       insightfs --discover [--config FILE]\n"
          "       insightfs --check-config [--config FILE]\n"
          "       insightfs --help | --version\n"
          "\n"
          "Mounts NAVER Cloud Insight dashboards read-only: every widget is a directory of\n"
          "800x600 PNG graphs, one file per time range.\n"
          "\n"
          "options:\n"
          "  -c, --config FILE     the configuration file (also -o config=FILE)\n"
          "  -f                    stay in the foreground, log to stderr\n"
          "  -d                    debug: libfuse and insightfs debug output (implies -f)\n"
          "  -s                    single-threaded dispatch\n"
          "  -o OPT[,OPT...]       mount options: allow_other, auto_unmount, uid=N, gid=N,\n"
          "                        config=FILE; ro, rw, dev, suid and the generic mount\n"
          "                        options are accepted (the mount is always ro,nosuid,nodev),\n"
          "                        and so are x-* (fstab notes for other programs)\n"
          "  --fetch PATH          write the PNG of PATH (as under the mount point) to stdout\n"
          "  --discover            print a dashboards = (...); block for everything the key sees\n"
          "  --check-config        validate the configuration and the credentials\n"
          "  -h, --help            this text\n"
          "  -V, --version         versions of insightfs, libfuse, libcurl and OpenSSL\n"
          "  --                    the arguments that follow are CONFIG and MOUNTPOINT\n"
          "\n"
          "Configuration search order: -c/--config/-o config, the positional CONFIG,\n"
          "$INSIGHTFS_CONFIG, ${XDG_CONFIG_HOME:-$HOME/.config}/insightfs/insightfs.conf,\n"
          "/etc/insightfs/insightfs.conf. Credentials may come from NCLOUD_ACCESS_KEY and\n"
          "NCLOUD_SECRET_KEY.\n",
          stdout);
}

enum { KEY_HELP, KEY_VERSION, KEY_NEEDS_VALUE, KEY_UID, KEY_GID };

/* clang-format off */
#define OPT(templ, field, value) { templ, offsetof(struct main_opts, field), value }
#define ACCEPTED(templ) FUSE_OPT_KEY(templ, FUSE_OPT_KEY_DISCARD)

static const struct fuse_opt opt_table[] = {
    OPT("-f", fs.foreground, 1),
    OPT("-d", fs.debug, 1), OPT("-d", fs.foreground, 1),
    OPT("-s", fs.single_thread, 1),
    OPT("--config=%s", config, 0),
    OPT("--fetch=%s", fetch_path, 0), OPT("--fetch=", mode, MAIN_MODE_FETCH),
    OPT("--discover", mode, MAIN_MODE_DISCOVER),
    OPT("--check-config", mode, MAIN_MODE_CHECK),
    FUSE_OPT_KEY("-h", KEY_HELP), FUSE_OPT_KEY("--help", KEY_HELP),
    FUSE_OPT_KEY("-V", KEY_VERSION), FUSE_OPT_KEY("--version", KEY_VERSION),
    /* join_values leaves one of these bare only when it is the last argument. */
    FUSE_OPT_KEY("-c", KEY_NEEDS_VALUE), FUSE_OPT_KEY("--config", KEY_NEEDS_VALUE),
    FUSE_OPT_KEY("--fetch", KEY_NEEDS_VALUE),
    /* -o */
    OPT("config=%s", config, 0),
    OPT("allow_other", fs.allow_other, 1),
    OPT("auto_unmount", fs.auto_unmount, 1),
    OPT("debug", fs.debug, 1), OPT("debug", fs.foreground, 1),
    FUSE_OPT_KEY("uid=", KEY_UID), FUSE_OPT_KEY("gid=", KEY_GID),
    /* Generic mount(8) options: accepted, and the fixed ro,nosuid,nodev mount wins. */
    ACCEPTED("ro"), ACCEPTED("rw"), ACCEPTED("dev"), ACCEPTED("nodev"), ACCEPTED("suid"),
    ACCEPTED("nosuid"), ACCEPTED("exec"), ACCEPTED("noexec"), ACCEPTED("atime"),
    ACCEPTED("noatime"), ACCEPTED("relatime"), ACCEPTED("norelatime"),
    ACCEPTED("strictatime"), ACCEPTED("diratime"), ACCEPTED("nodiratime"), ACCEPTED("sync"),
    ACCEPTED("async"), ACCEPTED("dirsync"), ACCEPTED("auto"), ACCEPTED("noauto"),
    ACCEPTED("user"), ACCEPTED("users"), ACCEPTED("nouser"), ACCEPTED("defaults"),
    ACCEPTED("_netdev"), ACCEPTED("nofail"), ACCEPTED("lazytime"), ACCEPTED("nolazytime"),
    ACCEPTED("default_permissions"),
    FUSE_OPT_END,
};
/* clang-format on */

static int parse_id(const char *s, unsigned long *out)
{
    if (!*s)
        return -1;
    unsigned long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (v > (UINT_MAX - (unsigned long)(*p - '0')) / 10)
            return -1;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    *out = v;
    return 0;
}

static int add_positional(struct main_opts *o, const char *arg)
{
    if (o->n_positional == 2) {
        main_usage_error("too many arguments ('%s')", arg);
        return -1;
    }
    o->positional[o->n_positional] = strdup(arg);
    if (!o->positional[o->n_positional]) {
        fputs("insightfs: out of memory\n", stderr);
        return -1;
    }
    o->n_positional++;
    return 0;
}

/* fuse_opt's processing function: the keyed options, positional arguments, and the
 * options no template matched. Returns 0 (consumed) or -1 (stop the parse). */
static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct main_opts *o = data;
    unsigned long v;
    (void)outargs;
    switch (key) {
    case KEY_HELP:
    case KEY_VERSION:
        /* As before fuse_opt: what follows --help or --version is not looked at. */
        o->mode = key == KEY_HELP ? MAIN_MODE_HELP : MAIN_MODE_VERSION;
        o->stop = 1;
        return -1;
    case KEY_NEEDS_VALUE:
        main_usage_error("%s needs a value", arg);
        return -1;
    case KEY_UID:
    case KEY_GID:
        if (parse_id(arg + 4, &v) != 0) {
            main_usage_error("-o %s: not a number", arg);
            return -1;
        }
        if (key == KEY_UID) {
            o->fs.set_uid = 1;
            o->fs.uid = (uid_t)v;
        } else {
            o->fs.set_gid = 1;
            o->fs.gid = (gid_t)v;
        }
        return 0;
    case FUSE_OPT_KEY_NONOPT:
        return add_positional(o, arg);
    default: /* FUSE_OPT_KEY_OPT */
        /* "-o a,,b" and mount(8)'s x-* notes for other programs are accepted. */
        if (!arg[0] || strncmp(arg, "x-", 2) == 0)
            return 0;
        /* A lone "-" names a file, as it always has. */
        if (strcmp(arg, "-") == 0)
            return add_positional(o, arg);
        /* Command-line options start with '-', an unmatched -o option does not. */
        if (arg[0] == '-')
            main_usage_error("unknown option '%s'", arg);
        else
            main_usage_error("unknown mount option '%s'", arg);
        return -1;
    }
}

/* fuse_opt matches "--config VALUE" by prefix, so it would also take "--configX" as
 * --config X; and a value-taking option given last gets libfuse's own message. So argv
 * is copied into *out with "-c V", "--config V" and "--fetch V" joined into the
 * --config=V and --fetch=V forms that opt_table knows, walking argv as fuse_opt will: a
 * value is never an option, and nothing after "--" is. A last bare "-o" is left out and
 * *o_last set (reported after the parse, so an earlier error still comes first).
 * Returns 0 or -1 (out of memory). */
static int join_values(int argc, char **argv, struct fuse_args *out, int *o_last)
{
    int i = 0;
    for (; i < argc; i++) {
        const char *a = argv[i];
        char *joined = NULL;
        if (i == 0 || a[0] != '-') {
            /* a positional argument, or argv[0] */
        } else if (strcmp(a, "--") == 0) {
            break;
        } else if (strcmp(a, "-o") == 0) {
            if (i + 1 == argc) {
                *o_last = 1;
                return 0;
            }
            if (fuse_opt_add_arg(out, a) != 0)
                return -1;
            a = argv[++i];
        } else if (i + 1 < argc && (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 ||
                                    strcmp(a, "--fetch") == 0)) {
            const char *name = strcmp(a, "--fetch") == 0 ? "--fetch" : "--config";
            if (asprintf(&joined, "%s=%s", name, argv[++i]) < 0)
                return -1;
            a = joined;
        }
        int rc = fuse_opt_add_arg(out, a);
        free(joined);
        if (rc != 0)
            return -1;
    }
    for (; i < argc; i++)
        if (fuse_opt_add_arg(out, argv[i]) != 0)
            return -1;
    return 0;
}

int main_opts_parse(int argc, char **argv, struct main_opts *o)
{
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    int rc = -1;
    if (join_values(argc, argv, &args, &o->o_needs_value) != 0) {
        fputs("insightfs: out of memory\n", stderr);
        goto out;
    }
    if (fuse_opt_parse(&args, o, opt_table, opt_proc) != 0) {
        rc = o->stop ? 0 : -1;
        goto out;
    }
    if (o->o_needs_value) {
        main_usage_error("-o needs a value");
        goto out;
    }
    rc = 0;
out:
    fuse_opt_free_args(&args);
    return rc;
}

void main_opts_cleanup(struct main_opts *o)
{
    free(o->config);
    free(o->fetch_path);
    for (int i = 0; i < o->n_positional; i++)
        free(o->positional[i]);
    o->config = o->fetch_path = NULL;
    o->n_positional = 0;
}
