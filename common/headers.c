/*
 * headers.c - the streaming header/body splitter (see headers.h). A header
 * section ends at the first empty line, or at a line that cannot be a field
 * (no "name:"), which then starts the body as RFC 5322 readers do.
 */
#include "headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Room for add more octets (doubling, so that tiny appends stay linear). */
static int
grow(char **buf, size_t *cap, size_t have, size_t add)
{
	size_t want = *cap ? *cap : 256;
	char *n;

	if (have + add > HDR_FIELD_MAX)
		return 1;
	if (have + add <= *cap)
		return 0;
	while (want < have + add)
		want *= 2;
	if ((n = realloc(*buf, want)) == NULL)
		return -1;
	*buf = n;
	*cap = want;
	return 0;
}

/* "name:" with a printable name (RFC 5322 2.2), optionally spaces before ':'. */
static int
field_start(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && s[i] > 32 && s[i] < 127 && s[i] != ':')
		i++;
	if (i == 0)
		return 0;
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i < len && s[i] == ':';
}

static int
flush_field(struct hdr_parser *p, const struct hdr_callbacks *cb)
{
	int r = 0;

	if (p->flen > 0)
		r = cb->field(cb->ctx, p->field, p->flen);
	p->flen = 0;
	return r ? -1 : 0;
}

/* The header section is over; line (may be empty) is the body's first. */
static int
start_body(struct hdr_parser *p, const struct hdr_callbacks *cb, const char *line, size_t len)
{
	p->in_body = 1;
	if (flush_field(p, cb) != 0 || cb->eoh(cb->ctx, "", 0) != 0)
		return -1;
	return len > 0 ? cb->body(cb->ctx, line, len) : 0;
}

/* The empty line that ends the header section belongs to neither part. */
static int
separator(struct hdr_parser *p, const struct hdr_callbacks *cb, const char *line, size_t len)
{
	p->in_body = 1;
	if (flush_field(p, cb) != 0)
		return -1;
	return cb->eoh(cb->ctx, line, len) != 0 ? -1 : 0;
}

static int
append_field(struct hdr_parser *p, const struct hdr_callbacks *cb, const char *line, size_t len)
{
	int g = grow(&p->field, &p->fcap, p->flen, len);

	if (g < 0)
		return -1;
	if (g > 0)   /* too long to be a field: the rest is body */
		return start_body(p, cb, line, len);
	memcpy(p->field + p->flen, line, len);
	p->flen += len;
	return 0;
}

static int
header_line(struct hdr_parser *p, const struct hdr_callbacks *cb, const char *line, size_t len)
{
	int blank = (len == 1 && line[0] == '\n') || (len == 2 && line[0] == '\r' && line[1] == '\n');

	if (blank)
		return separator(p, cb, line, len);
	if ((line[0] == ' ' || line[0] == '\t') && p->flen > 0)
		return append_field(p, cb, line, len);
	if (!field_start(line, len))
		return start_body(p, cb, line, len);
	if (flush_field(p, cb) != 0)
		return -1;
	return append_field(p, cb, line, len);
}

int
hdr_feed(struct hdr_parser *p, const struct hdr_callbacks *cb, const void *buf, size_t len)
{
	const char *s = buf;

	while (len > 0 && !p->in_body) {
		const char *lf = memchr(s, '\n', len);
		size_t n = lf ? (size_t)(lf - s) + 1 : len;
		int g = grow(&p->line, &p->lcap, p->llen, n);

		if (g < 0)
			return -1;
		if (g > 0) {   /* a line longer than any field: body from here */
			if (start_body(p, cb, p->line, p->llen) != 0)
				return -1;
			p->llen = 0;
			break;
		}
		memcpy(p->line + p->llen, s, n);
		p->llen += n;
		s += n;
		len -= n;
		if (lf != NULL) {
			size_t l = p->llen;
			p->llen = 0;
			if (header_line(p, cb, p->line, l) != 0)
				return -1;
		}
	}
	if (len > 0 && p->in_body)
		return cb->body(cb->ctx, s, len);
	return 0;
}

int
hdr_finish(struct hdr_parser *p, const struct hdr_callbacks *cb)
{
	if (p->in_body)
		return 0;
	if (p->llen > 0) {
		size_t l = p->llen;
		p->llen = 0;
		if (header_line(p, cb, p->line, l) != 0)
			return -1;
		if (p->in_body)
			return 0;
	}
	return start_body(p, cb, "", 0);
}

void
hdr_free(struct hdr_parser *p)
{
	free(p->line);
	free(p->field);
	memset(p, 0, sizeof(*p));
}

int
hdr_is(const char *field, size_t len, const char *name)
{
	size_t n = strlen(name), i = n;

	if (len < n || strncasecmp(field, name, n) != 0)
		return 0;
	while (i < len && (field[i] == ' ' || field[i] == '\t'))
		i++;
	return i < len && field[i] == ':';
}
