/*
 * config.c - loads and validates mailcell.conf. A table names every key with
 * its type, default and bounds; parsing is strict so that a typo is an error
 * with file, line and key, never a silently ignored setting.
 */
#include "config.h"
#include "cidr.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum key_type { K_STR, K_BOOL, K_SIZE, K_UINT, K_SECONDS, K_LOGTARGET, K_HOSTPORT, K_WCONCERN,
	K_VRFY, K_CIDRS, K_DURLIST, K_RELAYTLS };

struct key_desc {
	const char *name;
	enum key_type type;
	size_t off;
	const char *def;     /* default, in the same syntax as the file */
	uint64_t min, max;   /* bounds for numeric keys */
	int may_be_empty;    /* for strings */
};

#define OFF(f) offsetof(struct mc_config, f)

static const struct key_desc keys[] = {
	{ "hostname",             K_STR,       OFF(hostname),          NULL, 0, 0, 0 },
	{ "mongodb_uri",          K_STR,       OFF(mongodb_uri),       "mongodb://127.0.0.1:27017", 0, 0, 0 },
	{ "database",             K_STR,       OFF(database),          "mailcell", 0, 0, 0 },
	{ "tls_cert",             K_STR,       OFF(tls_cert),          "/etc/mailcell/tls/cert.pem", 0, 0, 1 },
	{ "tls_key",              K_STR,       OFF(tls_key),           "/etc/mailcell/tls/key.pem", 0, 0, 1 },
	{ "max_message_size",     K_SIZE,      OFF(max_message_size),  "25M", 1024, (uint64_t)1 << 32, 0 },
	{ "max_recipients",       K_UINT,      OFF(max_recipients),    "100", 1, 10000, 0 },
	{ "templates_dir",        K_STR,       OFF(templates_dir),     "/usr/local/share/mailcell/templates", 0, 0, 0 },
	{ "relay_host",           K_HOSTPORT,  OFF(relay_host),        "", 0, 0, 1 },
	{ "allow_plaintext_auth", K_BOOL,      OFF(allow_plaintext_auth), "no", 0, 1, 0 },
	{ "write_concern",        K_WCONCERN,  OFF(write_concern),     "majority", 0, 0, 0 },
	{ "write_journal",        K_BOOL,      OFF(write_journal),     "yes", 0, 1, 0 },
	{ "db_timeout",           K_SECONDS,   OFF(db_timeout_ms),     "5", 1, 300, 0 },
	{ "idle_timeout",         K_SECONDS,   OFF(idle_timeout),      "300", 1, 86400, 0 },
	{ "pop3_idle_timeout",    K_SECONDS,   OFF(pop3_idle_timeout), "600", 1, 86400, 0 },
	{ "max_errors",           K_UINT,      OFF(max_errors),        "20", 1, 1000, 0 },
	{ "max_command_line",     K_UINT,      OFF(max_command_line),  "512", 512, 16384, 0 },
	{ "vrfy_policy",          K_VRFY,      OFF(vrfy_policy),       "auth", 0, 0, 0 },
	{ "postmaster",           K_STR,       OFF(postmaster),        "", 0, 0, 1 },
	{ "log_target",           K_LOGTARGET, OFF(log_target),        "auto", 0, 0, 0 },
	{ "log_debug",            K_BOOL,      OFF(log_debug),         "no", 0, 1, 0 },
	{ "inbound_checks",       K_BOOL,      OFF(inbound_checks),    "yes", 0, 1, 0 },
	{ "trusted_networks",     K_CIDRS,       OFF(trusted_networks),  "127.0.0.0/8 ::1", 0, 0, 1 },
	{ "spf_fail_reject",      K_BOOL,      OFF(spf_fail_reject),   "no", 0, 1, 0 },
	{ "dmarc_temperror_defer", K_BOOL,     OFF(dmarc_temperror_defer), "no", 0, 1, 0 },
	{ "dns_timeout",          K_SECONDS,   OFF(dns_timeout),       "5", 1, 60, 0 },
	{ "retry_schedule",       K_DURLIST,   OFF(retry_schedule),    "5m 10m 20m 40m 80m 2h 4h", 0, 0, 0 },
	{ "queue_lifetime",       K_SECONDS,   OFF(queue_lifetime),    "5d", 60, 60 * 86400, 0 },
	{ "delay_warning",        K_SECONDS,   OFF(delay_warning),     "4h", 0, 60 * 86400, 0 },
	{ "claim_lease",          K_SECONDS,   OFF(claim_lease),       "15m", 5, 86400, 0 },
	{ "relay_timeout",        K_SECONDS,   OFF(relay_timeout),     "5m", 1, 3600, 0 },
	{ "relay_tls",            K_RELAYTLS,  OFF(relay_tls),         "opportunistic", 0, 0, 0 },
	{ "relay_ca_file",        K_STR,       OFF(relay_ca_file),     "", 0, 0, 1 },
	{ "relay_port",           K_UINT,      OFF(relay_port),        "25", 1, 65535, 0 },
	{ "relay_trigger",        K_STR,       OFF(relay_trigger),     "/run/mailcell/relay.trigger", 0, 0, 1 },
	{ "dkim_sign",            K_BOOL,      OFF(dkim_sign),         "yes", 0, 1, 0 },
	{ "queue_keep_done",      K_SECONDS,   OFF(queue_keep_done),   "7d", 1, 366 * 86400, 0 },
	{ "relay_concurrency",    K_UINT,      OFF(relay_concurrency), "10", 1, 100, 0 },
	{ "public_suffix_list",   K_STR,       OFF(public_suffix_list), "/usr/share/publicsuffix/public_suffix_list.dat", 0, 0, 0 },
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static const struct key_desc *
find_key(const char *name)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* Parse a non-negative decimal with an optional unit suffix table. */
static int
parse_number(const char *v, const char *units, const uint64_t *mult, uint64_t *out)
{
	char *end;
	unsigned long long n;
	uint64_t m = 1;

	if (!isdigit((unsigned char)v[0]))
		return -1;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0)
		return -1;
	if (*end != '\0') {
		const char *u = units ? strchr(units, toupper((unsigned char)*end)) : NULL;
		if (u == NULL || end[1] != '\0')
			return -1;
		m = mult[u - units];
	}
	if (m != 0 && n > UINT64_MAX / m)
		return -1;
	*out = (uint64_t)n * m;
	return 0;
}

static int
parse_bool(const char *v, int *out)
{
	static const char *yes[] = { "yes", "true", "on", "1" };
	static const char *no[] = { "no", "false", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) { *out = 1; return 0; }
		if (strcasecmp(v, no[i]) == 0) { *out = 0; return 0; }
	}
	return -1;
}

/* relay_host: empty, "host", "host:port", "[host]:port" or "[host]". */
static int
valid_hostport(const char *v)
{
	const char *host = v, *port = NULL;
	size_t hlen;

	if (*v == '\0')
		return 1;
	if (*v == '[') {
		const char *close = strchr(v, ']');
		if (close == NULL || close == v + 1)
			return 0;
		host = v + 1;
		hlen = (size_t)(close - host);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0')
			return 0;
	} else {
		const char *colon = strrchr(v, ':');
		hlen = colon ? (size_t)(colon - v) : strlen(v);
		port = colon ? colon + 1 : NULL;
	}
	if (hlen == 0 || hlen > 255)
		return 0;
	for (size_t i = 0; i < hlen; i++)
		if (!isalnum((unsigned char)host[i]) && strchr(".-:", host[i]) == NULL)
			return 0;
	if (port != NULL) {
		uint64_t p;
		if (parse_number(port, NULL, NULL, &p) != 0 || p == 0 || p > 65535)
			return 0;
	}
	return 1;
}

static int
valid_wconcern(const char *v)
{
	uint64_t n;

	if (strcmp(v, "majority") == 0)
		return 1;
	return parse_number(v, NULL, NULL, &n) == 0 && n <= 50;
}

static const char *
type_hint(enum key_type t)
{
	switch (t) {
	case K_BOOL: return "expected yes or no";
	case K_SIZE: return "expected a size such as 25M";
	case K_UINT: return "expected a number";
	case K_SECONDS: return "expected seconds, or a number with s, m, h or d";
	case K_LOGTARGET: return "expected auto, journal or stderr";
	case K_HOSTPORT: return "expected empty, host, host:port or [host]:port";
	case K_WCONCERN: return "expected majority or a number of nodes";
	case K_VRFY: return "expected auth, open or closed";
	case K_CIDRS: return "expected addresses or networks such as 127.0.0.0/8 ::1";
	case K_DURLIST: return "expected 1 to 16 durations such as 5m 10m 1h";
	case K_RELAYTLS: return "expected opportunistic, required or verify";
	case K_STR: break;
	}
	return "must not be empty";
}

static int
set_numeric(struct mc_config *cfg, const struct key_desc *k, const char *v)
{
	static const uint64_t size_mult[] = { 1024, 1024 * 1024, 1024ull * 1024 * 1024 };
	static const uint64_t sec_mult[] = { 1, 60, 3600, 86400 };
	uint64_t n;
	int r;

	if (k->type == K_SIZE)
		r = parse_number(v, "KMG", size_mult, &n);
	else if (k->type == K_SECONDS)
		r = parse_number(v, "SMHD", sec_mult, &n);
	else
		r = parse_number(v, NULL, NULL, &n);
	if (r != 0 || n < k->min || n > k->max)
		return -1;
	if (k->type == K_SIZE)
		*(uint64_t *)((char *)cfg + k->off) = n;
	else if (k->off == OFF(db_timeout_ms))
		*(unsigned *)((char *)cfg + k->off) = (unsigned)n * 1000;
	else
		*(unsigned *)((char *)cfg + k->off) = (unsigned)n;
	return 0;
}

/* "5m 10m 1h": the waits between delivery attempts, the last one repeating. */
static int
set_durlist(struct mc_config *cfg, const char *v)
{
	static const uint64_t sec_mult[] = { 1, 60, 3600, 86400 };
	unsigned n = 0, out[MC_RETRY_MAX];
	char buf[32];

	for (;;) {
		uint64_t d;
		size_t len;

		v += strspn(v, " ,\t");
		if (*v == '\0')
			break;
		len = strcspn(v, " ,\t");
		if (n == MC_RETRY_MAX || len >= sizeof(buf))
			return -1;
		memcpy(buf, v, len);
		buf[len] = '\0';
		if (parse_number(buf, "SMHD", sec_mult, &d) != 0 || d == 0 || d > 30 * 86400)
			return -1;
		out[n++] = (unsigned)d;
		v += len;
	}
	if (n == 0)
		return -1;
	memcpy(cfg->retry_schedule, out, sizeof(out));
	cfg->nretry = n;
	return 0;
}

static int
set_string(struct mc_config *cfg, const struct key_desc *k, const char *v)
{
	char **slot = (char **)((char *)cfg + k->off);
	char *copy;

	if (*v == '\0' && !k->may_be_empty)
		return -1;
	if (k->type == K_HOSTPORT && !valid_hostport(v))
		return -1;
	if (k->type == K_WCONCERN && !valid_wconcern(v))
		return -1;
	if (k->type == K_CIDRS && !mc_cidr_list_valid(v))
		return -1;
	if ((copy = strdup(v)) == NULL)
		return -1;
	free(*slot);
	*slot = copy;
	return 0;
}

/* Apply one value; returns 0, or -1 with a reason in why. */
static int
set_value(struct mc_config *cfg, const struct key_desc *k, const char *v, const char **why)
{
	int b;

	*why = type_hint(k->type);
	switch (k->type) {
	case K_STR:
	case K_HOSTPORT:
	case K_WCONCERN:
	case K_CIDRS:
		return set_string(cfg, k, v);
	case K_BOOL:
		if (parse_bool(v, &b) != 0)
			return -1;
		*(int *)((char *)cfg + k->off) = b;
		return 0;
	case K_DURLIST:
		return set_durlist(cfg, v);
	case K_RELAYTLS:
		if (strcmp(v, "opportunistic") == 0) cfg->relay_tls = MC_RELAY_TLS_OPPORTUNISTIC;
		else if (strcmp(v, "required") == 0) cfg->relay_tls = MC_RELAY_TLS_REQUIRED;
		else if (strcmp(v, "verify") == 0) cfg->relay_tls = MC_RELAY_TLS_VERIFY;
		else return -1;
		return 0;
	case K_VRFY:
		if (strcmp(v, "auth") == 0) cfg->vrfy_policy = MC_VRFY_AUTH;
		else if (strcmp(v, "open") == 0) cfg->vrfy_policy = MC_VRFY_OPEN;
		else if (strcmp(v, "closed") == 0) cfg->vrfy_policy = MC_VRFY_CLOSED;
		else return -1;
		return 0;
	case K_LOGTARGET:
		if (strcmp(v, "auto") == 0) cfg->log_target = MC_LOG_AUTO;
		else if (strcmp(v, "journal") == 0) cfg->log_target = MC_LOG_JOURNAL;
		else if (strcmp(v, "stderr") == 0) cfg->log_target = MC_LOG_STDERR;
		else return -1;
		return 0;
	case K_SIZE:
	case K_UINT:
	case K_SECONDS:
		if (set_numeric(cfg, k, v) == 0)
			return 0;
		if (k->type != K_SIZE) {
			static char range[96];
			snprintf(range, sizeof(range), "%s from %llu to %llu", type_hint(k->type),
			    (unsigned long long)k->min, (unsigned long long)k->max);
			*why = range;
		}
		return -1;
	}
	return -1;
}

void
mc_config_defaults(struct mc_config *cfg)
{
	const char *why;
	char host[256];

	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].def != NULL)
			(void)set_value(cfg, &keys[i], keys[i].def, &why);
	if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	cfg->hostname = strdup(host);
}

void
mc_config_free(struct mc_config *cfg)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (keys[i].type == K_STR || keys[i].type == K_HOSTPORT ||
		    keys[i].type == K_WCONCERN || keys[i].type == K_CIDRS) {
			char **slot = (char **)((char *)cfg + keys[i].off);
			free(*slot);
			*slot = NULL;
		}
	}
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* One line: blank, "# comment" or "key = value". */
static int
parse_line(struct mc_config *cfg, const char *name, unsigned lineno, char *line,
    unsigned char *seen, char *err, size_t errlen)
{
	char *s = trim(line), *eq, *key, *val;
	const struct key_desc *k;
	const char *why;

	if (*s == '\0' || *s == '#')
		return 0;
	if ((eq = strchr(s, '=')) == NULL) {
		seterr(err, errlen, "%s:%u: expected 'key = value'", name, lineno);
		return -1;
	}
	*eq = '\0';
	key = trim(s);
	val = trim(eq + 1);
	if ((k = find_key(key)) == NULL) {
		seterr(err, errlen, "%s:%u: unknown key '%.64s'", name, lineno, key);
		return -1;
	}
	if (seen[k - keys]) {
		seterr(err, errlen, "%s:%u: key '%s' is set twice", name, lineno, key);
		return -1;
	}
	seen[k - keys] = 1;
	if (set_value(cfg, k, val, &why) != 0) {
		seterr(err, errlen, "%s:%u: bad value for key '%s': %s", name, lineno, key, why);
		return -1;
	}
	return 0;
}

int
mc_config_parse(struct mc_config *cfg, const char *name, const char *text, char *err,
    size_t errlen)
{
	unsigned char seen[NKEYS] = { 0 };
	unsigned lineno = 0;
	const char *p = text;

	mc_config_defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s", name);
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		char line[4096];

		lineno++;
		if (n >= sizeof(line)) {
			seterr(err, errlen, "%s:%u: line too long", name, lineno);
			goto fail;
		}
		if (memchr(p, '\0', n) != NULL)
			n = strlen(p);
		memcpy(line, p, n);
		line[n] = '\0';
		if (parse_line(cfg, name, lineno, line, seen, err, errlen) != 0)
			goto fail;
		p += n + (nl != NULL);
	}
	return 0;
fail:
	mc_config_free(cfg);
	return -1;
}

static char *
read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL) {
		seterr(err, errlen, "%s: cannot read configuration: %s", path, strerror(errno));
		return NULL;
	}
	do {
		if (cap - len < 4096) {
			char *nb;
			if (cap > 1 << 20 || (nb = realloc(buf, cap + 8192)) == NULL) {
				seterr(err, errlen, "%s: configuration file too large", path);
				goto fail;
			}
			buf = nb;
			cap += 8192;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	if (ferror(f)) {
		seterr(err, errlen, "%s: cannot read configuration: %s", path, strerror(errno));
		goto fail;
	}
	fclose(f);
	buf[len] = '\0';
	return buf;
fail:
	fclose(f);
	free(buf);
	return NULL;
}

int
mc_config_load(struct mc_config *cfg, const char *path, char *err, size_t errlen)
{
	char *text;
	int r;

	if (path == NULL || *path == '\0')
		path = getenv("MAILCELL_CONFIG");
	if (path == NULL || *path == '\0')
		path = MC_CONFIG_DEFAULT_PATH;
	if ((text = read_file(path, err, errlen)) == NULL)
		return -1;
	r = mc_config_parse(cfg, path, text, err, errlen);
	free(text);
	return r;
}
