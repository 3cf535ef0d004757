/* warmread - the warm-read loop of make bench (SPEC 11 row 1), in C so that no
 * interpreter overhead sits on either side of the tmpfs ratio.
 *
 *   warmread N PATH EXPECTED
 *
 * Reads EXPECTED (a regular file holding the bytes PATH must have), then times N x
 * (open PATH, read it whole, close) on CLOCK_MONOTONIC and prints the elapsed
 * nanoseconds. Every read is compared with EXPECTED. Exit 0; 1 on a failed call or
 * other bytes; 2 on bad usage.
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

int main(int argc, char **argv)
{
    if (argc != 4 || atol(argv[1]) <= 0) {
        fprintf(stderr, "usage: warmread N PATH EXPECTED\n");
        return 2;
    }
    long n = atol(argv[1]);
    static unsigned char want[BUF_MAX], got[BUF_MAX];
    ssize_t want_len = slurp(argv[3], want);
    if (want_len < 0) {
        fprintf(stderr, "warmread: %s: %s\n", argv[3], strerror(errno));
        return 1;
    }
    long long t0 = now_ns();
    for (long i = 0; i < n; i++) {
        ssize_t len = slurp(argv[2], got);
        if (len < 0) {
            fprintf(stderr, "warmread: %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        if (len != want_len || memcmp(got, want, (size_t)len) != 0) {
            fprintf(stderr, "warmread: %s: read %ld returned other bytes\n", argv[2], i);
            return 1;
        }
    }
    printf("%lld\n", now_ns() - t0);
    return 0;
}
