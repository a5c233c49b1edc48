/*
 * test_address.c - unit tests of RFC 5321/6531 path parsing: a table of good
 * and bad paths with the expected status, parts, flags and consumed length,
 * then length limits, bare mailboxes, the canonical store key and domains.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "address.h"

#define N MC_ADDR_ALLOW_NULL
#define U MC_ADDR_ALLOW_UTF8
#define B MC_ADDR_ALLOW_BARE

/* Expected properties of a parsed address. */
#define PQ 0x1  /* is_quoted */
#define PL 0x2  /* is_literal */
#define PX 0x4  /* is_utf8 */
#define PZ 0x8  /* is_null */

#define OK MC_ADDR_OK
#define SYN MC_ADDR_SYNTAX
#define LONG MC_ADDR_TOO_LONG
#define NEED MC_ADDR_NEED_UTF8
#define NUL MC_ADDR_NULL_NOT_ALLOWED
#define BAD MC_ADDR_BAD_UTF8

struct pcase {
	const char *in;
	unsigned flags;
	enum mc_addr_status want;
	const char *local, *domain;  /* expected parts when OK */
	unsigned props;              /* PQ|PL|PX|PZ when OK */
	size_t consumed;             /* 0: the whole input */
};

static const struct pcase cases[] = {
	/* plain paths */
	{ "<alice@example.org>", 0, OK, "alice", "example.org", 0, 0 },
	{ "<Alice.B+tag@Mail.Example.ORG>", 0, OK, "Alice.B+tag", "Mail.Example.ORG", 0, 0 },
	{ "<a!#$%&'*+-/=?^_`{|}~z@x.example>", 0, OK, "a!#$%&'*+-/=?^_`{|}~z", "x.example", 0, 0 },
	{ "<a.b.c@example.org>", 0, OK, "a.b.c", "example.org", 0, 0 },
	{ "<a@b>", 0, OK, "a", "b", 0, 0 },
	{ "<a@xn--bcher-kva.example>", 0, OK, "a", "xn--bcher-kva.example", 0, 0 },
	{ "<a@1.2.3.example>", 0, OK, "a", "1.2.3.example", 0, 0 },
	{ "<a@123>", 0, OK, "a", "123", 0, 0 },
	{ "<a@a-b--c.example>", 0, OK, "a", "a-b--c.example", 0, 0 },
	{ "<alice%relay@example.org>", 0, OK, "alice%relay", "example.org", 0, 0 },
	{ "<alice@example.org>", N | U, OK, "alice", "example.org", 0, 0 },

	/* ESMTP parameters follow: consumed stops right after ">" */
	{ "<a@b.example> SIZE=100 BODY=8BITMIME", 0, OK, "a", "b.example", 0, 13 },
	{ "<a@b.c> SIZE=100", 0, OK, "a", "b.c", 0, 7 },
	{ "<> SIZE=5", N, OK, "", "", PZ, 2 },
	{ "<Postmaster> NOTIFY=NEVER", 0, OK, "Postmaster", "", 0, 12 },
	{ "<@r.example:a@b.c> X=1", 0, OK, "a", "b.c", 0, 18 },
	{ "<\"a> b\"@c.d> P=1", 0, OK, "\"a> b\"", "c.d", PQ, 12 },
	{ "<a@[192.0.2.1]> SIZE=1", 0, OK, "a", "[192.0.2.1]", PL, 15 },
	{ "<a@b.c>x", 0, OK, "a", "b.c", 0, 7 },

	/* null reverse-path */
	{ "<>", N, OK, "", "", PZ, 0 },
	{ "<>", N | U, OK, "", "", PZ, 0 },
	{ "<>", 0, NUL, NULL, NULL, 0, 0 },
	{ "<>", U | B, NUL, NULL, NULL, 0, 0 },
	{ "< >", N, SYN, NULL, NULL, 0, 0 },
	{ "<<>>", N, SYN, NULL, NULL, 0, 0 },

	/* postmaster without domain (RFC 5321 4.1.1.3) */
	{ "<Postmaster>", 0, OK, "Postmaster", "", 0, 0 },
	{ "<postmaster>", 0, OK, "postmaster", "", 0, 0 },
	{ "<POSTMASTER>", 0, OK, "POSTMASTER", "", 0, 0 },
	{ "<postmaster@example.org>", 0, OK, "postmaster", "example.org", 0, 0 },
	{ "<webmaster>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<postmasters>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"postmaster\">", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@r1.example:postmaster>", 0, SYN, NULL, NULL, 0, 0 },
	{ "postmaster", B, SYN, NULL, NULL, 0, 0 },

	/* source routes: accepted, dropped */
	{ "<@relay.example:a@b.example>", 0, OK, "a", "b.example", 0, 0 },
	{ "<@r1.example,@r2.example:a@b.example>", 0, OK, "a", "b.example", 0, 0 },
	{ "<@r\xc3\xb6.example:a@b.example>", U, OK, "a", "b.example", PX, 0 },
	{ "<@r\xc3\xb6.example:a@b.example>", 0, NEED, NULL, NULL, 0, 0 },
	{ "<@r1.example,r2.example:a@b.example>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@:a@b.example>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@r1.example a@b.example>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@r1.example:>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@r1.example,:a@b.example>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@r1.:a@b.example>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@[192.0.2.1]:a@b.example>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@r1.example:@r2.example:a@b.example>", 0, SYN, NULL, NULL, 0, 0 },

	/* quoted local parts, kept verbatim */
	{ "<\"john doe\"@example.org>", 0, OK, "\"john doe\"", "example.org", PQ, 0 },
	{ "<\"a\\\"b\"@example.org>", 0, OK, "\"a\\\"b\"", "example.org", PQ, 0 },
	{ "<\"a\\\\b\"@example.org>", 0, OK, "\"a\\\\b\"", "example.org", PQ, 0 },
	{ "<\"\\\"\"@example.org>", 0, OK, "\"\\\"\"", "example.org", PQ, 0 },
	{ "<\"a@b\"@example.org>", 0, OK, "\"a@b\"", "example.org", PQ, 0 },
	{ "<\"a.\"@example.org>", 0, OK, "\"a.\"", "example.org", PQ, 0 },
	{ "<\"<>\"@x.org>", 0, OK, "\"<>\"", "x.org", PQ, 0 },
	{ "<\"\\ \"@x.org>", 0, OK, "\"\\ \"", "x.org", PQ, 0 },
	{ "<\"~\\~\"@x.org>", 0, OK, "\"~\\~\"", "x.org", PQ, 0 },
	{ "<\"\"@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"unterminated@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"a\\\"@x.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"a\\", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"tab\there\"@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"cr\rlf\n\"@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"bad\\\x01\"@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"bad\\\t\"@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"del\x7f\"@x.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"a\"b@x.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a\"b\"@x.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"a\".b@x.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<\"a\"@>", 0, SYN, NULL, NULL, 0, 0 },

	/* address literals */
	{ "<a@[192.0.2.1]>", 0, OK, "a", "[192.0.2.1]", PL, 0 },
	{ "<a@[0.0.0.0]>", 0, OK, "a", "[0.0.0.0]", PL, 0 },
	{ "<a@[255.255.255.255]>", 0, OK, "a", "[255.255.255.255]", PL, 0 },
	{ "<a@[IPv6:2001:db8::1]>", 0, OK, "a", "[IPv6:2001:db8::1]", PL, 0 },
	{ "<a@[ipv6:::1]>", 0, OK, "a", "[ipv6:::1]", PL, 0 },
	{ "<a@[IPv6:::]>", 0, OK, "a", "[IPv6:::]", PL, 0 },
	{ "<a@[IPv6:1:2:3:4:5:6:7:8]>", 0, OK, "a", "[IPv6:1:2:3:4:5:6:7:8]", PL, 0 },
	{ "<a@[IPv6:2001:db8::192.0.2.1]>", 0, OK, "a", "[IPv6:2001:db8::192.0.2.1]", PL, 0 },
	{ "<\"x y\"@[192.0.2.1]>", 0, OK, "\"x y\"", "[192.0.2.1]", PQ | PL, 0 },
	{ "<a@[x-tag:opaque]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv4:192.0.2.1]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2.256]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[1.2.3.4.5]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[01.2.3.4]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[-1.2.3.4]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[2001:db8::1]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv6:2001:db8:::1]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv6:1:2:3:4:5:6:7:8:9]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv6:gggg::1]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv6:192.0.2.1]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv6:fe80::1%eth0]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[IPv6:]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2.1>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2.1]x>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2.1].>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[ 192.0.2.1]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2.1 ]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[[192.0.2.1]]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[192.0.2.1\\]>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@[\xc3\xa9]>", U, SYN, NULL, NULL, 0, 0 },
	{ "<a@example.org[192.0.2.1]>", 0, SYN, NULL, NULL, 0, 0 },

	/* syntax errors */
	{ "", 0, SYN, NULL, NULL, 0, 0 },
	{ "", B, SYN, NULL, NULL, 0, 0 },
	{ "<", 0, SYN, NULL, NULL, 0, 0 },
	{ ">", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@>", 0, SYN, NULL, NULL, 0, 0 },
	{ "alice@example.org", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org SIZE=1", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a@b@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<.alice@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice.@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<al..ice@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<.@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<al ice@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice\t@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "< alice@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org >", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@exam ple.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org.>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@.example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@exa..mple.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@-example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example-.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@exa_mple.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@exa%mple.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<ali(ce)@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a\\b@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a[b]@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a,b@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a:b@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a;b@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a\x7f@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<a\x1b@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org\r\n>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org\x7f>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<<alice@example.org>>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org,bob@example.org>", 0, SYN, NULL, NULL, 0, 0 },
	{ "<alice@example.org><bob@example.org>", 0, OK, "alice", "example.org", 0, 19 },
	{ "Alice <alice@example.org>", B, SYN, NULL, NULL, 0, 0 },

	/* SMTPUTF8 (RFC 6531) */
	{ "<jos\xc3\xa9@example.org>", 0, NEED, NULL, NULL, 0, 0 },
	{ "<jos\xc3\xa9@example.org>", U, OK, "jos\xc3\xa9", "example.org", PX, 0 },
	{ "<a@b\xc3\xbc" "cher.example>", 0, NEED, NULL, NULL, 0, 0 },
	{ "<a@b\xc3\xbc" "cher.example>", U, OK, "a", "b\xc3\xbc" "cher.example", PX, 0 },
	{ "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8>", U,
	  OK, "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8", PX, 0 },
	{ "<\"q\xc3\xa9\"@example.org>", U, OK, "\"q\xc3\xa9\"", "example.org", PQ | PX, 0 },
	{ "<\"q\xc3\xa9\"@example.org>", 0, NEED, NULL, NULL, 0, 0 },
	{ "<\xf0\x9f\x98\x80@example.org>", U, OK, "\xf0\x9f\x98\x80", "example.org", PX, 0 },
	{ "<a\xc2\xa0z@example.org>", U, OK, "a\xc2\xa0z", "example.org", PX, 0 },
	{ "<\xef\xbf\xbd@example.org>", U, OK, "\xef\xbf\xbd", "example.org", PX, 0 },
	{ "<\xf4\x8f\xbf\xbf@example.org>", U, OK, "\xf4\x8f\xbf\xbf", "example.org", PX, 0 },
	{ "<\xc3\xa9.\xc3\xa9@x.example>", U, OK, "\xc3\xa9.\xc3\xa9", "x.example", PX, 0 },
	{ "<a@\xc3\xa9-x.example>", U, OK, "a", "\xc3\xa9-x.example", PX, 0 },
	{ "<a@-\xc3\xa9.example>", U, SYN, NULL, NULL, 0, 0 },
	{ "<jos\xc3@example.org>", U, BAD, NULL, NULL, 0, 0 },               /* truncated */
	{ "<jos\xc3@example.org>", 0, NEED, NULL, NULL, 0, 0 },
	{ "<a\xe2\x82", U, BAD, NULL, NULL, 0, 0 },                          /* cut at the end */
	{ "<\xc0\xaf@example.org>", U, BAD, NULL, NULL, 0, 0 },              /* overlong 2 */
	{ "<\xc1\xbf@example.org>", U, BAD, NULL, NULL, 0, 0 },              /* overlong 2 */
	{ "<\xe0\x80\xaf@example.org>", U, BAD, NULL, NULL, 0, 0 },          /* overlong 3 */
	{ "<\xf0\x80\x80\xaf@example.org>", U, BAD, NULL, NULL, 0, 0 },      /* overlong 4 */
	{ "<\xed\xa0\x80@example.org>", U, BAD, NULL, NULL, 0, 0 },          /* surrogate */
	{ "<\xed\xbf\xbf@example.org>", U, BAD, NULL, NULL, 0, 0 },          /* surrogate */
	{ "<\xf4\x90\x80\x80@example.org>", U, BAD, NULL, NULL, 0, 0 },      /* > U+10FFFF */
	{ "<\xf8\x88\x80\x80\x80@example.org>", U, BAD, NULL, NULL, 0, 0 },  /* 5 octets */
	{ "<\xff@example.org>", U, BAD, NULL, NULL, 0, 0 },
	{ "<\x80@example.org>", U, BAD, NULL, NULL, 0, 0 },                  /* lone continuation */
	{ "<\xc3\xa9\xa9@example.org>", U, BAD, NULL, NULL, 0, 0 },          /* extra continuation */
	{ "<a@b\xc3.example>", U, BAD, NULL, NULL, 0, 0 },
	{ "<\"q\xc3\"@example.org>", U, BAD, NULL, NULL, 0, 0 },
	{ "<a\xc2\x85@example.org>", U, SYN, NULL, NULL, 0, 0 },             /* C1 control NEL */
	{ "<a\xc2\x80@example.org>", U, SYN, NULL, NULL, 0, 0 },             /* C1 control */
	{ "<\"\\\xc3\xa9\"@example.org>", U, SYN, NULL, NULL, 0, 0 },        /* quoted-pair is ASCII */

	/* bare mailboxes */
	{ "alice@example.org", B, OK, "alice", "example.org", 0, 0 },
	{ "alice@example.org rest", B, OK, "alice", "example.org", 0, 17 },
	{ "<alice@example.org>", B, OK, "alice", "example.org", 0, 0 },
	{ "\"a b\"@x.org", B, OK, "\"a b\"", "x.org", PQ, 0 },
	{ "a@[192.0.2.1]", B, OK, "a", "[192.0.2.1]", PL, 0 },
	{ "\xc3\xa9@x.org", B | U, OK, "\xc3\xa9", "x.org", PX, 0 },
	{ "\xc3\xa9@x.org", B, NEED, NULL, NULL, 0, 0 },
	{ "alice", B, SYN, NULL, NULL, 0, 0 },
	{ "alice@example.org.", B, SYN, NULL, NULL, 0, 0 },
	{ "@r.example:alice@example.org", B, SYN, NULL, NULL, 0, 0 },
};

static void
check_case(size_t i, const struct pcase *c)
{
	struct mc_address a;
	size_t used = 99;
	enum mc_addr_status s = mc_addr_parse_path(c->in, strlen(c->in), c->flags, &a, &used);
	unsigned props;

	if (s != c->want)
		fail_msg("case %zu \"%s\": status %d (%s), want %d", i, c->in, s,
		    mc_addr_strerror(s), c->want);
	if (s != MC_ADDR_OK) {
		assert_int_equal(used, 0);
		return;
	}
	props = (a.is_quoted ? PQ : 0) | (a.is_literal ? PL : 0) | (a.is_utf8 ? PX : 0) |
	    (a.is_null ? PZ : 0);
	if (strcmp(a.local, c->local) != 0 || strcmp(a.domain, c->domain) != 0)
		fail_msg("case %zu \"%s\": parts \"%s\" \"%s\"", i, c->in, a.local, a.domain);
	if (props != c->props)
		fail_msg("case %zu \"%s\": props %#x, want %#x", i, c->in, props, c->props);
	if (used != (c->consumed ? c->consumed : strlen(c->in)))
		fail_msg("case %zu \"%s\": consumed %zu", i, c->in, used);
}

static void
test_paths(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(i, &cases[i]);
}

/* Inputs with NUL octets, or cut short by len: only s[0..len) counts. */
static void
test_len_and_nul(void **state)
{
	struct mc_address a;
	size_t used = 99;

	(void)state;
	assert_int_equal(mc_addr_parse_path("<a@b.example>", 12, 0, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(used, 0);
	assert_int_equal(mc_addr_parse_path("<a@b.example>", 13, 0, &a, &used), MC_ADDR_OK);
	assert_int_equal(used, 13);
	assert_int_equal(mc_addr_parse_path("<>", 1, N, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<a@b>", 0, B, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path(NULL, 0, N | B, &a, &used), MC_ADDR_SYNTAX);
	/* a UTF-8 sequence cut by len */
	assert_int_equal(mc_addr_parse_path("<\xc3\xa9@x>", 2, U, &a, &used), MC_ADDR_BAD_UTF8);
	/* an embedded NUL is a syntax error wherever it is */
	assert_int_equal(mc_addr_parse_path("<a\0b@x.example>", 15, 0, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<a@x.exa\0mple>", 14, 0, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<a@x.example\0>", 14, 0, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<\"a\0b\"@x.example>", 17, 0, &a, &used),
	    MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<\"a\\\0\"@x.example>", 17, 0, &a, &used),
	    MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<a@[1.2.3.4\0]>", 14, 0, &a, &used), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_path("<\0>", 3, N, &a, &used), MC_ADDR_SYNTAX);
	/* a NUL after the path is the caller's business */
	assert_int_equal(mc_addr_parse_path("<a@x.example>\0", 14, 0, &a, &used), MC_ADDR_OK);
	assert_int_equal(used, 13);
}

/* "<" + local part + "@" + domain + ">" into buf; the local part is q ? a
 * Quoted-string of that written length : a run of 'l'; the domain is
 * nlabels labels of 63 'd' and a last label of lastlen 'e'. */
static size_t
make_path(char *buf, int brackets, int q, size_t llen, size_t nlabels, size_t lastlen)
{
	size_t p = 0;

	if (brackets)
		buf[p++] = '<';
	memset(buf + p, 'l', llen);
	if (q) {
		buf[p] = '"';
		buf[p + llen - 1] = '"';
		buf[p + 1] = ' ';
	}
	p += llen;
	buf[p++] = '@';
	for (size_t i = 0; i < nlabels; i++) {
		memset(buf + p, 'd', 63);
		p += 63;
		buf[p++] = '.';
	}
	memset(buf + p, 'e', lastlen);
	p += lastlen;
	if (brackets)
		buf[p++] = '>';
	buf[p] = '\0';
	return p;
}

/* A domain of exactly n octets into d: 'd's with a dot wherever
 * i % 64 == off (labels of at most 63 octets for off 62 or 63). */
static void
make_domain(char *d, size_t n, size_t off)
{
	for (size_t i = 0; i < n; i++)
		d[i] = i % 64 == off ? '.' : 'd';
	d[n] = '\0';
}

static enum mc_addr_status
parse_buf(const char *buf, unsigned flags, struct mc_address *a)
{
	size_t used;

	return mc_addr_parse_path(buf, strlen(buf), flags, a, &used);
}

static void
test_lengths(void **state)
{
	char buf[1024];
	struct mc_address a;

	(void)state;
	/* local part: 64 octets fit, 65 do not */
	make_path(buf, 1, 0, 64, 0, 10);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_OK);
	assert_int_equal(strlen(a.local), 64);
	make_path(buf, 1, 0, 65, 0, 10);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	/* a quoted local part counts its quotes */
	make_path(buf, 1, 1, 64, 0, 10);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_OK);
	assert_int_equal(strlen(a.local), 64);
	assert_true(a.is_quoted);
	make_path(buf, 1, 1, 65, 0, 10);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	/* a label of 63 is fine, 64 is not */
	make_path(buf, 1, 0, 1, 0, 63);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_OK);
	make_path(buf, 1, 0, 1, 0, 64);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_SYNTAX);
	/* path of exactly 256 (domain 252), then 257 two ways */
	assert_int_equal(make_path(buf, 1, 0, 1, 3, 60), 256);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_OK);
	assert_int_equal(strlen(a.domain), 252);
	assert_int_equal(make_path(buf, 1, 0, 2, 3, 60), 257);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	assert_int_equal(make_path(buf, 1, 0, 1, 3, 61), 257);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	/* a domain of 255 octets fits the domain but never a path; 256 does not */
	buf[0] = '<';
	buf[1] = 'l';
	buf[2] = '@';
	make_domain(buf + 3, 255, 63);
	strcat(buf, ">");
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	make_domain(buf + 3, 256, 62);
	strcat(buf, ">");
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	make_domain(buf + 3, 256, 63);  /* ends in a dot: syntax first */
	strcat(buf, ">");
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_SYNTAX);
	/* bare mailbox: 254 octets (256 with brackets) fit, 255 do not */
	assert_int_equal(make_path(buf, 0, 0, 1, 3, 60), 254);
	assert_int_equal(parse_buf(buf, B, &a), MC_ADDR_OK);
	assert_int_equal(mc_addr_parse_mailbox(buf, 0, &a), MC_ADDR_OK);
	assert_int_equal(make_path(buf, 0, 0, 2, 3, 60), 255);
	assert_int_equal(parse_buf(buf, B, &a), MC_ADDR_TOO_LONG);
	assert_int_equal(mc_addr_parse_mailbox(buf, 0, &a), MC_ADDR_TOO_LONG);
	/* a source route counts towards the 256 */
	memcpy(buf, "<@", 2);
	memset(buf + 2, 'r', 60);
	memcpy(buf + 62, ".example:", 9);
	assert_int_equal(make_path(buf + 71, 0, 0, 1, 2, 54), 184);
	strcat(buf, ">");
	assert_int_equal(strlen(buf), 256);
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_OK);
	assert_int_equal(make_path(buf + 71, 0, 0, 1, 2, 55), 185);
	strcat(buf, ">");
	assert_int_equal(parse_buf(buf, 0, &a), MC_ADDR_TOO_LONG);
	assert_int_equal(parse_buf(buf + 71, B, &a), MC_ADDR_OK);
}

static void
test_mailbox(void **state)
{
	struct mc_address a;

	(void)state;
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org", 0, &a), MC_ADDR_OK);
	assert_string_equal(a.local, "bob");
	assert_string_equal(a.domain, "example.org");
	assert_int_equal(mc_addr_parse_mailbox("\"b b\"@[IPv6:::1]", 0, &a), MC_ADDR_OK);
	assert_true(a.is_quoted && a.is_literal);
	assert_int_equal(mc_addr_parse_mailbox("<bob@example.org>", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("<>", N, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org extra", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org ", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org\n", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org>", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox(" bob@example.org", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("postmaster", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("@r.example:bob@example.org", 0, &a),
	    MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("b\xc3\xb6" "b@example.org", 0, &a),
	    MC_ADDR_NEED_UTF8);
	assert_int_equal(mc_addr_parse_mailbox("b\xc3\xb6" "b@example.org", U, &a), MC_ADDR_OK);
	assert_true(a.is_utf8);
	assert_int_equal(mc_addr_parse_mailbox("b\xc3" "b@example.org", U, &a), MC_ADDR_BAD_UTF8);
}

static void
check_key(const char *path, const char *want)
{
	struct mc_address a;
	size_t used;
	char key[MC_ADDR_KEY_MAX];
	enum mc_addr_status s = mc_addr_parse_path(path, strlen(path), N | U, &a, &used);

	if (s != MC_ADDR_OK)
		fail_msg("\"%s\": %s", path, mc_addr_strerror(s));
	assert_int_equal(mc_addr_key(&a, key, sizeof(key)), 0);
	if (strcmp(key, want) != 0)
		fail_msg("key of \"%s\" is \"%s\", want \"%s\"", path, key, want);
}

static void
test_key(void **state)
{
	(void)state;
	check_key("<Alice@Example.ORG>", "alice@example.org");
	check_key("<ALICE.B+Tag@example.org>", "alice.b+tag@example.org");
	check_key("<@Relay.example:Bob@B.example>", "bob@b.example");
	/* a quoted local part is unquoted when its content is a dot-string */
	check_key("<\"alice\"@example.org>", "alice@example.org");
	check_key("<\"Alice.B\"@example.org>", "alice.b@example.org");
	check_key("<\"\\A\\l\\i\\c\\e\"@example.org>", "alice@example.org");
	check_key("<\"a+b=c\"@x.example>", "a+b=c@x.example");
	/* otherwise it stays quoted, lowercased, with only the needed escapes */
	check_key("<\"John Doe\"@Example.org>", "\"john doe\"@example.org");
	check_key("<\"John\\ Doe\"@Example.org>", "\"john doe\"@example.org");
	check_key("<\"a\\\"B\"@example.org>", "\"a\\\"b\"@example.org");
	check_key("<\"a\\\\B\"@example.org>", "\"a\\\\b\"@example.org");
	check_key("<\"a@b\"@example.org>", "\"a@b\"@example.org");
	check_key("<\".a\"@example.org>", "\".a\"@example.org");
	check_key("<\"a.\"@example.org>", "\"a.\"@example.org");
	check_key("<\"a..b\"@example.org>", "\"a..b\"@example.org");
	check_key("<\"\\\"\"@example.org>", "\"\\\"\"@example.org");
	/* special cases */
	check_key("<Postmaster>", "postmaster");
	check_key("<>", "");
	/* only ASCII letters are lowercased */
	check_key("<J\xc3\x89@B\xc3\x9c.Example>", "j\xc3\x89@b\xc3\x9c.example");
	check_key("<\"J\xc3\x89\"@x.example>", "j\xc3\x89@x.example");
	check_key("<a@[IPv6:2001:DB8::1]>", "a@[ipv6:2001:db8::1]");
	check_key("<A@[192.0.2.1]>", "a@[192.0.2.1]");
}

static void
test_key_sizes(void **state)
{
	struct mc_address a;
	size_t used;
	char key[MC_ADDR_KEY_MAX], k2[MC_ADDR_KEY_MAX];

	(void)state;
	assert_int_equal(mc_addr_parse_path("<Alice@example.org>", 19, 0, &a, &used), MC_ADDR_OK);
	assert_int_equal(mc_addr_key(&a, key, 18), 0);   /* "alice@example.org" + NUL */
	assert_string_equal(key, "alice@example.org");
	assert_int_equal(mc_addr_key(&a, key, 17), -1);
	assert_int_equal(mc_addr_key(&a, key, 0), -1);
	assert_int_equal(mc_addr_parse_path("<>", 2, N, &a, &used), MC_ADDR_OK);
	assert_int_equal(mc_addr_key(&a, key, 1), 0);
	assert_int_equal(mc_addr_key(&a, key, 0), -1);
	/* equivalent spellings give the same key */
	assert_int_equal(mc_addr_parse_mailbox("\"BOB\"@EXAMPLE.org", 0, &a), MC_ADDR_OK);
	assert_int_equal(mc_addr_key(&a, key, sizeof(key)), 0);
	assert_int_equal(mc_addr_parse_mailbox("bob@example.ORG", 0, &a), MC_ADDR_OK);
	assert_int_equal(mc_addr_key(&a, k2, sizeof(k2)), 0);
	assert_string_equal(key, k2);
	/* the largest struct still fits MC_ADDR_KEY_MAX */
	memset(&a, 0, sizeof(a));
	memset(a.local, 'L', MC_ADDR_LOCAL_MAX);
	memset(a.domain, 'D', MC_ADDR_DOMAIN_MAX);
	assert_int_equal(mc_addr_key(&a, key, sizeof(key)), 0);
	assert_int_equal(strlen(key), MC_ADDR_KEY_MAX - 1);
	assert_int_equal(key[MC_ADDR_LOCAL_MAX], '@');
	assert_int_equal(key[0], 'l');
	assert_int_equal(mc_addr_key(&a, key, sizeof(key) - 1), -1);
}

static void
test_valid_domain(void **state)
{
	char d[300];
	static const char *good[] = { "example.org", "Mail.Example.ORG", "a", "localhost",
		"x-y.example", "a--b.example", "123.example", "1.2.3.4", "xn--bcher-kva.example" };
	static const char *bad[] = { "", ".", "example.org.", ".example.org", "a..b", "-a.example",
		"a-.example", "a.-b", "a_b.example", "[192.0.2.1]", "a b", " a", "a ",
		"example.org\n", "a@b", "a:b", "a/b", "exa\x7fmple.org" };

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(d, sizeof(d), "%s", good[i]);
		if (mc_addr_valid_domain(d, 0) != 1)
			fail_msg("domain \"%s\" refused", good[i]);
	}
	snprintf(d, sizeof(d), "Mail.Example.ORG");
	assert_int_equal(mc_addr_valid_domain(d, 0), 1);
	assert_string_equal(d, "mail.example.org");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(d, sizeof(d), "%s", bad[i]);
		if (mc_addr_valid_domain(d, 1) != 0)
			fail_msg("domain \"%s\" accepted", bad[i]);
	}
	/* not lowercased when refused */
	snprintf(d, sizeof(d), "Bad_Domain.ORG");
	assert_int_equal(mc_addr_valid_domain(d, 0), 0);
	assert_string_equal(d, "Bad_Domain.ORG");
	/* U-labels only with allow_utf8, and only valid UTF-8 */
	snprintf(d, sizeof(d), "B\xc3\xbc" "cher.Example");
	assert_int_equal(mc_addr_valid_domain(d, 0), 0);
	assert_int_equal(mc_addr_valid_domain(d, 1), 1);
	assert_string_equal(d, "b\xc3\xbc" "cher.example");
	snprintf(d, sizeof(d), "b\xc3" "cher.example");
	assert_int_equal(mc_addr_valid_domain(d, 1), 0);
	snprintf(d, sizeof(d), "b\xed\xa0\x80.example");
	assert_int_equal(mc_addr_valid_domain(d, 1), 0);
	snprintf(d, sizeof(d), "b\xc2\x85.example");
	assert_int_equal(mc_addr_valid_domain(d, 1), 0);
	/* labels of 63 and 64 octets */
	memset(d, 'a', 63);
	memcpy(d + 63, ".example", 9);
	assert_int_equal(mc_addr_valid_domain(d, 0), 1);
	memset(d, 'a', 64);
	memcpy(d + 64, ".example", 9);
	assert_int_equal(mc_addr_valid_domain(d, 0), 0);
	/* 255 octets in all fit (4 labels of 63), 256 do not (62, 63, 63, 63, 1) */
	make_domain(d, 255, 63);
	assert_int_equal(mc_addr_valid_domain(d, 0), 1);
	make_domain(d, 256, 62);
	assert_int_equal(mc_addr_valid_domain(d, 0), 0);
	make_domain(d, 254, 62);
	assert_int_equal(mc_addr_valid_domain(d, 0), 1);
}

static void
test_strerror(void **state)
{
	static const enum mc_addr_status all[] = { MC_ADDR_OK, MC_ADDR_SYNTAX, MC_ADDR_TOO_LONG,
		MC_ADDR_NEED_UTF8, MC_ADDR_NULL_NOT_ALLOWED, MC_ADDR_BAD_UTF8 };
	const size_t n = sizeof(all) / sizeof(all[0]);

	(void)state;
	assert_int_equal(MC_ADDR_OK, 0);
	for (size_t i = 0; i < n; i++) {
		const char *m = mc_addr_strerror(all[i]);

		assert_non_null(m);
		assert_true(m[0] != '\0');
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(m, mc_addr_strerror(all[j]));
	}
	assert_string_equal(mc_addr_strerror(MC_ADDR_NEED_UTF8),
	    "non-ASCII address without SMTPUTF8");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_len_and_nul),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_mailbox),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_key_sizes),
		cmocka_unit_test(test_valid_domain),
		cmocka_unit_test(test_strerror),
	};

	printf("address: %zu table cases\n", sizeof(cases) / sizeof(cases[0]));
	return cmocka_run_group_tests_name("address", tests, NULL, NULL);
}
