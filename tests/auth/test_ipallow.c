/*
 * test_ipallow.c - allowlist entries, matching (IPv6 ranges, IPv4-mapped
 * addresses) and the client address behind chains of proxies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "auth/ipallow.h"

static struct ipallow_addr addr(const char *s)
{
        struct ipallow_addr a;
        assert_int_equal(ipallow_parse_addr(s, &a), 0);
        return a;
}

static struct ipallow_list list(const char *csv)
{
        struct ipallow_list l;
        char err[160];
        assert_int_equal(ipallow_list_parse_csv(csv, &l, err, sizeof err), 0);
        return l;
}

/* Writes the text of a for comparison. */
static const char *text(struct ipallow_addr a)
{
        static char buf[IPALLOW_ADDRSTRLEN];
        ipallow_format(&a, buf);
        return buf;
}

/* Malformed entries are refused with a message naming them. */
static void test_bad_entries(void **state)
{
        (void)state;
        static const struct {
                const char *entry;
                const char *says;
        } bad[] = {
                {"10.0.0.0/33", "/0 to /32"},
                {"1.2.3", "not an IPv4 or IPv6"},
                {"::g", "not an IPv4 or IPv6"},
                {"", "is empty"},
                {"2001:db8::/129", "/0 to /128"},
                {"10.0.0.0/", "bad prefix"},
                {"10.0.0.0/-1", "bad prefix"},
                {"10.0.0.0/08", "bad prefix"},
                {"10.0.0.0/8/8", "bad prefix"},
                {"10.0.0.1/8", "bits set"},
                {"2001:db8::1/32", "bits set"},
                {" 10.0.0.1", "not an IPv4"},
                {"010.0.0.1", "not an IPv4"},
                {"256.1.1.1", "not an IPv4"},
                {"fe80::1%eth0", "not an IPv4"},
                {"[::1]", "not an IPv4"},
                {"example.com", "not an IPv4"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                struct ipallow_range r;
                char err[160] = "";
                assert_int_equal(
                        ipallow_parse_range(bad[i].entry, &r, err, sizeof err),
                        -1);
                char quoted[64];
                snprintf(quoted, sizeof quoted, "\"%s\"", bad[i].entry);
                assert_non_null(strstr(err, quoted));
                assert_non_null(strstr(err, bad[i].says));
        }

        /* A list stops at its first bad entry and stays empty. */
        struct ipallow_list l;
        char err[160];
        const char *entries[] = {"10.0.0.0/8", "1.2.3.4/40", "::1"};
        assert_int_equal(ipallow_list_parse(entries, 3, &l, err, sizeof err),
                         -1);
        assert_non_null(strstr(err, "\"1.2.3.4/40\""));
        assert_int_equal(l.count, 0);
        assert_int_equal(
                ipallow_list_parse_csv("10.0.0.0/8,,::1", &l, err, sizeof err),
                -1);

        /* A hostile entry cannot put control characters into a message. */
        assert_int_equal(
                ipallow_list_parse_csv("1.2.3.4\n/8", &l, err, sizeof err), -1);
        assert_null(strchr(err, '\n'));
}

/* Good entries, IPv4 and IPv6, match what they should. */
static void test_match(void **state)
{
        (void)state;
        struct ipallow_list l =
                list("203.0.113.0/24, 198.51.100.42 ,2001:db8:abcd::/48");
        assert_int_equal(l.count, 3);
        struct ipallow_addr a = addr("203.0.113.7");
        assert_true(ipallow_list_allows(&l, &a));
        a = addr("203.0.114.0");
        assert_false(ipallow_list_allows(&l, &a));
        a = addr("198.51.100.42");
        assert_true(ipallow_list_allows(&l, &a));
        a = addr("198.51.100.43");
        assert_false(ipallow_list_allows(&l, &a));
        a = addr("2001:db8:abcd:ffff::1");
        assert_true(ipallow_list_allows(&l, &a));
        a = addr("2001:db8:abce::1");
        assert_false(ipallow_list_allows(&l, &a));

        /* IPv4-mapped IPv6 matches its IPv4 range, both ways. */
        a = addr("::ffff:203.0.113.200");
        assert_true(ipallow_list_allows(&l, &a));
        assert_string_equal(text(a), "203.0.113.200");
        struct ipallow_list m = list("::ffff:1.2.3.0/120");
        a = addr("1.2.3.4");
        assert_true(ipallow_list_allows(&m, &a));
        a = addr("1.2.4.4");
        assert_false(ipallow_list_allows(&m, &a));

        /* Odd prefix lengths cut inside a byte. */
        struct ipallow_list o = list("10.0.0.0/9,2001:db8::/33");
        a = addr("10.127.255.255");
        assert_true(ipallow_list_allows(&o, &a));
        a = addr("10.128.0.0");
        assert_false(ipallow_list_allows(&o, &a));
        a = addr("2001:db8:7fff::1");
        assert_true(ipallow_list_allows(&o, &a));
        a = addr("2001:db8:8000::1");
        assert_false(ipallow_list_allows(&o, &a));

        /* /0 ranges and the empty list. */
        struct ipallow_list all4 = list("0.0.0.0/0");
        a = addr("2001:db8::1");
        assert_false(ipallow_list_allows(&all4, &a));
        a = addr("8.8.8.8");
        assert_true(ipallow_list_allows(&all4, &a));
        struct ipallow_list none = list("  ");
        assert_int_equal(none.count, 0);
        assert_true(ipallow_list_allows(&none, &a));
        assert_false(ipallow_list_contains(&none, &a));

        ipallow_list_free(&l);
        ipallow_list_free(&m);
        ipallow_list_free(&o);
        ipallow_list_free(&all4);
        ipallow_list_free(&none);
}

/* Resolves the client of a request from peer with the given headers. */
static enum ipallow_source client(const char *peer, const char *xff,
                                  const char *fwd, const char *trusted,
                                  const char **got)
{
        struct ipallow_list t = list(trusted);
        struct ipallow_addr p = addr(peer), out;
        enum ipallow_source src = ipallow_client(&p, xff, fwd, &t, &out);
        *got = text(out);
        ipallow_list_free(&t);
        return src;
}

/* Case S3: headers from an untrusted peer are ignored, X-Real-IP always. */
static void test_untrusted_peer(void **state)
{
        (void)state;
        const char *got;
        assert_int_equal(client("198.51.100.9", "203.0.113.5",
                                "for=203.0.113.5", "10.0.0.0/8", &got),
                         IPALLOW_FROM_SOCKET);
        assert_string_equal(got, "198.51.100.9");
        assert_int_equal(client("198.51.100.9", "203.0.113.5", NULL, "", &got),
                         IPALLOW_FROM_SOCKET);
        assert_string_equal(got, "198.51.100.9");

        /* A trusted proxy without any header: the proxy is the client. */
        assert_int_equal(client("10.0.0.1", NULL, " ", "10.0.0.0/8", &got),
                         IPALLOW_FROM_SOCKET);
        assert_string_equal(got, "10.0.0.1");
}

/* A chain of trusted proxies: the right-most untrusted address wins, a
 * forged left part does not. */
static void test_proxy_chain(void **state)
{
        (void)state;
        const char *got;
        const char *trusted = "10.0.0.0/8, fd00::/8";
        assert_int_equal(client("10.0.0.2", "1.1.1.1, 203.0.113.5, 10.0.0.1",
                                NULL, trusted, &got),
                         IPALLOW_FROM_HEADER);
        assert_string_equal(got, "203.0.113.5");

        /* Ports, brackets and IPv6 hops. */
        assert_int_equal(client("fd00::2",
                                "[2001:db8::7]:443,10.1.1.1:8080, fd00::1",
                                NULL, trusted, &got),
                         IPALLOW_FROM_HEADER);
        assert_string_equal(got, "2001:db8::7");
        assert_int_equal(
                client("::ffff:10.0.0.2", "2001:db8::8", NULL, trusted, &got),
                IPALLOW_FROM_HEADER);
        assert_string_equal(got, "2001:db8::8");

        /* Every hop trusted: the left-most one is the client. */
        assert_int_equal(
                client("10.0.0.3", "10.9.9.9, 10.0.0.1", NULL, trusted, &got),
                IPALLOW_FROM_HEADER);
        assert_string_equal(got, "10.9.9.9");

        /* Forwarded (RFC 7239), quoted IPv6, several pairs and elements. */
        assert_int_equal(client("10.0.0.2",
                                "FOR=192.0.2.60;proto=http;by=203.0.113.43, "
                                "for=\"[2001:db8:cafe::17]:4711\"; host=x, "
                                "for=10.0.0.1",
                                NULL, trusted, &got),
                         IPALLOW_UNKNOWN);
        assert_int_equal(client("10.0.0.2", NULL,
                                "FOR=192.0.2.60;proto=http;by=203.0.113.43, "
                                "for=\"[2001:db8:cafe::17]:4711\"; host=x, "
                                "for=10.0.0.1",
                                trusted, &got),
                         IPALLOW_FROM_HEADER);
        assert_string_equal(got, "2001:db8:cafe::17");

        /* Both headers naming the same client are fine. */
        assert_int_equal(client("10.0.0.2", "198.51.100.1", "for=198.51.100.1",
                                trusted, &got),
                         IPALLOW_FROM_HEADER);
        assert_string_equal(got, "198.51.100.1");
}

/* Garbage the trusted proxies vouch for makes the client unknown; garbage
 * left of the client does not matter. */
static void test_garbage(void **state)
{
        (void)state;
        const char *got;
        const char *trusted = "10.0.0.0/8";
        static const char *const unknown_xff[] = {
                "junk",        "1.2.3.4,",      ",",
                "1.2.3",       "[::1",          "[1.2.3.4]",
                "::1:80]",     "1.2.3.4:80:90", "1.2.3.4, 10.0.0.1, bogus",
                "\"1.2.3.4\"",
        };
        for (size_t i = 0; i < sizeof unknown_xff / sizeof *unknown_xff; i++) {
                assert_int_equal(
                        client("10.0.0.2", unknown_xff[i], NULL, trusted, &got),
                        IPALLOW_UNKNOWN);
                assert_string_equal(got, "10.0.0.2");
        }
        assert_int_equal(client("10.0.0.2", "bogus, 203.0.113.9 , 10.0.0.1",
                                NULL, trusted, &got),
                         IPALLOW_FROM_HEADER);
        assert_string_equal(got, "203.0.113.9");

        static const char *const unknown_fwd[] = {
                "for=unknown",
                "for=_hidden",
                "proto=https",
                "for=\"1.2.3.4",
                "for",
                "for=1.2.3.4 x",
                "for=\"[::1]\"x",
                "for=[2001:db8::1",
                ";;;",
        };
        for (size_t i = 0; i < sizeof unknown_fwd / sizeof *unknown_fwd; i++)
                assert_int_equal(
                        client("10.0.0.2", NULL, unknown_fwd[i], trusted, &got),
                        IPALLOW_UNKNOWN);

        /* Two headers that disagree: somebody forged one. */
        assert_int_equal(client("10.0.0.2", "198.51.100.1", "for=203.0.113.1",
                                trusted, &got),
                         IPALLOW_UNKNOWN);

        /* A very long chain of trusted hops hides its left end. */
        char longxff[40 * 10 + 1] = "";
        for (int i = 0; i < 40; i++)
                strcat(longxff, i ? ",10.0.0.1" : "10.0.0.1");
        assert_int_equal(client("10.0.0.2", longxff, NULL, trusted, &got),
                         IPALLOW_UNKNOWN);
        strcat(longxff, ",192.0.2.1");
        assert_int_equal(client("10.0.0.2", longxff, NULL, trusted, &got),
                         IPALLOW_FROM_HEADER);
        assert_string_equal(got, "192.0.2.1");
}

/* Socket addresses of both families. */
static void test_sockaddr(void **state)
{
        (void)state;
        struct sockaddr_storage ss = {0};
        struct ipallow_addr a;
        ss.ss_family = AF_UNIX;
        assert_int_equal(ipallow_from_sockaddr((struct sockaddr *)&ss, &a), -1);
        assert_int_equal(ipallow_from_sockaddr(NULL, &a), -1);

        struct sockaddr_in in = {.sin_family = AF_INET};
        inet_pton(AF_INET, "192.0.2.7", &in.sin_addr);
        assert_int_equal(ipallow_from_sockaddr((struct sockaddr *)&in, &a), 0);
        assert_string_equal(text(a), "192.0.2.7");
        struct ipallow_addr mapped = addr("::ffff:192.0.2.7");
        assert_memory_equal(&a, &mapped, sizeof a);
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr);
        assert_int_equal(ipallow_from_sockaddr((struct sockaddr *)&in6, &a), 0);
        assert_string_equal(text(a), "2001:db8::5");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad_entries),
                cmocka_unit_test(test_match),
                cmocka_unit_test(test_untrusted_peer),
                cmocka_unit_test(test_proxy_chain),
                cmocka_unit_test(test_garbage),
                cmocka_unit_test(test_sockaddr),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
