/*
 * store.c - the backend-independent half of the store: identifiers,
 * record clean-up, and the wrappers that dispatch to a backend.
 */
#include "store/store.h"

#include <assert.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static pthread_mutex_t ulid_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t ulid_last_ms;
static uint8_t ulid_last_rand[10];

const char *store_status_name(enum store_status st)
{
        switch (st) {
        case STORE_OK:
                return "ok";
        case STORE_NOT_FOUND:
                return "not found";
        case STORE_CONFLICT:
                return "conflict";
        case STORE_ERROR:
                return "database error";
        }
        return "unknown";
}

int64_t store_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Adds one to the 80-bit random part; returns false when it wrapped. */
static bool ulid_increment(uint8_t r[10])
{
        for (int i = 9; i >= 0; i--)
                if (++r[i] != 0)
                        return true;
        return false;
}

void store_new_id(const char *prefix, char out[STORE_ID_MAX])
{
        size_t plen = strlen(prefix);
        assert(plen + 26 < STORE_ID_MAX);

        /* Within one millisecond the random part counts up, so ids stay
         * strictly increasing and "newest first" is "largest id first". */
        uint64_t ms = (uint64_t)store_now_ms();
        uint8_t r[10];
        pthread_mutex_lock(&ulid_lock);
        if (ms <= ulid_last_ms) {
                ms = ulid_last_ms;
                if (!ulid_increment(ulid_last_rand)) {
                        ms++;
                        randombytes_buf(ulid_last_rand, sizeof ulid_last_rand);
                }
        } else {
                randombytes_buf(ulid_last_rand, sizeof ulid_last_rand);
        }
        ulid_last_ms = ms;
        memcpy(r, ulid_last_rand, sizeof r);
        pthread_mutex_unlock(&ulid_lock);

        /* 48 bits of time in 10 characters, 80 random bits in 16. */
        char *p = out;
        memcpy(p, prefix, plen);
        p += plen;
        for (int i = 9; i >= 0; i--)
                p[9 - i] = crockford[(ms >> (5 * i)) & 31];
        p += 10;
        for (int i = 0; i < 16; i++) {
                int bit = i * 5;
                unsigned v = (unsigned)r[bit / 8] << 8;
                if (bit / 8 + 1 < 10)
                        v |= r[bit / 8 + 1];
                p[i] = crockford[(v >> (11 - bit % 8)) & 31];
        }
        p[16] = '\0';
}

void store_close(struct store *s)
{
        if (s)
                s->ops->close(s);
}

enum store_status store_ping(struct store *s, char *why, size_t whylen)
{
        return s->ops->ping(s, why, whylen);
}

enum store_status store_collection_create(struct store *s,
                                          struct store_collection *c)
{
        assert(c->name);
        return s->ops->collection_create(s, c);
}

enum store_status store_collection_get(struct store *s, const char *id,
                                       struct store_collection *out)
{
        return s->ops->collection_get(s, id, out);
}

void store_collection_clear(struct store_collection *c)
{
        free(c->name);
        free(c->org_id);
        memset(c, 0, sizeof *c);
}

enum store_status store_face_insert(struct store *s, struct store_face *f,
                                    const void *original, size_t len)
{
        assert(f->collection_id[0] && f->name && f->metadata);
        return s->ops->face_insert(s, f, original, len);
}

enum store_status store_face_get(struct store *s, const char *collection,
                                 const char *id, struct store_face *out)
{
        return s->ops->face_get(s, collection, id, out);
}

enum store_status store_face_update(struct store *s, const char *collection,
                                    const char *id, unsigned fields,
                                    const struct store_face *values,
                                    struct store_face *out)
{
        return s->ops->face_update(s, collection, id, fields, values, out);
}

enum store_status store_face_delete(struct store *s, const char *collection,
                                    const char *id)
{
        return s->ops->face_delete(s, collection, id);
}

enum store_status store_face_list(struct store *s, const char *collection,
                                  const char *external_id,
                                  const char *before_id, int limit,
                                  struct store_face_page *out)
{
        assert(limit > 0);
        return s->ops->face_list(s, collection, external_id, before_id, limit,
                                 out);
}

enum store_status store_face_each(struct store *s, store_face_fn fn, void *ctx)
{
        return s->ops->face_each(s, fn, ctx);
}

enum store_status store_face_count(struct store *s, int64_t *out)
{
        return s->ops->face_count(s, out);
}

void store_face_clear(struct store_face *f)
{
        free(f->external_id);
        free(f->name);
        free(f->metadata);
        f->external_id = f->name = f->metadata = NULL;
}

void store_face_page_clear(struct store_face_page *p)
{
        for (int i = 0; i < p->count; i++)
                store_face_clear(&p->faces[i]);
        free(p->faces);
        memset(p, 0, sizeof *p);
}

enum store_status store_apikey_insert(struct store *s, struct store_apikey *k)
{
        return s->ops->apikey_insert(s, k);
}

enum store_status store_apikey_by_prefix(struct store *s, const char *prefix,
                                         struct store_apikey *out)
{
        return s->ops->apikey_by_prefix(s, prefix, out);
}

void store_apikey_clear(struct store_apikey *k)
{
        free(k->name);
        free(k->allowlist);
        k->name = k->allowlist = NULL;
}

enum store_status store_idem_get(struct store *s, const char *collection,
                                 const char *key, struct store_idem *out)
{
        return s->ops->idem_get(s, collection, key, out);
}

enum store_status store_idem_put(struct store *s, const char *collection,
                                 const char *key, const struct store_idem *rec)
{
        return s->ops->idem_put(s, collection, key, rec);
}

void store_idem_clear(struct store_idem *r)
{
        free(r->body);
        r->body = NULL;
}
