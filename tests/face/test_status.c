/*
 * test_status.c - the stable codes, messages and HTTP statuses that the
 * API and the command line report for each face_status.
 */
#include "face/face.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* The contract written in docs/engine.md, row by row. */
static const struct {
        enum face_status st;
        const char *code;
        int http;
} contract[] = {
        {FACE_OK, "OK", 200},
        {FACE_ERR_EMPTY, "EMPTY_IMAGE", 400},
        {FACE_ERR_TOO_LARGE, "IMAGE_TOO_LARGE", 413},
        {FACE_ERR_UNSUPPORTED, "UNSUPPORTED_IMAGE_FORMAT", 415},
        {FACE_ERR_CORRUPT, "INVALID_IMAGE", 400},
        {FACE_ERR_DIMENSIONS, "IMAGE_DIMENSIONS_TOO_LARGE", 422},
        {FACE_ERR_IMAGE_TOO_SMALL, "IMAGE_TOO_SMALL", 422},
        {FACE_ERR_NOMEM, "SERVER_BUSY", 503},
        {FACE_ERR_INTERNAL, "INTERNAL_ERROR", 500},
};

#define ROWS (sizeof contract / sizeof *contract)

static void test_codes_and_http(void **state)
{
        (void)state;
        for (size_t i = 0; i < ROWS; i++) {
                assert_string_equal(face_status_code(contract[i].st),
                                    contract[i].code);
                assert_int_equal(face_status_http(contract[i].st),
                                 contract[i].http);
        }
}

/* Every status has its own code: clients switch on them. */
static void test_codes_distinct(void **state)
{
        (void)state;
        for (size_t i = 0; i < ROWS; i++)
                for (size_t j = i + 1; j < ROWS; j++)
                        assert_string_not_equal(face_status_code(i),
                                                face_status_code(j));
}

/* Messages are whole sentences, different for each status. */
static void test_messages(void **state)
{
        (void)state;
        for (size_t i = 0; i < ROWS; i++) {
                const char *m = face_status_message(contract[i].st);
                size_t n = strlen(m);
                assert_true(n > 10);
                assert_true(m[0] >= 'A' && m[0] <= 'Z');
                assert_int_equal(m[n - 1], '.');
                for (size_t j = 0; j < i; j++)
                        assert_string_not_equal(
                                m, face_status_message(contract[j].st));
        }
}

/* Input errors are the caller's (4xx); the server's own failures 5xx. */
static void test_blame(void **state)
{
        (void)state;
        for (size_t i = 1; i < ROWS; i++) {
                int h = face_status_http(contract[i].st);
                bool server = contract[i].st == FACE_ERR_NOMEM ||
                              contract[i].st == FACE_ERR_INTERNAL;
                assert_true(server ? h >= 500 : (h >= 400 && h < 500));
        }
}

/* A value outside the enum reads as an internal error, never a crash. */
static void test_unknown_value(void **state)
{
        (void)state;
        enum face_status bad = (enum face_status)(ROWS + 7);

        assert_string_equal(face_status_code(bad), "INTERNAL_ERROR");
        assert_int_equal(face_status_http(bad), 500);
        assert_non_null(face_status_message(bad));
        assert_string_equal(face_status_code((enum face_status) - 1),
                            "INTERNAL_ERROR");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_codes_and_http),
                cmocka_unit_test(test_codes_distinct),
                cmocka_unit_test(test_messages),
                cmocka_unit_test(test_blame),
                cmocka_unit_test(test_unknown_value),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
