#include "auth/token.h"

#include <assert.h>
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

void token_new(char out[TOKEN_SIZE])
{
        unsigned char raw[32];

        /* 256 bits: guessing is out of the question, so a fast digest is
         * enough to store it. */
        randombytes_buf(raw, sizeof raw);
        sodium_bin2base64(out, TOKEN_SIZE, raw, sizeof raw,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING);
        sodium_memzero(raw, sizeof raw);
}

void token_recovery_new(char out[TOKEN_RECOVERY_SIZE])
{
        static const char alphabet[] = "abcdefghjkmnpqrstuvwxyz23456789";

        /* 10 symbols from an alphabet without look-alikes (31 symbols). */
        for (int i = 0, o = 0; i < 10; i++) {
                if (i == 5)
                        out[o++] = '-';
                out[o++] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
        }
        out[11] = '\0';
}

void token_digest(const char *text, char out[TOKEN_DIGEST_SIZE])
{
        unsigned char digest[32];
        char norm[256];
        size_t n = 0;

        assert(text && out);

        /* Short texts are recovery codes, typed by hand: case, spaces and
         * the dash do not count.  Long tokens are hashed as they are. */
        size_t len = strlen(text);
        if (len <= 16) {
                for (size_t i = 0; i < len && n < sizeof norm - 1; i++)
                        if (text[i] != '-' && text[i] != ' ')
                                norm[n++] =
                                        (char)tolower((unsigned char)text[i]);
                crypto_generichash(digest, sizeof digest,
                                   (const unsigned char *)norm, n, NULL, 0);
        } else {
                crypto_generichash(digest, sizeof digest,
                                   (const unsigned char *)text, len, NULL, 0);
        }
        sodium_bin2hex(out, TOKEN_DIGEST_SIZE, digest, sizeof digest);
}

bool token_well_formed(const char *text)
{
        if (!text || strlen(text) != TOKEN_SIZE - 1)
                return false;
        for (const char *p = text; *p; p++)
                if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
                        return false;
        return true;
}

void token_id(const char *prefix, char *out, size_t n)
{
        unsigned char raw[16];
        char hex[33];

        assert(prefix && out && n >= strlen(prefix) + sizeof hex);
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
        snprintf(out, n, "%s%s", prefix, hex);
}
