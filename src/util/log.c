#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int min_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level)
{
        if (level >= LOG_DEBUG && level <= LOG_ERROR) {
                min_level = level;
                return;
        }

        const char *env = getenv("FRAPI_LOG_LEVEL");
        for (int i = LOG_DEBUG; env && i <= LOG_ERROR; i++)
                if (strcmp(env, level_names[i]) == 0)
                        min_level = i;
}

void log_write(enum log_level level, const char *module, const char *req_id,
               const char *fmt, ...)
{
        if ((int)level < min_level)
                return;

        /* Build the whole line first so concurrent writers never interleave. */
        char line[2048];
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        int n = snprintf(line, sizeof line,
                         "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %-6s ",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                         tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                         level_names[level], module);
        if (req_id && n < (int)sizeof line)
                n += snprintf(line + n, sizeof line - n, "req=%s ", req_id);

        va_list ap;
        va_start(ap, fmt);
        if (n < (int)sizeof line)
                n += vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);

        if (n >= (int)sizeof line - 1)
                n = sizeof line - 2;
        line[n++] = '\n';
        fwrite(line, 1, n, stderr);
}
