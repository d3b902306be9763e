/*
 * ipallow.c - addresses and CIDR ranges through inet_pton(), matching in
 * the 16-byte form, and the client address behind trusted proxies.
 */
#include "auth/ipallow.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest text we hand to inet_pton(); longer is never an address. */
#define MAX_TEXT 64
/* Hops of a forwarding header kept, counted from the right. */
#define MAX_HOPS 32

static const uint8_t v4_mapped_prefix[12] = {0, 0, 0, 0, 0,    0,
                                             0, 0, 0, 0, 0xff, 0xff};

/* Parses exactly len bytes at s as an address. */
static int parse_addr_n(const char *s, size_t len, struct ipallow_addr *out)
{
        char buf[MAX_TEXT];
        if (len == 0 || len >= sizeof buf)
                return -1;
        memcpy(buf, s, len);
        buf[len] = '\0';

        /* inet_pton() wants the family; a colon means IPv6. */
        if (memchr(buf, ':', len)) {
                struct in6_addr a6;
                if (inet_pton(AF_INET6, buf, &a6) != 1)
                        return -1;
                memcpy(out->b, &a6, 16);
                return 0;
        }
        struct in_addr a4;
        if (inet_pton(AF_INET, buf, &a4) != 1)
                return -1;
        memcpy(out->b, v4_mapped_prefix, 12);
        memcpy(out->b + 12, &a4, 4);
        return 0;
}

int ipallow_parse_addr(const char *s, struct ipallow_addr *out)
{
        assert(s && out);
        return parse_addr_n(s, strlen(s), out);
}

/* Whether addr is an IPv4-mapped address. */
static bool is_mapped(const struct ipallow_addr *addr)
{
        return memcmp(addr->b, v4_mapped_prefix, 12) == 0;
}

/* Whether the first `prefix` bits of a and b agree. */
static bool same_prefix(const struct ipallow_addr *a,
                        const struct ipallow_addr *b, unsigned prefix)
{
        unsigned whole = prefix / 8, rest = prefix % 8;
        if (memcmp(a->b, b->b, whole) != 0)
                return false;
        if (rest == 0)
                return true;
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        return ((a->b[whole] ^ b->b[whole]) & mask) == 0;
}

/* Copies an entry into a message: at most 48 bytes, anything unprintable
 * shown as '?', so that a hostile entry cannot forge log lines. */
static void quote_entry(const char *s, char *buf, size_t len)
{
        assert(len >= 52);
        size_t i = 0;
        for (; s[i] && i < 48; i++)
                buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
        if (s[i]) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
}

/* Writes `"entry" <why>` into err and returns -1. */
static int entry_error(const char *s, const char *why, char *err, size_t errlen)
{
        char shown[64];
        quote_entry(s, shown, sizeof shown);
        if (err && errlen)
                snprintf(err, errlen, "\"%s\" %s", shown, why);
        return -1;
}

/* Reads a prefix length: decimal digits, no sign, no leading zero. */
static int parse_prefix(const char *s, unsigned max, unsigned *out)
{
        size_t len = strlen(s);
        if (len == 0 || len > 3 || (len > 1 && s[0] == '0'))
                return -1;
        unsigned v = 0;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                v = v * 10 + (unsigned)(s[i] - '0');
        }
        if (v > max)
                return -1;
        *out = v;
        return 0;
}

int ipallow_parse_range(const char *s, struct ipallow_range *out, char *err,
                        size_t errlen)
{
        assert(s && out);
        if (*s == '\0')
                return entry_error(s, "is empty, not an IP address or range",
                                   err, errlen);

        /* The address part, before an optional "/prefix". */
        const char *slash = strchr(s, '/');
        size_t alen = slash ? (size_t)(slash - s) : strlen(s);
        if (parse_addr_n(s, alen, &out->addr) != 0)
                return entry_error(s,
                                   "is not an IPv4 or IPv6 address or CIDR "
                                   "range",
                                   err, errlen);
        bool v4 = memchr(s, ':', alen) == NULL;

        /* The prefix counts bits of the written family. */
        unsigned max = v4 ? 32 : 128, prefix = max;
        if (slash && parse_prefix(slash + 1, max, &prefix) != 0)
                return entry_error(s,
                                   v4 ? "has a bad prefix length: an IPv4 "
                                        "range takes /0 to /32"
                                      : "has a bad prefix length: an IPv6 "
                                        "range takes /0 to /128",
                                   err, errlen);
        out->prefix = (uint8_t)(v4 ? prefix + 96 : prefix);

        /* Host bits set usually mean a typing mistake ("10.0.0.1/8"): say
         * so rather than guess which range was meant. */
        struct ipallow_addr masked = {{0}};
        for (unsigned bit = 0; bit < out->prefix; bit++)
                masked.b[bit / 8] |= out->addr.b[bit / 8] & (0x80 >> (bit % 8));
        if (memcmp(&masked, &out->addr, sizeof masked) != 0)
                return entry_error(s,
                                   "has bits set after its prefix length; "
                                   "write the first address of the range",
                                   err, errlen);
        return 0;
}

int ipallow_list_parse(const char *const *entries, size_t n,
                       struct ipallow_list *out, char *err, size_t errlen)
{
        assert(out && (entries || n == 0));
        out->count = 0;
        out->ranges = NULL;
        if (n == 0)
                return 0;

        struct ipallow_range *r = calloc(n, sizeof *r);
        if (!r)
                return -2;
        for (size_t i = 0; i < n; i++) {
                if (ipallow_parse_range(entries[i], &r[i], err, errlen) != 0) {
                        free(r);
                        return -1;
                }
        }
        out->count = n;
        out->ranges = r;
        return 0;
}

/* Whether c is white space around list items (RFC 7230 OWS). */
static bool is_ows(char c)
{
        return c == ' ' || c == '\t';
}

int ipallow_list_parse_csv(const char *csv, struct ipallow_list *out, char *err,
                           size_t errlen)
{
        assert(out);
        out->count = 0;
        out->ranges = NULL;
        if (!csv)
                return 0;

        /* Skip a string of nothing but white space: an empty list. */
        const char *p = csv;
        while (is_ows(*p))
                p++;
        if (*p == '\0')
                return 0;

        /* Copy every item trimmed, then parse the copies. */
        size_t n = 1;
        for (const char *q = csv; *q; q++)
                n += *q == ',';
        char *copy = strdup(csv);
        char **items = calloc(n, sizeof *items);
        int rc = -2;
        if (!copy || !items)
                goto done;
        size_t i = 0;
        for (char *tok = copy, *next; tok; tok = next, i++) {
                next = strchr(tok, ',');
                if (next)
                        *next++ = '\0';
                while (is_ows(*tok))
                        tok++;
                size_t len = strlen(tok);
                while (len && is_ows(tok[len - 1]))
                        tok[--len] = '\0';
                items[i] = tok;
        }
        assert(i == n);
        rc = ipallow_list_parse((const char *const *)items, n, out, err,
                                errlen);

done:
        free(items);
        free(copy);
        return rc;
}

void ipallow_list_free(struct ipallow_list *list)
{
        if (!list)
                return;
        free(list->ranges);
        list->ranges = NULL;
        list->count = 0;
}

bool ipallow_list_contains(const struct ipallow_list *list,
                           const struct ipallow_addr *addr)
{
        for (size_t i = 0; list && i < list->count; i++)
                if (same_prefix(&list->ranges[i].addr, addr,
                                list->ranges[i].prefix))
                        return true;
        return false;
}

bool ipallow_list_allows(const struct ipallow_list *list,
                         const struct ipallow_addr *addr)
{
        if (!list || list->count == 0)
                return true;
        return ipallow_list_contains(list, addr);
}

int ipallow_from_sockaddr(const struct sockaddr *sa, struct ipallow_addr *out)
{
        if (!sa)
                return -1;
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
                memcpy(out->b, v4_mapped_prefix, 12);
                memcpy(out->b + 12, &in->sin_addr, 4);
                return 0;
        }
        if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 =
                        (const struct sockaddr_in6 *)sa;
                memcpy(out->b, &in6->sin6_addr, 16);
                return 0;
        }
        return -1;
}

void ipallow_format(const struct ipallow_addr *addr,
                    char buf[IPALLOW_ADDRSTRLEN])
{
        if (is_mapped(addr))
                inet_ntop(AF_INET, addr->b + 12, buf, IPALLOW_ADDRSTRLEN);
        else
                inet_ntop(AF_INET6, addr->b, buf, IPALLOW_ADDRSTRLEN);
}

/*
 * Forwarding headers.  A chain keeps the right-most MAX_HOPS hops; a hop
 * whose address cannot be read is kept as unreadable, because a trusted
 * proxy vouched for it and we must not skip past it.
 */
struct hop {
        bool ok;
        struct ipallow_addr addr;
};

struct chain {
        struct hop hops[MAX_HOPS]; /* a ring: the last `count` hops */
        size_t total;              /* hops seen, including dropped ones */
};

static void chain_push(struct chain *c, bool ok,
                       const struct ipallow_addr *addr)
{
        struct hop *h = &c->hops[c->total % MAX_HOPS];
        h->ok = ok;
        if (ok)
                h->addr = *addr;
        c->total++;
}

/* The i-th hop counting from the right (0 = right-most). */
static const struct hop *chain_from_right(const struct chain *c, size_t i)
{
        return &c->hops[(c->total - 1 - i) % MAX_HOPS];
}

/*
 * Reads one node of a chain: "1.2.3.4", "1.2.3.4:80", "2001:db8::1",
 * "[2001:db8::1]" or "[2001:db8::1]:80", white space around it ignored.
 */
static int parse_node(const char *s, size_t len, struct ipallow_addr *out)
{
        while (len && is_ows(*s))
                s++, len--;
        while (len && is_ows(s[len - 1]))
                len--;
        if (len == 0)
                return -1;

        /* Brackets hold an IPv6 address; a port may follow them. */
        if (s[0] == '[') {
                const char *end = memchr(s, ']', len);
                if (!end)
                        return -1;
                size_t after = len - (size_t)(end - s) - 1;
                if (after && end[1] != ':')
                        return -1;
                size_t inner = (size_t)(end - s) - 1;
                if (!memchr(s + 1, ':', inner))
                        return -1;
                return parse_addr_n(s + 1, inner, out);
        }

        /* One colon can only be an IPv4 address with a port. */
        const char *colon = memchr(s, ':', len);
        if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) {
                if (memchr(s, '.', (size_t)(colon - s)) == NULL)
                        return -1;
                return parse_addr_n(s, (size_t)(colon - s), out);
        }
        return parse_addr_n(s, len, out);
}

/* Splits X-Forwarded-For at commas into c. */
static void parse_xff(const char *v, struct chain *c)
{
        while (1) {
                const char *comma = strchr(v, ',');
                size_t len = comma ? (size_t)(comma - v) : strlen(v);
                struct ipallow_addr a;
                bool ok = parse_node(v, len, &a) == 0;
                chain_push(c, ok, &a);
                if (!comma)
                        break;
                v = comma + 1;
        }
}

/* The end of a quoted-string starting at the quote s, or NULL. */
static const char *skip_quoted(const char *s)
{
        for (s++; *s; s++) {
                if (*s == '\\' && s[1])
                        s++;
                else if (*s == '"')
                        return s + 1;
        }
        return NULL;
}

/*
 * Reads the for= value of one Forwarded element (text [s, end)) into a;
 * returns -1 when there is none or it is no address ("unknown", an
 * obfuscated "_name", garbage).
 */
static int forwarded_for(const char *s, const char *end, struct ipallow_addr *a)
{
        int rc = -1;
        while (s < end) {
                /* One pair: name "=" (token | quoted-string). */
                while (s < end && (is_ows(*s) || *s == ';'))
                        s++;
                const char *eq = memchr(s, '=', (size_t)(end - s));
                if (!eq)
                        return -1;
                bool is_for = eq - s == 3 && strncasecmp(s, "for", 3) == 0;
                const char *v = eq + 1, *vend;
                char buf[MAX_TEXT];
                size_t vlen = 0;
                if (v < end && *v == '"') {
                        vend = skip_quoted(v);
                        if (!vend || vend > end)
                                return -1;
                        /* Unescape into buf; addresses have no escapes, but
                         * the grammar allows them. */
                        for (const char *q = v + 1; q < vend - 1; q++) {
                                if (*q == '\\')
                                        q++;
                                if (vlen + 1 >= sizeof buf)
                                        return -1;
                                buf[vlen++] = *q;
                        }
                } else {
                        vend = v;
                        while (vend < end && *vend != ';' && !is_ows(*vend))
                                vend++;
                        vlen = (size_t)(vend - v);
                        if (vlen >= sizeof buf)
                                return -1;
                        memcpy(buf, v, vlen);
                }
                if (is_for)
                        rc = parse_node(buf, vlen, a);
                s = vend;
        }
        return rc;
}

/* Splits Forwarded at commas outside quoted strings into c. */
static void parse_forwarded(const char *v, struct chain *c)
{
        const char *start = v, *p = v;
        while (1) {
                if (*p == '"') {
                        const char *q = skip_quoted(p);
                        if (!q) {
                                /* An unclosed quote: the rest is one bad hop.
                                 */
                                chain_push(c, false, NULL);
                                return;
                        }
                        p = q;
                        continue;
                }
                if (*p == ',' || *p == '\0') {
                        struct ipallow_addr a;
                        bool ok = forwarded_for(start, p, &a) == 0;
                        chain_push(c, ok, &a);
                        if (*p == '\0')
                                return;
                        start = ++p;
                        continue;
                }
                p++;
        }
}

/* Whether a header value holds anything but white space. */
static bool present(const char *v)
{
        if (!v)
                return false;
        while (is_ows(*v))
                v++;
        return *v != '\0';
}

/* Walks chain c from the right, skipping trusted proxies. */
static enum ipallow_source resolve(const struct chain *c,
                                   const struct ipallow_list *trusted,
                                   struct ipallow_addr *out)
{
        size_t kept = c->total < MAX_HOPS ? c->total : MAX_HOPS;
        for (size_t i = 0; i < kept; i++) {
                const struct hop *h = chain_from_right(c, i);
                if (!h->ok)
                        return IPALLOW_UNKNOWN;
                if (!ipallow_list_contains(trusted, &h->addr)) {
                        *out = h->addr;
                        return IPALLOW_FROM_HEADER;
                }
        }

        /* Only trusted proxies: the left-most is the client, unless hops
         * were dropped and we cannot see the left end. */
        if (c->total > MAX_HOPS || kept == 0)
                return IPALLOW_UNKNOWN;
        *out = chain_from_right(c, kept - 1)->addr;
        return IPALLOW_FROM_HEADER;
}

enum ipallow_source ipallow_client(const struct ipallow_addr *peer,
                                   const char *xff, const char *forwarded,
                                   const struct ipallow_list *trusted,
                                   struct ipallow_addr *out)
{
        assert(peer && out);
        *out = *peer;

        /* Headers from anyone but a trusted proxy are the client's own
         * claims: ignore them. */
        if (!ipallow_list_contains(trusted, peer))
                return IPALLOW_FROM_SOCKET;
        bool has_xff = present(xff), has_fwd = present(forwarded);
        if (!has_xff && !has_fwd)
                return IPALLOW_FROM_SOCKET;

        /* Resolve each header present; the chains are large, keep them off
         * the small stacks of server threads. */
        struct chain *c = calloc(1, sizeof *c);
        if (!c)
                return IPALLOW_UNKNOWN;
        struct ipallow_addr a = *peer, b = *peer;
        enum ipallow_source sa = IPALLOW_FROM_HEADER, sb = IPALLOW_FROM_HEADER;
        if (has_xff) {
                parse_xff(xff, c);
                sa = resolve(c, trusted, &a);
        }
        if (has_fwd) {
                memset(c, 0, sizeof *c);
                parse_forwarded(forwarded, c);
                sb = resolve(c, trusted, &b);
        }
        free(c);

        /* A proxy rewrites one header; a client can forge the other.  When
         * both are present they must agree, or nobody can tell who asks. */
        if (sa == IPALLOW_UNKNOWN || sb == IPALLOW_UNKNOWN)
                return IPALLOW_UNKNOWN;
        if (has_xff && has_fwd && memcmp(&a, &b, sizeof a) != 0)
                return IPALLOW_UNKNOWN;
        *out = has_xff ? a : b;
        return IPALLOW_FROM_HEADER;
}
