/*
 * inbound.h - the checks on unauthenticated inbound mail: SPF (spf.c, with
 * libspf2), DKIM verification (dkimv.c, libopendkim), DMARC (dmarc.c,
 * libopendmarc) and inbound.c, which runs them for one message and writes
 * the Authentication-Results and Received-SPF headers.
 */
#ifndef SMTP_INBOUND_H
#define SMTP_INBOUND_H

#include <stddef.h>

#include "config.h"
#include "store_auth.h"

/* ---- spf.c ---- */
struct spf_result {
	char result[16];      /* pass fail softfail neutral none temperror permerror */
	char domain[256];     /* the domain checked */
	int helo_identity;    /* checked the HELO name (null sender) */
	char comment[256];    /* why, for Received-SPF */
};

/* Evaluates SPF for ip; sender is the MAIL FROM address ("" for <>). */
void spf_check(const struct mc_config *cfg, const char *ip, const char *helo,
    const char *sender, struct spf_result *out);

/* ---- dnsq.c ---- */
/* A TXT record starting with prefix: 0 found (into out), 1 none, -1 DNS failure. */
int dnsq_txt(const char *name, const char *prefix, char *out, size_t outlen);
/* 1 if name has records of this type, 0 if not (NXDOMAIN/NODATA), -1 DNS failure. */
int dnsq_exists(const char *name, int type);

/* ---- dkimv.c: verification while the message streams in ---- */
struct dkimv;
struct dkimv *dkimv_new(const struct mc_config *cfg, const char *qid);
void dkimv_header(struct dkimv *d, const char *field, size_t len); /* without CRLF */
void dkimv_eoh(struct dkimv *d);
void dkimv_body(struct dkimv *d, const void *buf, size_t len);
/* Finishes; fills sigs (at most max) and returns how many there were. */
size_t dkimv_finish(struct dkimv *d, struct mc_dmarc_sig *sigs, size_t max,
    char (*bvalues)[16]);
void dkimv_free(struct dkimv *d);

/* ---- dmarc.c ---- */
struct dmarc_outcome {
	char result[16];       /* pass fail none temperror permerror */
	char disposition[16];  /* none quarantine reject */
	int temp;              /* the policy could not be fetched (DNS) */
};

/* Evaluates the From domain's policy and fills rec (spf/dkim already set). */
void dmarc_check(const struct mc_config *cfg, struct mc_dmarc_record *rec,
    struct dmarc_outcome *out);

/* ---- inbound.c ---- */
struct inbound;
struct body_filter;

/* Starts the checks for a transaction: SPF now (at MAIL). NULL: no checks. */
struct inbound *inbound_begin(const struct mc_config *cfg, const char *ip,
    const char *helo, const char *sender);
const struct spf_result *inbound_spf(const struct inbound *in);
void inbound_free(struct inbound *in);

/* Header fields and body octets as they arrive (after the body filter). */
void inbound_header(struct inbound *in, const char *field, size_t len);
void inbound_eoh(struct inbound *in);
void inbound_body(struct inbound *in, const void *buf, size_t len);

enum inbound_verdict { IN_ACCEPT, IN_QUARANTINE, IN_REJECT, IN_DEFER };

/*
 * The message is complete: evaluates DKIM and DMARC, fills rec, writes the
 * header block to add into head (NUL-terminated) and the reply text for a
 * refusal into why.
 */
enum inbound_verdict inbound_finish(struct inbound *in, const char *qid,
    const char *rcpt_domain, struct mc_dmarc_record *rec, char *head, size_t headlen,
    char *why, size_t whylen);

#endif
