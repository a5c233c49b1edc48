/*
 * store_mail.c - message bodies and mailbox entries. Bodies stream into the
 * GridFS collections bodies.files/bodies.chunks chunk by chunk; a mailbox entry
 * pointing at a body is inserted only once the body is complete, so readers
 * never see half a message.
 */
#include "store_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Bodies are written with plain inserts, not with libmongoc's GridFS bucket:
 * the bucket looks for an existing file and lists both collections' indexes
 * before every upload (three round trips, and a full scan of bodies.files on
 * the dev database). The layout stays GridFS (bodies.files + bodies.chunks
 * with files_id and n), so GridFS tools can still read it; our chunks also
 * get computable ids ("<files_id>-<n>", marked in the files document's
 * metadata), so a reader fetches each chunk by primary key instead of
 * querying and sorting by files_id.
 */
#define BODY_CHUNK 261120u  /* 255 KiB, GridFS's default chunk size */

struct mc_body_writer {
	struct mc_store *st;
	mongoc_collection_t *chunks;
	bson_oid_t id;
	unsigned char *buf;     /* the chunk being filled */
	size_t fill;
	uint32_t nchunks;       /* chunks inserted so far */
	uint64_t size;
};

/*
 * Reads one chunk per query with a small batch size: the driver's download
 * stream lets the server send up to 16 MB of chunks per batch, which made
 * memory grow with the message.
 */
struct mc_body_reader {
	struct mc_store *st;
	mongoc_collection_t *chunks;
	bson_oid_t id;
	int keyed;              /* chunks have computable ids */
	uint32_t next, nchunks; /* keyed: the next chunk to fetch, how many there are */
	mongoc_cursor_t *cur;   /* otherwise: all chunks by files_id, sorted by n */
	bson_t *chunk;          /* copy of the current chunk document */
	const uint8_t *data;    /* its bytes not yet returned */
	uint32_t left;
	char *head;             /* the message's own header block, read before the body */
	size_t head_len, head_off;
};

/* The computable _id of chunk n of a body. */
static void
chunk_key(const bson_oid_t *id, uint32_t n, char *out, size_t outlen)
{
	char hex[MC_ID_LEN + 1];

	bson_oid_to_string(id, hex);
	snprintf(out, outlen, "%s-%u", hex, n);
}

static void
writer_free(struct mc_body_writer *w)
{
	if (w->chunks != NULL)
		mongoc_collection_destroy(w->chunks);
	free(w->buf);
	free(w);
}

enum mc_store_status
mc_store_body_begin(struct mc_store *st, struct mc_body_writer **out)
{
	struct mc_body_writer *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (w == NULL || (w->buf = malloc(BODY_CHUNK)) == NULL) {
		free(w);
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	}
	w->st = st;
	if ((w->chunks = mc_store_coll(st, "bodies.chunks")) == NULL) {
		writer_free(w);
		return MC_STORE_TEMP;
	}
	bson_oid_init(&w->id, NULL);
	*out = w;
	return MC_STORE_OK;
}

/* Insert the filled part of the buffer as the next chunk. */
static enum mc_store_status
put_chunk(struct mc_body_writer *w)
{
	char key[MC_ID_LEN + 16];
	bson_t doc = BSON_INITIALIZER;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	chunk_key(&w->id, w->nchunks, key, sizeof(key));
	BSON_APPEND_UTF8(&doc, "_id", key);
	BSON_APPEND_OID(&doc, "files_id", &w->id);
	BSON_APPEND_INT32(&doc, "n", (int32_t)w->nchunks);
	BSON_APPEND_BINARY(&doc, "data", BSON_SUBTYPE_BINARY, w->buf, (uint32_t)w->fill);
	if (!mongoc_collection_insert_one(w->chunks, &doc, NULL, NULL, &e))
		s = mc_store_fail(w->st, &e, "writing body");
	else {
		w->nchunks++;
		w->fill = 0;
	}
	bson_destroy(&doc);
	return s;
}

enum mc_store_status
mc_store_body_write(struct mc_body_writer *w, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		size_t n = BODY_CHUNK - w->fill;
		enum mc_store_status s;

		if (n > len)
			n = len;
		memcpy(w->buf + w->fill, p, n);
		w->fill += n;
		w->size += n;
		p += n;
		len -= n;
		if (w->fill == BODY_CHUNK && (s = put_chunk(w)) != MC_STORE_OK)
			return s;
	}
	return MC_STORE_OK;
}

uint64_t
mc_store_body_size(const struct mc_body_writer *w)
{
	return w->size;
}

/* The files document, written last: a body without one does not exist. */
static enum mc_store_status
put_files_doc(struct mc_body_writer *w)
{
	mongoc_collection_t *c = mc_store_coll(w->st, "bodies.files");
	char name[32];
	bson_error_t e;
	bson_t *doc;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	snprintf(name, sizeof(name), "msg-%lld", (long long)mc_store_now_ms());
	doc = BCON_NEW("_id", BCON_OID(&w->id), "length", BCON_INT64((int64_t)w->size),
	    "chunkSize", BCON_INT32((int32_t)BODY_CHUNK), "uploadDate",
	    BCON_DATE_TIME(mc_store_now_ms()), "filename", BCON_UTF8(name),
	    "metadata", "{", "chunk_ids", BCON_UTF8("files_id-n"), "}");
	if (!mongoc_collection_insert_one(c, doc, NULL, NULL, &e))
		s = mc_store_fail(w->st, &e, "finishing body");
	bson_destroy(doc);
	mongoc_collection_destroy(c);
	return s;
}

/* Delete chunks 0..n-1 of a body by their ids, in one round trip. */
static enum mc_store_status
delete_keyed_chunks(struct mc_store *st, mongoc_collection_t *chunks, const bson_oid_t *id,
    uint32_t n)
{
	mongoc_bulk_operation_t *b;
	char key[MC_ID_LEN + 16];
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (n == 0)
		return MC_STORE_OK;
	b = mongoc_collection_create_bulk_operation_with_opts(chunks, NULL);
	for (uint32_t i = 0; i < n; i++) {
		bson_t *f;
		chunk_key(id, i, key, sizeof(key));
		f = BCON_NEW("_id", BCON_UTF8(key));
		mongoc_bulk_operation_remove_one(b, f);
		bson_destroy(f);
	}
	if (!mongoc_bulk_operation_execute(b, NULL, &e))
		s = mc_store_fail(st, &e, "deleting body chunks");
	mongoc_bulk_operation_destroy(b);
	return s;
}

enum mc_store_status
mc_store_body_finish(struct mc_body_writer *w, char *body_id)
{
	enum mc_store_status s = MC_STORE_OK;

	body_id[0] = '\0';
	if (w->fill > 0)
		s = put_chunk(w);
	if (s == MC_STORE_OK)
		s = put_files_doc(w);
	if (s == MC_STORE_OK)
		bson_oid_to_string(&w->id, body_id);
	else
		(void)delete_keyed_chunks(w->st, w->chunks, &w->id, w->nchunks);
	writer_free(w);
	return s;
}

void
mc_store_body_abort(struct mc_body_writer *w)
{
	if (w == NULL)
		return;
	(void)delete_keyed_chunks(w->st, w->chunks, &w->id, w->nchunks);
	writer_free(w);
}

struct body_meta {
	uint64_t length;
	uint32_t chunk_size;
	int keyed;
};

/* Read a body's files document: MC_STORE_OK, MC_STORE_NOTFOUND or an error. */
static enum mc_store_status
body_meta(struct mc_store *st, const bson_oid_t *id, struct body_meta *m)
{
	mongoc_collection_t *c = mc_store_coll(st, "bodies.files");
	bson_t *f, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_iter_t it, child;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_NOTFOUND;

	memset(m, 0, sizeof(*m));
	if (c == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(id));
	opts = BCON_NEW("limit", BCON_INT64(1));
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	if (mongoc_cursor_next(cur, &doc)) {
		s = MC_STORE_OK;
		if (bson_iter_init_find(&it, doc, "length"))
			m->length = (uint64_t)bson_iter_as_int64(&it);
		if (bson_iter_init_find(&it, doc, "chunkSize"))
			m->chunk_size = (uint32_t)bson_iter_as_int64(&it);
		m->keyed = bson_iter_init(&it, doc) &&
		    bson_iter_find_descendant(&it, "metadata.chunk_ids", &child) &&
		    BSON_ITER_HOLDS_UTF8(&child);
		if (m->keyed && m->chunk_size == 0)
			s = mc_store_seterr(st, MC_STORE_ERROR, "body files document without chunkSize");
	} else if (mongoc_cursor_error(cur, &e)) {
		s = mc_store_fail(st, &e, "finding body");
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

static uint32_t
chunk_count(const struct body_meta *m)
{
	return (uint32_t)((m->length + m->chunk_size - 1) / m->chunk_size);
}

/* Every chunk of a body, by files_id (bodies written by GridFS tools, GC). */
enum mc_store_status
mc_store_chunks_delete(struct mc_store *st, mongoc_collection_t *chunks, const bson_oid_t *id)
{
	bson_t *f = BCON_NEW("files_id", BCON_OID(id));
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (!mongoc_collection_delete_many(chunks, f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "deleting body chunks");
	bson_destroy(f);
	return s;
}

enum mc_store_status
mc_store_body_delete(struct mc_store *st, const char *body_id)
{
	mongoc_collection_t *files, *chunks;
	struct body_meta m;
	bson_oid_t id;
	bson_t *f;
	bson_error_t e;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, body_id, &id)) != MC_STORE_OK)
		return s;
	if ((s = body_meta(st, &id, &m)) != MC_STORE_OK)
		return s == MC_STORE_NOTFOUND
		    ? mc_store_seterr(st, s, "body %s: not found", body_id) : s;
	if ((files = mc_store_coll(st, "bodies.files")) == NULL)
		return MC_STORE_TEMP;
	/* The files document first: from then on no reader opens the body. */
	f = BCON_NEW("_id", BCON_OID(&id));
	if (!mongoc_collection_delete_one(files, f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "deleting body");
	bson_destroy(f);
	mongoc_collection_destroy(files);
	if (s != MC_STORE_OK || (chunks = mc_store_coll(st, "bodies.chunks")) == NULL)
		return s != MC_STORE_OK ? s : MC_STORE_TEMP;
	s = m.keyed ? delete_keyed_chunks(st, chunks, &id, chunk_count(&m))
	    : mc_store_chunks_delete(st, chunks, &id);
	mongoc_collection_destroy(chunks);
	return s;
}

/* The chunks' _ids, or files_ids, gathered for one delete (bounded: flushed when full). */
struct chunk_ids {
	bson_t ids;     /* array of values */
	uint32_t n;
};

#define CHUNK_IDS_MAX 4096

static enum mc_store_status
chunk_ids_flush(struct mc_store *st, mongoc_collection_t *chunks, struct chunk_ids *c,
    const char *field)
{
	bson_t f = BSON_INITIALIZER, in;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (c->n > 0) {
		BSON_APPEND_DOCUMENT_BEGIN(&f, field, &in);
		BSON_APPEND_ARRAY(&in, "$in", &c->ids);
		bson_append_document_end(&f, &in);
		if (!mongoc_collection_delete_many(chunks, &f, NULL, NULL, &e))
			s = mc_store_fail(st, &e, "deleting body chunks");
		bson_destroy(&f);
	}
	bson_reinit(&c->ids);
	c->n = 0;
	return s;
}

static enum mc_store_status
chunk_ids_add(struct mc_store *st, mongoc_collection_t *chunks, struct chunk_ids *c,
    const char *field, const bson_value_t *v)
{
	char k[16];
	const char *kp;

	bson_uint32_to_string(c->n++, &kp, k, sizeof(k));
	BSON_APPEND_VALUE(&c->ids, kp, v);
	return c->n < CHUNK_IDS_MAX ? MC_STORE_OK : chunk_ids_flush(st, chunks, c, field);
}

/* The existing bodies among ids: their files _ids into found (a BSON array). */
static enum mc_store_status
bodies_meta(struct mc_store *st, const bson_oid_t *ids, size_t n, struct body_meta *m,
    int *exists, bson_t *found)
{
	char k[16];
	const char *kp;
	uint32_t nf = 0;
	enum mc_store_status s = MC_STORE_OK;

	for (size_t i = 0; s == MC_STORE_OK && i < n; i++) {
		s = body_meta(st, &ids[i], &m[i]);
		exists[i] = s == MC_STORE_OK;
		if (s == MC_STORE_NOTFOUND)
			s = MC_STORE_OK;
		if (exists[i]) {
			bson_uint32_to_string(nf++, &kp, k, sizeof(k));
			BSON_APPEND_OID(found, kp, &ids[i]);
		}
	}
	return s;
}

/* Every chunk of the bodies that exist: keyed ones by _id, others by files_id. */
static enum mc_store_status
delete_chunks_of(struct mc_store *st, const bson_oid_t *ids, size_t n,
    const struct body_meta *m, const int *exists)
{
	mongoc_collection_t *chunks = mc_store_coll(st, "bodies.chunks");
	struct chunk_ids keyed = { BSON_INITIALIZER, 0 }, legacy = { BSON_INITIALIZER, 0 };
	char key[MC_ID_LEN + 16];
	bson_value_t v;
	enum mc_store_status s = MC_STORE_OK;

	if (chunks == NULL)
		return MC_STORE_TEMP;
	for (size_t i = 0; s == MC_STORE_OK && i < n; i++) {
		if (!exists[i])
			continue;
		if (!m[i].keyed) {
			v.value_type = BSON_TYPE_OID;
			bson_oid_copy(&ids[i], &v.value.v_oid);
			s = chunk_ids_add(st, chunks, &legacy, "files_id", &v);
			continue;
		}
		for (uint32_t c = 0; s == MC_STORE_OK && c < chunk_count(&m[i]); c++) {
			chunk_key(&ids[i], c, key, sizeof(key));
			v.value_type = BSON_TYPE_UTF8;
			v.value.v_utf8.str = key;
			v.value.v_utf8.len = (uint32_t)strlen(key);
			s = chunk_ids_add(st, chunks, &keyed, "_id", &v);
		}
	}
	if (s == MC_STORE_OK)
		s = chunk_ids_flush(st, chunks, &keyed, "_id");
	if (s == MC_STORE_OK)
		s = chunk_ids_flush(st, chunks, &legacy, "files_id");
	bson_destroy(&keyed.ids);
	bson_destroy(&legacy.ids);
	mongoc_collection_destroy(chunks);
	return s;
}

enum mc_store_status
mc_store_bodies_delete(struct mc_store *st, const bson_oid_t *ids, size_t n)
{
	struct body_meta *m = calloc(n ? n : 1, sizeof(*m));
	int *exists = calloc(n ? n : 1, sizeof(*exists));
	mongoc_collection_t *files = NULL;
	bson_t found = BSON_INITIALIZER, f = BSON_INITIALIZER, in;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (m == NULL || exists == NULL)
		s = mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	if (s == MC_STORE_OK)
		s = bodies_meta(st, ids, n, m, exists, &found);
	/* The files documents first: from then on no reader opens these bodies. */
	if (s == MC_STORE_OK && !bson_empty(&found)) {
		if ((files = mc_store_coll(st, "bodies.files")) == NULL)
			s = MC_STORE_TEMP;
		BSON_APPEND_DOCUMENT_BEGIN(&f, "_id", &in);
		BSON_APPEND_ARRAY(&in, "$in", &found);
		bson_append_document_end(&f, &in);
		if (files != NULL && !mongoc_collection_delete_many(files, &f, NULL, NULL, &e))
			s = mc_store_fail(st, &e, "deleting bodies");
		if (s == MC_STORE_OK)
			s = delete_chunks_of(st, ids, n, m, exists);
	}
	if (files != NULL)
		mongoc_collection_destroy(files);
	bson_destroy(&f);
	bson_destroy(&found);
	free(exists);
	free(m);
	return s;
}

enum mc_store_status
mc_store_body_open(struct mc_store *st, const char *body_id, struct mc_body_reader **out)
{
	struct mc_body_reader *r;
	struct body_meta m;
	bson_oid_t id;
	enum mc_store_status s;

	*out = NULL;
	if ((s = mc_store_oid(st, body_id, &id)) != MC_STORE_OK)
		return s;
	if ((s = body_meta(st, &id, &m)) != MC_STORE_OK)
		return s == MC_STORE_NOTFOUND
		    ? mc_store_seterr(st, s, "body %s: not found", body_id) : s;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	r->st = st;
	bson_oid_copy(&id, &r->id);
	if ((r->chunks = mc_store_coll(st, "bodies.chunks")) == NULL) {
		free(r);
		return MC_STORE_TEMP;
	}
	if (m.keyed) {
		r->keyed = 1;
		r->nchunks = chunk_count(&m);
	} else {
		bson_t *f = BCON_NEW("files_id", BCON_OID(&id));
		bson_t *opts = BCON_NEW("sort", "{", "n", BCON_INT32(1), "}", "batchSize",
		    BCON_INT32(2));
		r->cur = mongoc_collection_find_with_opts(r->chunks, f, opts, NULL);
		bson_destroy(opts);
		bson_destroy(f);
	}
	*out = r;
	return MC_STORE_OK;
}

/* Keyed chunk r->next into r->chunk: 1, 0 when there is no such chunk, -1 error. */
static int
find_keyed(struct mc_body_reader *r)
{
	char key[MC_ID_LEN + 16];
	bson_t *f, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	bson_iter_t it;
	int rc = 0;

	chunk_key(&r->id, r->next, key, sizeof(key));
	f = BCON_NEW("_id", BCON_UTF8(key));
	opts = BCON_NEW("limit", BCON_INT64(1));
	cur = mongoc_collection_find_with_opts(r->chunks, f, opts, NULL);
	if (mongoc_cursor_next(cur, &doc)) {
		if (bson_iter_init_find(&it, doc, "n") && bson_iter_as_int64(&it) == r->next) {
			r->chunk = bson_copy(doc);
			r->next++;
			rc = 1;
		} else {
			mc_store_seterr(r->st, MC_STORE_ERROR, "body chunk %s: wrong n", key);
			rc = -1;
		}
	} else if (mongoc_cursor_error(cur, &e)) {
		mc_store_fail(r->st, &e, "reading body");
		rc = -1;
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	return rc;
}

/* The next chunk document of a keyed body into r->chunk: 1, 0 at the end, -1 error. */
static int
fetch_keyed(struct mc_body_reader *r)
{
	uint32_t n = r->next;
	int rc;

	if (r->next >= r->nchunks)
		return 0;
	if ((rc = find_keyed(r)) == 0) {
		mc_store_seterr(r->st, MC_STORE_ERROR, "body chunk %u of %u: missing", n, r->nchunks);
		rc = -1;
	}
	return rc;
}

/* The next chunk document of a body written by GridFS tools: 1, 0 at the end, -1 error. */
static int
fetch_sorted(struct mc_body_reader *r)
{
	const bson_t *doc;
	bson_error_t e;

	if (mongoc_cursor_next(r->cur, &doc)) {
		r->chunk = bson_copy(doc);
		return 1;
	}
	if (mongoc_cursor_error(r->cur, &e)) {
		mc_store_fail(r->st, &e, "reading body");
		return -1;
	}
	return 0;
}

/* Point r->data at the bytes of the chunk in r->chunk: 1, or -1 on error. */
static int
chunk_data(struct mc_body_reader *r)
{
	bson_iter_t it;
	bson_subtype_t sub;

	if (!bson_iter_init_find(&it, r->chunk, "data") || !BSON_ITER_HOLDS_BINARY(&it)) {
		mc_store_seterr(r->st, MC_STORE_ERROR, "body chunk without data");
		return -1;
	}
	bson_iter_binary(&it, &sub, &r->left, &r->data);
	return 1;
}

/* Move to the next chunk; 0 at the end, 1 with data, -1 on error. */
static int
next_chunk(struct mc_body_reader *r)
{
	int rc;

	if (r->chunk != NULL) {
		bson_destroy(r->chunk);
		r->chunk = NULL;
	}
	if ((rc = r->keyed ? fetch_keyed(r) : fetch_sorted(r)) <= 0)
		return rc;
	return chunk_data(r);
}

/*
 * Finds a mailbox entry's body id, header block (caller frees *head) and
 * size (head and body; 0 if the entry has none).
 */
static enum mc_store_status
entry_body(struct mc_store *st, const char *message_id, char *body_id, char **head,
    uint64_t *size)
{
	mongoc_collection_t *c;
	bson_t *f, *opts;
	bson_oid_t id;
	const bson_t *doc;
	mongoc_cursor_t *cur;
	bson_error_t e;
	bson_iter_t it;
	enum mc_store_status s;

	*head = NULL;
	*size = 0;
	if ((s = mc_store_oid(st, message_id, &id)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "messages")) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("_id", BCON_OID(&id));
	opts = BCON_NEW("projection", "{", "body", BCON_INT32(1), "head", BCON_INT32(1),
	    "size", BCON_INT32(1), "}", "limit", BCON_INT64(1));
	cur = mongoc_collection_find_with_opts(c, f, opts, NULL);
	s = mc_store_seterr(st, MC_STORE_NOTFOUND, "message %s: not found", message_id);
	if (mongoc_cursor_next(cur, &doc) && bson_iter_init_find(&it, doc, "body") &&
	    BSON_ITER_HOLDS_OID(&it)) {
		bson_oid_to_string(bson_iter_oid(&it), body_id);
		s = MC_STORE_OK;
		if (bson_iter_init_find(&it, doc, "size") && BSON_ITER_HOLDS_NUMBER(&it) &&
		    bson_iter_as_int64(&it) > 0)
			*size = (uint64_t)bson_iter_as_int64(&it);
		if (bson_iter_init_find(&it, doc, "head") && BSON_ITER_HOLDS_UTF8(&it) &&
		    (*head = strdup(bson_iter_utf8(&it, NULL))) == NULL)
			s = mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	} else if (mongoc_cursor_error(cur, &e)) {
		s = mc_store_fail(st, &e, "finding message");
	}
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

/*
 * A body whose length is known (from its mailbox entry), opened by reading
 * its first chunk by key, without the files document: GridFS chunks all have
 * the same size but the last, so chunk 0 tells how many there are. 1 with
 * *out set, 0 when there is no keyed chunk 0 (a body written by GridFS tools,
 * or an empty one: the caller opens it the usual way), -1 on error.
 */
static int
open_by_first_chunk(struct mc_store *st, const char *body_id, uint64_t length,
    struct mc_body_reader **out)
{
	struct mc_body_reader *r;
	int rc;

	if ((r = calloc(1, sizeof(*r))) == NULL) {
		mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
		return -1;
	}
	r->st = st;
	r->keyed = 1;
	if (mc_store_oid(st, body_id, &r->id) != MC_STORE_OK ||
	    (r->chunks = mc_store_coll(st, "bodies.chunks")) == NULL) {
		free(r);
		return -1;
	}
	if ((rc = find_keyed(r)) == 1 && (rc = chunk_data(r)) == 1) {
		r->nchunks = r->left == 0 || length <= r->left ? 1
		    : (uint32_t)((length + r->left - 1) / r->left);
		*out = r;
		return 1;
	}
	mc_store_body_close(r);
	return rc;
}

/* Opens body_id behind head (taken over: freed with the reader, or here on failure). */
static enum mc_store_status
open_with_head(struct mc_store *st, const char *body_id, char *head, uint64_t size,
    struct mc_body_reader **out)
{
	size_t hlen = head ? strlen(head) : 0;
	enum mc_store_status s;
	int rc = 0;

	if (size > hlen && (rc = open_by_first_chunk(st, body_id, size - hlen, out)) < 0) {
		free(head);
		return MC_STORE_TEMP;
	}
	if (rc == 0 && (s = mc_store_body_open(st, body_id, out)) != MC_STORE_OK) {
		free(head);
		return s;
	}
	(*out)->head = head;
	(*out)->head_len = hlen;
	return MC_STORE_OK;
}

enum mc_store_status
mc_store_message_open(struct mc_store *st, const char *message_id, struct mc_body_reader **out)
{
	char body_id[MC_ID_LEN + 1], *head;
	uint64_t size;
	enum mc_store_status s;

	*out = NULL;
	if ((s = entry_body(st, message_id, body_id, &head, &size)) != MC_STORE_OK)
		return s;
	return open_with_head(st, body_id, head, size, out);
}

enum mc_store_status
mc_store_entry_open(struct mc_store *st, const char *body_id, const char *head, uint64_t size,
    struct mc_body_reader **out)
{
	char *copy = NULL;

	*out = NULL;
	if (head != NULL && *head != '\0' && (copy = strdup(head)) == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	return open_with_head(st, body_id, copy, size, out);
}

enum mc_store_status
mc_store_body_read(struct mc_body_reader *r, void *buf, size_t len, size_t *got)
{
	*got = 0;
	if (r->head_off < r->head_len) {
		size_t n = r->head_len - r->head_off;
		*got = len < n ? len : n;
		memcpy(buf, r->head + r->head_off, *got);
		r->head_off += *got;
		return MC_STORE_OK;
	}
	while (r->left == 0) {
		int n = next_chunk(r);
		if (n == 0)
			return MC_STORE_OK;
		if (n < 0)
			return MC_STORE_TEMP;
	}
	*got = len < r->left ? len : r->left;
	memcpy(buf, r->data, *got);
	r->data += *got;
	r->left -= (uint32_t)*got;
	return MC_STORE_OK;
}

void
mc_store_body_close(struct mc_body_reader *r)
{
	if (r == NULL)
		return;
	if (r->chunk != NULL)
		bson_destroy(r->chunk);
	if (r->cur != NULL)
		mongoc_cursor_destroy(r->cur);
	if (r->chunks != NULL)
		mongoc_collection_destroy(r->chunks);
	free(r->head);
	free(r);
}

/* ---- mailbox entries ---- */

static bson_t *
entry_doc(const bson_oid_t *body, uint64_t size, const char *mailbox, int64_t now,
    const struct mc_message_meta *meta)
{
	bson_oid_t id;
	char hex[MC_ID_LEN + 1];
	const char *head = meta && meta->head ? meta->head : "";
	bson_t *doc;

	bson_oid_init(&id, NULL);
	bson_oid_to_string(&id, hex);
	doc = BCON_NEW("_id", BCON_OID(&id), "mailbox", BCON_UTF8(mailbox),
	    "uidl", BCON_UTF8(hex), "size", BCON_INT64((int64_t)(size + strlen(head))),
	    "received", BCON_DATE_TIME(now), "body", BCON_OID(body),
	    "sender", BCON_UTF8(meta && meta->sender ? meta->sender : ""),
	    "remote_ip", BCON_UTF8(meta && meta->remote_ip ? meta->remote_ip : ""),
	    "quarantined", BCON_BOOL(meta && meta->quarantined));
	if (*head != '\0')
		BSON_APPEND_UTF8(doc, "head", head);
	return doc;
}

enum mc_store_status
mc_store_deliver(struct mc_store *st, const char *body_id, uint64_t size,
    const char *const *mailboxes, size_t n, const struct mc_message_meta *meta)
{
	mongoc_collection_t *c;
	bson_oid_t body;
	bson_t **docs;
	bson_error_t e;
	enum mc_store_status s;
	int64_t now = mc_store_now_ms();

	if ((s = mc_store_oid(st, body_id, &body)) != MC_STORE_OK)
		return s;
	if (n == 0)
		return MC_STORE_OK;
	if ((docs = calloc(n, sizeof(*docs))) == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	for (size_t i = 0; i < n; i++)
		docs[i] = entry_doc(&body, size, mailboxes[i], now, meta);
	if ((c = mc_store_coll(st, "messages")) == NULL)
		s = MC_STORE_TEMP;
	else if (!mongoc_collection_insert_many(c, (const bson_t **)docs, n, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "storing message");
	if (c != NULL)
		mongoc_collection_destroy(c);
	for (size_t i = 0; i < n; i++)
		bson_destroy(docs[i]);
	free(docs);
	return s;
}

enum mc_store_status
mc_store_undeliver(struct mc_store *st, const char *body_id)
{
	mongoc_collection_t *c;
	bson_t *f;
	bson_oid_t body;
	bson_error_t e;
	enum mc_store_status s;

	if ((s = mc_store_oid(st, body_id, &body)) != MC_STORE_OK)
		return s;
	if ((c = mc_store_coll(st, "messages")) == NULL)
		return MC_STORE_TEMP;
	f = BCON_NEW("body", BCON_OID(&body));
	if (!mongoc_collection_delete_many(c, f, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "removing message entries");
	bson_destroy(f);
	mongoc_collection_destroy(c);
	return s;
}

static void
info_from_doc(const bson_t *doc, struct mc_message_info *m)
{
	bson_iter_t it;

	memset(m, 0, sizeof(*m));
	if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_OID(&it))
		bson_oid_to_string(bson_iter_oid(&it), m->id);
	if (bson_iter_init_find(&it, doc, "body") && BSON_ITER_HOLDS_OID(&it))
		bson_oid_to_string(bson_iter_oid(&it), m->body);
	mc_store_get_str(doc, "uidl", m->uidl, sizeof(m->uidl));
	mc_store_get_str(doc, "sender", m->sender, sizeof(m->sender));
	if (bson_iter_init_find(&it, doc, "size"))
		m->size = (uint64_t)bson_iter_as_int64(&it);
	if (bson_iter_init_find(&it, doc, "received") && BSON_ITER_HOLDS_DATE_TIME(&it))
		m->received = (time_t)(bson_iter_date_time(&it) / 1000);
	m->quarantined = bson_iter_init_find(&it, doc, "quarantined") && bson_iter_as_bool(&it);
	if (bson_iter_init_find(&it, doc, "head") && BSON_ITER_HOLDS_UTF8(&it))
		m->head = bson_iter_utf8(&it, NULL);
}

enum mc_store_status
mc_store_mailbox_list(struct mc_store *st, const char *mailbox,
    void (*cb)(void *, const struct mc_message_info *), void *ctx)
{
	mongoc_collection_t *c = mc_store_coll(st, "messages");
	bson_t *filter, *opts;
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	struct mc_message_info m;
	enum mc_store_status s = MC_STORE_OK;

	if (c == NULL)
		return MC_STORE_TEMP;
	filter = BCON_NEW("mailbox", BCON_UTF8(mailbox));
	opts = BCON_NEW("sort", "{", "received", BCON_INT32(1), "_id", BCON_INT32(1), "}");
	cur = mongoc_collection_find_with_opts(c, filter, opts, NULL);
	while (mongoc_cursor_next(cur, &doc)) {
		info_from_doc(doc, &m);
		cb(ctx, &m);
	}
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "listing mailbox");
	mongoc_cursor_destroy(cur);
	bson_destroy(opts);
	bson_destroy(filter);
	mongoc_collection_destroy(c);
	return s;
}

int
mc_store_body_referenced(struct mc_store *st, const bson_oid_t *body)
{
	bson_t *f = BCON_NEW("body", BCON_OID(body));
	int r = mc_store_exists(st, "messages", f);

	if (r == 0)
		r = mc_store_exists(st, "outbound", f);
	bson_destroy(f);
	return r;
}

enum mc_store_status
mc_store_body_release(struct mc_store *st, const bson_oid_t *body)
{
	char hex[MC_ID_LEN + 1];
	enum mc_store_status s;
	int r = mc_store_body_referenced(st, body);

	if (r != 0)
		return r < 0 ? MC_STORE_TEMP : MC_STORE_OK;
	bson_oid_to_string(body, hex);
	s = mc_store_body_delete(st, hex);
	return s == MC_STORE_NOTFOUND ? MC_STORE_OK : s;
}

/* Collect the body ids of these entries into bodies[] (at most n). */
static enum mc_store_status
entry_bodies(struct mc_store *st, mongoc_collection_t *c, const bson_t *filter,
    bson_oid_t *bodies, size_t n, size_t *nb)
{
	mongoc_cursor_t *cur = mongoc_collection_find_with_opts(c, filter, NULL, NULL);
	const bson_t *doc;
	bson_iter_t it;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	*nb = 0;
	while (*nb < n && mongoc_cursor_next(cur, &doc))
		if (bson_iter_init_find(&it, doc, "body") && BSON_ITER_HOLDS_OID(&it))
			bson_oid_copy(bson_iter_oid(&it), &bodies[(*nb)++]);
	if (mongoc_cursor_error(cur, &e))
		s = mc_store_fail(st, &e, "reading mailbox");
	mongoc_cursor_destroy(cur);
	return s;
}

static bson_t *
ids_filter(struct mc_store *st, const char *mailbox, const char *const *ids, size_t n)
{
	bson_t *f = bson_new();
	bson_t idd, arr;
	char buf[16];
	const char *key;
	bson_oid_t oid;

	BSON_APPEND_UTF8(f, "mailbox", mailbox);
	BSON_APPEND_DOCUMENT_BEGIN(f, "_id", &idd);
	BSON_APPEND_ARRAY_BEGIN(&idd, "$in", &arr);
	for (uint32_t i = 0; i < n; i++) {
		if (mc_store_oid(st, ids[i], &oid) != MC_STORE_OK) {
			bson_append_array_end(&idd, &arr);
			bson_append_document_end(f, &idd);
			bson_destroy(f);
			return NULL;
		}
		bson_uint32_to_string(i, &key, buf, sizeof(buf));
		BSON_APPEND_OID(&arr, key, &oid);
	}
	bson_append_array_end(&idd, &arr);
	bson_append_document_end(f, &idd);
	return f;
}

enum mc_store_status
mc_store_messages_delete(struct mc_store *st, const char *mailbox, const char *const *ids,
    size_t n)
{
	mongoc_collection_t *c;
	bson_t *filter;
	bson_oid_t *bodies;
	bson_error_t e;
	size_t nb = 0;
	enum mc_store_status s;

	if (n == 0)
		return MC_STORE_OK;
	if ((filter = ids_filter(st, mailbox, ids, n)) == NULL)
		return MC_STORE_NOTFOUND;
	if ((bodies = calloc(n, sizeof(*bodies))) == NULL) {
		bson_destroy(filter);
		return mc_store_seterr(st, MC_STORE_TEMP, "out of memory");
	}
	if ((c = mc_store_coll(st, "messages")) == NULL)
		s = MC_STORE_TEMP;
	else if ((s = entry_bodies(st, c, filter, bodies, n, &nb)) == MC_STORE_OK &&
	    !mongoc_collection_delete_many(c, filter, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "deleting messages");
	if (c != NULL)
		mongoc_collection_destroy(c);
	/* Entries are gone; a body left behind after a failure here is only garbage. */
	for (size_t i = 0; s == MC_STORE_OK && i < nb; i++)
		s = mc_store_body_release(st, &bodies[i]);
	free(bodies);
	bson_destroy(filter);
	return s;
}
