/*
 * model.c - ONNX Runtime sessions for the face engine.  See model.h.
 */
#include "face/model.h"
#include "face/timing.h"
#include "util/log.h"

#include <onnxruntime_c_api.h>

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct face_model {
        char name[64];
        OrtSession *session;
        OrtMemoryInfo *mem;
        int64_t in_shape[4];
        size_t in_len;
        int n_outputs;
        const char *output_names[FACE_MODEL_MAX_OUTPUTS];
};

/* ONNX Runtime wants one environment per process; the models share it and
 * the last one released takes it down. */
static pthread_mutex_t env_lock = PTHREAD_MUTEX_INITIALIZER;
static OrtEnv *env;
static int env_users;

static const OrtApi *ort(void)
{
        return OrtGetApiBase()->GetApi(ORT_API_VERSION);
}

/* Turns an ORT status into a message in err and releases it; returns
 * -1 for an error status, 0 for success. */
static int take_status(OrtStatus *st, char *err, size_t errlen,
                       const char *what, const char *model)
{
        if (!st)
                return 0;
        if (err && errlen)
                snprintf(err, errlen, "%s %s: %s", what, model,
                         ort()->GetErrorMessage(st));
        ort()->ReleaseStatus(st);
        return -1;
}

static int env_acquire(char *err, size_t errlen)
{
        int rc = 0;

        pthread_mutex_lock(&env_lock);
        if (env_users == 0) {
                OrtStatus *st = ort()->CreateEnv(ORT_LOGGING_LEVEL_ERROR,
                                                 "frapi", &env);
                rc = take_status(st, err, errlen, "creating", "the runtime");
        }
        if (rc == 0)
                env_users++;
        pthread_mutex_unlock(&env_lock);
        return rc;
}

static void env_release(void)
{
        pthread_mutex_lock(&env_lock);
        assert(env_users > 0);
        if (--env_users == 0) {
                ort()->ReleaseEnv(env);
                env = NULL;
        }
        pthread_mutex_unlock(&env_lock);
}

/* Checks that the model's first input has the shape the engine feeds. */
static int check_input(struct face_model *m, char *err, size_t errlen)
{
        const OrtApi *api = ort();
        OrtTypeInfo *ti = NULL;
        const OrtTensorTypeAndShapeInfo *tsi;
        int64_t dims[4] = {0};
        size_t nd = 0;
        int rc = -1;

        if (take_status(api->SessionGetInputTypeInfo(m->session, 0, &ti), err,
                        errlen, "reading the input of", m->name))
                return -1;
        if (take_status(api->CastTypeInfoToTensorInfo(ti, &tsi), err, errlen,
                        "reading the input of", m->name) ||
            take_status(api->GetDimensionsCount(tsi, &nd), err, errlen,
                        "reading the input of", m->name))
                goto release;

        /* Symbolic (negative) dimensions accept what we feed. */
        if (nd == 4 && !take_status(api->GetDimensions(tsi, dims, 4), err,
                                    errlen, "reading the input of", m->name))
                rc = 0;
        for (int i = 0; rc == 0 && i < 4; i++)
                if (dims[i] > 0 && dims[i] != m->in_shape[i])
                        rc = -1;
        if (rc)
                snprintf(err, errlen, "model %s has an unexpected input shape",
                         m->name);
release:
        api->ReleaseTypeInfo(ti);
        return rc;
}

static OrtSessionOptions *make_options(int threads, char *err, size_t errlen,
                                       const char *name)
{
        const OrtApi *api = ort();
        OrtSessionOptions *so = NULL;

        if (take_status(api->CreateSessionOptions(&so), err, errlen,
                        "configuring", name))
                return NULL;

        /* Each run uses `threads` threads of its own session pool, with no
         * busy-waiting between runs (the service shares the machine).
         * Denormal floats are flushed to zero: the embedding model makes
         * many, and computing them made it seven times slower. */
        if (take_status(api->SetIntraOpNumThreads(so, threads), err, errlen,
                        "configuring", name) ||
            take_status(api->SetInterOpNumThreads(so, 1), err, errlen,
                        "configuring", name) ||
            take_status(api->SetSessionExecutionMode(so, ORT_SEQUENTIAL), err,
                        errlen, "configuring", name) ||
            take_status(
                    api->SetSessionGraphOptimizationLevel(so, ORT_ENABLE_ALL),
                    err, errlen, "configuring", name) ||
            take_status(api->AddSessionConfigEntry(
                                so, "session.intra_op.allow_spinning", "0"),
                        err, errlen, "configuring", name) ||
            take_status(api->AddSessionConfigEntry(
                                so, "session.set_denormal_as_zero", "1"),
                        err, errlen, "configuring", name)) {
                api->ReleaseSessionOptions(so);
                return NULL;
        }
        return so;
}

struct face_model *face_model_load(const char *dir, const char *file,
                                   int threads, const int64_t in_shape[4],
                                   const char *const *output_names,
                                   int n_outputs, char *err, size_t errlen)
{
        const OrtApi *api = ort();
        OrtSessionOptions *so = NULL;
        struct face_model *m;
        char path[4096];

        assert(threads >= 1 && n_outputs >= 1 &&
               n_outputs <= FACE_MODEL_MAX_OUTPUTS);
        m = calloc(1, sizeof *m);
        if (!m) {
                snprintf(err, errlen, "out of memory loading %s", file);
                return NULL;
        }
        snprintf(m->name, sizeof m->name, "%s", file);
        memcpy(m->in_shape, in_shape, sizeof m->in_shape);
        m->in_len =
                (size_t)(in_shape[0] * in_shape[1] * in_shape[2] * in_shape[3]);
        m->n_outputs = n_outputs;
        for (int i = 0; i < n_outputs; i++)
                m->output_names[i] = output_names[i];
        if (env_acquire(err, errlen)) {
                free(m);
                return NULL;
        }

        /* Open the file ourselves first: a clear message for a missing
         * model beats the runtime's. */
        snprintf(path, sizeof path, "%s/%s.onnx", dir, file);
        FILE *f = fopen(path, "rb");
        if (!f) {
                snprintf(err, errlen, "cannot open model %s", path);
                goto fail;
        }
        fclose(f);

        so = make_options(threads, err, errlen, file);
        if (!so)
                goto fail;
        if (take_status(api->CreateSession(env, path, so, &m->session), err,
                        errlen, "loading", path) ||
            take_status(api->CreateCpuMemoryInfo(OrtArenaAllocator,
                                                 OrtMemTypeDefault, &m->mem),
                        err, errlen, "loading", path) ||
            check_input(m, err, errlen))
                goto fail;
        api->ReleaseSessionOptions(so);
        return m;

fail:
        if (so)
                api->ReleaseSessionOptions(so);
        face_model_free(m);
        return NULL;
}

void face_model_free(struct face_model *model)
{
        if (!model)
                return;
        if (model->mem)
                ort()->ReleaseMemoryInfo(model->mem);
        if (model->session) {
                ort()->ReleaseSession(model->session);
        }
        free(model);
        env_release();
}

/* Copies one output tensor into out, checking its size. */
static int copy_output(struct face_model *m, OrtValue *v, int i, float *out,
                       size_t len)
{
        const OrtApi *api = ort();
        OrtTensorTypeAndShapeInfo *info = NULL;
        size_t count = 0;
        float *data = NULL;
        char err[256] = "";
        int rc = -1;

        if (take_status(api->GetTensorTypeAndShape(v, &info), err, sizeof err,
                        "reading output of", m->name) ||
            take_status(api->GetTensorShapeElementCount(info, &count), err,
                        sizeof err, "reading output of", m->name) ||
            take_status(api->GetTensorMutableData(v, (void **)&data), err,
                        sizeof err, "reading output of", m->name))
                goto release;
        if (count != len) {
                snprintf(err, sizeof err,
                         "output %s of %s has %zu values, expected %zu",
                         m->output_names[i], m->name, count, len);
                goto release;
        }
        memcpy(out, data, len * sizeof *out);
        rc = 0;
release:
        if (rc)
                log_error("face", "A model output was unusable: %s.", err);
        if (info)
                api->ReleaseTensorTypeAndShapeInfo(info);
        return rc;
}

int face_model_run(struct face_model *model, const float *input,
                   float *const *outs, const size_t *out_len)
{
        const OrtApi *api = ort();
        OrtValue *in = NULL, *out[FACE_MODEL_MAX_OUTPUTS] = {0};
        const char *in_name = "input";
        char err[512] = "";
        int rc = -1;

        /* The runtime reads our buffer in place; it never writes it. */
        if (take_status(api->CreateTensorWithDataAsOrtValue(
                                model->mem, (void *)input,
                                model->in_len * sizeof(float), model->in_shape,
                                4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in),
                        err, sizeof err, "feeding", model->name))
                goto release;
        /* The runtime's own time, for the speed benchmark. */
        struct face_timing *timing = face_timing_current();
        double t0 = timing ? face_timing_now() : 0;
        OrtStatus *run_st = api->Run(
                model->session, NULL, &in_name, (const OrtValue *const *)&in, 1,
                model->output_names, (size_t)model->n_outputs, out);
        if (timing) {
                timing->models += face_timing_now() - t0;
                timing->model_runs++;
        }
        if (take_status(run_st, err, sizeof err, "running", model->name))
                goto release;

        for (int i = 0; i < model->n_outputs; i++)
                if (copy_output(model, out[i], i, outs[i], out_len[i]))
                        goto release;
        rc = 0;
release:
        if (err[0])
                log_error("face", "A model failed to run: %s.", err);
        for (int i = 0; i < model->n_outputs; i++)
                if (out[i])
                        api->ReleaseValue(out[i]);
        if (in)
                api->ReleaseValue(in);
        return rc;
}
