/*
 * batch.h - several faces in one call.
 *
 *   POST /api/v1/faces/batch         enroll up to BATCH_ENROLL_MAX faces
 *   POST /api/v1/faces/batch-delete  delete by ids and/or external_ids
 *   POST /api/v1/identify/batch      identify in up to BATCH_IDENTIFY_MAX
 *                                    images
 *
 * Items of the enroll and identify batches are processed in parallel by a
 * few workers, each holding a slot of the server's recognition gate while
 * it runs the engine.  The answer is 200 with one result per item, in the
 * order sent: partial success is normal.  Only a request that is malformed
 * as a whole (not JSON, no items, too many items) gets a 400, and a busy
 * server a 503.  Idempotency-Key works on all three as on single calls.
 */
#ifndef FRAPI_BATCH_H
#define FRAPI_BATCH_H

#include "api/api.h"
#include "http/http.h"

#define BATCH_ENROLL_MAX   100
#define BATCH_IDENTIFY_MAX 20
#define BATCH_DELETE_MAX   1000

/*
 * Adds the three batch routes to srv, behind the API-key check of api,
 * with a body limit of max_body bytes (0: 128 MB).  Handlers run the
 * engine through the gate of srv.
 */
void batch_register(struct api *api, struct http_server *srv, size_t max_body);

#endif
