/*
 * bench/ratelimit.c - the cost of one rate-limit check.
 *
 *   build/bench/ratelimit [KEYS] [THREADS] [SECONDS]
 *   build/bench/ratelimit --http [REQUESTS]
 *
 * Checks spread over KEYS keys (default 1000) from THREADS threads
 * (default 1, then 2) for SECONDS each (default 2), with the wall clock
 * read per check as the server does.  Prints the mean nanoseconds per
 * check.  The goal is under 2 microseconds.
 *
 * With --http: starts the API in this process (no models needed) on a
 * throwaway data directory and times REQUESTS (default 20000) GET
 * /api/v1/faces/{id} over one keep-alive connection, once with the key
 * checks of the server (allowlist, rate limit, last use) and once
 * without, and prints the mean time per request of each and the share of
 * one limiter check in it.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/keyguard.h"
#include "auth/ratelimit.h"
#include "store/store_sqlite.h"

struct worker {
        struct ratelimit *rl;
        int keys;
        double seconds;
        int seed;
        long checks;
};

static double mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
        struct worker *w = arg;
        char key[32];
        unsigned r = (unsigned)w->seed;
        double end = mono() + w->seconds;
        while (1) {
                /* Check the clock every 1024 calls, not every call. */
                for (int i = 0; i < 1024; i++) {
                        r = r * 1103515245u + 12345u;
                        snprintf(key, sizeof key, "key_%u", (r >> 8) % w->keys);
                        struct ratelimit_result res;
                        ratelimit_consume(w->rl, key, 1000000000u,
                                          ratelimit_now_ms(), &res);
                }
                w->checks += 1024;
                if (mono() >= end)
                        break;
        }
        return NULL;
}

/* Runs the check loop on nthreads threads; returns ns per check per
 * thread. */
static double measure(int keys, int nthreads, double seconds)
{
        struct ratelimit *rl = ratelimit_memory_new();
        pthread_t th[64];
        struct worker w[64];
        for (int i = 0; i < nthreads; i++) {
                w[i] = (struct worker){rl, keys, seconds, i + 1, 0};
                pthread_create(&th[i], NULL, run, &w[i]);
        }
        long total = 0;
        for (int i = 0; i < nthreads; i++) {
                pthread_join(th[i], NULL);
                total += w[i].checks;
        }
        ratelimit_free(rl);
        return seconds * 1e9 * nthreads / (double)total;
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
        (void)p;
        (void)ud;
        return size * n;
}

/* Mean microseconds of n GET url with key over one connection. */
static double time_gets(const char *url, const char *key, long n)
{
        char hdr[96];
        snprintf(hdr, sizeof hdr, "X-API-Key: %s", key);
        struct curl_slist *hs = curl_slist_append(NULL, hdr);
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
        long status = 0;
        for (int i = 0; i < 200; i++)
                curl_easy_perform(c);
        double t0 = mono();
        for (long i = 0; i < n; i++)
                curl_easy_perform(c);
        double dt = mono() - t0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_cleanup(c);
        curl_slist_free_all(hs);
        if (status != 200)
                fprintf(stderr, "ratelimit: GET answered %ld\n", status);
        return dt * 1e6 / (double)n;
}

/* Starts a server of the API over s, with the key checks when guard is
 * not NULL; returns its port. */
static struct http_server *serve(struct api *api, struct keyguard *guard)
{
        char err[256];
        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.access_log = "";
        if (guard)
                keyauth_add_check(api->keyauth, keyguard_check, guard);
        struct http_server *srv = http_server_new(&cfg, err, sizeof err);
        api_register(api, srv);
        if (http_server_start(srv, err, sizeof err) != 0) {
                fprintf(stderr, "ratelimit: %s\n", err);
                exit(1);
        }
        return srv;
}

static int http_share(long n)
{
        char dir[] = "/tmp/frapi-bench-rl-XXXXXX", err[256];
        struct store *s;
        uint8_t pepper[APIKEY_PEPPER_LEN];
        if (sodium_init() < 0 || !mkdtemp(dir) ||
            store_sqlite_open(dir, &s, err, sizeof err) != STORE_OK ||
            apikey_pepper_load(dir, pepper, err, sizeof err) != 0) {
                fprintf(stderr, "ratelimit: %s\n", err);
                return 1;
        }

        /* One collection, one key with the highest limit, one face. */
        struct store_collection c = {.name = strdup("bench")};
        struct store_apikey rec = {0};
        struct store_face f = {.name = "Bench", .metadata = "{}"};
        char key[APIKEY_LEN + 1];
        store_collection_create(s, &c);
        apikey_create(s, pepper, c.id, "bench", 1000000, "[\"127.0.0.0/8\"]",
                      &rec, key);
        snprintf(f.collection_id, sizeof f.collection_id, "%s", c.id);
        f.embedding[0] = 1.0f;
        snprintf(f.model_version, sizeof f.model_version, "%s",
                 FACE_MODEL_VERSION);
        store_face_insert(s, &f, NULL, 0);

        /* Two servers on the same store: with and without the checks. */
        struct api with, without;
        struct keyguard *guard;
        if (api_init(&with, s, NULL, pepper, err, sizeof err) != 0 ||
            api_init(&without, s, NULL, pepper, err, sizeof err) != 0 ||
            keyguard_new(s, NULL, 10000, &guard, err, sizeof err) != 0) {
                fprintf(stderr, "ratelimit: %s\n", err);
                return 1;
        }
        struct http_server *a = serve(&with, guard);
        struct http_server *b = serve(&without, NULL);
        char url_a[160], url_b[160];
        snprintf(url_a, sizeof url_a, "http://127.0.0.1:%u/api/v1/faces/%s",
                 http_server_port(a), f.id);
        snprintf(url_b, sizeof url_b, "http://127.0.0.1:%u/api/v1/faces/%s",
                 http_server_port(b), f.id);
        curl_global_init(CURL_GLOBAL_ALL);
        /* Interleaved rounds, so that the load of the machine weighs on
         * both alike; the best round of each counts. */
        double us_a = 1e9, us_b = 1e9;
        for (int round = 0; round < 10; round++) {
                double x = time_gets(url_a, key, n / 10);
                double y = time_gets(url_b, key, n / 10);
                us_a = x < us_a ? x : us_a;
                us_b = y < us_b ? y : us_b;
        }
        double check = measure(1000, 1, 1.0) / 1000.0;
        printf("GET /api/v1/faces/{id}, best of 10 rounds of %ld requests, one "
               "connection:\n",
               n / 10);
        printf("  with key checks:    %.1f us per request\n", us_a);
        printf("  without key checks: %.1f us per request\n", us_b);
        printf("  one limiter check:  %.3f us = %.2f%% of a request\n", check,
               100.0 * check / us_a);

        http_server_free(a);
        http_server_free(b);
        keyguard_free(guard);
        api_fini(&with);
        api_fini(&without);
        store_apikey_clear(&rec);
        store_collection_clear(&c);
        store_close(s);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
        if (argc > 1 && strcmp(argv[1], "--http") == 0)
                return http_share(argc > 2 ? atol(argv[2]) : 20000);
        int keys = argc > 1 ? atoi(argv[1]) : 1000;
        int threads = argc > 2 ? atoi(argv[2]) : 0;
        double seconds = argc > 3 ? atof(argv[3]) : 2.0;
        if (keys < 1 || threads < 0 || threads > 64 || seconds <= 0) {
                fprintf(stderr, "usage: ratelimit [KEYS] [THREADS<=64] "
                                "[SECONDS]\n");
                return 2;
        }

        /* Key formatting is part of the loop: measure it alone to subtract. */
        double t0 = mono();
        char key[32];
        volatile unsigned sink = 0;
        for (unsigned i = 0; i < 10000000u; i++) {
                snprintf(key, sizeof key, "key_%u", i % (unsigned)keys);
                sink += (unsigned)key[4];
        }
        double fmt_ns = (mono() - t0) * 1e9 / 1e7;

        for (int n = threads ? threads : 1; n <= (threads ? threads : 2); n++) {
                double ns = measure(keys, n, seconds);
                printf("threads=%d keys=%d: %.0f ns per check (%.0f ns without "
                       "formatting the key name)\n",
                       n, keys, ns, ns - fmt_ns);
        }
        return 0;
}
