#include "api/auth_handlers.h"
#include "api/api_input.h"

#include "auth/audit.h"
#include "auth/auth.h"
#include "http/http.h"
#include "util/log.h"

#include <assert.h>
#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define UA_MAX 300
/* Reset or verification mails one address may be sent in an hour. */
#define MAIL_REQUESTS_PER_HOUR 5

/*
 * Validate-or-respond helpers: each returns true with the value, or false
 * after answering 400.
 */

/* String field name of body, of at most maxlen bytes, no NUL inside.
 * Absent gives NULL when !required. */
static bool field_str(struct http_request *req, json_t *body, const char *name,
                      bool required, size_t maxlen, const char **out)
{
        json_t *v = json_object_get(body, name);

        *out = NULL;
        if (!v || json_is_null(v)) {
                if (!required)
                        return true;
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s is required.", name);
                return false;
        }
        if (!json_is_string(v)) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s must be a string.", name);
                return false;
        }
        size_t len = json_string_length(v);
        if (len > maxlen || strlen(json_string_value(v)) != len) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s must be a string of at most "
                                  "%zu bytes without NUL characters.",
                                  name, maxlen);
                return false;
        }
        *out = json_string_value(v);
        return true;
}

/* A plausible mail address: one @, a non-empty local part of at most 64
 * bytes, a dotted domain, no white space, controls or header syntax. */
static bool email_ok(const char *e)
{
        const char *at = strchr(e, '@');
        size_t len = strlen(e);

        if (len < 3 || len > ACCOUNT_EMAIL_MAX || !at || at == e ||
            at - e > 64 || strchr(at + 1, '@') || !strchr(at + 1, '.') ||
            at[1] == '.' || e[len - 1] == '.')
                return false;
        for (const unsigned char *p = (const unsigned char *)e; *p; p++)
                if (*p <= 0x20 || *p == 0x7f || strchr("<>()[],;:\\\"", *p))
                        return false;
        return true;
}

/* The email field, required and well-formed. */
static bool field_email(struct http_request *req, json_t *body,
                        const char **out)
{
        if (!field_str(req, body, "email", true, ACCOUNT_EMAIL_MAX, out))
                return false;
        if (!email_ok(*out)) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "The field email must be a mail address "
                                 "such as name@example.com.",
                                 "email");
                return false;
        }
        return true;
}

/* A password field that meets the policy (for new passwords). */
static bool field_new_password(struct http_request *req, json_t *body,
                               const char *name, const char **out)
{
        json_t *v = json_object_get(body, name);
        if (!json_is_string(v)) {
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The field %s is required and must be a "
                                  "string.",
                                  name);
                return false;
        }
        switch (password_check(json_string_value(v), json_string_length(v))) {
        case PASSWORD_POLICY_OK:
                *out = json_string_value(v);
                return true;
        case PASSWORD_POLICY_TOO_SHORT:
                http_reply_errorf(req, 400, "WEAK_PASSWORD", name,
                                  "The password must have at least %d "
                                  "characters.",
                                  PASSWORD_MIN_CHARS);
                return false;
        case PASSWORD_POLICY_TOO_LONG:
                http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                                  "The password must have at most %d bytes.",
                                  PASSWORD_MAX_BYTES);
                return false;
        case PASSWORD_POLICY_INVALID:
                break;
        }
        http_reply_errorf(req, 400, "INVALID_PARAMETER", name,
                          "The password must not contain control "
                          "characters.");
        return false;
}

/* A display name: 1 to ACCOUNT_NAME_MAX characters, not only spaces, no
 * control characters. */
static bool field_name(struct http_request *req, json_t *body, const char **out)
{
        if (!field_str(req, body, "name", true, ACCOUNT_NAME_MAX * 4, out))
                return false;
        size_t chars = 0;
        bool visible = false;
        for (const unsigned char *p = (const unsigned char *)*out; *p; p++) {
                if (*p < 0x20 || *p == 0x7f)
                        goto bad;
                if (*p != ' ')
                        visible = true;
                if ((*p & 0xc0) != 0x80)
                        chars++;
        }
        if (visible && chars <= ACCOUNT_NAME_MAX)
                return true;
bad:
        http_reply_errorf(req, 400, "INVALID_PARAMETER", "name",
                          "The field name must be 1 to %d characters, not "
                          "only spaces, without control characters.",
                          ACCOUNT_NAME_MAX);
        return false;
}

/* The JSON object body, holding no member outside known
 * (NULL-terminated), or NULL after a 400. */
static json_t *body_of(struct http_request *req, const char *const *known)
{
        json_t *body = NULL;
        if (!http_body_object(req, &body) || !api_input_only(req, known))
                return NULL;
        return body;
}

/* The client's address and user agent, for sessions and the audit. */
static const char *address_of(struct auth_service *svc,
                              struct http_request *req)
{
        return auth_client_address(svc, req);
}

static const char *agent_of(struct http_request *req)
{
        const char *ua = http_request_header(req, "User-Agent");
        if (!ua)
                return "";
        if (strlen(ua) <= UA_MAX)
                return ua;
        char *cut = http_request_alloc(req, UA_MAX + 1);
        memcpy(cut, ua, UA_MAX);
        cut[UA_MAX] = '\0';
        return cut;
}

/* Records an auth event for req. */
static void audit(struct auth_service *svc, struct http_request *req,
                  const char *event, const char *outcome,
                  const struct account_user *u)
{
        audit_record(svc->store, event, outcome, u ? u->id : NULL,
                     u ? u->org_id : NULL, address_of(svc, req), agent_of(req),
                     NULL);
}

/* Answers the generic 500 for a store failure. */
static void internal(struct http_request *req)
{
        http_reply_error(req, 500, "INTERNAL_ERROR",
                         "The request could not be completed; it has been "
                         "logged.",
                         NULL);
}

/* Answers 429 with Retry-After. */
static void too_many(struct http_request *req, int retry_after)
{
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after);
        http_reply_header(req, "Retry-After", v);
        http_reply_errorf(req, 429, "TOO_MANY_ATTEMPTS", NULL,
                          "Too many failed attempts. Try again in %d "
                          "seconds.",
                          retry_after);
}

static json_t *user_json(const struct account_user *u)
{
        return json_pack("{s:s, s:s, s:s, s:b, s:b, s:{s:s, s:s}}", "id", u->id,
                         "email", u->email, "name", u->name, "email_verified",
                         u->verified_ms != 0, "two_factor_enabled",
                         u->totp_enabled, "organization", "id", u->org_id,
                         "role", u->role);
}

/* Answers a fresh session's tokens for u. */
static void reply_tokens(struct auth_service *svc, struct http_request *req,
                         const struct account_user *u)
{
        json_t *tokens =
                auth_login_tokens(svc, u, address_of(svc, req), agent_of(req));
        if (!tokens) {
                internal(req);
                return;
        }
        http_reply_data(req, 200, tokens);
}

/*
 * Registration and email verification.
 */

static void h_register(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const char *email, *password, *name;
        char hash[PASSWORD_HASH_SIZE];
        struct account_user u;

        /* No role or organization: a new user owns a new organization. */
        static const char *const known[] = {"email", "password", "name", NULL};
        json_t *body = body_of(req, known);
        if (!body || !field_email(req, body, &email) ||
            !field_new_password(req, body, "password", &password) ||
            !field_name(req, body, &name))
                return;

        /* Hash first (slow, no lock held), then create atomically. */
        if (password_hash(password, strlen(password), hash) != 0) {
                internal(req);
                return;
        }
        enum account_status st =
                account_create(svc->store, email, name, hash, &u);
        sodium_memzero(hash, sizeof hash);
        if (st == ACCOUNT_CONFLICT) {
                audit(svc, req, "register", "email_taken", NULL);
                http_reply_error(req, 409, "EMAIL_ALREADY_REGISTERED",
                                 "An account with this email already "
                                 "exists; sign in or reset the password.",
                                 "email");
                return;
        }
        if (st != ACCOUNT_OK) {
                internal(req);
                return;
        }

        /* The verification mail goes out in the background. */
        if (auth_mail_verification(svc, &u) != 0)
                log_error("auth",
                          "The verification mail of %s could not "
                          "be queued.",
                          u.id);
        audit(svc, req, "register", "ok", &u);
        log_info("auth", "User %s registered with organization %s.", u.id,
                 u.org_id);
        http_reply_data(req, 201, user_json(&u));
}

static void h_verify_email(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        char uid[STORE_ID_MAX];
        const char *token;

        if (!http_query_str(req, "token", true, 128, &token))
                return;
        enum account_status st = account_token_use(
                svc->store, ACCOUNT_TOKEN_VERIFY, token, true, uid);
        if (st == ACCOUNT_EXPIRED) {
                audit(svc, req, "verify_email", "expired", NULL);
                http_reply_error(req, 400, "VERIFICATION_TOKEN_EXPIRED",
                                 "This verification link has expired; ask "
                                 "for a new one.",
                                 "token");
                return;
        }
        if (st == ACCOUNT_NOT_FOUND) {
                audit(svc, req, "verify_email", "invalid_token", NULL);
                http_reply_error(req, 400, "INVALID_VERIFICATION_TOKEN",
                                 "This verification link is not valid or "
                                 "was already used.",
                                 "token");
                return;
        }
        struct account_user u;
        if (st != ACCOUNT_OK ||
            account_set_verified(svc->store, uid) != ACCOUNT_OK ||
            account_by_id(svc->store, uid, &u) != ACCOUNT_OK) {
                internal(req);
                return;
        }
        audit(svc, req, "verify_email", "ok", &u);
        http_reply_data(
                req, 200,
                json_pack("{s:b, s:s}", "email_verified", 1, "email", u.email));
}

/* The one answer of forgot-password and resend-verification. */
static void reply_mail_requested(struct auth_service *svc,
                                 struct http_request *req, bool verify)
{
        const char *email;
        char subject[ACCOUNT_EMAIL_MAX + 8];
        int retry = 0;
        static const char *const known[] = {"email", NULL};
        json_t *body = body_of(req, known);
        if (!body || !field_email(req, body, &email))
                return;

        /* At most a few mails an hour per address, whoever asks; over
         * that the answer stays the same and nothing is sent. */
        snprintf(subject, sizeof subject, "mail:%s", email);
        for (char *p = subject; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        struct account_throttle t = {subject, MAIL_REQUESTS_PER_HOUR, 0};
        bool flood = account_throttle_take(svc->store, &t, 1, 3600, &retry) !=
                     ACCOUNT_OK;
        if (!flood &&
            auth_request_mail(svc, email, verify, address_of(svc, req),
                              agent_of(req)) != 0) {
                http_reply_header(req, "Retry-After", "5");
                http_reply_error(req, 503, "SERVER_BUSY",
                                 "Too many mail requests are waiting; try "
                                 "again in a few seconds.",
                                 NULL);
                return;
        }
        http_reply_data(req, 202,
                        json_pack("{s:s}", "message",
                                  verify ? "If this address belongs to an "
                                           "unverified account, a new "
                                           "verification link is on its way."
                                         : "If this address belongs to an "
                                           "account, a password reset link "
                                           "is on its way."));
}

static void h_resend(struct http_request *req, void *userdata)
{
        reply_mail_requested(userdata, req, true);
}

static void h_forgot(struct http_request *req, void *userdata)
{
        reply_mail_requested(userdata, req, false);
}

/*
 * Sign-in.
 */

/* Decides a login against both throttles (t: account, then address),
 * counting it as a failure of both until forgiven; false after answering
 * 429. */
static bool login_allowed(struct auth_service *svc, struct http_request *req,
                          struct account_throttle t[2])
{
        int retry = 0;
        enum account_status a = account_throttle_take(
                svc->store, t, 2, svc->set.login_window_s, &retry);
        if (a == ACCOUNT_OK)
                return true;
        if (a == ACCOUNT_LIMITED) {
                audit(svc, req, "login", "throttled", NULL);
                too_many(req, retry);
        } else {
                internal(req);
        }
        return false;
}

static void h_login(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const char *email, *password;
        char acct[ACCOUNT_EMAIL_MAX + 8], addr[80];
        struct account_user u;

        static const char *const known[] = {"email", "password", NULL};
        json_t *body = body_of(req, known);
        if (!body || !field_email(req, body, &email) ||
            !field_str(req, body, "password", true, PASSWORD_MAX_BYTES,
                       &password))
                return;

        /* Throttled before any work: per account (known or not, so the
         * answer tells nothing) and per address.  The attempt counts as
         * a failure from here on, so concurrent guesses cannot all pass
         * the limit; the right password takes it back. */
        snprintf(acct, sizeof acct, "acct:%s", email);
        for (char *p = acct; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        snprintf(addr, sizeof addr, "addr:%s", address_of(svc, req));
        struct account_throttle t[2] = {
                {acct, svc->set.login_max_account, 0},
                {addr, svc->set.login_max_address, 0},
        };
        if (!login_allowed(svc, req, t))
                return;

        /* The same work and the same answer for a wrong email and a wrong
         * password. */
        enum account_status st = account_by_email(svc->store, email, &u);
        if (st != ACCOUNT_OK && st != ACCOUNT_NOT_FOUND) {
                internal(req);
                return;
        }
        bool ok = password_verify(st == ACCOUNT_OK ? u.password_hash : NULL,
                                  password, strlen(password));
        if (!ok) {
                audit(svc, req, "login",
                      st == ACCOUNT_OK ? "wrong_password" : "unknown_email",
                      st == ACCOUNT_OK ? &u : NULL);
                http_reply_error(req, 401, "INVALID_CREDENTIALS",
                                 "The email or the password is wrong.", NULL);
                return;
        }
        account_throttle_clear(svc->store, acct);
        account_throttle_forgive(svc->store, &t[1], 1);

        /* Right password, but the address is not confirmed yet. */
        if (u.verified_ms == 0) {
                audit(svc, req, "login", "email_not_verified", &u);
                http_reply_error(req, 403, "EMAIL_NOT_VERIFIED",
                                 "Confirm your email address first: follow "
                                 "the link we sent, or ask for a new one at "
                                 "/api/v1/auth/resend-verification.",
                                 "email");
                return;
        }

        /* With two-factor on, a short-lived challenge instead of tokens. */
        if (u.totp_enabled) {
                char challenge[TOKEN_SIZE];
                if (account_token_issue(svc->store, u.id,
                                        ACCOUNT_TOKEN_CHALLENGE,
                                        svc->set.challenge_ttl_s,
                                        challenge) != ACCOUNT_OK) {
                        internal(req);
                        return;
                }
                audit(svc, req, "login", "2fa_required", &u);
                http_reply_data(req, 200,
                                json_pack("{s:b, s:s, s:i}", "requires_2fa", 1,
                                          "challenge", challenge, "expires_in",
                                          svc->set.challenge_ttl_s));
                return;
        }
        audit(svc, req, "login", "ok", &u);
        reply_tokens(svc, req, &u);
}

/* Checks code (six digits) against the sealed secret, or a recovery
 * code, for u.  Returns NULL when accepted, else the error code to
 * answer. */
static const char *second_factor(struct auth_service *svc,
                                 struct account_user *u, const char *sealed,
                                 const char *code, const char *recovery)
{
        char secret[TOTP_SECRET_B32_SIZE];
        const char *refused = "INVALID_TOTP_CODE";
        long long step;

        if (recovery)
                return account_recovery_use(svc->store, u->id, recovery) ==
                                       ACCOUNT_OK
                               ? NULL
                               : "INVALID_RECOVERY_CODE";

        /* A secret sealed under another token secret cannot be used. */
        if (auth_totp_open(svc, sealed, secret) != 0) {
                log_error("auth",
                          "The TOTP secret of %s cannot be opened; "
                          "was jwt.secret replaced?",
                          u->id);
                return refused;
        }
        switch (totp_check(secret, code, time(NULL), u->totp_last_step,
                           &step)) {
        case TOTP_ACCEPTED:
                /* Claimed atomically: two requests cannot both win. */
                refused = account_totp_claim(svc->store, u->id, step) ==
                                          ACCOUNT_OK
                                  ? NULL
                                  : "TOTP_CODE_ALREADY_USED";
                break;
        case TOTP_REPLAYED:
                refused = "TOTP_CODE_ALREADY_USED";
                break;
        case TOTP_MALFORMED:
        case TOTP_WRONG:
        case TOTP_ERROR:
                break;
        }
        sodium_memzero(secret, sizeof secret);
        return refused;
}

/* Answers the 401 of a refused second factor. */
static void reply_factor_refused(struct http_request *req, const char *code)
{
        const char *msg =
                strcmp(code, "TOTP_CODE_ALREADY_USED") == 0
                        ? "This code was already used; wait for the next one."
                : strcmp(code, "INVALID_RECOVERY_CODE") == 0
                        ? "The recovery code is wrong or was already used."
                        : "The two-factor code is wrong.";
        http_reply_error(req, 401, code, msg,
                         strcmp(code, "INVALID_RECOVERY_CODE") == 0
                                 ? "recovery_code"
                                 : "code");
}

/* The whole second-factor check of u: throttled per user like passwords
 * (429), then the code or recovery code (401 when refused, audited as
 * event).  True when accepted; false after answering. */
static bool factor_accepted(struct auth_service *svc, struct http_request *req,
                            struct account_user *u, const char *sealed,
                            const char *code, const char *recovery,
                            const char *event)
{
        char subject[64];
        int retry = 0;

        /* Counted as a failure until accepted, so that concurrent
         * guesses cannot all pass the limit. */
        snprintf(subject, sizeof subject, "2fa:%s", u->id);
        struct account_throttle t = {subject, svc->set.login_max_account, 0};
        enum account_status st = account_throttle_take(
                svc->store, &t, 1, svc->set.login_window_s, &retry);
        if (st != ACCOUNT_OK) {
                if (st == ACCOUNT_LIMITED) {
                        audit(svc, req, event, "throttled", u);
                        too_many(req, retry);
                } else {
                        internal(req);
                }
                return false;
        }
        const char *refused = second_factor(svc, u, sealed, code, recovery);
        if (refused) {
                audit(svc, req, event, refused, u);
                reply_factor_refused(req, refused);
                return false;
        }
        account_throttle_clear(svc->store, subject);
        return true;
}

/* Reads code / recovery_code: exactly one of them. */
static bool factor_fields(struct http_request *req, json_t *body,
                          bool allow_recovery, const char **code,
                          const char **recovery)
{
        if (!field_str(req, body, "code", false, 16, code))
                return false;
        *recovery = NULL;
        if (allow_recovery &&
            !field_str(req, body, "recovery_code", false, 32, recovery))
                return false;
        if (!*code == !*recovery) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 allow_recovery
                                         ? "Give either code (6 digits) or "
                                           "recovery_code, not both."
                                         : "The field code (6 digits) is "
                                           "required.",
                                 "code");
                return false;
        }
        if (*code && (strlen(*code) != TOTP_DIGITS ||
                      strspn(*code, "0123456789") != TOTP_DIGITS)) {
                http_reply_error(req, 400, "INVALID_PARAMETER",
                                 "The field code must be exactly 6 digits.",
                                 "code");
                return false;
        }
        return true;
}

static void h_2fa_verify(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const char *challenge, *code, *recovery;
        char uid[STORE_ID_MAX];
        struct account_user u;

        static const char *const known[] = {"challenge", "code",
                                            "recovery_code", NULL};
        json_t *body = body_of(req, known);
        if (!body ||
            !field_str(req, body, "challenge", true, 128, &challenge) ||
            !factor_fields(req, body, true, &code, &recovery))
                return;

        /* The challenge, still open, names the user. */
        enum account_status st = account_token_use(
                svc->store, ACCOUNT_TOKEN_CHALLENGE, challenge, false, uid);
        if (st == ACCOUNT_OK)
                st = account_by_id(svc->store, uid, &u);
        if (st == ACCOUNT_NOT_FOUND || st == ACCOUNT_EXPIRED) {
                /* A failed second step, audited like a failed login; an
                 * expired challenge still names its user. */
                bool named = st == ACCOUNT_EXPIRED &&
                             account_by_id(svc->store, uid, &u) == ACCOUNT_OK;
                audit(svc, req, "login_2fa",
                      st == ACCOUNT_EXPIRED ? "expired_challenge"
                                            : "invalid_challenge",
                      named ? &u : NULL);
                http_reply_error(req, 401, "INVALID_CHALLENGE",
                                 "The login challenge is unknown, used or "
                                 "expired; sign in again.",
                                 "challenge");
                return;
        }
        if (st != ACCOUNT_OK) {
                internal(req);
                return;
        }

        /* Guessing codes is throttled like guessing passwords. */
        if (!factor_accepted(svc, req, &u, u.totp_secret, code, recovery,
                             "login_2fa"))
                return;

        /* Spend the challenge; a concurrent twin finds it gone. */
        if (account_token_use(svc->store, ACCOUNT_TOKEN_CHALLENGE, challenge,
                              true, uid) != ACCOUNT_OK) {
                audit(svc, req, "login_2fa", "invalid_challenge", &u);
                http_reply_error(req, 401, "INVALID_CHALLENGE",
                                 "The login challenge was already used.",
                                 "challenge");
                return;
        }
        audit(svc, req, "login_2fa", recovery ? "ok_recovery_code" : "ok", &u);
        reply_tokens(svc, req, &u);
}

static void h_refresh(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        char sid[STORE_ID_MAX], uid[STORE_ID_MAX], next[TOKEN_SIZE];
        const char *old;
        struct account_user u;

        static const char *const known[] = {"refresh_token", NULL};
        json_t *body = body_of(req, known);
        if (!body || !field_str(req, body, "refresh_token", true, 128, &old))
                return;

        /* Rotate; a second use of a spent token ends the session (S4). */
        enum account_status st =
                account_refresh_rotate(svc->store, old, svc->set.refresh_ttl_s,
                                       address_of(svc, req), sid, uid, next);
        if (st == ACCOUNT_OK &&
            account_by_id(svc->store, uid, &u) != ACCOUNT_OK)
                st = ACCOUNT_ERROR;
        switch (st) {
        case ACCOUNT_OK:
                break;
        case ACCOUNT_REUSED:
                audit_record(svc->store, "refresh", "reuse_session_revoked",
                             uid, NULL, address_of(svc, req), agent_of(req),
                             sid);
                log_warn("auth",
                         "A spent refresh token of session %s was "
                         "presented again; the session is ended.",
                         sid);
                http_reply_error(req, 401, "REFRESH_TOKEN_REUSED",
                                 "This refresh token was already used; the "
                                 "session is ended for safety. Sign in "
                                 "again.",
                                 "refresh_token");
                return;
        case ACCOUNT_REVOKED:
                http_reply_error(req, 401, "SESSION_REVOKED",
                                 "The session of this refresh token has "
                                 "ended; sign in again.",
                                 "refresh_token");
                return;
        case ACCOUNT_EXPIRED:
                http_reply_error(req, 401, "REFRESH_TOKEN_EXPIRED",
                                 "The refresh token has expired; sign in "
                                 "again.",
                                 "refresh_token");
                return;
        case ACCOUNT_NOT_FOUND:
                http_reply_error(req, 401, "INVALID_REFRESH_TOKEN",
                                 "The refresh token is not valid.",
                                 "refresh_token");
                return;
        default:
                internal(req);
                return;
        }

        /* A new access token for the same session. */
        char *access = auth_access_token(svc, &u, sid);
        if (!access) {
                internal(req);
                return;
        }
        http_reply_data(req, 200,
                        json_pack("{s:s, s:s, s:i, s:s}", "access_token",
                                  access, "refresh_token", next, "expires_in",
                                  svc->set.access_ttl_s, "token_type",
                                  "Bearer"));
        sodium_memzero(next, sizeof next);
        free(access);
}

/* Logout: the session of the Bearer token, or of the refresh token in the
 * body; its refresh tokens die and its access tokens stop at once. */
static void h_logout(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        char sid[JWTAUTH_ID_SIZE] = "", uid[JWTAUTH_ID_SIZE] = "";
        char org[JWTAUTH_ID_SIZE] = "";
        const char *refresh = NULL;

        /* The body is optional; when sent, it holds only refresh_token. */
        static const char *const known[] = {"refresh_token", NULL};
        json_t *body = http_request_json(req);
        if (!api_input_only(req, known) ||
            (json_is_object(body) &&
             !field_str(req, body, "refresh_token", false, 128, &refresh)))
                return;
        const char *authz = http_request_header(req, "Authorization");
        if (authz) {
                /* The guard's checks, without failing on an ended
                 * session: logging out twice is fine. */
                struct jwtauth_claims c;
                const char *tok = strncasecmp(authz, "Bearer ", 7) == 0
                                          ? authz + 7
                                          : NULL;
                if (!tok || jwtauth_verify(&svc->key, tok, time(NULL), &c) !=
                                    JWTAUTH_OK) {
                        http_reply_error(req, 401, "INVALID_TOKEN",
                                         "The access token is refused.",
                                         "Authorization");
                        return;
                }
                snprintf(sid, sizeof sid, "%s", c.sid);
                snprintf(uid, sizeof uid, "%s", c.sub);
                snprintf(org, sizeof org, "%s", c.org);
        } else if (refresh) {
                if (account_refresh_owner(svc->store, refresh, sid, uid) !=
                    ACCOUNT_OK) {
                        http_reply_error(req, 401, "INVALID_REFRESH_TOKEN",
                                         "The refresh token is not valid.",
                                         "refresh_token");
                        return;
                }

                /* The audit names the organization, as for Bearer. */
                struct account_user u;
                if (account_by_id(svc->store, uid, &u) == ACCOUNT_OK)
                        snprintf(org, sizeof org, "%s", u.org_id);
                sodium_memzero(u.password_hash, sizeof u.password_hash);
        } else {
                http_reply_error(req, 401, "MISSING_TOKEN",
                                 "Logout needs the Bearer access token or "
                                 "the refresh_token of the session.",
                                 "Authorization");
                return;
        }
        enum account_status st =
                account_session_end(svc->store, sid, uid, "logout");
        if (st != ACCOUNT_OK && st != ACCOUNT_NOT_FOUND) {
                internal(req);
                return;
        }
        audit_record(svc->store, "logout", "ok", uid, org[0] ? org : NULL,
                     address_of(svc, req), agent_of(req), sid);
        http_reply_data(req, 200, json_pack("{s:b}", "logged_out", 1));
}

static void h_reset(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const char *token, *password;
        char uid[STORE_ID_MAX], hash[PASSWORD_HASH_SIZE];
        struct account_user u;

        static const char *const known[] = {"token", "password", NULL};
        json_t *body = body_of(req, known);
        if (!body || !field_str(req, body, "token", true, 128, &token) ||
            !field_new_password(req, body, "password", &password))
                return;

        /* Hash before spending the token, so a failure keeps it. */
        if (password_hash(password, strlen(password), hash) != 0) {
                internal(req);
                return;
        }
        enum account_status st = account_token_use(
                svc->store, ACCOUNT_TOKEN_RESET, token, true, uid);
        if (st == ACCOUNT_EXPIRED || st == ACCOUNT_NOT_FOUND) {
                audit(svc, req, "password_reset",
                      st == ACCOUNT_EXPIRED ? "expired" : "invalid_token",
                      NULL);
                http_reply_error(req, 400,
                                 st == ACCOUNT_EXPIRED ? "RESET_TOKEN_EXPIRED"
                                                       : "INVALID_RESET_TOKEN",
                                 st == ACCOUNT_EXPIRED
                                         ? "This reset link has expired; ask "
                                           "for a new one."
                                         : "This reset link is not valid, "
                                           "was already used or was "
                                           "replaced by a newer one.",
                                 "token");
                return;
        }

        /* New password; every session and open reset ends with it. */
        if (st != ACCOUNT_OK ||
            account_set_password(svc->store, uid, hash) != ACCOUNT_OK ||
            account_by_id(svc->store, uid, &u) != ACCOUNT_OK) {
                sodium_memzero(hash, sizeof hash);
                internal(req);
                return;
        }
        sodium_memzero(hash, sizeof hash);
        audit(svc, req, "password_reset", "ok", &u);
        log_info("auth", "User %s reset the password; every session ended.",
                 u.id);
        http_reply_data(req, 200, json_pack("{s:b}", "password_reset", 1));
}

/*
 * Signed-in user (auth_guard in front).
 */

/* The guarded user, re-read; false after answering. */
static bool current_user(struct auth_service *svc, struct http_request *req,
                         struct account_user *u)
{
        const struct auth_principal *p = auth_principal_of(req);
        assert(p);
        enum account_status st = account_by_id(svc->store, p->user_id, u);
        if (st == ACCOUNT_OK)
                return true;
        if (st == ACCOUNT_NOT_FOUND)
                http_reply_error(req, 401, "INVALID_TOKEN",
                                 "The user of this token no longer exists.",
                                 "Authorization");
        else
                internal(req);
        return false;
}

/* Checks the password field against u; false after answering. */
static bool password_again(struct auth_service *svc, struct http_request *req,
                           json_t *body, struct account_user *u,
                           const char *event)
{
        const char *password;
        char acct[ACCOUNT_EMAIL_MAX + 8];
        int retry = 0;

        if (!field_str(req, body, "password", true, PASSWORD_MAX_BYTES,
                       &password))
                return false;

        /* The login's per-account count: a stolen session is no way to
         * guess the password faster.  Counted as a failure until the
         * password proves right, like a login. */
        snprintf(acct, sizeof acct, "acct:%s", u->email);
        for (char *p = acct; *p; p++)
                *p = (char)tolower((unsigned char)*p);
        struct account_throttle t = {acct, svc->set.login_max_account, 0};
        enum account_status st = account_throttle_take(
                svc->store, &t, 1, svc->set.login_window_s, &retry);
        if (st == ACCOUNT_LIMITED) {
                audit(svc, req, event, "throttled", u);
                too_many(req, retry);
                return false;
        }
        if (st != ACCOUNT_OK) {
                internal(req);
                return false;
        }
        if (password_verify(u->password_hash, password, strlen(password))) {
                account_throttle_forgive(svc->store, &t, 1);
                return true;
        }
        audit(svc, req, event, "wrong_password", u);
        http_reply_error(req, 401, "INVALID_CREDENTIALS",
                         "The password is wrong.", "password");
        return false;
}

static void h_me(struct http_request *req, void *userdata)
{
        struct account_user u;
        if (current_user(userdata, req, &u))
                http_reply_data(req, 200, user_json(&u));
}

static void h_2fa_setup(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        char secret[TOTP_SECRET_B32_SIZE];
        struct account_user u;

        static const char *const known[] = {"password", NULL};
        json_t *body = body_of(req, known);
        if (!body || !current_user(svc, req, &u) ||
            !password_again(svc, req, body, &u, "2fa_setup"))
                return;
        if (u.totp_enabled) {
                http_reply_error(req, 409, "TWO_FACTOR_ALREADY_ENABLED",
                                 "Two-factor sign-in is already on; disable "
                                 "it first to change the authenticator.",
                                 NULL);
                return;
        }

        /* A new secret, kept pending until a code proves the app has it. */
        char sealed[ACCOUNT_TOTP_FIELD];
        if (totp_secret_new(secret) != 0 ||
            auth_totp_seal(svc, secret, sealed) != 0 ||
            account_totp_pending(svc->store, u.id, sealed) != ACCOUNT_OK) {
                internal(req);
                return;
        }
        char *uri = totp_uri(svc->set.issuer, u.email, secret);
        char *svg = uri ? totp_qr_svg(uri) : NULL;
        if (!svg) {
                free(uri);
                internal(req);
                return;
        }
        audit(svc, req, "2fa_setup", "ok", &u);
        http_reply_data(req, 200,
                        json_pack("{s:s, s:s, s:s}", "secret", secret,
                                  "otpauth_uri", uri, "qr_svg", svg));
        free(svg);
        free(uri);
        sodium_memzero(secret, sizeof secret);
}

static void h_2fa_enable(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        char codes[ACCOUNT_RECOVERY_CODES][TOKEN_RECOVERY_SIZE];
        const char *code, *recovery;
        struct account_user u;

        static const char *const known[] = {"code", NULL};
        json_t *body = body_of(req, known);
        if (!body || !factor_fields(req, body, false, &code, &recovery) ||
            !current_user(svc, req, &u))
                return;
        if (u.totp_enabled || !u.totp_pending[0]) {
                http_reply_error(req, 409,
                                 u.totp_enabled ? "TWO_FACTOR_ALREADY_ENABLED"
                                                : "TWO_FACTOR_NOT_SET_UP",
                                 u.totp_enabled
                                         ? "Two-factor sign-in is already on."
                                         : "Start with /api/v1/auth/2fa/setup "
                                           "first.",
                                 NULL);
                return;
        }

        /* The code proves the authenticator holds the pending secret. */
        if (!factor_accepted(svc, req, &u, u.totp_pending, code, NULL,
                             "2fa_enable"))
                return;
        if (account_totp_enable(svc->store, u.id, codes) != ACCOUNT_OK) {
                internal(req);
                return;
        }

        /* The recovery codes are shown this once; only digests stay. */
        json_t *list = json_array();
        for (int i = 0; i < ACCOUNT_RECOVERY_CODES; i++)
                json_array_append_new(list, json_string(codes[i]));
        sodium_memzero(codes, sizeof codes);
        audit(svc, req, "2fa_enable", "ok", &u);
        http_reply_data(req, 200,
                        json_pack("{s:b, s:o}", "two_factor_enabled", 1,
                                  "recovery_codes", list));
}

static void h_2fa_disable(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const char *code, *recovery;
        struct account_user u;

        static const char *const known[] = {"password", "code", "recovery_code",
                                            NULL};
        json_t *body = body_of(req, known);
        if (!body || !current_user(svc, req, &u) ||
            !password_again(svc, req, body, &u, "2fa_disable") ||
            !factor_fields(req, body, true, &code, &recovery))
                return;
        if (!u.totp_enabled) {
                http_reply_error(req, 409, "TWO_FACTOR_NOT_ENABLED",
                                 "Two-factor sign-in is not on.", NULL);
                return;
        }
        if (!factor_accepted(svc, req, &u, u.totp_secret, code, recovery,
                             "2fa_disable"))
                return;
        if (account_totp_disable(svc->store, u.id) != ACCOUNT_OK) {
                internal(req);
                return;
        }
        audit(svc, req, "2fa_disable", "ok", &u);
        http_reply_data(req, 200, json_pack("{s:b}", "two_factor_enabled", 0));
}

static void h_sessions(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const struct auth_principal *p = auth_principal_of(req);

        json_t *list =
                account_sessions_json(svc->store, p->user_id, p->session_id);
        if (!list) {
                internal(req);
                return;
        }
        http_reply_data(req, 200, list);
}

static void h_session_delete(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        const struct auth_principal *p = auth_principal_of(req);
        const char *id = http_request_param(req, "id");

        /* Only the user's own sessions; anyone else's is not found. */
        enum account_status st =
                account_session_end(svc->store, id, p->user_id, "revoked");
        if (st == ACCOUNT_NOT_FOUND) {
                http_reply_error(req, 404, "NOT_FOUND",
                                 "No live session of yours has this id.", "id");
                return;
        }
        if (st != ACCOUNT_OK) {
                internal(req);
                return;
        }
        audit_record(svc->store, "session_revoked", "ok", p->user_id, p->org_id,
                     address_of(svc, req), agent_of(req), id);
        http_reply_data(req, 200,
                        json_pack("{s:s, s:b}", "id", id, "revoked", 1));
}

void auth_handlers_register(struct http_server *srv, struct auth_service *svc)
{
        static const struct {
                const char *method, *path;
                http_handler_fn fn;
                bool guarded;
        } routes[] = {
                {"POST", "/api/v1/auth/register", h_register, false},
                {"GET", "/api/v1/auth/verify-email", h_verify_email, false},
                {"POST", "/api/v1/auth/resend-verification", h_resend, false},
                {"POST", "/api/v1/auth/login", h_login, false},
                {"POST", "/api/v1/auth/2fa/verify", h_2fa_verify, false},
                {"POST", "/api/v1/auth/refresh", h_refresh, false},
                {"POST", "/api/v1/auth/logout", h_logout, false},
                {"POST", "/api/v1/auth/forgot-password", h_forgot, false},
                {"POST", "/api/v1/auth/reset-password", h_reset, false},
                {"GET", "/api/v1/auth/me", h_me, true},
                {"POST", "/api/v1/auth/2fa/setup", h_2fa_setup, true},
                {"POST", "/api/v1/auth/2fa/enable", h_2fa_enable, true},
                {"POST", "/api/v1/auth/2fa/disable", h_2fa_disable, true},
                {"GET", "/api/v1/auth/sessions", h_sessions, true},
                {"DELETE", "/api/v1/auth/sessions/{id}", h_session_delete,
                 true},
        };

        /* Small JSON bodies only: 64 KB is plenty for any of them. */
        for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
                unsigned flags = strcmp(routes[i].method, "POST") == 0
                                         ? HTTP_BODY_JSON
                                         : 0;
                struct http_route *r =
                        http_route(srv, routes[i].method, routes[i].path,
                                   routes[i].fn, flags, svc);
                http_route_set_max_body(r, 64 * 1024);
                if (routes[i].guarded)
                        http_route_set_before(r, auth_guard, svc);
        }
}
