/*
 * test_api_input.c - the UTF-8 check that guards multipart text fields
 * (names, external ids) where no JSON parser has looked at the bytes.
 */
#include "api/api_input.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static bool ok(const char *s)
{
        return api_input_utf8_ok(s, strlen(s));
}

static void test_accepts_every_script(void **state)
{
        (void)state;
        assert_true(ok(""));
        assert_true(ok("plain ascii"));
        assert_true(ok("Zo\xc3\xab"));                       /* Zoë, NFC */
        assert_true(ok("Zoe\xcc\x88"));                      /* Zoë, NFD */
        assert_true(ok("\xe5\xbc\xa0\xe4\xbc\x9f"));         /* 张伟 */
        assert_true(ok("\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d")); /* שלום */
        assert_true(ok("\xf0\x9f\x98\x80"));                 /* 😀 */
        assert_true(ok("\xf4\x8f\xbf\xbf"));                 /* U+10FFFF */
        assert_true(ok("\xef\xbf\xbd"));                     /* U+FFFD */
}

static void test_refuses_malformed(void **state)
{
        (void)state;
        assert_false(ok("Zo\xc3("));          /* bad continuation */
        assert_false(ok("\xc3"));             /* cut short */
        assert_false(ok("abc\xe5\xbc"));      /* cut short at the end */
        assert_false(ok("\xf0\x9f\x98"));     /* cut short, 4-byte */
        assert_false(ok("\xc0\xaf"));         /* overlong '/' */
        assert_false(ok("\xe0\x80\xaf"));     /* overlong, 3 bytes */
        assert_false(ok("\xf0\x80\x80\xaf")); /* overlong, 4 bytes */
        assert_false(ok("\xed\xa0\x80"));     /* surrogate U+D800 */
        assert_false(ok("\xf4\x90\x80\x80")); /* above U+10FFFF */
        assert_false(ok("\xff"));
        assert_false(ok("\x80")); /* lone continuation */
}

static void test_length_is_respected(void **state)
{
        (void)state;
        /* Only len bytes are judged, so a cut in the middle is seen. */
        const char *s = "\xe5\xbc\xa0";
        assert_false(api_input_utf8_ok(s, 2));
        assert_true(api_input_utf8_ok(s, 3));
        assert_true(api_input_utf8_ok(s, 0));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_accepts_every_script),
                cmocka_unit_test(test_refuses_malformed),
                cmocka_unit_test(test_length_is_respected),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
