/*
 * export.h - a collection's faces out and in, in bulk.
 *
 * GET /api/v1/faces/export streams every face of the key's collection as
 * NDJSON (one JSON object a line; the default) or CSV (format=csv), newest
 * first.  Metadata always; the embedding with include_embeddings=true, as
 * base64 of FACE_EMBEDDING_DIM float32 values in little-endian byte order
 * (embedding_encoding=base64, the default) or as a JSON array of numbers
 * (embedding_encoding=array; NDJSON only).  The server walks the store a
 * page at a time, so its memory does not grow with the collection.
 *
 * POST /api/v1/faces/import takes such NDJSON, with embeddings, and adds
 * every line as a new face (new ids; external_id, name and metadata kept).
 * A line whose model_version differs from the collection's is refused:
 * embeddings of different models cannot be compared.  The answer reports
 * every line.
 */
#ifndef FRAPI_EXPORT_H
#define FRAPI_EXPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "face/face.h"
#include "http/http.h"
#include "index/index.h"
#include "store/store.h"

/* Faces read from the store per page while streaming. */
#define EXPORT_PAGE 256
/* Lines one import takes at most. */
#define EXPORT_IMPORT_MAX_LINES 100000

/* How embeddings are written. */
enum export_embedding {
        EXPORT_EMB_NONE = 0,
        EXPORT_EMB_BASE64,
        EXPORT_EMB_ARRAY,
};

/*
 * Writes the embedding of f as base64 text of its float32 values in
 * little-endian order into out (at least EXPORT_EMB_B64_LEN bytes).
 */
#define EXPORT_EMB_B64_LEN (((FACE_EMBEDDING_DIM * 4 + 2) / 3) * 4 + 1)
void export_embedding_base64(const float *emb, char *out);

/*
 * Reads an embedding from a JSON value: base64 text as written by
 * export_embedding_base64(), or an array of FACE_EMBEDDING_DIM numbers.
 * The values must be finite and the vector of unit length (within 1e-3);
 * it is normalised exactly.  Returns 0, or -1 with a reason in err.
 */
int export_embedding_parse(const json_t *v, float *emb, char *err,
                           size_t errlen);

/* One face as an export line (NDJSON object). */
json_t *export_face_json(const struct store_face *f, enum export_embedding e);

/*
 * Answers GET /api/v1/faces/export for collection: checks the query
 * (format, include_embeddings, embedding_encoding; a 400 naming the bad
 * one) and streams the faces with a Content-Disposition file name.
 */
void export_run(struct http_request *req, struct store *s,
                const char *collection);

/*
 * Answers POST /api/v1/faces/import for collection: 200 with
 * {"imported", "failed", "results": [{"line", "success", "face_id" or
 * "error"}]} once every line was tried; 400 EMPTY_BODY for a body with no
 * line; 413 TOO_MANY_ITEMS above EXPORT_IMPORT_MAX_LINES lines.
 */
void export_import_run(struct http_request *req, struct store *s,
                       struct index *idx, const char *collection);

/*
 * Adds both routes to srv behind the API-key check of api; the import
 * takes bodies of up to max_body bytes (0: 128 MB).
 */
void export_register(struct api *api, struct http_server *srv, size_t max_body);

#endif
