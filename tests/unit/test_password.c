/*
 * test_password.c - unit tests of password hashing: yescrypt hashes, salts
 * that differ, verification, the unknown-user path, and reading from a fd.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <unistd.h>

#include "password.h"

static void
test_hash_verify(void **state)
{
	char h1[MC_HASH_MAX], h2[MC_HASH_MAX];

	(void)state;
	assert_int_equal(mc_password_hash("correct horse", h1, sizeof(h1)), 0);
	assert_int_equal(mc_password_hash("correct horse", h2, sizeof(h2)), 0);
	assert_memory_equal(h1, "$y$", 3);
	assert_string_not_equal(h1, h2);            /* random salt */
	assert_null(strstr(h1, "correct horse"));
	assert_int_equal(mc_password_verify("correct horse", h1), 1);
	assert_int_equal(mc_password_verify("correct horse", h2), 1);
	assert_int_equal(mc_password_verify("correct hors", h1), 0);
	assert_int_equal(mc_password_verify("", h1), 0);
	assert_int_equal(mc_password_verify("correct horse", ""), 0);
	assert_int_equal(mc_password_verify("correct horse", "plain"), 0);
	assert_int_equal(mc_password_verify("correct horse", NULL), 0);
	assert_int_equal(mc_password_hash("x", h1, 10), -1);  /* does not fit */
}

/* The constant-time comparison: a hash that differs in one place is no match. */
static void
test_verify_differs(void **state)
{
	char h[MC_HASH_MAX], *last;

	(void)state;
	assert_int_equal(mc_password_hash("pw", h, sizeof(h)), 0);
	assert_int_equal(mc_password_verify("pw", h), 1);
	last = h + strlen(h) - 1;
	*last = *last == 'A' ? 'B' : 'A';
	assert_int_equal(mc_password_verify("pw", h), 0);
	*last = '\0';                               /* shorter */
	assert_int_equal(mc_password_verify("pw", h), 0);
}

static void
test_read(void **state)
{
	int p[2];
	char out[16];

	(void)state;
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "s3cret\r\nnext", 12), 12);
	close(p[1]);
	assert_int_equal(mc_password_read(p[0], out, sizeof(out)), 0);
	assert_string_equal(out, "s3cret");
	close(p[0]);

	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], "0123456789abcdefXYZ", 19), 19);
	close(p[1]);
	assert_int_equal(mc_password_read(p[0], out, sizeof(out)), -1);
	close(p[0]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_verify),
		cmocka_unit_test(test_verify_differs),
		cmocka_unit_test(test_read),
	};

	return cmocka_run_group_tests_name("password", tests, NULL, NULL);
}
