/*
 * spf.c - SPF (RFC 7208) for the MAIL FROM identity with libspf2, completed
 * where it falls short: a DNS layer of ours counts the lookups across the
 * whole include/redirect chain (over 10, or over 2 void ones: permerror),
 * bounds the time, and tells DNS failures (temperror) from syntax (permerror).
 */
#include "inbound.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <spf2/spf_dns_resolv.h>

#include "log.h"

#define SPF_MAX_LOOKUPS 10     /* RFC 7208 4.6.4 */
#define SPF_MAX_VOID 2
#define SPF_MAX_NAMES 32       /* MX/PTR target names remembered per check */

/* Our layer on top of libspf2's resolver; `layer` must stay first. */
struct count_layer {
	SPF_dns_server_t layer;
	SPF_dns_server_t *below;
	int txt_queries;
	int lookups;               /* DNS-querying mechanisms and modifiers */
	int voids;
	int temp;                  /* a lookup failed or timed out */
	struct timespec deadline;
	char names[SPF_MAX_NAMES][256];
	int nnames;
};

static int
past(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec > t->tv_nsec);
}

static int
known_name(const struct count_layer *c, const char *domain)
{
	for (int i = 0; i < c->nnames; i++)
		if (strcasecmp(c->names[i], domain) == 0)
			return 1;
	return 0;
}

/* Remembers the host names an MX or PTR answer gave: their A lookups are free. */
static void
remember_names(struct count_layer *c, const SPF_dns_rr_t *rr)
{
	for (int i = 0; i < rr->num_rr && c->nnames < SPF_MAX_NAMES; i++)
		snprintf(c->names[c->nnames++], sizeof(c->names[0]), "%s",
		    rr->rr_type == ns_t_mx ? rr->rr[i]->mx : rr->rr[i]->ptr);
}

/* 1 if this query counts toward the limit of 10 (RFC 7208 4.6.4). */
static int
counts(struct count_layer *c, const char *domain, ns_type type)
{
	switch (type) {
	case ns_t_txt:
		return ++c->txt_queries > 1;   /* the first is the record itself */
	case ns_t_mx:
	case ns_t_ptr:
		return 1;
	case ns_t_a:
	case ns_t_aaaa:
		return !known_name(c, domain);
	default:
		return 0;
	}
}

static SPF_dns_rr_t *
counting_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type, int cache)
{
	struct count_layer *c = (struct count_layer *)layer;
	int counted = counts(c, domain, type);
	SPF_dns_rr_t *rr;

	if (counted)
		c->lookups++;
	if (c->lookups > SPF_MAX_LOOKUPS || c->voids > SPF_MAX_VOID)
		return SPF_dns_rr_new_init(layer, domain, type, 0, HOST_NOT_FOUND);
	if (past(&c->deadline)) {
		c->temp = 1;
		return SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
	}
	rr = SPF_dns_lookup(c->below, domain, type, cache);
	if (rr == NULL)
		return SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
	if (rr->herrno == TRY_AGAIN || rr->herrno == NO_RECOVERY)
		c->temp = 1;
	else if (counted && (rr->herrno == HOST_NOT_FOUND || rr->herrno == NO_DATA ||
	    rr->num_rr == 0))
		c->voids++;
	else if (rr->herrno == NETDB_SUCCESS && (type == ns_t_mx || type == ns_t_ptr))
		remember_names(c, rr);
	mc_log(MC_LOG_DEBUG, "spf: dns %s type %d: h_errno %d, %d answers", domain, (int)type,
	    rr->herrno, rr->num_rr);
	return rr;
}

/* libspf2 prints to stderr by default; its messages go to our log instead. */
static void spf_log_error(const char *file, int line, const char *msg)
    __attribute__((noreturn));

static void
spf_log_error(const char *file, int line, const char *msg)
{
	mc_log(MC_LOG_ERR, "libspf2: %s (%s:%d)", msg, file ? file : "?", line);
	exit(75);
}

static void
spf_log_other(const char *file, int line, const char *msg)
{
	(void)file;
	(void)line;
	mc_log(MC_LOG_DEBUG, "libspf2: %s", msg);
}

static void set_result(struct spf_result *out, const char *result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
set_result(struct spf_result *out, const char *result, const char *fmt, ...)
{
	va_list ap;

	snprintf(out->result, sizeof(out->result), "%s", result);
	va_start(ap, fmt);
	vsnprintf(out->comment, sizeof(out->comment), fmt, ap);
	va_end(ap);
}

/* Our verdict from libspf2's and what the DNS layer saw. */
static void
conclude(struct spf_result *out, SPF_result_t r, const struct count_layer *c,
    const char *ip, const char *identity)
{
	const char *d = out->domain;

	if (c->lookups > SPF_MAX_LOOKUPS)
		set_result(out, "permerror", "%s: SPF record needs more than 10 DNS lookups", d);
	else if (c->voids > SPF_MAX_VOID)
		set_result(out, "permerror", "%s: SPF record gives more than 2 void lookups", d);
	else if (c->temp)
		set_result(out, "temperror", "%s: DNS temporary failure while checking SPF", d);
	else if (r == SPF_RESULT_PASS)
		set_result(out, "pass", "domain of %s designates %s as permitted sender", identity, ip);
	else if (r == SPF_RESULT_FAIL)
		set_result(out, "fail", "domain of %s does not designate %s as permitted sender",
		    identity, ip);
	else if (r == SPF_RESULT_SOFTFAIL)
		set_result(out, "softfail", "domain of transitioning %s does not designate %s as "
		    "permitted sender", identity, ip);
	else if (r == SPF_RESULT_NEUTRAL)
		set_result(out, "neutral", "%s is neither permitted nor denied by domain of %s",
		    ip, identity);
	else if (r == SPF_RESULT_NONE)
		set_result(out, "none", "domain of %s does not publish SPF", identity);
	else if (r == SPF_RESULT_TEMPERROR)
		set_result(out, "temperror", "%s: DNS temporary failure while checking SPF", d);
	else
		set_result(out, "permerror", "%s: SPF record cannot be evaluated (syntax)", d);
}

static void
init_layer(struct count_layer *c, unsigned timeout)
{
	memset(c, 0, sizeof(*c));
	c->layer.lookup = counting_lookup;
	c->layer.name = "mailcell-count";
	clock_gettime(CLOCK_MONOTONIC, &c->deadline);
	/* The whole evaluation: a few lookups' worth, however many there are. */
	c->deadline.tv_sec += (time_t)timeout * 4;
}

/* The domain SPF checks: the sender's, or the HELO name for <>. */
static void
identity_domain(const char *helo, const char *sender, struct spf_result *out)
{
	const char *at = strrchr(sender, '@');

	out->helo_identity = *sender == '\0' || at == NULL;
	snprintf(out->domain, sizeof(out->domain), "%s", out->helo_identity ? helo : at + 1);
	for (char *p = out->domain; *p; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
}

static int
request_setup(SPF_request_t *req, const char *ip, const char *helo, const char *sender)
{
	int bad = strchr(ip, ':') ? SPF_request_set_ipv6_str(req, ip)
	    : SPF_request_set_ipv4_str(req, ip);

	if (bad)
		return -1;
	if (helo[0] != '\0' && SPF_request_set_helo_dom(req, helo) != SPF_E_SUCCESS)
		return -1;
	return SPF_request_set_env_from(req, sender) == 0 ? 0 : -1;
}

void
spf_check(const struct mc_config *cfg, const char *ip, const char *helo,
    const char *sender, struct spf_result *out)
{
	struct count_layer c;
	SPF_server_t *spf = NULL;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	char identity[600];

	memset(out, 0, sizeof(*out));
	identity_domain(helo, sender, out);
	snprintf(identity, sizeof(identity), "%s", out->helo_identity ? helo : sender);
	SPF_error_handler = spf_log_error;
	SPF_warning_handler = spf_log_other;
	SPF_info_handler = spf_log_other;
	SPF_debug_handler = spf_log_other;
	init_layer(&c, cfg->dns_timeout);
	if ((c.below = SPF_dns_resolv_new(NULL, "resolv", 0)) == NULL ||
	    (spf = SPF_server_new_dns(&c.layer, 0)) == NULL ||
	    (req = SPF_request_new(spf)) == NULL) {
		set_result(out, "temperror", "SPF checker unavailable");
		goto out;
	}
	SPF_server_set_rec_dom(spf, cfg->hostname);
	if (out->domain[0] == '\0' || request_setup(req, ip, helo, sender) != 0) {
		set_result(out, "none", "no identity to check SPF for");
		goto out;
	}
	(void)SPF_request_query_mailfrom(req, &resp);
	conclude(out, resp ? SPF_response_result(resp) : SPF_RESULT_TEMPERROR, &c, ip, identity);
out:
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	if (spf != NULL)
		SPF_server_free(spf);
	if (c.below != NULL)
		SPF_dns_free(c.below);
}
