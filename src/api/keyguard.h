/*
 * keyguard.h - what an API key must pass after it was found and its hash
 * checked, before the body of a request is read: not revoked, the client
 * address on the key's allowlist, the key's rate limit not exceeded.  It
 * also records the key's last use.
 *
 * The answers, in this order:
 *
 *   401 API_KEY_REVOKED      the key was revoked
 *   403 IP_NOT_ALLOWED       the client address is not on the allowlist
 *   429 RATE_LIMIT_EXCEEDED  with Retry-After, over the requests per minute
 *
 * and every answer to a request whose key passed the revocation check
 * carries X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset
 * (Unix seconds at which the current one-minute window ends).
 */
#ifndef FRAPI_KEYGUARD_H
#define FRAPI_KEYGUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "api/keyauth.h"
#include "http/http.h"
#include "store/store.h"

/* The requests per minute of a key created without --rpm. */
#define KEYGUARD_DEFAULT_RPM 600
/* How often the last use of keys is written to the store. */
#define KEYGUARD_FLUSH_MS 10000

struct keyguard;
struct ratelimit;

/*
 * Makes the guard of a server: the rate limiter limiter (any
 * implementation of struct ratelimit_ops; the guard owns it from now on,
 * also when this fails, and NULL fails as out of memory so that
 * ratelimit_memory_new() can be passed straight in), the trusted proxies
 * parsed from trusted_csv (comma-separated addresses and CIDR ranges; NULL
 * or "" for none) and last-use tracking written to store s every flush_ms
 * (> 0).  Returns 0, or -1 with a message naming the bad setting in err.
 */
int keyguard_new_with(struct store *s, struct ratelimit *limiter,
                      const char *trusted_csv, int flush_ms,
                      struct keyguard **out, char *err, size_t errlen);

/* keyguard_new_with() on a new in-memory rate limiter of its own. */
int keyguard_new(struct store *s, const char *trusted_csv, int flush_ms,
                 struct keyguard **out, char *err, size_t errlen);

/* Writes the last uses not yet written and releases g; NULL is fine. */
void keyguard_free(struct keyguard *g);

/*
 * Checks key (found and verified by the caller) for request req in the
 * order above.  Returns true when the request may go on, or false after
 * answering it.  Never reads the body.
 */
bool keyguard_admit(struct keyguard *g, struct http_request *req,
                    const struct store_apikey *key);

/*
 * keyguard_admit() as a check of the API-key hook (keyauth_add_check());
 * userdata is the guard.
 */
bool keyguard_check(struct http_request *req, const struct keyauth_key *key,
                    void *userdata);

/*
 * Validates an allowlist given as JSON (an array of strings) and returns
 * it in the stored form (compact JSON text, caller frees), or NULL with a
 * message naming the bad entry in err.
 */
char *keyguard_allowlist_text(const json_t *list, char *err, size_t errlen);

/*
 * Marks key id revoked from now on.  Returns STORE_OK, STORE_NOT_FOUND
 * when no such key exists, or STORE_CONFLICT when it was revoked already.
 */
enum store_status keyguard_revoke(struct store *s, const char *key_id);

/*
 * The last use of key id as written to the store: *used_ms 0 and addr ""
 * when it was never used.  For `frapi keys` and the dashboard.
 */
enum store_status keyguard_last_use(struct store *s, const char *key_id,
                                    int64_t *used_ms, char *addr,
                                    size_t addrlen);

/*
 * Describes key id for `frapi keys show`: id, collection_id, name, rpm
 * (0 = the default), allowed_ips, created_ms, revoked_ms (0 while live),
 * last_used_ms and last_used_ip (as last written; 0 and null when never
 * used).  Never the secret nor its hash.  *out is a new JSON object.
 */
enum store_status keyguard_describe(struct store *s, const char *key_id,
                                    json_t **out);

#endif
