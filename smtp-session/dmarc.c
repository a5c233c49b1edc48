/*
 * dmarc.c - DMARC (RFC 7489) with libopendmarc: the From domain's policy (or
 * its organizational domain's, from the public suffix list), alignment of
 * the SPF and DKIM results, sp= for subdomains and pct= sampling (6.6.4).
 */
#include "inbound.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <opendmarc/dmarc.h>

#include "log.h"

/* One library setup per process, at first use; -1 if the PSL is unreadable. */
static int
library(const struct mc_config *cfg)
{
	static int state;   /* 0 not yet, 1 ready, -1 failed */
	static OPENDMARC_LIB_T lib;

	if (state != 0)
		return state;
	memset(&lib, 0, sizeof(lib));
	lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
	snprintf((char *)lib.tld_source_file, sizeof(lib.tld_source_file), "%s",
	    cfg->public_suffix_list);
	if (opendmarc_policy_library_init(&lib) != DMARC_PARSE_OKAY) {
		mc_log(MC_LOG_ERR, "dmarc: cannot load the public suffix list %s",
		    cfg->public_suffix_list);
		state = -1;
	} else {
		state = 1;
	}
	return state;
}

static int
spf_outcome(const char *r)
{
	if (strcmp(r, "pass") == 0)
		return DMARC_POLICY_SPF_OUTCOME_PASS;
	if (strcmp(r, "temperror") == 0)
		return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
	if (strcmp(r, "fail") == 0 || strcmp(r, "softfail") == 0)
		return DMARC_POLICY_SPF_OUTCOME_FAIL;
	return DMARC_POLICY_SPF_OUTCOME_NONE;
}

static int
dkim_outcome(const char *r)
{
	if (strcmp(r, "pass") == 0)
		return DMARC_POLICY_DKIM_OUTCOME_PASS;
	if (strcmp(r, "temperror") == 0)
		return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
	return DMARC_POLICY_DKIM_OUTCOME_FAIL;
}

static const char *
policy_word(int p)
{
	switch (p) {
	case DMARC_RECORD_P_NONE: return "none";
	case DMARC_RECORD_P_QUARANTINE: return "quarantine";
	case DMARC_RECORD_P_REJECT: return "reject";
	default: return "";
	}
}

static void
feed_results(DMARC_POLICY_T *pctx, const struct mc_dmarc_record *rec)
{
	if (rec->spf_domain[0] != '\0')
		(void)opendmarc_policy_store_spf(pctx, (u_char *)rec->spf_domain,
		    spf_outcome(rec->spf_result), strcmp(rec->spf_scope, "helo") == 0
		    ? DMARC_POLICY_SPF_ORIGIN_HELO : DMARC_POLICY_SPF_ORIGIN_MAILFROM, NULL);
	for (size_t i = 0; i < rec->ndkim; i++)
		(void)opendmarc_policy_store_dkim(pctx, (u_char *)rec->dkim[i].domain,
		    (u_char *)rec->dkim[i].selector, dkim_outcome(rec->dkim[i].result), NULL);
}

/* The published record's tags into rec. */
static void
fetch_policy(DMARC_POLICY_T *pctx, struct mc_dmarc_record *rec)
{
	int p = 0, sp = 0, pct = 100, adkim = 'r', aspf = 'r';
	u_char dom[256];

	(void)opendmarc_policy_fetch_p(pctx, &p);
	(void)opendmarc_policy_fetch_sp(pctx, &sp);
	(void)opendmarc_policy_fetch_pct(pctx, &pct);
	(void)opendmarc_policy_fetch_adkim(pctx, &adkim);
	(void)opendmarc_policy_fetch_aspf(pctx, &aspf);
	snprintf(rec->p, sizeof(rec->p), "%s", policy_word(p));
	snprintf(rec->sp, sizeof(rec->sp), "%s", sp ? policy_word(sp) : rec->p);
	rec->pct = pct < 0 || pct > 100 ? 100 : pct;
	rec->adkim[0] = adkim == 's' ? 's' : 'r';
	rec->aspf[0] = aspf == 's' ? 's' : 'r';
	if (opendmarc_policy_fetch_utilized_domain(pctx, dom, sizeof(dom)) == DMARC_PARSE_OKAY)
		snprintf(rec->policy_domain, sizeof(rec->policy_domain), "%s", (char *)dom);
}

/* RFC 7489 6.6.4: outside pct, the next lower policy applies. */
static const char *
sampled(const char *policy, int pct)
{
	if (pct >= 100 || (random() % 100) < pct)
		return policy;
	return strcmp(policy, "reject") == 0 ? "quarantine" : "none";
}

static void
set_out(struct dmarc_outcome *out, const char *result, const char *disposition)
{
	snprintf(out->result, sizeof(out->result), "%s", result);
	snprintf(out->disposition, sizeof(out->disposition), "%s", disposition);
}

static void
evaluate(DMARC_POLICY_T *pctx, struct mc_dmarc_record *rec, struct dmarc_outcome *out)
{
	int enforce, dkim_al = 0, spf_al = 0, used;
	const char *policy;

	fetch_policy(pctx, rec);
	enforce = opendmarc_get_policy_to_enforce(pctx);
	(void)opendmarc_policy_fetch_alignment(pctx, &dkim_al, &spf_al);
	rec->dkim_aligned = dkim_al == DMARC_POLICY_DKIM_ALIGNMENT_PASS;
	rec->spf_aligned = spf_al == DMARC_POLICY_SPF_ALIGNMENT_PASS;
	if (enforce == DMARC_POLICY_PASS || rec->dkim_aligned || rec->spf_aligned) {
		set_out(out, "pass", "none");
		return;
	}
	used = opendmarc_get_policy_token_used(pctx);
	policy = used == DMARC_USED_POLICY_IS_SP ? rec->sp : rec->p;
	if (*policy == '\0')
		policy = "none";
	set_out(out, "fail", sampled(policy, rec->pct));
}

/* 1 if the public suffix list has a rule for the domain's last label. */
static int
tld_listed(const char *psl, const char *domain)
{
	const char *tld = strrchr(domain, '.');
	char line[512];
	FILE *f;
	int found = 0;

	tld = tld ? tld + 1 : domain;
	if ((f = fopen(psl, "r")) == NULL)
		return 1;   /* cannot tell: leave it to the library */
	while (!found && fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, " \t\r\n")] = '\0';
		found = strcasecmp(line, tld) == 0;
	}
	fclose(f);
	return found;
}

/*
 * RFC 7489 3.2 with the list's implicit "*" rule: a TLD the public suffix
 * list does not name is itself a public suffix, so the organizational domain
 * is the last two labels. libopendmarc skips that case; we look it up.
 */
static int
org_fallback(const struct mc_config *cfg, DMARC_POLICY_T *pctx, const char *from, int st)
{
	const char *last = strrchr(from, '.'), *org = last;
	char name[300], record[1024];
	int r;

	if (last == NULL)
		return st;
	while (org > from && org[-1] != '.')
		org--;
	if (org == from || tld_listed(cfg->public_suffix_list, from))
		return st;   /* from is the organizational domain, or the list knows the TLD */
	snprintf(name, sizeof(name), "_dmarc.%s", org);
	if ((r = dnsq_txt(name, "v=DMARC1", record, sizeof(record))) < 0)
		return DMARC_DNS_ERROR_TMPERR;
	if (r > 0)
		return st;
	return opendmarc_policy_store_dmarc(pctx, (u_char *)record, (u_char *)from, (u_char *)org);
}

void
dmarc_check(const struct mc_config *cfg, struct mc_dmarc_record *rec, struct dmarc_outcome *out)
{
	DMARC_POLICY_T *pctx;
	int st;

	memset(out, 0, sizeof(*out));
	set_out(out, "none", "none");
	rec->pct = 100;
	if (library(cfg) < 0) {
		set_out(out, "temperror", "none");
		out->temp = 1;
		return;
	}
	pctx = opendmarc_policy_connect_init((u_char *)rec->source_ip, strchr(rec->source_ip, ':') != NULL);
	if (pctx == NULL) {
		set_out(out, "temperror", "none");
		return;
	}
	if (opendmarc_policy_store_from_domain(pctx, (u_char *)rec->header_from) != DMARC_PARSE_OKAY) {
		set_out(out, "permerror", "none");
		goto done;
	}
	feed_results(pctx, rec);
	st = opendmarc_policy_query_dmarc(pctx, NULL);
	if (st == DMARC_DNS_ERROR_NO_RECORD || st == DMARC_DNS_ERROR_NXDOMAIN)
		st = org_fallback(cfg, pctx, rec->header_from, st);
	if (st == DMARC_DNS_ERROR_TMPERR) {
		set_out(out, "temperror", "none");
		out->temp = 1;
	} else if (st == DMARC_DNS_ERROR_NO_RECORD || st == DMARC_DNS_ERROR_NXDOMAIN) {
		set_out(out, "none", "none");
	} else if (st != DMARC_PARSE_OKAY) {
		set_out(out, "permerror", "none");
	} else {
		evaluate(pctx, rec, out);
	}
done:
	snprintf(rec->result, sizeof(rec->result), "%s", out->result);
	snprintf(rec->disposition, sizeof(rec->disposition), "%s", out->disposition);
	(void)opendmarc_policy_connect_shutdown(pctx);
}
