/*
 * relay.h - the relay worker: claims due queue items and delivers them
 * (queue.c), recipient by destination domain over MX hosts (deliver.c),
 * into local mailboxes when the domain is ours (local.c), and tells the
 * sender what failed or is late (bounce.c, with dsn.c).
 */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "store.h"
#include "store_relay.h"

typedef struct ssl_ctx_st SSL_CTX;

#define RELAY_LOG_MAX 400    /* log entries kept per attempt */

struct relay {
	const struct mc_config *cfg;
	struct mc_store *st;
	char owner[128];         /* this worker, in claims */
	SSL_CTX *tls_ctx;        /* client context, made at first use */
};

/* Set on SIGTERM: finish the current item, claim no other. */
extern volatile sig_atomic_t relay_stopping;

/* One attempt at one item: the item, and what this attempt saw. */
struct attempt {
	struct relay *r;
	struct mc_item it;
	int *newly_failed;       /* per recipient: failed during this attempt */
	int *touched;            /* per recipient: has an outcome from this attempt */
	struct mc_item_log log[RELAY_LOG_MAX];
	char *log_text[RELAY_LOG_MAX][2];
	size_t nlog;
	size_t logged;           /* entries already written to the store */
};

/* queue.c: delivers everything due; the number of items handled, or -1. */
int relay_drain(struct relay *r);

/* deliver.c: the pending recipients of one domain (indices into it.rcpts). */
void deliver_domain(struct attempt *a, const char *domain, const size_t *idx, size_t n);
/* Records a recipient's outcome (state delivered/failed/pending). */
void rcpt_outcome(struct attempt *a, size_t i, const char *state, const char *status,
    const char *reply, const char *mta);
void attempt_log(struct attempt *a, const char *command, const char *reply);
/* Writes the log entries gathered so far; -1 when the store failed. */
int attempt_flush_log(struct attempt *a);

/* local.c: a message in memory into a local user's mailbox; 0, 1 no such user, -1 store. */
int local_deliver_buffer(struct relay *r, const char *address, const char *head,
    const char *msg, size_t len);
/* ... or into the outbound queue from the null sender; -1 store. */
int local_queue_buffer(struct relay *r, const char *rcpt, const char *msg, size_t len);
/* The queued message itself for local recipients of the item. */
void local_deliver_item(struct attempt *a, const size_t *idx, size_t n);

/* bounce.c: failure and delay notifications for the item's sender. */
void bounce_failed(struct attempt *a);
void bounce_delayed(struct attempt *a, time_t retry_until);

#endif
