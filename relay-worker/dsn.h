/*
 * dsn.h - delivery status notifications (RFC 3464) for the sender of a
 * message that failed or is delayed: multipart/report with a human part
 * rendered from templates (text and HTML), the machine-readable
 * message/delivery-status part and the original's headers.
 */
#ifndef RELAY_DSN_H
#define RELAY_DSN_H

#include <stddef.h>
#include <time.h>

struct dsn_rcpt {
	const char *address;      /* final recipient */
	const char *action;       /* "failed" or "delayed" (NULL: from `delayed`) */
	const char *status;       /* RFC 3463 code, e.g. "5.1.1" (NULL: x.0.0) */
	const char *remote_mta;   /* host that answered, "" if none */
	const char *diagnostic;   /* the reply, e.g. "550 5.1.1 no such user", "" if none */
	time_t last_attempt;      /* 0: the time of the last log entry (else now) */
};

struct dsn_log {
	time_t time;
	const char *command;      /* what we sent ("" for a reply without command) */
	const char *reply;        /* what the server answered */
};

struct dsn_input {
	const char *hostname;     /* our name: From MAILER-DAEMON@hostname, Reporting-MTA */
	const char *sender;       /* the original envelope sender: the DSN's To */
	const char *queue_id;     /* the queue item id */
	time_t arrival;           /* when the original was queued */
	int delayed;              /* a delay warning, not a failure */
	time_t retry_until;       /* delayed: when we give up */
	const struct dsn_rcpt *rcpts;
	size_t nrcpts;
	const struct dsn_log *log;
	size_t nlog;
	const char *orig_headers; /* the original's header section (CRLF lines) */
	size_t orig_headers_len;
	const char *templates_dir;
	time_t now;               /* the DSN's Date; 0: time(NULL) (tests fix it) */
};

/*
 * Bounds. More than DSN_MAX_RCPTS recipients are refused (the config's
 * max_recipients cannot exceed it); the human part lists the first
 * DSN_SHOW_RCPTS of them (the delivery-status part lists all) and the last
 * DSN_MAX_LOG log entries; every line from the remote server is cut at
 * DSN_MAX_LINE octets, a diagnostic at DSN_MAX_DIAG; the original header
 * section is cut at a line boundary before DSN_MAX_ORIG_HEADERS.
 */
#define DSN_MAX_RCPTS        10000
#define DSN_SHOW_RCPTS       100
#define DSN_MAX_LOG          100
#define DSN_MAX_LINE         512
#define DSN_MAX_DIAG         1024
#define DSN_MAX_ORIG_HEADERS (64 * 1024)
#define DSN_MAX_PART         (8 * 1024 * 1024)  /* a rendered template */

/*
 * Checks that every template (dsn-failed.txt, dsn-failed.html,
 * dsn-delayed.txt, dsn-delayed.html) exists and parses; -1 with the first
 * problem as one line in err ("DIR/FILE:LINE: what").
 */
int dsn_templates_check(const char *templates_dir, char *err, size_t errlen);

/*
 * Renders the complete DSN message (header and body, CRLF line ends) into a
 * malloc'd buffer (free() it); -1 with one line in err (template missing or
 * broken, no sender: never bounce a bounce, bad input, no memory).
 */
int dsn_build(const struct dsn_input *in, char **out, size_t *outlen, char *err, size_t errlen);

#endif
