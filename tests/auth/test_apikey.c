/*
 * test_apikey.c - API keys: shape, lookup prefix, keyed hash, pepper file,
 * and that only the hash reaches the store.
 */
#include "auth/apikey.h"
#include "store/store_sqlite.h"

#include <setjmp.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
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

/* Whether any 8 characters in a row of secret occur in len bytes at p. */
static bool holds_piece(const void *p, size_t len, const char *secret)
{
        size_t n = strlen(secret);
        for (size_t i = 0; i + 8 <= n; i++)
                if (p && memmem(p, len, secret + i, 8))
                        return true;
        return false;
}

/* Whether a column of the api_keys row of key id holds a piece of secret. */
static bool row_holds(struct store *s, const char *id, const char *secret)
{
        sqlite3_stmt *st;
        bool found = false;

        store_sqlite_lock(s);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(s),
                                            "SELECT * FROM api_keys "
                                            "WHERE id = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        for (int i = 0; i < sqlite3_column_count(st); i++) {
                const void *v = sqlite3_column_blob(st, i);
                size_t len = (size_t)sqlite3_column_bytes(st, i);
                found = found || holds_piece(v, len, secret);
        }
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return found;
}

/* Whether the file at path (absent counts as empty) holds a piece of
 * secret. */
static bool file_holds(const char *path, const char *secret)
{
        FILE *f = fopen(path, "rb");
        if (!f)
                return false;
        char *buf = NULL;
        size_t len = 0, cap = 0, got;
        do {
                if (len == cap) {
                        cap = cap ? 2 * cap : 1 << 16;
                        buf = realloc(buf, cap);
                        assert_non_null(buf);
                }
                got = fread(buf + len, 1, cap - len, f);
                len += got;
        } while (got > 0);
        fclose(f);
        bool found = holds_piece(buf, len, secret);
        free(buf);
        return found;
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
        assert_string_equal(got.allowlist, "[]");

        /* The prefix in clear is exactly the documented non-secret part:
         * the first APIKEY_PREFIX_LEN characters after the tag. */
        assert_int_equal(strlen(got.prefix), APIKEY_PREFIX_LEN);
        assert_memory_equal(got.prefix, key + APIKEY_TAG_LEN,
                            APIKEY_PREFIX_LEN);

        /* The hash is keyed with the pepper: a copy of the database alone
         * does not let anyone check guesses with a plain BLAKE2b. */
        uint8_t plain[32];
        crypto_generichash(plain, sizeof plain, (const unsigned char *)key,
                           strlen(key), NULL, 0);
        assert_memory_not_equal(plain, got.hash, sizeof plain);

        /* No column of the stored row, and no byte of the database files,
         * holds the secret part of the key. */
        const char *secret = key + APIKEY_TAG_LEN + APIKEY_PREFIX_LEN;
        assert_int_equal(strlen(secret), APIKEY_RANDOM_LEN - APIKEY_PREFIX_LEN);
        assert_false(row_holds(s, got.id, secret));
        snprintf(path, sizeof path, "%s/frapi.db", dir);
        assert_false(file_holds(path, secret));
        snprintf(path, sizeof path, "%s/frapi.db-wal", dir);
        assert_false(file_holds(path, secret));
        store_apikey_clear(&got);
        store_apikey_clear(&rec);
        store_collection_clear(&c);
        store_close(s);
        snprintf(path, sizeof path, "%s/frapi.db", dir);
        assert_false(file_holds(path, secret));

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
