#include "auth/password.h"

#include "util/log.h"

#include <assert.h>
#include <pthread.h>
#include <semaphore.h>
#include <sodium.h>
#include <string.h>
#include <unistd.h>

/* Hashes at once, at most one per processor: each takes 64 MiB, and a
 * burst of logins must not take the machine's memory. */
static sem_t hash_slots;
static pthread_once_t slots_once = PTHREAD_ONCE_INIT;

static void make_slots(void)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        sem_init(&hash_slots, 0,
                 cpus < 1    ? 1
                 : cpus > 16 ? 16
                             : (unsigned)cpus);
}

static void slot_take(void)
{
        pthread_once(&slots_once, make_slots);
        while (sem_wait(&hash_slots) != 0)
                continue;
}

static void slot_give(void)
{
        sem_post(&hash_slots);
}

/* A hash of a password nobody has, used to spend the time of a real
 * verification when the account does not exist. */
static char decoy_hash[PASSWORD_HASH_SIZE];
static pthread_once_t decoy_once = PTHREAD_ONCE_INIT;

static void make_decoy(void)
{
        static const char decoy[] = "decoy password nobody has";
        if (password_hash(decoy, sizeof decoy - 1, decoy_hash) != 0)
                log_error("auth", "The decoy password hash could not be made.");
}

/* Decodes one UTF-8 code point at s (n bytes left); returns its length or
 * 0 when the bytes are not well-formed UTF-8. */
static size_t utf8_next(const unsigned char *s, size_t n, unsigned *cp)
{
        size_t len;
        unsigned c = s[0], min;

        if (c < 0x80) {
                *cp = c;
                return 1;
        }
        if ((c & 0xe0) == 0xc0) {
                len = 2, c &= 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
                len = 3, c &= 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
                len = 4, c &= 0x07, min = 0x10000;
        } else {
                return 0;
        }
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *cp = c;
        return len;
}

enum password_policy password_check(const char *password, size_t len)
{
        const unsigned char *s = (const unsigned char *)password;
        size_t chars = 0;

        assert(password);

        /* The upper bound keeps the hashing cost and the store bounded. */
        if (len > PASSWORD_MAX_BYTES)
                return PASSWORD_POLICY_TOO_LONG;

        /* Count code points; control characters cannot be typed reliably. */
        for (size_t i = 0; i < len;) {
                unsigned cp;
                size_t step = utf8_next(s + i, len - i, &cp);
                if (step == 0 || cp < 0x20 || cp == 0x7f)
                        return PASSWORD_POLICY_INVALID;
                i += step;
                chars++;
        }
        return chars < PASSWORD_MIN_CHARS ? PASSWORD_POLICY_TOO_SHORT
                                          : PASSWORD_POLICY_OK;
}

int password_hash(const char *password, size_t len,
                  char out[PASSWORD_HASH_SIZE])
{
        assert(password && out);
        static_assert(crypto_pwhash_STRBYTES <= PASSWORD_HASH_SIZE,
                      "hash buffer too small");

        /* Interactive limits: about 0.1 s and 64 MiB per hash. */
        slot_take();
        int rc = crypto_pwhash_str_alg(out, password, len,
                                       crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                       crypto_pwhash_MEMLIMIT_INTERACTIVE,
                                       crypto_pwhash_ALG_ARGON2ID13);
        slot_give();
        return rc == 0 ? 0 : -1;
}

bool password_verify(const char *hash, const char *password, size_t len)
{
        assert(password);

        /* Unknown account: the same work against the decoy, then false. */
        if (!hash) {
                pthread_once(&decoy_once, make_decoy);
                slot_take();
                int rc = decoy_hash[0] ? crypto_pwhash_str_verify(decoy_hash,
                                                                  password, len)
                                       : -1;
                slot_give();
                if (rc == 0)
                        log_error("auth", "The decoy password hash matched.");
                return false;
        }
        slot_take();
        int rc = crypto_pwhash_str_verify(hash, password, len);
        slot_give();
        return rc == 0;
}
