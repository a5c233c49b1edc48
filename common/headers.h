/*
 * headers.h - splits a message as it streams in into its header fields
 * (folded lines kept together) and its body, so that fields can be checked,
 * fed to DKIM or dropped before they are stored. Bounded in memory.
 */
#ifndef SMTP_HEADERS_H
#define SMTP_HEADERS_H

#include <stddef.h>

#define HDR_FIELD_MAX 65536  /* a longer field ends the header section */

struct hdr_callbacks {
	void *ctx;
	/* One complete field, its line ends included; non-zero stops with an error. */
	int (*field)(void *ctx, const char *field, size_t len);
	/* The header section ended; sep is the empty line that ended it ("" if none). */
	int (*eoh)(void *ctx, const char *sep, size_t len);
	int (*body)(void *ctx, const void *buf, size_t len);
};

struct hdr_parser {
	int in_body;
	char *line;          /* the current line, until its LF */
	size_t llen, lcap;
	char *field;         /* the field being collected (complete lines) */
	size_t flen, fcap;
};

/* Feeds message octets; -1 when a callback failed or memory ran out. */
int hdr_feed(struct hdr_parser *p, const struct hdr_callbacks *cb, const void *buf, size_t len);
/* The message ended: flushes what is pending (header-only messages too). */
int hdr_finish(struct hdr_parser *p, const struct hdr_callbacks *cb);
void hdr_free(struct hdr_parser *p);

/* 1 if field (name: value...) has this name, case-insensitively. */
int hdr_is(const char *field, size_t len, const char *name);

#endif
