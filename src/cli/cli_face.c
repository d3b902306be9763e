/*
 * cli_face.c - the `detect`, `compare` and `liveness` subcommands: run the
 * face engine on photo files and print what it found as JSON on stdout.
 * Problems with the user's photos go to stderr with exit code 3, our own
 * failures with 1, wrong arguments with 2.  `--min-face N` (or
 * FRAPI_MIN_FACE) sets the smallest face side in pixels the engine
 * reports, as the server's min_face setting does.
 */
#include "cli/cli.h"
#include "config/config.h"
#include "face/face.h"
#include "util/file.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads a smallest face side from text through the server's own
 * min_face setting (the same range and checks); source names it for the
 * message.  Returns CLI_OK or CLI_USAGE with a message. */
static int parse_min_face(const char *text, const char *source, int *out)
{
        struct config *c = malloc(sizeof *c);
        char err[256];
        int rc = CLI_USAGE;

        if (!c) {
                fprintf(stderr, "frapi: out of memory\n");
                return CLI_INTERNAL;
        }
        config_default(c);
        if (config_set(c, "min_face", text, source, err, sizeof err) == 0) {
                *out = c->min_face;
                rc = CLI_OK;
        } else {
                fprintf(stderr, "frapi: %s\n", err);
        }
        free(c);
        return rc;
}

/* The engine configuration from the environment.  Returns CLI_OK or
 * CLI_USAGE with a message. */
static int config_from_env(struct face_engine_config *cfg)
{
        const char *dir = getenv("FRAPI_MODEL_DIR");
        const char *threads = getenv("FRAPI_THREADS");
        const char *min_face = getenv("FRAPI_MIN_FACE");

        static char fallback[4096];

        face_engine_config_default(cfg);
        cfg->model_dir = config_model_dir_default(fallback, sizeof fallback);
        if (dir && *dir)
                cfg->model_dir = dir;
        if (threads && *threads) {
                char *end;
                long t = strtol(threads, &end, 10);

                if (*end || t < 1 || t > 256) {
                        fprintf(stderr,
                                "frapi: FRAPI_THREADS must be a whole number "
                                "from 1 to 256, not '%s'\n",
                                threads);
                        return CLI_USAGE;
                }
                cfg->threads = (int)t;
        }
        if (min_face && *min_face)
                return parse_min_face(min_face, "FRAPI_MIN_FACE",
                                      &cfg->min_face);
        return CLI_OK;
}

/*
 * Takes the options out of argv: `--min-face N` (or `--min-face=N`) sets
 * *min_face; what is left are the photos, moved to the front, their
 * number in *argc.  Returns CLI_OK, or CLI_USAGE with a message for an
 * unknown option or a bad value.
 */
static int take_options(int *argc, char **argv, int *min_face)
{
        int photos = 0;

        for (int i = 0; i < *argc; i++) {
                const char *arg = argv[i];

                if (strcmp(arg, "--min-face") == 0) {
                        if (i + 1 == *argc) {
                                fprintf(stderr,
                                        "frapi: --min-face needs a value\n");
                                return CLI_USAGE;
                        }
                        int rc = parse_min_face(argv[++i], "--min-face",
                                                min_face);
                        if (rc != CLI_OK)
                                return rc;
                } else if (strncmp(arg, "--min-face=", 11) == 0) {
                        int rc = parse_min_face(arg + 11, "--min-face",
                                                min_face);
                        if (rc != CLI_OK)
                                return rc;
                } else if (strncmp(arg, "--", 2) == 0) {
                        fprintf(stderr, "frapi: unknown option '%s'\n", arg);
                        return CLI_USAGE;
                } else {
                        argv[photos++] = argv[i];
                }
        }
        *argc = photos;
        return CLI_OK;
}

/* Starts the engine configured by the environment, with min_face (when
 * not 0) as the smallest face. */
static int open_engine(struct face_engine **eng, int min_face)
{
        struct face_engine_config cfg;
        char err[512];
        int rc = config_from_env(&cfg);

        if (rc != CLI_OK)
                return rc;
        if (min_face)
                cfg.min_face = min_face;
        if (face_engine_new(&cfg, eng, err, sizeof err) != FACE_OK) {
                fprintf(stderr, "frapi: the face engine did not start: %s\n",
                        err);
                return CLI_INTERNAL;
        }
        return CLI_OK;
}

/* Reads, decodes and analyzes one photo.  Returns a CLI exit code; on
 * CLI_OK the caller frees img and list. */
static int analyze_photo(struct face_engine *eng, const char *path,
                         unsigned want, struct face_image *img,
                         struct face_list *list)
{
        const struct face_engine_config *cfg = face_engine_config(eng);
        unsigned char *data;
        size_t len;
        enum face_status st;

        memset(list, 0, sizeof *list);
        int err = file_read(path, cfg->limits.max_bytes, &data, &len);
        if (err == ENOMEM) {
                fprintf(stderr, "frapi: out of memory reading '%s'\n", path);
                return CLI_INTERNAL;
        }
        if (err) {
                fprintf(stderr, "frapi: cannot read photo '%s': %s\n", path,
                        err == EFBIG ? face_status_message(FACE_ERR_TOO_LARGE)
                                     : strerror(err));
                return CLI_BAD_INPUT;
        }
        st = face_image_decode(data, len, &cfg->limits, img);
        free(data);
        if (st == FACE_ERR_NOMEM || st == FACE_ERR_INTERNAL) {
                fprintf(stderr, "frapi: %s: %s\n", path,
                        face_status_message(st));
                return CLI_INTERNAL;
        }
        if (st != FACE_OK) {
                fprintf(stderr, "frapi: %s: %s (%s)\n", path,
                        face_status_message(st), face_status_code(st));
                return CLI_BAD_INPUT;
        }

        st = face_engine_analyze(eng, img, want, 0, list);
        if (st != FACE_OK) {
                fprintf(stderr, "frapi: %s: %s (%s)\n", path,
                        face_status_message(st), face_status_code(st));
                face_image_free(img);
                return st == FACE_ERR_IMAGE_TOO_SMALL ? CLI_BAD_INPUT
                                                      : CLI_INTERNAL;
        }
        return CLI_OK;
}

static json_t *box_json(const struct face_box *b)
{
        return json_pack("{s:f, s:f, s:f, s:f, s:f}", "x1", (double)b->x1, "y1",
                         (double)b->y1, "x2", (double)b->x2, "y2",
                         (double)b->y2, "score", (double)b->score);
}

static json_t *points_json(const struct face_point *p, int n)
{
        json_t *a = json_array();

        for (int i = 0; i < n; i++)
                json_array_append_new(
                        a, json_pack("[f, f]", (double)p[i].x, (double)p[i].y));
        return a;
}

static json_t *quality_json(const struct face_quality *q)
{
        const char *names[4];
        int n = face_quality_reason_names(q->reasons, names);
        json_t *reasons = json_array();

        for (int i = 0; i < n; i++)
                json_array_append_new(reasons, json_string(names[i]));
        return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:b, s:o}", "size",
                         (double)q->size, "sharpness", (double)q->sharpness,
                         "yaw", (double)q->yaw, "pitch", (double)q->pitch,
                         "roll", (double)q->roll, "score", (double)q->score,
                         "passes", q->reasons == 0, "reasons", reasons);
}

static json_t *attributes_json(const struct face_attributes *a)
{
        return json_pack("{s:f, s:s, s:f, s:f, s:f, s:s, s:b, s:b}", "age",
                         (double)a->age, "gender", a->gender, "yaw",
                         (double)a->yaw, "pitch", (double)a->pitch, "roll",
                         (double)a->roll, "expression", a->expression,
                         "left_eye_open", a->left_eye_open, "right_eye_open",
                         a->right_eye_open);
}

static json_t *face_json(const struct face *f, float live_threshold)
{
        json_t *o = json_pack("{s:o}", "box", box_json(&f->box));

        if (f->have & FACE_WANT_LANDMARKS) {
                json_object_set_new(o, "points5", points_json(f->points5, 5));
                json_object_set_new(o, "landmarks",
                                    points_json(f->landmarks, FACE_LANDMARKS));
        }
        if ((f->have & FACE_WANT_QUALITY) == FACE_WANT_QUALITY)
                json_object_set_new(o, "quality", quality_json(&f->quality));
        if (f->have & FACE_WANT_LIVENESS)
                json_object_set_new(o, "liveness",
                                    json_pack("{s:f, s:b, s:f}", "score",
                                              (double)f->liveness, "live",
                                              f->live, "threshold",
                                              (double)live_threshold));
        if ((f->have & FACE_WANT_ATTRIBUTES) == FACE_WANT_ATTRIBUTES)
                json_object_set_new(o, "attributes", attributes_json(&f->attr));
        return o;
}

static int print_json(json_t *doc)
{
        int rc = json_dumpf(doc, stdout,
                            JSON_INDENT(2) | JSON_REAL_PRECISION(6));

        json_decref(doc);
        if (rc || fputc('\n', stdout) == EOF || fflush(stdout)) {
                fprintf(stderr, "frapi: cannot write the answer\n");
                return CLI_INTERNAL;
        }
        return CLI_OK;
}

/* detect and liveness share everything but what they ask of the engine. */
static int run_photo_command(const char *name, int argc, char **argv,
                             unsigned want)
{
        struct face_engine *eng = NULL;
        struct face_image img = {0};
        struct face_list list = {0};
        int min_face = 0;
        int rc = take_options(&argc, argv, &min_face);

        if (rc != CLI_OK)
                return rc;
        if (argc != 1) {
                fprintf(stderr, "usage: frapi %s [--min-face N] PHOTO\n", name);
                return CLI_USAGE;
        }
        rc = open_engine(&eng, min_face);
        if (rc != CLI_OK)
                return rc;
        rc = analyze_photo(eng, argv[0], want, &img, &list);
        if (rc != CLI_OK)
                goto release;

        /* No face is the user's problem, but the answer is still printed. */
        float thr = face_engine_config(eng)->liveness_threshold;
        json_t *faces = json_array();
        for (int i = 0; i < list.count; i++)
                json_array_append_new(faces, face_json(&list.faces[i], thr));
        rc = print_json(json_pack("{s:{s:i, s:i, s:s}, s:i, s:o}", "image",
                                  "width", img.width, "height", img.height,
                                  "format", img.format ? img.format : "",
                                  "count", list.count, "faces", faces));
        if (rc == CLI_OK && list.count == 0) {
                fprintf(stderr, "frapi: %s: no face found\n", argv[0]);
                rc = CLI_BAD_INPUT;
        }
        face_list_free(&list);
        face_image_free(&img);
release:
        face_engine_free(eng);
        return rc;
}

int cli_detect(int argc, char **argv)
{
        return run_photo_command("detect", argc, argv, FACE_WANT_ALL);
}

int cli_liveness(int argc, char **argv)
{
        return run_photo_command("liveness", argc, argv, FACE_WANT_LIVENESS);
}

int cli_compare(int argc, char **argv)
{
        struct face_engine *eng = NULL;
        struct face_image img[2] = {{0}};
        struct face_list list[2] = {{0}};
        int min_face = 0, done = 0;
        int rc = take_options(&argc, argv, &min_face);

        if (rc != CLI_OK)
                return rc;
        if (argc != 2) {
                fprintf(stderr, "usage: frapi compare [--min-face N] PHOTO_A "
                                "PHOTO_B\n");
                return CLI_USAGE;
        }
        rc = open_engine(&eng, min_face);
        if (rc != CLI_OK)
                return rc;

        /* The largest face of each photo stands for it. */
        for (; done < 2; done++) {
                rc = analyze_photo(eng, argv[done], FACE_WANT_EMBEDDING,
                                   &img[done], &list[done]);
                if (rc != CLI_OK)
                        goto release;
                if (list[done].count == 0) {
                        fprintf(stderr, "frapi: %s: no face found\n",
                                argv[done]);
                        rc = CLI_BAD_INPUT;
                        done++;
                        goto release;
                }
        }
        float sim = face_similarity(list[0].faces[0].embedding,
                                    list[1].faces[0].embedding);
        rc = print_json(json_pack(
                "{s:f, s:b, s:f, s:s, s:o, s:o, s:i, s:i}", "similarity",
                (double)sim, "match", sim >= FACE_DEFAULT_MATCH_THRESHOLD,
                "threshold", (double)FACE_DEFAULT_MATCH_THRESHOLD,
                "model_version", FACE_MODEL_VERSION, "box_a",
                box_json(&list[0].faces[0].box), "box_b",
                box_json(&list[1].faces[0].box), "faces_a", list[0].count,
                "faces_b", list[1].count));
release:
        for (int i = 0; i < done; i++) {
                face_list_free(&list[i]);
                face_image_free(&img[i]);
        }
        face_engine_free(eng);
        return rc;
}
