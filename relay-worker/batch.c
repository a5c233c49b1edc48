/*
 * batch.c - a worker process's candidate ids: the share the parent fetched
 * for it, then refills of the due ids (its own hash share first, others'
 * when its own is empty), claimed one at a time, each claim atomic (the
 * store's lock insert). Saves a scan of the queue per item.
 */
#include "relay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* FNV-1a of the id's hex. */
unsigned
batch_share(const char *id, unsigned nslots)
{
	uint32_t h = 2166136261u;

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 16777619u;
	return nslots ? h % nslots : 0;
}

static int
batch_alloc(struct relay_batch *b, size_t n)
{
	free(b->ids);
	b->n = b->next = b->claimed = 0;
	b->ids = calloc(n ? n : 1, sizeof(*b->ids));
	return b->ids != NULL ? 0 : -1;
}

int
batch_init(struct relay *r, char (*ids)[MC_ID_LEN + 1], const unsigned *slots, size_t n)
{
	struct relay_batch *b = &r->batch;

	if (batch_alloc(b, n) != 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (slots[i] == r->slot)
			memcpy(b->ids[b->n++], ids[i], sizeof(b->ids[0]));
	return 0;
}

void
batch_free(struct relay *r)
{
	free(r->batch.ids);
	memset(&r->batch, 0, sizeof(r->batch));
}

/*
 * Takes ids from due[n]: this process's share, oldest first; or (stealing)
 * all, newest first from a place of its own, so that a thief meets the
 * owners (who go oldest first) late and other thieves seldom.
 */
static void
take(struct relay *r, char (*due)[MC_ID_LEN + 1], size_t n, int stealing)
{
	struct relay_batch *b = &r->batch;
	size_t start = stealing && r->nslots ? n * r->slot / r->nslots : 0;

	b->n = b->next = b->claimed = 0;
	b->stealing = stealing;
	for (size_t k = 0; k < n; k++) {
		size_t i = stealing ? n - 1 - (start + k) % n : k;
		if (stealing || batch_share(due[i], r->nslots) == r->slot)
			memcpy(b->ids[b->n++], due[i], sizeof(b->ids[0]));
	}
}

/*
 * Asks for the due ids again: this process's share of them, or everyone's
 * when it has none left (or its last batch gave it nothing: others took
 * them). NOTFOUND when nothing is due, or a batch of everyone's gave nothing.
 */
static enum mc_store_status
refill(struct relay *r)
{
	struct relay_batch *b = &r->batch;
	size_t max = (size_t)RELAY_BATCH * (r->nslots ? r->nslots : 1), n;
	int stealing = b->ids != NULL && b->claimed == 0;
	char (*due)[MC_ID_LEN + 1];
	enum mc_store_status s;

	if (stealing && b->stealing)
		return MC_STORE_NOTFOUND;
	if ((due = calloc(max, sizeof(*due))) == NULL || batch_alloc(b, max) != 0) {
		free(due);
		return MC_STORE_TEMP;
	}
	if ((s = mc_store_outbound_due(r->st, due, max, &n)) == MC_STORE_OK) {
		take(r, due, n, stealing);
		if (b->n == 0 && !stealing)
			take(r, due, n, 1);
		mc_log(MC_LOG_DEBUG, "%zu due, %zu to try%s", n, b->n,
		    b->stealing ? " (any share)" : "");
	}
	free(due);
	return s == MC_STORE_OK && b->n == 0 ? MC_STORE_NOTFOUND : s;
}

enum mc_store_status
batch_claim(struct relay *r, struct mc_outbound_info *out)
{
	struct relay_batch *b = &r->batch;
	enum mc_store_status s;

	while (!relay_stopping) {
		if (b->next == b->n && (s = refill(r)) != MC_STORE_OK)
			return s;
		s = mc_store_outbound_claim_id(r->st, b->ids[b->next++], r->owner,
		    r->cfg->claim_lease, out);
		if (s == MC_STORE_OK) {
			b->claimed++;
			return s;
		}
		if (s != MC_STORE_EXISTS && s != MC_STORE_NOTFOUND)
			return s;
	}
	return MC_STORE_NOTFOUND;
}
