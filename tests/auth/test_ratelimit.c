/*
 * test_ratelimit.c - the sliding window counter: exact counts, minute
 * boundaries, the weighting of the previous window, Retry-After values and
 * atomicity under many threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <pthread.h>

#include "auth/ratelimit.h"

/* 2026-12-03T18:00:00Z, a minute boundary. */
#define T0  ((int64_t)1796320800 * 1000)
#define MIN RATELIMIT_WINDOW_MS

static struct ratelimit_result take(struct ratelimit *rl, const char *key,
                                    uint32_t limit, int64_t now)
{
        struct ratelimit_result r;
        assert_int_equal(ratelimit_consume(rl, key, limit, now, &r), 0);
        return r;
}

/* A fresh key gets exactly its limit, counting remaining down to 0. */
static void test_exact_limit(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        assert_non_null(rl);
        for (uint32_t i = 0; i < 5; i++) {
                struct ratelimit_result r = take(rl, "key_a", 5, T0 + 1000);
                assert_true(r.allowed);
                assert_int_equal(r.limit, 5);
                assert_int_equal(r.remaining, 4 - i);
                assert_int_equal(r.retry_after, 0);
                assert_int_equal(r.reset, T0 / 1000 + 60);
        }
        struct ratelimit_result r = take(rl, "key_a", 5, T0 + 1000);
        assert_false(r.allowed);
        assert_int_equal(r.remaining, 0);
        assert_true(r.retry_after >= 1);

        /* Another key has its own count. */
        assert_true(take(rl, "key_b", 5, T0 + 1000).allowed);
        ratelimit_free(rl);
}

/* Requests in the last millisecond of a minute and the first of the next:
 * the previous minute still weighs almost fully. */
static void test_minute_boundary(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        for (int i = 0; i < 10; i++)
                assert_true(take(rl, "k", 10, T0 + MIN - 1).allowed);
        assert_false(take(rl, "k", 10, T0 + MIN - 1).allowed);

        /* At the start of the next minute: 10 * 60/60 + 1 > 10, refused;
         * one request fits once 10 * (60 - e)/60 <= 9, at e = 6 s. */
        struct ratelimit_result r = take(rl, "k", 10, T0 + MIN);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after, 6);
        assert_int_equal(r.reset, T0 / 1000 + 120);
        r = take(rl, "k", 10, T0 + MIN + 5999);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after, 1);
        r = take(rl, "k", 10, T0 + MIN + 6000);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 0);
        assert_false(take(rl, "k", 10, T0 + MIN + 6000).allowed);
        ratelimit_free(rl);
}

/* Half of the previous minute's count weighs at mid-minute. */
static void test_weighting(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        for (int i = 0; i < 5; i++)
                assert_true(take(rl, "k", 10, T0 + 20000).allowed);

        /* At the next minute's start the 5 weigh fully: 5 more fit. */
        for (int i = 0; i < 5; i++)
                assert_true(take(rl, "k", 10, T0 + MIN).allowed);
        assert_false(take(rl, "k", 10, T0 + MIN).allowed);

        /* At mid-minute they weigh 2.5: 5 + 2.5 + 1 <= 10 twice more. */
        struct ratelimit_result r = take(rl, "k", 10, T0 + MIN + MIN / 2);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 1); /* 10 - 2.5 - 6 = 1.5 */
        assert_true(take(rl, "k", 10, T0 + MIN + MIN / 2).allowed);
        assert_false(take(rl, "k", 10, T0 + MIN + MIN / 2).allowed);

        /* Two minutes of silence forget everything. */
        for (int i = 0; i < 10; i++)
                assert_true(take(rl, "k", 10, T0 + 3 * MIN + 1).allowed);
        ratelimit_free(rl);
}

/* Retry-After when the current minute alone is full: wait for its end and
 * for its weight to fall below the limit. */
static void test_retry_after(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        for (int i = 0; i < 10; i++)
                assert_true(take(rl, "k", 10, T0 + 10000).allowed);
        struct ratelimit_result r = take(rl, "k", 10, T0 + 10000);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after, 50 + 6);

        /* The value is honest: one millisecond before it, still refused;
         * at it, allowed. */
        assert_false(take(rl, "k", 10, T0 + 10000 + 56000 - 1).allowed);
        assert_true(take(rl, "k", 10, T0 + 10000 + 56000).allowed);

        /* Rounded up to whole seconds, never 0. */
        struct ratelimit *rl2 = ratelimit_memory_new();
        assert_true(take(rl2, "k", 1, T0 + MIN - 1).allowed);
        r = take(rl2, "k", 1, T0 + MIN - 1);
        assert_false(r.allowed);
        /* The full previous minute weighs 1 until its very end, so the
         * request fits only two windows on: 1 ms + 60 s, rounded up. */
        assert_int_equal(r.retry_after, 61);
        ratelimit_free(rl2);
        ratelimit_free(rl);
}

/* A limit of 0 refuses everything; a lowered limit still answers a finite
 * Retry-After. */
static void test_zero_and_lowered_limit(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        struct ratelimit_result r = take(rl, "z", 0, T0);
        assert_false(r.allowed);
        assert_int_equal(r.retry_after, 60);

        for (int i = 0; i < 100; i++)
                assert_true(take(rl, "l", 100, T0).allowed);
        r = take(rl, "l", 10, T0 + 30000);
        assert_false(r.allowed);
        /* Next minute: 100 * (60 - e)/60 + 1 <= 10 at e = 54.6 s. */
        assert_int_equal(r.retry_after, 30 + 55);
        ratelimit_free(rl);
}

/* A clock that steps back never lets more through. */
static void test_clock_back(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        for (int i = 0; i < 3; i++)
                assert_true(take(rl, "k", 3, T0 + MIN + 1).allowed);
        assert_false(take(rl, "k", 3, T0 + 1).allowed);
        ratelimit_free(rl);
}

/* Thousands of keys: the table grows and forgets idle keys without
 * mixing their counts. */
static void test_many_keys(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        char key[32];
        for (int i = 0; i < 20000; i++) {
                snprintf(key, sizeof key, "key_%d", i);
                assert_true(take(rl, key, 1, T0).allowed);
        }
        for (int i = 0; i < 20000; i += 97) {
                snprintf(key, sizeof key, "key_%d", i);
                assert_false(take(rl, key, 1, T0 + 1).allowed);
        }

        /* Much later, new keys push out the idle ones; old keys start over. */
        for (int i = 0; i < 20000; i++) {
                snprintf(key, sizeof key, "new_%d", i);
                assert_true(take(rl, key, 1, T0 + 10 * MIN).allowed);
        }
        assert_true(take(rl, "key_0", 1, T0 + 10 * MIN).allowed);
        ratelimit_free(rl);
}

/* Case S5: with a limit of N, 10 x N simultaneous requests let exactly N
 * through. */
#define THREADS 16
#define LIMIT   200
struct race {
        struct ratelimit *rl;
        pthread_barrier_t *start;
        int allowed;
};

static void *race_run(void *arg)
{
        struct race *r = arg;
        pthread_barrier_wait(r->start);
        for (int i = 0; i < 10 * LIMIT / THREADS; i++) {
                struct ratelimit_result res;
                if (ratelimit_consume(r->rl, "shared", LIMIT, T0 + 5000, &res))
                        return NULL;
                r->allowed += res.allowed;
                /* A second key hashes elsewhere: shards work independently. */
                ratelimit_consume(r->rl, "other", LIMIT, T0 + 5000, &res);
        }
        return NULL;
}

static void test_concurrent_exact(void **state)
{
        (void)state;
        struct ratelimit *rl = ratelimit_memory_new();
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, THREADS);
        pthread_t th[THREADS];
        struct race races[THREADS];
        for (int i = 0; i < THREADS; i++) {
                races[i] = (struct race){rl, &start, 0};
                assert_int_equal(
                        pthread_create(&th[i], NULL, race_run, &races[i]), 0);
        }
        int total = 0;
        for (int i = 0; i < THREADS; i++) {
                pthread_join(th[i], NULL);
                total += races[i].allowed;
        }
        assert_int_equal(total, LIMIT);
        pthread_barrier_destroy(&start);
        ratelimit_free(rl);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_exact_limit),
                cmocka_unit_test(test_minute_boundary),
                cmocka_unit_test(test_weighting),
                cmocka_unit_test(test_retry_after),
                cmocka_unit_test(test_zero_and_lowered_limit),
                cmocka_unit_test(test_clock_back),
                cmocka_unit_test(test_many_keys),
                cmocka_unit_test(test_concurrent_exact),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
