/*
 * timing.c - per-thread stage timing of the face engine.  See timing.h.
 */
#include "face/timing.h"

#include <stddef.h>
#include <time.h>

static _Thread_local struct face_timing *recording;

void face_timing_record(struct face_timing *t)
{
        recording = t;
}

struct face_timing *face_timing_current(void)
{
        return recording;
}

double face_timing_now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
