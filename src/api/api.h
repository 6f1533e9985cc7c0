/* api.h: the JSON API, status endpoints and live streams on the root domain.
 *
 *   GET  /health                          open: status, version, uptime, counts
 *   GET  /metrics                         open unless metrics_auth: Prometheus text
 *   GET  /api/instances                   every instance (a tenant: its own)
 *   GET  /api/instances/{svc}:{id}        one instance
 *   POST /api/instances/{svc}:{id}/spawn|restart|stop
 *   PUT  /api/instances/{svc}:{id}/weight {"weight": 0-100} (admin)
 *   GET  /api/logs?service=&id=&level=&search=&since=&until=&limit=&cursor=
 *   GET  /api/logs/stream?service=&id=    Server-Sent Events, resumes by Last-Event-ID
 *   GET  /api/events                      Server-Sent Events of state changes
 *
 * Every /api route needs `Authorization: Bearer <token>` (auth.h): 401
 * without, 429 when an address keeps failing, 403 for admin-only actions
 * with a tenant token. Handlers are registered into the HTTP server (http
 * knows no api); slow work (token checks, log queries) runs on the
 * threadpool. Loop thread only.
 */
#ifndef TEN_API_API_H
#define TEN_API_API_H

#include "api/auth.h"
#include "http/server.h"
#include "obs/db.h"
#include "obs/logs.h"

typedef struct ten_api ten_api_t;

typedef struct ten_api_deps {
  ten_http_server_t *http;
  ten_hv_t *hv;
  ten_logs_t *logs;  /* may be NULL: no log routes */
  ten_db_t *db;      /* may be NULL */
  ten_auth_t *auth;  /* may be NULL: no authentication (tests of other parts) */
} ten_api_deps_t;

ten_api_t *ten_api_new(const ten_api_deps_t *deps);
/* Ends every open stream (shutdown). */
void ten_api_close(ten_api_t *api);
void ten_api_free(ten_api_t *api);

/* Writes /metrics (also used by tests). */
void ten_api_metrics(ten_api_t *api, ten_buf_t *out);

#endif
