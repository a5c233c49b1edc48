/*
 * fuzz_smtp_data.c - libFuzzer harness (4): the SMTP session reading a message
 * body (DATA or BDAT): a fixed EHLO/MAIL/RCPT first, then the input as DATA
 * content or cut into BDAT chunks.
 */
/*
 * Options (the "#!" line, see fuzz_common.h) besides the common ones:
 *   b<N>  send the input as BDAT chunks of N octets (default 64), LAST at the end
 *   r     send the input as it is after the envelope (it brings its own commands)
 *   B     BODY=BINARYMIME (use with b), 8: BODY=8BITMIME, U: SMTPUTF8 sender
 *   a     AUTH PLAIN as alice first, and one remote recipient (relaying)
 *   l     also RCPT TO:<list@example.test> (an alias with a remote target)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_run.h"

#define CHUNK_DEFAULT 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *
envelope(const struct fuzz_opts *o, size_t *len)
{
	char *buf = malloc(1024);
	int n;

	if (buf == NULL)
		return NULL;
	n = snprintf(buf, 1024, "EHLO client.example\r\n%s"
	    "MAIL FROM:<%s>%s%s\r\nRCPT TO:<alice@example.test>\r\n%s%s",
	    /* "\0alice@example.test\0secret" */
	    o->on['a'] ? "AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=\r\n" : "",
	    o->on['a'] ? "alice@example.test" : o->on['U'] ? "j\xc3\xb6rg@remote.example"
	    : "sender@remote.example",
	    o->on['B'] ? " BODY=BINARYMIME" : o->on['8'] ? " BODY=8BITMIME" : "",
	    o->on['U'] ? " SMTPUTF8" : "",
	    o->on['l'] ? "RCPT TO:<list@example.test>\r\n" : "",
	    o->on['a'] ? "RCPT TO:<friend@remote.example>\r\n" : "");
	*len = (size_t)n;
	return buf;
}

/* The input as BDAT chunks of `chunk` octets, the last one with LAST. */
static char *
bdat_stream(const uint8_t *in, size_t n, size_t chunk, size_t *len)
{
	size_t cap = n + (n / chunk + 2) * 32, o = 0;
	char *buf = malloc(cap);

	if (buf == NULL)
		return NULL;
	for (size_t off = 0;;) {
		size_t c = n - off < chunk ? n - off : chunk;
		int last = off + c == n;
		o += (size_t)snprintf(buf + o, cap - o, "BDAT %zu%s\r\n", c, last ? " LAST" : "");
		memcpy(buf + o, in + off, c);
		o += c;
		off += c;
		if (last)
			break;
	}
	*len = o;
	return buf;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_opts o;
	const uint8_t *in;
	size_t n, elen, slen;
	char *env, *stream = NULL;
	unsigned checks = 0;

	fuzz_init();
	fuzz_opts_parse(data, size, &o, &in, &n);
	if ((env = envelope(&o, &elen)) == NULL)
		return 0;
	if (o.on['b']) {
		size_t chunk = o.num['b'] > 0 && o.num['b'] <= 1000000 ? o.num['b'] : CHUNK_DEFAULT;
		if ((stream = bdat_stream(in, n, chunk, &slen)) == NULL) {
			free(env);
			return 0;
		}
	} else if (!o.on['r']) {
		/* DATA: the command goes at the end of the envelope. */
		char *grown = realloc(env, elen + 7);
		if (grown == NULL) {
			free(env);
			return 0;
		}
		env = grown;
		memcpy(env + elen, "DATA\r\n", 6);
		elen += 6;
	}
	if (!o.on['B'] && !fuzz_contains_ci(in, n, "BINARYMIME")) {
		checks |= FUZZ_BODY_NO_BARE_LF;
		if (!o.on['b'] && !fuzz_contains_ci(in, n, "BDAT"))
			checks |= FUZZ_BODY_STRICT;
	}
	fuzz_smtp_session(&o, env, elen, stream ? stream : (const char *)in,
	    stream ? slen : n, checks);
	free(stream);
	free(env);
	return 0;
}
