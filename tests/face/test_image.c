/*
 * test_image.c - image decoding for the face engine: type sniffing, the
 * colour modes and orientations of rows I1 and I2 of bad-inputs.md, the
 * oversized headers of I4, the other formats of I5 and the broken files
 * of I3.  Every fixture is built at test time from a real photo with
 * libvips' own encoders, so each test exercises a real file of its kind.
 */
#include "face/face.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vips/vips.h>

#define PHOTO ".deps/photos/sample1.jpg"

/* The upright reference photo, 480x320, in memory. */
static VipsImage *upright;
static int up_w, up_h;

/* A file built for one test, released with g_free(). */
struct blob {
        void *data;
        size_t len;
};

/* Saves im with the libvips saver picked by suffix (".png[palette]"). */
static struct blob save(VipsImage *im, const char *suffix)
{
        struct blob b = {NULL, 0};

        if (vips_image_write_to_buffer(im, suffix, &b.data, &b.len, NULL))
                fail_msg("saving %s failed: %s", suffix, vips_error_buffer());
        return b;
}

/* Decodes b with the default limits and expects success. */
static struct face_image decode_ok(struct blob b)
{
        struct face_image img;
        enum face_status st = face_image_decode(b.data, b.len, NULL, &img);

        if (st != FACE_OK)
                fail_msg("decode gave %s", face_status_code(st));
        assert_non_null(img.rgb);
        return img;
}

/* Decodes b and returns the status, checking *out is zeroed on error. */
static enum face_status decode_status(const void *data, size_t len,
                                      const struct face_image_limits *lim)
{
        struct face_image img;
        enum face_status st = face_image_decode(data, len, lim, &img);

        if (st != FACE_OK) {
                assert_null(img.rgb);
                assert_int_equal(img.width, 0);
                assert_int_equal(img.height, 0);
                assert_null(img.format);
        }
        face_image_free(&img);
        return st;
}

/* The packed pixels of a 3-band uchar image, g_malloc'd. */
static uint8_t *pixels_of(VipsImage *im)
{
        size_t size;
        uint8_t *p = vips_image_write_to_memory(im, &size);

        assert_non_null(p);
        assert_int_equal(size, (size_t)vips_image_get_width(im) *
                                       vips_image_get_height(im) * 3);
        return p;
}

/* Mean absolute difference per sample between two w x h RGB buffers,
 * over the columns from x0 on. */
static double mean_diff_from(const uint8_t *a, const uint8_t *b, int w, int h,
                             int x0)
{
        double sum = 0;

        for (int y = 0; y < h; y++)
                for (int x = x0; x < w; x++)
                        for (int c = 0; c < 3; c++) {
                                size_t i = ((size_t)y * w + x) * 3 + c;
                                sum += abs((int)a[i] - (int)b[i]);
                        }
        return sum / ((double)h * (w - x0) * 3);
}

static double mean_diff(const uint8_t *a, const uint8_t *b, int w, int h)
{
        return mean_diff_from(a, b, w, h, 0);
}

/* Mean difference between a decoded image and a 3-band vips image. */
static double diff_to(const struct face_image *img, VipsImage *ref)
{
        assert_int_equal(img->width, vips_image_get_width(ref));
        assert_int_equal(img->height, vips_image_get_height(ref));
        uint8_t *p = pixels_of(ref);
        double d = mean_diff(img->rgb, p, img->width, img->height);
        g_free(p);
        return d;
}

/* Bytes of a whole file, g_malloc'd. */
static struct blob read_file(const char *path)
{
        struct blob b = {NULL, 0};
        gchar *data = NULL;
        gsize len = 0;

        if (!g_file_get_contents(path, &data, &len, NULL))
                fail_msg("cannot read %s (run from the repository root)", path);
        b.data = data;
        b.len = len;
        return b;
}

/* A vips image that tests own; unref'd at the end of the test. */
static VipsImage *keep(VipsImage **list, int *n, VipsImage *im)
{
        assert_non_null(im);
        list[(*n)++] = im;
        return im;
}

static int group_setup(void **state)
{
        (void)state;
        VipsImage *full, *small;

        if (VIPS_INIT("test_image"))
                return -1;
        full = vips_image_new_from_file(PHOTO, NULL);
        if (!full)
                return -1;
        if (vips_resize(full, &small, 0.25, NULL))
                return -1;
        upright = vips_image_copy_memory(small);
        g_object_unref(small);
        g_object_unref(full);
        if (!upright)
                return -1;
        up_w = vips_image_get_width(upright);
        up_h = vips_image_get_height(upright);
        return 0;
}

static int group_teardown(void **state)
{
        (void)state;
        g_object_unref(upright);
        vips_shutdown();
        return 0;
}

/* An 8-bit mask, 0 left of column 40 and 255 from it on. */
static VipsImage *left_clear_mask(VipsImage **list, int *n)
{
        VipsImage *xy, *x, *mask;

        assert_int_equal(vips_xyz(&xy, up_w, up_h, NULL), 0);
        keep(list, n, xy);
        assert_int_equal(vips_extract_band(xy, &x, 0, NULL), 0);
        keep(list, n, x);
        assert_int_equal(vips_moreeq_const1(x, &mask, 40.0, NULL), 0);
        return keep(list, n, mask);
}

/* Asserts the columns left of 40 are pure white. */
static void assert_left_white(const struct face_image *img)
{
        for (int y = 0; y < img->height; y++)
                for (int x = 0; x < 40; x++)
                        for (int c = 0; c < 3; c++)
                                assert_int_equal(
                                        img->rgb[((size_t)y * img->width + x) *
                                                         3 +
                                                 c],
                                        255);
}

/* Asserts every pixel has R = G = B. */
static void assert_grey(const struct face_image *img)
{
        size_t n = (size_t)img->width * img->height;

        for (size_t i = 0; i < n; i++) {
                assert_int_equal(img->rgb[i * 3], img->rgb[i * 3 + 1]);
                assert_int_equal(img->rgb[i * 3], img->rgb[i * 3 + 2]);
        }
}

/*
 * Sniffing
 */

static void test_sniff_every_type(void **state)
{
        (void)state;
        static const struct {
                const char *suffix;
                const char *type;
        } rows[] = {
                {".jpg", "jpeg"},
                {".png", "png"},
                {".webp", "webp"},
                {".gif", "gif"},
                {".tif", "tiff"},
                {".tif[bigtiff]", "tiff"},
                {".tif[Q=90,compression=jpeg]", "tiff"},
        };

        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
                struct blob b = save(upright, rows[i].suffix);
                const char *t = face_image_sniff(b.data, b.len);
                if (!t || strcmp(t, rows[i].type) != 0)
                        fail_msg("%s sniffed as %s", rows[i].suffix,
                                 t ? t : "NULL");
                g_free(b.data);
        }

        /* BMP is written by ImageMagick through libvips. */
        struct blob b;
        assert_int_equal(vips_magicksave_buffer(upright, &b.data, &b.len,
                                                "format", "bmp", NULL),
                         0);
        assert_string_equal(face_image_sniff(b.data, b.len), "bmp");
        g_free(b.data);

        /* HEIF and AVIF are told apart by the ftyp brands. */
        assert_int_equal(
                vips_heifsave_buffer(upright, &b.data, &b.len, "compression",
                                     VIPS_FOREIGN_HEIF_COMPRESSION_AV1, NULL),
                0);
        assert_string_equal(face_image_sniff(b.data, b.len), "avif");
        g_free(b.data);
}

static void test_sniff_hand_made_headers(void **state)
{
        (void)state;
        static const uint8_t heic[] = "\0\0\0\x18"
                                      "ftypheic\0\0\0\0"
                                      "mif1heic";
        static const uint8_t avif[] = "\0\0\0\x1c"
                                      "ftypmif1\0\0\0\0"
                                      "mif1miafavif";
        static const uint8_t mp4[] = "\0\0\0\x18"
                                     "ftypisom\0\0\0\0"
                                     "isommp42";
        static const uint8_t bmp[26] = "BM\0\0\0\0\0\0\0\0\x36\0\0\0"
                                       "\x28\0\0\0";

        assert_string_equal(face_image_sniff(heic, sizeof heic - 1), "heif");
        assert_string_equal(face_image_sniff(avif, sizeof avif - 1), "avif");
        assert_null(face_image_sniff(mp4, sizeof mp4 - 1));
        assert_string_equal(face_image_sniff(bmp, sizeof bmp), "bmp");
        assert_string_equal(face_image_sniff("MM\0*\0\0\0\x08", 8), "tiff");
        assert_string_equal(face_image_sniff("GIF87a", 6), "gif");
        assert_string_equal(face_image_sniff("RIFF\0\0\0\0WEBPVP8 ", 16),
                            "webp");

        /* The brands are looked for only inside the box and the bytes. */
        assert_null(face_image_sniff(heic, 12));
        assert_null(face_image_sniff("\0\0\0\x08"
                                     "ftypheic",
                                     12));
}

static void test_sniff_refuses_non_images(void **state)
{
        (void)state;
        static const char *const texts[] = {
                "<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/"
                "2000/svg\" width=\"100\" height=\"100\"></svg>",
                "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
                "P6\n64 64\n255\n",
                "hello, this is not a photo",
                "BMW cars are not bitmaps, even if they start with BM",
                "RIFF\0\0\0\0WAVEfmt ",
                "\xff\xd8",
                "\x89PNG\r\n",
                "GIF88a",
                "II*",
        };

        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
                size_t len = strlen(texts[i]);
                if (i == 5)
                        len = 16;
                assert_null(face_image_sniff(texts[i], len));
                assert_int_equal(decode_status(texts[i], len, NULL),
                                 FACE_ERR_UNSUPPORTED);
        }
        assert_null(face_image_sniff(NULL, 0));
}

/* Types libvips itself could load must still be refused, by their bytes. */
static void test_other_vips_formats_refused(void **state)
{
        (void)state;
        static const char svg[] =
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"200\" "
                "height=\"200\"><rect width=\"200\" height=\"200\" "
                "fill=\"red\"/></svg>";
        VipsImage *check;

        /* This libvips reads the SVG, so refusing it is our doing. */
        check = vips_image_new_from_buffer(svg, sizeof svg - 1, "", NULL);
        if (check)
                g_object_unref(check);
        vips_error_clear();
        assert_int_equal(decode_status(svg, sizeof svg - 1, NULL),
                         FACE_ERR_UNSUPPORTED);
        assert_string_equal(face_image_unsupported_name(svg, sizeof svg - 1),
                            "SVG");

        /* PPM, which libvips reads natively. */
        struct blob b = save(upright, ".ppm");
        assert_int_equal(decode_status(b.data, b.len, NULL),
                         FACE_ERR_UNSUPPORTED);
        assert_string_equal(face_image_unsupported_name(b.data, b.len), "PNM");
        g_free(b.data);

        assert_string_equal(face_image_unsupported_name("%PDF-1.7\n", 9),
                            "PDF");
        assert_null(face_image_unsupported_name("plain words", 11));
        b = save(upright, ".jpg");
        assert_null(face_image_unsupported_name(b.data, b.len));
        g_free(b.data);
}

/*
 * I1: EXIF orientation
 */

/* Stores the upright photo turned by `stored` and tagged with orient,
 * decodes it, and compares with the upright photo through the same JPEG
 * encoder. */
static void check_orientation(VipsAngle stored, int orient)
{
        VipsImage *turned, *tagged;
        struct blob ref_b = save(upright, ".jpg[Q=95]");
        struct face_image ref = decode_ok(ref_b);

        assert_int_equal(vips_rot(upright, &turned, stored, NULL), 0);
        assert_int_equal(vips_copy(turned, &tagged, NULL), 0);
        vips_image_set_int(tagged, VIPS_META_ORIENTATION, orient);
        struct blob b = save(tagged, ".jpg[Q=95]");

        /* The fixture really is stored turned, with the tag. */
        VipsImage *head = vips_image_new_from_buffer(b.data, b.len, "", NULL);
        assert_non_null(head);
        assert_int_equal(vips_image_get_orientation(head), orient);
        assert_int_equal(vips_image_get_width(head),
                         vips_image_get_width(turned));
        g_object_unref(head);

        struct face_image img = decode_ok(b);
        assert_int_equal(img.width, up_w);
        assert_int_equal(img.height, up_h);
        double d = mean_diff(img.rgb, ref.rgb, up_w, up_h);
        if (d > 3.0)
                fail_msg("orientation %d: mean difference %.2f", orient, d);

        face_image_free(&img);
        face_image_free(&ref);
        g_free(b.data);
        g_free(ref_b.data);
        g_object_unref(tagged);
        g_object_unref(turned);
}

static void test_orientation_3_6_8(void **state)
{
        (void)state;
        check_orientation(VIPS_ANGLE_D180, 3);
        check_orientation(VIPS_ANGLE_D270, 6);
        check_orientation(VIPS_ANGLE_D90, 8);
}

/* PNG (eXIf), WebP (EXIF chunk) and TIFF (its own tag) say it too. */
static void test_orientation_other_containers(void **state)
{
        (void)state;
        static const char *const suffixes[] = {".png", ".webp[lossless]",
                                               ".tif"};
        VipsImage *turned, *tagged;

        assert_int_equal(vips_rot(upright, &turned, VIPS_ANGLE_D270, NULL), 0);
        assert_int_equal(vips_copy(turned, &tagged, NULL), 0);
        vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
        for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
                struct blob b = save(tagged, suffixes[i]);
                struct face_image img = decode_ok(b);
                double d = diff_to(&img, upright);
                if (d > 0.01)
                        fail_msg("%s orientation 6: mean difference %.2f",
                                 suffixes[i], d);
                face_image_free(&img);
                g_free(b.data);
        }
        g_object_unref(tagged);
        g_object_unref(turned);
}

/* The comparison above can fail: a half-turned photo is far from upright. */
static void test_orientation_check_discriminates(void **state)
{
        (void)state;
        VipsImage *turned;
        struct blob b;

        assert_int_equal(vips_rot(upright, &turned, VIPS_ANGLE_D180, NULL), 0);
        b = save(turned, ".jpg[Q=95]");
        struct face_image img = decode_ok(b);
        assert_true(diff_to(&img, upright) > 20.0);
        face_image_free(&img);
        g_free(b.data);
        g_object_unref(turned);
}

/*
 * I2: colour modes
 */

static void test_rgba_png_flattened_on_white(void **state)
{
        (void)state;
        VipsImage *own[8];
        int n = 0;
        VipsImage *mask = left_clear_mask(own, &n);
        VipsImage *rgba;

        assert_int_equal(vips_bandjoin2(upright, mask, &rgba, NULL), 0);
        keep(own, &n, rgba);
        struct blob b = save(rgba, ".png");
        assert_int_equal(((uint8_t *)b.data)[25], 6); /* colour type RGBA */

        struct face_image img = decode_ok(b);
        assert_string_equal(img.format, "png");
        assert_left_white(&img);
        uint8_t *p = pixels_of(upright);
        assert_true(mean_diff_from(img.rgb, p, up_w, up_h, 40) < 0.01);

        g_free(p);
        face_image_free(&img);
        g_free(b.data);
        while (n > 0)
                g_object_unref(own[--n]);
}

static void test_grey_alpha_png(void **state)
{
        (void)state;
        VipsImage *own[8];
        int n = 0;
        VipsImage *mask = left_clear_mask(own, &n);
        VipsImage *grey, *ga;

        assert_int_equal(
                vips_colourspace(upright, &grey, VIPS_INTERPRETATION_B_W, NULL),
                0);
        keep(own, &n, grey);
        assert_int_equal(vips_bandjoin2(grey, mask, &ga, NULL), 0);
        keep(own, &n, ga);
        struct blob b = save(ga, ".png");
        assert_int_equal(((uint8_t *)b.data)[25], 4); /* grey + alpha */

        struct face_image img = decode_ok(b);
        assert_int_equal(img.width, up_w);
        assert_int_equal(img.height, up_h);
        assert_grey(&img);
        assert_left_white(&img);

        /* Opaque pixels keep their grey level. */
        size_t size;
        uint8_t *g = vips_image_write_to_memory(grey, &size);
        for (int y = 0; y < up_h; y++)
                for (int x = 40; x < up_w; x++) {
                        int want = g[(size_t)y * up_w + x];
                        int got = img.rgb[((size_t)y * up_w + x) * 3];
                        assert_true(abs(want - got) <= 1);
                }

        g_free(g);
        face_image_free(&img);
        g_free(b.data);
        while (n > 0)
                g_object_unref(own[--n]);
}

static void test_grey_jpeg_and_png(void **state)
{
        (void)state;
        VipsImage *grey, *grey3;
        const char *suffixes[] = {".jpg", ".png"};

        assert_int_equal(
                vips_colourspace(upright, &grey, VIPS_INTERPRETATION_B_W, NULL),
                0);
        assert_int_equal(
                vips_colourspace(grey, &grey3, VIPS_INTERPRETATION_sRGB, NULL),
                0);
        for (int i = 0; i < 2; i++) {
                struct blob b = save(grey, suffixes[i]);
                VipsImage *head =
                        vips_image_new_from_buffer(b.data, b.len, "", NULL);
                assert_int_equal(vips_image_get_bands(head), 1);
                g_object_unref(head);

                struct face_image img = decode_ok(b);
                assert_grey(&img);
                assert_true(diff_to(&img, grey3) < (i == 0 ? 3.0 : 0.01));
                face_image_free(&img);
                g_free(b.data);
        }
        g_object_unref(grey3);
        g_object_unref(grey);
}

static void test_palette_png(void **state)
{
        (void)state;
        struct blob b = save(upright, ".png[palette]");

        assert_int_equal(((uint8_t *)b.data)[25], 3); /* indexed colour */
        struct face_image img = decode_ok(b);
        double d = diff_to(&img, upright);
        if (d > 8.0)
                fail_msg("palette PNG: mean difference %.2f", d);
        face_image_free(&img);
        g_free(b.data);
}

static void test_16bit_png(void **state)
{
        (void)state;
        VipsImage *wide, *scaled, *rgb16;

        assert_int_equal(vips_cast(upright, &wide, VIPS_FORMAT_USHORT, NULL),
                         0);
        assert_int_equal(vips_linear1(wide, &scaled, 257.0, 0.0, NULL), 0);
        assert_int_equal(vips_cast(scaled, &rgb16, VIPS_FORMAT_USHORT, NULL),
                         0);
        VipsImage *tagged;
        assert_int_equal(vips_copy(rgb16, &tagged, "interpretation",
                                   VIPS_INTERPRETATION_RGB16, NULL),
                         0);
        struct blob b = save(tagged, ".png");
        assert_int_equal(((uint8_t *)b.data)[24], 16); /* bit depth */

        struct face_image img = decode_ok(b);
        assert_true(diff_to(&img, upright) < 0.5);
        face_image_free(&img);
        g_free(b.data);
        g_object_unref(tagged);
        g_object_unref(rgb16);
        g_object_unref(scaled);
        g_object_unref(wide);
}

/* Offset of the JPEG marker m, walking the segments from the start. */
static size_t jpeg_marker(const struct blob *b, int lo, int hi)
{
        const uint8_t *p = b->data;

        for (size_t i = 2; i + 4 < b->len;) {
                assert_int_equal(p[i], 0xff);
                if (p[i + 1] >= lo && p[i + 1] <= hi)
                        return i;
                i += 2 + ((size_t)p[i + 2] << 8 | p[i + 3]);
        }
        fail_msg("no JPEG marker %02x-%02x", lo, hi);
        return 0;
}

/* Number of colour components in the frame header of a JPEG. */
static int jpeg_components(const struct blob *b)
{
        return ((uint8_t *)b->data)[jpeg_marker(b, 0xc0, 0xc2) + 9];
}

static void test_cmyk_jpeg(void **state)
{
        (void)state;
        VipsImage *cmyk, *bare, *shown, *raw;

        /* CMYK has a smaller gamut than sRGB, so the reference is how
         * libvips itself shows the CMYK fixture, not the original. */
        assert_int_equal(vips_colourspace(upright, &cmyk,
                                          VIPS_INTERPRETATION_CMYK, NULL),
                         0);
        assert_int_equal(
                vips_colourspace(cmyk, &shown, VIPS_INTERPRETATION_sRGB, NULL),
                0);
        assert_int_equal(vips_extract_band(cmyk, &raw, 0, "n", 3, NULL), 0);

        /* With the profile libvips embeds, and with none at all. */
        assert_int_equal(vips_copy(cmyk, &bare, NULL), 0);
        vips_image_remove(bare, VIPS_META_ICC_NAME);
        VipsImage *kinds[] = {cmyk, bare};
        for (int i = 0; i < 2; i++) {
                struct blob b = save(kinds[i], ".jpg[Q=95]");
                assert_int_equal(jpeg_components(&b), 4);
                struct face_image img = decode_ok(b);
                double d = diff_to(&img, shown);
                double d_raw = diff_to(&img, raw);
                if (d > 3.0 || d_raw < 40.0)
                        fail_msg("CMYK JPEG %d: mean difference %.2f to "
                                 "the sRGB rendering, %.2f to the raw "
                                 "CMY bands",
                                 i, d, d_raw);
                face_image_free(&img);
                g_free(b.data);
        }
        g_object_unref(bare);
        g_object_unref(raw);
        g_object_unref(shown);
        g_object_unref(cmyk);
}

/* A wide-gamut profile from Debian's libgs-common (installed by setup). */
#define WIDE_PROFILE "/usr/share/color/icc/ghostscript/rommrgb.icc"

static void test_icc_profile_applied(void **state)
{
        (void)state;
        VipsImage *wide;

        /* The same colours, stored as ROMM RGB numbers with its profile. */
        if (vips_icc_transform(upright, &wide, WIDE_PROFILE, "input_profile",
                               "srgb", NULL))
                fail_msg("cannot build the ROMM RGB fixture: %s",
                         vips_error_buffer());
        assert_non_null(vips_image_get_typeof(wide, VIPS_META_ICC_NAME));
        struct blob b = save(wide, ".png");

        /* Read as plain sRGB numbers they would be off; read through the
         * profile they are the upright colours again. */
        struct face_image img = decode_ok(b);
        double d = diff_to(&img, upright);
        double d_raw = diff_to(&img, wide);
        if (d > 1.5 || d_raw < 5.0)
                fail_msg("ROMM RGB PNG: mean difference %.2f to sRGB, %.2f "
                         "to the raw numbers",
                         d, d_raw);
        face_image_free(&img);
        g_free(b.data);
        g_object_unref(wide);
}

/*
 * I4: dimensions
 */

/* CRC-32 of PNG chunks (ISO 3309), bit by bit: a few bytes only. */
static uint32_t png_crc(const uint8_t *p, size_t n)
{
        uint32_t c = 0xffffffffu;

        for (size_t i = 0; i < n; i++) {
                c ^= p[i];
                for (int k = 0; k < 8; k++)
                        c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        }
        return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v)
{
        p[0] = v >> 24;
        p[1] = v >> 16;
        p[2] = v >> 8;
        p[3] = v;
}

/* A real small PNG whose IHDR now declares w x h, with a valid CRC. */
static struct blob png_declaring(uint32_t w, uint32_t h)
{
        struct blob b = save(upright, ".png[compression=9]");
        uint8_t *p = b.data;

        assert_memory_equal(p + 12, "IHDR", 4);
        put_be32(p + 16, w);
        put_be32(p + 20, h);
        put_be32(p + 29, png_crc(p + 12, 17));
        return b;
}

/* A real small JPEG whose frame header now declares w x h. */
static struct blob jpeg_declaring(uint16_t w, uint16_t h)
{
        struct blob b = save(upright, ".jpg");
        uint8_t *p = b.data;
        size_t i = jpeg_marker(&b, 0xc0, 0xc2);

        p[i + 5] = h >> 8;
        p[i + 6] = h & 0xff;
        p[i + 7] = w >> 8;
        p[i + 8] = w & 0xff;
        return b;
}

/* Peak resident memory of the process so far, in megabytes. */
static long peak_rss_mb(void)
{
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return ru.ru_maxrss / 1024;
}

static void test_huge_headers_refused(void **state)
{
        (void)state;
        struct blob files[] = {
                png_declaring(20000, 20000),  png_declaring(65535, 1),
                jpeg_declaring(20000, 20000), jpeg_declaring(65535, 1),
                jpeg_declaring(65500, 1),     jpeg_declaring(1, 65500),
        };
        long before = peak_rss_mb();

        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
                /* Each is small: the file is not what is large. */
                assert_true(files[i].len < 1000 * 1000);
                enum face_status st =
                        decode_status(files[i].data, files[i].len, NULL);
                if (st != FACE_ERR_DIMENSIONS)
                        fail_msg("file %zu gave %s", i, face_status_code(st));
                g_free(files[i].data);
        }

        /* A 20000 x 20000 RGB decode alone would need 1.2 GB. */
        assert_true(peak_rss_mb() - before < 200);
}

static void test_limits_are_the_callers(void **state)
{
        (void)state;
        struct face_image_limits lim;
        struct blob b = save(upright, ".png");

        face_image_limits_default(&lim);
        assert_int_equal(lim.max_bytes, 10 * 1000 * 1000);
        assert_int_equal(lim.max_pixels, 40 * 1000 * 1000);
        assert_int_equal(lim.max_side, 20000);

        /* Exactly at each limit passes; one below refuses. */
        lim.max_side = up_w;
        lim.max_pixels = (uint64_t)up_w * up_h;
        lim.max_bytes = b.len;
        assert_int_equal(decode_status(b.data, b.len, &lim), FACE_OK);
        lim.max_side = up_w - 1;
        assert_int_equal(decode_status(b.data, b.len, &lim),
                         FACE_ERR_DIMENSIONS);
        lim.max_side = up_w;
        lim.max_pixels--;
        assert_int_equal(decode_status(b.data, b.len, &lim),
                         FACE_ERR_DIMENSIONS);
        lim.max_pixels++;
        lim.max_bytes--;
        assert_int_equal(decode_status(b.data, b.len, &lim),
                         FACE_ERR_TOO_LARGE);
        g_free(b.data);
}

static void test_too_small(void **state)
{
        (void)state;
        static const int sides[][2] = {{15, 15}, {15, 200}, {200, 15}, {1, 1}};
        VipsImage *crop;

        for (size_t i = 0; i < sizeof sides / sizeof *sides; i++) {
                assert_int_equal(vips_crop(upright, &crop, 0, 0, sides[i][0],
                                           sides[i][1], NULL),
                                 0);
                struct blob b = save(crop, ".png");
                assert_int_equal(decode_status(b.data, b.len, NULL),
                                 FACE_ERR_IMAGE_TOO_SMALL);
                g_free(b.data);
                g_object_unref(crop);
        }

        /* 16 pixels is enough. */
        assert_int_equal(vips_crop(upright, &crop, 0, 0, 16, 16, NULL), 0);
        struct blob b = save(crop, ".png");
        struct face_image img = decode_ok(b);
        assert_int_equal(img.width, 16);
        face_image_free(&img);
        g_free(b.data);
        g_object_unref(crop);
}

/* Whether this build runs under AddressSanitizer, which needs far more
 * address space than a memory limit would leave it. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Address space the process has mapped now, in bytes. */
static size_t mapped_bytes(void)
{
        unsigned long pages = 0;
        FILE *f = fopen("/proc/self/statm", "r");

        assert_non_null(f);
        assert_int_equal(fscanf(f, "%lu", &pages), 1);
        fclose(f);
        return pages * (size_t)sysconf(_SC_PAGESIZE);
}

/* A server short of memory says so (503), instead of blaming the image. */
static void test_short_of_memory(void **state)
{
        (void)state;
        VipsImage *black;
        int status;

        if (UNDER_ASAN) {
                print_message("skipped under AddressSanitizer\n");
                return;
        }

        /* A small file of 6000 x 6000 pixels: 108 MB once decoded. */
        assert_int_equal(vips_black(&black, 6000, 6000, "bands", 3, NULL), 0);
        struct blob b = save(black, ".png");
        g_object_unref(black);

        /* In a child whose address space has 48 MB to spare. */
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct rlimit rl;
                rl.rlim_cur = rl.rlim_max = mapped_bytes() + (48u << 20);
                if (setrlimit(RLIMIT_AS, &rl))
                        _exit(100);
                struct face_image img;
                enum face_status st =
                        face_image_decode(b.data, b.len, NULL, &img);
                _exit(st == FACE_OK ? 101 : (int)st);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), FACE_ERR_NOMEM);
        assert_string_equal(face_status_code(FACE_ERR_NOMEM), "SERVER_BUSY");
        g_free(b.data);
}

/*
 * I5: other formats
 */

static void test_animated_gif_first_frame(void **state)
{
        (void)state;
        VipsImage *neg, *pages, *anim;
        VipsImage *frames[2] = {upright, NULL};

        assert_int_equal(vips_invert(upright, &neg, NULL), 0);
        frames[1] = neg;
        assert_int_equal(vips_arrayjoin(frames, &pages, 2, "across", 1, NULL),
                         0);
        assert_int_equal(vips_copy(pages, &anim, NULL), 0);
        vips_image_set_int(anim, VIPS_META_PAGE_HEIGHT, up_h);
        struct blob b = save(anim, ".gif");

        /* The fixture really has two frames. */
        VipsImage *all =
                vips_image_new_from_buffer(b.data, b.len, "n=-1", NULL);
        assert_non_null(all);
        assert_int_equal(vips_image_get_n_pages(all), 2);
        g_object_unref(all);

        struct face_image img = decode_ok(b);
        assert_string_equal(img.format, "gif");
        double d_first = diff_to(&img, upright);
        double d_second = diff_to(&img, neg);
        if (d_first > 12.0 || d_second < 40.0)
                fail_msg("GIF frame: %.2f to the first, %.2f to the second",
                         d_first, d_second);
        face_image_free(&img);
        g_free(b.data);
        g_object_unref(anim);
        g_object_unref(pages);
        g_object_unref(neg);
}

static void test_webp_with_alpha(void **state)
{
        (void)state;
        VipsImage *own[8];
        int n = 0;
        VipsImage *mask = left_clear_mask(own, &n);
        VipsImage *rgba;

        assert_int_equal(vips_bandjoin2(upright, mask, &rgba, NULL), 0);
        keep(own, &n, rgba);
        struct blob b = save(rgba, ".webp[lossless]");
        struct face_image img = decode_ok(b);
        assert_string_equal(img.format, "webp");
        assert_left_white(&img);
        uint8_t *p = pixels_of(upright);
        assert_true(mean_diff_from(img.rgb, p, up_w, up_h, 40) < 0.01);
        g_free(p);
        face_image_free(&img);
        g_free(b.data);
        while (n > 0)
                g_object_unref(own[--n]);
}

static void test_bmp_and_tiff(void **state)
{
        (void)state;
        struct blob b;

        assert_int_equal(vips_magicksave_buffer(upright, &b.data, &b.len,
                                                "format", "bmp", NULL),
                         0);
        struct face_image img = decode_ok(b);
        assert_string_equal(img.format, "bmp");
        assert_true(diff_to(&img, upright) < 0.01);
        face_image_free(&img);
        g_free(b.data);

        b = save(upright, ".tif");
        img = decode_ok(b);
        assert_string_equal(img.format, "tiff");
        assert_true(diff_to(&img, upright) < 0.01);
        face_image_free(&img);
        g_free(b.data);
}

/* HEIC and AVIF decode when this libvips has libheif, else 415. */
static void test_heic_and_avif(void **state)
{
        (void)state;
        static const VipsForeignHeifCompression kinds[] = {
                VIPS_FOREIGN_HEIF_COMPRESSION_HEVC,
                VIPS_FOREIGN_HEIF_COMPRESSION_AV1,
        };
        static const char *const names[] = {"heif", "avif"};

        for (int i = 0; i < 2; i++) {
                struct blob b;
                if (vips_heifsave_buffer(upright, &b.data, &b.len,
                                         "compression", kinds[i], NULL)) {
                        print_message("no %s encoder here: %s", names[i],
                                      vips_error_buffer());
                        vips_error_clear();
                        continue;
                }
                assert_string_equal(face_image_sniff(b.data, b.len), names[i]);
                struct face_image img;
                enum face_status st =
                        face_image_decode(b.data, b.len, NULL, &img);
                if (st == FACE_OK) {
                        assert_string_equal(img.format, names[i]);
                        double d = diff_to(&img, upright);
                        if (d > 6.0)
                                fail_msg("%s: mean difference %.2f", names[i],
                                         d);
                } else {
                        assert_int_equal(st, FACE_ERR_UNSUPPORTED);
                        assert_non_null(
                                face_image_unsupported_name(b.data, b.len));
                }
                face_image_free(&img);
                g_free(b.data);
        }
}

/*
 * I3: empty, cut short, damaged
 */

static void test_empty(void **state)
{
        (void)state;
        assert_int_equal(decode_status(NULL, 0, NULL), FACE_ERR_EMPTY);
        assert_int_equal(decode_status("", 0, NULL), FACE_ERR_EMPTY);
}

/* Offset just past the start-of-scan header: the entropy data follows. */
static size_t jpeg_scan_start(const struct blob *b)
{
        const uint8_t *p = b->data;
        size_t i = jpeg_marker(b, 0xda, 0xda);

        return i + 2 + ((size_t)p[i + 2] << 8 | p[i + 3]);
}

static void test_jpeg_cut_short(void **state)
{
        (void)state;
        struct blob b = save(upright, ".jpg");
        size_t cuts[] = {b.len / 2, jpeg_scan_start(&b),
                         jpeg_scan_start(&b) - 10, 200, 3};

        for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
                enum face_status st = decode_status(b.data, cuts[i], NULL);
                if (st != FACE_ERR_CORRUPT)
                        fail_msg("JPEG cut at %zu of %zu gave %s", cuts[i],
                                 b.len, face_status_code(st));
        }

        /* The same bytes always get the same answer. */
        for (int k = 0; k < 3; k++)
                assert_int_equal(decode_status(b.data, b.len / 2, NULL),
                                 FACE_ERR_CORRUPT);
        g_free(b.data);
}

/* Every other type cut at half is refused as damaged, never decoded. */
static void test_every_type_cut_short(void **state)
{
        (void)state;
        static const char *const suffixes[] = {".png", ".webp", ".gif", ".tif",
                                               ".jpg[interlace]"};
        struct blob b;

        for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
                b = save(upright, suffixes[i]);
                enum face_status st = decode_status(b.data, b.len / 2, NULL);
                if (st != FACE_ERR_CORRUPT)
                        fail_msg("%s cut at half gave %s", suffixes[i],
                                 face_status_code(st));
                g_free(b.data);
        }

        assert_int_equal(vips_magicksave_buffer(upright, &b.data, &b.len,
                                                "format", "bmp", NULL),
                         0);
        enum face_status st = decode_status(b.data, b.len / 2, NULL);
        if (st != FACE_ERR_CORRUPT)
                fail_msg("BMP cut at half gave %s", face_status_code(st));
        g_free(b.data);

        assert_int_equal(
                vips_heifsave_buffer(upright, &b.data, &b.len, "compression",
                                     VIPS_FOREIGN_HEIF_COMPRESSION_AV1, NULL),
                0);
        st = decode_status(b.data, b.len / 2, NULL);
        assert_true(st == FACE_ERR_CORRUPT || st == FACE_ERR_UNSUPPORTED);
        g_free(b.data);
}

static void test_same_bytes_same_pixels(void **state)
{
        (void)state;
        struct blob b = read_file(PHOTO);
        struct face_image a = decode_ok(b);
        struct face_image c = decode_ok(b);

        assert_string_equal(a.format, "jpeg");
        assert_int_equal(a.width, 1920);
        assert_int_equal(a.height, 1280);
        assert_int_equal(a.width, c.width);
        assert_memory_equal(a.rgb, c.rgb, (size_t)a.width * a.height * 3);

        /* The photo carries an sRGB profile, which asks for no change:
         * the pixels are the JPEG decoder's own. */
        VipsImage *plain = vips_image_new_from_buffer(b.data, b.len, "", NULL);
        assert_non_null(vips_image_get_typeof(plain, VIPS_META_ICC_NAME));
        uint8_t *p = pixels_of(plain);
        assert_memory_equal(a.rgb, p, (size_t)a.width * a.height * 3);
        g_free(p);
        g_object_unref(plain);
        face_image_free(&a);
        face_image_free(&c);
        face_image_free(&c); /* safe on a zeroed image */
        g_free(b.data);
}

/*
 * Threads
 */

struct job {
        struct blob file;
        enum face_status want;
        uint64_t want_sum; /* sum of all samples of the answer */
        bool ok;
};

static uint64_t sample_sum(const struct face_image *img)
{
        uint64_t s = 0;

        for (size_t i = 0; i < (size_t)img->width * img->height * 3; i++)
                s += img->rgb[i] * (i % 7 + 1);
        return s;
}

static void *run_job(void *arg)
{
        struct job *j = arg;

        j->ok = true;
        for (int k = 0; k < 6; k++) {
                struct face_image img;
                enum face_status st = face_image_decode(
                        j->file.data, j->file.len, NULL, &img);
                if (st != j->want ||
                    (st == FACE_OK && sample_sum(&img) != j->want_sum))
                        j->ok = false;
                face_image_free(&img);
        }
        return NULL;
}

static void test_threads_agree(void **state)
{
        (void)state;
        struct job jobs[4];
        pthread_t tid[4];

        jobs[0].file = save(upright, ".jpg");
        jobs[1].file = save(upright, ".png");
        jobs[2].file = save(upright, ".gif");
        jobs[3].file = save(upright, ".jpg");
        jobs[3].file.len /= 2;

        /* Answers from one thread first. */
        for (int i = 0; i < 4; i++) {
                struct face_image img;
                jobs[i].want = face_image_decode(jobs[i].file.data,
                                                 jobs[i].file.len, NULL, &img);
                jobs[i].want_sum =
                        jobs[i].want == FACE_OK ? sample_sum(&img) : 0;
                face_image_free(&img);
        }
        assert_int_equal(jobs[0].want, FACE_OK);
        assert_int_equal(jobs[3].want, FACE_ERR_CORRUPT);

        for (int i = 0; i < 4; i++)
                assert_int_equal(
                        pthread_create(&tid[i], NULL, run_job, &jobs[i]), 0);
        for (int i = 0; i < 4; i++) {
                pthread_join(tid[i], NULL);
                assert_true(jobs[i].ok);
                g_free(jobs[i].file.data);
        }
}

/* Counts live libvips images, for the leak check below. */
static void *count_image(void *obj, void *a, void *b)
{
        (void)b;
        if (VIPS_IS_IMAGE(obj))
                (*(int *)a)++;
        return NULL;
}

/* Run last: every image decoding made is released again (LeakSanitizer
 * cannot tell, as it leaves libvips' own allocations alone).  Pixel
 * buffers are not counted: idle libvips workers keep a few cached until
 * they exit. */
static void test_no_images_left(void **state)
{
        (void)state;
        int live = 0;

        /* libvips' worker threads drop their last references to an image
         * a moment after the pixels are delivered; a leak stays. */
        for (int tries = 0; tries < 200; tries++) {
                live = 0;
                vips_object_map(count_image, &live, NULL);
                if (live == 1)
                        break;
                g_usleep(10 * 1000);
        }
        assert_int_equal(live, 1); /* the upright reference photo */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sniff_every_type),
                cmocka_unit_test(test_sniff_hand_made_headers),
                cmocka_unit_test(test_sniff_refuses_non_images),
                cmocka_unit_test(test_other_vips_formats_refused),
                cmocka_unit_test(test_orientation_3_6_8),
                cmocka_unit_test(test_orientation_other_containers),
                cmocka_unit_test(test_orientation_check_discriminates),
                cmocka_unit_test(test_rgba_png_flattened_on_white),
                cmocka_unit_test(test_grey_alpha_png),
                cmocka_unit_test(test_grey_jpeg_and_png),
                cmocka_unit_test(test_palette_png),
                cmocka_unit_test(test_16bit_png),
                cmocka_unit_test(test_cmyk_jpeg),
                cmocka_unit_test(test_icc_profile_applied),
                cmocka_unit_test(test_huge_headers_refused),
                cmocka_unit_test(test_limits_are_the_callers),
                cmocka_unit_test(test_too_small),
                cmocka_unit_test(test_short_of_memory),
                cmocka_unit_test(test_animated_gif_first_frame),
                cmocka_unit_test(test_webp_with_alpha),
                cmocka_unit_test(test_bmp_and_tiff),
                cmocka_unit_test(test_heic_and_avif),
                cmocka_unit_test(test_empty),
                cmocka_unit_test(test_jpeg_cut_short),
                cmocka_unit_test(test_every_type_cut_short),
                cmocka_unit_test(test_same_bytes_same_pixels),
                cmocka_unit_test(test_threads_agree),
                cmocka_unit_test(test_no_images_left),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
