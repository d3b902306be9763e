/*
 * test_index.c - the 1:N index against a float32 brute force: same top k,
 * similarities within the half-precision bound, thresholds, removal,
 * collections kept apart, and the multi-threaded path on large sets.
 */
#include "index/index.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define D FACE_EMBEDDING_DIM

static uint64_t seed = 12345;

static float rnd(void)
{
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        return (float)((seed >> 40) / (double)(1u << 24)) - 0.5f;
}

static void unit(float *v)
{
        double n = 0;
        for (int i = 0; i < D; i++) {
                v[i] = rnd();
                n += (double)v[i] * v[i];
        }
        for (int i = 0; i < D; i++)
                v[i] = (float)(v[i] / sqrt(n));
}

static double dot(const float *a, const float *b)
{
        double s = 0;
        for (int i = 0; i < D; i++)
                s += (double)a[i] * b[i];
        return s;
}

/* Fills idx with n random faces of coll, kept in vecs (n * D). */
static float *fill(struct index *idx, const char *coll, int n)
{
        float *vecs = malloc(sizeof(float) * D * (size_t)n);
        char id[STORE_ID_MAX];
        for (int i = 0; i < n; i++) {
                unit(vecs + (size_t)i * D);
                snprintf(id, sizeof id, "face_%d", i);
                assert_int_equal(index_add(idx, coll, id, vecs + (size_t)i * D),
                                 0);
        }
        return vecs;
}

/* Checks one query against the brute force over the faces still in. */
static void check_query(struct index *idx, const char *coll, const float *vecs,
                        const bool *gone, int n, const float *q, int k,
                        float min_sim)
{
        struct index_hit hits[INDEX_MAX_K];
        int got = index_search(idx, coll, q, k, min_sim, hits);

        /* Every hit is a live face with its true similarity (to 1e-3). */
        for (int i = 0; i < got; i++) {
                int id = atoi(hits[i].face_id + 5);
                assert_true(id >= 0 && id < n && !gone[id]);
                double want = fmax(0.0, dot(q, vecs + (size_t)id * D));
                assert_true(fabs(want - hits[i].similarity) < 1e-3);
                assert_true(hits[i].similarity >= min_sim);
                if (i > 0)
                        assert_true(hits[i - 1].similarity >=
                                    hits[i].similarity);
        }

        /* Nothing better was left out: the brute force's k-th best
         * (clearly above the bar) is not better than our last one. */
        int above = 0;
        double best_missing = -1;
        for (int j = 0; j < n; j++) {
                if (gone[j])
                        continue;
                double s = fmax(0.0, dot(q, vecs + (size_t)j * D));
                if (s >= min_sim + 2e-3)
                        above++;
                bool in = false;
                for (int i = 0; i < got && !in; i++)
                        in = atoi(hits[i].face_id + 5) == j;
                if (!in && s > best_missing)
                        best_missing = s;
        }
        assert_int_equal(got >= (above < k ? above : k), true);
        if (got == k)
                assert_true(best_missing <= hits[k - 1].similarity + 2e-3);
}

static void test_matches_brute_force(void **state)
{
        (void)state;
        struct index *idx = index_new();
        int n = 3000;
        float *vecs = fill(idx, "col_a", n);
        bool *gone = calloc((size_t)n, 1);
        float q[D];

        /* Random queries, and queries that are stored faces (similarity 1). */
        for (int t = 0; t < 20; t++) {
                unit(q);
                check_query(idx, "col_a", vecs, gone, n, q, 10, 0.0f);
        }
        struct index_hit hit;
        assert_int_equal(
                index_search(idx, "col_a", vecs + 77 * D, 1, 0.5f, &hit), 1);
        assert_string_equal(hit.face_id, "face_77");
        assert_true(fabsf(hit.similarity - 1.0f) < 1e-3f);
        assert_int_equal(index_count(idx, "col_a"), n);
        free(gone);
        free(vecs);
        index_free(idx);
}

static void test_threshold_and_k(void **state)
{
        (void)state;
        struct index *idx = index_new();
        float *vecs = fill(idx, "col_a", 500);
        struct index_hit hits[INDEX_MAX_K];

        /* Random 512-d vectors are nearly orthogonal: a bar of 0.5 lets
         * only the face itself through. */
        assert_int_equal(
                index_search(idx, "col_a", vecs + 5 * D, 100, 0.5f, hits), 1);
        assert_int_equal(index_search(idx, "col_a", vecs, 0, 0.0f, hits), 0);
        assert_int_equal(index_search(idx, "col_a", vecs, 100, 0.0f, hits),
                         100);
        free(vecs);
        index_free(idx);
}

static void test_remove(void **state)
{
        (void)state;
        struct index *idx = index_new();
        int n = 2100; /* three blocks */
        float *vecs = fill(idx, "col_a", n);
        bool *gone = calloc((size_t)n, 1);
        char id[STORE_ID_MAX];
        struct index_hit hits[5];

        /* Remove every third face; none is found again, the rest are. */
        for (int i = 0; i < n; i += 3) {
                snprintf(id, sizeof id, "face_%d", i);
                assert_true(index_remove(idx, "col_a", id));
                assert_false(index_remove(idx, "col_a", id));
                gone[i] = true;
        }
        assert_int_equal(index_count(idx, "col_a"), n - 700);
        for (int i = 0; i < 60; i++) {
                int got = index_search(idx, "col_a", vecs + (size_t)i * D, 1,
                                       0.9f, hits);
                assert_int_equal(got, gone[i] ? 0 : 1);
                if (got)
                        assert_int_equal(atoi(hits[0].face_id + 5), i);
                check_query(idx, "col_a", vecs, gone, n, vecs + (size_t)i * D,
                            5, 0.0f);
        }
        free(gone);
        free(vecs);
        index_free(idx);
}

static void test_collections_apart(void **state)
{
        (void)state;
        struct index *idx = index_new();
        float *a = fill(idx, "col_a", 10);
        struct index_hit hits[10];
        assert_int_equal(index_search(idx, "col_b", a, 10, 0.0f, hits), 0);
        assert_false(index_remove(idx, "col_b", "face_1"));
        assert_int_equal(index_count(idx, "col_b"), 0);
        assert_int_equal(index_search(idx, "col_a", a, 10, 0.0f, hits), 10);
        free(a);
        index_free(idx);
}

static void test_large_parallel(void **state)
{
        (void)state;
        struct index *idx = index_new();
        int n = 40000; /* enough blocks for the threaded path */
        float *vecs = fill(idx, "col_a", n);
        bool *gone = calloc((size_t)n, 1);
        for (int t = 0; t < 3; t++)
                check_query(idx, "col_a", vecs, gone, n,
                            vecs + (size_t)(t * 13331) * D, 10, 0.0f);

        /* Random queries against a bar that many faces pass barely: the
         * 8-bit first pass must not lose any of the true top k. */
        float q[D];
        for (int t = 0; t < 5; t++) {
                unit(q);
                check_query(idx, "col_a", vecs, gone, n, q, 20, 0.1f);
                check_query(idx, "col_a", vecs, gone, n, q, 100, 0.0f);
        }

        /* Memory stays within the budget of 2.2 KB per face. */
        assert_true(index_memory(idx) / (size_t)n < 2200);
        free(gone);
        free(vecs);
        index_free(idx);
}

static void test_dot(void **state)
{
        (void)state;
        float a[D], b[D];
        unit(a);
        unit(b);
        assert_true(fabs(index_dot(a, b) - dot(a, b)) < 1e-5);
        assert_true(fabs(index_dot(a, a) - 1.0) < 1e-5);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_matches_brute_force),
                cmocka_unit_test(test_threshold_and_k),
                cmocka_unit_test(test_remove),
                cmocka_unit_test(test_collections_apart),
                cmocka_unit_test(test_large_parallel),
                cmocka_unit_test(test_dot),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
