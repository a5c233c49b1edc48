/*
 * deliver.c - the recipients of one destination domain: its MX hosts (or
 * relay_host) in order, each of their addresses, one ESMTP transaction per
 * connection (the connection kept from the previous item to that host
 * first); 4xx and connection failures go on to the next host, 2xx and 5xx
 * are final. Every command and reply goes into the item's log.
 */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dkims.h"
#include "log.h"
#include "mx.h"
#include "smtpc.h"
#include "stored.h"
#include "tls.h"

#define ADDRS_PER_HOST 4

void
attempt_log(struct attempt *a, const char *command, const char *reply)
{
	struct timespec ts;

	if (a->nlog >= RELAY_LOG_MAX)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	a->log_text[a->nlog][0] = strdup(command ? command : "");
	a->log_text[a->nlog][1] = strdup(reply ? reply : "");
	if (a->log_text[a->nlog][0] == NULL || a->log_text[a->nlog][1] == NULL) {
		free(a->log_text[a->nlog][0]);
		free(a->log_text[a->nlog][1]);
		return;
	}
	a->log[a->nlog].time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	a->log[a->nlog].command = a->log_text[a->nlog][0];
	a->log[a->nlog].reply = a->log_text[a->nlog][1];
	mc_log(MC_LOG_DEBUG, "queue %s: %s -> %s", a->it.id, a->log[a->nlog].command,
	    a->log[a->nlog].reply);
	a->nlog++;
}

int
attempt_flush_log(struct attempt *a)
{
	if (a->logged == a->nlog)
		return 0;
	if (mc_store_item_log(a->r->st, a->it.id, a->log + a->logged, a->nlog - a->logged)
	    != MC_STORE_OK)
		return -1;
	a->logged = a->nlog;
	return 0;
}

void
rcpt_outcome(struct attempt *a, size_t i, const char *state, const char *status,
    const char *reply, const char *mta)
{
	struct mc_item_rcpt *p = &a->it.rcpts[i];

	snprintf(p->state, sizeof(p->state), "%s", state);
	snprintf(p->status, sizeof(p->status), "%s", status);
	snprintf(p->reply, sizeof(p->reply), "%s", reply);
	snprintf(p->remote_mta, sizeof(p->remote_mta), "%s", mta ? mta : "");
	if (strcmp(state, "failed") == 0)
		a->newly_failed[i] = 1;
	a->touched[i] = 1;
	mc_log(MC_LOG_INFO, "queue %s: <%s> %s %s%s%s", a->it.id, p->address, state, status,
	    p->remote_mta[0] ? " via " : "", p->remote_mta);
}

/* Connects with a bounded wait; the socket or -1 (reason in why). */
static int
connect_to(const struct addrinfo *ai, unsigned timeout, char *why, size_t whylen)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct pollfd p;
	int err = 0;
	socklen_t len = sizeof(err);

	if (fd < 0) {
		snprintf(why, whylen, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		snprintf(why, whylen, "connect: %s", strerror(errno));
		close(fd);
		return -1;
	}
	p.fd = fd;
	p.events = POLLOUT;
	if (poll(&p, 1, (int)timeout * 1000) != 1) {
		snprintf(why, whylen, "connect: timed out");
		close(fd);
		return -1;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
		snprintf(why, whylen, "connect: %s", strerror(err ? err : errno));
		close(fd);
		return -1;
	}
	return fd;
}

static void
smtpc_logger(void *ctx, const char *command, const char *reply)
{
	attempt_log(ctx, command, reply);
}

/* Per-host state: the recipients still to place, and why the last try failed. */
struct dest {
	struct attempt *a;
	const size_t *idx;
	size_t n;
	char mta[256];
	char why[512];
	struct dkims *dkim;      /* NULL: not signed */
	struct msgsrc src;
};

/* The recipients still pending (into rc/map when not NULL); how many. */
static size_t
still_pending(const struct dest *d, struct smtpc_rcpt *rc, size_t *map)
{
	size_t k = 0;

	for (size_t j = 0; j < d->n; j++) {
		const struct mc_item_rcpt *p = &d->a->it.rcpts[d->idx[j]];
		if (strcmp(p->state, "pending") != 0)
			continue;
		if (rc != NULL) {
			memset(&rc[k], 0, sizeof(rc[k]));
			rc[k].address = p->address;
			map[k] = d->idx[j];
		}
		k++;
	}
	return k;
}

static enum smtpc_body
body_kind(const char *t)
{
	if (strcmp(t, "8bitmime") == 0)
		return SMTPC_8BITMIME;
	return strcmp(t, "binarymime") == 0 ? SMTPC_BINARYMIME : SMTPC_7BIT;
}

/* Applies one transaction's per-recipient replies. */
static void
apply_replies(struct dest *d, const struct smtpc_rcpt *rc, const size_t *map, size_t k)
{
	for (size_t j = 0; j < k; j++) {
		char reply[600];
		const char *status = rc[j].enh[0] ? rc[j].enh : NULL;

		snprintf(reply, sizeof(reply), "%d %s%s%s", rc[j].code, rc[j].enh,
		    rc[j].enh[0] ? " " : "", rc[j].reply);
		if (rc[j].code >= 200 && rc[j].code < 300)
			rcpt_outcome(d->a, map[j], "delivered", status ? status : "2.0.0", reply, d->mta);
		else if (rc[j].code >= 500)
			rcpt_outcome(d->a, map[j], "failed", status ? status : "5.0.0", reply, d->mta);
		else if (rc[j].code >= 400)
			rcpt_outcome(d->a, map[j], "pending", status ? status : "4.0.0", reply, d->mta);
		else
			rcpt_outcome(d->a, map[j], "pending", "4.4.1", d->why, d->mta);
	}
}

static SSL_CTX *
client_ctx(struct relay *r)
{
	char err[256];

	if (r->tls_ctx == NULL) {
		r->tls_ctx = mc_tls_client_ctx(r->cfg->relay_tls == MC_RELAY_TLS_VERIFY,
		    r->cfg->relay_ca_file[0] ? r->cfg->relay_ca_file : NULL, err, sizeof(err));
		if (r->tls_ctx == NULL)
			mc_log(MC_LOG_ERR, "TLS client context: %s", err);
	}
	return r->tls_ctx;
}

/* A client for a new connection to host, logging into the attempt. */
static struct smtpc *
new_client(struct dest *d, int fd, const char *host)
{
	struct attempt *a = d->a;
	const struct mc_config *cfg = a->r->cfg;
	static const enum smtpc_tls tls[] = { SMTPC_TLS_OPPORTUNISTIC, SMTPC_TLS_REQUIRED,
	    SMTPC_TLS_VERIFY };
	struct smtpc_opts o = { cfg->hostname, host, tls[cfg->relay_tls], client_ctx(a->r),
	    cfg->relay_timeout, smtpc_logger, a };
	struct smtpc *c = smtpc_new(fd, &o);

	if (c == NULL) {
		snprintf(d->why, sizeof(d->why), "4.3.0 out of memory");
		attempt_log(a, "", d->why);
	}
	return c;
}

/*
 * One transaction for the recipients still pending; SMTPC_RETRY (a reused
 * connection that failed before the server took it) leaves them untouched.
 */
static enum smtpc_status
transact(struct dest *d, struct smtpc *c)
{
	struct attempt *a = d->a;
	struct smtpc_rcpt *rc = calloc(d->n, sizeof(*rc));
	size_t *map = calloc(d->n, sizeof(*map)), k;
	struct smtpc_msg m;
	enum smtpc_status st;

	if (rc == NULL || map == NULL || (k = still_pending(d, rc, map)) == 0) {
		free(rc);
		free(map);
		return SMTPC_OK;
	}
	memset(&m, 0, sizeof(m));
	m.sender = a->it.sender;
	m.rcpts = rc;
	m.nrcpts = k;
	m.src = &d->src;
	m.size = a->it.size;
	m.body = body_kind(a->it.body_type);
	m.smtputf8 = a->it.smtputf8;
	m.sign = d->dkim ? dkims_sign_cb : NULL;
	m.sign_ctx = d->dkim;
	d->why[0] = '\0';
	st = smtpc_send(c, &m, d->why, sizeof(d->why));
	if (st != SMTPC_RETRY)
		apply_replies(d, rc, map, k);
	free(rc);
	free(map);
	return st;
}

/*
 * The connection kept from an earlier transaction, when it goes to this
 * host: 1 when a transaction ran on it (*used: its address), 0 when there
 * is none or it failed before the server took the transaction (then it is
 * closed and the recipients wait for a new connection, as if it never was).
 */
static int
try_kept(struct dest *d, const char *host, unsigned port, struct relay_conn *used)
{
	struct relay *r = d->a->r;
	struct relay_conn *k = conncache_take(r, host, port);
	char note[400];

	if (k == NULL)
		return 0;
	snprintf(note, sizeof(note), "%s, transaction %u on this connection", k->where,
	    smtpc_transactions(k->smtp) + 1);
	attempt_log(d->a, "<connection reused>", note);
	smtpc_set_log(k->smtp, smtpc_logger, d->a);
	if (transact(d, k->smtp) == SMTPC_RETRY) {
		attempt_log(d->a, "<connection reused>", "failed before the transaction began; "
		    "trying a new connection");
		conncache_drop(r);
		return 0;
	}
	*used = *k;
	conncache_keep(r, k->smtp, k->fd, host, port, (struct sockaddr *)&k->addr, k->addrlen);
	return 1;
}

static int
same_address(const struct addrinfo *ai, const struct relay_conn *used)
{
	return ai->ai_addrlen == used->addrlen && memcmp(ai->ai_addr, &used->addr,
	    used->addrlen) == 0;
}

/* One address: a new connection and a transaction; kept for the next item if it can be. */
static void
try_address(struct dest *d, const struct addrinfo *ai, const char *host, unsigned port)
{
	char why[256];
	struct smtpc *c;
	int fd;

	if ((fd = connect_to(ai, d->a->r->cfg->relay_timeout, why, sizeof(why))) < 0) {
		snprintf(d->why, sizeof(d->why), "4.4.1 %s: %s", host, why);
		attempt_log(d->a, "", d->why);
		return;
	}
	if ((c = new_client(d, fd, host)) == NULL) {
		close(fd);
		return;
	}
	(void)transact(d, c);
	conncache_keep(d->a->r, c, fd, host, port, ai->ai_addr, ai->ai_addrlen);
}

/* The kept connection, then every address of one host until nothing is pending; 1 when done. */
static int
try_host(struct dest *d, const char *host, unsigned port)
{
	struct addrinfo hints = { 0 }, *res = NULL, *ai;
	struct relay_conn used = { 0 };
	char portstr[8];
	int tried, gai;

	snprintf(d->mta, sizeof(d->mta), "%s", host);
	tried = try_kept(d, host, port, &used);
	if (tried && still_pending(d, NULL, NULL) == 0)
		return 1;
	if (tried)
		(void)attempt_flush_log(d->a);     /* on to the next: what went wrong so far */
	hints.ai_socktype = SOCK_STREAM;
	snprintf(portstr, sizeof(portstr), "%u", port);
	if ((gai = getaddrinfo(host, portstr, &hints, &res)) != 0) {
		snprintf(d->why, sizeof(d->why), "4.4.4 cannot resolve %s: %s", host, gai_strerror(gai));
		attempt_log(d->a, "", d->why);
		return 0;
	}
	for (ai = res; ai != NULL && tried < ADDRS_PER_HOST; ai = ai->ai_next) {
		if (used.addrlen != 0 && same_address(ai, &used))
			continue;
		tried++;
		try_address(d, ai, host, port);
		if (still_pending(d, NULL, NULL) == 0)
			break;
		(void)attempt_flush_log(d->a);
	}
	freeaddrinfo(res);
	return still_pending(d, NULL, NULL) == 0;
}

/* Every pending recipient (or only those no server answered) gets this outcome. */
static void
fail_all(struct dest *d, const char *state, const char *status, const char *why, int untouched)
{
	for (size_t j = 0; j < d->n; j++)
		if (strcmp(d->a->it.rcpts[d->idx[j]].state, "pending") == 0 &&
		    !(untouched && d->a->touched[d->idx[j]]))
			rcpt_outcome(d->a, d->idx[j], state, status, why, "");
}

/* The hosts to try: relay_host, or the domain's MX; 0, or -1 when decided. */
static int
targets(struct dest *d, const char *domain, struct mx_list *mx, unsigned *port)
{
	const struct mc_config *cfg = d->a->r->cfg;
	char why[400];

	*port = cfg->relay_port;
	if (cfg->relay_host[0] != '\0') {
		*port = 25;
		mx->n = 1;
		return mx_parse_relay_host(cfg->relay_host, mx->hosts[0], sizeof(mx->hosts[0]), port);
	}
	switch (mx_lookup(domain, mx)) {
	case MX_OK:
		return 0;
	case MX_NULL:
		snprintf(why, sizeof(why), "domain %s accepts no mail (null MX, RFC 7505)", domain);
		fail_all(d, "failed", "5.1.10", why, 0);
		break;
	case MX_NODOMAIN:
		fail_all(d, "failed", "5.1.2", mx->why, 0);
		break;
	case MX_TEMP:
		fail_all(d, "pending", "4.4.3", mx->why, 0);
		break;
	}
	attempt_log(d->a, "", d->a->it.rcpts[d->idx[0]].reply);
	return -1;
}

/* The sender's domain key, when outbound mail of ours is to be signed. */
static struct dkims *
load_key(struct attempt *a)
{
	const char *at = strrchr(a->it.sender, '@');
	struct dkims *k;

	if (!a->r->cfg->dkim_sign || at == NULL || (k = calloc(1, sizeof(*k))) == NULL)
		return NULL;
	if (mc_store_dkim_key_get(a->r->st, at + 1, &k->key) != MC_STORE_OK) {
		free(k);
		return NULL;
	}
	return k;
}

void
deliver_domain(struct attempt *a, const char *domain, const size_t *idx, size_t n)
{
	struct dest d = { a, idx, n, "", "", NULL, { 0 } };
	struct mx_list mx;
	unsigned port;

	if (targets(&d, domain, &mx, &port) != 0)
		return;
	if (msgsrc_stored(&d.src, a->r->st, a->it.head, a->it.body) != 0) {
		fail_all(&d, "pending", "4.3.0", "out of memory", 0);
		return;
	}
	d.dkim = load_key(a);
	for (size_t h = 0; h < mx.n && !relay_stopping; h++)
		if (try_host(&d, mx.hosts[h], port))
			break;
	fail_all(&d, "pending", "4.4.1", d.why[0] ? d.why : "no host could be reached", 1);
	msgsrc_stored_free(&d.src);
	if (d.dkim != NULL) {
		mc_dkim_key_clear(&d.dkim->key);
		free(d.dkim);
	}
}
