/*
 * lazy_tls.c - TLS as the session programs see it: loads lib/mailcell/tls.so
 * (tls.c and tls_conn.c with libssl and libcrypto) at the first STARTTLS/STLS
 * or implicit TLS, so a session that never starts TLS never loads OpenSSL
 * (Debian links it BIND_NOW: resolving it costs every exec ~1.5 ms).
 */
#include "tls.h"
#include "tls_conn.h"

#include <stdio.h>

#include "module.h"

static const struct mc_tls_ops *ops;

const struct mc_tls_ops *
mc_tls_get_ops(char *err, size_t errlen)
{
	const struct mc_tls_ops *(*get)(char *, size_t);
	const struct mc_tls_ops *o;
	void *module;

	if (ops != NULL)
		return ops;
	if ((module = mc_module_load("tls", err, errlen)) == NULL ||
	    (get = (const struct mc_tls_ops *(*)(char *, size_t))mc_module_sym(module,
	    "mc_tls_get_ops", err, errlen)) == NULL ||
	    (o = get(err, errlen)) == NULL)
		return NULL;
	if (o->abi != MC_TLS_ABI) {
		snprintf(err, errlen, "module tls: interface version %u, this program needs %u",
		    o->abi, (unsigned)MC_TLS_ABI);
		return NULL;
	}
	return ops = o;
}

SSL_CTX *
mc_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
	const struct mc_tls_ops *o = mc_tls_get_ops(err, errlen);

	return o != NULL ? o->server_ctx(cert_file, key_file, err, errlen) : NULL;
}

SSL_CTX *
mc_tls_client_ctx(int verify, const char *ca_file, char *err, size_t errlen)
{
	const struct mc_tls_ops *o = mc_tls_get_ops(err, errlen);

	return o != NULL ? o->client_ctx(verify, ca_file, err, errlen) : NULL;
}

/* A context exists only if the module was loaded. */
void
mc_tls_ctx_free(SSL_CTX *ctx)
{
	if (ctx != NULL && ops != NULL)
		ops->ctx_free(ctx);
}
