/* server.c: the listener and the server's lifetime.
 *
 * Accepts connections (refusing those over max_connections with a short
 * 503), owns the list of connections, and drains them at shutdown: the
 * listener closes, idle connections go at once, busy ones finish their
 * exchange (at most drain_timeout), then the callback runs. A connection's
 * own life is conn.c's; what a request asks for is request.c's.
 */
#include "http/server.h"

#include "http/conn.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ status text */

const char *ten_http_status_text(int status) {
  switch (status) {
  case 100: return "Continue";
  case 101: return "Switching Protocols";
  case 200: return "OK";
  case 201: return "Created";
  case 202: return "Accepted";
  case 204: return "No Content";
  case 301: return "Moved Permanently";
  case 302: return "Found";
  case 304: return "Not Modified";
  case 400: return "Bad Request";
  case 401: return "Unauthorized";
  case 403: return "Forbidden";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Content Too Large";
  case 414: return "URI Too Long";
  case 429: return "Too Many Requests";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 502: return "Bad Gateway";
  case 503: return "Service Unavailable";
  case 504: return "Gateway Timeout";
  }
  return "Unknown";
}


/* ------------------------------------------------------------ closing */

static void maybe_shutdown_done(ten_http_server_t *s) {
  if (s->shutting_down && !s->conns && s->open_handles == 0 && s->shutdown_cb) {
    void (*cb)(ten_http_server_t *, void *) = s->shutdown_cb;
    s->shutdown_cb = NULL;
    cb(s, s->shutdown_ctx);
  }
}

static void on_server_handle_closed(uv_handle_t *h) {
  ten_http_server_t *s = h->data;
  s->open_handles--;
  maybe_shutdown_done(s);
}

/* Once no connection is left: the drain timer and the flusher go. */
static void close_last_handles(ten_http_server_t *s) {
  if (!uv_is_closing((uv_handle_t *)&s->drain_timer))
    uv_close((uv_handle_t *)&s->drain_timer, on_server_handle_closed);
  if (!uv_is_closing((uv_handle_t *)&s->flusher))
    uv_close((uv_handle_t *)&s->flusher, on_server_handle_closed);
}

/* ------------------------------------------------------------ accepting */

/* Over max_connections: a short 503 and a graceful close. The request the
 * client already sent is read and dropped while the close lingers, so the
 * kernel does not answer it with a reset that destroys the 503 in flight.
 * Lingering refusals are bounded too; beyond that a refusal is a plain
 * close, costing the connections already open nothing. */
#define REFUSED_LINGER_MAX 256

static void refuse_busy(ten_http_server_t *s, ten__conn_t *c) {
  static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             "Content-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
                             "{\"error\":\"too many connections\"}\n";
  s->stats.connections_refused++;
  if (s->refused_lingering >= REFUSED_LINGER_MAX) {
    uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    ten__conn_close_handles(c);
    return;
  }
  s->refused_lingering++;
  c->refused = true;
  ten__conn_write_copy(c, busy, sizeof busy - 1);
  ten__conn_finish(c);
}

static void on_connection(uv_stream_t *listener, int status) {
  ten_http_server_t *s = listener->data;
  if (status < 0) {
    ten_log(TEN_LOG_WARN, "http: accept: %s", uv_strerror(status));
    return;
  }
  ten__conn_t *c = ten_xcalloc(1, sizeof *c);
  c->server = s;
  uv_tcp_init(s->loop, &c->tcp);
  uv_timer_init(s->loop, &c->timer);
  c->tcp.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->stats.connections_total++;
  s->stats.connections_open++;
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) < 0) {
    ten__conn_close_handles(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  llhttp_init(&c->parser, HTTP_REQUEST, ten__request_settings());
  c->parser.data = c;
  c->mode = TEN_MODE_HEAD;
  ten__request_reset_scan(c);
  if (s->stats.connections_open > (uint64_t)s->config->settings.max_connections) {
    refuse_busy(s, c);
    return;
  }
  struct sockaddr_storage peer;
  int len = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &len) == 0) {
    if (peer.ss_family == AF_INET)
      uv_ip4_name((struct sockaddr_in *)&peer, c->client_ip, sizeof c->client_ip);
    else if (peer.ss_family == AF_INET6)
      uv_ip6_name((struct sockaddr_in6 *)&peer, c->client_ip, sizeof c->client_ip);
  }
  ten__conn_arm(c, TEN__KEEPALIVE_TIMEOUT_MS);
  ten__conn_update_reading(c);
}

/* ------------------------------------------------------------ server */

int ten_http_server_new(uv_loop_t *loop, ten_hv_t *hv, ten_config_t *config,
                        ten_http_server_t **out, ten_err_t *err) {
  ten__request_settings(); /* builds the parser settings once */
  ten_http_server_t *s = ten_xcalloc(1, sizeof *s);
  s->loop = loop;
  s->hv = hv;
  s->config = ten_config_ref(config);
  uv_tcp_init(loop, &s->listener);
  uv_timer_init(loop, &s->drain_timer);
  uv_check_init(loop, &s->flusher);
  s->listener.data = s->drain_timer.data = s->flusher.data = s;
  s->open_handles = 3;
  ten__proxy_init(s);
  *out = s;
  return 0;
}

int ten_http_listen(ten_http_server_t *s, ten_err_t *err) {
  const ten_settings_t *set = &s->config->settings;
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(set->listen, set->port, (struct sockaddr_in *)&addr);
  if (rc < 0) rc = uv_ip6_addr(set->listen, set->port, (struct sockaddr_in6 *)&addr);
  if (rc < 0)
    return ten_errf(err, rc, "listen address '%s' is not an IPv4 or IPv6 address", set->listen);
  if ((rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&addr, 0)) < 0 ||
      (rc = uv_listen((uv_stream_t *)&s->listener, 1024, on_connection)) < 0)
    return ten_errf(err, rc, "cannot listen on %s:%d: %s", set->listen, set->port, uv_strerror(rc));
  s->listening = true;
  return 0;
}

int ten_http_port(const ten_http_server_t *s) {
  struct sockaddr_storage addr;
  int len = sizeof addr;
  if (uv_tcp_getsockname(&s->listener, (struct sockaddr *)&addr, &len) < 0) return -1;
  if (addr.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&addr)->sin_port);
  return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
}

void ten_http_set_config(ten_http_server_t *s, ten_config_t *config) {
  ten_config_t *old = s->config;
  s->config = ten_config_ref(config);
  ten_config_unref(old);
}

const ten_http_stats_t *ten_http_stats(const ten_http_server_t *s) { return &s->stats; }

uv_loop_t *ten_http_loop(const ten_http_server_t *s) { return s->loop; }

static void on_drain_timeout(uv_timer_t *t) {
  ten_http_server_t *s = t->data;
  if (s->conns) ten_log(TEN_LOG_WARN, "http: drain timeout: closing connections still busy");
  for (ten__conn_t *c = s->conns; c; c = c->next) ten__conn_abort(c);
  if (!s->conns) close_last_handles(s);
}

/* Closes idle connections now; busy ones close when their exchange ends. */
static void close_idle(ten_http_server_t *s) {
  for (ten__conn_t *c = s->conns, *next; c; c = next) {
    next = c->next;
    if (!c->closing && c->mode == TEN_MODE_HEAD && !ten__conn_request_started(c)) {
      ten__conn_close(c);
    } else if (c->streaming) {
      /* A stream never finishes by itself: tell its producer, end it. */
      ten__conn_notify_local_close(c);
      ten_http_stream_end(c);
    } else {
      c->keep_alive = false;
    }
  }
}

void ten_http_shutdown(ten_http_server_t *s, void (*done)(ten_http_server_t *s, void *ctx),
                       void *ctx) {
  if (s->shutting_down) return;
  s->shutting_down = true;
  s->shutdown_cb = done;
  s->shutdown_ctx = ctx;
  uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
  close_idle(s);
  ten__proxy_shutdown(s);
  double drain = s->config->settings.drain_timeout;
  if (!s->conns) {
    close_last_handles(s);
  } else {
    uv_timer_start(&s->drain_timer, on_drain_timeout, (uint64_t)(drain * 1000), 0);
  }
  maybe_shutdown_done(s);
}

void ten_http_server_free(ten_http_server_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->handler_count; i++) {
    free(s->handlers[i].method);
    free(s->handlers[i].path);
  }
  free(s->handlers);
  ten_config_unref(s->config);
  free(s);
  ten_iobuf_trim();
  ten__write_trim();
}

void ten__server_conn_closed(ten_http_server_t *s) {
  /* The last busy connection is gone before the drain timeout: stop waiting. */
  if (s->shutting_down && !s->conns) close_last_handles(s);
  maybe_shutdown_done(s);
}
