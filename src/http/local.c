/* local.c: requests answered by ten itself on the root domain.
 *
 * Other subsystems (the API, /health, /metrics) register handlers by path;
 * a handler reads the request through the ten_http_req_* accessors and
 * answers with ten_http_respond (now or later) or streams (SSE). See
 * server.h for the promises made to handlers.
 */
#include "http/conn.h"

#include "util/json.h"

#include <stdlib.h>
#include <string.h>

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
  ten__conn_write_copy(c, out.data, out.len);
  ten_buf_free(&out);
  c->streaming = true;
  c->resp_started = true;
  /* A stream may idle for a long time: only the send deadline (a reader
   * that stops reading is cut), and TCP keepalive. */
  ten__conn_disarm(c);
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
  ten__conn_write_copy(c, out.data, out.len);
  ten_buf_free(&out);
  return true;
}

void ten_http_stream_end(ten_http_request_t *c) {
  if (!c->streaming) return;
  c->streaming = false;
  c->local_close_fn = NULL;
  if (c->closing) return;
  ten__conn_write_copy(c, "0\r\n\r\n", 5);
  c->keep_alive = false; /* streams are long; the connection ends with it */
  c->resp_done = true;
  ten__conn_exchange_maybe_done(c);
}

void ten_http_respond(ten_http_request_t *c, int status, const char *content_type, const char *body,
                      size_t len, const char *extra_headers) {
  c->local_close_fn = NULL;
  if (c->resp_done || c->closing) return;
  ten__respond(c, status, content_type, body, len, extra_headers);
  c->resp_done = true;
  ten__conn_exchange_maybe_done(c);
}

void ten_http_respond_json(ten_http_request_t *r, int status, const ten_buf_t *json) {
  ten_http_respond(r, status, "application/json", json->data, json->len, NULL);
}

void ten_http_respond_error(ten_http_request_t *r, int status, const char *message,
                            const char *detail_json_members) {
  ten_buf_t body = TEN_BUF_INIT;
  ten__error_body(&body, message, detail_json_members);
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

void ten__local_run(ten__conn_t *c) {
  bool mismatch;
  const struct handler *h = find_handler(c, &mismatch);
  if (!h) {
    size_t len;
    const char *path = ten_http_req_path(c, &len);
    ten_buf_t detail = TEN_BUF_INIT;
    ten_buf_puts(&detail, "\"path\":");
    ten_json_quote(&detail, path, len);
    if (mismatch)
      ten__conn_error(c, 405, "method not allowed", detail.data, NULL);
    else
      ten__conn_error(c, 404, "not found", detail.data, NULL);
    ten_buf_free(&detail);
    return;
  }
  h->fn(h->ctx, c);
}

