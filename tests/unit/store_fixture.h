/*
 * store_fixture.h - the configuration the store's unit tests share: the dev
 * database at $MAILCELL_TEST_MONGODB_URI (set by scripts/check.sh) and a
 * database of the test's own, named after its prefix, pid and start time.
 */
#ifndef STORE_FIXTURE_H
#define STORE_FIXTURE_H

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "config.h"

/* Fills cfg (and dbname) for uri: 0, or -1 if the configuration is refused. */
static int
store_fixture_config(struct mc_config *cfg, const char *uri, const char *prefix, char *dbname,
    size_t len)
{
	char text[512], err[256];

	snprintf(dbname, len, "mc_unit_%s%ld_%ld", prefix, (long)getpid(), (long)time(NULL));
	snprintf(text, sizeof(text), "mongodb_uri = %s\ndatabase = %s\nwrite_concern = 1\n"
	    "db_timeout = 5\n", uri, dbname);
	return mc_config_parse(cfg, "test", text, err, sizeof(err));
}

#endif
