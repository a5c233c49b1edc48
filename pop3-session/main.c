/*
 * main.c - bin/pop3-session: one POP3 connection on fds 0/1 (port 110 with
 * STLS, or 995 with --tls), as started by systemd, inetd, tcpserver or s6.
 * Parses the flags, loads the configuration, optionally starts TLS, runs the session.
 */
#include "pop3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "remote.h"
#include "tls.h"

static int
usage(void)
{
	fputs("usage: pop3-session [-c FILE] [--tls] [--remote-ip IP]\n", stderr);
	return 2;
}

static int
start_implicit_tls(struct pop3 *p)
{
	char err[256];

	if ((p->tls_ctx = mc_tls_server_ctx(p->cfg->tls_cert, p->cfg->tls_key, err,
	    sizeof(err))) == NULL) {
		mc_log(MC_LOG_ERR, "TLS not available: %s", err);
		return -1;
	}
	if (mc_io_start_tls_server(p->io, p->tls_ctx) != MC_IO_OK) {
		mc_log(MC_LOG_NOTICE, "TLS handshake failed: %s", mc_io_last_error(p->io));
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	const char *config = NULL, *remote = NULL;
	int tls = 0;
	struct mc_config cfg;
	struct pop3 p;
	char err[512];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			config = argv[++i];
		else if (strcmp(argv[i], "--remote-ip") == 0 && i + 1 < argc)
			remote = argv[++i];
		else if (strcmp(argv[i], "--tls") == 0)
			tls = 1;
		else
			return usage();
	}
	if (mc_config_load(&cfg, config, err, sizeof(err)) != 0) {
		fprintf(stderr, "pop3-session: %s\n", err);
		fputs("-ERR [SYS/TEMP] service not available (configuration error)\r\n", stdout);
		return 1;
	}
	mc_log_init("pop3-session", cfg.log_target, cfg.log_debug);
	memset(&p, 0, sizeof(p));
	p.cfg = &cfg;
	mc_remote_ip(remote, p.remote_ip, sizeof(p.remote_ip));
	mc_log_set_remote(p.remote_ip);
	if ((p.io = mc_io_new(0, 1, 60000)) == NULL || (p.st = mc_store_new(&cfg)) == NULL) {
		mc_log(MC_LOG_ERR, "out of memory");
		return 1;
	}
	mc_log(MC_LOG_INFO, "connect%s", tls ? " tls" : "");
	if (!tls || start_implicit_tls(&p) == 0)
		pop3_run(&p);
	mc_log(MC_LOG_INFO, "disconnect errors=%u", p.errors);
	mc_io_close(p.io);
	mc_io_free(p.io);
	mc_store_free(p.st);
	pop3_forget_msgs(&p);
	free(p.msgs);
	mc_tls_ctx_free(p.tls_ctx);
	mc_config_free(&cfg);
	return 0;
}
