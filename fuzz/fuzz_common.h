/*
 * fuzz_common.h - what the libFuzzer harnesses share: the "#!" option line,
 * in-process session connections (a pipe in, a memfd out), the fuzz
 * configuration, the fake store's knobs and the oracles' helpers.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/*
 * An input may start with a line "#!" LETTERS "\n": each letter is an
 * option, optionally followed by a decimal number ("#!sf3b17"). The rest of
 * the input is what the harness feeds. Without such a line, no options.
 */
struct fuzz_opts {
	unsigned char on[128];      /* on['s'] != 0: option s given */
	unsigned long num[128];     /* its number, 0 if none */
};

/* Splits data into options and the rest (*rest may be data itself). */
void fuzz_opts_parse(const uint8_t *data, size_t size, struct fuzz_opts *o,
    const uint8_t **rest, size_t *restlen);

/* A session's connection: it reads rfd (EOF after the input), writes wfd (a memfd). */
struct fuzz_conn {
	int rfd, wfd;
};

/* Input = a then b (either may be empty); -1 if pipes or memfds ran out. */
int fuzz_conn_open(struct fuzz_conn *c, const void *a, size_t alen, const void *b, size_t blen);
/*
 * Everything the session wrote, malloc'd and NUL-terminated (NULL if none).
 * With FUZZ_SHOW set in the environment it is also copied to stdout, for
 * reading a reproduced session (libFuzzer's -close_fd_mask=1 hides it).
 */
char *fuzz_conn_output(struct fuzz_conn *c, size_t *len);
void fuzz_conn_close(struct fuzz_conn *c);

/*
 * The configuration every harness starts from (parsed once with the real
 * parser): no TLS files, no relay trigger, logs to stderr, plaintext AUTH
 * allowed. fuzz_config_apply() sets the per-input knobs:
 *   t  plaintext AUTH refused (TLS required)     v/c  VRFY open / closed
 *   z  max_message_size 1024, max_recipients 3   e<N> max_errors N (1..1000)
 *   m  max_command_line 16384                    j    spf_fail_reject
 *   d  dmarc_temperror_defer                     n    inbound_checks off
 *   w  postmaster = "alice@example.test"
 */
const struct mc_config *fuzz_config(void);
void fuzz_config_apply(struct mc_config *cfg, const struct fuzz_opts *o);

/* The client address a session sees: u "unknown", t 127.0.0.1, 6 IPv6, else 192.0.2.1. */
const char *fuzz_remote_ip(const struct fuzz_opts *o);

/*
 * Auth failures make a session sleep 1-3 s (nanosleep); while this is set
 * in the calling thread, the harness's --wrap=nanosleep returns at once.
 */
extern _Thread_local int fuzz_no_sleep;

/* One-time setup every harness calls first (logging, SIGPIPE). */
void fuzz_init(void);

/* Aborts with a message: the oracle found a wrong answer. */
void fuzz_fail(const char *what, const char *detail, size_t len) __attribute__((noreturn));

/*
 * SMTP replies: every line is "DDD" then ' ' or '-' and text without CR,
 * LF or NUL, ending in CR LF; a continuation ('-') is followed by a line
 * with the same code. Calls fuzz_fail otherwise.
 */
void fuzz_check_smtp_replies(const char *out, size_t len);

/* 1 if needle occurs in s[0..n) ignoring ASCII case. */
int fuzz_contains_ci(const void *s, size_t n, const char *needle);

/* ---- fake_store.c: the in-memory store the sessions run against ---- */

/*
 * Knobs: f<N> the Nth store call fails with MC_STORE_TEMP (f or f0: every
 * call), l the POP3 maildrop lock is held elsewhere, k<N> message reads
 * return at most N octets at a time. Call before mc_store_new().
 */
void fake_store_setup(const struct fuzz_opts *o);

struct fake_store_stats {
	unsigned calls, failures;       /* store calls, injected failures among them */
	unsigned open_writers, open_readers;
	unsigned finished;              /* bodies completed */
	unsigned kept;                  /* ...delivered or queued, and not taken back */
	unsigned bare_lf, bare_cr, nul; /* in completed bodies */
	uint64_t largest;               /* octets of the largest completed body */
	unsigned direct_remote;         /* queued recipients that are no alias's target */
	int lock_held;
};
/* What the store saw since fake_store_setup(). */
const struct fake_store_stats *fake_store_stats(void);

#endif
