/*
 * bench/batch.c - a 100-image batch enroll against 100 single enrolls,
 * over real HTTP on loopback.
 *
 *   build/bench/batch MODEL_DIR PHOTO_DIR [N]
 *
 * Starts the API in this process (default settings: 2 recognition slots,
 * 1 inference thread per run) on a throwaway data directory, takes the
 * first N (default 100) JPEG files found under PHOTO_DIR (for example
 * /work/shared/data/lfw-dev/images), then times
 *   1. N single POST /api/v1/faces calls from one client, one after the
 *      other;
 *   2. the same N calls from two client threads;
 *   3. one POST /api/v1/faces/batch with the N images.
 * Each run has its own collection.  The goal: the batch at least 1.5
 * times faster than the one-client singles on 2 cores.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <jansson.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "api/api.h"
#include "api/batch.h"
#include "api/keyguard.h"
#include "auth/apikey.h"
#include "store/store_sqlite.h"
#include "util/file.h"
#include "util/log.h"

#define MAX_FILES 1000

static char *files[MAX_FILES];
static size_t nfiles;
static char base[64];

static double now_s(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds this process used so far (every thread, server included). */
static double cpu_s(void)
{
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
               (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int by_name(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects .jpg files under dir, depth first, in name order. */
static void collect(const char *dir, size_t want)
{
        struct dirent **list;
        int n = scandir(dir, &list, NULL, alphasort);
        for (int i = 0; i < n; i++) {
                char path[4096];
                const char *name = list[i]->d_name;
                struct stat st;
                snprintf(path, sizeof path, "%s/%s", dir, name);
                if (name[0] != '.' && nfiles < want && stat(path, &st) == 0) {
                        size_t len = strlen(name);
                        if (S_ISDIR(st.st_mode))
                                collect(path, want);
                        else if (len > 4 && strcmp(name + len - 4, ".jpg") == 0)
                                files[nfiles++] = strdup(path);
                }
                free(list[i]);
        }
        free(list);
}

/* The bytes of one photo (at most 64 MB), or NULL. */
static unsigned char *read_photo(const char *path, size_t *len)
{
        unsigned char *bytes;
        return file_read(path, (size_t)64 << 20, &bytes, len) ? NULL : bytes;
}

static size_t sink(char *p, size_t size, size_t n, void *ud)
{
        (void)p;
        (void)ud;
        return size * n;
}

/* One enroll of file i with key; returns the HTTP status. */
static long enroll_one(CURL *c, const char *key, size_t i)
{
        char url[128], hdr[96];
        snprintf(url, sizeof url, "%s/api/v1/faces", base);
        snprintf(hdr, sizeof hdr, "X-API-Key: %s", key);
        struct curl_slist *hs = curl_slist_append(NULL, hdr);
        curl_mime *mime = curl_mime_init(c);
        curl_mimepart *p = curl_mime_addpart(mime);
        curl_mime_name(p, "image");
        curl_mime_filedata(p, files[i]);
        p = curl_mime_addpart(mime);
        curl_mime_name(p, "name");
        curl_mime_data(p, "Bench", CURL_ZERO_TERMINATED);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
        long status = 0;
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_mime_free(mime);
        curl_slist_free_all(hs);
        return status;
}

struct client {
        const char *key;
        size_t from, step;
        int ok;
};

static void *client_run(void *arg)
{
        struct client *cl = arg;
        CURL *c = curl_easy_init();
        for (size_t i = cl->from; i < nfiles; i += cl->step)
                cl->ok += enroll_one(c, cl->key, i) == 201;
        curl_easy_cleanup(c);
        return NULL;
}

/* N singles from nclients threads; returns seconds. */
static double singles(const char *key, int nclients, int *ok)
{
        pthread_t th[8];
        struct client cl[8];
        double t0 = now_s();
        for (int k = 0; k < nclients; k++) {
                cl[k] = (struct client){key, (size_t)k, (size_t)nclients, 0};
                pthread_create(&th[k], NULL, client_run, &cl[k]);
        }
        *ok = 0;
        for (int k = 0; k < nclients; k++) {
                pthread_join(th[k], NULL);
                *ok += cl[k].ok;
        }
        return now_s() - t0;
}

/* One batch of every file; returns seconds (body building excluded). */
static double batch(const char *key, int *ok)
{
        json_t *items = json_array();
        for (size_t i = 0; i < nfiles; i++) {
                size_t len = 0;
                unsigned char *bytes = read_photo(files[i], &len);
                size_t cap = sodium_base64_ENCODED_LEN(
                        len, sodium_base64_VARIANT_ORIGINAL);
                char *b64 = malloc(cap);
                sodium_bin2base64(b64, cap, bytes, len,
                                  sodium_base64_VARIANT_ORIGINAL);
                json_array_append_new(items, json_pack("{s:s, s:s}", "image",
                                                       b64, "name", "Bench"));
                free(b64);
                free(bytes);
        }
        char *body = json_dumps(json_pack("{s:o}", "items", items), 0);

        char url[128], hdr[96];
        snprintf(url, sizeof url, "%s/api/v1/faces/batch", base);
        snprintf(hdr, sizeof hdr, "X-API-Key: %s", key);
        struct curl_slist *hs = curl_slist_append(NULL, hdr);
        hs = curl_slist_append(hs, "Content-Type: application/json");
        char *resp = NULL;
        size_t resp_len = 0;
        FILE *out = open_memstream(&resp, &resp_len);
        CURL *c = curl_easy_init();
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        double t0 = now_s();
        curl_easy_perform(c);
        double dt = now_s() - t0;
        fclose(out);
        json_t *r = json_loads(resp, 0, NULL);
        *ok = (int)json_integer_value(
                json_object_get(json_object_get(r, "data"), "succeeded"));
        json_decref(r);
        free(resp);
        curl_easy_cleanup(c);
        curl_slist_free_all(hs);
        free(body);
        return dt;
}

/* A new collection and key on s; the key into key. */
static int tenant(struct store *s, const uint8_t *pepper,
                  char key[APIKEY_LEN + 1])
{
        struct store_collection c = {.name = strdup("bench")};
        struct store_apikey rec = {0};
        int rc =
                store_collection_create(s, &c) == STORE_OK &&
                                apikey_create(s, pepper, c.id, "bench", 1000000,
                                              "[]", &rec, key) == STORE_OK
                        ? 0
                        : -1;
        store_apikey_clear(&rec);
        store_collection_clear(&c);
        return rc;
}

int main(int argc, char **argv)
{
        char dir[] = "/tmp/frapi-bench-batch-XXXXXX", err[512];
        if (argc < 3) {
                fprintf(stderr, "usage: batch MODEL_DIR PHOTO_DIR [N]\n");
                return 2;
        }
        size_t want = argc > 3 ? (size_t)atoi(argv[3]) : 100;
        if (want < 1 || want > BATCH_ENROLL_MAX)
                want = 100;
        collect(argv[2], want);
        qsort(files, nfiles, sizeof files[0], by_name);
        if (nfiles < want) {
                fprintf(stderr, "batch: only %zu JPEG files under %s\n", nfiles,
                        argv[2]);
                return 2;
        }

        /* The service as `frapi serve` builds it, in this process. */
        log_set_level(-1);
        struct store *s;
        struct face_engine *eng;
        struct face_engine_config ecfg;
        struct api api;
        struct keyguard *guard;
        uint8_t pepper[APIKEY_PEPPER_LEN];
        if (sodium_init() < 0 || !mkdtemp(dir) ||
            store_sqlite_open(dir, &s, err, sizeof err) != STORE_OK ||
            apikey_pepper_load(dir, pepper, err, sizeof err) != 0) {
                fprintf(stderr, "batch: %s\n", err);
                return 1;
        }
        face_engine_config_default(&ecfg);
        ecfg.model_dir = argv[1];
        if (face_engine_new(&ecfg, &eng, err, sizeof err) != FACE_OK ||
            api_init(&api, s, eng, pepper, err, sizeof err) != 0 ||
            keyguard_new(s, NULL, 10000, &guard, err, sizeof err) != 0) {
                fprintf(stderr, "batch: %s\n", err);
                return 1;
        }
        keyauth_add_check(api.keyauth, keyguard_check, guard);
        struct http_config hcfg;
        http_config_default(&hcfg);
        hcfg.listen = "127.0.0.1:0";
        hcfg.access_log = "";
        struct http_server *srv = http_server_new(&hcfg, err, sizeof err);
        api_register(&api, srv);
        if (http_server_start(srv, err, sizeof err) != 0) {
                fprintf(stderr, "batch: %s\n", err);
                return 1;
        }
        snprintf(base, sizeof base, "http://127.0.0.1:%u",
                 http_server_port(srv));
        curl_global_init(CURL_GLOBAL_ALL);

        /* Warm the engine up once, then the three runs. */
        char k0[APIKEY_LEN + 1], k1[APIKEY_LEN + 1], k2[APIKEY_LEN + 1],
                k3[APIKEY_LEN + 1];
        tenant(s, pepper, k0);
        tenant(s, pepper, k1);
        tenant(s, pepper, k2);
        tenant(s, pepper, k3);
        CURL *c = curl_easy_init();
        enroll_one(c, k0, 0);
        curl_easy_cleanup(c);
        int ok1, ok2, okb;
        double c0 = cpu_s();
        double t1 = singles(k1, 1, &ok1);
        double c1 = cpu_s();
        double t2 = singles(k2, 2, &ok2);
        double c2 = cpu_s();
        double tb = batch(k3, &okb);
        double c3 = cpu_s();
        printf("%zu images from %s\n", nfiles, argv[2]);
        printf("singles, 1 client:  %.2f s (%.1f ms each), %d enrolled, "
               "%.2f s CPU\n",
               t1, t1 * 1000 / nfiles, ok1, c1 - c0);
        printf("singles, 2 clients: %.2f s (%.1f ms each), %d enrolled, "
               "%.2f s CPU\n",
               t2, t2 * 1000 / nfiles, ok2, c2 - c1);
        printf("one batch:          %.2f s (%.1f ms each), %d enrolled, "
               "%.2f s CPU\n",
               tb, tb * 1000 / nfiles, okb, c3 - c2);
        printf("batch speed-up: %.2fx over 1 client, %.2fx over 2 clients\n",
               t1 / tb, t2 / tb);

        http_server_free(srv);
        keyguard_free(guard);
        api_fini(&api);
        face_engine_free(eng);
        store_close(s);
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : 1;
}
