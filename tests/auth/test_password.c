/* Password policy and argon2id hashing (auth/password). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/password.h"

#include <sodium.h>
#include <string.h>

static int setup(void **state)
{
        (void)state;
        return sodium_init() < 0 ? -1 : 0;
}

static enum password_policy check(const char *pw)
{
        return password_check(pw, strlen(pw));
}

static void policy_counts_characters(void **state)
{
        (void)state;
        /* Nine characters are too few, ten are enough. */
        assert_int_equal(check("123456789"), PASSWORD_POLICY_TOO_SHORT);
        assert_int_equal(check("1234567890"), PASSWORD_POLICY_OK);
        assert_int_equal(check(""), PASSWORD_POLICY_TOO_SHORT);

        /* Nine two-byte characters are 18 bytes but still nine characters. */
        assert_int_equal(check("ééééééééé"), PASSWORD_POLICY_TOO_SHORT);
        assert_int_equal(check("éééééééééé"), PASSWORD_POLICY_OK);
}

static void policy_refuses_bad_bytes(void **state)
{
        (void)state;
        char big[PASSWORD_MAX_BYTES + 2];

        /* A NUL inside, control characters, broken UTF-8, overlong forms. */
        assert_int_equal(password_check("abcde\0fghijk", 12),
                         PASSWORD_POLICY_INVALID);
        assert_int_equal(check("abcdefghij\n"), PASSWORD_POLICY_INVALID);
        assert_int_equal(check("abcdefghij\xff"), PASSWORD_POLICY_INVALID);
        assert_int_equal(check("abcdefghij\xc3"), PASSWORD_POLICY_INVALID);
        assert_int_equal(check("abcdefghij\xc0\xaf"), PASSWORD_POLICY_INVALID);
        assert_int_equal(check("abcdefghij\xed\xa0\x80"),
                         PASSWORD_POLICY_INVALID);

        /* The upper bound, exactly at and one past. */
        memset(big, 'a', sizeof big);
        assert_int_equal(password_check(big, PASSWORD_MAX_BYTES),
                         PASSWORD_POLICY_OK);
        assert_int_equal(password_check(big, PASSWORD_MAX_BYTES + 1),
                         PASSWORD_POLICY_TOO_LONG);
}

static void hash_verifies_only_the_password(void **state)
{
        (void)state;
        char a[PASSWORD_HASH_SIZE], b[PASSWORD_HASH_SIZE];
        const char *pw = "correct horse battery";

        assert_int_equal(password_hash(pw, strlen(pw), a), 0);
        assert_int_equal(password_hash(pw, strlen(pw), b), 0);

        /* argon2id, salted: the same password never gives the same hash. */
        assert_non_null(strstr(a, "$argon2id$"));
        assert_string_not_equal(a, b);
        assert_null(strstr(a, pw));

        assert_true(password_verify(a, pw, strlen(pw)));
        assert_true(password_verify(b, pw, strlen(pw)));
        assert_false(password_verify(a, "correct horse batterY", 21));
        assert_false(password_verify(a, pw, strlen(pw) - 1));
        assert_false(password_verify("not a hash", pw, strlen(pw)));
}

static void unknown_account_never_verifies(void **state)
{
        (void)state;
        /* No hash: the decoy's work is done and the answer is false, even
         * for the decoy's own password. */
        assert_false(password_verify(NULL, "whatever password", 17));
        assert_false(password_verify(NULL, "decoy password nobody has", 25));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(policy_counts_characters),
                cmocka_unit_test(policy_refuses_bad_bytes),
                cmocka_unit_test(hash_verifies_only_the_password),
                cmocka_unit_test(unknown_account_never_verifies),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
