/*
 * keyguard.c - revocation, IP allowlist and rate limit of a verified API
 * key, its last use, and the SQL those need.
 */
#include "api/keyguard.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/ipallow.h"
#include "auth/keyuse.h"
#include "auth/ratelimit.h"
#include "store/store_sqlite.h"
#include "util/log.h"

struct keyguard {
        struct store *store;
        struct ratelimit *limiter;
        struct keyuse *use;
        struct ipallow_list trusted;
};

/* The last use of keys, in a table of its own (module "keyuse"). */
static const char *const keyuse_steps[] = {
        "CREATE TABLE api_key_use ("
        " key_id TEXT PRIMARY KEY REFERENCES api_keys(id) ON DELETE CASCADE,"
        " used_at INTEGER NOT NULL,"
        " addr TEXT NOT NULL);",
};

static enum store_status migrate(struct store *s)
{
        return store_sqlite_migrate(s, "keyuse", keyuse_steps,
                                    sizeof keyuse_steps /
                                            sizeof keyuse_steps[0]);
}

/* Runs sql on the store's connection; lock held. */
static int exec_locked(sqlite3 *db, const char *sql)
{
        char *msg = NULL;
        int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
                log_error("keys", "Running SQL failed: %s.", msg ? msg : "?");
                sqlite3_free(msg);
        }
        return rc;
}

/* The keyuse flush callback: one transaction per batch.  A key deleted in
 * the meantime is skipped, not an error. */
static int write_uses(void *ctx, const struct keyuse_record *recs, size_t n)
{
        struct store *s = ctx;
        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = NULL;
        bool begun = false;
        int rc = -1;

        /* All records in one transaction: one disk sync per flush. */
        store_sqlite_lock(s);
        begun = exec_locked(db, "BEGIN IMMEDIATE") == SQLITE_OK;
        if (!begun ||
            sqlite3_prepare_v2(
                    db,
                    "INSERT INTO api_key_use (key_id, used_at, addr) "
                    "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM api_keys "
                    "WHERE id = ?1) ON CONFLICT (key_id) DO UPDATE SET "
                    "used_at = excluded.used_at, addr = excluded.addr "
                    "WHERE excluded.used_at >= used_at",
                    -1, &st, NULL) != SQLITE_OK)
                goto out;
        for (size_t i = 0; i < n; i++) {
                sqlite3_reset(st);
                sqlite3_bind_text(st, 1, recs[i].key_id, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, recs[i].used_ms);
                sqlite3_bind_text(st, 3, recs[i].addr, -1, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        goto out;
        }
        if (exec_locked(db, "COMMIT") == SQLITE_OK)
                rc = 0;
out:
        /* On failure nothing was written; keyuse offers them again. */
        if (rc != 0) {
                log_error("keys",
                          "Writing the last use of API keys failed: %s.",
                          sqlite3_errmsg(db));
                if (begun)
                        exec_locked(db, "ROLLBACK");
        }
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return rc;
}

int keyguard_new_with(struct store *s, struct ratelimit *limiter,
                      const char *trusted_csv, int flush_ms,
                      struct keyguard **out, char *err, size_t errlen)
{
        assert(s && out && flush_ms > 0);
        char why[200];
        *out = NULL;
        struct keyguard *g = calloc(1, sizeof *g);
        if (!g) {
                ratelimit_free(limiter);
                snprintf(err, errlen, "out of memory");
                return -1;
        }
        g->store = s;
        g->limiter = limiter;

        /* A bad proxy list is a configuration error: refuse to start rather
         * than trust the wrong peers. */
        if (ipallow_list_parse_csv(trusted_csv, &g->trusted, why, sizeof why)) {
                snprintf(err, errlen, "trusted_proxies: %s", why);
                goto fail;
        }
        if (migrate(s) != STORE_OK) {
                snprintf(err, errlen, "the table of key use cannot be created");
                goto fail;
        }
        g->use = keyuse_new(write_uses, s, flush_ms);
        if (!g->limiter || !g->use) {
                snprintf(err, errlen, "out of memory");
                goto fail;
        }
        *out = g;
        return 0;
fail:
        keyguard_free(g);
        return -1;
}

int keyguard_new(struct store *s, const char *trusted_csv, int flush_ms,
                 struct keyguard **out, char *err, size_t errlen)
{
        return keyguard_new_with(s, ratelimit_memory_new(), trusted_csv,
                                 flush_ms, out, err, errlen);
}

void keyguard_free(struct keyguard *g)
{
        if (!g)
                return;
        keyuse_free(g->use);
        ratelimit_free(g->limiter);
        ipallow_list_free(&g->trusted);
        free(g);
}

/* Parses a stored allowlist (JSON array text) into *out; -1 when it does
 * not parse, which only a hand-edited database can cause. */
static int parse_stored(const char *text, struct ipallow_list *out)
{
        out->count = 0;
        out->ranges = NULL;
        if (!text || strcmp(text, "[]") == 0 || *text == '\0')
                return 0;
        json_t *arr = json_loads(text, 0, NULL);
        size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
        const char **entries = n ? calloc(n, sizeof *entries) : NULL;
        int rc = -1;
        if (!json_is_array(arr) || (n && !entries))
                goto done;
        for (size_t i = 0; i < n; i++) {
                entries[i] = json_string_value(json_array_get(arr, i));
                if (!entries[i])
                        goto done;
        }
        char err[200];
        rc = ipallow_list_parse(entries, n, out, err, sizeof err) ? -1 : 0;
done:
        free(entries);
        json_decref(arr);
        return rc;
}

/* Adds the three X-RateLimit-* headers. */
static void limit_headers(struct http_request *req,
                          const struct ratelimit_result *r)
{
        char v[32];
        snprintf(v, sizeof v, "%" PRIu32, r->limit);
        http_reply_header(req, "X-RateLimit-Limit", v);
        snprintf(v, sizeof v, "%" PRIu32, r->remaining);
        http_reply_header(req, "X-RateLimit-Remaining", v);
        snprintf(v, sizeof v, "%" PRId64, r->reset);
        http_reply_header(req, "X-RateLimit-Reset", v);
}

/*
 * Answers 429 for a request over its key's limit, in exactly the form the
 * public documentation shows: Retry-After, and an error object of code
 * and message only (no param, no request_id; the X-Request-Id header
 * still names the request), so clients written against that page parse
 * it as they expect.
 */
static void refuse_over_limit(struct http_request *req,
                              const struct store_apikey *key,
                              const struct ratelimit_result *r)
{
        char after[16], message[80];
        snprintf(after, sizeof after, "%" PRIu32, r->retry_after);
        snprintf(message, sizeof message,
                 "Rate limit exceeded. Try again in %" PRIu32 " seconds.",
                 r->retry_after);
        http_reply_header(req, "Retry-After", after);
        http_reply_json(req, 429,
                        json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error",
                                  "code", "RATE_LIMIT_EXCEEDED", "message",
                                  message));
        log_write(LOG_DEBUG, "keys", http_request_id(req),
                  "Refused API key %s: over its %" PRIu32
                  " requests per minute.",
                  key->id, r->limit);
}

bool keyguard_admit(struct keyguard *g, struct http_request *req,
                    const struct store_apikey *key)
{
        assert(g && req && key);
        struct ipallow_list allow = {0};
        bool ok = false;

        /* A revoked key stops here, whatever else holds. */
        if (key->revoked_ms != 0) {
                log_info("keys", "Refused revoked API key %s.", key->id);
                http_reply_error(req, 401, "API_KEY_REVOKED",
                                 "This API key was revoked.", "X-API-Key");
                return false;
        }

        /* The client: the socket's peer, or what trusted proxies say. */
        socklen_t len = 0;
        struct ipallow_addr peer = {{0}}, client;
        if (ipallow_from_sockaddr(http_request_peer(req, &len), &peer) != 0)
                log_warn("keys",
                         "A request came from a socket that is not IP.");
        enum ipallow_source src = ipallow_client(
                &peer, http_request_header_list(req, "X-Forwarded-For"),
                http_request_header_list(req, "Forwarded"), &g->trusted,
                &client);
        char addr[IPALLOW_ADDRSTRLEN];
        ipallow_format(&client, addr);

        /* The allowlist; an unknown client only passes an empty one. */
        bool broken = parse_stored(key->allowlist, &allow) != 0;
        if (broken)
                log_error("keys",
                          "The stored allowlist of API key %s is broken; "
                          "refusing its requests.",
                          key->id);
        if (broken ||
            (allow.count > 0 && (src == IPALLOW_UNKNOWN ||
                                 !ipallow_list_contains(&allow, &client)))) {
                if (src == IPALLOW_UNKNOWN)
                        snprintf(addr, sizeof addr, "an unknown address");
                log_info("keys",
                         "Refused API key %s from %s: not on its "
                         "allowlist.",
                         key->id, addr);
                http_reply_errorf(
                        req, 403, "IP_NOT_ALLOWED", NULL,
                        "Requests from %s are not allowed for this API "
                        "key.",
                        addr);
                goto done;
        }

        /* The rate limit, counted atomically; the headers go on every
         * answer, the refusal included. */
        struct ratelimit_result r;
        uint32_t rpm = key->rpm > 0 ? (uint32_t)key->rpm : KEYGUARD_DEFAULT_RPM;
        int64_t now = ratelimit_now_ms();
        if (ratelimit_consume(g->limiter, key->id, rpm, now, &r) != 0) {
                http_reply_header(req, "Retry-After", "1");
                http_reply_error(req, 503, "SERVER_BUSY",
                                 "The rate limiter is unavailable; try again.",
                                 NULL);
                goto done;
        }
        limit_headers(req, &r);
        if (!r.allowed) {
                refuse_over_limit(req, key, &r);
                goto done;
        }

        /* Admitted: remember the use, in memory only. */
        keyuse_touch(g->use, key->id, now, addr);
        ok = true;
done:
        ipallow_list_free(&allow);
        return ok;
}

bool keyguard_check(struct http_request *req, const struct keyauth_key *key,
                    void *userdata)
{
        return keyguard_admit(userdata, req, &key->rec);
}

char *keyguard_allowlist_text(const json_t *list, char *err, size_t errlen)
{
        if (!json_is_array(list)) {
                snprintf(err, errlen,
                         "allowed_ips must be an array of strings");
                return NULL;
        }
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
                struct ipallow_range r;
                char why[200];
                if (!json_is_string(v)) {
                        snprintf(err, errlen,
                                 "allowed_ips[%zu] must be a string", i);
                        return NULL;
                }
                if (ipallow_parse_range(json_string_value(v), &r, why,
                                        sizeof why) != 0) {
                        snprintf(err, errlen, "allowed_ips[%zu]: %s", i, why);
                        return NULL;
                }
        }
        char *text = json_dumps(list, JSON_COMPACT);
        if (!text)
                snprintf(err, errlen, "out of memory");
        return text;
}

enum store_status keyguard_revoke(struct store *s, const char *key_id)
{
        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = NULL;
        enum store_status res = STORE_ERROR;

        /* Revoke once; a second revoke keeps the first time. */
        store_sqlite_lock(s);
        if (sqlite3_prepare_v2(
                    db,
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ? "
                    "AND revoked_at IS NULL",
                    -1, &st, NULL) != SQLITE_OK)
                goto unlock;
        sqlite3_bind_int64(st, 1, store_now_ms());
        sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                goto unlock;
        if (sqlite3_changes(db) == 1) {
                res = STORE_OK;
                goto unlock;
        }

        /* Nothing changed: no such key, or revoked before. */
        sqlite3_finalize(st);
        st = NULL;
        if (sqlite3_prepare_v2(db, "SELECT 1 FROM api_keys WHERE id = ?", -1,
                               &st, NULL) != SQLITE_OK)
                goto unlock;
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        res = rc == SQLITE_ROW    ? STORE_CONFLICT
              : rc == SQLITE_DONE ? STORE_NOT_FOUND
                                  : STORE_ERROR;
unlock:
        if (res == STORE_ERROR)
                log_error("keys", "Revoking an API key failed: %s.",
                          sqlite3_errmsg(db));
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        if (res == STORE_OK)
                log_info("keys", "Revoked API key %s.", key_id);
        return res;
}

enum store_status keyguard_last_use(struct store *s, const char *key_id,
                                    int64_t *used_ms, char *addr,
                                    size_t addrlen)
{
        *used_ms = 0;
        if (addrlen)
                *addr = '\0';
        if (migrate(s) != STORE_OK)
                return STORE_ERROR;

        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = NULL;
        enum store_status res = STORE_ERROR;
        store_sqlite_lock(s);
        if (sqlite3_prepare_v2(db,
                               "SELECT used_at, addr FROM api_key_use WHERE "
                               "key_id = ?",
                               -1, &st, NULL) != SQLITE_OK)
                goto unlock;
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *used_ms = sqlite3_column_int64(st, 0);
                snprintf(addr, addrlen, "%s",
                         (const char *)sqlite3_column_text(st, 1));
        }
        res = rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : STORE_ERROR;
unlock:
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return res;
}

enum store_status keyguard_describe(struct store *s, const char *key_id,
                                    json_t **out)
{
        int64_t used_ms;
        char addr[IPALLOW_ADDRSTRLEN];
        *out = NULL;
        enum store_status res =
                keyguard_last_use(s, key_id, &used_ms, addr, sizeof addr);
        if (res != STORE_OK)
                return res;

        /* The key's row, without its hash. */
        sqlite3 *db = store_sqlite_db(s);
        sqlite3_stmt *st = NULL;
        res = STORE_ERROR;
        store_sqlite_lock(s);
        if (sqlite3_prepare_v2(db,
                               "SELECT collection_id, name, rpm, allowlist, "
                               "created_at, coalesce(revoked_at, 0) FROM "
                               "api_keys WHERE id = ?",
                               -1, &st, NULL) != SQLITE_OK)
                goto unlock;
        sqlite3_bind_text(st, 1, key_id, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                res = STORE_NOT_FOUND;
        if (rc != SQLITE_ROW)
                goto unlock;
        const char *name = (const char *)sqlite3_column_text(st, 1);
        json_t *allow =
                json_loads((const char *)sqlite3_column_text(st, 3), 0, NULL);
        *out = json_pack("{s:s, s:s, s:s?, s:i, s:o, s:I, s:I, s:I, s:o}", "id",
                         key_id, "collection_id", sqlite3_column_text(st, 0),
                         "name", name, "rpm",
                         sqlite3_column_int(st, 2) > 0
                                 ? sqlite3_column_int(st, 2)
                                 : KEYGUARD_DEFAULT_RPM,
                         "allowed_ips", allow ? allow : json_array(),
                         "created_ms", (json_int_t)sqlite3_column_int64(st, 4),
                         "revoked_ms", (json_int_t)sqlite3_column_int64(st, 5),
                         "last_used_ms", (json_int_t)used_ms, "last_used_ip",
                         used_ms ? json_string(addr) : json_null());
        res = *out ? STORE_OK : STORE_ERROR;
unlock:
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return res;
}
