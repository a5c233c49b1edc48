/*
 * tls.h - OpenSSL contexts for mailcell: the server side (STARTTLS/STLS and
 * implicit TLS) and the client side (relay client), TLS 1.2 minimum. Create
 * them only when TLS starts: building an SSL_CTX is slow (startup budget).
 * The session programs do not link OpenSSL: there the first of these calls
 * loads lib/mailcell/tls.so (lazy_tls.c); elsewhere they are tls.c's own.
 */
#ifndef MC_TLS_H
#define MC_TLS_H

#include <stddef.h>

/* SSL_CTX from <openssl/ssl.h>; a repeated identical typedef is valid C11. */
typedef struct ssl_ctx_st SSL_CTX;

/*
 * Server context: certificate chain (PEM, leaf first) and private key (PEM),
 * TLS 1.2 minimum, server cipher preference, no compression, no
 * renegotiation, DHE parameters automatic. Neither a session cache nor
 * session tickets: every connection is a new process with its own random
 * ticket key, so resumption could never succeed and tickets would only cost
 * CPU and bytes. A peer closing without close_notify reads as plain EOF
 * (SMTP and POP3 have their own end markers).
 * Returns NULL and one line in err (naming the file, or why tls.so could not
 * be loaded) on failure. Free with mc_tls_ctx_free.
 */
SSL_CTX *mc_tls_server_ctx(const char *cert_file, const char *key_file,
    char *err, size_t errlen);

/*
 * Client context for the relay client: TLS 1.2 minimum, no compression, no
 * renegotiation, the system's default trust store plus ca_file (PEM) if not
 * NULL. verify != 0: an unverified peer (chain, or host given to
 * mc_io_start_tls_client) fails the handshake; verify == 0 (opportunistic
 * TLS): the handshake goes on and mc_io_tls_verified tells the result.
 * As on the server, a close without close_notify reads as plain EOF.
 * Returns NULL and one line in err on failure.
 */
SSL_CTX *mc_tls_client_ctx(int verify, const char *ca_file, char *err,
    size_t errlen);

/* Free a context from the functions above (SSL_CTX_free). NULL ok. */
void mc_tls_ctx_free(SSL_CTX *ctx);

#endif
