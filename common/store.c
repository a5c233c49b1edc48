/*
 * store.c - the store's connection: created on first use from mongodb_uri with
 * bounded timeouts and the configured write concern, plus the error mapping
 * that turns every driver failure into a clear temporary or permanent status.
 */
#include "store_int.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct mc_store *
mc_store_new(const struct mc_config *cfg)
{
	struct mc_store *st = calloc(1, sizeof(*st));

	if (st == NULL)
		return NULL;
	st->uri = strdup(cfg->mongodb_uri);
	st->dbname = strdup(cfg->database);
	st->wconcern = strdup(cfg->write_concern);
	st->journal = cfg->write_journal;
	st->timeout_ms = cfg->db_timeout_ms;
	if (st->uri == NULL || st->dbname == NULL || st->wconcern == NULL) {
		mc_store_free(st);
		return NULL;
	}
	return st;
}

void
mc_store_free(struct mc_store *st)
{
	if (st == NULL)
		return;
	if (st->db != NULL)
		mongoc_database_destroy(st->db);
	if (st->client != NULL)
		mongoc_client_destroy(st->client);
	free(st->uri);
	free(st->dbname);
	free(st->wconcern);
	free(st);
}

const char *
mc_store_error(const struct mc_store *st)
{
	return st->err[0] ? st->err : "no error";
}

enum mc_store_status
mc_store_seterr(struct mc_store *st, enum mc_store_status s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(st->err, sizeof(st->err), fmt, ap);
	va_end(ap);
	return s;
}

enum mc_store_status
mc_store_fail(struct mc_store *st, const bson_error_t *e, const char *what)
{
	if (e->code == 11000 || e->code == 11001) {
		mc_store_seterr(st, MC_STORE_EXISTS, "%s: already exists", what);
		return MC_STORE_EXISTS;
	}
	mc_store_seterr(st, MC_STORE_TEMP, "database unavailable (%s): %s", what, e->message);
	return MC_STORE_TEMP;
}

/* The driver's own messages go to our log, never to stdout (the protocol stream). */
static void
driver_log(mongoc_log_level_t level, const char *domain, const char *message, void *data)
{
	(void)data;
	/* Servers without sessions (the dev database) refuse endSessions: harmless. */
	if (strstr(message, "\"endSessions\"") != NULL)
		level = MONGOC_LOG_LEVEL_DEBUG;
	if (level <= MONGOC_LOG_LEVEL_WARNING)
		mc_log(MC_LOG_WARNING, "mongoc %s: %s", domain, message);
	else
		mc_log(MC_LOG_DEBUG, "mongoc %s: %s", domain, message);
}

/*
 * Debian's libmongoc initialises itself in a load-time constructor, which
 * creates a shared-memory counters segment (/dev/shm/mongoc-PID) that only
 * mongoc_cleanup removes. Run it once at exit so sessions leave nothing behind.
 * (MONGOC_DISABLE_SHM=1 in the environment avoids the segment altogether.)
 */
static void
register_cleanup(void)
{
	static int registered;

	if (!registered && atexit(mongoc_cleanup) == 0)
		registered = 1;
}

/* Default a timeout option unless the URI sets it. */
static void
uri_default(mongoc_uri_t *uri, const char *opt, int32_t value)
{
	if (!mongoc_uri_has_option(uri, opt))
		mongoc_uri_set_option_as_int32(uri, opt, value);
}

static mongoc_write_concern_t *
make_write_concern(const struct mc_store *st)
{
	mongoc_write_concern_t *wc = mongoc_write_concern_new();

	if (strcmp(st->wconcern, "majority") == 0)
		mongoc_write_concern_set_w(wc, MONGOC_WRITE_CONCERN_W_MAJORITY);
	else
		mongoc_write_concern_set_w(wc, atoi(st->wconcern));
	mongoc_write_concern_set_journal(wc, st->journal != 0);
	mongoc_write_concern_set_wtimeout_int64(wc, (int64_t)st->timeout_ms * 2);
	return wc;
}

enum mc_store_status
mc_store_connect(struct mc_store *st)
{
	bson_error_t e;
	mongoc_uri_t *uri;
	mongoc_write_concern_t *wc;

	if (st->client != NULL)
		return MC_STORE_OK;
	mongoc_log_set_handler(driver_log, NULL);
	mongoc_init();
	register_cleanup();
	if ((uri = mongoc_uri_new_with_error(st->uri, &e)) == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "bad mongodb_uri: %s", e.message);
	uri_default(uri, MONGOC_URI_CONNECTTIMEOUTMS, (int32_t)st->timeout_ms);
	uri_default(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, (int32_t)st->timeout_ms);
	uri_default(uri, MONGOC_URI_SOCKETTIMEOUTMS, (int32_t)st->timeout_ms * 2);
	if (!mongoc_uri_has_option(uri, MONGOC_URI_APPNAME))
		mongoc_uri_set_appname(uri, "mailcell");
	st->client = mongoc_client_new_from_uri_with_error(uri, &e);
	mongoc_uri_destroy(uri);
	if (st->client == NULL)
		return mc_store_seterr(st, MC_STORE_TEMP, "bad mongodb_uri: %s", e.message);
	mongoc_client_set_error_api(st->client, MONGOC_ERROR_API_VERSION_2);
	wc = make_write_concern(st);
	mongoc_client_set_write_concern(st->client, wc);
	mongoc_write_concern_destroy(wc);
	st->db = mongoc_client_get_database(st->client, st->dbname);
	return MC_STORE_OK;
}

mongoc_collection_t *
mc_store_coll(struct mc_store *st, const char *name)
{
	if (mc_store_connect(st) != MC_STORE_OK)
		return NULL;
	return mongoc_database_get_collection(st->db, name);
}

enum mc_store_status
mc_store_ping(struct mc_store *st)
{
	bson_t cmd = BSON_INITIALIZER;
	bson_error_t e;
	enum mc_store_status s = MC_STORE_OK;

	if (mc_store_connect(st) != MC_STORE_OK)
		return MC_STORE_TEMP;
	BSON_APPEND_INT32(&cmd, "ping", 1);
	if (!mongoc_database_command_simple(st->db, &cmd, NULL, NULL, &e))
		s = mc_store_fail(st, &e, "ping");
	bson_destroy(&cmd);
	return s;
}

int
mc_store_exists(struct mc_store *st, const char *name, const bson_t *filter)
{
	mongoc_collection_t *c = mc_store_coll(st, name);
	mongoc_cursor_t *cur;
	const bson_t *doc;
	bson_error_t e;
	bson_t opts = BSON_INITIALIZER;
	int found;

	if (c == NULL)
		return -1;
	BSON_APPEND_INT64(&opts, "limit", 1);
	cur = mongoc_collection_find_with_opts(c, filter, &opts, NULL);
	found = mongoc_cursor_next(cur, &doc) ? 1 : 0;
	if (!found && mongoc_cursor_error(cur, &e)) {
		mc_store_fail(st, &e, name);
		found = -1;
	}
	mongoc_cursor_destroy(cur);
	mongoc_collection_destroy(c);
	bson_destroy(&opts);
	return found;
}

enum mc_store_status
mc_store_oid(struct mc_store *st, const char *hex, bson_oid_t *oid)
{
	if (hex == NULL || strlen(hex) != MC_ID_LEN || !bson_oid_is_valid(hex, MC_ID_LEN))
		return mc_store_seterr(st, MC_STORE_NOTFOUND, "malformed id '%.40s'",
		    hex ? hex : "");
	bson_oid_init_from_string(oid, hex);
	return MC_STORE_OK;
}

int64_t
mc_store_now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void
mc_store_get_str(const bson_t *doc, const char *key, char *out, size_t outlen)
{
	bson_iter_t it;

	out[0] = '\0';
	if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
		snprintf(out, outlen, "%s", bson_iter_utf8(&it, NULL));
}
