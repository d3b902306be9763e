/*
 * speed - where the time goes, photo by photo.
 *
 *   build/bench/speed [-n RUNS] PHOTO...
 *
 * For each photo, RUNS times (default 9): decode, then analyze asking for
 * the embedding and liveness of every face.  Prints the median time of
 * each stage (decode, detect, landmarks, align, embed, liveness), the
 * median of decode + analyze, the median time spent inside ONNX Runtime,
 * and the ratio of the analyze time to the model time (how much the
 * pipeline adds around the models).  Runs with one inference thread
 * unless FRAPI_THREADS says otherwise.  FRAPI_MODEL_DIR as for frapi.
 */
#include "face/face.h"
#include "face/timing.h"
#include "util/file.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
        S_DECODE,
        S_DETECT,
        S_LMK,
        S_ALIGN,
        S_EMBED,
        S_LIVE,
        S_TOTAL,
        S_ANALYZE,
        S_MODELS,
        S_N
};
static const char *const stage_names[S_N] = {
        "decode",   "detect", "landmarks", "align",  "embed",
        "liveness", "total",  "analyze",   "models",
};

static int by_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static double median(double *v, int n)
{
        qsort(v, (size_t)n, sizeof *v, by_double);
        return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The bytes of one photo (at most 64 MB), or NULL. */
static unsigned char *read_photo(const char *path, size_t *len)
{
        unsigned char *bytes;
        return file_read(path, (size_t)64 << 20, &bytes, len) ? NULL : bytes;
}

/* Times one photo runs times; returns -1 if it cannot be read. */
static int time_photo(struct face_engine *eng, const char *path, int runs)
{
        double *v[S_N];
        size_t len;
        unsigned char *bytes = read_photo(path, &len);
        int faces = 0, w = 0, h = 0, rc = -1;

        for (int s = 0; s < S_N; s++)
                v[s] = calloc((size_t)runs, sizeof(double));
        if (!bytes) {
                fprintf(stderr, "speed: cannot read %s\n", path);
                goto release;
        }

        for (int r = 0; r < runs; r++) {
                struct face_timing t = {0};
                struct face_image img = {0};
                struct face_list list = {0};
                double t0 = face_timing_now(), t1, t2;

                if (face_image_decode(bytes, len, NULL, &img) != FACE_OK) {
                        fprintf(stderr, "speed: cannot decode %s\n", path);
                        goto release;
                }
                t1 = face_timing_now();
                face_timing_record(&t);
                enum face_status st = face_engine_analyze(
                        eng, &img, FACE_WANT_EMBEDDING | FACE_WANT_LIVENESS, 0,
                        &list);
                face_timing_record(NULL);
                t2 = face_timing_now();
                if (st != FACE_OK) {
                        fprintf(stderr, "speed: analysis of %s failed\n", path);
                        face_image_free(&img);
                        goto release;
                }
                faces = list.count;
                w = img.width;
                h = img.height;
                v[S_DECODE][r] = t1 - t0;
                v[S_DETECT][r] = t.detect;
                v[S_LMK][r] = t.landmarks;
                v[S_ALIGN][r] = t.align;
                v[S_EMBED][r] = t.embed;
                v[S_LIVE][r] = t.liveness;
                v[S_TOTAL][r] = t2 - t0;
                v[S_ANALYZE][r] = t2 - t1;
                v[S_MODELS][r] = t.models;
                face_list_free(&list);
                face_image_free(&img);
        }

        /* Medians, and the overhead of the pipeline around the models. */
        double med[S_N];
        for (int s = 0; s < S_N; s++)
                med[s] = median(v[s], runs);
        printf("%s: %dx%d, %d face(s), median of %d runs (ms):\n", path, w, h,
               faces, runs);
        for (int s = 0; s < S_N; s++)
                printf("  %-10s %8.2f\n", stage_names[s], med[s]);
        printf("  analyze / models = %.3f\n",
               med[S_MODELS] > 0 ? med[S_ANALYZE] / med[S_MODELS] : 0);
        rc = 0;
release:
        for (int s = 0; s < S_N; s++)
                free(v[s]);
        free(bytes);
        return rc;
}

int main(int argc, char **argv)
{
        struct face_engine_config cfg;
        struct face_engine *eng;
        char err[512];
        int runs = 9, first = 1, rc = 0;

        if (argc > 2 && strcmp(argv[1], "-n") == 0) {
                runs = atoi(argv[2]);
                first = 3;
        }
        if (first >= argc || runs < 1) {
                fprintf(stderr, "usage: speed [-n RUNS] PHOTO...\n");
                return 2;
        }
        log_set_level(-1);
        face_engine_config_default(&cfg);
        if (getenv("FRAPI_MODEL_DIR"))
                cfg.model_dir = getenv("FRAPI_MODEL_DIR");
        if (getenv("FRAPI_THREADS"))
                cfg.threads = atoi(getenv("FRAPI_THREADS"));
        if (face_engine_new(&cfg, &eng, err, sizeof err) != FACE_OK) {
                fprintf(stderr, "speed: %s\n", err);
                return 1;
        }
        printf("inference threads: %d\n", cfg.threads);
        for (int i = first; i < argc; i++)
                if (time_photo(eng, argv[i], runs))
                        rc = 1;
        face_engine_free(eng);
        return rc;
}
