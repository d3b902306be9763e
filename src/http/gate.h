/*
 * gate.h - a concurrency gate: at most N holders at once, a bounded queue
 * of waiters, each waiting at most a set time.  The server owns one for
 * recognitions (engine runs); batch handlers may make their own.
 */
#ifndef FRAPI_HTTP_GATE_H
#define FRAPI_HTTP_GATE_H

enum http_gate_result {
        HTTP_GATE_OK = 0,  /* a slot is held; release it */
        HTTP_GATE_FULL,    /* every slot busy and the queue full */
        HTTP_GATE_TIMEOUT, /* waited the maximum time without a slot */
};

struct http_gate;

/*
 * Creates a gate with slots holders (>= 1), up to queue waiters (>= 0)
 * and a wait of at most wait_ms (>= 0) each.  Returns NULL when out of
 * memory.  Release with http_gate_free() once nobody uses it.
 */
struct http_gate *http_gate_new(int slots, int queue, int wait_ms);
void http_gate_free(struct http_gate *gate);

/* Takes a slot, waiting in the queue if needed.  Thread-safe. */
enum http_gate_result http_gate_acquire(struct http_gate *gate);

/* Gives back a slot taken by a successful http_gate_acquire(). */
void http_gate_release(struct http_gate *gate);

/* Seconds a refused client should wait before retrying (>= 1). */
int http_gate_retry_after(const struct http_gate *gate);

/* Slots in use and requests waiting right now. */
void http_gate_stats(struct http_gate *gate, int *in_use, int *waiting);

#endif
