/* server.h: the HTTP/1.1 front door.
 *
 * One listener on the loop; each client connection parses requests with
 * llhttp (strict), routes them by Host (router.h) and either proxies them to
 * an instance (proxy.c) or answers them locally with a handler another
 * module registered for the root domain (the API: http knows no api).
 * Keep-alive and pipelining are supported; responses go out in request
 * order. Loop thread only. Every connection is freed in its close callback;
 * ten_http_shutdown drains and closes them all before calling back.
 */
#ifndef TEN_HTTP_SERVER_H
#define TEN_HTTP_SERVER_H

#include "hv/hv.h"
#include "policy/config.h"
#include "util/buf.h"
#include "util/common.h"

#include <uv.h>

typedef struct ten_http_server ten_http_server_t;
typedef struct ten__conn ten_http_request_t; /* a request being answered locally */

typedef void (*ten_http_handler_fn)(void *ctx, ten_http_request_t *req);

/* Creates the server for `config` (listen address, port, domain, limits). */
int ten_http_server_new(uv_loop_t *loop, ten_hv_t *hv, ten_config_t *config,
                        ten_http_server_t **out, ten_err_t *err);
/* Binds and listens; afterwards ten_http_port tells the port (for port 0). */
int ten_http_listen(ten_http_server_t *s, ten_err_t *err);
int ten_http_port(const ten_http_server_t *s);
uv_loop_t *ten_http_loop(const ten_http_server_t *s);
/* Takes a new config snapshot (domain, limits); listeners stay open. */
void ten_http_set_config(ten_http_server_t *s, ten_config_t *config);

/* Registers a local handler on the root domain for `path` (exact), or for
 * every path starting with it when `prefix` is true. method NULL = any. */
void ten_http_handle(ten_http_server_t *s, const char *method, const char *path, bool prefix,
                     ten_http_handler_fn fn, void *ctx);

/* Stops accepting, lets requests in flight finish (at most drain_timeout),
 * closes every connection, then calls done. Safe to call twice. */
void ten_http_shutdown(ten_http_server_t *s, void (*done)(ten_http_server_t *s, void *ctx),
                       void *ctx);
void ten_http_server_free(ten_http_server_t *s);

/* Why a proxied request could not be served (tenement_upstream_errors_total{kind}). */
typedef enum ten_upstream_error {
  TEN_UPSTREAM_CONNECT,      /* could not connect */
  TEN_UPSTREAM_TIMEOUT,      /* connect or answer took too long */
  TEN_UPSTREAM_CLOSED,       /* the instance closed the connection early */
  TEN_UPSTREAM_INVALID,      /* not HTTP */
  TEN_UPSTREAM_NOT_RUNNING,  /* stopped, failed or still starting */
  TEN_UPSTREAM_WAKE_TIMEOUT, /* did not wake within wake_timeout */
  TEN_UPSTREAM_QUEUE_FULL,   /* too many requests waiting for it */
  TEN_UPSTREAM_ERROR_KINDS
} ten_upstream_error_t;

/* Clients cut off for being slow (tenement_client_timeouts_total{kind}). */
typedef enum ten_client_timeout {
  TEN_CLIENT_TIMEOUT_HEAD, /* the request head took longer than header_timeout */
  TEN_CLIENT_TIMEOUT_BODY, /* the body was silent for client_timeout, or took over body_timeout */
  TEN_CLIENT_TIMEOUT_SEND, /* the client read nothing of its answer for send_timeout */
  TEN_CLIENT_TIMEOUT_KINDS
} ten_client_timeout_t;

/* Counters for /health and /metrics. */
typedef struct ten_http_stats {
  uint64_t connections_total;
  uint64_t connections_open;
  uint64_t requests_total;
  uint64_t requests_in_flight;
  uint64_t connections_refused; /* over max_connections */
  uint64_t route_hook_errors;
  uint64_t upstream_errors[TEN_UPSTREAM_ERROR_KINDS];
  uint64_t client_timeouts[TEN_CLIENT_TIMEOUT_KINDS];
} ten_http_stats_t;
const ten_http_stats_t *ten_http_stats(const ten_http_server_t *s);
/* Writes the proxy's metric families (requests, durations, upstream
 * errors, connections) in Prometheus text format. */
void ten_http_metrics(ten_http_server_t *s, ten_buf_t *out);

/* ---- the request a local handler answers ---- */

const char *ten_http_req_method(const ten_http_request_t *r);
/* The path without the query string, and the query (without '?'). */
const char *ten_http_req_path(const ten_http_request_t *r, size_t *len);
const char *ten_http_req_query(const ten_http_request_t *r, size_t *len);
/* First header of that name (case-insensitive), or NULL. */
const char *ten_http_req_header(const ten_http_request_t *r, const char *name, size_t *len);
const char *ten_http_req_body(const ten_http_request_t *r, size_t *len);
const char *ten_http_req_client_ip(const ten_http_request_t *r);

/* Answers the request. extra_headers: "Name: value\r\n" lines, or NULL.
 * Exactly one respond call per request. */
void ten_http_respond(ten_http_request_t *r, int status, const char *content_type, const char *body,
                      size_t len, const char *extra_headers);
void ten_http_respond_json(ten_http_request_t *r, int status, const ten_buf_t *json);
/* {"error": message, ...detail}: the JSON error shape every subsystem uses. */
void ten_http_respond_error(ten_http_request_t *r, int status, const char *message,
                            const char *detail_json_members);

const char *ten_http_status_text(int status);

/* ---- answering later, and streaming ---- */

/* A handler that answers later (after work on the threadpool) or streams
 * registers fn: it runs once if the connection goes away (client gone,
 * server shutting down) before the answer is complete. After it the
 * request must not be used. */
void ten_http_req_on_close(ten_http_request_t *r, void (*fn)(void *ctx), void *ctx);

/* A response sent in pieces (chunked), e.g. Server-Sent Events. The
 * connection stays open until ten_http_stream_end or the client leaves. */
void ten_http_stream_begin(ten_http_request_t *r, int status, const char *content_type,
                           const char *extra_headers);
/* false when the client reads too slowly (more than a megabyte waiting):
 * the caller should end the stream (an SSE client resumes by its
 * Last-Event-ID). */
bool ten_http_stream_write(ten_http_request_t *r, const char *data, size_t len);
void ten_http_stream_end(ten_http_request_t *r);

#endif
