/*
 * keyuse.c - last use of API keys in a locked hash table, written out in
 * batches by a background thread.
 */
#include "auth/keyuse.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

#define BUCKETS 256

struct entry {
        struct entry *next;
        struct keyuse_record rec;
        bool dirty; /* changed since the last successful flush */
};

struct keyuse {
        keyuse_flush_fn flush;
        void *ctx;
        int interval_ms;

        pthread_mutex_t lock; /* guards the table and `stopping` */
        pthread_cond_t wake;
        struct entry *buckets[BUCKETS];
        size_t count;
        bool stopping;

        pthread_mutex_t flushing; /* one flush at a time */
        pthread_t thread;
        bool has_thread;
};

static size_t bucket_of(const char *key_id)
{
        uint32_t h = 2166136261u;
        for (const unsigned char *p = (const unsigned char *)key_id; *p; p++)
                h = (h ^ *p) * 16777619u;
        return h % BUCKETS;
}

/* The entry of key_id, or NULL; the lock is held. */
static struct entry *find(struct keyuse *ku, const char *key_id)
{
        for (struct entry *e = ku->buckets[bucket_of(key_id)]; e; e = e->next)
                if (strcmp(e->rec.key_id, key_id) == 0)
                        return e;
        return NULL;
}

int keyuse_touch(struct keyuse *ku, const char *key_id, int64_t now_ms,
                 const char *addr)
{
        assert(ku && key_id && strlen(key_id) <= KEYUSE_ID_MAX);
        int rc = 0;

        pthread_mutex_lock(&ku->lock);
        struct entry *e = find(ku, key_id);
        if (!e) {
                /* First use since start: the table holds one entry per key
                 * ever used, as many as the store has keys. */
                e = calloc(1, sizeof *e);
                if (!e) {
                        rc = -1;
                        goto unlock;
                }
                strcpy(e->rec.key_id, key_id);
                e->rec.used_ms = INT64_MIN;
                size_t b = bucket_of(key_id);
                e->next = ku->buckets[b];
                ku->buckets[b] = e;
                ku->count++;
        }

        /* Requests finish out of order; keep the latest. */
        if (now_ms >= e->rec.used_ms) {
                e->rec.used_ms = now_ms;
                snprintf(e->rec.addr, sizeof e->rec.addr, "%s",
                         addr ? addr : "");
                e->dirty = true;
        }

unlock:
        pthread_mutex_unlock(&ku->lock);
        return rc;
}

int keyuse_get(struct keyuse *ku, const char *key_id, struct keyuse_record *out)
{
        pthread_mutex_lock(&ku->lock);
        struct entry *e = find(ku, key_id);
        if (e)
                *out = e->rec;
        pthread_mutex_unlock(&ku->lock);
        return e ? 0 : -1;
}

int keyuse_flush(struct keyuse *ku)
{
        int rc = 0;
        pthread_mutex_lock(&ku->flushing);

        /* Copy the dirty records out, so the callback runs without the
         * lock every request takes. */
        pthread_mutex_lock(&ku->lock);
        struct keyuse_record *recs = NULL;
        size_t n = 0;
        if (ku->count)
                recs = malloc(ku->count * sizeof *recs);
        for (size_t b = 0; recs && b < BUCKETS; b++)
                for (struct entry *e = ku->buckets[b]; e; e = e->next)
                        if (e->dirty) {
                                recs[n++] = e->rec;
                                e->dirty = false;
                        }
        bool lost_copy = ku->count && !recs;
        pthread_mutex_unlock(&ku->lock);
        if (lost_copy) {
                rc = -1;
                goto done;
        }

        /* Write; on failure mark them dirty again for the next round. */
        if (n && ku->flush(ku->ctx, recs, n) != 0) {
                log_warn("keys",
                         "Writing the last use of %zu API keys failed; "
                         "retrying later.",
                         n);
                pthread_mutex_lock(&ku->lock);
                for (size_t i = 0; i < n; i++) {
                        struct entry *e = find(ku, recs[i].key_id);
                        if (e)
                                e->dirty = true;
                }
                pthread_mutex_unlock(&ku->lock);
                rc = -1;
                goto done;
        }
        rc = (int)n;

done:
        free(recs);
        pthread_mutex_unlock(&ku->flushing);
        return rc;
}

/* The flush thread: sleeps interval_ms at a time until told to stop. */
static void *flush_loop(void *arg)
{
        struct keyuse *ku = arg;
        pthread_mutex_lock(&ku->lock);
        while (!ku->stopping) {
                struct timespec until;
                clock_gettime(CLOCK_MONOTONIC, &until);
                until.tv_sec += ku->interval_ms / 1000;
                until.tv_nsec += (long)(ku->interval_ms % 1000) * 1000000;
                if (until.tv_nsec >= 1000000000) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000;
                }
                int w = 0;
                while (!ku->stopping && w != ETIMEDOUT)
                        w = pthread_cond_timedwait(&ku->wake, &ku->lock,
                                                   &until);
                if (ku->stopping)
                        break;
                pthread_mutex_unlock(&ku->lock);
                keyuse_flush(ku);
                pthread_mutex_lock(&ku->lock);
        }
        pthread_mutex_unlock(&ku->lock);
        return NULL;
}

struct keyuse *keyuse_new(keyuse_flush_fn flush, void *ctx, int interval_ms)
{
        assert(flush && interval_ms >= 0);
        struct keyuse *ku = calloc(1, sizeof *ku);
        if (!ku)
                return NULL;
        ku->flush = flush;
        ku->ctx = ctx;
        ku->interval_ms = interval_ms;

        /* The wait measures intervals on the monotonic clock, immune to
         * changes of the wall clock. */
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&ku->wake, &ca);
        pthread_condattr_destroy(&ca);
        pthread_mutex_init(&ku->lock, NULL);
        pthread_mutex_init(&ku->flushing, NULL);

        if (interval_ms > 0) {
                if (pthread_create(&ku->thread, NULL, flush_loop, ku) != 0) {
                        keyuse_free(ku);
                        return NULL;
                }
                ku->has_thread = true;
        }
        return ku;
}

void keyuse_free(struct keyuse *ku)
{
        if (!ku)
                return;

        /* Stop the thread first, so the last flush below is the last. */
        if (ku->has_thread) {
                pthread_mutex_lock(&ku->lock);
                ku->stopping = true;
                pthread_cond_signal(&ku->wake);
                pthread_mutex_unlock(&ku->lock);
                pthread_join(ku->thread, NULL);
        }
        if (keyuse_flush(ku) < 0)
                log_error("keys", "The last use of some API keys was lost at "
                                  "shutdown.");

        for (size_t b = 0; b < BUCKETS; b++) {
                struct entry *e = ku->buckets[b];
                while (e) {
                        struct entry *next = e->next;
                        free(e);
                        e = next;
                }
        }
        pthread_mutex_destroy(&ku->flushing);
        pthread_mutex_destroy(&ku->lock);
        pthread_cond_destroy(&ku->wake);
        free(ku);
}
