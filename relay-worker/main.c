/*
 * main.c - bin/relay-worker [-c FILE] [--once | --loop SECONDS]: drains the
 * outbound queue with up to relay_concurrency worker processes (pool.c).
 * --once delivers what is due and exits (a systemd timer or path unit
 * starts it); --loop N keeps going, waking every N seconds and as soon as a
 * session touches the trigger file, and tells systemd it is ready.
 */
#include "relay.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "dsn.h"
#include "log.h"

#define EXIT_TEMP 75

struct options {
	const char *config;
	int loop;
	unsigned seconds;
};

static int
usage(void)
{
	fputs("usage: relay-worker [-c FILE] [--once | --loop SECONDS]\n", stderr);
	return 2;
}

static int
parse_args(int argc, char **argv, struct options *o)
{
	memset(o, 0, sizeof(*o));
	for (int i = 1; i < argc; i++) {
		char *end;
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			o->config = argv[++i];
		} else if (strcmp(argv[i], "--once") == 0) {
			o->loop = 0;
		} else if (strcmp(argv[i], "--loop") == 0 && i + 1 < argc) {
			unsigned long n = strtoul(argv[++i], &end, 10);
			if (*end != '\0' || n == 0 || n > 86400)
				return -1;
			o->loop = 1;
			o->seconds = (unsigned)n;
		} else {
			return -1;
		}
	}
	return 0;
}

/*
 * Watches the trigger file's directory for the file being touched; -1 when
 * there is no trigger (the timer alone wakes the loop).
 */
static int
watch_trigger(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd;

	if (path == NULL || *path == '\0' || strlen(path) >= sizeof(dir))
		return -1;
	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if ((fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) < 0)
		return -1;
	if (inotify_add_watch(fd, dir, IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE | IN_MOVED_TO) < 0) {
		mc_log(MC_LOG_WARNING, "cannot watch %s: %s; waking on the timer only", dir,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Waits until the timer runs out, the trigger is touched, or a signal. */
static void
wait_for_work(int ifd, unsigned seconds)
{
	struct pollfd p = { ifd, POLLIN, 0 };
	char buf[4096];

	if (ifd < 0) {
		struct timespec ts = { (time_t)seconds, 0 };
		nanosleep(&ts, NULL);
		return;
	}
	if (poll(&p, 1, (int)seconds * 1000) > 0)
		while (read(ifd, buf, sizeof(buf)) > 0)
			;
}

/* --once: one pass, and wait for its children. */
static int
run_once(struct relay_pool *p)
{
	int rc = pool_pass(p);

	pool_reap(p, 1);
	return rc < 0 || p->failed ? EXIT_TEMP : 0;
}

/* --loop: a pass at every wake (children still busy keep their slots). */
static int
run_loop(struct relay_pool *p, const struct options *o)
{
	int ifd = watch_trigger(p->cfg->relay_trigger), failed = 0;

	sd_notify(0, "READY=1\nSTATUS=waiting for queued mail");
	while (!relay_stopping) {
		int bad;

		pool_reap(p, 0);
		bad = pool_pass(p) < 0 || p->failed;
		p->failed = 0;
		if (bad && !failed)
			sd_notify(0, "STATUS=database unavailable; retrying");
		else if (!bad && failed)
			sd_notify(0, "STATUS=waiting for queued mail");
		failed = bad;
		if (!relay_stopping)
			wait_for_work(ifd, o->seconds);
	}
	sd_notify(0, "STOPPING=1");
	pool_reap(p, 1);
	if (ifd >= 0)
		close(ifd);
	return 0;
}

int
main(int argc, char **argv)
{
	struct options o;
	struct mc_config cfg;
	struct relay_pool p;
	char err[512];
	int rc;

	if (parse_args(argc, argv, &o) != 0)
		return usage();
	if (mc_config_load(&cfg, o.config, err, sizeof(err)) != 0) {
		fprintf(stderr, "relay-worker: %s\n", err);
		return 1;
	}
	mc_log_init("relay-worker", cfg.log_target, cfg.log_debug);
	if (dsn_templates_check(cfg.templates_dir, err, sizeof(err)) != 0) {
		mc_log(MC_LOG_ERR, "templates: %s", err);
		fprintf(stderr, "relay-worker: templates: %s\n", err);
		mc_config_free(&cfg);
		return 1;
	}
	pool_signals();
	memset(&p, 0, sizeof(p));
	p.cfg = &cfg;
	rc = o.loop ? run_loop(&p, &o) : run_once(&p);
	mc_config_free(&cfg);
	return rc;
}
