/*
 * password.c - yescrypt hashing and constant-time verification with
 * libxcrypt, and reading a password from a file descriptor (never argv).
 * libcrypt is loaded (dlopen) at the first hash or check, so that a session
 * that never sees a password does not pay for linking it at every exec.
 */
#include "password.h"

#include <crypt.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* A valid yescrypt hash of a random string, used when the user is unknown. */
static const char dummy_hash[] =
    "$y$j9T$XNuWIvX.blW0yNhShBn.Z1$z0mWMG0H/sxOQcKLP/Ts1MXSK3Tfqvb1tQz9/oXRad2";

/* libxcrypt's soname (Debian's libcrypt1) and the two functions we use. */
#define LIBCRYPT "libcrypt.so.1"

static struct {
	__typeof__(crypt_rn) *rn;
	__typeof__(crypt_gensalt_rn) *gensalt_rn;
} lc;

/* Loads libcrypt once; -1 (and a log line) if it cannot, retried next time. */
static int
load_libcrypt(void)
{
	void *h;
	const char *why;

	if (lc.rn != NULL)
		return 0;
	if ((h = dlopen(LIBCRYPT, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		why = dlerror();
		mc_log(MC_LOG_ERR, "password hashing unavailable: %s", why ? why : LIBCRYPT);
		return -1;
	}
	lc.gensalt_rn = (__typeof__(lc.gensalt_rn))dlsym(h, "crypt_gensalt_rn");
	lc.rn = (__typeof__(lc.rn))dlsym(h, "crypt_rn");
	if (lc.rn == NULL || lc.gensalt_rn == NULL) {
		mc_log(MC_LOG_ERR, "password hashing unavailable: %s has no crypt_rn", LIBCRYPT);
		lc.rn = NULL;
		dlclose(h);
		return -1;
	}
	return 0;
}

/* 1 if a and b (n octets each) are equal; the time does not depend on where they differ. */
static int
equal_ct(const void *a, const void *b, size_t n)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;

	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

int
mc_password_hash(const char *password, char *out, size_t outlen)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data data;

	if (strlen(password) > MC_PASSWORD_MAX || load_libcrypt() != 0)
		return -1;
	if (lc.gensalt_rn("$y$", 0, NULL, 0, salt, sizeof(salt)) == NULL)
		return -1;
	memset(&data, 0, sizeof(data));
	if (lc.rn(password, salt, &data, sizeof(data)) == NULL || data.output[0] == '*')
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
	if (load_libcrypt() != 0)
		return -1;
	memset(&data, 0, sizeof(data));
	if (lc.rn(password, use, &data, sizeof(data)) == NULL || data.output[0] == '*') {
		explicit_bzero(&data, sizeof(data));
		return 0;
	}
	n = strlen(use);
	ok = strlen(data.output) == n && equal_ct(data.output, use, n);
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
