/*
 * queue.c - a worker process's loop over due queue items: claim one
 * (atomically, with a lease), deliver its pending recipients domain by
 * domain, decide what happens next (done, failed, or a retry after the
 * configured wait), tell the sender about failures and long delays, and
 * give up the claim.
 */
#include "relay.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "log.h"

volatile sig_atomic_t relay_stopping;

static void
attempt_free(struct attempt *a)
{
	for (size_t i = 0; i < a->nlog; i++) {
		free(a->log_text[i][0]);
		free(a->log_text[i][1]);
	}
	free(a->newly_failed);
	free(a->touched);
	mc_item_free(&a->it);
}

static const char *
domain_of(const char *address)
{
	const char *at = strrchr(address, '@');

	return at ? at + 1 : "";
}

/* Indices of the pending recipients whose domain is that of rcpts[first]. */
static size_t
same_domain(const struct mc_item *it, size_t first, const int *taken, size_t *idx)
{
	const char *d = domain_of(it->rcpts[first].address);
	size_t n = 0;

	for (size_t i = first; i < it->nrcpts; i++)
		if (!taken[i] && strcmp(it->rcpts[i].state, "pending") == 0 &&
		    strcasecmp(domain_of(it->rcpts[i].address), d) == 0)
			idx[n++] = i;
	return n;
}

/* One connection (or local delivery) per destination domain. */
static void
deliver_all(struct attempt *a)
{
	size_t n = a->it.nrcpts, *idx = calloc(n, sizeof(*idx));
	int *taken = calloc(n, sizeof(*taken));

	for (size_t i = 0; idx && taken && i < n && !relay_stopping; i++) {
		size_t k;
		char domain[256];

		if (taken[i] || strcmp(a->it.rcpts[i].state, "pending") != 0)
			continue;
		k = same_domain(&a->it, i, taken, idx);
		for (size_t j = 0; j < k; j++)
			taken[idx[j]] = 1;
		snprintf(domain, sizeof(domain), "%s", domain_of(a->it.rcpts[i].address));
		for (char *p = domain; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (mc_store_domain_exists(a->r->st, domain) == MC_STORE_OK)
			local_deliver_item(a, idx, k);
		else
			deliver_domain(a, domain, idx, k);
	}
	free(idx);
	free(taken);
}

/* The wait before attempt number `attempts + 1` (the schedule's last repeats). */
static unsigned
retry_wait(const struct mc_config *cfg, int attempts)
{
	unsigned i = attempts < 1 ? 0 : (unsigned)attempts - 1;

	return cfg->retry_schedule[i < cfg->nretry ? i : cfg->nretry - 1];
}

/* Pending recipients past the queue lifetime fail for good. */
static void
expire(struct attempt *a)
{
	for (size_t i = 0; i < a->it.nrcpts; i++) {
		struct mc_item_rcpt *p = &a->it.rcpts[i];
		char why[600];

		if (strcmp(p->state, "pending") != 0)
			continue;
		snprintf(why, sizeof(why), "delivery time expired; last error: %s",
		    p->reply[0] ? p->reply : "none");
		rcpt_outcome(a, i, "failed", "4.4.7", why, p->remote_mta);
	}
}

static size_t
count_state(const struct mc_item *it, const char *state)
{
	size_t n = 0;

	for (size_t i = 0; i < it->nrcpts; i++)
		n += strcmp(it->rcpts[i].state, state) == 0;
	return n;
}

/*
 * The bodies of delivered items go in batches: one reference check and one
 * delete per collection for many (on the dev database each is a scan).
 */
static void
release_bodies(struct relay *r)
{
	if (r->nbodies == 0)
		return;
	if (mc_store_bodies_release(r->st, (const char (*)[MC_ID_LEN + 1])r->bodies,
	    r->nbodies) != MC_STORE_OK)
		mc_log(MC_LOG_WARNING, "message bodies of delivered items not released (db gc "
		    "will): %s", mc_store_error(r->st));
	r->nbodies = 0;
}

static void
release_body(struct relay *r, const char *body)
{
	if (body[0] == '\0')
		return;
	snprintf(r->bodies[r->nbodies++], sizeof(r->bodies[0]), "%s", body);
	if (r->nbodies == RELAY_BATCH)
		release_bodies(r);
}

/* A delay warning is due: mail waiting long, none sent yet. */
static int
warning_due(const struct attempt *a, time_t now)
{
	const struct mc_config *cfg = a->r->cfg;

	return count_state(&a->it, "pending") > 0 && !a->it.warned && cfg->delay_warning > 0 &&
	    now - a->it.created >= (time_t)cfg->delay_warning;
}

/* Pending recipients this attempt did not get to (the worker is stopping). */
static int
untried(const struct attempt *a)
{
	for (size_t i = 0; i < a->it.nrcpts; i++)
		if (!a->touched[i] && strcmp(a->it.rcpts[i].state, "pending") == 0)
			return 1;
	return 0;
}

static int
any_newly_failed(const struct attempt *a)
{
	for (size_t i = 0; i < a->it.nrcpts; i++)
		if (a->newly_failed[i])
			return 1;
	return 0;
}

/*
 * After the deliveries: expiry, notifications, and the item's next state.
 * The log goes to the store with the outcome, in the same write, unless a
 * notification (which shows the whole log) is sent first.
 */
static int
conclude(struct attempt *a)
{
	const struct mc_config *cfg = a->r->cfg;
	time_t now = time(NULL), deadline = a->it.created + (time_t)cfg->queue_lifetime;
	time_t next = now + (time_t)retry_wait(cfg, a->it.attempts);
	const char *state;
	int warn;

	if (count_state(&a->it, "pending") > 0 && (now >= deadline || next > deadline + 60))
		expire(a);
	if (relay_stopping && untried(a))
		next = now;     /* stopped before trying them all: due again at once */
	warn = warning_due(a, now);
	if ((any_newly_failed(a) || warn) && attempt_flush_log(a) != 0)
		return -1;
	bounce_failed(a);
	if (warn) {
		bounce_delayed(a, deadline);
		a->it.warned = 1;
	}
	if (count_state(&a->it, "pending") > 0)
		state = "queued";
	else
		state = count_state(&a->it, "failed") > 0 ? "failed" : "done";
	mc_log(MC_LOG_INFO, "queue %s: %s (%zu delivered, %zu failed, %zu pending)%s", a->it.id,
	    state, count_state(&a->it, "delivered"), count_state(&a->it, "failed"),
	    count_state(&a->it, "pending"), strcmp(state, "queued") ? "" : ", will retry");
	if (mc_store_item_finish(a->r->st, &a->it, a->r->owner, state,
	    strcmp(state, "queued") == 0 ? next : now, a->log + a->logged,
	    a->nlog - a->logged) != MC_STORE_OK)
		return -1;
	a->logged = a->nlog;
	if (strcmp(state, "done") == 0)
		release_body(a->r, a->it.body);
	return 0;
}

/* Delivers one claimed item; -1 when the store failed (the lease will expire). */
static int
process(struct relay *r, const char *id)
{
	struct attempt *a = calloc(1, sizeof(*a));
	int rc = -1;

	if (a == NULL)
		return -1;
	a->r = r;
	if (mc_store_item_load(r->st, id, &a->it) != MC_STORE_OK) {
		mc_log(MC_LOG_ERR, "queue %s: %s", id, mc_store_error(r->st));
		free(a);
		return -1;
	}
	a->newly_failed = calloc(a->it.nrcpts, sizeof(int));
	a->touched = calloc(a->it.nrcpts, sizeof(int));
	if (a->newly_failed != NULL && a->touched != NULL) {
		heartbeat_watch(r->hb, id);
		deliver_all(a);
		heartbeat_watch(r->hb, NULL);
		rc = conclude(a);
	}
	if (rc != 0)
		mc_log(MC_LOG_ERR, "queue %s: outcome not recorded: %s", id, mc_store_error(r->st));
	attempt_free(a);
	free(a);
	return rc;
}

int
relay_drain(struct relay *r)
{
	int handled = 0;

	while (!relay_stopping) {
		struct mc_outbound_info o;
		enum mc_store_status s = batch_claim(r, &o);

		if (s == MC_STORE_NOTFOUND)
			break;
		if (s != MC_STORE_OK) {
			mc_log(MC_LOG_ERR, "cannot claim queue items: %s", mc_store_error(r->st));
			return -1;
		}
		mc_log(MC_LOG_INFO, "queue %s: attempt %d for <%s>", o.id, o.attempts, o.sender);
		if (process(r, o.id) != 0)
			return -1;
		handled++;
	}
	return handled;
}

/* This process's name in claims: host, pid and a random part. */
static void
set_owner(struct relay *r)
{
	char rnd[64];

	if (mc_random_hex(rnd, 4) != 0)
		snprintf(rnd, sizeof(rnd), "x");
	snprintf(r->owner, sizeof(r->owner), "%s:%ld:%s", r->cfg->hostname, (long)getpid(), rnd);
}

int
relay_child(const struct mc_config *cfg, unsigned slot, unsigned nslots,
    char (*ids)[MC_ID_LEN + 1], const unsigned *slots, size_t n)
{
	struct relay r;
	int handled = -1;

	memset(&r, 0, sizeof(r));
	r.cfg = cfg;
	r.slot = slot;
	r.nslots = nslots;
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	set_owner(&r);
	if ((r.st = mc_store_new(cfg)) != NULL && batch_init(&r, ids, slots, n) == 0) {
		r.hb = heartbeat_start(cfg, r.owner);
		handled = relay_drain(&r);
		release_bodies(&r);
		conncache_drop(&r);
		heartbeat_stop(r.hb);
	}
	batch_free(&r);
	mc_store_free(r.st);
	if (r.tls_ctx != NULL)
		SSL_CTX_free(r.tls_ctx);
	return handled < 0 ? 75 : 0;
}
