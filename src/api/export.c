/*
 * export.c - GET /faces/export streamed from a cursor over the store, and
 * POST /faces/import line by line.
 */
#include "api/export.h"

#include <assert.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/api_input.h"
#include "index/index.h"
#include "util/log.h"

/*
 * Embeddings as text.
 */

void export_embedding_base64(const float *emb, char *out)
{
        /* Little-endian bytes whatever the host's order. */
        unsigned char raw[FACE_EMBEDDING_DIM * 4];
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++) {
                uint32_t u;
                memcpy(&u, &emb[i], 4);
                for (int b = 0; b < 4; b++)
                        raw[i * 4 + b] = (unsigned char)(u >> (8 * b));
        }
        sodium_bin2base64(out, EXPORT_EMB_B64_LEN, raw, sizeof raw,
                          sodium_base64_VARIANT_ORIGINAL);
}

/* Checks the values and normalises the vector; -1 with err on failure. */
static int check_unit(float *emb, char *err, size_t errlen)
{
        double sum = 0;
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++) {
                if (!isfinite(emb[i])) {
                        snprintf(err, errlen,
                                 "embedding value %d is not a finite number",
                                 i);
                        return -1;
                }
                sum += (double)emb[i] * emb[i];
        }
        double norm = sqrt(sum);
        if (fabs(norm - 1.0) > 1e-3) {
                snprintf(err, errlen,
                         "embedding must have unit length (it has %.4g)", norm);
                return -1;
        }
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                emb[i] = (float)(emb[i] / norm);
        return 0;
}

int export_embedding_parse(const json_t *v, float *emb, char *err,
                           size_t errlen)
{
        /* base64 of the little-endian float32 values. */
        if (json_is_string(v)) {
                unsigned char raw[FACE_EMBEDDING_DIM * 4];
                size_t got = 0;
                const char *text = json_string_value(v);
                if (sodium_base642bin(raw, sizeof raw, text,
                                      json_string_length(v), NULL, &got, NULL,
                                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
                    got != sizeof raw) {
                        snprintf(
                                err, errlen,
                                "embedding must be base64 of %d float32 values "
                                "(%d bytes)",
                                FACE_EMBEDDING_DIM, FACE_EMBEDDING_DIM * 4);
                        return -1;
                }
                for (int i = 0; i < FACE_EMBEDDING_DIM; i++) {
                        uint32_t u = 0;
                        for (int b = 0; b < 4; b++)
                                u |= (uint32_t)raw[i * 4 + b] << (8 * b);
                        memcpy(&emb[i], &u, 4);
                }
                return check_unit(emb, err, errlen);
        }

        /* Or a plain array of numbers. */
        if (json_is_array(v) && json_array_size(v) == FACE_EMBEDDING_DIM) {
                for (int i = 0; i < FACE_EMBEDDING_DIM; i++) {
                        json_t *x = json_array_get(v, (size_t)i);
                        if (!json_is_number(x)) {
                                snprintf(err, errlen,
                                         "embedding[%d] is not a number", i);
                                return -1;
                        }
                        emb[i] = (float)json_number_value(x);
                }
                return check_unit(emb, err, errlen);
        }
        snprintf(err, errlen,
                 "embedding must be a base64 string or an array of %d "
                 "numbers",
                 FACE_EMBEDDING_DIM);
        return -1;
}

json_t *export_face_json(const struct store_face *f, enum export_embedding e)
{
        /* The face as GET /faces/{id} shows it, plus the embedding. */
        json_t *o = api_json_face(f);
        if (!o)
                return NULL;
        if (e == EXPORT_EMB_BASE64) {
                char b64[EXPORT_EMB_B64_LEN];
                export_embedding_base64(f->embedding, b64);
                json_object_set_new(o, "embedding", json_string(b64));
        } else if (e == EXPORT_EMB_ARRAY) {
                json_t *arr = json_array();
                for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                        json_array_append_new(
                                arr, json_real((double)f->embedding[i]));
                json_object_set_new(o, "embedding", arr);
        }
        return o;
}

/*
 * The export stream: a cursor over the store, one page in memory, one
 * line in a buffer.
 */

struct stream {
        struct store *store;
        char collection[STORE_ID_MAX];
        char before[STORE_ID_MAX]; /* the last id sent; "" before the first */
        bool csv;
        enum export_embedding emb;
        bool header_sent;
        bool finished;
        struct store_face_page page;
        bool have_page;
        int pos;
        char *line; /* malloc'd, the line being sent */
        size_t len, off;
        int64_t sent; /* faces, for the log */
};

/* Appends s as one CSV field (RFC 4180: quoted when it holds a comma, a
 * quote or a line break; quotes doubled).  A customer's text (guard) that
 * starts like a spreadsheet formula gets a leading apostrophe, so that a
 * spreadsheet program opening the file shows it instead of running it. */
static void csv_field(FILE *out, const char *s, bool first, bool guard)
{
        if (!first)
                fputc(',', out);
        if (!s)
                return;
        bool formula = guard && *s && strchr("=+-@\t\r", *s);
        if (!formula && !strpbrk(s, ",\"\r\n")) {
                fputs(s, out);
                return;
        }
        fputc('"', out);
        if (formula)
                fputc('\'', out);
        for (; *s; s++) {
                if (*s == '"')
                        fputc('"', out);
                fputc(*s, out);
        }
        fputc('"', out);
}

static const char csv_header[] =
        "id,external_id,name,metadata,model_version,box_x,box_y,box_width,"
        "box_height,quality,created_at,updated_at";

/* One face as a CSV record, in a malloc'd string. */
static char *csv_line(const struct store_face *f, enum export_embedding e)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&buf, &len);
        if (!out)
                return NULL;
        json_t *created = api_json_time(f->created_ms);
        json_t *updated = api_json_time(f->updated_ms);
        csv_field(out, f->id, true, false);
        csv_field(out, f->external_id, false, true);
        csv_field(out, f->name, false, true);
        csv_field(out, f->metadata ? f->metadata : "{}", false, false);
        csv_field(out, f->model_version, false, false);
        /* The box in whole pixels and the quality to three decimals, as
         * every JSON answer gives them. */
        json_t *box = api_json_box(&f->box);
        fprintf(out, ",%lld,%lld,%lld,%lld,%.3f",
                (long long)json_integer_value(json_object_get(box, "x")),
                (long long)json_integer_value(json_object_get(box, "y")),
                (long long)json_integer_value(json_object_get(box, "width")),
                (long long)json_integer_value(json_object_get(box, "height")),
                api_json_score(f->quality));
        json_decref(box);
        csv_field(out, json_string_value(created), false, false);
        csv_field(out, json_string_value(updated), false, false);
        json_decref(created);
        json_decref(updated);
        if (e != EXPORT_EMB_NONE) {
                char b64[EXPORT_EMB_B64_LEN];
                export_embedding_base64(f->embedding, b64);
                csv_field(out, b64, false, false);
        }
        fputs("\r\n", out);
        if (fclose(out) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* Makes the next line into s->line; false at the end or on failure
 * (s->finished tells which). */
static bool next_line(struct stream *s, bool *failed)
{
        free(s->line);
        s->line = NULL;
        s->len = s->off = 0;

        /* The CSV header first. */
        if (s->csv && !s->header_sent) {
                s->header_sent = true;
                size_t n = strlen(csv_header);
                s->line = malloc(n + 16);
                if (!s->line)
                        goto fail;
                snprintf(s->line, n + 16, "%s%s\r\n", csv_header,
                         s->emb ? ",embedding" : "");
                s->len = strlen(s->line);
                return true;
        }

        /* The next page when this one is used up; the cursor is the last id
         * sent, so faces added meanwhile (newer ids) are not repeated. */
        if (!s->have_page || s->pos >= s->page.count) {
                bool more = !s->have_page || s->page.more;
                store_face_page_clear(&s->page);
                s->have_page = false;
                if (!more) {
                        s->finished = true;
                        return false;
                }
                if (store_face_list(s->store, s->collection, NULL,
                                    s->before[0] ? s->before : NULL,
                                    EXPORT_PAGE, &s->page) != STORE_OK)
                        goto fail;
                s->have_page = true;
                s->pos = 0;
                if (s->page.count == 0) {
                        s->finished = true;
                        return false;
                }
        }

        /* Format one face. */
        const struct store_face *f = &s->page.faces[s->pos++];
        snprintf(s->before, sizeof s->before, "%s", f->id);
        if (s->csv) {
                s->line = csv_line(f, s->emb);
        } else {
                json_t *o = export_face_json(f, s->emb);
                /* Nine digits bring every float32 back exactly. */
                char *text =
                        o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9))
                          : NULL;
                json_decref(o);
                if (text) {
                        size_t n = strlen(text);
                        s->line = malloc(n + 2);
                        if (s->line) {
                                memcpy(s->line, text, n);
                                memcpy(s->line + n, "\n", 2);
                        }
                        free(text);
                }
        }
        if (!s->line)
                goto fail;
        s->len = strlen(s->line);
        s->sent++;
        return true;
fail:
        *failed = true;
        return false;
}

static ssize_t stream_read(void *cls, char *buf, size_t max)
{
        struct stream *s = cls;
        size_t n = 0;

        /* Fill buf with as many lines as fit, then hand it over. */
        while (n < max) {
                if (s->off == s->len) {
                        bool failed = false;
                        if (s->finished || !next_line(s, &failed)) {
                                if (failed) {
                                        log_error(
                                                "export",
                                                "Exporting collection %s "
                                                "failed "
                                                "after %lld faces; the stream "
                                                "was cut.",
                                                s->collection,
                                                (long long)s->sent);
                                        return -1;
                                }
                                break;
                        }
                }
                size_t k = s->len - s->off;
                if (k > max - n)
                        k = max - n;
                memcpy(buf + n, s->line + s->off, k);
                s->off += k;
                n += k;
        }
        return (ssize_t)n;
}

static void stream_done(void *cls)
{
        struct stream *s = cls;
        if (s->finished)
                log_info("export", "Exported %lld faces of collection %s.",
                         (long long)s->sent, s->collection);
        store_face_page_clear(&s->page);
        free(s->line);
        free(s);
}

void export_run(struct http_request *req, struct store *s,
                const char *collection)
{
        const char *format = NULL, *encoding = NULL;
        bool with_emb = false;

        /* The query: format, include_embeddings, embedding_encoding. */
        static const char *const known[] = {"format", "include_embeddings",
                                            "embedding_encoding", NULL};
        if (!api_input_query_only(req, known) ||
            !http_query_str(req, "format", false, 16, &format) ||
            !http_query_bool(req, "include_embeddings", false, &with_emb) ||
            !http_query_str(req, "embedding_encoding", false, 16, &encoding))
                return;
        bool csv = false;
        if (format && strcmp(format, "csv") == 0)
                csv = true;
        else if (format && strcmp(format, "ndjson") != 0) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "format must be ndjson or csv.", "format");
                return;
        }
        enum export_embedding emb = EXPORT_EMB_NONE;
        if (encoding && strcmp(encoding, "base64") != 0 &&
            strcmp(encoding, "array") != 0) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "embedding_encoding must be base64 or array.",
                                 "embedding_encoding");
                return;
        }
        if (encoding && strcmp(encoding, "array") == 0 && csv) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "embedding_encoding=array is for NDJSON; CSV "
                                 "carries base64.",
                                 "embedding_encoding");
                return;
        }
        if (with_emb)
                emb = encoding && strcmp(encoding, "array") == 0
                              ? EXPORT_EMB_ARRAY
                              : EXPORT_EMB_BASE64;

        /* The stream owns its state from here; stream_done frees it. */
        struct stream *st = calloc(1, sizeof *st);
        if (!st) {
                http_reply_error(req, 500, "INTERNAL_ERROR", "Out of memory.",
                                 NULL);
                return;
        }
        st->store = s;
        snprintf(st->collection, sizeof st->collection, "%s", collection);
        st->csv = csv;
        st->emb = emb;

        /* The file name says what and when: faces-<collection>-<time>. */
        char when[32], disp[160];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(when, sizeof when, "%Y%m%dT%H%M%SZ", &tm);
        snprintf(disp, sizeof disp, "attachment; filename=\"faces-%s-%s.%s\"",
                 collection, when, csv ? "csv" : "ndjson");
        http_reply_header(req, "Content-Disposition", disp);
        http_reply_stream(req, 200,
                          csv ? "text/csv; charset=utf-8"
                              : "application/x-ndjson",
                          stream_read, st, stream_done);
}

/*
 * Import.
 */

/* Limits of the text fields, the same as for enroll. */
#define NAME_MAX_BYTES        256
#define EXTERNAL_ID_MAX_BYTES 128
#define METADATA_MAX_BYTES    16384

/* One line's failure. */
struct line_error {
        const char *code;
        const char *param;
        char message[240];
};

static bool line_fail(struct line_error *e, const char *code, const char *param,
                      const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static bool line_fail(struct line_error *e, const char *code, const char *param,
                      const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        e->param = param;
        vsnprintf(e->message, sizeof e->message, fmt, ap);
        va_end(ap);
        return false;
}

/* Whether s holds something besides white space. */
static bool not_blank(const char *s)
{
        for (; *s; s++)
                if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
                        return true;
        return false;
}

/* A text member: absent (NULL) unless required; a non-blank string of at
 * most max bytes.  jansson has checked the UTF-8 already. */
static bool line_text(json_t *o, const char *name, bool required, size_t max,
                      const char **out, struct line_error *e)
{
        json_t *v = json_object_get(o, name);
        *out = NULL;
        if (!v || json_is_null(v)) {
                if (required)
                        return line_fail(e, "MISSING_PARAMETER", name,
                                         "%s is required.", name);
                return true;
        }
        if (!json_is_string(v))
                return line_fail(e, "INVALID_PARAMETER", name,
                                 "%s must be a string.", name);
        const char *why = api_input_text_problem(json_string_value(v),
                                                 json_string_length(v));
        if (why)
                return line_fail(e, "INVALID_PARAMETER", name, "%s %s.", name,
                                 why);
        if (json_string_length(v) > max)
                return line_fail(e, "INVALID_PARAMETER", name,
                                 "%s is longer than %zu bytes.", name, max);
        *out = json_string_value(v);
        return true;
}

/* Reads one parsed line into *f; false with *e on a bad line. */
static bool line_face(json_t *o, const char *model, struct store_face *f,
                      char **metadata, struct line_error *e)
{
        const char *name, *ext, *version;
        char why[200];

        if (!json_is_object(o))
                return line_fail(e, "INVALID_LINE", NULL,
                                 "The line must be a JSON object.");
        if (!line_text(o, "name", true, NAME_MAX_BYTES, &name, e) ||
            !line_text(o, "external_id", false, EXTERNAL_ID_MAX_BYTES, &ext,
                       e) ||
            !line_text(o, "model_version", true, STORE_MODEL_MAX - 1, &version,
                       e))
                return false;

        /* Embeddings of another model live in another space. */
        if (strcmp(version, model) != 0)
                return line_fail(e, "MODEL_VERSION_MISMATCH", "model_version",
                                 "The embedding was made by model %.60s; this "
                                 "collection uses %.60s.",
                                 version, model);
        json_t *emb = json_object_get(o, "embedding");
        if (!emb)
                return line_fail(e, "MISSING_PARAMETER", "embedding",
                                 "embedding is required: export with "
                                 "include_embeddings=true.");
        if (export_embedding_parse(emb, f->embedding, why, sizeof why) != 0)
                return line_fail(e, "INVALID_EMBEDDING", "embedding", "%s.",
                                 why);

        /* Metadata: an object of bounded size. */
        json_t *meta = json_object_get(o, "metadata");
        if (meta && !json_is_null(meta) && !json_is_object(meta))
                return line_fail(e, "INVALID_PARAMETER", "metadata",
                                 "metadata must be an object.");
        *metadata = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT)
                                         : strdup("{}");
        if (!*metadata)
                return line_fail(e, "INTERNAL_ERROR", NULL, "Out of memory.");
        if (strlen(*metadata) > METADATA_MAX_BYTES)
                return line_fail(e, "INVALID_PARAMETER", "metadata",
                                 "metadata is larger than %d bytes.",
                                 METADATA_MAX_BYTES);

        /* The box and quality the face was enrolled with, when given. */
        json_t *box = json_object_get(o, "box");
        double x = 0, y = 0, w = 0, h = 0, quality = 0;
        if (box && !json_is_null(box) &&
            json_unpack(box, "{s:F, s:F, s:F, s:F}", "x", &x, "y", &y, "width",
                        &w, "height", &h) != 0)
                return line_fail(e, "INVALID_PARAMETER", "box",
                                 "box must be an object of numbers x, y, "
                                 "width, height.");
        json_t *q = json_object_get(o, "quality");
        if (q && !json_is_number(q))
                return line_fail(e, "INVALID_PARAMETER", "quality",
                                 "quality must be a number.");
        quality = q ? json_number_value(q) : 0;
        f->box = (struct face_box){(float)x, (float)y, (float)(x + w),
                                   (float)(y + h), 0};
        f->quality = (float)quality;
        f->name = (char *)name;
        f->external_id = (char *)ext;
        f->metadata = *metadata;
        snprintf(f->model_version, sizeof f->model_version, "%s", version);
        return true;
}

/* Stores one face and adds it to the index in the same step, as enroll
 * does, so identify never sees it half added. */
static bool line_store(struct store *s, struct index *idx,
                       const char *collection, struct store_face *f,
                       struct line_error *e)
{
        snprintf(f->collection_id, sizeof f->collection_id, "%s", collection);
        index_write_lock(idx);
        enum store_status st = store_face_insert(s, f, NULL, 0);
        if (st == STORE_OK &&
            index_add(idx, collection, f->id, f->embedding) != 0) {
                store_face_delete(s, collection, f->id);
                st = STORE_ERROR;
        }
        index_unlock(idx);
        if (st != STORE_OK)
                return line_fail(e, "INTERNAL_ERROR", NULL,
                                 "The face could not be stored.");
        return true;
}

/* The result of one line. */
static json_t *line_result(size_t line, const struct store_face *f,
                           const struct line_error *e)
{
        if (!e)
                return json_pack("{s:I, s:b, s:s}", "line", (json_int_t)line,
                                 "success", 1, "face_id", f->id);
        return json_pack("{s:I, s:b, s:{s:s, s:s, s:s?}}", "line",
                         (json_int_t)line, "success", 0, "error", "code",
                         e->code, "message", e->message, "param", e->param);
}

void export_import_run(struct http_request *req, struct store *s,
                       struct index *idx, const char *collection)
{
        size_t len = 0;
        const unsigned char *body = http_request_body(req, &len);
        struct store_collection c = {0};
        json_t *results = NULL;

        /* The whole body first: something to import, not too much. */
        size_t lines = 0;
        for (size_t i = 0; i < len; i++)
                lines += body[i] == '\n';
        lines += len && body[len - 1] != '\n';
        if (!body || len == 0 || !not_blank((const char *)body)) {
                http_reply_error(req, 400, "EMPTY_BODY",
                                 "The body must hold NDJSON: one face a line.",
                                 NULL);
                return;
        }
        if (lines > EXPORT_IMPORT_MAX_LINES) {
                http_reply_errorf(req, 413, "TOO_MANY_ITEMS", NULL,
                                  "One import takes at most %d lines; this one "
                                  "has %zu.",
                                  EXPORT_IMPORT_MAX_LINES, lines);
                return;
        }
        if (store_collection_get(s, collection, &c) != STORE_OK) {
                http_reply_error(req, 500, "INTERNAL_ERROR",
                                 "The collection could not be read.", NULL);
                return;
        }

        /* Line by line: each stands alone, failures are reported, not
         * fatal.  Blank lines are skipped. */
        results = json_array();
        size_t imported = 0, failed = 0, lineno = 0;
        const char *p = (const char *)body, *end = p + len;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                const char *stop = nl ? nl : end;
                lineno++;
                size_t n = (size_t)(stop - p);
                const char *text = p;
                p = nl ? nl + 1 : end;
                if (n && text[n - 1] == '\r')
                        n--;
                bool blank = true;
                for (size_t i = 0; i < n && blank; i++)
                        blank = text[i] == ' ' || text[i] == '\t';
                if (blank)
                        continue;

                struct line_error err = {0};
                struct store_face f = {0};
                char *metadata = NULL;
                json_error_t jerr;
                json_t *o = json_loadb(text, n, JSON_REJECT_DUPLICATES, &jerr);
                bool ok = o ? line_face(o, c.model_version, &f, &metadata, &err)
                            : line_fail(&err, "INVALID_JSON", NULL,
                                        "The line is not valid JSON: %s.",
                                        jerr.text);
                ok = ok && line_store(s, idx, collection, &f, &err);
                json_array_append_new(
                        results, line_result(lineno, &f, ok ? NULL : &err));
                ok ? imported++ : failed++;
                free(metadata);
                json_decref(o);
        }
        log_info("export",
                 "Imported %zu faces into collection %s; %zu lines "
                 "failed.",
                 imported, collection, failed);
        http_reply_data(req, 200,
                        json_pack("{s:I, s:I, s:o}", "imported",
                                  (json_int_t)imported, "failed",
                                  (json_int_t)failed, "results", results));
        store_collection_clear(&c);
}

static void handle_export(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        export_run(req, api->store, keyauth_key(req)->coll.id);
}

static void handle_import(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        export_import_run(req, api->store, api->index,
                          keyauth_key(req)->coll.id);
}

void export_register(struct api *api, struct http_server *srv, size_t max_body)
{
        struct http_route *r = http_route(srv, "GET", "/api/v1/faces/export",
                                          handle_export, 0, api);
        http_route_set_before(r, keyauth_before, api->keyauth);
        /* An import of many lines takes seconds: off the pool threads. */
        r = http_route(srv, "POST", "/api/v1/faces/import", handle_import,
                       HTTP_BODY_RAW | HTTP_ROUTE_OFFLOAD, api);
        http_route_set_before(r, keyauth_before, api->keyauth);
        http_route_set_max_body(r, max_body ? max_body : 128u << 20);
}
