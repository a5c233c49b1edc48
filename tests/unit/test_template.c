/*
 * test_template.c - the template renderer: variables, HTML vs text escaping,
 * #each/#if/else (nested, with outer names inside), standalone tag lines,
 * syntax and unknown-name errors with their line numbers, the output bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "template.h"

/* Parses and renders text with ctx; the output (static), or NULL with err. */
static const char *
render(const char *text, enum mc_tpl_kind kind, const struct mc_tpl_ctx *ctx,
    const char *const *known, size_t max, char *err, size_t errlen)
{
	static char result[8192];
	struct mc_tpl *t = mc_tpl_parse("t", text, strlen(text), kind, known, err, errlen);
	char *out;
	size_t len;
	int r;

	if (t == NULL)
		return NULL;
	r = mc_tpl_render(t, ctx, max, &out, &len, err, errlen);
	mc_tpl_free(t);
	if (r != 0)
		return NULL;
	assert_int_equal(strlen(out), len);
	snprintf(result, sizeof(result), "%s", out);
	free(out);
	return result;
}

static const char *
txt(const char *text, const struct mc_tpl_ctx *ctx)
{
	char err[256] = "";
	const char *out = render(text, MC_TPL_TEXT, ctx, NULL, 1 << 20, err, sizeof(err));

	if (out == NULL)
		fail_msg("render failed: %s", err);
	return out;
}

/* The parse error for text (with known names, or NULL). */
static const char *
parse_error(const char *text, const char *const *known)
{
	static char err[256];
	struct mc_tpl *t;

	err[0] = '\0';
	t = mc_tpl_parse("t", text, strlen(text), MC_TPL_TEXT, known, err, sizeof(err));
	if (t != NULL) {
		mc_tpl_free(t);
		fail_msg("'%s' parsed", text);
	}
	return err;
}

static void
test_variables(void **state)
{
	struct mc_tpl_ctx *ctx = mc_tpl_ctx_new();

	(void)state;
	assert_non_null(ctx);
	assert_int_equal(mc_tpl_set(ctx, "name", "World"), 0);
	assert_int_equal(mc_tpl_setf(ctx, "n", "%d items", 3), 0);
	assert_string_equal(txt("Hello {{name}}!", ctx), "Hello World!");
	assert_string_equal(txt("{{ name }}/{{n}}/{{missing}}.", ctx), "World/3 items/.");
	assert_string_equal(txt("no tags } { }} at all", ctx), "no tags } { }} at all");
	assert_string_equal(txt("", ctx), "");
	mc_tpl_set(ctx, "name", "again");           /* replaces */
	assert_string_equal(txt("{{name}}", ctx), "again");
	assert_string_equal(txt("a{{! a comment\nover two lines }}b", ctx), "ab");
	mc_tpl_ctx_free(ctx);
}

static void
test_escaping(void **state)
{
	struct mc_tpl_ctx *ctx = mc_tpl_ctx_new();
	char err[256];
	const char *out;

	(void)state;
	mc_tpl_set(ctx, "v", "<script>alert(\"x\" & 'y')</script>");
	out = render("<p>{{v}}</p>", MC_TPL_HTML, ctx, NULL, 4096, err, sizeof(err));
	assert_non_null(out);
	assert_string_equal(out, "<p>&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)"
	    "&lt;/script&gt;</p>");
	out = render("<p>{{v}}</p>", MC_TPL_TEXT, ctx, NULL, 4096, err, sizeof(err));
	assert_non_null(out);
	assert_string_equal(out, "<p><script>alert(\"x\" & 'y')</script></p>");
	mc_tpl_ctx_free(ctx);
}

static struct mc_tpl_ctx *
people(void)
{
	struct mc_tpl_ctx *ctx = mc_tpl_ctx_new(), *r;

	mc_tpl_set(ctx, "title", "Team");
	r = mc_tpl_add(ctx, "people");
	mc_tpl_set(r, "name", "Ann");
	mc_tpl_set(r, "mail", "ann@example.org");
	mc_tpl_set(mc_tpl_add(r, "tags"), "tag", "a");
	mc_tpl_set(mc_tpl_add(r, "tags"), "tag", "b");
	r = mc_tpl_add(ctx, "people");
	mc_tpl_set(r, "name", "Bob");
	mc_tpl_set(r, "mail", "");
	assert_false(mc_tpl_ctx_failed(ctx));
	return ctx;
}

static void
test_each_if_else(void **state)
{
	struct mc_tpl_ctx *ctx = people();

	(void)state;
	assert_string_equal(txt("{{#each people}}[{{name}}]{{/each}}", ctx), "[Ann][Bob]");
	assert_string_equal(txt("{{#each people}}{{name}}:{{#if mail}}{{mail}}"
	    "{{else}}none{{/if}};{{/each}}", ctx), "Ann:ann@example.org;Bob:none;");
	assert_string_equal(txt("{{#if people}}some{{else}}nobody{{/if}}", ctx), "some");
	assert_string_equal(txt("{{#if nobody}}some{{else}}nobody{{/if}}", ctx), "nobody");
	assert_string_equal(txt("{{#if title}}yes{{/if}}{{#if missing}}no{{/if}}", ctx), "yes");
	/* Outer names inside #each; a nested #each. */
	assert_string_equal(txt("{{#each people}}{{title}}/{{name}}:"
	    "{{#each tags}}{{name}}.{{tag}} {{/each}};{{/each}}", ctx),
	    "Team/Ann:Ann.a Ann.b ;Team/Bob:;");
	/* An empty list renders nothing, a list as a value renders nothing. */
	assert_string_equal(txt("<{{#each nobody}}x{{/each}}{{people}}>", ctx), "<>");
	mc_tpl_ctx_free(ctx);
}

static void
test_nested_each_in_if(void **state)
{
	struct mc_tpl_ctx *ctx = people(), *empty = mc_tpl_ctx_new();
	const char *tpl =
	    "{{#if people}}\n"
	    "People:\n"
	    "{{#each people}}\n"
	    "  - {{name}}\n"
	    "{{/each}}\n"
	    "{{else}}\n"
	    "Nobody.\n"
	    "{{/if}}\n"
	    "end\n";

	(void)state;
	/* Block tags alone on their line take the line with them. */
	assert_string_equal(txt(tpl, ctx), "People:\n  - Ann\n  - Bob\nend\n");
	assert_string_equal(txt(tpl, empty), "Nobody.\nend\n");
	/* CRLF lines, indented tags. */
	assert_string_equal(txt("a\r\n  {{#if title}}  \r\nb\r\n{{/if}}\r\nc", ctx),
	    "a\r\nb\r\nc");
	/* Not alone on the line: kept as is. */
	assert_string_equal(txt("x {{#if title}}y{{/if}}\nz", ctx), "x y\nz");
	mc_tpl_ctx_free(ctx);
	mc_tpl_ctx_free(empty);
}

static void
test_syntax_errors(void **state)
{
	(void)state;
	assert_string_equal(parse_error("one\ntwo {{name\nthree}}", NULL),
	    "t:2: '{{' without its '}}' on the same line");
	assert_string_equal(parse_error("one\n\nthree {{name", NULL),
	    "t:3: '{{' without its '}}'");
	assert_string_equal(parse_error("a\n{{#each xs}}\nb\n", NULL),
	    "t:2: {{#each xs}} is never closed with {{/each}}");
	assert_string_equal(parse_error("{{#with x}}{{/with}}", NULL),
	    "t:1: unknown section '{{#with}}'");
	assert_string_equal(parse_error("\n{{#if a}}\n{{/each}}", NULL),
	    "t:3: {{/each}} closes {{#if a}} opened at line 2");
	assert_string_equal(parse_error("x\n{{/if}}", NULL),
	    "t:2: {{/if}} without an open {{#if}}");
	assert_string_equal(parse_error("{{else}}", NULL), "t:1: {{else}} outside {{#if}}");
	assert_string_equal(parse_error("{{#if a}}{{else}}{{else}}{{/if}}", NULL),
	    "t:1: a second {{else}} in one {{#if}}");
	assert_string_equal(parse_error("{{#each a}}{{else}}{{/each}}", NULL),
	    "t:1: {{else}} outside {{#if}}");
	assert_string_equal(parse_error("\n\n{{bad-name}}", NULL),
	    "t:3: bad variable name 'bad-name'");
	assert_string_equal(parse_error("{{{raw}}}", NULL), "t:1: bad variable name '{raw'");
	assert_string_equal(parse_error("{{}}", NULL), "t:1: empty tag {{}}");
	assert_string_equal(parse_error("x\n{{! every {{name}} is escaped }}", NULL),
	    "t:2: '{{' inside a comment (it ends at the first '}}')");
	assert_string_equal(parse_error("{{/unless}}", NULL),
	    "t:1: unknown closing tag '{{/unless}}'");
	assert_string_equal(parse_error("{{#if}}{{/if}}", NULL), "t:1: bad variable name ''");
	{
		char deep[512] = "";
		for (int i = 0; i <= MC_TPL_MAX_DEPTH; i++)
			strcat(deep, "{{#if a}}");
		assert_string_equal(parse_error(deep, NULL), "t:1: sections nested deeper than 16");
	}
	{
		static const char nul[] = "a\nb\0c";
		char err[256];
		assert_null(mc_tpl_parse("t", nul, sizeof(nul) - 1, MC_TPL_TEXT, NULL, err,
		    sizeof(err)));
		assert_string_equal(err, "t:2: NUL octet");
	}
}

static void
test_unknown_names(void **state)
{
	static const char *const known[] = { "sender", "rcpts.address", "rcpts.status",
		"log.time", "log.lines.line", NULL };
	struct mc_tpl *t;
	char err[256];
	const char *ok = "{{sender}}{{#each rcpts}}{{address}}{{sender}}{{/each}}"
	    "{{#if log}}{{#each log}}{{#each lines}}{{time}}{{line}}{{/each}}{{/each}}{{/if}}";

	(void)state;
	t = mc_tpl_parse("t", ok, strlen(ok), MC_TPL_TEXT, known, err, sizeof(err));
	assert_non_null(t);
	mc_tpl_free(t);
	assert_string_equal(parse_error("x\n\n{{sendr}}", known),
	    "t:3: unknown variable 'sendr'");
	assert_string_equal(parse_error("{{address}}", known),
	    "t:1: unknown variable 'address'");
	assert_string_equal(parse_error("{{rcpts}}", known),
	    "t:1: 'rcpts' is a list: use {{#each rcpts}}");
	assert_string_equal(parse_error("{{#each sender}}{{/each}}", known),
	    "t:1: 'sender' is not a list: {{#each}} needs one");
	assert_string_equal(parse_error("{{#each log}}\n{{line}}{{/each}}", known),
	    "t:2: unknown variable 'line'");
	assert_string_equal(parse_error("{{#if nothing}}{{/if}}", known),
	    "t:1: unknown variable 'nothing'");
}

static void
test_output_bound(void **state)
{
	struct mc_tpl_ctx *ctx = mc_tpl_ctx_new();
	char err[256];

	(void)state;
	for (int i = 0; i < 100; i++)
		mc_tpl_set(mc_tpl_add(ctx, "xs"), "x", "0123456789");
	assert_non_null(render("{{#each xs}}{{x}}{{/each}}", MC_TPL_TEXT, ctx, NULL, 1000, err,
	    sizeof(err)));
	assert_null(render("{{#each xs}}{{x}}{{/each}}!", MC_TPL_TEXT, ctx, NULL, 1000, err,
	    sizeof(err)));
	assert_string_equal(err, "rendered text larger than 1000 octets");
	/* Escaping counts too: 100 x "&amp;" is 500 octets. */
	mc_tpl_set(ctx, "amp", "&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&"
	    "&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&");
	assert_null(render("{{amp}}", MC_TPL_HTML, ctx, NULL, 499, err, sizeof(err)));
	assert_non_null(render("{{amp}}", MC_TPL_HTML, ctx, NULL, 500, err, sizeof(err)));
	mc_tpl_ctx_free(ctx);
}

static void
test_load_file(void **state)
{
	char dir[] = "/tmp/mc-tpl-XXXXXX", path[256], err[512];
	struct mc_tpl_ctx *ctx = mc_tpl_ctx_new();
	struct mc_tpl *t;
	char *out;
	size_t len;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/x.html", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("{{! kind from the name }}\n<b>{{v}}</b>\n", f);
	fclose(f);
	mc_tpl_set(ctx, "v", "a<b");
	assert_non_null(t = mc_tpl_load(path, NULL, err, sizeof(err)));
	assert_int_equal(mc_tpl_render(t, ctx, 100, &out, &len, err, sizeof(err)), 0);
	assert_string_equal(out, "<b>a&lt;b</b>\n");
	free(out);
	mc_tpl_free(t);

	snprintf(path, sizeof(path), "%s/bad.txt", dir);
	assert_non_null(f = fopen(path, "w"));
	fputs("line 1\nline 2\n{{#if v}}\n", f);
	fclose(f);
	assert_null(mc_tpl_load(path, NULL, err, sizeof(err)));
	assert_non_null(strstr(err, "/bad.txt:3: {{#if v}} is never closed"));
	unlink(path);
	snprintf(path, sizeof(path), "%s/x.html", dir);
	unlink(path);
	rmdir(dir);

	assert_null(mc_tpl_load("/nonexistent/t.txt", NULL, err, sizeof(err)));
	assert_string_equal(err, "/nonexistent/t.txt: cannot open: No such file or directory");
	assert_int_equal(mc_tpl_render(NULL, ctx, 100, &out, &len, err, sizeof(err)), -1);
	mc_tpl_ctx_free(ctx);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_variables),
		cmocka_unit_test(test_escaping),
		cmocka_unit_test(test_each_if_else),
		cmocka_unit_test(test_nested_each_in_if),
		cmocka_unit_test(test_syntax_errors),
		cmocka_unit_test(test_unknown_names),
		cmocka_unit_test(test_output_bound),
		cmocka_unit_test(test_load_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
