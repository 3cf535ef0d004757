/* vpath - the name grammar of SPEC section 4, as pure functions.
 *
 * A widget directory holds image names (RANGE|REL)[@high|@auto].png; its days/
 * directory holds YYYY-MM-DD[@high|@auto].png. Parsing maps a name and a clock to
 * {start ms, end ms, resolution}; anything outside the grammar is -ENOENT. No I/O
 * except vpath_tz_valid (which reads tzdata). Time zone: day boundaries use the
 * process time zone (TZ), set once at start by vpath_tz_set; tests inject one the
 * same way. Everything but vpath_tz_set is thread-safe.
 */
#ifndef INSIGHTFS_VPATH_H
#define INSIGHTFS_VPATH_H

#include <stddef.h>
#include <stdint.h>

enum vpath_res { VPATH_RES_AUTO = 0, VPATH_RES_HIGH = 1 };

/* The clock a name is resolved against. */
struct vpath_clock {
    int64_t now_ms; /* realtime + gateway offset (+ test offset), Unix ms */
    int align_s;    /* time.align_s, >= 1 */
};

struct vpath_image {
    int64_t start_ms, end_ms; /* start < end */
    enum vpath_res res;       /* the suffix, else the default passed in */
    int relative;             /* 1 when the range moves with the clock (REL, today) */
    int64_t changes_at_ms;    /* first instant the same name maps to another range;
                                 INT64_MAX when never */
};

/* The longest "YYYY-MM-DD" plus NUL. */
#define VPATH_DAY_LEN 11

/* An image name in a widget directory: RANGE or REL, optional @high/@auto, ".png".
 * Returns 0 and fills *out, or -ENOENT for anything outside the grammar (including
 * start >= end, a negative start, names over 255 bytes). */
int vpath_parse_image(const char *name, enum vpath_res default_res,
                      const struct vpath_clock *clk, struct vpath_image *out)
    __attribute__((warn_unused_result));

/* A name in days/: YYYY-MM-DD, optional @high/@auto, ".png", any date from
 * 1970-01-01 to today (in the process time zone). A future day is -ENOENT. */
int vpath_parse_day(const char *name, enum vpath_res default_res, const struct vpath_clock *clk,
                    struct vpath_image *out) __attribute__((warn_unused_result));

/* 1 when rel (no suffix, no ".png") is a REL of section 4: last-N<m|h|d|w>, today,
 * yesterday; else 0. Used to validate presets. */
int vpath_is_relative(const char *rel);

/* The name of the day i days before today (i = 0: today) into out ("YYYY-MM-DD").
 * Returns 0, or -ERANGE if that day is before 1970-01-01. */
int vpath_day_name(const struct vpath_clock *clk, int i, char out[VPATH_DAY_LEN])
    __attribute__((warn_unused_result));

/* Start of the day containing t_ms, in Unix ms. */
int64_t vpath_day_start_ms(int64_t t_ms);

/* 1 when a version ending at end_ms, fetched by a try signed at signed_at_ms, is final:
 * end_ms < signed_at_ms - settle_s * 1000. */
int vpath_is_final(int64_t end_ms, int64_t signed_at_ms, int settle_s);

/* 1 when tz is "local", "UTC", or names a TZif file under /usr/share/zoneinfo
 * (no "..", no leading '/'); else 0. */
int vpath_tz_valid(const char *tz);

/* Make tz the process time zone ("local": leave TZ as the system sets it).
 * Returns 0 or -EINVAL. Not thread-safe: call before any thread starts. */
int vpath_tz_set(const char *tz) __attribute__((warn_unused_result));

#endif
