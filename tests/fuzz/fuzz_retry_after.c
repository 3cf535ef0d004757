/* fuzz_retry_after - libFuzzer target for http_parse_retry_after (SPEC 6, Retry-After).
 *
 * Input: byte 0 picks a mode, bytes 1-8 a clock; the rest is a header value.
 *   mode even: the value as given (cut at its first NUL, as a header value is), parsed
 *     against a clock from a fixed table or, with bit 1, the clock bytes themselves
 *     (Unix ms within years 1970-9999, as a realtime clock plus the gateway offset is);
 *   mode odd: a well-formed HTTP-date built from the clock bytes, the clock a signed
 *     offset of up to +-2 days away, in the form the mode names (IMF-fixdate, RFC 850
 *     or asctime), with blanks around it or not; the answer is known exactly.
 * Checks: the return is 0 or -EINVAL; 0 means 0 <= delay <= 86400 s, -EINVAL leaves
 * *delay_ms untouched; all-digit values are exactly their seconds up to 86400; a
 * well-formed date gives max(0, date - now) when that is at most 86400 s, else -EINVAL.
 */
#include "insightfs/http.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_MS INT64_C(86400000)
#define YEAR_9999_MS INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */

static const int64_t clocks[] = {
    INT64_C(1733117445123), /* 2024-12-02T05:30:45.123Z */
    INT64_C(784111777000),  /* 1994-11-06T08:49:37Z, the RFC's example date */
    0,
    INT64_C(4102444800000), /* 2100-01-01 */
    YEAR_9999_MS,
    -1,
    INT64_MIN / 4,
    INT64_MAX / 4,
};

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr,                                                                        \
                    "fuzz_retry_after: %s failed (line %d): value \"%s\", now %lld, "              \
                    "rc %d, delay %lld\n",                                                         \
                    #cond, __LINE__, value, (long long)now, rc, (long long)delay);                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* A well-formed date: now + offset in one of the three forms, and the expected answer. */
static void check_date(uint8_t mode, uint64_t bits)
{
    static const char *const forms[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    int form = (mode >> 1) % 3;
    /* RFC 850 has two-digit years: curl reads 71-99 as 19xx, 00-70 as 20xx. */
    int64_t lo = form == 1 ? INT64_C(31536000) : 0;
    int64_t hi = form == 1 ? INT64_C(3187295999) : INT64_C(253402300799);
    int64_t date_s = lo + (int64_t)((bits >> 20) % (uint64_t)(hi - lo + 1));
    int64_t off_ms = (int64_t)(bits & 0xfffff) * 331 - 2 * MAX_MS; /* about +-2 days */
    int64_t now = date_s * 1000 - off_ms, delay = -7, want;
    time_t t = (time_t)date_s;
    char value[96], date[80];
    struct tm tm;
    int rc = 0;

    if (!gmtime_r(&t, &tm) || !strftime(date, sizeof(date), forms[form], &tm))
        return;
    snprintf(value, sizeof(value), "%s%s%s", mode & 8 ? " \t" : "", date, mode & 16 ? " " : "");
    want = off_ms < 0 ? 0 : off_ms;
    rc = http_parse_retry_after(value, now, &delay);
    if (off_ms > MAX_MS) {
        CHECK(rc == -EINVAL && delay == -7);
    } else {
        CHECK(rc == 0);
        CHECK(delay == want);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char value[256];
    int64_t now, delay = -7;
    uint64_t bits;
    size_t n;
    int rc = 0;

    if (size < 9)
        return 0;
    bits = get64(data + 1);
    if (data[0] & 1) {
        check_date(data[0], bits);
        return 0;
    }
    if (data[0] & 2)
        now = (int64_t)(bits % (uint64_t)(YEAR_9999_MS + 1));
    else
        now = clocks[bits % (sizeof(clocks) / sizeof(clocks[0]))];
    n = size - 9 < sizeof(value) - 1 ? size - 9 : sizeof(value) - 1;
    memcpy(value, data + 9, n);
    value[n] = '\0';

    rc = http_parse_retry_after(value, now, &delay);
    CHECK(rc == 0 || rc == -EINVAL);
    if (rc != 0)
        CHECK(delay == -7);
    else
        CHECK(delay >= 0 && delay <= MAX_MS);

    /* delta-seconds: digits only (blanks around them allowed), exactly their value */
    size_t b = strspn(value, " \t"), d = strspn(value + b, "0123456789");
    if (d > 0 && value[b + d + strspn(value + b + d, " \t")] == '\0') {
        int64_t v = 0;

        for (size_t i = 0; i < d && v <= 86400; i++)
            v = v * 10 + (value[b + i] - '0');
        if (v <= 86400)
            CHECK(rc == 0 && delay == v * 1000);
        else
            CHECK(rc == -EINVAL);
    }

    /* NULL arguments are refused, never dereferenced */
    CHECK(http_parse_retry_after(NULL, now, &delay) == -EINVAL);
    CHECK(http_parse_retry_after(value, now, NULL) == -EINVAL);
    return 0;
}
