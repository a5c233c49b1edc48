/*
 * spawnloop.c - start-up timing of the benchmarks: runs a session program N
 * times, one after another, on pipes (fd 0 and fd 1; fd 2 to /dev/null), the
 * way `printf 'EHLO x\r\nQUIT\r\n' | bin/smtp-session` does, and times
 *   - exec to greeting: from just before fork() until the first byte of
 *     output arrives (exec, dynamic linking, constructors, configuration,
 *     the greeting);
 *   - the whole session: until the program has exited and been reaped,
 *     after INPUT (C escapes \r \n allowed) was written once the greeting came.
 *
 *   spawnloop N INPUT PROGRAM [ARG...]   (INPUT up to 64 KB, then EOF)
 *
 * prints: runs=N greet_p50_ms=A greet_mean_ms=B session_p50_ms=C
 * session_mean_ms=D cpu_ms=E failures=F (cpu_ms: user+system CPU time of a
 * session, the mean over the runs, from getrusage(RUSAGE_CHILDREN)). Built by bench/bench.mk into build/bench/spawnloop.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t
unescape(const char *in, char *out, size_t max)
{
	size_t n = 0;

	for (; *in && n < max; in++) {
		if (in[0] == '\\' && in[1] == 'r') {
			out[n++] = '\r';
			in++;
		} else if (in[0] == '\\' && in[1] == 'n') {
			out[n++] = '\n';
			in++;
		} else {
			out[n++] = *in;
		}
	}
	return n;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* One run; greeting and session times in seconds; 0 on success. */
static int
one_run(char **argv, const char *input, size_t inlen, double *greet, double *total)
{
	int in[2], out[2], status, devnull;
	char buf[8192];
	double t0 = now();
	pid_t pid;
	int got_first = 0;

	if (pipe(in) != 0 || pipe(out) != 0)
		return -1;
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0) {
		devnull = open("/dev/null", O_WRONLY);
		dup2(in[0], 0);
		dup2(out[1], 1);
		if (devnull >= 0)
			dup2(devnull, 2);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	for (;;) {
		struct pollfd p = { .fd = out[0], .events = POLLIN };
		if (poll(&p, 1, 10000) <= 0)
			break;
		ssize_t n = read(out[0], buf, sizeof(buf));
		if (n <= 0)
			break;
		if (!got_first) {
			got_first = 1;
			*greet = now() - t0;
			if (write(in[1], input, inlen) != (ssize_t)inlen)
				break;
			close(in[1]);	/* all the input there is: EOF after it */
			in[1] = -1;
		}
	}
	if (in[1] >= 0)
		close(in[1]);
	close(out[0]);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	*total = now() - t0;
	return got_first && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static char input[65536];
	size_t inlen;
	int n, failures = 0, ok = 0;
	double *g, *t, gsum = 0, tsum = 0;

	if (argc < 4 || (n = atoi(argv[1])) <= 0) {
		fprintf(stderr, "usage: spawnloop N INPUT PROGRAM [ARG...]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	inlen = unescape(argv[2], input, sizeof(input));
	struct rusage ru0, ru1;
	getrusage(RUSAGE_CHILDREN, &ru0);
	g = calloc((size_t)n, sizeof(double));
	t = calloc((size_t)n, sizeof(double));
	if (g == NULL || t == NULL)
		return 1;
	for (int i = 0; i < n; i++) {
		double gi = 0, ti = 0;
		if (one_run(argv + 3, input, inlen, &gi, &ti) != 0) {
			if (++failures > 5)
				break;
			continue;
		}
		g[ok] = gi;
		t[ok] = ti;
		gsum += gi;
		tsum += ti;
		ok++;
	}
	if (ok == 0) {
		printf("runs=0 failures=%d\n", failures);
		return 1;
	}
	getrusage(RUSAGE_CHILDREN, &ru1);
	double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec -
	    ru0.ru_stime.tv_sec) + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec +
	    ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
	qsort(g, (size_t)ok, sizeof(double), cmp_double);
	qsort(t, (size_t)ok, sizeof(double), cmp_double);
	printf("runs=%d greet_p50_ms=%.3f greet_mean_ms=%.3f session_p50_ms=%.3f "
	    "session_mean_ms=%.3f cpu_ms=%.3f failures=%d\n", ok, g[ok / 2] * 1e3, gsum / ok * 1e3,
	    t[ok / 2] * 1e3, tsum / ok * 1e3, cpu / (ok + failures) * 1e3, failures);
	return failures ? 1 : 0;
}
