/*
 * lazy_inbound.c - the inbound checks as the session sees them: decides
 * whether a client is checked at all, and loads inbound.so (libspf2,
 * libopendkim, libopendmarc) only for the first message that is. Each
 * function forwards to the same name in the module.
 */
#include "inbound.h"

#include <stdio.h>
#include <string.h>

#include "cidr.h"
#include "log.h"
#include "module.h"

static void *module;

static void *
sym(const char *name)
{
	char err[512];
	void *p;

	if (module == NULL && (module = mc_module_load("inbound", err, sizeof(err))) == NULL) {
		mc_log(MC_LOG_ERR, "inbound checks unavailable: %s", err);
		return NULL;
	}
	if ((p = mc_module_sym(module, name, err, sizeof(err))) == NULL)
		mc_log(MC_LOG_ERR, "inbound checks unavailable: %s", err);
	return p;
}

struct inbound *
inbound_begin(const struct mc_config *cfg, const char *ip, const char *helo, const char *sender)
{
	static struct inbound *(*fn)(const struct mc_config *, const char *, const char *,
	    const char *);

	if (!cfg->inbound_checks || strcmp(ip, "unknown") == 0 ||
	    mc_cidr_match(cfg->trusted_networks, ip))
		return NULL;
	if (fn == NULL && (fn = (struct inbound *(*)(const struct mc_config *, const char *,
	    const char *, const char *))sym("inbound_begin")) == NULL)
		return NULL;
	return fn(cfg, ip, helo, sender);
}

/* The rest only ever see an `in` the module made, so the module is loaded. */
#define FORWARD_VOID(name, params, args)                                       \
	void name params                                                       \
	{                                                                      \
		static void (*fn) params;                                      \
		if (in == NULL)                                                \
			return;                                                \
		if (fn == NULL && (fn = (void (*) params)sym(#name)) == NULL)  \
			return;                                                \
		fn args;                                                       \
	}

FORWARD_VOID(inbound_free, (struct inbound *in), (in))
FORWARD_VOID(inbound_header, (struct inbound *in, const char *f, size_t len), (in, f, len))
FORWARD_VOID(inbound_eoh, (struct inbound *in), (in))
FORWARD_VOID(inbound_body, (struct inbound *in, const void *buf, size_t len), (in, buf, len))

const struct spf_result *
inbound_spf(const struct inbound *in)
{
	static const struct spf_result *(*fn)(const struct inbound *);

	if (fn == NULL &&
	    (fn = (const struct spf_result *(*)(const struct inbound *))sym("inbound_spf")) == NULL)
		return NULL;
	return fn(in);
}

enum inbound_verdict
inbound_finish(struct inbound *in, const char *qid, const char *rcpt_domain,
    struct mc_dmarc_record *rec, char *head, size_t headlen, char *why, size_t whylen)
{
	static enum inbound_verdict (*fn)(struct inbound *, const char *, const char *,
	    struct mc_dmarc_record *, char *, size_t, char *, size_t);

	if (fn == NULL && (fn = (enum inbound_verdict (*)(struct inbound *, const char *,
	    const char *, struct mc_dmarc_record *, char *, size_t, char *, size_t))
	    sym("inbound_finish")) == NULL) {
		memset(rec, 0, sizeof(*rec));
		head[0] = '\0';
		snprintf(why, whylen, "Message checks unavailable, try again later");
		return IN_DEFER;
	}
	return fn(in, qid, rcpt_domain, rec, head, headlen, why, whylen);
}
