/*
 * test_address.c - unit tests of RFC 5321/6531 path parsing: a table of good
 * and bad paths with the expected status, parts and consumed length, plus the
 * canonical store key and domain validation.
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

struct pcase {
	const char *in;
	unsigned flags;
	enum mc_addr_status want;
	const char *local, *domain;  /* expected parts when OK */
	size_t consumed;             /* 0: the whole input */
};

static const struct pcase cases[] = {
	/* plain paths */
	{ "<alice@example.org>", 0, MC_ADDR_OK, "alice", "example.org", 0 },
	{ "<Alice.B+tag@Mail.Example.ORG>", 0, MC_ADDR_OK, "Alice.B+tag", "Mail.Example.ORG", 0 },
	{ "<a!#$%&'*+-/=?^_`{|}~z@x.example>", 0, MC_ADDR_OK, "a!#$%&'*+-/=?^_`{|}~z", "x.example", 0 },
	{ "<a@b>", 0, MC_ADDR_OK, "a", "b", 0 },
	{ "<a@xn--bcher-kva.example>", 0, MC_ADDR_OK, "a", "xn--bcher-kva.example", 0 },
	{ "<a@1.2.3.example>", 0, MC_ADDR_OK, "a", "1.2.3.example", 0 },
	/* ESMTP parameters follow: consumed stops at ">" */
	{ "<a@b.example> SIZE=100 BODY=8BITMIME", 0, MC_ADDR_OK, "a", "b.example", 13 },
	{ "<> SIZE=5", N, MC_ADDR_OK, "", "", 2 },
	/* null path */
	{ "<>", N, MC_ADDR_OK, "", "", 0 },
	{ "<>", 0, MC_ADDR_NULL_NOT_ALLOWED, NULL, NULL, 0 },
	/* postmaster without domain (RFC 5321 4.1.1.3) */
	{ "<Postmaster>", 0, MC_ADDR_OK, "Postmaster", "", 0 },
	{ "<postmaster>", 0, MC_ADDR_OK, "postmaster", "", 0 },
	{ "<webmaster>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	/* source routes: accepted, dropped */
	{ "<@relay.example:a@b.example>", 0, MC_ADDR_OK, "a", "b.example", 0 },
	{ "<@r1.example,@r2.example:a@b.example>", 0, MC_ADDR_OK, "a", "b.example", 0 },
	{ "<@r1.example,r2.example:a@b.example>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<@r1.example:postmaster>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<@:a@b.example>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	/* quoted local parts */
	{ "<\"john doe\"@example.org>", 0, MC_ADDR_OK, "\"john doe\"", "example.org", 0 },
	{ "<\"a\\\"b\"@example.org>", 0, MC_ADDR_OK, "\"a\\\"b\"", "example.org", 0 },
	{ "<\"a\\\\b\"@example.org>", 0, MC_ADDR_OK, "\"a\\\\b\"", "example.org", 0 },
	{ "<\"a@b\"@example.org>", 0, MC_ADDR_OK, "\"a@b\"", "example.org", 0 },
	{ "<\"\"@example.org>", 0, MC_ADDR_OK, "\"\"", "example.org", 0 },
	{ "<\"unterminated@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<\"tab\there\"@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<\"bad\\\x01\"@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	/* address literals */
	{ "<a@[192.0.2.1]>", 0, MC_ADDR_OK, "a", "[192.0.2.1]", 0 },
	{ "<a@[IPv6:2001:db8::1]>", 0, MC_ADDR_OK, "a", "[IPv6:2001:db8::1]", 0 },
	{ "<a@[ipv6:::1]>", 0, MC_ADDR_OK, "a", "[ipv6:::1]", 0 },
	{ "<a@[IPv6:2001:db8::192.0.2.1]>", 0, MC_ADDR_OK, "a", "[IPv6:2001:db8::192.0.2.1]", 0 },
	{ "<a@[x-tag:opaque]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[192.0.2.256]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[192.0.2]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[2001:db8::1]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[IPv6:2001:db8:::1]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[IPv6:gggg::1]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[]>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[192.0.2.1>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@[192.0.2.1]x>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	/* syntax errors */
	{ "", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "alice@example.org", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@example.org", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<a@b@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<.alice@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice.@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<al..ice@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<al ice@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "< alice@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@example.org >", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@example.org.>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@.example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@exa..mple.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@-example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@example-.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@exa_mple.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<ali(ce)@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@example.org\r\n>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<<alice@example.org>>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice@example.org,bob@example.org>", 0, MC_ADDR_SYNTAX, NULL, NULL, 0 },
	{ "<alice%relay@example.org>", 0, MC_ADDR_OK, "alice%relay", "example.org", 0 },
	/* SMTPUTF8 (RFC 6531) */
	{ "<jos\xc3\xa9@example.org>", 0, MC_ADDR_NEED_UTF8, NULL, NULL, 0 },
	{ "<jos\xc3\xa9@example.org>", U, MC_ADDR_OK, "jos\xc3\xa9", "example.org", 0 },
	{ "<a@b\xc3\xbc" "cher.example>", 0, MC_ADDR_NEED_UTF8, NULL, NULL, 0 },
	{ "<a@b\xc3\xbc" "cher.example>", U, MC_ADDR_OK, "a", "b\xc3\xbc" "cher.example", 0 },
	{ "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8>", U,
	  MC_ADDR_OK, "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.\xe5\x85\xac\xe5\x8f\xb8", 0 },
	{ "<\"q\xc3\xa9\"@example.org>", U, MC_ADDR_OK, "\"q\xc3\xa9\"", "example.org", 0 },
	{ "<\xf0\x9f\x98\x80@example.org>", U, MC_ADDR_OK, "\xf0\x9f\x98\x80", "example.org", 0 },
	{ "<jos\xc3@example.org>", U, MC_ADDR_BAD_UTF8, NULL, NULL, 0 },
	{ "<\xc0\xaf@example.org>", U, MC_ADDR_BAD_UTF8, NULL, NULL, 0 },          /* overlong */
	{ "<\xed\xa0\x80@example.org>", U, MC_ADDR_BAD_UTF8, NULL, NULL, 0 },      /* surrogate */
	{ "<\xf4\x90\x80\x80@example.org>", U, MC_ADDR_BAD_UTF8, NULL, NULL, 0 },  /* > U+10FFFF */
	{ "<\xff@example.org>", U, MC_ADDR_BAD_UTF8, NULL, NULL, 0 },
	{ "<\x80@example.org>", U, MC_ADDR_BAD_UTF8, NULL, NULL, 0 },
	/* bare mailboxes */
	{ "alice@example.org", B, MC_ADDR_OK, "alice", "example.org", 0 },
	{ "alice@example.org rest", B, MC_ADDR_OK, "alice", "example.org", 17 },
};

static void
test_paths(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pcase *c = &cases[i];
		struct mc_address a;
		size_t used = 99;
		enum mc_addr_status s = mc_addr_parse_path(c->in, strlen(c->in), c->flags, &a, &used);

		if (s != c->want)
			fail_msg("case %zu \"%s\": status %d, want %d", i, c->in, s, c->want);
		if (s != MC_ADDR_OK) {
			assert_int_equal(used, 0);
			continue;
		}
		assert_string_equal(a.local, c->local);
		assert_string_equal(a.domain, c->domain);
		assert_int_equal(used, c->consumed ? c->consumed : strlen(c->in));
	}
}

static void
test_flags(void **state)
{
	struct mc_address a;
	size_t used;

	(void)state;
	assert_int_equal(mc_addr_parse_path("<\"x y\"@[192.0.2.1]>", 19, 0, &a, &used), MC_ADDR_OK);
	assert_true(a.is_quoted && a.is_literal && !a.is_null && !a.is_utf8);
	assert_int_equal(mc_addr_parse_path("<>", 2, N, &a, &used), MC_ADDR_OK);
	assert_true(a.is_null);
	assert_int_equal(mc_addr_parse_path("<\xc3\xa9@x.example>", 14, U, &a, &used), MC_ADDR_OK);
	assert_true(a.is_utf8 && !a.is_quoted && !a.is_literal);
	/* The length given is respected: nothing past it is read. */
	assert_int_equal(mc_addr_parse_path("<a@b.example>", 12, 0, &a, &used), MC_ADDR_SYNTAX);
	/* An embedded NUL ends nothing: it is a syntax error. */
	assert_int_equal(mc_addr_parse_path("<a\0b@x.example>", 15, 0, &a, &used), MC_ADDR_SYNTAX);
}

/* Builds "<" + local + "@" + domain + ">" with the given lengths. */
static void
make_path(char *buf, size_t llen, size_t dlabels, size_t lastlabel)
{
	size_t p = 0;

	buf[p++] = '<';
	memset(buf + p, 'l', llen);
	p += llen;
	buf[p++] = '@';
	for (size_t i = 0; i < dlabels; i++) {
		memset(buf + p, 'd', 63);
		p += 63;
		buf[p++] = '.';
	}
	memset(buf + p, 'e', lastlabel);
	p += lastlabel;
	buf[p++] = '>';
	buf[p] = '\0';
}

static void
test_lengths(void **state)
{
	char buf[1024];
	struct mc_address a;
	size_t used;

	(void)state;
	make_path(buf, 64, 0, 10);
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_OK);
	make_path(buf, 65, 0, 10);
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_TOO_LONG);
	/* label of 63 is fine, 64 is not */
	make_path(buf, 1, 0, 63);
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_OK);
	make_path(buf, 1, 0, 64);
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_SYNTAX);
	/* domain of exactly 255 octets: 3 labels of 63 + 3 dots + 63 = 255 */
	make_path(buf, 1, 3, 63);
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_TOO_LONG);
	make_path(buf, 1, 3, 60);  /* 252 octets: fits the domain, path is 256 */
	assert_int_equal(strlen(buf), 256);
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_OK);
	assert_int_equal(strlen(a.domain), 252);
	make_path(buf, 2, 3, 60);  /* path of 257 */
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_TOO_LONG);
	make_path(buf, 1, 3, 61);  /* domain 253, path 257 */
	assert_int_equal(mc_addr_parse_path(buf, strlen(buf), 0, &a, &used), MC_ADDR_TOO_LONG);
}

static void
test_mailbox(void **state)
{
	struct mc_address a;

	(void)state;
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org", 0, &a), MC_ADDR_OK);
	assert_string_equal(a.local, "bob");
	assert_int_equal(mc_addr_parse_mailbox("<bob@example.org>", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob@example.org extra", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("bob", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("", 0, &a), MC_ADDR_SYNTAX);
	assert_int_equal(mc_addr_parse_mailbox("b\xc3\xb6" "b@example.org", 0, &a), MC_ADDR_NEED_UTF8);
	assert_int_equal(mc_addr_parse_mailbox("b\xc3\xb6" "b@example.org", U, &a), MC_ADDR_OK);
}

static void
check_key(const char *path, const char *want)
{
	struct mc_address a;
	size_t used;
	char key[600];

	assert_int_equal(mc_addr_parse_path(path, strlen(path), U, &a, &used), MC_ADDR_OK);
	assert_int_equal(mc_addr_key(&a, key, sizeof(key)), 0);
	assert_string_equal(key, want);
}

static void
test_key(void **state)
{
	struct mc_address a;
	size_t used;
	char small[8];

	(void)state;
	check_key("<Alice@Example.ORG>", "alice@example.org");
	check_key("<\"alice\"@example.org>", "alice@example.org");
	check_key("<\"Alice.B\"@example.org>", "alice.b@example.org");
	check_key("<\"John Doe\"@Example.org>", "\"John Doe\"@example.org");
	check_key("<\"a\\\"b\"@example.org>", "\"a\\\"b\"@example.org");
	check_key("<Postmaster>", "postmaster");
	check_key("<J\xc3\x89@B\xc3\x9c.Example>", "j\xc3\x89@b\xc3\x9c.example");
	check_key("<a@[IPv6:2001:DB8::1]>", "a@[ipv6:2001:db8::1]");
	assert_int_equal(mc_addr_parse_path("<alice@example.org>", 19, 0, &a, &used), MC_ADDR_OK);
	assert_int_equal(mc_addr_key(&a, small, sizeof(small)), -1);
}

static void
test_valid_domain(void **state)
{
	char d[300];
	static const char *good[] = { "example.org", "Mail.Example.ORG", "a", "x-y.example",
		"123.example", "xn--bcher-kva.example" };
	static const char *bad[] = { "", ".", "example.org.", ".example.org", "a..b", "-a.example",
		"a-.example", "a_b.example", "[192.0.2.1]", "a b", "example.org\n", "a@b" };

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		snprintf(d, sizeof(d), "%s", good[i]);
		assert_int_equal(mc_addr_valid_domain(d, 0), 1);
	}
	snprintf(d, sizeof(d), "Mail.Example.ORG");
	mc_addr_valid_domain(d, 0);
	assert_string_equal(d, "mail.example.org");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(d, sizeof(d), "%s", bad[i]);
		if (mc_addr_valid_domain(d, 1) != 0)
			fail_msg("domain \"%s\" accepted", bad[i]);
	}
	snprintf(d, sizeof(d), "b\xc3\xbc" "cher.example");
	assert_int_equal(mc_addr_valid_domain(d, 0), 0);
	assert_int_equal(mc_addr_valid_domain(d, 1), 1);
	memset(d, 'a', 256);
	d[256] = '\0';
	assert_int_equal(mc_addr_valid_domain(d, 0), 0);
	assert_string_equal(mc_addr_strerror(MC_ADDR_NEED_UTF8), "non-ASCII address without SMTPUTF8");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_paths),
		cmocka_unit_test(test_flags),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_mailbox),
		cmocka_unit_test(test_key),
		cmocka_unit_test(test_valid_domain),
	};

	return cmocka_run_group_tests_name("address", tests, NULL, NULL);
}
