/* api_body - checks and parses what the gateway answered, as pure functions
 * (api_int.h): SPEC 6's PNG check (valid, truncated or foreign), the gateway's JSON
 * error body, and the JSON lists of GetDashboardList / GetDashboardWidgetList. json-c
 * does the JSON, in strict mode and over the whole body (a lenient parser accepted
 * comments around a list); every input is untrusted and bounded (API_JSON_MAX,
 * ERROR_JSON_MAX). No state, no locks.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "api_int.h"

#define ERROR_JSON_MAX (64 * 1024)
#define PNG_SIG_LEN 8

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The chunk walk of SPEC 6. A body that starts with the signature is judged by what its
 * chunk headers promise: a last chunk that runs past the end (its header, data or CRC
 * cut) means the transfer was cut, and a retry may bring it whole; a header that
 * contradicts the format (a length over 2^31-1, IHDR not first, IEND with data, bytes
 * after IEND) means the server sent something else, and will again. So does a body that
 * ends cleanly between two chunks without IEND (SPEC 6 and RELIABILITY T9: a PNG without
 * IEND is not retried): nothing in it runs past its end. */
static enum api_png png_chunks(const unsigned char *p, size_t len)
{
    size_t pos = PNG_SIG_LEN;
    bool first = true;
    for (;;) {
        size_t left = len - pos;
        if (left == 0)
            return API_PNG_FOREIGN; /* complete chunks, and no IEND */
        if (left >= 4 && be32(p + pos) > 0x7fffffffu)
            return API_PNG_FOREIGN;
        if (left < 8) /* the next chunk's length and type */
            return API_PNG_TRUNCATED;
        uint32_t n = be32(p + pos);
        const unsigned char *type = p + pos + 4;
        bool iend = memcmp(type, "IEND", 4) == 0;
        if ((first && memcmp(type, "IHDR", 4) != 0) || (iend && n != 0))
            return API_PNG_FOREIGN;
        if (left - 8 < (size_t)n + 4) /* data and CRC */
            return API_PNG_TRUNCATED;
        pos += 12 + (size_t)n;
        if (iend)
            return pos == len ? API_PNG_VALID : API_PNG_FOREIGN;
        first = false;
    }
}

int api_png_valid(const unsigned char *p, size_t len)
{
    return api_png_check(p, len, -1) == API_PNG_VALID;
}

enum api_png api_png_check(const unsigned char *p, size_t len, int64_t content_length)
{
    static const unsigned char sig[PNG_SIG_LEN] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (!p || len < sizeof(sig) || memcmp(p, sig, sizeof(sig)) != 0)
        return API_PNG_FOREIGN;
    enum api_png v = png_chunks(p, len);
    if (v == API_PNG_VALID && content_length >= 0 && (uint64_t)content_length != (uint64_t)len)
        v = (uint64_t)content_length > (uint64_t)len ? API_PNG_TRUNCATED : API_PNG_FOREIGN;
    return v;
}

/* Copy at most size-1 bytes of s, not splitting a UTF-8 sequence. */
static void copy_cut(char *dst, size_t size, const char *s, size_t n)
{
    if (size == 0)
        return;
    if (n > size - 1) {
        n = size - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--; /* s[n] continues a sequence: cut before its lead byte */
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Parse len bytes as one strict JSON text (RFC 8259 as json-c's strict mode reads it:
 * no comments, no single quotes, no trailing commas), all of them: only blanks (space,
 * tab, CR, LF) may follow the value, and a NUL byte anywhere is not JSON (json-c would
 * stop there). NULL on failure. */
static json_object *parse_json(const unsigned char *body, size_t len)
{
    if (!body || len == 0 || len > API_JSON_MAX || memchr(body, '\0', len))
        return NULL;
    json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
    if (!tok)
        return NULL;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    json_object *root = json_tokener_parse_ex(tok, (const char *)body, (int)len);
    if (root && json_tokener_get_error(tok) == json_tokener_success) {
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            if (body[i] != ' ' && body[i] != '\t' && body[i] != '\r' && body[i] != '\n') {
                json_object_put(root);
                root = NULL;
                break;
            }
        }
    } else if (root) {
        json_object_put(root);
        root = NULL;
    }
    json_tokener_free(tok);
    return root;
}

void api_gateway_error(const unsigned char *body, size_t len, char *code, size_t code_size,
                       char *msg, size_t msg_size)
{
    if (code_size)
        code[0] = '\0';
    if (msg_size)
        msg[0] = '\0';
    if (len > ERROR_JSON_MAX)
        return;
    json_object *root = parse_json(body, len);
    if (!root || !json_object_is_type(root, json_type_object))
        goto out;
    json_object *err = NULL, *v = NULL;
    if (!json_object_object_get_ex(root, "error", &err) ||
        !json_object_is_type(err, json_type_object))
        err = root;
    if (json_object_object_get_ex(err, "errorCode", &v)) {
        if (json_object_is_type(v, json_type_string))
            copy_cut(code, code_size, json_object_get_string(v),
                     (size_t)json_object_get_string_len(v));
        else if (json_object_is_type(v, json_type_int))
            snprintf(code, code_size, "%s", json_object_to_json_string_ext(v, 0));
    }
    if (json_object_object_get_ex(err, "message", &v) && json_object_is_type(v, json_type_string))
        copy_cut(msg, msg_size, json_object_get_string(v), strlen(json_object_get_string(v)));
out:
    json_object_put(root);
}

void api_items_free(struct api_item *items, size_t n)
{
    if (!items)
        return;
    for (size_t i = 0; i < n; i++) {
        free(items[i].id);
        free(items[i].name);
    }
    free(items);
}

/* An id: a string, or an integer as its decimal text; NULL for any other type (or out
 * of memory). *usable is cleared for a string that is empty or holds a NUL byte. */
static char *item_id(json_object *v, bool *usable)
{
    *usable = true;
    if (json_object_is_type(v, json_type_string)) {
        const char *s = json_object_get_string(v);
        size_t n = (size_t)json_object_get_string_len(v);
        *usable = n > 0 && strlen(s) == n;
        return strdup(s);
    }
    if (json_object_is_type(v, json_type_int))
        return strdup(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
    return NULL;
}

bool api_id_addressable(const char *id)
{
    if (!id || !*id || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

int api_parse_items(const unsigned char *body, size_t len, const char *id_key,
                    struct api_item **items, size_t *n, size_t *left_out)
{
    int rc = -EIO;
    struct api_item *out = NULL;
    size_t count = 0, skipped = 0;
    *items = NULL;
    *n = 0;
    if (left_out)
        *left_out = 0;
    json_object *root = parse_json(body, len);
    if (!root || !json_object_is_type(root, json_type_array))
        goto out;
    size_t total = json_object_array_length(root);
    out = calloc(total ? total : 1, sizeof(*out));
    if (!out) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < total; i++) {
        json_object *el = json_object_array_get_idx(root, i), *v = NULL;
        if (!json_object_is_type(el, json_type_object) ||
            !json_object_object_get_ex(el, id_key, &v))
            goto out;
        bool usable;
        char *id = item_id(v, &usable);
        if (!id)
            goto out; /* -EIO, or an ENOMEM we cannot tell apart: both fail the list */
        if (!usable || !api_id_addressable(id)) {
            free(id);
            skipped++;
            continue;
        }
        char *name = NULL;
        if (json_object_object_get_ex(el, "name", &v) && json_object_is_type(v, json_type_string)) {
            /* "\u0000" decodes to a NUL inside the name: it becomes '_' as sanitizing
             * would make it (SPEC 4), instead of silently cutting the name there. */
            size_t nlen = (size_t)json_object_get_string_len(v);
            name = malloc(nlen + 1);
            if (name) {
                memcpy(name, json_object_get_string(v), nlen);
                name[nlen] = '\0';
                for (size_t k = 0; k < nlen; k++)
                    if (name[k] == '\0')
                        name[k] = '_';
            }
        } else
            name = strdup(id);
        out[count].id = id;
        out[count].name = name;
        count++;
        if (!name) {
            rc = -ENOMEM;
            goto out;
        }
    }
    *items = out;
    *n = count;
    if (left_out)
        *left_out = skipped;
    out = NULL;
    rc = 0;
out:
    api_items_free(out, count);
    json_object_put(root);
    return rc;
}
