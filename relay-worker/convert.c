/*
 * convert.c - 8-bit to 7-bit conversion (RFC 6152 3): a msgsrc filter that
 * re-encodes 8bit/binary leaf parts as quoted-printable (RFC 2045 6.7). Two
 * streaming passes in bounded memory: a plan (which leaves need it, whether
 * it is possible at all), then the output, line piece by line piece.
 */
#include "convert.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PIECE_MAX 998        /* octets of one line piece; longer lines come in pieces */
#define FIELD_MAX 8192       /* a Content-Type or Content-Transfer-Encoding field */
#define BOUNDARY_MAX 70      /* RFC 2046 5.1.1 */
#define LEAVES_MAX 65536     /* leaf parts in one message */
#define INBUF 16384
#define OUTBUF 32768
#define STEP_OUT_MAX (2 * FIELD_MAX + 4 * (PIECE_MAX + 2) + 256)  /* output of one step */
#define QP_TEXT_MAX 75       /* encoded octets before a soft break ("=" is the 76th) */

_Static_assert(OUTBUF >= STEP_OUT_MAX, "output buffer smaller than one step");
_Static_assert(INBUF >= PIECE_MAX + 2, "input buffer smaller than one piece");

enum cte { CTE_NONE, CTE_7BIT, CTE_8BIT, CTE_BINARY, CTE_QP, CTE_BASE64, CTE_OTHER };
enum field { F_OTHER, F_CT, F_CTE };
enum state { ST_HEADER, ST_LEAF, ST_PREAMBLE, ST_EPILOGUE };
enum kind { K_LEAF, K_OPAQUE, K_MULTIPART };

/* One line, or a piece of a longer one (then eol is ""). */
struct piece {
	const unsigned char *p;
	size_t len;
	const char *eol;        /* "\r\n", "\n", or "" (more of the line follows, or EOF) */
	int bol;                /* starts a line */
	int complete;           /* ends a line (a line end, or the end of the input) */
};

/* The header section being read: the message's or a body part's. */
struct head {
	int top;                /* the message's own header */
	int in_digest;          /* a part of multipart/digest: message/rfc822 by default */
	enum field field;       /* the field being read */
	int mime_version, ct_seen, ct_ok, cte_seen;
	int multipart, message, text, digest;
	enum cte cte;
	char boundary[BOUNDARY_MAX + 1];
	size_t flen, hlen;
	char fbuf[FIELD_MAX];   /* that field, when Content-Type or -Transfer-Encoding */
	char held[FIELD_MAX];   /* Content-Transfer-Encoding fields, written at the end */
};

struct level {
	char boundary[BOUNDARY_MAX + 1];
	size_t blen;
	int digest;
};

struct conv {
	const struct msgsrc *in;
	int in_open;
	/* the plan, from the first pass */
	int planning, planned, possible, passthrough, impossible;
	int any8bit;
	size_t nneeded;
	char problem[160];
	unsigned char *need;    /* a bit per leaf: re-encode it */
	size_t need_cap;        /* bytes */
	/* the walk over the MIME structure */
	enum state st;
	struct level levels[CONVERT_DEPTH_MAX];
	int depth;
	size_t leaves;
	/* the current leaf */
	enum kind kind;
	const char *opaque_why;
	size_t leaf;
	int text, encode, has8, nul, cte8;
	int col;                /* octets on the current encoded line */
	unsigned char ws;       /* a held space or tab: encoded if it ends the line */
	const char *pend_eol;   /* a line end not written yet (it may be a boundary's) */
	int done, failed;
	char err[256];
	/* input */
	size_t ipos, ilen;
	int ieof, bol;
	unsigned char ibuf[INBUF];
	/* output */
	size_t opos, olen;
	unsigned char obuf[OUTBUF];
	struct head h;
};

static void problem(struct conv *, const char *, ...) __attribute__((format(printf, 2, 3)));

static void
problem(struct conv *c, const char *fmt, ...)
{
	va_list ap;

	if (c->problem[0] != '\0')
		return;         /* the first one tells */
	va_start(ap, fmt);
	vsnprintf(c->problem, sizeof(c->problem), fmt, ap);
	va_end(ap);
}

static void
fail(struct conv *c, const char *what)
{
	if (!c->failed)
		snprintf(c->err, sizeof(c->err), "conversion to 7 bit: %s", what);
	c->failed = 1;
}

static const char *
src_error(const struct msgsrc *s)
{
	const char *e = s->error != NULL ? s->error(s->ctx) : NULL;

	return e != NULL && *e != '\0' ? e : "read failure";
}

/* ---- output ---- */

static void
emit(struct conv *c, const void *p, size_t n)
{
	if (c->planning || n == 0)
		return;
	if (n > OUTBUF - c->olen) {     /* cannot happen: see STEP_OUT_MAX */
		fail(c, "output overflow");
		return;
	}
	memcpy(c->obuf + c->olen, p, n);
	c->olen += n;
}

static void
emit_str(struct conv *c, const char *s)
{
	emit(c, s, strlen(s));
}

/* Text that readers ignore (preamble, epilogue): 8-bit octets become '?'. */
static void
emit_7bit(struct conv *c, const unsigned char *p, size_t n)
{
	size_t from = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] < 0x80)
			continue;
		emit(c, p + from, i - from);
		emit(c, "?", 1);
		from = i + 1;
	}
	emit(c, p + from, n - from);
}

/* ---- quoted-printable (RFC 2045 6.7) ---- */

static void
qp_put(struct conv *c, const char *tok, int w)
{
	if (c->col + w > QP_TEXT_MAX) {
		emit(c, "=\r\n", 3);    /* soft line break */
		c->col = 0;
	}
	emit(c, tok, (size_t)w);
	c->col += w;
}

static void
qp_hex(struct conv *c, unsigned char b)
{
	static const char hex[] = "0123456789ABCDEF";
	char t[3] = { '=', hex[b >> 4], hex[b & 15] };

	qp_put(c, t, 3);
}

/* The held space or tab: literal when more follows on the line, else encoded. */
static void
qp_ws(struct conv *c, int at_line_end)
{
	char b = (char)c->ws;

	if (b == 0)
		return;
	c->ws = 0;
	if (at_line_end)
		qp_hex(c, (unsigned char)b);
	else
		qp_put(c, &b, 1);
}

static void
qp_octet(struct conv *c, unsigned char b)
{
	char ch = (char)b;

	qp_ws(c, 0);
	if (b == ' ' || b == '\t')
		c->ws = b;
	else if (b >= 33 && b <= 126 && b != '=')
		qp_put(c, &ch, 1);
	else
		qp_hex(c, b);
}

/* A hard line break (a CRLF of text, or the one a boundary line owns). */
static void
qp_break(struct conv *c)
{
	qp_ws(c, 1);
	emit(c, "\r\n", 2);
	c->col = 0;
}

/*
 * Text keeps its CRLF as hard line breaks; a bare LF, and every line end
 * of other types, is data (=0D=0A). The last line end is held back: before
 * a boundary it is the boundary's, and stays a real CRLF.
 */
static void
qp_piece(struct conv *c, const struct piece *pc)
{
	if (c->pend_eol != NULL) {
		for (const char *e = c->pend_eol; *e != '\0'; e++)
			qp_octet(c, (unsigned char)*e);
		c->pend_eol = NULL;
	}
	for (size_t i = 0; i < pc->len; i++)
		qp_octet(c, pc->p[i]);
	if (c->text && strcmp(pc->eol, "\r\n") == 0)
		qp_break(c);
	else if (pc->eol[0] != '\0')
		c->pend_eol = pc->eol;
}

static void
qp_end(struct conv *c)
{
	qp_ws(c, 1);
	if (c->pend_eol != NULL) {
		c->pend_eol = NULL;
		qp_break(c);
	}
}

/* ---- the plan: a bit per leaf part ---- */

static int
need_get(const struct conv *c, size_t leaf)
{
	return leaf / 8 < c->need_cap && ((c->need[leaf / 8] >> (leaf % 8)) & 1);
}

static void
need_set(struct conv *c, size_t leaf)
{
	if (leaf >= LEAVES_MAX) {
		problem(c, "too many MIME parts");
		return;
	}
	if (leaf / 8 >= c->need_cap) {
		size_t cap = c->need_cap ? c->need_cap * 2 : 64;
		unsigned char *n;

		while (cap <= leaf / 8)
			cap *= 2;
		if ((n = realloc(c->need, cap)) == NULL) {
			fail(c, "out of memory");
			return;
		}
		memset(n + c->need_cap, 0, cap - c->need_cap);
		c->need = n;
		c->need_cap = cap;
	}
	c->need[leaf / 8] |= (unsigned char)(1u << (leaf % 8));
	c->nneeded++;
}

/* ---- header fields ---- */

/* Skips white space, line ends and (nested) comments. */
static const char *
skip_cfws(const char *p, const char *end)
{
	int depth = 0;

	for (; p < end; p++) {
		if (depth > 0) {
			if (*p == '\\' && p + 1 < end)
				p++;
			else if (*p == '(')
				depth++;
			else if (*p == ')')
				depth--;
		} else if (*p == '(') {
			depth = 1;
		} else if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
			break;
		}
	}
	return p;
}

/* Length of the MIME token at p (RFC 2045 5.1). */
static size_t
token_len(const char *p, const char *end)
{
	const char *q = p;

	while (q < end && (unsigned char)*q > ' ' && (unsigned char)*q < 127 &&
	    strchr("()<>@,;:\\\"/[]?=", *q) == NULL)
		q++;
	return (size_t)(q - p);
}

static int
is_word(const char *p, size_t n, const char *word)
{
	return n == strlen(word) && strncasecmp(p, word, n) == 0;
}

/* A parameter value (token or quoted string) into out; NULL on bad syntax. */
static const char *
param_value(const char *p, const char *end, char *out, size_t cap, size_t *len)
{
	size_t n = 0;

	*len = 0;
	if (p < end && *p != '"') {
		n = token_len(p, end);
		if (n == 0)
			return NULL;
		*len = n;
		if (n < cap)
			memcpy(out, p, n);
		out[n < cap ? n : 0] = '\0';
		return p + n;
	}
	for (p++; p < end && *p != '"'; p++) {
		if (*p == '\\' && p + 1 < end)
			p++;
		else if (*p == '\r' || *p == '\n')
			continue;       /* folding inside the quotes */
		if (n + 1 < cap)
			out[n] = *p;
		n++;
	}
	if (p >= end)
		return NULL;
	*len = n;
	out[n < cap ? n : 0] = '\0';
	return p + 1;
}

/* Content-Type: type/subtype and the boundary parameter. */
static void
parse_ct(struct head *h)
{
	const char *end = h->fbuf + h->flen, *p = memchr(h->fbuf, ':', h->flen), *type, *sub;
	size_t tn, sn, vlen;
	char val[128];

	if (p == NULL)
		return;
	p = skip_cfws(p + 1, end);
	type = p;
	p = skip_cfws(p + (tn = token_len(p, end)), end);
	if (tn == 0 || p >= end || *p != '/')
		return;
	sub = p = skip_cfws(p + 1, end);
	if ((sn = token_len(p, end)) == 0)
		return;
	p += sn;
	h->ct_ok = 1;
	h->multipart = is_word(type, tn, "multipart");
	h->message = is_word(type, tn, "message");
	h->text = is_word(type, tn, "text");
	h->digest = h->multipart && is_word(sub, sn, "digest");
	for (;;) {
		const char *name;
		size_t nn;

		p = skip_cfws(p, end);
		if (p >= end || *p != ';')
			break;
		name = p = skip_cfws(p + 1, end);
		p = skip_cfws(p + (nn = token_len(p, end)), end);
		if (nn == 0 || p >= end || *p != '=')
			break;
		p = param_value(skip_cfws(p + 1, end), end, val, sizeof(val), &vlen);
		if (p == NULL)
			break;
		if (is_word(name, nn, "boundary") && vlen >= 1 && vlen <= BOUNDARY_MAX)
			memcpy(h->boundary, val, vlen + 1);
	}
}

static void
parse_cte(struct head *h)
{
	static const struct { const char *name; enum cte cte; } known[] = {
		{ "7bit", CTE_7BIT }, { "8bit", CTE_8BIT }, { "binary", CTE_BINARY },
		{ "quoted-printable", CTE_QP }, { "base64", CTE_BASE64 },
	};
	const char *end = h->fbuf + h->flen, *p = memchr(h->fbuf, ':', h->flen);
	size_t n;

	h->cte = CTE_OTHER;
	if (p == NULL)
		return;
	p = skip_cfws(p + 1, end);
	n = token_len(p, end);
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (is_word(p, n, known[i].name))
			h->cte = known[i].cte;
}

static void
head_add(struct conv *c, char *buf, size_t *len, const void *p, size_t n)
{
	if (n > FIELD_MAX - *len) {
		problem(c, "a Content-Type or Content-Transfer-Encoding field is too long");
		if (!c->planning)
			fail(c, "header field too long");
		return;
	}
	memcpy(buf + *len, p, n);
	*len += n;
}

/* What the field starting with this piece is; notes MIME-Version. */
static enum field
field_kind(struct head *h, const unsigned char *p, size_t n)
{
	const unsigned char *colon = memchr(p, ':', n);
	const char *name = (const char *)p;
	size_t len;

	if (colon == NULL)
		return F_OTHER;
	len = (size_t)(colon - p);
	while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
		len--;
	if (is_word(name, len, "MIME-Version"))
		h->mime_version = 1;
	if (is_word(name, len, "Content-Type"))
		return F_CT;
	if (is_word(name, len, "Content-Transfer-Encoding"))
		return F_CTE;
	return F_OTHER;
}

/* The buffered field is complete: parse it; Content-Type goes out now. */
static void
field_end(struct conv *c)
{
	struct head *h = &c->h;

	if (h->field == F_CT) {
		if (!h->ct_seen)
			parse_ct(h);
		h->ct_seen = 1;
		emit(c, h->fbuf, h->flen);
	} else if (h->field == F_CTE) {
		if (!h->cte_seen)
			parse_cte(h);
		h->cte_seen = 1;
		head_add(c, h->held, &h->hlen, h->fbuf, h->flen);
	}
	h->field = F_OTHER;
	h->flen = 0;
}

static void
head_start(struct conv *c, int top)
{
	struct head *h = &c->h;

	h->top = top;
	h->in_digest = !top && c->depth > 0 && c->levels[c->depth - 1].digest;
	h->field = F_OTHER;
	h->mime_version = h->ct_seen = h->ct_ok = h->cte_seen = 0;
	h->multipart = h->message = h->text = h->digest = 0;
	h->cte = CTE_NONE;
	h->boundary[0] = '\0';
	h->flen = h->hlen = 0;
	c->st = ST_HEADER;
}

/* ---- entities ---- */

static enum kind
entity_kind(struct conv *c)
{
	struct head *h = &c->h;
	int message = h->ct_ok ? h->message : h->in_digest;

	c->text = h->ct_ok ? h->text : !h->in_digest;
	if (h->ct_ok && h->multipart) {
		if (h->boundary[0] == '\0')
			c->opaque_why = "multipart without a boundary";
		else if (c->depth >= CONVERT_DEPTH_MAX)
			c->opaque_why = "multipart nested too deep";
		else
			return K_MULTIPART;
		return K_OPAQUE;
	}
	if (message) {
		c->opaque_why = "message part";
		return K_OPAQUE;
	}
	if (h->cte == CTE_NONE || h->cte == CTE_7BIT || h->cte == CTE_8BIT ||
	    h->cte == CTE_BINARY)
		return K_LEAF;
	c->opaque_why = "part with a base64, quoted-printable or unknown encoding";
	return K_OPAQUE;
}

static void
leaf_begin(struct conv *c)
{
	c->leaf = c->leaves++;
	c->has8 = c->nul = 0;
	c->cte8 = c->h.cte == CTE_8BIT || c->h.cte == CTE_BINARY;
	c->encode = c->kind == K_LEAF && !c->planning && need_get(c, c->leaf);
	c->col = 0;
	c->ws = 0;
	c->pend_eol = NULL;
	c->st = ST_LEAF;
}

static void
leaf_end(struct conv *c)
{
	if (!c->planning) {
		if (c->encode)
			qp_end(c);
		return;
	}
	if (c->kind == K_OPAQUE && c->has8) {
		problem(c, "8-bit octets in a %s", c->opaque_why);
	}
	if (c->kind == K_LEAF && (c->cte8 || c->has8 || c->nul))
		need_set(c, c->leaf);
}

/* The header section ends (eol: its empty line's, "" at EOF or a boundary). */
static void
header_end(struct conv *c, const char *eol)
{
	struct head *h = &c->h;

	field_end(c);
	c->kind = entity_kind(c);
	if (!c->planning) {
		if (h->top && !h->mime_version && c->nneeded > 0)
			emit_str(c, "MIME-Version: 1.0\r\n");
		if (c->kind == K_LEAF && need_get(c, c->leaves))
			emit_str(c, "Content-Transfer-Encoding: quoted-printable\r\n");
		else if (c->kind == K_MULTIPART && (h->cte == CTE_8BIT || h->cte == CTE_BINARY))
			emit_str(c, "Content-Transfer-Encoding: 7bit\r\n");
		else
			emit(c, h->held, h->hlen);
	}
	emit_str(c, eol);
	if (c->kind == K_MULTIPART) {
		struct level *l = &c->levels[c->depth++];

		l->blen = strlen(h->boundary);
		memcpy(l->boundary, h->boundary, l->blen + 1);
		l->digest = h->digest;
		c->st = ST_PREAMBLE;
		return;
	}
	leaf_begin(c);
}

static void
header_piece(struct conv *c, const struct piece *pc)
{
	struct head *h = &c->h;

	if (pc->bol && pc->len == 0 && pc->eol[0] != '\0') {
		header_end(c, pc->eol);
		return;
	}
	for (size_t i = 0; i < pc->len; i++)
		if (pc->p[i] >= 0x80) {
			problem(c, "8-bit octets in a header field (that needs RFC 2047 encoding)");
			break;
		}
	if (pc->bol && pc->len > 0 && pc->p[0] != ' ' && pc->p[0] != '\t') {
		field_end(c);
		h->field = field_kind(h, pc->p, pc->len);
	}
	if (h->field == F_OTHER) {
		emit(c, pc->p, pc->len);
		emit_str(c, pc->eol);
		return;
	}
	head_add(c, h->fbuf, &h->flen, pc->p, pc->len);
	head_add(c, h->fbuf, &h->flen, pc->eol, strlen(pc->eol));
}

static void
leaf_piece(struct conv *c, const struct piece *pc)
{
	if (c->planning) {
		for (size_t i = 0; i < pc->len; i++) {
			c->has8 |= pc->p[i] >= 0x80;
			c->nul |= pc->p[i] == 0;
		}
		return;
	}
	if (c->encode) {
		qp_piece(c, pc);
		return;
	}
	emit(c, pc->p, pc->len);
	emit_str(c, pc->eol);
}

/* The level whose delimiter this line is (innermost first), or -1. */
static int
boundary_level(const struct conv *c, const struct piece *pc, int *close)
{
	for (int i = c->depth - 1; i >= 0; i--) {
		const struct level *l = &c->levels[i];
		const unsigned char *p = pc->p, *end = pc->p + pc->len;

		if (pc->len < 2 + l->blen || p[0] != '-' || p[1] != '-' ||
		    memcmp(p + 2, l->boundary, l->blen) != 0)
			continue;
		p += 2 + l->blen;
		*close = end - p >= 2 && p[0] == '-' && p[1] == '-';
		if (*close)
			p += 2;
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		if (p == end)
			return i;
	}
	return -1;
}

static void
on_boundary(struct conv *c, const struct piece *pc, int level, int close)
{
	if (c->st == ST_HEADER)
		header_end(c, "");      /* a part header cut short by the boundary */
	if (c->st == ST_LEAF)
		leaf_end(c);
	emit(c, pc->p, pc->len);
	emit_str(c, pc->eol);
	if (close) {
		c->depth = level;       /* the epilogue of that multipart */
		c->st = ST_EPILOGUE;
		return;
	}
	c->depth = level + 1;
	head_start(c, 0);
}

/* ---- input ---- */

static int
fill(struct conv *c)
{
	size_t want, got = 0;

	if (c->ipos > 0) {
		memmove(c->ibuf, c->ibuf + c->ipos, c->ilen - c->ipos);
		c->ilen -= c->ipos;
		c->ipos = 0;
	}
	want = INBUF - c->ilen;
	if (c->in->read(c->in->ctx, c->ibuf + c->ilen, want, &got) != 0 || got > want) {
		snprintf(c->err, sizeof(c->err), "reading the message: %s", src_error(c->in));
		return -1;
	}
	if (got == 0)
		c->ieof = 1;
	c->ilen += got;
	return 0;
}

/* The next line or piece of a line: 1, 0 at the end, -1 on a read failure. */
static int
next_piece(struct conv *c, struct piece *pc)
{
	for (;;) {
		const unsigned char *p = c->ibuf + c->ipos, *lf;
		size_t avail = c->ilen - c->ipos, n;

		lf = memchr(p, '\n', avail < PIECE_MAX + 2 ? avail : PIECE_MAX + 2);
		if (lf != NULL) {
			n = (size_t)(lf - p);
			c->ipos += n + 1;
			pc->eol = n > 0 && p[n - 1] == '\r' ? "\r\n" : "\n";
			pc->len = pc->eol[0] == '\r' ? n - 1 : n;
		} else if (avail >= PIECE_MAX + 2 || (c->ieof && avail > 0)) {
			/* no LF up to PIECE_MAX + 1: a final CR here is a bare one */
			pc->len = avail < PIECE_MAX ? avail : PIECE_MAX;
			c->ipos += pc->len;
			pc->eol = "";
		} else if (c->ieof) {
			return 0;
		} else {
			if (fill(c) != 0)
				return -1;
			continue;
		}
		pc->p = p;
		pc->bol = c->bol;
		pc->complete = pc->eol[0] != '\0' || (c->ieof && c->ipos == c->ilen);
		c->bol = pc->eol[0] != '\0';
		return 1;
	}
}

static void
at_eof(struct conv *c)
{
	if (c->st == ST_HEADER)
		header_end(c, "");
	if (c->st == ST_LEAF)
		leaf_end(c);
	c->done = 1;
}

/* One piece through the walk: 1, 0 at the end, -1 on failure. */
static int
step(struct conv *c)
{
	struct piece pc;
	int r = next_piece(c, &pc), level = -1, close = 0;

	if (r < 0)
		return -1;
	if (r == 0) {
		at_eof(c);
		return c->failed ? -1 : 0;
	}
	for (size_t i = 0; i < pc.len && !c->any8bit; i++)
		c->any8bit = pc.p[i] >= 0x80;
	if (pc.bol && pc.complete && c->depth > 0)
		level = boundary_level(c, &pc, &close);
	if (level >= 0)
		on_boundary(c, &pc, level, close);
	else if (c->st == ST_HEADER)
		header_piece(c, &pc);
	else if (c->st == ST_LEAF)
		leaf_piece(c, &pc);
	else {
		emit_7bit(c, pc.p, pc.len);
		emit_str(c, pc.eol);
	}
	return c->failed ? -1 : 1;
}

static void
walk_reset(struct conv *c, int planning)
{
	c->planning = planning;
	c->depth = 0;
	c->leaves = 0;
	c->done = c->failed = 0;
	c->ipos = c->ilen = 0;
	c->ieof = 0;
	c->bol = 1;
	c->opos = c->olen = 0;
	c->col = 0;
	c->ws = 0;
	c->pend_eol = NULL;
	head_start(c, 1);
}

static int
in_open(struct conv *c)
{
	if (c->in->open(c->in->ctx) != 0) {
		snprintf(c->err, sizeof(c->err), "opening the message: %s", src_error(c->in));
		return -1;
	}
	c->in_open = 1;
	return 0;
}

static void
in_close(struct conv *c)
{
	if (c->in_open && c->in->close != NULL)
		c->in->close(c->in->ctx);
	c->in_open = 0;
}

/* The first pass: which leaves to encode, and whether it can be done. */
static int
plan(struct conv *c)
{
	int r;

	if (in_open(c) != 0)
		return -1;
	walk_reset(c, 1);
	c->any8bit = 0;
	c->nneeded = 0;
	c->problem[0] = '\0';
	if (c->need != NULL)
		memset(c->need, 0, c->need_cap);
	while ((r = step(c)) > 0)
		;
	in_close(c);
	if (r < 0)
		return -1;
	c->planned = 1;
	c->passthrough = !c->any8bit;
	c->possible = !c->any8bit || c->problem[0] == '\0';
	return 0;
}

/* ---- the msgsrc ---- */

static int
cv_open(void *ctx)
{
	struct conv *c = ctx;

	in_close(c);
	c->impossible = 0;
	if (!c->planned && plan(c) != 0)
		return -1;
	if (!c->possible) {
		c->impossible = 1;
		snprintf(c->err, sizeof(c->err), "conversion to 7 bit not possible: %s",
		    c->problem);
		return -1;
	}
	if (in_open(c) != 0)
		return -1;
	walk_reset(c, 0);
	return 0;
}

/* Runs the walk until the output buffer is nearly full or the input ends. */
static int
produce(struct conv *c)
{
	int r = 1;

	if (c->opos > 0) {
		memmove(c->obuf, c->obuf + c->opos, c->olen - c->opos);
		c->olen -= c->opos;
		c->opos = 0;
	}
	while (r > 0 && OUTBUF - c->olen >= STEP_OUT_MAX)
		r = step(c);
	if (r < 0) {
		c->failed = 1;
		return -1;
	}
	return 0;
}

static int
cv_read(void *ctx, void *buf, size_t len, size_t *got)
{
	struct conv *c = ctx;
	size_t n;

	*got = 0;
	if (!c->in_open || c->failed) {
		if (!c->in_open && !c->failed)
			snprintf(c->err, sizeof(c->err), "conversion to 7 bit: not open");
		return -1;
	}
	if (c->passthrough) {
		if (c->in->read(c->in->ctx, buf, len, got) != 0 || *got > len) {
			snprintf(c->err, sizeof(c->err), "reading the message: %s",
			    src_error(c->in));
			*got = 0;
			return -1;
		}
		return 0;
	}
	while (c->opos == c->olen && !c->done)
		if (produce(c) != 0)
			return -1;
	n = c->olen - c->opos < len ? c->olen - c->opos : len;
	memcpy(buf, c->obuf + c->opos, n);
	c->opos += n;
	*got = n;
	return 0;
}

static void
cv_close(void *ctx)
{
	in_close(ctx);
}

static const char *
cv_error(void *ctx)
{
	return ((struct conv *)ctx)->err;
}

int
convert_7bit_open(struct msgsrc *out, const struct msgsrc *in)
{
	struct conv *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -1;
	c->in = in;
	out->ctx = c;
	out->open = cv_open;
	out->read = cv_read;
	out->close = cv_close;
	out->error = cv_error;
	return 0;
}

int
convert_7bit_impossible(const struct msgsrc *out)
{
	return out->ctx != NULL && ((const struct conv *)out->ctx)->impossible;
}

void
convert_7bit_free(struct msgsrc *out)
{
	struct conv *c = out->ctx;

	if (c == NULL)
		return;
	in_close(c);
	free(c->need);
	free(c);
	out->ctx = NULL;
}

enum convert_result
convert_7bit_check(const struct msgsrc *in, char *why, size_t whylen)
{
	struct msgsrc out;
	struct conv *c;
	enum convert_result r;

	if (convert_7bit_open(&out, in) != 0) {
		snprintf(why, whylen, "conversion to 7 bit: out of memory");
		return CONVERT_ERROR;
	}
	c = out.ctx;
	if (plan(c) != 0) {
		snprintf(why, whylen, "%s", c->err);
		r = CONVERT_ERROR;
	} else if (!c->possible) {
		snprintf(why, whylen, "%s", c->problem);
		r = CONVERT_IMPOSSIBLE;
	} else {
		snprintf(why, whylen, "%s", c->any8bit ? "" : "already 7 bit");
		r = CONVERT_POSSIBLE;
	}
	convert_7bit_free(&out);
	return r;
}
