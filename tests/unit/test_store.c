/*
 * test_store.c - the store against a real dev database (the URI comes from
 * $MAILCELL_TEST_MONGODB_URI, set by scripts/check.sh): accounts, streamed
 * bodies (and their layout, checked with the driver directly), mailboxes,
 * the queue, and lock/claim races between processes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "config.h"
#include "password.h"
#include "store.h"
#include "store_int.h"
#include "store_fixture.h"

static struct mc_config cfg;
static char dbname[64];

static struct mc_store *
open_store(void)
{
	struct mc_store *st = mc_store_new(&cfg);

	assert_non_null(st);
	return st;
}

static int
setup(void **state)
{
	const char *uri = getenv("MAILCELL_TEST_MONGODB_URI");

	(void)state;
	if (uri == NULL) {
		fprintf(stderr, "test_store: set MAILCELL_TEST_MONGODB_URI (make check does)\n");
		return -1;
	}
	return store_fixture_config(&cfg, uri, "", dbname, sizeof(dbname));
}

static int
teardown(void **state)
{
	(void)state;
	mc_config_free(&cfg);
	return 0;
}

static void
collect_line(void *ctx, const char *s)
{
	char *buf = ctx;

	strcat(buf, s);
	strcat(buf, ";");
}

static void
collect_user(void *ctx, const struct mc_user *u)
{
	collect_line(ctx, u->address);
}

static void
test_accounts(void **state)
{
	struct mc_store *st = open_store();
	struct mc_user u;
	char list[1024] = "", hash[MC_HASH_MAX];
	const char *targets[] = { "bob@example.org", "carol@remote.example" };

	(void)state;
	assert_int_equal(mc_store_domain_add(st, "example.org"), MC_STORE_OK);
	assert_int_equal(mc_store_domain_add(st, "example.org"), MC_STORE_EXISTS);
	assert_int_equal(mc_store_domain_add(st, "b.example"), MC_STORE_OK);
	assert_int_equal(mc_store_domain_exists(st, "example.org"), MC_STORE_OK);
	assert_int_equal(mc_store_domain_exists(st, "nope.example"), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_domain_list(st, collect_line, list), MC_STORE_OK);
	assert_string_equal(list, "b.example;example.org;");

	assert_int_equal(mc_password_hash("pw", hash, sizeof(hash)), 0);
	assert_int_equal(mc_store_user_add(st, "alice@example.org", "Alice", hash), MC_STORE_OK);
	assert_int_equal(mc_store_user_add(st, "alice@example.org", "Alice", hash),
	    MC_STORE_EXISTS);
	assert_int_equal(mc_store_user_add(st, "x@nope.example", "", hash), MC_STORE_NODOMAIN);
	assert_non_null(strstr(mc_store_error(st), "not a local domain"));
	assert_int_equal(mc_store_user_get(st, "alice@example.org", &u), MC_STORE_OK);
	assert_string_equal(u.name, "Alice");
	assert_int_equal(mc_password_verify("pw", u.password), 1);
	assert_int_equal(u.disabled, 0);
	assert_int_equal(mc_store_user_set_disabled(st, "alice@example.org", 1), MC_STORE_OK);
	assert_int_equal(mc_store_user_get(st, "alice@example.org", &u), MC_STORE_OK);
	assert_int_equal(u.disabled, 1);
	assert_int_equal(mc_store_user_passwd(st, "ghost@example.org", hash), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_user_get(st, "ghost@example.org", &u), MC_STORE_NOTFOUND);

	assert_int_equal(mc_store_alias_add(st, "team@example.org", targets, 2), MC_STORE_OK);
	assert_int_equal(mc_store_alias_add(st, "team@example.org", targets, 1), MC_STORE_OK);
	list[0] = '\0';
	assert_int_equal(mc_store_alias_get(st, "team@example.org", collect_line, list),
	    MC_STORE_OK);
	assert_string_equal(list, "bob@example.org;carol@remote.example;");
	assert_int_equal(mc_store_alias_add(st, "alice@example.org", targets, 1), MC_STORE_EXISTS);
	assert_int_equal(mc_store_user_add(st, "team@example.org", "", hash), MC_STORE_EXISTS);

	assert_int_equal(mc_store_domain_remove(st, "example.org"), MC_STORE_INUSE);
	assert_int_equal(mc_store_user_remove(st, "alice@example.org"), MC_STORE_OK);
	assert_int_equal(mc_store_domain_remove(st, "example.org"), MC_STORE_INUSE);
	assert_int_equal(mc_store_alias_remove(st, "team@example.org"), MC_STORE_OK);
	assert_int_equal(mc_store_alias_remove(st, "team@example.org"), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_domain_remove(st, "example.org"), MC_STORE_OK);
	assert_int_equal(mc_store_domain_remove(st, "example.org"), MC_STORE_NOTFOUND);
	list[0] = '\0';
	assert_int_equal(mc_store_user_list(st, collect_user, list), MC_STORE_OK);
	assert_string_equal(list, "");
	mc_store_free(st);
}

struct msgs { int n; struct mc_message_info m[8]; };

static void
collect_msg(void *ctx, const struct mc_message_info *m)
{
	struct msgs *ms = ctx;

	if (ms->n < 8)
		ms->m[ms->n] = *m;
	ms->n++;
}

/* Reads the whole body back and compares it with want. */
static void
assert_body(struct mc_store *st, const char *id, const unsigned char *want, size_t len)
{
	struct mc_body_reader *r;
	unsigned char *got = malloc(len + 1);
	size_t total = 0, n;

	assert_int_equal(mc_store_body_open(st, id, &r), MC_STORE_OK);
	do {
		assert_int_equal(mc_store_body_read(r, got + total, len + 1 - total, &n),
		    MC_STORE_OK);
		total += n;
	} while (n > 0 && total <= len);
	mc_store_body_close(r);
	assert_int_equal(total, len);
	assert_memory_equal(got, want, len);
	free(got);
}

static void
test_bodies(void **state)
{
	struct mc_store *st = open_store();
	struct mc_body_writer *w;
	struct mc_body_reader *r;
	struct msgs ms = { 0 };
	const size_t len = 1000 * 1000 + 7;
	unsigned char *data = malloc(len);
	char body[MC_ID_LEN + 1];
	const char *boxes[] = { "a@m.example", "b@m.example" };
	struct mc_message_meta meta = { "sender@x.example", "192.0.2.1", 0, NULL };
	const char *ids[1];

	(void)state;
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 7 + i / 1000);
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	for (size_t off = 0; off < len; off += 4093)
		assert_int_equal(mc_store_body_write(w, data + off,
		    len - off < 4093 ? len - off : 4093), MC_STORE_OK);
	assert_int_equal(mc_store_body_size(w), len);
	/* Nothing is visible while the body is incomplete. */
	assert_int_equal(mc_store_mailbox_list(st, "a@m.example", collect_msg, &ms), MC_STORE_OK);
	assert_int_equal(ms.n, 0);
	assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
	assert_int_equal(strlen(body), MC_ID_LEN);
	assert_int_equal(mc_store_deliver(st, body, len, boxes, 2, &meta), MC_STORE_OK);

	assert_int_equal(mc_store_mailbox_list(st, "a@m.example", collect_msg, &ms), MC_STORE_OK);
	assert_int_equal(ms.n, 1);
	assert_int_equal(ms.m[0].size, len);
	assert_string_equal(ms.m[0].body, body);
	assert_string_equal(ms.m[0].sender, "sender@x.example");
	assert_true(time(NULL) - ms.m[0].received < 60);
	assert_body(st, body, data, len);

	/* Deleting one mailbox's entry keeps the body the other still uses. */
	ids[0] = ms.m[0].id;
	assert_int_equal(mc_store_messages_delete(st, "a@m.example", ids, 1), MC_STORE_OK);
	ms.n = 0;
	assert_int_equal(mc_store_mailbox_list(st, "a@m.example", collect_msg, &ms), MC_STORE_OK);
	assert_int_equal(ms.n, 0);
	assert_body(st, body, data, len);
	assert_int_equal(mc_store_mailbox_list(st, "b@m.example", collect_msg, &ms), MC_STORE_OK);
	assert_int_equal(ms.n, 1);
	assert_string_not_equal(ms.m[0].uidl, "");
	ids[0] = ms.m[0].id;
	/* Another mailbox cannot delete b's message. */
	assert_int_equal(mc_store_messages_delete(st, "a@m.example", ids, 1), MC_STORE_OK);
	assert_body(st, body, data, len);
	assert_int_equal(mc_store_messages_delete(st, "b@m.example", ids, 1), MC_STORE_OK);
	assert_int_equal(mc_store_body_open(st, body, &r), MC_STORE_NOTFOUND);

	/* An aborted body leaves nothing behind. */
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_write(w, data, 300000), MC_STORE_OK);
	mc_store_body_abort(w);
	free(data);
	mc_store_free(st);
}

/* The test database through the driver, to look at what the store wrote. */
static mongoc_client_t *
raw_client(mongoc_database_t **db)
{
	mongoc_client_t *c = mongoc_client_new(getenv("MAILCELL_TEST_MONGODB_URI"));

	assert_non_null(c);
	*db = mongoc_client_get_database(c, dbname);
	return c;
}

static int64_t
raw_count(mongoc_database_t *db, const char *coll, const bson_t *filter)
{
	mongoc_collection_t *c = mongoc_database_get_collection(db, coll);
	bson_error_t e;
	int64_t n = mongoc_collection_count_documents(c, filter, NULL, NULL, NULL, &e);

	assert_true(n >= 0);
	mongoc_collection_destroy(c);
	return n;
}

/* Writes a body the way GridFS tools do (ObjectId chunk ids, no marker). */
static void
write_legacy_body(mongoc_database_t *db, const unsigned char *data, size_t len, char *hex)
{
	bson_t opts = BSON_INITIALIZER;
	bson_value_t id;
	bson_error_t e;
	mongoc_gridfs_bucket_t *b;
	mongoc_stream_t *s;
	mongoc_iovec_t iov = { .iov_base = (void *)(uintptr_t)data, .iov_len = len };

	BSON_APPEND_UTF8(&opts, "bucketName", "bodies");
	BSON_APPEND_INT32(&opts, "chunkSizeBytes", 1000);
	b = mongoc_gridfs_bucket_new(db, &opts, NULL, &e);
	assert_non_null(b);
	s = mongoc_gridfs_bucket_open_upload_stream(b, "legacy", NULL, &id, &e);
	assert_non_null(s);
	assert_int_equal(mongoc_stream_writev(s, &iov, 1, 0), (ssize_t)len);
	assert_int_equal(mongoc_stream_close(s), 0);
	bson_oid_to_string(&id.value.v_oid, hex);
	mongoc_stream_destroy(s);
	mongoc_gridfs_bucket_destroy(b);
	bson_value_destroy(&id);
	bson_destroy(&opts);
}

static void
test_body_layout(void **state)
{
	struct mc_store *st = open_store();
	mongoc_database_t *db;
	mongoc_client_t *client = raw_client(&db);
	struct mc_body_writer *w;
	struct mc_body_reader *r;
	const size_t len = 2 * 261120 + 99;
	unsigned char *data = malloc(len);
	char body[MC_ID_LEN + 1], key[64];
	bson_oid_t oid;
	bson_t *f;

	(void)state;
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 13 + 1);
	/* Three GridFS chunks, each findable by its computed id. */
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_write(w, data, len), MC_STORE_OK);
	assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
	bson_oid_init_from_string(&oid, body);
	f = BCON_NEW("files_id", BCON_OID(&oid));
	assert_int_equal(raw_count(db, "bodies.chunks", f), 3);
	bson_destroy(f);
	for (int n = 0; n < 3; n++) {
		snprintf(key, sizeof(key), "%s-%d", body, n);
		f = BCON_NEW("_id", BCON_UTF8(key), "n", BCON_INT32(n), "files_id", BCON_OID(&oid));
		assert_int_equal(raw_count(db, "bodies.chunks", f), 1);
		bson_destroy(f);
	}
	f = BCON_NEW("_id", BCON_OID(&oid), "length", BCON_INT64((int64_t)len));
	assert_int_equal(raw_count(db, "bodies.files", f), 1);
	bson_destroy(f);
	assert_body(st, body, data, len);
	assert_int_equal(mc_store_body_delete(st, body), MC_STORE_OK);
	f = BCON_NEW("files_id", BCON_OID(&oid));
	assert_int_equal(raw_count(db, "bodies.chunks", f), 0);
	bson_destroy(f);

	/* An empty body round-trips; an aborted one leaves no chunk behind. */
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
	assert_body(st, body, data, 0);
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_write(w, data, len), MC_STORE_OK);
	mc_store_body_abort(w);
	f = bson_new();
	assert_int_equal(raw_count(db, "bodies.chunks", f), 0);
	bson_destroy(f);

	/* A body written by a GridFS tool is read and deleted as well. */
	write_legacy_body(db, data, 4500, body);
	assert_body(st, body, data, 4500);
	assert_int_equal(mc_store_body_delete(st, body), MC_STORE_OK);
	assert_int_equal(mc_store_body_open(st, body, &r), MC_STORE_NOTFOUND);
	f = bson_new();
	assert_int_equal(raw_count(db, "bodies.chunks", f), 0);
	bson_destroy(f);

	/* Many at once: keyed bodies of 3 and 1 chunks, a legacy one, a missing one. */
	{
		bson_oid_t many[4];
		char keep[MC_ID_LEN + 1];

		for (int i = 0; i < 2; i++) {
			assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
			assert_int_equal(mc_store_body_write(w, data, i ? 10 : len), MC_STORE_OK);
			assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
			bson_oid_init_from_string(&many[i], body);
		}
		write_legacy_body(db, data, 4500, body);
		bson_oid_init_from_string(&many[2], body);
		bson_oid_init(&many[3], NULL);
		assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
		assert_int_equal(mc_store_body_write(w, data, 10), MC_STORE_OK);
		assert_int_equal(mc_store_body_finish(w, keep), MC_STORE_OK);
		assert_int_equal(mc_store_bodies_delete(st, many, 4), MC_STORE_OK);
		f = bson_new();
		assert_int_equal(raw_count(db, "bodies.chunks", f), 1);   /* keep's */
		bson_destroy(f);
		f = BCON_NEW("_id", "{", "$in", "[", BCON_OID(&many[0]), BCON_OID(&many[1]),
		    BCON_OID(&many[2]), "]", "}");
		assert_int_equal(raw_count(db, "bodies.files", f), 0);
		bson_destroy(f);
		assert_body(st, keep, data, 10);
		assert_int_equal(mc_store_body_delete(st, keep), MC_STORE_OK);
	}

	free(data);
	mongoc_database_destroy(db);
	mongoc_client_destroy(client);
	mc_store_free(st);
}

/* Reads r to the end and closes it: head, then body. */
static void
assert_read(struct mc_body_reader *r, const char *head, const unsigned char *body, size_t len)
{
	size_t hl = strlen(head), total = 0, n;
	unsigned char *got = malloc(hl + len + 1);

	do {
		assert_int_equal(mc_store_body_read(r, got + total, hl + len + 1 - total, &n),
		    MC_STORE_OK);
		total += n;
	} while (n > 0 && total <= hl + len);
	mc_store_body_close(r);
	assert_int_equal(total, hl + len);
	assert_memory_equal(got, head, hl);
	assert_memory_equal(got + hl, body, len);
	free(got);
}

/* A mailbox entry read through mc_store_message_open: its head, then the body. */
static void
assert_message(struct mc_store *st, const char *id, const char *head,
    const unsigned char *body, size_t len)
{
	struct mc_body_reader *r;

	assert_int_equal(mc_store_message_open(st, id, &r), MC_STORE_OK);
	assert_read(r, head, body, len);
}

static void
check_head(void *ctx, const struct mc_message_info *m)
{
	assert_non_null(m->head);
	assert_string_equal(m->head, (const char *)ctx);
}

/* An entry opened from its listing (mc_store_entry_open): head, then body. */
static void
assert_entry(struct mc_store *st, const struct mc_message_info *m, const char *head,
    const unsigned char *body, size_t len)
{
	struct mc_body_reader *r;

	assert_int_equal(mc_store_entry_open(st, m->body, head, m->size, &r), MC_STORE_OK);
	assert_read(r, head, body, len);
}

/*
 * Messages are opened from the entry's size and the body's first chunk
 * (no files document read): every chunk count, an empty body, and a body
 * written by a GridFS tool, which has no keyed chunks, all read back whole.
 */
static void
test_message_open(void **state)
{
	struct mc_store *st = open_store();
	mongoc_database_t *db;
	mongoc_client_t *client = raw_client(&db);
	const size_t sizes[] = { 1, 4096, 261120, 2 * 261120, 2 * 261120 + 99, 0 };
	const size_t nsizes = sizeof(sizes) / sizeof(sizes[0]);
	const size_t max = 2 * 261120 + 99;
	unsigned char *data = malloc(max);
	const char *box[] = { "open@example.org" };
	struct mc_message_meta meta = { .sender = "a@example.net", .remote_ip = "192.0.2.1",
	    .head = "Return-Path: <a@example.net>\r\n" };
	struct msgs ms = { 0 };
	char body[MC_ID_LEN + 1];
	struct mc_body_writer *w;

	(void)state;
	for (size_t i = 0; i < max; i++)
		data[i] = (unsigned char)(i * 7 + 3);
	for (size_t i = 0; i < nsizes; i++) {
		assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
		assert_int_equal(mc_store_body_write(w, data, sizes[i]), MC_STORE_OK);
		assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
		assert_int_equal(mc_store_deliver(st, body, sizes[i], box, 1, &meta), MC_STORE_OK);
	}
	write_legacy_body(db, data, 4500, body);
	assert_int_equal(mc_store_deliver(st, body, 4500, box, 1, &meta), MC_STORE_OK);
	assert_int_equal(mc_store_mailbox_list(st, box[0], collect_msg, &ms), MC_STORE_OK);
	assert_int_equal(ms.n, (int)nsizes + 1);
	for (size_t i = 0; i < nsizes; i++)
		assert_message(st, ms.m[i].id, meta.head, data, sizes[i]);
	assert_message(st, ms.m[nsizes].id, meta.head, data, 4500);
	/* The listing gives each entry's head, and the entries open from it alone. */
	assert_int_equal(mc_store_mailbox_list(st, box[0], check_head, (void *)meta.head),
	    MC_STORE_OK);
	for (size_t i = 0; i <= nsizes; i++)
		assert_entry(st, &ms.m[i], meta.head, data, i < nsizes ? sizes[i] : 4500);

	free(data);
	mongoc_database_destroy(db);
	mongoc_client_destroy(client);
	mc_store_free(st);
}

static void
test_locks(void **state)
{
	struct mc_store *st = open_store();

	(void)state;
	assert_int_equal(mc_store_lock_take(st, "pop3:a@x", "h1", 60), MC_STORE_OK);
	assert_int_equal(mc_store_lock_take(st, "pop3:a@x", "h2", 60), MC_STORE_EXISTS);
	assert_int_equal(mc_store_lock_renew(st, "pop3:a@x", "h1", 60), MC_STORE_OK);
	assert_int_equal(mc_store_lock_renew(st, "pop3:a@x", "h2", 60), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_lock_release(st, "pop3:a@x", "h2"), MC_STORE_OK);
	assert_int_equal(mc_store_lock_take(st, "pop3:a@x", "h2", 60), MC_STORE_EXISTS);
	assert_int_equal(mc_store_lock_release(st, "pop3:a@x", "h1"), MC_STORE_OK);
	assert_int_equal(mc_store_lock_take(st, "pop3:a@x", "h2", 60), MC_STORE_OK);

	/* A lock whose holder died expires and is taken over. */
	assert_int_equal(mc_store_lock_take(st, "pop3:b@x", "dead", 1), MC_STORE_OK);
	assert_int_equal(mc_store_lock_take(st, "pop3:b@x", "h3", 60), MC_STORE_EXISTS);
	sleep(2);
	assert_int_equal(mc_store_lock_take(st, "pop3:b@x", "h3", 60), MC_STORE_OK);
	assert_int_equal(mc_store_lock_take(st, "pop3:b@x", "h4", 60), MC_STORE_EXISTS);
	mc_store_free(st);
}

#define RACERS 3
#define ROUNDS 60

/*
 * Each racer process tries every lock name once; for fresh locks (expired:
 * 0) and for expired ones (expired: 1, made by the parent with ttl 1 s and
 * raced after they ran out) exactly one racer may win each name.
 */
static void
race_locks(int expired)
{
	int pipes[RACERS][2], wins[ROUNDS] = { 0 };
	char name[64];

	for (int r = 0; r < RACERS; r++) {
		assert_int_equal(pipe(pipes[r]), 0);
		if (fork() == 0) {
			struct mc_store *st = mc_store_new(&cfg);
			char holder[32], res[ROUNDS];
			close(pipes[r][0]);
			snprintf(holder, sizeof(holder), "racer%d", r);
			for (int i = 0; i < ROUNDS; i++) {
				snprintf(name, sizeof(name), "race:%d:%d", expired, i);
				res[i] = mc_store_lock_take(st, name, holder, 600) == MC_STORE_OK;
			}
			_exit(write(pipes[r][1], res, ROUNDS) == ROUNDS ? 0 : 1);
		}
		close(pipes[r][1]);
	}
	for (int r = 0; r < RACERS; r++) {
		char res[ROUNDS];
		int status;
		assert_int_equal(read(pipes[r][0], res, ROUNDS), ROUNDS);
		close(pipes[r][0]);
		wait(&status);
		assert_int_equal(status, 0);
		for (int i = 0; i < ROUNDS; i++)
			wins[i] += res[i];
	}
	for (int i = 0; i < ROUNDS; i++)
		assert_int_equal(wins[i], 1);
}

static void
test_lock_races(void **state)
{
	struct mc_store *st = open_store();
	char name[64];

	(void)state;
	race_locks(0);
	for (int i = 0; i < ROUNDS; i++) {
		snprintf(name, sizeof(name), "race:1:%d", i);
		assert_int_equal(mc_store_lock_take(st, name, "dead", 1), MC_STORE_OK);
	}
	sleep(2);
	race_locks(1);
	mc_store_free(st);
}

static void
test_queue_claims(void **state)
{
	struct mc_store *st = open_store();
	struct mc_body_writer *w;
	struct mc_outbound_info o;
	char body[MC_ID_LEN + 1], id[MC_ID_LEN + 1], first[MC_ID_LEN + 1];
	const char *rcpts[] = { "x@far.example", "y@far.example" };
	enum { ITEMS = 30 };
	char claimed[2][ITEMS][MC_ID_LEN + 1];
	int pipes[2][2], counts[2] = { 0, 0 };

	(void)state;
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_write(w, "Subject: q\r\n\r\nhi\r\n", 18), MC_STORE_OK);
	assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
	for (int i = 0; i < ITEMS; i++) {
		const struct mc_outbound_new q = { "s@m.example", rcpts, 2, body, NULL, NULL, 0 };
		assert_int_equal(mc_store_outbound_add(st, &q, id), MC_STORE_OK);
		if (i == 0)
			strcpy(first, id);
	}
	assert_int_equal(mc_store_outbound_get(st, first, &o), MC_STORE_OK);
	assert_string_equal(o.state, "queued");
	assert_string_equal(o.recipients, "x@far.example,y@far.example");

	/* Two workers drain the queue; no item may be claimed twice. */
	for (int r = 0; r < 2; r++) {
		assert_int_equal(pipe(pipes[r]), 0);
		if (fork() == 0) {
			struct mc_store *ws = mc_store_new(&cfg);
			struct mc_outbound_info c;
			char owner[16];
			close(pipes[r][0]);
			snprintf(owner, sizeof(owner), "worker%d", r);
			while (mc_store_outbound_claim(ws, owner, 600, &c) == MC_STORE_OK)
				if (write(pipes[r][1], c.id, MC_ID_LEN) != MC_ID_LEN)
					_exit(1);
			_exit(0);
		}
		close(pipes[r][1]);
	}
	for (int r = 0; r < 2; r++) {
		char buf[MC_ID_LEN];
		int status;
		while (read(pipes[r][0], buf, MC_ID_LEN) == MC_ID_LEN && counts[r] < ITEMS) {
			memcpy(claimed[r][counts[r]], buf, MC_ID_LEN);
			claimed[r][counts[r]++][MC_ID_LEN] = '\0';
		}
		close(pipes[r][0]);
		wait(&status);
		assert_int_equal(status, 0);
	}
	assert_int_equal(counts[0] + counts[1], ITEMS);
	for (int i = 0; i < counts[0]; i++)
		for (int j = 0; j < counts[1]; j++)
			assert_string_not_equal(claimed[0][i], claimed[1][j]);
	assert_int_equal(mc_store_outbound_claim(st, "late", 600, &o), MC_STORE_NOTFOUND);

	/* Operator actions: an item being delivered is in use. */
	assert_int_equal(mc_store_outbound_get(st, first, &o), MC_STORE_OK);
	assert_string_equal(o.state, "delivering");
	assert_int_equal(o.attempts, 1);
	assert_int_equal(mc_store_outbound_hold(st, first), MC_STORE_INUSE);
	assert_int_equal(mc_store_outbound_delete(st, "0123456789abcdef01234567"),
	    MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_outbound_retry(st, "not-an-id"), MC_STORE_NOTFOUND);
	mc_store_free(st);
}

static void
test_queue_operator(void **state)
{
	struct mc_store *st = open_store();
	struct mc_body_writer *w;
	struct mc_outbound_info o;
	struct mc_body_reader *r;
	char body[MC_ID_LEN + 1], id[MC_ID_LEN + 1], *json;
	const char *rcpts[] = { "z@far.example" };

	(void)state;
	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_write(w, "x\r\n", 3), MC_STORE_OK);
	assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
	const struct mc_outbound_new q = { "", rcpts, 1, body, NULL, "8bitmime", 0 };
	assert_int_equal(mc_store_outbound_add(st, &q, id), MC_STORE_OK);
	assert_int_equal(mc_store_outbound_hold(st, id), MC_STORE_OK);
	assert_int_equal(mc_store_outbound_get(st, id, &o), MC_STORE_OK);
	assert_string_equal(o.state, "held");
	assert_int_equal(mc_store_outbound_claim(st, "w", 600, &o), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_outbound_retry(st, id), MC_STORE_INUSE);
	assert_int_equal(mc_store_outbound_release(st, id), MC_STORE_OK);
	assert_int_equal(mc_store_outbound_json(st, id, &json), MC_STORE_OK);
	assert_non_null(strstr(json, "\"z@far.example\""));
	free(json);
	assert_int_equal(mc_store_outbound_delete(st, id), MC_STORE_OK);
	assert_int_equal(mc_store_outbound_get(st, id, &o), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_body_open(st, body, &r), MC_STORE_NOTFOUND);
	mc_store_free(st);
}

/* A database that is not there: a temporary error within the bound. */
static void
test_unreachable(void **state)
{
	struct mc_config bad;
	struct mc_store *st;
	char err[128];
	time_t t0 = time(NULL);

	(void)state;
	assert_int_equal(mc_config_parse(&bad, "bad", "mongodb_uri = mongodb://127.0.0.1:1\n"
	    "db_timeout = 1\n", err, sizeof(err)), 0);
	st = mc_store_new(&bad);   /* lazy: no connection yet, no error yet */
	assert_non_null(st);
	assert_int_equal(mc_store_domain_add(st, "x.example"), MC_STORE_TEMP);
	assert_non_null(strstr(mc_store_error(st), "database unavailable"));
	assert_int_equal(mc_store_ping(st), MC_STORE_TEMP);
	assert_true(time(NULL) - t0 < 10);
	mc_store_free(st);
	mc_config_free(&bad);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accounts),
		cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_body_layout),
		cmocka_unit_test(test_message_open),
		cmocka_unit_test(test_locks),
		cmocka_unit_test(test_lock_races),
		cmocka_unit_test(test_queue_claims),
		cmocka_unit_test(test_queue_operator),
		cmocka_unit_test(test_unreachable),
	};

	return cmocka_run_group_tests_name("store", tests, setup, teardown);
}
