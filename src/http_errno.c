/* http_errno - what one finished try means: SPEC 6's errno table, in exactly one
 * place, and the Retry-After parser.
 *
 * http_classify turns (CURLcode, HTTP status, the transfer's own flags) into an errno,
 * whether another try may help, and a kind for the log line. A status line decides when
 * there is one; otherwise the CURLcode does, through a table with a row for every code
 * of libcurl 7.88. Pure functions: no state, no locks.
 */
#include "insightfs/http.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#define RETRY_AFTER_MAX_S 86400
#define RETRY_AFTER_DATE_MAX 64

/* ---- the errno table ---- */

/* No status line: the CURLcode decides. Every CURLcode of libcurl 7.88 is listed so
 * the table can be reviewed (and is tested) row by row; anything newer is EIO. */
struct curl_row {
    int err;
    bool retryable;
    enum http_kind kind;
};

#define ROW(code, e, r, k) [code] = {(e), (r), (k)}
#define EIO_LOCAL(code) ROW(code, EIO, false, HTTP_KIND_LOCAL)
#define EIO_GONE(code) ROW(code, EIO, true, HTTP_KIND_UNREACHABLE)
#define EIO_TLS(code) ROW(code, EIO, false, HTTP_KIND_TLS)
#define EIO_PROTO(code) ROW(code, EIO, false, HTTP_KIND_UNREACHABLE)

static const struct curl_row curl_rows[] = {
    /* A transfer that ended without a status line yet "OK": not HTTP we can use. */
    EIO_PROTO(CURLE_OK),
    EIO_LOCAL(CURLE_UNSUPPORTED_PROTOCOL),
    EIO_LOCAL(CURLE_FAILED_INIT),
    EIO_LOCAL(CURLE_URL_MALFORMAT),
    EIO_LOCAL(CURLE_NOT_BUILT_IN),
    EIO_GONE(CURLE_COULDNT_RESOLVE_PROXY),
    EIO_GONE(CURLE_COULDNT_RESOLVE_HOST),
    EIO_GONE(CURLE_COULDNT_CONNECT),
    EIO_PROTO(CURLE_WEIRD_SERVER_REPLY),
    EIO_PROTO(CURLE_REMOTE_ACCESS_DENIED),
    EIO_PROTO(CURLE_FTP_ACCEPT_FAILED),
    EIO_PROTO(CURLE_FTP_WEIRD_PASS_REPLY),
    EIO_PROTO(CURLE_FTP_ACCEPT_TIMEOUT),
    EIO_PROTO(CURLE_FTP_WEIRD_PASV_REPLY),
    EIO_PROTO(CURLE_FTP_WEIRD_227_FORMAT),
    EIO_PROTO(CURLE_FTP_CANT_GET_HOST),
    EIO_PROTO(CURLE_HTTP2),
    EIO_PROTO(CURLE_FTP_COULDNT_SET_TYPE),
    /* Cut off before the status line ended: as a reset. */
    EIO_GONE(CURLE_PARTIAL_FILE),
    EIO_PROTO(CURLE_FTP_COULDNT_RETR_FILE),
    EIO_PROTO(CURLE_OBSOLETE20),
    EIO_PROTO(CURLE_QUOTE_ERROR),
    EIO_PROTO(CURLE_HTTP_RETURNED_ERROR),
    EIO_LOCAL(CURLE_WRITE_ERROR),
    EIO_PROTO(CURLE_OBSOLETE24),
    EIO_LOCAL(CURLE_UPLOAD_FAILED),
    EIO_LOCAL(CURLE_READ_ERROR),
    ROW(CURLE_OUT_OF_MEMORY, ENOMEM, false, HTTP_KIND_LOCAL),
    ROW(CURLE_OPERATION_TIMEDOUT, ETIMEDOUT, true, HTTP_KIND_TIMEOUT),
    EIO_PROTO(CURLE_OBSOLETE29),
    EIO_PROTO(CURLE_FTP_PORT_FAILED),
    EIO_PROTO(CURLE_FTP_COULDNT_USE_REST),
    EIO_PROTO(CURLE_OBSOLETE32),
    EIO_PROTO(CURLE_RANGE_ERROR),
    EIO_LOCAL(CURLE_HTTP_POST_ERROR),
    /* Handshake failures other than verification (a reset mid-handshake, a peer that
     * does not speak TLS): transient as often as not. Verification failures are 60. */
    ROW(CURLE_SSL_CONNECT_ERROR, EIO, true, HTTP_KIND_TLS),
    EIO_PROTO(CURLE_BAD_DOWNLOAD_RESUME),
    EIO_LOCAL(CURLE_FILE_COULDNT_READ_FILE),
    EIO_PROTO(CURLE_LDAP_CANNOT_BIND),
    EIO_PROTO(CURLE_LDAP_SEARCH_FAILED),
    EIO_PROTO(CURLE_OBSOLETE40),
    EIO_LOCAL(CURLE_FUNCTION_NOT_FOUND),
    EIO_LOCAL(CURLE_ABORTED_BY_CALLBACK),
    EIO_LOCAL(CURLE_BAD_FUNCTION_ARGUMENT),
    EIO_PROTO(CURLE_OBSOLETE44),
    EIO_LOCAL(CURLE_INTERFACE_FAILED),
    EIO_PROTO(CURLE_OBSOLETE46),
    EIO_PROTO(CURLE_TOO_MANY_REDIRECTS),
    EIO_LOCAL(CURLE_UNKNOWN_OPTION),
    EIO_LOCAL(CURLE_SETOPT_OPTION_SYNTAX),
    EIO_PROTO(CURLE_OBSOLETE50),
    EIO_PROTO(CURLE_OBSOLETE51),
    /* The server closed the connection without a byte of answer. */
    EIO_GONE(CURLE_GOT_NOTHING),
    EIO_TLS(CURLE_SSL_ENGINE_NOTFOUND),
    EIO_TLS(CURLE_SSL_ENGINE_SETFAILED),
    EIO_GONE(CURLE_SEND_ERROR),
    EIO_GONE(CURLE_RECV_ERROR),
    EIO_PROTO(CURLE_OBSOLETE57),
    EIO_TLS(CURLE_SSL_CERTPROBLEM),
    EIO_TLS(CURLE_SSL_CIPHER),
    EIO_TLS(CURLE_PEER_FAILED_VERIFICATION),
    EIO_PROTO(CURLE_BAD_CONTENT_ENCODING),
    EIO_PROTO(CURLE_OBSOLETE62),
    ROW(CURLE_FILESIZE_EXCEEDED, EIO, false, HTTP_KIND_BAD_BODY),
    EIO_TLS(CURLE_USE_SSL_FAILED),
    EIO_LOCAL(CURLE_SEND_FAIL_REWIND),
    EIO_TLS(CURLE_SSL_ENGINE_INITFAILED),
    EIO_PROTO(CURLE_LOGIN_DENIED),
    EIO_PROTO(CURLE_TFTP_NOTFOUND),
    EIO_PROTO(CURLE_TFTP_PERM),
    EIO_PROTO(CURLE_REMOTE_DISK_FULL),
    EIO_PROTO(CURLE_TFTP_ILLEGAL),
    EIO_PROTO(CURLE_TFTP_UNKNOWNID),
    EIO_PROTO(CURLE_REMOTE_FILE_EXISTS),
    EIO_PROTO(CURLE_TFTP_NOSUCHUSER),
    EIO_PROTO(CURLE_OBSOLETE75),
    EIO_PROTO(CURLE_OBSOLETE76),
    EIO_TLS(CURLE_SSL_CACERT_BADFILE),
    EIO_PROTO(CURLE_REMOTE_FILE_NOT_FOUND),
    EIO_PROTO(CURLE_SSH),
    EIO_TLS(CURLE_SSL_SHUTDOWN_FAILED),
    EIO_PROTO(CURLE_AGAIN),
    EIO_TLS(CURLE_SSL_CRL_BADFILE),
    EIO_TLS(CURLE_SSL_ISSUER_ERROR),
    EIO_PROTO(CURLE_FTP_PRET_FAILED),
    EIO_PROTO(CURLE_RTSP_CSEQ_ERROR),
    EIO_PROTO(CURLE_RTSP_SESSION_ERROR),
    EIO_PROTO(CURLE_FTP_BAD_FILE_LIST),
    EIO_PROTO(CURLE_CHUNK_FAILED),
    EIO_GONE(CURLE_NO_CONNECTION_AVAILABLE),
    EIO_TLS(CURLE_SSL_PINNEDPUBKEYNOTMATCH),
    EIO_TLS(CURLE_SSL_INVALIDCERTSTATUS),
    EIO_PROTO(CURLE_HTTP2_STREAM),
    EIO_LOCAL(CURLE_RECURSIVE_API_CALL),
    EIO_PROTO(CURLE_AUTH_ERROR),
    EIO_PROTO(CURLE_HTTP3),
    EIO_GONE(CURLE_QUIC_CONNECT_ERROR),
    /* A proxy that failed its handshake: as an unreachable endpoint. */
    EIO_GONE(CURLE_PROXY),
    EIO_TLS(CURLE_SSL_CLIENTCERT),
    EIO_LOCAL(CURLE_UNRECOVERABLE_POLL),
};

_Static_assert(sizeof(curl_rows) / sizeof(curl_rows[0]) == CURL_LAST, "every CURLcode has a row");

static struct http_verdict verdict(int err, bool retryable, enum http_kind kind)
{
    return (struct http_verdict){.err = -err, .retryable = retryable, .kind = kind};
}

static struct http_verdict classify(int curl_code, long status, unsigned flags)
{
    if (flags & HTTP_F_NOT_SENT)
        return verdict(ETIMEDOUT, true, HTTP_KIND_TIMEOUT);
    if (flags & HTTP_F_SETUP)
        return verdict(EIO, false, HTTP_KIND_LOCAL);
    if (flags & HTTP_F_NOMEM)
        return verdict(ENOMEM, false, HTTP_KIND_LOCAL);

    if (status == 200) {
        if (flags & (HTTP_F_OVERSIZE | HTTP_F_NOROOM) || curl_code == CURLE_FILESIZE_EXCEEDED)
            return verdict(EIO, false, HTTP_KIND_BAD_BODY);
        if (curl_code != CURLE_OK || (flags & HTTP_F_TRUNCATED))
            return verdict(EIO, true, HTTP_KIND_BAD_BODY); /* stalled, cut, short */
        return verdict(0, false, HTTP_KIND_OK);
    }
    /* Any other status line: the server has spoken, whatever happened to its body. */
    if (status == 400)
        return verdict(EINVAL, false, HTTP_KIND_STATUS);
    if (status == 401 || status == 403)
        return verdict(EACCES, false, HTTP_KIND_STATUS);
    if (status == 404)
        return verdict(ENOENT, false, HTTP_KIND_STATUS);
    if (status == 429)
        return verdict(EAGAIN, true, HTTP_KIND_STATUS);
    if (status >= 500 && status <= 599)
        return verdict(EIO, true, HTTP_KIND_STATUS);
    /* 1xx, other 2xx, 3xx (never followed), other 4xx - among them the gateway's 413
     * (errorCode 430, request entity too large) - and out of range: final. */
    if (status != 0)
        return verdict(EIO, false, HTTP_KIND_STATUS);

    if (curl_code < 0 || curl_code >= CURL_LAST)
        return verdict(EIO, false, HTTP_KIND_LOCAL);
    const struct curl_row *r = &curl_rows[curl_code];
    return verdict(r->err, r->retryable, r->kind);
}

void http_classify(int curl_code, long status, unsigned flags, struct http_verdict *out)
{
    *out = classify(curl_code, status, flags);
}

/* ---- Retry-After ---- */

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

int http_parse_retry_after(const char *value, int64_t now_ms, int64_t *delay_ms)
{
    if (!value || !delay_ms)
        return -EINVAL;
    const char *b = value, *e = value + strlen(value);
    while (b < e && is_blank(*b))
        b++;
    while (e > b && is_blank(e[-1]))
        e--;
    size_t n = (size_t)(e - b);
    if (n == 0)
        return -EINVAL;

    if (isdigit((unsigned char)b[0])) {
        int64_t v = 0;
        for (const char *p = b; p < e; p++) {
            if (!isdigit((unsigned char)*p))
                return -EINVAL;
            v = v * 10 + (*p - '0');
            if (v > RETRY_AFTER_MAX_S) /* also stops any overflow */
                return -EINVAL;
        }
        *delay_ms = v * 1000;
        return 0;
    }

    /* An HTTP-date: every form starts with a day name; curl_getdate does the rest. */
    static const char *const days[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
    if (n < 3 || n > RETRY_AFTER_DATE_MAX)
        return -EINVAL;
    bool day = false;
    for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++)
        day = day || strncmp(b, days[i], 3) == 0;
    if (!day)
        return -EINVAL;
    char copy[RETRY_AFTER_DATE_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)b[i] < 0x20 || (unsigned char)b[i] > 0x7e)
            return -EINVAL;
        copy[i] = b[i];
    }
    copy[n] = '\0';
    time_t t = curl_getdate(copy, NULL);
    if (t < 0 || (int64_t)t > INT64_MAX / 1000 / 2)
        return -EINVAL;
    int64_t d = (int64_t)t * 1000 - now_ms;
    if (d > (int64_t)RETRY_AFTER_MAX_S * 1000)
        return -EINVAL;
    *delay_ms = d < 0 ? 0 : d;
    return 0;
}
