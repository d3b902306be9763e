/*
 * image.c - from the bytes a customer uploads to the 8-bit sRGB pixels
 * the face engine reads.
 *
 * The type of an image comes from its bytes alone.  Each type we accept is
 * handed to the one libvips loader for it, called by name: libvips could
 * load many more formats (PDF, SVG, anything ImageMagick reads), and
 * letting it pick a loader from untrusted bytes would expose all of them.
 * The header is read first and checked against the limits, so a small file
 * that declares a huge image is refused before any pixel is decoded.
 */
#include "face/face.h"
#include "util/log.h"

#include <assert.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <vips/vips.h>

/* An image with a side shorter than this cannot hold a face the detector
 * finds (its smallest face is 20 pixels), so it is refused before decoding.
 */
#define IMAGE_MIN_SIDE 16

#define IMAGE_DEFAULT_MAX_BYTES  ((size_t)10 * 1000 * 1000)
#define IMAGE_DEFAULT_MAX_PIXELS ((uint64_t)40 * 1000 * 1000)
#define IMAGE_DEFAULT_MAX_SIDE   20000u

static pthread_once_t image_once = PTHREAD_ONCE_INIT;
static bool image_vips_ready; /* libvips started */
static bool image_heif_ready; /* this libvips has its HEIF/AVIF loader */

/*
 * Passes libvips' warnings (a damaged tile, a truncated file) to the event
 * log at debug level, instead of letting GLib print them on stderr in a
 * format of its own: each is followed by an error status anyway.
 */
static void image_vips_warning(const gchar *domain, GLogLevelFlags level,
                               const gchar *message, gpointer data)
{
        (void)domain;
        (void)level;
        (void)data;
        log_debug("image", "libvips says: %s", message ? message : "");
}

/*
 * Starts libvips once for the process.  The operation cache is turned off:
 * it would keep decoded customer images in memory after the request, and
 * no two requests share an operation worth caching.
 */
static void image_start_vips(void)
{
        if (VIPS_INIT("frapi") != 0) {
                log_error("image",
                          "The image library libvips failed to start.");
                return;
        }
        vips_cache_set_max(0);
        vips_cache_set_max_mem(0);
        vips_cache_set_max_files(0);
        g_log_set_handler("VIPS",
                          G_LOG_LEVEL_WARNING | G_LOG_LEVEL_MESSAGE |
                                  G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG,
                          image_vips_warning, NULL);

        /* HEIF support is a loadable module in many builds; ask for it. */
        image_heif_ready = vips_type_find("VipsOperation", "heifload_buffer");
        image_vips_ready = true;
        log_debug("image", "libvips %s started, HEIF/AVIF %s.",
                  vips_version_string(),
                  image_heif_ready ? "available" : "unavailable");
}

/*
 * Fills *limits with the defaults: 10 MB, 40 megapixels, 20000 pixels on
 * the longer side.
 */
void face_image_limits_default(struct face_image_limits *limits)
{
        assert(limits);
        limits->max_bytes = IMAGE_DEFAULT_MAX_BYTES;
        limits->max_pixels = IMAGE_DEFAULT_MAX_PIXELS;
        limits->max_side = IMAGE_DEFAULT_MAX_SIDE;
}

/* Whether b, of len bytes, holds the n bytes of magic at offset at. */
static bool image_has(const uint8_t *b, size_t len, size_t at,
                      const char *magic, size_t n)
{
        return len >= at + n && memcmp(b + at, magic, n) == 0;
}

static uint32_t image_be32(const uint8_t *b)
{
        return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
               (uint32_t)b[2] << 8 | b[3];
}

static uint32_t image_le32(const uint8_t *b)
{
        return (uint32_t)b[3] << 24 | (uint32_t)b[2] << 16 |
               (uint32_t)b[1] << 8 | b[0];
}

/*
 * Names the HEIF family member of an ISO media "ftyp" box: "avif" when
 * the major or a compatible brand says AVIF, "heif" for the HEIF brands,
 * NULL for other ISO media (MP4 video, QuickTime, camera raw).
 */
static const char *image_sniff_ftyp(const uint8_t *b, size_t len)
{
        static const char *const heif_brands[] = {
                "heic", "heix", "hevc", "hevx", "heim",
                "heis", "hevm", "hevs", "mif1", "msf1",
        };
        bool heif = false;

        /* The box is size, "ftyp", major brand, minor version, brands. */
        if (!image_has(b, len, 4, "ftyp", 4) || len < 16)
                return NULL;
        size_t end = image_be32(b);
        if (end < 16)
                return NULL;
        if (end > len)
                end = len;

        /* Brand 0 is the major brand; from offset 16 the compatible ones. */
        for (size_t at = 8; at + 4 <= end; at += at == 8 ? 8 : 4) {
                if (memcmp(b + at, "avif", 4) == 0 ||
                    memcmp(b + at, "avis", 4) == 0)
                        return "avif";
                for (size_t i = 0; i < sizeof heif_brands / sizeof *heif_brands;
                     i++)
                        if (memcmp(b + at, heif_brands[i], 4) == 0)
                                heif = true;
        }
        return heif ? "heif" : NULL;
}

/* Whether b starts a BMP file: "BM" and a DIB header of a known size. */
static bool image_is_bmp(const uint8_t *b, size_t len)
{
        if (!image_has(b, len, 0, "BM", 2) || len < 26)
                return false;
        switch (image_le32(b + 14)) {
        case 12:  /* OS/2 1.x BITMAPCOREHEADER */
        case 40:  /* BITMAPINFOHEADER */
        case 52:  /* BITMAPV2INFOHEADER */
        case 56:  /* BITMAPV3INFOHEADER */
        case 64:  /* OS/2 2.x */
        case 108: /* BITMAPV4HEADER */
        case 124: /* BITMAPV5HEADER */
                return true;
        default:
                return false;
        }
}

/*
 * Names the image type of the first len bytes from their magic numbers
 * ("jpeg", "png", "webp", "gif", "bmp", "tiff", "heif", "avif"), a static
 * string, or NULL when the bytes are no type we read.  Never looks past
 * len; bytes may be NULL when len is 0.
 */
const char *face_image_sniff(const void *bytes, size_t len)
{
        const uint8_t *b = bytes;

        if (len == 0)
                return NULL;
        assert(bytes);
        if (image_has(b, len, 0, "\xff\xd8\xff", 3))
                return "jpeg";
        if (image_has(b, len, 0, "\x89PNG\r\n\x1a\n", 8))
                return "png";
        if (image_has(b, len, 0, "RIFF", 4) && image_has(b, len, 8, "WEBP", 4))
                return "webp";
        if (image_has(b, len, 0, "GIF87a", 6) ||
            image_has(b, len, 0, "GIF89a", 6))
                return "gif";
        if (image_is_bmp(b, len))
                return "bmp";
        /* Classic TIFF (42) and BigTIFF (43), both byte orders. */
        if (image_has(b, len, 0, "II*\0", 4) ||
            image_has(b, len, 0, "MM\0*", 4) ||
            image_has(b, len, 0, "II+\0", 4) ||
            image_has(b, len, 0, "MM\0+", 4))
                return "tiff";
        return image_sniff_ftyp(b, len);
}

/*
 * Reads the size a JPEG's frame header declares, walking the marker
 * segments before it.  libjpeg refuses a side above 65500 outright; this
 * lets such a file be answered as too large rather than as damaged.
 * Returns false when no frame header is found in the bytes.
 */
static bool image_jpeg_declared(const uint8_t *b, size_t len, uint32_t *w,
                                uint32_t *h)
{
        size_t at = 2;

        while (at + 4 <= len && b[at] == 0xff) {
                uint8_t m = b[at + 1];

                /* Fill bytes, and markers that carry no length. */
                if (m == 0xff || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) {
                        at += m == 0xff ? 1 : 2;
                        continue;
                }

                /* Start of frame: every SOFn but DHT, JPG and DAC. */
                if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 &&
                    m != 0xcc) {
                        if (at + 9 > len)
                                return false;
                        *h = (uint32_t)b[at + 5] << 8 | b[at + 6];
                        *w = (uint32_t)b[at + 7] << 8 | b[at + 8];
                        return true;
                }
                if (m == 0xda || m == 0xd9)
                        return false;
                at += 2 + ((size_t)b[at + 2] << 8 | b[at + 3]);
        }
        return false;
}

/* Whether the bytes hold "<svg" within their first kilobyte. */
static bool image_looks_svg(const uint8_t *b, size_t len)
{
        size_t n = len < 1024 ? len : 1024;

        for (size_t i = 0; i + 4 <= n; i++)
                if (memcmp(b + i, "<svg", 4) == 0)
                        return true;
        return false;
}

/*
 * Names, for an error message, the type of bytes that face_image_decode()
 * refused with FACE_ERR_UNSUPPORTED: "HEIF" or "AVIF" when this server's
 * libvips cannot read them, or a well-known type we do not accept ("PDF",
 * "SVG", "JPEG 2000", ...).  Returns a static string, or NULL when the
 * bytes are no type we recognise.
 */
const char *face_image_unsupported_name(const void *bytes, size_t len)
{
        static const struct {
                size_t at;
                const char *magic;
                size_t n;
                const char *name;
        } known[] = {
                {0, "%PDF-", 5, "PDF"},
                {0, "\0\0\0\x0cjP  \r\n\x87\n", 12, "JPEG 2000"},
                {0, "\xff\x4f\xff\x51", 4, "JPEG 2000"},
                {0, "\xff\x0a", 2, "JPEG XL"},
                {0, "\0\0\0\x0cJXL \r\n\x87\n", 12, "JPEG XL"},
                {0, "\0\0\1\0", 4, "ICO"},
                {0, "8BPS", 4, "PSD"},
                {0, "v/1\x01", 4, "OpenEXR"},
                {0, "SIMPLE  =", 9, "FITS"},
                {0, "#?RADIANCE", 10, "Radiance HDR"},
                {0, "\x1f\x8b", 2, "gzip"},
                {0, "PK\3\4", 4, "ZIP"},
                {4, "ftyp", 4, "ISO media (MP4, QuickTime or camera raw)"},
        };
        const uint8_t *b = bytes;

        /* A type we read, which this libvips lacks the loader for. */
        const char *fmt = face_image_sniff(bytes, len);
        if (fmt && (strcmp(fmt, "heif") == 0 || strcmp(fmt, "avif") == 0)) {
                pthread_once(&image_once, image_start_vips);
                if (!image_heif_ready)
                        return fmt[0] == 'h' ? "HEIF" : "AVIF";
        }
        if (fmt || len == 0)
                return NULL;

        /* A well-known type we refuse. */
        for (size_t i = 0; i < sizeof known / sizeof *known; i++)
                if (image_has(b, len, known[i].at, known[i].magic, known[i].n))
                        return known[i].name;
        if (len >= 3 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7' &&
            (b[2] == '\n' || b[2] == ' ' || b[2] == '\r' || b[2] == '\t'))
                return "PNM";
        if (image_looks_svg(b, len))
                return "SVG";
        return NULL;
}

/*
 * Logs, at debug level, why libvips refused, and empties its error buffer.
 * The buffer is shared by every thread, so the text may include another
 * request's error; it only goes to the debug log, never into an answer.
 */
static void image_drop_vips_error(const char *format, enum face_status st)
{
        char *msg = vips_error_buffer_copy();

        log_debug("image", "A %s image was refused with %s: %s", format,
                  face_status_code(st), msg ? msg : "");
        g_free(msg);
}

/*
 * Opens the header of bytes with the loader for format, without decoding
 * pixels.  Truncation counts as failure; the decoded pixels are kept in
 * memory (never a temporary file); GIF, WebP, TIFF and HEIF give their
 * first frame, page or primary image.
 */
static int image_open(const char *format, const void *bytes, size_t len,
                      VipsImage **out)
{
        /* libvips takes a mutable pointer but never writes through it. */
        void *buf = (void *)bytes;

        if (strcmp(format, "jpeg") == 0)
                return vips_jpegload_buffer(buf, len, out, "fail_on",
                                            VIPS_FAIL_ON_TRUNCATED, "memory",
                                            TRUE, NULL);
        if (strcmp(format, "png") == 0)
                return vips_pngload_buffer(buf, len, out, "fail_on",
                                           VIPS_FAIL_ON_TRUNCATED, "memory",
                                           TRUE, NULL);
        if (strcmp(format, "webp") == 0)
                return vips_webpload_buffer(buf, len, out, "fail_on",
                                            VIPS_FAIL_ON_TRUNCATED, "memory",
                                            TRUE, NULL);
        if (strcmp(format, "gif") == 0)
                return vips_gifload_buffer(buf, len, out, "fail_on",
                                           VIPS_FAIL_ON_TRUNCATED, "memory",
                                           TRUE, NULL);
        if (strcmp(format, "tiff") == 0)
                return vips_tiffload_buffer(buf, len, out, "fail_on",
                                            VIPS_FAIL_ON_TRUNCATED, "memory",
                                            TRUE, NULL);
        if (strcmp(format, "heif") == 0 || strcmp(format, "avif") == 0)
                return vips_heifload_buffer(buf, len, out, "fail_on",
                                            VIPS_FAIL_ON_TRUNCATED, "memory",
                                            TRUE, NULL);

        /* libvips reads BMP only through ImageMagick; the sniffer has made
         * sure these bytes are a BMP, so ImageMagick picks its BMP reader. */
        assert(strcmp(format, "bmp") == 0);
        return vips_magickload_buffer(buf, len, out, "fail_on",
                                      VIPS_FAIL_ON_TRUNCATED, "memory", TRUE,
                                      NULL);
}

/* Checks the header's size against the limits and the smallest face. */
static enum face_status image_check_size(const VipsImage *head,
                                         const struct face_image_limits *lim)
{
        uint64_t w = (uint64_t)vips_image_get_width(head);
        uint64_t h = (uint64_t)vips_image_get_height(head);

        if (w > lim->max_side || h > lim->max_side || w * h > lim->max_pixels)
                return FACE_ERR_DIMENSIONS;
        if (w < IMAGE_MIN_SIDE || h < IMAGE_MIN_SIDE)
                return FACE_ERR_IMAGE_TOO_SMALL;
        return FACE_OK;
}

/*
 * Whether an ICC profile describes sRGB, judged from its header and its
 * description tag ("sRGB IEC61966-2.1" and its kin, in the ASCII 'desc'
 * of version 2 or the UTF-16 'mluc' of version 4).  Most camera and phone
 * photos carry such a profile; converting sRGB to sRGB through the colour
 * engine changes nothing visible and costs more than the JPEG decode.
 */
static bool image_icc_is_srgb(const uint8_t *p, size_t n)
{
        /* The header is 128 bytes, then the tag count and table. */
        if (n < 132 || memcmp(p + 16, "RGB ", 4) != 0)
                return false;
        uint32_t count = image_be32(p + 128);
        for (size_t i = 0; i < count && 132 + 12 * (i + 1) <= n; i++) {
                const uint8_t *tag = p + 132 + 12 * i;
                if (memcmp(tag, "desc", 4) != 0)
                        continue;
                size_t at = image_be32(tag + 4);
                size_t size = image_be32(tag + 8);
                if (at > n || size > n - at)
                        return false;
                return memmem(p + at, size, "sRGB", 4) ||
                       memmem(p + at, size, "\0s\0R\0G\0B", 8);
        }
        return false;
}

/*
 * Builds, on top of the opened image, the pipeline to display-orientation
 * 8-bit sRGB with three bands, and stores it in *out.  Every intermediate
 * image is owned by ctx.  Nothing is decoded yet.
 */
static int image_pipeline(VipsImage *ctx, VipsImage *head, VipsImage **out)
{
        VipsImage **t =
                (VipsImage **)vips_object_local_array(VIPS_OBJECT(ctx), 7);
        VipsImage *im = head;

        /* The camera stores pixels as the sensor saw them and says in EXIF
         * how to turn them; faces are only found upright. */
        if (vips_autorot(im, &t[0], NULL))
                return -1;
        im = t[0];

        /* An embedded profile (CMYK, Display P3, Adobe RGB, grey) says what
         * the numbers mean; an sRGB one asks for nothing, and a broken one
         * is ignored rather than refused, as the pixels still read. */
        const void *icc = NULL;
        size_t icc_len = 0;
        if (vips_image_get_typeof(im, VIPS_META_ICC_NAME) &&
            vips_image_get_blob(im, VIPS_META_ICC_NAME, &icc, &icc_len) == 0 &&
            !image_icc_is_srgb(icc, icc_len)) {
                if (vips_icc_transform(im, &t[1], "srgb", "embedded", TRUE,
                                       "depth", 8, NULL) == 0)
                        im = t[1];
                else
                        vips_error_clear();
        }

        /* Grey, 16-bit, CMYK without a profile, Lab and the rest become
         * sRGB; the source space is guessed from bands and sample format,
         * since a file's own claim may be nonsense. */
        if (vips_colourspace(im, &t[2], VIPS_INTERPRETATION_sRGB,
                             "source_space",
                             vips_image_guess_interpretation(im), NULL))
                return -1;
        im = t[2];

        /* Transparent parts show as white, as an image viewer shows them. */
        if (vips_image_hasalpha(im)) {
                if (vips_flatten(im, &t[3], "background",
                                 vips_array_double_newv(1, 255.0), "max_alpha",
                                 255.0, NULL))
                        return -1;
                im = t[3];
        }

        /* Any band beyond the three colours is dropped. */
        if (vips_image_get_bands(im) > 3) {
                if (vips_extract_band(im, &t[4], 0, "n", 3, NULL))
                        return -1;
                im = t[4];
        }
        if (vips_image_get_bands(im) != 3) {
                vips_error("image", "%d bands after conversion to sRGB",
                           vips_image_get_bands(im));
                return -1;
        }
        if (vips_image_get_format(im) != VIPS_FORMAT_UCHAR) {
                if (vips_cast(im, &t[5], VIPS_FORMAT_UCHAR, NULL))
                        return -1;
                im = t[5];
        }

        *out = im;
        return 0;
}

/*
 * Decodes bytes into *out.  The checks go from cheapest to dearest: size
 * in bytes, type from the magic numbers, dimensions from the header; only
 * then are pixels decoded.  On success out->rgb is the caller's, released
 * with face_image_free(); on error *out is zeroed.  A NULL limits means
 * the defaults.  Safe to call from any number of threads at once.
 */
enum face_status face_image_decode(const void *bytes, size_t len,
                                   const struct face_image_limits *limits,
                                   struct face_image *out)
{
        struct face_image_limits defaults;
        enum face_status st = FACE_OK;
        VipsImage *head = NULL;
        VipsImage *ctx = NULL;
        VipsImage *rgb = NULL;
        VipsImage *sink = NULL;
        const char *format = NULL;

        assert(out);
        memset(out, 0, sizeof *out);
        if (!limits) {
                face_image_limits_default(&defaults);
                limits = &defaults;
        }

        /* Refusals that need no library come first. */
        if (len == 0)
                return FACE_ERR_EMPTY;
        assert(bytes);
        if (len > limits->max_bytes)
                return FACE_ERR_TOO_LARGE;
        format = face_image_sniff(bytes, len);
        if (!format)
                return FACE_ERR_UNSUPPORTED;

        /* libvips starts on the first image; HEIF may be missing from it. */
        pthread_once(&image_once, image_start_vips);
        if (!image_vips_ready)
                return FACE_ERR_INTERNAL;
        if ((strcmp(format, "heif") == 0 || strcmp(format, "avif") == 0) &&
            !image_heif_ready)
                return FACE_ERR_UNSUPPORTED;

        /* The loaders are lazy: this reads the header and no pixel. */
        if (image_open(format, bytes, len, &head)) {
                uint32_t w, h;
                st = FACE_ERR_CORRUPT;
                if (strcmp(format, "jpeg") == 0 &&
                    image_jpeg_declared(bytes, len, &w, &h) &&
                    (w > limits->max_side || h > limits->max_side))
                        st = FACE_ERR_DIMENSIONS;
                goto done;
        }
        st = image_check_size(head, limits);
        if (st != FACE_OK)
                goto done;

        /* The steps to packed RGB are set up; nothing is decoded yet. */
        ctx = vips_image_new();
        if (image_pipeline(ctx, head, &rgb)) {
                st = FACE_ERR_CORRUPT;
                goto done;
        }
        int w = vips_image_get_width(rgb);
        int h = vips_image_get_height(rgb);
        assert(vips_image_get_bands(rgb) == 3);
        assert(vips_image_get_format(rgb) == VIPS_FORMAT_UCHAR);

        /* The answer's buffer is taken before decoding starts, so that a
         * server short of memory says so instead of blaming the image. */
        size_t size = (size_t)w * (size_t)h * 3;
        out->rgb = g_try_malloc(size);
        if (!out->rgb) {
                st = FACE_ERR_NOMEM;
                goto done;
        }

        /* Decoding happens here, straight into that buffer. */
        sink = vips_image_new_from_memory(out->rgb, size, w, h, 3,
                                          VIPS_FORMAT_UCHAR);
        if (!sink || vips_image_write(rgb, sink)) {
                st = FACE_ERR_CORRUPT;
                goto done;
        }
        out->width = w;
        out->height = h;
        out->format = format;

done:
        if (sink)
                g_object_unref(sink);
        if (ctx)
                g_object_unref(ctx);
        if (head)
                g_object_unref(head);
        if (st != FACE_OK) {
                image_drop_vips_error(format, st);
                face_image_free(out);
        }
        return st;
}

/*
 * Releases the pixels of img and zeroes it; safe on a zeroed image.  The
 * pixels come from g_try_malloc(), which is malloc() since GLib 2.46, so
 * an image whose rgb the engine allocated with malloc() is released
 * rightly too.
 */
void face_image_free(struct face_image *img)
{
        if (!img)
                return;
        g_free(img->rgb);
        memset(img, 0, sizeof *img);
}
