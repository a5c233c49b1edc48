/*
 * mx.h - where mail for a domain goes (RFC 5321 5.1): its MX hosts in
 * preference order (equal preferences shuffled), the domain itself when it
 * has no MX (implicit MX), or nowhere for a null MX (RFC 7505).
 */
#ifndef RELAY_MX_H
#define RELAY_MX_H

#include <stddef.h>

#define MX_MAX 16

enum mx_status {
	MX_OK,        /* hosts[] filled */
	MX_NULL,      /* "MX 0 ." : the domain accepts no mail */
	MX_NODOMAIN,  /* NXDOMAIN: no such domain */
	MX_TEMP,      /* DNS failure or timeout: try later */
};

struct mx_list {
	char hosts[MX_MAX][256];
	size_t n;
	char why[256];      /* for MX_NODOMAIN/MX_TEMP */
};

enum mx_status mx_lookup(const char *domain, struct mx_list *out);

/* "[host]:port", "host:port" or "host" (relay_host) into host and port. */
int mx_parse_relay_host(const char *spec, char *host, size_t hostlen, unsigned *port);

#endif
