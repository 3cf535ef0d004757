/* fuzz_cfg - libFuzzer target for the configuration loader (cfg_load, SPEC section 3).
 *
 * The input is the file's text, written (mode 0600, so a secret in it is accepted) to
 * insightfs.conf in a private temp folder that also holds secret.txt (0600) and ca.pem,
 * for seeds that name them. cfg.h has no entry point that loads from memory, and cfg_int.h
 * only the steps of cfg_load, so the public one is fuzzed, through a real file. Each input
 * is loaded in CFG_MODE_MOUNT and CFG_MODE_API, with credentials in the environment so
 * that most inputs get past the secrets checks.
 *
 * The loader opens paths the input names (api.ca_file, api.secret_key_file, tzdata),
 * read-only and non-blocking, and reads only regular files: harmless, whatever they are.
 *
 * Checks:
 *   - failure: a negative errno, no cfg, one line of message that starts with the file's
 *     path and holds the environment's secret or access key only if the input does;
 *   - success: every setting inside its SPEC 3 range (also those that depend on another:
 *     connect_timeout_ms <= timeout_ms, max_image_bytes <= max_bytes), credentials set,
 *     presets relative names, dashboards and widgets with names and ids; what a mount
 *     accepts, --check-config accepts too, with the same api settings;
 *   - cfg_dump's text loads again in the same mode and dumps to the same text.
 */
#include "insightfs/cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ENV_ACCESS "EnvAccessKey7731"
#define ENV_SECRET "EnvSecretKey-4f0c9a"
#define FILE_SECRET "sk-file-secret" /* secret.txt's first line */

static char *dir;       /* the temp folder, absolute */
static char *conf_path; /* dir/insightfs.conf */
static char *dump_path; /* dir/dump.conf */
static char env_ak[] = ENV_ACCESS, env_sk[] = ENV_SECRET;
static const struct cfg_env env = {env_ak, env_sk};

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_cfg: %s failed (line %d)\n", #cond, __LINE__);                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void write_file(const char *path, const void *text, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    CHECK(fd >= 0);
    CHECK(fchmod(fd, 0600) == 0);
    CHECK(len == 0 || write(fd, text, len) == (ssize_t)len);
    CHECK(close(fd) == 0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void cleanup(void)
{
    if (dir)
        nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char tpl[] = "/tmp/fuzz_cfg.XXXXXX";
    char *path;

    (void)argc;
    (void)argv;
    CHECK(mkdtemp(tpl));
    dir = realpath(tpl, NULL);
    CHECK(dir);
    atexit(cleanup);
    CHECK(asprintf(&conf_path, "%s/insightfs.conf", dir) > 0);
    CHECK(asprintf(&dump_path, "%s/dump.conf", dir) > 0);
    CHECK(asprintf(&path, "%s/secret.txt", dir) > 0);
    write_file(path, FILE_SECRET "\n", strlen(FILE_SECRET) + 1);
    free(path);
    CHECK(asprintf(&path, "%s/ca.pem", dir) > 0);
    write_file(path, "", 0);
    free(path);
    return 0;
}

static int in_range(int64_t v, int64_t lo, int64_t hi)
{
    return v >= lo && v <= hi;
}

static void check_ok(const struct cfg *c, const char *path)
{
    CHECK(c);
    CHECK(c->path && strcmp(c->path, path) == 0);
    CHECK(c->endpoint && c->endpoint[0]);
    CHECK(c->endpoint[strlen(c->endpoint) - 1] != '/');
    CHECK(c->access_key && c->access_key[0]);
    CHECK(c->secret_key && c->secret_key[0]);
    CHECK(!c->ca_file || c->ca_file[0] == '/');
    CHECK(in_range(c->timeout_ms, 100, 600000));
    CHECK(in_range(c->connect_timeout_ms, 100, c->timeout_ms));
    CHECK(in_range(c->retries, 0, 10));
    CHECK(in_range(c->max_connections, 1, 256));
    CHECK(in_range(c->max_requests_per_second, 0, 10000));
    CHECK(in_range(c->max_bytes, INT64_C(1) << 20, INT64_C(1) << 40));
    CHECK(in_range(c->max_image_bytes, 1024, c->max_bytes));
    CHECK(c->resolution == VPATH_RES_AUTO || c->resolution == VPATH_RES_HIGH);
    CHECK(in_range(c->live_ttl_s, 0, 86400));
    CHECK(in_range(c->settle_s, 0, 604800));
    CHECK(in_range(c->error_ttl_s, 0, 3600));
    CHECK(in_range(c->stale_if_error_s, 0, 604800));
    CHECK(in_range(c->align_s, 1, 86400));
    CHECK(c->timezone && vpath_tz_valid(c->timezone));
    CHECK(in_range(c->history_days, 1, 3660));
    CHECK(in_range(c->discover_ttl_s, 10, 86400));
    CHECK(c->n_presets == 0 || c->presets);
    for (size_t i = 0; i < c->n_presets; i++)
        CHECK(vpath_is_relative(c->presets[i]));
    CHECK(c->n_dashboards == 0 || c->dashboards);
    for (size_t i = 0; i < c->n_dashboards; i++) {
        const struct cfg_dashboard *d = &c->dashboards[i];

        CHECK(d->name && d->name[0] && d->id && d->id[0]);
        CHECK(d->n_widgets == 0 || d->widgets);
        for (size_t j = 0; j < d->n_widgets; j++)
            CHECK(d->widgets[j].name && d->widgets[j].name[0] && d->widgets[j].id &&
                  d->widgets[j].id[0]);
    }
    /* No check that a mount has dashboards: `dashboards = ();` is valid (what --discover
     * prints for an account without any). */
}

static void check_err(int rc, const struct cfg *c, const char *err, const uint8_t *data,
                      size_t size)
{
    CHECK(rc < 0 && !c);
    if (!err) {
        CHECK(rc == -ENOMEM);
        return;
    }
    CHECK(!strchr(err, '\n'));
    CHECK(strncmp(err, conf_path, strlen(conf_path)) == 0);
    CHECK(err[strlen(conf_path)] == ':');
    if (!memmem(data, size, ENV_SECRET, strlen(ENV_SECRET)))
        CHECK(!strstr(err, ENV_SECRET));
    if (!memmem(data, size, ENV_ACCESS, strlen(ENV_ACCESS)))
        CHECK(!strstr(err, ENV_ACCESS));
}

/* cfg_dump's text loads again, in the same mode, and dumps to the same text. */
static void check_round_trip(const struct cfg *c, enum cfg_mode mode, const uint8_t *data,
                             size_t size)
{
    char *text = cfg_dump(c), *again = NULL, *err = NULL;
    struct cfg *c2 = NULL;
    int rc;

    CHECK(text);
    /* the secrets this target hands out are distinctive: never in the dump */
    if ((strcmp(c->secret_key, ENV_SECRET) == 0 || strcmp(c->secret_key, FILE_SECRET) == 0) &&
        !memmem(data, size, c->secret_key, strlen(c->secret_key)))
        CHECK(!strstr(text, c->secret_key));
    write_file(dump_path, text, strlen(text));
    rc = cfg_load(dump_path, mode, &env, &c2, &err);
    if (rc != 0) {
        fprintf(stderr, "fuzz_cfg: the dump does not load again: %s\n--- dump\n%s---\n",
                err ? err : "(no message)", text);
        CHECK(rc == 0);
    }
    check_ok(c2, dump_path);
    again = cfg_dump(c2);
    CHECK(again);
    if (strcmp(text, again) != 0) {
        fprintf(stderr, "fuzz_cfg: dump changed on reload\n--- first\n%s--- second\n%s---\n", text,
                again);
        CHECK(strcmp(text, again) == 0);
    }
    free(again);
    free(text);
    cfg_free(c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cfg *mount = NULL, *api = NULL;
    char *err_mount = NULL, *err_api = NULL;
    int rc_mount, rc_api;

    write_file(conf_path, data, size);

    rc_mount = cfg_load(conf_path, CFG_MODE_MOUNT, &env, &mount, &err_mount);
    if (rc_mount == 0) {
        CHECK(!err_mount);
        check_ok(mount, conf_path);
    } else {
        check_err(rc_mount, mount, err_mount, data, size);
    }

    rc_api = cfg_load(conf_path, CFG_MODE_API, &env, &api, &err_api);
    if (rc_api == 0) {
        CHECK(!err_api);
        check_ok(api, conf_path);
    } else {
        check_err(rc_api, api, err_api, data, size);
    }

    /* --check-config never refuses what a mount accepts, and reads the same api group */
    if (rc_mount == 0) {
        CHECK(rc_api == 0);
        CHECK(strcmp(mount->endpoint, api->endpoint) == 0);
        CHECK(strcmp(mount->access_key, api->access_key) == 0);
        CHECK(strcmp(mount->secret_key, api->secret_key) == 0);
        CHECK(mount->timeout_ms == api->timeout_ms);
        CHECK(mount->connect_timeout_ms == api->connect_timeout_ms);
        CHECK(mount->max_image_bytes == api->max_image_bytes);
        check_round_trip(mount, CFG_MODE_MOUNT, data, size);
    }
    if (rc_api == 0)
        check_round_trip(api, CFG_MODE_API, data, size);

    cfg_free(mount);
    cfg_free(api);
    free(err_mount);
    free(err_api);
    return 0;
}
