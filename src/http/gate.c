#include "http/gate.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct http_gate {
        pthread_mutex_t lock;
        pthread_cond_t freed;
        int slots;
        int queue;
        int wait_ms;
        int in_use;
        int waiting;
};

struct http_gate *http_gate_new(int slots, int queue, int wait_ms)
{
        assert(slots >= 1 && queue >= 0 && wait_ms >= 0);
        struct http_gate *gate = calloc(1, sizeof *gate);
        if (!gate)
                return NULL;

        /* Waits are measured on the monotonic clock so that a change of the
         * wall clock neither cuts nor stretches them. */
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&gate->freed, &attr);
        pthread_condattr_destroy(&attr);
        pthread_mutex_init(&gate->lock, NULL);
        gate->slots = slots;
        gate->queue = queue;
        gate->wait_ms = wait_ms;
        return gate;
}

void http_gate_free(struct http_gate *gate)
{
        if (!gate)
                return;
        assert(gate->in_use == 0 && gate->waiting == 0);
        pthread_cond_destroy(&gate->freed);
        pthread_mutex_destroy(&gate->lock);
        free(gate);
}

enum http_gate_result http_gate_acquire(struct http_gate *gate)
{
        enum http_gate_result result = HTTP_GATE_OK;
        pthread_mutex_lock(&gate->lock);

        /* A free slot with nobody ahead is taken at once. */
        if (gate->in_use < gate->slots && gate->waiting == 0)
                goto take;

        /* A full queue refuses at once, so the client hears it promptly. */
        if (gate->waiting >= gate->queue) {
                result = HTTP_GATE_FULL;
                goto unlock;
        }

        /* Otherwise wait for a release, up to the deadline. */
        struct timespec deadline;
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += gate->wait_ms / 1000;
        deadline.tv_nsec += (long)(gate->wait_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        gate->waiting++;
        while (gate->in_use >= gate->slots) {
                int rc = pthread_cond_timedwait(&gate->freed, &gate->lock,
                                                &deadline);
                if (rc == ETIMEDOUT && gate->in_use >= gate->slots) {
                        gate->waiting--;
                        result = HTTP_GATE_TIMEOUT;
                        goto unlock;
                }
        }
        gate->waiting--;

take:
        gate->in_use++;
unlock:
        pthread_mutex_unlock(&gate->lock);
        return result;
}

void http_gate_release(struct http_gate *gate)
{
        pthread_mutex_lock(&gate->lock);
        assert(gate->in_use > 0);
        gate->in_use--;
        pthread_cond_signal(&gate->freed);
        pthread_mutex_unlock(&gate->lock);
}

int http_gate_retry_after(const struct http_gate *gate)
{
        /* The queue drains within about one maximum wait. */
        int s = (gate->wait_ms + 999) / 1000;
        return s < 1 ? 1 : s;
}

void http_gate_stats(struct http_gate *gate, int *in_use, int *waiting)
{
        pthread_mutex_lock(&gate->lock);
        *in_use = gate->in_use;
        *waiting = gate->waiting;
        pthread_mutex_unlock(&gate->lock);
}
