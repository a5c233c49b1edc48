/*
 * store_lite.c - linked into lib/mailcell/store-lite.so only: tells the
 * session's loader (lazy_store.c) whether this module's libmongoc, built
 * without TLS, authentication and compression, can serve a mongodb_uri.
 */
#include "store_int.h"

#include <string.h>
#include <strings.h>

int mc_store_lite_fits(const char *uri_string);

static void
quiet(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
	(void)level, (void)domain, (void)message, (void)data;
}

/* Whether the URI's options name key (case-insensitive, as the driver reads them). */
static int
has_option(const char *uri, const char *key)
{
	const char *p = strchr(uri, '?');
	size_t len = strlen(key);

	while (p != NULL) {
		p++;
		if (strncasecmp(p, key, len) == 0 && p[len] == '=')
			return 1;
		p = strpbrk(p, "&;");
	}
	return 0;
}

/*
 * 1: this module serves uri exactly as store.so would. 0: the URI asks for
 * TLS, a login (SCRAM and the others need OpenSSL or Cyrus SASL), SRV
 * lookup or wire compression, which only Debian's full libmongoc in store.so
 * has. A URI that does not parse fits: both modules report it the same way.
 */
int
mc_store_lite_fits(const char *uri_string)
{
	mongoc_uri_t *uri;
	int fits;

	if (uri_string == NULL || strncasecmp(uri_string, "mongodb://", 10) != 0)
		return 0;
	if (has_option(uri_string, MONGOC_URI_COMPRESSORS))
		return 0;
	mongoc_log_set_handler(quiet, NULL);
	if ((uri = mongoc_uri_new_with_error(uri_string, NULL)) == NULL)
		return 1;
	fits = !mongoc_uri_get_tls(uri) && mongoc_uri_get_username(uri) == NULL &&
	    mongoc_uri_get_auth_mechanism(uri) == NULL;
	mongoc_uri_destroy(uri);
	return fits;
}
