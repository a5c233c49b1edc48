/*
 * remote.h - the client's address for a session started by a supervisor:
 * --remote-ip, else TCPREMOTEIP (ucspi-tcp, s6), else getpeername(0), else
 * REMOTE_ADDR, else "unknown" (a pipe).
 */
#ifndef MC_REMOTE_H
#define MC_REMOTE_H

#include <stddef.h>

/* flag_ip: the --remote-ip value or NULL. Anything not an address is "unknown". */
void mc_remote_ip(const char *flag_ip, char *out, size_t cap);

#endif
