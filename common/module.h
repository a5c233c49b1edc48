/*
 * module.h - loading parts of mailcell at first use (dlopen): a session
 * process pays for libmongoc, libspf2 and friends only when it needs them,
 * not at every exec (DESIGN.md, "Startup budget").
 */
#ifndef MC_MODULE_H
#define MC_MODULE_H

#include <stddef.h>

/*
 * A checksum of the headers a program or module was built from (the
 * Makefile passes it). A module built from other headers, say installed by an
 * upgrade while an older session runs, is refused, never called with
 * structures laid out differently.
 */
#ifndef MC_IFACE_ID
#error "MC_IFACE_ID is set by the Makefile (a checksum of the interface headers)"
#endif
extern const unsigned long mc_module_iface;

/*
 * Loads NAME.so from $MAILCELL_LIBDIR, else from ../lib/mailcell/ beside
 * the running program (bin/ in the build tree, $(PREFIX)/bin installed).
 * Returns the handle (cached per name), or NULL with one line in err (also
 * when the module's mc_module_iface is not this program's MC_IFACE_ID).
 */
void *mc_module_load(const char *name, char *err, size_t errlen);

/* Unloads NAME.so if it is loaded (dlclose): for a module found unfit for use. */
void mc_module_unload(const char *name);

/* The address of symbol in a loaded module, or NULL with one line in err. */
void *mc_module_sym(void *handle, const char *symbol, char *err, size_t errlen);

#endif
