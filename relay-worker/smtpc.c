/*
 * smtpc.c - the adaptive ESMTP client (RFC 5321) over a connected socket:
 * greeting, EHLO/HELO, STARTTLS, then transactions (RSET before each one on
 * a reused connection), each MAIL/RCPT (pipelined when offered), the content
 * by BDAT or DATA and a result per recipient; QUIT at the end. Every server
 * reply is bounded and checked; every command is logged.
 */
#include "smtpc.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/ssl.h>

#include "convert.h"
#include "io.h"
#include "tls.h"

#define REPLY_LINE_MAX 998      /* octets of a reply line without CRLF (1000 with) */
#define REPLY_LINES_MAX 100     /* lines in one reply */
#define REPLY_KEEP 4096         /* reply text kept (lines joined); more is cut */
#define CMD_MAX 510             /* a command line without CRLF (RFC 5321 4.5.3.1.4) */
#define PIPELINE_MAX 100        /* commands in one pipelined group */
#define CHUNK 65536             /* BDAT chunk */
#define BDAT_WINDOW 4           /* BDAT chunks in flight with PIPELINING */
#define SIGN_MAX 16384          /* the header line from the sign callback */
#define QUIT_WAIT_MS 5000       /* how long the 221 may take */
#define DEFAULT_TIMEOUT 300     /* seconds, when opts->timeout is 0 */
#define WHY_MAX 512

enum {
	EXT_PIPELINING = 1, EXT_CHUNKING = 2, EXT_BINARYMIME = 4, EXT_8BITMIME = 8,
	EXT_SMTPUTF8 = 16, EXT_SIZE = 32, EXT_STARTTLS = 64, EXT_ENHANCED = 128,
};

enum rstate { R_WAIT, R_ACCEPTED, R_FINAL };

struct reply {
	int code;               /* 0: none */
	char enh[16];           /* "5.1.1" or "" */
	char text[REPLY_KEEP];  /* after the code, lines joined with " " */
	char raw[REPLY_KEEP];   /* whole lines joined with "\n", for the log */
	size_t tlen, rlen;
};

struct smtpc {
	/* the connection */
	struct mc_io *io;
	const struct smtpc_opts *o; /* &opts */
	struct smtpc_opts opts;     /* the caller's, names copied */
	char *helo_name, *server_name;
	int dead;                   /* no more commands on this connection */
	int broken;                 /* no more transactions (the session failed, or 421) */
	int greeted;                /* greeting, EHLO and STARTTLS are done */
	int quitting;               /* QUIT's failures do not change why */
	unsigned ntx;               /* transactions begun on it */
	unsigned ext;               /* EXT_* the server offers */
	uint64_t size_max;          /* its SIZE, 0 = none */
	SSL_CTX *own_ctx;
	unsigned char *buf;         /* CHUNK + 1 octets of content */
	/* the transaction */
	struct smtpc_msg *m;
	unsigned char *rstate;      /* enum rstate per recipient */
	int reused;                 /* on a connection that carried one before */
	int mail_answered;          /* the server has answered MAIL (421 does not count) */
	struct reply r;             /* the last reply */
	struct reply saved;         /* a failure reply kept while draining others */
	const struct msgsrc *src;   /* what is sent: m->src or conv */
	struct msgsrc conv;
	int conv_made, src_open;
	uint64_t size;              /* of src */
	const char *body;           /* " BODY=8BITMIME", " BODY=BINARYMIME" or "" */
	int bdat;
	char why[WHY_MAX];
};

/* ---- small helpers ---- */

static void set_why(struct smtpc *, const char *, ...) __attribute__((format(printf, 2, 3)));

static void
set_why(struct smtpc *c, const char *fmt, ...)
{
	va_list ap;

	if (c->quitting)
		return;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof(c->why), fmt, ap);
	va_end(ap);
}

static const char *
src_error(const struct msgsrc *s)
{
	const char *e = s->error != NULL ? s->error(s->ctx) : NULL;

	return e != NULL && *e != '\0' ? e : "read failure";
}

static void
log_entry(struct smtpc *c, const char *cmd, const char *reply)
{
	if (c->o->log != NULL)
		c->o->log(c->o->log_ctx, cmd, reply);
}

/* Appends n octets, cut at the buffer's end; control characters become '?'. */
static void
text_add(char *buf, size_t *len, size_t cap, const char *s, size_t n)
{
	for (size_t i = 0; i < n && *len + 1 < cap; i++) {
		unsigned char b = (unsigned char)s[i];
		buf[(*len)++] = b < 0x20 || b == 0x7f ? '?' : (char)b;
	}
	buf[*len] = '\0';
}

static int
is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* An enhanced status code (RFC 3463) of class cls at t: its length, or 0. */
static size_t
enh_len(const char *t, char cls)
{
	size_t i = 2, n;

	if (t[0] != cls || t[1] != '.')
		return 0;
	for (n = 0; n < 3 && is_digit(t[i]); n++)
		i++;
	if (n == 0 || t[i++] != '.')
		return 0;
	for (n = 0; n < 3 && is_digit(t[i]); n++)
		i++;
	if (n == 0 || (t[i] != '\0' && t[i] != ' '))
		return 0;
	return i;
}

/* The enhanced code a text starts with ("4.4.2 connection lost" -> "4.4.2"). */
static void
enh_of(const char *text, char *enh, size_t len)
{
	size_t n = enh_len(text, text[0]);

	snprintf(enh, len, "%.*s", (int)n, text);
}

/* A command line: -1 if it is too long or has a control character in it. */
static int cmd_make(char *, size_t, const char *, ...) __attribute__((format(printf, 3, 4)));

static int
cmd_make(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len || n > CMD_MAX)
		return -1;
	for (int i = 0; i < n; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			return -1;
	return 0;
}

/* Copies src into dst[cap], cut to fit. */
static void
copy_cut(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* A recipient's result; reply is text without its leading enhanced code. */
static void
rcpt_set(struct smtpc_rcpt *r, int code, const char *enh, const char *text)
{
	size_t n = strlen(enh);

	if (n > 0 && strncmp(text, enh, n) == 0 && (text[n] == ' ' || text[n] == '\0'))
		text += text[n] == ' ' ? n + 1 : n;
	r->code = code;
	copy_cut(r->enh, sizeof(r->enh), enh);
	copy_cut(r->reply, sizeof(r->reply), text);
}

/* Every recipient without a final reply gets this one. */
static void
finish_rest(struct smtpc *c, int code, const char *enh, const char *text)
{
	for (size_t i = 0; i < c->m->nrcpts; i++) {
		if (c->rstate[i] == R_FINAL)
			continue;
		rcpt_set(&c->m->rcpts[i], code, enh, text);
		c->rstate[i] = R_FINAL;
	}
}

/* ---- failures: each sets why and the recipients, and says the status ---- */

static void
note(struct smtpc *c, const char *what)
{
	snprintf(c->r.raw, sizeof(c->r.raw), "(%s)", what);
	c->r.code = 0;
}

static int
read_failed(struct smtpc *c, int st, const char *what)
{
	c->dead = 1;
	if (st == MC_IO_TIMEOUT) {
		note(c, "no reply: timeout");
		if (what == NULL)
			set_why(c, "4.4.1 timeout waiting for the greeting");
		else
			set_why(c, "4.4.1 timeout waiting for the reply to %s", what);
		return -1;
	}
	note(c, "no reply: connection lost");
	set_why(c, "4.4.2 connection lost %s%s%s%s", what ? "after " : "before the greeting",
	    what ? what : "", st == MC_IO_ERROR ? ": " : "",
	    st == MC_IO_ERROR ? mc_io_last_error(c->io) : "");
	return -1;
}

static int
write_failed(struct smtpc *c, int st, const char *what)
{
	c->dead = 1;
	note(c, "not sent: connection lost");
	if (st == MC_IO_TIMEOUT)
		set_why(c, "4.4.1 timeout sending %s", what);
	else
		set_why(c, "4.4.2 connection lost sending %s: %s", what, mc_io_last_error(c->io));
	return -1;
}

static int
malformed(struct smtpc *c, const char *what, const char *detail)
{
	c->dead = 1;
	note(c, "malformed reply");
	set_why(c, "4.5.0 malformed reply from the server (%s%s: %s)", what ? "to " : "greeting",
	    what ? what : "", detail);
	return -1;
}

/* No server reply for the recipients: code 0 and why. The connection is gone. */
static enum smtpc_status
conn_failed(struct smtpc *c)
{
	char enh[16];

	c->dead = 1;
	enh_of(c->why, enh, sizeof(enh));
	finish_rest(c, 0, enh, c->why);
	return SMTPC_TEMP;
}

/*
 * We stop here with a reason of our own: text starts with an enhanced code;
 * code 0 (no answer, TEMP) gives the recipients why with its detail.
 */
static enum smtpc_status
give_up(struct smtpc *c, enum smtpc_status st, int code, const char *text, const char *detail)
{
	char enh[16];

	set_why(c, "%s%s%s", text, detail ? ": " : "", detail ? detail : "");
	enh_of(text, enh, sizeof(enh));
	finish_rest(c, code, enh, code != 0 ? text : c->why);
	return st;
}

static enum smtpc_status
unexpected(struct smtpc *c, const struct reply *r, const char *what)
{
	set_why(c, "4.5.0 unexpected reply from the server (%s): %d %s", what, r->code, r->text);
	return conn_failed(c);
}

/* The server refused (4xx/5xx): its reply for everyone without one; QUIT. */
static enum smtpc_status
refused(struct smtpc *c, const struct reply *r, const char *what)
{
	enum smtpc_status st;

	if (r->code < 400)
		return unexpected(c, r, what);
	st = r->code >= 500 ? SMTPC_PERM : SMTPC_TEMP;
	set_why(c, "%d %s (%s)", r->code, r->text, what);
	finish_rest(c, r->code, r->enh, r->text);
	return st;
}

/*
 * A reused connection failed before the server took the transaction (no
 * reply to RSET or MAIL, or 421): nothing happened; the caller tries again
 * on a new connection. The recipients get code 0 and why.
 */
static enum smtpc_status
stale(struct smtpc *c)
{
	char enh[16];

	c->broken = 1;
	enh_of(c->why, enh, sizeof(enh));
	finish_rest(c, 0, enh, c->why);
	return SMTPC_RETRY;
}

/* The connection failed: stale when reused and MAIL is not answered yet. */
static enum smtpc_status
lost_early(struct smtpc *c)
{
	if (c->reused && !c->mail_answered)
		return stale(c);
	return conn_failed(c);
}

/* ---- replies ---- */

/* An EHLO keyword line: "SIZE 1000", "PIPELINING", ... */
static void
ehlo_keyword(struct smtpc *c, const char *p, size_t len)
{
	static const struct { const char *kw; unsigned bit; } kws[] = {
		{ "PIPELINING", EXT_PIPELINING }, { "CHUNKING", EXT_CHUNKING },
		{ "BINARYMIME", EXT_BINARYMIME }, { "8BITMIME", EXT_8BITMIME },
		{ "SMTPUTF8", EXT_SMTPUTF8 }, { "SIZE", EXT_SIZE },
		{ "STARTTLS", EXT_STARTTLS }, { "ENHANCEDSTATUSCODES", EXT_ENHANCED },
	};
	size_t n = 0;

	while (n < len && p[n] != ' ')
		n++;
	for (size_t i = 0; i < sizeof(kws) / sizeof(kws[0]); i++)
		if (n == strlen(kws[i].kw) && strncasecmp(p, kws[i].kw, n) == 0)
			c->ext |= kws[i].bit;
	if (n == 4 && strncasecmp(p, "SIZE", 4) == 0) {
		uint64_t v = 0;

		for (size_t i = 5; i < len && is_digit(p[i]); i++) {
			if (v > (UINT64_MAX - 9) / 10) {
				v = 0;          /* beyond any real limit: none */
				break;
			}
			v = v * 10 + (uint64_t)(p[i] - '0');
		}
		c->size_max = v;
	}
}

/* One reply line into c->r; -1 if it is not one, or has another code. */
static int
reply_line(struct smtpc *c, const char *line, size_t len, int first, int *last)
{
	struct reply *r = &c->r;
	const char *text = len > 4 ? line + 4 : "";
	size_t tl = len > 4 ? len - 4 : 0, skip;
	int code;

	if (len < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) ||
	    line[0] < '2' || line[0] > '5' || (len > 3 && line[3] != ' ' && line[3] != '-'))
		return -1;
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (!first && code != r->code)
		return -1;
	r->code = code;
	*last = len == 3 || line[3] == ' ';
	if (!first && r->rlen + 1 < sizeof(r->raw)) {
		r->raw[r->rlen++] = '\n';      /* lines joined with "\n" */
		r->raw[r->rlen] = '\0';
	}
	text_add(r->raw, &r->rlen, sizeof(r->raw), line, len);
	if (first) {
		text_add(r->text, &r->tlen, sizeof(r->text), text, tl);
		enh_of(r->text, r->enh, sizeof(r->enh));
		if (r->enh[0] != line[0])
			r->enh[0] = '\0';      /* "2.x.x" only on a 2xx reply, etc. */
		return 0;
	}
	skip = strlen(r->enh);
	if (skip > 0 && tl >= skip && memcmp(text, r->enh, skip) == 0 &&
	    (tl == skip || text[skip] == ' ')) {
		text += tl == skip ? skip : skip + 1;
		tl -= tl == skip ? skip : skip + 1;
	}
	if (tl > 0) {
		text_add(r->text, &r->tlen, sizeof(r->text), " ", 1);
		text_add(r->text, &r->tlen, sizeof(r->text), text, tl);
	}
	return 0;
}

/*
 * Reads one whole reply into c->r (what names the command, NULL for the
 * greeting; ehlo: parse keywords into c->ext). 0, or -1 with why set.
 */
static int
read_reply(struct smtpc *c, const char *what, int ehlo)
{
	struct reply *r = &c->r;
	int last = 0;

	r->code = 0;
	r->enh[0] = r->text[0] = r->raw[0] = '\0';
	r->tlen = r->rlen = 0;
	for (int n = 0; !last; n++) {
		const char *line;
		size_t len;
		unsigned flags;
		int st;

		if (n == REPLY_LINES_MAX)
			return malformed(c, what, "too many lines");
		st = mc_io_read_line(c->io, REPLY_LINE_MAX, &line, &len, &flags);
		if (st == MC_IO_TOO_LONG)
			return malformed(c, what, "line too long");
		if (st != MC_IO_OK)
			return read_failed(c, st, what);
		if ((flags & MC_IO_LINE_NUL) || reply_line(c, line, len, n == 0, &last) != 0)
			return malformed(c, what, "not a reply line");
		if (ehlo && n > 0 && len > 4)
			ehlo_keyword(c, line + 4, len - 4);
	}
	if (r->code == 421)
		c->broken = 1;      /* the server is closing the connection */
	return 0;
}

static int
send_line(struct smtpc *c, const char *cmd, const char *what)
{
	int st = mc_io_printf(c->io, "%s\r\n", cmd);

	return st == MC_IO_OK ? 0 : write_failed(c, st, what);
}

/* One command and its reply, logged: 0, or -1 when the connection failed. */
static int
command(struct smtpc *c, const char *cmd, const char *what, int ehlo)
{
	int rc = send_line(c, cmd, what);

	if (rc == 0)
		rc = read_reply(c, what, ehlo);
	log_entry(c, cmd, c->r.raw);
	return rc;
}

/* QUIT, without waiting long for the 221; nothing it does changes the result. */
static void
quit(struct smtpc *c)
{
	int ms = c->o->timeout != 0 && c->o->timeout < QUIT_WAIT_MS / 1000 ?
	    (int)c->o->timeout * 1000 : QUIT_WAIT_MS;

	if (c->dead)
		return;
	c->quitting = 1;
	mc_io_set_idle_timeout(c->io, ms);
	(void)command(c, "QUIT", "QUIT", 0);
	if (!c->dead && mc_io_is_tls(c->io))
		(void)mc_io_close(c->io);   /* close_notify, bounded */
	c->dead = 1;
}

/* ---- greeting, EHLO/HELO, STARTTLS ---- */

static enum smtpc_status
greeting(struct smtpc *c)
{
	int rc = read_reply(c, NULL, 0);

	log_entry(c, "", c->r.raw);
	if (rc != 0)
		return conn_failed(c);
	if (c->r.code / 100 == 2)
		return SMTPC_OK;
	return refused(c, &c->r, "greeting");
}

/* EHLO, or HELO when EHLO is refused with 5xx (then no extensions). */
static enum smtpc_status
ehlo(struct smtpc *c)
{
	const char *name = c->o->helo_name ? c->o->helo_name : "localhost";
	char cmd[CMD_MAX + 1];

	if (cmd_make(cmd, sizeof(cmd), "EHLO %s", name) != 0)
		return give_up(c, SMTPC_TEMP, 0, "4.3.5 our helo name cannot be sent", name);
	c->ext = 0;
	c->size_max = 0;
	if (command(c, cmd, "EHLO", 1) != 0)
		return conn_failed(c);
	if (c->r.code / 100 == 2)
		return SMTPC_OK;
	c->ext = 0;
	c->size_max = 0;
	if (c->r.code / 100 != 5)
		return refused(c, &c->r, "reply to EHLO");
	snprintf(cmd, sizeof(cmd), "HELO %s", name);
	if (command(c, cmd, "HELO", 0) != 0)
		return conn_failed(c);
	if (c->r.code / 100 == 2)
		return SMTPC_OK;
	return refused(c, &c->r, "reply to HELO");
}

static SSL_CTX *
client_ctx(struct smtpc *c, char *err, size_t len)
{
	if (c->o->tls_ctx != NULL)
		return c->o->tls_ctx;
	if (c->own_ctx == NULL)
		c->own_ctx = mc_tls_client_ctx(c->o->tls == SMTPC_TLS_VERIFY, NULL, err, len);
	return c->own_ctx;
}

/* The handshake after a 220 to STARTTLS; then EHLO again. */
static enum smtpc_status
handshake(struct smtpc *c, SSL_CTX *ctx)
{
	char info[128], line[192];
	int st = mc_io_start_tls_client(c->io, ctx, c->o->server_name), verified;

	if (st != MC_IO_OK) {
		log_entry(c, "<TLS handshake>", mc_io_last_error(c->io));
		set_why(c, SMTPC_WHY_TLS_FAILED ": %s", mc_io_last_error(c->io));
		return conn_failed(c);
	}
	verified = mc_io_tls_verified(c->io);
	mc_io_tls_info(c->io, info, sizeof(info));
	snprintf(line, sizeof(line), "%s, certificate %s", info,
	    verified ? "verified" : "not verified");
	log_entry(c, "<TLS handshake>", line);
	if (c->o->tls == SMTPC_TLS_VERIFY && !verified)
		return give_up(c, SMTPC_TEMP, 0, "4.7.5 the server's certificate did not verify",
		    c->o->server_name ? c->o->server_name : "(no name)");
	return ehlo(c);
}

/* STARTTLS when offered (RFC 3207); required or verified TLS per opts->tls. */
static enum smtpc_status
starttls(struct smtpc *c)
{
	int required = c->o->tls != SMTPC_TLS_OPPORTUNISTIC;
	char err[256] = "", detail[300];
	SSL_CTX *ctx;

	if (!(c->ext & EXT_STARTTLS)) {
		if (!required)
			return SMTPC_OK;
		return give_up(c, SMTPC_TEMP, 0, "4.7.4 TLS required but not offered by the server",
		    NULL);
	}
	if ((ctx = client_ctx(c, err, sizeof(err))) == NULL) {
		log_entry(c, "<TLS handshake>", err);
		if (!required)
			return SMTPC_OK;
		return give_up(c, SMTPC_TEMP, 0, "4.7.5 no TLS client context", err);
	}
	if (command(c, "STARTTLS", "STARTTLS", 0) != 0)
		return conn_failed(c);
	if (c->r.code == 220)
		return handshake(c, ctx);
	if (!required)
		return SMTPC_OK;        /* opportunistic: plaintext it is */
	snprintf(detail, sizeof(detail), "%d %.250s", c->r.code, c->r.text);
	return give_up(c, SMTPC_TEMP, 0, "4.7.4 TLS required but STARTTLS failed", detail);
}

static enum smtpc_status
hello(struct smtpc *c)
{
	enum smtpc_status st = ehlo(c);

	return st != SMTPC_OK ? st : starttls(c);
}

/* ---- what the message needs: SMTPUTF8, body type, conversion, size ---- */

/* Reads the source through once to learn its size. */
static int
measure(struct smtpc *c, const struct msgsrc *src, uint64_t *size)
{
	size_t got;
	int rc = 0;

	*size = 0;
	if (src->open(src->ctx) != 0)
		return -1;
	do {
		got = 0;
		if (src->read(src->ctx, c->buf, CHUNK, &got) != 0 || got > CHUNK) {
			rc = -1;
			break;
		}
		*size += got;
	} while (got > 0);
	if (src->close != NULL)
		src->close(src->ctx);
	return rc;
}

static enum smtpc_status
convert_source(struct smtpc *c, const char *lacks)
{
	char text[160];
	uint64_t size;

	if (convert_7bit_open(&c->conv, c->m->src) != 0)
		return give_up(c, SMTPC_TEMP, 0, "4.3.0 out of memory", NULL);
	c->conv_made = 1;
	if (measure(c, &c->conv, &size) != 0) {
		const char *err = src_error(&c->conv);

		if (!convert_7bit_impossible(&c->conv))
			return give_up(c, SMTPC_TEMP, 0, "4.3.0 cannot read the queued message", err);
		snprintf(text, sizeof(text),
		    "5.6.3 conversion required but not possible: the server lacks %s", lacks);
		return give_up(c, SMTPC_PERM, 554, text, err);
	}
	c->src = &c->conv;
	c->size = size;
	return SMTPC_OK;
}

static enum smtpc_status
size_check(struct smtpc *c)
{
	char detail[96];

	if (c->size_max == 0 || c->size <= c->size_max)
		return SMTPC_OK;
	snprintf(detail, sizeof(detail), "%" PRIu64 " octets, the limit is %" PRIu64,
	    c->size, c->size_max);
	return give_up(c, SMTPC_PERM, 552, "5.3.4 message size exceeds the server's limit", detail);
}

static enum smtpc_status
prepare(struct smtpc *c)
{
	const unsigned both = EXT_BINARYMIME | EXT_CHUNKING;
	const char *lacks = NULL;
	enum smtpc_status st;

	if (c->m->smtputf8 && !(c->ext & EXT_SMTPUTF8))
		return give_up(c, SMTPC_PERM, 553,
		    "5.6.7 non-ASCII address and the server lacks SMTPUTF8", NULL);
	c->src = c->m->src;
	c->size = c->m->size;
	c->body = "";
	c->bdat = (c->ext & EXT_CHUNKING) != 0;
	if ((st = size_check(c)) != SMTPC_OK)
		return st;
	if (c->m->body == SMTPC_8BITMIME) {
		if (c->ext & EXT_8BITMIME)
			c->body = " BODY=8BITMIME";
		else
			lacks = "8BITMIME";
	} else if (c->m->body == SMTPC_BINARYMIME) {
		if ((c->ext & both) == both)
			c->body = " BODY=BINARYMIME";
		else
			lacks = "BINARYMIME/CHUNKING";
	}
	if (lacks != NULL && (st = convert_source(c, lacks)) != SMTPC_OK)
		return st;
	return size_check(c);
}

/* ---- MAIL and RCPT ---- */

/* The command for item 0 (MAIL) or item k (RCPT of recipient k - 1). */
static int
item_cmd(struct smtpc *c, size_t item, char *buf, size_t len)
{
	char size[32] = "";

	if (item > 0)
		return cmd_make(buf, len, "RCPT TO:<%s>", c->m->rcpts[item - 1].address ?
		    c->m->rcpts[item - 1].address : "");
	if (c->ext & EXT_SIZE)
		snprintf(size, sizeof(size), " SIZE=%" PRIu64, c->size);
	return cmd_make(buf, len, "MAIL FROM:<%s>%s%s%s", c->m->sender ? c->m->sender : "",
	    size, c->body, c->m->smtputf8 ? " SMTPUTF8" : "");
}

/* A RCPT reply: accepted (the content reply will be final) or final now. */
static void
rcpt_reply(struct smtpc *c, size_t i)
{
	struct smtpc_rcpt *rc = &c->m->rcpts[i];
	char text[600];

	switch (c->r.code / 100) {
	case 2:
		c->rstate[i] = R_ACCEPTED;
		return;
	case 3:
		snprintf(text, sizeof(text), "4.5.0 unexpected reply to RCPT: %d %.400s",
		    c->r.code, c->r.text);
		rcpt_set(rc, 451, "4.5.0", text);
		break;
	default:
		rcpt_set(rc, c->r.code, c->r.enh, c->r.text);
	}
	c->rstate[i] = R_FINAL;
}

static int
item_reply(struct smtpc *c, size_t item, int *mail_ok)
{
	char cmd[CMD_MAX + 1];
	int rc = read_reply(c, item == 0 ? "MAIL" : "RCPT", 0);

	(void)item_cmd(c, item, cmd, sizeof(cmd));
	log_entry(c, cmd, c->r.raw);
	if (rc != 0)
		return -1;
	if (item == 0 && c->r.code != 421)
		c->mail_answered = 1;
	if (item == 0 && c->r.code / 100 != 2) {
		*mail_ok = 0;
		c->saved = c->r;
	} else if (item > 0 && *mail_ok) {
		rcpt_reply(c, item - 1);
	}
	return 0;
}

/* Sends the next group (one command without PIPELINING); items[] gets what went. */
static int
send_group(struct smtpc *c, size_t *next, size_t *items, size_t *n)
{
	size_t group = (c->ext & EXT_PIPELINING) ? PIPELINE_MAX : 1;
	size_t total = c->m->nrcpts + 1;
	char cmd[CMD_MAX + 1];

	for (*n = 0; *n < group && *next < total; (*next)++) {
		size_t item = *next;

		if (item_cmd(c, item, cmd, sizeof(cmd)) != 0) {
			if (item == 0)
				return 1;
			rcpt_set(&c->m->rcpts[item - 1], 553, "5.1.3",
			    "5.1.3 the address cannot be sent (too long or control characters)");
			c->rstate[item - 1] = R_FINAL;
			continue;
		}
		if (send_line(c, cmd, item == 0 ? "MAIL" : "RCPT") != 0) {
			log_entry(c, cmd, c->r.raw);
			return -1;
		}
		items[(*n)++] = item;
	}
	return 0;
}

static enum smtpc_status
envelope(struct smtpc *c)
{
	size_t items[PIPELINE_MAX], next = 0, n;
	int mail_ok = 1, rc;

	while (next < c->m->nrcpts + 1 && mail_ok) {
		if ((rc = send_group(c, &next, items, &n)) > 0)
			return give_up(c, SMTPC_PERM, 553,
			    "5.1.7 the sender address cannot be sent (too long or control characters)",
			    NULL);
		if (rc < 0)
			return lost_early(c);
		for (size_t i = 0; i < n; i++) {
			if (item_reply(c, items[i], &mail_ok) != 0)
				return lost_early(c);
			if (c->broken && mail_ok)       /* 421 to a RCPT: the server is leaving */
				return refused(c, &c->r, "reply to RCPT");
		}
	}
	if (!mail_ok && c->reused && c->saved.code == 421) {
		set_why(c, "4.4.2 reused connection closed by the server: %d %s", c->saved.code,
		    c->saved.text);
		return stale(c);
	}
	if (!mail_ok)
		return refused(c, &c->saved, "reply to MAIL");
	return SMTPC_OK;
}

static size_t
accepted(const struct smtpc *c)
{
	size_t n = 0;

	for (size_t i = 0; i < c->m->nrcpts; i++)
		n += c->rstate[i] == R_ACCEPTED;
	return n;
}

/* ---- the content ---- */

/* The reply to the content (or a refused DATA) is every accepted recipient's. */
static enum smtpc_status
content_reply(struct smtpc *c, const struct reply *r, const char *what, int may_be_ok)
{
	int cls = r->code / 100;

	if (cls == 3 || (cls == 2 && !may_be_ok))
		return unexpected(c, r, what);
	for (size_t i = 0; i < c->m->nrcpts; i++) {
		if (c->rstate[i] != R_ACCEPTED)
			continue;
		rcpt_set(&c->m->rcpts[i], r->code, r->enh, r->text);
		c->rstate[i] = R_FINAL;
	}
	if (cls != 2)
		return refused(c, r, what);
	set_why(c, "%d %s (%s)", r->code, r->text, what);
	return SMTPC_OK;
}

/* The source failed mid-content: drop the connection, never end the content. */
static enum smtpc_status
source_failed(struct smtpc *c, uint64_t sent)
{
	char entry[96];

	snprintf(entry, sizeof(entry), "<message: aborted after %" PRIu64 " octets>", sent);
	log_entry(c, entry, "(not sent: cannot read the queued message)");
	c->dead = 1;
	set_why(c, "4.3.0 cannot read the queued message: %s", src_error(c->src));
	return conn_failed(c);
}

struct stuffer {
	int bol;        /* at the start of a line */
	int cr;         /* a CR was held back */
};

static void
wr(struct smtpc *c, const void *p, size_t n, int *st)
{
	if (*st == MC_IO_OK && n > 0)
		*st = mc_io_write(c->io, p, n);
}

/* Writes p dot-stuffed (RFC 5321 4.5.2); a bare CR or LF goes out as CRLF. */
static int
stuff(struct smtpc *c, struct stuffer *s, const unsigned char *p, size_t n)
{
	size_t from = 0;
	int st = MC_IO_OK;

	for (size_t i = 0; i < n; i++) {
		if (s->cr) {
			s->cr = 0;
			s->bol = 1;
			wr(c, "\r\n", 2, &st);
			if (p[i] == '\n') {
				from = i + 1;
				continue;
			}
		}
		if (p[i] == '\r' || p[i] == '\n') {
			wr(c, p + from, i - from, &st);
			from = i + 1;
			if (p[i] == '\r') {
				s->cr = 1;
				continue;
			}
			wr(c, "\r\n", 2, &st);
			s->bol = 1;
			continue;
		}
		if (s->bol && p[i] == '.') {
			wr(c, p + from, i - from, &st);
			wr(c, ".", 1, &st);
			from = i;
		}
		s->bol = 0;
	}
	wr(c, p + from, n - from, &st);
	return st;
}

/* Ends DATA: a last line end if the content has none, then the dot line. */
static int
stuff_end(struct smtpc *c, struct stuffer *s)
{
	int st = MC_IO_OK;

	if (s->cr || !s->bol)
		wr(c, "\r\n", 2, &st);
	wr(c, ".\r\n", 3, &st);
	return st;
}

static enum smtpc_status
send_data(struct smtpc *c, const char *hdr, size_t hlen)
{
	struct stuffer s = { 1, 0 };
	uint64_t total = hlen;
	char entry[96];
	size_t got;
	int st, rc;

	if (command(c, "DATA", "DATA", 0) != 0)
		return conn_failed(c);
	if (c->r.code != 354)
		return content_reply(c, &c->r, "reply to DATA", 0);
	st = stuff(c, &s, (const unsigned char *)hdr, hlen);
	for (;;) {
		got = 0;
		if (c->src->read(c->src->ctx, c->buf, CHUNK, &got) != 0 || got > CHUNK)
			return source_failed(c, total);
		if (got == 0 || st != MC_IO_OK)
			break;
		total += got;
		st = stuff(c, &s, c->buf, got);
	}
	if (st == MC_IO_OK)
		st = stuff_end(c, &s);
	snprintf(entry, sizeof(entry), "<message: %" PRIu64 " octets via DATA>", total);
	rc = st == MC_IO_OK ? read_reply(c, "the end of DATA", 0) :
	    write_failed(c, st, "the message");
	log_entry(c, entry, c->r.raw);
	if (rc != 0)
		return conn_failed(c);
	return content_reply(c, &c->r, "reply to the message", 1);
}

/* Fills buf up to CHUNK + 1 octets (one more tells whether more follows). */
static int
fill_chunk(struct smtpc *c, size_t *len, int *eof)
{
	while (*len < CHUNK + 1) {
		size_t got = 0, want = CHUNK + 1 - *len;

		if (c->src->read(c->src->ctx, c->buf + *len, want, &got) != 0 || got > want)
			return -1;
		if (got == 0) {
			*eof = 1;
			return 0;
		}
		*len += got;
	}
	return 0;
}

/* Reads BDAT replies until fewer than `keep` are outstanding; the first failure is kept. */
static int
bdat_replies(struct smtpc *c, int *out, int keep, int *failed)
{
	while (*out > keep) {
		if (read_reply(c, "BDAT", 0) != 0)
			return -1;
		(*out)--;
		if (c->r.code / 100 != 2 && !*failed) {
			*failed = 1;
			c->saved = c->r;
		}
	}
	return 0;
}

/* RFC 3030: chunks of CHUNK octets, the last "BDAT n LAST"; pipelined in a window. */
static enum smtpc_status
send_bdat(struct smtpc *c, const char *hdr, size_t hlen)
{
	int window = (c->ext & EXT_PIPELINING) ? BDAT_WINDOW : 1, out = 0, eof = 0, failed = 0;
	int st = MC_IO_OK, rc = 0;
	size_t len = hlen, n;
	uint64_t total = 0;
	char entry[96];

	memcpy(c->buf, hdr, hlen);
	while (!eof && !failed && rc == 0) {
		if (fill_chunk(c, &len, &eof) != 0)
			return source_failed(c, total);
		n = eof ? len : CHUNK;
		st = mc_io_printf(c->io, "BDAT %zu%s\r\n", n, eof ? " LAST" : "");
		wr(c, c->buf, n, &st);
		if (st != MC_IO_OK) {
			rc = write_failed(c, st, "BDAT");
			break;
		}
		total += n;
		out++;
		memmove(c->buf, c->buf + n, len - n);
		len -= n;
		rc = bdat_replies(c, &out, eof ? 0 : window - 1, &failed);
	}
	if (rc == 0 && failed)
		rc = bdat_replies(c, &out, 0, &failed);
	snprintf(entry, sizeof(entry), "<message: %" PRIu64 " octets via BDAT>", total);
	log_entry(c, entry, rc == 0 && failed ? c->saved.raw : c->r.raw);
	if (rc != 0)
		return conn_failed(c);
	return content_reply(c, failed ? &c->saved : &c->r, "reply to the message", 1);
}

/* The sign callback's header line, with its CRLF; *len 0 without one. */
static int
signature(struct smtpc *c, char **hdr, size_t *len)
{
	const char *sig = c->m->sign ? c->m->sign(c->m->sign_ctx, c->src) : NULL;
	size_t n = sig ? strnlen(sig, SIGN_MAX + 1) : 0;

	*hdr = NULL;
	*len = 0;
	if (n == 0)
		return 0;
	if (n > SIGN_MAX || (*hdr = malloc(n + 3)) == NULL)
		return -1;
	memcpy(*hdr, sig, n);
	if (n < 2 || memcmp(sig + n - 2, "\r\n", 2) != 0) {
		memcpy(*hdr + n, "\r\n", 2);
		n += 2;
	}
	*len = n;
	return 0;
}

static enum smtpc_status
content(struct smtpc *c)
{
	enum smtpc_status st;
	char *hdr;
	size_t hlen;

	if (signature(c, &hdr, &hlen) != 0)
		return give_up(c, SMTPC_TEMP, 0, "4.3.0 the signature header is too long", NULL);
	if (c->src->open(c->src->ctx) != 0) {
		free(hdr);
		return give_up(c, SMTPC_TEMP, 0, "4.3.0 cannot read the queued message",
		    src_error(c->src));
	}
	c->src_open = 1;
	st = c->bdat ? send_bdat(c, hdr ? hdr : "", hlen) : send_data(c, hdr ? hdr : "", hlen);
	free(hdr);
	return st;
}

/* ---- the session and its transactions ---- */

/* Greeting, EHLO/HELO, STARTTLS: once per connection. */
static enum smtpc_status
open_session(struct smtpc *c)
{
	enum smtpc_status st;

	if ((st = greeting(c)) != SMTPC_OK || (st = hello(c)) != SMTPC_OK) {
		c->broken = 1;
		return st;
	}
	c->greeted = 1;
	return SMTPC_OK;
}

/* RSET before a transaction on a reused connection; stale unless 2xx. */
static enum smtpc_status
reset(struct smtpc *c)
{
	if (command(c, "RSET", "RSET", 0) != 0)
		return stale(c);
	if (c->r.code / 100 == 2)
		return SMTPC_OK;
	set_why(c, "4.4.2 reused connection: RSET answered %d %s", c->r.code, c->r.text);
	return stale(c);
}

static enum smtpc_status
transaction(struct smtpc *c)
{
	enum smtpc_status st = c->greeted ? reset(c) : open_session(c);

	if (st != SMTPC_OK || (st = prepare(c)) != SMTPC_OK || (st = envelope(c)) != SMTPC_OK)
		return st;
	if (accepted(c) == 0) {
		set_why(c, "no recipient was accepted");
		return SMTPC_OK;
	}
	return content(c);
}

static int
idle_ms(const struct smtpc_opts *o)
{
	unsigned s = o->timeout != 0 ? o->timeout : DEFAULT_TIMEOUT;

	return s > INT_MAX / 1000 ? INT_MAX : (int)s * 1000;
}

/* What one transaction leaves behind: its source, its conversion, its states. */
static void
transaction_end(struct smtpc *c)
{
	if (c->src_open && c->src->close != NULL)
		c->src->close(c->src->ctx);
	if (c->conv_made)
		convert_7bit_free(&c->conv);
	c->src_open = c->conv_made = 0;
	c->src = NULL;
	free(c->rstate);
	c->rstate = NULL;
	c->m = NULL;
}

/* Before there is a connection to speak of: everyone gets code 0 and text. */
static enum smtpc_status
early_failure(struct smtpc_msg *msg, const char *text, char *why, size_t whylen)
{
	char enh[16];

	enh_of(text, enh, sizeof(enh));
	for (size_t i = 0; i < msg->nrcpts; i++)
		rcpt_set(&msg->rcpts[i], 0, enh, text);
	snprintf(why, whylen, "%s", text);
	return SMTPC_TEMP;
}

struct smtpc *
smtpc_new(int fd, const struct smtpc_opts *opts)
{
	struct smtpc *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->opts = *opts;
	c->o = &c->opts;
	if (opts->helo_name != NULL && (c->helo_name = strdup(opts->helo_name)) == NULL)
		goto fail;
	if (opts->server_name != NULL && (c->server_name = strdup(opts->server_name)) == NULL)
		goto fail;
	c->opts.helo_name = c->helo_name;
	c->opts.server_name = c->server_name;
	if ((c->buf = malloc(CHUNK + 1)) == NULL)
		goto fail;
	if ((c->io = mc_io_new(fd, fd, idle_ms(opts))) == NULL)
		goto fail;
	return c;
fail:
	smtpc_free(c);
	return NULL;
}

void
smtpc_set_log(struct smtpc *c, void (*log)(void *, const char *, const char *), void *ctx)
{
	c->opts.log = log;
	c->opts.log_ctx = ctx;
}

int
smtpc_reusable(const struct smtpc *c)
{
	return c->greeted && !c->dead && !c->broken;
}

unsigned
smtpc_transactions(const struct smtpc *c)
{
	return c->ntx;
}

enum smtpc_status
smtpc_send(struct smtpc *c, struct smtpc_msg *msg, char *why, size_t whylen)
{
	char dummy[1];
	enum smtpc_status st;

	if (why == NULL || whylen == 0) {
		why = dummy;
		whylen = sizeof(dummy);
	}
	for (size_t i = 0; i < msg->nrcpts; i++)
		rcpt_set(&msg->rcpts[i], 0, "", "");
	if (c->dead || c->broken)
		return early_failure(msg, "4.4.2 the connection is no longer usable", why, whylen);
	if ((c->rstate = calloc(msg->nrcpts ? msg->nrcpts : 1, 1)) == NULL)
		return early_failure(msg, "4.3.0 out of memory", why, whylen);
	c->m = msg;
	c->reused = c->ntx > 0;
	c->mail_answered = 0;
	c->why[0] = '\0';
	c->ntx++;
	st = transaction(c);
	snprintf(why, whylen, "%s", c->why);
	transaction_end(c);
	return st;
}

void
smtpc_free(struct smtpc *c)
{
	if (c == NULL)
		return;
	if (c->io != NULL)
		quit(c);
	mc_io_free(c->io);
	if (c->own_ctx != NULL)
		SSL_CTX_free(c->own_ctx);
	free(c->helo_name);
	free(c->server_name);
	free(c->buf);
	free(c);
}

enum smtpc_status
smtpc_deliver(int fd, const struct smtpc_opts *opts, struct smtpc_msg *msg,
    char *why, size_t whylen)
{
	char text[WHY_MAX], dummy[1];
	struct smtpc *c;
	enum smtpc_status st;

	if (why == NULL || whylen == 0) {
		why = dummy;
		whylen = sizeof(dummy);
	}
	if ((c = smtpc_new(fd, opts)) == NULL) {
		snprintf(text, sizeof(text), "4.4.0 cannot use the connection: %s", strerror(errno));
		for (size_t i = 0; i < msg->nrcpts; i++)
			rcpt_set(&msg->rcpts[i], 0, "", "");
		return early_failure(msg, text, why, whylen);
	}
	st = smtpc_send(c, msg, why, whylen);
	smtpc_free(c);
	return st;
}
