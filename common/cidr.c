/*
 * cidr.c - parses network lists (addresses with an optional /prefix,
 * separated by spaces or commas) and matches client addresses against them.
 * IPv4-mapped IPv6 clients (::ffff:a.b.c.d) match IPv4 networks.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct net {
	int family;
	unsigned char addr[16];
	unsigned prefix;
};

/* Parses "addr" or "addr/prefix" (len octets of text); 0 or -1. */
static int
parse_net(const char *text, size_t len, struct net *n)
{
	char buf[64], *slash;
	unsigned long prefix;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, text, len);
	buf[len] = '\0';
	slash = strchr(buf, '/');
	if (slash != NULL)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, n->addr) == 1)
		n->family = AF_INET;
	else if (inet_pton(AF_INET6, buf, n->addr) == 1)
		n->family = AF_INET6;
	else
		return -1;
	n->prefix = n->family == AF_INET ? 32 : 128;
	if (slash != NULL) {
		char *end;
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		prefix = strtoul(slash + 1, &end, 10);
		if (*end != '\0' || prefix > n->prefix)
			return -1;
		n->prefix = (unsigned)prefix;
	}
	return 0;
}

static int
in_net(const struct net *n, const unsigned char *addr)
{
	unsigned full = n->prefix / 8, rest = n->prefix % 8;

	if (memcmp(n->addr, addr, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((n->addr[full] ^ addr[full]) & (0xff << (8 - rest))) == 0;
}

/* Calls fn on each network; stops at the first non-zero. -1 on bad syntax. */
static int
each_net(const char *list, int (*fn)(const struct net *, void *), void *ctx)
{
	const char *p = list;

	for (;;) {
		struct net n;
		size_t len;
		int r;

		p += strspn(p, " ,\t");
		if (*p == '\0')
			return 0;
		len = strcspn(p, " ,\t");
		if (parse_net(p, len, &n) != 0)
			return -1;
		if ((r = fn(&n, ctx)) != 0)
			return r;
		p += len;
	}
}

static int
accept_any(const struct net *n, void *ctx)
{
	(void)n;
	(void)ctx;
	return 0;
}

int
mc_cidr_list_valid(const char *list)
{
	return each_net(list, accept_any, NULL) == 0;
}

struct client {
	int family;
	unsigned char addr[16];
};

static int
match_one(const struct net *n, void *ctx)
{
	const struct client *c = ctx;

	return n->family == c->family && in_net(n, c->addr);
}

int
mc_cidr_match(const char *list, const char *ip)
{
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	struct client c;

	if (inet_pton(AF_INET, ip, c.addr) == 1) {
		c.family = AF_INET;
	} else if (inet_pton(AF_INET6, ip, c.addr) == 1) {
		c.family = AF_INET6;
		if (memcmp(c.addr, mapped, sizeof(mapped)) == 0) {
			memmove(c.addr, c.addr + 12, 4);
			c.family = AF_INET;
		}
	} else {
		return 0;
	}
	return each_net(list, match_one, &c) == 1;
}
