/*
 * store.h - the MongoDB store every program uses: domains, users, aliases,
 * message bodies (GridFS, streamed) and their mailbox entries, the outbound
 * queue and expiring locks. Connects lazily; failures are reported, never hidden.
 */
#ifndef MC_STORE_H
#define MC_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"

enum mc_store_status {
	MC_STORE_OK = 0,
	MC_STORE_NOTFOUND,   /* no such domain/user/alias/message/item */
	MC_STORE_EXISTS,     /* duplicate key; for locks: held by someone else */
	MC_STORE_NODOMAIN,   /* the address's domain is not a local domain */
	MC_STORE_INUSE,      /* refused because something still refers to it */
	MC_STORE_TEMP,       /* database unreachable, slow or failing: try later */
	MC_STORE_ERROR,      /* anything else; see mc_store_error() */
};

struct mc_store;

/* Remembers the settings; opens no connection until the first operation. */
struct mc_store *mc_store_new(const struct mc_config *cfg);
void mc_store_free(struct mc_store *st);

/* The last error as one line, for logs and the operator (no secrets). */
const char *mc_store_error(const struct mc_store *st);

/* Round trip to the server: MC_STORE_OK or MC_STORE_TEMP. */
enum mc_store_status mc_store_ping(struct mc_store *st);

/*
 * Creates the indexes the store's queries use (idempotent; an existing index
 * of the same name and keys is kept). cb, if not NULL, hears of each one.
 */
enum mc_store_status mc_store_init_indexes(struct mc_store *st,
    void (*cb)(void *ctx, const char *coll, const char *name), void *ctx);

/* ---- domains, users, aliases (keys are canonical, see mc_addr_key) ---- */

enum mc_store_status mc_store_domain_add(struct mc_store *st, const char *domain);
/* MC_STORE_INUSE when users or aliases of the domain still exist. */
enum mc_store_status mc_store_domain_remove(struct mc_store *st, const char *domain);
enum mc_store_status mc_store_domain_exists(struct mc_store *st, const char *domain);
enum mc_store_status mc_store_domain_list(struct mc_store *st,
    void (*cb)(void *ctx, const char *domain), void *ctx);

struct mc_user {
	char address[512];
	char name[256];
	char password[256];  /* crypt(3) hash */
	int disabled;
};

/* MC_STORE_NODOMAIN if the domain is not local, MC_STORE_EXISTS if taken. */
enum mc_store_status mc_store_user_add(struct mc_store *st, const char *address,
    const char *name, const char *hash);
enum mc_store_status mc_store_user_passwd(struct mc_store *st, const char *address,
    const char *hash);
enum mc_store_status mc_store_user_set_disabled(struct mc_store *st, const char *address,
    int disabled);
enum mc_store_status mc_store_user_remove(struct mc_store *st, const char *address);
enum mc_store_status mc_store_user_get(struct mc_store *st, const char *address,
    struct mc_user *out);
enum mc_store_status mc_store_user_list(struct mc_store *st,
    void (*cb)(void *ctx, const struct mc_user *u), void *ctx);

/* The first user (by address) of a domain: MC_STORE_NOTFOUND if it has none. */
enum mc_store_status mc_store_domain_first_user(struct mc_store *st, const char *domain,
    struct mc_user *out);

/* Adds targets to the alias (creating it); the address's domain must be local. */
enum mc_store_status mc_store_alias_add(struct mc_store *st, const char *address,
    const char *const *targets, size_t ntargets);
enum mc_store_status mc_store_alias_remove(struct mc_store *st, const char *address);
/* Calls cb once per target of one alias (NOTFOUND if there is no such alias). */
enum mc_store_status mc_store_alias_get(struct mc_store *st, const char *address,
    void (*cb)(void *ctx, const char *target), void *ctx);
/* Calls cb once per alias with its targets joined by ", ". */
enum mc_store_status mc_store_alias_list(struct mc_store *st,
    void (*cb)(void *ctx, const char *address, const char *targets), void *ctx);

/* ---- message bodies and mailboxes ---- */

#define MC_ID_LEN 24  /* ObjectId as hex */

/* A body being written: chunk by chunk into GridFS while DATA/BDAT arrives. */
struct mc_body_writer;

enum mc_store_status mc_store_body_begin(struct mc_store *st, struct mc_body_writer **out);
enum mc_store_status mc_store_body_write(struct mc_body_writer *w, const void *buf, size_t len);
/* Completes the body; body_id receives its id (MC_ID_LEN hex + NUL). Frees w. */
enum mc_store_status mc_store_body_finish(struct mc_body_writer *w, char *body_id);
/* Drops an unfinished body (its chunks are removed). Frees w. */
void mc_store_body_abort(struct mc_body_writer *w);
uint64_t mc_store_body_size(const struct mc_body_writer *w);

struct mc_message_meta {
	const char *sender;        /* envelope sender ("" for <>) */
	const char *remote_ip;
	int quarantined;
	/*
	 * Header lines this server adds on top of the body (Return-Path, trace and
	 * authentication results), known only once the body is complete; readers
	 * get them before the body. NULL or "" for none.
	 */
	const char *head;
};

/*
 * Makes a finished body visible in each mailbox (one entry each); size is the
 * body's, the entry's size adds meta->head. Returns only once the write is
 * acknowledged with the configured write concern.
 */
enum mc_store_status mc_store_deliver(struct mc_store *st, const char *body_id,
    uint64_t size, const char *const *mailboxes, size_t n,
    const struct mc_message_meta *meta);

/* Removes every mailbox entry of this body (undoing mc_store_deliver). */
enum mc_store_status mc_store_undeliver(struct mc_store *st, const char *body_id);

struct mc_message_info {
	char id[MC_ID_LEN + 1];
	char uidl[MC_ID_LEN + 1];
	char body[MC_ID_LEN + 1];
	uint64_t size;
	time_t received;
	char sender[512];
	int quarantined;
	const char *head;   /* the entry's header block (NULL: none); valid in the callback only */
};

/* The mailbox's messages, oldest first. */
enum mc_store_status mc_store_mailbox_list(struct mc_store *st, const char *mailbox,
    void (*cb)(void *ctx, const struct mc_message_info *m), void *ctx);

/* Removes these entries of the mailbox, then each body nothing else refers to. */
enum mc_store_status mc_store_messages_delete(struct mc_store *st, const char *mailbox,
    const char *const *ids, size_t n);

struct mc_body_reader;
enum mc_store_status mc_store_body_open(struct mc_store *st, const char *body_id,
    struct mc_body_reader **out);
/* A mailbox entry's message as a user sees it: its head, then its body. */
enum mc_store_status mc_store_message_open(struct mc_store *st, const char *message_id,
    struct mc_body_reader **out);
/*
 * The same from what mc_store_mailbox_list gave (body id, head, size), without
 * reading the entry again: for a session that listed the mailbox at login.
 */
enum mc_store_status mc_store_entry_open(struct mc_store *st, const char *body_id,
    const char *head, uint64_t size, struct mc_body_reader **out);
/* Reads up to len bytes; *got == 0 at the end. */
enum mc_store_status mc_store_body_read(struct mc_body_reader *r, void *buf, size_t len,
    size_t *got);
void mc_store_body_close(struct mc_body_reader *r);

/* What mc_store_gc removed. */
struct mc_gc_counts {
	size_t unfinished;    /* bodies whose upload never finished (chunks only) */
	size_t unreferenced;  /* finished bodies no entry or queue item refers to */
};

/*
 * Removes what a crash can leave behind, older than older_than seconds (keep
 * it well above the longest transaction, e.g. an hour): chunks of unfinished
 * bodies and bodies nothing refers to. Safe while the server runs.
 */
enum mc_store_status mc_store_gc(struct mc_store *st, unsigned older_than,
    struct mc_gc_counts *out);

/* Removes a finished body that nothing refers to (e.g. a refused message). */
enum mc_store_status mc_store_body_delete(struct mc_store *st, const char *body_id);

/* ---- outbound queue ---- */

struct mc_outbound_info {
	char id[MC_ID_LEN + 1];
	char state[16];        /* queued, delivering, held, done, failed */
	time_t next_attempt;
	time_t created;
	int attempts;
	char sender[512];
	char recipients[2048]; /* addresses joined by "," (truncated with "...") */
	char body[MC_ID_LEN + 1];
};

struct mc_outbound_new {
	const char *sender;          /* envelope sender, "" for <> */
	const char *const *rcpts;
	size_t nrcpts;
	const char *body_id;
	const char *head;            /* sent before the body, like a mailbox entry's; may be NULL */
	const char *body_type;       /* "7bit", "8bitmime" or "binarymime" (NULL: 7bit) */
	int smtputf8;                /* the envelope needs SMTPUTF8 */
};

/* Queues a finished body for these recipients; id receives the item id. */
enum mc_store_status mc_store_outbound_add(struct mc_store *st, const struct mc_outbound_new *q,
    char *id);
enum mc_store_status mc_store_outbound_list(struct mc_store *st,
    void (*cb)(void *ctx, const struct mc_outbound_info *o), void *ctx);
/* The whole item as relaxed extended JSON (caller frees with free()). */
enum mc_store_status mc_store_outbound_json(struct mc_store *st, const char *id, char **json);
enum mc_store_status mc_store_outbound_get(struct mc_store *st, const char *id,
    struct mc_outbound_info *out);
/* retry: due now; hold: never due until released; release: due now. */
enum mc_store_status mc_store_outbound_retry(struct mc_store *st, const char *id);
enum mc_store_status mc_store_outbound_hold(struct mc_store *st, const char *id);
enum mc_store_status mc_store_outbound_release(struct mc_store *st, const char *id);
/* Removes the item, and its body if nothing else refers to it. */
enum mc_store_status mc_store_outbound_delete(struct mc_store *st, const char *id);

/*
 * Claims one due item (queued and due, or delivering with its lease run out)
 * for `lease_seconds`, atomically across any number of workers: on
 * MC_STORE_OK the item is ours and in state delivering; NOTFOUND: none due.
 */
enum mc_store_status mc_store_outbound_claim(struct mc_store *st, const char *owner,
    unsigned lease_seconds, struct mc_outbound_info *out);

/* ---- locks: atomic on MongoDB and FerretDB alike (insert of a named _id) ---- */

/*
 * Takes lock `name` for holder until now + ttl. An expired lock is taken over.
 * MC_STORE_EXISTS when someone else holds it.
 */
enum mc_store_status mc_store_lock_take(struct mc_store *st, const char *name,
    const char *holder, unsigned ttl_seconds);
enum mc_store_status mc_store_lock_renew(struct mc_store *st, const char *name,
    const char *holder, unsigned ttl_seconds);
enum mc_store_status mc_store_lock_release(struct mc_store *st, const char *name,
    const char *holder);

/* ---- the relay worker's claims, one id at a time ---- */

/*
 * Ids of due items (as mc_store_outbound_claim takes them), oldest due
 * first, at most max; *n of them.
 */
enum mc_store_status mc_store_outbound_due(struct mc_store *st, char ids[][MC_ID_LEN + 1],
    size_t max, size_t *n);

/*
 * Claims this item, if it is still due, as mc_store_outbound_claim does:
 * OK (ours, delivering), EXISTS (another worker holds it), NOTFOUND (no
 * longer due, or gone).
 */
enum mc_store_status mc_store_outbound_claim_id(struct mc_store *st, const char *id,
    const char *owner, unsigned lease_seconds, struct mc_outbound_info *out);

#endif
