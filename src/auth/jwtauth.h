/*
 * jwtauth.h - the dashboard's access tokens: HS256 JWTs signed with a
 * server secret kept in the data directory (mode 0600, made at first
 * start).  The algorithm is fixed by the server: a token naming any other
 * (including "none") is refused, and "exp" must be a number in the future
 * (case S1).  Tokens carry the user (sub), organization (org), session
 * (sid) and a unique id (jti).
 */
#ifndef FRAPI_AUTH_JWTAUTH_H
#define FRAPI_AUTH_JWTAUTH_H

#include <stddef.h>
#include <time.h>

#define JWTAUTH_SECRET_BYTES 32
#define JWTAUTH_ID_SIZE      64
/* Longest token looked at; anything longer is refused unparsed. */
#define JWTAUTH_MAX_TOKEN 4096

struct jwtauth_key {
        unsigned char secret[JWTAUTH_SECRET_BYTES];
};

struct jwtauth_claims {
        char sub[JWTAUTH_ID_SIZE]; /* user id */
        char org[JWTAUTH_ID_SIZE]; /* organization id */
        char sid[JWTAUTH_ID_SIZE]; /* session id */
        char jti[JWTAUTH_ID_SIZE]; /* this token's id */
        long long iat;             /* issued at, seconds since the epoch */
        long long exp;             /* expires at, seconds since the epoch */
};

enum jwtauth_status {
        JWTAUTH_OK = 0,
        JWTAUTH_MALFORMED,     /* not a JWT, or too long */
        JWTAUTH_BAD_SIGNATURE, /* another key, altered, or alg "none" */
        JWTAUTH_BAD_ALGORITHM, /* signed, but not HS256: HS512, ... */
        JWTAUTH_BAD_HEADER,    /* header members beyond alg and typ (crit) */
        JWTAUTH_NO_EXPIRY,     /* "exp" missing or not a whole number */
        JWTAUTH_FUTURE,        /* "iat" missing, or after now (+ 60 s) */
        JWTAUTH_EXPIRED,       /* "exp" is not after now */
        JWTAUTH_BAD_CLAIMS,    /* sub, org, sid or jti missing or wrong */
        JWTAUTH_ERROR,         /* out of memory, library failure */
};

/* Loads the secret from dir/jwt.secret, creating it (mode 0600, random)
 * when absent.  Refuses a file other users can read.  Returns 0, or -1
 * with the reason logged. */
int jwtauth_key_load(const char *dir, struct jwtauth_key *key);

/* Signs claims (iat and exp taken from the struct) into a new token that
 * the caller frees with free().  Returns NULL on failure. */
char *jwtauth_issue(const struct jwtauth_key *key,
                    const struct jwtauth_claims *claims);

/* Checks token against key at time now and fills *out on JWTAUTH_OK. */
enum jwtauth_status jwtauth_verify(const struct jwtauth_key *key,
                                   const char *token, time_t now,
                                   struct jwtauth_claims *out);

/* A short English reason for a status, for logs and error messages. */
const char *jwtauth_status_text(enum jwtauth_status st);

#endif
