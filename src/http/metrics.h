/*
 * metrics.h - process-wide metrics in Prometheus text format.  Any module
 * may add to a counter, set a gauge or observe a histogram value; the
 * server renders them all at /metrics.  All calls are thread-safe.
 *
 * name is a Prometheus metric name ("frapi_faces_stored"); labels is NULL
 * or the text between the braces ("stage=\"detect\""), already escaped.
 * A series is created on first use.
 */
#ifndef FRAPI_HTTP_METRICS_H
#define FRAPI_HTTP_METRICS_H

#include <stddef.h>

/* Sets the HELP text of a metric (optional; copied). */
void http_metrics_help(const char *name, const char *help);

/* Adds v (>= 0) to a counter. */
void http_metrics_counter_add(const char *name, const char *labels, double v);

/* Sets or moves a gauge. */
void http_metrics_gauge_set(const char *name, const char *labels, double v);
void http_metrics_gauge_add(const char *name, const char *labels, double v);

/* Observes a value in seconds into a histogram with buckets from 1 ms to
 * 30 s. */
void http_metrics_histogram_observe(const char *name, const char *labels,
                                    double seconds);

/* Registers fn(userdata), called before every rendering, so a module can
 * refresh its gauges (faces stored) only when someone looks. */
void http_metrics_on_scrape(void (*fn)(void *), void *userdata);

/* The whole text exposition; the caller frees it.  NULL when out of
 * memory. */
char *http_metrics_render(size_t *len);

/* Forgets every series and callback (tests). */
void http_metrics_reset(void);

#endif
