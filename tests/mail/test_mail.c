/* The mail queue (mail/mail, mail/smtp): header safety, the outbox
 * without SMTP, retries then giving up when the server is down, and
 * queued bodies sealed at rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "mail/mail.h"
#include "store/store_sqlite.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct fixture {
        char dir[64];
        struct store *s;
};

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);
        char err[256];

        if (!f || sodium_init() < 0)
                return -1;
        snprintf(f->dir, sizeof f->dir, "/tmp/frapi-mail-XXXXXX");
        if (!mkdtemp(f->dir) ||
            store_sqlite_open(f->dir, &f->s, err, sizeof err) != STORE_OK)
                return -1;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;
        char cmd[128];

        store_close(f->s);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
                return -1;
        free(f);
        return 0;
}

static const struct smtp_message good = {
        "ann@example.com", "Confirm your email address",
        "Hello Ann,\n\nhttp://x/verify?token=abc\n", "<p>Hello Ann</p>"};

static void header_safety(void **state)
{
        (void)state;
        assert_true(smtp_header_safe("Reset your password"));
        assert_true(smtp_header_safe("zoë@example.com"));
        assert_false(smtp_header_safe("a@b.c\r\nBcc: x@y.z"));
        assert_false(smtp_header_safe("line\nbreak"));
        assert_false(smtp_header_safe("tab\there"));
        assert_false(smtp_header_safe(NULL));

        char *big = malloc(1000);
        memset(big, 'a', 999);
        big[999] = '\0';
        assert_false(smtp_header_safe(big));
        big[998] = '\0';
        assert_true(smtp_header_safe(big));
        free(big);
}

static void outbox_without_smtp(void **state)
{
        struct fixture *f = *state;
        struct smtp_config cfg = {0};
        char *out = NULL;
        size_t len = 0;

        struct mail_queue *q = mail_queue_start(f->s, &cfg, NULL, 1, 2);
        assert_non_null(q);
        assert_true(mail_send(q, &good) > 0);

        /* A subject with a line break would inject a header: refused. */
        struct smtp_message bad = good;
        bad.subject = "x\r\nBcc: evil@example.com";
        assert_int_equal(mail_send(q, &bad), -1);
        bad = good;
        bad.to = "a@b.c\nBcc: evil@example.com";
        assert_int_equal(mail_send(q, &bad), -1);
        mail_queue_stop(q);

        /* The admin command's view shows the message and its link. */
        FILE *m = open_memstream(&out, &len);
        assert_int_equal(mail_outbox_print(f->s, m, 10), 1);
        fclose(m);
        assert_non_null(strstr(out, "To: ann@example.com"));
        assert_non_null(strstr(out, "Subject: Confirm your email address"));
        assert_non_null(strstr(out, "http://x/verify?token=abc"));
        free(out);
}

/* Status and attempts of mail id. */
static void mail_state(struct store *s, long long id, char *status, size_t n,
                       int *attempts)
{
        sqlite3_stmt *st;
        store_sqlite_lock(s);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(s),
                                            "SELECT status, attempts FROM "
                                            "mail_queue WHERE id = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, id);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(status, n, "%s", sqlite3_column_text(st, 0));
        *attempts = sqlite3_column_int(st, 1);
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
}

/* A loopback port nobody listens on. */
static int closed_port(void)
{
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof a;
        int fd = socket(AF_INET, SOCK_STREAM, 0);

        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
        close(fd);
        return ntohs(a.sin_port);
}

static void retries_then_gives_up(void **state)
{
        struct fixture *f = *state;
        struct smtp_config cfg = {.timeout_s = 5};
        char status[16] = "";
        int attempts = 0;

        snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
        snprintf(cfg.from, sizeof cfg.from, "FR-APIaaS <frapi@localhost>");
        cfg.port = closed_port();

        /* Two tries one second apart, then "failed"; never a hang. */
        struct mail_queue *q = mail_queue_start(f->s, &cfg, NULL, 1, 2);
        assert_non_null(q);
        long long id = mail_send(q, &good);
        assert_true(id > 0);
        for (int i = 0; i < 100; i++) {
                mail_state(f->s, id, status, sizeof status, &attempts);
                if (strcmp(status, "failed") == 0)
                        break;
                usleep(100000);
        }
        mail_queue_stop(q);
        assert_string_equal(status, "failed");
        assert_int_equal(attempts, 2);

        /* The bodies, which hold live links, are gone. */
        sqlite3_stmt *st;
        store_sqlite_lock(f->s);
        assert_int_equal(sqlite3_prepare_v2(store_sqlite_db(f->s),
                                            "SELECT text_body || html_body "
                                            "FROM mail_queue WHERE id = ?",
                                            -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, id);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "");
        sqlite3_finalize(st);
        store_sqlite_unlock(f->s);

        /* Nothing of it went to the outbox. */
        FILE *m = fopen("/dev/null", "w");
        assert_int_equal(mail_outbox_print(f->s, m, 10), 0);
        fclose(m);
}

/* Column col of mail id, copied into out. */
static void mail_text(struct store *s, long long id, const char *col, char *out,
                      size_t n)
{
        char sql[128];
        sqlite3_stmt *st;

        snprintf(sql, sizeof sql, "SELECT %s FROM mail_queue WHERE id = ?",
                 col);
        store_sqlite_lock(s);
        assert_int_equal(
                sqlite3_prepare_v2(store_sqlite_db(s), sql, -1, &st, NULL),
                SQLITE_OK);
        sqlite3_bind_int64(st, 1, id);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, n, "%s", t ? (const char *)t : "");
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
}

/* Starts a queue with key and waits until it gives mail id up as one it
 * cannot open. */
static void given_up_unopened(struct store *s, const struct smtp_config *cfg,
                              const unsigned char *key, long long id)
{
        char status[16] = "", error[128];
        int attempts = 0;
        struct mail_queue *q = mail_queue_start(s, cfg, key, 1, 5);

        assert_non_null(q);
        for (int i = 0; i < 50 && strcmp(status, "failed") != 0; i++) {
                usleep(100000);
                mail_state(s, id, status, sizeof status, &attempts);
        }
        mail_queue_stop(q);
        assert_string_equal(status, "failed");
        mail_text(s, id, "last_error", error, sizeof error);
        assert_string_equal(error, "the message cannot be opened");
}

/* With a key, a queued message's bodies are sealed in the table (the
 * link is not there), the sender opens them to try; a queue with
 * another key cannot, and gives the message up at once. */
static void sealed_while_queued(void **state)
{
        struct fixture *f = *state;
        struct smtp_config cfg = {.timeout_s = 5};
        unsigned char key[MAIL_KEY_SIZE], other[MAIL_KEY_SIZE];
        char text[4096], html[4096], status[16] = "", error[128];
        int attempts = 0;

        randombytes_buf(key, sizeof key);
        randombytes_buf(other, sizeof other);
        snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
        snprintf(cfg.from, sizeof cfg.from, "frapi@localhost");
        cfg.port = closed_port();

        /* One failed try (the server is down) proves the sender read it. */
        struct mail_queue *q = mail_queue_start(f->s, &cfg, key, 1, 5);
        assert_non_null(q);
        long long id = mail_send(q, &good);
        assert_true(id > 0);
        mail_text(f->s, id, "text_body", text, sizeof text);
        mail_text(f->s, id, "html_body", html, sizeof html);
        assert_true(strncmp(text, "sealed2:", 8) == 0);
        assert_true(strncmp(html, "sealed2:", 8) == 0);
        assert_null(strstr(text, "token=abc"));
        for (int i = 0; i < 50 && attempts == 0; i++) {
                usleep(100000);
                mail_state(f->s, id, status, sizeof status, &attempts);
        }
        mail_queue_stop(q);
        assert_string_equal(status, "queued");
        /* The retry, a second later, may land before the stop on a busy
         * machine. */
        assert_in_range(attempts, 1, 2);
        mail_text(f->s, id, "last_error", error, sizeof error);
        assert_null(strstr(error, "opened"));

        /* The same key, but the row now names another recipient (a body
         * copied into a row of someone else's): it does not open there,
         * and is given up. */
        long long moved;
        {
                char sql[256];
                snprintf(sql, sizeof sql,
                         "INSERT INTO mail_queue (recipient, subject, "
                         "text_body, html_body, status, attempts, next_ms, "
                         "created_ms) SELECT 'mallory@example.com', subject, "
                         "text_body, html_body, 'queued', 0, 0, created_ms "
                         "FROM mail_queue WHERE id = %lld",
                         id);
                assert_int_equal(sqlite3_exec(store_sqlite_db(f->s), sql, NULL,
                                              NULL, NULL),
                                 SQLITE_OK);
                moved = sqlite3_last_insert_rowid(store_sqlite_db(f->s));
        }
        given_up_unopened(f->s, &cfg, key, moved);

        /* Another key: given up without a try at the server. */
        given_up_unopened(f->s, &cfg, other, id);
        mail_text(f->s, id, "text_body", text, sizeof text);
        assert_string_equal(text, "");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(header_safety),
                cmocka_unit_test_setup_teardown(outbox_without_smtp, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(retries_then_gives_up, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(sealed_while_queued, setup,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
