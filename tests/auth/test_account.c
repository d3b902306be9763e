/* Accounts on a real SQLite store in a throwaway directory: refresh
 * rotation and reuse (case S4), single-use mail tokens, newer resets
 * voiding older ones, password change ending sessions, TOTP step
 * compare-and-set (case S2), recovery codes, throttling (also with
 * concurrent attempts). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/account.h"
#include "store/store_sqlite.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct fixture {
        char dir[64];
        struct store *s;
        struct account_user u;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        char err[256];

        if (!f || sodium_init() < 0)
                return -1;
        snprintf(f->dir, sizeof f->dir, "/tmp/frapi-acct-XXXXXX");
        if (!mkdtemp(f->dir) ||
            store_sqlite_open(f->dir, &f->s, err, sizeof err) != STORE_OK ||
            account_migrate(f->s) != 0 ||
            account_create(f->s, "Ann@Example.com", "Ann", "$argon2id$x",
                           &f->u) != ACCOUNT_OK)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];

        store_close(f->s);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

static void user_and_organization(void **state)
{
        struct fixture *f = *state;
        struct account_user again;

        assert_true(strncmp(f->u.id, "usr_", 4) == 0);
        assert_true(strncmp(f->u.org_id, "org_", 4) == 0);
        assert_string_equal(f->u.role, "owner");
        assert_int_equal(f->u.verified_ms, 0);

        /* Emails are unique whatever their case. */
        assert_int_equal(account_create(f->s, "ann@example.COM", "Other",
                                        "$argon2id$y", &again),
                         ACCOUNT_CONFLICT);
        assert_int_equal(account_by_email(f->s, "ANN@example.com", &again),
                         ACCOUNT_OK);
        assert_string_equal(again.id, f->u.id);
        assert_int_equal(account_by_email(f->s, "nobody@example.com", &again),
                         ACCOUNT_NOT_FOUND);
}

/* Case S4: a refresh token works once; its reuse ends the session, and
 * then even the newest token is refused. */
static void s4_refresh_rotation_and_reuse(void **state)
{
        struct fixture *f = *state;
        char sid[STORE_ID_MAX], sid2[STORE_ID_MAX], uid[STORE_ID_MAX];
        char r1[TOKEN_SIZE], r2[TOKEN_SIZE], r3[TOKEN_SIZE];

        assert_int_equal(account_session_open(f->s, f->u.id, "10.0.0.1", "test",
                                              3600, sid, r1),
                         ACCOUNT_OK);
        assert_int_equal(account_session_check(f->s, sid, f->u.id), ACCOUNT_OK);

        /* r1 -> r2: the session stays, with a new token. */
        assert_int_equal(account_refresh_rotate(f->s, r1, 3600, "10.0.0.2",
                                                sid2, uid, r2),
                         ACCOUNT_OK);
        assert_string_equal(sid2, sid);
        assert_string_equal(uid, f->u.id);
        assert_string_not_equal(r1, r2);

        /* r1 again: reuse, the whole session ends. */
        assert_int_equal(account_refresh_rotate(f->s, r1, 3600, "10.9.9.9",
                                                sid2, uid, r3),
                         ACCOUNT_REUSED);
        assert_int_equal(account_session_check(f->s, sid, f->u.id),
                         ACCOUNT_REVOKED);
        assert_int_equal(account_refresh_rotate(f->s, r2, 3600, "10.0.0.2",
                                                sid2, uid, r3),
                         ACCOUNT_REVOKED);

        /* Junk and unknown tokens. */
        assert_int_equal(
                account_refresh_rotate(f->s, "junk", 3600, "", sid2, uid, r3),
                ACCOUNT_NOT_FOUND);
        token_new(r3);
        assert_int_equal(
                account_refresh_rotate(f->s, r3, 3600, "", sid2, uid, r2),
                ACCOUNT_NOT_FOUND);
}

/* Case S4, logout: after the session ends its refresh token is dead. */
static void s4_logout_kills_refresh(void **state)
{
        struct fixture *f = *state;
        char sid[STORE_ID_MAX], s2[STORE_ID_MAX], uid[STORE_ID_MAX];
        char r1[TOKEN_SIZE], r2[TOKEN_SIZE];

        assert_int_equal(
                account_session_open(f->s, f->u.id, "a", "b", 3600, sid, r1),
                ACCOUNT_OK);
        assert_int_equal(account_session_end(f->s, sid, f->u.id, "logout"),
                         ACCOUNT_OK);
        assert_int_equal(account_session_end(f->s, sid, f->u.id, "logout"),
                         ACCOUNT_NOT_FOUND);
        assert_int_equal(
                account_refresh_rotate(f->s, r1, 3600, "", s2, uid, r2),
                ACCOUNT_REVOKED);

        /* Another user's session cannot be ended by this one. */
        assert_int_equal(
                account_session_open(f->s, f->u.id, "a", "b", 3600, sid, r1),
                ACCOUNT_OK);
        assert_int_equal(account_session_end(f->s, sid, "usr_other", "x"),
                         ACCOUNT_NOT_FOUND);
        assert_int_equal(account_session_check(f->s, sid, f->u.id), ACCOUNT_OK);
}

static void refresh_expiry(void **state)
{
        struct fixture *f = *state;
        char sid[STORE_ID_MAX], s2[STORE_ID_MAX], uid[STORE_ID_MAX];
        char r1[TOKEN_SIZE], r2[TOKEN_SIZE];

        assert_int_equal(
                account_session_open(f->s, f->u.id, "a", "b", 1, sid, r1),
                ACCOUNT_OK);
        sleep(1);
        usleep(50000);
        assert_int_equal(account_refresh_rotate(f->s, r1, 1, "", s2, uid, r2),
                         ACCOUNT_EXPIRED);
}

static void mail_tokens_single_use(void **state)
{
        struct fixture *f = *state;
        char t1[TOKEN_SIZE], t2[TOKEN_SIZE], uid[STORE_ID_MAX];

        /* A verification link works once. */
        assert_int_equal(account_token_issue(f->s, f->u.id,
                                             ACCOUNT_TOKEN_VERIFY, 60, t1),
                         ACCOUNT_OK);
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_RESET, t1, true, uid),
                ACCOUNT_NOT_FOUND); /* wrong kind */
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_VERIFY, t1, true, uid),
                ACCOUNT_OK);
        assert_string_equal(uid, f->u.id);
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_VERIFY, t1, true, uid),
                ACCOUNT_NOT_FOUND);

        /* A newer reset voids the older one. */
        assert_int_equal(
                account_token_issue(f->s, f->u.id, ACCOUNT_TOKEN_RESET, 60, t1),
                ACCOUNT_OK);
        assert_int_equal(
                account_token_issue(f->s, f->u.id, ACCOUNT_TOKEN_RESET, 60, t2),
                ACCOUNT_OK);
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_RESET, t1, true, uid),
                ACCOUNT_NOT_FOUND);

        /* Peeking a token does not spend it. */
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_RESET, t2, false, uid),
                ACCOUNT_OK);

        /* A password change voids open resets and ends sessions. */
        char sid[STORE_ID_MAX], r[TOKEN_SIZE];
        assert_int_equal(
                account_session_open(f->s, f->u.id, "a", "b", 60, sid, r),
                ACCOUNT_OK);
        assert_int_equal(account_set_password(f->s, f->u.id, "$argon2id$z"),
                         ACCOUNT_OK);
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_RESET, t2, true, uid),
                ACCOUNT_NOT_FOUND);
        assert_int_equal(account_session_check(f->s, sid, f->u.id),
                         ACCOUNT_REVOKED);

        /* Expired tokens say so. */
        assert_int_equal(
                account_token_issue(f->s, f->u.id, ACCOUNT_TOKEN_RESET, 1, t1),
                ACCOUNT_OK);
        sleep(1);
        usleep(50000);
        assert_int_equal(
                account_token_use(f->s, ACCOUNT_TOKEN_RESET, t1, true, uid),
                ACCOUNT_EXPIRED);
}

/* Case S2 at the store: the last accepted step only moves forward. */
static void s2_totp_step_compare_and_set(void **state)
{
        struct fixture *f = *state;
        char codes[ACCOUNT_RECOVERY_CODES][TOKEN_RECOVERY_SIZE];
        struct account_user u;

        assert_int_equal(account_totp_enable(f->s, f->u.id, codes),
                         ACCOUNT_NOT_FOUND); /* nothing pending */
        assert_int_equal(
                account_totp_pending(f->s, f->u.id,
                                     "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"),
                ACCOUNT_OK);
        assert_int_equal(account_totp_enable(f->s, f->u.id, codes), ACCOUNT_OK);
        assert_int_equal(account_by_id(f->s, f->u.id, &u), ACCOUNT_OK);
        assert_true(u.totp_enabled);
        assert_string_equal(u.totp_secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_string_equal(u.totp_pending, "");

        assert_int_equal(account_totp_claim(f->s, f->u.id, 100), ACCOUNT_OK);
        assert_int_equal(account_totp_claim(f->s, f->u.id, 100),
                         ACCOUNT_REUSED);
        assert_int_equal(account_totp_claim(f->s, f->u.id, 99), ACCOUNT_REUSED);
        assert_int_equal(account_totp_claim(f->s, f->u.id, 101), ACCOUNT_OK);

        /* Recovery codes: each once, any case, with or without dash. */
        char upper[TOKEN_RECOVERY_SIZE];
        for (int i = 0; codes[3][i]; i++)
                upper[i] = (char)(codes[3][i] == '-'
                                          ? '-'
                                          : codes[3][i] -
                                                    32 * (codes[3][i] >= 'a'));
        upper[11] = '\0';
        assert_int_equal(account_recovery_use(f->s, f->u.id, upper),
                         ACCOUNT_OK);
        assert_int_equal(account_recovery_use(f->s, f->u.id, codes[3]),
                         ACCOUNT_NOT_FOUND);
        assert_int_equal(account_recovery_use(f->s, f->u.id, codes[4]),
                         ACCOUNT_OK);
        assert_int_equal(account_recovery_use(f->s, f->u.id, "aaaaa-aaaaa"),
                         ACCOUNT_NOT_FOUND);

        /* Disabling forgets everything. */
        assert_int_equal(account_totp_disable(f->s, f->u.id), ACCOUNT_OK);
        assert_int_equal(account_recovery_use(f->s, f->u.id, codes[5]),
                         ACCOUNT_NOT_FOUND);
}

static void throttling(void **state)
{
        struct fixture *f = *state;
        int retry = 0;

        for (int i = 0; i < 3; i++) {
                assert_int_equal(
                        account_throttle_check(f->s, "acct:x", 3, 60, &retry),
                        ACCOUNT_OK);
                assert_int_equal(account_throttle_fail(f->s, "acct:x"),
                                 ACCOUNT_OK);
        }
        assert_int_equal(account_throttle_check(f->s, "acct:x", 3, 60, &retry),
                         ACCOUNT_LIMITED);
        assert_in_range(retry, 59, 60);

        /* Other subjects are not affected; clearing frees this one. */
        assert_int_equal(account_throttle_check(f->s, "acct:y", 3, 60, &retry),
                         ACCOUNT_OK);
        assert_int_equal(account_throttle_clear(f->s, "acct:x"), ACCOUNT_OK);
        assert_int_equal(account_throttle_check(f->s, "acct:x", 3, 60, &retry),
                         ACCOUNT_OK);
}

/* take decides and counts in one step; forgive takes a success back; a
 * subject over its limit refuses the attempt for every subject. */
static void throttle_take_and_forgive(void **state)
{
        struct fixture *f = *state;
        int retry = 0;

        for (int i = 0; i < 3; i++) {
                struct account_throttle t = {"acct:x", 3, 0};
                assert_int_equal(account_throttle_take(f->s, &t, 1, 60, &retry),
                                 ACCOUNT_OK);
                assert_true(t.attempt > 0);
        }
        struct account_throttle t = {"acct:x", 3, 0};
        assert_int_equal(account_throttle_take(f->s, &t, 1, 60, &retry),
                         ACCOUNT_LIMITED);
        assert_in_range(retry, 59, 60);

        /* A refused attempt counts for none of its subjects. */
        struct account_throttle two[2] = {{"acct:x", 3, 0}, {"addr:a", 2, 0}};
        assert_int_equal(account_throttle_take(f->s, two, 2, 60, &retry),
                         ACCOUNT_LIMITED);
        assert_int_equal(account_throttle_check(f->s, "addr:a", 1, 60, &retry),
                         ACCOUNT_OK);

        /* A success taken back leaves room for the next attempt. */
        struct account_throttle y = {"acct:y", 1, 0};
        assert_int_equal(account_throttle_take(f->s, &y, 1, 60, &retry),
                         ACCOUNT_OK);
        assert_int_equal(account_throttle_check(f->s, "acct:y", 1, 60, &retry),
                         ACCOUNT_LIMITED);
        assert_int_equal(account_throttle_forgive(f->s, &y, 1), ACCOUNT_OK);
        assert_int_equal(account_throttle_take(f->s, &y, 1, 60, &retry),
                         ACCOUNT_OK);

        /* Forgiving after a clear is harmless. */
        assert_int_equal(account_throttle_clear(f->s, "acct:y"), ACCOUNT_OK);
        assert_int_equal(account_throttle_forgive(f->s, &y, 1), ACCOUNT_OK);
}

#define RACERS 24

struct racer {
        struct store *s;
        pthread_barrier_t *go;
        enum account_status got;
};

static void *race_take(void *arg)
{
        struct racer *r = arg;
        struct account_throttle t[2] = {{"acct:race", 5, 0},
                                        {"addr:race", 100, 0}};
        int retry = 0;

        pthread_barrier_wait(r->go);
        r->got = account_throttle_take(r->s, t, 2, 60, &retry);
        return NULL;
}

/* Many threads at once: exactly max of them pass, never more. */
static void throttle_take_concurrent(void **state)
{
        struct fixture *f = *state;
        pthread_t th[RACERS];
        struct racer r[RACERS];
        pthread_barrier_t go;
        int passed = 0, limited = 0;

        pthread_barrier_init(&go, NULL, RACERS);
        for (int i = 0; i < RACERS; i++) {
                r[i] = (struct racer){f->s, &go, ACCOUNT_ERROR};
                assert_int_equal(pthread_create(&th[i], NULL, race_take, &r[i]),
                                 0);
        }
        for (int i = 0; i < RACERS; i++) {
                pthread_join(th[i], NULL);
                passed += r[i].got == ACCOUNT_OK;
                limited += r[i].got == ACCOUNT_LIMITED;
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(passed, 5);
        assert_int_equal(limited, RACERS - 5);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(user_and_organization, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(s4_refresh_rotation_and_reuse,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(s4_logout_kills_refresh, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(refresh_expiry, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(mail_tokens_single_use, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(s2_totp_step_compare_and_set,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(throttling, setup, teardown),
                cmocka_unit_test_setup_teardown(throttle_take_and_forgive,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(throttle_take_concurrent, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
