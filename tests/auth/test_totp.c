/* RFC 6238 codes, the tolerance window and replay refusal (auth/totp),
 * with the clock set by the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/totp.h"

#include <liboath/oath.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* The RFC 6238 appendix B key "12345678901234567890" in base32. */
static const char rfc_key[] = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

static int setup(void **state)
{
        (void)state;
        return sodium_init() < 0 || totp_init() != 0 ? -1 : 0;
}

static void rfc6238_vectors(void **state)
{
        (void)state;
        /* SHA-1 rows of appendix B, last six digits of the eight. */
        static const struct {
                long long t;
                const char *code;
        } rows[] = {
                {59, "287082"},         {1111111109, "081804"},
                {1111111111, "050471"}, {1234567890, "005924"},
                {2000000000, "279037"}, {20000000000LL, "353130"},
        };
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
                char code[7];
                assert_int_equal(
                        totp_code(rfc_key, totp_step((time_t)rows[i].t), code),
                        0);
                assert_string_equal(code, rows[i].code);
        }
}

static void window_of_one_step(void **state)
{
        (void)state;
        time_t now = 1111111109;
        long long cur = totp_step(now), step = -7;
        char code[7];

        /* Previous, current and next step are accepted. */
        for (int d = -1; d <= 1; d++) {
                assert_int_equal(totp_code(rfc_key, cur + d, code), 0);
                assert_int_equal(totp_check(rfc_key, code, now, -1, &step),
                                 TOTP_ACCEPTED);
                assert_int_equal(step, cur + d);
        }

        /* Two steps away is wrong. */
        assert_int_equal(totp_code(rfc_key, cur - 2, code), 0);
        assert_int_equal(totp_check(rfc_key, code, now, -1, &step), TOTP_WRONG);
        assert_int_equal(totp_code(rfc_key, cur + 2, code), 0);
        assert_int_equal(totp_check(rfc_key, code, now, -1, &step), TOTP_WRONG);
}

/* Case S2: the same code twice in its window, and the previous step's
 * code after the current one was used. */
static void s2_replay_refused(void **state)
{
        (void)state;
        time_t now = 2000000000;
        long long cur = totp_step(now), last = -1, step = -1;
        char code[7], prev[7];

        assert_int_equal(totp_code(rfc_key, cur, code), 0);
        assert_int_equal(totp_check(rfc_key, code, now, last, &step),
                         TOTP_ACCEPTED);
        last = step;

        /* Ten seconds later, still in the window: refused. */
        assert_int_equal(totp_check(rfc_key, code, now + 10, last, &step),
                         TOTP_REPLAYED);

        /* The previous step's code, valid by time, is older than the last
         * accepted one: refused. */
        assert_int_equal(totp_code(rfc_key, cur - 1, prev), 0);
        assert_int_equal(totp_check(rfc_key, prev, now, last, &step),
                         TOTP_REPLAYED);

        /* The next step's code is new and passes. */
        assert_int_equal(totp_code(rfc_key, cur + 1, code), 0);
        assert_int_equal(totp_check(rfc_key, code, now + 30, last, &step),
                         TOTP_ACCEPTED);
        assert_int_equal(step, cur + 1);
}

static void malformed_codes(void **state)
{
        (void)state;
        long long step;
        const char *bad[] = {"",       "12345",  "1234567", "12345a",
                             " 12345", "12 456", "-12345"};

        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
                assert_int_equal(totp_check(rfc_key, bad[i], 59, -1, &step),
                                 TOTP_MALFORMED);
        assert_int_equal(totp_check(rfc_key, NULL, 59, -1, &step),
                         TOTP_MALFORMED);
        assert_int_equal(totp_check("!!!", "123456", 59, -1, &step),
                         TOTP_ERROR);
}

static void new_secret_uri_and_qr(void **state)
{
        (void)state;
        char a[TOTP_SECRET_B32_SIZE], b[TOTP_SECRET_B32_SIZE];

        assert_int_equal(totp_secret_new(a), 0);
        assert_int_equal(totp_secret_new(b), 0);
        assert_int_equal(strlen(a), 32);
        assert_string_not_equal(a, b);

        /* The account name is escaped; the parameters are RFC 6238's. */
        char *uri = totp_uri("FR-APIaaS", "zoë+a@example.com", a);
        assert_non_null(uri);
        assert_true(strncmp(uri,
                            "otpauth://totp/FR-APIaaS:zo%C3%AB%2Ba%40example"
                            ".com?secret=",
                            53) == 0);
        assert_non_null(strstr(uri, a));
        assert_non_null(strstr(uri, "&issuer=FR-APIaaS&"));
        assert_non_null(strstr(uri, "algorithm=SHA1&digits=6&period=30"));

        char *svg = totp_qr_svg(uri);
        assert_non_null(svg);
        assert_true(strncmp(svg, "<svg ", 5) == 0);
        assert_non_null(strstr(svg, "M4 4h1v1h-1z")); /* finder corner */
        assert_non_null(strstr(svg, "</svg>"));
        free(svg);
        free(uri);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(rfc6238_vectors),
                cmocka_unit_test(window_of_one_step),
                cmocka_unit_test(s2_replay_refused),
                cmocka_unit_test(malformed_codes),
                cmocka_unit_test(new_secret_uri_and_qr),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
