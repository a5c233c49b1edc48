/*
 * connloop.c - session-rate load client of the benchmarks: W worker
 * processes open TCP connections to HOST:PORT one after another for SECONDS
 * and run the shortest possible session on each:
 *   smtp: read the 220 greeting, EHLO, read the 250 reply, QUIT, read 221;
 *   pop3: read the +OK greeting, QUIT, read +OK.
 * Each worker binds its connections to its own loopback source address
 * (127.SRC.W.x, x changing every 8,000 connections) so that the sockets left
 * in TIME_WAIT by earlier runs never run out of ports.
 *
 *   connloop smtp|pop3 HOST PORT WORKERS SECONDS SRC
 *
 * prints one line: sessions=N errors=E seconds=T rate=R p50_ms=A p99_ms=B
 * (rate in sessions per second over all workers, latencies per session).
 * Built by bench/bench.mk into build/bench/connloop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 64
#define MAX_SAMPLES 200000
#define IO_TIMEOUT_MS 10000

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads until the buffer holds a final reply line (prefix, then a space for
 * SMTP; "+OK"/"-ERR" for POP3); 0 when its status is good. */
static int
read_reply(int fd, int smtp, const char *good)
{
	char buf[4096];
	size_t have = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, IO_TIMEOUT_MS) <= 0)
			return -1;
		ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		/* the last complete line */
		if (have < 2 || buf[have - 1] != '\n') {
			if (have >= sizeof(buf) - 1)
				return -1;
			continue;
		}
		char *last = buf + have - 1;
		*last = '\0';
		char *start = strrchr(buf, '\n');
		start = start ? start + 1 : buf;
		if (smtp) {
			if (strlen(start) >= 4 && start[3] == '-') {
				*last = '\n';
				if (have >= sizeof(buf) - 256)
					have = 0; /* long multi-line reply: keep reading */
				continue;
			}
		}
		return strncmp(start, good, strlen(good)) == 0 ? 0 : -1;
	}
}

static int
say(int fd, const char *s)
{
	size_t len = strlen(s);

	return write(fd, s, len) == (ssize_t)len ? 0 : -1;
}

static int
one_session(const struct sockaddr_in *dst, const struct sockaddr_in *src, int smtp)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1, rc = -1;

	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)src, sizeof(*src)) != 0)
		goto out;
	if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) != 0)
		goto out;
	if (smtp) {
		if (read_reply(fd, 1, "220") || say(fd, "EHLO bench.test\r\n") ||
		    read_reply(fd, 1, "250") || say(fd, "QUIT\r\n") || read_reply(fd, 1, "221"))
			goto out;
	} else {
		if (read_reply(fd, 0, "+OK") || say(fd, "QUIT\r\n") || read_reply(fd, 0, "+OK"))
			goto out;
	}
	rc = 0;
out:
	close(fd);
	return rc;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
	struct sockaddr_in dst;
	int workers, smtp, srcnet, fds[MAX_WORKERS][2];
	double seconds, t0, t1;
	pid_t pids[MAX_WORKERS];

	if (argc != 7) {
		fprintf(stderr, "usage: connloop smtp|pop3 HOST PORT WORKERS SECONDS SRC\n");
		return 2;
	}
	smtp = strcmp(argv[1], "smtp") == 0;
	memset(&dst, 0, sizeof(dst));
	dst.sin_family = AF_INET;
	dst.sin_port = htons((unsigned short)atoi(argv[3]));
	if (inet_pton(AF_INET, argv[2], &dst.sin_addr) != 1)
		return 2;
	workers = atoi(argv[4]);
	seconds = atof(argv[5]);
	srcnet = atoi(argv[6]);
	if (workers < 1 || workers > MAX_WORKERS || seconds <= 0 || srcnet < 1 || srcnet > 254)
		return 2;
	signal(SIGPIPE, SIG_IGN);

	t0 = now();
	for (int w = 0; w < workers; w++) {
		if (pipe(fds[w]) != 0 || (pids[w] = fork()) < 0)
			return 1;
		if (pids[w] == 0) {
			static double lat[MAX_SAMPLES];
			long done = 0, errors = 0;
			double end = t0 + seconds;
			struct sockaddr_in src;

			close(fds[w][0]);
			memset(&src, 0, sizeof(src));
			src.sin_family = AF_INET;
			while (now() < end) {
				double s = now();
				src.sin_addr.s_addr = htonl((127u << 24) | ((unsigned)srcnet << 16) |
				    ((unsigned)w << 8) | (unsigned)(1 + (done / 8000) % 250));
				if (one_session(&dst, &src, smtp) == 0) {
					if (done < MAX_SAMPLES)
						lat[done] = now() - s;
					done++;
				} else if (++errors > 100) {
					break;
				}
			}
			/* Send back: count, errors, then the samples. */
			long n = done < MAX_SAMPLES ? done : MAX_SAMPLES;
			FILE *f = fdopen(fds[w][1], "w");
			fwrite(&done, sizeof(done), 1, f);
			fwrite(&errors, sizeof(errors), 1, f);
			fwrite(&n, sizeof(n), 1, f);
			fwrite(lat, sizeof(double), (size_t)n, f);
			fclose(f);
			_exit(0);
		}
		close(fds[w][1]);
	}

	long total = 0, errors = 0, nsamples = 0;
	double *all = malloc(sizeof(double) * (size_t)MAX_SAMPLES * (size_t)workers);
	if (all == NULL)
		return 1;
	for (int w = 0; w < workers; w++) {
		FILE *f = fdopen(fds[w][0], "r");
		long done = 0, err = 0, n = 0;
		if (fread(&done, sizeof(done), 1, f) != 1 || fread(&err, sizeof(err), 1, f) != 1 ||
		    fread(&n, sizeof(n), 1, f) != 1 ||
		    fread(all + nsamples, sizeof(double), (size_t)n, f) != (size_t)n)
			errors += 1000;
		total += done;
		errors += err;
		nsamples += n;
		fclose(f);
	}
	for (int w = 0; w < workers; w++)
		waitpid(pids[w], NULL, 0);
	t1 = now();
	qsort(all, (size_t)nsamples, sizeof(double), cmp_double);
	double p50 = nsamples ? all[nsamples / 2] : 0;
	double p99 = nsamples ? all[(long)((double)nsamples * 0.99)] : 0;
	printf("sessions=%ld errors=%ld seconds=%.3f rate=%.1f p50_ms=%.3f p99_ms=%.3f\n",
	    total, errors, t1 - t0, (double)total / (t1 - t0), p50 * 1e3, p99 * 1e3);
	free(all);
	return errors > 100 ? 1 : 0;
}
