/*
 * audit.h - the audit trail of sign-in and account events: who (user,
 * organization), from where (address, user agent), what (event name) and
 * how it ended (outcome).  One table, audit_events, in the store's
 * database (module "audit"), that other modules may write to as well.
 * Never pass secrets in detail.
 */
#ifndef FRAPI_AUTH_AUDIT_H
#define FRAPI_AUTH_AUDIT_H

#include "store/store.h"

#include <jansson.h>

/* Creates the table.  Returns 0 or -1. */
int audit_migrate(struct store *s);

/*
 * Records one event: event such as "login", outcome such as "ok",
 * "wrong_password", "throttled"; any of user_id, org_id, address,
 * user_agent and detail may be NULL.  Failures are logged, not returned:
 * an audit write never changes the answer a user gets.
 */
void audit_record(struct store *s, const char *event, const char *outcome,
                  const char *user_id, const char *org_id, const char *address,
                  const char *user_agent, const char *detail);

/* The newest events of user_id (at most limit) as a JSON array (new
 * reference), each with at, event, outcome, address and user_agent.
 * NULL on error. */
json_t *audit_list_user(struct store *s, const char *user_id, int limit);

#endif
