/*
 * store_gc.c - `mailcell db gc`: removes what a crash can leave behind in the
 * body store: chunks of a body that was never finished (a session killed
 * during DATA), and finished bodies no mailbox entry or queue item refers to.
 */
#include "store_int.h"

#include <string.h>

/* Remove the chunks of a body that never got its files document. */
static enum mc_store_status
remove_chunks(struct mc_store *st, const bson_oid_t *id)
{
	mongoc_collection_t *c = mc_store_coll(st, "bodies.chunks");
	enum mc_store_status s;

	if (c == NULL)
		return MC_STORE_TEMP;
	s = mc_store_chunks_delete(st, c, id);
	mongoc_collection_destroy(c);
	return s;
}

/* 1 if body has its files document, 0 if not, -1 on error. */
static int
has_files_doc(struct mc_store *st, const bson_oid_t *id)
{
	bson_t *f = BCON_NEW("_id", BCON_OID(id));
	int r = mc_store_exists(st, "bodies.files", f);

	bson_destroy(f);
	return r;
}

/*
 * One page of ids, in order: the values of key (an ObjectId field) of the
 * documents of coll matching filter, greater than *after (unless NULL).
 */
static enum mc_store_status
page_ids(struct mc_store *st, const char *coll, const bson_t *filter, const char *key,
    const bson_oid_t *after, bson_oid_t *ids, size_t max, size_t *n)
{
	mongoc_collection_t *c = mc_store_coll(st, coll);
	bson_t f = BSON_INITIALIZER, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	*n = 0;
	if (c == NULL)
		return MC_STORE_TEMP;
	bson_concat(&f, filter);
	if (after != NULL)
		BCON_APPEND(&f, "$and", "[", "{", key, "{", "$gt", BCON_OID(after), "}", "}", "]");
	opts = BCON_NEW("sort", "{", key, BCON_INT32(1), "}", "limit", BCON_INT64((int64_t)max),
	    "projection", "{", key, BCON_INT32(1), "}");
	cur = mongoc_collection_find_with_opts(c, &f, opts, NULL);
	while (*n < max && mongoc_cursor_next(cur, &doc))
		if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_OID(&it))
			bson_oid_copy(bson_iter_oid(&it), &ids[(*n)++]);
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, coll);
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(&f);
	mongoc_collection_destroy(c);
	return s;
}

#define GC_BATCH 500

/* Chunks of bodies started before cutoff that never got their files document. */
static enum mc_store_status
gc_unfinished(struct mc_store *st, int64_t cutoff, struct mc_gc_counts *out)
{
	bson_oid_t ids[GC_BATCH], limit, last;
	bson_t *f;
	size_t n;
	enum mc_store_status s;
	int first = 1;

	/* An ObjectId starts with its creation time: all ids below this one are older. */
	memset(&limit, 0, sizeof(limit));
	for (int i = 0; i < 4; i++)
		limit.bytes[i] = (uint8_t)((uint32_t)(cutoff / 1000) >> (24 - 8 * i));
	/* Every body's chunk 0 exists from its first write on: n = 0 finds each once. */
	f = BCON_NEW("n", BCON_INT32(0), "files_id", "{", "$lt", BCON_OID(&limit), "}");
	do {
		s = page_ids(st, "bodies.chunks", f, "files_id", first ? NULL : &last, ids,
		    GC_BATCH, &n);
		for (size_t i = 0; s == MC_STORE_OK && i < n; i++) {
			int r = has_files_doc(st, &ids[i]);
			if (r < 0)
				s = MC_STORE_TEMP;
			else if (r == 0 && (s = remove_chunks(st, &ids[i])) == MC_STORE_OK)
				out->unfinished++;
		}
		if (n > 0)
			bson_oid_copy(&ids[n - 1], &last);
		first = 0;
	} while (s == MC_STORE_OK && n == GC_BATCH);
	bson_destroy(f);
	return s;
}

/* Bodies finished before cutoff that no mailbox entry or queue item refers to. */
static enum mc_store_status
gc_unreferenced(struct mc_store *st, int64_t cutoff, struct mc_gc_counts *out)
{
	bson_oid_t ids[GC_BATCH], last;
	char hex[MC_ID_LEN + 1];
	bson_t *f;
	size_t n;
	enum mc_store_status s;
	int first = 1;

	f = BCON_NEW("uploadDate", "{", "$lt", BCON_DATE_TIME(cutoff), "}");
	do {
		s = page_ids(st, "bodies.files", f, "_id", first ? NULL : &last, ids, GC_BATCH, &n);
		for (size_t i = 0; s == MC_STORE_OK && i < n; i++) {
			int r = mc_store_body_referenced(st, &ids[i]);
			bson_oid_to_string(&ids[i], hex);
			if (r < 0)
				s = MC_STORE_TEMP;
			else if (r == 0 && (s = mc_store_body_delete(st, hex)) == MC_STORE_OK)
				out->unreferenced++;
			else if (s == MC_STORE_NOTFOUND)
				s = MC_STORE_OK;   /* removed meanwhile */
		}
		if (n > 0)
			bson_oid_copy(&ids[n - 1], &last);
		first = 0;
	} while (s == MC_STORE_OK && n == GC_BATCH);
	bson_destroy(f);
	return s;
}

enum mc_store_status
mc_store_gc(struct mc_store *st, unsigned older_than, struct mc_gc_counts *out)
{
	int64_t cutoff = mc_store_now_ms() - (int64_t)older_than * 1000;
	enum mc_store_status s;

	memset(out, 0, sizeof(*out));
	if ((s = gc_unfinished(st, cutoff, out)) != MC_STORE_OK)
		return s;
	return gc_unreferenced(st, cutoff, out);
}
