/*
 * store_relay.h - what the relay worker reads and writes of a claimed queue
 * item: its recipients with their state, the attempt log, the lease, and the
 * outcome (queued again, done or failed).
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
 * Writes the outcome: the recipients' states, warned, and state "queued"
 * (due at next_attempt), "done" (the body is released) or "failed"; then
 * gives up the claim.
 */
enum mc_store_status mc_store_item_finish(struct mc_store *st, const struct mc_item *it,
    const char *owner, const char *state, time_t next_attempt);

#endif
