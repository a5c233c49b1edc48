/*
 * address.h - RFC 5321 path and mailbox parsing (with RFC 6531 SMTPUTF8) as
 * pure functions: no I/O, no allocation, results in caller-owned structs.
 * Used by the SMTP session for MAIL/RCPT/VRFY and by the operator tool.
 */
#ifndef MC_ADDRESS_H
#define MC_ADDRESS_H

#include <stddef.h>

#define MC_ADDR_LOCAL_MAX 64     /* octets as written, quotes included, RFC 5321 4.5.3.1.1 */
#define MC_ADDR_DOMAIN_MAX 255   /* octets, RFC 5321 4.5.3.1.2 */
#define MC_ADDR_PATH_MAX 256     /* octets including "<" and ">", 4.5.3.1.3 */
/* Room for any mc_addr_key() result and its NUL: local "@" domain. */
#define MC_ADDR_KEY_MAX (MC_ADDR_LOCAL_MAX + 1 + MC_ADDR_DOMAIN_MAX + 1)

/*
 * A parsed mailbox. Both parts are kept exactly as the client wrote them:
 * a Quoted-string local part keeps its quotes and backslashes (so the
 * 64-octet limit, which RFC 5321 sets on the Local-part production, counts
 * them too and the buffer always fits), an address literal keeps its
 * brackets. mc_addr_key() gives the canonical form for lookups.
 */
struct mc_address {
	char local[MC_ADDR_LOCAL_MAX + 1];   /* "alice", "\"john doe\"" */
	char domain[MC_ADDR_DOMAIN_MAX + 1]; /* "example.org", "[192.0.2.1]"; "" for <Postmaster> */
	int is_null;     /* the null reverse-path "<>" */
	int is_literal;  /* domain is an address literal: [192.0.2.1], [IPv6:...] */
	int is_utf8;     /* the path had non-ASCII octets (source route included) */
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
#define MC_ADDR_ALLOW_BARE 0x4   /* also accept a mailbox without angle brackets */

/*
 * Parse a Path or Reverse-path at s[0..len) (s need not be NUL-terminated;
 * nothing past len is read), e.g. "<a@b.example>" or
 * "<@relay.example,@r2.example:a@b.example>": a source route is checked and
 * dropped. Grammar: RFC 5321 4.1.2 and 4.1.3, extended by RFC 6531 3.3.
 *
 * - "<>" is accepted (is_null set) only with MC_ADDR_ALLOW_NULL, else
 *   MC_ADDR_NULL_NOT_ALLOWED.
 * - "<Postmaster>" (any case, no domain) is accepted with domain "" as the
 *   special recipient of RFC 5321 4.1.1.3; not after a source route.
 * - Address literals: [IPv4] and [IPv6:...] checked with inet_pton(3) (so
 *   IPv4 octets with leading zeros are refused). General-address-literals
 *   ("[tag:...]") are refused as MC_ADDR_SYNTAX: no other tag is registered.
 * - An octet >= 0x80 where RFC 6531 allows UTF-8 (atext, qtext, sub-domain)
 *   gives MC_ADDR_NEED_UTF8 without MC_ADDR_ALLOW_UTF8, MC_ADDR_BAD_UTF8
 *   with it if it is not valid UTF-8 (overlongs, surrogates, > U+10FFFF).
 *   Elsewhere (address literals, quoted-pairs) it is MC_ADDR_SYNTAX, as
 *   are C0/C1 control characters, DEL and NUL anywhere.
 * - An empty local part, including the quoted "", is MC_ADDR_SYNTAX.
 * - Limits: local part 64, domain 255, whole path 256 octets (254 for a
 *   bare mailbox): over them, MC_ADDR_TOO_LONG.
 *
 * With MC_ADDR_ALLOW_BARE, input that does not start with "<" is parsed as
 * a bare Mailbox. On success *consumed is the number of octets used, so the
 * caller parses ESMTP parameters (or checks for the end) from s + *consumed.
 * On failure *consumed is 0 and *out holds nothing useful.
 */
enum mc_addr_status mc_addr_parse_path(const char *s, size_t len, unsigned flags,
    struct mc_address *out, size_t *consumed);

/*
 * Parse the whole NUL-terminated string s as a bare "local@domain" Mailbox
 * (operator input, alias targets): no brackets, no "<>", no trailing text.
 * MC_ADDR_ALLOW_UTF8 is honoured, the other flags are ignored.
 */
enum mc_addr_status mc_addr_parse_mailbox(const char *s, unsigned flags,
    struct mc_address *out);

/*
 * The canonical key the store uses: "local@domain" with every ASCII letter
 * lowercased (non-ASCII octets kept). A quoted local part is unquoted when
 * that is lossless (its content, quoted-pairs decoded, is a valid
 * Dot-string: "\"Al\\ice\"" gives "alice"); otherwise it is re-quoted with
 * only '"' and '\\' escaped. "<Postmaster>" gives "postmaster", "<>" gives
 * "". Needs at most MC_ADDR_KEY_MAX octets. Returns 0, or -1 if it does
 * not fit in bufsz.
 */
int mc_addr_key(const struct mc_address *a, char *buf, size_t bufsz);

/*
 * 1 if the NUL-terminated d is a valid RFC 5321 Domain (not a literal, no
 * trailing dot): LDH labels of 1-63 octets that neither start nor end with
 * '-', at most 255 octets in all; labels may hold UTF-8 (U-labels) only
 * if allow_utf8. On success d's ASCII letters are lowercased in place; on
 * failure d is unchanged and 0 is returned.
 */
int mc_addr_valid_domain(char *d, int allow_utf8);

/* A short English phrase for a status, e.g. for "501 5.1.3 ...: %s". */
const char *mc_addr_strerror(enum mc_addr_status s);

#endif
