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

#include "log.h"

#define SINK_BUF 65536
#define TEXT_LINE_MAX 998   /* RFC 5321 4.5.3.1.6, without CRLF */

struct body {
	struct mc_body_writer *w;
	uint64_t size;          /* octets stored, trace headers included */
	unsigned char last;     /* the last octet stored */
	size_t len;
	unsigned char buf[SINK_BUF];
};

void
body_abort(struct body *b)
{
	if (b == NULL)
		return;
	mc_store_body_abort(b->w);
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
	b->last = p[len - 1];
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

/* Return-Path and Received (RFC 5321 4.4) at the top of the stored message. */
static int
trace_headers(struct session *s, struct body *b, const char *qid)
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
	n = snprintf(hdr, sizeof(hdr), "Return-Path: <%s>\r\n"
	    "Received: from %s (%s)\r\n\tby %s (mailcell) with %s id %s%s%s;\r\n\t%s\r\n",
	    s->txn.sender, s->helo, ip, s->cfg->hostname, protocol_name(s), qid, tls, forpart, date);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		return -1;
	return sink_put(b, hdr, (size_t)n);
}

/*
 * BDAT text (not BINARYMIME): stored with CRLF line ends like DATA, so a bare
 * LF becomes CR LF (RFC 3030 asks for canonical text; POP3 sizes stay exact).
 */
static int
sink_put_text(struct body *b, const unsigned char *buf, size_t n)
{
	size_t from = 0;

	for (size_t i = 0; i < n; i++) {
		int prev_cr = i > 0 ? buf[i - 1] == '\r' : b->last == '\r';
		if (buf[i] != '\n' || prev_cr)
			continue;
		if (sink_put(b, buf + from, i - from) != 0 || sink_put(b, "\r", 1) != 0)
			return -1;
		from = i;
	}
	return sink_put(b, buf + from, n - from);
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
	if (mc_random_hex(qid, 6) != 0 || trace_headers(s, b, qid) != 0) {
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

/* The body is complete: store it everywhere, then answer. Ends the transaction. */
static void
complete(struct session *s, const char *txn_qid)
{
	struct body *b = s->txn.body_sink;
	char qid[16];
	char body_id[MC_ID_LEN + 1];
	uint64_t size = b->size;

	snprintf(qid, sizeof(qid), "%s", txn_qid);
	s->txn.body_sink = NULL;
	/* A text message ends with a line end, so POP3 sends exactly the stored octets. */
	if (s->txn.body != BODY_BINARYMIME && b->last != '\n' && sink_put(b, "\r\n", 2) != 0) {
		body_abort(b);
		goto fail;
	}
	size = b->size;
	if (sink_flush(b) != 0) {
		body_abort(b);
		goto fail;
	}
	if (mc_store_body_finish(b->w, body_id) != MC_STORE_OK) {
		free(b);
		goto fail;
	}
	free(b);
	if (deliver(s, body_id, size) != 0) {
		(void)mc_store_body_delete(s->st, body_id);
		goto fail;
	}
	s->msg_count++;
	log_txn(s, qid, "stored", size);
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
	if (sink_put(s->txn.body_sink, line, len) != 0 ||
	    sink_put(s->txn.body_sink, "\r\n", 2) != 0)
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
		    ? sink_put(s->txn.body_sink, buf, got) : sink_put_text(s->txn.body_sink, buf, got)) != 0)
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
