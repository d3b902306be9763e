/*
 * bench/http - the face API over real HTTP.
 *
 *   build/bench/http PHOTO_A PHOTO_B [ROUNDS]
 *
 * PHOTO_A and PHOTO_B are two one-face JPEGs (640x480 for the documented
 * figures).  The bench makes a throwaway data directory, a collection and
 * a key with `build/frapi`, starts `build/frapi serve` on a free port, and
 * measures:
 *
 *   1. POST /api/v1/verify with both photos, one request at a time:
 *      median and 90th percentile latency over ROUNDS (default 40);
 *   2. POST /api/v1/faces (enroll PHOTO_A) throughput with one client
 *      thread, then two, and the ratio, in five interleaved rounds of 24
 *      enrolls per thread (medians, and the range of the ratios);
 *   3. GET /api/v1/faces/{id} requests per second under wrk (2 threads,
 *      32 connections, 5 s), when wrk is installed.
 *
 * Run from the repository root (models in .deps/models).
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FRAPI "build/frapi"

static char base[64];
static char key_header[128];
static const char *photo_a, *photo_b;

struct buf {
        char *data;
        size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *userdata)
{
        struct buf *b = userdata;
        char *d = realloc(b->data, b->len + size * n + 1);
        if (!d)
                return 0;
        memcpy(d + b->len, p, size * n);
        b->len += size * n;
        d[b->len] = '\0';
        b->data = d;
        return size * n;
}

static double now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

/* Runs a shell command and returns its stdout (caller frees), or NULL. */
static char *run_capture(const char *cmd)
{
        FILE *p = popen(cmd, "r");
        struct buf b = {0};
        char chunk[4096];
        size_t n;
        if (!p)
                return NULL;
        while ((n = fread(chunk, 1, sizeof chunk, p)) > 0)
                on_data(chunk, 1, n, &b);
        if (pclose(p) != 0) {
                free(b.data);
                return NULL;
        }
        return b.data;
}

/* The string field name of a JSON text (caller frees), or NULL. */
static char *json_field(const char *text, const char *path1, const char *path2)
{
        json_t *doc = json_loads(text ? text : "", 0, NULL);
        json_t *v = json_object_get(doc, path1);
        if (path2)
                v = json_object_get(v, path2);
        char *out = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
        json_decref(doc);
        return out;
}

/* One multipart POST; returns the HTTP status and fills *body. */
static long post_form(CURL *c, const char *path, const char *const *names,
                      const char *const *files, int nfiles,
                      const char *name_field, struct buf *body)
{
        char url[256];
        struct curl_slist *h = curl_slist_append(NULL, key_header);
        curl_mime *mime = curl_mime_init(c);
        long status = 0;

        for (int i = 0; i < nfiles; i++) {
                curl_mimepart *part = curl_mime_addpart(mime);
                curl_mime_name(part, names[i]);
                curl_mime_filedata(part, files[i]);
        }
        if (name_field) {
                curl_mimepart *part = curl_mime_addpart(mime);
                curl_mime_name(part, "name");
                curl_mime_data(part, name_field, CURL_ZERO_TERMINATED);
        }
        snprintf(url, sizeof url, "%s%s", base, path);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_MIMEPOST, mime);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_setopt(c, CURLOPT_MIMEPOST, NULL);
        curl_mime_free(mime);
        curl_slist_free_all(h);
        return status;
}

/* Enrolls PHOTO_A `count` times; returns the number that succeeded. */
static void *enroll_worker(void *arg)
{
        long *count = arg;
        CURL *c = curl_easy_init();
        const char *names[] = {"image"};
        const char *files[] = {photo_a};
        long ok = 0;
        for (long i = 0; i < *count; i++) {
                struct buf b = {0};
                if (post_form(c, "/api/v1/faces", names, files, 1, "Bench",
                              &b) == 201)
                        ok++;
                free(b.data);
        }
        curl_easy_cleanup(c);
        *count = ok;
        return NULL;
}

/* Enroll throughput with `threads` clients, in faces per second. */
static double enroll_rate(int threads, long per_thread)
{
        pthread_t tid[2];
        long counts[2];
        double t0 = now_ms();
        for (int t = 0; t < threads; t++) {
                counts[t] = per_thread;
                pthread_create(&tid[t], NULL, enroll_worker, &counts[t]);
        }
        long ok = 0;
        for (int t = 0; t < threads; t++) {
                pthread_join(tid[t], NULL);
                ok += counts[t];
        }
        double secs = (now_ms() - t0) / 1e3;
        if (ok != threads * per_thread)
                fprintf(stderr, "http: only %ld of %ld enrolls succeeded\n", ok,
                        threads * per_thread);
        return ok / secs;
}

/* Waits until /readyz answers 200; returns 0 or -1. */
static int wait_ready(void)
{
        char url[128];
        snprintf(url, sizeof url, "%s/readyz", base);
        for (int i = 0; i < 300; i++) {
                CURL *c = curl_easy_init();
                struct buf b = {0};
                long status = 0;
                curl_easy_setopt(c, CURLOPT_URL, url);
                curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
                curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
                if (curl_easy_perform(c) == CURLE_OK)
                        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
                curl_easy_cleanup(c);
                free(b.data);
                if (status == 200)
                        return 0;
                usleep(100000);
        }
        return -1;
}

int main(int argc, char **argv)
{
        char dir[] = "/tmp/frapi-bench-http-XXXXXX", cmd[1024];
        int rounds = argc > 3 ? atoi(argv[3]) : 40;
        pid_t server = -1;
        int rc = 1;

        if (argc < 3 || rounds < 1) {
                fprintf(stderr, "usage: http PHOTO_A PHOTO_B [ROUNDS]\n");
                return 2;
        }
        photo_a = argv[1];
        photo_b = argv[2];
        curl_global_init(CURL_GLOBAL_DEFAULT);

        /* A collection and a key with a limit no bench reaches. */
        if (!mkdtemp(dir))
                return 1;
        snprintf(cmd, sizeof cmd,
                 FRAPI " collections create bench --data-dir %s 2>/dev/null",
                 dir);
        char *out = run_capture(cmd);
        char *col = json_field(out, "id", NULL);
        free(out);
        snprintf(cmd, sizeof cmd,
                 FRAPI " keys create --collection %s --rpm 1000000 "
                       "--data-dir %s 2>/dev/null",
                 col ? col : "-", dir);
        out = run_capture(cmd);
        char *key = json_field(out, "key", NULL);
        free(out);
        free(col);
        if (!key) {
                fprintf(stderr, "http: cannot make a key with " FRAPI "\n");
                goto out;
        }
        snprintf(key_header, sizeof key_header, "X-API-Key: %s", key);

        /* The server on a port picked from the pid, so runs do not clash. */
        int port = 20000 + getpid() % 20000;
        snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
        server = fork();
        if (server == 0) {
                char listen[64];
                snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
                setenv("FRAPI_LOG_LEVEL", "warn", 1);
                execl(FRAPI, FRAPI, "serve", "--listen", listen, "--data-dir",
                      dir, "--access-log", "", (char *)NULL);
                _exit(127);
        }
        if (server < 0 || wait_ready() != 0) {
                fprintf(stderr, "http: the server did not become ready\n");
                goto out;
        }

        /* 1. Verify latency, one request at a time on one connection. */
        CURL *c = curl_easy_init();
        const char *names[] = {"image_a", "image_b"};
        const char *files[] = {photo_a, photo_b};
        double *lat = calloc((size_t)rounds, sizeof *lat);
        struct buf warm = {0};
        post_form(c, "/api/v1/verify", names, files, 2, NULL, &warm);
        free(warm.data);
        for (int i = 0; i < rounds; i++) {
                struct buf b = {0};
                double t0 = now_ms();
                long st = post_form(c, "/api/v1/verify", names, files, 2, NULL,
                                    &b);
                lat[i] = now_ms() - t0;
                if (st != 200) {
                        fprintf(stderr, "http: verify answered %ld: %s\n", st,
                                b.data ? b.data : "");
                        free(b.data);
                        free(lat);
                        curl_easy_cleanup(c);
                        goto out;
                }
                free(b.data);
        }
        qsort(lat, (size_t)rounds, sizeof *lat, cmp_double);
        printf("verify: rounds=%d median_ms=%.1f p90_ms=%.1f\n", rounds,
               lat[rounds / 2], lat[rounds * 9 / 10]);
        free(lat);

        /* 2. Enroll throughput, one client thread and then two, in five
         * interleaved rounds: a load that comes and goes on a shared
         * machine hits both sides of a round alike.  The medians. */
        enum { ROUNDS = 5 };
        double ones[ROUNDS], twos[ROUNDS], ratios[ROUNDS];
        for (int i = 0; i < ROUNDS; i++) {
                ones[i] = enroll_rate(1, 24);
                twos[i] = enroll_rate(2, 24);
                ratios[i] = twos[i] / ones[i];
        }
        qsort(ones, ROUNDS, sizeof ones[0], cmp_double);
        qsort(twos, ROUNDS, sizeof twos[0], cmp_double);
        qsort(ratios, ROUNDS, sizeof ratios[0], cmp_double);
        printf("enroll: 1_thread=%.1f/s 2_threads=%.1f/s ratio=%.2f "
               "(median of %d rounds; ratios %.2f-%.2f)\n",
               ones[ROUNDS / 2], twos[ROUNDS / 2], ratios[ROUNDS / 2], ROUNDS,
               ratios[0], ratios[ROUNDS - 1]);

        /* 3. GET /faces/{id} under wrk, on a face enrolled just now. */
        struct buf b = {0};
        const char *en[] = {"image"};
        const char *ef[] = {photo_a};
        post_form(c, "/api/v1/faces", en, ef, 1, "Target", &b);
        char *face = json_field(b.data, "data", "id");
        free(b.data);
        curl_easy_cleanup(c);
        if (face) {
                snprintf(cmd, sizeof cmd,
                         "wrk -t2 -c32 -d5s -H '%s' %s/api/v1/faces/%s "
                         "2>/dev/null | grep -E 'Requests/sec|Latency|Non-2xx'",
                         key_header, base, face);
                out = run_capture(cmd);
                printf("get_face (wrk -t2 -c32 -d5s):\n%s",
                       out ? out : "  wrk is not installed or failed\n");
                free(out);
                free(face);
        }
        rc = 0;
out:
        if (server > 0) {
                kill(server, SIGTERM);
                waitpid(server, NULL, 0);
        }
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
                fprintf(stderr, "http: could not remove %s\n", dir);
        free(key);
        curl_global_cleanup();
        return rc;
}
