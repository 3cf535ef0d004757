/* shared internals, shared by shared.c (keys, values, the read path, the pacer) and
 * shared_conn.c (connections, up/down, the keeper thread, leases held); not part of any
 * contract.
 */
#ifndef INSIGHTFS_SHARED_INT_H
#define INSIGHTFS_SHARED_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "insightfs/shared.h"

/* The Lua scripts, loaded once per connection (SCRIPT LOAD) and run with EVALSHA. */
enum shared_script { SHARED_S_GET, SHARED_S_FINISH, SHARED_S_RENEW, SHARED_S_RATE, SHARED_NS };

#define SHARED_POOL_MAX 64
#define SHARED_BACKOFF_MIN_MS 1000
#define SHARED_BACKOFF_MAX_MS 30000

/* One connection: used by one thread at a time. */
struct shared_conn {
    redisContext *rc;
    uint64_t epoch; /* the instance's epoch when opened: older ones are not pooled again */
    struct shared_conn *next; /* in the pool */
};

/* A lease this mount holds, renewed by the keeper until shared_finish. */
struct shared_lease {
    char key[96];                     /* insightfs:1:lease:<H> */
    char value[128];                  /* host name, pid, random token */
    struct shared_lease *next, *prev; /* protected by shared.mu */
};

struct shared {
    /* immutable after shared_new */
    char *redis, *host, *socket, *password; /* password wiped on free */
    int port, db, timeout_ms, final_ttl_s, fleet_rps;
    char rate_key[96];
    char holder[64]; /* "<host name> <pid>" for lease values */

    pthread_mutex_t mu;
    pthread_cond_t cv;            /* CLOCK_MONOTONIC: the keeper's sleep */
    struct shared_conn *pool;     /* protected by mu: idle connections */
    size_t pool_n;                /* protected by mu */
    uint64_t epoch;               /* protected by mu: bumped when Redis goes down */
    int64_t retry_at, backoff_ms; /* protected by mu: while down */
    int announced;                /* protected by mu: the down warn was logged */
    struct shared_lease *leases;  /* protected by mu */
    int stop, started;            /* protected by mu */
    pthread_t keeper;
    char sha[SHARED_NS][41]; /* protected by mu: the scripts' SHA1s */

    atomic_int up;
    atomic_uint_fast64_t hits, misses, errors, leases_won, leases_waited, invalid;
};

int64_t shared_mono_ms(void);

/* A connection to use now, or NULL when Redis is down or cannot be reached (then it is
 * marked down). */
struct shared_conn *shared_conn_take(struct shared *s);

/* Give c back: ok 1 pools it (if still current), ok 0 discards it. NULL-safe. */
void shared_conn_put(struct shared *s, struct shared_conn *c, int ok);

/* Run script sc with nkeys keys then args (argv/lens: keys first). Returns the reply
 * (freeReplyObject), or NULL after marking Redis down (c must then be put with ok 0). */
redisReply *shared_eval(struct shared *s, struct shared_conn *c, enum shared_script sc, int nkeys,
                        int argc, const char **argv, const size_t *lens);

/* A plain command; as shared_eval. */
redisReply *shared_cmd(struct shared *s, struct shared_conn *c, int argc, const char **argv,
                       const size_t *lens);

/* Redis failed: go on alone, log once, retry later (the keeper). */
void shared_mark_down(struct shared *s, const char *why);

/* Hold and drop leases (the keeper renews those held). */
void shared_lease_hold(struct shared *s, struct shared_lease *l);
void shared_lease_drop(struct shared *s, struct shared_lease *l);

/* The keeper thread; shared_conn_init/cleanup set up and tear down the fields above. */
int shared_conn_init(struct shared *s);
void shared_conn_cleanup(struct shared *s);

#endif
