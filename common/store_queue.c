/*
 * store_queue.c - the outbound queue and expiring locks. A lock is a document
 * whose _id names the thing locked, so taking it is one insert: atomic on
 * MongoDB and on FerretDB (whose filtered updates are not). Queue claims use it.
 */
#include "store_int.h"
#include "store_relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- locks ---- */

struct lock_doc {
	char holder[128];
	int64_t expires;
	int found;
};

static enum mc_store_status
lock_read(struct mc_store *st, mongoc_collection_t *c, const char *name, struct lock_doc *l)
{
	bson_t *f = BCON_NEW("_id", BCON_UTF8(name));
	bson_t *opts = BCON_NEW("limit", BCON_INT64(1));
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	memset(l, 0, sizeof(*l));
	if (mongoc_cursor_next(cur, &doc)) {
		l->found = 1;
		mc_store_get_str(doc, "holder", l->holder, sizeof(l->holder));
		if (bson_iter_init_find(&it, doc, "expires") && BSON_ITER_HOLDS_DATE_TIME(&it))
			l->expires = bson_iter_date_time(&it);
	} else if (mongoc_cursor_error(cur, &e)) {
		s = mc_store_fail(st, &e, "reading lock");
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	return s;
}

static enum mc_store_status
lock_insert(struct mc_store *st, mongoc_collection_t *c, const char *id, const char *holder,
    int64_t expires)
{
	bson_t *doc = BCON_NEW("_id", BCON_UTF8(id), "holder", BCON_UTF8(holder),
	    "expires", BCON_DATE_TIME(expires));
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
		s = mc_store_fail(st, &e, id);
	bson_destroy(doc);
	return s;
}

static void
lock_delete(mongoc_collection_t *c, const char *id, const char *holder, int64_t expires)
{
	bson_t *f = BCON_NEW("_id", BCON_UTF8(id), "holder", BCON_UTF8(holder),
	    "expires", BCON_DATE_TIME(expires));

	(void)mongoc_collection_delete_one(c, f, NULL, NULL, NULL);
	bson_destroy(f);
}

/*
 * Take over an expired lock. Racing takers first insert a tombstone named
 * after that exact lock instance (name, holder, expiry): only one insert
 * wins, and only the winner deletes the old lock and inserts its own.
 */
static enum mc_store_status
lock_takeover(struct mc_store *st, mongoc_collection_t *c, const char *name,
    const struct lock_doc *old, const char *holder, int64_t expires)
{
	char tomb[512];
	enum mc_store_status s;

	snprintf(tomb, sizeof(tomb), "takeover:%s:%s:%lld", name, old->holder,
	    (long long)old->expires);
	if ((s = lock_insert(st, c, tomb, holder, expires)) != MC_STORE_OK)
		return s;
	lock_delete(c, name, old->holder, old->expires);
	s = lock_insert(st, c, name, holder, expires);
	lock_delete(c, tomb, holder, expires);
	return s;
}

enum mc_store_status
mc_store_lock_take(struct mc_store *st, const char *name, const char *holder, unsigned ttl)
{
	mongoc_collection_t *c = mc_store_coll(st, "locks");
	int64_t now = mc_store_now_ms(), expires = now + (int64_t)ttl * 1000;
	struct lock_doc old;
	enum mc_store_status s;

	if (c == NULL)
		return MC_STORE_TEMP;
	for (int tries = 0; tries < 3; tries++) {
		s = lock_insert(st, c, name, holder, expires);
		if (s != MC_STORE_EXISTS)
			break;
		if ((s = lock_read(st, c, name, &old)) != MC_STORE_OK)
			break;
		if (!old.found)
			continue;  /* released meanwhile: try again */
		if (old.expires > now) {
			s = mc_store_seterr(st, MC_STORE_EXISTS, "%s: locked by another session", name);
			break;
		}
		s = lock_takeover(st, c, name, &old, holder, expires);
		break;
	}
	if (s == MC_STORE_EXISTS)
		mc_store_seterr(st, MC_STORE_EXISTS, "%s: locked by another session", name);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_lock_renew(struct mc_store *st, const char *name, const char *holder, unsigned ttl)
{
	mongoc_collection_t *c = mc_store_coll(st, "locks");
	bson_t *f, *u, reply;
	bson_error_t e;
	bson_iter_t it;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_UTF8(name), "holder", BCON_UTF8(holder));
	u = BCON_NEW("$set", "{", "expires",
	    BCON_DATE_TIME(mc_store_now_ms() + (int64_t)ttl * 1000), "}");
	if (!mongoc_collection_update_one(c, f, u, NULL, &reply, &e))
		s = mc_store_fail(st, &e, name);
	else if (bson_iter_init_find(&it, &reply, "matchedCount") && bson_iter_as_int64(&it) == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: lock lost", name);
	bson_destroy(&reply);
	bson_destroy(u);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_lock_release(struct mc_store *st, const char *name, const char *holder)
{
	mongoc_collection_t *c = mc_store_coll(st, "locks");
	bson_t *f;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_UTF8(name), "holder", BCON_UTF8(holder));
	if (!mongoc_collection_delete_one(c, f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, name);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/* ---- outbound queue ---- */

enum mc_store_status
mc_store_outbound_add(struct mc_store *st, const struct mc_outbound_new *q, char *id)
{
	const char *sender = q->sender, *const *rcpts = q->rcpts, *head = q->head;
	size_t n = q->nrcpts;
	mongoc_collection_t *c;
	bson_t *doc = bson_new(), arr, r;
	bson_oid_t oid, body;
	bson_error_t e;
	char buf[16];
	const char *key;
	int64_t now = mc_store_now_ms();
	enum mc_store_status s;

	if ((s = mc_store_oid(st, q->body_id, &body)) != MC_STORE_OK) {
		bson_destroy(doc);
		return s;
	}
	bson_oid_init(&oid, NULL);
	BSON_APPEND_OID(doc, "_id", &oid);
	BSON_APPEND_UTF8(doc, "state", "queued");
	BSON_APPEND_DATE_TIME(doc, "created", now);
	BSON_APPEND_DATE_TIME(doc, "next_attempt", now);
	BSON_APPEND_DATE_TIME(doc, "lease_until", 0);
	BSON_APPEND_INT32(doc, "attempts", 0);
	BSON_APPEND_UTF8(doc, "sender", sender);
	BSON_APPEND_ARRAY_BEGIN(doc, "recipients", &arr);
	for (uint32_t i = 0; i < n; i++) {
		bson_uint32_to_string(i, &key, buf, sizeof(buf));
		BSON_APPEND_DOCUMENT_BEGIN(&arr, key, &r);
		BSON_APPEND_UTF8(&r, "address", rcpts[i]);
		BSON_APPEND_UTF8(&r, "state", "pending");
		BSON_APPEND_UTF8(&r, "reply", "");
		bson_append_document_end(&arr, &r);
	}
	bson_append_array_end(doc, &arr);
	BSON_APPEND_OID(doc, "body", &body);
	if (head != NULL && *head != '\0')
		BSON_APPEND_UTF8(doc, "head", head);
	BSON_APPEND_UTF8(doc, "body_type", q->body_type ? q->body_type : "7bit");
	BSON_APPEND_BOOL(doc, "smtputf8", q->smtputf8 != 0);
	BSON_APPEND_BOOL(doc, "warned", false);
	BSON_APPEND_ARRAY_BEGIN(doc, "log", &arr);
	bson_append_array_end(doc, &arr);
	if ((c = mc_store_coll(st, "outbound")) == NULL)
		s = MC_STORE_TEMP;
	else if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "queueing message");
	else
		bson_oid_to_string(&oid, id);
	if (c != NULL)
		mongoc_collection_destroy(c);
	bson_destroy(doc);
	return s;
}

static void
recipients_join(const bson_t *doc, char *out, size_t outlen)
{
	bson_iter_t it, arr, r;
	size_t used = 0;

	out[0] = '\0';
	if (!bson_iter_init_find(&it, doc, "recipients") || !bson_iter_recurse(&it, &arr))
		return;
	while (bson_iter_next(&arr)) {
		const char *a;
		int n;
		if (!bson_iter_recurse(&arr, &r) || !bson_iter_find(&r, "address") ||
		    !BSON_ITER_HOLDS_UTF8(&r))
			continue;
		a = bson_iter_utf8(&r, NULL);
		n = snprintf(out + used, outlen - used, "%s%s", used ? "," : "", a);
		if (n < 0 || (size_t)n >= outlen - used) {
			snprintf(out + (outlen > 4 ? outlen - 4 : 0), 4, "...");
			return;
		}
		used += (size_t)n;
	}
}

static time_t
date_field(const bson_t *doc, const char *key)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
		return (time_t)(bson_iter_date_time(&it) / 1000);
	return 0;
}

static void
outbound_from_doc(const bson_t *doc, struct mc_outbound_info *o)
{
	bson_iter_t it;

	memset(o, 0, sizeof(*o));
	if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
		bson_oid_to_string(bson_iter_oid(&it), o->id);
	if (bson_iter_init_find(&it, doc, "body") && BSON_ITER_HOLDS_OID(&it))
		bson_oid_to_string(bson_iter_oid(&it), o->body);
	mc_store_get_str(doc, "state", o->state, sizeof(o->state));
	mc_store_get_str(doc, "sender", o->sender, sizeof(o->sender));
	o->next_attempt = date_field(doc, "next_attempt");
	o->created = date_field(doc, "created");
	if (bson_iter_init_find(&it, doc, "attempts"))
		o->attempts = (int)bson_iter_as_int64(&it);
	recipients_join(doc, o->recipients, sizeof(o->recipients));
}

/* find_one by ObjectId in coll; *doc is a copy the caller destroys. */
static enum mc_store_status
find_in(struct mc_store *st, const char *coll, const char *id, bson_t **doc)
{
	mongoc_collection_t *c;
	mongoc_cursor_t *cur;
	const bson_t *d;
	bson_t *f, *opts;
	bson_oid_t oid;
	bson_error_t e;
	enum mc_store_status s;

	*doc = NULL;
	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, coll)) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(&oid));
	opts = BCON_NEW("limit", BCON_INT64(1));   /* a primary-key read on the dev database too */
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	if (mongoc_cursor_next(cur, &d))
		*doc = bson_copy(d);
	else if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading queue");
	else
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such queue item", id);
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

static enum mc_store_status
outbound_find(struct mc_store *st, const char *id, bson_t **doc)
{
	return find_in(st, "outbound", id, doc);
}

/* The item in the queue, or else among the delivered ones (outbound_done). */
static enum mc_store_status
item_find(struct mc_store *st, const char *id, bson_t **doc)
{
	enum mc_store_status s = find_in(st, "outbound", id, doc);

	if (s == MC_STORE_NOTFOUND)
		s = find_in(st, "outbound_done", id, doc);
	return s;
}

enum mc_store_status
mc_store_outbound_get(struct mc_store *st, const char *id, struct mc_outbound_info *out)
{
	bson_t *doc;
	enum mc_store_status s = item_find(st, id, &doc);

	if (s == MC_STORE_OK) {
		outbound_from_doc(doc, out);
		bson_destroy(doc);
	}
	return s;
}

enum mc_store_status
mc_store_outbound_json(struct mc_store *st, const char *id, char **json)
{
	bson_t *doc;
	enum mc_store_status s = item_find(st, id, &doc);
	char *j;

	*json = NULL;
	if (s != MC_STORE_OK)
		return s;
	j = bson_as_relaxed_extended_json(doc, NULL);
	bson_destroy(doc);
	if (j == NULL || (*json = strdup(j)) == NULL)
		s = mc_store_seterr(st, MC_STORE_ERROR, "cannot render queue item");
	bson_free(j);
	return s;
}

enum mc_store_status
mc_store_outbound_list(struct mc_store *st, void (*cb)(void *, const struct mc_outbound_info *),
    void *ctx)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound");
	bson_t f = BSON_INITIALIZER, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	struct mc_outbound_info o;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	opts = BCON_NEW("sort", "{", "next_attempt", BCON_INT32(1), "_id", BCON_INT32(1), "}");
	cur = mongoc_collection_find_with_opts(c, &f, opts, NULL);
	while (mongoc_cursor_next(cur, &doc)) {
		outbound_from_doc(doc, &o);
		cb(ctx, &o);
	}
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "listing queue");
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	mongoc_collection_destroy(c);
	return s;
}

/* $set state/next_attempt on one item, by _id. */
static enum mc_store_status
outbound_set(struct mc_store *st, const char *id, const char *state, int64_t next)
{
	mongoc_collection_t *c;
	bson_t *f, *u;
	bson_oid_t oid;
	bson_error_t e;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, id, &oid)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "outbound")) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(&oid));
	u = BCON_NEW("$set", "{", "state", BCON_UTF8(state), "next_attempt", BCON_DATE_TIME(next),
	    "}");
	if (!mongoc_collection_update_one(c, f, u, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "updating queue");
	bson_destroy(u);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/* delete_one by _id from coll. */
static enum mc_store_status
delete_in(struct mc_store *st, const char *coll, const bson_oid_t *oid)
{
	mongoc_collection_t *c;
	bson_t *f;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if ((c = mc_store_coll(st, coll)) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(oid));
	if (!mongoc_collection_delete_one(c, f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "deleting queue item");
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/* Removes the item (queued or delivered), then its body unless something else refers to it. */
static enum mc_store_status
outbound_delete_locked(struct mc_store *st, const struct mc_outbound_info *o)
{
	bson_oid_t oid, body;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, o->id, &oid)) != MC_STORE_OK)
		return s;
	if ((s = delete_in(st, "outbound", &oid)) == MC_STORE_OK)
		s = delete_in(st, "outbound_done", &oid);
	if (s == MC_STORE_OK && o->body[0] != '\0' &&
	    mc_store_oid(st, o->body, &body) == MC_STORE_OK)
		s = mc_store_body_release(st, &body);
	return s;
}

/*
 * Operator actions run under the item's claim lock, so they never interleave
 * with a worker that is delivering it: a worker holding it means "in use".
 */
static enum mc_store_status
outbound_change(struct mc_store *st, const char *id, const char *const *from, const char *to,
    int drop)
{
	struct mc_outbound_info o;
	char lock[64], holder[64];
	enum mc_store_status s;
	size_t i;

	if ((s = mc_store_outbound_get(st, id, &o)) != MC_STORE_OK)
		return s;
	snprintf(lock, sizeof(lock), "outbound:%s", o.id);
	snprintf(holder, sizeof(holder), "operator:%ld", (long)getpid());
	if ((s = mc_store_lock_take(st, lock, holder, 60)) != MC_STORE_OK)
		return s == MC_STORE_EXISTS ? mc_store_seterr(st, MC_STORE_INUSE,
		    "%s: a relay worker is delivering it now; try again later", id) : s;
	if ((s = mc_store_outbound_get(st, id, &o)) == MC_STORE_OK) {
		for (i = 0; from[i] != NULL && strcmp(from[i], o.state) != 0; i++)
			;
		if (from[i] == NULL)
			s = mc_store_seterr(st, MC_STORE_INUSE, "%s: item is %s", id, o.state);
		else if (drop)
			s = outbound_delete_locked(st, &o);
		else
			s = outbound_set(st, id, to, mc_store_now_ms());
	}
	(void)mc_store_lock_release(st, lock, holder);
	return s;
}

enum mc_store_status
mc_store_outbound_retry(struct mc_store *st, const char *id)
{
	static const char *const from[] = { "queued", "delivering", NULL };

	return outbound_change(st, id, from, "queued", 0);
}

enum mc_store_status
mc_store_outbound_hold(struct mc_store *st, const char *id)
{
	static const char *const from[] = { "queued", "delivering", NULL };

	return outbound_change(st, id, from, "held", 0);
}

enum mc_store_status
mc_store_outbound_release(struct mc_store *st, const char *id)
{
	static const char *const from[] = { "held", NULL };

	return outbound_change(st, id, from, "queued", 0);
}

enum mc_store_status
mc_store_outbound_delete(struct mc_store *st, const char *id)
{
	static const char *const from[] = { "queued", "delivering", "held", "done", "failed", NULL };

	return outbound_change(st, id, from, NULL, 1);
}

/* Items that are due: queued and due, or delivering with the lease run out. */
static bson_t *
due_filter(int64_t now)
{
	return BCON_NEW("$or", "[",
	    "{", "state", BCON_UTF8("queued"), "next_attempt", "{", "$lte", BCON_DATE_TIME(now), "}", "}",
	    "{", "state", BCON_UTF8("delivering"), "lease_until", "{", "$lt", BCON_DATE_TIME(now), "}", "}",
	    "]");
}

enum mc_store_status
mc_store_outbound_due(struct mc_store *st, char ids[][MC_ID_LEN + 1], size_t max, size_t *n)
{
	mongoc_collection_t *c = mc_store_coll(st, "outbound");
	bson_t *f, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	*n = 0;
	if (c == NULL)
		return MC_STORE_TEMP;
	f = due_filter(mc_store_now_ms());
	opts = BCON_NEW("sort", "{", "next_attempt", BCON_INT32(1), "}", "limit",
	    BCON_INT64((int64_t)max), "projection", "{", "_id", BCON_INT32(1), "}");
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	while (*n < max && mongoc_cursor_next(cur, &doc))
		if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
			bson_oid_to_string(bson_iter_oid(&it), ids[(*n)++]);
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading queue");
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

static int
still_due(const struct mc_outbound_info *o, const bson_t *doc, int64_t now)
{
	bson_iter_t it;

	if (strcmp(o->state, "queued") == 0)
		return (int64_t)o->next_attempt * 1000 <= now;
	if (strcmp(o->state, "delivering") != 0)
		return 0;
	return bson_iter_init_find(&it, doc, "lease_until") && BSON_ITER_HOLDS_DATE_TIME(&it) &&
	    bson_iter_date_time(&it) < now;
}

/* With the item's lock held: check it is still due and mark it ours. */
static enum mc_store_status
claim_locked(struct mc_store *st, const char *id, const char *owner, unsigned lease,
    struct mc_outbound_info *out)
{
	mongoc_collection_t *c;
	bson_t *doc, *f, *u;
	bson_oid_t oid;
	bson_error_t e;
	int64_t now = mc_store_now_ms();
	enum mc_store_status s = outbound_find(st, id, &doc);

	if (s != MC_STORE_OK)
		return s;
	outbound_from_doc(doc, out);
	if (!still_due(out, doc, now)) {
		bson_destroy(doc);
		return MC_STORE_NOTFOUND;
	}
	bson_destroy(doc);
	/* Taking over from a worker that died: perhaps after it delivered the item. */
	if (strcmp(out->state, "delivering") == 0) {
		if ((s = mc_store_item_settle(st, id)) != MC_STORE_NOTFOUND)
			return s == MC_STORE_EXISTS ? MC_STORE_NOTFOUND : s;
		s = MC_STORE_OK;
	}
	if ((c = mc_store_coll(st, "outbound")) == NULL)
		return MC_STORE_TEMP;
	bson_oid_init_from_string(&oid, id);
	f = BCON_NEW("_id", BCON_OID(&oid));
	u = BCON_NEW("$set", "{", "state", BCON_UTF8("delivering"), "owner", BCON_UTF8(owner),
	    "lease_until", BCON_DATE_TIME(now + (int64_t)lease * 1000), "}",
	    "$inc", "{", "attempts", BCON_INT32(1), "}");
	if (!mongoc_collection_update_one(c, f, u, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "claiming queue item");
	bson_destroy(u);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	snprintf(out->state, sizeof(out->state), "delivering");
	out->attempts++;
	return s;
}

/* Is the item due now? A read before the lock's writes, for ids that may be stale. */
static enum mc_store_status
due_now(struct mc_store *st, const char *id)
{
	struct mc_outbound_info o;
	bson_t *doc;
	enum mc_store_status s = outbound_find(st, id, &doc);

	if (s != MC_STORE_OK)
		return s;
	outbound_from_doc(doc, &o);
	s = still_due(&o, doc, mc_store_now_ms()) ? MC_STORE_OK : MC_STORE_NOTFOUND;
	bson_destroy(doc);
	return s;
}

enum mc_store_status
mc_store_outbound_claim_id(struct mc_store *st, const char *id, const char *owner,
    unsigned lease, struct mc_outbound_info *out)
{
	char lock[64];
	enum mc_store_status s;

	if ((s = due_now(st, id)) != MC_STORE_OK)
		return s == MC_STORE_NOTFOUND ? mc_store_seterr(st, s, "%s: not due", id) : s;
	snprintf(lock, sizeof(lock), "outbound:%s", id);
	if ((s = mc_store_lock_take(st, lock, owner, lease)) != MC_STORE_OK)
		return s;
	s = claim_locked(st, id, owner, lease, out);
	if (s == MC_STORE_OK)
		return MC_STORE_OK;  /* the lock stays with the owner until done */
	(void)mc_store_lock_release(st, lock, owner);
	if (s == MC_STORE_NOTFOUND)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no longer due", id);
	return s;
}

enum mc_store_status
mc_store_outbound_claim(struct mc_store *st, const char *owner, unsigned lease,
    struct mc_outbound_info *out)
{
	char ids[32][MC_ID_LEN + 1];
	size_t n;
	enum mc_store_status s = mc_store_outbound_due(st, ids, 32, &n);

	for (size_t i = 0; s == MC_STORE_OK && i < n; i++) {
		enum mc_store_status cs = mc_store_outbound_claim_id(st, ids[i], owner, lease, out);
		if (cs == MC_STORE_OK)
			return MC_STORE_OK;
		if (cs != MC_STORE_EXISTS && cs != MC_STORE_NOTFOUND)
			return cs;
	}
	return s == MC_STORE_OK ? mc_store_seterr(st, MC_STORE_NOTFOUND, "nothing due") : s;
}
