/*
 * smtp.h - sends one message over SMTP with libcurl: plain-text and HTML
 * bodies as multipart/alternative, STARTTLS when asked, credentials when
 * given.  Blocking; the mail queue calls it from its own thread.
 */
#ifndef FRAPI_MAIL_SMTP_H
#define FRAPI_MAIL_SMTP_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_FIELD_MAX 512

struct smtp_config {
        char host[SMTP_FIELD_MAX]; /* "" means no SMTP: mail stays put */
        int port;                  /* 25, 587, 465 (smtps) */
        bool starttls;             /* require STARTTLS on a plain port */
        char user[SMTP_FIELD_MAX]; /* "" for no authentication */
        char password[SMTP_FIELD_MAX];
        char from[SMTP_FIELD_MAX];    /* "Name <addr>" or "addr" */
        char ca_file[SMTP_FIELD_MAX]; /* PEM CAs to trust; "" system's */
        int timeout_s;                /* whole transfer */
};

/* One message.  Every field is required and NUL-terminated. */
struct smtp_message {
        const char *to;
        const char *subject;
        const char *text;
        const char *html;
};

/* True when s can go into a mail header: printable, no CR or LF, at
 * most 998 bytes. */
bool smtp_header_safe(const char *s);

/* Sends msg with cfg.  TLS (smtps, or STARTTLS when cfg->starttls)
 * always checks the server's certificate and name, against cfg->ca_file
 * when set, else the system's CAs.  Returns 0, or -1 with the reason in
 * err (no secrets in it). */
int smtp_send(const struct smtp_config *cfg, const struct smtp_message *msg,
              char *err, size_t errlen);

#endif
