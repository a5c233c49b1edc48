/*
 * store_int.h - what the store's source files share and nobody else sees:
 * the connection state, lazy connect, collection handles and error mapping.
 */
#ifndef MC_STORE_INT_H
#define MC_STORE_INT_H

#include <mongoc/mongoc.h>

#include "store.h"

struct mc_store {
	char *uri;
	char *dbname;
	char *wconcern;
	int journal;
	unsigned timeout_ms;
	mongoc_client_t *client;
	mongoc_database_t *db;
	char err[512];
};

/* Connects on first use; MC_STORE_TEMP with st->err set when it cannot. */
enum mc_store_status mc_store_connect(struct mc_store *st);

/* A collection handle (caller destroys), or NULL after connect failed. */
mongoc_collection_t *mc_store_coll(struct mc_store *st, const char *name);

/* Map a driver error to a status and remember it as the last error. */
enum mc_store_status mc_store_fail(struct mc_store *st, const bson_error_t *e,
    const char *what);

/* Remember an error text of our own. */
enum mc_store_status mc_store_seterr(struct mc_store *st, enum mc_store_status s,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* 1 if a document matches filter in coll, 0 if none, -1 on error (st->err set). */
int mc_store_exists(struct mc_store *st, const char *coll, const bson_t *filter);

/* Parse a 24-hex id into oid; MC_STORE_NOTFOUND with a message if malformed. */
enum mc_store_status mc_store_oid(struct mc_store *st, const char *hex, bson_oid_t *oid);

/* Current time in milliseconds since the epoch (for BSON dates). */
int64_t mc_store_now_ms(void);

/* 1 if any mailbox entry or queue item still refers to body, 0 if none, -1 error. */
int mc_store_body_referenced(struct mc_store *st, const bson_oid_t *body);

/* Deletes every chunk of body id from the chunks collection, by files_id. */
/*
 * Deletes these bodies (those that exist) with one delete per collection:
 * the files documents first, then the chunks. No reference check: the
 * caller knows nothing refers to them.
 */
enum mc_store_status mc_store_bodies_delete(struct mc_store *st, const bson_oid_t *ids,
    size_t n);
enum mc_store_status mc_store_chunks_delete(struct mc_store *st, mongoc_collection_t *chunks,
    const bson_oid_t *id);

/* Deletes a body unless a mailbox entry or queue item still refers to it. */
enum mc_store_status mc_store_body_release(struct mc_store *st, const bson_oid_t *body);

/* Copy a UTF-8 string field (or "") into out. */
void mc_store_get_str(const bson_t *doc, const char *key, char *out, size_t outlen);

#endif
