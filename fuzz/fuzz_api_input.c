/*
 * fuzz_api_input - arbitrary bytes through the UTF-8 check of multipart
 * text fields; it must never read past len, and agree with a slow
 * decoder written from the definition.  The same bytes, as a field name
 * the client sent, through the shortening that error messages show: the
 * result must be valid UTF-8 and fit its buffer.
 */
#include "api/api_input.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The definition, one code point at a time, without shortcuts. */
static bool slow_ok(const uint8_t *p, size_t len)
{
        size_t i = 0;
        while (i < len) {
                uint32_t cp;
                size_t n;
                if (p[i] < 0x80) {
                        i++;
                        continue;
                } else if ((p[i] & 0xe0) == 0xc0) {
                        n = 2;
                        cp = p[i] & 0x1f;
                } else if ((p[i] & 0xf0) == 0xe0) {
                        n = 3;
                        cp = p[i] & 0x0f;
                } else if ((p[i] & 0xf8) == 0xf0) {
                        n = 4;
                        cp = p[i] & 0x07;
                } else {
                        return false;
                }
                if (i + n > len)
                        return false;
                for (size_t k = 1; k < n; k++) {
                        if ((p[i + k] & 0xc0) != 0x80)
                                return false;
                        cp = cp << 6 | (p[i + k] & 0x3f);
                }
                static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
                if (cp < min[n] || cp > 0x10ffff ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                i += n;
        }
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        /* A private copy, so reading one byte too far is caught. */
        char *copy = malloc(size ? size : 1);
        if (!copy)
                return 0;
        for (size_t i = 0; i < size; i++)
                copy[i] = (char)data[i];
        if (api_input_utf8_ok(copy, size) != slow_ok(data, size))
                abort();

        /* As a NUL-terminated field name, cut at its first NUL. */
        char *name = malloc(size + 1);
        char shown[API_FIELD_SHOWN_MAX];
        if (name) {
                memcpy(name, data, size);
                name[size] = '\0';
                api_input_shown_name(name, shown, sizeof shown);
                size_t n = strnlen(shown, sizeof shown);
                if (n == sizeof shown || !slow_ok((const uint8_t *)shown, n))
                        abort();
                free(name);
        }
        free(copy);
        return 0;
}
