/*
 * keyauth.c - API key verification before the body is read.
 */
#include "api/keyauth.h"
#include "util/log.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct check {
        keyauth_check_fn fn;
        void *userdata;
};

struct keyauth {
        struct store *store;
        uint8_t pepper[APIKEY_PEPPER_LEN];
        int nchecks;
        struct check checks[KEYAUTH_MAX_CHECKS];
};

struct keyauth *keyauth_new(struct store *s,
                            const uint8_t pepper[APIKEY_PEPPER_LEN])
{
        struct keyauth *ka = calloc(1, sizeof *ka);
        if (!ka)
                return NULL;
        ka->store = s;
        memcpy(ka->pepper, pepper, APIKEY_PEPPER_LEN);
        return ka;
}

void keyauth_free(struct keyauth *ka)
{
        if (!ka)
                return;
        sodium_memzero(ka->pepper, sizeof ka->pepper);
        free(ka);
}

int keyauth_add_check(struct keyauth *ka, keyauth_check_fn fn, void *userdata)
{
        if (ka->nchecks == KEYAUTH_MAX_CHECKS)
                return -1;
        ka->checks[ka->nchecks++] = (struct check){fn, userdata};
        return 0;
}

static void key_release(void *p)
{
        struct keyauth_key *k = p;
        store_apikey_clear(&k->rec);
        store_collection_clear(&k->coll);
        free(k);
}

/* The one answer for every key that is not good, whatever the reason, so
 * a caller learns nothing about which keys exist. */
static bool refuse_invalid(struct http_request *req)
{
        http_reply_error(req, 401, "INVALID_API_KEY",
                         "The API key is not valid.", KEYAUTH_HEADER);
        return false;
}

bool keyauth_before(struct http_request *req, void *userdata)
{
        struct keyauth *ka = userdata;
        char prefix[APIKEY_PREFIX_LEN + 1];
        enum store_status st;

        /* No key, or an empty one. */
        const char *key = http_request_header(req, KEYAUTH_HEADER);
        if (!key || !key[0]) {
                http_reply_error(req, 401, "MISSING_API_KEY",
                                 "Send your API key in the X-API-Key header.",
                                 KEYAUTH_HEADER);
                return false;
        }

        /* Two X-API-Key lines could name two collections; which one the
         * client meant is not ours to guess.  (No key holds a comma, so
         * a comma in the joined lines means more than one.) */
        const char *lines = http_request_header_list(req, KEYAUTH_HEADER);
        if (lines && strchr(lines, ',')) {
                http_reply_error(req, 401, "INVALID_API_KEY",
                                 "Send exactly one X-API-Key header.",
                                 KEYAUTH_HEADER);
                return false;
        }

        /* A key of the wrong shape is refused without a database read. */
        if (!apikey_parse(key, prefix))
                return refuse_invalid(req);

        /* Find it by its public prefix, compare the hash in constant time. */
        struct keyauth_key *k = calloc(1, sizeof *k);
        if (!k) {
                http_reply_error(req, 503, "SERVER_BUSY",
                                 "The server is short of memory; retry later.",
                                 NULL);
                return false;
        }
        http_request_set_context(req, k, key_release);
        st = store_apikey_by_prefix(ka->store, prefix, &k->rec);
        if (st == STORE_NOT_FOUND ||
            (st == STORE_OK && !apikey_verify(ka->pepper, key, k->rec.hash)))
                return refuse_invalid(req);
        if (st == STORE_OK)
                st = store_collection_get(ka->store, k->rec.collection_id,
                                          &k->coll);
        if (st != STORE_OK) {
                log_write(LOG_ERROR, "auth", http_request_id(req),
                          "Checking an API key failed: %s.",
                          store_status_name(st));
                http_reply_error(req, 500, "INTERNAL_ERROR",
                                 "The server could not check the API key.",
                                 NULL);
                return false;
        }
        http_request_set_principal(req, k->rec.id);

        /* A revoked key stops working at once. */
        if (k->rec.revoked_ms) {
                http_reply_error(req, 401, "API_KEY_REVOKED",
                                 "This API key has been revoked.",
                                 KEYAUTH_HEADER);
                return false;
        }

        /* Then the checks other modules added, in order. */
        for (int i = 0; i < ka->nchecks; i++)
                if (!ka->checks[i].fn(req, k, ka->checks[i].userdata))
                        return false;
        return true;
}

const struct keyauth_key *keyauth_key(const struct http_request *req)
{
        return http_request_context(req);
}
