/* sign - the v2 signature of the NAVER Cloud API gateway.
 *
 * The signed message is the canonical string
 *     METHOD SP TARGET LF TIMESTAMP LF ACCESS_KEY
 * fed to HMAC-SHA256 piece by piece (no copy of it is built), keyed with the secret,
 * and the 32-byte MAC is base64-encoded without line breaks (EVP_EncodeBlock).
 * TARGET must be the exact bytes of the request target on the wire: api builds it once
 * and uses the same string for the URL, the signature and the logs.
 *
 * sign_secret_dup/sign_secret_free keep OpenSSL's cleanse here, so the module that
 * holds a secret copy (api) wipes it without including OpenSSL itself.
 *
 * A sign_key is an HMAC context keyed once (api keeps one per client instead of the
 * secret's text); each signature hashes its message on a copy of it.
 *
 * Invariants: no global state, no locks; a key is never modified after sign_key_new;
 * MAC contexts (which hold the key) are freed by EVP_MAC_CTX_free, which cleanses
 * them; the raw MAC is wiped from the stack.
 */
#include "insightfs/sign.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#define SHA256_LEN 32

static int mac_update_str(EVP_MAC_CTX *ctx, const char *s)
{
    return EVP_MAC_update(ctx, (const unsigned char *)s, strlen(s)) == 1 ? 0 : -EIO;
}

struct sign_key {
    EVP_MAC_CTX *ctx; /* keyed, never updated: each signature works on a copy */
};

struct sign_key *sign_key_new(const char *secret, int *err)
{
    struct sign_key *k = NULL;
    EVP_MAC *alg = NULL;
    *err = -EINVAL;
    if (!secret || !*secret)
        return NULL;
    *err = -ENOMEM;
    if (!(k = calloc(1, sizeof(*k))))
        return NULL;
    *err = -EIO;
    if (!(alg = EVP_MAC_fetch(NULL, "HMAC", NULL)))
        goto fail;
    if (!(k->ctx = EVP_MAC_CTX_new(alg))) {
        *err = -ENOMEM;
        goto fail;
    }
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(k->ctx, (const unsigned char *)secret, strlen(secret), params) != 1)
        goto fail;
    EVP_MAC_free(alg); /* the context keeps its own reference */
    *err = 0;
    return k;
fail:
    EVP_MAC_free(alg);
    sign_key_free(k);
    return NULL;
}

void sign_key_free(struct sign_key *k)
{
    if (!k)
        return;
    EVP_MAC_CTX_free(k->ctx); /* cleanses the key material */
    free(k);
}

int sign_v2_key(const struct sign_key *k, const char *method, const char *target,
                const char *timestamp, const char *access_key, char out[SIGN_V2_LEN + 1])
{
    unsigned char mac[SHA256_LEN];
    size_t mac_len = 0;
    EVP_MAC_CTX *ctx = NULL;
    int rc = -EINVAL;

    if (out)
        out[0] = '\0';
    if (!k || !method || !target || !timestamp || !access_key || !out)
        return -EINVAL;
    /* A copy of the keyed context: the key's pads are already hashed, so a signature
     * costs the message's hashing only (no algorithm fetch, no key schedule). Copying
     * only reads k->ctx, so threads may sign with one key at once. */
    rc = -ENOMEM;
    if (!(ctx = EVP_MAC_CTX_dup(k->ctx)))
        goto out;
    rc = -EIO;
    if (mac_update_str(ctx, method) < 0 || mac_update_str(ctx, " ") < 0 ||
        mac_update_str(ctx, target) < 0 || mac_update_str(ctx, "\n") < 0 ||
        mac_update_str(ctx, timestamp) < 0 || mac_update_str(ctx, "\n") < 0 ||
        mac_update_str(ctx, access_key) < 0)
        goto out;
    if (EVP_MAC_final(ctx, mac, &mac_len, sizeof(mac)) != 1 || mac_len != SHA256_LEN)
        goto out;
    /* 32 bytes -> exactly 44 base64 characters plus the NUL EVP_EncodeBlock writes. */
    if (EVP_EncodeBlock((unsigned char *)out, mac, (int)mac_len) != SIGN_V2_LEN) {
        out[0] = '\0';
        goto out;
    }
    rc = 0;
out:
    OPENSSL_cleanse(mac, sizeof(mac));
    EVP_MAC_CTX_free(ctx);
    return rc;
}

int sign_v2(const char *secret, const char *method, const char *target, const char *timestamp,
            const char *access_key, char out[SIGN_V2_LEN + 1])
{
    if (out)
        out[0] = '\0';
    if (!secret || !*secret || !method || !target || !timestamp || !access_key || !out)
        return -EINVAL;
    int rc;
    struct sign_key *k = sign_key_new(secret, &rc);
    if (!k)
        return rc;
    rc = sign_v2_key(k, method, target, timestamp, access_key, out);
    sign_key_free(k);
    return rc;
}

char *sign_secret_dup(const char *secret)
{
    return secret ? strdup(secret) : NULL;
}

void sign_secret_free(char *secret)
{
    if (!secret)
        return;
    OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
}

int sign_sha256_hex(const void *data, size_t len, char out[SIGN_SHA256_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;

    out[0] = '\0';
    if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return -EIO;
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * mdlen] = '\0';
    return 0;
}

const char *sign_openssl_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}
