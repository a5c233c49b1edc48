/*
 * smtp_run.h - runs one in-process SMTP session (the smtp-session sources but
 * main.c) over a fuzz connection against the fake store, then checks the
 * replies and what was stored. Shared by fuzz_smtp and fuzz_smtp_data.
 */
#ifndef FUZZ_SMTP_RUN_H
#define FUZZ_SMTP_RUN_H

#include <stddef.h>

#include "fuzz_common.h"

#define FUZZ_BODY_NO_BARE_LF 0x1   /* stored bodies: every LF after a CR (text mail) */
#define FUZZ_BODY_STRICT     0x2   /* ...and no bare CR and no NUL (DATA only) */

/*
 * Options (besides fuzz_config_apply's and fake_store_setup's): s is
 * --submission; u/T/6 pick the client address (fuzz_remote_ip).
 */
void fuzz_smtp_session(const struct fuzz_opts *o, const void *prelude, size_t plen,
    const void *input, size_t len, unsigned body_checks);

#endif
