/*
 * test_cli_admin.c - the management commands of the command line
 * (collections create, keys create, keys revoke) leave one audit event each,
 * naming what they acted on and never the key itself.
 */
#include "cli/cli.h"
#include "store/store_sqlite.h"

#include <fcntl.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* The audit events of dir's store, oldest first, as "event detail" lines. */
static void audit_lines(const char *dir, char *out, size_t cap)
{
        struct store *s = NULL;
        sqlite3_stmt *st = NULL;
        char err[256];
        size_t n = 0;

        assert_int_equal(store_sqlite_open(dir, &s, err, sizeof err), STORE_OK);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(s),
                                            "SELECT event, detail FROM "
                                            "audit_events ORDER BY rowid",
                                            -1, &st, NULL),
                         SQLITE_OK);
        out[0] = '\0';
        while (sqlite3_step(st) == SQLITE_ROW && n < cap)
                n += snprintf(out + n, cap - n, "%s %s\n",
                              sqlite3_column_text(st, 0),
                              sqlite3_column_text(st, 1));
        sqlite3_finalize(st);
        store_close(s);
}

/* Runs one command with its standard output (the JSON it prints) sent to
 * /dev/null, then puts standard output back. */
static int run(int (*cmd)(int, char **), char **argv)
{
        int argc = 0;
        while (argv[argc])
                argc++;
        fflush(stdout);
        int saved = dup(STDOUT_FILENO);
        int null = open("/dev/null", O_WRONLY);
        assert_true(saved >= 0 && null >= 0);
        dup2(null, STDOUT_FILENO);
        close(null);
        int rc = cmd(argc, argv);
        fflush(stdout);
        dup2(saved, STDOUT_FILENO);
        close(saved);
        return rc;
}

static void test_management_actions_are_audited(void **state)
{
        (void)state;
        char dir[] = "/tmp/frapi-admin-XXXXXX";
        char lines[4096];
        char coll[64], key_id[64];

        assert_non_null(mkdtemp(dir));

        /* A collection: one event naming its id. */
        char *c_argv[] = {"create", "Staff", "--data-dir", dir, NULL};
        assert_int_equal(run(cli_collections, c_argv), CLI_OK);
        audit_lines(dir, lines, sizeof lines);
        assert_int_equal(sscanf(lines, "collection.create %63s", coll), 1);
        assert_memory_equal(coll, "col_", 4);

        /* A key for it: a second event, with the key's id only. */
        char *k_argv[] = {"create", "--collection", coll, "--data-dir", dir,
                          NULL};
        assert_int_equal(run(cli_keys, k_argv), CLI_OK);
        audit_lines(dir, lines, sizeof lines);
        char *second = strchr(lines, '\n') + 1;
        assert_int_equal(sscanf(second, "api_key.create %63s", key_id), 1);
        assert_null(strstr(lines, "fr_live_"));

        /* Revoking it: a third event; revoking again changes nothing. */
        char *r_argv[] = {"revoke", key_id, "--data-dir", dir, NULL};
        assert_int_equal(run(cli_keys, r_argv), CLI_OK);
        assert_int_equal(run(cli_keys, r_argv), CLI_OK);
        audit_lines(dir, lines, sizeof lines);
        char *third = strchr(second, '\n') + 1;
        char want[128];
        snprintf(want, sizeof want, "api_key.revoke %s\n", key_id);
        assert_string_equal(third, want);

        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_management_actions_are_audited),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
