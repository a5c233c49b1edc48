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

static void
cur_init(struct cur *c, const char *s, size_t len, unsigned flags)
{
	c->s = (const unsigned char *)s;
	c->len = len;
	c->pos = 0;
	c->flags = flags;
	c->utf8_seen = 0;
}

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

/* RFC 5322 atext (ASCII only; UTF8-non-ascii is handled by the caller). */
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
		if (c == 0xe0)
			lo = 0xa0;
		if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f;
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
 * At a non-ASCII octet where RFC 6531 allows UTF8-non-ascii: consume one
 * character if SMTPUTF8 is on. C1 controls (U+0080-U+009F) are refused like
 * their C0 cousins. Returns MC_ADDR_OK having advanced, or the reason.
 */
static enum mc_addr_status
take_utf8(struct cur *c)
{
	const unsigned char *p = c->s + c->pos;
	size_t n;

	if (!(c->flags & MC_ADDR_ALLOW_UTF8))
		return MC_ADDR_NEED_UTF8;
	if ((n = utf8_seq(p, c->len - c->pos)) == 0)
		return MC_ADDR_BAD_UTF8;
	if (p[0] == 0xc2 && p[1] < 0xa0)
		return MC_ADDR_SYNTAX;
	c->pos += n;
	c->utf8_seen = 1;
	return MC_ADDR_OK;
}

/* Dot-string = Atom *("." Atom); no leading, trailing or double dot. */
static enum mc_addr_status
dot_string(struct cur *c)
{
	enum mc_addr_status s;
	int atom_len = 0;

	for (;;) {
		int ch = peek(c);

		if (ch >= 0x80) {
			if ((s = take_utf8(c)) != MC_ADDR_OK)
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

/*
 * Quoted-string = DQUOTE 1*QcontentSMTP DQUOTE, QcontentSMTP = qtextSMTP /
 * quoted-pairSMTP (%d92 %d32-126). Empty content is refused: it would be an
 * empty local part.
 */
static enum mc_addr_status
quoted_string(struct cur *c)
{
	enum mc_addr_status s;
	size_t start = ++c->pos;  /* past the opening quote */

	for (;;) {
		int ch = peek(c);

		if (ch == '"') {
			c->pos++;
			return c->pos - 1 > start ? MC_ADDR_OK : MC_ADDR_SYNTAX;
		}
		if (ch == '\\') {
			int next = c->pos + 1 < c->len ? c->s[c->pos + 1] : -1;

			if (next < 32 || next > 126)
				return MC_ADDR_SYNTAX;
			c->pos += 2;
		} else if (ch >= 0x80) {
			if ((s = take_utf8(c)) != MC_ADDR_OK)
				return s;
		} else if (ch >= 32 && ch <= 126)
			c->pos++;
		else
			return MC_ADDR_SYNTAX;  /* end of input, control, DEL */
	}
}

/*
 * sub-domain = Let-dig [Ldh-str] (or a U-label under SMTPUTF8): 1 to 63
 * octets, not starting or ending with '-'.
 */
static enum mc_addr_status
sub_domain(struct cur *c)
{
	enum mc_addr_status s;
	size_t start = c->pos;
	int last = -1;

	for (;;) {
		int ch = peek(c);

		if (ch >= 0x80) {
			if ((s = take_utf8(c)) != MC_ADDR_OK)
				return s;
			last = ch;
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

/* Domain = sub-domain *("." sub-domain); a trailing dot is an error. */
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
 * The text inside "[...]": an IPv4 address, or "IPv6:" and an IPv6 address
 * (the tag is case-insensitive, like all ABNF strings). Anything else,
 * including a syntactically fine General-address-literal, is refused.
 */
static int
literal_ok(const unsigned char *in, size_t n)
{
	char buf[64];
	unsigned char addr[16];

	if (n == 0 || n >= sizeof(buf))
		return 0;
	memcpy(buf, in, n);
	buf[n] = '\0';
	if (strncasecmp(buf, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, buf + 5, addr) == 1;
	return strspn(buf, "0123456789.") == n && inet_pton(AF_INET, buf, addr) == 1;
}

/* address-literal = "[" 1*dcontent "]", dcontent = %d33-90 / %d94-126. */
static enum mc_addr_status
address_literal(struct cur *c)
{
	size_t start = ++c->pos;  /* past "[" */
	int ch;

	while ((ch = peek(c)) >= 33 && ch <= 126 && ch != '[' && ch != '\\' && ch != ']')
		c->pos++;
	if (ch != ']' || !literal_ok(c->s + start, c->pos - start))
		return MC_ADDR_SYNTAX;
	c->pos++;
	return MC_ADDR_OK;
}

/* Copy s[from..pos) into dst (cap octets); TOO_LONG if over max. */
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

/*
 * Mailbox = Local-part "@" ( Domain / address-literal ). With postmaster_ok,
 * a lone "Postmaster" (any case) right before ">" is accepted too.
 */
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

/* A-d-l = At-domain *( "," At-domain ) ":", At-domain = "@" Domain: dropped. */
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

/* Reverse-path = Path / "<>"; Path = "<" [ A-d-l ":" ] Mailbox ">". */
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

/* A Mailbox without brackets; the same 256 limit counting "<" and ">". */
static enum mc_addr_status
bare(struct cur *c, struct mc_address *out)
{
	enum mc_addr_status s;

	if ((s = mailbox(c, out, 0)) != MC_ADDR_OK)
		return s;
	return c->pos > MC_ADDR_PATH_MAX - 2 ? MC_ADDR_TOO_LONG : MC_ADDR_OK;
}

enum mc_addr_status
mc_addr_parse_path(const char *s, size_t len, unsigned flags, struct mc_address *out,
    size_t *consumed)
{
	struct cur c;
	enum mc_addr_status st;

	cur_init(&c, s, len, flags);
	memset(out, 0, sizeof(*out));
	*consumed = 0;
	if (len > 0 && s[0] == '<')
		st = bracketed(&c, out);
	else if (flags & MC_ADDR_ALLOW_BARE)
		st = bare(&c, out);
	else
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

	if (len > 0 && s[0] == '<') {
		memset(out, 0, sizeof(*out));
		return MC_ADDR_SYNTAX;
	}
	flags = (flags & MC_ADDR_ALLOW_UTF8) | MC_ADDR_ALLOW_BARE;
	st = mc_addr_parse_path(s, len, flags, out, &used);
	if (st == MC_ADDR_OK && used != len)
		st = MC_ADDR_SYNTAX;
	return st;
}

static char
lower(char ch)
{
	return ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
}

/* Lowercase the ASCII letters of src[0..n) into dst (may be the same). */
static void
lower_copy(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = lower(src[i]);
}

/* The content of Quoted-string q[0..n), quoted-pairs decoded, into dst. */
static size_t
unquote(const char *q, size_t n, char *dst)
{
	size_t o = 0;

	for (size_t i = 1; i + 1 < n; i++) {
		if (q[i] == '\\')
			i++;
		dst[o++] = q[i];
	}
	return o;
}

/* 1 if p[0..n) is exactly a Dot-string (UTF-8 atext allowed). */
static int
is_dot_string(const char *p, size_t n)
{
	struct cur c;

	cur_init(&c, p, n, MC_ADDR_ALLOW_UTF8);
	return dot_string(&c) == MC_ADDR_OK && c.pos == n;
}

/* Quote p[0..n) into dst, escaping only '"' and '\\'; returns the length. */
static size_t
requote(const char *p, size_t n, char *dst)
{
	size_t o = 0;

	dst[o++] = '"';
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			dst[o++] = '\\';
		dst[o++] = p[i];
	}
	dst[o++] = '"';
	return o;
}

/*
 * The canonical local part into dst (at least MC_ADDR_LOCAL_MAX + 1 octets),
 * not yet lowercased. The canonical form is never longer than the original.
 */
static size_t
canonical_local(const struct mc_address *a, char *dst)
{
	char content[MC_ADDR_LOCAL_MAX];
	size_t n = strlen(a->local), cn;

	if (!a->is_quoted || n < 2) {
		memcpy(dst, a->local, n);
		return n;
	}
	cn = unquote(a->local, n, content);
	if (is_dot_string(content, cn)) {
		memcpy(dst, content, cn);
		return cn;
	}
	return requote(content, cn, dst);
}

int
mc_addr_key(const struct mc_address *a, char *buf, size_t bufsz)
{
	char l[MC_ADDR_LOCAL_MAX + 1];
	size_t ln, dn, need;

	if (a->is_null) {
		if (bufsz < 1)
			return -1;
		buf[0] = '\0';
		return 0;
	}
	ln = canonical_local(a, l);
	dn = strlen(a->domain);
	need = ln + (dn > 0 ? 1 + dn : 0) + 1;
	if (need > bufsz)
		return -1;
	lower_copy(buf, l, ln);
	if (dn > 0) {
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
	struct cur c;

	cur_init(&c, d, n, allow_utf8 ? MC_ADDR_ALLOW_UTF8 : 0);
	if (n == 0 || n > MC_ADDR_DOMAIN_MAX || domain(&c) != MC_ADDR_OK || c.pos != n)
		return 0;
	lower_copy(d, d, n);
	return 1;
}

const char *
mc_addr_strerror(enum mc_addr_status s)
{
	switch (s) {
	case MC_ADDR_OK:
		return "valid";
	case MC_ADDR_SYNTAX:
		return "syntax error in address";
	case MC_ADDR_TOO_LONG:
		return "address too long";
	case MC_ADDR_NEED_UTF8:
		return "non-ASCII address without SMTPUTF8";
	case MC_ADDR_NULL_NOT_ALLOWED:
		return "null address not allowed here";
	case MC_ADDR_BAD_UTF8:
		return "address is not valid UTF-8";
	}
	return "invalid address";
}
