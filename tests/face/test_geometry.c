/*
 * test_geometry.c - the plane geometry of the face engine: the similarity
 * transform on known points, non-maximum suppression, box clamping, the
 * 68-to-5 landmark reduction and sampling through an affine map.
 */
#include "face/geometry.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NEAR(a, b, eps) assert_true(fabs((double)(a) - (double)(b)) < (eps))

/* Points = the template rotated by angle, scaled and moved: the fitted
 * map must send the template exactly back onto them. */
static void similarity_recovers_known_transform(void **state)
{
        const double angle = 0.3, scale = 2.5, tx = 140, ty = -17;
        struct face_point src[5];
        struct face_affine m;

        (void)state;
        for (int i = 0; i < 5; i++) {
                double x = face_geom_template112[i].x;
                double y = face_geom_template112[i].y;

                src[i].x =
                        (float)(scale * (cos(angle) * x - sin(angle) * y) + tx);
                src[i].y =
                        (float)(scale * (sin(angle) * x + cos(angle) * y) + ty);
        }
        assert_int_equal(
                face_geom_similarity(src, face_geom_template112, 5, &m), 0);
        NEAR(m.a, scale * cos(angle), 1e-4);
        NEAR(m.d, scale * sin(angle), 1e-4);
        NEAR(m.b, -m.d, 1e-9);
        NEAR(m.e, m.a, 1e-9);
        for (int i = 0; i < 5; i++) {
                struct face_point p =
                        face_geom_apply(&m, face_geom_template112[i]);

                NEAR(p.x, src[i].x, 1e-3);
                NEAR(p.y, src[i].y, 1e-3);
        }
}

/* With noise the fit is the least-squares one: moving one point moves
 * the map less than the point, and the residuals sum to zero. */
static void similarity_is_least_squares(void **state)
{
        struct face_point src[5];
        struct face_affine m;
        double rx = 0, ry = 0;

        (void)state;
        memcpy(src, face_geom_template112, sizeof src);
        src[2].x += 4; /* the nose off to one side */
        assert_int_equal(
                face_geom_similarity(src, face_geom_template112, 5, &m), 0);
        for (int i = 0; i < 5; i++) {
                struct face_point p =
                        face_geom_apply(&m, face_geom_template112[i]);

                rx += p.x - src[i].x;
                ry += p.y - src[i].y;
        }
        NEAR(rx, 0, 1e-3);
        NEAR(ry, 0, 1e-3);
        NEAR(m.c, 0.8, 0.3); /* a fifth of the shift, plus a small turn */
}

static void similarity_refuses_degenerate_points(void **state)
{
        struct face_point same[5] = {{3, 3}, {3, 3}, {3, 3}, {3, 3}, {3, 3}};
        struct face_affine m;

        (void)state;
        assert_int_equal(
                face_geom_similarity(same, face_geom_template112, 5, &m), -1);
}

static void clamp_keeps_boxes_inside(void **state)
{
        struct face_box b = {-10, -5, 700, 300, 0.9f};
        struct face_box out = {800, 900, 850, 950, 0.9f};

        (void)state;
        face_geom_clamp_box(&b, 640, 480);
        NEAR(b.x1, 0, 1e-6);
        NEAR(b.y1, 0, 1e-6);
        NEAR(b.x2, 639, 1e-6);
        NEAR(b.y2, 300, 1e-6);

        /* A box wholly outside collapses onto the edge, never inverted. */
        face_geom_clamp_box(&out, 640, 480);
        assert_true(out.x1 <= out.x2 && out.y1 <= out.y2);
        NEAR(out.x2, 639, 1e-6);
        NEAR(out.y2, 479, 1e-6);
}

static void nms_keeps_best_of_overlaps(void **state)
{
        struct face_box b[] = {
                {0, 0, 100, 100, 0.80f},     /* duplicate of the next */
                {5, 5, 105, 105, 0.95f},     /* best of face one */
                {300, 0, 400, 100, 0.90f},   /* face two */
                {320, 20, 360, 60, 0.70f},   /* part of face two */
                {150, 150, 250, 250, 0.60f}, /* face three, no overlap */
                {10, 10, 10, 50, 0.99f},     /* empty */
        };
        int n = face_geom_nms(b, 6, 0.4f, 0.6f);

        (void)state;
        assert_int_equal(n, 3);
        NEAR(b[0].score, 0.95f, 1e-6);
        NEAR(b[1].score, 0.90f, 1e-6);
        NEAR(b[2].score, 0.60f, 1e-6);
        NEAR(face_geom_iou(&b[0], &b[0]), 1, 1e-6);
}

static void nms_keeps_neighbours_that_touch(void **state)
{
        /* Two faces side by side overlap a little: both stay. */
        struct face_box b[] = {{0, 0, 100, 100, 0.9f}, {80, 0, 180, 100, 0.9f}};

        (void)state;
        assert_int_equal(face_geom_nms(b, 2, 0.4f, 0.6f), 2);
        assert_int_equal(face_geom_nms(b, 0, 0.4f, 0.6f), 0);
}

static void reduce_68_to_5(void **state)
{
        struct face_point in[68], out[5];

        (void)state;
        for (int i = 0; i < 68; i++)
                in[i] = (struct face_point){(float)i, (float)(2 * i)};
        face_geom_68_to_5(in, out);

        /* Eye centres are the means of the lid points 37, 38, 40, 41 and
         * 43, 44, 46, 47; mouth corners of 48/60 and 54/64. */
        NEAR(out[0].x, 39, 1e-5);
        NEAR(out[0].y, 78, 1e-5);
        NEAR(out[1].x, 45, 1e-5);
        NEAR(out[2].x, 30, 1e-5);
        NEAR(out[2].y, 60, 1e-5);
        NEAR(out[3].x, 54, 1e-5);
        NEAR(out[4].x, 59, 1e-5);
        NEAR(out[4].y, 118, 1e-5);
}

/* A photo of a horizontal ramp: sampling must reproduce it, halve it
 * through the pyramid and paint outside black. */
static void sample_reads_through_the_map(void **state)
{
        const int w = 256, h = 128;
        uint8_t *rgb = malloc((size_t)w * h * 3), out[16 * 3];
        struct face_image img = {w, h, rgb, "test"};
        struct face_pyramid pyr;

        (void)state;
        for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                        for (int c = 0; c < 3; c++)
                                rgb[(y * w + x) * 3 + c] = (uint8_t)x;
        assert_int_equal(face_pyramid_build(&img, &pyr), FACE_OK);
        assert_true(pyr.levels >= 3);

        /* Identity on row 10, columns 100..115. */
        struct face_affine id = {1, 0, 100, 0, 1, 10};
        face_geom_sample(&pyr, &id, 16, 1, out);
        for (int i = 0; i < 16; i++)
                assert_int_equal(out[i * 3], 100 + i);

        /* Every fourth column: read from a halved level, same values
         * within rounding. */
        struct face_affine quarter = face_geom_box_map(0, 0, 64, 4, 16, 1);
        face_geom_sample(&pyr, &quarter, 16, 1, out);
        for (int i = 0; i < 16; i++)
                NEAR(out[i * 3], 4 * i + 1.5, 1.01);

        /* A quarter turn takes the general path: down the output column
         * runs along the ramp. */
        struct face_affine turn = {0, 1, 100, 1, 0, 10};
        face_geom_sample(&pyr, &turn, 1, 16, out);
        for (int i = 0; i < 16; i++)
                assert_int_equal(out[i * 3], 100 + i);

        /* Left of the photo is black. */
        struct face_affine left = {1, 0, -40, 0, 1, 10};
        face_geom_sample(&pyr, &left, 16, 1, out);
        assert_int_equal(out[0], 0);
        face_pyramid_free(&pyr);
        free(rgb);
}

/* One tap pair of the 8.8 bilinear formula, written out plainly. */
static void ref_taps(double s, int len, int stride, int *i0, int *i1, int *w0,
                     int *w1)
{
        double fl = floor(s);
        int i = (int)fl, t = (int)lround((s - fl) * 256);

        *w0 = i < 0 || i >= len ? 0 : 256 - t;
        *w1 = i + 1 < 0 || i + 1 >= len ? 0 : t;
        *i0 = (i < 0 ? 0 : (i >= len ? len - 1 : i)) * stride;
        *i1 = (i + 1 < 0 ? 0 : (i + 1 >= len ? len - 1 : i + 1)) * stride;
}

/* The fast path of crops and scalings blends rows first and columns
 * second; it must give, to the bit, what the bilinear formula gives
 * (columns first), for any size, offset, mirror and edge. */
static void axis_aligned_sample_is_bilinear(void **state)
{
        const int w = 301, h = 203;
        uint8_t *rgb = malloc((size_t)w * h * 3);
        uint8_t *out = malloc(700 * 40 * 3);
        struct face_image img = {w, h, rgb, "test"};
        struct face_pyramid pyr;
        unsigned seed = 7;

        (void)state;
        for (int i = 0; i < w * h * 3; i++)
                rgb[i] = (uint8_t)(rand_r(&seed) >> 7);
        assert_int_equal(face_pyramid_build(&img, &pyr), FACE_OK);

        for (int run = 0; run < 200; run++) {
                /* Scales below 2 read the photo itself (level 0). */
                double a = 0.3 + 1.6 * rand_r(&seed) / RAND_MAX;
                double e = 0.3 + 1.6 * rand_r(&seed) / RAND_MAX;
                if (run % 5 == 0)
                        a = -a;
                double c = -60 + (w + 120.0) * rand_r(&seed) / RAND_MAX;
                double f = -60 + (h + 120.0) * rand_r(&seed) / RAND_MAX;
                int ow = 1 + rand_r(&seed) % 700, oh = 1 + rand_r(&seed) % 40;
                if (fabs(a * e) >= 4)
                        continue;
                struct face_affine m = {a, 0, c, 0, e, f};

                face_geom_sample(&pyr, &m, ow, oh, out);
                for (int y = 0; y < oh; y++) {
                        int r0, r1, v0, v1;
                        ref_taps(e * y + f, h, w * 3, &r0, &r1, &v0, &v1);
                        for (int x = 0; x < ow; x++) {
                                int c0, c1, u0, u1;
                                ref_taps(a * x + c, w, 3, &c0, &c1, &u0, &u1);
                                for (int ch = 0; ch < 3; ch++) {
                                        int top = u0 * rgb[r0 + c0 + ch] +
                                                  u1 * rgb[r0 + c1 + ch];
                                        int bot = u0 * rgb[r1 + c0 + ch] +
                                                  u1 * rgb[r1 + c1 + ch];
                                        int want =
                                                (v0 * top + v1 * bot + 32768) >>
                                                16;
                                        assert_int_equal(
                                                out[((size_t)y * ow + x) * 3 +
                                                    ch],
                                                want);
                                }
                        }
                }
        }
        face_pyramid_free(&pyr);
        free(out);
        free(rgb);
}

static void laplacian_tells_sharp_from_flat(void **state)
{
        uint8_t flat[16 * 16 * 3], checks[16 * 16 * 3];

        (void)state;
        memset(flat, 128, sizeof flat);
        for (int i = 0; i < 16 * 16; i++)
                memset(checks + 3 * i, ((i % 16 + i / 16) % 2) * 255, 3);
        NEAR(face_geom_laplacian_var(flat, 16, 16), 0, 1e-6);
        assert_true(face_geom_laplacian_var(checks, 16, 16) > 1000);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(similarity_recovers_known_transform),
                cmocka_unit_test(similarity_is_least_squares),
                cmocka_unit_test(similarity_refuses_degenerate_points),
                cmocka_unit_test(clamp_keeps_boxes_inside),
                cmocka_unit_test(nms_keeps_best_of_overlaps),
                cmocka_unit_test(nms_keeps_neighbours_that_touch),
                cmocka_unit_test(reduce_68_to_5),
                cmocka_unit_test(sample_reads_through_the_map),
                cmocka_unit_test(axis_aligned_sample_is_bilinear),
                cmocka_unit_test(laplacian_tells_sharp_from_flat),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
