/*
 * msgsrc.c - the stored message as a source: the head kept in the queue item
 * (our trace headers), then the body streamed from GridFS, restartable.
 */
#include "msgsrc.h"
#include "stored.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct stored {
	struct mc_store *st;
	char *head;
	size_t head_len, head_off;
	char body_id[MC_ID_LEN + 1];
	struct mc_body_reader *r;
	char err[256];
};

static int
stored_open(void *ctx)
{
	struct stored *s = ctx;

	if (s->r != NULL) {
		mc_store_body_close(s->r);
		s->r = NULL;
	}
	s->head_off = 0;
	if (mc_store_body_open(s->st, s->body_id, &s->r) != MC_STORE_OK) {
		snprintf(s->err, sizeof(s->err), "%s", mc_store_error(s->st));
		return -1;
	}
	return 0;
}

static int
stored_read(void *ctx, void *buf, size_t len, size_t *got)
{
	struct stored *s = ctx;

	*got = 0;
	if (s->head_off < s->head_len) {
		size_t n = s->head_len - s->head_off;
		*got = n < len ? n : len;
		memcpy(buf, s->head + s->head_off, *got);
		s->head_off += *got;
		return 0;
	}
	if (s->r == NULL || mc_store_body_read(s->r, buf, len, got) != MC_STORE_OK) {
		snprintf(s->err, sizeof(s->err), "%s", s->r ? mc_store_error(s->st) : "not open");
		return -1;
	}
	return 0;
}

static void
stored_close(void *ctx)
{
	struct stored *s = ctx;

	if (s->r != NULL)
		mc_store_body_close(s->r);
	s->r = NULL;
}

static const char *
stored_error(void *ctx)
{
	return ((struct stored *)ctx)->err;
}

int
msgsrc_stored(struct msgsrc *src, struct mc_store *st, const char *head, const char *body_id)
{
	struct stored *s = calloc(1, sizeof(*s));

	if (s == NULL || (s->head = strdup(head ? head : "")) == NULL) {
		free(s);
		return -1;
	}
	s->st = st;
	s->head_len = strlen(s->head);
	snprintf(s->body_id, sizeof(s->body_id), "%s", body_id);
	src->ctx = s;
	src->open = stored_open;
	src->read = stored_read;
	src->close = stored_close;
	src->error = stored_error;
	return 0;
}

void
msgsrc_stored_free(struct msgsrc *src)
{
	struct stored *s = src->ctx;

	if (s == NULL)
		return;
	stored_close(s);
	free(s->head);
	free(s);
	src->ctx = NULL;
}
