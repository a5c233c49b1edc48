/*
 * dkims.h - DKIM signing (RFC 6376) of outbound mail with libopendkim:
 * relaxed/relaxed, rsa-sha256, with the key `mailcell dkim keygen` stored.
 */
#ifndef RELAY_DKIMS_H
#define RELAY_DKIMS_H

#include "msgsrc.h"
#include "store_auth.h"

struct dkims {
	struct mc_dkim_key key;
	char header[4096];     /* the last signature: "DKIM-Signature: ...\r\n" */
	char err[256];
};

/*
 * Reads the source once and returns the DKIM-Signature header line to put
 * first, or NULL (reason in d->err) when signing failed.
 */
const char *dkims_sign(struct dkims *d, const struct msgsrc *src);

/* smtpc's sign callback: ctx is a struct dkims with its key loaded. */
const char *dkims_sign_cb(void *ctx, const struct msgsrc *src);

#endif
