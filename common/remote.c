/*
 * remote.c - finds the client address the way DESIGN.md orders the sources,
 * and keeps only address characters so that logs and headers stay clean.
 */
#include "remote.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static int
peer_address(char *out, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(0, (struct sockaddr *)&ss, &len) != 0)
		return -1;
	if (ss.ss_family == AF_INET &&
	    inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)cap))
		return 0;
	if (ss.ss_family == AF_INET6 &&
	    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)cap)) {
		if (strncmp(out, "::ffff:", 7) == 0 && strchr(out, '.') != NULL)
			memmove(out, out + 7, strlen(out + 7) + 1);   /* v4-mapped */
		return 0;
	}
	return -1;
}

static int
plausible(const char *ip)
{
	return *ip != '\0' && strlen(ip) < 46 && strspn(ip, "0123456789abcdefABCDEF.:") == strlen(ip);
}

void
mc_remote_ip(const char *flag_ip, char *out, size_t cap)
{
	const char *env;

	if (flag_ip != NULL && *flag_ip != '\0')
		snprintf(out, cap, "%s", flag_ip);
	else if ((env = getenv("TCPREMOTEIP")) != NULL && *env != '\0')
		snprintf(out, cap, "%s", env);
	else if (peer_address(out, cap) == 0)
		;
	else if ((env = getenv("REMOTE_ADDR")) != NULL && *env != '\0')
		snprintf(out, cap, "%s", env);
	else
		snprintf(out, cap, "unknown");
	if (!plausible(out))
		snprintf(out, cap, "unknown");
}
