/*
 * token.h - random secrets handed to users (refresh tokens, email links,
 * recovery codes) and the one-way digests that are all the store keeps.
 */
#ifndef FRAPI_AUTH_TOKEN_H
#define FRAPI_AUTH_TOKEN_H

#include <stdbool.h>
#include <stddef.h>

/* 32 random bytes as unpadded base64url: 43 characters + NUL. */
#define TOKEN_SIZE 44
/* A BLAKE2b-256 digest as lower-case hex: 64 characters + NUL. */
#define TOKEN_DIGEST_SIZE 65
/* A recovery code "xxxxx-xxxxx" (base32, lower case) + NUL. */
#define TOKEN_RECOVERY_SIZE 12

/* Fills out with a new random token.  Never fails once libsodium is
 * initialised (sodium_init in the caller's start-up). */
void token_new(char out[TOKEN_SIZE]);

/* Fills out with a new recovery code of about 50 random bits. */
void token_recovery_new(char out[TOKEN_RECOVERY_SIZE]);

/* Writes the hex digest of text (NUL terminated) into out.  Recovery codes
 * are normalised first (case and the dash do not matter). */
void token_digest(const char *text, char out[TOKEN_DIGEST_SIZE]);

/* True when text looks like a token of token_new(): the right length and
 * alphabet.  Lets handlers refuse junk before touching the store. */
bool token_well_formed(const char *text);

/* Writes a new identifier with prefix (e.g. "usr_") and 16 random bytes
 * as lower-case hex into out (size n >= strlen(prefix) + 33). */
void token_id(const char *prefix, char *out, size_t n);

#endif
