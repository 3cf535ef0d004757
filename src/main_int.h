/* main internals shared by main.c (the modes) and main_opts.c (the command line); not
 * part of any contract.
 */
#ifndef INSIGHTFS_MAIN_INT_H
#define INSIGHTFS_MAIN_INT_H

#include "insightfs/fs.h"

enum main_mode {
    MAIN_MODE_MOUNT = 0,
    MAIN_MODE_FETCH,
    MAIN_MODE_DISCOVER,
    MAIN_MODE_CHECK,
    MAIN_MODE_HELP,
    MAIN_MODE_VERSION,
};

/* The command line of SPEC 2. The strings are malloc'd; main_opts_cleanup frees them. */
struct main_opts {
    int mode;          /* enum main_mode (an int: fuse_opt stores through an int pointer) */
    int stop;          /* --help or --version ended the parse */
    int o_needs_value; /* the last argument was a bare -o */
    char *fetch_path;  /* --fetch */
    char *config;      /* -c, --config or -o config=, the last one given; else NULL */
    char *positional[2];
    int n_positional;
    struct fs_opts fs; /* -f, -d, -s and the -o options; mountpoint and fsname unset */
};

/* "insightfs: MESSAGE (see insightfs --help)" and a newline on stderr. */
void main_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The text of --help, on stdout. */
void main_print_help(void);

/* Parse argv into *o, which must be zeroed, with libfuse's fuse_opt_parse. Options and
 * positional arguments may come in any order; "--" ends the options. Returns 0 (mode
 * MAIN_MODE_HELP or MAIN_MODE_VERSION when one of those came before any error: what
 * follows it is not looked at), or -1 after one line on stderr (a usage error, or out
 * of memory). Either way the caller calls main_opts_cleanup. Touches no global state
 * (libfuse may log an allocation failure). */
int main_opts_parse(int argc, char **argv, struct main_opts *o) __attribute__((warn_unused_result));

/* Free o's strings. */
void main_opts_cleanup(struct main_opts *o);

#endif
