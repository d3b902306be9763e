/*
 * test_metrics.c - the Prometheus text: HELP and TYPE lines, labelled
 * series, cumulative histogram buckets, scrape hooks, and exact counts
 * under many threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "http/metrics.h"

static int reset(void **state)
{
        (void)state;
        http_metrics_reset();
        return 0;
}

static char *render(void)
{
        size_t len = 0;
        char *text = http_metrics_render(&len);
        assert_non_null(text);
        assert_int_equal(strlen(text), len);
        return text;
}

static void test_counter_and_gauge(void **state)
{
        (void)state;
        http_metrics_help("frapi_things_total", "Things seen.");
        http_metrics_counter_add("frapi_things_total", "kind=\"a\"", 1);
        http_metrics_counter_add("frapi_things_total", "kind=\"a\"", 2);
        http_metrics_counter_add("frapi_things_total", "kind=\"b\"", 1);
        http_metrics_gauge_set("frapi_level", NULL, 5);
        http_metrics_gauge_add("frapi_level", NULL, -2);
        char *t = render();
        assert_non_null(strstr(t, "# HELP frapi_things_total Things seen.\n"
                                  "# TYPE frapi_things_total counter\n"
                                  "frapi_things_total{kind=\"a\"} 3\n"
                                  "frapi_things_total{kind=\"b\"} 1\n"));
        assert_non_null(strstr(t, "# TYPE frapi_level gauge\n"
                                  "frapi_level 3\n"));
        free(t);
}

static void test_histogram(void **state)
{
        (void)state;
        http_metrics_histogram_observe("frapi_op_seconds", "op=\"x\"", 0.003);
        http_metrics_histogram_observe("frapi_op_seconds", "op=\"x\"", 0.2);
        http_metrics_histogram_observe("frapi_op_seconds", "op=\"x\"", 100);
        char *t = render();
        assert_non_null(strstr(t, "# TYPE frapi_op_seconds histogram\n"));
        /* Buckets count every value at or below their bound. */
        assert_non_null(strstr(
                t, "frapi_op_seconds_bucket{op=\"x\",le=\"0.001\"} 0\n"));
        assert_non_null(strstr(
                t, "frapi_op_seconds_bucket{op=\"x\",le=\"0.005\"} 1\n"));
        assert_non_null(
                strstr(t, "frapi_op_seconds_bucket{op=\"x\",le=\"0.25\"} 2\n"));
        assert_non_null(
                strstr(t, "frapi_op_seconds_bucket{op=\"x\",le=\"30\"} 2\n"));
        assert_non_null(
                strstr(t, "frapi_op_seconds_bucket{op=\"x\",le=\"+Inf\"} 3\n"));
        assert_non_null(strstr(t, "frapi_op_seconds_count{op=\"x\"} 3\n"));
        assert_non_null(strstr(t, "frapi_op_seconds_sum{op=\"x\"} 100.203"));
        free(t);

        /* Without labels the bucket label stands alone. */
        http_metrics_histogram_observe("frapi_bare_seconds", NULL, 0.5);
        t = render();
        assert_non_null(strstr(t, "frapi_bare_seconds_bucket{le=\"0.5\"} 1\n"));
        assert_non_null(strstr(t, "frapi_bare_seconds_count 1\n"));
        free(t);
}

static int scrapes;
static void on_scrape(void *userdata)
{
        scrapes++;
        http_metrics_gauge_set("frapi_faces_stored", NULL, *(int *)userdata);
}

static void test_scrape_hook(void **state)
{
        (void)state;
        int faces = 7;
        http_metrics_on_scrape(on_scrape, &faces);
        char *t = render();
        assert_non_null(strstr(t, "frapi_faces_stored 7\n"));
        free(t);
        faces = 9;
        t = render();
        assert_non_null(strstr(t, "frapi_faces_stored 9\n"));
        assert_int_equal(scrapes, 2);
        free(t);

        /* Nothing at all renders as an empty text. */
        http_metrics_reset();
        t = render();
        assert_string_equal(t, "");
        free(t);
}

static void *count_many(void *arg)
{
        (void)arg;
        for (int i = 0; i < 10000; i++) {
                http_metrics_counter_add("frapi_hits_total", NULL, 1);
                http_metrics_histogram_observe("frapi_lat_seconds", NULL, 0.01);
        }
        return NULL;
}

static void test_threads(void **state)
{
        (void)state;
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
                pthread_create(&t[i], NULL, count_many, NULL);
        for (int i = 0; i < 8; i++)
                pthread_join(t[i], NULL);
        char *text = render();
        assert_non_null(strstr(text, "frapi_hits_total 80000\n"));
        assert_non_null(strstr(text, "frapi_lat_seconds_count 80000\n"));
        free(text);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_counter_and_gauge, reset,
                                                reset),
                cmocka_unit_test_setup_teardown(test_histogram, reset, reset),
                cmocka_unit_test_setup_teardown(test_scrape_hook, reset, reset),
                cmocka_unit_test_setup_teardown(test_threads, reset, reset),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
