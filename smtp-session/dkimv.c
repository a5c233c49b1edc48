/*
 * dkimv.c - DKIM (RFC 6376) verification with libopendkim while the message
 * streams in: header fields one by one, then the body chunk by chunk, so no
 * second copy of the message is kept. Every signature gets its own result.
 */
#include "inbound.h"

#include <arpa/nameser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendkim/dkim.h>

#include "log.h"

struct dkimv {
	DKIM *dkim;
	int failed;        /* the library refused the message: no signatures to report */
};

/*
 * Each signature costs a key lookup: past MC_DMARC_MAX_SIGS they are ignored,
 * so that a message with hundreds of signatures cannot stall the session.
 */
static DKIM_CBSTAT
prescreen(DKIM *dkim, DKIM_SIGINFO **sigs, int nsigs)
{
	(void)dkim;
	for (int i = MC_DMARC_MAX_SIGS; i < nsigs; i++)
		dkim_sig_ignore(sigs[i]);
	return DKIM_CBSTAT_CONTINUE;
}

/* One library handle per process, made at first use. */
static DKIM_LIB *
library(unsigned timeout)
{
	static DKIM_LIB *lib;
	unsigned int t = timeout, flags = DKIM_LIBFLAGS_BADSIGHANDLES;

	if (lib != NULL)
		return lib;
	if ((lib = dkim_init(NULL, NULL)) == NULL)
		return NULL;
	(void)dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_TIMEOUT, &t, sizeof(t));
	(void)dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_FLAGS, &flags, sizeof(flags));
	(void)dkim_set_prescreen(lib, prescreen);
	return lib;
}

struct dkimv *
dkimv_new(const struct mc_config *cfg, const char *qid)
{
	struct dkimv *d = calloc(1, sizeof(*d));
	DKIM_LIB *lib = library(cfg->dns_timeout);
	DKIM_STAT st;

	if (d == NULL)
		return NULL;
	if (lib == NULL || (d->dkim = dkim_verify(lib, (const unsigned char *)qid, NULL, &st))
	    == NULL) {
		mc_log(MC_LOG_ERR, "id=%s DKIM verifier unavailable", qid);
		d->failed = 1;
	}
	return d;
}

void
dkimv_header(struct dkimv *d, const char *field, size_t len)
{
	if (d == NULL || d->failed)
		return;
	if (dkim_header(d->dkim, (u_char *)field, len) != DKIM_STAT_OK)
		mc_log(MC_LOG_DEBUG, "dkim: header not accepted: %s", dkim_geterror(d->dkim));
}

void
dkimv_eoh(struct dkimv *d)
{
	DKIM_STAT st;

	if (d == NULL || d->failed)
		return;
	st = dkim_eoh(d->dkim);
	if (st == DKIM_STAT_NOSIG)
		d->failed = 1;   /* unsigned: nothing to verify */
	else if (st != DKIM_STAT_OK)
		mc_log(MC_LOG_DEBUG, "dkim: end of header: %s", dkim_geterror(d->dkim));
}

void
dkimv_body(struct dkimv *d, const void *buf, size_t len)
{
	if (d == NULL || d->failed || len == 0)
		return;
	(void)dkim_body(d->dkim, (u_char *)buf, len);
}

/* 1 when the key's name does not exist at all (RFC 6376 6.1.2: PERMFAIL). */
static int
key_missing(DKIM_SIGINFO *sig)
{
	const unsigned char *d = dkim_sig_getdomain(sig), *sel = dkim_sig_getselector(sig);
	char name[600];

	if (d == NULL || sel == NULL)
		return 1;
	snprintf(name, sizeof(name), "%s._domainkey.%s", (const char *)sel, (const char *)d);
	return dnsq_exists(name, ns_t_txt) == 0;
}

/* RFC 8601 2.7.1 result words for one signature. */
static const char *
sig_result(DKIM_SIGINFO *sig)
{
	int err = dkim_sig_geterror(sig);

	if ((dkim_sig_getflags(sig) & DKIM_SIGFLAG_PASSED) != 0 &&
	    dkim_sig_getbh(sig) == DKIM_SIGBH_MATCH)
		return "pass";
	if (err == DKIM_SIGERROR_KEYFAIL)   /* the library says so for NXDOMAIN too */
		return key_missing(sig) ? "permerror" : "temperror";
	if (err == DKIM_SIGERROR_BADSIG || dkim_sig_getbh(sig) == DKIM_SIGBH_MISMATCH)
		return "fail";
	if (err == DKIM_SIGERROR_OK && (dkim_sig_getflags(sig) & DKIM_SIGFLAG_PROCESSED) == 0)
		return "neutral";
	return "permerror";
}

size_t
dkimv_finish(struct dkimv *d, struct mc_dmarc_sig *sigs, size_t max, char (*bvalues)[16])
{
	DKIM_SIGINFO **list;
	int n = 0;
	size_t kept = 0;

	if (d == NULL || d->failed)
		return 0;
	(void)dkim_eom(d->dkim, NULL);
	if (dkim_getsiglist(d->dkim, &list, &n) != DKIM_STAT_OK)
		return 0;
	for (int i = 0; i < n && kept < max; i++) {
		const unsigned char *dom = dkim_sig_getdomain(list[i]);
		const unsigned char *sel = dkim_sig_getselector(list[i]);
		size_t blen = sizeof(bvalues[0]);

		snprintf(sigs[kept].domain, sizeof(sigs[kept].domain), "%s", dom ? (const char *)dom : "");
		snprintf(sigs[kept].selector, sizeof(sigs[kept].selector), "%s",
		    sel ? (const char *)sel : "");
		snprintf(sigs[kept].result, sizeof(sigs[kept].result), "%s", sig_result(list[i]));
		if (dkim_get_sigsubstring(d->dkim, list[i], bvalues[kept], &blen) != DKIM_STAT_OK)
			bvalues[kept][0] = '\0';
		bvalues[kept][sizeof(bvalues[0]) - 1] = '\0';
		for (char *p = sigs[kept].domain; *p; p++)
			*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
		mc_log(MC_LOG_INFO, "dkim=%s d=%s s=%s bh=%d (%s)", sigs[kept].result, sigs[kept].domain,
		    sigs[kept].selector, dkim_sig_getbh(list[i]), dkim_sig_geterrorstr(dkim_sig_geterror(list[i])));
		kept++;
	}
	return kept;
}

void
dkimv_free(struct dkimv *d)
{
	if (d == NULL)
		return;
	if (d->dkim != NULL)
		dkim_free(d->dkim);
	free(d);
}
