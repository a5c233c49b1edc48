/*
 * dnsq.c - the few DNS questions the libraries leave to us: a TXT record
 * with a given prefix (a DMARC record at the organizational domain when the
 * public suffix list has no rule for the TLD), and whether a name exists.
 */
#include "inbound.h"

#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Joins the character-strings of one TXT rdata into out. */
static void
txt_join(const unsigned char *rd, size_t len, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < len;) {
		size_t n = rd[i++];
		for (size_t k = 0; k < n && i < len; k++, i++)
			if (o + 1 < outlen)
				out[o++] = (char)rd[i];
	}
	out[o] = '\0';
}

int
dnsq_txt(const char *name, const char *prefix, char *out, size_t outlen)
{
	unsigned char ans[8192];
	struct __res_state res;
	ns_msg msg;
	ns_rr rr;
	int len, found = 1;

	memset(&res, 0, sizeof(res));
	if (res_ninit(&res) != 0)
		return -1;
	len = res_nquery(&res, name, ns_c_in, ns_t_txt, ans, sizeof(ans));
	if (len < 0) {
		int h = res.res_h_errno;
		res_nclose(&res);
		return h == HOST_NOT_FOUND || h == NO_DATA ? 1 : -1;
	}
	res_nclose(&res);
	if (ns_initparse(ans, len, &msg) < 0)
		return -1;
	for (int i = 0; i < ns_msg_count(msg, ns_s_an) && found; i++) {
		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 || ns_rr_type(rr) != ns_t_txt)
			continue;
		txt_join(ns_rr_rdata(rr), ns_rr_rdlen(rr), out, outlen);
		if (strncasecmp(out, prefix, strlen(prefix)) == 0)
			found = 0;
	}
	return found;
}

int
dnsq_exists(const char *name, int type)
{
	unsigned char ans[4096];
	struct __res_state res;
	int len, h;

	memset(&res, 0, sizeof(res));
	if (res_ninit(&res) != 0)
		return -1;
	len = res_nquery(&res, name, ns_c_in, type, ans, sizeof(ans));
	h = res.res_h_errno;
	res_nclose(&res);
	if (len >= 0)
		return 1;
	return h == HOST_NOT_FOUND || h == NO_DATA ? 0 : -1;
}
