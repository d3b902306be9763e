/*
 * mail.h - the mail queue.  Messages are written to the mail_queue table
 * of the store's database (module "mail") and sent by one background
 * thread over SMTP (smtp.h), retried with growing delays, so that sending
 * never slows a request.  Their bodies hold live links (verification,
 * reset), so while queued they are sealed with the queue's key and once
 * sent or given up they are erased.  Without an SMTP host the messages
 * are kept in the same table as the outbox, in the clear: the event log
 * says so and `frapi outbox` prints them, so a fresh install works
 * without a mail server.
 */
#ifndef FRAPI_MAIL_MAIL_H
#define FRAPI_MAIL_MAIL_H

#include "mail/smtp.h"
#include "store/store.h"

#include <stdio.h>

/* Bytes of the key that seals queued bodies. */
#define MAIL_KEY_SIZE 32

struct mail_queue;

/* Creates the table.  Returns 0 or -1. */
int mail_migrate(struct store *s);

/*
 * Starts the queue on store s with SMTP settings cfg (copied).  With a
 * host, a sender thread starts and also sends what an earlier run left
 * queued; without one, mail goes to the outbox.  key (MAIL_KEY_SIZE
 * bytes, copied) seals the bodies of queued messages in the database
 * (XChaCha20-Poly1305), so the links in them never reach its files in
 * the clear; a queued message the key cannot open (sealed under another
 * key) is given up.  NULL keeps them in the clear.  retry_base_s is the
 * first retry delay (doubling each time), max_attempts the number of
 * tries before a message is marked failed.  NULL on failure.
 */
struct mail_queue *mail_queue_start(struct store *s,
                                    const struct smtp_config *cfg,
                                    const unsigned char *key, int retry_base_s,
                                    int max_attempts);

/*
 * Queues one message (fields as struct smtp_message).  Returns the
 * message's id (> 0), or -1 when a field is unsafe for a header or the
 * database failed.  Never waits for the network.
 */
long long mail_send(struct mail_queue *q, const struct smtp_message *msg);

/* Stops the sender thread after the message in flight, and frees q.
 * Unsent messages stay queued for the next start.  NULL is allowed. */
void mail_queue_stop(struct mail_queue *q);

/* Prints the outbox (messages kept without SMTP), oldest first, with the
 * text bodies; at most limit of them.  Returns how many, or -1. */
int mail_outbox_print(struct store *s, FILE *to, int limit);

#endif
