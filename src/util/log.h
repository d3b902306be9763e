/*
 * log.h - the one event logger.  One line per event on stderr:
 *
 *   2026-12-03T18:43:06.123Z info  store  req=01J... The store opened.
 *
 * Messages are whole sentences.  Never pass secrets (passwords, tokens,
 * API keys) or image bytes.  The access log is separate (http module).
 */
#ifndef FRAPI_LOG_H
#define FRAPI_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level written; the default is LOG_INFO.  Also reads
 * FRAPI_LOG_LEVEL (debug, info, warn, error) when called with -1. */
void log_set_level(int level);

/* Writes one line for module (short noun) and request id (NULL if none). */
void log_write(enum log_level level, const char *module, const char *req_id,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_debug(mod, ...) log_write(LOG_DEBUG, mod, NULL, __VA_ARGS__)
#define log_info(mod, ...)  log_write(LOG_INFO, mod, NULL, __VA_ARGS__)
#define log_warn(mod, ...)  log_write(LOG_WARN, mod, NULL, __VA_ARGS__)
#define log_error(mod, ...) log_write(LOG_ERROR, mod, NULL, __VA_ARGS__)

#endif
