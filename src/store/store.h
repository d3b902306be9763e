/*
 * store.h - where collections, faces, API keys, idempotency records and
 * kept original photos live.
 *
 * Handlers talk to the store only through the functions below.  Each
 * backend fills a struct store_ops; today there is SQLite
 * (store_sqlite.h), and a PostgreSQL backend can fill the same table
 * later without any handler changing.
 *
 * Every function returns enum store_status.  Strings inside the records
 * are owned by the record and released by its *_clear() function.  Times
 * are milliseconds since the Unix epoch, UTC.
 */
#ifndef FRAPI_STORE_H
#define FRAPI_STORE_H

#include "face/face.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "face_" + 26-character ULID + NUL fits, and so do "col_" and "key_". */
#define STORE_ID_MAX         32
#define STORE_MODEL_MAX      64
#define STORE_KEY_PREFIX_MAX 24

enum store_status {
        STORE_OK = 0,
        STORE_NOT_FOUND, /* no such row (or it belongs to another collection) */
        STORE_CONFLICT,  /* a unique value is already taken */
        STORE_ERROR,     /* the database failed; details are in the log */
};

struct store_collection {
        char id[STORE_ID_MAX];
        char *name;
        char *org_id; /* NULL until accounts own collections */
        float match_threshold;
        bool keep_originals;
        char model_version[STORE_MODEL_MAX];
        int64_t created_ms;
};

struct store_face {
        char id[STORE_ID_MAX];
        char collection_id[STORE_ID_MAX];
        char *external_id; /* NULL when the customer gave none */
        char *name;
        char *metadata; /* JSON object text, "{}" when empty */
        float embedding[FACE_EMBEDDING_DIM];
        char model_version[STORE_MODEL_MAX];
        struct face_box box;
        float quality;
        int64_t created_ms;
        int64_t updated_ms;
};

struct store_apikey {
        char id[STORE_ID_MAX];
        char collection_id[STORE_ID_MAX];
        char prefix[STORE_KEY_PREFIX_MAX]; /* non-secret lookup part */
        uint8_t hash[32];                  /* keyed BLAKE2b of the whole key */
        char *name;
        int rpm;         /* requests per minute; 0 = the server default */
        char *allowlist; /* JSON array of addresses and CIDR ranges */
        int64_t created_ms;
        int64_t revoked_ms; /* 0 while the key is live */
};

/* A stored answer to a request that carried an Idempotency-Key. */
struct store_idem {
        uint8_t request_hash[32]; /* what the first request looked like */
        int status;
        char *body;
        int64_t created_ms;
};

/* What a PATCH changes: only the fields whose flag is set. */
enum store_face_field {
        STORE_FACE_NAME = 1u << 0,
        STORE_FACE_EXTERNAL_ID = 1u << 1,
        STORE_FACE_METADATA = 1u << 2,
};

struct store_face_page {
        int count;
        struct store_face *faces; /* newest first */
        bool more;                /* another page follows */
};

/* Called once per stored face by face_each; nonzero stops the walk. */
typedef int (*store_face_fn)(void *ctx, const struct store_face *face);

struct store;

/* The backend's table of operations; see the store_* wrappers below. */
struct store_ops {
        void (*close)(struct store *s);
        enum store_status (*collection_create)(struct store *s,
                                               struct store_collection *c);
        enum store_status (*collection_get)(struct store *s, const char *id,
                                            struct store_collection *out);
        enum store_status (*face_insert)(struct store *s, struct store_face *f,
                                         const void *original, size_t len);
        enum store_status (*face_get)(struct store *s, const char *collection,
                                      const char *id, struct store_face *out);
        enum store_status (*face_update)(struct store *s,
                                         const char *collection, const char *id,
                                         unsigned fields,
                                         const struct store_face *values,
                                         struct store_face *out);
        enum store_status (*face_delete)(struct store *s,
                                         const char *collection,
                                         const char *id);
        enum store_status (*face_list)(struct store *s, const char *collection,
                                       const char *external_id,
                                       const char *before_id, int limit,
                                       struct store_face_page *out);
        enum store_status (*face_each)(struct store *s, store_face_fn fn,
                                       void *ctx);
        enum store_status (*face_count)(struct store *s, int64_t *out);
        enum store_status (*apikey_insert)(struct store *s,
                                           struct store_apikey *k);
        enum store_status (*apikey_by_prefix)(struct store *s,
                                              const char *prefix,
                                              struct store_apikey *out);
        enum store_status (*idem_get)(struct store *s, const char *collection,
                                      const char *key, struct store_idem *out);
        enum store_status (*idem_put)(struct store *s, const char *collection,
                                      const char *key,
                                      const struct store_idem *rec);
        enum store_status (*ping)(struct store *s, char *why, size_t whylen);
};

/* Every backend's handle starts with this. */
struct store {
        const struct store_ops *ops;
};

/* The stable name of a status, for logs and messages. */
const char *store_status_name(enum store_status st);

/*
 * Writes a new identifier "<prefix><ULID>" into out (STORE_ID_MAX bytes).
 * ULIDs from one process strictly increase, so ordering by id is ordering
 * by creation time.  Thread-safe.
 */
void store_new_id(const char *prefix, char out[STORE_ID_MAX]);

/* Milliseconds since the epoch, UTC. */
int64_t store_now_ms(void);

/*
 * Checks that the store answers, for /readyz: a query on the store's own
 * tables, cheap enough to run on every probe.  Returns STORE_OK, or
 * STORE_ERROR with the reason as a phrase in why (whylen bytes).  The
 * caller logs the change from ready to not ready; the SQLite store also
 * logs a statement it cannot prepare (a damaged database), once a probe.
 */
enum store_status store_ping(struct store *s, char *why, size_t whylen);

/* Closes the store and frees s; NULL is a no-op. */
void store_close(struct store *s);

/*
 * Creates collection c.  The store fills c->id, c->created_ms and, when
 * empty, c->model_version; c->name must be set by the caller.
 */
enum store_status store_collection_create(struct store *s,
                                          struct store_collection *c);

/* Reads collection id into *out (release with store_collection_clear). */
enum store_status store_collection_get(struct store *s, const char *id,
                                       struct store_collection *out);

void store_collection_clear(struct store_collection *c);

/*
 * Inserts face f into f->collection_id; the store fills f->id and both
 * times.  When original is not NULL its len bytes are kept with the face.
 */
enum store_status store_face_insert(struct store *s, struct store_face *f,
                                    const void *original, size_t len);

/* Reads face id of collection into *out; a face of another collection is
 * STORE_NOT_FOUND. */
enum store_status store_face_get(struct store *s, const char *collection,
                                 const char *id, struct store_face *out);

/*
 * Changes the fields named by `fields` (enum store_face_field bits) to
 * those of values, sets the update time, and reads the result into *out
 * (which may be NULL).
 */
enum store_status store_face_update(struct store *s, const char *collection,
                                    const char *id, unsigned fields,
                                    const struct store_face *values,
                                    struct store_face *out);

/* Deletes a face; a second delete of the same id is STORE_NOT_FOUND. */
enum store_status store_face_delete(struct store *s, const char *collection,
                                    const char *id);

/*
 * One page of a collection's faces, newest first: at most limit faces
 * with an id below before_id (NULL = from the newest), only those of
 * external_id when it is not NULL.  Release with store_face_page_clear.
 */
enum store_status store_face_list(struct store *s, const char *collection,
                                  const char *external_id,
                                  const char *before_id, int limit,
                                  struct store_face_page *out);

/* Calls fn for every face of every collection (to load the index). */
enum store_status store_face_each(struct store *s, store_face_fn fn, void *ctx);

/* The number of faces stored over all collections. */
enum store_status store_face_count(struct store *s, int64_t *out);

void store_face_clear(struct store_face *f);
void store_face_page_clear(struct store_face_page *p);

/* Inserts key k; the store fills k->id and k->created_ms. */
enum store_status store_apikey_insert(struct store *s, struct store_apikey *k);

/* Finds the key whose lookup prefix is prefix (revoked ones included). */
enum store_status store_apikey_by_prefix(struct store *s, const char *prefix,
                                         struct store_apikey *out);

void store_apikey_clear(struct store_apikey *k);

/* Reads the answer recorded for (collection, key). */
enum store_status store_idem_get(struct store *s, const char *collection,
                                 const char *key, struct store_idem *out);

/* Records an answer; STORE_CONFLICT when one exists already. */
enum store_status store_idem_put(struct store *s, const char *collection,
                                 const char *key, const struct store_idem *rec);

void store_idem_clear(struct store_idem *r);

#endif
