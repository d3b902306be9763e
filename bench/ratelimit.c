/*
 * bench/ratelimit.c - the cost of one rate-limit check.
 *
 *   build/bench/ratelimit [KEYS] [THREADS] [SECONDS]
 *
 * Checks spread over KEYS keys (default 1000) from THREADS threads
 * (default 1, then 2) for SECONDS each (default 2), with the wall clock
 * read per check as the server does.  Prints the mean nanoseconds per
 * check.  The goal is under 2 microseconds.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "auth/ratelimit.h"

struct worker {
        struct ratelimit *rl;
        int keys;
        double seconds;
        int seed;
        long checks;
};

static double mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
        struct worker *w = arg;
        char key[32];
        unsigned r = (unsigned)w->seed;
        double end = mono() + w->seconds;
        while (1) {
                /* Check the clock every 1024 calls, not every call. */
                for (int i = 0; i < 1024; i++) {
                        r = r * 1103515245u + 12345u;
                        snprintf(key, sizeof key, "key_%u", (r >> 8) % w->keys);
                        struct ratelimit_result res;
                        ratelimit_consume(w->rl, key, 1000000000u,
                                          ratelimit_now_ms(), &res);
                }
                w->checks += 1024;
                if (mono() >= end)
                        break;
        }
        return NULL;
}

/* Runs the check loop on nthreads threads; returns ns per check per
 * thread. */
static double measure(int keys, int nthreads, double seconds)
{
        struct ratelimit *rl = ratelimit_memory_new();
        pthread_t th[64];
        struct worker w[64];
        for (int i = 0; i < nthreads; i++) {
                w[i] = (struct worker){rl, keys, seconds, i + 1, 0};
                pthread_create(&th[i], NULL, run, &w[i]);
        }
        long total = 0;
        for (int i = 0; i < nthreads; i++) {
                pthread_join(th[i], NULL);
                total += w[i].checks;
        }
        ratelimit_free(rl);
        return seconds * 1e9 * nthreads / (double)total;
}

int main(int argc, char **argv)
{
        int keys = argc > 1 ? atoi(argv[1]) : 1000;
        int threads = argc > 2 ? atoi(argv[2]) : 0;
        double seconds = argc > 3 ? atof(argv[3]) : 2.0;
        if (keys < 1 || threads < 0 || threads > 64 || seconds <= 0) {
                fprintf(stderr, "usage: ratelimit [KEYS] [THREADS<=64] "
                                "[SECONDS]\n");
                return 2;
        }

        /* Key formatting is part of the loop: measure it alone to subtract. */
        double t0 = mono();
        char key[32];
        volatile unsigned sink = 0;
        for (unsigned i = 0; i < 10000000u; i++) {
                snprintf(key, sizeof key, "key_%u", i % (unsigned)keys);
                sink += (unsigned)key[4];
        }
        double fmt_ns = (mono() - t0) * 1e9 / 1e7;

        for (int n = threads ? threads : 1; n <= (threads ? threads : 2); n++) {
                double ns = measure(keys, n, seconds);
                printf("threads=%d keys=%d: %.0f ns per check (%.0f ns without "
                       "formatting the key name)\n",
                       n, keys, ns, ns - fmt_ns);
        }
        return 0;
}
