/*
 * mx.c - MX lookup with the system resolver (libresolv): parses the answer
 * with ns_parserr, sorts by preference, shuffles equal ones (RFC 5321 5.1),
 * recognizes the null MX (RFC 7505) and falls back to the implicit MX.
 */
#include "mx.h"

#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mx_rr {
	unsigned pref;
	unsigned rnd;
	char host[256];
};

static int
by_pref(const void *a, const void *b)
{
	const struct mx_rr *x = a, *y = b;

	if (x->pref != y->pref)
		return x->pref < y->pref ? -1 : 1;
	return x->rnd < y->rnd ? -1 : x->rnd > y->rnd;
}

/* The MX records of an answer; -1 if it cannot be parsed. */
static int
parse_answer(const unsigned char *ans, int len, struct mx_rr *rr, size_t *n)
{
	ns_msg msg;
	ns_rr r;

	*n = 0;
	if (ns_initparse(ans, len, &msg) < 0)
		return -1;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an) && *n < MX_MAX; i++) {
		if (ns_parserr(&msg, ns_s_an, i, &r) < 0)
			return -1;
		if (ns_rr_type(r) != ns_t_mx || ns_rr_rdlen(r) < 3)
			continue;
		rr[*n].pref = ns_get16(ns_rr_rdata(r));
		if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(r) + 2,
		    rr[*n].host, sizeof(rr[*n].host)) < 0)
			return -1;
		if (strcmp(rr[*n].host, ".") == 0)   /* the root: a null MX */
			rr[*n].host[0] = '\0';
		rr[*n].rnd = (unsigned)random();
		(*n)++;
	}
	return 0;
}

enum mx_status
mx_lookup(const char *domain, struct mx_list *out)
{
	unsigned char ans[8192];
	struct mx_rr rr[MX_MAX];
	struct __res_state res;
	size_t n;
	int len;

	memset(out, 0, sizeof(*out));
	memset(&res, 0, sizeof(res));
	if (res_ninit(&res) != 0) {
		snprintf(out->why, sizeof(out->why), "resolver unavailable");
		return MX_TEMP;
	}
	len = res_nquery(&res, domain, ns_c_in, ns_t_mx, ans, sizeof(ans));
	if (len < 0) {
		int h = res.res_h_errno;
		res_nclose(&res);
		if (h == HOST_NOT_FOUND) {
			snprintf(out->why, sizeof(out->why), "domain %s does not exist", domain);
			return MX_NODOMAIN;
		}
		if (h == NO_DATA)   /* no MX: the domain itself (implicit MX) */
			goto implicit;
		snprintf(out->why, sizeof(out->why), "DNS lookup of MX %s failed (%s)", domain,
		    hstrerror(h));
		return MX_TEMP;
	}
	res_nclose(&res);
	if (parse_answer(ans, len, rr, &n) != 0) {
		snprintf(out->why, sizeof(out->why), "malformed DNS answer for MX %s", domain);
		return MX_TEMP;
	}
	if (n == 1 && rr[0].host[0] == '\0')
		return MX_NULL;
	if (n == 0)
		goto implicit;
	qsort(rr, n, sizeof(rr[0]), by_pref);
	for (size_t i = 0; i < n; i++)
		if (rr[i].host[0] != '\0')   /* "." among real MXs: skip it */
			snprintf(out->hosts[out->n++], sizeof(out->hosts[0]), "%s", rr[i].host);
	return out->n > 0 ? MX_OK : MX_NULL;
implicit:
	snprintf(out->hosts[0], sizeof(out->hosts[0]), "%s", domain);
	out->n = 1;
	return MX_OK;
}

int
mx_parse_relay_host(const char *spec, char *host, size_t hostlen, unsigned *port)
{
	const char *end, *colon;
	size_t len;

	if (*spec == '[') {
		if ((end = strchr(spec, ']')) == NULL)
			return -1;
		len = (size_t)(end - spec - 1);
		spec++;
		colon = end[1] == ':' ? end + 1 : NULL;
	} else {
		colon = strrchr(spec, ':');
		len = colon ? (size_t)(colon - spec) : strlen(spec);
	}
	if (len == 0 || len >= hostlen)
		return -1;
	memcpy(host, spec, len);
	host[len] = '\0';
	if (colon != NULL)
		*port = (unsigned)strtoul(colon + 1, NULL, 10);
	return *port > 0 && *port < 65536 ? 0 : -1;
}
