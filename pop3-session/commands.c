/*
 * commands.c - the POP3 command loop (RFC 1939, 2449, 2595, 3206, 5034):
 * AUTHORIZATION (USER/PASS, AUTH PLAIN, STLS, CAPA) and TRANSACTION
 * (STAT, LIST, UIDL, TOP, RETR, DELE, NOOP, RSET), with removal only at QUIT.
 */
#include "pop3.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "address.h"
#include "log.h"
#include "sasl.h"
#include "tls.h"

#define CMD_MAX 510          /* RFC 2449 asks for 255; be lenient, stay bounded */
#define SASL_LINE_MAX 12286
#define IO_TICK 60           /* seconds: wake up this often to renew the lock */

static void
err(struct pop3 *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
err(struct pop3 *p, const char *fmt, ...)
{
	char text[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	mc_io_printf(p->io, "-ERR %s\r\n", text);
	p->errors++;
}

static int
auth_allowed(struct pop3 *p)
{
	return mc_io_is_tls(p->io) || p->cfg->allow_plaintext_auth;
}

/* ---- maildrop ---- */

static void
add_msg(void *ctx, const struct mc_message_info *mi)
{
	struct pop3 *p = ctx;
	struct msg *m;

	if (p->nmsgs == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct msg *grown = realloc(p->msgs, cap * sizeof(*grown));
		if (grown == NULL)
			return;   /* counted below as a failure to list */
		p->msgs = grown;
		p->cap = cap;
	}
	m = &p->msgs[p->nmsgs++];
	memcpy(m->id, mi->id, sizeof(m->id));
	memcpy(m->uidl, mi->uidl[0] ? mi->uidl : mi->id, sizeof(m->uidl));
	memcpy(m->body, mi->body, sizeof(m->body));
	m->size = mi->size;
	m->deleted = 0;
	m->head = NULL;
	m->listed = mi->body[0] != '\0' && mi->head == NULL;
	if (mi->body[0] != '\0' && mi->head != NULL &&
	    p->heads_bytes + strlen(mi->head) < HEADS_MAX && (m->head = strdup(mi->head)) != NULL) {
		p->heads_bytes += strlen(mi->head) + 1;
		m->listed = 1;
	}
}

void
pop3_forget_msgs(struct pop3 *p)
{
	for (size_t i = 0; i < p->nmsgs; i++)
		free(p->msgs[i].head);
	p->nmsgs = 0;
	p->heads_bytes = 0;
}

static void
totals(const struct pop3 *p, size_t *n, uint64_t *octets)
{
	*n = 0;
	*octets = 0;
	for (size_t i = 0; i < p->nmsgs; i++)
		if (!p->msgs[i].deleted) {
			(*n)++;
			*octets += p->msgs[i].size;
		}
}

void
pop3_release(struct pop3 *p)
{
	if (p->lock_holder[0] != '\0')
		(void)mc_store_lock_release(p->st, p->lock_name, p->lock_holder);
	p->lock_holder[0] = '\0';
}

static void
renew_lock(struct pop3 *p)
{
	time_t now = time(NULL);

	if (p->lock_holder[0] == '\0' || now - p->lock_renewed < LOCK_RENEW)
		return;
	if (mc_store_lock_renew(p->st, p->lock_name, p->lock_holder, LOCK_TTL) == MC_STORE_OK)
		p->lock_renewed = now;
	else
		mc_log(MC_LOG_WARNING, "maildrop lock not renewed: %s", mc_store_error(p->st));
}

/* Logged in as key: lock the maildrop and list it as it is now. */
static void
open_maildrop(struct pop3 *p, const char *key)
{
	enum mc_store_status st;
	size_t n;
	uint64_t octets;

	snprintf(p->lock_name, sizeof(p->lock_name), "pop3:%s", key);
	if (mc_random_hex(p->lock_holder, 16) != 0) {
		err(p, "[SYS/TEMP] cannot lock the maildrop now");
		return;
	}
	st = mc_store_lock_take(p->st, p->lock_name, p->lock_holder, LOCK_TTL);
	if (st != MC_STORE_OK) {
		p->lock_holder[0] = '\0';
		if (st == MC_STORE_EXISTS)
			err(p, "[IN-USE] maildrop is locked by another session");
		else
			err(p, "[SYS/TEMP] maildrop unavailable, try again later");
		return;
	}
	p->lock_renewed = time(NULL);
	pop3_forget_msgs(p);
	st = mc_store_mailbox_list(p->st, key, add_msg, p);
	if (st != MC_STORE_OK) {
		pop3_release(p);
		err(p, "[SYS/TEMP] maildrop unavailable, try again later");
		return;
	}
	snprintf(p->mailbox, sizeof(p->mailbox), "%s", key);
	totals(p, &n, &octets);
	mc_log(MC_LOG_INFO, "login %s: %zu messages, %llu octets", key, n,
	    (unsigned long long)octets);
	mc_io_printf(p->io, "+OK %s has %zu messages (%llu octets)\r\n", key, n,
	    (unsigned long long)octets);
}

static void
login_failed(struct pop3 *p, const char *user)
{
	struct timespec delay = { (time_t)(p->auth_failures + 1), 0 };

	p->auth_failures++;
	mc_log(MC_LOG_NOTICE, "login failed for %.100s (%u)", user, p->auth_failures);
	mc_io_flush(p->io);
	nanosleep(&delay, NULL);
	err(p, "[AUTH] invalid login or password");
	if (p->auth_failures >= AUTH_MAX_FAILURES)
		p->quit = 1;
}

static void
login(struct pop3 *p, const char *user, const char *password)
{
	char key[600], e[600];

	switch (mc_login_check(p->st, user, password, key, sizeof(key), e, sizeof(e))) {
	case MC_LOGIN_OK:
		open_maildrop(p, key);
		return;
	case MC_LOGIN_DISABLED:
		err(p, "[SYS/PERM] this account is disabled");
		return;
	case MC_LOGIN_TEMP:
		mc_log(MC_LOG_ERR, "login failed temporarily: %s", e);
		err(p, "[SYS/TEMP] authentication unavailable, try again later");
		return;
	case MC_LOGIN_BAD:
		login_failed(p, user);
		return;
	}
}

/* ---- AUTHORIZATION ---- */

/* A login must be a full address in a local domain: -1 after answering if not. */
static int
check_login_name(struct pop3 *p, const char *name)
{
	struct mc_address a;
	char key[600];
	enum mc_store_status st;

	if (mc_addr_parse_mailbox(name, MC_ADDR_ALLOW_UTF8, &a) != MC_ADDR_OK ||
	    a.domain[0] == '\0' || a.is_literal || mc_addr_key(&a, key, sizeof(key)) != 0) {
		err(p, "[AUTH] log in with your full email address (user@domain)");
		return -1;
	}
	st = mc_store_domain_exists(p->st, strrchr(key, '@') + 1);
	if (st == MC_STORE_TEMP) {
		err(p, "[SYS/TEMP] authentication unavailable, try again later");
		return -1;
	}
	if (st != MC_STORE_OK) {
		err(p, "[AUTH] this server does not handle mail for that domain");
		return -1;
	}
	return 0;
}

static void
cmd_user(struct pop3 *p, char *arg)
{
	if (!auth_allowed(p)) {
		err(p, "[AUTH] plaintext authentication is disabled without TLS; use STLS first");
		return;
	}
	if (*arg == '\0') {
		err(p, "USER needs a name");
		return;
	}
	if (check_login_name(p, arg) != 0)
		return;
	snprintf(p->user, sizeof(p->user), "%s", arg);
	mc_io_printf(p->io, "+OK send your password\r\n");
}

static void
cmd_pass(struct pop3 *p, char *arg)
{
	if (!auth_allowed(p)) {
		err(p, "[AUTH] plaintext authentication is disabled without TLS; use STLS first");
		return;
	}
	if (p->user[0] == '\0') {
		err(p, "USER first");
		return;
	}
	login(p, p->user, arg);
	explicit_bzero(arg, strlen(arg));
	p->user[0] = '\0';
}

/* AUTH PLAIN [initial-response] (RFC 5034); bare AUTH lists the mechanisms. */
static void
cmd_auth(struct pop3 *p, char *arg)
{
	unsigned char buf[SASL_LINE_MAX];
	const char *resp = NULL, *line, *user, *pw;
	char *sp = strchr(arg, ' ');
	size_t len;
	unsigned flags;
	int n;

	if (*arg == '\0') {
		mc_io_printf(p->io, "+OK mechanisms follow\r\nPLAIN\r\n.\r\n");
		return;
	}
	if (sp != NULL) {
		*sp = '\0';
		resp = sp + 1;
	}
	if (strcasecmp(arg, "PLAIN") != 0) {
		err(p, "unsupported authentication mechanism");
		return;
	}
	if (!auth_allowed(p)) {
		err(p, "[AUTH] plaintext authentication is disabled without TLS; use STLS first");
		return;
	}
	if (resp == NULL) {
		mc_io_printf(p->io, "+ \r\n");
		if (mc_io_read_line(p->io, SASL_LINE_MAX, &line, &len, &flags) != MC_IO_OK) {
			p->quit = 1;
			return;
		}
		resp = line;
	}
	if (strcmp(resp, "*") == 0) {
		err(p, "authentication cancelled");
		return;
	}
	n = strcmp(resp, "=") == 0 ? 0 : mc_b64_decode(resp, strlen(resp), buf, sizeof(buf) - 1);
	if (n < 0) {
		err(p, "invalid base64 data");
		return;
	}
	buf[n] = '\0';
	if (mc_sasl_plain_split(buf, (size_t)n, &user, &pw) != 0)
		login_failed(p, "?");
	else if (check_login_name(p, user) == 0)
		login(p, user, pw);
	explicit_bzero(buf, sizeof(buf));
}

static void
cmd_stls(struct pop3 *p, char *arg)
{
	char e[256];

	(void)arg;
	if (mc_io_is_tls(p->io)) {
		err(p, "TLS is already active");
		return;
	}
	if (p->tls_ctx == NULL &&
	    (p->tls_ctx = mc_tls_server_ctx(p->cfg->tls_cert, p->cfg->tls_key, e, sizeof(e))) == NULL) {
		mc_log(MC_LOG_ERR, "TLS not available: %s", e);
		err(p, "[SYS/TEMP] TLS not available");
		return;
	}
	mc_io_printf(p->io, "+OK begin TLS negotiation\r\n");
	if (mc_io_start_tls_server(p->io, p->tls_ctx) != MC_IO_OK) {
		mc_log(MC_LOG_NOTICE, "STLS failed: %s", mc_io_last_error(p->io));
		p->quit = 1;
	}
	p->user[0] = '\0';
}

static void
cmd_capa(struct pop3 *p, char *arg)
{
	(void)arg;
	mc_io_printf(p->io, "+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n"
	    "AUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\nLOGIN-DELAY 0\r\nSASL PLAIN\r\n"
	    "IMPLEMENTATION mailcell\r\n");
	if (!mc_io_is_tls(p->io) && p->mailbox[0] == '\0')
		mc_io_printf(p->io, "STLS\r\n");
	mc_io_printf(p->io, ".\r\n");
}

/* ---- TRANSACTION ---- */

/* Split off the next space-separated word of *arg ("" when none). */
static char *
next_word(char **arg)
{
	char *w = *arg, *sp = strchr(w, ' ');

	if (sp != NULL) {
		*sp = '\0';
		*arg = sp + 1;
	} else
		*arg = w + strlen(w);
	return w;
}

static int
parse_number(const char *w, unsigned long *out)
{
	char *end;

	if (!isdigit((unsigned char)*w) || strlen(w) > 9)
		return -1;
	errno = 0;
	*out = strtoul(w, &end, 10);
	return *end == '\0' && errno == 0 ? 0 : -1;
}

/* A message number naming a message that is not deleted: its index, or -1. */
static long
message_arg(struct pop3 *p, const char *w)
{
	unsigned long n;

	if (*w == '\0') {
		err(p, "message number required");
		return -1;
	}
	if (parse_number(w, &n) != 0) {
		err(p, "invalid message number: %.40s", w);
		return -1;
	}
	if (n == 0 || n > p->nmsgs) {
		err(p, "no such message, only %zu in maildrop", p->nmsgs);
		return -1;
	}
	if (p->msgs[n - 1].deleted) {
		err(p, "message %lu already deleted", n);
		return -1;
	}
	return (long)n - 1;
}

static int
no_more_args(struct pop3 *p, const char *rest)
{
	if (*rest == '\0')
		return 1;
	err(p, "too many arguments");
	return 0;
}

static void
cmd_stat(struct pop3 *p, char *arg)
{
	size_t n;
	uint64_t octets;

	if (!no_more_args(p, arg))
		return;
	totals(p, &n, &octets);
	mc_io_printf(p->io, "+OK %zu %llu\r\n", n, (unsigned long long)octets);
}

/* LIST and UIDL: one message, or all that are not deleted. */
static void
list_or_uidl(struct pop3 *p, char *arg, int uidl)
{
	char *w = next_word(&arg);
	long i;
	size_t n;
	uint64_t octets;

	if (*w != '\0') {
		if (!no_more_args(p, arg) || (i = message_arg(p, w)) < 0)
			return;
		if (uidl)
			mc_io_printf(p->io, "+OK %ld %s\r\n", i + 1, p->msgs[i].uidl);
		else
			mc_io_printf(p->io, "+OK %ld %llu\r\n", i + 1,
			    (unsigned long long)p->msgs[i].size);
		return;
	}
	totals(p, &n, &octets);
	mc_io_printf(p->io, "+OK %zu messages (%llu octets)\r\n", n, (unsigned long long)octets);
	for (size_t k = 0; k < p->nmsgs; k++) {
		if (p->msgs[k].deleted)
			continue;
		if (uidl)
			mc_io_printf(p->io, "%zu %s\r\n", k + 1, p->msgs[k].uidl);
		else
			mc_io_printf(p->io, "%zu %llu\r\n", k + 1, (unsigned long long)p->msgs[k].size);
	}
	mc_io_printf(p->io, ".\r\n");
}

static void
cmd_list(struct pop3 *p, char *arg)
{
	list_or_uidl(p, arg, 0);
}

static void
cmd_uidl(struct pop3 *p, char *arg)
{
	list_or_uidl(p, arg, 1);
}

static void
cmd_retr(struct pop3 *p, char *arg)
{
	char *w = next_word(&arg);
	long i;

	if ((i = message_arg(p, w)) < 0 || !no_more_args(p, arg))
		return;
	if (pop3_send_message(p, &p->msgs[i], -1) != 0)
		p->quit = 1;
}

static void
cmd_top(struct pop3 *p, char *arg)
{
	char *w = next_word(&arg), *lines = next_word(&arg);
	unsigned long n;
	long i;

	if ((i = message_arg(p, w)) < 0)
		return;
	if (*lines == '\0' || parse_number(lines, &n) != 0) {
		err(p, "TOP needs a message number and a number of lines");
		return;
	}
	if (!no_more_args(p, arg))
		return;
	if (pop3_send_message(p, &p->msgs[i], (long)n) != 0)
		p->quit = 1;
}

static void
cmd_dele(struct pop3 *p, char *arg)
{
	char *w = next_word(&arg);
	long i;

	if ((i = message_arg(p, w)) < 0 || !no_more_args(p, arg))
		return;
	p->msgs[i].deleted = 1;
	mc_io_printf(p->io, "+OK message %ld deleted\r\n", i + 1);
}

static void
cmd_rset(struct pop3 *p, char *arg)
{
	size_t n;
	uint64_t octets;

	if (!no_more_args(p, arg))
		return;
	for (size_t k = 0; k < p->nmsgs; k++)
		p->msgs[k].deleted = 0;
	totals(p, &n, &octets);
	mc_io_printf(p->io, "+OK maildrop has %zu messages (%llu octets)\r\n", n,
	    (unsigned long long)octets);
}

static void
cmd_noop(struct pop3 *p, char *arg)
{
	(void)arg;
	mc_io_printf(p->io, "+OK\r\n");
}

/* UPDATE state (RFC 1939 6): remove what is marked, then answer. */
static void
cmd_quit(struct pop3 *p, char *arg)
{
	const char **ids;
	size_t n = 0, left;
	uint64_t octets;

	(void)arg;
	p->quit = 1;
	if (p->mailbox[0] == '\0') {
		mc_io_printf(p->io, "+OK %s POP3 server signing off\r\n", p->cfg->hostname);
		return;
	}
	if ((ids = calloc(p->nmsgs + 1, sizeof(*ids))) == NULL) {
		err(p, "[SYS/TEMP] out of memory; nothing was removed");
		return;
	}
	for (size_t k = 0; k < p->nmsgs; k++)
		if (p->msgs[k].deleted)
			ids[n++] = p->msgs[k].id;
	if (n > 0 && mc_store_messages_delete(p->st, p->mailbox, ids, n) != MC_STORE_OK) {
		mc_log(MC_LOG_ERR, "removing %zu messages failed: %s", n, mc_store_error(p->st));
		err(p, "[SYS/TEMP] some deleted messages were not removed");
		free(ids);
		return;
	}
	free(ids);
	totals(p, &left, &octets);
	mc_log(MC_LOG_INFO, "logout %s: %zu removed, %zu left", p->mailbox, n, left);
	mc_io_printf(p->io, "+OK %s POP3 server signing off (%zu messages left)\r\n",
	    p->cfg->hostname, left);
}

/* ---- dispatch ---- */

enum { ST_AUTH = 1, ST_TRANS = 2, ST_ANY = 3 };

static const struct {
	const char *verb;
	void (*fn)(struct pop3 *, char *);
	int states;
} verbs[] = {
	{ "USER", cmd_user, ST_AUTH }, { "PASS", cmd_pass, ST_AUTH },
	{ "AUTH", cmd_auth, ST_AUTH }, { "STLS", cmd_stls, ST_AUTH },
	{ "CAPA", cmd_capa, ST_ANY }, { "QUIT", cmd_quit, ST_ANY },
	{ "NOOP", cmd_noop, ST_TRANS }, { "STAT", cmd_stat, ST_TRANS },
	{ "LIST", cmd_list, ST_TRANS }, { "UIDL", cmd_uidl, ST_TRANS },
	{ "RETR", cmd_retr, ST_TRANS }, { "TOP", cmd_top, ST_TRANS },
	{ "DELE", cmd_dele, ST_TRANS }, { "RSET", cmd_rset, ST_TRANS },
};

static void
dispatch(struct pop3 *p, char *line)
{
	char *arg = line;
	char *verb = next_word(&arg);
	int state = p->mailbox[0] ? ST_TRANS : ST_AUTH;

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcasecmp(verb, verbs[i].verb) != 0)
			continue;
		if (!(verbs[i].states & state)) {
			err(p, "%s is not valid %s", verbs[i].verb,
			    state == ST_AUTH ? "before login" : "after login");
			return;
		}
		verbs[i].fn(p, arg);
		return;
	}
	err(p, "unknown command");
}

/* Read one command, waking every IO_TICK seconds to keep the lock alive. */
static int
read_command(struct pop3 *p, char *buf, size_t cap)
{
	unsigned idle = 0, tick = p->cfg->pop3_idle_timeout < IO_TICK
	    ? p->cfg->pop3_idle_timeout : IO_TICK;
	const char *line;
	size_t len;
	unsigned flags;

	for (;;) {
		int st = mc_io_read_line(p->io, CMD_MAX, &line, &len, &flags);
		if (st == MC_IO_OK && !(flags & MC_IO_LINE_EOF_PARTIAL)) {
			if (flags & (MC_IO_LINE_NUL | MC_IO_LINE_BARE_CR)) {
				err(p, "invalid character in command");
				return 1;
			}
			snprintf(buf, cap, "%.*s", (int)len, line);
			return 0;
		}
		if (st == MC_IO_TOO_LONG) {
			err(p, "command line too long");
			return 1;
		}
		if (st != MC_IO_TIMEOUT)
			return -1;
		idle += tick;
		if (idle >= p->cfg->pop3_idle_timeout) {
			mc_io_printf(p->io, "-ERR idle for too long, closing connection\r\n");
			mc_log(MC_LOG_NOTICE, "idle timeout");
			return -1;
		}
		renew_lock(p);
	}
}

void
pop3_run(struct pop3 *p)
{
	char line[CMD_MAX + 1];

	mc_io_set_idle_timeout(p->io, (int)(p->cfg->pop3_idle_timeout < IO_TICK
	    ? p->cfg->pop3_idle_timeout : IO_TICK) * 1000);   /* see read_command */
	mc_io_printf(p->io, "+OK %s POP3 mailcell ready\r\n", p->cfg->hostname);
	while (!p->quit) {
		int r = read_command(p, line, sizeof(line));
		if (r < 0)
			break;
		if (r == 0)
			dispatch(p, line);
		renew_lock(p);
		if (p->errors >= p->cfg->max_errors && !p->quit) {
			mc_io_printf(p->io, "-ERR too many errors, closing connection\r\n");
			break;
		}
	}
	mc_io_flush(p->io);
	pop3_release(p);
}
