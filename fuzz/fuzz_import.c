/*
 * fuzz_import.c - lines of POST /faces/import are untrusted: feed
 * arbitrary bytes to the JSON reading and embedding decoding an import
 * does on each line.
 */
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api/export.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        float emb[FACE_EMBEDDING_DIM];
        char err[200];

        /* The line as JSON, then its embedding member, whatever its type. */
        json_t *o = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES,
                               NULL);
        if (o) {
                json_t *e =
                        json_is_object(o) ? json_object_get(o, "embedding") : o;
                if (e)
                        export_embedding_parse(e, emb, err, sizeof err);
                json_decref(o);
        }

        /* The raw bytes as base64 text too. */
        json_t *s = json_stringn_nocheck((const char *)data, size);
        if (s) {
                export_embedding_parse(s, emb, err, sizeof err);
                json_decref(s);
        }
        return 0;
}
