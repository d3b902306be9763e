/*
 * index.c - exact 1:N search over in-memory embeddings.
 *
 * A collection's faces live in blocks of INDEX_BLOCK vectors; the faces
 * are packed (a removal moves the last face into the hole), so a search
 * reads one contiguous run of half-precision values per block.  The scan
 * kernel is chosen once at run time from what the CPU offers: AVX2 with
 * FMA and F16C when present, otherwise a portable loop the compiler
 * vectorises.  No instruction is ever used that the CPU lacks.
 */
#include "index/index.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define INDEX_X86 1
#endif

#define DIM FACE_EMBEDDING_DIM

/* Searches over at least this many blocks use several threads. */
#define INDEX_PARALLEL_BLOCKS 16
#define INDEX_THREADS         4
/* First-pass candidates beyond k, and the margin below the bar they get:
 * 8-bit rounding moves a similarity by about 0.001, rarely 0.005. */
#define INDEX_EXTRA       32
#define INDEX_ROUGH_SLACK 0.02f

/* The threads one search may use: the online CPUs, at most
 * INDEX_THREADS; set once with the kernel. */
static int search_threads = 1;

struct block {
        uint16_t *vec; /* INDEX_BLOCK * DIM halves, 64-byte aligned */
        int8_t *q8;    /* the same vectors in 8 bits, for the first pass */
        float *scale;  /* per vector: q8 * scale ~ vec */
        char (*ids)[STORE_ID_MAX]; /* INDEX_BLOCK ids */
};

struct coll {
        char id[STORE_ID_MAX];
        size_t count;   /* faces held */
        size_t nblocks; /* blocks allocated */
        size_t capblocks;
        struct block *blocks;
};

struct index {
        pthread_rwlock_t lock;
        size_t ncolls, capcolls;
        struct coll **colls;
};

/* Computes n dot products of q with the packed half vectors v into out. */
typedef void (*scan_fn)(const float *q, const uint16_t *v, size_t n,
                        float *out);

/*
 * Half precision.  Stored vectors are IEEE binary16: half the memory to
 * read per query, and a similarity within 0.001 of the float32 one.
 */

static float half_table[65536];

static float half_to_float(uint16_t h)
{
        uint32_t sign = (uint32_t)(h & 0x8000) << 16;
        int exp = (h >> 10) & 0x1f;
        uint32_t man = h & 0x3ff;
        float f;
        if (exp == 0)
                f = ldexpf((float)man, -24); /* zero and subnormals */
        else if (exp == 31)
                f = man ? NAN : INFINITY;
        else
                f = ldexpf((float)(man | 0x400), exp - 25);
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        bits |= sign;
        memcpy(&f, &bits, sizeof f);
        return f;
}

/* Rounds to the nearest binary16 (ties to even); unit vectors never get
 * near its range limits, but they are handled. */
static uint16_t float_to_half(float f)
{
        uint32_t x;
        memcpy(&x, &f, sizeof x);
        uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
        float a = fabsf(f);
        if (isnan(f))
                return sign | 0x7e00;
        if (a >= 65520.0f)
                return sign | 0x7c00;
        if (a < 0x1p-14f) /* subnormal: a multiple of 2^-24 */
                return sign | (uint16_t)lrintf(a * 0x1p24f);
        int e;
        float m = frexpf(a, &e);        /* a = m * 2^e, m in [0.5, 1) */
        long man = lrintf(m * 2048.0f); /* 11 significant bits */
        if (man == 2048) {
                man = 1024;
                e++;
        }
        int exp = e - 1 + 15;
        if (exp >= 31)
                return sign | 0x7c00;
        return sign | (uint16_t)(exp << 10) | (uint16_t)(man & 0x3ff);
}

/* Any CPU: the table turns halves into floats; eight independent partial
 * sums let the compiler use vector lanes without reordering additions. */
static void scan_portable(const float *q, const uint16_t *v, size_t n,
                          float *out)
{
        for (size_t i = 0; i < n; i++, v += DIM) {
                float acc[8] = {0};
                for (int j = 0; j < DIM; j += 8)
                        for (int l = 0; l < 8; l++)
                                acc[l] += q[j + l] * half_table[v[j + l]];
                out[i] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
                         ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        }
}

#ifdef INDEX_X86
__attribute__((target("avx2,fma,f16c"))) static void
scan_avx2(const float *q, const uint16_t *v, size_t n, float *out)
{
        for (size_t i = 0; i < n; i++, v += DIM) {
                __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
                __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
                for (int j = 0; j < DIM; j += 32) {
                        const __m128i *p = (const __m128i *)(v + j);
                        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j),
                                             _mm256_cvtph_ps(_mm_load_si128(p)),
                                             a0);
                        a1 = _mm256_fmadd_ps(
                                _mm256_loadu_ps(q + j + 8),
                                _mm256_cvtph_ps(_mm_load_si128(p + 1)), a1);
                        a2 = _mm256_fmadd_ps(
                                _mm256_loadu_ps(q + j + 16),
                                _mm256_cvtph_ps(_mm_load_si128(p + 2)), a2);
                        a3 = _mm256_fmadd_ps(
                                _mm256_loadu_ps(q + j + 24),
                                _mm256_cvtph_ps(_mm_load_si128(p + 3)), a3);
                }
                __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1),
                                         _mm256_add_ps(a2, a3));
                __m128 h = _mm_add_ps(_mm256_castps256_ps128(s),
                                      _mm256_extractf128_ps(s, 1));
                float t[4];
                _mm_storeu_ps(t, h);
                out[i] = (t[0] + t[1]) + (t[2] + t[3]);
        }
}
#endif

/* Integer dot products of the 16-bit query q with n packed 8-bit vectors
 * (the first pass): out[i] = sum q[j] * v[i][j]. */
typedef void (*scan8_fn)(const int16_t *q, const int8_t *v, size_t n,
                         int32_t *out);

static void scan8_portable(const int16_t *q, const int8_t *v, size_t n,
                           int32_t *out)
{
        for (size_t i = 0; i < n; i++, v += DIM) {
                int32_t acc[8] = {0};
                for (int j = 0; j < DIM; j += 8)
                        for (int l = 0; l < 8; l++)
                                acc[l] += (int32_t)q[j + l] * v[j + l];
                out[i] = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] +
                         acc[6] + acc[7];
        }
}

#ifdef INDEX_X86
__attribute__((target("avx2"))) static void
scan8_avx2(const int16_t *q, const int8_t *v, size_t n, int32_t *out)
{
        for (size_t i = 0; i < n; i++, v += DIM) {
                __m256i a0 = _mm256_setzero_si256();
                __m256i a1 = _mm256_setzero_si256();
                for (int j = 0; j < DIM; j += 32) {
                        __m256i x0 = _mm256_cvtepi8_epi16(
                                _mm_load_si128((const __m128i *)(v + j)));
                        __m256i x1 = _mm256_cvtepi8_epi16(
                                _mm_load_si128((const __m128i *)(v + j + 16)));
                        a0 = _mm256_add_epi32(
                                a0,
                                _mm256_madd_epi16(
                                        x0, _mm256_loadu_si256(
                                                    (const __m256i *)(q + j))));
                        a1 = _mm256_add_epi32(
                                a1, _mm256_madd_epi16(
                                            x1, _mm256_loadu_si256((
                                                        const __m256i *)(q + j +
                                                                         16))));
                }
                __m256i s = _mm256_add_epi32(a0, a1);
                __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s),
                                          _mm256_extracti128_si256(s, 1));
                int32_t t[4];
                _mm_storeu_si128((__m128i *)t, h);
                out[i] = t[0] + t[1] + t[2] + t[3];
        }
}
#endif

static scan8_fn scan8_kernel;
static scan_fn scan_kernel;
static pthread_once_t scan_once = PTHREAD_ONCE_INIT;

static void pick_kernel(void)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        search_threads = cpus < 1               ? 1
                         : cpus > INDEX_THREADS ? INDEX_THREADS
                                                : (int)cpus;
        for (uint32_t h = 0; h < 65536; h++)
                half_table[h] = half_to_float((uint16_t)h);
        scan_kernel = scan_portable;
        scan8_kernel = scan8_portable;
#ifdef INDEX_X86
        /* F16C is read from CPUID leaf 1 directly: not every compiler's
         * __builtin_cpu_supports() knows its name. */
        unsigned a, b, c, d;
        bool f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
            f16c) {
                scan_kernel = scan_avx2;
                scan8_kernel = scan8_avx2;
        }
#endif
}

static scan_fn kernel(void)
{
        pthread_once(&scan_once, pick_kernel);
        return scan_kernel;
}

float index_dot(const float *a, const float *b)
{
        float acc[8] = {0};
        for (int j = 0; j < DIM; j += 8)
                for (int l = 0; l < 8; l++)
                        acc[l] += a[j + l] * b[j + l];
        return ((acc[0] + acc[4]) + (acc[1] + acc[5])) +
               ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/*
 * Collections.
 */

struct index *index_new(void)
{
        struct index *idx = calloc(1, sizeof *idx);
        if (!idx)
                return NULL;
        pthread_rwlock_init(&idx->lock, NULL);
        kernel();
        return idx;
}

static void coll_free(struct coll *c)
{
        for (size_t b = 0; b < c->nblocks; b++) {
                free(c->blocks[b].vec);
                free(c->blocks[b].q8);
                free(c->blocks[b].scale);
                free(c->blocks[b].ids);
        }
        free(c->blocks);
        free(c);
}

void index_free(struct index *idx)
{
        if (!idx)
                return;
        for (size_t i = 0; i < idx->ncolls; i++)
                coll_free(idx->colls[i]);
        free(idx->colls);
        pthread_rwlock_destroy(&idx->lock);
        free(idx);
}

void index_read_lock(struct index *idx)
{
        pthread_rwlock_rdlock(&idx->lock);
}

void index_write_lock(struct index *idx)
{
        pthread_rwlock_wrlock(&idx->lock);
}

void index_unlock(struct index *idx)
{
        pthread_rwlock_unlock(&idx->lock);
}

static struct coll *find_coll(const struct index *idx, const char *id)
{
        for (size_t i = 0; i < idx->ncolls; i++)
                if (strcmp(idx->colls[i]->id, id) == 0)
                        return idx->colls[i];
        return NULL;
}

/* The collection's slot, created when missing; NULL when out of memory. */
static struct coll *get_coll(struct index *idx, const char *id)
{
        struct coll *c = find_coll(idx, id);
        if (c)
                return c;
        if (idx->ncolls == idx->capcolls) {
                size_t cap = idx->capcolls ? idx->capcolls * 2 : 8;
                struct coll **n = realloc(idx->colls, cap * sizeof *n);
                if (!n)
                        return NULL;
                idx->colls = n;
                idx->capcolls = cap;
        }
        c = calloc(1, sizeof *c);
        if (!c)
                return NULL;
        snprintf(c->id, sizeof c->id, "%s", id);
        idx->colls[idx->ncolls++] = c;
        return c;
}

/* Makes room for one more face; returns -1 when out of memory. */
static int coll_reserve(struct coll *c)
{
        if (c->count < c->nblocks * INDEX_BLOCK)
                return 0;
        if (c->nblocks == c->capblocks) {
                size_t cap = c->capblocks ? c->capblocks * 2 : 4;
                struct block *n = realloc(c->blocks, cap * sizeof *n);
                if (!n)
                        return -1;
                c->blocks = n;
                c->capblocks = cap;
        }
        struct block b;
        b.vec = aligned_alloc(64, sizeof(uint16_t) * DIM * INDEX_BLOCK);
        b.q8 = aligned_alloc(64, DIM * INDEX_BLOCK);
        b.scale = malloc(sizeof *b.scale * INDEX_BLOCK);
        b.ids = malloc(sizeof *b.ids * INDEX_BLOCK);
        if (!b.vec || !b.q8 || !b.scale || !b.ids) {
                free(b.vec);
                free(b.q8);
                free(b.scale);
                free(b.ids);
                return -1;
        }
        c->blocks[c->nblocks++] = b;
        return 0;
}

static int8_t *q8_at(const struct coll *c, size_t i)
{
        return c->blocks[i / INDEX_BLOCK].q8 + (i % INDEX_BLOCK) * DIM;
}

static float *scale_at(const struct coll *c, size_t i)
{
        return &c->blocks[i / INDEX_BLOCK].scale[i % INDEX_BLOCK];
}

/* Quantises v to 8 bits with one scale: out * scale ~ v. */
static void quantize8(const float *v, int8_t *out, float *scale)
{
        float m = 0.0f;
        for (int i = 0; i < DIM; i++)
                m = fabsf(v[i]) > m ? fabsf(v[i]) : m;
        float s = m > 0.0f ? m / 127.0f : 1.0f;
        for (int i = 0; i < DIM; i++)
                out[i] = (int8_t)lrintf(v[i] / s);
        *scale = s;
}

static uint16_t *vec_at(const struct coll *c, size_t i)
{
        return c->blocks[i / INDEX_BLOCK].vec + (i % INDEX_BLOCK) * DIM;
}

static char *id_at(const struct coll *c, size_t i)
{
        return c->blocks[i / INDEX_BLOCK].ids[i % INDEX_BLOCK];
}

int index_add(struct index *idx, const char *collection, const char *face_id,
              const float *emb)
{
        struct coll *c = get_coll(idx, collection);
        if (!c || coll_reserve(c) != 0)
                return -1;
        uint16_t *v = vec_at(c, c->count);
        for (int i = 0; i < DIM; i++)
                v[i] = float_to_half(emb[i]);
        quantize8(emb, q8_at(c, c->count), scale_at(c, c->count));
        snprintf(id_at(c, c->count), STORE_ID_MAX, "%s", face_id);
        c->count++;
        return 0;
}

bool index_remove(struct index *idx, const char *collection,
                  const char *face_id)
{
        struct coll *c = find_coll(idx, collection);
        if (!c)
                return false;

        /* Find the face, move the last one into its place. */
        for (size_t i = 0; i < c->count; i++) {
                if (strcmp(id_at(c, i), face_id) != 0)
                        continue;
                size_t last = c->count - 1;
                if (i != last) {
                        memcpy(vec_at(c, i), vec_at(c, last),
                               sizeof(uint16_t) * DIM);
                        memcpy(q8_at(c, i), q8_at(c, last), DIM);
                        *scale_at(c, i) = *scale_at(c, last);
                        memcpy(id_at(c, i), id_at(c, last), STORE_ID_MAX);
                }
                c->count--;

                /* Give back a trailing block once a whole one is free. */
                if (c->nblocks * INDEX_BLOCK - c->count > INDEX_BLOCK) {
                        struct block *b = &c->blocks[--c->nblocks];
                        free(b->vec);
                        free(b->q8);
                        free(b->scale);
                        free(b->ids);
                }
                return true;
        }
        return false;
}

size_t index_count(struct index *idx, const char *collection)
{
        struct coll *c = find_coll(idx, collection);
        return c ? c->count : 0;
}

size_t index_memory(struct index *idx)
{
        size_t bytes = sizeof *idx + idx->capcolls * sizeof *idx->colls;
        for (size_t i = 0; i < idx->ncolls; i++) {
                const struct coll *c = idx->colls[i];
                bytes += sizeof *c + c->capblocks * sizeof *c->blocks +
                         c->nblocks * INDEX_BLOCK *
                                 (sizeof(uint16_t) * DIM + DIM + sizeof(float) +
                                  STORE_ID_MAX);
        }
        return bytes;
}

/* Puts (id, sim) into hits, kept sorted most similar first, at most k. */
static void topk_push(struct index_hit *hits, int *n, int k, const char *id,
                      float sim)
{
        if (*n == k && sim <= hits[k - 1].similarity)
                return;
        int i = *n < k ? (*n)++ : k - 1;
        while (i > 0 && hits[i - 1].similarity < sim) {
                hits[i] = hits[i - 1];
                i--;
        }
        memcpy(hits[i].face_id, id, STORE_ID_MAX);
        hits[i].similarity = sim;
}

/* A first-pass candidate: its rough similarity and where it lies. */
struct cand {
        float rough;
        size_t pos;
};

/* One share of a search: blocks [first, end) into its own top k. */
struct share {
        const struct coll *c;
        const float *query;
        const int16_t *q16; /* the query in 16 bits */
        float q16_scale;    /* q16 * q16_scale ~ query */
        size_t first, end;
        int k;
        float min_similarity;
        int n;
        struct index_hit hits[INDEX_MAX_K];
        int ncand;
        struct cand cands[INDEX_MAX_K + INDEX_EXTRA];
};

/* Keeps the best `cap` candidates by rough similarity, best first. */
static void cand_push(struct share *sh, int cap, float rough, size_t pos)
{
        if (sh->ncand == cap && rough <= sh->cands[cap - 1].rough)
                return;
        int i = sh->ncand < cap ? sh->ncand++ : cap - 1;
        while (i > 0 && sh->cands[i - 1].rough < rough) {
                sh->cands[i] = sh->cands[i - 1];
                i--;
        }
        sh->cands[i] = (struct cand){rough, pos};
}

/*
 * Two passes.  The first reads the 8-bit vectors (half the bytes of the
 * half-precision ones) and keeps the k + INDEX_EXTRA best, with a margin
 * of INDEX_ROUGH_SLACK below the bar for the rounding of 8 bits.  The
 * second scores those few on the half-precision vectors.
 */
static void *scan_share(void *arg)
{
        struct share *sh = arg;
        const struct coll *c = sh->c;
        scan8_fn scan8 = scan8_kernel;
        int32_t dots[INDEX_BLOCK];
        int cap = sh->k + INDEX_EXTRA;
        /* Similarities are clamped at 0: a bar of 0 takes every face. */
        float bar = sh->min_similarity > 0.0f
                            ? sh->min_similarity - INDEX_ROUGH_SLACK
                            : -INFINITY;

        for (size_t b = sh->first; b < sh->end; b++) {
                size_t start = b * INDEX_BLOCK;
                if (start >= c->count)
                        break;
                size_t len = c->count - start < INDEX_BLOCK ? c->count - start
                                                            : INDEX_BLOCK;
                scan8(sh->q16, c->blocks[b].q8, len, dots);
                const float *scale = c->blocks[b].scale;
                for (size_t i = 0; i < len; i++) {
                        float r = (float)dots[i] * scale[i] * sh->q16_scale;
                        if (r >= bar)
                                cand_push(sh, cap, r, start + i);
                }
        }

        for (int i = 0; i < sh->ncand; i++) {
                size_t pos = sh->cands[i].pos;
                float s;
                scan_kernel(sh->query, vec_at(c, pos), 1, &s);
                s = s > 0.0f ? s : 0.0f;
                if (s >= sh->min_similarity)
                        topk_push(sh->hits, &sh->n, sh->k, id_at(c, pos), s);
        }
        return NULL;
}

int index_search(struct index *idx, const char *collection, const float *query,
                 int k, float min_similarity, struct index_hit *hits)
{
        struct coll *c = find_coll(idx, collection);
        kernel(); /* picks the kernels and sets search_threads */
        int16_t q16[DIM] __attribute__((aligned(32)));
        float qmax = 0.0f;
        struct share sh[INDEX_THREADS];
        pthread_t tid[INDEX_THREADS];
        int n = 0;

        assert(k >= 0 && k <= INDEX_MAX_K);
        if (!c || k == 0)
                return 0;

        /* The query in 16 bits for the first pass; 16383 keeps 512
         * products of 127 * 16383 inside an int32. */
        for (int i = 0; i < DIM; i++)
                qmax = fabsf(query[i]) > qmax ? fabsf(query[i]) : qmax;
        float qs = qmax > 0.0f ? qmax / 16383.0f : 1.0f;
        for (int i = 0; i < DIM; i++)
                q16[i] = (int16_t)lrintf(query[i] / qs);

        /* Large collections are split over several threads: one core
         * alone cannot read memory as fast as the cores together. */
        size_t used = (c->count + INDEX_BLOCK - 1) / INDEX_BLOCK;
        int shares = used >= INDEX_PARALLEL_BLOCKS ? search_threads : 1;
        int started = 0;
        for (int t = 0; t < shares; t++) {
                sh[t] = (struct share){.c = c,
                                       .query = query,
                                       .q16 = q16,
                                       .q16_scale = qs,
                                       .first = used * t / shares,
                                       .end = used * (t + 1) / shares,
                                       .k = k,
                                       .min_similarity = min_similarity};
                if (t > 0 &&
                    pthread_create(&tid[t], NULL, scan_share, &sh[t]) == 0)
                        started |= 1 << t;
        }
        scan_share(&sh[0]);

        /* Shares whose thread could not start run here; then merge. */
        for (int t = 1; t < shares; t++) {
                if (started & (1 << t))
                        pthread_join(tid[t], NULL);
                else
                        scan_share(&sh[t]);
        }
        for (int t = 0; t < shares; t++)
                for (int i = 0; i < sh[t].n; i++)
                        topk_push(hits, &n, k, sh[t].hits[i].face_id,
                                  sh[t].hits[i].similarity);
        return n;
}
