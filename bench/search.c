/*
 * bench/search - the 1:N index on synthetic normalised embeddings.
 *
 *   build/bench/search [N ...]      (default: 100000 1000000)
 *
 * For each N: fills one collection with N random unit vectors, then runs
 * 50 single-face queries (top 10, no threshold) and prints the median and
 * the 95th percentile of one query's time, and the index memory per face.
 */
#include "index/index.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QUERIES 50

static uint64_t rng_state = 88172645463325252ull;

/* xorshift64*: fast, and good enough for synthetic vectors. */
static float rnd(void)
{
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        uint64_t x = rng_state * 2685821657736338717ull;
        return (float)((x >> 40) / (double)(1u << 24)) - 0.5f;
}

static void random_unit(float *v)
{
        double norm = 0;
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++) {
                v[i] = rnd();
                norm += (double)v[i] * v[i];
        }
        float inv = (float)(1.0 / sqrt(norm));
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                v[i] *= inv;
}

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static int run(long n)
{
        struct index *idx = index_new();
        float v[FACE_EMBEDDING_DIM];
        char id[STORE_ID_MAX];
        struct index_hit hits[10];
        double times[QUERIES];

        if (!idx)
                return 1;

        /* Fill one collection. */
        double t0 = now_ms();
        for (long i = 0; i < n; i++) {
                random_unit(v);
                snprintf(id, sizeof id, "face_%026ld", i);
                if (index_add(idx, "col_bench", id, v) != 0) {
                        fprintf(stderr, "search: out of memory at %ld\n", i);
                        index_free(idx);
                        return 1;
                }
        }
        double fill = now_ms() - t0;

        /* Time single queries. */
        for (int q = 0; q < QUERIES; q++) {
                random_unit(v);
                t0 = now_ms();
                int got = index_search(idx, "col_bench", v, 10, 0.0f, hits);
                times[q] = now_ms() - t0;
                if (got != 10) {
                        fprintf(stderr, "search: %d hits, expected 10\n", got);
                        index_free(idx);
                        return 1;
                }
        }
        qsort(times, QUERIES, sizeof times[0], cmp_double);
        printf("faces=%ld query_median_ms=%.2f query_p95_ms=%.2f "
               "bytes_per_face=%.0f fill_s=%.1f\n",
               n, times[QUERIES / 2], times[QUERIES * 95 / 100],
               (double)index_memory(idx) / (double)n, fill / 1e3);
        index_free(idx);
        return 0;
}

int main(int argc, char **argv)
{
        static const long defaults[] = {100000, 1000000};
        int rc = 0;
        if (argc < 2) {
                for (size_t i = 0; i < 2; i++)
                        rc |= run(defaults[i]);
                return rc;
        }
        for (int i = 1; i < argc; i++) {
                char *end;
                long n = strtol(argv[i], &end, 10);
                if (*end || n < 10) {
                        fprintf(stderr, "usage: search [N ...] (N >= 10)\n");
                        return 2;
                }
                rc |= run(n);
        }
        return rc;
}
