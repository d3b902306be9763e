#include "http/internal.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void http_reply_header(struct http_request *req, const char *name,
                       const char *value)
{
        struct http_header *h = http_request_alloc(req, sizeof *h);
        h->name = http_request_strdup(req, name);
        h->value = http_request_strdup(req, value);
        h->next = req->headers;
        req->headers = h;
}

/* Sets the answer of req to a JSON document (stolen). */
static void reply_doc(struct http_request *req, int status, json_t *doc,
                      const char *content_type)
{
        assert(!req->answered);
        /* Seven significant digits: what a float (similarity, box
         * coordinates) holds, without the noise of its double form. */
        char *text =
                doc ? json_dumps(doc, JSON_COMPACT | JSON_REAL_PRECISION(7))
                    : NULL;
        json_decref(doc);
        if (!text)
                abort();
        req->response = MHD_create_response_from_buffer(strlen(text), text,
                                                        MHD_RESPMEM_MUST_FREE);
        if (!req->response)
                abort();
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                content_type);
        req->status = status;
        req->answered = true;
}

void http_reply_json(struct http_request *req, int status, json_t *body)
{
        reply_doc(req, status, body, "application/json");
}

void http_reply_data(struct http_request *req, int status, json_t *data)
{
        json_t *doc = json_object();
        json_object_set_new(doc, "success", json_true());
        json_object_set_new(doc, "data", data ? data : json_null());
        reply_doc(req, status, doc, "application/json");
}

void http_reply_error_ex(struct http_request *req, int status, const char *code,
                         const char *message, const char *param,
                         json_t *details)
{
        assert(status >= 400 && code && message);

        /* Extra fields first, so the four standard ones always win. */
        json_t *err = json_object();
        if (json_is_object(details))
                json_object_update(err, details);
        json_decref(details);
        json_object_set_new(err, "code", json_string(code));
        json_object_set_new(err, "message", json_string(message));
        json_object_set_new(err, "param",
                            param ? json_string(param) : json_null());
        json_object_set_new(err, "request_id", json_string(req->id));

        json_t *doc = json_object();
        json_object_set_new(doc, "success", json_false());
        json_object_set_new(doc, "error", err);
        reply_doc(req, status, doc, "application/json");

        /* Refusals are events worth a line; bad input is not our error. */
        log_write(status == 500 ? LOG_ERROR : LOG_DEBUG, "http", req->id,
                  "Answered %d %s to %s %s.", status, code, req->method,
                  req->path);
}

void http_reply_error(struct http_request *req, int status, const char *code,
                      const char *message, const char *param)
{
        http_reply_error_ex(req, status, code, message, param, NULL);
}

void http_reply_errorf(struct http_request *req, int status, const char *code,
                       const char *param, const char *fmt, ...)
{
        char message[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(message, sizeof message, fmt, ap);
        va_end(ap);
        http_reply_error_ex(req, status, code, message, param, NULL);
}

/* The state of one streamed answer. */
struct stream {
        http_stream_fn read;
        void *cls;
        void (*done)(void *);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
        (void)pos;
        struct stream *s = cls;
        ssize_t n = s->read(s->cls, buf, max);
        if (n > 0)
                return n;
        return n == 0 ? MHD_CONTENT_READER_END_OF_STREAM
                      : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
        struct stream *s = cls;
        if (s->done)
                s->done(s->cls);
        free(s);
}

void http_reply_stream(struct http_request *req, int status,
                       const char *content_type, http_stream_fn read, void *cls,
                       void (*done)(void *))
{
        assert(!req->answered && read);
        struct stream *s = malloc(sizeof *s);
        if (!s)
                abort();
        *s = (struct stream){read, cls, done};
        req->response = MHD_create_response_from_callback(
                MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, s, stream_free);
        if (!req->response)
                abort();
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                content_type);
        req->status = status;
        req->answered = true;
}

/*
 * Hands the answer to MHD with the headers every answer carries.  Called
 * by the server once per request.
 */
enum MHD_Result http_reply_queue(struct http_request *req)
{
        assert(req->answered && req->response && !req->queued);
        struct MHD_Response *resp = req->response;

        /* The request id and our headers, oldest first as they were added. */
        MHD_add_response_header(resp, "X-Request-Id", req->id);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL,
                                "no-store");
        char ms[32];
        snprintf(ms, sizeof ms, "%.1f", http_elapsed_s(&req->started) * 1e3);
        MHD_add_response_header(resp, "X-Response-Time-Ms", ms);
        struct http_header *rev = NULL;
        for (struct http_header *h = req->headers, *next; h; h = next) {
                next = h->next;
                h->next = rev;
                rev = h;
        }
        req->headers = rev;
        for (struct http_header *h = req->headers; h; h = h->next)
                MHD_add_response_header(resp, h->name, h->value);

        /* While stopping, clients are told not to send another request. */
        if (req->srv->stopping)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION,
                                        "close");

        enum MHD_Result rc = MHD_queue_response(req->conn, req->status, resp);
        MHD_destroy_response(resp);
        req->response = NULL;
        req->queued = true;
        return rc;
}

/*
 * Validate-or-respond helpers.
 */

bool http_query_int(struct http_request *req, const char *name, long def,
                    long min, long max, long *out)
{
        const char *v = http_request_query(req, name);
        if (!v) {
                *out = def;
                return true;
        }

        /* The whole value must be a plain decimal number in range. */
        errno = 0;
        long n = http_decimal_ok(v, false) ? strtol(v, NULL, 10) : 0;
        if (!http_decimal_ok(v, false) || errno == ERANGE || n < min ||
            n > max) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "%s must be an integer from %ld to %ld.",
                                  name, min, max);
                return false;
        }
        *out = n;
        return true;
}

bool http_decimal_ok(const char *s, bool fraction)
{
        if (*s == '-')
                s++;
        size_t n = strspn(s, "0123456789");
        if (n == 0)
                return false;
        s += n;
        if (fraction && *s == '.') {
                n = strspn(s + 1, "0123456789");
                if (n == 0)
                        return false;
                s += 1 + n;
        }
        return *s == '\0';
}

bool http_query_bool(struct http_request *req, const char *name, bool def,
                     bool *out)
{
        const char *v = http_request_query(req, name);
        if (!v) {
                *out = def;
                return true;
        }
        if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
                *out = true;
                return true;
        }
        if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
                *out = false;
                return true;
        }
        http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                          "%s must be true or false.", name);
        return false;
}

bool http_query_str(struct http_request *req, const char *name, bool required,
                    size_t maxlen, const char **out)
{
        const char *v = http_request_query(req, name);
        *out = NULL;
        if (!v || v[0] == '\0') {
                if (!required)
                        return true;
                http_reply_errorf(req, 400, "MISSING_PARAMETER", name,
                                  "The query parameter %s is required.", name);
                return false;
        }
        if (strlen(v) > maxlen) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "%s must be at most %zu bytes long.", name,
                                  maxlen);
                return false;
        }
        *out = v;
        return true;
}

bool http_body_object(struct http_request *req, json_t **out)
{
        *out = NULL;
        if (!req->json) {
                http_reply_error(req, 400, "INVALID_JSON",
                                 "The request body is empty; a JSON object is "
                                 "expected (Content-Type: application/json).",
                                 "body");
                return false;
        }
        if (!json_is_object(req->json)) {
                http_reply_error(req, 400, "INVALID_JSON",
                                 "The request body must be a JSON object.",
                                 "body");
                return false;
        }
        *out = req->json;
        return true;
}

/* Answers 503 SERVER_BUSY for a refusal of the gate. */
static void gate_refuse(struct http_request *req, enum http_gate_result r)
{
        struct http_gate *gate = req->srv->gate;

        /* Busy: say when to come back, and count the refusal. */
        char after[16];
        snprintf(after, sizeof after, "%d", http_gate_retry_after(gate));
        http_reply_header(req, "Retry-After", after);
        http_metrics_counter_add("frapi_gate_refused_total",
                                 r == HTTP_GATE_FULL ? "reason=\"queue_full\""
                                                     : "reason=\"timeout\"",
                                 1);
        http_reply_errorf(req, 503, "SERVER_BUSY", NULL,
                          "The server is busy with other recognitions. Try "
                          "again in %s seconds.",
                          after);
}

bool http_request_gate(struct http_request *req)
{
        if (req->gate_held)
                return true;
        enum http_gate_result r = http_gate_acquire(req->srv->gate);
        if (r == HTTP_GATE_OK) {
                req->gate_held = true;
                return true;
        }
        gate_refuse(req, r);
        return false;
}

/*
 * Answers 503 at once when every slot is busy and the queue is full, so
 * such a request costs no worker.  Returns true when it answered.  (The
 * worker's own acquire stays the authority; this only saves the trip.)
 */
bool http_gate_would_refuse(struct http_request *req)
{
        int in_use, waiting;
        struct http_config *cfg = &req->srv->cfg;
        http_gate_stats(req->srv->gate, &in_use, &waiting);
        if (in_use < cfg->gate_slots || waiting < cfg->gate_queue)
                return false;
        gate_refuse(req, HTTP_GATE_FULL);
        return true;
}
