/* vpath - the name grammar of SPEC section 4: image names <-> time ranges.
 *
 * Pure functions over (name, clock, process time zone). The only I/O is
 * vpath_tz_valid, which reads four bytes of a tzdata file; the only process-wide
 * state touched is TZ, by vpath_tz_set, before any thread starts.
 *
 * Invariants of every successful parse:
 *   - the whole name matched the grammar: no prefix matching, no sign, no space,
 *     no case folding; numbers are parsed digit by digit with explicit bounds;
 *   - start_ms < end_ms; absolute ranges and last-N never start before 0;
 *   - every sum or product of times is overflow-checked (a hostile name such as
 *     last-999999999w is computed exactly and rejected by the start >= 0 rule);
 *   - *out is written only on success.
 *
 * Time: T is clk->now_ms rounded down (floor, also below 0) to a multiple of
 * align_s * 1000. "Today" is the local date of now_ms, not of T: when align_s does
 * not divide the local day, T may still lie in yesterday, which is why today ends at
 * max(T, start of today + align).
 *
 * Day boundaries: the first instant of a local date D is the first second whose local
 * time is 00:00 of D or later, searched from 26 h before (a point surely on an earlier
 * date). It is not mktime(D 00:00, tm_isdst = -1): where clocks go back across midnight
 * (America/St_Johns until 2010, America/Moncton, Antarctica/Casey 2010) D begins twice,
 * and glibc's mktime picks one by a hint that any other mktime call changes, so one name
 * gave two ranges. Where clocks move at midnight (America/Havana) 00:00 may not exist:
 * D begins at the jump. The local date is not monotonic there, so plain bisection on it
 * is wrong; the local time is monotonic within each run of one UTC offset (tm_gmtoff),
 * so the search walks those runs: in each, the first second at or after 00:00 of D is
 * max(run start, midnight - offset). A run's end is found by bisection on the offset,
 * which assumes the offset never leaves a value and comes back to it within the 52 h
 * searched (true of every tzdata zone 1900-2040, checked with zdump -v). A zone without a
 * transition there (nearly every day) costs five localtime_r calls and no search.
 *
 * Calendar arithmetic (ISO names, days/ names, "i days before today") uses the
 * proleptic Gregorian day count of Howard Hinnant's days_from_civil, so it is
 * independent of the time zone and of the C library's range limits.
 *
 * Thread safety: localtime_r is thread-safe in glibc; everything here
 * but vpath_tz_set may run in any thread.
 */
#include "insightfs/vpath.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NAME_MAX_BYTES 255
#define MS_PER_S INT64_C(1000)
#define S_PER_DAY INT64_C(86400)
#define ZONEINFO_DIR "/usr/share/zoneinfo"

/* A calendar date; y is wide so that arithmetic on it never overflows. */
struct civil {
    int64_t y;
    int m, d;
};

enum rel_kind { REL_LAST, REL_TODAY, REL_YESTERDAY };

struct rel {
    enum rel_kind kind;
    int64_t span_ms; /* REL_LAST only */
};

/* ---- numbers and the calendar ---------------------------------------------------- */

/* Exactly n decimal digits, nothing else. n <= 18 keeps the value below 10^18 <
 * INT64_MAX, so the accumulation below cannot overflow. */
static int parse_digits(const char *p, size_t n, int64_t *out)
{
    int64_t v = 0;

    if (n == 0 || n > 18)
        return -ENOENT;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -ENOENT;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && is_leap(y) ? 29 : len[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(const struct civil *c)
{
    int64_t y = c->y - (c->m <= 2);
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (c->m + (c->m > 2 ? -3 : 9)) + 2) / 5 + c->d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, struct civil *c)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;

    c->d = (int)(doy - (153 * mp + 2) / 5 + 1);
    c->m = (int)(mp < 10 ? mp + 3 : mp - 9);
    c->y = yoe + era * 400 + (c->m <= 2);
}

/* YYYY, MM and DD as digits at y, m and d: a real date from 1970-01-01 on. */
static int parse_date_parts(const char *y, const char *m, const char *d, struct civil *out)
{
    int64_t yy, mm, dd;

    if (parse_digits(y, 4, &yy) || parse_digits(m, 2, &mm) || parse_digits(d, 2, &dd))
        return -ENOENT;
    if (yy < 1970 || mm < 1 || mm > 12 || dd < 1 || dd > days_in_month(yy, (int)mm))
        return -ENOENT;
    out->y = yy;
    out->m = (int)mm;
    out->d = (int)dd;
    return 0;
}

/* ---- the grammar ----------------------------------------------------------------- */

/* EPOCH (13 digits) or ISO (YYYYMMDDTHHMMZ / YYYYMMDDTHHMMSSZ, UTC) -> Unix ms. */
static int parse_instant(const char *p, size_t n, int64_t *out_ms)
{
    struct civil c;
    int64_t hh, mi, ss = 0;

    if (n == 13)
        return parse_digits(p, n, out_ms);
    if (n != 14 && n != 16)
        return -ENOENT;
    if (p[8] != 'T' || p[n - 1] != 'Z')
        return -ENOENT;
    if (parse_date_parts(p, p + 4, p + 6, &c))
        return -ENOENT;
    if (parse_digits(p + 9, 2, &hh) || parse_digits(p + 11, 2, &mi))
        return -ENOENT;
    if (n == 16 && parse_digits(p + 13, 2, &ss))
        return -ENOENT;
    if (hh > 23 || mi > 59 || ss > 59)
        return -ENOENT;
    /* Year <= 9999: about 2.5e14 ms, far from any int64 limit. */
    *out_ms = ((days_from_civil(&c) * S_PER_DAY) + hh * 3600 + mi * 60 + ss) * MS_PER_S;
    return 0;
}

/* RANGE: two instants around the one '-' (neither EPOCH nor ISO contains one). */
static int parse_range(const char *p, size_t n, int64_t *start_ms, int64_t *end_ms)
{
    const char *dash = memchr(p, '-', n);
    size_t left;

    if (!dash)
        return -ENOENT;
    left = (size_t)(dash - p);
    if (parse_instant(p, left, start_ms) || parse_instant(dash + 1, n - left - 1, end_ms))
        return -ENOENT;
    if (*start_ms >= *end_ms)
        return -ENOENT;
    return 0;
}

/* REL: last-N<m|h|d|w> (N: 1-9 digits, no leading zero), today, yesterday. */
static int parse_rel(const char *p, size_t n, struct rel *out)
{
    static const char last[] = "last-";
    const size_t last_len = sizeof(last) - 1;
    int64_t count, unit_s, span_ms;
    size_t ndigits;

    if (n == 5 && memcmp(p, "today", 5) == 0) {
        out->kind = REL_TODAY;
        return 0;
    }
    if (n == 9 && memcmp(p, "yesterday", 9) == 0) {
        out->kind = REL_YESTERDAY;
        return 0;
    }
    if (n < last_len + 2 || memcmp(p, last, last_len) != 0)
        return -ENOENT;
    ndigits = n - last_len - 1;
    if (ndigits > 9 || p[last_len] == '0')
        return -ENOENT;
    if (parse_digits(p + last_len, ndigits, &count))
        return -ENOENT;
    switch (p[n - 1]) {
    case 'm':
        unit_s = 60;
        break;
    case 'h':
        unit_s = 3600;
        break;
    case 'd':
        unit_s = S_PER_DAY;
        break;
    case 'w':
        unit_s = 7 * S_PER_DAY;
        break;
    default:
        return -ENOENT;
    }
    if (__builtin_mul_overflow(count, unit_s, &span_ms) ||
        __builtin_mul_overflow(span_ms, MS_PER_S, &span_ms))
        return -ENOENT;
    out->kind = REL_LAST;
    out->span_ms = span_ms;
    return 0;
}

static int has_tail(const char *p, size_t n, const char *tail)
{
    size_t t = strlen(tail);

    return n >= t && memcmp(p + n - t, tail, t) == 0;
}

/* Checks the length and ".png", strips an optional @high/@auto. Leaves the stem
 * length in *stem_len and the resolution in *res. */
static int split_name(const char *name, enum vpath_res default_res, size_t *stem_len,
                      enum vpath_res *res)
{
    size_t n;

    if (!name)
        return -ENOENT;
    n = strnlen(name, NAME_MAX_BYTES + 1);
    if (n > NAME_MAX_BYTES || !has_tail(name, n, ".png"))
        return -ENOENT;
    n -= 4;
    *res = default_res;
    if (has_tail(name, n, "@high")) {
        *res = VPATH_RES_HIGH;
        n -= 5;
    } else if (has_tail(name, n, "@auto")) {
        *res = VPATH_RES_AUTO;
        n -= 5;
    }
    *stem_len = n;
    return 0;
}

/* ---- the clock and the local calendar -------------------------------------------- */

/* T = now rounded down to a multiple of the alignment step; *step = align_s in ms. */
static int clock_align(const struct vpath_clock *clk, int64_t *t_ms, int64_t *step_ms)
{
    int64_t step, rem;

    if (!clk || clk->align_s < 1)
        return -EINVAL;
    step = (int64_t)clk->align_s * MS_PER_S; /* < 2^31 * 1000: no overflow */
    rem = clk->now_ms % step;
    if (rem < 0)
        rem += step;
    if (__builtin_sub_overflow(clk->now_ms, rem, t_ms))
        return -ERANGE;
    *step_ms = step;
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* The local date of the second t. */
static int local_date_s(time_t t, struct civil *out)
{
    struct tm tm;

    if (!localtime_r(&t, &tm))
        return -ERANGE;
    out->y = (int64_t)tm.tm_year + 1900;
    out->m = tm.tm_mon + 1;
    out->d = tm.tm_mday;
    return 0;
}

static int local_date_ms(int64_t t_ms, struct civil *out)
{
    return local_date_s((time_t)floor_div(t_ms, MS_PER_S), out);
}

/* -1, 0, 1 as the local date of t is before, on, after d (-2 on error). */
static int local_cmp(time_t t, int64_t d_days)
{
    struct civil c;
    int64_t days;

    if (local_date_s(t, &c))
        return -2;
    days = days_from_civil(&c);
    return days < d_days ? -1 : days > d_days;
}

/* The UTC offset in force at the second t, in seconds east of UTC. */
static int offset_at(time_t t, long *off)
{
    struct tm tm;

    if (!localtime_r(&t, &tm))
        return -ERANGE;
    *off = tm.tm_gmtoff;
    return 0;
}

/* The last second of the run of offset off that starts at a (off_at(a) = off) before hi,
 * whose offset differs: bisection on "offset is still off", see the design note at the
 * top for why that is exact. */
static int segment_end(time_t a, long off, time_t hi, time_t *end)
{
    while (hi - a > 1) {
        time_t mid = a + (hi - a) / 2;
        long o;

        if (offset_at(mid, &o))
            return -ERANGE;
        if (o == off)
            a = mid;
        else
            hi = mid;
    }
    *end = a;
    return 0;
}

/* The first instant of local date c, in Unix ms. When the zone skipped c (Pacific/Apia
 * 2011-12-30): -ERANGE, or with or_later the first instant of the next date it kept. */
static int date_first_ms(const struct civil *c, int or_later, int64_t *out_ms)
{
    int64_t d_days = days_from_civil(c);
    int64_t midnight, lo, hi;
    time_t a, t = 0;
    int found = 0, cmp;

    /* UTC offsets stay within +-26 h: lo lies before c, and by hi the local date is c
     * or later. midnight is 00:00 of c in local seconds (t + offset at t). */
    if (__builtin_mul_overflow(d_days, S_PER_DAY, &midnight) ||
        __builtin_sub_overflow(midnight, 26 * 3600, &lo) ||
        __builtin_add_overflow(midnight, 26 * 3600, &hi) || (time_t)lo != lo || (time_t)hi != hi)
        return -ERANGE;
    if (local_cmp((time_t)lo, d_days) != -1 || local_cmp((time_t)hi, d_days) < 0)
        return -ERANGE;
    /* Walk the runs of one offset from lo: in each the local time grows with t, so its
     * first second at or after 00:00 of c is max(run start, midnight - offset). */
    for (a = (time_t)lo; !found && a <= (time_t)hi;) {
        long off, off_hi;
        time_t end = (time_t)hi, first;

        if (offset_at(a, &off) || offset_at((time_t)hi, &off_hi))
            return -ERANGE;
        if (off_hi != off && segment_end(a, off, (time_t)hi, &end))
            return -ERANGE;
        first = midnight - off > a ? (time_t)(midnight - off) : a;
        if (first <= end) {
            t = first;
            found = 1;
        }
        a = end + 1;
    }
    cmp = found ? local_cmp(t, d_days) : -2;
    if (cmp < 0 || (cmp > 0 && !or_later))
        return -ERANGE; /* cmp > 0: the zone skipped the whole date */
    if (__builtin_mul_overflow((int64_t)t, MS_PER_S, out_ms))
        return -ERANGE;
    return 0;
}

static int date_start_ms(const struct civil *c, int64_t *out_ms)
{
    return date_first_ms(c, 0, out_ms);
}

/* The end of local date c: the first instant after it, which is the start of the next
 * date even when the zone skipped that one. */
static int date_end_ms(const struct civil *c, int64_t *out_ms)
{
    struct civil s;

    civil_from_days(days_from_civil(c) + 1, &s);
    return date_first_ms(&s, 1, out_ms);
}

/* The first instant of the local date days_from_civil(c) + delta. */
static int shifted_start_ms(const struct civil *c, int64_t delta, int64_t *out_ms)
{
    struct civil s;

    civil_from_days(days_from_civil(c) + delta, &s);
    return date_start_ms(&s, out_ms);
}

/* ---- resolving a name against the clock ------------------------------------------ */

/* today and days/<today>: [start of today, max(T, start + align)]. */
static int resolve_today(const struct vpath_clock *clk, struct vpath_image *img)
{
    struct civil today;
    int64_t t, step, start, next, floor_end, bumped;

    if (clock_align(clk, &t, &step) || local_date_ms(clk->now_ms, &today) ||
        date_start_ms(&today, &start) || date_end_ms(&today, &next))
        return -ENOENT;
    if (__builtin_add_overflow(start, step, &floor_end) || __builtin_add_overflow(t, step, &bumped))
        return -ENOENT;
    img->start_ms = start;
    img->end_ms = t > floor_end ? t : floor_end;
    img->relative = 1;
    img->changes_at_ms = bumped < next ? bumped : next;
    return 0;
}

static int resolve_rel(const struct rel *rel, const struct vpath_clock *clk,
                       struct vpath_image *img)
{
    struct civil today;
    int64_t t, step;

    if (clock_align(clk, &t, &step))
        return -ENOENT;
    switch (rel->kind) {
    case REL_TODAY:
        return resolve_today(clk, img);
    case REL_YESTERDAY:
        if (local_date_ms(clk->now_ms, &today) || shifted_start_ms(&today, -1, &img->start_ms) ||
            date_start_ms(&today, &img->end_ms) || date_end_ms(&today, &img->changes_at_ms))
            return -ENOENT;
        img->relative = 1;
        return 0;
    case REL_LAST:
        if (__builtin_sub_overflow(t, rel->span_ms, &img->start_ms) || img->start_ms < 0 ||
            __builtin_add_overflow(t, step, &img->changes_at_ms))
            return -ENOENT;
        img->end_ms = t;
        img->relative = 1;
        return 0;
    }
    return -ENOENT;
}

/* ---- the interface --------------------------------------------------------------- */

int vpath_parse_image(const char *name, enum vpath_res default_res, const struct vpath_clock *clk,
                      struct vpath_image *out)
{
    struct vpath_image img = {0};
    struct rel rel;
    size_t n;
    int rc;

    if (!clk || clk->align_s < 1 || !out)
        return -EINVAL;
    rc = split_name(name, default_res, &n, &img.res);
    if (rc)
        return rc;
    if (parse_rel(name, n, &rel) == 0) {
        rc = resolve_rel(&rel, clk, &img);
    } else {
        rc = parse_range(name, n, &img.start_ms, &img.end_ms);
        img.relative = 0;
        img.changes_at_ms = INT64_MAX;
    }
    if (rc == 0 && img.start_ms >= img.end_ms)
        rc = -ENOENT;
    if (rc == 0)
        *out = img;
    return rc;
}

int vpath_parse_day(const char *name, enum vpath_res default_res, const struct vpath_clock *clk,
                    struct vpath_image *out)
{
    struct vpath_image img = {0};
    struct civil day, today;
    int64_t day_n, today_n;
    size_t n;
    int rc;

    if (!clk || clk->align_s < 1 || !out)
        return -EINVAL;
    rc = split_name(name, default_res, &n, &img.res);
    if (rc)
        return rc;
    if (n != 10 || name[4] != '-' || name[7] != '-' ||
        parse_date_parts(name, name + 5, name + 8, &day))
        return -ENOENT;
    if (local_date_ms(clk->now_ms, &today))
        return -ENOENT;
    day_n = days_from_civil(&day);
    today_n = days_from_civil(&today);
    if (day_n > today_n)
        return -ENOENT;
    if (day_n == today_n) {
        rc = resolve_today(clk, &img);
    } else {
        rc = date_start_ms(&day, &img.start_ms);
        if (rc == 0)
            rc = date_end_ms(&day, &img.end_ms);
        img.relative = 0;
        img.changes_at_ms = INT64_MAX;
    }
    if (rc != 0 || img.start_ms >= img.end_ms)
        return -ENOENT;
    *out = img;
    return 0;
}

int vpath_is_relative(const char *rel)
{
    struct rel r;
    size_t n;

    if (!rel)
        return 0;
    n = strnlen(rel, NAME_MAX_BYTES + 1);
    return n <= NAME_MAX_BYTES && parse_rel(rel, n, &r) == 0;
}

/* Writes v as exactly width digits (v is known to fit). */
static void put_digits(char *p, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

int vpath_day_name(const struct vpath_clock *clk, int i, char out[VPATH_DAY_LEN])
{
    struct civil today, day;
    int64_t n, start;

    if (!clk || !out)
        return -EINVAL;
    if (i < 0 || local_date_ms(clk->now_ms, &today))
        return -ERANGE;
    n = days_from_civil(&today) - i;
    if (n < 0)
        return -ERANGE;
    civil_from_days(n, &day);
    if (day.y > 9999)
        return -ERANGE;
    if (date_start_ms(&day, &start) != 0)
        return -ENOENT; /* a date the zone skipped: no name for it parses */
    put_digits(out, day.y, 4);
    out[4] = '-';
    put_digits(out + 5, day.m, 2);
    out[7] = '-';
    put_digits(out + 8, day.d, 2);
    out[10] = '\0';
    return 0;
}

int64_t vpath_day_start_ms(int64_t t_ms)
{
    struct civil c;
    int64_t start;

    if (local_date_ms(t_ms, &c) || date_start_ms(&c, &start))
        return INT64_MIN;
    return start;
}

int vpath_is_final(int64_t end_ms, int64_t signed_at_ms, int settle_s)
{
    int64_t settle_ms = (int64_t)settle_s * MS_PER_S; /* |int| * 1000 < 2^41 */
    int64_t limit;

    if (__builtin_sub_overflow(signed_at_ms, settle_ms, &limit))
        return settle_ms < 0; /* the limit lies beyond INT64_MAX, or below INT64_MIN */
    return end_ms < limit;
}

/* Reads exactly n bytes at offset 0, retrying on EINTR. */
static int read_head(int fd, char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EIO;
        got += (size_t)r;
    }
    return 0;
}

int vpath_tz_valid(const char *tz)
{
    char magic[4];
    struct stat st;
    int dir = -1, fd = -1, ok = 0;

    if (!tz || !*tz)
        return 0;
    if (strcmp(tz, "local") == 0 || strcmp(tz, "UTC") == 0)
        return 1;
    if (tz[0] == '/' || strstr(tz, ".."))
        return 0;
    /* openat() relative to the zoneinfo directory: no path buffer to size. */
    dir = open(ZONEINFO_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        goto out;
    fd = openat(dir, tz, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        goto out;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        goto out;
    if (read_head(fd, magic, sizeof(magic)) == 0 && memcmp(magic, "TZif", 4) == 0)
        ok = 1;
out:
    if (fd >= 0)
        close(fd);
    if (dir >= 0)
        close(dir);
    return ok;
}

int vpath_tz_set(const char *tz)
{
    if (!vpath_tz_valid(tz))
        return -EINVAL;
    if (strcmp(tz, "local") != 0 && setenv("TZ", tz, 1) != 0)
        return -errno;
    tzset();
    return 0;
}
