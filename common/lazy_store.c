/*
 * lazy_store.c - the store API for session programs, loading the real store
 * only at the first call that needs the database: store-lite.so when the
 * mongodb_uri needs no TLS, login or compression, else store.so (Debian's
 * libmongoc). Each function here forwards to the same name in the module.
 */
#include "store.h"
#include "store_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "module.h"

/* The session's handle: the settings until the real store exists. */
struct mc_store {
	const struct mc_config *cfg;
	struct mc_store *real;     /* the module's store, once loaded */
	char err[512];
};

static void *module;

/*
 * The module for this mongodb_uri: store-lite.so if it is there and says it
 * serves the URI (about a twentieth of store.so's load: no OpenSSL, ICU,
 * Cyrus SASL, libstdc++), else store.so. NULL with err set.
 */
static void *
load_module(const struct mc_config *cfg, char *err, size_t errlen)
{
	char ignored[256];
	void *lite;
	int (*fits)(const char *);

	if ((lite = mc_module_load("store-lite", ignored, sizeof(ignored))) != NULL) {
		fits = (int (*)(const char *))mc_module_sym(lite, "mc_store_lite_fits",
		    ignored, sizeof(ignored));
		if (fits != NULL && fits(cfg->mongodb_uri) == 1)
			return lite;
		mc_module_unload("store-lite");
	}
	return mc_module_load("store", err, errlen);
}

/* A symbol of the loaded store module (real_store() has loaded it). */
static void *
sym(const char *name, char *err, size_t errlen)
{
	if (module == NULL) {
		snprintf(err, errlen, "the store module is not loaded");
		return NULL;
	}
	return mc_module_sym(module, name, err, errlen);
}

/* The real store behind st, made at first use; NULL with st->err set. */
static struct mc_store *
real_store(struct mc_store *st)
{
	struct mc_store *(*make)(const struct mc_config *);

	if (st->real != NULL)
		return st->real;
	if (module == NULL && (module = load_module(st->cfg, st->err, sizeof(st->err))) == NULL)
		return NULL;
	if ((make = (struct mc_store *(*)(const struct mc_config *))sym("mc_store_new", st->err,
	    sizeof(st->err))) == NULL)
		return NULL;
	if ((st->real = make(st->cfg)) == NULL)
		snprintf(st->err, sizeof(st->err), "out of memory");
	return st->real;
}

struct mc_store *
mc_store_new(const struct mc_config *cfg)
{
	struct mc_store *st = calloc(1, sizeof(*st));

	if (st != NULL)
		st->cfg = cfg;
	return st;
}

void
mc_store_free(struct mc_store *st)
{
	char err[256];
	void (*fn)(struct mc_store *);

	if (st == NULL)
		return;
	if (st->real != NULL &&
	    (fn = (void (*)(struct mc_store *))sym("mc_store_free", err, sizeof(err))) != NULL)
		fn(st->real);
	free(st);
}

const char *
mc_store_error(const struct mc_store *st)
{
	char err[256];
	const char *(*fn)(const struct mc_store *);

	if (st->real == NULL)
		return st->err;
	fn = (const char *(*)(const struct mc_store *))sym("mc_store_error", err, sizeof(err));
	return fn ? fn(st->real) : st->err;
}

/* A function whose first argument is the store: made real, then forwarded. */
#define VIA_STORE(name, params, args)                                          \
	enum mc_store_status name params                                       \
	{                                                                      \
		static enum mc_store_status (*fn) params;                      \
		struct mc_store *real = real_store(st);                        \
		if (real == NULL)                                              \
			return MC_STORE_TEMP;                                  \
		if (fn == NULL && (fn = (enum mc_store_status (*) params)sym(#name, \
		    st->err, sizeof(st->err))) == NULL)                        \
			return MC_STORE_TEMP;                                  \
		return fn args;                                                \
	}

/* A function on an object the module made: the module is loaded already. */
#define VIA_OBJECT(type, name, params, args, fail)                             \
	type name params                                                       \
	{                                                                      \
		static type (*fn) params;                                      \
		char err[256];                                                 \
		if (fn == NULL && (fn = (type (*) params)sym(#name, err, sizeof(err))) == NULL) \
			return fail;                                           \
		return fn args;                                                \
	}

VIA_STORE(mc_store_ping, (struct mc_store *st), (real))
VIA_STORE(mc_store_domain_add, (struct mc_store *st, const char *d), (real, d))
VIA_STORE(mc_store_domain_remove, (struct mc_store *st, const char *d), (real, d))
VIA_STORE(mc_store_domain_exists, (struct mc_store *st, const char *d), (real, d))
VIA_STORE(mc_store_domain_list, (struct mc_store *st, void (*cb)(void *, const char *),
    void *ctx), (real, cb, ctx))
VIA_STORE(mc_store_user_add, (struct mc_store *st, const char *a, const char *n, const char *h),
    (real, a, n, h))
VIA_STORE(mc_store_user_passwd, (struct mc_store *st, const char *a, const char *h),
    (real, a, h))
VIA_STORE(mc_store_user_set_disabled, (struct mc_store *st, const char *a, int d), (real, a, d))
VIA_STORE(mc_store_user_remove, (struct mc_store *st, const char *a), (real, a))
VIA_STORE(mc_store_user_get, (struct mc_store *st, const char *a, struct mc_user *u),
    (real, a, u))
VIA_STORE(mc_store_user_list, (struct mc_store *st,
    void (*cb)(void *, const struct mc_user *), void *ctx), (real, cb, ctx))
VIA_STORE(mc_store_domain_first_user, (struct mc_store *st, const char *d, struct mc_user *u),
    (real, d, u))
VIA_STORE(mc_store_alias_add, (struct mc_store *st, const char *a, const char *const *t,
    size_t n), (real, a, t, n))
VIA_STORE(mc_store_alias_remove, (struct mc_store *st, const char *a), (real, a))
VIA_STORE(mc_store_alias_get, (struct mc_store *st, const char *a,
    void (*cb)(void *, const char *), void *ctx), (real, a, cb, ctx))
VIA_STORE(mc_store_alias_list, (struct mc_store *st,
    void (*cb)(void *, const char *, const char *), void *ctx), (real, cb, ctx))
VIA_STORE(mc_store_body_begin, (struct mc_store *st, struct mc_body_writer **w), (real, w))
VIA_STORE(mc_store_deliver, (struct mc_store *st, const char *b, uint64_t size,
    const char *const *m, size_t n, const struct mc_message_meta *meta),
    (real, b, size, m, n, meta))
VIA_STORE(mc_store_undeliver, (struct mc_store *st, const char *b), (real, b))
VIA_STORE(mc_store_mailbox_list, (struct mc_store *st, const char *m,
    void (*cb)(void *, const struct mc_message_info *), void *ctx), (real, m, cb, ctx))
VIA_STORE(mc_store_messages_delete, (struct mc_store *st, const char *m,
    const char *const *ids, size_t n), (real, m, ids, n))
VIA_STORE(mc_store_body_open, (struct mc_store *st, const char *b, struct mc_body_reader **r),
    (real, b, r))
VIA_STORE(mc_store_message_open, (struct mc_store *st, const char *m,
    struct mc_body_reader **r), (real, m, r))
VIA_STORE(mc_store_entry_open, (struct mc_store *st, const char *b, const char *h, uint64_t size,
    struct mc_body_reader **r), (real, b, h, size, r))
VIA_STORE(mc_store_body_delete, (struct mc_store *st, const char *b), (real, b))
VIA_STORE(mc_store_outbound_add, (struct mc_store *st, const struct mc_outbound_new *q,
    char *id), (real, q, id))
VIA_STORE(mc_store_outbound_list, (struct mc_store *st,
    void (*cb)(void *, const struct mc_outbound_info *), void *ctx), (real, cb, ctx))
VIA_STORE(mc_store_outbound_json, (struct mc_store *st, const char *id, char **j),
    (real, id, j))
VIA_STORE(mc_store_outbound_get, (struct mc_store *st, const char *id,
    struct mc_outbound_info *o), (real, id, o))
VIA_STORE(mc_store_outbound_retry, (struct mc_store *st, const char *id), (real, id))
VIA_STORE(mc_store_outbound_hold, (struct mc_store *st, const char *id), (real, id))
VIA_STORE(mc_store_outbound_release, (struct mc_store *st, const char *id), (real, id))
VIA_STORE(mc_store_outbound_delete, (struct mc_store *st, const char *id), (real, id))
VIA_STORE(mc_store_outbound_claim, (struct mc_store *st, const char *owner, unsigned lease,
    struct mc_outbound_info *o), (real, owner, lease, o))
VIA_STORE(mc_store_lock_take, (struct mc_store *st, const char *n, const char *h, unsigned t),
    (real, n, h, t))
VIA_STORE(mc_store_lock_renew, (struct mc_store *st, const char *n, const char *h, unsigned t),
    (real, n, h, t))
VIA_STORE(mc_store_lock_release, (struct mc_store *st, const char *n, const char *h),
    (real, n, h))
VIA_STORE(mc_store_dmarc_add, (struct mc_store *st, const struct mc_dmarc_record *r),
    (real, r))

VIA_OBJECT(enum mc_store_status, mc_store_body_write, (struct mc_body_writer *w,
    const void *buf, size_t len), (w, buf, len), MC_STORE_TEMP)
VIA_OBJECT(enum mc_store_status, mc_store_body_finish, (struct mc_body_writer *w,
    char *id), (w, id), MC_STORE_TEMP)
VIA_OBJECT(uint64_t, mc_store_body_size, (const struct mc_body_writer *w), (w), 0)
VIA_OBJECT(enum mc_store_status, mc_store_body_read, (struct mc_body_reader *r, void *buf,
    size_t len, size_t *got), (r, buf, len, got), MC_STORE_TEMP)

void
mc_store_body_abort(struct mc_body_writer *w)
{
	static void (*fn)(struct mc_body_writer *);
	char err[256];

	if (w != NULL && (fn != NULL ||
	    (fn = (void (*)(struct mc_body_writer *))sym("mc_store_body_abort", err, sizeof(err)))))
		fn(w);
}

void
mc_store_body_close(struct mc_body_reader *r)
{
	static void (*fn)(struct mc_body_reader *);
	char err[256];

	if (r != NULL && (fn != NULL ||
	    (fn = (void (*)(struct mc_body_reader *))sym("mc_store_body_close", err, sizeof(err)))))
		fn(r);
}
