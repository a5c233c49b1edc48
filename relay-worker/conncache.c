/*
 * conncache.c - the one SMTP connection a worker process keeps after a
 * transaction, for the next one to the same host and port (RSET, then
 * MAIL): at most RELAY_CONN_MAX_TX transactions, idle at most
 * RELAY_CONN_IDLE seconds; otherwise, or when the next goes elsewhere, QUIT.
 */
#include "relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "smtpc.h"

/* Between items, what the kept connection says goes to the debug log only. */
static void
idle_logger(void *ctx, const char *command, const char *reply)
{
	struct relay_conn *k = ctx;

	mc_log(MC_LOG_DEBUG, "%s: %s -> %s", k->where, command, reply);
}

static void
describe(struct relay_conn *k)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	const struct sockaddr_in *v4 = (const struct sockaddr_in *)&k->addr;
	const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)&k->addr;

	if (k->addr.ss_family == AF_INET)
		inet_ntop(AF_INET, &v4->sin_addr, ip, sizeof(ip));
	else if (k->addr.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &v6->sin6_addr, ip, sizeof(ip));
	snprintf(k->where, sizeof(k->where), "%s [%s]:%u", k->host, ip, k->port);
}

void
conncache_drop(struct relay *r)
{
	struct relay_conn *k = &r->conn;

	if (k->smtp == NULL)
		return;
	smtpc_set_log(k->smtp, idle_logger, k);
	smtpc_free(k->smtp);        /* QUIT */
	close(k->fd);
	k->smtp = NULL;
	k->fd = -1;
}

struct relay_conn *
conncache_take(struct relay *r, const char *host, unsigned port)
{
	struct relay_conn *k = &r->conn;

	if (k->smtp == NULL)
		return NULL;
	if (k->port == port && strcasecmp(k->host, host) == 0 && smtpc_reusable(k->smtp) &&
	    smtpc_transactions(k->smtp) < RELAY_CONN_MAX_TX &&
	    time(NULL) - k->idle_since <= RELAY_CONN_IDLE)
		return k;
	conncache_drop(r);
	return NULL;
}

void
conncache_keep(struct relay *r, struct smtpc *c, int fd, const char *host, unsigned port,
    const struct sockaddr *addr, socklen_t addrlen)
{
	struct relay_conn *k = &r->conn;

	if (c != k->smtp) {
		conncache_drop(r);
		k->smtp = c;
		k->fd = fd;
		snprintf(k->host, sizeof(k->host), "%s", host);
		k->port = port;
		k->addrlen = addrlen <= sizeof(k->addr) ? addrlen : sizeof(k->addr);
		memset(&k->addr, 0, sizeof(k->addr));
		memcpy(&k->addr, addr, k->addrlen);
		describe(k);
	}
	smtpc_set_log(c, idle_logger, k);
	k->idle_since = time(NULL);
	if (!smtpc_reusable(c) || smtpc_transactions(c) >= RELAY_CONN_MAX_TX)
		conncache_drop(r);
}
