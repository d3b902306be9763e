/*
 * internal.h - what the files of the http module share and nobody else
 * sees: the server, route and request structures and the functions the
 * files call in one another.
 */
#ifndef FRAPI_HTTP_INTERNAL_H
#define FRAPI_HTTP_INTERNAL_H

#include "http/http.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>

#define HTTP_MAX_PARAMS   8
#define HTTP_MAX_PARTS    1000
#define HTTP_MAX_SEGMENTS 16

struct http_route {
        char *method;
        char *pattern;
        char *segs[HTTP_MAX_SEGMENTS]; /* "{id}" kept as "{id}" */
        size_t nsegs;
        http_handler_fn handler;
        void *userdata;
        unsigned flags;
        size_t max_body;
        http_before_fn before;
        void *before_userdata;
};

struct http_server {
        struct http_config cfg; /* strings point into the fields below */
        char *listen;
        char *access_log_path;
        struct sockaddr_storage addr;
        socklen_t addrlen;

        struct http_route **routes;
        size_t nroutes;
        http_ready_fn ready;
        void *ready_userdata;

        struct MHD_Daemon *daemon;
        int listen_fd;
        uint16_t port;
        struct http_gate *gate;
        FILE *access;

        /* Requests in flight, for the graceful stop. */
        pthread_mutex_t lock;
        pthread_cond_t idle;
        int inflight;

        /* Workers running GATED and OFFLOAD handlers, and their jobs. */
        pthread_t *workers;
        int nworkers;
        struct http_request *jobs_head;
        struct http_request *jobs_tail;
        pthread_cond_t jobs;
        bool workers_quit;
        bool stopping;
        bool running;
};

/* A piece of request memory; see http_request_alloc(). */
struct http_block {
        struct http_block *next;
        max_align_t data[];
};

struct http_defer {
        struct http_defer *next;
        void (*fn)(void *);
        void *ptr;
};

struct http_header {
        struct http_header *next;
        const char *name;
        const char *value;
};

/* A multipart part while it is being received. */
struct http_part_buf {
        struct http_part part;
        unsigned char *buf;
        size_t cap;
};

enum http_body_kind {
        HTTP_KIND_NONE, /* no body, or one the route ignores */
        HTTP_KIND_JSON,
        HTTP_KIND_POST, /* multipart or urlencoded, via MHD */
        HTTP_KIND_RAW,
};

struct http_request {
        struct http_server *srv;
        struct MHD_Connection *conn;
        const struct http_route *route;
        const char *method;
        const char *path;
        char id[27];
        struct timespec started;

        const char *param_names[HTTP_MAX_PARAMS];
        const char *param_values[HTTP_MAX_PARAMS];
        size_t nparams;

        struct sockaddr_storage peer;
        socklen_t peerlen;
        char peer_str[64];

        struct http_block *blocks;
        struct http_defer *defers;
        char *principal;
        void *context;
        void (*context_free)(void *);

        /* The body as it arrives. */
        enum http_body_kind kind;
        const char *content_type;
        size_t max_body;
        size_t received;
        bool body_failed; /* answered while the body was arriving */
        bool drain;       /* answered; the body is read and dropped first */
        unsigned char *body;
        size_t body_len;
        size_t body_cap;
        struct MHD_PostProcessor *pp;
        struct http_part_buf *parts;
        size_t nparts;
        size_t parts_cap;
        struct http_part *part_view;
        json_t *json;

        /* The answer. */
        bool answered;
        bool queued;
        int status;
        struct MHD_Response *response;
        struct http_header *headers;
        bool gate_held;
        bool offloaded;                /* handed to a worker */
        struct http_request *next_job; /* in the workers' queue */
};

/* router.c */
int http_router_split(char *path, char **segs, size_t max);
const struct http_route *http_router_match(struct http_server *srv,
                                           struct http_request *req,
                                           char *allow, size_t allowlen);
void http_router_free(struct http_route *route);

/* request.c */
struct http_request *http_request_new(struct http_server *srv,
                                      struct MHD_Connection *conn,
                                      const char *url, const char *method);
void http_request_free(struct http_request *req);
void http_request_body_begin(struct http_request *req);
bool http_request_body_feed(struct http_request *req, const char *data,
                            size_t size);
void http_request_body_end(struct http_request *req);

/* reply.c */
enum MHD_Result http_reply_queue(struct http_request *req);
bool http_gate_would_refuse(struct http_request *req);

/* server.c */
double http_elapsed_s(const struct timespec *since);

#endif
