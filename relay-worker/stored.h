/*
 * stored.h - message sources over what the store keeps: a queue item's head
 * and GridFS body (msgsrc.c), and a buffer in memory (a DSN being sent).
 */
#ifndef RELAY_STORED_H
#define RELAY_STORED_H

#include "msgsrc.h"
#include "store.h"

/* A source reading head (may be NULL) then the body; -1 when out of memory. */
int msgsrc_stored(struct msgsrc *src, struct mc_store *st, const char *head,
    const char *body_id);
void msgsrc_stored_free(struct msgsrc *src);

#endif
