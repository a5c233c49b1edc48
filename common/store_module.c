/*
 * store_module.c - linked into lib/mailcell/store.so only (the programs that
 * link the store statically never reference it): replaces two libmongoc
 * internals whose OpenSSL start-up cost was most of a session's first store call.
 */
#include "store_int.h"

#include <errno.h>
#include <sys/random.h>

/*
 * How this works: libmongoc calls both functions through its PLT, and
 * store.so comes before libmongoc in the module's lookup scope, so these
 * definitions are the ones bound when store.so is loaded. If a future
 * libmongoc renames them, they are simply never called (and bench/ shows
 * the cost coming back); they change no behaviour a user could see.
 */
void _mongoc_openssl_init(void);
int _mongoc_rand_bytes(uint8_t *buf, int num);

/*
 * Debian's libmongoc runs mongoc_init() from a constructor when store.so is
 * loaded, and mongoc_init() calls _mongoc_openssl_init(), which builds and
 * frees an SSL_CTX only to see that OpenSSL works: 10.6M instructions, half
 * of loading the store. OpenSSL 1.1 and later initialize themselves on first
 * use, so a connection with tls=true still gets a working context (libmongoc
 * builds its own when it connects).
 */
void
_mongoc_openssl_init(void)
{
}

/*
 * libmongoc's random bytes (logical session ids, SCRAM nonces) come from
 * OpenSSL's RAND_bytes, whose first call instantiates OpenSSL's DRBG and
 * providers: 7.9M instructions in every session's first command. The
 * kernel's CSPRNG is what that DRBG seeds itself from; read it directly.
 * Returns 1 on success, 0 on failure, as RAND_bytes does.
 */
int
_mongoc_rand_bytes(uint8_t *buf, int num)
{
	size_t done = 0, want = num > 0 ? (size_t)num : 0;

	while (done < want) {
		ssize_t n = getrandom(buf + done, want - done, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return 0;
		done += (size_t)n;
	}
	return 1;
}
