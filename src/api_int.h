/* api internals shared by api.c, api_body.c and tests/unit/test_api.c: the pure pieces
 * (body checks, JSON parsing, backoff, retry budget). Not part of any contract.
 */
#ifndef INSIGHTFS_API_INT_H
#define INSIGHTFS_API_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "insightfs/api.h"

/* A list answer over this is EIO (SPEC 1). */
#define API_JSON_MAX ((size_t)4 * 1024 * 1024)
/* Retry budget, in thousandths of a token. */
#define API_BUDGET_MAX 10000
#define API_BUDGET_FIRST_TRY 100
#define API_BUDGET_RETRY 1000

/* SPEC 6's PNG check, three ways:
 *   API_PNG_VALID: the 8-byte signature; chunks (4-byte big-endian length <= 2^31-1,
 *     type, data, CRC) all inside the body; IHDR first; IEND last, of length 0, ending
 *     exactly at the body's end; len == content_length when content_length >= 0.
 *   API_PNG_TRUNCATED: the signature, then chunks of which the last runs past the end
 *     of the body (its header, data or CRC cut), or a valid PNG shorter than
 *     content_length: a cut transfer, worth a retry.
 *   API_PNG_FOREIGN: anything else (no signature, a body under 8 bytes, a length over
 *     2^31-1, IHDR not first, IEND with data or not last, no IEND after complete chunks,
 *     longer than content_length): not worth a retry.
 * CRCs and dimensions are not checked. p may be NULL when len is 0. Pure, thread-safe. */
enum api_png {
    API_PNG_VALID = 0,
    API_PNG_TRUNCATED,
    API_PNG_FOREIGN,
};
enum api_png api_png_check(const unsigned char *p, size_t len, int64_t content_length);

/* The gateway's error body {"error": {"errorCode": S|N, "message": S, ...}} (also the
 * same two members at top level), the whole body one strict JSON text with only blanks
 * after it (as api_parse_items). Anything else leaves code/msg "". Output is cut to
 * the buffers (msg at a UTF-8 boundary). Never fails. */
void api_gateway_error(const unsigned char *body, size_t len, char *code, size_t code_size,
                       char *msg, size_t msg_size);

/* A list answer: a JSON array of objects, each with id_key a string (non-empty, no NUL)
 * or an integer (kept as its decimal text), "name" a string or else the id; other members
 * ignored. The body must be one strict JSON text (json-c's strict mode: no comments,
 * single quotes or trailing commas), followed by nothing but blanks (space, tab, CR, LF),
 * with no NUL byte. Returns 0 with *items, *n (free with api_items_free), -EIO for
 * anything else (not strict JSON, trailing junk, not an array, an element without a
 * usable id, over API_JSON_MAX), or -ENOMEM. */
int api_parse_items(const unsigned char *body, size_t len, const char *id_key,
                    struct api_item **items, size_t *n);

/* The random part of the wait before retry number `retry` (1 for the second try):
 * uniform over [0, min(5000, 250 * 2^(retry-1))] ms, drawn from rnd. */
int64_t api_backoff_ms(int retry, uint64_t rnd);

/* The retry budget: at most API_BUDGET_MAX, starting full; a first try adds
 * API_BUDGET_FIRST_TRY (capped); a retry needs and spends API_BUDGET_RETRY.
 * Not locked: the caller serializes. */
struct api_budget {
    int milli;
};
void api_budget_init(struct api_budget *b);
void api_budget_first_try(struct api_budget *b);
bool api_budget_take_retry(struct api_budget *b); /* false: no token, the try is final */

#endif
