/*
 * dsn.c - builds delivery status notifications (RFC 3464, multipart/report
 * of RFC 6522, codes of RFC 3463): a human part rendered from the admin's
 * templates (text and HTML, quoted-printable), the message/delivery-status
 * fields and the original's header section. What remote servers said is
 * untrusted: control characters go, lengths are bounded, HTML is escaped.
 */
#include "dsn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "log.h"
#include "template.h"

#define MAX_MESSAGE     (48 * 1024 * 1024)
#define MAX_ADDR        512        /* an address, as shown */
#define MAX_HOST        256        /* a host name, as shown */
#define MAX_QID         128
#define MAX_SUBJECT     256
#define MAX_REPLY_LINES 8          /* of one reply, as separate lines */
#define FOLD_AT         78         /* fold fields at spaces beyond this column */
#define HARD_LINE       900        /* split a word longer than this */

static const char *const dsn_names[] = {
	"hostname", "sender", "queue_id", "arrival_date", "date", "retry_until",
	"delayed", "subject", "nrecipients", "recipients_omitted", "log_omitted",
	"recipients.address", "recipients.action", "recipients.status",
	"recipients.status_text", "recipients.remote_mta", "recipients.diagnostic",
	"recipients.last_attempt", "recipients.failed", "recipients.delayed",
	"log.time", "log.command", "log.reply", "log.lines.line",
	NULL
};

static const char *const template_files[] = {
	"dsn-failed.txt", "dsn-failed.html", "dsn-delayed.txt", "dsn-delayed.html", NULL
};

/* A growing buffer; a failure (no memory, too large) sticks until checked. */
struct sb {
	char *p;
	size_t len, cap;
	int failed;
};

/* What the message as a whole says, cleaned once. */
struct facts {
	time_t now, last_log;
	char host[MAX_HOST];
	char sender[MAX_ADDR];
	char qid[MAX_QID];
};

/* One recipient, cleaned, for the templates and the delivery-status part. */
struct rinfo {
	const char *action;
	char status[16];
	char address[MAX_ADDR];
	char mta[MAX_HOST];
	char diag[DSN_MAX_DIAG];        /* UTF-8 kept: for people */
	char diag_ascii[DSN_MAX_DIAG];  /* for the delivery-status part */
	time_t last;
};

struct parts {
	struct sb text, html, ds, hdrs;
	int hdrs_qp;
	char subject[MAX_SUBJECT];
};

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void
sb_add(struct sb *b, const char *s, size_t n)
{
	if (b->failed || n == 0)
		return;
	if (n > MAX_MESSAGE - b->len) {
		b->failed = 1;
		return;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;
		while (cap < b->len + n + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL) {
			b->failed = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sb_adds(struct sb *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void
sb_addf(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* For short pieces of our own (at most 1023 octets). */
static void
sb_addf(struct sb *b, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		b->failed = 1;
		return;
	}
	sb_add(b, buf, (size_t)n);
}

/* Text cleaning. */

/* The length of the valid UTF-8 sequence at s (1 for ASCII), 0 if invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf) {
		len = 2;
	} else if (s[0] >= 0xe0 && s[0] <= 0xef) {
		len = 3;
		if (s[0] == 0xe0)
			lo = 0xa0;      /* overlong */
		if (s[0] == 0xed)
			hi = 0x9f;      /* surrogates */
	} else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		len = 4;
		if (s[0] == 0xf0)
			lo = 0x90;      /* overlong */
		if (s[0] == 0xf4)
			hi = 0x8f;      /* beyond U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static unsigned long
utf8_cp(const unsigned char *s, size_t len)
{
	static const unsigned char mask[5] = { 0, 0x7f, 0x1f, 0x0f, 0x07 };
	unsigned long cp = s[0] & mask[len];

	for (size_t i = 1; i < len; i++)
		cp = (cp << 6) | (s[i] & 0x3f);
	return cp;
}

/*
 * Copies n octets of untrusted text into out (outsize >= 8) as one line:
 * CR, LF and TAB become a space (runs collapse), other control characters
 * (C0, DEL, C1) are dropped, invalid UTF-8 becomes '?', and so does every
 * non-ASCII character when ascii is set. Longer text is cut at a character
 * boundary and ends in "...". Trailing spaces go.
 */
static void
clean_line(char *out, size_t outsize, const char *s, size_t n, int ascii)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0, i = 0, limit = outsize - 4;

	while (i < n) {
		size_t l = utf8_len(u + i, n - i), plen = l;
		const char *piece = s + i;

		if (l == 0) {
			piece = "?", plen = 1, l = 1;
		} else if (l == 1 && (u[i] == '\r' || u[i] == '\n' || u[i] == '\t')) {
			piece = " ", plen = (o == 0 || out[o - 1] == ' ') ? 0 : 1;
		} else if ((l == 1 && (u[i] < 0x20 || u[i] == 0x7f)) ||
		    (l == 2 && u[i] == 0xc2 && u[i + 1] < 0xa0)) {
			plen = 0;
		} else if (l > 1 && ascii) {
			piece = "?", plen = 1;
		}
		if (o + plen > limit) {
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, piece, plen);
		o += plen;
		i += l;
	}
	while (o > 0 && out[o - 1] == ' ')
		o--;
	out[o] = '\0';
}

static void
clean(char *out, size_t outsize, const char *s, int ascii)
{
	clean_line(out, outsize, s != NULL ? s : "", s != NULL ? strlen(s) : 0, ascii);
}

/* Dates and codes. */

static void
fmt_iso(char *buf, size_t size, time_t t)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "1970-01-01T00:00:00Z");
}

/* RFC 5322 date-time in UTC, whatever the locale. */
static void
fmt_rfc5322(char *buf, size_t size, time_t t)
{
	static const char days[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 ||
	    tm.tm_mon < 0 || tm.tm_mon > 11) {
		snprintf(buf, size, "Thu, 01 Jan 1970 00:00:00 +0000");
		return;
	}
	snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
	    tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	    tm.tm_sec);
}

/* 1..3 digits at s; their count, 0 if none or more. */
static size_t
digits(const char *s)
{
	size_t n = 0;

	while (n < 4 && s[n] >= '0' && s[n] <= '9')
		n++;
	return n >= 1 && n <= 3 ? n : 0;
}

/* RFC 3463: class "." subject "." detail, class 2, 4 or 5. */
static int
valid_status(const char *s)
{
	size_t a, b;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return 0;
	if ((a = digits(s + 2)) == 0 || s[2 + a] != '.')
		return 0;
	b = digits(s + 3 + a);
	return b != 0 && s[3 + a + b] == '\0';
}

static const struct {
	const char *code;   /* subject.detail */
	const char *text;
} status_texts[] = {
	{ "0.0", "other or undefined status" },
	{ "1.0", "other address status" },
	{ "1.1", "bad destination mailbox address" },
	{ "1.2", "bad destination system address" },
	{ "1.3", "bad destination mailbox address syntax" },
	{ "1.4", "destination mailbox address ambiguous" },
	{ "1.6", "destination mailbox has moved" },
	{ "1.7", "bad sender's mailbox address syntax" },
	{ "1.8", "bad sender's system address" },
	{ "1.10", "recipient domain accepts no mail (null MX)" },
	{ "2.0", "other or undefined mailbox status" },
	{ "2.1", "mailbox disabled, not accepting messages" },
	{ "2.2", "mailbox full" },
	{ "2.3", "message length exceeds administrative limit" },
	{ "2.4", "mailing list expansion problem" },
	{ "3.0", "other or undefined mail system status" },
	{ "3.1", "mail system full" },
	{ "3.2", "system not accepting network messages" },
	{ "3.3", "system not capable of selected features" },
	{ "3.4", "message too big for system" },
	{ "3.5", "system incorrectly configured" },
	{ "4.0", "other or undefined network or routing status" },
	{ "4.1", "no answer from host" },
	{ "4.2", "bad connection" },
	{ "4.3", "directory server failure" },
	{ "4.4", "unable to route" },
	{ "4.5", "mail system congestion" },
	{ "4.6", "routing loop detected" },
	{ "4.7", "delivery time expired" },
	{ "5.0", "other or undefined protocol status" },
	{ "5.1", "invalid command" },
	{ "5.2", "syntax error" },
	{ "5.3", "too many recipients" },
	{ "5.4", "invalid command arguments" },
	{ "5.5", "wrong protocol version" },
	{ "6.0", "other or undefined media error" },
	{ "6.1", "media not supported" },
	{ "6.2", "conversion required and prohibited" },
	{ "6.3", "conversion required but not supported" },
	{ "6.4", "conversion with loss performed" },
	{ "6.5", "conversion failed" },
	{ "7.0", "other or undefined security status" },
	{ "7.1", "delivery not authorized, message refused" },
	{ "7.2", "mailing list expansion prohibited" },
	{ "7.3", "security conversion required but not possible" },
	{ "7.4", "security features not supported" },
	{ "7.5", "cryptographic failure" },
	{ "7.6", "cryptographic algorithm not supported" },
	{ "7.7", "message integrity failure" },
	{ "7.23", "SPF validation failed" },
	{ "7.26", "multiple authentication checks failed" },
};

/* "permanent failure: mailbox full" for "5.2.2" (a valid status). */
static void
status_text(char *buf, size_t size, const char *status)
{
	const char *cls = status[0] == '2' ? "success" :
	    status[0] == '4' ? "temporary failure" : "permanent failure";
	const char *text = NULL;

	for (size_t i = 0; i < sizeof(status_texts) / sizeof(status_texts[0]); i++)
		if (strcmp(status + 2, status_texts[i].code) == 0)
			text = status_texts[i].text;
	if (text != NULL)
		snprintf(buf, size, "%s: %s", cls, text);
	else
		snprintf(buf, size, "%s", cls);
}

/* Input. */

static int
known_action(const char *a)
{
	static const char *const actions[] = { "failed", "delayed", "delivered",
		"relayed", "expanded", NULL };

	for (size_t i = 0; actions[i] != NULL; i++)
		if (strcmp(a, actions[i]) == 0)
			return 1;
	return 0;
}

static int
valid_hostname(const char *h)
{
	size_t n = h != NULL ? strlen(h) : 0;

	if (n == 0 || n > 253)
		return 0;
	return strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") == n;
}

static int
check_input(const struct dsn_input *in, char *err, size_t errlen)
{
	if (in == NULL || in->templates_dir == NULL || in->templates_dir[0] == '\0') {
		seterr(err, errlen, "DSN: no templates_dir");
		return -1;
	}
	if (!valid_hostname(in->hostname)) {
		seterr(err, errlen, "DSN: bad or missing hostname");
		return -1;
	}
	if (in->sender == NULL || in->sender[0] == '\0') {
		seterr(err, errlen, "DSN: no DSN to the null sender <>");
		return -1;
	}
	if (in->nrcpts == 0 || in->rcpts == NULL || in->nrcpts > DSN_MAX_RCPTS) {
		seterr(err, errlen, "DSN: %zu recipients (1 to %d in one DSN)", in->nrcpts,
		    DSN_MAX_RCPTS);
		return -1;
	}
	if (in->nlog > 0 && in->log == NULL) {
		seterr(err, errlen, "DSN: log entries missing");
		return -1;
	}
	for (size_t i = 0; i < in->nrcpts; i++) {
		const struct dsn_rcpt *r = &in->rcpts[i];
		if (r->address == NULL || r->address[0] == '\0') {
			seterr(err, errlen, "DSN: recipient %zu has no address", i + 1);
			return -1;
		}
		if (r->action != NULL && r->action[0] != '\0' && !known_action(r->action)) {
			seterr(err, errlen, "DSN: recipient %zu: unknown action", i + 1);
			return -1;
		}
	}
	return 0;
}

static void
get_facts(const struct dsn_input *in, struct facts *f)
{
	f->now = in->now != 0 ? in->now : time(NULL);
	f->last_log = in->nlog > 0 ? in->log[in->nlog - 1].time : f->now;
	clean(f->host, sizeof(f->host), in->hostname, 1);
	clean(f->sender, sizeof(f->sender), in->sender, 0);
	clean(f->qid, sizeof(f->qid), in->queue_id, 1);
}

static void
get_rinfo(const struct dsn_input *in, const struct facts *f, size_t i, struct rinfo *ri)
{
	const struct dsn_rcpt *r = &in->rcpts[i];

	ri->action = r->action != NULL && r->action[0] != '\0' ? r->action :
	    in->delayed ? "delayed" : "failed";
	if (valid_status(r->status))
		snprintf(ri->status, sizeof(ri->status), "%s", r->status);
	else
		snprintf(ri->status, sizeof(ri->status), "%s",
		    strcmp(ri->action, "failed") == 0 ? "5.0.0" :
		    strcmp(ri->action, "delayed") == 0 ? "4.0.0" : "2.0.0");
	clean(ri->address, sizeof(ri->address), r->address, 0);
	clean(ri->mta, sizeof(ri->mta), r->remote_mta, 1);
	clean(ri->diag, sizeof(ri->diag), r->diagnostic, 0);
	clean(ri->diag_ascii, sizeof(ri->diag_ascii), r->diagnostic, 1);
	ri->last = r->last_attempt != 0 ? r->last_attempt : f->last_log;
}

/* Template values (templates/README.md lists them). */

static void
set_time(struct mc_tpl_ctx *ctx, const char *name, time_t t)
{
	char buf[64];

	fmt_iso(buf, sizeof(buf), t);
	mc_tpl_set(ctx, name, buf);
}

static void
add_rcpt(struct mc_tpl_ctx *ctx, const struct rinfo *ri)
{
	struct mc_tpl_ctx *rec = mc_tpl_add(ctx, "recipients");
	char text[128];

	if (rec == NULL)
		return;
	status_text(text, sizeof(text), ri->status);
	mc_tpl_set(rec, "address", ri->address);
	mc_tpl_set(rec, "action", ri->action);
	mc_tpl_set(rec, "status", ri->status);
	mc_tpl_set(rec, "status_text", text);
	mc_tpl_set(rec, "remote_mta", ri->mta);
	mc_tpl_set(rec, "diagnostic", ri->diag);
	set_time(rec, "last_attempt", ri->last);
	mc_tpl_set(rec, "failed", strcmp(ri->action, "failed") == 0 ? "yes" : "");
	mc_tpl_set(rec, "delayed", strcmp(ri->action, "delayed") == 0 ? "yes" : "");
}

/* The reply's lines as records {line}, at most MAX_REPLY_LINES. */
static void
add_reply_lines(struct mc_tpl_ctx *rec, const char *reply)
{
	char line[DSN_MAX_LINE];
	size_t n = 0;

	while (*reply != '\0') {
		size_t len = strcspn(reply, "\r\n");
		struct mc_tpl_ctx *rec_line;

		clean_line(line, sizeof(line), reply, len, 0);
		reply += len;
		reply += strspn(reply, "\r\n");
		if (line[0] == '\0')
			continue;
		if (n++ == MAX_REPLY_LINES) {
			snprintf(line, sizeof(line), "...");
			reply = "";
		}
		if ((rec_line = mc_tpl_add(rec, "lines")) != NULL)
			mc_tpl_set(rec_line, "line", line);
	}
}

static void
add_log(struct mc_tpl_ctx *ctx, const struct dsn_log *e)
{
	struct mc_tpl_ctx *rec = mc_tpl_add(ctx, "log");
	char cmd[DSN_MAX_LINE], reply[DSN_MAX_DIAG];

	if (rec == NULL)
		return;
	set_time(rec, "time", e->time);
	clean(cmd, sizeof(cmd), e->command, 0);
	mc_tpl_set(rec, "command", cmd);
	clean(reply, sizeof(reply), e->reply, 0);
	mc_tpl_set(rec, "reply", reply);
	add_reply_lines(rec, e->reply != NULL ? e->reply : "");
}

/* All the values; NULL when out of memory. */
static struct mc_tpl_ctx *
build_ctx(const struct dsn_input *in, const struct facts *f)
{
	struct mc_tpl_ctx *ctx = mc_tpl_ctx_new();
	size_t first = in->nlog > DSN_MAX_LOG ? in->nlog - DSN_MAX_LOG : 0;
	size_t shown = in->nrcpts > DSN_SHOW_RCPTS ? DSN_SHOW_RCPTS : in->nrcpts;

	if (ctx == NULL)
		return NULL;
	mc_tpl_set(ctx, "hostname", f->host);
	mc_tpl_set(ctx, "sender", f->sender);
	mc_tpl_set(ctx, "queue_id", f->qid);
	set_time(ctx, "arrival_date", in->arrival);
	set_time(ctx, "date", f->now);
	if (in->retry_until != 0)
		set_time(ctx, "retry_until", in->retry_until);
	else
		mc_tpl_set(ctx, "retry_until", "");
	mc_tpl_set(ctx, "delayed", in->delayed ? "yes" : "");
	mc_tpl_setf(ctx, "nrecipients", "%zu", in->nrcpts);
	if (shown < in->nrcpts)
		mc_tpl_setf(ctx, "recipients_omitted", "%zu", in->nrcpts - shown);
	else
		mc_tpl_set(ctx, "recipients_omitted", "");
	if (first > 0)
		mc_tpl_setf(ctx, "log_omitted", "%zu", first);
	else
		mc_tpl_set(ctx, "log_omitted", "");
	for (size_t i = 0; i < shown; i++) {
		struct rinfo ri;
		get_rinfo(in, f, i, &ri);
		add_rcpt(ctx, &ri);
	}
	for (size_t i = first; i < in->nlog; i++)
		add_log(ctx, &in->log[i]);
	if (mc_tpl_ctx_failed(ctx)) {
		mc_tpl_ctx_free(ctx);
		return NULL;
	}
	return ctx;
}

/* Encodings. */

static int
qp_line_end(const char *s, size_t n, size_t i)
{
	return i >= n || s[i] == '\n' || (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n');
}

/* Whether s[i] may stand for itself at column col. */
static int
qp_literal(const char *s, size_t n, size_t i, size_t col)
{
	unsigned char c = (unsigned char)s[i];

	if (c == ' ' || c == '\t')
		return !qp_line_end(s, n, i + 1);
	if (c < 33 || c > 126 || c == '=')
		return 0;
	if (col == 0 && (c == '.' || (c == 'F' && n - i >= 5 && memcmp(s + i, "From ", 5) == 0)))
		return 0;
	return 1;
}

/*
 * Quoted-printable (RFC 2045 6.7) with CRLF line ends: LF or CRLF in s is a
 * line end, everything else non-printable is =XX, lines stay within 76
 * octets with soft breaks. A line starting with "." or "From " is encoded.
 */
static void
qp_encode(struct sb *b, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char tok[3];
		size_t tlen;

		if (c == '\r' && i + 1 < n && s[i + 1] == '\n')
			continue;
		if (c == '\n') {
			sb_add(b, "\r\n", 2);
			col = 0;
			continue;
		}
		for (;;) {
			if (qp_literal(s, n, i, col))
				tok[0] = (char)c, tlen = 1;
			else
				tok[0] = '=', tok[1] = hex[c >> 4], tok[2] = hex[c & 15], tlen = 3;
			if (col + tlen <= 75)
				break;
			sb_add(b, "=\r\n", 3);
			col = 0;
		}
		sb_add(b, tok, tlen);
		col += tlen;
	}
	if (col > 0)
		sb_add(b, "\r\n", 2);
}

static void
b64(char *out, const unsigned char *in, size_t n)
{
	static const char a[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned long v = (unsigned long)in[i] << 16;
		if (i + 1 < n)
			v |= (unsigned long)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[o++] = a[(v >> 18) & 63];
		out[o++] = a[(v >> 12) & 63];
		out[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? a[v & 63] : '=';
	}
	out[o] = '\0';
}

/*
 * "Name: value" on as many lines as it takes: folded at spaces beyond
 * FOLD_AT columns, a word longer than HARD_LINE split (value: one line).
 */
static void
put_field(struct sb *b, const char *name, const char *value)
{
	size_t start = strlen(name) + 1, col = start;

	sb_adds(b, name);
	sb_adds(b, ":");
	for (;;) {
		size_t w;

		value += strspn(value, " ");
		if ((w = strcspn(value, " ")) == 0)
			break;
		if (w > HARD_LINE)
			w = HARD_LINE;
		if (col > start && col + 1 + w > FOLD_AT) {
			sb_adds(b, "\r\n");
			col = 0;
		}
		sb_adds(b, " ");
		sb_add(b, value, w);
		col += 1 + w;
		value += w;
	}
	sb_adds(b, "\r\n");
}

/* Subject, as RFC 2047 encoded words when it is not ASCII. */
static void
put_subject(struct sb *b, const char *subject)
{
	const unsigned char *u = (const unsigned char *)subject;
	char enc[MAX_SUBJECT * 2 + 256], word[80];
	size_t n = strlen(subject), i = 0, o = 0;
	int ascii = 1;

	for (size_t k = 0; k < n; k++)
		if (u[k] >= 0x80)
			ascii = 0;
	if (ascii) {
		put_field(b, "Subject", subject);
		return;
	}
	while (i < n && o < sizeof(enc) - sizeof(word) - 2) {
		size_t take = 0, l;
		/* At most 45 octets of whole characters: 60 of base64, 72 in all. */
		while (i + take < n && (l = utf8_len(u + i + take, n - i - take)) != 0 &&
		    take + l <= 45)
			take += l;
		if (take == 0)
			take = 1;    /* not reached: the subject is clean UTF-8 */
		memcpy(word, "=?utf-8?B?", 10);
		b64(word + 10, u + i, take);
		o += (size_t)snprintf(enc + o, sizeof(enc) - o, "%s%s?=", o > 0 ? " " : "", word);
		i += take;
	}
	put_field(b, "Subject", enc);
}

/* The human part. */

static int
template_path(char *path, size_t size, const char *dir, const char *file,
    char *err, size_t errlen)
{
	if ((size_t)snprintf(path, size, "%s/%s", dir, file) >= size) {
		seterr(err, errlen, "templates_dir too long: %.64s...", dir);
		return -1;
	}
	return 0;
}

static int
check_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (stat(dir, &st) != 0) {
		seterr(err, errlen, "templates directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		seterr(err, errlen, "templates directory %s: not a directory", dir);
		return -1;
	}
	return 0;
}

/* Loads, parses and renders DIR/FILE with ctx; malloc'd text or NULL. */
static char *
render_file(const char *dir, const char *file, const struct mc_tpl_ctx *ctx, size_t *len,
    char *err, size_t errlen)
{
	char path[4096], why[256];
	struct mc_tpl *t;
	char *text;

	if (template_path(path, sizeof(path), dir, file, err, errlen) != 0)
		return NULL;
	if ((t = mc_tpl_load(path, dsn_names, err, errlen)) == NULL)
		return NULL;
	if (mc_tpl_render(t, ctx, DSN_MAX_PART, &text, len, why, sizeof(why)) != 0) {
		seterr(err, errlen, "%s: %s", path, why);
		text = NULL;
	}
	mc_tpl_free(t);
	return text;
}

/*
 * A text template may start with "Subject: ...": that line is the subject
 * and goes, with the empty lines after it. Returns where the body starts.
 */
static const char *
take_subject(const char *text, char *subject, size_t size)
{
	size_t n;

	subject[0] = '\0';
	if (strncasecmp(text, "Subject:", 8) != 0)
		return text;
	n = strcspn(text, "\n");
	clean_line(subject, size, text + 8, n - 8, 0);
	memmove(subject, subject + strspn(subject, " "), strlen(subject) + 1);
	text += n;
	return text + strspn(text, "\r\n");
}

static const char *
default_subject(const struct dsn_input *in)
{
	return in->delayed ? "Delayed Mail (still being retried)" :
	    "Undelivered Mail Returned to Sender";
}

/* Renders the text and HTML templates into p (quoted-printable) and p->subject. */
static int
human_part(const struct dsn_input *in, struct mc_tpl_ctx *ctx, struct parts *p,
    char *err, size_t errlen)
{
	const char *base = in->delayed ? "dsn-delayed" : "dsn-failed";
	char file[64], *text, *html;
	const char *body;
	size_t len;

	snprintf(p->subject, sizeof(p->subject), "%s", default_subject(in));
	if (mc_tpl_set(ctx, "subject", p->subject) != 0) {
		seterr(err, errlen, "DSN: out of memory");
		return -1;
	}
	snprintf(file, sizeof(file), "%s.txt", base);
	if ((text = render_file(in->templates_dir, file, ctx, &len, err, errlen)) == NULL)
		return -1;
	body = take_subject(text, p->subject, sizeof(p->subject));
	if (p->subject[0] == '\0')
		snprintf(p->subject, sizeof(p->subject), "%s", default_subject(in));
	qp_encode(&p->text, body, len - (size_t)(body - text));
	free(text);
	if (mc_tpl_set(ctx, "subject", p->subject) != 0) {
		seterr(err, errlen, "DSN: out of memory");
		return -1;
	}
	snprintf(file, sizeof(file), "%s.html", base);
	if ((html = render_file(in->templates_dir, file, ctx, &len, err, errlen)) == NULL)
		return -1;
	qp_encode(&p->html, html, len);
	free(html);
	return 0;
}

/* The delivery-status part. */

/* "rfc822; addr", or RFC 6533's "utf-8; " with \x{HEX} for what is not plain ASCII. */
static void
put_final_recipient(struct sb *b, const char *addr)
{
	const unsigned char *u = (const unsigned char *)addr;
	struct sb v = { 0 };
	size_t n = strlen(addr);
	int ascii = 1;

	for (size_t i = 0; i < n; i++)
		if (u[i] >= 0x80)
			ascii = 0;
	sb_adds(&v, ascii ? "rfc822; " : "utf-8; ");
	for (size_t i = 0; i < n;) {
		size_t l = utf8_len(u + i, n - i);
		if (l == 0)
			l = 1;
		if (ascii || (l == 1 && u[i] > 0x20 && u[i] < 0x7f && u[i] != '\\' &&
		    u[i] != '+' && u[i] != '='))
			sb_add(&v, addr + i, l);
		else
			sb_addf(&v, "\\x{%lX}", utf8_cp(u + i, l));
		i += l;
	}
	if (v.failed)
		b->failed = 1;
	else
		put_field(b, "Final-Recipient", v.p);
	free(v.p);
}

static void
put_rcpt_fields(struct sb *b, const struct dsn_input *in, const struct rinfo *ri)
{
	char buf[DSN_MAX_DIAG + 16];

	sb_adds(b, "\r\n");
	put_final_recipient(b, ri->address);
	put_field(b, "Action", ri->action);
	put_field(b, "Status", ri->status);
	if (ri->mta[0] != '\0') {
		/* "mx.example.org [192.0.2.1]": the name alone */
		snprintf(buf, sizeof(buf), "dns; %.*s", (int)strcspn(ri->mta, " "), ri->mta);
		put_field(b, "Remote-MTA", buf);
	}
	if (ri->diag_ascii[0] != '\0') {
		snprintf(buf, sizeof(buf), "smtp; %s", ri->diag_ascii);
		put_field(b, "Diagnostic-Code", buf);
	}
	fmt_rfc5322(buf, sizeof(buf), ri->last);
	put_field(b, "Last-Attempt-Date", buf);
	if (strcmp(ri->action, "delayed") == 0 && in->retry_until != 0) {
		fmt_rfc5322(buf, sizeof(buf), in->retry_until);
		put_field(b, "Will-Retry-Until", buf);
	}
}

static void
ds_part(struct sb *b, const struct dsn_input *in, const struct facts *f)
{
	char buf[MAX_HOST + 16];

	snprintf(buf, sizeof(buf), "dns; %s", f->host);
	put_field(b, "Reporting-MTA", buf);
	fmt_rfc5322(buf, sizeof(buf), in->arrival);
	put_field(b, "Arrival-Date", buf);
	if (f->qid[0] != '\0')
		put_field(b, "X-Mailcell-Queue-ID", f->qid);
	for (size_t i = 0; i < in->nrcpts; i++) {
		struct rinfo ri;
		get_rinfo(in, f, i, &ri);
		put_rcpt_fields(b, in, &ri);
	}
}

/* The original header section. */

/*
 * Its length to show: cut at a line boundary within DSN_MAX_ORIG_HEADERS,
 * without the empty line that ended it. *qp: it needs quoted-printable
 * (8-bit or control octets, a bare CR, a line of more than HARD_LINE).
 */
static size_t
headers_len(const char *h, size_t n, int *qp)
{
	size_t col = 0;

	if (n > DSN_MAX_ORIG_HEADERS) {
		const char *nl = memrchr(h, '\n', DSN_MAX_ORIG_HEADERS);
		n = nl != NULL ? (size_t)(nl - h) + 1 : 0;
	}
	for (;;) {
		size_t m = n;
		if (m == 0 || h[m - 1] != '\n')
			break;
		m--;
		if (m > 0 && h[m - 1] == '\r')
			m--;
		if (m != 0 && h[m - 1] != '\n')
			break;
		n = m;
	}
	*qp = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)h[i];
		if (c == '\n') {
			col = 0;
			continue;
		}
		if (++col > HARD_LINE || c >= 0x7f || (c < 0x20 && c != '\t' &&
		    !(c == '\r' && i + 1 < n && h[i + 1] == '\n')))
			*qp = 1;
	}
	return n;
}

static void
hdrs_part(struct parts *p, const struct dsn_input *in)
{
	const char *h = in->orig_headers;
	size_t n = h != NULL ? headers_len(h, in->orig_headers_len, &p->hdrs_qp) : 0;

	if (n == 0)
		return;
	if (p->hdrs_qp) {
		qp_encode(&p->hdrs, h, n);
		return;
	}
	for (size_t i = 0; i < n;) {
		const char *nl = memchr(h + i, '\n', n - i);
		size_t end = nl != NULL ? (size_t)(nl - h) : n, len = end - i;

		if (len > 0 && h[end - 1] == '\r')
			len--;
		sb_add(&p->hdrs, h + i, len);
		sb_adds(&p->hdrs, "\r\n");
		i = nl != NULL ? end + 1 : n;
	}
}

/* The message. */

static int
contains(const struct sb *b, const char *s)
{
	return b->len > 0 && memmem(b->p, b->len, s, strlen(s)) != NULL;
}

/*
 * "=_mc_" and random hex: "=_" never occurs in quoted-printable text, and
 * the other parts are checked. 0, or -1 when no random numbers came.
 */
static int
pick_boundary(char *b, size_t size, const struct parts *p, const char *other)
{
	for (int tries = 0; tries < 8; tries++) {
		char hex[25];
		if (mc_random_hex(hex, 12) != 0)
			return -1;
		snprintf(b, size, "=_mc_%s", hex);
		if (!contains(&p->ds, b) && !contains(&p->hdrs, b) && !contains(&p->text, b) &&
		    !contains(&p->html, b) && strcmp(b, other) != 0)
			return 0;
	}
	return -1;
}

static void
put_header(struct sb *m, const struct facts *f, const struct parts *p, const char *outer,
    const char *msgid)
{
	char date[96];

	fmt_rfc5322(date, sizeof(date), f->now);
	sb_addf(m, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", f->host);
	sb_adds(m, "To: <");
	sb_adds(m, f->sender);
	sb_adds(m, ">\r\n");
	put_subject(m, p->subject);
	sb_addf(m, "Date: %s\r\n", date);
	sb_addf(m, "Message-ID: <%s@%s>\r\n", msgid, f->host);
	sb_adds(m, "Auto-Submitted: auto-replied\r\n");
	sb_adds(m, "MIME-Version: 1.0\r\n");
	sb_addf(m, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n", outer);
	sb_adds(m, "\r\nThis is a MIME-encapsulated message: a delivery status notification.\r\n");
}

static void
put_body(struct sb *m, const struct parts *p, const char *outer, const char *inner)
{
	sb_addf(m, "\r\n--%s\r\n", outer);
	sb_adds(m, "Content-Description: Notification\r\n");
	sb_addf(m, "Content-Type: multipart/alternative; boundary=\"%s\"\r\n\r\n", inner);
	sb_addf(m, "--%s\r\n", inner);
	sb_adds(m, "Content-Type: text/plain; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	sb_add(m, p->text.p, p->text.len);
	sb_addf(m, "\r\n--%s\r\n", inner);
	sb_adds(m, "Content-Type: text/html; charset=utf-8\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	sb_add(m, p->html.p, p->html.len);
	sb_addf(m, "\r\n--%s--\r\n", inner);
	sb_addf(m, "\r\n--%s\r\n", outer);
	sb_adds(m, "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n");
	sb_add(m, p->ds.p, p->ds.len);
	if (p->hdrs.len > 0) {
		sb_addf(m, "\r\n--%s\r\n", outer);
		sb_adds(m, "Content-Description: Undelivered message headers\r\n"
		    "Content-Type: text/rfc822-headers\r\n");
		sb_addf(m, "Content-Transfer-Encoding: %s\r\n\r\n",
		    p->hdrs_qp ? "quoted-printable" : "7bit");
		sb_add(m, p->hdrs.p, p->hdrs.len);
	}
	sb_addf(m, "\r\n--%s--\r\n", outer);
}

/*
 * Each part's content ends in CRLF; the delimiter adds its own CRLF before
 * "--boundary", so the content keeps its last line end.
 */
static int
assemble(struct sb *m, const struct facts *f, struct parts *p, char *err, size_t errlen)
{
	char outer[64], inner[64], msgid[64], hex[17];

	if (p->text.failed || p->html.failed || p->ds.failed || p->hdrs.failed) {
		seterr(err, errlen, "DSN: out of memory or larger than %d octets", MAX_MESSAGE);
		return -1;
	}
	if (pick_boundary(outer, sizeof(outer), p, "") != 0 ||
	    pick_boundary(inner, sizeof(inner), p, outer) != 0 ||
	    mc_random_hex(hex, 8) != 0) {
		seterr(err, errlen, "DSN: no random numbers for the MIME boundary");
		return -1;
	}
	snprintf(msgid, sizeof(msgid), "%lld.%s", (long long)f->now, hex);
	put_header(m, f, p, outer, msgid);
	put_body(m, p, outer, inner);
	if (m->failed) {
		seterr(err, errlen, "DSN: out of memory or larger than %d octets", MAX_MESSAGE);
		return -1;
	}
	return 0;
}

static void
parts_free(struct parts *p)
{
	free(p->text.p);
	free(p->html.p);
	free(p->ds.p);
	free(p->hdrs.p);
}

int
dsn_build(const struct dsn_input *in, char **out, size_t *outlen, char *err, size_t errlen)
{
	struct parts p;
	struct facts f;
	struct sb m = { 0 };
	struct mc_tpl_ctx *ctx;
	int r = -1;

	*out = NULL;
	*outlen = 0;
	memset(&p, 0, sizeof(p));
	if (check_input(in, err, errlen) != 0 || check_dir(in->templates_dir, err, errlen) != 0)
		return -1;
	get_facts(in, &f);
	if ((ctx = build_ctx(in, &f)) == NULL) {
		seterr(err, errlen, "DSN: out of memory");
		return -1;
	}
	if (human_part(in, ctx, &p, err, errlen) != 0)
		goto done;
	ds_part(&p.ds, in, &f);
	hdrs_part(&p, in);
	if (assemble(&m, &f, &p, err, errlen) != 0)
		goto done;
	*out = m.p;
	*outlen = m.len;
	m.p = NULL;
	r = 0;
done:
	free(m.p);
	parts_free(&p);
	mc_tpl_ctx_free(ctx);
	return r;
}

int
dsn_templates_check(const char *templates_dir, char *err, size_t errlen)
{
	char path[4096];

	if (templates_dir == NULL || templates_dir[0] == '\0') {
		seterr(err, errlen, "no templates_dir");
		return -1;
	}
	if (check_dir(templates_dir, err, errlen) != 0)
		return -1;
	for (size_t i = 0; template_files[i] != NULL; i++) {
		struct mc_tpl *t;
		if (template_path(path, sizeof(path), templates_dir, template_files[i],
		    err, errlen) != 0)
			return -1;
		if ((t = mc_tpl_load(path, dsn_names, err, errlen)) == NULL)
			return -1;
		mc_tpl_free(t);
	}
	return 0;
}
