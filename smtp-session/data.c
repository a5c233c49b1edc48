/*
 * data.c - message content: DATA (dot-terminated, RFC 5321 4.1.1.4) and BDAT
 * (RFC 3030 chunks), streamed through a small buffer into the store as it
 * arrives. Only CR LF . CR LF ends DATA; bare CR/LF and NUL refuse the message.
 */
#include "session.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "headers.h"
#include "inbound.h"
#include "log.h"
#include "store_auth.h"

#define SINK_BUF 65536
#define HEAD_MAX 8192      /* the header block we add: trace and results */
#define TEXT_LINE_MAX 998   /* RFC 5321 4.5.3.1.6, without CRLF */

struct body {
	struct session *s;
	struct mc_body_writer *w;
	struct hdr_parser hp;   /* splits the message into fields and body */
	uint64_t size;          /* octets stored (the message as received) */
	unsigned char last;     /* the last octet received */
	int bare_cr, nul;       /* BDAT text: refused octets seen */
	uint64_t added;         /* BDAT text: CRs added before bare LFs */
	char received[2048];    /* our Received header, made when the body began */
	size_t len;
	unsigned char buf[SINK_BUF];
};

void
body_abort(struct body *b)
{
	if (b == NULL)
		return;
	mc_store_body_abort(b->w);
	hdr_free(&b->hp);
	free(b);
}

static int
sink_flush(struct body *b)
{
	if (b->len > 0 && mc_store_body_write(b->w, b->buf, b->len) != MC_STORE_OK)
		return -1;
	b->len = 0;
	return 0;
}

/* Append to the body; -1 when the store failed. */
static int
sink_put(struct body *b, const void *data, size_t len)
{
	const unsigned char *p = data;

	if (len == 0)
		return 0;
	b->size += len;
	while (len > 0) {
		size_t room = SINK_BUF - b->len, n = len < room ? len : room;
		memcpy(b->buf + b->len, p, n);
		b->len += n;
		p += n;
		len -= n;
		if (b->len == SINK_BUF && sink_flush(b) != 0)
			return -1;
	}
	return 0;
}

static const char *
protocol_name(const struct session *s)
{
	static const char *const names[] = { "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA",
		"UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA" };
	int i = (mc_io_is_tls(s->io) ? 1 : 0) + (s->auth_user[0] ? 2 : 0) +
	    (s->txn.smtputf8 ? 4 : 0);

	return s->esmtp ? names[i] : "SMTP";
}

/* Our Received header (RFC 5321 4.4), made when the message begins. */
static int
trace_header(struct session *s, struct body *b, const char *qid)
{
	char hdr[2048], date[64], tls[160] = "", ip[80], forpart[700] = "";
	time_t now = time(NULL);
	struct tm tm;
	int n;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (strcmp(s->remote_ip, "unknown") == 0)
		snprintf(ip, sizeof(ip), "unknown");
	else
		snprintf(ip, sizeof(ip), "[%s%s]", strchr(s->remote_ip, ':') ? "IPv6:" : "",
		    s->remote_ip);
	if (mc_io_is_tls(s->io)) {
		char info[128];
		mc_io_tls_info(s->io, info, sizeof(info));
		snprintf(tls, sizeof(tls), "\r\n\t(using %s)", info);
	}
	if (s->txn.nrcpts == 1)
		snprintf(forpart, sizeof(forpart), "\r\n\tfor <%s>", s->txn.rcpts[0]);
	n = snprintf(hdr, sizeof(hdr),
	    "Received: from %s (%s)\r\n\tby %s (mailcell) with %s id %s%s%s;\r\n\t%s\r\n",
	    s->helo, ip, s->cfg->hostname, protocol_name(s), qid, tls, forpart, date);
	if (n < 0 || (size_t)n >= sizeof(b->received))
		return -1;
	memcpy(b->received, hdr, (size_t)n + 1);
	return 0;
}

/* "Authentication-Results: id;..." naming us: forged, since only we add ours. */
static int
forged_results(const struct session *s, const char *field, size_t len)
{
	const char *p = memchr(field, ':', len), *end = field + len;
	size_t n = strlen(s->cfg->hostname);

	if (!hdr_is(field, len, "Authentication-Results") || p == NULL)
		return 0;
	for (p++; p < end; p++) {   /* CFWS before the authserv-id */
		if (*p == '(') {
			int depth = 1;
			while (++p < end && depth > 0)
				depth += *p == '(' ? 1 : *p == ')' ? -1 : 0;
			p--;
		} else if (!strchr(" \t\r\n", *p)) {
			break;
		}
	}
	return (size_t)(end - p) >= n && strncasecmp(p, s->cfg->hostname, n) == 0 &&
	    (p + n == end || strchr("; \t\r\n", p[n]) != NULL);
}

static int
on_field(void *ctx, const char *field, size_t len)
{
	struct body *b = ctx;

	if (forged_results(b->s, field, len)) {
		mc_log(MC_LOG_NOTICE, "id=%s removed an Authentication-Results header claiming %s",
		    b->s->txn.qid, b->s->cfg->hostname);
		return 0;
	}
	inbound_header(b->s->txn.inbound, field, len);
	return sink_put(b, field, len);
}

static int
on_eoh(void *ctx, const char *sep, size_t len)
{
	struct body *b = ctx;

	inbound_eoh(b->s->txn.inbound);
	return sink_put(b, sep, len);
}

static int
on_body(void *ctx, const void *buf, size_t len)
{
	struct body *b = ctx;

	inbound_body(b->s->txn.inbound, buf, len);
	return sink_put(b, buf, len);
}

/* Message octets as received: through the header splitter into the store. */
static int
msg_put(struct body *b, const void *data, size_t len)
{
	const struct hdr_callbacks cb = { b, on_field, on_eoh, on_body };

	if (len == 0)
		return 0;
	b->last = ((const unsigned char *)data)[len - 1];
	return hdr_feed(&b->hp, &cb, data, len);
}

/*
 * BDAT text (not BINARYMIME): stored with CRLF line ends like DATA, so a bare
 * LF becomes CR LF (RFC 3030 asks for canonical text; POP3 sizes stay exact).
 * A bare CR or a NUL is noted and refuses the message, as in DATA: relayed
 * with DATA, a bare CR could end the message early at a lax server.
 */
static int
sink_put_text(struct body *b, const unsigned char *buf, size_t n)
{
	size_t from = 0;

	if (n > 0 && b->last == '\r' && buf[0] != '\n')
		b->bare_cr = 1;   /* a CR ended the previous chunk */
	for (size_t i = 0; i < n; i++) {
		int prev_cr = i > 0 ? buf[i - 1] == '\r' : b->last == '\r';
		if (buf[i] == '\0')
			b->nul = 1;
		if (buf[i] == '\r' && i + 1 < n && buf[i + 1] != '\n')
			b->bare_cr = 1;
		if (buf[i] != '\n' || prev_cr)
			continue;
		if (msg_put(b, buf + from, i - from) != 0 || msg_put(b, "\r", 1) != 0)
			return -1;
		b->added++;
		from = i;
	}
	return msg_put(b, buf + from, n - from);
}

/* Opens the body in the store and writes the trace headers; NULL on failure. */
static struct body *
body_begin(struct session *s, char *qid)
{
	struct body *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return NULL;
	if (mc_store_body_begin(s->st, &b->w) != MC_STORE_OK) {
		mc_log(MC_LOG_ERR, "cannot store message: %s", mc_store_error(s->st));
		free(b);
		return NULL;
	}
	b->s = s;
	if (mc_random_hex(qid, 6) != 0 || trace_header(s, b, qid) != 0) {
		body_abort(b);
		return NULL;
	}
	return b;
}

static void
log_txn(struct session *s, const char *qid, const char *outcome, uint64_t size)
{
	char rcpts[1024];
	size_t used = 0;

	rcpts[0] = '\0';
	for (size_t i = 0; i < s->txn.nrcpts && used < sizeof(rcpts); i++)
		used += (size_t)snprintf(rcpts + used, sizeof(rcpts) - used, "%s%s",
		    i ? "," : "", s->txn.rcpts[i]);
	mc_log(MC_LOG_INFO, "id=%s from=<%s> to=%s size=%llu tls=%s auth=%s: %s", qid,
	    s->txn.sender, rcpts, (unsigned long long)size, mc_io_is_tls(s->io) ? "yes" : "no",
	    s->auth_user[0] ? s->auth_user : "-", outcome);
}

/* Ends the message in the splitter: a text message ends with a line end. */
static int
body_end(struct session *s, struct body *b)
{
	const struct hdr_callbacks cb = { b, on_field, on_eoh, on_body };

	if (s->txn.body != BODY_BINARYMIME && b->last != '\n' && msg_put(b, "\r\n", 2) != 0)
		return -1;
	return hdr_finish(&b->hp, &cb);
}

/* SPF/DKIM/DMARC verdict for inbound mail, its evaluation stored for reports. */
static enum inbound_verdict
run_checks(struct session *s, const char *qid, char *auth, size_t len, char *why, size_t whylen)
{
	struct mc_dmarc_record rec;
	const char *at = s->txn.nrcpts > 0 ? strrchr(s->txn.rcpts[0], '@') : NULL;
	enum inbound_verdict v;

	auth[0] = '\0';
	if (s->txn.inbound == NULL)
		return IN_ACCEPT;
	v = inbound_finish(s->txn.inbound, qid, at ? at + 1 : "", &rec, auth, len, why, whylen);
	if (rec.header_from[0] != '\0' && mc_store_dmarc_add(s->st, &rec) != MC_STORE_OK)
		mc_log(MC_LOG_ERR, "id=%s DMARC evaluation not stored: %s", qid,
		    mc_store_error(s->st));
	return v;
}

/* A message the checks refused: nothing is kept. */
static void
checks_refused(struct session *s, enum inbound_verdict v, const char *why, const char *qid)
{
	if (v == IN_REJECT)
		reply_err(s, 550, "5.7.1", "%s", why);
	else
		reply(s, 451, "4.7.5", "%s", why);
	log_txn(s, qid, v == IN_REJECT ? "refused by checks" : "deferred by checks", 0);
	txn_reset(s);
}

/*
 * Stores the finished body for every target with our header block on top;
 * *size becomes the stored message's size as a mailbox shows it.
 */
static int
store_message(struct session *s, struct body *b, const char *auth, int quarantined,
    uint64_t *size)
{
	char body_id[MC_ID_LEN + 1], local[HEAD_MAX + 2700], remote[HEAD_MAX + 2100];

	snprintf(local, sizeof(local), "Return-Path: <%s>\r\n%s%s", s->txn.sender, auth,
	    b->received);
	snprintf(remote, sizeof(remote), "%s%s", auth, b->received);
	*size = b->size + strlen(local);
	if (sink_flush(b) != 0) {
		body_abort(b);
		return -1;
	}
	hdr_free(&b->hp);
	if (mc_store_body_finish(b->w, body_id) != MC_STORE_OK) {
		free(b);
		return -1;
	}
	free(b);
	if (deliver(s, body_id, *size - strlen(local), local, remote, quarantined) != 0) {
		(void)mc_store_body_delete(s->st, body_id);
		return -1;
	}
	return 0;
}

/* The body is complete: check it, store it everywhere, then answer. Ends the transaction. */
static void
complete(struct session *s, const char *txn_qid)
{
	struct body *b = s->txn.body_sink;
	char qid[16], auth[HEAD_MAX], why[512];
	uint64_t size = b->size;
	enum inbound_verdict v;

	snprintf(qid, sizeof(qid), "%s", txn_qid);
	s->txn.body_sink = NULL;
	if (body_end(s, b) != 0) {
		body_abort(b);
		goto fail;
	}
	size = b->size;
	v = run_checks(s, qid, auth, sizeof(auth), why, sizeof(why));
	if (v == IN_REJECT || v == IN_DEFER) {
		body_abort(b);
		checks_refused(s, v, why, qid);
		return;
	}
	if (store_message(s, b, auth, v == IN_QUARANTINE, &size) != 0)
		goto fail;
	s->msg_count++;
	log_txn(s, qid, v == IN_QUARANTINE ? "stored, quarantined" : "stored", size);
	reply(s, 250, "2.0.0", "OK queued as %s", qid);
	txn_reset(s);
	return;
fail:
	mc_log(MC_LOG_ERR, "id=%s not stored: %s", qid, mc_store_error(s->st));
	log_txn(s, qid, "451 store failure", size);
	reply(s, 451, "4.3.0", "Temporary storage failure, try again later");
	txn_reset(s);
}

/* Why a received message must be refused, in order of precedence. */
struct data_problems {
	int bare_lf, bare_cr, nul, too_long, too_big, store;
};

static void
refuse(struct session *s, const struct data_problems *p, const char *qid)
{
	if (p->bare_lf)
		reply_err(s, 550, "5.5.2", "Message refused: bare LF (line ending without CR) in DATA");
	else if (p->bare_cr)
		reply_err(s, 550, "5.5.2", "Message refused: bare CR (CR without LF) in DATA");
	else if (p->nul)
		reply_err(s, 550, "5.6.0", "Message refused: NUL octet in DATA");
	else if (p->too_long)
		reply_err(s, 500, "5.5.2", "Message refused: line longer than %d octets",
		    TEXT_LINE_MAX + 2);
	else if (p->too_big)
		reply_err(s, 552, "5.3.4", "Message size exceeds fixed limit of %llu octets",
		    (unsigned long long)s->cfg->max_message_size);
	else
		reply(s, 451, "4.3.0", "Temporary storage failure, try again later");
	log_txn(s, qid[0] ? qid : "-", "refused", 0);
	txn_reset(s);
}

static int
any_problem(const struct data_problems *p)
{
	return p->bare_lf || p->bare_cr || p->nul || p->too_long || p->too_big || p->store;
}

/* Store one DATA line (dot-unstuffed, CRLF appended) unless already refused. */
static void
data_line(struct session *s, const char *line, size_t len, struct data_problems *p,
    uint64_t *client_size)
{
	if (len > 0 && line[0] == '.') {
		line++;
		len--;
	}
	*client_size += len + 2;
	if (*client_size > s->cfg->max_message_size)
		p->too_big = 1;
	if (any_problem(p))
		return;
	if (msg_put(s->txn.body_sink, line, len) != 0 ||
	    msg_put(s->txn.body_sink, "\r\n", 2) != 0)
		p->store = 1;
}

static int
data_allowed(struct session *s, const char *arg)
{
	if (*arg != '\0')
		reply_err(s, 501, "5.5.4", "Syntax: DATA");
	else if (!s->txn.active || s->txn.bdat)
		reply_err(s, 503, "5.5.1", s->txn.bdat ? "DATA not allowed during BDAT"
		    : "Need MAIL before DATA");
	else if (s->txn.nrcpts == 0)
		reply_err(s, 554, "5.5.1", "No valid recipients");
	else if (s->txn.body == BODY_BINARYMIME)
		reply_err(s, 503, "5.5.1", "BODY=BINARYMIME requires BDAT, not DATA");
	else
		return 1;
	return 0;
}

/* Reads lines up to the end-of-data line; -1 if the session ended meanwhile. */
static int
read_data(struct session *s, struct data_problems *p)
{
	const char *line;
	size_t len;
	unsigned flags;
	int prev_crlf = 1;
	uint64_t client_size = 0;

	for (;;) {
		int st = mc_io_read_line(s->io, MC_IO_LINE_MAX, &line, &len, &flags);
		if (st == MC_IO_TOO_LONG) {
			p->too_long = 1;
			prev_crlf = 0;
			continue;
		}
		if (st == MC_IO_TIMEOUT)
			reply(s, 421, "4.4.2", "%s idle for too long, closing connection",
			    s->cfg->hostname);
		if (st != MC_IO_OK || (flags & MC_IO_LINE_EOF_PARTIAL))
			return -1;
		if (prev_crlf && flags == MC_IO_LINE_CRLF && len == 1 && line[0] == '.')
			return 0;
		p->bare_lf |= (flags & MC_IO_LINE_BARE_LF) != 0;
		p->bare_cr |= (flags & MC_IO_LINE_BARE_CR) != 0;
		p->nul |= (flags & MC_IO_LINE_NUL) != 0;
		p->too_long |= len > TEXT_LINE_MAX;
		prev_crlf = (flags & MC_IO_LINE_CRLF) != 0;
		data_line(s, line, len, p, &client_size);
	}
}

void
cmd_data(struct session *s, const char *arg)
{
	struct data_problems p = { 0 };
	char *qid = s->txn.qid;

	if (!data_allowed(s, arg))
		return;
	if ((s->txn.body_sink = body_begin(s, qid)) == NULL) {
		reply(s, 451, "4.3.0", "Temporary storage failure, try again later");
		txn_reset(s);
		return;
	}
	/* RFC 3463 has no class 3: the intermediate reply carries no enhanced code. */
	mc_io_printf(s->io, "354 End data with <CR><LF>.<CR><LF>\r\n");
	if (read_data(s, &p) != 0) {
		mc_log(MC_LOG_NOTICE, "id=%s connection lost during DATA; nothing stored", qid);
		txn_reset(s);
		s->quit = 1;
		return;
	}
	if (any_problem(&p))
		refuse(s, &p, qid);
	else
		complete(s, qid);
}

/* ---- BDAT ---- */

/* "n" or "n LAST"; 0 and the values, or -1 for a syntax error. */
static int
parse_bdat(const char *arg, uint64_t *n, int *last)
{
	char *end;

	if (!isdigit((unsigned char)arg[0]) || strspn(arg, "0123456789") > 18)
		return -1;
	errno = 0;
	*n = strtoull(arg, &end, 10);
	*last = 0;
	if (*end == '\0')
		return 0;
	if (*end == ' ' && strcasecmp(end + 1, "LAST") == 0) {
		*last = 1;
		return 0;
	}
	return -1;
}

/* Read n octets, into the body when keep is set; -1 if the session ended. */
static int
read_chunk(struct session *s, uint64_t n, int keep, int *store_failed)
{
	unsigned char buf[16384];

	while (n > 0) {
		size_t got;
		int st = mc_io_read_raw(s->io, buf, n < sizeof(buf) ? (size_t)n : sizeof(buf), &got);
		if (st == MC_IO_TIMEOUT)
			reply(s, 421, "4.4.2", "%s idle for too long, closing connection",
			    s->cfg->hostname);
		if (st != MC_IO_OK)
			return -1;
		n -= got;
		if (keep && !*store_failed && (s->txn.body == BODY_BINARYMIME
		    ? msg_put(s->txn.body_sink, buf, got) : sink_put_text(s->txn.body_sink, buf, got)) != 0)
			*store_failed = 1;
	}
	return 0;
}

static void
bdat_fail(struct session *s, int code, const char *enh, const char *text)
{
	s->txn.bdat_failed = 1;
	s->txn.fail_code = code;
	snprintf(s->txn.fail_enh, sizeof(s->txn.fail_enh), "%s", enh);
	snprintf(s->txn.fail_text, sizeof(s->txn.fail_text), "%s", text);
}

/* Decide before reading whether this chunk can be kept (0) or not (reply set). */
static void
bdat_check(struct session *s, uint64_t n, char *qid)
{
	char text[160];

	if (s->txn.bdat_failed)
		return;
	if (s->txn.nrcpts == 0) {
		bdat_fail(s, 554, "5.5.1", "No valid recipients");
		return;
	}
	if (n > s->cfg->max_message_size || s->txn.bdat_size + n > s->cfg->max_message_size) {
		snprintf(text, sizeof(text), "Message size exceeds fixed limit of %llu octets",
		    (unsigned long long)s->cfg->max_message_size);
		bdat_fail(s, 552, "5.3.4", text);
		return;
	}
	if (s->txn.body_sink == NULL && (s->txn.body_sink = body_begin(s, qid)) == NULL)
		bdat_fail(s, 451, "4.3.0", "Temporary storage failure, try again later");
}

/*
 * After a text chunk: what DATA refuses is refused here too, and the stored
 * size (bare LFs became CR LF) must stay within the limit.
 */
static void
bdat_check_text(struct session *s, int last)
{
	struct body *b = s->txn.body_sink;
	char text[160];

	if (b == NULL || s->txn.body == BODY_BINARYMIME)
		return;
	if (last && b->last == '\r')
		b->bare_cr = 1;   /* nothing can follow the final CR */
	if (b->nul)
		bdat_fail(s, 550, "5.6.0", "Message refused: NUL octet in BDAT text (use BODY=BINARYMIME)");
	else if (b->bare_cr)
		bdat_fail(s, 550, "5.5.2", "Message refused: bare CR (CR without LF) in BDAT text");
	else if (s->txn.bdat_size + b->added > s->cfg->max_message_size) {
		snprintf(text, sizeof(text), "Message size exceeds fixed limit of %llu octets",
		    (unsigned long long)s->cfg->max_message_size);
		bdat_fail(s, 552, "5.3.4", text);
	}
}

void
cmd_bdat(struct session *s, const char *arg)
{
	char *qid = s->txn.qid;   /* one BDAT transaction spans several commands */
	uint64_t n;
	int last, store_failed = 0;

	if (parse_bdat(arg, &n, &last) != 0) {
		reply_err(s, 501, "5.5.4", "Syntax: BDAT size [LAST]");
		return;
	}
	if (!s->txn.active) {
		/* Still read the chunk: its octets must never be taken as commands. */
		if (read_chunk(s, n, 0, &store_failed) != 0) {
			s->quit = 1;
			return;
		}
		reply_err(s, 503, "5.5.1", "Need MAIL before BDAT");
		return;
	}
	s->txn.bdat = 1;
	bdat_check(s, n, qid);
	if (read_chunk(s, n, !s->txn.bdat_failed, &store_failed) != 0) {
		mc_log(MC_LOG_NOTICE, "connection lost during BDAT; nothing stored");
		txn_reset(s);
		s->quit = 1;
		return;
	}
	s->txn.bdat_size += n;
	if (store_failed && !s->txn.bdat_failed)
		bdat_fail(s, 451, "4.3.0", "Temporary storage failure, try again later");
	if (!s->txn.bdat_failed)
		bdat_check_text(s, last);
	if (s->txn.bdat_failed) {
		int code = s->txn.fail_code;
		reply_err(s, code, s->txn.fail_enh, "%s", s->txn.fail_text);
		if (last || code == 451) {
			log_txn(s, qid[0] ? qid : "-", "refused", 0);
			txn_reset(s);
		}
		return;
	}
	if (!last) {
		reply(s, 250, "2.0.0", "%llu octets received", (unsigned long long)n);
		return;
	}
	complete(s, qid);
}
