/*
 * enroll.c - picking, checking and storing the face of one enrollment
 * photo, for single and batch enrolls alike.
 */
#include "api/enroll.h"
#include "util/log.h"

#include <stdio.h>
#include <string.h>

/* Similarity above which two photos of one person are near-identical. */
#define NEAR_IDENTICAL 0.95f

static bool same_str(const char *a, const char *b)
{
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void refuse(struct enroll_refusal *why, const char *code,
                   const char *message, json_t *details)
{
        why->status = 422;
        why->code = code;
        why->message = message;
        why->param = "image";
        why->details = details;
        why->store = STORE_OK;
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

unsigned enroll_want(const struct enroll_request *req)
{
        return FACE_WANT_EMBEDDING | FACE_WANT_QUALITY |
               (req->check_liveness ? FACE_WANT_LIVENESS : 0);
}

/*
 * The face to enroll, or NULL with *why.  It is the largest face, and it
 * must pass the quality gate; another face that passes too makes the
 * photo ambiguous (MULTIPLE_FACES), unless face_selection=largest says
 * which.  A smaller face that passes while the largest fails is not
 * taken: in a portrait it is a bystander or the cut edge of one, not the
 * person meant.  (Taking it enrolls, from a crop of the largest face of
 * sample4.jpg, which fails the gate, the cut edge of a neighbour, an
 * embedding that then matches nobody in the photo.)
 */
static const struct face *choose_face(const struct face_list *list,
                                      bool largest, struct enroll_refusal *why)
{
        int passing = 0;

        if (list->count == 0) {
                refuse(why, "NO_FACE_DETECTED",
                       "No face was found in the image.", NULL);
                return NULL;
        }
        for (int i = 0; i < list->count; i++)
                passing += list->faces[i].quality.reasons == 0;
        if (!largest && passing > 1) {
                refuse(why, "MULTIPLE_FACES",
                       "The image holds more than one face; send one face, or "
                       "set face_selection=largest.",
                       json_pack("{s:o}", "faces", faces_summary(list)));
                return NULL;
        }
        const struct face *pick = &list->faces[0];
        if (pick->quality.reasons) {
                refuse(why, "FACE_QUALITY_TOO_LOW",
                       "The face is not good enough to enroll.",
                       json_pack("{s:o, s:o, s:f}", "reasons",
                                 api_json_reasons(pick->quality.reasons), "box",
                                 api_json_box(&pick->box), "quality",
                                 api_json_score(pick->quality.score)));
                return NULL;
        }
        return pick;
}

/*
 * The faces already enrolled that look like emb: those of another
 * external_id above the threshold (possible_duplicate_of), and those of
 * the same external_id that are near-identical photos.
 */
static void find_similar(struct api *api, const struct store_collection *coll,
                         const float *emb, const char *external_id,
                         json_t *others, json_t *same)
{
        struct index_hit hits[10];
        struct store_face f;

        index_read_lock(api->index);
        int n = api_search(api, coll->id, emb, 10, coll->match_threshold, hits);
        for (int i = 0; i < n; i++) {
                if (store_face_get(api->store, coll->id, hits[i].face_id, &f) !=
                    STORE_OK)
                        continue;
                float sim = face_similarity(emb, f.embedding);
                json_t *item =
                        json_pack("{s:s, s:s?, s:s, s:f}", "face_id", f.id,
                                  "external_id", f.external_id, "name", f.name,
                                  "similarity", api_json_score(sim));
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

json_t *enroll_face(struct api *api, const struct enroll_request *req,
                    const struct face_list *list, struct enroll_refusal *why)
{
        const struct store_collection *coll = &req->key->coll;
        struct store_face f = {0};

        const struct face *face = choose_face(list, req->largest, why);
        if (!face)
                return NULL;
        float live_thr = face_engine_config(api->engine)->liveness_threshold;
        if (req->check_liveness && !face->live) {
                refuse(why, "LIVENESS_CHECK_FAILED",
                       "The face does not look like a live person.",
                       json_pack("{s:f, s:f}", "liveness_score",
                                 api_json_score(face->liveness), "threshold",
                                 (double)live_thr));
                return NULL;
        }

        /* Who else it looks like, before it joins them. */
        json_t *others = json_array(), *same = json_array();
        find_similar(api, coll, face->embedding, req->external_id, others,
                     same);

        /* Commit and index in one step under the index's write lock. */
        snprintf(f.collection_id, sizeof f.collection_id, "%s", coll->id);
        f.name = (char *)req->name;
        f.external_id = (char *)req->external_id;
        f.metadata = (char *)(req->metadata ? req->metadata : "{}");
        memcpy(f.embedding, face->embedding, sizeof f.embedding);
        f.box = face->box;
        f.quality = face->quality.score;
        index_write_lock(api->index);
        enum store_status st = store_face_insert(
                api->store, &f, coll->keep_originals ? req->original : NULL,
                coll->keep_originals ? req->original_len : 0);
        if (st == STORE_OK &&
            index_add(api->index, f.collection_id, f.id, f.embedding) != 0) {
                store_face_delete(api->store, f.collection_id, f.id);
                st = STORE_ERROR;
        }
        index_unlock(api->index);
        if (st != STORE_OK) {
                json_decref(others);
                json_decref(same);
                memset(why, 0, sizeof *why);
                why->status = 500;
                why->store = st;
                return NULL;
        }
        log_write(LOG_INFO, "api", req->request_id,
                  "Enrolled face %s in collection %s.", f.id, f.collection_id);

        json_t *data = api_json_face(&f);
        json_object_set_new(data, "faces_detected", json_integer(list->found));
        json_object_set_new(data, "possible_duplicate_of", others);
        json_object_set_new(data, "near_identical_to", same);
        if (req->check_liveness)
                json_object_set_new(data, "liveness",
                                    json_pack("{s:f, s:b, s:f}", "score",
                                              api_json_score(face->liveness),
                                              "live", face->live, "threshold",
                                              (double)live_thr));
        return data;
}
