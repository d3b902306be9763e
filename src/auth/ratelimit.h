/*
 * ratelimit.h - requests per minute per API key, counted with a sliding
 * window counter.
 *
 * Time is cut into fixed one-minute windows.  For a key, the limiter keeps
 * the count of the current window and of the one before; the estimate of
 * the requests made in the last sixty seconds is
 *
 *   previous * (time left in the current window / 60 s) + current
 *
 * and a request is let through when the estimate, this request included,
 * stays within the limit.  The estimate is computed in exact integer
 * arithmetic (milliseconds), so a limit of N lets exactly N requests
 * through in a fresh window however many arrive at once.
 *
 * The state sits behind struct ratelimit_ops so that a shared store (for
 * several server nodes) can replace the in-memory one.  Every call takes
 * the current time explicitly: the server passes ratelimit_now_ms(), tests
 * pass the time they want.
 */
#ifndef FRAPI_RATELIMIT_H
#define FRAPI_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The length of one window in milliseconds. */
#define RATELIMIT_WINDOW_MS 60000

/* What one check decided, and what the X-RateLimit-* headers report. */
struct ratelimit_result {
        bool allowed;
        uint32_t limit;       /* requests per minute */
        uint32_t remaining;   /* requests still allowed now, after this one */
        int64_t reset;        /* Unix seconds when the current window ends */
        uint32_t retry_after; /* whole seconds to wait, >= 1 when refused;
                                 0 when allowed */
};

struct ratelimit;

/* An implementation of the limiter state. */
struct ratelimit_ops {
        /* Counts one request of key at now_ms (Unix milliseconds) against
         * limit, atomically, and fills *out.  A refused request is not
         * counted.  Returns 0, or -1 when the state could not be reached
         * (out of memory, shared store down). */
        int (*consume)(struct ratelimit *rl, const char *key, uint32_t limit,
                       int64_t now_ms, struct ratelimit_result *out);
        /* Releases the implementation and rl itself. */
        void (*free)(struct ratelimit *rl);
};

/* The common head of every implementation. */
struct ratelimit {
        const struct ratelimit_ops *ops;
};

/*
 * Makes the in-memory limiter: a hash table cut into shards, each under its
 * own mutex, so checks of different keys rarely wait for each other.
 * Entries of keys idle for two windows are dropped as the table grows.
 * Returns NULL when out of memory.  Release with ratelimit_free().
 */
struct ratelimit *ratelimit_memory_new(void);

/*
 * Counts one request of key (a non-empty NUL-terminated id, never the
 * secret) at now_ms against limit requests per minute.  A limit of 0
 * refuses everything.  Returns 0 with *out filled, or -1 on failure of the
 * implementation (the caller should then answer 503, not let it through).
 */
int ratelimit_consume(struct ratelimit *rl, const char *key, uint32_t limit,
                      int64_t now_ms, struct ratelimit_result *out);

/* Releases rl; NULL is fine. */
void ratelimit_free(struct ratelimit *rl);

/* The wall clock in Unix milliseconds, as the server passes it. */
int64_t ratelimit_now_ms(void);

/*
 * The pure arithmetic shared by every implementation: given the counts of
 * the previous and current windows and the time now_ms inside the current
 * window starting at window_ms, decides whether one more request fits
 * under limit and fills *out (without counting anything).
 */
void ratelimit_decide(uint32_t prev, uint32_t cur, uint32_t limit,
                      int64_t window_ms, int64_t now_ms,
                      struct ratelimit_result *out);

#endif
