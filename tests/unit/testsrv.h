/* testsrv - a tiny scripted HTTP/1.1 server on 127.0.0.1 for unit tests (test_http,
 * test_api). Header-only: every function is static and marked unused.
 *
 * A listening socket on port 0 and an accept thread; one thread per connection. Each
 * request head (up to the blank line; GETs have no body) is recorded with its arrival
 * time, then answered with the next canned reply from a queue (or the default reply
 * when the queue is empty). A reply is sent as: its first `split` bytes, a pause of
 * delay_ms (or until srv_stop when hang is set), the rest; then the connection is closed
 * if close_after is set, else kept alive for the next request. With an SSL_CTX the
 * connections speak TLS. srv_stop shuts every socket down, wakes every pause and joins
 * all threads. Waiting for requests uses a condition variable with a deadline.
 */
#ifndef INSIGHTFS_TESTSRV_H
#define INSIGHTFS_TESTSRV_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

#define SRV_MAX 64
#define SRV_UNUSED __attribute__((unused))

struct srv_reply {
    unsigned char *bytes;
    size_t len;
    size_t split; /* bytes sent before the pause */
    int delay_ms; /* the pause */
    bool hang;    /* pause until srv_stop */
    bool close_after;
};

struct srv_req {
    char *head;      /* request line and headers, NUL-terminated */
    int64_t mono_ms; /* arrival */
    int conn;        /* index of its connection (accept order) */
};

struct srv {
    int lfd, port;
    SSL_CTX *tls;
    pthread_t acceptor;
    pthread_mutex_t mu;
    pthread_cond_t cv;               /* CLOCK_MONOTONIC: request arrivals, stop */
    bool stopping;                   /* protected by mu */
    struct srv_reply queue[SRV_MAX]; /* protected by mu */
    int n_queue, next;               /* protected by mu */
    struct srv_reply dflt;           /* protected by mu */
    struct srv_req reqs[SRV_MAX];    /* protected by mu */
    int n_reqs;                      /* protected by mu */
    int accepts;                     /* protected by mu */
    int fds[SRV_MAX];                /* protected by mu: open connection sockets, -1 closed */
    pthread_t conns[SRV_MAX];        /* protected by mu */
    int n_conns;                     /* protected by mu */
};

struct srv_conn_arg {
    struct srv *s;
    int idx;
};

static SRV_UNUSED int64_t srv_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static SRV_UNUSED struct timespec srv_ts(int64_t mono_ms)
{
    struct timespec ts = {.tv_sec = mono_ms / 1000, .tv_nsec = (mono_ms % 1000) * 1000000};
    return ts;
}

/* Upper time bounds of tests are multiplied by INSIGHTFS_TEST_TIME_FACTOR (SPEC 10:
 * 3 under sanitizers, 20 under valgrind); 1 when unset or junk. */
static SRV_UNUSED int64_t srv_tf(int64_t ms)
{
    const char *f = getenv("INSIGHTFS_TEST_TIME_FACTOR");
    long n = f ? strtol(f, NULL, 10) : 1;
    return ms * (n >= 1 && n <= 1000 ? n : 1);
}

/* A reply from raw bytes (copied). */
static SRV_UNUSED struct srv_reply srv_raw(const void *bytes, size_t len)
{
    struct srv_reply r = {0};
    r.bytes = malloc(len ? len : 1);
    if (len)
        memcpy(r.bytes, bytes, len);
    r.len = len;
    r.split = len;
    return r;
}

/* "HTTP/1.1 <status>\r\n" + headers (each ending "\r\n", may be "") + Content-Length
 * (when with_length) + "\r\n" + body. */
static SRV_UNUSED struct srv_reply srv_http(const char *status, const char *headers,
                                            const void *body, size_t body_len, bool with_length)
{
    char *head = NULL;
    int n;
    if (with_length)
        n = asprintf(&head, "HTTP/1.1 %s\r\n%sContent-Length: %zu\r\n\r\n", status, headers,
                     body_len);
    else
        n = asprintf(&head, "HTTP/1.1 %s\r\n%s\r\n", status, headers);
    if (n < 0)
        abort();
    struct srv_reply r = {0};
    r.len = (size_t)n + body_len;
    r.bytes = malloc(r.len);
    memcpy(r.bytes, head, (size_t)n);
    if (body_len)
        memcpy(r.bytes + n, body, body_len);
    r.split = r.len;
    free(head);
    return r;
}

static SRV_UNUSED void srv_push(struct srv *s, struct srv_reply r)
{
    pthread_mutex_lock(&s->mu);
    if (s->n_queue < SRV_MAX)
        s->queue[s->n_queue++] = r;
    else
        free(r.bytes);
    pthread_mutex_unlock(&s->mu);
}

static SRV_UNUSED void srv_set_default(struct srv *s, struct srv_reply r)
{
    pthread_mutex_lock(&s->mu);
    free(s->dflt.bytes);
    s->dflt = r;
    pthread_mutex_unlock(&s->mu);
}

static int srv_io_send(SSL *ssl, int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w;
        if (ssl)
            w = SSL_write(ssl, p, (int)n);
        else
            w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Pause delay_ms (or until stop when hang). Returns false when stopping. */
static bool srv_pause(struct srv *s, int delay_ms, bool hang)
{
    int64_t until = srv_mono_ms() + delay_ms;
    struct timespec ts = srv_ts(until);
    bool go_on;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && (hang || srv_mono_ms() < until))
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT && !hang)
            break;
    go_on = !s->stopping;
    pthread_mutex_unlock(&s->mu);
    return go_on;
}

static void *srv_conn_main(void *arg)
{
    struct srv_conn_arg *ca = arg;
    struct srv *s = ca->s;
    int idx = ca->idx;
    free(ca);
    pthread_mutex_lock(&s->mu);
    int fd = s->fds[idx];
    pthread_mutex_unlock(&s->mu);
    SSL *ssl = NULL;
    char buf[65536];
    size_t have = 0;

    if (s->tls) {
        ssl = SSL_new(s->tls);
        if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1)
            goto out;
    }
    for (;;) {
        char *end;
        buf[have] = '\0';
        while (!(end = strstr(buf, "\r\n\r\n"))) {
            if (have >= sizeof(buf) - 1)
                goto out;
            ssize_t r = ssl ? SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have))
                            : recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
            buf[have] = '\0';
        }
        size_t head_len = (size_t)(end - buf) + 4;
        struct srv_reply r;
        pthread_mutex_lock(&s->mu);
        if (s->n_reqs < SRV_MAX) {
            struct srv_req *q = &s->reqs[s->n_reqs++];
            q->head = strndup(buf, head_len);
            q->mono_ms = srv_mono_ms();
            q->conn = idx;
        }
        if (s->next < s->n_queue)
            r = s->queue[s->next++];
        else
            r = s->dflt;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        memmove(buf, buf + head_len, have - head_len);
        have -= head_len;

        size_t split = r.split < r.len ? r.split : r.len;
        if (srv_io_send(ssl, fd, r.bytes, split) < 0)
            goto out;
        if ((r.delay_ms > 0 || r.hang) && !srv_pause(s, r.delay_ms, r.hang))
            goto out;
        if (srv_io_send(ssl, fd, r.bytes + split, r.len - split) < 0)
            goto out;
        if (r.close_after)
            goto out;
    }
out:
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    pthread_mutex_lock(&s->mu);
    s->fds[idx] = -1;
    pthread_mutex_unlock(&s->mu);
    close(fd);
    return NULL;
}

static void *srv_accept_main(void *arg)
{
    struct srv *s = arg;
    for (;;) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            break; /* shut down by srv_stop */
        }
        pthread_mutex_lock(&s->mu);
        if (s->stopping || s->n_conns >= SRV_MAX) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            continue;
        }
        int idx = s->n_conns++;
        s->accepts++;
        s->fds[idx] = fd;
        struct srv_conn_arg *ca = malloc(sizeof(*ca));
        ca->s = s;
        ca->idx = idx;
        if (pthread_create(&s->conns[idx], NULL, srv_conn_main, ca) != 0)
            abort();
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

/* Start a server (TLS when tls is not NULL; the server takes a reference). The default
 * reply is a 500 that closes the connection. */
static SRV_UNUSED struct srv *srv_start(SSL_CTX *tls)
{
    /* SSL_write and SSL_shutdown on a socket the client closed must not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    struct srv *s = calloc(1, sizeof(*s));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    pthread_condattr_t cattr;

    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &cattr);
    pthread_condattr_destroy(&cattr);
    for (int i = 0; i < SRV_MAX; i++)
        s->fds[i] = -1;
    s->dflt = srv_http("500 Internal Server Error", "Connection: close\r\n", "", 0, true);
    s->dflt.close_after = true;
    if (tls) {
        SSL_CTX_up_ref(tls);
        s->tls = tls;
    }
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        listen(s->lfd, 128) < 0 || getsockname(s->lfd, (struct sockaddr *)&a, &al) < 0)
        abort();
    s->port = ntohs(a.sin_port);
    if (pthread_create(&s->acceptor, NULL, srv_accept_main, s) != 0)
        abort();
    return s;
}

/* Wait until at least n requests arrived or timeout_ms passed. Returns the count. */
static SRV_UNUSED int srv_wait_requests(struct srv *s, int n, int timeout_ms)
{
    int64_t until = srv_mono_ms() + timeout_ms;
    struct timespec ts = srv_ts(until);
    pthread_mutex_lock(&s->mu);
    while (s->n_reqs < n)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
            break;
    int got = s->n_reqs;
    pthread_mutex_unlock(&s->mu);
    return got;
}

static SRV_UNUSED int srv_requests(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_reqs;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static SRV_UNUSED int srv_accepts(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->accepts;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* A copy of request i's head (free()), or NULL. */
static SRV_UNUSED char *srv_request(struct srv *s, int i)
{
    char *h = NULL;
    pthread_mutex_lock(&s->mu);
    if (i >= 0 && i < s->n_reqs)
        h = strdup(s->reqs[i].head);
    pthread_mutex_unlock(&s->mu);
    return h;
}

static SRV_UNUSED int64_t srv_request_time(struct srv *s, int i)
{
    pthread_mutex_lock(&s->mu);
    int64_t t = i >= 0 && i < s->n_reqs ? s->reqs[i].mono_ms : -1;
    pthread_mutex_unlock(&s->mu);
    return t;
}

/* The value of header name in a request head (malloc'd), or NULL. */
static SRV_UNUSED char *srv_header(const char *head, const char *name)
{
    size_t nl = strlen(name);
    const char *p = strstr(head, "\r\n");
    while (p && p[2] != '\r') {
        const char *line = p + 2;
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(eol - v));
        }
        p = eol;
    }
    return NULL;
}

/* The request target of a head ("GET <target> HTTP/1.1"), malloc'd. */
static SRV_UNUSED char *srv_target(const char *head)
{
    const char *sp = strchr(head, ' ');
    const char *sp2 = sp ? strchr(sp + 1, ' ') : NULL;
    return sp && sp2 ? strndup(sp + 1, (size_t)(sp2 - sp - 1)) : NULL;
}

static SRV_UNUSED void srv_stop(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->cv);
    for (int i = 0; i < s->n_conns; i++)
        if (s->fds[i] >= 0)
            shutdown(s->fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->acceptor, NULL);
    /* No new connection threads after the acceptor ended. */
    for (int i = 0; i < s->n_conns; i++)
        pthread_join(s->conns[i], NULL);
    close(s->lfd);
    for (int i = s->next; i < s->n_queue; i++)
        free(s->queue[i].bytes);
    for (int i = 0; i < s->next; i++)
        free(s->queue[i].bytes);
    free(s->dflt.bytes);
    for (int i = 0; i < s->n_reqs; i++)
        free(s->reqs[i].head);
    if (s->tls)
        SSL_CTX_free(s->tls);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* A port on 127.0.0.1 that nobody listens on (bound, then closed). */
static SRV_UNUSED int srv_dead_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0)
        abort();
    close(fd);
    return ntohs(a.sin_port);
}

/* The smallest valid PNG by SPEC 6's rules: signature, IHDR (13 bytes), IEND. CRCs are
 * zero (not checked). Writes 45 bytes into out. */
#define SRV_PNG_LEN 45
static SRV_UNUSED void srv_png(unsigned char out[SRV_PNG_LEN])
{
    static const unsigned char png[SRV_PNG_LEN] = {
        0x89, 'P', 'N', 'G',  '\r', '\n', 0x1a, '\n',                /* signature */
        0,    0,   0,   13,   'I',  'H',  'D',  'R',                 /* IHDR, 13 bytes */
        0,    0,   3,   0x20, 0,    0,    2,    0x58, 8, 2, 0, 0, 0, /* 800x600, 8-bit RGB */
        0,    0,   0,   0,                                           /* CRC */
        0,    0,   0,   0,    'I',  'E',  'N',  'D',  0, 0, 0, 0,    /* IEND + CRC */
    };
    memcpy(out, png, SRV_PNG_LEN);
}

#endif
