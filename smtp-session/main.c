/*
 * main.c - bin/smtp-session: one SMTP connection on fds 0/1, as started by
 * systemd (Accept=yes), inetd, tcpserver or s6. Parses the flags, loads the
 * configuration, finds the client address, optionally starts TLS, runs the session.
 */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "remote.h"
#include "tls.h"

struct options {
	const char *config;
	const char *remote_ip;
	int tls;
	int submission;
};

static int
usage(void)
{
	fputs("usage: smtp-session [-c FILE] [--tls] [--submission] [--remote-ip IP]\n", stderr);
	return 2;
}

static int
parse_args(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			o->config = argv[++i];
		else if (strcmp(argv[i], "--remote-ip") == 0 && i + 1 < argc)
			o->remote_ip = argv[++i];
		else if (strcmp(argv[i], "--tls") == 0)
			o->tls = 1;
		else if (strcmp(argv[i], "--submission") == 0)
			o->submission = 1;
		else
			return -1;
	}
	return 0;
}

static int
start_implicit_tls(struct session *s)
{
	char err[256];

	if ((s->tls_ctx = mc_tls_server_ctx(s->cfg->tls_cert, s->cfg->tls_key, err,
	    sizeof(err))) == NULL) {
		mc_log(MC_LOG_ERR, "TLS not available: %s", err);
		return -1;
	}
	if (mc_io_start_tls_server(s->io, s->tls_ctx) != MC_IO_OK) {
		mc_log(MC_LOG_NOTICE, "TLS handshake failed: %s", mc_io_last_error(s->io));
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct options o;
	struct mc_config cfg;
	struct session s;
	char err[512];

	if (parse_args(argc, argv, &o) != 0)
		return usage();
	if (mc_config_load(&cfg, o.config, err, sizeof(err)) != 0) {
		fprintf(stderr, "smtp-session: %s\n", err);
		fputs("421 4.3.5 Service not available (configuration error)\r\n", stdout);
		return 1;
	}
	mc_log_init("smtp-session", cfg.log_target, cfg.log_debug);
	memset(&s, 0, sizeof(s));
	s.cfg = &cfg;
	s.submission = o.submission;
	mc_remote_ip(o.remote_ip, s.remote_ip, sizeof(s.remote_ip));
	mc_log_set_remote(s.remote_ip);
	if ((s.io = mc_io_new(0, 1, (int)cfg.idle_timeout * 1000)) == NULL ||
	    (s.st = mc_store_new(&cfg)) == NULL) {
		mc_log(MC_LOG_ERR, "out of memory");
		return 1;
	}
	mc_log(MC_LOG_INFO, "connect%s%s", o.tls ? " tls" : "", o.submission ? " submission" : "");
	if (!o.tls || start_implicit_tls(&s) == 0)
		session_run(&s);
	mc_log(MC_LOG_INFO, "disconnect messages=%u errors=%u", s.msg_count, s.errors);
	mc_io_close(s.io);
	mc_io_free(s.io);
	mc_store_free(s.st);
	mc_tls_ctx_free(s.tls_ctx);
	mc_config_free(&cfg);
	return 0;
}
