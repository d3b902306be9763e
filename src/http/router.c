#include "http/internal.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static char *xstrdup(const char *s)
{
        char *d = strdup(s);
        if (!d)
                abort();
        return d;
}

/*
 * Splits path ("/a/b/c", written over) into segments.  Returns how many,
 * or -1 when there are more than max.  Empty segments are kept, so that
 * "/faces/" never matches "/faces/{id}".
 */
int http_router_split(char *path, char **segs, size_t max)
{
        size_t n = 0;
        char *p = path[0] == '/' ? path + 1 : path;

        /* The root path has no segment at all. */
        if (*p == '\0')
                return 0;
        for (;;) {
                if (n == max)
                        return -1;
                segs[n++] = p;
                char *slash = strchr(p, '/');
                if (!slash)
                        return (int)n;
                *slash = '\0';
                p = slash + 1;
        }
}

static bool seg_is_param(const char *seg)
{
        size_t len = strlen(seg);
        return len > 2 && seg[0] == '{' && seg[len - 1] == '}';
}

struct http_route *http_route(struct http_server *srv, const char *method,
                              const char *pattern, http_handler_fn handler,
                              unsigned flags, void *userdata)
{
        assert(srv && method && pattern && handler && pattern[0] == '/');
        assert(!srv->running);
        struct http_route *r = calloc(1, sizeof *r);
        if (!r)
                abort();

        /* The pattern is split once here; a request is split per call. */
        r->method = xstrdup(method);
        r->pattern = xstrdup(pattern);
        char *copy = xstrdup(pattern);
        int n = http_router_split(copy, r->segs, HTTP_MAX_SEGMENTS);
        assert(n >= 0);
        for (int i = 0; i < n; i++)
                r->segs[i] = xstrdup(r->segs[i]);
        free(copy);
        r->nsegs = (size_t)n;
        r->handler = handler;
        r->userdata = userdata;
        r->flags = flags;
        r->max_body = srv->cfg.max_body_bytes;

        /* Keep the table in registration order. */
        struct http_route **grown =
                realloc(srv->routes, (srv->nroutes + 1) * sizeof *grown);
        if (!grown)
                abort();
        srv->routes = grown;
        srv->routes[srv->nroutes++] = r;
        return r;
}

void http_route_set_before(struct http_route *route, http_before_fn fn,
                           void *userdata)
{
        route->before = fn;
        route->before_userdata = userdata;
}

void http_route_set_max_body(struct http_route *route, size_t bytes)
{
        route->max_body = bytes;
}

size_t http_server_route_count(const struct http_server *srv)
{
        return srv->nroutes;
}

void http_server_route_info(const struct http_server *srv, size_t i,
                            const char **method, const char **pattern)
{
        assert(i < srv->nroutes);
        *method = srv->routes[i]->method;
        *pattern = srv->routes[i]->pattern;
}

void http_router_free(struct http_route *route)
{
        for (size_t i = 0; i < route->nsegs; i++)
                free(route->segs[i]);
        free(route->method);
        free(route->pattern);
        free(route);
}

/* Scores how well a route's segments fit: -1 for no fit, otherwise a
 * number that is higher the more leading segments are literal. */
static long route_fit(const struct http_route *r, char **segs, size_t n)
{
        if (r->nsegs != n)
                return -1;
        long score = 0;
        for (size_t i = 0; i < n; i++) {
                score <<= 1;
                if (seg_is_param(r->segs[i])) {
                        if (segs[i][0] == '\0')
                                return -1;
                        continue;
                }
                if (strcmp(r->segs[i], segs[i]) != 0)
                        return -1;
                score |= 1;
        }
        return score;
}

static bool method_fits(const struct http_route *r, const char *method)
{
        /* HEAD is answered like GET; the server sends no body. */
        if (strcmp(method, "HEAD") == 0)
                method = "GET";
        return strcmp(r->method, method) == 0;
}

/* Appends method to a comma-separated Allow list unless already there. */
static void allow_add(char *allow, size_t len, const char *method)
{
        const char *p = allow;
        size_t mlen = strlen(method);
        while ((p = strstr(p, method)) != NULL) {
                bool start = p == allow || p[-1] == ' ';
                bool end = p[mlen] == '\0' || p[mlen] == ',';
                if (start && end)
                        return;
                p += mlen;
        }
        size_t used = strlen(allow);
        snprintf(allow + used, len - used, "%s%s", used ? ", " : "", method);
}

/*
 * Finds the route of req (method and path).  On success fills the path
 * parameters of req and returns the route.  Returns NULL when nothing
 * fits; then allow holds the methods the path does accept ("" when the
 * path is unknown).
 */
const struct http_route *http_router_match(struct http_server *srv,
                                           struct http_request *req,
                                           char *allow, size_t allowlen)
{
        allow[0] = '\0';
        char *copy = http_request_strdup(req, req->path);
        char *segs[HTTP_MAX_SEGMENTS];
        int n = http_router_split(copy, segs, HTTP_MAX_SEGMENTS);
        if (n < 0)
                return NULL;

        /* The best-fitting route of the method wins; the others only tell
         * which methods the path allows. */
        const struct http_route *best = NULL;
        long best_score = -1;
        for (size_t i = 0; i < srv->nroutes; i++) {
                const struct http_route *r = srv->routes[i];
                long score = route_fit(r, segs, (size_t)n);
                if (score < 0)
                        continue;
                if (!method_fits(r, req->method)) {
                        allow_add(allow, allowlen, r->method);
                        continue;
                }
                if (score > best_score) {
                        best = r;
                        best_score = score;
                }
        }
        if (!best)
                return NULL;

        /* Hand the {param} segments to the request. */
        for (size_t i = 0; i < best->nsegs; i++) {
                if (!seg_is_param(best->segs[i]))
                        continue;
                assert(req->nparams < HTTP_MAX_PARAMS);
                size_t len = strlen(best->segs[i]);
                char *name = http_request_alloc(req, len - 1);
                memcpy(name, best->segs[i] + 1, len - 2);
                name[len - 2] = '\0';
                req->param_names[req->nparams] = name;
                req->param_values[req->nparams] = segs[i];
                req->nparams++;
        }
        return best;
}
