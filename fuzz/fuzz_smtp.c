/*
 * fuzz_smtp.c - libFuzzer harness (1): the SMTP command parser and session
 * state machine, fed a whole client script (pipelined commands, AUTH, DATA,
 * BDAT, junk) on one connection. Options: see fuzz_common.h and smtp_run.h.
 */
#include <stddef.h>
#include <stdint.h>

#include "smtp_run.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_opts o;
	const uint8_t *in;
	size_t n;
	unsigned checks = 0;

	fuzz_init();
	fuzz_opts_parse(data, size, &o, &in, &n);
	if (!fuzz_contains_ci(in, n, "BINARYMIME")) {
		checks |= FUZZ_BODY_NO_BARE_LF;
		if (!fuzz_contains_ci(in, n, "BDAT"))
			checks |= FUZZ_BODY_STRICT;
	}
	fuzz_smtp_session(&o, NULL, 0, in, n, checks);
	return 0;
}
