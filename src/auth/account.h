/*
 * account.h - the dashboard's people and their sign-in state, kept in the
 * store's SQLite database (module "auth" of its migrations): users, each
 * with an organization it owns; sessions (one per signed-in device) with
 * their refresh tokens; single-use tokens sent by mail (email
 * verification, password reset) and two-factor login challenges; TOTP
 * state and recovery codes; the failure counters that throttle logins.
 *
 * Every secret handed to a user is stored only as its digest
 * (token_digest).  Every function takes the store lock itself and runs
 * its statements in one transaction, so each call is atomic with respect
 * to every other thread.  Times are milliseconds since the epoch.
 */
#ifndef FRAPI_AUTH_ACCOUNT_H
#define FRAPI_AUTH_ACCOUNT_H

#include "auth/password.h"
#include "auth/token.h"
#include "auth/totp.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define ACCOUNT_EMAIL_MAX      254
#define ACCOUNT_NAME_MAX       200
#define ACCOUNT_RECOVERY_CODES 10
/* A TOTP secret as stored: sealed (see auth_totp_seal), as hex. */
#define ACCOUNT_TOTP_FIELD 160

enum account_status {
        ACCOUNT_OK = 0,
        ACCOUNT_NOT_FOUND, /* no such row, or it was used or voided */
        ACCOUNT_CONFLICT,  /* the email is taken */
        ACCOUNT_EXPIRED,   /* the token exists but its time is over */
        ACCOUNT_REUSED,    /* a rotated refresh token or a used TOTP step */
        ACCOUNT_REVOKED,   /* the session was ended */
        ACCOUNT_LIMITED,   /* too many failures, wait */
        ACCOUNT_ERROR,     /* the database failed; logged */
};

/* Kinds of single-use tokens. */
enum account_token_kind {
        ACCOUNT_TOKEN_VERIFY,    /* email verification link */
        ACCOUNT_TOKEN_RESET,     /* password reset link */
        ACCOUNT_TOKEN_CHALLENGE, /* second step of a two-factor login */
};

struct account_user {
        char id[STORE_ID_MAX];
        char org_id[STORE_ID_MAX];
        char email[ACCOUNT_EMAIL_MAX + 1];
        char name[ACCOUNT_NAME_MAX * 4 + 1];
        char role[16];
        char password_hash[PASSWORD_HASH_SIZE];
        int64_t verified_ms; /* 0 until the email is verified */
        bool totp_enabled;
        char totp_secret[ACCOUNT_TOTP_FIELD];  /* "" unless enabled */
        char totp_pending[ACCOUNT_TOTP_FIELD]; /* set up, not enabled */
        long long totp_last_step;              /* -1 when none used */
        int64_t created_ms;
};

/* Creates the tables (migrations of module "auth").  Returns 0 or -1. */
int account_migrate(struct store *s);

/* Creates a user with email, name and password hash, and the
 * organization "<name>'s organization" it owns, in one transaction.
 * Fills *out.  ACCOUNT_CONFLICT when the email (any case) is taken. */
enum account_status account_create(struct store *s, const char *email,
                                   const char *name, const char *hash,
                                   struct account_user *out);

/* Reads a user by email (case-insensitive) or by id. */
enum account_status account_by_email(struct store *s, const char *email,
                                     struct account_user *out);
enum account_status account_by_id(struct store *s, const char *id,
                                  struct account_user *out);

/* Marks the user's email verified (idempotent). */
enum account_status account_set_verified(struct store *s, const char *id);

/* Replaces the password hash, voids every open reset token and ends every
 * session of the user. */
enum account_status account_set_password(struct store *s, const char *id,
                                         const char *hash);

/* Issues a new token of kind for user id valid ttl_s seconds, voiding the
 * user's older open tokens of the same kind (mail links only: challenges
 * of several devices stay open side by side).  token receives the secret
 * (only its digest is stored). */
enum account_status account_token_issue(struct store *s, const char *id,
                                        enum account_token_kind kind, int ttl_s,
                                        char token[TOKEN_SIZE]);

/* Uses token of kind once: fills user_id (STORE_ID_MAX) on ACCOUNT_OK;
 * ACCOUNT_EXPIRED past its time; ACCOUNT_NOT_FOUND when unknown, used or
 * voided.  A challenge is only peeked when consume is false. */
enum account_status account_token_use(struct store *s,
                                      enum account_token_kind kind,
                                      const char *token, bool consume,
                                      char *user_id);

/* Opens a session for user id from address and user_agent, with a first
 * refresh token living refresh_ttl_s seconds.  Fills sid (STORE_ID_MAX)
 * and refresh. */
enum account_status account_session_open(struct store *s, const char *id,
                                         const char *address,
                                         const char *user_agent,
                                         int refresh_ttl_s, char *sid,
                                         char refresh[TOKEN_SIZE]);

/* ACCOUNT_OK when session sid of user id is live; notes the time it was
 * last seen (at most one write a minute).  ACCOUNT_REVOKED otherwise. */
enum account_status account_session_check(struct store *s, const char *sid,
                                          const char *id);

/*
 * Rotates a refresh token: on ACCOUNT_OK the old one is spent, refresh
 * receives its successor and sid/user_id (STORE_ID_MAX each) the session
 * and user.  A token already rotated is ACCOUNT_REUSED and ends its whole
 * session (case S4); an ended session is ACCOUNT_REVOKED; a token past its
 * time ACCOUNT_EXPIRED; an unknown one ACCOUNT_NOT_FOUND.
 */
enum account_status account_refresh_rotate(struct store *s, const char *old,
                                           int refresh_ttl_s,
                                           const char *address, char *sid,
                                           char *user_id,
                                           char refresh[TOKEN_SIZE]);

/* The session a refresh token belongs to (used or not): fills sid and
 * user_id.  For logout by refresh token. */
enum account_status account_refresh_owner(struct store *s, const char *token,
                                          char *sid, char *user_id);

/* Ends session sid; when user_id is not NULL only if it is that user's.
 * ACCOUNT_NOT_FOUND when there is no such (live) session. */
enum account_status account_session_end(struct store *s, const char *sid,
                                        const char *user_id,
                                        const char *reason);

/* The user's live sessions as a JSON array (new reference), newest
 * first, each with id, address, user_agent, created_at, last_seen_at and
 * current (sid == current_sid).  NULL on error. */
json_t *account_sessions_json(struct store *s, const char *user_id,
                              const char *current_sid);

/* Stores a new, not yet enabled TOTP secret for the user. */
enum account_status account_totp_pending(struct store *s, const char *id,
                                         const char *secret);

/* Records step as the last accepted TOTP step if it is newer than the
 * stored one (compare-and-set); ACCOUNT_REUSED when it is not (S2). */
enum account_status account_totp_claim(struct store *s, const char *id,
                                       long long step);

/* Turns two-factor on with the pending secret and stores the digests of
 * the codes (ACCOUNT_RECOVERY_CODES of them), replacing older ones. */
enum account_status
account_totp_enable(struct store *s, const char *id,
                    char codes[ACCOUNT_RECOVERY_CODES][TOKEN_RECOVERY_SIZE]);

/* Turns two-factor off and forgets the secret and recovery codes. */
enum account_status account_totp_disable(struct store *s, const char *id);

/* Uses a recovery code of user id once; ACCOUNT_NOT_FOUND when wrong or
 * used. */
enum account_status account_recovery_use(struct store *s, const char *id,
                                         const char *code);

/*
 * Login throttling by subject ("acct:<email>", "addr:<address>"): check
 * answers ACCOUNT_LIMITED with *retry_after_s (>= 1) when max failures
 * happened within window_s; fail records one; clear forgets a subject's.
 * check followed by fail is no decision: concurrent requests can all pass
 * the check before any of them fails.  Requests decide with
 * account_throttle_take instead.
 */
enum account_status account_throttle_check(struct store *s, const char *subject,
                                           int max, int window_s,
                                           int *retry_after_s);
enum account_status account_throttle_fail(struct store *s, const char *subject);
enum account_status account_throttle_clear(struct store *s,
                                           const char *subject);

/* One subject of a throttled attempt, with its limit. */
struct account_throttle {
        const char *subject;
        int max;           /* failures allowed within the window */
        long long attempt; /* set by take: the failure counted in advance */
};

/*
 * Decides one attempt against the n subjects of t atomically: when none of
 * them has max failures within window_s, counts the attempt as a failure
 * of every subject (before its outcome is known, so concurrent attempts
 * see each other) and answers ACCOUNT_OK; otherwise counts nothing and
 * answers ACCOUNT_LIMITED with *retry_after_s (>= 1), the longest wait of
 * the subjects over their limit.  An attempt that turns out to succeed is
 * taken back with account_throttle_forgive.
 */
enum account_status account_throttle_take(struct store *s,
                                          struct account_throttle *t, size_t n,
                                          int window_s, int *retry_after_s);

/* Takes back the failures account_throttle_take counted for t (n
 * subjects): the attempt succeeded.  Subjects cleared meanwhile are
 * fine. */
enum account_status account_throttle_forgive(struct store *s,
                                             const struct account_throttle *t,
                                             size_t n);

#endif
