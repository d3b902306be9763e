#include "mail/mail.h"

#include "store/store_sqlite.h"
#include "util/log.h"

#include <assert.h>
#include <curl/curl.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* status: queued (waiting for the sender), sent, failed (gave up),
 * outbox (no SMTP configured when it was written). */
static const char *const migrations[] = {
        "CREATE TABLE mail_queue ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " recipient TEXT NOT NULL, subject TEXT NOT NULL,"
        " text_body TEXT NOT NULL, html_body TEXT NOT NULL,"
        " status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " next_ms INTEGER NOT NULL, last_error TEXT,"
        " created_ms INTEGER NOT NULL, sent_ms INTEGER NOT NULL DEFAULT 0);"
        "CREATE INDEX mail_queue_due ON mail_queue(status, next_ms);",
};

struct mail_queue {
        struct store *store;
        struct smtp_config cfg;
        unsigned char key[MAIL_KEY_SIZE];
        bool sealed; /* queued bodies are sealed with key */
        int retry_base_s;
        int max_attempts;
        bool sending; /* a host is configured and the thread runs */
        bool stop;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t wake;
};

/* One message taken from the table for sending.  unreadable: its bodies
 * could not be opened. */
struct pending {
        long long id;
        int attempts;
        bool unreadable;
        char *to, *subject, *text, *html;
};

/* Marks a body sealed by seal_body(); rows without it are in the clear
 * (the outbox, or a queue that ran without a key). */
#define SEALED_PREFIX "sealed2:"

enum {
        SEAL_NONCE = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES,
        SEAL_MAC = crypto_aead_xchacha20poly1305_ietf_ABYTES,
};

/* What a sealed body is bound to, so that it opens only in its own
 * place: its recipient and its column ("text" or "html").  A body copied
 * into a row addressed to someone else does not open there.  malloc'ed;
 * NULL when out of memory. */
static char *seal_context(const char *to, const char *column)
{
        size_t n = strlen(to) + strlen(column) + 2;
        char *ad = malloc(n);
        if (ad)
                snprintf(ad, n, "%s\n%s", to, column);
        return ad;
}

/* The text to store for body, sealed with the queue's key and bound to
 * (to, column): SEALED_PREFIX and base64 of nonce, ciphertext and tag.
 * malloc'ed; NULL when out of memory. */
static char *seal_body(const struct mail_queue *q, const char *body,
                       const char *to, const char *column)
{
        assert(q->sealed);
        size_t len = strlen(body), boxlen = SEAL_NONCE + len + SEAL_MAC;
        size_t b64 = sodium_base64_encoded_len(boxlen,
                                               sodium_base64_VARIANT_ORIGINAL);
        unsigned char *box = malloc(boxlen);
        char *out = malloc(sizeof SEALED_PREFIX - 1 + b64);
        char *ad = seal_context(to, column);
        if (!box || !out || !ad) {
                free(box);
                free(out);
                free(ad);
                return NULL;
        }

        /* A random nonce in front, then the ciphertext and its tag. */
        randombytes_buf(box, SEAL_NONCE);
        crypto_aead_xchacha20poly1305_ietf_encrypt(
                box + SEAL_NONCE, NULL, (const unsigned char *)body, len,
                (const unsigned char *)ad, strlen(ad), NULL, box, q->key);
        memcpy(out, SEALED_PREFIX, sizeof SEALED_PREFIX - 1);
        sodium_bin2base64(out + sizeof SEALED_PREFIX - 1, b64, box, boxlen,
                          sodium_base64_VARIANT_ORIGINAL);
        free(ad);
        free(box);
        return out;
}

enum open_result {
        OPEN_OK,
        OPEN_REFUSED, /* not sealed with this key for this place */
        OPEN_NO_MEMORY,
};

/* The body stored as text, in *out (malloc'ed): opened when sealed, copied
 * when in the clear.  A body that does not open with the queue's key for
 * (to, column) is OPEN_REFUSED; a lack of memory is no verdict on it. */
static enum open_result open_body(const struct mail_queue *q, const char *text,
                                  const char *to, const char *column,
                                  char **out)
{
        size_t plen = sizeof SEALED_PREFIX - 1;
        enum open_result res = OPEN_NO_MEMORY;

        *out = NULL;
        if (strncmp(text, SEALED_PREFIX, plen) != 0)
                return (*out = strdup(text)) ? OPEN_OK : OPEN_NO_MEMORY;
        if (!q->sealed)
                return OPEN_REFUSED;
        text += plen;
        size_t cap = strlen(text) / 4 * 3 + 3, boxlen = 0;
        unsigned char *box = malloc(cap);
        char *ad = seal_context(to, column);
        unsigned long long len = 0;
        if (!box || !ad)
                goto done;
        res = OPEN_REFUSED;
        if (sodium_base642bin(box, cap, text, strlen(text), NULL, &boxlen, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            boxlen < SEAL_NONCE + SEAL_MAC)
                goto done;
        *out = malloc(boxlen - SEAL_NONCE - SEAL_MAC + 1);
        if (!*out) {
                res = OPEN_NO_MEMORY;
                goto done;
        }
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(
                    (unsigned char *)*out, &len, NULL, box + SEAL_NONCE,
                    boxlen - SEAL_NONCE, (const unsigned char *)ad, strlen(ad),
                    box, q->key) != 0) {
                free(*out);
                *out = NULL;
                goto done;
        }
        (*out)[len] = '\0';
        res = OPEN_OK;
done:
        free(ad);
        free(box);
        return res;
}

int mail_migrate(struct store *s)
{
        return store_sqlite_migrate(s, "mail", migrations,
                                    sizeof migrations / sizeof *migrations) ==
                               STORE_OK
                       ? 0
                       : -1;
}

static char *dup_col(sqlite3_stmt *st, int i)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        return strdup(t ? (const char *)t : "");
}

/* Takes the oldest due message, if any, into *p.  Returns 1, 0 when none
 * is due, -1 on error. */
static int take_due(struct mail_queue *q, struct pending *p)
{
        sqlite3_stmt *st = NULL;
        int found = -1;

        store_sqlite_lock(q->store);
        sqlite3 *db = store_sqlite_db(q->store);
        if (sqlite3_prepare_v2(db,
                               "SELECT id, attempts, recipient, subject, "
                               "text_body, html_body FROM mail_queue WHERE "
                               "status = 'queued' AND next_ms <= ? ORDER BY "
                               "id LIMIT 1",
                               -1, &st, NULL) != SQLITE_OK)
                goto out;
        sqlite3_bind_int64(st, 1, store_now_ms());
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                p->id = sqlite3_column_int64(st, 0);
                p->attempts = sqlite3_column_int(st, 1);
                p->to = dup_col(st, 2);
                p->subject = dup_col(st, 3);
                const unsigned char *t = sqlite3_column_text(st, 4);
                const unsigned char *h = sqlite3_column_text(st, 5);
                enum open_result rt = OPEN_NO_MEMORY, rh = OPEN_NO_MEMORY;
                if (p->to) {
                        rt = open_body(q, t ? (const char *)t : "", p->to,
                                       "text", &p->text);
                        rh = open_body(q, h ? (const char *)h : "", p->to,
                                       "html", &p->html);
                }
                p->unreadable = rt == OPEN_REFUSED || rh == OPEN_REFUSED;

                /* Short of memory: the row stays queued for a later try. */
                found = p->to && p->subject && rt != OPEN_NO_MEMORY &&
                                        rh != OPEN_NO_MEMORY
                                ? 1
                                : -1;
        } else if (rc == SQLITE_DONE) {
                found = 0;
        }
out:
        if (found < 0)
                log_error("mail", "The mail queue could not be read: %s.",
                          sqlite3_errmsg(db));
        sqlite3_finalize(st);
        store_sqlite_unlock(q->store);
        return found;
}

static void pending_free(struct pending *p)
{
        /* The bodies hold live links. */
        if (p->text)
                sodium_memzero(p->text, strlen(p->text));
        if (p->html)
                sodium_memzero(p->html, strlen(p->html));
        free(p->to);
        free(p->subject);
        free(p->text);
        free(p->html);
        memset(p, 0, sizeof *p);
}

/* Writes the outcome of one attempt.  Once a message is sent or given up
 * its bodies are erased: they hold live links (reset, verification) that
 * nobody reading the database later should be able to use. */
static void note_attempt(struct mail_queue *q, const struct pending *p,
                         const char *status, long long next_ms,
                         const char *error)
{
        sqlite3_stmt *st = NULL;

        store_sqlite_lock(q->store);
        sqlite3 *db = store_sqlite_db(q->store);
        if (sqlite3_prepare_v2(db,
                               "UPDATE mail_queue SET status = ?1, "
                               "attempts = attempts + 1, next_ms = ?2, "
                               "last_error = ?3, sent_ms = ?4, "
                               "text_body = CASE WHEN ?1 = 'queued' THEN "
                               "text_body ELSE '' END, "
                               "html_body = CASE WHEN ?1 = 'queued' THEN "
                               "html_body ELSE '' END WHERE id = ?5",
                               -1, &st, NULL) == SQLITE_OK) {
                sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, next_ms);
                sqlite3_bind_text(st, 3, error, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, 4,
                                   strcmp(status, "sent") == 0 ? store_now_ms()
                                                               : 0);
                sqlite3_bind_int64(st, 5, p->id);
        }
        if (!st || sqlite3_step(st) != SQLITE_DONE)
                log_error("mail", "Mail %lld could not be updated: %s.", p->id,
                          sqlite3_errmsg(db));
        sqlite3_finalize(st);
        store_sqlite_unlock(q->store);
}

/* Sends one message and records how it went. */
static void send_one(struct mail_queue *q, struct pending *p)
{
        char err[256] = "";
        struct smtp_message msg = {p->to, p->subject, p->text, p->html};

        /* Sealed under another key (jwt.secret replaced): it can never
         * be sent. */
        if (p->unreadable) {
                note_attempt(q, p, "failed", 0, "the message cannot be opened");
                log_error("mail",
                          "Mail %lld cannot be opened with this server's "
                          "key (was jwt.secret replaced?) and is given up.",
                          p->id);
                return;
        }
        if (smtp_send(&q->cfg, &msg, err, sizeof err) == 0) {
                note_attempt(q, p, "sent", 0, NULL);
                log_info("mail", "Mail %lld was sent.", p->id);
                return;
        }

        /* Doubling delays: base, 2 base, 4 base, ... until max tries. */
        int tries = p->attempts + 1;
        if (tries >= q->max_attempts) {
                note_attempt(q, p, "failed", 0, err);
                log_error("mail",
                          "Mail %lld failed %d times and is given "
                          "up: %s.",
                          p->id, tries, err);
                return;
        }
        long long delay = (long long)q->retry_base_s * 1000 << (tries - 1);
        note_attempt(q, p, "queued", store_now_ms() + delay, err);
        log_warn("mail", "Mail %lld could not be sent (%s); retry in %lld s.",
                 p->id, err, delay / 1000);
}

static void *sender(void *arg)
{
        struct mail_queue *q = arg;

        pthread_mutex_lock(&q->lock);
        while (!q->stop) {
                /* Send everything due, without holding our lock. */
                pthread_mutex_unlock(&q->lock);
                struct pending p = {0};
                while (!q->stop && take_due(q, &p) == 1) {
                        send_one(q, &p);
                        pending_free(&p);
                }
                pending_free(&p);
                pthread_mutex_lock(&q->lock);

                /* Sleep until a new message or the next retry check. */
                struct timespec until;
                clock_gettime(CLOCK_REALTIME, &until);
                until.tv_sec += 1;
                if (!q->stop)
                        pthread_cond_timedwait(&q->wake, &q->lock, &until);
        }
        pthread_mutex_unlock(&q->lock);
        return NULL;
}

struct mail_queue *mail_queue_start(struct store *s,
                                    const struct smtp_config *cfg,
                                    const unsigned char *key, int retry_base_s,
                                    int max_attempts)
{
        assert(s && cfg);
        struct mail_queue *q = calloc(1, sizeof *q);
        if (!q)
                return NULL;
        q->store = s;
        q->cfg = *cfg;
        if (key) {
                memcpy(q->key, key, sizeof q->key);
                q->sealed = true;
        }
        q->retry_base_s = retry_base_s > 0 ? retry_base_s : 30;
        q->max_attempts = max_attempts > 0 ? max_attempts : 8;
        pthread_mutex_init(&q->lock, NULL);
        pthread_cond_init(&q->wake, NULL);
        if (mail_migrate(s) != 0)
                goto fail;

        /* Without a host there is nothing to run: mail goes to the
         * outbox. */
        if (!cfg->host[0]) {
                log_info("mail", "No SMTP host is configured: mail goes to "
                                 "the outbox (`frapi outbox` shows it).");
                return q;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        if (pthread_create(&q->thread, NULL, sender, q) != 0)
                goto fail;
        q->sending = true;
        log_info("mail", "Mail is sent through %s:%d%s.", cfg->host, cfg->port,
                 cfg->starttls ? " with STARTTLS" : "");
        return q;
fail:
        pthread_cond_destroy(&q->wake);
        pthread_mutex_destroy(&q->lock);
        sodium_memzero(q->key, sizeof q->key);
        free(q);
        return NULL;
}

long long mail_send(struct mail_queue *q, const struct smtp_message *msg)
{
        sqlite3_stmt *st = NULL;
        long long id = -1;

        assert(q && msg);
        if (!smtp_header_safe(msg->to) || !smtp_header_safe(msg->subject) ||
            !msg->text || !msg->html)
                return -1;

        /* Bodies waiting to be sent are sealed; the outbox is read by
         * `frapi outbox`, which has no key. */
        bool seal = q->sending && q->sealed;
        char *text = seal ? seal_body(q, msg->text, msg->to, "text") : NULL;
        char *html = seal ? seal_body(q, msg->html, msg->to, "html") : NULL;
        if (seal && (!text || !html)) {
                free(text);
                free(html);
                return -1;
        }

        /* Into the table; the sender picks it up. */
        const char *status = q->sending ? "queued" : "outbox";
        store_sqlite_lock(q->store);
        sqlite3 *db = store_sqlite_db(q->store);
        if (sqlite3_prepare_v2(db,
                               "INSERT INTO mail_queue (recipient, subject, "
                               "text_body, html_body, status, next_ms, "
                               "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               -1, &st, NULL) == SQLITE_OK) {
                int64_t now = store_now_ms();
                sqlite3_bind_text(st, 1, msg->to, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 2, msg->subject, -1, SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 3, seal ? text : msg->text, -1,
                                  SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 4, seal ? html : msg->html, -1,
                                  SQLITE_TRANSIENT);
                sqlite3_bind_text(st, 5, status, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 6, now);
                sqlite3_bind_int64(st, 7, now);
                if (sqlite3_step(st) == SQLITE_DONE)
                        id = sqlite3_last_insert_rowid(db);
        }
        if (id < 0)
                log_error("mail", "A mail could not be queued: %s.",
                          sqlite3_errmsg(db));
        sqlite3_finalize(st);
        store_sqlite_unlock(q->store);
        free(text);
        free(html);
        if (id < 0)
                return -1;

        /* Wake the sender, or say where the message went. */
        if (q->sending) {
                pthread_mutex_lock(&q->lock);
                pthread_cond_signal(&q->wake);
                pthread_mutex_unlock(&q->lock);
        } else {
                log_info("mail",
                         "Mail %lld (\"%s\") was written to the "
                         "outbox; `frapi outbox` prints it.",
                         id, msg->subject);
        }
        return id;
}

void mail_queue_stop(struct mail_queue *q)
{
        if (!q)
                return;
        if (q->sending) {
                pthread_mutex_lock(&q->lock);
                q->stop = true;
                pthread_cond_signal(&q->wake);
                pthread_mutex_unlock(&q->lock);
                pthread_join(q->thread, NULL);
        }
        pthread_cond_destroy(&q->wake);
        pthread_mutex_destroy(&q->lock);
        sodium_memzero(q->key, sizeof q->key);
        free(q);
}

int mail_outbox_print(struct store *s, FILE *to, int limit)
{
        sqlite3_stmt *st = NULL;
        int n = -1;

        store_sqlite_lock(s);
        sqlite3 *db = store_sqlite_db(s);
        if (sqlite3_prepare_v2(db,
                               "SELECT id, created_ms, recipient, subject, "
                               "text_body FROM mail_queue WHERE status = "
                               "'outbox' ORDER BY id LIMIT ?",
                               -1, &st, NULL) != SQLITE_OK)
                goto out;
        sqlite3_bind_int(st, 1, limit);

        /* One block per message, separated by a ruler. */
        n = 0;
        while (sqlite3_step(st) == SQLITE_ROW) {
                time_t t = (time_t)(sqlite3_column_int64(st, 1) / 1000);
                struct tm tm;
                char when[32];
                gmtime_r(&t, &tm);
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
                fprintf(to, "--- mail %lld, %s\nTo: %s\nSubject: %s\n\n%s\n",
                        (long long)sqlite3_column_int64(st, 0), when,
                        sqlite3_column_text(st, 2), sqlite3_column_text(st, 3),
                        sqlite3_column_text(st, 4));
                n++;
        }
out:
        if (n < 0)
                fprintf(stderr, "frapi: the outbox cannot be read: %s\n",
                        sqlite3_errmsg(db));
        sqlite3_finalize(st);
        store_sqlite_unlock(s);
        return n;
}
