/*
 * test_api_input.c - the UTF-8 check that guards multipart text fields
 * (names, external ids) where no JSON parser has looked at the bytes, and
 * the refusal of fields a route does not take, in JSON, multipart and
 * form bodies sent to a real server on a loopback port.
 */
#include "api/api_input.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

static bool ok(const char *s)
{
        return api_input_utf8_ok(s, strlen(s));
}

static void test_accepts_every_script(void **state)
{
        (void)state;
        assert_true(ok(""));
        assert_true(ok("plain ascii"));
        assert_true(ok("Zo\xc3\xab"));                       /* Zoë, NFC */
        assert_true(ok("Zoe\xcc\x88"));                      /* Zoë, NFD */
        assert_true(ok("\xe5\xbc\xa0\xe4\xbc\x9f"));         /* 张伟 */
        assert_true(ok("\xd7\xa9\xd7\x9c\xd7\x95\xd7\x9d")); /* שלום */
        assert_true(ok("\xf0\x9f\x98\x80"));                 /* 😀 */
        assert_true(ok("\xf4\x8f\xbf\xbf"));                 /* U+10FFFF */
        assert_true(ok("\xef\xbf\xbd"));                     /* U+FFFD */
}

static void test_refuses_malformed(void **state)
{
        (void)state;
        assert_false(ok("Zo\xc3("));          /* bad continuation */
        assert_false(ok("\xc3"));             /* cut short */
        assert_false(ok("abc\xe5\xbc"));      /* cut short at the end */
        assert_false(ok("\xf0\x9f\x98"));     /* cut short, 4-byte */
        assert_false(ok("\xc0\xaf"));         /* overlong '/' */
        assert_false(ok("\xe0\x80\xaf"));     /* overlong, 3 bytes */
        assert_false(ok("\xf0\x80\x80\xaf")); /* overlong, 4 bytes */
        assert_false(ok("\xed\xa0\x80"));     /* surrogate U+D800 */
        assert_false(ok("\xf4\x90\x80\x80")); /* above U+10FFFF */
        assert_false(ok("\xff"));
        assert_false(ok("\x80")); /* lone continuation */
}

static void test_length_is_respected(void **state)
{
        (void)state;
        /* Only len bytes are judged, so a cut in the middle is seen. */
        const char *s = "\xe5\xbc\xa0";
        assert_false(api_input_utf8_ok(s, 2));
        assert_true(api_input_utf8_ok(s, 3));
        assert_true(api_input_utf8_ok(s, 0));
}

static void test_shown_name(void **state)
{
        (void)state;
        char buf[8];

        /* Kept as it is when it fits and is UTF-8. */
        api_input_shown_name("foo", buf, sizeof buf);
        assert_string_equal(buf, "foo");

        /* A bad byte becomes '?'; a cut never splits a character. */
        api_input_shown_name("a\xff"
                             "b\xc3",
                             buf, sizeof buf);
        assert_string_equal(buf, "a?b?");
        api_input_shown_name("abcdef\xc3\xab", buf, sizeof buf);
        assert_string_equal(buf, "abcdef");
        api_input_shown_name("abcdefghij", buf, sizeof buf);
        assert_string_equal(buf, "abcdefg");
        api_input_shown_name("", buf, sizeof buf);
        assert_string_equal(buf, "");
}

static void test_known_list(void **state)
{
        (void)state;
        static const char *const one[] = {"image", NULL};
        static const char *const three[] = {"a", "b", "c", NULL};
        char buf[64];

        api_input_known_list(one, buf, sizeof buf);
        assert_string_equal(buf, "image");
        api_input_known_list(three, buf, sizeof buf);
        assert_string_equal(buf, "a, b and c");
        api_input_known_list(three, buf, 5);
        assert_string_equal(buf, "a, b");
}

static void test_unknown_member(void **state)
{
        (void)state;
        static const char *const known[] = {"image", "name", NULL};
        json_t *ok = json_pack("{s:s, s:s}", "image", "x", "name", "n");
        json_t *bad = json_pack("{s:s, s:i}", "image", "x", "topk", 1);
        json_t *arr = json_array();

        assert_null(api_input_unknown_member(ok, known));
        assert_string_equal(api_input_unknown_member(bad, known), "topk");
        assert_null(api_input_unknown_member(arr, known));
        assert_null(api_input_unknown_member(NULL, known));
        json_decref(ok);
        json_decref(bad);
        json_decref(arr);
}

/*
 * A server whose routes only check their fields: /only takes image and
 * name; /batch takes items and any part whose name starts with "photo",
 * as a batch takes the parts its items name.
 */

static struct http_server *srv;
static char base[64];

static const char *const route_fields[] = {"image", "name", NULL};

static void on_only(struct http_request *req, void *userdata)
{
        (void)userdata;
        if (api_input_only(req, route_fields))
                http_reply_data(req, 200, json_object());
}

static bool photo_part(void *cls, const struct http_part *part)
{
        (void)cls;
        return strncmp(part->name, "photo", 5) == 0;
}

static void on_batch(struct http_request *req, void *userdata)
{
        (void)userdata;
        static const char *const known[] = {"items", NULL};
        if (api_input_only_parts(req, known, photo_part, NULL,
                                 " and its photos"))
                http_reply_data(req, 200, json_object());
}

static int start(void **state)
{
        (void)state;
        struct http_config cfg;
        char err[256];

        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.threads = 1;
        cfg.access_log = "";
        srv = http_server_new(&cfg, err, sizeof err);
        assert_non_null(srv);
        unsigned body = HTTP_BODY_JSON | HTTP_BODY_MULTIPART | HTTP_BODY_FORM |
                        HTTP_BODY_JSON_ARRAY;
        http_route(srv, "POST", "/only", on_only, body, NULL);
        http_route(srv, "POST", "/batch", on_batch, body, NULL);
        assert_int_equal(http_server_start(srv, err, sizeof err), 0);
        snprintf(base, sizeof base, "http://127.0.0.1:%u",
                 (unsigned)http_server_port(srv));
        return 0;
}

static int stop(void **state)
{
        (void)state;
        http_server_free(srv);
        srv = NULL;
        return 0;
}

/* An answer: its status and parsed body. */
struct answer {
        long status;
        char body[2048];
        size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
        struct answer *a = ud;
        size_t k = size * n;
        if (k > sizeof a->body - 1 - a->len)
                k = sizeof a->body - 1 - a->len;
        memcpy(a->body + a->len, p, k);
        a->len += k;
        a->body[a->len] = '\0';
        return size * n;
}

/* Posts to path either mime (multipart) or body with content type ctype. */
static void post(const char *path, curl_mime *mime, const char *ctype,
                 const char *body, struct answer *a)
{
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        char url[128], ct[128];

        memset(a, 0, sizeof *a);
        snprintf(url, sizeof url, "%s%s", base, path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, a);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
        if (mime) {
                curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
        } else {
                snprintf(ct, sizeof ct, "Content-Type: %s", ctype);
                h = curl_slist_append(h, ct);
                curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        }
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a->status);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
}

/* Asserts 400 INVALID_PARAMETER naming param, with a message that names
 * it and lists what the route takes (takes, a substring). */
static void expect_refused(const struct answer *a, const char *param,
                           const char *takes)
{
        assert_int_equal(a->status, 400);
        json_t *j = json_loads(a->body, 0, NULL);
        assert_non_null(j);
        json_t *e = json_object_get(j, "error");
        assert_string_equal(json_string_value(json_object_get(e, "code")),
                            "INVALID_PARAMETER");
        assert_string_equal(json_string_value(json_object_get(e, "param")),
                            param);
        const char *msg = json_string_value(json_object_get(e, "message"));
        assert_non_null(msg);
        assert_non_null(strstr(msg, param));
        assert_non_null(strstr(msg, takes));
        json_decref(j);
}

/* A multipart body of (name, value, filename or NULL) triples. */
static curl_mime *mime_of(CURL **c, const char *const *fields, size_t n)
{
        *c = curl_easy_init();
        curl_mime *m = curl_mime_init(*c);
        for (size_t i = 0; i + 2 < n * 3; i += 3) {
                curl_mimepart *p = curl_mime_addpart(m);
                curl_mime_name(p, fields[i]);
                curl_mime_data(p, fields[i + 1], CURL_ZERO_TERMINATED);
                if (fields[i + 2])
                        curl_mime_filename(p, fields[i + 2]);
        }
        return m;
}

static void test_only_json(void **state)
{
        (void)state;
        struct answer a;

        post("/only", NULL, "application/json", "{\"image\":\"x\"}", &a);
        assert_int_equal(a.status, 200);
        post("/only", NULL, "application/json",
             "{\"image\":\"x\",\"name\":\"n\",\"foo\":1}", &a);
        expect_refused(&a, "foo", "image and name");

        /* A bare array has no members to judge. */
        post("/only", NULL, "application/json", "[1]", &a);
        assert_int_equal(a.status, 200);
}

static void test_only_multipart(void **state)
{
        (void)state;
        struct answer a;
        CURL *c;

        /* Known text and file parts pass. */
        static const char *const good[] = {"image", "bytes", "x.jpg",
                                           "name",  "Ann",   NULL};
        curl_mime *m = mime_of(&c, good, 2);
        post("/only", m, NULL, NULL, &a);
        assert_int_equal(a.status, 200);
        curl_mime_free(m);
        curl_easy_cleanup(c);

        /* An unknown text field, and an unknown file part. */
        static const char *const text[] = {"image", "bytes", "x.jpg",
                                           "foo",   "1",     NULL};
        m = mime_of(&c, text, 2);
        post("/only", m, NULL, NULL, &a);
        expect_refused(&a, "foo", "image and name");
        curl_mime_free(m);
        curl_easy_cleanup(c);
        static const char *const file[] = {"name",   "Ann",   NULL,
                                           "image2", "bytes", "y.jpg"};
        m = mime_of(&c, file, 2);
        post("/only", m, NULL, NULL, &a);
        expect_refused(&a, "image2", "image and name");
        curl_mime_free(m);
        curl_easy_cleanup(c);

        /* A part name that is not UTF-8 is shown with '?' in its place. */
        static const char *const odd[] = {"f\xff", "1", NULL};
        m = mime_of(&c, odd, 1);
        post("/only", m, NULL, NULL, &a);
        expect_refused(&a, "f?", "image and name");
        curl_mime_free(m);
        curl_easy_cleanup(c);
}

static void test_only_form(void **state)
{
        (void)state;
        struct answer a;

        post("/only", NULL, "application/x-www-form-urlencoded", "name=Ann",
             &a);
        assert_int_equal(a.status, 200);
        post("/only", NULL, "application/x-www-form-urlencoded",
             "name=Ann&topk=1", &a);
        expect_refused(&a, "topk", "image and name");
}

static void test_only_parts_accepts_named(void **state)
{
        (void)state;
        struct answer a;
        CURL *c;

        static const char *const good[] = {"items",  "[]",    NULL,
                                           "photo1", "bytes", "a.jpg"};
        curl_mime *m = mime_of(&c, good, 2);
        post("/batch", m, NULL, NULL, &a);
        assert_int_equal(a.status, 200);
        curl_mime_free(m);
        curl_easy_cleanup(c);

        static const char *const stray[] = {"items", "[]",    NULL,
                                            "other", "bytes", "b.jpg"};
        m = mime_of(&c, stray, 2);
        post("/batch", m, NULL, NULL, &a);
        expect_refused(&a, "other", "items and its photos");
        curl_mime_free(m);
        curl_easy_cleanup(c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_accepts_every_script),
                cmocka_unit_test(test_refuses_malformed),
                cmocka_unit_test(test_length_is_respected),
                cmocka_unit_test(test_shown_name),
                cmocka_unit_test(test_known_list),
                cmocka_unit_test(test_unknown_member),
        };
        const struct CMUnitTest served[] = {
                cmocka_unit_test(test_only_json),
                cmocka_unit_test(test_only_multipart),
                cmocka_unit_test(test_only_form),
                cmocka_unit_test(test_only_parts_accepts_named),
        };
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        failed += cmocka_run_group_tests(served, start, stop);
        curl_global_cleanup();
        return failed;
}
