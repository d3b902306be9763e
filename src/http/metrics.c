#include "http/metrics.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* Upper bounds of the histogram buckets, in seconds. */
static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10,   30};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct series {
        struct series *next;
        char *labels; /* "" when none */
        double value; /* counter, gauge; sum for a histogram */
        unsigned long long count;
        unsigned long long bucket[NBUCKETS];
};

struct metric {
        struct metric *next;
        char *name;
        char *help;
        enum metric_type type;
        struct series *series;
};

struct scrape_hook {
        void (*fn)(void *);
        void *userdata;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric *metrics;
static struct metric **metrics_tail = &metrics;
static struct scrape_hook hooks[32];
static size_t nhooks;

static char *xstrdup(const char *s)
{
        char *d = strdup(s);
        if (!d)
                abort();
        return d;
}

/* Finds or creates a metric; called with the lock held.  Metrics keep the
 * order of their first use, so /metrics reads the same every time. */
static struct metric *metric_get(const char *name, enum metric_type type)
{
        for (struct metric *m = metrics; m; m = m->next)
                if (strcmp(m->name, name) == 0)
                        return m;

        struct metric *m = calloc(1, sizeof *m);
        if (!m)
                abort();
        m->name = xstrdup(name);
        m->type = type;
        *metrics_tail = m;
        metrics_tail = &m->next;
        return m;
}

/* Finds or creates one labelled series of m; called with the lock held. */
static struct series *series_get(struct metric *m, const char *labels)
{
        if (!labels)
                labels = "";
        struct series **tail = &m->series;
        for (struct series *s = m->series; s; s = s->next) {
                if (strcmp(s->labels, labels) == 0)
                        return s;
                tail = &s->next;
        }

        struct series *s = calloc(1, sizeof *s);
        if (!s)
                abort();
        s->labels = xstrdup(labels);
        *tail = s;
        return s;
}

void http_metrics_help(const char *name, const char *help)
{
        pthread_mutex_lock(&lock);
        struct metric *m = metric_get(name, METRIC_COUNTER);
        free(m->help);
        m->help = xstrdup(help);
        pthread_mutex_unlock(&lock);
}

/* Sets the type of a metric whose first use was http_metrics_help(). */
static struct metric *metric_typed(const char *name, enum metric_type type)
{
        struct metric *m = metric_get(name, type);
        if (!m->series)
                m->type = type;
        return m;
}

void http_metrics_counter_add(const char *name, const char *labels, double v)
{
        assert(v >= 0);
        pthread_mutex_lock(&lock);
        series_get(metric_typed(name, METRIC_COUNTER), labels)->value += v;
        pthread_mutex_unlock(&lock);
}

void http_metrics_gauge_set(const char *name, const char *labels, double v)
{
        pthread_mutex_lock(&lock);
        series_get(metric_typed(name, METRIC_GAUGE), labels)->value = v;
        pthread_mutex_unlock(&lock);
}

void http_metrics_gauge_add(const char *name, const char *labels, double v)
{
        pthread_mutex_lock(&lock);
        series_get(metric_typed(name, METRIC_GAUGE), labels)->value += v;
        pthread_mutex_unlock(&lock);
}

void http_metrics_histogram_observe(const char *name, const char *labels,
                                    double seconds)
{
        pthread_mutex_lock(&lock);
        struct series *s =
                series_get(metric_typed(name, METRIC_HISTOGRAM), labels);
        s->value += seconds;
        s->count++;
        for (size_t i = 0; i < NBUCKETS; i++)
                if (seconds <= buckets[i])
                        s->bucket[i]++;
        pthread_mutex_unlock(&lock);
}

void http_metrics_on_scrape(void (*fn)(void *), void *userdata)
{
        pthread_mutex_lock(&lock);
        assert(nhooks < sizeof hooks / sizeof hooks[0]);
        hooks[nhooks++] = (struct scrape_hook){fn, userdata};
        pthread_mutex_unlock(&lock);
}

/* A growing text buffer; on allocation failure it is marked broken. */
struct text {
        char *buf;
        size_t len;
        size_t cap;
        int broken;
};

static void text_printf(struct text *t, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
        va_list ap;
        for (int attempt = 0; attempt < 2 && !t->broken; attempt++) {
                va_start(ap, fmt);
                int n = vsnprintf(t->buf ? t->buf + t->len : NULL,
                                  t->buf ? t->cap - t->len : 0, fmt, ap);
                va_end(ap);
                if (n < 0) {
                        t->broken = 1;
                        return;
                }
                if (t->buf && t->len + (size_t)n < t->cap) {
                        t->len += n;
                        return;
                }

                /* Grow to fit, then format again. */
                size_t cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
                char *nb = realloc(t->buf, cap);
                if (!nb) {
                        t->broken = 1;
                        return;
                }
                t->buf = nb;
                t->cap = cap;
        }
}

/* Writes "name{labels}" or "name{labels,extra}" as a sample name. */
static void text_sample(struct text *t, const char *name, const char *suffix,
                        const char *labels, const char *extra)
{
        int has_l = labels[0] != '\0';
        int has_e = extra != NULL;
        text_printf(t, "%s%s", name, suffix);
        if (has_l || has_e)
                text_printf(t, "{%s%s%s}", labels, has_l && has_e ? "," : "",
                            has_e ? extra : "");
}

static void render_metric(struct text *t, const struct metric *m)
{
        if (m->help)
                text_printf(t, "# HELP %s %s\n", m->name, m->help);
        text_printf(t, "# TYPE %s %s\n", m->name, type_names[m->type]);
        for (const struct series *s = m->series; s; s = s->next) {
                if (m->type != METRIC_HISTOGRAM) {
                        text_sample(t, m->name, "", s->labels, NULL);
                        text_printf(t, " %.17g\n", s->value);
                        continue;
                }
                char le[32];
                for (size_t i = 0; i < NBUCKETS; i++) {
                        snprintf(le, sizeof le, "le=\"%g\"", buckets[i]);
                        text_sample(t, m->name, "_bucket", s->labels, le);
                        text_printf(t, " %llu\n", s->bucket[i]);
                }
                text_sample(t, m->name, "_bucket", s->labels, "le=\"+Inf\"");
                text_printf(t, " %llu\n", s->count);
                text_sample(t, m->name, "_sum", s->labels, NULL);
                text_printf(t, " %.17g\n", s->value);
                text_sample(t, m->name, "_count", s->labels, NULL);
                text_printf(t, " %llu\n", s->count);
        }
}

char *http_metrics_render(size_t *len)
{
        /* Let modules refresh their gauges first, outside the lock, since
         * they call back into this module. */
        struct scrape_hook copy[sizeof hooks / sizeof hooks[0]];
        pthread_mutex_lock(&lock);
        size_t n = nhooks;
        memcpy(copy, hooks, n * sizeof hooks[0]);
        pthread_mutex_unlock(&lock);
        for (size_t i = 0; i < n; i++)
                copy[i].fn(copy[i].userdata);

        struct text t = {0};
        pthread_mutex_lock(&lock);
        for (const struct metric *m = metrics; m; m = m->next)
                if (m->series)
                        render_metric(&t, m);
        pthread_mutex_unlock(&lock);

        text_printf(&t, "%s", "");
        if (t.broken) {
                free(t.buf);
                return NULL;
        }
        if (len)
                *len = t.len;
        return t.buf;
}

void http_metrics_reset(void)
{
        pthread_mutex_lock(&lock);
        while (metrics) {
                struct metric *m = metrics;
                metrics = m->next;
                while (m->series) {
                        struct series *s = m->series;
                        m->series = s->next;
                        free(s->labels);
                        free(s);
                }
                free(m->help);
                free(m->name);
                free(m);
        }
        metrics_tail = &metrics;
        nhooks = 0;
        pthread_mutex_unlock(&lock);
}
