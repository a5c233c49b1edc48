/*
 * test_smtpc.c - the ESMTP client (relay-worker/smtpc.c) against a scripted
 * server: a child process over a socketpair plays each step (expect a
 * command, send a reply, take DATA/BDAT content, TLS) and reports a mismatch
 * through its exit status. A self-signed certificate serves STARTTLS. Also
 * several transactions on one connection (RSET, and retries when it went stale).
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "io.h"
#include "smtpc.h"
#include "tls.h"

#define PEER_IDLE_MS 4000
#define CHUNK 65536

/* ---- the scripted server ---- */

enum op {
	OP_END,
	OP_EXPECT,      /* a command line equal to s */
	OP_PREFIX,      /* a command line starting with s */
	OP_SEND,        /* s */
	OP_QUIET,       /* nothing arrives for ms (the client waits for our reply) */
	OP_DATA,        /* content through CRLF.CRLF, equal to s */
	OP_DATA_ABORT,  /* content then EOF, no final dot; a prefix of s. Ends the script */
	OP_BDAT,        /* BDAT chunks through LAST: content s, sizes `sizes`; reply to others */
	OP_BDAT_ABORT,  /* BDAT chunks then EOF: a prefix of s. Ends the script */
	OP_TLS,         /* the TLS handshake as the server */
	OP_TLS_FAIL,    /* the handshake must fail. Ends the script */
	OP_STALL,       /* sleep ms */
	OP_CLOSE,       /* hang up. Ends the script */
};

struct step {
	enum op op;
	const char *s;
	size_t len;
	int ms;
	const char *sizes;      /* OP_BDAT: "65536,100 LAST" */
	const char *reply;      /* OP_BDAT: to each chunk but the last (default 250) */
};

#define EXPECT(x) { OP_EXPECT, (x), sizeof(x) - 1, 0, NULL, NULL }
#define PREFIX(x) { OP_PREFIX, (x), sizeof(x) - 1, 0, NULL, NULL }
#define SEND(x) { OP_SEND, (x), sizeof(x) - 1, 0, NULL, NULL }
#define QUIET { OP_QUIET, NULL, 0, 300, NULL, NULL }
#define DATA(x) { OP_DATA, (x), sizeof(x) - 1, 0, NULL, NULL }
#define TLS { OP_TLS, NULL, 0, 0, NULL, NULL }
#define STALL(ms) { OP_STALL, NULL, 0, (ms), NULL, NULL }
#define CLOSE { OP_CLOSE, NULL, 0, 0, NULL, NULL }
#define END { OP_END, NULL, 0, 0, NULL, NULL }
#define GREET SEND("220 mx.example ESMTP\r\n")
#define QUIT_OK EXPECT("QUIT"), SEND("221 2.0.0 bye\r\n")

static struct {
	char dir[64], cert[128], key[128];
	SSL_CTX *server, *client_any, *client_verify, *client_untrusting;
} T;

static int peer_fail(int, const char *, ...) __attribute__((format(printf, 2, 3)));

static int
peer_fail(int at, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "peer step %d: ", at);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return -1;
}

static int
peer_line(struct mc_io *io, const struct step *s, int at)
{
	const char *line;
	size_t len;
	unsigned flags;
	int st = mc_io_read_line(io, MC_IO_LINE_MAX, &line, &len, &flags);

	if (st != MC_IO_OK)
		return peer_fail(at, "want \"%s\", got %s", s->s, mc_io_status_str(st));
	if (flags != MC_IO_LINE_CRLF)
		return peer_fail(at, "line \"%s\" flags %#x", line, flags);
	if (len < s->len || memcmp(line, s->s, s->len) != 0 ||
	    (s->op == OP_EXPECT && len != s->len))
		return peer_fail(at, "want \"%s\", got \"%s\"", s->s, line);
	return 0;
}

static int
peer_quiet(struct mc_io *io, int fd, const struct step *s, int at)
{
	struct pollfd p = { fd, POLLIN, 0 };

	if (mc_io_pending(io) > 0 || poll(&p, 1, s->ms) != 0)
		return peer_fail(at, "the client did not wait for the reply");
	return 0;
}

/* Content up to the dot line (or EOF for OP_DATA_ABORT). */
static int
peer_data(struct mc_io *io, const struct step *s, int at)
{
	size_t cap = s->len + 65536, n = 0;
	char *got = malloc(cap);
	int prev_crlf = 1, rc = 0;

	for (;;) {
		const char *line;
		size_t len;
		unsigned flags;
		int st = mc_io_read_line(io, MC_IO_LINE_MAX, &line, &len, &flags);

		if ((st == MC_IO_EOF || st == MC_IO_ERROR) && s->op == OP_DATA_ABORT)
			break;  /* closed, or reset with our replies unread */
		if (st != MC_IO_OK || n + len + 2 > cap) {
			rc = peer_fail(at, "content: %s after %zu octets", mc_io_status_str(st), n);
			break;
		}
		memcpy(got + n, line, len);
		n += len;
		if (flags & MC_IO_LINE_CRLF)
			memcpy(got + n, "\r\n", 2), n += 2;
		else if (flags & MC_IO_LINE_BARE_LF)
			got[n++] = '\n';
		if (prev_crlf && len == 1 && line[0] == '.' && flags == MC_IO_LINE_CRLF) {
			if (s->op == OP_DATA_ABORT)
				rc = peer_fail(at, "a final dot after a failed source");
			break;
		}
		prev_crlf = (flags & MC_IO_LINE_CRLF) != 0;
	}
	if (rc == 0 && s->op == OP_DATA && (n != s->len || memcmp(got, s->s, n) != 0))
		rc = peer_fail(at, "content differs: got %zu octets:\n%.*s\n--- want %zu:\n%.*s",
		    n, (int)n, got, s->len, (int)s->len, s->s);
	if (rc == 0 && s->op == OP_DATA_ABORT && (n > s->len || memcmp(got, s->s, n) != 0))
		rc = peer_fail(at, "aborted content is not a prefix (%zu octets)", n);
	free(got);
	return rc;
}

static int
peer_raw(struct mc_io *io, char *buf, size_t n)
{
	size_t off = 0, got;

	while (off < n) {
		if (mc_io_read_raw(io, buf + off, n - off, &got) != MC_IO_OK)
			return -1;
		off += got;
	}
	return 0;
}

/* BDAT chunks through LAST (or EOF for OP_BDAT_ABORT, or a refused chunk). */
static int
peer_bdat(struct mc_io *io, const struct step *s, int at)
{
	size_t cap = s->len + 2 * CHUNK, n = 0, slen = 0;
	char *got = malloc(cap), sizes[512] = "";
	const char *reply = s->reply ? s->reply : "250 2.0.0 chunk ok\r\n";
	int rc = 0;

	for (;;) {
		const char *line;
		size_t len, size;
		unsigned flags;
		char last[8] = "";
		int st = mc_io_read_line(io, 100, &line, &len, &flags);

		if ((st == MC_IO_EOF || st == MC_IO_ERROR) && s->op == OP_BDAT_ABORT)
			break;  /* closed, or reset with our replies unread */
		if (st != MC_IO_OK || sscanf(line, "BDAT %zu%7s", &size, last) < 1 ||
		    (last[0] && strcmp(last, "LAST") != 0) || n + size > cap) {
			rc = peer_fail(at, "BDAT line \"%s\" (%s)", line ? line : "",
			    mc_io_status_str(st));
			break;
		}
		if (peer_raw(io, got + n, size) != 0) {
			rc = peer_fail(at, "BDAT chunk of %zu cut short", size);
			break;
		}
		n += size;
		slen += (size_t)snprintf(sizes + slen, sizeof(sizes) - slen, "%s%zu%s",
		    slen ? "," : "", size, last[0] ? " LAST" : "");
		if (last[0])
			break;
		mc_io_write(io, reply, strlen(reply));
		mc_io_flush(io);
		if (reply[0] != '2')
			break;
	}
	if (rc == 0 && s->op == OP_BDAT && (n != s->len || memcmp(got, s->s, n) != 0))
		rc = peer_fail(at, "BDAT content differs: %zu octets, want %zu", n, s->len);
	if (rc == 0 && s->op == OP_BDAT_ABORT && (n > s->len || memcmp(got, s->s, n) != 0))
		rc = peer_fail(at, "aborted BDAT content is not a prefix");
	if (rc == 0 && s->sizes && strcmp(sizes, s->sizes) != 0)
		rc = peer_fail(at, "BDAT sizes \"%s\", want \"%s\"", sizes, s->sizes);
	free(got);
	return rc;
}

/* One step: 0 go on, 1 the script ends here, -1 mismatch. */
static int
peer_step(struct mc_io *io, int fd, const struct step *s, int at)
{
	struct timespec ts;

	switch (s->op) {
	case OP_EXPECT:
	case OP_PREFIX:
		return peer_line(io, s, at);
	case OP_SEND:
		if (mc_io_write(io, s->s, s->len) != MC_IO_OK || mc_io_flush(io) != MC_IO_OK)
			return peer_fail(at, "send failed");
		return 0;
	case OP_QUIET:
		return peer_quiet(io, fd, s, at);
	case OP_DATA:
	case OP_BDAT:
		return s->op == OP_DATA ? peer_data(io, s, at) : peer_bdat(io, s, at);
	case OP_DATA_ABORT:
	case OP_BDAT_ABORT:
		if ((s->op == OP_DATA_ABORT ? peer_data(io, s, at) : peer_bdat(io, s, at)) != 0)
			return -1;
		return 1;
	case OP_TLS:
		if (mc_io_start_tls_server(io, T.server) != MC_IO_OK)
			return peer_fail(at, "TLS: %s", mc_io_last_error(io));
		return 0;
	case OP_TLS_FAIL:
		if (mc_io_start_tls_server(io, T.server) == MC_IO_OK)
			return peer_fail(at, "TLS handshake succeeded");
		return 1;
	case OP_STALL:
		ts.tv_sec = s->ms / 1000;
		ts.tv_nsec = (long)(s->ms % 1000) * 1000000L;
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
		return 0;
	case OP_CLOSE:
		return 1;
	case OP_END:
		break;
	}
	return 0;
}

/* The child: play the script, then nothing but EOF may come. Never returns. */
static void
peer_run(int fd, const struct step *steps)
{
	struct mc_io *io = mc_io_new(fd, fd, PEER_IDLE_MS);
	const char *line;
	size_t len;
	unsigned flags;
	int i, rc = 0, st;

	if (io == NULL)
		_exit(2);
	for (i = 0; steps[i].op != OP_END; i++)
		if ((rc = peer_step(io, fd, &steps[i], i)) != 0)
			break;
	if (rc < 0)
		_exit(10 + i);
	if (rc == 0 && (st = mc_io_read_line(io, MC_IO_LINE_MAX, &line, &len, &flags)) !=
	    MC_IO_EOF) {
		peer_fail(i, "after the script: %s \"%s\"", mc_io_status_str(st), line ? line : "");
		_exit(9);
	}
	mc_io_free(io);
	_exit(0);
}

/* ---- the client side ---- */

struct mem {
	const char *data;
	size_t len, pos, step, fail_at;
	int opens, open;
};

static int
mem_open(void *ctx)
{
	struct mem *m = ctx;

	m->pos = 0;
	m->opens++;
	m->open = 1;
	return 0;
}

static int
mem_read(void *ctx, void *buf, size_t len, size_t *got)
{
	struct mem *m = ctx;
	size_t n = m->len - m->pos;

	*got = 0;
	if (m->fail_at > 0 && m->pos >= m->fail_at)
		return -1;
	if (m->step > 0 && n > m->step)
		n = m->step;
	if (m->fail_at > 0 && n > m->fail_at - m->pos)
		n = m->fail_at - m->pos;
	if (n > len)
		n = len;
	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	*got = n;
	return 0;
}

static void
mem_close(void *ctx)
{
	((struct mem *)ctx)->open = 0;
}

static const char *
mem_error(void *ctx)
{
	(void)ctx;
	return "GridFS chunk missing";
}

struct signer {
	const char *hdr;
	int calls;
	const struct msgsrc *seen;
	char content[4096];     /* what the source yielded to the signer */
	size_t clen;
};

static const char *
sign_cb(void *ctx, const struct msgsrc *src)
{
	struct signer *s = ctx;
	size_t got;

	s->calls++;
	s->seen = src;
	s->clen = 0;
	if (src->open(src->ctx) != 0)
		return NULL;
	do {
		got = 0;
		if (src->read(src->ctx, s->content + s->clen, sizeof(s->content) - s->clen,
		    &got) != 0)
			break;
		s->clen += got;
	} while (got > 0 && s->clen < sizeof(s->content));
	src->close(src->ctx);
	return s->hdr;
}

struct run {
	struct smtpc_opts o;
	struct smtpc_msg m;
	struct smtpc_rcpt rc[3];
	struct mem mem;
	struct msgsrc src;
	struct signer sig;
	enum smtpc_status st;
	char why[512];
	char log[16384];
	size_t loglen;
	double secs;
};

static void
log_cb(void *ctx, const char *cmd, const char *reply)
{
	struct run *r = ctx;
	size_t start = r->loglen;

	r->loglen += (size_t)snprintf(r->log + r->loglen, sizeof(r->log) - r->loglen,
	    "%s => %s\n", cmd, reply);
	if (r->loglen >= sizeof(r->log))
		r->loglen = sizeof(r->log) - 1;
	for (size_t i = start; i + 1 < r->loglen; i++)
		if (r->log[i] == '\n')
			r->log[i] = '|';    /* reply lines: one log line per entry */
}

/* A run with two recipients, a 7-bit message, opportunistic TLS. */
static void
run_init(struct run *r, const char *msg, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->o.helo_name = "client.example";
	r->o.server_name = "localhost";
	r->o.tls = SMTPC_TLS_OPPORTUNISTIC;
	r->o.tls_ctx = T.client_any;
	r->o.timeout = 5;
	r->o.log = log_cb;
	r->o.log_ctx = r;
	r->rc[0].address = "b@example.net";
	r->rc[1].address = "c@example.net";
	r->mem.data = msg;
	r->mem.len = len;
	r->src = (struct msgsrc){ &r->mem, mem_open, mem_read, mem_close, mem_error };
	r->m.sender = "a@example.org";
	r->m.rcpts = r->rc;
	r->m.nrcpts = 2;
	r->m.src = &r->src;
	r->m.size = len;
	r->m.body = SMTPC_7BIT;
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Runs smtpc_deliver against the script; fails the test if the peer did. */
static void
run_script(struct run *r, const struct step *steps)
{
	int sv[2], status = 0;
	pid_t pid;
	double t0;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		peer_run(sv[1], steps);
	}
	close(sv[1]);
	t0 = now();
	r->st = smtpc_deliver(sv[0], &r->o, &r->m, r->why, sizeof(r->why));
	r->secs = now() - t0;
	close(sv[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_false(r->mem.open);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("peer failed (status %#x, step %d); why: %s\nlog:\n%s", status,
		    WIFEXITED(status) ? WEXITSTATUS(status) - 10 : -1, r->why, r->log);
}

static void
expect_rcpt(const struct smtpc_rcpt *rc, int code, const char *enh, const char *text)
{
	if (rc->code != code || strcmp(rc->enh, enh) != 0 || strstr(rc->reply, text) == NULL)
		fail_msg("%s: got %d \"%s\" \"%s\", want %d \"%s\" \"...%s...\"", rc->address,
		    rc->code, rc->enh, rc->reply, code, enh, text);
}

static void
expect_why(const struct run *r, const char *part)
{
	if (strstr(r->why, part) == NULL)
		fail_msg("why \"%s\" lacks \"%s\"\nlog:\n%s", r->why, part, r->log);
}

#define LIT(s) (s), sizeof(s) - 1

/* ---- tests ---- */

static void
test_all_extensions_bdat_pipelined(void **state)
{
	static const char hdr[] = "DKIM-Signature: v=1; a=rsa-sha256; b=x\r\n";
	size_t len = 150000, total = len + sizeof(hdr) - 1;
	char *msg = malloc(len), *wire = malloc(total), sizes[64], want_log[2048];
	struct run r;

	(void)state;
	for (size_t i = 0; i < len; i++)
		msg[i] = i % 72 == 70 ? '\r' : i % 72 == 71 ? '\n' : (char)(i % 72 == 0 ? '.' :
		    "abc\xc3\xa9 xyz"[i % 9]);
	memcpy(wire, hdr, sizeof(hdr) - 1);
	memcpy(wire + sizeof(hdr) - 1, msg, len);
	snprintf(sizes, sizeof(sizes), "%d,%d,%zu LAST", CHUNK, CHUNK, total - 2 * CHUNK);
	run_init(&r, msg, len);
	r.m.body = SMTPC_8BITMIME;
	r.m.smtputf8 = 1;
	r.m.sign = sign_cb;
	r.m.sign_ctx = &r.sig;
	r.sig.hdr = hdr;
	{
		const struct step steps[] = {
			SEND("220-mx.example ESMTP\r\n220 ready\r\n"),
			EXPECT("EHLO client.example"),
			SEND("250-mx.example hello\r\n250-PIPELINING\r\n250-chunking\r\n"
			    "250-BINARYMIME\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 10000000\r\n"
			    "250 ENHANCEDSTATUSCODES\r\n"),
			/* all three before any reply: a waiting client would stall here */
			EXPECT("MAIL FROM:<a@example.org> SIZE=150000 BODY=8BITMIME SMTPUTF8"),
			EXPECT("RCPT TO:<b@example.net>"),
			EXPECT("RCPT TO:<c@example.net>"),
			SEND("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n"),
			{ OP_BDAT, wire, total, 0, sizes, NULL },
			SEND("250 2.0.0 queued as X\r\n"),
			QUIT_OK,
			END,
		};
		run_script(&r, steps);
	}
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 250, "2.0.0", "queued as X");
	expect_rcpt(&r.rc[1], 250, "2.0.0", "queued as X");
	assert_string_equal(r.rc[0].reply, "queued as X");
	assert_int_equal(r.sig.calls, 1);
	assert_ptr_equal(r.sig.seen, &r.src);
	assert_int_equal(r.mem.opens, 2);       /* the signer, then the content */
	snprintf(want_log, sizeof(want_log),
	    " => 220-mx.example ESMTP|220 ready\n"
	    "EHLO client.example => 250-mx.example hello|250-PIPELINING|250-chunking|"
	    "250-BINARYMIME|250-8BITMIME|250-SMTPUTF8|250-SIZE 10000000|250 ENHANCEDSTATUSCODES\n"
	    "MAIL FROM:<a@example.org> SIZE=150000 BODY=8BITMIME SMTPUTF8 => 250 2.1.0 ok\n"
	    "RCPT TO:<b@example.net> => 250 2.1.5 ok\n"
	    "RCPT TO:<c@example.net> => 250 2.1.5 ok\n"
	    "<message: %zu octets via BDAT> => 250 2.0.0 queued as X\n"
	    "QUIT => 221 2.0.0 bye\n", total);
	assert_string_equal(r.log, want_log);
	free(msg);
	free(wire);
}

static void
test_no_pipelining_data_dot_stuffing(void **state)
{
	static const char msg[] =
	    "Subject: dots\r\n\r\n.leading\r\n..two\r\nmid.dle\r\n.\r\nend\r\n";
	static const char wire[] =
	    "X-Sig: 1\r\nSubject: dots\r\n\r\n..leading\r\n...two\r\nmid.dle\r\n..\r\nend\r\n"
	    ".\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 8BITMIME\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		QUIET,
		SEND("250 ok\r\n"),
		EXPECT("RCPT TO:<b@example.net>"),
		QUIET,
		SEND("250 ok\r\n"),
		EXPECT("RCPT TO:<c@example.net>"),
		QUIET,
		SEND("250 ok\r\n"),
		EXPECT("DATA"),
		QUIET,
		SEND("354 go ahead\r\n"),
		DATA(wire),
		SEND("250 2.0.0 ok id=1\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.mem.step = 1;         /* one octet per read: the stuffer keeps its state */
	r.m.sign = sign_cb;
	r.m.sign_ctx = &r.sig;
	r.sig.hdr = "X-Sig: 1";     /* no CRLF: one is added */
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 250, "2.0.0", "ok id=1");
	expect_rcpt(&r.rc[1], 250, "2.0.0", "ok id=1");
	assert_non_null(strstr(r.log, "DATA => 354 go ahead\n"));
	assert_non_null(strstr(r.log, "<message: 61 octets via DATA> => 250 2.0.0 ok id=1\n"));
}

static void
test_data_line_ends_fixed(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nbare\nlf\rcr\r\n.and no end";
	static const char wire[] =
	    "Subject: x\r\n\r\nbare\r\nlf\r\ncr\r\n..and no end\r\n.\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA(wire),
		SEND("250 ok\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.mem.step = 3;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[1], 250, "", "ok");
}

static void
test_ehlo_refused_helo(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("502 5.5.2 what is EHLO\r\n"),
		EXPECT("HELO client.example"),
		SEND("250 mx\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		SEND("250 ok\r\n"),
		EXPECT("RCPT TO:<b@example.net>"),
		SEND("250 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA("Subject: x\r\n\r\nhi\r\n.\r\n"),
		SEND("250 ok\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.m.nrcpts = 1;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 250, "", "ok");
	assert_non_null(strstr(r.log, "EHLO client.example => 502 5.5.2 what is EHLO\n"));
}

static void
test_size_exceeded(void **state)
{
	static char msg[2000];
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"),
		QUIT_OK,
		END,    /* and no MAIL */
	};
	struct run r;

	(void)state;
	memset(msg, 'a', sizeof(msg));
	run_init(&r, msg, sizeof(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_PERM);
	expect_rcpt(&r.rc[0], 552, "5.3.4", "message size exceeds the server's limit");
	expect_rcpt(&r.rc[1], 552, "5.3.4", "message size exceeds the server's limit");
	expect_why(&r, "5.3.4 message size exceeds the server's limit: 2000 octets");
	assert_int_equal(r.mem.opens, 0);
}

static void
test_smtputf8_missing(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-8BITMIME\r\n250 PIPELINING\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.m.smtputf8 = 1;
	r.rc[0].address = "\xc3\xbc@example.net";
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_PERM);
	expect_rcpt(&r.rc[0], 553, "5.6.7", "non-ASCII address and the server lacks SMTPUTF8");
	expect_rcpt(&r.rc[1], 553, "5.6.7", "lacks SMTPUTF8");
}

static void
test_8bitmime_missing_converts(void **state)
{
	static const char msg[] = "Subject: t\r\n\r\ncaf\xc3\xa9\r\n";
	static const char conv[] =
	    "Subject: t\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n"
	    "\r\ncaf=C3=A9\r\n";
	static const char wire[] =
	    "X-Sig: 2\r\nSubject: t\r\nMIME-Version: 1.0\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n.\r\n";
	char mail[64];
	struct run r;

	(void)state;
	snprintf(mail, sizeof(mail), "MAIL FROM:<a@example.org> SIZE=%zu", sizeof(conv) - 1);
	{
		const struct step steps[] = {
			GREET,
			EXPECT("EHLO client.example"),
			SEND("250-mx\r\n250-PIPELINING\r\n250 SIZE 100000\r\n"),
			{ OP_EXPECT, mail, strlen(mail), 0, NULL, NULL },
			EXPECT("RCPT TO:<b@example.net>"),
			EXPECT("RCPT TO:<c@example.net>"),
			SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
			EXPECT("DATA"),
			SEND("354 go\r\n"),
			DATA(wire),
			SEND("250 ok\r\n"),
			QUIT_OK,
			END,
		};
		run_init(&r, LIT(msg));
		r.m.body = SMTPC_8BITMIME;
		r.m.sign = sign_cb;
		r.m.sign_ctx = &r.sig;
		r.sig.hdr = "X-Sig: 2\r\n";
		run_script(&r, steps);
	}
	assert_int_equal(r.st, SMTPC_OK);
	assert_int_equal(r.sig.calls, 1);
	assert_ptr_not_equal(r.sig.seen, &r.src);   /* the converted source */
	assert_int_equal(r.sig.clen, sizeof(conv) - 1);
	assert_memory_equal(r.sig.content, conv, sizeof(conv) - 1);
	expect_rcpt(&r.rc[0], 250, "", "ok");
}

static void
test_binarymime_without_chunking(void **state)
{
	static const char msg[] =
	    "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
	    "\r\n\x00\x01\xff\r\n";
	static const char wire[] =
	    "Content-Type: application/octet-stream\r\nMIME-Version: 1.0\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n=00=01=FF\r\n.\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-BINARYMIME\r\n250-8BITMIME\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA(wire),
		SEND("250 ok\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.m.body = SMTPC_BINARYMIME;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 250, "", "ok");
}

static void
test_binarymime_conversion_impossible(void **state)
{
	static const char msg[] = "Subject: \xc3\xa9\r\n\r\n\x00\xff\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-BINARYMIME\r\n250 8BITMIME\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.m.body = SMTPC_BINARYMIME;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_PERM);
	expect_rcpt(&r.rc[0], 554, "5.6.3",
	    "conversion required but not possible: the server lacks BINARYMIME/CHUNKING");
	expect_rcpt(&r.rc[1], 554, "5.6.3", "BINARYMIME/CHUNKING");
	expect_why(&r, "header field");
}

static void
test_mail_refused(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step temp[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("451 4.7.1 greylisted\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n"),
		QUIT_OK,
		END,
	};
	const struct step perm[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250 mx\r\n"),
		EXPECT("MAIL FROM:<>"),
		SEND("550-5.7.1 go away\r\n550 5.7.1 really\r\n"),
		QUIT_OK,
		END,    /* no RCPT without PIPELINING */
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_script(&r, temp);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_rcpt(&r.rc[0], 451, "4.7.1", "greylisted");
	expect_rcpt(&r.rc[1], 451, "4.7.1", "greylisted");
	expect_why(&r, "451 4.7.1 greylisted");

	run_init(&r, LIT(msg));
	r.m.sender = "";
	run_script(&r, perm);
	assert_int_equal(r.st, SMTPC_PERM);
	expect_rcpt(&r.rc[0], 550, "5.7.1", "go away really");
	assert_string_equal(r.rc[1].reply, "go away really");
}

static void
test_rcpt_mixed(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user here\r\n250 2.1.5 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA("Subject: x\r\n\r\nhi\r\n.\r\n"),
		SEND("250 2.0.0 done\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 550, "5.1.1", "no such user here");
	assert_string_equal(r.rc[0].reply, "no such user here");
	expect_rcpt(&r.rc[1], 250, "2.0.0", "done");
	assert_non_null(strstr(r.log, "RCPT TO:<b@example.net> => 550-5.1.1 no such|550 5.1.1 user here\n"));
}

static void
test_all_rcpts_refused(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-CHUNKING\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n550 5.1.1 unknown\r\n452 4.2.2 full\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 550, "5.1.1", "unknown");
	expect_rcpt(&r.rc[1], 452, "4.2.2", "full");
	assert_int_equal(r.mem.opens, 0);
}

static void
final_reply_case(const char *reply, enum smtpc_status want, int code, const char *enh,
    const char *text)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-CHUNKING\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n550 5.1.1 unknown\r\n"),
		{ OP_BDAT, msg, sizeof(msg) - 1, 0, "18 LAST", NULL },
		{ OP_SEND, reply, strlen(reply), 0, NULL, NULL },
		QUIT_OK,
		END,
	};
	struct run r;

	run_init(&r, LIT(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, want);
	expect_rcpt(&r.rc[0], code, enh, text);
	expect_rcpt(&r.rc[1], 550, "5.1.1", "unknown");
}

static void
test_final_reply_temp_and_perm(void **state)
{
	(void)state;
	final_reply_case("452 4.3.1 mailbox full\r\n", SMTPC_TEMP, 452, "4.3.1", "mailbox full");
	final_reply_case("554 5.6.0 content refused\r\n", SMTPC_PERM, 554, "5.6.0",
	    "content refused");
}

static void
test_bdat_chunk_refused(void **state)
{
	size_t len = CHUNK + 500;
	char *msg = malloc(len);
	struct run r;

	(void)state;
	memset(msg, 'x', len);
	{
		const struct step steps[] = {
			GREET,
			EXPECT("EHLO client.example"),
			SEND("250-mx\r\n250 CHUNKING\r\n"),
			EXPECT("MAIL FROM:<a@example.org>"),
			SEND("250 ok\r\n"),
			EXPECT("RCPT TO:<b@example.net>"),
			SEND("250 ok\r\n"),
			{ OP_BDAT, msg, CHUNK, 0, "65536", "552 5.3.4 too much\r\n" },
			QUIT_OK,
			END,    /* no second chunk */
		};
		run_init(&r, msg, len);
		r.m.nrcpts = 1;
		run_script(&r, steps);
	}
	assert_int_equal(r.st, SMTPC_PERM);
	expect_rcpt(&r.rc[0], 552, "5.3.4", "too much");
	assert_non_null(strstr(r.log, "<message: 65536 octets via BDAT> => 552 5.3.4 too much\n"));
	free(msg);
}

static void
test_connection_dropped_after_rcpt(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n"),
		CLOSE,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.4.2 connection lost after RCPT");
	expect_rcpt(&r.rc[0], 0, "4.4.2", "connection lost after RCPT");
	expect_rcpt(&r.rc[1], 0, "4.4.2", "connection lost after RCPT");
	assert_non_null(strstr(r.log, "RCPT TO:<c@example.net> => (no reply: connection lost)\n"));
}

/* ---- one connection, several transactions (smtpc_new, smtpc_send, smtpc_free) ---- */

/* Runs n transactions of r over one connection against the script; st[i] each status. */
static void
run_reused(struct run *r, const struct step *steps, int n, enum smtpc_status *st,
    int *reusable)
{
	int sv[2], status = 0;
	struct smtpc *c;
	pid_t pid;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		peer_run(sv[1], steps);
	}
	close(sv[1]);
	assert_non_null(c = smtpc_new(sv[0], &r->o));
	for (int i = 0; i < n; i++) {
		st[i] = smtpc_send(c, &r->m, r->why, sizeof(r->why));
		reusable[i] = smtpc_reusable(c);
	}
	assert_int_equal(smtpc_transactions(c), (unsigned)n);
	smtpc_free(c);
	close(sv[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_false(r->mem.open);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("peer failed (status %#x, step %d); why: %s\nlog:\n%s", status,
		    WIFEXITED(status) ? WEXITSTATUS(status) - 10 : -1, r->why, r->log);
}

#define ONE_TXN(reply) \
	EXPECT("MAIL FROM:<a@example.org>"), SEND("250 2.1.0 ok\r\n"), \
	EXPECT("RCPT TO:<b@example.net>"), SEND("250 2.1.5 ok\r\n"), \
	EXPECT("RCPT TO:<c@example.net>"), SEND("250 2.1.5 ok\r\n"), \
	EXPECT("DATA"), SEND("354 go ahead\r\n"), DATA("Subject: r\r\n\r\nhi\r\n.\r\n"), \
	SEND(reply)

static void
test_reuse_rset_between(void **state)
{
	static const char msg[] = "Subject: r\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250 mx.example\r\n"),
		ONE_TXN("250 2.0.0 first\r\n"),
		EXPECT("RSET"),
		SEND("250 2.0.0 reset\r\n"),
		ONE_TXN("250 2.0.0 second\r\n"),
		QUIT_OK,
		END,
	};
	enum smtpc_status st[2];
	int reusable[2];
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_reused(&r, steps, 2, st, reusable);
	assert_int_equal(st[0], SMTPC_OK);
	assert_int_equal(st[1], SMTPC_OK);
	assert_true(reusable[0] && reusable[1]);
	expect_rcpt(&r.rc[0], 250, "2.0.0", "second");
	expect_rcpt(&r.rc[1], 250, "2.0.0", "second");
	/* one greeting and EHLO; the second transaction starts at RSET; one QUIT */
	assert_non_null(strstr(r.log, "<message: 18 octets via DATA> => 250 2.0.0 first\n"
	    "RSET => 250 2.0.0 reset\nMAIL FROM:<a@example.org> => 250 2.1.0 ok\n"));
	assert_null(strstr(strstr(r.log, "RSET"), "EHLO"));
	assert_non_null(strstr(r.log, "second\nQUIT => 221 2.0.0 bye\n"));
}

/* The server hung up while the connection waited: nothing happened, try a new one. */
static void
test_reuse_dropped_is_retry(void **state)
{
	static const char msg[] = "Subject: r\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250 mx.example\r\n"),
		ONE_TXN("250 2.0.0 first\r\n"),
		EXPECT("RSET"),
		CLOSE,
	};
	enum smtpc_status st[2];
	int reusable[2];
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_reused(&r, steps, 2, st, reusable);
	assert_int_equal(st[0], SMTPC_OK);
	assert_int_equal(st[1], SMTPC_RETRY);
	assert_false(reusable[1]);
	expect_why(&r, "connection lost after RSET");
	assert_int_equal(r.rc[0].code, 0);
	assert_int_equal(r.rc[1].code, 0);
	assert_null(strstr(r.log, "QUIT"));
}

/* 421 to MAIL on a reused connection (pipelined): a retry too, and no RCPT result. */
static void
test_reuse_421_to_mail_is_retry(void **state)
{
	static const char msg[] = "Subject: r\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx.example\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n550 5.1.1 no such user\r\n"),
		EXPECT("DATA"),
		SEND("354 go ahead\r\n"),
		DATA("Subject: r\r\n\r\nhi\r\n.\r\n"),
		SEND("250 2.0.0 first\r\n"),
		EXPECT("RSET"),
		SEND("250 2.0.0 reset\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("421 4.3.2 shutting down\r\n"),
		CLOSE,
	};
	enum smtpc_status st[2];
	int reusable[2];
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_reused(&r, steps, 2, st, reusable);
	assert_int_equal(st[0], SMTPC_OK);
	assert_true(reusable[0]);
	assert_int_equal(st[1], SMTPC_RETRY);
	assert_false(reusable[1]);
	assert_int_equal(r.rc[0].code, 0);
	assert_int_equal(r.rc[1].code, 0);
}

/* On a new connection the same failure is an ordinary one (TEMP), not a retry. */
static void
test_first_transaction_drop_is_temp(void **state)
{
	static const char msg[] = "Subject: r\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250 mx.example\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		CLOSE,
	};
	enum smtpc_status st[1];
	int reusable[1];
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_reused(&r, steps, 1, st, reusable);
	assert_int_equal(st[0], SMTPC_TEMP);
	assert_false(reusable[0]);
	expect_rcpt(&r.rc[0], 0, "4.4.2", "connection lost after MAIL");
}

/* A refused transaction leaves the session usable; a 421 ends it. */
static void
test_refusal_keeps_session_421_ends_it(void **state)
{
	static const char msg[] = "Subject: r\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250 mx.example\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		SEND("550 5.7.1 not you\r\n"),
		EXPECT("RSET"),
		SEND("250 ok\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		SEND("250 ok\r\n"),
		EXPECT("RCPT TO:<b@example.net>"),
		SEND("421 4.7.0 too many errors\r\n"),
		EXPECT("QUIT"),
		CLOSE,
	};
	enum smtpc_status st[2];
	int reusable[2];
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_reused(&r, steps, 2, st, reusable);
	assert_int_equal(st[0], SMTPC_PERM);
	assert_true(reusable[0]);
	assert_int_equal(st[1], SMTPC_TEMP);    /* MAIL was taken: an ordinary failure */
	assert_false(reusable[1]);
	expect_rcpt(&r.rc[0], 421, "4.7.0", "too many errors");
	expect_rcpt(&r.rc[1], 421, "4.7.0", "too many errors");   /* not asked: the server left */
}

static void
malformed_case(const char *greeting, size_t len, const char *detail)
{
	const struct step steps[] = {
		{ OP_SEND, greeting, len, 0, NULL, NULL },
		END,
	};
	static const char msg[] = "hi\r\n";
	struct run r;

	run_init(&r, LIT(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.5.0 malformed reply from the server");
	expect_why(&r, detail);
	expect_rcpt(&r.rc[0], 0, "4.5.0", "malformed reply");
}

static void
test_malformed_replies(void **state)
{
	char *big = malloc(4000);
	size_t n = 0;

	(void)state;
	malformed_case(LIT("22x ready\r\n"), "not a reply line");
	malformed_case(LIT("220-a\r\n250 b\r\n"), "not a reply line");
	malformed_case(LIT("220\tx\r\n"), "not a reply line");
	malformed_case(LIT("120 x\r\n"), "not a reply line");
	malformed_case(LIT("220 nul\0inside\r\n"), "not a reply line");
	memcpy(big, "220 ", 4);
	memset(big + 4, 'a', 2000);
	memcpy(big + 2004, "\r\n", 2);
	malformed_case(big, 2006, "line too long");
	for (int i = 0; i < 101; i++)
		n += (size_t)snprintf(big + n, 4000 - n, "220-%d\r\n", i);
	n += (size_t)snprintf(big + n, 4000 - n, "220 end\r\n");
	malformed_case(big, n, "too many lines");
	free(big);
}

static void
test_ehlo_garbage(void **state)
{
	static const char msg[] = "hi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("hello there\r\n"),
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.5.0 malformed reply from the server (to EHLO");
}

static void
test_greeting_refused(void **state)
{
	static const char msg[] = "hi\r\n";
	const struct step perm[] = {
		SEND("554 5.7.1 no service for you\r\n"),
		QUIT_OK,
		END,
	};
	const struct step temp[] = {
		SEND("421-4.3.2 busy\r\n421 4.3.2 later\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	run_script(&r, perm);
	assert_int_equal(r.st, SMTPC_PERM);
	expect_rcpt(&r.rc[0], 554, "5.7.1", "no service for you");
	run_init(&r, LIT(msg));
	run_script(&r, temp);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_rcpt(&r.rc[1], 421, "4.3.2", "busy later");
}

static void
test_timeout(void **state)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA("Subject: x\r\n\r\nhi\r\n.\r\n"),
		STALL(2500),
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.o.timeout = 1;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.4.1 timeout waiting for the reply to the end of DATA");
	expect_rcpt(&r.rc[0], 0, "4.4.1", "timeout");
	expect_rcpt(&r.rc[1], 0, "4.4.1", "timeout");
	assert_true(r.secs > 0.9 && r.secs < 2.0);
	assert_non_null(strstr(r.log, "<message: 18 octets via DATA> => (no reply: timeout)\n"));
}

static void
test_source_failure_data(void **state)
{
	static char msg[40000], wire[40000];
	struct run r;

	(void)state;
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = i % 50 == 48 ? '\r' : i % 50 == 49 ? '\n' : 'm';
	memcpy(wire, msg, sizeof(msg));
	{
		const struct step steps[] = {
			GREET,
			EXPECT("EHLO client.example"),
			SEND("250-mx\r\n250 PIPELINING\r\n"),
			EXPECT("MAIL FROM:<a@example.org>"),
			EXPECT("RCPT TO:<b@example.net>"),
			EXPECT("RCPT TO:<c@example.net>"),
			SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
			EXPECT("DATA"),
			SEND("354 go\r\n"),
			{ OP_DATA_ABORT, wire, sizeof(wire), 0, NULL, NULL },
		};
		run_init(&r, msg, sizeof(msg));
		r.mem.step = 1000;
		r.mem.fail_at = 30000;
		run_script(&r, steps);
	}
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.3.0 cannot read the queued message: GridFS chunk missing");
	expect_rcpt(&r.rc[0], 0, "4.3.0", "cannot read the queued message");
	assert_non_null(strstr(r.log, "<message: aborted after 30000 octets>"));
}

static void
test_source_failure_bdat(void **state)
{
	size_t len = 3 * CHUNK;
	char *msg = malloc(len);
	struct run r;

	(void)state;
	memset(msg, 'q', len);
	{
		const struct step steps[] = {
			GREET,
			EXPECT("EHLO client.example"),
			SEND("250-mx\r\n250-CHUNKING\r\n250 PIPELINING\r\n"),
			EXPECT("MAIL FROM:<a@example.org>"),
			EXPECT("RCPT TO:<b@example.net>"),
			EXPECT("RCPT TO:<c@example.net>"),
			SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
			{ OP_BDAT_ABORT, msg, len, 0, "65536", NULL },
		};
		run_init(&r, msg, len);
		r.mem.fail_at = CHUNK + 1000;
		run_script(&r, steps);
	}
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.3.0 cannot read the queued message");
	expect_rcpt(&r.rc[1], 0, "4.3.0", "cannot read");
	free(msg);
}

static void
test_bad_addresses(void **state)
{
	static const char msg[] = "hi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250 mx\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		SEND("250 ok\r\n"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA("hi\r\n.\r\n"),
		SEND("250 ok\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.rc[0].address = "x@y>\r\nRSET";    /* never sent: no command injection */
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 553, "5.1.3", "cannot be sent");
	expect_rcpt(&r.rc[1], 250, "", "ok");
}

/* ---- STARTTLS ---- */

static void
starttls_case(enum smtpc_tls mode, SSL_CTX *ctx, const char *verified)
{
	static const char msg[] = "Subject: x\r\n\r\nhi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-STARTTLS\r\n250 PIPELINING\r\n"),
		EXPECT("STARTTLS"),
		SEND("220 2.0.0 go ahead\r\n"),
		TLS,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250-CHUNKING\r\n250 PIPELINING\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		EXPECT("RCPT TO:<b@example.net>"),
		EXPECT("RCPT TO:<c@example.net>"),
		SEND("250 ok\r\n250 ok\r\n250 ok\r\n"),
		{ OP_BDAT, msg, sizeof(msg) - 1, 0, "18 LAST", NULL },
		SEND("250 2.0.0 ok\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	run_init(&r, LIT(msg));
	r.o.tls = mode;
	r.o.tls_ctx = ctx;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
	expect_rcpt(&r.rc[0], 250, "2.0.0", "ok");
	if (strstr(r.log, "<TLS handshake> => TLSv1.") == NULL || strstr(r.log, verified) == NULL)
		fail_msg("log lacks the handshake (%s):\n%s", verified, r.log);
}

static void
test_starttls_opportunistic(void **state)
{
	(void)state;
	starttls_case(SMTPC_TLS_OPPORTUNISTIC, T.client_any, "certificate not verified");
}

static void
test_starttls_verified(void **state)
{
	(void)state;
	starttls_case(SMTPC_TLS_VERIFY, T.client_verify, "certificate verified");
}

static void
test_starttls_refused_goes_on(void **state)
{
	static const char msg[] = "hi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 STARTTLS\r\n"),
		EXPECT("STARTTLS"),
		SEND("454 4.7.0 TLS not available\r\n"),
		EXPECT("MAIL FROM:<a@example.org>"),
		SEND("250 ok\r\n"),
		EXPECT("RCPT TO:<b@example.net>"),
		SEND("250 ok\r\n"),
		EXPECT("DATA"),
		SEND("354 go\r\n"),
		DATA("hi\r\n.\r\n"),
		SEND("250 ok\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.m.nrcpts = 1;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_OK);
}

static void
test_tls_required_not_offered(void **state)
{
	static const char msg[] = "hi\r\n";
	const struct step steps[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 PIPELINING\r\n"),
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	run_init(&r, LIT(msg));
	r.o.tls = SMTPC_TLS_REQUIRED;
	run_script(&r, steps);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.7.4 TLS required but not offered by the server");
	expect_rcpt(&r.rc[0], 0, "4.7.4", "TLS required but not offered by the server");
}

static void
test_tls_verify_fails(void **state)
{
	static const char msg[] = "hi\r\n";
	const struct step handshake_fails[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 STARTTLS\r\n"),
		EXPECT("STARTTLS"),
		SEND("220 go\r\n"),
		{ OP_TLS_FAIL, NULL, 0, 0, NULL, NULL },
	};
	const struct step not_verified[] = {
		GREET,
		EXPECT("EHLO client.example"),
		SEND("250-mx\r\n250 STARTTLS\r\n"),
		EXPECT("STARTTLS"),
		SEND("220 go\r\n"),
		TLS,
		QUIT_OK,
		END,
	};
	struct run r;

	(void)state;
	/* a verifying context that does not trust the certificate */
	run_init(&r, LIT(msg));
	r.o.tls = SMTPC_TLS_VERIFY;
	r.o.tls_ctx = T.client_untrusting;
	run_script(&r, handshake_fails);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, SMTPC_WHY_TLS_FAILED);
	expect_rcpt(&r.rc[0], 0, "4.7.5", "TLS handshake failed");
	/* a context that lets anything through: the check after the handshake */
	run_init(&r, LIT(msg));
	r.o.tls = SMTPC_TLS_VERIFY;
	r.o.tls_ctx = T.client_any;
	run_script(&r, not_verified);
	assert_int_equal(r.st, SMTPC_TEMP);
	expect_why(&r, "4.7.5 the server's certificate did not verify: localhost");
}

/* ---- setup: a throwaway self-signed certificate for localhost ---- */

static int
make_cert(const char *certfile, const char *keyfile)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_EXTENSION *ext = NULL;
	X509_NAME *name;
	X509V3_CTX v3;
	FILE *f;
	int ok = key != NULL && x != NULL;

	ok = ok && X509_set_version(x, X509_VERSION_3) &&
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
	    X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
	    X509_gmtime_adj(X509_getm_notAfter(x), 86400) && X509_set_pubkey(x, key);
	name = ok ? X509_get_subject_name(x) : NULL;
	ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)"localhost", -1, -1, 0) && X509_set_issuer_name(x, name);
	if (ok) {
		X509V3_set_ctx_nodb(&v3);
		X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
		ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:localhost");
	}
	ok = ok && ext != NULL && X509_add_ext(x, ext, -1) && X509_sign(x, key, EVP_sha256()) > 0;
	if (ok && (f = fopen(keyfile, "w")) != NULL) {
		ok = PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
		ok = fclose(f) == 0 && ok;
	} else {
		ok = 0;
	}
	if (ok && (f = fopen(certfile, "w")) != NULL) {
		ok = PEM_write_X509(f, x);
		ok = fclose(f) == 0 && ok;
	} else {
		ok = 0;
	}
	X509_EXTENSION_free(ext);
	X509_free(x);
	EVP_PKEY_free(key);
	return ok ? 0 : -1;
}

static int
group_setup(void **state)
{
	char err[256] = "";

	(void)state;
	snprintf(T.dir, sizeof(T.dir), "/tmp/mc_test_smtpc.XXXXXX");
	if (mkdtemp(T.dir) == NULL)
		return -1;
	snprintf(T.cert, sizeof(T.cert), "%s/cert.pem", T.dir);
	snprintf(T.key, sizeof(T.key), "%s/key.pem", T.dir);
	if (make_cert(T.cert, T.key) < 0)
		return -1;
	T.server = mc_tls_server_ctx(T.cert, T.key, err, sizeof(err));
	T.client_any = mc_tls_client_ctx(0, NULL, err, sizeof(err));
	T.client_verify = mc_tls_client_ctx(1, T.cert, err, sizeof(err));
	T.client_untrusting = mc_tls_client_ctx(1, NULL, err, sizeof(err));
	if (!T.server || !T.client_any || !T.client_verify || !T.client_untrusting) {
		print_error("TLS setup: %s\n", err);
		return -1;
	}
	return 0;
}

static int
group_teardown(void **state)
{
	(void)state;
	SSL_CTX_free(T.server);
	SSL_CTX_free(T.client_any);
	SSL_CTX_free(T.client_verify);
	SSL_CTX_free(T.client_untrusting);
	unlink(T.cert);
	unlink(T.key);
	rmdir(T.dir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_all_extensions_bdat_pipelined),
		cmocka_unit_test(test_no_pipelining_data_dot_stuffing),
		cmocka_unit_test(test_data_line_ends_fixed),
		cmocka_unit_test(test_ehlo_refused_helo),
		cmocka_unit_test(test_size_exceeded),
		cmocka_unit_test(test_smtputf8_missing),
		cmocka_unit_test(test_8bitmime_missing_converts),
		cmocka_unit_test(test_binarymime_without_chunking),
		cmocka_unit_test(test_binarymime_conversion_impossible),
		cmocka_unit_test(test_mail_refused),
		cmocka_unit_test(test_rcpt_mixed),
		cmocka_unit_test(test_all_rcpts_refused),
		cmocka_unit_test(test_final_reply_temp_and_perm),
		cmocka_unit_test(test_bdat_chunk_refused),
		cmocka_unit_test(test_connection_dropped_after_rcpt),
		cmocka_unit_test(test_malformed_replies),
		cmocka_unit_test(test_ehlo_garbage),
		cmocka_unit_test(test_greeting_refused),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_source_failure_data),
		cmocka_unit_test(test_source_failure_bdat),
		cmocka_unit_test(test_bad_addresses),
		cmocka_unit_test(test_starttls_opportunistic),
		cmocka_unit_test(test_starttls_verified),
		cmocka_unit_test(test_starttls_refused_goes_on),
		cmocka_unit_test(test_tls_required_not_offered),
		cmocka_unit_test(test_tls_verify_fails),
		cmocka_unit_test(test_reuse_rset_between),
		cmocka_unit_test(test_reuse_dropped_is_retry),
		cmocka_unit_test(test_reuse_421_to_mail_is_retry),
		cmocka_unit_test(test_first_transaction_drop_is_temp),
		cmocka_unit_test(test_refusal_keeps_session_421_ends_it),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
