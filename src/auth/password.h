/*
 * password.h - dashboard passwords: the length policy, argon2id hashing
 * and verification (libsodium crypto_pwhash).  Passwords are never logged
 * and never stored in clear.
 */
#ifndef FRAPI_AUTH_PASSWORD_H
#define FRAPI_AUTH_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>

/* Shortest and longest password accepted, in characters and bytes. */
#define PASSWORD_MIN_CHARS 10
#define PASSWORD_MAX_BYTES 1024

/* Room for an encoded argon2id hash, terminator included. */
#define PASSWORD_HASH_SIZE 128

enum password_policy {
        PASSWORD_POLICY_OK = 0,
        PASSWORD_POLICY_TOO_SHORT, /* fewer than PASSWORD_MIN_CHARS */
        PASSWORD_POLICY_TOO_LONG,  /* more than PASSWORD_MAX_BYTES */
        PASSWORD_POLICY_INVALID,   /* not UTF-8, or holds a NUL or control */
};

/* Checks password (len bytes, may hold a NUL the caller received) against
 * the policy.  Characters are counted as UTF-8 code points. */
enum password_policy password_check(const char *password, size_t len);

/* At most one hash or verification runs per processor at a time (each
 * takes 64 MiB); callers beyond that wait their turn. */

/* Hashes password with argon2id into out (PASSWORD_HASH_SIZE bytes, NUL
 * terminated).  Returns 0, or -1 when memory for the hash is missing. */
int password_hash(const char *password, size_t len,
                  char out[PASSWORD_HASH_SIZE]);

/* True when password matches hash.  A NULL hash (no such account) does
 * the same work against a fixed hash and answers false, so that callers
 * spend the same time whether or not the account exists. */
bool password_verify(const char *hash, const char *password, size_t len);

#endif
