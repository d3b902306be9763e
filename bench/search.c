/*
 * bench/search - the 1:N index on synthetic normalised embeddings.
 *
 *   build/bench/search [N ...]      (default: 100000 1000000)
 *   build/bench/search --lfw DIR    (DIR: NAME/NAME_NNNN.jpg photos)
 *
 * For each N: fills one collection with N random unit vectors, then runs
 * 50 single-face queries (top 10, no threshold, exact: the float32
 * vectors the index asks for are made again from their ids, as the API
 * reads them from the store) and prints the median and the 95th
 * percentile of one query's time, and the index memory per face.
 *
 * With --lfw: embeds every photo (the face nearest the centre) and prints,
 * per threshold, the false-match rate over every pair of photos of two
 * different people and the false-non-match rate over every pair of photos
 * of one person: the table docs/api.md gives for choosing a threshold.
 */
#include "face/face.h"
#include "index/index.h"

#include <dirent.h>

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

/* Face i's vector, the same every time it is asked for. */
static void face_vector(long i, float *v)
{
        rng_state = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1) + 1;
        for (int j = 0; j < 4; j++)
                rnd();
        random_unit(v);
}

/* index_exact_fn for bench faces: ctx is the query. */
static int exact_sim(void *ctx, const char *face_id, float *sim)
{
        float v[FACE_EMBEDDING_DIM];
        face_vector(strtol(face_id + 5, NULL, 10), v);
        *sim = face_similarity(ctx, v);
        return 0;
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
                face_vector(i, v);
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
                face_vector(-2 - q, v);
                t0 = now_ms();
                int got = index_search(idx, "col_bench", v, 10, 0.0f, exact_sim,
                                       v, hits);
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

/* One LFW photo: its person and its embedding. */
struct lfw_photo {
        int person;
        float emb[FACE_EMBEDDING_DIM];
};

/* Embeds the face nearest the centre of path into out; 0 or -1. */
static int embed_photo(struct face_engine *eng, const char *path, float *out)
{
        struct face_image img;
        struct face_list list;
        FILE *f = fopen(path, "rb");
        static unsigned char buf[1 << 20];
        size_t len = f ? fread(buf, 1, sizeof buf, f) : 0;
        int rc = -1;

        if (f)
                fclose(f);
        if (len == 0 || face_image_decode(buf, len, NULL, &img) != FACE_OK)
                return -1;
        if (face_engine_analyze(eng, &img, FACE_WANT_EMBEDDING, 0, &list) ==
                    FACE_OK &&
            list.count > 0) {
                int best = 0;
                float bestd = 1e30f;
                for (int i = 0; i < list.count; i++) {
                        const struct face_box *b = &list.faces[i].box;
                        float dx = (b->x1 + b->x2) / 2 - img.width / 2.0f;
                        float dy = (b->y1 + b->y2) / 2 - img.height / 2.0f;
                        if (dx * dx + dy * dy < bestd) {
                                bestd = dx * dx + dy * dy;
                                best = i;
                        }
                }
                memcpy(out, list.faces[best].embedding,
                       sizeof(float) * FACE_EMBEDDING_DIM);
                rc = 0;
        }
        face_list_free(&list);
        face_image_free(&img);
        return rc;
}

static int lfw_table(const char *dir)
{
        static const float thr[] = {0.20f, 0.25f, 0.30f, 0.35f, 0.40f,
                                    0.45f, 0.50f, 0.55f, 0.60f};
        enum { NT = sizeof thr / sizeof thr[0] };
        struct face_engine_config cfg;
        struct face_engine *eng = NULL;
        struct lfw_photo *ph = NULL;
        size_t n = 0, cap = 0;
        int people = 0, failed = 0;
        char err[256], path[4096];

        face_engine_config_default(&cfg);
        if (face_engine_new(&cfg, &eng, err, sizeof err) != FACE_OK) {
                fprintf(stderr, "search: %s\n", err);
                return 1;
        }

        /* Every photo of every person folder. */
        DIR *top = opendir(dir);
        struct dirent *pe;
        while (top && (pe = readdir(top))) {
                if (pe->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof path, "%s/%s", dir, pe->d_name);
                DIR *sub = opendir(path);
                struct dirent *fe;
                while (sub && (fe = readdir(sub))) {
                        if (fe->d_name[0] == '.')
                                continue;
                        if (n == cap) {
                                cap = cap ? cap * 2 : 1024;
                                ph = realloc(ph, cap * sizeof *ph);
                        }
                        snprintf(path, sizeof path, "%s/%s/%s", dir, pe->d_name,
                                 fe->d_name);
                        ph[n].person = people;
                        if (embed_photo(eng, path, ph[n].emb) == 0)
                                n++;
                        else
                                failed++;
                }
                if (sub)
                        closedir(sub);
                people++;
        }
        if (top)
                closedir(top);

        /* Every pair: impostors and genuine ones, counted per threshold. */
        uint64_t imp = 0, gen = 0, fm[NT] = {0}, fnm[NT] = {0};
        for (size_t i = 0; i < n; i++) {
                for (size_t j = i + 1; j < n; j++) {
                        float s = face_similarity(ph[i].emb, ph[j].emb);
                        bool same = ph[i].person == ph[j].person;
                        same ? gen++ : imp++;
                        for (int t = 0; t < NT; t++) {
                                if (!same && s >= thr[t])
                                        fm[t]++;
                                if (same && s < thr[t])
                                        fnm[t]++;
                        }
                }
        }
        printf("photos=%zu (no face: %d) people=%d impostor_pairs=%llu "
               "genuine_pairs=%llu\n",
               n, failed, people, (unsigned long long)imp,
               (unsigned long long)gen);
        printf("threshold  false_match_rate  false_non_match_rate\n");
        for (int t = 0; t < NT; t++)
                printf("%.2f       %.2e          %.4f\n", (double)thr[t],
                       imp ? (double)fm[t] / (double)imp : 0.0,
                       gen ? (double)fnm[t] / (double)gen : 0.0);
        free(ph);
        face_engine_free(eng);
        return 0;
}

int main(int argc, char **argv)
{
        static const long defaults[] = {100000, 1000000};
        int rc = 0;
        if (argc == 3 && strcmp(argv[1], "--lfw") == 0)
                return lfw_table(argv[2]);
        if (argc < 2) {
                for (size_t i = 0; i < 2; i++)
                        rc |= run(defaults[i]);
                return rc;
        }
        for (int i = 1; i < argc; i++) {
                char *end;
                long n = strtol(argv[i], &end, 10);
                if (*end || n < 10) {
                        fprintf(stderr, "usage: search [N ...] (N >= 10) | "
                                        "--lfw DIR\n");
                        return 2;
                }
                rc |= run(n);
        }
        return rc;
}
