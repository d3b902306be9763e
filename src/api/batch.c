/*
 * batch.c - POST /faces/batch, /identify/batch and /faces/batch-delete:
 * items read one by one, run by a few workers under the recognition gate,
 * answered together in the order sent.
 */
#include "api/batch.h"

#include <assert.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "api/api_input.h"
#include "api/enroll.h"
#include "util/log.h"

/* Workers of one batch at most, the handler's own thread included. */
#define MAX_WORKERS 4

/* The server's recognition gate, for workers beyond the handler's own
 * slot.  Set by batch_register(); one server per process. */
static struct http_gate *server_gate;

/* One item's outcome, filled by whichever worker ran it. */
struct item {
        json_t *in;     /* the item as sent (borrowed) */
        json_t *result; /* owned until put into the answer */
};

/* What the workers of one batch share. */
struct batch {
        struct api *api;
        struct http_request *req; /* read-only use: parts, id */
        const struct keyauth_key *key;
        struct item *items;
        size_t count;
        atomic_size_t next;
        void (*run)(struct batch *b, struct item *it, size_t i);
        /* identify options */
        long top_k, max_faces;
        double threshold;
};

/*
 * Results.
 */

static json_t *item_error(size_t i, int status, const char *code,
                          const char *param, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

static json_t *item_error(size_t i, int status, const char *code,
                          const char *param, const char *fmt, ...)
{
        char msg[300];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        return json_pack("{s:I, s:b, s:i, s:{s:s, s:s, s:s?}}", "index",
                         (json_int_t)i, "success", 0, "status", status, "error",
                         "code", code, "message", msg, "param", param);
}

/* The error of an engine or decoder status, with its usual HTTP status. */
static json_t *item_face_error(size_t i, enum face_status st)
{
        return item_error(i, face_status_http(st), face_status_code(st),
                          "image", "%s", face_status_message(st));
}

/*
 * Reading one item.
 */

/* The members an item of each batch takes. */
static const char *const enroll_item_fields[] = {
        "image",          "name",           "external_id", "metadata",
        "face_selection", "check_liveness", NULL};
static const char *const identify_item_fields[] = {"image", NULL};

/* The error of an item member that the batch does not take, or NULL when
 * every member is known. */
static json_t *item_unknown(json_t *in, size_t i, const char *const *known)
{
        const char *key = api_input_unknown_member(in, known);
        char shown[API_FIELD_SHOWN_MAX], list[160];

        if (!key)
                return NULL;
        api_input_shown_name(key, shown, sizeof shown);
        api_input_known_list(known, list, sizeof list);
        return item_error(i, 400, "INVALID_PARAMETER", shown,
                          "The field %s is not one an item takes; it takes "
                          "%s.",
                          shown, list);
}

/* A text member of an item: NULL when absent (an error when required);
 * a non-blank string of at most max bytes. */
static bool item_text(json_t *in, size_t i, const char *name, bool required,
                      size_t max, const char **out, json_t **err)
{
        json_t *v = json_object_get(in, name);
        *out = NULL;
        if (!v || json_is_null(v)) {
                if (required)
                        *err = item_error(i, 400, "MISSING_PARAMETER", name,
                                          "%s is required.", name);
                return !required;
        }
        const char *s = json_string_value(v);
        const char *why =
                s ? api_input_text_problem(s, json_string_length(v)) : NULL;
        if (!s || json_string_length(v) > max) {
                *err = item_error(
                        i, 400, "INVALID_PARAMETER", name,
                        "%s must be a non-blank string of at most %zu "
                        "bytes.",
                        name, max);
                return false;
        }
        if (why) {
                *err = item_error(i, 400, "INVALID_PARAMETER", name, "%s %s.",
                                  name, why);
                return false;
        }
        *out = s;
        return true;
}

/* The image bytes of an item: in a multipart request its "image" member
 * names a file part; otherwise it is base64 text, maybe a data URL.
 * Decoded bytes are malloc'd into *owned. */
static bool item_image_bytes(struct batch *b, json_t *in, size_t i,
                             const unsigned char **data, size_t *len,
                             unsigned char **owned, json_t **err)
{
        json_t *v = json_object_get(in, "image");
        *owned = NULL;
        if (!json_is_string(v)) {
                *err = item_error(
                        i, 400, v ? "INVALID_PARAMETER" : "MISSING_IMAGE",
                        "image",
                        "image must be a base64 string or the name of "
                        "a file part.");
                return false;
        }

        /* Multipart: a file part of that name, nothing else (a name such
         * as "nope" must not be read as base64 by chance). */
        if (!http_request_json(b->req)) {
                const struct http_part *p =
                        http_request_part(b->req, json_string_value(v));
                if (p && strcmp(p->name, "items") != 0) {
                        *data = p->data ? p->data : (const unsigned char *)"";
                        *len = p->len;
                        return true;
                }
                *err = item_error(i, 400, "MISSING_IMAGE", "image",
                                  "image names the part '%.100s', which the "
                                  "request does not hold: send a file part "
                                  "of that name.",
                                  json_string_value(v));
                return false;
        }

        /* Base64, after an optional "data:<type>;base64," prefix. */
        const char *t = json_string_value(v);
        size_t tlen = json_string_length(v);
        if (tlen >= 5 && strncasecmp(t, "data:", 5) == 0) {
                const char *comma = memchr(t, ',', tlen);
                if (!comma || comma - t < 12 ||
                    strncasecmp(comma - 7, ";base64", 7) != 0) {
                        *err = item_error(i, 400, "INVALID_BASE64", "image",
                                          "image is a data URL without "
                                          "';base64,'.");
                        return false;
                }
                tlen -= (size_t)(comma + 1 - t);
                t = comma + 1;
        }
        size_t cap = tlen / 4 * 3 + 3;
        *owned = malloc(cap + 1);
        if (!*owned) {
                *err = item_error(i, 503, "SERVER_BUSY", NULL,
                                  "The server is short of memory.");
                return false;
        }
        static const int variants[] = {
                sodium_base64_VARIANT_ORIGINAL,
                sodium_base64_VARIANT_ORIGINAL_NO_PADDING};
        for (size_t k = 0; k < 2; k++) {
                const char *end = NULL;
                if (sodium_base642bin(*owned, cap, t, tlen, " \t\r\n", len,
                                      &end, variants[k]) == 0 &&
                    end == t + tlen) {
                        *data = *owned;
                        return true;
                }
        }
        free(*owned);
        *owned = NULL;
        *err = item_error(i, 400, "INVALID_BASE64", "image",
                          "image is neither valid base64 nor the name of a "
                          "file part.");
        return false;
}

/* An item's image bytes: data points into the request or into owned. */
struct item_bytes {
        const unsigned char *data;
        size_t len;
        unsigned char *owned;
};

/* Decodes the item's image and runs the engine on it.  With keep, the
 * bytes stay readable there until the caller frees keep->owned. */
static bool item_analyze(struct batch *b, json_t *in, size_t i, unsigned want,
                         int max_faces, struct face_list *list,
                         struct item_bytes *keep, json_t **err)
{
        struct item_bytes bytes;
        struct face_image img = {0};

        if (!item_image_bytes(b, in, i, &bytes.data, &bytes.len, &bytes.owned,
                              err))
                return false;
        enum face_status st =
                face_image_decode(bytes.data, bytes.len, &b->api->limits, &img);
        if (keep)
                *keep = bytes;
        else
                free(bytes.owned);
        if (st == FACE_OK)
                st = api_engine_run(b->api->engine, &img, want, max_faces,
                                    list);
        face_image_free(&img);
        if (st != FACE_OK) {
                *err = item_face_error(i, st);
                return false;
        }
        return true;
}

/*
 * Enroll, one item: the rules of POST /faces (api/enroll.h).
 */

/* The error result of a refused enroll. */
static json_t *item_refusal(size_t i, struct enroll_refusal *why)
{
        if (!why->code)
                return item_error(i, 500, "INTERNAL_ERROR", NULL,
                                  "The face could not be stored.");
        json_t *err = item_error(i, why->status, why->code, why->param, "%s",
                                 why->message);
        /* The standard members win, as in single answers. */
        if (json_is_object(why->details))
                json_object_update_missing(json_object_get(err, "error"),
                                           why->details);
        json_decref(why->details);
        return err;
}

static void enroll_item(struct batch *b, struct item *it, size_t i)
{
        const char *name, *ext, *sel;
        json_t *err = NULL, *meta, *live;
        struct face_list list = {0};
        struct item_bytes bytes = {0};
        char *meta_text = NULL;

        /* The fields first: a bad one costs no engine time. */
        if (!json_is_object(it->in)) {
                it->result = item_error(i, 400, "INVALID_ITEM", NULL,
                                        "Each item must be a JSON object.");
                return;
        }
        err = item_unknown(it->in, i, enroll_item_fields);
        if (err ||
            !item_text(it->in, i, "name", true, API_NAME_MAX, &name, &err) ||
            !item_text(it->in, i, "external_id", false, API_EXTERNAL_ID_MAX,
                       &ext, &err) ||
            !item_text(it->in, i, "face_selection", false, 16, &sel, &err))
                goto out;
        if (sel && strcmp(sel, "single") != 0 && strcmp(sel, "largest") != 0) {
                err = item_error(i, 400, "INVALID_PARAMETER", "face_selection",
                                 "face_selection must be single or largest.");
                goto out;
        }
        live = json_object_get(it->in, "check_liveness");
        if (live && !json_is_null(live) && !json_is_boolean(live)) {
                err = item_error(i, 400, "INVALID_PARAMETER", "check_liveness",
                                 "check_liveness must be true or false.");
                goto out;
        }
        meta = json_object_get(it->in, "metadata");
        if (meta && !json_is_null(meta) && !json_is_object(meta)) {
                err = item_error(i, 400, "INVALID_PARAMETER", "metadata",
                                 "metadata must be a JSON object.");
                goto out;
        }
        meta_text = json_is_object(meta) ? json_dumps(meta, JSON_COMPACT)
                                         : strdup("{}");
        if (!meta_text || strlen(meta_text) > API_METADATA_MAX) {
                err = item_error(i, 400, "INVALID_PARAMETER", "metadata",
                                 "metadata is larger than %d bytes.",
                                 API_METADATA_MAX);
                goto out;
        }

        struct enroll_request rq = {
                .key = b->key,
                .request_id = http_request_id(b->req),
                .name = name,
                .external_id = ext,
                .metadata = meta_text,
                .largest = sel && strcmp(sel, "largest") == 0,
                .check_liveness = json_is_true(live),
        };
        if (!item_analyze(b, it->in, i, enroll_want(&rq), ENROLL_MAX_FACES,
                          &list, &bytes, &err))
                goto out;
        rq.original = bytes.data;
        rq.original_len = bytes.len;
        struct enroll_refusal why;
        json_t *data = enroll_face(b->api, &rq, &list, &why);
        if (!data) {
                err = item_refusal(i, &why);
                goto out;
        }
        it->result = json_pack("{s:I, s:b, s:i, s:o}", "index", (json_int_t)i,
                               "success", 1, "status", 201, "face", data);
out:
        if (err)
                it->result = err;
        face_list_free(&list);
        free(bytes.owned);
        free(meta_text);
}

/*
 * Identify, one item: the answer of POST /identify for its image.
 */

struct cand {
        struct store_face face;
        float sim;
};

/* The candidates of one face: the exact top k of the index (similarities
 * from the store's float32 embeddings), best first. */
static json_t *candidates(struct batch *b, const float *emb)
{
        struct index_hit hits[INDEX_MAX_K];
        struct cand *c = calloc(INDEX_MAX_K, sizeof *c);
        struct api *api = b->api;
        const char *coll = b->key->coll.id;
        float thr = (float)b->threshold;
        json_t *out = json_array();
        int n = 0;

        if (!c)
                return out;
        int want = (int)b->top_k;
        if (want > INDEX_MAX_K)
                want = INDEX_MAX_K;
        index_read_lock(api->index);
        int got = api_search(api, coll, emb, want, thr, hits);
        if (got < 0)
                log_error("batch", "identify: out of memory searching %s",
                          coll);
        for (int k = 0; k < got; k++) {
                if (store_face_get(api->store, coll, hits[k].face_id,
                                   &c[n].face) != STORE_OK)
                        continue;
                c[n++].sim = hits[k].similarity;
        }
        index_unlock(api->index);
        for (int k = 0; k < n; k++) {
                const struct store_face *f = &c[k].face;
                if (k < b->top_k)
                        json_array_append_new(
                                out,
                                json_pack("{s:s, s:s?, s:s, s:f}", "face_id",
                                          f->id, "external_id", f->external_id,
                                          "name", f->name, "similarity",
                                          api_json_score(c[k].sim)));
                store_face_clear(&c[k].face);
        }
        free(c);
        return out;
}

static void identify_item(struct batch *b, struct item *it, size_t i)
{
        json_t *err = NULL;
        struct face_list list = {0};

        if (!json_is_object(it->in)) {
                it->result = item_error(i, 400, "INVALID_ITEM", NULL,
                                        "Each item must be a JSON object.");
                return;
        }
        err = item_unknown(it->in, i, identify_item_fields);
        if (err || !item_analyze(b, it->in, i, FACE_WANT_EMBEDDING,
                                 (int)b->max_faces, &list, NULL, &err)) {
                it->result = err;
                return;
        }
        json_t *faces = json_array();
        for (int k = 0; k < list.count; k++) {
                const struct face *f = &list.faces[k];
                json_array_append_new(
                        faces,
                        json_pack("{s:o, s:f, s:o}", "box",
                                  api_json_box(&f->box), "detection_score",
                                  api_json_score(f->box.score), "candidates",
                                  candidates(b, f->embedding)));
        }
        it->result = json_pack("{s:I, s:b, s:i, s:o, s:i}", "index",
                               (json_int_t)i, "success", 1, "status", 200,
                               "faces", faces, "faces_detected", list.found);
        face_list_free(&list);
}

/*
 * The worker pool.
 */

/* Takes items until none is left. */
static void drain(struct batch *b)
{
        size_t i;
        while ((i = atomic_fetch_add(&b->next, 1)) < b->count)
                b->run(b, &b->items[i], i);
}

/* An extra worker: runs only with a gate slot of its own, so a batch
 * never runs more recognitions than the server allows. */
static void *extra_worker(void *arg)
{
        struct batch *b = arg;
        if (atomic_load(&b->next) >= b->count)
                return NULL;
        enum http_gate_result g = http_gate_acquire(server_gate);
        if (g != HTTP_GATE_OK) {
                log_debug("batch", "An extra batch worker got no slot (%d).",
                          (int)g);
                return NULL;
        }
        size_t first = atomic_load(&b->next);
        drain(b);
        log_debug("batch", "An extra batch worker took part from item %zu on.",
                  first);
        http_gate_release(server_gate);
        return NULL;
}

/* Runs every item; the handler's thread (holding the route's slot) works
 * too.  Returns when all are done. */
static void run_all(struct batch *b)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        size_t extra = cpus > 1 ? (size_t)cpus - 1 : 0;
        if (extra > MAX_WORKERS - 1)
                extra = MAX_WORKERS - 1;
        if (extra > b->count - 1)
                extra = b->count - 1;
        if (!server_gate)
                extra = 0;

        pthread_t th[MAX_WORKERS];
        size_t started = 0;
        for (size_t k = 0; k < extra; k++)
                if (pthread_create(&th[started], NULL, extra_worker, b) == 0)
                        started++;
        drain(b);
        for (size_t k = 0; k < started; k++)
                pthread_join(th[k], NULL);
}

static void release_json(void *p)
{
        json_decref(p);
}

/* The items of the body: {"items": [...]} or a bare array; in multipart a
 * text part "items" holding that JSON.  false after a 400. */
static bool read_items(struct http_request *req, size_t max, json_t **out)
{
        json_t *doc = http_request_json(req), *parsed = NULL;
        *out = NULL;
        if (!doc) {
                const struct http_part *p = http_request_part(req, "items");
                if (p && !p->filename)
                        doc = parsed = json_loadb((const char *)p->data, p->len,
                                                  JSON_REJECT_DUPLICATES, NULL);
                if (!doc) {
                        http_reply_error(req, 400, "MISSING_PARAMETER",
                                         "Send the items as a JSON array (in a "
                                         "JSON body, or a multipart text part "
                                         "named items).",
                                         "items");
                        return false;
                }
                http_request_defer(req, release_json, parsed);
        }
        json_t *items =
                json_is_array(doc) ? doc : json_object_get(doc, "items");
        if (!json_is_array(items)) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "items must be an array.", "items");
                return false;
        }
        if (json_array_size(items) == 0) {
                http_reply_error(req, 400, "EMPTY_BATCH",
                                 "items holds no item.", "items");
                return false;
        }
        if (json_array_size(items) > max) {
                http_reply_errorf(req, 400, "TOO_MANY_ITEMS", "items",
                                  "A batch takes at most %zu items; this one "
                                  "has %zu.",
                                  max, json_array_size(items));
                return false;
        }
        *out = items;
        return true;
}

/* Whether an item of items (a JSON array) names part as its image. */
static bool named_by_item(void *cls, const struct http_part *part)
{
        json_t *items = cls, *it;
        size_t i;

        json_array_foreach(items, i, it)
        {
                const char *image =
                        json_string_value(json_object_get(it, "image"));
                if (image && strcmp(image, part->name) == 0)
                        return true;
        }
        return false;
}

/*
 * Reads the items of a batch whose top level takes the fields known:
 * every other member of a JSON object is refused first (so that a typo
 * of items is named), then the items are read, then every multipart part
 * that is neither known nor the image of an item is refused.  false after
 * a 400.
 */
static bool read_batch(struct http_request *req, const char *const *known,
                       size_t max, json_t **items)
{
        if (http_request_json(req) && !api_input_only(req, known))
                return false;
        return read_items(req, max, items) &&
               api_input_only_parts(req, known, named_by_item, *items,
                                    " and the file parts its items name");
}

/* Runs b over items and answers with every result. */
static void answer(struct http_request *req, struct batch *b, json_t *items,
                   const struct api_idem *idem)
{
        b->count = json_array_size(items);
        b->items = http_request_alloc(req, b->count * sizeof *b->items);
        for (size_t i = 0; i < b->count; i++)
                b->items[i] = (struct item){json_array_get(items, i), NULL};
        atomic_init(&b->next, 0);
        run_all(b);

        json_t *results = json_array();
        size_t ok = 0;
        for (size_t i = 0; i < b->count; i++) {
                json_t *r = b->items[i].result;
                if (!r)
                        r = item_error(i, 500, "INTERNAL_ERROR", NULL,
                                       "The item could not be processed.");
                ok += json_is_true(json_object_get(r, "success"));
                json_array_append_new(results, r);
        }
        log_write(LOG_INFO, "batch", http_request_id(req),
                  "A batch of %zu items in collection %s: %zu succeeded.",
                  b->count, b->key->coll.id, ok);
        json_t *data = json_pack("{s:I, s:I, s:o}", "succeeded", (json_int_t)ok,
                                 "failed", (json_int_t)(b->count - ok),
                                 "results", results);
        if (idem)
                api_idem_reply(req, b->api, idem, 200, data);
        else
                http_reply_data(req, 200, data);
}

static void handle_enroll(struct http_request *req, void *userdata)
{
        struct batch b = {.api = userdata, .req = req, .run = enroll_item};
        struct api_idem idem;
        json_t *items;

        static const char *const known[] = {"items", NULL};
        b.key = keyauth_key(req);
        if (!read_batch(req, known, BATCH_ENROLL_MAX, &items) ||
            !api_idem_begin(req, b.api, b.key->coll.id, &idem))
                return;
        answer(req, &b, items, &idem);
}

static void handle_identify(struct http_request *req, void *userdata)
{
        struct batch b = {.api = userdata, .req = req, .run = identify_item};
        struct api_idem idem;
        json_t *items;

        /* Options for every image, as on POST /identify. */
        static const char *const known[] = {"items", "max_faces", "top_k",
                                            "threshold", NULL};
        b.key = keyauth_key(req);
        if (!read_batch(req, known, BATCH_IDENTIFY_MAX, &items) ||
            !api_input_int(req, "max_faces", 10, 1, 100, &b.max_faces) ||
            !api_input_int(req, "top_k", 5, 1, 50, &b.top_k) ||
            !api_input_double(req, "threshold", b.key->coll.match_threshold,
                              0.0, 1.0, &b.threshold) ||
            !api_idem_begin(req, b.api, b.key->coll.id, &idem))
                return;
        answer(req, &b, items, &idem);
}

/*
 * POST /api/v1/faces/batch-delete
 */

/* The strings of selector member name: true with *out (NULL when absent),
 * or false after a 400 naming the bad element. */
static bool id_list(struct http_request *req, json_t *body, const char *name,
                    json_t **out)
{
        json_t *v = json_object_get(body, name);
        *out = NULL;
        if (!v || json_is_null(v))
                return true;
        if (!json_is_array(v)) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "%s must be an array of strings.", name);
                return false;
        }
        if (json_array_size(v) > BATCH_DELETE_MAX) {
                http_reply_errorf(req, 400, "TOO_MANY_ITEMS", name,
                                  "%s holds more than %d entries.", name,
                                  BATCH_DELETE_MAX);
                return false;
        }
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
                if (!json_is_string(x) || json_string_length(x) == 0 ||
                    json_string_length(x) >= 256) {
                        char param[64];
                        snprintf(param, sizeof param, "%s[%zu]", name, i);
                        http_reply_errorf(req, 400, "INVALID_PARAMETER", param,
                                          "%s must be a non-empty string of at "
                                          "most 255 bytes.",
                                          param);
                        return false;
                }
        }
        *out = v;
        return true;
}

/* Whether the first i strings of arr hold the i-th one already. */
static bool seen_before(json_t *arr, size_t i)
{
        const char *s = json_string_value(json_array_get(arr, i));
        for (size_t j = 0; j < i; j++)
                if (strcmp(s, json_string_value(json_array_get(arr, j))) == 0)
                        return true;
        return false;
}

/* Deletes one face from the store and the index in one step. */
static enum store_status delete_one(struct api *api, const char *collection,
                                    const char *id)
{
        index_write_lock(api->index);
        enum store_status st = store_face_delete(api->store, collection, id);
        if (st == STORE_OK)
                index_remove(api->index, collection, id);
        index_unlock(api->index);
        return st;
}

/* Deletes every face of external id ext; adds their ids to deleted.
 * Returns how many, or -1 on a store failure. */
static long delete_external(struct api *api, const char *collection,
                            const char *ext, json_t *deleted)
{
        long n = 0;
        while (1) {
                /* Always the first page: what it held is gone afterwards. */
                struct store_face_page page = {0};
                if (store_face_list(api->store, collection, ext, NULL, 100,
                                    &page) != STORE_OK)
                        return -1;
                int count = page.count;
                for (int i = 0; i < page.count; i++) {
                        enum store_status st =
                                delete_one(api, collection, page.faces[i].id);
                        if (st == STORE_OK) {
                                json_array_append_new(
                                        deleted, json_string(page.faces[i].id));
                                n++;
                        } else if (st != STORE_NOT_FOUND) {
                                store_face_page_clear(&page);
                                return -1;
                        }
                }
                store_face_page_clear(&page);
                if (count == 0)
                        return n;
        }
}

static void handle_batch_delete(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const char *coll = keyauth_key(req)->coll.id;
        struct api_idem idem;
        json_t *body, *ids, *exts;

        /* The selector: ids and/or external_ids, never empty; a misspelt
         * member is named, not taken for an empty selector. */
        static const char *const known[] = {"ids", "external_ids", NULL};
        if (!http_body_object(req, &body) || !api_input_only(req, known) ||
            !id_list(req, body, "ids", &ids) ||
            !id_list(req, body, "external_ids", &exts))
                return;
        if (json_array_size(ids) + json_array_size(exts) == 0) {
                http_reply_error(req, 400, "EMPTY_SELECTOR",
                                 "Name the faces to delete in ids or "
                                 "external_ids; an empty selector deletes "
                                 "nothing.",
                                 "ids");
                return;
        }

        /* A retry with the same Idempotency-Key gets the first answer, not
         * a list of faces that are no longer there. */
        if (!api_idem_begin(req, api, coll, &idem))
                return;

        /* Each selector on its own; repeats count once. */
        json_t *deleted = json_array(), *missing_ids = json_array();
        json_t *missing_exts = json_array();
        for (size_t i = 0; i < json_array_size(ids); i++) {
                if (seen_before(ids, i))
                        continue;
                json_t *id = json_array_get(ids, i);
                enum store_status st =
                        delete_one(api, coll, json_string_value(id));
                if (st == STORE_OK)
                        json_array_append(deleted, id);
                else if (st == STORE_NOT_FOUND)
                        json_array_append(missing_ids, id);
                else
                        goto failed;
        }
        for (size_t i = 0; i < json_array_size(exts); i++) {
                if (seen_before(exts, i))
                        continue;
                json_t *ext = json_array_get(exts, i);
                long n = delete_external(api, coll, json_string_value(ext),
                                         deleted);
                if (n < 0)
                        goto failed;
                if (n == 0)
                        json_array_append(missing_exts, ext);
        }
        log_write(LOG_INFO, "batch", http_request_id(req),
                  "Deleted %zu faces of collection %s in one batch.",
                  json_array_size(deleted), coll);
        api_idem_reply(req, api, &idem, 200,
                       json_pack("{s:I, s:o, s:{s:o, s:o}}", "deleted_count",
                                 (json_int_t)json_array_size(deleted),
                                 "deleted", deleted, "not_found", "ids",
                                 missing_ids, "external_ids", missing_exts));
        return;
failed:
        /* What was deleted stays deleted; say so. */
        log_write(LOG_ERROR, "batch", http_request_id(req),
                  "A batch delete in collection %s failed after %zu faces.",
                  coll, json_array_size(deleted));
        http_reply_error_ex(req, 500, "INTERNAL_ERROR",
                            "The store failed during the batch; the faces "
                            "listed were deleted.",
                            NULL, json_pack("{s:o}", "deleted", deleted));
        json_decref(missing_ids);
        json_decref(missing_exts);
}

void batch_register(struct api *api, struct http_server *srv, size_t max_body)
{
        static const struct {
                const char *pattern;
                http_handler_fn handler;
                unsigned flags;
        } routes[] = {
                {"/api/v1/faces/batch", handle_enroll,
                 HTTP_BODY_JSON | HTTP_BODY_JSON_ARRAY | HTTP_BODY_MULTIPART |
                         HTTP_ROUTE_GATED},
                {"/api/v1/faces/batch-delete", handle_batch_delete,
                 HTTP_BODY_JSON | HTTP_ROUTE_OFFLOAD},
                {"/api/v1/identify/batch", handle_identify,
                 HTTP_BODY_JSON | HTTP_BODY_JSON_ARRAY | HTTP_BODY_MULTIPART |
                         HTTP_ROUTE_GATED},
        };
        server_gate = http_server_gate(srv);
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
                struct http_route *r =
                        http_route(srv, "POST", routes[i].pattern,
                                   routes[i].handler, routes[i].flags, api);
                http_route_set_before(r, keyauth_before, api->keyauth);
                http_route_set_max_body(r, max_body ? max_body : 128u << 20);
        }
}
