/*
 * fuzz_jwt.c - feeds arbitrary bytes to the access token check
 * (jwtauth_verify), the first code an Authorization header reaches.
 * The input is split at the first NUL-free prefix: the bytes as one
 * token string.  Half of the runs verify a token whose payload is the
 * input, signed with the right key, to reach the claim checks too.
 */
#include "auth/jwtauth.h"

#include <jwt.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct jwtauth_key key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        if (sodium_init() < 0)
                abort();
        memset(key.secret, 0x5a, sizeof key.secret);
        return 0;
}

/* Signs grants (JSON text) with the right key; NULL when libjwt refuses
 * the text as grants. */
static char *sign_grants(const char *grants)
{
        jwt_t *jwt = NULL;
        char *tok = NULL;
        if (jwt_new(&jwt) != 0)
                return NULL;
        if (jwt_add_grants_json(jwt, grants) == 0 &&
            jwt_set_alg(jwt, JWT_ALG_HS256, key.secret, sizeof key.secret) == 0)
                tok = jwt_encode_str(jwt);
        jwt_free(jwt);
        return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct jwtauth_claims out;

        if (size == 0)
                return 0;

        /* The raw bytes as a token. */
        char *text = malloc(size);
        if (!text)
                return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';
        if (data[0] & 1) {
                (void)jwtauth_verify(&key, text, 1900000000, &out);
        } else {
                /* The bytes as the claims of a correctly signed token. */
                char *tok = sign_grants(text);
                if (tok) {
                        (void)jwtauth_verify(&key, tok, 1900000000, &out);
                        free(tok);
                }
        }
        free(text);
        return 0;
}
