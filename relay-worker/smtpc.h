/*
 * smtpc.h - the ESMTP client for one connection and its transactions: it
 * adapts to what the server offers (EHLO or HELO, STARTTLS, PIPELINING,
 * CHUNKING/BDAT or DATA, 8BITMIME, BINARYMIME, SMTPUTF8, SIZE) and reports
 * a result per recipient, logging every command and reply. A connection may
 * carry several transactions (RSET between them).
 */
#ifndef RELAY_SMTPC_H
#define RELAY_SMTPC_H

#include <stddef.h>
#include <stdint.h>

#include "msgsrc.h"

typedef struct ssl_ctx_st SSL_CTX;

enum smtpc_tls { SMTPC_TLS_OPPORTUNISTIC, SMTPC_TLS_REQUIRED, SMTPC_TLS_VERIFY };
enum smtpc_body { SMTPC_7BIT, SMTPC_8BITMIME, SMTPC_BINARYMIME };

struct smtpc_rcpt {
	const char *address;   /* as it goes into RCPT TO:<...> */
	int code;              /* final reply for this recipient: 250, 4xx, 5xx; 0 = no answer */
	char enh[16];          /* enhanced status code of that reply ("" if none) */
	char reply[512];       /* that reply's text, lines joined with " " */
};
/*
 * reply is what followed the code and the enhanced code ("550 5.1.1 no such
 * user" gives 550, "5.1.1", "no such user"); an enhanced code repeated on
 * later lines is dropped, control characters become '?'. A reply made up
 * here (size, SMTPUTF8, conversion, an unusable address) looks the same:
 * 552, "5.3.4", "message size exceeds the server's limit". With code 0 (no
 * answer: connection, TLS or local failure), enh and reply come from `why`.
 */

struct smtpc_msg {
	const char *sender;          /* "" for <> */
	struct smtpc_rcpt *rcpts;
	size_t nrcpts;
	const struct msgsrc *src;    /* the message, CRLF line ends */
	uint64_t size;               /* its octets */
	enum smtpc_body body;        /* what the submitter declared */
	int smtputf8;                /* the envelope has non-ASCII addresses */
	/*
	 * Called with the source that will really be sent (the original, or
	 * its 7-bit conversion) right before the content goes out; returns a
	 * complete header line to put first ("DKIM-Signature: ...\r\n") or NULL.
	 * The returned string stays valid until the next call. May be NULL.
	 */
	const char *(*sign)(void *ctx, const struct msgsrc *src);
	void *sign_ctx;
};

struct smtpc_opts {
	const char *helo_name;       /* our hostname */
	const char *server_name;     /* the MX host name, for SNI and verification */
	enum smtpc_tls tls;
	SSL_CTX *tls_ctx;            /* client context (verifying for SMTPC_TLS_VERIFY) */
	unsigned timeout;            /* seconds per command (RFC 5321 4.5.3.2 suggests minutes) */
	/*
	 * Every command sent and reply received, as they happen: the greeting
	 * with command "", then each command without CRLF ("MAIL FROM:<a@b>
	 * SIZE=123"; pipelined ones one entry each), "<TLS handshake>" with
	 * "protocol:cipher, certificate verified|not verified" or the failure,
	 * the content as "<message: N octets via DATA|BDAT>" with the final
	 * reply. reply is the whole reply, lines joined with "\n", codes
	 * included ("250-mx.example\n250 SIZE 1000"), or "(no reply: ...)".
	 */
	void (*log)(void *ctx, const char *command, const char *reply);
	void *log_ctx;
};

enum smtpc_status {
	SMTPC_OK,          /* the transaction ran: every recipient has its code */
	SMTPC_TEMP,        /* connection-level failure or 4xx before RCPT (or a 4xx content
	                      reply for all): try the next host */
	SMTPC_PERM,        /* 5xx before RCPT (greeting, EHLO/HELO, MAIL) or a 5xx content reply
	                      for all, or a capability the message needs is missing: codes set */
	SMTPC_RETRY,       /* smtpc_send on a reused connection only: it failed before the
	                      server took the transaction (no reply to RSET or MAIL, or 421
	                      to either); nothing happened, try again on a new connection */
};

/*
 * Runs one transaction over the connected socket fd (not closed here).
 * On SMTPC_TEMP/SMTPC_PERM, why holds a one-line reason ("4.4.2 connection
 * lost after RCPT", "5.6.7 server lacks SMTPUTF8", ...), and recipients
 * without their own reply get code (4xx/5xx) and text from it.
 */
enum smtpc_status smtpc_deliver(int fd, const struct smtpc_opts *opts, struct smtpc_msg *msg,
    char *why, size_t whylen);

/*
 * Details of smtpc_deliver:
 * - Per-recipient codes are authoritative whatever the status: a recipient
 *   refused at RCPT keeps that reply; the content reply goes to every
 *   recipient accepted at RCPT. No recipient accepted: QUIT, SMTPC_OK.
 * - opts->timeout bounds every wait (0: 300 s); a TLS handshake as a whole.
 *   QUIT waits at most 5 s for its 221, and its failure is ignored.
 * - opts->tls_ctx NULL: a context is made for this call (slow; pass one).
 * - Server replies: at most 100 lines of at most 1000 octets with CRLF,
 *   3-digit codes 2xx-5xx, the same on every line; anything else is
 *   "4.5.0 malformed reply from the server (...)", SMTPC_TEMP.
 * - A message needing 8BITMIME or BINARYMIME that the server lacks is
 *   converted to 7 bit (convert.h) and its SIZE= is the converted size.
 * - The source is read again for the content; a read failure there drops
 *   the connection without ending the content: "4.3.0 cannot read the
 *   queued message", SMTPC_TEMP. DATA content is dot-stuffed, a bare CR or
 *   LF goes out as CRLF, and a missing final CRLF is added.
 */

/*
 * The same over a connection kept for several transactions. smtpc_new makes
 * no I/O (NULL when out of memory); the first smtpc_send reads the greeting
 * and says EHLO (and STARTTLS), later ones send RSET first. Each
 * smtpc_send is smtpc_deliver's transaction without the QUIT: its status,
 * why and recipients mean the same, plus SMTPC_RETRY on a reused connection.
 * smtpc_reusable: the session is up and may carry another transaction.
 * smtpc_set_log: where the next commands and replies are logged (opts->log
 * at first). smtpc_free sends QUIT (if the connection is alive) and frees;
 * fd is the caller's to close.
 */
struct smtpc;
struct smtpc *smtpc_new(int fd, const struct smtpc_opts *opts);
enum smtpc_status smtpc_send(struct smtpc *c, struct smtpc_msg *msg, char *why, size_t whylen);
int smtpc_reusable(const struct smtpc *c);
unsigned smtpc_transactions(const struct smtpc *c);   /* smtpc_send calls so far */
void smtpc_set_log(struct smtpc *c, void (*log)(void *ctx, const char *command,
    const char *reply), void *ctx);
void smtpc_free(struct smtpc *c);

/* Start of `why` when the TLS handshake after STARTTLS failed (SMTPC_TEMP). */
#define SMTPC_WHY_TLS_FAILED "4.7.5 TLS handshake failed"

#endif
