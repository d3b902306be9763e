/*
 * keyauth.h - the X-API-Key check in front of every /api/v1 face route.
 *
 * It runs as the route's before-body hook, so a request with a missing or
 * wrong key is answered 401 before one byte of its body is read.  A good
 * key leaves a struct keyauth_key on the request for the handler: the key
 * record and its collection.  Further checks (rate limits, IP allowlists,
 * last use) are added with keyauth_add_check() and run, in the order
 * added, after the key is known to be good and not revoked.
 */
#ifndef FRAPI_KEYAUTH_H
#define FRAPI_KEYAUTH_H

#include "auth/apikey.h"
#include "http/http.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

#define KEYAUTH_HEADER     "X-API-Key"
#define KEYAUTH_MAX_CHECKS 8

/* What a handler learns about the caller. */
struct keyauth_key {
        struct store_apikey rec;
        struct store_collection coll;
};

/* A further check; returns true to go on, or false after answering (for
 * example 429 or 403). */
typedef bool (*keyauth_check_fn)(struct http_request *req,
                                 const struct keyauth_key *key, void *userdata);

struct keyauth;

/* A checker over store s with the server's pepper (copied).  NULL when
 * out of memory.  Release with keyauth_free(). */
struct keyauth *keyauth_new(struct store *s,
                            const uint8_t pepper[APIKEY_PEPPER_LEN]);

void keyauth_free(struct keyauth *ka);

/* Adds a check run after the key is verified.  Returns 0, or -1 when
 * KEYAUTH_MAX_CHECKS are already set.  Call before the server starts. */
int keyauth_add_check(struct keyauth *ka, keyauth_check_fn fn, void *userdata);

/*
 * The before-body hook (an http_before_fn; userdata is the keyauth):
 * 401 MISSING_API_KEY without the header, 401 INVALID_API_KEY for a key
 * that is malformed, unknown or does not verify, 401 API_KEY_REVOKED for
 * a revoked one; then the added checks.  Never logs the key.
 */
bool keyauth_before(struct http_request *req, void *userdata);

/* The verified key of req, or NULL when the route is not keyed. */
const struct keyauth_key *keyauth_key(const struct http_request *req);

#endif
