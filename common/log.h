/*
 * log.h - event logging for every mailcell program: structured entries to the
 * systemd journal under systemd, one line per event on stderr otherwise.
 * Never stdout (the protocol stream), never a password or an AUTH payload.
 */
#ifndef MC_LOG_H
#define MC_LOG_H

#include "config.h"

enum mc_log_level { MC_LOG_ERR = 3, MC_LOG_WARNING = 4, MC_LOG_NOTICE = 5,
	MC_LOG_INFO = 6, MC_LOG_DEBUG = 7 };

/*
 * Set up logging for `program` (e.g. "smtp-session"). target comes from the
 * config (auto: the journal when running under systemd and its socket exists).
 * Creates a random session id, readable with mc_log_session_id().
 */
void mc_log_init(const char *program, enum mc_log_target target, int debug);

/* The client address, added to every following entry (NULL: none). */
void mc_log_set_remote(const char *addr);

const char *mc_log_session_id(void);

void mc_log(enum mc_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Fill buf with n random bytes from getrandom(); returns 0 or -1. */
int mc_random_bytes(void *buf, size_t n);

/* Write n random bytes as 2n lowercase hex digits plus NUL into out. */
int mc_random_hex(char *out, size_t n);

#endif
