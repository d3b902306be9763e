/*
 * ratelimit.c - the sliding window arithmetic and the in-memory limiter:
 * a sharded hash table of per-key window counts.
 */
#include "auth/ratelimit.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHARDS        64
#define FIRST_BUCKETS 16

/* One key's two windows. */
struct entry {
        struct entry *next;
        int64_t window_ms; /* start of the window `cur` counts */
        uint32_t prev;
        uint32_t cur;
        char key[]; /* NUL-terminated copy */
};

/* A slice of the table with its own lock. */
struct shard {
        pthread_mutex_t lock;
        struct entry **buckets;
        size_t nbuckets; /* a power of two */
        size_t count;
};

struct memory_limiter {
        struct ratelimit head;
        struct shard shards[SHARDS];
};

/* FNV-1a: cheap and spreads short ids well enough for a few thousand. */
static uint64_t hash_key(const char *key)
{
        uint64_t h = 1469598103934665603ull;
        for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
                h ^= *p;
                h *= 1099511628211ull;
        }
        return h;
}

/* The first millisecond the window must reach for one more request to fit,
 * with `prev` decaying over it and `cur` fixed; W when it never fits. */
static int64_t first_fit_ms(uint64_t prev, uint64_t cur, uint64_t limit)
{
        const uint64_t w = RATELIMIT_WINDOW_MS;

        /* This request itself must fit beside the current count. */
        if (cur + 1 > limit)
                return w;
        if (prev == 0)
                return 0;

        /* prev * (W - e) <= (limit - cur - 1) * W, solved for the least e. */
        uint64_t room = (limit - cur - 1) * w / prev;
        if (room >= w)
                return 0;
        return (int64_t)(w - room);
}

void ratelimit_decide(uint32_t prev, uint32_t cur, uint32_t limit,
                      int64_t window_ms, int64_t now_ms,
                      struct ratelimit_result *out)
{
        const int64_t w = RATELIMIT_WINDOW_MS;
        int64_t e = now_ms - window_ms;
        assert(e >= 0 && e < w);

        /* The estimate of the last minute, this request included, scaled by
         * W so that it stays exact. */
        uint64_t scaled_limit = (uint64_t)limit * w;
        uint64_t used = (uint64_t)prev * (uint64_t)(w - e) + (uint64_t)cur * w;
        out->limit = limit;
        out->reset = (window_ms + w) / 1000;
        out->allowed = used + w <= scaled_limit;
        if (out->allowed) {
                out->remaining = (uint32_t)((scaled_limit - used - w) / w);
                out->retry_after = 0;
                return;
        }
        out->remaining = 0;

        /* Refused: find when one request would fit again, first later in
         * this window, else in the next one where `cur` becomes `prev`. */
        int64_t wait_ms;
        int64_t here = first_fit_ms(prev, cur, limit);
        if (limit == 0)
                wait_ms = w;
        else if (here < w)
                wait_ms = here - e;
        else
                wait_ms = (w - e) + first_fit_ms(cur, 0, limit);
        int64_t secs = (wait_ms + 999) / 1000;
        out->retry_after = secs < 1 ? 1 : (uint32_t)secs;
}

/* Drops entries whose both windows lie before the one starting at
 * window_ms: they count nothing any more. */
static void shard_sweep(struct shard *s, int64_t window_ms)
{
        for (size_t i = 0; i < s->nbuckets; i++) {
                struct entry **pp = &s->buckets[i];
                while (*pp) {
                        struct entry *e = *pp;
                        if (e->window_ms < window_ms - RATELIMIT_WINDOW_MS) {
                                *pp = e->next;
                                free(e);
                                s->count--;
                        } else {
                                pp = &e->next;
                        }
                }
        }
}

/* Doubles the bucket array; on allocation failure the table just stays
 * denser, which is slower but still correct. */
static void shard_grow(struct shard *s)
{
        size_t n = s->nbuckets * 2;
        struct entry **b = calloc(n, sizeof *b);
        if (!b)
                return;
        for (size_t i = 0; i < s->nbuckets; i++) {
                struct entry *e = s->buckets[i];
                while (e) {
                        struct entry *next = e->next;
                        size_t j = hash_key(e->key) & (n - 1);
                        e->next = b[j];
                        b[j] = e;
                        e = next;
                }
        }
        free(s->buckets);
        s->buckets = b;
        s->nbuckets = n;
}

/* Finds or adds the entry of key; NULL when out of memory.  The shard's
 * lock is held. */
static struct entry *shard_get(struct shard *s, const char *key, uint64_t h,
                               int64_t window_ms)
{
        struct entry *e;
        for (e = s->buckets[h & (s->nbuckets - 1)]; e; e = e->next)
                if (strcmp(e->key, key) == 0)
                        return e;

        /* A new key: keep the table at about two entries per bucket, first
         * by forgetting idle keys, then by growing. */
        if (s->count >= s->nbuckets * 2) {
                shard_sweep(s, window_ms);
                if (s->count >= s->nbuckets)
                        shard_grow(s);
        }
        size_t len = strlen(key);
        e = malloc(sizeof *e + len + 1);
        if (!e)
                return NULL;
        memcpy(e->key, key, len + 1);
        e->window_ms = window_ms;
        e->prev = 0;
        e->cur = 0;
        size_t i = h & (s->nbuckets - 1);
        e->next = s->buckets[i];
        s->buckets[i] = e;
        s->count++;
        return e;
}

static int memory_consume(struct ratelimit *rl, const char *key, uint32_t limit,
                          int64_t now_ms, struct ratelimit_result *out)
{
        struct memory_limiter *m = (struct memory_limiter *)rl;
        uint64_t h = hash_key(key);
        struct shard *s = &m->shards[(h >> 32) % SHARDS];
        int64_t window_ms = now_ms - now_ms % RATELIMIT_WINDOW_MS;
        int rc = -1;

        pthread_mutex_lock(&s->lock);
        struct entry *e = shard_get(s, key, h, window_ms);
        if (!e)
                goto unlock;

        /* Roll the windows forward to now.  A clock that stepped back is
         * read as still in the entry's window: that never lets more in. */
        if (e->window_ms == window_ms - RATELIMIT_WINDOW_MS) {
                e->prev = e->cur;
                e->cur = 0;
                e->window_ms = window_ms;
        } else if (e->window_ms < window_ms) {
                e->prev = 0;
                e->cur = 0;
                e->window_ms = window_ms;
        } else if (e->window_ms > window_ms) {
                now_ms = e->window_ms;
        }

        /* Decide and count under the same lock: that is the atomicity. */
        ratelimit_decide(e->prev, e->cur, limit, e->window_ms, now_ms, out);
        if (out->allowed)
                e->cur++;
        rc = 0;

unlock:
        pthread_mutex_unlock(&s->lock);
        return rc;
}

static void memory_free(struct ratelimit *rl)
{
        struct memory_limiter *m = (struct memory_limiter *)rl;
        for (int i = 0; i < SHARDS; i++) {
                struct shard *s = &m->shards[i];
                for (size_t j = 0; s->buckets && j < s->nbuckets; j++) {
                        struct entry *e = s->buckets[j];
                        while (e) {
                                struct entry *next = e->next;
                                free(e);
                                e = next;
                        }
                }
                free(s->buckets);
                pthread_mutex_destroy(&s->lock);
        }
        free(m);
}

static const struct ratelimit_ops memory_ops = {
        .consume = memory_consume,
        .free = memory_free,
};

struct ratelimit *ratelimit_memory_new(void)
{
        struct memory_limiter *m = calloc(1, sizeof *m);
        if (!m)
                return NULL;
        m->head.ops = &memory_ops;

        /* Every shard starts small; busy ones grow on their own.  All locks
         * exist before any failure, so memory_free() may destroy them. */
        for (int i = 0; i < SHARDS; i++)
                pthread_mutex_init(&m->shards[i].lock, NULL);
        for (int i = 0; i < SHARDS; i++) {
                struct shard *s = &m->shards[i];
                s->nbuckets = FIRST_BUCKETS;
                s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
                if (!s->buckets) {
                        memory_free(&m->head);
                        return NULL;
                }
        }
        return &m->head;
}

int ratelimit_consume(struct ratelimit *rl, const char *key, uint32_t limit,
                      int64_t now_ms, struct ratelimit_result *out)
{
        assert(rl && key && *key && out && now_ms >= 0);
        memset(out, 0, sizeof *out);
        return rl->ops->consume(rl, key, limit, now_ms, out);
}

void ratelimit_free(struct ratelimit *rl)
{
        if (rl)
                rl->ops->free(rl);
}

int64_t ratelimit_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
