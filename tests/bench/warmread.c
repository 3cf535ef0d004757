/* warmread - the warm-read loop of make bench (SPEC 11 rows 1 and 7a), in C so that no
 * interpreter overhead sits on either side of a ratio.
 *
 *   warmread N PATH EXPECTED
 *   warmread -i ROUNDS N EXPECTED PATH...
 *
 * Reads EXPECTED (a regular file holding the bytes every PATH must have). The first form
 * times N x (open PATH, read it whole, close) on CLOCK_MONOTONIC and prints the elapsed
 * nanoseconds. The second form runs ROUNDS rounds; a round times N such reads of each
 * PATH in turn (first PATH first) and prints one line: the nanoseconds of each PATH,
 * separated by spaces. Interleaving inside one process keeps bursts of other load on the
 * machine from landing on one side only. Every read is compared with EXPECTED. Exit 0;
 * 1 on a failed call or other bytes; 2 on bad usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF_MAX (1 << 20)

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Read path whole into buf (at most BUF_MAX bytes); its length, or -1. */
static ssize_t slurp(const char *path, unsigned char *buf)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t len = 0, n;
    while ((n = read(fd, buf + len, BUF_MAX - len)) > 0 && len + n < BUF_MAX)
        len += n;
    int saved = errno;
    close(fd);
    errno = saved;
    return n < 0 ? -1 : len + (n > 0 ? n : 0);
}

/* Time n reads of path whole, each compared with want; 0 and *ns, or -1 (reported). */
static int timed_reads(long n, const char *path, const unsigned char *want, ssize_t want_len,
                       unsigned char *got, long long *ns)
{
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        ssize_t len = slurp(path, got);
        if (len < 0) {
            fprintf(stderr, "warmread: %s: %s\n", path, strerror(errno));
            return -1;
        }
        if (len != want_len || memcmp(got, want, (size_t)len) != 0) {
            fprintf(stderr, "warmread: %s: read %ld returned other bytes\n", path, i);
            return -1;
        }
    }
    *ns = now_ns() - t0;
    return 0;
}

int main(int argc, char **argv)
{
    static unsigned char want[BUF_MAX], got[BUF_MAX];
    int interleave = argc >= 6 && strcmp(argv[1], "-i") == 0;
    long rounds = 1, n = 0;
    const char *expected = NULL;
    if (interleave) {
        rounds = atol(argv[2]);
        n = atol(argv[3]);
        expected = argv[4];
    } else if (argc == 4) {
        n = atol(argv[1]);
        expected = argv[3];
    }
    if (n <= 0 || rounds <= 0) {
        fprintf(stderr, "usage: warmread N PATH EXPECTED\n"
                        "       warmread -i ROUNDS N EXPECTED PATH...\n");
        return 2;
    }
    ssize_t want_len = slurp(expected, want);
    if (want_len < 0) {
        fprintf(stderr, "warmread: %s: %s\n", expected, strerror(errno));
        return 1;
    }
    if (!interleave) {
        long long ns;
        if (timed_reads(n, argv[2], want, want_len, got, &ns) < 0)
            return 1;
        printf("%lld\n", ns);
        return 0;
    }
    for (long r = 0; r < rounds; r++) {
        for (int k = 5; k < argc; k++) {
            long long ns;
            if (timed_reads(n, argv[k], want, want_len, got, &ns) < 0)
                return 1;
            printf("%s%lld", k == 5 ? "" : " ", ns);
        }
        printf("\n");
    }
    return 0;
}
