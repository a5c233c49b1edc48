/*
 * store_auth.h - what the inbound checks and DKIM signing keep in the store:
 * one DMARC evaluation per received message (for RFC 7489 aggregate reports)
 * and the DKIM private keys made by `mailcell dkim keygen`.
 */
#ifndef MC_STORE_AUTH_H
#define MC_STORE_AUTH_H

#include <stddef.h>
#include <time.h>

#include "store.h"

#define MC_DMARC_MAX_SIGS 8  /* DKIM signatures kept per evaluation */

struct mc_dmarc_sig {
	char domain[256];     /* d= */
	char selector[128];   /* s= */
	char result[16];      /* pass fail neutral policy temperror permerror */
};

/*
 * One message's DMARC evaluation. Strings are "" when unknown; result and
 * disposition use RFC 7489 appendix C words (pass/fail, none/quarantine/reject).
 * The collection is `dmarc_records`.
 */
struct mc_dmarc_record {
	time_t time;
	char qid[16];
	char source_ip[64];
	char helo[256];
	char envelope_from[256];   /* MAIL FROM domain ("" for <>) */
	char envelope_to[256];     /* the first recipient's domain */
	char header_from[256];     /* RFC 5322 From domain */
	char policy_domain[256];   /* where the record was found ("" if none) */
	char spf_domain[256];
	char spf_scope[8];         /* "mfrom" or "helo" */
	char spf_result[16];       /* none neutral pass fail softfail temperror permerror */
	struct mc_dmarc_sig dkim[MC_DMARC_MAX_SIGS];
	size_t ndkim;
	int spf_aligned;
	int dkim_aligned;
	char result[16];           /* pass fail none temperror permerror */
	char disposition[16];      /* none quarantine reject */
	char p[16];                /* published policy, "" if none */
	char sp[16];
	int pct;                   /* 0..100, 100 when absent */
	char adkim[2];             /* "r" or "s" */
	char aspf[2];
};

enum mc_store_status mc_store_dmarc_add(struct mc_store *st, const struct mc_dmarc_record *r);

/* Evaluations whose header_from or policy_domain is `domain`, in [since, until), oldest first. */
enum mc_store_status mc_store_dmarc_list(struct mc_store *st, const char *domain,
    time_t since, time_t until,
    void (*cb)(void *ctx, const struct mc_dmarc_record *r), void *ctx);

/* ---- DKIM keys: collection `dkim_keys`, _id "SELECTOR._domainkey.DOMAIN" ---- */

struct mc_dkim_key {
	char domain[256];
	char selector[64];
	time_t created;
	char *private_key;         /* PEM; owned by the struct, see mc_dkim_key_clear */
};

/* Stores (or replaces) the key for domain+selector. */
enum mc_store_status mc_store_dkim_key_put(struct mc_store *st, const char *domain,
    const char *selector, const char *private_key_pem);
/* The newest key of the domain (NOTFOUND if none). */
enum mc_store_status mc_store_dkim_key_get(struct mc_store *st, const char *domain,
    struct mc_dkim_key *out);
enum mc_store_status mc_store_dkim_key_list(struct mc_store *st,
    void (*cb)(void *ctx, const struct mc_dkim_key *k), void *ctx);
void mc_dkim_key_clear(struct mc_dkim_key *k);

#endif
