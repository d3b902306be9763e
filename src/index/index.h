/*
 * index.h - the 1:N index: every collection's embeddings in memory, and
 * exact top-k search over them by dot product.
 *
 * Embeddings are L2-normalised float32 vectors of FACE_EMBEDDING_DIM; the
 * similarity is face_similarity()'s (the cosine computed in double from
 * the float32 vectors, rounded to float, clamped to [0, 1]).  The index
 * holds each vector in 8 bits and in half precision, with the few norms
 * that bound the error of each copy.  A first pass over the 8-bit copies
 * and a second over the half ones give every face an interval that
 * provably holds its similarity, and drop only faces that k others
 * certainly beat (or that are certainly below the minimum); the caller's
 * float32 embeddings (index_exact_fn) decide among the few left.  The
 * answer is then exactly the top k of a float32 brute force, ties broken
 * by face id.  Storage is in blocks of INDEX_BLOCK faces, so growing
 * never copies and memory stays within a block of the faces held: 1,024
 * + 512 + 16 bytes of vectors and bounds and STORE_ID_MAX bytes of id
 * per face.
 *
 * Locking is the caller's: index_add and index_remove need the write
 * lock, index_search and index_count the read lock.  The API holds the
 * write lock across "commit to the store, change the index", so a search
 * never sees a face the store has not committed nor one it has deleted.
 */
#ifndef FRAPI_INDEX_H
#define FRAPI_INDEX_H

#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

#define INDEX_BLOCK 1024
#define INDEX_MAX_K 100

struct index;

struct index_hit {
        char face_id[STORE_ID_MAX];
        float similarity;
};

/* A new empty index, or NULL when out of memory.  Release with
 * index_free(). */
struct index *index_new(void);

void index_free(struct index *idx);

void index_read_lock(struct index *idx);
void index_write_lock(struct index *idx);
void index_unlock(struct index *idx);

/*
 * Adds face_id with embedding emb (copied) to collection, creating the
 * collection's slot on first use.  Write lock held.  Returns 0, or -1
 * when out of memory (the index is then unchanged).
 */
int index_add(struct index *idx, const char *collection, const char *face_id,
              const float *emb);

/* Removes face_id from collection; false when it was not there.  Write
 * lock held. */
bool index_remove(struct index *idx, const char *collection,
                  const char *face_id);

/*
 * The exact similarity of face_id to the query being searched:
 * face_similarity(query, the face's float32 embedding).  Returns 0 with
 * *sim set, or -1 when the face is gone (it is then left out).  Called
 * from index_search's own thread, for the few faces the index's copies
 * cannot order.
 */
typedef int (*index_exact_fn)(void *ctx, const char *face_id, float *sim);

/*
 * Fills hits with the k (at most INDEX_MAX_K) faces of collection most
 * similar to query whose similarity is at least min_similarity, most
 * similar first (ties by face id), and returns how many, or -1 when out
 * of memory.  With exact (called with ctx), the faces and their
 * similarities are exactly those of a float32 brute force.  Without it
 * (NULL), the similarities are half-precision estimates (within 0.001)
 * and faces closer than that to the k-th may be ordered wrongly.  An
 * unknown collection has no faces.  Read lock held.
 */
int index_search(struct index *idx, const char *collection, const float *query,
                 int k, float min_similarity, index_exact_fn exact, void *ctx,
                 struct index_hit *hits);

/* The number of faces in collection (read lock held). */
size_t index_count(struct index *idx, const char *collection);

/* Bytes of memory the index holds, for /metrics and bench/search. */
size_t index_memory(struct index *idx);

/* The dot product of two FACE_EMBEDDING_DIM vectors, with the fastest
 * instructions this CPU has (AVX2+FMA when present, SSE otherwise). */
float index_dot(const float *a, const float *b);

#endif
