/*
 * test_keyuse.c - last use of API keys: kept in memory, written in one
 * batch per interval and at shutdown, retried after a failed write.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <time.h>

#include "auth/keyuse.h"

/* A fake store that remembers what it was given. */
struct sink {
        pthread_mutex_t lock;
        int calls;
        size_t records;
        int fail; /* fail this many calls, then succeed */
        struct keyuse_record last[8];
        size_t nlast;
};

static int sink_write(void *ctx, const struct keyuse_record *recs, size_t n)
{
        struct sink *s = ctx;
        pthread_mutex_lock(&s->lock);
        s->calls++;
        int rc = 0;
        if (s->fail > 0) {
                s->fail--;
                rc = -1;
        } else {
                s->records += n;
                s->nlast = n < 8 ? n : 8;
                memcpy(s->last, recs, s->nlast * sizeof *recs);
        }
        pthread_mutex_unlock(&s->lock);
        return rc;
}

static const struct keyuse_record *sink_find(struct sink *s, const char *id)
{
        for (size_t i = 0; i < s->nlast; i++)
                if (strcmp(s->last[i].key_id, id) == 0)
                        return &s->last[i];
        return NULL;
}

/* Many uses of two keys become one record each, with the latest use. */
static void test_one_record_per_key(void **state)
{
        (void)state;
        struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER};
        struct keyuse *ku = keyuse_new(sink_write, &s, 0);
        assert_non_null(ku);
        for (int i = 0; i < 1000; i++) {
                assert_int_equal(
                        keyuse_touch(ku, "key_a", 1000 + i, "10.0.0.1"), 0);
                keyuse_touch(ku, "key_b", 2000 + i, "2001:db8::1");
        }
        /* An older use arriving late changes nothing. */
        keyuse_touch(ku, "key_a", 5, "192.0.2.1");
        assert_int_equal(s.calls, 0);

        assert_int_equal(keyuse_flush(ku), 2);
        assert_int_equal(s.calls, 1);
        const struct keyuse_record *a = sink_find(&s, "key_a");
        assert_non_null(a);
        assert_int_equal(a->used_ms, 1999);
        assert_string_equal(a->addr, "10.0.0.1");
        assert_string_equal(sink_find(&s, "key_b")->addr, "2001:db8::1");

        /* Nothing new: nothing written. */
        assert_int_equal(keyuse_flush(ku), 0);
        assert_int_equal(s.calls, 1);

        /* The in-memory value is readable. */
        struct keyuse_record r;
        assert_int_equal(keyuse_get(ku, "key_b", &r), 0);
        assert_int_equal(r.used_ms, 2999);
        assert_int_equal(keyuse_get(ku, "key_c", &r), -1);
        keyuse_free(ku);
        assert_int_equal(s.calls, 1);
}

/* A failed write is offered again. */
static void test_retry_after_failure(void **state)
{
        (void)state;
        struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER, .fail = 1};
        struct keyuse *ku = keyuse_new(sink_write, &s, 0);
        keyuse_touch(ku, "key_a", 10, NULL);
        assert_int_equal(keyuse_flush(ku), -1);
        assert_int_equal(s.records, 0);
        assert_int_equal(keyuse_flush(ku), 1);
        assert_int_equal(s.records, 1);
        assert_string_equal(s.last[0].addr, "");
        keyuse_free(ku);
}

/* Shutdown writes what the last interval had not. */
static void test_flush_at_free(void **state)
{
        (void)state;
        struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER};
        struct keyuse *ku = keyuse_new(sink_write, &s, 60000);
        keyuse_touch(ku, "key_a", 10, "10.0.0.1");
        keyuse_touch(ku, "key_b", 11, "10.0.0.2");
        assert_int_equal(s.calls, 0);
        keyuse_free(ku);
        assert_int_equal(s.calls, 1);
        assert_int_equal(s.records, 2);
}

/* The thread writes every interval, without anyone asking. */
static void test_periodic(void **state)
{
        (void)state;
        struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER};
        struct keyuse *ku = keyuse_new(sink_write, &s, 20);
        keyuse_touch(ku, "key_a", 10, "10.0.0.1");
        size_t got = 0;
        for (int i = 0; i < 500 && got == 0; i++) {
                nanosleep(&(struct timespec){0, 10000000}, NULL);
                pthread_mutex_lock(&s.lock);
                got = s.records;
                pthread_mutex_unlock(&s.lock);
        }
        assert_int_equal(got, 1);
        keyuse_touch(ku, "key_a", 20, "10.0.0.1");
        for (int i = 0; i < 500 && got == 1; i++) {
                nanosleep(&(struct timespec){0, 10000000}, NULL);
                pthread_mutex_lock(&s.lock);
                got = s.records;
                pthread_mutex_unlock(&s.lock);
        }
        assert_int_equal(got, 2);
        keyuse_free(ku);
}

/* Concurrent touches of many keys lose no key. */
struct toucher {
        struct keyuse *ku;
        int base;
};

static void *touch_run(void *arg)
{
        struct toucher *t = arg;
        char id[16];
        for (int i = 0; i < 2000; i++) {
                snprintf(id, sizeof id, "key_%d", t->base + i % 100);
                keyuse_touch(t->ku, id, i, "10.0.0.1");
        }
        return NULL;
}

static void test_concurrent(void **state)
{
        (void)state;
        struct sink s = {.lock = PTHREAD_MUTEX_INITIALIZER};
        struct keyuse *ku = keyuse_new(sink_write, &s, 1);
        pthread_t th[4];
        struct toucher t[4];
        for (int i = 0; i < 4; i++) {
                t[i] = (struct toucher){ku, i * 100};
                pthread_create(&th[i], NULL, touch_run, &t[i]);
        }
        for (int i = 0; i < 4; i++)
                pthread_join(th[i], NULL);
        /* Every key is there with its latest use. */
        for (int k = 0; k < 400; k++) {
                char id[16];
                struct keyuse_record r;
                snprintf(id, sizeof id, "key_%d", k);
                assert_int_equal(keyuse_get(ku, id, &r), 0);
                assert_int_equal(r.used_ms, 1900 + k % 100);
        }
        keyuse_free(ku);
        assert_true(s.records >= 400);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_one_record_per_key),
                cmocka_unit_test(test_retry_after_failure),
                cmocka_unit_test(test_flush_at_free),
                cmocka_unit_test(test_periodic),
                cmocka_unit_test(test_concurrent),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
