/*
 * fuzz_ipallow.c - allowlist entries and forwarding headers are untrusted
 * text: feed arbitrary bytes to every parser of ipallow.
 *
 * The input is cut at its first two NUL bytes into an allowlist (comma
 * separated), an X-Forwarded-For value and a Forwarded value.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/ipallow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        /* A NUL-terminated copy, split into three strings. */
        char *buf = malloc(size + 3);
        if (!buf)
                return 0;
        memcpy(buf, data, size);
        memset(buf + size, 0, 3);
        char *list_text = buf;
        char *xff = list_text + strlen(list_text) + 1;
        char *fwd = xff + strlen(xff) + 1; /* at most buf + size + 2 */

        /* Every entry parser, then the resolution with whatever parsed. */
        char err[160];
        struct ipallow_list list;
        struct ipallow_range r;
        struct ipallow_addr a;
        ipallow_parse_range(list_text, &r, err, sizeof err);
        ipallow_parse_addr(xff, &a);
        if (ipallow_list_parse_csv(list_text, &list, err, sizeof err) != 0) {
                list.count = 0;
                list.ranges = NULL;
        }
        struct ipallow_addr peer = {{0}}, out;
        peer.b[15] = 1; /* ::1 */
        ipallow_client(&peer, xff, fwd, &list, &out);
        if (list.count > 0) {
                peer = list.ranges[0].addr;
                ipallow_client(&peer, xff, fwd, &list, &out);
                ipallow_client(&peer, NULL, fwd, &list, &out);
                ipallow_client(&peer, xff, NULL, &list, &out);
        }
        char text[IPALLOW_ADDRSTRLEN];
        ipallow_format(&out, text);
        ipallow_list_free(&list);
        free(buf);
        return 0;
}
