#include "util/cidr.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

int ten_cidr_parse(const char *text, ten_cidr_t *out) {
  char buf[64];
  size_t len = strlen(text);
  if (len == 0 || len >= sizeof buf) return UV_EINVAL;
  memcpy(buf, text, len + 1);
  char *slash = strchr(buf, '/');
  if (slash) *slash = '\0';
  memset(out, 0, sizeof *out);
  if (inet_pton(AF_INET, buf, out->addr) == 1) {
    out->family = AF_INET;
    out->prefix = 32;
  } else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
    out->family = AF_INET6;
    out->prefix = 128;
  } else {
    return UV_EINVAL;
  }
  if (slash) {
    char *end;
    long p = strtol(slash + 1, &end, 10);
    if (!slash[1] || *end || p < 0 || p > out->prefix) return UV_EINVAL;
    out->prefix = (int)p;
  }
  return 0;
}

void ten_cidr_format(const ten_cidr_t *c, char *out, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  inet_ntop(c->family, c->addr, ip, sizeof ip);
  snprintf(out, len, "%s/%d", ip, c->prefix);
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, int bits) {
  int bytes = bits / 8, rest = bits % 8;
  if (memcmp(a, b, (size_t)bytes) != 0) return false;
  if (!rest) return true;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (a[bytes] & mask) == (b[bytes] & mask);
}

bool ten_cidr_match(const ten_cidr_t *c, const char *ip) {
  uint8_t addr[16];
  if (inet_pton(AF_INET, ip, addr) == 1) {
    return c->family == AF_INET && prefix_equal(addr, c->addr, c->prefix);
  }
  if (inet_pton(AF_INET6, ip, addr) != 1) return false;
  if (c->family == AF_INET6) return prefix_equal(addr, c->addr, c->prefix);
  static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return memcmp(addr, v4mapped, 12) == 0 && prefix_equal(addr + 12, c->addr, c->prefix);
}

bool ten_cidr_match_any(const ten_cidr_t *list, size_t count, const char *ip) {
  for (size_t i = 0; i < count; i++)
    if (ten_cidr_match(&list[i], ip)) return true;
  return false;
}
