/*
 * module.c - finds and loads mailcell's modules (store.so, inbound.so,
 * tls.so) with dlopen, RTLD_LOCAL so that their libraries stay private to them.
 */
#include "module.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODULES_MAX 4

static struct {
	char name[32];
	void *handle;
} loaded[MODULES_MAX];

/* The directory modules live in: $MAILCELL_LIBDIR or <exe dir>/../lib/mailcell. */
static int
module_dir(char *dir, size_t len)
{
	const char *env = getenv("MAILCELL_LIBDIR");
	char exe[PATH_MAX];
	ssize_t n;
	char *slash;

	if (env != NULL && *env != '\0') {
		snprintf(dir, len, "%s", env);
		return 0;
	}
	if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) <= 0)
		return -1;
	exe[n] = '\0';
	if ((slash = strrchr(exe, '/')) == NULL)
		return -1;
	*slash = '\0';
	return snprintf(dir, len, "%s/../lib/mailcell", exe) < (int)len ? 0 : -1;
}

void *
mc_module_load(const char *name, char *err, size_t errlen)
{
	char dir[PATH_MAX], path[PATH_MAX + 64];
	const unsigned long *iface;
	size_t i;
	void *h;

	for (i = 0; i < MODULES_MAX && loaded[i].handle != NULL; i++)
		if (strcmp(loaded[i].name, name) == 0)
			return loaded[i].handle;
	if (i == MODULES_MAX || module_dir(dir, sizeof(dir)) != 0) {
		snprintf(err, errlen, "module %s: cannot find the module directory", name);
		return NULL;
	}
	snprintf(path, sizeof(path), "%s/%s.so", dir, name);
	if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		snprintf(err, errlen, "module %s: %s", name, dlerror());
		return NULL;
	}
	if ((iface = (const unsigned long *)dlsym(h, "mc_module_iface")) == NULL ||
	    *iface != (unsigned long)MC_IFACE_ID) {
		snprintf(err, errlen, "module %s: built from other sources than this program "
		    "(interface %lx, the program's %lx): was it upgraded while the program ran?",
		    name, iface ? *iface : 0UL, (unsigned long)MC_IFACE_ID);
		dlclose(h);
		return NULL;
	}
	snprintf(loaded[i].name, sizeof(loaded[i].name), "%s", name);
	loaded[i].handle = h;
	return h;
}

void
mc_module_unload(const char *name)
{
	size_t i;

	for (i = 0; i < MODULES_MAX && loaded[i].handle != NULL; i++)
		if (strcmp(loaded[i].name, name) == 0)
			break;
	if (i == MODULES_MAX || loaded[i].handle == NULL)
		return;
	dlclose(loaded[i].handle);
	for (; i + 1 < MODULES_MAX; i++)
		loaded[i] = loaded[i + 1];
	memset(&loaded[MODULES_MAX - 1], 0, sizeof(loaded[0]));
}

void *
mc_module_sym(void *handle, const char *symbol, char *err, size_t errlen)
{
	void *p = dlsym(handle, symbol);

	if (p == NULL)
		snprintf(err, errlen, "symbol %s: %s", symbol, dlerror());
	return p;
}
