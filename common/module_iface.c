/*
 * module_iface.c - linked into each module (store.so, store-lite.so,
 * inbound.so, tls.so): the checksum of the headers it was built with, which
 * mc_module_load() compares with the loading program's own (module.h).
 */
#include "module.h"

const unsigned long mc_module_iface = MC_IFACE_ID;
