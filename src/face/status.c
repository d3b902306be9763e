/*
 * status.c - the stable codes, messages and HTTP statuses of the engine's
 * enum face_status.  The codes are part of the API contract: clients
 * switch on them, so a code never changes once shipped.
 */
#include "face/face.h"

#include <stddef.h>

struct status_row {
        const char *code;
        const char *message;
        int http;
};

/* One row per status, indexed by the enum value. */
static const struct status_row status_rows[] = {
        [FACE_OK] = {"OK", "The request succeeded.", 200},
        [FACE_ERR_EMPTY] = {"EMPTY_IMAGE", "The image is empty (zero bytes).",
                            400},
        [FACE_ERR_TOO_LARGE] = {"IMAGE_TOO_LARGE",
                                "The image has more bytes than the server "
                                "accepts.",
                                413},
        [FACE_ERR_UNSUPPORTED] = {"UNSUPPORTED_IMAGE_FORMAT",
                                  "The image is not of a supported type; send "
                                  "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIF or "
                                  "AVIF.",
                                  415},
        [FACE_ERR_CORRUPT] = {"INVALID_IMAGE",
                              "The image is cut short or damaged and cannot be "
                              "decoded.",
                              400},
        [FACE_ERR_DIMENSIONS] = {"IMAGE_DIMENSIONS_TOO_LARGE",
                                 "The image has more pixels, or a longer side, "
                                 "than the server accepts.",
                                 422},
        [FACE_ERR_IMAGE_TOO_SMALL] = {"IMAGE_TOO_SMALL",
                                      "The image is too small to hold a face.",
                                      422},
        [FACE_ERR_NOMEM] = {"SERVER_BUSY",
                            "The server is short of memory; retry later.", 503},
        [FACE_ERR_INTERNAL] = {"INTERNAL_ERROR",
                               "The server failed to process the image.", 500},
};

#define STATUS_COUNT (sizeof(status_rows) / sizeof(status_rows[0]))

/* The row for st; a value outside the enum reads as an internal error. */
static const struct status_row *status_row(enum face_status st)
{
        if ((size_t)st >= STATUS_COUNT || !status_rows[st].code)
                return &status_rows[FACE_ERR_INTERNAL];
        return &status_rows[st];
}

/*
 * Returns the stable upper-case code of st, a static string.  An unknown
 * value gives "INTERNAL_ERROR".
 */
const char *face_status_code(enum face_status st)
{
        return status_row(st)->code;
}

/*
 * Returns a one-sentence English message for st, a static string meant
 * for the person who sent the request.
 */
const char *face_status_message(enum face_status st)
{
        return status_row(st)->message;
}

/*
 * Returns the HTTP status that an API answer for st carries: 200 for
 * FACE_OK, 4xx for the caller's input, 5xx for the server's failures.
 */
int face_status_http(enum face_status st)
{
        return status_row(st)->http;
}
