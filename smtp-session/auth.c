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

#include <openssl/evp.h>

#include "address.h"
#include "log.h"
#include "password.h"

#define AUTH_LINE_MAX 12286   /* RFC 4954 4: 12288 octets with CRLF */

/* Strict base64 decode; returns the length, or -1 if s is not base64. */
static int
b64_decode(const char *s, size_t n, unsigned char *out, size_t outcap)
{
	int len, pad = 0;

	if (n % 4 != 0 || n / 4 * 3 > outcap)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '+' || c == '/';
		if (c == '=' && i >= n - 2) {
			pad++;
			if (i == n - 2 && s[n - 1] != '=')
				return -1;
			continue;
		}
		if (!ok)
			return -1;
	}
	if (n == 0)
		return 0;
	len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	return len < 0 ? -1 : len - pad;
}

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
	*outlen = b64_decode(line, len, out, cap);
	return *outlen < 0 ? RESP_BAD : RESP_OK;
}

/* Checks user/password; 1 ok, 0 wrong, -1 temporary failure. */
static int
check_credentials(struct session *s, const char *user, const char *password, char *key,
    size_t keycap)
{
	struct mc_address a;
	struct mc_user u;
	enum mc_store_status st;

	if (mc_addr_parse_mailbox(user, MC_ADDR_ALLOW_UTF8, &a) != MC_ADDR_OK ||
	    mc_addr_key(&a, key, keycap) != 0) {
		(void)mc_password_verify(password, NULL);
		return 0;
	}
	st = mc_store_user_get(s->st, key, &u);
	if (st == MC_STORE_TEMP) {
		mc_log(MC_LOG_ERR, "AUTH lookup failed: %s", mc_store_error(s->st));
		return -1;
	}
	if (st != MC_STORE_OK) {
		(void)mc_password_verify(password, NULL);
		return 0;
	}
	return mc_password_verify(password, u.password) && !u.disabled;
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
	char key[600];
	int r = check_credentials(s, user, password, key, sizeof(key));

	if (r < 0) {
		reply(s, 454, "4.7.0", "Temporary authentication failure");
		return;
	}
	if (r == 0) {
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

/* PLAIN: [authzid] NUL authcid NUL passwd, in buf[0..n) with buf[n] == NUL. */
static int
split_plain(const unsigned char *buf, size_t n, const char **authz, const char **user,
    const char **pw)
{
	const unsigned char *nul1 = memchr(buf, '\0', n), *nul2;

	if (nul1 == NULL)
		return -1;
	nul2 = memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - buf));
	if (nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - buf)) != NULL)
		return -1;
	*authz = (const char *)buf;
	*user = (const char *)nul1 + 1;
	*pw = (const char *)nul2 + 1;
	return 0;
}

static void
auth_plain(struct session *s, const char *initial)
{
	unsigned char buf[AUTH_LINE_MAX];
	int n, r = RESP_OK;
	const char *authz, *user, *pw;

	if (initial == NULL)
		r = challenge(s, "", buf, sizeof(buf) - 1, &n);
	else if (strcmp(initial, "=") == 0)
		n = 0;
	else if ((n = b64_decode(initial, strlen(initial), buf, sizeof(buf) - 1)) < 0)
		r = RESP_BAD;
	if (r != RESP_OK) {
		response_error(s, r);
		return;
	}
	buf[n] = '\0';
	if (split_plain(buf, (size_t)n, &authz, &user, &pw) != 0 ||
	    (*authz != '\0' && strcmp(authz, user) != 0)) {
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
		if ((un = b64_decode(initial, strlen(initial), user, sizeof(user) - 1)) < 0)
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
