/* cidr.h: IPv4/IPv6 address ranges ("10.0.0.0/8", "::1") and matching.
 * Used for trusted proxies (config) and client addresses (http, auth). */
#ifndef TEN_UTIL_CIDR_H
#define TEN_UTIL_CIDR_H

#include <sys/socket.h>

#include "util/common.h"

typedef struct ten_cidr {
  int family;       /* AF_INET or AF_INET6 */
  uint8_t addr[16]; /* network order; 4 bytes used for IPv4 */
  int prefix;       /* bits */
} ten_cidr_t;

/* Parses "addr" or "addr/prefix". Returns 0 or UV_EINVAL. */
int ten_cidr_parse(const char *text, ten_cidr_t *out);
/* Formats back to text (out >= 64 bytes). */
void ten_cidr_format(const ten_cidr_t *c, char *out, size_t len);
/* Does the textual address `ip` fall in the range? IPv4-mapped IPv6
 * addresses (::ffff:a.b.c.d) match IPv4 ranges. */
bool ten_cidr_match(const ten_cidr_t *c, const char *ip);
bool ten_cidr_match_any(const ten_cidr_t *list, size_t count, const char *ip);

#endif
