/*
 * test_apikey.c - API keys: shape, lookup prefix, keyed hash, pepper file,
 * and that only the hash reaches the store.
 */
#include "auth/apikey.h"
#include "store/store_sqlite.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

static void test_shape(void **state)
{
        (void)state;
        char a[APIKEY_LEN + 1], b[APIKEY_LEN + 1],
                prefix[APIKEY_PREFIX_LEN + 1];
        apikey_generate(a);
        apikey_generate(b);
        assert_int_equal(strlen(a), 36);
        assert_memory_equal(a, "fr_live_", 8);
        assert_string_not_equal(a, b);
        assert_true(apikey_parse(a, prefix));
        assert_memory_equal(prefix, a + 8, 8);
        assert_int_equal(strlen(prefix), 8);
}

static void test_parse_refuses(void **state)
{
        (void)state;
        char prefix[APIKEY_PREFIX_LEN + 1];
        char key[APIKEY_LEN + 2];
        apikey_generate(key);
        assert_false(apikey_parse(NULL, prefix));
        assert_false(apikey_parse("", prefix));
        assert_false(apikey_parse("fr_live_", prefix));
        assert_false(
                apikey_parse("fr_test_abcdefghijklmnopqrstuvwxyz12", prefix));
        key[20] = '-';
        assert_false(apikey_parse(key, prefix));
        apikey_generate(key);
        strcat(key, "x");
        assert_false(apikey_parse(key, prefix));
}

static void test_hash_verify(void **state)
{
        (void)state;
        uint8_t pepper[APIKEY_PEPPER_LEN] = {1}, other[APIKEY_PEPPER_LEN] = {2};
        uint8_t h[32];
        char key[APIKEY_LEN + 1];
        apikey_generate(key);
        apikey_hash(pepper, key, h);
        assert_true(apikey_verify(pepper, key, h));
        assert_false(apikey_verify(other, key, h));
        key[35] = key[35] == 'a' ? 'b' : 'a';
        assert_false(apikey_verify(pepper, key, h));
}

static void test_pepper_and_create(void **state)
{
        (void)state;
        char dir[] = "/tmp/frapi-apikey-XXXXXX", path[64], err[256];
        uint8_t p1[APIKEY_PEPPER_LEN], p2[APIKEY_PEPPER_LEN];
        struct stat sb;
        assert_non_null(mkdtemp(dir));

        /* Created once with mode 0600, then read back the same. */
        assert_int_equal(apikey_pepper_load(dir, p1, err, sizeof err), 0);
        snprintf(path, sizeof path, "%s/pepper", dir);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
        assert_int_equal(apikey_pepper_load(dir, p2, err, sizeof err), 0);
        assert_memory_equal(p1, p2, sizeof p1);

        /* A created key is found by its prefix and verifies; the stored
         * record holds no copy of the secret. */
        struct store *s;
        struct store_collection c = {.name = strdup("c")};
        struct store_apikey rec, got;
        char key[APIKEY_LEN + 1], prefix[APIKEY_PREFIX_LEN + 1];
        assert_int_equal(store_sqlite_open(dir, &s, err, sizeof err), STORE_OK);
        assert_int_equal(store_collection_create(s, &c), STORE_OK);
        assert_int_equal(
                apikey_create(s, p1, c.id, "prod", 60, NULL, &rec, key),
                STORE_OK);
        assert_true(apikey_parse(key, prefix));
        assert_int_equal(store_apikey_by_prefix(s, prefix, &got), STORE_OK);
        assert_true(apikey_verify(p1, key, got.hash));
        assert_null(strstr(got.prefix, key));
        assert_string_equal(got.allowlist, "[]");
        store_apikey_clear(&got);
        store_apikey_clear(&rec);
        store_collection_clear(&c);
        store_close(s);

        snprintf(path, sizeof path, "rm -rf '%s'", dir);
        assert_int_equal(system(path), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_shape),
                cmocka_unit_test(test_parse_refuses),
                cmocka_unit_test(test_hash_verify),
                cmocka_unit_test(test_pepper_and_create),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
