/* shared - a fleet's second cache level in Redis (SPEC 13), through hiredis.
 *
 * Mounts that share a Redis server share image versions, remembered failures, one
 * upstream fetch per image (a lease) and one request-rate cap (GCRA on Redis TIME).
 * Keys never hold a secret: insightfs:1:{img,lease,err,done}:<H> and insightfs:1:rate:<A>,
 * H the hex SHA-256 of the cache key (shared_key_hash), A that of endpoint NUL access
 * key. A value is a 32-byte header (shared_header_encode) and the PNG, stored with PX =
 * its time left; a hit's freshness is its PTTL.
 *
 * Redis is never a new way to fail: every command is bounded by shared.timeout_ms; any
 * error or timeout makes the instance "down" (one warn line, `shared cache unavailable:
 * REASON`), callers then go on alone (SHARED_OFF, the pacer lets every try go), and a
 * thread of its own tries Redis again after 1 s, doubling to 30 s (`shared cache back`
 * at info). The same thread renews the leases held (every 500 ms). No call here ever
 * hands a reader an errno because of Redis.
 *
 * Data flows down: the caller (the request engine's fetch thread) asks shared_get, and
 * acts on the answer; shared never calls up. Thread-safe unless said otherwise: a hiredis
 * context is used by one thread at a time (a pool), and one that failed is discarded.
 */
#ifndef INSIGHTFS_SHARED_H
#define INSIGHTFS_SHARED_H

#include <stddef.h>
#include <stdint.h>

#include "insightfs/api.h"
#include "insightfs/cache.h"
#include "insightfs/cfg.h"
#include "insightfs/http.h"

struct shared;

#define SHARED_HASH_LEN 64 /* hex SHA-256 */
#define SHARED_HDR_LEN 32
#define SHARED_LEASE_MS 2000
#define SHARED_RENEW_MS 500

/* The hex SHA-256 of the cache key of SPEC 7: endpoint, access key, dashboard id, widget
 * id, start ms, end ms (decimal), "AUTO" or "HIGH", separated by NUL, no trailing NUL.
 * Returns 0, -ENOMEM or -EIO. Pure, thread-safe. */
int shared_key_hash(const char *endpoint, const char *access_key, const struct cache_key *k,
                    char out[SHARED_HASH_LEN + 1]) __attribute__((warn_unused_result));

/* The hex SHA-256 of endpoint NUL access key (the rate key's name). Returns 0, -ENOMEM
 * or -EIO. Pure, thread-safe. */
int shared_account_hash(const char *endpoint, const char *access_key, char out[SHARED_HASH_LEN + 1])
    __attribute__((warn_unused_result));

/* The header of a value: "IFS1", fetched_at (big-endian int64), the final flag, three
 * zero bytes, the PNG's length (big-endian uint64), eight zero bytes. Pure. */
void shared_header_encode(unsigned char out[SHARED_HDR_LEN], int64_t fetched_at, int final,
                          uint64_t png_len);

/* Check a value read back as an API body is checked: the header (magic, final 0 or 1,
 * zero bytes), the length (exactly the bytes after the header; at most max_png), and a
 * valid PNG (api_png_valid). Returns 0 with *fetched_at, *final and the PNG at
 * value + SHARED_HDR_LEN (*png_len bytes), or -EINVAL with *why (static text). Pure. */
int shared_value_check(const unsigned char *value, size_t len, size_t max_png, int64_t *fetched_at,
                       int *final, size_t *png_len, const char **why)
    __attribute__((warn_unused_result));

/* An instance for cfg's shared group (cfg->shared.redis must be set): copies what it
 * needs (address, password, timeouts, the account hash for the rate key). Connects
 * nothing yet. Logs the no-TLS warn for a redis:// host that is not loopback. Returns
 * it, or NULL (out of memory) with *err (malloc'd; err may be NULL). */
struct shared *shared_new(const struct cfg *cfg, char **err) __attribute__((warn_unused_result));

/* Start its thread (lease renewal, reconnection); idempotent. Call after daemonizing
 * (shared_get also does). Returns 0 or a negative errno (then leases are not renewed:
 * they expire after SHARED_LEASE_MS and another mount takes over). */
int shared_start(struct shared *s) __attribute__((warn_unused_result));

/* Stop and join the thread, release the leases still held, free everything. NULL-safe.
 * No other call on s may be running. */
void shared_free(struct shared *s);

/* 1 when this instance's settings are cfg's shared group (so a reload may keep it). */
int shared_same(const struct shared *s, const struct cfg *cfg);

/* The fleet pacer for api_set_pacer (book_turn NULL when fleet_requests_per_second is 0):
 * each try takes its slot from the GCRA script and is told how long until then. */
struct api_pacer shared_pacer(struct shared *s);

enum shared_answer {
    SHARED_OFF,    /* no answer from the shared level (down, gave up, D reached): go alone */
    SHARED_VALUE,  /* a valid value: found->png etc. */
    SHARED_FAILED, /* the fleet remembers a failure: found->err (positive errno) */
    SHARED_LEASE,  /* this caller holds the lease: fetch, then shared_finish */
};

struct shared_found {
    unsigned char *png; /* SHARED_VALUE: malloc'd, png_len bytes reserved through mem */
    size_t png_len;
    int64_t fetched_at;         /* SHARED_VALUE: Unix ms, from the header */
    int final;                  /* SHARED_VALUE */
    int64_t fresh_for_ms;       /* SHARED_VALUE: the value's PTTL (-1: no expiry) */
    int err;                    /* SHARED_FAILED */
    struct shared_lease *lease; /* SHARED_LEASE: hand to shared_finish */
};

/* Ask the shared level for the image whose key hashes to hash, never past deadline
 * (CLOCK_MONOTONIC ms): one script returns the value, the failure, or takes the lease;
 * while another mount holds the lease, polls every 15 ms until one of those comes (or
 * the lease disappears: then one of the waiters takes it). An invalid value is deleted,
 * logged once and counted, and asked for anew. mem reserves the PNG's bytes (may be
 * NULL). max_png: the largest PNG accepted (api.max_image_bytes). Never fails: any
 * Redis trouble is SHARED_OFF. Thread-safe. */
enum shared_answer shared_get(struct shared *s, const char *hash, int64_t deadline_mono,
                              size_t max_png, const struct http_mem *mem,
                              struct shared_found *found);

/* The lease holder's fetch ended. With png (len bytes, borrowed) the value is stored with
 * PX ttl_ms (not stored when ttl_ms is 0), else with err (positive errno, 0: none) the
 * failure is stored with PX ttl_ms; then the lease is released if still ours, and
 * "done" is published. Takes ownership of lease in every case. Thread-safe. */
void shared_finish(struct shared *s, const char *hash, struct shared_lease *lease,
                   const unsigned char *png, size_t len, int64_t fetched_at, int final, int err,
                   int64_t ttl_ms);

struct shared_stats {
    uint64_t up; /* 1 while Redis answers */
    uint64_t hits, misses, errors, leases_won, leases_waited, invalid;
};

/* hits: lookups the shared level answered (a value or a failure); misses: lookups that
 * found neither at first; errors: Redis commands or connections that failed or timed
 * out; leases_won: leases taken; leases_waited: lookups that waited for another mount's
 * lease; invalid: values rejected and deleted. Lock-free. */
void shared_get_stats(struct shared *s, struct shared_stats *out);

/* --check-config: connect, AUTH and PING with cfg's shared group (no instance). Returns
 * 0, or a negative errno and *why (malloc'd reason, never holding the password). */
int shared_check(const struct cfg *cfg, char **why) __attribute__((warn_unused_result));

#endif
