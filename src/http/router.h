/* router.h: what a Host header asks for.
 *
 * Pure and allocation-free: the Host value (port stripped, lower-cased, a
 * trailing dot dropped) is compared with the configured domain:
 *   domain                 -> TEN_ROUTE_ROOT (dashboard, /api, /health, /metrics)
 *   {service}.domain       -> TEN_ROUTE_SERVICE (the weighted pool)
 *   {id}.{service}.domain  -> TEN_ROUTE_INSTANCE
 *   anything else          -> TEN_ROUTE_UNKNOWN
 * Labels must be DNS labels of a-z, 0-9 and '-'. A malformed Host value is
 * TEN_ROUTE_BAD (400). The instance table lookup is the caller's: O(1) by
 * "service:id".
 */
#ifndef TEN_HTTP_ROUTER_H
#define TEN_HTTP_ROUTER_H

#include <stddef.h>

#define TEN_HOST_MAX 255

typedef enum ten_route_kind {
  TEN_ROUTE_BAD,
  TEN_ROUTE_UNKNOWN,
  TEN_ROUTE_ROOT,
  TEN_ROUTE_SERVICE,
  TEN_ROUTE_INSTANCE,
} ten_route_kind_t;

typedef struct ten_route {
  ten_route_kind_t kind;
  char host[TEN_HOST_MAX + 1]; /* normalised host, NUL-terminated */
  size_t host_len;
  const char *service; /* points into host; not NUL-terminated */
  size_t service_len;
  const char *id;
  size_t id_len;
} ten_route_t;

/* Classifies `host` (the raw Host header value) against `domain` (already
 * lower-case, no trailing dot). Always fills out->kind. */
void ten_route_host(const char *host, size_t host_len, const char *domain, size_t domain_len,
                    ten_route_t *out);

const char *ten_route_kind_name(ten_route_kind_t k);

#endif
