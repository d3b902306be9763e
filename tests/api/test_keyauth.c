/*
 * test_keyauth.c - the X-API-Key check on a real server and store: each
 * refusal's status and code, the key and collection handed to the
 * handler, revocation, and the checks other modules add running in order
 * after the key is known good.
 */
#include "api/keyauth.h"
#include "store/store_sqlite.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

static struct store *store;
static struct keyauth *ka;
static struct http_server *srv;
static char dir[] = "/tmp/frapi-keyauth-XXXXXX";
static char base[64];
static char good_key[APIKEY_LEN + 1], other_key[APIKEY_LEN + 1];
static struct store_apikey good_rec, other_rec;
static struct store_collection coll = {.name = "front door"};
static int checks_run;
static const char *refuse_key_id; /* the added check refuses this key */

/* The handler answers with what keyauth handed it. */
static void on_keyed(struct http_request *req, void *userdata)
{
        (void)userdata;
        const struct keyauth_key *k = keyauth_key(req);
        http_reply_data(req, 200,
                        json_pack("{s:s, s:s, s:s}", "key_id", k->rec.id,
                                  "collection", k->coll.id, "principal",
                                  http_request_principal(req)));
}

/* An added check: counts, and refuses one key with 403. */
static bool check_refuse(struct http_request *req,
                         const struct keyauth_key *key, void *userdata)
{
        (void)userdata;
        checks_run++;
        if (refuse_key_id && strcmp(key->rec.id, refuse_key_id) == 0) {
                http_reply_error(req, 403, "IP_NOT_ALLOWED", "Refused.", NULL);
                return false;
        }
        return true;
}

static int setup(void **state)
{
        (void)state;
        uint8_t pepper[APIKEY_PEPPER_LEN];
        char err[256];
        struct http_config cfg;

        assert_non_null(mkdtemp(dir));
        assert_int_equal(store_sqlite_open(dir, &store, err, sizeof err),
                         STORE_OK);
        assert_int_equal(apikey_pepper_load(dir, pepper, err, sizeof err), 0);
        coll.name = strdup("front door");
        assert_int_equal(store_collection_create(store, &coll), STORE_OK);
        assert_int_equal(apikey_create(store, pepper, coll.id, "good", 0, NULL,
                                       &good_rec, good_key),
                         STORE_OK);
        assert_int_equal(apikey_create(store, pepper, coll.id, "other", 0, NULL,
                                       &other_rec, other_key),
                         STORE_OK);

        ka = keyauth_new(store, pepper);
        assert_int_equal(keyauth_add_check(ka, check_refuse, NULL), 0);
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.access_log = "";
        srv = http_server_new(&cfg, err, sizeof err);
        assert_non_null(srv);
        struct http_route *r =
                http_route(srv, "GET", "/keyed", on_keyed, 0, NULL);
        http_route_set_before(r, keyauth_before, ka);
        assert_int_equal(http_server_start(srv, err, sizeof err), 0);
        snprintf(base, sizeof base, "http://127.0.0.1:%u",
                 (unsigned)http_server_port(srv));
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        char cmd[128];
        http_server_free(srv);
        keyauth_free(ka);
        store_apikey_clear(&good_rec);
        store_apikey_clear(&other_rec);
        store_collection_clear(&coll);
        store_close(store);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

static size_t on_data(char *p, size_t size, size_t n, void *userdata)
{
        size_t *len = userdata;
        char *buf = (char *)(len + 1);
        size_t add = size * n;
        if (*len + add >= 4000)
                add = 4000 - *len - 1;
        memcpy(buf + *len, p, add);
        *len += add;
        buf[*len] = '\0';
        return size * n;
}

/* GET /keyed with header (NULL for none); returns the status, and the
 * parsed body in *body. */
static long get(const char *header, json_t **body)
{
        struct {
                size_t len;
                char buf[4000];
        } out = {0};
        char url[128];
        long status = 0;
        CURL *c = curl_easy_init();
        struct curl_slist *h = header ? curl_slist_append(NULL, header) : NULL;
        snprintf(url, sizeof url, "%s/keyed", base);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &out);
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        *body = json_loads(out.buf, 0, NULL);
        assert_non_null(*body);
        return status;
}

static const char *error_code(json_t *body)
{
        return json_string_value(
                json_object_get(json_object_get(body, "error"), "code"));
}

static void expect_refused(const char *header, long status, const char *code)
{
        json_t *body;
        int before = checks_run;
        assert_int_equal(get(header, &body), status);
        assert_string_equal(error_code(body), code);
        json_decref(body);
        assert_int_equal(checks_run, before); /* no added check ran */
}

static void test_missing_and_malformed(void **state)
{
        (void)state;
        char h[128];
        expect_refused(NULL, 401, "MISSING_API_KEY");
        expect_refused("X-API-Key;", 401, "MISSING_API_KEY");
        expect_refused("X-API-Key: wrong", 401, "INVALID_API_KEY");
        snprintf(h, sizeof h, "X-API-Key: %s-", good_key);
        expect_refused(h, 401, "INVALID_API_KEY");
}

static void test_unknown_and_wrong_secret(void **state)
{
        (void)state;
        char h[128], key[APIKEY_LEN + 1];

        /* A well-formed key nobody made. */
        apikey_generate(key);
        snprintf(h, sizeof h, "X-API-Key: %s", key);
        expect_refused(h, 401, "INVALID_API_KEY");

        /* The right prefix with another secret. */
        memcpy(key, good_key, APIKEY_LEN + 1);
        key[APIKEY_LEN - 1] = key[APIKEY_LEN - 1] == 'a' ? 'b' : 'a';
        snprintf(h, sizeof h, "X-API-Key: %s", key);
        expect_refused(h, 401, "INVALID_API_KEY");
}

static void test_good_key_reaches_handler(void **state)
{
        (void)state;
        char h[128];
        json_t *body;
        int before = checks_run;
        snprintf(h, sizeof h, "X-API-Key: %s", good_key);
        assert_int_equal(get(h, &body), 200);
        json_t *d = json_object_get(body, "data");
        assert_string_equal(json_string_value(json_object_get(d, "key_id")),
                            good_rec.id);
        assert_string_equal(json_string_value(json_object_get(d, "principal")),
                            good_rec.id);
        assert_string_equal(json_string_value(json_object_get(d, "collection")),
                            coll.id);
        json_decref(body);
        assert_int_equal(checks_run, before + 1);
}

static void test_added_check_refuses(void **state)
{
        (void)state;
        char h[128];
        json_t *body;
        refuse_key_id = other_rec.id;
        snprintf(h, sizeof h, "X-API-Key: %s", other_key);
        assert_int_equal(get(h, &body), 403);
        assert_string_equal(error_code(body), "IP_NOT_ALLOWED");
        json_decref(body);
        snprintf(h, sizeof h, "X-API-Key: %s", good_key);
        assert_int_equal(get(h, &body), 200);
        json_decref(body);
        refuse_key_id = NULL;
}

static void test_revoked(void **state)
{
        (void)state;
        char h[128], sql[160];
        snprintf(sql, sizeof sql,
                 "UPDATE api_keys SET revoked_at = 1 WHERE id = '%s'",
                 other_rec.id);
        store_sqlite_lock(store);
        assert_int_equal(
                sqlite3_exec(store_sqlite_db(store), sql, NULL, NULL, NULL),
                SQLITE_OK);
        store_sqlite_unlock(store);
        snprintf(h, sizeof h, "X-API-Key: %s", other_key);
        expect_refused(h, 401, "API_KEY_REVOKED");
}

static void test_too_many_checks(void **state)
{
        (void)state;
        struct keyauth *k = keyauth_new(store, (uint8_t[32]){0});
        for (int i = 0; i < KEYAUTH_MAX_CHECKS; i++)
                assert_int_equal(keyauth_add_check(k, check_refuse, NULL), 0);
        assert_int_equal(keyauth_add_check(k, check_refuse, NULL), -1);
        keyauth_free(k);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_missing_and_malformed),
                cmocka_unit_test(test_unknown_and_wrong_secret),
                cmocka_unit_test(test_good_key_reaches_handler),
                cmocka_unit_test(test_added_check_refuses),
                cmocka_unit_test(test_revoked),
                cmocka_unit_test(test_too_many_checks),
        };
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int rc = cmocka_run_group_tests(tests, setup, teardown);
        curl_global_cleanup();
        return rc;
}
