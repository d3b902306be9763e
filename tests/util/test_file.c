/*
 * test_file.c - reading whole files: contents, the size limit, errors.
 */
#include "util/file.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Writes n bytes of a known pattern (with NUL bytes) to a new temp file. */
static void make_file(char *path, size_t n)
{
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)(i * 7);
                assert_int_equal(write(fd, &c, 1), 1);
        }
        close(fd);
}

static void test_reads_every_byte(void **state)
{
        (void)state;
        char path[] = "/tmp/frapi-file-XXXXXX";
        unsigned char *data;
        size_t len;

        /* Larger than the first buffer, so the growth path runs. */
        make_file(path, 200000);
        assert_int_equal(file_read(path, 200000, &data, &len), 0);
        assert_int_equal(len, 200000);
        for (size_t i = 0; i < len; i++)
                assert_int_equal(data[i], (unsigned char)(i * 7));
        free(data);
        unlink(path);
}

static void test_limit_and_errors(void **state)
{
        (void)state;
        char path[] = "/tmp/frapi-file-XXXXXX";
        unsigned char *data = (unsigned char *)"x";
        size_t len = 1;

        make_file(path, 1001);
        assert_int_equal(file_read(path, 1000, &data, &len), EFBIG);
        assert_null(data);
        assert_int_equal(len, 0);
        assert_int_equal(file_read(path, 1001, &data, &len), 0);
        assert_int_equal(len, 1001);
        free(data);
        unlink(path);

        assert_int_equal(file_read(path, 10, &data, &len), ENOENT);
        assert_null(data);

        /* An empty file is read as zero bytes, not an error. */
        char empty[] = "/tmp/frapi-file-XXXXXX";
        make_file(empty, 0);
        assert_int_equal(file_read(empty, 10, &data, &len), 0);
        assert_int_equal(len, 0);
        free(data);
        unlink(empty);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reads_every_byte),
                cmocka_unit_test(test_limit_and_errors),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
