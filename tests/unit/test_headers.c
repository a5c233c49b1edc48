/*
 * test_headers.c - the streaming header splitter and the network lists:
 * fields with folding, the end of the header section however it comes,
 * arbitrary chunking, oversized fields; CIDR matching for trusted_networks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cidr.h"
#include "headers.h"

struct seen {
	char fields[16][256];
	int nfields;
	int eoh;
	char sep[4];
	char body[70000];
	size_t blen;
};

static int
on_field(void *ctx, const char *f, size_t len)
{
	struct seen *s = ctx;

	if (s->nfields < 16 && len < 256)
		memcpy(s->fields[s->nfields], f, len);
	s->nfields++;
	return 0;
}

static int
on_eoh(void *ctx, const char *sep, size_t len)
{
	struct seen *s = ctx;

	s->eoh++;
	snprintf(s->sep, sizeof(s->sep), "%.*s", (int)len, sep);
	return 0;
}

static int
on_body(void *ctx, const void *buf, size_t len)
{
	struct seen *s = ctx;

	if (s->blen + len <= sizeof(s->body))
		memcpy(s->body + s->blen, buf, len);
	s->blen += len;
	return 0;
}

/* Feeds msg in chunks of `step` octets. */
static void
run(struct seen *s, const char *msg, size_t len, size_t step)
{
	struct hdr_parser p = { 0 };
	const struct hdr_callbacks cb = { s, on_field, on_eoh, on_body };

	memset(s, 0, sizeof(*s));
	for (size_t off = 0; off < len; off += step)
		assert_int_equal(hdr_feed(&p, &cb, msg + off, off + step > len ? len - off : step), 0);
	assert_int_equal(hdr_finish(&p, &cb), 0);
	hdr_free(&p);
}

static void
test_fields_and_body(void **state)
{
	static const char msg[] = "From: a@b.example\r\nSubject: one\r\n two\r\n\r\nbody\r\n";
	struct seen s;

	(void)state;
	for (size_t step = 1; step <= sizeof(msg); step++) {
		run(&s, msg, sizeof(msg) - 1, step);
		assert_int_equal(s.nfields, 2);
		assert_string_equal(s.fields[0], "From: a@b.example\r\n");
		assert_string_equal(s.fields[1], "Subject: one\r\n two\r\n");
		assert_int_equal(s.eoh, 1);
		assert_string_equal(s.sep, "\r\n");
		assert_int_equal(s.blen, 6);
		assert_memory_equal(s.body, "body\r\n", 6);
	}
}

static void
test_no_blank_line(void **state)
{
	struct seen s;
	static const char hdr_only[] = "From: a@b.example\r\nTo: c@d.example\r\n";
	static const char no_header[] = "just text\r\nmore\r\n";

	(void)state;
	run(&s, hdr_only, sizeof(hdr_only) - 1, 7);
	assert_int_equal(s.nfields, 2);
	assert_int_equal(s.eoh, 1);
	assert_int_equal(s.blen, 0);
	run(&s, no_header, sizeof(no_header) - 1, 3);
	assert_int_equal(s.nfields, 0);
	assert_int_equal(s.eoh, 1);
	assert_string_equal(s.sep, "");
	assert_int_equal(s.blen, sizeof(no_header) - 1);
}

static void
test_oversized_field_becomes_body(void **state)
{
	size_t n = HDR_FIELD_MAX + 100;
	char *msg = malloc(n + 64);
	struct seen *s = malloc(sizeof(*s));
	size_t len;

	(void)state;
	strcpy(msg, "From: a@b.example\r\nX-Long: ");
	len = strlen(msg);
	memset(msg + len, 'x', n);
	len += n;
	memcpy(msg + len, "\r\n\r\nend\r\n", 9);
	len += 9;
	run(s, msg, len, 4096);
	assert_int_equal(s->nfields, 1);
	assert_int_equal(s->eoh, 1);
	assert_int_equal(s->blen, len - strlen("From: a@b.example\r\n"));
	free(s);
	free(msg);
}

static void
test_hdr_is(void **state)
{
	(void)state;
	assert_true(hdr_is("From: x", 7, "from"));
	assert_true(hdr_is("FROM : x", 8, "From"));
	assert_false(hdr_is("From-X: x", 9, "From"));
	assert_false(hdr_is("Fro", 3, "From"));
}

static void
test_cidr(void **state)
{
	(void)state;
	assert_true(mc_cidr_list_valid("127.0.0.0/8 ::1, 192.0.2.0/24"));
	assert_true(mc_cidr_list_valid(""));
	assert_false(mc_cidr_list_valid("127.0.0.0/33"));
	assert_false(mc_cidr_list_valid("localhost"));
	assert_false(mc_cidr_list_valid("10.0.0.0/"));
	assert_true(mc_cidr_match("127.0.0.0/8 ::1", "127.1.2.3"));
	assert_true(mc_cidr_match("127.0.0.0/8 ::1", "::1"));
	assert_true(mc_cidr_match("127.0.0.0/8", "::ffff:127.0.0.1"));
	assert_false(mc_cidr_match("127.0.0.0/8 ::1", "192.0.2.10"));
	assert_true(mc_cidr_match("192.0.2.0/25", "192.0.2.127"));
	assert_false(mc_cidr_match("192.0.2.0/25", "192.0.2.128"));
	assert_true(mc_cidr_match("2001:db8::/32", "2001:db8:1::5"));
	assert_false(mc_cidr_match("2001:db8::/32", "2001:db9::5"));
	assert_false(mc_cidr_match("127.0.0.0/8", "unknown"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fields_and_body),
		cmocka_unit_test(test_no_blank_line),
		cmocka_unit_test(test_oversized_field_becomes_body),
		cmocka_unit_test(test_hdr_is),
		cmocka_unit_test(test_cidr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
