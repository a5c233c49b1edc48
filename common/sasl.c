/*
 * sasl.c - strict base64 decoding, SASL PLAIN parsing, and the login check
 * shared by the SMTP and POP3 sessions. Never logs a password.
 */
#include "sasl.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "address.h"
#include "password.h"

/* The value of a base64 digit (RFC 4648 table 1), or -1. */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * Groups of four digits, each to three octets; "=" only as the last one or
 * two characters. The bits a padded group leaves over are not checked.
 */
int
mc_b64_decode(const char *s, size_t n, unsigned char *out, size_t outcap)
{
	size_t i, o = 0, pad = 0;

	if (n % 4 != 0 || n / 4 * 3 > outcap || n > 1 << 20)
		return -1;
	if (n == 0)
		return 0;
	if (s[n - 1] == '=')
		pad = s[n - 2] == '=' ? 2 : 1;
	for (i = 0; i < n; i += 4) {
		uint32_t group = 0;

		for (size_t j = i; j < i + 4; j++) {
			int v = j < n - pad ? b64_value((unsigned char)s[j]) : 0;

			if (v < 0)
				return -1;
			group = group << 6 | (uint32_t)v;
		}
		out[o++] = (unsigned char)(group >> 16);
		out[o++] = (unsigned char)(group >> 8);
		out[o++] = (unsigned char)group;
	}
	return (int)(o - pad);
}

int
mc_sasl_plain_split(const unsigned char *buf, size_t n, const char **user,
    const char **password)
{
	const unsigned char *nul1 = memchr(buf, '\0', n), *nul2;
	const char *authz = (const char *)buf;

	if (nul1 == NULL)
		return -1;
	nul2 = memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - buf));
	if (nul2 == NULL || memchr(nul2 + 1, '\0', n - (size_t)(nul2 + 1 - buf)) != NULL)
		return -1;
	*user = (const char *)nul1 + 1;
	*password = (const char *)nul2 + 1;
	if (*authz != '\0' && strcmp(authz, *user) != 0)
		return -1;
	return 0;
}

enum mc_login
mc_login_check(struct mc_store *st, const char *user, const char *password, char *key,
    size_t keycap, char *err, size_t errlen)
{
	struct mc_address a;
	struct mc_user u;
	enum mc_store_status s;
	int ok;

	err[0] = '\0';
	if (mc_addr_parse_mailbox(user, MC_ADDR_ALLOW_UTF8, &a) != MC_ADDR_OK ||
	    a.domain[0] == '\0' || mc_addr_key(&a, key, keycap) != 0) {
		(void)mc_password_verify(password, NULL);
		return MC_LOGIN_BAD;
	}
	s = mc_store_user_get(st, key, &u);
	if (s == MC_STORE_TEMP) {
		snprintf(err, errlen, "user lookup: %s", mc_store_error(st));
		return MC_LOGIN_TEMP;
	}
	ok = mc_password_verify(password, s == MC_STORE_OK ? u.password : NULL);
	explicit_bzero(u.password, sizeof(u.password));
	if (ok < 0) {
		snprintf(err, errlen, "password check unavailable (libcrypt could not be loaded)");
		return MC_LOGIN_TEMP;
	}
	if (!ok)
		return MC_LOGIN_BAD;
	return u.disabled ? MC_LOGIN_DISABLED : MC_LOGIN_OK;
}
