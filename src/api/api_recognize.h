/*
 * api_recognize.h - the routes that look at photos: verify (1:1),
 * identify (1:N), liveness and detect.
 */
#ifndef FRAPI_API_RECOGNIZE_H
#define FRAPI_API_RECOGNIZE_H

#include "api/api.h"

extern const struct api_route api_recognize_routes[];
extern const size_t api_recognize_nroutes;

#endif
