/*
 * pool.c - the worker's parent process. Each pass (--once: one; --loop: at
 * every wake) makes the indexes (once), moves and purges delivered items
 * (at most once a minute), reads the due ids and forks children for them,
 * up to relay_concurrency at a time, each with its own store connection and
 * share of the ids. SIGTERM and SIGINT are passed on to the children, which
 * finish the item they are delivering and claim no other.
 */
#include "relay.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

#define MAINTAIN_EVERY 60      /* seconds between sweeps and purges in --loop */
#define SWEEP_MAX 1000         /* delivered items moved out of the queue per sweep */
#define EXIT_TEMP 75

/* The children's pids by slot (0: free); read by the signal handler. */
static volatile sig_atomic_t children[RELAY_CHILDREN_MAX];

static void
on_signal(int sig)
{
	(void)sig;
	relay_stopping = 1;
	for (size_t i = 0; i < RELAY_CHILDREN_MAX; i++)
		if (children[i] > 0)
			(void)kill((pid_t)children[i], SIGTERM);
}

void
pool_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;      /* no SA_RESTART: waits end early */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* Blocks (or restores) the signals whose handler reads children[]. */
static void
block_signals(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, old);
}

/* Once per process: the indexes the claims use. Only TEMP stops the pass. */
static enum mc_store_status
make_indexes(struct relay_pool *p, struct mc_store *st)
{
	enum mc_store_status s;

	if (p->indexed)
		return MC_STORE_OK;
	if ((s = mc_store_init_indexes(st, NULL, NULL)) == MC_STORE_TEMP)
		return s;
	if (s != MC_STORE_OK)
		mc_log(MC_LOG_WARNING, "cannot create the indexes: %s", mc_store_error(st));
	p->indexed = 1;
	return MC_STORE_OK;
}

/* Delivered items: those left in the queue move out, old ones go. */
static enum mc_store_status
maintain(struct relay_pool *p, struct mc_store *st)
{
	time_t now = time(NULL);
	size_t moved = 0, failed = 0;
	int64_t purged = 0;
	enum mc_store_status s;

	if (p->maintained != 0 && now - p->maintained < MAINTAIN_EVERY)
		return MC_STORE_OK;
	if ((s = mc_store_done_sweep(st, SWEEP_MAX, &moved)) == MC_STORE_OK &&
	    (s = mc_store_done_purge(st, p->cfg->queue_keep_done, &purged)) == MC_STORE_OK)
		s = mc_store_failed_purge(st, p->cfg->queue_keep_done, SWEEP_MAX, &failed);
	if (s == MC_STORE_TEMP)
		return s;
	if (s != MC_STORE_OK)
		mc_log(MC_LOG_WARNING, "delivered items: %s", mc_store_error(st));
	if (moved > 0 || purged > 0)
		mc_log(MC_LOG_INFO, "delivered items: %zu moved out of the queue, %lld purged",
		    moved, (long long)purged);
	if (failed > 0)
		mc_log(MC_LOG_INFO, "failed items: %zu purged (failed more than %us ago)", failed,
		    p->cfg->queue_keep_done);
	p->maintained = now;
	return MC_STORE_OK;
}

/* The store's part of a pass; its connection is closed before any fork. */
static int
prepare(struct relay_pool *p, char (*ids)[MC_ID_LEN + 1], size_t max, size_t *n)
{
	struct mc_store *st = mc_store_new(p->cfg);
	enum mc_store_status s = MC_STORE_TEMP;

	*n = 0;
	if (st != NULL && (s = make_indexes(p, st)) == MC_STORE_OK &&
	    (s = maintain(p, st)) == MC_STORE_OK)
		s = mc_store_outbound_due(st, ids, max, n);
	if (s != MC_STORE_OK)
		mc_log(MC_LOG_ERR, "cannot read the queue: %s",
		    st != NULL ? mc_store_error(st) : "out of memory");
	mc_store_free(st);
	return s == MC_STORE_OK ? 0 : -1;
}

/* In the child: dies with the parent (as one worker), then delivers. */
static int
child(const struct relay_pool *p, pid_t parent, unsigned slot, char (*ids)[MC_ID_LEN + 1],
    const unsigned *slots, size_t n)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		return EXIT_TEMP;
	return relay_child(p->cfg, slot, p->cfg->relay_concurrency, ids, slots, n);
}

static int
spawn(struct relay_pool *p, unsigned slot, char (*ids)[MC_ID_LEN + 1], const unsigned *slots,
    size_t n)
{
	pid_t parent = getpid(), pid;
	sigset_t old;

	block_signals(&old);
	if ((pid = fork()) == 0) {
		for (size_t i = 0; i < RELAY_CHILDREN_MAX; i++)
			children[i] = 0;
		sigprocmask(SIG_SETMASK, &old, NULL);
		exit(child(p, parent, slot, ids, slots, n));
	}
	if (pid > 0) {
		children[slot] = pid;
		p->running++;
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (pid < 0)
		mc_log(MC_LOG_ERR, "fork: %s", strerror(errno));
	return pid < 0 ? -1 : 0;
}

/*
 * Which free slot's child gets each id: the slot it hashes to (as the
 * children's refills share them), or, when that slot's child is still busy,
 * the free slots in turn. Returns the number of free slots.
 */
static unsigned
assign(const struct relay_pool *p, char (*ids)[MC_ID_LEN + 1], size_t n, unsigned *slots)
{
	unsigned nslots = p->cfg->relay_concurrency, free_slot[RELAY_CHILDREN_MAX], nfree = 0;

	for (unsigned s = 0; s < nslots; s++)
		if (children[s] == 0)
			free_slot[nfree++] = s;
	for (size_t i = 0, turn = 0; i < n && nfree > 0; i++) {
		slots[i] = batch_share(ids[i], nslots);
		if (children[slots[i]] != 0)
			slots[i] = free_slot[turn++ % nfree];
	}
	return nfree;
}

/* A child for each free slot that has ids. */
static int
spawn_all(struct relay_pool *p, char (*ids)[MC_ID_LEN + 1], size_t n)
{
	unsigned *slots = calloc(n, sizeof(*slots)), nslots = p->cfg->relay_concurrency;
	int rc = 0;

	if (slots == NULL || assign(p, ids, n, slots) == 0) {
		free(slots);
		return slots == NULL ? -1 : 0;
	}
	for (unsigned s = 0; s < nslots && rc == 0 && !relay_stopping; s++) {
		size_t mine = 0;
		if (children[s] != 0)
			continue;
		for (size_t i = 0; i < n; i++)
			mine += slots[i] == s;
		if (mine > 0)
			rc = spawn(p, s, ids, slots, n);
	}
	free(slots);
	return rc;
}

int
pool_pass(struct relay_pool *p)
{
	unsigned free_slots = p->cfg->relay_concurrency - p->running;
	size_t max = (size_t)RELAY_BATCH * free_slots, n;
	char (*ids)[MC_ID_LEN + 1];
	int rc;

	if (relay_stopping || free_slots == 0)
		return 0;
	if ((ids = calloc(max, sizeof(*ids))) == NULL)
		return -1;
	rc = prepare(p, ids, max, &n);
	if (rc == 0 && n > 0)
		rc = spawn_all(p, ids, n);
	free(ids);
	return rc;
}

/* A child ended: free its slot (signals blocked, so none reaches a stale pid), reap it. */
static void
forget(struct relay_pool *p, pid_t pid)
{
	sigset_t old;
	int status = 0;

	block_signals(&old);
	for (size_t i = 0; i < RELAY_CHILDREN_MAX; i++)
		if (children[i] == pid)
			children[i] = 0;
	(void)waitpid(pid, &status, 0);
	sigprocmask(SIG_SETMASK, &old, NULL);
	p->running--;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return;
	p->failed = 1;
	if (WIFSIGNALED(status))
		mc_log(MC_LOG_ERR, "worker process %ld killed by signal %d", (long)pid,
		    WTERMSIG(status));
}

void
pool_reap(struct relay_pool *p, int all)
{
	while (p->running > 0) {
		siginfo_t si;

		memset(&si, 0, sizeof(si));
		if (waitid(P_ALL, 0, &si, WEXITED | WNOWAIT | (all ? 0 : WNOHANG)) != 0) {
			if (errno == EINTR)
				continue;
			mc_log(MC_LOG_ERR, "waitid: %s", strerror(errno));
			p->running = 0;
			return;
		}
		if (si.si_pid == 0)
			return;         /* none has ended yet */
		forget(p, si.si_pid);
	}
}
