/*
 * store_sqlite.c - the store on SQLite.
 *
 * One connection serves every thread; a mutex serialises its use, and
 * statements are prepared once and reused.  Reads of one row take a few
 * microseconds, far below the engine's milliseconds per request, so one
 * connection is not what limits the server.
 */
#include "store/store_sqlite.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum stmt_id {
        ST_COLL_INSERT,
        ST_COLL_GET,
        ST_FACE_INSERT,
        ST_ORIG_INSERT,
        ST_FACE_GET,
        ST_FACE_DELETE,
        ST_FACE_COUNT,
        ST_KEY_INSERT,
        ST_KEY_BY_PREFIX,
        ST_IDEM_GET,
        ST_IDEM_PUT,
        ST_PING,
        ST_COUNT_,
};

#define FACE_COLS                                                              \
        "id, collection_id, external_id, name, metadata, embedding, "          \
        "model_version, box_x1, box_y1, box_x2, box_y2, box_score, "           \
        "quality, created_at, updated_at"

static const char *const stmt_sql[ST_COUNT_] = {
        [ST_COLL_INSERT] = "INSERT INTO collections (id, name, org_id, "
                           "match_threshold, keep_originals, model_version, "
                           "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [ST_COLL_GET] = "SELECT id, name, org_id, match_threshold, "
                        "keep_originals, model_version, created_at "
                        "FROM collections WHERE id = ?",
        [ST_FACE_INSERT] = "INSERT INTO faces (" FACE_COLS ") VALUES (?, ?, "
                           "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [ST_ORIG_INSERT] = "INSERT INTO originals (face_id, bytes) "
                           "VALUES (?, ?)",
        [ST_FACE_GET] = "SELECT " FACE_COLS " FROM faces WHERE id = ? "
                        "AND collection_id = ?",
        [ST_FACE_DELETE] = "DELETE FROM faces WHERE id = ? AND "
                           "collection_id = ?",
        [ST_FACE_COUNT] = "SELECT count(*) FROM faces",
        [ST_KEY_INSERT] = "INSERT INTO api_keys (id, collection_id, prefix, "
                          "hash, name, rpm, allowlist, created_at, "
                          "revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
        [ST_KEY_BY_PREFIX] = "SELECT id, collection_id, prefix, hash, name, "
                             "rpm, allowlist, created_at, revoked_at "
                             "FROM api_keys WHERE prefix = ?",
        [ST_IDEM_GET] = "SELECT request_hash, status, body, created_at FROM "
                        "idempotency WHERE collection_id = ? AND key = ?",
        [ST_IDEM_PUT] = "INSERT INTO idempotency (collection_id, key, "
                        "request_hash, status, body, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
        [ST_PING] = "SELECT coalesce(max(version), 0) FROM "
                    "schema_migrations WHERE module = 'store'",
};

/* The store's own schema, in order; never edit a step once released. */
static const char *const store_steps[] = {
        "CREATE TABLE collections ("
        " id TEXT PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " org_id TEXT,"
        " match_threshold REAL NOT NULL,"
        " keep_originals INTEGER NOT NULL DEFAULT 0,"
        " model_version TEXT NOT NULL,"
        " created_at INTEGER NOT NULL);"
        "CREATE TABLE faces ("
        " id TEXT PRIMARY KEY,"
        " collection_id TEXT NOT NULL"
        "  REFERENCES collections(id) ON DELETE CASCADE,"
        " external_id TEXT,"
        " name TEXT NOT NULL,"
        " metadata TEXT NOT NULL DEFAULT '{}',"
        " embedding BLOB NOT NULL,"
        " model_version TEXT NOT NULL,"
        " box_x1 REAL NOT NULL, box_y1 REAL NOT NULL,"
        " box_x2 REAL NOT NULL, box_y2 REAL NOT NULL,"
        " box_score REAL NOT NULL,"
        " quality REAL NOT NULL,"
        " created_at INTEGER NOT NULL,"
        " updated_at INTEGER NOT NULL);"
        "CREATE INDEX faces_by_collection ON faces (collection_id, id);"
        "CREATE INDEX faces_by_external_id"
        " ON faces (collection_id, external_id, id);"
        "CREATE TABLE api_keys ("
        " id TEXT PRIMARY KEY,"
        " collection_id TEXT NOT NULL"
        "  REFERENCES collections(id) ON DELETE CASCADE,"
        " prefix TEXT NOT NULL UNIQUE,"
        " hash BLOB NOT NULL,"
        " name TEXT,"
        " rpm INTEGER NOT NULL DEFAULT 0,"
        " allowlist TEXT NOT NULL DEFAULT '[]',"
        " created_at INTEGER NOT NULL,"
        " revoked_at INTEGER);"
        "CREATE TABLE idempotency ("
        " collection_id TEXT NOT NULL,"
        " key TEXT NOT NULL,"
        " request_hash BLOB NOT NULL,"
        " status INTEGER NOT NULL,"
        " body TEXT NOT NULL,"
        " created_at INTEGER NOT NULL,"
        " PRIMARY KEY (collection_id, key));"
        "CREATE TABLE originals ("
        " face_id TEXT PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,"
        " bytes BLOB NOT NULL);",
};

#define STORE_STEP_COUNT ((int)(sizeof store_steps / sizeof store_steps[0]))

struct sq_store {
        struct store base; /* first, so a struct store * is a sq_store * */
        sqlite3 *db;
        pthread_mutex_t lock;
        sqlite3_stmt *stmts[ST_COUNT_];
};

static struct sq_store *sq(struct store *s)
{
        return (struct sq_store *)s;
}

/* A prepared statement, reset and ready to bind; caller holds the lock. */
static sqlite3_stmt *stmt(struct sq_store *q, enum stmt_id id)
{
        if (!q->stmts[id] &&
            sqlite3_prepare_v3(q->db, stmt_sql[id], -1,
                               SQLITE_PREPARE_PERSISTENT, &q->stmts[id],
                               NULL) != SQLITE_OK) {
                log_error("store", "Preparing a statement failed: %s.",
                          sqlite3_errmsg(q->db));
                return NULL;
        }
        sqlite3_reset(q->stmts[id]);
        sqlite3_clear_bindings(q->stmts[id]);
        return q->stmts[id];
}

/* Logs a database failure and maps it to a store status. */
static enum store_status fail(struct sq_store *q, int rc, const char *what)
{
        if (rc == SQLITE_CONSTRAINT)
                return STORE_CONFLICT;
        log_error("store", "The database failed while %s: %s.", what,
                  sqlite3_errmsg(q->db));
        return STORE_ERROR;
}

static char *col_strdup(sqlite3_stmt *st, int col)
{
        const unsigned char *t = sqlite3_column_text(st, col);
        return t ? strdup((const char *)t) : NULL;
}

static void col_copy(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
        const unsigned char *t = sqlite3_column_text(st, col);
        snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
        if (v)
                sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
        else
                sqlite3_bind_null(st, i);
}

static int exec(struct sq_store *q, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(q->db, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
                log_error("store", "Running SQL failed: %s.", msg ? msg : "?");
                sqlite3_free(msg);
        }
        return rc;
}

/*
 * Migrations.
 */

static int version_locked(struct sq_store *q, const char *module)
{
        sqlite3_stmt *st = NULL;
        int v = -1;
        if (sqlite3_prepare_v2(q->db,
                               "SELECT coalesce(max(version), 0) FROM "
                               "schema_migrations WHERE module = ?",
                               -1, &st, NULL) != SQLITE_OK)
                goto out;
        sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int(st, 0);
out:
        sqlite3_finalize(st);
        return v;
}

int store_sqlite_version(struct store *s, const char *module)
{
        struct sq_store *q = sq(s);
        pthread_mutex_lock(&q->lock);
        int v = version_locked(q, module);
        pthread_mutex_unlock(&q->lock);
        return v;
}

/* Applies one step and records it, all or nothing; lock held. */
static enum store_status apply_step(struct sq_store *q, const char *module,
                                    int version, const char *sql)
{
        enum store_status res = STORE_ERROR;
        sqlite3_stmt *st = NULL;

        if (exec(q, "BEGIN IMMEDIATE") != SQLITE_OK)
                return STORE_ERROR;
        if (exec(q, sql) != SQLITE_OK)
                goto rollback;
        if (sqlite3_prepare_v2(
                    q->db,
                    "INSERT INTO schema_migrations (module, version, "
                    "applied_at) VALUES (?, ?, ?)",
                    -1, &st, NULL) != SQLITE_OK)
                goto rollback;
        sqlite3_bind_text(st, 1, module, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, version);
        sqlite3_bind_int64(st, 3, store_now_ms());
        if (sqlite3_step(st) != SQLITE_DONE)
                goto rollback;
        if (exec(q, "COMMIT") != SQLITE_OK)
                goto rollback;
        res = STORE_OK;
        log_info("store", "Applied migration %d of module %s.", version,
                 module);
        goto out;
rollback:
        log_error("store",
                  "Migration %d of module %s failed and was rolled "
                  "back.",
                  version, module);
        exec(q, "ROLLBACK");
out:
        sqlite3_finalize(st);
        return res;
}

enum store_status store_sqlite_migrate(struct store *s, const char *module,
                                       const char *const steps[], int n)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;

        pthread_mutex_lock(&q->lock);
        int have = version_locked(q, module);
        if (have < 0) {
                res = fail(q, SQLITE_ERROR, "reading migration versions");
                goto out;
        }

        /* Steps are numbered from 1; step i is steps[i - 1]. */
        for (int v = have + 1; v <= n && res == STORE_OK; v++)
                res = apply_step(q, module, v, steps[v - 1]);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

sqlite3 *store_sqlite_db(struct store *s)
{
        return sq(s)->db;
}

void store_sqlite_lock(struct store *s)
{
        pthread_mutex_lock(&sq(s)->lock);
}

void store_sqlite_unlock(struct store *s)
{
        pthread_mutex_unlock(&sq(s)->lock);
}

/*
 * Collections.
 */

static enum store_status sq_collection_create(struct store *s,
                                              struct store_collection *c)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;

        store_new_id("col_", c->id);
        c->created_ms = store_now_ms();
        if (!c->model_version[0])
                snprintf(c->model_version, sizeof c->model_version, "%s",
                         FACE_MODEL_VERSION);

        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_COLL_INSERT);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, c->name, -1, SQLITE_STATIC);
        bind_text_or_null(st, 3, c->org_id);
        sqlite3_bind_double(st, 4, c->match_threshold);
        sqlite3_bind_int(st, 5, c->keep_originals);
        sqlite3_bind_text(st, 6, c->model_version, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, c->created_ms);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                res = fail(q, rc, "creating a collection");
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_collection_get(struct store *s, const char *id,
                                           struct store_collection *out)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_NOT_FOUND;

        memset(out, 0, sizeof *out);
        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_COLL_GET);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                col_copy(st, 0, out->id, sizeof out->id);
                out->name = col_strdup(st, 1);
                out->org_id = col_strdup(st, 2);
                out->match_threshold = (float)sqlite3_column_double(st, 3);
                out->keep_originals = sqlite3_column_int(st, 4) != 0;
                col_copy(st, 5, out->model_version, sizeof out->model_version);
                out->created_ms = sqlite3_column_int64(st, 6);
                res = out->name ? STORE_OK : STORE_ERROR;
        } else if (rc != SQLITE_DONE) {
                res = fail(q, rc, "reading a collection");
        }
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

/*
 * Faces.
 */

/* Fills *f from a row selected with FACE_COLS. */
static enum store_status face_from_row(sqlite3_stmt *st, struct store_face *f)
{
        memset(f, 0, sizeof *f);
        col_copy(st, 0, f->id, sizeof f->id);
        col_copy(st, 1, f->collection_id, sizeof f->collection_id);
        f->external_id = col_strdup(st, 2);
        f->name = col_strdup(st, 3);
        f->metadata = col_strdup(st, 4);
        const void *emb = sqlite3_column_blob(st, 5);
        if (emb && sqlite3_column_bytes(st, 5) == (int)sizeof f->embedding)
                memcpy(f->embedding, emb, sizeof f->embedding);
        col_copy(st, 6, f->model_version, sizeof f->model_version);
        f->box.x1 = (float)sqlite3_column_double(st, 7);
        f->box.y1 = (float)sqlite3_column_double(st, 8);
        f->box.x2 = (float)sqlite3_column_double(st, 9);
        f->box.y2 = (float)sqlite3_column_double(st, 10);
        f->box.score = (float)sqlite3_column_double(st, 11);
        f->quality = (float)sqlite3_column_double(st, 12);
        f->created_ms = sqlite3_column_int64(st, 13);
        f->updated_ms = sqlite3_column_int64(st, 14);
        if (!f->name || !f->metadata) {
                store_face_clear(f);
                return STORE_ERROR;
        }
        return STORE_OK;
}

static enum store_status sq_face_insert(struct store *s, struct store_face *f,
                                        const void *original, size_t len)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;
        int rc;

        store_new_id("face_", f->id);
        f->created_ms = f->updated_ms = store_now_ms();
        if (!f->model_version[0])
                snprintf(f->model_version, sizeof f->model_version, "%s",
                         FACE_MODEL_VERSION);

        /* The face and its original photo commit together or not at all. */
        pthread_mutex_lock(&q->lock);
        if (exec(q, "BEGIN IMMEDIATE") != SQLITE_OK) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_stmt *st = stmt(q, ST_FACE_INSERT);
        if (!st) {
                res = STORE_ERROR;
                goto rollback;
        }
        sqlite3_bind_text(st, 1, f->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, f->collection_id, -1, SQLITE_STATIC);
        bind_text_or_null(st, 3, f->external_id);
        sqlite3_bind_text(st, 4, f->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, f->metadata, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, f->embedding, sizeof f->embedding,
                          SQLITE_STATIC);
        sqlite3_bind_text(st, 7, f->model_version, -1, SQLITE_STATIC);
        sqlite3_bind_double(st, 8, f->box.x1);
        sqlite3_bind_double(st, 9, f->box.y1);
        sqlite3_bind_double(st, 10, f->box.x2);
        sqlite3_bind_double(st, 11, f->box.y2);
        sqlite3_bind_double(st, 12, f->box.score);
        sqlite3_bind_double(st, 13, f->quality);
        sqlite3_bind_int64(st, 14, f->created_ms);
        sqlite3_bind_int64(st, 15, f->updated_ms);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
                res = fail(q, rc, "inserting a face");
                if (res == STORE_CONFLICT) /* the collection does not exist */
                        res = STORE_NOT_FOUND;
                goto rollback;
        }

        if (original) {
                st = stmt(q, ST_ORIG_INSERT);
                if (!st) {
                        res = STORE_ERROR;
                        goto rollback;
                }
                sqlite3_bind_text(st, 1, f->id, -1, SQLITE_STATIC);
                sqlite3_bind_blob64(st, 2, original, len, SQLITE_STATIC);
                rc = sqlite3_step(st);
                sqlite3_reset(st);
                if (rc != SQLITE_DONE) {
                        res = fail(q, rc, "keeping an original photo");
                        goto rollback;
                }
        }
        if (exec(q, "COMMIT") == SQLITE_OK)
                goto out;
        res = STORE_ERROR;
rollback:
        exec(q, "ROLLBACK");
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

/* Reads one face with the lock held. */
static enum store_status face_get_locked(struct sq_store *q,
                                         const char *collection, const char *id,
                                         struct store_face *out)
{
        enum store_status res = STORE_NOT_FOUND;
        sqlite3_stmt *st = stmt(q, ST_FACE_GET);
        if (!st)
                return STORE_ERROR;
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, collection, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                res = face_from_row(st, out);
        else if (rc != SQLITE_DONE)
                res = fail(q, rc, "reading a face");
        sqlite3_reset(st);
        return res;
}

static enum store_status sq_face_get(struct store *s, const char *collection,
                                     const char *id, struct store_face *out)
{
        struct sq_store *q = sq(s);
        pthread_mutex_lock(&q->lock);
        enum store_status res = face_get_locked(q, collection, id, out);
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_face_update(struct store *s, const char *collection,
                                        const char *id, unsigned fields,
                                        const struct store_face *values,
                                        struct store_face *out)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;
        sqlite3_stmt *st = NULL;

        /* Only the named columns change; the SQL is built from fixed parts. */
        char sql[256] = "UPDATE faces SET updated_at = ?1";
        if (fields & STORE_FACE_NAME)
                strcat(sql, ", name = ?2");
        if (fields & STORE_FACE_EXTERNAL_ID)
                strcat(sql, ", external_id = ?3");
        if (fields & STORE_FACE_METADATA)
                strcat(sql, ", metadata = ?4");
        strcat(sql, " WHERE id = ?5 AND collection_id = ?6");

        pthread_mutex_lock(&q->lock);
        if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK) {
                res = fail(q, SQLITE_ERROR, "preparing a face update");
                goto out;
        }
        sqlite3_bind_int64(st, 1, store_now_ms());
        if (fields & STORE_FACE_NAME)
                sqlite3_bind_text(st, 2, values->name, -1, SQLITE_STATIC);
        if (fields & STORE_FACE_EXTERNAL_ID)
                bind_text_or_null(st, 3, values->external_id);
        if (fields & STORE_FACE_METADATA)
                sqlite3_bind_text(st, 4, values->metadata, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, collection, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE) {
                res = fail(q, rc, "updating a face");
                goto out;
        }
        if (sqlite3_changes(q->db) == 0) {
                res = STORE_NOT_FOUND;
                goto out;
        }
        if (out)
                res = face_get_locked(q, collection, id, out);
out:
        sqlite3_finalize(st);
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_face_delete(struct store *s, const char *collection,
                                        const char *id)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;

        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_FACE_DELETE);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, collection, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                res = fail(q, rc, "deleting a face");
        else if (sqlite3_changes(q->db) == 0)
                res = STORE_NOT_FOUND;
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_face_list(struct store *s, const char *collection,
                                      const char *external_id,
                                      const char *before_id, int limit,
                                      struct store_face_page *out)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;
        sqlite3_stmt *st = NULL;
        int rc;

        /* One row beyond the limit tells whether another page follows. */
        memset(out, 0, sizeof *out);
        out->faces = calloc((size_t)limit, sizeof *out->faces);
        if (!out->faces)
                return STORE_ERROR;
        pthread_mutex_lock(&q->lock);
        rc = sqlite3_prepare_v2(
                q->db,
                "SELECT " FACE_COLS " FROM faces WHERE collection_id = ?1"
                " AND (?2 IS NULL OR external_id = ?2)"
                " AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
                -1, &st, NULL);
        if (rc != SQLITE_OK) {
                res = fail(q, rc, "preparing a face list");
                goto out;
        }
        sqlite3_bind_text(st, 1, collection, -1, SQLITE_STATIC);
        bind_text_or_null(st, 2, external_id);
        bind_text_or_null(st, 3, before_id);
        sqlite3_bind_int(st, 4, limit + 1);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (out->count == limit) {
                        out->more = true;
                        break;
                }
                res = face_from_row(st, &out->faces[out->count]);
                if (res != STORE_OK)
                        goto out;
                out->count++;
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                res = fail(q, rc, "listing faces");
out:
        sqlite3_finalize(st);
        pthread_mutex_unlock(&q->lock);
        if (res != STORE_OK)
                store_face_page_clear(out);
        return res;
}

static enum store_status sq_face_each(struct store *s, store_face_fn fn,
                                      void *ctx)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;
        sqlite3_stmt *st = NULL;
        struct store_face f;
        int rc;

        pthread_mutex_lock(&q->lock);
        rc = sqlite3_prepare_v2(q->db,
                                "SELECT " FACE_COLS " FROM faces ORDER BY id",
                                -1, &st, NULL);
        if (rc != SQLITE_OK) {
                res = fail(q, rc, "preparing the face walk");
                goto out;
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                res = face_from_row(st, &f);
                if (res != STORE_OK)
                        goto out;
                int stop = fn(ctx, &f);
                store_face_clear(&f);
                if (stop)
                        goto out;
        }
        if (rc != SQLITE_DONE)
                res = fail(q, rc, "walking the faces");
out:
        sqlite3_finalize(st);
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_face_count(struct store *s, int64_t *out)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;

        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_FACE_COUNT);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *out = sqlite3_column_int64(st, 0);
        else
                res = fail(q, rc, "counting faces");
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

/*
 * API keys.
 */

static enum store_status sq_apikey_insert(struct store *s,
                                          struct store_apikey *k)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;

        store_new_id("key_", k->id);
        k->created_ms = store_now_ms();
        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_KEY_INSERT);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, k->collection_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, k->prefix, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, k->hash, sizeof k->hash, SQLITE_STATIC);
        bind_text_or_null(st, 5, k->name);
        sqlite3_bind_int(st, 6, k->rpm);
        sqlite3_bind_text(st, 7, k->allowlist ? k->allowlist : "[]", -1,
                          SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, k->created_ms);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                res = fail(q, rc, "inserting an API key");
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_apikey_by_prefix(struct store *s,
                                             const char *prefix,
                                             struct store_apikey *out)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_NOT_FOUND;

        memset(out, 0, sizeof *out);
        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_KEY_BY_PREFIX);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                col_copy(st, 0, out->id, sizeof out->id);
                col_copy(st, 1, out->collection_id, sizeof out->collection_id);
                col_copy(st, 2, out->prefix, sizeof out->prefix);
                const void *h = sqlite3_column_blob(st, 3);
                if (h && sqlite3_column_bytes(st, 3) == (int)sizeof out->hash)
                        memcpy(out->hash, h, sizeof out->hash);
                out->name = col_strdup(st, 4);
                out->rpm = sqlite3_column_int(st, 5);
                out->allowlist = col_strdup(st, 6);
                out->created_ms = sqlite3_column_int64(st, 7);
                out->revoked_ms = sqlite3_column_int64(st, 8);
                res = STORE_OK;
        } else if (rc != SQLITE_DONE) {
                res = fail(q, rc, "looking up an API key");
        }
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

/*
 * Idempotency records.
 */

static enum store_status sq_idem_get(struct store *s, const char *collection,
                                     const char *key, struct store_idem *out)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_NOT_FOUND;

        memset(out, 0, sizeof *out);
        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_IDEM_GET);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                const void *h = sqlite3_column_blob(st, 0);
                if (h && sqlite3_column_bytes(st, 0) ==
                                 (int)sizeof out->request_hash)
                        memcpy(out->request_hash, h, sizeof out->request_hash);
                out->status = sqlite3_column_int(st, 1);
                out->body = col_strdup(st, 2);
                out->created_ms = sqlite3_column_int64(st, 3);
                res = out->body ? STORE_OK : STORE_ERROR;
        } else if (rc != SQLITE_DONE) {
                res = fail(q, rc, "reading an idempotency record");
        }
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

static enum store_status sq_idem_put(struct store *s, const char *collection,
                                     const char *key,
                                     const struct store_idem *rec)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_OK;

        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_IDEM_PUT);
        if (!st) {
                res = STORE_ERROR;
                goto out;
        }
        sqlite3_bind_text(st, 1, collection, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, rec->request_hash, sizeof rec->request_hash,
                          SQLITE_STATIC);
        sqlite3_bind_int(st, 4, rec->status);
        sqlite3_bind_text(st, 5, rec->body, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, store_now_ms());
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE)
                res = fail(q, rc, "recording an idempotent answer");
        sqlite3_reset(st);
out:
        pthread_mutex_unlock(&q->lock);
        return res;
}

/*
 * Readiness.
 */

static enum store_status sq_ping(struct store *s, char *why, size_t whylen)
{
        struct sq_store *q = sq(s);
        enum store_status res = STORE_ERROR;
        int moved = 0;

        /* A read of the store's own migration record: it goes through the
         * file (or the WAL), and proves the schema this server runs on. */
        pthread_mutex_lock(&q->lock);
        sqlite3_stmt *st = stmt(q, ST_PING);
        int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
        if (rc != SQLITE_ROW) {
                snprintf(why, whylen, "the database does not answer: %s",
                         sqlite3_errmsg(q->db));
                goto out;
        }
        int version = sqlite3_column_int(st, 0);
        if (version != STORE_STEP_COUNT) {
                snprintf(why, whylen,
                         "the database holds schema version %d of the store, "
                         "not %d",
                         version, STORE_STEP_COUNT);
                goto out;
        }

        /* A database file deleted or replaced under a running server still
         * answers on the old file, and whatever is written to it is lost at
         * the next start. */
        if (sqlite3_file_control(q->db, "main", SQLITE_FCNTL_HAS_MOVED,
                                 &moved) != SQLITE_OK ||
            moved) {
                snprintf(why, whylen,
                         "the database file was deleted, moved or replaced "
                         "while the server runs");
                goto out;
        }
        res = STORE_OK;
out:
        if (st)
                sqlite3_reset(st);
        pthread_mutex_unlock(&q->lock);
        return res;
}

/*
 * Opening and closing.
 */

static void sq_close(struct store *s)
{
        struct sq_store *q = sq(s);
        for (int i = 0; i < ST_COUNT_; i++)
                sqlite3_finalize(q->stmts[i]);
        int rc = sqlite3_close(q->db);
        if (rc == SQLITE_OK)
                log_info("store", "The store closed cleanly.");
        else
                log_error("store", "Closing the store failed: %s.",
                          sqlite3_errstr(rc));
        pthread_mutex_destroy(&q->lock);
        free(q);
}

static const struct store_ops sq_ops = {
        .close = sq_close,
        .collection_create = sq_collection_create,
        .collection_get = sq_collection_get,
        .face_insert = sq_face_insert,
        .face_get = sq_face_get,
        .face_update = sq_face_update,
        .face_delete = sq_face_delete,
        .face_list = sq_face_list,
        .face_each = sq_face_each,
        .face_count = sq_face_count,
        .apikey_insert = sq_apikey_insert,
        .apikey_by_prefix = sq_apikey_by_prefix,
        .idem_get = sq_idem_get,
        .idem_put = sq_idem_put,
        .ping = sq_ping,
};

enum store_status store_sqlite_open(const char *dir, struct store **out,
                                    char *err, size_t errlen)
{
        char path[4096];
        struct sq_store *q = NULL;
        int rc;

        *out = NULL;
        if (snprintf(path, sizeof path, "%s/frapi.db", dir) >=
            (int)sizeof path) {
                snprintf(err, errlen, "the data directory path is too long");
                return STORE_ERROR;
        }
        q = calloc(1, sizeof *q);
        if (!q) {
                snprintf(err, errlen, "out of memory");
                return STORE_ERROR;
        }
        q->base.ops = &sq_ops;
        pthread_mutex_init(&q->lock, NULL);

        /* The store serialises access itself, so SQLite's own mutexes are
         * not needed on this connection. */
        rc = sqlite3_open_v2(path, &q->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                     SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc != SQLITE_OK) {
                snprintf(err, errlen, "cannot open %s: %s", path,
                         q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
                goto fail;
        }

        /* Faces are biometric data: the file is for the service's user
         * alone (SQLite gives its -wal and -shm files the same mode). */
        if (chmod(path, 0600) != 0)
                log_warn("store", "Cannot make %s private: %s.", path,
                         strerror(errno));

        /* WAL lets readers of other processes (backups, the CLI) run during
         * writes; NORMAL sync is durable across process crashes in WAL. */
        sqlite3_busy_timeout(q->db, 5000);
        if (exec(q, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
                    "PRAGMA foreign_keys = ON;"
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " module TEXT NOT NULL, version INTEGER NOT NULL,"
                    " applied_at INTEGER NOT NULL,"
                    " PRIMARY KEY (module, version));") != SQLITE_OK) {
                snprintf(err, errlen, "cannot prepare %s: %s", path,
                         sqlite3_errmsg(q->db));
                goto fail;
        }
        if (store_sqlite_migrate(&q->base, "store", store_steps,
                                 STORE_STEP_COUNT) != STORE_OK) {
                snprintf(err, errlen, "the store's migrations failed on %s",
                         path);
                goto fail;
        }
        *out = &q->base;
        return STORE_OK;
fail:
        sqlite3_close(q->db);
        pthread_mutex_destroy(&q->lock);
        free(q);
        return STORE_ERROR;
}
