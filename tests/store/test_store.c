/*
 * test_store.c - the SQLite store: migrations, WAL mode, the readiness
 * ping, collections, faces (CRUD, isolation between collections,
 * pagination), API keys, idempotency.
 */
#include "store/store_sqlite.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

struct fixture {
        char dir[64];
        struct store *s;
        struct store_collection c;
};

static int setup(void **state)
{
        struct fixture *fx = calloc(1, sizeof *fx);
        char err[256];
        snprintf(fx->dir, sizeof fx->dir, "/tmp/frapi-store-XXXXXX");
        assert_non_null(mkdtemp(fx->dir));
        assert_int_equal(store_sqlite_open(fx->dir, &fx->s, err, sizeof err),
                         STORE_OK);
        fx->c.name = strdup("staff");
        fx->c.match_threshold = 0.4f;
        assert_int_equal(store_collection_create(fx->s, &fx->c), STORE_OK);
        *state = fx;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *fx = *state;
        char cmd[128];
        store_close(fx->s);
        store_collection_clear(&fx->c);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", fx->dir);
        assert_int_equal(system(cmd), 0);
        free(fx);
        return 0;
}

/* Inserts a face whose embedding is all `fill`. */
static void add_face(struct store *s, const char *coll, const char *ext,
                     const char *name, float fill, struct store_face *f)
{
        memset(f, 0, sizeof *f);
        snprintf(f->collection_id, sizeof f->collection_id, "%s", coll);
        f->external_id = ext ? strdup(ext) : NULL;
        f->name = strdup(name);
        f->metadata = strdup("{\"k\":1}");
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                f->embedding[i] = fill;
        f->box = (struct face_box){1, 2, 30, 40, 0.9f};
        f->quality = 0.8f;
        assert_int_equal(store_face_insert(s, f, NULL, 0), STORE_OK);
}

static void test_ids_increase(void **state)
{
        (void)state;
        char a[STORE_ID_MAX], b[STORE_ID_MAX];
        store_new_id("face_", a);
        for (int i = 0; i < 1000; i++) {
                store_new_id("face_", b);
                assert_int_equal(strlen(b), 31);
                assert_true(strcmp(a, b) < 0);
                memcpy(a, b, sizeof a);
        }
}

static void test_migrations_once_per_module(void **state)
{
        struct fixture *fx = *state;
        static const char *const steps[] = {
                "CREATE TABLE widgets (id INTEGER PRIMARY KEY);",
                "ALTER TABLE widgets ADD COLUMN label TEXT;",
        };

        /* The store's own module is at version 1 after open. */
        assert_int_equal(store_sqlite_version(fx->s, "store"), 1);
        assert_int_equal(store_sqlite_version(fx->s, "widgets"), 0);

        /* Another module's steps apply once, and again is a no-op. */
        assert_int_equal(store_sqlite_migrate(fx->s, "widgets", steps, 1),
                         STORE_OK);
        assert_int_equal(store_sqlite_version(fx->s, "widgets"), 1);
        assert_int_equal(store_sqlite_migrate(fx->s, "widgets", steps, 2),
                         STORE_OK);
        assert_int_equal(store_sqlite_migrate(fx->s, "widgets", steps, 2),
                         STORE_OK);
        assert_int_equal(store_sqlite_version(fx->s, "widgets"), 2);
        assert_int_equal(store_sqlite_version(fx->s, "store"), 1);
}

static void test_failing_migration_rolls_back(void **state)
{
        struct fixture *fx = *state;
        static const char *const steps[] = {
                "CREATE TABLE gadgets (id INTEGER PRIMARY KEY);"
                "CREATE TABLE gadgets (id INTEGER PRIMARY KEY);",
        };
        assert_int_equal(store_sqlite_migrate(fx->s, "gadgets", steps, 1),
                         STORE_ERROR);
        assert_int_equal(store_sqlite_version(fx->s, "gadgets"), 0);

        /* The first CREATE of the failed step was rolled back too. */
        sqlite3_stmt *st;
        store_sqlite_lock(fx->s);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(fx->s),
                                            "SELECT 1 FROM gadgets", -1, &st,
                                            NULL),
                         SQLITE_ERROR);
        store_sqlite_unlock(fx->s);
}

static void test_reopen_keeps_data(void **state)
{
        struct fixture *fx = *state;
        struct store_face f, g;
        char err[256];
        add_face(fx->s, fx->c.id, "p1", "Zoë 张伟 😀", 0.5f, &f);
        store_close(fx->s);
        assert_int_equal(store_sqlite_open(fx->dir, &fx->s, err, sizeof err),
                         STORE_OK);
        assert_int_equal(store_sqlite_version(fx->s, "store"), 1);
        assert_int_equal(store_face_get(fx->s, fx->c.id, f.id, &g), STORE_OK);
        assert_string_equal(g.name, "Zoë 张伟 😀");
        assert_memory_equal(g.embedding, f.embedding, sizeof f.embedding);
        store_face_clear(&f);
        store_face_clear(&g);
}

static void test_database_is_private(void **state)
{
        struct fixture *fx = *state;
        char path[128];
        struct stat sb;
        snprintf(path, sizeof path, "%s/frapi.db", fx->dir);
        assert_int_equal(stat(path, &sb), 0);
        assert_int_equal(sb.st_mode & 0777, 0600);
}

/* The journal mode as a connection of its own on path sees it. */
static void journal_mode_of(const char *path, char *out, size_t cap)
{
        sqlite3 *db;
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
                         SQLITE_OK);
        assert_int_equal(
                sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL),
                SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        sqlite3_close(db);
}

static void test_wal_mode(void **state)
{
        struct fixture *fx = *state;
        char path[128], mode[16];
        sqlite3_stmt *st;

        /* The store's own connection runs in WAL mode... */
        store_sqlite_lock(fx->s);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(fx->s),
                                            "PRAGMA journal_mode", -1, &st,
                                            NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        store_sqlite_unlock(fx->s);

        /* ...and the mode is recorded in the file, so every other process
         * (the CLI, a backup) reads it in WAL mode too. */
        snprintf(path, sizeof path, "%s/frapi.db", fx->dir);
        journal_mode_of(path, mode, sizeof mode);
        assert_string_equal(mode, "wal");
}

/* Runs sql on path through a connection of its own, as another process
 * would. */
static void exec_apart(const char *path, const char *sql)
{
        sqlite3 *db;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

static void test_ping(void **state)
{
        struct fixture *fx = *state;
        char path[128], moved[160], why[256];
        snprintf(path, sizeof path, "%s/frapi.db", fx->dir);
        snprintf(moved, sizeof moved, "%s/frapi.db.moved", fx->dir);

        /* A healthy store answers. */
        why[0] = 0;
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_OK);
        assert_string_equal(why, "");

        /* A schema this build did not make: not ready, until it is back. */
        exec_apart(path,
                   "INSERT INTO schema_migrations VALUES ('store', 2, 0)");
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_ERROR);
        assert_non_null(strstr(why, "schema version 2"));
        exec_apart(path, "DELETE FROM schema_migrations WHERE version = 2");
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_OK);

        /* The database file moved away, then back. */
        assert_int_equal(rename(path, moved), 0);
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_ERROR);
        assert_non_null(strstr(why, "deleted, moved or replaced"));
        assert_int_equal(rename(moved, path), 0);
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_OK);

        /* A query that fails: the record the ping reads is gone. */
        exec_apart(path, "DROP TABLE schema_migrations");
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_ERROR);
        assert_non_null(strstr(why, "does not answer"));

        /* Deleted while open: the store still reads the old file, and the
         * ping says that it is gone. */
        exec_apart(path,
                   "CREATE TABLE schema_migrations (module TEXT, "
                   "version INTEGER, applied_at INTEGER);"
                   "INSERT INTO schema_migrations VALUES ('store', 1, 0)");
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_OK);
        assert_int_equal(unlink(path), 0);
        assert_int_equal(store_ping(fx->s, why, sizeof why), STORE_ERROR);
        assert_non_null(strstr(why, "deleted, moved or replaced"));
}

static void test_collection_get(void **state)
{
        struct fixture *fx = *state;
        struct store_collection c;
        assert_int_equal(store_collection_get(fx->s, fx->c.id, &c), STORE_OK);
        assert_string_equal(c.name, "staff");
        assert_float_equal(c.match_threshold, 0.4f, 1e-6);
        assert_string_equal(c.model_version, FACE_MODEL_VERSION);
        store_collection_clear(&c);
        assert_int_equal(store_collection_get(fx->s, "col_nope", &c),
                         STORE_NOT_FOUND);
}

static void test_face_crud(void **state)
{
        struct fixture *fx = *state;
        struct store_face f, g;
        add_face(fx->s, fx->c.id, "p1", "Ann", 0.25f, &f);
        assert_true(strncmp(f.id, "face_", 5) == 0);

        /* Read back every field. */
        assert_int_equal(store_face_get(fx->s, fx->c.id, f.id, &g), STORE_OK);
        assert_string_equal(g.external_id, "p1");
        assert_string_equal(g.metadata, "{\"k\":1}");
        assert_float_equal(g.box.x2, 30.0f, 1e-6);
        assert_float_equal(g.embedding[511], 0.25f, 0);
        assert_int_equal(g.created_ms, f.created_ms);
        store_face_clear(&g);

        /* Update only the name: the rest stays. */
        struct store_face v = {.name = "Anna"};
        assert_int_equal(store_face_update(fx->s, fx->c.id, f.id,
                                           STORE_FACE_NAME, &v, &g),
                         STORE_OK);
        assert_string_equal(g.name, "Anna");
        assert_string_equal(g.external_id, "p1");
        assert_true(g.updated_ms >= g.created_ms);
        store_face_clear(&g);

        /* Clear the external id. */
        v.external_id = NULL;
        assert_int_equal(store_face_update(fx->s, fx->c.id, f.id,
                                           STORE_FACE_EXTERNAL_ID, &v, &g),
                         STORE_OK);
        assert_null(g.external_id);
        store_face_clear(&g);

        /* Delete once: ok; twice: not found; then get: not found. */
        assert_int_equal(store_face_delete(fx->s, fx->c.id, f.id), STORE_OK);
        assert_int_equal(store_face_delete(fx->s, fx->c.id, f.id),
                         STORE_NOT_FOUND);
        assert_int_equal(store_face_get(fx->s, fx->c.id, f.id, &g),
                         STORE_NOT_FOUND);
        assert_int_equal(store_face_update(fx->s, fx->c.id, f.id,
                                           STORE_FACE_NAME, &v, NULL),
                         STORE_NOT_FOUND);
        store_face_clear(&f);
}

static void test_collections_isolated(void **state)
{
        struct fixture *fx = *state;
        struct store_collection other = {.name = strdup("other")};
        struct store_face f, g;
        assert_int_equal(store_collection_create(fx->s, &other), STORE_OK);
        add_face(fx->s, other.id, "x", "X", 0.1f, &f);

        /* The face is invisible through the first collection. */
        assert_int_equal(store_face_get(fx->s, fx->c.id, f.id, &g),
                         STORE_NOT_FOUND);
        assert_int_equal(store_face_delete(fx->s, fx->c.id, f.id),
                         STORE_NOT_FOUND);
        struct store_face_page p;
        assert_int_equal(store_face_list(fx->s, fx->c.id, NULL, NULL, 10, &p),
                         STORE_OK);
        assert_int_equal(p.count, 0);
        store_face_page_clear(&p);

        /* A face in a collection that does not exist is refused. */
        struct store_face bad = f;
        bad.external_id = NULL;
        bad.name = "n";
        bad.metadata = "{}";
        snprintf(bad.collection_id, sizeof bad.collection_id, "col_nope");
        assert_int_equal(store_face_insert(fx->s, &bad, NULL, 0),
                         STORE_NOT_FOUND);
        store_face_clear(&f);
        store_collection_clear(&other);
}

static void test_pagination(void **state)
{
        struct fixture *fx = *state;
        char ids[7][STORE_ID_MAX];
        struct store_face f;
        for (int i = 0; i < 7; i++) {
                add_face(fx->s, fx->c.id, i % 2 ? "odd" : "even", "n", (float)i,
                         &f);
                memcpy(ids[i], f.id, STORE_ID_MAX);
                store_face_clear(&f);
        }

        /* Pages of 3, newest first, covering every face exactly once. */
        struct store_face_page p;
        char cursor[STORE_ID_MAX] = "";
        int seen = 0;
        for (int page = 0; page < 3; page++) {
                assert_int_equal(store_face_list(fx->s, fx->c.id, NULL,
                                                 cursor[0] ? cursor : NULL, 3,
                                                 &p),
                                 STORE_OK);
                for (int i = 0; i < p.count; i++)
                        assert_string_equal(p.faces[i].id, ids[6 - seen++]);
                assert_int_equal(p.more, page < 2);
                memcpy(cursor, p.faces[p.count - 1].id, STORE_ID_MAX);
                store_face_page_clear(&p);
        }
        assert_int_equal(seen, 7);

        /* Past the end: an empty page. */
        assert_int_equal(store_face_list(fx->s, fx->c.id, NULL, ids[0], 3, &p),
                         STORE_OK);
        assert_int_equal(p.count, 0);
        assert_false(p.more);
        store_face_page_clear(&p);

        /* The external_id filter. */
        assert_int_equal(store_face_list(fx->s, fx->c.id, "odd", NULL, 10, &p),
                         STORE_OK);
        assert_int_equal(p.count, 3);
        for (int i = 0; i < p.count; i++)
                assert_string_equal(p.faces[i].external_id, "odd");
        store_face_page_clear(&p);

        int64_t n = 0;
        assert_int_equal(store_face_count(fx->s, &n), STORE_OK);
        assert_int_equal(n, 7);
}

static int count_face(void *ctx, const struct store_face *f)
{
        (void)f;
        (*(int *)ctx)++;
        return 0;
}

static void test_face_each(void **state)
{
        struct fixture *fx = *state;
        struct store_face f;
        for (int i = 0; i < 4; i++) {
                add_face(fx->s, fx->c.id, NULL, "n", 0.0f, &f);
                store_face_clear(&f);
        }
        int n = 0;
        assert_int_equal(store_face_each(fx->s, count_face, &n), STORE_OK);
        assert_int_equal(n, 4);
}

static void test_originals_cascade(void **state)
{
        struct fixture *fx = *state;
        struct store_face f = {0};
        snprintf(f.collection_id, sizeof f.collection_id, "%s", fx->c.id);
        f.name = "n";
        f.metadata = "{}";
        assert_int_equal(store_face_insert(fx->s, &f, "JPEGBYTES", 9),
                         STORE_OK);
        assert_int_equal(store_face_delete(fx->s, fx->c.id, f.id), STORE_OK);

        /* Deleting the face deleted its kept photo. */
        sqlite3_stmt *st;
        store_sqlite_lock(fx->s);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(fx->s),
                                            "SELECT count(*) FROM originals",
                                            -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(sqlite3_column_int(st, 0), 0);
        sqlite3_finalize(st);
        store_sqlite_unlock(fx->s);
}

static void test_apikeys(void **state)
{
        struct fixture *fx = *state;
        struct store_apikey k = {.rpm = 60}, got;
        snprintf(k.collection_id, sizeof k.collection_id, "%s", fx->c.id);
        snprintf(k.prefix, sizeof k.prefix, "AbCdEfGh");
        memset(k.hash, 7, sizeof k.hash);
        k.allowlist = "[\"10.0.0.0/8\"]";
        assert_int_equal(store_apikey_insert(fx->s, &k), STORE_OK);
        assert_true(strncmp(k.id, "key_", 4) == 0);

        assert_int_equal(store_apikey_by_prefix(fx->s, "AbCdEfGh", &got),
                         STORE_OK);
        assert_string_equal(got.collection_id, fx->c.id);
        assert_memory_equal(got.hash, k.hash, sizeof k.hash);
        assert_int_equal(got.rpm, 60);
        assert_int_equal(got.revoked_ms, 0);
        assert_string_equal(got.allowlist, "[\"10.0.0.0/8\"]");
        store_apikey_clear(&got);

        /* Prefixes are unique; unknown ones are not found. */
        struct store_apikey dup = k;
        assert_int_equal(store_apikey_insert(fx->s, &dup), STORE_CONFLICT);
        assert_int_equal(store_apikey_by_prefix(fx->s, "zzzzzzzz", &got),
                         STORE_NOT_FOUND);
}

static void test_idempotency(void **state)
{
        struct fixture *fx = *state;
        struct store_idem rec = {.status = 201, .body = "{\"a\":1}"}, got;
        memset(rec.request_hash, 3, sizeof rec.request_hash);
        assert_int_equal(store_idem_get(fx->s, fx->c.id, "k1", &got),
                         STORE_NOT_FOUND);
        assert_int_equal(store_idem_put(fx->s, fx->c.id, "k1", &rec), STORE_OK);
        assert_int_equal(store_idem_put(fx->s, fx->c.id, "k1", &rec),
                         STORE_CONFLICT);
        assert_int_equal(store_idem_get(fx->s, fx->c.id, "k1", &got), STORE_OK);
        assert_int_equal(got.status, 201);
        assert_string_equal(got.body, "{\"a\":1}");
        assert_memory_equal(got.request_hash, rec.request_hash, 32);
        store_idem_clear(&got);

        /* Keys are per collection. */
        assert_int_equal(store_idem_get(fx->s, "col_other", "k1", &got),
                         STORE_NOT_FOUND);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_ids_increase),
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
                T(test_migrations_once_per_module),
                T(test_failing_migration_rolls_back),
                T(test_reopen_keeps_data),
                T(test_database_is_private),
                T(test_wal_mode),
                T(test_ping),
                T(test_collection_get),
                T(test_face_crud),
                T(test_collections_isolated),
                T(test_pagination),
                T(test_face_each),
                T(test_originals_cascade),
                T(test_apikeys),
                T(test_idempotency),
#undef T
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
