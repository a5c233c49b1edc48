/*
 * relay.h - the relay worker: a parent process (pool.c) forks children
 * that claim due queue items from a batch of candidates (batch.c) and
 * deliver them (queue.c, with a lease renewer, heartbeat.c), recipient by
 * destination domain over MX hosts (deliver.c) on connections kept for the
 * next item to the same host (conncache.c), into local mailboxes when the
 * domain is ours (local.c), and tell the sender what failed or is late
 * (bounce.c, with dsn.c).
 */
#ifndef RELAY_RELAY_H
#define RELAY_RELAY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "config.h"
#include "store.h"
#include "store_relay.h"

typedef struct ssl_ctx_st SSL_CTX;
struct smtpc;
struct heartbeat;

#define RELAY_LOG_MAX 400    /* log entries kept per attempt */
#define RELAY_BATCH 32       /* candidate ids per process and refill */
#define RELAY_CHILDREN_MAX 100  /* relay_concurrency's bound */
#define RELAY_CONN_MAX_TX 100   /* transactions on one kept connection */
#define RELAY_CONN_IDLE 10      /* seconds a kept connection may wait for the next */

/* The SMTP connection a worker process keeps for the next item (conncache.c). */
struct relay_conn {
	struct smtpc *smtp;      /* NULL: none kept */
	int fd;
	char host[256];          /* the MX host (or relay_host) it goes to */
	unsigned port;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char where[320];         /* "host [address]:port", for the log */
	time_t idle_since;
};

/* A worker process's candidate ids, claimed one at a time (batch.c). */
struct relay_batch {
	char (*ids)[MC_ID_LEN + 1];
	size_t n, next;
	int stealing;            /* ids of every share, not only this process's */
	size_t claimed;          /* claims from the current ids */
};

/* One worker process (a child of the pool). */
struct relay {
	const struct mc_config *cfg;
	struct mc_store *st;
	char owner[128];         /* this worker, in claims */
	SSL_CTX *tls_ctx;        /* client context, made at first use */
	unsigned slot, nslots;   /* its share: ids that hash to slot (of nslots) */
	struct relay_batch batch;
	struct heartbeat *hb;    /* renews the claim of the item being delivered */
	struct relay_conn conn;
	char bodies[RELAY_BATCH][MC_ID_LEN + 1];   /* of delivered items, to release */
	size_t nbodies;
};

/* The parent's view of its children (pool.c). */
struct relay_pool {
	const struct mc_config *cfg;
	int indexed;             /* the indexes were made (or cannot be) */
	time_t maintained;       /* when delivered items were last swept and purged */
	unsigned running;
	int failed;              /* a child ended with a store failure (or crashed) */
};

/* Set on SIGTERM: finish the current item, claim no other. */
extern volatile sig_atomic_t relay_stopping;

/* pool.c: SIGTERM and SIGINT set relay_stopping and reach the children. */
void pool_signals(void);
/* Starts children for what is due, up to relay_concurrency; -1 when the store failed. */
int pool_pass(struct relay_pool *p);
/* Collects the children that ended; waits for all of them when `all`. */
void pool_reap(struct relay_pool *p, int all);

/* batch.c: which process's share an id is in (of nslots). */
unsigned batch_share(const char *id, unsigned nslots);
/* This process's share of what the parent fetched: ids[i] where slots[i] is its slot. */
int batch_init(struct relay *r, char (*ids)[MC_ID_LEN + 1], const unsigned *slots, size_t n);
/* Claims the next due item: MC_STORE_OK, NOTFOUND when nothing is left, or a failure. */
enum mc_store_status batch_claim(struct relay *r, struct mc_outbound_info *out);
void batch_free(struct relay *r);

/* heartbeat.c: one thread per process renewing the claim on `id` while it is watched. */
struct heartbeat *heartbeat_start(const struct mc_config *cfg, const char *owner);
/* Watches id (NULL: none); returns once no renewal of the previous one is under way. */
void heartbeat_watch(struct heartbeat *h, const char *id);
void heartbeat_stop(struct heartbeat *h);

/* conncache.c: the kept connection to host:port, if it can carry another transaction. */
struct relay_conn *conncache_take(struct relay *r, const char *host, unsigned port);
/* After a transaction on c (fd, connected to addr): keep it for the next one, or close it. */
void conncache_keep(struct relay *r, struct smtpc *c, int fd, const char *host,
    unsigned port, const struct sockaddr *addr, socklen_t addrlen);
/* Closes the kept connection (QUIT), if any. */
void conncache_drop(struct relay *r);

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
/* A child process: delivers its share and what else is due; its exit status. */
int relay_child(const struct mc_config *cfg, unsigned slot, unsigned nslots,
    char (*ids)[MC_ID_LEN + 1], const unsigned *slots, size_t n);

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
