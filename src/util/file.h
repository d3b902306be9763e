/*
 * file.h - reading a whole file into memory, for the photos the command
 * line and the benchmarks take by path.
 */
#ifndef FRAPI_FILE_H
#define FRAPI_FILE_H

#include <stddef.h>

/*
 * Reads the whole file at path into a new buffer.  On success returns 0,
 * with *data owned by the caller (free()) and *len its length.  A file
 * longer than max bytes is not read past max + 1 bytes and gives EFBIG;
 * other failures give the errno value that explains them (ENOENT, EACCES,
 * ENOMEM, EIO, ...).  On failure *data is NULL and *len 0.
 */
int file_read(const char *path, size_t max, unsigned char **data, size_t *len);

#endif
