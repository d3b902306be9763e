/*
 * api_recognize.c - POST /api/v1/verify, /identify, /liveness, /detect.
 */
#include "api/api_recognize.h"
#include "api/api_input.h"
#include "util/log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Faces one image of verify looks at; the largest is compared. */
#define VERIFY_MAX_FACES 20

/* The fields of liveness and detect: an image and how many faces. */
static const char *const image_fields[] = {"image", "max_faces", NULL};

/* The threshold of this request: the field, or the collection's. */
static bool threshold(struct http_request *req, const struct keyauth_key *k,
                      double *out)
{
        if (!api_input_double(req, "threshold", k->coll.match_threshold, 0.0,
                              1.0, out))
                return false;

        /* A float32 default reads 0.30000001; four decimals are plenty. */
        *out = round(*out * 1e4) / 1e4;
        return true;
}

/* {box, faces_detected, largest_used} of the image side of a verify. */
static json_t *verify_side(const struct face_list *l)
{
        return json_pack("{s:o, s:i, s:b}", "box",
                         api_json_box(&l->faces[0].box), "faces_detected",
                         l->found, "largest_used", l->found > 1);
}

/* 422 for an image of a verify in which no face was found. */
static bool need_face(struct http_request *req, const struct face_list *l,
                      const char *field)
{
        if (l->count > 0)
                return true;
        http_reply_errorf(req, 422, "NO_FACE_DETECTED", field,
                          "No face was found in %s.", field);
        return false;
}

/*
 * The stored side of a verify: face_id's embedding, or the best of
 * external_id's faces against emb.  Fills *sim and the JSON description.
 */
static bool verify_stored(struct http_request *req, struct api *api,
                          const char *coll, const char *face_id,
                          const char *ext, const float *emb, float *sim,
                          json_t **side)
{
        struct store_face f;
        struct store_face_page page;
        enum store_status st;

        if (face_id) {
                st = store_face_get(api->store, coll, face_id, &f);
                if (st != STORE_OK) {
                        api_reply_store_for(req, st, "face_id");
                        return false;
                }
                *sim = face_similarity(emb, f.embedding);
                *side = json_pack("{s:s, s:s?, s:s}", "face_id", f.id,
                                  "external_id", f.external_id, "name", f.name);
                store_face_clear(&f);
                return true;
        }

        /* The person's best-matching face decides. */
        st = store_face_list(api->store, coll, ext, NULL, 500, &page);
        if (st != STORE_OK) {
                api_reply_store(req, st);
                return false;
        }
        if (page.count == 0) {
                store_face_page_clear(&page);
                http_reply_error(req, 404, "FACE_NOT_FOUND",
                                 "No face with this external_id exists in the "
                                 "collection of this API key.",
                                 "external_id");
                return false;
        }
        int best = 0;
        *sim = -1.0f;
        for (int i = 0; i < page.count; i++) {
                float s = face_similarity(emb, page.faces[i].embedding);
                if (s > *sim) {
                        *sim = s;
                        best = i;
                }
        }
        *side = json_pack("{s:s, s:s, s:i}", "face_id", page.faces[best].id,
                          "external_id", ext, "faces_compared", page.count);
        store_face_page_clear(&page);
        return true;
}

static void verify(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        const char *face_id, *ext;
        const struct face_list *a, *b = NULL;
        double thr;
        float sim;
        json_t *side_b;

        /* What to compare image_a with: exactly one of three things. */
        static const char *const known[] = {"image_a",   "image_b",
                                            "face_id",   "external_id",
                                            "threshold", NULL};
        bool has_b = api_input_has(req, "image_b");
        if (!api_input_require_image(req, "image_a") ||
            !api_input_only(req, known) ||
            !api_input_text(req, "face_id", false, STORE_ID_MAX - 1,
                            &face_id) ||
            !api_input_text(req, "external_id", false, API_EXTERNAL_ID_MAX,
                            &ext) ||
            !threshold(req, k, &thr))
                return;
        int sides = has_b + (face_id != NULL) + (ext != NULL);
        if (sides != 1) {
                http_reply_error(req, 400,
                                 sides ? "INVALID_PARAMETER"
                                       : "MISSING_PARAMETER",
                                 "Send image_a with exactly one of image_b, "
                                 "face_id and external_id.",
                                 sides ? "image_b" : "image_b");
                return;
        }

        /* The images: each must show a face; the largest one counts. */
        if (has_b ? !api_analyze_pair(req, api, "image_a", "image_b",
                                      FACE_WANT_EMBEDDING, VERIFY_MAX_FACES, &a,
                                      &b)
                  : !api_analyze(req, api, "image_a", FACE_WANT_EMBEDDING,
                                 VERIFY_MAX_FACES, &a))
                return;
        if (!need_face(req, a, "image_a") ||
            (has_b && !need_face(req, b, "image_b")))
                return;

        if (has_b) {
                sim = face_similarity(a->faces[0].embedding,
                                      b->faces[0].embedding);
                side_b = verify_side(b);
        } else if (!verify_stored(req, api, k->coll.id, face_id, ext,
                                  a->faces[0].embedding, &sim, &side_b)) {
                return;
        }
        http_reply_data(req, 200,
                        json_pack("{s:f, s:b, s:f, s:o, s:o}", "similarity",
                                  api_json_score(sim), "match",
                                  sim >= (float)thr, "threshold", thr, "face_a",
                                  verify_side(a), "face_b", side_b));
}

/* One candidate of an identify, with its exact similarity. */
struct cand {
        struct store_face face;
        float sim;
};

/*
 * The candidates of one face: the exact top k of the index (similarities
 * from the store's float32 embeddings), read from the store under the
 * same read lock (so none was deleted in between), best first.
 */
static json_t *candidates(struct api *api, const char *coll, const float *emb,
                          int top_k, float thr, bool group)
{
        struct index_hit hits[INDEX_MAX_K];
        struct cand c[INDEX_MAX_K];
        int want = group ? INDEX_MAX_K : top_k;
        int n = 0;

        if (want > INDEX_MAX_K)
                want = INDEX_MAX_K;
        index_read_lock(api->index);
        int got = api_search(api, coll, emb, want, thr, hits);
        if (got < 0)
                log_error("api", "identify: out of memory searching %s", coll);
        for (int i = 0; i < got; i++) {
                if (store_face_get(api->store, coll, hits[i].face_id,
                                   &c[n].face) != STORE_OK)
                        continue;
                c[n++].sim = hits[i].similarity;
        }
        index_unlock(api->index);

        /* Plain: one entry per face.  Grouped: one per external_id, with
         * its best similarity and every matching face. */
        json_t *out = json_array();
        for (int i = 0; i < n; i++) {
                const struct store_face *f = &c[i].face;
                if (!group) {
                        if ((int)json_array_size(out) < top_k)
                                json_array_append_new(
                                        out,
                                        json_pack("{s:s, s:s?, s:s, s:f}",
                                                  "face_id", f->id,
                                                  "external_id", f->external_id,
                                                  "name", f->name, "similarity",
                                                  api_json_score(c[i].sim)));
                        continue;
                }
                json_t *g = NULL;
                size_t j;
                json_t *e;
                json_array_foreach(out, j, e)
                {
                        json_t *x = json_object_get(e, "external_id");
                        if (f->external_id && json_is_string(x) &&
                            strcmp(json_string_value(x), f->external_id) == 0)
                                g = e;
                }
                if (!g && (int)json_array_size(out) < top_k) {
                        g = json_pack("{s:s?, s:s, s:f, s:[]}", "external_id",
                                      f->external_id, "name", f->name,
                                      "similarity", api_json_score(c[i].sim),
                                      "face_ids");
                        json_array_append_new(out, g);
                }
                if (g)
                        json_array_append_new(json_object_get(g, "face_ids"),
                                              json_string(f->id));
        }
        for (int i = 0; i < n; i++)
                store_face_clear(&c[i].face);
        return out;
}

static void identify(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        const char *group_by;
        long max_faces, top_k;
        double thr;
        const struct face_list *list;

        static const char *const known[] = {"image",     "max_faces", "top_k",
                                            "threshold", "group_by",  NULL};
        if (!api_input_require_image(req, "image") ||
            !api_input_only(req, known) ||
            !api_input_int(req, "max_faces", 10, 1, 100, &max_faces) ||
            !api_input_int(req, "top_k", 5, 1, 50, &top_k) ||
            !threshold(req, k, &thr) ||
            !api_input_text(req, "group_by", false, 32, &group_by))
                return;
        if (group_by && strcmp(group_by, "external_id") != 0 &&
            strcmp(group_by, "face") != 0) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "group_by must be face or external_id.",
                                 "group_by");
                return;
        }
        bool group = group_by && strcmp(group_by, "external_id") == 0;
        if (!api_analyze(req, api, "image", FACE_WANT_EMBEDDING, (int)max_faces,
                         &list))
                return;

        /* Every face found, each with its own candidates. */
        json_t *faces = json_array();
        for (int i = 0; i < list->count; i++) {
                const struct face *f = &list->faces[i];
                json_t *cands = candidates(api, k->coll.id, f->embedding,
                                           (int)top_k, (float)thr, group);
                json_array_append_new(faces,
                                      json_pack("{s:o, s:f, s:o}", "box",
                                                api_json_box(&f->box),
                                                "detection_score",
                                                api_json_score(f->box.score),
                                                "candidates", cands));
        }
        http_reply_data(req, 200,
                        json_pack("{s:o, s:i, s:f, s:s}", "faces", faces,
                                  "faces_detected", list->found, "threshold",
                                  thr, "group_by",
                                  group ? "external_id" : "face"));
}

static void liveness(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        long max_faces;
        const struct face_list *list;

        if (!api_input_require_image(req, "image") ||
            !api_input_only(req, image_fields) ||
            !api_input_int(req, "max_faces", 10, 1, 100, &max_faces) ||
            !api_analyze(req, api, "image", FACE_WANT_LIVENESS, (int)max_faces,
                         &list))
                return;
        double thr = face_engine_config(api->engine)->liveness_threshold;
        json_t *faces = json_array();
        for (int i = 0; i < list->count; i++) {
                const struct face *f = &list->faces[i];
                json_array_append_new(
                        faces,
                        json_pack("{s:o, s:f, s:b, s:f}", "box",
                                  api_json_box(&f->box), "liveness_score",
                                  api_json_score(f->liveness), "live", f->live,
                                  "threshold", thr));
        }
        http_reply_data(req, 200,
                        json_pack("{s:o, s:i, s:f}", "faces", faces,
                                  "faces_detected", list->found, "threshold",
                                  thr));
}

static json_t *points(const struct face_point *p, int n)
{
        json_t *arr = json_array();
        for (int i = 0; i < n; i++)
                json_array_append_new(arr, json_pack("[f, f]",
                                                     round(p[i].x * 10) / 10,
                                                     round(p[i].y * 10) / 10));
        return arr;
}

static json_t *detect_face(const struct face *f)
{
        const struct face_quality *q = &f->quality;
        const struct face_attributes *a = &f->attr;
        return json_pack(
                "{s:o, s:f, s:o, s:o, s:{s:f, s:f, s:f, s:f, s:f, s:f, s:o, "
                "s:b}, s:{s:f, s:s, s:s, s:b, s:b}}",
                "box", api_json_box(&f->box), "detection_score",
                api_json_score(f->box.score), "landmarks",
                points(f->landmarks, FACE_LANDMARKS), "points5",
                points(f->points5, 5), "quality", "score",
                api_json_score(q->score), "size", api_json_score(q->size),
                "sharpness", api_json_score(q->sharpness), "yaw",
                api_json_score(q->yaw), "pitch", api_json_score(q->pitch),
                "roll", api_json_score(q->roll), "reasons",
                api_json_reasons(q->reasons), "passes", q->reasons == 0,
                "attributes", "age", api_json_score(a->age), "gender",
                a->gender ? a->gender : "unknown", "expression",
                a->expression ? a->expression : "unknown", "left_eye_open",
                a->left_eye_open, "right_eye_open", a->right_eye_open);
}

static void detect(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        long max_faces;
        const struct face_list *list;

        if (!api_input_require_image(req, "image") ||
            !api_input_only(req, image_fields) ||
            !api_input_int(req, "max_faces", 10, 1, 100, &max_faces) ||
            !api_analyze(req, api, "image",
                         FACE_WANT_QUALITY | FACE_WANT_ATTRIBUTES,
                         (int)max_faces, &list))
                return;
        json_t *faces = json_array();
        for (int i = 0; i < list->count; i++)
                json_array_append_new(faces, detect_face(&list->faces[i]));
        http_reply_data(req, 200,
                        json_pack("{s:o, s:i}", "faces", faces,
                                  "faces_detected", list->found));
}

#define IMAGE_BODY (HTTP_BODY_JSON | HTTP_BODY_MULTIPART | HTTP_ROUTE_GATED)

const struct api_route api_recognize_routes[] = {
        {"POST", "/api/v1/verify", verify, IMAGE_BODY},
        {"POST", "/api/v1/identify", identify, IMAGE_BODY},
        {"POST", "/api/v1/liveness", liveness, IMAGE_BODY},
        {"POST", "/api/v1/detect", detect, IMAGE_BODY},
};

const size_t api_recognize_nroutes =
        sizeof api_recognize_routes / sizeof api_recognize_routes[0];
