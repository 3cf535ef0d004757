/* flight - single flight and failure memory for one thing that is fetched: an image key
 * or a discovered list. The one primitive both use (SPEC 6 and 7: concurrent askers
 * share one logical fetch; a failure is remembered for error_ttl_s).
 *
 * A struct flight is embedded in its owner's record and protected by the owner's lock;
 * these functions take no lock, never block, never allocate and read no clock: "now" is
 * CLOCK_MONOTONIC ms passed in. A waiter is a struct flight_waiter embedded in whatever
 * waits (a kept filesystem request): the flight only links it.
 *
 * The protocol: flight_begin says what the asker does. FLIGHT_FETCH hands the asker the
 * ticket: it must fetch (outside the owner's lock) and then call flight_end exactly once,
 * which returns every waiter that joined meanwhile (detached), to be answered with that
 * one result by the caller after it drops the owner's lock. So every waiter of one fetch
 * gets that fetch's result, whatever error_ttl_s is.
 */
#ifndef INSIGHTFS_FLIGHT_H
#define INSIGHTFS_FLIGHT_H

#include <stdint.h>

struct flight_waiter {
    struct flight_waiter *next; /* owned by the flight while linked */
};

struct flight {
    int running;                   /* a ticket is out */
    int err;                       /* remembered failure (positive errno), 0: none */
    int64_t failed_until;          /* CLOCK_MONOTONIC ms: the failure is remembered until */
    struct flight_waiter *waiters; /* joined the running fetch, newest first */
    unsigned n_waiters;
};

enum flight_do {
    FLIGHT_FETCH,  /* nobody fetches: the caller holds the ticket (flight_end) */
    FLIGHT_WAIT,   /* a fetch is running: w (if any) joined it */
    FLIGHT_FAILED, /* a failure is remembered: *err (positive) */
};

/* What an asker that needs the result does (see above). w may be NULL (do not wait: the
 * caller only wants the fetch started, e.g. readahead). With FLIGHT_FETCH, a non-NULL w
 * joins too, so the ticket holder answers it with the rest. */
enum flight_do flight_begin(struct flight *f, int64_t now, struct flight_waiter *w, int *err);

/* The ticket holder's fetch ended with rc (0 or a negative errno). A failure is remembered
 * for remember_ms from now (0: not at all, e.g. a fast-fail of the circuit breaker);
 * success forgets any. Returns the waiters to answer (a NULL-terminated list through
 * next, detached from f). */
struct flight_waiter *flight_end(struct flight *f, int rc, int64_t now, int64_t remember_ms);

/* 1 and *err when a failure is remembered at now, else 0 (an expired one is forgotten). */
int flight_failed(struct flight *f, int64_t now, int *err);

/* Forget the remembered failure, if any. */
void flight_forget(struct flight *f);

/* A failure from still remembered at now is remembered in to as well, until the same
 * time (a record that replaces another under the same key). */
void flight_carry(struct flight *to, struct flight *from, int64_t now);

/* 1 when nobody fetches and nobody waits: the owner may drop the record. */
int flight_idle(const struct flight *f);

#endif
