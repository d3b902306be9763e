/*
 * geometry.c - boxes, suppression, alignment and sampling for the face
 * engine.  See geometry.h for the contracts.
 */
#include "face/geometry.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const struct face_point face_geom_template112[5] = {
        {38.2946f, 51.6963f}, {73.5318f, 51.5014f}, {56.0252f, 71.7366f},
        {41.5493f, 92.3655f}, {70.7299f, 92.2041f},
};

void face_geom_clamp_box(struct face_box *box, int width, int height)
{
        float maxx = (float)(width - 1), maxy = (float)(height - 1);

        assert(width > 0 && height > 0);
        box->x1 = fminf(fmaxf(box->x1, 0.0f), maxx);
        box->y1 = fminf(fmaxf(box->y1, 0.0f), maxy);
        box->x2 = fminf(fmaxf(box->x2, box->x1), maxx);
        box->y2 = fminf(fmaxf(box->y2, box->y1), maxy);
}

static float box_area(const struct face_box *b)
{
        float w = b->x2 - b->x1, h = b->y2 - b->y1;

        return (w > 0 && h > 0) ? w * h : 0.0f;
}

static float box_intersection(const struct face_box *a,
                              const struct face_box *b)
{
        float w = fminf(a->x2, b->x2) - fmaxf(a->x1, b->x1);
        float h = fminf(a->y2, b->y2) - fmaxf(a->y1, b->y1);

        return (w > 0 && h > 0) ? w * h : 0.0f;
}

float face_geom_iou(const struct face_box *a, const struct face_box *b)
{
        float inter = box_intersection(a, b);
        float uni = box_area(a) + box_area(b) - inter;

        return uni > 0 ? inter / uni : 0.0f;
}

static int by_score_desc(const void *pa, const void *pb)
{
        const struct face_box *a = pa, *b = pb;

        if (a->score != b->score)
                return a->score < b->score ? 1 : -1;
        /* Equal scores: a fixed order keeps the result deterministic. */
        if (a->x1 != b->x1)
                return a->x1 < b->x1 ? -1 : 1;
        return a->y1 < b->y1 ? -1 : (a->y1 > b->y1);
}

int face_geom_nms(struct face_box *boxes, int n, float iou_max,
                  float contain_max)
{
        int kept = 0;

        assert(n >= 0 && (n == 0 || boxes));
        if (n == 0)
                return 0; /* qsort() must not see a NULL array */
        qsort(boxes, (size_t)n, sizeof *boxes, by_score_desc);

        /* Greedy: walk in score order, keep a box unless a kept one covers
         * it. */
        for (int i = 0; i < n; i++) {
                float area = box_area(&boxes[i]);
                int drop = area <= 0;

                for (int k = 0; k < kept && !drop; k++) {
                        float inter = box_intersection(&boxes[i], &boxes[k]);
                        drop = face_geom_iou(&boxes[i], &boxes[k]) > iou_max ||
                               inter > contain_max * area;
                }
                if (!drop)
                        boxes[kept++] = boxes[i];
        }
        return kept;
}

void face_geom_68_to_5(const struct face_point in[68], struct face_point out[5])
{
        /* Eye centres: the mean of the four lid points (the corners pull
         * the centre towards the nose on a turned face). */
        for (int e = 0; e < 2; e++) {
                const struct face_point *p = &in[36 + 6 * e];

                out[e].x = (p[1].x + p[2].x + p[4].x + p[5].x) / 4;
                out[e].y = (p[1].y + p[2].y + p[4].y + p[5].y) / 4;
        }

        /* The nose tip is one point; each mouth corner the mean of its
         * outer and inner lip corners. */
        out[2] = in[30];
        out[3].x = (in[48].x + in[60].x) / 2;
        out[3].y = (in[48].y + in[60].y) / 2;
        out[4].x = (in[54].x + in[64].x) / 2;
        out[4].y = (in[54].y + in[64].y) / 2;
}

int face_geom_similarity(const struct face_point *src,
                         const struct face_point *dst, int n,
                         struct face_affine *dst_to_src)
{
        double msx = 0, msy = 0, mdx = 0, mdy = 0;
        double sdd = 0, num_a = 0, num_b = 0;

        assert(n >= 2);

        /* Centre both point sets. */
        for (int i = 0; i < n; i++) {
                msx += src[i].x;
                msy += src[i].y;
                mdx += dst[i].x;
                mdy += dst[i].y;
        }
        msx /= n;
        msy /= n;
        mdx /= n;
        mdy /= n;

        /* Solve the map dst -> src directly: src' = [a -b; b a] dst' is a
         * linear least-squares problem in (a, b) on centred points, the
         * two-dimensional case of Umeyama's closed form. */
        for (int i = 0; i < n; i++) {
                double dx = dst[i].x - mdx, dy = dst[i].y - mdy;
                double sx = src[i].x - msx, sy = src[i].y - msy;

                sdd += dx * dx + dy * dy;
                num_a += dx * sx + dy * sy;
                num_b += dx * sy - dy * sx;
        }
        if (sdd <= 0)
                return -1;
        double a = num_a / sdd, b = num_b / sdd;
        if (a * a + b * b < 1e-12)
                return -1;

        dst_to_src->a = a;
        dst_to_src->b = -b;
        dst_to_src->d = b;
        dst_to_src->e = a;
        dst_to_src->c = msx - (a * mdx - b * mdy);
        dst_to_src->f = msy - (b * mdx + a * mdy);
        return 0;
}

struct face_point face_geom_apply(const struct face_affine *m,
                                  struct face_point p)
{
        struct face_point q = {
                (float)(m->a * p.x + m->b * p.y + m->c),
                (float)(m->d * p.x + m->e * p.y + m->f),
        };
        return q;
}

enum face_status face_pyramid_build(const struct face_image *img,
                                    struct face_pyramid *pyr)
{
        memset(pyr, 0, sizeof *pyr);
        pyr->levels = 1;
        pyr->width[0] = img->width;
        pyr->height[0] = img->height;
        pyr->rgb[0] = img->rgb;

        /* Each level averages 2x2 pixels of the one above. */
        while (pyr->levels < FACE_PYRAMID_MAX) {
                int k = pyr->levels;
                int w = pyr->width[k - 1] / 2, h = pyr->height[k - 1] / 2;
                int sw = pyr->width[k - 1];
                const uint8_t *s = pyr->rgb[k - 1];

                if (w < 32 || h < 32)
                        break;
                uint8_t *d = malloc((size_t)w * h * 3);
                if (!d) {
                        face_pyramid_free(pyr);
                        return FACE_ERR_NOMEM;
                }
                for (int y = 0; y < h; y++) {
                        const uint8_t *r0 = s + (size_t)(2 * y) * sw * 3;
                        const uint8_t *r1 = r0 + (size_t)sw * 3;
                        uint8_t *o = d + (size_t)y * w * 3;

                        for (int x = 0; x < w * 3; x++) {
                                int c = x % 3, sx = (x - c) * 2 + c;

                                o[x] = (uint8_t)((r0[sx] + r0[sx + 3] + r1[sx] +
                                                  r1[sx + 3] + 2) >>
                                                 2);
                        }
                }
                pyr->width[k] = w;
                pyr->height[k] = h;
                pyr->rgb[k] = d;
                pyr->owned[k] = d;
                pyr->levels++;
        }
        return FACE_OK;
}

void face_pyramid_free(struct face_pyramid *pyr)
{
        for (int k = 0; k < FACE_PYRAMID_MAX; k++)
                free(pyr->owned[k]);
        memset(pyr, 0, sizeof *pyr);
}

/* Bilinear taps along one axis: index of the first of two source
 * pixels (clamped into the image) and the weights of both, zero for a
 * tap outside the image. */
/* The bilinear value of src at (sx, sy) into o; black outside. */
static void bilinear(const uint8_t *src, int w, int h, double sx, double sy,
                     uint8_t *o)
{
        double fx0 = floor(sx), fy0 = floor(sy);
        int x0 = (int)fx0, y0 = (int)fy0;
        float wx = (float)(sx - fx0), wy = (float)(sy - fy0);
        float acc[3] = {0, 0, 0};

        for (int j = 0; j < 4; j++) {
                int xx = x0 + (j & 1), yy = y0 + (j >> 1);
                float wgt = ((j & 1) ? wx : 1 - wx) * ((j >> 1) ? wy : 1 - wy);
                const uint8_t *p;

                if (xx < 0 || xx >= w || yy < 0 || yy >= h)
                        continue;
                p = src + ((size_t)yy * w + xx) * 3;
                acc[0] += wgt * p[0];
                acc[1] += wgt * p[1];
                acc[2] += wgt * p[2];
        }
        for (int c = 0; c < 3; c++)
                o[c] = (uint8_t)fminf(acc[c] + 0.5f, 255.0f);
}

/* face_geom_sample() for any map m into src, whose coordinates are
 * (m(x, y) * f + off). */
static void sample_general(const uint8_t *src, int w, int h,
                           const struct face_affine *m, double f, double off,
                           int out_w, int out_h, uint8_t *out)
{
        for (int y = 0; y < out_h; y++) {
                for (int x = 0; x < out_w; x++) {
                        double sx = (m->a * x + m->b * y + m->c) * f + off;
                        double sy = (m->d * x + m->e * y + m->f) * f + off;

                        bilinear(src, w, h, sx, sy,
                                 out + ((size_t)y * out_w + x) * 3);
                }
        }
}

struct taps {
        int i0, i1; /* byte offsets of the two pixels along the axis */
        int w0, w1; /* their weights, 0-256 (0 outside the image) */
};

static struct taps taps_at(double s, int len, int stride)
{
        double fl = floor(s);
        int i = (int)fl;
        int t = (int)lround((s - fl) * 256);
        struct taps tp = {0, 0, 256 - t, t};

        if (i < 0 || i >= len)
                tp.w0 = 0;
        if (i + 1 < 0 || i + 1 >= len)
                tp.w1 = 0;
        tp.i0 = (i < 0 ? 0 : (i >= len ? len - 1 : i)) * stride;
        tp.i1 = (i + 1 < 0 ? 0 : (i + 1 >= len ? len - 1 : i + 1)) * stride;
        return tp;
}

enum { FAST_MAX = 1024 };

/* face_geom_sample() for maps without rotation: src_x = ax * x + cx,
 * src_y = ey * y + fy in the coordinates of src.  The column taps are
 * computed once for all rows.  Each output row first blends its two
 * source rows over the span of columns the taps touch (a contiguous loop
 * the compiler vectorises), then blends that row's column pairs.  In 8.8
 * fixed point both orders of the two blends give the same integer, so
 * this equals the bilinear formula to the bit. */
static void sample_axis_aligned(const uint8_t *src, int w, int h, double ax,
                                double cx, double ey, double fy, int out_w,
                                int out_h, uint8_t *out)
{
        struct taps stack[FAST_MAX];
        struct taps *col = stack;
        uint16_t *mix = NULL;

        if (out_w > FAST_MAX && !(col = malloc(sizeof *col * out_w)))
                goto general;
        for (int x = 0; x < out_w; x++)
                col[x] = taps_at(ax * x + cx, w, 3);

        /* The byte span of a source row that the taps read. */
        int lo = INT_MAX, hi = 0;
        for (int x = 0; x < out_w; x++) {
                lo = col[x].i0 < lo ? col[x].i0 : lo;
                lo = col[x].i1 < lo ? col[x].i1 : lo;
                hi = col[x].i0 > hi ? col[x].i0 : hi;
                hi = col[x].i1 > hi ? col[x].i1 : hi;
        }
        if (lo > hi)
                goto general; /* no column: out_w is 0 */
        size_t span = (size_t)(hi - lo) + 3;
        if (!(mix = malloc(sizeof *mix * span)))
                goto general;

        for (int y = 0; y < out_h; y++) {
                struct taps row = taps_at(ey * y + fy, h, w * 3);
                const uint8_t *r0 = src + row.i0 + lo, *r1 = src + row.i1 + lo;
                const uint16_t w0 = (uint16_t)row.w0, w1 = (uint16_t)row.w1;
                uint8_t *o = out + (size_t)y * out_w * 3;

                /* At most 256 * 255: a 16-bit value.  Blocks of 16 let
                 * the compiler's cheapest vectoriser take the loop. */
                size_t i = 0;
                for (; i + 16 <= span; i += 16)
                        for (int k = 0; k < 16; k++)
                                mix[i + k] = (uint16_t)(w0 * r0[i + k] +
                                                        w1 * r1[i + k]);
                for (; i < span; i++)
                        mix[i] = (uint16_t)(w0 * r0[i] + w1 * r1[i]);

                for (int x = 0; x < out_w; x++, o += 3) {
                        const uint16_t *a = mix + (col[x].i0 - lo);
                        const uint16_t *b = mix + (col[x].i1 - lo);
                        const int c0 = col[x].w0, c1 = col[x].w1;

                        for (int ch = 0; ch < 3; ch++)
                                o[ch] = (uint8_t)((c0 * a[ch] + c1 * b[ch] +
                                                   32768) >>
                                                  16);
                }
        }
        free(mix);
        if (col != stack)
                free(col);
        return;

general:
        /* Out of memory for the tables: the general path needs none. */
        if (col != stack)
                free(col);
        struct face_affine m = {ax, 0, cx, 0, ey, fy};
        sample_general(src, w, h, &m, 1, 0, out_w, out_h, out);
}

void face_geom_sample(const struct face_pyramid *pyr,
                      const struct face_affine *m, int out_w, int out_h,
                      uint8_t *out)
{
        double scale = sqrt(fabs(m->a * m->e - m->b * m->d));
        int k = 0;

        assert(pyr->levels >= 1 && out_w > 0 && out_h > 0);

        /* Read the coarsest level that is still at least as fine as the
         * output, so bilinear sampling never skips source pixels. */
        while (k + 1 < pyr->levels && scale >= (double)(2 << k))
                k++;
        double f = 1.0 / (double)(1 << k), off = 0.5 * f - 0.5;
        const uint8_t *src = pyr->rgb[k];
        int w = pyr->width[k], h = pyr->height[k];

        /* Crops and scalings (no rotation) take the fast path. */
        if (m->b == 0 && m->d == 0)
                sample_axis_aligned(src, w, h, m->a * f, m->c * f + off,
                                    m->e * f, m->f * f + off, out_w, out_h,
                                    out);
        else
                sample_general(src, w, h, m, f, off, out_w, out_h, out);
}

struct face_affine face_geom_box_map(float x, float y, float w, float h,
                                     int out_w, int out_h)
{
        struct face_affine m;
        double sx = (double)w / out_w, sy = (double)h / out_h;

        /* Pixel centres: output centre x + 0.5 covers source x + (x+0.5)*sx. */
        m.a = sx;
        m.b = 0;
        m.c = x + 0.5 * sx - 0.5;
        m.d = 0;
        m.e = sy;
        m.f = y + 0.5 * sy - 0.5;
        return m;
}

float face_geom_laplacian_var(const uint8_t *rgb, int w, int h)
{
        double sum = 0, sum2 = 0;
        long n = 0;

        assert(w >= 3 && h >= 3);
        for (int y = 1; y < h - 1; y++) {
                for (int x = 1; x < w - 1; x++) {
                        const uint8_t *p = rgb + ((size_t)y * w + x) * 3;
                        const int row = w * 3;
#define GREY(q) (0.299 * (q)[0] + 0.587 * (q)[1] + 0.114 * (q)[2])
                        double lap = GREY(p - 3) + GREY(p + 3) + GREY(p - row) +
                                     GREY(p + row) - 4 * GREY(p);
#undef GREY
                        sum += lap;
                        sum2 += lap * lap;
                        n++;
                }
        }
        double mean = sum / n;
        return (float)(sum2 / n - mean * mean);
}
