/*
 * mailcell.c - the operator tool: domains, users, aliases, the outbound queue
 * and mailboxes in the store (DKIM keys and DMARC reports: dkim.c,
 * dmarc_report.c). Listings print one item per line, id or name first,
 * tab-separated; errors are one line on stderr and a non-zero exit.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "address.h"
#include "admin.h"
#include "config.h"
#include "log.h"
#include "password.h"
#include "store.h"
#include "store_relay.h"

static const char usage_text[] =
    "usage: mailcell [-c FILE] COMMAND\n"
    "  db init                            (create the indexes; after upgrades)\n"
    "  db gc [--older-than AGE]           (AGE: N, Ns, Nm, Nh or Nd; default 1d, at least 10m)\n"
    "  domain add DOMAIN | domain list | domain remove DOMAIN\n"
    "  user add ADDRESS [--name NAME]     (password on stdin)\n"
    "  user passwd ADDRESS                (password on stdin)\n"
    "  user list | user remove ADDRESS | user disable ADDRESS | user enable ADDRESS\n"
    "  alias add ADDRESS TARGET... | alias list | alias remove ADDRESS\n"
    "  queue list | queue show ID [--json] | queue retry|hold|release|delete ID\n"
    "  mailbox list ADDRESS\n"
    "  dkim keygen DOMAIN SELECTOR [--bits N] | dkim list\n"
    "  dmarc report DOMAIN --since DATE [--until DATE]\n"
    "      (DATE: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or @EPOCHSECONDS, UTC)\n";

int
usage(void)
{
	fputs(usage_text, stderr);
	return EXIT_USAGE;
}

/* One line on stderr; returns the exit status 1. */
int
fail(const char *fmt, ...)
{
	va_list ap;

	fputs("mailcell: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Report a store status; returns the exit code. */
int
result(struct ctx *c, enum mc_store_status s)
{
	if (s == MC_STORE_OK)
		return 0;
	fprintf(stderr, "mailcell: %s\n", mc_store_error(c->st));
	return s == MC_STORE_TEMP ? EXIT_TEMP : 1;
}

/* Canonical key of an address given on the command line. */
static int
address_key(const char *arg, char *key, size_t keylen)
{
	struct mc_address a;
	enum mc_addr_status s = mc_addr_parse_mailbox(arg, MC_ADDR_ALLOW_UTF8, &a);

	if (s != MC_ADDR_OK || a.domain[0] == '\0' || a.is_literal) {
		fprintf(stderr, "mailcell: '%s' is not a valid address: %s\n", arg,
		    s != MC_ADDR_OK ? mc_addr_strerror(s) : "a local address needs a domain name");
		return -1;
	}
	if (mc_addr_key(&a, key, keylen) != 0) {
		fprintf(stderr, "mailcell: '%s' is too long\n", arg);
		return -1;
	}
	return 0;
}

/* Read the new password from stdin (prompting without echo on a terminal). */
static int
read_password(char *out, size_t outlen)
{
	struct termios old, quiet;
	int tty = isatty(0) && tcgetattr(0, &old) == 0;
	int r;

	if (tty) {
		fputs("Password: ", stderr);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(0, TCSAFLUSH, &quiet);
	}
	r = mc_password_read(0, out, outlen);
	if (tty) {
		tcsetattr(0, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (r != 0)
		return fail("%s", "cannot read the password from stdin (too long?)");
	if (out[0] == '\0')
		return fail("%s", "empty password refused");
	return 0;
}

static int
hash_from_stdin(char *hash, size_t hashlen)
{
	char pw[MC_PASSWORD_MAX + 2];
	int r = read_password(pw, sizeof(pw));

	if (r == 0 && mc_password_hash(pw, hash, hashlen) != 0)
		r = fail("%s", "cannot hash the password");
	explicit_bzero(pw, sizeof(pw));
	return r;
}

/* ---- db ---- */

static void
print_index(void *ctx, const char *coll, const char *name)
{
	(void)ctx;
	printf("%s\t%s\n", coll, name);
}

/* "90", "90s", "15m", "2h" or "7d" into seconds; -1 if malformed. */
static long
parse_age(const char *v)
{
	static const char units[] = "smhd";
	static const long mult[] = { 1, 60, 3600, 86400 };
	char *end;
	long n;

	if (*v < '0' || *v > '9')
		return -1;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || n > 100000000L)
		return -1;
	if (*end == '\0')
		return n;
	if (end[1] != '\0' || strchr(units, *end) == NULL)
		return -1;
	return n * mult[strchr(units, *end) - units];
}

static int
db_gc(struct ctx *c, int argc, char **argv)
{
	struct mc_gc_counts n;
	enum mc_store_status s;
	long age = 86400;

	if (argc == 3 && strcmp(argv[1], "--older-than") == 0)
		age = parse_age(argv[2]);
	else if (argc != 1)
		return usage();
	if (age < 600)
		return fail("--older-than '%s': expected an age of at least 10m (600 seconds)",
		    argv[2]);
	if ((s = mc_store_gc(c->st, (unsigned)age, &n)) != MC_STORE_OK)
		return result(c, s);
	printf("unfinished\t%zu\nunreferenced\t%zu\n", n.unfinished, n.unreferenced);
	return 0;
}

static int
cmd_db(struct ctx *c, int argc, char **argv)
{
	if (argc == 1 && strcmp(argv[0], "init") == 0)
		return result(c, mc_store_init_indexes(c->st, print_index, NULL));
	if (argc >= 1 && strcmp(argv[0], "gc") == 0)
		return db_gc(c, argc, argv);
	return usage();
}

/* ---- domain ---- */

static void
print_line(void *ctx, const char *s)
{
	(void)ctx;
	printf("%s\n", s);
}

static int
cmd_domain(struct ctx *c, int argc, char **argv)
{
	char d[300];
	enum mc_store_status s;

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return result(c, mc_store_domain_list(c->st, print_line, NULL));
	if (argc != 2 || (strcmp(argv[0], "add") != 0 && strcmp(argv[0], "remove") != 0))
		return usage();
	if (strlen(argv[1]) >= sizeof(d))
		return fail("'%s' is not a valid domain name", argv[1]);
	snprintf(d, sizeof(d), "%s", argv[1]);
	if (!mc_addr_valid_domain(d, 1))
		return fail("'%s' is not a valid domain name", argv[1]);
	if (strcmp(argv[0], "add") != 0)
		return result(c, mc_store_domain_remove(c->st, d));
	/* The first step of every set-up: make sure the indexes exist too. */
	if ((s = mc_store_init_indexes(c->st, NULL, NULL)) != MC_STORE_OK)
		return result(c, s);
	return result(c, mc_store_domain_add(c->st, d));
}

/* ---- user ---- */

static void
print_user(void *ctx, const struct mc_user *u)
{
	(void)ctx;
	printf("%s\t%s\t%s\n", u->address, u->disabled ? "disabled" : "enabled", u->name);
}

static int
user_add(struct ctx *c, int argc, char **argv)
{
	char key[600], hash[MC_HASH_MAX];
	const char *name = "";
	enum mc_store_status s;

	if (argc == 4 && strcmp(argv[2], "--name") == 0)
		name = argv[3];
	else if (argc != 2)
		return usage();
	if (address_key(argv[1], key, sizeof(key)) != 0)
		return 1;
	/* Check before asking for the password, so mistakes show at once. */
	if ((s = mc_store_domain_exists(c->st, strrchr(key, '@') + 1)) == MC_STORE_NOTFOUND)
		return fail("%s: the domain is not a local domain (mailcell domain add)", key);
	if (s != MC_STORE_OK)
		return result(c, s);
	if (hash_from_stdin(hash, sizeof(hash)) != 0)
		return 1;
	return result(c, mc_store_user_add(c->st, key, name, hash));
}

static int
one_of(const char *word, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(word, *list) == 0)
			return 1;
	return 0;
}

static int
cmd_user(struct ctx *c, int argc, char **argv)
{
	static const char *const user_verbs[] = { "passwd", "remove", "disable", "enable", NULL };
	char key[600], hash[MC_HASH_MAX];

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return result(c, mc_store_user_list(c->st, print_user, NULL));
	if (argc >= 2 && strcmp(argv[0], "add") == 0)
		return user_add(c, argc, argv);
	if (argc != 2 || !one_of(argv[0], user_verbs))
		return usage();
	if (address_key(argv[1], key, sizeof(key)) != 0)
		return 1;
	if (strcmp(argv[0], "passwd") == 0) {
		struct mc_user u;
		enum mc_store_status s = mc_store_user_get(c->st, key, &u);
		if (s != MC_STORE_OK)
			return result(c, s);
		if (hash_from_stdin(hash, sizeof(hash)) != 0)
			return 1;
		return result(c, mc_store_user_passwd(c->st, key, hash));
	}
	if (strcmp(argv[0], "remove") == 0)
		return result(c, mc_store_user_remove(c->st, key));
	if (strcmp(argv[0], "disable") == 0 || strcmp(argv[0], "enable") == 0)
		return result(c, mc_store_user_set_disabled(c->st, key,
		    strcmp(argv[0], "disable") == 0));
	return usage();
}

/* ---- alias ---- */

static void
print_alias(void *ctx, const char *address, const char *targets)
{
	(void)ctx;
	printf("%s\t%s\n", address, targets);
}

static int
alias_add(struct ctx *c, int argc, char **argv)
{
	char key[600];
	char (*targets)[600];
	const char **tp;
	int n = argc - 2, r = 1;

	if (n < 1 || n > 1000)
		return usage();
	if (address_key(argv[1], key, sizeof(key)) != 0)
		return 1;
	targets = calloc((size_t)n, sizeof(*targets));
	tp = calloc((size_t)n, sizeof(*tp));
	if (targets == NULL || tp == NULL)
		goto out;
	for (int i = 0; i < n; i++) {
		if (address_key(argv[2 + i], targets[i], sizeof(targets[i])) != 0)
			goto out;
		tp[i] = targets[i];
	}
	r = result(c, mc_store_alias_add(c->st, key, tp, (size_t)n));
out:
	free(targets);
	free(tp);
	return r;
}

static int
cmd_alias(struct ctx *c, int argc, char **argv)
{
	char key[600];

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return result(c, mc_store_alias_list(c->st, print_alias, NULL));
	if (argc >= 1 && strcmp(argv[0], "add") == 0)
		return alias_add(c, argc, argv);
	if (argc != 2 || strcmp(argv[0], "remove") != 0)
		return usage();
	if (address_key(argv[1], key, sizeof(key)) != 0)
		return 1;
	return result(c, mc_store_alias_remove(c->st, key));
}

/* ---- queue ---- */

const char *
iso_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t == 0 || gmtime_r(&t, &tm) == NULL)
		return "-";
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static void
print_item(void *ctx, const struct mc_outbound_info *o)
{
	char t[32];

	(void)ctx;
	printf("%s\t%s\t%s\t<%s>\t%s\n", o->id, o->state, iso_time(o->next_attempt, t, sizeof(t)),
	    o->sender, o->recipients);
}

static int
show_json(struct ctx *c, const char *id)
{
	char *json;
	enum mc_store_status s = mc_store_outbound_json(c->st, id, &json);

	if (s == MC_STORE_OK)
		printf("%s\n", json);
	free(json);
	return result(c, s);
}

/* One log entry: its time, what we sent, what the server answered. */
static void
print_log(void *ctx, const struct mc_item_log *e)
{
	char t[32], ms[8];

	(void)ctx;
	snprintf(ms, sizeof(ms), ".%03d", (int)(e->time_ms % 1000));
	iso_time((time_t)(e->time_ms / 1000), t, sizeof(t));
	if (strlen(t) == 20)   /* ...SSZ: put the milliseconds before the Z */
		snprintf(t + 19, sizeof(t) - 19, "%sZ", ms);
	if (e->command[0] != '\0')
		printf("  %s  > %s\n", t, e->command);
	for (const char *r = e->reply, *nl; *r != '\0'; r = nl ? nl + 1 : r + strlen(r)) {
		nl = strchr(r, '\n');
		printf("  %s  < %.*s\n", e->command[0] ? "                        " : t,
		    (int)(nl ? nl - r : (ptrdiff_t)strlen(r)), r);
		if (nl == NULL)
			break;
	}
}

/* `queue show ID`: the item, each recipient's state, and every attempt's log. */
static int
show_item(struct ctx *c, const char *id)
{
	struct mc_outbound_info o;
	struct mc_item it;
	char t[32];
	enum mc_store_status s = mc_store_outbound_get(c->st, id, &o);

	if (s != MC_STORE_OK || (s = mc_store_item_load(c->st, id, &it)) != MC_STORE_OK)
		return result(c, s);
	printf("id: %s\nstate: %s\nsender: <%s>\n", o.id, o.state, o.sender);
	printf("created: %s\n", iso_time(o.created, t, sizeof(t)));
	printf("next attempt: %s\nattempts: %d\nsize: %llu\nbody: %s\n",
	    iso_time(o.next_attempt, t, sizeof(t)), o.attempts, (unsigned long long)it.size,
	    it.body_type);
	printf("recipients:\n");
	for (size_t i = 0; i < it.nrcpts; i++)
		printf("  <%s>\t%s\t%s\t%s%s%s\n", it.rcpts[i].address, it.rcpts[i].state,
		    it.rcpts[i].status[0] ? it.rcpts[i].status : "-", it.rcpts[i].reply,
		    it.rcpts[i].remote_mta[0] ? "\tvia " : "", it.rcpts[i].remote_mta);
	mc_item_free(&it);
	printf("log:\n");
	return result(c, mc_store_item_log_list(c->st, id, print_log, NULL));
}

static int
cmd_queue(struct ctx *c, int argc, char **argv)
{
	static const struct {
		const char *name;
		enum mc_store_status (*fn)(struct mc_store *, const char *);
	} acts[] = {
		{ "retry", mc_store_outbound_retry }, { "hold", mc_store_outbound_hold },
		{ "release", mc_store_outbound_release }, { "delete", mc_store_outbound_delete },
	};

	if (argc == 1 && strcmp(argv[0], "list") == 0)
		return result(c, mc_store_outbound_list(c->st, print_item, NULL));
	if (argc == 3 && strcmp(argv[0], "show") == 0 && strcmp(argv[2], "--json") == 0)
		return show_json(c, argv[1]);
	if (argc != 2)
		return usage();
	if (strcmp(argv[0], "show") == 0)
		return show_item(c, argv[1]);
	for (size_t i = 0; i < sizeof(acts) / sizeof(acts[0]); i++)
		if (strcmp(argv[0], acts[i].name) == 0)
			return result(c, acts[i].fn(c->st, argv[1]));
	return usage();
}

/* ---- mailbox ---- */

static void
print_message(void *ctx, const struct mc_message_info *m)
{
	char t[32];

	(void)ctx;
	printf("%s\t%llu\t%s\t<%s>%s\n", m->id, (unsigned long long)m->size,
	    iso_time(m->received, t, sizeof(t)), m->sender, m->quarantined ? "\tquarantined" : "");
}

static int
cmd_mailbox(struct ctx *c, int argc, char **argv)
{
	char key[600];
	struct mc_user u;
	enum mc_store_status s;

	if (argc != 2 || strcmp(argv[0], "list") != 0)
		return usage();
	if (address_key(argv[1], key, sizeof(key)) != 0)
		return 1;
	if ((s = mc_store_user_get(c->st, key, &u)) != MC_STORE_OK)
		return result(c, s);
	return result(c, mc_store_mailbox_list(c->st, key, print_message, NULL));
}

int
main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(struct ctx *, int, char **);
	} cmds[] = {
		{ "db", cmd_db }, { "domain", cmd_domain }, { "user", cmd_user }, { "alias", cmd_alias },
		{ "queue", cmd_queue }, { "mailbox", cmd_mailbox }, { "dkim", cmd_dkim },
		{ "dmarc", cmd_dmarc },
	};
	const char *cfgpath = NULL;
	struct mc_config cfg;
	struct ctx c;
	char err[512];
	int r = -1;

	if (argc >= 3 && strcmp(argv[1], "-c") == 0) {
		cfgpath = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
		return argc < 2 ? usage() : (fputs(usage_text, stdout), 0);
	if (mc_config_load(&cfg, cfgpath, err, sizeof(err)) != 0) {
		fprintf(stderr, "mailcell: %s\n", err);
		return 1;
	}
	mc_log_init("mailcell", MC_LOG_STDERR, cfg.log_debug);
	if ((c.st = mc_store_new(&cfg)) == NULL) {
		mc_config_free(&cfg);
		return fail("%s", "out of memory");
	}
	c.cfg = &cfg;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			r = cmds[i].fn(&c, argc - 2, argv + 2);
	if (r < 0)
		r = usage();
	mc_store_free(c.st);
	mc_config_free(&cfg);
	if (fflush(stdout) != 0 && r == 0)
		r = fail("cannot write output: %s", strerror(errno));
	return r;
}
