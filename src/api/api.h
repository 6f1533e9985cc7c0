/* api.h: the JSON API and status endpoints on the root domain.
 *
 *   GET /health                    {"status":"ok","version",...}
 *   GET /api/instances             every instance
 *   GET /api/instances/{svc}:{id}  one instance (404 if unknown)
 *
 * Handlers are registered into the HTTP server (http knows no api) and
 * answer synchronously from the hypervisor's state. Loop thread only.
 */
#ifndef TEN_API_API_H
#define TEN_API_API_H

#include "http/server.h"

typedef struct ten_api ten_api_t;

ten_api_t *ten_api_new(ten_http_server_t *http, ten_hv_t *hv);
void ten_api_free(ten_api_t *api);

#endif
