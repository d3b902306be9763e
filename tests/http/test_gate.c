/*
 * test_gate.c - the concurrency gate: slots taken at once, a full queue
 * refused at once, a wait that runs out, and a release waking a waiter;
 * never more holders than slots under many threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "http/gate.h"

static void test_slots_and_full_queue(void **state)
{
        (void)state;
        struct http_gate *g = http_gate_new(2, 0, 1000);
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_OK);
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_OK);

        /* No queue: the third is refused at once. */
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_FULL);
        int in_use, waiting;
        http_gate_stats(g, &in_use, &waiting);
        assert_int_equal(in_use, 2);
        assert_int_equal(waiting, 0);
        assert_int_equal(http_gate_retry_after(g), 1);

        http_gate_release(g);
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_OK);
        http_gate_release(g);
        http_gate_release(g);
        http_gate_free(g);
}

static void test_wait_runs_out(void **state)
{
        (void)state;
        struct http_gate *g = http_gate_new(1, 1, 50);
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_OK);
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_TIMEOUT);
        int in_use, waiting;
        http_gate_stats(g, &in_use, &waiting);
        assert_int_equal(in_use, 1);
        assert_int_equal(waiting, 0);
        http_gate_release(g);
        http_gate_free(g);

        /* Retry-After rounds the wait up to whole seconds. */
        g = http_gate_new(1, 1, 2500);
        assert_int_equal(http_gate_retry_after(g), 3);
        http_gate_free(g);
}

struct waiter {
        struct http_gate *g;
        enum http_gate_result got;
};

static void *wait_for_slot(void *arg)
{
        struct waiter *w = arg;
        w->got = http_gate_acquire(w->g);
        return NULL;
}

static void test_release_wakes_waiter(void **state)
{
        (void)state;
        struct http_gate *g = http_gate_new(1, 1, 60000);
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_OK);
        struct waiter w = {g, -1};
        pthread_t t;
        pthread_create(&t, NULL, wait_for_slot, &w);

        /* Once it waits, the queue is full for anyone else. */
        int in_use, waiting = 0;
        while (waiting == 0) {
                usleep(1000);
                http_gate_stats(g, &in_use, &waiting);
        }
        assert_int_equal(http_gate_acquire(g), HTTP_GATE_FULL);

        http_gate_release(g);
        pthread_join(t, NULL);
        assert_int_equal(w.got, HTTP_GATE_OK);
        http_gate_release(g);
        http_gate_free(g);
}

static atomic_int holders;
static atomic_int most;
static atomic_int served;

static void *hammer(void *arg)
{
        struct http_gate *g = arg;
        for (int i = 0; i < 200; i++) {
                if (http_gate_acquire(g) != HTTP_GATE_OK)
                        continue;
                int now = atomic_fetch_add(&holders, 1) + 1;
                int seen = atomic_load(&most);
                while (now > seen &&
                       !atomic_compare_exchange_weak(&most, &seen, now))
                        ;
                usleep(50); /* hold it a moment, so holders overlap */
                atomic_fetch_sub(&holders, 1);
                atomic_fetch_add(&served, 1);
                http_gate_release(g);
        }
        return NULL;
}

/* Sixteen threads, three slots: never a fourth holder. */
static void test_never_over_slots(void **state)
{
        (void)state;
        struct http_gate *g = http_gate_new(3, 16, 60000);
        pthread_t t[16];
        for (int i = 0; i < 16; i++)
                pthread_create(&t[i], NULL, hammer, g);
        for (int i = 0; i < 16; i++)
                pthread_join(t[i], NULL);
        assert_true(atomic_load(&most) <= 3);
        assert_true(atomic_load(&most) >= 1);
        /* The queue holds every thread, so nobody was refused. */
        assert_int_equal(atomic_load(&served), 16 * 200);
        http_gate_free(g);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_slots_and_full_queue),
                cmocka_unit_test(test_wait_runs_out),
                cmocka_unit_test(test_release_wakes_waiter),
                cmocka_unit_test(test_never_over_slots),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
