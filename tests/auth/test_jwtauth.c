/* Access tokens (auth/jwtauth): issue and verify, every case S1 token,
 * and the secret file made at first start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/jwtauth.h"

#include <jwt.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static struct jwtauth_key key;
static const time_t now = 1900000000;

static int setup(void **state)
{
        (void)state;
        if (sodium_init() < 0)
                return -1;
        randombytes_buf(key.secret, sizeof key.secret);
        return 0;
}

static struct jwtauth_claims claims(long long exp)
{
        struct jwtauth_claims c = {
                .sub = "usr_1", .org = "org_1", .sid = "ses_1", .jti = "jti_1"};
        c.iat = now - 10;
        c.exp = exp;
        return c;
}

/* Builds a token with libjwt: alg and signing key chosen by the test,
 * exp_kind 0 = numeric exp, 1 = none, 2 = exp as a string. */
static char *forge(jwt_alg_t alg, const unsigned char *k, int klen,
                   long long exp, int exp_kind)
{
        jwt_t *jwt;
        char num[32];

        assert_int_equal(jwt_new(&jwt), 0);
        jwt_add_grant(jwt, "sub", "usr_1");
        jwt_add_grant(jwt, "org", "org_1");
        jwt_add_grant(jwt, "sid", "ses_1");
        jwt_add_grant(jwt, "jti", "jti_x");
        snprintf(num, sizeof num, "%lld", exp);
        if (exp_kind == 0)
                jwt_add_grant_int(jwt, "exp", (long)exp);
        else if (exp_kind == 2)
                jwt_add_grant(jwt, "exp", num);
        assert_int_equal(jwt_set_alg(jwt, alg, k, klen), 0);
        char *tok = jwt_encode_str(jwt);
        jwt_free(jwt);
        assert_non_null(tok);
        return tok;
}

static void issue_then_verify(void **state)
{
        (void)state;
        struct jwtauth_claims in = claims(now + 3600), out;
        char *tok = jwtauth_issue(&key, &in);

        assert_non_null(tok);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out), JWTAUTH_OK);
        assert_string_equal(out.sub, "usr_1");
        assert_string_equal(out.org, "org_1");
        assert_string_equal(out.sid, "ses_1");
        assert_string_equal(out.jti, "jti_1");
        assert_int_equal(out.exp, now + 3600);

        /* One second after exp it is dead; exactly at exp too. */
        assert_int_equal(jwtauth_verify(&key, tok, now + 3600, &out),
                         JWTAUTH_EXPIRED);

        /* Any altered byte of the payload breaks the signature. */
        char *dot = strchr(tok, '.');
        dot[3] = dot[3] == 'A' ? 'B' : 'A';
        assert_int_not_equal(jwtauth_verify(&key, tok, now, &out), JWTAUTH_OK);
        free(tok);
}

/* Case S1, row by row. */
static void s1_alg_none(void **state)
{
        (void)state;
        struct jwtauth_claims out;
        char *tok = forge(JWT_ALG_NONE, NULL, 0, now + 3600, 0);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out),
                         JWTAUTH_BAD_SIGNATURE);
        free(tok);

        /* The same header by hand, with and without the trailing dot. */
        const char *hand[] = {
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                "eyJzdWIiOiJ1c3JfMSIsIm9yZyI6Im9yZ18xIiwic2lkIjoic2VzXzEiLCJq"
                "dGkiOiJqIiwiZXhwIjo0MTAwMDAwMDAwfQ.",
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                "eyJzdWIiOiJ1c3JfMSIsIm9yZyI6Im9yZ18xIiwic2lkIjoic2VzXzEiLCJq"
                "dGkiOiJqIiwiZXhwIjo0MTAwMDAwMDAwfQ",
        };
        for (size_t i = 0; i < 2; i++)
                assert_int_not_equal(jwtauth_verify(&key, hand[i], now, &out),
                                     JWTAUTH_OK);
}

static void s1_wrong_key(void **state)
{
        (void)state;
        struct jwtauth_claims out;
        unsigned char other[JWTAUTH_SECRET_BYTES];

        randombytes_buf(other, sizeof other);
        char *tok = forge(JWT_ALG_HS256, other, sizeof other, now + 3600, 0);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out),
                         JWTAUTH_BAD_SIGNATURE);
        free(tok);

        /* Our own key but another HMAC: the algorithm is ours to fix. */
        tok = forge(JWT_ALG_HS512, key.secret, sizeof key.secret, now + 3600,
                    0);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out),
                         JWTAUTH_BAD_ALGORITHM);
        free(tok);
}

static void s1_expiry(void **state)
{
        (void)state;
        struct jwtauth_claims out;
        char *tok;

        tok = forge(JWT_ALG_HS256, key.secret, sizeof key.secret, now - 1, 0);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out), JWTAUTH_EXPIRED);
        free(tok);

        tok = forge(JWT_ALG_HS256, key.secret, sizeof key.secret, 0, 1);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out),
                         JWTAUTH_NO_EXPIRY);
        free(tok);

        tok = forge(JWT_ALG_HS256, key.secret, sizeof key.secret, now + 3600,
                    2);
        assert_int_equal(jwtauth_verify(&key, tok, now, &out),
                         JWTAUTH_NO_EXPIRY);
        free(tok);
}

/* A correctly signed HS256 token with grants (JSON text) and, when
 * header_crit, a "crit" header member. */
static char *forge_json(const char *grants, bool header_crit)
{
        jwt_t *jwt;

        assert_int_equal(jwt_new(&jwt), 0);
        assert_int_equal(jwt_add_grants_json(jwt, grants), 0);
        if (header_crit)
                assert_int_equal(
                        jwt_add_headers_json(jwt, "{\"crit\": [\"foo\"]}"), 0);
        assert_int_equal(
                jwt_set_alg(jwt, JWT_ALG_HS256, key.secret, sizeof key.secret),
                0);
        char *tok = jwt_encode_str(jwt);
        jwt_free(jwt);
        assert_non_null(tok);
        return tok;
}

/* Signed with the right key and algorithm, but not as this server makes
 * them: an extension in the header, an issue time from the future or
 * none, an expiry with a fraction. */
static void signed_but_not_ours(void **state)
{
        (void)state;
        struct jwtauth_claims out;
        char grants[512];
        const char *ids = "\"sub\": \"usr_1\", \"org\": \"org_1\", "
                          "\"sid\": \"ses_1\", \"jti\": \"jti_1\"";
        struct {
                const char *extra;
                bool crit;
                enum jwtauth_status want;
        } cases[] = {
                {"\"iat\": 1899999990, \"exp\": 1900003600", false, JWTAUTH_OK},
                {"\"iat\": 1900000050, \"exp\": 1900003600", false,
                 JWTAUTH_OK}, /* a minute of skew */
                {"\"iat\": 1899999990, \"exp\": 1900003600", true,
                 JWTAUTH_BAD_HEADER},
                {"\"iat\": 1900000100, \"exp\": 1900003600", false,
                 JWTAUTH_FUTURE},
                {"\"exp\": 1900003600", false, JWTAUTH_FUTURE},
                {"\"iat\": \"1899999990\", \"exp\": 1900003600", false,
                 JWTAUTH_FUTURE},
                {"\"iat\": 1899999990, \"exp\": 1900003600.5", false,
                 JWTAUTH_NO_EXPIRY},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
                snprintf(grants, sizeof grants, "{%s, %s}", ids,
                         cases[i].extra);
                char *tok = forge_json(grants, cases[i].crit);
                enum jwtauth_status st = jwtauth_verify(&key, tok, now, &out);
                if (st != cases[i].want)
                        fail_msg("case %zu: %s", i, jwtauth_status_text(st));
                free(tok);
        }
}

static void malformed_tokens(void **state)
{
        (void)state;
        struct jwtauth_claims out;
        char *big = malloc(JWTAUTH_MAX_TOKEN + 2);
        const char *bad[] = {"", ".", "..", "a.b.c", "abc", "\xff\xfe.x.y"};

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                assert_int_not_equal(jwtauth_verify(&key, bad[i], now, &out),
                                     JWTAUTH_OK);
        assert_int_equal(jwtauth_verify(&key, NULL, now, &out),
                         JWTAUTH_MALFORMED);
        memset(big, 'a', JWTAUTH_MAX_TOKEN + 1);
        big[JWTAUTH_MAX_TOKEN + 1] = '\0';
        assert_int_equal(jwtauth_verify(&key, big, now, &out),
                         JWTAUTH_MALFORMED);
        free(big);
}

static void secret_file_made_once_0600(void **state)
{
        (void)state;
        char dir[] = "/tmp/frapi-jwt-XXXXXX", path[64];
        struct jwtauth_key a, b;
        struct stat st;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof path, "%s/jwt.secret", dir);

        /* First start creates it, owner-only; the second reads the same. */
        assert_int_equal(jwtauth_key_load(dir, &a), 0);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_int_equal(jwtauth_key_load(dir, &b), 0);
        assert_memory_equal(a.secret, b.secret, sizeof a.secret);

        /* Readable by others: refused. */
        assert_int_equal(chmod(path, 0644), 0);
        assert_int_equal(jwtauth_key_load(dir, &b), -1);

        /* Damaged: refused. */
        assert_int_equal(chmod(path, 0600), 0);
        FILE *f = fopen(path, "w");
        fputs("not hex\n", f);
        fclose(f);
        assert_int_equal(jwtauth_key_load(dir, &b), -1);

        unlink(path);
        rmdir(dir);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(issue_then_verify),
                cmocka_unit_test(s1_alg_none),
                cmocka_unit_test(s1_wrong_key),
                cmocka_unit_test(s1_expiry),
                cmocka_unit_test(malformed_tokens),
                cmocka_unit_test(signed_but_not_ours),
                cmocka_unit_test(secret_file_made_once_0600),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
