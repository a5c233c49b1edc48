/*
 * test_store_auth.c - DMARC evaluations and DKIM keys in the store, against a
 * real dev database ($MAILCELL_TEST_MONGODB_URI, set by scripts/check.sh;
 * every test is skipped without it): filters, order, newest key, replace.
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

#include "config.h"
#include "store.h"
#include "store_auth.h"
#include "store_fixture.h"

static struct mc_config cfg;
static int have_db;

static int
setup(void **state)
{
	const char *uri = getenv("MAILCELL_TEST_MONGODB_URI");
	char dbname[64];

	(void)state;
	if (uri == NULL) {
		fprintf(stderr, "test_store_auth: MAILCELL_TEST_MONGODB_URI is not set "
		    "(make check sets it): skipping\n");
		return 0;
	}
	have_db = 1;
	return store_fixture_config(&cfg, uri, "auth_", dbname, sizeof(dbname));
}

static int
teardown(void **state)
{
	(void)state;
	if (have_db)
		mc_config_free(&cfg);
	return 0;
}

static struct mc_store *
open_store(void)
{
	struct mc_store *st;

	if (!have_db)
		skip();
	st = mc_store_new(&cfg);
	assert_non_null(st);
	return st;
}

/* A record with everything filled in; domains given in mixed case. */
static void
make_record(struct mc_dmarc_record *r, time_t t, const char *qid, const char *from,
    const char *policy_domain)
{
	memset(r, 0, sizeof(*r));
	r->time = t;
	snprintf(r->qid, sizeof(r->qid), "%s", qid);
	snprintf(r->source_ip, sizeof(r->source_ip), "192.0.2.7");
	snprintf(r->helo, sizeof(r->helo), "mx.sender.example");
	snprintf(r->envelope_from, sizeof(r->envelope_from), "Bounce.Sender.Example");
	snprintf(r->envelope_to, sizeof(r->envelope_to), "example.org");
	snprintf(r->header_from, sizeof(r->header_from), "%s", from);
	snprintf(r->policy_domain, sizeof(r->policy_domain), "%s", policy_domain);
	snprintf(r->spf_domain, sizeof(r->spf_domain), "bounce.sender.example");
	snprintf(r->spf_scope, sizeof(r->spf_scope), "mfrom");
	snprintf(r->spf_result, sizeof(r->spf_result), "pass");
	snprintf(r->dkim[0].domain, sizeof(r->dkim[0].domain), "Sender.Example");
	snprintf(r->dkim[0].selector, sizeof(r->dkim[0].selector), "s1");
	snprintf(r->dkim[0].result, sizeof(r->dkim[0].result), "pass");
	snprintf(r->dkim[1].domain, sizeof(r->dkim[1].domain), "esp.example");
	snprintf(r->dkim[1].selector, sizeof(r->dkim[1].selector), "k2");
	snprintf(r->dkim[1].result, sizeof(r->dkim[1].result), "fail");
	r->ndkim = 2;
	r->spf_aligned = 0;
	r->dkim_aligned = 1;
	snprintf(r->result, sizeof(r->result), "pass");
	snprintf(r->disposition, sizeof(r->disposition), "none");
	snprintf(r->p, sizeof(r->p), "quarantine");
	snprintf(r->sp, sizeof(r->sp), "reject");
	r->pct = 50;
	snprintf(r->adkim, sizeof(r->adkim), "s");
	snprintf(r->aspf, sizeof(r->aspf), "r");
}

struct seen { int n; struct mc_dmarc_record r[8]; };

static void
collect_record(void *ctx, const struct mc_dmarc_record *r)
{
	struct seen *s = ctx;

	if (s->n < 8)
		s->r[s->n] = *r;
	s->n++;
}

static void
list(struct mc_store *st, const char *domain, time_t since, time_t until, struct seen *s)
{
	memset(s, 0, sizeof(*s));
	assert_int_equal(mc_store_dmarc_list(st, domain, since, until, collect_record, s),
	    MC_STORE_OK);
}

/* Every field comes back as stored, domains lower-cased. */
static void
test_dmarc_roundtrip(void **state)
{
	struct mc_store *st = open_store();
	struct mc_dmarc_record r;
	struct seen s;
	time_t t0 = 1700000000;

	(void)state;
	make_record(&r, t0, "Q1", "Sender.Example", "sender.example");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	list(st, "sender.example", t0, t0 + 1, &s);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.r[0].time, t0);
	assert_string_equal(s.r[0].qid, "Q1");
	assert_string_equal(s.r[0].source_ip, "192.0.2.7");
	assert_string_equal(s.r[0].helo, "mx.sender.example");
	assert_string_equal(s.r[0].envelope_from, "bounce.sender.example");
	assert_string_equal(s.r[0].envelope_to, "example.org");
	assert_string_equal(s.r[0].header_from, "sender.example");
	assert_string_equal(s.r[0].policy_domain, "sender.example");
	assert_string_equal(s.r[0].spf_domain, "bounce.sender.example");
	assert_string_equal(s.r[0].spf_scope, "mfrom");
	assert_string_equal(s.r[0].spf_result, "pass");
	assert_int_equal(s.r[0].ndkim, 2);
	assert_string_equal(s.r[0].dkim[0].domain, "sender.example");
	assert_string_equal(s.r[0].dkim[0].selector, "s1");
	assert_string_equal(s.r[0].dkim[0].result, "pass");
	assert_string_equal(s.r[0].dkim[1].domain, "esp.example");
	assert_string_equal(s.r[0].dkim[1].result, "fail");
	assert_int_equal(s.r[0].spf_aligned, 0);
	assert_int_equal(s.r[0].dkim_aligned, 1);
	assert_string_equal(s.r[0].result, "pass");
	assert_string_equal(s.r[0].disposition, "none");
	assert_string_equal(s.r[0].p, "quarantine");
	assert_string_equal(s.r[0].sp, "reject");
	assert_int_equal(s.r[0].pct, 50);
	assert_string_equal(s.r[0].adkim, "s");
	assert_string_equal(s.r[0].aspf, "r");
	/* The query's domain is case-insensitive too. */
	list(st, "SENDER.example", t0, t0 + 1, &s);
	assert_int_equal(s.n, 1);
	mc_store_free(st);
}

/* header_from OR policy_domain, time in [since, until), oldest first. */
static void
test_dmarc_filters(void **state)
{
	struct mc_store *st = open_store();
	struct mc_dmarc_record r;
	struct seen s;
	time_t t0 = 1800000000;

	(void)state;
	make_record(&r, t0 + 30, "LATE", "a.example", "a.example");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	make_record(&r, t0 + 10, "EARLY", "a.example", "");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	make_record(&r, t0 + 20, "SUB", "sub.a.example", "a.example");   /* org policy */
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	make_record(&r, t0 + 15, "OTHER", "b.example", "b.example");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	make_record(&r, t0 + 100, "AFTER", "a.example", "a.example");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	make_record(&r, t0 - 1, "BEFORE", "a.example", "a.example");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);

	list(st, "a.example", t0, t0 + 100, &s);   /* until is exclusive */
	assert_int_equal(s.n, 3);
	assert_string_equal(s.r[0].qid, "EARLY");
	assert_string_equal(s.r[1].qid, "SUB");
	assert_string_equal(s.r[2].qid, "LATE");
	list(st, "a.example", t0 + 10, t0 + 11, &s);   /* since is inclusive */
	assert_int_equal(s.n, 1);
	assert_string_equal(s.r[0].qid, "EARLY");
	list(st, "sub.a.example", 0, t0 + 1000, &s);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.r[0].qid, "SUB");
	list(st, "b.example", 0, t0 + 1000, &s);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.r[0].qid, "OTHER");
	list(st, "nobody.example", 0, t0 + 1000, &s);
	assert_int_equal(s.n, 0);
	mc_store_free(st);
}

/* An unknown policy and no signatures stay empty. */
static void
test_dmarc_sparse(void **state)
{
	struct mc_store *st = open_store();
	struct mc_dmarc_record r;
	struct seen s;
	time_t t0 = 1600000000;

	(void)state;
	memset(&r, 0, sizeof(r));
	r.time = t0;
	snprintf(r.header_from, sizeof(r.header_from), "none.example");
	snprintf(r.result, sizeof(r.result), "none");
	r.pct = 100;
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_OK);
	list(st, "none.example", t0, t0 + 1, &s);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.r[0].ndkim, 0);
	assert_string_equal(s.r[0].p, "");
	assert_string_equal(s.r[0].policy_domain, "");
	assert_int_equal(s.r[0].pct, 100);
	mc_store_free(st);
}

struct keys { int n; char line[8][512]; };

static void
collect_key(void *ctx, const struct mc_dkim_key *k)
{
	struct keys *ks = ctx;

	if (ks->n < 8)
		snprintf(ks->line[ks->n], sizeof(ks->line[0]), "%s/%s/%s", k->domain, k->selector,
		    k->private_key);
	ks->n++;
}

/* put, newest by created, list order, replace keeps one key per selector. */
static void
test_dkim_keys(void **state)
{
	struct mc_store *st = open_store();
	struct mc_dkim_key k;
	struct keys ks;

	(void)state;
	memset(&k, 0, sizeof(k));
	assert_int_equal(mc_store_dkim_key_get(st, "example.org", &k), MC_STORE_NOTFOUND);
	assert_null(k.private_key);
	assert_int_equal(mc_store_dkim_key_put(st, "Example.ORG", "old", "PEM-OLD"), MC_STORE_OK);
	usleep(20 * 1000);   /* created has millisecond resolution */
	assert_int_equal(mc_store_dkim_key_put(st, "example.org", "new", "PEM-NEW"), MC_STORE_OK);
	assert_int_equal(mc_store_dkim_key_put(st, "other.example", "s", "PEM-OTHER"),
	    MC_STORE_OK);

	assert_int_equal(mc_store_dkim_key_get(st, "EXAMPLE.org", &k), MC_STORE_OK);
	assert_string_equal(k.domain, "example.org");
	assert_string_equal(k.selector, "new");
	assert_string_equal(k.private_key, "PEM-NEW");
	assert_true(k.created > time(NULL) - 60 && k.created <= time(NULL));
	mc_dkim_key_clear(&k);
	assert_null(k.private_key);

	memset(&ks, 0, sizeof(ks));
	assert_int_equal(mc_store_dkim_key_list(st, collect_key, &ks), MC_STORE_OK);
	assert_int_equal(ks.n, 3);
	assert_string_equal(ks.line[0], "example.org/new/PEM-NEW");
	assert_string_equal(ks.line[1], "example.org/old/PEM-OLD");
	assert_string_equal(ks.line[2], "other.example/s/PEM-OTHER");

	/* Replacing the old selector's key makes it the newest, still one document. */
	usleep(20 * 1000);
	assert_int_equal(mc_store_dkim_key_put(st, "example.org", "old", "PEM-OLD2"),
	    MC_STORE_OK);
	assert_int_equal(mc_store_dkim_key_get(st, "example.org", &k), MC_STORE_OK);
	assert_string_equal(k.selector, "old");
	assert_string_equal(k.private_key, "PEM-OLD2");
	mc_dkim_key_clear(&k);
	memset(&ks, 0, sizeof(ks));
	assert_int_equal(mc_store_dkim_key_list(st, collect_key, &ks), MC_STORE_OK);
	assert_int_equal(ks.n, 3);
	assert_string_equal(ks.line[1], "example.org/old/PEM-OLD2");
	mc_store_free(st);
}

/* A database that is not there: a temporary error, not a crash or a hang. */
static void
test_unreachable(void **state)
{
	struct mc_config bad;
	struct mc_store *st;
	struct mc_dmarc_record r;
	struct mc_dkim_key k;
	struct seen s;
	char err[128];

	(void)state;
	assert_int_equal(mc_config_parse(&bad, "bad", "mongodb_uri = mongodb://127.0.0.1:1\n"
	    "db_timeout = 1\n", err, sizeof(err)), 0);
	st = mc_store_new(&bad);
	assert_non_null(st);
	make_record(&r, 1, "Q", "x.example", "");
	assert_int_equal(mc_store_dmarc_add(st, &r), MC_STORE_TEMP);
	assert_non_null(strstr(mc_store_error(st), "database unavailable"));
	assert_int_equal(mc_store_dmarc_list(st, "x.example", 0, 10, collect_record, &s),
	    MC_STORE_TEMP);
	assert_int_equal(mc_store_dkim_key_put(st, "x.example", "s", "PEM"), MC_STORE_TEMP);
	assert_int_equal(mc_store_dkim_key_get(st, "x.example", &k), MC_STORE_TEMP);
	assert_null(k.private_key);
	mc_store_free(st);
	mc_config_free(&bad);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dmarc_roundtrip),
		cmocka_unit_test(test_dmarc_filters),
		cmocka_unit_test(test_dmarc_sparse),
		cmocka_unit_test(test_dkim_keys),
		cmocka_unit_test(test_unreachable),
	};

	return cmocka_run_group_tests_name("store_auth", tests, setup, teardown);
}
