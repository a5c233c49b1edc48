/*
 * fuzz_pop3.c - libFuzzer harness (3): the POP3 command parser and session
 * (pop3-session sources but main.c) in process on a pipe, against the fake
 * store's maildrops (alice@example.test: 7 awkward messages, bob: 70).
 */
/*
 * Options ("#!" line, see fuzz_common.h): L logs in as alice first (USER/PASS),
 * t plaintext login refused, l maildrop locked elsewhere, k<N> message reads
 * of at most N octets, f<N> the Nth store call fails, e<N> max_errors.
 */

#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "pop3.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char login[] = "USER alice@example.test\r\nPASS secret\r\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_opts o;
	struct mc_config cfg = *fuzz_config();
	const struct fake_store_stats *fs;
	struct fuzz_conn c;
	struct pop3 p;
	const uint8_t *in;
	size_t n;

	fuzz_init();
	fuzz_opts_parse(data, size, &o, &in, &n);
	fuzz_config_apply(&cfg, &o);
	fake_store_setup(&o);
	if (fuzz_conn_open(&c, login, o.on['L'] ? strlen(login) : 0, in, n) != 0)
		return 0;
	memset(&p, 0, sizeof(p));
	p.cfg = &cfg;
	snprintf(p.remote_ip, sizeof(p.remote_ip), "%s", fuzz_remote_ip(&o));
	if ((p.io = mc_io_new(c.rfd, c.wfd, 60000)) == NULL || (p.st = mc_store_new(&cfg)) == NULL) {
		mc_io_free(p.io);
		fuzz_conn_close(&c);
		return 0;
	}
	fuzz_no_sleep = 1;
	pop3_run(&p);
	fuzz_no_sleep = 0;
	mc_io_close(p.io);
	mc_io_free(p.io);
	mc_store_free(p.st);
	free(p.msgs);
	if (p.tls_ctx != NULL)
		SSL_CTX_free(p.tls_ctx);
	if (getenv("FUZZ_SHOW") != NULL)
		free(fuzz_conn_output(&c, &n));
	fuzz_conn_close(&c);
	fs = fake_store_stats();
	if (p.mailbox[0] != '\0' && !cfg.allow_plaintext_auth)
		fuzz_fail("logged in without TLS while plaintext login is refused", p.mailbox,
		    strlen(p.mailbox));
	if (fs->open_readers != 0)
		fuzz_fail("a message reader was left open after the session", "", 0);
	if (fs->lock_held && fs->failures == 0)
		fuzz_fail("the maildrop lock was not released at the end", "", 0);
	return 0;
}
