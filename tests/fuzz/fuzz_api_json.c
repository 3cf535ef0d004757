/* fuzz_api_json - libFuzzer target for the gateway's answers as api.c reads them:
 * api_gateway_error (the JSON error body), api_parse_items (a list answer) and
 * api_png_check (an image body), all from src/api_int.h.
 *
 * Input: byte 0 flags (bit 0: the list's id key is "widgetId", else "id"; bit 1: the
 * body is written in hex, so PNG seeds stay text), byte 1 the code buffer's size
 * (0-39), byte 2 the message buffer's size (0-299); the rest is the body, passed with
 * its length (NUL bytes included), each call on its own exact-size heap copy so ASan
 * sees any read past it.
 *
 * Checks:
 *   - gateway error: code and message are NUL-terminated inside their buffers, a size-0
 *     buffer is not written; with small buffers each is a prefix of what large buffers
 *     get, cut at most 3 bytes short and never inside a UTF-8 sequence when the whole
 *     was valid UTF-8; a code or message found means the body, blanks aside, is {...};
 *   - list: 0, -EIO or -ENOMEM; on error no items and none left out; on success every
 *     item has an addressable id and a name, the left-out elements are exactly those
 *     whose string id is empty, holds a NUL or is not addressable, items and left-out
 *     elements add up to the array's length, and the body, blanks aside, is [...]
 *     without a NUL byte (a comment or junk around it is a failure); all freed
 *     (LeakSanitizer);
 *   - PNG: the same answer with content_length -1 and len; another length makes a valid
 *     body truncated (longer) or foreign (shorter) and changes nothing else; a truncated
 *     body starts with the signature; a valid body starts with the signature and IHDR,
 *     ends with an empty IEND; cut inside a chunk it is truncated, cut between chunks
 *     (without IEND) foreign.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "../../src/api_int.h"

#define BIG 70000 /* more than any error body api_gateway_error reads (64 KiB) */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_api_json: %s failed (line %d)\n", #cond, __LINE__);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* True when s[0..n) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, cp = c & 0x07;
        else
            return false;
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return false;
        i += len;
    }
    return true;
}

/* small (from a buffer of size) against big (from a buffer that never cuts). */
static void check_cut(const char *small, size_t size, const char *big)
{
    size_t s = strlen(small), b = strlen(big);

    if (size == 0)
        return;
    CHECK(s < size);
    CHECK(s <= b && memcmp(small, big, s) == 0);
    if (utf8_valid((const unsigned char *)big, b)) {
        size_t want = b < size - 1 ? b : size - 1;

        CHECK(s + 3 >= want);
        CHECK(utf8_valid((const unsigned char *)small, s));
    }
}

static bool json_blank(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* body is one JSON text opening with open and closing with close, only JSON blanks
 * around it, no NUL (a strict parse of the whole body looks at least like this). */
static bool json_text_is(const unsigned char *body, size_t len, char open, char close)
{
    size_t i = 0, j = len;

    if (memchr(body, '\0', len))
        return false;
    while (i < len && json_blank(body[i]))
        i++;
    while (j > i && json_blank(body[j - 1]))
        j--;
    return j - i >= 2 && body[i] == open && body[j - 1] == close;
}

static void fuzz_gateway_error(const unsigned char *body, size_t len, size_t code_size,
                               size_t msg_size)
{
    /* size 0: a one-byte buffer whose byte must stay as it was */
    char *code = malloc(code_size ? code_size : 1), *msg = malloc(msg_size ? msg_size : 1);
    char *big_code = malloc(BIG), *big_msg = malloc(BIG);
    char api_code[32], api_msg[256]; /* the sizes of struct api_result */

    CHECK(code && msg && big_code && big_msg);
    code[0] = msg[0] = 'X';
    api_gateway_error(body, len, big_code, BIG, big_msg, BIG);
    CHECK(memchr(big_code, '\0', BIG) && memchr(big_msg, '\0', BIG));
    if (big_code[0] || big_msg[0])
        CHECK(json_text_is(body, len, '{', '}'));
    api_gateway_error(body, len, code, code_size, msg, msg_size);
    if (code_size == 0)
        CHECK(code[0] == 'X');
    else
        check_cut(code, code_size, big_code);
    if (msg_size == 0)
        CHECK(msg[0] == 'X');
    else
        check_cut(msg, msg_size, big_msg);
    api_gateway_error(body, len, api_code, sizeof(api_code), api_msg, sizeof(api_msg));
    check_cut(api_code, sizeof(api_code), big_code);
    check_cut(api_msg, sizeof(api_msg), big_msg);
    free(code);
    free(msg);
    free(big_code);
    free(big_msg);
}

static void fuzz_items(const unsigned char *body, size_t len, const char *id_key)
{
    struct api_item *items = (struct api_item *)1;
    size_t n = 12345, left_out = 777;
    int rc = api_parse_items(body, len, id_key, &items, &n, &left_out);

    CHECK(rc == 0 || rc == -EIO || rc == -ENOMEM);
    if (rc != 0) {
        CHECK(items == NULL && n == 0 && left_out == 0);
        return;
    }
    CHECK(items != NULL);
    CHECK(json_text_is(body, len, '[', ']'));
    /* Every element is either an item or left out, and exactly those whose string id is
     * empty, holds a NUL or cannot be addressed are left out; every item can be asked for. */
    json_tokener *tok = json_tokener_new();
    CHECK(tok != NULL);
    json_object *arr = json_tokener_parse_ex(tok, (const char *)body, (int)len);
    CHECK(arr && json_object_is_type(arr, json_type_array) &&
          json_object_array_length(arr) == n + left_out);
    size_t odd = 0;
    for (size_t k = 0; k < json_object_array_length(arr); k++) {
        json_object *id = NULL;
        CHECK(json_object_object_get_ex(json_object_array_get_idx(arr, k), id_key, &id));
        if (json_object_is_type(id, json_type_string)) {
            const char *s = json_object_get_string(id);
            size_t slen = (size_t)json_object_get_string_len(id);
            if (slen == 0 || strlen(s) != slen || !api_id_addressable(s))
                odd++;
        } else {
            CHECK(json_object_is_type(id, json_type_int));
        }
    }
    CHECK(odd == left_out);
    json_object_put(arr);
    json_tokener_free(tok);
    for (size_t k = 0; k < n; k++) {
        CHECK(items[k].id && api_id_addressable(items[k].id) && items[k].name);
    }
    api_items_free(items, n);
}

static void fuzz_png(const unsigned char *body, size_t len)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    enum api_png v = api_png_check(body, len, -1);

    CHECK(v == API_PNG_VALID || v == API_PNG_TRUNCATED || v == API_PNG_FOREIGN);
    CHECK(api_png_check(body, len, (int64_t)len) == v);
    /* A Content-Length other than len only ever spoils a valid body: more is a cut, less
     * is not this PNG. */
    CHECK(api_png_check(body, len, (int64_t)len + 1) ==
          (v == API_PNG_VALID ? API_PNG_TRUNCATED : v));
    if (len > 0)
        CHECK(api_png_check(body, len, (int64_t)len - 1) ==
              (v == API_PNG_VALID ? API_PNG_FOREIGN : v));
    /* Truncated means: the signature, then something missing. */
    if (v == API_PNG_TRUNCATED)
        CHECK(len >= 8 && memcmp(body, sig, 8) == 0);
    if (v == API_PNG_VALID) {
        static const unsigned char iend[8] = {0, 0, 0, 0, 'I', 'E', 'N', 'D'};

        CHECK(len >= 32 && memcmp(body, sig, 8) == 0 && memcmp(body + 12, "IHDR", 4) == 0);
        CHECK(memcmp(body + len - 12, iend, 8) == 0);
        /* A cut inside a chunk of a valid body is truncated (a cut transfer, retried);
         * a cut between chunks leaves no IEND: foreign, as is the bare signature. */
        for (size_t k = 1; k <= 12 && k < len - 8; k++) {
            enum api_png want = k == 12 ? API_PNG_FOREIGN : API_PNG_TRUNCATED;

            CHECK(api_png_check(body, len - k, -1) == want);
            CHECK(api_png_check(body, len - k, (int64_t)(len - k)) == want);
        }
        CHECK(api_png_check(body, 8, -1) == API_PNG_FOREIGN);
        CHECK(api_png_check(body, 9, -1) == API_PNG_TRUNCATED);
        CHECK(api_png_check(body, 7, -1) == API_PNG_FOREIGN);
    }
    CHECK(api_png_check(NULL, 0, -1) == API_PNG_FOREIGN);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *body;
    size_t len = 0;

    if (size < 3)
        return 0;
    /* Each call gets a buffer of exactly the body's length: no NUL after it. */
    body = malloc(size - 3 ? size - 3 : 1);
    CHECK(body);
    if (data[0] & 2) {
        int hi = -1;

        for (size_t i = 3; i < size; i++) {
            int h = hexval(data[i]);

            if (h < 0)
                continue;
            if (hi < 0) {
                hi = h;
            } else {
                body[len++] = (unsigned char)(hi << 4 | h);
                hi = -1;
            }
        }
    } else {
        len = size - 3;
        memcpy(body, data + 3, len);
    }
    if (len > 0) {
        /* shrink to exactly len bytes */
        unsigned char *exact = malloc(len);

        CHECK(exact);
        memcpy(exact, body, len);
        free(body);
        body = exact;
    }

    fuzz_gateway_error(body, len, data[1] % 40, data[2] % 300);
    fuzz_items(body, len, (data[0] & 1) ? "widgetId" : "id");
    fuzz_png(body, len);
    free(body);
    return 0;
}
