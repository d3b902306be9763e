/*
 * ipallow.h - IP allowlists of API keys and the client address of a
 * request.
 *
 * Every address is held in the 16-byte IPv6 form; an IPv4 address is its
 * IPv4-mapped IPv6 form (::ffff:a.b.c.d) and an IPv4 range a.b.c.d/n is
 * the range ::ffff:a.b.c.d/(96+n).  So a client that reaches a dual-stack
 * socket as ::ffff:1.2.3.4 matches 1.2.3.0/24, and ::/0 matches every
 * address.  Addresses are read with inet_pton().
 *
 * The client address is the socket's.  Forwarding headers (X-Forwarded-For,
 * Forwarded: for=) count only when the socket's peer is a trusted proxy;
 * then the right-most address of the chain that is not itself a trusted
 * proxy is the client.  X-Real-IP is never read.
 */
#ifndef FRAPI_IPALLOW_H
#define FRAPI_IPALLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Room for the text of any address, IPv6 with an IPv4 tail included. */
#define IPALLOW_ADDRSTRLEN 46

struct ipallow_addr {
        uint8_t b[16];
};

/* A CIDR range in the 16-byte form; a single address has prefix 128. */
struct ipallow_range {
        struct ipallow_addr addr; /* host bits are zero */
        uint8_t prefix;           /* 0..128 */
};

/* A parsed list; an empty list allows every address. */
struct ipallow_list {
        size_t count;
        struct ipallow_range *ranges; /* owned */
};

/*
 * Parses one address: dotted IPv4 ("1.2.3.4") or IPv6 ("2001:db8::1",
 * "::ffff:1.2.3.4").  No brackets, port, zone or white space.  Returns 0,
 * or -1 when s is not an address.
 */
int ipallow_parse_addr(const char *s, struct ipallow_addr *out);

/*
 * Parses one allowlist entry: an address or a CIDR range ("10.0.0.0/8",
 * "2001:db8::/32").  On error returns -1 and writes into err a sentence
 * that names the entry and says what is wrong (bad address, prefix out of
 * range, host bits set).
 */
int ipallow_parse_range(const char *s, struct ipallow_range *out, char *err,
                        size_t errlen);

/*
 * Parses n entries into *out (which the caller releases with
 * ipallow_list_free()).  Stops at the first bad entry: returns -1 with the
 * message of ipallow_parse_range() in err and *out empty.  Returns -2 when
 * out of memory.
 */
int ipallow_list_parse(const char *const *entries, size_t n,
                       struct ipallow_list *out, char *err, size_t errlen);

/*
 * The same for a comma-separated string such as the setting
 * FRAPI_TRUSTED_PROXIES ("10.0.0.0/8, ::1"); white space around entries is
 * ignored, empty entries are errors, an empty or NULL string is an empty
 * list.
 */
int ipallow_list_parse_csv(const char *csv, struct ipallow_list *out, char *err,
                           size_t errlen);

/* Releases the ranges of list and empties it; safe on an empty list. */
void ipallow_list_free(struct ipallow_list *list);

/* Whether addr lies in one of the ranges of list (not whether the list
 * allows it: see ipallow_list_allows). */
bool ipallow_list_contains(const struct ipallow_list *list,
                           const struct ipallow_addr *addr);

/* Whether list lets addr in: true for an empty list. */
bool ipallow_list_allows(const struct ipallow_list *list,
                         const struct ipallow_addr *addr);

/* Converts a socket address (AF_INET or AF_INET6); -1 for other families. */
int ipallow_from_sockaddr(const struct sockaddr *sa, struct ipallow_addr *out);

/* Writes addr as text into buf; IPv4-mapped addresses as dotted IPv4. */
void ipallow_format(const struct ipallow_addr *addr,
                    char buf[IPALLOW_ADDRSTRLEN]);

/* How the client address of a request was found. */
enum ipallow_source {
        IPALLOW_FROM_SOCKET = 0, /* the peer is no trusted proxy */
        IPALLOW_FROM_HEADER,     /* resolved through a trusted proxy chain */
        IPALLOW_UNKNOWN,         /* a trusted proxy forwarded an address we
                                    cannot read, or the two headers disagree */
};

/*
 * Finds the client address of a request that came from peer.  xff and
 * forwarded are the values of X-Forwarded-For and Forwarded (several
 * header lines joined with ","), or NULL.  When peer is in trusted, the
 * chain of addresses in the header followed by peer is walked from the
 * right, trusted proxies are skipped, and the first other address is the
 * client; if every address is a trusted proxy, the left-most one is.
 * When both headers are present they must name the same client.
 *
 * *out is always set (to peer when the answer is IPALLOW_FROM_SOCKET or
 * IPALLOW_UNKNOWN).  An allowlist must refuse IPALLOW_UNKNOWN: the real
 * client cannot be known.
 */
enum ipallow_source ipallow_client(const struct ipallow_addr *peer,
                                   const char *xff, const char *forwarded,
                                   const struct ipallow_list *trusted,
                                   struct ipallow_addr *out);

#endif
