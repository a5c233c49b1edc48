/*
 * fake_store.c - an in-memory stand-in for the MongoDB store and the password
 * check, for the fuzzed sessions: fixed domains, users, aliases, maildrops;
 * bodies checked and dropped; store failures injected on request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "password.h"
#include "store.h"
#include "store_auth.h"

#define ALICE_MSGS 7
#define BOB_MSGS 70
/*
 * Not the 1001 it takes to overflow the session's MAX_TARGETS: under the
 * sanitizers each such RCPT costs about 60 ms (quadratic deduplication), and
 * repeated RCPTs would time out.
 */
#define WIDE_TARGETS 40
#define DEEP_LEVELS 12      /* deeper than the session's alias depth */

struct mc_store {
	char err[128];
};

struct mc_body_writer {
	uint64_t size;
	int prev;               /* last octet written, -1 before the first */
	unsigned bare_lf, bare_cr, nul;
};

struct mc_body_reader {
	const char *p;
	size_t left;
};

struct fake_user {
	const char *address, *password;
	int disabled;
};

static const char *const domains[] = { "example.test", "local.example", "b\303\274cher.example" };

static const struct fake_user users[] = {
	{ "alice@example.test", "secret", 0 },
	{ "bob@example.test", "hunter2", 0 },
	{ "disabled@example.test", "secret", 1 },
	{ "\"john doe\"@example.test", "secret", 0 },
	{ "j\303\266rg@b\303\274cher.example", "secret", 0 },
};

static const char *const list_targets[] = { "alice@example.test", "bob@example.test",
	"friend@remote.example", NULL };
static const char *const sales_targets[] = { "alice@example.test", NULL };
static const char *const loop_targets[] = { "loop@example.test", "alice@example.test", NULL };
static const char *const broken_targets[] = { "nobody@example.test", "disabled@example.test", NULL };

static const struct {
	const char *address;
	const char *const *targets;
} aliases[] = {
	{ "list@example.test", list_targets },
	{ "sales@example.test", sales_targets },
	{ "loop@example.test", loop_targets },
	{ "broken@example.test", broken_targets },
};

/* Alice's maildrop: the cases RETR and TOP must get right. */
static const char *const alice_msgs[ALICE_MSGS] = {
	"Subject: one\r\nFrom: bob@example.test\r\n\r\nHello\r\n.hidden dot\r\n..two dots\r\n.\r\nend\r\n",
	"Subject: header only\r\nX-Empty:\r\n",
	"Subject: no final line end\r\n\r\nline one\r\nline two",
	"Subject: bare LF\n\nbody\n.\nend\n",
	"",
	"\r\n\r\n.\r\n\r\n",
	NULL,   /* the long one, made at first use */
};

#define MAX_BODIES 4096     /* bodies tracked per session */

/* A completed body: delivered (mailboxes or queue) and not taken back. */
struct body_state {
	int delivered, dropped;
};

static struct {
	struct fake_store_stats stats;
	struct body_state bodies[MAX_BODIES];
	unsigned long fail_at;   /* 1-based call that fails; 0: none */
	int fail_all;
	int locked_elsewhere;
	size_t chunk;
	unsigned long next_id, next_queued;
} fk;

void
fake_store_setup(const struct fuzz_opts *o)
{
	memset(&fk, 0, sizeof(fk));
	fk.fail_all = o->on['f'] && o->num['f'] == 0;
	fk.fail_at = o->on['f'] ? o->num['f'] : 0;
	fk.locked_elsewhere = o->on['l'];
	fk.chunk = o->on['k'] && o->num['k'] > 0 ? o->num['k'] : 16384;
}

const struct fake_store_stats *
fake_store_stats(void)
{
	return &fk.stats;
}

/* Every store operation: 1 if this one is to fail. */
static int
failing(struct mc_store *st)
{
	fk.stats.calls++;
	if (fk.fail_all || fk.stats.calls == fk.fail_at) {
		fk.stats.failures++;
		if (st != NULL)
			snprintf(st->err, sizeof(st->err), "fake store: injected failure");
		return 1;
	}
	return 0;
}

static const char *
long_message(void)
{
	static char *msg;

	if (msg == NULL && (msg = malloc(40000)) != NULL) {
		size_t n = (size_t)snprintf(msg, 100, "Subject: long\r\n\r\n");
		memset(msg + n, 'x', 20000);
		n += 20000;
		memcpy(msg + n, "\r\n.", 3);
		n += 3;
		memset(msg + n, '.', 10000);
		n += 10000;
		memcpy(msg + n, "\r\n", 3);
	}
	return msg ? msg : "";
}

struct mc_store *
mc_store_new(const struct mc_config *cfg)
{
	(void)cfg;
	return calloc(1, sizeof(struct mc_store));
}

void
mc_store_free(struct mc_store *st)
{
	free(st);
}

const char *
mc_store_error(const struct mc_store *st)
{
	return st->err;
}

/* ---- domains, users, aliases ---- */

enum mc_store_status
mc_store_domain_exists(struct mc_store *st, const char *domain)
{
	if (failing(st))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++)
		if (strcmp(domains[i], domain) == 0)
			return MC_STORE_OK;
	return MC_STORE_NOTFOUND;
}

enum mc_store_status
mc_store_domain_list(struct mc_store *st, void (*cb)(void *ctx, const char *domain), void *ctx)
{
	if (failing(st))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++)
		cb(ctx, domains[i]);
	return MC_STORE_OK;
}

static void
fill_user(const struct fake_user *f, struct mc_user *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->address, sizeof(out->address), "%s", f->address);
	snprintf(out->name, sizeof(out->name), "%s", f->disabled ? "" : "A User");
	snprintf(out->password, sizeof(out->password), "fake:%s", f->password);
	out->disabled = f->disabled;
}

enum mc_store_status
mc_store_user_get(struct mc_store *st, const char *address, struct mc_user *out)
{
	if (failing(st))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		if (strcmp(users[i].address, address) == 0) {
			fill_user(&users[i], out);
			return MC_STORE_OK;
		}
	}
	return MC_STORE_NOTFOUND;
}

enum mc_store_status
mc_store_domain_first_user(struct mc_store *st, const char *domain, struct mc_user *out)
{
	if (failing(st))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
		const char *at = strrchr(users[i].address, '@');
		if (strcmp(at + 1, domain) == 0) {
			fill_user(&users[i], out);
			return MC_STORE_OK;
		}
	}
	return MC_STORE_NOTFOUND;
}

enum mc_store_status
mc_store_alias_get(struct mc_store *st, const char *address,
    void (*cb)(void *ctx, const char *target), void *ctx)
{
	char t[64];
	int n;

	if (failing(st))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++) {
		if (strcmp(aliases[i].address, address) != 0)
			continue;
		for (const char *const *p = aliases[i].targets; *p != NULL; p++)
			cb(ctx, *p);
		return MC_STORE_OK;
	}
	if (strcmp(address, "wide@example.test") == 0) {
		for (int i = 0; i < WIDE_TARGETS; i++) {
			snprintf(t, sizeof(t), "u%d@remote.example", i);
			cb(ctx, t);
		}
		return MC_STORE_OK;
	}
	if (sscanf(address, "deep%d@example.test", &n) == 1 && n >= 0 && n <= DEEP_LEVELS) {
		if (n == DEEP_LEVELS)
			snprintf(t, sizeof(t), "alice@example.test");
		else
			snprintf(t, sizeof(t), "deep%d@example.test", n + 1);
		cb(ctx, t);
		return MC_STORE_OK;
	}
	return MC_STORE_NOTFOUND;
}

/* Users' "hashes" are "fake:" and the password: no yescrypt work per try. */
int
mc_password_verify(const char *password, const char *hash)
{
	return hash != NULL && strncmp(hash, "fake:", 5) == 0 && strcmp(hash + 5, password) == 0;
}

/* ---- bodies ---- */

enum mc_store_status
mc_store_body_begin(struct mc_store *st, struct mc_body_writer **out)
{
	struct mc_body_writer *w;

	*out = NULL;
	if (failing(st))
		return MC_STORE_TEMP;
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return MC_STORE_ERROR;
	w->prev = -1;
	fk.stats.open_writers++;
	*out = w;
	return MC_STORE_OK;
}

enum mc_store_status
mc_store_body_write(struct mc_body_writer *w, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	if (failing(NULL))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < len; i++) {
		if (w->prev == '\r' && p[i] != '\n')
			w->bare_cr++;
		if (p[i] == '\n' && w->prev != '\r')
			w->bare_lf++;
		if (p[i] == '\0')
			w->nul++;
		w->prev = p[i];
	}
	w->size += len;
	return MC_STORE_OK;
}

static void
writer_done(struct mc_body_writer *w)
{
	fk.stats.open_writers--;
	free(w);
}

enum mc_store_status
mc_store_body_finish(struct mc_body_writer *w, char *body_id)
{
	if (failing(NULL)) {
		writer_done(w);
		return MC_STORE_TEMP;
	}
	if (w->prev == '\r')
		w->bare_cr++;
	fk.stats.finished++;
	if (w->size > fk.stats.largest)
		fk.stats.largest = w->size;
	fk.stats.bare_lf += w->bare_lf;
	fk.stats.bare_cr += w->bare_cr;
	fk.stats.nul += w->nul;
	snprintf(body_id, MC_ID_LEN + 1, "b%023lx", ++fk.next_id);
	writer_done(w);
	return MC_STORE_OK;
}

void
mc_store_body_abort(struct mc_body_writer *w)
{
	if (w != NULL)
		writer_done(w);
}

uint64_t
mc_store_body_size(const struct mc_body_writer *w)
{
	return w->size;
}

/* The state of a body this store made ("b" and its number), or NULL. */
static struct body_state *
body_state(const char *body_id)
{
	unsigned long n;

	if (body_id[0] != 'b' || sscanf(body_id + 1, "%lx", &n) != 1 || n == 0 ||
	    n > fk.next_id)
		fuzz_fail("a body id this store never gave", body_id, strlen(body_id));
	return n <= MAX_BODIES ? &fk.bodies[n - 1] : NULL;
}

static void
body_delivered(const char *body_id)
{
	struct body_state *b = body_state(body_id);

	if (b != NULL && !b->delivered && !b->dropped) {
		b->delivered = 1;
		fk.stats.kept++;
	}
}

/* Whatever the outcome, a removed or undelivered body counts as not kept. */
static void
body_dropped(const char *body_id)
{
	struct body_state *b = body_state(body_id);

	if (b != NULL && !b->dropped) {
		if (b->delivered)
			fk.stats.kept--;
		b->dropped = 1;
	}
}

enum mc_store_status
mc_store_body_delete(struct mc_store *st, const char *body_id)
{
	body_dropped(body_id);
	return failing(st) ? MC_STORE_TEMP : MC_STORE_OK;
}

enum mc_store_status
mc_store_deliver(struct mc_store *st, const char *body_id, uint64_t size,
    const char *const *mailboxes, size_t n, const struct mc_message_meta *meta)
{
	(void)size;
	(void)meta;
	if (strlen(body_id) != MC_ID_LEN || n == 0)
		fuzz_fail("deliver without a body or mailboxes", body_id, strlen(body_id));
	for (size_t i = 0; i < n; i++)
		if (mailboxes[i] == NULL || mailboxes[i][0] == '\0')
			fuzz_fail("deliver to an empty mailbox name", "", 0);
	if (failing(st))
		return MC_STORE_TEMP;
	body_delivered(body_id);
	return MC_STORE_OK;
}

enum mc_store_status
mc_store_undeliver(struct mc_store *st, const char *body_id)
{
	body_dropped(body_id);
	return failing(st) ? MC_STORE_TEMP : MC_STORE_OK;
}

/* 1 if address is the target of one of the aliases above. */
static int
alias_target(const char *address)
{
	int n;
	char end;

	for (size_t i = 0; i < sizeof(aliases) / sizeof(aliases[0]); i++)
		for (const char *const *p = aliases[i].targets; *p != NULL; p++)
			if (strcmp(*p, address) == 0)
				return 1;
	return sscanf(address, "u%d@remote.example%c", &n, &end) == 1 && n >= 0 &&
	    n < WIDE_TARGETS;
}

enum mc_store_status
mc_store_outbound_add(struct mc_store *st, const struct mc_outbound_new *q, char *id)
{
	if (q->nrcpts == 0 || strlen(q->body_id) != MC_ID_LEN)
		fuzz_fail("outbound item without recipients or body", q->body_id, strlen(q->body_id));
	if (failing(st))
		return MC_STORE_TEMP;
	for (size_t i = 0; i < q->nrcpts; i++)
		if (!alias_target(q->rcpts[i]))
			fk.stats.direct_remote++;
	body_delivered(q->body_id);
	snprintf(id, MC_ID_LEN + 1, "q%023lx", ++fk.next_queued);
	return MC_STORE_OK;
}

enum mc_store_status
mc_store_dmarc_add(struct mc_store *st, const struct mc_dmarc_record *r)
{
	(void)r;
	return failing(st) ? MC_STORE_TEMP : MC_STORE_OK;
}

/* ---- mailboxes (POP3) ---- */

static const char *
message_text(const char *id)
{
	unsigned long n;

	if (strlen(id) != MC_ID_LEN || sscanf(id + 1, "%lx", &n) != 1)
		return NULL;
	if (id[0] == 'a' && n >= 1 && n <= ALICE_MSGS)
		return n == ALICE_MSGS ? long_message() : alice_msgs[n - 1];
	if (id[0] == 'c' && n >= 1 && n <= BOB_MSGS)
		return "Subject: small\r\n\r\nsmall message\r\n";
	return NULL;
}

enum mc_store_status
mc_store_mailbox_list(struct mc_store *st, const char *mailbox,
    void (*cb)(void *ctx, const struct mc_message_info *m), void *ctx)
{
	struct mc_message_info mi;
	char prefix = 0;
	unsigned long count = 0;

	if (failing(st))
		return MC_STORE_TEMP;
	if (strcmp(mailbox, "alice@example.test") == 0)
		prefix = 'a', count = ALICE_MSGS;
	else if (strcmp(mailbox, "bob@example.test") == 0)
		prefix = 'c', count = BOB_MSGS;
	for (unsigned long i = 1; i <= count; i++) {
		memset(&mi, 0, sizeof(mi));
		snprintf(mi.id, sizeof(mi.id), "%c%023lx", prefix, i);
		if (i != 2)   /* one without a UIDL: the id stands in */
			snprintf(mi.uidl, sizeof(mi.uidl), "u%c%022lx", prefix, i);
		snprintf(mi.body, sizeof(mi.body), "%s", mi.id);
		mi.size = strlen(message_text(mi.id));
		mi.received = 1700000000;
		snprintf(mi.sender, sizeof(mi.sender), "sender@remote.example");
		cb(ctx, &mi);
	}
	return MC_STORE_OK;
}

enum mc_store_status
mc_store_messages_delete(struct mc_store *st, const char *mailbox,
    const char *const *ids, size_t n)
{
	(void)mailbox;
	for (size_t i = 0; i < n; i++)
		if (message_text(ids[i]) == NULL)
			fuzz_fail("deleting a message that was never listed", ids[i], strlen(ids[i]));
	return failing(st) ? MC_STORE_TEMP : MC_STORE_OK;
}

enum mc_store_status
mc_store_message_open(struct mc_store *st, const char *message_id, struct mc_body_reader **out)
{
	const char *text = message_text(message_id);
	struct mc_body_reader *r;

	*out = NULL;
	if (failing(st))
		return MC_STORE_TEMP;
	if (text == NULL)
		fuzz_fail("opening a message that was never listed", message_id, strlen(message_id));
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return MC_STORE_ERROR;
	r->p = text;
	r->left = strlen(text);
	fk.stats.open_readers++;
	*out = r;
	return MC_STORE_OK;
}

/* The listing gives each entry its own id as body id and no head. */
enum mc_store_status
mc_store_entry_open(struct mc_store *st, const char *body_id, const char *head, uint64_t size,
    struct mc_body_reader **out)
{
	const char *text = message_text(body_id);

	if (head != NULL || (text != NULL && size != strlen(text)))
		fuzz_fail("opening an entry not as it was listed", body_id, strlen(body_id));
	return mc_store_message_open(st, body_id, out);
}

enum mc_store_status
mc_store_body_read(struct mc_body_reader *r, void *buf, size_t len, size_t *got)
{
	size_t n = r->left < len ? r->left : len;

	*got = 0;
	if (failing(NULL))
		return MC_STORE_TEMP;
	if (n > fk.chunk)
		n = fk.chunk;
	memcpy(buf, r->p, n);
	r->p += n;
	r->left -= n;
	*got = n;
	return MC_STORE_OK;
}

void
mc_store_body_close(struct mc_body_reader *r)
{
	if (r == NULL)
		return;
	fk.stats.open_readers--;
	free(r);
}

/* ---- locks ---- */

enum mc_store_status
mc_store_lock_take(struct mc_store *st, const char *name, const char *holder, unsigned ttl)
{
	(void)name;
	(void)holder;
	(void)ttl;
	if (failing(st))
		return MC_STORE_TEMP;
	if (fk.locked_elsewhere || fk.stats.lock_held)
		return MC_STORE_EXISTS;
	fk.stats.lock_held = 1;
	return MC_STORE_OK;
}

enum mc_store_status
mc_store_lock_renew(struct mc_store *st, const char *name, const char *holder, unsigned ttl)
{
	(void)name;
	(void)holder;
	(void)ttl;
	return failing(st) ? MC_STORE_TEMP : MC_STORE_OK;
}

enum mc_store_status
mc_store_lock_release(struct mc_store *st, const char *name, const char *holder)
{
	(void)name;
	(void)holder;
	if (failing(st))
		return MC_STORE_TEMP;
	fk.stats.lock_held = 0;
	return MC_STORE_OK;
}
