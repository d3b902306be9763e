#include "auth/jwtauth.h"

#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET_HEX (JWTAUTH_SECRET_BYTES * 2)

/* Creates path with a new random secret, readable by the owner only.
 * Returns 0, 1 when another process created it first, or -1. */
static int create_secret(const char *path, struct jwtauth_key *key)
{
        char hex[SECRET_HEX + 2];
        int fd, rc = -1;

        /* O_EXCL: two servers starting at once never overwrite each other. */
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0)
                return errno == EEXIST ? 1 : -1;

        randombytes_buf(key->secret, sizeof key->secret);
        sodium_bin2hex(hex, sizeof hex, key->secret, sizeof key->secret);
        hex[SECRET_HEX] = '\n';
        if (write(fd, hex, SECRET_HEX + 1) != SECRET_HEX + 1 || fsync(fd) != 0)
                goto out;
        rc = 0;
        log_info("auth", "A new token signing secret was created in %s.", path);
out:
        sodium_memzero(hex, sizeof hex);
        close(fd);
        if (rc != 0)
                unlink(path);
        return rc;
}

/* Reads an existing secret file after checking who may read it. */
static int read_secret(const char *path, struct jwtauth_key *key)
{
        char hex[SECRET_HEX + 2];
        struct stat st;
        size_t bin_len = 0;
        int rc = -1;

        FILE *f = fopen(path, "re");
        if (!f) {
                log_error("auth", "The token secret %s cannot be read: %s.",
                          path, strerror(errno));
                return -1;
        }

        /* A secret others can read may already be known: refuse it. */
        if (fstat(fileno(f), &st) != 0 || (st.st_mode & 077) != 0) {
                log_error("auth",
                          "The token secret %s is readable by other users; "
                          "make it mode 0600 (chmod 600) and start again.",
                          path);
                goto out;
        }

        if (!fgets(hex, sizeof hex, f) ||
            sodium_hex2bin(key->secret, sizeof key->secret, hex, SECRET_HEX,
                           NULL, &bin_len, NULL) != 0 ||
            bin_len != sizeof key->secret) {
                log_error("auth", "The token secret %s is damaged.", path);
                goto out;
        }
        rc = 0;
out:
        sodium_memzero(hex, sizeof hex);
        fclose(f);
        return rc;
}

int jwtauth_key_load(const char *dir, struct jwtauth_key *key)
{
        char path[4096];

        assert(dir && key);
        if (snprintf(path, sizeof path, "%s/jwt.secret", dir) >=
            (int)sizeof path)
                return -1;

        /* First start makes the secret; every later start reads it. */
        int made = create_secret(path, key);
        if (made == 0)
                return 0;
        if (made < 0) {
                log_error("auth", "The token secret %s cannot be created: %s.",
                          path, strerror(errno));
                return -1;
        }
        return read_secret(path, key);
}

char *jwtauth_issue(const struct jwtauth_key *key,
                    const struct jwtauth_claims *claims)
{
        jwt_t *jwt = NULL;
        char *token = NULL;

        assert(key && claims);
        if (jwt_new(&jwt) != 0)
                return NULL;

        /* The claims first, then the signature over them. */
        if (jwt_add_grant(jwt, "sub", claims->sub) != 0 ||
            jwt_add_grant(jwt, "org", claims->org) != 0 ||
            jwt_add_grant(jwt, "sid", claims->sid) != 0 ||
            jwt_add_grant(jwt, "jti", claims->jti) != 0 ||
            jwt_add_grant_int(jwt, "iat", (long)claims->iat) != 0 ||
            jwt_add_grant_int(jwt, "exp", (long)claims->exp) != 0 ||
            jwt_set_alg(jwt, JWT_ALG_HS256, key->secret, sizeof key->secret) !=
                    0)
                goto out;
        token = jwt_encode_str(jwt);
out:
        jwt_free(jwt);
        return token;
}

/* Copies the string claim name of grants into out; false when missing,
 * not a string, empty or too long. */
static bool copy_claim(json_t *grants, const char *name, char *out, size_t n)
{
        json_t *v = json_object_get(grants, name);
        if (!json_is_string(v))
                return false;
        size_t len = json_string_length(v);
        if (len == 0 || len >= n || strlen(json_string_value(v)) != len)
                return false;
        memcpy(out, json_string_value(v), len + 1);
        return true;
}

/* True when the token's header holds nothing but alg and typ, as ours
 * do: a "crit" list names extensions the reader must understand, and
 * this server understands none (RFC 7515 4.1.11). */
static bool header_plain(jwt_t *jwt)
{
        char *text = jwt_get_headers_json(jwt, NULL);
        json_t *head = text ? json_loads(text, 0, NULL) : NULL;
        bool ok = json_is_object(head);
        const char *name;
        json_t *v;

        json_object_foreach(head, name, v)
        {
                (void)v;
                if (strcmp(name, "alg") != 0 && strcmp(name, "typ") != 0)
                        ok = false;
        }
        json_decref(head);
        free(text);
        return ok;
}

/* Checks the claims of a token whose signature is already verified. */
static enum jwtauth_status check_claims(jwt_t *jwt, time_t now,
                                        struct jwtauth_claims *out)
{
        enum jwtauth_status st = JWTAUTH_ERROR;
        char *text = jwt_get_grants_json(jwt, NULL);
        json_t *grants = text ? json_loads(text, 0, NULL) : NULL;

        if (!grants)
                goto out;

        /* exp must be a JSON integer: a string "exp" is no expiry at all. */
        json_t *exp = json_object_get(grants, "exp");
        if (!json_is_integer(exp)) {
                st = JWTAUTH_NO_EXPIRY;
                goto out;
        }
        out->exp = json_integer_value(exp);
        if (out->exp <= (long long)now) {
                st = JWTAUTH_EXPIRED;
                goto out;
        }
        /* Our tokens carry their issue time; one from the future was not
         * made by this clock (a minute of skew between nodes is fine). */
        json_t *iat = json_object_get(grants, "iat");
        if (!json_is_integer(iat) ||
            json_integer_value(iat) > (long long)now + 60) {
                st = JWTAUTH_FUTURE;
                goto out;
        }
        out->iat = json_integer_value(iat);

        /* The identity the rest of the server relies on. */
        if (!copy_claim(grants, "sub", out->sub, sizeof out->sub) ||
            !copy_claim(grants, "org", out->org, sizeof out->org) ||
            !copy_claim(grants, "sid", out->sid, sizeof out->sid) ||
            !copy_claim(grants, "jti", out->jti, sizeof out->jti)) {
                st = JWTAUTH_BAD_CLAIMS;
                goto out;
        }
        st = JWTAUTH_OK;
out:
        json_decref(grants);
        free(text);
        return st;
}

enum jwtauth_status jwtauth_verify(const struct jwtauth_key *key,
                                   const char *token, time_t now,
                                   struct jwtauth_claims *out)
{
        enum jwtauth_status st = JWTAUTH_MALFORMED;
        jwt_t *jwt = NULL;

        assert(key && out);
        if (!token || strnlen(token, JWTAUTH_MAX_TOKEN + 1) > JWTAUTH_MAX_TOKEN)
                return JWTAUTH_MALFORMED;

        /* libjwt refuses alg "none" once a key is given, but verifies
         * any HMAC with it: the algorithm check is ours. */
        if (jwt_decode(&jwt, token, key->secret, sizeof key->secret) != 0) {
                st = JWTAUTH_BAD_SIGNATURE;
                goto out;
        }
        if (jwt_get_alg(jwt) != JWT_ALG_HS256) {
                st = JWTAUTH_BAD_ALGORITHM;
                goto out;
        }
        if (!header_plain(jwt)) {
                st = JWTAUTH_BAD_HEADER;
                goto out;
        }
        st = check_claims(jwt, now, out);
out:
        jwt_free(jwt);
        return st;
}

const char *jwtauth_status_text(enum jwtauth_status st)
{
        switch (st) {
        case JWTAUTH_OK:
                return "the token is valid";
        case JWTAUTH_MALFORMED:
                return "the token is not a well-formed JWT";
        case JWTAUTH_BAD_SIGNATURE:
                return "the token is malformed or not signed by this server";
        case JWTAUTH_BAD_ALGORITHM:
                return "the token uses an algorithm other than HS256";
        case JWTAUTH_BAD_HEADER:
                return "the token's header holds more than alg and typ";
        case JWTAUTH_NO_EXPIRY:
                return "the token's expiry (exp) is missing or not a whole "
                       "number of seconds";
        case JWTAUTH_FUTURE:
                return "the token's issue time (iat) is missing or in the "
                       "future";
        case JWTAUTH_EXPIRED:
                return "the token has expired";
        case JWTAUTH_BAD_CLAIMS:
                return "the token lacks its user, organization or session";
        case JWTAUTH_ERROR:
                break;
        }
        return "the token could not be checked";
}
