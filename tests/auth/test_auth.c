/* The accounts service's own pieces (auth/auth): TOTP secrets sealed at
 * rest, and the settings read from the environment. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/auth.h"
#include "config/config.h"
#include "store/store_sqlite.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
        (void)state;
        return sodium_init() < 0 ? -1 : 0;
}

static void totp_secret_sealed(void **state)
{
        (void)state;
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
        (void)state;
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

/* Column i of the only mail in the queue, copied into out. */
static void mail_column(struct store *s, const char *col, char *out, size_t n)
{
        char sql[128];
        sqlite3_stmt *st;

        snprintf(sql, sizeof sql, "SELECT %s FROM mail_queue", col);
        store_sqlite_lock(s);
        assert_int_equal(
                sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, &st, NULL),
                SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(out, n, "%s", sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
}

/* The verification mail: the link with a live token in both bodies, the
 * user's name escaped in the HTML one. */
static void verification_mail_composed(void **state)
{
        (void)state;
        char dir[] = "/tmp/frapi-authmail-XXXXXX", err[256], cmd[64];
        struct auth_service svc = {0};
        struct smtp_config none = {0};
        struct account_user u;
        char text[4096], html[4096], subject[256], uid[STORE_ID_MAX];

        assert_non_null(mkdtemp(dir));
        assert_int_equal(store_sqlite_open(dir, &svc.store, err, sizeof err),
                         STORE_OK);
        assert_int_equal(account_migrate(svc.store), 0);
        svc.mail = mail_queue_start(svc.store, &none, NULL, 1, 1);
        assert_non_null(svc.mail);
        svc.set.verify_ttl_s = 86400;
        strcpy(svc.set.public_url, "https://frapi.example.com");
        strcpy(svc.set.issuer, "FR-APIaaS");
        assert_int_equal(account_create(svc.store, "zoe@example.com",
                                        "<b>Zoë & \"Co\"</b>", "$argon2id$x",
                                        &u),
                         ACCOUNT_OK);

        assert_int_equal(auth_mail_verification(&svc, &u), 0);
        mail_column(svc.store, "subject", subject, sizeof subject);
        mail_column(svc.store, "text_body", text, sizeof text);
        mail_column(svc.store, "html_body", html, sizeof html);
        assert_string_equal(subject, "Confirm your email address");
        assert_non_null(strstr(text, "Hello <b>Zoë & \"Co\"</b>,"));
        assert_non_null(strstr(text, "within 24 hours"));
        assert_non_null(strstr(html, "Hello &lt;b&gt;Zoë &amp; "
                                     "&quot;Co&quot;&lt;/b&gt;,"));
        assert_null(strstr(html, "<b>"));

        /* The link's token is the one the store will accept, once. */
        const char *prefix =
                "https://frapi.example.com/api/v1/auth/verify-email?token=";
        char *at = strstr(text, prefix);
        assert_non_null(at);
        char token[TOKEN_SIZE];
        memcpy(token, at + strlen(prefix), TOKEN_SIZE - 1);
        token[TOKEN_SIZE - 1] = '\0';
        assert_non_null(strstr(html, token));
        assert_int_equal(account_token_use(svc.store, ACCOUNT_TOKEN_VERIFY,
                                           token, true, uid),
                         ACCOUNT_OK);
        assert_string_equal(uid, u.id);
        assert_int_equal(account_token_use(svc.store, ACCOUNT_TOKEN_VERIFY,
                                           token, true, uid),
                         ACCOUNT_NOT_FOUND);

        mail_queue_stop(svc.mail);
        store_close(svc.store);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(totp_secret_sealed),
                cmocka_unit_test(settings_from_environment),
                cmocka_unit_test(verification_mail_composed),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
