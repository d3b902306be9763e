/*
 * fuzz_multipart.c - feeds arbitrary bodies through the server's body
 * path (multipart/form-data and urlencoded via MHD's post processor, JSON
 * via jansson) on a real server over a loopback socket.  A crash, a
 * sanitizer report, a hang or a 500 answer is a finding.
 *
 * The first input byte picks the Content-Type (bits 0-2: multipart with a
 * fixed boundary, multipart whose Content-Type parameters are the input's
 * first line, urlencoded, or JSON), adds a header line of the input's
 * choosing (bit 3) and sends the body chunked (bit 4).  The rest is the
 * body.
 */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static struct http_server *srv;

/* Touches every part so the fuzzer sees the bytes used. */
static void on_upload(struct http_request *req, void *userdata)
{
        size_t n;
        const struct http_part *p = http_request_parts(req, &n);
        size_t total = 0;
        for (size_t i = 0; i < n; i++) {
                total += strlen(p[i].name) + p[i].len;
                if (p[i].filename)
                        total += strlen(p[i].filename);
                if (p[i].len && p[i].data[p[i].len] != '\0')
                        abort();
        }
        json_t *body = http_request_json(req);
        http_reply_data(req, 200,
                        json_pack("{s:I,s:b}", "bytes", (json_int_t)total,
                                  "json", body != NULL));
}

static void start_server(void)
{
        struct http_config cfg;
        http_config_default(&cfg);
        cfg.listen = "127.0.0.1:0";
        cfg.threads = 1;
        cfg.access_log = "";
        cfg.max_body_bytes = 1 << 20;
        char err[256];
        srv = http_server_new(&cfg, err, sizeof err);
        if (!srv)
                abort();
        http_route(srv, "POST", "/upload", on_upload,
                   HTTP_BODY_MULTIPART | HTTP_BODY_FORM | HTTP_BODY_JSON, NULL);
        if (http_server_start(srv, err, sizeof err) != 0) {
                fprintf(stderr, "fuzz: %s\n", err);
                abort();
        }
}

/* Writes all of buf to fd. */
static void send_all(int fd, const void *buf, size_t len)
{
        const char *p = buf;
        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;
                p += n;
                len -= (size_t)n;
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (!srv)
                start_server();
        if (size < 1)
                return 0;

        /* The Content-Type from the first byte (and maybe the first line). */
        char ctype[300];
        const uint8_t *body = data + 1;
        size_t blen = size - 1;
        switch (data[0] & 7) {
        case 0:
        case 1:
        case 2:
        case 3:
                strcpy(ctype, "multipart/form-data; boundary=B");
                break;
        case 4:
        case 5: {
                const uint8_t *nl = memchr(body, '\n', blen < 250 ? blen : 250);
                size_t l = nl ? (size_t)(nl - body) : 0;
                memcpy(ctype, "multipart/form-data", 19);
                for (size_t i = 0; i < l; i++)
                        ctype[19 + i] = (body[i] == '\r' || body[i] == 0)
                                                ? ' '
                                                : (char)body[i];
                ctype[19 + l] = '\0';
                body += nl ? l + 1 : 0;
                blen -= nl ? l + 1 : 0;
                break;
        }
        case 6:
                strcpy(ctype, "application/x-www-form-urlencoded");
                break;
        default:
                strcpy(ctype, "application/json");
                break;
        }

        /* Bit 3: the next line is one more header of the fuzzer's
         * choosing (Content-Length, Transfer-Encoding, a second
         * Content-Type...).  Bit 4: the body goes in one chunk. */
        char extra[260] = "";
        if (data[0] & 8) {
                const uint8_t *nl = memchr(body, '\n', blen < 250 ? blen : 250);
                size_t l = nl ? (size_t)(nl - body) : 0;
                for (size_t i = 0; i < l; i++)
                        extra[i] = (body[i] == '\r' || body[i] == 0)
                                           ? ' '
                                           : (char)body[i];
                if (l)
                        memcpy(extra + l, "\r\n", 3);
                body += nl ? l + 1 : 0;
                blen -= nl ? l + 1 : 0;
        }
        bool chunked = data[0] & 16;

        /* One request per connection, answered before the socket closes. */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons(http_server_port(srv)),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
                abort();
        char head[1024];
        char length[64];
        if (chunked)
                snprintf(length, sizeof length,
                         "Transfer-Encoding: chunked\r\n\r\n%zx\r\n", blen);
        else
                snprintf(length, sizeof length, "Content-Length: %zu\r\n\r\n",
                         blen);
        int hl = snprintf(head, sizeof head,
                          "POST /upload HTTP/1.1\r\nHost: x\r\n"
                          "Connection: close\r\nContent-Type: %s\r\n%s%s",
                          ctype, extra, length);
        send_all(fd, head, (size_t)hl);
        send_all(fd, body, blen);
        if (chunked)
                send_all(fd, blen ? "\r\n0\r\n\r\n" : "\r\n", blen ? 7 : 2);

        /* Read the answer; no answer at all or a 500 is a finding. */
        char resp[4096];
        size_t got = 0;
        ssize_t n;
        while (got < sizeof resp - 1) {
                n = recv(fd, resp + got, sizeof resp - 1 - got, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                got += (size_t)n;
        }
        resp[got] = '\0';
        close(fd);
        if (got < 12 || strncmp(resp, "HTTP/1.1 ", 9) != 0) {
                fprintf(stderr, "fuzz: no answer (%zu bytes, %s)\n", got,
                        strerror(errno));
                abort();
        }
        if (strncmp(resp + 9, "500", 3) == 0) {
                fprintf(stderr, "fuzz: 500 answer\n%s\n", resp);
                abort();
        }
        return 0;
}
