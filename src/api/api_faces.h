/*
 * api_faces.h - the routes that manage a collection's faces: enroll,
 * list, read, change and delete.
 */
#ifndef FRAPI_API_FACES_H
#define FRAPI_API_FACES_H

#include "api/api.h"

extern const struct api_route api_faces_routes[];
extern const size_t api_faces_nroutes;

#endif
