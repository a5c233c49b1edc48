/*
 * test_store_relay.c - the relay worker's store functions against a real dev
 * database ($MAILCELL_TEST_MONGODB_URI, set by scripts/check.sh): claims by
 * id, delivered items moving to outbound_done (found by the queue's
 * readers, swept, settled on takeover, purged) and bodies released in batches.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mongoc/mongoc.h>

#include "config.h"
#include "store.h"
#include "store_relay.h"
#include "store_fixture.h"

static struct mc_config cfg;
static char dbname[64];

static int
setup(void **state)
{
	const char *uri = getenv("MAILCELL_TEST_MONGODB_URI");

	(void)state;
	if (uri == NULL) {
		fprintf(stderr, "test_store_relay: set MAILCELL_TEST_MONGODB_URI (make check does)\n");
		return -1;
	}
	return store_fixture_config(&cfg, uri, "relay_", dbname, sizeof(dbname));
}

static int
teardown(void **state)
{
	(void)state;
	mc_config_free(&cfg);
	return 0;
}

/* The driver directly: how many documents of coll match the JSON filter. */
static int64_t
count(const char *coll, const char *json)
{
	mongoc_client_t *cl = mongoc_client_new(getenv("MAILCELL_TEST_MONGODB_URI"));
	mongoc_collection_t *c = mongoc_client_get_collection(cl, dbname, coll);
	bson_t *f = bson_new_from_json((const uint8_t *)json, -1, NULL);
	int64_t n = mongoc_collection_count_documents(c, f, NULL, NULL, NULL, NULL);

	bson_destroy(f);
	mongoc_collection_destroy(c);
	mongoc_client_destroy(cl);
	return n;
}

static void
new_body(struct mc_store *st, char *body)
{
	struct mc_body_writer *w;

	assert_int_equal(mc_store_body_begin(st, &w), MC_STORE_OK);
	assert_int_equal(mc_store_body_write(w, "Subject: r\r\n\r\nhi\r\n", 18), MC_STORE_OK);
	assert_int_equal(mc_store_body_finish(w, body), MC_STORE_OK);
}

static void
queue_one(struct mc_store *st, const char *body, char *id)
{
	const char *rcpts[] = { "x@far.example" };
	const struct mc_outbound_new q = { "s@m.example", rcpts, 1, body, NULL, NULL, 0 };

	assert_int_equal(mc_store_outbound_add(st, &q, id), MC_STORE_OK);
}

struct logs {
	char text[1024];
	int n;
};

static void
collect_log(void *ctx, const struct mc_item_log *e)
{
	struct logs *l = ctx;

	strncat(l->text, e->command, sizeof(l->text) - strlen(l->text) - 1);
	strncat(l->text, ";", sizeof(l->text) - strlen(l->text) - 1);
	l->n++;
}

/* Claim by id, then a delivery: the item moves to outbound_done with its whole log. */
static void
test_done_moves_out(void **state)
{
	struct mc_store *st = mc_store_new(&cfg);
	struct mc_outbound_info o;
	struct mc_item it;
	struct logs l = { "", 0 };
	char body[MC_ID_LEN + 1], id[MC_ID_LEN + 1], ids[4][MC_ID_LEN + 1];
	const struct mc_item_log first[] = { { 1000, "EHLO a", "250 ok" } };
	const struct mc_item_log last[] = { { 2000, "MAIL FROM:<s@m.example>", "250 ok" },
	    { 3000, "<message: 18 octets via DATA>", "250 queued" } };
	size_t n;

	(void)state;
	new_body(st, body);
	queue_one(st, body, id);
	assert_int_equal(mc_store_outbound_due(st, ids, 4, &n), MC_STORE_OK);
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], id);
	assert_int_equal(mc_store_outbound_claim_id(st, id, "w1", 600, &o), MC_STORE_OK);
	assert_int_equal(mc_store_outbound_claim_id(st, id, "w2", 600, &o), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_item_load(st, id, &it), MC_STORE_OK);
	assert_int_equal(mc_store_item_log(st, id, first, 1), MC_STORE_OK);
	snprintf(it.rcpts[0].state, sizeof(it.rcpts[0].state), "delivered");
	assert_int_equal(mc_store_item_finish(st, &it, "w1", "done", time(NULL), last, 2),
	    MC_STORE_OK);
	assert_int_equal(count("outbound", "{}"), 0);
	/* Moving it again finds nothing to move. */
	assert_int_equal(mc_store_done_move(st, (const char (*)[MC_ID_LEN + 1])&id, 1, &n),
	    MC_STORE_OK);
	assert_int_equal(n, 0);
	assert_int_equal(count("outbound_done", "{\"state\": \"done\", \"finished\": "
	    "{\"$exists\": true}, \"body\": {\"$exists\": false}}"), 1);
	assert_int_equal(count("locks", "{}"), 0);
	/* The queue's readers find it there. */
	assert_int_equal(mc_store_outbound_get(st, id, &o), MC_STORE_OK);
	assert_string_equal(o.state, "done");
	assert_int_equal(mc_store_item_log_list(st, id, collect_log, &l), MC_STORE_OK);
	assert_string_equal(l.text, "EHLO a;MAIL FROM:<s@m.example>;<message: 18 octets via DATA>;");
	mc_item_free(&it);
	/* Its body goes in a batch, with one that a mailbox entry still holds. */
	{
		char shared[MC_ID_LEN + 1], both[2][MC_ID_LEN + 1];
		const char *boxes[] = { "u@local.example" };
		const struct mc_message_meta meta = { "s@m.example", "", 0, NULL };

		new_body(st, shared);
		assert_int_equal(mc_store_domain_add(st, "local.example"), MC_STORE_OK);
		assert_int_equal(mc_store_deliver(st, shared, 18, boxes, 1, &meta), MC_STORE_OK);
		memcpy(both[0], body, sizeof(both[0]));
		memcpy(both[1], shared, sizeof(both[1]));
		assert_int_equal(mc_store_bodies_release(st, (const char (*)[MC_ID_LEN + 1])both, 2),
		    MC_STORE_OK);
		assert_int_equal(count("bodies.files", "{}"), 1);
	}
	mc_store_free(st);
}

/* The driver directly: inserts a document (extended JSON) into coll. */
static void
insert(const char *coll, const char *json)
{
	mongoc_client_t *cl = mongoc_client_new(getenv("MAILCELL_TEST_MONGODB_URI"));
	mongoc_collection_t *c = mongoc_client_get_collection(cl, dbname, coll);
	bson_error_t e;
	bson_t *d = bson_new_from_json((const uint8_t *)json, -1, &e);

	assert_non_null(d);
	assert_true(mongoc_collection_insert_one(c, d, NULL, NULL, &e));
	bson_destroy(d);
	mongoc_collection_destroy(c);
	mongoc_client_destroy(cl);
}

/* An older version's done item is swept out; a dead worker's delivered one is settled. */
static void
test_sweep_settle_purge(void **state)
{
	struct mc_store *st = mc_store_new(&cfg);
	struct mc_outbound_info o;
	struct mc_item it;
	char body[MC_ID_LEN + 1], b[MC_ID_LEN + 1], json[512];
	const char *legacy = "0123456789abcdef01234567";
	size_t moved;
	int64_t purged;

	(void)state;
	snprintf(json, sizeof(json), "{\"_id\": {\"$oid\": \"%s\"}, \"state\": \"done\", "
	    "\"next_attempt\": {\"$date\": 1000000}, \"sender\": \"s@m.example\", "
	    "\"recipients\": [{\"address\": \"x@far.example\", \"state\": \"delivered\"}]}",
	    legacy);
	insert("outbound", json);
	assert_int_equal(mc_store_done_sweep(st, 10, &moved), MC_STORE_OK);
	assert_int_equal(moved, 1);
	assert_int_equal(count("outbound", "{}"), 0);
	assert_int_equal(count("outbound_done", "{\"finished\": {\"$date\": 1000000}}"), 1);
	assert_int_equal(mc_store_outbound_get(st, legacy, &o), MC_STORE_OK);
	assert_string_equal(o.state, "done");
	/* b delivered, then back in outbound as if its worker died before removing it. */
	new_body(st, body);
	queue_one(st, body, b);
	assert_int_equal(mc_store_item_settle(st, b), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_outbound_claim_id(st, b, "dead", 600, &o), MC_STORE_OK);
	assert_int_equal(mc_store_item_load(st, b, &it), MC_STORE_OK);
	assert_int_equal(mc_store_item_finish(st, &it, "dead", "done", time(NULL), NULL, 0),
	    MC_STORE_OK);
	mc_item_free(&it);
	snprintf(json, sizeof(json), "{\"_id\": {\"$oid\": \"%s\"}, \"state\": \"delivering\", "
	    "\"next_attempt\": {\"$date\": 1000000}, \"lease_until\": {\"$date\": 1000000}, "
	    "\"sender\": \"s@m.example\", \"recipients\": [{\"address\": \"x@far.example\", "
	    "\"state\": \"pending\"}]}", b);
	insert("outbound", json);
	assert_int_equal(mc_store_outbound_claim_id(st, b, "next", 600, &o), MC_STORE_NOTFOUND);
	assert_int_equal(count("outbound", "{}"), 0);
	assert_int_equal(count("locks", "{}"), 0);
	/* Purged by age: the legacy one finished long ago, b just now. */
	assert_int_equal(mc_store_done_purge(st, 3600, &purged), MC_STORE_OK);
	assert_int_equal(purged, 1);
	assert_int_equal(mc_store_outbound_get(st, legacy, &o), MC_STORE_NOTFOUND);
	sleep(2);
	assert_int_equal(mc_store_done_purge(st, 1, &purged), MC_STORE_OK);
	assert_true(purged >= 1);      /* b, and what the other test left */
	assert_int_equal(count("outbound_done", "{}"), 0);
	assert_int_equal(mc_store_outbound_get(st, b, &o), MC_STORE_NOTFOUND);
	mc_store_free(st);
}

/* Failed items stay in the queue for queue_keep_done, then go with their bodies. */
static void
test_failed_purge(void **state)
{
	struct mc_store *st = mc_store_new(&cfg);
	char old_body[MC_ID_LEN + 1], new_body_id[MC_ID_LEN + 1], json[600], f[128];
	const char *old_id = "0123456789abcdef0123aaaa", *new_id = "0123456789abcdef0123bbbb";
	struct mc_outbound_info o;
	size_t removed;

	(void)state;
	new_body(st, old_body);
	new_body(st, new_body_id);
	snprintf(json, sizeof(json), "{\"_id\": {\"$oid\": \"%s\"}, \"state\": \"failed\", "
	    "\"next_attempt\": {\"$date\": 1000000}, \"sender\": \"s@m.example\", "
	    "\"body\": {\"$oid\": \"%s\"}, \"recipients\": [{\"address\": \"x@far.example\", "
	    "\"state\": \"failed\"}]}", old_id, old_body);
	insert("outbound", json);
	snprintf(json, sizeof(json), "{\"_id\": {\"$oid\": \"%s\"}, \"state\": \"failed\", "
	    "\"next_attempt\": {\"$date\": %lld}, \"sender\": \"s@m.example\", "
	    "\"body\": {\"$oid\": \"%s\"}, \"recipients\": [{\"address\": \"x@far.example\", "
	    "\"state\": \"failed\"}]}", new_id, (long long)time(NULL) * 1000, new_body_id);
	insert("outbound", json);
	assert_int_equal(mc_store_failed_purge(st, 3600, 100, &removed), MC_STORE_OK);
	assert_int_equal(removed, 1);
	assert_int_equal(mc_store_outbound_get(st, old_id, &o), MC_STORE_NOTFOUND);
	assert_int_equal(mc_store_outbound_get(st, new_id, &o), MC_STORE_OK);
	assert_string_equal(o.state, "failed");
	snprintf(f, sizeof(f), "{\"_id\": {\"$oid\": \"%s\"}}", old_body);
	assert_int_equal(count("bodies.files", f), 0);
	snprintf(f, sizeof(f), "{\"_id\": {\"$oid\": \"%s\"}}", new_body_id);
	assert_int_equal(count("bodies.files", f), 1);
	mc_store_free(st);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_done_moves_out),
		cmocka_unit_test(test_sweep_settle_purge),
		cmocka_unit_test(test_failed_purge),
	};

	return cmocka_run_group_tests_name("store_relay", tests, setup, teardown);
}
