/*
 * config.h - mailcell configuration: one file of `key = value` lines.
 * Every key is known in advance (see units/mailcell.conf.example); an unknown
 * key, a bad value or an unreadable file is an error naming file, line and key.
 */
#ifndef MC_CONFIG_H
#define MC_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define MC_CONFIG_DEFAULT_PATH "/etc/mailcell/mailcell.conf"

enum mc_log_target { MC_LOG_AUTO, MC_LOG_JOURNAL, MC_LOG_STDERR };
enum mc_vrfy_policy { MC_VRFY_AUTH, MC_VRFY_OPEN, MC_VRFY_CLOSED };
enum mc_relay_tls { MC_RELAY_TLS_OPPORTUNISTIC, MC_RELAY_TLS_REQUIRED, MC_RELAY_TLS_VERIFY };

#define MC_RETRY_MAX 16

struct mc_config {
	char path[4096];          /* the file this came from */
	char *hostname;           /* our name in greetings and headers */
	char *mongodb_uri;
	char *database;
	char *tls_cert;
	char *tls_key;
	uint64_t max_message_size; /* octets */
	unsigned max_recipients;
	char *templates_dir;
	char *relay_host;         /* "" = MX lookup, "[host]:port" = smarthost */
	int allow_plaintext_auth;
	char *write_concern;      /* "majority" or a number of nodes */
	int write_journal;        /* j: true */
	unsigned db_timeout_ms;   /* connect/server selection/socket bound */
	unsigned idle_timeout;    /* seconds without input before an SMTP session ends */
	unsigned pop3_idle_timeout; /* the same for POP3 (RFC 1939: at least 10 minutes) */
	unsigned max_errors;      /* protocol errors before a session is dropped */
	unsigned max_command_line; /* octets including CRLF (RFC 5321: at least 512) */
	enum mc_vrfy_policy vrfy_policy; /* who gets real VRFY/EXPN answers */
	char *postmaster;         /* where <postmaster> goes ("" = postmaster@first domain) */
	enum mc_log_target log_target;
	int log_debug;
	int inbound_checks;       /* SPF/DKIM/DMARC on unauthenticated port-25 mail */
	char *trusted_networks;   /* CIDRs exempt from those checks */
	int spf_fail_reject;      /* SPF fail: 550 5.7.23 at MAIL */
	int dmarc_temperror_defer; /* DMARC temperror: 451 4.7.5 */
	unsigned dns_timeout;     /* seconds per DNS lookup */
	char *public_suffix_list; /* for DMARC organizational domains */
	unsigned retry_schedule[MC_RETRY_MAX]; /* seconds between attempts; the last repeats */
	unsigned nretry;
	unsigned queue_lifetime;  /* seconds before undelivered mail bounces */
	unsigned delay_warning;   /* seconds before a delay DSN; 0: never */
	unsigned claim_lease;     /* seconds a worker's claim holds */
	unsigned relay_timeout;   /* seconds per SMTP client command */
	enum mc_relay_tls relay_tls;
	char *relay_ca_file;      /* extra trust anchors for relay_tls = verify */
	unsigned relay_port;      /* port of MX hosts */
	char *relay_trigger;      /* sessions touch it when they queue mail */
	int dkim_sign;            /* sign outbound mail of local domains */
	unsigned queue_keep_done; /* seconds delivered items stay in outbound_done */
	unsigned relay_concurrency; /* deliveries a relay worker runs at once */
};

/*
 * Load the configuration. `path` may be NULL: then $MAILCELL_CONFIG, then
 * MC_CONFIG_DEFAULT_PATH. On error returns -1 and writes one line (no
 * newline) naming the file, line and key into err.
 */
int mc_config_load(struct mc_config *cfg, const char *path, char *err, size_t errlen);

/* Parse config text already in memory (for tests); `name` is used in errors. */
int mc_config_parse(struct mc_config *cfg, const char *name, const char *text,
    char *err, size_t errlen);

/* Set every key to its documented default. */
void mc_config_defaults(struct mc_config *cfg);

void mc_config_free(struct mc_config *cfg);

#endif
