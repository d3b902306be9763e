/*
 * geometry.h - the plane geometry of the face engine: boxes, non-maximum
 * suppression, the 68-to-5 landmark reduction, the similarity transform
 * that aligns a face to the 112x112 template, and bilinear sampling of
 * an image through an affine map.
 *
 * Nothing here runs a model; every function is pure and thread-safe.
 */
#ifndef FRAPI_FACE_GEOMETRY_H
#define FRAPI_FACE_GEOMETRY_H

#include "face/face.h"

#include <stdint.h>

/* The five points of the standard 112x112 ArcFace alignment template:
 * left eye, right eye (as seen in the picture), nose tip, left and right
 * mouth corners. */
extern const struct face_point face_geom_template112[5];

/*
 * An affine map from output pixels to source pixels:
 *   src_x = a * x + b * y + c,  src_y = d * x + e * y + f.
 */
struct face_affine {
        double a, b, c;
        double d, e, f;
};

/* Clamps box to [0, width-1] x [0, height-1]; keeps x1 <= x2, y1 <= y2. */
void face_geom_clamp_box(struct face_box *box, int width, int height);

/* Intersection over union of two boxes, 0 when either is empty. */
float face_geom_iou(const struct face_box *a, const struct face_box *b);

/*
 * Non-maximum suppression in place.  Sorts boxes by score (highest
 * first), then drops every box whose IoU with a kept, higher-scored box
 * is above iou_max, or that lies for more than contain_max of its own
 * area inside a kept box.  Returns how many boxes remain at the front.
 */
int face_geom_nms(struct face_box *boxes, int n, float iou_max,
                  float contain_max);

/*
 * Reduces 68 landmarks (iBUG order) to five points: the centres of the
 * two eyes (mean of each eye's four lid points, 37-38-40-41 and
 * 43-44-46-47), the nose tip (point 30) and the two mouth corners (mean
 * of the outer and inner corner, 48/60 and 54/64).  This reduction
 * measured best on lfw-dev (docs/engine.md).
 */
void face_geom_68_to_5(const struct face_point in[68],
                       struct face_point out[5]);

/*
 * Least-squares similarity transform (rotation, uniform scale,
 * translation; no reflection) that maps the n points src onto dst, as in
 * Umeyama (1991).  The result maps dst coordinates back to src
 * coordinates, which is what face_geom_sample() needs to warp src into a
 * dst-sized picture.  Returns -1 when src is degenerate (all points the
 * same), else 0.
 */
int face_geom_similarity(const struct face_point *src,
                         const struct face_point *dst, int n,
                         struct face_affine *dst_to_src);

/* Applies m to p. */
struct face_point face_geom_apply(const struct face_affine *m,
                                  struct face_point p);

/*
 * A photo with its half-size copies, so that sampling a small picture out
 * of a large area reads an image at most twice as fine as needed (no
 * aliasing from plain bilinear sampling).  level[0] is the photo itself
 * (borrowed); the other levels are owned.
 */
#define FACE_PYRAMID_MAX 16
struct face_pyramid {
        int levels;
        int width[FACE_PYRAMID_MAX];
        int height[FACE_PYRAMID_MAX];
        const uint8_t *rgb[FACE_PYRAMID_MAX];
        uint8_t *owned[FACE_PYRAMID_MAX];
};

/* Builds the pyramid of img (halving down to sides of 32 pixels).
 * Returns FACE_OK or FACE_ERR_NOMEM; release with face_pyramid_free(). */
enum face_status face_pyramid_build(const struct face_image *img,
                                    struct face_pyramid *pyr);

void face_pyramid_free(struct face_pyramid *pyr);

/*
 * Samples an out_w x out_h RGB picture into out (out_w * out_h * 3 bytes):
 * output pixel (x, y) takes the bilinear value of the photo at
 * m(x, y), in full-size pixel coordinates with pixel centres on integers.
 * The pyramid level is chosen from the scale of m.  Points outside the
 * photo are black.
 */
void face_geom_sample(const struct face_pyramid *pyr,
                      const struct face_affine *m, int out_w, int out_h,
                      uint8_t *out);

/* The map that samples the box (x, y, w, h) into an out_w x out_h
 * picture, stretching it to fill. */
struct face_affine face_geom_box_map(float x, float y, float w, float h,
                                     int out_w, int out_h);

/* Variance of the 4-neighbour Laplacian of the grey version of an
 * w x h RGB picture, a measure of sharpness. */
float face_geom_laplacian_var(const uint8_t *rgb, int w, int h);

#endif
