/*
 * test_cli_face.c - the detect, compare and liveness subcommands: their
 * JSON on stdout and their exit codes (0 success, 1 our failure, 2 wrong
 * arguments, 3 the user's photo: unreadable, or no face), and the
 * --min-face option.
 *
 * Runs from the repository root with the models in .deps/models.
 */
#include "cli/cli.h"
#include "face/face.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <vips/vips.h>

#define SAMPLE3 ".deps/photos/sample3.jpg"

struct run {
        int rc;
        char out[1 << 20];
        char err[8192];
};

static struct run r;

/* Reads what fd's file holds into buf (NUL-terminated). */
static void slurp_fd(int fd, char *buf, size_t cap)
{
        ssize_t n = pread(fd, buf, cap - 1, 0);

        buf[n > 0 ? n : 0] = '\0';
}

/* Runs a subcommand with stdout and stderr captured in r. */
static void run(int (*cmd)(int, char **), int argc, char **argv)
{
        char out_name[] = "/tmp/frapi-cli-out-XXXXXX";
        char err_name[] = "/tmp/frapi-cli-err-XXXXXX";
        int out = mkstemp(out_name), err = mkstemp(err_name);
        int saved_out = dup(1), saved_err = dup(2);

        assert_true(out >= 0 && err >= 0 && saved_out >= 0 && saved_err >= 0);
        fflush(stdout);
        fflush(stderr);
        dup2(out, 1);
        dup2(err, 2);
        r.rc = cmd(argc, argv);
        fflush(stdout);
        fflush(stderr);
        dup2(saved_out, 1);
        dup2(saved_err, 2);
        slurp_fd(out, r.out, sizeof r.out);
        slurp_fd(err, r.err, sizeof r.err);
        close(saved_out);
        close(saved_err);
        close(out);
        close(err);
        unlink(out_name);
        unlink(err_name);
}

static json_t *parse_out(void)
{
        json_error_t e;
        json_t *doc = json_loads(r.out, 0, &e);

        if (!doc)
                fail_msg("stdout is not JSON (%s): %.200s", e.text, r.out);
        return doc;
}

static void detect_prints_every_face(void **state)
{
        char *argv[] = {SAMPLE3};
        json_t *doc, *face;

        (void)state;
        run(cli_detect, 1, argv);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        assert_int_equal(json_integer_value(json_object_get(doc, "count")), 3);
        assert_int_equal(json_array_size(json_object_get(doc, "faces")), 3);
        face = json_array_get(json_object_get(doc, "faces"), 0);
        assert_non_null(json_object_get(face, "box"));
        assert_int_equal(json_array_size(json_object_get(face, "points5")), 5);
        assert_int_equal(json_array_size(json_object_get(face, "landmarks")),
                         68);
        assert_non_null(json_object_get(face, "quality"));
        assert_non_null(json_object_get(face, "attributes"));
        assert_true(json_is_true(
                json_object_get(json_object_get(face, "liveness"), "live")));
        json_decref(doc);
}

/* The side of a face's box in the JSON answer. */
static double box_side(json_t *face)
{
        json_t *b = json_object_get(face, "box");

        return json_real_value(json_object_get(b, "y2")) -
               json_real_value(json_object_get(b, "y1"));
}

/* --min-face between the largest face of sample3 and the next keeps only
 * the largest; compare takes the option too. */
static void min_face_drops_smaller_faces(void **state)
{
        char *plain[] = {SAMPLE3};
        char value[32], joined[48];
        char *option[] = {"--min-face", value, SAMPLE3};
        char *one_arg[] = {joined, SAMPLE3};
        char *cmp[] = {SAMPLE3, "--min-face", value, SAMPLE3};
        json_t *doc, *faces;
        double first, second;

        (void)state;
        run(cli_detect, 1, plain);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        faces = json_object_get(doc, "faces");
        assert_int_equal(json_array_size(faces), 3);
        first = box_side(json_array_get(faces, 0));
        second = box_side(json_array_get(faces, 1));
        json_decref(doc);
        if (first - second < 20)
                fail_msg("sample3's two largest faces are %.0f and %.0f "
                         "pixels, too close to set a bound between",
                         first, second);
        snprintf(value, sizeof value, "%d", (int)((first + second) / 2));
        snprintf(joined, sizeof joined, "--min-face=%s", value);

        run(cli_detect, 3, option);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        faces = json_object_get(doc, "faces");
        assert_int_equal(json_integer_value(json_object_get(doc, "count")), 1);
        assert_true(fabs(box_side(json_array_get(faces, 0)) - first) < 2);
        json_decref(doc);

        run(cli_liveness, 2, one_arg);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        assert_int_equal(json_integer_value(json_object_get(doc, "count")), 1);
        json_decref(doc);

        run(cli_compare, 4, cmp);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        assert_int_equal(json_integer_value(json_object_get(doc, "faces_a")),
                         1);
        assert_int_equal(json_integer_value(json_object_get(doc, "faces_b")),
                         1);
        json_decref(doc);
}

static void compare_same_photo_matches(void **state)
{
        char *argv[] = {SAMPLE3, SAMPLE3};
        json_t *doc;

        (void)state;
        run(cli_compare, 2, argv);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        assert_true(json_real_value(json_object_get(doc, "similarity")) >
                    0.999);
        assert_true(json_is_true(json_object_get(doc, "match")));
        assert_true(fabs(json_real_value(json_object_get(doc, "threshold")) -
                         FACE_DEFAULT_MATCH_THRESHOLD) < 1e-6);
        json_decref(doc);
}

/* The woman on the right of sample1 is the largest face of sample3, in
 * another photo; sample5's largest face is someone else. */
static void compare_across_photos(void **state)
{
        char crop_name[] = "/tmp/frapi-crop-XXXXXX";
        char *same[] = {crop_name, SAMPLE3};
        char *other[] = {".deps/photos/sample5.jpg", SAMPLE3};
        VipsImage *photo, *crop;
        json_t *doc;
        int fd = mkstemp(crop_name);

        (void)state;
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(VIPS_INIT("test_cli_face"), 0);
        photo = vips_image_new_from_file(".deps/photos/sample1.jpg", NULL);
        assert_non_null(photo);
        assert_int_equal(vips_crop(photo, &crop, 1300, 100, 520, 520, NULL), 0);
        assert_int_equal(vips_jpegsave(crop, crop_name, NULL), 0);
        g_object_unref(crop);
        g_object_unref(photo);
        run(cli_compare, 2, same);
        unlink(crop_name);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        assert_int_equal(json_integer_value(json_object_get(doc, "faces_a")),
                         1);
        assert_true(json_is_true(json_object_get(doc, "match")));
        json_decref(doc);

        run(cli_compare, 2, other);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        assert_true(json_is_false(json_object_get(doc, "match")));
        json_decref(doc);
}

static void liveness_scores_each_face(void **state)
{
        char *argv[] = {SAMPLE3};
        json_t *doc, *faces;

        (void)state;
        run(cli_liveness, 1, argv);
        assert_int_equal(r.rc, CLI_OK);
        doc = parse_out();
        faces = json_object_get(doc, "faces");
        assert_int_equal(json_array_size(faces), 3);
        for (size_t i = 0; i < 3; i++) {
                json_t *l =
                        json_object_get(json_array_get(faces, i), "liveness");
                double s = json_real_value(json_object_get(l, "score"));

                assert_true(s >= 0 && s <= 1);
        }
        json_decref(doc);
}

static void bad_photos_exit_3(void **state)
{
        char *not_image[] = {"tests/face/test_cli_face.c"};
        char *missing[] = {"/nonexistent/photo.jpg"};
        char blank_name[] = "/tmp/frapi-blank-XXXXXX";
        char *blank[] = {blank_name};
        char *cmp[] = {SAMPLE3, blank_name};
        int fd = mkstemp(blank_name);
        VipsImage *black, *white;

        (void)state;
        run(cli_detect, 1, not_image);
        assert_int_equal(r.rc, CLI_BAD_INPUT);
        assert_non_null(strstr(r.err, "tests/face/test_cli_face.c"));
        assert_non_null(strstr(r.err, "UNSUPPORTED"));

        run(cli_detect, 1, missing);
        assert_int_equal(r.rc, CLI_BAD_INPUT);
        assert_non_null(strstr(r.err, "/nonexistent/photo.jpg"));

        /* A white photo has no face: the answer is printed, the exit is 3. */
        assert_true(fd >= 0);
        close(fd);
        assert_int_equal(VIPS_INIT("test_cli_face"), 0);
        assert_int_equal(vips_black(&black, 64, 64, "bands", 3, NULL), 0);
        assert_int_equal(
                vips_linear1(black, &white, 1, 255, "uchar", TRUE, NULL), 0);
        assert_int_equal(vips_pngsave(white, blank_name, NULL), 0);
        g_object_unref(white);
        g_object_unref(black);
        run(cli_detect, 1, blank);
        assert_int_equal(r.rc, CLI_BAD_INPUT);
        assert_non_null(strstr(r.err, "no face"));

        run(cli_compare, 2, cmp);
        assert_int_equal(r.rc, CLI_BAD_INPUT);
        assert_non_null(strstr(r.err, blank_name));
        assert_non_null(strstr(r.err, "no face"));
        unlink(blank_name);
}

static void wrong_arguments_exit_2(void **state)
{
        char *one[] = {SAMPLE3};

        (void)state;
        run(cli_detect, 0, one);
        assert_int_equal(r.rc, CLI_USAGE);
        assert_non_null(strstr(r.err, "usage"));
        run(cli_compare, 1, one);
        assert_int_equal(r.rc, CLI_USAGE);

        setenv("FRAPI_THREADS", "lots", 1);
        run(cli_detect, 1, one);
        unsetenv("FRAPI_THREADS");
        assert_int_equal(r.rc, CLI_USAGE);
        assert_non_null(strstr(r.err, "FRAPI_THREADS"));

        /* A smallest face outside 20..20000 pixels, or no value. */
        const char *bad_min_face[] = {"19", "20001", "abc", "-30", "40px", ""};
        for (size_t i = 0; i < sizeof bad_min_face / sizeof *bad_min_face;
             i++) {
                char *opt[] = {"--min-face", (char *)bad_min_face[i], SAMPLE3};

                run(cli_detect, 3, opt);
                assert_int_equal(r.rc, CLI_USAGE);
                assert_non_null(strstr(r.err, "--min-face"));
                assert_string_equal(r.out, "");
        }
        char *no_value[] = {SAMPLE3, "--min-face"};
        run(cli_detect, 2, no_value);
        assert_int_equal(r.rc, CLI_USAGE);
        assert_non_null(strstr(r.err, "--min-face"));
        char *unknown[] = {"--min-faces=40", SAMPLE3};
        run(cli_detect, 2, unknown);
        assert_int_equal(r.rc, CLI_USAGE);
        assert_non_null(strstr(r.err, "--min-faces"));
        setenv("FRAPI_MIN_FACE", "10", 1);
        run(cli_detect, 1, one);
        unsetenv("FRAPI_MIN_FACE");
        assert_int_equal(r.rc, CLI_USAGE);
        assert_non_null(strstr(r.err, "FRAPI_MIN_FACE"));
}

static void missing_models_exit_1(void **state)
{
        char *one[] = {SAMPLE3};

        (void)state;
        setenv("FRAPI_MODEL_DIR", "/nonexistent/models", 1);
        run(cli_detect, 1, one);
        unsetenv("FRAPI_MODEL_DIR");
        assert_int_equal(r.rc, CLI_INTERNAL);
        assert_non_null(strstr(r.err, "/nonexistent/models"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(detect_prints_every_face),
                cmocka_unit_test(min_face_drops_smaller_faces),
                cmocka_unit_test(compare_same_photo_matches),
                cmocka_unit_test(compare_across_photos),
                cmocka_unit_test(liveness_scores_each_face),
                cmocka_unit_test(bad_photos_exit_3),
                cmocka_unit_test(wrong_arguments_exit_2),
                cmocka_unit_test(missing_models_exit_1),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
