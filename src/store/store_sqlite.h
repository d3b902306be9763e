/*
 * store_sqlite.h - the SQLite backend of the store: one database file
 * frapi.db in the data directory, WAL mode, foreign keys on, a busy
 * timeout, and schema migrations kept per module.
 *
 * Other modules (accounts, rate limits) keep their own tables in the same
 * database: they call store_sqlite_migrate() with their own module name
 * and steps, and use the connection between store_sqlite_lock() and
 * store_sqlite_unlock().
 */
#ifndef FRAPI_STORE_SQLITE_H
#define FRAPI_STORE_SQLITE_H

#include "store/store.h"

#include <sqlite3.h>

/*
 * Opens (creating if needed) dir/frapi.db and applies the store's own
 * migrations.  dir must exist.  On success *out is a store the caller
 * closes with store_close().  On failure a message goes into err.
 */
enum store_status store_sqlite_open(const char *dir, struct store **out,
                                    char *err, size_t errlen);

/*
 * Applies steps[version] for every version from the module's recorded one
 * up to n, each in its own transaction together with its record in
 * schema_migrations(module, version).  Running it again is a no-op.
 * Steps are SQL scripts; a failing step is rolled back and reported.
 */
enum store_status store_sqlite_migrate(struct store *s, const char *module,
                                       const char *const steps[], int n);

/* The version recorded for module (0 when it has none); -1 on error. */
int store_sqlite_version(struct store *s, const char *module);

/*
 * The connection, for modules keeping their own tables.  Use it only
 * between store_sqlite_lock() and store_sqlite_unlock(): the store
 * serialises every use of its connection with that lock.
 */
sqlite3 *store_sqlite_db(struct store *s);
void store_sqlite_lock(struct store *s);
void store_sqlite_unlock(struct store *s);

#endif
