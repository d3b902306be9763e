/*
 * test_keyguard.c - the checks of an API key over real HTTP: a server on
 * an ephemeral loopback port whose before-body hook runs keyguard_admit()
 * on a key held by the test.  Case S3 (forwarded headers from an untrusted
 * peer), trusted proxy chains, the exact 429 answer and its headers, case
 * S5 (exactly N of 10 x N concurrent requests), a rate limiter of the
 * test's own plugged in behind struct ratelimit_ops, revocation, and the
 * last use written to a real store.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/keyguard.h"
#include "auth/apikey.h"
#include "auth/ratelimit.h"
#include "http/http.h"
#include "store/store_sqlite.h"

static char dir[] = "/tmp/frapi-keyguard-XXXXXX";
static struct store *store;
static struct http_server *srv;
static struct keyguard *plain;   /* no trusted proxies */
static struct keyguard *proxied; /* 127.0.0.1 is a trusted proxy */
static struct keyguard *plugged; /* on the scripted limiter below */
static char base[64];

/* The hook's userdata points at a guard pointer, so a test may replace
 * the guard.  The key the hook checks; the test changes it between requests. */
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;
static struct store_apikey key;

static bool hook(struct http_request *req, void *userdata)
{
        pthread_mutex_lock(&key_lock);
        struct store_apikey k = key;
        pthread_mutex_unlock(&key_lock);
        return keyguard_admit(*(struct keyguard **)userdata, req, &k);
}

static void on_ok(struct http_request *req, void *userdata)
{
        (void)userdata;
        http_reply_data(req, 200, json_string("ok"));
}

/* Sets the key the hook checks. */
static void set_key(const char *id, int rpm, const char *allowlist,
                    int64_t revoked_ms)
{
        pthread_mutex_lock(&key_lock);
        snprintf(key.id, sizeof key.id, "%s", id);
        key.rpm = rpm;
        key.allowlist = (char *)allowlist;
        key.revoked_ms = revoked_ms;
        pthread_mutex_unlock(&key_lock);
}

/* One answer, with the headers we look at. */
struct answer {
        long status;
        char body[1024];
        size_t len;
        char limit[32], remaining[32], reset[32], retry_after[32];
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
        struct answer *a = ud;
        size_t k = size * n;
        if (a->len + k < sizeof a->body) {
                memcpy(a->body + a->len, p, k);
                a->len += k;
                a->body[a->len] = '\0';
        }
        return k;
}

static void grab(const char *line, size_t len, const char *name, char *out)
{
        size_t n = strlen(name);
        if (len > n + 2 && strncasecmp(line, name, n) == 0 && line[n] == ':') {
                size_t v = len - n - 1;
                const char *s = line + n + 1;
                while (v && *s == ' ')
                        s++, v--;
                while (v && (s[v - 1] == '\r' || s[v - 1] == '\n'))
                        v--;
                snprintf(out, 32, "%.*s", (int)v, s);
        }
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
        struct answer *a = ud;
        grab(p, size * n, "X-RateLimit-Limit", a->limit);
        grab(p, size * n, "X-RateLimit-Remaining", a->remaining);
        grab(p, size * n, "X-RateLimit-Reset", a->reset);
        grab(p, size * n, "Retry-After", a->retry_after);
        return size * n;
}

/* GET path with up to two extra headers (NULL for none). */
static struct answer get(const char *path, const char *h1, const char *h2)
{
        struct answer a = {0};
        char url[128];
        snprintf(url, sizeof url, "%s%s", base, path);
        CURL *c = curl_easy_init();
        struct curl_slist *hs = NULL;
        if (h1)
                hs = curl_slist_append(hs, h1);
        if (h2)
                hs = curl_slist_append(hs, h2);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &a);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &a);
        assert_int_equal(curl_easy_perform(c), CURLE_OK);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
        curl_slist_free_all(hs);
        curl_easy_cleanup(c);
        return a;
}

/*
 * A limiter of the test's own behind struct ratelimit_ops, as a shared
 * store for several nodes would be: it counts its calls, remembers the key
 * asked about, and gives the verdict the test set (0 let through, 1
 * refuse with retry_after, -1 the state cannot be reached).
 */
struct scripted {
        struct ratelimit head;
        atomic_int calls;
        atomic_int verdict;
        atomic_bool freed;
        char last_key[STORE_ID_MAX];
};

static int scripted_consume(struct ratelimit *rl, const char *k, uint32_t limit,
                            int64_t now_ms, struct ratelimit_result *out)
{
        struct scripted *s = (struct scripted *)rl;
        atomic_fetch_add(&s->calls, 1);
        snprintf(s->last_key, sizeof s->last_key, "%s", k);
        int v = atomic_load(&s->verdict);
        if (v < 0)
                return -1;
        out->allowed = v == 0;
        out->limit = limit;
        out->remaining = v == 0 ? 77 : 0;
        out->reset = now_ms / 1000 + 30;
        out->retry_after = v == 0 ? 0 : 7;
        return 0;
}

static void scripted_free(struct ratelimit *rl)
{
        atomic_store(&((struct scripted *)rl)->freed, true);
}

static const struct ratelimit_ops scripted_ops = {
        .consume = scripted_consume,
        .free = scripted_free,
};
static struct scripted scripted = {.head = {&scripted_ops}};

static int setup(void **state)
{
        (void)state;
        char err[256];
        if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_ALL) != 0 ||
            !mkdtemp(dir) ||
            store_sqlite_open(dir, &store, err, sizeof err) != STORE_OK)
                return -1;
        if (keyguard_new(store, NULL, 60000, &plain, err, sizeof err) != 0 ||
            keyguard_new(store, "127.0.0.1, 10.1.0.0/16", 60000, &proxied, err,
                         sizeof err) != 0 ||
            keyguard_new_with(store, &scripted.head, NULL, 60000, &plugged, err,
                              sizeof err) != 0)
                return -1;

        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.access_log = "";
        srv = http_server_new(&cfg, err, sizeof err);
        if (!srv)
                return -1;
        http_route_set_before(http_route(srv, "GET", "/plain", on_ok, 0, NULL),
                              hook, &plain);
        http_route_set_before(
                http_route(srv, "GET", "/proxied", on_ok, 0, NULL), hook,
                &proxied);
        http_route_set_before(
                http_route(srv, "GET", "/plugged", on_ok, 0, NULL), hook,
                &plugged);
        if (http_server_start(srv, err, sizeof err) != 0)
                return -1;
        snprintf(base, sizeof base, "http://127.0.0.1:%u",
                 http_server_port(srv));
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        http_server_free(srv);
        keyguard_free(plain);
        keyguard_free(proxied);
        keyguard_free(plugged);
        store_close(store);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        curl_global_cleanup();
        return system(cmd) == 0 ? 0 : -1;
}

/* Case S3: a client outside the allowlist claiming an allowed address in
 * X-Forwarded-For, Forwarded or X-Real-IP is refused. */
static void test_s3_untrusted_headers(void **state)
{
        (void)state;
        set_key("key_s3", 1000, "[\"10.0.0.0/8\", \"2001:db8::/32\"]", 0);
        struct answer a = get("/plain", "X-Forwarded-For: 10.0.0.5",
                              "X-Real-IP: 10.0.0.5");
        assert_int_equal(a.status, 403);
        assert_non_null(strstr(a.body, "\"IP_NOT_ALLOWED\""));
        assert_non_null(strstr(a.body, "127.0.0.1"));
        a = get("/plain", "Forwarded: for=10.0.0.5", NULL);
        assert_int_equal(a.status, 403);

        /* On the list, the same request passes. */
        set_key("key_s3", 1000, "[\"127.0.0.0/8\"]", 0);
        a = get("/plain", "X-Forwarded-For: 203.0.113.1", NULL);
        assert_int_equal(a.status, 200);
        set_key("key_s3", 1000, "[]", 0);
        assert_int_equal(get("/plain", NULL, NULL).status, 200);
}

/* Behind trusted proxies the right-most untrusted address counts. */
static void test_trusted_chain(void **state)
{
        (void)state;
        set_key("key_chain", 1000, "[\"203.0.113.0/24\"]", 0);
        assert_int_equal(get("/proxied", NULL, NULL).status, 403);
        assert_int_equal(
                get("/proxied", "X-Forwarded-For: 203.0.113.9", NULL).status,
                200);
        /* Through a second proxy of the trusted range. */
        assert_int_equal(
                get("/proxied", "X-Forwarded-For: 203.0.113.9, 10.1.2.3", NULL)
                        .status,
                200);
        /* A forged left part does not help a client outside the list. */
        assert_int_equal(get("/proxied",
                             "X-Forwarded-For: 203.0.113.9, 198.51.100.7", NULL)
                                 .status,
                         403);
        assert_int_equal(get("/proxied",
                             "Forwarded: for=\"[2001:db8::1]\", "
                             "for=203.0.113.77;proto=https",
                             NULL)
                                 .status,
                         200);
        /* A proxy that adds its own header line instead of extending the
         * client's: both lines count, the proxy's last. */
        assert_int_equal(get("/proxied", "X-Forwarded-For: 203.0.113.9",
                             "X-Forwarded-For: 198.51.100.7")
                                 .status,
                         403);
        assert_int_equal(get("/proxied", "X-Forwarded-For: 198.51.100.7",
                             "X-Forwarded-For: 203.0.113.9")
                                 .status,
                         200);
        assert_int_equal(get("/proxied", "Forwarded: for=203.0.113.9",
                             "Forwarded: for=198.51.100.7")
                                 .status,
                         403);

        /* Garbage vouched for by the proxy: the client is unknown. */
        struct answer a = get("/proxied", "X-Forwarded-For: unknown", NULL);
        assert_int_equal(a.status, 403);
        assert_non_null(strstr(a.body, "unknown address"));
        /* Headers that disagree: one of them is forged. */
        assert_int_equal(get("/proxied", "X-Forwarded-For: 203.0.113.9",
                             "Forwarded: for=198.51.100.7")
                                 .status,
                         403);
}

/* The exact 429 answer and the headers on every answer. */
static void test_rate_limit_answer(void **state)
{
        (void)state;
        set_key("key_rl", 5, "[]", 0);
        for (int i = 0; i < 5; i++) {
                struct answer a = get("/plain", NULL, NULL);
                assert_int_equal(a.status, 200);
                assert_string_equal(a.limit, "5");
                char want[8];
                snprintf(want, sizeof want, "%d", 4 - i);
                assert_string_equal(a.remaining, want);
                assert_true(atoll(a.reset) > 1700000000);
                assert_int_equal(atoll(a.reset) % 60, 0);
        }
        struct answer a = get("/plain", NULL, NULL);
        assert_int_equal(a.status, 429);
        assert_string_equal(a.limit, "5");
        assert_string_equal(a.remaining, "0");
        int n = atoi(a.retry_after);
        assert_true(n >= 1 && n <= 120);
        char msg[128];
        json_t *body = json_loads(a.body, 0, NULL);
        assert_non_null(body);
        assert_false(json_is_true(json_object_get(body, "success")));
        json_t *err = json_object_get(body, "error");
        assert_string_equal(json_string_value(json_object_get(err, "code")),
                            "RATE_LIMIT_EXCEEDED");
        snprintf(msg, sizeof msg,
                 "Rate limit exceeded. Try again in %d seconds.", n);
        assert_string_equal(json_string_value(json_object_get(err, "message")),
                            msg);
        /* Nothing but those: the documented body, member for member. */
        assert_int_equal(json_object_size(body), 2);
        assert_int_equal(json_object_size(err), 2);
        json_decref(body);

        /* Another key has its own budget. */
        set_key("key_rl2", 5, "[]", 0);
        assert_int_equal(get("/plain", NULL, NULL).status, 200);
}

/* Case S5 over HTTP: 10 x N concurrent requests, exactly N pass. */
#define S5_LIMIT   20
#define S5_THREADS 10
static void *s5_run(void *arg)
{
        int *ok = arg;
        for (int i = 0; i < S5_LIMIT; i++) {
                struct answer a = get("/plain", NULL, NULL);
                if (a.status == 200)
                        (*ok)++;
                else if (a.status != 429 || atoi(a.retry_after) < 1)
                        *ok = -1000;
        }
        return NULL;
}

static void test_s5_concurrent(void **state)
{
        (void)state;
        set_key("key_s5", S5_LIMIT, "[]", 0);
        pthread_t th[S5_THREADS];
        int ok[S5_THREADS] = {0};
        for (int i = 0; i < S5_THREADS; i++)
                pthread_create(&th[i], NULL, s5_run, &ok[i]);
        int total = 0;
        for (int i = 0; i < S5_THREADS; i++) {
                pthread_join(th[i], NULL);
                total += ok[i];
        }
        assert_int_equal(total, S5_LIMIT);
}

/* The guard asks the limiter it was given, and answers by its verdict. */
static void test_plugged_limiter(void **state)
{
        (void)state;
        set_key("key_plug", 1000, "[]", 0);

        /* Let through: its numbers make the headers. */
        atomic_store(&scripted.verdict, 0);
        struct answer a = get("/plugged", NULL, NULL);
        assert_int_equal(a.status, 200);
        assert_string_equal(a.limit, "1000");
        assert_string_equal(a.remaining, "77");
        assert_int_equal(atomic_load(&scripted.calls), 1);
        assert_string_equal(scripted.last_key, "key_plug");

        /* Refused although 1000 per minute were allowed: its verdict. */
        atomic_store(&scripted.verdict, 1);
        a = get("/plugged", NULL, NULL);
        assert_int_equal(a.status, 429);
        assert_string_equal(a.retry_after, "7");
        assert_string_equal(a.remaining, "0");
        json_t *want =
                json_pack("{s:b, s:{s:s, s:s}}", "success", 0, "error", "code",
                          "RATE_LIMIT_EXCEEDED", "message",
                          "Rate limit exceeded. Try again in 7 seconds.");
        json_t *got = json_loads(a.body, 0, NULL);
        assert_true(json_equal(want, got));
        json_decref(want);
        json_decref(got);

        /* Unreachable: the request is refused, not let through. */
        atomic_store(&scripted.verdict, -1);
        a = get("/plugged", NULL, NULL);
        assert_int_equal(a.status, 503);
        assert_int_equal(atomic_load(&scripted.calls), 3);

        /* The guard owns its limiter and releases it. */
        atomic_store(&scripted.verdict, 0);
        struct keyguard *g = plugged;
        plugged = NULL;
        assert_false(atomic_load(&scripted.freed));
        keyguard_free(g);
        assert_true(atomic_load(&scripted.freed));
}

/* A revoked key fails at once, before any other check. */
static void test_revoked(void **state)
{
        (void)state;
        set_key("key_rev", 1000, "[\"10.0.0.0/8\"]", 1);
        struct answer a = get("/plain", NULL, NULL);
        assert_int_equal(a.status, 401);
        assert_non_null(strstr(a.body, "\"API_KEY_REVOKED\""));
        assert_string_equal(a.limit, "");
}

/* Revocation and last use on the store. */
static void test_store_side(void **state)
{
        (void)state;
        struct store_collection c = {.name = strdup("test")};
        assert_int_equal(store_collection_create(store, &c), STORE_OK);
        uint8_t pepper[APIKEY_PEPPER_LEN] = {1};
        struct store_apikey rec = {0};
        char secret[APIKEY_LEN + 1];
        assert_int_equal(
                apikey_create(store, pepper, c.id, "k", 10, "[]", &rec, secret),
                STORE_OK);

        /* Use it through the server; the guard writes the use when it
         * is freed (a server: at shutdown), then a fresh one serves. */
        char err[200];
        int64_t used;
        char addr[64];
        assert_int_equal(
                keyguard_last_use(store, rec.id, &used, addr, sizeof addr),
                STORE_OK);
        assert_int_equal(used, 0);
        set_key(rec.id, 10, "[]", 0);
        assert_int_equal(get("/plain", NULL, NULL).status, 200);
        keyguard_free(plain);
        assert_int_equal(
                keyguard_new(store, NULL, 60000, &plain, err, sizeof err), 0);
        assert_int_equal(
                keyguard_last_use(store, rec.id, &used, addr, sizeof addr),
                STORE_OK);
        assert_true(used > 0);
        assert_string_equal(addr, "127.0.0.1");

        /* Revoke: once, then a conflict; unknown ids are not found. */
        assert_int_equal(keyguard_revoke(store, rec.id), STORE_OK);
        assert_int_equal(keyguard_revoke(store, rec.id), STORE_CONFLICT);
        assert_int_equal(keyguard_revoke(store, "key_nope"), STORE_NOT_FOUND);
        struct store_apikey back = {0};
        assert_int_equal(store_apikey_by_prefix(store, rec.prefix, &back),
                         STORE_OK);
        assert_true(back.revoked_ms > 0);
        store_apikey_clear(&back);
        store_apikey_clear(&rec);
        store_collection_clear(&c);
}

/* Allowlists are checked when saved; bad proxies refuse to start. */
static void test_validation(void **state)
{
        (void)state;
        char err[256];
        json_t *good = json_pack("[s, s]", "10.0.0.0/8", "2001:db8::1");
        char *text = keyguard_allowlist_text(good, err, sizeof err);
        assert_non_null(text);
        assert_string_equal(text, "[\"10.0.0.0/8\",\"2001:db8::1\"]");
        free(text);
        json_t *bad = json_pack("[s, s]", "10.0.0.0/8", "10.0.0.0/33");
        assert_null(keyguard_allowlist_text(bad, err, sizeof err));
        assert_non_null(strstr(err, "allowed_ips[1]"));
        assert_non_null(strstr(err, "\"10.0.0.0/33\""));
        json_t *num = json_pack("[i]", 5);
        assert_null(keyguard_allowlist_text(num, err, sizeof err));
        json_t *str = json_string("x");
        assert_null(keyguard_allowlist_text(str, err, sizeof err));
        json_decref(str);
        json_decref(good);
        json_decref(bad);
        json_decref(num);

        struct keyguard *g = NULL;
        assert_int_equal(keyguard_new(store, "10.0.0.0/8, ::g", 1000, &g, err,
                                      sizeof err),
                         -1);
        assert_null(g);
        assert_non_null(strstr(err, "trusted_proxies"));
        assert_non_null(strstr(err, "\"::g\""));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_s3_untrusted_headers),
                cmocka_unit_test(test_trusted_chain),
                cmocka_unit_test(test_rate_limit_answer),
                cmocka_unit_test(test_s5_concurrent),
                cmocka_unit_test(test_plugged_limiter),
                cmocka_unit_test(test_revoked),
                cmocka_unit_test(test_store_side),
                cmocka_unit_test(test_validation),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
