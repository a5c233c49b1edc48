/*
 * pop3.h - the state of one POP3 session (RFC 1939): the maildrop as it was
 * at login, its deletion marks and lock, shared by main.c, commands.c
 * (the command loop) and retr.c (streaming RETR and TOP with dot-stuffing).
 */
#ifndef POP3_H
#define POP3_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config.h"
#include "io.h"
#include "store.h"

#define LOCK_TTL 180       /* seconds; renewed while the session lives */
#define LOCK_RENEW 60
#define AUTH_MAX_FAILURES 3
/* Header blocks kept from the login's listing, at most this many bytes in all. */
#define HEADS_MAX (4 * 1024 * 1024)

struct msg {
	char id[MC_ID_LEN + 1];
	char uidl[MC_ID_LEN + 1];
	char body[MC_ID_LEN + 1];
	uint64_t size;
	int deleted;
	int listed;      /* head (NULL: none) is the entry's, so RETR needs no lookup of it */
	char *head;
};

struct pop3 {
	struct mc_config *cfg;
	struct mc_io *io;
	struct mc_store *st;
	void *tls_ctx;
	char remote_ip[64];
	char user[600];            /* from USER, before PASS */
	char mailbox[600];         /* "" until logged in (TRANSACTION state) */
	char lock_name[640];
	char lock_holder[40];
	time_t lock_renewed;
	struct msg *msgs;
	size_t nmsgs, cap;
	size_t heads_bytes;        /* of the msgs' head copies */
	unsigned auth_failures;
	unsigned errors;
	int quit;
};

/* commands.c */
void pop3_run(struct pop3 *p);
void pop3_release(struct pop3 *p);
/* Empties the message list (freeing the heads kept from the listing). */
void pop3_forget_msgs(struct pop3 *p);

/* retr.c: send message n (0-based); lines < 0 for RETR, else TOP n lines. */
int pop3_send_message(struct pop3 *p, const struct msg *m, long lines);

#endif
