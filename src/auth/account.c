#include "auth/account.h"

#include "store/store_sqlite.h"
#include "util/log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Schema of module "auth".  Secrets are digests (hex of BLAKE2b-256). */
static const char *const migrations[] = {
        "CREATE TABLE auth_orgs ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " owner_id TEXT NOT NULL, created_ms INTEGER NOT NULL);"
        "CREATE TABLE auth_users ("
        " id TEXT PRIMARY KEY,"
        " email TEXT NOT NULL UNIQUE COLLATE NOCASE,"
        " name TEXT NOT NULL, password_hash TEXT NOT NULL,"
        " org_id TEXT NOT NULL REFERENCES auth_orgs(id),"
        " role TEXT NOT NULL DEFAULT 'owner',"
        " verified_ms INTEGER NOT NULL DEFAULT 0,"
        " totp_enabled INTEGER NOT NULL DEFAULT 0,"
        " totp_secret TEXT NOT NULL DEFAULT '',"
        " totp_pending TEXT NOT NULL DEFAULT '',"
        " totp_last_step INTEGER NOT NULL DEFAULT -1,"
        " created_ms INTEGER NOT NULL);"
        "CREATE TABLE auth_sessions ("
        " id TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL REFERENCES auth_users(id) ON DELETE CASCADE,"
        " address TEXT NOT NULL, user_agent TEXT NOT NULL,"
        " created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,"
        " ended_ms INTEGER NOT NULL DEFAULT 0, end_reason TEXT);"
        "CREATE INDEX auth_sessions_user ON auth_sessions(user_id);"
        "CREATE TABLE auth_refresh ("
        " digest TEXT PRIMARY KEY,"
        " session_id TEXT NOT NULL"
        "  REFERENCES auth_sessions(id) ON DELETE CASCADE,"
        " created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
        " used_ms INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX auth_refresh_session ON auth_refresh(session_id);"
        "CREATE TABLE auth_tokens ("
        " digest TEXT PRIMARY KEY,"
        " user_id TEXT NOT NULL REFERENCES auth_users(id) ON DELETE CASCADE,"
        " kind INTEGER NOT NULL,"
        " created_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
        " used_ms INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX auth_tokens_user ON auth_tokens(user_id, kind);"
        "CREATE TABLE auth_recovery ("
        " user_id TEXT NOT NULL REFERENCES auth_users(id) ON DELETE CASCADE,"
        " digest TEXT NOT NULL, used_ms INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY (user_id, digest));"
        "CREATE TABLE auth_failures ("
        " subject TEXT NOT NULL, at_ms INTEGER NOT NULL);"
        "CREATE INDEX auth_failures_subject ON auth_failures(subject, at_ms);",
};

int account_migrate(struct store *s)
{
        return store_sqlite_migrate(s, "auth", migrations,
                                    sizeof migrations / sizeof *migrations) ==
                               STORE_OK
                       ? 0
                       : -1;
}

/*
 * Statement helpers.  The caller holds the store lock.
 */

/* Prepares sql and binds the arguments described by types: 's' a string
 * (NULL binds NULL), 'i' an int64_t.  NULL (logged) on failure. */
static sqlite3_stmt *query(sqlite3 *db, const char *sql, const char *types, ...)
{
        sqlite3_stmt *st = NULL;
        va_list ap;

        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
                log_error("auth", "A statement could not be prepared: %s.",
                          sqlite3_errmsg(db));
                return NULL;
        }
        va_start(ap, types);
        for (int i = 0; types[i]; i++) {
                if (types[i] == 's')
                        sqlite3_bind_text(st, i + 1, va_arg(ap, const char *),
                                          -1, SQLITE_TRANSIENT);
                else
                        sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
        }
        va_end(ap);
        return st;
}

/* Runs a statement that returns no rows; finalises it.  Returns the
 * number of rows changed, or -1. */
static int run(sqlite3 *db, sqlite3_stmt *st)
{
        if (!st)
                return -1;
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
                log_error("auth", "A statement failed: %s.",
                          sqlite3_errmsg(db));
                return -1;
        }
        return sqlite3_changes(db);
}

/* Takes the lock and opens a write transaction. */
static sqlite3 *begin(struct store *s)
{
        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) !=
            SQLITE_OK) {
                log_error("auth", "A transaction could not begin: %s.",
                          sqlite3_errmsg(db));
                store_sqlite_unlock(s);
                return NULL;
        }
        return db;
}

/* Commits when st is ACCOUNT_OK (or keep_on is true), else rolls back;
 * releases the lock.  Returns st, or ACCOUNT_ERROR if commit failed. */
static enum account_status finish(struct store *s, sqlite3 *db,
                                  enum account_status st, bool keep)
{
        const char *sql = st == ACCOUNT_OK || keep ? "COMMIT" : "ROLLBACK";
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
                log_error("auth", "A transaction could not end: %s.",
                          sqlite3_errmsg(db));
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                st = ACCOUNT_ERROR;
        }
        store_sqlite_unlock(s);
        return st;
}

/* Copies column i of st (text) into out of size n, "" for NULL. */
static void col_text(sqlite3_stmt *st, int i, char *out, size_t n)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        snprintf(out, n, "%s", t ? (const char *)t : "");
}

#define USER_COLS                                                              \
        "id, org_id, email, name, role, password_hash, verified_ms, "          \
        "totp_enabled, totp_secret, totp_pending, totp_last_step, created_ms"

static void read_user(sqlite3_stmt *st, struct account_user *u)
{
        memset(u, 0, sizeof *u);
        col_text(st, 0, u->id, sizeof u->id);
        col_text(st, 1, u->org_id, sizeof u->org_id);
        col_text(st, 2, u->email, sizeof u->email);
        col_text(st, 3, u->name, sizeof u->name);
        col_text(st, 4, u->role, sizeof u->role);
        col_text(st, 5, u->password_hash, sizeof u->password_hash);
        u->verified_ms = sqlite3_column_int64(st, 6);
        u->totp_enabled = sqlite3_column_int(st, 7) != 0;
        col_text(st, 8, u->totp_secret, sizeof u->totp_secret);
        col_text(st, 9, u->totp_pending, sizeof u->totp_pending);
        u->totp_last_step = sqlite3_column_int64(st, 10);
        u->created_ms = sqlite3_column_int64(st, 11);
}

/* Reads one user by a WHERE clause on one string value. */
static enum account_status user_where(struct store *s, const char *where,
                                      const char *value,
                                      struct account_user *out)
{
        char sql[256];
        enum account_status res = ACCOUNT_ERROR;

        snprintf(sql, sizeof sql, "SELECT " USER_COLS " FROM auth_users %s",
                 where);
        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = query(db, sql, "s", value);
        if (!st)
                goto out;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                read_user(st, out);
                res = ACCOUNT_OK;
        } else if (rc == SQLITE_DONE) {
                res = ACCOUNT_NOT_FOUND;
        } else {
                log_error("auth", "A user could not be read: %s.",
                          sqlite3_errmsg(db));
        }
        sqlite3_finalize(st);
out:
        store_sqlite_unlock(s);
        return res;
}

enum account_status account_by_email(struct store *s, const char *email,
                                     struct account_user *out)
{
        return user_where(s, "WHERE email = ?", email, out);
}

enum account_status account_by_id(struct store *s, const char *id,
                                  struct account_user *out)
{
        return user_where(s, "WHERE id = ?", id, out);
}

enum account_status account_create(struct store *s, const char *email,
                                   const char *name, const char *hash,
                                   struct account_user *out)
{
        char uid[STORE_ID_MAX], oid[STORE_ID_MAX], org_name[1024];
        int64_t now = store_now_ms();
        enum account_status res = ACCOUNT_ERROR;

        store_new_id("usr_", uid);
        store_new_id("org_", oid);
        snprintf(org_name, sizeof org_name, "%s's organization", name);

        /* The email's uniqueness is the database's to enforce. */
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        sqlite3_stmt *st = query(db, "SELECT 1 FROM auth_users WHERE email = ?",
                                 "s", email);
        if (!st)
                goto out;
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW) {
                res = ACCOUNT_CONFLICT;
                goto out;
        }

        /* The organization first: the user refers to it. */
        if (run(db, query(db,
                          "INSERT INTO auth_orgs (id, name, owner_id, "
                          "created_ms) VALUES (?, ?, ?, ?)",
                          "sssi", oid, org_name, uid, now)) != 1)
                goto out;
        if (run(db, query(db,
                          "INSERT INTO auth_users (id, email, name, "
                          "password_hash, org_id, role, created_ms) "
                          "VALUES (?, ?, ?, ?, ?, 'owner', ?)",
                          "sssssi", uid, email, name, hash, oid, now)) != 1)
                goto out;
        res = ACCOUNT_OK;
out:
        res = finish(s, db, res, false);
        if (res == ACCOUNT_OK)
                res = account_by_id(s, uid, out);
        return res;
}

enum account_status account_set_verified(struct store *s, const char *id)
{
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int n = run(db, query(db,
                              "UPDATE auth_users SET verified_ms = ? "
                              "WHERE id = ? AND verified_ms = 0",
                              "is", store_now_ms(), id));
        return finish(s, db, n < 0 ? ACCOUNT_ERROR : ACCOUNT_OK, false);
}

/* Ends every live session of user id (lock and transaction held). */
static int end_all_sessions(sqlite3 *db, const char *id, const char *why)
{
        return run(db, query(db,
                             "UPDATE auth_sessions SET ended_ms = ?, "
                             "end_reason = ? WHERE user_id = ? AND "
                             "ended_ms = 0",
                             "iss", store_now_ms(), why, id));
}

enum account_status account_set_password(struct store *s, const char *id,
                                         const char *hash)
{
        enum account_status res = ACCOUNT_ERROR;
        int64_t now = store_now_ms();

        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* New hash, no open reset link, no signed-in device: whoever
         * knew the old password is out. */
        if (run(db, query(db,
                          "UPDATE auth_users SET password_hash = ? "
                          "WHERE id = ?",
                          "ss", hash, id)) != 1)
                goto out;
        if (run(db, query(db,
                          "UPDATE auth_tokens SET used_ms = ? WHERE "
                          "user_id = ? AND kind = ? AND used_ms = 0",
                          "isi", now, id, (int64_t)ACCOUNT_TOKEN_RESET)) < 0 ||
            end_all_sessions(db, id, "password changed") < 0)
                goto out;
        res = ACCOUNT_OK;
out:
        return finish(s, db, res, false);
}

enum account_status account_token_issue(struct store *s, const char *id,
                                        enum account_token_kind kind, int ttl_s,
                                        char token[TOKEN_SIZE])
{
        char digest[TOKEN_DIGEST_SIZE];
        int64_t now = store_now_ms();
        enum account_status res = ACCOUNT_ERROR;

        token_new(token);
        token_digest(token, digest);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* A newer mail link voids the older ones of the same kind;
         * login challenges of two devices may be open side by side. */
        if (kind != ACCOUNT_TOKEN_CHALLENGE &&
            run(db, query(db,
                          "UPDATE auth_tokens SET used_ms = ? WHERE "
                          "user_id = ? AND kind = ? AND used_ms = 0",
                          "isi", now, id, (int64_t)kind)) < 0)
                goto out;
        if (run(db, query(db,
                          "INSERT INTO auth_tokens (digest, user_id, kind, "
                          "created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                          "ssiii", digest, id, (int64_t)kind, now,
                          now + (int64_t)ttl_s * 1000)) != 1)
                goto out;
        res = ACCOUNT_OK;
out:
        return finish(s, db, res, false);
}

enum account_status account_token_use(struct store *s,
                                      enum account_token_kind kind,
                                      const char *token, bool consume,
                                      char *user_id)
{
        char digest[TOKEN_DIGEST_SIZE];
        int64_t now = store_now_ms();
        enum account_status res = ACCOUNT_ERROR;

        if (!token_well_formed(token))
                return ACCOUNT_NOT_FOUND;
        token_digest(token, digest);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* Find the live token of this kind. */
        sqlite3_stmt *st = query(db,
                                 "SELECT user_id, expires_ms FROM "
                                 "auth_tokens WHERE digest = ? AND kind = ? "
                                 "AND used_ms = 0",
                                 "si", digest, (int64_t)kind);
        if (!st)
                goto out;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                col_text(st, 0, user_id, STORE_ID_MAX);
                res = sqlite3_column_int64(st, 1) > now ? ACCOUNT_OK
                                                        : ACCOUNT_EXPIRED;
        } else {
                res = rc == SQLITE_DONE ? ACCOUNT_NOT_FOUND : ACCOUNT_ERROR;
        }
        sqlite3_finalize(st);

        /* Spend it in the same transaction: a second use finds nothing. */
        if (res == ACCOUNT_OK && consume &&
            run(db, query(db,
                          "UPDATE auth_tokens SET used_ms = ? WHERE "
                          "digest = ? AND used_ms = 0",
                          "is", now, digest)) != 1)
                res = ACCOUNT_ERROR;
out:
        return finish(s, db, res, false);
}

/* Inserts a refresh token for session sid (lock and transaction held). */
static int insert_refresh(sqlite3 *db, const char *sid, int ttl_s,
                          char refresh[TOKEN_SIZE])
{
        char digest[TOKEN_DIGEST_SIZE];
        int64_t now = store_now_ms();

        token_new(refresh);
        token_digest(refresh, digest);
        return run(db, query(db,
                             "INSERT INTO auth_refresh (digest, session_id, "
                             "created_ms, expires_ms) VALUES (?, ?, ?, ?)",
                             "ssii", digest, sid, now,
                             now + (int64_t)ttl_s * 1000));
}

enum account_status account_session_open(struct store *s, const char *id,
                                         const char *address,
                                         const char *user_agent,
                                         int refresh_ttl_s, char *sid,
                                         char refresh[TOKEN_SIZE])
{
        enum account_status res = ACCOUNT_ERROR;
        int64_t now = store_now_ms();

        store_new_id("ses_", sid);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        if (run(db, query(db,
                          "INSERT INTO auth_sessions (id, user_id, address, "
                          "user_agent, created_ms, last_seen_ms) "
                          "VALUES (?, ?, ?, ?, ?, ?)",
                          "ssssii", sid, id, address ? address : "",
                          user_agent ? user_agent : "", now, now)) != 1 ||
            insert_refresh(db, sid, refresh_ttl_s, refresh) != 1)
                goto out;
        res = ACCOUNT_OK;
out:
        return finish(s, db, res, false);
}

enum account_status account_session_check(struct store *s, const char *sid,
                                          const char *id)
{
        enum account_status res = ACCOUNT_ERROR;
        int64_t now = store_now_ms();

        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);

        /* The live session of this user, and when it was last seen. */
        sqlite3_stmt *st = query(db,
                                 "SELECT last_seen_ms FROM auth_sessions "
                                 "WHERE id = ? AND user_id = ? AND "
                                 "ended_ms = 0",
                                 "ss", sid, id);
        if (!st)
                goto out;
        int rc = sqlite3_step(st);
        int64_t seen = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW) {
                res = rc == SQLITE_DONE ? ACCOUNT_REVOKED : ACCOUNT_ERROR;
                goto out;
        }

        /* "Last seen" to the minute costs one write a minute at most. */
        if (now - seen >= 60000)
                run(db, query(db,
                              "UPDATE auth_sessions SET last_seen_ms = ? "
                              "WHERE id = ?",
                              "is", now, sid));
        res = ACCOUNT_OK;
out:
        store_sqlite_unlock(s);
        return res;
}

enum account_status account_refresh_rotate(struct store *s, const char *old,
                                           int refresh_ttl_s,
                                           const char *address, char *sid,
                                           char *user_id,
                                           char refresh[TOKEN_SIZE])
{
        char digest[TOKEN_DIGEST_SIZE];
        int64_t now = store_now_ms();
        enum account_status res = ACCOUNT_ERROR;
        bool keep = false;

        if (!token_well_formed(old))
                return ACCOUNT_NOT_FOUND;
        token_digest(old, digest);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* The token with its session. */
        sqlite3_stmt *st = query(db,
                                 "SELECT r.session_id, r.expires_ms, "
                                 "r.used_ms, s.ended_ms, s.user_id FROM "
                                 "auth_refresh r JOIN auth_sessions s ON "
                                 "s.id = r.session_id WHERE r.digest = ?",
                                 "s", digest);
        if (!st)
                goto out;
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW) {
                sqlite3_finalize(st);
                res = rc == SQLITE_DONE ? ACCOUNT_NOT_FOUND : ACCOUNT_ERROR;
                goto out;
        }
        col_text(st, 0, sid, STORE_ID_MAX);
        col_text(st, 4, user_id, STORE_ID_MAX);
        int64_t expires = sqlite3_column_int64(st, 1);
        int64_t used = sqlite3_column_int64(st, 2);
        int64_t ended = sqlite3_column_int64(st, 3);
        sqlite3_finalize(st);

        /* A spent token presented again means it was copied: the whole
         * session ends, whoever holds its newest token (case S4). */
        if (used != 0) {
                res = ACCOUNT_REUSED;
                keep = true;
                if (ended == 0 &&
                    run(db, query(db,
                                  "UPDATE auth_sessions SET ended_ms = ?, "
                                  "end_reason = 'refresh token reused' "
                                  "WHERE id = ?",
                                  "is", now, sid)) != 1)
                        res = ACCOUNT_ERROR;
                goto out;
        }
        if (ended != 0) {
                res = ACCOUNT_REVOKED;
                goto out;
        }
        if (expires <= now) {
                res = ACCOUNT_EXPIRED;
                goto out;
        }

        /* Spend the old one, hand out its successor, note the device. */
        if (run(db, query(db,
                          "UPDATE auth_refresh SET used_ms = ? WHERE "
                          "digest = ? AND used_ms = 0",
                          "is", now, digest)) != 1 ||
            insert_refresh(db, sid, refresh_ttl_s, refresh) != 1 ||
            run(db, query(db,
                          "UPDATE auth_sessions SET last_seen_ms = ?, "
                          "address = ? WHERE id = ?",
                          "iss", now, address ? address : "", sid)) != 1)
                goto out;
        res = ACCOUNT_OK;
out:
        return finish(s, db, res, keep);
}

enum account_status account_refresh_owner(struct store *s, const char *token,
                                          char *sid, char *user_id)
{
        char digest[TOKEN_DIGEST_SIZE];
        enum account_status res = ACCOUNT_ERROR;

        if (!token_well_formed(token))
                return ACCOUNT_NOT_FOUND;
        token_digest(token, digest);
        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = query(db,
                                 "SELECT s.id, s.user_id FROM auth_refresh r "
                                 "JOIN auth_sessions s ON s.id = "
                                 "r.session_id WHERE r.digest = ?",
                                 "s", digest);
        if (!st)
                goto out;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                col_text(st, 0, sid, STORE_ID_MAX);
                col_text(st, 1, user_id, STORE_ID_MAX);
                res = ACCOUNT_OK;
        } else if (rc == SQLITE_DONE) {
                res = ACCOUNT_NOT_FOUND;
        }
        sqlite3_finalize(st);
out:
        store_sqlite_unlock(s);
        return res;
}

enum account_status account_session_end(struct store *s, const char *sid,
                                        const char *user_id, const char *reason)
{
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int n = run(db, query(db,
                              "UPDATE auth_sessions SET ended_ms = ?, "
                              "end_reason = ? WHERE id = ? AND ended_ms = 0 "
                              "AND (? IS NULL OR user_id = ?)",
                              "issss", store_now_ms(), reason, sid, user_id,
                              user_id));
        enum account_status res = n < 0    ? ACCOUNT_ERROR
                                  : n == 0 ? ACCOUNT_NOT_FOUND
                                           : ACCOUNT_OK;
        return finish(s, db, res, false);
}

json_t *account_sessions_json(struct store *s, const char *user_id,
                              const char *current_sid)
{
        json_t *list = json_array();

        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = query(db,
                                 "SELECT id, address, user_agent, "
                                 "created_ms, last_seen_ms FROM "
                                 "auth_sessions WHERE user_id = ? AND "
                                 "ended_ms = 0 ORDER BY id DESC",
                                 "s", user_id);
        if (!st) {
                json_decref(list);
                list = NULL;
                goto out;
        }

        /* One object per signed-in device. */
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *id = (const char *)sqlite3_column_text(st, 0);
                json_array_append_new(
                        list,
                        json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "id", id,
                                  "address",
                                  (const char *)sqlite3_column_text(st, 1),
                                  "user_agent",
                                  (const char *)sqlite3_column_text(st, 2),
                                  "created_at",
                                  (json_int_t)sqlite3_column_int64(st, 3),
                                  "last_seen_at",
                                  (json_int_t)sqlite3_column_int64(st, 4),
                                  "current",
                                  current_sid && strcmp(id, current_sid) == 0));
        }
        sqlite3_finalize(st);
out:
        store_sqlite_unlock(s);
        return list;
}

enum account_status account_totp_pending(struct store *s, const char *id,
                                         const char *secret)
{
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int n = run(db, query(db,
                              "UPDATE auth_users SET totp_pending = ? "
                              "WHERE id = ?",
                              "ss", secret, id));
        enum account_status res = n < 0    ? ACCOUNT_ERROR
                                  : n == 0 ? ACCOUNT_NOT_FOUND
                                           : ACCOUNT_OK;
        return finish(s, db, res, false);
}

enum account_status account_totp_claim(struct store *s, const char *id,
                                       long long step)
{
        /* Compare-and-set in one statement: of two requests with the same
         * code, exactly one changes the row (case S2). */
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int n = run(db, query(db,
                              "UPDATE auth_users SET totp_last_step = ? "
                              "WHERE id = ? AND totp_last_step < ?",
                              "isi", (int64_t)step, id, (int64_t)step));
        enum account_status res = n < 0    ? ACCOUNT_ERROR
                                  : n == 0 ? ACCOUNT_REUSED
                                           : ACCOUNT_OK;
        return finish(s, db, res, false);
}

enum account_status
account_totp_enable(struct store *s, const char *id,
                    char codes[ACCOUNT_RECOVERY_CODES][TOKEN_RECOVERY_SIZE])
{
        enum account_status res = ACCOUNT_ERROR;

        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* The pending secret becomes the secret. */
        int n = run(db, query(db,
                              "UPDATE auth_users SET totp_enabled = 1, "
                              "totp_secret = totp_pending, totp_pending = '' "
                              "WHERE id = ? AND totp_pending != ''",
                              "s", id));
        if (n == 0)
                res = ACCOUNT_NOT_FOUND;
        if (n != 1)
                goto out;

        /* Fresh recovery codes; older ones die. */
        if (run(db, query(db, "DELETE FROM auth_recovery WHERE user_id = ?",
                          "s", id)) < 0)
                goto out;
        for (int i = 0; i < ACCOUNT_RECOVERY_CODES; i++) {
                char digest[TOKEN_DIGEST_SIZE];
                token_recovery_new(codes[i]);
                token_digest(codes[i], digest);
                if (run(db, query(db,
                                  "INSERT INTO auth_recovery (user_id, "
                                  "digest) VALUES (?, ?)",
                                  "ss", id, digest)) != 1)
                        goto out;
        }
        res = ACCOUNT_OK;
out:
        return finish(s, db, res, false);
}

enum account_status account_totp_disable(struct store *s, const char *id)
{
        enum account_status res = ACCOUNT_ERROR;

        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        if (run(db, query(db,
                          "UPDATE auth_users SET totp_enabled = 0, "
                          "totp_secret = '', totp_pending = '' WHERE id = ?",
                          "s", id)) != 1 ||
            run(db, query(db, "DELETE FROM auth_recovery WHERE user_id = ?",
                          "s", id)) < 0)
                goto out;
        res = ACCOUNT_OK;
out:
        return finish(s, db, res, false);
}

enum account_status account_recovery_use(struct store *s, const char *id,
                                         const char *code)
{
        char digest[TOKEN_DIGEST_SIZE];

        if (!code || strlen(code) > 16)
                return ACCOUNT_NOT_FOUND;
        token_digest(code, digest);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int n = run(db, query(db,
                              "UPDATE auth_recovery SET used_ms = ? WHERE "
                              "user_id = ? AND digest = ? AND used_ms = 0",
                              "iss", store_now_ms(), id, digest));
        enum account_status res = n < 0    ? ACCOUNT_ERROR
                                  : n == 0 ? ACCOUNT_NOT_FOUND
                                           : ACCOUNT_OK;
        return finish(s, db, res, false);
}

/* Whether subject has max failures within window_s of now: 0 when not,
 * 1 when it has (*retry_after_s set), -1 on error.  The caller holds the
 * store lock. */
static int throttle_over(sqlite3 *db, const char *subject, int max,
                         int window_s, int64_t now, int *retry_after_s)
{
        int64_t since = now - (int64_t)window_s * 1000;
        int over = -1;

        /* The max-th newest failure in the window: once it leaves the
         * window, fewer than max remain and the subject may try again. */
        sqlite3_stmt *st = query(db,
                                 "SELECT at_ms FROM auth_failures WHERE "
                                 "subject = ? AND at_ms > ? ORDER BY at_ms "
                                 "DESC LIMIT 1 OFFSET ?",
                                 "sii", subject, since, (int64_t)(max - 1));
        if (!st)
                return -1;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                int64_t free_at =
                        sqlite3_column_int64(st, 0) + (int64_t)window_s * 1000;
                int64_t wait = (free_at - now + 999) / 1000;
                *retry_after_s = wait < 1 ? 1 : (int)wait;
                over = 1;
        } else if (rc == SQLITE_DONE) {
                over = 0;
        } else {
                log_error("auth", "The failure count could not be read: %s.",
                          sqlite3_errmsg(db));
        }
        sqlite3_finalize(st);
        return over;
}

enum account_status account_throttle_check(struct store *s, const char *subject,
                                           int max, int window_s,
                                           int *retry_after_s)
{
        assert(max > 0 && retry_after_s);
        store_sqlite_lock(s);
        int over = throttle_over(store_sqlite_db(s), subject, max, window_s,
                                 store_now_ms(), retry_after_s);
        store_sqlite_unlock(s);
        return over == 0   ? ACCOUNT_OK
               : over == 1 ? ACCOUNT_LIMITED
                           : ACCOUNT_ERROR;
}

enum account_status account_throttle_take(struct store *s,
                                          struct account_throttle *t, size_t n,
                                          int window_s, int *retry_after_s)
{
        int64_t now = store_now_ms();
        enum account_status res = ACCOUNT_OK;

        assert(t && n > 0 && retry_after_s);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* Every subject first: the attempt is refused when any is over,
         * and then it counts for none of them. */
        *retry_after_s = 0;
        for (size_t i = 0; i < n && res != ACCOUNT_ERROR; i++) {
                int wait = 0;
                assert(t[i].max > 0);
                int over = throttle_over(db, t[i].subject, t[i].max, window_s,
                                         now, &wait);
                if (over < 0)
                        res = ACCOUNT_ERROR;
                else if (over > 0) {
                        res = ACCOUNT_LIMITED;
                        if (wait > *retry_after_s)
                                *retry_after_s = wait;
                }
        }
        if (res != ACCOUNT_OK)
                return finish(s, db, res, false);

        /* Counted as failures now, inside the same transaction, so that
         * the next attempt's check already sees this one. */
        int changed = run(db, query(db,
                                    "DELETE FROM auth_failures WHERE "
                                    "at_ms < ?",
                                    "i", now - 86400000LL));
        for (size_t i = 0; i < n && changed >= 0; i++) {
                changed = run(db, query(db,
                                        "INSERT INTO auth_failures (subject, "
                                        "at_ms) VALUES (?, ?)",
                                        "si", t[i].subject, now));
                t[i].attempt = sqlite3_last_insert_rowid(db);
        }
        return finish(s, db, changed == 1 ? ACCOUNT_OK : ACCOUNT_ERROR, false);
}

enum account_status account_throttle_forgive(struct store *s,
                                             const struct account_throttle *t,
                                             size_t n)
{
        assert(t);
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int changed = 0;
        for (size_t i = 0; i < n && changed >= 0; i++)
                changed = run(db,
                              query(db,
                                    "DELETE FROM auth_failures WHERE "
                                    "rowid = ? AND subject = ?",
                                    "is", (int64_t)t[i].attempt, t[i].subject));
        return finish(s, db, changed < 0 ? ACCOUNT_ERROR : ACCOUNT_OK, false);
}

enum account_status account_throttle_fail(struct store *s, const char *subject)
{
        int64_t now = store_now_ms();

        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;

        /* Old failures are of no use any more: keep the table small. */
        int n = run(db, query(db, "DELETE FROM auth_failures WHERE at_ms < ?",
                              "i", now - 86400000LL));
        if (n >= 0)
                n = run(db, query(db,
                                  "INSERT INTO auth_failures (subject, "
                                  "at_ms) VALUES (?, ?)",
                                  "si", subject, now));
        return finish(s, db, n == 1 ? ACCOUNT_OK : ACCOUNT_ERROR, false);
}

enum account_status account_throttle_clear(struct store *s, const char *subject)
{
        sqlite3 *db = begin(s);
        if (!db)
                return ACCOUNT_ERROR;
        int n = run(db, query(db, "DELETE FROM auth_failures WHERE subject = ?",
                              "s", subject));
        return finish(s, db, n < 0 ? ACCOUNT_ERROR : ACCOUNT_OK, false);
}
