/* cfg internals shared by the files of the cfg module (cfg.c, cfg_file.c, cfg_settings.c,
 * cfg_dashboards.c) only: the state of one load and the steps cfg_load runs. Not part of
 * any contract; only cfg*.c include it (and with it <libconfig.h>).
 *
 * Every int function that takes a loader returns 0 or a negative errno and, on failure,
 * has set *ld->err with cfg_fail* (or left it NULL, for -ENOMEM). A loader belongs to the
 * one thread running cfg_load, for the whole load.
 */
#ifndef INSIGHTFS_CFG_INT_H
#define INSIGHTFS_CFG_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <libconfig.h>

#include "insightfs/cfg.h"

/* One load in progress. The config_setting_t pointers live until config_destroy. */
struct cfg_loader {
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
    const config_setting_t *page_name; /* the first entry named CFG_PAGE_NAME (its name, or
                                          its id when it has no name) */
};

/* ---- messages, freeing (cfg.c) ---- */

/* strerrordesc_np(e), or "unknown error". Static storage; thread-safe. */
const char *cfg_errstr(int e);

/* Set *ld->err to "FILE[:LINE]: [SETTING: ]MESSAGE" (line <= 0: none; setting NULL: none)
 * and return rc, or free it, set it NULL and return -ENOMEM. */
int cfg_fail(struct cfg_loader *ld, int rc, int line, const char *setting, const char *fmt, ...)
    __attribute__((format(printf, 5, 6), warn_unused_result));

/* cfg_fail with "FILE:LINE: SETTING: MESSAGE" for setting s. */
int cfg_fail_at(struct cfg_loader *ld, int rc, const config_setting_t *s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), warn_unused_result));

/* -EINVAL with "FILE:LINE: SETTING: "VALUE" WHAT", the value escaped and cut. Never for
 * the access key or the secret. */
int cfg_fail_value(struct cfg_loader *ld, const config_setting_t *s, const char *value,
                   const char *what) __attribute__((warn_unused_result));

/* The libconfig path of s: "api.timeout_ms", "dashboards.[0].widgets.[1].name".
 * Returns a malloc'd string, or NULL (out of memory). */
char *cfg_setting_path(const config_setting_t *s);

/* Wipe and free *s, then set it NULL. Does nothing when *s is NULL. */
void cfg_secret_free(char **s);

/* ---- settings (cfg_settings.c) ---- */

/* What a setting must be. An integer is int or int64 alike; a list a list or an array. */
enum cfg_kind { CFG_K_GROUP, CFG_K_INT, CFG_K_INT64, CFG_K_BOOL, CFG_K_STRING, CFG_K_LIST };

/* Fill cfg with the defaults of SPEC 3, but the presets. Returns 0 or -ENOMEM (cfg then
 * holds what was allocated: free it with cfg_free). */
int cfg_settings_init(struct cfg *cfg) __attribute__((warn_unused_result));

/* Check every setting of the parsed file (ld->lc), in file order, into ld->cfg. */
int cfg_settings_walk(struct cfg_loader *ld) __attribute__((warn_unused_result));

/* After the walk: the ranges that depend on another setting, the default presets,
 * `dashboards` required in CFG_MODE_MOUNT unless discover = true, and (through
 * cfg_dashboards_finish) no entry named like the pages while pages = true. */
int cfg_settings_finish(struct cfg_loader *ld) __attribute__((warn_unused_result));

/* -EINVAL "must be WANT, not TYPE" unless s is of kind. */
int cfg_check_type(struct cfg_loader *ld, const config_setting_t *s, enum cfg_kind kind,
                   const char *want) __attribute__((warn_unused_result));

/* True when s holds a byte below 0x20, or 0x7f. */
bool cfg_has_control(const char *s);

/* ---- dashboards (cfg_dashboards.c) ---- */

/* The take function of the `dashboards` setting s: every dashboard and its widgets,
 * checked and copied into ld->cfg. */
int cfg_take_dashboards(struct cfg_loader *ld, const config_setting_t *s)
    __attribute__((warn_unused_result));

/* After the walk: with pages = true, an entry named CFG_PAGE_NAME is an error. */
int cfg_dashboards_finish(struct cfg_loader *ld) __attribute__((warn_unused_result));

/* ---- the shared group (cfg_shared.c) ---- */

/* The take function of the `shared` group s: every setting checked into ld->cfg->shared
 * (the password read from password_file under the secret-file rules). */
int cfg_take_shared(struct cfg_loader *ld, const config_setting_t *s)
    __attribute__((warn_unused_result));

/* ---- files and credentials (cfg_file.c) ---- */

/* The first line of the secret file named by the string setting s (one trailing "\n"
 * or "\r\n" dropped) into *secret (malloc'd; wipe with cfg_secret_free), under the
 * secret-file rules of SPEC 3 (O_NOFOLLOW, fstat: a regular file owned by the effective
 * uid or root, mode & 077 == 0). Messages name `setting` (e.g. "shared.password_file").
 * *path_out (may be NULL) gets the resolved path (malloc'd). */
int cfg_secret_file_read(struct cfg_loader *ld, const char *setting, const config_setting_t *s,
                         char **secret, char **path_out) __attribute__((warn_unused_result));

/* Open ld->file, check it, scan its raw text and parse it into ld->lc; sets ld->st and
 * ld->via_link. */
int cfg_file_parse(struct cfg_loader *ld) __attribute__((warn_unused_result));

/* A path named in the file: absolute as is, else relative to the file's folder (ld->dir
 * must be set). Returns a malloc'd string, or NULL (out of memory). */
char *cfg_resolve(const struct cfg_loader *ld, const char *p);

/* Access key and secret into ld->cfg, from the file, the secret file or ld->env. */
int cfg_credentials_take(struct cfg_loader *ld) __attribute__((warn_unused_result));

#endif
