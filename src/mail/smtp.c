#include "mail/smtp.h"

#include <assert.h>
#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

bool smtp_header_safe(const char *s)
{
        size_t n = 0;

        if (!s)
                return false;
        for (; s[n]; n++)
                if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f)
                        return false;
        return n <= 998;
}

/* The bare address of "Name <addr>" or "addr", for the envelope. */
static void envelope_address(const char *from, char *out, size_t n)
{
        const char *lt = strrchr(from, '<'), *gt = strrchr(from, '>');
        if (lt && gt && gt > lt)
                snprintf(out, n, "<%.*s>", (int)(gt - lt - 1), lt + 1);
        else
                snprintf(out, n, "<%s>", from);
}

/* Adds one formatted header line to *list; false when out of memory. */
static bool add_header(struct curl_slist **list, const char *fmt,
                       const char *value)
{
        char line[1100];
        snprintf(line, sizeof line, fmt, value);
        struct curl_slist *next = curl_slist_append(*list, line);
        if (!next)
                return false;
        *list = next;
        return true;
}

/* Builds the body: a multipart/alternative part holding the text and
 * the HTML, each quoted-printable so any UTF-8 travels safely. */
static curl_mime *build_body(CURL *curl, const struct smtp_message *msg)
{
        curl_mime *mime = curl_mime_init(curl);
        curl_mime *alt = curl_mime_init(curl);
        curl_mimepart *part;

        if (!mime || !alt)
                goto fail;
        part = curl_mime_addpart(alt);
        if (!part || curl_mime_data(part, msg->text, CURL_ZERO_TERMINATED) ||
            curl_mime_type(part, "text/plain; charset=utf-8") ||
            curl_mime_encoder(part, "quoted-printable"))
                goto fail;
        part = curl_mime_addpart(alt);
        if (!part || curl_mime_data(part, msg->html, CURL_ZERO_TERMINATED) ||
            curl_mime_type(part, "text/html; charset=utf-8") ||
            curl_mime_encoder(part, "quoted-printable"))
                goto fail;

        /* The alternative becomes the message's one part. */
        part = curl_mime_addpart(mime);
        if (!part || curl_mime_subparts(part, alt))
                goto fail;
        alt = NULL;
        if (curl_mime_type(part, "multipart/alternative"))
                goto fail;
        return mime;
fail:
        curl_mime_free(alt);
        curl_mime_free(mime);
        return NULL;
}

int smtp_send(const struct smtp_config *cfg, const struct smtp_message *msg,
              char *err, size_t errlen)
{
        char url[SMTP_FIELD_MAX + 32], from[SMTP_FIELD_MAX + 3];
        char date[64], msgid[80], rnd[17];
        unsigned char raw[8];
        struct curl_slist *rcpt = NULL, *headers = NULL;
        curl_mime *mime = NULL;
        int rc = -1;

        assert(cfg && msg && err);

        /* Header fields come from users (names, addresses): refuse
         * anything that could start a header of its own. */
        if (!smtp_header_safe(msg->to) || !smtp_header_safe(msg->subject) ||
            !smtp_header_safe(cfg->from)) {
                snprintf(err, errlen, "a header field holds a line break");
                return -1;
        }
        CURL *curl = curl_easy_init();
        if (!curl) {
                snprintf(err, errlen, "libcurl could not start");
                return -1;
        }

        /* Envelope and connection. */
        snprintf(url, sizeof url, "%s://%s:%d",
                 cfg->port == 465 ? "smtps" : "smtp", cfg->host, cfg->port);
        envelope_address(cfg->from, from, sizeof from);
        rcpt = curl_slist_append(NULL, msg->to);
        curl_easy_setopt(curl, CURLOPT_URL, url);
        curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from);
        curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT,
                         (long)(cfg->timeout_s > 0 ? cfg->timeout_s : 30));
        if (cfg->starttls)
                curl_easy_setopt(curl, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);

        /* A private mail server's own CA, instead of the system's. */
        if (cfg->ca_file[0])
                curl_easy_setopt(curl, CURLOPT_CAINFO, cfg->ca_file);

        /* Credentials; with STARTTLS required, libcurl sends them only
         * once TLS is up. */
        if (cfg->user[0]) {
                curl_easy_setopt(curl, CURLOPT_USERNAME, cfg->user);
                curl_easy_setopt(curl, CURLOPT_PASSWORD, cfg->password);
        }

        /* Headers of the message itself. */
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
        randombytes_buf(raw, sizeof raw);
        sodium_bin2hex(rnd, sizeof rnd, raw, sizeof raw);
        snprintf(msgid, sizeof msgid, "<%ld.%s@frapi>", (long)now, rnd);
        if (!rcpt || !add_header(&headers, "Date: %s", date) ||
            !add_header(&headers, "From: %s", cfg->from) ||
            !add_header(&headers, "To: %s", msg->to) ||
            !add_header(&headers, "Subject: %s", msg->subject) ||
            !add_header(&headers, "Message-ID: %s", msgid) ||
            !add_header(&headers, "MIME-Version: %s", "1.0")) {
                snprintf(err, errlen, "out of memory for the headers");
                goto out;
        }
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);

        /* The bodies, then the transfer. */
        mime = build_body(curl, msg);
        if (!mime) {
                snprintf(err, errlen, "the message body could not be built");
                goto out;
        }
        curl_easy_setopt(curl, CURLOPT_MIMEPOST, mime);
        CURLcode res = curl_easy_perform(curl);
        if (res != CURLE_OK) {
                snprintf(err, errlen, "%s", curl_easy_strerror(res));
                goto out;
        }
        rc = 0;
out:
        curl_easy_cleanup(curl);
        curl_mime_free(mime);
        curl_slist_free_all(headers);
        curl_slist_free_all(rcpt);
        return rc;
}
