/*
 * fuzz_template.c - libFuzzer harness (6): the template renderer, mc_tpl_parse
 * from a buffer (with the DSN names and without) and mc_tpl_render as text and
 * HTML, with its output bound checked.
 */
/*
 * The input is a template, optionally followed by a NUL and lines that add
 * values to a DSN-like context: "name=value", "list.field=value" (the list's
 * last record), "+list" (a new record; at most 2 per list, which keeps nested
 * {{#each}} from multiplying without bound).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "template.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_OUT (1 << 20)
#define MAX_RECORDS 2
#define MAX_LISTS 32

/* The names the DSN templates may use (relay-worker/dsn.c). */
static const char *const dsn_names[] = {
	"hostname", "sender", "queue_id", "arrival_date", "date", "retry_until",
	"delayed", "subject", "nrecipients", "recipients_omitted", "log_omitted",
	"recipients.address", "recipients.action", "recipients.status",
	"recipients.status_text", "recipients.remote_mta", "recipients.diagnostic",
	"recipients.last_attempt", "recipients.failed", "recipients.delayed",
	"log.time", "log.command", "log.reply", "log.lines.line",
	NULL
};

/* Lists made so far: their full path, last record and record count. */
struct lists {
	struct { char path[128]; struct mc_tpl_ctx *last; int count; } l[MAX_LISTS];
	size_t n;
};

static struct mc_tpl_ctx *record(struct mc_tpl_ctx *root, struct lists *ls,
    const char *path, int fresh);

/* Lists below path ("path.x...") have no current record any more. */
static void
forget_inner(struct lists *ls, const char *path)
{
	size_t plen = strlen(path);

	for (size_t k = 0; k < ls->n; k++)
		if (strncmp(ls->l[k].path, path, plen) == 0 && ls->l[k].path[plen] == '.')
			ls->l[k].count = 0, ls->l[k].last = NULL;
}

/* The list path itself and those below it are gone. */
static void
forget(struct lists *ls, const char *path)
{
	for (size_t k = 0; k < ls->n; k++)
		if (strcmp(ls->l[k].path, path) == 0)
			ls->l[k].count = 0, ls->l[k].last = NULL;
	forget_inner(ls, path);
}

/* The context holding path's last component: root, or a list's last record. */
static struct mc_tpl_ctx *
parent_of(struct mc_tpl_ctx *root, struct lists *ls, const char *path, const char **leaf)
{
	const char *dot = strrchr(path, '.');
	char list[128];

	*leaf = dot ? dot + 1 : path;
	if (dot == NULL)
		return root;
	if ((size_t)(dot - path) >= sizeof(list))
		return NULL;
	memcpy(list, path, (size_t)(dot - path));
	list[dot - path] = '\0';
	return record(root, ls, list, 0);
}

/* The last record of list `path` (a new one if fresh or none yet). */
static struct mc_tpl_ctx *
record(struct mc_tpl_ctx *root, struct lists *ls, const char *path, int fresh)
{
	size_t i, plen = strlen(path);
	struct mc_tpl_ctx *parent, *rec;
	const char *leaf;

	for (i = 0; i < ls->n && strcmp(ls->l[i].path, path) != 0; i++)
		;
	if (i < ls->n && ls->l[i].last != NULL && (!fresh || ls->l[i].count >= MAX_RECORDS))
		return ls->l[i].last;
	if (plen == 0 || plen >= sizeof(ls->l[0].path) ||
	    (parent = parent_of(root, ls, path, &leaf)) == NULL)
		return NULL;
	/* The parent's lookup may have added lists: find ours again. */
	for (i = 0; i < ls->n && strcmp(ls->l[i].path, path) != 0; i++)
		;
	if (i == ls->n) {
		if (ls->n == MAX_LISTS)
			return NULL;
		memcpy(ls->l[i].path, path, plen + 1);
		ls->l[i].count = 0;
		ls->n++;
	}
	if ((rec = mc_tpl_add(parent, leaf)) == NULL)
		return NULL;
	ls->l[i].last = rec;
	ls->l[i].count++;
	forget_inner(ls, path);   /* lists inside the old record are not the new one's */
	return rec;
}

static void
spec_line(struct mc_tpl_ctx *root, struct lists *ls, char *line)
{
	char *eq = strchr(line, '=');
	struct mc_tpl_ctx *ctx;
	const char *leaf;

	if (line[0] == '+') {
		(void)record(root, ls, line + 1, 1);
		return;
	}
	if (eq == NULL)
		return;
	*eq = '\0';
	if ((ctx = parent_of(root, ls, line, &leaf)) == NULL)
		return;
	/* A string replacing a list frees its records: forget them (and theirs). */
	forget(ls, line);
	mc_tpl_set(ctx, leaf, eq + 1);
}

static struct mc_tpl_ctx *
context(const char *spec, size_t len)
{
	static const char defaults[] =
	    "hostname=mx.example.test\nsender=<a&b@example.org> \"x\" 'y'\nqueue_id=0123abcd\n"
	    "arrival_date=Mon, 1 Jan 2024 00:00:00 +0000\ndelayed=\nsubject=Re: <test>\n"
	    "+recipients\nrecipients.address=bob@example.net\nrecipients.status=5.1.1\n"
	    "recipients.failed=yes\nrecipients.diagnostic=550 5.1.1 <bob@example.net>: unknown\n"
	    "+recipients\nrecipients.address=carol@example.net\nrecipients.delayed=yes\n"
	    "+log\nlog.time=00:00:01\nlog.command=RCPT TO:<bob@example.net>\n+log.lines\n"
	    "log.lines.line=550 5.1.1 unknown\n+log.lines\nlog.lines.line=550 & more\n"
	    "+log\nlog.time=00:00:02\nlog.reply=221 bye\n";
	struct mc_tpl_ctx *root = mc_tpl_ctx_new();
	struct lists ls;
	char line[512];
	const char *parts[2] = { defaults, spec };
	size_t lens[2] = { sizeof(defaults) - 1, len };

	if (root == NULL)
		return NULL;
	memset(&ls, 0, sizeof(ls));
	for (int k = 0; k < 2; k++) {
		const char *p = parts[k], *end = p + lens[k];
		while (p < end) {
			size_t n = 0;
			while (p + n < end && p[n] != '\n' && p[n] != '\0')
				n++;
			snprintf(line, sizeof(line), "%.*s", (int)n, p);
			spec_line(root, &ls, line);
			p += n + 1;
		}
	}
	return root;
}

/* Renders t; checks the output bound on the way. The length, or -1. */
static long
render(const struct mc_tpl *t, const struct mc_tpl_ctx *ctx, char **out)
{
	char err[256], *small = NULL;
	size_t len, slen;

	if (mc_tpl_render(t, ctx, MAX_OUT, out, &len, err, sizeof(err)) != 0) {
		if (*out != NULL || err[0] == '\0')
			fuzz_fail("a failed render left output or no error", err, strlen(err));
		return -1;
	}
	if (*out == NULL || strlen(*out) != len || len > MAX_OUT)
		fuzz_fail("rendered length is wrong", *out ? *out : "", len);
	if (len > 0 && mc_tpl_render(t, ctx, len - 1, &small, &slen, err, sizeof(err)) == 0)
		fuzz_fail("render ignored its output bound", small, slen);
	free(small);
	if (mc_tpl_render(t, ctx, len, &small, &slen, err, sizeof(err)) != 0 || slen != len ||
	    memcmp(small, *out, len) != 0)
		fuzz_fail("render with an exact bound differs", err, strlen(err));
	free(small);
	return (long)len;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data, *nul = memchr(data, '\0', size);
	size_t tlen = nul ? (size_t)(nul - text) : size;
	char err[256];
	struct mc_tpl *known, *any, *html;
	struct mc_tpl_ctx *ctx;
	char *tout = NULL, *hout = NULL;
	long tl, hl;

	fuzz_init();
	known = mc_tpl_parse("fuzz.txt", text, tlen, MC_TPL_TEXT, dsn_names, err, sizeof(err));
	any = mc_tpl_parse("fuzz.txt", text, tlen, MC_TPL_TEXT, NULL, err, sizeof(err));
	html = mc_tpl_parse("fuzz.html", text, tlen, MC_TPL_HTML, NULL, err, sizeof(err));
	if (known != NULL && any == NULL)
		fuzz_fail("parses with the known names but not without", text, tlen);
	if ((any == NULL) != (html == NULL))
		fuzz_fail("text and HTML parse differently", text, tlen);
	if (any != NULL && (ctx = context(nul ? nul + 1 : "", nul ? size - tlen - 1 : 0)) != NULL) {
		if (mc_tpl_ctx_failed(ctx))
			abort();
		tl = render(any, ctx, &tout);
		hl = render(html, ctx, &hout);
		if (tl >= 0 && hl >= 0 && hl < tl)
			fuzz_fail("HTML escaping made the output shorter", text, tlen);
		if (known != NULL) {
			char *kout = NULL;
			if (render(known, ctx, &kout) != tl || (tl >= 0 && memcmp(kout, tout, (size_t)tl)))
				fuzz_fail("the known-names parse renders differently", text, tlen);
			free(kout);
		}
		free(tout);
		free(hout);
		mc_tpl_ctx_free(ctx);
	}
	mc_tpl_free(known);
	mc_tpl_free(any);
	mc_tpl_free(html);
	return 0;
}
