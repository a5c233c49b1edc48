/*
 * tls_conn.h - the interface between the I/O layer (io.c) and the OpenSSL
 * code (tls.c, tls_conn.c): one table of functions. Programs linked with
 * OpenSSL get the table directly; the session programs get it from
 * lib/mailcell/tls.so, loaded at the first STARTTLS/STLS (lazy_tls.c).
 */
#ifndef MC_TLS_CONN_H
#define MC_TLS_CONN_H

#include <stddef.h>

/* SSL_CTX from <openssl/ssl.h>; a repeated identical typedef is valid C11. */
typedef struct ssl_ctx_st SSL_CTX;

/* One connection's TLS state (an SSL object on the connection's fds). */
struct mc_tls_conn;

/* What one non-blocking TLS step did. */
enum mc_tls_step {
	MC_TLS_DONE,       /* progress: bytes moved, or the handshake/close_notify is done */
	MC_TLS_WANT_READ,  /* nothing yet: retry when the read fd is readable */
	MC_TLS_WANT_WRITE, /* nothing yet: retry when the write fd is writable */
	MC_TLS_CLOSED,     /* the peer sent close_notify */
	MC_TLS_FAILED,     /* fatal (reason in err): no close_notify may follow */
};

/* Changes whenever struct mc_tls_ops does: a module of another build is refused. */
#define MC_TLS_ABI 1

/*
 * The table. err/errlen receive a short reason without a prefix ("wrong
 * version number", "connection closed", strerror(errno)); io.c prefixes what
 * it was doing. Lengths are clamped to INT_MAX by the callee.
 */
struct mc_tls_ops {
	unsigned abi;   /* MC_TLS_ABI of the code that made the table */
	/* Contexts: mc_tls_server_ctx, mc_tls_client_ctx, mc_tls_ctx_free (tls.h). */
	SSL_CTX *(*server_ctx)(const char *cert_file, const char *key_file, char *err,
	    size_t errlen);
	SSL_CTX *(*client_ctx)(int verify, const char *ca_file, char *err, size_t errlen);
	void (*ctx_free)(SSL_CTX *ctx);
	/*
	 * A connection on rfd/wfd (may be equal), server or client side; host
	 * (client, may be NULL) is sent as SNI and verified (an IP literal as an
	 * address). NULL with the reason in err.
	 */
	struct mc_tls_conn *(*conn_new)(SSL_CTX *ctx, int rfd, int wfd, int server,
	    const char *host, char *err, size_t errlen);
	void (*conn_free)(struct mc_tls_conn *c);   /* NULL ok */
	/* One handshake step: DONE when complete. */
	int (*handshake)(struct mc_tls_conn *c, char *err, size_t errlen);
	/* After a failed client handshake: 1 and "certificate verify failed: ..." in err
	 * if the peer's certificate was the reason (verifying context only), else 0. */
	int (*verify_error)(struct mc_tls_conn *c, char *err, size_t errlen);
	/* DONE with *n > 0 octets moved, or another step with *n = 0. */
	int (*read)(struct mc_tls_conn *c, void *buf, size_t len, size_t *n, char *err,
	    size_t errlen);
	int (*write)(struct mc_tls_conn *c, const void *buf, size_t len, size_t *n, char *err,
	    size_t errlen);
	/* Decrypted octets buffered inside the TLS layer. */
	size_t (*pending)(struct mc_tls_conn *c);
	/* Send close_notify (one step; the peer's is not awaited): DONE, WANT_*, FAILED. */
	int (*shutdown)(struct mc_tls_conn *c);
	/* "protocol:cipher" into buf: 0, or -1 (buf = "") if it does not fit. */
	int (*info)(struct mc_tls_conn *c, char *buf, size_t len);
	/* 1 if the peer presented a certificate that verified (chain and host). */
	int (*verified)(struct mc_tls_conn *c);
};

/*
 * The table: tls_conn.c's own in programs linked with OpenSSL (and inside
 * tls.so, whose entry point it is); in the session programs lazy_tls.c's,
 * which loads tls.so first. NULL with one line in err if it cannot.
 */
const struct mc_tls_ops *mc_tls_get_ops(char *err, size_t errlen);

/*
 * The OpenSSL side only (tls.c, tls_conn.c): the oldest error in this
 * thread's OpenSSL error queue as "what: reason" (mc_tls_error) or just the
 * reason (mc_tls_reason), "unknown TLS error" if none; clears the queue.
 */
void mc_tls_error(char *buf, size_t len, const char *what);
void mc_tls_reason(char *buf, size_t len);

#endif
