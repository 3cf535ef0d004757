/* test_log - the contract of include/insightfs/log.h on stderr (SPEC 8).
 *
 * Covers: the level enum's values, log_level_parse / log_level_name (exact names, -EINVAL
 * for anything else), log_set_level / log_get_level / log_init, filtering (lines above
 * the level are dropped), the exact line "insightfs: LEVEL: MESSAGE\n" through log_msg,
 * the macros and log_vmsg, a trailing newline not doubled, long lines intact, and
 * log_escape (printable ASCII kept; '"', '\\', bytes < 0x20 and >= 0x7f as lowercase
 * \xNN; the max cut; empty input; NUL bytes inside the buffer).
 *
 * stderr is captured by dup2-ing a temporary file onto fd 2 and restored before any
 * assertion, so a failing assertion's report is never swallowed. syslog is never used.
 */
#include "insightfs/log.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* --- stderr capture ----------------------------------------------------------------- */

struct capture {
    FILE *tmp;
    int saved_fd;
};

static void capture_begin(struct capture *c)
{
    fflush(stderr);
    c->tmp = tmpfile();
    assert_non_null(c->tmp);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_int_equal(dup2(fileno(c->tmp), STDERR_FILENO), STDERR_FILENO);
}

/* Restores fd 2 and returns everything written to it since capture_begin (malloc'd). */
static char *capture_end(struct capture *c)
{
    int restored = dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    assert_int_equal(restored, STDERR_FILENO);

    /* log.c wrote with write(2) on fd 2; the FILE's position knows nothing of it. */
    assert_int_equal(fseek(c->tmp, 0, SEEK_END), 0);
    long size = ftell(c->tmp);
    assert_true(size >= 0);
    rewind(c->tmp);
    char *out = malloc((size_t)size + 1);
    assert_non_null(out);
    size_t got = fread(out, 1, (size_t)size, c->tmp);
    out[got] = '\0';
    assert_int_equal(got, (size_t)size);
    fclose(c->tmp);
    return out;
}

static void vlog_wrapper(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vlog_wrapper(enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}

/* Each test starts from the stderr mode at a known level. */
static int setup(void **state)
{
    (void)state;
    log_init(0, LOG_LVL_DEBUG);
    return 0;
}

/* --- levels ------------------------------------------------------------------------- */

static void test_level_values(void **state)
{
    (void)state;
    assert_int_equal(LOG_LVL_ERROR, 0);
    assert_int_equal(LOG_LVL_WARN, 1);
    assert_int_equal(LOG_LVL_INFO, 2);
    assert_int_equal(LOG_LVL_DEBUG, 3);
}

static void test_level_parse(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum log_level level;
    } good[] = {
        {"error", LOG_LVL_ERROR},
        {"warn", LOG_LVL_WARN},
        {"info", LOG_LVL_INFO},
        {"debug", LOG_LVL_DEBUG},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        enum log_level got = (enum log_level)99;
        int rc = log_level_parse(good[i].name, &got);
        if (rc != 0 || got != good[i].level)
            fail_msg("\"%s\": rc %d level %d, want 0 level %d", good[i].name, rc, (int)got,
                     (int)good[i].level);
    }

    static const char *const bad[] = {
        "",       "ERROR",  "Warn", "warning", "err",    "inf",  "debug ", " debug",
        "info\n", "debugx", "0",    "3",       "notice", "crit", "trace",  "fatal",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum log_level got = LOG_LVL_WARN;
        int rc = log_level_parse(bad[i], &got);
        if (rc != -EINVAL)
            fail_msg("\"%s\": rc %d, want -EINVAL (%d)", bad[i], rc, -EINVAL);
    }
}

static void test_level_name(void **state)
{
    (void)state;
    assert_string_equal(log_level_name(LOG_LVL_ERROR), "error");
    assert_string_equal(log_level_name(LOG_LVL_WARN), "warn");
    assert_string_equal(log_level_name(LOG_LVL_INFO), "info");
    assert_string_equal(log_level_name(LOG_LVL_DEBUG), "debug");
    /* Round trip: every level's name parses back to it. */
    for (int l = LOG_LVL_ERROR; l <= LOG_LVL_DEBUG; l++) {
        enum log_level got;
        assert_int_equal(log_level_parse(log_level_name((enum log_level)l), &got), 0);
        assert_int_equal(got, l);
    }
}

static void test_set_get_level(void **state)
{
    (void)state;
    log_init(0, LOG_LVL_WARN);
    assert_int_equal(log_get_level(), LOG_LVL_WARN);
    for (int l = LOG_LVL_ERROR; l <= LOG_LVL_DEBUG; l++) {
        log_set_level((enum log_level)l);
        assert_int_equal(log_get_level(), l);
    }
    log_init(0, LOG_LVL_ERROR);
    assert_int_equal(log_get_level(), LOG_LVL_ERROR);
}

/* --- lines on stderr ---------------------------------------------------------------- */

static void test_line_format(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_msg(LOG_LVL_ERROR, "hello %d %s", 42, "world");
    log_msg(LOG_LVL_WARN, "w");
    log_msg(LOG_LVL_INFO, "%s", "i: colon kept");
    log_msg(LOG_LVL_DEBUG, "d %%");
    char *got = capture_end(&c);
    assert_string_equal(got, "insightfs: error: hello 42 world\n"
                             "insightfs: warn: w\n"
                             "insightfs: info: i: colon kept\n"
                             "insightfs: debug: d %\n");
    free(got);
}

static void test_macros_and_vmsg(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_error("e%d", 1);
    log_warn("w%d", 2);
    log_info("i%d", 3);
    log_debug("d%d", 4);
    vlog_wrapper(LOG_LVL_WARN, "via %s %u", "vmsg", 7u);
    char *got = capture_end(&c);
    assert_string_equal(got, "insightfs: error: e1\n"
                             "insightfs: warn: w2\n"
                             "insightfs: info: i3\n"
                             "insightfs: debug: d4\n"
                             "insightfs: warn: via vmsg 7\n");
    free(got);
}

/* Lines above the level are dropped, through the macros and through log_vmsg alike. */
static void test_filtering(void **state)
{
    (void)state;
    static const struct {
        enum log_level level;
        const char *want;
    } rows[] = {
        {LOG_LVL_ERROR, "insightfs: error: E\n"},
        {LOG_LVL_WARN, "insightfs: error: E\ninsightfs: warn: W\n"},
        {LOG_LVL_INFO, "insightfs: error: E\ninsightfs: warn: W\ninsightfs: info: I\n"},
        {LOG_LVL_DEBUG, "insightfs: error: E\ninsightfs: warn: W\ninsightfs: info: I\n"
                        "insightfs: debug: D\n"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        log_set_level(rows[i].level);
        for (int via_vmsg = 0; via_vmsg <= 1; via_vmsg++) {
            struct capture c;
            capture_begin(&c);
            if (via_vmsg) {
                vlog_wrapper(LOG_LVL_ERROR, "%s", "E");
                vlog_wrapper(LOG_LVL_WARN, "%s", "W");
                vlog_wrapper(LOG_LVL_INFO, "%s", "I");
                vlog_wrapper(LOG_LVL_DEBUG, "%s", "D");
            } else {
                log_error("E");
                log_warn("W");
                log_info("I");
                log_debug("D");
            }
            char *got = capture_end(&c);
            if (strcmp(got, rows[i].want) != 0)
                fail_msg("level %s%s: got \"%s\", want \"%s\"", log_level_name(rows[i].level),
                         via_vmsg ? " (vmsg)" : "", got, rows[i].want);
            free(got);
        }
        assert_int_equal(log_get_level(), rows[i].level); /* logging never changes it */
    }
}

static void test_trailing_newline_not_doubled(void **state)
{
    (void)state;
    struct capture c;
    capture_begin(&c);
    log_info("one newline\n");
    log_info("%s", "from argument\n");
    vlog_wrapper(LOG_LVL_WARN, "vmsg newline\n");
    log_info("inner\nnewline");
    log_info("%s", "");
    char *got = capture_end(&c);
    assert_string_equal(got, "insightfs: info: one newline\n"
                             "insightfs: info: from argument\n"
                             "insightfs: warn: vmsg newline\n"
                             "insightfs: info: inner\nnewline\n"
                             "insightfs: info: \n");
    free(got);
}

/* No fixed-size buffer: a long message comes out whole, as one line. */
static void test_long_line(void **state)
{
    (void)state;
    enum { N = 20000 };
    char *big = malloc(N + 1);
    assert_non_null(big);
    for (size_t i = 0; i < N; i++)
        big[i] = (char)('a' + i % 26);
    big[N] = '\0';
    struct capture c;
    capture_begin(&c);
    log_error("[%s]", big);
    char *got = capture_end(&c);
    const char *prefix = "insightfs: error: [";
    size_t plen = strlen(prefix);
    assert_int_equal(strlen(got), plen + N + 2 /* "]\n" */);
    assert_memory_equal(got, prefix, plen);
    assert_memory_equal(got + plen, big, N);
    assert_string_equal(got + plen + N, "]\n");
    free(got);
    free(big);
}

/* --- log_escape ----------------------------------------------------------------------- */

static void check_escape(const void *buf, size_t len, size_t max, const char *want)
{
    char *got = log_escape(buf, len, max);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("log_escape(len %zu, max %zu): got \"%s\", want \"%s\"", len, max, got, want);
    free(got);
}

static void test_escape_bytes(void **state)
{
    (void)state;
    static const struct {
        unsigned char byte;
        const char *want;
    } rows[] = {
        {0x00, "\\x00"}, {0x01, "\\x01"}, {0x09, "\\x09"}, {0x0a, "\\x0a"}, {0x0d, "\\x0d"},
        {0x1b, "\\x1b"}, {0x1f, "\\x1f"}, {0x20, " "},     {0x21, "!"},     {0x22, "\\x22"},
        {0x27, "'"},     {0x30, "0"},     {0x41, "A"},     {0x5c, "\\x5c"}, {0x7a, "z"},
        {0x7e, "~"},     {0x7f, "\\x7f"}, {0x80, "\\x80"}, {0xab, "\\xab"}, {0xc3, "\\xc3"},
        {0xef, "\\xef"}, {0xfe, "\\xfe"}, {0xff, "\\xff"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        check_escape(&rows[i].byte, 1, 1, rows[i].want);

    /* Every printable ASCII byte but '"' and '\\' is kept as is. */
    for (int b = 0x20; b < 0x7f; b++) {
        if (b == '"' || b == '\\')
            continue;
        unsigned char byte = (unsigned char)b;
        char want[2] = {(char)b, '\0'};
        check_escape(&byte, 1, 1, want);
    }
    /* Every other byte is 4 characters: \x and two lowercase hex digits. */
    for (int b = 0; b < 256; b++) {
        if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\')
            continue;
        unsigned char byte = (unsigned char)b;
        char *got = log_escape(&byte, 1, 1);
        assert_non_null(got);
        assert_int_equal(strlen(got), 4);
        assert_memory_equal(got, "\\x", 2);
        for (int k = 2; k < 4; k++)
            if (!((got[k] >= '0' && got[k] <= '9') || (got[k] >= 'a' && got[k] <= 'f')))
                fail_msg("byte 0x%02x escaped as \"%s\"", b, got);
        assert_int_equal(strtol(got + 2, NULL, 16), b);
        free(got);
    }
}

static void test_escape_strings(void **state)
{
    (void)state;
    check_escape("plain text 123", 14, 64, "plain text 123");
    check_escape("say \"hi\"\\n", 10, 64, "say \\x22hi\\x22\\x5cn");
    check_escape("line\r\n", 6, 64, "line\\x0d\\x0a");
    /* A NUL inside the buffer does not end it: len counts, not strlen. */
    check_escape("a\0b", 3, 64, "a\\x00b");
    /* UTF-8 is bytes like any other. */
    check_escape("\xc3\xa9t\xc3\xa9", 5, 64, "\\xc3\\xa9t\\xc3\\xa9");
    check_escape("{\"returnCode\":\"1\"}", 18, 64, "{\\x22returnCode\\x22:\\x221\\x22}");
}

static void test_escape_max_and_empty(void **state)
{
    (void)state;
    /* Cut at max input bytes (before escaping), not max output characters. */
    check_escape("abcdef", 6, 3, "abc");
    check_escape("abcd", 4, 3, "abc");
    check_escape("\x01\x02\x03\x04", 4, 2, "\\x01\\x02");
    check_escape("ab\"cd", 5, 3, "ab\\x22");
    check_escape("abcdef", 6, 6, "abcdef");
    check_escape("abcdef", 6, 100, "abcdef");
    check_escape("abcdef", 6, 0, "");
    check_escape("", 0, 64, "");
    check_escape("ignored", 0, 64, "");

    /* SPEC 8's body excerpt: the first 64 bytes of a longer body. */
    char body[100];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)('0' + i % 10);
    char *got = log_escape(body, sizeof(body), 64);
    assert_non_null(got);
    assert_int_equal(strlen(got), 64);
    assert_memory_equal(got, body, 64);
    free(got);

    /* The worst case: every byte escaped, the output is exactly 4 * max characters. */
    unsigned char ff[64];
    memset(ff, 0xff, sizeof(ff));
    got = log_escape(ff, sizeof(ff), 64);
    assert_non_null(got);
    assert_int_equal(strlen(got), 4 * 64);
    for (size_t i = 0; i < 64; i++)
        assert_memory_equal(got + 4 * i, "\\xff", 4);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_level_values, setup),
        cmocka_unit_test_setup(test_level_parse, setup),
        cmocka_unit_test_setup(test_level_name, setup),
        cmocka_unit_test_setup(test_set_get_level, setup),
        cmocka_unit_test_setup(test_line_format, setup),
        cmocka_unit_test_setup(test_macros_and_vmsg, setup),
        cmocka_unit_test_setup(test_filtering, setup),
        cmocka_unit_test_setup(test_trailing_newline_not_doubled, setup),
        cmocka_unit_test_setup(test_long_line, setup),
        cmocka_unit_test_setup(test_escape_bytes, setup),
        cmocka_unit_test_setup(test_escape_strings, setup),
        cmocka_unit_test_setup(test_escape_max_and_empty, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
