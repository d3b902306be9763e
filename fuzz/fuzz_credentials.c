/*
 * fuzz_credentials.c - the short secrets clients send are untrusted text:
 * an X-API-Key header, a refresh, verification or reset token, a recovery
 * code and a 6-digit TOTP code.  Feeds arbitrary bytes to every check
 * that reads one before the store is asked.
 *
 * The first input byte picks the check, the rest (up to its first NUL)
 * is the text.  A crash, a sanitizer report, or a check that accepts
 * text of the wrong shape is a finding.
 */
#include "auth/apikey.h"
#include "auth/token.h"
#include "auth/totp.h"

#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint8_t pepper[APIKEY_PEPPER_LEN];
static uint8_t key_hash[32];
static char secret[TOTP_SECRET_B32_SIZE];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        char key[APIKEY_LEN + 1];

        (void)argc;
        (void)argv;
        if (sodium_init() < 0 || totp_init() != 0 ||
            totp_secret_new(secret) != 0)
                abort();
        memset(pepper, 0x3c, sizeof pepper);
        apikey_generate(key);
        apikey_hash(pepper, key, key_hash);
        return 0;
}

/* An API key as the header carries it: shape, then the hash compare. */
static void check_apikey(const char *text)
{
        char prefix[APIKEY_PREFIX_LEN + 1];

        if (!apikey_parse(text, prefix))
                return;
        if (strlen(text) != APIKEY_LEN ||
            strncmp(text, APIKEY_TAG, APIKEY_TAG_LEN) != 0 ||
            strlen(prefix) != APIKEY_PREFIX_LEN)
                abort();
        (void)apikey_verify(pepper, text, key_hash);
}

/* A refresh, verification or reset token, and a recovery code: only the
 * well-formed ones reach the store, by their digest. */
static void check_token(const char *text)
{
        char digest[TOKEN_DIGEST_SIZE];

        if (token_well_formed(text) && strlen(text) != TOKEN_SIZE - 1)
                abort();
        token_digest(text, digest);
        if (strlen(digest) != TOKEN_DIGEST_SIZE - 1)
                abort();
}

/* A TOTP code against a real secret, at a fixed time. */
static void check_totp(const char *text)
{
        long long step = -1;

        (void)totp_check(secret, text, 1900000000, -1, &step);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size == 0)
                return 0;

        char *text = malloc(size);
        if (!text)
                return 0;
        memcpy(text, data + 1, size - 1);
        text[size - 1] = '\0';

        switch (data[0] % 3) {
        case 0:
                check_apikey(text);
                break;
        case 1:
                check_token(text);
                break;
        default:
                check_totp(text);
                break;
        }
        free(text);
        return 0;
}
