/*
 * tls.c - OpenSSL contexts for mailcell (server and relay client) and the
 * error-queue-to-one-line helpers. The per-connection TLS state lives in
 * tls_conn.c; this file only builds and configures SSL_CTX objects. Linked
 * into the programs that link OpenSSL, and into lib/mailcell/tls.so.
 */
#include "tls.h"
#include "tls_conn.h"

#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* Options both sides share. */
#define MC_TLS_OPTIONS (SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | \
    SSL_OP_IGNORE_UNEXPECTED_EOF)

void
mc_tls_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;

	if (reason != NULL)
		snprintf(buf, len, "%s", reason);
	else if (e != 0)
		snprintf(buf, len, "OpenSSL error %lx", e);
	else
		snprintf(buf, len, "unknown TLS error");
	ERR_clear_error();
}

void
mc_tls_error(char *buf, size_t len, const char *what)
{
	char reason[160];

	mc_tls_reason(reason, sizeof reason);
	snprintf(buf, len, "%s: %s", what, reason);
}

void
mc_tls_ctx_free(SSL_CTX *ctx)
{
	SSL_CTX_free(ctx);
}

/* Settings common to the server and the client context. */
static int
tls_ctx_common(SSL_CTX *ctx)
{
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		return -1;
	SSL_CTX_set_options(ctx, MC_TLS_OPTIONS);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return 0;
}

static int
tls_load_key_pair(SSL_CTX *ctx, const char *cert_file, const char *key_file,
    char *err, size_t errlen)
{
	char what[512];

	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		snprintf(what, sizeof what, "TLS certificate %s", cert_file);
		mc_tls_error(err, errlen, what);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		snprintf(what, sizeof what, "TLS key %s", key_file);
		mc_tls_error(err, errlen, what);
		return -1;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(what, sizeof what, "TLS key %s does not match %s",
		    key_file, cert_file);
		mc_tls_error(err, errlen, what);
		return -1;
	}
	return 0;
}

SSL_CTX *
mc_tls_server_ctx(const char *cert_file, const char *key_file, char *err,
    size_t errlen)
{
	SSL_CTX *ctx;

	if (cert_file == NULL || *cert_file == '\0' || key_file == NULL ||
	    *key_file == '\0') {
		snprintf(err, errlen, "TLS: tls_cert and tls_key must be set");
		return NULL;
	}
	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		mc_tls_error(err, errlen, "TLS server context");
		return NULL;
	}
	if (tls_ctx_common(ctx) < 0) {
		mc_tls_error(err, errlen, "TLS server context");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_TICKET);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_dh_auto(ctx, 1);
	if (tls_load_key_pair(ctx, cert_file, key_file, err, errlen) < 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

SSL_CTX *
mc_tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL) {
		mc_tls_error(err, errlen, "TLS client context");
		return NULL;
	}
	if (tls_ctx_common(ctx) < 0) {
		mc_tls_error(err, errlen, "TLS client context");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	/* Loaded even when not verifying, so mc_io_tls_verified can tell. */
	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		ERR_clear_error();  /* no system store: only ca_file then */
	if (ca_file != NULL &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		char what[512];

		snprintf(what, sizeof what, "TLS CA file %s", ca_file);
		mc_tls_error(err, errlen, what);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}
