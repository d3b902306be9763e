#include "util/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

int file_read(const char *path, size_t max, unsigned char **data, size_t *len)
{
        unsigned char *buf = NULL;
        size_t n = 0, cap = 0;
        int rc = 0;

        *data = NULL;
        *len = 0;
        FILE *f = fopen(path, "rb");
        if (!f)
                return errno;

        /* Grow by doubling up to max + 1 bytes: one byte past max is
         * enough to know the file is too large, whatever its real size. */
        for (;;) {
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 1 << 16;
                        if (ncap > max + 1)
                                ncap = max + 1;
                        if (ncap <= cap)
                                break;
                        unsigned char *nb = realloc(buf, ncap);
                        if (!nb) {
                                rc = ENOMEM;
                                goto out;
                        }
                        buf = nb;
                        cap = ncap;
                }
                size_t got = fread(buf + n, 1, cap - n, f);
                n += got;
                if (got == 0)
                        break;
        }
        if (ferror(f)) {
                rc = EIO;
                goto out;
        }
        if (n > max) {
                rc = EFBIG;
                goto out;
        }
        *data = buf;
        *len = n;
        buf = NULL;
out:
        free(buf);
        fclose(f);
        return rc;
}
