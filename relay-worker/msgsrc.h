/*
 * msgsrc.h - a message to send, readable from its start as often as needed
 * (DKIM signing reads it once, each SMTP attempt again): the stored head and
 * GridFS body, or a filter over another source (8-bit to quoted-printable).
 */
#ifndef RELAY_MSGSRC_H
#define RELAY_MSGSRC_H

#include <stddef.h>

struct msgsrc {
	void *ctx;
	/* (Re)starts at the first octet; 0, or -1 with a reason in the owner's error. */
	int (*open)(void *ctx);
	/* Up to len octets; *got == 0 at the end. 0, or -1 on a read failure. */
	int (*read)(void *ctx, void *buf, size_t len, size_t *got);
	void (*close)(void *ctx);
	const char *(*error)(void *ctx);   /* the last failure, one line */
};

#endif
