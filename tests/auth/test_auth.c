/* The accounts service's own pieces (auth/auth): TOTP secrets sealed at
 * rest, and the settings read from the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "config/config.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
        return sodium_init() < 0 ? -1 : 0;
}

static void totp_secret_sealed(void **state)
{
        struct auth_service a = {0}, b = {0};
        char secret[TOTP_SECRET_B32_SIZE], back[TOTP_SECRET_B32_SIZE];
        char s1[ACCOUNT_TOTP_FIELD], s2[ACCOUNT_TOTP_FIELD];

        randombytes_buf(a.totp_key, sizeof a.totp_key);
        randombytes_buf(b.totp_key, sizeof b.totp_key);
        assert_int_equal(totp_secret_new(secret), 0);

        /* Round trip; a fresh nonce each time; the secret not visible. */
        assert_int_equal(auth_totp_seal(&a, secret, s1), 0);
        assert_int_equal(auth_totp_seal(&a, secret, s2), 0);
        assert_string_not_equal(s1, s2);
        assert_null(strstr(s1, secret));
        assert_int_equal(auth_totp_open(&a, s1, back), 0);
        assert_string_equal(back, secret);

        /* Another key, an altered byte, junk: refused. */
        assert_int_equal(auth_totp_open(&b, s1, back), -1);
        s1[100] = s1[100] == '0' ? '1' : '0';
        assert_int_equal(auth_totp_open(&a, s1, back), -1);
        assert_int_equal(auth_totp_open(&a, "", back), -1);
        assert_int_equal(auth_totp_open(&a, "zz", back), -1);
        assert_int_equal(auth_totp_seal(&a, "SHORT", s1), -1);
}

static void settings_from_environment(void **state)
{
        struct config cfg;
        struct auth_settings set;
        char err[256] = "";

        config_default(&cfg);
        unsetenv("FRAPI_RESET_TOKEN_TTL_S");
        assert_int_equal(auth_settings_load(&set, &cfg, err, sizeof err), 0);
        assert_int_equal(set.access_ttl_s, 3600);
        assert_int_equal(set.reset_ttl_s, 3600);
        assert_int_equal(set.verify_ttl_s, 86400);

        setenv("FRAPI_RESET_TOKEN_TTL_S", "5", 1);
        assert_int_equal(auth_settings_load(&set, &cfg, err, sizeof err), 0);
        assert_int_equal(set.reset_ttl_s, 5);

        /* A bad value is refused, naming the variable. */
        const char *bad[] = {"0", "-3", "abc", "5s", "99999999999"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                setenv("FRAPI_RESET_TOKEN_TTL_S", bad[i], 1);
                assert_int_equal(
                        auth_settings_load(&set, &cfg, err, sizeof err), -1);
                assert_non_null(strstr(err, "FRAPI_RESET_TOKEN_TTL_S"));
        }
        unsetenv("FRAPI_RESET_TOKEN_TTL_S");

        /* Links lose a trailing slash of the public URL. */
        strcpy(cfg.public_url, "https://frapi.example.com/");
        assert_int_equal(auth_settings_load(&set, &cfg, err, sizeof err), 0);
        assert_string_equal(set.public_url, "https://frapi.example.com");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(totp_secret_sealed),
                cmocka_unit_test(settings_from_environment),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
