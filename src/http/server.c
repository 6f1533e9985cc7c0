#include "http/server.h"

#include "http/conn.h"
#include "util/json.h"
#include "util/log.h"
#include "util/time.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINGER_MS 2000

static uint64_t ms_of(double seconds) { return seconds <= 0 ? 1 : (uint64_t)(seconds * 1000.0); }
#define SETTINGS(c)          (&(c)->server->config->settings)
#define KEEPALIVE_TIMEOUT_MS ms_of(SETTINGS(c)->keepalive_timeout)
#define HEADER_TIMEOUT_MS    ms_of(SETTINGS(c)->header_timeout)
#define BODY_TIMEOUT_MS      ms_of(SETTINGS(c)->client_timeout)

static llhttp_settings_t request_settings;

static void conn_process(ten__conn_t *c);
static void conn_process_guarded(ten__conn_t *c);
static void conn_close(ten__conn_t *c);
static void arm(ten__conn_t *c, uint64_t ms);
static void unmark_dirty(ten__conn_t *c);
static void flush_out(ten__conn_t *c);
static void exchange_maybe_done(ten__conn_t *c);
static void send_error_and_discard(ten__conn_t *c, int status, const char *message,
                                   const char *detail_json, const char *extra_headers);

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

/* ------------------------------------------------------------ llhttp callbacks */

static int on_message_begin(llhttp_t *p) {
  ten__conn_t *c = p->data;
  ten__head_reset(&c->head);
  c->head.limit = (uint32_t)SETTINGS(c)->max_header_size;
  c->obs_fold = false;
  c->body_bytes = 0;
  c->body_too_large = false;
  /* The first byte of a request: from now on the head must arrive in time. */
  arm(c, HEADER_TIMEOUT_MS);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  return ten__head_append(&c->head, 0, at, len) ? HPE_USER : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  if (c->mode != TEN_MODE_HEAD) return 0; /* trailers: forwarded with the body */
  return ten__head_append(&c->head, 1, at, len) ? HPE_USER : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  if (c->mode != TEN_MODE_HEAD) return 0;
  /* llhttp accepts obs-fold (RFC 9112 5.2) and reports the folded line as a
   * second piece of the value from the middle of the buffer; a value split
   * by a read boundary continues at the start of the next buffer instead. */
  if (c->head.last == 2 && at != c->exec_start) {
    c->obs_fold = true;
    return HPE_USER;
  }
  return ten__head_append(&c->head, 2, at, len) ? HPE_USER : 0;
}

static int on_headers_complete(llhttp_t *p) {
  ten__conn_t *c = p->data;
  c->pause = TEN_PAUSE_HEAD;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  c->body_bytes += (int64_t)len;
  int64_t max = SETTINGS(c)->max_body_size;
  if (max > 0 && c->body_bytes > max && c->mode != TEN_MODE_DISCARD) {
    c->body_too_large = true;
    return HPE_USER;
  }
  if (c->mode == TEN_MODE_LOCAL) {
    if (c->head.arena.len - c->local_body_off + len > TEN_HTTP_LOCAL_BODY_MAX) return HPE_USER;
    ten_buf_append(&c->head.arena, at, len);
  } else if (c->mode == TEN_MODE_DISCARD) {
    c->discarded += len;
    if (c->discarded > TEN_HTTP_DISCARD_MAX) {
      c->keep_alive = false;
      return HPE_USER;
    }
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  ten__conn_t *c = p->data;
  c->pause = TEN_PAUSE_DONE;
  return HPE_PAUSED;
}

static void init_settings(void) {
  static bool done;
  if (done) return;
  done = true;
  llhttp_settings_init(&request_settings);
  request_settings.on_message_begin = on_message_begin;
  request_settings.on_url = on_url;
  request_settings.on_header_field = on_header_field;
  request_settings.on_header_value = on_header_value;
  request_settings.on_headers_complete = on_headers_complete;
  request_settings.on_body = on_body;
  request_settings.on_message_complete = on_message_complete;
}

const llhttp_settings_t *ten__request_settings(void) {
  init_settings();
  return &request_settings;
}

/* ------------------------------------------------------------ timers */

static void on_conn_timeout(uv_timer_t *t);

/* Moves the connection's deadline. The timer is only re-armed when the new
 * deadline is earlier than the one it will fire at; otherwise it fires
 * early and re-arms itself, so steady traffic does not churn the timer heap. */
static void arm(ten__conn_t *c, uint64_t ms) {
  c->deadline_ms = uv_now(c->server->loop) + ms;
  if (uv_is_active((uv_handle_t *)&c->timer) && uv_timer_get_due_in(&c->timer) <= ms) return;
  uv_timer_start(&c->timer, on_conn_timeout, ms, 0);
}

static bool request_started(const ten__conn_t *c) {
  return c->head.arena.len > 0 || c->mode != TEN_MODE_HEAD;
}

static void on_conn_timeout(uv_timer_t *t) {
  ten__conn_t *c = t->data;
  uint64_t now = uv_now(c->server->loop);
  if (now < c->deadline_ms) {
    uv_timer_start(&c->timer, on_conn_timeout, c->deadline_ms - now, 0);
    return;
  }
  if (c->closing) {
    conn_close(c); /* lingering close is over */
    return;
  }
  if (c->waiting_for) {
    ten__proxy_wake_timeout(c);
    return;
  }
  if (c->mode == TEN_MODE_HEAD && !request_started(c)) {
    conn_close(c); /* idle keep-alive connection */
    return;
  }
  if (c->mode == TEN_MODE_HEAD || (c->mode == TEN_MODE_LOCAL && !c->req_done)) {
    c->keep_alive = false;
    c->req_done = true; /* nothing more is read: the answer ends the connection */
    send_error_and_discard(c, 408, "request timeout", NULL, NULL);
    return;
  }
  if (!c->req_done) {
    /* The client stopped sending a body the proxy is forwarding. */
    if (c->mode == TEN_MODE_PROXY) ten__proxy_detach(c);
    if (!c->resp_done && c->mode == TEN_MODE_PROXY)
      ten__conn_abort(c);
    else
      conn_close(c);
  }
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

static void on_conn_closed(uv_handle_t *h) {
  ten__conn_t *c = h->data;
  if (--c->open_handles > 0) return;
  ten_http_server_t *s = c->server;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->stats.connections_open--;
  unmark_dirty(c);
  ten__wbatch_drop(&c->out);
  ten_iobuf_unref(c->rbuf);
  ten_buf_free(&c->head.arena);
  free(c);
  /* The last busy connection is gone before the drain timeout: stop waiting. */
  if (s->shutting_down && !s->conns) close_last_handles(s);
  maybe_shutdown_done(s);
}

static void release_in_flight(ten__conn_t *c) {
  if (c->in_flight) {
    c->in_flight = false;
    c->server->stats.requests_in_flight--;
  }
}

static void close_handles(ten__conn_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

/* Tears the connection down now; pending writes are cancelled. */
void ten__conn_arm_wake_timeout(ten__conn_t *c, double seconds) { arm(c, ms_of(seconds)); }

/* Tells an unfinished local answer that its connection is going. */
static void notify_local_close(ten__conn_t *c) {
  void (*fn)(void *) = c->local_close_fn;
  c->local_close_fn = NULL;
  if (fn) fn(c->local_close_ctx);
}

static void conn_close(ten__conn_t *c) {
  c->closing = true;
  notify_local_close(c);
  ten__proxy_unwait(c);
  if (c->mode == TEN_MODE_PROXY || c->mode == TEN_MODE_TUNNEL) ten__proxy_detach(c);
  release_in_flight(c);
  close_handles(c);
}

void ten__conn_abort(ten__conn_t *c) {
  if (!c->closing && c->out.count) flush_out(c); /* what was sent so far, then the reset */
  c->closing = true;
  notify_local_close(c);
  ten__proxy_unwait(c);
  if (c->mode == TEN_MODE_PROXY || c->mode == TEN_MODE_TUNNEL) ten__proxy_detach(c);
  release_in_flight(c);
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  /* A reset, not a FIN: the client must not take a cut-off response as whole. */
  if (uv_tcp_close_reset(&c->tcp, on_conn_closed) < 0)
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  static char sink[4096]; /* discarded bytes: never read back */
  buf->base = sink;
  buf->len = sizeof sink;
}

static void on_linger_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  if (nread < 0) conn_close(stream->data);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  ten__conn_t *c = req->data;
  free(req);
  if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
    conn_close(c);
    return;
  }
  /* Linger: read and drop what the client still sends, so closing does not
   * reset the connection before it has read our response. */
  c->reading = true;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_linger_alloc, on_linger_read) < 0)
    conn_close(c);
  else
    arm(c, LINGER_MS);
}

/* Closes once everything queued has been written. */
static void conn_finish(ten__conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  notify_local_close(c);
  ten__proxy_unwait(c);
  if (c->mode == TEN_MODE_PROXY) ten__proxy_detach(c);
  release_in_flight(c);
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
  uv_timer_stop(&c->timer);
  /* The last answer may still be gathered: it goes before the FIN. */
  c->closing = false;
  flush_out(c);
  c->closing = true;
  uv_shutdown_t *req = ten_xmalloc(sizeof *req);
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    free(req);
    close_handles(c);
  }
}

/* ------------------------------------------------------------ writing */

/* len bytes of the queued ones reached the socket: true when that took the
 * connection below the low-water mark, so reading may resume. */
static bool client_wrote(ten__conn_t *c, size_t len) {
  bool was_high = c->write_pending >= TEN_HTTP_LOW_WATER;
  c->write_pending -= len;
  return was_high && c->write_pending < TEN_HTTP_LOW_WATER;
}

static void client_drained(ten__conn_t *c) {
  if (c->mode == TEN_MODE_PROXY || c->mode == TEN_MODE_TUNNEL) ten__proxy_client_drained(c);
  ten__conn_update_reading(c);
}

static void on_client_write(void *owner, int status, size_t len) {
  ten__conn_t *c = owner;
  bool drained = client_wrote(c, len);
  c->writes--;
  if (status < 0) {
    if (!c->closing) ten__conn_abort(c);
    return;
  }
  if (c->closing) return;
  if (drained) client_drained(c);
}

static void unmark_dirty(ten__conn_t *c) {
  if (!c->dirty) return;
  ten_http_server_t *s = c->server;
  if (c->prev_dirty) c->prev_dirty->next_dirty = c->next_dirty;
  else s->dirty = c->next_dirty;
  if (c->next_dirty) c->next_dirty->prev_dirty = c->prev_dirty;
  c->next_dirty = c->prev_dirty = NULL;
  c->dirty = false;
}

/* Hands what this connection gathered to the socket: one writev. */
static void flush_out(ten__conn_t *c) {
  unmark_dirty(c);
  if (!c->out.count) return;
  size_t bytes = c->out.bytes;
  int rc = ten__wbatch_flush(&c->out, (uv_stream_t *)&c->tcp, on_client_write, c);
  if (rc < 0) {
    ten__conn_abort(c);
    return;
  }
  if (rc == 0) c->writes++;
  else if (client_wrote(c, bytes)) c->drained = true;
}

static void flush_now(ten__conn_t *c) {
  flush_out(c);
  if (c->drained) {
    c->drained = false;
    if (!c->closing) client_drained(c);
  }
}

/* After every loop turn's I/O callbacks: each dirty connection writes once. */
static void on_flush(uv_check_t *h) {
  ten_http_server_t *s = h->data;
  while (s->dirty) flush_now(s->dirty);
  uv_check_stop(&s->flusher);
}

void ten__conn_flush(ten__conn_t *c) {
  if (c->dirty && !c->closing) flush_now(c);
}

void ten__conn_write(ten__conn_t *c, ten_iobuf_t *buf, const char *data, size_t len) {
  if (c->closing || len == 0) return;
  if (!ten__wbatch_add(&c->out, buf, data, len)) {
    flush_out(c);
    if (c->closing) return;
    ten__wbatch_add(&c->out, buf, data, len);
  }
  c->write_pending += len;
  if (!c->dirty) {
    ten_http_server_t *s = c->server;
    c->dirty = true;
    c->prev_dirty = NULL;
    c->next_dirty = s->dirty;
    if (s->dirty) s->dirty->prev_dirty = c;
    s->dirty = c;
    uv_check_start(&s->flusher, on_flush);
  }
}

/* Copies bytes into iobufs and writes them: for heads and local bodies. */
static void write_copy(ten__conn_t *c, const char *data, size_t len) {
  while (len > 0 && !c->closing) {
    ten_iobuf_t *b = ten_iobuf_get_sized(len > TEN_IOBUF_SMALL);
    size_t n = TEN_MIN(len, (size_t)b->size);
    memcpy(b->data, data, n);
    ten__conn_write(c, b, b->data, n);
    ten_iobuf_unref(b);
    data += n;
    len -= n;
  }
}

/* ------------------------------------------------------------ reading */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ten__conn_t *c = h->data;
  ten_iobuf_t *b = ten_iobuf_get_sized(ten_iobuf_want_large(c->last_read));
  buf->base = b->data;
  buf->len = b->size;
}

static ten_iobuf_t *iobuf_of(const uv_buf_t *buf) {
  return (ten_iobuf_t *)(void *)(buf->base - offsetof(ten_iobuf_t, data));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  ten__conn_t *c = stream->data;
  ten_iobuf_t *b = buf->base && buf->len ? iobuf_of(buf) : NULL;
  if (nread <= 0) {
    ten_iobuf_unref(b);
    if (nread == 0) return;
    c->client_eof = true;
    if (c->streaming) {
      conn_close(c); /* the reader of a stream left */
    } else if (c->mode == TEN_MODE_TUNNEL && nread == UV_EOF) {
      ten__proxy_tunnel_client_eof(c); /* half-close: the other way stays open */
      ten__conn_update_reading(c);
    } else if (c->mode == TEN_MODE_HEAD && !request_started(c)) {
      conn_close(c); /* an idle client left */
    } else if (c->mode == TEN_MODE_PROXY && !c->resp_done) {
      /* The client gave up before the response was complete. */
      ten__proxy_detach(c);
      conn_close(c);
    } else if (nread == UV_EOF && c->req_done) {
      /* Half-close after a complete request: finish the response, then close. */
      c->keep_alive = false;
      ten__conn_update_reading(c);
    } else {
      conn_close(c);
    }
    return;
  }
  if (c->rbuf) {
    /* Cannot happen: reading stops while unparsed bytes are held. */
    ten_iobuf_unref(b);
    conn_close(c);
    return;
  }
  c->rbuf = b;
  c->rpos = 0;
  c->rlen = (size_t)nread;
  c->last_read = (size_t)nread;
  if (c->mode != TEN_MODE_HEAD && !c->req_done) arm(c, BODY_TIMEOUT_MS);
  conn_process_guarded(c);
}

void ten__conn_update_reading(ten__conn_t *c) {
  if (c->closing || uv_is_closing((uv_handle_t *)&c->tcp)) return;
  bool proxied = c->mode == TEN_MODE_PROXY || c->mode == TEN_MODE_TUNNEL;
  bool backpressure = c->write_pending >= TEN_HTTP_HIGH_WATER ||
                      (proxied && ten__proxy_backpressure(c));
  bool want = !c->rbuf && !c->client_eof && !backpressure;
  bool in_body = c->mode != TEN_MODE_HEAD && c->mode != TEN_MODE_TUNNEL && !c->req_done;
  if (want && !c->reading) {
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0) c->reading = true;
    if (in_body) arm(c, BODY_TIMEOUT_MS);
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    /* Not reading because a peer is slow is not the client's fault. */
    if (in_body && backpressure) uv_timer_stop(&c->timer);
  }
}

/* ------------------------------------------------------------ responses */

static void response_head(ten__conn_t *c, ten_buf_t *out, int status, const char *content_type,
                          size_t content_length, const char *extra_headers) {
  ten_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, ten_http_status_text(status));
  if (content_type) ten_buf_printf(out, "Content-Type: %s\r\n", content_type);
  ten_buf_printf(out, "Content-Length: %zu\r\n", content_length);
  if (extra_headers) ten_buf_puts(out, extra_headers);
  if (!c->keep_alive || c->server->shutting_down)
    ten_buf_puts(out, "Connection: close\r\n");
  else if (llhttp_get_http_minor(&c->parser) == 0)
    ten_buf_puts(out, "Connection: keep-alive\r\n");
  ten_buf_puts(out, "\r\n");
}

static void respond(ten__conn_t *c, int status, const char *content_type, const char *body,
                    size_t len, const char *extra_headers) {
  ten_buf_t out = TEN_BUF_INIT;
  response_head(c, &out, status, content_type, len, extra_headers);
  bool head_only = llhttp_get_method(&c->parser) == HTTP_HEAD;
  if (!head_only && len <= 16384) {
    ten_buf_append(&out, body, len);
    write_copy(c, out.data, out.len);
  } else {
    write_copy(c, out.data, out.len);
    if (!head_only) write_copy(c, body, len);
  }
  ten_buf_free(&out);
}

static void error_body(ten_buf_t *out, const char *message, const char *detail_json) {
  ten_buf_puts(out, "{\"error\":");
  ten_json_quote(out, message, strlen(message));
  if (detail_json && *detail_json) {
    ten_buf_putc(out, ',');
    ten_buf_puts(out, detail_json);
  }
  ten_buf_puts(out, "}\n");
}

/* An error answer for a request whose body may still be arriving: the rest
 * of the body is read and dropped (up to a limit) to keep the connection. */
static void send_error_and_discard(ten__conn_t *c, int status, const char *message,
                                   const char *detail_json, const char *extra_headers) {
  if (c->closing) return;
  ten_buf_t body = TEN_BUF_INIT;
  error_body(&body, message, detail_json);
  if (!c->req_done) {
    c->mode = TEN_MODE_DISCARD;
    c->discarded = 0;
  }
  respond(c, status, "application/json", body.data, body.len, extra_headers);
  ten_buf_free(&body);
  c->resp_done = true;
  exchange_maybe_done(c);
}

void ten__conn_error(ten__conn_t *c, int status, const char *message, const char *detail_json,
                     const char *extra_headers) {
  send_error_and_discard(c, status, message, detail_json, extra_headers);
}

/* ------------------------------------------------------------ local handlers */

const char *ten_http_req_method(const ten_http_request_t *r) {
  return llhttp_method_name((llhttp_method_t)llhttp_get_method((llhttp_t *)&r->parser));
}

const char *ten_http_req_path(const ten_http_request_t *r, size_t *len) {
  const char *url = ten__head_str(&r->head, r->head.target_off);
  const char *q = memchr(url, '?', r->head.target_len);
  *len = q ? (size_t)(q - url) : r->head.target_len;
  return url;
}

const char *ten_http_req_query(const ten_http_request_t *r, size_t *len) {
  const char *url = ten__head_str(&r->head, r->head.target_off);
  const char *q = memchr(url, '?', r->head.target_len);
  if (!q) {
    *len = 0;
    return "";
  }
  *len = r->head.target_len - (size_t)(q - url) - 1;
  return q + 1;
}

const char *ten_http_req_header(const ten_http_request_t *r, const char *name, size_t *len) {
  return ten__head_get(&r->head, name, len);
}

const char *ten_http_req_body(const ten_http_request_t *r, size_t *len) {
  *len = r->head.arena.len - r->local_body_off;
  return r->head.arena.data + r->local_body_off;
}

const char *ten_http_req_client_ip(const ten_http_request_t *r) { return r->real_ip; }

/* The client's address for ten's own purposes: the peer, unless the peer is
 * a trusted proxy; then the rightmost X-Forwarded-For entry that is not one
 * (a client can prepend anything, but not what its proxies appended). */
static void resolve_client_ip(ten__conn_t *c) {
  const ten_settings_t *set = SETTINGS(c);
  snprintf(c->real_ip, sizeof c->real_ip, "%s", c->client_ip);
  c->peer_trusted = ten_cidr_match_any(set->trusted_proxies, set->trusted_proxy_count, c->client_ip);
  if (!c->peer_trusted) return;
  const ten__head_t *h = &c->head;
  for (int i = (int)h->count - 1; i >= 0; i--) {
    const ten__header_t *hd = &h->headers[i];
    if (!ten_strieq(h->arena.data + hd->name_off, hd->name_len, "x-forwarded-for")) continue;
    const char *v = h->arena.data + hd->value_off;
    size_t end = hd->value_len;
    while (end > 0) {
      size_t start = end;
      while (start > 0 && v[start - 1] != ',') start--;
      size_t a = start, z = end;
      while (a < z && (v[a] == ' ' || v[a] == '\t')) a++;
      while (z > a && (v[z - 1] == ' ' || v[z - 1] == '\t')) z--;
      char ip[48];
      if (z > a && z - a < sizeof ip) {
        memcpy(ip, v + a, z - a);
        ip[z - a] = '\0';
        snprintf(c->real_ip, sizeof c->real_ip, "%s", ip);
        if (!ten_cidr_match_any(set->trusted_proxies, set->trusted_proxy_count, ip)) return;
      }
      end = start ? start - 1 : 0;
    }
  }
}

void ten_http_req_on_close(ten_http_request_t *r, void (*fn)(void *ctx), void *ctx) {
  r->local_close_fn = fn;
  r->local_close_ctx = ctx;
}

void ten_http_stream_begin(ten_http_request_t *c, int status, const char *content_type,
                           const char *extra_headers) {
  if (c->resp_done || c->closing) return;
  ten_buf_t out = TEN_BUF_INIT;
  ten_buf_printf(&out, "HTTP/1.1 %d %s\r\n", status, ten_http_status_text(status));
  if (content_type) ten_buf_printf(&out, "Content-Type: %s\r\n", content_type);
  ten_buf_puts(&out, "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
  if (extra_headers) ten_buf_puts(&out, extra_headers);
  ten_buf_puts(&out, "\r\n");
  write_copy(c, out.data, out.len);
  ten_buf_free(&out);
  c->streaming = true;
  c->resp_started = true;
  /* A stream may idle for a long time: no deadline, but TCP keepalive. */
  uv_timer_stop(&c->timer);
  uv_tcp_keepalive(&c->tcp, 1, 60);
}

bool ten_http_stream_write(ten_http_request_t *c, const char *data, size_t len) {
  if (!c->streaming || c->closing) return false;
  if (c->write_pending > 1024 * 1024) return false;
  if (len == 0) return true;
  char head[24];
  int n = snprintf(head, sizeof head, "%zx\r\n", len);
  ten_buf_t out = TEN_BUF_INIT;
  ten_buf_reserve(&out, (size_t)n + len + 2);
  ten_buf_append(&out, head, (size_t)n);
  ten_buf_append(&out, data, len);
  ten_buf_append(&out, "\r\n", 2);
  write_copy(c, out.data, out.len);
  ten_buf_free(&out);
  return true;
}

void ten_http_stream_end(ten_http_request_t *c) {
  if (!c->streaming) return;
  c->streaming = false;
  c->local_close_fn = NULL;
  if (c->closing) return;
  write_copy(c, "0\r\n\r\n", 5);
  c->keep_alive = false; /* streams are long; the connection ends with it */
  c->resp_done = true;
  exchange_maybe_done(c);
}

void ten_http_respond(ten_http_request_t *c, int status, const char *content_type, const char *body,
                      size_t len, const char *extra_headers) {
  c->local_close_fn = NULL;
  if (c->resp_done || c->closing) return;
  respond(c, status, content_type, body, len, extra_headers);
  c->resp_done = true;
  exchange_maybe_done(c);
}

void ten_http_respond_json(ten_http_request_t *r, int status, const ten_buf_t *json) {
  ten_http_respond(r, status, "application/json", json->data, json->len, NULL);
}

void ten_http_respond_error(ten_http_request_t *r, int status, const char *message,
                            const char *detail_json_members) {
  ten_buf_t body = TEN_BUF_INIT;
  error_body(&body, message, detail_json_members);
  ten_http_respond(r, status, "application/json", body.data, body.len, NULL);
  ten_buf_free(&body);
}

void ten_http_handle(ten_http_server_t *s, const char *method, const char *path, bool prefix,
                     ten_http_handler_fn fn, void *ctx) {
  s->handlers = ten_xrealloc(s->handlers, (s->handler_count + 1) * sizeof *s->handlers);
  s->handlers[s->handler_count++] =
      (struct handler){method ? ten_xstrdup(method) : NULL, ten_xstrdup(path), prefix, fn, ctx};
}

static const struct handler *find_handler(ten__conn_t *c, bool *method_mismatch) {
  size_t len;
  const char *path = ten_http_req_path(c, &len);
  const char *method = ten_http_req_method(c);
  *method_mismatch = false;
  for (size_t i = 0; i < c->server->handler_count; i++) {
    const struct handler *h = &c->server->handlers[i];
    size_t hl = strlen(h->path);
    bool match = h->prefix ? (len >= hl && memcmp(path, h->path, hl) == 0)
                           : (len == hl && memcmp(path, h->path, hl) == 0);
    if (!match) continue;
    bool method_ok = !h->method || !strcmp(h->method, method) ||
                     (!strcmp(h->method, "GET") && !strcmp(method, "HEAD"));
    if (method_ok) return h;
    *method_mismatch = true;
  }
  return NULL;
}

static void run_local_handler(ten__conn_t *c) {
  bool mismatch;
  const struct handler *h = find_handler(c, &mismatch);
  if (!h) {
    size_t len;
    const char *path = ten_http_req_path(c, &len);
    ten_buf_t detail = TEN_BUF_INIT;
    ten_buf_puts(&detail, "\"path\":");
    ten_json_quote(&detail, path, len);
    if (mismatch)
      send_error_and_discard(c, 405, "method not allowed", detail.data, NULL);
    else
      send_error_and_discard(c, 404, "not found", detail.data, NULL);
    ten_buf_free(&detail);
    return;
  }
  h->fn(h->ctx, c);
}

/* ------------------------------------------------------------ routing */

static void host_detail(ten_buf_t *out, const ten__conn_t *c) {
  ten_buf_puts(out, "\"host\":");
  ten_json_quote(out, c->route.host, c->route.host_len);
}

static int count_headers(const ten__head_t *h, const char *name) {
  int n = 0;
  for (unsigned i = 0; i < h->count; i++)
    if (ten_strieq(h->arena.data + h->headers[i].name_off, h->headers[i].name_len, name)) n++;
  return n;
}

/* What llhttp lets through but we do not: whitespace inside a field name
 * ("Host : x" is a smuggling vector, RFC 9112 5.1). Trailing whitespace of
 * values is trimmed (it is not part of the value). */
static const char *check_and_trim_headers(ten__head_t *h) {
  for (unsigned i = 0; i < h->count; i++) {
    ten__header_t *hd = &h->headers[i];
    const char *name = h->arena.data + hd->name_off;
    for (uint32_t k = 0; k < hd->name_len; k++)
      if (name[k] == ' ' || name[k] == '\t') return "whitespace in a header field name";
    const char *value = h->arena.data + hd->value_off;
    while (hd->value_len && (value[hd->value_len - 1] == ' ' || value[hd->value_len - 1] == '\t'))
      hd->value_len--;
  }
  return NULL;
}

const char *ten__request_head_check(ten__conn_t *c) {
  const char *bad = check_and_trim_headers(&c->head);
  resolve_client_ip(c);
  size_t host_len = 0;
  const char *host = ten__head_get(&c->head, "host", &host_len);
  const char *domain = SETTINGS(c)->domain;
  if (host) ten_route_host(host, host_len, domain, strlen(domain), &c->route);
  return bad;
}

static void on_request_head(ten__conn_t *c) {
  ten_http_server_t *s = c->server;
  c->start_ns = ten_now_ns();
  c->resp_status = 0;
  c->recorded = false;
  s->stats.requests_total++;
  s->stats.requests_in_flight++;
  c->in_flight = true;
  c->keep_alive = llhttp_should_keep_alive(&c->parser) && !s->shutting_down &&
                  SETTINGS(c)->keepalive_timeout > 0;
  arm(c, BODY_TIMEOUT_MS);

  const char *bad = check_and_trim_headers(&c->head);
  resolve_client_ip(c);
  if (bad) {
    c->keep_alive = false;
    c->req_done = true; /* the framing cannot be trusted: read nothing more */
    char detail[128];
    snprintf(detail, sizeof detail, "\"detail\":\"%s\"", bad);
    send_error_and_discard(c, 400, "malformed request", detail, NULL);
    return;
  }
  int64_t max_body = SETTINGS(c)->max_body_size;
  if (max_body > 0 && (c->parser.flags & F_CONTENT_LENGTH) &&
      c->parser.content_length > (uint64_t)max_body) {
    /* Refused before a byte of it is read; the connection ends with the answer. */
    c->keep_alive = false;
    c->req_done = true;
    char detail[96];
    snprintf(detail, sizeof detail, "\"max_body_size\":%lld", (long long)max_body);
    send_error_and_discard(c, 413, "request body too large", detail, NULL);
    return;
  }

  if (llhttp_get_method(&c->parser) == HTTP_CONNECT) {
    c->keep_alive = false;
    send_error_and_discard(c, 405, "CONNECT is not supported", NULL, NULL);
    return;
  }
  /* An upgrade either becomes a tunnel (101) or ends with its response:
   * llhttp does not parse past an upgrade request. */
  c->upgrade = llhttp_get_upgrade(&c->parser) != 0;
  if (c->upgrade) c->keep_alive = false;

  size_t host_len = 0;
  const char *host = ten__head_get(&c->head, "host", &host_len);
  if (count_headers(&c->head, "host") > 1) {
    c->keep_alive = false;
    send_error_and_discard(c, 400, "more than one Host header", NULL, NULL);
    return;
  }
  if (!host) {
    c->keep_alive = false;
    send_error_and_discard(c, 400, "missing Host header", NULL, NULL);
    return;
  }
  const char *domain = s->config->settings.domain;
  ten_route_host(host, host_len, domain, strlen(domain), &c->route);

  /* The operator's per-request hook, if there is one, may pick the
   * instance itself; otherwise the Host decides. */
  char key[160];
  if (c->route.kind != TEN_ROUTE_BAD && c->route.kind != TEN_ROUTE_ROOT &&
      ten__proxy_route_hook(c, key, sizeof key)) {
    c->mode = TEN_MODE_PROXY;
    ten__proxy_start_key(c, key);
    return;
  }

  ten_buf_t detail = TEN_BUF_INIT;
  switch (c->route.kind) {
  case TEN_ROUTE_BAD:
    c->keep_alive = false;
    send_error_and_discard(c, 400, "invalid Host header", NULL, NULL);
    break;
  case TEN_ROUTE_ROOT:
    c->mode = TEN_MODE_LOCAL;
    c->local_body_off = c->head.arena.len;
    break; /* the handler runs once the body is in */
  case TEN_ROUTE_UNKNOWN:
    host_detail(&detail, c);
    ten_buf_printf(&detail, ",\"domain\":\"%s\"", domain);
    send_error_and_discard(c, 404, "unknown host", detail.data, NULL);
    break;
  case TEN_ROUTE_SERVICE:
  case TEN_ROUTE_INSTANCE:
    c->mode = TEN_MODE_PROXY;
    ten__proxy_start(c);
    break;
  }
  ten_buf_free(&detail);
}

/* ------------------------------------------------------------ the parse loop */

static void parse_error(ten__conn_t *c, llhttp_errno_t err) {
  c->keep_alive = false;
  c->req_done = true; /* nothing more will be parsed */
  if (c->mode == TEN_MODE_PROXY) {
    /* The body went bad halfway: the upstream got a partial request. */
    bool started = c->resp_started;
    ten__proxy_detach(c);
    c->mode = TEN_MODE_DISCARD;
    if (started) {
      ten__conn_abort(c);
      return;
    }
  }
  if (c->resp_done) {
    conn_finish(c); /* already answered (e.g. a body too long to skip) */
    return;
  }
  int status = 400;
  const char *message = "malformed request";
  if (err == HPE_USER && c->obs_fold) {
    message = "obsolete line folding in a header (RFC 9112 5.2)";
  } else if (err == HPE_USER && c->body_too_large) {
    status = 413;
    message = "request body too large";
  } else if (err == HPE_USER && (c->head.too_large || c->head.too_many)) {
    status = 431;
    message = c->head.too_many ? "too many header fields" : "request head too large";
  } else if (err == HPE_USER && c->mode == TEN_MODE_LOCAL) {
    status = 413;
    message = "request body too large";
  }
  ten_buf_t detail = TEN_BUF_INIT;
  if (status == 400) {
    const char *reason = llhttp_get_error_reason(&c->parser);
    ten_buf_puts(&detail, "\"detail\":");
    ten_json_quote(&detail, reason ? reason : "", reason ? strlen(reason) : 0);
  }
  c->mode = TEN_MODE_DISCARD;
  send_error_and_discard(c, status, message, detail.data, NULL);
  ten_buf_free(&detail);
}

static void conn_process(ten__conn_t *c) {
  static const char nothing[1];
  if (c->mode == TEN_MODE_TUNNEL) {
    if (c->rbuf && c->rpos < c->rlen && !c->closing)
      ten__proxy_body(c, c->rbuf, c->rbuf->data + c->rpos, c->rlen - c->rpos);
    c->rpos = c->rlen;
  }
  for (;;) {
    if (c->closing || c->blocked || c->mode == TEN_MODE_TUNNEL) break;
    const char *start;
    size_t avail;
    bool from_buffer = c->rbuf && c->rpos < c->rlen;
    if (from_buffer) {
      start = c->rbuf->data + c->rpos;
      avail = c->rlen - c->rpos;
    } else if (c->resume_pending) {
      /* After a head, llhttp needs one more call to finish a message that
       * has no body, even when no byte is left. */
      start = nothing;
      avail = 0;
    } else {
      break;
    }
    c->resume_pending = false;
    ten__mode_t mode_before = c->mode;
    bool in_body = mode_before != TEN_MODE_HEAD && !c->req_done;
    c->pause = TEN_PAUSE_NONE;
    c->exec_start = start;
    llhttp_errno_t err = llhttp_execute(&c->parser, start, avail);
    const char *stop = err == HPE_OK ? start + avail : llhttp_get_error_pos(&c->parser);
    if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      c->rpos = c->rlen; /* nothing after a parse error is trusted */
      parse_error(c, err);
      break;
    }
    /* Bytes of a request body, framing included, go to the upstream as they are. */
    if (in_body && mode_before == TEN_MODE_PROXY && stop > start)
      ten__proxy_body(c, c->rbuf, start, (size_t)(stop - start));
    if (from_buffer) c->rpos = (size_t)(stop - c->rbuf->data);
    if (err == HPE_PAUSED_UPGRADE) {
      /* The bytes after an upgrade request belong to the tunnel, if the
       * upstream agrees to one (ten__conn_tunnel). */
      err = HPE_PAUSED;
      c->pause = TEN_PAUSE_DONE;
    }
    if (err != HPE_PAUSED) continue;
    llhttp_resume(&c->parser);
    if (c->pause == TEN_PAUSE_HEAD) {
      c->resume_pending = true;
      on_request_head(c);
    } else if (c->pause == TEN_PAUSE_DONE) {
      c->req_done = true;
      if (c->mode == TEN_MODE_PROXY)
        ten__proxy_request_done(c);
      else if (c->mode == TEN_MODE_LOCAL)
        run_local_handler(c);
      /* A synchronous answer may already have finished the exchange and
       * reset the connection for the next request (req_done is false then). */
      if (c->req_done && !c->resp_done) {
        c->blocked = true; /* the next request waits for this response */
        uv_timer_stop(&c->timer);
      }
      exchange_maybe_done(c);
    }
  }
  if (c->rbuf && c->rpos >= c->rlen) {
    ten_iobuf_unref(c->rbuf);
    c->rbuf = NULL;
  }
  ten__conn_update_reading(c);
}

/* Both halves of the exchange are done: next request, or close. */
static void exchange_maybe_done(ten__conn_t *c) {
  if (!c->req_done || !c->resp_done || c->closing) return;
  release_in_flight(c);
  if (!c->keep_alive || c->server->shutting_down) {
    conn_finish(c);
    return;
  }
  c->mode = TEN_MODE_HEAD;
  c->req_done = c->resp_done = c->resp_started = false;
  c->blocked = false;
  c->inst = NULL;
  c->svc = NULL;
  c->discarded = 0;
  ten__head_reset(&c->head);
  arm(c, KEEPALIVE_TIMEOUT_MS);
  /* Pipelined bytes already read are parsed by the loop that called us, or
   * now if the response finished asynchronously. */
  conn_process_guarded(c);
}

static void conn_process_guarded(ten__conn_t *c) {
  if (c->processing) return;
  c->processing = true;
  conn_process(c);
  c->processing = false;
}

void ten__conn_response_done(ten__conn_t *c) {
  c->resp_done = true;
  if (!c->req_done) {
    /* The upstream answered before the request body was over: the rest of
     * the body cannot go anywhere, so this connection ends with the response. */
    c->keep_alive = false;
    c->mode = TEN_MODE_DISCARD;
    conn_finish(c);
    return;
  }
  exchange_maybe_done(c);
}

void ten__conn_tunnel(ten__conn_t *c) {
  if (c->closing) return;
  c->mode = TEN_MODE_TUNNEL;
  c->blocked = false;
  c->resp_done = false;
  release_in_flight(c); /* a tunnel is not a request in flight */
  /* Long-lived and possibly idle for hours: no timer, but TCP keepalive so a
   * vanished peer is noticed. */
  uv_timer_stop(&c->timer);
  uv_tcp_keepalive(&c->tcp, 1, 60);
  conn_process_guarded(c); /* bytes the client sent after the request */
}

static void on_tunnel_shutdown(uv_shutdown_t *req, int status) { free(req); }

void ten__conn_shutdown_write(ten__conn_t *c) {
  if (c->closing) return;
  flush_out(c);
  uv_shutdown_t *req = ten_xmalloc(sizeof *req);
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_tunnel_shutdown) < 0) free(req);
}

void ten__conn_unblock(ten__conn_t *c) {
  if (c->closing) return;
  c->blocked = false;
  conn_process_guarded(c);
}

/* ------------------------------------------------------------ accepting */

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
    close_handles(c);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  if (s->stats.connections_open > (uint64_t)s->config->settings.max_connections) {
    /* Over the limit: a short answer and a close, costing the connections
     * already open nothing. */
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                               "Content-Length: 33\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
                               "{\"error\":\"too many connections\"}\n";
    uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    s->stats.connections_refused++;
    close_handles(c);
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
  llhttp_init(&c->parser, HTTP_REQUEST, &request_settings);
  c->parser.data = c;
  c->mode = TEN_MODE_HEAD;
  arm(c, KEEPALIVE_TIMEOUT_MS);
  ten__conn_update_reading(c);
}

/* ------------------------------------------------------------ server */

int ten_http_server_new(uv_loop_t *loop, ten_hv_t *hv, ten_config_t *config,
                        ten_http_server_t **out, ten_err_t *err) {
  init_settings();
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
    if (!c->closing && c->mode == TEN_MODE_HEAD && !request_started(c)) {
      conn_close(c);
    } else if (c->streaming) {
      /* A stream never finishes by itself: tell its producer, end it. */
      notify_local_close(c);
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
