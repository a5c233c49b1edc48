/*
 * auth.c - SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN
 * mechanisms: strict base64, cancellation with "*", growing delays after
 * failures and a closed session after three. Credentials are never logged.
 */
#include "session.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "sasl.h"

#define AUTH_LINE_MAX 12286   /* RFC 4954 4: 12288 octets with CRLF */

enum { RESP_OK, RESP_CANCEL, RESP_BAD, RESP_GONE };

/* Send a 334 challenge and read the client's base64 answer into out. */
static int
challenge(struct session *s, const char *prompt, unsigned char *out, size_t cap, int *outlen)
{
	const char *line;
	size_t len;
	unsigned flags;

	mc_io_printf(s->io, "334 %s\r\n", prompt);
	switch (mc_io_read_line(s->io, AUTH_LINE_MAX, &line, &len, &flags)) {
	case MC_IO_OK:
		break;
	case MC_IO_TOO_LONG:
		return RESP_BAD;
	default:
		return RESP_GONE;
	}
	if (len == 1 && line[0] == '*')
		return RESP_CANCEL;
	*outlen = mc_b64_decode(line, len, out, cap);
	return *outlen < 0 ? RESP_BAD : RESP_OK;
}

static void
auth_failed(struct session *s, const char *user)
{
	struct timespec delay = { (time_t)(s->auth_failures + 1), 0 };

	s->auth_failures++;
	mc_log(MC_LOG_NOTICE, "AUTH failed for %.100s (%u)", user, s->auth_failures);
	mc_io_flush(s->io);
	if (s->auth_failures >= AUTH_MAX_FAILURES) {
		nanosleep(&delay, NULL);
		reply(s, 421, "4.7.0", "%s too many authentication failures, closing connection",
		    s->cfg->hostname);
		s->quit = 1;
		return;
	}
	nanosleep(&delay, NULL);
	reply_err(s, 535, "5.7.8", "Authentication credentials invalid");
}

static void
finish(struct session *s, const char *user, const char *password)
{
	char key[600], err[600];
	enum mc_login r = mc_login_check(s->st, user, password, key, sizeof(key), err,
	    sizeof(err));

	if (r == MC_LOGIN_TEMP) {
		mc_log(MC_LOG_ERR, "AUTH failed temporarily: %s", err);
		reply(s, 454, "4.7.0", "Temporary authentication failure");
		return;
	}
	if (r != MC_LOGIN_OK) {
		auth_failed(s, user);
		return;
	}
	snprintf(s->auth_user, sizeof(s->auth_user), "%s", key);
	mc_log(MC_LOG_INFO, "authenticated as %s", key);
	reply(s, 235, "2.7.0", "Authentication successful");
}

static int
response_error(struct session *s, int r)
{
	if (r == RESP_CANCEL)
		reply_err(s, 501, "5.7.0", "Authentication cancelled");
	else if (r == RESP_BAD)
		reply_err(s, 501, "5.5.2", "Invalid base64 data");
	else
		s->quit = 1;
	return -1;
}

/* PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd. */
static void
auth_plain(struct session *s, const char *initial)
{
	unsigned char buf[AUTH_LINE_MAX];
	int n, r = RESP_OK;
	const char *user, *pw;

	if (initial == NULL)
		r = challenge(s, "", buf, sizeof(buf) - 1, &n);
	else if (strcmp(initial, "=") == 0)
		n = 0;
	else if ((n = mc_b64_decode(initial, strlen(initial), buf, sizeof(buf) - 1)) < 0)
		r = RESP_BAD;
	if (r != RESP_OK) {
		response_error(s, r);
		return;
	}
	buf[n] = '\0';
	if (mc_sasl_plain_split(buf, (size_t)n, &user, &pw) != 0) {
		explicit_bzero(buf, sizeof(buf));
		auth_failed(s, "?");
		return;
	}
	finish(s, user, pw);
	explicit_bzero(buf, sizeof(buf));
}

static void
auth_login(struct session *s, const char *initial)
{
	unsigned char user[1024], pw[1024];
	int un, pn, r = RESP_OK;

	if (initial != NULL) {
		if ((un = mc_b64_decode(initial, strlen(initial), user, sizeof(user) - 1)) < 0)
			r = RESP_BAD;
	} else
		r = challenge(s, "VXNlcm5hbWU6", user, sizeof(user) - 1, &un);   /* "Username:" */
	if (r == RESP_OK)
		r = challenge(s, "UGFzc3dvcmQ6", pw, sizeof(pw) - 1, &pn);       /* "Password:" */
	if (r != RESP_OK) {
		response_error(s, r);
		return;
	}
	user[un] = '\0';
	pw[pn] = '\0';
	if (memchr(user, '\0', (size_t)un) != NULL || memchr(pw, '\0', (size_t)pn) != NULL)
		auth_failed(s, "?");
	else
		finish(s, (const char *)user, (const char *)pw);
	explicit_bzero(pw, sizeof(pw));
}

void
cmd_auth(struct session *s, const char *arg)
{
	char mech[32];
	const char *initial = NULL, *sp = strchr(arg, ' ');
	size_t mlen = sp ? (size_t)(sp - arg) : strlen(arg);

	if (s->auth_user[0] != '\0' || s->helo[0] == '\0' || s->txn.active || !s->esmtp) {
		reply_err(s, 503, "5.5.1", s->auth_user[0] ? "Already authenticated"
		    : s->txn.active ? "AUTH not allowed in a mail transaction" : "Send EHLO first");
		return;
	}
	if (!tls_allowed_auth(s)) {
		reply_err(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		return;
	}
	if (mlen == 0 || mlen >= sizeof(mech)) {
		reply_err(s, 501, "5.5.4", "Syntax: AUTH mechanism [initial-response]");
		return;
	}
	memcpy(mech, arg, mlen);
	mech[mlen] = '\0';
	if (sp != NULL)
		initial = sp + 1;
	if (strcasecmp(mech, "PLAIN") == 0)
		auth_plain(s, initial);
	else if (strcasecmp(mech, "LOGIN") == 0)
		auth_login(s, initial);
	else
		reply_err(s, 504, "5.5.4", "Unrecognized authentication mechanism");
}
