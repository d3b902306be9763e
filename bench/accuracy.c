/*
 * accuracy - face verification accuracy on a directory of photos and a
 * pairs file in the LFW format.
 *
 *   build/bench/accuracy [--folds N | --folds file] DIR PAIRS
 *
 * DIR holds NAME/NAME_NNNN.jpg; PAIRS starts with "FOLDS N", then per fold
 * N lines "name i j" (same person) and N lines "name1 i name2 j"
 * (different people).  The face nearest the centre of each photo is
 * used.  Prints k-fold accuracy (the threshold is chosen on the other
 * folds and tested on the held-out one) with its standard deviation, the
 * threshold of each fold and their mean, the true-accept rate at a
 * false-accept rate of 1e-3, and the rates at FACE_DEFAULT_MATCH_THRESHOLD.
 *
 * The folds: by default the pairs are dealt into 10 folds (--folds N for
 * another number), the same-person pairs and the different-people pairs
 * each in turn in file order, so every fold has the balance of the whole
 * file and the split is the same on every run.  --folds file keeps the
 * folds the file has (LFW's own folds keep each person in one fold).
 *
 * FRAPI_MODEL_DIR and FRAPI_THREADS configure the engine as for frapi.
 */
#include "face/face.h"
#include "util/file.h"
#include "util/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct photo {
        char *path;
        int ok; /* a face was found */
        float emb[FACE_EMBEDDING_DIM];
};

struct pair {
        int a, b; /* photo indexes */
        int same; /* 1 = same person */
        int fold;
        float sim;
};

static struct photo *photos;
static int n_photos, cap_photos;

static int by_path(const void *a, const void *b)
{
        return strcmp(((const struct photo *)a)->path,
                      ((const struct photo *)b)->path);
}

/* Index of path in photos, adding it if new (photos sorted later). */
static int photo_add(const char *path)
{
        for (int i = n_photos - 1; i >= 0 && i >= n_photos - 4; i--)
                if (strcmp(photos[i].path, path) == 0)
                        return i;
        if (n_photos == cap_photos) {
                cap_photos = cap_photos ? cap_photos * 2 : 1024;
                photos = realloc(photos, (size_t)cap_photos * sizeof *photos);
                if (!photos) {
                        perror("accuracy");
                        exit(1);
                }
        }
        memset(&photos[n_photos], 0, sizeof photos[n_photos]);
        photos[n_photos].path = strdup(path);
        return n_photos++;
}

static int photo_find(const char *path)
{
        struct photo key = {.path = (char *)path};
        struct photo *p = bsearch(&key, photos, (size_t)n_photos,
                                  sizeof *photos, by_path);
        return p ? (int)(p - photos) : -1;
}

static void photo_path(char *out, size_t len, const char *dir, const char *name,
                       int num)
{
        snprintf(out, len, "%s/%s/%s_%04d.jpg", dir, name, name, num);
}

/* Reads the pairs file; pair photo indexes are resolved after sorting. */
static struct pair *read_pairs(const char *dir, const char *file, int *n_pairs,
                               int *n_folds, char ***names)
{
        FILE *f = fopen(file, "r");
        int folds, per;
        struct pair *pairs;
        char line[512];

        if (!f || !fgets(line, sizeof line, f) ||
            sscanf(line, "%d %d", &folds, &per) != 2 || folds < 1 || per < 1) {
                fprintf(stderr, "accuracy: %s is not an LFW pairs file\n",
                        file);
                exit(2);
        }
        *n_pairs = folds * per * 2;
        *n_folds = folds;
        pairs = calloc((size_t)*n_pairs, sizeof *pairs);
        *names = calloc((size_t)*n_pairs * 2, sizeof **names);
        for (int i = 0; i < *n_pairs; i++) {
                char n1[200], n2[200], p[1024];
                int a, b;

                if (!fgets(line, sizeof line, f)) {
                        fprintf(stderr, "accuracy: %s ends early\n", file);
                        exit(2);
                }
                pairs[i].fold = i / (2 * per);
                if (sscanf(line, "%199s %d %199s %d", n1, &a, n2, &b) == 4) {
                        pairs[i].same = 0;
                } else if (sscanf(line, "%199s %d %d", n1, &a, &b) == 3) {
                        strcpy(n2, n1);
                        pairs[i].same = 1;
                } else {
                        fprintf(stderr, "accuracy: bad line %d in %s\n", i + 2,
                                file);
                        exit(2);
                }
                photo_path(p, sizeof p, dir, n1, a);
                (*names)[2 * i] = strdup(p);
                photo_add(p);
                photo_path(p, sizeof p, dir, n2, b);
                (*names)[2 * i + 1] = strdup(p);
                photo_add(p);
        }
        fclose(f);
        return pairs;
}

/* The bytes of one photo (at most 64 MB), or NULL. */
static unsigned char *read_photo(const char *path, size_t *len)
{
        unsigned char *bytes;
        return file_read(path, (size_t)64 << 20, &bytes, len) ? NULL : bytes;
}

/* Embeds the face nearest the centre of one photo. */
static void embed_photo(struct face_engine *eng, struct photo *ph)
{
        size_t len;
        unsigned char *bytes = read_photo(ph->path, &len);
        struct face_image img = {0};
        struct face_list list = {0};
        float best = INFINITY;

        if (!bytes || face_image_decode(bytes, len, NULL, &img) != FACE_OK ||
            face_engine_analyze(eng, &img, FACE_WANT_EMBEDDING, 0, &list) !=
                    FACE_OK) {
                fprintf(stderr, "accuracy: cannot read %s\n", ph->path);
                goto release;
        }
        for (int i = 0; i < list.count; i++) {
                const struct face_box *b = &list.faces[i].box;
                float dx = (b->x1 + b->x2) / 2 - img.width / 2.0f;
                float dy = (b->y1 + b->y2) / 2 - img.height / 2.0f;

                if (dx * dx + dy * dy < best) {
                        best = dx * dx + dy * dy;
                        memcpy(ph->emb, list.faces[i].embedding,
                               sizeof ph->emb);
                        ph->ok = 1;
                }
        }
release:
        face_list_free(&list);
        face_image_free(&img);
        free(bytes);
}

static int by_sim(const void *a, const void *b)
{
        float x = *(const float *)a, y = *(const float *)b;
        return (x > y) - (x < y);
}

/* Accuracy of "same iff sim >= thr" over the pairs of fold == fold
 * (use_fold) or fold != fold (!use_fold). */
static double accuracy_at(const struct pair *p, int n, float thr, int fold,
                          int use_fold)
{
        int right = 0, total = 0;

        for (int i = 0; i < n; i++) {
                if ((p[i].fold == fold) != use_fold)
                        continue;
                total++;
                right += (p[i].sim >= thr) == p[i].same;
        }
        return total ? (double)right / total : 0;
}

/*
 * Deals the pairs into n_folds folds: the j-th same-person pair of the
 * file goes to fold j % n_folds, and so does the j-th different-people
 * pair, so each fold holds the file's share of each class.
 */
static void refold(struct pair *p, int n, int n_folds)
{
        int dealt[2] = {0, 0};

        for (int i = 0; i < n; i++)
                p[i].fold = dealt[p[i].same]++ % n_folds;
}

/* Reads --folds: a number of folds from 2 to 1000, or "file" (0). */
static int parse_folds(const char *v)
{
        char *end;
        long n;

        if (strcmp(v, "file") == 0)
                return 0;
        n = strtol(v, &end, 10);
        if (end == v || *end || n < 2 || n > 1000) {
                fprintf(stderr,
                        "accuracy: --folds takes a number of folds from 2 "
                        "to 1000 or \"file\", not '%s'\n",
                        v);
                exit(2);
        }
        return (int)n;
}

/* The threshold (midway between neighbouring scores) with the best
 * accuracy on the folds other than fold. */
static float best_threshold(const struct pair *p, int n, int fold)
{
        float *s = malloc(sizeof(float) * (size_t)n);
        int m = 0;
        float best_t = 0.5f;
        double best_acc = -1;

        for (int i = 0; i < n; i++)
                if (p[i].fold != fold)
                        s[m++] = p[i].sim;
        qsort(s, (size_t)m, sizeof *s, by_sim);
        for (int i = 0; i + 1 < m; i++) {
                float t = (s[i] + s[i + 1]) / 2;
                double acc = accuracy_at(p, n, t, fold, 0);

                if (acc > best_acc) {
                        best_acc = acc;
                        best_t = t;
                }
        }
        free(s);
        return best_t;
}

static void report_rates(const struct pair *p, int n, float thr,
                         const char *what)
{
        int ta = 0, same = 0, fa = 0, diff = 0;

        for (int i = 0; i < n; i++) {
                if (p[i].same) {
                        same++;
                        ta += p[i].sim >= thr;
                } else {
                        diff++;
                        fa += p[i].sim >= thr;
                }
        }
        printf("%s %.3f: TAR %.4f (%d/%d), FAR %.4f (%d/%d)\n", what, thr,
               (double)ta / same, ta, same, (double)fa / diff, fa, diff);
}

int main(int argc, char **argv)
{
        struct face_engine_config cfg;
        struct face_engine *eng;
        struct pair *pairs;
        char **names, err[512];
        int n_pairs, n_folds, failed = 0, folds = 10;
        double sum = 0, sum2 = 0, tsum = 0;
        struct timespec t0, t1;

        /* --folds N, --folds=N or --folds file, before DIR PAIRS. */
        if (argc >= 2 && strncmp(argv[1], "--folds=", 8) == 0) {
                folds = parse_folds(argv[1] + 8);
                argc--, argv++;
        } else if (argc >= 3 && strcmp(argv[1], "--folds") == 0) {
                folds = parse_folds(argv[2]);
                argc -= 2, argv += 2;
        }
        if (argc != 3) {
                fprintf(stderr,
                        "usage: accuracy [--folds N | --folds file] DIR "
                        "PAIRS\n");
                return 2;
        }
        log_set_level(-1);
        face_engine_config_default(&cfg);
        if (getenv("FRAPI_MODEL_DIR"))
                cfg.model_dir = getenv("FRAPI_MODEL_DIR");
        if (getenv("FRAPI_THREADS"))
                cfg.threads = atoi(getenv("FRAPI_THREADS"));
        if (face_engine_new(&cfg, &eng, err, sizeof err) != FACE_OK) {
                fprintf(stderr, "accuracy: %s\n", err);
                return 1;
        }
        pairs = read_pairs(argv[1], argv[2], &n_pairs, &n_folds, &names);
        if (folds) {
                int same = 0;

                for (int i = 0; i < n_pairs; i++)
                        same += pairs[i].same;
                if (folds > same || folds > n_pairs - same) {
                        fprintf(stderr,
                                "accuracy: %d folds need at least %d pairs of "
                                "each kind; %s has %d same and %d different\n",
                                folds, folds, argv[2], same, n_pairs - same);
                        return 2;
                }
                refold(pairs, n_pairs, folds);
                n_folds = folds;
        }

        /* Embed every photo once. */
        qsort(photos, (size_t)n_photos, sizeof *photos, by_path);
        int uniq = 0;
        for (int i = 0; i < n_photos; i++) {
                if (uniq &&
                    strcmp(photos[uniq - 1].path, photos[i].path) == 0) {
                        free(photos[i].path);
                        continue;
                }
                photos[uniq++] = photos[i];
        }
        n_photos = uniq;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n_photos; i++) {
                embed_photo(eng, &photos[i]);
                failed += !photos[i].ok;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);

        /* A photo without a face scores 0 against anything. */
        for (int i = 0; i < n_pairs; i++) {
                int a = photo_find(names[2 * i]),
                    b = photo_find(names[2 * i + 1]);

                pairs[i].a = a;
                pairs[i].b = b;
                pairs[i].sim =
                        photos[a].ok && photos[b].ok
                                ? face_similarity(photos[a].emb, photos[b].emb)
                                : 0.0f;
        }

        /* k-fold: the threshold of each fold is chosen on the others. */
        printf("photos %d (no face found in %d), pairs %d, folds %d (%s), "
               "%.1f ms per photo\n",
               n_photos, failed, n_pairs, n_folds,
               folds ? "dealt evenly by kind" : "the file's own",
               ((t1.tv_sec - t0.tv_sec) * 1e3 +
                (t1.tv_nsec - t0.tv_nsec) / 1e6) /
                       n_photos);
        for (int k = 0; k < n_folds; k++) {
                float t = best_threshold(pairs, n_pairs, k);
                double acc = accuracy_at(pairs, n_pairs, t, k, 1);

                printf("fold %d: threshold %.4f accuracy %.4f\n", k + 1, t,
                       acc);
                sum += acc;
                sum2 += acc * acc;
                tsum += t;
        }
        double mean = sum / n_folds;
        double sd = n_folds > 1 ? sqrt(fmax(0, (sum2 - n_folds * mean * mean) /
                                                       (n_folds - 1)))
                                : 0;
        printf("accuracy %.2f %% +- %.2f (%d-fold), mean threshold %.4f\n",
               mean * 100, sd * 100, n_folds, tsum / n_folds);

        /* TAR at FAR 1e-3: the threshold above all but 0.1 % of impostor
         * scores (with few impostor pairs, above all of them). */
        float *imp = malloc(sizeof(float) * (size_t)n_pairs);
        int n_imp = 0;
        for (int i = 0; i < n_pairs; i++)
                if (!pairs[i].same)
                        imp[n_imp++] = pairs[i].sim;
        qsort(imp, (size_t)n_imp, sizeof *imp, by_sim);
        int allowed = (int)floor(n_imp * 1e-3);
        float far_thr = nextafterf(imp[n_imp - 1 - allowed], 2.0f);
        report_rates(pairs, n_pairs, far_thr, "at FAR<=1e-3, threshold");
        report_rates(pairs, n_pairs, FACE_DEFAULT_MATCH_THRESHOLD,
                     "at the default threshold");
        for (int t = 30; t <= 60; t += 5)
                report_rates(pairs, n_pairs, t / 100.0f, "at threshold");
        free(imp);

        for (int i = 0; i < 2 * n_pairs; i++)
                free(names[i]);
        free(names);
        free(pairs);
        for (int i = 0; i < n_photos; i++)
                free(photos[i].path);
        free(photos);
        face_engine_free(eng);
        return 0;
}
