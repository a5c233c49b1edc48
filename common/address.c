/*
 * address.c - RFC 5321 4.1.2 path grammar (Reverse-path, Path, Mailbox,
 * Dot-string, Quoted-string, Domain, address literals) with the RFC 6531
 * UTF-8 extensions, written as a small recursive-descent parser over a cursor.
 */
#include "address.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

struct cur {
	const unsigned char *s;
	size_t len, pos;
	unsigned flags;
	int utf8_seen;
};

static int
peek(const struct cur *c)
{
	return c->pos < c->len ? c->s[c->pos] : -1;
}

static int
is_alpha(int ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static int
is_digit(int ch)
{
	return ch >= '0' && ch <= '9';
}

/* RFC 5322 atext. */
static int
is_atext(int ch)
{
	if (ch <= 0 || ch >= 0x80)
		return 0;
	return is_alpha(ch) || is_digit(ch) || strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL;
}

/*
 * Length of the valid UTF-8 sequence (2-4 octets, RFC 3629: no overlongs, no
 * surrogates, at most U+10FFFF) starting at p, or 0 if there is none.
 */
static size_t
utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	size_t need;
	unsigned lo = 0x80, hi = 0xbf;

	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0) lo = 0xa0;
		if (c == 0xed) hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0) lo = 0x90;
		if (c == 0xf4) hi = 0x8f;
	} else
		return 0;
	if (n < need || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return need;
}

/*
 * At a non-ASCII octet: consume one UTF-8 character if allowed. Returns
 * MC_ADDR_OK having advanced, or the reason it is not acceptable.
 */
static enum mc_addr_status
take_utf8(struct cur *c)
{
	size_t n;

	if (!(c->flags & MC_ADDR_ALLOW_UTF8))
		return MC_ADDR_NEED_UTF8;
	if ((n = utf8_seq(c->s + c->pos, c->len - c->pos)) == 0)
		return MC_ADDR_BAD_UTF8;
	c->pos += n;
	c->utf8_seen = 1;
	return MC_ADDR_OK;
}

/* Dot-string = Atom *("." Atom). */
static enum mc_addr_status
dot_string(struct cur *c)
{
	int atom_len = 0;

	for (;;) {
		int ch = peek(c);
		if (ch >= 0x80) {
			enum mc_addr_status s = take_utf8(c);
			if (s != MC_ADDR_OK)
				return s;
			atom_len++;
		} else if (is_atext(ch)) {
			c->pos++;
			atom_len++;
		} else if (ch == '.' && atom_len > 0) {
			c->pos++;
			atom_len = 0;
		} else
			break;
	}
	return atom_len > 0 ? MC_ADDR_OK : MC_ADDR_SYNTAX;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE. */
static enum mc_addr_status
quoted_string(struct cur *c)
{
	c->pos++;  /* opening quote */
	for (;;) {
		int ch = peek(c);
		if (ch < 0)
			return MC_ADDR_SYNTAX;
		if (ch == '"') {
			c->pos++;
			return MC_ADDR_OK;
		}
		if (ch == '\\') {
			int next = c->pos + 1 < c->len ? c->s[c->pos + 1] : -1;
			if (next < 32 || next > 126)  /* quoted-pairSMTP: %d92 %d32-126 */
				return MC_ADDR_SYNTAX;
			c->pos += 2;
		} else if (ch >= 0x80) {
			enum mc_addr_status s = take_utf8(c);
			if (s != MC_ADDR_OK)
				return s;
		} else if (ch >= 32 && ch <= 126) {
			c->pos++;
		} else
			return MC_ADDR_SYNTAX;
	}
}

/*
 * sub-domain = Let-dig [Ldh-str] (or a U-label under SMTPUTF8); no label
 * starts or ends with '-', 1 to 63 octets.
 */
static enum mc_addr_status
sub_domain(struct cur *c)
{
	size_t start = c->pos;
	int last = -1;

	for (;;) {
		int ch = peek(c);
		if (ch >= 0x80) {
			enum mc_addr_status s = take_utf8(c);
			if (s != MC_ADDR_OK)
				return s;
			last = 0x80;
		} else if (is_alpha(ch) || is_digit(ch) || (ch == '-' && c->pos > start)) {
			c->pos++;
			last = ch;
		} else
			break;
	}
	if (c->pos == start || last == '-' || c->pos - start > 63)
		return MC_ADDR_SYNTAX;
	return MC_ADDR_OK;
}

/* Domain = sub-domain *("." sub-domain). */
static enum mc_addr_status
domain(struct cur *c)
{
	enum mc_addr_status s;

	for (;;) {
		if ((s = sub_domain(c)) != MC_ADDR_OK)
			return s;
		if (peek(c) != '.')
			return MC_ADDR_OK;
		c->pos++;
	}
}

/*
 * The text inside "[...]": an IPv4 address, or "IPv6:" and an IPv6 address.
 * General-address-literals are refused: no other tag is registered.
 */
static int
literal_ok(const char *in, size_t n)
{
	char buf[MC_ADDR_DOMAIN_MAX + 1];
	unsigned char addr[16];

	if (n == 0 || n >= sizeof(buf))
		return 0;
	memcpy(buf, in, n);
	buf[n] = '\0';
	if (strncasecmp(buf, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, buf + 5, addr) == 1;
	return strspn(buf, "0123456789.") == n && inet_pton(AF_INET, buf, addr) == 1;
}

static enum mc_addr_status
address_literal(struct cur *c)
{
	const unsigned char *close = memchr(c->s + c->pos, ']', c->len - c->pos);

	if (close == NULL)
		return MC_ADDR_SYNTAX;
	if (!literal_ok((const char *)c->s + c->pos + 1, (size_t)(close - c->s) - c->pos - 1))
		return MC_ADDR_SYNTAX;
	c->pos = (size_t)(close - c->s) + 1;
	return MC_ADDR_OK;
}

/* Copy s[from..to) into a buffer of size cap; TOO_LONG if it does not fit. */
static enum mc_addr_status
copy_out(const struct cur *c, size_t from, char *dst, size_t cap, size_t max)
{
	size_t n = c->pos - from;

	if (n > max || n >= cap)
		return MC_ADDR_TOO_LONG;
	memcpy(dst, c->s + from, n);
	dst[n] = '\0';
	return MC_ADDR_OK;
}

static enum mc_addr_status
local_part(struct cur *c, struct mc_address *out)
{
	size_t start = c->pos;
	enum mc_addr_status s;

	out->is_quoted = peek(c) == '"';
	s = out->is_quoted ? quoted_string(c) : dot_string(c);
	if (s != MC_ADDR_OK)
		return s;
	return copy_out(c, start, out->local, sizeof(out->local), MC_ADDR_LOCAL_MAX);
}

static enum mc_addr_status
domain_part(struct cur *c, struct mc_address *out)
{
	size_t start = c->pos;
	enum mc_addr_status s;

	out->is_literal = peek(c) == '[';
	s = out->is_literal ? address_literal(c) : domain(c);
	if (s != MC_ADDR_OK)
		return s;
	return copy_out(c, start, out->domain, sizeof(out->domain), MC_ADDR_DOMAIN_MAX);
}

/* Mailbox = Local-part "@" ( Domain / address-literal ). */
static enum mc_addr_status
mailbox(struct cur *c, struct mc_address *out, int postmaster_ok)
{
	enum mc_addr_status s;

	if ((s = local_part(c, out)) != MC_ADDR_OK)
		return s;
	if (peek(c) != '@') {
		if (postmaster_ok && peek(c) == '>' && strcasecmp(out->local, "postmaster") == 0)
			return MC_ADDR_OK;
		return MC_ADDR_SYNTAX;
	}
	c->pos++;
	return domain_part(c, out);
}

/* A-d-l = At-domain *( "," At-domain ) ":" — parsed and dropped. */
static enum mc_addr_status
source_route(struct cur *c)
{
	enum mc_addr_status s;

	for (;;) {
		if (peek(c) != '@')
			return MC_ADDR_SYNTAX;
		c->pos++;
		if ((s = domain(c)) != MC_ADDR_OK)
			return s;
		if (peek(c) == ':') {
			c->pos++;
			return MC_ADDR_OK;
		}
		if (peek(c) != ',')
			return MC_ADDR_SYNTAX;
		c->pos++;
	}
}

static enum mc_addr_status
bracketed(struct cur *c, struct mc_address *out)
{
	enum mc_addr_status s;
	int routed = 0;

	c->pos++;  /* "<" */
	if (peek(c) == '>') {
		c->pos++;
		out->is_null = 1;
		return c->flags & MC_ADDR_ALLOW_NULL ? MC_ADDR_OK : MC_ADDR_NULL_NOT_ALLOWED;
	}
	if (peek(c) == '@') {
		if ((s = source_route(c)) != MC_ADDR_OK)
			return s;
		routed = 1;
	}
	if ((s = mailbox(c, out, !routed)) != MC_ADDR_OK)
		return s;
	if (peek(c) != '>')
		return MC_ADDR_SYNTAX;
	c->pos++;
	return c->pos > MC_ADDR_PATH_MAX ? MC_ADDR_TOO_LONG : MC_ADDR_OK;
}

enum mc_addr_status
mc_addr_parse_path(const char *s, size_t len, unsigned flags, struct mc_address *out,
    size_t *consumed)
{
	struct cur c = { (const unsigned char *)s, len, 0, flags, 0 };
	enum mc_addr_status st;

	memset(out, 0, sizeof(*out));
	*consumed = 0;
	if (len > 0 && s[0] == '<')
		st = bracketed(&c, out);
	else if (flags & MC_ADDR_ALLOW_BARE) {
		st = mailbox(&c, out, 0);
		if (st == MC_ADDR_OK && c.pos > MC_ADDR_PATH_MAX - 2)
			st = MC_ADDR_TOO_LONG;
	} else
		st = MC_ADDR_SYNTAX;
	if (st != MC_ADDR_OK)
		return st;
	out->is_utf8 = c.utf8_seen;
	*consumed = c.pos;
	return MC_ADDR_OK;
}

enum mc_addr_status
mc_addr_parse_mailbox(const char *s, unsigned flags, struct mc_address *out)
{
	size_t used, len = strlen(s);
	enum mc_addr_status st;

	if (len > 0 && s[0] == '<')
		return MC_ADDR_SYNTAX;
	st = mc_addr_parse_path(s, len, (flags | MC_ADDR_ALLOW_BARE) & ~(unsigned)MC_ADDR_ALLOW_NULL,
	    out, &used);
	if (st == MC_ADDR_OK && used != len)
		st = MC_ADDR_SYNTAX;
	return st;
}

/* Lowercase ASCII letters of src into dst. */
static void
lower_copy(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i] >= 'A' && src[i] <= 'Z' ? (char)(src[i] + 32) : src[i];
}

/* 1 if a quoted local part's content is a plain dot-string (lossless to unquote). */
static int
unquoted_ok(const char *q, size_t n)
{
	struct cur c = { (const unsigned char *)q + 1, n - 2, 0, MC_ADDR_ALLOW_UTF8, 0 };

	return n > 2 && memchr(q + 1, '\\', n - 2) == NULL && dot_string(&c) == MC_ADDR_OK &&
	    c.pos == c.len;
}

int
mc_addr_key(const struct mc_address *a, char *buf, size_t bufsz)
{
	const char *l = a->local;
	size_t ln = strlen(l), dn = strlen(a->domain), need;
	int keep_case = 0;

	if (a->is_quoted && unquoted_ok(l, ln)) {
		l++;
		ln -= 2;
	} else if (a->is_quoted)
		keep_case = 1;
	need = ln + (dn ? 1 + dn : 0) + 1;
	if (need > bufsz)
		return -1;
	if (keep_case)
		memcpy(buf, l, ln);
	else
		lower_copy(buf, l, ln);
	if (dn) {
		buf[ln] = '@';
		lower_copy(buf + ln + 1, a->domain, dn);
	}
	buf[need - 1] = '\0';
	return 0;
}

int
mc_addr_valid_domain(char *d, int allow_utf8)
{
	size_t n = strlen(d);
	struct cur c = { (const unsigned char *)d, n, 0, allow_utf8 ? MC_ADDR_ALLOW_UTF8 : 0, 0 };

	if (n == 0 || n > MC_ADDR_DOMAIN_MAX || domain(&c) != MC_ADDR_OK || c.pos != n)
		return 0;
	lower_copy(d, d, n);
	return 1;
}

const char *
mc_addr_strerror(enum mc_addr_status s)
{
	switch (s) {
	case MC_ADDR_OK: return "valid";
	case MC_ADDR_SYNTAX: return "syntax error in address";
	case MC_ADDR_TOO_LONG: return "address too long";
	case MC_ADDR_NEED_UTF8: return "non-ASCII address without SMTPUTF8";
	case MC_ADDR_NULL_NOT_ALLOWED: return "null address not allowed here";
	case MC_ADDR_BAD_UTF8: return "address is not valid UTF-8";
	}
	return "invalid address";
}
