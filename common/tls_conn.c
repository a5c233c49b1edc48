/*
 * tls_conn.c - the OpenSSL half of the I/O layer: one SSL object per
 * connection, stepped non-blocking by io.c through struct mc_tls_ops
 * (tls_conn.h). Linked into the programs that link OpenSSL, and into
 * lib/mailcell/tls.so for the session programs, whose entry point is
 * mc_tls_get_ops.
 */
#include "tls_conn.h"
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* struct mc_tls_conn is the SSL object itself. */
#define SSL_OF(c) ((SSL *)(void *)(c))
#define CONN_OF(ssl) ((struct mc_tls_conn *)(void *)(ssl))

/* Map an SSL_get_error result; the reason for FAILED goes to err. */
static int
step(SSL *ssl, int ret, char *err, size_t errlen)
{
	switch (SSL_get_error(ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		return MC_TLS_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return MC_TLS_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return MC_TLS_CLOSED;
	case SSL_ERROR_SYSCALL:
		if (err != NULL)
			snprintf(err, errlen, "%s", errno == 0 ? "connection closed" :
			    strerror(errno));
		ERR_clear_error();
		return MC_TLS_FAILED;
	default:
		if (err != NULL)
			mc_tls_reason(err, errlen);
		ERR_clear_error();
		return MC_TLS_FAILED;
	}
}

/* SNI and the name to verify; an IP literal is verified as an address. */
static int
client_names(SSL *ssl, const char *host)
{
	unsigned char addr[16];

	if (host == NULL || *host == '\0')
		return 0;
	if (inet_pton(AF_INET, host, addr) == 1 ||
	    inet_pton(AF_INET6, host, addr) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    host) == 1 ? 0 : -1;
	if (SSL_set_tlsext_host_name(ssl, host) != 1)
		return -1;
	return SSL_set1_host(ssl, host) == 1 ? 0 : -1;
}

static struct mc_tls_conn *
conn_new(SSL_CTX *ctx, int rfd, int wfd, int server, const char *host, char *err,
    size_t errlen)
{
	SSL *ssl;
	int ok;

	ERR_clear_error();
	if ((ssl = SSL_new(ctx)) == NULL) {
		mc_tls_reason(err, errlen);
		return NULL;
	}
	if (rfd == wfd)
		ok = SSL_set_fd(ssl, rfd);
	else
		ok = SSL_set_rfd(ssl, rfd) == 1 && SSL_set_wfd(ssl, wfd) == 1;
	if (ok == 1 && !server && client_names(ssl, host) < 0)
		ok = 0;
	if (ok != 1) {
		mc_tls_reason(err, errlen);
		SSL_free(ssl);
		return NULL;
	}
	if (server)
		SSL_set_accept_state(ssl);
	else
		SSL_set_connect_state(ssl);
	return CONN_OF(ssl);
}

static void
conn_free(struct mc_tls_conn *c)
{
	SSL_free(SSL_OF(c));
	ERR_clear_error();
}

static int
handshake(struct mc_tls_conn *c, char *err, size_t errlen)
{
	int r;

	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(SSL_OF(c));
	return r == 1 ? MC_TLS_DONE : step(SSL_OF(c), r, err, errlen);
}

static int
verify_error(struct mc_tls_conn *c, char *err, size_t errlen)
{
	SSL *ssl = SSL_OF(c);
	long v = SSL_get_verify_result(ssl);

	if (!(SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
		return 0;   /* not verifying: a bad certificate was no failure */
	if (v == X509_V_OK)
		return 0;
	snprintf(err, errlen, "certificate verify failed: %s",
	    X509_verify_cert_error_string(v));
	return 1;
}

static int
tls_read(struct mc_tls_conn *c, void *buf, size_t len, size_t *n, char *err,
    size_t errlen)
{
	int r;

	*n = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_read(SSL_OF(c), buf, len > INT_MAX ? INT_MAX : (int)len);
	if (r > 0) {
		*n = (size_t)r;
		return MC_TLS_DONE;
	}
	return step(SSL_OF(c), r, err, errlen);
}

static int
tls_write(struct mc_tls_conn *c, const void *buf, size_t len, size_t *n, char *err,
    size_t errlen)
{
	int r;

	*n = 0;
	ERR_clear_error();
	errno = 0;
	r = SSL_write(SSL_OF(c), buf, len > INT_MAX ? INT_MAX : (int)len);
	if (r > 0) {
		*n = (size_t)r;
		return MC_TLS_DONE;
	}
	return step(SSL_OF(c), r, err, errlen);
}

static size_t
pending(struct mc_tls_conn *c)
{
	int n = SSL_pending(SSL_OF(c));

	return n > 0 ? (size_t)n : 0;
}

static int
shutdown_step(struct mc_tls_conn *c)
{
	int r, st;

	ERR_clear_error();
	errno = 0;
	r = SSL_shutdown(SSL_OF(c));
	st = r >= 0 ? MC_TLS_DONE : step(SSL_OF(c), r, NULL, 0);
	ERR_clear_error();
	return st;
}

static int
info(struct mc_tls_conn *c, char *buf, size_t len)
{
	int n;

	if (len == 0)
		return -1;
	n = snprintf(buf, len, "%s:%s", SSL_get_version(SSL_OF(c)),
	    SSL_get_cipher_name(SSL_OF(c)));
	if (n < 0 || (size_t)n >= len) {
		buf[0] = '\0';
		return -1;
	}
	return 0;
}

static int
verified(struct mc_tls_conn *c)
{
	SSL *ssl = SSL_OF(c);

	if (SSL_get0_peer_certificate(ssl) == NULL)
		return 0;
	return SSL_get_verify_result(ssl) == X509_V_OK;
}

static const struct mc_tls_ops ops = {
	.abi = MC_TLS_ABI,
	.server_ctx = mc_tls_server_ctx,
	.client_ctx = mc_tls_client_ctx,
	.ctx_free = mc_tls_ctx_free,
	.conn_new = conn_new,
	.conn_free = conn_free,
	.handshake = handshake,
	.verify_error = verify_error,
	.read = tls_read,
	.write = tls_write,
	.pending = pending,
	.shutdown = shutdown_step,
	.info = info,
	.verified = verified,
};

const struct mc_tls_ops *
mc_tls_get_ops(char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	return &ops;
}
