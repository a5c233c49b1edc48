/*
 * fuzz_address.c - libFuzzer harness (2): the RFC 5321/6531 address parser,
 * mc_addr_parse_path with all eight flag combinations and mc_addr_parse_mailbox
 * with and without UTF-8, checking what they accept (limits, keys, flags).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ALL_FLAGS 8

static void
check_parsed(const struct mc_address *a, const char *in, size_t len, unsigned flags)
{
	char key[MC_ADDR_KEY_MAX], again[MC_ADDR_KEY_MAX], dom[MC_ADDR_DOMAIN_MAX + 1];
	struct mc_address b;
	size_t ll = strnlen(a->local, sizeof(a->local)), dl = strnlen(a->domain, sizeof(a->domain));

	if (ll > MC_ADDR_LOCAL_MAX || dl > MC_ADDR_DOMAIN_MAX)
		fuzz_fail("local part or domain over its limit", in, len);
	if (a->is_utf8 && !(flags & MC_ADDR_ALLOW_UTF8))
		fuzz_fail("UTF-8 accepted without MC_ADDR_ALLOW_UTF8", in, len);
	if (a->is_null) {
		if (!(flags & MC_ADDR_ALLOW_NULL))
			fuzz_fail("<> accepted without MC_ADDR_ALLOW_NULL", in, len);
		return;
	}
	if (ll == 0)
		fuzz_fail("empty local part accepted", in, len);
	if (mc_addr_key(a, key, sizeof(key)) != 0)
		fuzz_fail("mc_addr_key does not fit MC_ADDR_KEY_MAX", in, len);
	if (mc_addr_key(a, key, strlen(key)) == 0)
		fuzz_fail("mc_addr_key wrote a key into a buffer without room for its NUL", in, len);
	if (dl == 0) {   /* <Postmaster> */
		if (strcmp(key, "postmaster") != 0)
			fuzz_fail("a mailbox without a domain that is not <postmaster>", in, len);
		return;
	}
	if (!a->is_literal) {
		memcpy(dom, a->domain, dl + 1);
		if (!mc_addr_valid_domain(dom, a->is_utf8))
			fuzz_fail("accepted domain that mc_addr_valid_domain refuses", in, len);
	}
	/* The key is canonical: it parses as a mailbox and gives itself back. */
	if (mc_addr_parse_mailbox(key, MC_ADDR_ALLOW_UTF8, &b) != MC_ADDR_OK)
		fuzz_fail("the canonical key does not parse back", key, strlen(key));
	if (mc_addr_key(&b, again, sizeof(again)) != 0 || strcmp(key, again) != 0)
		fuzz_fail("the canonical key is not stable", key, strlen(key));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data;
	struct mc_address a[ALL_FLAGS];
	enum mc_addr_status st[ALL_FLAGS];
	size_t used[ALL_FLAGS];
	char *z;

	for (unsigned f = 0; f < ALL_FLAGS; f++) {
		st[f] = mc_addr_parse_path(in, size, f, &a[f], &used[f]);
		if (mc_addr_strerror(st[f]) == NULL)
			fuzz_fail("no text for a status", in, size);
		if (st[f] != MC_ADDR_OK) {
			if (used[f] != 0)
				fuzz_fail("consumed set on failure", in, size);
			continue;
		}
		if (used[f] == 0 || used[f] > size)
			fuzz_fail("consumed out of range", in, size);
		check_parsed(&a[f], in, size, f);
	}
	/* More flags accept at least as much, the same way. */
	for (unsigned f = 0; f < ALL_FLAGS; f++) {
		for (unsigned g = 0; g < ALL_FLAGS; g++) {
			if ((f & g) != f || f == g || st[f] != MC_ADDR_OK)
				continue;
			if (st[g] != MC_ADDR_OK || used[g] != used[f] ||
			    memcmp(&a[f], &a[g], sizeof(a[f])) != 0)
				fuzz_fail("adding a flag changed an accepted address", in, size);
		}
	}
	/* The NUL-terminated entry point, on the same octets up to a NUL. */
	if ((z = malloc(size + 1)) == NULL)
		return 0;
	memcpy(z, data, size);
	z[size] = '\0';
	for (unsigned f = 0; f < 2; f++) {
		struct mc_address m;
		unsigned flags = f ? MC_ADDR_ALLOW_UTF8 : 0;
		if (mc_addr_parse_mailbox(z, flags, &m) == MC_ADDR_OK) {
			check_parsed(&m, z, strlen(z), flags);
			if (m.is_null || m.domain[0] == '\0')
				fuzz_fail("parse_mailbox accepted <> or <postmaster>", z, strlen(z));
		}
	}
	free(z);
	return 0;
}
