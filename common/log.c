/*
 * log.c - one logging path for all programs. Under systemd (JOURNAL_STREAM or
 * INVOCATION_ID set, and the journal socket present) entries go to the journal
 * with MAILCELL_PROGRAM, MAILCELL_SESSION and REMOTE_ADDR fields; otherwise
 * "program[pid]: session remote: message" lines go to stderr - unless stderr
 * is the client's socket (inetd and xinetd pass it as fds 0, 1 and 2): then
 * to syslog, so that log lines never reach the SMTP or POP3 dialogue.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static struct {
	char program[32];
	char session[17];
	char remote[64];
	int journal;
	int syslog;
	int debug;
} lg = { "mailcell", "-", "", 0, 0, 0 };

int
mc_random_bytes(void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t r = getrandom(p, n, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int
mc_random_hex(char *out, size_t n)
{
	unsigned char raw[64];
	static const char hex[] = "0123456789abcdef";

	if (n > sizeof(raw) || mc_random_bytes(raw, n) != 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * n] = '\0';
	return 0;
}

static int
journal_wanted(enum mc_log_target target)
{
	struct stat st;

	if (target == MC_LOG_STDERR)
		return 0;
	if (stat(JOURNAL_SOCKET, &st) != 0 || !S_ISSOCK(st.st_mode))
		return 0;
	if (target == MC_LOG_JOURNAL)
		return 1;
	return getenv("JOURNAL_STREAM") != NULL || getenv("INVOCATION_ID") != NULL;
}

/* 1 when fd 2 is the same socket as fd 0: the peer would read our log. */
static int
stderr_is_client(void)
{
	struct stat in, err;

	if (fstat(0, &in) != 0 || fstat(2, &err) != 0 || !S_ISSOCK(err.st_mode))
		return 0;
	return in.st_dev == err.st_dev && in.st_ino == err.st_ino;
}

void
mc_log_init(const char *program, enum mc_log_target target, int debug)
{
	snprintf(lg.program, sizeof(lg.program), "%s", program);
	if (mc_random_hex(lg.session, 8) != 0)
		snprintf(lg.session, sizeof(lg.session), "%08x", (unsigned)getpid());
	lg.journal = journal_wanted(target);
	lg.syslog = !lg.journal && stderr_is_client();
	if (lg.syslog)
		openlog(lg.program, LOG_PID | LOG_NDELAY, LOG_MAIL);
	lg.debug = debug;
}

void
mc_log_set_remote(const char *addr)
{
	snprintf(lg.remote, sizeof(lg.remote), "%s", addr ? addr : "");
}

const char *
mc_log_session_id(void)
{
	return lg.session;
}

/*
 * One entry in systemd's native journal protocol: a datagram of FIELD=value
 * lines (values here never hold a newline). libsystemd would do the same but
 * costs every session process about 1.5 ms to load with its dependencies;
 * the protocol is documented as stable for clients that write it themselves.
 */
static int
journal_send(enum mc_log_level level, const char *msg)
{
	static int fd = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[2600];
	int n;

	if (fd < 0 && (fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", JOURNAL_SOCKET);
	n = snprintf(buf, sizeof(buf), "MESSAGE=%s\nPRIORITY=%d\nSYSLOG_IDENTIFIER=%s\n"
	    "MAILCELL_PROGRAM=%s\nMAILCELL_SESSION=%s\nREMOTE_ADDR=%s\n", msg, (int)level,
	    lg.program, lg.program, lg.session, lg.remote[0] ? lg.remote : "-");
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -1;
	return sendto(fd, buf, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa, sizeof(sa)) == n
	    ? 0 : -1;
}

/* Replace control characters so that a hostile string cannot forge lines. */
static void
sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

void
mc_log(enum mc_log_level level, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	if (level == MC_LOG_DEBUG && !lg.debug)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sanitize(msg);
	if (lg.journal && journal_send(level, msg) == 0)
		return;
	if (lg.syslog) {
		syslog((int)level, "%s %s: %s", lg.session, lg.remote[0] ? lg.remote : "-", msg);
		return;
	}
	if (lg.remote[0])
		fprintf(stderr, "%s[%ld]: %s %s: %s\n", lg.program, (long)getpid(), lg.session,
		    lg.remote, msg);
	else
		fprintf(stderr, "%s[%ld]: %s: %s\n", lg.program, (long)getpid(), lg.session, msg);
}
