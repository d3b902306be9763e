/*
 * fuzz_image.c - uploaded photos are untrusted bytes: feed arbitrary bytes
 * to the sniffer and the decoder, with limits small enough that a hostile
 * header cannot make a single run take much memory or time.
 *
 * Seeds: small files of every accepted type, made with `vips copy`, e.g.
 * `vips copy .deps/photos/sample1.jpg[shrink=8] seed.gif` (see
 * docs/engine.md).
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "face/face.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Where the pixels read are summed, so the reads are not optimised out. */
static volatile unsigned sink;

/* Stops the run when an answer breaks the decoder's contract. */
static void check(int ok)
{
        if (!ok)
                __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const struct face_image_limits lim = {
                .max_bytes = 1 << 20,
                .max_pixels = 1 << 20,
                .max_side = 2048,
        };
        struct face_image img;

        /* The sniffer and the namer read only the bytes they are given. */
        const char *type = face_image_sniff(data, size);
        const char *name = face_image_unsupported_name(data, size);
        check(!(type && name) || strcmp(type, "heif") == 0 ||
              strcmp(type, "avif") == 0);

        /* A decoded image is whole, inside the limits and of the sniffed
         * type; a refused one leaves nothing behind. */
        enum face_status st = face_image_decode(data, size, &lim, &img);
        if (st == FACE_OK) {
                check(type && img.format && strcmp(type, img.format) == 0);
                check(img.width >= 16 && img.height >= 16);
                check((uint64_t)img.width * img.height <= lim.max_pixels);
                check(img.rgb != NULL);
                /* Read every byte, so ASan sees a buffer cut short. */
                for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++)
                        sink += img.rgb[i];
        } else {
                check(img.rgb == NULL && img.width == 0 && img.height == 0);
                check(face_status_http(st) >= 400);
        }
        face_image_free(&img);
        return 0;
}
