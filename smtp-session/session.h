/*
 * session.h - the state of one SMTP session and the pieces that act on it:
 * commands.c (the command loop and simple verbs), auth.c (AUTH), data.c
 * (DATA/BDAT and the body sink), deliver.c (recipients and final storage).
 */
#ifndef SMTP_SESSION_H
#define SMTP_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "io.h"
#include "store.h"

#define MAX_TARGETS 1000   /* mailboxes and remote addresses one message may reach */
#define AUTH_MAX_FAILURES 3

enum body_type { BODY_7BIT, BODY_8BITMIME, BODY_BINARYMIME };

/* One recipient as given in RCPT, and what it resolved to. */
struct rcpt {
	char *address;   /* canonical key, for logs */
};

/* The mail transaction: from MAIL to the end of DATA/BDAT LAST, or RSET. */
struct txn {
	int active;                /* MAIL accepted */
	char sender[600];          /* canonical key, "" for <> */
	char sender_raw[600];      /* as given, for Return-Path */
	enum body_type body;
	int smtputf8;
	uint64_t declared_size;
	char **rcpts;              /* accepted RCPT addresses (for logs) */
	size_t nrcpts;
	char **mailboxes;          /* local mailboxes to deliver to (deduplicated) */
	size_t nmailboxes;
	char **remote;             /* addresses for the outbound queue (deduplicated) */
	size_t nremote;
	int bdat;                  /* inside a BDAT sequence */
	int bdat_failed;           /* a chunk failed: discard the rest until LAST */
	int fail_code;             /* ...with this reply */
	char fail_enh[8];
	char fail_text[160];
	uint64_t bdat_size;        /* octets received in BDAT chunks so far */
	char qid[16];              /* this message's id, once its body is begun */
	struct body *body_sink;    /* the message being stored, or NULL */
	struct inbound *inbound;   /* SPF/DKIM/DMARC state, NULL when not checked */
};

struct session {
	struct mc_config *cfg;
	struct mc_io *io;
	struct mc_store *st;
	void *tls_ctx;             /* SSL_CTX, made when TLS first starts */
	char remote_ip[64];
	char helo[256];            /* client's HELO/EHLO name, "" before it */
	int esmtp;                 /* EHLO (not HELO) was used */
	int submission;            /* --submission: AUTH required before MAIL */
	char auth_user[600];       /* "" until AUTH succeeded */
	unsigned auth_failures;
	unsigned errors;
	int quit;                  /* close after this reply */
	unsigned msg_count;
	struct txn txn;
};

/* ---- commands.c ---- */
void reply(struct session *s, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A reply to a client error: counts toward max_errors. */
void reply_err(struct session *s, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void session_run(struct session *s);
void txn_reset(struct session *s);
int tls_allowed_auth(const struct session *s);

/* ---- auth.c ---- */
void cmd_auth(struct session *s, const char *arg);

/* ---- data.c ---- */
void cmd_data(struct session *s, const char *arg);
void cmd_bdat(struct session *s, const char *arg);
void body_abort(struct body *b);

/* ---- deliver.c ---- */
/* RCPT resolution: fills the txn's mailboxes/remote lists; replies itself. */
struct mc_address;
void rcpt_add(struct session *s, const struct mc_address *a);
/* 1 if the authenticated user may use sender (own address or alias to them). */
int sender_allowed(struct session *s, const char *sender, int *temp);
/* VRFY/EXPN lookups for authenticated sessions. */
void lookup_vrfy(struct session *s, const char *key, int expn);
/*
 * Stores the finished body for every target, with local_head on top for
 * mailboxes and remote_head for the outbound queue; 0, or -1 (reply 451).
 */
int deliver(struct session *s, const char *body_id, uint64_t size, const char *local_head,
    const char *remote_head, int quarantined);

#endif
