/*
 * store_relay.c - the relay worker's view of a claimed queue item (see
 * store_relay.h). Every write names the item by _id while its claim lock
 * is held, so it is safe on MongoDB and on the dev database alike. A
 * delivered item moves from outbound to outbound_done, kept for a while.
 */
#include "store_relay.h"
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM_RCPTS_MAX 10000

static void
rcpt_from_doc(bson_iter_t *r, struct mc_item_rcpt *out)
{
	bson_t d;
	const uint8_t *data;
	uint32_t len;

	memset(out, 0, sizeof(*out));
	bson_iter_document(r, &len, &data);
	if (!bson_init_static(&d, data, len))
		return;
	mc_store_get_str(&d, "address", out->address, sizeof(out->address));
	mc_store_get_str(&d, "state", out->state, sizeof(out->state));
	mc_store_get_str(&d, "status", out->status, sizeof(out->status));
	mc_store_get_str(&d, "reply", out->reply, sizeof(out->reply));
	mc_store_get_str(&d, "remote_mta", out->remote_mta, sizeof(out->remote_mta));
	if (out->state[0] == '\0')
		snprintf(out->state, sizeof(out->state), "pending");
}

static enum mc_store_status
rcpts_from_doc(struct mc_store *st, const bson_t *doc, struct mc_item *it)
{
	bson_iter_t i, arr;
	size_t n = 0;

	if (!bson_iter_init_find(&i, doc, "recipients") || !bson_iter_recurse(&i, &arr))
		return mc_store_seterr(st, MC_STORE_ERROR, "%s: queue item without recipients", it->id);
	while (bson_iter_next(&arr))
		n++;
	if (n == 0 || n > ITEM_RCPTS_MAX)
		return mc_store_seterr(st, MC_STORE_ERROR, "%s: %zu recipients", it->id, n);
	if ((it->rcpts = calloc(n, sizeof(*it->rcpts))) == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	bson_iter_recurse(&i, &arr);
	while (bson_iter_next(&arr) && it->nrcpts < n)
		if (BSON_ITER_HOLDS_DOCUMENT(&arr))
			rcpt_from_doc(&arr, &it->rcpts[it->nrcpts++]);
	return MC_STORE_OK;
}

static time_t
date_of(const bson_t *doc, const char *key)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
		return (time_t)(bson_iter_date_time(&it) / 1000);
	return 0;
}

static enum mc_store_status
item_from_doc(struct mc_store *st, const bson_t *doc, struct mc_item *it)
{
	bson_iter_t i;
	char head[65536];

	if (bson_iter_init_find(&i, doc, "body") && BSON_ITER_HOLDS_OID(&i))
		bson_oid_to_string(bson_iter_oid(&i), it->body);
	mc_store_get_str(doc, "sender", it->sender, sizeof(it->sender));
	mc_store_get_str(doc, "body_type", it->body_type, sizeof(it->body_type));
	if (it->body_type[0] == '\0')
		snprintf(it->body_type, sizeof(it->body_type), "7bit");
	it->smtputf8 = bson_iter_init_find(&i, doc, "smtputf8") && bson_iter_as_bool(&i);
	it->warned = bson_iter_init_find(&i, doc, "warned") && bson_iter_as_bool(&i);
	if (bson_iter_init_find(&i, doc, "attempts"))
		it->attempts = (int)bson_iter_as_int64(&i);
	it->created = date_of(doc, "created");
	if (bson_iter_init_find(&i, doc, "size"))
		it->size = (uint64_t)bson_iter_as_int64(&i);
	mc_store_get_str(doc, "head", head, sizeof(head));
	if ((it->head = strdup(head)) == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	return rcpts_from_doc(st, doc, it);
}

/* The body's length from its GridFS files document (0 if unknown). */
static uint64_t
body_length(struct mc_store *st, const char *body_id)
{
	mongoc_collection_t *c;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_t *f, *opts;
	bson_oid_t oid;
	bson_iter_t it;
	uint64_t len = 0;

	if (mc_store_oid(st, body_id, &oid) != MC_STORE_OK ||
	    (c = mc_store_coll(st, "bodies.files")) == NULL)
		return 0;
	f = BCON_NEW("_id", BCON_OID(&oid));
	opts = BCON_NEW("limit", BCON_INT64(1));
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	bson_destroy(opts);
	if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "length"))
		len = (uint64_t)bson_iter_as_int64(&it);
	mongoc_cursor_destroy(cur);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return len;
}

/* One document by _id from coll (opts may be NULL); *doc a copy, or NOTFOUND. */
static enum mc_store_status
find_by_id(struct mc_store *st, const char *coll, const bson_oid_t *oid, const bson_t *opts,
    bson_t **doc)
{
	bson_t o = BSON_INITIALIZER;
	mongoc_collection_t *c;
	mongoc_cursor_t *cur;
	const bson_t *d;
	bson_t *f;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	*doc = NULL;
	if ((c = mc_store_coll(st, coll)) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(oid));
	/* limit 1: the dev database then reads the primary key, not every document. */
	if (opts != NULL)
		bson_concat(&o, opts);
	BSON_APPEND_INT64(&o, "limit", 1);
	cur = mongoc_collection_find_with_opts(c, f, &o, NULL);
	if (mongoc_cursor_next(cur, &d))
		*doc = bson_copy(d);
	else if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading queue item");
	else
		s = MC_STORE_NOTFOUND;
	mongoc_cursor_destroy(cur);
	bson_destroy(&o);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/* The item from the queue, or else from the delivered ones (outbound_done). */
static enum mc_store_status
find_item(struct mc_store *st, const char *id, const bson_t *opts, bson_t **doc)
{
	bson_oid_t oid;
	enum mc_store_status s;

	*doc = NULL;
	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	s = find_by_id(st, "outbound", &oid, opts, doc);
	if (s == MC_STORE_NOTFOUND)
		s = find_by_id(st, "outbound_done", &oid, opts, doc);
	if (s == MC_STORE_NOTFOUND)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such queue item", id);
	return s;
}

enum mc_store_status
mc_store_item_load(struct mc_store *st, const char *id, struct mc_item *out)
{
	bson_t *doc;
	enum mc_store_status s;

	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", id);
	if ((s = find_item(st, id, NULL, &doc)) != MC_STORE_OK)
		return s;
	s = item_from_doc(st, doc, out);
	bson_destroy(doc);
	if (s == MC_STORE_OK && out->body[0] != '\0')
		out->size = strlen(out->head) + body_length(st, out->body);
	if (s != MC_STORE_OK)
		mc_item_free(out);
	return s;
}

void
mc_item_free(struct mc_item *it)
{
	free(it->head);
	free(it->rcpts);
	it->head = NULL;
	it->rcpts = NULL;
	it->nrcpts = 0;
}

/* One update by _id; NOTFOUND when nothing matched. */
static enum mc_store_status
update_item(struct mc_store *st, const char *id, const bson_t *u, const char *what)
{
	mongoc_collection_t *c;
	bson_t *f, reply;
	bson_oid_t oid;
	bson_error_t e;
	bson_iter_t it;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "outbound")) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(&oid));
	if (!mongoc_collection_update_one(c, f, u, NULL, &reply, &e))
		s = mc_store_fail(st, &e, what);
	else if (bson_iter_init_find(&it, &reply, "matchedCount") && bson_iter_as_int64(&it) == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such queue item", id);
	bson_destroy(&reply);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_item_renew(struct mc_store *st, const char *id, const char *owner, unsigned lease)
{
	char lock[64];
	bson_t *u;
	enum mc_store_status s;

	snprintf(lock, sizeof(lock), "outbound:%s", id);
	if ((s = mc_store_lock_renew(st, lock, owner, lease)) != MC_STORE_OK)
		return s;
	u = BCON_NEW("$set", "{", "lease_until",
	    BCON_DATE_TIME(mc_store_now_ms() + (int64_t)lease * 1000), "}");
	s = update_item(st, id, u, "renewing claim");
	bson_destroy(u);
	return s;
}

/* Log entries into an array being built, from index k on. */
static void
append_entries(bson_t *arr, uint32_t k, const struct mc_item_log *entries, size_t n)
{
	bson_t e;
	char key[16];
	const char *kp;

	for (size_t i = 0; i < n; i++) {
		bson_uint32_to_string(k++, &kp, key, sizeof(key));
		BSON_APPEND_DOCUMENT_BEGIN(arr, kp, &e);
		BSON_APPEND_DATE_TIME(&e, "time", entries[i].time_ms);
		BSON_APPEND_UTF8(&e, "command", entries[i].command);
		BSON_APPEND_UTF8(&e, "reply", entries[i].reply);
		bson_append_document_end(arr, &e);
	}
}

/* {$push: {log: {$each: [entries]}}} into u. */
static void
append_push(bson_t *u, const struct mc_item_log *entries, size_t n)
{
	bson_t push, each, arr;

	BSON_APPEND_DOCUMENT_BEGIN(u, "$push", &push);
	BSON_APPEND_DOCUMENT_BEGIN(&push, "log", &each);
	BSON_APPEND_ARRAY_BEGIN(&each, "$each", &arr);
	append_entries(&arr, 0, entries, n);
	bson_append_array_end(&each, &arr);
	bson_append_document_end(&push, &each);
	bson_append_document_end(u, &push);
}

enum mc_store_status
mc_store_item_log(struct mc_store *st, const char *id, const struct mc_item_log *entries,
    size_t n)
{
	bson_t u = BSON_INITIALIZER;
	enum mc_store_status s;

	if (n == 0)
		return MC_STORE_OK;
	append_push(&u, entries, n);
	s = update_item(st, id, &u, "writing the delivery log");
	bson_destroy(&u);
	return s;
}

static void
append_rcpts(bson_t *set, const struct mc_item *it)
{
	bson_t arr, r;
	char key[16];
	const char *k;

	BSON_APPEND_ARRAY_BEGIN(set, "recipients", &arr);
	for (uint32_t i = 0; i < it->nrcpts; i++) {
		const struct mc_item_rcpt *p = &it->rcpts[i];
		bson_uint32_to_string(i, &k, key, sizeof(key));
		BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &r);
		BSON_APPEND_UTF8(&r, "address", p->address);
		BSON_APPEND_UTF8(&r, "state", p->state);
		BSON_APPEND_UTF8(&r, "status", p->status);
		BSON_APPEND_UTF8(&r, "reply", p->reply);
		BSON_APPEND_UTF8(&r, "remote_mta", p->remote_mta);
		bson_append_document_end(&arr, &r);
	}
	bson_append_array_end(set, &arr);
}

/* When a delivered item finished: its finished date, else its last attempt, else now. */
static int64_t
finished_of(const bson_t *doc)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, doc, "finished") && BSON_ITER_HOLDS_DATE_TIME(&it))
		return bson_iter_date_time(&it);
	if (bson_iter_init_find(&it, doc, "next_attempt") && BSON_ITER_HOLDS_DATE_TIME(&it))
		return bson_iter_date_time(&it);
	return mc_store_now_ms();
}

/* Inserts a delivered item into outbound_done; a copy already there is fine. */
static enum mc_store_status
insert_done(struct mc_store *st, const bson_t *doc)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound_done");
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "keeping the delivered item");
	mongoc_collection_destroy(c);
	return s == MC_STORE_EXISTS ? MC_STORE_OK : s;
}

/* Removes the item from outbound, by _id alone (anything else makes the dev database scan). */
static enum mc_store_status
delete_queued(struct mc_store *st, const bson_oid_t *oid)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound");
	bson_t *f;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(oid));
	if (!mongoc_collection_delete_one(c, f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "removing the delivered item from the queue");
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/* The fields mc_store_item_finish writes (the rest of the item is kept as it is). */
static int
outcome_key(const char *k)
{
	static const char *const keys[] = { "state", "next_attempt", "lease_until", "warned",
	    "size", "recipients", "body", "log", "finished", NULL };

	for (size_t i = 0; keys[i] != NULL; i++)
		if (strcmp(k, keys[i]) == 0)
			return 1;
	return 0;
}

/* The stored log, then the entries not written yet. */
static void
append_whole_log(bson_t *out, const bson_t *doc, const struct mc_item_log *log, size_t nlog)
{
	bson_iter_t i, old;
	bson_t arr;
	uint32_t k = 0;
	char key[16];
	const char *kp;

	BSON_APPEND_ARRAY_BEGIN(out, "log", &arr);
	if (bson_iter_init_find(&i, doc, "log") && BSON_ITER_HOLDS_ARRAY(&i) &&
	    bson_iter_recurse(&i, &old))
		while (bson_iter_next(&old)) {
			bson_uint32_to_string(k++, &kp, key, sizeof(key));
			bson_append_iter(&arr, kp, -1, &old);
		}
	append_entries(&arr, k, log, nlog);
	bson_append_array_end(out, &arr);
}

/* The item as outbound_done keeps it: as queued, with the outcome, without the body. */
static void
done_doc(const bson_t *doc, const struct mc_item *it, const struct mc_item_log *log,
    size_t nlog, bson_t *out)
{
	bson_iter_t i;
	int64_t now = mc_store_now_ms();

	bson_init(out);
	if (bson_iter_init(&i, doc))
		while (bson_iter_next(&i))
			if (!outcome_key(bson_iter_key(&i)))
				bson_append_iter(out, bson_iter_key(&i), -1, &i);
	BSON_APPEND_UTF8(out, "state", "done");
	BSON_APPEND_DATE_TIME(out, "next_attempt", now);
	BSON_APPEND_DATE_TIME(out, "lease_until", 0);
	BSON_APPEND_BOOL(out, "warned", it->warned != 0);
	BSON_APPEND_INT64(out, "size", (int64_t)it->size);   /* kept once the body is gone */
	BSON_APPEND_DATE_TIME(out, "finished", now);
	append_rcpts(out, it);
	append_whole_log(out, doc, log, nlog);
}

/*
 * A delivered item leaves the queue: inserted into outbound_done with its
 * outcome and whole log, then removed from outbound. A crash in between
 * leaves it in both, delivering with a lease: outbound_done has the whole
 * record, and the worker that takes the item over when the lease has run
 * out finds it there and only removes it from outbound (see the claim).
 */
static enum mc_store_status
finish_done(struct mc_store *st, const struct mc_item *it, const struct mc_item_log *log,
    size_t nlog)
{
	bson_t *doc, done;
	bson_oid_t oid;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, it->id, &oid)) != MC_STORE_OK)
		return s;
	if ((s = find_by_id(st, "outbound", &oid, NULL, &doc)) != MC_STORE_OK)
		return s == MC_STORE_NOTFOUND ? mc_store_seterr(st, s, "%s: no such queue item",
		    it->id) : s;
	done_doc(doc, it, log, nlog, &done);
	bson_destroy(doc);
	if ((s = insert_done(st, &done)) == MC_STORE_OK)
		s = delete_queued(st, &oid);
	bson_destroy(&done);
	return s;
}

/* Not delivered (yet): the outcome and the new log entries in one update. */
static enum mc_store_status
record_outcome(struct mc_store *st, const struct mc_item *it, const char *state,
    time_t next_attempt, const struct mc_item_log *log, size_t nlog)
{
	bson_t u = BSON_INITIALIZER, set;
	enum mc_store_status s;

	BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
	BSON_APPEND_UTF8(&set, "state", state);
	BSON_APPEND_DATE_TIME(&set, "next_attempt", (int64_t)next_attempt * 1000);
	BSON_APPEND_DATE_TIME(&set, "lease_until", 0);
	BSON_APPEND_BOOL(&set, "warned", it->warned != 0);
	BSON_APPEND_INT64(&set, "size", (int64_t)it->size);
	append_rcpts(&set, it);
	bson_append_document_end(&u, &set);
	if (nlog > 0)
		append_push(&u, log, nlog);
	s = update_item(st, it->id, &u, "recording the delivery outcome");
	bson_destroy(&u);
	return s;
}

enum mc_store_status
mc_store_item_finish(struct mc_store *st, const struct mc_item *it, const char *owner,
    const char *state, time_t next_attempt, const struct mc_item_log *log, size_t nlog)
{
	char lock[64];
	enum mc_store_status s;

	if (strcmp(state, "done") == 0)
		s = finish_done(st, it, log, nlog);
	else
		s = record_outcome(st, it, state, next_attempt, log, nlog);
	snprintf(lock, sizeof(lock), "outbound:%s", it->id);
	(void)mc_store_lock_release(st, lock, owner);
	return s;
}

enum mc_store_status
mc_store_item_settle(struct mc_store *st, const char *id)
{
	bson_t *doc;
	bson_oid_t oid;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	if ((s = find_by_id(st, "outbound_done", &oid, NULL, &doc)) != MC_STORE_OK)
		return s;
	bson_destroy(doc);
	return (s = delete_queued(st, &oid)) == MC_STORE_OK ? MC_STORE_EXISTS : s;
}

static void
each_log(const bson_t *doc, void (*cb)(void *, const struct mc_item_log *), void *ctx)
{
	bson_iter_t i, arr;

	if (!bson_iter_init_find(&i, doc, "log") || !bson_iter_recurse(&i, &arr))
		return;
	while (bson_iter_next(&arr)) {
		bson_t d;
		const uint8_t *data;
		uint32_t len;
		bson_iter_t f;
		struct mc_item_log e = { 0, "", "" };

		if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
			continue;
		bson_iter_document(&arr, &len, &data);
		if (!bson_init_static(&d, data, len))
			continue;
		if (bson_iter_init_find(&f, &d, "time") && BSON_ITER_HOLDS_DATE_TIME(&f))
			e.time_ms = bson_iter_date_time(&f);
		if (bson_iter_init_find(&f, &d, "command") && BSON_ITER_HOLDS_UTF8(&f))
			e.command = bson_iter_utf8(&f, NULL);
		if (bson_iter_init_find(&f, &d, "reply") && BSON_ITER_HOLDS_UTF8(&f))
			e.reply = bson_iter_utf8(&f, NULL);
		cb(ctx, &e);
	}
}

enum mc_store_status
mc_store_item_log_list(struct mc_store *st, const char *id,
    void (*cb)(void *ctx, const struct mc_item_log *e), void *ctx)
{
	bson_t *opts = BCON_NEW("projection", "{", "log", BCON_INT32(1), "}"), *doc;
	enum mc_store_status s = find_item(st, id, opts, &doc);

	if (s == MC_STORE_OK) {
		each_log(doc, cb, ctx);
		bson_destroy(doc);
	}
	bson_destroy(opts);
	return s;
}

/* The _ids a query returns (at most max). */
static enum mc_store_status
collect_ids(struct mc_store *st, mongoc_collection_t *c, const bson_t *f, const bson_t *opts,
    bson_oid_t *ids, size_t max, size_t *n)
{
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	*n = 0;
	while (*n < max && mongoc_cursor_next(cur, &doc))
		if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
			bson_oid_copy(bson_iter_oid(&it), &ids[(*n)++]);
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading queue");
	mongoc_cursor_destroy(cur);
	return s;
}

/* The copy of a done item outbound_done keeps: without the body, with a finished date. */
static void
done_copy(const bson_t *doc, bson_t *out)
{
	bson_init(out);
	bson_copy_to_excluding_noinit(doc, out, "body", "finished", "lease_until", NULL);
	BSON_APPEND_DATE_TIME(out, "lease_until", 0);
	BSON_APPEND_DATE_TIME(out, "finished", finished_of(doc));
}

/* Whether every write error of a bulk reply is a duplicate key (a copy already there). */
static int
only_duplicates(const bson_t *reply)
{
	bson_iter_t it, errs, e;
	int any = 0;

	if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &errs))
		return 0;
	while (bson_iter_next(&errs)) {
		if (!BSON_ITER_HOLDS_DOCUMENT(&errs) || !bson_iter_recurse(&errs, &e) ||
		    !bson_iter_find(&e, "code") || bson_iter_as_int64(&e) != 11000)
			return 0;
		any = 1;
	}
	return any;
}

/* Inserts the copies into outbound_done in one unordered bulk write. */
static enum mc_store_status
insert_done_copies(struct mc_store *st, bson_t *copies, size_t n)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound_done");
	mongoc_bulk_operation_t *b;
	bson_t *opts, reply;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	opts = BCON_NEW("ordered", BCON_BOOL(false));
	b = mongoc_collection_create_bulk_operation_with_opts(c, opts);
	for (size_t i = 0; i < n; i++)
		mongoc_bulk_operation_insert(b, &copies[i]);
	if (!mongoc_bulk_operation_execute(b, &reply, &e) && !only_duplicates(&reply))
		s = mc_store_fail(st, &e, "keeping the delivered items");
	bson_destroy(&reply);
	mongoc_bulk_operation_destroy(b);
	bson_destroy(opts);
	mongoc_collection_destroy(c);
	return s;
}

/* Deletes from coll what matches {_id: {$in: ids}} plus `and` (a key and a string, or NULL). */
static enum mc_store_status
delete_ids(struct mc_store *st, const char *coll, const bson_value_t *ids, size_t n,
    const char *key, const char *value, const char *what)
{
	mongoc_collection_t *c;
	bson_t f = BSON_INITIALIZER, in, arr;
	bson_error_t e;
	char k[16];
	const char *kp;
	enum mc_store_status s = MC_STORE_OK;

	if (n == 0)
		return MC_STORE_OK;
	if ((c = mc_store_coll(st, coll)) == NULL)
		return MC_STORE_TEMP;
	BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
	BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
	for (uint32_t i = 0; i < n; i++) {
		bson_uint32_to_string(i, &kp, k, sizeof(k));
		BSON_APPEND_VALUE(&arr, kp, &ids[i]);
	}
	bson_append_array_end(&in, &arr);
	bson_append_document_end(&f, &in);
	if (key != NULL)
		BSON_APPEND_UTF8(&f, key, value);
	if (!mongoc_collection_delete_many(c, &f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, what);
	bson_destroy(&f);
	mongoc_collection_destroy(c);
	return s;
}

/* Moves the done items among ids out of outbound (see mc_store_done_move). */
static enum mc_store_status
move_done(struct mc_store *st, const bson_oid_t *ids, size_t n, size_t *moved)
{
	bson_t *copies = calloc(n ? n : 1, sizeof(*copies));
	bson_value_t *done = calloc(n ? n : 1, sizeof(*done));
	size_t k = 0;
	enum mc_store_status s = MC_STORE_OK;

	*moved = 0;
	if (copies == NULL || done == NULL)
		s = mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	for (size_t i = 0; s == MC_STORE_OK && i < n; i++) {
		bson_t *doc;
		bson_iter_t it;

		if ((s = find_by_id(st, "outbound", &ids[i], NULL, &doc)) == MC_STORE_NOTFOUND) {
			s = MC_STORE_OK;   /* moved already */
			continue;
		}
		if (s != MC_STORE_OK)
			break;
		if (bson_iter_init_find(&it, doc, "state") && BSON_ITER_HOLDS_UTF8(&it) &&
		    strcmp(bson_iter_utf8(&it, NULL), "done") == 0) {
			done_copy(doc, &copies[k]);
			done[k].value_type = BSON_TYPE_OID;
			bson_oid_copy(&ids[i], &done[k].value.v_oid);
			k++;
		}
		bson_destroy(doc);
	}
	/* outbound_done first: an item is always in one or the other (or both). */
	if (s == MC_STORE_OK && k > 0 && (s = insert_done_copies(st, copies, k)) == MC_STORE_OK)
		s = delete_ids(st, "outbound", done, k, "state", "done",
		    "removing the delivered items from the queue");
	if (s == MC_STORE_OK)
		*moved = k;
	for (size_t i = 0; i < k; i++)
		bson_destroy(&copies[i]);
	free(copies);
	free(done);
	return s;
}

enum mc_store_status
mc_store_done_move(struct mc_store *st, const char (*ids)[MC_ID_LEN + 1], size_t n,
    size_t *moved)
{
	bson_oid_t *oids = calloc(n ? n : 1, sizeof(*oids));
	enum mc_store_status s = MC_STORE_OK;

	*moved = 0;
	if (oids == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	for (size_t i = 0; s == MC_STORE_OK && i < n; i++)
		s = mc_store_oid(st, ids[i], &oids[i]);
	if (s == MC_STORE_OK)
		s = move_done(st, oids, n, moved);
	free(oids);
	return s;
}

enum mc_store_status
mc_store_done_sweep(struct mc_store *st, size_t max, size_t *moved)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound");
	bson_t *f, *opts;
	bson_oid_t *ids;
	size_t n = 0;
	enum mc_store_status s;

	*moved = 0;
	if (c == NULL)
		return MC_STORE_TEMP;
	if ((ids = calloc(max ? max : 1, sizeof(*ids))) == NULL) {
		mongoc_collection_destroy(c);
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	}
	f = BCON_NEW("state", BCON_UTF8("done"));
	opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}", "limit",
	    BCON_INT64((int64_t)max));
	s = collect_ids(st, c, f, opts, ids, max, &n);
	if (s == MC_STORE_OK && n > 0)
		s = move_done(st, ids, n, moved);
	bson_destroy(opts);
	bson_destroy(f);
	free(ids);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_done_purge(struct mc_store *st, unsigned keep, int64_t *removed)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound_done");
	bson_t *f, reply;
	bson_error_t e;
	bson_iter_t it;
	enum mc_store_status s = MC_STORE_OK;

	*removed = 0;
	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("finished", "{", "$lt", BCON_DATE_TIME(mc_store_now_ms() -
	    (int64_t)keep * 1000), "}");
	if (!mongoc_collection_delete_many(c, f, NULL, &reply, &e))
		s = mc_store_fail(st, &e, "purging delivered items");
	else if (bson_iter_init_find(&it, &reply, "deletedCount"))
		*removed = bson_iter_as_int64(&it);
	bson_destroy(&reply);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/* The ids and bodies of failed items whose failure is older than cutoff (at most max). */
static enum mc_store_status
old_failed(struct mc_store *st, int64_t cutoff, size_t max, bson_value_t *ids,
    char (*bodies)[MC_ID_LEN + 1], size_t *n, size_t *nb)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound");
	bson_t *f, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	*n = *nb = 0;
	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("state", BCON_UTF8("failed"), "next_attempt", "{", "$lt",
	    BCON_DATE_TIME(cutoff), "}");
	opts = BCON_NEW("projection", "{", "_id", BCON_INT32(1), "body", BCON_INT32(1), "}",
	    "limit", BCON_INT64((int64_t)max));
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	while (*n < max && mongoc_cursor_next(cur, &doc)) {
		if (!bson_iter_init_find(&it, doc, "_id") || !BSON_ITER_HOLDS_OID(&it))
			continue;
		ids[*n].value_type = BSON_TYPE_OID;
		bson_oid_copy(bson_iter_oid(&it), &ids[(*n)++].value.v_oid);
		if (bson_iter_init_find(&it, doc, "body") && BSON_ITER_HOLDS_OID(&it))
			bson_oid_to_string(bson_iter_oid(&it), bodies[(*nb)++]);
	}
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading failed items");
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_failed_purge(struct mc_store *st, unsigned keep, size_t max, size_t *removed)
{
	bson_value_t *ids = calloc(max ? max : 1, sizeof(*ids));
	char (*bodies)[MC_ID_LEN + 1] = calloc(max ? max : 1, sizeof(*bodies));
	size_t n = 0, nb = 0;
	enum mc_store_status s = MC_STORE_OK;

	*removed = 0;
	if (ids == NULL || bodies == NULL)
		s = mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	if (s == MC_STORE_OK)
		s = old_failed(st, mc_store_now_ms() - (int64_t)keep * 1000, max, ids, bodies, &n,
		    &nb);
	if (s == MC_STORE_OK && n > 0)
		s = delete_ids(st, "outbound", ids, n, "state", "failed", "purging failed items");
	if (s == MC_STORE_OK) {
		*removed = n;
		if (nb > 0)
			s = mc_store_bodies_release(st, (const char (*)[MC_ID_LEN + 1])bodies, nb);
	}
	free(ids);
	free(bodies);
	return s;
}

/* {body: {$in: [bodies]}} */
static bson_t *
bodies_filter(const bson_oid_t *bodies, size_t n)
{
	bson_t *f = bson_new(), in, arr;
	char key[16];
	const char *kp;

	BSON_APPEND_DOCUMENT_BEGIN(f, "body", &in);
	BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
	for (uint32_t i = 0; i < n; i++) {
		bson_uint32_to_string(i, &kp, key, sizeof(key));
		BSON_APPEND_OID(&arr, kp, &bodies[i]);
	}
	bson_append_array_end(&in, &arr);
	bson_append_document_end(f, &in);
	return f;
}

/* Marks (in used[]) the bodies that documents of coll refer to. */
static enum mc_store_status
mark_referenced(struct mc_store *st, const char *coll, const bson_oid_t *bodies, size_t n,
    int *used)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	bson_t *f, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	f = bodies_filter(bodies, n);
	opts = BCON_NEW("projection", "{", "body", BCON_INT32(1), "}");
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	while (mongoc_cursor_next(cur, &doc)) {
		if (!bson_iter_init_find(&it, doc, "body") || !BSON_ITER_HOLDS_OID(&it))
			continue;
		for (size_t i = 0; i < n; i++)
			if (bson_oid_equal(bson_iter_oid(&it), &bodies[i]))
				used[i] = 1;
	}
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "checking body references");
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_bodies_release(struct mc_store *st, const char (*ids)[MC_ID_LEN + 1], size_t n)
{
	bson_oid_t *bodies = calloc(n ? n : 1, sizeof(*bodies));
	int *used = calloc(n ? n : 1, sizeof(*used));
	size_t nfree = 0;
	enum mc_store_status s = MC_STORE_OK;

	if (bodies == NULL || used == NULL)
		s = mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	for (size_t i = 0; s == MC_STORE_OK && i < n; i++)
		s = mc_store_oid(st, ids[i], &bodies[i]);
	if (s == MC_STORE_OK && n > 0 && (s = mark_referenced(st, "messages", bodies, n, used)) ==
	    MC_STORE_OK)
		s = mark_referenced(st, "outbound", bodies, n, used);
	for (size_t i = 0; s == MC_STORE_OK && i < n; i++)   /* the unused ones, in front */
		if (!used[i])
			bson_oid_copy(&bodies[i], &bodies[nfree++]);
	if (s == MC_STORE_OK)
		s = mc_store_bodies_delete(st, bodies, nfree);
	free(used);
	free(bodies);
	return s;
}
