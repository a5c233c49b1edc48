/*
 * fuzz_headers.c - libFuzzer harness (5): the header parsing used for DMARC,
 * common/headers.c's streaming splitter feeding inbound.c's From-domain
 * extraction (from_field, strip_comments, mailbox_domain) as data.c does.
 */
/*
 * The message is split whole, in chunks and (if small) octet by octet: all
 * must agree and give back every octet. Then the verdict on its From
 * header(s) and the domain DMARC would check are compared with what a reader
 * of the message sees.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "headers.h"
#include "inbound.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the splitter reported: the octets of each part, in order. */
struct transcript {
	char *buf;              /* fields, then sep, then body, as given */
	size_t len, cap;
	size_t nfields, froms;
	size_t fields_end;      /* offset where the separator starts */
	char *from;             /* the first From field's value, NUL-terminated */
	size_t fromlen;
	int eoh;
	struct inbound *in;     /* NULL: splitter only */
};

static void
add(struct transcript *t, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (t->len + n > t->cap) {
		size_t cap = t->cap ? t->cap : 1024;
		while (cap < t->len + n)
			cap *= 2;
		if ((t->buf = realloc(t->buf, cap)) == NULL)
			abort();
		t->cap = cap;
	}
	memcpy(t->buf + t->len, p, n);
	t->len += n;
}

static int
on_field(void *ctx, const char *field, size_t len)
{
	struct transcript *t = ctx;

	if (t->eoh)
		fuzz_fail("a field after the end of the header", field, len);
	if (len == 0 || len > HDR_FIELD_MAX)
		fuzz_fail("a field that is empty or too long", field, len);
	t->nfields++;
	if (hdr_is(field, len, "From") && t->froms++ == 0) {
		const char *colon = memchr(field, ':', len);
		t->fromlen = len - (size_t)(colon + 1 - field);
		if ((t->from = malloc(t->fromlen + 1)) == NULL)
			abort();
		memcpy(t->from, colon + 1, t->fromlen);
		t->from[t->fromlen] = '\0';
	}
	inbound_header(t->in, field, len);
	add(t, field, len);
	return 0;
}

static int
on_eoh(void *ctx, const char *sep, size_t len)
{
	struct transcript *t = ctx;

	if (t->eoh++)
		fuzz_fail("the header ended twice", sep, len);
	t->fields_end = t->len;
	inbound_eoh(t->in);
	add(t, sep, len);
	return 0;
}

static int
on_body(void *ctx, const void *buf, size_t len)
{
	struct transcript *t = ctx;

	if (!t->eoh)
		fuzz_fail("body before the end of the header", buf, len);
	inbound_body(t->in, buf, len);
	add(t, buf, len);
	return 0;
}

static void
split(struct transcript *t, const uint8_t *data, size_t size, size_t step)
{
	struct hdr_parser p;
	const struct hdr_callbacks cb = { t, on_field, on_eoh, on_body };

	memset(&p, 0, sizeof(p));
	for (size_t off = 0; off < size; off += step)
		if (hdr_feed(&p, &cb, data + off, size - off < step ? size - off : step) != 0)
			fuzz_fail("hdr_feed failed", "", 0);
	if (hdr_finish(&p, &cb) != 0)
		fuzz_fail("hdr_finish failed", "", 0);
	hdr_free(&p);
	if (t->eoh != 1)
		fuzz_fail("the header section never ended", "", 0);
	if (t->len != size || (size > 0 && memcmp(t->buf, data, size) != 0))
		fuzz_fail("the splitter lost or changed octets", "", 0);
}

static void
same(const struct transcript *a, const struct transcript *b)
{
	if (a->nfields != b->nfields || a->fields_end != b->fields_end || a->froms != b->froms)
		fuzz_fail("chunking changed how the message was split", "", 0);
}

/* The From domain DMARC would use: lower case, [a-z0-9.-] or UTF-8 octets. */
static void
check_domain(const char *d)
{
	size_t n = strlen(d);

	if (n == 0 || n > 255)
		fuzz_fail("an accepted From without a usable domain", d, n);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
		    c >= 0x80))
			fuzz_fail("a From domain with a character DMARC cannot use", d, n);
	}
}

static int
fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/*
 * The From field as its reader sees it (RFC 5322, obsolete forms included:
 * folding white space and comments may sit between any two tokens, so
 * "a@paypal .com" is a@paypal.com): comments, quoted strings and all white
 * space dropped, then for each mailbox the domain after the last '@' of its
 * addr-spec (inside <...> if it has a '<'), lower-cased. Returns 0
 * with that domain if all mailboxes share one, -1 if they differ or one has
 * none, 1 if the field is too odd to tell (unbalanced quotes or comments, a
 * backslash outside them, a domain too long for dom).
 */
static int
reader_domain(const char *v, size_t len, char *dom, size_t domlen)
{
	char *s = malloc(len + 1), *tok, *save = NULL;
	size_t n = 0;
	int depth = 0, quoted = 0, r = 0, found = 0;

	if (s == NULL)
		abort();
	for (size_t i = 0; i < len && r == 0; i++) {
		char c = v[i];
		if ((quoted || depth) && c == '\\')
			i++;
		else if (quoted)
			quoted = c != '"';
		else if (c == '(')
			depth++;
		else if (depth > 0)
			depth -= c == ')';
		else if (c == '"')
			quoted = 1;
		else if (c == '\\' || c == ')' || c == '\0')
			r = 1;
		else if (!fws(c))
			s[n++] = c;
	}
	s[n] = '\0';
	if (quoted || depth)
		r = 1;
	for (tok = strtok_r(s, ",", &save); tok != NULL && r == 0; tok = strtok_r(NULL, ",", &save)) {
		char *lt = strchr(tok, '<'), *addr = lt ? lt + 1 : tok, *gt, *at;
		size_t dl;
		if (lt != NULL && (gt = strchr(addr, '>')) != NULL)
			*gt = '\0';
		else if (lt == NULL && (dl = strlen(addr)) > 0 && addr[dl - 1] == ';')
			addr[dl - 1] = '\0';
		if ((at = strrchr(addr, '@')) == NULL || at[1] == '\0') {
			r = -1;
			break;
		}
		at++;
		if ((dl = strlen(at)) >= domlen) {
			r = 1;
			break;
		}
		for (size_t i = 0; i < dl; i++)
			at[i] = at[i] >= 'A' && at[i] <= 'Z' ? (char)(at[i] - 'A' + 'a') : at[i];
		if (found && strcmp(dom, at) != 0)
			r = -1;
		memcpy(dom, at, dl + 1);
		found = 1;
	}
	if (r == 0 && !found)
		r = -1;
	free(s);
	return r;
}

/* DMARC must judge the domain the reader is shown, or refuse the message. */
static void
check_reader(const struct transcript *t, enum inbound_verdict v, const char *header_from)
{
	char dom[512];
	int r;

	if (t->froms != 1 || v == IN_REJECT)
		return;
	if (memchr(t->from, '\0', t->fromlen) != NULL)   /* readers differ on what follows */
		fuzz_fail("accepted a From with a NUL in it", t->from, t->fromlen);
	r = reader_domain(t->from, t->fromlen, dom, sizeof(dom));
	if (r < 0)
		fuzz_fail("accepted a From whose mailboxes a reader sees without one domain",
		    t->from, t->fromlen);
	if (r == 0 && strcmp(dom, header_from) != 0)
		fuzz_fail("DMARC checked another domain than the From shows", t->from, t->fromlen);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_config cfg = *fuzz_config();
	struct transcript whole = { 0 }, chunked = { 0 }, bytes = { 0 };
	struct mc_dmarc_record rec;
	char head[8192], why[512];
	enum inbound_verdict v;

	fuzz_init();
	if ((whole.in = inbound_begin(&cfg, "192.0.2.1", "client.example",
	    "sender@remote.example")) == NULL)
		abort();
	/* Small chunks of a big input cost O(n^2) under ASan's realloc: fewer there. */
	split(&whole, data, size, size > 0 ? size : 1);
	split(&chunked, data, size, size <= 16384 ? 1 + size % 61 : 4096 + size % 61);
	same(&whole, &chunked);
	if (size <= 2048) {
		split(&bytes, data, size, 1);
		same(&whole, &bytes);
	}
	v = inbound_finish(whole.in, "fuzz", "example.test", &rec, head, sizeof(head), why,
	    sizeof(why));
	if (whole.froms != 1 && v != IN_REJECT)
		fuzz_fail("a message without exactly one From was not refused", "", 0);
	if (v != IN_REJECT)
		check_domain(rec.header_from);
	check_reader(&whole, v, rec.header_from);
	if (memchr(head, '\0', sizeof(head)) == NULL)
		fuzz_fail("the added header block is not terminated", "", 0);
	inbound_free(whole.in);
	free(whole.buf);
	free(whole.from);
	free(chunked.from);
	free(bytes.from);
	free(chunked.buf);
	free(bytes.buf);
	return 0;
}
