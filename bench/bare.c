/*
 * bare.c - the floor of the start-up benchmarks: the least an SMTP session
 * program can be. Linked to libc only, it prints a 220 greeting on fd 1 and
 * answers EHLO/HELO, RSET and NOOP with 250 and QUIT with 221, reading fd 0,
 * the way bin/smtp-session is run (systemd-socket-activate --inetd, or a pipe).
 * Anything else gets 502. Built by bench/bench.mk into build/bench/bare.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int
say(const char *s)
{
	size_t len = strlen(s), off = 0;

	while (off < len) {
		ssize_t n = write(1, s + off, len - off);
		if (n <= 0)
			return -1;
		off += (size_t)n;
	}
	return 0;
}

int
main(void)
{
	char buf[4096], line[1024];
	size_t have = 0;

	if (say("220 bare.bench.test ESMTP bare\r\n") != 0)
		return 1;
	for (;;) {
		char *nl;
		ssize_t n;

		while ((nl = memchr(buf, '\n', have)) == NULL) {
			if (have == sizeof(buf))
				return 1;
			n = read(0, buf + have, sizeof(buf) - have);
			if (n <= 0)
				return 0;
			have += (size_t)n;
		}
		size_t len = (size_t)(nl - buf) + 1;
		size_t keep = len < sizeof(line) ? len : sizeof(line) - 1;
		memcpy(line, buf, keep);
		line[keep] = '\0';
		memmove(buf, buf + len, have - len);
		have -= len;

		if (strncasecmp(line, "EHLO", 4) == 0) {
			if (say("250-bare.bench.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n") != 0)
				return 1;
		} else if (strncasecmp(line, "HELO", 4) == 0 || strncasecmp(line, "RSET", 4) == 0 ||
		    strncasecmp(line, "NOOP", 4) == 0) {
			if (say("250 OK\r\n") != 0)
				return 1;
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			say("221 bye\r\n");
			return 0;
		} else if (say("502 not here\r\n") != 0) {
			return 1;
		}
	}
}
