/*
 * local.c - mail the worker itself places: notifications into a local
 * sender's mailbox or into the queue for a remote one, and queued mail
 * whose recipient's domain is ours (never sent through the network).
 */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* A message in memory into the bodies bucket; 0, or -1 (store). */
static int
upload(struct relay *r, const char *msg, size_t len, char *body_id)
{
	struct mc_body_writer *w;

	if (mc_store_body_begin(r->st, &w) != MC_STORE_OK)
		return -1;
	if (mc_store_body_write(w, msg, len) != MC_STORE_OK) {
		mc_store_body_abort(w);
		return -1;
	}
	return mc_store_body_finish(w, body_id) == MC_STORE_OK ? 0 : -1;
}

int
local_deliver_buffer(struct relay *r, const char *address, const char *head,
    const char *msg, size_t len)
{
	struct mc_user u;
	char body[MC_ID_LEN + 1];
	const char *boxes[1] = { address };
	struct mc_message_meta meta = { "", "", 0, head };
	enum mc_store_status s = mc_store_user_get(r->st, address, &u);

	if (s == MC_STORE_NOTFOUND)
		return 1;
	if (s != MC_STORE_OK || upload(r, msg, len, body) != 0)
		return -1;
	if (mc_store_deliver(r->st, body, len, boxes, 1, &meta) != MC_STORE_OK) {
		(void)mc_store_body_delete(r->st, body);
		return -1;
	}
	return 0;
}

static int
non_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

int
local_queue_buffer(struct relay *r, const char *rcpt, const char *msg, size_t len)
{
	char body[MC_ID_LEN + 1], id[MC_ID_LEN + 1];
	const char *rcpts[1] = { rcpt };
	const struct mc_outbound_new q = { "", rcpts, 1, body, NULL, "8bitmime", non_ascii(rcpt) };

	if (upload(r, msg, len, body) != 0)
		return -1;
	if (mc_store_outbound_add(r->st, &q, id) != MC_STORE_OK) {
		(void)mc_store_body_delete(r->st, body);
		return -1;
	}
	mc_log(MC_LOG_INFO, "notification for <%s> queued as %s", rcpt, id);
	return 0;
}

/* One local recipient of the queued message; the body is shared. */
static void
local_one(struct attempt *a, size_t i, const char *head)
{
	struct mc_item_rcpt *p = &a->it.rcpts[i];
	struct mc_user u;
	const char *boxes[1] = { p->address };
	struct mc_message_meta meta = { a->it.sender, "", 0, head };
	enum mc_store_status s = mc_store_user_get(a->r->st, p->address, &u);
	uint64_t body_len = a->it.size - strlen(a->it.head);

	if (s == MC_STORE_NOTFOUND) {
		rcpt_outcome(a, i, "failed", "5.1.1", "550 5.1.1 no such local user", a->r->cfg->hostname);
		return;
	}
	if (s == MC_STORE_OK && (u.disabled || mc_store_deliver(a->r->st, a->it.body, body_len,
	    boxes, 1, &meta) == MC_STORE_OK)) {
		if (u.disabled)
			rcpt_outcome(a, i, "failed", "5.2.1", "550 5.2.1 mailbox disabled",
			    a->r->cfg->hostname);
		else
			rcpt_outcome(a, i, "delivered", "2.0.0", "250 2.0.0 delivered locally",
			    a->r->cfg->hostname);
		return;
	}
	rcpt_outcome(a, i, "pending", "4.3.0", mc_store_error(a->r->st), a->r->cfg->hostname);
}

void
local_deliver_item(struct attempt *a, const size_t *idx, size_t n)
{
	size_t len = strlen(a->it.head) + 600;
	char *head = malloc(len);

	if (head == NULL)
		return;
	snprintf(head, len, "Return-Path: <%s>\r\n%s", a->it.sender, a->it.head);
	for (size_t j = 0; j < n; j++)
		local_one(a, idx[j], head);
	free(head);
}
