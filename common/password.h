/*
 * password.h - password hashing for user accounts: yescrypt through
 * libxcrypt's crypt(3), verified in constant time. Plain text never stored.
 * libcrypt is loaded at the first call (dlopen), not linked.
 */
#ifndef MC_PASSWORD_H
#define MC_PASSWORD_H

#include <stddef.h>

#define MC_PASSWORD_MAX 1024   /* longest password accepted, octets */
#define MC_HASH_MAX 256        /* room for any crypt(3) hash string */

/* Hash password into out (a "$y$..." string). Returns 0 or -1 (also when
 * libcrypt cannot be loaded, which is logged). */
int mc_password_hash(const char *password, char *out, size_t outlen);

/*
 * 1 if password matches hash, 0 otherwise. With hash == NULL (unknown user)
 * the same work is done against a fixed dummy hash, so that timing does not
 * tell whether an account exists; the answer is then always 0. -1 if the
 * password could not be checked at all (libcrypt cannot be loaded; logged):
 * a temporary failure, never a match.
 */
int mc_password_verify(const char *password, const char *hash);

/* Read a password from fd (one line, or all of a pipe up to its first newline). */
int mc_password_read(int fd, char *out, size_t outlen);

#endif
