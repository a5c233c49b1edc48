/*
 * cidr.h - lists of networks ("127.0.0.0/8 ::1, 192.0.2.0/24") and whether
 * an address belongs to one: for trusted_networks in the configuration.
 */
#ifndef MC_CIDR_H
#define MC_CIDR_H

/* 1 if the list is well formed (empty is fine), else 0. */
int mc_cidr_list_valid(const char *list);

/* 1 if ip (IPv4 or IPv6 text) is in one of the list's networks, else 0. */
int mc_cidr_match(const char *list, const char *ip);

#endif
