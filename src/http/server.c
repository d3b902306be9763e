#include "http/internal.h"
#include "util/log.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

void http_config_default(struct http_config *cfg)
{
        *cfg = (struct http_config){
                .listen = "127.0.0.1:8080",
                .threads = 8,
                .max_body_bytes = 32u << 20,
                .max_header_bytes = 32u << 10,
                .request_timeout_s = 30,
                .receive_timeout_s = 300,
                .max_connections = 1000,
                .shutdown_grace_s = 30,
                .gate_slots = 2,
                .gate_queue = 16,
                .gate_wait_ms = 10000,
                .access_log = "-",
        };
}

double http_elapsed_s(const struct timespec *since)
{
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        return (double)(now.tv_sec - since->tv_sec) +
               (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

int http_parse_listen(const char *text, struct sockaddr_storage *addr,
                      socklen_t *len, char *err, size_t errlen)
{
        char host[256];
        const char *port;

        /* Split HOST and PORT; an IPv6 host needs brackets. */
        if (!text || !*text) {
                snprintf(err, errlen, "the listen address is empty");
                return -1;
        }
        if (text[0] == '[') {
                const char *close = strchr(text, ']');
                if (!close || close[1] != ':' || close - text - 1 <= 0 ||
                    (size_t)(close - text - 1) >= sizeof host) {
                        snprintf(err, errlen,
                                 "'%s' is not [IPV6]:PORT, e.g. [::1]:8080",
                                 text);
                        return -1;
                }
                memcpy(host, text + 1, close - text - 1);
                host[close - text - 1] = '\0';
                port = close + 2;
        } else {
                const char *colon = strrchr(text, ':');
                if (!colon || (size_t)(colon - text) >= sizeof host) {
                        snprintf(err, errlen,
                                 "'%s' is not HOST:PORT, e.g. 127.0.0.1:8080",
                                 text);
                        return -1;
                }
                if (strchr(text, ':') != colon) {
                        snprintf(err, errlen,
                                 "'%s': an IPv6 address goes in brackets, "
                                 "e.g. [::1]:8080",
                                 text);
                        return -1;
                }
                memcpy(host, text, colon - text);
                host[colon - text] = '\0';
                port = colon + 1;
        }

        /* The port is a plain decimal number up to 65535. */
        size_t plen = strlen(port);
        bool digits =
                plen >= 1 && plen <= 5 && strspn(port, "0123456789") == plen;
        if (!digits || atol(port) > 65535) {
                snprintf(err, errlen, "'%s': the port must be 0 to 65535",
                         text);
                return -1;
        }
        if (host[0] == '\0')
                strcpy(host, "0.0.0.0");

        /* The host may be a name ("localhost"); the first answer is used. */
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, port, &hints, &res);
        if (rc != 0 || !res) {
                snprintf(err, errlen, "'%s': %s", text, gai_strerror(rc));
                return -1;
        }
        memcpy(addr, res->ai_addr, res->ai_addrlen);
        *len = res->ai_addrlen;
        freeaddrinfo(res);
        return 0;
}

/* Refuses a setting outside [lo, hi], naming it. */
static bool in_range(long long v, long long lo, long long hi, const char *name,
                     char *err, size_t errlen)
{
        if (v >= lo && v <= hi)
                return true;
        snprintf(err, errlen, "%s must be from %lld to %lld, not %lld", name,
                 lo, hi, v);
        return false;
}

static bool config_ok(const struct http_config *c, char *err, size_t errlen)
{
        return in_range(c->threads, 1, 1024, "threads", err, errlen) &&
               in_range((long long)c->max_body_bytes, 1, 1LL << 34,
                        "max_body_bytes", err, errlen) &&
               in_range((long long)c->max_header_bytes, 4096, 1 << 24,
                        "max_header_bytes", err, errlen) &&
               in_range(c->request_timeout_s, 1, 86400, "request_timeout_s",
                        err, errlen) &&
               in_range(c->receive_timeout_s, 1, 86400, "receive_timeout_s",
                        err, errlen) &&
               in_range(c->max_connections, 1, 1000000, "max_connections", err,
                        errlen) &&
               in_range(c->shutdown_grace_s, 0, 86400, "shutdown_grace_s", err,
                        errlen) &&
               in_range(c->gate_slots, 1, 4096, "gate_slots", err, errlen) &&
               in_range(c->gate_queue, 0, 1000000, "gate_queue", err, errlen) &&
               in_range(c->gate_wait_ms, 0, 3600000, "gate_wait_ms", err,
                        errlen);
}

/*
 * The built-in routes.
 */

static void on_healthz(struct http_request *req, void *userdata)
{
        (void)userdata;
        json_t *data = json_pack("{s:s}", "status", "ok");
        http_reply_data(req, 200, data);
}

static void on_readyz(struct http_request *req, void *userdata)
{
        struct http_server *srv = userdata;
        char why[256] = "";
        if (srv->ready && !srv->ready(srv->ready_userdata, why, sizeof why)) {
                http_reply_errorf(req, 503, "NOT_READY", NULL,
                                  "The service is not ready: %s.",
                                  why[0] ? why : "starting");
                return;
        }
        http_reply_data(req, 200, json_pack("{s:s}", "status", "ready"));
}

static void on_metrics(struct http_request *req, void *userdata)
{
        struct http_server *srv = userdata;
        int in_use, waiting;
        http_gate_stats(srv->gate, &in_use, &waiting);
        http_metrics_gauge_set("frapi_gate_in_use", NULL, in_use);
        http_metrics_gauge_set("frapi_gate_waiting", NULL, waiting);

        /* Prometheus text, the one answer that is not JSON. */
        size_t len = 0;
        char *text = http_metrics_render(&len);
        if (!text) {
                http_reply_error(req, 500, "INTERNAL_ERROR",
                                 "The metrics could not be rendered.", NULL);
                return;
        }
        req->response = MHD_create_response_from_buffer(len, text,
                                                        MHD_RESPMEM_MUST_FREE);
        if (!req->response)
                abort();
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8");
        req->status = 200;
        req->answered = true;
}

struct http_server *http_server_new(const struct http_config *cfg, char *err,
                                    size_t errlen)
{
        if (!config_ok(cfg, err, errlen))
                return NULL;
        struct http_server *srv = calloc(1, sizeof *srv);
        if (!srv)
                abort();

        /* Own copies of the strings, and the address checked now so that a
         * bad one is refused before anything starts. */
        srv->cfg = *cfg;
        srv->listen = strdup(cfg->listen ? cfg->listen : "");
        srv->access_log_path = strdup(cfg->access_log ? cfg->access_log : "");
        if (!srv->listen || !srv->access_log_path)
                abort();
        srv->cfg.listen = srv->listen;
        srv->cfg.access_log = srv->access_log_path;
        srv->listen_fd = -1;
        pthread_mutex_init(&srv->lock, NULL);
        pthread_cond_init(&srv->idle, NULL);
        pthread_cond_init(&srv->jobs, NULL);
        char why[200];
        if (http_parse_listen(srv->listen, &srv->addr, &srv->addrlen, why,
                              sizeof why) != 0) {
                snprintf(err, errlen, "listen: %s", why);
                http_server_free(srv);
                return NULL;
        }
        srv->gate = http_gate_new(cfg->gate_slots, cfg->gate_queue,
                                  cfg->gate_wait_ms);
        if (!srv->gate)
                abort();

        /* Describe our own metrics once. */
        http_metrics_help("frapi_http_requests_total",
                          "HTTP requests answered, by method, route and "
                          "status.");
        http_metrics_help("frapi_http_request_duration_seconds",
                          "Time from the request's headers to the end of its "
                          "answer.");
        http_metrics_help("frapi_gate_in_use", "Recognitions running now.");
        http_metrics_help("frapi_gate_waiting",
                          "Requests waiting for a recognition slot.");

        http_route(srv, "GET", "/healthz", on_healthz, 0, srv);
        http_route(srv, "GET", "/readyz", on_readyz, 0, srv);
        http_route(srv, "GET", "/metrics", on_metrics, 0, srv);
        return srv;
}

void http_server_set_ready(struct http_server *srv, http_ready_fn fn,
                           void *userdata)
{
        srv->ready = fn;
        srv->ready_userdata = userdata;
}

struct http_gate *http_server_gate(struct http_server *srv)
{
        return srv->gate;
}

uint16_t http_server_port(const struct http_server *srv)
{
        return srv->port;
}

/*
 * The request cycle.
 */

/* Routes a request whose headers are in, and runs its before-body hook;
 * may answer at once (404, 405, 401, 413, 415). */
/*
 * An answer given before the body (a refused key, a rate limit) goes out
 * at once and the connection closes with the body unread; a client still
 * sending then often sees a reset instead of the answer.  A rate-limited
 * client has a valid key and needs its 429 and Retry-After, so that body,
 * if it declares a length within the route's limit, is read and dropped
 * (no memory, no engine) and the 429 goes out after it, on a connection
 * that stays open.  A client that asked "Expect: 100-continue" gets the
 * 429 at once instead, and sends no body.  Other refusals (401, 403) keep
 * the immediate answer: nothing of an unknown client's body is read.
 */
static void drain_or_not(struct http_request *req)
{
        const char *cl = http_request_header(req, "Content-Length");
        const char *expect = http_request_header(req, "Expect");

        if (req->status != 429 || !cl || (expect && *expect))
                return;
        req->max_body = req->route->max_body;
        req->drain = strtoull(cl, NULL, 10) <= req->max_body;
}

static void request_begin(struct http_server *srv, struct http_request *req)
{
        char allow[160];
        req->route = http_router_match(srv, req, allow, sizeof allow);
        if (!req->route && allow[0]) {
                http_reply_header(req, "Allow", allow);
                http_reply_errorf(req, 405, "METHOD_NOT_ALLOWED", NULL,
                                  "%.16s is not allowed on %.200s; use %s.",
                                  req->method, req->path, allow);
                return;
        }
        if (!req->route) {
                http_reply_errorf(req, 404, "NOT_FOUND", NULL,
                                  "No endpoint answers %.16s %.200s.",
                                  req->method, req->path);
                return;
        }

        /* Authentication comes before any byte of the body is read. */
        const struct http_route *r = req->route;
        if (r->before && !r->before(req, r->before_userdata)) {
                if (!req->answered) {
                        log_error("http",
                                  "A before-body hook of %s refused "
                                  "without answering.",
                                  r->pattern);
                        http_reply_error(req, 500, "INTERNAL_ERROR",
                                         "The request could not be checked.",
                                         NULL);
                }
                drain_or_not(req);
                return;
        }

        /* A declared length over the limit is refused unread. */
        http_request_body_begin(req);
        const char *cl = http_request_header(req, "Content-Length");
        if (!req->answered && cl && strtoull(cl, NULL, 10) > req->max_body)
                http_reply_errorf(req, 413, "PAYLOAD_TOO_LARGE", "body",
                                  "The request body is larger than the limit "
                                  "of %zu bytes.",
                                  req->max_body);
}

/* Runs the handler once the whole body is in. */
static void request_run(struct http_request *req)
{
        http_request_body_end(req);
        if (req->answered)
                return;

        const struct http_route *r = req->route;
        if (!(r->flags & HTTP_ROUTE_GATED) || http_request_gate(req))
                r->handler(req, r->userdata);

        /* The slot is for the engine run, not for sending the answer. */
        if (req->gate_held) {
                http_gate_release(req->srv->gate);
                req->gate_held = false;
        }
        if (!req->answered) {
                log_error("http",
                          "The handler of %s %s returned without "
                          "answering.",
                          r->method, r->pattern);
                http_reply_error(req, 500, "INTERNAL_ERROR",
                                 "The server failed to answer.", NULL);
        }
}

static void request_run(struct http_request *req);

/* True when the handler of req runs on a worker; answers 503 at once when
 * a gated route could not get a slot anyway. */
static bool wants_worker(struct http_request *req)
{
        const struct http_route *r = req->route;
        if (!r || !(r->flags & (HTTP_ROUTE_GATED | HTTP_ROUTE_OFFLOAD)))
                return false;
        if ((r->flags & HTTP_ROUTE_GATED) && http_gate_would_refuse(req))
                return false;
        return true;
}

static void job_push(struct http_server *srv, struct http_request *req)
{
        pthread_mutex_lock(&srv->lock);
        req->next_job = NULL;
        if (srv->jobs_tail)
                srv->jobs_tail->next_job = req;
        else
                srv->jobs_head = req;
        srv->jobs_tail = req;
        pthread_cond_signal(&srv->jobs);
        pthread_mutex_unlock(&srv->lock);
}

/* A worker: runs handlers of suspended requests, then wakes them. */
static void *worker_main(void *arg)
{
        struct http_server *srv = arg;
        pthread_mutex_lock(&srv->lock);
        for (;;) {
                while (!srv->jobs_head && !srv->workers_quit)
                        pthread_cond_wait(&srv->jobs, &srv->lock);
                struct http_request *req = srv->jobs_head;
                if (!req)
                        break;
                srv->jobs_head = req->next_job;
                if (!srv->jobs_head)
                        srv->jobs_tail = NULL;
                pthread_mutex_unlock(&srv->lock);

                request_run(req);
                MHD_resume_connection(req->conn);
                pthread_mutex_lock(&srv->lock);
        }
        pthread_mutex_unlock(&srv->lock);
        return NULL;
}

/* Starts the workers: one per slot and per queue place, so every request
 * the gate admits waits on its own worker, plus two for OFFLOAD routes. */
static int start_workers(struct http_server *srv, char *err, size_t errlen)
{
        int n = srv->cfg.gate_slots + srv->cfg.gate_queue + 2;
        srv->workers = calloc((size_t)n, sizeof *srv->workers);
        if (!srv->workers)
                abort();
        for (; srv->nworkers < n; srv->nworkers++) {
                int rc = pthread_create(&srv->workers[srv->nworkers], NULL,
                                        worker_main, srv);
                if (rc != 0) {
                        snprintf(err, errlen, "cannot start workers: %s",
                                 strerror(rc));
                        return -1;
                }
        }
        return 0;
}

/* Lets the workers finish the queue, then joins them. */
static void stop_workers(struct http_server *srv)
{
        pthread_mutex_lock(&srv->lock);
        srv->workers_quit = true;
        pthread_cond_broadcast(&srv->jobs);
        pthread_mutex_unlock(&srv->lock);
        for (int i = 0; i < srv->nworkers; i++)
                pthread_join(srv->workers[i], NULL);
        free(srv->workers);
        srv->workers = NULL;
        srv->nworkers = 0;
        srv->workers_quit = false;
}

/* True when the request announces a body (a length above 0, or chunks). */
static bool request_has_body(const struct http_request *req)
{
        const char *cl = http_request_header(req, "Content-Length");
        const char *te = http_request_header(req, "Transfer-Encoding");
        return (cl && strtoull(cl, NULL, 10) > 0) || te;
}

/*
 * Encoded NULs.  MHD unescapes the path and each query key and value in
 * place; a "%00" would then cut the C string short and let a request slip
 * past the checks made on it ("/faces/ID%00x" read as "/faces/ID").  Our
 * unescape callback keeps MHD's own decoding and notes, in the
 * connection's socket context, every string of the request that decoded
 * to a NUL; the request is then refused before it is routed.
 */
#define HTTP_MAX_NULS 8

struct http_conn_state {
        size_t nuls;                    /* strings seen with a NUL */
        const char *str[HTTP_MAX_NULS]; /* the first of them, decoded */
        size_t len[HTTP_MAX_NULS];      /* and their decoded lengths */
};

static void on_connection(void *cls, struct MHD_Connection *conn,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
        (void)cls;
        (void)conn;
        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                *socket_context = calloc(1, sizeof(struct http_conn_state));
                if (!*socket_context)
                        abort();
        } else {
                free(*socket_context);
                *socket_context = NULL;
        }
}

static struct http_conn_state *conn_state(struct MHD_Connection *conn)
{
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
                conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        return ci ? ci->socket_context : NULL;
}

static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
        (void)cls;
        size_t n = MHD_http_unescape(s);
        struct http_conn_state *cs = conn_state(conn);
        if (cs && strlen(s) != n) {
                if (cs->nuls < HTTP_MAX_NULS) {
                        cs->str[cs->nuls] = s;
                        cs->len[cs->nuls] = n;
                }
                cs->nuls++;
        }
        return n;
}

/* Finds the query argument whose key or value holds a NUL. */
struct nul_arg {
        const char *name;
};

static enum MHD_Result find_nul_arg(void *cls, enum MHD_ValueKind kind,
                                    const char *key, size_t key_size,
                                    const char *value, size_t value_size)
{
        (void)kind;
        struct nul_arg *na = cls;
        if (key && strlen(key) != key_size)
                na->name = "query";
        else if (value && strlen(value) != value_size)
                na->name = key;
        return na->name ? MHD_NO : MHD_YES;
}

/*
 * Refuses a request whose path or query held an encoded NUL, with 400
 * INVALID_REQUEST naming "path" or the query argument.  The path kept
 * for the access log shows the NUL as "%00" and what followed it.
 */
static bool refuse_nuls(struct http_request *req, struct http_conn_state *cs,
                        const char *url)
{
        if (!cs || cs->nuls == 0)
                return false;
        for (size_t i = 0; i < cs->nuls && i < HTTP_MAX_NULS; i++) {
                if (cs->str[i] != url)
                        continue;
                char *p = http_request_alloc(req, 3 * cs->len[i] + 1);
                size_t o = 0;
                for (size_t j = 0; j < cs->len[i]; j++) {
                        if (url[j] == '?')
                                break;
                        if (url[j] == '\0') {
                                memcpy(p + o, "%00", 3);
                                o += 3;
                        } else {
                                p[o++] = url[j];
                        }
                }
                p[o] = '\0';
                req->path = p;
        }
        cs->nuls = 0;

        struct nul_arg na = {NULL};
        MHD_get_connection_values_n(req->conn, MHD_GET_ARGUMENT_KIND,
                                    find_nul_arg, &na);
        const char *param =
                na.name ? http_request_strdup(req, na.name) : "path";
        if (na.name)
                http_reply_errorf(req, 400, "INVALID_REQUEST", param,
                                  "The query argument '%.60s' holds an "
                                  "encoded NUL byte (%%00), which no request "
                                  "may carry.",
                                  param);
        else
                http_reply_error(req, 400, "INVALID_REQUEST",
                                 "The request path holds an encoded NUL "
                                 "byte (%00), which no request may carry.",
                                 "path");
        return true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
        (void)version;
        struct http_server *srv = cls;
        struct http_request *req = *con_cls;

        /* First call: only the headers are in. */
        if (!req) {
                req = http_request_new(srv, conn, url, method);
                *con_cls = req;
                pthread_mutex_lock(&srv->lock);
                srv->inflight++;
                pthread_mutex_unlock(&srv->lock);
                if (!refuse_nuls(req, conn_state(conn), url))
                        request_begin(srv, req);

                /* An early answer goes out now only if a body would follow
                 * (then MHD closes the connection instead of reading it);
                 * without a body it waits for the final call, which keeps the
                 * connection alive. */
                if (req->answered && request_has_body(req) && !req->drain)
                        return http_reply_queue(req);
                return MHD_YES;
        }

        /* A piece of the body.  The inactivity timeout does not stop a
         * client that sends a byte now and then; the whole body must
         * arrive within receive_timeout_s of the headers.  libmicrohttpd
         * takes no answer in the middle of a body, so the connection is
         * cut; the access log records the request as 408. */
        if (*upload_data_size != 0) {
                size_t n = *upload_data_size;
                *upload_data_size = 0;
                if (req->queued)
                        return MHD_YES;
                if (http_elapsed_s(&req->started) >
                    srv->cfg.receive_timeout_s) {
                        if (!req->answered)
                                http_reply_error(req, 408, "REQUEST_TIMEOUT",
                                                 "The request body did not "
                                                 "arrive in time; send it "
                                                 "faster or in a smaller "
                                                 "request.",
                                                 "body");
                        log_write(LOG_WARN, "http", req->id,
                                  "A request body took longer than %d s to "
                                  "arrive; the connection is closed.",
                                  srv->cfg.receive_timeout_s);
                        return MHD_NO;
                }
                if (!http_request_body_feed(req, upload_data, n))
                        return MHD_NO;
                return MHD_YES;
        }

        /* The end of the body: run the handler and answer.  Engine work
         * goes to a worker while the connection sleeps; MHD calls again
         * once the worker resumes it, and the answer goes out then. */
        if (req->queued)
                return MHD_YES;
        if (!req->answered && !req->offloaded && wants_worker(req)) {
                req->offloaded = true;
                MHD_suspend_connection(conn);
                job_push(srv, req);
                return MHD_YES;
        }
        if (!req->answered)
                request_run(req);
        return http_reply_queue(req);
}

/* Copies s into out, replacing what could break a log line. */
static void log_safe(char *out, size_t outlen, const char *s)
{
        size_t i = 0;
        for (; s && *s && i + 1 < outlen; s++, i++) {
                unsigned char c = (unsigned char)*s;
                out[i] = (c <= ' ' || c == 0x7f || c == '"') ? '?' : (char)c;
        }
        out[i] = '\0';
}

/* One access log line: time, request id, peer, method, route, path,
 * status, latency and principal (a key id, never a key). */
static void access_log(struct http_server *srv, struct http_request *req,
                       double secs)
{
        if (!srv->access)
                return;
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        char path[256];
        char who[96];
        log_safe(path, sizeof path, req->path);
        log_safe(who, sizeof who, req->principal ? req->principal : "-");
        char status[8];
        snprintf(status, sizeof status, "%d", req->status);
        fprintf(srv->access,
                "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ req=%s peer=%s "
                "method=%s route=%s path=%s status=%s ms=%.1f principal=%s\n",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, req->id,
                req->peer_str, req->method,
                req->route ? req->route->pattern : "-", path,
                req->queued ? status : "aborted", secs * 1e3, who);
        fflush(srv->access);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        (void)conn;
        (void)toe;
        struct http_server *srv = cls;
        struct http_request *req = *con_cls;
        if (!req)
                return;
        *con_cls = NULL;

        /* Count by route pattern, so ids do not multiply the series. */
        double secs = http_elapsed_s(&req->started);
        char labels[400];
        char method[24];
        log_safe(method, sizeof method, req->method);
        snprintf(labels, sizeof labels, "method=\"%s\",route=\"%s\"", method,
                 req->route ? req->route->pattern : "unmatched");
        http_metrics_histogram_observe("frapi_http_request_duration_seconds",
                                       labels, secs);
        size_t n = strlen(labels);
        if (req->queued)
                snprintf(labels + n, sizeof labels - n, ",status=\"%d\"",
                         req->status);
        else
                snprintf(labels + n, sizeof labels - n, ",status=\"aborted\"");
        http_metrics_counter_add("frapi_http_requests_total", labels, 1);
        access_log(srv, req, secs);
        http_request_free(req);

        /* The graceful stop waits for this count to reach zero. */
        pthread_mutex_lock(&srv->lock);
        srv->inflight--;
        if (srv->inflight == 0)
                pthread_cond_broadcast(&srv->idle);
        pthread_mutex_unlock(&srv->lock);
}

/* libmicrohttpd's own complaints go to the event log. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        (void)cls;
        char msg[512];
        vsnprintf(msg, sizeof msg, fmt, ap);
        size_t n = strlen(msg);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
                msg[--n] = '\0';
        log_write(LOG_WARN, "http", NULL, "libmicrohttpd: %s", msg);
}

/* Opens the access log named by the configuration. */
static int open_access_log(struct http_server *srv, char *err, size_t errlen)
{
        const char *path = srv->cfg.access_log;
        if (path[0] == '\0')
                return 0;
        if (strcmp(path, "-") == 0) {
                srv->access = stdout;
                return 0;
        }
        srv->access = fopen(path, "ae");
        if (!srv->access) {
                snprintf(err, errlen, "access_log: cannot open '%s': %s", path,
                         strerror(errno));
                return -1;
        }
        setvbuf(srv->access, NULL, _IOLBF, 0);
        return 0;
}

/* Creates, binds and opens the listening socket. */
static int open_listener(struct http_server *srv, char *err, size_t errlen)
{
        int family = srv->addr.ss_family;
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                goto fail;
        int on = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, (struct sockaddr *)&srv->addr, srv->addrlen) != 0 ||
            listen(fd, 1024) != 0)
                goto fail;

        /* Read the port back: port 0 asked the kernel for a free one. */
        struct sockaddr_storage bound;
        socklen_t blen = sizeof bound;
        if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0)
                goto fail;
        srv->port = ntohs(family == AF_INET6
                                  ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                  : ((struct sockaddr_in *)&bound)->sin_port);
        srv->listen_fd = fd;
        return 0;

fail:
        snprintf(err, errlen, "listen %s: %s", srv->listen, strerror(errno));
        if (fd >= 0)
                close(fd);
        return -1;
}

int http_server_start(struct http_server *srv, char *err, size_t errlen)
{
        assert(!srv->running && !srv->daemon);
        if (open_access_log(srv, err, errlen) != 0)
                return -1;
        if (open_listener(srv, err, errlen) != 0)
                goto fail;

        /* The pool threads poll the one listening socket; ITC lets stop
         * wake them and lets quiesce hand the socket back. */
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO |
                         MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
        if (srv->addr.ss_family == AF_INET6)
                flags |= MHD_USE_IPv6;
        srv->running = true;
        /* A pool of one is no pool: MHD wants the option left out. */
        struct MHD_OptionItem pool[] = {
                {MHD_OPTION_THREAD_POOL_SIZE, srv->cfg.threads, NULL},
                {MHD_OPTION_END, 0, NULL},
        };
        if (srv->cfg.threads < 2)
                pool[0] = pool[1];
        srv->daemon = MHD_start_daemon(
                flags, 0, NULL, NULL, on_request, srv,
                MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
                MHD_OPTION_LISTEN_SOCKET, (MHD_socket)srv->listen_fd,
                MHD_OPTION_ARRAY, pool, MHD_OPTION_CONNECTION_LIMIT,
                (unsigned int)srv->cfg.max_connections,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                (size_t)srv->cfg.max_header_bytes,
                MHD_OPTION_CONNECTION_TIMEOUT,
                (unsigned int)srv->cfg.request_timeout_s,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
                MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
                MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, srv, MHD_OPTION_END);
        if (!srv->daemon) {
                snprintf(err, errlen, "listen %s: libmicrohttpd did not start",
                         srv->listen);
                srv->running = false;
                goto fail;
        }
        if (start_workers(srv, err, errlen) != 0) {
                stop_workers(srv);
                MHD_stop_daemon(srv->daemon);
                srv->daemon = NULL;
                srv->running = false;
                goto fail;
        }
        log_info("http", "Listening on %s (port %u) with %d threads.",
                 srv->listen, (unsigned)srv->port, srv->cfg.threads);
        return 0;

fail:
        if (srv->listen_fd >= 0)
                close(srv->listen_fd);
        srv->listen_fd = -1;
        if (srv->access && srv->access != stdout)
                fclose(srv->access);
        srv->access = NULL;
        return -1;
}

void http_server_stop(struct http_server *srv)
{
        if (!srv || !srv->daemon)
                return;

        /* Stop accepting; the listening socket comes back to us. */
        pthread_mutex_lock(&srv->lock);
        srv->stopping = true;
        pthread_mutex_unlock(&srv->lock);
        MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
        if (fd != MHD_INVALID_SOCKET)
                close(fd);
        srv->listen_fd = -1;

        /* Let the requests in flight finish, up to the grace period. */
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += srv->cfg.shutdown_grace_s;
        pthread_mutex_lock(&srv->lock);
        int waited_for = srv->inflight;
        while (srv->inflight > 0)
                if (pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline) ==
                    ETIMEDOUT)
                        break;
        int left = srv->inflight;
        pthread_mutex_unlock(&srv->lock);
        if (left > 0)
                log_warn("http",
                         "Stopping with %d requests still in flight "
                         "after %d s.",
                         left, srv->cfg.shutdown_grace_s);

        /* Workers finish what they hold (MHD must not stop with a
         * connection suspended); idle keep-alive connections close with
         * the daemon. */
        stop_workers(srv);
        MHD_stop_daemon(srv->daemon);
        srv->daemon = NULL;
        srv->running = false;
        if (srv->access && srv->access != stdout)
                fclose(srv->access);
        else if (srv->access)
                fflush(srv->access);
        srv->access = NULL;
        log_info("http", "Stopped after %d requests in flight finished.",
                 waited_for - left);
}

void http_server_free(struct http_server *srv)
{
        if (!srv)
                return;
        http_server_stop(srv);
        for (size_t i = 0; i < srv->nroutes; i++)
                http_router_free(srv->routes[i]);
        free(srv->routes);
        http_gate_free(srv->gate);
        pthread_cond_destroy(&srv->jobs);
        pthread_cond_destroy(&srv->idle);
        pthread_mutex_destroy(&srv->lock);
        free(srv->listen);
        free(srv->access_log_path);
        free(srv);
}

void http_signals_block(void)
{
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
}

int http_signals_wait(void)
{
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        int sig = 0;
        while (sigwait(&set, &sig) != 0)
                ;
        return sig;
}
