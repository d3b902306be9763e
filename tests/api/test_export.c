/*
 * test_export.c - embeddings as text: base64 of little-endian float32
 * values and JSON arrays, both read back exactly; wrong lengths, values
 * that are not finite and vectors that are not of unit length refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "api/export.h"

/* A unit vector with a little of everything: signs, small values. */
static void sample(float *v)
{
        double n = 0;
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++) {
                v[i] = (float)sin(i * 0.37) * (i % 7 ? 1.0f : 1e-4f);
                n += (double)v[i] * v[i];
        }
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                v[i] = (float)(v[i] / sqrt(n));
}

static void test_base64_round_trip(void **state)
{
        (void)state;
        float v[FACE_EMBEDDING_DIM], back[FACE_EMBEDDING_DIM];
        char b64[EXPORT_EMB_B64_LEN], err[200];
        sample(v);
        export_embedding_base64(v, b64);
        assert_int_equal(strlen(b64), EXPORT_EMB_B64_LEN - 1);

        /* The bytes are little-endian float32, whatever the host. */
        unsigned char raw[FACE_EMBEDDING_DIM * 4];
        size_t len;
        assert_int_equal(sodium_base642bin(raw, sizeof raw, b64, strlen(b64),
                                           NULL, &len, NULL,
                                           sodium_base64_VARIANT_ORIGINAL),
                         0);
        assert_int_equal(len, sizeof raw);
        uint32_t u = (uint32_t)raw[4] | (uint32_t)raw[5] << 8 |
                     (uint32_t)raw[6] << 16 | (uint32_t)raw[7] << 24;
        float f1;
        memcpy(&f1, &u, 4);
        assert_true(f1 == v[1]);

        json_t *s = json_string(b64);
        assert_int_equal(export_embedding_parse(s, back, err, sizeof err), 0);
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                assert_true(fabsf(back[i] - v[i]) <= 1e-7f);
        json_decref(s);
}

static void test_array_round_trip(void **state)
{
        (void)state;
        float v[FACE_EMBEDDING_DIM], back[FACE_EMBEDDING_DIM];
        char err[200];
        sample(v);
        json_t *arr = json_array();
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                json_array_append_new(arr, json_real((double)v[i]));
        char *text = json_dumps(arr, JSON_COMPACT);
        json_t *parsed = json_loads(text, 0, NULL);
        assert_int_equal(export_embedding_parse(parsed, back, err, sizeof err),
                         0);
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                assert_true(fabsf(back[i] - v[i]) <= 1e-7f);
        free(text);
        json_decref(parsed);

        /* A wrong element or length names the problem. */
        json_array_set_new(arr, 3, json_string("x"));
        assert_int_equal(export_embedding_parse(arr, back, err, sizeof err),
                         -1);
        assert_non_null(strstr(err, "embedding[3]"));
        json_array_remove(arr, 3);
        assert_int_equal(export_embedding_parse(arr, back, err, sizeof err),
                         -1);
        json_decref(arr);
}

static void test_refused(void **state)
{
        (void)state;
        float v[FACE_EMBEDDING_DIM], back[FACE_EMBEDDING_DIM];
        char b64[EXPORT_EMB_B64_LEN], err[200];

        /* Too short, not base64, not a string or array. */
        static const char *const bad[] = {"", "AAAA", "!!!!", "QUJD"};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                json_t *s = json_string(bad[i]);
                assert_int_equal(
                        export_embedding_parse(s, back, err, sizeof err), -1);
                json_decref(s);
        }
        json_t *n = json_integer(5);
        assert_int_equal(export_embedding_parse(n, back, err, sizeof err), -1);
        json_decref(n);

        /* Not of unit length: zeros, twice as long. */
        memset(v, 0, sizeof v);
        export_embedding_base64(v, b64);
        json_t *s = json_string(b64);
        assert_int_equal(export_embedding_parse(s, back, err, sizeof err), -1);
        assert_non_null(strstr(err, "unit length"));
        json_decref(s);
        sample(v);
        for (int i = 0; i < FACE_EMBEDDING_DIM; i++)
                v[i] *= 2;
        export_embedding_base64(v, b64);
        s = json_string(b64);
        assert_int_equal(export_embedding_parse(s, back, err, sizeof err), -1);
        json_decref(s);

        /* A NaN anywhere. */
        sample(v);
        v[100] = NAN;
        export_embedding_base64(v, b64);
        s = json_string(b64);
        assert_int_equal(export_embedding_parse(s, back, err, sizeof err), -1);
        assert_non_null(strstr(err, "value 100"));
        json_decref(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_base64_round_trip),
                cmocka_unit_test(test_array_round_trip),
                cmocka_unit_test(test_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
