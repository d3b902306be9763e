/*
 * timing.h - where the time of face_engine_analyze() goes, for the speed
 * benchmark.  Recording is per thread and off unless a caller turns it
 * on; when off it costs one thread-local read per stage.
 */
#ifndef FRAPI_FACE_TIMING_H
#define FRAPI_FACE_TIMING_H

/* Milliseconds spent in each stage since recording started. */
struct face_timing {
        double detect;    /* detector runs, tiling, suppression */
        double landmarks; /* landmark crops and runs */
        double align;     /* similarity transform and warp */
        double embed;     /* embedding run and normalisation */
        double liveness;  /* context crop and liveness run */
        double other;     /* pose, age, gender, expression, eyes */
        double models;    /* inside ONNX Runtime, all models */
        int model_runs;
};

/*
 * Starts adding the stages of this thread's face_engine_analyze() calls
 * into *t (not zeroed here), or stops with NULL.  t must stay valid until
 * recording stops.
 */
void face_timing_record(struct face_timing *t);

/* The recording of this thread, or NULL. */
struct face_timing *face_timing_current(void);

/* A monotonic clock in milliseconds. */
double face_timing_now(void);

#endif
