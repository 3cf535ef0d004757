/* fs_meta - the files of /.insightfs (SPEC 5): stats, metrics, metrics.prom, config.
 *
 * Each is a snapshot made when its name is looked up (fs.c gives it its own inode with
 * the exact size), so a reader sees one consistent set of numbers however it reads.
 * stats and metrics report the same counters: cache_get_stats and api_get_stats of the
 * generation in force (and shared_get_stats when a shared group is configured:
 * SPEC 13). config is cfg_dump of that generation's configuration, which
 * never holds the secret and shows only the access key's last 4 characters.
 * No locks of its own; the counters come from thread-safe getters.
 */
#include "fs_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/cfg.h"

/* In listing order (SPEC 5). */
static const char *const meta_names[] = {"stats", "metrics", "metrics.prom", "config"};

const char *fs_meta_name(size_t i)
{
    return i < sizeof(meta_names) / sizeof(meta_names[0]) ? meta_names[i] : NULL;
}

struct meta_counters {
    struct cache_stats cache;
    struct api_stats api;
    uint64_t inodes, readahead, queued, waiting, shed;
    long long uptime_s;
    int has_shared; /* a shared group is configured: `shared` below is reported */
    struct shared_stats shared;
};

static void counters(struct fs *fs, struct meta_counters *c)
{
    cache_get_stats(fs->cache, &c->cache);
    struct fs_gen *g = fs_gen_get(fs);
    api_get_stats(g->api, &c->api);
    c->has_shared = g->shared != NULL;
    if (g->shared)
        shared_get_stats(g->shared, &c->shared);
    else
        memset(&c->shared, 0, sizeof(c->shared));
    fs_gen_unref(g);
    c->inodes = fs_ino_images(fs->ino);
    c->cache.pinned_bytes += fs_ino_pinned_bytes(fs->ino);
    c->readahead = atomic_load(&fs->readahead);
    c->queued = engine_queued(fs->engine);
    c->waiting = atomic_load(&fs->waiting);
    c->shed = atomic_load(&fs->shed);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    c->uptime_s = (long long)(now.tv_sec - fs->ready_mono.tv_sec);
    if (c->uptime_s < 0)
        c->uptime_s = 0;
}

static char *stats_json(const struct meta_counters *c)
{
    char *s = NULL, shared[320] = "";
    if (c->has_shared)
        snprintf(shared, sizeof(shared),
                 ",\"shared\":{\"up\":%" PRIu64 ",\"hits\":%" PRIu64 ",\"misses\":%" PRIu64
                 ",\"errors\":%" PRIu64 ",\"leases_won\":%" PRIu64 ",\"leases_waited\":%" PRIu64
                 ",\"invalid\":%" PRIu64 "}",
                 c->shared.up, c->shared.hits, c->shared.misses, c->shared.errors,
                 c->shared.leases_won, c->shared.leases_waited, c->shared.invalid);
    if (asprintf(&s,
                 "{\"cache\":{\"entries\":%" PRIu64 ",\"bytes\":%" PRIu64
                 ",\"pinned_bytes\":%" PRIu64 ",\"max_bytes\":%" PRIu64 ",\"hits\":%" PRIu64
                 ",\"misses\":%" PRIu64 ",\"evictions\":%" PRIu64 ",\"keys\":%" PRIu64
                 ",\"inodes\":%" PRIu64 ",\"readahead\":%" PRIu64
                 "},\"upstream\":{\"requests\":%" PRIu64 ",\"failures\":%" PRIu64
                 ",\"retries\":%" PRIu64 ",\"in_flight\":%" PRIu64 ",\"bytes\":%" PRIu64
                 ",\"queued\":%" PRIu64 ",\"waiting\":%" PRIu64 ",\"shed\":%" PRIu64
                 ",\"down\":%" PRIu64 ",\"down_total\":%" PRIu64 "}%s,\"uptime_s\":%lld}\n",
                 c->cache.entries, c->cache.bytes, c->cache.pinned_bytes, c->cache.max_bytes,
                 c->cache.hits, c->cache.misses, c->cache.evictions, c->cache.keys, c->inodes,
                 c->readahead, c->api.requests, c->api.failures, c->api.retries, c->api.in_flight,
                 c->api.bytes, c->queued, c->waiting, c->shed, c->api.down, c->api.down_total,
                 shared, c->uptime_s) < 0)
        return NULL;
    return s;
}

/* Prometheus text format 0.0.4: HELP, TYPE, the sample; no timestamps. */
static char *metrics_text(const struct meta_counters *c)
{
    const struct {
        const char *name, *type, *help;
        uint64_t value;
    } m[] = {
        {"insightfs_cache_entries", "gauge", "Image versions with bytes in the cache.",
         c->cache.entries},
        {"insightfs_cache_bytes", "gauge", "Bytes counted against cache.max_bytes.",
         c->cache.bytes},
        {"insightfs_cache_pinned_bytes", "gauge",
         "Bytes of evicted versions still held by open files or the kernel.",
         c->cache.pinned_bytes},
        {"insightfs_cache_max_bytes", "gauge", "The configured cache.max_bytes.",
         c->cache.max_bytes},
        {"insightfs_upstream_in_flight", "gauge", "HTTP requests in flight now.", c->api.in_flight},
        {"insightfs_uptime_seconds", "gauge", "Seconds since the mount was ready.",
         (uint64_t)c->uptime_s},
        {"insightfs_cache_keys", "gauge", "Keys of every kind in the cache's index.",
         c->cache.keys},
        {"insightfs_cache_inodes", "gauge", "Image inodes the kernel holds.", c->inodes},
        {"insightfs_upstream_queued", "gauge", "Logical fetches waiting for a connection slot.",
         c->queued},
        {"insightfs_upstream_waiting", "gauge", "Filesystem requests waiting for fetches.",
         c->waiting},
        {"insightfs_upstream_down", "gauge", "1 while the circuit breaker is open.", c->api.down},
        {"insightfs_cache_hits_total", "counter",
         "Image lookups that found a fresh cached version.", c->cache.hits},
        {"insightfs_cache_misses_total", "counter", "Image lookups that started or joined a fetch.",
         c->cache.misses},
        {"insightfs_cache_evictions_total", "counter",
         "Versions removed from the cache for max_bytes.", c->cache.evictions},
        {"insightfs_upstream_requests_total", "counter", "HTTP tries of every API call.",
         c->api.requests},
        {"insightfs_upstream_failures_total", "counter", "HTTP tries without a valid answer.",
         c->api.failures},
        {"insightfs_upstream_retries_total", "counter", "HTTP tries after the first of a call.",
         c->api.retries},
        {"insightfs_upstream_bytes_total", "counter", "Response body bytes received.",
         c->api.bytes},
        {"insightfs_cache_readahead_total", "counter", "Fetches started ahead of a listing.",
         c->readahead},
        {"insightfs_upstream_shed_total", "counter",
         "Filesystem requests answered EAGAIN for api.max_pending.", c->shed},
        {"insightfs_upstream_down_total", "counter", "Times the circuit breaker opened.",
         c->api.down_total},
    };
    const struct {
        const char *name, *type, *help;
        uint64_t value;
    } sm[] = {
        {"insightfs_shared_up", "gauge", "1 while the shared cache (Redis) answers.", c->shared.up},
        {"insightfs_shared_hits_total", "counter",
         "Fetches the shared cache answered (a value or a remembered failure).", c->shared.hits},
        {"insightfs_shared_misses_total", "counter",
         "Fetches that found nothing in the shared cache at first.", c->shared.misses},
        {"insightfs_shared_errors_total", "counter",
         "Redis commands or connections that failed or timed out.", c->shared.errors},
        {"insightfs_shared_leases_won_total", "counter",
         "Fleet leases this mount took (it fetched for the fleet).", c->shared.leases_won},
        {"insightfs_shared_leases_waited_total", "counter",
         "Fetches that waited for another mount's lease.", c->shared.leases_waited},
        {"insightfs_shared_invalid_total", "counter",
         "Shared values rejected by their checks and deleted.", c->shared.invalid},
    };
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", m[i].name, m[i].help, m[i].name,
                m[i].type, m[i].name, m[i].value);
    for (size_t i = 0; c->has_shared && i < sizeof(sm) / sizeof(sm[0]); i++)
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", sm[i].name, sm[i].help,
                sm[i].name, sm[i].type, sm[i].name, sm[i].value);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}

int fs_meta_snapshot(struct fs *fs, const char *name, char **data, size_t *len)
{
    struct meta_counters c;
    char *s = NULL;
    *data = NULL;
    *len = 0;
    if (strcmp(name, "stats") == 0) {
        counters(fs, &c);
        s = stats_json(&c);
    } else if (strcmp(name, "metrics") == 0 || strcmp(name, "metrics.prom") == 0) {
        counters(fs, &c);
        s = metrics_text(&c);
    } else if (strcmp(name, "config") == 0) {
        struct fs_gen *g = fs_gen_get(fs);
        s = cfg_dump(g->cfg);
        fs_gen_unref(g);
    } else {
        return -ENOENT;
    }
    if (!s)
        return -ENOMEM;
    *data = s;
    *len = strlen(s);
    return 0;
}
