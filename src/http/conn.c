/* conn.c: one client connection — reading, the parse loop, writing, timers
 * and closing.
 *
 * The parse loop feeds llhttp from the iobuf a read filled; it pauses at a
 * complete head (request.c decides where the request goes) and at a
 * complete request (pipelined requests wait for the response). Writes made
 * during one loop turn go out as one writev in a uv_check callback. One
 * timer per connection; its meaning follows the phase (head, body,
 * keep-alive, linger, wake). Every connection is freed in its handles'
 * close callback.
 */
#include "http/conn.h"

#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINGER_MS 2000

static void conn_process(ten__conn_t *c);
static void unmark_dirty(ten__conn_t *c);
static void flush_out(ten__conn_t *c);

/* ------------------------------------------------------------ timers */

/* A connection has up to three deadlines (loop time in ms, 0 = none): its
 * phase's (head, body silence, keep-alive, linger, wake), the whole request
 * body's (body_timeout) and the client's reading of what is sent to it
 * (send_timeout). One timer fires at the earliest. Moving a deadline later
 * leaves the timer alone: it fires early, finds nothing due and re-arms
 * itself, so steady traffic does not churn the timer heap. */

static void on_conn_timeout(uv_timer_t *t);

static uint64_t earliest_deadline(const ten__conn_t *c) {
  uint64_t d[3] = {c->deadline_ms, c->body_deadline_ms, c->send_deadline_ms}, at = 0;
  for (int i = 0; i < 3; i++)
    if (d[i] && (!at || d[i] < at)) at = d[i];
  return at;
}

static void schedule(ten__conn_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->timer)) return;
  uint64_t at = earliest_deadline(c);
  if (!at) return; /* a running timer finds nothing due and stops */
  uint64_t now = uv_now(c->server->loop);
  uint64_t in = at > now ? at - now : 0;
  if (uv_is_active((uv_handle_t *)&c->timer) && uv_timer_get_due_in(&c->timer) <= in) return;
  uv_timer_start(&c->timer, on_conn_timeout, in, 0);
}

void ten__conn_arm(ten__conn_t *c, uint64_t ms) {
  c->deadline_ms = uv_now(c->server->loop) + ms;
  schedule(c);
}

void ten__conn_disarm(ten__conn_t *c) { c->deadline_ms = 0; }

void ten__conn_arm_body_deadline(ten__conn_t *c) {
  double seconds = TEN__SETTINGS(c)->body_timeout;
  c->body_deadline_ms = seconds > 0 ? uv_now(c->server->loop) + ten__ms_of(seconds) : 0;
  c->body_paused_ms = 0;
  schedule(c);
}

static void arm_send_deadline(ten__conn_t *c) {
  c->send_deadline_ms = uv_now(c->server->loop) + ten__ms_of(TEN__SETTINGS(c)->send_timeout);
  schedule(c);
}

bool ten__conn_request_started(const ten__conn_t *c) {
  return c->head.arena.len > 0 || c->mode != TEN_MODE_HEAD;
}

/* The client stopped sending the body (silent for client_timeout, or the
 * whole body took longer than body_timeout). */
static void body_timed_out(ten__conn_t *c) {
  if (c->mode == TEN_MODE_PROXY && c->resp_started) {
    ten__conn_abort(c); /* half an answer went out: cut, do not complete it */
    return;
  }
  if (c->mode == TEN_MODE_PROXY) ten__proxy_detach(c);
  if (c->mode == TEN_MODE_DISCARD || c->resp_done) {
    ten__conn_close(c);
    return;
  }
  c->keep_alive = false;
  c->req_done = true; /* nothing more is read: the answer ends the connection */
  ten__conn_error(c, 408, "request timeout", NULL, NULL);
}

static void on_conn_timeout(uv_timer_t *t) {
  ten__conn_t *c = t->data;
  uint64_t now = uv_now(c->server->loop);
  bool phase_due = c->deadline_ms && now >= c->deadline_ms;
  bool body_due = c->body_deadline_ms && now >= c->body_deadline_ms;
  bool send_due = c->send_deadline_ms && now >= c->send_deadline_ms;
  if (!phase_due && !body_due && !send_due) {
    schedule(c);
    return;
  }
  if (c->closing) {
    ten__conn_close(c); /* the lingering close is over, or the client never read the end */
    return;
  }
  if (send_due) {
    /* The client reads nothing of what it is sent: it holds a connection
     * (and an upstream) for nothing. A reset: the answer is incomplete. */
    c->server->stats.client_timeouts[TEN_CLIENT_TIMEOUT_SEND]++;
    ten__conn_abort(c);
    return;
  }
  if (body_due && !c->req_done && c->mode != TEN_MODE_HEAD) {
    c->body_deadline_ms = 0;
    c->server->stats.client_timeouts[TEN_CLIENT_TIMEOUT_BODY]++;
    body_timed_out(c);
    return;
  }
  c->body_deadline_ms = body_due ? 0 : c->body_deadline_ms;
  if (!phase_due) {
    schedule(c);
    return;
  }
  c->deadline_ms = 0;
  if (c->waiting_for) {
    ten__proxy_wake_timeout(c);
    return;
  }
  if (c->mode == TEN_MODE_HEAD && !ten__conn_request_started(c)) {
    ten__conn_close(c); /* idle keep-alive connection */
    return;
  }
  if (c->mode == TEN_MODE_HEAD) {
    c->server->stats.client_timeouts[TEN_CLIENT_TIMEOUT_HEAD]++;
    c->keep_alive = false;
    c->req_done = true; /* nothing more is read: the answer ends the connection */
    ten__conn_error(c, 408, "request timeout", NULL, NULL);
    return;
  }
  if (!c->req_done) {
    c->server->stats.client_timeouts[TEN_CLIENT_TIMEOUT_BODY]++;
    body_timed_out(c);
  }
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
  if (c->refused) s->refused_lingering--;
  unmark_dirty(c);
  ten__wbatch_drop(&c->out);
  ten_iobuf_unref(c->rbuf);
  ten_buf_free(&c->head.arena);
  free(c);
  /* The last busy connection is gone before the drain timeout: stop waiting. */
  ten__server_conn_closed(s);
}

static void release_in_flight(ten__conn_t *c) {
  if (c->in_flight) {
    c->in_flight = false;
    c->server->stats.requests_in_flight--;
  }
}

void ten__conn_close_handles(ten__conn_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp)) return;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

/* Tears the connection down now; pending writes are cancelled. */
void ten__conn_arm_wake_timeout(ten__conn_t *c, double seconds) { ten__conn_arm(c, ten__ms_of(seconds)); }

/* Tells an unfinished local answer that its connection is going. */
void ten__conn_notify_local_close(ten__conn_t *c) {
  void (*fn)(void *) = c->local_close_fn;
  c->local_close_fn = NULL;
  if (fn) fn(c->local_close_ctx);
}

void ten__conn_close(ten__conn_t *c) {
  c->closing = true;
  ten__conn_notify_local_close(c);
  ten__proxy_unwait(c);
  if (c->mode == TEN_MODE_PROXY || c->mode == TEN_MODE_TUNNEL) ten__proxy_detach(c);
  release_in_flight(c);
  ten__conn_close_handles(c);
}

void ten__conn_abort(ten__conn_t *c) {
  if (!c->closing && c->out.count) flush_out(c); /* what was sent so far, then the reset */
  c->closing = true;
  ten__conn_notify_local_close(c);
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
  if (nread < 0) ten__conn_close(stream->data);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  ten__conn_t *c = req->data;
  free(req);
  if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
    ten__conn_close(c);
    return;
  }
  /* Linger: read and drop what the client still sends, so closing does not
   * reset the connection before it has read our response. */
  c->reading = true;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_linger_alloc, on_linger_read) < 0)
    ten__conn_close(c);
  else
    ten__conn_arm(c, LINGER_MS);
}

/* Closes once everything queued has been written. */
void ten__conn_finish(ten__conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  ten__conn_notify_local_close(c);
  ten__proxy_unwait(c);
  if (c->mode == TEN_MODE_PROXY) ten__proxy_detach(c);
  release_in_flight(c);
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
  }
  /* Only the send deadline still counts: a client that never reads the
   * last answer must not hold the connection open forever. */
  ten__conn_disarm(c);
  c->body_deadline_ms = 0;
  /* The last answer may still be gathered: it goes before the FIN. */
  c->closing = false;
  flush_out(c);
  c->closing = true;
  uv_shutdown_t *req = ten_xmalloc(sizeof *req);
  req->data = c;
  if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    free(req);
    ten__conn_close_handles(c);
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
  /* Progress: the client reads. The send deadline moves, or goes. */
  if (c->writes) c->send_deadline_ms = uv_now(c->server->loop) +
                                       ten__ms_of(TEN__SETTINGS(c)->send_timeout);
  else c->send_deadline_ms = 0;
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
  if (rc == 0) {
    if (!c->writes++ && !uv_is_closing((uv_handle_t *)&c->timer)) arm_send_deadline(c);
  } else if (client_wrote(c, bytes)) {
    c->drained = true;
  }
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
void ten__conn_write_copy(ten__conn_t *c, const char *data, size_t len) {
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
  bool queued = c->up && ten__proxy_queued(c) > 0;
  ten_iobuf_t *b = ten_iobuf_get_sized(ten_iobuf_want_large(c->last_read) && !queued);
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
      ten__conn_close(c); /* the reader of a stream left */
    } else if (c->mode == TEN_MODE_TUNNEL && nread == UV_EOF) {
      ten__proxy_tunnel_client_eof(c); /* half-close: the other way stays open */
      ten__conn_update_reading(c);
    } else if (c->mode == TEN_MODE_HEAD && !ten__conn_request_started(c)) {
      ten__conn_close(c); /* an idle client left */
    } else if (c->mode == TEN_MODE_PROXY && !c->resp_done) {
      /* The client gave up before the response was complete. */
      ten__proxy_detach(c);
      ten__conn_close(c);
    } else if (nread == UV_EOF && c->req_done) {
      /* Half-close after a complete request: finish the response, then close. */
      c->keep_alive = false;
      ten__conn_update_reading(c);
    } else {
      ten__conn_close(c);
    }
    return;
  }
  if (c->rbuf) {
    /* Cannot happen: reading stops while unparsed bytes are held. */
    ten_iobuf_unref(b);
    ten__conn_close(c);
    return;
  }
  c->rbuf = b;
  c->rpos = 0;
  c->rlen = (size_t)nread;
  c->last_read = (size_t)nread;
  if (c->mode != TEN_MODE_HEAD && !c->req_done) ten__conn_arm(c, TEN__BODY_TIMEOUT_MS);
  ten__conn_process(c);
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
    if (in_body) {
      ten__conn_arm(c, TEN__BODY_TIMEOUT_MS);
      if (c->body_paused_ms && c->body_deadline_ms)
        c->body_deadline_ms += uv_now(c->server->loop) - c->body_paused_ms;
    }
    c->body_paused_ms = 0;
  } else if (!want && c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = false;
    /* Not reading because ten or the instance is not ready for more is not
     * the client's fault: neither body clock runs meanwhile. */
    if (in_body && !c->client_eof) {
      ten__conn_disarm(c);
      c->body_paused_ms = uv_now(c->server->loop);
    }
  }
}


static void conn_process(ten__conn_t *c) {
  static const char nothing[1];
  if (c->mode == TEN_MODE_TUNNEL) {
    if (c->rbuf && c->rpos < c->rlen && !c->closing) {
      ten__proxy_body(c, c->rbuf, c->rbuf->data + c->rpos, c->rlen - c->rpos);
      ten__proxy_flush(c);
    }
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
    const char *stop;
    llhttp_errno_t err = ten__request_execute(c, start, avail, &stop);
    if (err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      c->rpos = c->rlen; /* nothing after a parse error is trusted */
      ten__request_parse_error(c, err);
      break;
    }
    /* The body pieces this parse handed to the upstream leave as one write. */
    if (c->mode == TEN_MODE_PROXY) ten__proxy_flush(c);
    if (c->closing) break;
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
      ten__request_head(c);
    } else if (c->pause == TEN_PAUSE_DONE) {
      c->req_done = true;
      c->body_deadline_ms = 0;
      if (c->mode == TEN_MODE_PROXY)
        ten__proxy_request_done(c);
      else if (c->mode == TEN_MODE_LOCAL)
        ten__local_run(c);
      /* A synchronous answer may already have finished the exchange and
       * reset the connection for the next request (req_done is false then). */
      if (c->req_done && !c->resp_done) {
        c->blocked = true; /* the next request waits for this response */
        ten__conn_disarm(c);
        c->body_deadline_ms = 0;
      }
      ten__conn_exchange_maybe_done(c);
    }
  }
  if (c->rbuf && c->rpos >= c->rlen) {
    ten_iobuf_unref(c->rbuf);
    c->rbuf = NULL;
  }
  ten__conn_update_reading(c);
}

/* Both halves of the exchange are done: next request, or close. */
void ten__conn_exchange_maybe_done(ten__conn_t *c) {
  if (!c->req_done || !c->resp_done || c->closing) return;
  release_in_flight(c);
  if (!c->keep_alive || c->server->shutting_down) {
    ten__conn_finish(c);
    return;
  }
  c->mode = TEN_MODE_HEAD;
  c->req_done = c->resp_done = c->resp_started = false;
  c->blocked = false;
  c->inst = NULL;
  c->svc = NULL;
  c->discarded = 0;
  c->body_deadline_ms = c->body_paused_ms = 0;
  ten__head_reset(&c->head);
  ten__request_reset_scan(c);
  ten__conn_arm(c, TEN__KEEPALIVE_TIMEOUT_MS);
  /* Pipelined bytes already read are parsed by the loop that called us, or
   * now if the response finished asynchronously. */
  ten__conn_process(c);
}

void ten__conn_process(ten__conn_t *c) {
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
    ten__conn_finish(c);
    return;
  }
  ten__conn_exchange_maybe_done(c);
}

void ten__conn_tunnel(ten__conn_t *c) {
  if (c->closing) return;
  c->mode = TEN_MODE_TUNNEL;
  c->blocked = false;
  c->resp_done = false;
  release_in_flight(c); /* a tunnel is not a request in flight */
  /* Long-lived and possibly idle for hours: no deadline but the send one,
   * and TCP keepalive so a vanished peer is noticed. */
  ten__conn_disarm(c);
  c->body_deadline_ms = 0;
  uv_tcp_keepalive(&c->tcp, 1, 60);
  ten__conn_process(c); /* bytes the client sent after the request */
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
  ten__conn_process(c);
}

