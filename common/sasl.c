/*
 * sasl.c - strict base64 decoding (OpenSSL's decoder after our own character
 * and padding checks), SASL PLAIN parsing, and the login check shared by the
 * SMTP and POP3 sessions. Never logs a password.
 */
#include "sasl.h"

#include <string.h>

#include <openssl/evp.h>

#include "address.h"
#include "password.h"

static int
b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '+' || c == '/';
}

int
mc_b64_decode(const char *s, size_t n, unsigned char *out, size_t outcap)
{
	int len, pad = 0;

	if (n % 4 != 0 || n / 4 * 3 > outcap || n > 1 << 20)
		return -1;
	if (n == 0)
		return 0;
	if (s[n - 1] == '=')
		pad = s[n - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < n - (size_t)pad; i++)
		if (!b64_char(s[i]))
			return -1;
	len = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
	return len < 0 ? -1 : len - pad;
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
    size_t keycap)
{
	struct mc_address a;
	struct mc_user u;
	enum mc_store_status s;
	int ok;

	if (mc_addr_parse_mailbox(user, MC_ADDR_ALLOW_UTF8, &a) != MC_ADDR_OK ||
	    a.domain[0] == '\0' || mc_addr_key(&a, key, keycap) != 0) {
		(void)mc_password_verify(password, NULL);
		return MC_LOGIN_BAD;
	}
	s = mc_store_user_get(st, key, &u);
	if (s == MC_STORE_TEMP)
		return MC_LOGIN_TEMP;
	ok = mc_password_verify(password, s == MC_STORE_OK ? u.password : NULL);
	explicit_bzero(u.password, sizeof(u.password));
	if (!ok)
		return MC_LOGIN_BAD;
	return u.disabled ? MC_LOGIN_DISABLED : MC_LOGIN_OK;
}
