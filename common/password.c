/*
 * password.c - yescrypt hashing and constant-time verification with
 * libxcrypt, and reading a password from a file descriptor (never argv).
 */
#include "password.h"

#include <crypt.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

/* A valid yescrypt hash of a random string, used when the user is unknown. */
static const char dummy_hash[] =
    "$y$j9T$XNuWIvX.blW0yNhShBn.Z1$z0mWMG0H/sxOQcKLP/Ts1MXSK3Tfqvb1tQz9/oXRad2";

int
mc_password_hash(const char *password, char *out, size_t outlen)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data data;

	if (strlen(password) > MC_PASSWORD_MAX)
		return -1;
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) == NULL)
		return -1;
	memset(&data, 0, sizeof(data));
	if (crypt_rn(password, salt, &data, sizeof(data)) == NULL || data.output[0] == '*')
		return -1;
	if (strlen(data.output) >= outlen)
		return -1;
	strcpy(out, data.output);
	explicit_bzero(&data, sizeof(data));
	return 0;
}

int
mc_password_verify(const char *password, const char *hash)
{
	struct crypt_data data;
	const char *use = hash != NULL && hash[0] == '$' ? hash : dummy_hash;
	size_t n;
	int ok;

	if (strlen(password) > MC_PASSWORD_MAX)
		return 0;
	memset(&data, 0, sizeof(data));
	if (crypt_rn(password, use, &data, sizeof(data)) == NULL || data.output[0] == '*') {
		explicit_bzero(&data, sizeof(data));
		return 0;
	}
	n = strlen(use);
	ok = strlen(data.output) == n && CRYPTO_memcmp(data.output, use, n) == 0;
	explicit_bzero(&data, sizeof(data));
	return ok && use == hash;
}

int
mc_password_read(int fd, char *out, size_t outlen)
{
	size_t len = 0;

	for (;;) {
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0 || c == '\n')
			break;
		if (len + 1 >= outlen)
			return -1;
		out[len++] = c;
	}
	if (len > 0 && out[len - 1] == '\r')
		len--;
	out[len] = '\0';
	return 0;
}
