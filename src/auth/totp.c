#include "auth/totp.h"

#include <assert.h>
#include <curl/curl.h>
#include <liboath/oath.h>
#include <pthread.h>
#include <qrencode.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t oath_once = PTHREAD_ONCE_INIT;
static int oath_status = -1;

static void init_oath(void)
{
        oath_status = oath_init() == OATH_OK ? 0 : -1;
}

int totp_init(void)
{
        pthread_once(&oath_once, init_oath);
        return oath_status;
}

int totp_secret_new(char out[TOTP_SECRET_B32_SIZE])
{
        char raw[TOTP_SECRET_BYTES];
        char *b32 = NULL;
        size_t len = 0;
        int rc = -1;

        if (totp_init() != 0)
                return -1;

        /* 160 bits, the size RFC 4226 recommends for HMAC-SHA-1. */
        randombytes_buf(raw, sizeof raw);
        if (oath_base32_encode(raw, sizeof raw, &b32, &len) != OATH_OK)
                goto out;
        assert(len == TOTP_SECRET_B32_SIZE - 1);
        memcpy(out, b32, len);
        out[len] = '\0';
        rc = 0;
out:
        sodium_memzero(raw, sizeof raw);
        if (b32) {
                sodium_memzero(b32, len);
                free(b32);
        }
        return rc;
}

long long totp_step(time_t t)
{
        return (long long)t / TOTP_STEP_SECONDS;
}

/* Decodes a base32 secret into a malloc'ed buffer; NULL on failure. */
static char *decode_secret(const char *secret_b32, size_t *len)
{
        char *raw = NULL;
        if (oath_base32_decode(secret_b32, strlen(secret_b32), &raw, len) !=
            OATH_OK)
                return NULL;
        return raw;
}

int totp_code(const char *secret_b32, long long step, char out[7])
{
        size_t len = 0;
        int rc = -1;

        assert(secret_b32 && out);
        if (totp_init() != 0 || step < 0)
                return -1;
        char *raw = decode_secret(secret_b32, &len);
        if (!raw)
                return -1;

        /* liboath counts steps from a time, so give it the step's start. */
        if (oath_totp_generate2(raw, len, (time_t)(step * TOTP_STEP_SECONDS),
                                TOTP_STEP_SECONDS, 0, TOTP_DIGITS, 0,
                                out) == OATH_OK)
                rc = 0;
        sodium_memzero(raw, len);
        free(raw);
        return rc;
}

enum totp_result totp_check(const char *secret_b32, const char *code,
                            time_t now, long long last_step, long long *step)
{
        enum totp_result res = TOTP_WRONG;
        long long matched = -1;

        assert(secret_b32 && step);

        /* Exactly six ASCII digits, nothing else. */
        if (!code || strlen(code) != TOTP_DIGITS)
                return TOTP_MALFORMED;
        for (int i = 0; i < TOTP_DIGITS; i++)
                if (code[i] < '0' || code[i] > '9')
                        return TOTP_MALFORMED;

        /* Compare every step in the window, keeping the newest match; every
         * step is computed so that timing does not tell which one hit. */
        long long cur = totp_step(now);
        for (long long s = cur - TOTP_WINDOW; s <= cur + TOTP_WINDOW; s++) {
                char expect[7];
                if (totp_code(secret_b32, s, expect) != 0)
                        return TOTP_ERROR;
                if (sodium_memcmp(expect, code, TOTP_DIGITS) == 0)
                        matched = s;
        }

        /* A match at or before the last accepted step is a replay. */
        if (matched >= 0) {
                res = matched > last_step ? TOTP_ACCEPTED : TOTP_REPLAYED;
                *step = matched;
        }
        return res;
}

char *totp_uri(const char *issuer, const char *account, const char *secret_b32)
{
        char *uri = NULL, *is = NULL, *ac = NULL;

        assert(issuer && account && secret_b32);
        is = curl_easy_escape(NULL, issuer, 0);
        ac = curl_easy_escape(NULL, account, 0);
        if (!is || !ac)
                goto out;

        /* Key URI format as authenticator apps read it. */
        if (asprintf(&uri,
                     "otpauth://totp/%s:%s?secret=%s&issuer=%s"
                     "&algorithm=SHA1&digits=%d&period=%d",
                     is, ac, secret_b32, is, TOTP_DIGITS,
                     TOTP_STEP_SECONDS) < 0)
                uri = NULL;
out:
        curl_free(ac);
        curl_free(is);
        return uri;
}

char *totp_qr_svg(const char *uri)
{
        enum { QUIET = 4, SCALE = 4 };
        char *svg = NULL;
        size_t size = 0;

        assert(uri);
        QRcode *qr = QRcode_encodeString(uri, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
        if (!qr)
                return NULL;
        FILE *f = open_memstream(&svg, &size);
        if (!f)
                goto out;

        /* One path of unit squares for the dark modules, with a quiet zone
         * of four modules around it. */
        int side = qr->width + 2 * QUIET;
        fprintf(f,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" "
                "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                "shape-rendering=\"crispEdges\">"
                "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>"
                "<path fill=\"#000\" d=\"",
                side * SCALE, side * SCALE, side, side, side, side);
        for (int y = 0; y < qr->width; y++)
                for (int x = 0; x < qr->width; x++)
                        if (qr->data[y * qr->width + x] & 1)
                                fprintf(f, "M%d %dh1v1h-1z", x + QUIET,
                                        y + QUIET);
        fputs("\"/></svg>", f);
        if (fclose(f) != 0) {
                free(svg);
                svg = NULL;
        }
out:
        QRcode_free(qr);
        return svg;
}
