/*
 * totp.h - two-factor codes per RFC 6238 (liboath): HMAC-SHA-1, 30 s
 * steps, 6 digits, one step of tolerance either side.  Every function
 * takes the time as an argument, so that tests set the clock.  The store
 * keeps the last accepted step and totp_check refuses any step at or
 * before it, so a code is never accepted twice (case S2).
 */
#ifndef FRAPI_AUTH_TOTP_H
#define FRAPI_AUTH_TOTP_H

#include <stddef.h>
#include <time.h>

#define TOTP_STEP_SECONDS 30
#define TOTP_DIGITS       6
#define TOTP_WINDOW       1
#define TOTP_SECRET_BYTES 20
/* 20 bytes in base32 are 32 characters, + NUL. */
#define TOTP_SECRET_B32_SIZE 33

enum totp_result {
        TOTP_ACCEPTED = 0,
        TOTP_MALFORMED, /* not exactly six digits */
        TOTP_WRONG,     /* no step within the window has this code */
        TOTP_REPLAYED,  /* the code is of a step already used, or older */
        TOTP_ERROR,     /* the secret cannot be decoded */
};

/* Initialises liboath once per process; safe to call from any thread.
 * Returns 0 or -1. */
int totp_init(void);

/* Fills out with a new random secret in base32 (no padding). */
int totp_secret_new(char out[TOTP_SECRET_B32_SIZE]);

/* The step number of time t. */
long long totp_step(time_t t);

/* Writes the code of step into out (7 bytes).  Returns 0 or -1. */
int totp_code(const char *secret_b32, long long step, char out[7]);

/* Checks code at time now against secret_b32.  last_step is the last
 * step accepted for this secret (-1 when none).  On TOTP_ACCEPTED,
 * *step holds the step matched; the caller must store it with a
 * compare-and-set so that two concurrent uses cannot both win. */
enum totp_result totp_check(const char *secret_b32, const char *code,
                            time_t now, long long last_step, long long *step);

/* The otpauth:// URI for authenticator apps; free() it.  NULL on
 * failure. */
char *totp_uri(const char *issuer, const char *account, const char *secret_b32);

/* The URI as a QR code in SVG; free() it.  NULL on failure. */
char *totp_qr_svg(const char *uri);

#endif
