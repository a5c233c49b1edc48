/*
 * smtp_run.c - one SMTP session in process, as smtp-session/main.c sets it
 * up, on a pipe with the fuzz input and a memfd for the replies; then the
 * oracles: well-formed replies, and the store's view matching the replies.
 */
#include "smtp_run.h"

#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"

/* Reply lines (at line starts) that begin with prefix. */
static unsigned
count_replies(const char *out, size_t len, const char *prefix)
{
	size_t n = strlen(prefix);
	unsigned count = 0;

	for (size_t i = 0; i + n <= len; i++)
		if ((i == 0 || out[i - 1] == '\n') && memcmp(out + i, prefix, n) == 0)
			count++;
	return count;
}

/*
 * What the store saw must match what the client was told: every "queued"
 * reply is a body delivered and kept (nothing acknowledged is lost, nothing
 * kept unacknowledged), no relaying without a successful AUTH, no AUTH
 * without TLS unless allowed, sizes within the limit, clean text.
 */
static void
check_outcome(const struct mc_config *cfg, const char *out, size_t len, unsigned checks)
{
	const struct fake_store_stats *fs = fake_store_stats();
	unsigned queued = count_replies(out, len, "250 2.0.0 OK queued as ");
	unsigned authed = count_replies(out, len, "235 ");
	uint64_t limit = cfg->max_message_size;

	if (fs->open_writers != 0 || fs->open_readers != 0)
		fuzz_fail("a store body was left open after the session", "", 0);
	if (queued != fs->kept)
		fuzz_fail("\"queued\" replies and bodies kept by the store differ", out, len);
	if (authed > 0 && !cfg->allow_plaintext_auth)
		fuzz_fail("AUTH succeeded without TLS", out, len);
	if (authed == 0 && fs->direct_remote > 0)
		fuzz_fail("mail queued for a remote recipient without AUTH", out, len);
	if ((checks & FUZZ_BODY_NO_BARE_LF) && fs->bare_lf != 0)
		fuzz_fail("a stored text message has a bare LF", "", 0);
	if ((checks & FUZZ_BODY_STRICT) && (fs->bare_cr != 0 || fs->nul != 0))
		fuzz_fail("a message stored from DATA has a bare CR or a NUL", "", 0);
	/* DATA counts what it stores; BDAT counts chunks, and text LF become CR LF. */
	if (fs->largest > ((checks & FUZZ_BODY_STRICT) ? limit : 2 * limit + 2))
		fuzz_fail("a stored message is larger than max_message_size allows", "", 0);
}

void
fuzz_smtp_session(const struct fuzz_opts *o, const void *prelude, size_t plen,
    const void *input, size_t len, unsigned body_checks)
{
	struct mc_config cfg = *fuzz_config();
	struct fuzz_conn c;
	struct session s;
	char *out;
	size_t outlen;

	fuzz_config_apply(&cfg, o);
	fake_store_setup(o);
	if (fuzz_conn_open(&c, prelude, plen, input, len) != 0)
		return;
	memset(&s, 0, sizeof(s));
	s.cfg = &cfg;
	s.submission = o->on['s'];
	snprintf(s.remote_ip, sizeof(s.remote_ip), "%s", fuzz_remote_ip(o));
	if ((s.io = mc_io_new(c.rfd, c.wfd, (int)cfg.idle_timeout * 1000)) == NULL ||
	    (s.st = mc_store_new(&cfg)) == NULL) {
		mc_io_free(s.io);
		fuzz_conn_close(&c);
		return;
	}
	fuzz_no_sleep = 1;
	session_run(&s);
	fuzz_no_sleep = 0;
	mc_io_close(s.io);
	mc_io_free(s.io);
	mc_store_free(s.st);
	if (s.tls_ctx != NULL)
		SSL_CTX_free(s.tls_ctx);
	out = fuzz_conn_output(&c, &outlen);
	fuzz_conn_close(&c);
	fuzz_check_smtp_replies(out ? out : "", outlen);
	check_outcome(&cfg, out ? out : "", outlen, body_checks);
	free(out);
}
