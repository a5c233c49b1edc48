/*
 * store_indexes.c - the indexes every query of the store relies on, created
 * once by the operator tool (`mailcell db init`, also run by `domain add`)
 * and by the relay worker at start. createIndexes is idempotent.
 */
#include "store_int.h"

#include <stdio.h>
#include <string.h>

struct index_spec {
	const char *coll;
	const char *name;
	const char *keys;   /* JSON: the key pattern */
	int unique;
};

static const struct index_spec indexes[] = {
	/* GridFS's own two indexes (what GridFS drivers create). */
	{ "bodies.chunks", "files_id_1_n_1", "{\"files_id\": 1, \"n\": 1}", 1 },
	{ "bodies.files", "filename_1_uploadDate_1", "{\"filename\": 1, \"uploadDate\": 1}", 0 },
	/* POP3 listing (mailbox, sorted by arrival) and body reference checks. */
	{ "messages", "mailbox_received", "{\"mailbox\": 1, \"received\": 1, \"_id\": 1}", 0 },
	{ "messages", "body", "{\"body\": 1}", 0 },
	/* The relay worker's claim: queued and due, or delivering with the lease run out. */
	{ "outbound", "state_next_attempt", "{\"state\": 1, \"next_attempt\": 1}", 0 },
	{ "outbound", "state_lease_until", "{\"state\": 1, \"lease_until\": 1}", 0 },
	{ "outbound", "body", "{\"body\": 1}", 0 },
	{ "outbound_done", "finished", "{\"finished\": 1}", 0 },
	/* Removing a domain checks for its users and aliases. */
	{ "users", "domain", "{\"domain\": 1}", 0 },
	{ "aliases", "domain", "{\"domain\": 1}", 0 },
	{ "dkim_keys", "domain_created", "{\"domain\": 1, \"created\": -1}", 0 },
	/* Aggregate reports select by policy or header From domain and time. */
	{ "dmarc_records", "policy_domain_time", "{\"policy_domain\": 1, \"time\": 1}", 0 },
	{ "dmarc_records", "header_from_time", "{\"header_from\": 1, \"time\": 1}", 0 },
};

static enum mc_store_status
create_index(struct mc_store *st, const struct index_spec *x)
{
	bson_error_t e;
	bson_t *keys = bson_new_from_json((const uint8_t *)x->keys, -1, &e);
	bson_t cmd = BSON_INITIALIZER, arr, idx;
	enum mc_store_status s = MC_STORE_OK;

	if (keys == NULL)
		return mc_store_seterr(st, MC_STORE_ERROR, "index %s: %s", x->name, e.message);
	BSON_APPEND_UTF8(&cmd, "createIndexes", x->coll);
	BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
	BSON_APPEND_DOCUMENT_BEGIN(&arr, "0", &idx);
	BSON_APPEND_DOCUMENT(&idx, "key", keys);
	BSON_APPEND_UTF8(&idx, "name", x->name);
	if (x->unique)
		BSON_APPEND_BOOL(&idx, "unique", true);
	bson_append_document_end(&arr, &idx);
	bson_append_array_end(&cmd, &arr);
	if (!mongoc_database_write_command_with_opts(st->db, &cmd, NULL, NULL, &e))
		s = mc_store_fail(st, &e, x->coll);
	bson_destroy(&cmd);
	bson_destroy(keys);
	return s;
}

enum mc_store_status
mc_store_init_indexes(struct mc_store *st, void (*cb)(void *ctx, const char *coll,
    const char *name), void *ctx)
{
	enum mc_store_status s;

	if ((s = mc_store_connect(st)) != MC_STORE_OK)
		return s;
	for (size_t i = 0; i < sizeof(indexes) / sizeof(indexes[0]); i++) {
		if ((s = create_index(st, &indexes[i])) != MC_STORE_OK)
			return s;
		if (cb != NULL)
			cb(ctx, indexes[i].coll, indexes[i].name);
	}
	return MC_STORE_OK;
}
