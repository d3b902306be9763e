/*
 * api_faces.c - POST/GET /api/v1/faces, GET/PATCH/DELETE
 * /api/v1/faces/{id}.
 */
#include "api/api_faces.h"
#include "api/api_input.h"
#include "api/enroll.h"
#include "util/log.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 50
#define LIST_MAX     500

static void enroll(struct http_request *req, void *userdata)
{
        struct api *api = userdata;
        const struct keyauth_key *k = keyauth_key(req);
        const char *name, *ext, *meta, *sel;
        bool check_live;
        struct api_idem idem;
        const struct face_list *list;

        /* The fields first: a bad one costs no engine time.  The image
         * only needs to be there yet. */
        static const char *const known[] = {
                "image",          "name",           "external_id", "metadata",
                "face_selection", "check_liveness", NULL};
        if (!api_input_require_image(req, "image") ||
            !api_input_only(req, known) ||
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

        struct enroll_request rq = {
                .key = k,
                .request_id = http_request_id(req),
                .name = name,
                .external_id = ext,
                .metadata = meta,
                .largest = sel && strcmp(sel, "largest") == 0,
                .check_liveness = check_live,
        };
        if (!api_analyze(req, api, "image", enroll_want(&rq), ENROLL_MAX_FACES,
                         &list))
                return;
        if (k->coll.keep_originals && /* kept for re-embedding later */
            !api_input_image_bytes(req, "image", true, &rq.original,
                                   &rq.original_len))
                return;
        struct enroll_refusal why;
        json_t *data = enroll_face(api, &rq, list, &why);
        if (!data) {
                if (why.code)
                        http_reply_error_ex(req, why.status, why.code,
                                            why.message, why.param,
                                            why.details);
                else
                        api_reply_store(req, why.store);
                return;
        }
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
        *present = t != NULL;
        if (!*present)
                return true;
        if (!*t) {
                /* Not "from the start": the client lost its cursor. */
                http_reply_error(req, 400, "INVALID_CURSOR",
                                 "cursor is empty; leave it out for the "
                                 "first page, or send next_cursor.",
                                 "cursor");
                return false;
        }
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
        static const char *const known[] = {"limit", "cursor", "external_id",
                                            NULL};

        if (!api_input_query_only(req, known) || !list_limit(req, &limit) ||
            !list_cursor(req, cursor, &has_cursor) ||
            !http_query_str(req, "external_id", false, API_EXTERNAL_ID_MAX,
                            &ext))
                return;

        /* An empty filter is a mistake, never "every face". */
        const char *raw_ext = http_request_query(req, "external_id");
        if (raw_ext && !*raw_ext) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "external_id is empty; leave it out to list "
                                 "every face.",
                                 "external_id");
                return;
        }
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
        json_t *body;

        /* Only known fields, and at least one of them. */
        static const char *const known[] = {"name", "external_id", "metadata",
                                            NULL};
        if (!http_body_object(req, &body) || !api_input_only(req, known))
                return;
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
