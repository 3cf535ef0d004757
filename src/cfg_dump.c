/* cfg_dump - a struct cfg written back as libconfig text, defaults filled in.
 *
 * The text loads again: strings are escaped for libconfig, and an int64 setting gets the
 * L suffix only where int32 is too small. It never holds the secret (no secret_key, no
 * secret_key_file) and shows only the last 4 characters of the access key.
 * No state; thread-safe.
 */
#include "insightfs/cfg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* s as a libconfig string literal. */
static void put_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* A number an int or int64 setting reads back: L only where int32 is too small. */
static void put_int64(FILE *f, const char *name, int64_t v)
{
    fprintf(f, "  %s = %lld%s;\n", name, (long long)v, v > INT32_MAX ? "L" : "");
}

static void put_entry(FILE *f, const char *name, const char *id)
{
    fputs("{ name = ", f);
    put_string(f, name);
    fputs("; id = ", f);
    put_string(f, id);
    fputs(";", f);
}

char *cfg_dump(const struct cfg *cfg)
{
    char *buf = NULL;
    size_t size = 0;
    size_t ak = cfg->access_key ? strlen(cfg->access_key) : 0;
    char *shown = NULL;
    FILE *f;
    int bad;

    /* Only the last 4 characters; a key that short shows none. */
    if (asprintf(&shown, "...%s", ak > 4 ? cfg->access_key + ak - 4 : "") < 0)
        return NULL;
    f = open_memstream(&buf, &size);
    if (!f) {
        free(shown);
        return NULL;
    }
    fprintf(f, "# the configuration in force, defaults filled in; the secret is not shown\n");
    fprintf(f, "api = {\n  endpoint = ");
    put_string(f, cfg->endpoint);
    fputs(";\n  access_key = ", f);
    put_string(f, shown);
    fprintf(f,
            ";\n  timeout_ms = %d;\n  connect_timeout_ms = %d;\n  retries = %d;\n"
            "  max_connections = %d;\n  max_requests_per_second = %d;\n",
            cfg->timeout_ms, cfg->connect_timeout_ms, cfg->retries, cfg->max_connections,
            cfg->max_requests_per_second);
    put_int64(f, "max_image_bytes", cfg->max_image_bytes);
    if (cfg->ca_file) {
        fputs("  ca_file = ", f);
        put_string(f, cfg->ca_file);
        fputs(";\n", f);
    }
    fprintf(f, "  resolution = \"%s\";\n  max_pending = %d;\n",
            cfg->resolution == VPATH_RES_HIGH ? "HIGH" : "AUTO", cfg->max_pending);
    if (cfg->domain_code) {
        fputs("  domain_code = ", f);
        put_string(f, cfg->domain_code);
        fputs(";\n", f);
    }
    fputs("};\n", f);
    fputs("cache = {\n", f);
    put_int64(f, "max_bytes", cfg->max_bytes);
    fprintf(f,
            "  live_ttl_s = %d;\n  settle_s = %d;\n  error_ttl_s = %d;\n"
            "  stale_if_error_s = %d;\n  readahead = %s;\n};\n",
            cfg->live_ttl_s, cfg->settle_s, cfg->error_ttl_s, cfg->stale_if_error_s,
            cfg->readahead ? "true" : "false");
    fprintf(f, "time = {\n  align_s = %d;\n  timezone = ", cfg->align_s);
    put_string(f, cfg->timezone);
    fputs(";\n};\npresets = [", f);
    for (size_t i = 0; i < cfg->n_presets; i++) {
        fputs(i ? ", " : " ", f);
        put_string(f, cfg->presets[i]);
    }
    fprintf(f, " ];\nhistory_days = %d;\ndashboards = (", cfg->history_days);
    for (size_t i = 0; i < cfg->n_dashboards; i++) {
        const struct cfg_dashboard *d = &cfg->dashboards[i];

        fputs(i ? ",\n  " : "\n  ", f);
        put_entry(f, d->name, d->id);
        fputs(" widgets = (", f);
        for (size_t j = 0; j < d->n_widgets; j++) {
            fputs(j ? ",\n      " : "\n      ", f);
            put_entry(f, d->widgets[j].name, d->widgets[j].id);
            fputs(" }", f);
        }
        fputs(" ); }", f);
    }
    fprintf(f, "\n);\ndiscover = %s;\ndiscover_ttl_s = %d;\n", cfg->discover ? "true" : "false",
            cfg->discover_ttl_s);
    fprintf(f, "pages = %s;\n", cfg->pages ? "true" : "false");
    fprintf(f, "log_level = \"%s\";\n", log_level_name(cfg->log_level));
    if (cfg->shared.redis) {
        /* The password never appears; that one is set is worth knowing. */
        fputs("shared = {\n  redis = ", f);
        put_string(f, cfg->shared.redis);
        fprintf(f,
                ";\n%s  timeout_ms = %d;\n  final_ttl_s = %d;\n"
                "  fleet_requests_per_second = %d;\n};\n",
                cfg->shared.password ? "  # password_file: set (not shown)\n" : "",
                cfg->shared.timeout_ms, cfg->shared.final_ttl_s,
                cfg->shared.fleet_requests_per_second);
    }
    free(shown);
    bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}
