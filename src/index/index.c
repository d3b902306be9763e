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

/*
 * Error bounds.  Every float computation of the search rounds with a
 * relative error of at most 2^-24 per operation; INDEX_REL covers a few
 * of them on each side of a bound (with ample room).  INDEX_GAMMA bounds
 * a float dot product of DIM terms summed in any order: |fl(sum) - sum|
 * <= DIM * 2^-24 / (1 - DIM * 2^-24) * sum |q_i v_i|.
 */
#define INDEX_REL   1e-6f
#define INDEX_GAMMA 3.1e-5f
/* First-pass candidates a share holds before it drops those below the
 * bar; the list grows past it when it must. */
#define INDEX_CAND_START 1024
/* The threads one search may use: the online CPUs, at most
 * INDEX_THREADS; set once with the kernel. */
static int search_threads = 1;

/*
 * What the error bounds need of one face v (float32, as given to
 * index_add), computed in double at insert and rounded up: with q8 the
 * 8-bit copy and h the half one, v8 = q8 * scale.
 */
struct meta {
        float scale; /* of the 8-bit copy */
        float norm;  /* >= ||v|| */
        float res8;  /* >= ||v - v8|| */
        float res16; /* >= ||v - h|| */
};

struct block {
        uint16_t *vec;     /* INDEX_BLOCK * DIM halves, 64-byte aligned */
        int8_t *q8;        /* the same vectors in 8 bits, for the first pass */
        struct meta *meta; /* INDEX_BLOCK bounds' data */
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
                free(c->blocks[b].meta);
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
        b.meta = malloc(sizeof *b.meta * INDEX_BLOCK);
        b.ids = malloc(sizeof *b.ids * INDEX_BLOCK);
        if (!b.vec || !b.q8 || !b.meta || !b.ids) {
                free(b.vec);
                free(b.q8);
                free(b.meta);
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

static struct meta *meta_at(const struct coll *c, size_t i)
{
        return &c->blocks[i / INDEX_BLOCK].meta[i % INDEX_BLOCK];
}

/* x as a float no smaller than it: rounding to float loses at most a
 * relative 2^-24, far less than INDEX_REL. */
static float round_up(double x)
{
        return (float)(x * (1.0 + (double)INDEX_REL));
}

/* Quantises v to 8 bits with one scale (out * scale ~ v) and to half
 * precision, and fills m with the norms the error bounds need. */
static void quantize(const float *v, int8_t *out, uint16_t *half,
                     struct meta *m)
{
        float mx = 0.0f;
        for (int i = 0; i < DIM; i++)
                mx = fabsf(v[i]) > mx ? fabsf(v[i]) : mx;
        float s = mx > 0.0f ? mx / 127.0f : 1.0f;
        double n = 0, r8 = 0, r16 = 0;
        for (int i = 0; i < DIM; i++) {
                out[i] = (int8_t)lrintf(v[i] / s);
                half[i] = float_to_half(v[i]);
                double d8 = (double)v[i] - (double)s * out[i];
                double d16 = (double)v[i] - (double)half_to_float(half[i]);
                n += (double)v[i] * v[i];
                r8 += d8 * d8;
                r16 += d16 * d16;
        }
        *m = (struct meta){.scale = s,
                           .norm = round_up(sqrt(n)),
                           .res8 = round_up(sqrt(r8)),
                           .res16 = round_up(sqrt(r16))};
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
        quantize(emb, q8_at(c, c->count), vec_at(c, c->count),
                 meta_at(c, c->count));
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
                        *meta_at(c, i) = *meta_at(c, last);
                        memcpy(id_at(c, i), id_at(c, last), STORE_ID_MAX);
                }
                c->count--;

                /* Give back a trailing block once a whole one is free. */
                if (c->nblocks * INDEX_BLOCK - c->count > INDEX_BLOCK) {
                        struct block *b = &c->blocks[--c->nblocks];
                        free(b->vec);
                        free(b->q8);
                        free(b->meta);
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
                                 (sizeof(uint16_t) * DIM + DIM +
                                  sizeof(struct meta) + STORE_ID_MAX);
        }
        return bytes;
}

/*
 * Search.  The similarity is face_similarity()'s: the dot product in
 * double of the float32 embeddings, rounded to float and clamped to
 * [0, 1]; the order is by similarity, then by face id.  Each pass gives
 * every face it looks at an interval [lb, ub] that provably holds that
 * similarity, and drops only faces whose ub is below the bar: the k-th
 * best lb seen (k other faces are then certainly better) or the caller's
 * minimum.  Rounding to float and clamping are monotone, so bounding the
 * real dot product bounds the similarity.
 */

static float clamp01(float x)
{
        return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x;
}

/* A candidate face: the bounds of its similarity, and where it lies. */
struct cand {
        float lb, ub;
        float sim; /* the second pass's estimate */
        size_t pos;
};

/* The k best lower bounds seen, as a min-heap: heap[0] is the k-th. */
struct bar {
        int k, n;
        float floor; /* the caller's minimum similarity */
        float heap[INDEX_MAX_K];
};

/* The bar a face's ub must reach to stay a candidate. */
static float bar_value(const struct bar *b)
{
        return b->n == b->k && b->heap[0] > b->floor ? b->heap[0] : b->floor;
}

static void bar_push(struct bar *b, float lb)
{
        int i;
        if (b->n < b->k) {
                i = b->n++;
                while (i > 0 && b->heap[(i - 1) / 2] > lb) {
                        b->heap[i] = b->heap[(i - 1) / 2];
                        i = (i - 1) / 2;
                }
                b->heap[i] = lb;
                return;
        }
        if (lb <= b->heap[0])
                return;
        i = 0;
        for (;;) {
                int l = 2 * i + 1, m = l;
                if (l >= b->n)
                        break;
                if (l + 1 < b->n && b->heap[l + 1] < b->heap[l])
                        m = l + 1;
                if (b->heap[m] >= lb)
                        break;
                b->heap[i] = b->heap[m];
                i = m;
        }
        b->heap[i] = lb;
}

/* A growable list of candidates; nomem is set when it could not grow. */
struct cands {
        struct cand *v;
        size_t n, cap;
        bool nomem;
};

/* Keeps only the candidates whose ub reaches bar. */
static void cands_prune(struct cands *cs, float bar)
{
        size_t j = 0;
        for (size_t i = 0; i < cs->n; i++)
                if (cs->v[i].ub >= bar)
                        cs->v[j++] = cs->v[i];
        cs->n = j;
}

static void cands_add(struct cands *cs, struct cand c, float bar)
{
        if (cs->n == cs->cap) {
                cands_prune(cs, bar);
                if (cs->n > cs->cap / 2 || cs->cap == 0) {
                        size_t cap = cs->cap ? cs->cap * 2 : INDEX_CAND_START;
                        struct cand *v = realloc(cs->v, cap * sizeof *v);
                        if (!v) {
                                cs->nomem = true;
                                return;
                        }
                        cs->v = v;
                        cs->cap = cap;
                }
        }
        cs->v[cs->n++] = c;
}

/* One share of the first pass: blocks [first, end) into its own
 * candidates, with its own bar. */
struct share {
        const struct coll *c;
        const int16_t *q16; /* the query in 16 bits: q16 = q16 * qs */
        float qs;
        float qres;  /* >= ||q - q16|| */
        float qnorm; /* >= ||q16|| */
        size_t first, end;
        struct bar bar;
        struct cands cands;
};

/*
 * The first pass, over the 8-bit copies.  With q16 and v8 the quantised
 * query and face, <q, v> - <q16, v8> = <q - q16, v> + <q16, v - v8>, so
 * by Cauchy-Schwarz the error of the integer dot product (exact in
 * int32, scaled in float) is at most ||q - q16|| ||v|| + ||q16||
 * ||v - v8||, plus the float rounding of those few products (INDEX_REL).
 */
static void *scan_share(void *arg)
{
        struct share *sh = arg;
        const struct coll *c = sh->c;
        scan8_fn scan8 = scan8_kernel;
        int32_t dots[INDEX_BLOCK];
        float bar = bar_value(&sh->bar);
        /* The same test before clamping: ub < bar holds exactly when
         * r + e < bar for a bar in (0, 1], never for a lower one. */
        float fast = bar > 0.0f ? bar : -INFINITY;

        for (size_t b = sh->first; b < sh->end && !sh->cands.nomem; b++) {
                size_t start = b * INDEX_BLOCK;
                if (start >= c->count)
                        break;
                size_t len = c->count - start < INDEX_BLOCK ? c->count - start
                                                            : INDEX_BLOCK;
                scan8(sh->q16, c->blocks[b].q8, len, dots);
                const struct meta *m = c->blocks[b].meta;
                for (size_t i = 0; i < len; i++) {
                        float r = (float)dots[i] * m[i].scale * sh->qs;
                        float e = sh->qres * m[i].norm + sh->qnorm * m[i].res8;
                        e += INDEX_REL * (1.0f + fabsf(r) + e);
                        if (r + e < fast)
                                continue;
                        float ub = clamp01(r + e);
                        float lb = clamp01(r - e);
                        bar_push(&sh->bar, lb);
                        bar = bar_value(&sh->bar);
                        fast = bar > 0.0f ? bar : -INFINITY;
                        if (ub >= bar)
                                cands_add(
                                        &sh->cands,
                                        (struct cand){lb, ub, 0.0f, start + i},
                                        bar);
                }
        }
        return NULL;
}

/* True when (sim, id) comes before (sim2, id2) in the answer's order. */
static bool before(float sim, const char *id, float sim2, const char *id2)
{
        return sim > sim2 || (sim == sim2 && strcmp(id, id2) < 0);
}

/* Puts (id, sim) into hits, kept in the answer's order, at most k. */
static void topk_push(struct index_hit *hits, int *n, int k, const char *id,
                      float sim)
{
        if (*n == k &&
            !before(sim, id, hits[k - 1].similarity, hits[k - 1].face_id))
                return;
        int i = *n < k ? (*n)++ : k - 1;
        while (i > 0 &&
               before(sim, id, hits[i - 1].similarity, hits[i - 1].face_id)) {
                hits[i] = hits[i - 1];
                i--;
        }
        memcpy(hits[i].face_id, id, STORE_ID_MAX);
        hits[i].similarity = sim;
}

static int by_ub_desc(const void *x, const void *y)
{
        const struct cand *a = x, *b = y;
        return (a->ub < b->ub) - (a->ub > b->ub);
}

/*
 * The second pass, over the half-precision copies h of the candidates:
 * |<q, v> - <q, h>| <= ||q|| ||v - h||, and the float dot product adds at
 * most INDEX_GAMMA * ||q|| ||h||.  Narrows each interval (the first
 * pass's still holds, so the two are intersected) and drops the
 * candidates below the new bar.
 */
static void second_pass(const struct coll *c, const float *query, float qn,
                        int k, float min_similarity, struct cands *cs)
{
        /* A new bar: the first pass's one already counts these faces. */
        struct bar bar = {.k = k, .floor = min_similarity};

        for (size_t i = 0; i < cs->n; i++) {
                struct cand *x = &cs->v[i];
                const struct meta *m = meta_at(c, x->pos);
                float s;
                scan_kernel(query, vec_at(c, x->pos), 1, &s);
                float e =
                        qn * m->res16 + INDEX_GAMMA * qn * (m->norm + m->res16);
                e += INDEX_REL * (1.0f + fabsf(s) + e);
                float lb = clamp01(s - e), ub = clamp01(s + e);
                x->lb = lb > x->lb ? lb : x->lb;
                x->ub = ub < x->ub ? ub : x->ub;
                x->sim = clamp01(s);
                bar_push(&bar, x->lb);
        }
        cands_prune(cs, bar_value(&bar));
}

/*
 * The last step: the candidates by falling ub, each with its exact
 * similarity (from exact, or known when its interval is a single value),
 * into hits, until no later candidate can beat the k-th hit.  Without
 * exact, the second pass's estimate stands in.
 */
static int final_pass(const struct coll *c, int k, float min_similarity,
                      index_exact_fn exact, void *ctx, struct cands *cs,
                      struct index_hit *hits)
{
        int n = 0;

        if (cs->n > 1)
                qsort(cs->v, cs->n, sizeof *cs->v, by_ub_desc);
        for (size_t i = 0; i < cs->n; i++) {
                const struct cand *x = &cs->v[i];
                const char *id = id_at(c, x->pos);
                float sim = x->sim;
                if (n == k && x->ub < hits[k - 1].similarity)
                        break;
                if (x->lb == x->ub)
                        sim = x->lb;
                else if (exact && exact(ctx, id, &sim) != 0)
                        continue; /* gone from the caller's store */
                if (sim >= min_similarity)
                        topk_push(hits, &n, k, id, sim);
        }
        return n;
}

int index_search(struct index *idx, const char *collection, const float *query,
                 int k, float min_similarity, index_exact_fn exact, void *ctx,
                 struct index_hit *hits)
{
        struct coll *c = find_coll(idx, collection);
        kernel(); /* picks the kernels and sets search_threads */
        int16_t q16[DIM] __attribute__((aligned(32)));
        float qmax = 0.0f;
        struct share sh[INDEX_THREADS];
        pthread_t tid[INDEX_THREADS];
        int n = -1;

        assert(k >= 0 && k <= INDEX_MAX_K);
        if (!c || k == 0)
                return 0;

        /* The query in 16 bits for the first pass (16383 keeps 512
         * products of 127 * 16383 inside an int32), and the norms its
         * bounds need, in double, rounded up. */
        for (int i = 0; i < DIM; i++)
                qmax = fabsf(query[i]) > qmax ? fabsf(query[i]) : qmax;
        float qs = qmax > 0.0f ? qmax / 16383.0f : 1.0f;
        double qq = 0, qr = 0, qn = 0;
        for (int i = 0; i < DIM; i++) {
                q16[i] = (int16_t)lrintf(query[i] / qs);
                double d = (double)qs * q16[i];
                qq += d * d;
                qr += ((double)query[i] - d) * ((double)query[i] - d);
                qn += (double)query[i] * query[i];
        }

        /* Large collections are split over several threads: one core
         * alone cannot read memory as fast as the cores together. */
        size_t used = (c->count + INDEX_BLOCK - 1) / INDEX_BLOCK;
        int shares = used >= INDEX_PARALLEL_BLOCKS ? search_threads : 1;
        int started = 0;
        for (int t = 0; t < shares; t++) {
                sh[t] = (struct share){
                        .c = c,
                        .q16 = q16,
                        .qs = qs,
                        .qres = round_up(sqrt(qr)),
                        .qnorm = round_up(sqrt(qq)),
                        .first = used * t / shares,
                        .end = used * (t + 1) / shares,
                        .bar = {.k = k, .floor = min_similarity}};
                if (t > 0 &&
                    pthread_create(&tid[t], NULL, scan_share, &sh[t]) == 0)
                        started |= 1 << t;
        }
        scan_share(&sh[0]);

        /* Shares whose thread could not start run here. */
        for (int t = 1; t < shares; t++) {
                if (started & (1 << t))
                        pthread_join(tid[t], NULL);
                else
                        scan_share(&sh[t]);
        }

        /* All candidates in one list, against one bar: each share's k
         * best lbs are among its candidates, so the k best of all are. */
        struct bar bar = {.k = k, .floor = min_similarity};
        struct cands all = {0};
        for (int t = 0; t < shares; t++) {
                all.nomem |= sh[t].cands.nomem;
                for (size_t i = 0; i < sh[t].cands.n && !all.nomem; i++) {
                        bar_push(&bar, sh[t].cands.v[i].lb);
                        cands_add(&all, sh[t].cands.v[i], -INFINITY);
                }
                free(sh[t].cands.v);
        }
        if (all.nomem)
                goto out;
        cands_prune(&all, bar_value(&bar));

        second_pass(c, query, round_up(sqrt(qn)), k, min_similarity, &all);
        n = final_pass(c, k, min_similarity, exact, ctx, &all, hits);
out:
        free(all.v);
        return n;
}
