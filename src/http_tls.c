/* http_tls - the one certificate store every TLS connection of an http client verifies
 * against (SPEC 7: TLS connections share one certificate store).
 *
 * Why OpenSSL here: STYLE gives OpenSSL to sign and libcurl to http. libcurl 7.88 has no
 * option that shares a store between the easy handles of our pool (below), so the only
 * way is to hand OpenSSL an X509_STORE ourselves. That use is confined to this file,
 * behind http_int.h: http.c stays libcurl-only and passes curl's SSL_CTX on as a void *.
 *
 * The problem: with the OpenSSL backend, curl gives every new connection a fresh SSL_CTX
 * and fills its store from CURLOPT_CAINFO (the system bundle, ~140 certificates),
 * CURLOPT_CAINFO_BLOB or CURLOPT_CAPATH. Each parse costs about 1.35 MiB of RSS, which
 * lives as long as the connection: some 44 MiB for 32 connections at once.
 * CURLOPT_CA_CACHE_TIMEOUT (7.87) does not solve it: curl keeps its cached store in the
 * multi handle, and curl_easy_perform gives each easy handle a private one, so a pool of
 * 32 handles would still hold 32 stores; and it caches nothing at all when a CA blob or
 * a CA path is set (api.ca_file, Debian's default /etc/ssl/certs).
 *
 * The design: http_tls_new builds one X509_STORE per client, once: the system bundle
 * curl would have loaded (CURLINFO_CAINFO, parsed now), the system CA directory
 * (CURLINFO_CAPATH: a hashed-directory lookup, searched lazily, as curl's default CA
 * path was) and the certificates of api.ca_file. http.c sets CURLOPT_CAINFO and
 * CURLOPT_CAPATH to NULL so curl loads nothing itself, and sets CURLOPT_SSL_CTX_FUNCTION:
 * curl calls it for every new connection after applying its own TLS options (among them
 * SSL_CTX_set_verify for VERIFYPEER) and before SSL_new and the handshake.
 * http_tls_install then swaps the SSL_CTX's empty store for ours with
 * SSL_CTX_set1_cert_store, which takes a reference (OpenSSL counts them): the store lives
 * until the client and the last connection using it are gone. Verification stays as
 * strict as before: curl still makes OpenSSL verify the peer and checks the result and
 * the host name (VERIFYPEER 1, VERIFYHOST 2); our store carries the two flags curl puts on
 * its own (X509_V_FLAG_TRUSTED_FIRST, X509_V_FLAG_PARTIAL_CHAIN), so exactly the same
 * chains are accepted. A resumed TLS session (the share handle) was verified when made.
 *
 * Threads: once built, the store is only read. OpenSSL guards its lookups (and the
 * directory lookup's cache of what it found) with the store's own lock, so any number
 * of transfer threads may install it and verify against it at once. installs is atomic.
 */
#include "http_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "insightfs/log.h"

#define PEM_FILE_MAX (16 * 1024 * 1024)

struct http_tls {
    X509_STORE *store; /* read-only once built */
    atomic_uint_fast64_t installs;
};

/* Read a whole (small) regular file. Returns 0 and *buf (NUL-terminated, malloc'd) and
 * *len, or -errno (-EINVAL: not a regular file of at most PEM_FILE_MAX bytes). */
static int read_small_file(const char *path, char **buf, size_t *len)
{
    int rc = 0;
    char *data = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > PEM_FILE_MAX) {
        rc = -EINVAL;
        goto out;
    }
    size_t want = (size_t)st.st_size, got = 0;
    data = malloc(want + 1);
    if (!data) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < want) {
        ssize_t r = read(fd, data + got, want - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    data[got] = '\0';
    *buf = data;
    *len = got;
    data = NULL;
out:
    free(data);
    close(fd);
    return rc;
}

/* Add every certificate of the PEM file ca_file to store. */
static int add_ca_file(X509_STORE *store, const char *ca_file, char **err)
{
    char *pem = NULL;
    size_t len = 0;
    BIO *bio = NULL;
    int rc = read_small_file(ca_file, &pem, &len);
    if (rc < 0) {
        rc = http_set_err(err, rc, "api.ca_file: %s: %s", ca_file,
                          rc == -EINVAL ? "not a regular file of at most 16 MiB" : strerror(-rc));
        goto out;
    }
    if (!strstr(pem, "-----BEGIN CERTIFICATE-----")) {
        rc = http_set_err(err, -EINVAL, "api.ca_file: %s: no PEM certificate in it", ca_file);
        goto out;
    }
    bio = BIO_new_mem_buf(pem, (int)len); /* len <= PEM_FILE_MAX */
    if (!bio) {
        rc = http_set_err(err, -ENOMEM, "out of memory");
        goto out;
    }
    ERR_clear_error();
    int added = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        int ok = X509_STORE_add_cert(store, x); /* takes its own reference */
        X509_free(x);
        if (!ok) {
            rc = http_set_err(err, -ENOMEM, "api.ca_file: %s: cannot add a certificate", ca_file);
            goto out;
        }
        added++;
    }
    /* The loop ends at the end of the input ("no start line") or at a block that does
     * not parse: refuse the latter rather than trust a file only in part. */
    unsigned long e = ERR_peek_last_error();
    if (added == 0 ||
        (e && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))) {
        rc = http_set_err(err, -EINVAL, "api.ca_file: %s: a PEM certificate in it does not parse",
                          ca_file);
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    BIO_free(bio);
    free(pem);
    return rc;
}

int http_tls_new(const char *sys_file, const char *sys_dir, const char *ca_file,
                 struct http_tls **out, char **err)
{
    int rc;
    if (err)
        *err = NULL;
    *out = NULL;
    struct http_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return http_set_err(err, -ENOMEM, "out of memory");
    atomic_init(&t->installs, 0);
    t->store = X509_STORE_new();
    if (!t->store) {
        rc = http_set_err(err, -ENOMEM, "out of memory");
        goto fail;
    }
    /* The flags curl's OpenSSL backend sets on the store it would have built. */
    X509_STORE_set_flags(t->store, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN);

    if (sys_file && X509_STORE_load_locations(t->store, sys_file, NULL) != 1)
        log_debug("http: system CA bundle %s not loaded", sys_file);
    if (sys_dir && X509_STORE_load_locations(t->store, NULL, sys_dir) != 1)
        log_debug("http: system CA directory %s not used", sys_dir);
    ERR_clear_error();
    if (ca_file) {
        rc = add_ca_file(t->store, ca_file, err);
        if (rc < 0)
            goto fail;
    }
    *out = t;
    return 0;
fail:
    http_tls_free(t);
    return rc;
}

void http_tls_free(struct http_tls *t)
{
    if (!t)
        return;
    X509_STORE_free(t->store);
    free(t);
}

void http_tls_install(struct http_tls *t, void *ssl_ctx)
{
    SSL_CTX_set1_cert_store(ssl_ctx, t->store);
    atomic_fetch_add(&t->installs, 1);
}

uint64_t http_tls_installs(const struct http_tls *t)
{
    return t ? (uint64_t)atomic_load(&t->installs) : 0;
}
