/*
 * queue.c - the worker's loop over due queue items: claim one (atomically,
 * with a lease), deliver its pending recipients domain by domain, decide
 * what happens next (done, failed, or a retry after the configured wait),
 * tell the sender about failures and long delays, and give up the claim.
 */
#include "relay.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* After the deliveries: expiry, notifications, and the item's next state. */
static int
conclude(struct attempt *a)
{
	const struct mc_config *cfg = a->r->cfg;
	time_t now = time(NULL), deadline = a->it.created + (time_t)cfg->queue_lifetime;
	time_t next = now + (time_t)retry_wait(cfg, a->it.attempts);
	const char *state;

	if (count_state(&a->it, "pending") > 0 && (now >= deadline || next > deadline + 60))
		expire(a);
	if (attempt_flush_log(a) != 0)   /* the notifications show the whole log */
		return -1;
	bounce_failed(a);
	if (count_state(&a->it, "pending") > 0 && !a->it.warned && cfg->delay_warning > 0 &&
	    now - a->it.created >= (time_t)cfg->delay_warning) {
		bounce_delayed(a, deadline);
		a->it.warned = 1;
	}
	if (count_state(&a->it, "pending") > 0)
		state = "queued";
	else
		state = count_state(&a->it, "failed") > 0 ? "failed" : "done";
	if (attempt_flush_log(a) != 0)
		return -1;
	mc_log(MC_LOG_INFO, "queue %s: %s (%zu delivered, %zu failed, %zu pending)%s", a->it.id,
	    state, count_state(&a->it, "delivered"), count_state(&a->it, "failed"),
	    count_state(&a->it, "pending"), strcmp(state, "queued") ? "" : ", will retry");
	return mc_store_item_finish(a->r->st, &a->it, a->r->owner, state,
	    strcmp(state, "queued") == 0 ? next : now) == MC_STORE_OK ? 0 : -1;
}

/*
 * Keeps the claim alive while the item is delivered: a server may take
 * longer than the lease to answer (relay_timeout can exceed claim_lease), and
 * another worker must not take over an item that is still being worked on.
 * The thread has its own store connection (a client is not shared).
 */
struct heartbeat {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	int stop;
	const struct mc_config *cfg;
	char id[MC_ID_LEN + 1];
	const char *owner;
};

static void *
beat(void *arg)
{
	struct heartbeat *h = arg;
	struct mc_store *st = mc_store_new(h->cfg);
	unsigned every = h->cfg->claim_lease / 3 ? h->cfg->claim_lease / 3 : 1;

	pthread_mutex_lock(&h->lock);
	while (!h->stop && st != NULL) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += (time_t)every;
		if (pthread_cond_timedwait(&h->wake, &h->lock, &until) != ETIMEDOUT || h->stop)
			continue;
		pthread_mutex_unlock(&h->lock);
		if (mc_store_item_renew(st, h->id, h->owner, h->cfg->claim_lease) != MC_STORE_OK)
			mc_log(MC_LOG_WARNING, "queue %s: claim not renewed: %s", h->id,
			    mc_store_error(st));
		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	mc_store_free(st);
	return NULL;
}

static int
heartbeat_start(struct heartbeat *h, struct relay *r, const char *id)
{
	memset(h, 0, sizeof(*h));
	h->cfg = r->cfg;
	h->owner = r->owner;
	snprintf(h->id, sizeof(h->id), "%s", id);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->wake, NULL);
	return pthread_create(&h->thread, NULL, beat, h) == 0 ? 0 : -1;
}

static void
heartbeat_stop(struct heartbeat *h)
{
	pthread_mutex_lock(&h->lock);
	h->stop = 1;
	pthread_cond_signal(&h->wake);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->wake);
	pthread_mutex_destroy(&h->lock);
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
		struct heartbeat h;
		int beating = heartbeat_start(&h, r, id) == 0;
		deliver_all(a);
		if (beating)
			heartbeat_stop(&h);
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
		enum mc_store_status s = mc_store_outbound_claim(r->st, r->owner,
		    r->cfg->claim_lease, &o);

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
