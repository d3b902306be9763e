/*
 * keyuse.h - when and from where each API key was last used.
 *
 * Every keyed request touches its key here, in memory, under one short
 * lock; nothing is written to the database per request.  A background
 * thread hands the keys touched since the last time to a flush callback
 * (the store writes them) every interval, and keyuse_free() flushes once
 * more at shutdown.  A flush that fails is retried at the next interval.
 */
#ifndef FRAPI_KEYUSE_H
#define FRAPI_KEYUSE_H

#include <stddef.h>
#include <stdint.h>

#include "auth/ipallow.h"

/* The longest key id kept, terminating NUL excluded. */
#define KEYUSE_ID_MAX 63

/* The last use of one key. */
struct keyuse_record {
        char key_id[KEYUSE_ID_MAX + 1];
        int64_t used_ms;               /* Unix milliseconds */
        char addr[IPALLOW_ADDRSTRLEN]; /* client address as text */
};

/*
 * Writes n records to the store; returns 0, or -1 when nothing or only part
 * was written (every record is then offered again next time).  Called from
 * the flush thread or from keyuse_flush()/keyuse_free(), never twice at
 * once.
 */
typedef int (*keyuse_flush_fn)(void *ctx, const struct keyuse_record *recs,
                               size_t n);

struct keyuse;

/*
 * Makes a tracker that calls flush(ctx, ...) every interval_ms (> 0) from
 * its own thread, or only on request when interval_ms is 0.  Returns NULL
 * when out of memory or the thread cannot start.
 */
struct keyuse *keyuse_new(keyuse_flush_fn flush, void *ctx, int interval_ms);

/*
 * Records that key_id (at most KEYUSE_ID_MAX bytes, never the secret) was
 * used at now_ms from addr (text, may be NULL).  A use older than the one
 * already recorded is ignored.  Returns 0, or -1 when out of memory (the
 * use is then lost; the request goes on).
 */
int keyuse_touch(struct keyuse *ku, const char *key_id, int64_t now_ms,
                 const char *addr);

/* Copies the last use of key_id into *out; returns 0, or -1 if the key was
 * not used since start. */
int keyuse_get(struct keyuse *ku, const char *key_id,
               struct keyuse_record *out);

/* Hands every use not yet written to the callback now.  Returns the number
 * of records written, or -1 when the callback failed. */
int keyuse_flush(struct keyuse *ku);

/* Stops the thread, flushes a last time and releases ku; NULL is fine. */
void keyuse_free(struct keyuse *ku);

#endif
