/*
 * test_dsn.c - delivery status notifications, parsed back here: the top
 * Content-Type and boundary, the three parts in order, the delivery-status
 * fields, CRLF only, lines < 998 octets, HTML escaping of what a hostile
 * server said, the original headers; delay warnings; template errors.
 * Templates come from $MAILCELL_TEMPLATES, else "templates" (the repo root).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "dsn.h"

#define T0 1714566896  /* 2024-05-01T12:34:56Z */

struct part {
	const char *p;      /* from its first header line */
	size_t len;
};

static const char *
templates(void)
{
	const char *t = getenv("MAILCELL_TEMPLATES");

	return t != NULL && t[0] != '\0' ? t : "templates";
}

static const char orig_headers[] =
    "Received: from client.example.net by mx.example.net\r\n"
    "From: Sender <sender@example.net>\r\n"
    "To: a@remote.example, b@remote.example\r\n"
    "Subject: quarterly report\r\n"
    "Message-ID: <orig-1@example.net>\r\n"
    "\r\n";

static const struct dsn_rcpt two_failed[] = {
	{ "a@remote.example", "failed", "5.1.1", "mx.remote.example",
	  "550 5.1.1 <a@remote.example>: no such user <script>alert(1)</script>\r\n"
	  "Bcc: victim@example.com", 0 },
	{ "b@remote.example", NULL, "5.2.2", "mx.remote.example",
	  "552-5.2.2 mailbox full\r\n552 5.2.2 try again later", 0 },
};

static const struct dsn_log hostile_log[] = {
	{ T0, "", "220 mx.remote.example ESMTP" },
	{ T0 + 1, "EHLO mx.example.net", "250-mx.remote.example\r\n250-PIPELINING\r\n250 8BITMIME" },
	{ T0 + 2, "MAIL FROM:<sender@example.net>", "250 2.1.0 ok" },
	{ T0 + 3, "RCPT TO:<a@remote.example>",
	  "550 5.1.1 <script>alert('x')</script>\r\n\r\n--=_mc_fake\r\n"
	  "Content-Type: text/html\r\n\r\n<script>evil()</script>\x01\x1b[2J" },
	{ T0 + 4, "RCPT TO:<b@remote.example>", "552-5.2.2 mailbox full\n552 5.2.2 try again later" },
	{ T0 + 5, "QUIT", "221 bye" },
};

static struct dsn_input
failed_input(void)
{
	struct dsn_input in;

	memset(&in, 0, sizeof(in));
	in.hostname = "mx.example.net";
	in.sender = "sender@example.net";
	in.queue_id = "q-0001";
	in.arrival = T0 - 60;
	in.rcpts = two_failed;
	in.nrcpts = 2;
	in.log = hostile_log;
	in.nlog = sizeof(hostile_log) / sizeof(hostile_log[0]);
	in.orig_headers = orig_headers;
	in.orig_headers_len = sizeof(orig_headers) - 1;
	in.templates_dir = templates();
	in.now = T0 + 10;
	return in;
}

static char *
build(const struct dsn_input *in, size_t *len)
{
	char err[512] = "", *out = NULL;

	if (dsn_build(in, &out, len, err, sizeof(err)) != 0)
		fail_msg("dsn_build: %s", err);
	assert_non_null(out);
	assert_int_equal(strlen(out), *len);
	return out;
}

/* CRLF only, no NUL, every line shorter than 998 octets. */
static void
check_lines(const char *m, size_t len)
{
	size_t col = 0;

	for (size_t i = 0; i < len; i++) {
		assert_int_not_equal(m[i], '\0');
		if (m[i] == '\r') {
			assert_true(i + 1 < len && m[i + 1] == '\n');
			assert_true(col < 998);
			col = 0;
			i++;
			continue;
		}
		assert_int_not_equal(m[i], '\n');
		col++;
	}
	assert_int_equal(col, 0);
}

/* 1 if some line of m starts with s. */
static int
line_starts(const char *m, const char *s)
{
	size_t n = strlen(s);

	for (const char *p = m; p != NULL; p = strstr(p, "\r\n")) {
		if (p != m)
			p += 2;
		if (strncmp(p, s, n) == 0)
			return 1;
	}
	return 0;
}

/* End of the header section at h (the empty line), or NULL. */
static const char *
header_end(const char *h, size_t len)
{
	return memmem(h, len, "\r\n\r\n", 4);
}

/* The field's unfolded value in the header section starting at h. */
static int
field(const char *h, size_t len, const char *name, char *out, size_t size)
{
	const char *end = header_end(h, len), *p = h;
	size_t n = strlen(name), o = 0;

	if (end == NULL)
		end = h + len;
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
		if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
			const char *v = p + n + 1;
			for (;;) {
				while (v < eol && (*v == ' ' || *v == '\t') && o == 0)
					v++;
				while (v < eol && o + 1 < size)
					out[o++] = *v++;
				if (eol + 2 >= end || (eol[2] != ' ' && eol[2] != '\t'))
					break;
				v = eol + 2;
				eol = memmem(v, (size_t)(end - v) + 2, "\r\n", 2);
			}
			out[o] = '\0';
			return 0;
		}
		p = eol + 2;
	}
	return -1;
}

static const char *
body_of(const struct part *pt, size_t *len)
{
	const char *e = header_end(pt->p, pt->len);

	assert_non_null(e);
	*len = pt->len - (size_t)(e + 4 - pt->p);
	return e + 4;
}

/* Splits a multipart body at its delimiters; the number of parts. */
static int
split(const char *body, size_t len, const char *boundary, struct part *parts, int max)
{
	char delim[128];
	const char *p, *end = body + len;
	size_t dl;
	int n = 0;

	snprintf(delim, sizeof(delim), "\r\n--%s", boundary);
	dl = strlen(delim);
	p = memmem(body, len, delim, dl);
	assert_non_null(p);
	for (;;) {
		const char *next;
		p += dl;
		if (p + 2 <= end && memcmp(p, "--", 2) == 0)
			return n;
		assert_true(p + 2 <= end && memcmp(p, "\r\n", 2) == 0);
		p += 2;
		next = memmem(p, (size_t)(end - p), delim, dl);
		assert_non_null(next);
		assert_true(n < max);
		parts[n].p = p;
		parts[n].len = (size_t)(next - p);
		n++;
		p = next;
	}
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes quoted-printable (malloc'd, NUL-terminated); fails on bad escapes. */
static char *
qp_decode(const char *s, size_t len)
{
	char *out = malloc(len + 1);
	size_t o = 0;

	assert_non_null(out);
	for (size_t i = 0; i < len; i++) {
		if (s[i] != '=') {
			out[o++] = s[i];
			continue;
		}
		if (i + 2 < len && s[i + 1] == '\r' && s[i + 2] == '\n') {
			i += 2;
			continue;
		}
		assert_true(i + 2 < len);
		assert_true(hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0);
		out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
		i += 2;
	}
	out[o] = '\0';
	return out;
}

/* Lines of a quoted-printable body stay within 76 octets. */
static void
check_qp_lines(const char *s, size_t len)
{
	size_t col = 0;

	for (size_t i = 0; i < len; i++) {
		if (s[i] == '\r')
			continue;
		if (s[i] == '\n') {
			col = 0;
			continue;
		}
		assert_true(++col <= 76);
	}
}

/* The message's multipart/report boundary; its body in *body. */
static void
top_level(const char *m, size_t len, char *boundary, size_t size, const char **body,
    size_t *blen)
{
	char ct[512], *b, *q;
	const char *e = header_end(m, len);

	assert_non_null(e);
	assert_int_equal(field(m, len, "Content-Type", ct, sizeof(ct)), 0);
	assert_non_null(strstr(ct, "multipart/report;"));
	assert_non_null(strstr(ct, "report-type=delivery-status"));
	assert_non_null(b = strstr(ct, "boundary=\""));
	b += 10;
	assert_non_null(q = strchr(b, '"'));
	*q = '\0';
	snprintf(boundary, size, "%s", b);
	*body = e + 2;          /* keep the CRLF before the first delimiter */
	*blen = len - (size_t)(e + 2 - m);
}

/* Splits the DSN into its parts: alternative text/plain + text/html, status, headers. */
struct dsn_parsed {
	char boundary[128];
	struct part parts[4];
	int nparts;
	char *text, *html;
	const char *status;
	size_t status_len;
	const char *headers;
	size_t headers_len;
};

static void
parse_dsn(const char *m, size_t len, struct dsn_parsed *d)
{
	char ct[256], inner[128], *b;
	const char *body;
	size_t blen;
	struct part alt[3];

	memset(d, 0, sizeof(*d));
	top_level(m, len, d->boundary, sizeof(d->boundary), &body, &blen);
	d->nparts = split(body, blen, d->boundary, d->parts, 4);

	/* 1: multipart/alternative of text/plain and text/html */
	assert_true(d->nparts >= 2);
	assert_int_equal(field(d->parts[0].p, d->parts[0].len, "Content-Type", ct, sizeof(ct)), 0);
	assert_non_null(strstr(ct, "multipart/alternative"));
	assert_non_null(b = strstr(ct, "boundary=\""));
	snprintf(inner, sizeof(inner), "%.*s", (int)strcspn(b + 10, "\""), b + 10);
	assert_string_not_equal(inner, d->boundary);
	{
		const char *hb = header_end(d->parts[0].p, d->parts[0].len) + 2;
		assert_int_equal(split(hb, d->parts[0].len - (size_t)(hb - d->parts[0].p), inner,
		    alt, 3), 2);
	}
	for (int i = 0; i < 2; i++) {
		size_t l;
		const char *s;
		assert_int_equal(field(alt[i].p, alt[i].len, "Content-Type", ct, sizeof(ct)), 0);
		assert_string_equal(ct, i == 0 ? "text/plain; charset=utf-8" :
		    "text/html; charset=utf-8");
		assert_int_equal(field(alt[i].p, alt[i].len, "Content-Transfer-Encoding", ct,
		    sizeof(ct)), 0);
		assert_string_equal(ct, "quoted-printable");
		s = body_of(&alt[i], &l);
		check_qp_lines(s, l);
		if (i == 0)
			d->text = qp_decode(s, l);
		else
			d->html = qp_decode(s, l);
	}

	/* 2: message/delivery-status */
	assert_int_equal(field(d->parts[1].p, d->parts[1].len, "Content-Type", ct, sizeof(ct)), 0);
	assert_string_equal(ct, "message/delivery-status");
	d->status = body_of(&d->parts[1], &d->status_len);

	/* 3: text/rfc822-headers */
	if (d->nparts >= 3) {
		assert_int_equal(field(d->parts[2].p, d->parts[2].len, "Content-Type", ct,
		    sizeof(ct)), 0);
		assert_string_equal(ct, "text/rfc822-headers");
		d->headers = body_of(&d->parts[2], &d->headers_len);
	}
}

static void
free_dsn(struct dsn_parsed *d)
{
	free(d->text);
	free(d->html);
}

/* The n-th block (0: per-message fields) of the delivery-status part, as a copy. */
static char *
ds_block(const struct dsn_parsed *d, int n)
{
	const char *p = d->status, *end = d->status + d->status_len;
	char *copy;

	for (int i = 0; i < n; i++) {
		p = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (p == NULL)
			return NULL;
		p += 4;
	}
	{
		const char *e = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		size_t len = e != NULL ? (size_t)(e - p) : (size_t)(end - p);

		while (len >= 2 && p[len - 2] == '\r' && p[len - 1] == '\n')
			len -= 2;
		if (len == 0)
			return NULL;
		copy = malloc(len + 5);
		assert_non_null(copy);
		memcpy(copy, p, len);
		memcpy(copy + len, "\r\n\r\n", 5);   /* header_end() needs the empty line */
	}
	return copy;
}

static void
assert_field(const char *block, const char *name, const char *want)
{
	char v[2048];

	if (field(block, strlen(block), name, v, sizeof(v)) != 0)
		fail_msg("no %s field in:\n%s", name, block);
	assert_string_equal(v, want);
}

static void
test_failed_two_recipients(void **state)
{
	struct dsn_input in = failed_input();
	struct dsn_parsed d;
	char v[1024], *blk;
	size_t len;
	char *m = build(&in, &len);

	(void)state;
	check_lines(m, len);
	/* The header. */
	{
		static const char from[] =
		    "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n";
		assert_memory_equal(m, from, sizeof(from) - 1);
	}
	assert_field(m, "To", "<sender@example.net>");
	assert_field(m, "Subject", "Undelivered Mail Returned to Sender");
	assert_field(m, "Auto-Submitted", "auto-replied");
	assert_field(m, "MIME-Version", "1.0");
	assert_field(m, "Date", "Wed, 01 May 2024 12:35:06 +0000");
	assert_int_equal(field(m, len, "Message-ID", v, sizeof(v)), 0);
	assert_true(v[0] == '<' && strstr(v, "@mx.example.net>") != NULL);

	/* Nothing the server said became a header line or a MIME boundary. */
	assert_false(line_starts(m, "Bcc:"));
	assert_false(line_starts(m, "--=_mc_fake"));
	assert_false(line_starts(m, "Content-Type: text/html\r\n\r\n<script>"));
	assert_null(strstr(m, "\x1b"));
	assert_null(strstr(m, "\x01"));

	parse_dsn(m, len, &d);
	assert_int_equal(d.nparts, 3);

	/* The human parts: who, why, the log with times; HTML escaped. */
	assert_non_null(strstr(d.text, "<a@remote.example>"));
	assert_non_null(strstr(d.text, "<b@remote.example>"));
	assert_non_null(strstr(d.text, "5.1.1 (permanent failure: bad destination mailbox address)"));
	assert_non_null(strstr(d.text, "Reply:        552-5.2.2 mailbox full 552 5.2.2 try again later"));
	assert_non_null(strstr(d.text, "2024-05-01T12:34:57Z >>> EHLO mx.example.net\r\n"));
	assert_non_null(strstr(d.text, "2024-05-01T12:34:57Z <<< 250-PIPELINING\r\n"));
	assert_non_null(strstr(d.text, "2024-05-01T12:34:56Z <<< 220 mx.remote.example ESMTP\r\n"));
	assert_non_null(strstr(d.text, "Queue ID:  q-0001"));
	/* Template comments and the Subject line are gone, every tag rendered. */
	assert_int_equal(strncmp(d.text, "This is the mail system at mx.example.net.\r\n", 44), 0);
	assert_int_equal(strncmp(d.html, "<!DOCTYPE html>\r\n", 17), 0);
	assert_null(strstr(d.text, "{{"));
	assert_null(strstr(d.text, "}}"));
	assert_null(strstr(d.html, "{{"));
	assert_null(strstr(d.html, "}}"));
	assert_non_null(strstr(d.html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
	assert_non_null(strstr(d.html, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
	assert_non_null(strstr(d.html, "&lt;script&gt;evil()&lt;/script&gt;"));
	assert_null(strstr(d.html, "<script"));
	assert_non_null(strstr(d.html, "<title>Undelivered Mail Returned to Sender</title>"));
	assert_non_null(strstr(d.html, "2024-05-01T12:34:59Z &lt;&lt;&lt; --=_mc_fake"));

	/* The delivery-status fields. */
	blk = ds_block(&d, 0);
	assert_field(blk, "Reporting-MTA", "dns; mx.example.net");
	assert_field(blk, "Arrival-Date", "Wed, 01 May 2024 12:33:56 +0000");
	assert_field(blk, "X-Mailcell-Queue-ID", "q-0001");
	free(blk);
	blk = ds_block(&d, 1);
	assert_field(blk, "Final-Recipient", "rfc822; a@remote.example");
	assert_field(blk, "Action", "failed");
	assert_field(blk, "Status", "5.1.1");
	assert_field(blk, "Remote-MTA", "dns; mx.remote.example");
	assert_field(blk, "Diagnostic-Code", "smtp; 550 5.1.1 <a@remote.example>: no such user "
	    "<script>alert(1)</script> Bcc: victim@example.com");
	assert_field(blk, "Last-Attempt-Date", "Wed, 01 May 2024 12:35:01 +0000");
	assert_int_equal(field(blk, strlen(blk), "Will-Retry-Until", v, sizeof(v)), -1);
	free(blk);
	blk = ds_block(&d, 2);
	assert_field(blk, "Final-Recipient", "rfc822; b@remote.example");
	assert_field(blk, "Action", "failed");
	assert_field(blk, "Status", "5.2.2");
	assert_field(blk, "Diagnostic-Code", "smtp; 552-5.2.2 mailbox full 552 5.2.2 try again later");
	free(blk);
	assert_null(ds_block(&d, 3));

	/* The original's header section, without its empty line. */
	assert_int_equal(d.headers_len, sizeof(orig_headers) - 3);
	assert_memory_equal(d.headers, orig_headers, d.headers_len);
	assert_field(d.parts[2].p, "Content-Transfer-Encoding", "7bit");

	free_dsn(&d);
	free(m);
}

static void
test_delayed(void **state)
{
	static const struct dsn_rcpt r[] = {
		{ "c@slow.example", NULL, "4.4.1", "", "", T0 + 7 },
	};
	struct dsn_input in = failed_input();
	struct dsn_parsed d;
	char *m, *blk;
	size_t len;

	(void)state;
	in.delayed = 1;
	in.retry_until = T0 + 5 * 86400;
	in.rcpts = r;
	in.nrcpts = 1;
	in.log = NULL;
	in.nlog = 0;
	m = build(&in, &len);
	check_lines(m, len);
	assert_field(m, "Subject", "Delayed Mail (still being retried)");
	parse_dsn(m, len, &d);
	assert_int_equal(d.nparts, 3);
	blk = ds_block(&d, 1);
	assert_field(blk, "Final-Recipient", "rfc822; c@slow.example");
	assert_field(blk, "Action", "delayed");
	assert_field(blk, "Status", "4.4.1");
	assert_field(blk, "Last-Attempt-Date", "Wed, 01 May 2024 12:35:03 +0000");
	assert_field(blk, "Will-Retry-Until", "Mon, 06 May 2024 12:34:56 +0000");
	{
		char v[256];
		assert_int_equal(field(blk, strlen(blk), "Remote-MTA", v, sizeof(v)), -1);
		assert_int_equal(field(blk, strlen(blk), "Diagnostic-Code", v, sizeof(v)), -1);
	}
	free(blk);
	assert_non_null(strstr(d.text, "2024-05-06T12:34:56Z"));
	assert_non_null(strstr(d.text, "You do not need to do anything yet"));
	assert_non_null(strstr(d.text, "temporary failure: no answer from host"));
	assert_null(strstr(d.text, "Delivery log"));
	assert_non_null(strstr(d.html, "2024-05-06T12:34:56Z"));
	assert_int_equal(strncmp(d.text, "This is the mail system at mx.example.net.\r\n", 44), 0);
	assert_int_equal(strncmp(d.html, "<!DOCTYPE html>\r\n", 17), 0);
	assert_null(strstr(d.html, "}}"));
	free_dsn(&d);
	free(m);
}

static void
test_bounds(void **state)
{
	static char diag[3000], reply[6000], headers[100 * 1024];
	struct dsn_rcpt r[2] = {
		{ "j\xc3\xb6rg@example.de", "failed", "bogus", "mx.example.de", diag, 0 },
		{ "x@example.de", "failed", "5.0.0", "", "", 0 },
	};
	struct dsn_log lg[DSN_MAX_LOG + 5];
	struct dsn_input in = failed_input();
	struct dsn_parsed d;
	size_t len, o = 0;
	char *m, *blk, *dec;

	(void)state;
	memset(diag, 'x', sizeof(diag) - 1);
	diag[0] = '5', diag[1] = '5', diag[2] = '0', diag[3] = ' ';
	diag[100] = '\xff';                     /* invalid UTF-8 */
	memset(reply, 'y', sizeof(reply) - 1);
	for (size_t i = 0; i < sizeof(lg) / sizeof(lg[0]); i++)
		lg[i] = (struct dsn_log){ T0 + (time_t)i, "NOOP", i == 0 ? "first" : reply };
	/* Headers: one 2000-octet line, then many short ones past the bound. */
	o += (size_t)snprintf(headers, sizeof(headers), "X-Long: ");
	memset(headers + o, 'h', 2000);
	o += 2000;
	memcpy(headers + o, "\r\n", 2);
	o += 2;
	while (o + 40 < sizeof(headers))
		o += (size_t)snprintf(headers + o, sizeof(headers) - o, "X-Filler: %08zu\r\n", o);
	in.rcpts = r;
	in.nrcpts = 2;
	in.log = lg;
	in.nlog = sizeof(lg) / sizeof(lg[0]);
	in.orig_headers = headers;
	in.orig_headers_len = o;
	m = build(&in, &len);
	check_lines(m, len);
	parse_dsn(m, len, &d);

	blk = ds_block(&d, 1);
	assert_field(blk, "Final-Recipient", "utf-8; j\\x{F6}rg@example.de");
	assert_field(blk, "Status", "5.0.0");        /* "bogus" replaced */
	{
		char v[2048];
		assert_int_equal(field(blk, strlen(blk), "Diagnostic-Code", v, sizeof(v)), 0);
		assert_true(strlen(v) < DSN_MAX_DIAG + 16);
		assert_int_equal(strncmp(v, "smtp; 550 xxx", 13), 0);
		assert_non_null(strstr(v, "x?x"));
		assert_int_equal(strcmp(v + strlen(v) - 3, "..."), 0);
	}
	free(blk);
	/* Only the last DSN_MAX_LOG entries, and a note. */
	assert_null(strstr(d.text, "<<< first"));
	assert_non_null(strstr(d.text, "(5 earlier entries are not shown)"));
	assert_non_null(strstr(d.text, "yyy...\r\n"));

	/* Headers: quoted-printable (a long line), cut at a line boundary. */
	assert_field(d.parts[2].p, "Content-Transfer-Encoding", "quoted-printable");
	dec = qp_decode(d.headers, d.headers_len);
	assert_true(strlen(dec) <= DSN_MAX_ORIG_HEADERS);
	assert_true(strlen(dec) > DSN_MAX_ORIG_HEADERS - 40);
	assert_int_equal(strncmp(dec, "X-Long: hhhh", 12), 0);
	assert_int_equal(strcmp(dec + strlen(dec) - 2, "\r\n"), 0);
	assert_non_null(strstr(dec + strlen(dec) - 30, "\r\nX-Filler: "));
	free(dec);
	free_dsn(&d);
	free(m);
}

/* The human part lists the first DSN_SHOW_RCPTS, the delivery report all. */
static void
test_many_recipients(void **state)
{
	enum { N = DSN_SHOW_RCPTS + 50 };
	static char addrs[N][32];
	static struct dsn_rcpt r[DSN_MAX_RCPTS + 1];
	struct dsn_input in = failed_input();
	struct dsn_parsed d;
	char *m, *blk, err[256];
	size_t len;

	(void)state;
	for (int i = 0; i < N; i++) {
		snprintf(addrs[i], sizeof(addrs[i]), "user%d@remote.example", i);
		r[i] = (struct dsn_rcpt){ addrs[i], "failed", "5.1.1", "mx.remote.example",
		    "550 5.1.1 no such user", 0 };
	}
	in.rcpts = r;
	in.nrcpts = N;
	m = build(&in, &len);
	check_lines(m, len);
	parse_dsn(m, len, &d);
	assert_non_null(strstr(d.text, "<user99@remote.example>"));
	assert_null(strstr(d.text, "<user100@remote.example>"));
	assert_non_null(strstr(d.text, "...and 50 more recipients"));
	assert_non_null(strstr(d.html, "...and 50 more recipients"));
	assert_non_null(blk = ds_block(&d, N));
	assert_field(blk, "Final-Recipient", "rfc822; user149@remote.example");
	free(blk);
	assert_null(ds_block(&d, N + 1));
	free_dsn(&d);
	free(m);

	for (int i = N; i < DSN_MAX_RCPTS + 1; i++)
		r[i] = r[0];
	in.nrcpts = DSN_MAX_RCPTS + 1;
	assert_int_equal(dsn_build(&in, &m, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "DSN: 10001 recipients (1 to 10000 in one DSN)");
}

static void
write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
}

static void
remove_dir(const char *dir)
{
	static const char *const files[] = { "dsn-failed.txt", "dsn-failed.html",
		"dsn-delayed.txt", "dsn-delayed.html", NULL };
	char path[512];

	for (int i = 0; files[i] != NULL; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void
test_template_errors(void **state)
{
	char dir[] = "/tmp/mc-dsn-XXXXXX", err[512], want[600], *out = (char *)"x";
	struct dsn_input in = failed_input();
	size_t len = 1;

	(void)state;
	assert_int_equal(dsn_templates_check(templates(), err, sizeof(err)), 0);

	assert_int_equal(dsn_templates_check("/nonexistent/templates", err, sizeof(err)), -1);
	assert_string_equal(err, "templates directory /nonexistent/templates: "
	    "No such file or directory");
	in.templates_dir = "/nonexistent/templates";
	assert_int_equal(dsn_build(&in, &out, &len, err, sizeof(err)), -1);
	assert_null(out);
	assert_int_equal(len, 0);
	assert_string_equal(err, "templates directory /nonexistent/templates: "
	    "No such file or directory");

	assert_non_null(mkdtemp(dir));
	in.templates_dir = dir;
	write_file(dir, "dsn-failed.txt", "Hello {{sender}}\n");
	write_file(dir, "dsn-failed.html", "<p>\n{{#each recipients}}\n{{adress}}\n{{/each}}\n");
	write_file(dir, "dsn-delayed.txt", "x\n");
	assert_int_equal(dsn_templates_check(dir, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s/dsn-failed.html:3: unknown variable 'adress'", dir);
	assert_string_equal(err, want);
	assert_int_equal(dsn_build(&in, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, want);

	write_file(dir, "dsn-failed.html", "<p>{{#if log}}x</p>\n");
	assert_int_equal(dsn_templates_check(dir, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s/dsn-failed.html:1: {{#if log}} is never closed "
	    "with {{/if}}", dir);
	assert_string_equal(err, want);

	write_file(dir, "dsn-failed.html", "<p>{{sender}}</p>\n");
	assert_int_equal(dsn_templates_check(dir, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s/dsn-delayed.html: cannot open: No such file or "
	    "directory", dir);
	assert_string_equal(err, want);
	remove_dir(dir);

	/* Never a bounce to the null sender. */
	in = failed_input();
	in.sender = "";
	assert_int_equal(dsn_build(&in, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "DSN: no DSN to the null sender <>");
	in = failed_input();
	in.nrcpts = 0;
	assert_int_equal(dsn_build(&in, &out, &len, err, sizeof(err)), -1);
}

/* A subject from the template, not ASCII: RFC 2047 encoded words. */
static void
test_template_subject(void **state)
{
	char dir[] = "/tmp/mc-dsn-XXXXXX", v[512];
	struct dsn_input in = failed_input();
	struct dsn_parsed d;
	size_t len;
	char *m;

	(void)state;
	assert_non_null(mkdtemp(dir));
	write_file(dir, "dsn-failed.txt", "Subject: Unzustellbar an {{nrecipients}} "
	    "Empf\xc3\xa4nger \xe2\x80\x94 {{queue_id}}\n\nHallo {{sender}}.\n");
	write_file(dir, "dsn-failed.html", "<title>{{subject}}</title>\n");
	write_file(dir, "dsn-delayed.txt", "x\n");
	write_file(dir, "dsn-delayed.html", "x\n");
	in.templates_dir = dir;
	m = build(&in, &len);
	check_lines(m, len);
	assert_int_equal(field(m, len, "Subject", v, sizeof(v)), 0);
	assert_int_equal(strncmp(v, "=?utf-8?B?", 10), 0);
	parse_dsn(m, len, &d);
	assert_string_equal(d.text, "Hallo sender@example.net.\r\n");
	assert_string_equal(d.html, "<title>Unzustellbar an 2 Empf\xc3\xa4nger \xe2\x80\x94 "
	    "q-0001</title>\r\n");
	free_dsn(&d);
	free(m);
	remove_dir(dir);
}

/* Python's email package reads the DSN as we mean it (skipped without python3). */
static void
test_python_email(void **state)
{
	static const char script[] =
	    "import sys, email, email.policy\n"
	    "m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)\n"
	    "def need(c, what):\n"
	    "    if not c: sys.exit('python: ' + what)\n"
	    "need(m.get_content_type() == 'multipart/report', 'type')\n"
	    "need(m.get_param('report-type') == 'delivery-status', 'report-type')\n"
	    "need(str(m['subject']) == sys.argv[2], 'subject ' + str(m['subject']))\n"
	    "for p in m.walk():\n"
	    "    need(not p.defects, 'defects %r in %s' % (p.defects, p.get_content_type()))\n"
	    "parts = m.get_payload()\n"
	    "need([p.get_content_type() for p in parts] == ['multipart/alternative',"
	    " 'message/delivery-status', 'text/rfc822-headers'], 'parts')\n"
	    "alt = parts[0].get_payload()\n"
	    "need([p.get_content_type() for p in alt] == ['text/plain', 'text/html'], 'alt')\n"
	    "need('no such user' in alt[0].get_content(), 'text')\n"
	    "need('&lt;script&gt;' in alt[1].get_content(), 'html')\n"
	    "blocks = parts[1].get_payload()\n"
	    "need(len(blocks) == 3, 'blocks %d' % len(blocks))\n"
	    "need(blocks[0]['Reporting-MTA'] == 'dns; mx.example.net', 'reporting-mta')\n"
	    "need(blocks[1]['Action'] == 'failed' and blocks[2]['Status'] == '5.2.2', 'rcpts')\n";
	char path[] = "/tmp/mc-dsn-XXXXXX";
	struct dsn_input in = failed_input();
	size_t len;
	char *m;
	int fd, status;
	pid_t pid;

	(void)state;
	if (access("/usr/bin/python3", X_OK) != 0)
		skip();
	m = build(&in, &len);
	assert_true((fd = mkstemp(path)) >= 0);
	assert_int_equal(write(fd, m, len), (ssize_t)len);
	close(fd);
	free(m);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/usr/bin/python3", "python3", "-c", script, path,
		    "Undelivered Mail Returned to Sender", (char *)NULL);
		_exit(127);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	unlink(path);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_failed_two_recipients),
		cmocka_unit_test(test_delayed),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_many_recipients),
		cmocka_unit_test(test_template_errors),
		cmocka_unit_test(test_template_subject),
		cmocka_unit_test(test_python_email),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
