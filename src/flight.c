/* flight - single flight and failure memory (the contract and protocol are in flight.h).
 *
 * Invariants: waiters is non-empty only while running; err != 0 only while not running
 * (a new ticket clears the old failure, so waiters of the new fetch never see it).
 * Everything runs under the owner's lock; nothing here blocks or reads a clock.
 */
#include "insightfs/flight.h"

#include <stddef.h>

enum flight_do flight_begin(struct flight *f, int64_t now, struct flight_waiter *w, int *err)
{
    if (f->running) {
        if (w) {
            w->next = f->waiters;
            f->waiters = w;
            f->n_waiters++;
        }
        return FLIGHT_WAIT;
    }
    if (flight_failed(f, now, err))
        return FLIGHT_FAILED;
    f->running = 1;
    f->err = 0;
    if (w) {
        w->next = f->waiters;
        f->waiters = w;
        f->n_waiters++;
    }
    return FLIGHT_FETCH;
}

struct flight_waiter *flight_end(struct flight *f, int rc, int64_t now, int64_t remember_ms)
{
    struct flight_waiter *list = f->waiters;
    f->waiters = NULL;
    f->n_waiters = 0;
    f->running = 0;
    if (rc < 0 && remember_ms > 0) {
        f->err = -rc;
        f->failed_until = now + remember_ms;
    } else {
        f->err = 0;
    }
    return list;
}

int flight_failed(struct flight *f, int64_t now, int *err)
{
    if (f->err == 0)
        return 0;
    if (now >= f->failed_until) {
        f->err = 0;
        return 0;
    }
    if (err)
        *err = f->err;
    return 1;
}

void flight_forget(struct flight *f)
{
    f->err = 0;
}

void flight_carry(struct flight *to, struct flight *from, int64_t now)
{
    int err;
    if (flight_failed(from, now, &err)) {
        to->err = err;
        to->failed_until = from->failed_until;
    }
}

int flight_idle(const struct flight *f)
{
    return !f->running && !f->waiters;
}
