/*
 * api_input.h - reading what a client sent to an image route, the same
 * way whether the body is multipart/form-data or JSON: text fields,
 * numbers, booleans, metadata objects and images (file parts, or base64
 * strings with or without a data: prefix).
 *
 * Every function follows the validate-or-respond rule: it returns true
 * with the value, or false after answering 400 with a code and a message
 * naming the field.  Strings returned live as long as the request.
 */
#ifndef FRAPI_API_INPUT_H
#define FRAPI_API_INPUT_H

#include "face/face.h"
#include "http/http.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define API_NAME_MAX        256
#define API_EXTERNAL_ID_MAX 128
#define API_METADATA_MAX    16384

/* True when the len bytes at s are well-formed UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF). */
bool api_input_utf8_ok(const char *s, size_t len);

/*
 * Why the len bytes at s cannot be a stored text such as a name or an
 * external id: NULL when they can, else the end of a sentence that starts
 * with the field's name ("is not valid UTF-8 text").  Refused: bad UTF-8,
 * NUL bytes, control characters (C0, DEL, C1), and text that is empty
 * once Unicode white space and zero-width spaces are trimmed.  Anything
 * else (any script, emoji, combining marks) is kept byte for byte.
 */
const char *api_input_text_problem(const char *s, size_t len);

/* The longest field name shown in a message or param, NUL included. */
#define API_FIELD_SHOWN_MAX 101

/*
 * Copies name into buf (size bytes, at least 1) the way a message and a
 * param may show it: cut at a character boundary to fit, and with every
 * byte that is not part of well-formed UTF-8 replaced by '?' (a multipart
 * part name is bytes nobody has checked).
 */
void api_input_shown_name(const char *name, char *buf, size_t size);

/* Writes the names of known (NULL-terminated) into buf as "a, b and c",
 * cut to size bytes. */
void api_input_known_list(const char *const *known, char *buf, size_t size);

/* The name of the first member of the JSON object obj that is not among
 * known (NULL-terminated), or NULL when every one is (or obj is no
 * object).  The name belongs to obj. */
const char *api_input_unknown_member(json_t *obj, const char *const *known);

/*
 * Refuses a field the route does not take: a member of a JSON object
 * body, or a part of a multipart or form body (a file part or a text
 * field), whose name is not among known (NULL-terminated).  Answers 400
 * INVALID_PARAMETER naming the field, with the fields the route takes,
 * and returns false; true when every field is known.  A bare JSON array
 * and an empty body pass.
 */
bool api_input_only(struct http_request *req, const char *const *known);

/* The same for the query string: a query argument outside known
 * (NULL-terminated), one given twice, or one without '=' is answered
 * 400 INVALID_PARAMETER naming it, and false is returned. */
bool api_input_query_only(struct http_request *req, const char *const *known);

/* Tells whether a part outside known is one the route takes after all
 * (a file part that a batch item names). */
typedef bool (*api_input_part_fn)(void *cls, const struct http_part *part);

/* As api_input_only(), but a part for which accept(cls, part) is true
 * passes too; also (may be NULL) ends the message's list of fields, e.g.
 * " and the file parts its items name". */
bool api_input_only_parts(struct http_request *req, const char *const *known,
                          api_input_part_fn accept, void *cls,
                          const char *also);

/* True when the field is present in the body at all (JSON member, even
 * null, or a multipart part). */
bool api_input_has(struct http_request *req, const char *name);

/*
 * A text field: absent gives *out NULL (a 400 MISSING_PARAMETER when
 * required).  It must be a string that api_input_text_problem() accepts,
 * of at most maxlen bytes.  JSON null counts as absent.
 */
bool api_input_text(struct http_request *req, const char *name, bool required,
                    size_t maxlen, const char **out);

/* A number in [min, max]; absent gives def.  -0 gives 0. */
bool api_input_double(struct http_request *req, const char *name, double def,
                      double min, double max, double *out);

/* A whole number in [min, max]; absent gives def. */
bool api_input_int(struct http_request *req, const char *name, long def,
                   long min, long max, long *out);

/* A boolean (JSON true/false; "true"/"false"/"1"/"0" in a form). */
bool api_input_bool(struct http_request *req, const char *name, bool def,
                    bool *out);

/* A metadata object of at most API_METADATA_MAX bytes as compact JSON
 * text; absent gives *out NULL. */
bool api_input_metadata(struct http_request *req, const char *name,
                        const char **out);

/*
 * The bytes of image field name: a multipart part of that name, or a
 * JSON string of base64 (a "data:<type>;base64," prefix is allowed).
 * Absent gives *data NULL, or a 400 MISSING_IMAGE when required.
 */
bool api_input_image_bytes(struct http_request *req, const char *name,
                           bool required, const unsigned char **data,
                           size_t *len);

/*
 * Answers 400 MISSING_IMAGE, as api_input_image_bytes() does, unless image
 * field name is present (a part, or a JSON member that is not null).
 * Reads no byte of it: image routes call it first, so that a request
 * without its image is told so before anything else.
 */
bool api_input_require_image(struct http_request *req, const char *name);

/*
 * Decodes image field name into *img, which must live as long as the
 * request (request memory): the request releases the pixels at its end.  The
 * type is judged from the bytes alone.  A decode failure answers with the
 * engine's status and code.
 */
bool api_input_image(struct http_request *req, const char *name,
                     const struct face_image_limits *limits,
                     struct face_image *img);

/* Answers the engine status st (not FACE_OK) naming param. */
void api_input_reply_face_status(struct http_request *req, enum face_status st,
                                 const char *param);

#endif
