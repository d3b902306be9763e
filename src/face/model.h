/*
 * model.h - one ONNX model loaded into an ONNX Runtime session, run on
 * one float tensor in, float tensors out.
 *
 * A session is created once and shared: OrtSession::Run is safe to call
 * from many threads at once, so face_model_run() needs no lock.
 */
#ifndef FRAPI_FACE_MODEL_H
#define FRAPI_FACE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define FACE_MODEL_MAX_OUTPUTS 9

struct face_model;

/*
 * Loads dir/file.onnx with `threads` intra-op threads (no inter-op
 * parallelism, no spinning, all graph optimisations, denormal numbers
 * flushed to zero).  in_shape is the
 * NCHW input shape the model must declare; output_names are the outputs
 * face_model_run() returns, in that order.  On failure returns NULL and writes
 * why into err.
 */
struct face_model *face_model_load(const char *dir, const char *file,
                                   int threads, const int64_t in_shape[4],
                                   const char *const *output_names,
                                   int n_outputs, char *err, size_t errlen);

void face_model_free(struct face_model *model);

/*
 * Runs the model on input (the product of in_shape floats).  Copies
 * output i into outs[i], which has room for out_len[i] floats; an output
 * of another size is an error.  Returns 0 on success, -1 on failure (the
 * reason is logged).
 */
int face_model_run(struct face_model *model, const float *input,
                   float *const *outs, const size_t *out_len);

#endif
