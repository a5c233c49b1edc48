/*
 * store_auth.c - DMARC evaluations (`dmarc_records`, one per received message,
 * read back for RFC 7489 aggregate reports) and DKIM private keys (`dkim_keys`,
 * _id "SELECTOR._domainkey.DOMAIN") in the store. Domains are kept lower-case.
 */
#include "store_auth.h"
#include "store_int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copy src into dst (bounded, terminated) with ASCII letters lower-cased. */
static void
lower_copy(char *dst, size_t len, const char *src)
{
	size_t i = 0;

	for (; src != NULL && src[i] != '\0' && i + 1 < len; i++)
		dst[i] = (char)tolower((unsigned char)src[i]);
	dst[i] = '\0';
}

static time_t
date_field(const bson_t *doc, const char *key)
{
	bson_iter_t it;

	if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_DATE_TIME(&it))
		return (time_t)(bson_iter_date_time(&it) / 1000);
	return 0;
}

static int
bool_field(const bson_t *doc, const char *key)
{
	bson_iter_t it;

	return bson_iter_init_find(&it, doc, key) && bson_iter_as_bool(&it);
}

/* Append key: lower-cased copy of a domain (bounded like the record's fields). */
static void
append_domain(bson_t *doc, const char *key, const char *domain)
{
	char d[256];

	lower_copy(d, sizeof(d), domain);
	BSON_APPEND_UTF8(doc, key, d);
}

/* Run find(filter, opts) on coll and call each(doc) for every result. */
static enum mc_store_status
find_each(struct mc_store *st, const char *coll, const bson_t *filter, const bson_t *opts,
    void (*each)(const bson_t *doc, void *arg), void *arg)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
	while (mongoc_cursor_next(cur, &doc))
		each(doc, arg);
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, coll);
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(c);
	return s;
}

/* ---- DMARC evaluations ---- */

static void
append_sigs(bson_t *doc, const struct mc_dmarc_record *r)
{
	bson_t arr, sig;
	char buf[16];
	const char *key;
	size_t n = r->ndkim < MC_DMARC_MAX_SIGS ? r->ndkim : MC_DMARC_MAX_SIGS;

	BSON_APPEND_ARRAY_BEGIN(doc, "dkim", &arr);
	for (uint32_t i = 0; i < n; i++) {
		bson_uint32_to_string(i, &key, buf, sizeof(buf));
		BSON_APPEND_DOCUMENT_BEGIN(&arr, key, &sig);
		append_domain(&sig, "domain", r->dkim[i].domain);
		BSON_APPEND_UTF8(&sig, "selector", r->dkim[i].selector);
		BSON_APPEND_UTF8(&sig, "result", r->dkim[i].result);
		bson_append_document_end(&arr, &sig);
	}
	bson_append_array_end(doc, &arr);
}

static bson_t *
dmarc_doc(const struct mc_dmarc_record *r)
{
	bson_t *doc = bson_new(), sub;

	BSON_APPEND_DATE_TIME(doc, "time", (int64_t)r->time * 1000);
	BSON_APPEND_UTF8(doc, "qid", r->qid);
	BSON_APPEND_UTF8(doc, "source_ip", r->source_ip);
	BSON_APPEND_UTF8(doc, "helo", r->helo);
	append_domain(doc, "envelope_from", r->envelope_from);
	append_domain(doc, "envelope_to", r->envelope_to);
	append_domain(doc, "header_from", r->header_from);
	append_domain(doc, "policy_domain", r->policy_domain);
	BSON_APPEND_DOCUMENT_BEGIN(doc, "spf", &sub);
	append_domain(&sub, "domain", r->spf_domain);
	BSON_APPEND_UTF8(&sub, "scope", r->spf_scope);
	BSON_APPEND_UTF8(&sub, "result", r->spf_result);
	bson_append_document_end(doc, &sub);
	append_sigs(doc, r);
	BSON_APPEND_BOOL(doc, "spf_aligned", r->spf_aligned != 0);
	BSON_APPEND_BOOL(doc, "dkim_aligned", r->dkim_aligned != 0);
	BSON_APPEND_UTF8(doc, "result", r->result);
	BSON_APPEND_UTF8(doc, "disposition", r->disposition);
	BSON_APPEND_DOCUMENT_BEGIN(doc, "policy", &sub);
	BSON_APPEND_UTF8(&sub, "p", r->p);
	BSON_APPEND_UTF8(&sub, "sp", r->sp);
	BSON_APPEND_INT32(&sub, "pct", r->pct);
	BSON_APPEND_UTF8(&sub, "adkim", r->adkim);
	BSON_APPEND_UTF8(&sub, "aspf", r->aspf);
	bson_append_document_end(doc, &sub);
	return doc;
}

enum mc_store_status
mc_store_dmarc_add(struct mc_store *st, const struct mc_dmarc_record *r)
{
	mongoc_collection_t *c = mc_store_coll(st, "dmarc_records");
	bson_t *doc;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	doc = dmarc_doc(r);
	if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "storing DMARC evaluation");
	bson_destroy(doc);
	mongoc_collection_destroy(c);
	return s;
}

/* The sub-document doc.key as a bson_t view; 0 if it is not there. */
static int
sub_doc(const bson_t *doc, const char *key, bson_t *out)
{
	bson_iter_t it;
	const uint8_t *data;
	uint32_t len;

	if (!bson_iter_init_find(&it, doc, key) || !BSON_ITER_HOLDS_DOCUMENT(&it))
		return 0;
	bson_iter_document(&it, &len, &data);
	return bson_init_static(out, data, len);
}

static void
sigs_from_doc(const bson_t *doc, struct mc_dmarc_record *r)
{
	bson_iter_t it, arr;
	bson_t sig;
	const uint8_t *data;
	uint32_t len;

	if (!bson_iter_init_find(&it, doc, "dkim") || !BSON_ITER_HOLDS_ARRAY(&it) ||
	    !bson_iter_recurse(&it, &arr))
		return;
	while (bson_iter_next(&arr) && r->ndkim < MC_DMARC_MAX_SIGS) {
		struct mc_dmarc_sig *g = &r->dkim[r->ndkim];
		if (!BSON_ITER_HOLDS_DOCUMENT(&arr))
			continue;
		bson_iter_document(&arr, &len, &data);
		if (!bson_init_static(&sig, data, len))
			continue;
		mc_store_get_str(&sig, "domain", g->domain, sizeof(g->domain));
		mc_store_get_str(&sig, "selector", g->selector, sizeof(g->selector));
		mc_store_get_str(&sig, "result", g->result, sizeof(g->result));
		r->ndkim++;
	}
}

static void
policy_from_doc(const bson_t *doc, struct mc_dmarc_record *r)
{
	bson_t pol;
	bson_iter_t it;

	r->pct = 100;
	if (!sub_doc(doc, "policy", &pol))
		return;
	mc_store_get_str(&pol, "p", r->p, sizeof(r->p));
	mc_store_get_str(&pol, "sp", r->sp, sizeof(r->sp));
	mc_store_get_str(&pol, "adkim", r->adkim, sizeof(r->adkim));
	mc_store_get_str(&pol, "aspf", r->aspf, sizeof(r->aspf));
	if (bson_iter_init_find(&it, &pol, "pct") && BSON_ITER_HOLDS_NUMBER(&it))
		r->pct = (int)bson_iter_as_int64(&it);
}

static void
dmarc_from_doc(const bson_t *doc, struct mc_dmarc_record *r)
{
	bson_t spf;

	memset(r, 0, sizeof(*r));
	r->time = date_field(doc, "time");
	mc_store_get_str(doc, "qid", r->qid, sizeof(r->qid));
	mc_store_get_str(doc, "source_ip", r->source_ip, sizeof(r->source_ip));
	mc_store_get_str(doc, "helo", r->helo, sizeof(r->helo));
	mc_store_get_str(doc, "envelope_from", r->envelope_from, sizeof(r->envelope_from));
	mc_store_get_str(doc, "envelope_to", r->envelope_to, sizeof(r->envelope_to));
	mc_store_get_str(doc, "header_from", r->header_from, sizeof(r->header_from));
	mc_store_get_str(doc, "policy_domain", r->policy_domain, sizeof(r->policy_domain));
	if (sub_doc(doc, "spf", &spf)) {
		mc_store_get_str(&spf, "domain", r->spf_domain, sizeof(r->spf_domain));
		mc_store_get_str(&spf, "scope", r->spf_scope, sizeof(r->spf_scope));
		mc_store_get_str(&spf, "result", r->spf_result, sizeof(r->spf_result));
	}
	sigs_from_doc(doc, r);
	r->spf_aligned = bool_field(doc, "spf_aligned");
	r->dkim_aligned = bool_field(doc, "dkim_aligned");
	mc_store_get_str(doc, "result", r->result, sizeof(r->result));
	mc_store_get_str(doc, "disposition", r->disposition, sizeof(r->disposition));
	policy_from_doc(doc, r);
}

struct dmarc_cb {
	void (*cb)(void *, const struct mc_dmarc_record *);
	void *ctx;
	struct mc_dmarc_record rec;   /* ~8 KiB: kept here, not on each call's stack */
};

static void
each_dmarc(const bson_t *doc, void *arg)
{
	struct dmarc_cb *c = arg;

	dmarc_from_doc(doc, &c->rec);
	c->cb(c->ctx, &c->rec);
}

/* {$or: [{header_from: d}, {policy_domain: d}], time: {$gte: since, $lt: until}} */
static bson_t *
dmarc_filter(const char *domain, time_t since, time_t until)
{
	char d[256];

	lower_copy(d, sizeof(d), domain);
	return BCON_NEW("$or", "[", "{", "header_from", BCON_UTF8(d), "}",
	    "{", "policy_domain", BCON_UTF8(d), "}", "]",
	    "time", "{", "$gte", BCON_DATE_TIME((int64_t)since * 1000),
	    "$lt", BCON_DATE_TIME((int64_t)until * 1000), "}");
}

enum mc_store_status
mc_store_dmarc_list(struct mc_store *st, const char *domain, time_t since, time_t until,
    void (*cb)(void *, const struct mc_dmarc_record *), void *ctx)
{
	struct dmarc_cb *c = calloc(1, sizeof(*c));
	bson_t *f, *opts;
	enum mc_store_status s;

	if (c == NULL)
		return mc_store_seterr(st, MC_STORE_ERROR, "out of memory");
	c->cb = cb;
	c->ctx = ctx;
	f = dmarc_filter(domain, since, until);
	opts = BCON_NEW("sort", "{", "time", BCON_INT32(1), "_id", BCON_INT32(1), "}");
	s = find_each(st, "dmarc_records", f, opts, each_dmarc, c);
	bson_destroy(opts);
	bson_destroy(f);
	free(c);
	return s;
}

/* ---- DKIM keys ---- */

enum mc_store_status
mc_store_dkim_key_put(struct mc_store *st, const char *domain, const char *selector,
    const char *private_key_pem)
{
	mongoc_collection_t *c = mc_store_coll(st, "dkim_keys");
	char d[256], id[400];
	bson_t *f, *doc, *opts;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	lower_copy(d, sizeof(d), domain);
	snprintf(id, sizeof(id), "%s._domainkey.%s", selector, d);
	f = BCON_NEW("_id", BCON_UTF8(id));
	doc = BCON_NEW("_id", BCON_UTF8(id), "domain", BCON_UTF8(d),
	    "selector", BCON_UTF8(selector), "private_key", BCON_UTF8(private_key_pem),
	    "created", BCON_DATE_TIME(mc_store_now_ms()));
	opts = BCON_NEW("upsert", BCON_BOOL(true));
	if (!mongoc_collection_replace_one(c, f, doc, opts, NULL, &e))
		s = mc_store_fail(st, &e, id);
	bson_destroy(opts);
	bson_destroy(doc);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

void
mc_dkim_key_clear(struct mc_dkim_key *k)
{
	if (k->private_key != NULL) {
		explicit_bzero(k->private_key, strlen(k->private_key));
		free(k->private_key);
	}
	memset(k, 0, sizeof(*k));
}

/* Fill k from doc; -1 when the private key cannot be copied (out of memory). */
static int
key_from_doc(const bson_t *doc, struct mc_dkim_key *k)
{
	bson_iter_t it;

	memset(k, 0, sizeof(*k));
	mc_store_get_str(doc, "domain", k->domain, sizeof(k->domain));
	mc_store_get_str(doc, "selector", k->selector, sizeof(k->selector));
	k->created = date_field(doc, "created");
	if (bson_iter_init_find(&it, doc, "private_key") && BSON_ITER_HOLDS_UTF8(&it))
		k->private_key = strdup(bson_iter_utf8(&it, NULL));
	else
		k->private_key = strdup("");
	return k->private_key != NULL ? 0 : -1;
}

struct key_cb {
	void (*cb)(void *, const struct mc_dkim_key *);
	void *ctx;
	struct mc_dkim_key *one;   /* key_get: the first result goes here */
	int n;
	int oom;
};

static void
each_key(const bson_t *doc, void *arg)
{
	struct key_cb *c = arg;
	struct mc_dkim_key k;

	if (c->one != NULL) {
		if (c->n++ == 0 && key_from_doc(doc, c->one) != 0)
			c->oom = 1;
		return;
	}
	if (key_from_doc(doc, &k) != 0) {
		c->oom = 1;
		return;
	}
	c->n++;
	c->cb(c->ctx, &k);
	mc_dkim_key_clear(&k);
}

enum mc_store_status
mc_store_dkim_key_get(struct mc_store *st, const char *domain, struct mc_dkim_key *out)
{
	struct key_cb c = { NULL, NULL, out, 0, 0 };
	char d[256];
	bson_t *f, *opts;
	enum mc_store_status s;

	memset(out, 0, sizeof(*out));
	lower_copy(d, sizeof(d), domain);
	f = BCON_NEW("domain", BCON_UTF8(d));
	opts = BCON_NEW("sort", "{", "created", BCON_INT32(-1), "_id", BCON_INT32(-1), "}",
	    "limit", BCON_INT64(1));
	s = find_each(st, "dkim_keys", f, opts, each_key, &c);
	bson_destroy(opts);
	bson_destroy(f);
	if (s == MC_STORE_OK && c.oom)
		s = mc_store_seterr(st, MC_STORE_ERROR, "out of memory reading DKIM key");
	else if (s == MC_STORE_OK && c.n == 0)
		s = mc_store_seterr(st, MC_STORE_NOTFOUND, "%s: no DKIM key", d);
	if (s != MC_STORE_OK)
		mc_dkim_key_clear(out);
	return s;
}

enum mc_store_status
mc_store_dkim_key_list(struct mc_store *st, void (*cb)(void *, const struct mc_dkim_key *),
    void *ctx)
{
	struct key_cb c = { cb, ctx, NULL, 0, 0 };
	bson_t f = BSON_INITIALIZER, *opts;
	enum mc_store_status s;

	opts = BCON_NEW("sort", "{", "domain", BCON_INT32(1), "selector", BCON_INT32(1), "}");
	s = find_each(st, "dkim_keys", &f, opts, each_key, &c);
	bson_destroy(opts);
	bson_destroy(&f);
	if (s == MC_STORE_OK && c.oom)
		s = mc_store_seterr(st, MC_STORE_ERROR, "out of memory reading DKIM keys");
	return s;
}
