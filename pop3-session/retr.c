/*
 * retr.c - RETR and TOP: the body streams from the store in fixed chunks,
 * dot-stuffed on the way out (RFC 1939 3), so memory stays flat for any size.
 * TOP stops after the header, the blank line and the first n body lines.
 */
#include "pop3.h"

#include <string.h>

#include "log.h"

struct stuffer {
	struct mc_io *io;
	size_t line_octets;   /* octets of the current line so far, LF excluded */
	unsigned char last;   /* the last octet of the current line */
	int in_header;
	long body_lines;      /* TOP: body lines still wanted; < 0: everything (RETR) */
	int done;
};

/* A line ended; returns 1 when TOP has sent everything it should. */
static int
end_of_line(struct stuffer *s, int empty)
{
	if (s->body_lines < 0)
		return 0;
	if (s->in_header) {
		if (empty) {
			s->in_header = 0;
			return s->body_lines == 0;
		}
		return 0;
	}
	return --s->body_lines <= 0;
}

/* Writes buf dot-stuffed; stops early once TOP is done. -1 on a write error. */
static int
stuff(struct stuffer *s, const unsigned char *buf, size_t n)
{
	size_t from = 0, i;

	for (i = 0; i < n && !s->done; i++) {
		unsigned char c = buf[i];
		int empty;

		if (s->line_octets == 0 && c == '.') {
			if (mc_io_write(s->io, buf + from, i - from) != MC_IO_OK ||
			    mc_io_write(s->io, ".", 1) != MC_IO_OK)
				return -1;
			from = i;
		}
		if (c != '\n') {
			s->line_octets++;
			s->last = c;
			continue;
		}
		empty = s->line_octets == 0 || (s->line_octets == 1 && s->last == '\r');
		s->line_octets = 0;
		s->done = end_of_line(s, empty);
	}
	return mc_io_write(s->io, buf + from, i - from) == MC_IO_OK ? 0 : -1;
}

int
pop3_send_message(struct pop3 *p, const struct msg *m, long lines)
{
	struct mc_body_reader *r;
	struct stuffer s = { p->io, 0, 0, 1, lines, 0 };
	unsigned char buf[16384];
	size_t got;
	enum mc_store_status st = m->listed
	    ? mc_store_entry_open(p->st, m->body, m->head, m->size, &r)
	    : mc_store_message_open(p->st, m->id, &r);

	if (st != MC_STORE_OK) {
		mc_log(MC_LOG_ERR, "message %s: %s", m->id, mc_store_error(p->st));
		mc_io_printf(p->io, "-ERR [SYS/TEMP] message cannot be read now, try again later\r\n");
		return 0;
	}
	if (lines < 0)
		mc_io_printf(p->io, "+OK %llu octets\r\n", (unsigned long long)m->size);
	else
		mc_io_printf(p->io, "+OK top of message follows\r\n");
	do {
		st = mc_store_body_read(r, buf, sizeof(buf), &got);
		if (st != MC_STORE_OK || stuff(&s, buf, got) != 0) {
			/* Cannot finish the answer: end the session without the final ".". */
			mc_log(MC_LOG_ERR, "message %s: sending failed: %s", m->id,
			    st != MC_STORE_OK ? mc_store_error(p->st) : mc_io_last_error(p->io));
			mc_store_body_close(r);
			return -1;
		}
	} while (got > 0 && !s.done);
	mc_store_body_close(r);
	if (s.line_octets > 0)
		mc_io_write(p->io, "\r\n", 2);
	mc_io_write(p->io, ".\r\n", 3);
	return 0;
}
