/*
 * io.h - the I/O layer for one connection (fds 0/1 of a session, or any read
 * fd + write fd): non-blocking, poll()-driven with an idle timeout, a strict
 * line reader, raw reads for BDAT, a reply buffer, and OpenSSL TLS on the fds
 * (through tls_conn.h: the session programs load it from tls.so when TLS starts).
 */
#ifndef MC_IO_H
#define MC_IO_H

#include <stdarg.h>
#include <stddef.h>

/* SSL_CTX from <openssl/ssl.h>; a repeated identical typedef is valid C11. */
typedef struct ssl_ctx_st SSL_CTX;

/*
 * One connection. Opaque; about 33 KiB, allocated once by mc_io_new. Not
 * thread-safe: one thread uses one mc_io.
 */
struct mc_io;

/* Size of the read buffer and of the write buffer (each, fixed). */
#define MC_IO_BUFSIZE 16384
/* Longest line content mc_io_read_line can return (content + CR LF fits). */
#define MC_IO_LINE_MAX (MC_IO_BUFSIZE - 2)

/*
 * Status of every call that does I/O. TIMEOUT and TOO_LONG leave the
 * connection usable (e.g. to send a 421 or 500 reply); after ERROR, or any
 * write failure, the connection should be dropped.
 */
enum mc_io_status {
	MC_IO_OK = 0,
	MC_IO_EOF,      /* the peer closed its side (TLS: close_notify or plain EOF) */
	MC_IO_TIMEOUT,  /* idle timeout or session deadline; see mc_io_last_error */
	MC_IO_TOO_LONG, /* mc_io_read_line: the line exceeded maxlen */
	MC_IO_ERROR,    /* I/O or TLS failure; see mc_io_last_error */
};

/*
 * Line flags from mc_io_read_line. A line ends at LF and only at LF; the
 * returned bytes exclude the LF and, for CRLF, the CR just before it.
 * Every other CR stays in the returned bytes and sets MC_IO_LINE_BARE_CR:
 * ".\r\r\n" is the 2-byte line ".\r" with CRLF | BARE_CR, never ".".
 * So "." with exactly MC_IO_LINE_CRLF (after a line that also ended CRLF)
 * is the only form of the SMTP end-of-data line; anything else is data or
 * an error for the caller to refuse (SMTP smuggling).
 */
#define MC_IO_LINE_CRLF        0x01u /* ended with CR LF */
#define MC_IO_LINE_BARE_LF     0x02u /* ended with LF not preceded by CR */
#define MC_IO_LINE_BARE_CR     0x04u /* a CR not followed by LF is in the line */
#define MC_IO_LINE_NUL         0x08u /* a NUL octet is in the line */
#define MC_IO_LINE_EOF_PARTIAL 0x10u /* stream ended without a terminator */

/*
 * Start using rfd/wfd (may be equal: under inetd/systemd fd 0 = fd 1 = the
 * socket; in tests often a pipe pair). Sets O_NONBLOCK on both (mc_io_free
 * restores the old flags, so free before closing the fds). The fds stay
 * owned by the caller; mc_io never closes them.
 *
 * idle_timeout_ms: how long one read or write may wait without progress
 * (bytes obtained or sent) before MC_IO_TIMEOUT; a TLS handshake must finish
 * within it as a whole. 0 = wait forever.
 *
 * SIGPIPE: if its disposition is the default, mc_io_new sets it to SIG_IGN
 * for the whole process (the one piece of global state this layer touches),
 * because OpenSSL writes to the socket with write(2) and pipes cannot use
 * MSG_NOSIGNAL; a write to a closed peer is then MC_IO_ERROR, not death.
 * A handler the caller installed is left alone. Plain socket writes also
 * use send(MSG_NOSIGNAL). Reset SIGPIPE to SIG_DFL in a child before exec.
 *
 * Returns NULL with errno set (EBADF, ENOMEM, ...).
 */
struct mc_io *mc_io_new(int rfd, int wfd, int idle_timeout_ms);

/* Free everything (the SSL object included), restore the fd flags. NULL ok. */
void mc_io_free(struct mc_io *io);

/*
 * Flush what is buffered (normal timeout rules), then, under TLS, send
 * close_notify without waiting for the peer's (bounded to about 1 s). Does
 * not close the fds. Afterwards every read or write returns MC_IO_ERROR.
 * Returns the flush status.
 */
int mc_io_close(struct mc_io *io);

/* Change the idle timeout (ms, 0 = none), e.g. a longer one inside DATA. */
void mc_io_set_idle_timeout(struct mc_io *io, int idle_timeout_ms);

/*
 * Absolute bound for the whole session: from now + ms on, every wait
 * returns MC_IO_TIMEOUT ("session deadline"). Bounds slow-drip clients that
 * keep the idle timer alive. 0 removes the deadline.
 */
void mc_io_set_deadline(struct mc_io *io, unsigned ms_from_now);

/*
 * Read one line of at most maxlen content octets, the terminator (CR LF or
 * LF) not counted: RFC 5321's 512-octet command line including CRLF is
 * maxlen 510, its 1000-octet text line 998. Clamped to MC_IO_LINE_MAX.
 * On MC_IO_OK, *line points at *len octets inside the read
 * buffer, NUL-terminated for convenience (but check MC_IO_LINE_NUL), valid
 * until the next read call; *flags says how it ended (see above).
 *
 * MC_IO_TOO_LONG is returned once for an overlong line (as soon as that is
 * certain, without waiting for its end); the next read call first skips
 * the rest of that line through its LF. A stream that ends without a
 * terminator yields its last bytes once with MC_IO_LINE_EOF_PARTIAL, then
 * MC_IO_EOF. On any status but MC_IO_OK, *line = NULL, *len = 0, *flags = 0.
 *
 * Before it would block waiting for input (nothing buffered, nothing
 * readable on the fd), the read call flushes the write buffer: pipelined
 * replies go out together, and a reply is never left unsent while waiting.
 */
int mc_io_read_line(struct mc_io *io, size_t maxlen, const char **line,
    size_t *len, unsigned *flags);

/*
 * Read up to `want` raw octets (buffered ones first, then from the fd; at
 * most one fill per call) into buf: *got > 0 with MC_IO_OK, or 0 with
 * another status (MC_IO_EOF at end of stream). Loop until a BDAT chunk is
 * complete; bytes after it stay buffered for the next mc_io_read_line.
 * Flushes before blocking like mc_io_read_line. want == 0: MC_IO_OK, *got 0.
 */
int mc_io_read_raw(struct mc_io *io, void *buf, size_t want, size_t *got);

/* Input already buffered: in the read buffer plus decrypted TLS data. */
size_t mc_io_pending(struct mc_io *io);

/* Output buffered and not yet sent. */
size_t mc_io_unflushed(struct mc_io *io);

/*
 * Buffer output. The buffer is sent when full, on mc_io_flush, before a
 * read would block, and on mc_io_close. Writes larger than the buffer go
 * out directly. Writes to a slow peer wait with poll(POLLOUT) under the
 * idle timeout. A failure (EPIPE, ECONNRESET, timeout) is sticky: every
 * later write or flush returns the same status and the output is dropped.
 */
int mc_io_write(struct mc_io *io, const void *data, size_t len);
int mc_io_printf(struct mc_io *io, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int mc_io_vprintf(struct mc_io *io, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
int mc_io_flush(struct mc_io *io);

/*
 * STARTTLS/STLS and implicit TLS (call before the greeting). First flushes
 * the plaintext reply ("220 Ready to start TLS"), then DISCARDS everything
 * in the read buffer: bytes the client pipelined after STARTTLS/STLS are
 * never executed after the handshake (CVE-2011-0411 class); plaintext that
 * is still in the kernel reaches the handshake and makes it fail. Then runs
 * the handshake non-blocking on the same rfd/wfd; afterwards all reads and
 * writes go through TLS. The whole handshake must finish within the idle
 * timeout (MC_IO_TIMEOUT otherwise).
 *
 * Failure (MC_IO_ERROR or MC_IO_TIMEOUT, with a short reason in
 * mc_io_last_error, e.g. "TLS handshake: unsupported protocol", or "TLS
 * setup: module tls: ..." if tls.so cannot be loaded) leaves the
 * connection unusable: every later call returns MC_IO_ERROR. Calling it
 * when TLS is already active is MC_IO_ERROR ("TLS already active") without
 * harm to the session.
 */
int mc_io_start_tls_server(struct mc_io *io, SSL_CTX *ctx);

/*
 * The client side, for the relay client: the same discard (a server must
 * not inject replies either), then the handshake. host (may be NULL) is
 * sent as SNI and checked against the certificate (an IP literal is
 * checked as an address, no SNI); with a verifying context a mismatch
 * fails the handshake, otherwise see mc_io_tls_verified.
 */
int mc_io_start_tls_client(struct mc_io *io, SSL_CTX *ctx, const char *host);

/* 1 when TLS is active. */
int mc_io_is_tls(struct mc_io *io);

/* Octets the last mc_io_start_tls_* discarded from the read buffer. */
size_t mc_io_tls_discarded(struct mc_io *io);

/*
 * Negotiated "protocol:cipher", e.g. "TLSv1.3:TLS_AES_256_GCM_SHA384",
 * for the Received header. 0 on success; -1 (buf = "") without TLS or if
 * buf is too small.
 */
int mc_io_tls_info(struct mc_io *io, char *buf, size_t len);

/* 1 if the peer presented a certificate that verified (chain and host). */
int mc_io_tls_verified(struct mc_io *io);

/* Short reason for the last ERROR or TIMEOUT ("" if none). Never NULL. */
const char *mc_io_last_error(struct mc_io *io);

/* "OK", "EOF", "TIMEOUT", "TOO_LONG", "ERROR" (for logs and tests). */
const char *mc_io_status_str(int status);

#endif
