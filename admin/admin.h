/*
 * admin.h - what the operator tool's source files share: the command context,
 * the exit codes and the helpers that report errors the same way everywhere.
 */
#ifndef MC_ADMIN_H
#define MC_ADMIN_H

#include <stddef.h>
#include <time.h>

#include "config.h"
#include "store.h"

#define EXIT_USAGE 2
#define EXIT_TEMP 75   /* sysexits EX_TEMPFAIL: the database is unavailable */

struct ctx {
	struct mc_store *st;
	const struct mc_config *cfg;
};

/* The usage text on stderr; returns EXIT_USAGE. */
int usage(void);

/* "mailcell: ..." as one line on stderr; returns the exit status 1. */
int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Report a store status; returns the exit code (0, 1, or EXIT_TEMP). */
int result(struct ctx *c, enum mc_store_status s);

/* t as YYYY-MM-DDTHH:MM:SSZ in buf ("-" for 0). */
const char *iso_time(time_t t, char *buf, size_t len);

/* dkim keygen|list (dkim.c) and dmarc report (dmarc_report.c). */
int cmd_dkim(struct ctx *c, int argc, char **argv);
int cmd_dmarc(struct ctx *c, int argc, char **argv);

#endif
