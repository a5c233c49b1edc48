/*
 * template.c - parses a template into a flat list of nodes (sections jump to
 * their {{else}}/{{/..}}), checks its names against a known list, and renders
 * it with a context of strings and lists of records into a bounded buffer.
 */
#include "template.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_NODES 16384
#define PATH_MAX_ 256       /* "list.list.field" while checking names */

enum node_kind { N_TEXT, N_VAR, N_IF, N_EACH, N_ELSE, N_END };

struct node {
	enum node_kind kind;
	size_t off, len;            /* N_TEXT: its octets in src */
	char name[MC_TPL_NAME_MAX]; /* N_VAR, N_IF, N_EACH */
	size_t else_at;             /* N_IF: index of its N_ELSE, 0 if none */
	size_t end_at;              /* N_IF, N_EACH: index of their N_END */
};

struct mc_tpl {
	char *src;
	size_t srclen;
	enum mc_tpl_kind kind;
	struct node *nodes;
	size_t nnodes, cap;
};

struct open_section {
	size_t node;                /* its N_IF or N_EACH */
	unsigned line;
	char path[PATH_MAX_];       /* N_EACH: the list's full name and "." */
};

struct parser {
	const char *name;           /* for errors */
	const char *src;
	size_t len, pos;
	unsigned line;              /* the line at pos */
	const char *const *known;
	struct mc_tpl *t;
	struct open_section open[MC_TPL_MAX_DEPTH];
	size_t depth;
	char *err;
	size_t errlen;
};

struct var {
	char *name;
	char *value;                /* NULL for a list */
	struct mc_tpl_ctx **items;
	size_t nitems, cap;
};

struct mc_tpl_ctx {
	struct var *vars;
	size_t nvars, cap;
	struct mc_tpl_ctx *root;    /* whose `failed` records a failed allocation */
	int failed;
};

struct out {
	char *p;
	size_t len, cap, max;
	int over, oom;
};

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int
perr(struct parser *p, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "name:LINE: what" into the parser's err; returns -1. */
static int
perr(struct parser *p, unsigned line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	seterr(p->err, p->errlen, "%s:%u: %s", p->name, line, msg);
	return -1;
}

static unsigned
count_nl(const char *s, size_t from, size_t to)
{
	unsigned n = 0;

	for (size_t i = from; i < to; i++)
		if (s[i] == '\n')
			n++;
	return n;
}

static int
valid_name(const char *s, size_t n)
{
	if (n == 0 || n >= MC_TPL_NAME_MAX)
		return 0;
	if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z')))
		return 0;
	for (size_t i = 1; i < n; i++) {
		char c = s[i];
		if (!(c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

/* Appends a node; its index, or -1 (with err) when full or out of memory. */
static long
push_node(struct parser *p, enum node_kind kind, unsigned line)
{
	struct mc_tpl *t = p->t;

	if (t->nnodes >= MAX_NODES)
		return perr(p, line, "too many tags and text pieces (at most %d)", MAX_NODES);
	if (t->nnodes == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct node *n = realloc(t->nodes, cap * sizeof(*n));
		if (n == NULL)
			return perr(p, line, "out of memory");
		t->nodes = n;
		t->cap = cap;
	}
	memset(&t->nodes[t->nnodes], 0, sizeof(t->nodes[0]));
	t->nodes[t->nnodes].kind = kind;
	return (long)t->nnodes++;
}

/* 1 if `full` is a known string, 2 if a known list, 0 if unknown. */
static int
known_kind(const char *const *known, const char *full)
{
	size_t n = strlen(full);
	int kind = 0;

	for (; *known != NULL; known++) {
		if (strcmp(*known, full) == 0)
			return 1;
		if (strncmp(*known, full, n) == 0 && (*known)[n] == '.')
			kind = 2;
	}
	return kind;
}

/*
 * Looks name up as the renderer will: the fields of the innermost #each
 * first, then outwards, then the top level. Its kind (see known_kind), with
 * its full name in full.
 */
static int
resolve(const struct parser *p, const char *name, char *full, size_t fullsize)
{
	size_t i = p->depth + 1;

	while (i-- > 0) {
		const char *prefix = "";
		int k;

		if (i > 0) {
			const struct open_section *o = &p->open[i - 1];
			if (p->t->nodes[o->node].kind != N_EACH)
				continue;
			prefix = o->path;
		}
		if ((size_t)snprintf(full, fullsize, "%s%s", prefix, name) >= fullsize)
			continue;
		k = known_kind(p->known, full);
		if (k != 0)
			return k;
	}
	return 0;
}

/* Checks a name's use against the known list (if any); 0 or -1. */
static int
check_name(struct parser *p, enum node_kind kind, const char *name, unsigned line,
    char *full, size_t fullsize)
{
	int k;

	if (p->known == NULL) {
		snprintf(full, fullsize, "%s", name);
		return 0;
	}
	k = resolve(p, name, full, fullsize);
	if (k == 0)
		return perr(p, line, "unknown variable '%s'", name);
	if (kind == N_VAR && k == 2)
		return perr(p, line, "'%s' is a list: use {{#each %s}}", name, name);
	if (kind == N_EACH && k == 1)
		return perr(p, line, "'%s' is not a list: {{#each}} needs one", name);
	return 0;
}

static int
emit_text(struct parser *p, size_t from, size_t to)
{
	long i;

	if (to <= from)
		return 0;
	if ((i = push_node(p, N_TEXT, p->line)) < 0)
		return -1;
	p->t->nodes[i].off = from;
	p->t->nodes[i].len = to - from;
	return 0;
}

/* {{name}}, {{#if name}} or {{#each name}}: a node and, for sections, a level. */
static int
open_named(struct parser *p, enum node_kind kind, const char *s, size_t n, unsigned line)
{
	char name[MC_TPL_NAME_MAX], full[PATH_MAX_];
	struct open_section *o;
	long i;

	if (!valid_name(s, n))
		return perr(p, line, "bad variable name '%.*s'", (int)(n > 40 ? 40 : n), s);
	memcpy(name, s, n);
	name[n] = '\0';
	if (check_name(p, kind, name, line, full, sizeof(full)) != 0)
		return -1;
	if (kind != N_VAR && p->depth >= MC_TPL_MAX_DEPTH)
		return perr(p, line, "sections nested deeper than %d", MC_TPL_MAX_DEPTH);
	if ((i = push_node(p, kind, line)) < 0)
		return -1;
	memcpy(p->t->nodes[i].name, name, n + 1);
	if (kind == N_VAR)
		return 0;
	o = &p->open[p->depth++];
	o->node = (size_t)i;
	o->line = line;
	if ((size_t)snprintf(o->path, sizeof(o->path), "%s.", full) >= sizeof(o->path))
		return perr(p, line, "names nested too deep");
	return 0;
}

static const char *
section_word(enum node_kind kind)
{
	return kind == N_IF ? "if" : "each";
}

static int
parse_else(struct parser *p, unsigned line)
{
	struct node *top;
	long i;

	if (p->depth == 0 || p->t->nodes[p->open[p->depth - 1].node].kind != N_IF)
		return perr(p, line, "{{else}} outside {{#if}}");
	if (p->t->nodes[p->open[p->depth - 1].node].else_at != 0)
		return perr(p, line, "a second {{else}} in one {{#if}}");
	if ((i = push_node(p, N_ELSE, line)) < 0)
		return -1;
	top = &p->t->nodes[p->open[p->depth - 1].node];
	top->else_at = (size_t)i;
	return 0;
}

static int
parse_close(struct parser *p, const char *s, size_t n, unsigned line)
{
	enum node_kind kind;
	struct open_section *o;
	long i;

	if (n == 2 && memcmp(s, "if", 2) == 0)
		kind = N_IF;
	else if (n == 4 && memcmp(s, "each", 4) == 0)
		kind = N_EACH;
	else
		return perr(p, line, "unknown closing tag '{{/%.*s}}'", (int)(n > 40 ? 40 : n), s);
	if (p->depth == 0)
		return perr(p, line, "{{/%s}} without an open {{#%s}}", section_word(kind),
		    section_word(kind));
	o = &p->open[p->depth - 1];
	if (p->t->nodes[o->node].kind != kind)
		return perr(p, line, "{{/%s}} closes {{#%s %s}} opened at line %u",
		    section_word(kind), section_word(p->t->nodes[o->node].kind),
		    p->t->nodes[o->node].name, o->line);
	if ((i = push_node(p, N_END, line)) < 0)
		return -1;
	p->t->nodes[o->node].end_at = (size_t)i;
	p->depth--;
	return 0;
}

/* {{#if name}} / {{#each name}}: s is what follows the '#'. */
static int
parse_open(struct parser *p, const char *s, size_t n, unsigned line)
{
	size_t w = 0, r;

	while (w < n && s[w] != ' ' && s[w] != '\t')
		w++;
	r = w;
	while (r < n && (s[r] == ' ' || s[r] == '\t'))
		r++;
	if (w == 2 && memcmp(s, "if", 2) == 0)
		return open_named(p, N_IF, s + r, n - r, line);
	if (w == 4 && memcmp(s, "each", 4) == 0)
		return open_named(p, N_EACH, s + r, n - r, line);
	return perr(p, line, "unknown section '{{#%.*s}}'", (int)(w > 40 ? 40 : w), s);
}

/* One tag's inside, spaces trimmed. */
static int
parse_tag(struct parser *p, const char *s, size_t n, unsigned line)
{
	if (n == 0)
		return perr(p, line, "empty tag {{}}");
	if (s[0] == '!')
		return 0;
	if (s[0] == '#')
		return parse_open(p, s + 1, n - 1, line);
	if (s[0] == '/')
		return parse_close(p, s + 1, n - 1, line);
	if (n == 4 && memcmp(s, "else", 4) == 0)
		return parse_else(p, line);
	return open_named(p, N_VAR, s, n, line);
}

static int
is_block_tag(const char *s, size_t n)
{
	return n > 0 && (s[0] == '#' || s[0] == '/' || s[0] == '!' ||
	    (n == 4 && memcmp(s, "else", 4) == 0));
}

/*
 * A block tag alone on its line (only blanks around it) takes the line with
 * it: returns 1 with the start of that line and the position after its end.
 */
static int
standalone(const struct parser *p, size_t tag_at, size_t after, size_t *ls, size_t *next)
{
	size_t a = tag_at, b = after;

	while (a > 0 && (p->src[a - 1] == ' ' || p->src[a - 1] == '\t'))
		a--;
	if (a > 0 && p->src[a - 1] != '\n')
		return 0;
	while (b < p->len && (p->src[b] == ' ' || p->src[b] == '\t'))
		b++;
	if (b < p->len && p->src[b] == '\r' && b + 1 < p->len && p->src[b + 1] == '\n')
		b++;
	if (b < p->len && p->src[b] != '\n')
		return 0;
	*ls = a;
	*next = b < p->len ? b + 1 : b;
	return 1;
}

/* Handles the tag starting at tag_at ("{{"); advances pos past it. */
static int
parse_one(struct parser *p, size_t tag_at)
{
	const char *s = p->src, *close;
	size_t in, inlen, after, ls, next, text_end = tag_at;
	unsigned line = p->line + count_nl(s, p->pos, tag_at);

	close = memmem(s + tag_at + 2, p->len - tag_at - 2, "}}", 2);
	if (close == NULL)
		return perr(p, line, "'{{' without its '}}'");
	in = tag_at + 2;
	inlen = (size_t)(close - s) - in;
	after = (size_t)(close - s) + 2;
	while (inlen > 0 && (s[in] == ' ' || s[in] == '\t'))
		in++, inlen--;
	if ((inlen == 0 || s[in] != '!') && memchr(s + in, '\n', inlen) != NULL)
		return perr(p, line, "'{{' without its '}}' on the same line");
	if (inlen > 0 && s[in] == '!' && memmem(s + in, inlen, "{{", 2) != NULL)
		return perr(p, line, "'{{' inside a comment (it ends at the first '}}')");
	while (inlen > 0 && (s[in + inlen - 1] == ' ' || s[in + inlen - 1] == '\t'))
		inlen--;
	next = after;
	if (is_block_tag(s + in, inlen) && standalone(p, tag_at, after, &ls, &next))
		text_end = ls;
	if (emit_text(p, p->pos, text_end) != 0)
		return -1;
	if (parse_tag(p, s + in, inlen, line) != 0)
		return -1;
	p->line += count_nl(s, p->pos, next);
	p->pos = next;
	return 0;
}

static int
parse_all(struct parser *p)
{
	const char *nul = memchr(p->src, '\0', p->len);

	if (nul != NULL)
		return perr(p, 1 + count_nl(p->src, 0, (size_t)(nul - p->src)), "NUL octet");
	while (p->pos < p->len) {
		const char *o = memmem(p->src + p->pos, p->len - p->pos, "{{", 2);
		if (o == NULL) {
			if (emit_text(p, p->pos, p->len) != 0)
				return -1;
			p->pos = p->len;
			break;
		}
		if (parse_one(p, (size_t)(o - p->src)) != 0)
			return -1;
	}
	if (p->depth > 0) {
		const struct open_section *o = &p->open[p->depth - 1];
		const struct node *n = &p->t->nodes[o->node];
		return perr(p, o->line, "{{#%s %s}} is never closed with {{/%s}}",
		    section_word(n->kind), n->name, section_word(n->kind));
	}
	return 0;
}

struct mc_tpl *
mc_tpl_parse(const char *name, const char *text, size_t len, enum mc_tpl_kind kind,
    const char *const *known, char *err, size_t errlen)
{
	struct parser p;
	struct mc_tpl *t;

	if (len > MC_TPL_MAX_SIZE) {
		seterr(err, errlen, "%s: larger than %d octets", name, MC_TPL_MAX_SIZE);
		return NULL;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL || (t->src = malloc(len + 1)) == NULL) {
		free(t);
		seterr(err, errlen, "%s: out of memory", name);
		return NULL;
	}
	memcpy(t->src, text, len);
	t->src[len] = '\0';
	t->srclen = len;
	t->kind = kind;
	memset(&p, 0, sizeof(p));
	p.name = name;
	p.src = t->src;
	p.len = len;
	p.line = 1;
	p.known = known;
	p.t = t;
	p.err = err;
	p.errlen = errlen;
	if (parse_all(&p) != 0) {
		mc_tpl_free(t);
		return NULL;
	}
	return t;
}

static enum mc_tpl_kind
kind_of(const char *path)
{
	size_t n = strlen(path);

	if ((n >= 5 && strcmp(path + n - 5, ".html") == 0) ||
	    (n >= 4 && strcmp(path + n - 4, ".htm") == 0))
		return MC_TPL_HTML;
	return MC_TPL_TEXT;
}

/* Reads a whole regular file of at most max octets; malloc'd, or NULL. */
static char *
read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		seterr(err, errlen, "%s: not a regular file of at most %zu octets", path, max);
		close(fd);
		return NULL;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		seterr(err, errlen, "%s: out of memory", path);
		close(fd);
		return NULL;
	}
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			seterr(err, errlen, "%s: read failed: %s", path,
			    r < 0 ? strerror(errno) : "file shrank");
			free(buf);
			close(fd);
			return NULL;
		}
		got += (size_t)r;
	}
	close(fd);
	*len = got;
	return buf;
}

struct mc_tpl *
mc_tpl_load(const char *path, const char *const *known, char *err, size_t errlen)
{
	struct mc_tpl *t;
	size_t len;
	char *text = read_file(path, MC_TPL_MAX_SIZE, &len, err, errlen);

	if (text == NULL)
		return NULL;
	t = mc_tpl_parse(path, text, len, kind_of(path), known, err, errlen);
	free(text);
	return t;
}

void
mc_tpl_free(struct mc_tpl *t)
{
	if (t == NULL)
		return;
	free(t->nodes);
	free(t->src);
	free(t);
}

/* Rendering. */

static int
out_add(struct out *o, const char *s, size_t n)
{
	if (n > o->max - o->len) {
		o->over = 1;
		return -1;
	}
	if (o->len + n + 1 > o->cap) {
		size_t cap = o->cap ? o->cap : 1024;
		char *p;
		while (cap < o->len + n + 1)
			cap *= 2;
		if ((p = realloc(o->p, cap)) == NULL) {
			o->oom = 1;
			return -1;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
	return 0;
}

static int
out_html(struct out *o, const char *s)
{
	for (;;) {
		size_t n = strcspn(s, "&<>\"'");
		const char *rep;

		if (out_add(o, s, n) != 0)
			return -1;
		s += n;
		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&#39;"; break;
		default: return 0;
		}
		if (out_add(o, rep, strlen(rep)) != 0)
			return -1;
		s++;
	}
}

struct scopes {
	const struct mc_tpl_ctx *ctx[MC_TPL_MAX_DEPTH + 1];
	size_t n;
};

static const struct var *
ctx_find(const struct mc_tpl_ctx *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->nvars; i++)
		if (strcmp(ctx->vars[i].name, name) == 0)
			return &ctx->vars[i];
	return NULL;
}

/* The innermost variable of that name, or NULL. */
static const struct var *
lookup(const struct scopes *sc, const char *name)
{
	size_t i = sc->n;

	while (i-- > 0) {
		const struct var *v = ctx_find(sc->ctx[i], name);
		if (v != NULL)
			return v;
	}
	return NULL;
}

static int render_range(const struct mc_tpl *t, size_t from, size_t to,
    struct scopes *sc, struct out *o);

static int
render_var(const struct mc_tpl *t, const struct node *nd, struct scopes *sc, struct out *o)
{
	const struct var *v = lookup(sc, nd->name);

	if (v == NULL || v->value == NULL)
		return 0;
	if (t->kind == MC_TPL_HTML)
		return out_html(o, v->value);
	return out_add(o, v->value, strlen(v->value));
}

static int
render_if(const struct mc_tpl *t, const struct node *nd, struct scopes *sc, struct out *o)
{
	const struct var *v = lookup(sc, nd->name);
	int truth = v != NULL && (v->value != NULL ? v->value[0] != '\0' : v->nitems > 0);
	size_t then_end = nd->else_at ? nd->else_at : nd->end_at;

	if (truth)
		return render_range(t, (size_t)(nd - t->nodes) + 1, then_end, sc, o);
	if (nd->else_at)
		return render_range(t, nd->else_at + 1, nd->end_at, sc, o);
	return 0;
}

static int
render_each(const struct mc_tpl *t, const struct node *nd, struct scopes *sc, struct out *o)
{
	const struct var *v = lookup(sc, nd->name);

	if (v == NULL || v->value != NULL)
		return 0;
	if (sc->n >= MC_TPL_MAX_DEPTH + 1)
		return -1;          /* cannot happen: the parser bounds the depth */
	for (size_t i = 0; i < v->nitems; i++) {
		int r;
		sc->ctx[sc->n++] = v->items[i];
		r = render_range(t, (size_t)(nd - t->nodes) + 1, nd->end_at, sc, o);
		sc->n--;
		if (r != 0)
			return -1;
	}
	return 0;
}

static int
render_range(const struct mc_tpl *t, size_t from, size_t to, struct scopes *sc, struct out *o)
{
	size_t i = from;

	while (i < to) {
		const struct node *nd = &t->nodes[i];
		int r = 0;

		switch (nd->kind) {
		case N_TEXT:
			r = out_add(o, t->src + nd->off, nd->len);
			break;
		case N_VAR:
			r = render_var(t, nd, sc, o);
			break;
		case N_IF:
			r = render_if(t, nd, sc, o);
			break;
		case N_EACH:
			r = render_each(t, nd, sc, o);
			break;
		case N_ELSE:
		case N_END:
			break;
		}
		if (r != 0)
			return -1;
		i = (nd->kind == N_IF || nd->kind == N_EACH) ? nd->end_at + 1 : i + 1;
	}
	return 0;
}

int
mc_tpl_render(const struct mc_tpl *t, const struct mc_tpl_ctx *ctx, size_t max_out,
    char **out, size_t *outlen, char *err, size_t errlen)
{
	struct out o = { NULL, 0, 0, max_out, 0, 0 };
	struct scopes sc;

	*out = NULL;
	*outlen = 0;
	if (t == NULL || ctx == NULL) {
		seterr(err, errlen, "no template or no values to render");
		return -1;
	}
	if (mc_tpl_ctx_failed(ctx)) {
		seterr(err, errlen, "out of memory while collecting template values");
		return -1;
	}
	sc.ctx[0] = ctx;
	sc.n = 1;
	if (out_add(&o, "", 0) != 0 || render_range(t, 0, t->nnodes, &sc, &o) != 0) {
		if (o.over)
			seterr(err, errlen, "rendered text larger than %zu octets", max_out);
		else
			seterr(err, errlen, "out of memory while rendering");
		free(o.p);
		return -1;
	}
	*out = o.p;
	*outlen = o.len;
	return 0;
}

/* Contexts. */

struct mc_tpl_ctx *
mc_tpl_ctx_new(void)
{
	struct mc_tpl_ctx *ctx = calloc(1, sizeof(*ctx));

	if (ctx != NULL)
		ctx->root = ctx;
	return ctx;
}

static void
var_clear(struct var *v)
{
	for (size_t i = 0; i < v->nitems; i++)
		mc_tpl_ctx_free(v->items[i]);
	free(v->items);
	free(v->value);
	v->items = NULL;
	v->nitems = v->cap = 0;
	v->value = NULL;
}

void
mc_tpl_ctx_free(struct mc_tpl_ctx *ctx)
{
	if (ctx == NULL)
		return;
	for (size_t i = 0; i < ctx->nvars; i++) {
		var_clear(&ctx->vars[i]);
		free(ctx->vars[i].name);
	}
	free(ctx->vars);
	free(ctx);
}

static int
fail(struct mc_tpl_ctx *ctx)
{
	ctx->root->failed = 1;
	return -1;
}

/* The variable `name` in ctx, added empty if new; NULL when out of memory. */
static struct var *
ctx_var(struct mc_tpl_ctx *ctx, const char *name)
{
	struct var *v;

	for (size_t i = 0; i < ctx->nvars; i++)
		if (strcmp(ctx->vars[i].name, name) == 0)
			return &ctx->vars[i];
	if (ctx->nvars == ctx->cap) {
		size_t cap = ctx->cap ? ctx->cap * 2 : 16;
		if ((v = realloc(ctx->vars, cap * sizeof(*v))) == NULL)
			return NULL;
		ctx->vars = v;
		ctx->cap = cap;
	}
	v = &ctx->vars[ctx->nvars];
	memset(v, 0, sizeof(*v));
	if ((v->name = strdup(name)) == NULL)
		return NULL;
	ctx->nvars++;
	return v;
}

int
mc_tpl_set(struct mc_tpl_ctx *ctx, const char *name, const char *value)
{
	struct var *v = ctx_var(ctx, name);
	char *copy;

	if (v == NULL || (copy = strdup(value != NULL ? value : "")) == NULL)
		return fail(ctx);
	var_clear(v);
	v->value = copy;
	return 0;
}

int
mc_tpl_setf(struct mc_tpl_ctx *ctx, const char *name, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return mc_tpl_set(ctx, name, buf);
}

struct mc_tpl_ctx *
mc_tpl_add(struct mc_tpl_ctx *ctx, const char *name)
{
	struct var *v = ctx_var(ctx, name);
	struct mc_tpl_ctx *rec;

	if (v == NULL) {
		fail(ctx);
		return NULL;
	}
	if (v->value != NULL)
		var_clear(v);
	if (v->nitems == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 8;
		struct mc_tpl_ctx **items = realloc(v->items, cap * sizeof(*items));
		if (items == NULL) {
			fail(ctx);
			return NULL;
		}
		v->items = items;
		v->cap = cap;
	}
	if ((rec = calloc(1, sizeof(*rec))) == NULL) {
		fail(ctx);
		return NULL;
	}
	rec->root = ctx->root;
	v->items[v->nitems++] = rec;
	return rec;
}

int
mc_tpl_ctx_failed(const struct mc_tpl_ctx *ctx)
{
	return ctx->root->failed;
}
