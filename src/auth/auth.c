#include "auth/auth.h"

#include "auth/audit.h"
#include "config/config.h"
#include "http/http.h"
#include "util/log.h"

#include <assert.h>
#include <ctype.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/*
 * Settings.
 */

/* Reads integer variable name into *out when set; [min, max] allowed. */
static int env_int(const char *name, int min, int max, int *out, char *err,
                   size_t errlen)
{
        const char *v = getenv(name);
        char *end;

        if (!v || !*v)
                return 0;
        long n = strtol(v, &end, 10);
        if (*end || n < min || n > max) {
                snprintf(err, errlen,
                         "%s must be a whole number from %d to %d, not "
                         "\"%s\"",
                         name, min, max, v);
                return -1;
        }
        *out = (int)n;
        return 0;
}

int auth_settings_load(struct auth_settings *out, const struct config *cfg,
                       char *err, size_t errlen)
{
        memset(out, 0, sizeof *out);
        *out = (struct auth_settings){
                .access_ttl_s = 3600,
                .refresh_ttl_s = 30 * 86400,
                .verify_ttl_s = 86400,
                .reset_ttl_s = 3600,
                .challenge_ttl_s = 300,
                .login_window_s = 900,
                .login_max_account = 5,
                .login_max_address = 20,
                .mail_retry_s = 30,
                .mail_max_attempts = 8,
        };
        snprintf(out->issuer, sizeof out->issuer, "FR-APIaaS");

        /* Lifetimes may be shortened (tests) or lengthened, within reason. */
        if (env_int("FRAPI_ACCESS_TOKEN_TTL_S", 1, 86400, &out->access_ttl_s,
                    err, errlen) ||
            env_int("FRAPI_REFRESH_TOKEN_TTL_S", 1, 365 * 86400,
                    &out->refresh_ttl_s, err, errlen) ||
            env_int("FRAPI_VERIFY_TOKEN_TTL_S", 1, 7 * 86400,
                    &out->verify_ttl_s, err, errlen) ||
            env_int("FRAPI_RESET_TOKEN_TTL_S", 1, 86400, &out->reset_ttl_s, err,
                    errlen) ||
            env_int("FRAPI_2FA_CHALLENGE_TTL_S", 1, 3600, &out->challenge_ttl_s,
                    err, errlen) ||
            env_int("FRAPI_LOGIN_WINDOW_S", 1, 86400, &out->login_window_s, err,
                    errlen) ||
            env_int("FRAPI_LOGIN_MAX_PER_ACCOUNT", 1, 1000,
                    &out->login_max_account, err, errlen) ||
            env_int("FRAPI_LOGIN_MAX_PER_ADDRESS", 1, 100000,
                    &out->login_max_address, err, errlen) ||
            env_int("FRAPI_MAIL_RETRY_S", 1, 86400, &out->mail_retry_s, err,
                    errlen) ||
            env_int("FRAPI_MAIL_MAX_ATTEMPTS", 1, 100, &out->mail_max_attempts,
                    err, errlen))
                return -1;

        /* Links in mails point at the public URL, or at our own address. */
        if (cfg->public_url[0])
                snprintf(out->public_url, sizeof out->public_url, "%s",
                         cfg->public_url);
        else
                snprintf(out->public_url, sizeof out->public_url, "http://%s",
                         cfg->listen);
        size_t n = strlen(out->public_url);
        while (n > 0 && out->public_url[n - 1] == '/')
                out->public_url[--n] = '\0';

        /* SMTP, empty host meaning the outbox. */
        struct smtp_config *m = &out->smtp;
        snprintf(m->host, sizeof m->host, "%s", cfg->smtp_host);
        m->port = cfg->smtp_port > 0 ? cfg->smtp_port : 587;
        m->starttls = cfg->smtp_starttls;
        snprintf(m->user, sizeof m->user, "%s", cfg->smtp_user);
        snprintf(m->password, sizeof m->password, "%s", cfg->smtp_password);
        snprintf(m->from, sizeof m->from, "%s",
                 cfg->smtp_from[0] ? cfg->smtp_from : "frapi@localhost");
        snprintf(m->ca_file, sizeof m->ca_file, "%s", cfg->smtp_ca_file);
        m->timeout_s = 30;
        snprintf(out->trusted_proxies, sizeof out->trusted_proxies, "%s",
                 cfg->trusted_proxies);
        return 0;
}

/*
 * Mails.
 */

/* Appends s to f with the five HTML special characters escaped. */
static void html_escaped(FILE *f, const char *s)
{
        for (; *s; s++) {
                switch (*s) {
                case '<':
                        fputs("&lt;", f);
                        break;
                case '>':
                        fputs("&gt;", f);
                        break;
                case '&':
                        fputs("&amp;", f);
                        break;
                case '"':
                        fputs("&quot;", f);
                        break;
                case '\'':
                        fputs("&#39;", f);
                        break;
                default:
                        fputc(*s, f);
                }
        }
}

/* Builds and queues one mail with a link: intro and outro are the
 * sentences before and after it.  Returns 0 or -1. */
static int queue_link_mail(struct auth_service *svc,
                           const struct account_user *u, const char *subject,
                           const char *intro, const char *link,
                           const char *token, const char *outro)
{
        char *text = NULL, *html = NULL;
        size_t tlen = 0, hlen = 0;
        int rc = -1;

        FILE *t = open_memstream(&text, &tlen);
        FILE *h = open_memstream(&html, &hlen);
        if (!t || !h)
                goto out;

        /* The plain-text body. */
        fprintf(t,
                "Hello %s,\n\n%s\n\n%s\n\nThe code in this link is: %s\n\n"
                "%s\n\n-- %s\n",
                u->name, intro, link, token, outro, svc->set.issuer);

        /* The same in HTML, every user-given value escaped. */
        fputs("<!DOCTYPE html><html><body><p>Hello ", h);
        html_escaped(h, u->name);
        fputs(",</p><p>", h);
        html_escaped(h, intro);
        fputs("</p><p><a href=\"", h);
        html_escaped(h, link);
        fputs("\">", h);
        html_escaped(h, link);
        fputs("</a></p><p>", h);
        html_escaped(h, outro);
        fputs("</p><p>&mdash; ", h);
        html_escaped(h, svc->set.issuer);
        fputs("</p></body></html>\n", h);
        if (fclose(t) != 0 || fclose(h) != 0) {
                t = h = NULL;
                goto out;
        }
        t = h = NULL;

        struct smtp_message msg = {u->email, subject, text, html};
        rc = mail_send(svc->mail, &msg) > 0 ? 0 : -1;
out:
        if (t)
                fclose(t);
        if (h)
                fclose(h);
        if (text)
                sodium_memzero(text, tlen);
        free(text);
        free(html);
        return rc;
}

int auth_mail_verification(struct auth_service *svc,
                           const struct account_user *u)
{
        char token[TOKEN_SIZE], link[1024], intro[256];

        if (account_token_issue(svc->store, u->id, ACCOUNT_TOKEN_VERIFY,
                                svc->set.verify_ttl_s, token) != ACCOUNT_OK)
                return -1;
        snprintf(link, sizeof link, "%s/api/v1/auth/verify-email?token=%s",
                 svc->set.public_url, token);
        snprintf(intro, sizeof intro,
                 "Please confirm your email address by opening this link "
                 "within %d hours:",
                 (svc->set.verify_ttl_s + 3599) / 3600);
        int rc = queue_link_mail(svc, u, "Confirm your email address", intro,
                                 link, token,
                                 "If you did not create an account, you can "
                                 "ignore this message.");
        sodium_memzero(token, sizeof token);
        return rc;
}

/* Queues a password reset mail with a new link for u. */
static int mail_reset(struct auth_service *svc, const struct account_user *u)
{
        char token[TOKEN_SIZE], link[1024], intro[256];

        if (account_token_issue(svc->store, u->id, ACCOUNT_TOKEN_RESET,
                                svc->set.reset_ttl_s, token) != ACCOUNT_OK)
                return -1;
        snprintf(link, sizeof link, "%s/reset-password?token=%s",
                 svc->set.public_url, token);
        snprintf(intro, sizeof intro,
                 "Someone asked to reset the password of your account. To "
                 "choose a new one, open this link within %d minutes:",
                 (svc->set.reset_ttl_s + 59) / 60);
        int rc = queue_link_mail(svc, u, "Reset your password", intro, link,
                                 token,
                                 "If you did not ask for this, ignore this "
                                 "message: your password stays as it is.");
        sodium_memzero(token, sizeof token);
        return rc;
}

/*
 * The background worker for requests whose timing must not tell whether
 * an account exists.
 */

#define WORKER_SLOTS 256

struct mail_job {
        char email[ACCOUNT_EMAIL_MAX + 1];
        char address[64];
        char user_agent[256];
        bool verify;
        struct timespec due; /* not before: after the answer has left */
};

struct auth_worker {
        struct auth_service *svc;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t wake;
        struct mail_job jobs[WORKER_SLOTS];
        int head, count;
        bool stop;
};

/* Runs one request: the lookup, the token and the mail. */
static void run_job(struct auth_service *svc, const struct mail_job *job)
{
        struct account_user u;
        enum account_status st = account_by_email(svc->store, job->email, &u);
        const char *event = job->verify ? "verification_resent"
                                        : "password_reset_requested";
        const char *outcome = "unknown_email";

        if (st == ACCOUNT_OK && job->verify && u.verified_ms != 0)
                outcome = "already_verified";
        else if (st == ACCOUNT_OK)
                outcome = (job->verify ? auth_mail_verification(svc, &u)
                                       : mail_reset(svc, &u)) == 0
                                  ? "mail_queued"
                                  : "error";
        audit_record(svc->store, event, outcome, st == ACCOUNT_OK ? u.id : NULL,
                     st == ACCOUNT_OK ? u.org_id : NULL, job->address,
                     job->user_agent, NULL);
        sodium_memzero(u.password_hash, sizeof u.password_hash);
}

static void *worker_main(void *arg)
{
        struct auth_worker *w = arg;

        pthread_mutex_lock(&w->lock);
        for (;;) {
                while (w->count == 0 && !w->stop)
                        pthread_cond_wait(&w->wake, &w->lock);
                if (w->count == 0 && w->stop)
                        break;

                /* Take one job and run it unlocked. */
                struct mail_job job = w->jobs[w->head];
                w->head = (w->head + 1) % WORKER_SLOTS;
                w->count--;
                bool stopping = w->stop;
                pthread_mutex_unlock(&w->lock);
                while (!stopping &&
                       clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &job.due,
                                       NULL) != 0)
                        continue;
                run_job(w->svc, &job);
                pthread_mutex_lock(&w->lock);
        }
        pthread_mutex_unlock(&w->lock);
        return NULL;
}

int auth_request_mail(struct auth_service *svc, const char *email, bool verify,
                      const char *address, const char *user_agent)
{
        struct auth_worker *w = svc->worker;
        int rc = -1;

        pthread_mutex_lock(&w->lock);
        if (w->count < WORKER_SLOTS && !w->stop) {
                struct mail_job *job =
                        &w->jobs[(w->head + w->count) % WORKER_SLOTS];
                snprintf(job->email, sizeof job->email, "%s", email);
                snprintf(job->address, sizeof job->address, "%s",
                         address ? address : "");
                snprintf(job->user_agent, sizeof job->user_agent, "%s",
                         user_agent ? user_agent : "");
                job->verify = verify;

                /* Run it 100-300 ms later, once the answer is out, so
                 * that its work never overlaps the request it came from. */
                clock_gettime(CLOCK_MONOTONIC, &job->due);
                long ns = job->due.tv_nsec +
                          (100 + (long)randombytes_uniform(200)) * 1000000L;
                job->due.tv_sec += ns / 1000000000L;
                job->due.tv_nsec = ns % 1000000000L;
                w->count++;
                pthread_cond_signal(&w->wake);
                rc = 0;
        }
        pthread_mutex_unlock(&w->lock);
        return rc;
}

/*
 * The service.
 */

struct auth_service *auth_service_start(struct store *s, const char *data_dir,
                                        const struct auth_settings *set)
{
        struct auth_service *svc = calloc(1, sizeof *svc);
        struct auth_worker *w = calloc(1, sizeof *w);

        assert(s && data_dir && set);
        if (!svc || !w || sodium_init() < 0 || totp_init() != 0)
                goto fail;
        svc->store = s;
        svc->set = *set;

        /* Trusted proxies decide which address a request comes from. */
        char err[256];
        if (ipallow_list_parse_csv(set->trusted_proxies, &svc->trusted, err,
                                   sizeof err) != 0) {
                log_error("auth", "The trusted proxies are unusable: %s.", err);
                goto fail;
        }

        /* Tables, secret, mail, in the order a request needs them. */
        if (account_migrate(s) != 0 || audit_migrate(s) != 0 ||
            jwtauth_key_load(data_dir, &svc->key) != 0)
                goto fail;
        crypto_kdf_derive_from_key(svc->totp_key, sizeof svc->totp_key, 1,
                                   "frapitot", svc->key.secret);

        /* Queued mail holds live links: sealed with a key of its own. */
        unsigned char mail_key[MAIL_KEY_SIZE];
        crypto_kdf_derive_from_key(mail_key, sizeof mail_key, 2, "frapimai",
                                   svc->key.secret);
        svc->mail = mail_queue_start(s, &set->smtp, mail_key, set->mail_retry_s,
                                     set->mail_max_attempts);
        sodium_memzero(mail_key, sizeof mail_key);
        if (!svc->mail)
                goto fail;

        /* The background worker. */
        w->svc = svc;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->wake, NULL);
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
                pthread_cond_destroy(&w->wake);
                pthread_mutex_destroy(&w->lock);
                goto fail;
        }
        svc->worker = w;

        /* Warm the decoy hash so the first unknown login is not faster. */
        (void)password_verify(NULL, "warm-up only", 12);
        log_info("auth", "Accounts are ready (access tokens last %d s).",
                 set->access_ttl_s);
        return svc;
fail:
        log_error("auth", "The accounts service could not start.");
        if (svc)
                mail_queue_stop(svc->mail);
        free(w);
        if (svc) {
                ipallow_list_free(&svc->trusted);
                sodium_memzero(&svc->key, sizeof svc->key);
        }
        free(svc);
        return NULL;
}

void auth_service_stop(struct auth_service *svc)
{
        if (!svc)
                return;

        /* The worker finishes its queue, then the mail queue stops. */
        struct auth_worker *w = svc->worker;
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
        pthread_cond_destroy(&w->wake);
        pthread_mutex_destroy(&w->lock);
        free(w);
        mail_queue_stop(svc->mail);
        ipallow_list_free(&svc->trusted);
        sodium_memzero(&svc->key, sizeof svc->key);
        sodium_memzero(svc->totp_key, sizeof svc->totp_key);
        free(svc);
}

enum {
        SEAL_NONCE = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
        SEAL_MAC = crypto_aead_xchacha20poly1305_ietf_ABYTES,
        SEAL_PLAIN = TOTP_SECRET_B32_SIZE - 1,
        SEAL_BYTES = SEAL_NONCE + SEAL_PLAIN + SEAL_MAC,
};

int auth_totp_seal(const struct auth_service *svc, const char *secret,
                   char out[ACCOUNT_TOTP_FIELD])
{
        unsigned char box[SEAL_BYTES];
        unsigned long long len = 0;

        static_assert(SEAL_BYTES * 2 + 1 <= ACCOUNT_TOTP_FIELD,
                      "sealed TOTP field too small");
        if (strlen(secret) != SEAL_PLAIN)
                return -1;

        /* A random nonce in front, then the ciphertext and its tag. */
        randombytes_buf(box, SEAL_NONCE);
        crypto_aead_xchacha20poly1305_ietf_encrypt(
                box + SEAL_NONCE, &len, (const unsigned char *)secret,
                SEAL_PLAIN, NULL, 0, NULL, box, svc->totp_key);
        assert(len == SEAL_PLAIN + SEAL_MAC);
        sodium_bin2hex(out, ACCOUNT_TOTP_FIELD, box, sizeof box);
        return 0;
}

int auth_totp_open(const struct auth_service *svc, const char *sealed,
                   char out[TOTP_SECRET_B32_SIZE])
{
        unsigned char box[SEAL_BYTES];
        unsigned long long len = 0;
        size_t bin = 0;

        if (sodium_hex2bin(box, sizeof box, sealed, strlen(sealed), NULL, &bin,
                           NULL) != 0 ||
            bin != sizeof box ||
            crypto_aead_xchacha20poly1305_ietf_decrypt(
                    (unsigned char *)out, &len, NULL, box + SEAL_NONCE,
                    SEAL_PLAIN + SEAL_MAC, NULL, 0, box, svc->totp_key) != 0 ||
            len != SEAL_PLAIN)
                return -1;
        out[SEAL_PLAIN] = '\0';
        return 0;
}

const char *auth_client_address(struct auth_service *svc,
                                struct http_request *req)
{
        struct ipallow_addr peer, client;
        socklen_t len = 0;
        char *text = http_request_alloc(req, IPALLOW_ADDRSTRLEN);

        /* Forwarding headers count only from a configured proxy. */
        const struct sockaddr *sa = http_request_peer(req, &len);
        if (!sa || ipallow_from_sockaddr(sa, &peer) != 0) {
                const char *p = http_request_peer_str(req);
                snprintf(text, IPALLOW_ADDRSTRLEN, "%s", p ? p : "");
                return text;
        }
        ipallow_client(&peer, http_request_header(req, "X-Forwarded-For"),
                       http_request_header(req, "Forwarded"), &svc->trusted,
                       &client);
        ipallow_format(&client, text);
        return text;
}

char *auth_access_token(struct auth_service *svc, const struct account_user *u,
                        const char *sid)
{
        struct jwtauth_claims c = {0};
        time_t now = time(NULL);

        snprintf(c.sub, sizeof c.sub, "%s", u->id);
        snprintf(c.org, sizeof c.org, "%s", u->org_id);
        snprintf(c.sid, sizeof c.sid, "%s", sid);
        store_new_id("jti_", c.jti);
        c.iat = now;
        c.exp = now + svc->set.access_ttl_s;
        return jwtauth_issue(&svc->key, &c);
}

json_t *auth_login_tokens(struct auth_service *svc,
                          const struct account_user *u, const char *address,
                          const char *user_agent)
{
        char sid[STORE_ID_MAX], refresh[TOKEN_SIZE];
        json_t *out = NULL;

        if (account_session_open(svc->store, u->id, address, user_agent,
                                 svc->set.refresh_ttl_s, sid,
                                 refresh) != ACCOUNT_OK)
                return NULL;
        char *access = auth_access_token(svc, u, sid);
        if (access)
                out = json_pack("{s:s, s:s, s:i, s:s}", "access_token", access,
                                "refresh_token", refresh, "expires_in",
                                svc->set.access_ttl_s, "token_type", "Bearer");
        sodium_memzero(refresh, sizeof refresh);
        free(access);
        return out;
}

/*
 * The guard.
 */

/* Returns the token of an "Authorization: Bearer <token>" header, or
 * NULL. */
static const char *bearer_of(const char *header)
{
        if (!header || strncasecmp(header, "Bearer ", 7) != 0)
                return NULL;
        header += 7;
        while (*header == ' ')
                header++;
        return *header ? header : NULL;
}

bool auth_guard(struct http_request *req, void *userdata)
{
        struct auth_service *svc = userdata;
        struct jwtauth_claims c;

        /* The token: present, well signed, HS256, not expired (S1). */
        const char *tok = bearer_of(http_request_header(req, "Authorization"));
        if (!tok) {
                http_reply_error(req, 401, "MISSING_TOKEN",
                                 "This route needs an Authorization: Bearer "
                                 "access token.",
                                 "Authorization");
                return false;
        }
        enum jwtauth_status st = jwtauth_verify(&svc->key, tok, time(NULL), &c);
        if (st != JWTAUTH_OK) {
                http_reply_errorf(req, 401,
                                  st == JWTAUTH_EXPIRED ? "TOKEN_EXPIRED"
                                                        : "INVALID_TOKEN",
                                  "Authorization",
                                  "The access token is "
                                  "refused: %s.",
                                  jwtauth_status_text(st));
                return false;
        }

        /* Its session still live: logout takes effect at once. */
        enum account_status as =
                account_session_check(svc->store, c.sid, c.sub);
        if (as != ACCOUNT_OK) {
                if (as == ACCOUNT_REVOKED)
                        http_reply_error(req, 401, "SESSION_REVOKED",
                                         "The session of this access token "
                                         "has ended; sign in again.",
                                         "Authorization");
                else
                        http_reply_error(req, 500, "INTERNAL_ERROR",
                                         "The session could not be checked.",
                                         NULL);
                return false;
        }

        /* Hand the principal to the handler. */
        struct auth_principal *p = http_request_alloc(req, sizeof *p);
        snprintf(p->user_id, sizeof p->user_id, "%s", c.sub);
        snprintf(p->org_id, sizeof p->org_id, "%s", c.org);
        snprintf(p->session_id, sizeof p->session_id, "%s", c.sid);
        http_request_set_context(req, p, NULL);
        http_request_set_principal(req, p->user_id);
        return true;
}

const struct auth_principal *auth_principal_of(const struct http_request *req)
{
        return http_request_context(req);
}
