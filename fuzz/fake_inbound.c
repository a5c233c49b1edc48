/*
 * fake_inbound.c - stand-ins for the DNS-bound parts of the inbound checks
 * (spf.c, dkimv.c, dmarc.c), so that the fuzzed session runs inbound.c for
 * real without network. Results follow the domain names (see below).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "headers.h"
#include "inbound.h"

/*
 * "spf-fail.*" (-pass, -temp) senders get that SPF result; From domains
 * "reject.*", "quarantine.*", "temp.*" get that DMARC outcome; else "none".
 */

struct dkimv {
	unsigned nsigs;
	struct mc_dmarc_sig sigs[MC_DMARC_MAX_SIGS];
	int eoh;
	size_t body;
};

static int
starts(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

void
spf_check(const struct mc_config *cfg, const char *ip, const char *helo, const char *sender,
    struct spf_result *out)
{
	const char *at = strrchr(sender, '@');
	const char *dom = at != NULL ? at + 1 : helo;

	(void)cfg;
	memset(out, 0, sizeof(*out));
	out->helo_identity = at == NULL;
	snprintf(out->domain, sizeof(out->domain), "%s", dom);
	snprintf(out->result, sizeof(out->result), "%s", starts(dom, "spf-fail.") ? "fail" :
	    starts(dom, "spf-pass.") ? "pass" : starts(dom, "spf-temp.") ? "temperror" : "none");
	snprintf(out->comment, sizeof(out->comment), "fake SPF for %s", ip);
}

struct dkimv *
dkimv_new(const struct mc_config *cfg, const char *qid)
{
	(void)cfg;
	(void)qid;
	return calloc(1, sizeof(struct dkimv));
}

/* Copies the value of tag (e.g. "d=") from a DKIM-Signature, letters, digits, '.', '-' only. */
static void
tag_value(const char *field, size_t len, const char *tag, char *out, size_t outlen)
{
	size_t tl = strlen(tag), o = 0;

	out[0] = '\0';
	for (size_t i = 0; i + tl <= len; i++) {
		if (strncmp(field + i, tag, tl) != 0 || (i > 0 && field[i - 1] != ';' &&
		    field[i - 1] != ' ' && field[i - 1] != '\t' && field[i - 1] != ':'))
			continue;
		for (i += tl; i < len && o + 1 < outlen; i++) {
			char c = field[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '.' || c == '-'))
				break;
			out[o++] = c;
		}
		out[o] = '\0';
		return;
	}
}

void
dkimv_header(struct dkimv *d, const char *field, size_t len)
{
	struct mc_dmarc_sig *s;

	if (d == NULL || d->eoh || !hdr_is(field, len, "DKIM-Signature") ||
	    d->nsigs >= MC_DMARC_MAX_SIGS)
		return;
	s = &d->sigs[d->nsigs++];
	tag_value(field, len, "d=", s->domain, sizeof(s->domain));
	tag_value(field, len, "s=", s->selector, sizeof(s->selector));
	snprintf(s->result, sizeof(s->result), "%s", s->domain[0] ? "pass" : "permerror");
}

void
dkimv_eoh(struct dkimv *d)
{
	if (d != NULL)
		d->eoh = 1;
}

void
dkimv_body(struct dkimv *d, const void *buf, size_t len)
{
	(void)buf;
	if (d != NULL)
		d->body += len;
}

size_t
dkimv_finish(struct dkimv *d, struct mc_dmarc_sig *sigs, size_t max, char (*bvalues)[16])
{
	size_t n;

	if (d == NULL)
		return 0;
	n = d->nsigs < max ? d->nsigs : max;
	for (size_t i = 0; i < n; i++) {
		sigs[i] = d->sigs[i];
		snprintf(bvalues[i], 16, "%.8s", "fakebval");
	}
	return n;
}

void
dkimv_free(struct dkimv *d)
{
	free(d);
}

void
dmarc_check(const struct mc_config *cfg, struct mc_dmarc_record *rec, struct dmarc_outcome *out)
{
	const char *from = rec->header_from;
	const char *p = starts(from, "reject.") ? "reject" : starts(from, "quarantine.") ?
	    "quarantine" : starts(from, "temp.") ? "" : starts(from, "none.") ? "none" : "";

	(void)cfg;
	memset(out, 0, sizeof(*out));
	out->temp = starts(from, "temp.");
	snprintf(rec->p, sizeof(rec->p), "%s", p);
	snprintf(rec->sp, sizeof(rec->sp), "%s", p);
	if (p[0] != '\0')
		snprintf(rec->policy_domain, sizeof(rec->policy_domain), "%s", from);
	snprintf(out->result, sizeof(out->result), "%s", out->temp ? "temperror" :
	    p[0] && strcmp(p, "none") != 0 ? "fail" : "none");
	snprintf(out->disposition, sizeof(out->disposition), "%s", p[0] ? p : "none");
	snprintf(rec->result, sizeof(rec->result), "%s", out->result);
	snprintf(rec->disposition, sizeof(rec->disposition), "%s", out->disposition);
}
