/*
 * inbound.c - runs SPF, DKIM and DMARC for one inbound message and turns the
 * results into a verdict and the Authentication-Results (RFC 8601) and
 * Received-SPF (RFC 7208 9.1) headers. Exempt: trusted networks and clients
 * without an address (a local pipe).
 */
#include "inbound.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cidr.h"
#include "headers.h"
#include "log.h"

struct inbound {
	const struct mc_config *cfg;
	char ip[64];
	char helo[256];
	char sender[600];
	struct spf_result spf;
	struct dkimv *dkim;
	int from_count;
	int from_bad;          /* a From without exactly one usable domain */
	char from_domain[256];
};

/* Every resolver the libraries make reads this: a bounded wait per lookup. */
static void
set_dns_timeout(unsigned seconds)
{
	char opts[64];

	snprintf(opts, sizeof(opts), "timeout:%u attempts:1", seconds);
	setenv("RES_OPTIONS", opts, 1);
}

struct inbound *
inbound_begin(const struct mc_config *cfg, const char *ip, const char *helo, const char *sender)
{
	struct inbound *in;

	if (!cfg->inbound_checks || strcmp(ip, "unknown") == 0 ||
	    mc_cidr_match(cfg->trusted_networks, ip))
		return NULL;
	if ((in = calloc(1, sizeof(*in))) == NULL)
		return NULL;
	in->cfg = cfg;
	snprintf(in->ip, sizeof(in->ip), "%s", ip);
	snprintf(in->helo, sizeof(in->helo), "%s", helo);
	snprintf(in->sender, sizeof(in->sender), "%s", sender);
	set_dns_timeout(cfg->dns_timeout);
	spf_check(cfg, ip, helo, sender, &in->spf);
	mc_log(MC_LOG_INFO, "spf=%s domain=%s ip=%s (%s)", in->spf.result, in->spf.domain, ip,
	    in->spf.comment);
	in->dkim = dkimv_new(cfg, sender);
	return in;
}

const struct spf_result *
inbound_spf(const struct inbound *in)
{
	return &in->spf;
}

void
inbound_free(struct inbound *in)
{
	if (in == NULL)
		return;
	dkimv_free(in->dkim);
	free(in);
}

/* Blanks out comments and quoted strings, so that only addresses remain. */
static void
strip_comments(char *s)
{
	int depth = 0, quoted = 0;

	for (; *s; s++) {
		char c = *s;
		if (c == '\\' && (quoted || depth) && s[1] != '\0') {
			*s++ = ' ';
			*s = ' ';
			continue;
		}
		if (quoted) {
			quoted = c != '"';
			*s = ' ';
		} else if (c == '"' && depth == 0) {
			quoted = 1;
			*s = ' ';
		} else if (c == '(') {
			depth++;
			*s = ' ';
		} else if (c == ')' && depth > 0) {
			depth--;
			*s = ' ';
		} else if (depth > 0) {
			*s = ' ';
		}
	}
}

/* The domain of one mailbox ("Name <a@b>" or "a@b"), lower-cased; 0 or -1. */
static int
mailbox_domain(char *mb, char *dom, size_t len)
{
	char *lt = strchr(mb, '<'), *at, *end;
	size_t n;

	if (lt != NULL) {
		mb = lt + 1;
		if ((end = strchr(mb, '>')) != NULL)
			*end = '\0';
	}
	if ((at = strrchr(mb, '@')) == NULL)
		return -1;
	at++;
	while (*at == ' ' || *at == '\t')
		at++;
	n = strcspn(at, " \t\r\n>;");
	if (n == 0 || n >= len)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)at[i];
		if (!isalnum(c) && c != '-' && c != '.' && c < 0x80)
			return -1;
		dom[i] = (char)tolower(c);
	}
	dom[n] = '\0';
	/*
	 * Nothing may follow but white space (and a group's ';'): a reader joins
	 * "a@paypal .com" or "a@paypal(x).com" into paypal.com (RFC 5322 obs-domain),
	 * so checking "paypal" would let the message pass as someone else's.
	 */
	at += n;
	at += strspn(at, " \t\r\n");
	if (lt == NULL && *at == ';')
		at += 1 + strspn(at + 1, " \t\r\n");
	return *at == '\0' ? 0 : -1;
}

/* Records the From field's domain; several or none make the message unusable. */
static void
from_field(struct inbound *in, const char *field, size_t len)
{
	char *v, *save = NULL, dom[256];
	const char *colon = memchr(field, ':', len);
	int found = 0;

	if (++in->from_count > 1 || colon == NULL)
		return;
	/* A NUL (BDAT lets it through) would hide the rest of the field from us only. */
	if (memchr(colon + 1, '\0', len - (size_t)(colon + 1 - field)) != NULL ||
	    (v = strndup(colon + 1, len - (size_t)(colon + 1 - field))) == NULL) {
		in->from_bad = 1;
		return;
	}
	strip_comments(v);
	for (char *mb = strtok_r(v, ",", &save); mb; mb = strtok_r(NULL, ",", &save)) {
		if (strspn(mb, " \t\r\n") == strlen(mb))
			continue;
		if (mailbox_domain(mb, dom, sizeof(dom)) != 0 ||
		    (found && strcmp(dom, in->from_domain) != 0))
			in->from_bad = 1;
		else if (!found)
			snprintf(in->from_domain, sizeof(in->from_domain), "%s", dom);
		found = 1;
	}
	if (!found)
		in->from_bad = 1;
	free(v);
}

void
inbound_header(struct inbound *in, const char *field, size_t len)
{
	if (in == NULL)
		return;
	while (len > 0 && (field[len - 1] == '\n' || field[len - 1] == '\r'))
		len--;
	if (hdr_is(field, len, "From"))
		from_field(in, field, len);
	dkimv_header(in->dkim, field, len);
}

void
inbound_eoh(struct inbound *in)
{
	if (in != NULL)
		dkimv_eoh(in->dkim);
}

void
inbound_body(struct inbound *in, const void *buf, size_t len)
{
	if (in != NULL)
		dkimv_body(in->dkim, buf, len);
}

/* Client-given text made safe for a header value. */
static void
safe_copy(char *dst, size_t len, const char *src)
{
	size_t i = 0;

	for (; src[i] && i + 1 < len; i++)
		dst[i] = (src[i] < 33 || src[i] > 126 || strchr("\"\\;()", src[i])) ? '?' : src[i];
	dst[i] = '\0';
}

static void
fill_record(struct inbound *in, const char *qid, const char *rcpt_domain,
    struct mc_dmarc_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->time = time(NULL);
	snprintf(rec->qid, sizeof(rec->qid), "%s", qid);
	snprintf(rec->source_ip, sizeof(rec->source_ip), "%s", in->ip);
	snprintf(rec->helo, sizeof(rec->helo), "%s", in->helo);
	if (!in->spf.helo_identity)
		snprintf(rec->envelope_from, sizeof(rec->envelope_from), "%s", in->spf.domain);
	snprintf(rec->envelope_to, sizeof(rec->envelope_to), "%s", rcpt_domain);
	snprintf(rec->header_from, sizeof(rec->header_from), "%s", in->from_domain);
	snprintf(rec->spf_domain, sizeof(rec->spf_domain), "%s", in->spf.domain);
	snprintf(rec->spf_scope, sizeof(rec->spf_scope), "%s", in->spf.helo_identity ? "helo" : "mfrom");
	snprintf(rec->spf_result, sizeof(rec->spf_result), "%s", in->spf.result);
	snprintf(rec->result, sizeof(rec->result), "none");
	snprintf(rec->disposition, sizeof(rec->disposition), "none");
	rec->pct = 100;
}

/* Appends to a bounded string; the string stays terminated. */
static void
add(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
add(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;

	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

static void
auth_results(const struct inbound *in, const struct mc_dmarc_record *rec,
    char (*bvals)[16], char *head, size_t len)
{
	char helo[256], sender[600];

	safe_copy(helo, sizeof(helo), in->helo);
	safe_copy(sender, sizeof(sender), in->sender);
	add(head, len, "Authentication-Results: %s;\r\n\tspf=%s %s=%s", in->cfg->hostname,
	    rec->spf_result, in->spf.helo_identity ? "smtp.helo" : "smtp.mailfrom",
	    in->spf.helo_identity ? helo : in->spf.domain);
	if (rec->ndkim == 0)
		add(head, len, ";\r\n\tdkim=none");
	for (size_t i = 0; i < rec->ndkim; i++)
		add(head, len, ";\r\n\tdkim=%s header.d=%s header.s=%s%s%s", rec->dkim[i].result,
		    rec->dkim[i].domain, rec->dkim[i].selector, bvals[i][0] ? " header.b=" : "",
		    bvals[i]);
	if (rec->p[0] != '\0')
		add(head, len, ";\r\n\tdmarc=%s (p=%s sp=%s pct=%d dis=%s) header.from=%s",
		    rec->result, rec->p, rec->sp, rec->pct, rec->disposition, rec->header_from);
	else
		add(head, len, ";\r\n\tdmarc=%s header.from=%s", rec->result,
		    rec->header_from[0] ? rec->header_from : "unknown");
	add(head, len, "\r\n");
	add(head, len, "Received-SPF: %s (%s: %s)\r\n\tclient-ip=%s; envelope-from=\"%s\"; "
	    "helo=%s; receiver=%s; identity=%s\r\n", in->spf.result, in->cfg->hostname,
	    in->spf.comment, in->ip, sender, helo[0] ? helo : "unknown", in->cfg->hostname,
	    in->spf.helo_identity ? "helo" : "mailfrom");
}

static enum inbound_verdict
verdict(const struct inbound *in, const struct mc_dmarc_record *rec,
    const struct dmarc_outcome *out, char *why, size_t whylen)
{
	const char *dom = rec->policy_domain[0] ? rec->policy_domain : rec->header_from;

	if (strcmp(out->disposition, "reject") == 0) {
		snprintf(why, whylen, "Message rejected by the DMARC policy of %s (%s=reject): "
		    "neither SPF nor DKIM passed aligned with the From domain %s", dom,
		    strcasecmp(dom, rec->header_from) == 0 ? "p" : "sp", rec->header_from);
		return IN_REJECT;
	}
	if (out->temp && in->cfg->dmarc_temperror_defer) {
		snprintf(why, whylen, "DMARC policy of %s could not be fetched (DNS temporary "
		    "failure), try again later", rec->header_from);
		return IN_DEFER;
	}
	return strcmp(out->disposition, "quarantine") == 0 ? IN_QUARANTINE : IN_ACCEPT;
}

enum inbound_verdict
inbound_finish(struct inbound *in, const char *qid, const char *rcpt_domain,
    struct mc_dmarc_record *rec, char *head, size_t headlen, char *why, size_t whylen)
{
	char bvals[MC_DMARC_MAX_SIGS][16];
	struct dmarc_outcome out;
	enum inbound_verdict v;

	head[0] = '\0';
	fill_record(in, qid, rcpt_domain, rec);
	memset(bvals, 0, sizeof(bvals));
	rec->ndkim = dkimv_finish(in->dkim, rec->dkim, MC_DMARC_MAX_SIGS, bvals);
	if (in->from_count != 1 || in->from_bad) {
		snprintf(why, whylen, "Message refused: DMARC needs exactly one From header "
		    "with one sender domain (RFC 5322 3.6, RFC 7489 6.6.1); this one has %s",
		    in->from_count == 0 ? "none" : in->from_count > 1 ? "several" : "no usable address");
		return IN_REJECT;
	}
	dmarc_check(in->cfg, rec, &out);
	v = verdict(in, rec, &out, why, whylen);
	auth_results(in, rec, bvals, head, headlen);
	if (v == IN_QUARANTINE)
		add(head, headlen, "X-Spam-Flag: YES\r\n");
	mc_log(MC_LOG_INFO, "id=%s dmarc=%s from=%s policy=%s dis=%s spf=%s dkim=%zu", qid,
	    rec->result, rec->header_from, rec->p[0] ? rec->p : "-", rec->disposition,
	    rec->spf_result, rec->ndkim);
	return v;
}
