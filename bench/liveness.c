/*
 * liveness - presentation-attack detection error rates.
 *
 *   build/bench/liveness LIVE_DIR ATTACK_DIR
 *
 * Every .jpg/.jpeg/.png in LIVE_DIR is a bona fide face, every one in
 * ATTACK_DIR an attack (printed photo, screen).  The largest face of each
 * photo is scored.  Prints APCER (attacks accepted as live), BPCER (live
 * faces rejected; a live photo where no face is found counts as rejected)
 * and ACER = (APCER + BPCER) / 2 at the engine's shipped threshold, then
 * the same over a sweep of thresholds, to show where the shipped one
 * sits.  FRAPI_MODEL_DIR and FRAPI_THREADS configure the engine.
 */
#include "face/face.h"
#include "util/file.h"
#include "util/log.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct scores {
        float *v;
        int n, no_face, unreadable;
};

static int is_photo(const char *name)
{
        const char *dot = strrchr(name, '.');

        return dot &&
               (strcasecmp(dot, ".jpg") == 0 || strcasecmp(dot, ".jpeg") == 0 ||
                strcasecmp(dot, ".png") == 0);
}

/* The bytes of one photo (at most 64 MB), or NULL. */
static unsigned char *read_photo(const char *path, size_t *len)
{
        unsigned char *bytes;
        return file_read(path, (size_t)64 << 20, &bytes, len) ? NULL : bytes;
}

static int by_float(const void *a, const void *b)
{
        float x = *(const float *)a, y = *(const float *)b;
        return (x > y) - (x < y);
}

static int by_name(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Scores the largest face of every photo in dir. */
static int score_dir(struct face_engine *eng, const char *dir,
                     struct scores *out)
{
        DIR *d = opendir(dir);
        struct dirent *e;
        char **names = NULL;
        int n = 0, cap = 0;

        if (!d) {
                fprintf(stderr, "liveness: cannot open %s\n", dir);
                return -1;
        }
        while ((e = readdir(d))) {
                if (!is_photo(e->d_name))
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 256;
                        names = realloc(names, (size_t)cap * sizeof *names);
                }
                names[n++] = strdup(e->d_name);
        }
        closedir(d);
        qsort(names, (size_t)n, sizeof *names, by_name);

        memset(out, 0, sizeof *out);
        out->v = calloc((size_t)n + 1, sizeof *out->v);
        for (int i = 0; i < n; i++) {
                char path[4096];
                size_t len;
                unsigned char *bytes;
                struct face_image img = {0};
                struct face_list list = {0};

                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                bytes = read_photo(path, &len);
                if (!bytes || face_image_decode(bytes, len, NULL, &img) ||
                    face_engine_analyze(eng, &img, FACE_WANT_LIVENESS, 1,
                                        &list)) {
                        out->unreadable++;
                } else if (list.count == 0) {
                        out->no_face++;
                } else {
                        out->v[out->n++] = list.faces[0].liveness;
                }
                face_list_free(&list);
                face_image_free(&img);
                free(bytes);
                free(names[i]);
        }
        free(names);
        return 0;
}

/* Error rates at threshold t: returns ACER, sets apcer and bpcer. */
static double rates(const struct scores *live, const struct scores *attack,
                    float t, double *apcer, double *bpcer)
{
        int live_total = live->n + live->no_face + live->unreadable;
        int attack_total = attack->n + attack->no_face + attack->unreadable;
        int rejected = live->no_face + live->unreadable, accepted = 0;

        for (int i = 0; i < live->n; i++)
                rejected += live->v[i] < t;
        for (int i = 0; i < attack->n; i++)
                accepted += attack->v[i] >= t;
        *apcer = attack_total ? (double)accepted / attack_total : 0;
        *bpcer = live_total ? (double)rejected / live_total : 0;
        return (*apcer + *bpcer) / 2;
}

int main(int argc, char **argv)
{
        struct face_engine_config cfg;
        struct face_engine *eng;
        struct scores live, attack;
        char err[512];
        double apcer, bpcer, acer;

        if (argc != 3) {
                fprintf(stderr, "usage: liveness LIVE_DIR ATTACK_DIR\n");
                return 2;
        }
        log_set_level(-1);
        face_engine_config_default(&cfg);
        if (getenv("FRAPI_MODEL_DIR"))
                cfg.model_dir = getenv("FRAPI_MODEL_DIR");
        if (getenv("FRAPI_THREADS"))
                cfg.threads = atoi(getenv("FRAPI_THREADS"));
        if (face_engine_new(&cfg, &eng, err, sizeof err) != FACE_OK) {
                fprintf(stderr, "liveness: %s\n", err);
                return 1;
        }
        if (score_dir(eng, argv[1], &live) || score_dir(eng, argv[2], &attack))
                return 1;

        printf("live photos %d (no face %d, unreadable %d), attack photos %d "
               "(no face %d, unreadable %d)\n",
               live.n + live.no_face + live.unreadable, live.no_face,
               live.unreadable, attack.n + attack.no_face + attack.unreadable,
               attack.no_face, attack.unreadable);
        acer = rates(&live, &attack, cfg.liveness_threshold, &apcer, &bpcer);
        printf("at the shipped threshold %.3f: APCER %.2f %%, BPCER %.2f %%, "
               "ACER %.2f %%\n",
               cfg.liveness_threshold, apcer * 100, bpcer * 100, acer * 100);

        /* Where the two classes lie: the gap is the safe range. */
        qsort(live.v, (size_t)live.n, sizeof *live.v, by_float);
        qsort(attack.v, (size_t)attack.n, sizeof *attack.v, by_float);
        if (live.n && attack.n)
                printf("live scores: min %.4f, 1st percentile %.4f, median "
                       "%.4f; attack scores: median %.4f, 99th percentile "
                       "%.4f, max %.4f\n",
                       live.v[0], live.v[live.n / 100], live.v[live.n / 2],
                       attack.v[attack.n / 2],
                       attack.v[attack.n - 1 - attack.n / 100],
                       attack.v[attack.n - 1]);

        /* The sweep shows how wide the good range is. */
        printf("threshold  APCER%%  BPCER%%  ACER%%\n");
        for (int i = 1; i < 20; i++) {
                float t = i * 0.05f;

                acer = rates(&live, &attack, t, &apcer, &bpcer);
                printf("%9.2f %7.2f %7.2f %6.2f\n", t, apcer * 100, bpcer * 100,
                       acer * 100);
        }
        free(live.v);
        free(attack.v);
        face_engine_free(eng);
        return 0;
}
