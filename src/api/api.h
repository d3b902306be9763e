/*
 * api.h - the face API under /api/v1: what its handlers share, and how
 * its routes get onto the server.
 *
 * Each group of endpoints lives in its own file and exports a table of
 * struct api_route (api_faces.c, api_recognize.c, ...); api.c lists the
 * tables and registers every route with the API-key check in front.  A
 * new group adds its table and one line to that list.
 */
#ifndef FRAPI_API_H
#define FRAPI_API_H

#include "api/keyauth.h"
#include "face/face.h"
#include "http/http.h"
#include "index/index.h"
#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

struct api_idem_slot;

/* Everything the handlers use; one per server. */
struct api {
        struct store *store;
        struct index *index;
        struct face_engine *engine; /* NULL only for `frapi routes` */
        struct keyauth *keyauth;
        struct face_image_limits limits;
        size_t max_batch_body; /* body limit of batch and import; 0 default */
        pthread_mutex_t idem_lock;
        struct api_idem_slot *idem_inflight; /* keys being processed */
};

/* One route of a group; handlers get the struct api as userdata. */
struct api_route {
        const char *method;
        const char *pattern;
        http_handler_fn handler;
        unsigned flags; /* enum http_route_flags */
};

/*
 * Sets up api over store s and engine eng (NULL allowed when the routes
 * are only listed): makes the key checker and loads every stored face
 * into the index.  Returns 0, or -1 with a message in err.
 */
int api_init(struct api *api, struct store *s, struct face_engine *eng,
             const uint8_t pepper[APIKEY_PEPPER_LEN], char *err, size_t errlen);

/* Releases what api_init made (not the store nor the engine). */
void api_fini(struct api *api);

/* Adds every API route to srv, keyed by the API-key check. */
void api_register(struct api *api, struct http_server *srv);

/*
 * Helpers shared by the handlers.
 */

/* {"x", "y", "width", "height"} of a box, in whole image pixels. */
json_t *api_json_box(const struct face_box *b);

/* An RFC 3339 UTC time with milliseconds. */
json_t *api_json_time(int64_t ms);

/* A score, similarity or quality in answers: three decimals, so that
 * every route prints the same value for the same number. */
double api_json_score(float v);

/* The public view of a stored face (no embedding). */
json_t *api_json_face(const struct store_face *f);

/*
 * The k faces of collection most similar to emb with a similarity of at
 * least min_sim, exactly as a float32 brute force over the store would
 * find them (index_search with the store's embeddings deciding what the
 * index's copies cannot), most similar first, ties by face id.  Returns
 * how many, or -1 when out of memory.  The index's read lock is held.
 */
int api_search(struct api *api, const char *collection, const float *emb, int k,
               float min_sim, struct index_hit *hits);

/* Answers a store failure: 404 FACE_NOT_FOUND for STORE_NOT_FOUND, 500
 * otherwise.  The 404 names param, the field that held the face id;
 * api_reply_store() names "id", the path segment. */
void api_reply_store_for(struct http_request *req, enum store_status st,
                         const char *param);
void api_reply_store(struct http_request *req, enum store_status st);

/*
 * Runs the engine on img exactly as face_engine_analyze() does, and adds
 * the time of each stage to /metrics (frapi_engine_stage_seconds, by
 * stage).  Every handler runs the engine through this.
 */
enum face_status api_engine_run(struct face_engine *eng,
                                const struct face_image *img, unsigned want,
                                int max_faces, struct face_list *out);

/*
 * Decodes image field `field` and runs the engine for `want` on at most
 * max_faces faces (0 = all).  Returns true with *list pointing at the
 * faces found (request memory, released when the request ends), or false
 * after answering.
 */
bool api_analyze(struct http_request *req, struct api *api, const char *field,
                 unsigned want, int max_faces, const struct face_list **list);

/*
 * As api_analyze for two image fields at once: both are decoded first
 * (a bad one is answered naming it), then the engine runs on the second
 * in another thread while this one runs on the first, so a 1:1 compare
 * takes about the time of one image when a core is free.
 */
bool api_analyze_pair(struct http_request *req, struct api *api,
                      const char *field_a, const char *field_b, unsigned want,
                      int max_faces, const struct face_list **a,
                      const struct face_list **b);

/* The face's quality failure reasons as a JSON array of names. */
json_t *api_json_reasons(unsigned reasons);

/*
 * Idempotency-Key.  api_idem_begin() returns true to go on, or false
 * after answering: the recorded answer of an earlier request with the
 * same key and body, 409 IDEMPOTENCY_KEY_REUSED for the same key with
 * another body, 409 IDEMPOTENCY_KEY_IN_USE while the first is still being
 * processed, or 400 for a malformed key.  On success the handler calls
 * api_idem_reply() instead of http_reply_data().
 */
struct api_idem {
        const char *key; /* NULL when the request carried none */
        char collection[STORE_ID_MAX];
        uint8_t hash[32];
};
bool api_idem_begin(struct http_request *req, struct api *api,
                    const char *collection, struct api_idem *idem);
void api_idem_reply(struct http_request *req, struct api *api,
                    const struct api_idem *idem, int status, json_t *data);

#endif
