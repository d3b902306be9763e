/*
 * test_index.c - the 1:N index against a float32 brute force: the same
 * top k, in the same order, with the same similarities (face_similarity
 * of the float32 vectors, ties by id), also on near-duplicates built to
 * defeat any fixed number of first-pass candidates; thresholds, removal,
 * collections kept apart, and the multi-threaded path on large sets.
 */
#include "face/face.h"
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

/* What exact_sim needs: the faces (face_N is vecs + N * D) and the
 * query. */
struct exact_ctx {
        const float *vecs;
        const bool *gone;
        int n;
        const float *q;
        int calls;
};

/* index_exact_fn over the test's float32 vectors. */
static int exact_sim(void *ctx, const char *face_id, float *sim)
{
        struct exact_ctx *x = ctx;
        int id = atoi(face_id + 5);
        assert_true(id >= 0 && id < x->n);
        x->calls++;
        if (x->gone[id])
                return -1;
        *sim = face_similarity(x->q, x->vecs + (size_t)id * D);
        return 0;
}

/* One face of the brute force: its similarity and id. */
struct ref {
        float sim;
        char id[STORE_ID_MAX];
};

static int ref_order(const void *x, const void *y)
{
        const struct ref *a = x, *b = y;
        if (a->sim != b->sim)
                return a->sim < b->sim ? 1 : -1;
        return strcmp(a->id, b->id);
}

/*
 * Checks one query against the float32 brute force over the faces still
 * in: exactly the same faces in the same order with the same
 * similarities.  Without exact, similarities within 1e-3 instead.
 */
static void check_exact(struct index *idx, const char *coll, const float *vecs,
                        const bool *gone, int n, const float *q, int k,
                        float min_sim)
{
        struct index_hit hits[INDEX_MAX_K];
        struct exact_ctx x = {vecs, gone, n, q, 0};
        struct ref *ref = malloc(sizeof *ref * (size_t)n);
        int m = 0;

        for (int j = 0; j < n; j++) {
                if (gone[j])
                        continue;
                ref[m].sim = face_similarity(q, vecs + (size_t)j * D);
                snprintf(ref[m].id, sizeof ref[m].id, "face_%d", j);
                if (ref[m].sim >= min_sim)
                        m++;
        }
        qsort(ref, (size_t)m, sizeof *ref, ref_order);
        int want = m < k ? m : k;

        int got = index_search(idx, coll, q, k, min_sim, exact_sim, &x, hits);
        assert_int_equal(got, want);
        for (int i = 0; i < got; i++) {
                assert_string_equal(hits[i].face_id, ref[i].id);
                assert_true(hits[i].similarity == ref[i].sim);
        }

        /* Without the float32 vectors: the estimates are close. */
        got = index_search(idx, coll, q, k, min_sim, NULL, NULL, hits);
        assert_true(got >= 0 && got <= k);
        for (int i = 0; i < got; i++) {
                int id = atoi(hits[i].face_id + 5);
                assert_true(id >= 0 && id < n && !gone[id]);
                float s = face_similarity(q, vecs + (size_t)id * D);
                assert_true(fabsf(s - hits[i].similarity) < 1e-3f);
        }
        free(ref);
}

/* Checks one query: see check_exact. */
static void check_query(struct index *idx, const char *coll, const float *vecs,
                        const bool *gone, int n, const float *q, int k,
                        float min_sim)
{
        check_exact(idx, coll, vecs, gone, n, q, k, min_sim);
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
        assert_int_equal(index_search(idx, "col_a", vecs + 77 * D, 1, 0.5f,
                                      NULL, NULL, &hit),
                         1);
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
        assert_int_equal(index_search(idx, "col_a", vecs + 5 * D, 100, 0.5f,
                                      NULL, NULL, hits),
                         1);
        assert_int_equal(
                index_search(idx, "col_a", vecs, 0, 0.0f, NULL, NULL, hits), 0);
        assert_int_equal(
                index_search(idx, "col_a", vecs, 100, 0.0f, NULL, NULL, hits),
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
                                       0.9f, NULL, NULL, hits);
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
        assert_int_equal(
                index_search(idx, "col_b", a, 10, 0.0f, NULL, NULL, hits), 0);
        assert_false(index_remove(idx, "col_b", "face_1"));
        assert_int_equal(index_count(idx, "col_b"), 0);
        assert_int_equal(
                index_search(idx, "col_a", a, 10, 0.0f, NULL, NULL, hits), 10);
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

/*
 * Near-duplicates: hundreds of copies of one face, each moved by far less
 * than the 8-bit rounding, among random faces.  Their 8-bit scores are
 * noise around one value, so a first pass that kept a fixed number of
 * candidates beyond k would lose some of the true top k; a few exact
 * copies tie and must come in id order.
 */
static void test_near_duplicates(void **state)
{
        (void)state;
        struct index *idx = index_new();
        int background = 16000, dups = 800, n = background + dups;
        float *vecs = malloc(sizeof(float) * D * (size_t)n);
        bool *gone = calloc((size_t)n, 1);
        float base[D], noise[D], q[D];
        char id[STORE_ID_MAX];

        unit(base);
        for (int i = 0; i < n; i++) {
                float *v = vecs + (size_t)i * D;
                if (i < background) {
                        unit(v);
                } else if (i % 97 == 0) {
                        memcpy(v, vecs + (size_t)(i - 1) * D, sizeof base);
                } else {
                        double nn = 0;
                        unit(noise);
                        for (int j = 0; j < D; j++) {
                                v[j] = base[j] + 0.002f * noise[j];
                                nn += (double)v[j] * v[j];
                        }
                        for (int j = 0; j < D; j++)
                                v[j] = (float)(v[j] / sqrt(nn));
                }
        }

        /* Insert in a shuffled order so that the near-duplicates spread
         * over the blocks and the threads (over 16 blocks in all). */
        int *order = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++)
                order[i] = i;
        for (int i = n - 1; i > 0; i--) {
                int j = (int)((rnd() + 0.5f) * (float)(i + 1)) % (i + 1);
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
        }
        for (int i = 0; i < n; i++) {
                snprintf(id, sizeof id, "face_%d", order[i]);
                assert_int_equal(index_add(idx, "col_a", id,
                                           vecs + (size_t)order[i] * D),
                                 0);
        }

        /* Queries near the cluster: the base itself, and the base moved
         * towards a random direction (the cluster then spreads a little
         * in similarity, still within the 8-bit error). */
        check_exact(idx, "col_a", vecs, gone, n, base, 10, 0.0f);
        check_exact(idx, "col_a", vecs, gone, n, base, 100, 0.0f);
        for (int t = 0; t < 4; t++) {
                double nn = 0;
                unit(noise);
                for (int j = 0; j < D; j++) {
                        q[j] = base[j] + 0.5f * noise[j];
                        nn += (double)q[j] * q[j];
                }
                for (int j = 0; j < D; j++)
                        q[j] = (float)(q[j] / sqrt(nn));
                check_exact(idx, "col_a", vecs, gone, n, q, 10, 0.0f);
                check_exact(idx, "col_a", vecs, gone, n, q, 100, 0.5f);
        }

        /* A threshold right at the cluster's similarities. */
        float mid = face_similarity(q, vecs + (size_t)(background + 1) * D);
        check_exact(idx, "col_a", vecs, gone, n, q, 50, mid);
        free(order);
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
                cmocka_unit_test(test_near_duplicates),
                cmocka_unit_test(test_dot),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
