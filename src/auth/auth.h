/*
 * auth.h - the accounts service behind the dashboard's sign-in: its
 * settings, start-up (tables, token secret, mail queue, background
 * worker), the issuing of access and refresh tokens, the mails it sends,
 * and the Bearer check that every dashboard route runs before reading a
 * body (auth_guard).  The HTTP endpoints are in api/auth_handlers.c.
 */
#ifndef FRAPI_AUTH_AUTH_H
#define FRAPI_AUTH_AUTH_H

#include "auth/account.h"
#include "auth/ipallow.h"
#include "auth/jwtauth.h"
#include "mail/mail.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>

struct config;
struct http_request;

/* Lifetimes and limits.  auth_settings_load() fills them from the
 * service configuration and the FRAPI_* variables named beside each. */
struct auth_settings {
        int access_ttl_s;          /* FRAPI_ACCESS_TOKEN_TTL_S, 3600 */
        int refresh_ttl_s;         /* FRAPI_REFRESH_TOKEN_TTL_S, 30 days */
        int verify_ttl_s;          /* FRAPI_VERIFY_TOKEN_TTL_S, 24 h */
        int reset_ttl_s;           /* FRAPI_RESET_TOKEN_TTL_S, 1 h */
        int challenge_ttl_s;       /* FRAPI_2FA_CHALLENGE_TTL_S, 5 min */
        int login_window_s;        /* FRAPI_LOGIN_WINDOW_S, 15 min */
        int login_max_account;     /* FRAPI_LOGIN_MAX_PER_ACCOUNT, 5 */
        int login_max_address;     /* FRAPI_LOGIN_MAX_PER_ADDRESS, 20 */
        int mail_retry_s;          /* FRAPI_MAIL_RETRY_S, 30 */
        int mail_max_attempts;     /* FRAPI_MAIL_MAX_ATTEMPTS, 8 */
        char public_url[600];      /* base of links in mails */
        char issuer[64];           /* name shown by authenticator apps */
        char trusted_proxies[512]; /* whose X-Forwarded-For counts */
        struct smtp_config smtp;
};

/* Fills *out from cfg and the environment.  Returns 0, or -1 with a
 * message naming the variable in err. */
int auth_settings_load(struct auth_settings *out, const struct config *cfg,
                       char *err, size_t errlen);

struct auth_service {
        struct store *store;
        struct mail_queue *mail;
        struct jwtauth_key key;
        struct auth_settings set;
        struct auth_worker *worker;
        struct ipallow_list trusted; /* proxies, for client addresses */
        unsigned char totp_key[32];  /* seals TOTP secrets at rest */
};

/* Who a dashboard request comes from, once auth_guard let it through. */
struct auth_principal {
        char user_id[JWTAUTH_ID_SIZE];
        char org_id[JWTAUTH_ID_SIZE];
        char session_id[JWTAUTH_ID_SIZE];
};

/*
 * Starts the service on store s (SQLite): creates its tables, loads or
 * creates the token secret in data_dir, starts the mail queue and the
 * background worker.  Returns NULL (reason logged) on failure; release
 * with auth_service_stop().
 */
struct auth_service *auth_service_start(struct store *s, const char *data_dir,
                                        const struct auth_settings *set);

/* Stops the worker and the mail queue, then frees svc.  NULL allowed. */
void auth_service_stop(struct auth_service *svc);

/*
 * Opens a session for user u from address/user_agent and answers the
 * login body {access_token, refresh_token, expires_in, token_type} as a
 * new JSON object.  NULL on failure.
 */
json_t *auth_login_tokens(struct auth_service *svc,
                          const struct account_user *u, const char *address,
                          const char *user_agent);

/* Signs an access token for user u and session sid; free() it. */
char *auth_access_token(struct auth_service *svc, const struct account_user *u,
                        const char *sid);

/* Queues the verification mail with a new 24 h link for u. */
int auth_mail_verification(struct auth_service *svc,
                           const struct account_user *u);

/*
 * Runs a password reset request (or a resend of the verification mail
 * when verify is true) for email in the background: whether the address
 * exists or not, the caller returns at once and at the same speed.
 * Returns 0, or -1 when the worker's queue is full.
 */
int auth_request_mail(struct auth_service *svc, const char *email, bool verify,
                      const char *address, const char *user_agent);

/* Seals a base32 TOTP secret for the database (XChaCha20-Poly1305 with a
 * key derived from the token secret) into out as hex.  Returns 0 or -1. */
int auth_totp_seal(const struct auth_service *svc, const char *secret,
                   char out[ACCOUNT_TOTP_FIELD]);

/* Opens what auth_totp_seal made.  Returns 0, or -1 when sealed is not
 * one of ours (altered, or sealed under another token secret). */
int auth_totp_open(const struct auth_service *svc, const char *sealed,
                   char out[TOTP_SECRET_B32_SIZE]);

/* The client address of req as text (request memory): the socket peer,
 * or the forwarded client when the peer is a trusted proxy. */
const char *auth_client_address(struct auth_service *svc,
                                struct http_request *req);

/*
 * The before-body hook of dashboard routes (http_before_fn; userdata is
 * the service): checks "Authorization: Bearer <JWT>" (signature,
 * algorithm, expiry: case S1) and that its session is still live, then
 * hands a struct auth_principal to the handler through the request's
 * context.  Answers 401 otherwise.
 */
bool auth_guard(struct http_request *req, void *userdata);

/* The principal auth_guard set on req (NULL if the route has no guard). */
const struct auth_principal *auth_principal_of(const struct http_request *req);

#endif
