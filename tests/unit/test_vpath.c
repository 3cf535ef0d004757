/* test_vpath - the SPEC section 4 grammar, table-driven, with exact numbers.
 *
 * Every expected instant was computed outside this code with GNU date, e.g.
 *   date -u -d 2024-12-02T05:30:45Z +%s            -> 1733117445
 *   TZ=America/New_York date -d '2024-12-02 00:00' +%s -> 1733115600
 * and is written in ms. The process time zone is set per test with vpath_tz_set,
 * exactly as main does it. Each table row names its case; a failure prints it.
 */
#include "insightfs/vpath.h"

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define AUTO VPATH_RES_AUTO
#define HIGH VPATH_RES_HIGH
#define NEVER INT64_MAX

/* Clock A: date -u -d 2024-12-02T05:30:45Z +%s -> 1733117445, plus 123 ms. */
#define A_NOW 1733117445123LL
/* T for align 60: date -u -d 2024-12-02T05:30:00Z +%s -> 1733117400 */
#define A_T 1733117400000LL
/* date -u -d 2024-12-02T00:00:00Z +%s -> 1733097600 */
#define UTC_DEC02 1733097600000LL
/* date -u -d 2024-12-01T00:00:00Z +%s -> 1733011200 */
#define UTC_DEC01 1733011200000LL
/* date -u -d 2024-12-03T00:00:00Z +%s -> 1733184000 */
#define UTC_DEC03 1733184000000LL
/* date -u -d 2024-12-02T14:00:00Z +%s -> 1733148000 */
#define UTC_DEC02_14 1733148000000LL

struct image_case {
    const char *name;
    int rc;
    int64_t start_ms, end_ms;
    enum vpath_res res;
    int relative;
    int64_t changes_at_ms;
};

static void set_tz(const char *tz)
{
    assert_int_equal(vpath_tz_set(tz), 0);
}

static void check_image(const char *what, const struct image_case *c, int rc,
                        const struct vpath_image *got)
{
    if (rc != c->rc)
        fail_msg("%s \"%s\": rc %d, want %d", what, c->name, rc, c->rc);
    if (rc != 0)
        return;
    if (got->start_ms != c->start_ms || got->end_ms != c->end_ms)
        fail_msg("%s \"%s\": [%lld, %lld], want [%lld, %lld]", what, c->name,
                 (long long)got->start_ms, (long long)got->end_ms, (long long)c->start_ms,
                 (long long)c->end_ms);
    if (got->res != c->res)
        fail_msg("%s \"%s\": res %d, want %d", what, c->name, (int)got->res, (int)c->res);
    if (got->relative != c->relative)
        fail_msg("%s \"%s\": relative %d, want %d", what, c->name, got->relative, c->relative);
    if (got->changes_at_ms != c->changes_at_ms)
        fail_msg("%s \"%s\": changes_at %lld, want %lld", what, c->name,
                 (long long)got->changes_at_ms, (long long)c->changes_at_ms);
}

static void run_images(const struct vpath_clock *clk, enum vpath_res def,
                       const struct image_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        /* A canary: a failed parse must leave *out alone. */
        struct vpath_image got = {.start_ms = -7, .end_ms = -7, .changes_at_ms = -7};
        int rc = vpath_parse_image(cases[i].name, def, clk, &got);

        check_image("image", &cases[i], rc, &got);
        if (rc != 0 && (got.start_ms != -7 || got.end_ms != -7 || got.changes_at_ms != -7))
            fail_msg("image \"%s\": failed parse wrote *out", cases[i].name);
    }
}

static void run_days(const struct vpath_clock *clk, enum vpath_res def,
                     const struct image_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct vpath_image got = {.start_ms = -7, .end_ms = -7, .changes_at_ms = -7};
        int rc = vpath_parse_day(cases[i].name, def, clk, &got);

        check_image("day", &cases[i], rc, &got);
        if (rc != 0 && (got.start_ms != -7 || got.end_ms != -7 || got.changes_at_ms != -7))
            fail_msg("day \"%s\": failed parse wrote *out", cases[i].name);
    }
}

#define RUN_IMAGES(clk, def, table) run_images(clk, def, table, sizeof(table) / sizeof(table[0]))
#define RUN_DAYS(clk, def, table) run_days(clk, def, table, sizeof(table) / sizeof(table[0]))

/* clang-format off: one-line row macros */
#define BAD(n)                                                                                     \
    {                                                                                              \
        n, -ENOENT, 0, 0, AUTO, 0, 0                                                               \
    }
#define ABS(n, s, e)                                                                               \
    {                                                                                              \
        n, 0, s, e, AUTO, 0, NEVER                                                                 \
    }
/* clang-format on */

/* ---- absolute ranges ------------------------------------------------------------- */

static const struct image_case range_cases[] = {
    ABS("1733097600000-1733148000000.png", UTC_DEC02, UTC_DEC02_14),
    ABS("20241202T0000Z-20241202T1400Z.png", UTC_DEC02, UTC_DEC02_14),
    ABS("20241202T000000Z-20241202T140000Z.png", UTC_DEC02, UTC_DEC02_14),
    ABS("20241202T0000Z-1733148000000.png", UTC_DEC02, UTC_DEC02_14),
    ABS("1733097600000-20241202T140000Z.png", UTC_DEC02, UTC_DEC02_14),
    ABS("20241202T000000Z-20241202T1400Z.png", UTC_DEC02, UTC_DEC02_14),
    /* date -u -d 2024-12-02T05:30:45Z +%s -> 1733117445; ...:46Z -> 1733117446 */
    ABS("20241202T053045Z-20241202T053046Z.png", 1733117445000LL, 1733117446000LL),
    /* leap day: date -u -d 2024-02-29T00:00:00Z +%s -> 1709164800,
     * date -u -d 2024-03-01T00:00:00Z +%s -> 1709251200 */
    ABS("20240229T0000Z-20240301T0000Z.png", 1709164800000LL, 1709251200000LL),
    /* 2000 is a leap year (divisible by 400), 2100 is not (by 100):
     * date -u -d 2000-02-29 +%s -> 951782400; date -u -d 2000-03-01 +%s -> 951868800 */
    ABS("20000229T0000Z-20000301T0000Z.png", 951782400000LL, 951868800000LL),
    BAD("21000229T0000Z-21000302T0000Z.png"),
    /* the epoch and its first minute */
    ABS("19700101T0000Z-19700101T0001Z.png", 0, 60000),
    ABS("0000000000000-0000000000001.png", 0, 1),
    ABS("9999999999998-9999999999999.png", 9999999999998LL, 9999999999999LL),
    /* date -u -d 9999-12-31T23:59:59Z +%s -> 253402300799 */
    ABS("20241202T0000Z-99991231T235959Z.png", UTC_DEC02, 253402300799000LL),
    ABS("20241202T000000Z-20241202T235959Z.png", UTC_DEC02, UTC_DEC03 - 1000),
    /* calendar */
    BAD("20230229T0000Z-20230302T0000Z.png"),
    BAD("19000229T0000Z-20230301T0000Z.png"),
    BAD("19691231T2359Z-19700101T0000Z.png"),
    BAD("20241302T0000Z-20241303T0000Z.png"),
    BAD("20240002T0000Z-20240103T0000Z.png"),
    BAD("20241200T0000Z-20241202T0000Z.png"),
    BAD("20241232T0000Z-20241233T0000Z.png"),
    BAD("20240431T0000Z-20240501T0000Z.png"),
    BAD("20241202T2400Z-20241204T0000Z.png"), /* would be 12-03 00:00 < end */
    BAD("20241202T0060Z-20241202T0100Z.png"),
    BAD("20241202T000060Z-20241202T0100Z.png"),
    BAD("20241202t0000Z-20241202T1400Z.png"),
    BAD("20241202T0000z-20241202T1400Z.png"),
    BAD("20241202T0000Z-20241202T1400z.png"),
    BAD("20241202 0000Z-20241202T1400Z.png"),
    BAD("20241202T00000Z-20241202T1400Z.png"), /* 15 chars */
    BAD("20241202T0000-20241202T1400Z.png"),   /* no Z */
    BAD("2024120T0000Z-20241202T1400Z.png"),
    BAD("+0241202T0000Z-20241202T1400Z.png"),
    /* order */
    BAD("1733097600000-1733097600000.png"),
    BAD("1733148000000-1733097600000.png"),
    BAD("20241202T0000Z-20241202T000000Z.png"),
    BAD("20241202T1400Z-1733097600000.png"),
    /* digit counts and empty parts */
    BAD("173309760000-1733148000000.png"),
    BAD("1733097600000-173314800000.png"),
    BAD("17330976000000-17331480000000.png"),
    BAD("-.png"),
    BAD("1733097600000-.png"),
    BAD("-1733148000000.png"),
    BAD("1733097600000.png"),
    BAD("1733097600000--1733148000000.png"),
    BAD("1733097600000-1733148000000-1733148000001.png"),
    BAD("+733097600000-1733148000000.png"),
    BAD(" 733097600000-1733148000000.png"),
    BAD("1733097600000-1733148000000 .png"),
    BAD("1733097600000 -1733148000000.png"),
    BAD("0x33097600000-1733148000000.png"),
    BAD("1733097600000-1733148000000"),
};

static void test_ranges(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};

    (void)state;
    set_tz("UTC");
    RUN_IMAGES(&clk, AUTO, range_cases);
    /* An absolute range ignores the zone. */
    set_tz("Asia/Seoul");
    RUN_IMAGES(&clk, AUTO, range_cases);
}

/* ---- the name around the stem: suffixes, .png, length, junk --------------------- */

static const struct image_case suffix_cases[] = {
    BAD("."),
    BAD(".."),
    BAD(""),
    BAD(".png"),
    BAD("x.png.png"),
    BAD(".png.png"),
    BAD("last-1h.png.png"),
    BAD("last-1h"),
    BAD("last-1h.PNG"),
    BAD("last-1h.Png"),
    BAD("last-1hpng"),
    BAD("last-1h@HIGH.png"),
    BAD("last-1h@Auto.png"),
    BAD("last-1h@high@auto.png"),
    BAD("last-1h@auto@high.png"),
    BAD("last-1h@high@high.png"),
    BAD("last-1h@.png"),
    BAD("last-1h@low.png"),
    BAD("last-1h@high"),
    BAD("@high.png"),
    BAD("@auto.png"),
    BAD("%2F"),
    BAD("last-1h%2F.png"),
    BAD("last-1h/.png"),
    BAD("a/last-1h.png"),
    BAD("last-1h.png/"),
    BAD("/last-1h.png"),
    BAD("1733097600000/1733148000000.png"),
    BAD("1733097600000-1733148000000.png/x"),
    BAD(" last-1h.png"),
    BAD("last-1h .png"),
    BAD("last-1h.png "),
    BAD("today.png\n"),
    /* the resolution suffix */
    {"last-1h.png", 0, A_T - 3600000, A_T, AUTO, 1, A_T + 60000},
    {"last-1h@high.png", 0, A_T - 3600000, A_T, HIGH, 1, A_T + 60000},
    {"last-1h@auto.png", 0, A_T - 3600000, A_T, AUTO, 1, A_T + 60000},
    {"1733097600000-1733148000000@high.png", 0, UTC_DEC02, UTC_DEC02_14, HIGH, 0, NEVER},
    {"20241202T0000Z-20241202T1400Z@auto.png", 0, UTC_DEC02, UTC_DEC02_14, AUTO, 0, NEVER},
};

/* With api.resolution = HIGH, no suffix means HIGH and @auto still means AUTO. */
static const struct image_case default_high_cases[] = {
    {"last-1h.png", 0, A_T - 3600000, A_T, HIGH, 1, A_T + 60000},
    {"last-1h@high.png", 0, A_T - 3600000, A_T, HIGH, 1, A_T + 60000},
    {"last-1h@auto.png", 0, A_T - 3600000, A_T, AUTO, 1, A_T + 60000},
    {"1733097600000-1733148000000.png", 0, UTC_DEC02, UTC_DEC02_14, HIGH, 0, NEVER},
    {"1733097600000-1733148000000@auto.png", 0, UTC_DEC02, UTC_DEC02_14, AUTO, 0, NEVER},
};

static void test_suffixes(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};

    (void)state;
    set_tz("UTC");
    RUN_IMAGES(&clk, AUTO, suffix_cases);
    RUN_IMAGES(&clk, HIGH, default_high_cases);
}

/* Exactly sized heap copies, so ASan sees any read past the NUL. */
static char *filled(size_t len, const char *tail)
{
    size_t t = strlen(tail);
    char *s = malloc(len + 1);

    assert_non_null(s);
    assert_true(len >= t);
    memset(s, '1', len - t);
    memcpy(s + len - t, tail, t + 1);
    return s;
}

static void test_long_names(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};
    const size_t lens[] = {254, 255, 256, 4096};
    struct vpath_image img;

    (void)state;
    set_tz("UTC");
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        char *img_name = filled(lens[i], "-1733148000000.png");
        char *day_name = filled(lens[i], "-12-01.png");
        char *rel_name = filled(lens[i], "h");

        memcpy(rel_name, "last-", 5);
        assert_int_equal(vpath_parse_image(img_name, AUTO, &clk, &img), -ENOENT);
        assert_int_equal(vpath_parse_day(day_name, AUTO, &clk, &img), -ENOENT);
        assert_int_equal(vpath_is_relative(rel_name), 0);
        free(img_name);
        free(day_name);
        free(rel_name);
    }
    /* A valid name in an exactly sized buffer still parses. */
    {
        char *ok = filled(31, "1733097600000-1733148000000.png");

        assert_int_equal(vpath_parse_image(ok, AUTO, &clk, &img), 0);
        assert_int_equal(img.start_ms, UTC_DEC02);
        free(ok);
    }
}

/* ---- last-N ---------------------------------------------------------------------- */

/* clang-format off: one-line row macros */
#define LAST(n, span)                                                                              \
    {                                                                                              \
        n, 0, A_T - (span), A_T, AUTO, 1, A_T + 60000                                              \
    }
/* clang-format on */

static const struct image_case last_cases[] = {
    LAST("last-1m.png", 60000LL),
    LAST("last-60m.png", 3600000LL),
    LAST("last-1h.png", 3600000LL),
    LAST("last-6h.png", 21600000LL),
    LAST("last-24h.png", 86400000LL),
    LAST("last-1d.png", 86400000LL),
    LAST("last-7d.png", 604800000LL),
    LAST("last-1w.png", 604800000LL),
    LAST("last-2w.png", 1209600000LL),
    LAST("last-12345m.png", 12345LL * 60000),
    /* A_T / 60000 = 28885290 minutes since the epoch: start exactly 0 */
    {"last-28885290m.png", 0, 0, A_T, AUTO, 1, A_T + 60000},
    BAD("last-28885291m.png"),
    /* 20059 days before 2024-12-02T00:00Z is the epoch: A_T - 20059 d = 5.5 h */
    {"last-20059d.png", 0, 19800000LL, A_T, AUTO, 1, A_T + 60000},
    /* 1733097600000 / 86400000 = 20059 and a bit more: 20060 d reach before 1970 */
    BAD("last-20060d.png"),
    BAD("last-999999999w.png"), /* 6.048e17 ms: computed, then start < 0 */
    BAD("last-999999999d.png"),
    BAD("last-999999999m.png"),
    BAD("last-1000000000h.png"), /* 10 digits */
    BAD("last-9999999999999999999999h.png"),
    BAD("last-01h.png"),
    BAD("last-0h.png"),
    BAD("last-00h.png"),
    BAD("last-0m.png"),
    BAD("last-1y.png"),
    BAD("last-1s.png"),
    BAD("last-1H.png"),
    BAD("last-1M.png"),
    BAD("last-1.png"),
    BAD("last-h.png"),
    BAD("last-.png"),
    BAD("last-1hh.png"),
    BAD("last-1h1.png"),
    BAD("last--1h.png"),
    BAD("last-+1h.png"),
    BAD("last- 1h.png"),
    BAD("last-1 h.png"),
    BAD("last-1.5h.png"),
    BAD("last-1e3m.png"),
    BAD("Last-1h.png"),
    BAD("LAST-1h.png"),
    BAD("last1h.png"),
    BAD("last_1h.png"),
    BAD("last-1h-.png"),
    BAD("1h.png"),
};

static void test_last(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};
    /* exactly at a UTC midnight, so the edge case start == 0 is reachable */
    const struct vpath_clock at_midnight = {UTC_DEC02, 60};
    const struct image_case edge[] = {
        {"last-20059d.png", 0, 0, UTC_DEC02, AUTO, 1, UTC_DEC02 + 60000},
        BAD("last-20060d.png"),
    };
    /* align_s = 300: T = 05:30:00 too (05:30:45 rounded down to 5 minutes) */
    const struct vpath_clock five = {A_NOW, 300};
    const struct image_case five_cases[] = {
        {"last-1h.png", 0, A_T - 3600000, A_T, AUTO, 1, A_T + 300000},
    };
    /* align_s = 3600: date -u -d 2024-12-02T05:00:00Z +%s -> 1733115600 */
    const struct vpath_clock hour = {A_NOW, 3600};
    const struct image_case hour_cases[] = {
        {"last-1h.png", 0, 1733112000000LL, 1733115600000LL, AUTO, 1, 1733119200000LL},
    };

    (void)state;
    set_tz("UTC");
    RUN_IMAGES(&clk, AUTO, last_cases);
    RUN_IMAGES(&at_midnight, AUTO, edge);
    RUN_IMAGES(&five, AUTO, five_cases);
    RUN_IMAGES(&hour, AUTO, hour_cases);
    /* last-N does not depend on the zone */
    set_tz("Asia/Seoul");
    RUN_IMAGES(&clk, AUTO, last_cases);
}

/* ---- today and yesterday --------------------------------------------------------- */

static void test_today_yesterday_utc(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};
    const struct image_case cases[] = {
        {"today.png", 0, UTC_DEC02, A_T, AUTO, 1, A_T + 60000},
        {"today@high.png", 0, UTC_DEC02, A_T, HIGH, 1, A_T + 60000},
        {"yesterday.png", 0, UTC_DEC01, UTC_DEC02, AUTO, 1, UTC_DEC03},
        {"yesterday@auto.png", 0, UTC_DEC01, UTC_DEC02, AUTO, 1, UTC_DEC03},
        BAD("Today.png"),
        BAD("TODAY.png"),
        BAD("today"),
        BAD("yesterday-1h.png"),
        BAD("today-1733148000000.png"),
        BAD("tomorrow.png"),
        BAD("yesterda.png"),
        BAD("todays.png"),
    };
    /* 10 ms after midnight: T = midnight, so today = [00:00, 00:01] */
    const struct vpath_clock midnight = {UTC_DEC02 + 10, 60};
    const struct image_case at_midnight[] = {
        {"today.png", 0, UTC_DEC02, UTC_DEC02 + 60000, AUTO, 1, UTC_DEC02 + 60000},
        {"yesterday.png", 0, UTC_DEC01, UTC_DEC02, AUTO, 1, UTC_DEC03},
    };
    /* 23:59:30: T = 23:59:00 and T + align is the next midnight itself.
     * date -u -d 2024-12-02T23:59:00Z +%s -> 1733183940 */
    const struct vpath_clock late = {UTC_DEC03 - 30000, 60};
    const struct image_case at_late[] = {
        {"today.png", 0, UTC_DEC02, 1733183940000LL, AUTO, 1, UTC_DEC03},
    };
    /* align 7 h does not divide the day: 2024-12-02T23:30Z (1733182200) has
     * T = floor(1733182200 / 25200) * 25200 = 1733180400 (23:00Z); T + 7 h is
     * 06:00Z tomorrow, so today changes at the next midnight. */
    const struct vpath_clock seven = {1733182200000LL, 25200};
    const struct image_case at_seven[] = {
        {"today.png", 0, UTC_DEC02, 1733180400000LL, AUTO, 1, UTC_DEC03},
        {"last-7h.png", 0, 1733180400000LL - 25200000, 1733180400000LL, AUTO, 1,
         1733180400000LL + 25200000},
    };

    (void)state;
    set_tz("UTC");
    RUN_IMAGES(&clk, AUTO, cases);
    RUN_IMAGES(&midnight, AUTO, at_midnight);
    RUN_IMAGES(&late, AUTO, at_late);
    RUN_IMAGES(&seven, AUTO, at_seven);
}

static void test_today_yesterday_seoul(void **state)
{
    /* 05:30:45Z is 14:30:45 KST on 2024-12-02.
     * TZ=Asia/Seoul date -d '2024-12-02 00:00' +%s -> 1733065200
     * TZ=Asia/Seoul date -d '2024-12-01 00:00' +%s -> 1732978800
     * TZ=Asia/Seoul date -d '2024-12-03 00:00' +%s -> 1733151600 */
    const struct vpath_clock clk = {A_NOW, 60};
    const struct image_case cases[] = {
        {"today.png", 0, 1733065200000LL, A_T, AUTO, 1, A_T + 60000},
        {"yesterday.png", 0, 1732978800000LL, 1733065200000LL, AUTO, 1, 1733151600000LL},
    };

    (void)state;
    set_tz("Asia/Seoul");
    RUN_IMAGES(&clk, AUTO, cases);
}

static void test_today_yesterday_new_york(void **state)
{
    /* 05:30:45Z is 00:30:45 EST on 2024-12-02.
     * TZ=America/New_York date -d '2024-12-02 00:00' +%s -> 1733115600
     * TZ=America/New_York date -d '2024-12-01 00:00' +%s -> 1733029200
     * TZ=America/New_York date -d '2024-12-03 00:00' +%s -> 1733202000 */
    const struct vpath_clock clk = {A_NOW, 60};
    const struct image_case cases[] = {
        {"today.png", 0, 1733115600000LL, A_T, AUTO, 1, A_T + 60000},
        {"yesterday.png", 0, 1733029200000LL, 1733115600000LL, AUTO, 1, 1733202000000LL},
    };
    /* DST starts 2024-03-10: that day is 23 hours.
     * date -u -d 2024-03-10T18:00:00Z +%s -> 1710093600 (14:00 EDT)
     * TZ=America/New_York date -d '2024-03-10 00:00' +%s -> 1710046800
     * TZ=America/New_York date -d '2024-03-11 00:00' +%s -> 1710129600 */
    const struct vpath_clock dst = {1710093600000LL, 60};
    const struct image_case dst_cases[] = {
        {"today.png", 0, 1710046800000LL, 1710093600000LL, AUTO, 1, 1710093660000LL},
        /* TZ=America/New_York date -d '2024-03-09 00:00' +%s -> 1709960400: 24 h */
        {"yesterday.png", 0, 1709960400000LL, 1710046800000LL, AUTO, 1, 1710129600000LL},
    };
    /* The day after: date -u -d 2024-03-11T12:00:00Z +%s -> 1710158400;
     * TZ=America/New_York date -d '2024-03-12 00:00' +%s -> 1710216000 */
    const struct vpath_clock after = {1710158400000LL, 60};
    const struct image_case after_cases[] = {
        {"yesterday.png", 0, 1710046800000LL, 1710129600000LL, AUTO, 1, 1710216000000LL},
    };

    (void)state;
    set_tz("America/New_York");
    RUN_IMAGES(&clk, AUTO, cases);
    RUN_IMAGES(&dst, AUTO, dst_cases);
    RUN_IMAGES(&after, AUTO, after_cases);
    assert_int_equal(1710129600000LL - 1710046800000LL, 23 * 3600000LL);
}

/* Asia/Kolkata is UTC+5:30, so an align of one hour does not divide its day. */
static void test_today_unaligned_zone(void **state)
{
    /* 2024-12-01T18:45Z is 00:15 IST on 2024-12-02.
     * date -u -d 2024-12-01T18:45:00Z +%s -> 1733078700; T (align 3600) -> 1733076000
     * TZ=Asia/Kolkata date -d '2024-12-02 00:00' +%s -> 1733077800
     * today = [1733077800, max(T, 1733077800 + 3600)] = [.., 1733081400]
     * changes_at = min(T + 3600 = 1733079600, next midnight 1733164200) */
    const struct vpath_clock early = {1733078700000LL, 3600};
    const struct image_case early_cases[] = {
        {"today.png", 0, 1733077800000LL, 1733081400000LL, AUTO, 1, 1733079600000LL},
    };
    const struct image_case early_days[] = {
        {"2024-12-02.png", 0, 1733077800000LL, 1733081400000LL, AUTO, 1, 1733079600000LL},
    };
    /* 2024-12-02T18:20Z is 23:50 IST; T = 18:00Z = 1733162400, T + 3600 = 19:00Z is after
     * the next midnight 18:30Z = 1733164200, which therefore wins. */
    const struct vpath_clock late = {1733163600000LL, 3600};
    const struct image_case late_cases[] = {
        {"today.png", 0, 1733077800000LL, 1733162400000LL, AUTO, 1, 1733164200000LL},
    };

    (void)state;
    set_tz("Asia/Kolkata");
    RUN_IMAGES(&early, AUTO, early_cases);
    RUN_DAYS(&early, AUTO, early_days);
    RUN_IMAGES(&late, AUTO, late_cases);
}

/* ---- days/ ----------------------------------------------------------------------- */

static void test_days_utc(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};
    const struct image_case cases[] = {
        {"2024-12-02.png", 0, UTC_DEC02, A_T, AUTO, 1, A_T + 60000},
        {"2024-12-02@high.png", 0, UTC_DEC02, A_T, HIGH, 1, A_T + 60000},
        {"2024-12-01.png", 0, UTC_DEC01, UTC_DEC02, AUTO, 0, NEVER},
        {"2024-12-01@high.png", 0, UTC_DEC01, UTC_DEC02, HIGH, 0, NEVER},
        {"2024-12-01@auto.png", 0, UTC_DEC01, UTC_DEC02, AUTO, 0, NEVER},
        {"1970-01-01.png", 0, 0, 86400000LL, AUTO, 0, NEVER},
        /* date -u -d 2024-02-29 +%s -> 1709164800; date -u -d 2024-03-01 +%s -> 1709251200 */
        {"2024-02-29.png", 0, 1709164800000LL, 1709251200000LL, AUTO, 0, NEVER},
        BAD("2024-12-03.png"), /* tomorrow */
        BAD("2025-01-01.png"),
        BAD("9999-12-31.png"),
        BAD("1969-12-31.png"),
        BAD("2024-02-30.png"),
        BAD("2023-02-29.png"),
        BAD("2024-13-01.png"),
        BAD("2024-00-10.png"),
        BAD("2024-12-00.png"),
        BAD("2024-11-31.png"),
        BAD("2024-1-01.png"),
        BAD("2024-12-1.png"),
        BAD("02024-12-01.png"),
        BAD("2024/12/01.png"),
        BAD("2024_12_01.png"),
        BAD("20241201.png"),
        BAD("2024-12-01"),
        BAD("2024-12-01.PNG"),
        BAD("2024-12-01@HIGH.png"),
        BAD("2024-12-01@high@auto.png"),
        BAD("+024-12-01.png"),
        BAD(" 2024-12-01.png"),
        BAD("2024-12-01 .png"),
        BAD("2024-12-+1.png"),
        BAD("2024-12-01T00.png"),
        BAD("today.png"),
        BAD("yesterday.png"),
        BAD("last-1h.png"),
        BAD("1733097600000-1733148000000.png"),
        BAD("."),
        BAD(".."),
        BAD(""),
        BAD(".png"),
        BAD("2024-12-01.png.png"),
        BAD("x/2024-12-01.png"),
    };

    (void)state;
    set_tz("UTC");
    RUN_DAYS(&clk, AUTO, cases);
}

static void test_days_zones(void **state)
{
    /* 2024-12-02T04:59:59Z is still 2024-12-01 23:59:59 in New York: 12-02 is tomorrow
     * there. date -u -d 2024-12-02T04:59:59Z +%s -> 1733115599 */
    const struct vpath_clock before = {1733115599000LL, 60};
    const struct image_case ny_before[] = {
        BAD("2024-12-02.png"),
        /* TZ=America/New_York date -d '2024-12-01 00:00' +%s -> 1733029200;
         * T = 04:59:00Z = 1733115540 */
        {"2024-12-01.png", 0, 1733029200000LL, 1733115540000LL, AUTO, 1, 1733115600000LL},
    };
    /* Seen from 2024-12-02 in New York: the clock A instant */
    const struct vpath_clock clk = {A_NOW, 60};
    const struct image_case ny_now[] = {
        {"2024-12-02.png", 0, 1733115600000LL, A_T, AUTO, 1, A_T + 60000},
        {"2024-12-01.png", 0, 1733029200000LL, 1733115600000LL, AUTO, 0, NEVER},
        /* TZ=America/New_York date -d '2024-03-10 00:00' +%s -> 1710046800 (DST: 23 h)
         * TZ=America/New_York date -d '2024-03-11 00:00' +%s -> 1710129600 */
        {"2024-03-10.png", 0, 1710046800000LL, 1710129600000LL, AUTO, 0, NEVER},
        /* TZ=America/New_York date -d '2024-11-03 00:00' +%s -> 1730606400 (25 h)
         * TZ=America/New_York date -d '2024-11-04 00:00' +%s -> 1730696400 */
        {"2024-11-03.png", 0, 1730606400000LL, 1730696400000LL, AUTO, 0, NEVER},
        /* TZ=America/New_York date -d '1970-01-01 00:00' +%s -> 18000 */
        {"1970-01-01.png", 0, 18000000LL, 104400000LL, AUTO, 0, NEVER},
    };
    /* Seoul is ahead of UTC: its 1970-01-01 starts 9 h before the epoch.
     * TZ=Asia/Seoul date -d '1970-01-01 00:00' +%s -> -32400
     * TZ=Asia/Seoul date -d '1970-01-02 00:00' +%s -> 54000 */
    const struct image_case seoul[] = {
        {"2024-12-02.png", 0, 1733065200000LL, A_T, AUTO, 1, A_T + 60000},
        BAD("2024-12-03.png"),
        {"2024-12-01.png", 0, 1732978800000LL, 1733065200000LL, AUTO, 0, NEVER},
        {"1970-01-01.png", 0, -32400000LL, 54000000LL, AUTO, 0, NEVER},
        BAD("1969-12-31.png"),
    };

    (void)state;
    set_tz("America/New_York");
    RUN_DAYS(&before, AUTO, ny_before);
    RUN_DAYS(&clk, AUTO, ny_now);
    set_tz("Asia/Seoul");
    RUN_DAYS(&clk, AUTO, seoul);
}

/* America/Havana moves its clocks at midnight: in 2024, 00:00 of 03-10 never happens
 * (00:00 CST -> 01:00 CDT) and 00:00-00:59 of 11-03 happens twice (01:00 CDT ->
 * 00:00 CST). zdump -v -c 2024,2025 America/Havana shows both transitions. */
static void test_days_midnight_transitions(void **state)
{
    const struct vpath_clock clk = {A_NOW, 60};
    const struct image_case cases[] = {
        /* TZ=America/Havana date -d '2024-03-09 00:00' +%s -> 1709960400
         * date -u -d 2024-03-10T05:00:00Z +%s -> 1710046800 (01:00 CDT, first instant)
         * TZ=America/Havana date -d '2024-03-11 00:00' +%s -> 1710129600 */
        {"2024-03-09.png", 0, 1709960400000LL, 1710046800000LL, AUTO, 0, NEVER},
        {"2024-03-10.png", 0, 1710046800000LL, 1710129600000LL, AUTO, 0, NEVER},
        /* date -u -d 2024-11-02T04:00:00Z +%s -> 1730520000 (00:00 CDT)
         * date -u -d 2024-11-03T04:00:00Z +%s -> 1730606400 (the first 00:00, CDT)
         * date -u -d 2024-11-04T05:00:00Z +%s -> 1730696400 (00:00 CST): 25 h */
        {"2024-11-02.png", 0, 1730520000000LL, 1730606400000LL, AUTO, 0, NEVER},
        {"2024-11-03.png", 0, 1730606400000LL, 1730696400000LL, AUTO, 0, NEVER},
    };

    (void)state;
    set_tz("America/Havana");
    RUN_DAYS(&clk, AUTO, cases);
    /* The second 00:30 of 11-03 (date -u -d 2024-11-03T05:30:00Z +%s -> 1730611800)
     * still belongs to the day that began at the first 00:00. */
    assert_int_equal(vpath_day_start_ms(1730611800000LL), 1730606400000LL);
    assert_int_equal(vpath_day_start_ms(1730606400000LL), 1730606400000LL);
    assert_int_equal(vpath_day_start_ms(1730606399999LL), 1730520000000LL);
    /* 01:00 CDT on 03-10 is the first instant of that day */
    assert_int_equal(vpath_day_start_ms(1710046800000LL), 1710046800000LL);
    assert_int_equal(vpath_day_start_ms(1710046799999LL), 1709960400000LL);
}

/* Where clocks go back across midnight a date begins twice, and its first instant is the
 * earlier one, whatever else the process did. America/St_Johns, 2010-11-07 (zdump -v -c
 * 2010,2011 America/St_Johns): 00:00:59 NDT (02:30:59Z) is followed by 23:01 NST of 11-06,
 * so 00:00 of 11-07 happens at 02:30Z and again at 03:30Z. glibc's mktime(tm_isdst = -1)
 * chose between them by a hint that any mktime call moves: an unrelated mktime of
 * 11-06 23:30 NST made the same name start an hour later.
 *   date -u -d 2010-11-07T02:30:00Z +%s -> 1289097000 (the first 00:00, NDT)
 *   TZ=America/St_Johns date -d '2010-11-06 00:00' +%s -> 1289010600
 *   date -u -d 2010-11-08T03:30:00Z +%s -> 1289187000 (11-08 00:00 NST): 25 h
 * Antarctica/Casey, 2010-03-05 (zdump -v -c 2010,2011 Antarctica/Casey): 01:59:59 +11
 * (14:59:59Z of 03-04) is followed by 23:00 +08 of 03-04, no DST flag on either side.
 *   date -u -d 2010-03-04T13:00:00Z +%s -> 1267707600 (the first 00:00, +11)
 *   TZ=Antarctica/Casey date -d '2010-03-04 00:00' +%s -> 1267621200
 *   TZ=Antarctica/Casey date -d '2010-03-06 00:00' +%s -> 1267804800: 27 h */
static void test_days_clocks_back_across_midnight(void **state)
{
    struct vpath_clock clk = {INT64_C(1735689600000), 60};
    struct vpath_image a, b, prev;
    const struct image_case st_johns[] = {
        {"2010-11-06.png", 0, 1289010600000LL, 1289097000000LL, AUTO, 0, NEVER},
        {"2010-11-07.png", 0, 1289097000000LL, 1289187000000LL, AUTO, 0, NEVER},
    };
    const struct image_case casey[] = {
        {"2010-03-04.png", 0, 1267621200000LL, 1267707600000LL, AUTO, 0, NEVER},
        {"2010-03-05.png", 0, 1267707600000LL, 1267804800000LL, AUTO, 0, NEVER},
    };

    (void)state;
    assert_int_equal(vpath_tz_set("America/St_Johns"), 0);
    assert_int_equal(vpath_parse_day("2010-11-06.png", 0, &clk, &prev), 0);
    assert_int_equal(vpath_parse_day("2010-11-07.png", 0, &clk, &a), 0);
    struct tm tm = {0};
    tm.tm_year = 110;
    tm.tm_mon = 10;
    tm.tm_mday = 6;
    tm.tm_hour = 23;
    tm.tm_min = 30;
    tm.tm_isdst = 0;
    (void)mktime(&tm);
    assert_int_equal(vpath_parse_day("2010-11-07.png", 0, &clk, &b), 0);
    assert_int_equal(a.start_ms, INT64_C(1289097000000));
    assert_int_equal(b.start_ms, a.start_ms);
    assert_int_equal(prev.end_ms, b.start_ms);
    RUN_DAYS(&clk, AUTO, st_johns);
    /* The second 00:00 still belongs to the day that began at the first. */
    assert_int_equal(vpath_day_start_ms(1289100600000LL), 1289097000000LL);
    assert_int_equal(vpath_day_start_ms(1289096999999LL), 1289010600000LL);

    set_tz("Antarctica/Casey");
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = 110;
    tm.tm_mon = 2;
    tm.tm_mday = 4;
    tm.tm_hour = 23;
    tm.tm_min = 30;
    tm.tm_isdst = 0;
    (void)mktime(&tm); /* 03-04 23:30 +08: the later 00:00 is the nearer one */
    RUN_DAYS(&clk, AUTO, casey);
    set_tz("UTC");
}

/* Pacific/Kiritimati skipped 1994-12-31 (zdump -v -c 1994,1996 Pacific/Kiritimati:
 * 1994-12-31T09:59:59Z is 12-30 23:59:59 -10, the next second 1995-01-01 00:00 +14).
 * The day before still lasts 24 h: it ends where 1995-01-01 starts. The skipped date has
 * no instant: no name for it parses and vpath_day_name does not list it. Found by
 * tests/fuzz/fuzz_vpath (a listed day that did not parse).
 *   TZ=Pacific/Kiritimati date -d '1994-12-30 00:00' +%s -> 788781600
 *   TZ=Pacific/Kiritimati date -d '1995-01-01 00:00' +%s -> 788868000
 *   date -u -d 1995-01-01T12:00:00Z +%s -> 788961600 (1995-01-02 02:00 local) */
static void test_days_skipped_date(void **state)
{
    const struct vpath_clock clk = {788961600000LL, 60};
    const struct image_case cases[] = {
        {"1994-12-30.png", 0, 788781600000LL, 788868000000LL, AUTO, 0, NEVER},
        BAD("1994-12-31.png"),
        {"1995-01-01.png", 0, 788868000000LL, 788868000000LL + 86400000LL, AUTO, 0, NEVER},
    };
    /* 12-30 22:00 local (date -u -d 1994-12-31T08:00:00Z +%s -> 788860800), align 1 d:
     * T = 9130 d = 788832000, today = [12-30 00:00, start + 1 d], changing at 01-01. */
    const struct vpath_clock late = {788860800000LL, 86400};
    const struct image_case late_cases[] = {
        {"today.png", 0, 788781600000LL, 788868000000LL, AUTO, 1, 788868000000LL},
    };
    /* On 1995-01-01 (date -u -d 1994-12-31T22:00:00Z +%s -> 788911200), yesterday is
     * the skipped date: it has no instant, so no range either. */
    const struct vpath_clock jan1 = {788911200000LL, 60};
    const struct image_case jan1_cases[] = {
        BAD("yesterday.png"),
    };
    char day[VPATH_DAY_LEN];

    (void)state;
    set_tz("Pacific/Kiritimati");
    RUN_DAYS(&clk, AUTO, cases);
    RUN_IMAGES(&late, AUTO, late_cases);
    RUN_IMAGES(&jan1, AUTO, jan1_cases);
    assert_int_equal(vpath_day_name(&clk, 1, day), 0);
    assert_string_equal(day, "1995-01-01");
    assert_int_equal(vpath_day_name(&clk, 2, day), -ENOENT);
    assert_int_equal(vpath_day_name(&clk, 3, day), 0);
    assert_string_equal(day, "1994-12-30");
}

/* ---- vpath_day_name and vpath_day_start_ms -------------------------------------- */

struct day_name_case {
    const char *tz;
    int64_t now_ms;
    int i;
    int rc;
    const char *want;
};

static void test_day_name(void **state)
{
    static const struct day_name_case cases[] = {
        {"UTC", A_NOW, 0, 0, "2024-12-02"},
        {"UTC", A_NOW, 1, 0, "2024-12-01"},
        {"UTC", A_NOW, 2, 0, "2024-11-30"},
        {"UTC", A_NOW, 3, 0, "2024-11-29"},
        {"UTC", A_NOW, 366, 0, "2023-12-02"},
        /* date -u -d 2025-01-01T12:00:00Z +%s -> 1735732800 */
        {"UTC", 1735732800000LL, 0, 0, "2025-01-01"},
        {"UTC", 1735732800000LL, 1, 0, "2024-12-31"},
        {"UTC", 1735732800000LL, 31, 0, "2024-12-01"},
        {"UTC", 1735732800000LL, 32, 0, "2024-11-30"},
        /* date -u -d 2024-03-01T12:00:00Z +%s -> 1709294400 */
        {"UTC", 1709294400000LL, 1, 0, "2024-02-29"},
        {"UTC", 1709294400000LL, 2, 0, "2024-02-28"},
        /* date -u -d 2023-03-01T12:00:00Z +%s -> 1677672000 */
        {"UTC", 1677672000000LL, 1, 0, "2023-02-28"},
        /* date -u -d 1970-01-02T00:00:00Z +%s -> 86400 */
        {"UTC", 86400000LL, 0, 0, "1970-01-02"},
        {"UTC", 86400000LL, 1, 0, "1970-01-01"},
        {"UTC", 86400000LL, 2, -ERANGE, NULL},
        {"UTC", A_NOW, -1, -ERANGE, NULL},
        {"UTC", A_NOW, INT_MAX, -ERANGE, NULL},
        {"UTC", A_NOW, 20059, 0, "1970-01-01"},
        {"UTC", A_NOW, 20060, -ERANGE, NULL},
        {"UTC", -1, 0, -ERANGE, NULL},
        /* date -u -d 2024-12-31T20:00:00Z +%s -> 1735675200: 2025-01-01 05:00 KST */
        {"Asia/Seoul", 1735675200000LL, 0, 0, "2025-01-01"},
        {"Asia/Seoul", 1735675200000LL, 1, 0, "2024-12-31"},
        {"Asia/Seoul", A_NOW, 0, 0, "2024-12-02"},
        {"America/New_York", A_NOW, 0, 0, "2024-12-02"},
        {"America/New_York", A_NOW, 1, 0, "2024-12-01"},
        /* date -u -d 2024-12-02T04:59:59Z +%s -> 1733115599: 23:59:59 EST on 12-01 */
        {"America/New_York", 1733115599000LL, 0, 0, "2024-12-01"},
        {"America/New_York", 1735732800000LL, 1, 0, "2024-12-31"},
        /* 1970-01-01T03:00Z is 1969-12-31 22:00 in New York */
        {"America/New_York", 10800000LL, 0, -ERANGE, NULL},
        {"Asia/Seoul", 10800000LL, 0, 0, "1970-01-01"},
    };

    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const struct day_name_case *c = &cases[k];
        const struct vpath_clock clk = {c->now_ms, 60};
        char out[VPATH_DAY_LEN] = "untouched";
        int rc;

        set_tz(c->tz);
        rc = vpath_day_name(&clk, c->i, out);
        if (rc != c->rc)
            fail_msg("day_name %s %lld %d: rc %d, want %d", c->tz, (long long)c->now_ms, c->i, rc,
                     c->rc);
        if (rc == 0 && strcmp(out, c->want) != 0)
            fail_msg("day_name %s %lld %d: \"%s\", want \"%s\"", c->tz, (long long)c->now_ms, c->i,
                     out, c->want);
        if (rc == 0) {
            /* every listed name parses in days/ */
            struct vpath_image img;
            char name[VPATH_DAY_LEN + 4];

            memcpy(name, out, VPATH_DAY_LEN - 1);
            memcpy(name + VPATH_DAY_LEN - 1, ".png", 5);
            if (vpath_parse_day(name, AUTO, &clk, &img) != 0)
                fail_msg("day_name %s: \"%s\" does not parse", c->tz, name);
            assert_int_equal(img.relative, c->i == 0);
        }
    }
}

static void test_day_start(void **state)
{
    (void)state;
    set_tz("UTC");
    assert_int_equal(vpath_day_start_ms(A_NOW), UTC_DEC02);
    assert_int_equal(vpath_day_start_ms(UTC_DEC02), UTC_DEC02);
    assert_int_equal(vpath_day_start_ms(UTC_DEC02 - 1), UTC_DEC01);
    assert_int_equal(vpath_day_start_ms(0), 0);
    assert_int_equal(vpath_day_start_ms(-1), -86400000LL);
    set_tz("Asia/Seoul");
    assert_int_equal(vpath_day_start_ms(A_NOW), 1733065200000LL);
    assert_int_equal(vpath_day_start_ms(0), -32400000LL);
    set_tz("America/New_York");
    assert_int_equal(vpath_day_start_ms(A_NOW), 1733115600000LL);
    assert_int_equal(vpath_day_start_ms(1733115599999LL), 1733029200000LL);
    /* 2024-03-10 12:00 EDT = date -u -d 2024-03-10T16:00:00Z +%s -> 1710086400 */
    assert_int_equal(vpath_day_start_ms(1710086400000LL), 1710046800000LL);
}

/* ---- hostile clocks and arguments ------------------------------------------------ */

static void test_hostile_clock(void **state)
{
    const struct vpath_clock top = {INT64_MAX, 60};
    const struct vpath_clock bottom = {INT64_MIN, 60};
    const struct vpath_clock neg = {-1, 60};
    const struct vpath_clock zero_align = {A_NOW, 0};
    const struct vpath_clock neg_align = {A_NOW, -60};
    const struct vpath_clock huge_align = {A_NOW, INT_MAX};
    const struct vpath_clock ok = {A_NOW, 60};
    struct vpath_image img;
    char day[VPATH_DAY_LEN];

    (void)state;
    set_tz("UTC");
    /* T + align would pass INT64_MAX */
    assert_int_equal(vpath_parse_image("last-1h.png", AUTO, &top, &img), -ENOENT);
    assert_int_equal(vpath_parse_image("today.png", AUTO, &top, &img), -ENOENT);
    assert_int_equal(vpath_parse_image("1733097600000-1733148000000.png", AUTO, &top, &img), 0);
    assert_int_equal(img.end_ms, UTC_DEC02_14);
    assert_int_equal(vpath_parse_day("2024-12-01.png", AUTO, &top, &img), 0);
    assert_int_equal(img.start_ms, UTC_DEC01);
    assert_int_equal(vpath_day_name(&top, 0, day), -ERANGE); /* beyond year 9999 */
    /* before the epoch: nothing relative resolves, absolute ranges still do */
    assert_int_equal(vpath_parse_image("last-1m.png", AUTO, &neg, &img), -ENOENT);
    assert_int_equal(vpath_parse_image("last-1m.png", AUTO, &bottom, &img), -ENOENT);
    assert_int_equal(vpath_parse_image("today.png", AUTO, &bottom, &img), -ENOENT);
    assert_int_equal(vpath_parse_day("1970-01-01.png", AUTO, &neg, &img), -ENOENT);
    assert_int_equal(vpath_parse_day("1970-01-01.png", AUTO, &bottom, &img), -ENOENT);
    assert_int_equal(vpath_parse_image("0000000000000-0000000000001.png", AUTO, &neg, &img), 0);
    /* T rounds down below 0 too: now = -1 ms gives T = -60000, not 0 */
    assert_int_equal(vpath_parse_image("today.png", AUTO, &neg, &img), 0);
    assert_int_equal(img.start_ms, -86400000LL);
    assert_int_equal(img.end_ms, -60000LL);
    assert_int_equal(img.changes_at_ms, 0);
    /* T for align INT_MAX s: floor(1733117445123 / 2147483647000) = 0 */
    assert_int_equal(vpath_parse_image("last-1m.png", AUTO, &huge_align, &img), -ENOENT);
    assert_int_equal(vpath_parse_image("today.png", AUTO, &huge_align, &img), 0);
    assert_int_equal(img.start_ms, UTC_DEC02);
    assert_int_equal(img.end_ms, UTC_DEC02 + 2147483647000LL);
    /* min(T + align = 2147483647000, next midnight 1733184000000) */
    assert_int_equal(img.changes_at_ms, UTC_DEC03);
    /* a bad clock or output is a caller bug */
    assert_int_equal(vpath_parse_image("last-1h.png", AUTO, &zero_align, &img), -EINVAL);
    assert_int_equal(vpath_parse_image("last-1h.png", AUTO, &neg_align, &img), -EINVAL);
    assert_int_equal(vpath_parse_image("last-1h.png", AUTO, NULL, &img), -EINVAL);
    assert_int_equal(vpath_parse_image("last-1h.png", AUTO, &ok, NULL), -EINVAL);
    assert_int_equal(vpath_parse_day("2024-12-01.png", AUTO, &zero_align, &img), -EINVAL);
    assert_int_equal(vpath_parse_day("2024-12-01.png", AUTO, NULL, &img), -EINVAL);
    assert_int_equal(vpath_day_name(NULL, 0, day), -EINVAL);
    /* a NULL name is no name */
    assert_int_equal(vpath_parse_image(NULL, AUTO, &ok, &img), -ENOENT);
    assert_int_equal(vpath_parse_day(NULL, AUTO, &ok, &img), -ENOENT);
}

/* ---- vpath_is_relative ----------------------------------------------------------- */

struct flag_case {
    const char *s;
    int want;
};

static void test_is_relative(void **state)
{
    static const struct flag_case cases[] = {
        {"last-1h", 1},
        {"last-60m", 1},
        {"last-6h", 1},
        {"last-24h", 1},
        {"last-7d", 1},
        {"last-2w", 1},
        {"last-999999999w", 1}, /* grammatical; only a clock can rule it out */
        {"today", 1},
        {"yesterday", 1},
        {"last-1h.png", 0},
        {"last-1h@high", 0},
        {"today.png", 0},
        {"last-0m", 0},
        {"last-01h", 0},
        {"last-1000000000h", 0},
        {"last-1y", 0},
        {"last-1H", 0},
        {"last-", 0},
        {"last-h", 0},
        {"Today", 0},
        {"yesterday ", 0},
        {" today", 0},
        {"1733097600000-1733148000000", 0},
        {"20241202T0000Z-20241202T1400Z", 0},
        {"2024-12-01", 0},
        {"", 0},
        {NULL, 0},
    };

    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int got = vpath_is_relative(cases[k].s);

        if (got != cases[k].want)
            fail_msg("is_relative \"%s\": %d, want %d", cases[k].s ? cases[k].s : "(null)", got,
                     cases[k].want);
    }
}

/* ---- vpath_is_final -------------------------------------------------------------- */

struct final_case {
    int64_t end_ms, signed_at_ms;
    int settle_s;
    int want;
};

static void test_is_final(void **state)
{
    static const struct final_case cases[] = {
        /* final iff end < signed_at - settle */
        {99999, 400000, 300, 1},
        {100000, 400000, 300, 0},
        {100001, 400000, 300, 0},
        {UTC_DEC02_14, UTC_DEC02_14 + 300001, 300, 1},
        {UTC_DEC02_14, UTC_DEC02_14 + 300000, 300, 0},
        {UTC_DEC02_14, UTC_DEC02_14 + 1, 0, 1},
        {UTC_DEC02_14, UTC_DEC02_14, 0, 0},
        {UTC_DEC02_14, UTC_DEC02, 604800, 0},
        /* the subtraction would pass INT64_MIN: nothing is final */
        {INT64_MIN, INT64_MIN, 1, 0},
        {INT64_MIN, INT64_MIN + 999, 1, 0},
        {INT64_MIN, INT64_MIN + 1001, 1, 1},
        /* a negative settle past INT64_MAX: everything is */
        {INT64_MAX, INT64_MAX, -1, 1},
        {INT64_MAX, INT64_MAX, 0, 0},
        {0, INT64_MAX, INT_MAX, 1},
    };

    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const struct final_case *c = &cases[k];
        int got = vpath_is_final(c->end_ms, c->signed_at_ms, c->settle_s);

        if (got != c->want)
            fail_msg("is_final(%lld, %lld, %d): %d, want %d", (long long)c->end_ms,
                     (long long)c->signed_at_ms, c->settle_s, got, c->want);
    }
}

/* ---- time zones ------------------------------------------------------------------ */

static void test_tz(void **state)
{
    static const struct flag_case cases[] = {
        {"local", 1},
        {"UTC", 1},
        {"Asia/Seoul", 1},
        {"America/New_York", 1},
        {"Asia/Kolkata", 1},
        {"Etc/UTC", 1},
        {"Europe/Berlin", 1},
        {NULL, 0},
        {"", 0},
        {"/etc/localtime", 0},
        {"/usr/share/zoneinfo/Asia/Seoul", 0},
        {"../zoneinfo/Asia/Seoul", 0},
        {"Asia/../Asia/Seoul", 0},
        {"Asia/..", 0},
        {"..", 0},
        {"Asia/Nowhere", 0},
        {"Nowhere", 0},
        {"Asia", 0},        /* a directory */
        {"Asia/", 0},       /* a directory */
        {"Asia/Seoul/", 0}, /* not a directory */
        {"zone.tab", 0},    /* a file, but not TZif */
        {"iso3166.tab", 0},
        {"utc", 0},
        {"LOCAL", 0},
        {"UTC+9", 0},
        {"KST-9", 0}, /* a POSIX TZ string, not a zone name */
    };

    (void)state;
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int got = vpath_tz_valid(cases[k].s);

        if (got != cases[k].want)
            fail_msg("tz_valid \"%s\": %d, want %d", cases[k].s ? cases[k].s : "(null)", got,
                     cases[k].want);
    }

    /* vpath_tz_set: invalid names change nothing */
    set_tz("Asia/Seoul");
    assert_int_equal(vpath_tz_set("Asia/Nowhere"), -EINVAL);
    assert_int_equal(vpath_tz_set(NULL), -EINVAL);
    assert_int_equal(vpath_tz_set("../etc/passwd"), -EINVAL);
    assert_string_equal(getenv("TZ"), "Asia/Seoul");
    assert_int_equal(vpath_day_start_ms(A_NOW), 1733065200000LL);
    /* "local" leaves TZ as it is */
    set_tz("local");
    assert_string_equal(getenv("TZ"), "Asia/Seoul");
    assert_int_equal(vpath_day_start_ms(A_NOW), 1733065200000LL);
    set_tz("UTC");
    assert_string_equal(getenv("TZ"), "UTC");
    assert_int_equal(vpath_day_start_ms(A_NOW), UTC_DEC02);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_suffixes),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_last),
        cmocka_unit_test(test_today_yesterday_utc),
        cmocka_unit_test(test_today_yesterday_seoul),
        cmocka_unit_test(test_today_yesterday_new_york),
        cmocka_unit_test(test_today_unaligned_zone),
        cmocka_unit_test(test_days_utc),
        cmocka_unit_test(test_days_zones),
        cmocka_unit_test(test_days_midnight_transitions),
        cmocka_unit_test(test_days_clocks_back_across_midnight),
        cmocka_unit_test(test_days_skipped_date),
        cmocka_unit_test(test_day_name),
        cmocka_unit_test(test_day_start),
        cmocka_unit_test(test_hostile_clock),
        cmocka_unit_test(test_is_relative),
        cmocka_unit_test(test_is_final),
        cmocka_unit_test(test_tz),
    };

    return cmocka_run_group_tests_name("vpath", tests, NULL, NULL);
}
