/*
 * sasl.h - what SMTP AUTH and POP3 AUTH/USER/PASS share: strict base64, the
 * SASL PLAIN message (RFC 4616), and the password check against the store.
 */
#ifndef MC_SASL_H
#define MC_SASL_H

#include <stddef.h>

#include "store.h"

/*
 * Strict base64 (RFC 4648 alphabet, padded, no whitespace): the decoded
 * length, or -1 for any other character, wrong padding, a length that is
 * not a multiple of 4, more than 1 MiB of input, or n / 4 * 3 > outcap.
 * Writes up to n / 4 * 3 octets to out (a padded last group included).
 */
int mc_b64_decode(const char *s, size_t n, unsigned char *out, size_t outcap);

/*
 * Split "[authzid] NUL authcid NUL passwd" in buf[0..n) (buf[n] must be NUL).
 * Returns 0 with pointers into buf, or -1 if malformed or if authzid is
 * given and differs from authcid (we do not act on behalf of others).
 */
int mc_sasl_plain_split(const unsigned char *buf, size_t n, const char **user,
    const char **password);

enum mc_login { MC_LOGIN_OK, MC_LOGIN_BAD, MC_LOGIN_DISABLED, MC_LOGIN_TEMP };

/*
 * Check a login (a full address) and password. Unknown users cost the same
 * hashing work as known ones. On MC_LOGIN_OK key receives the canonical address.
 * MC_LOGIN_DISABLED only when the password was right. MC_LOGIN_TEMP when the
 * store failed or the password could not be checked (libcrypt not loadable),
 * with one line for the log in err; never MC_LOGIN_OK then.
 */
enum mc_login mc_login_check(struct mc_store *st, const char *user, const char *password,
    char *key, size_t keycap, char *err, size_t errlen);

#endif
