/*
 * test_config.c - settings: defaults, the file < environment < flags
 * precedence, every spelling of a setting, and bad values refused with
 * the setting's name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "http/http.h"

static char path[] = "/tmp/frapi-test-config-XXXXXX";

/* Writes text into the temporary config file. */
static void write_file(const char *text)
{
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
}

static int setup(void **state)
{
        (void)state;
        strcpy(path, "/tmp/frapi-test-config-XXXXXX");
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        unsetenv("FRAPI_CONFIG");
        unsetenv("FRAPI_LISTEN");
        unsetenv("FRAPI_DATA_DIR");
        unsetenv("FRAPI_MAX_BODY_BYTES");
        unsetenv("FRAPI_HTTP_THREADS");
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        unlink(path);
        unsetenv("FRAPI_CONFIG");
        unsetenv("FRAPI_LISTEN");
        unsetenv("FRAPI_DATA_DIR");
        unsetenv("FRAPI_MAX_BODY_BYTES");
        unsetenv("FRAPI_HTTP_THREADS");
        return 0;
}

static void test_defaults(void **state)
{
        (void)state;
        struct config c;
        char err[256];
        assert_int_equal(config_load(&c, 0, NULL, err, sizeof err), 0);
        assert_string_equal(c.listen, "127.0.0.1:8080");
        assert_string_equal(c.data_dir, "./data");
        assert_string_equal(c.model_dir, ".deps/models");
        assert_int_equal(c.max_concurrent_recognitions, 2);
        assert_int_equal(c.max_image_bytes, 10u << 20);
        assert_true(c.smtp_starttls);
        assert_int_equal(c.min_face, 20);

        /* The server settings follow. */
        struct http_config h;
        config_to_http(&c, &h);
        assert_string_equal(h.listen, "127.0.0.1:8080");
        assert_int_equal(h.gate_slots, 2);
        assert_int_equal(h.max_body_bytes, c.max_body_bytes);
        assert_int_equal(h.receive_timeout_s, 300);
}

/* The same setting from the file, then env, then a flag: the later wins. */
static void test_precedence(void **state)
{
        (void)state;
        write_file("# a comment\n"
                   "\n"
                   "listen = 127.0.0.1:1111\n"
                   "data_dir = /from/file\n"
                   "model_dir=\"/models with space\"\n"
                   "max_body_bytes = 20M\n"
                   "http_threads = 3\n");
        setenv("FRAPI_CONFIG", path, 1);
        setenv("FRAPI_LISTEN", "[::1]:2222", 1);
        setenv("FRAPI_DATA_DIR", "/from/env", 1);
        char *argv[] = {"--data-dir", "/from/flag", "--http-threads=5"};
        struct config c;
        char err[256];
        assert_int_equal(config_load(&c, 3, argv, err, sizeof err), 0);
        assert_string_equal(c.listen, "[::1]:2222");
        assert_string_equal(c.data_dir, "/from/flag");
        assert_string_equal(c.model_dir, "/models with space");
        assert_int_equal(c.max_body_bytes, 20u << 20);
        assert_int_equal(c.http_threads, 5);

        /* --config on the command line beats FRAPI_CONFIG. */
        unsetenv("FRAPI_LISTEN");
        setenv("FRAPI_CONFIG", "/nonexistent/frapi.conf", 1);
        char *argv2[] = {"--config", path};
        assert_int_equal(config_load(&c, 2, argv2, err, sizeof err), 0);
        assert_string_equal(c.listen, "127.0.0.1:1111");
        assert_string_equal(c.data_dir, "/from/env");
}

/* Each bad value is refused, naming the setting and its source. */
static void test_bad_values(void **state)
{
        (void)state;
        struct config c;
        char err[256];
        struct {
                const char *name;
                const char *value;
        } bad[] = {
                {"listen", "8080"},
                {"listen", "::1:8080"},
                {"listen", "127.0.0.1:99999"},
                {"http_threads", "0"},
                {"http_threads", "four"},
                {"http_threads", "4 "},
                {"min_face", "19"},
                {"min_face", "20001"},
                {"receive_timeout_s", "0"},
                {"max_body_bytes", "-5"},
                {"max_body_bytes", "12Q"},
                {"max_body_bytes", "99999999999G"},
                {"queue_wait_ms", ""},
                {"smtp_starttls", "maybe"},
                {"log_level", "loud"},
                {"trusted_proxies", "10.0.0.0/8, 300.1.1.1"},
                {"trusted_proxies", "10.0.0.1/40"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                config_default(&c);
                err[0] = '\0';
                assert_int_equal(config_set(&c, bad[i].name, bad[i].value,
                                            "test", err, sizeof err),
                                 -1);
                assert_non_null(strstr(err, bad[i].name));
        }

        /* Good spellings pass. */
        config_default(&c);
        assert_int_equal(config_set(&c, "trusted_proxies",
                                    "10.0.0.0/8, ::1 ,192.168.1.7", "t", err,
                                    sizeof err),
                         0);
        assert_int_equal(
                config_set(&c, "max_body_bytes", "512k", "t", err, sizeof err),
                0);
        assert_int_equal(c.max_body_bytes, 512 * 1024);
        assert_int_equal(
                config_set(&c, "smtp_starttls", "off", "t", err, sizeof err),
                0);
        assert_false(c.smtp_starttls);
        assert_int_equal(
                config_set(&c, "min_face", "120", "t", err, sizeof err), 0);
        assert_int_equal(c.min_face, 120);
        assert_int_equal(
                config_set(&c, "receive_timeout_s", "45", "t", err, sizeof err),
                0);
        struct http_config h;
        config_to_http(&c, &h);
        assert_int_equal(h.receive_timeout_s, 45);

        /* The mail server's CA file: empty by default, from the
         * environment as FRAPI_SMTP_CA_FILE. */
        assert_string_equal(c.smtp_ca_file, "");
        setenv("FRAPI_SMTP_CA_FILE", "/etc/frapi/mail-ca.pem", 1);
        assert_int_equal(config_apply_env(&c, err, sizeof err), 0);
        unsetenv("FRAPI_SMTP_CA_FILE");
        assert_string_equal(c.smtp_ca_file, "/etc/frapi/mail-ca.pem");

        /* From the environment, the variable is named. */
        setenv("FRAPI_MAX_BODY_BYTES", "lots", 1);
        assert_int_equal(config_load(&c, 0, NULL, err, sizeof err), -1);
        assert_non_null(strstr(err, "FRAPI_MAX_BODY_BYTES"));
        unsetenv("FRAPI_MAX_BODY_BYTES");
        setenv("FRAPI_MIN_FACE", "10", 1);
        assert_int_equal(config_load(&c, 0, NULL, err, sizeof err), -1);
        assert_non_null(strstr(err, "FRAPI_MIN_FACE"));
        unsetenv("FRAPI_MIN_FACE");
        char *min_face[] = {"--min-face", "64"};
        assert_int_equal(config_load(&c, 2, min_face, err, sizeof err), 0);
        assert_int_equal(c.min_face, 64);
}

/* Unknown names, missing values and broken files are refused. */
static void test_bad_sources(void **state)
{
        (void)state;
        struct config c;
        char err[256];
        char *a1[] = {"--no-such-flag", "1"};
        assert_int_equal(config_load(&c, 2, a1, err, sizeof err), -1);
        assert_non_null(strstr(err, "--no-such-flag"));
        char *a2[] = {"--listen"};
        assert_int_equal(config_load(&c, 1, a2, err, sizeof err), -1);
        assert_non_null(strstr(err, "--listen"));
        char *a3[] = {"stray"};
        assert_int_equal(config_load(&c, 1, a3, err, sizeof err), -1);
        char *a4[] = {"--config", "/nonexistent/frapi.conf"};
        assert_int_equal(config_load(&c, 2, a4, err, sizeof err), -1);
        assert_non_null(strstr(err, "/nonexistent/frapi.conf"));

        write_file("listen = 127.0.0.1:1\nbogus_key = 3\n");
        char *a5[] = {"--config", path};
        assert_int_equal(config_load(&c, 2, a5, err, sizeof err), -1);
        assert_non_null(strstr(err, "bogus_key"));
        assert_non_null(strstr(err, "line 2"));
        write_file("just words\n");
        assert_int_equal(config_load(&c, 2, a5, err, sizeof err), -1);
        assert_non_null(strstr(err, "line 1"));

        /* Settings that contradict each other. */
        char *a6[] = {"--max-body-bytes", "1M", "--max-image-bytes", "2M"};
        assert_int_equal(config_load(&c, 4, a6, err, sizeof err), -1);
        assert_non_null(strstr(err, "max_body_bytes"));
}

/* Printing masks the secrets. */
static void test_print_masks_secrets(void **state)
{
        (void)state;
        struct config c;
        char err[256];
        config_default(&c);
        assert_int_equal(config_set(&c, "smtp_password", "hunter2hunter2", "t",
                                    err, sizeof err),
                         0);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        config_print(&c, f);
        config_usage(f);
        fclose(f);
        assert_null(strstr(buf, "hunter2"));
        assert_non_null(strstr(buf, "smtp_password = ***"));
        assert_non_null(strstr(buf, "--max-concurrent-recognitions"));
        assert_non_null(strstr(buf, "FRAPI_QUEUE_WAIT_MS"));
        free(buf);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
                cmocka_unit_test_setup_teardown(test_precedence, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_bad_values, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_bad_sources, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_print_masks_secrets, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
