/*
 * http.h - the HTTP server framework every endpoint sits on: a server on
 * libmicrohttpd with a thread pool, a router with {param} path segments,
 * a request view for handlers, JSON answers in one shape, multipart and
 * JSON bodies, a concurrency gate for recognitions, metrics and an access
 * log.
 *
 * Every answer is JSON:
 *
 *   {"success": true, "data": ...}
 *   {"success": false, "error": {"code": "NOT_FOUND", "message": "...",
 *                                "param": "id", "request_id": "..."}}
 *
 * and carries an X-Request-Id header.  /metrics is the one exception
 * (Prometheus text).
 *
 * Threads: before-body hooks and plain handlers run on the server's pool
 * threads, several at a time; each pool thread serves many connections,
 * so these must be quick (store look-ups).  Handlers of HTTP_ROUTE_GATED
 * and HTTP_ROUTE_OFFLOAD routes run on worker threads while their
 * connection is suspended, so engine runs and waits for a gate slot never
 * hold up other clients.  A handler must answer exactly once
 * (one http_reply_* call); a handler that returns without answering gets a
 * 500 INTERNAL_ERROR and an error line in the event log.
 *
 * Memory: a request owns an arena (http_request_alloc, http_request_strdup)
 * and a cleanup list (http_request_defer); both are released when the
 * answer has been sent.  Strings returned by request getters live as long
 * as the request.
 */
#ifndef FRAPI_HTTP_H
#define FRAPI_HTTP_H

#include "http/gate.h"
#include "http/metrics.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/*
 * Settings of one server.  http_config_default() fills every field; the
 * config module maps the service's settings onto it.
 */
struct http_config {
        const char *listen;      /* "127.0.0.1:8080", "[::1]:0", ":8080" */
        int threads;             /* pool threads answering requests */
        size_t max_body_bytes;   /* default for routes; 413 above it */
        size_t max_header_bytes; /* per connection memory for headers */
        int request_timeout_s;   /* idle time before a connection drops */
        int receive_timeout_s;   /* headers to end of body; 408 after */
        int max_connections;     /* open connections at once */
        int shutdown_grace_s;    /* how long stop waits for requests */
        int gate_slots;          /* recognitions at once */
        int gate_queue;          /* requests that may wait for a slot */
        int gate_wait_ms;        /* how long one waits before 503 */
        const char *access_log;  /* path, "-" for stdout, "" for none */
};

/* Fills *cfg with the defaults: 127.0.0.1:8080, 8 threads, 32 MB bodies,
 * 32 KB headers, 30 s timeout, 2 slots, 16 waiting, 10 s wait. */
void http_config_default(struct http_config *cfg);

/*
 * Parses a listen address: "HOST:PORT", "[IPV6]:PORT" or ":PORT" (every
 * IPv4 interface); PORT 0 means any free port.  Fills *addr and *len and
 * returns 0, or returns -1 with a message in err.
 */
int http_parse_listen(const char *text, struct sockaddr_storage *addr,
                      socklen_t *len, char *err, size_t errlen);

struct http_server;
struct http_request;
struct http_route;

/*
 * What a route accepts as a body.  A request whose Content-Type is not
 * among the accepted ones gets 415 UNSUPPORTED_MEDIA_TYPE before its body
 * is read.  A route with none of these flags ignores any body.
 */
enum http_route_flags {
        HTTP_BODY_JSON = 1u << 0,      /* application/json, parsed */
        HTTP_BODY_MULTIPART = 1u << 1, /* multipart/form-data, parsed */
        HTTP_BODY_FORM = 1u << 2,      /* x-www-form-urlencoded, as parts */
        HTTP_BODY_RAW = 1u << 3,       /* any type, bytes kept as they are */
        HTTP_ROUTE_GATED = 1u << 4,    /* take a gate slot before the handler */
        HTTP_ROUTE_OFFLOAD = 1u << 5,  /* run the handler on a worker thread */
        HTTP_BODY_JSON_ARRAY = 1u << 6, /* a JSON array is taken as well */
};

/* Answers the request; see the rules at the top of this file. */
typedef void (*http_handler_fn)(struct http_request *req, void *userdata);

/*
 * Called once the headers are in, before any body byte is read.  Returns
 * true to go on (read the body, then call the handler) or false after
 * answering (http_reply_*); then the body is never read nor parsed.  This
 * is where API keys and dashboard tokens are checked.
 */
typedef bool (*http_before_fn)(struct http_request *req, void *userdata);

/*
 * Tells whether the service is ready to serve (models loaded, store open).
 * On false it writes a short reason into why.
 */
typedef bool (*http_ready_fn)(void *userdata, char *why, size_t whylen);

/*
 * Creates a server from cfg (copied; strings too) without starting it.
 * Registers /healthz, /readyz and /metrics.  Returns NULL and writes a
 * message into err when the configuration is unusable (bad listen
 * address, a limit out of range).  Release with http_server_free().
 */
struct http_server *http_server_new(const struct http_config *cfg, char *err,
                                    size_t errlen);

/*
 * Adds a route: method ("GET", "POST", ...) and a pattern such as
 * "/api/v1/faces/{id}".  Literal segments win over {param} segments, so
 * "/faces/batch" and "/faces/{id}" can both exist.  flags are
 * enum http_route_flags.  Routes are added before http_server_start().
 * Returns the route, owned by the server, for the http_route_set_* calls.
 */
struct http_route *http_route(struct http_server *srv, const char *method,
                              const char *pattern, http_handler_fn handler,
                              unsigned flags, void *userdata);

/* Sets the hook called before the body of a request on route is read. */
void http_route_set_before(struct http_route *route, http_before_fn fn,
                           void *userdata);

/* Overrides the server's body limit for this route (batch, import). */
void http_route_set_max_body(struct http_route *route, size_t bytes);

/* Number of routes, built-in ones included, and the i-th one's method and
 * pattern (for the test that compares them with docs/openapi.yaml). */
size_t http_server_route_count(const struct http_server *srv);
void http_server_route_info(const struct http_server *srv, size_t i,
                            const char **method, const char **pattern);

/* Sets the callback /readyz asks; without one /readyz answers 200. */
void http_server_set_ready(struct http_server *srv, http_ready_fn fn,
                           void *userdata);

/*
 * Binds the listen address and starts the pool threads.  Returns 0, or
 * -1 with a message in err (address in use, permission).
 */
int http_server_start(struct http_server *srv, char *err, size_t errlen);

/* The port the server listens on (useful after listening on port 0). */
uint16_t http_server_port(const struct http_server *srv);

/* The server's gate for recognitions (owned by the server). */
struct http_gate *http_server_gate(struct http_server *srv);

/*
 * Stops gracefully: stops accepting connections, lets the requests in
 * flight finish (up to shutdown_grace_s), closes idle connections, then
 * returns.  The caller closes the store afterwards.  Safe to call twice.
 */
void http_server_stop(struct http_server *srv);

/* Stops the server if needed and releases it.  NULL is allowed. */
void http_server_free(struct http_server *srv);

/*
 * Signals for `frapi serve`: http_signals_block() blocks SIGTERM and SIGINT
 * (call it first in main, before any thread starts, so every thread
 * inherits the mask and only http_signals_wait() takes them) and
 * ignores SIGPIPE; http_signals_wait() then sleeps until one of them
 * arrives and returns its number.
 */
void http_signals_block(void);
int http_signals_wait(void);

/*
 * The request view.
 */

const char *http_request_method(const struct http_request *req);
/* The path as received, without the query string. */
const char *http_request_path(const struct http_request *req);
/* The matched route pattern, e.g. "/api/v1/faces/{id}". */
const char *http_request_route(const struct http_request *req);
/* The request id (26 characters, ULID), also sent as X-Request-Id. */
const char *http_request_id(const struct http_request *req);

/* The value of path segment {name}, or NULL. */
const char *http_request_param(const struct http_request *req,
                               const char *name);
/* The value of query argument name, or NULL when absent. */
const char *http_request_query(const struct http_request *req,
                               const char *name);

/* Calls fn(cls, name, value) for each query argument in the order
 * received, repeats included; value is NULL for an argument sent without
 * '='.  Stops at the first fn that returns false, and returns false
 * then; true when every call returned true. */
typedef bool (*http_query_fn)(void *cls, const char *name, const char *value);
bool http_request_query_each(const struct http_request *req, http_query_fn fn,
                             void *cls);
/* The value of header name (case-insensitive), or NULL when absent.
 * White space around the value is not part of it (RFC 9110 5.5). */
const char *http_request_header(const struct http_request *req,
                                const char *name);

/* Every line of list header name (X-Forwarded-For, Forwarded) joined with
 * ", " in the order received, or NULL when absent.  A proxy may add a line
 * of its own instead of extending the client's: the whole list counts. */
const char *http_request_header_list(struct http_request *req,
                                     const char *name);

/* The socket peer: its address and the address as text ("127.0.0.1",
 * "::1"; IPv4-mapped IPv6 addresses shown as IPv4). */
const struct sockaddr *http_request_peer(const struct http_request *req,
                                         socklen_t *len);
const char *http_request_peer_str(const struct http_request *req);

/* The body bytes (NUL-terminated past len) for HTTP_BODY_JSON and
 * HTTP_BODY_RAW routes; NULL with *len 0 when there is none. */
const unsigned char *http_request_body(const struct http_request *req,
                                       size_t *len);

/* The media type of the body, lower case, without parameters, or NULL. */
const char *http_request_content_type(const struct http_request *req);

/* The parsed JSON body (borrowed), or NULL when the body was not JSON.
 * Malformed JSON, an empty JSON body, and a body that is not an object
 * (nor an array, on HTTP_BODY_JSON_ARRAY routes) never reach a handler:
 * they get 400 INVALID_JSON. */
json_t *http_request_json(const struct http_request *req);

/* One part of a multipart/form-data or urlencoded body.  data is
 * NUL-terminated past len; filename and content_type may be NULL. */
struct http_part {
        const char *name;
        const char *filename;
        const char *content_type;
        const unsigned char *data;
        size_t len;
};

/* All parts in the order received; *count set.  NULL when none.  Two
 * parts of one name never reach a handler: they get a 400 naming it. */
const struct http_part *http_request_parts(const struct http_request *req,
                                           size_t *count);
/* The first part called name, or NULL. */
const struct http_part *http_request_part(const struct http_request *req,
                                          const char *name);

/* Request-scoped memory, freed after the answer is sent.  Never NULL:
 * allocation failure aborts (requests are bounded by the body limit). */
void *http_request_alloc(struct http_request *req, size_t size);
char *http_request_strdup(struct http_request *req, const char *s);
/* Calls fn(ptr) when the request ends, in reverse order of registration. */
void http_request_defer(struct http_request *req, void (*fn)(void *),
                        void *ptr);

/* Records who made the request (an API key id or user id, never a secret)
 * for the access log and the event log.  The string is copied. */
void http_request_set_principal(struct http_request *req, const char *who);
const char *http_request_principal(const struct http_request *req);

/* One pointer a before-body hook hands to the handler (the key found, the
 * session); free_fn, if not NULL, is called on it when the request ends. */
void http_request_set_context(struct http_request *req, void *ctx,
                              void (*free_fn)(void *));
void *http_request_context(const struct http_request *req);

/* True once an answer has been set for the request. */
bool http_request_answered(const struct http_request *req);

/*
 * Answers.  Each http_reply_* sets the answer; a second one is a
 * programmer error (assert).  Headers added with http_reply_header() at
 * any time before the answer is sent go out with it.
 */

/* Adds a header to the answer (Retry-After, X-RateLimit-*, ...). */
void http_reply_header(struct http_request *req, const char *name,
                       const char *value);

/* {"success": true, "data": data}; steals the reference to data (NULL
 * means JSON null). */
void http_reply_data(struct http_request *req, int status, json_t *data);

/* {"success": false, "error": {code, message, param, request_id}}.
 * param may be NULL. */
void http_reply_error(struct http_request *req, int status, const char *code,
                      const char *message, const char *param);

/* As http_reply_error, with the fields of details (stolen, may be NULL)
 * added to the error object (boxes, reasons, ...). */
void http_reply_error_ex(struct http_request *req, int status, const char *code,
                         const char *message, const char *param,
                         json_t *details);

/* printf-style message. */
void http_reply_errorf(struct http_request *req, int status, const char *code,
                       const char *param, const char *fmt, ...)
        __attribute__((format(printf, 5, 6)));

/* Any JSON document as the whole body (stolen), for answers whose shape
 * is fixed elsewhere. */
void http_reply_json(struct http_request *req, int status, json_t *body);

/*
 * A streamed answer of unknown length (chunked), for exports.  read is
 * called from a pool thread after the handler returned: it writes up to
 * max bytes into buf and returns how many (> 0), 0 at the end of the
 * stream, or -1 to abort the connection.  done(cls) is called once when
 * the stream is over or aborted.
 */
typedef ssize_t (*http_stream_fn)(void *cls, char *buf, size_t max);
void http_reply_stream(struct http_request *req, int status,
                       const char *content_type, http_stream_fn read, void *cls,
                       void (*done)(void *));

/*
 * True when s is a plain decimal number: an optional leading minus, then
 * digits, then (when fraction) an optional "." and digits.  No plus sign,
 * white space, hex, exponent, inf or nan.  Every number read from a query
 * or form value passes this before strtol/strtod.
 */
bool http_decimal_ok(const char *s, bool fraction);

/*
 * Validate-or-respond helpers: each returns true with the value, or false
 * after answering 400 INVALID_PARAMETER naming the argument.
 */

/* Query integer in [min, max]; absent means def. */
bool http_query_int(struct http_request *req, const char *name, long def,
                    long min, long max, long *out);
/* Query boolean (true/false/1/0); absent means def. */
bool http_query_bool(struct http_request *req, const char *name, bool def,
                     bool *out);
/* Query string of at most maxlen bytes; absent means NULL when !required,
 * a 400 when required. */
bool http_query_str(struct http_request *req, const char *name, bool required,
                    size_t maxlen, const char **out);
/* The JSON body as an object; a 400 INVALID_JSON when there is none or it
 * is not an object. */
bool http_body_object(struct http_request *req, json_t **out);

/*
 * Gate slots for handlers that run the engine (HTTP_ROUTE_GATED does it
 * for the whole handler).  Returns true with a slot held until the
 * handler returns, or false after answering 503 SERVER_BUSY with
 * Retry-After.
 */
bool http_request_gate(struct http_request *req);

#endif
