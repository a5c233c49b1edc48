/*
 * deliver.c - where mail goes: RCPT resolution (local users, aliases expanded
 * to mailboxes and forwarding targets, relaying only when authenticated), the
 * sender check for authenticated users, VRFY/EXPN, and the final store.
 */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "address.h"
#include "log.h"

#define ALIAS_DEPTH 8

enum resolve { R_FOUND, R_UNKNOWN, R_DISABLED, R_TEMP, R_TOO_MANY };

/* Append a copy of item unless already present; -1 when full or out of memory. */
static int
add_unique(char ***list, size_t *n, const char *item)
{
	char **grown, *copy;

	for (size_t i = 0; i < *n; i++)
		if (strcmp((*list)[i], item) == 0)
			return 0;
	if (*n >= MAX_TARGETS || (copy = strdup(item)) == NULL)
		return -1;
	if ((grown = realloc(*list, (*n + 1) * sizeof(**list))) == NULL) {
		free(copy);
		return -1;
	}
	*list = grown;
	(*list)[(*n)++] = copy;
	return 0;
}

/* 1 local, 0 not local, -1 lookup failure. */
static int
is_local_domain(struct session *s, const char *key)
{
	const char *at = strrchr(key, '@');
	enum mc_store_status st;

	if (at == NULL || at[1] == '[')
		return 0;
	st = mc_store_domain_exists(s->st, at + 1);
	return st == MC_STORE_OK ? 1 : st == MC_STORE_NOTFOUND ? 0 : -1;
}

struct targets { char **list; size_t n; int overflow; };

static void
collect_target(void *ctx, const char *t)
{
	struct targets *tg = ctx;

	if (add_unique(&tg->list, &tg->n, t) != 0)
		tg->overflow = 1;
}

static void
free_targets(struct targets *tg)
{
	for (size_t i = 0; i < tg->n; i++)
		free(tg->list[i]);
	free(tg->list);
}

static enum resolve resolve(struct session *s, const char *key, int depth);

static enum resolve
resolve_alias(struct session *s, const char *alias, struct targets *tg, int depth)
{
	enum resolve r = R_UNKNOWN;

	for (size_t i = 0; i < tg->n; i++) {
		int local = is_local_domain(s, tg->list[i]);
		enum resolve one;
		if (local < 0)
			return R_TEMP;
		if (local)
			one = resolve(s, tg->list[i], depth + 1);
		else
			one = add_unique(&s->txn.remote, &s->txn.nremote, tg->list[i]) == 0 ? R_FOUND
			    : R_TOO_MANY;
		if (one == R_TEMP || one == R_TOO_MANY)
			return one;
		if (one == R_FOUND)
			r = R_FOUND;
		else
			mc_log(MC_LOG_WARNING, "alias target %s of %s: %s", tg->list[i], alias,
			    one == R_DISABLED ? "disabled" : "unknown");
	}
	return r;
}

/* A local address: a user's mailbox, or an alias's targets, recursively. */
static enum resolve
resolve(struct session *s, const char *key, int depth)
{
	struct mc_user u;
	struct targets tg = { NULL, 0, 0 };
	enum mc_store_status st;
	enum resolve r;

	if (depth > ALIAS_DEPTH)
		return R_UNKNOWN;
	st = mc_store_user_get(s->st, key, &u);
	if (st == MC_STORE_OK) {
		if (u.disabled)
			return R_DISABLED;
		return add_unique(&s->txn.mailboxes, &s->txn.nmailboxes, key) == 0 ? R_FOUND
		    : R_TOO_MANY;
	}
	if (st != MC_STORE_NOTFOUND)
		return R_TEMP;
	st = mc_store_alias_get(s->st, key, collect_target, &tg);
	if (st == MC_STORE_NOTFOUND)
		r = R_UNKNOWN;
	else if (st != MC_STORE_OK)
		r = R_TEMP;
	else if (tg.overflow)
		r = R_TOO_MANY;
	else
		r = resolve_alias(s, key, &tg, depth);
	free_targets(&tg);
	return r;
}

static void
first_domain(void *ctx, const char *d)
{
	char *out = ctx;

	if (out[0] == '\0')
		snprintf(out, 300, "%s", d);
}

/* Where <postmaster> goes: the configured address, or postmaster@first domain. */
static int
postmaster_key(struct session *s, char *key, size_t cap)
{
	char domain[300] = "";

	if (s->cfg->postmaster[0] != '\0') {
		snprintf(key, cap, "%s", s->cfg->postmaster);
		return 0;
	}
	if (mc_store_domain_list(s->st, first_domain, domain) != MC_STORE_OK)
		return -1;
	if (domain[0] == '\0')
		return 1;
	snprintf(key, cap, "postmaster@%s", domain);
	return 0;
}

static void
remember_rcpt(struct session *s, const char *key)
{
	if (add_unique(&s->txn.rcpts, &s->txn.nrcpts, key) != 0) {
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	reply(s, 250, "2.1.5", "Recipient <%s> OK", key);
}

static void
temp_failure(struct session *s)
{
	mc_log(MC_LOG_ERR, "lookup failed: %s", mc_store_error(s->st));
	reply(s, 451, "4.3.0", "Temporary lookup failure, try again later");
}

/*
 * RFC 5321 4.5.1: postmaster@ every local domain must be accepted. When no
 * such user or alias exists, the domain's first user receives it (logged),
 * so that such mail is neither refused nor lost.
 */
static enum resolve
resolve_postmaster(struct session *s, const char *key)
{
	const char *at = strrchr(key, '@');
	struct mc_user u;
	enum mc_store_status st;

	if (at == NULL)
		return R_UNKNOWN;
	st = mc_store_domain_first_user(s->st, at + 1, &u);
	if (st == MC_STORE_TEMP)
		return R_TEMP;
	if (st != MC_STORE_OK)
		return R_UNKNOWN;
	mc_log(MC_LOG_WARNING, "%s is not configured; delivering to %s (add an alias)", key,
	    u.address);
	return add_unique(&s->txn.mailboxes, &s->txn.nmailboxes, u.address) == 0 ? R_FOUND
	    : R_TOO_MANY;
}

static void
rcpt_local(struct session *s, const char *key, const char *shown)
{
	enum resolve r = resolve(s, key, 0);

	if (r == R_UNKNOWN && strncmp(key, "postmaster@", 11) == 0)
		r = resolve_postmaster(s, key);
	switch (r) {
	case R_FOUND:
		remember_rcpt(s, shown);
		return;
	case R_UNKNOWN:
		reply_err(s, 550, "5.1.1", "<%s>: Recipient address rejected: User unknown", shown);
		return;
	case R_DISABLED:
		reply_err(s, 550, "5.2.1", "<%s>: Mailbox disabled", shown);
		return;
	case R_TOO_MANY:
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	case R_TEMP:
		temp_failure(s);
		return;
	}
}

void
rcpt_add(struct session *s, const struct mc_address *a)
{
	char key[600];
	int local;

	if (a->domain[0] == '\0') {   /* <postmaster>, RFC 5321 4.1.1.3 */
		int r = postmaster_key(s, key, sizeof(key));
		if (r != 0) {
			mc_log(MC_LOG_ERR, "no postmaster: %s", r < 0 ? mc_store_error(s->st)
			    : "no local domain");
			reply(s, 451, "4.3.0", "Postmaster address not available, try again later");
			return;
		}
		rcpt_local(s, key, "postmaster");
		return;
	}
	if (mc_addr_key(a, key, sizeof(key)) != 0) {
		reply_err(s, 501, "5.1.3", "Recipient address too long");
		return;
	}
	if ((local = is_local_domain(s, key)) < 0) {
		temp_failure(s);
		return;
	}
	if (local) {
		rcpt_local(s, key, key);
		return;
	}
	if (s->auth_user[0] == '\0') {
		reply_err(s, 554, "5.7.1", "<%s>: Relay access denied", key);
		return;
	}
	if (add_unique(&s->txn.remote, &s->txn.nremote, key) != 0) {
		reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	remember_rcpt(s, key);
}

struct owner { const char *user; int found; };

static void
match_owner(void *ctx, const char *target)
{
	struct owner *o = ctx;

	if (strcmp(target, o->user) == 0)
		o->found = 1;
}

int
sender_allowed(struct session *s, const char *sender, int *temp)
{
	struct owner o = { s->auth_user, 0 };
	enum mc_store_status st;

	*temp = 0;
	if (strcmp(sender, s->auth_user) == 0)
		return 1;
	if (sender[0] == '\0')
		return 0;
	st = mc_store_alias_get(s->st, sender, match_owner, &o);
	if (st == MC_STORE_TEMP)
		*temp = 1;
	return st == MC_STORE_OK && o.found;
}

void
lookup_vrfy(struct session *s, const char *key, int expn)
{
	struct mc_user u;
	struct targets tg = { NULL, 0, 0 };
	enum mc_store_status st = mc_store_user_get(s->st, key, &u);

	if (st == MC_STORE_OK) {
		if (u.name[0] != '\0')
			reply(s, 250, "2.1.5", "%s <%s>", u.name, key);
		else
			reply(s, 250, "2.1.5", "<%s>", key);
		return;
	}
	if (st == MC_STORE_NOTFOUND)
		st = mc_store_alias_get(s->st, key, collect_target, &tg);
	if (st == MC_STORE_OK && !expn)
		reply(s, 250, "2.1.5", "<%s>", key);
	else if (st == MC_STORE_OK) {
		for (size_t i = 0; i + 1 < tg.n; i++)
			mc_io_printf(s->io, "250-2.1.5 <%s>\r\n", tg.list[i]);
		reply(s, 250, "2.1.5", "<%s>", tg.n ? tg.list[tg.n - 1] : key);
	} else if (st == MC_STORE_NOTFOUND)
		reply_err(s, 550, "5.1.1", "<%s>: User unknown", key);
	else
		temp_failure(s);
	free_targets(&tg);
}

/* Tells a waiting relay worker that there is mail (it also wakes on its timer). */
static void
touch_trigger(const char *path)
{
	int fd;

	if (path == NULL || *path == '\0')
		return;
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0660)) < 0) {
		mc_log(MC_LOG_DEBUG, "relay trigger %s: %s", path, strerror(errno));
		return;
	}
	(void)futimens(fd, NULL);
	close(fd);
}

static int
queue_remote(struct session *s, const char *body_id, const char *head)
{
	static const char *const types[] = { "7bit", "8bitmime", "binarymime" };
	char id[MC_ID_LEN + 1];
	const struct mc_outbound_new q = { s->txn.sender, (const char *const *)s->txn.remote,
	    s->txn.nremote, body_id, head, types[s->txn.body], s->txn.smtputf8 };

	if (mc_store_outbound_add(s->st, &q, id) != MC_STORE_OK)
		return -1;
	mc_log(MC_LOG_INFO, "id=%s queued for relay as %s", s->txn.qid, id);
	touch_trigger(s->cfg->relay_trigger);
	return 0;
}

int
deliver(struct session *s, const char *body_id, uint64_t size, const char *local_head,
    const char *remote_head, int quarantined)
{
	struct mc_message_meta meta = { s->txn.sender, s->remote_ip, quarantined, local_head };

	if (s->txn.nmailboxes > 0 &&
	    mc_store_deliver(s->st, body_id, size, (const char *const *)s->txn.mailboxes,
	    s->txn.nmailboxes, &meta) != MC_STORE_OK) {
		(void)mc_store_undeliver(s->st, body_id);
		return -1;
	}
	if (s->txn.nremote > 0 && queue_remote(s, body_id, remote_head) != 0) {
		(void)mc_store_undeliver(s->st, body_id);
		return -1;
	}
	return 0;
}
