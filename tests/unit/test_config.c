/*
 * test_config.c - unit tests of the configuration parser: defaults, every
 * value type, and the one-line errors that name file, line and key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static void
test_defaults(void **state)
{
	struct mc_config c;
	char err[256];

	(void)state;
	assert_int_equal(mc_config_parse(&c, "t.conf", "", err, sizeof(err)), 0);
	assert_string_equal(c.mongodb_uri, "mongodb://127.0.0.1:27017");
	assert_string_equal(c.database, "mailcell");
	assert_string_equal(c.write_concern, "majority");
	assert_int_equal(c.write_journal, 1);
	assert_int_equal(c.max_message_size, 25 * 1024 * 1024);
	assert_int_equal(c.max_recipients, 100);
	assert_int_equal(c.allow_plaintext_auth, 0);
	assert_string_equal(c.relay_host, "");
	assert_true(c.hostname[0] != '\0');
	assert_int_equal(c.db_timeout_ms, 5000);
	mc_config_free(&c);
}

static void
test_values(void **state)
{
	struct mc_config c;
	char err[256];
	const char *text =
	    "# comment\n"
	    "\n"
	    "hostname = mx.example.org\n"
	    "  mongodb_uri=mongodb://db1,db2/?replicaSet=rs0  \n"
	    "max_message_size = 10M\r\n"
	    "max_recipients = 50\n"
	    "allow_plaintext_auth = yes\n"
	    "relay_host = [smtp.example.net]:587\n"
	    "write_concern = 1\n"
	    "db_timeout = 2\n"
	    "idle_timeout = 10m\n"
	    "log_target = stderr\n";

	(void)state;
	assert_int_equal(mc_config_parse(&c, "t.conf", text, err, sizeof(err)), 0);
	assert_string_equal(c.hostname, "mx.example.org");
	assert_string_equal(c.mongodb_uri, "mongodb://db1,db2/?replicaSet=rs0");
	assert_int_equal(c.max_message_size, 10 * 1024 * 1024);
	assert_int_equal(c.max_recipients, 50);
	assert_int_equal(c.allow_plaintext_auth, 1);
	assert_string_equal(c.relay_host, "[smtp.example.net]:587");
	assert_string_equal(c.write_concern, "1");
	assert_int_equal(c.db_timeout_ms, 2000);
	assert_int_equal(c.idle_timeout, 600);
	assert_int_equal(c.log_target, MC_LOG_STDERR);
	mc_config_free(&c);
}

/* Each bad input fails with exactly this message. */
static void
test_errors(void **state)
{
	static const struct { const char *text, *msg; } cases[] = {
		{ "hostnme = x\n", "t.conf:1: unknown key 'hostnme'" },
		{ "\n\nmax_recipients = lots\n",
		  "t.conf:3: bad value for key 'max_recipients': expected a number from 1 to 10000" },
		{ "max_recipients = 0\n",
		  "t.conf:1: bad value for key 'max_recipients': expected a number from 1 to 10000" },
		{ "allow_plaintext_auth = maybe\n",
		  "t.conf:1: bad value for key 'allow_plaintext_auth': expected yes or no" },
		{ "max_message_size = 10X\n",
		  "t.conf:1: bad value for key 'max_message_size': expected a size such as 25M" },
		{ "max_message_size = -1\n",
		  "t.conf:1: bad value for key 'max_message_size': expected a size such as 25M" },
		{ "relay_host = [x:25\n",
		  "t.conf:1: bad value for key 'relay_host': expected empty, host, host:port or [host]:port" },
		{ "relay_host = [x]:99999\n",
		  "t.conf:1: bad value for key 'relay_host': expected empty, host, host:port or [host]:port" },
		{ "hostname =\n", "t.conf:1: bad value for key 'hostname': must not be empty" },
		{ "write_concern = most\n",
		  "t.conf:1: bad value for key 'write_concern': expected majority or a number of nodes" },
		{ "log_target = syslog\n",
		  "t.conf:1: bad value for key 'log_target': expected auto, journal or stderr" },
		{ "database = a\ndatabase = b\n", "t.conf:2: key 'database' is set twice" },
		{ "just words\n", "t.conf:1: expected 'key = value'" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mc_config c;
		char err[256] = "";
		assert_int_equal(mc_config_parse(&c, "t.conf", cases[i].text, err, sizeof(err)), -1);
		assert_string_equal(err, cases[i].msg);
		assert_null(strchr(err, '\n'));
	}
}

static void
test_load_file(void **state)
{
	char path[] = "/tmp/mc-config-XXXXXX";
	int fd = mkstemp(path);
	struct mc_config c;
	char err[512];

	(void)state;
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "database = other\n", 17), 17);
	close(fd);
	assert_int_equal(mc_config_load(&c, path, err, sizeof(err)), 0);
	assert_string_equal(c.database, "other");
	assert_string_equal(c.path, path);
	mc_config_free(&c);

	setenv("MAILCELL_CONFIG", path, 1);
	assert_int_equal(mc_config_load(&c, NULL, err, sizeof(err)), 0);
	assert_string_equal(c.path, path);
	mc_config_free(&c);
	unsetenv("MAILCELL_CONFIG");
	unlink(path);

	assert_int_equal(mc_config_load(&c, path, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "No such file"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_load_file),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
