/*
 * test_engine.c - the face engine on real photos: the number of faces in
 * each group photo, a face cut out and re-encoded matching itself and no
 * neighbour, rotated faces (bad-inputs row F1), small faces (row F2),
 * concurrent use, and the engine's refusals.
 *
 * Runs from the repository root with the models in .deps/models and the
 * photos in .deps/photos.
 */
#include "face/face.h"

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <vips/vips.h>

static struct face_engine *eng;

/* Faces a person counts in .deps/photos/sampleN.jpg (looked at one by
 * one: every face, including the ones turned aside or looking down). */
static const int people_in_sample[6] = {3, 3, 3, 4, 5, 4};

static int setup(void **state)
{
        struct face_engine_config cfg;
        char err[512];

        (void)state;
        if (VIPS_INIT("test_engine"))
                return -1;
        face_engine_config_default(&cfg);
        if (face_engine_new(&cfg, &eng, err, sizeof err) != FACE_OK) {
                fprintf(stderr, "engine: %s\n", err);
                return -1;
        }
        return 0;
}

static int teardown(void **state)
{
        (void)state;
        face_engine_free(eng);
        return 0;
}

static struct face_image decode_bytes(const void *data, size_t len)
{
        struct face_image img;
        enum face_status st = face_image_decode(data, len, NULL, &img);

        if (st != FACE_OK)
                fail_msg("decode: %s", face_status_code(st));
        return img;
}

static struct face_image load(const char *path)
{
        gchar *data;
        gsize len;
        struct face_image img;

        if (!g_file_get_contents(path, &data, &len, NULL))
                fail_msg("cannot read %s", path);
        img = decode_bytes(data, len);
        g_free(data);
        return img;
}

static struct face_list analyze(const struct face_image *img, unsigned want)
{
        struct face_list list;
        enum face_status st = face_engine_analyze(eng, img, want, 0, &list);

        if (st != FACE_OK)
                fail_msg("analyze: %s", face_status_code(st));
        return list;
}

/* A libvips view of a decoded photo (borrows its pixels). */
static VipsImage *as_vips(const struct face_image *img)
{
        return vips_image_new_from_memory(
                img->rgb, (size_t)img->width * img->height * 3, img->width,
                img->height, 3, VIPS_FORMAT_UCHAR);
}

/* Encodes im as a JPEG of the given quality and decodes it back through
 * the engine's own decoder, as an upload would be. */
static struct face_image reencode(VipsImage *im, int quality)
{
        void *buf;
        size_t len;
        struct face_image img;

        if (vips_jpegsave_buffer(im, &buf, &len, "Q", quality, NULL))
                fail_msg("jpegsave: %s", vips_error_buffer());
        img = decode_bytes(buf, len);
        g_free(buf);
        return img;
}

static void sample_photos_have_every_face(void **state)
{
        (void)state;
        for (int i = 0; i < 6; i++) {
                char path[64];
                struct face_image img;
                struct face_list list;

                snprintf(path, sizeof path, ".deps/photos/sample%d.jpg", i + 1);
                img = load(path);
                list = analyze(&img, 0);
                if (list.count != people_in_sample[i])
                        fail_msg("%s: %d faces found, %d people in it", path,
                                 list.count, people_in_sample[i]);

                /* Boxes are inside the photo, largest first. */
                for (int k = 0; k < list.count; k++) {
                        const struct face_box *b = &list.faces[k].box;

                        assert_true(b->x1 >= 0 && b->y1 >= 0);
                        assert_true(b->x2 <= img.width - 1);
                        assert_true(b->y2 <= img.height - 1);
                        assert_true(b->x2 > b->x1 && b->y2 > b->y1);
                        assert_true(b->score > 0 && b->score <= 1);
                        if (k > 0) {
                                const struct face_box *p =
                                        &list.faces[k - 1].box;

                                assert_true((b->x2 - b->x1) * (b->y2 - b->y1) <=
                                            (p->x2 - p->x1) * (p->y2 - p->y1));
                        }
                }
                face_list_free(&list);
                face_image_free(&img);
        }
}

/* The largest face of img, which must have one. */
static struct face largest_face(const struct face_image *img)
{
        struct face_list list = analyze(img, FACE_WANT_EMBEDDING);
        struct face f;

        if (list.count < 1)
                fail_msg("no face in a %dx%d variant", img->width, img->height);
        f = list.faces[0];
        face_list_free(&list);
        return f;
}

/* Cuts each face out of a group photo with some context, makes three
 * uploads of it (half size, JPEG quality 60, mirrored) and checks each
 * matches the face it came from and no other person in the photo. */
static void check_cutouts(const char *path)
{
        struct face_image img = load(path);
        struct face_list all =
                analyze(&img, FACE_WANT_EMBEDDING | FACE_WANT_QUALITY);
        VipsImage *photo = as_vips(&img);
        int profiles = 0;

        assert_true(all.count >= 3);
        for (int k = 0; k < all.count; k++) {
                const struct face_box *b = &all.faces[k].box;

                /* A face turned aside (sample2's first woman is in full
                 * profile) fails the quality gate and is not enrolled; it
                 * still serves as a neighbour that must not match. */
                if (fabsf(all.faces[k].quality.yaw) > 60) {
                        profiles++;
                        continue;
                }
                float w = b->x2 - b->x1;
                int x = (int)fmaxf(0, b->x1 - w / 2);
                int y = (int)fmaxf(0, b->y1 - w / 2);
                int cw = (int)fminf(img.width - x, 2 * w);
                int ch = (int)fminf(img.height - y, 2 * w);
                VipsImage *cut, *small, *flipped;
                struct face_image v[3];

                if (vips_crop(photo, &cut, x, y, cw, ch, NULL) ||
                    vips_resize(cut, &small, 0.5, NULL) ||
                    vips_flip(cut, &flipped, VIPS_DIRECTION_HORIZONTAL, NULL))
                        fail_msg("vips: %s", vips_error_buffer());
                v[0] = reencode(small, 90);
                v[1] = reencode(cut, 60);
                v[2] = reencode(flipped, 90);

                for (int i = 0; i < 3; i++) {
                        struct face f = largest_face(&v[i]);

                        for (int j = 0; j < all.count; j++) {
                                float s = face_similarity(
                                        f.embedding, all.faces[j].embedding);

                                if ((j == k) !=
                                    (s >= FACE_DEFAULT_MATCH_THRESHOLD))
                                        fail_msg(
                                                "%s face %d variant %d vs face "
                                                "%d: similarity %.3f",
                                                path, k, i, j, s);
                        }
                        face_image_free(&v[i]);
                }
                g_object_unref(flipped);
                g_object_unref(small);
                g_object_unref(cut);
        }
        if (all.count - profiles < 2)
                fail_msg("%s: only %d faces not in profile", path,
                         all.count - profiles);
        g_object_unref(photo);
        face_list_free(&all);
        face_image_free(&img);
}

static void cutout_matches_itself_only(void **state)
{
        (void)state;
        for (int i = 1; i <= 6; i++) {
                char path[64];

                snprintf(path, sizeof path, ".deps/photos/sample%d.jpg", i);
                check_cutouts(path);
        }
}

static void similarity_is_symmetric_with_top_at_self(void **state)
{
        struct face_image img = load(".deps/photos/sample3.jpg");
        struct face_list l = analyze(&img, FACE_WANT_EMBEDDING);

        (void)state;
        assert_true(l.count >= 2);
        assert_true(l.faces[0].have & FACE_WANT_EMBEDDING);
        assert_true(fabsf(face_similarity(l.faces[0].embedding,
                                          l.faces[0].embedding) -
                          1.0f) < 1e-4f);
        assert_true(
                face_similarity(l.faces[0].embedding, l.faces[1].embedding) ==
                face_similarity(l.faces[1].embedding, l.faces[0].embedding));
        face_list_free(&l);
        face_image_free(&img);
}

/* The face nearest the top-left of sample6 (its first person), cut out
 * with context, as the subject of the rotation and size tests. */
static VipsImage *one_face(struct face_image *img, int margin_pct)
{
        struct face_list l;
        VipsImage *photo, *cut;
        struct face_box b;

        *img = load(".deps/photos/sample6.jpg");
        l = analyze(img, 0);
        assert_true(l.count > 0);
        b = l.faces[0].box;
        face_list_free(&l);
        float w = b.x2 - b.x1, m = w * margin_pct / 100;
        int x = (int)fmaxf(0, b.x1 - m), y = (int)fmaxf(0, b.y1 - m);
        int side =
                (int)fminf(fminf(img->width - x, img->height - y), w + 2 * m);
        photo = as_vips(img);
        if (vips_crop(photo, &cut, x, y, side, side, NULL))
                fail_msg("vips: %s", vips_error_buffer());
        g_object_unref(photo);
        return cut;
}

/* A face cut by the photo's edge (the crop starts inside the face, on
 * the left and then on top) is still found and still matches: the
 * alignment reads black beyond the edge. */
static void face_at_the_border_still_matches(void **state)
{
        struct face_image img = load(".deps/photos/sample6.jpg");
        struct face_list l = analyze(&img, FACE_WANT_EMBEDDING);
        VipsImage *photo = as_vips(&img);
        struct face_box b;

        (void)state;
        assert_true(l.count > 0);
        b = l.faces[0].box;
        for (int side = 0; side < 2; side++) {
                float w = b.x2 - b.x1;
                int x = (int)(side == 0 ? b.x1 + 0.08f * w : b.x1 - 0.3f * w);
                int y = (int)(side == 0 ? b.y1 - 0.3f * w : b.y1 + 0.08f * w);
                int cw = (int)fminf(img.width - x, 1.6f * w);
                int ch = (int)fminf(img.height - y, 1.6f * w);
                VipsImage *cut;
                struct face_image v;
                struct face f;

                if (vips_crop(photo, &cut, x, y, cw, ch, NULL))
                        fail_msg("vips: %s", vips_error_buffer());
                v = reencode(cut, 90);
                f = largest_face(&v);
                /* The face's box reaches (nearly) to the cut edge. */
                assert_true((side == 0 ? f.box.x1 : f.box.y1) < 0.1f * w);
                if (face_similarity(f.embedding, l.faces[0].embedding) <
                    FACE_DEFAULT_MATCH_THRESHOLD)
                        fail_msg("cut on side %d: similarity %.3f", side,
                                 face_similarity(f.embedding,
                                                 l.faces[0].embedding));
                face_image_free(&v);
                g_object_unref(cut);
        }
        g_object_unref(photo);
        face_list_free(&l);
        face_image_free(&img);
}

/*
 * Row F1: pixels rotated without an EXIF tag.  The engine does not search
 * rotations (docs/engine.md): the answer is a success, with the face or
 * without it, never an error; and a face found on its side or upside
 * down never matches the upright face, so it cannot cause a false
 * accept.
 */
static void rotated_face_is_handled(void **state)
{
        struct face_image src, up;
        VipsImage *cut = one_face(&src, 30);
        struct face upright;

        (void)state;
        up = reencode(cut, 90);
        upright = largest_face(&up);
        for (int r = 1; r <= 3; r++) {
                VipsImage *rot;
                struct face_image img;
                struct face_list l;

                if (vips_rot(cut, &rot, (VipsAngle)r, NULL))
                        fail_msg("vips: %s", vips_error_buffer());
                img = reencode(rot, 90);
                assert_int_equal(face_engine_analyze(
                                         eng, &img, FACE_WANT_EMBEDDING, 0, &l),
                                 FACE_OK);
                assert_true(l.count <= 1);
                for (int i = 0; i < l.count; i++)
                        assert_true(face_similarity(l.faces[i].embedding,
                                                    upright.embedding) <
                                    FACE_DEFAULT_MATCH_THRESHOLD);
                face_list_free(&l);
                face_image_free(&img);
                g_object_unref(rot);
        }
        face_image_free(&up);
        g_object_unref(cut);
        face_image_free(&src);
}

/* Row F2: 40x40 and 80x80 crops are found and flagged too small. */
static void small_crops_are_too_small(void **state)
{
        struct face_image src;
        VipsImage *cut = one_face(&src, 5);
        const int sides[2] = {40, 80};

        (void)state;
        for (int i = 0; i < 2; i++) {
                VipsImage *small;
                struct face_image img;
                struct face_list l;
                const char *names[4];
                int n;

                if (vips_resize(cut, &small,
                                (double)sides[i] / vips_image_get_width(cut),
                                NULL))
                        fail_msg("vips: %s", vips_error_buffer());
                img = reencode(small, 90);
                l = analyze(&img, FACE_WANT_QUALITY);
                assert_int_equal(l.count, 1);
                assert_true(l.faces[0].quality.reasons & FACE_Q_TOO_SMALL);
                n = face_quality_reason_names(l.faces[0].quality.reasons,
                                              names);
                assert_true(n >= 1);
                assert_string_equal(names[0], "too_small");
                face_list_free(&l);
                face_image_free(&img);
                g_object_unref(small);
        }
        g_object_unref(cut);
        face_image_free(&src);
}

/* Row F2: one face of about 30 pixels in a 4000-pixel-wide photo. */
static void tiny_face_in_large_photo_is_found(void **state)
{
        struct face_image src, img;
        VipsImage *cut = one_face(&src, 10), *tiny, *big;
        struct face_list l;
        double scale = 33.0 / vips_image_get_width(cut);
        double grey[3] = {120, 130, 125};

        (void)state;
        if (vips_resize(cut, &tiny, scale, NULL) ||
            vips_embed(tiny, &big, 2900, 1700, 4000, 3000, "extend",
                       VIPS_EXTEND_BACKGROUND, "background",
                       vips_array_double_new(grey, 3), NULL))
                fail_msg("vips: %s", vips_error_buffer());
        img = reencode(big, 90);
        l = analyze(&img, 0);
        assert_int_equal(l.count, 1);
        assert_true(l.faces[0].box.x1 > 2880 && l.faces[0].box.x2 < 2950);
        assert_true(l.faces[0].box.y1 > 1680 && l.faces[0].box.y2 < 1750);
        face_list_free(&l);
        face_image_free(&img);
        g_object_unref(big);
        g_object_unref(tiny);
        g_object_unref(cut);
        face_image_free(&src);
}

static void everything_is_computed_when_asked(void **state)
{
        struct face_image img = load(".deps/photos/sample3.jpg");
        struct face_list l = analyze(&img, FACE_WANT_ALL);

        (void)state;
        assert_int_equal(l.count, 3);
        for (int i = 0; i < l.count; i++) {
                const struct face *f = &l.faces[i];

                assert_int_equal(f->have & FACE_WANT_ALL, FACE_WANT_ALL);
                assert_true(f->liveness >= 0 && f->liveness <= 1);
                assert_true(f->attr.age > 5 && f->attr.age < 90);
                assert_non_null(f->attr.gender);
                assert_non_null(f->attr.expression);
                assert_true(fabsf(f->quality.yaw) < 60);
                assert_true(f->quality.score >= 0 && f->quality.score <= 1);

                /* The eyes lie inside the box, above the mouth. */
                assert_true(f->points5[0].x > f->box.x1 &&
                            f->points5[1].x < f->box.x2);
                assert_true(f->points5[0].y < f->points5[3].y);
        }
        face_list_free(&l);
        face_image_free(&img);
}

static void max_faces_keeps_the_largest(void **state)
{
        struct face_image img = load(".deps/photos/sample5.jpg");
        struct face_list all = analyze(&img, 0), two;

        (void)state;
        assert_int_equal(face_engine_analyze(eng, &img, 0, 2, &two), FACE_OK);
        assert_int_equal(two.count, 2);
        assert_memory_equal(&two.faces[0].box, &all.faces[0].box,
                            sizeof(struct face_box));
        assert_memory_equal(&two.faces[1].box, &all.faces[1].box,
                            sizeof(struct face_box));
        face_list_free(&two);
        face_list_free(&all);
        face_image_free(&img);
}

struct worker {
        const struct face_image *img;
        struct face_list out;
        enum face_status st;
};

static void *work(void *arg)
{
        struct worker *w = arg;

        w->st = face_engine_analyze(eng, w->img, FACE_WANT_EMBEDDING, 0,
                                    &w->out);
        return NULL;
}

/* Two threads on one engine get the same answer as one thread. */
static void threads_share_the_engine(void **state)
{
        struct face_image img = load(".deps/photos/sample2.jpg");
        struct face_list ref = analyze(&img, FACE_WANT_EMBEDDING);
        struct worker w[2] = {{&img, {0}, FACE_ERR_INTERNAL},
                              {&img, {0}, FACE_ERR_INTERNAL}};
        pthread_t t[2];

        (void)state;
        for (int i = 0; i < 2; i++)
                assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
        for (int i = 0; i < 2; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(w[i].st, FACE_OK);
                assert_int_equal(w[i].out.count, ref.count);
                for (int k = 0; k < ref.count; k++)
                        assert_true(face_similarity(w[i].out.faces[k].embedding,
                                                    ref.faces[k].embedding) >
                                    0.9999f);
                face_list_free(&w[i].out);
        }
        face_list_free(&ref);
        face_image_free(&img);
}

static void blank_photo_has_no_face(void **state)
{
        struct face_image img = {640, 480, calloc(640 * 480, 3), "test"};
        struct face_list l;

        (void)state;
        memset(img.rgb, 255, 640 * 480 * 3);
        l = analyze(&img, FACE_WANT_ALL);
        assert_int_equal(l.count, 0);
        assert_null(l.faces);
        face_list_free(&l);
        free(img.rgb);
}

static void engine_refuses_what_it_cannot_use(void **state)
{
        struct face_engine_config cfg;
        struct face_engine *e = (struct face_engine *)&cfg;
        struct face_image empty = {0};
        struct face_list l;
        char err[512] = "";

        (void)state;
        face_engine_config_default(&cfg);
        cfg.model_dir = "/nonexistent/models";
        assert_int_equal(face_engine_new(&cfg, &e, err, sizeof err),
                         FACE_ERR_INTERNAL);
        assert_null(e);
        assert_non_null(strstr(err, "/nonexistent/models/fr_detect.onnx"));

        face_engine_config_default(&cfg);
        cfg.threads = 0;
        assert_int_equal(face_engine_new(&cfg, &e, NULL, 0), FACE_ERR_INTERNAL);

        assert_int_equal(face_engine_analyze(eng, &empty, 0, 0, &l),
                         FACE_ERR_IMAGE_TOO_SMALL);
        assert_int_equal(l.count, 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(sample_photos_have_every_face),
                cmocka_unit_test(cutout_matches_itself_only),
                cmocka_unit_test(similarity_is_symmetric_with_top_at_self),
                cmocka_unit_test(face_at_the_border_still_matches),
                cmocka_unit_test(rotated_face_is_handled),
                cmocka_unit_test(small_crops_are_too_small),
                cmocka_unit_test(tiny_face_in_large_photo_is_found),
                cmocka_unit_test(everything_is_computed_when_asked),
                cmocka_unit_test(max_faces_keeps_the_largest),
                cmocka_unit_test(threads_share_the_engine),
                cmocka_unit_test(blank_photo_has_no_face),
                cmocka_unit_test(engine_refuses_what_it_cannot_use),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
