/*
 * apikey.h - API keys: making them, hashing them, checking them.
 *
 * A key reads "fr_live_" followed by 28 random base62 characters.  The
 * first APIKEY_PREFIX_LEN of those characters are the non-secret lookup
 * prefix stored in clear; the whole key is stored only as a BLAKE2b hash
 * keyed with the server's pepper, a random secret kept in the data
 * directory (file "pepper", mode 0600) and never in the database.
 */
#ifndef FRAPI_APIKEY_H
#define FRAPI_APIKEY_H

#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APIKEY_TAG        "fr_live_"
#define APIKEY_TAG_LEN    8
#define APIKEY_RANDOM_LEN 28
#define APIKEY_LEN        (APIKEY_TAG_LEN + APIKEY_RANDOM_LEN)
#define APIKEY_PREFIX_LEN 8
#define APIKEY_PEPPER_LEN 32

/*
 * Reads the pepper from dir/pepper, creating it (mode 0600) when the file
 * does not exist.  Returns 0, or -1 with a message in err.
 */
int apikey_pepper_load(const char *dir, uint8_t pepper[APIKEY_PEPPER_LEN],
                       char *err, size_t errlen);

/* Writes a new random key and its NUL into key. */
void apikey_generate(char key[APIKEY_LEN + 1]);

/*
 * Checks that key has the shape of one of our keys and, if so, copies its
 * lookup prefix into prefix and returns true.  Says nothing about whether
 * the key exists.
 */
bool apikey_parse(const char *key, char prefix[APIKEY_PREFIX_LEN + 1]);

/* The stored hash of key under pepper. */
void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_LEN], const char *key,
                 uint8_t out[32]);

/* True when key hashes to hash under pepper; constant time. */
bool apikey_verify(const uint8_t pepper[APIKEY_PEPPER_LEN], const char *key,
                   const uint8_t hash[32]);

/*
 * Makes a key for collection and stores its hash.  name and allowlist (a
 * JSON array text) may be NULL.  On success *rec is the stored record
 * (release with store_apikey_clear) and key holds the only copy of the
 * secret.
 */
enum store_status apikey_create(struct store *s,
                                const uint8_t pepper[APIKEY_PEPPER_LEN],
                                const char *collection, const char *name,
                                int rpm, const char *allowlist,
                                struct store_apikey *rec,
                                char key[APIKEY_LEN + 1]);

#endif
