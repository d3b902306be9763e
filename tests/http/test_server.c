/*
 * test_server.c - the HTTP framework over real sockets: a server on an
 * ephemeral loopback port with test routes, talked to with libcurl.
 * Routing, path parameters, 404/405, the JSON answer shapes, body limits,
 * JSON and multipart bodies, the before-body hook on a large upload, the
 * gate, keep-alive, streaming, metrics, the access log and the graceful
 * stop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/http.h"

/* What a test route saw, for the assertions. */
struct seen {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int handled;
        int hooked;
        int in_slow;
        bool release;
};

static struct seen seen = {
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, false};

static struct http_server *srv;
static char base[64];
static char access_path[] = "/tmp/frapi-test-access-XXXXXX";

/*
 * Test routes.
 */

/* Echoes what the request view offers. */
static void on_echo(struct http_request *req, void *userdata)
{
        (void)userdata;
        pthread_mutex_lock(&seen.lock);
        seen.handled++;
        pthread_mutex_unlock(&seen.lock);

        json_t *d = json_object();
        json_object_set_new(d, "route", json_string(http_request_route(req)));
        const char *id = http_request_param(req, "id");
        json_object_set_new(d, "id", id ? json_string(id) : json_null());
        const char *q = http_request_query(req, "q");
        json_object_set_new(d, "q", q ? json_string(q) : json_null());
        const char *h = http_request_header(req, "x-test-header");
        json_object_set_new(d, "header", h ? json_string(h) : json_null());
        const char *xff = http_request_header_list(req, "X-Forwarded-For");
        json_object_set_new(d, "xff", xff ? json_string(xff) : json_null());
        json_object_set_new(d, "peer", json_string(http_request_peer_str(req)));
        json_t *j = http_request_json(req);
        json_object_set(d, "json", j ? j : json_null());

        /* Each part with its bytes as hex, so NULs can be checked. */
        size_t n;
        const struct http_part *p = http_request_parts(req, &n);
        json_t *parts = json_array();
        for (size_t i = 0; i < n; i++) {
                char *hex = http_request_alloc(req, p[i].len * 2 + 1);
                for (size_t k = 0; k < p[i].len; k++)
                        sprintf(hex + 2 * k, "%02x", p[i].data[k]);
                json_array_append_new(
                        parts,
                        json_pack("{s:s,s:s?,s:s?,s:I,s:s}", "name", p[i].name,
                                  "filename", p[i].filename, "content_type",
                                  p[i].content_type, "len",
                                  (json_int_t)p[i].len, "hex", hex));
        }
        json_object_set_new(d, "parts", parts);
        http_request_set_principal(req, "key_test01");
        http_reply_header(req, "X-RateLimit-Limit", "60");
        http_reply_data(req, 200, d);
}

static void on_list(struct http_request *req, void *userdata)
{
        (void)userdata;
        long limit;
        bool flag;
        if (!http_query_int(req, "limit", 50, 1, 500, &limit))
                return;
        if (!http_query_bool(req, "flag", false, &flag))
                return;
        http_reply_data(req, 200,
                        json_pack("{s:I,s:b}", "limit", (json_int_t)limit,
                                  "flag", flag));
}

static void on_object(struct http_request *req, void *userdata)
{
        (void)userdata;
        json_t *body;
        if (!http_body_object(req, &body))
                return;
        http_reply_error_ex(req, 422, "FACE_QUALITY_TOO_LOW", "Too blurry.",
                            "image", json_pack("{s:[s]}", "reasons", "blurry"));
}

/* Holds its gate slot until the test says release. */
static void on_slow(struct http_request *req, void *userdata)
{
        (void)userdata;
        pthread_mutex_lock(&seen.lock);
        seen.in_slow++;
        pthread_cond_broadcast(&seen.cond);
        while (!seen.release)
                pthread_cond_wait(&seen.cond, &seen.lock);
        pthread_mutex_unlock(&seen.lock);
        http_reply_data(req, 200, json_string("slow done"));
}

static void on_silent(struct http_request *req, void *userdata)
{
        (void)req;
        (void)userdata;
}

/* The before-body hook: only "good" passes, as an API key check would. */
static bool check_key(struct http_request *req, void *userdata)
{
        (void)userdata;
        pthread_mutex_lock(&seen.lock);
        seen.hooked++;
        pthread_mutex_unlock(&seen.lock);
        const char *key = http_request_header(req, "X-API-Key");
        if (key && strcmp(key, "good") == 0)
                return true;
        http_reply_error(req, 401, key ? "INVALID_API_KEY" : "MISSING_API_KEY",
                         "The API key is missing or wrong.", "X-API-Key");
        return false;
}

/* Streams 1000 numbered lines. */
struct lines {
        int next;
        int *done_flag;
};

static ssize_t lines_read(void *cls, char *buf, size_t max)
{
        struct lines *l = cls;
        if (l->next == 1000)
                return 0;
        int n = snprintf(buf, max, "{\"n\":%d}\n", l->next++);
        return n;
}

static void lines_done(void *cls)
{
        free(cls);
}

static void on_stream(struct http_request *req, void *userdata)
{
        (void)userdata;
        struct lines *l = calloc(1, sizeof *l);
        http_reply_header(req, "Content-Disposition",
                          "attachment; filename=\"faces.ndjson\"");
        http_reply_stream(req, 200, "application/x-ndjson", lines_read, l,
                          lines_done);
}

static bool ready_value;
static bool is_ready(void *userdata, char *why, size_t len)
{
        (void)userdata;
        if (!ready_value)
                snprintf(why, len, "models are loading");
        return ready_value;
}

/*
 * A small libcurl client.
 */

struct resp {
        long status;
        char *body;
        size_t len;
        char request_id[64];
        char allow[128];
        char retry_after[16];
        char content_type[128];
        char disposition[128];
        char ratelimit[16];
        long connects;
        curl_off_t uploaded;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
        struct resp *r = ud;
        r->body = realloc(r->body, r->len + size * n + 1);
        memcpy(r->body + r->len, p, size * n);
        r->len += size * n;
        r->body[r->len] = '\0';
        return size * n;
}

/* Copies the value of header "name" out of a raw header line. */
static void grab(const char *line, size_t len, const char *name, char *out,
                 size_t outlen)
{
        size_t nl = strlen(name);
        if (len <= nl + 1 || strncasecmp(line, name, nl) != 0 ||
            line[nl] != ':')
                return;
        const char *v = line + nl + 1;
        size_t vl = len - nl - 1;
        while (vl && (*v == ' '))
                v++, vl--;
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
                vl--;
        if (vl >= outlen)
                vl = outlen - 1;
        memcpy(out, v, vl);
        out[vl] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
        struct resp *r = ud;
        grab(p, size * n, "X-Request-Id", r->request_id, sizeof r->request_id);
        grab(p, size * n, "Allow", r->allow, sizeof r->allow);
        grab(p, size * n, "Retry-After", r->retry_after, sizeof r->retry_after);
        grab(p, size * n, "Content-Type", r->content_type,
             sizeof r->content_type);
        grab(p, size * n, "Content-Disposition", r->disposition,
             sizeof r->disposition);
        grab(p, size * n, "X-RateLimit-Limit", r->ratelimit,
             sizeof r->ratelimit);
        return size * n;
}

/* A body made of one repeated byte, served to curl piece by piece. */
struct upload {
        size_t left;
};

static size_t on_upload(char *buf, size_t size, size_t n, void *ud)
{
        struct upload *u = ud;
        size_t k = size * n < u->left ? size * n : u->left;
        memset(buf, 'x', k);
        u->left -= k;
        return k;
}

/* Performs one request on easy handle c (reused for keep-alive tests). */
static void perform(CURL *c, const char *method, const char *path,
                    const char *ctype, const char *body, size_t bodylen,
                    struct curl_slist *extra, struct resp *r)
{
        char url[256];
        snprintf(url, sizeof url, "%s%s", base, path);
        memset(r, 0, sizeof *r);
        struct curl_slist *h = NULL;
        char ct[160];
        if (ctype) {
                snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
                h = curl_slist_append(h, ct);
        }
        for (struct curl_slist *e = extra; e; e = e->next)
                h = curl_slist_append(h, e->data);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
        curl_easy_setopt(c, CURLOPT_VERBOSE, getenv("CURLV") ? 1L : 0L);
        if (body) {
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)bodylen);
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        } else {
                curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        }
        CURLcode rc = curl_easy_perform(c);
        assert_int_equal(rc, CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &r->connects);
        curl_slist_free_all(h);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
}

static void request(const char *method, const char *path, const char *ctype,
                    const char *body, struct resp *r)
{
        CURL *c = curl_easy_init();
        perform(c, method, path, ctype, body, body ? strlen(body) : 0, NULL, r);
        curl_easy_cleanup(c);
}

static json_t *parse(const struct resp *r)
{
        json_error_t e;
        json_t *j = json_loadb(r->body ? r->body : "", r->len, 0, &e);
        if (!j)
                fail_msg("answer is not JSON: %s", r->body ? r->body : "");
        return j;
}

/* Asserts an error answer: status, code, param, and the request id in the
 * body equal to the X-Request-Id header. */
static void expect_error(const struct resp *r, long status, const char *code,
                         const char *param)
{
        assert_int_equal(r->status, status);
        json_t *j = parse(r);
        assert_true(json_is_false(json_object_get(j, "success")));
        json_t *e = json_object_get(j, "error");
        assert_string_equal(json_string_value(json_object_get(e, "code")),
                            code);
        assert_non_null(json_string_value(json_object_get(e, "message")));
        json_t *p = json_object_get(e, "param");
        if (param)
                assert_string_equal(json_string_value(p), param);
        else
                assert_true(json_is_null(p));
        assert_int_equal(strlen(r->request_id), 26);
        assert_string_equal(json_string_value(json_object_get(e, "request_id")),
                            r->request_id);
        json_decref(j);
}

static void resp_free(struct resp *r)
{
        free(r->body);
        r->body = NULL;
}

/*
 * Set-up: one server for every test, on a free port.
 */

static int start(void **state)
{
        (void)state;
        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.threads = 1; /* one pool thread: offloading must keep it free */
        cfg.max_body_bytes = 64 * 1024;
        cfg.gate_slots = 1;
        cfg.gate_queue = 0;
        cfg.gate_wait_ms = 100;
        cfg.shutdown_grace_s = 10;
        int fd = mkstemp(access_path);
        assert_true(fd >= 0);
        close(fd);
        cfg.access_log = access_path;

        char err[256];
        srv = http_server_new(&cfg, err, sizeof err);
        assert_non_null(srv);
        unsigned body = HTTP_BODY_JSON | HTTP_BODY_MULTIPART;
        http_route(srv, "POST", "/t/{id}", on_echo, body, NULL);
        http_route(srv, "GET", "/t/{id}", on_echo, 0, NULL);
        http_route(srv, "DELETE", "/t/{id}", on_echo, 0, NULL);
        http_route(srv, "POST", "/t/batch", on_echo, body, NULL);
        http_route(srv, "GET", "/list", on_list, 0, NULL);
        http_route(srv, "POST", "/object", on_object, HTTP_BODY_JSON, NULL);
        http_route(srv, "POST", "/slow", on_slow, HTTP_ROUTE_GATED, NULL);
        http_route(srv, "GET", "/silent", on_silent, 0, NULL);
        http_route(srv, "GET", "/stream", on_stream, 0, NULL);
        struct http_route *keyed =
                http_route(srv, "POST", "/keyed", on_echo, body, NULL);
        http_route_set_before(keyed, check_key, NULL);
        http_route_set_max_body(keyed, 16u << 20);
        http_server_set_ready(srv, is_ready, NULL);
        assert_int_equal(http_server_start(srv, err, sizeof err), 0);
        assert_true(http_server_port(srv) > 0);
        snprintf(base, sizeof base, "http://127.0.0.1:%u",
                 (unsigned)http_server_port(srv));
        return 0;
}

static int stop(void **state)
{
        (void)state;
        http_server_free(srv);
        srv = NULL;
        unlink(access_path);
        return 0;
}

/*
 * Tests.
 */

/* Path parameters, query, headers; a literal segment beats {id}. */
static void test_routing(void **state)
{
        (void)state;
        CURL *c = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "X-Test-Header: hi");
        h = curl_slist_append(h, "X-Forwarded-For: 1.1.1.1, 2.2.2.2");
        h = curl_slist_append(h, "x-forwarded-for: 3.3.3.3");
        struct resp r;
        perform(c, "GET", "/t/face_123?q=a%20b", NULL, NULL, 0, h, &r);
        assert_int_equal(r.status, 200);
        json_t *j = parse(&r);
        assert_true(json_is_true(json_object_get(j, "success")));
        json_t *d = json_object_get(j, "data");
        assert_string_equal(json_string_value(json_object_get(d, "route")),
                            "/t/{id}");
        assert_string_equal(json_string_value(json_object_get(d, "id")),
                            "face_123");
        assert_string_equal(json_string_value(json_object_get(d, "q")), "a b");
        assert_string_equal(json_string_value(json_object_get(d, "header")),
                            "hi");
        assert_string_equal(json_string_value(json_object_get(d, "peer")),
                            "127.0.0.1");
        /* Every line of a list header, in order. */
        assert_string_equal(json_string_value(json_object_get(d, "xff")),
                            "1.1.1.1, 2.2.2.2, 3.3.3.3");
        assert_string_equal(r.ratelimit, "60");
        assert_int_equal(strlen(r.request_id), 26);
        json_decref(j);
        resp_free(&r);

        /* POST /t/batch goes to the literal route, not to {id}. */
        perform(c, "POST", "/t/batch", "application/json", "{}", 2, NULL, &r);
        j = parse(&r);
        d = json_object_get(j, "data");
        assert_string_equal(json_string_value(json_object_get(d, "route")),
                            "/t/batch");
        assert_true(json_is_null(json_object_get(d, "id")));
        json_decref(j);
        resp_free(&r);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
}

/* Unknown paths 404; known paths with a wrong method 405 with Allow. */
static void test_not_found_and_method(void **state)
{
        (void)state;
        struct resp r;
        request("GET", "/nope", NULL, NULL, &r);
        expect_error(&r, 404, "NOT_FOUND", NULL);
        resp_free(&r);
        request("GET", "/t/", NULL, NULL, &r);
        expect_error(&r, 404, "NOT_FOUND", NULL);
        resp_free(&r);
        request("GET", "/t/a/b", NULL, NULL, &r);
        expect_error(&r, 404, "NOT_FOUND", NULL);
        resp_free(&r);

        request("PUT", "/t/x", NULL, NULL, &r);
        expect_error(&r, 405, "METHOD_NOT_ALLOWED", NULL);
        assert_non_null(strstr(r.allow, "GET"));
        assert_non_null(strstr(r.allow, "POST"));
        assert_non_null(strstr(r.allow, "DELETE"));
        resp_free(&r);
        request("DELETE", "/healthz", NULL, NULL, &r);
        expect_error(&r, 405, "METHOD_NOT_ALLOWED", NULL);
        assert_string_equal(r.allow, "GET");
        resp_free(&r);
}

/* JSON bodies: parsed, malformed ones named, the wrong type refused. */
static void test_json_bodies(void **state)
{
        (void)state;
        struct resp r;
        request("POST", "/t/1", "application/json; charset=utf-8",
                "{\"name\":\"Zo\xc3\xab\"}", &r);
        assert_int_equal(r.status, 200);
        json_t *j = parse(&r);
        json_t *body = json_object_get(json_object_get(j, "data"), "json");
        assert_string_equal(json_string_value(json_object_get(body, "name")),
                            "Zo\xc3\xab");
        json_decref(j);
        resp_free(&r);

        const char *bad[] = {"{\"a\":", "{\"a\":1,\"a\":2}", "[1,]",
                             "{\"n\":\"\xff\"}", "nul"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                request("POST", "/t/1", "application/json", bad[i], &r);
                expect_error(&r, 400, "INVALID_JSON", "body");
                resp_free(&r);
        }

        /* An escaped NUL is named in the client's terms, not by the
         * JSON library's flag. */
        request("POST", "/t/1", "application/json", "{\"n\":\"a\\u0000b\"}",
                &r);
        expect_error(&r, 400, "INVALID_JSON", "body");
        assert_non_null(strstr(r.body, "no field may contain"));
        assert_null(strstr(r.body, "JSON_ALLOW_NUL"));
        resp_free(&r);

        request("POST", "/t/1", "text/plain", "hello", &r);
        expect_error(&r, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type");
        resp_free(&r);

        /* A body that is valid JSON but no object; then none at all. */
        request("POST", "/object", "application/json", "[1,2]", &r);
        expect_error(&r, 400, "INVALID_JSON", "body");
        resp_free(&r);
        request("POST", "/object", NULL, NULL, &r);
        expect_error(&r, 400, "INVALID_JSON", "body");
        resp_free(&r);

        /* Extra error fields travel next to the standard four. */
        request("POST", "/object", "application/json", "{}", &r);
        expect_error(&r, 422, "FACE_QUALITY_TOO_LOW", "image");
        j = parse(&r);
        json_t *reasons =
                json_object_get(json_object_get(j, "error"), "reasons");
        assert_string_equal(json_string_value(json_array_get(reasons, 0)),
                            "blurry");
        json_decref(j);
        resp_free(&r);
}

/* Multipart: text fields and file parts, names, types, NUL bytes, an
 * empty file, and a broken body. */
static void test_multipart(void **state)
{
        (void)state;
        CURL *c = curl_easy_init();
        curl_mime *mime = curl_mime_init(c);
        curl_mimepart *p = curl_mime_addpart(mime);
        curl_mime_name(p, "name");
        curl_mime_data(p, "Bob", CURL_ZERO_TERMINATED);
        p = curl_mime_addpart(mime);
        curl_mime_name(p, "image");
        static const char bin[] = {'\xff', '\xd8', '\0', '\0', 'A', '\0'};
        curl_mime_data(p, bin, sizeof bin);
        curl_mime_filename(p, "x.JPG");
        curl_mime_type(p, "image/jpeg");
        p = curl_mime_addpart(mime);
        curl_mime_name(p, "empty");
        curl_mime_data(p, "", 0);
        curl_mime_filename(p, "empty.png");

        struct resp r;
        char url[256];
        snprintf(url, sizeof url, "%s/t/7", base);
        memset(&r, 0, sizeof r);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        assert_int_equal(r.status, 200);

        json_t *j = parse(&r);
        json_t *parts = json_object_get(json_object_get(j, "data"), "parts");
        assert_int_equal(json_array_size(parts), 3);
        json_t *p0 = json_array_get(parts, 0);
        assert_string_equal(json_string_value(json_object_get(p0, "name")),
                            "name");
        assert_string_equal(json_string_value(json_object_get(p0, "hex")),
                            "426f62");
        assert_true(json_is_null(json_object_get(p0, "filename")));
        json_t *p1 = json_array_get(parts, 1);
        assert_string_equal(json_string_value(json_object_get(p1, "filename")),
                            "x.JPG");
        assert_string_equal(
                json_string_value(json_object_get(p1, "content_type")),
                "image/jpeg");
        assert_int_equal(json_integer_value(json_object_get(p1, "len")), 6);
        assert_string_equal(json_string_value(json_object_get(p1, "hex")),
                            "ffd800004100");
        json_t *p2 = json_array_get(parts, 2);
        assert_string_equal(json_string_value(json_object_get(p2, "name")),
                            "empty");
        assert_int_equal(json_integer_value(json_object_get(p2, "len")), 0);
        json_decref(j);
        resp_free(&r);
        curl_mime_free(mime);
        curl_easy_cleanup(c);

        /* No boundary, and a body cut before its closing boundary. */
        request("POST", "/t/7", "multipart/form-data", "abc", &r);
        expect_error(&r, 400, "INVALID_MULTIPART", "body");
        resp_free(&r);
        request("POST", "/t/7", "multipart/form-data; boundary=XyZ",
                "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n"
                "half",
                &r);
        expect_error(&r, 400, "INVALID_MULTIPART", "body");
        resp_free(&r);
}

/* Bodies over the limit: declared (refused unread) and chunked. */
static void test_body_limit(void **state)
{
        (void)state;
        size_t n = 65 * 1024;
        char *big = malloc(n + 1);
        memset(big, ' ', n);
        big[n] = '\0';
        big[0] = '{';
        big[n - 1] = '}';
        struct resp r;
        request("POST", "/t/1", "application/json", big, &r);
        expect_error(&r, 413, "PAYLOAD_TOO_LARGE", "body");
        resp_free(&r);

        /* Chunked: no length is declared, the count stops it. */
        CURL *c = curl_easy_init();
        struct curl_slist *h =
                curl_slist_append(NULL, "Transfer-Encoding: chunked");
        h = curl_slist_append(h, "Content-Type: application/json");
        struct upload up = {n};
        char url[256];
        snprintf(url, sizeof url, "%s/t/1", base);
        memset(&r, 0, sizeof r);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(c, CURLOPT_READDATA, &up);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        expect_error(&r, 413, "PAYLOAD_TOO_LARGE", "body");
        resp_free(&r);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        free(big);
}

/* A body sent a byte at a time, each well within the inactivity
 * timeout: a client may trickle, but not forever. */
struct trickle {
        int left;
};

static size_t on_trickle(char *buf, size_t size, size_t n, void *ud)
{
        struct trickle *t = ud;

        (void)size;
        (void)n;
        if (t->left == 0)
                return 0;
        usleep(200 * 1000);
        buf[0] = ' ';
        t->left--;
        return 1;
}

/* The whole body must arrive within receive_timeout_s of the headers:
 * a trickling client loses the connection then, not when it likes.
 * (libmicrohttpd cannot answer in the middle of a body.) */
static void test_receive_timeout(void **state)
{
        (void)state;
        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.access_log = "";
        cfg.request_timeout_s = 5;
        cfg.receive_timeout_s = 1;
        char err[256];
        struct http_server *s2 = http_server_new(&cfg, err, sizeof err);
        assert_non_null(s2);
        http_route(s2, "POST", "/t/{id}", on_echo, 0, NULL);
        assert_int_equal(http_server_start(s2, err, sizeof err), 0);

        char url[96];
        snprintf(url, sizeof url, "http://127.0.0.1:%u/t/1",
                 (unsigned)http_server_port(s2));
        struct trickle t = {40}; /* 8 s at 5 bytes a second */
        struct resp r = {0};
        struct curl_slist *h =
                curl_slist_append(NULL, "Content-Type: application/json");
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 40L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_trickle);
        curl_easy_setopt(c, CURLOPT_READDATA, &t);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CURLcode rc = curl_easy_perform(c);

        assert_int_not_equal(rc, CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        assert_int_equal(r.status, 0);
        assert_true(t.left > 20); /* cut near 1 s, not at the end (8 s) */
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        assert_true(t1.tv_sec - t0.tv_sec < 5);
        resp_free(&r);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        http_server_free(s2);

        /* Out of range is refused. */
        cfg.receive_timeout_s = 0;
        assert_null(http_server_new(&cfg, err, sizeof err));
        assert_non_null(strstr(err, "receive_timeout_s"));
}

/* Row A6: 5 MB with a bad, empty or missing key gets 401 and the body is
 * neither read nor handled. */
static void test_before_body_hook(void **state)
{
        (void)state;
        const char *keys[] = {"X-API-Key: wrong", "X-API-Key;", NULL};
        const char *codes[] = {"INVALID_API_KEY", "INVALID_API_KEY",
                               "MISSING_API_KEY"};
        for (int i = 0; i < 3; i++) {
                pthread_mutex_lock(&seen.lock);
                int handled = seen.handled;
                int hooked = seen.hooked;
                pthread_mutex_unlock(&seen.lock);

                CURL *c = curl_easy_init();
                struct curl_slist *h = curl_slist_append(
                        NULL, "Content-Type: application/json");
                if (keys[i])
                        h = curl_slist_append(h, keys[i]);
                struct upload up = {5u << 20};
                struct resp r;
                memset(&r, 0, sizeof r);
                char url[256];
                snprintf(url, sizeof url, "%s/keyed", base);
                curl_easy_setopt(c, CURLOPT_URL, url);
                curl_easy_setopt(c, CURLOPT_POST, 1L);
                curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                                 (curl_off_t)up.left);
                curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
                curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
                curl_easy_setopt(c, CURLOPT_READDATA, &up);
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
                curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
                curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
                curl_easy_setopt(c, CURLOPT_HEADERDATA, &r);
                curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
                /* Wait for the server's word as long as it takes, so a
                 * slow (sanitizer) build is not mistaken for a silent
                 * one; the hook must answer before any body is sent. */
                curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 20000L);
                assert_int_equal(curl_easy_perform(c), CURLE_OK);
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
                curl_off_t sent = 0;
                curl_easy_getinfo(c, CURLINFO_SIZE_UPLOAD_T, &sent);
                expect_error(&r, 401, codes[i], "X-API-Key");

                /* curl waited for 100-continue and got the 401 instead:
                 * the 5 MB never went out. */
                assert_true(sent < (1 << 20));
                pthread_mutex_lock(&seen.lock);
                assert_int_equal(seen.hooked, hooked + 1);
                assert_int_equal(seen.handled, handled);
                pthread_mutex_unlock(&seen.lock);
                resp_free(&r);
                curl_slist_free_all(h);
                curl_easy_cleanup(c);
        }

        /* The right key passes the hook and reaches the handler. */
        CURL *c = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "X-API-Key: good");
        struct resp r;
        perform(c, "POST", "/keyed", "application/json", "{\"a\":1}", 7, h, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
}

/* Validate-or-respond query helpers. */
static void test_query_helpers(void **state)
{
        (void)state;
        struct resp r;
        const char *bad[] = {"/list?limit=-1",         "/list?limit=0",
                             "/list?limit=1000000000", "/list?limit=abc",
                             "/list?limit=5x",         "/list?limit="};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                request("GET", bad[i], NULL, NULL, &r);
                expect_error(&r, 400, "INVALID_PARAMETER", "limit");
                resp_free(&r);
        }
        request("GET", "/list?flag=maybe", NULL, NULL, &r);
        expect_error(&r, 400, "INVALID_PARAMETER", "flag");
        resp_free(&r);

        request("GET", "/list?limit=500&flag=true", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        json_t *j = parse(&r);
        json_t *d = json_object_get(j, "data");
        assert_int_equal(json_integer_value(json_object_get(d, "limit")), 500);
        assert_true(json_is_true(json_object_get(d, "flag")));
        json_decref(j);
        resp_free(&r);
        request("GET", "/list", NULL, NULL, &r);
        j = parse(&r);
        d = json_object_get(j, "data");
        assert_int_equal(json_integer_value(json_object_get(d, "limit")), 50);
        json_decref(j);
        resp_free(&r);
}

/* A handler that forgets to answer yields a 500, not a hang. */
static void test_silent_handler(void **state)
{
        (void)state;
        struct resp r;
        request("GET", "/silent", NULL, NULL, &r);
        expect_error(&r, 500, "INTERNAL_ERROR", NULL);
        resp_free(&r);
}

/* /healthz always, /readyz from the callback. */
static void test_health_ready(void **state)
{
        (void)state;
        struct resp r;
        request("GET", "/healthz", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        ready_value = false;
        request("GET", "/readyz", NULL, NULL, &r);
        expect_error(&r, 503, "NOT_READY", NULL);
        assert_non_null(strstr(r.body, "models are loading"));
        resp_free(&r);
        ready_value = true;
        request("GET", "/readyz", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
}

/* Several requests on one connection. */
static void test_keep_alive(void **state)
{
        (void)state;
        CURL *c = curl_easy_init();
        struct resp r;
        perform(c, "GET", "/healthz", NULL, NULL, 0, NULL, &r);
        assert_int_equal(r.connects, 1);
        resp_free(&r);
        for (int i = 0; i < 3; i++) {
                perform(c, "GET", i == 1 ? "/nope" : "/t/1", NULL, NULL, 0,
                        NULL, &r);
                assert_int_equal(r.connects, 0);
                resp_free(&r);
        }
        perform(c, "POST", "/t/1", "application/json", "{}", 2, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.connects, 0);
        resp_free(&r);
        curl_easy_cleanup(c);
}

/* A streamed answer arrives whole, with its headers. */
static void test_stream(void **state)
{
        (void)state;
        struct resp r;
        request("GET", "/stream", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.content_type, "application/x-ndjson");
        assert_string_equal(r.disposition,
                            "attachment; filename=\"faces.ndjson\"");
        int lines = 0;
        for (char *p = r.body; p && *p; p++)
                lines += *p == '\n';
        assert_int_equal(lines, 1000);
        assert_non_null(strstr(r.body, "{\"n\":999}\n"));
        resp_free(&r);
}

static void *slow_client(void *arg)
{
        struct resp *r = arg;
        CURL *c = curl_easy_init();
        char url[256];
        snprintf(url, sizeof url, "%s/slow", base);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_easy_cleanup(c);
        return NULL;
}

static void wait_in_slow(int n)
{
        pthread_mutex_lock(&seen.lock);
        while (seen.in_slow < n)
                pthread_cond_wait(&seen.cond, &seen.lock);
        pthread_mutex_unlock(&seen.lock);
}

static void release_slow(void)
{
        pthread_mutex_lock(&seen.lock);
        seen.release = true;
        pthread_cond_broadcast(&seen.cond);
        pthread_mutex_unlock(&seen.lock);
}

/* One slot, no queue: a second recognition gets 503 with Retry-After. */
static void test_gate(void **state)
{
        (void)state;
        seen.in_slow = 0;
        seen.release = false;
        struct resp first = {0};
        pthread_t t;
        pthread_create(&t, NULL, slow_client, &first);
        wait_in_slow(1);

        struct resp r;
        request("POST", "/slow", NULL, NULL, &r);
        expect_error(&r, 503, "SERVER_BUSY", NULL);
        assert_true(atoi(r.retry_after) >= 1);
        resp_free(&r);

        /* The recognition runs on a worker: the one pool thread still
         * answers everyone else. */
        for (int i = 0; i < 5; i++) {
                request("GET", "/healthz", NULL, NULL, &r);
                assert_int_equal(r.status, 200);
                resp_free(&r);
        }

        release_slow();
        pthread_join(t, NULL);
        assert_int_equal(first.status, 200);
        resp_free(&first);

        /* The slot came back. */
        request("POST", "/slow", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        resp_free(&r);
}

struct client_arg {
        const char *url;
        struct resp r;
};

static void *post_client(void *arg)
{
        struct client_arg *a = arg;
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, a->url);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &a->r);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &a->r);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->r.status);
        curl_easy_cleanup(c);
        return NULL;
}

/* One slot and one queue place: the second request waits and times out,
 * a third finds the queue full; both get 503 with Retry-After. */
static void test_gate_queue(void **state)
{
        (void)state;
        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.access_log = "";
        cfg.gate_slots = 1;
        cfg.gate_queue = 1;
        cfg.gate_wait_ms = 300;
        char err[256];
        struct http_server *s2 = http_server_new(&cfg, err, sizeof err);
        assert_non_null(s2);
        http_route(s2, "POST", "/slow", on_slow, HTTP_ROUTE_GATED, NULL);
        assert_int_equal(http_server_start(s2, err, sizeof err), 0);
        char url[96];
        snprintf(url, sizeof url, "http://127.0.0.1:%u/slow",
                 (unsigned)http_server_port(s2));

        seen.in_slow = 0;
        seen.release = false;
        struct client_arg a = {.url = url}, b = {.url = url}, c = {.url = url};
        pthread_t ta, tb, tc;
        pthread_create(&ta, NULL, post_client, &a);
        wait_in_slow(1);

        /* b waits in the queue; c arrives while it does. */
        pthread_create(&tb, NULL, post_client, &b);
        int in_use = 0, waiting = 0;
        while (waiting < 1) {
                usleep(1000);
                http_gate_stats(http_server_gate(s2), &in_use, &waiting);
        }
        pthread_create(&tc, NULL, post_client, &c);
        pthread_join(tc, NULL);
        pthread_join(tb, NULL);
        expect_error(&b.r, 503, "SERVER_BUSY", NULL);
        expect_error(&c.r, 503, "SERVER_BUSY", NULL);
        assert_int_equal(atoi(b.r.retry_after), 1);

        release_slow();
        pthread_join(ta, NULL);
        assert_int_equal(a.r.status, 200);
        resp_free(&a.r);
        resp_free(&b.r);
        resp_free(&c.r);
        http_server_free(s2);
}

/* Prometheus text counts requests by route pattern and status. */
static void test_metrics(void **state)
{
        (void)state;
        struct resp r;
        request("GET", "/t/abc", NULL, NULL, &r);
        resp_free(&r);
        http_metrics_gauge_set("frapi_faces_stored", NULL, 42);
        http_metrics_histogram_observe("frapi_engine_stage_seconds",
                                       "stage=\"detect\"", 0.02);
        request("GET", "/metrics", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        assert_non_null(strstr(r.content_type, "text/plain"));
        assert_non_null(strstr(r.body, "frapi_http_requests_total{method="
                                       "\"GET\",route=\"/t/{id}\",status="
                                       "\"200\"}"));
        assert_non_null(strstr(r.body, "# TYPE "
                                       "frapi_http_request_duration_seconds "
                                       "histogram"));
        assert_non_null(strstr(r.body, "frapi_faces_stored 42\n"));
        assert_non_null(strstr(r.body, "frapi_engine_stage_seconds_bucket{"
                                       "stage=\"detect\",le=\"0.025\"} 1\n"));
        assert_non_null(strstr(r.body, "route=\"unmatched\""));
        assert_null(strstr(r.body, "/t/abc"));
        resp_free(&r);
}

/* The access log names the route and the principal, never the key. */
static void test_access_log(void **state)
{
        (void)state;
        CURL *c = curl_easy_init();
        struct curl_slist *h = curl_slist_append(NULL, "X-API-Key: good");
        struct resp r;
        perform(c, "POST", "/keyed?token=secret123", "application/json", "{}",
                2, h, &r);
        assert_int_equal(r.status, 200);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);

        /* The line is written when the answer is done; wait for it. */
        char needle[80];
        snprintf(needle, sizeof needle, "req=%s", r.request_id);
        char *text = NULL;
        for (int tries = 0; tries < 250; tries++) {
                FILE *f = fopen(access_path, "r");
                assert_non_null(f);
                free(text);
                text = calloc(1, 1 << 20);
                fread(text, 1, (1 << 20) - 1, f);
                fclose(f);
                if (strstr(text, needle))
                        break;
                usleep(20000);
        }
        char *line = strstr(text, needle);
        assert_non_null(line);
        *strchrnul(line, '\n') = '\0';
        assert_non_null(strstr(line, "route=/keyed"));
        assert_non_null(strstr(line, "status=200"));
        assert_non_null(strstr(line, "principal=key_test01"));
        assert_null(strstr(line, "good"));
        assert_null(strstr(line, "secret123"));
        free(text);
        resp_free(&r);
}

/* IPv6 loopback, when the machine has it. */
static void test_ipv6(void **state)
{
        (void)state;
        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "[::1]:0";
        cfg.access_log = "";
        char err[256];
        struct http_server *s6 = http_server_new(&cfg, err, sizeof err);
        assert_non_null(s6);
        if (http_server_start(s6, err, sizeof err) != 0) {
                http_server_free(s6);
                skip();
        }
        CURL *c = curl_easy_init();
        char url[64];
        snprintf(url, sizeof url, "http://[::1]:%u/healthz",
                 (unsigned)http_server_port(s6));
        struct resp r = {0};
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
        assert_int_equal(r.status, 200);
        resp_free(&r);
        curl_easy_cleanup(c);
        http_server_free(s6);
}

/* Bad settings are refused by name. */
static void test_bad_config(void **state)
{
        (void)state;
        struct http_config cfg;
        char err[256];
        const char *listens[] = {"",
                                 "8080",
                                 "::1:8080",
                                 "[::1]",
                                 "1.2.3.4:x",
                                 "127.0.0.1:65536",
                                 "nosuchhost.invalid:80"};
        for (size_t i = 0; i < sizeof listens / sizeof listens[0]; i++) {
                http_config_default(&cfg);
                cfg.listen = listens[i];
                assert_null(http_server_new(&cfg, err, sizeof err));
                assert_non_null(strstr(err, "listen"));
        }
        http_config_default(&cfg);
        cfg.gate_slots = 0;
        assert_null(http_server_new(&cfg, err, sizeof err));
        assert_non_null(strstr(err, "gate_slots"));
}

/* Waits until the server stops accepting connections, then lets the
 * handler in flight finish. */
static void *release_when_quiesced(void *arg)
{
        (void)arg;
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(http_server_port(srv)),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        for (;;) {
                int fd = socket(AF_INET, SOCK_STREAM, 0);
                int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
                close(fd);
                if (rc != 0)
                        break;
                usleep(5000);
        }
        release_slow();
        return NULL;
}

/* Stop waits for the request in flight, then refuses new connections. */
static void test_graceful_stop(void **state)
{
        (void)state;
        seen.in_slow = 0;
        seen.release = false;
        struct resp first = {0};
        pthread_t t;
        pthread_create(&t, NULL, slow_client, &first);
        wait_in_slow(1);

        /* Release the handler a little after stop has begun. */
        pthread_t rel;
        pthread_create(&rel, NULL, release_when_quiesced, NULL);
        http_server_stop(srv);
        pthread_join(rel, NULL);
        pthread_join(t, NULL);
        assert_int_equal(first.status, 200);
        assert_non_null(strstr(first.body, "slow done"));
        resp_free(&first);

        CURL *c = curl_easy_init();
        char url[256];
        snprintf(url, sizeof url, "%s/healthz", base);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        struct resp r = {0};
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
        assert_int_not_equal(curl_easy_perform(c), CURLE_OK);
        resp_free(&r);
        curl_easy_cleanup(c);
}

int main(void)
{
        curl_global_init(CURL_GLOBAL_DEFAULT);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_routing),
                cmocka_unit_test(test_not_found_and_method),
                cmocka_unit_test(test_json_bodies),
                cmocka_unit_test(test_multipart),
                cmocka_unit_test(test_body_limit),
                cmocka_unit_test(test_receive_timeout),
                cmocka_unit_test(test_before_body_hook),
                cmocka_unit_test(test_query_helpers),
                cmocka_unit_test(test_silent_handler),
                cmocka_unit_test(test_health_ready),
                cmocka_unit_test(test_keep_alive),
                cmocka_unit_test(test_stream),
                cmocka_unit_test(test_gate),
                cmocka_unit_test(test_gate_queue),
                cmocka_unit_test(test_metrics),
                cmocka_unit_test(test_access_log),
                cmocka_unit_test(test_ipv6),
                cmocka_unit_test(test_bad_config),
                cmocka_unit_test(test_graceful_stop),
        };
        int rc = cmocka_run_group_tests(tests, start, stop);
        http_metrics_reset();
        curl_global_cleanup();
        return rc;
}
