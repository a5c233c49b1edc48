/*
 * test_sasl.c - unit tests of the AUTH helpers: the strict base64 decoder
 * (RFC 4648 vectors, refused characters and padding, and agreement with
 * OpenSSL's EVP_DecodeBlock, which it replaced), SASL PLAIN splitting, and
 * the login check against a stand-in for the store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "password.h"
#include "sasl.h"

/* The store as mc_login_check sees it: one user, or a failing database. */
static char fake_hash[MC_HASH_MAX];
static int fake_down;

enum mc_store_status
mc_store_user_get(struct mc_store *st, const char *address, struct mc_user *u)
{
	(void)st;
	memset(u, 0, sizeof(*u));
	if (fake_down)
		return MC_STORE_TEMP;
	if (strcmp(address, "alice@example.test") != 0)
		return MC_STORE_NOTFOUND;
	snprintf(u->address, sizeof(u->address), "%s", address);
	snprintf(u->password, sizeof(u->password), "%s", fake_hash);
	return MC_STORE_OK;
}

const char *
mc_store_error(const struct mc_store *st)
{
	(void)st;
	return "database down";
}

static int
dec(const char *s, unsigned char *out, size_t cap)
{
	return mc_b64_decode(s, strlen(s), out, cap);
}

static void
test_b64_vectors(void **state)
{
	static const struct { const char *in, *out; size_t len; } v[] = {   /* RFC 4648 10 */
		{ "", "", 0 }, { "Zg==", "f", 1 }, { "Zm8=", "fo", 2 }, { "Zm9v", "foo", 3 },
		{ "Zm9vYg==", "foob", 4 }, { "Zm9vYmE=", "fooba", 5 }, { "Zm9vYmFy", "foobar", 6 },
		{ "AGFsaWNlAHNlY3JldA==", "\0alice\0secret", 13 },
	};
	unsigned char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		assert_int_equal(dec(v[i].in, out, sizeof(out)), (int)v[i].len);
		assert_memory_equal(out, v[i].out, v[i].len);
	}
	/* Every digit, and the octets 0xfb 0xff 0xbf that need + and /. */
	assert_int_equal(dec("+/+/", out, sizeof(out)), 3);
	assert_memory_equal(out, "\xfb\xff\xbf", 3);
	assert_int_equal(dec("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
	    out, sizeof(out)), 48);
	assert_int_equal(out[0], 0x00);
	assert_int_equal(out[1], 0x10);
	assert_memory_equal(out + 45, "\xf3\xdf\xbf", 3);   /* "89+/" */
}

static void
test_b64_refused(void **state)
{
	static const char *const bad[] = {
		"Zg", "Zg=", "Zm9vY", "Z===", "====", "=Zg=", "Zg==Zg==", "Zm=v",
		"Zm9v\n", "Zm 9", " Zm9v", "Zm9v!A==", "Zm9v-_==", "Zm9v\r\n", "Zm9.",
		"\xc3\xa4Zm", "Zm9\x80", "*",
	};
	unsigned char out[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(dec(bad[i], out, sizeof(out)), -1);
	/* A NUL inside the given length. */
	assert_int_equal(mc_b64_decode("Zm\0v", 4, out, sizeof(out)), -1);
	/* Room: n / 4 * 3 octets must fit, padding or not. */
	assert_int_equal(dec("Zm9v", out, 3), 3);
	assert_int_equal(dec("Zm9v", out, 2), -1);
	assert_int_equal(dec("Zg==", out, 2), -1);
}

/* Random inputs: whatever the decoder accepts, OpenSSL decodes alike. */
static void
test_b64_matches_openssl(void **state)
{
	static const char digits[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char in[64];
	unsigned char ours[64], theirs[64];
	int accepted = 0;

	(void)state;
	srand(4648);
	for (int round = 0; round < 20000; round++) {
		size_t n = (size_t)(rand() % 5) * 4 + (rand() % 8 == 0 ? (size_t)(rand() % 4) : 0);
		int r, e, pad = 0;

		for (size_t i = 0; i < n; i++)
			in[i] = rand() % 50 == 0 ? "=! \n\x80"[rand() % 5] : digits[rand() % 64];
		if (n >= 2 && rand() % 3 == 0)
			in[n - 1] = '=';
		if (n >= 2 && rand() % 4 == 0)
			in[n - 2] = '=';
		in[n] = '\0';
		r = mc_b64_decode(in, n, ours, sizeof(ours));
		if (r < 0)
			continue;
		accepted++;
		if (n > 0 && in[n - 1] == '=')
			pad = in[n - 2] == '=' ? 2 : 1;
		e = EVP_DecodeBlock(theirs, (const unsigned char *)in, (int)n);
		assert_int_equal(r, e - pad);
		assert_memory_equal(ours, theirs, (size_t)r);
	}
	assert_true(accepted > 5000);
}

static void
test_plain_split(void **state)
{
	unsigned char a[] = "\0alice@example.test\0pw", b[] = "alice@example.test\0alice@example.test\0pw",
	    c[] = "bob@example.test\0alice@example.test\0pw", d[] = "\0alice\0pw\0x", e[] = "\0alice";
	const char *user, *pw;

	(void)state;
	assert_int_equal(mc_sasl_plain_split(a, sizeof(a) - 1, &user, &pw), 0);
	assert_string_equal(user, "alice@example.test");
	assert_string_equal(pw, "pw");
	assert_int_equal(mc_sasl_plain_split(b, sizeof(b) - 1, &user, &pw), 0);
	assert_string_equal(user, "alice@example.test");
	assert_int_equal(mc_sasl_plain_split(c, sizeof(c) - 1, &user, &pw), -1);
	assert_int_equal(mc_sasl_plain_split(d, sizeof(d) - 1, &user, &pw), -1);
	assert_int_equal(mc_sasl_plain_split(e, sizeof(e) - 1, &user, &pw), -1);
}

static void
test_login_check(void **state)
{
	char key[600], err[600];

	(void)state;
	assert_int_equal(mc_password_hash("s3cret", fake_hash, sizeof(fake_hash)), 0);
	fake_down = 0;
	assert_int_equal(mc_login_check(NULL, "Alice@Example.TEST", "s3cret", key, sizeof(key),
	    err, sizeof(err)), MC_LOGIN_OK);
	assert_string_equal(key, "alice@example.test");
	assert_int_equal(mc_login_check(NULL, "alice@example.test", "wrong", key, sizeof(key),
	    err, sizeof(err)), MC_LOGIN_BAD);
	assert_int_equal(mc_login_check(NULL, "bob@example.test", "s3cret", key, sizeof(key),
	    err, sizeof(err)), MC_LOGIN_BAD);
	assert_int_equal(mc_login_check(NULL, "not an address", "s3cret", key, sizeof(key),
	    err, sizeof(err)), MC_LOGIN_BAD);
	fake_down = 1;
	assert_int_equal(mc_login_check(NULL, "alice@example.test", "s3cret", key, sizeof(key),
	    err, sizeof(err)), MC_LOGIN_TEMP);
	assert_string_equal(err, "user lookup: database down");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_vectors),
		cmocka_unit_test(test_b64_refused),
		cmocka_unit_test(test_b64_matches_openssl),
		cmocka_unit_test(test_plain_split),
		cmocka_unit_test(test_login_check),
	};

	return cmocka_run_group_tests_name("sasl", tests, NULL, NULL);
}
