/*
 * bounce.c - tells the sender what happened: a DSN (dsn.c) for recipients
 * that failed in this attempt, and one delay warning when mail has waited
 * long. From the null sender, so a notification never causes another one;
 * none at all for mail that itself came from the null sender.
 */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dsn.h"
#include "log.h"
#include "stored.h"

#define ORIG_HEADERS_MAX 65536
#define DSN_LOG_MAX 300        /* the newest log entries a notification shows */

/* The item's whole log as stored (every attempt), its newest entries. */
struct history {
	struct mc_item_log e[DSN_LOG_MAX];
	char *text[DSN_LOG_MAX][2];
	size_t n, seen;
};

static void
history_add(void *ctx, const struct mc_item_log *e)
{
	struct history *h = ctx;
	size_t i = h->seen++ % DSN_LOG_MAX;   /* a ring: keeps the newest */

	if (h->n == DSN_LOG_MAX) {
		free(h->text[i][0]);
		free(h->text[i][1]);
	} else {
		h->n++;
	}
	h->text[i][0] = strdup(e->command);
	h->text[i][1] = strdup(e->reply);
	h->e[i].time_ms = e->time_ms;
	h->e[i].command = h->text[i][0] ? h->text[i][0] : "";
	h->e[i].reply = h->text[i][1] ? h->text[i][1] : "";
}

static void
history_free(struct history *h)
{
	for (size_t i = 0; i < h->n; i++) {
		free(h->text[i][0]);
		free(h->text[i][1]);
	}
}

/* Loads the log in order (oldest first after rotating the ring). */
static int
load_log(struct attempt *a, struct history *h)
{
	struct mc_item_log tmp[DSN_LOG_MAX];
	char *ttmp[DSN_LOG_MAX][2];
	size_t start;

	if (mc_store_item_log_list(a->r->st, a->it.id, history_add, h) != MC_STORE_OK) {
		mc_log(MC_LOG_ERR, "queue %s: cannot read the log: %s", a->it.id,
		    mc_store_error(a->r->st));
		return -1;
	}
	if (h->seen <= DSN_LOG_MAX)
		return 0;
	start = h->seen % DSN_LOG_MAX;
	for (size_t i = 0; i < DSN_LOG_MAX; i++) {
		tmp[i] = h->e[(start + i) % DSN_LOG_MAX];
		ttmp[i][0] = h->text[(start + i) % DSN_LOG_MAX][0];
		ttmp[i][1] = h->text[(start + i) % DSN_LOG_MAX][1];
	}
	memcpy(h->e, tmp, sizeof(tmp));
	memcpy(h->text, ttmp, sizeof(ttmp));
	return 0;
}

/* The original's header section (bounded), read from the stored message. */
static size_t
orig_headers(struct attempt *a, char *buf, size_t max)
{
	struct msgsrc src;
	size_t len = 0, got = 0;
	char *end;

	if (msgsrc_stored(&src, a->r->st, a->it.head, a->it.body) != 0)
		return 0;
	if (src.open(src.ctx) == 0)
		while (len + 1 < max && src.read(src.ctx, buf + len, max - 1 - len, &got) == 0 && got > 0)
			len += got;
	buf[len] = '\0';
	if ((end = strstr(buf, "\r\n\r\n")) != NULL)
		len = (size_t)(end - buf) + 2;
	else if ((end = strrchr(buf, '\n')) != NULL)
		len = (size_t)(end - buf) + 1;   /* bounded: up to the last whole line */
	buf[len] = '\0';
	msgsrc_stored_free(&src);
	return len;
}

static void
fill_rcpt(struct dsn_rcpt *d, const struct mc_item_rcpt *p, const char *action, char *diag,
    size_t diaglen)
{
	d->address = p->address;
	d->action = action;
	d->status = p->status[0] ? p->status : (strcmp(action, "failed") == 0 ? "5.0.0" : "4.0.0");
	d->remote_mta = p->remote_mta;
	snprintf(diag, diaglen, "%s", p->reply);
	d->diagnostic = diag;
}

/* Sends the rendered DSN to the item's sender: locally or through the queue. */
static void
send_dsn(struct attempt *a, const char *msg, size_t len)
{
	const char *at = strrchr(a->it.sender, '@');
	char head[512];
	int local = at != NULL && mc_store_domain_exists(a->r->st, at + 1) == MC_STORE_OK;
	int rc;

	snprintf(head, sizeof(head), "Return-Path: <>\r\n");
	if (local && (rc = local_deliver_buffer(a->r, a->it.sender, head, msg, len)) != 1) {
		if (rc == 0)
			mc_log(MC_LOG_INFO, "queue %s: notification delivered to <%s>", a->it.id,
			    a->it.sender);
		else
			mc_log(MC_LOG_ERR, "queue %s: notification to <%s> not stored: %s", a->it.id,
			    a->it.sender, mc_store_error(a->r->st));
		return;
	}
	if (local) {
		mc_log(MC_LOG_WARNING, "queue %s: sender <%s> has no mailbox; notification dropped",
		    a->it.id, a->it.sender);
		return;
	}
	if (local_queue_buffer(a->r, a->it.sender, msg, len) != 0)
		mc_log(MC_LOG_ERR, "queue %s: notification to <%s> not queued: %s", a->it.id,
		    a->it.sender, mc_store_error(a->r->st));
}

/* Builds and sends one DSN for the recipients selected by `pick`. */
static void
notify(struct attempt *a, int delayed, time_t until, int (*pick)(const struct attempt *, size_t))
{
	size_t n = 0;
	struct dsn_rcpt *r = calloc(a->it.nrcpts, sizeof(*r));
	struct dsn_log *log = calloc(DSN_LOG_MAX, sizeof(*log));
	struct history hist = { 0 };
	char (*diag)[600] = calloc(a->it.nrcpts, sizeof(*diag));
	char *hdrs = malloc(ORIG_HEADERS_MAX), *msg = NULL, err[256];
	size_t msglen = 0;
	struct dsn_input in;

	if (r == NULL || log == NULL || diag == NULL || hdrs == NULL)
		goto out;
	for (size_t i = 0; i < a->it.nrcpts; i++) {
		if (!pick(a, i))
			continue;
		fill_rcpt(&r[n], &a->it.rcpts[i], delayed ? "delayed" : "failed", diag[n],
		    sizeof(diag[0]));
		n++;
	}
	if (n == 0)
		goto out;
	if (load_log(a, &hist) != 0)
		goto out;
	for (size_t i = 0; i < hist.n; i++) {
		log[i].time = (time_t)(hist.e[i].time_ms / 1000);
		log[i].command = hist.e[i].command;
		log[i].reply = hist.e[i].reply;
	}
	memset(&in, 0, sizeof(in));
	in.hostname = a->r->cfg->hostname;
	in.sender = a->it.sender;
	in.queue_id = a->it.id;
	in.arrival = a->it.created;
	in.delayed = delayed;
	in.retry_until = until;
	in.rcpts = r;
	in.nrcpts = n;
	in.log = log;
	in.nlog = hist.n;
	in.orig_headers = hdrs;
	in.orig_headers_len = orig_headers(a, hdrs, ORIG_HEADERS_MAX);
	in.templates_dir = a->r->cfg->templates_dir;
	if (dsn_build(&in, &msg, &msglen, err, sizeof(err)) != 0)
		mc_log(MC_LOG_ERR, "queue %s: cannot build the notification: %s", a->it.id, err);
	else
		send_dsn(a, msg, msglen);
out:
	history_free(&hist);
	free(msg);
	free(hdrs);
	free(diag);
	free(log);
	free(r);
}

static int
pick_failed(const struct attempt *a, size_t i)
{
	return a->newly_failed[i];
}

static int
pick_pending(const struct attempt *a, size_t i)
{
	return strcmp(a->it.rcpts[i].state, "pending") == 0;
}

void
bounce_failed(struct attempt *a)
{
	int any = 0;

	for (size_t i = 0; i < a->it.nrcpts; i++)
		any |= a->newly_failed[i];
	if (!any)
		return;
	if (a->it.sender[0] == '\0') {
		mc_log(MC_LOG_NOTICE, "queue %s: failed, but the sender is <>: no notification",
		    a->it.id);
		return;
	}
	notify(a, 0, 0, pick_failed);
}

void
bounce_delayed(struct attempt *a, time_t retry_until)
{
	if (a->it.sender[0] == '\0')
		return;
	notify(a, 1, retry_until, pick_pending);
}
