/* upstream.c: one connection to an instance and the exchange on it.
 *
 * Connects (or reuses a pooled connection), sends the request, parses the
 * response and forwards it to the client, from the iobuf it was read into.
 * Each side stops reading while the other has too much queued. A 101 turns
 * the exchange into a two-way tunnel. An upstream goes back to its pool
 * only after a complete, keep-alive exchange.
 */
#include "http/upstream.h"

#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static llhttp_settings_t response_settings;

static void up_process(ten__upstream_t *up);
static void up_update_reading(ten__upstream_t *up);
static void exchange_end(ten__upstream_t *up, bool reusable);

/* ------------------------------------------------------------ upstream lifetime */

static void on_up_closed(uv_handle_t *h) {
  ten__upstream_t *up = h->data;
  if (--up->open_handles > 0) return;
  pool_t *p = up->pool;
  ten__wbatch_drop(&up->out);
  ten_iobuf_unref(up->frame);
  ten_iobuf_unref(up->rbuf);
  ten_iobuf_unref(up->request_head);
  ten_buf_free(&up->head.arena);
  free(up);
  p->upstreams--;
  ten__pool_maybe_free(p);
}

void ten__up_close(ten__upstream_t *up) {
  if (up->closing) return;
  up->closing = true;
  ten__pool_remove_idle(up);
  up->client = NULL;
  uv_close(&up->h.handle, on_up_closed);
  uv_close((uv_handle_t *)&up->timer, on_up_closed);
}

static void on_up_timeout(uv_timer_t *t);

ten__upstream_t *ten__up_new(pool_t *p) {
  ten_http_server_t *s = p->server;
  ten__upstream_t *up = ten_xcalloc(1, sizeof *up);
  up->pool = p;
  p->upstreams++;
  int rc = p->inst->socket_path ? uv_pipe_init(s->loop, &up->h.pipe, 0)
                                : uv_tcp_init(s->loop, &up->h.tcp);
  if (rc < 0) {
    free(up);
    p->upstreams--;
    return NULL;
  }
  uv_timer_init(s->loop, &up->timer);
  up->h.handle.data = up->timer.data = up;
  up->open_handles = 2;
  llhttp_init(&up->parser, HTTP_RESPONSE, ten__response_settings());
  up->parser.data = up;
  return up;
}

/* ------------------------------------------------------------ errors */

void ten__instance_detail(ten_buf_t *out, const ten_instance_t *inst) {
  ten_buf_puts(out, "\"instance\":");
  ten_json_quote(out, inst->key, strlen(inst->key));
}

/* Fails the exchange: an error response if nothing was sent yet, else the
 * client connection is cut so it cannot mistake a partial response. */
void ten__up_fail(ten__upstream_t *up, int status, const char *message, int uv_err) {
  ten__conn_t *c = up->client;
  if (c) ten__pool_record(up->pool, c, c->resp_status ? c->resp_status : status);
  ten__up_close(up);
  if (!c) return;
  c->up = NULL;
  ten_instance_t *inst = c->inst;
  if (c->resp_started) {
    if (inst) ten_instance_release(inst);
    c->inst = NULL;
    ten__conn_abort(c);
    return;
  }
  ten_buf_t detail = TEN_BUF_INIT;
  if (inst) {
    ten__instance_detail(&detail, inst);
    if (uv_err) ten_buf_printf(&detail, ",\"detail\":\"%s\"", uv_strerror(uv_err));
    ten_log(TEN_LOG_WARN, "proxy: %s: %s%s%s", inst->key, message, uv_err ? ": " : "",
            uv_err ? uv_strerror(uv_err) : "");
    ten_instance_release(inst);
    c->inst = NULL;
  }
  c->mode = TEN_MODE_DISCARD;
  c->keep_alive = false;
  ten__conn_error(c, status, message, detail.data, NULL);
  ten_buf_free(&detail);
}

/* The upstream went away before answering. A reused keep-alive connection
 * may have been closed by the app just as we sent: retry once on a fresh
 * connection when no body went out (so the request can be sent again). */
static void upstream_lost(ten__upstream_t *up, int uv_err) {
  ten__conn_t *c = up->client;
  if (c && up->reused && !up->got_bytes && !up->body_sent && !up->chunked && !up->retried &&
      up->request_head && !up->closing) {
    pool_t *p = up->pool;
    ten__upstream_t *fresh = p->inst ? ten__up_new(p) : NULL;
    if (fresh) {
      fresh->retried = true;
      fresh->client = c;
      fresh->req_sent = up->req_sent;
      fresh->request_head = up->request_head;
      fresh->request_head_len = up->request_head_len;
      up->request_head = NULL;
      c->up = fresh;
      ten__up_close(up);
      if (ten__up_connect(fresh) == 0) return;
      ten__up_fail(fresh, 502, "cannot connect to the instance", UV_ECONNREFUSED);
      return;
    }
  }
  up->pool->server->stats.upstream_errors[TEN_UPSTREAM_CLOSED]++;
  if (up->got_bytes)
    ten__up_fail(up, 502, "the instance closed the connection mid-response", uv_err);
  else
    ten__up_fail(up, 502, "the instance closed the connection without answering", uv_err);
}

static void on_up_timeout(uv_timer_t *t);

/* Same lazy deadline as the client side (server.c arm): a busy upstream
 * moves its deadline on every read without touching the timer heap. */
static void up_arm(ten__upstream_t *up, uint64_t ms) {
  up->deadline_ms = uv_now(up->timer.loop) + ms;
  if (uv_is_active((uv_handle_t *)&up->timer) && uv_timer_get_due_in(&up->timer) <= ms) return;
  uv_timer_start(&up->timer, on_up_timeout, ms, 0);
}

static void on_up_timeout(uv_timer_t *t) {
  ten__upstream_t *up = t->data;
  uint64_t now = uv_now(t->loop);
  if (now < up->deadline_ms) {
    uv_timer_start(&up->timer, on_up_timeout, up->deadline_ms - now, 0);
    return;
  }
  if (up->in_pool) {
    ten__up_close(up); /* idle too long */
    return;
  }
  if (!up->connected)
    ten__up_fail(up, 502, "timed out connecting to the instance", UV_ETIMEDOUT);
  else
    ten__up_fail(up, 504, "the instance did not answer in time", 0);
}

static void arm_response_timeout(ten__upstream_t *up) {
  ten_http_server_t *s = up->pool->server;
  uint64_t ms = (uint64_t)(s->config->settings.upstream_timeout * 1000.0);
  up_arm(up, ms ? ms : 1);
}


/* ------------------------------------------------------------ writing upstream */

static void on_up_write(void *owner, int status, size_t len) {
  ten__upstream_t *up = owner;
  bool was_high = up->write_pending >= TEN_HTTP_LOW_WATER;
  up->write_pending -= len;
  if (up->closing) return;
  if (status < 0) {
    upstream_lost(up, status);
    return;
  }
  if (was_high && up->write_pending < TEN_HTTP_LOW_WATER && up->client)
    ten__conn_update_reading(up->client);
}

/* Writes what was gathered: one writev per parse of client bytes. */
static void up_flush(ten__upstream_t *up) {
  if (up->closing || !up->out.count) return;
  size_t bytes = up->out.bytes;
  int rc = ten__wbatch_flush(&up->out, &up->h.stream, on_up_write, up);
  if (rc < 0) {
    upstream_lost(up, rc);
    return;
  }
  if (rc == 0) up->write_pending += bytes; /* else written at once */
}

static void up_queue(ten__upstream_t *up, ten_iobuf_t *buf, const char *data, size_t len) {
  if (up->closing || len == 0) return;
  if (!ten__wbatch_add(&up->out, buf, data, len)) {
    up_flush(up);
    if (up->closing) return;
    ten__wbatch_add(&up->out, buf, data, len);
  }
}

/* Queues bytes of ten's own framing (a chunk size, a CRLF), copied into a
 * small iobuf shared by consecutive pieces so they leave as one iovec. */
static void up_queue_frame(ten__upstream_t *up, const char *data, size_t len) {
  if (!up->frame || up->frame_used + len > up->frame->size) {
    ten_iobuf_unref(up->frame);
    up->frame = ten_iobuf_get_sized(false);
    up->frame_used = 0;
  }
  char *at = up->frame->data + up->frame_used;
  memcpy(at, data, len);
  up->frame_used += (uint32_t)len;
  up_queue(up, up->frame, at, len);
}

size_t ten__proxy_queued(const ten__conn_t *c) { return c->up ? c->up->write_pending : 0; }

bool ten__proxy_backpressure(const ten__conn_t *c) {
  return c->up && (!c->up->connected || c->up->write_pending >= TEN_HTTP_HIGH_WATER);
}


/* ------------------------------------------------------------ connecting */

void ten__up_send_head(ten__upstream_t *up) {
  ten__conn_t *c = up->client;
  up_queue(up, up->request_head, up->request_head->data, up->request_head_len);
  up_flush(up);
  if (up->closing || !c) return;
  arm_response_timeout(up);
  up_update_reading(up);
  if (up->req_sent) return; /* a retry: the request had no body */
  ten__conn_unblock(c);     /* body bytes may flow now */
}

static void on_up_connect(uv_connect_t *req, int status) {
  ten__upstream_t *up = req->data;
  if (up->closing) return;
  if (status < 0) {
    up->pool->server->stats.upstream_errors[TEN_UPSTREAM_CONNECT]++;
    ten__up_fail(up, 502, "cannot connect to the instance", status);
    return;
  }
  up->connected = true;
  if (up->client)
    ten__up_send_head(up);
  else
    ten__up_close(up);
}

int ten__up_connect(ten__upstream_t *up) {
  ten_instance_t *inst = up->pool->inst;
  up->connect_req.data = up;
  uint64_t connect_ms =
      (uint64_t)(up->pool->server->config->settings.upstream_connect_timeout * 1000.0);
  up_arm(up, connect_ms ? connect_ms : 1);
  if (inst->socket_path) {
    uv_pipe_connect(&up->connect_req, &up->h.pipe, inst->socket_path, on_up_connect);
    return 0;
  }
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", inst->port, &addr);
  return uv_tcp_connect(&up->connect_req, &up->h.tcp, (const struct sockaddr *)&addr,
                        on_up_connect);
}


void ten__proxy_body(ten__conn_t *c, ten_iobuf_t *buf, const char *data, size_t len) {
  ten__upstream_t *up = c->up;
  if (!up || up->closing || len == 0) return;
  up->body_sent = true;
  if (up->chunked && !up->tunnel) {
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    up_queue_frame(up, size, (size_t)n);
    up_queue(up, buf, data, len);
    up_queue_frame(up, "\r\n", 2);
  } else {
    up_queue(up, buf, data, len);
  }
}

void ten__proxy_flush(ten__conn_t *c) {
  if (c->up) up_flush(c->up);
}

void ten__proxy_request_done(ten__conn_t *c) {
  ten__upstream_t *up = c->up;
  if (!up) return;
  if (up->chunked) up_queue_frame(up, "0\r\n\r\n", 5);
  up_flush(up);
  if (up->closing || c->up != up) return;
  up->req_sent = true;
  if (up->resp_done) exchange_end(up, true);
}

void ten__proxy_detach(ten__conn_t *c) {
  ten__upstream_t *up = c->up;
  /* The client left first: 499, as nginx counts it. */
  if (up) ten__pool_record(up->pool, c, c->resp_status ? c->resp_status : 499);
  if (c->inst) {
    ten_instance_release(c->inst);
    c->inst = NULL;
  }
  c->up = NULL;
  if (!up) return;
  up->client = NULL;
  ten__up_close(up);
}

void ten__proxy_client_drained(ten__conn_t *c) {
  if (c->up) up_update_reading(c->up);
}


/* ------------------------------------------------------------ the response */

static int on_resp_header_field(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  if (up->head_sent) return 0; /* trailers: forwarded with the body */
  return ten__head_append(&up->head, 1, at, len) ? HPE_USER : 0;
}

static int on_resp_header_value(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  if (up->head_sent) return 0;
  return ten__head_append(&up->head, 2, at, len) ? HPE_USER : 0;
}

static int on_resp_status(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  return ten__head_append(&up->head, 0, at, len) ? HPE_USER : 0;
}

static int on_resp_headers_complete(llhttp_t *p) {
  ten__upstream_t *up = p->data;
  up->pause = TEN_PAUSE_HEAD;
  return HPE_PAUSED;
}

/* A chunked response is checked (strict.h) before any byte of it goes to
 * the client: bytes up to `end` are. */
static int check_response_framing(ten__upstream_t *up, const char *end) {
  if (!up->resp_chunked) return 0;
  up->strict_error = ten_strict_chunked_scan(&up->body_scan, up->body_scan_pos,
                                             (size_t)(end - up->body_scan_pos));
  up->body_scan_pos = end;
  return up->strict_error ? HPE_USER : 0;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  if (check_response_framing(up, at + len)) return HPE_USER;
  if (up->dechunk && up->client) ten__conn_write(up->client, up->rbuf, at, len);
  return 0;
}

static int on_resp_message_complete(llhttp_t *p) {
  ten__upstream_t *up = p->data;
  up->pause = TEN_PAUSE_DONE;
  return HPE_PAUSED;
}

const llhttp_settings_t *ten__response_settings(void) {
  static bool done;
  if (done) return &response_settings;
  done = true;
  llhttp_settings_init(&response_settings);
  response_settings.on_status = on_resp_status;
  response_settings.on_header_field = on_resp_header_field;
  response_settings.on_header_value = on_resp_header_value;
  response_settings.on_headers_complete = on_resp_headers_complete;
  response_settings.on_body = on_resp_body;
  response_settings.on_message_complete = on_resp_message_complete;
  return &response_settings;
}

static void on_response_head(ten__upstream_t *up) {
  ten__conn_t *c = up->client;
  int status = llhttp_get_status_code(&up->parser);
  bool switching = status == 101;
  bool interim = status >= 100 && status < 200 && !switching;
  bool head_request = llhttp_get_method(&c->parser) == HTTP_HEAD;
  if (head_request && !interim) up->parser.flags |= F_SKIPBODY;

  bool client_http10 =
      llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0;
  bool chunked = (up->parser.flags & F_CHUNKED) != 0;
  bool has_length = (up->parser.flags & F_CONTENT_LENGTH) != 0;
  bool bodyless = head_request || status == 204 || status == 304 || interim || switching;
  if (!interim && !switching) {
    up->resp_chunked = chunked && !bodyless;
    if (up->resp_chunked) ten_strict_chunked_init(&up->body_scan);
    if (!bodyless && !chunked && !has_length) c->keep_alive = false; /* ends at close */
    if (client_http10 && chunked && !head_request) {
      up->dechunk = true; /* HTTP/1.0 has no chunked: the close ends the body */
      c->keep_alive = false;
    }
  }

  /* Heads are small: a small buffer, and the large one only if needed. */
  ten_iobuf_t *b = NULL;
  head_writer_t w;
  for (int attempt = 0; attempt < 2; attempt++) {
    ten_iobuf_unref(b);
    b = ten_iobuf_get_sized(attempt == 1);
    w = (head_writer_t){b->data, b->data + b->size, false};
    ten__write_response_head(&w, up, status, switching, interim, client_http10);
    if (!w.overflow) break;
  }

  /* HTTP/1.0 clients get no interim responses (RFC 9110 15.2). */
  if (!(interim && client_http10) && !w.overflow) {
    ten__conn_write(c, b, b->data, (size_t)(w.p - b->data));
    c->resp_started = true;
  }
  ten_iobuf_unref(b);
  if (w.overflow) {
    ten__up_fail(up, 502, "the instance's response head is too large", 0);
    return;
  }
  if (switching) up->tunnel = true;
  if (!interim) {
    c->resp_status = status;
    up->head_sent = true;
    /* Past this point a retry is impossible: drop the saved head. */
    ten_iobuf_unref(up->request_head);
    up->request_head = NULL;
  }
  ten__head_reset(&up->head);
}

static void up_process(ten__upstream_t *up) {
  static const char nothing[1];
  if (up->tunnel && up->client && up->rbuf && up->rpos < up->rlen) {
    ten__conn_write(up->client, up->rbuf, up->rbuf->data + up->rpos, up->rlen - up->rpos);
    up->rpos = up->rlen;
  }
  while (!up->closing && up->client && !up->tunnel) {
    const char *start;
    size_t avail;
    bool from_buffer = up->rbuf && up->rpos < up->rlen;
    if (from_buffer) {
      start = up->rbuf->data + up->rpos;
      avail = up->rlen - up->rpos;
    } else if (up->resume_pending) {
      start = nothing; /* finish a bodiless response (see conn_process) */
      avail = 0;
    } else {
      break;
    }
    up->resume_pending = false;
    bool in_body = up->head_sent && !up->resp_done;
    up->pause = TEN_PAUSE_NONE;
    up->body_scan_pos = start;
    llhttp_errno_t err = llhttp_execute(&up->parser, start, avail);
    const char *stop = ten__parse_stop(&up->parser, err, start, avail);
    if ((err == HPE_OK || err == HPE_PAUSED) && in_body && !up->strict_error) {
      check_response_framing(up, stop);
      if (!up->strict_error && up->resp_chunked && up->pause == TEN_PAUSE_DONE && !up->body_scan.done)
        up->strict_error = "the chunked body does not end with an empty line";
    }
    if (up->strict_error || (err != HPE_OK && err != HPE_PAUSED)) {
      ten_log(TEN_LOG_WARN, "proxy: invalid response from %s: %s",
              up->pool->inst ? up->pool->inst->key : "?",
              up->strict_error ? up->strict_error : llhttp_get_error_reason(&up->parser));
      up->pool->server->stats.upstream_errors[TEN_UPSTREAM_INVALID]++;
      ten__up_fail(up, 502, "invalid response from the instance", 0);
      return;
    }
    if (in_body && !up->dechunk && stop > start)
      ten__conn_write(up->client, up->rbuf, start, (size_t)(stop - start));
    if (!up->client) return; /* the write failed and the client is gone */
    if (from_buffer) up->rpos = (size_t)(stop - up->rbuf->data);
    if (err != HPE_PAUSED) continue;
    llhttp_resume(&up->parser);
    if (up->pause == TEN_PAUSE_HEAD) {
      up->resume_pending = true;
      if (llhttp_get_status_code(&up->parser) == 101 && !up->client->upgrade) {
        ten__up_fail(up, 502, "the instance switched protocols unasked", 0);
        return;
      }
      on_response_head(up);
      if (up->closing || !up->client) return;
      if (up->tunnel) {
        /* Everything after the 101 head belongs to the new protocol. */
        if (up->rbuf && up->rpos < up->rlen)
          ten__conn_write(up->client, up->rbuf, up->rbuf->data + up->rpos, up->rlen - up->rpos);
        up->rpos = up->rlen;
        uv_timer_stop(&up->timer);
        ten__conn_tunnel(up->client);
        break;
      }
    } else if (up->pause == TEN_PAUSE_DONE) {
      int status = llhttp_get_status_code(&up->parser);
      if (status >= 100 && status < 200) continue; /* the final response follows */
      up->resp_done = true;
      bool clean = !up->rbuf || up->rpos == up->rlen; /* nothing after the response */
      exchange_end(up, clean);
      return;
    }
  }
  if (up->rbuf && up->rpos >= up->rlen) {
    ten_iobuf_unref(up->rbuf);
    up->rbuf = NULL;
  }
  up_update_reading(up);
}

static void on_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ten__upstream_t *up = h->data;
  bool queued = up->client && up->client->write_pending > 0;
  ten_iobuf_t *b = ten_iobuf_get_sized(ten_iobuf_want_large(up->last_read) && !queued);
  buf->base = b->data;
  buf->len = b->size;
}

/* ------------------------------------------------------------ tunnels */

/* Ends a tunnel once both sides have closed, or at once if one failed. */
static void tunnel_maybe_end(ten__upstream_t *up, bool failed) {
  ten__conn_t *c = up->client;
  if (!failed && !(up->up_eof && up->client_eof)) return;
  if (c) ten__pool_record(up->pool, c, 101);
  up->client = NULL;
  if (c) {
    c->up = NULL;
    if (c->inst) {
      ten_instance_release(c->inst);
      c->inst = NULL;
    }
    if (failed) ten__conn_abort(c);
    else ten__conn_response_done(c); /* both said goodbye: close after the last write */
  }
  ten__up_close(up);
}

static void on_up_shutdown(uv_shutdown_t *req, int status) { free(req); }

static void tunnel_up_eof(ten__upstream_t *up, int status) {
  up->up_eof = true;
  if (status != UV_EOF) {
    tunnel_maybe_end(up, true);
    return;
  }
  if (up->client) ten__conn_shutdown_write(up->client);
  up_update_reading(up);
  tunnel_maybe_end(up, false);
}

void ten__proxy_tunnel_client_eof(ten__conn_t *c) {
  ten__upstream_t *up = c->up;
  if (!up) return;
  up->client_eof = true;
  uv_shutdown_t *req = ten_xmalloc(sizeof *req);
  if (uv_shutdown(req, &up->h.stream, on_up_shutdown) < 0) free(req);
  tunnel_maybe_end(up, false);
}

static void on_up_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  ten__upstream_t *up = stream->data;
  ten_iobuf_t *b =
      buf->base ? (ten_iobuf_t *)(void *)(buf->base - offsetof(ten_iobuf_t, data)) : NULL;
  if (nread == 0) {
    ten_iobuf_unref(b);
    return;
  }
  if (up->in_pool || !up->client) {
    /* An idle pooled connection spoke or closed: it cannot be reused. */
    ten_iobuf_unref(b);
    ten__up_close(up);
    return;
  }
  if (nread < 0) {
    ten_iobuf_unref(b);
    if (up->tunnel) {
      tunnel_up_eof(up, (int)nread);
      return;
    }
    if (nread == UV_EOF && up->head_sent && llhttp_message_needs_eof(&up->parser)) {
      /* A body delimited by the close is complete now. */
      llhttp_finish(&up->parser);
      up->resp_done = true;
      exchange_end(up, false);
      return;
    }
    upstream_lost(up, (int)nread);
    return;
  }
  up->got_bytes = true;
  up->last_read = (size_t)nread;
  up->rbuf = b;
  up->rpos = 0;
  up->rlen = (size_t)nread;
  if (!up->tunnel) arm_response_timeout(up); /* the instance is answering: restart the clock */
  ten__conn_t *client = up->client;
  up_process(up);
  /* Everything this read brought is queued (head and body together):
   * send it now rather than after every other callback of the turn. */
  if (client) ten__conn_flush(client);
}

static void up_update_reading(ten__upstream_t *up) {
  if (up->closing || !up->connected) return;
  bool want;
  if (up->in_pool)
    want = true; /* to notice when the app closes it */
  else
    want = up->client && !up->rbuf && !up->up_eof &&
           up->client->write_pending < TEN_HTTP_HIGH_WATER;
  if (want && !up->reading) {
    if (uv_read_start(&up->h.stream, on_up_alloc, on_up_read) == 0) up->reading = true;
    if (!up->in_pool && up->client && !up->tunnel) arm_response_timeout(up);
  } else if (!want && up->reading) {
    uv_read_stop(&up->h.stream);
    up->reading = false;
    /* Waiting on a slow client is not the instance being slow. */
    if (!up->in_pool) uv_timer_stop(&up->timer);
  }
}

/* ------------------------------------------------------------ ending */

static void exchange_end(ten__upstream_t *up, bool reusable) {
  ten__conn_t *c = up->client;
  pool_t *p = up->pool;
  if (c) ten__pool_record(p, c, c->resp_status);
  ten_http_server_t *s = p->server;
  if (!up->req_sent && c) {
    /* Response complete before the request: wait for ten__proxy_request_done
     * only if the body is still arriving normally; the connection closes. */
    reusable = false;
  }
  unsigned keepalive = (unsigned)s->config->settings.upstream_keepalive;
  bool surplus = p->idle_count >= keepalive;
  reusable = reusable && up->req_sent && llhttp_should_keep_alive(&up->parser) && p->inst &&
             p->inst->state == TEN_INST_READY && !s->shutting_down && keepalive > 0 &&
             p->idle_count < POOL_SURPLUS_MAX;
  up->client = NULL;
  if (c) {
    c->up = NULL;
    if (c->inst) {
      ten_instance_release(c->inst);
      c->inst = NULL;
    }
  }
  if (reusable) {
    ten_iobuf_unref(up->rbuf);
    up->rbuf = NULL;
    ten__pool_put_idle(up);
    up_arm(up, surplus ? POOL_SURPLUS_LINGER_MS : POOL_IDLE_TIMEOUT_MS);
    up_update_reading(up);
  } else {
    ten__up_close(up);
  }
  if (c) ten__conn_response_done(c);
}

