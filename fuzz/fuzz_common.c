/*
 * fuzz_common.c - shared pieces of the libFuzzer harnesses (see fuzz_common.h):
 * option lines, pipe/memfd connections, the configuration, the nanosleep
 * wrapper and the SMTP reply oracle.
 */
#include "fuzz_common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

_Thread_local int fuzz_no_sleep;

/* Linked with -Wl,--wrap=nanosleep: the sessions' failure delays. */
int __real_nanosleep(const struct timespec *req, struct timespec *rem);
int __wrap_nanosleep(const struct timespec *req, struct timespec *rem);

int
__wrap_nanosleep(const struct timespec *req, struct timespec *rem)
{
	if (fuzz_no_sleep)
		return 0;
	return __real_nanosleep(req, rem);
}

/* Where oracle failures are reported: stderr as it was before -close_fd_mask=2. */
static int report_fd = 2;

int LLVMFuzzerInitialize(int *argc, char ***argv);

/* libFuzzer calls this before it closes stderr for -close_fd_mask=2. */
int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int fd = fcntl(2, F_DUPFD_CLOEXEC, 3);

	(void)argc;
	(void)argv;
	if (fd >= 0)
		report_fd = fd;
	fuzz_init();
	return 0;
}

void
fuzz_init(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	signal(SIGPIPE, SIG_IGN);
	mc_log_init("fuzz", MC_LOG_STDERR, 0);
}

void
fuzz_fail(const char *what, const char *detail, size_t len)
{
	char buf[1600];
	size_t n = (size_t)snprintf(buf, 400, "fuzz oracle: %s: \"", what);

	if (n >= 400)
		n = 399;
	for (size_t i = 0; i < len && i < 250; i++) {
		unsigned char c = (unsigned char)detail[i];
		if (c >= 32 && c < 127 && c != '\\' && c != '"')
			buf[n++] = (char)c;
		else
			n += (size_t)snprintf(buf + n, 5, "\\x%02x", c);
	}
	memcpy(buf + n, "\"\n", 2);
	n += 2;
	(void)!write(report_fd, buf, n);
	abort();
}

void
fuzz_opts_parse(const uint8_t *data, size_t size, struct fuzz_opts *o,
    const uint8_t **rest, size_t *restlen)
{
	const uint8_t *nl;
	size_t i;

	memset(o, 0, sizeof(*o));
	*rest = data;
	*restlen = size;
	if (size < 2 || data[0] != '#' || data[1] != '!' ||
	    (nl = memchr(data, '\n', size)) == NULL)
		return;
	for (i = 2; data + i < nl; ) {
		unsigned char c = data[i++];
		unsigned long n = 0;

		while (data + i < nl && isdigit(data[i]) && n < 100000000)
			n = n * 10 + (unsigned long)(data[i++] - '0');
		if (c < 128 && isalnum(c)) {
			o->on[c] = 1;
			o->num[c] = n;
		}
	}
	*rest = nl + 1;
	*restlen = size - (size_t)(nl + 1 - data);
}

/* Writes all of buf to a non-blocking fd; what does not fit is dropped. */
static void
put(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

int
fuzz_conn_open(struct fuzz_conn *c, const void *a, size_t alen, const void *b, size_t blen)
{
	int p[2];
	size_t want = alen + blen + 4096;

	c->rfd = c->wfd = -1;
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0)
		return -1;
	if (want > 65536)   /* the default pipe holds 64 KiB */
		(void)fcntl(p[1], F_SETPIPE_SZ, want > (1 << 20) ? 1 << 20 : (int)want);
	put(p[1], a, alen);
	put(p[1], b, blen);
	close(p[1]);
	c->rfd = p[0];
	if ((c->wfd = memfd_create("fuzz-out", MFD_CLOEXEC)) < 0) {
		close(c->rfd);
		c->rfd = -1;
		return -1;
	}
	return 0;
}

char *
fuzz_conn_output(struct fuzz_conn *c, size_t *len)
{
	off_t end = lseek(c->wfd, 0, SEEK_END);
	char *buf;
	size_t got = 0;

	*len = 0;
	if (end <= 0 || (buf = malloc((size_t)end + 1)) == NULL)
		return NULL;
	while (got < (size_t)end) {
		ssize_t n = pread(c->wfd, buf + got, (size_t)end - got, (off_t)got);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*len = got;
	if (getenv("FUZZ_SHOW") != NULL) {
		fwrite(buf, 1, got, stdout);
		fflush(stdout);
	}
	return buf;
}

void
fuzz_conn_close(struct fuzz_conn *c)
{
	if (c->rfd >= 0)
		close(c->rfd);
	if (c->wfd >= 0)
		close(c->wfd);
	c->rfd = c->wfd = -1;
}

static const char fuzz_conf[] =
    "hostname = mx.example.test\n"
    "mongodb_uri = mongodb://127.0.0.1:1\n"
    "db_timeout = 1\n"
    "tls_cert =\n"
    "tls_key =\n"
    "relay_trigger =\n"
    "log_target = stderr\n"
    "allow_plaintext_auth = yes\n"
    "idle_timeout = 2\n"
    "pop3_idle_timeout = 2\n"
    "dns_timeout = 1\n"
    "inbound_checks = yes\n"
    "trusted_networks = 127.0.0.0/8 ::1\n"
    "max_errors = 20\n";

const struct mc_config *
fuzz_config(void)
{
	static struct mc_config cfg;
	static int loaded;
	char err[512];

	if (!loaded) {
		if (mc_config_parse(&cfg, "fuzz.conf", fuzz_conf, err, sizeof(err)) != 0) {
			fprintf(stderr, "fuzz: %s\n", err);
			abort();
		}
		loaded = 1;
	}
	return &cfg;
}

void
fuzz_config_apply(struct mc_config *cfg, const struct fuzz_opts *o)
{
	static char postmaster[] = "alice@example.test";

	if (o->on['t'])
		cfg->allow_plaintext_auth = 0;
	if (o->on['v'])
		cfg->vrfy_policy = MC_VRFY_OPEN;
	if (o->on['c'])
		cfg->vrfy_policy = MC_VRFY_CLOSED;
	if (o->on['z']) {
		cfg->max_message_size = 1024;
		cfg->max_recipients = 3;
	}
	if (o->on['e'] && o->num['e'] >= 1 && o->num['e'] <= 1000)
		cfg->max_errors = (unsigned)o->num['e'];
	if (o->on['m'])
		cfg->max_command_line = 16384;
	if (o->on['j'])
		cfg->spf_fail_reject = 1;
	if (o->on['d'])
		cfg->dmarc_temperror_defer = 1;
	if (o->on['n'])
		cfg->inbound_checks = 0;
	if (o->on['w'])
		cfg->postmaster = postmaster;
}

const char *
fuzz_remote_ip(const struct fuzz_opts *o)
{
	if (o->on['u'])
		return "unknown";
	if (o->on['T'])
		return "127.0.0.1";
	if (o->on['6'])
		return "2001:db8::25";
	return "192.0.2.1";
}

static unsigned char
fold(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

/* By hand, not strncasecmp: libc calls here would feed the fuzzer's hints. */
int
fuzz_contains_ci(const void *s, size_t n, const char *needle)
{
	const unsigned char *p = s, *q = (const unsigned char *)needle;
	size_t m = strlen(needle), i, k;

	for (i = 0; i + m <= n; i++) {
		for (k = 0; k < m && fold(p[i + k]) == fold(q[k]); k++)
			;
		if (k == m)
			return 1;
	}
	return 0;
}

void
fuzz_check_smtp_replies(const char *out, size_t len)
{
	size_t pos = 0;
	char cont[3] = { 0 };
	int in_cont = 0;

	while (pos < len) {
		const char *line = out + pos, *crlf = NULL;
		size_t n;

		for (size_t i = pos; i + 1 < len; i++) {
			if (out[i] == '\r' && out[i + 1] == '\n') {
				crlf = out + i;
				break;
			}
		}
		if (crlf == NULL)
			fuzz_fail("SMTP reply without CR LF", line, len - pos);
		n = (size_t)(crlf - line);
		if (n < 4 || line[0] < '2' || line[0] > '5' || !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) || (line[3] != ' ' && line[3] != '-'))
			fuzz_fail("malformed SMTP reply line", line, n);
		if (memchr(line, '\r', n) || memchr(line, '\n', n) || memchr(line, '\0', n))
			fuzz_fail("CR, LF or NUL inside an SMTP reply", line, n);
		if (in_cont && memcmp(cont, line, 3) != 0)
			fuzz_fail("multi-line SMTP reply changes its code", line, n);
		in_cont = line[3] == '-';
		memcpy(cont, line, 3);
		pos += n + 2;
	}
	if (in_cont)
		fuzz_fail("multi-line SMTP reply without its last line", out, len);
}
