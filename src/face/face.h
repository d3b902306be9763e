/*
 * face.h - the face engine: from the bytes of a photo to face boxes,
 * landmarks, embeddings, quality verdicts, liveness and attributes.
 *
 * The engine is a plain C library with no HTTP inside.  One engine loads
 * every model once; any number of threads may call face_engine_analyze()
 * on the same engine at the same time.
 *
 * Errors follow one convention: functions return enum face_status, with
 * FACE_OK (0) for success.  face_status_code() gives the stable string code
 * that the API and the command line report, face_status_http() the HTTP
 * status that goes with it.
 */
#ifndef FRAPI_FACE_H
#define FRAPI_FACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FACE_EMBEDDING_DIM 512
#define FACE_LANDMARKS     68
#define FACE_MODEL_VERSION "faceplugin-0.0.1/fr_feature"

enum face_status {
        FACE_OK = 0,
        FACE_ERR_EMPTY,           /* zero bytes of image */
        FACE_ERR_TOO_LARGE,       /* more bytes than the configured limit */
        FACE_ERR_UNSUPPORTED,     /* bytes are not an image type we read */
        FACE_ERR_CORRUPT,         /* a known type, but cut short or broken */
        FACE_ERR_DIMENSIONS,      /* too many pixels, or a side too long */
        FACE_ERR_IMAGE_TOO_SMALL, /* smaller than any face could be */
        FACE_ERR_NOMEM,           /* an allocation failed */
        FACE_ERR_INTERNAL,        /* a model failed to run */
};

/* Stable upper-case code for a status, e.g. "UNSUPPORTED_IMAGE_FORMAT". */
const char *face_status_code(enum face_status st);

/* A one-sentence English message for a status. */
const char *face_status_message(enum face_status st);

/* The HTTP status code an API answer for this status carries. */
int face_status_http(enum face_status st);

/*
 * Image decoding (image.c).
 */

struct face_image_limits {
        size_t max_bytes;    /* default 10 MB */
        uint64_t max_pixels; /* default 40 megapixels */
        uint32_t max_side;   /* default 20000 pixels */
};

/* A decoded photo: 8-bit sRGB, three channels, rows packed, display
 * orientation (EXIF orientation already applied). */
struct face_image {
        int width;
        int height;
        uint8_t *rgb;       /* width * height * 3 bytes, owned */
        const char *format; /* "jpeg", "png", ... static string */
};

/* Fills *limits with the defaults. */
void face_image_limits_default(struct face_image_limits *limits);

/*
 * Names the image type of the first len bytes ("jpeg", "png", "webp",
 * "gif", "bmp", "tiff", "heif", "avif"), judged from the bytes alone, or
 * returns NULL when the bytes are no type we know.
 */
const char *face_image_sniff(const void *bytes, size_t len);

/*
 * For the message of a FACE_ERR_UNSUPPORTED answer: "HEIF" or "AVIF" when
 * this build cannot read them, a known type we refuse ("PDF", "SVG",
 * "JPEG 2000", ...), or NULL when the bytes are of no type we recognise.
 */
const char *face_image_unsupported_name(const void *bytes, size_t len);

/*
 * Decodes bytes into *out.  The dimensions are read from the header and
 * checked against limits before any pixel is decoded.  On success the
 * caller owns out->rgb and releases it with face_image_free().  On error
 * *out is zeroed.  A NULL limits means the defaults.
 */
enum face_status face_image_decode(const void *bytes, size_t len,
                                   const struct face_image_limits *limits,
                                   struct face_image *out);

/* Releases the pixels of img and zeroes it; safe on a zeroed image. */
void face_image_free(struct face_image *img);

/*
 * Geometry.
 */

struct face_point {
        float x;
        float y;
};

/* A box in original-image pixels, clamped to the image. */
struct face_box {
        float x1, y1, x2, y2;
        float score; /* detector confidence in [0,1] */
};

/*
 * The engine.
 */

struct face_engine_config {
        const char *model_dir;  /* folder holding fr_*.onnx */
        int threads;            /* inference threads per model run; >= 1 */
        int min_face;           /* smallest face side in pixels; default 20 */
        float detect_threshold; /* detector score to keep a box */
        float liveness_threshold;
        struct face_image_limits limits;
};

/* Fills *cfg with the defaults (model_dir ".deps/models", 1 thread). */
void face_engine_config_default(struct face_engine_config *cfg);

struct face_engine;

/*
 * Loads every model named by cfg.  On success *out is an engine the caller
 * releases with face_engine_free().  On failure a message is written into
 * err (if not NULL) and FACE_ERR_INTERNAL is returned.
 */
enum face_status face_engine_new(const struct face_engine_config *cfg,
                                 struct face_engine **out, char *err,
                                 size_t errlen);

/* Releases every model of eng; no call may be running on it.  NULL is
 * accepted. */
void face_engine_free(struct face_engine *eng);

/* The configuration the engine runs with. */
const struct face_engine_config *
face_engine_config(const struct face_engine *eng);

/* What face_engine_analyze() computes beyond boxes. */
enum face_want {
        FACE_WANT_LANDMARKS = 1u << 0,
        FACE_WANT_EMBEDDING = 1u << 1 | FACE_WANT_LANDMARKS,
        FACE_WANT_QUALITY = 1u << 2 | FACE_WANT_LANDMARKS,
        FACE_WANT_LIVENESS = 1u << 3,
        FACE_WANT_ATTRIBUTES = 1u << 4 | FACE_WANT_LANDMARKS,
        FACE_WANT_ALL = 0x1f,
};

/* Reasons a face fails the quality gate (bits of face_quality.reasons). */
enum face_quality_reason {
        FACE_Q_TOO_SMALL = 1u << 0,
        FACE_Q_BLURRY = 1u << 1,
        FACE_Q_PROFILE = 1u << 2,
        FACE_Q_LOW_CONFIDENCE = 1u << 3,
};

struct face_quality {
        float size;      /* shorter box side in pixels */
        float sharpness; /* variance of the Laplacian on the aligned face */
        float yaw, pitch, roll; /* degrees, from the pose model */
        float score;            /* overall quality in [0,1] */
        unsigned reasons;       /* enum face_quality_reason bits; 0 = passes */
};

/* Writes the stable names of the reasons in q ("too_small", "blurry",
 * "profile", "low_confidence") into names, returns how many. */
int face_quality_reason_names(unsigned reasons, const char *names[4]);

struct face_attributes {
        float age;          /* years */
        const char *gender; /* "male" or "female" */
        float yaw, pitch, roll;
        const char *expression; /* e.g. "neutral", "happy" */
        bool left_eye_open;
        bool right_eye_open;
};

struct face {
        struct face_box box;
        unsigned have; /* enum face_want bits that were computed */
        struct face_point landmarks[FACE_LANDMARKS];
        struct face_point points5[5]; /* eye centres, nose tip, mouth corners */
        float embedding[FACE_EMBEDDING_DIM]; /* L2-normalised */
        struct face_quality quality;
        float liveness; /* live score in [0,1] */
        bool live;      /* liveness >= threshold */
        struct face_attributes attr;
};

struct face_list {
        int count;          /* faces analysed, at most max_faces */
        int found;          /* faces the detector found, before the cap */
        struct face *faces; /* largest box first; owned */
};

/*
 * Finds every face in img (out->found of them) and computes what `want`
 * asks for on at most max_faces of them (out->count, largest first; 0
 * means no cap).  On success the caller releases
 * out with face_list_free().  Finding no face is success with count 0.
 */
enum face_status face_engine_analyze(struct face_engine *eng,
                                     const struct face_image *img,
                                     unsigned want, int max_faces,
                                     struct face_list *out);

/* Releases the faces of list and zeroes it; safe on a zeroed list. */
void face_list_free(struct face_list *list);

/*
 * Similarity of two L2-normalised embeddings on the documented 0..1 scale
 * (the cosine, clamped below at 0).  Symmetric; a face with itself is 1.
 */
float face_similarity(const float *a, const float *b);

/*
 * The default match threshold on that scale.  bench/accuracy on lfw-dev
 * puts the best-accuracy threshold near 0.27 and the highest impostor
 * pair at 0.33; different people in one sample group photo reach 0.41
 * (a mirrored cut-out against a neighbour turned the other way).  0.45
 * keeps false matches rare at a cost in true accepts (94.9 % on lfw-dev;
 * numbers in docs/engine.md).
 */
#define FACE_DEFAULT_MATCH_THRESHOLD 0.45f

#endif
