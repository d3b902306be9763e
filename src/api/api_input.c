/*
 * api_input.c - fields and images of a request, from JSON or multipart.
 */
#include "api/api_input.h"
#include "face/timing.h"
#include "http/metrics.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool api_input_utf8_ok(const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;
        while (i < len) {
                unsigned c = p[i];
                size_t n;
                unsigned min;
                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf) {
                        n = 1;
                        min = 0x80;
                } else if (c >= 0xe0 && c <= 0xef) {
                        n = 2;
                        min = 0x800;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        n = 3;
                        min = 0x10000;
                } else {
                        return false;
                }
                if (i + n >= len)
                        return false;
                unsigned cp = c & (0x3f >> n);
                for (size_t k = 1; k <= n; k++) {
                        if ((p[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i + k] & 0x3f);
                }
                if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += n + 1;
        }
        return true;
}

/* Reads the code point at s[*i] (valid UTF-8) and steps past it. */
static unsigned utf8_next(const unsigned char *s, size_t *i)
{
        unsigned c = s[*i];
        size_t n = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
        unsigned cp = n ? c & (0x3f >> n) : c;
        for (size_t k = 1; k <= n; k++)
                cp = (cp << 6) | (s[*i + k] & 0x3f);
        *i += n + 1;
        return cp;
}

/* Unicode White_Space, and the zero-width characters that show nothing. */
static bool is_space_cp(unsigned cp)
{
        return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 ||
               cp == 0xa0 || cp == 0x1680 || cp == 0x180e ||
               (cp >= 0x2000 && cp <= 0x200d) || cp == 0x2028 || cp == 0x2029 ||
               cp == 0x202f || cp == 0x205f || cp == 0x2060 || cp == 0x3000 ||
               cp == 0xfeff;
}

const char *api_input_text_problem(const char *s, size_t len)
{
        if (!api_input_utf8_ok(s, len))
                return "is not valid UTF-8 text";
        const unsigned char *p = (const unsigned char *)s;
        bool blank = true;
        for (size_t i = 0; i < len;) {
                unsigned cp = utf8_next(p, &i);
                if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
                        return "must not contain control characters "
                               "(line breaks, tabs, escapes, NUL)";
                if (!is_space_cp(cp))
                        blank = false;
        }
        return blank ? "must not be empty or blank" : NULL;
}

/* The JSON member name, or NULL when the body is not JSON or lacks it. */
static json_t *json_field(struct http_request *req, const char *name)
{
        json_t *body = http_request_json(req);
        return json_is_object(body) ? json_object_get(body, name) : NULL;
}

void api_input_shown_name(const char *name, char *buf, size_t size)
{
        const unsigned char *p = (const unsigned char *)name;
        size_t o = 0;

        assert(size > 0);
        for (size_t i = 0; p[i];) {
                /* One character: a well-formed sequence, or one bad byte. */
                size_t n = p[i] < 0x80   ? 1
                           : p[i] < 0xe0 ? 2
                           : p[i] < 0xf0 ? 3
                                         : 4;
                bool good = strnlen(name + i, n) == n &&
                            api_input_utf8_ok(name + i, n);
                if (!good)
                        n = 1;
                if (o + n >= size)
                        break;
                if (good)
                        memcpy(buf + o, p + i, n);
                else
                        buf[o] = '?';
                o += good ? n : 1;
                i += n;
        }
        buf[o] = '\0';
}

void api_input_known_list(const char *const *known, char *buf, size_t size)
{
        size_t n = 0, o = 0;

        assert(size > 0);
        buf[0] = '\0';
        while (known[n])
                n++;
        for (size_t i = 0; i < n && o < size; i++) {
                const char *sep = i == 0 ? "" : i + 1 == n ? " and " : ", ";
                int w = snprintf(buf + o, size - o, "%s%s", sep, known[i]);
                if (w < 0)
                        break;
                o += (size_t)w;
        }
}

/* Whether name is among known (NULL-terminated). */
static bool known_has(const char *const *known, const char *name)
{
        for (size_t i = 0; known[i]; i++)
                if (strcmp(known[i], name) == 0)
                        return true;
        return false;
}

const char *api_input_unknown_member(json_t *obj, const char *const *known)
{
        const char *key;
        json_t *val;

        if (!json_is_object(obj))
                return NULL;
        json_object_foreach(obj, key, val)
        {
                if (!known_has(known, key))
                        return key;
        }
        return NULL;
}

/* Answers 400 INVALID_PARAMETER for the field name, which the route does
 * not take, with the fields it does take (and what also adds, if any). */
static void refuse_unknown(struct http_request *req, const char *name,
                           const char *const *known, const char *also)
{
        char shown[API_FIELD_SHOWN_MAX], list[300];

        api_input_shown_name(name, shown, sizeof shown);
        api_input_known_list(known, list, sizeof list);
        http_reply_errorf(req, 400, "INVALID_PARAMETER", shown,
                          "The field %s is not one this endpoint takes; it "
                          "takes %s%s.",
                          shown, list, also ? also : "");
}

/* The state of one api_input_query_only() walk. */
struct query_check {
        struct http_request *req;
        const char *const *known;
        const char *seen[16];
        size_t nseen;
};

static bool query_arg_ok(void *cls, const char *name, const char *value)
{
        struct query_check *q = cls;
        char shown[API_FIELD_SHOWN_MAX];

        if (!known_has(q->known, name)) {
                refuse_unknown(q->req, name, q->known, NULL);
                return false;
        }
        api_input_shown_name(name, shown, sizeof shown);
        for (size_t i = 0; i < q->nseen; i++) {
                if (strcmp(q->seen[i], name) == 0) {
                        http_reply_errorf(q->req, 400, "INVALID_PARAMETER",
                                          shown,
                                          "The query gives %s more than once; "
                                          "give it once.",
                                          shown);
                        return false;
                }
        }
        if (!value) {
                http_reply_errorf(q->req, 400, "INVALID_PARAMETER", shown,
                                  "The query gives %s without a value; write "
                                  "%s=VALUE.",
                                  shown, shown);
                return false;
        }
        if (q->nseen < sizeof q->seen / sizeof q->seen[0])
                q->seen[q->nseen++] = name;
        return true;
}

bool api_input_query_only(struct http_request *req, const char *const *known)
{
        struct query_check q = {.req = req, .known = known};
        size_t n = 0;

        /* Every known name fits the list of those seen, so a repeat is
         * always caught. */
        while (known[n])
                n++;
        assert(n <= sizeof q.seen / sizeof q.seen[0]);

        return http_request_query_each(req, query_arg_ok, &q);
}

bool api_input_only_parts(struct http_request *req, const char *const *known,
                          api_input_part_fn accept, void *cls, const char *also)
{
        /* A JSON body: its members. */
        const char *key =
                api_input_unknown_member(http_request_json(req), known);
        if (key) {
                refuse_unknown(req, key, known, NULL);
                return false;
        }

        /* A multipart or form body: every part, file or text. */
        size_t n;
        const struct http_part *parts = http_request_parts(req, &n);
        for (size_t i = 0; i < n; i++) {
                if (known_has(known, parts[i].name) ||
                    (accept && accept(cls, &parts[i])))
                        continue;
                refuse_unknown(req, parts[i].name, known, also);
                return false;
        }
        return true;
}

bool api_input_only(struct http_request *req, const char *const *known)
{
        return api_input_only_parts(req, known, NULL, NULL, NULL);
}

bool api_input_has(struct http_request *req, const char *name)
{
        return json_field(req, name) || http_request_part(req, name);
}

/*
 * The raw text of a scalar field: a multipart part, or a JSON string.
 * *is_json tells which; a JSON value of another type is returned in *jv.
 */
static bool raw_text(struct http_request *req, const char *name,
                     const char **text, size_t *len, json_t **jv)
{
        *text = NULL;
        *len = 0;
        *jv = json_field(req, name);
        if (*jv) {
                if (json_is_string(*jv)) {
                        *text = json_string_value(*jv);
                        *len = json_string_length(*jv);
                }
                return true;
        }
        const struct http_part *p = http_request_part(req, name);
        if (p) {
                *text = (const char *)p->data;
                *len = p->len;
                return true;
        }
        return false;
}

bool api_input_text(struct http_request *req, const char *name, bool required,
                    size_t maxlen, const char **out)
{
        const char *t;
        size_t len;
        json_t *jv;

        /* Absent, or JSON null. */
        *out = NULL;
        if (!raw_text(req, name, &t, &len, &jv) || json_is_null(jv)) {
                if (!required)
                        return true;
                http_reply_errorf(req, 400, "MISSING_PARAMETER", name,
                                  "The field %s is required.", name);
                return false;
        }

        /* Present: a non-blank string of valid UTF-8 within the limit. */
        if (!t) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s must be a string.", name);
                return false;
        }
        const char *why = api_input_text_problem(t, len);
        if (why) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s %s.", name, why);
                return false;
        }
        if (len > maxlen) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s is longer than %zu bytes.",
                                  name, maxlen);
                return false;
        }
        *out = jv ? t : http_request_strdup(req, t);
        return true;
}

bool api_input_double(struct http_request *req, const char *name, double def,
                      double min, double max, double *out)
{
        const char *t;
        size_t len;
        json_t *jv;
        double v = def;

        /* JSON numbers as they are; form text parsed whole. */
        if (raw_text(req, name, &t, &len, &jv) && !json_is_null(jv)) {
                char *end = NULL;
                if (json_is_number(jv)) {
                        v = json_number_value(jv);
                } else if (t && !jv && http_decimal_ok(t, true)) {
                        errno = 0;
                        v = strtod(t, &end);
                        if (*end || errno)
                                v = NAN;
                } else {
                        v = NAN;
                }
                if (!(v >= min && v <= max)) {
                        http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                          "The field %s must be a number from "
                                          "%g to %g.",
                                          name, min, max);
                        return false;
                }
        }

        /* -0 is 0: it compares equal, and must not be echoed as -0.0. */
        *out = v == 0 ? 0.0 : v;
        return true;
}

bool api_input_int(struct http_request *req, const char *name, long def,
                   long min, long max, long *out)
{
        const char *t;
        size_t len;
        json_t *jv;
        bool ok = true;
        long v = def;

        if (raw_text(req, name, &t, &len, &jv) && !json_is_null(jv)) {
                if (json_is_integer(jv)) {
                        json_int_t j = json_integer_value(jv);
                        ok = j >= min && j <= max;
                        v = (long)j;
                } else if (t && !jv && http_decimal_ok(t, false)) {
                        char *end;
                        errno = 0;
                        v = strtol(t, &end, 10);
                        ok = !*end && !errno && v >= min && v <= max;
                } else {
                        ok = false;
                }
        }
        if (!ok) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s must be a whole number from "
                                  "%ld to %ld.",
                                  name, min, max);
                return false;
        }
        *out = v;
        return true;
}

bool api_input_bool(struct http_request *req, const char *name, bool def,
                    bool *out)
{
        const char *t;
        size_t len;
        json_t *jv;

        *out = def;
        if (!raw_text(req, name, &t, &len, &jv) || json_is_null(jv))
                return true;
        if (json_is_boolean(jv)) {
                *out = json_is_true(jv);
                return true;
        }
        if (t && !jv && (strcmp(t, "true") == 0 || strcmp(t, "1") == 0)) {
                *out = true;
                return true;
        }
        if (t && !jv && (strcmp(t, "false") == 0 || strcmp(t, "0") == 0)) {
                *out = false;
                return true;
        }
        http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                          "The field %s must be true or false.", name);
        return false;
}

bool api_input_metadata(struct http_request *req, const char *name,
                        const char **out)
{
        const char *t;
        size_t len;
        json_t *jv, *parsed = NULL;
        bool ok = false;

        /* In JSON an object; in a form, the text of a JSON object. */
        *out = NULL;
        if (!raw_text(req, name, &t, &len, &jv) || json_is_null(jv))
                return true;
        if (!jv && t && strlen(t) == len && api_input_utf8_ok(t, len))
                parsed = json_loadb(t, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *obj = jv ? jv : parsed;
        if (!json_is_object(obj)) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s must be a JSON object.", name);
                goto out;
        }
        char *text = json_dumps(obj, JSON_COMPACT);
        if (!text || strlen(text) > API_METADATA_MAX) {
                free(text);
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s is larger than %d bytes.", name,
                                  API_METADATA_MAX);
                goto out;
        }
        *out = http_request_strdup(req, text);
        free(text);
        ok = true;
out:
        json_decref(parsed);
        return ok;
}

/* Decodes base64 text (standard alphabet, padding optional, whitespace
 * ignored) into request memory. */
static bool base64_decode(struct http_request *req, const char *name,
                          const char *b64, size_t len,
                          const unsigned char **data, size_t *outlen)
{
        /* A data URL carries its bytes after the comma, and must say so. */
        if (len >= 5 && strncasecmp(b64, "data:", 5) == 0) {
                const char *comma = memchr(b64, ',', len);
                if (!comma || comma - b64 < 12 ||
                    strncasecmp(comma - 7, ";base64", 7) != 0) {
                        http_reply_errorf(req, 400, "INVALID_BASE64", name,
                                          "The field %s is a data URL without "
                                          "';base64,'.",
                                          name);
                        return false;
                }
                len -= (size_t)(comma + 1 - b64);
                b64 = comma + 1;
        }

        size_t cap = len / 4 * 3 + 3;
        unsigned char *bin = http_request_alloc(req, cap + 1);
        const char *end = NULL;
        static const int variants[] = {
                sodium_base64_VARIANT_ORIGINAL,
                sodium_base64_VARIANT_ORIGINAL_NO_PADDING};
        for (size_t i = 0; i < 2; i++) {
                if (sodium_base642bin(bin, cap, b64, len, " \t\r\n", outlen,
                                      &end, variants[i]) == 0 &&
                    end == b64 + len) {
                        *data = bin;
                        return true;
                }
        }
        http_reply_errorf(req, 400, "INVALID_BASE64", name,
                          "The field %s is not valid base64.", name);
        return false;
}

/* Answers 400 MISSING_IMAGE for image field name. */
static void reply_missing_image(struct http_request *req, const char *name)
{
        http_reply_errorf(req, 400, "MISSING_IMAGE", name,
                          "The field %s is missing: send the image as a "
                          "multipart file part or a base64 JSON string.",
                          name);
}

bool api_input_image_bytes(struct http_request *req, const char *name,
                           bool required, const unsigned char **data,
                           size_t *len)
{
        *data = NULL;
        *len = 0;

        /* A file part: the bytes as they came, whatever its name or type. */
        const struct http_part *p = http_request_part(req, name);
        if (p) {
                *data = p->data ? p->data : (const unsigned char *)"";
                *len = p->len;
                return true;
        }

        json_t *jv = json_field(req, name);
        if (jv && !json_is_null(jv)) {
                if (!json_is_string(jv)) {
                        http_reply_errorf(
                                req, 400, "INVALID_PARAMETER", name,
                                "The field %s must be a base64 string.", name);
                        return false;
                }
                return base64_decode(req, name, json_string_value(jv),
                                     json_string_length(jv), data, len);
        }
        if (required)
                reply_missing_image(req, name);
        return !required;
}

bool api_input_require_image(struct http_request *req, const char *name)
{
        json_t *jv = json_field(req, name);
        if (http_request_part(req, name) || (jv && !json_is_null(jv)))
                return true;
        reply_missing_image(req, name);
        return false;
}

void api_input_reply_face_status(struct http_request *req, enum face_status st,
                                 const char *param)
{
        http_reply_error(req, face_status_http(st), face_status_code(st),
                         face_status_message(st), param);
}

/*
 * The image types this server decodes, for the message of a 415.  HEIF
 * and AVIF are read only when libvips has its HEIF loader; the face
 * module names a HEIF "unsupported" exactly when it lacks it, so a HEIF
 * file type box tells.
 */
static const char *formats_read(void)
{
        static const unsigned char heic[16] = {0,   0,   0,   16,  'f', 't',
                                               'y', 'p', 'h', 'e', 'i', 'c',
                                               0,   0,   0,   0};

        return face_image_unsupported_name(heic, sizeof heic)
                       ? "JPEG, PNG, WebP, GIF, BMP or TIFF"
                       : "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIF or AVIF";
}

static void image_release(void *p)
{
        face_image_free(p);
}

bool api_input_image(struct http_request *req, const char *name,
                     const struct face_image_limits *limits,
                     struct face_image *img)
{
        const unsigned char *data;
        size_t len;

        memset(img, 0, sizeof *img);
        if (!api_input_image_bytes(req, name, true, &data, &len))
                return false;
        double t0 = face_timing_now();
        enum face_status st = face_image_decode(data, len, limits, img);
        http_metrics_histogram_observe("frapi_engine_stage_seconds",
                                       "stage=\"decode\"",
                                       (face_timing_now() - t0) / 1000.0);
        if (st == FACE_ERR_UNSUPPORTED) {
                /* Name the format when we know it (row I5 of bad inputs). */
                const char *kind = face_image_unsupported_name(data, len);
                http_reply_errorf(req, face_status_http(st),
                                  face_status_code(st), name,
                                  "The field %s holds an image %s%s, which is "
                                  "not read here; send %s.",
                                  name, kind ? "in " : "of an unknown format",
                                  kind ? kind : "", formats_read());
                return false;
        }
        if (st != FACE_OK) {
                api_input_reply_face_status(req, st, name);
                return false;
        }
        http_request_defer(req, image_release, img);
        return true;
}
