/* http internals shared by http.c (libcurl), http_tls.c (OpenSSL: the client's one
 * certificate store) and tests/unit/test_http.c. Not part of any contract.
 */
#ifndef INSIGHTFS_HTTP_INT_H
#define INSIGHTFS_HTTP_INT_H

#include <stdint.h>

#include "insightfs/http.h"

/* A client's certificate store, shared by all its TLS connections. */
struct http_tls;

/* Build one certificate store from: the PEM bundle sys_file (NULL: none; unreadable or
 * unparsable: logged at debug level and left out, as the CA path may still do), the
 * hashed CA directory sys_dir (NULL: none; searched lazily by OpenSSL, nothing read
 * now), and every certificate of ca_file (NULL: none). Returns 0 and *out, or a
 * negative errno and *err (a malloc'd one-line message naming api.ca_file, caller
 * frees): -ENOENT/-EACCES (ca_file unreadable), -EINVAL (ca_file not a regular file of
 * at most 16 MiB, no PEM certificate in it, or one that does not parse), -ENOMEM.
 * Thread-safe. */
int http_tls_new(const char *sys_file, const char *sys_dir, const char *ca_file,
                 struct http_tls **out, char **err) __attribute__((warn_unused_result));
/* NULL-safe. Connections still holding the store keep it alive (OpenSSL refcount). */
void http_tls_free(struct http_tls *t);

/* Make ssl_ctx (an OpenSSL SSL_CTX *, as curl's CURLOPT_SSL_CTX_FUNCTION hands it over)
 * verify against t's store: a counted reference, not a copy; the store it had is
 * released. Thread-safe: any number of transfer threads at once. */
void http_tls_install(struct http_tls *t, void *ssl_ctx);

/* SSL_CTXs t's store has been installed in so far (one per new TLS connection).
 * Thread-safe. */
uint64_t http_tls_installs(const struct http_tls *t);

/* c's certificate store: NULL for an http:// endpoint. Thread-safe. */
struct http_tls *http_client_tls(const struct http_client *c);

/* Set *err (when err is not NULL) to a malloc'd message and return rc. */
int http_set_err(char **err, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
