/*
 * api.c - registration of the face API, the index loaded at start, and
 * the helpers every handler uses: JSON views, engine runs, idempotency.
 */
#include "api/api.h"
#include "api/api_faces.h"
#include "api/api_input.h"
#include "api/api_recognize.h"
#include "api/batch.h"
#include "api/export.h"
#include "face/timing.h"
#include "http/metrics.h"
#include "util/log.h"

#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Every group of routes; a new group adds one line. */
static const struct {
        const struct api_route *routes;
        const size_t *count;
} route_groups[] = {
        {api_faces_routes, &api_faces_nroutes},
        {api_recognize_routes, &api_recognize_nroutes},
};

struct api_idem_slot {
        struct api_idem_slot *next;
        struct api *api;
        char collection[STORE_ID_MAX];
        char *key;
};

/* Adds one stored face to the index while loading. */
static int load_face(void *ctx, const struct store_face *f)
{
        return index_add(ctx, f->collection_id, f->id, f->embedding);
}

/* What api_exact needs: where the faces are, and the query. */
struct exact_ctx {
        struct store *store;
        const char *collection;
        const float *emb;
};

/* index_exact_fn over the store's float32 embeddings. */
static int api_exact(void *ctx, const char *face_id, float *sim)
{
        const struct exact_ctx *x = ctx;
        struct store_face f;

        if (store_face_get(x->store, x->collection, face_id, &f) != STORE_OK)
                return -1;
        *sim = face_similarity(x->emb, f.embedding);
        store_face_clear(&f);
        return 0;
}

int api_search(struct api *api, const char *collection, const float *emb, int k,
               float min_sim, struct index_hit *hits)
{
        struct exact_ctx x = {api->store, collection, emb};
        return index_search(api->index, collection, emb, k, min_sim, api_exact,
                            &x, hits);
}

/* /metrics: the faces stored, counted when scraped. */
static void scrape_faces(void *userdata)
{
        struct api *api = userdata;
        int64_t n = 0;
        if (store_face_count(api->store, &n) == STORE_OK)
                http_metrics_gauge_set("frapi_faces_stored", NULL, (double)n);
}

int api_init(struct api *api, struct store *s, struct face_engine *eng,
             const uint8_t pepper[APIKEY_PEPPER_LEN], char *err, size_t errlen)
{
        memset(api, 0, sizeof *api);
        api->store = s;
        api->engine = eng;
        pthread_mutex_init(&api->idem_lock, NULL);
        if (eng)
                api->limits = face_engine_config(eng)->limits;
        else
                face_image_limits_default(&api->limits);

        api->keyauth = keyauth_new(s, pepper);
        api->index = index_new();
        if (!api->keyauth || !api->index) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }

        /* Every stored face goes into memory before the first request. */
        if (store_face_each(s, load_face, api->index) != STORE_OK) {
                snprintf(err, errlen,
                         "loading the faces into the index failed");
                goto fail;
        }
        log_info("api", "Loaded the index: %zu bytes in memory.",
                 index_memory(api->index));
        http_metrics_help("frapi_faces_stored", "Faces stored, all "
                                                "collections together.");
        http_metrics_on_scrape(scrape_faces, api);
        return 0;
fail:
        api_fini(api);
        return -1;
}

void api_fini(struct api *api)
{
        keyauth_free(api->keyauth);
        index_free(api->index);
        pthread_mutex_destroy(&api->idem_lock);
        api->keyauth = NULL;
        api->index = NULL;
}

void api_register(struct api *api, struct http_server *srv)
{
        for (size_t g = 0; g < sizeof route_groups / sizeof route_groups[0];
             g++) {
                for (size_t i = 0; i < *route_groups[g].count; i++) {
                        const struct api_route *r = &route_groups[g].routes[i];
                        struct http_route *hr =
                                http_route(srv, r->method, r->pattern,
                                           r->handler, r->flags, api);
                        http_route_set_before(hr, keyauth_before, api->keyauth);
                }
        }
        batch_register(api, srv, api->max_batch_body);
        export_register(api, srv, api->max_batch_body);
}

/*
 * JSON views.
 */

/* Whole pixels: a face box is no more precise than that, and integers
 * print exactly. */
static json_t *px(float v)
{
        return json_integer((json_int_t)lrintf(v));
}

json_t *api_json_box(const struct face_box *b)
{
        return json_pack("{s:o, s:o, s:o, s:o}", "x", px(b->x1), "y", px(b->y1),
                         "width", px(b->x2 - b->x1), "height",
                         px(b->y2 - b->y1));
}

json_t *api_json_time(int64_t ms)
{
        char buf[40];
        struct tm tm;
        time_t secs = (time_t)(ms / 1000);
        gmtime_r(&secs, &tm);
        size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, sizeof buf - n, ".%03dZ", (int)(ms % 1000));
        return json_string(buf);
}

double api_json_score(float v)
{
        return round((double)v * 1000.0) / 1000.0;
}

json_t *api_json_face(const struct store_face *f)
{
        json_t *meta = json_loads(f->metadata, 0, NULL);
        return json_pack(
                "{s:s, s:s, s:s?, s:s, s:o, s:o, s:f, s:s, s:o, s:o}", "id",
                f->id, "collection_id", f->collection_id, "external_id",
                f->external_id, "name", f->name, "metadata",
                meta ? meta : json_object(), "box", api_json_box(&f->box),
                "quality", api_json_score(f->quality), "model_version",
                f->model_version, "created_at", api_json_time(f->created_ms),
                "updated_at", api_json_time(f->updated_ms));
}

json_t *api_json_reasons(unsigned reasons)
{
        const char *names[4];
        int n = face_quality_reason_names(reasons, names);
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
                json_array_append_new(arr, json_string(names[i]));
        return arr;
}

void api_reply_store(struct http_request *req, enum store_status st)
{
        api_reply_store_for(req, st, "id");
}

void api_reply_store_for(struct http_request *req, enum store_status st,
                         const char *param)
{
        if (st == STORE_NOT_FOUND) {
                http_reply_errorf(req, 404, "FACE_NOT_FOUND", param,
                                  "No face with this %s exists in the "
                                  "collection of this API key.",
                                  param);
                return;
        }
        log_write(LOG_ERROR, "api", http_request_id(req),
                  "A store operation failed: %s.", store_status_name(st));
        http_reply_error(req, 500, "INTERNAL_ERROR",
                         "The server could not reach its database.", NULL);
}

/* Observes one stage's milliseconds in the engine's /metrics histogram. */
static void observe_stage(const char *stage, double ms)
{
        char labels[32];
        snprintf(labels, sizeof labels, "stage=\"%s\"", stage);
        http_metrics_histogram_observe("frapi_engine_stage_seconds", labels,
                                       ms / 1000.0);
}

enum face_status api_engine_run(struct face_engine *eng,
                                const struct face_image *img, unsigned want,
                                int max_faces, struct face_list *out)
{
        struct face_timing t = {0};

        /* The engine adds each stage's time into t while it runs on this
         * thread; the whole run is timed here. */
        face_timing_record(&t);
        double t0 = face_timing_now();
        enum face_status st =
                face_engine_analyze(eng, img, want, max_faces, out);
        double total = face_timing_now() - t0;
        face_timing_record(NULL);

        observe_stage("analyze", total);
        observe_stage("detect", t.detect);
        if (want & FACE_WANT_LANDMARKS)
                observe_stage("landmarks", t.landmarks);
        if ((want & FACE_WANT_EMBEDDING) == FACE_WANT_EMBEDDING) {
                observe_stage("align", t.align);
                observe_stage("embed", t.embed);
        }
        if (want & FACE_WANT_LIVENESS)
                observe_stage("liveness", t.liveness);
        if (t.other > 0)
                observe_stage("attributes", t.other);
        return st;
}

/*
 * Running the engine.
 */

static void list_release(void *p)
{
        face_list_free(p);
}

bool api_analyze(struct http_request *req, struct api *api, const char *field,
                 unsigned want, int max_faces, const struct face_list **list)
{
        struct face_image *img = http_request_alloc(req, sizeof *img);
        struct face_list *out = http_request_alloc(req, sizeof *out);

        /* Both live in request memory: they are released at its end. */
        memset(out, 0, sizeof *out);
        *list = out;
        if (!api_input_image(req, field, &api->limits, img))
                return false;
        enum face_status st =
                api_engine_run(api->engine, img, want, max_faces, out);
        if (st != FACE_OK) {
                api_input_reply_face_status(req, st, field);
                return false;
        }
        http_request_defer(req, list_release, out);
        return true;
}

/* One engine run handed to a helper thread. */
struct engine_job {
        struct face_engine *engine;
        const struct face_image *img;
        unsigned want;
        int max_faces;
        struct face_list *out;
        enum face_status st;
};

static void *engine_job_run(void *arg)
{
        struct engine_job *job = arg;
        job->st = api_engine_run(job->engine, job->img, job->want,
                                 job->max_faces, job->out);
        return NULL;
}

bool api_analyze_pair(struct http_request *req, struct api *api,
                      const char *field_a, const char *field_b, unsigned want,
                      int max_faces, const struct face_list **a,
                      const struct face_list **b)
{
        struct face_image *img = http_request_alloc(req, 2 * sizeof *img);
        struct face_list *out = http_request_alloc(req, 2 * sizeof *out);
        struct engine_job job = {api->engine, &img[1], want,
                                 max_faces,   &out[1], FACE_OK};
        pthread_t tid;

        /* Decode both first: a bad image is answered before any engine
         * time is spent. */
        memset(out, 0, 2 * sizeof *out);
        *a = &out[0];
        *b = &out[1];
        if (!api_input_image(req, field_a, &api->limits, &img[0]) ||
            !api_input_image(req, field_b, &api->limits, &img[1]))
                return false;

        /* The second image on a helper thread (or here, if none starts). */
        bool threaded = pthread_create(&tid, NULL, engine_job_run, &job) == 0;
        enum face_status st =
                api_engine_run(api->engine, &img[0], want, max_faces, &out[0]);
        if (threaded)
                pthread_join(tid, NULL);
        else
                engine_job_run(&job);
        http_request_defer(req, list_release, &out[0]);
        http_request_defer(req, list_release, &out[1]);
        if (st != FACE_OK || job.st != FACE_OK) {
                api_input_reply_face_status(req, st != FACE_OK ? st : job.st,
                                            st != FACE_OK ? field_a : field_b);
                return false;
        }
        return true;
}

/*
 * Idempotency.
 */

/* A digest of the route and what the client sent, to tell a retry from
 * a different request under the same key. */
static void request_digest(struct http_request *req, uint8_t out[32])
{
        crypto_generichash_state h;
        size_t len = 0, n = 0;
        crypto_generichash_init(&h, NULL, 0, 32);
        const char *route = http_request_route(req);
        crypto_generichash_update(&h, (const unsigned char *)route,
                                  strlen(route) + 1);
        const unsigned char *body = http_request_body(req, &len);
        if (body)
                crypto_generichash_update(&h, body, len);
        const struct http_part *parts = http_request_parts(req, &n);
        for (size_t i = 0; i < n; i++) {
                uint64_t plen = parts[i].len;
                crypto_generichash_update(&h,
                                          (const unsigned char *)parts[i].name,
                                          strlen(parts[i].name) + 1);
                crypto_generichash_update(&h, (const unsigned char *)&plen,
                                          sizeof plen);
                crypto_generichash_update(&h, parts[i].data, parts[i].len);
        }
        crypto_generichash_final(&h, out, 32);
}

static void idem_release(void *p)
{
        struct api_idem_slot *slot = p;
        struct api *api = slot->api;
        pthread_mutex_lock(&api->idem_lock);
        for (struct api_idem_slot **pp = &api->idem_inflight; *pp;
             pp = &(*pp)->next) {
                if (*pp == slot) {
                        *pp = slot->next;
                        break;
                }
        }
        pthread_mutex_unlock(&api->idem_lock);
        free(slot->key);
        free(slot);
}

/* Marks (collection, key) as in flight; false when it already is. */
static bool idem_claim(struct http_request *req, struct api *api,
                       const struct api_idem *idem)
{
        struct api_idem_slot *slot = calloc(1, sizeof *slot);
        bool ok = true;
        if (!slot || !(slot->key = strdup(idem->key))) {
                free(slot);
                return false;
        }
        slot->api = api;
        memcpy(slot->collection, idem->collection, STORE_ID_MAX);
        pthread_mutex_lock(&api->idem_lock);
        for (struct api_idem_slot *s = api->idem_inflight; s && ok; s = s->next)
                ok = strcmp(s->key, idem->key) != 0 ||
                     strcmp(s->collection, idem->collection) != 0;
        if (ok) {
                slot->next = api->idem_inflight;
                api->idem_inflight = slot;
        }
        pthread_mutex_unlock(&api->idem_lock);
        if (!ok) {
                free(slot->key);
                free(slot);
                return false;
        }
        http_request_defer(req, idem_release, slot);
        return true;
}

bool api_idem_begin(struct http_request *req, struct api *api,
                    const char *collection, struct api_idem *idem)
{
        struct store_idem rec;

        /* No header: nothing to remember. */
        memset(idem, 0, sizeof *idem);
        const char *key = http_request_header(req, "Idempotency-Key");
        if (!key)
                return true;
        size_t len = strlen(key);
        bool printable = len >= 1 && len <= 255;
        for (size_t i = 0; i < len && printable; i++)
                printable = key[i] > 0x20 && key[i] < 0x7f;
        if (!printable) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "The Idempotency-Key header must be 1 to 255 "
                                 "visible ASCII characters.",
                                 "Idempotency-Key");
                return false;
        }
        idem->key = key;
        snprintf(idem->collection, sizeof idem->collection, "%s", collection);
        request_digest(req, idem->hash);

        /* One request per key at a time. */
        if (!idem_claim(req, api, idem)) {
                http_reply_error(req, 409, "IDEMPOTENCY_KEY_IN_USE",
                                 "A request with this Idempotency-Key is still "
                                 "being processed; retry in a moment.",
                                 "Idempotency-Key");
                return false;
        }

        /* A recorded answer is replayed when the request is the same. */
        enum store_status st =
                store_idem_get(api->store, collection, key, &rec);
        if (st == STORE_NOT_FOUND)
                return true;
        if (st != STORE_OK) {
                api_reply_store(req, st);
                return false;
        }
        if (sodium_memcmp(rec.request_hash, idem->hash, 32) != 0) {
                store_idem_clear(&rec);
                http_reply_error(
                        req, 409, "IDEMPOTENCY_KEY_REUSED",
                        "This Idempotency-Key was used with a different "
                        "request.",
                        "Idempotency-Key");
                return false;
        }
        json_t *data = json_loads(rec.body, 0, NULL);
        http_reply_header(req, "Idempotent-Replayed", "true");
        http_reply_data(req, rec.status, data);
        store_idem_clear(&rec);
        return false;
}

void api_idem_reply(struct http_request *req, struct api *api,
                    const struct api_idem *idem, int status, json_t *data)
{
        /* Record first, so a retry arriving after the answer finds it. */
        if (idem->key) {
                struct store_idem rec = {.status = status};
                memcpy(rec.request_hash, idem->hash, 32);
                rec.body =
                        json_dumps(data, JSON_COMPACT | JSON_REAL_PRECISION(7));
                if (!rec.body || store_idem_put(api->store, idem->collection,
                                                idem->key, &rec) != STORE_OK)
                        log_write(
                                LOG_WARN, "api", http_request_id(req),
                                "An idempotent answer could not be recorded.");
                free(rec.body);
        }
        http_reply_data(req, status, data);
}
