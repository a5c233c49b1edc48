/*
 * store_relay.h - what the relay worker reads and writes of a claimed queue
 * item: its recipients with their state, the attempt log, the lease, and the
 * outcome (queued again, done or failed); and the delivered items it keeps
 * in outbound_done for a while.
 */
#ifndef MC_STORE_RELAY_H
#define MC_STORE_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store.h"

struct mc_item_rcpt {
	char address[512];
	char state[16];        /* pending, delivered, failed */
	char status[16];       /* RFC 3463 code of the last outcome ("" if none) */
	char reply[512];       /* the last reply or reason */
	char remote_mta[256];  /* the host that gave it */
};

struct mc_item {
	char id[MC_ID_LEN + 1];
	char sender[512];          /* "" for <> */
	char body[MC_ID_LEN + 1];
	char *head;                /* sent before the body; never NULL after load */
	uint64_t size;             /* head and body, octets */
	char body_type[16];        /* 7bit, 8bitmime, binarymime */
	int smtputf8;
	time_t created;
	int attempts;
	int warned;                /* a delay DSN went out */
	struct mc_item_rcpt *rcpts;
	size_t nrcpts;
};

struct mc_item_log {
	int64_t time_ms;
	const char *command;
	const char *reply;
};

/* The whole item (caller frees with mc_item_free). */
enum mc_store_status mc_store_item_load(struct mc_store *st, const char *id, struct mc_item *out);
void mc_item_free(struct mc_item *it);

/* Extends our claim (lock and lease_until); NOTFOUND when it was lost. */
enum mc_store_status mc_store_item_renew(struct mc_store *st, const char *id,
    const char *owner, unsigned lease);

/* Appends entries to the item's log. */
enum mc_store_status mc_store_item_log(struct mc_store *st, const char *id,
    const struct mc_item_log *entries, size_t n);

/* Calls cb for every log entry of the item, oldest first. */
enum mc_store_status mc_store_item_log_list(struct mc_store *st, const char *id,
    void (*cb)(void *ctx, const struct mc_item_log *e), void *ctx);

/*
 * Writes the outcome with the log entries not yet written (log, nlog): the
 * recipients' states, warned, and state "queued" (due at next_attempt) or
 * "failed"; or, for "done", the item moves to outbound_done at once (with
 * its finished date, without its body: the caller releases that, see
 * mc_store_bodies_release), which keeps outbound, and the dev database's
 * scans of it, small. Then gives up the claim. mc_store_item_load and
 * mc_store_item_log_list find delivered items too.
 */
enum mc_store_status mc_store_item_finish(struct mc_store *st, const struct mc_item *it,
    const char *owner, const char *state, time_t next_attempt,
    const struct mc_item_log *log, size_t nlog);

/*
 * For a claim taking over an item whose worker died: EXISTS when the item
 * was delivered (it is in outbound_done; it is now removed from outbound
 * too), NOTFOUND when it was not.
 */
enum mc_store_status mc_store_item_settle(struct mc_store *st, const char *id);

/*
 * Moves these done items from outbound to outbound_done (a copy without the
 * body): one bulk insert and one delete for the lot. Ids not in outbound, or
 * not done, are left alone; *moved is how many moved. The bodies are the
 * caller's to release afterwards (mc_store_bodies_release).
 */
enum mc_store_status mc_store_done_move(struct mc_store *st, const char (*ids)[MC_ID_LEN + 1],
    size_t n, size_t *moved);

/*
 * Moves items left done in outbound (by a worker that stopped between its
 * two writes, or an older version) to outbound_done with mc_store_done_move:
 * at most max; *moved of them.
 */
enum mc_store_status mc_store_done_sweep(struct mc_store *st, size_t max, size_t *moved);

/*
 * Deletes the bodies of delivered items that no mailbox entry or queue item
 * refers to: the reference check of mc_store_body_release for many bodies
 * at once (one query per collection: on the dev database one scan each,
 * rather than two per item). A body left behind by a crash is db gc's.
 */
enum mc_store_status mc_store_bodies_release(struct mc_store *st,
    const char (*ids)[MC_ID_LEN + 1], size_t n);

/*
 * Removes failed items (their DSN sent) that failed more than keep seconds
 * ago, at most max, and releases their bodies; *removed of them. Until then
 * they stay in the queue for `queue list` and `queue show`.
 */
enum mc_store_status mc_store_failed_purge(struct mc_store *st, unsigned keep, size_t max,
    size_t *removed);

/* Removes delivered items that finished more than keep seconds ago. */
enum mc_store_status mc_store_done_purge(struct mc_store *st, unsigned keep, int64_t *removed);

#endif
