/*
 * address.h - RFC 5321 path and mailbox parsing (with RFC 6531 SMTPUTF8) as
 * pure functions: no I/O, no allocation, results in caller-owned structs.
 * Used by the SMTP session for MAIL/RCPT and by the operator tool.
 */
#ifndef MC_ADDRESS_H
#define MC_ADDRESS_H

#include <stddef.h>

#define MC_ADDR_LOCAL_MAX 64     /* octets, RFC 5321 4.5.3.1.1 */
#define MC_ADDR_DOMAIN_MAX 255   /* octets, RFC 5321 4.5.3.1.2 */
#define MC_ADDR_PATH_MAX 256     /* octets including "<" and ">", 4.5.3.1.3 */

struct mc_address {
	char local[MC_ADDR_LOCAL_MAX + 1];   /* as written; a quoted form keeps its quotes */
	char domain[MC_ADDR_DOMAIN_MAX + 1]; /* as written; literals keep their brackets */
	int is_null;     /* the null reverse-path "<>" */
	int is_literal;  /* domain is an address literal: [192.0.2.1], [IPv6:...] */
	int is_utf8;     /* contains non-ASCII octets (needs SMTPUTF8) */
	int is_quoted;   /* the local part is a Quoted-string */
};

enum mc_addr_status {
	MC_ADDR_OK = 0,
	MC_ADDR_SYNTAX,            /* not a valid path/mailbox */
	MC_ADDR_TOO_LONG,          /* local part, domain or path over its limit */
	MC_ADDR_NEED_UTF8,         /* non-ASCII without SMTPUTF8 (553 5.6.7) */
	MC_ADDR_NULL_NOT_ALLOWED,  /* "<>" where a recipient is required */
	MC_ADDR_BAD_UTF8,          /* non-ASCII that is not valid UTF-8 */
};

#define MC_ADDR_ALLOW_NULL 0x1   /* reverse-path: "<>" is fine */
#define MC_ADDR_ALLOW_UTF8 0x2   /* SMTPUTF8: UTF8-non-ascii in local parts and domains */
#define MC_ADDR_ALLOW_BARE 0x4   /* accept a mailbox without angle brackets */

/*
 * Parse a Path or Reverse-path at s[0..len), e.g. "<a@b.example>" or
 * "<@relay.example:a@b.example>" (the source route is accepted and dropped).
 * "<postmaster>" (any case) is accepted with an empty domain (RFC 5321
 * 4.1.1.3). On success *consumed is the number of octets used, so that ESMTP
 * parameters after it can be parsed by the caller.
 */
enum mc_addr_status mc_addr_parse_path(const char *s, size_t len, unsigned flags,
    struct mc_address *out, size_t *consumed);

/* Parse a whole string as a bare "local@domain" mailbox (no brackets). */
enum mc_addr_status mc_addr_parse_mailbox(const char *s, unsigned flags,
    struct mc_address *out);

/*
 * The canonical key the store uses: "local@domain" with ASCII letters
 * lowercased; a quoted local part is unquoted when that is lossless (its
 * content is a valid dot-string) and kept verbatim otherwise. "<postmaster>"
 * gives "postmaster". Returns 0, or -1 if it does not fit in bufsz.
 */
int mc_addr_key(const struct mc_address *a, char *buf, size_t bufsz);

/*
 * 1 if d is a valid RFC 5321 domain name (not a literal), lowercasing its
 * ASCII letters in place; 0 otherwise. U-labels only with allow_utf8.
 */
int mc_addr_valid_domain(char *d, int allow_utf8);

const char *mc_addr_strerror(enum mc_addr_status s);

#endif
