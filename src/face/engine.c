/*
 * engine.c - the face engine: detection over a multi-scale tiling,
 * landmarks, alignment, embedding, quality, liveness and attributes.
 * See face.h for the contracts and docs/engine.md for the numbers.
 */
#include "face/face.h"
#include "face/geometry.h"
#include "face/model.h"
#include "face/timing.h"
#include "util/log.h"

#include <assert.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Detector input and its outputs (Ultra-Light RFB-320: boxes already
 * decoded to corners in [0,1] of the input). */
#define DET_W      320
#define DET_H      240
#define DET_PRIORS 4420
/* Smallest face side, in detector-input pixels, found reliably. */
#define DET_MIN_SIDE 12.0f
/* Tiles of one level overlap by this much, so a face up to this side
 * lies whole in some tile; larger faces come from coarser levels. */
#define DET_OVERLAP     64
#define DET_NMS_IOU     0.4f
#define DET_NMS_CONTAIN 0.6f
/* The second look frames a candidate at this height, and wants a box
 * overlapping it this much. */
#define DET_VERIFY_SIDE 80.0f
#define DET_VERIFY_IOU  0.5f
/* Zooming a small face more than this blurs it past recognition. */
#define DET_VERIFY_MAX_ZOOM 2.0f

/* Where the mean of the 68 points sits in the detector's square box, as
 * a fraction of its side from the centre (measured on lfw-dev). */
#define LMK_MEAN_DX 0.0f
#define LMK_MEAN_DY 0.089f

/* Channel order the embedding model reads (0 = RGB), and the output
 * class of the eye model that means "open". */
#ifndef EMB_BGR
#define EMB_BGR 1
#endif
#define EYE_OPEN_CLASS 1

#define LMK_SIZE     64
#define EMB_SIZE     112
#define LIVE_SIZE    128
#define LIVE_CONTEXT 2.7f
#define AGE_SIZE     64
#define AGE_CONTEXT  1.4f
#define POSE_SIZE    224
#define EXPR_SIZE    224
#define EYE_SIZE     24

/* Quality gate; see docs/engine.md for how they were chosen. */
#define Q_MIN_SIZE      80.0f
#define Q_MIN_SHARPNESS 30.0f
#define Q_MAX_YAW       35.0f
#define Q_MAX_PITCH     30.0f
#define Q_MIN_SCORE     0.85f

static const char *const expression_labels[7] = {
        "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral",
};

struct face_engine {
        struct face_engine_config cfg;
        char model_dir[4096];
        struct face_model *detect, *landmark, *feature, *liveness, *pose, *age,
                *gender, *expression, *eye;
};

/* A growing array of candidate boxes from all tiles. */
struct boxes {
        struct face_box *v;
        int n, cap;
};

void face_engine_config_default(struct face_engine_config *cfg)
{
        memset(cfg, 0, sizeof *cfg);
        cfg->model_dir = ".deps/models";
        cfg->threads = 1;
        cfg->min_face = 20;
        cfg->detect_threshold = 0.7f;
        cfg->liveness_threshold = 0.5f;
        face_image_limits_default(&cfg->limits);
}

const struct face_engine_config *
face_engine_config(const struct face_engine *eng)
{
        return &eng->cfg;
}

/*
 * Loading and releasing.
 */

void face_engine_free(struct face_engine *eng)
{
        if (!eng)
                return;
        face_model_free(eng->eye);
        face_model_free(eng->expression);
        face_model_free(eng->gender);
        face_model_free(eng->age);
        face_model_free(eng->pose);
        face_model_free(eng->liveness);
        face_model_free(eng->feature);
        face_model_free(eng->landmark);
        face_model_free(eng->detect);
        free(eng);
}

static struct face_model *load(struct face_engine *eng, const char *file,
                               int64_t c, int64_t h, int64_t w,
                               const char *const *outs, int n_outs, char *err,
                               size_t errlen)
{
        const int64_t shape[4] = {1, c, h, w};

        return face_model_load(eng->model_dir, file, eng->cfg.threads, shape,
                               outs, n_outs, err, errlen);
}

enum face_status face_engine_new(const struct face_engine_config *cfg,
                                 struct face_engine **out, char *err,
                                 size_t errlen)
{
        static const char *const det_out[] = {"scores", "boxes"};
        static const char *const one_out[] = {"output"};
        static const char *const pose_out[] = {"output", "617", "618"};
        static const char *const ssr_out[] = {
                "prob_stage_1",        "prob_stage_2",
                "prob_stage_3",        "stage1_delta_k",
                "stage2_delta_k",      "stage3_delta_k",
                "index_offset_stage1", "index_offset_stage2",
                "index_offset_stage3",
        };
        char dummy[256];
        struct face_engine *eng;

        *out = NULL;
        if (!err) {
                err = dummy;
                errlen = sizeof dummy;
        }
        err[0] = '\0';
        if (!cfg || !cfg->model_dir || cfg->threads < 1 || cfg->min_face < 1 ||
            strlen(cfg->model_dir) >= sizeof eng->model_dir) {
                snprintf(err, errlen, "invalid engine configuration");
                return FACE_ERR_INTERNAL;
        }
        eng = calloc(1, sizeof *eng);
        if (!eng) {
                snprintf(err, errlen, "out of memory");
                return FACE_ERR_NOMEM;
        }
        eng->cfg = *cfg;
        strcpy(eng->model_dir, cfg->model_dir);
        eng->cfg.model_dir = eng->model_dir;

        /* Every model loads now, once; a missing one stops the start. */
        if (!(eng->detect = load(eng, "fr_detect", 3, DET_H, DET_W, det_out, 2,
                                 err, errlen)) ||
            !(eng->landmark = load(eng, "fr_landmark", 1, LMK_SIZE, LMK_SIZE,
                                   one_out, 1, err, errlen)) ||
            !(eng->feature = load(eng, "fr_feature", 3, EMB_SIZE, EMB_SIZE,
                                  one_out, 1, err, errlen)) ||
            !(eng->liveness = load(eng, "fr_liveness", 3, LIVE_SIZE, LIVE_SIZE,
                                   one_out, 1, err, errlen)) ||
            !(eng->pose = load(eng, "fr_pose", 3, POSE_SIZE, POSE_SIZE,
                               pose_out, 3, err, errlen)) ||
            !(eng->age = load(eng, "fr_age", 3, AGE_SIZE, AGE_SIZE, ssr_out, 9,
                              err, errlen)) ||
            !(eng->gender = load(eng, "fr_gender", 3, AGE_SIZE, AGE_SIZE,
                                 ssr_out, 9, err, errlen)) ||
            !(eng->expression = load(eng, "fr_expression", 3, EXPR_SIZE,
                                     EXPR_SIZE, one_out, 1, err, errlen)) ||
            !(eng->eye = load(eng, "fr_eye", 1, EYE_SIZE, EYE_SIZE, one_out, 1,
                              err, errlen))) {
                face_engine_free(eng);
                return FACE_ERR_INTERNAL;
        }
        log_info("face",
                 "The face engine loaded its models from %s with %d "
                 "thread(s) per run.",
                 eng->model_dir, eng->cfg.threads);
        *out = eng;
        return FACE_OK;
}

/*
 * Tensor helpers: planar float tensors from sampled RGB pictures.
 */

/* Writes (p - mean[c]) / std[c] for channel order RGB (bgr = 0) or BGR.
 * The 256 values of each channel are computed once per call, with the
 * same float arithmetic, and looked up per pixel. */
static void to_planar(const uint8_t *rgb, int w, int h, int bgr,
                      const float mean[3], const float inv_std[3], float *out)
{
        size_t plane = (size_t)w * h;
        float lut[3][256];

        for (int c = 0; c < 3; c++)
                for (int v = 0; v < 256; v++)
                        lut[c][v] = (v - mean[c]) * inv_std[c];

        for (int c = 0; c < 3; c++) {
                const uint8_t *p = rgb + (bgr ? 2 - c : c);
                const float *t = lut[c];
                float *o = out + c * plane;

                for (size_t i = 0; i < plane; i++)
                        o[i] = t[p[i * 3]];
        }
}

static void to_grey(const uint8_t *rgb, int w, int h, float scale, float *out)
{
        for (size_t i = 0; i < (size_t)w * h; i++)
                out[i] = (0.299f * rgb[i * 3] + 0.587f * rgb[i * 3 + 1] +
                          0.114f * rgb[i * 3 + 2]) *
                         scale;
}

static void softmax(float *v, int n)
{
        float mx = v[0], sum = 0;

        for (int i = 1; i < n; i++)
                mx = fmaxf(mx, v[i]);
        for (int i = 0; i < n; i++) {
                v[i] = expf(v[i] - mx);
                sum += v[i];
        }
        for (int i = 0; i < n; i++)
                v[i] /= sum;
}

/* Now, if this thread records stage times, else 0. */
static double stage_start(void)
{
        return face_timing_current() ? face_timing_now() : 0;
}

/* Adds the time since t0 to the stage at offset in the recording. */
static void stage_add(size_t offset, double t0)
{
        struct face_timing *t = face_timing_current();

        if (t)
                *(double *)((char *)t + offset) += face_timing_now() - t0;
}

/*
 * Detection.
 */

static int boxes_push(struct boxes *b, struct face_box box)
{
        if (b->n == b->cap) {
                int cap = b->cap ? b->cap * 2 : 64;
                struct face_box *v = realloc(b->v, (size_t)cap * sizeof *v);

                if (!v)
                        return -1;
                b->v = v;
                b->cap = cap;
        }
        b->v[b->n++] = box;
        return 0;
}

/* Scratch buffers for detector runs, and the detector's input value of
 * each 8-bit sample, (v - 127) / 128. */
struct det_scratch {
        uint8_t *pix;
        float *tensor, *scores, *locs;
        float lut[256];
};

/* Runs the detector on the DET_W x DET_H window at (x0, y0) of the photo
 * scaled by s; fills the scratch scores and boxes. */
static int run_window(struct face_engine *eng, const struct face_pyramid *pyr,
                      float s, float x0, float y0, struct det_scratch *d)
{
        static const float mean[3] = {127, 127, 127};
        static const float inv[3] = {1 / 128.f, 1 / 128.f, 1 / 128.f};
        struct face_affine m = {1 / s, 0,     (x0 + 0.5) / s - 0.5,
                                0,     1 / s, (y0 + 0.5) / s - 0.5};
        float *outs[2] = {d->scores, d->locs};
        const size_t lens[2] = {DET_PRIORS * 2, DET_PRIORS * 4};

        face_geom_sample(pyr, &m, DET_W, DET_H, d->pix);
        to_planar(d->pix, DET_W, DET_H, 0, mean, inv, d->tensor);
        return face_model_run(eng->detect, d->tensor, outs, lens);
}

/* A level of the scan: the photo scaled by s, sampled once so that its
 * overlapping tiles are plain copies. */
struct det_level {
        float s;
        int w, h;
        uint8_t *rgb;
};

/* Runs the detector on the tile at (x0, y0) of the level; what lies
 * beyond the level's edge is black, as the sampler would make it. */
static int run_tile(struct face_engine *eng, const struct det_level *lv, int x0,
                    int y0, struct det_scratch *d)
{
        const float black = -127 / 128.f;
        const size_t plane = (size_t)DET_W * DET_H;
        float *outs[2] = {d->scores, d->locs};
        const size_t lens[2] = {DET_PRIORS * 2, DET_PRIORS * 4};
        const float *lut = d->lut;

        for (int y = 0; y < DET_H; y++) {
                float *r = d->tensor + (size_t)y * DET_W;
                const uint8_t *p =
                        lv->rgb + ((size_t)(y0 + y) * lv->w + x0) * 3;
                int n = y0 + y < lv->h ? lv->w - x0 : 0;

                n = n > DET_W ? DET_W : n;
                for (int x = 0; x < n; x++, p += 3) {
                        r[x] = lut[p[0]];
                        r[plane + x] = lut[p[1]];
                        r[2 * plane + x] = lut[p[2]];
                }
                for (int x = n; x < DET_W; x++)
                        r[x] = r[plane + x] = r[2 * plane + x] = black;
        }
        return face_model_run(eng->detect, d->tensor, outs, lens);
}

/* Prior i of the last run as a box in photo pixels. */
static struct face_box window_box(const struct det_scratch *d, int i, float s,
                                  float x0, float y0)
{
        struct face_box b = {
                (x0 + d->locs[4 * i] * DET_W) / s,
                (y0 + d->locs[4 * i + 1] * DET_H) / s,
                (x0 + d->locs[4 * i + 2] * DET_W) / s,
                (y0 + d->locs[4 * i + 3] * DET_H) / s,
                d->scores[2 * i + 1],
        };
        return b;
}

/* One tile of a level.  Boxes cut by an edge shared with a neighbouring
 * tile are dropped: that neighbour sees the whole face. */
static enum face_status detect_tile(struct face_engine *eng,
                                    const struct det_level *lv, int x0, int y0,
                                    struct det_scratch *d, struct boxes *found)
{
        float s = lv->s;
        int sw = lv->w, sh = lv->h;

        if (run_tile(eng, lv, x0, y0, d))
                return FACE_ERR_INTERNAL;

        for (int i = 0; i < DET_PRIORS; i++) {
                float sc = d->scores[2 * i + 1];
                float tx1 = d->locs[4 * i] * DET_W;
                float ty1 = d->locs[4 * i + 1] * DET_H;
                float tx2 = d->locs[4 * i + 2] * DET_W;
                float ty2 = d->locs[4 * i + 3] * DET_H;

                if (sc < eng->cfg.detect_threshold || tx2 <= tx1 || ty2 <= ty1)
                        continue;
                if ((x0 > 0 && tx1 < 2) || (y0 > 0 && ty1 < 2) ||
                    (x0 + DET_W < sw && tx2 > DET_W - 2) ||
                    (y0 + DET_H < sh && ty2 > DET_H - 2))
                        continue;
                if (boxes_push(found,
                               window_box(d, i, s, (float)x0, (float)y0)))
                        return FACE_ERR_NOMEM;
        }
        return FACE_OK;
}

/*
 * Second look at a candidate: the detector again on a window centred on
 * it, scaled so the box is DET_VERIFY_SIDE pixels high.  Texture that
 * fooled one tiling rarely fools a second framing; a real face comes
 * back with a tighter box.  Returns 1 if confirmed (box refined), 0 if
 * not, -1 on failure.
 */
static int verify(struct face_engine *eng, const struct face_pyramid *pyr,
                  struct face_box *box, struct det_scratch *d)
{
        float side = box->y2 - box->y1;
        float s = fminf(DET_VERIFY_SIDE / side, DET_VERIFY_MAX_ZOOM);
        float x0 = (box->x1 + box->x2) / 2 * s - DET_W / 2.0f;
        float y0 = (box->y1 + box->y2) / 2 * s - DET_H / 2.0f;
        struct face_box best = {0};
        float best_iou = 0;

        if (run_window(eng, pyr, s, x0, y0, d))
                return -1;
        for (int i = 0; i < DET_PRIORS; i++) {
                struct face_box b;
                float iou;

                if (d->scores[2 * i + 1] < eng->cfg.detect_threshold)
                        continue;
                b = window_box(d, i, s, x0, y0);
                iou = face_geom_iou(&b, box);
                if (iou > best_iou ||
                    (iou == best_iou && b.score > best.score)) {
                        best = b;
                        best_iou = iou;
                }
        }
        if (best_iou < DET_VERIFY_IOU)
                return 0;
        best.score = fmaxf(best.score, box->score);
        *box = best;
        return 1;
}

/* Tile origins along one side of length len: enough DET-sized tiles with
 * at least DET_OVERLAP pixels in common. */
static int tile_count(int len, int tile)
{
        if (len <= tile)
                return 1;
        return 1 +
               (len - tile + (tile - DET_OVERLAP) - 1) / (tile - DET_OVERLAP);
}

static int tile_origin(int i, int count, int len, int tile)
{
        if (count == 1)
                return 0;
        /* Spread evenly so the last tile ends at the far edge. */
        return (int)((long)i * (len - tile) / (count - 1));
}

/* Scans the photo scaled by s with overlapping tiles. */
static enum face_status scan_level(struct face_engine *eng,
                                   const struct face_pyramid *pyr, float s,
                                   struct det_scratch *d, struct boxes *found)
{
        struct det_level lv = {s, (int)ceilf(pyr->width[0] * s),
                               (int)ceilf(pyr->height[0] * s), NULL};
        int nx = tile_count(lv.w, DET_W), ny = tile_count(lv.h, DET_H);
        struct face_affine m = {1 / s, 0,     0.5 / s - 0.5,
                                0,     1 / s, 0.5 / s - 0.5};
        enum face_status st = FACE_OK;

        lv.rgb = malloc((size_t)lv.w * lv.h * 3);
        if (!lv.rgb)
                return FACE_ERR_NOMEM;
        face_geom_sample(pyr, &m, lv.w, lv.h, lv.rgb);
        for (int ty = 0; ty < ny && st == FACE_OK; ty++)
                for (int tx = 0; tx < nx && st == FACE_OK; tx++)
                        st = detect_tile(
                                eng, &lv, tile_origin(tx, nx, lv.w, DET_W),
                                tile_origin(ty, ny, lv.h, DET_H), d, found);
        free(lv.rgb);
        return st;
}

/*
 * Finds faces: the whole photo scaled into one detector input, then finer
 * scales (twice as fine each step) cut into overlapping tiles until the
 * configured minimum face is DET_MIN_SIDE pixels at the detector.
 * Returns square boxes (the detector's height as side, as the landmark
 * model expects) in photo pixels, not clamped.
 */
static enum face_status detect(struct face_engine *eng,
                               const struct face_pyramid *pyr,
                               struct boxes *found)
{
        int W = pyr->width[0], H = pyr->height[0];
        float s = fminf((float)DET_W / W, (float)DET_H / H);
        float s_max = DET_MIN_SIDE / (float)eng->cfg.min_face;
        enum face_status st = FACE_ERR_NOMEM;
        struct det_scratch d = {
                .pix = malloc(DET_W * DET_H * 3),
                .tensor = malloc(sizeof(float) * DET_W * DET_H * 3),
                .scores = malloc(sizeof(float) * DET_PRIORS * 2),
                .locs = malloc(sizeof(float) * DET_PRIORS * 4),
        };
        int kept = 0;

        if (!d.pix || !d.tensor || !d.scores || !d.locs)
                goto release;
        for (int v = 0; v < 256; v++)
                d.lut[v] = (v - 127) * (1 / 128.f);

        /* Level by level, coarse to fine. */
        for (;;) {
                st = scan_level(eng, pyr, s, &d, found);
                if (st != FACE_OK)
                        goto release;
                if (s * 1.3f >= s_max)
                        break;
                s = fminf(s * 2, s_max);
        }

        /* One box per face across tiles and levels; each survivor gets a
         * second look, and the refined boxes are merged once more. */
        found->n =
                face_geom_nms(found->v, found->n, DET_NMS_IOU, DET_NMS_CONTAIN);
        for (int i = 0; i < found->n; i++) {
                int ok = verify(eng, pyr, &found->v[i], &d);

                if (ok < 0) {
                        st = FACE_ERR_INTERNAL;
                        goto release;
                }
                if (ok)
                        found->v[kept++] = found->v[i];
        }
        found->n = face_geom_nms(found->v, kept, DET_NMS_IOU, DET_NMS_CONTAIN);

        /* Square boxes of the detector's height, as the landmark model
         * expects. */
        kept = 0;
        for (int i = 0; i < found->n; i++) {
                struct face_box b = found->v[i];
                float side = b.y2 - b.y1;
                float cx = (b.x1 + b.x2) / 2, cy = (b.y1 + b.y2) / 2;

                if (side < eng->cfg.min_face)
                        continue;
                b.x1 = cx - side / 2;
                b.x2 = cx + side / 2;
                b.y1 = cy - side / 2;
                b.y2 = cy + side / 2;
                found->v[kept++] = b;
        }
        found->n = kept;
        st = FACE_OK;
release:
        free(d.locs);
        free(d.scores);
        free(d.tensor);
        free(d.pix);
        return st;
}

/*
 * Landmarks and alignment.
 */

/* The iBUG 68-point index of each point's mirror image. */
static const unsigned char mirror68[68] = {
        16, 15, 14, 13, 12, 11, 10, 9,  8,  7,  6,  5,  4,  3,  2,  1,  0,
        26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 27, 28, 29, 30, 35, 34, 33,
        32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52,
        51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65,
};

/* The landmark model is made for upright faces.  On a face turned by a
 * quarter or half turn (a phone photo without its EXIF tag) it still
 * answers, but its answers for the crop and for the crop's mirror image
 * disagree: on lfw-dev the mean distance between them is 0.004-0.018 of
 * the crop's side for upright faces (one of 100 at 0.039) and 0.015-0.26
 * for turned ones (all but 3 of 211 above 0.025).  Above LMK_SUSPECT the
 * other three quarter turns are tried, and one is taken when its answers
 * agree LMK_TURN_GAIN times better. */
#define LMK_SUSPECT   0.02f
#define LMK_TURN_GAIN 0.5f

/* A square crop of the photo: its top-left corner and side as if
 * upright, and how many quarter turns (0-3, clockwise on screen) the
 * face in it is turned about its centre. */
struct lmk_frame {
        float x, y, side;
        int turns;
};

/* Photo point of the crop point at fractions (fx, fy) of the frame, as
 * the model sees it (upright). */
static struct face_point frame_point(const struct lmk_frame *fr, float fx,
                                     float fy)
{
        static const int cs[4][2] = {{1, 0}, {0, 1}, {-1, 0}, {0, -1}};

        /* Upright, the plain formula: the same floats as before turns
         * existed, so upright faces keep their landmarks to the bit. */
        if (fr->turns == 0)
                return (struct face_point){fr->x + fx * fr->side,
                                           fr->y + fy * fr->side};

        const int c = cs[fr->turns][0], s = cs[fr->turns][1];
        float h = fr->side / 2, u = fx * fr->side - h, v = fy * fr->side - h;
        return (struct face_point){fr->x + h + c * u - s * v,
                                   fr->y + h + s * u + c * v};
}

/* Runs the landmark model on the frame, and on its mirror image; the two
 * answers are averaged into out (photo coordinates).  Returns how much
 * they disagree (mean distance, as a fraction of the side), or -1. */
static float landmarks_in(struct face_engine *eng,
                          const struct face_pyramid *pyr,
                          const struct lmk_frame *fr, struct face_point out[68])
{
        uint8_t pix[LMK_SIZE * LMK_SIZE * 3];
        float tensor[LMK_SIZE * LMK_SIZE], mirror[LMK_SIZE * LMK_SIZE];
        float a[136], b[136];
        float *oa[1] = {a}, *ob[1] = {b};
        const size_t len[1] = {136};
        double apart = 0;
        struct face_affine m = face_geom_box_map(fr->x, fr->y, fr->side,
                                                 fr->side, LMK_SIZE, LMK_SIZE);

        /* A turned frame: output pixel (u, v) reads the photo where
         * frame_point() puts the centre of that pixel. */
        if (fr->turns) {
                const float q = 1.0f / LMK_SIZE;
                struct face_point o = frame_point(fr, q / 2, q / 2);
                struct face_point du = frame_point(fr, q * 1.5f, q / 2);
                struct face_point dv = frame_point(fr, q / 2, q * 1.5f);
                m = (struct face_affine){du.x - o.x, dv.x - o.x, o.x - 0.5,
                                         du.y - o.y, dv.y - o.y, o.y - 0.5};
        }

        face_geom_sample(pyr, &m, LMK_SIZE, LMK_SIZE, pix);
        to_grey(pix, LMK_SIZE, LMK_SIZE, 1 / 256.f, tensor);
        for (int r = 0; r < LMK_SIZE; r++)
                for (int c = 0; c < LMK_SIZE; c++)
                        mirror[r * LMK_SIZE + c] =
                                tensor[r * LMK_SIZE + LMK_SIZE - 1 - c];
        if (face_model_run(eng->landmark, tensor, oa, len) ||
            face_model_run(eng->landmark, mirror, ob, len))
                return -1;

        /* Outputs are fractions of the crop; the mirror's x runs backwards
         * and its points swap sides. */
        for (int i = 0; i < 68; i++) {
                int j = mirror68[i];
                float mx = 1.0f - b[2 * j], my = b[2 * j + 1];
                float dx = a[2 * i] - mx, dy = a[2 * i + 1] - my;

                apart += sqrt((double)dx * dx + (double)dy * dy);
                out[i] = frame_point(fr, (a[2 * i] + mx) / 2,
                                     (a[2 * i + 1] + my) / 2);
        }
        return (float)(apart / 68);
}

/*
 * 68 landmarks of the face in frame fr in two passes: the first on the
 * frame as given (the detector's box), the second on a frame re-centred
 * on the first pass' points, so that the crop sits on the face the way
 * the model was trained, whatever the detector's offset.  Returns the
 * second pass' disagreement, or -1.
 */
static float landmarks_turned(struct face_engine *eng,
                              const struct face_pyramid *pyr,
                              struct lmk_frame fr, struct face_point out[68])
{
        float cx = 0, cy = 0;

        if (landmarks_in(eng, pyr, &fr, out) < 0)
                return -1;
        for (int i = 0; i < 68; i++) {
                cx += out[i].x;
                cy += out[i].y;
        }
        cx /= 68;
        cy /= 68;

        /* The points' mean sits this far from the box centre on average
         * (measured on LFW), in the face's own up and down; put the next
         * crop where the detector would. */
        if (fr.turns == 0) {
                cx -= LMK_MEAN_DX * fr.side;
                cy -= LMK_MEAN_DY * fr.side;
        } else {
                struct lmk_frame at = {cx - fr.side / 2, cy - fr.side / 2,
                                       fr.side, fr.turns};
                struct face_point off = frame_point(&at, 0.5f + LMK_MEAN_DX,
                                                    0.5f + LMK_MEAN_DY);
                cx -= off.x - cx;
                cy -= off.y - cy;
        }
        fr.x = cx - fr.side / 2;
        fr.y = cy - fr.side / 2;
        return landmarks_in(eng, pyr, &fr, out);
}

/* The landmarks of the face in box: upright first, and the other quarter
 * turns when the upright answer looks wrong (LMK_SUSPECT). */
static int landmarks(struct face_engine *eng, const struct face_pyramid *pyr,
                     const struct face_box *box, struct face_point out[68])
{
        struct lmk_frame fr = {box->x1, box->y1, box->x2 - box->x1, 0};
        float best = landmarks_turned(eng, pyr, fr, out);

        if (best < 0)
                return -1;

        /* A face cut by the photo's edge disagrees with its mirror
         * anyway, and a turned crop of it can look tidier than the
         * upright one: only whole faces are turned. */
        if (best <= LMK_SUSPECT || box->x1 < 0 || box->y1 < 0 ||
            box->x2 > pyr->width[0] || box->y2 > pyr->height[0])
                return 0;
        for (int t = 1; t < 4; t++) {
                struct face_point pts[68];
                fr.turns = t;
                float d = landmarks_turned(eng, pyr, fr, pts);
                if (d < 0)
                        return -1;
                if (d < best * LMK_TURN_GAIN) {
                        best = d;
                        memcpy(out, pts, sizeof pts);
                }
        }
        return 0;
}

/* Aligns the face on its five points to the 112x112 template. */
static int align(const struct face_pyramid *pyr, const struct face *f,
                 uint8_t out[EMB_SIZE * EMB_SIZE * 3])
{
        struct face_affine m;

        if (face_geom_similarity(f->points5, face_geom_template112, 5, &m))
                return -1;
        face_geom_sample(pyr, &m, EMB_SIZE, EMB_SIZE, out);
        return 0;
}

static int embed(struct face_engine *eng, const uint8_t *aligned,
                 float out[FACE_EMBEDDING_DIM])
{
        static const float mean[3] = {127.5f, 127.5f, 127.5f};
        static const float inv[3] = {1 / 128.f, 1 / 128.f, 1 / 128.f};
        float *tensor = malloc(sizeof(float) * EMB_SIZE * EMB_SIZE * 3);
        float *outs[1] = {out};
        const size_t len[1] = {FACE_EMBEDDING_DIM};
        double norm = 0;
        int rc = -1;

        /* Tensors live on the heap: server threads may have small
         * stacks. */
        if (!tensor)
                return -1;
        to_planar(aligned, EMB_SIZE, EMB_SIZE, EMB_BGR, mean, inv, tensor);
        if (face_model_run(eng->feature, tensor, outs, len))
                goto release;

        /* Unit length, so that similarity is a dot product. */
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                norm += (double)out[i] * out[i];
        norm = sqrt(norm);
        if (norm <= 0)
                goto release;
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                out[i] = (float)(out[i] / norm);
        rc = 0;
release:
        free(tensor);
        return rc;
}

/*
 * A context crop the way the liveness and age models were trained: the
 * box scaled by `context` around its centre (less if the photo is too
 * small), shifted to stay inside the photo.
 */
static struct face_affine context_map(const struct face_box *box, int W, int H,
                                      float context, int out)
{
        float bw = box->x2 - box->x1, bh = box->y2 - box->y1;
        float k = fminf(context, fminf((H - 1) / bh, (W - 1) / bw));
        float nw = bw * k, nh = bh * k;
        float x = (box->x1 + box->x2) / 2 - nw / 2;
        float y = (box->y1 + box->y2) / 2 - nh / 2;

        x = fmaxf(0.0f, fminf(x, W - 1 - nw));
        y = fmaxf(0.0f, fminf(y, H - 1 - nh));
        return face_geom_box_map(x, y, nw, nh, out, out);
}

static int liveness(struct face_engine *eng, const struct face_pyramid *pyr,
                    const struct face_box *box, float *live)
{
        static const float mean[3] = {0, 0, 0};
        static const float inv[3] = {1, 1, 1};
        uint8_t pix[LIVE_SIZE * LIVE_SIZE * 3];
        float *tensor = malloc(sizeof(float) * LIVE_SIZE * LIVE_SIZE * 3);
        float prob[3];
        int rc = -1;
        float *outs[1] = {prob};
        const size_t len[1] = {3};
        struct face_affine m = context_map(box, pyr->width[0], pyr->height[0],
                                           LIVE_CONTEXT, LIVE_SIZE);

        /* The model reads BGR values 0-255; class 0 is a live face. */
        if (!tensor)
                return -1;
        face_geom_sample(pyr, &m, LIVE_SIZE, LIVE_SIZE, pix);
        to_planar(pix, LIVE_SIZE, LIVE_SIZE, 1, mean, inv, tensor);
        if (face_model_run(eng->liveness, tensor, outs, len))
                goto release;
        softmax(prob, 3);
        *live = prob[0];
        rc = 0;
release:
        free(tensor);
        return rc;
}

/* Head pose in degrees: three 66-bin classifiers of 3 degrees each. */
static int pose(struct face_engine *eng, const struct face_pyramid *pyr,
                const struct face_box *box, float angles[3])
{
        static const float mean[3] = {0.485f * 255, 0.456f * 255, 0.406f * 255};
        static const float inv[3] = {1 / (0.229f * 255), 1 / (0.224f * 255),
                                     1 / (0.225f * 255)};
        uint8_t *pix = malloc(POSE_SIZE * POSE_SIZE * 3);
        float *tensor = malloc(sizeof(float) * POSE_SIZE * POSE_SIZE * 3);
        float bins[3][66];
        float *outs[3] = {bins[0], bins[1], bins[2]};
        const size_t len[3] = {66, 66, 66};
        float w = box->x2 - box->x1, h = box->y2 - box->y1;
        struct face_affine m =
                face_geom_box_map(box->x1 - w / 4, box->y1 - h / 4, w * 1.5f,
                                  h * 1.5f, POSE_SIZE, POSE_SIZE);
        int rc = -1;

        if (!pix || !tensor)
                goto release;
        face_geom_sample(pyr, &m, POSE_SIZE, POSE_SIZE, pix);
        to_planar(pix, POSE_SIZE, POSE_SIZE, 0, mean, inv, tensor);
        if (face_model_run(eng->pose, tensor, outs, len))
                goto release;

        /* The expected bin, mapped back to degrees. */
        for (int a = 0; a < 3; a++) {
                float e = 0;

                softmax(bins[a], 66);
                for (int i = 0; i < 66; i++)
                        e += bins[a][i] * i;
                angles[a] = e * 3 - 99;
        }
        rc = 0;
release:
        free(tensor);
        free(pix);
        return rc;
}

/* SSR-Net's soft stagewise regression, stages of 3 bins. */
static float ssr_merge(float *const o[9])
{
        float a = 0, b = 0, c = 0;
        float k1 = 3 * (1 + o[3][0]), k2 = 3 * (1 + o[4][0]);
        float k3 = 3 * (1 + o[5][0]);

        for (int i = 0; i < 3; i++) {
                a += (i + o[6][i]) * o[0][i];
                b += (i + o[7][i]) * o[1][i];
                c += (i + o[8][i]) * o[2][i];
        }
        return a / k1 + b / k1 / k2 + c / k1 / k2 / k3;
}

static int age_gender(struct face_engine *eng, const struct face_pyramid *pyr,
                      const struct face_box *box, float *age, float *male)
{
        static const float mean[3] = {0.485f * 255, 0.456f * 255, 0.406f * 255};
        static const float inv[3] = {1 / (0.229f * 255), 1 / (0.224f * 255),
                                     1 / (0.225f * 255)};
        uint8_t pix[AGE_SIZE * AGE_SIZE * 3];
        float tensor[AGE_SIZE * AGE_SIZE * 3];
        float v[9][3];
        float *outs[9];
        const size_t len[9] = {3, 3, 3, 1, 1, 1, 3, 3, 3};
        struct face_affine m = context_map(box, pyr->width[0], pyr->height[0],
                                           AGE_CONTEXT, AGE_SIZE);

        for (int i = 0; i < 9; i++)
                outs[i] = v[i];
        face_geom_sample(pyr, &m, AGE_SIZE, AGE_SIZE, pix);
        to_planar(pix, AGE_SIZE, AGE_SIZE, 0, mean, inv, tensor);
        if (face_model_run(eng->age, tensor, outs, len))
                return -1;
        *age = ssr_merge(outs) * 101;
        if (face_model_run(eng->gender, tensor, outs, len))
                return -1;
        *male = ssr_merge(outs);
        return 0;
}

static int expression(struct face_engine *eng, const struct face_pyramid *pyr,
                      const struct face_box *box, const char **label)
{
        static const float mean[3] = {0, 0, 0};
        static const float inv[3] = {1 / 255.f, 1 / 255.f, 1 / 255.f};
        uint8_t *pix = malloc(EXPR_SIZE * EXPR_SIZE * 3);
        float *tensor = malloc(sizeof(float) * EXPR_SIZE * EXPR_SIZE * 3);
        float prob[7];
        float *outs[1] = {prob};
        const size_t len[1] = {7};
        float w = box->x2 - box->x1, h = box->y2 - box->y1;
        int rc = -1, best = 0;

        /* The crop the model was used with: from the box's top-left
         * corner, 1.2 times its size. */
        struct face_affine m = face_geom_box_map(
                box->x1, box->y1, w * 1.2f, h * 1.2f, EXPR_SIZE, EXPR_SIZE);
        if (!pix || !tensor)
                goto release;
        face_geom_sample(pyr, &m, EXPR_SIZE, EXPR_SIZE, pix);
        to_planar(pix, EXPR_SIZE, EXPR_SIZE, 0, mean, inv, tensor);
        if (face_model_run(eng->expression, tensor, outs, len))
                goto release;
        for (int i = 1; i < 7; i++)
                if (prob[i] > prob[best])
                        best = i;
        *label = expression_labels[best];
        rc = 0;
release:
        free(tensor);
        free(pix);
        return rc;
}

/* Whether one eye is open, from a square crop around its six points. */
static int eye_open(struct face_engine *eng, const struct face_pyramid *pyr,
                    const struct face_point *pts, bool *open)
{
        uint8_t pix[EYE_SIZE * EYE_SIZE * 3];
        float tensor[EYE_SIZE * EYE_SIZE], prob[2];
        float *outs[1] = {prob};
        const size_t len[1] = {2};
        float cx = 0, cy = 0;
        float side = 1.6f * hypotf(pts[3].x - pts[0].x, pts[3].y - pts[0].y);

        for (int i = 0; i < 6; i++) {
                cx += pts[i].x / 6;
                cy += pts[i].y / 6;
        }
        if (side < 2)
                side = 2;
        struct face_affine m = face_geom_box_map(
                cx - side / 2, cy - side / 2, side, side, EYE_SIZE, EYE_SIZE);
        face_geom_sample(pyr, &m, EYE_SIZE, EYE_SIZE, pix);
        to_grey(pix, EYE_SIZE, EYE_SIZE, 1 / 255.f, tensor);
        if (face_model_run(eng->eye, tensor, outs, len))
                return -1;
        softmax(prob, 2);
        *open = prob[EYE_OPEN_CLASS] > 0.5f;
        return 0;
}

/* Sharpness of the inner face (eyes to chin, cheek to cheek) of the
 * aligned picture: hair and background would otherwise dominate. */
static float sharpness(const uint8_t *aligned)
{
        enum { X0 = 24, Y0 = 36, W = 64, H = 72 };
        uint8_t inner[W * H * 3];

        for (int y = 0; y < H; y++)
                memcpy(inner + y * W * 3,
                       aligned + ((Y0 + y) * EMB_SIZE + X0) * 3, W * 3);
        return face_geom_laplacian_var(inner, W, H);
}

/*
 * Quality: each measure against its documented limit, and an overall
 * score in [0,1] (the mean of four terms that each reach 1 well inside
 * the limits).
 */
static void quality(struct face *f, const uint8_t *aligned)
{
        struct face_quality *q = &f->quality;
        float worst_angle;

        q->size = fminf(f->box.x2 - f->box.x1, f->box.y2 - f->box.y1);
        q->sharpness = sharpness(aligned);
        worst_angle =
                fmaxf(fabsf(q->yaw) / Q_MAX_YAW, fabsf(q->pitch) / Q_MAX_PITCH);
        q->reasons = 0;
        if (q->size < Q_MIN_SIZE)
                q->reasons |= FACE_Q_TOO_SMALL;
        if (q->sharpness < Q_MIN_SHARPNESS)
                q->reasons |= FACE_Q_BLURRY;
        if (worst_angle > 1)
                q->reasons |= FACE_Q_PROFILE;
        if (f->box.score < Q_MIN_SCORE)
                q->reasons |= FACE_Q_LOW_CONFIDENCE;
        q->score = (fminf(q->size / (2 * Q_MIN_SIZE), 1) +
                    fminf(q->sharpness / (4 * Q_MIN_SHARPNESS), 1) +
                    fmaxf(1 - worst_angle, 0) + f->box.score) /
                   4;
}

/* Everything asked for one face whose box is set. */
static enum face_status analyze_face(struct face_engine *eng,
                                     const struct face_pyramid *pyr,
                                     const struct face_box *square,
                                     unsigned want, struct face *f)
{
        uint8_t aligned[EMB_SIZE * EMB_SIZE * 3];
        float angles[3] = {0, 0, 0};
        double t0 = stage_start();

        /* Landmarks, then the aligned face that embedding and quality
         * read. */
        if (want & FACE_WANT_LANDMARKS) {
                if (landmarks(eng, pyr, square, f->landmarks))
                        return FACE_ERR_INTERNAL;
                face_geom_68_to_5(f->landmarks, f->points5);
                f->have |= FACE_WANT_LANDMARKS;
                stage_add(offsetof(struct face_timing, landmarks), t0);
                t0 = stage_start();
                if (align(pyr, f, aligned))
                        memset(aligned, 0, sizeof aligned);
                stage_add(offsetof(struct face_timing, align), t0);
        }
        if ((want & FACE_WANT_EMBEDDING) == FACE_WANT_EMBEDDING) {
                t0 = stage_start();
                if (embed(eng, aligned, f->embedding))
                        return FACE_ERR_INTERNAL;
                f->have |= FACE_WANT_EMBEDDING;
                stage_add(offsetof(struct face_timing, embed), t0);
        }
        if (want & FACE_WANT_LIVENESS) {
                t0 = stage_start();
                if (liveness(eng, pyr, square, &f->liveness))
                        return FACE_ERR_INTERNAL;
                f->live = f->liveness >= eng->cfg.liveness_threshold;
                f->have |= FACE_WANT_LIVENESS;
                stage_add(offsetof(struct face_timing, liveness), t0);
        }

        /* The pose serves both the quality gate and the attributes. */
        t0 = stage_start();
        if ((want & FACE_WANT_QUALITY) == FACE_WANT_QUALITY ||
            (want & FACE_WANT_ATTRIBUTES) == FACE_WANT_ATTRIBUTES) {
                if (pose(eng, pyr, square, angles))
                        return FACE_ERR_INTERNAL;
        }
        if ((want & FACE_WANT_QUALITY) == FACE_WANT_QUALITY) {
                f->quality.yaw = angles[0];
                f->quality.pitch = angles[1];
                f->quality.roll = angles[2];
                quality(f, aligned);
                f->have |= FACE_WANT_QUALITY;
        }
        if ((want & FACE_WANT_ATTRIBUTES) == FACE_WANT_ATTRIBUTES) {
                float male = 0;

                if (age_gender(eng, pyr, square, &f->attr.age, &male) ||
                    expression(eng, pyr, square, &f->attr.expression) ||
                    eye_open(eng, pyr, &f->landmarks[36],
                             &f->attr.left_eye_open) ||
                    eye_open(eng, pyr, &f->landmarks[42],
                             &f->attr.right_eye_open))
                        return FACE_ERR_INTERNAL;
                f->attr.gender = male >= 0.5f ? "male" : "female";
                f->attr.yaw = angles[0];
                f->attr.pitch = angles[1];
                f->attr.roll = angles[2];
                f->have |= FACE_WANT_ATTRIBUTES;
        }
        stage_add(offsetof(struct face_timing, other), t0);
        return FACE_OK;
}

/* Orders boxes by the area they have once clamped to the photo (whose
 * size ctx points to), largest first. */
static int by_area_desc(const void *pa, const void *pb, void *ctx)
{
        const int *size = ctx;
        struct face_box a = *(const struct face_box *)pa;
        struct face_box b = *(const struct face_box *)pb;

        face_geom_clamp_box(&a, size[0], size[1]);
        face_geom_clamp_box(&b, size[0], size[1]);
        float aa = (a.x2 - a.x1) * (a.y2 - a.y1);
        float ab = (b.x2 - b.x1) * (b.y2 - b.y1);
        if (aa != ab)
                return aa < ab ? 1 : -1;
        return a.score < b.score ? 1 : (a.score > b.score ? -1 : 0);
}

enum face_status face_engine_analyze(struct face_engine *eng,
                                     const struct face_image *img,
                                     unsigned want, int max_faces,
                                     struct face_list *out)
{
        struct face_pyramid pyr;
        struct boxes found = {0};
        enum face_status st;

        assert(eng && img && out);
        memset(out, 0, sizeof *out);
        if (!img->rgb || img->width < 1 || img->height < 1)
                return FACE_ERR_IMAGE_TOO_SMALL;
        /* The pyramid counts as part of detection. */
        double t0 = stage_start();
        st = face_pyramid_build(img, &pyr);
        if (st != FACE_OK)
                return st;

        /* Find the faces, largest first, as many as the caller wants. */
        st = detect(eng, &pyr, &found);
        stage_add(offsetof(struct face_timing, detect), t0);
        if (st != FACE_OK)
                goto release;
        if (found.n == 0)
                goto release;
        int size[2] = {img->width, img->height};
        qsort_r(found.v, (size_t)found.n, sizeof *found.v, by_area_desc, size);
        out->found = found.n;
        if (max_faces > 0 && found.n > max_faces)
                found.n = max_faces;
        out->faces = calloc((size_t)found.n, sizeof *out->faces);
        if (!out->faces) {
                st = FACE_ERR_NOMEM;
                goto release;
        }

        /* Then everything asked for, face by face. */
        for (int i = 0; i < found.n; i++) {
                struct face *f = &out->faces[i];

                f->box = found.v[i];
                face_geom_clamp_box(&f->box, img->width, img->height);
                out->count++;
                st = analyze_face(eng, &pyr, &found.v[i], want, f);
                if (st != FACE_OK)
                        goto release;
        }
release:
        if (st != FACE_OK)
                face_list_free(out);
        free(found.v);
        face_pyramid_free(&pyr);
        return st;
}

void face_list_free(struct face_list *list)
{
        if (!list)
                return;
        free(list->faces);
        list->faces = NULL;
        list->count = 0;
        list->found = 0;
}

float face_similarity(const float *a, const float *b)
{
        double dot = 0;

        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                dot += (double)a[i] * b[i];
        if (dot < 0)
                return 0.0f;
        return dot > 1 ? 1.0f : (float)dot;
}

int face_quality_reason_names(unsigned reasons, const char *names[4])
{
        static const char *const all[4] = {"too_small", "blurry", "profile",
                                           "low_confidence"};
        int n = 0;

        for (int i = 0; i < 4; i++)
                if (reasons & (1u << i))
                        names[n++] = all[i];
        return n;
}
