/*
 * template.h - a small text/HTML template renderer for messages that admins
 * restyle (bounce notices): {{name}}, {{#if}}/{{else}}, {{#each}}, comments.
 * A template is parsed whole at load time, so syntax errors name file:line.
 */
#ifndef MC_TEMPLATE_H
#define MC_TEMPLATE_H

#include <stddef.h>

/*
 * Syntax (templates/README.md has the admin's version):
 *   {{name}}                    the value; in an HTML template & < > " ' are
 *                               escaped, in a text template it is copied as is
 *   {{#if name}}..{{else}}..{{/if}}   a non-empty value or list is true
 *   {{#each list}}..{{/each}}   once per record; inside, the record's fields
 *                               come first, then the enclosing names
 *   {{! comment }}              dropped (may span lines)
 * Spaces inside the braces are allowed. A block tag ({{#..}}, {{else}},
 * {{/..}}, {{!..}}) alone on its line removes that whole line from the
 * output. There is nothing else: no includes, no expressions, no raw output.
 * A name is [A-Za-z_][A-Za-z0-9_]* (at most MC_TPL_NAME_MAX - 1 octets).
 */

#define MC_TPL_MAX_SIZE   (256 * 1024)  /* a template file, octets */
#define MC_TPL_NAME_MAX   64
#define MC_TPL_MAX_DEPTH  16            /* nested #if/#each */

enum mc_tpl_kind { MC_TPL_TEXT, MC_TPL_HTML };

struct mc_tpl;
struct mc_tpl_ctx;

/*
 * Parses a template held in memory; `name` is used in errors ("name:LINE:
 * what"). known (NULL: anything goes) is a NULL-terminated list of the names
 * a template may use: "sender" is a string, "rcpts.address" says that
 * "rcpts" is a list whose records have the field "address" (nested lists:
 * "log.lines.line"). NULL with one line in err on a syntax error, an
 * unknown name or no memory.
 */
struct mc_tpl *mc_tpl_parse(const char *name, const char *text, size_t len,
    enum mc_tpl_kind kind, const char *const *known, char *err, size_t errlen);

/* Reads and parses a file; its kind is HTML if it ends in .html or .htm. */
struct mc_tpl *mc_tpl_load(const char *path, const char *const *known,
    char *err, size_t errlen);

void mc_tpl_free(struct mc_tpl *t);

/*
 * Renders t with ctx into a malloc'd, NUL-terminated buffer of at most
 * max_out octets; -1 with one line in err when the output would be larger,
 * memory ran out (also while ctx was built) or the template is NULL.
 */
int mc_tpl_render(const struct mc_tpl *t, const struct mc_tpl_ctx *ctx,
    size_t max_out, char **out, size_t *outlen, char *err, size_t errlen);

/*
 * The values: a context is a set of named strings and named lists of
 * records, and each record is a context of its own (its fields, and lists
 * for nested #each). Values are copied. A failed allocation returns -1 (or
 * NULL) and also marks the whole context, so that mc_tpl_render refuses it:
 * a caller may set many values and check once.
 */
struct mc_tpl_ctx *mc_tpl_ctx_new(void);
void mc_tpl_ctx_free(struct mc_tpl_ctx *ctx);

/* Sets (or replaces) a string; 0 or -1. */
int mc_tpl_set(struct mc_tpl_ctx *ctx, const char *name, const char *value);

/* printf-style mc_tpl_set; the value is cut at 4095 octets. */
int mc_tpl_setf(struct mc_tpl_ctx *ctx, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends a new, empty record to the list `name` (created if needed). */
struct mc_tpl_ctx *mc_tpl_add(struct mc_tpl_ctx *ctx, const char *name);

/* 1 if an allocation failed anywhere in ctx. */
int mc_tpl_ctx_failed(const struct mc_tpl_ctx *ctx);

#endif
