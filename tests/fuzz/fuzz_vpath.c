/* fuzz_vpath - libFuzzer target for the name grammar (vpath, SPEC section 4).
 *
 * Input: byte 0 picks a time zone, byte 1 a clock, byte 2 flags (bit 0: the default
 * resolution), bytes 3-4 a day index for vpath_day_name (6 bits of each, so text seeds
 * reach 0-4095); the rest is the name (cut at
 * its first NUL, as a kernel name would be). Zones and clocks come from fixed tables:
 * ordinary ones, zones that move their clocks at midnight or skipped a whole date, and
 * clocks at the epoch, before it, near year 9999 and at the int64 limits.
 *
 * Each input runs vpath_parse_image, vpath_parse_day and vpath_is_relative on the name,
 * and vpath_day_name for the index, and checks the contracts of vpath.h:
 *   - the return is 0 or -ENOENT (the clock and out are valid), *out untouched on error;
 *   - success: start < end; start >= 0 except where the header allows it (today and
 *     yesterday with a clock at the epoch, days/1970-01-01 east of UTC); the resolution
 *     is the suffix's, else the default; relative names change after now, others never;
 *     relative == vpath_is_relative(stem) for image names;
 *   - days/: today's name resolves exactly as "today", a past day is [start, next
 *     start) of at most 48 h ending no later than today's start;
 *   - every name vpath_day_name returns parses in days/ with the same clock.
 */
#include "insightfs/vpath.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAY_MS INT64_C(86400000)

static const char *const zones[] = {
    "UTC",
    "Asia/Seoul",         /* east of UTC: days/1970-01-01 starts before the epoch */
    "America/New_York",   /* west, with DST at 02:00 */
    "America/Havana",     /* DST at midnight: 00:00 missing or twice */
    "Pacific/Apia",       /* skipped 2011-12-30 */
    "Pacific/Kiritimati", /* UTC+14, skipped 1994-12-31 */
    "Australia/Lord_Howe",
    "America/St_Johns",
};

static const struct vpath_clock clocks[] = {
    {1733117445123LL, 60}, /* 2024-12-02T05:30:45.123Z */
    {1733117445123LL, 1},
    {1733117445123LL, 25200}, /* 7 h: does not divide the day */
    {1733117445123LL, 86400},
    {1733117445123LL, INT_MAX},
    {1710050400000LL, 60},   /* 2024-03-10T06:00Z: Havana's missing midnight */
    {1325239200000LL, 3600}, /* 2011-12-30T10:00Z: Apia's day after the skip */
    {788961600000LL, 60},    /* 1995-01-01T12:00Z: Kiritimati after its skip */
    {0, 60},
    {DAY_MS - 1, 1},
    {-1, 60},
    {-3 * DAY_MS, 60},
    {253402300799999LL, 60}, /* 9999-12-31T23:59:59.999Z */
    {253402300800000LL, 60}, /* 10000-01-01T00:00Z */
    {INT64_MAX, 1},
    {INT64_MAX, INT_MAX},
    {INT64_MIN, 1},
    {INT64_MIN, 60},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr,                                                                        \
                    "fuzz_vpath: %s failed (line %d): zone %s, now %lld, align %d, "               \
                    "name \"%s\"\n",                                                               \
                    #cond, __LINE__, zones[zone], (long long)clk->now_ms, clk->align_s, name);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int cur_zone = -1;

static void set_zone(size_t z)
{
    if ((int)z == cur_zone)
        return;
    if (vpath_tz_set(zones[z]) != 0) {
        fprintf(stderr, "fuzz_vpath: tzdata lacks %s\n", zones[z]);
        abort();
    }
    cur_zone = (int)z;
}

/* The stem of name: ".png" and one @high/@auto stripped; *res the suffix's resolution,
 * or -1 when there is none. Returns 0, or -1 when name does not end in ".png". */
static int stem_of(const char *name, char *stem, size_t size, int *res)
{
    size_t n = strlen(name);

    *res = -1;
    if (n < 4 || n >= size || strcmp(name + n - 4, ".png") != 0)
        return -1;
    n -= 4;
    if (n >= 5 && memcmp(name + n - 5, "@high", 5) == 0) {
        *res = VPATH_RES_HIGH;
        n -= 5;
    } else if (n >= 5 && memcmp(name + n - 5, "@auto", 5) == 0) {
        *res = VPATH_RES_AUTO;
        n -= 5;
    }
    memcpy(stem, name, n);
    stem[n] = '\0';
    return 0;
}

static int same_image(const struct vpath_image *a, const struct vpath_image *b)
{
    return a->start_ms == b->start_ms && a->end_ms == b->end_ms && a->res == b->res &&
           a->relative == b->relative && a->changes_at_ms == b->changes_at_ms;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct vpath_image untouched = {-42, -42, 42, 42, -42};
    char name[300], stem[300], today[VPATH_DAY_LEN], day[VPATH_DAY_LEN], tname[32];
    struct vpath_image img, tod;
    enum vpath_res def;
    size_t zone, n;
    int rc, res, di;
    const struct vpath_clock *clk;

    if (size < 5)
        return 0;
    zone = data[0] % N(zones);
    clk = &clocks[data[1] % N(clocks)];
    def = (data[2] & 1) ? VPATH_RES_HIGH : VPATH_RES_AUTO;
    di = (data[3] & 0x3f) | (data[4] & 0x3f) << 6; /* 0-4095: "@@" is 0, "A@" 1 */
    n = size - 5 < sizeof(name) - 1 ? size - 5 : sizeof(name) - 1;
    memcpy(name, data + 5, n);
    name[n] = '\0';
    set_zone(zone);

    int has_stem = stem_of(name, stem, sizeof(stem), &res) == 0;
    int want_res = res >= 0 ? res : (int)def;
    int has_today = vpath_day_name(clk, 0, today) == 0;

    /* ---- image names ---- */
    img = untouched;
    rc = vpath_parse_image(name, def, clk, &img);
    CHECK(rc == 0 || rc == -ENOENT);
    if (rc != 0) {
        CHECK(same_image(&img, &untouched));
    } else {
        int clock_name = strcmp(stem, "today") == 0 || strcmp(stem, "yesterday") == 0;

        CHECK(has_stem);
        CHECK(img.start_ms < img.end_ms);
        /* Only today and yesterday follow a clock at the epoch below 0. */
        CHECK(img.start_ms >= 0 || (clock_name && clk->now_ms < 3 * DAY_MS));
        CHECK((int)img.res == want_res);
        CHECK(img.relative == vpath_is_relative(stem));
        if (img.relative) {
            CHECK(img.changes_at_ms > clk->now_ms);
            CHECK(img.end_ms <= img.changes_at_ms || clock_name);
        } else {
            CHECK(img.changes_at_ms == INT64_MAX);
        }
    }

    /* ---- days/ names ---- */
    img = untouched;
    rc = vpath_parse_day(name, def, clk, &img);
    CHECK(rc == 0 || rc == -ENOENT);
    if (rc != 0) {
        CHECK(same_image(&img, &untouched));
    } else {
        CHECK(has_stem && strlen(stem) == VPATH_DAY_LEN - 1);
        CHECK(img.start_ms < img.end_ms);
        CHECK(img.start_ms >= 0 || (strcmp(stem, "1970-01-01") == 0 && img.start_ms > -2 * DAY_MS));
        CHECK((int)img.res == want_res);
        if (has_today && strcmp(stem, today) == 0) {
            /* today's name resolves exactly as "today" */
            CHECK(img.relative == 1);
            snprintf(tname, sizeof(tname), "today%s.png",
                     res == VPATH_RES_HIGH   ? "@high"
                     : res == VPATH_RES_AUTO ? "@auto"
                                             : "");
            CHECK(vpath_parse_image(tname, def, clk, &tod) == 0);
            CHECK(same_image(&img, &tod));
        } else {
            CHECK(!has_today || strcmp(stem, today) < 0);
            CHECK(img.relative == 0 && img.changes_at_ms == INT64_MAX);
            CHECK(img.end_ms - img.start_ms <= 2 * DAY_MS);
            CHECK(img.end_ms <= vpath_day_start_ms(clk->now_ms));
        }
    }

    /* ---- vpath_is_relative on the raw name ---- */
    rc = vpath_is_relative(name);
    CHECK(rc == 0 || rc == 1);

    /* ---- every listed day parses in days/ ---- */
    rc = vpath_day_name(clk, di, day);
    CHECK(rc == 0 || rc == -ERANGE || rc == -ENOENT);
    if (rc == 0) {
        CHECK(strlen(day) == VPATH_DAY_LEN - 1);
        CHECK(!has_today || strcmp(day, today) <= 0);
        snprintf(tname, sizeof(tname), "%s.png", day);
        rc = vpath_parse_day(tname, def, clk, &img);
        if (rc != 0) {
            fprintf(stderr, "fuzz_vpath: listed day %s does not parse (rc %d)\n", tname, rc);
            snprintf(name, sizeof(name), "%s", tname);
            CHECK(rc == 0);
        }
        CHECK(img.relative == (di == 0));
    }
    return 0;
}
