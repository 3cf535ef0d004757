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
 * a NULL name, start >= end, a negative start, names over 255 bytes, and a clock so
 * extreme that a time would overflow). -EINVAL when clk or out is NULL or
 * clk->align_s < 1 (a caller bug). *out is written only on success. "today" and
 * "yesterday" are taken from the local date of clk->now_ms. */
int vpath_parse_image(const char *name, enum vpath_res default_res, const struct vpath_clock *clk,
                      struct vpath_image *out) __attribute__((warn_unused_result));

/* A name in days/: YYYY-MM-DD, optional @high/@auto, ".png", any date from
 * 1970-01-01 to today (in the process time zone). A future day is -ENOENT. Today's
 * name resolves exactly as "today" (relative = 1); a past day is [its first instant,
 * the next day's) with relative = 0 and changes_at_ms = INT64_MAX. In a zone east of
 * UTC, 1970-01-01 starts before the epoch: start_ms < 0 there. Errors as
 * vpath_parse_image. */
int vpath_parse_day(const char *name, enum vpath_res default_res, const struct vpath_clock *clk,
                    struct vpath_image *out) __attribute__((warn_unused_result));

/* 1 when rel (no suffix, no ".png") is a REL of section 4: last-N<m|h|d|w>, today,
 * yesterday; else 0 (also for NULL). Grammar only: "last-999999999w" is 1 here, but
 * no clock after 1970 resolves it (its start is negative). Used to validate presets. */
int vpath_is_relative(const char *rel);

/* The name of the day i days before today (i = 0: today, the local date of
 * clk->now_ms; clk->align_s is not used) into out ("YYYY-MM-DD" and NUL).
 * Returns 0; -ERANGE if that day is before 1970-01-01 or after 9999-12-31, or i < 0;
 * -ENOENT if the time zone skipped that date (Pacific/Apia 2011-12-30: list the next i);
 * -EINVAL if clk or out is NULL. Every name it returns parses in vpath_parse_day
 * with the same clock. */
int vpath_day_name(const struct vpath_clock *clk, int i, char out[VPATH_DAY_LEN])
    __attribute__((warn_unused_result));

/* Start of the day containing t_ms (process time zone), in Unix ms. INT64_MIN when
 * that start cannot be computed (only for t_ms near the int64 limits). */
int64_t vpath_day_start_ms(int64_t t_ms);

/* 1 when a version ending at end_ms, fetched by a try signed at signed_at_ms, is final:
 * end_ms < signed_at_ms - settle_s * 1000 (computed without overflow); else 0. */
int vpath_is_final(int64_t end_ms, int64_t signed_at_ms, int settle_s);

/* 1 when tz is "local", "UTC", or names a regular file under /usr/share/zoneinfo
 * that starts with the TZif magic (no "..", no leading '/'); else 0 (also for NULL
 * and ""). Reads at most 4 bytes of one file. */
int vpath_tz_valid(const char *tz);

/* Make tz the process time zone: setenv("TZ", tz) and tzset() ("local": leave TZ as
 * it is). Returns 0, -EINVAL when !vpath_tz_valid(tz), or -ENOMEM from setenv.
 * Not thread-safe: call before any thread starts. */
int vpath_tz_set(const char *tz) __attribute__((warn_unused_result));

#endif
