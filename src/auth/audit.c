#include "auth/audit.h"

#include "store/store_sqlite.h"
#include "util/log.h"

#include <assert.h>

static const char *const migrations[] = {
        "CREATE TABLE audit_events ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " at_ms INTEGER NOT NULL, event TEXT NOT NULL,"
        " outcome TEXT NOT NULL, user_id TEXT, org_id TEXT,"
        " address TEXT, user_agent TEXT, detail TEXT);"
        "CREATE INDEX audit_events_user ON audit_events(user_id, id);"
        "CREATE INDEX audit_events_org ON audit_events(org_id, id);",
};

int audit_migrate(struct store *s)
{
        return store_sqlite_migrate(s, "audit", migrations,
                                    sizeof migrations / sizeof *migrations) ==
                               STORE_OK
                       ? 0
                       : -1;
}

void audit_record(struct store *s, const char *event, const char *outcome,
                  const char *user_id, const char *org_id, const char *address,
                  const char *user_agent, const char *detail)
{
        sqlite3_stmt *st = NULL;

        assert(s && event && outcome);
        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        if (sqlite3_prepare_v2(db,
                               "INSERT INTO audit_events (at_ms, event, "
                               "outcome, user_id, org_id, address, "
                               "user_agent, detail) VALUES "
                               "(?, ?, ?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) != SQLITE_OK)
                goto fail;

        /* NULL stays NULL: an unknown user is not an empty one. */
        const char *text[] = {event,   outcome,    user_id, org_id,
                              address, user_agent, detail};
        sqlite3_bind_int64(st, 1, store_now_ms());
        for (int i = 0; i < 7; i++)
                sqlite3_bind_text(st, i + 2, text[i], -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
                goto fail;
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return;
fail:
        log_error("audit", "The %s event could not be recorded: %s.", event,
                  sqlite3_errmsg(db));
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
}

json_t *audit_list_user(struct store *s, const char *user_id, int limit)
{
        sqlite3_stmt *st = NULL;
        json_t *list = json_array();

        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        if (sqlite3_prepare_v2(db,
                               "SELECT at_ms, event, outcome, address, "
                               "user_agent FROM audit_events WHERE "
                               "user_id = ? ORDER BY id DESC LIMIT ?",
                               -1, &st, NULL) != SQLITE_OK) {
                json_decref(list);
                list = NULL;
                goto out;
        }
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, limit);
        while (sqlite3_step(st) == SQLITE_ROW) {
                const char *addr = (const char *)sqlite3_column_text(st, 3);
                const char *ua = (const char *)sqlite3_column_text(st, 4);
                json_array_append_new(
                        list, json_pack("{s:I, s:s, s:s, s:s*, s:s*}", "at",
                                        (json_int_t)sqlite3_column_int64(st, 0),
                                        "event", sqlite3_column_text(st, 1),
                                        "outcome", sqlite3_column_text(st, 2),
                                        "address", addr, "user_agent", ua));
        }
out:
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return list;
}
