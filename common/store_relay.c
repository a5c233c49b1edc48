/*
 * store_relay.c - the relay worker's view of a claimed queue item (see
 * store_relay.h). Every write names the item by _id while its claim lock
 * is held, so it is safe on MongoDB and on the dev database alike.
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
	bson_t *f;
	bson_oid_t oid;
	bson_iter_t it;
	uint64_t len = 0;

	if (mc_store_oid(st, body_id, &oid) != MC_STORE_OK ||
	    (c = mc_store_coll(st, "bodies.files")) == NULL)
		return 0;
	f = BCON_NEW("_id", BCON_OID(&oid));
	cur = mongoc_collection_find_with_opts(c, f, NULL, NULL);
	if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "length"))
		len = (uint64_t)bson_iter_as_int64(&it);
	mongoc_cursor_destroy(cur);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return len;
}

enum mc_store_status
mc_store_item_load(struct mc_store *st, const char *id, struct mc_item *out)
{
	mongoc_collection_t *c;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_t *f;
	bson_oid_t oid;
	bson_error_t e;
	enum mc_store_status s;

	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", id);
	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "outbound")) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(&oid));
	cur = mongoc_collection_find_with_opts(c, f, NULL, NULL);
	if (mongoc_cursor_next(cur, &doc))
		s = item_from_doc(st, doc, out);
	else if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading queue item");
	else
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such queue item", id);
	mongoc_cursor_destroy(cur);
	bson_destroy(f);
	mongoc_collection_destroy(c);
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

enum mc_store_status
mc_store_item_log(struct mc_store *st, const char *id, const struct mc_item_log *entries,
    size_t n)
{
	bson_t u = BSON_INITIALIZER, push, each, arr, e;
	char key[16];
	const char *k;
	enum mc_store_status s;

	if (n == 0)
		return MC_STORE_OK;
	BSON_APPEND_DOCUMENT_BEGIN(&u, "$push", &push);
	BSON_APPEND_DOCUMENT_BEGIN(&push, "log", &each);
	BSON_APPEND_ARRAY_BEGIN(&each, "$each", &arr);
	for (uint32_t i = 0; i < n; i++) {
		bson_uint32_to_string(i, &k, key, sizeof(key));
		BSON_APPEND_DOCUMENT_BEGIN(&arr, k, &e);
		BSON_APPEND_DATE_TIME(&e, "time", entries[i].time_ms);
		BSON_APPEND_UTF8(&e, "command", entries[i].command);
		BSON_APPEND_UTF8(&e, "reply", entries[i].reply);
		bson_append_document_end(&arr, &e);
	}
	bson_append_array_end(&each, &arr);
	bson_append_document_end(&push, &each);
	bson_append_document_end(&u, &push);
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

enum mc_store_status
mc_store_item_finish(struct mc_store *st, const struct mc_item *it, const char *owner,
    const char *state, time_t next_attempt)
{
	bson_t u = BSON_INITIALIZER, set;
	bson_oid_t body;
	char lock[64];
	int done = strcmp(state, "done") == 0;
	enum mc_store_status s;

	BSON_APPEND_DOCUMENT_BEGIN(&u, "$set", &set);
	BSON_APPEND_UTF8(&set, "state", state);
	BSON_APPEND_DATE_TIME(&set, "next_attempt", (int64_t)next_attempt * 1000);
	BSON_APPEND_DATE_TIME(&set, "lease_until", 0);
	BSON_APPEND_BOOL(&set, "warned", it->warned != 0);
	BSON_APPEND_INT64(&set, "size", (int64_t)it->size);   /* kept once the body is gone */
	append_rcpts(&set, it);
	bson_append_document_end(&u, &set);
	if (done)
		BCON_APPEND(&u, "$unset", "{", "body", BCON_UTF8(""), "}");
	s = update_item(st, it->id, &u, "recording the delivery outcome");
	bson_destroy(&u);
	if (s == MC_STORE_OK && done && it->body[0] != '\0' &&
	    mc_store_oid(st, it->body, &body) == MC_STORE_OK)
		(void)mc_store_body_release(st, &body);
	snprintf(lock, sizeof(lock), "outbound:%s", it->id);
	(void)mc_store_lock_release(st, lock, owner);
	return s;
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
	mongoc_collection_t *c;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_t *f, *opts;
	bson_oid_t oid;
	bson_error_t e;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "outbound")) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(&oid));
	opts = BCON_NEW("projection", "{", "log", BCON_INT32(1), "}");
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	if (mongoc_cursor_next(cur, &doc))
		each_log(doc, cb, ctx);
	else if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading queue item");
	else
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such queue item", id);
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}
