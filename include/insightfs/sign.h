/* sign - the NAVER Cloud API gateway v2 request signature (SPEC section 1).
 *
 *   signature = base64(HMAC-SHA256(secret_key, METHOD " " TARGET "\n" TIMESTAMP "\n" ACCESS_KEY))
 *
 * TARGET is the request target exactly as sent on the wire (path and query, already
 * percent-encoded); TIMESTAMP is the x-ncp-apigw-timestamp header value (Unix ms as
 * decimal text). Pure functions of their arguments: no state, thread-safe. The module
 * keeps no copy of the secret (OpenSSL's MAC context is freed, and cleansed by OpenSSL).
 */
#ifndef INSIGHTFS_SIGN_H
#define INSIGHTFS_SIGN_H

#include <stddef.h>

/* Characters of a v2 signature: base64 of a 32-byte SHA-256 MAC. */
#define SIGN_V2_LEN 44

/* Sign one request. secret, method, target, timestamp and access_key are borrowed,
 * NUL-terminated strings (secret: the key's bytes as configured, any encoding).
 * Writes SIGN_V2_LEN characters and a NUL into out.
 * Returns 0, -EINVAL (a NULL argument or an empty secret), -ENOMEM, or -EIO (OpenSSL
 * failed); out is then "". Thread-safe. */
int sign_v2(const char *secret, const char *method, const char *target, const char *timestamp,
            const char *access_key, char out[SIGN_V2_LEN + 1]) __attribute__((warn_unused_result));

/* A signing key: secret keyed into an HMAC-SHA256 context once, so that each signature
 * costs only its message's hashing. Returns it, or NULL with *err -EINVAL (NULL or
 * empty secret), -ENOMEM or -EIO. The key keeps no copy of the secret's text. */
struct sign_key;
struct sign_key *sign_key_new(const char *secret, int *err) __attribute__((warn_unused_result));
/* Free a key; its key material is cleansed. NULL-safe. */
void sign_key_free(struct sign_key *k);
/* sign_v2 with a key: the same result for the same secret. Thread-safe: any number of
 * threads may sign with one key at once. */
int sign_v2_key(const struct sign_key *k, const char *method, const char *target,
                const char *timestamp, const char *access_key, char out[SIGN_V2_LEN + 1])
    __attribute__((warn_unused_result));

/* A copy of a secret (malloc'd) for a module that must keep one, or NULL (ENOMEM).
 * Free it only with sign_secret_free. */
char *sign_secret_dup(const char *secret);
/* Overwrite the secret's bytes (OPENSSL_cleanse) and free it. NULL-safe. */
void sign_secret_free(char *secret);

/* Characters of a hex SHA-256 digest. */
#define SIGN_SHA256_HEX_LEN 64

/* The SHA-256 of len bytes at data (may hold NUL bytes), as 64 lowercase hex characters
 * and a NUL in out (used for the shared cache's key names: SPEC 13). Returns 0, or -EIO
 * (OpenSSL failed; out is then ""). Thread-safe. */
int sign_sha256_hex(const void *data, size_t len, char out[SIGN_SHA256_HEX_LEN + 1])
    __attribute__((warn_unused_result));

/* OpenSSL's version text ("OpenSSL 3.0.x ..."), for --version. Static storage. */
const char *sign_openssl_version(void);

#endif
