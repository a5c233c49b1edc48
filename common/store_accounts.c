/*
 * store_accounts.c - local domains, users and aliases in the store. Keys are
 * canonical addresses (see mc_addr_key); users and aliases carry their domain
 * so that a domain cannot be removed while something still lives in it.
 */
#include "store_int.h"

#include <stdio.h>
#include <string.h>

static const char *
domain_of(const char *address)
{
	const char *at = strrchr(address, '@');

	return at ? at + 1 : "";
}

/* Insert doc into coll; OK, EXISTS (duplicate _id) or TEMP. */
static enum mc_store_status
insert_doc(struct mc_store *st, const char *coll, const bson_t *doc, const char *what)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
		s = mc_store_fail(st, &e, what);
	mongoc_collection_destroy(c);
	return s;
}

/* delete_one by _id; NOTFOUND when nothing matched. */
static enum mc_store_status
delete_by_id(struct mc_store *st, const char *coll, const char *id)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
	bson_t reply;
	bson_error_t e;
	bson_iter_t it;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL) {
		bson_destroy(filter);
		return MC_STORE_TEMP;
	}
	if (!mongoc_collection_delete_one(c, filter, NULL, &reply, &e))
		s = mc_store_fail(st, &e, id);
	else if (bson_iter_init_find(&it, &reply, "deletedCount") && bson_iter_as_int64(&it) == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: not found", id);
	bson_destroy(&reply);
	bson_destroy(filter);
	mongoc_collection_destroy(c);
	return s;
}

/* update_one {_id: id} with update; NOTFOUND when nothing matched. */
static enum mc_store_status
update_by_id(struct mc_store *st, const char *coll, const char *id, const bson_t *update)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	bson_t *filter = BCON_NEW("_id", BCON_UTF8(id));
	bson_t reply;
	bson_error_t e;
	bson_iter_t it;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL) {
		bson_destroy(filter);
		return MC_STORE_TEMP;
	}
	if (!mongoc_collection_update_one(c, filter, update, NULL, &reply, &e))
		s = mc_store_fail(st, &e, id);
	else if (bson_iter_init_find(&it, &reply, "matchedCount") && bson_iter_as_int64(&it) == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: not found", id);
	bson_destroy(&reply);
	bson_destroy(filter);
	mongoc_collection_destroy(c);
	return s;
}

/*
 * Run find(filter) and call each(doc) for every result: sorted by _id for a
 * listing; for a lookup by key (one != 0) unsorted with limit 1, which the
 * dev database answers from its primary key (a sort or no limit makes it
 * decode the whole collection: 6 ms instead of 0.8 with 1,000 documents).
 */
static enum mc_store_status
find_docs(struct mc_store *st, const char *coll, const bson_t *filter, int one,
    void (*each)(const bson_t *doc, void *arg), void *arg)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	bson_t *opts = one ? BCON_NEW("limit", BCON_INT64(1))
	    : BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}");
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL) {
		bson_destroy(opts);
		return MC_STORE_TEMP;
	}
	cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
	while (mongoc_cursor_next(cur, &doc))
		each(doc, arg);
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, coll);
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(c);
	bson_destroy(opts);
	return s;
}

static enum mc_store_status
require_local_domain(struct mc_store *st, const char *address)
{
	const char *d = domain_of(address);
	bson_t *f = BCON_NEW("_id", BCON_UTF8(d));
	int r = mc_store_exists(st, "domains", f);

	bson_destroy(f);
	if (r < 0)
		return MC_STORE_TEMP;
	if (r == 0)
		return mc_store_seterr(st, MC_STORE_NODOMAIN, "%s: domain %s is not a local domain",
		    address, d);
	return MC_STORE_OK;
}

/* EXISTS if address is already taken in coll (used across users/aliases). */
static enum mc_store_status
require_free(struct mc_store *st, const char *coll, const char *address, const char *what)
{
	bson_t *f = BCON_NEW("_id", BCON_UTF8(address));
	int r = mc_store_exists(st, coll, f);

	bson_destroy(f);
	if (r < 0)
		return MC_STORE_TEMP;
	if (r > 0)
		return mc_store_seterr(st, MC_STORE_EXISTS, "%s: already exists as %s", address, what);
	return MC_STORE_OK;
}

/* ---- domains ---- */

enum mc_store_status
mc_store_domain_add(struct mc_store *st, const char *domain)
{
	bson_t *doc = BCON_NEW("_id", BCON_UTF8(domain), "created",
	    BCON_DATE_TIME(mc_store_now_ms()));
	enum mc_store_status s = insert_doc(st, "domains", doc, domain);

	bson_destroy(doc);
	return s;
}

enum mc_store_status
mc_store_domain_remove(struct mc_store *st, const char *domain)
{
	static const char *const colls[] = { "users", "aliases" };
	bson_t *f = BCON_NEW("domain", BCON_UTF8(domain));

	for (size_t i = 0; i < 2; i++) {
		int r = mc_store_exists(st, colls[i], f);
		if (r != 0) {
			bson_destroy(f);
			if (r < 0)
				return MC_STORE_TEMP;
			return mc_store_seterr(st, MC_STORE_INUSE,
			    "%s: domain still has %s; remove them first", domain, colls[i]);
		}
	}
	bson_destroy(f);
	return delete_by_id(st, "domains", domain);
}

enum mc_store_status
mc_store_domain_exists(struct mc_store *st, const char *domain)
{
	bson_t *f = BCON_NEW("_id", BCON_UTF8(domain));
	int r = mc_store_exists(st, "domains", f);

	bson_destroy(f);
	return r < 0 ? MC_STORE_TEMP : r > 0 ? MC_STORE_OK : MC_STORE_NOTFOUND;
}

struct str_cb { void (*cb)(void *, const char *); void *ctx; };

static void
each_domain(const bson_t *doc, void *arg)
{
	struct str_cb *c = arg;
	char d[256];

	mc_store_get_str(doc, "_id", d, sizeof(d));
	c->cb(c->ctx, d);
}

enum mc_store_status
mc_store_domain_list(struct mc_store *st, void (*cb)(void *, const char *), void *ctx)
{
	struct str_cb c = { cb, ctx };
	bson_t f = BSON_INITIALIZER;
	enum mc_store_status s = find_docs(st, "domains", &f, 0, each_domain, &c);

	bson_destroy(&f);
	return s;
}

/* ---- users ---- */

enum mc_store_status
mc_store_user_add(struct mc_store *st, const char *address, const char *name,
    const char *hash)
{
	enum mc_store_status s;
	bson_t *doc;

	if ((s = require_local_domain(st, address)) != MC_STORE_OK ||
	    (s = require_free(st, "aliases", address, "an alias")) != MC_STORE_OK)
		return s;
	doc = BCON_NEW("_id", BCON_UTF8(address), "domain", BCON_UTF8(domain_of(address)),
	    "name", BCON_UTF8(name ? name : ""), "password", BCON_UTF8(hash),
	    "disabled", BCON_BOOL(false), "created", BCON_DATE_TIME(mc_store_now_ms()));
	s = insert_doc(st, "users", doc, address);
	bson_destroy(doc);
	return s;
}

enum mc_store_status
mc_store_user_passwd(struct mc_store *st, const char *address, const char *hash)
{
	bson_t *u = BCON_NEW("$set", "{", "password", BCON_UTF8(hash), "}");
	enum mc_store_status s = update_by_id(st, "users", address, u);

	bson_destroy(u);
	return s;
}

enum mc_store_status
mc_store_user_set_disabled(struct mc_store *st, const char *address, int disabled)
{
	bson_t *u = BCON_NEW("$set", "{", "disabled", BCON_BOOL(disabled != 0), "}");
	enum mc_store_status s = update_by_id(st, "users", address, u);

	bson_destroy(u);
	return s;
}

enum mc_store_status
mc_store_user_remove(struct mc_store *st, const char *address)
{
	return delete_by_id(st, "users", address);
}

static void
user_from_doc(const bson_t *doc, struct mc_user *u)
{
	bson_iter_t it;

	mc_store_get_str(doc, "_id", u->address, sizeof(u->address));
	mc_store_get_str(doc, "name", u->name, sizeof(u->name));
	mc_store_get_str(doc, "password", u->password, sizeof(u->password));
	u->disabled = bson_iter_init_find(&it, doc, "disabled") && bson_iter_as_bool(&it);
}

struct user_cb { void (*cb)(void *, const struct mc_user *); void *ctx; int n; struct mc_user *one; };

static void
each_user(const bson_t *doc, void *arg)
{
	struct user_cb *c = arg;
	struct mc_user u;

	user_from_doc(doc, c->one ? c->one : &u);
	c->n++;
	if (c->cb != NULL)
		c->cb(c->ctx, &u);
}

enum mc_store_status
mc_store_user_get(struct mc_store *st, const char *address, struct mc_user *out)
{
	struct user_cb c = { NULL, NULL, 0, out };
	bson_t *f = BCON_NEW("_id", BCON_UTF8(address));
	enum mc_store_status s = find_docs(st, "users", f, 1, each_user, &c);

	bson_destroy(f);
	if (s == MC_STORE_OK && c.n == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such user", address);
	return s;
}

enum mc_store_status
mc_store_domain_first_user(struct mc_store *st, const char *domain, struct mc_user *out)
{
	mongoc_collection_t *c = mc_store_coll(st, "users");
	bson_t *f, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	enum mc_store_status s;

	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("domain", BCON_UTF8(domain), "disabled", BCON_BOOL(false));
	opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(1));
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	if (mongoc_cursor_next(cur, &doc)) {
		user_from_doc(doc, out);
		s = MC_STORE_OK;
	} else if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "users");
	else
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no users", domain);
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_user_list(struct mc_store *st, void (*cb)(void *, const struct mc_user *), void *ctx)
{
	struct user_cb c = { cb, ctx, 0, NULL };
	bson_t f = BSON_INITIALIZER;
	enum mc_store_status s = find_docs(st, "users", &f, 0, each_user, &c);

	bson_destroy(&f);
	return s;
}

/* ---- aliases ---- */

/* {$set: {domain}, $addToSet: {targets: {$each: [...]}}} */
static bson_t *
alias_update(const char *address, const char *const *targets, size_t n)
{
	bson_t *u = bson_new();
	bson_t set, each, arr;
	char buf[16];
	const char *key;

	BSON_APPEND_DOCUMENT_BEGIN(u, "$set", &set);
	BSON_APPEND_UTF8(&set, "domain", domain_of(address));
	bson_append_document_end(u, &set);
	BSON_APPEND_DOCUMENT_BEGIN(u, "$addToSet", &set);
	BSON_APPEND_DOCUMENT_BEGIN(&set, "targets", &each);
	BSON_APPEND_ARRAY_BEGIN(&each, "$each", &arr);
	for (uint32_t i = 0; i < n; i++) {
		bson_uint32_to_string(i, &key, buf, sizeof(buf));
		BSON_APPEND_UTF8(&arr, key, targets[i]);
	}
	bson_append_array_end(&each, &arr);
	bson_append_document_end(&set, &each);
	bson_append_document_end(u, &set);
	return u;
}

enum mc_store_status
mc_store_alias_add(struct mc_store *st, const char *address, const char *const *targets,
    size_t n)
{
	mongoc_collection_t *c;
	bson_t *filter, *update, *opts;
	bson_error_t e;
	enum mc_store_status s;

	if ((s = require_local_domain(st, address)) != MC_STORE_OK ||
	    (s = require_free(st, "users", address, "a user")) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "aliases")) == NULL)
		return MC_STORE_TEMP;
	filter = BCON_NEW("_id", BCON_UTF8(address));
	update = alias_update(address, targets, n);
	opts = BCON_NEW("upsert", BCON_BOOL(true));
	if (!mongoc_collection_update_one(c, filter, update, opts, NULL, &e))
		s = mc_store_fail(st, &e, address);
	bson_destroy(opts);
	bson_destroy(update);
	bson_destroy(filter);
	mongoc_collection_destroy(c);
	return s;
}

enum mc_store_status
mc_store_alias_remove(struct mc_store *st, const char *address)
{
	return delete_by_id(st, "aliases", address);
}

struct alias_cb {
	void (*one)(void *, const char *);
	void (*all)(void *, const char *, const char *);
	void *ctx;
	int n;
};

static void
each_alias(const bson_t *doc, void *arg)
{
	struct alias_cb *c = arg;
	bson_iter_t it, arr;
	char addr[512], joined[4096];
	size_t used = 0;

	c->n++;
	mc_store_get_str(doc, "_id", addr, sizeof(addr));
	joined[0] = '\0';
	if (!bson_iter_init_find(&it, doc, "targets") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &arr))
		return;
	while (bson_iter_next(&arr)) {
		const char *t;
		if (!BSON_ITER_HOLDS_UTF8(&arr))
			continue;
		t = bson_iter_utf8(&arr, NULL);
		if (c->one != NULL)
			c->one(c->ctx, t);
		else if (used < sizeof(joined))
			used += (size_t)snprintf(joined + used, sizeof(joined) - used, "%s%s",
			    used ? ", " : "", t);
	}
	if (c->all != NULL)
		c->all(c->ctx, addr, joined);
}

enum mc_store_status
mc_store_alias_get(struct mc_store *st, const char *address, void (*cb)(void *, const char *),
    void *ctx)
{
	struct alias_cb c = { cb, NULL, ctx, 0 };
	bson_t *f = BCON_NEW("_id", BCON_UTF8(address));
	enum mc_store_status s = find_docs(st, "aliases", f, 1, each_alias, &c);

	bson_destroy(f);
	if (s == MC_STORE_OK && c.n == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no such alias", address);
	return s;
}

enum mc_store_status
mc_store_alias_list(struct mc_store *st, void (*cb)(void *, const char *, const char *),
    void *ctx)
{
	struct alias_cb c = { NULL, cb, ctx, 0 };
	bson_t f = BSON_INITIALIZER;
	enum mc_store_status s = find_docs(st, "aliases", &f, 0, each_alias, &c);

	bson_destroy(&f);
	return s;
}
