/*
 * test_convert.c - the 8-bit to 7-bit filter (relay-worker/convert.c):
 * single-part and (nested) multipart messages, what cannot be converted,
 * byte-identical pass-through, and quoted-printable that decodes back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "convert.h"

/* ---- a message in memory as a source, read in small steps ---- */

struct mem {
	const char *data;
	size_t len, pos;
	size_t step;        /* most octets per read (0: any) */
	size_t fail_at;     /* a read failure at this offset (0: never) */
	int opens, open;
};

static int
mem_open(void *ctx)
{
	struct mem *m = ctx;

	m->pos = 0;
	m->opens++;
	m->open = 1;
	return 0;
}

static int
mem_read(void *ctx, void *buf, size_t len, size_t *got)
{
	struct mem *m = ctx;
	size_t n = m->len - m->pos;

	*got = 0;
	if (m->fail_at > 0 && m->pos >= m->fail_at)
		return -1;
	if (m->step > 0 && n > m->step)
		n = m->step;
	if (n > len)
		n = len;
	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	*got = n;
	return 0;
}

static void
mem_close(void *ctx)
{
	((struct mem *)ctx)->open = 0;
}

static const char *
mem_error(void *ctx)
{
	(void)ctx;
	return "disk on fire";
}

static struct msgsrc
mem_src(struct mem *m, const char *data, size_t len, size_t step)
{
	struct msgsrc s = { m, mem_open, mem_read, mem_close, mem_error };

	memset(m, 0, sizeof(*m));
	m->data = data;
	m->len = len;
	m->step = step;
	return s;
}

/* Everything the filter yields, read `chunk` octets at a time; malloc'd. */
static char *
convert_all(const char *msg, size_t len, size_t step, size_t chunk, size_t *outlen)
{
	struct mem m;
	struct msgsrc in = mem_src(&m, msg, len, step), out;
	size_t cap = 4 * len + 4096 + chunk, n = 0, got;
	char *buf = malloc(cap);

	assert_non_null(buf);
	assert_int_equal(convert_7bit_open(&out, &in), 0);
	if (out.open(out.ctx) != 0)
		fail_msg("open failed: %s", out.error(out.ctx));
	do {
		assert_true(n + chunk <= cap);
		assert_int_equal(out.read(out.ctx, buf + n, chunk, &got), 0);
		n += got;
	} while (got > 0);
	out.close(out.ctx);
	assert_int_equal(m.open, 0);
	convert_7bit_free(&out);
	buf[n] = '\0';
	*outlen = n;
	return buf;
}

#define LIT(s) (s), sizeof(s) - 1

static void
expect_conversion(const char *msg, size_t len, const char *want, size_t wantlen)
{
	size_t steps[] = { 0, 1, 7, 1000 }, chunks[] = { 1, 13, 65536 };

	for (size_t i = 0; i < 4; i++) {
		for (size_t j = 0; j < 3; j++) {
			size_t n;
			char *got = convert_all(msg, len, steps[i], chunks[j], &n);

			if (n != wantlen || memcmp(got, want, n) != 0)
				fail_msg("step %zu chunk %zu: got %zu octets:\n%s\n--- want %zu:\n%s",
				    steps[i], chunks[j], n, got, wantlen, want);
			free(got);
		}
	}
}

/* ---- quoted-printable checks ---- */

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/*
 * Checks that p[0..n) is well-formed QP with CRLF lines of at most 76
 * octets, and decodes it (hard breaks as CRLF) into out; returns its length.
 */
static size_t
qp_decode(const char *p, size_t n, char *out)
{
	size_t o = 0, i = 0;

	while (i < n) {
		const char *eol = memchr(p + i, '\n', n - i);
		size_t end = eol ? (size_t)(eol - p) : n, len;
		int soft = 0;

		if (eol != NULL) {
			assert_true(end > i && p[end - 1] == '\r');
			end--;
		}
		len = end - i;
		if (len > 76)
			fail_msg("QP line of %zu octets: %.*s", len, (int)len, p + i);
		if (len > 0 && (p[end - 1] == ' ' || p[end - 1] == '\t'))
			fail_msg("QP line ends in white space: %.*s", (int)len, p + i);
		for (size_t k = i; k < end; k++) {
			unsigned char b = (unsigned char)p[k];

			assert_true(b < 0x80 && b != 0 && b != '\r' && b != '\n');
			if (b != '=') {
				out[o++] = (char)b;
				continue;
			}
			if (k + 1 == end) {
				soft = 1;
				break;
			}
			assert_true(k + 2 < end);
			assert_true(hexval(p[k + 1]) >= 0 && hexval(p[k + 2]) >= 0);
			out[o++] = (char)(hexval(p[k + 1]) * 16 + hexval(p[k + 2]));
			k += 2;
		}
		if (eol != NULL && !soft) {
			out[o++] = '\r';
			out[o++] = '\n';
		}
		i = eol ? end + 2 : n;
	}
	return o;
}

/* ---- tests ---- */

static void
test_single_part_8bit(void **state)
{
	static const char msg[] =
	    "From: a@example.org\r\nSubject: hi\r\n\r\n"
	    "caf\xc3\xa9 ok \r\nx=y\ttab\t\r\n.dot\r\n";
	static const char want[] =
	    "From: a@example.org\r\nSubject: hi\r\n"
	    "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "caf=C3=A9 ok=20\r\nx=3Dy\ttab=09\r\n.dot\r\n";

	(void)state;
	expect_conversion(LIT(msg), LIT(want));
}

static void
test_single_part_cte_replaced(void **state)
{
	static const char msg[] =
	    "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n"
	    "Content-Type: text/plain;\r\n charset=utf-8\r\nSubject: x\r\n\r\n"
	    "\xe2\x82\xac 5\r\n";
	static const char want[] =
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: text/plain;\r\n charset=utf-8\r\nSubject: x\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "=E2=82=AC 5\r\n";

	(void)state;
	expect_conversion(LIT(msg), LIT(want));
}

static void
test_multipart_8bit_and_base64(void **state)
{
	static const char msg[] =
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
	    "preamble\r\n"
	    "--b1\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n\r\n"
	    "gr\xc3\xbc\xc3\x9f dich\r\n"
	    "--b1\r\n"
	    "Content-Type: application/octet-stream\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n"
	    "AAECAwQ=\r\n"
	    "--b1--\r\n"
	    "epilogue\r\n";
	static const char want[] =
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
	    "preamble\r\n"
	    "--b1\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "gr=C3=BC=C3=9F dich\r\n"
	    "--b1\r\n"
	    "Content-Type: application/octet-stream\r\n"
	    "Content-Transfer-Encoding: base64\r\n\r\n"
	    "AAECAwQ=\r\n"
	    "--b1--\r\n"
	    "epilogue\r\n";

	(void)state;
	expect_conversion(LIT(msg), LIT(want));
}

static void
test_nested_multipart(void **state)
{
	static const char msg[] =
	    "Content-Type: multipart/mixed; boundary=outer\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n\r\n"
	    "--outer\r\n"
	    "Content-Type: multipart/alternative; boundary=\"in ner\"\r\n\r\n"
	    "--in ner\r\n"
	    "Content-Type: text/plain\r\n\r\n"
	    "\xc3\xa9t\xc3\xa9\r\n"
	    "--in ner\r\n"
	    "Content-Type: text/html\r\n\r\n"
	    "<p>plain ascii</p>\r\n"
	    "--in ner--\r\n"
	    "--outer\r\n"
	    "Content-Type: application/x-thing\r\n"
	    "Content-Transfer-Encoding: binary\r\n\r\n"
	    "a\r\x01\xff\nb\r\n"
	    "--outer--\r\n";
	static const char want[] =
	    "Content-Type: multipart/mixed; boundary=outer\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Transfer-Encoding: 7bit\r\n\r\n"
	    "--outer\r\n"
	    "Content-Type: multipart/alternative; boundary=\"in ner\"\r\n\r\n"
	    "--in ner\r\n"
	    "Content-Type: text/plain\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "=C3=A9t=C3=A9\r\n"
	    "--in ner\r\n"
	    "Content-Type: text/html\r\n\r\n"
	    "<p>plain ascii</p>\r\n"
	    "--in ner--\r\n"
	    "--outer\r\n"
	    "Content-Type: application/x-thing\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "a=0D=01=FF=0Ab\r\n"
	    "--outer--\r\n";

	(void)state;
	expect_conversion(LIT(msg), LIT(want));
}

static void
expect_impossible(const char *msg, size_t len, const char *reason)
{
	struct mem m;
	struct msgsrc in = mem_src(&m, msg, len, 5), out;
	char why[200];

	assert_int_equal(convert_7bit_check(&in, why, sizeof(why)), CONVERT_IMPOSSIBLE);
	if (strstr(why, reason) == NULL)
		fail_msg("reason \"%s\" lacks \"%s\"", why, reason);
	assert_int_equal(m.opens, 1);
	assert_int_equal(m.open, 0);
	assert_int_equal(convert_7bit_open(&out, &in), 0);
	assert_int_equal(out.open(out.ctx), -1);
	assert_int_equal(convert_7bit_impossible(&out), 1);
	assert_non_null(strstr(out.error(out.ctx), "not possible"));
	assert_int_equal(out.open(out.ctx), -1);   /* the plan is kept */
	assert_int_equal(m.opens, 2);
	convert_7bit_free(&out);
	assert_int_equal(m.open, 0);
}

static void
test_8bit_header_impossible(void **state)
{
	static const char msg[] = "Subject: gr\xc3\xbc\xc3\x9f\x65\r\n\r\nbody \xc3\xa9\r\n";
	static const char part[] =
	    "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
	    "--b\r\nContent-Type: text/plain; name=\"\xc3\xa9.txt\"\r\n\r\nx\r\n--b--\r\n";

	(void)state;
	expect_impossible(LIT(msg), "header field");
	expect_impossible(LIT(part), "header field");
}

static void
test_opaque_parts_impossible(void **state)
{
	static const char rfc822[] =
	    "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
	    "--b\r\nContent-Type: message/rfc822\r\n\r\n"
	    "Subject: inner\r\n\r\n\xc3\xa9\r\n--b--\r\n";
	static const char b64[] =
	    "Content-Transfer-Encoding: base64\r\n\r\n\xc3\xa9\r\n";
	static const char noboundary[] =
	    "Content-Type: multipart/mixed\r\n\r\n\xc3\xa9\r\n";
	char deep[4096];
	size_t n = 0;

	(void)state;
	expect_impossible(LIT(rfc822), "message part");
	expect_impossible(LIT(b64), "base64");
	expect_impossible(LIT(noboundary), "without a boundary");
	for (int i = 0; i <= CONVERT_DEPTH_MAX; i++)
		n += (size_t)snprintf(deep + n, sizeof(deep) - n,
		    "Content-Type: multipart/mixed; boundary=d%d\r\n\r\n--d%d\r\n", i, i);
	n += (size_t)snprintf(deep + n, sizeof(deep) - n, "\r\n\xc3\xa9\r\n");
	expect_impossible(deep, n, "nested too deep");
}

static void
expect_identical(const char *msg, size_t len)
{
	struct mem m;
	struct msgsrc in = mem_src(&m, msg, len, 3);
	char why[200];
	size_t n;
	char *got;

	assert_int_equal(convert_7bit_check(&in, why, sizeof(why)), CONVERT_POSSIBLE);
	got = convert_all(msg, len, 3, 5, &n);
	assert_int_equal(n, len);
	assert_memory_equal(got, msg, len);
	free(got);
}

static void
test_7bit_passes_through(void **state)
{
	static const char plain[] = "Subject: x\r\n\r\nhello  \r\n=41 stays\r\nno final line end";
	static const char labelled[] =
	    "MIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\nascii only\r\n";
	static const char multi[] =
	    "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
	    "Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nhi\r\n--q--\r\n";

	(void)state;
	expect_identical(LIT(plain));
	expect_identical(LIT(labelled));
	expect_identical(LIT(multi));
	expect_identical("", 0);
}

/* Output body after the header section of `out`. */
static const char *
body_of(const char *out)
{
	const char *p = strstr(out, "\r\n\r\n");

	assert_non_null(p);
	return p + 4;
}

static void
test_qp_lines_decode_back(void **state)
{
	size_t cap = 40000, n = 0, outlen, declen;
	char *msg = malloc(cap), *body, *dec = malloc(3 * cap);
	const char *head = "Content-Type: text/plain; charset=utf-8\r\n\r\n";
	char *out;

	(void)state;
	assert_non_null(msg);
	assert_non_null(dec);
	n = (size_t)snprintf(msg, cap, "%s", head);
	body = msg + n;
	/* lines of every length, 8-bit octets, '=', spaces and tabs at the ends */
	for (int line = 0; line < 120; line++) {
		int len = line * 7 % 300 + (line == 60 ? 5000 : 0);

		for (int i = 0; i < len; i++) {
			static const char pool[] = "ab =\t\xc3\xa9xyz.0";
			msg[n++] = pool[(i * 31 + line) % (sizeof(pool) - 1)];
		}
		if (line % 5 == 0)
			msg[n++] = ' ';
		msg[n++] = '\r';
		msg[n++] = '\n';
	}
	out = convert_all(msg, n, 7, 100, &outlen);
	assert_non_null(strstr(out, "Content-Transfer-Encoding: quoted-printable\r\n"));
	declen = qp_decode(body_of(out), outlen - (size_t)(body_of(out) - out), dec);
	assert_int_equal(declen, n - (size_t)(body - msg));
	assert_memory_equal(dec, body, declen);
	free(out);
	free(msg);
	free(dec);
}

static void
test_binary_part_decodes_exactly(void **state)
{
	static const char head[] =
	    "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n"
	    "Content-Type: image/png\r\nContent-Transfer-Encoding: binary\r\n\r\n";
	static const char tail[] = "\r\n--zz--\r\n";
	char msg[4096], dec[8192];
	size_t n = sizeof(head) - 1, outlen, declen;
	const char *b, *end;
	char *out;

	(void)state;
	memcpy(msg, head, n);
	for (int i = 0; i < 2000; i++)
		msg[n++] = (char)(i * 7 % 256);   /* CR, LF, NUL, 8-bit, "--zz" never */
	memcpy(msg + n, tail, sizeof(tail) - 1);
	n += sizeof(tail) - 1;
	out = convert_all(msg, n, 0, 4096, &outlen);
	b = strstr(out, "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	assert_non_null(b);
	b += strlen("Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	end = strstr(b, "\r\n--zz--\r\n");
	assert_non_null(end);
	assert_string_equal(end, "\r\n--zz--\r\n");
	declen = qp_decode(b, (size_t)(end - b), dec);
	assert_int_equal(declen, 2000);
	assert_memory_equal(dec, msg + sizeof(head) - 1, 2000);
	free(out);
}

static void
test_preamble_8bit_and_reopen(void **state)
{
	static const char msg[] =
	    "Content-Type: multipart/mixed; boundary=b\r\n\r\n"
	    "pr\xc3\xa9\r\n--b\r\n\r\n\xc3\xa9\r\n--b--\r\n";
	static const char want[] =
	    "Content-Type: multipart/mixed; boundary=b\r\nMIME-Version: 1.0\r\n\r\n"
	    "pr??\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "=C3=A9\r\n--b--\r\n";
	struct mem m;
	struct msgsrc in = mem_src(&m, LIT(msg), 2), out;
	char buf[512];
	size_t got, n;

	(void)state;
	expect_conversion(LIT(msg), LIT(want));
	assert_int_equal(convert_7bit_open(&out, &in), 0);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(out.open(out.ctx), 0);
		n = 0;
		do {
			assert_int_equal(out.read(out.ctx, buf + n, 3, &got), 0);
			n += got;
		} while (got > 0);
		assert_int_equal(n, sizeof(want) - 1);
		assert_memory_equal(buf, want, n);
	}
	out.close(out.ctx);
	assert_int_equal(m.opens, 4);   /* one plan, three outputs */
	convert_7bit_free(&out);
}

static void
test_read_failure(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\n\xc3\xa9 and more text here\r\n";
	struct mem m;
	struct msgsrc in = mem_src(&m, LIT(msg), 4), out;
	char why[200], buf[64];
	size_t got;
	int rc;

	(void)state;
	m.fail_at = 8;
	assert_int_equal(convert_7bit_check(&in, why, sizeof(why)), CONVERT_ERROR);
	assert_non_null(strstr(why, "disk on fire"));
	assert_int_equal(convert_7bit_open(&out, &in), 0);
	assert_int_equal(out.open(out.ctx), -1);
	assert_int_equal(convert_7bit_impossible(&out), 0);
	m.fail_at = 20;     /* the plan reads it all: still failing */
	assert_int_equal(out.open(out.ctx), -1);
	m.fail_at = 0;
	assert_int_equal(out.open(out.ctx), 0);
	m.fail_at = 16;
	do
		rc = out.read(out.ctx, buf, sizeof(buf), &got);
	while (rc == 0 && got > 0);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(out.error(out.ctx), "disk on fire"));
	convert_7bit_free(&out);
	assert_int_equal(m.open, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_single_part_8bit),
		cmocka_unit_test(test_single_part_cte_replaced),
		cmocka_unit_test(test_multipart_8bit_and_base64),
		cmocka_unit_test(test_nested_multipart),
		cmocka_unit_test(test_8bit_header_impossible),
		cmocka_unit_test(test_opaque_parts_impossible),
		cmocka_unit_test(test_7bit_passes_through),
		cmocka_unit_test(test_qp_lines_decode_back),
		cmocka_unit_test(test_binary_part_decodes_exactly),
		cmocka_unit_test(test_preamble_8bit_and_reopen),
		cmocka_unit_test(test_read_failure),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
