/*
 * heartbeat.c - keeps a worker process's claim alive while it delivers an
 * item: a server may take longer than the lease to answer (relay_timeout
 * can exceed claim_lease), and another worker must not take over an item
 * still being worked on. One thread per process with its own store
 * connection (a client is not shared), renewing every claim_lease / 3.
 */
#include "relay.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct heartbeat {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;       /* watch or stop changed */
	pthread_cond_t idle;       /* a renewal ended */
	int stop;
	int renewing;
	char id[MC_ID_LEN + 1];    /* "" : nothing to renew */
	struct timespec due;       /* the next renewal */
	const struct mc_config *cfg;
	const char *owner;
};

static unsigned
every(const struct heartbeat *h)
{
	return h->cfg->claim_lease / 3 ? h->cfg->claim_lease / 3 : 1;
}

/* Renews the claim on id, without the lock held. */
static void
renew(struct heartbeat *h, struct mc_store *st, const char *id)
{
	pthread_mutex_unlock(&h->lock);
	if (mc_store_item_renew(st, id, h->owner, h->cfg->claim_lease) != MC_STORE_OK)
		mc_log(MC_LOG_WARNING, "queue %s: claim not renewed: %s", id, mc_store_error(st));
	pthread_mutex_lock(&h->lock);
}

static void *
beat(void *arg)
{
	struct heartbeat *h = arg;
	struct mc_store *st = mc_store_new(h->cfg);

	pthread_mutex_lock(&h->lock);
	while (!h->stop && st != NULL) {
		char id[MC_ID_LEN + 1];

		if (h->id[0] == '\0') {
			pthread_cond_wait(&h->wake, &h->lock);
			continue;
		}
		if (pthread_cond_timedwait(&h->wake, &h->lock, &h->due) != ETIMEDOUT || h->stop ||
		    h->id[0] == '\0')
			continue;
		snprintf(id, sizeof(id), "%s", h->id);
		h->renewing = 1;
		renew(h, st, id);
		h->renewing = 0;
		h->due.tv_sec += (time_t)every(h);
		pthread_cond_broadcast(&h->idle);
	}
	pthread_mutex_unlock(&h->lock);
	mc_store_free(st);
	return NULL;
}

struct heartbeat *
heartbeat_start(const struct mc_config *cfg, const char *owner)
{
	struct heartbeat *h = calloc(1, sizeof(*h));
	sigset_t all, old;
	int rc;

	if (h == NULL)
		return NULL;
	h->cfg = cfg;
	h->owner = owner;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->wake, NULL);
	pthread_cond_init(&h->idle, NULL);
	sigfillset(&all);                       /* signals are the main thread's */
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&h->thread, NULL, beat, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		mc_log(MC_LOG_WARNING, "no claim renewal: %s", strerror(rc));
		pthread_cond_destroy(&h->idle);
		pthread_cond_destroy(&h->wake);
		pthread_mutex_destroy(&h->lock);
		free(h);
		return NULL;
	}
	return h;
}

void
heartbeat_watch(struct heartbeat *h, const char *id)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	while (h->renewing)
		pthread_cond_wait(&h->idle, &h->lock);
	snprintf(h->id, sizeof(h->id), "%s", id ? id : "");
	clock_gettime(CLOCK_REALTIME, &h->due);
	h->due.tv_sec += (time_t)every(h);
	pthread_cond_signal(&h->wake);
	pthread_mutex_unlock(&h->lock);
}

void
heartbeat_stop(struct heartbeat *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = 1;
	pthread_cond_signal(&h->wake);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thread, NULL);
	pthread_cond_destroy(&h->idle);
	pthread_cond_destroy(&h->wake);
	pthread_mutex_destroy(&h->lock);
	free(h);
}
