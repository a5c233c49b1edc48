/*
 * commands.c - the SMTP command loop of one session: read a line, find the
 * verb, check it against the session's state, act, reply. HELO, EHLO, MAIL,
 * RCPT, RSET, NOOP, HELP, VRFY, EXPN, STARTTLS and QUIT live here.
 */
#include "session.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "address.h"
#include "inbound.h"
#include "log.h"
#include "tls.h"

static void vreply(struct session *s, int code, const char *enh, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
vreply(struct session *s, int code, const char *enh, const char *fmt, va_list ap)
{
	char text[512];

	vsnprintf(text, sizeof(text), fmt, ap);
	mc_io_printf(s->io, "%d %s %s\r\n", code, enh, text);
}

void
reply(struct session *s, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreply(s, code, enh, fmt, ap);
	va_end(ap);
}

void
reply_err(struct session *s, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreply(s, code, enh, fmt, ap);
	va_end(ap);
	s->errors++;
}

static void
free_list(char ***list, size_t *n)
{
	for (size_t i = 0; i < *n; i++)
		free((*list)[i]);
	free(*list);
	*list = NULL;
	*n = 0;
}

void
txn_reset(struct session *s)
{
	struct txn *t = &s->txn;

	if (t->body_sink != NULL)
		body_abort(t->body_sink);
	inbound_free(t->inbound);
	free_list(&t->rcpts, &t->nrcpts);
	free_list(&t->mailboxes, &t->nmailboxes);
	free_list(&t->remote, &t->nremote);
	memset(t, 0, sizeof(*t));
}

int
tls_allowed_auth(const struct session *s)
{
	return mc_io_is_tls(s->io) || s->cfg->allow_plaintext_auth;
}

/* Case-insensitive "KEYWORD:" prefix, then optional spaces; returns the rest. */
static const char *
after_keyword(const char *arg, const char *kw)
{
	size_t n = strlen(kw);

	if (strncasecmp(arg, kw, n) != 0)
		return NULL;
	arg += n;
	while (*arg == ' ')
		arg++;
	return arg;
}

/* Copy a client-supplied name for logs and headers: printable ASCII only. */
static void
clean_copy(char *dst, size_t cap, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < cap && src[i] != '\0' && src[i] != ' '; i++)
		dst[i] = (src[i] > 32 && src[i] < 127) ? src[i] : '?';
	dst[i] = '\0';
}

static void
cmd_helo(struct session *s, const char *arg, int esmtp)
{
	if (*arg == '\0') {
		reply_err(s, 501, "5.5.4", "Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return;
	}
	txn_reset(s);
	clean_copy(s->helo, sizeof(s->helo), arg);
	s->esmtp = esmtp;
	if (!esmtp) {
		reply(s, 250, "2.0.0", "%s", s->cfg->hostname);
		return;
	}
	mc_io_printf(s->io, "250-%s Hello %s [%s]\r\n", s->cfg->hostname, s->helo, s->remote_ip);
	mc_io_printf(s->io, "250-PIPELINING\r\n250-SIZE %llu\r\n250-8BITMIME\r\n"
	    "250-BINARYMIME\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n",
	    (unsigned long long)s->cfg->max_message_size);
	if (!mc_io_is_tls(s->io))
		mc_io_printf(s->io, "250-STARTTLS\r\n");
	if (tls_allowed_auth(s) && s->auth_user[0] == '\0')
		mc_io_printf(s->io, "250-AUTH PLAIN LOGIN\r\n");
	mc_io_printf(s->io, "250 ENHANCEDSTATUSCODES\r\n");
}

static void
cmd_ehlo(struct session *s, const char *arg)
{
	cmd_helo(s, arg, 1);
}

static void
cmd_helo_plain(struct session *s, const char *arg)
{
	cmd_helo(s, arg, 0);
}

/* One MAIL parameter "KEY[=VALUE]"; 0, or -1 after replying. */
static int
mail_param(struct session *s, char *p, unsigned *seen)
{
	char *val = strchr(p, '=');
	char *end;

	if (val != NULL)
		*val++ = '\0';
	if (strcasecmp(p, "SIZE") == 0 && val != NULL && !(*seen & 1)) {
		*seen |= 1;
		if (!isdigit((unsigned char)*val) || strlen(val) > 19)
			goto syntax;
		s->txn.declared_size = strtoull(val, &end, 10);
		if (*end != '\0')
			goto syntax;
		if (s->txn.declared_size > s->cfg->max_message_size) {
			reply_err(s, 552, "5.3.4", "Message size exceeds fixed limit of %llu octets",
			    (unsigned long long)s->cfg->max_message_size);
			return -1;
		}
		return 0;
	}
	if (strcasecmp(p, "BODY") == 0 && val != NULL && !(*seen & 2)) {
		*seen |= 2;
		if (strcasecmp(val, "7BIT") == 0) s->txn.body = BODY_7BIT;
		else if (strcasecmp(val, "8BITMIME") == 0) s->txn.body = BODY_8BITMIME;
		else if (strcasecmp(val, "BINARYMIME") == 0) s->txn.body = BODY_BINARYMIME;
		else goto syntax;
		return 0;
	}
	if (strcasecmp(p, "SMTPUTF8") == 0 && val == NULL && !(*seen & 4)) {
		*seen |= 4;
		s->txn.smtputf8 = 1;
		return 0;
	}
	if (strcasecmp(p, "AUTH") == 0 && val != NULL && !(*seen & 8)) {
		*seen |= 8;   /* RFC 4954 5: accepted; we record the session's own identity */
		return 0;
	}
	if (strcasecmp(p, "SIZE") == 0 || strcasecmp(p, "BODY") == 0 ||
	    strcasecmp(p, "SMTPUTF8") == 0 || strcasecmp(p, "AUTH") == 0)
		goto syntax;
	reply_err(s, 555, "5.5.4", "Unsupported MAIL parameter %.64s", p);
	return -1;
syntax:
	reply_err(s, 501, "5.5.4", "Syntax error in MAIL parameter %.64s", p);
	return -1;
}

/* Parameters after the path: space separated. 0, or -1 after replying. */
static int
mail_params(struct session *s, const char *rest)
{
	char buf[512], *save = NULL, *p;
	unsigned seen = 0;

	if (*rest != '\0' && *rest != ' ') {
		reply_err(s, 501, "5.5.4", "Syntax error after the address");
		return -1;
	}
	snprintf(buf, sizeof(buf), "%s", rest);
	for (p = strtok_r(buf, " ", &save); p != NULL; p = strtok_r(NULL, " ", &save))
		if (mail_param(s, p, &seen) != 0)
			return -1;
	return 0;
}

static int
mail_allowed(struct session *s)
{
	if (s->helo[0] == '\0') {
		reply_err(s, 503, "5.5.1", "Send HELO or EHLO first");
		return 0;
	}
	if (s->txn.active) {
		reply_err(s, 503, "5.5.1", "Nested MAIL command");
		return 0;
	}
	if (s->submission && s->auth_user[0] == '\0') {
		reply_err(s, 530, "5.7.0", "Authentication required");
		return 0;
	}
	return 1;
}

/* Port-25 mail from unauthenticated clients: SPF now, DKIM/DMARC at the end. */
static int
inbound_checks(struct session *s)
{
	const struct spf_result *spf;

	if (s->submission || s->auth_user[0] != '\0')
		return 0;
	if ((s->txn.inbound = inbound_begin(s->cfg, s->remote_ip, s->helo, s->txn.sender)) == NULL)
		return 0;
	spf = inbound_spf(s->txn.inbound);
	if (spf != NULL && s->cfg->spf_fail_reject && strcmp(spf->result, "fail") == 0) {
		reply_err(s, 550, "5.7.23", "SPF check failed: %s does not designate %s as a "
		    "permitted sender", spf->domain, s->remote_ip);
		return -1;
	}
	return 0;
}

static void
cmd_mail(struct session *s, const char *arg)
{
	struct mc_address a;
	const char *p;
	size_t used;
	enum mc_addr_status st;
	int temp = 0;

	if (!mail_allowed(s))
		return;
	if ((p = after_keyword(arg, "FROM:")) == NULL) {
		reply_err(s, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
		return;
	}
	st = mc_addr_parse_path(p, strlen(p), MC_ADDR_ALLOW_NULL | MC_ADDR_ALLOW_UTF8, &a, &used);
	if (st != MC_ADDR_OK) {
		reply_err(s, 501, "5.1.7", "Bad sender address syntax: %s", mc_addr_strerror(st));
		return;
	}
	if (mail_params(s, p + used) != 0) {
		txn_reset(s);
		return;
	}
	if (a.is_utf8 && !s->txn.smtputf8) {
		reply_err(s, 553, "5.6.7", "Non-ASCII sender address needs the SMTPUTF8 parameter");
		txn_reset(s);
		return;
	}
	if (a.is_null)
		s->txn.sender[0] = '\0';
	else if (mc_addr_key(&a, s->txn.sender, sizeof(s->txn.sender)) != 0) {
		reply_err(s, 501, "5.1.7", "Sender address too long");
		txn_reset(s);
		return;
	}
	snprintf(s->txn.sender_raw, sizeof(s->txn.sender_raw), "%.*s", (int)used, p);
	if (s->auth_user[0] != '\0' && !sender_allowed(s, s->txn.sender, &temp)) {
		if (temp)
			reply(s, 451, "4.3.0", "Temporary lookup failure, try again later");
		else
			reply_err(s, 553, "5.7.1", "Sender address %s not owned by user %s",
			    s->txn.sender_raw, s->auth_user);
		txn_reset(s);
		return;
	}
	if (inbound_checks(s) != 0) {
		txn_reset(s);
		return;
	}
	s->txn.active = 1;
	reply(s, 250, "2.1.0", "Sender %s OK", s->txn.sender_raw);
}

static void
cmd_rcpt(struct session *s, const char *arg)
{
	struct mc_address a;
	const char *p;
	size_t used;
	enum mc_addr_status st;

	if (!s->txn.active || s->txn.bdat) {
		reply_err(s, 503, "5.5.1", s->txn.bdat ? "RCPT not allowed during BDAT"
		    : "Need MAIL before RCPT");
		return;
	}
	if ((p = after_keyword(arg, "TO:")) == NULL) {
		reply_err(s, 501, "5.5.4", "Syntax: RCPT TO:<address>");
		return;
	}
	st = mc_addr_parse_path(p, strlen(p), s->txn.smtputf8 ? MC_ADDR_ALLOW_UTF8 : 0, &a, &used);
	if (st == MC_ADDR_NEED_UTF8) {
		reply_err(s, 553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8");
		return;
	}
	if (st != MC_ADDR_OK) {
		reply_err(s, 501, "5.1.3", "Bad recipient address syntax: %s", mc_addr_strerror(st));
		return;
	}
	if (p[used] != '\0') {
		if (p[used] == ' ')
			reply_err(s, 555, "5.5.4", "Unsupported RCPT parameter %.64s", p + used + 1);
		else
			reply_err(s, 501, "5.1.3", "Syntax error after the address");
		return;
	}
	if (s->txn.nrcpts >= s->cfg->max_recipients) {
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	rcpt_add(s, &a);
}

static void
cmd_rset(struct session *s, const char *arg)
{
	if (*arg != '\0') {
		reply_err(s, 501, "5.5.4", "Syntax: RSET");
		return;
	}
	txn_reset(s);
	reply(s, 250, "2.0.0", "OK");
}

static void
cmd_noop(struct session *s, const char *arg)
{
	(void)arg;
	reply(s, 250, "2.0.0", "OK");
}

static void
cmd_help(struct session *s, const char *arg)
{
	(void)arg;
	mc_io_printf(s->io, "214-2.0.0 mailcell: commands are HELO EHLO MAIL RCPT DATA BDAT RSET\r\n"
	    "214-2.0.0 NOOP HELP VRFY EXPN AUTH STARTTLS QUIT. See RFC 5321.\r\n");
	reply(s, 214, "2.0.0", "End of HELP");
}

static void
cmd_quit(struct session *s, const char *arg)
{
	(void)arg;
	reply(s, 221, "2.0.0", "%s closing connection", s->cfg->hostname);
	s->quit = 1;
}

static void
vrfy_or_expn(struct session *s, const char *arg, int expn)
{
	struct mc_address a;
	char key[600];
	size_t used;
	int real = s->cfg->vrfy_policy == MC_VRFY_OPEN ||
	    (s->cfg->vrfy_policy == MC_VRFY_AUTH && s->auth_user[0] != '\0');

	if (*arg == '\0') {
		reply_err(s, 501, "5.5.4", "Syntax: %s address", expn ? "EXPN" : "VRFY");
		return;
	}
	if (!real) {
		reply(s, 252, "2.5.2", "Cannot verify the address; send mail and delivery will be attempted");
		return;
	}
	if (mc_addr_parse_path(arg, strlen(arg), MC_ADDR_ALLOW_BARE | MC_ADDR_ALLOW_UTF8, &a,
	    &used) != MC_ADDR_OK || arg[used] != '\0' || mc_addr_key(&a, key, sizeof(key)) != 0) {
		reply_err(s, 501, "5.1.3", "Bad address syntax");
		return;
	}
	lookup_vrfy(s, key, expn);
}

static void
cmd_vrfy(struct session *s, const char *arg)
{
	vrfy_or_expn(s, arg, 0);
}

static void
cmd_expn(struct session *s, const char *arg)
{
	vrfy_or_expn(s, arg, 1);
}

static void
cmd_starttls(struct session *s, const char *arg)
{
	char err[256];

	if (*arg != '\0') {
		reply_err(s, 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	if (mc_io_is_tls(s->io) || s->helo[0] == '\0' || s->txn.active) {
		reply_err(s, 503, "5.5.1", mc_io_is_tls(s->io) ? "TLS already active"
		    : s->txn.active ? "STARTTLS not allowed in a mail transaction" : "Send EHLO first");
		return;
	}
	if (s->tls_ctx == NULL &&
	    (s->tls_ctx = mc_tls_server_ctx(s->cfg->tls_cert, s->cfg->tls_key, err, sizeof(err))) == NULL) {
		mc_log(MC_LOG_ERR, "TLS not available: %s", err);
		reply(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return;
	}
	reply(s, 220, "2.0.0", "Ready to start TLS");
	if (mc_io_start_tls_server(s->io, s->tls_ctx) != MC_IO_OK) {
		mc_log(MC_LOG_NOTICE, "STARTTLS failed: %s", mc_io_last_error(s->io));
		s->quit = 1;
		return;
	}
	/* RFC 3207 4.2: forget everything learned before TLS. */
	txn_reset(s);
	s->helo[0] = '\0';
	s->esmtp = 0;
	s->auth_user[0] = '\0';
}

static void
cmd_not_implemented(struct session *s, const char *arg)
{
	(void)arg;
	reply_err(s, 502, "5.5.1", "Command not implemented");
}

static const struct {
	const char *verb;
	void (*fn)(struct session *, const char *);
} verbs[] = {
	{ "EHLO", cmd_ehlo }, { "HELO", cmd_helo_plain }, { "MAIL", cmd_mail },
	{ "RCPT", cmd_rcpt }, { "DATA", cmd_data }, { "BDAT", cmd_bdat },
	{ "RSET", cmd_rset }, { "NOOP", cmd_noop }, { "HELP", cmd_help },
	{ "VRFY", cmd_vrfy }, { "EXPN", cmd_expn }, { "AUTH", cmd_auth },
	{ "STARTTLS", cmd_starttls }, { "QUIT", cmd_quit },
	{ "TURN", cmd_not_implemented }, { "ETRN", cmd_not_implemented },
	{ "ATRN", cmd_not_implemented }, { "SEND", cmd_not_implemented },
	{ "SOML", cmd_not_implemented }, { "SAML", cmd_not_implemented },
};

static void
dispatch(struct session *s, char *line)
{
	char *arg = strchr(line, ' ');
	size_t n;

	if (arg != NULL)
		*arg++ = '\0';
	else
		arg = line + strlen(line);
	n = strlen(arg);
	while (n > 0 && arg[n - 1] == ' ')
		arg[--n] = '\0';
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcasecmp(line, verbs[i].verb) == 0) {
			verbs[i].fn(s, arg);
			return;
		}
	}
	reply_err(s, 500, "5.5.2", "Command not recognized");
}

/* One command line; returns 0 to go on, -1 when the session is over. */
static int
one_command(struct session *s)
{
	const char *line;
	char buf[16384];
	size_t len;
	unsigned flags;
	int st = mc_io_read_line(s->io, s->cfg->max_command_line - 2, &line, &len, &flags);

	switch (st) {
	case MC_IO_OK:
		break;
	case MC_IO_TOO_LONG:
		reply_err(s, 500, "5.5.2", "Line too long (at most %u octets)",
		    s->cfg->max_command_line);
		return 0;
	case MC_IO_TIMEOUT:
		reply(s, 421, "4.4.2", "%s idle for too long, closing connection",
		    s->cfg->hostname);
		mc_log(MC_LOG_NOTICE, "idle timeout");
		return -1;
	default:
		return -1;
	}
	if (flags & MC_IO_LINE_EOF_PARTIAL)
		return -1;
	if (flags & (MC_IO_LINE_NUL | MC_IO_LINE_BARE_CR)) {
		reply_err(s, 500, "5.5.2", "Invalid character (%s) in command",
		    flags & MC_IO_LINE_NUL ? "NUL" : "bare CR");
		return 0;
	}
	memcpy(buf, line, len);
	buf[len] = '\0';
	dispatch(s, buf);
	return s->quit ? -1 : 0;
}

void
session_run(struct session *s)
{
	mc_io_printf(s->io, "220 %s ESMTP mailcell\r\n", s->cfg->hostname);
	while (one_command(s) == 0) {
		if (s->errors >= s->cfg->max_errors) {
			reply(s, 421, "4.7.0", "%s too many errors, closing connection",
			    s->cfg->hostname);
			mc_log(MC_LOG_NOTICE, "too many errors (%u)", s->errors);
			break;
		}
	}
	txn_reset(s);
	mc_io_flush(s->io);
}
