/*
 * test_log.c - unit tests of logging outside systemd: one line per event on
 * stderr with program, session id and client address; control characters
 * cannot forge lines; nothing ever reaches stdout (the protocol stream).
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

#include "log.h"

/* Run fn with stdout and stderr captured into out/err. */
static void
capture(void (*fn)(void), char *out, size_t outlen, char *err, size_t errlen)
{
	int po[2], pe[2], so = dup(1), se = dup(2);
	ssize_t n;

	assert_int_equal(pipe(po), 0);
	assert_int_equal(pipe(pe), 0);
	fflush(stdout);
	dup2(po[1], 1);
	dup2(pe[1], 2);
	fn();
	fflush(stdout);
	fflush(stderr);
	dup2(so, 1);
	dup2(se, 2);
	close(so);
	close(se);
	close(po[1]);
	close(pe[1]);
	n = read(po[0], out, outlen - 1);
	out[n > 0 ? n : 0] = '\0';
	n = read(pe[0], err, errlen - 1);
	err[n > 0 ? n : 0] = '\0';
	close(po[0]);
	close(pe[0]);
}

static void
log_some(void)
{
	mc_log_init("smtp-session", MC_LOG_STDERR, 0);
	mc_log_set_remote("192.0.2.7");
	mc_log(MC_LOG_INFO, "connect from %s", "client.example");
	mc_log(MC_LOG_DEBUG, "not shown without log_debug");
	mc_log(MC_LOG_WARNING, "evil\r\nsmtp-session[1]: forged");
}

static void
test_stderr_lines(void **state)
{
	char out[256], err[1024], want[256];

	(void)state;
	unsetenv("JOURNAL_STREAM");
	unsetenv("INVOCATION_ID");
	capture(log_some, out, sizeof(out), err, sizeof(err));
	assert_string_equal(out, "");
	assert_int_equal(strlen(mc_log_session_id()), 16);
	snprintf(want, sizeof(want), "smtp-session[%ld]: %s 192.0.2.7: connect from client.example\n"
	    "smtp-session[%ld]: %s 192.0.2.7: evil??smtp-session[1]: forged\n",
	    (long)getpid(), mc_log_session_id(), (long)getpid(), mc_log_session_id());
	assert_string_equal(err, want);
}

static void
test_random_hex(void **state)
{
	char a[33], b[33];

	(void)state;
	assert_int_equal(mc_random_hex(a, 16), 0);
	assert_int_equal(mc_random_hex(b, 16), 0);
	assert_int_equal(strlen(a), 32);
	assert_int_equal(strspn(a, "0123456789abcdef"), 32);
	assert_string_not_equal(a, b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stderr_lines),
		cmocka_unit_test(test_random_hex),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
