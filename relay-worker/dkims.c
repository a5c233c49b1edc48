/*
 * dkims.c - signs a message source with libopendkim: header fields through
 * the shared header splitter, the body chunk by chunk, then the signature
 * header (folded by the library) to put on top of what is sent.
 */
#include "dkims.h"

#include <stdio.h>
#include <string.h>

#include <opendkim/dkim.h>

#include "headers.h"
#include "log.h"

static DKIM_LIB *
library(void)
{
	static DKIM_LIB *lib;

	if (lib == NULL)
		lib = dkim_init(NULL, NULL);
	return lib;
}

static int
on_field(void *ctx, const char *field, size_t len)
{
	while (len > 0 && (field[len - 1] == '\n' || field[len - 1] == '\r'))
		len--;
	return dkim_header(ctx, (u_char *)field, len) == DKIM_STAT_OK ? 0 : -1;
}

static int
on_eoh(void *ctx, const char *sep, size_t len)
{
	(void)sep;
	(void)len;
	return dkim_eoh(ctx) == DKIM_STAT_OK ? 0 : -1;
}

static int
on_body(void *ctx, const void *buf, size_t len)
{
	return dkim_body(ctx, (u_char *)buf, len) == DKIM_STAT_OK ? 0 : -1;
}

/* Feeds the whole source; 0, or -1 with the reason in d->err. */
static int
feed(struct dkims *d, DKIM *dkim, const struct msgsrc *src)
{
	struct hdr_parser hp = { 0 };
	const struct hdr_callbacks cb = { dkim, on_field, on_eoh, on_body };
	unsigned char buf[16384];
	size_t got;
	int r = -1;

	if (src->open(src->ctx) != 0) {
		snprintf(d->err, sizeof(d->err), "cannot read message: %s", src->error(src->ctx));
		return -1;
	}
	for (;;) {
		if (src->read(src->ctx, buf, sizeof(buf), &got) != 0) {
			snprintf(d->err, sizeof(d->err), "cannot read message: %s", src->error(src->ctx));
			break;
		}
		if (got == 0) {
			r = hdr_finish(&hp, &cb);
			break;
		}
		if (hdr_feed(&hp, &cb, buf, got) != 0)
			break;
	}
	if (r != 0 && d->err[0] == '\0')
		snprintf(d->err, sizeof(d->err), "DKIM: %s", dkim_geterror(dkim));
	hdr_free(&hp);
	src->close(src->ctx);
	return r;
}

/* name + the library's header value, its folds made CRLF, then CRLF. */
static void
copy_crlf(char *out, size_t outlen, const char *name, const u_char *v, size_t len)
{
	size_t o = (size_t)snprintf(out, outlen, "%s", name);

	for (size_t i = 0; i < len && o + 4 < outlen; i++) {
		if (v[i] == '\r')
			continue;
		if (v[i] == '\n')
			out[o++] = '\r';
		out[o++] = (char)v[i];
	}
	memcpy(out + o, "\r\n", 3);
}

const char *
dkims_sign(struct dkims *d, const struct msgsrc *src)
{
	static const char name[] = "DKIM-Signature: ";
	DKIM_LIB *lib = library();
	DKIM_STAT st;
	DKIM *dkim;
	u_char *hdr = NULL;
	size_t len = 0;

	d->err[0] = '\0';
	if (lib == NULL || d->key.private_key == NULL) {
		snprintf(d->err, sizeof(d->err), "DKIM: no library or no key");
		return NULL;
	}
	dkim = dkim_sign(lib, (const unsigned char *)"relay", NULL,
	    (dkim_sigkey_t)d->key.private_key, (const unsigned char *)d->key.selector,
	    (const unsigned char *)d->key.domain, DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
	    DKIM_SIGN_RSASHA256, -1, &st);
	if (dkim == NULL) {
		snprintf(d->err, sizeof(d->err), "DKIM: cannot sign (status %d)", st);
		return NULL;
	}
	if (feed(d, dkim, src) != 0 || dkim_eom(dkim, NULL) != DKIM_STAT_OK ||
	    dkim_getsighdr_d(dkim, sizeof(name) - 1, &hdr, &len) != DKIM_STAT_OK ||
	    sizeof(name) + 2 * len + 2 > sizeof(d->header)) {
		if (d->err[0] == '\0')
			snprintf(d->err, sizeof(d->err), "DKIM: %s", dkim_geterror(dkim));
		dkim_free(dkim);
		return NULL;
	}
	copy_crlf(d->header, sizeof(d->header), name, hdr, len);
	dkim_free(dkim);
	return d->header;
}

const char *
dkims_sign_cb(void *ctx, const struct msgsrc *src)
{
	struct dkims *d = ctx;
	const char *h = dkims_sign(d, src);

	if (h == NULL)
		mc_log(MC_LOG_WARNING, "not DKIM-signed for %s: %s", d->key.domain, d->err);
	return h;
}
