/*
 * dmarc_report.c - `mailcell dmarc report DOMAIN --since DATE [--until DATE]`:
 * the stored DMARC evaluations of a period, grouped into the rows of an
 * RFC 7489 appendix C aggregate report, printed as XML on stdout.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "address.h"
#include "admin.h"
#include "store_auth.h"

/*
 * Rows are grouped in memory: an array of groups plus a chained hash table.
 * The array is bounded so a huge period cannot eat the machine; past the
 * bound the report is refused (ask for a shorter period), never truncated.
 */
#define GROUPS_MAX 100000
#define BUCKETS 65536        /* power of two */
#define KEY_MAX 8192         /* > every field of a record, each with its NUL */

/*
 * One row: its fields, each NUL-terminated, one after another in key:
 * source_ip, disposition, dkim (evaluated), spf (evaluated), header_from,
 * envelope_from, spf domain, spf scope, spf result, then for each DKIM
 * signature its domain, selector and result.
 */
struct group {
	char *key;
	size_t keylen;
	unsigned long count;
	uint32_t hash;
	uint32_t next;           /* index + 1 of the next group in the bucket, 0: none */
};

struct report {
	char domain[MC_ADDR_DOMAIN_MAX + 1];
	time_t since, until;
	struct group *groups;
	size_t ngroups, cap;
	uint32_t *buckets;       /* index + 1 of the first group, 0: empty */
	int too_many, oom;
	struct mc_dmarc_record policy;   /* the newest record with a published policy */
	int have_policy;
};

/* ---- arguments ---- */

/* 1 if s[0..n) are all digits. */
static int
digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

static int
num(const char *s, size_t n)
{
	int v = 0;

	for (size_t i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

/* @EPOCHSECONDS */
static int
parse_epoch(const char *s, time_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s + 1, &end, 10);
	if (!isdigit((unsigned char)s[1]) || *end != '\0' || errno != 0)
		return -1;
	*out = (time_t)v;
	return 0;
}

/* YYYY-MM-DD (midnight UTC) or YYYY-MM-DDTHH:MM:SSZ; impossible dates refused. */
static int
parse_iso(const char *s, time_t *out)
{
	size_t n = strlen(s);
	struct tm tm, back;
	time_t t;

	if ((n != 10 && n != 20) || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) ||
	    s[7] != '-' || !digits(s + 8, 2))
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = num(s, 4) - 1900;
	tm.tm_mon = num(s + 5, 2) - 1;
	tm.tm_mday = num(s + 8, 2);
	if (n == 20) {
		if (s[10] != 'T' || !digits(s + 11, 2) || s[13] != ':' || !digits(s + 14, 2) ||
		    s[16] != ':' || !digits(s + 17, 2) || s[19] != 'Z')
			return -1;
		tm.tm_hour = num(s + 11, 2);
		tm.tm_min = num(s + 14, 2);
		tm.tm_sec = num(s + 17, 2);
	}
	back = tm;
	if ((t = timegm(&tm)) == (time_t)-1 || tm.tm_year != back.tm_year ||
	    tm.tm_mon != back.tm_mon || tm.tm_mday != back.tm_mday ||
	    tm.tm_hour != back.tm_hour || tm.tm_min != back.tm_min || tm.tm_sec != back.tm_sec)
		return -1;
	*out = t;
	return 0;
}

static int
parse_date(const char *opt, const char *s, time_t *out)
{
	if ((s[0] == '@' ? parse_epoch(s, out) : parse_iso(s, out)) == 0)
		return 0;
	return fail("%s '%s' is not a valid date (use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or "
	    "@EPOCHSECONDS, in UTC)", opt, s);
}

/* report DOMAIN --since DATE [--until DATE]: 0, 1 on a bad value, EXIT_USAGE. */
static int
report_args(int argc, char **argv, struct report *r)
{
	const char *domain = NULL, *since = NULL, *until = NULL;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--since") == 0 && i + 1 < argc && since == NULL)
			since = argv[++i];
		else if (strcmp(argv[i], "--until") == 0 && i + 1 < argc && until == NULL)
			until = argv[++i];
		else if (domain == NULL && strncmp(argv[i], "--", 2) != 0)
			domain = argv[i];
		else
			return usage();
	}
	if (domain == NULL || since == NULL)
		return usage();
	if (strlen(domain) >= sizeof(r->domain))
		return fail("'%s' is not a valid domain name", domain);
	snprintf(r->domain, sizeof(r->domain), "%s", domain);
	if (!mc_addr_valid_domain(r->domain, 1))
		return fail("'%s' is not a valid domain name", domain);
	r->until = time(NULL) + 1;   /* exclusive: include what was stored this second */
	if (parse_date("--since", since, &r->since) != 0 ||
	    (until != NULL && parse_date("--until", until, &r->until) != 0))
		return 1;
	if (r->until <= r->since)
		return fail("the period is empty: --until must be later than --since");
	return 0;
}

/* ---- grouping ---- */

static int
sig_passed(const struct mc_dmarc_record *rec)
{
	for (size_t i = 0; i < rec->ndkim && i < MC_DMARC_MAX_SIGS; i++)
		if (strcmp(rec->dkim[i].result, "pass") == 0)
			return 1;
	return 0;
}

/* Appends s and its NUL to key at *len (KEY_MAX holds every field). */
static void
key_add(char *key, size_t *len, const char *s, const char *dflt)
{
	size_t n;

	if (s[0] == '\0')
		s = dflt;
	n = strlen(s);
	memcpy(key + *len, s, n + 1);
	*len += n + 1;
}

/* The row a record belongs to, as a key (see struct group). */
static size_t
key_make(const struct mc_dmarc_record *rec, char *key)
{
	size_t len = 0;
	int dkim = rec->dkim_aligned && sig_passed(rec);
	int spf = rec->spf_aligned && strcmp(rec->spf_result, "pass") == 0;

	key_add(key, &len, rec->source_ip, "");
	key_add(key, &len, rec->disposition, "none");
	key_add(key, &len, dkim ? "pass" : "fail", "");
	key_add(key, &len, spf ? "pass" : "fail", "");
	key_add(key, &len, rec->header_from, "");
	key_add(key, &len, rec->envelope_from, "");
	key_add(key, &len, rec->spf_domain, "");
	key_add(key, &len, rec->spf_scope, "mfrom");
	key_add(key, &len, rec->spf_result, "none");
	for (size_t i = 0; i < rec->ndkim && i < MC_DMARC_MAX_SIGS; i++) {
		key_add(key, &len, rec->dkim[i].domain, "");
		key_add(key, &len, rec->dkim[i].selector, "");
		key_add(key, &len, rec->dkim[i].result, "none");
	}
	return len;
}

/* FNV-1a */
static uint32_t
key_hash(const char *key, size_t len)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	return h;
}

static struct group *
group_find(struct report *r, const char *key, size_t len, uint32_t h)
{
	for (uint32_t i = r->buckets[h & (BUCKETS - 1)]; i != 0; i = r->groups[i - 1].next) {
		struct group *g = &r->groups[i - 1];
		if (g->hash == h && g->keylen == len && memcmp(g->key, key, len) == 0)
			return g;
	}
	return NULL;
}

/* A new group for key with count 0; NULL (flag set) when full or out of memory. */
static struct group *
group_add(struct report *r, const char *key, size_t len, uint32_t h)
{
	struct group *g;

	if (r->ngroups == GROUPS_MAX) {
		r->too_many = 1;
		return NULL;
	}
	if (r->ngroups == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		struct group *more = realloc(r->groups, cap * sizeof(*more));
		if (more == NULL) {
			r->oom = 1;
			return NULL;
		}
		r->groups = more;
		r->cap = cap;
	}
	g = &r->groups[r->ngroups];
	if ((g->key = malloc(len)) == NULL) {
		r->oom = 1;
		return NULL;
	}
	memcpy(g->key, key, len);
	g->keylen = len;
	g->count = 0;
	g->hash = h;
	g->next = r->buckets[h & (BUCKETS - 1)];
	r->buckets[h & (BUCKETS - 1)] = (uint32_t)++r->ngroups;
	return g;
}

static void
collect(void *ctx, const struct mc_dmarc_record *rec)
{
	struct report *r = ctx;
	char key[KEY_MAX];
	size_t len;
	uint32_t h;
	struct group *g;

	if (rec->p[0] != '\0') {   /* oldest first: the last one seen is the newest */
		r->policy = *rec;
		r->have_policy = 1;
	}
	if (r->too_many || r->oom)
		return;
	len = key_make(rec, key);
	h = key_hash(key, len);
	if ((g = group_find(r, key, len, h)) == NULL && (g = group_add(r, key, len, h)) == NULL)
		return;
	g->count++;
}

static void
report_free(struct report *r)
{
	for (size_t i = 0; i < r->ngroups; i++)
		free(r->groups[i].key);
	free(r->groups);
	free(r->buckets);
}

/* ---- XML ---- */

/* s with XML's special characters escaped; control characters become '?'. */
static void
xml_text(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		switch (ch) {
		case '&': fputs("&amp;", stdout); break;
		case '<': fputs("&lt;", stdout); break;
		case '>': fputs("&gt;", stdout); break;
		case '"': fputs("&quot;", stdout); break;
		case '\'': fputs("&apos;", stdout); break;
		default: putchar((ch < 0x20 && ch != '\t') || ch == 0x7f ? '?' : ch);
		}
	}
}

/* <name>value</name> on its own line, indented. */
static void
elem(int indent, const char *name, const char *value)
{
	printf("%*s<%s>", indent, "", name);
	xml_text(value);
	printf("</%s>\n", name);
}

static void
elem_num(int indent, const char *name, long long value)
{
	printf("%*s<%s>%lld</%s>\n", indent, "", name, value, name);
}

/* The next field of a group key. */
static const char *
field(const char **cur)
{
	const char *f = *cur;

	*cur += strlen(f) + 1;
	return f;
}

static void
print_metadata(const struct ctx *c, const struct report *r)
{
	char email[600], id[400];

	snprintf(email, sizeof(email), "postmaster@%s", c->cfg->hostname);
	snprintf(id, sizeof(id), "%s!%lld!%lld", r->domain, (long long)r->since,
	    (long long)r->until);
	puts("  <report_metadata>");
	elem(4, "org_name", c->cfg->hostname);
	elem(4, "email", email);
	elem(4, "report_id", id);
	puts("    <date_range>");
	elem_num(6, "begin", (long long)r->since);
	elem_num(6, "end", (long long)r->until);
	puts("    </date_range>");
	puts("  </report_metadata>");
}

static void
print_policy(const struct report *r)
{
	const struct mc_dmarc_record *p = &r->policy;
	int have = r->have_policy;

	puts("  <policy_published>");
	elem(4, "domain", have && p->policy_domain[0] ? p->policy_domain : r->domain);
	elem(4, "adkim", have && p->adkim[0] ? p->adkim : "r");
	elem(4, "aspf", have && p->aspf[0] ? p->aspf : "r");
	elem(4, "p", have ? p->p : "none");
	elem(4, "sp", have && p->sp[0] ? p->sp : have ? p->p : "none");
	elem_num(4, "pct", have ? p->pct : 100);
	puts("  </policy_published>");
}

/* <auth_results> from the key's SPF fields on: signatures first (the schema's order). */
static void
print_auth_results(const char *cur, const char *end)
{
	const char *domain = field(&cur), *scope = field(&cur), *res = field(&cur);

	puts("    <auth_results>");
	while (cur < end) {
		puts("      <dkim>");
		elem(8, "domain", field(&cur));
		elem(8, "selector", field(&cur));
		elem(8, "result", field(&cur));
		puts("      </dkim>");
	}
	puts("      <spf>");
	elem(8, "domain", domain);
	elem(8, "scope", scope);
	elem(8, "result", res);
	puts("      </spf>\n    </auth_results>");
}

static void
print_record(const struct group *g)
{
	const char *cur = g->key, *header_from;

	puts("  <record>\n    <row>");
	elem(6, "source_ip", field(&cur));
	elem_num(6, "count", (long long)g->count);
	puts("      <policy_evaluated>");
	elem(8, "disposition", field(&cur));
	elem(8, "dkim", field(&cur));
	elem(8, "spf", field(&cur));
	puts("      </policy_evaluated>\n    </row>\n    <identifiers>");
	header_from = field(&cur);
	elem(6, "envelope_from", field(&cur));
	elem(6, "header_from", header_from);
	puts("    </identifiers>");
	print_auth_results(cur, g->key + g->keylen);
	puts("  </record>");
}

static void
print_report(const struct ctx *c, const struct report *r)
{
	puts("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
	puts("<feedback>");
	puts("  <version>1.0</version>");
	print_metadata(c, r);
	print_policy(r);
	for (size_t i = 0; i < r->ngroups; i++)
		print_record(&r->groups[i]);
	puts("</feedback>");
}

/* ---- command ---- */

static int
dmarc_report(struct ctx *c, struct report *r)
{
	enum mc_store_status s;

	if ((r->buckets = calloc(BUCKETS, sizeof(*r->buckets))) == NULL)
		return fail("%s", "out of memory");
	s = mc_store_dmarc_list(c->st, r->domain, r->since, r->until, collect, r);
	if (s != MC_STORE_OK)
		return result(c, s);
	if (r->oom)
		return fail("%s", "out of memory grouping the DMARC records");
	if (r->too_many)
		return fail("more than %d distinct report rows for %s in this period; "
		    "ask for a shorter one", GROUPS_MAX, r->domain);
	print_report(c, r);
	return 0;
}

int
cmd_dmarc(struct ctx *c, int argc, char **argv)
{
	struct report *r;
	int rc;

	if (argc < 1 || strcmp(argv[0], "report") != 0)
		return usage();
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return fail("%s", "out of memory");
	if ((rc = report_args(argc, argv, r)) == 0)
		rc = dmarc_report(c, r);
	report_free(r);
	free(r);
	return rc;
}
