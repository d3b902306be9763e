/*
 * api_faces.c - POST/GET /api/v1/faces, GET/PATCH/DELETE
 * /api/v1/faces/{id}.
 */
#include "api/api_faces.h"
#include "api/api_input.h"
#include "util/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Faces looked at in one enrollment photo; more is a crowd, not a
 * portrait. */
#define ENROLL_MAX_FACES 20
/* Similarity above which two photos of one person are near-identical. */
#define NEAR_IDENTICAL 0.95f
#define LIST_DEFAULT   50
#define LIST_MAX       500

static bool same_str(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* {box, quality_reasons} of every face found, for MULTIPLE_FACES. */
static json_t *faces_summary(const struct face_list *list)
{
        json_t *arr = json_array();
        for (int i = 0; i < list->count; i++) {
                const struct face *f = &list->faces[i];
                json_array_append_new(
                        arr, json_pack("{s:o, s:o}", "box",
                                       api_json_box(&f->box), "quality_reasons",
                                       api_json_reasons(f->quality.reasons)));
        }
        return arr;
}

/*
 * Picks the face to enroll, or answers 422.  The face enrolled is the
 * largest one, and it must pass the quality gate; another face that
 * passes too makes the photo ambiguous (MULTIPLE_FACES), unless
 * face_selection=largest says which.  A smaller face that passes while
 * the largest fails is not taken: in a portrait it is a bystander or the
 * cut edge of one, not the person meant.
 */
static const struct face *choose_face(struct http_request *req,
                                      const struct face_list *list,
                                      bool largest)
{
        const struct face *pick;
        int passing = 0;

        if (list->count == 0) {
                http_reply_error(req, 422, "NO_FACE_DETECTED",
                                 "No face was found in the image.", "image");
                return NULL;
        }
        for (int i = 0; i < list->count; i++)
                passing += list->faces[i].quality.reasons == 0;

        /* Several good faces: the client must say which. */
        if (!largest && passing > 1) {
                http_reply_error_ex(
                        req, 422, "MULTIPLE_FACES",
                        "The image holds more than one face; send one face, or "
                        "set face_selection=largest.",
                        "image",
                        json_pack("{s:o}", "faces", faces_summary(list)));
                return NULL;
        }
        pick = &list->faces[0];
        if (pick->quality.reasons) {
                http_reply_error_ex(
                        req, 422, "FACE_QUALITY_TOO_LOW",
                        "The face is not good enough to enroll.", "image",
                        json_pack("{s:o, s:o, s:f}", "reasons",
                                  api_json_reasons(pick->quality.reasons),
                                  "box", api_json_box(&pick->box), "quality",
                                  (double)pick->quality.score));
                return NULL;
        }
        return pick;
}

/*
 * The faces already enrolled that look like emb: those of another
 * external_id above the threshold (possible_duplicate_of), and those of
 * the same external_id that are near-identical photos.
 */
static void find_duplicates(struct api *api, const char *coll, const float *emb,
                            float threshold, const char *external_id,
                            json_t *others, json_t *same)
{
        struct index_hit hits[10];
        struct store_face f;

        index_read_lock(api->index);
        int n = api_search(api, coll, emb, 10, threshold, hits);
        for (int i = 0; i < n; i++) {
                if (store_face_get(api->store, coll, hits[i].face_id, &f) !=
                    STORE_OK)
                        continue;
                float sim = face_similarity(emb, f.embedding);
                json_t *item =
                        json_pack("{s:s, s:s?, s:s, s:f}", "face_id", f.id,
                                  "external_id", f.external_id, "name", f.name,
                                  "similarity", (double)sim);
                if (!same_str(f.external_id, external_id) ||
                    (!external_id && !f.external_id))
                        json_array_append_new(others, item);
                else if (sim >= NEAR_IDENTICAL)
                        json_array_append_new(same, item);
                else
                        json_decref(item);
                store_face_clear(&f);
        }
        index_unlock(api->index);
}

static void enroll(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        const char *name, *ext, *meta, *sel;
        bool check_live;
        struct api_idem idem;
        const struct face_list *list;
        struct store_face f = {0};

        /* The fields first: a bad one costs no engine time. */
        static const char *const known[] = {
                "image",          "name",           "external_id", "metadata",
                "face_selection", "check_liveness", NULL};
        if (!api_input_only(req, known) ||
            !api_input_text(req, "name", true, API_NAME_MAX, &name) ||
            !api_input_text(req, "external_id", false, API_EXTERNAL_ID_MAX,
                            &ext) ||
            !api_input_metadata(req, "metadata", &meta) ||
            !api_input_text(req, "face_selection", false, 16, &sel) ||
            !api_input_bool(req, "check_liveness", false, &check_live))
                return;
        if (sel && strcmp(sel, "single") != 0 && strcmp(sel, "largest") != 0) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "face_selection must be single or largest.",
                                 "face_selection");
                return;
        }
        if (!api_idem_begin(req, api, k->coll.id, &idem))
                return;

        /* The face: exactly one good one, alive when asked. */
        unsigned want = FACE_WANT_EMBEDDING | FACE_WANT_QUALITY |
                        (check_live ? FACE_WANT_LIVENESS : 0);
        if (!api_analyze(req, api, "image", want, ENROLL_MAX_FACES, &list))
                return;
        const struct face *face =
                choose_face(req, list, sel && strcmp(sel, "largest") == 0);
        if (!face)
                return;
        float live_thr = face_engine_config(api->engine)->liveness_threshold;
        if (check_live && !face->live) {
                http_reply_error_ex(
                        req, 422, "LIVENESS_CHECK_FAILED",
                        "The face does not look like a live person.", "image",
                        json_pack("{s:f, s:f}", "liveness_score",
                                  (double)face->liveness, "threshold",
                                  (double)live_thr));
                return;
        }

        const unsigned char *orig = NULL;
        size_t orig_len = 0;
        if (k->coll.keep_originals && /* kept for re-embedding later */
            !api_input_image_bytes(req, "image", true, &orig, &orig_len))
                return;

        /* Who else it looks like, before it joins them. */
        json_t *others = json_array(), *same = json_array();
        find_duplicates(api, k->coll.id, face->embedding,
                        k->coll.match_threshold, ext, others, same);

        /* Commit and index in one step under the index's write lock. */
        snprintf(f.collection_id, sizeof f.collection_id, "%s", k->coll.id);
        f.name = (char *)name;
        f.external_id = (char *)ext;
        f.metadata = (char *)(meta ? meta : "{}");
        memcpy(f.embedding, face->embedding, sizeof f.embedding);
        f.box = face->box;
        f.quality = face->quality.score;
        index_write_lock(api->index);
        enum store_status st =
                store_face_insert(api->store, &f, orig, orig_len);
        if (st == STORE_OK &&
            index_add(api->index, f.collection_id, f.id, f.embedding) != 0) {
                store_face_delete(api->store, f.collection_id, f.id);
                st = STORE_ERROR;
        }
        index_unlock(api->index);
        if (st != STORE_OK) {
                json_decref(others);
                json_decref(same);
                api_reply_store(req, st);
                return;
        }
        log_write(LOG_INFO, "api", http_request_id(req),
                  "Enrolled face %s in collection %s.", f.id, f.collection_id);

        /* The answer: the face, and what the client should know. */
        json_t *data = api_json_face(&f);
        json_object_set_new(data, "faces_detected", json_integer(list->found));
        json_object_set_new(data, "possible_duplicate_of", others);
        json_object_set_new(data, "near_identical_to", same);
        if (check_live)
                json_object_set_new(data, "liveness",
                                    json_pack("{s:f, s:b, s:f}", "score",
                                              (double)face->liveness, "live",
                                              face->live, "threshold",
                                              (double)live_thr));
        api_idem_reply(req, api, &idem, 201, data);
}

/* Reads ?limit: 1 or more, capped at LIST_MAX; anything else is a 400. */
static bool list_limit(struct http_request *req, long *out)
{
        const char *t = http_request_query(req, "limit");
        *out = LIST_DEFAULT;
        if (!t)
                return true;
        errno = 0;
        long v = http_decimal_ok(t, false) ? strtol(t, NULL, 10) : 0;
        if (v < 1) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "limit must be a whole number of 1 or more "
                                 "(at most 500 are returned).",
                                 "limit");
                return false;
        }
        *out = errno == ERANGE || v > LIST_MAX ? LIST_MAX : v;
        return true;
}

/* Reads ?cursor (an opaque token from next_cursor) into a face id. */
static bool list_cursor(struct http_request *req, char id[STORE_ID_MAX],
                        bool *present)
{
        const char *t = http_request_query(req, "cursor");
        size_t len = 0;
        *present = t && *t;
        if (!*present)
                return true;
        if (sodium_base642bin((unsigned char *)id, STORE_ID_MAX - 1, t,
                              strlen(t), NULL, &len, NULL,
                              sodium_base64_VARIANT_URLSAFE_NO_PADDING) == 0 &&
            len > 5 && strncmp(id, "face_", 5) == 0) {
                id[len] = '\0';
                if (strspn(id + 5, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") ==
                    len - 5)
                        return true;
        }
        http_reply_error(req, 400, "INVALID_CURSOR",
                         "cursor is not a value returned as next_cursor.",
                         "cursor");
        return false;
}

static void list_faces(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        const char *ext;
        char cursor[STORE_ID_MAX];
        bool has_cursor;
        long limit;
        struct store_face_page page;

        if (!list_limit(req, &limit) ||
            !list_cursor(req, cursor, &has_cursor) ||
            !http_query_str(req, "external_id", false, API_EXTERNAL_ID_MAX,
                            &ext))
                return;
        if (ext && !api_input_utf8_ok(ext, strlen(ext))) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "external_id is not valid UTF-8.",
                                 "external_id");
                return;
        }

        enum store_status st =
                store_face_list(api->store, k->coll.id, ext,
                                has_cursor ? cursor : NULL, (int)limit, &page);
        if (st != STORE_OK) {
                api_reply_store(req, st);
                return;
        }

        /* The next cursor is the last id, made opaque. */
        json_t *faces = json_array(), *next = json_null();
        for (int i = 0; i < page.count; i++)
                json_array_append_new(faces, api_json_face(&page.faces[i]));
        if (page.more) {
                char b64[sodium_base64_ENCODED_LEN(
                        STORE_ID_MAX,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
                const char *last = page.faces[page.count - 1].id;
                sodium_bin2base64(b64, sizeof b64, (const unsigned char *)last,
                                  strlen(last),
                                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
                json_decref(next);
                next = json_string(b64);
        }
        store_face_page_clear(&page);
        http_reply_data(req, 200,
                        json_pack("{s:o, s:o, s:b}", "faces", faces,
                                  "next_cursor", next, "has_more",
                                  !json_is_null(next)));
}

static void get_face(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        struct store_face f;

        enum store_status st = store_face_get(
                api->store, k->coll.id, http_request_param(req, "id"), &f);
        if (st != STORE_OK) {
                api_reply_store(req, st);
                return;
        }
        http_reply_data(req, 200, api_json_face(&f));
        store_face_clear(&f);
}

static void patch_face(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        struct store_face v = {0}, out;
        unsigned fields = 0;
        const char *key;
        json_t *body, *val;

        /* Only known fields, and at least one of them. */
        if (!http_body_object(req, &body))
                return;
        json_object_foreach(body, key, val)
        {
                if (strcmp(key, "name") != 0 &&
                    strcmp(key, "external_id") != 0 &&
                    strcmp(key, "metadata") != 0) {
                        http_reply_errorf(
                                req, 400, "INVALID_PARAMETER", key,
                                "The field %s cannot be changed; send "
                                "name, external_id or metadata.",
                                key);
                        return;
                }
        }
        if (api_input_has(req, "name")) {
                if (!api_input_text(req, "name", true, API_NAME_MAX,
                                    (const char **)&v.name))
                        return;
                fields |= STORE_FACE_NAME;
        }
        if (api_input_has(req, "external_id")) {
                if (!api_input_text(req, "external_id", false,
                                    API_EXTERNAL_ID_MAX,
                                    (const char **)&v.external_id))
                        return;
                fields |= STORE_FACE_EXTERNAL_ID;
        }
        if (api_input_has(req, "metadata")) {
                if (!api_input_metadata(req, "metadata",
                                        (const char **)&v.metadata))
                        return;
                if (!v.metadata)
                        v.metadata = "{}";
                fields |= STORE_FACE_METADATA;
        }
        if (!fields) {
                http_reply_error(req, 400, "MISSING_PARAMETER",
                                 "Send at least one of name, external_id and "
                                 "metadata.",
                                 NULL);
                return;
        }

        enum store_status st = store_face_update(api->store, k->coll.id,
                                                 http_request_param(req, "id"),
                                                 fields, &v, &out);
        if (st != STORE_OK) {
                api_reply_store(req, st);
                return;
        }
        http_reply_data(req, 200, api_json_face(&out));
        store_face_clear(&out);
}

static void delete_face(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        const char *id = http_request_param(req, "id");

        /* Store and index change together: no search sees one without the
         * other. */
        index_write_lock(api->index);
        enum store_status st = store_face_delete(api->store, k->coll.id, id);
        if (st == STORE_OK)
                index_remove(api->index, k->coll.id, id);
        index_unlock(api->index);
        if (st != STORE_OK) {
                api_reply_store(req, st);
                return;
        }
        log_write(LOG_INFO, "api", http_request_id(req),
                  "Deleted face %s from collection %s.", id, k->coll.id);
        http_reply_data(req, 200,
                        json_pack("{s:s, s:b}", "id", id, "deleted", 1));
}

const struct api_route api_faces_routes[] = {
        {"POST", "/api/v1/faces", enroll,
         HTTP_BODY_JSON | HTTP_BODY_MULTIPART | HTTP_ROUTE_GATED},
        {"GET", "/api/v1/faces", list_faces, 0},
        {"GET", "/api/v1/faces/{id}", get_face, 0},
        {"PATCH", "/api/v1/faces/{id}", patch_face, HTTP_BODY_JSON},
        {"DELETE", "/api/v1/faces/{id}", delete_face, 0},
};

const size_t api_faces_nroutes =
        sizeof api_faces_routes / sizeof api_faces_routes[0];
