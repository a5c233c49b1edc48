/*
 * io.c - the connection I/O layer: a read fd and a write fd (often the same
 * socket), non-blocking with poll() and an idle timeout, a strict line
 * reader, raw reads, a reply buffer flushed before blocking, and TLS. The
 * OpenSSL calls are behind struct mc_tls_ops (tls_conn.h): this file links
 * no TLS library, so the session programs load one only when TLS starts.
 */
#include "io.h"
#include "tls_conn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bound for sending close_notify in mc_io_close. */
#define MC_IO_CLOSE_MS 1000

/* Internal status: the operation would block; wait for `struct want`. */
#define IO_AGAIN (-1)

struct mc_io {
	int rfd, wfd;
	int rflags, wflags;     /* fcntl flags before mc_io_new */
	int wsock;              /* wfd is a socket: send(MSG_NOSIGNAL) */
	int idle_ms;            /* 0: no idle timeout */
	int64_t deadline;       /* CLOCK_MONOTONIC ms; 0: none */
	const struct mc_tls_ops *tls_ops; /* set with tls */
	struct mc_tls_conn *tls; /* non-NULL once a handshake succeeded */
	int tls_dead;           /* fatal TLS error: no close_notify */
	int dead;               /* unusable (failed handshake, closed) */
	int eof;                /* the read side reached end of stream */
	int skipping;           /* discarding the rest of an overlong line */
	int wstatus;            /* sticky write failure, MC_IO_OK if none */
	size_t discarded;       /* by the last TLS start */
	size_t rpos, rlen;      /* unread input: rbuf[rpos .. rpos + rlen) */
	size_t wlen;            /* unsent output: wbuf[0 .. wlen) */
	char err[200];
	unsigned char rbuf[MC_IO_BUFSIZE + 1]; /* +1: room to NUL-terminate */
	unsigned char wbuf[MC_IO_BUFSIZE];
};

/* What a blocked operation waits for. */
struct want {
	int fd;
	short events;
};

/* ---- small helpers ---- */

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
io_fail(struct mc_io *io, int status, const char *what, const char *why)
{
	snprintf(io->err, sizeof io->err, "%s: %s", what, why);
	return status;
}

static int
io_fail_errno(struct mc_io *io, const char *what)
{
	return io_fail(io, MC_IO_ERROR, what, strerror(errno));
}

/* When waiting without progress must end: now + idle timeout. */
static int64_t
idle_limit(const struct mc_io *io)
{
	if (io->idle_ms <= 0)
		return INT64_MAX;
	return now_ms() + io->idle_ms;
}

static void
consume(struct mc_io *io, size_t n)
{
	io->rpos += n;
	io->rlen -= n;
	if (io->rlen == 0)
		io->rpos = 0;
}

/* Move unread input to the start of the buffer, making room behind it. */
static void
compact(struct mc_io *io)
{
	if (io->rpos == 0)
		return;
	memmove(io->rbuf, io->rbuf + io->rpos, io->rlen);
	io->rpos = 0;
}

static int
set_nonblock(int fd, int *old)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -1;
	*old = fl;
	if (fl & O_NONBLOCK)
		return 0;
	return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void
restore_flags(int fd, int old)
{
	if (!(old & O_NONBLOCK))
		(void)fcntl(fd, F_SETFL, old);
}

/* See io.h: a closed peer must be an error, not death. */
static void
ignore_sigpipe(void)
{
	struct sigaction sa;

	if (sigaction(SIGPIPE, NULL, &sa) != 0)
		return;
	if ((sa.sa_flags & SA_SIGINFO) || sa.sa_handler != SIG_DFL)
		return;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	(void)sigaction(SIGPIPE, &sa, NULL);
}

/* ---- lifecycle ---- */

struct mc_io *
mc_io_new(int rfd, int wfd, int idle_timeout_ms)
{
	struct mc_io *io;
	struct stat st;
	int saved;

	/* The buffers are only read where written: clearing their 32 KiB (and
	 * faulting in their pages) at every start would be wasted work. */
	io = malloc(sizeof *io);
	if (io == NULL)
		return NULL;
	memset(io, 0, offsetof(struct mc_io, rbuf));
	io->rfd = rfd;
	io->wfd = wfd;
	io->idle_ms = idle_timeout_ms > 0 ? idle_timeout_ms : 0;
	if (set_nonblock(rfd, &io->rflags) < 0)
		goto fail;
	io->wflags = io->rflags;
	if (wfd != rfd && set_nonblock(wfd, &io->wflags) < 0) {
		saved = errno;
		restore_flags(rfd, io->rflags);
		errno = saved;
		goto fail;
	}
	io->wsock = fstat(wfd, &st) == 0 && S_ISSOCK(st.st_mode);
	ignore_sigpipe();
	return io;
fail:
	saved = errno;
	free(io);
	errno = saved;
	return NULL;
}

void
mc_io_free(struct mc_io *io)
{
	if (io == NULL)
		return;
	if (io->tls != NULL)
		io->tls_ops->conn_free(io->tls);
	restore_flags(io->rfd, io->rflags);
	if (io->wfd != io->rfd)
		restore_flags(io->wfd, io->wflags);
	free(io);
}

void
mc_io_set_idle_timeout(struct mc_io *io, int idle_timeout_ms)
{
	io->idle_ms = idle_timeout_ms > 0 ? idle_timeout_ms : 0;
}

void
mc_io_set_deadline(struct mc_io *io, unsigned ms_from_now)
{
	io->deadline = ms_from_now ? now_ms() + ms_from_now : 0;
}

const char *
mc_io_last_error(struct mc_io *io)
{
	return io->err;
}

const char *
mc_io_status_str(int status)
{
	switch (status) {
	case MC_IO_OK:       return "OK";
	case MC_IO_EOF:      return "EOF";
	case MC_IO_TIMEOUT:  return "TIMEOUT";
	case MC_IO_TOO_LONG: return "TOO_LONG";
	case MC_IO_ERROR:    return "ERROR";
	default:             return "UNKNOWN";
	}
}

/* ---- waiting ---- */

/*
 * Wait until w is ready, until `until` (idle) or the session deadline.
 * POLLHUP/POLLERR count as ready: the next read or write reports them.
 */
static int
wait_fd(struct mc_io *io, const struct want *w, int64_t until,
    const char *what)
{
	struct pollfd p;
	int64_t now, end;
	int r;

	for (;;) {
		end = until;
		if (io->deadline != 0 && io->deadline < end)
			end = io->deadline;
		now = now_ms();
		if (now >= end)
			break;
		p.fd = w->fd;
		p.events = w->events;
		p.revents = 0;
		r = poll(&p, 1, end - now > INT_MAX ? INT_MAX : (int)(end - now));
		if (r > 0 && (p.revents & POLLNVAL))
			return io_fail(io, MC_IO_ERROR, what, "bad file descriptor");
		if (r > 0)
			return MC_IO_OK;
		if (r < 0 && errno != EINTR)
			return io_fail_errno(io, what);
	}
	if (io->deadline != 0 && end == io->deadline)
		return io_fail(io, MC_IO_TIMEOUT, what, "session deadline");
	return io_fail(io, MC_IO_TIMEOUT, what, "idle timeout");
}

/* ---- one non-blocking transfer: MC_IO_OK (n > 0), IO_AGAIN, EOF, ERROR ---- */

/*
 * Map a TLS step (enum mc_tls_step) that made no progress: IO_AGAIN with *w
 * set for the retry, MC_IO_EOF (close_notify), or MC_IO_ERROR.
 */
static int
tls_status(struct mc_io *io, int step, const char *why, struct want *w,
    const char *what)
{
	switch (step) {
	case MC_TLS_WANT_READ:
		w->fd = io->rfd;
		w->events = POLLIN;
		return IO_AGAIN;
	case MC_TLS_WANT_WRITE:
		w->fd = io->wfd;
		w->events = POLLOUT;
		return IO_AGAIN;
	case MC_TLS_CLOSED:
		return MC_IO_EOF;
	default:
		io->tls_dead = 1;
		return io_fail(io, MC_IO_ERROR, what, why);
	}
}

static int
recv_some(struct mc_io *io, void *buf, size_t len, size_t *got,
    struct want *w)
{
	char why[160];
	ssize_t n;
	int r;

	if (io->tls != NULL) {
		why[0] = '\0';
		r = io->tls_ops->read(io->tls, buf, len, got, why, sizeof why);
		if (r == MC_TLS_DONE)
			return MC_IO_OK;
		return tls_status(io, r, why, w, "TLS read");
	}
	if (len > INT_MAX)
		len = INT_MAX;
	do
		n = read(io->rfd, buf, len);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		*got = (size_t)n;
		return MC_IO_OK;
	}
	if (n == 0)
		return MC_IO_EOF;
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return io_fail_errno(io, "read");
	w->fd = io->rfd;
	w->events = POLLIN;
	return IO_AGAIN;
}

static int
send_some(struct mc_io *io, const void *buf, size_t len, size_t *sent,
    struct want *w)
{
	char why[160];
	ssize_t n;
	int r;

	if (io->tls != NULL) {
		why[0] = '\0';
		r = io->tls_ops->write(io->tls, buf, len, sent, why, sizeof why);
		if (r == MC_TLS_DONE)
			return MC_IO_OK;
		r = tls_status(io, r, why, w, "TLS write");
		return r == MC_IO_EOF ?
		    io_fail(io, MC_IO_ERROR, "TLS write", "connection closed") : r;
	}
	if (len > INT_MAX)
		len = INT_MAX;
	do {
		if (io->wsock)
			n = send(io->wfd, buf, len, MSG_NOSIGNAL);
		else
			n = write(io->wfd, buf, len);
	} while (n < 0 && errno == EINTR);
	if (n >= 0) {
		*sent = (size_t)n;
		return MC_IO_OK;
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		return io_fail_errno(io, "write");
	w->fd = io->wfd;
	w->events = POLLOUT;
	return IO_AGAIN;
}

/* ---- writing ---- */

/* Send all of p; the idle timer restarts whenever bytes go out. */
static int
send_all(struct mc_io *io, const unsigned char *p, size_t len)
{
	int64_t until = 0;
	struct want w;
	size_t n;
	int st;

	while (len > 0) {
		n = 0;
		st = send_some(io, p, len, &n, &w);
		if (st == MC_IO_OK && n > 0) {
			p += n;
			len -= n;
			until = 0;
			continue;
		}
		if (st == IO_AGAIN) {
			if (until == 0)
				until = idle_limit(io);
			st = wait_fd(io, &w, until, "write");
		}
		if (st != MC_IO_OK) {
			io->wstatus = st;
			io->wlen = 0;
			return st;
		}
	}
	return MC_IO_OK;
}

/* Can output be accepted at all? */
static int
write_state(struct mc_io *io)
{
	if (io->dead)
		return MC_IO_ERROR;
	return io->wstatus;
}

int
mc_io_flush(struct mc_io *io)
{
	size_t n;
	int st = write_state(io);

	if (st != MC_IO_OK || io->wlen == 0)
		return st;
	n = io->wlen;
	io->wlen = 0;
	return send_all(io, io->wbuf, n);
}

int
mc_io_write(struct mc_io *io, const void *data, size_t len)
{
	const unsigned char *p = data;
	size_t n;
	int st = write_state(io);

	while (st == MC_IO_OK && len > 0) {
		if (io->wlen == 0 && len >= MC_IO_BUFSIZE)
			return send_all(io, p, len);  /* big: skip the copy */
		n = MC_IO_BUFSIZE - io->wlen;
		if (n > len)
			n = len;
		memcpy(io->wbuf + io->wlen, p, n);
		io->wlen += n;
		p += n;
		len -= n;
		if (io->wlen == MC_IO_BUFSIZE)
			st = mc_io_flush(io);
	}
	return st;
}

/* Output too big for the buffer: format on the heap (rare). */
static int vprintf_big(struct mc_io *, size_t, const char *, va_list)
    __attribute__((format(printf, 3, 0)));

static int
vprintf_big(struct mc_io *io, size_t n, const char *fmt, va_list ap)
{
	char *tmp = malloc(n + 1);
	int st;

	if (tmp == NULL)
		return io_fail_errno(io, "printf");
	vsnprintf(tmp, n + 1, fmt, ap);
	st = mc_io_write(io, tmp, n);
	free(tmp);
	return st;
}

int
mc_io_vprintf(struct mc_io *io, const char *fmt, va_list ap)
{
	size_t room;
	va_list aq;
	int n, st = write_state(io);

	if (st != MC_IO_OK)
		return st;
	room = MC_IO_BUFSIZE - io->wlen;
	va_copy(aq, ap);
	n = vsnprintf((char *)io->wbuf + io->wlen, room, fmt, aq);
	va_end(aq);
	if (n < 0)
		return io_fail(io, MC_IO_ERROR, "printf", "bad format");
	if ((size_t)n < room) {
		io->wlen += (size_t)n;
		return MC_IO_OK;
	}
	if ((size_t)n >= MC_IO_BUFSIZE) {
		va_copy(aq, ap);
		st = vprintf_big(io, (size_t)n, fmt, aq);
		va_end(aq);
		return st;
	}
	st = mc_io_flush(io);   /* fits an empty buffer */
	if (st != MC_IO_OK)
		return st;
	va_copy(aq, ap);
	vsnprintf((char *)io->wbuf, MC_IO_BUFSIZE, fmt, aq);
	va_end(aq);
	io->wlen = (size_t)n;
	return MC_IO_OK;
}

int
mc_io_printf(struct mc_io *io, const char *fmt, ...)
{
	va_list ap;
	int st;

	va_start(ap, fmt);
	st = mc_io_vprintf(io, fmt, ap);
	va_end(ap);
	return st;
}

size_t
mc_io_unflushed(struct mc_io *io)
{
	return io->wlen;
}

/* ---- reading ---- */

/*
 * Read more input behind what is buffered. If nothing can be read without
 * blocking, flush the replies first (the pipelining rule), then wait.
 */
static int
fill(struct mc_io *io)
{
	int64_t until = 0;
	struct want w;
	size_t got;
	int st;

	if (io->dead)
		return MC_IO_ERROR;
	if (io->eof)
		return MC_IO_EOF;
	compact(io);
	if (io->rlen >= MC_IO_BUFSIZE)
		return io_fail(io, MC_IO_ERROR, "read", "buffer full");
	for (;;) {
		got = 0;
		st = recv_some(io, io->rbuf + io->rlen,
		    MC_IO_BUFSIZE - io->rlen, &got, &w);
		if (st == MC_IO_OK) {
			io->rlen += got;
			return MC_IO_OK;
		}
		if (st == MC_IO_EOF)
			io->eof = 1;
		if (st != IO_AGAIN)
			return st;
		if (io->wlen > 0 && (st = mc_io_flush(io)) != MC_IO_OK)
			return st;
		if (until == 0)
			until = idle_limit(io);
		st = wait_fd(io, &w, until, "read");
		if (st != MC_IO_OK)
			return st;
	}
}

/* After MC_IO_TOO_LONG: drop input through the LF ending that line. */
static int
skip_rest(struct mc_io *io)
{
	unsigned char *p, *lf;
	int st;

	while (io->skipping) {
		p = io->rbuf + io->rpos;
		lf = memchr(p, '\n', io->rlen);
		if (lf != NULL) {
			consume(io, (size_t)(lf - p) + 1);
			io->skipping = 0;
			break;
		}
		consume(io, io->rlen);
		st = fill(io);
		if (st != MC_IO_OK)
			return st;
	}
	return MC_IO_OK;
}

static unsigned
content_flags(const unsigned char *p, size_t n)
{
	unsigned f = 0;

	if (memchr(p, '\r', n) != NULL)
		f |= MC_IO_LINE_BARE_CR;
	if (memchr(p, '\0', n) != NULL)
		f |= MC_IO_LINE_NUL;
	return f;
}

/* Hand out n content octets at the read position, consuming `used`. */
static int
give_line(struct mc_io *io, size_t n, size_t used, unsigned f,
    const char **line, size_t *len, unsigned *flags)
{
	unsigned char *p = io->rbuf + io->rpos;

	consume(io, used);
	f |= content_flags(p, n);
	p[n] = '\0';    /* the terminator's place, or the spare last byte */
	*line = (const char *)p;
	*len = n;
	*flags = f;
	return MC_IO_OK;
}

/* A line whose LF is at offset lf from the read position. */
static int
take_line(struct mc_io *io, size_t lf, size_t maxlen, const char **line,
    size_t *len, unsigned *flags)
{
	const unsigned char *p = io->rbuf + io->rpos;
	size_t n = lf;
	unsigned f = MC_IO_LINE_BARE_LF;

	if (n > 0 && p[n - 1] == '\r') {
		n--;
		f = MC_IO_LINE_CRLF;
	}
	if (n > maxlen) {
		consume(io, lf + 1);
		return MC_IO_TOO_LONG;
	}
	return give_line(io, n, lf + 1, f, line, len, flags);
}

/* End of stream: what is buffered is a last, unterminated line. */
static int
take_partial(struct mc_io *io, size_t maxlen, const char **line,
    size_t *len, unsigned *flags)
{
	size_t n = io->rlen;

	if (n == 0)
		return MC_IO_EOF;
	if (n > maxlen) {
		consume(io, n);
		return MC_IO_TOO_LONG;
	}
	return give_line(io, n, n, MC_IO_LINE_EOF_PARTIAL, line, len, flags);
}

/* No LF buffered: is the line already longer than maxlen, whatever comes? */
static int
surely_too_long(const struct mc_io *io, size_t maxlen)
{
	size_t n = io->rlen;

	if (n > 0 && io->rbuf[io->rpos + n - 1] == '\r')
		n--;    /* may yet be the CR of CR LF */
	return n > maxlen;
}

int
mc_io_read_line(struct mc_io *io, size_t maxlen, const char **line,
    size_t *len, unsigned *flags)
{
	const unsigned char *p, *lf;
	size_t scanned = 0;
	int st;

	*line = NULL;
	*len = 0;
	*flags = 0;
	if (maxlen > MC_IO_LINE_MAX)
		maxlen = MC_IO_LINE_MAX;
	st = skip_rest(io);
	if (st != MC_IO_OK)
		return st;
	for (;;) {
		p = io->rbuf + io->rpos;
		lf = memchr(p + scanned, '\n', io->rlen - scanned);
		if (lf != NULL)
			return take_line(io, (size_t)(lf - p), maxlen, line, len,
			    flags);
		scanned = io->rlen;
		if (surely_too_long(io, maxlen)) {
			consume(io, io->rlen);
			io->skipping = 1;
			return MC_IO_TOO_LONG;
		}
		st = fill(io);
		if (st == MC_IO_EOF)
			return take_partial(io, maxlen, line, len, flags);
		if (st != MC_IO_OK)
			return st;
	}
}

int
mc_io_read_raw(struct mc_io *io, void *buf, size_t want, size_t *got)
{
	size_t n;
	int st;

	*got = 0;
	if (want == 0)
		return MC_IO_OK;
	st = skip_rest(io);
	if (st == MC_IO_OK && io->rlen == 0)
		st = fill(io);
	if (st != MC_IO_OK)
		return st;
	n = io->rlen < want ? io->rlen : want;
	memcpy(buf, io->rbuf + io->rpos, n);
	consume(io, n);
	*got = n;
	return MC_IO_OK;
}

size_t
mc_io_pending(struct mc_io *io)
{
	size_t n = io->rlen;

	if (io->tls != NULL && !io->dead)
		n += io->tls_ops->pending(io->tls);
	return n;
}

/* ---- TLS ---- */

int
mc_io_is_tls(struct mc_io *io)
{
	return io->tls != NULL;
}

size_t
mc_io_tls_discarded(struct mc_io *io)
{
	return io->discarded;
}

int
mc_io_tls_info(struct mc_io *io, char *buf, size_t len)
{
	if (len == 0)
		return -1;
	buf[0] = '\0';
	if (io->tls == NULL)
		return -1;
	return io->tls_ops->info(io->tls, buf, len);
}

int
mc_io_tls_verified(struct mc_io *io)
{
	if (io->tls == NULL)
		return 0;
	return io->tls_ops->verified(io->tls);
}

/* The handshake as a whole must finish within the idle timeout. */
static int
tls_handshake(struct mc_io *io)
{
	int64_t until = idle_limit(io);
	struct want w;
	char why[160];
	int r, st;

	for (;;) {
		why[0] = '\0';
		r = io->tls_ops->handshake(io->tls, why, sizeof why);
		if (r == MC_TLS_DONE)
			return MC_IO_OK;
		st = tls_status(io, r, why, &w, "TLS handshake");
		if (st == MC_IO_EOF)
			return io_fail(io, MC_IO_ERROR, "TLS handshake",
			    "connection closed");
		if (st == IO_AGAIN)
			st = wait_fd(io, &w, until, "TLS handshake");
		if (st != MC_IO_OK)
			return st;
	}
}

static int
tls_start(struct mc_io *io, SSL_CTX *ctx, int server, const char *host)
{
	const struct mc_tls_ops *ops;
	struct mc_tls_conn *conn;
	char why[160];
	int st;

	if (io->dead)
		return MC_IO_ERROR;
	if (io->tls != NULL)
		return io_fail(io, MC_IO_ERROR, "STARTTLS", "TLS already active");
	st = mc_io_flush(io);   /* the plaintext go-ahead reply */
	if (st != MC_IO_OK)
		return st;
	io->discarded = io->rlen;       /* pipelined plaintext: never executed */
	io->rpos = io->rlen = 0;
	io->skipping = 0;
	why[0] = '\0';
	if ((ops = mc_tls_get_ops(why, sizeof why)) == NULL ||
	    (conn = ops->conn_new(ctx, io->rfd, io->wfd, server, host, why,
	    sizeof why)) == NULL) {
		io_fail(io, MC_IO_ERROR, "TLS setup", why);
		io->dead = 1;
		return MC_IO_ERROR;
	}
	io->tls_ops = ops;
	io->tls = conn;
	st = tls_handshake(io);
	if (st == MC_IO_OK)
		return MC_IO_OK;
	why[0] = '\0';
	if (!server && ops->verify_error(conn, why, sizeof why))
		io_fail(io, st, "TLS handshake", why);
	io->tls = NULL;
	ops->conn_free(conn);
	io->dead = 1;
	return st;
}

int
mc_io_start_tls_server(struct mc_io *io, SSL_CTX *ctx)
{
	return tls_start(io, ctx, 1, NULL);
}

int
mc_io_start_tls_client(struct mc_io *io, SSL_CTX *ctx, const char *host)
{
	return tls_start(io, ctx, 0, host);
}

/* Send close_notify, bounded; the peer's reply is not awaited. */
static void
tls_shutdown(struct mc_io *io)
{
	int64_t until = now_ms() + MC_IO_CLOSE_MS;
	struct want w;
	int r;

	for (;;) {
		r = io->tls_ops->shutdown(io->tls);
		if (r != MC_TLS_WANT_WRITE)
			break;  /* sent, failed, or waiting for theirs: not awaited */
		w.fd = io->wfd;
		w.events = POLLOUT;
		if (wait_fd(io, &w, until, "TLS close") != MC_IO_OK)
			break;
	}
}

int
mc_io_close(struct mc_io *io)
{
	int st = mc_io_flush(io);

	if (io->tls != NULL && !io->tls_dead && !io->dead && st == MC_IO_OK)
		tls_shutdown(io);
	if (st == MC_IO_OK)
		snprintf(io->err, sizeof io->err, "connection closed");
	io->dead = 1;
	return st;
}
