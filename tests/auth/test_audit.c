/* The audit trail (auth/audit): events recorded with who, where and how
 * they ended, listed newest first, and NULL fields kept as absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/audit.h"
#include "store/store_sqlite.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void records_and_lists(void **state)
{
        (void)state;
        char dir[] = "/tmp/frapi-audit-XXXXXX", err[256], cmd[64];
        struct store *s = NULL;

        assert_non_null(mkdtemp(dir));
        assert_int_equal(store_sqlite_open(dir, &s, err, sizeof err), STORE_OK);
        assert_int_equal(audit_migrate(s), 0);
        assert_int_equal(audit_migrate(s), 0); /* twice is a no-op */

        audit_record(s, "login", "wrong_password", "usr_1", "org_1", "10.0.0.1",
                     "curl/8", NULL);
        audit_record(s, "login", "ok", "usr_1", "org_1", "10.0.0.1", "curl/8",
                     NULL);
        audit_record(s, "login", "unknown_email", NULL, NULL, "10.0.0.2", NULL,
                     NULL);
        audit_record(s, "logout", "ok", "usr_2", NULL, NULL, NULL, "ses_x");

        /* Newest first, only the user's own, limit respected. */
        json_t *list = audit_list_user(s, "usr_1", 10);
        assert_non_null(list);
        assert_int_equal(json_array_size(list), 2);
        json_t *first = json_array_get(list, 0);
        assert_string_equal(
                json_string_value(json_object_get(first, "outcome")), "ok");
        assert_string_equal(
                json_string_value(json_object_get(first, "address")),
                "10.0.0.1");
        assert_string_equal(
                json_string_value(json_object_get(first, "user_agent")),
                "curl/8");
        assert_true(json_integer_value(json_object_get(first, "at")) > 0);
        json_decref(list);

        list = audit_list_user(s, "usr_1", 1);
        assert_int_equal(json_array_size(list), 1);
        json_decref(list);

        /* Absent fields stay absent rather than becoming "". */
        list = audit_list_user(s, "usr_2", 10);
        assert_int_equal(json_array_size(list), 1);
        assert_null(json_object_get(json_array_get(list, 0), "address"));
        json_decref(list);

        store_close(s);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(records_and_lists),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
