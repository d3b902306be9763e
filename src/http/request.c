#include "http/internal.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

/* Crockford's base32, the alphabet of ULIDs. */
static const char b32[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/* Writes a ULID (48-bit milliseconds, 80 random bits) into out[27]. */
static void make_ulid(char out[27])
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        unsigned char rnd[10] = {0};
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
                log_warn("http", "The kernel gave no random bytes for an id.");

        /* 10 characters of time, then 16 of randomness, 5 bits each. */
        for (int i = 9; i >= 0; i--) {
                out[i] = b32[ms & 31];
                ms >>= 5;
        }
        for (int i = 0; i < 16; i++) {
                int bit = i * 5;
                int byte = bit / 8;
                unsigned v = (unsigned)rnd[byte] << 8;
                if (byte + 1 < 10)
                        v |= rnd[byte + 1];
                out[10 + i] = b32[(v >> (11 - bit % 8)) & 31];
        }
        out[26] = '\0';
}

/* Fills the peer address and its text; IPv4-mapped IPv6 shows as IPv4. */
static void set_peer(struct http_request *req)
{
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(
                req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        strcpy(req->peer_str, "unknown");
        if (!ci || !ci->client_addr)
                return;

        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET) {
                req->peerlen = sizeof(struct sockaddr_in);
                memcpy(&req->peer, sa, req->peerlen);
                inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
                          req->peer_str, sizeof req->peer_str);
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *s6 = (const void *)sa;
                req->peerlen = sizeof *s6;
                memcpy(&req->peer, sa, req->peerlen);
                if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
                        inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12],
                                  req->peer_str, sizeof req->peer_str);
                else
                        inet_ntop(AF_INET6, &s6->sin6_addr, req->peer_str,
                                  sizeof req->peer_str);
        }
}

/* Keeps the media type of the body (lower case, no parameters), so the
 * before-body hook can read it too. */
static void set_content_type(struct http_request *req)
{
        const char *ct = http_request_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!ct)
                return;
        size_t n = strcspn(ct, ";");
        while (n > 0 && isspace((unsigned char)ct[n - 1]))
                n--;
        while (n > 0 && isspace((unsigned char)*ct)) {
                ct++;
                n--;
        }
        char *media = http_request_alloc(req, n + 1);
        for (size_t i = 0; i < n; i++)
                media[i] = (char)tolower((unsigned char)ct[i]);
        req->content_type = media;
}

struct http_request *http_request_new(struct http_server *srv,
                                      struct MHD_Connection *conn,
                                      const char *url, const char *method)
{
        struct http_request *req = calloc(1, sizeof *req);
        if (!req)
                abort();
        req->srv = srv;
        req->conn = conn;
        clock_gettime(CLOCK_MONOTONIC, &req->started);
        make_ulid(req->id);

        /* MHD's strings live as long as the connection's request; copies
         * keep the view valid until the answer is sent. */
        req->method = http_request_strdup(req, method);
        const char *q = strchr(url, '?');
        size_t plen = q ? (size_t)(q - url) : strlen(url);
        char *path = http_request_alloc(req, plen + 1);
        memcpy(path, url, plen);
        path[plen] = '\0';
        req->path = path;
        set_peer(req);
        set_content_type(req);
        return req;
}

void http_request_free(struct http_request *req)
{
        if (!req)
                return;

        /* Deferred calls first (newest first), while the arena still lives. */
        while (req->defers) {
                struct http_defer *d = req->defers;
                req->defers = d->next;
                d->fn(d->ptr);
        }
        if (req->context_free && req->context)
                req->context_free(req->context);
        if (req->gate_held)
                http_gate_release(req->srv->gate);
        if (req->response)
                MHD_destroy_response(req->response);
        if (req->pp)
                MHD_destroy_post_processor(req->pp);
        json_decref(req->json);
        for (size_t i = 0; i < req->nparts; i++)
                free(req->parts[i].buf);
        free(req->parts);
        free(req->body);
        free(req->principal);
        while (req->blocks) {
                struct http_block *b = req->blocks;
                req->blocks = b->next;
                free(b);
        }
        free(req);
}

void *http_request_alloc(struct http_request *req, size_t size)
{
        struct http_block *b = calloc(1, sizeof *b + size);
        if (!b)
                abort();
        b->next = req->blocks;
        req->blocks = b;
        return b->data;
}

char *http_request_strdup(struct http_request *req, const char *s)
{
        size_t len = strlen(s);
        char *d = http_request_alloc(req, len + 1);
        memcpy(d, s, len + 1);
        return d;
}

void http_request_defer(struct http_request *req, void (*fn)(void *), void *ptr)
{
        struct http_defer *d = http_request_alloc(req, sizeof *d);
        d->fn = fn;
        d->ptr = ptr;
        d->next = req->defers;
        req->defers = d;
}

const char *http_request_method(const struct http_request *req)
{
        return req->method;
}

const char *http_request_path(const struct http_request *req)
{
        return req->path;
}

const char *http_request_route(const struct http_request *req)
{
        return req->route ? req->route->pattern : NULL;
}

const char *http_request_id(const struct http_request *req)
{
        return req->id;
}

const char *http_request_param(const struct http_request *req, const char *name)
{
        for (size_t i = 0; i < req->nparams; i++)
                if (strcmp(req->param_names[i], name) == 0)
                        return req->param_values[i];
        return NULL;
}

const char *http_request_query(const struct http_request *req, const char *name)
{
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND,
                                           name);
}

/* Carries one walk of http_request_query_each() through libmicrohttpd. */
struct query_walk {
        http_query_fn fn;
        void *cls;
        bool stopped;
};

static enum MHD_Result query_step(void *cls, enum MHD_ValueKind kind,
                                  const char *key, const char *value)
{
        struct query_walk *w = cls;

        (void)kind;
        if (!key || w->fn(w->cls, key, value))
                return MHD_YES;
        w->stopped = true;
        return MHD_NO;
}

bool http_request_query_each(const struct http_request *req, http_query_fn fn,
                             void *cls)
{
        struct query_walk w = {fn, cls, false};

        MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_step,
                                  &w);
        return !w.stopped;
}

/*
 * A field value without the optional white space (SP, HTAB) around it, as
 * RFC 9110 5.5 says a recipient reads it.  MHD drops the leading part
 * only; a value with trailing white space is copied into the request's
 * memory (the request is logically unchanged, hence the cast).
 */
static const char *header_trim(const struct http_request *req,
                               const char *value)
{
        if (!value)
                return NULL;
        value += strspn(value, " \t");
        size_t n = strlen(value);
        if (n == 0 || (value[n - 1] != ' ' && value[n - 1] != '\t'))
                return value;
        while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t'))
                n--;
        char *copy = http_request_alloc((struct http_request *)req, n + 1);
        memcpy(copy, value, n);
        copy[n] = '\0';
        return copy;
}

const char *http_request_header(const struct http_request *req,
                                const char *name)
{
        return header_trim(req, MHD_lookup_connection_value(
                                        req->conn, MHD_HEADER_KIND, name));
}

/* Gathers the lines of one header for http_request_header_list(). */
struct header_lines {
        struct http_request *req;
        const char *name;
        char *joined;
};

static enum MHD_Result add_header_line(void *cls, enum MHD_ValueKind kind,
                                       const char *key, const char *value)
{
        (void)kind;
        struct header_lines *h = cls;
        if (!key || !value || strcasecmp(key, h->name) != 0)
                return MHD_YES;
        value = header_trim(h->req, value);
        size_t have = h->joined ? strlen(h->joined) : 0;
        size_t add = strlen(value);
        char *s = http_request_alloc(h->req, have + add + 3);
        if (have)
                memcpy(s, h->joined, have);
        memcpy(s + have, ", ", have ? 2 : 0);
        memcpy(s + have + (have ? 2 : 0), value, add + 1);
        h->joined = s;
        return MHD_YES;
}

const char *http_request_header_list(struct http_request *req, const char *name)
{
        struct header_lines h = {req, name, NULL};
        MHD_get_connection_values(req->conn, MHD_HEADER_KIND, add_header_line,
                                  &h);
        return h.joined;
}

const struct sockaddr *http_request_peer(const struct http_request *req,
                                         socklen_t *len)
{
        if (len)
                *len = req->peerlen;
        return (const struct sockaddr *)&req->peer;
}

const char *http_request_peer_str(const struct http_request *req)
{
        return req->peer_str;
}

const unsigned char *http_request_body(const struct http_request *req,
                                       size_t *len)
{
        if (len)
                *len = req->body ? req->body_len : 0;
        return req->body;
}

const char *http_request_content_type(const struct http_request *req)
{
        return req->content_type;
}

json_t *http_request_json(const struct http_request *req)
{
        return req->json;
}

const struct http_part *http_request_parts(const struct http_request *req,
                                           size_t *count)
{
        *count = req->part_view ? req->nparts : 0;
        return req->part_view;
}

const struct http_part *http_request_part(const struct http_request *req,
                                          const char *name)
{
        for (size_t i = 0; req->part_view && i < req->nparts; i++)
                if (strcmp(req->part_view[i].name, name) == 0)
                        return &req->part_view[i];
        return NULL;
}

void http_request_set_principal(struct http_request *req, const char *who)
{
        free(req->principal);
        req->principal = who ? strdup(who) : NULL;
}

const char *http_request_principal(const struct http_request *req)
{
        return req->principal;
}

void http_request_set_context(struct http_request *req, void *ctx,
                              void (*free_fn)(void *))
{
        if (req->context_free && req->context && req->context != ctx)
                req->context_free(req->context);
        req->context = ctx;
        req->context_free = free_fn;
}

void *http_request_context(const struct http_request *req)
{
        return req->context;
}

bool http_request_answered(const struct http_request *req)
{
        return req->answered;
}

/*
 * The body.
 */

/* Appends bytes to a growing buffer, keeping a NUL past the end. */
static void buf_append(unsigned char **buf, size_t *len, size_t *cap,
                       const void *data, size_t size)
{
        if (*len + size + 1 > *cap) {
                size_t ncap = *cap ? *cap : 256;
                while (ncap < *len + size + 1)
                        ncap *= 2;
                unsigned char *nb = realloc(*buf, ncap);
                if (!nb)
                        abort();
                *buf = nb;
                *cap = ncap;
        }
        memcpy(*buf + *len, data, size);
        *len += size;
        (*buf)[*len] = '\0';
}

/* Called by MHD's post processor with each piece of a part's value. */
static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind,
                               const char *key, const char *filename,
                               const char *content_type,
                               const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size)
{
        (void)kind;
        (void)transfer_encoding;
        struct http_request *req = cls;
        struct http_part_buf *cur =
                req->nparts ? &req->parts[req->nparts - 1] : NULL;

        /* Offset 0 opens a new part, unless the current one has the same
         * name and nothing yet (MHD may announce a part before its bytes). */
        bool same = cur && cur->part.len == 0 && off == 0 &&
                    strcmp(cur->part.name, key) == 0 &&
                    (!filename) == (!cur->part.filename);
        if (off == 0 && !same) {
                if (req->nparts == HTTP_MAX_PARTS)
                        return MHD_NO;
                if (req->nparts == req->parts_cap) {
                        size_t ncap = req->parts_cap ? req->parts_cap * 2 : 8;
                        void *np =
                                realloc(req->parts, ncap * sizeof *req->parts);
                        if (!np)
                                abort();
                        req->parts = np;
                        req->parts_cap = ncap;
                }
                cur = &req->parts[req->nparts++];
                memset(cur, 0, sizeof *cur);
                cur->part.name = http_request_strdup(req, key ? key : "");
                if (filename)
                        cur->part.filename = http_request_strdup(req, filename);
                if (content_type)
                        cur->part.content_type =
                                http_request_strdup(req, content_type);
        }
        if (!cur)
                return MHD_NO;
        unsigned char *buf = cur->buf;
        size_t len = cur->part.len;
        buf_append(&buf, &len, &cur->cap, data, size);
        cur->buf = buf;
        cur->part.len = len;
        cur->part.data = buf;
        return MHD_YES;
}

/* Answers 400 INVALID_MULTIPART, and stops reading the rest. */
static void body_invalid(struct http_request *req, const char *message)
{
        if (!req->answered)
                http_reply_error(
                        req, 400,
                        req->kind == HTTP_KIND_POST &&
                                        strcmp(req->content_type,
                                               "multipart/form-data") == 0
                                ? "INVALID_MULTIPART"
                                : "INVALID_FORM",
                        message, "body");
        req->body_failed = true;
}

/*
 * Prepares the body of a routed request: its kind from Content-Type and
 * the route's flags, a post processor for form bodies.  Answers 415 or
 * 400 itself when the body cannot be taken.
 */
void http_request_body_begin(struct http_request *req)
{
        unsigned flags = req->route->flags;
        const char *ct = http_request_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);

        req->max_body = req->route->max_body;
        if (!(flags & (HTTP_BODY_JSON | HTTP_BODY_MULTIPART | HTTP_BODY_FORM |
                       HTTP_BODY_RAW)))
                return;

        /* A body-less request needs no type (GET-like use of a POST). */
        const char *cl = http_request_header(req, "Content-Length");
        const char *te = http_request_header(req, "Transfer-Encoding");
        bool has_body = (cl && strtoull(cl, NULL, 10) > 0) || te;
        if (!ct && !has_body)
                return;

        const char *m = req->content_type ? req->content_type : "";
        size_t mlen = strlen(m);
        bool is_json = strcmp(m, "application/json") == 0 ||
                       (mlen > 5 && strcmp(m + mlen - 5, "+json") == 0);
        if ((flags & HTTP_BODY_JSON) && is_json) {
                req->kind = HTTP_KIND_JSON;
                return;
        }
        bool multi = strcmp(m, "multipart/form-data") == 0;
        bool form = strcmp(m, "application/x-www-form-urlencoded") == 0;
        if (((flags & HTTP_BODY_MULTIPART) && multi) ||
            ((flags & HTTP_BODY_FORM) && form)) {
                req->kind = HTTP_KIND_POST;
                req->pp = MHD_create_post_processor(req->conn, 64 * 1024,
                                                    on_part, req);
                /* libmicrohttpd refuses a boundary of one character
                 * unless it is quoted, though RFC 2046 allows 1 to 70. */
                if (!req->pp)
                        body_invalid(req, "The Content-Type has no multipart "
                                          "boundary this server can use: "
                                          "send boundary=... of 2 to 70 "
                                          "characters, or quote a one-"
                                          "character one (boundary=\"x\").");
                return;
        }
        if (flags & HTTP_BODY_RAW) {
                req->kind = HTTP_KIND_RAW;
                return;
        }

        /* Name what the route does take, so the client can fix it. */
        char accepted[160] = "";
        if (flags & HTTP_BODY_JSON)
                strcat(accepted, " application/json");
        if (flags & HTTP_BODY_MULTIPART)
                strcat(accepted, " multipart/form-data");
        if (flags & HTTP_BODY_FORM)
                strcat(accepted, " application/x-www-form-urlencoded");
        http_reply_errorf(req, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type",
                          "Content-Type '%.60s' is not accepted here; use one "
                          "of:%s.",
                          ct ? ct : "(none)", accepted);
}

/*
 * Takes one piece of the body.  Returns false when the connection must be
 * closed: MHD cannot send an answer before the whole body is in, so a body
 * over its limit (chunked, without a declared length) is read and thrown
 * away up to twice the limit, for a clean 413, and cut beyond that.
 */
bool http_request_body_feed(struct http_request *req, const char *data,
                            size_t size)
{
        /* The limit counts every byte, whatever the body's kind. */
        req->received += size;
        if (req->received > req->max_body) {
                if (!req->answered)
                        http_reply_errorf(req, 413, "PAYLOAD_TOO_LARGE", "body",
                                          "The request body is larger than the "
                                          "limit of %zu bytes.",
                                          req->max_body);
                req->body_failed = true;
                return req->received - req->max_body <= req->max_body + 65536;
        }
        if (req->body_failed || req->answered)
                return true;

        switch (req->kind) {
        case HTTP_KIND_NONE:
                break;
        case HTTP_KIND_JSON:
        case HTTP_KIND_RAW:
                if (!req->body && req->body_cap == 0) {
                        /* Size the buffer once when the length is known. */
                        const char *cl =
                                http_request_header(req, "Content-Length");
                        unsigned long long n = cl ? strtoull(cl, NULL, 10) : 0;
                        if (n > 0 && n <= req->max_body) {
                                req->body = malloc(n + 1);
                                if (!req->body)
                                        abort();
                                req->body_cap = n + 1;
                        }
                }
                buf_append(&req->body, &req->body_len, &req->body_cap, data,
                           size);
                break;
        case HTTP_KIND_POST:
                if (MHD_post_process(req->pp, data, size) != MHD_YES)
                        body_invalid(
                                req,
                                req->nparts >= HTTP_MAX_PARTS
                                        ? "The multipart body has more "
                                          "than 1000 parts."
                                        : "The multipart body is malformed.");
                break;
        }
        return true;
}

/*
 * Finishes the body once all of it arrived: parses JSON, closes the post
 * processor and exposes the parts.  Answers 400 for a malformed body.
 */
void http_request_body_end(struct http_request *req)
{
        if (req->answered)
                return;

        /* JSON: jansson reports what and where; the body must be an
         * object (or an array where the route takes one). */
        if (req->kind == HTTP_KIND_JSON) {
                if (req->body_len == 0) {
                        http_reply_error(req, 400, "INVALID_JSON",
                                         "The request body is empty; the body "
                                         "must be a JSON object.",
                                         "body");
                        return;
                }
                json_error_t jerr;
                req->json = json_loadb((const char *)req->body, req->body_len,
                                       JSON_REJECT_DUPLICATES, &jerr);
                if (!req->json) {
                        /* jansson names its own flag for this one; say
                         * what is wrong in the client's terms. */
                        const char *why =
                                json_error_code(&jerr) ==
                                                json_error_null_character
                                        ? "a string holds \\u0000, which no "
                                          "field may contain"
                                        : jerr.text;
                        http_reply_errorf(req, 400, "INVALID_JSON", "body",
                                          "The request body is not valid JSON: "
                                          "%s (line %d, column %d).",
                                          why, jerr.line, jerr.column);
                        return;
                }
                bool arr = (req->route->flags & HTTP_BODY_JSON_ARRAY) &&
                           json_is_array(req->json);
                if (!json_is_object(req->json) && !arr)
                        http_reply_error(req, 400, "INVALID_JSON",
                                         arr || !(req->route->flags &
                                                  HTTP_BODY_JSON_ARRAY)
                                                 ? "The body must be a JSON "
                                                   "object."
                                                 : "The body must be a JSON "
                                                   "object or array.",
                                         "body");
                return;
        }

        /* Multipart: a body cut before its closing boundary is refused. */
        if (req->kind == HTTP_KIND_POST) {
                enum MHD_Result done = MHD_destroy_post_processor(req->pp);
                req->pp = NULL;
                if (done != MHD_YES && req->received > 0) {
                        body_invalid(req, "The multipart body ended before its "
                                          "closing boundary.");
                        return;
                }
                if (req->nparts == 0)
                        return;
                /* One value per name, as JSON keys are: which of two
                 * would count is anyone's guess. */
                for (size_t i = 1; i < req->nparts; i++) {
                        for (size_t j = 0; j < i; j++) {
                                const char *n = req->parts[i].part.name;
                                if (strcmp(n, req->parts[j].part.name) != 0)
                                        continue;
                                http_reply_errorf(
                                        req, 400,
                                        strcmp(req->content_type,
                                               "multipart/form-data") == 0
                                                ? "INVALID_MULTIPART"
                                                : "INVALID_FORM",
                                        n,
                                        "The field %.100s is sent twice; "
                                        "send each field once.",
                                        n);
                                return;
                        }
                }
                req->part_view = http_request_alloc(
                        req, req->nparts * sizeof(*req->part_view));
                for (size_t i = 0; i < req->nparts; i++) {
                        struct http_part *p = &req->parts[i].part;
                        if (!p->data)
                                p->data = (const unsigned char *)"";
                        req->part_view[i] = *p;
                }
        }
}
