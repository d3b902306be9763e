/*
 * enroll.h - the rules of enrolling one face from an analysed photo,
 * shared by POST /api/v1/faces and each item of POST /api/v1/faces/batch:
 * which face is taken (the quality gate, face_selection), the liveness
 * check, the faces it resembles, and the commit that stores and indexes
 * it in one step.  The callers read the fields and run the engine; this
 * module never answers HTTP itself.
 */
#ifndef FRAPI_API_ENROLL_H
#define FRAPI_API_ENROLL_H

#include "api/api.h"
#include "api/keyauth.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Faces looked at in one enrollment photo; more is a crowd, not a
 * portrait. */
#define ENROLL_MAX_FACES 20

/* One face to enroll, besides the engine's result.  Strings are
 * borrowed; metadata is JSON object text ("{}" when NULL). */
struct enroll_request {
        const struct keyauth_key *key;
        const char *request_id; /* for the log line */
        const char *name;
        const char *external_id;
        const char *metadata;
        bool largest;        /* face_selection=largest */
        bool check_liveness; /* the engine ran with FACE_WANT_LIVENESS */
        const unsigned char *original; /* kept when the collection asks */
        size_t original_len;
};

/* Why a face was not enrolled.  code is NULL when the store failed
 * (store then says how); otherwise status, code and message are the
 * error for the client, param names the field and details (owned by the
 * caller, may be NULL) adds members to the error object. */
struct enroll_refusal {
        int status;
        const char *code;
        const char *message;
        const char *param;
        json_t *details;
        enum store_status store;
};

/* The engine results enroll needs for req. */
unsigned enroll_want(const struct enroll_request *req);

/*
 * Enrolls the face of list that the rules pick.  Returns the answer's
 * data (the face, faces_detected, possible_duplicate_of,
 * near_identical_to and, when asked, liveness), or NULL with *why filled
 * and nothing stored.
 */
json_t *enroll_face(struct api *api, const struct enroll_request *req,
                    const struct face_list *list, struct enroll_refusal *why);

#endif
