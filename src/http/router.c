#include "http/router.h"

#include <stdbool.h>
#include <string.h>

const char *ten_route_kind_name(ten_route_kind_t k) {
  switch (k) {
  case TEN_ROUTE_BAD: return "bad";
  case TEN_ROUTE_UNKNOWN: return "unknown";
  case TEN_ROUTE_ROOT: return "root";
  case TEN_ROUTE_SERVICE: return "service";
  case TEN_ROUTE_INSTANCE: return "instance";
  }
  return "?";
}

static bool is_label_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static bool valid_label(const char *s, size_t len) {
  if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-') return false;
  for (size_t i = 0; i < len; i++)
    if (!is_label_char(s[i])) return false;
  return true;
}

/* Host = uri-host [ ":" port ] (RFC 9110 7.2); uri-host may be an IP-literal. */
static bool strip_port(const char *host, size_t *len) {
  size_t n = *len;
  if (n && host[0] == '[') {
    const char *close = memchr(host, ']', n);
    if (!close) return false;
    size_t end = (size_t)(close - host) + 1;
    if (end < n && host[end] != ':') return false;
    for (size_t i = end + 1; i < n; i++)
      if (host[i] < '0' || host[i] > '9') return false;
    *len = end;
    return true;
  }
  const char *colon = memchr(host, ':', n);
  if (!colon) return true;
  size_t at = (size_t)(colon - host);
  if (n - at - 1 > 5) return false;
  for (size_t i = at + 1; i < n; i++)
    if (host[i] < '0' || host[i] > '9') return false;
  *len = at;
  return true;
}

void ten_route_host(const char *host, size_t host_len, const char *domain, size_t domain_len,
                    ten_route_t *out) {
  out->kind = TEN_ROUTE_BAD;
  out->host[0] = '\0';
  out->host_len = 0;
  out->service = out->id = NULL;
  out->service_len = out->id_len = 0;

  size_t n = host_len;
  if (n == 0 || !strip_port(host, &n)) return;
  if (n && host[n - 1] == '.') n--;
  if (n == 0 || n > TEN_HOST_MAX) return;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)host[i];
    if (c <= 0x20 || c >= 0x7f || c == '/' || c == '@' || c == '\\') {
      out->host[0] = '\0'; /* a bad host leaves nothing half-copied */
      return;
    }
    out->host[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  }
  out->host[n] = '\0';
  out->host_len = n;
  out->kind = TEN_ROUTE_UNKNOWN;

  const char *h = out->host;
  if (n == domain_len && memcmp(h, domain, n) == 0) {
    out->kind = TEN_ROUTE_ROOT;
    return;
  }
  /* {prefix}.{domain} */
  if (n <= domain_len + 1 || h[n - domain_len - 1] != '.' ||
      memcmp(h + n - domain_len, domain, domain_len) != 0)
    return;
  size_t prefix_len = n - domain_len - 1;
  const char *dot = memchr(h, '.', prefix_len);
  if (!dot) {
    if (!valid_label(h, prefix_len)) return;
    out->kind = TEN_ROUTE_SERVICE;
    out->service = h;
    out->service_len = prefix_len;
    return;
  }
  size_t id_len = (size_t)(dot - h);
  const char *svc = dot + 1;
  size_t svc_len = prefix_len - id_len - 1;
  if (memchr(svc, '.', svc_len)) return; /* deeper names are not ours */
  if (!valid_label(h, id_len) || !valid_label(svc, svc_len)) return;
  out->kind = TEN_ROUTE_INSTANCE;
  out->id = h;
  out->id_len = id_len;
  out->service = svc;
  out->service_len = svc_len;
}
